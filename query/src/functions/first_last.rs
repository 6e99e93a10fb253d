//! `first(value, time)` and `last(value, time)`: the value at the smallest
//! (largest) time of the group, as in InfluxDB and KWDB.
//!
//! * NULL values are skipped (InfluxDB's behaviour): `last(v, time)` is the
//!   latest non-NULL `v`; a group whose values are all NULL gives NULL.
//!   Rows whose time is NULL are skipped too.
//! * Ties on time are broken by the value, so the result never depends on
//!   scan or partition order: `first` is the first row ordered by
//!   `(time, value)`, `last` the last row ordered by `(time, value)`.
//! * Any value type works (numbers, booleans, strings, dictionary tags); the
//!   time may be a timestamp, a date or an Int64.
//! * With one argument, `first(v)` / `last(v)` use the input's `time`
//!   column (KWDB style); the analyzer rule in `gapfill_rule` adds it.

use std::cmp::Ordering;
use std::mem::size_of;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array};
use arrow::compute::kernels::boolean::{and, not};
use arrow::compute::{cast, is_not_null, nullif};
use arrow::datatypes::{DataType, Field, FieldRef, Int64Type};
use datafusion::common::{plan_err, DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::{format_state_name, AggregateOrderSensitivity};
use datafusion::logical_expr::{
    Accumulator, AggregateUDFImpl, EmitTo, GroupsAccumulator, Signature, Volatility,
};

/// The `first` / `last` aggregate function.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct FirstLast {
    last: bool,
    signature: Signature,
}

impl FirstLast {
    pub fn first() -> Self {
        Self::new(false)
    }

    pub fn last() -> Self {
        Self::new(true)
    }

    fn new(last: bool) -> Self {
        FirstLast {
            last,
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }

    fn core(&self, args: &AccumulatorArgs) -> Result<Core> {
        if args.exprs.len() != 2 {
            return plan_err!(
                "{}(value) with one argument needs a `time` column in its input; \
                 pass the time explicitly: {}(value, time)",
                self.name(),
                self.name()
            );
        }
        Ok(Core::new(self.last, args.return_type().clone()))
    }
}

impl AggregateUDFImpl for FirstLast {
    fn name(&self) -> &str {
        if self.last {
            "last"
        } else {
            "first"
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        match arg_types {
            [_] => Ok(arg_types.to_vec()),
            [_, DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 | DataType::Int64] => {
                Ok(arg_types.to_vec())
            }
            [v, DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32] => Ok(vec![v.clone(), DataType::Int64]),
            [_, other] => plan_err!(
                "{}(value, time): time must be a timestamp, got {other}",
                self.name()
            ),
            _ => plan_err!(
                "{} takes (value, time) or (value), got {} arguments",
                self.name(),
                arg_types.len()
            ),
        }
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types.first() {
            Some(t) => Ok(t.clone()),
            None => plan_err!("{} needs a value argument", self.name()),
        }
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(FirstLastAccumulator(self.core(&args)?)))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![
            Field::new(
                format_state_name(args.name, "value"),
                args.return_type().clone(),
                true,
            )
            .into(),
            Field::new(format_state_name(args.name, "time"), DataType::Int64, true).into(),
        ])
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(self.core(&args)?))
    }

    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        AggregateOrderSensitivity::Insensitive
    }
}

/// Per-group best `(time, value)`, shared by the plain and the groups
/// accumulator (the plain one uses group 0 only).
#[derive(Debug)]
struct Core {
    last: bool,
    data_type: DataType,
    best: Vec<Option<(i64, ScalarValue)>>,
    /// Heap bytes held by the values in `best`, kept up to date so `size`
    /// stays O(1).
    heap: usize,
    /// Best `(time, row)` per group within the current batch; all `None`
    /// between calls.
    scratch: Vec<Option<(i64, usize)>>,
    touched: Vec<usize>,
}

impl Core {
    fn new(last: bool, data_type: DataType) -> Self {
        Core {
            last,
            data_type,
            best: Vec::new(),
            heap: 0,
            scratch: Vec::new(),
            touched: Vec::new(),
        }
    }

    /// Whether `a` should replace `b`, given their order `a.cmp(b)`.
    fn wins(&self, ord: Ordering) -> bool {
        if self.last {
            ord == Ordering::Greater
        } else {
            ord == Ordering::Less
        }
    }

    /// Compares `(ta, va)` with `(tb, vb)`; values only on a time tie.
    fn prefer(&self, ta: i64, va: &ScalarValue, tb: i64, vb: &ScalarValue) -> bool {
        let ord = ta
            .cmp(&tb)
            .then_with(|| va.partial_cmp(vb).unwrap_or(Ordering::Equal));
        self.wins(ord)
    }

