//! Sorting buffered rows into chunk order and resolving duplicates.

use arrow::array::{
    Array, ArrayRef, DictionaryArray, RecordBatch, RecordBatchOptions, StringArray,
    TimestampNanosecondArray, UInt32Array,
};
use arrow::compute::{concat_batches, take};
use arrow::datatypes::{Int32Type, SchemaRef};
use serde::{Deserialize, Serialize};

use crate::catalog::{tag_data_type, TIME_COLUMN};
use crate::error::{EngineError, Result};

/// What happens to rows that share (series, time) within one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DedupPolicy {
    /// The last write wins, whole row.
    #[default]
    Override,
    /// Per field, the last non-null value wins.
    Merge,
    /// The first write is kept, later ones dropped.
    Discard,
}

fn err(msg: impl std::fmt::Display) -> EngineError {
    EngineError::Encode(format!("sort_dedup: {msg}"))
}

/// Concatenates `batches` (laid out in `schema`, in arrival order: later
/// batches and later rows within a batch are newer), sorts the rows by
/// (tag columns in schema order, nulls first; then time) and resolves rows
/// with equal (series, time) by `policy`. Returns one batch in `schema`.
pub fn sort_dedup(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    policy: DedupPolicy,
) -> Result<RecordBatch> {
    let all = match batches {
        [] => return Ok(RecordBatch::new_empty(schema.clone())),
        [one] => RecordBatch::try_new_with_options(
            schema.clone(),
            one.columns().to_vec(),
            &RecordBatchOptions::new().with_row_count(Some(one.num_rows())),
        )
        .map_err(err)?,
        many => concat_batches(schema, many).map_err(err)?,
    };
    let n = all.num_rows();
    if n == 0 {
        return Ok(all);
    }
    // Row ordinals are packed into 32 bits of the sort key.
    if u32::try_from(n).is_err() {
        return Err(err(format!(
            "{n} rows exceed the 2^32 rows one sort can take"
        )));
    }
    let time_idx = schema
        .index_of(TIME_COLUMN)
        .map_err(|_| err("schema has no `time` column"))?;
    let times = all
        .column(time_idx)
        .as_any()
        .downcast_ref::<TimestampNanosecondArray>()
        .ok_or_else(|| err("`time` is not a nanosecond timestamp column"))?
        .values();
    let tag = tag_data_type();
    let tag_cols: Vec<usize> = (0..all.num_columns())
        .filter(|&i| schema.field(i).data_type() == &tag)
        .collect();
    let series = series_ranks(&all, &tag_cols)?;

    // One u128 per row: series rank, time (sign flipped so unsigned order is
    // signed order), arrival ordinal. Ordinals are unique, so an unstable
    // sort of the keys is a stable sort of the rows.
    let mut keys: Vec<u128> = Vec::with_capacity(n);
    for (i, t) in times.iter().enumerate() {
        let s = series.get(i).copied().unwrap_or(0);
        let t = (*t as u64) ^ (1 << 63);
        keys.push((u128::from(s) << 96) | (u128::from(t) << 32) | i as u128);
    }
    drop(series);
    keys.sort_unstable();
    let order: Vec<u32> = keys.iter().map(|k| *k as u32).collect();
    // starts[g]..starts[g + 1] are the sorted positions of group g (rows
    // sharing series and time).
    let mut starts: Vec<usize> = Vec::with_capacity(n + 1);
    for (p, k) in keys.iter().enumerate() {
        if p == 0 || keys[p - 1] >> 32 != k >> 32 {
            starts.push(p);
        }
    }
    starts.push(n);
    drop(keys);
    let groups = starts.len() - 1;

    let base: Vec<u32> = if groups == n {
        order.clone()
    } else {
        starts
            .windows(2)
            .map(|w| match policy {
                DedupPolicy::Discard => order[w[0]],
                DedupPolicy::Override | DedupPolicy::Merge => order[w[1] - 1],
            })
            .collect()
    };
    let identity = base.len() == n && base.iter().enumerate().all(|(i, v)| *v as usize == i);
    let base_idx = UInt32Array::from(base);

    let mut columns: Vec<ArrayRef> = Vec::with_capacity(all.num_columns());
    for (c, col) in all.columns().iter().enumerate() {
        let is_field = c != time_idx && !tag_cols.contains(&c);
        let merge_here =
            policy == DedupPolicy::Merge && groups < n && is_field && col.null_count() > 0;
        if merge_here {
            let idx = UInt32Array::from(merge_indices(col.as_ref(), &order, &starts));
            columns.push(take(col.as_ref(), &idx, None).map_err(err)?);
        } else if identity {
            columns.push(col.clone());
        } else {
            columns.push(take(col.as_ref(), &base_idx, None).map_err(err)?);
        }
    }
    RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(groups)),
    )
    .map_err(err)
}

