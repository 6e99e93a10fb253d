//! Physical gap filling: the planner for the `GapFill` node and its
//! execution plan.
//!
//! `GapFillExec` collects its whole input (the aggregate's output, one row
//! per group and bucket, usually small), sorts it by the group columns and
//! then time, and emits every bucket of the time range for every group:
//! existing rows as they are, missing buckets with the group's keys, the
//! bucket time and NULL aggregates, which `locf` / `interpolate` columns
//! then fill.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, RecordBatch, RecordBatchOptions,
    TimestampNanosecondArray, UInt32Array,
};
use arrow::compute::kernels::zip::zip;
use arrow::compute::{cast, concat_batches, lexsort_to_indices, partition, take, SortColumn};
use arrow::datatypes::{
    DataType, Float64Type, Schema, SchemaRef, TimeUnit, TimestampNanosecondType,
};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{exec_err, plan_err, DataFusionError, Result, ScalarValue};
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlan, UserDefinedLogicalNode, UserDefinedLogicalNodeCore,
};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::execution_plan::{
    Boundedness, ChildrenPropertiesMode, EmissionType, ReplaceChildrenOptions,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, ExecutionPlanProperties,
    InputDistributionRequirements, Partitioning, PlanProperties,
};
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};
use futures::TryStreamExt as _;

use super::gapfill_rule::{Bound, GapFill};
use super::scalar::FillStrategy;

/// Most rows one gap-filling query may produce.
const MAX_ROWS: u64 = 10_000_000;

/// The query planner: DataFusion's default one, plus the `GapFill` node.
#[derive(Debug, Default)]
pub struct SluiceQueryPlanner;

#[async_trait]
impl QueryPlanner for SluiceQueryPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        DefaultPhysicalPlanner::with_extension_planners(vec![Arc::new(GapFillPlanner)])
            .create_physical_plan(logical_plan, session)
            .await
    }
}

/// Plans `GapFill` into `GapFillExec`, evaluating its constant expressions.
#[derive(Debug)]
pub struct GapFillPlanner;

#[async_trait]
impl ExtensionPlanner for GapFillPlanner {
    async fn plan_extension(
        &self,
        planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        session: &dyn Session,
        planning_ctx: &PhysicalPlanningContext,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let Some(gapfill) = node.as_any().downcast_ref::<GapFill>() else {
            return Ok(None);
        };
        let (Some(logical), Some(input)) = (logical_inputs.first(), physical_inputs.first()) else {
            return plan_err!("GapFill needs one input");
        };
        let spec = &gapfill.spec;
        let eval = |e: &Expr| -> Result<ScalarValue> {
            let phys = planner.create_physical_expr(e, logical.schema(), session, planning_ctx)?;
            constant(&phys)
        };
        let stride = stride_nanos(&eval(&spec.stride)?)?;
        let origin = match &spec.origin {
            Some(o) => nanos(&eval(o)?, "origin")?,
            None => 0,
        };
        let bound = |b: &Bound, lower: bool| -> Result<i64> {
            let v = nanos(&eval(&b.expr)?, "time bound")?;
            Ok(match (b.inclusive, lower) {
                (true, _) => v,
                (false, true) => v.saturating_add(1),
                (false, false) => v.saturating_sub(1),
            })
        };
        let mut lo = i64::MIN;
        for b in &spec.lower {
            lo = lo.max(bound(b, true)?);
        }
        let mut hi = i64::MAX;
        for b in &spec.upper {
            hi = hi.min(bound(b, false)?);
        }
        let input = if input.output_partitioning().partition_count() > 1 {
            Arc::new(CoalescePartitionsExec::new(input.clone())) as Arc<dyn ExecutionPlan>
        } else {
            input.clone()
        };
        let schema: SchemaRef = Arc::new(
            UserDefinedLogicalNodeCore::schema(gapfill)
                .as_arrow()
                .clone(),
        );
        let params = Params {
            time_idx: spec.time_idx,
            group_count: spec.group_count,
            stride,
            origin,
            lo,
            hi,
            fills: spec.fills.clone(),
        };
        Ok(Some(Arc::new(GapFillExec::new(input, schema, params))))
    }
}

