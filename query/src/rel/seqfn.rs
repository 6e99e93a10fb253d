//! `nextval`, `currval` and `setval` as SQL functions. They act on the
//! relational store outside the statement's transaction, as PostgreSQL's
//! do: a value handed out is never handed out again, whatever becomes of
//! the transaction. `currval` answers the value this session's last
//! `nextval` of the sequence returned.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array};
use arrow::datatypes::DataType;
use datafusion::common::{exec_err, DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::SessionContext;
use parking_lot::Mutex;
use sluice_relstore::{RelError, RelHandle};

/// Values `nextval` returned in one session, by sequence id.
pub type Currvals = Arc<Mutex<HashMap<u64, i64>>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Next,
    Curr,
    Set,
}

struct SeqFn {
    kind: Kind,
    handle: RelHandle,
    db: String,
    currvals: Currvals,
    principal: Option<Arc<sluice_access::Principal>>,
    signature: Signature,
}

impl std::fmt::Debug for SeqFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SeqFn({:?})", self.kind)
    }
}

// One instance is registered per statement; two are the same function
// when they are the same kind for the same session.
impl PartialEq for SeqFn {
    fn eq(&self, o: &Self) -> bool {
        self.kind == o.kind && Arc::ptr_eq(&self.currvals, &o.currvals)
    }
}
impl Eq for SeqFn {}
impl Hash for SeqFn {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.kind.hash(h);
        (Arc::as_ptr(&self.currvals) as usize).hash(h);
    }
}

fn rel(e: RelError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

impl SeqFn {
    /// The id of the sequence a (possibly schema-qualified) name means.
    fn sequence(&self, name: &str) -> Result<u64> {
        let (schema, n) = match name.split_once('.') {
            Some((s, n)) => (
                s.trim_matches('"').to_string(),
                n.trim_matches('"').to_string(),
            ),
            None => (self.db.clone(), name.trim_matches('"').to_string()),
        };
        let n = if name.contains('"') {
            n
        } else {
            n.to_lowercase()
        };
        self.handle
            .catalog()
            .sequence(&schema, &n)
            .map(|s| s.id)
            .ok_or_else(|| rel(RelError::UndefinedTable(format!("sequence {name}"))))
            .and_then(|id| {
                // Taking or setting a value writes; reading currval reads.
                let need = match self.kind {
                    Kind::Curr => sluice_access::Privilege::Read,
                    Kind::Next | Kind::Set => sluice_access::Privilege::Write,
                };
                match &self.principal {
                    Some(p) => p
                        .check(&schema, need)
                        .map(|()| id)
                        .map_err(|e| DataFusionError::External(Box::new(e))),
                    None => Ok(id),
                }
            })
    }

    fn one(&self, name: &str, value: Option<i64>, is_called: bool) -> Result<i64> {
        let id = self.sequence(name)?;
        match self.kind {
            Kind::Next => {
                let v = sluice_relstore::wait_blocking(self.handle.nextval(id)).map_err(rel)?;
                self.currvals.lock().insert(id, v);
                Ok(v)
            }
            Kind::Curr => self
                .currvals
                .lock()
                .get(&id)
                .copied()
                .ok_or_else(|| rel(RelError::CurrvalUndefined(name.to_string()))),
            Kind::Set => {
                let Some(v) = value else {
                    return exec_err!("setval: the value is NULL");
                };
                let inc = self
                    .handle
                    .catalog()
                    .sequences
                    .values()
                    .find(|s| s.id == id)
                    .map_or(1, |s| s.increment);
                let last = if is_called { v } else { v.saturating_sub(inc) };
                sluice_relstore::wait_blocking(self.handle.setval(id, last)).map_err(rel)?;
                if is_called {
                    self.currvals.lock().insert(id, v);
                }
                Ok(v)
            }
        }
    }
}

impl ScalarUDFImpl for SeqFn {
    fn name(&self) -> &str {
        match self.kind {
            Kind::Next => "nextval",
            Kind::Curr => "currval",
            Kind::Set => "setval",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let arrays: Vec<ArrayRef> = args
            .args
            .iter()
            .map(|a| a.to_array(rows))
            .collect::<Result<_>>()?;
        let names = arrow::compute::cast(&arrays[0], &DataType::Utf8)?;
        let names = names.as_string::<i32>();
        let values = match arrays.get(1) {
            Some(a) => Some(arrow::compute::cast(a, &DataType::Int64)?),
            None => None,
        };
        let called = match arrays.get(2) {
            Some(a) => Some(arrow::compute::cast(a, &DataType::Boolean)?),
            None => None,
        };
        let mut out = Vec::with_capacity(rows);
        for i in 0..rows {
            if names.is_null(i) {
                out.push(None);
                continue;
            }
            let value = values.as_ref().and_then(|v| {
                (!v.is_null(i)).then(|| v.as_primitive::<arrow::datatypes::Int64Type>().value(i))
            });
            let is_called = called
                .as_ref()
                .is_none_or(|c| c.is_null(i) || c.as_boolean().value(i));
            out.push(Some(self.one(names.value(i), value, is_called)?));
        }
        Ok(ColumnarValue::Array(Arc::new(Int64Array::from(out))))
    }
}

/// Registers the three functions for one statement of a session.
pub fn register(
    ctx: &SessionContext,
    handle: &RelHandle,
    db: &str,
    currvals: &Currvals,
    principal: &Option<Arc<sluice_access::Principal>>,
) {
    for (kind, sig) in [
        (
            Kind::Next,
            Signature::exact(vec![DataType::Utf8], Volatility::Volatile),
        ),
        (
            Kind::Curr,
            Signature::exact(vec![DataType::Utf8], Volatility::Volatile),
        ),
        (
            Kind::Set,
            Signature::one_of(
                vec![
                    datafusion::logical_expr::TypeSignature::Exact(vec![
                        DataType::Utf8,
                        DataType::Int64,
                    ]),
                    datafusion::logical_expr::TypeSignature::Exact(vec![
                        DataType::Utf8,
                        DataType::Int64,
                        DataType::Boolean,
                    ]),
                ],
                Volatility::Volatile,
            ),
        ),
    ] {
        ctx.register_udf(ScalarUDF::new_from_impl(SeqFn {
            kind,
            handle: handle.clone(),
            principal: principal.clone(),
            db: db.to_string(),
            currvals: currvals.clone(),
            signature: sig,
        }));
    }
}
