//! Aggregates answered from chunk statistics.
//!
//! `StatsAggregateRule` finds an ungrouped aggregate of `count`, `min`,
//! `max`, `sum` and `avg` over a Sluice scan, optionally under a filter made
//! only of time comparisons, and replaces it with `StatsAggregateExec`: every
//! chunk that lies wholly inside the time range (and needs no read-time dedup)
//! contributes its footer statistics; only chunks cut by the range, buffered
//! batches and dedup groups are decoded. `EXPLAIN` shows the split.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, TimestampNanosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::{BinaryExpr, Column, Literal};
use datafusion::physical_expr::utils::split_conjunction;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::execution_plan::{
    Boundedness, ChildrenPropertiesMode, EmissionType, ReplaceChildrenOptions,
};
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use sluice_engine::catalog::TIME_COLUMN;
use sluice_engine::chunk::{ColumnStats, Stat};

use crate::metrics::METRICS;
use crate::scan::{ScanExec, Unit};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Func {
    Count,
    Min,
    Max,
    Sum,
    Avg,
}

#[derive(Debug, Clone)]
struct Agg {
    func: Func,
    /// Column of the scan's output; `None` for `count(*)`.
    column: Option<String>,
    label: String,
}

#[derive(Debug, Default)]
pub struct StatsAggregateRule;

fn skip_passthrough(p: &Arc<dyn ExecutionPlan>) -> &Arc<dyn ExecutionPlan> {
    let mut p = p;
    while matches!(
        p.name(),
        "CoalesceBatchesExec" | "RepartitionExec" | "CoalescePartitionsExec" | "CooperativeExec"
    ) {
        match p.children().first() {
            Some(c) => p = c,
            None => break,
        }
    }
    p
}

fn ts_literal(e: &Arc<dyn PhysicalExpr>) -> Option<i64> {
    let l = e.downcast_ref::<Literal>()?;
    match l.value() {
        ScalarValue::TimestampNanosecond(Some(v), _) => Some(*v),
        ScalarValue::TimestampMicrosecond(Some(v), _) => v.checked_mul(1_000),
        ScalarValue::TimestampMillisecond(Some(v), _) => v.checked_mul(1_000_000),
        ScalarValue::TimestampSecond(Some(v), _) => v.checked_mul(1_000_000_000),
        _ => None,
    }
}

fn is_time(e: &Arc<dyn PhysicalExpr>) -> bool {
    e.downcast_ref::<Column>()
        .is_some_and(|c| c.name() == TIME_COLUMN)
}

/// The inclusive time range a predicate made only of time comparisons
/// selects; `None` if any part of it is something else.
fn time_range(pred: &Arc<dyn PhysicalExpr>) -> Option<(i64, i64)> {
    let (mut lo, mut hi) = (i64::MIN, i64::MAX);
    for c in split_conjunction(pred) {
        let b = c.downcast_ref::<BinaryExpr>()?;
        let (v, op) = if is_time(b.left()) {
            (ts_literal(b.right())?, *b.op())
        } else if is_time(b.right()) {
            (ts_literal(b.left())?, b.op().swap()?)
        } else {
            return None;
        };
        let (l, h) = match op {
            Operator::Eq => (v, v),
            Operator::Gt => (v.checked_add(1)?, i64::MAX),
            Operator::GtEq => (v, i64::MAX),
            Operator::Lt => (i64::MIN, v.checked_sub(1)?),
            Operator::LtEq => (i64::MIN, v),
            _ => return None,
        };
        lo = lo.max(l);
        hi = hi.min(h);
    }
    Some((lo, hi))
}

