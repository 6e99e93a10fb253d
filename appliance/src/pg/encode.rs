//! Arrow results as PostgreSQL rows. Values go out in text format (what
//! psql, pgbench and most drivers read), written the way PostgreSQL writes
//! them; a column a client asks for in binary is sent in binary when its
//! type has a binary form here (integers, floats, numeric, booleans, text,
//! bytea, timestamps and dates).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Schema, TimeUnit};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use pgwire::api::portal::Format;
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo};
use pgwire::api::Type;
use pgwire::error::PgWireResult;
use pgwire::messages::data::DataRow;

pub fn pg_type(t: &DataType) -> Type {
    match t {
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => Type::INT2,
        DataType::Int32 | DataType::UInt16 => Type::INT4,
        DataType::Int64 | DataType::UInt32 => Type::INT8,
        DataType::UInt64 | DataType::Decimal128(..) | DataType::Decimal256(..) => Type::NUMERIC,
        DataType::Float16 | DataType::Float32 => Type::FLOAT4,
        DataType::Float64 => Type::FLOAT8,
        DataType::Boolean => Type::BOOL,
        DataType::Timestamp(_, None) => Type::TIMESTAMP,
        DataType::Timestamp(_, Some(_)) => Type::TIMESTAMPTZ,
        DataType::Date32 | DataType::Date64 => Type::DATE,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => Type::BYTEA,
        _ => Type::TEXT,
    }
}

fn binary_capable(t: &Type) -> bool {
    [
        Type::INT2,
        Type::INT4,
        Type::INT8,
        Type::FLOAT4,
        Type::FLOAT8,
        Type::NUMERIC,
        Type::BOOL,
        Type::TEXT,
        Type::BYTEA,
        Type::TIMESTAMP,
        Type::TIMESTAMPTZ,
        Type::DATE,
    ]
    .contains(t)
}

/// The row description of `schema`, in the formats the client asked for.
pub fn fields(schema: &Schema, format: &Format) -> Vec<FieldInfo> {
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let ty = pg_type(f.data_type());
            let fmt = match format.format_for(i) {
                FieldFormat::Binary if binary_capable(&ty) => FieldFormat::Binary,
                _ => FieldFormat::Text,
            };
            // A binary request for a type without a binary form here gets
            // text under the text type, which every client can read.
            let ty = if format.is_binary(i) && fmt == FieldFormat::Text {
                Type::TEXT
            } else {
                ty
            };
            FieldInfo::new(f.name().clone(), None, None, ty, fmt)
        })
        .collect()
}

fn ts_text(v: i64, unit: &TimeUnit, tz: bool) -> String {
    let ns = match unit {
        TimeUnit::Second => v.saturating_mul(1_000_000_000),
        TimeUnit::Millisecond => v.saturating_mul(1_000_000),
        TimeUnit::Microsecond => v.saturating_mul(1_000),
        TimeUnit::Nanosecond => v,
    };
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000) as u32;
    let Some(dt) = chrono::DateTime::from_timestamp(secs, nanos) else {
        return v.to_string();
    };
    let mut s = dt.format("%Y-%m-%d %H:%M:%S").to_string();
    // PostgreSQL keeps microseconds and drops trailing zeros.
    let micros = nanos / 1_000;
    if micros > 0 {
        let frac = format!("{micros:06}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    if tz {
        s.push_str("+00");
    }
    s
}

/// A float as PostgreSQL prints it: shortest round-trip digits, no
/// trailing `.0`, and its names for the special values.
fn float_text(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        }
    } else {
        v.to_string()
    }
}

/// The text of one value, as PostgreSQL would print it.
fn text(arr: &ArrayRef, fmt: &ArrayFormatter, i: usize) -> String {
    match arr.data_type() {
        DataType::Boolean => {
            if arr.as_boolean().value(i) {
                "t".into()
            } else {
                "f".into()
            }
        }
        DataType::Timestamp(unit, tz) => {
            let v = arr
                .as_primitive_opt::<arrow::datatypes::TimestampNanosecondType>()
                .map(|a| a.value(i))
                .or_else(|| {
                    arr.as_primitive_opt::<arrow::datatypes::TimestampMicrosecondType>()
                        .map(|a| a.value(i))
                })
                .or_else(|| {
                    arr.as_primitive_opt::<arrow::datatypes::TimestampMillisecondType>()
                        .map(|a| a.value(i))
                })
                .or_else(|| {
                    arr.as_primitive_opt::<arrow::datatypes::TimestampSecondType>()
                        .map(|a| a.value(i))
                });
            match v {
                Some(v) => ts_text(v, unit, tz.is_some()),
                None => fmt.value(i).to_string(),
            }
        }
        DataType::Float64 => {
            float_text(arr.as_primitive::<arrow::datatypes::Float64Type>().value(i))
        }
        DataType::Float32 => {
            float_text(arr.as_primitive::<arrow::datatypes::Float32Type>().value(i) as f64)
        }
        DataType::Binary => {
            let b = arr.as_binary::<i32>().value(i);
            let mut s = String::with_capacity(2 + b.len() * 2);
            s.push_str("\\x");
            for x in b {
                s.push_str(&format!("{x:02x}"));
            }
            s
        }
        _ => fmt.value(i).to_string(),
    }
}

