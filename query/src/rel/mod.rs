//! SQL over the relational store: the DataFusion tables that read it, the
//! statements that change it (DDL, INSERT, UPDATE, DELETE), and how a
//! statement is bound to its transaction.

pub mod alter;
pub mod convert;
pub mod ddl;
pub mod dml;
pub mod introspect;
pub mod point;
pub mod provider;
pub mod seqfn;
pub mod view;

use std::sync::Arc;

use parking_lot::Mutex;
use sluice_relstore::{RelHandle, Txn};

/// What a statement's relational reads go through: the transaction (its
/// snapshot plus its own writes, and the read set it records).
pub struct RelBinding {
    pub handle: RelHandle,
    pub txn: Arc<Mutex<Txn>>,
    /// The table a DML rewrite targets; its scan carries the hidden primary
    /// key column.
    pub dml_target: Option<u64>,
    /// The session's `currval` values.
    pub currvals: seqfn::Currvals,
    /// Who the statement runs as; None when authentication is off.
    pub principal: Option<Arc<sluice_access::Principal>>,
}

impl RelBinding {
    /// The same transaction, for a DML rewrite of table `table`.
    pub fn targeting(&self, table: u64) -> RelBinding {
        RelBinding {
            handle: self.handle.clone(),
            txn: self.txn.clone(),
            dml_target: Some(table),
            currvals: self.currvals.clone(),
            principal: self.principal.clone(),
        }
    }

    pub fn catalog(&self) -> Arc<sluice_relstore::RelCatalog> {
        self.txn.lock().snap.catalog.clone()
    }
}