fn rewrite(plan: &Arc<dyn ExecutionPlan>) -> Option<Arc<dyn ExecutionPlan>> {
    let top = plan.downcast_ref::<AggregateExec>()?;
    if !top.group_expr().is_empty() || top.filter_expr().iter().any(|f| f.is_some()) {
        return None;
    }
    let (source, input) = match top.mode() {
        AggregateMode::Single => (top, top.input()),
        AggregateMode::Final | AggregateMode::FinalPartitioned => {
            let p = skip_passthrough(top.input()).downcast_ref::<AggregateExec>()?;
            if *p.mode() != AggregateMode::Partial
                || !p.group_expr().is_empty()
                || p.filter_expr().iter().any(|f| f.is_some())
            {
                return None;
            }
            (p, p.input())
        }
        _ => return None,
    };
    let mut node = skip_passthrough(input);
    let (mut lo, mut hi) = (i64::MIN, i64::MAX);
    if let Some(f) = node.downcast_ref::<FilterExec>() {
        // A projection on the filter only narrows its output; aggregate
        // arguments are resolved by name below.
        (lo, hi) = time_range(f.predicate())?;
        node = skip_passthrough(f.input());
    }
    let scan = node.downcast_ref::<ScanExec>()?;
    let schema = scan.projected.clone();
    let agg_input = source.input().schema();
    let mut aggs = Vec::new();
    for a in source.aggr_expr() {
        if a.is_distinct() || !a.order_bys().is_empty() {
            return None;
        }
        let func = match a.fun().name() {
            "count" => Func::Count,
            "min" => Func::Min,
            "max" => Func::Max,
            "sum" => Func::Sum,
            "avg" => Func::Avg,
            _ => return None,
        };
        let args = a.expressions();
        let [arg] = args.as_slice() else { return None };
        let column = match (arg.downcast_ref::<Column>(), arg.downcast_ref::<Literal>()) {
            (Some(c), _) => {
                let name = agg_input.fields().get(c.index())?.name();
                let f = schema.field_with_name(name).ok()?;
                let ok = match func {
                    Func::Count => true,
                    Func::Min | Func::Max => matches!(
                        f.data_type(),
                        DataType::Float64
                            | DataType::Int64
                            | DataType::UInt64
                            | DataType::Timestamp(..)
                    ),
                    Func::Sum | Func::Avg => {
                        matches!(
                            f.data_type(),
                            DataType::Float64 | DataType::Int64 | DataType::UInt64
                        )
                    }
                };
                if !ok {
                    return None;
                }
                Some(f.name().clone())
            }
            (None, Some(l)) if func == Func::Count && !l.value().is_null() => None,
            _ => return None,
        };
        aggs.push(Agg {
            func,
            column,
            label: a.name().to_string(),
        });
    }
    let exec = StatsAggregateExec::new(
        node.clone(),
        aggs,
        lo.max(scan.min),
        hi.min(scan.max),
        plan.schema(),
    );
    Some(Arc::new(exec))
}

fn rewrite_all(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    if let Some(p) = rewrite(&plan) {
        return Ok(p);
    }
    let children: Vec<Arc<dyn ExecutionPlan>> = plan.children().into_iter().cloned().collect();
    if children.is_empty() {
        return Ok(plan);
    }
    let mut changed = false;
    let mut new = Vec::with_capacity(children.len());
    for c in children {
        let r = rewrite_all(c.clone())?;
        changed |= !Arc::ptr_eq(&r, &c);
        new.push(r);
    }
    if changed {
        plan.replace_children(
            new,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    } else {
        Ok(plan)
    }
}

impl PhysicalOptimizerRule for StatsAggregateRule {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        rewrite_all(plan)
    }

    fn name(&self) -> &str {
        "sluice_stats_aggregate"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

pub struct StatsAggregateExec {
    scan: Arc<dyn ExecutionPlan>,
    aggs: Vec<Agg>,
    lo: i64,
    hi: i64,
    schema: SchemaRef,
    props: Arc<PlanProperties>,
}

impl fmt::Debug for StatsAggregateExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StatsAggregateExec")
    }
}

/// Whether a unit can be answered from its chunk's footer.
fn from_stats(u: &Unit, lo: i64, hi: i64) -> bool {
    matches!(u, Unit::Chunk { chunk, whole: true, .. }
        if chunk.footer().min_time >= lo && chunk.footer().max_time <= hi)
}

