//! Relational DDL: sqlparser statements to store schema changes.

use std::collections::BTreeMap;

use datafusion::sql::sqlparser::ast::{
    ColumnOption, CreateIndex, CreateTable, Expr, ObjectName, ReferentialAction, TableConstraint,
};
use sluice_relstore::schema::{
    Check, ColumnDef, FkAction, ForeignKey, IndexDef, RelCatalog, SequenceDef, TableDef,
};
use sluice_relstore::value::SqlType;
use sluice_relstore::DdlOp;

use super::convert::sql_type;
use crate::error::QueryError;

/// An identifier as SQL means it: folded to lower case unless quoted.
pub fn norm(i: &datafusion::sql::sqlparser::ast::Ident) -> String {
    match i.quote_style {
        Some(_) => i.value.clone(),
        None => i.value.to_lowercase(),
    }
}

/// (schema, name) of an object name, with `default` for an unqualified one.
pub fn resolve(name: &ObjectName, default: &str) -> Result<(String, String), QueryError> {
    let parts: Vec<String> = name
        .0
        .iter()
        .filter_map(|p| p.as_ident().map(norm))
        .collect();
    match parts.as_slice() {
        [n] => Ok((default.to_string(), n.clone())),
        [s, n] => Ok((s.clone(), n.clone())),
        [_, s, n] => Ok((s.clone(), n.clone())),
        _ => Err(QueryError::Unsupported(format!("object name {name}"))),
    }
}

fn position(cols: &[ColumnDef], name: &str, table: &str) -> Result<usize, QueryError> {
    cols.iter().position(|c| c.name == name).ok_or_else(|| {
        QueryError::Rel(sluice_relstore::RelError::UndefinedColumn {
            table: table.to_string(),
            column: name.to_string(),
        })
    })
}

fn index_columns(
    cols: &[ColumnDef],
    names: impl IntoIterator<Item = String>,
    table: &str,
) -> Result<Vec<usize>, QueryError> {
    names
        .into_iter()
        .map(|n| position(cols, &n, table))
        .collect()
}

fn fk_action(a: Option<ReferentialAction>) -> Result<FkAction, QueryError> {
    match a {
        None | Some(ReferentialAction::NoAction) | Some(ReferentialAction::Restrict) => {
            Ok(FkAction::Restrict)
        }
        Some(ReferentialAction::Cascade) => Ok(FkAction::Cascade),
        Some(ReferentialAction::SetNull) => Ok(FkAction::SetNull),
        Some(other) => Err(QueryError::Unsupported(format!("ON DELETE {other}"))),
    }
}

struct FkSpec {
    name: Option<String>,
    columns: Vec<String>,
    parent: ObjectName,
    parent_columns: Vec<String>,
    on_delete: Option<ReferentialAction>,
}

fn ident_names(cols: &[datafusion::sql::sqlparser::ast::IndexColumn]) -> Vec<String> {
    cols.iter()
        .map(|c| match &c.column.expr {
            Expr::Identifier(i) => norm(i),
            other => other.to_string(),
        })
        .collect()
}