/// Encodes `batches` as data rows for `fields`.
pub fn rows(batches: &[RecordBatch], fields: Arc<Vec<FieldInfo>>) -> PgWireResult<Vec<DataRow>> {
    let opts = FormatOptions::default();
    let mut out = Vec::new();
    let mut enc = DataRowEncoder::new(fields.clone());
    for b in batches {
        let formatters: Vec<ArrayFormatter> = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts))
            .collect::<Result<_, _>>()
            .map_err(|e| pgwire::error::PgWireError::ApiError(Box::new(e)))?;
        for i in 0..b.num_rows() {
            for (c, col) in b.columns().iter().enumerate() {
                let field = &fields[c];
                if col.is_null(i) {
                    enc.encode_field(&None::<String>)?;
                    continue;
                }
                if field.format() == FieldFormat::Binary {
                    encode_binary(&mut enc, col, i)?;
                } else {
                    enc.encode_field(&Some(text(col, &formatters[c], i)))?;
                }
            }
            out.push(enc.take_row());
        }
    }
    Ok(out)
}

/// A timestamp value as microseconds since the Unix epoch (PostgreSQL's
/// resolution; nanoseconds are cut, as PostgreSQL rounds on input).
fn timestamp_micros(col: &ArrayRef, unit: &TimeUnit, i: usize) -> i64 {
    use arrow::datatypes as t;
    match unit {
        TimeUnit::Nanosecond => col
            .as_primitive::<t::TimestampNanosecondType>()
            .value(i)
            .div_euclid(1_000),
        TimeUnit::Microsecond => col.as_primitive::<t::TimestampMicrosecondType>().value(i),
        TimeUnit::Millisecond => col
            .as_primitive::<t::TimestampMillisecondType>()
            .value(i)
            .saturating_mul(1_000),
        TimeUnit::Second => col
            .as_primitive::<t::TimestampSecondType>()
            .value(i)
            .saturating_mul(1_000_000),
    }
}

fn encode_binary(enc: &mut DataRowEncoder, col: &ArrayRef, i: usize) -> PgWireResult<()> {
    use arrow::datatypes as t;
    match col.data_type() {
        DataType::Int8 => enc.encode_field(&(col.as_primitive::<t::Int8Type>().value(i) as i16)),
        DataType::Int16 => enc.encode_field(&col.as_primitive::<t::Int16Type>().value(i)),
        DataType::UInt8 => enc.encode_field(&(col.as_primitive::<t::UInt8Type>().value(i) as i16)),
        DataType::Int32 => enc.encode_field(&col.as_primitive::<t::Int32Type>().value(i)),
        DataType::UInt16 => {
            enc.encode_field(&(col.as_primitive::<t::UInt16Type>().value(i) as i32))
        }
        DataType::Int64 => enc.encode_field(&col.as_primitive::<t::Int64Type>().value(i)),
        DataType::UInt32 => {
            enc.encode_field(&(col.as_primitive::<t::UInt32Type>().value(i) as i64))
        }
        DataType::Float32 => enc.encode_field(&col.as_primitive::<t::Float32Type>().value(i)),
        DataType::Float64 => enc.encode_field(&col.as_primitive::<t::Float64Type>().value(i)),
        DataType::Boolean => enc.encode_field(&col.as_boolean().value(i)),
        DataType::Binary => enc.encode_field(&col.as_binary::<i32>().value(i).to_vec()),
        DataType::UInt64 => enc.encode_field(&rust_decimal::Decimal::from(
            col.as_primitive::<t::UInt64Type>().value(i),
        )),
        DataType::Decimal128(_, scale) => {
            let v = col.as_primitive::<t::Decimal128Type>().value(i);
            let d = u32::try_from(*scale)
                .ok()
                .and_then(|s| rust_decimal::Decimal::try_from_i128_with_scale(v, s).ok())
                .ok_or_else(|| {
                    pgwire::error::PgWireError::ApiError(
                        format!("numeric value {v} (scale {scale}) is too wide for binary format; ask for text")
                            .into(),
                    )
                })?;
            enc.encode_field(&d)
        }
        DataType::Timestamp(unit, tz) => {
            let micros = timestamp_micros(col, unit, i);
            let dt = chrono::DateTime::from_timestamp_micros(micros).ok_or_else(|| {
                pgwire::error::PgWireError::ApiError(
                    format!("timestamp {micros} µs is out of range").into(),
                )
            })?;
            match tz {
                Some(_) => enc.encode_field(&dt),
                None => enc.encode_field(&dt.naive_utc()),
            }
        }
        DataType::Date32 => {
            let days = col.as_primitive::<t::Date32Type>().value(i);
            let d = chrono::NaiveDate::from_num_days_from_ce_opt(days.saturating_add(719_163))
                .ok_or_else(|| {
                    pgwire::error::PgWireError::ApiError(
                        format!("date {days} is out of range").into(),
                    )
                })?;
            enc.encode_field(&d)
        }
        _ => {
            let opts = FormatOptions::default();
            let f = ArrayFormatter::try_new(col.as_ref(), &opts)
                .map_err(|e| pgwire::error::PgWireError::ApiError(Box::new(e)))?;
            enc.encode_field(&text(col, &f, i))
        }
    }
}
