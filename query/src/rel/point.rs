//! Statements about one row of one relational table, named by its whole
//! primary key, run without DataFusion: `SELECT <columns> FROM t WHERE
//! <pk> = <literal>`, `UPDATE t SET c = <literal> | c ± <literal> … WHERE
//! <pk> = <literal>`, and the literal rows of `INSERT … VALUES`. Running
//! such a statement is one key lookup; building and optimising a plan for
//! it costs many times that, and these are what OLTP clients send most.
//!
//! Each shape is recognised strictly: any clause, expression or value this
//! module cannot treat exactly as the general path would (a cast whose
//! result it cannot be sure of, a CHECK, RETURNING) answers None, and the
//! statement takes the general path. Answers, errors, locks and read sets
//! are the same either way.

use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::scalar::ScalarValue;
use datafusion::sql::sqlparser::ast::{
    self as ast, BinaryOperator, Expr, GroupByExpr, Query, Select, SelectFlavor, SelectItem,
    SetExpr, Statement, TableFactor, TableWithJoins, UnaryOperator, Update,
};
use sluice_relstore::schema::TableDef;
use sluice_relstore::value::{Row, SqlType, Value};
use sluice_relstore::{pk_key, RelCatalog};

use super::convert::{literal_value, rows_to_batch, table_schema};
use super::ddl::{norm, resolve};
use super::RelBinding;
use crate::error::QueryError;