/// The table a CREATE TABLE describes (ids are given at apply).
pub fn create_table(
    ct: &CreateTable,
    default_schema: &str,
    cat: &RelCatalog,
) -> Result<TableDef, QueryError> {
    if ct.query.is_some() {
        return Err(QueryError::Unsupported("CREATE TABLE … AS SELECT".into()));
    }
    let (schema, name) = resolve(&ct.name, default_schema)?;
    let mut columns = Vec::new();
    let mut pk: Option<(Option<String>, Vec<String>)> = None;
    let mut uniques: Vec<(Option<String>, Vec<String>)> = Vec::new();
    let mut checks: Vec<(Option<String>, String)> = Vec::new();
    let mut fks: Vec<FkSpec> = Vec::new();
    for c in &ct.columns {
        let mut ty = sql_type(&c.data_type)?;
        let serial = matches!(
            c.data_type.to_string().to_ascii_lowercase().as_str(),
            "serial" | "serial4" | "bigserial" | "serial8"
        );
        if serial && ty == SqlType::Int4 {
            ty = SqlType::Int4;
        }
        let mut col = ColumnDef {
            name: norm(&c.name),
            ty,
            nullable: true,
            default: None,
        };
        if serial {
            col.nullable = false;
            col.default = Some(format!("nextval('{name}_{}_seq')", norm(&c.name)));
        }
        for o in &c.options {
            let cname = o.name.as_ref().map(norm);
            match &o.option {
                ColumnOption::Null => col.nullable = true,
                ColumnOption::NotNull => col.nullable = false,
                ColumnOption::Default(e) => col.default = Some(e.to_string()),
                ColumnOption::PrimaryKey(_) => {
                    if pk.is_some() {
                        return Err(QueryError::Unsupported(format!(
                            "multiple primary keys for table \"{name}\" are not allowed"
                        )));
                    }
                    pk = Some((cname, vec![norm(&c.name)]));
                }
                ColumnOption::Unique(_) => uniques.push((cname, vec![norm(&c.name)])),
                // PostgreSQL names a column's check after the column.
                ColumnOption::Check(ch) => checks.push((
                    ch.name
                        .as_ref()
                        .map(norm)
                        .or(cname)
                        .or_else(|| Some(format!("{name}_{}_check", norm(&c.name)))),
                    ch.expr.to_string(),
                )),
                ColumnOption::ForeignKey(f) => fks.push(FkSpec {
                    name: f.name.as_ref().map(norm).or(cname),
                    columns: vec![norm(&c.name)],
                    parent: f.foreign_table.clone(),
                    parent_columns: f.referred_columns.iter().map(norm).collect(),
                    on_delete: f.on_delete,
                }),
                ColumnOption::Comment(_) => {}
                other => return Err(QueryError::Unsupported(format!("column option {other}"))),
            }
        }
        columns.push(col);
    }
    for tc in &ct.constraints {
        match tc {
            TableConstraint::PrimaryKey(p) => {
                if pk.is_some() {
                    return Err(QueryError::Unsupported(format!(
                        "multiple primary keys for table \"{name}\" are not allowed"
                    )));
                }
                pk = Some((p.name.as_ref().map(norm), ident_names(&p.columns)));
            }
            TableConstraint::Unique(u) => {
                uniques.push((u.name.as_ref().map(norm), ident_names(&u.columns)))
            }
            TableConstraint::Check(ch) => {
                checks.push((ch.name.as_ref().map(norm), ch.expr.to_string()))
            }
            TableConstraint::ForeignKey(f) => fks.push(FkSpec {
                name: f.name.as_ref().map(norm),
                columns: f.columns.iter().map(norm).collect(),
                parent: f.foreign_table.clone(),
                parent_columns: f.referred_columns.iter().map(norm).collect(),
                on_delete: f.on_delete,
            }),
            other => return Err(QueryError::Unsupported(format!("table constraint {other}"))),
        }
    }
    if columns.is_empty() {
        return Err(QueryError::Unsupported(
            "a table needs at least one column".into(),
        ));
    }
    let hidden_rowid = pk.is_none();
    if hidden_rowid {
        columns.push(ColumnDef {
            name: "rowid".into(),
            ty: SqlType::Int8,
            nullable: false,
            default: None,
        });
    }
    let (pk_name, primary_key) = match pk {
        Some((n, cols)) => {
            let p = index_columns(&columns, cols, &name)?;
            for &c in &p {
                columns[c].nullable = false;
            }
            (n.unwrap_or_else(|| format!("{name}_pkey")), p)
        }
        None => (format!("{name}_pkey"), vec![columns.len() - 1]),
    };
    let mut indexes = Vec::new();
    for (n, cols) in uniques {
        let positions = index_columns(&columns, cols.clone(), &name)?;
        indexes.push(IndexDef {
            id: 0,
            name: n.unwrap_or_else(|| format!("{name}_{}_key", cols.join("_"))),
            columns: positions,
            unique: true,
            constraint: true,
        });
    }
    let checks = checks
        .into_iter()
        .enumerate()
        .map(|(i, (n, expr))| Check {
            name: n.unwrap_or_else(|| {
                if i == 0 {
                    format!("{name}_check")
                } else {
                    format!("{name}_check{i}")
                }
            }),
            expr,
        })
        .collect();
    let mut foreign_keys = Vec::new();
    for f in fks {
        let (ps, pn) = resolve(&f.parent, &schema)?;
        let fk_cols = index_columns(&columns, f.columns.clone(), &name)?;
        let (parent_id, parent_cols) = if ps == schema && pn == name {
            let pc = if f.parent_columns.is_empty() {
                primary_key.clone()
            } else {
                index_columns(&columns, f.parent_columns.clone(), &name)?
            };
            (0, pc)
        } else {
            let parent = cat.table(&ps, &pn).ok_or_else(|| {
                QueryError::Rel(sluice_relstore::RelError::UndefinedTable(pn.clone()))
            })?;
            let pc = if f.parent_columns.is_empty() {
                parent.primary_key.clone()
            } else {
                index_columns(&parent.columns, f.parent_columns.clone(), &pn)?
            };
            (parent.id, pc)
        };
        if pc_len_mismatch(&fk_cols, &parent_cols) {
            return Err(QueryError::Unsupported(format!(
                "foreign key on {name}: the number of referencing and referenced columns differs"
            )));
        }
        foreign_keys.push(ForeignKey {
            name: f
                .name
                .unwrap_or_else(|| format!("{name}_{}_fkey", f.columns.join("_"))),
            columns: fk_cols,
            parent: parent_id,
            parent_columns: parent_cols,
            on_delete: fk_action(f.on_delete)?,
        });
    }
    Ok(TableDef {
        id: 0,
        schema,
        name,
        columns,
        primary_key,
        pk_name,
        hidden_rowid,
        indexes,
        checks,
        foreign_keys,
        comment: None,
        column_comments: BTreeMap::new(),
    })
}

