//! Parameters of the extended protocol: `$n` placeholders become literals
//! of the bound values before the statement is planned, so every statement
//! kind (DML and DDL as well as queries) takes parameters the same way.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{visit_expressions_mut, Expr, Statement, Value};
use pgwire::api::portal::Portal;
use pgwire::api::Type;
use sluice_query::QueryError;

fn parse_one(sql: &str) -> Result<Option<Statement>, QueryError> {
    let mut stmts = sluice_query::session::parse(sql)?;
    match stmts.len() {
        0 => Ok(None),
        1 => Ok(stmts.pop()),
        n => Err(QueryError::Syntax(format!(
            "cannot insert multiple commands into a prepared statement ({n} given)"
        ))),
    }
}

fn placeholder_index(e: &Expr) -> Option<usize> {
    match e {
        Expr::Value(v) => match &v.value {
            Value::Placeholder(p) => p.strip_prefix('$')?.parse::<usize>().ok()?.checked_sub(1),
            _ => None,
        },
        _ => None,
    }
}

fn numeric(ty: &Type) -> bool {
    [
        Type::INT2,
        Type::INT4,
        Type::INT8,
        Type::FLOAT4,
        Type::FLOAT8,
        Type::NUMERIC,
        Type::OID,
    ]
    .contains(ty)
}

/// `-12`, `3.5`: digits with an optional sign and one decimal point, and
/// no leading zero that a text value would keep (`007`).
fn plain_number(t: &str) -> bool {
    let digits = t.strip_prefix('-').unwrap_or(t);
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit())
        && (int == "0" || !int.starts_with('0'))
        && !(digits.contains('.') && frac.is_empty())
}

/// The literal for parameter `i` of `portal`.
fn literal(portal: &Portal<String>, i: usize) -> Result<Value, QueryError> {
    let ty = portal
        .statement
        .parameter_types
        .get(i)
        .cloned()
        .flatten()
        .unwrap_or(Type::UNKNOWN);
    let Some(raw) = portal.parameters.get(i).cloned().flatten() else {
        return Ok(Value::Null);
    };
    let bad = |e: pgwire::error::PgWireError| {
        QueryError::InvalidValue(format!("parameter ${}: {e}", i + 1))
    };
    if portal.parameter_format.is_binary(i) {
        let v = match ty {
            Type::INT2 => portal
                .parameter::<i16>(i, &ty)
                .map_err(bad)?
                .map(|v| v.to_string()),
            Type::INT4 => portal
                .parameter::<i32>(i, &ty)
                .map_err(bad)?
                .map(|v| v.to_string()),
            Type::INT8 => portal
                .parameter::<i64>(i, &ty)
                .map_err(bad)?
                .map(|v| v.to_string()),
            Type::FLOAT4 => portal
                .parameter::<f32>(i, &ty)
                .map_err(bad)?
                .map(|v| v.to_string()),
            Type::FLOAT8 => portal
                .parameter::<f64>(i, &ty)
                .map_err(bad)?
                .map(|v| v.to_string()),
            Type::TIMESTAMP | Type::TIMESTAMPTZ => {
                // Microseconds since 2000-01-01 UTC, big-endian.
                let micros = <[u8; 8]>::try_from(raw.as_ref())
                    .map(i64::from_be_bytes)
                    .map_err(|_| {
                        QueryError::InvalidValue(format!("parameter ${}: bad timestamp", i + 1))
                    })?;
                const EPOCH_2000_MICROS: i64 = 946_684_800_000_000;
                let t = micros.saturating_add(EPOCH_2000_MICROS);
                let dt = chrono::DateTime::from_timestamp_micros(t).ok_or_else(|| {
                    QueryError::InvalidValue(format!(
                        "parameter ${}: timestamp out of range",
                        i + 1
                    ))
                })?;
                return Ok(Value::SingleQuotedString(
                    dt.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
                ));
            }
            Type::BOOL => {
                return Ok(portal
                    .parameter::<bool>(i, &ty)
                    .map_err(bad)?
                    .map_or(Value::Null, Value::Boolean))
            }
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
                return Ok(portal
                    .parameter::<String>(i, &ty)
                    .map_err(bad)?
                    .map_or(Value::Null, Value::SingleQuotedString))
            }
            other => {
                return Err(QueryError::Unsupported(format!(
                    "binary parameter ${} of type {other}; send it as text",
                    i + 1
                )))
            }
        };
        return Ok(v.map_or(Value::Null, |s| Value::Number(s, false)));
    }
    let text = String::from_utf8(raw.to_vec())
        .map_err(|_| QueryError::InvalidValue(format!("parameter ${} is not UTF-8", i + 1)))?;
    if numeric(&ty) {
        if text.trim().parse::<f64>().is_err() {
            return Err(QueryError::InvalidValue(format!(
                "parameter ${}: invalid input syntax for type {ty}: \"{text}\"",
                i + 1
            )));
        }
        return Ok(Value::Number(text.trim().to_string(), false));
    }
    if ty == Type::BOOL {
        let b = matches!(
            text.to_ascii_lowercase().as_str(),
            "t" | "true" | "1" | "y" | "yes" | "on"
        );
        return Ok(Value::Boolean(b));
    }
    // An untyped value that reads as a plain number (pgbench sends every
    // parameter so) is a number literal: it meets numbers in arithmetic,
    // and DataFusion compares a number with a text column as text. Anything
    // else untyped, and every textual type, is a string literal that the
    // planner casts to the type of what it meets.
    if ty == Type::UNKNOWN && plain_number(&text) {
        return Ok(Value::Number(text, false));
    }
    Ok(Value::SingleQuotedString(text))
}

