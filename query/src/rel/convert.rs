//! Relational values to Arrow and back, and SQL type names to types.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef};
use arrow::compute::{cast_with_options, CastOptions};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use datafusion::sql::sqlparser::ast::{DataType as SqlDataType, ExactNumberInfo};
use sluice_relstore::schema::TableDef;
use sluice_relstore::value::{Row, SqlType, Value};

use crate::error::QueryError;

pub fn arrow_type(t: SqlType) -> DataType {
    match t {
        SqlType::Int2 => DataType::Int16,
        SqlType::Int4 => DataType::Int32,
        SqlType::Int8 => DataType::Int64,
        SqlType::Float4 => DataType::Float32,
        SqlType::Float8 => DataType::Float64,
        SqlType::Numeric(p, s) => DataType::Decimal128(p, s),
        SqlType::Text | SqlType::Json => DataType::Utf8,
        SqlType::Bool => DataType::Boolean,
        SqlType::Timestamp => DataType::Timestamp(TimeUnit::Nanosecond, None),
        SqlType::TimestampTz => DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
        SqlType::Date => DataType::Date32,
        SqlType::Bytea => DataType::Binary,
    }
}

/// The SQL type a column declaration names.
pub fn sql_type(t: &SqlDataType) -> Result<SqlType, QueryError> {
    use SqlDataType as D;
    Ok(match t {
        D::SmallInt(_) | D::Int2(_) => SqlType::Int2,
        D::Int(_) | D::Integer(_) | D::Int4(_) | D::MediumInt(_) => SqlType::Int4,
        D::BigInt(_) | D::Int8(_) => SqlType::Int8,
        D::Real | D::Float4 => SqlType::Float4,
        D::Float(_) | D::Double(_) | D::DoublePrecision | D::Float8 | D::Float64 => SqlType::Float8,
        D::Numeric(info) | D::Decimal(info) | D::Dec(info) => match info {
            ExactNumberInfo::None => SqlType::Numeric(38, 10),
            ExactNumberInfo::Precision(p) => SqlType::Numeric((*p).min(38) as u8, 0),
            ExactNumberInfo::PrecisionAndScale(p, s) => {
                if *p == 0 || *p > 38 || *s < 0 || *s as u64 > *p {
                    return Err(QueryError::Unsupported(format!(
                        "type {t}: precision must be 1 to 38 and scale 0 to the precision"
                    )));
                }
                SqlType::Numeric(*p as u8, *s as i8)
            }
        },
        D::Text
        | D::String(_)
        | D::Varchar(_)
        | D::CharVarying(_)
        | D::CharacterVarying(_)
        | D::Char(_)
        | D::Character(_)
        | D::Uuid => SqlType::Text,
        D::Bool | D::Boolean => SqlType::Bool,
        D::Timestamp(_, tz) => match tz {
            datafusion::sql::sqlparser::ast::TimezoneInfo::WithTimeZone
            | datafusion::sql::sqlparser::ast::TimezoneInfo::Tz => SqlType::TimestampTz,
            _ => SqlType::Timestamp,
        },
        D::Date => SqlType::Date,
        D::Bytea | D::Blob(_) | D::Binary(_) | D::Varbinary(_) => SqlType::Bytea,
        D::JSON | D::JSONB => SqlType::Json,
        D::Custom(name, _) => match name.to_string().to_ascii_lowercase().as_str() {
            "serial" | "serial4" => SqlType::Int4,
            "bigserial" | "serial8" => SqlType::Int8,
            "timestamptz" => SqlType::TimestampTz,
            "float" => SqlType::Float8,
            _ => return Err(QueryError::Unsupported(format!("column type {t}"))),
        },
        other => return Err(QueryError::Unsupported(format!("column type {other}"))),
    })
}

/// The Arrow schema of a table; `with_pk` adds the encoded primary key as
/// a last column, which the UPDATE and DELETE rewrites select.
pub fn table_schema(t: &TableDef, with_pk: bool) -> SchemaRef {
    let mut fields: Vec<Field> = t
        .visible_columns()
        .iter()
        .map(|c| Field::new(&c.name, arrow_type(c.ty), true))
        .collect();
    if with_pk {
        fields.push(Field::new(PK_COLUMN, DataType::Binary, false));
    }
    Arc::new(Schema::new(fields))
}

/// The hidden column holding a row's encoded primary key in DML plans.
pub const PK_COLUMN: &str = "__sluice_pk";

fn scalar(v: &Value, ty: SqlType) -> ScalarValue {
    match (v, ty) {
        (Value::Null, t) => ScalarValue::try_from(&arrow_type(t)).unwrap_or(ScalarValue::Null),
        (Value::Int(i), SqlType::Int2) => ScalarValue::Int16(Some(*i as i16)),
        (Value::Int(i), SqlType::Int4) => ScalarValue::Int32(Some(*i as i32)),
        (Value::Int(i), _) => ScalarValue::Int64(Some(*i)),
        (Value::Float(x), SqlType::Float4) => ScalarValue::Float32(Some(*x as f32)),
        (Value::Float(x), _) => ScalarValue::Float64(Some(*x)),
        (Value::Numeric(n), SqlType::Numeric(p, s)) => ScalarValue::Decimal128(Some(*n), p, s),
        (Value::Numeric(n), _) => ScalarValue::Decimal128(Some(*n), 38, 0),
        (Value::Text(s), _) => ScalarValue::Utf8(Some(s.clone())),
        (Value::Bool(b), _) => ScalarValue::Boolean(Some(*b)),
        (Value::Timestamp(t), SqlType::TimestampTz) => {
            ScalarValue::TimestampNanosecond(Some(*t), Some("UTC".into()))
        }
        (Value::Timestamp(t), _) => ScalarValue::TimestampNanosecond(Some(*t), None),
        (Value::Date(d), _) => ScalarValue::Date32(Some(*d)),
        (Value::Bytes(b), _) => ScalarValue::Binary(Some(b.clone())),
    }
}

