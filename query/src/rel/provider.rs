//! Relational tables as DataFusion tables. A scan reads the statement's
//! transaction (its snapshot plus its own writes) when the plan is built,
//! choosing the access path from the pushed-down filters: primary-key
//! lookups, an index lookup on equalities of an index's leading columns, or
//! a full scan. `EXPLAIN` shows which (`RelScanExec: … access=…`).

use std::fmt;
use std::ops::Bound;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::datasource::TableType;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{
    Boundedness, ChildrenPropertiesMode, EmissionType, ReplaceChildrenOptions,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use sluice_relstore::schema::TableDef;
use sluice_relstore::value::{encode_key, Row, Value};

use super::convert::{literal_value, rows_to_batch, table_schema};
use super::RelBinding;

pub struct RelTable {
    pub def: Arc<TableDef>,
    pub binding: Arc<RelBinding>,
    schema: SchemaRef,
}

impl RelTable {
    pub fn new(def: Arc<TableDef>, binding: Arc<RelBinding>) -> RelTable {
        let with_pk = binding.dml_target == Some(def.id);
        RelTable {
            schema: table_schema(&def, with_pk),
            def,
            binding,
        }
    }
}

impl fmt::Debug for RelTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RelTable({}.{})", self.def.schema, self.def.name)
    }
}

/// `column = literal` (either side), as (column name, literal).
fn equality(e: &Expr) -> Option<(&str, &ScalarValue)> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = e else {
        return None;
    };
    if *op != Operator::Eq {
        return None;
    }
    match (left.as_ref(), right.as_ref()) {
        (Expr::Column(c), Expr::Literal(v, _)) | (Expr::Literal(v, _), Expr::Column(c)) => {
            Some((c.name.as_str(), v))
        }
        (Expr::Column(c), Expr::Cast(cast)) | (Expr::Cast(cast), Expr::Column(c)) => {
            match cast.expr.as_ref() {
                Expr::Literal(v, _) => Some((c.name.as_str(), v)),
                _ => None,
            }
        }
        _ => None,
    }
}

/// `column IN (literals)`.
fn in_list(e: &Expr) -> Option<(&str, Vec<&ScalarValue>)> {
    let Expr::InList(l) = e else { return None };
    if l.negated {
        return None;
    }
    let Expr::Column(c) = l.expr.as_ref() else {
        return None;
    };
    let vals: Option<Vec<&ScalarValue>> = l
        .list
        .iter()
        .map(|x| match x {
            Expr::Literal(v, _) => Some(v),
            _ => None,
        })
        .collect();
    Some((c.name.as_str(), vals?))
}

/// `column = literal` that the scan applies itself, exactly: the column is
/// a visible one and the literal has a non-null value of its type.
/// DataFusion then plans no filter over the scan for it, which for a point
/// lookup is most of what planning the statement costs.
fn exact_equality(def: &TableDef, e: &Expr) -> Option<(usize, Value)> {
    let (name, v) = equality(e)?;
    let c = def.column(name)?;
    if def.hidden_rowid && c + 1 == def.columns.len() {
        return None;
    }
    let val = literal_value(v, def.columns[c].ty)?;
    (!val.is_null()).then_some((c, val))
}

enum Access {
    Keys(Vec<Vec<u8>>),
    Index(usize, Vec<Value>),
    Full,
}

fn choose_access(def: &TableDef, filters: &[Expr]) -> Access {
    let mut eq: Vec<(usize, Value)> = Vec::new();
    for f in filters {
        if let Some((name, v)) = equality(f) {
            if let Some(c) = def.column(name) {
                if let Some(val) = literal_value(v, def.columns[c].ty) {
                    eq.push((c, val));
                }
            }
        }
    }
    let value_of = |c: usize| eq.iter().find(|(k, _)| *k == c).map(|(_, v)| v.clone());
    let pk: Option<Vec<Value>> = def.primary_key.iter().map(|&c| value_of(c)).collect();
    if let Some(pk) = pk.filter(|_| !def.hidden_rowid) {
        return Access::Keys(vec![encode_key(&pk.iter().collect::<Vec<_>>())]);
    }
    if def.primary_key.len() == 1 && !def.hidden_rowid {
        let c = def.primary_key[0];
        for f in filters {
            if let Some((name, vals)) = in_list(f) {
                if def.column(name) == Some(c) {
                    let keys: Option<Vec<Vec<u8>>> = vals
                        .iter()
                        .map(|v| literal_value(v, def.columns[c].ty).map(|x| encode_key(&[&x])))
                        .collect();
                    if let Some(mut keys) = keys {
                        keys.sort();
                        keys.dedup();
                        return Access::Keys(keys);
                    }
                }
            }
        }
    }
    // The index whose leading columns the equalities cover best.
    let mut best: Option<(usize, Vec<Value>)> = None;
    for (i, ix) in def.indexes.iter().enumerate() {
        let prefix: Vec<Value> = ix.columns.iter().map_while(|&c| value_of(c)).collect();
        if !prefix.is_empty() && best.as_ref().is_none_or(|(_, b)| prefix.len() > b.len()) {
            best = Some((i, prefix));
        }
    }
    match best {
        Some((i, prefix)) => Access::Index(i, prefix),
        None => Access::Full,
    }
}