impl StatsAggregateExec {
    fn new(
        scan: Arc<dyn ExecutionPlan>,
        aggs: Vec<Agg>,
        lo: i64,
        hi: i64,
        schema: SchemaRef,
    ) -> Self {
        let props = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        StatsAggregateExec {
            scan,
            aggs,
            lo,
            hi,
            schema,
            props: Arc::new(props),
        }
    }

    fn scan(&self) -> Result<&ScanExec> {
        self.scan.downcast_ref::<ScanExec>().ok_or_else(|| {
            DataFusionError::Internal("stats aggregate without a Sluice scan".into())
        })
    }

    fn split(&self) -> (usize, usize) {
        let Ok(scan) = self.scan() else { return (0, 0) };
        let (mut s, mut d) = (0, 0);
        for p in &scan.partitions {
            for u in p.iter() {
                if from_stats(u, self.lo, self.hi) {
                    s += 1;
                } else {
                    d += 1;
                }
            }
        }
        (s, d)
    }

    fn compute(&self) -> Result<RecordBatch> {
        let scan = self.scan()?;
        let mut acc: Vec<Acc> = self.aggs.iter().map(|_| Acc::default()).collect();
        // Decoded units need only time and the aggregated columns.
        let mut cols: Vec<String> = vec![TIME_COLUMN.to_string()];
        for a in &self.aggs {
            if let Some(c) = &a.column {
                if !cols.contains(c) {
                    cols.push(c.clone());
                }
            }
        }
        let fields: Vec<Field> = cols
            .iter()
            .filter_map(|c| scan.full.field_with_name(c).ok().cloned())
            .collect();
        let read_schema = Arc::new(Schema::new(fields));
        for p in &scan.partitions {
            for u in p.iter() {
                if let (true, Unit::Chunk { chunk, .. }) = (from_stats(u, self.lo, self.hi), u) {
                    METRICS.chunks_from_stats.fetch_add(1, Ordering::Relaxed);
                    let f = chunk.footer();
                    for (a, acc) in self.aggs.iter().zip(acc.iter_mut()) {
                        let stats = a
                            .column
                            .as_ref()
                            .and_then(|c| f.columns.iter().find(|m| &m.name == c))
                            .map(|m| &m.stats);
                        acc.add_stats(a, f.rows, stats)?;
                    }
                    continue;
                }
                for b in scan.read_unit(u, &read_schema)? {
                    let b = clip(&b, self.lo, self.hi)?;
                    for (a, acc) in self.aggs.iter().zip(acc.iter_mut()) {
                        let col = a.column.as_ref().and_then(|c| b.column_by_name(c));
                        acc.add_array(a, b.num_rows(), col)?;
                    }
                }
            }
        }
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(self.aggs.len());
        for ((a, acc), field) in self.aggs.iter().zip(acc).zip(self.schema.fields()) {
            let v = acc.finish(a, field.data_type())?;
            arrays.push(v.to_array()?);
        }
        RecordBatch::try_new(self.schema.clone(), arrays).map_err(DataFusionError::from)
    }
}

fn clip(b: &RecordBatch, lo: i64, hi: i64) -> Result<RecordBatch> {
    if lo == i64::MIN && hi == i64::MAX {
        return Ok(b.clone());
    }
    let Some(ts) = b
        .column_by_name(TIME_COLUMN)
        .and_then(|c| c.as_any().downcast_ref::<TimestampNanosecondArray>())
    else {
        return Ok(b.clone());
    };
    let mask: arrow::array::BooleanArray = ts
        .values()
        .iter()
        .map(|t| Some(*t >= lo && *t <= hi))
        .collect();
    Ok(arrow::compute::filter_record_batch(b, &mask)?)
}

fn stat_scalar(s: &Stat) -> ScalarValue {
    match s {
        Stat::F64(v) => ScalarValue::Float64(Some(*v)),
        Stat::I64(v) => ScalarValue::Int64(Some(*v)),
        Stat::U64(v) => ScalarValue::UInt64(Some(*v)),
        Stat::Bool(v) => ScalarValue::Boolean(Some(*v)),
        Stat::Str(v) => ScalarValue::Utf8(Some(v.clone())),
    }
}

