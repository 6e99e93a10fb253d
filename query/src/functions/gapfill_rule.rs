//! The analyzer rule behind the time-series functions, and the `GapFill`
//! logical node.
//!
//! The rule runs after type coercion and does two things:
//!
//! * `first(v)` / `last(v)` with one argument get the input's `time`
//!   column as their second argument.
//! * An `Aggregate` grouped by `date_bin_gapfill(...)` (or
//!   `time_bucket_gapfill(...)`) is grouped by plain `date_bin(...)` instead
//!   and wrapped in a `GapFill` node, which carries the bucket stride and
//!   origin and the time range (from the WHERE clause's bounds on the time
//!   column, or from `time_bucket_gapfill`'s start/finish arguments). A
//!   Projection right above it has its `locf(...)` / `interpolate(...)`
//!   wrappers removed and recorded as the fill strategy of those columns.
//!
//! Any gap-fill function left over afterwards is in a place where it has no
//! meaning, and planning fails with a message saying where it may be used.

use std::cmp::Ordering;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{plan_err, Column, DFSchema, DFSchemaRef, Result};
use datafusion::logical_expr::expr::{AggregateFunction, ScalarFunction};
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{
    Aggregate, Between, BinaryExpr, Expr, Extension, LogicalPlan, Operator, Projection,
    UserDefinedLogicalNodeCore,
};
use datafusion::optimizer::AnalyzerRule;

use super::first_last::FirstLast;
use super::scalar::{FillMarker, FillStrategy, GapfillBucket, GapfillKind};

/// The analyzer rule; see the module docs.
#[derive(Debug, Default)]
pub struct TimeSeriesRule;

impl AnalyzerRule for TimeSeriesRule {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        let plan = plan.transform_up_with_subqueries(rewrite)?.data;
        check_leftovers(&plan)?;
        Ok(plan)
    }

    fn name(&self) -> &str {
        "sluice_time_series"
    }
}

fn rewrite(plan: LogicalPlan) -> Result<Transformed<LogicalPlan>> {
    match plan {
        LogicalPlan::Aggregate(agg) => rewrite_aggregate(agg),
        LogicalPlan::Projection(p) if as_gapfill(&p.input).is_some() => rewrite_projection(p),
        other => Ok(Transformed::no(other)),
    }
}

fn as_gapfill(plan: &LogicalPlan) -> Option<&GapFill> {
    match plan {
        LogicalPlan::Extension(e) => e.node.as_any().downcast_ref::<GapFill>(),
        _ => None,
    }
}

fn gapfill_kind(e: &Expr) -> Option<(GapfillKind, &[Expr])> {
    match e {
        Expr::ScalarFunction(f) => f
            .func
            .inner()
            .downcast_ref::<GapfillBucket>()
            .map(|g| (g.kind, f.args.as_slice())),
        _ => None,
    }
}

fn fill_marker(e: &Expr) -> Option<(FillStrategy, &[Expr])> {
    match e {
        Expr::ScalarFunction(f) => f
            .func
            .inner()
            .downcast_ref::<FillMarker>()
            .map(|m| (m.strategy, f.args.as_slice())),
        _ => None,
    }
}

/// Rewrites `new` so that it keeps the output name of `old`.
fn keep_name(old: &Expr, new: Expr) -> Expr {
    if matches!(old, Expr::Alias(_)) || old == &new {
        return new;
    }
    let (qualifier, name) = old.qualified_name();
    new.alias_qualified(qualifier, name)
}