fn constant(phys: &Arc<dyn PhysicalExpr>) -> Result<ScalarValue> {
    let one_row = RecordBatch::try_new_with_options(
        Arc::new(Schema::empty()),
        vec![],
        &RecordBatchOptions::new().with_row_count(Some(1)),
    )?;
    match phys.evaluate(&one_row)? {
        ColumnarValue::Scalar(s) => Ok(s),
        ColumnarValue::Array(a) => ScalarValue::try_from_array(&a, 0),
    }
}

fn nanos(v: &ScalarValue, what: &str) -> Result<i64> {
    match v.cast_to(&DataType::Timestamp(TimeUnit::Nanosecond, None))? {
        ScalarValue::TimestampNanosecond(Some(n), _) => Ok(n),
        _ => plan_err!("gap filling: the {what} must be a non-NULL timestamp, got {v}"),
    }
}

fn stride_nanos(v: &ScalarValue) -> Result<i64> {
    const DAY: i128 = 86_400_000_000_000;
    let n: i128 = match v {
        ScalarValue::IntervalMonthDayNano(Some(i)) => {
            if i.months != 0 {
                return plan_err!("gap filling does not support month or year intervals");
            }
            i128::from(i.days) * DAY + i128::from(i.nanoseconds)
        }
        ScalarValue::IntervalDayTime(Some(i)) => {
            i128::from(i.days) * DAY + i128::from(i.milliseconds) * 1_000_000
        }
        ScalarValue::DurationNanosecond(Some(n)) => i128::from(*n),
        _ => return plan_err!("gap filling: the bucket width must be an interval, got {v}"),
    };
    match i64::try_from(n) {
        Ok(n) if n > 0 => Ok(n),
        _ => plan_err!("gap filling: the bucket width must be positive and under 292 years"),
    }
}

/// `date_bin`'s arithmetic for fixed strides.
fn bin(stride: i64, t: i64, origin: i64) -> i64 {
    let diff = i128::from(t) - i128::from(origin);
    let s = i128::from(stride);
    let b = i128::from(origin) + diff.div_euclid(s) * s;
    b.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// What `GapFillExec` needs, all evaluated at planning.
#[derive(Debug, Clone)]
struct Params {
    time_idx: usize,
    group_count: usize,
    stride: i64,
    origin: i64,
    /// Inclusive time range, in nanoseconds.
    lo: i64,
    hi: i64,
    fills: Vec<FillStrategy>,
}

#[derive(Debug)]
pub struct GapFillExec {
    input: Arc<dyn ExecutionPlan>,
    schema: SchemaRef,
    params: Params,
    props: Arc<PlanProperties>,
}

impl GapFillExec {
    fn new(input: Arc<dyn ExecutionPlan>, schema: SchemaRef, params: Params) -> Self {
        let props = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        GapFillExec {
            input,
            schema,
            params,
            props: Arc::new(props),
        }
    }
}

impl DisplayAs for GapFillExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let p = &self.params;
        write!(
            f,
            "GapFillExec: time={}, stride={}ns, range=[{}, {}]",
            self.schema.field(p.time_idx).name(),
            p.stride,
            p.lo,
            p.hi
        )
    }
}