/// Footer statistics of `time` are plain integers; decoded values are
/// timestamps. Comparing the two needs one type.
fn typed(a: &Agg, v: ScalarValue) -> ScalarValue {
    match v {
        ScalarValue::Int64(x) if a.column.as_deref() == Some(TIME_COLUMN) => {
            ScalarValue::TimestampNanosecond(x, Some("UTC".into()))
        }
        v => v,
    }
}

#[derive(Default)]
struct Acc {
    count: i64,
    best: Option<ScalarValue>,
    sum_f: f64,
    sum_i: i128,
    is_float: bool,
}

impl Acc {
    fn better(&mut self, f: Func, v: ScalarValue) {
        if v.is_null() {
            return;
        }
        let replace = match &self.best {
            None => true,
            Some(b) => match v.partial_cmp(b) {
                Some(std::cmp::Ordering::Less) => f == Func::Min,
                Some(std::cmp::Ordering::Greater) => f == Func::Max,
                _ => false,
            },
        };
        if replace {
            self.best = Some(v);
        }
    }

    fn add_sum(&mut self, v: &ScalarValue) {
        match v {
            ScalarValue::Float64(Some(x)) => {
                self.is_float = true;
                self.sum_f += x;
            }
            ScalarValue::Int64(Some(x)) => self.sum_i += *x as i128,
            ScalarValue::UInt64(Some(x)) => self.sum_i += *x as i128,
            _ => {}
        }
    }

    fn add_stats(&mut self, a: &Agg, rows: u64, s: Option<&ColumnStats>) -> Result<()> {
        match (a.func, s) {
            (Func::Count, _) if a.column.is_none() => self.count += rows as i64,
            (Func::Count, Some(s)) => self.count += s.count as i64,
            (Func::Min, Some(s)) => {
                if let Some(v) = &s.min {
                    self.better(Func::Min, typed(a, stat_scalar(v)));
                }
            }
            (Func::Max, Some(s)) => {
                if let Some(v) = &s.max {
                    self.better(Func::Max, typed(a, stat_scalar(v)));
                }
            }
            (Func::Sum | Func::Avg, Some(s)) => {
                if s.count > 0 {
                    let sum = s.sum.as_ref().ok_or_else(|| {
                        DataFusionError::Execution(format!(
                            "{}: chunk has no sum statistic",
                            a.label
                        ))
                    })?;
                    self.add_sum(&stat_scalar(sum));
                }
                self.count += s.count as i64;
            }
            // The chunk predates the column: all null there.
            (_, None) => {}
        }
        Ok(())
    }

    fn add_array(&mut self, a: &Agg, rows: usize, col: Option<&ArrayRef>) -> Result<()> {
        let Some(col) = col else {
            if a.column.is_none() {
                self.count += rows as i64;
            }
            return Ok(());
        };
        let non_null = (col.len() - col.null_count()) as i64;
        match a.func {
            Func::Count => self.count += non_null,
            Func::Min => self.better(Func::Min, min_max(col, true)?),
            Func::Max => self.better(Func::Max, min_max(col, false)?),
            Func::Sum | Func::Avg => {
                self.count += non_null;
                use arrow::array::AsArray;
                use arrow::datatypes::{Float64Type, Int64Type, UInt64Type};
                match col.data_type() {
                    DataType::Float64 => {
                        self.is_float = true;
                        self.sum_f += col
                            .as_primitive::<Float64Type>()
                            .iter()
                            .flatten()
                            .sum::<f64>();
                    }
                    DataType::Int64 => {
                        self.sum_i += col
                            .as_primitive::<Int64Type>()
                            .iter()
                            .flatten()
                            .map(i128::from)
                            .sum::<i128>();
                    }
                    DataType::UInt64 => {
                        self.sum_i += col
                            .as_primitive::<UInt64Type>()
                            .iter()
                            .flatten()
                            .map(i128::from)
                            .sum::<i128>();
                    }
                    t => {
                        return Err(DataFusionError::Execution(format!(
                            "{}: cannot sum {t}",
                            a.label
                        )))
                    }
                }
            }
        }
        Ok(())
    }