fn rewrite_aggregate(agg: Aggregate) -> Result<Transformed<LogicalPlan>> {
    let input_schema = agg.input.schema().clone();
    let mut changed = false;
    let mut aggr_expr = Vec::with_capacity(agg.aggr_expr.len());
    for e in &agg.aggr_expr {
        let new = e
            .clone()
            .transform_up(|x| add_time_argument(x, &input_schema))?;
        changed |= new.transformed;
        aggr_expr.push(keep_name(e, new.data));
    }
    let found: Vec<usize> = (0..agg.group_expr.len())
        .filter(|&i| gapfill_kind(&agg.group_expr[i]).is_some())
        .collect();
    let Some(&time_idx) = found.first() else {
        if !changed {
            return Ok(Transformed::no(LogicalPlan::Aggregate(agg)));
        }
        let agg = Aggregate::try_new(agg.input, agg.group_expr, aggr_expr)?;
        return Ok(Transformed::yes(LogicalPlan::Aggregate(agg)));
    };
    if found.len() > 1 {
        return plan_err!(
            "a query can only be grouped by one date_bin_gapfill/time_bucket_gapfill"
        );
    }
    if agg
        .group_expr
        .iter()
        .any(|e| matches!(e, Expr::GroupingSet(_)))
    {
        return plan_err!("gap filling does not support GROUPING SETS, CUBE or ROLLUP");
    }
    let original = &agg.group_expr[time_idx];
    let Some((kind, args)) = gapfill_kind(original) else {
        return plan_err!("internal: gap-fill group expression vanished");
    };
    let name = original.schema_name().to_string();
    let (Some(stride), Some(time_arg)) = (args.first(), args.get(1)) else {
        return plan_err!("{name}: expected (interval, time, ...)");
    };
    let Some(time_col) = strip_casts(time_arg).and_then(as_column) else {
        return plan_err!("{name}: the second argument must be the time column");
    };
    let (origin, explicit) = match kind {
        GapfillKind::DateBin => (args.get(2).cloned(), &[][..]),
        GapfillKind::TimeBucket => (None, args.get(2..).unwrap_or(&[])),
    };
    let mut bin_args = vec![stride.clone(), time_arg.clone()];
    bin_args.extend(origin.clone());
    let binned = Expr::ScalarFunction(ScalarFunction::new_udf(
        datafusion::functions::datetime::date_bin(),
        bin_args,
    ));
    let (mut lower, mut upper) = (Vec::new(), Vec::new());
    collect_bounds(&agg.input, &time_col, &mut lower, &mut upper);
    if let Some(start) = explicit.first() {
        lower = vec![Bound::new(start.clone(), true)];
    }
    if let Some(finish) = explicit.get(1) {
        upper = vec![Bound::new(finish.clone(), false)];
    }
    if lower.is_empty() || upper.is_empty() {
        return plan_err!(
            "{}: gap filling needs the time range; add both a lower and an upper bound \
             on `{}` to the WHERE clause, e.g. WHERE {} >= '2024-01-01T00:00:00Z' AND {} < '2024-01-02T00:00:00Z'",
            name.split('(').next().unwrap_or("gap fill"),
            time_col.name,
            time_col.name,
            time_col.name
        );
    }
    let stride = stride.clone();
    let mut group_expr = agg.group_expr.clone();
    group_expr[time_idx] = keep_name(original, binned);
    let group_count = group_expr.len();
    let agg = Aggregate::try_new(agg.input, group_expr, aggr_expr)?;
    let node = GapFill::try_new(
        Arc::new(LogicalPlan::Aggregate(agg)),
        GapFillSpec {
            time_idx,
            group_count,
            stride,
            origin,
            lower,
            upper,
            fills: Vec::new(),
        },
    )?;
    Ok(Transformed::yes(LogicalPlan::Extension(Extension {
        node: Arc::new(node),
    })))
}

/// `first(v)` / `last(v)` → `first(v, time)` / `last(v, time)`.
fn add_time_argument(e: Expr, schema: &DFSchema) -> Result<Transformed<Expr>> {
    let Expr::AggregateFunction(f) = &e else {
        return Ok(Transformed::no(e));
    };
    if f.func.inner().downcast_ref::<FirstLast>().is_none() || f.params.args.len() != 1 {
        return Ok(Transformed::no(e));
    }
    let fields = schema.qualified_fields_with_unqualified_name("time");
    let [(qualifier, _)] = fields.as_slice() else {
        return plan_err!(
            "{}(value) needs exactly one `time` column in its input; \
             pass the time explicitly: {}(value, time)",
            f.func.name(),
            f.func.name()
        );
    };
    let time = Expr::Column(Column::new(qualifier.cloned(), "time"));
    let mut params = f.params.clone();
    params.args.push(time);
    Ok(Transformed::yes(Expr::AggregateFunction(
        AggregateFunction {
            func: f.func.clone(),
            params,
        },
    )))
}

