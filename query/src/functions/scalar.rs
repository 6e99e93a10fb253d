//! Scalar functions: `time_bucket` (TimescaleDB's name for `date_bin`) and the
//! gap-filling markers `date_bin_gapfill`, `time_bucket_gapfill`, `locf` and
//! `interpolate`. The markers never run: the gap-fill analyzer rule
//! (`gapfill_rule`) replaces them; reaching `invoke` means they were used
//! where gap filling does not apply, which is reported as an error.

use std::sync::Arc;

use arrow::datatypes::{DataType, FieldRef, IntervalUnit, TimeUnit};
use datafusion::common::{exec_err, plan_err, Result};
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Volatility,
};

/// `time_bucket(interval, ts [, origin])`: exactly `date_bin`, whose
/// argument order is already TimescaleDB's. Delegates everything to
/// DataFusion's `date_bin` so results, types and ordering match.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct TimeBucket {
    inner: Arc<ScalarUDF>,
}

impl TimeBucket {
    pub fn new() -> Self {
        TimeBucket {
            inner: datafusion::functions::datetime::date_bin(),
        }
    }
}

impl ScalarUDFImpl for TimeBucket {
    fn name(&self) -> &str {
        "time_bucket"
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        self.inner.invoke_with_args(args)
    }

    fn simplify(
        &self,
        args: Vec<Expr>,
        info: &SimplifyContext,
    ) -> Result<datafusion::logical_expr::simplify::ExprSimplifyResult> {
        self.inner.simplify(args, info)
    }

    fn output_ordering(&self, inputs: &[ExprProperties]) -> Result<SortProperties> {
        self.inner.output_ordering(inputs)
    }

    fn preserves_lex_ordering(&self, inputs: &[ExprProperties]) -> Result<bool> {
        self.inner.preserves_lex_ordering(inputs)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}

/// Which gap-filling bucket function this is; they differ only in what the
/// third and fourth arguments mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd)]
pub enum GapfillKind {
    /// `date_bin_gapfill(interval, time [, origin])` (InfluxDB 3).
    DateBin,
    /// `time_bucket_gapfill(interval, time [, start [, finish]])` (TimescaleDB).
    TimeBucket,
}

/// `date_bin_gapfill` / `time_bucket_gapfill`: a GROUP BY marker that the
/// gap-fill rule turns into `date_bin` plus a `GapFill` node.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct GapfillBucket {
    pub kind: GapfillKind,
    signature: Signature,
}

impl GapfillBucket {
    pub fn new(kind: GapfillKind) -> Self {
        GapfillBucket {
            kind,
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for GapfillBucket {
    fn name(&self) -> &str {
        match self.kind {
            GapfillKind::DateBin => "date_bin_gapfill",
            GapfillKind::TimeBucket => "time_bucket_gapfill",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types.get(1) {
            Some(t @ DataType::Timestamp(_, _)) => Ok(t.clone()),
            _ => plan_err!("{}: the second argument must be a timestamp", self.name()),
        }
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let name = self.name();
        let max = match self.kind {
            GapfillKind::DateBin => 3,
            GapfillKind::TimeBucket => 4,
        };
        if arg_types.len() < 2 || arg_types.len() > max {
            return plan_err!(
                "{name} takes 2 to {max} arguments (interval, time, ...), got {}",
                arg_types.len()
            );
        }
        let mut out = Vec::with_capacity(arg_types.len());
        match &arg_types[0] {
            DataType::Interval(_)
            | DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Null => out.push(DataType::Interval(IntervalUnit::MonthDayNano)),
            other => {
                return plan_err!("{name}: the first argument must be an interval, got {other}")
            }
        }
        let tz = match &arg_types[1] {
            t @ DataType::Timestamp(_, tz) => {
                out.push(t.clone());
                tz.clone()
            }
            other => {
                return plan_err!(
                    "{name}: the second argument must be a timestamp column, got {other}"
                )
            }
        };
        for t in &arg_types[2..] {
            match t {
                DataType::Timestamp(_, _)
                | DataType::Date32
                | DataType::Date64
                | DataType::Utf8
                | DataType::LargeUtf8
                | DataType::Utf8View
                | DataType::Null => out.push(DataType::Timestamp(TimeUnit::Nanosecond, tz.clone())),
                other => return plan_err!("{name}: expected a timestamp argument, got {other}"),
            }
        }
        Ok(out)
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        exec_err!(
            "{} can only be used as a GROUP BY expression of an aggregate query \
             whose WHERE clause bounds the time column, e.g. \
             SELECT {}(INTERVAL '1 minute', time), avg(v) FROM t \
             WHERE time >= '…' AND time < '…' GROUP BY 1",
            self.name(),
            self.name()
        )
    }
}

/// How a `GapFill` node fills an aggregate column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd)]
pub enum FillStrategy {
    /// Missing buckets are NULL.
    Null,
    /// NULLs take the last non-NULL value of the series (`locf`).
    Locf,
    /// NULLs between two non-NULL values are linearly interpolated.
    Interpolate,
}

/// `locf(agg)` / `interpolate(agg)`: SELECT-list markers for the gap-fill
/// rule; they return their argument's type.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct FillMarker {
    pub strategy: FillStrategy,
    signature: Signature,
}

impl FillMarker {
    pub fn new(strategy: FillStrategy) -> Self {
        FillMarker {
            strategy,
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for FillMarker {
    fn name(&self) -> &str {
        match self.strategy {
            FillStrategy::Interpolate => "interpolate",
            _ => "locf",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types.first() {
            Some(t) => Ok(t.clone()),
            None => plan_err!("{} takes one argument", self.name()),
        }
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        exec_err!(
            "{}() can only wrap an aggregate in the SELECT list of a query \
             grouped by date_bin_gapfill or time_bucket_gapfill",
            self.name()
        )
    }
}