fn substitute(
    stmt: &mut Statement,
    mut value: impl FnMut(usize) -> Result<Value, QueryError>,
) -> Result<usize, QueryError> {
    let mut count = 0usize;
    let mut failure = None;
    let _ = visit_expressions_mut(stmt, |e: &mut Expr| {
        if let Some(i) = placeholder_index(e) {
            count = count.max(i + 1);
            match value(i) {
                Ok(v) => *e = Expr::value(v),
                Err(err) => {
                    failure = Some(err);
                    return ControlFlow::Break(());
                }
            }
        }
        ControlFlow::Continue(())
    });
    match failure {
        Some(e) => Err(e),
        None => Ok(count),
    }
}

/// The portal's statement with its parameters in place.
pub fn bind(portal: &Portal<String>) -> Result<Option<Statement>, QueryError> {
    let Some(mut stmt) = parse_one(&portal.statement.statement)? else {
        return Ok(None);
    };
    let n = portal.parameters.len();
    substitute(&mut stmt, |i| {
        if i >= n {
            return Err(QueryError::InvalidValue(format!(
                "there is no parameter ${} ({n} bound)",
                i + 1
            )));
        }
        literal(portal, i)
    })?;
    Ok(Some(stmt))
}

/// The statement with NULL for every parameter (to describe its result),
/// and how many parameters it takes.
pub fn with_nulls(sql: &str) -> Result<(Option<Statement>, usize), QueryError> {
    let Some(mut stmt) = parse_one(sql)? else {
        return Ok((None, 0));
    };
    let n = substitute(&mut stmt, |_| Ok(Value::Null))?;
    Ok((Some(stmt), n))
}

#[cfg(test)]
mod tests {
    use super::plain_number;

    #[test]
    fn only_plain_numbers_lose_their_quotes() {
        for t in ["0", "12", "-3", "4.25", "-0.5"] {
            assert!(plain_number(t), "{t}");
        }
        for t in [
            "", "-", "007", "1e5", "1.", ".5", "12a", " 1", "1,000", "+1",
        ] {
            assert!(!plain_number(t), "{t}");
        }
    }
}