/// Rows (full stored rows, in table column order) as a batch of `schema`.
pub fn rows_to_batch(
    t: &TableDef,
    rows: &[(Vec<u8>, Row)],
    schema: &SchemaRef,
) -> Result<RecordBatch, QueryError> {
    let mut cols: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for f in schema.fields() {
        if f.name() == PK_COLUMN {
            let arr = arrow::array::BinaryArray::from_iter_values(rows.iter().map(|(k, _)| k));
            cols.push(Arc::new(arr));
            continue;
        }
        let c = t.column(f.name()).ok_or_else(|| {
            QueryError::Unsupported(format!("column {} is not in {}", f.name(), t.name))
        })?;
        let ty = t.columns[c].ty;
        let arr = if rows.is_empty() {
            arrow::array::new_empty_array(f.data_type())
        } else {
            ScalarValue::iter_to_array(rows.iter().map(|(_, r)| scalar(&r[c], ty)))
                .map_err(QueryError::Execution)?
        };
        cols.push(arr);
    }
    let opts = arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(rows.len()));
    RecordBatch::try_new_with_options(schema.clone(), cols, &opts)
        .map_err(|e| QueryError::Execution(e.into()))
}

/// One value of a column cast to `ty` (already cast: `arr` has its type).
fn value_at(arr: &dyn Array, i: usize, ty: SqlType) -> Result<Value, QueryError> {
    if arr.is_null(i) {
        return Ok(Value::Null);
    }
    let s = ScalarValue::try_from_array(arr, i).map_err(QueryError::Execution)?;
    Ok(match (s, ty) {
        (ScalarValue::Int16(Some(v)), _) => Value::Int(v as i64),
        (ScalarValue::Int32(Some(v)), _) => Value::Int(v as i64),
        (ScalarValue::Int64(Some(v)), _) => Value::Int(v),
        (ScalarValue::Float32(Some(v)), _) => Value::Float(v as f64),
        (ScalarValue::Float64(Some(v)), _) => Value::Float(v),
        (ScalarValue::Decimal128(Some(v), _, _), _) => Value::Numeric(v),
        (ScalarValue::Utf8(Some(v)), SqlType::Json) => {
            if let Err(e) = serde_json::from_str::<serde_json::Value>(&v) {
                return Err(QueryError::InvalidValue(format!(
                    "invalid input syntax for type json: {e}"
                )));
            }
            Value::Text(v)
        }
        (ScalarValue::Utf8(Some(v)), _) => Value::Text(v),
        (ScalarValue::Boolean(Some(v)), _) => Value::Bool(v),
        (ScalarValue::TimestampNanosecond(Some(v), _), _) => Value::Timestamp(v),
        (ScalarValue::Date32(Some(v)), _) => Value::Date(v),
        (ScalarValue::Binary(Some(v)), _) => Value::Bytes(v),
        (other, _) => {
            return Err(QueryError::InvalidValue(format!(
                "cannot store {other:?} as {}",
                ty.name()
            )))
        }
    })
}

/// Casts a column to a table column's type, with SQL's strictness: a value
/// that does not fit is an error, not a NULL.
pub fn cast_column(arr: &ArrayRef, ty: SqlType, column: &str) -> Result<ArrayRef, QueryError> {
    let target = arrow_type(ty);
    if arr.data_type() == &target {
        return Ok(arr.clone());
    }
    let opts = CastOptions {
        safe: false,
        ..Default::default()
    };
    cast_with_options(arr, &target, &opts).map_err(|e| {
        QueryError::InvalidValue(format!(
            "column \"{column}\" is of type {} but the value is {}: {e}",
            ty.name(),
            arr.data_type()
        ))
    })
}

/// The values of column `idx` of `batch`, cast to `ty`.
pub fn column_values(
    batch: &RecordBatch,
    idx: usize,
    ty: SqlType,
    column: &str,
) -> Result<Vec<Value>, QueryError> {
    let arr = cast_column(batch.column(idx), ty, column)?;
    (0..batch.num_rows())
        .map(|i| value_at(arr.as_ref(), i, ty))
        .collect()
}

/// The encoded primary keys of a `PK_COLUMN` column.
pub fn pk_values(batch: &RecordBatch, idx: usize) -> Result<Vec<Vec<u8>>, QueryError> {
    let arr = batch
        .column(idx)
        .as_any()
        .downcast_ref::<arrow::array::BinaryArray>()
        .ok_or_else(|| QueryError::Unsupported("primary key column has the wrong type".into()))?;
    Ok((0..arr.len()).map(|i| arr.value(i).to_vec()).collect())
}

/// A literal from a filter, as a value of a column of type `ty`.
pub fn literal_value(v: &ScalarValue, ty: SqlType) -> Option<Value> {
    let arr = v.to_array().ok()?;
    let cast = cast_column(&arr, ty, "").ok()?;
    value_at(cast.as_ref(), 0, ty).ok()
}
