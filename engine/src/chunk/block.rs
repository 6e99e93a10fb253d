//! Page blocks: one per page and non-tag column, all integers LE.
//!
//! - `time`: pco i64.
//! - Float64, Int64, UInt64: null flag u8 (0 none, 1 a validity bitmap of
//!   ceil(rows/8) bytes follows, LSB first), then pco of the non-null values.
//! - Boolean: null flag and bitmap as above, then a values bitmap of
//!   ceil(rows/8) bytes covering every row (bits under nulls mean nothing).
//! - Utf8: null flag and bitmap, then the page dictionary (u32 count, then
//!   per entry u32 byte length and the bytes, in order of first use), then
//!   pco u32 keys into it, one per non-null value.
//!
//! A pco stream of no values is valid, so an all-null page needs no special
//! case. Decoding trusts nothing in the block: every length is checked
//! against the bytes that remain, and output sizes come from the row count
//! the (validated) footer gives for the page.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, ArrowPrimitiveType, BooleanArray, PrimitiveArray, StringArray, StringBuilder,
};
use arrow::buffer::{BooleanBuffer, Buffer, NullBuffer, ScalarBuffer};
use arrow::datatypes::{Float64Type, Int64Type, UInt64Type};
use pco::standalone::{DecompressorItem, FileDecompressor};
use pco::ChunkConfig;

use crate::catalog::FieldType;

type Res<T> = std::result::Result<T, String>;

pub(super) fn put_pco<T: pco::data_types::Number>(
    values: &[T],
    cfg: &ChunkConfig,
    out: &mut Vec<u8>,
) -> Res<()> {
    let bytes = pco::standalone::simple_compress(values, cfg).map_err(|e| format!("pco: {e}"))?;
    out.extend_from_slice(&bytes);
    Ok(())
}

/// Appends `bits` (any offset) as ceil(len/8) bytes, LSB first, with the
/// unused high bits of the last byte cleared so equal pages encode equally.
fn put_bits(bits: &BooleanBuffer, out: &mut Vec<u8>) {
    let nbytes = bits.len().div_ceil(8);
    let packed = bits.sliced();
    let start = out.len();
    match packed.as_slice().get(..nbytes) {
        Some(b) => out.extend_from_slice(b),
        None => {
            out.resize(start + nbytes, 0);
            for i in bits.set_indices() {
                out[start + i / 8] |= 1 << (i % 8);
            }
        }
    }
    let rem = bits.len() % 8;
    if rem != 0 {
        if let Some(last) = out.last_mut() {
            *last &= (1u8 << rem) - 1;
        }
    }
}

/// Null flag and, if any value is null, the validity bitmap.
fn put_validity(arr: &dyn Array, out: &mut Vec<u8>) {
    match arr.nulls().filter(|n| n.null_count() > 0) {
        None => out.push(0),
        Some(nulls) => {
            out.push(1);
            put_bits(nulls.inner(), out);
        }
    }
}

fn non_null<T: ArrowPrimitiveType>(a: &PrimitiveArray<T>) -> Cow<'_, [T::Native]> {
    if a.null_count() == 0 {
        Cow::Borrowed(a.values())
    } else {
        Cow::Owned(a.iter().flatten().collect())
    }
}

pub(super) fn put_field(
    ft: FieldType,
    arr: &ArrayRef,
    cfg: &ChunkConfig,
    out: &mut Vec<u8>,
) -> Res<()> {
    put_validity(arr.as_ref(), out);
    match ft {
        FieldType::Float => put_pco(
            &non_null(downcast::<PrimitiveArray<Float64Type>>(arr, "float64")?),
            cfg,
            out,
        ),
        FieldType::Integer => put_pco(
            &non_null(downcast::<PrimitiveArray<Int64Type>>(arr, "int64")?),
            cfg,
            out,
        ),
        FieldType::UInteger => put_pco(
            &non_null(downcast::<PrimitiveArray<UInt64Type>>(arr, "uint64")?),
            cfg,
            out,
        ),
        FieldType::Boolean => {
            put_bits(downcast::<BooleanArray>(arr, "boolean")?.values(), out);
            Ok(())
        }
        FieldType::String => {
            let a = downcast::<StringArray>(arr, "utf8")?;
            let mut index: HashMap<&str, u32> = HashMap::new();
            let mut entries: Vec<&str> = Vec::new();
            let mut keys: Vec<u32> = Vec::with_capacity(a.len() - a.null_count());
            for v in a.iter().flatten() {
                let k = *index.entry(v).or_insert_with(|| {
                    entries.push(v);
                    (entries.len() - 1) as u32
                });
                keys.push(k);
            }
            out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
            for e in &entries {
                // Utf8 offsets are i32, so every value is under 2 GiB.
                out.extend_from_slice(&(e.len() as u32).to_le_bytes());
                out.extend_from_slice(e.as_bytes());
            }
            put_pco(&keys, cfg, out)
        }
    }
}