impl ExecutionPlan for GapFillExec {
    fn name(&self) -> &'static str {
        "GapFillExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn input_distribution_requirements(&self) -> InputDistributionRequirements {
        InputDistributionRequirements::new(vec![Distribution::SinglePartition])
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return exec_err!("GapFillExec takes one child, got {}", children.len());
        }
        Ok(Arc::new(GapFillExec::new(
            children.swap_remove(0),
            self.schema.clone(),
            self.params.clone(),
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
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return exec_err!("GapFillExec has one partition, asked for {partition}");
        }
        let input = self.input.execute(0, context.clone())?;
        let in_schema = self.input.schema();
        let schema = self.schema.clone();
        let params = self.params.clone();
        let batch_size = context.session_config().batch_size().max(1);
        let fut = async move {
            let batches = datafusion::physical_plan::common::collect(input).await?;
            let batch = concat_batches(&in_schema, &batches)?;
            let out = fill(&batch, &schema, &params)?;
            let chunks: Vec<Result<RecordBatch>> = (0..out.num_rows())
                .step_by(batch_size)
                .map(|o| Ok(out.slice(o, batch_size.min(out.num_rows() - o))))
                .collect();
            Ok::<_, DataFusionError>(futures::stream::iter(chunks))
        };
        let stream = futures::stream::once(fut).try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            stream,
        )))
    }
}

/// One output row: where its aggregates come from (`None`: a gap) and its
/// bucket time.
struct Out {
    src: Vec<Option<u32>>,
    time: Vec<Option<i64>>,
    /// Row holding the group keys, per output row.
    keys: Vec<u32>,
    /// Output row ranges of the groups.
    groups: Vec<Range<usize>>,
}

fn fill(batch: &RecordBatch, schema: &SchemaRef, p: &Params) -> Result<RecordBatch> {
    let time_type = batch.schema().field(p.time_idx).data_type().clone();
    let DataType::Timestamp(_, tz) = &time_type else {
        return exec_err!("gap filling needs a timestamp time column, got {time_type}");
    };
    let ns_type = DataType::Timestamp(TimeUnit::Nanosecond, tz.clone());
    let times = cast(batch.column(p.time_idx), &ns_type)?;
    let times = times.as_primitive::<TimestampNanosecondType>();
    let key_cols: Vec<usize> = (0..p.group_count).filter(|&i| i != p.time_idx).collect();

    // Sort by group keys, then time.
    let mut sort: Vec<SortColumn> = key_cols
        .iter()
        .map(|&i| SortColumn {
            values: batch.column(i).clone(),
            options: None,
        })
        .collect();
    sort.push(SortColumn {
        values: Arc::new(times.clone()),
        options: None,
    });
    let order_array = lexsort_to_indices(&sort, None)?;
    let order = order_array.values();
    let ranges: Vec<Range<usize>> = if key_cols.is_empty() {
        std::iter::once(0..batch.num_rows()).collect()
    } else if batch.num_rows() == 0 {
        vec![]
    } else {
        let sorted_keys = key_cols
            .iter()
            .map(|&i| take(batch.column(i), &order_array, None))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        partition(&sorted_keys)?.ranges()
    };

    let (first, buckets) = if p.lo <= p.hi {
        let first = bin(p.stride, p.lo, p.origin);
        let last = bin(p.stride, p.hi, p.origin);
        let n = (i128::from(last) - i128::from(first)) / i128::from(p.stride) + 1;
        (first, u64::try_from(n).unwrap_or(0))
    } else {
        (0, 0)
    };
    let total = buckets.saturating_mul(ranges.len() as u64);
    if total > MAX_ROWS {
        return exec_err!(
            "gap filling would produce {total} rows ({buckets} buckets x {} groups), \
             more than {MAX_ROWS}; narrow the time range or widen the bucket",
            ranges.len()
        );
    }

    let mut out = Out {
        src: Vec::new(),
        time: Vec::new(),
        keys: Vec::new(),
        groups: Vec::with_capacity(ranges.len()),
    };
    for r in ranges {
        let start = out.src.len();
        let key = order.get(r.start).copied().unwrap_or(0);
        let mut k = r.start;
        let mut j = 0u64;
        loop {
            let bucket = (j < buckets)
                .then(|| i128::from(first) + i128::from(j) * i128::from(p.stride))
                .and_then(|b| i64::try_from(b).ok());
            let row = (k < r.end).then(|| order[k]);
            let time_of = |row: u32| {
                let row = row as usize;
                times.is_valid(row).then(|| times.value(row))
            };
            // (source row, time, next row?, next bucket?)
            let (src, time, next_row, next_bucket) = match (row, bucket) {
                (None, None) => break,
                (None, Some(b)) => (None, Some(b), false, true),
                (Some(row), None) => (Some(row), time_of(row), true, false),
                (Some(row), Some(b)) => match time_of(row) {
                    // NULL times sort first and are passed through.
                    None => (Some(row), None, true, false),
                    Some(t) if t < b => (Some(row), Some(t), true, false),
                    Some(t) if t == b => (Some(row), Some(t), true, true),
                    Some(_) => (None, Some(b), false, true),
                },
            };
            k += usize::from(next_row);
            j += u64::from(next_bucket);
            out.src.push(src);
            out.time.push(time);
            out.keys.push(key);
        }
        out.groups.push(start..out.src.len());
    }

    let src = UInt32Array::from(out.src.clone());
    let keys = UInt32Array::from(out.keys.clone());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns());
    for (i, col) in batch.columns().iter().enumerate() {
        let array = if i == p.time_idx {
            let t = TimestampNanosecondArray::from(out.time.clone()).with_timezone_opt(tz.clone());
            cast(&t, &time_type)?
        } else if i < p.group_count {
            take(col, &keys, None)?
        } else {
            match p.fills[i] {
                FillStrategy::Null => take(col, &src, None)?,
                FillStrategy::Locf => take(col, &locf_indices(col, &out), None)?,
                FillStrategy::Interpolate => interpolate(col, &src, &out)?,
            }
        };
        columns.push(array);
    }
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// For each output row, the row whose value it shows under `locf`: its own
/// if non-NULL, else the last non-NULL one before it in its group.
fn locf_indices(col: &ArrayRef, out: &Out) -> UInt32Array {
    let mut idx = Vec::with_capacity(out.src.len());
    for g in &out.groups {
        let mut last = None;
        for src in &out.src[g.clone()] {
            if let Some(s) = src.filter(|&s| col.is_valid(s as usize)) {
                last = Some(s);
            }
            idx.push(last);
        }
    }
    UInt32Array::from(idx)
}