fn strip_casts(e: &Expr) -> Option<&Expr> {
    match e {
        Expr::Cast(c) => strip_casts(&c.expr),
        Expr::TryCast(c) => strip_casts(&c.expr),
        other => Some(other),
    }
}

fn as_column(e: &Expr) -> Option<Column> {
    match e {
        Expr::Column(c) => Some(c.clone()),
        _ => None,
    }
}

fn is_time(e: &Expr, time: &Column) -> bool {
    matches!(strip_casts(e), Some(Expr::Column(c)) if c.name == time.name)
}

fn is_constant(e: &Expr) -> bool {
    e.column_refs().is_empty()
        && !e.is_volatile()
        && !e
            .exists(|x| {
                Ok(matches!(
                    x,
                    Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_)
                ))
            })
            .unwrap_or(true)
}

/// Collects constant bounds on `time` from the filters between the
/// Aggregate and its table scan.
fn collect_bounds(
    plan: &LogicalPlan,
    time: &Column,
    lower: &mut Vec<Bound>,
    upper: &mut Vec<Bound>,
) {
    match plan {
        LogicalPlan::Filter(f) => {
            for c in split_conjunction(&f.predicate) {
                bound_of(c, time, lower, upper);
            }
            collect_bounds(&f.input, time, lower, upper);
        }
        LogicalPlan::TableScan(s) => {
            for f in &s.filters {
                for c in split_conjunction(f) {
                    bound_of(c, time, lower, upper);
                }
            }
        }
        LogicalPlan::Projection(p) => collect_bounds(&p.input, time, lower, upper),
        LogicalPlan::SubqueryAlias(s) => collect_bounds(&s.input, time, lower, upper),
        _ => {}
    }
}

fn bound_of(e: &Expr, time: &Column, lower: &mut Vec<Bound>, upper: &mut Vec<Bound>) {
    match e {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (op, value) = if is_time(left, time) && is_constant(right) {
                (*op, right)
            } else if is_time(right, time) && is_constant(left) {
                match op.swap() {
                    Some(op) => (op, left),
                    None => return,
                }
            } else {
                return;
            };
            let value = value.as_ref().clone();
            match op {
                Operator::Gt => lower.push(Bound::new(value, false)),
                Operator::GtEq => lower.push(Bound::new(value, true)),
                Operator::Lt => upper.push(Bound::new(value, false)),
                Operator::LtEq => upper.push(Bound::new(value, true)),
                Operator::Eq => {
                    lower.push(Bound::new(value.clone(), true));
                    upper.push(Bound::new(value, true));
                }
                _ => {}
            }
        }
        Expr::Between(Between {
            expr,
            negated: false,
            low,
            high,
        }) if is_time(expr, time) && is_constant(low) && is_constant(high) => {
            lower.push(Bound::new(low.as_ref().clone(), true));
            upper.push(Bound::new(high.as_ref().clone(), true));
        }
        _ => {}
    }
}