fn downcast<'a, A: 'static>(arr: &'a dyn Array, what: &str) -> Res<&'a A> {
    arr.as_any()
        .downcast_ref::<A>()
        .ok_or_else(|| format!("array is not {what}"))
}

/// Bounds-checked reading of one block's bytes.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Res<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or_else(|| {
                format!(
                    "needs {n} bytes at block byte {}, only {} remain",
                    self.pos,
                    self.buf.len() - self.pos.min(self.buf.len())
                )
            })?;
        let s = self.buf.get(self.pos..end).unwrap_or_default();
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Res<u8> {
        Ok(self.take(1)?.first().copied().unwrap_or(0))
    }

    fn u32(&mut self) -> Res<u32> {
        let b = self.take(4)?;
        let mut a = [0u8; 4];
        a.copy_from_slice(b);
        Ok(u32::from_le_bytes(a))
    }

    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn rest(&mut self) -> &'a [u8] {
        let s = self.buf.get(self.pos..).unwrap_or_default();
        self.pos = self.buf.len();
        s
    }
}

/// Decodes a pco stream that must hold exactly `expected` values. Memory
/// grows one pco chunk at a time, each chunk's count checked against what is
/// still expected first, so neither a count in the stream nor an inflated
/// footer count is allocated before data that backs it has been decoded.
pub(super) fn decode_pco<T: pco::data_types::Number + Default>(
    bytes: &[u8],
    expected: usize,
) -> Res<Vec<T>> {
    let (fd, mut src) = FileDecompressor::new(bytes).map_err(|e| format!("pco header: {e}"))?;
    let mut out: Vec<T> = Vec::new();
    let mut pos = 0usize;
    loop {
        match fd
            .chunk_decompressor::<T, _>(src)
            .map_err(|e| format!("pco chunk after {pos} values: {e}"))?
        {
            DecompressorItem::Chunk(mut cd) => {
                let n = cd.n();
                let end = pos
                    .checked_add(n)
                    .filter(|end| *end <= expected)
                    .ok_or_else(|| format!("pco holds more than the {expected} values expected"))?;
                out.resize(end, T::default());
                let dst = out.get_mut(pos..end).unwrap_or_default();
                let progress = cd
                    .read(dst)
                    .map_err(|e| format!("pco values after {pos}: {e}"))?;
                if progress.n_processed != n || !progress.finished {
                    return Err(format!("pco chunk after {pos} values ended early"));
                }
                pos += n;
                src = cd.into_src();
            }
            DecompressorItem::EndOfData(rest) => {
                if pos != expected {
                    return Err(format!("pco holds {pos} values, expected {expected}"));
                }
                if !rest.is_empty() {
                    return Err(format!("{} stray bytes after the pco data", rest.len()));
                }
                return Ok(out);
            }
        }
    }
}

fn read_bitmap(cur: &mut Cursor<'_>, rows: usize) -> Res<BooleanBuffer> {
    let bytes = cur.take(rows.div_ceil(8))?;
    Ok(BooleanBuffer::new(Buffer::from_slice_ref(bytes), 0, rows))
}

fn read_validity(cur: &mut Cursor<'_>, rows: usize) -> Res<Option<NullBuffer>> {
    match cur.u8()? {
        0 => Ok(None),
        1 => Ok(Some(NullBuffer::new(read_bitmap(cur, rows)?))),
        f => Err(format!("unknown null flag {f} at block byte 0")),
    }
}