/// Counts a statement this module ran.
pub fn counted() {
    crate::metrics::METRICS
        .point_statements
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// A point SELECT, recognised: the table, the row's key, and the output
/// columns (table column position, output name).
pub struct PointSelect {
    pub table: Arc<TableDef>,
    pub key: Vec<u8>,
    pub columns: Vec<(usize, String)>,
}

impl PointSelect {
    pub fn schema(&self) -> SchemaRef {
        let all = table_schema(&self.table, false);
        let fields: Vec<arrow::datatypes::Field> = self
            .columns
            .iter()
            .map(|(c, name)| all.field(*c).clone().with_name(name))
            .collect();
        Arc::new(Schema::new(fields))
    }

    /// Reads the row in `binding`'s transaction and answers its columns.
    pub fn run(&self, binding: &RelBinding) -> Result<(SchemaRef, Vec<RecordBatch>), QueryError> {
        let found = binding.txn.lock().get(&self.table, &self.key)?;
        let rows: Vec<(Vec<u8>, Row)> = found.map(|r| (Vec::new(), r)).into_iter().collect();
        let whole = rows_to_batch(&self.table, &rows, &table_schema(&self.table, false))?;
        let schema = self.schema();
        let columns = self
            .columns
            .iter()
            .map(|(c, _)| whole.column(*c).clone())
            .collect();
        let batch = RecordBatch::try_new(schema.clone(), columns)
            .map_err(|e| QueryError::Execution(e.into()))?;
        Ok((schema, vec![batch]))
    }
}

/// The table a single-table FROM names, and the names its columns may be
/// qualified with.
fn one_table(
    from: &TableWithJoins,
    cat: &RelCatalog,
    db: &str,
) -> Option<(Arc<TableDef>, Vec<String>)> {
    if !from.joins.is_empty() {
        return None;
    }
    let TableFactor::Table {
        name,
        alias,
        args: None,
        with_hints,
        version: None,
        with_ordinality: false,
        partitions,
        json_path: None,
        sample: None,
        index_hints,
    } = &from.relation
    else {
        return None;
    };
    if !with_hints.is_empty() || !partitions.is_empty() || !index_hints.is_empty() {
        return None;
    }
    let (schema, table) = resolve(name, db).ok()?;
    let t = cat.table(&schema, &table)?.clone();
    if t.hidden_rowid || t.primary_key.is_empty() {
        return None;
    }
    let qualifiers = match alias {
        Some(a) if a.columns.is_empty() => vec![norm(&a.name)],
        Some(_) => return None,
        None => vec![t.name.clone()],
    };
    Some((t, qualifiers))
}

/// The visible column an identifier names, if it names one of `t`'s.
fn column_of(e: &Expr, t: &TableDef, qualifiers: &[String]) -> Option<usize> {
    let name = match e {
        Expr::Identifier(i) => norm(i),
        Expr::CompoundIdentifier(parts) => match parts.as_slice() {
            [q, c] if qualifiers.contains(&norm(q)) => norm(c),
            _ => return None,
        },
        Expr::Nested(inner) => return column_of(inner, t, qualifiers),
        _ => return None,
    };
    t.column(&name).filter(|&c| c < t.visible_columns().len())
}

/// A literal as DataFusion types it: integers as Int64, decimals as
/// Float64, strings as Utf8; `now()` as nanoseconds in UTC.
fn literal(e: &Expr, now_ns: i64) -> Option<ScalarValue> {
    match e {
        Expr::Value(v) => match &v.value {
            ast::Value::Number(n, false) => number(n),
            ast::Value::SingleQuotedString(s) => Some(ScalarValue::Utf8(Some(s.clone()))),
            ast::Value::Boolean(b) => Some(ScalarValue::Boolean(Some(*b))),
            ast::Value::Null => Some(ScalarValue::Null),
            _ => None,
        },
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => match expr.as_ref() {
            Expr::Value(v) => match &v.value {
                ast::Value::Number(n, false) if !n.starts_with('-') => number(&format!("-{n}")),
                _ => None,
            },
            _ => None,
        },
        Expr::Nested(inner) => literal(inner, now_ns),
        Expr::Function(f) if is_now(f) => Some(ScalarValue::TimestampNanosecond(
            Some(now_ns),
            Some("+00:00".into()),
        )),
        _ => None,
    }
}

fn number(n: &str) -> Option<ScalarValue> {
    if let Ok(i) = n.parse::<i64>() {
        return Some(ScalarValue::Int64(Some(i)));
    }
    let digits = n.strip_prefix('-').unwrap_or(n);
    let (int, frac) = digits.split_once('.')?;
    let plain = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || frac.is_empty() || !plain(int) || !plain(frac) {
        return None;
    }
    n.parse::<f64>().ok().map(|f| ScalarValue::Float64(Some(f)))
}

fn is_now(f: &ast::Function) -> bool {
    let name = f.name.to_string().to_lowercase();
    let no_args = match &f.args {
        ast::FunctionArguments::None => name == "current_timestamp",
        ast::FunctionArguments::List(l) => {
            l.args.is_empty() && l.clauses.is_empty() && l.duplicate_treatment.is_none()
        }
        ast::FunctionArguments::Subquery(_) => false,
    };
    no_args
        && matches!(name.as_str(), "now" | "current_timestamp")
        && f.filter.is_none()
        && f.over.is_none()
        && f.within_group.is_empty()
        && f.null_treatment.is_none()
        && matches!(f.parameters, ast::FunctionArguments::None)
}

/// The value of column `c` that an equality with `lit` selects, for key
/// columns whose comparison this module can be sure of: integers with an
/// integer literal, text with a string.
fn key_value(lit: &ScalarValue, ty: SqlType) -> Option<Value> {
    match (lit, ty) {
        (ScalarValue::Int64(Some(i)), SqlType::Int2) => {
            i16::try_from(*i).ok().map(|_| Value::Int(*i))
        }
        (ScalarValue::Int64(Some(i)), SqlType::Int4) => {
            i32::try_from(*i).ok().map(|_| Value::Int(*i))
        }
        (ScalarValue::Int64(Some(i)), SqlType::Int8) => Some(Value::Int(*i)),
        (ScalarValue::Utf8(Some(s)), SqlType::Text) => Some(Value::Text(s.clone())),
        _ => None,
    }
}

/// The encoded primary key a WHERE clause pins down: a conjunction of
/// `column = literal` naming every key column once, and nothing else.
fn pinned_key(where_: &Expr, t: &TableDef, qualifiers: &[String]) -> Option<Vec<u8>> {
    let mut terms = Vec::new();
    conjuncts(where_, &mut terms);
    if terms.len() != t.primary_key.len() {
        return None;
    }
    let mut row = vec![Value::Null; t.columns.len()];
    let mut seen = vec![false; t.columns.len()];
    for term in terms {
        let Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } = term
        else {
            return None;
        };
        let (c, lit) = match (
            column_of(left, t, qualifiers),
            column_of(right, t, qualifiers),
        ) {
            (Some(c), None) => (c, literal(right, 0)?),
            (None, Some(c)) => (c, literal(left, 0)?),
            _ => return None,
        };
        if !t.primary_key.contains(&c) || std::mem::replace(&mut seen[c], true) {
            return None;
        }
        row[c] = key_value(&lit, t.columns[c].ty)?;
    }
    Some(pk_key(t, &row))
}

fn conjuncts<'a>(e: &'a Expr, out: &mut Vec<&'a Expr>) {
    match e {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            conjuncts(left, out);
            conjuncts(right, out);
        }
        Expr::Nested(inner) => conjuncts(inner, out),
        other => out.push(other),
    }
}

