//! INSERT, UPDATE and DELETE on relational tables. Each runs a SELECT
//! through DataFusion in the statement's transaction (the VALUES or query
//! of an INSERT; the rows an UPDATE or DELETE touches, with their primary
//! keys and new values), then writes through the transaction, which checks
//! the constraints. Nothing is changed while a plan is built, so EXPLAIN
//! and subqueries in WHERE behave as in a SELECT.

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{
    AssignmentTarget, Delete, FromTable, Insert, OnConflictAction, OnInsert, SelectItem,
    TableFactor, TableObject, Update, UpdateTableFromKind,
};
use sluice_relstore::schema::TableDef;
use sluice_relstore::value::{Row, Value};
use sluice_relstore::{pk_key, Inserted, OnConflict, RelError};

use super::convert::{column_values, pk_values, rows_to_batch, table_schema, PK_COLUMN};
use super::ddl::resolve;
use super::RelBinding;
use crate::error::QueryError;
use crate::QueryEngine;

/// What a DML statement did: how many rows, and RETURNING's rows.
pub struct DmlResult {
    pub tag: String,
    pub returning: Option<Returned>,
}

/// RETURNING's columns and rows.
pub type Returned = (arrow::datatypes::SchemaRef, Vec<RecordBatch>);

fn target(
    binding: &RelBinding,
    name: &datafusion::sql::sqlparser::ast::ObjectName,
    db: &str,
) -> Result<Arc<TableDef>, QueryError> {
    let (schema, table) = resolve(name, db)?;
    if let Some(p) = &binding.principal {
        p.check(&schema, sluice_access::Privilege::Write)?;
    }
    binding
        .catalog()
        .table(&schema, &table)
        .cloned()
        .ok_or(QueryError::Rel(RelError::UndefinedTable(table)))
}