fn rewrite_projection(p: Projection) -> Result<Transformed<LogicalPlan>> {
    let Some(gapfill) = as_gapfill(&p.input) else {
        return Ok(Transformed::no(LogicalPlan::Projection(p)));
    };
    let LogicalPlan::Aggregate(agg) = gapfill.input.as_ref() else {
        return Ok(Transformed::no(LogicalPlan::Projection(p)));
    };
    let schema = gapfill.input.schema().clone();
    let group_count = gapfill.spec.group_count;
    // How the projection uses each input column: bare (None) or under a
    // fill marker (Some). A column used in more than one way gets a copy of
    // its aggregate per fill strategy.
    let mut uses: HashMap<usize, HashSet<Option<FillStrategy>>> = HashMap::new();
    for e in &p.expr {
        e.apply(|x| {
            let (strategy, target) = match fill_marker(x) {
                Some((s, args)) => (Some(s), args.first()),
                None => (None, Some(x)),
            };
            if let Some(Expr::Column(c)) = target {
                if let Ok(i) = schema.index_of_column(c) {
                    uses.entry(i).or_default().insert(strategy);
                }
            }
            Ok(if strategy.is_some() {
                TreeNodeRecursion::Jump
            } else {
                TreeNodeRecursion::Continue
            })
        })?;
    }
    let mut fills = gapfill.spec.fills.clone();
    let mut aggr_expr = agg.aggr_expr.clone();
    let mut copies: HashMap<(usize, FillStrategy), Column> = HashMap::new();
    let mut changed = false;
    let mut exprs = Vec::with_capacity(p.expr.len());
    for e in &p.expr {
        let new = e.clone().transform_up(|x| {
            let Some((strategy, args)) = fill_marker(&x) else {
                return Ok(Transformed::no(x));
            };
            let fname = fill_name(strategy);
            let Some(Expr::Column(c)) = args.first() else {
                return plan_err!(
                    "{fname}() must wrap an aggregate function, e.g. {fname}(avg(x))"
                );
            };
            let idx = schema.index_of_column(c)?;
            if idx < group_count {
                return plan_err!("{fname}() must wrap an aggregate, not the GROUP BY column {c}");
            }
            let field = schema.field(idx);
            if strategy == FillStrategy::Interpolate && !field.data_type().is_numeric() {
                return plan_err!(
                    "interpolate() needs a numeric aggregate, {c} is {}",
                    field.data_type()
                );
            }
            if uses.get(&idx).is_none_or(|u| u.len() == 1) {
                fills[idx] = strategy;
                return Ok(Transformed::yes(Expr::Column(c.clone())));
            }
            let copy = match copies.entry((idx, strategy)) {
                Entry::Occupied(o) => o.get().clone(),
                Entry::Vacant(v) => {
                    let name = format!("{fname}({})", field.name());
                    aggr_expr.push(aggr_expr[idx - group_count].clone().unalias().alias(&name));
                    fills.push(strategy);
                    v.insert(Column::from_name(name)).clone()
                }
            };
            Ok(Transformed::yes(Expr::Column(copy)))
        })?;
        changed |= new.transformed;
        exprs.push(keep_name(e, new.data));
    }
    if !changed {
        return Ok(Transformed::no(LogicalPlan::Projection(p)));
    }
    let input = if aggr_expr.len() == agg.aggr_expr.len() {
        gapfill.input.clone()
    } else {
        let agg = Aggregate::try_new(agg.input.clone(), agg.group_expr.clone(), aggr_expr)?;
        Arc::new(LogicalPlan::Aggregate(agg))
    };
    let mut spec = gapfill.spec.clone();
    spec.fills = fills;
    let gapfill = GapFill::try_new(input, spec)?;
    let input = Arc::new(LogicalPlan::Extension(Extension {
        node: Arc::new(gapfill),
    }));
    Ok(Transformed::yes(LogicalPlan::Projection(
        Projection::try_new(exprs, input)?,
    )))
}

fn fill_name(strategy: FillStrategy) -> &'static str {
    match strategy {
        FillStrategy::Interpolate => "interpolate",
        _ => "locf",
    }
}