fn pc_len_mismatch(a: &[usize], b: &[usize]) -> bool {
    a.len() != b.len()
}

/// The sequences a table's serial columns need, created before it.
pub fn serial_sequences(t: &TableDef) -> Vec<SequenceDef> {
    t.columns
        .iter()
        .filter_map(|c| {
            let d = c.default.as_deref()?;
            let seq = d.strip_prefix("nextval('")?.strip_suffix("')")?;
            (seq == format!("{}_{}_seq", t.name, c.name)).then(|| SequenceDef {
                id: 0,
                schema: t.schema.clone(),
                name: seq.to_string(),
                increment: 1,
                min: 1,
                max: if c.ty == SqlType::Int4 {
                    i32::MAX as i64
                } else {
                    i64::MAX
                },
                start: 1,
                cycle: false,
            })
        })
        .collect()
}

pub fn create_index(
    ci: &CreateIndex,
    default_schema: &str,
    cat: &RelCatalog,
) -> Result<(u64, IndexDef), QueryError> {
    let (schema, table) = resolve(&ci.table_name, default_schema)?;
    let t = cat
        .table(&schema, &table)
        .ok_or_else(|| QueryError::Rel(sluice_relstore::RelError::UndefinedTable(table.clone())))?;
    if ci.predicate.is_some() {
        return Err(QueryError::Unsupported(
            "partial indexes (CREATE INDEX … WHERE)".into(),
        ));
    }
    let names = ident_names(&ci.columns);
    let columns = index_columns(&t.columns, names.clone(), &table)?;
    let name = match &ci.name {
        Some(n) => resolve(n, &schema)?.1,
        None => format!("{table}_{}_idx", names.join("_")),
    };
    Ok((
        t.id,
        IndexDef {
            id: 0,
            name,
            columns,
            unique: ci.unique,
            constraint: false,
        },
    ))
}

/// The op a DROP INDEX name resolves to.
pub fn drop_index(cat: &RelCatalog, schema: &str, name: &str) -> Option<DdlOp> {
    cat.tables
        .values()
        .filter(|t| t.schema == schema)
        .find_map(|t| {
            t.indexes
                .iter()
                .find(|i| i.name == name)
                .map(|i| DdlOp::DropIndex {
                    table: t.id,
                    index: i.id,
                })
        })
}

fn int_option(e: &Expr, what: &str) -> Result<i64, QueryError> {
    let text = e.to_string().replace(' ', "");
    text.parse()
        .map_err(|_| QueryError::Unsupported(format!("sequence {what} {e}: expected an integer")))
}

