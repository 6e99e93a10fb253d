//! SQL values as the relational store keeps them, their types, and the
//! order-preserving key encoding.
//!
//! Keys are encoded so that byte order is value order (NULL first), which is
//! what lets one redb table hold every row and index entry and still answer
//! range reads: integers are big-endian with the sign bit flipped, floats are
//! flipped by sign into a total order, strings and bytes escape 0x00 as
//! 0x00 0xFF and end with 0x00 0x00.

use serde::{Deserialize, Serialize};

/// A column's SQL type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SqlType {
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    /// Fixed point: precision and scale, as NUMERIC(p, s).
    Numeric(u8, i8),
    Text,
    Bool,
    /// Microsecond-free: nanoseconds since the epoch, no time zone.
    Timestamp,
    /// Nanoseconds since the epoch, UTC.
    TimestampTz,
    /// Days since the epoch.
    Date,
    Bytea,
    /// Text that must parse as JSON.
    Json,
}

impl SqlType {
    pub fn name(&self) -> String {
        match self {
            SqlType::Int2 => "smallint".into(),
            SqlType::Int4 => "integer".into(),
            SqlType::Int8 => "bigint".into(),
            SqlType::Float4 => "real".into(),
            SqlType::Float8 => "double precision".into(),
            SqlType::Numeric(p, s) => format!("numeric({p},{s})"),
            SqlType::Text => "text".into(),
            SqlType::Bool => "boolean".into(),
            SqlType::Timestamp => "timestamp".into(),
            SqlType::TimestampTz => "timestamptz".into(),
            SqlType::Date => "date".into(),
            SqlType::Bytea => "bytea".into(),
            SqlType::Json => "json".into(),
        }
    }
}

/// One SQL value. Integers of every width are `Int`, fixed point is the
/// unscaled `Numeric`, every time type is `Int`-like in its own variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Numeric(i128),
    Text(String),
    Bytes(Vec<u8>),
    Timestamp(i64),
    Date(i32),
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Null => write!(f, "NULL"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Numeric(n) => write!(f, "{n}"),
            Value::Text(s) => write!(f, "{s}"),
            Value::Bytes(b) => {
                write!(f, "\\x")?;
                b.iter().try_for_each(|x| write!(f, "{x:02x}"))
            }
            Value::Timestamp(t) => write!(f, "{t}"),
            Value::Date(d) => write!(f, "{d}"),
        }
    }
}

/// An unscaled fixed-point value written with its `scale` digits.
pub fn format_numeric(n: i128, scale: i8) -> String {
    if scale <= 0 {
        return n.to_string();
    }
    let digits = n.unsigned_abs().to_string();
    let s = scale as usize;
    let padded = format!("{digits:0>width$}", width = s + 1);
    let (int, frac) = padded.split_at(padded.len() - s);
    format!("{}{int}.{frac}", if n < 0 { "-" } else { "" })
}

/// A row: one value per column of its table, in column order.
pub type Row = Vec<Value>;

fn push_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    for &b in bytes {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0, 0]);
}

/// Appends the order-preserving encoding of `v` to `out`.
pub fn encode_key_part(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => out.push(0),
        Value::Bool(b) => out.extend_from_slice(&[1, *b as u8]),
        Value::Int(i) | Value::Timestamp(i) => {
            out.push(2);
            out.extend_from_slice(&((*i as u64) ^ (1 << 63)).to_be_bytes());
        }
        Value::Date(d) => {
            out.push(2);
            out.extend_from_slice(&((*d as i64 as u64) ^ (1 << 63)).to_be_bytes());
        }
        Value::Float(x) => {
            out.push(3);
            let bits = x.to_bits();
            let ordered = if bits >> 63 == 1 {
                !bits
            } else {
                bits ^ (1 << 63)
            };
            out.extend_from_slice(&ordered.to_be_bytes());
        }
        Value::Numeric(n) => {
            out.push(4);
            out.extend_from_slice(&((*n as u128) ^ (1 << 127)).to_be_bytes());
        }
        Value::Text(s) => {
            out.push(5);
            push_escaped(out, s.as_bytes());
        }
        Value::Bytes(b) => {
            out.push(6);
            push_escaped(out, b);
        }
    }
}

/// The key of a tuple of values (a primary key, an index entry).
pub fn encode_key(values: &[&Value]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * 9);
    for v in values {
        encode_key_part(&mut out, v);
    }
    out
}

/// Serialises a row for storage.
pub fn encode_row(row: &[Value]) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_allocvec(row)
}

pub fn decode_row(bytes: &[u8]) -> Result<Row, postcard::Error> {
    postcard::from_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_order_is_value_order() {
        let ints = [i64::MIN, -5, -1, 0, 1, 7, i64::MAX];
        let keys: Vec<_> = ints
            .iter()
            .map(|i| encode_key(&[&Value::Int(*i)]))
            .collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        let floats = [f64::NEG_INFINITY, -2.5, -0.0, 0.0, 1e-9, 3.0, f64::INFINITY];
        let keys: Vec<_> = floats
            .iter()
            .map(|x| encode_key(&[&Value::Float(*x)]))
            .collect();
        assert!(keys.windows(2).all(|w| w[0] <= w[1]));
        let texts = ["", "a", "a\0", "a\0b", "ab", "b"];
        let keys: Vec<_> = texts
            .iter()
            .map(|s| encode_key(&[&Value::Text(s.to_string()), &Value::Int(0)]))
            .collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
        assert!(encode_key(&[&Value::Null]) < encode_key(&[&Value::Int(i64::MIN)]));
    }

    #[test]
    fn rows_round_trip() {
        let row = vec![
            Value::Int(-3),
            Value::Text("x\0y".into()),
            Value::Null,
            Value::Numeric(-12345),
            Value::Bytes(vec![0, 1, 255]),
        ];
        assert_eq!(decode_row(&encode_row(&row).unwrap()).unwrap(), row);
        assert!(decode_row(&[0xFF, 0xFF, 0xFF]).is_err());
        assert_eq!(format_numeric(550, 2), "5.50");
        assert_eq!(format_numeric(-5, 2), "-0.05");
        assert_eq!(format_numeric(7, 0), "7");
    }
}