fn check_leftovers(plan: &LogicalPlan) -> Result<()> {
    plan.apply_with_subqueries(|node| {
        for e in node.expressions() {
            e.apply(|x| {
                if let Some((kind, _)) = gapfill_kind(x) {
                    let name = if kind == GapfillKind::DateBin {
                        "date_bin_gapfill"
                    } else {
                        "time_bucket_gapfill"
                    };
                    return plan_err!(
                        "{name} can only be used as a GROUP BY expression of an aggregate query, \
                         e.g. SELECT {name}(INTERVAL '1 minute', time) AS t, avg(v) FROM m \
                         WHERE time >= '…' AND time < '…' GROUP BY 1"
                    );
                }
                if let Some((strategy, _)) = fill_marker(x) {
                    let name = fill_name(strategy);
                    return plan_err!(
                        "{name}() can only wrap an aggregate in the SELECT list of a query \
                         grouped by date_bin_gapfill or time_bucket_gapfill"
                    );
                }
                Ok(TreeNodeRecursion::Continue)
            })?;
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(())
}

/// One constant bound on the time column.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
pub struct Bound {
    pub expr: Expr,
    pub inclusive: bool,
}

impl Bound {
    fn new(expr: Expr, inclusive: bool) -> Self {
        Bound { expr, inclusive }
    }
}

/// What a `GapFill` node does, apart from its input.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
pub struct GapFillSpec {
    /// Index of the time bucket column in the input (an Aggregate).
    pub time_idx: usize,
    /// The first `group_count` columns are the GROUP BY columns.
    pub group_count: usize,
    pub stride: Expr,
    pub origin: Option<Expr>,
    /// Lower bounds (the largest wins) and upper bounds (the smallest wins).
    pub lower: Vec<Bound>,
    pub upper: Vec<Bound>,
    /// Fill strategy per column; only aggregate columns are ever not `Null`.
    pub fills: Vec<FillStrategy>,
}

/// Emits one row per time bucket per group over the time range, filling the
/// aggregate columns of buckets without data. Its schema is its input's,
/// with the aggregate columns made nullable.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GapFill {
    pub input: Arc<LogicalPlan>,
    pub spec: GapFillSpec,
    schema: DFSchemaRef,
}

impl GapFill {
    pub fn try_new(input: Arc<LogicalPlan>, mut spec: GapFillSpec) -> Result<Self> {
        let in_schema = input.schema();
        spec.fills
            .resize(in_schema.fields().len(), FillStrategy::Null);
        let fields = in_schema
            .iter()
            .enumerate()
            .map(|(i, (q, f))| {
                let f = if i >= spec.group_count {
                    Arc::new(f.as_ref().clone().with_nullable(true))
                } else {
                    f.clone()
                };
                (q.cloned(), f)
            })
            .collect();
        let schema = DFSchema::new_with_metadata(fields, in_schema.metadata().clone())?;
        Ok(GapFill {
            input,
            spec,
            schema: Arc::new(schema),
        })
    }
}

impl PartialOrd for GapFill {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        (&self.input, &self.spec).partial_cmp(&(&other.input, &other.spec))
    }
}

impl UserDefinedLogicalNodeCore for GapFill {
    fn name(&self) -> &str {
        "GapFill"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![self.input.as_ref()]
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    fn expressions(&self) -> Vec<Expr> {
        let s = &self.spec;
        let mut v = vec![s.stride.clone()];
        v.extend(s.origin.clone());
        v.extend(s.lower.iter().map(|b| b.expr.clone()));
        v.extend(s.upper.iter().map(|b| b.expr.clone()));
        v
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let s = &self.spec;
        let name = |i: usize| self.schema.field(i).name().clone();
        write!(f, "GapFill: time={}, stride={}", name(s.time_idx), s.stride)?;
        if let Some(o) = &s.origin {
            write!(f, ", origin={o}")?;
        }
        for b in &s.lower {
            write!(f, ", {} {}", if b.inclusive { ">=" } else { ">" }, b.expr)?;
        }
        for b in &s.upper {
            write!(f, ", {} {}", if b.inclusive { "<=" } else { "<" }, b.expr)?;
        }
        for (i, fill) in s.fills.iter().enumerate() {
            if *fill != FillStrategy::Null {
                write!(f, ", {fill:?}({})", name(i))?;
            }
        }
        Ok(())
    }

    fn with_exprs_and_inputs(
        &self,
        exprs: Vec<Expr>,
        mut inputs: Vec<LogicalPlan>,
    ) -> Result<Self> {
        let s = &self.spec;
        let expected = 1 + usize::from(s.origin.is_some()) + s.lower.len() + s.upper.len();
        if exprs.len() != expected || inputs.len() != 1 {
            return plan_err!("GapFill: expected {expected} expressions and 1 input");
        }
        let mut spec = s.clone();
        spec.stride = exprs[0].clone();
        let mut i = 1;
        if let Some(origin) = spec.origin.as_mut() {
            *origin = exprs[i].clone();
            i += 1;
        }
        for b in spec.lower.iter_mut().chain(spec.upper.iter_mut()) {
            b.expr = exprs[i].clone();
            i += 1;
        }
        GapFill::try_new(Arc::new(inputs.remove(0)), spec)
    }
}