/// How the statement names its target: its alias, or the table's name.
fn alias_of(alias: &Option<datafusion::sql::sqlparser::ast::TableAlias>, t: &TableDef) -> String {
    alias
        .as_ref()
        .map(|a| quote(&super::ddl::norm(&a.name)))
        .unwrap_or_else(|| quote(&t.name))
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Evaluates `items` over `rows` of table `t` (for RETURNING and CHECK).
async fn over_rows(t: &TableDef, rows: &[Row], items: &str) -> Result<Returned, QueryError> {
    let schema = table_schema(t, false);
    let keyed: Vec<(Vec<u8>, Row)> = rows.iter().map(|r| (Vec::new(), r.clone())).collect();
    let batch = rows_to_batch(t, &keyed, &schema)?;
    let ctx = SessionContext::new();
    let mem = MemTable::try_new(schema, vec![vec![batch]]).map_err(QueryError::Execution)?;
    ctx.register_table(t.name.as_str(), Arc::new(mem))
        .map_err(QueryError::Execution)?;
    let df = ctx
        .sql(&format!("SELECT {items} FROM {}", quote(&t.name)))
        .await
        .map_err(QueryError::Plan)?;
    let schema = Arc::new(df.schema().as_arrow().clone());
    Ok((schema, df.collect().await.map_err(QueryError::Execution)?))
}

async fn returning(
    t: &TableDef,
    rows: &[Row],
    items: &Option<Vec<SelectItem>>,
) -> Result<Option<Returned>, QueryError> {
    let Some(items) = items else { return Ok(None) };
    let list: Vec<String> = items.iter().map(|i| i.to_string()).collect();
    Ok(Some(over_rows(t, rows, &list.join(", ")).await?))
}

/// Every CHECK constraint must be true or NULL for every new row.
async fn check_rows(t: &TableDef, rows: &[Row]) -> Result<(), QueryError> {
    if t.checks.is_empty() || rows.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = t
        .checks
        .iter()
        .map(|c| format!("({}) IS NOT FALSE", c.expr))
        .collect();
    for batch in over_rows(t, rows, &list.join(", ")).await?.1 {
        for (i, c) in t.checks.iter().enumerate() {
            let vals = column_values(&batch, i, sluice_relstore::value::SqlType::Bool, &c.name)?;
            if vals.contains(&Value::Bool(false)) {
                return Err(QueryError::Rel(RelError::CheckViolation {
                    table: t.name.clone(),
                    constraint: c.name.clone(),
                }));
            }
        }
    }
    Ok(())
}

impl QueryEngine {
    /// The columns a DML statement's RETURNING answers with, or None.
    pub(crate) async fn returning_schema(
        &self,
        s: &crate::session::Session,
        stmt: &datafusion::sql::sqlparser::ast::Statement,
    ) -> Result<Option<arrow::datatypes::SchemaRef>, QueryError> {
        use datafusion::sql::sqlparser::ast::Statement as S;
        let Some(rel) = &self.rel else {
            return Ok(None);
        };
        let db = s.db.clone().unwrap_or_else(|| "public".to_string());
        let (name, items) = match stmt {
            S::Insert(i) => match &i.table {
                TableObject::TableName(n) => (n.clone(), &i.returning),
                _ => return Ok(None),
            },
            S::Update(u) => match &u.table.relation {
                TableFactor::Table { name, .. } => (name.clone(), &u.returning),
                _ => return Ok(None),
            },
            S::Delete(d) => {
                let (FromTable::WithFromKeyword(f) | FromTable::WithoutKeyword(f)) = &d.from;
                match f.first().map(|t| &t.relation) {
                    Some(TableFactor::Table { name, .. }) => (name.clone(), &d.returning),
                    _ => return Ok(None),
                }
            }
            _ => return Ok(None),
        };
        if items.is_none() {
            return Ok(None);
        }
        let (schema, table) = resolve(&name, &db)?;
        let Some(t) = rel.catalog().table(&schema, &table).cloned() else {
            return Ok(None);
        };
        Ok(returning(&t, &[], items).await?.map(|(schema, _)| schema))
    }

    /// The value of a constant expression (a DEFAULT) as type `ty`.
    pub(crate) async fn constant(
        &self,
        expr: &str,
        ty: sluice_relstore::value::SqlType,
        column: &str,
    ) -> Result<Value, QueryError> {
        let ctx = SessionContext::new();
        let batches = ctx
            .sql(&format!("SELECT {expr}"))
            .await
            .map_err(QueryError::Plan)?
            .collect()
            .await
            .map_err(QueryError::Execution)?;
        match batches.first() {
            Some(b) if b.num_rows() > 0 => Ok(column_values(b, 0, ty, column)?.remove(0)),
            _ => Ok(Value::Null),
        }
    }

    /// The value of a column's DEFAULT for one new row.
    async fn default_value(
        &self,
        binding: &Arc<RelBinding>,
        t: &TableDef,
        col: usize,
        cache: &mut [Option<Value>],
    ) -> Result<Value, QueryError> {
        let c = &t.columns[col];
        if t.hidden_rowid && col == t.columns.len() - 1 {
            return Ok(Value::Int(binding.handle.next_rowid(t.id).await?));
        }
        let Some(expr) = &c.default else {
            return Ok(Value::Null);
        };
        if let Some(seq) = expr
            .strip_prefix("nextval('")
            .and_then(|s| s.strip_suffix("')"))
        {
            let (schema, name) = match seq.split_once('.') {
                Some((s, n)) => (s.to_string(), n.to_string()),
                None => (t.schema.clone(), seq.to_string()),
            };
            let cat = binding.catalog();
            let s = cat.sequence(&schema, &name).ok_or_else(|| {
                QueryError::Rel(RelError::UndefinedTable(format!("sequence {name}")))
            })?;
            let v = binding.handle.nextval(s.id).await?;
            binding.currvals.lock().insert(s.id, v);
            return Ok(Value::Int(v));
        }
        // A constant (or now()): the same for every row of the statement.
        if let Some(v) = &cache[col] {
            return Ok(v.clone());
        }
        let v = self.constant(expr, c.ty, &c.name).await?;
        cache[col] = Some(v.clone());
        Ok(v)
    }

    /// The rows of an INSERT's VALUES or query, run through DataFusion:
    /// per row, the values of the target columns, typed as those columns.
    async fn evaluated_rows(
        &self,
        db: &str,
        binding: &Arc<RelBinding>,
        t: &TableDef,
        targets: &[usize],
        source: &str,
    ) -> Result<Vec<Vec<Value>>, QueryError> {
        let batches = self.collect_in(Some(db), binding.clone(), source).await?;
        let mut rows = Vec::new();
        for b in &batches {
            if b.num_columns() != targets.len() {
                return Err(QueryError::InvalidValue(format!(
                    "INSERT has {} expressions but {} target columns",
                    b.num_columns(),
                    targets.len()
                )));
            }
            let mut cols = Vec::with_capacity(targets.len());
            for (k, &c) in targets.iter().enumerate() {
                cols.push(column_values(b, k, t.columns[c].ty, &t.columns[c].name)?);
            }
            for i in 0..b.num_rows() {
                rows.push(cols.iter().map(|col| col[i].clone()).collect());
            }
        }
        Ok(rows)
    }

    pub(crate) async fn insert(
        &self,
        db: &str,
        binding: Arc<RelBinding>,
        ins: &Insert,
    ) -> Result<DmlResult, QueryError> {
        let TableObject::TableName(name) = &ins.table else {
            return Err(QueryError::Unsupported(
                "INSERT into a table function".into(),
            ));
        };
        let t = target(&binding, name, db)?;
        let visible = t.visible_columns().len();
        let targets: Vec<usize> = if ins.columns.is_empty() {
            (0..visible).collect()
        } else {
            let mut out = Vec::new();
            for c in &ins.columns {
                let n =
                    c.0.last()
                        .and_then(|p| p.as_ident())
                        .map(super::ddl::norm)
                        .unwrap_or_default();
                let n = n.as_str();
                let pos = t.column(n).filter(|p| *p < visible).ok_or_else(|| {
                    QueryError::Rel(RelError::UndefinedColumn {
                        table: t.name.clone(),
                        column: n.to_string(),
                    })
                })?;
                out.push(pos);
            }
            out
        };
        let on_conflict = match &ins.on {
            None => OnConflict::Error,
            Some(OnInsert::OnConflict(oc)) => match &oc.action {
                OnConflictAction::DoNothing => OnConflict::Nothing,
                OnConflictAction::DoUpdate(_) => OnConflict::Update,
            },
            Some(other) => return Err(QueryError::Unsupported(format!("{other}"))),
        };
        let source = ins
            .source
            .as_ref()
            .ok_or_else(|| QueryError::Unsupported("INSERT without VALUES or a query".into()))?;
        // Literal VALUES (what OLTP clients send) need no plan.
        let given = match super::point::literal_rows(source, &t, &targets) {
            Some(rows) => {
                super::point::counted();
                rows
            }
            None => {
                self.evaluated_rows(db, &binding, &t, &targets, &source.to_string())
                    .await?
            }
        };
        let mut rows: Vec<Row> = Vec::with_capacity(given.len());
        let mut cache = vec![None; t.columns.len()];
        for vals in given {
            let mut row = Vec::with_capacity(t.columns.len());
            for c in 0..t.columns.len() {
                match targets.iter().position(|&x| x == c) {
                    Some(k) => row.push(vals[k].clone()),
                    None => row.push(self.default_value(&binding, &t, c, &mut cache).await?),
                }
            }
            rows.push(row);
        }
        check_rows(&t, &rows).await?;
        let mut written = Vec::with_capacity(rows.len());
        let mut conflicts = Vec::new();
        {
            let cat = binding.catalog();
            let mut txn = binding.txn.lock();
            for row in rows {
                match txn.insert(&cat, &t, row.clone(), on_conflict)? {
                    Inserted::Row => written.push(row),
                    Inserted::Conflict(pk, existing) => conflicts.push((pk, existing, row)),
                }
            }
        }
        if let Some(OnInsert::OnConflict(oc)) = &ins.on {
            if let OnConflictAction::DoUpdate(du) = &oc.action {
                let updated = self
                    .upsert(
                        &binding,
                        &t,
                        conflicts,
                        &du.assignments,
                        du.selection.as_ref(),
                    )
                    .await?;
                written.extend(updated);
            }
        }
        Ok(DmlResult {
            tag: format!("INSERT 0 {}", written.len()),
            returning: returning(&t, &written, &ins.returning).await?,
        })
    }

    /// `ON CONFLICT DO UPDATE`: the assignments see the existing row under
    /// the table's name and the proposed one as `excluded`.
    async fn upsert(
        &self,
        binding: &Arc<RelBinding>,
        t: &Arc<TableDef>,
        conflicts: Vec<(Vec<u8>, Row, Row)>,
        assignments: &[datafusion::sql::sqlparser::ast::Assignment],
        selection: Option<&datafusion::sql::sqlparser::ast::Expr>,
    ) -> Result<Vec<Row>, QueryError> {
        if conflicts.is_empty() {
            return Ok(Vec::new());
        }
        let schema = table_schema(t, true);
        let existing: Vec<(Vec<u8>, Row)> = conflicts
            .iter()
            .map(|(pk, e, _)| (pk.clone(), e.clone()))
            .collect();
        let proposed: Vec<(Vec<u8>, Row)> = conflicts
            .iter()
            .map(|(pk, _, p)| (pk.clone(), p.clone()))
            .collect();
        let ctx = SessionContext::new();
        for (name, rows) in [(t.name.as_str(), &existing), ("excluded", &proposed)] {
            let batch = rows_to_batch(t, rows, &schema)?;
            let mem = MemTable::try_new(schema.clone(), vec![vec![batch]])
                .map_err(QueryError::Execution)?;
            ctx.register_table(name, Arc::new(mem))
                .map_err(QueryError::Execution)?;
        }
        let items = self.assigned_items(t, assignments, &quote(&t.name))?;
        let mut sql = format!(
            "SELECT {q}.{pk}, {items} FROM {q} JOIN excluded ON {q}.{pk} = excluded.{pk}",
            q = quote(&t.name),
            pk = PK_COLUMN
        );
        if let Some(w) = selection {
            sql.push_str(&format!(" WHERE {w}"));
        }
        let batches = ctx
            .sql(&sql)
            .await
            .map_err(QueryError::Plan)?
            .collect()
            .await
            .map_err(QueryError::Execution)?;
        self.apply_updates(binding, t, &batches).await
    }

    /// The SELECT list of new values: each visible column, assigned or kept.
    fn assigned_items(
        &self,
        t: &TableDef,
        assignments: &[datafusion::sql::sqlparser::ast::Assignment],
        alias: &str,
    ) -> Result<String, QueryError> {
        let visible = t.visible_columns();
        let mut exprs: Vec<String> = visible
            .iter()
            .map(|c| format!("{alias}.{}", quote(&c.name)))
            .collect();
        for a in assignments {
            let AssignmentTarget::ColumnName(n) = &a.target else {
                return Err(QueryError::Unsupported("tuple assignment in SET".into()));
            };
            let col =
                n.0.last()
                    .and_then(|p| p.as_ident())
                    .map(super::ddl::norm)
                    .unwrap_or_default();
            let pos = visible.iter().position(|c| c.name == col).ok_or_else(|| {
                QueryError::Rel(RelError::UndefinedColumn {
                    table: t.name.clone(),
                    column: col.clone(),
                })
            })?;
            exprs[pos] = a.value.to_string();
        }
        Ok(exprs.join(", "))
    }

    /// Writes the rows of `batches` (primary key, then every visible
    /// column's new value) as updates; returns the new rows.
    async fn apply_updates(
        &self,
        binding: &Arc<RelBinding>,
        t: &TableDef,
        batches: &[RecordBatch],
    ) -> Result<Vec<Row>, QueryError> {
        let visible = t.visible_columns().len();
        let mut updates: Vec<(Vec<u8>, Row)> = Vec::new();
        for b in batches {
            let pks = pk_values(b, 0)?;
            let mut cols = Vec::with_capacity(visible);
            for c in 0..visible {
                cols.push(column_values(
                    b,
                    c + 1,
                    t.columns[c].ty,
                    &t.columns[c].name,
                )?);
            }
            for (i, pk) in pks.into_iter().enumerate() {
                updates.push((pk, cols.iter().map(|c| c[i].clone()).collect()));
            }
        }
        // A row matched twice (UPDATE … FROM) is updated once.
        let mut seen = std::collections::HashSet::new();
        updates.retain(|(pk, _)| seen.insert(pk.clone()));
        let cat = binding.catalog();
        let mut news = Vec::with_capacity(updates.len());
        {
            let mut txn = binding.txn.lock();
            for (pk, mut row) in updates {
                if t.hidden_rowid {
                    let old = txn.get(t, &pk)?.ok_or_else(|| {
                        QueryError::Rel(RelError::Conflict("the row to update is gone".into()))
                    })?;
                    row.push(old[t.columns.len() - 1].clone());
                }
                news.push((pk, row));
            }
        }
        let rows: Vec<Row> = news.iter().map(|(_, r)| r.clone()).collect();
        check_rows(t, &rows).await?;
        let mut txn = binding.txn.lock();
        for (pk, row) in news {
            debug_assert!(!t.hidden_rowid || pk_key(t, &row) == pk);
            txn.update(&cat, t, &pk, row)?;
        }
        Ok(rows)
    }

    /// Runs the key-selecting query of an UPDATE or DELETE (primary keys in
    /// its first column) and locks those rows. If a row had changed since
    /// the snapshot (the transaction waited for its writer), the snapshot
    /// has moved forward and the query runs again, until the rows it picks
    /// are all locked as it read them.
    async fn collect_locked(
        &self,
        db: &str,
        dml: &Arc<RelBinding>,
        table: u64,
        sql: &str,
    ) -> Result<Vec<RecordBatch>, QueryError> {
        dml.txn.lock().begin_statement();
        for _ in 0..8 {
            let batches = self.collect_in(Some(db), dml.clone(), sql).await?;
            let mut keys = Vec::new();
            for b in &batches {
                keys.extend(pk_values(b, 0)?);
            }
            if !dml.handle.lock_rows(&dml.txn, table, &keys).await? {
                return Ok(batches);
            }
        }
        Err(QueryError::Rel(RelError::Conflict(
            "the rows to change kept changing under it".into(),
        )))
    }

    /// A point UPDATE: the row read, locked (read again if it changed
    /// meanwhile, as `collect_locked` does) and written. Answers the rows
    /// changed, or None when the new row is for the general path to make.
    async fn point_update(
        &self,
        binding: &Arc<RelBinding>,
        point: &super::point::PointUpdate,
    ) -> Result<Option<usize>, QueryError> {
        let t = &point.table;
        if let Some(p) = &binding.principal {
            // UPDATE reads its table, as the general path's SELECT does.
            crate::access::check_schema(p, &t.schema, sluice_access::Privilege::Read)?;
        }
        binding.txn.lock().begin_statement();
        for _ in 0..8 {
            let old = binding.txn.lock().get(t, &point.key)?;
            let keys: Vec<Vec<u8>> = old.iter().map(|_| point.key.clone()).collect();
            if binding.handle.lock_rows(&binding.txn, t.id, &keys).await? {
                continue;
            }
            let Some(old) = old else {
                super::point::counted();
                return Ok(Some(0));
            };
            let Some(new) = point.apply(&old) else {
                return Ok(None);
            };
            let cat = binding.catalog();
            binding.txn.lock().update(&cat, t, &point.key, new)?;
            super::point::counted();
            return Ok(Some(1));
        }
        Err(QueryError::Rel(RelError::Conflict(
            "the rows to change kept changing under it".into(),
        )))
    }

    pub(crate) async fn update(
        &self,
        db: &str,
        binding: Arc<RelBinding>,
        up: &Update,
    ) -> Result<DmlResult, QueryError> {
        let TableFactor::Table { name, alias, .. } = &up.table.relation else {
            return Err(QueryError::Unsupported(
                "UPDATE of something other than a table".into(),
            ));
        };
        if !up.table.joins.is_empty() || up.limit.is_some() {
            return Err(QueryError::Unsupported("UPDATE with JOIN or LIMIT".into()));
        }
        let t = target(&binding, name, db)?;
        if let Some(point) = super::point::update(up, &binding.catalog(), db) {
            if let Some(n) = self.point_update(&binding, &point).await? {
                return Ok(DmlResult {
                    tag: format!("UPDATE {n}"),
                    returning: None,
                });
            }
        }
        let alias_name = alias_of(alias, &t);
        let items = self.assigned_items(&t, &up.assignments, &alias_name)?;
        let mut sql = format!("SELECT {alias_name}.{PK_COLUMN}, {items} FROM {}", up.table);
        if let Some(from) = &up.from {
            let (UpdateTableFromKind::BeforeSet(f) | UpdateTableFromKind::AfterSet(f)) = from;
            for tw in f {
                sql.push_str(&format!(", {tw}"));
            }
        }
        if let Some(w) = &up.selection {
            sql.push_str(&format!(" WHERE {w}"));
        }
        let dml = Arc::new(binding.targeting(t.id));
        let batches = self.collect_locked(db, &dml, t.id, &sql).await?;
        let rows = self.apply_updates(&dml, &t, &batches).await?;
        Ok(DmlResult {
            tag: format!("UPDATE {}", rows.len()),
            returning: returning(&t, &rows, &up.returning).await?,
        })
    }

    pub(crate) async fn delete(
        &self,
        db: &str,
        binding: Arc<RelBinding>,
        del: &Delete,
    ) -> Result<DmlResult, QueryError> {
        let (FromTable::WithFromKeyword(from) | FromTable::WithoutKeyword(from)) = &del.from;
        let [tw] = from.as_slice() else {
            return Err(QueryError::Unsupported("DELETE from several tables".into()));
        };
        let TableFactor::Table { name, alias, .. } = &tw.relation else {
            return Err(QueryError::Unsupported(
                "DELETE from something other than a table".into(),
            ));
        };
        if del.limit.is_some() || !del.order_by.is_empty() {
            return Err(QueryError::Unsupported(
                "DELETE with ORDER BY or LIMIT".into(),
            ));
        }
        let t = target(&binding, name, db)?;
        let alias_name = alias_of(alias, &t);
        let mut sql = format!("SELECT DISTINCT {alias_name}.{PK_COLUMN} FROM {tw}");
        for u in del.using.iter().flatten() {
            sql.push_str(&format!(", {u}"));
        }
        if let Some(w) = &del.selection {
            sql.push_str(&format!(" WHERE {w}"));
        }
        let dml = Arc::new(binding.targeting(t.id));
        let batches = self.collect_locked(db, &dml, t.id, &sql).await?;
        let cat = binding.catalog();
        let mut gone = Vec::new();
        {
            let mut txn = binding.txn.lock();
            for b in &batches {
                for pk in pk_values(b, 0)? {
                    if let Some(old) = txn.get(&t, &pk)? {
                        txn.delete(&cat, &t, &pk)?;
                        gone.push(old);
                    }
                }
            }
        }
        Ok(DmlResult {
            tag: format!("DELETE {}", gone.len()),
            returning: returning(&t, &gone, &del.returning).await?,
        })
    }
}
