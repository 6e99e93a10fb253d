//! Row locks for UPDATE and DELETE, held by a transaction until its commit
//! is applied or it ends.
//!
//! Commits stay optimistic (validated at apply); the locks only keep
//! writers of the same row in line. Without them, of N transactions that
//! update one hot row at once N-1 fail at commit and retry from the start.
//! With them, a writer waits for the holder, then moves its snapshot
//! forward to the state the holder left (`Txn::refresh`, allowed only if
//! nothing else it read has changed), so it commits instead of failing.
//! A wait that would close a cycle is a deadlock and fails at once.

use std::collections::HashMap;
use std::sync::Arc;

use futures::channel::oneshot;
use parking_lot::Mutex;

use crate::error::{RelError, Result};

pub(crate) type RowKey = (u64, Vec<u8>);

struct Holder {
    owner: u64,
    waiters: Vec<oneshot::Sender<()>>,
}

#[derive(Default)]
struct Table {
    rows: HashMap<RowKey, Holder>,
    /// Transaction → the transaction whose lock it waits for.
    waits_for: HashMap<u64, u64>,
}

#[derive(Default)]
pub struct LockTable {
    inner: Mutex<Table>,
}

/// The locks one transaction holds; dropping it releases them.
#[derive(Default)]
pub struct LockGuard {
    table: Option<Arc<LockTable>>,
    pub(crate) txn: u64,
    held: Vec<RowKey>,
}

impl LockGuard {
    pub(crate) fn new(table: Arc<LockTable>, txn: u64) -> LockGuard {
        LockGuard {
            table: Some(table),
            txn,
            held: Vec::new(),
        }
    }

    /// Hands the locks to a new guard (held until a commit is applied).
    pub(crate) fn take(&mut self) -> LockGuard {
        LockGuard {
            table: self.table.clone(),
            txn: self.txn,
            held: std::mem::take(&mut self.held),
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let Some(t) = &self.table else { return };
        if self.held.is_empty() {
            return;
        }
        let mut inner = t.inner.lock();
        for k in self.held.drain(..) {
            if let Some(h) = inner.rows.remove(&k) {
                for w in h.waiters {
                    let _ = w.send(());
                }
            }
        }
    }
}

impl LockTable {
    /// Takes the lock on `key` for `txn`, waiting while another transaction
    /// holds it. Returns whether it waited.
    pub(crate) async fn acquire(&self, txn: &Mutex<crate::Txn>, key: RowKey) -> Result<bool> {
        let mut waited = false;
        loop {
            let (rx, me) = {
                let mut t = txn.lock();
                // Only a transaction from `RelHandle::begin` can give its
                // locks back; any other would hold them for ever.
                if t.locks.table.is_none() {
                    return Err(RelError::ReadOnly("lock rows"));
                }
                let me = t.locks.txn;
                let mut inner = self.inner.lock();
                let owner = match inner.rows.get(&key) {
                    None => {
                        inner.rows.insert(
                            key.clone(),
                            Holder {
                                owner: me,
                                waiters: Vec::new(),
                            },
                        );
                        inner.waits_for.remove(&me);
                        t.locks.held.push(key);
                        return Ok(waited);
                    }
                    Some(h) if h.owner == me => {
                        inner.waits_for.remove(&me);
                        return Ok(waited);
                    }
                    Some(h) => h.owner,
                };
                // Follow who waits for whom from the owner; coming back to
                // this transaction closes a cycle.
                let mut at = owner;
                let mut steps = 0;
                while let Some(&next) = inner.waits_for.get(&at) {
                    if next == me || steps > inner.waits_for.len() {
                        inner.waits_for.remove(&me);
                        return Err(RelError::Deadlock);
                    }
                    at = next;
                    steps += 1;
                }
                inner.waits_for.insert(me, owner);
                let (tx, rx) = oneshot::channel();
                if let Some(h) = inner.rows.get_mut(&key) {
                    h.waiters.push(tx);
                }
                (rx, me)
            };
            waited = true;
            // If this wait is abandoned (the client went away), its edge in
            // the wait-for graph must go with it.
            let edge = Edge {
                table: self,
                txn: me,
            };
            // A dropped sender (the holder's guard went away) wakes us too.
            let _ = rx.await;
            drop(edge);
        }
    }
}

struct Edge<'a> {
    table: &'a LockTable,
    txn: u64,
}

impl Drop for Edge<'_> {
    fn drop(&mut self) {
        self.table.inner.lock().waits_for.remove(&self.txn);
    }
}