fn decode_primitive<T: ArrowPrimitiveType>(
    cur: &mut Cursor<'_>,
    rows: usize,
    nulls: Option<NullBuffer>,
) -> Res<ArrayRef>
where
    T::Native: pco::data_types::Number + Default,
{
    let at = cur.pos;
    let present = rows - nulls.as_ref().map_or(0, |n| n.null_count());
    let values: Vec<T::Native> =
        decode_pco(cur.rest(), present).map_err(|e| format!("at block byte {at}: {e}"))?;
    let values = match &nulls {
        None => values,
        Some(nb) => {
            let mut full = vec![T::Native::default(); rows];
            for (i, v) in nb.valid_indices().zip(values) {
                if let Some(slot) = full.get_mut(i) {
                    *slot = v;
                }
            }
            full
        }
    };
    let arr = PrimitiveArray::<T>::try_new(ScalarBuffer::from(values), nulls)
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(arr))
}

pub(super) fn decode_field(buf: &[u8], ft: FieldType, rows: usize) -> Res<ArrayRef> {
    let mut cur = Cursor { buf, pos: 0 };
    let nulls = read_validity(&mut cur, rows)?;
    let arr: ArrayRef = match ft {
        FieldType::Float => decode_primitive::<Float64Type>(&mut cur, rows, nulls)?,
        FieldType::Integer => decode_primitive::<Int64Type>(&mut cur, rows, nulls)?,
        FieldType::UInteger => decode_primitive::<UInt64Type>(&mut cur, rows, nulls)?,
        FieldType::Boolean => {
            let values = read_bitmap(&mut cur, rows)?;
            Arc::new(BooleanArray::new(values, nulls))
        }
        FieldType::String => decode_strings(&mut cur, rows, nulls)?,
    };
    if cur.remaining() > 0 {
        return Err(format!(
            "{} stray bytes at block byte {}",
            cur.remaining(),
            cur.pos
        ));
    }
    Ok(arr)
}

fn decode_strings(cur: &mut Cursor<'_>, rows: usize, nulls: Option<NullBuffer>) -> Res<ArrayRef> {
    let at = cur.pos;
    let count = cur.u32()? as usize;
    // Each entry takes at least its 4-byte length.
    if count > cur.remaining() / 4 {
        return Err(format!(
            "dictionary of {count} entries at block byte {at} cannot fit in the {} bytes left",
            cur.remaining()
        ));
    }
    let mut entries: Vec<&str> = Vec::with_capacity(count);
    for e in 0..count {
        let len = cur.u32()? as usize;
        let at = cur.pos;
        let bytes = cur.take(len)?;
        let s = std::str::from_utf8(bytes).map_err(|err| {
            format!("dictionary entry {e} at block byte {at} is not UTF-8: {err}")
        })?;
        entries.push(s);
    }
    let keys_at = cur.pos;
    let present = rows - nulls.as_ref().map_or(0, |n| n.null_count());
    let keys: Vec<u32> = decode_pco(cur.rest(), present)
        .map_err(|e| format!("keys at block byte {keys_at}: {e}"))?;
    let mut total: usize = 0;
    for k in &keys {
        let s = entries.get(*k as usize).ok_or_else(|| {
            format!("key {k} at block byte {keys_at} is beyond the {count} dictionary entries")
        })?;
        total = total.saturating_add(s.len());
    }
    if i32::try_from(total).is_err() {
        return Err(format!(
            "page strings total {total} bytes, over the 2 GiB of utf8"
        ));
    }
    let mut b = StringBuilder::with_capacity(rows, total);
    let mut keys = keys.into_iter();
    for r in 0..rows {
        if nulls.as_ref().is_some_and(|n| n.is_null(r)) {
            b.append_null();
        } else {
            let s = keys
                .next()
                .and_then(|k| entries.get(k as usize))
                .ok_or_else(|| format!("fewer keys than values at row {r}"))?;
            b.append_value(s);
        }
    }
    Ok(Arc::new(b.finish()))
}