/// Linear interpolation (in time) of NULLs between two non-NULL values of
/// the same group; leading and trailing NULLs stay NULL. Integers round.
fn interpolate(col: &ArrayRef, src: &UInt32Array, out: &Out) -> Result<ArrayRef> {
    let base = take(col, src, None)?;
    let values = cast(&base, &DataType::Float64)?;
    let values = values.as_primitive::<Float64Type>();
    let integer = col.data_type().is_integer();
    let mut filled: Vec<Option<f64>> = vec![None; base.len()];
    for g in &out.groups {
        let mut prev: Option<(i64, f64)> = None;
        let mut pending: Vec<usize> = Vec::new();
        for i in g.clone() {
            let known = match (values.is_valid(i), out.time[i]) {
                (true, Some(t)) => Some((t, values.value(i))),
                _ => None,
            };
            let Some((t1, v1)) = known else {
                if prev.is_some() && base.is_null(i) {
                    pending.push(i);
                }
                continue;
            };
            if let Some((t0, v0)) = prev {
                for &m in &pending {
                    filled[m] = out.time[m].map(|t| {
                        let f = (i128::from(t) - i128::from(t0)) as f64
                            / (i128::from(t1) - i128::from(t0)) as f64;
                        let v = v0 + (v1 - v0) * f;
                        if integer {
                            v.round()
                        } else {
                            v
                        }
                    });
                }
            }
            pending.clear();
            prev = Some((t1, v1));
        }
    }
    let mask: BooleanArray = filled.iter().map(|v| Some(v.is_some())).collect();
    let filled: ArrayRef = Arc::new(Float64Array::from(filled));
    let filled = cast(&filled, col.data_type())?;
    Ok(zip(&mask, &filled, &base)?)
}