fn ext<E: std::error::Error + Send + Sync + 'static>(e: E) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

#[async_trait]
impl TableProvider for RelTable {
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
        // Filters choose the access path; equalities on a column the scan
        // applies itself, DataFusion applies the rest.
        Ok(filters
            .iter()
            .map(|f| match exact_equality(&self.def, f) {
                Some(_) => TableProviderFilterPushDown::Exact,
                None => TableProviderFilterPushDown::Inexact,
            })
            .collect())
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let def = &self.def;
        let access = choose_access(def, filters);
        let (rows, describe): (Vec<(Vec<u8>, Row)>, String) = {
            let mut txn = self.binding.txn.lock();
            match &access {
                Access::Keys(keys) => {
                    let mut out = Vec::with_capacity(keys.len());
                    for k in keys {
                        if let Some(r) = txn.get(def, k).map_err(ext)? {
                            out.push((k.clone(), r));
                        }
                    }
                    let names: Vec<&str> = def
                        .primary_key
                        .iter()
                        .map(|&c| def.columns[c].name.as_str())
                        .collect();
                    (
                        out,
                        format!(
                            "primary key {} ({}) x{}",
                            def.pk_name,
                            names.join(", "),
                            keys.len()
                        ),
                    )
                }
                Access::Index(i, prefix) => {
                    let ix = &def.indexes[*i];
                    let rows = txn.index_lookup(def, ix, prefix).map_err(ext)?;
                    (
                        rows,
                        format!(
                            "index {} (first {} of {} columns)",
                            ix.name,
                            prefix.len(),
                            ix.columns.len()
                        ),
                    )
                }
                Access::Full => (
                    txn.range(def, Bound::Unbounded, Bound::Unbounded)
                        .map_err(ext)?,
                    "full scan".to_string(),
                ),
            }
        };
        let exact: Vec<(usize, Value)> = filters
            .iter()
            .filter_map(|f| exact_equality(def, f))
            .collect();
        let mut rows = rows;
        if !exact.is_empty() {
            rows.retain(|(_, r)| exact.iter().all(|(c, v)| &r[*c] == v));
        }
        let batch = rows_to_batch(def, &rows, &self.schema).map_err(ext)?;
        let batch = match projection {
            Some(p) => batch.project(p)?,
            None => batch,
        };
        Ok(Arc::new(RelScanExec::new(
            format!("{}.{}", def.schema, def.name),
            describe,
            batch,
        )))
    }
}

/// The rows a relational scan read, already materialised.
#[derive(Debug)]
pub struct RelScanExec {
    table: String,
    access: String,
    batch: RecordBatch,
    props: Arc<PlanProperties>,
}

impl RelScanExec {
    fn new(table: String, access: String, batch: RecordBatch) -> Self {
        let props = PlanProperties::new(
            EquivalenceProperties::new(batch.schema()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        RelScanExec {
            table,
            access,
            batch,
            props: Arc::new(props),
        }
    }
}

impl DisplayAs for RelScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "RelScanExec: table={}, access={}, rows={}",
            self.table,
            self.access,
            self.batch.num_rows()
        )
    }
}

impl ExecutionPlan for RelScanExec {
    fn name(&self) -> &'static str {
        "RelScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        _: Vec<Arc<dyn ExecutionPlan>>,
        _: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "no relational scan partition {partition}"
            )));
        }
        let batch = self.batch.clone();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            batch.schema(),
            futures::stream::iter([Ok(batch)]),
        )))
    }
}
