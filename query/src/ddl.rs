//! Storage settings in SQL:
//!
//! ```sql
//! ALTER TABLE cpu SET (dedup = 'merge', retention = '30d');
//! ALTER SCHEMA plant SET OPTIONS (retention = '7d');      -- a database's default
//! ALTER TABLE cpu SET (retention = 'none');       -- back to the database's
//! ```
//!
//! `dedup` is `override` (last write wins), `merge` (last non-null per field)
//! or `discard` (first write wins); `retention` is a duration (`90s`, `15m`,
//! `12h`, `30d`, `2w`) or `none`. These are the only statements besides
//! queries that the SQL endpoint accepts.

use datafusion::sql::sqlparser::ast::{
    AlterSchemaOperation, AlterTableOperation, Expr, ObjectName, SqlOption, Statement, Value,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use sluice_engine::catalog::OptionsChange;
use sluice_engine::chunk::DedupPolicy;
use sluice_engine::EngineHandle;

use crate::error::QueryError;

/// A settings statement, recognised and validated.
#[derive(Debug, PartialEq)]
pub struct SetOptions {
    pub database: String,
    pub table: Option<String>,
    pub change: OptionsChange,
}

fn names(n: &ObjectName) -> Vec<String> {
    n.0.iter()
        .filter_map(|p| p.as_ident().map(|i| i.value.clone()))
        .collect()
}

fn text(e: &Expr) -> Option<String> {
    match e {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => Some(s.clone()),
            Value::Number(n, _) => Some(n.clone()),
            _ => None,
        },
        Expr::Identifier(i) => Some(i.value.clone()),
        _ => None,
    }
}

/// Parses `30d`, `12h`, `15m`, `90s`, `2w` into ns; `none`/`0` clear it (0).
pub fn parse_retention(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("none") || s.eq_ignore_ascii_case("infinite") || s == "0" {
        return Ok(0);
    }
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: i64 = num
        .parse()
        .map_err(|_| format!("retention {s:?}: expected a number and a unit, e.g. 30d"))?;
    let mult: i64 = match unit {
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        "d" => 86_400_000_000_000,
        "w" => 7 * 86_400_000_000_000,
        _ => return Err(format!("retention {s:?}: unit must be s, m, h, d or w")),
    };
    n.checked_mul(mult)
        .filter(|v| *v > 0)
        .ok_or_else(|| format!("retention {s:?} is out of range"))
}

fn options(opts: &[SqlOption], table: bool) -> Result<OptionsChange, String> {
    let mut change = OptionsChange::default();
    for o in opts {
        let SqlOption::KeyValue { key, value } = o else {
            return Err(format!("unsupported option {o}: use key = 'value'"));
        };
        let v = text(value).ok_or_else(|| format!("option {key}: value must be a string"))?;
        match key.value.to_ascii_lowercase().as_str() {
            "dedup" if table => {
                change.dedup = Some(match v.to_ascii_lowercase().as_str() {
                    "override" => DedupPolicy::Override,
                    "merge" => DedupPolicy::Merge,
                    "discard" => DedupPolicy::Discard,
                    _ => return Err(format!("dedup {v:?}: use override, merge or discard")),
                })
            }
            "retention" => change.retention_ns = Some(parse_retention(&v)?),
            k => {
                return Err(format!(
                    "unknown option {k:?}: {} accepts {}",
                    if table { "a table" } else { "a database" },
                    if table {
                        "dedup, retention"
                    } else {
                        "retention"
                    }
                ))
            }
        }
    }
    Ok(change)
}

/// Recognises a settings statement. `None`: not one (plan it as a query).
pub fn parse(default_db: Option<&str>, sql: &str) -> Option<Result<SetOptions, String>> {
    let stmts = Parser::parse_sql(&GenericDialect {}, sql).ok()?;
    let [stmt] = stmts.as_slice() else {
        return None;
    };
    let resolve = |parts: Vec<String>| -> Result<(String, Option<String>), String> {
        match parts.as_slice() {
            [t] => default_db
                .map(|d| (d.to_string(), Some(t.clone())))
                .ok_or_else(|| "no database: pass db= or write ALTER TABLE db.table".to_string()),
            [d, t] => Ok((d.clone(), Some(t.clone()))),
            _ => Err("table name must be table or database.table".into()),
        }
    };
    match stmt {
        Statement::AlterTable(a) => {
            let [AlterTableOperation::SetOptionsParens { options: opts }] = a.operations.as_slice()
            else {
                return Some(Err(
                    "only ALTER TABLE … SET (dedup = …, retention = …) is supported".into(),
                ));
            };
            Some(resolve(names(&a.name)).and_then(|(database, table)| {
                Ok(SetOptions {
                    database,
                    table,
                    change: options(opts, true)?,
                })
            }))
        }
        Statement::AlterSchema(a) => {
            let [AlterSchemaOperation::SetOptionsParens { options: opts }] =
                a.operations.as_slice()
            else {
                return Some(Err(
                    "only ALTER SCHEMA … SET OPTIONS (retention = …) is supported".into(),
                ));
            };
            let n = names(&a.name);
            let [db] = n.as_slice() else {
                return Some(Err("schema name must be a database name".into()));
            };
            Some(options(opts, false).map(|change| SetOptions {
                database: db.clone(),
                table: None,
                change,
            }))
        }
        _ => None,
    }
}

pub fn apply(engine: &EngineHandle, s: &SetOptions) -> Result<(), QueryError> {
    if let Some(t) = &s.table {
        if engine.catalog().snapshot().table(&s.database, t).is_none() {
            return Err(QueryError::UnknownTable(format!("{}.{t}", s.database)));
        }
    } else if !engine.catalog().database_exists(&s.database) {
        return Err(QueryError::UnknownDatabase(s.database.clone()));
    }
    engine
        .catalog()
        .set_options(&s.database, s.table.as_deref(), s.change)
        .map_err(QueryError::Engine)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_statements() {
        let s = parse(
            Some("db"),
            "ALTER TABLE cpu SET (dedup = 'merge', retention = '30d')",
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.database, "db");
        assert_eq!(s.table.as_deref(), Some("cpu"));
        assert_eq!(s.change.dedup, Some(DedupPolicy::Merge));
        assert_eq!(s.change.retention_ns, Some(30 * 86_400_000_000_000));
        let s = parse(None, "ALTER SCHEMA plant SET OPTIONS (retention = 'none')")
            .unwrap()
            .unwrap();
        assert_eq!((s.database.as_str(), s.table), ("plant", None));
        assert_eq!(s.change.retention_ns, Some(0));
        assert!(parse(None, "ALTER TABLE cpu SET (dedup = 'x')")
            .unwrap()
            .is_err());
        assert!(
            parse(Some("d"), "ALTER TABLE cpu SET (dedup = 'sometimes')")
                .unwrap()
                .is_err()
        );
        assert!(
            parse(Some("d"), "ALTER SCHEMA d SET OPTIONS (dedup = 'merge')")
                .unwrap()
                .is_err()
        );
        assert!(parse(Some("d"), "SELECT 1").is_none());
        assert_eq!(parse_retention("2w"), Ok(14 * 86_400_000_000_000));
        assert!(parse_retention("5y").is_err());
        assert!(parse_retention("99999999999999d").is_err());
    }
}
