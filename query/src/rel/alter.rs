//! ALTER TABLE on relational tables: columns added and dropped, and
//! constraints added (validated against the rows first) and dropped. Each
//! operation is its own schema change, planned against the catalog as the
//! previous one left it.

use std::sync::Arc;

use datafusion::sql::sqlparser::ast::{AlterTableOperation, ColumnOption, TableConstraint};
use sluice_relstore::schema::{Check, ColumnDef, FkAction, ForeignKey, IndexDef, TableDef};
use sluice_relstore::value::Value;
use sluice_relstore::{DdlOp, RelError, RelHandle};

use super::convert::sql_type;
use super::ddl::norm;
use crate::error::QueryError;
use crate::QueryEngine;

fn undefined(t: &TableDef, what: &str) -> QueryError {
    QueryError::Rel(RelError::UndefinedObject(format!(
        "constraint \"{what}\" of relation \"{}\"",
        t.name
    )))
}

fn positions(t: &TableDef, names: &[String]) -> Result<Vec<usize>, QueryError> {
    names
        .iter()
        .map(|n| {
            t.column(n).ok_or_else(|| {
                QueryError::Rel(RelError::UndefinedColumn {
                    table: t.name.clone(),
                    column: n.clone(),
                })
            })
        })
        .collect()
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

impl QueryEngine {
    /// Counts the rows of `sql` (a `SELECT count(*)`), read at the
    /// snapshot the returned index names.
    async fn count_at(
        &self,
        db: &str,
        rel: &RelHandle,
        sql: &str,
        principal: &Option<Arc<sluice_access::Principal>>,
    ) -> Result<(i64, u64), QueryError> {
        let txn = rel.begin(true)?;
        let at = txn.snap.index;
        let binding = Arc::new(super::RelBinding {
            handle: rel.clone(),
            txn: Arc::new(parking_lot::Mutex::new(txn)),
            dml_target: None,
            currvals: Default::default(),
            // The check reads what the new constraint names, with the
            // rights of whoever adds it.
            principal: principal.clone(),
        });
        let batches = self.collect_in(Some(db), binding, sql).await?;
        let n = batches
            .first()
            .filter(|b| b.num_rows() > 0)
            .map(|b| {
                super::convert::column_values(b, 0, sluice_relstore::value::SqlType::Int8, "count")
            })
            .transpose()?
            .and_then(|v| v.into_iter().next())
            .map(|v| match v {
                Value::Int(n) => n,
                _ => 0,
            })
            .unwrap_or(0);
        Ok((n, at))
    }

    /// The schema change one ALTER TABLE operation makes on `t`.
    pub(crate) async fn alter_op(
        &self,
        db: &str,
        rel: &RelHandle,
        t: &TableDef,
        op: &AlterTableOperation,
        principal: &Option<Arc<sluice_access::Principal>>,
    ) -> Result<Option<DdlOp>, QueryError> {
        Ok(Some(match op {
            AlterTableOperation::AddColumn {
                column_def,
                if_not_exists,
                ..
            } => {
                let name = norm(&column_def.name);
                if t.column(&name).is_some() && *if_not_exists {
                    return Ok(None);
                }
                let mut col = ColumnDef {
                    name,
                    ty: sql_type(&column_def.data_type)?,
                    nullable: true,
                    default: None,
                };
                for o in &column_def.options {
                    match &o.option {
                        ColumnOption::Null => col.nullable = true,
                        ColumnOption::NotNull => col.nullable = false,
                        ColumnOption::Default(e) => col.default = Some(e.to_string()),
                        other => {
                            return Err(QueryError::Unsupported(format!(
                                "column option {other} in ADD COLUMN; add it with ADD CONSTRAINT"
                            )))
                        }
                    }
                }
                let fill = match &col.default {
                    Some(e) if e.starts_with("nextval(") => {
                        return Err(QueryError::Unsupported(
                            "ADD COLUMN with a sequence default; add the column, then fill it with UPDATE".into(),
                        ))
                    }
                    Some(e) => self.constant(e, col.ty, &col.name).await?,
                    None => Value::Null,
                };
                DdlOp::AddColumn {
                    table: t.id,
                    column: col,
                    fill,
                }
            }
            AlterTableOperation::DropColumn {
                column_names,
                if_exists,
                ..
            } => {
                let [name] = column_names.as_slice() else {
                    return Err(QueryError::Unsupported(
                        "dropping several columns at once".into(),
                    ));
                };
                let name = norm(name);
                match t
                    .column(&name)
                    .filter(|c| !(t.hidden_rowid && *c == t.columns.len() - 1))
                {
                    Some(column) => DdlOp::DropColumn {
                        table: t.id,
                        column,
                    },
                    None if *if_exists => return Ok(None),
                    None => {
                        return Err(QueryError::Rel(RelError::UndefinedColumn {
                            table: t.name.clone(),
                            column: name,
                        }))
                    }
                }
            }
            AlterTableOperation::AddConstraint { constraint, .. } => {
                return self
                    .add_constraint(db, rel, t, constraint, principal)
                    .await
                    .map(Some)
            }
            AlterTableOperation::DropConstraint {
                name, if_exists, ..
            } => {
                let name = norm(name);
                if let Some(ix) = t.indexes.iter().find(|i| i.name == name) {
                    DdlOp::DropIndex {
                        table: t.id,
                        index: ix.id,
                    }
                } else if t.checks.iter().any(|c| c.name == name)
                    || t.foreign_keys.iter().any(|f| f.name == name)
                {
                    let mut new = t.clone();
                    new.checks.retain(|c| c.name != name);
                    new.foreign_keys.retain(|f| f.name != name);
                    DdlOp::AlterConstraints {
                        table: new,
                        validated_at: u64::MAX,
                    }
                } else if name == t.pk_name {
                    return Err(QueryError::Unsupported(
                        "dropping a primary key: it is how the table's rows are stored".into(),
                    ));
                } else if *if_exists {
                    return Ok(None);
                } else {
                    return Err(undefined(t, &name));
                }
            }
            other => return Err(QueryError::Unsupported(format!("ALTER TABLE … {other}"))),
        }))
    }

    async fn add_constraint(
        &self,
        db: &str,
        rel: &RelHandle,
        t: &TableDef,
        c: &TableConstraint,
        principal: &Option<Arc<sluice_access::Principal>>,
    ) -> Result<DdlOp, QueryError> {
        let table = format!("{}.{}", quote(&t.schema), quote(&t.name));
        match c {
            TableConstraint::Unique(u) => {
                let names: Vec<String> = u
                    .columns
                    .iter()
                    .map(|c| c.column.expr.to_string().trim_matches('"').to_lowercase())
                    .collect();
                let columns = positions(t, &names)?;
                Ok(DdlOp::CreateIndex {
                    table: t.id,
                    index: IndexDef {
                        id: 0,
                        name: u
                            .name
                            .as_ref()
                            .map(norm)
                            .unwrap_or_else(|| format!("{}_{}_key", t.name, names.join("_"))),
                        columns,
                        unique: true,
                        constraint: true,
                    },
                })
            }
            TableConstraint::Check(ch) => {
                let name = ch
                    .name
                    .as_ref()
                    .map(norm)
                    .unwrap_or_else(|| format!("{}_check{}", t.name, t.checks.len()));
                let expr = ch.expr.to_string();
                let (bad, at) = self
                    .count_at(
                        db,
                        rel,
                        &format!("SELECT count(*) FROM {table} WHERE NOT ({expr})"),
                        principal,
                    )
                    .await?;
                if bad > 0 {
                    return Err(QueryError::Rel(RelError::CheckViolation {
                        table: t.name.clone(),
                        constraint: name,
                    }));
                }
                let mut new = t.clone();
                new.checks.push(Check { name, expr });
                Ok(DdlOp::AlterConstraints {
                    table: new,
                    validated_at: at,
                })
            }
            TableConstraint::ForeignKey(f) => {
                let cols: Vec<String> = f.columns.iter().map(norm).collect();
                let (ps, pn) = super::ddl::resolve(&f.foreign_table, &t.schema)?;
                let cat = rel.catalog();
                let parent = cat
                    .table(&ps, &pn)
                    .cloned()
                    .ok_or_else(|| QueryError::Rel(RelError::UndefinedTable(pn.clone())))?;
                let pcols: Vec<String> = if f.referred_columns.is_empty() {
                    parent
                        .primary_key
                        .iter()
                        .map(|&c| parent.columns[c].name.clone())
                        .collect()
                } else {
                    f.referred_columns.iter().map(norm).collect()
                };
                let name = f
                    .name
                    .as_ref()
                    .map(norm)
                    .unwrap_or_else(|| format!("{}_{}_fkey", t.name, cols.join("_")));
                let on_delete = match f.on_delete {
                    Some(datafusion::sql::sqlparser::ast::ReferentialAction::Cascade) => FkAction::Cascade,
                    Some(datafusion::sql::sqlparser::ast::ReferentialAction::SetNull) => FkAction::SetNull,
                    _ => FkAction::Restrict,
                };
                let fk = ForeignKey {
                    name: name.clone(),
                    columns: positions(t, &cols)?,
                    parent: parent.id,
                    parent_columns: positions(&parent, &pcols)?,
                    on_delete,
                };
                let not_null: Vec<String> =
                    cols.iter().map(|c| format!("c.{} IS NOT NULL", quote(c))).collect();
                let matches: Vec<String> = cols
                    .iter()
                    .zip(&pcols)
                    .map(|(c, p)| format!("p.{} = c.{}", quote(p), quote(c)))
                    .collect();
                let sql = format!(
                    "SELECT count(*) FROM {table} c WHERE {} AND NOT EXISTS (SELECT 1 FROM {}.{} p WHERE {})",
                    not_null.join(" AND "),
                    quote(&ps),
                    quote(&pn),
                    matches.join(" AND ")
                );
                let (bad, at) = self.count_at(db, rel, &sql, principal).await?;
                if bad > 0 {
                    return Err(QueryError::Rel(RelError::ForeignKeyViolation {
                        action: "insert or update",
                        table: t.name.clone(),
                        constraint: name,
                        detail: format!("{bad} existing row(s) reference keys not present in table \"{pn}\""),
                    }));
                }
                let mut new = t.clone();
                new.foreign_keys.push(fk);
                Ok(DdlOp::AlterConstraints {
                    table: new,
                    validated_at: at,
                })
            }
            TableConstraint::PrimaryKey(_) => Err(QueryError::Unsupported(
                "ADD PRIMARY KEY: declare the primary key in CREATE TABLE (it is how rows are stored)".into(),
            )),
            other => Err(QueryError::Unsupported(format!("constraint {other}"))),
        }
    }
}