    fn update(
        &mut self,
        values: &ArrayRef,
        times: &ArrayRef,
        groups: &[usize],
        filter: Option<&BooleanArray>,
        total_groups: usize,
    ) -> Result<()> {
        if self.best.len() < total_groups {
            self.best.resize(total_groups, None);
        }
        // `scratch` is all `None` between calls, so it only ever grows.
        if self.scratch.len() < total_groups {
            self.scratch.resize(total_groups, None);
        }
        let times = cast(times, &DataType::Int64)?;
        let times = times.as_primitive::<Int64Type>();
        let nulls = values.logical_nulls();
        for (row, &g) in groups.iter().enumerate() {
            if nulls.as_ref().is_some_and(|n| n.is_null(row))
                || times.is_null(row)
                || filter.is_some_and(|f| f.is_null(row) || !f.value(row))
            {
                continue;
            }
            let t = times.value(row);
            let slot = self.scratch.get(g).copied().ok_or_else(|| {
                DataFusionError::Internal(format!("group index {g} out of range"))
            })?;
            let replace = match slot {
                None => {
                    self.touched.push(g);
                    true
                }
                Some((ct, crow)) => match t.cmp(&ct) {
                    Ordering::Equal => {
                        let a = ScalarValue::try_from_array(values, row)?;
                        let b = ScalarValue::try_from_array(values, crow)?;
                        self.prefer(t, &a, ct, &b)
                    }
                    ord => self.wins(ord),
                },
            };
            if replace {
                self.scratch[g] = Some((t, row));
            }
        }
        let touched = std::mem::take(&mut self.touched);
        for &g in &touched {
            let Some((t, row)) = self.scratch[g].take() else {
                continue;
            };
            let v = ScalarValue::try_from_array(values, row)?;
            let replace = match &self.best[g] {
                None => true,
                Some((bt, bv)) => match t.cmp(bt) {
                    Ordering::Equal => self.prefer(t, &v, *bt, bv),
                    ord => self.wins(ord),
                },
            };
            if replace {
                let added = v.size().saturating_sub(size_of::<ScalarValue>());
                if let Some((_, old)) = self.best[g].replace((t, v)) {
                    self.heap = self.heap.saturating_sub(heap_size(&old));
                }
                self.heap += added;
            }
        }
        self.touched = touched;
        self.touched.clear();
        Ok(())
    }

    fn take(&mut self, emit_to: EmitTo) -> Vec<Option<(i64, ScalarValue)>> {
        let taken = emit_to.take_needed(&mut self.best);
        for (_, v) in taken.iter().flatten() {
            self.heap = self.heap.saturating_sub(heap_size(v));
        }
        taken
    }

    fn values(&self, best: &[Option<(i64, ScalarValue)>]) -> Result<ArrayRef> {
        let null = ScalarValue::try_from(&self.data_type)?;
        if best.is_empty() {
            return Ok(arrow::array::new_empty_array(&self.data_type));
        }
        ScalarValue::iter_to_array(best.iter().map(|b| match b {
            Some((_, v)) => v.clone(),
            None => null.clone(),
        }))
    }

    fn times(best: &[Option<(i64, ScalarValue)>]) -> ArrayRef {
        std::sync::Arc::new(Int64Array::from_iter(
            best.iter().map(|b| b.as_ref().map(|(t, _)| *t)),
        ))
    }

    fn size(&self) -> usize {
        size_of::<Self>()
            + self.best.capacity() * size_of::<Option<(i64, ScalarValue)>>()
            + self.heap
            + self.scratch.capacity() * size_of::<Option<(i64, usize)>>()
            + self.touched.capacity() * size_of::<usize>()
    }
}

/// Bytes a value holds outside its `ScalarValue` slot.
fn heap_size(v: &ScalarValue) -> usize {
    v.size().saturating_sub(size_of::<ScalarValue>())
}

fn two<'a>(values: &'a [ArrayRef], what: &str) -> Result<(&'a ArrayRef, &'a ArrayRef)> {
    match values {
        [v, t] => Ok((v, t)),
        _ => Err(DataFusionError::Internal(format!(
            "first/last {what} expects 2 arrays, got {}",
            values.len()
        ))),
    }
}

impl GroupsAccumulator for Core {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        let (v, t) = two(values, "input")?;
        self.update(v, t, group_indices, opt_filter, total_num_groups)
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let best = self.take(emit_to);
        self.values(&best)
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let best = self.take(emit_to);
        Ok(vec![self.values(&best)?, Self::times(&best)])
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        // A state row is a (value, time) candidate; empty groups have a NULL
        // value and are skipped like NULL inputs.
        let (v, t) = two(values, "state")?;
        self.update(v, t, group_indices, None, total_num_groups)
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let (v, t) = two(values, "input")?;
        let times = cast(t, &DataType::Int64)?;
        let mut keep = is_not_null(&times)?;
        if let Some(f) = opt_filter {
            // A NULL filter entry excludes the row, like `false`.
            let f: BooleanArray = f.iter().map(|x| Some(x == Some(true))).collect();
            keep = and(&keep, &f)?;
        }
        let drop = not(&keep)?;
        Ok(vec![nullif(v, &drop)?, times])
    }

    fn size(&self) -> usize {
        Core::size(self)
    }
}

/// The plain accumulator: one group.
#[derive(Debug)]
struct FirstLastAccumulator(Core);

impl Accumulator for FirstLastAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let (v, t) = two(values, "input")?;
        let groups = vec![0; v.len()];
        self.0.update(v, t, &groups, None, 1)
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        match self.0.best.first() {
            Some(Some((_, v))) => Ok(v.clone()),
            _ => ScalarValue::try_from(&self.0.data_type),
        }
    }

    fn size(&self) -> usize {
        self.0.size()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        match self.0.best.first() {
            Some(Some((t, v))) => Ok(vec![v.clone(), ScalarValue::Int64(Some(*t))]),
            _ => Ok(vec![
                ScalarValue::try_from(&self.0.data_type)?,
                ScalarValue::Int64(None),
            ]),
        }
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.update_batch(states)
    }
}