/// Recognises a point SELECT on a relational table of `cat`.
pub fn select(stmt: &Statement, cat: &RelCatalog, db: &str) -> Option<PointSelect> {
    let Statement::Query(q) = stmt else {
        return None;
    };
    let Query {
        with: None,
        body,
        order_by: None,
        limit_clause: None,
        fetch: None,
        locks,
        for_clause: None,
        settings: None,
        format_clause: None,
        pipe_operators,
    } = q.as_ref()
    else {
        return None;
    };
    if !locks.is_empty() || !pipe_operators.is_empty() {
        return None;
    }
    let SetExpr::Select(sel) = body.as_ref() else {
        return None;
    };
    let Select {
        select_token: _,
        optimizer_hints,
        distinct: None,
        select_modifiers: None,
        top: None,
        top_before_distinct: _,
        projection,
        exclude: None,
        into: None,
        from,
        lateral_views,
        prewhere: None,
        selection: Some(selection),
        connect_by,
        group_by: GroupByExpr::Expressions(group, group_modifiers),
        cluster_by,
        distribute_by,
        sort_by,
        having: None,
        named_window,
        qualify: None,
        window_before_qualify: _,
        value_table_mode: None,
        flavor: SelectFlavor::Standard,
    } = sel.as_ref()
    else {
        return None;
    };
    let empty = optimizer_hints.is_empty()
        && lateral_views.is_empty()
        && connect_by.is_empty()
        && group.is_empty()
        && group_modifiers.is_empty()
        && cluster_by.is_empty()
        && distribute_by.is_empty()
        && sort_by.is_empty()
        && named_window.is_empty();
    let [from] = from.as_slice() else {
        return None;
    };
    if !empty {
        return None;
    }
    let (t, qualifiers) = one_table(from, cat, db)?;
    let key = pinned_key(selection, &t, &qualifiers)?;
    let visible = t.visible_columns();
    let mut columns = Vec::new();
    for item in projection {
        match item {
            SelectItem::Wildcard(_) if item.to_string() == "*" => {
                columns.extend(visible.iter().enumerate().map(|(i, c)| (i, c.name.clone())));
            }
            SelectItem::UnnamedExpr(e) => {
                let c = column_of(e, &t, &qualifiers)?;
                columns.push((c, visible[c].name.clone()));
            }
            SelectItem::ExprWithAlias { expr, alias } => {
                columns.push((column_of(expr, &t, &qualifiers)?, norm(alias)));
            }
            _ => return None,
        }
    }
    // DataFusion refuses two outputs of one name; so does this path, by
    // leaving such a statement to it.
    let mut names: Vec<&str> = columns.iter().map(|(_, n)| n.as_str()).collect();
    names.sort_unstable();
    if columns.is_empty() || names.windows(2).any(|w| w[0] == w[1]) {
        return None;
    }
    Some(PointSelect {
        table: t,
        key,
        columns,
    })
}

/// One assignment of a point UPDATE: the column, and how its new value is
/// made from the old row.
enum NewValue {
    Literal(Value),
    /// The column's old value plus (or minus) a number.
    Offset {
        add: bool,
        by: ScalarValue,
    },
}

/// A point UPDATE, recognised.
pub struct PointUpdate {
    pub table: Arc<TableDef>,
    pub key: Vec<u8>,
    assignments: Vec<(usize, NewValue)>,
}

