//! DataFusion's view of Sluice: catalog `sluice`, one schema per database,
//! one table per measurement, read from consistent per-shard snapshots.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, SchemaProvider, Session, TableProvider};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::datasource::TableType;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use sluice_engine::catalog::TIME_COLUMN;
use sluice_engine::chunk::DedupPolicy;
use sluice_engine::{EngineHandle, TableSnapshot};

use crate::rel::provider::RelTable;
use crate::rel::RelBinding;
use crate::scan::{plan_shard, ScanExec, TagFilter};

pub const CATALOG: &str = "sluice";

/// One capture of each time-series table a statement reads, made by its
/// first scan of the table and shared by the rest, so that a self-join (or
/// a table in a subquery and outside it) reads one state.
pub(crate) type Captures =
    Arc<parking_lot::Mutex<HashMap<(String, String), Arc<Vec<TableSnapshot>>>>>;

pub struct SluiceCatalog {
    engine: EngineHandle,
    live: Arc<[Arc<dyn crate::system::LiveTable>]>,
    /// The statement's relational transaction, when it has one.
    rel: Option<Arc<RelBinding>>,
    captures: Captures,
}

impl SluiceCatalog {
    pub fn new(engine: EngineHandle, live: Vec<Arc<dyn crate::system::LiveTable>>) -> Self {
        SluiceCatalog {
            engine,
            live: live.into(),
            rel: None,
            captures: Captures::default(),
        }
    }

    /// The catalog one statement reads through: relational tables through
    /// `binding`, time-series tables captured once.
    pub(crate) fn for_statement(&self, binding: Option<Arc<RelBinding>>) -> Self {
        SluiceCatalog {
            engine: self.engine.clone(),
            live: self.live.clone(),
            rel: binding,
            captures: Captures::default(),
        }
    }
}

impl fmt::Debug for SluiceCatalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SluiceCatalog")
    }
}

impl CatalogProvider for SluiceCatalog {
    fn schema_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .engine
            .catalog()
            .snapshot()
            .databases
            .keys()
            .filter(|d| *d != sluice_engine::catalog::SYSTEM_DATABASE)
            .cloned()
            .collect();
        names.push(crate::system::SYSTEM.to_string());
        if let Some(b) = &self.rel {
            names.extend(b.catalog().schemas());
            names.push("public".to_string());
        }
        names.sort();
        names.dedup();
        names
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        if name == crate::system::SYSTEM {
            return Some(Arc::new(crate::system::SystemSchema {
                engine: self.engine.clone(),
                live: self.live.clone(),
                rel: self.rel.as_ref().map(|b| b.catalog()),
            }));
        }
        let relational = self
            .rel
            .as_ref()
            .is_some_and(|b| name == "public" || b.catalog().schemas().iter().any(|s| s == name));
        if !relational && !self.engine.catalog().database_exists(name) {
            return None;
        }
        Some(Arc::new(SluiceSchema {
            engine: self.engine.clone(),
            database: name.to_string(),
            rel: self.rel.clone(),
            captures: self.captures.clone(),
        }))
    }
}

pub(crate) struct SluiceSchema {
    pub(crate) engine: EngineHandle,
    pub(crate) database: String,
    pub(crate) rel: Option<Arc<RelBinding>>,
    pub(crate) captures: Captures,
}

impl fmt::Debug for SluiceSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SluiceSchema({})", self.database)
    }
}

#[async_trait]
impl SchemaProvider for SluiceSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .engine
            .catalog()
            .snapshot()
            .databases
            .get(&self.database)
            .map(|d| d.tables.keys().cloned().collect())
            .unwrap_or_default();
        if let Some(b) = &self.rel {
            let cat = b.catalog();
            names.extend(
                cat.tables
                    .keys()
                    .filter(|(s, _)| *s == self.database)
                    .map(|(_, n)| n.clone()),
            );
        }
        names
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        if let Some(b) = &self.rel {
            if let Some(def) = b.catalog().table(&self.database, name) {
                return Ok(Some(Arc::new(RelTable::new(def.clone(), b.clone()))));
            }
        }
        let snap = self.engine.catalog().snapshot();
        Ok(snap.table(&self.database, name).map(|t| {
            Arc::new(SluiceTable {
                engine: self.engine.clone(),
                captures: self.captures.clone(),
                database: self.database.clone(),
                table: name.to_string(),
                schema: t.arrow_schema(),
                policy: t.options.dedup,
            }) as Arc<dyn TableProvider>
        }))
    }

    fn table_exist(&self, name: &str) -> bool {
        if let Some(b) = &self.rel {
            if b.catalog().table(&self.database, name).is_some() {
                return true;
            }
        }
        self.engine
            .catalog()
            .snapshot()
            .table(&self.database, name)
            .is_some()
    }
}