/// Per group, the newest row whose value in `col` is not null (the newest
/// row when all are null).
fn merge_indices(col: &dyn Array, order: &[u32], starts: &[usize]) -> Vec<u32> {
    starts
        .windows(2)
        .map(|w| {
            let group = &order[w[0]..w[1]];
            group
                .iter()
                .rev()
                .find(|&&r| col.is_valid(r as usize))
                .or(group.last())
                .copied()
                .unwrap_or(0)
        })
        .collect()
}

/// Each row's series as a rank that orders like the tag tuple (nulls first,
/// then by string value, column by column).
fn series_ranks(batch: &RecordBatch, tag_cols: &[usize]) -> Result<Vec<u32>> {
    let n = batch.num_rows();
    // Mixed-radix number of the per-column ranks: it orders like the tuple
    // without comparing strings per row. When the radix product would
    // overflow, the numbers seen so far are replaced by their dense ranks,
    // which keeps the order and bounds them by the row count.
    let mut comp: Vec<u64> = vec![0; n];
    let mut radix: u64 = 1;
    for &c in tag_cols {
        let (ranks, base) = tag_ranks(batch.column(c), n)?;
        let base = u64::from(base);
        radix = match radix.checked_mul(base) {
            Some(r) => r,
            None => {
                let distinct = densify(&mut comp);
                distinct
                    .checked_mul(base)
                    .ok_or_else(|| err("too many distinct series"))?
            }
        };
        for (v, r) in comp.iter_mut().zip(ranks) {
            *v = *v * base + u64::from(r);
        }
    }
    if radix > u64::from(u32::MAX) {
        densify(&mut comp);
    }
    Ok(comp.into_iter().map(|v| v as u32).collect())
}

/// Replaces the values by their ranks among the distinct values; returns how
/// many distinct values there are.
fn densify(values: &mut [u64]) -> u64 {
    let mut distinct = values.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    for v in values.iter_mut() {
        *v = distinct.binary_search(v).unwrap_or(0) as u64;
    }
    distinct.len() as u64
}

/// Per row, the rank of its tag value (0 for null, then 1.. in string
/// order, equal strings equal ranks); and the number of ranks used plus one.
fn tag_ranks(col: &ArrayRef, n: usize) -> Result<(Vec<u32>, u32)> {
    let dict = col
        .as_any()
        .downcast_ref::<DictionaryArray<Int32Type>>()
        .ok_or_else(|| err("tag column is not a dictionary with int32 keys"))?;
    let values = dict
        .values()
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| err("tag dictionary values are not utf8"))?;
    let mut by_value: Vec<usize> = (0..values.len()).filter(|&i| values.is_valid(i)).collect();
    by_value.sort_unstable_by(|&a, &b| values.value(a).cmp(values.value(b)));
    let mut rank = vec![0u32; values.len()];
    let mut r: u32 = 0;
    let mut prev: Option<&str> = None;
    for &i in &by_value {
        let v = values.value(i);
        if prev != Some(v) {
            r += 1;
            prev = Some(v);
        }
        rank[i] = r;
    }
    let keys = dict.keys();
    let lookup = |k: i32| usize::try_from(k).ok().and_then(|k| rank.get(k)).copied();
    let mut out = Vec::with_capacity(n);
    match keys.nulls() {
        None => out.extend(keys.values().iter().map(|&k| lookup(k).unwrap_or(0))),
        Some(nulls) => out.extend(keys.values().iter().zip(nulls.iter()).map(|(&k, valid)| {
            if valid {
                lookup(k).unwrap_or(0)
            } else {
                0
            }
        })),
    }
    Ok((out, r + 1))
}