/// Recognises a point UPDATE of a relational table without CHECK
/// constraints, RETURNING or FROM, that assigns no key column.
pub fn update(up: &Update, cat: &RelCatalog, db: &str) -> Option<PointUpdate> {
    let Update {
        update_token: _,
        optimizer_hints,
        table,
        assignments,
        from: None,
        selection: Some(selection),
        returning: None,
        output: None,
        or: None,
        order_by,
        limit: None,
    } = up
    else {
        return None;
    };
    if !optimizer_hints.is_empty() || !order_by.is_empty() {
        return None;
    }
    let (t, qualifiers) = one_table(table, cat, db)?;
    if !t.checks.is_empty() {
        return None;
    }
    let key = pinned_key(selection, &t, &qualifiers)?;
    let mut out: Vec<(usize, NewValue)> = Vec::new();
    for a in assignments {
        let ast::AssignmentTarget::ColumnName(n) = &a.target else {
            return None;
        };
        let c = match n.0.as_slice() {
            [only] => t.column(&norm(only.as_ident()?))?,
            _ => return None,
        };
        if c >= t.visible_columns().len()
            || t.primary_key.contains(&c)
            || out.iter().any(|(d, _)| *d == c)
        {
            return None;
        }
        let ty = t.columns[c].ty;
        // Whatever can be decided before the row is read is decided here,
        // so that a statement left to the general path has not touched its
        // transaction.
        let v = match &a.value {
            Expr::BinaryOp { left, op, right }
                if matches!(op, BinaryOperator::Plus | BinaryOperator::Minus)
                    && column_of(left, &t, &qualifiers) == Some(c) =>
            {
                let by = literal(right, 0)?;
                let fits = matches!(
                    (&by, ty),
                    (ScalarValue::Null, _)
                        | (
                            ScalarValue::Int64(_),
                            SqlType::Int2 | SqlType::Int4 | SqlType::Int8 | SqlType::Float8
                        )
                        | (ScalarValue::Float64(_), SqlType::Float8)
                );
                if !fits {
                    return None;
                }
                NewValue::Offset {
                    add: *op == BinaryOperator::Plus,
                    by,
                }
            }
            e => NewValue::Literal(literal_value(&literal(e, now_ns())?, ty)?),
        };
        out.push((c, v));
    }
    Some(PointUpdate {
        table: t,
        key,
        assignments: out,
    })
}

impl PointUpdate {
    /// The row after the assignments, or None when a sum overflows its
    /// type (the general path then reports it as it does).
    pub fn apply(&self, old: &Row) -> Option<Row> {
        let mut row = old.clone();
        for (c, v) in &self.assignments {
            let ty = self.table.columns[*c].ty;
            row[*c] = match v {
                NewValue::Literal(v) => v.clone(),
                NewValue::Offset { add, by } => offset(&old[*c], *add, by, ty)?,
            };
        }
        Some(row)
    }
}

/// `old ± by` in a column of type `ty`: integers in 64 bits, checked;
/// floats in 64 bits. Other mixes go to the general path.
fn offset(old: &Value, add: bool, by: &ScalarValue, ty: SqlType) -> Option<Value> {
    let sum = match (old, by, ty) {
        (Value::Null, _, _) => return Some(Value::Null),
        (_, ScalarValue::Null, _) => return Some(Value::Null),
        (
            Value::Int(a),
            ScalarValue::Int64(Some(b)),
            SqlType::Int2 | SqlType::Int4 | SqlType::Int8,
        ) => ScalarValue::Int64(Some(if add {
            a.checked_add(*b)?
        } else {
            a.checked_sub(*b)?
        })),
        (Value::Float(a), ScalarValue::Int64(Some(b)), SqlType::Float8) => {
            ScalarValue::Float64(Some(if add { a + *b as f64 } else { a - *b as f64 }))
        }
        (Value::Float(a), ScalarValue::Float64(Some(b)), SqlType::Float8) => {
            ScalarValue::Float64(Some(if add { a + b } else { a - b }))
        }
        _ => return None,
    };
    literal_value(&sum, ty)
}

/// The rows of `INSERT … VALUES` when every value is a literal, typed per
/// target column as the general path types them; None otherwise.
pub fn literal_rows(source: &Query, t: &TableDef, targets: &[usize]) -> Option<Vec<Vec<Value>>> {
    let Query {
        with: None,
        body,
        order_by: None,
        limit_clause: None,
        fetch: None,
        locks,
        for_clause: None,
        settings: None,
        format_clause: None,
        pipe_operators,
    } = source
    else {
        return None;
    };
    if !locks.is_empty() || !pipe_operators.is_empty() {
        return None;
    }
    let SetExpr::Values(values) = body.as_ref() else {
        return None;
    };
    let now = now_ns();
    let mut rows = Vec::with_capacity(values.rows.len());
    // DataFusion gives each VALUES column one type across its rows; a
    // column whose literals differ in kind is left to it.
    let mut kinds: Vec<Option<std::mem::Discriminant<ScalarValue>>> = vec![None; targets.len()];
    for r in &values.rows {
        if r.len() != targets.len() {
            return None;
        }
        let mut out = Vec::with_capacity(r.len());
        for (k, e) in r.iter().enumerate() {
            let lit = literal(e, now)?;
            if !lit.is_null() {
                let kind = std::mem::discriminant(&lit);
                if *kinds[k].get_or_insert(kind) != kind {
                    return None;
                }
            }
            out.push(literal_value(&lit, t.columns[targets[k]].ty)?);
        }
        rows.push(out);
    }
    Some(rows)
}

fn now_ns() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}