struct SluiceTable {
    engine: EngineHandle,
    captures: Captures,
    database: String,
    table: String,
    schema: SchemaRef,
    policy: DedupPolicy,
}

impl fmt::Debug for SluiceTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SluiceTable({}.{})", self.database, self.table)
    }
}

fn timestamp_ns(v: &ScalarValue) -> Option<i64> {
    match v {
        ScalarValue::TimestampNanosecond(Some(x), _) => Some(*x),
        ScalarValue::TimestampMicrosecond(Some(x), _) => x.checked_mul(1_000),
        ScalarValue::TimestampMillisecond(Some(x), _) => x.checked_mul(1_000_000),
        ScalarValue::TimestampSecond(Some(x), _) => x.checked_mul(1_000_000_000),
        _ => None,
    }
}

fn is_time(e: &Expr) -> bool {
    matches!(e, Expr::Column(c) if c.name == TIME_COLUMN)
}

fn literal_ns(e: &Expr) -> Option<i64> {
    match e {
        Expr::Literal(v, _) => timestamp_ns(v),
        Expr::Cast(c) => literal_ns(&c.expr),
        _ => None,
    }
}

fn literal_str(e: &Expr) -> Option<String> {
    match e {
        Expr::Literal(v, _) => match v {
            ScalarValue::Utf8(Some(s))
            | ScalarValue::LargeUtf8(Some(s))
            | ScalarValue::Utf8View(Some(s)) => Some(s.clone()),
            ScalarValue::Dictionary(_, inner) => {
                literal_str(&Expr::Literal((**inner).clone(), None))
            }
            _ => None,
        },
        Expr::Cast(c) => literal_str(&c.expr),
        _ => None,
    }
}

fn column_name(e: &Expr) -> Option<&str> {
    match e {
        Expr::Column(c) => Some(c.name.as_str()),
        Expr::Cast(c) => column_name(&c.expr),
        Expr::TryCast(c) => column_name(&c.expr),
        _ => None,
    }
}

/// `tag = 'v'` or `tag IN ('v', …)`: the tag and its accepted values.
fn tag_bound(e: &Expr, schema: &SchemaRef) -> Option<(String, Vec<String>)> {
    let is_tag = |name: &str| {
        schema
            .field_with_name(name)
            .is_ok_and(|f| f.data_type() == &sluice_engine::catalog::tag_data_type())
    };
    match e {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Eq,
            right,
        }) => {
            let (c, v) = match (column_name(left), column_name(right)) {
                (Some(c), _) => (c, literal_str(right)?),
                (None, Some(c)) => (c, literal_str(left)?),
                _ => return None,
            };
            is_tag(c).then(|| (c.to_string(), vec![v]))
        }
        Expr::InList(l) if !l.negated => {
            let c = column_name(&l.expr)?;
            let values = l.list.iter().map(literal_str).collect::<Option<Vec<_>>>()?;
            is_tag(c).then(|| (c.to_string(), values))
        }
        _ => None,
    }
}

/// The `[min, max]` (inclusive, ns) a filter confines `time` to, if it does.
fn time_bound(e: &Expr) -> Option<(i64, i64)> {
    match e {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (v, op) = if is_time(left) {
                (literal_ns(right)?, *op)
            } else if is_time(right) {
                (literal_ns(left)?, op.swap()?)
            } else {
                return None;
            };
            match op {
                Operator::Eq => Some((v, v)),
                Operator::Gt => Some((v.saturating_add(1), i64::MAX)),
                Operator::GtEq => Some((v, i64::MAX)),
                Operator::Lt => Some((i64::MIN, v.saturating_sub(1))),
                Operator::LtEq => Some((i64::MIN, v)),
                _ => None,
            }
        }
        Expr::Between(Between {
            expr,
            negated: false,
            low,
            high,
        }) if is_time(expr) => Some((literal_ns(low)?, literal_ns(high)?)),
        _ => None,
    }
}