pub fn sequence(
    schema: String,
    name: String,
    options: &[datafusion::sql::sqlparser::ast::SequenceOptions],
) -> Result<SequenceDef, QueryError> {
    use datafusion::sql::sqlparser::ast::SequenceOptions as O;
    let mut s = SequenceDef {
        id: 0,
        schema,
        name,
        increment: 1,
        min: 1,
        max: i64::MAX,
        start: 1,
        cycle: false,
    };
    let (mut min, mut max, mut start) = (None, None, None);
    for o in options {
        match o {
            O::IncrementBy(e, _) => s.increment = int_option(e, "INCREMENT")?,
            O::MinValue(Some(e)) => min = Some(int_option(e, "MINVALUE")?),
            O::MaxValue(Some(e)) => max = Some(int_option(e, "MAXVALUE")?),
            O::StartWith(e, _) => start = Some(int_option(e, "START")?),
            O::Cycle(c) => s.cycle = *c,
            O::MinValue(None) | O::MaxValue(None) | O::Cache(_) => {}
        }
    }
    if s.increment == 0 {
        return Err(QueryError::Unsupported("INCREMENT must not be zero".into()));
    }
    if s.increment < 0 {
        s.min = i64::MIN;
        s.max = -1;
    }
    s.min = min.unwrap_or(s.min);
    s.max = max.unwrap_or(s.max);
    s.start = start.unwrap_or(if s.increment > 0 { s.min } else { s.max });
    if s.min > s.max || s.start < s.min || s.start > s.max {
        return Err(QueryError::Unsupported(format!(
            "sequence {}: START {} must lie within MINVALUE {} and MAXVALUE {}",
            s.name, s.start, s.min, s.max
        )));
    }
    Ok(s)
}

/// `ALTER SEQUENCE [IF EXISTS] name option…`, which the SQL parser does
/// not know: `rest` is what follows `ALTER SEQUENCE`. RESTART is taken out
/// and the other options are read by the parser as CREATE SEQUENCE's (in
/// its order: INCREMENT, MINVALUE, MAXVALUE, START, CACHE, CYCLE). Returns
/// whether IF EXISTS was given, the name, the options and the RESTART
/// value (`Some(None)`: restart at START).
#[allow(clippy::type_complexity)]
pub fn parse_alter_sequence(
    rest: &str,
) -> Result<
    (
        bool,
        ObjectName,
        Vec<datafusion::sql::sqlparser::ast::SequenceOptions>,
        Option<Option<i64>>,
    ),
    QueryError,
> {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    let tokens = Tokenizer::new(&GenericDialect {}, rest)
        .tokenize()
        .map_err(|e| QueryError::Syntax(e.to_string()))?;
    let words: Vec<&Token> = tokens
        .iter()
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .collect();
    let is = |t: &Token, w: &str| matches!(t, Token::Word(x) if x.value.eq_ignore_ascii_case(w));
    let mut keep = Vec::new();
    let mut restart = None;
    let mut i = 0;
    while i < words.len() {
        if is(words[i], "RESTART") {
            i += 1;
            if i < words.len() && is(words[i], "WITH") {
                i += 1;
            }
            let mut value = None;
            if let Some(Token::Number(n, _)) = words.get(i) {
                value = Some(n.parse::<i64>().map_err(|_| {
                    QueryError::InvalidValue(format!("RESTART {n}: expected an integer"))
                })?);
                i += 1;
            } else if matches!(words.get(i), Some(Token::Minus)) {
                if let Some(Token::Number(n, _)) = words.get(i + 1) {
                    value = Some(-n.parse::<i64>().map_err(|_| {
                        QueryError::InvalidValue(format!("RESTART -{n}: expected an integer"))
                    })?);
                    i += 2;
                }
            }
            restart = Some(value);
            continue;
        }
        keep.push(words[i].to_string());
        i += 1;
    }
    let mut text = keep.join(" ");
    let if_exists = text.to_ascii_uppercase().starts_with("IF EXISTS ");
    if if_exists {
        text = text["IF EXISTS ".len()..].to_string();
    }
    let stmt = crate::session::parse(&format!("CREATE SEQUENCE {text}"))?.pop();
    match stmt {
        Some(datafusion::sql::sqlparser::ast::Statement::CreateSequence {
            name,
            sequence_options,
            ..
        }) => Ok((if_exists, name, sequence_options, restart)),
        _ => Err(QueryError::Syntax(format!("ALTER SEQUENCE {rest}"))),
    }
}