    fn finish(self, a: &Agg, out: &DataType) -> Result<ScalarValue> {
        let v = match a.func {
            Func::Count => ScalarValue::Int64(Some(self.count)),
            Func::Min | Func::Max => match self.best {
                Some(v) => v,
                None => ScalarValue::try_from(out)?,
            },
            Func::Sum if self.count == 0 => ScalarValue::try_from(out)?,
            Func::Sum if self.is_float => ScalarValue::Float64(Some(self.sum_f)),
            Func::Sum => match out {
                DataType::UInt64 => {
                    ScalarValue::UInt64(Some(u64::try_from(self.sum_i).map_err(|_| {
                        DataFusionError::Execution(format!(
                            "{}: unsigned integer overflow",
                            a.label
                        ))
                    })?))
                }
                _ => ScalarValue::Int64(Some(i64::try_from(self.sum_i).map_err(|_| {
                    DataFusionError::Execution(format!("{}: integer overflow", a.label))
                })?)),
            },
            Func::Avg if self.count == 0 => ScalarValue::Float64(None),
            Func::Avg => {
                let total = if self.is_float {
                    self.sum_f
                } else {
                    self.sum_i as f64
                };
                ScalarValue::Float64(Some(total / self.count as f64))
            }
        };
        if &v.data_type() == out {
            Ok(v)
        } else {
            v.cast_to(out)
        }
    }
}

fn min_max(col: &ArrayRef, min: bool) -> Result<ScalarValue> {
    use arrow::array::AsArray;
    use arrow::datatypes::{Float64Type, Int64Type, TimestampNanosecondType, UInt64Type};
    macro_rules! pick {
        ($t:ty, $ctor:expr) => {{
            let a = col.as_primitive::<$t>();
            $ctor(if min {
                arrow::compute::min(a)
            } else {
                arrow::compute::max(a)
            })
        }};
    }
    Ok(match col.data_type() {
        DataType::Float64 => pick!(Float64Type, ScalarValue::Float64),
        DataType::Int64 => pick!(Int64Type, ScalarValue::Int64),
        DataType::UInt64 => pick!(UInt64Type, ScalarValue::UInt64),
        DataType::Timestamp(_, tz) => {
            let a = col.as_primitive::<TimestampNanosecondType>();
            let v = if min {
                arrow::compute::min(a)
            } else {
                arrow::compute::max(a)
            };
            ScalarValue::TimestampNanosecond(v, tz.clone())
        }
        t => {
            return Err(DataFusionError::Execution(format!(
                "min/max of {t} from statistics"
            )))
        }
    })
}

impl DisplayAs for StatsAggregateExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let (s, d) = self.split();
        let labels: Vec<&str> = self.aggs.iter().map(|a| a.label.as_str()).collect();
        write!(
            f,
            "SluiceStatsAggregateExec: aggregates=[{}], units_from_statistics={s}, units_decoded={d}",
            labels.join(", ")
        )?;
        if self.lo != i64::MIN || self.hi != i64::MAX {
            write!(f, ", time=[{}, {}]", self.lo, self.hi)?;
        }
        Ok(())
    }
}

impl ExecutionPlan for StatsAggregateExec {
    fn name(&self) -> &'static str {
        "SluiceStatsAggregateExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.scan]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        _: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let [scan] = <[Arc<dyn ExecutionPlan>; 1]>::try_from(children).map_err(|_| {
            DataFusionError::Internal("stats aggregate takes exactly one child".into())
        })?;
        Ok(Arc::new(StatsAggregateExec::new(
            scan,
            self.aggs.clone(),
            self.lo,
            self.hi,
            self.schema.clone(),
        )))
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
                "stats aggregate has one partition, asked for {partition}"
            )));
        }
        let batch = self.compute();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            futures::stream::once(futures::future::ready(batch)),
        )))
    }
}