#[async_trait]
impl TableProvider for SluiceTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Time and tag filters prune pages and batches; DataFusion still
        // applies every filter row by row, hence Inexact. Called many times
        // per query: no I/O here.
        Ok(filters
            .iter()
            .map(|f| {
                if time_bound(f).is_some() || tag_bound(f, &self.schema).is_some() {
                    TableProviderFilterPushDown::Inexact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let (mut min, mut max) = (i64::MIN, i64::MAX);
        for (lo, hi) in filters.iter().filter_map(time_bound) {
            min = min.max(lo);
            max = max.min(hi);
        }
        let mut tags: TagFilter = Vec::new();
        for (name, values) in filters.iter().filter_map(|f| tag_bound(f, &self.schema)) {
            match tags.iter_mut().find(|(n, _)| *n == name) {
                Some((_, have)) => have.retain(|v| values.contains(v)),
                None => tags.push((name, values)),
            }
        }
        let projected = match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => self.schema.clone(),
        };
        let shards = if min > max || tags.iter().any(|(_, v)| v.is_empty()) {
            Vec::new()
        } else {
            self.capture()
                .await?
                .iter()
                .map(|s| s.within(min, max))
                .collect()
        };
        let partitions = shards
            .into_iter()
            .map(|s| plan_shard(s, min, max, &tags))
            .collect();
        Ok(Arc::new(ScanExec::new(
            format!("{}.{}", self.database, self.table),
            self.schema.clone(),
            projected,
            self.policy,
            partitions,
            min,
            max,
            if filters.is_empty() { limit } else { None },
        )))
    }
}

impl SluiceTable {
    /// The statement's capture of this table, made now if this is its
    /// first scan.
    async fn capture(&self) -> Result<Arc<Vec<TableSnapshot>>> {
        let key = (self.database.clone(), self.table.clone());
        if let Some(c) = self.captures.lock().get(&key) {
            return Ok(c.clone());
        }
        let fresh = self
            .engine
            .snapshot(&self.database, &self.table, i64::MIN, i64::MAX)
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        // Two scans planned at once keep whichever capture came first.
        Ok(self
            .captures
            .lock()
            .entry(key)
            .or_insert_with(|| Arc::new(fresh))
            .clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::{col, lit};

    fn ts(v: i64) -> Expr {
        lit(ScalarValue::TimestampNanosecond(
            Some(v),
            Some("UTC".into()),
        ))
    }

    #[test]
    fn time_bounds_are_inclusive_and_sided() {
        assert_eq!(time_bound(&col("time").gt(ts(10))), Some((11, i64::MAX)));
        assert_eq!(time_bound(&col("time").gt_eq(ts(10))), Some((10, i64::MAX)));
        assert_eq!(time_bound(&col("time").lt(ts(10))), Some((i64::MIN, 9)));
        assert_eq!(time_bound(&col("time").lt_eq(ts(10))), Some((i64::MIN, 10)));
        assert_eq!(time_bound(&col("time").eq(ts(10))), Some((10, 10)));
        // Literal on the left: the operator is mirrored.
        assert_eq!(time_bound(&ts(10).lt(col("time"))), Some((11, i64::MAX)));
        assert_eq!(time_bound(&col("time").between(ts(5), ts(7))), Some((5, 7)));
        assert_eq!(
            time_bound(&lit(ScalarValue::TimestampSecond(Some(2), None)).lt_eq(col("time"))),
            Some((2_000_000_000, i64::MAX))
        );
        // Anything else is not a bound and must not prune.
        assert_eq!(time_bound(&col("time").not_eq(ts(10))), None);
        assert_eq!(time_bound(&col("host").gt(ts(10))), None);
        assert_eq!(time_bound(&col("time").not_between(ts(5), ts(7))), None);
        assert_eq!(time_bound(&col("time").gt(lit(3i64))), None);
    }
}
