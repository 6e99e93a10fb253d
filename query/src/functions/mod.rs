//! Time-series SQL functions, for users coming from TimescaleDB, InfluxDB 3
//! and KWDB.
//!
//! * `time_bucket(interval, ts [, origin])`: TimescaleDB's name for
//!   `date_bin`; same arguments, same result (origin defaults to the Unix
//!   epoch, as in `date_bin`).
//! * `first(value [, time])`, `last(value [, time])`: the non-NULL value at
//!   the smallest / largest time of the group (`first_last`).
//! * Gap filling (`gapfill_rule`, `gapfill_exec`): a GROUP BY on
//!   `date_bin_gapfill(interval, time [, origin])` (InfluxDB 3) or
//!   `time_bucket_gapfill(interval, time [, start [, finish]])` (TimescaleDB)
//!   returns every bucket of the time range for every group, the range
//!   coming from the WHERE clause (or from start/finish); `locf(agg)` and
//!   `interpolate(agg)` in the SELECT list fill the gaps.
//!
//! Wiring: [`register`] adds the functions to a context; the session state
//! needs [`analyzer_rule`] and [`query_planner`] for gap filling and for the
//! one-argument `first` / `last`.

mod first_last;
mod gapfill_exec;
mod gapfill_rule;
mod scalar;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use datafusion::execution::context::QueryPlanner;
use datafusion::logical_expr::{AggregateUDF, ScalarUDF};
use datafusion::optimizer::AnalyzerRule;
use datafusion::prelude::SessionContext;

use scalar::{FillMarker, FillStrategy, GapfillBucket, GapfillKind, TimeBucket};

/// Registers the time-series functions with `ctx`.
pub fn register(ctx: &SessionContext) {
    ctx.register_udf(ScalarUDF::new_from_impl(TimeBucket::new()));
    ctx.register_udf(ScalarUDF::new_from_impl(GapfillBucket::new(
        GapfillKind::DateBin,
    )));
    ctx.register_udf(ScalarUDF::new_from_impl(GapfillBucket::new(
        GapfillKind::TimeBucket,
    )));
    ctx.register_udf(ScalarUDF::new_from_impl(FillMarker::new(
        FillStrategy::Locf,
    )));
    ctx.register_udf(ScalarUDF::new_from_impl(FillMarker::new(
        FillStrategy::Interpolate,
    )));
    ctx.register_udaf(AggregateUDF::new_from_impl(first_last::FirstLast::first()));
    ctx.register_udaf(AggregateUDF::new_from_impl(first_last::FirstLast::last()));
}

/// The analyzer rule for gap filling and one-argument `first` / `last`; add
/// it with `SessionStateBuilder::with_analyzer_rule` (it must run after
/// DataFusion's own rules, which that method ensures).
pub fn analyzer_rule() -> Arc<dyn AnalyzerRule + Send + Sync> {
    Arc::new(gapfill_rule::TimeSeriesRule)
}

/// DataFusion's default query planner plus the gap-fill node; set it with
/// `SessionStateBuilder::with_query_planner`.
pub fn query_planner() -> Arc<dyn QueryPlanner + Send + Sync> {
    Arc::new(gapfill_exec::SluiceQueryPlanner)
}