/// `def` changed by the options of an ALTER SEQUENCE.
pub fn altered_sequence(
    mut def: SequenceDef,
    options: &[datafusion::sql::sqlparser::ast::SequenceOptions],
) -> Result<SequenceDef, QueryError> {
    use datafusion::sql::sqlparser::ast::SequenceOptions as O;
    for o in options {
        match o {
            O::IncrementBy(e, _) => def.increment = int_option(e, "INCREMENT")?,
            O::MinValue(Some(e)) => def.min = int_option(e, "MINVALUE")?,
            O::MaxValue(Some(e)) => def.max = int_option(e, "MAXVALUE")?,
            O::MinValue(None) => def.min = if def.increment > 0 { 1 } else { i64::MIN },
            O::MaxValue(None) => def.max = if def.increment > 0 { i64::MAX } else { -1 },
            O::StartWith(e, _) => def.start = int_option(e, "START")?,
            O::Cycle(c) => def.cycle = *c,
            O::Cache(_) => {}
        }
    }
    if def.increment == 0 {
        return Err(QueryError::Unsupported("INCREMENT must not be zero".into()));
    }
    if def.min > def.max || def.start < def.min || def.start > def.max {
        return Err(QueryError::Unsupported(format!(
            "sequence {}: START {} must lie within MINVALUE {} and MAXVALUE {}",
            def.name, def.start, def.min, def.max
        )));
    }
    Ok(def)
}

/// The op of `COMMENT ON TABLE | COLUMN | INDEX | SEQUENCE | DATABASE … IS …`.
pub fn comment(
    cat: &RelCatalog,
    db: &str,
    kind: datafusion::sql::sqlparser::ast::CommentObject,
    name: &ObjectName,
    comment: Option<String>,
) -> Result<DdlOp, QueryError> {
    use datafusion::sql::sqlparser::ast::CommentObject as C;
    let parts: Vec<String> = name
        .0
        .iter()
        .filter_map(|p| p.as_ident().map(norm))
        .collect();
    let table_of = |schema: &str, table: &str| {
        cat.table(schema, table).map(|t| t.id).ok_or_else(|| {
            QueryError::Rel(sluice_relstore::RelError::UndefinedTable(table.to_string()))
        })
    };
    match kind {
        C::Table => {
            let (schema, table) = resolve(name, db)?;
            Ok(DdlOp::CommentTable {
                table: table_of(&schema, &table)?,
                comment,
            })
        }
        C::Column => {
            let (schema, table, column) = match parts.as_slice() {
                [t, c] => (db.to_string(), t.clone(), c.clone()),
                [s, t, c] => (s.clone(), t.clone(), c.clone()),
                _ => {
                    return Err(QueryError::Unsupported(format!(
                        "COMMENT ON COLUMN {name}: use table.column"
                    )))
                }
            };
            Ok(DdlOp::CommentColumn {
                table: table_of(&schema, &table)?,
                column,
                comment,
            })
        }
        C::Index => {
            let (schema, n) = resolve(name, db)?;
            match drop_index(cat, &schema, &n) {
                Some(DdlOp::DropIndex { index, .. }) => {
                    Ok(DdlOp::CommentObject { id: index, comment })
                }
                _ => Err(QueryError::Rel(sluice_relstore::RelError::UndefinedObject(
                    format!("index {n}"),
                ))),
            }
        }
        C::Sequence => {
            let (schema, n) = resolve(name, db)?;
            let s = cat.sequence(&schema, &n).ok_or_else(|| {
                QueryError::Rel(sluice_relstore::RelError::UndefinedTable(format!(
                    "sequence {n}"
                )))
            })?;
            Ok(DdlOp::CommentObject { id: s.id, comment })
        }
        C::Database | C::Schema => Ok(DdlOp::CommentDatabase {
            database: parts.last().cloned().unwrap_or_default(),
            comment,
        }),
        other => Err(QueryError::Unsupported(format!("COMMENT ON {other}"))),
    }
}
