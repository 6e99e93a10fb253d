//! A transaction: reads from one snapshot, buffers its writes, and records
//! what it read so the commit can be validated at apply (optimistic,
//! serializable: the commit is rejected if anything it read has changed).
//!
//! Constraint checks (primary key, unique, not null, foreign keys) run here,
//! against the snapshot plus the transaction's own writes, and every lookup
//! they make joins the read set, so a concurrent transaction that would
//! break the constraint makes one of the two fail with a conflict.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::Arc;

use crate::command::TxnCommit;
use crate::error::{RelError, Result};
use crate::locks::LockGuard;
use crate::schema::{FkAction, IndexDef, TableDef};
use crate::snapshot::Snapshot;
use crate::state::{describe_key, index_key, pk_key};
use crate::value::{decode_row, encode_key, Row, Value};

type Writes = BTreeMap<(u64, Vec<u8>), Option<Row>>;

pub struct Txn {
    pub snap: Arc<Snapshot>,
    pub read_only: bool,
    /// Point reads: version seen, and the statement that first read it.
    reads: BTreeMap<(u64, Vec<u8>), (u64, u32)>,
    statement: u32,
    pub(crate) locks: LockGuard,
    scans: BTreeSet<u64>,
    writes: Writes,
    savepoints: Vec<(String, Writes)>,
}

/// What an insert does when its key is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnConflict {
    Error,
    /// Skip the row (`ON CONFLICT DO NOTHING`).
    Nothing,
    /// Hand the holder back to the caller (`ON CONFLICT DO UPDATE`).
    Update,
}

/// The outcome of an insert.
#[derive(Debug, PartialEq)]
pub enum Inserted {
    Row,
    /// Skipped: this existing row (primary key, row) holds the key.
    Conflict(Vec<u8>, Row),
}

impl Txn {
    pub fn new(snap: Arc<Snapshot>, read_only: bool) -> Txn {
        Txn {
            snap,
            read_only,
            reads: BTreeMap::new(),
            statement: 0,
            locks: LockGuard::default(),
            scans: BTreeSet::new(),
            writes: BTreeMap::new(),
            savepoints: Vec::new(),
        }
    }

    /// Moves the transaction out, leaving an empty read-only one on the
    /// same snapshot (for a plan that still holds a reference to it).
    pub fn take(&mut self) -> Txn {
        let snap = self.snap.clone();
        std::mem::replace(self, Txn::new(snap, true))
    }

    /// Marks the start of a statement (reads it makes can be taken back
    /// by [`Txn::refresh`] when it is run again).
    pub fn begin_statement(&mut self) {
        self.statement += 1;
    }

    /// Moves the snapshot forward to `latest`, which must be possible
    /// without changing anything this transaction saw: every point read
    /// still has the version it had (except reads of `again`, made by the
    /// current statement, which is about to run again), no scanned table
    /// has changed, nor the schema. Otherwise a conflict, as the commit
    /// would have been.
    pub(crate) fn refresh(
        &mut self,
        latest: Arc<Snapshot>,
        again: &[(u64, Vec<u8>)],
    ) -> Result<()> {
        let conflict = |what: &str| Err(RelError::Conflict(what.to_string()));
        if latest.catalog.version != self.snap.catalog.version {
            return conflict("the schema changed since the transaction began");
        }
        for k in again {
            if self
                .reads
                .get(k)
                .is_some_and(|(_, st)| *st == self.statement)
            {
                self.reads.remove(k);
            }
        }
        for ((space, key), (seen, _)) in &self.reads {
            let now = latest.get(*space, key)?.map_or(0, |v| v.0);
            if now != *seen {
                return conflict("a row it read was changed by another transaction");
            }
        }
        for t in &self.scans {
            if latest.table_version(*t)? > self.snap.index {
                return conflict("a table it read was changed by another transaction");
            }
        }
        self.snap = latest;
        Ok(())
    }

    pub fn has_writes(&self) -> bool {
        !self.writes.is_empty()
    }

    pub fn wrote_table(&self, table: u64) -> bool {
        self.writes
            .range((table, Vec::new())..(table + 1, Vec::new()))
            .next()
            .is_some()
    }

    /// The row stored under `pk`, as this transaction sees it.
    pub fn get(&mut self, t: &TableDef, pk: &[u8]) -> Result<Option<Row>> {
        if let Some(w) = self.writes.get(&(t.id, pk.to_vec())) {
            return Ok(w.clone());
        }
        let found = self.snap.get(t.id, pk)?;
        self.reads
            .entry((t.id, pk.to_vec()))
            .or_insert((found.as_ref().map(|f| f.0).unwrap_or(0), self.statement));
        match found {
            Some((_, payload)) => Ok(Some(decode_row(&payload)?)),
            None => Ok(None),
        }
    }

    /// Rows whose primary keys lie between the bounds, in key order.
    pub fn range(
        &mut self,
        t: &TableDef,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
    ) -> Result<Vec<(Vec<u8>, Row)>> {
        self.scans.insert(t.id);
        let mut rows: BTreeMap<Vec<u8>, Row> = BTreeMap::new();
        for (k, _, payload) in self.snap.range(t.id, lo, hi)? {
            rows.insert(k, decode_row(&payload)?);
        }
        let wlo = match lo {
            Bound::Included(k) => Bound::Included((t.id, k.to_vec())),
            Bound::Excluded(k) => Bound::Excluded((t.id, k.to_vec())),
            Bound::Unbounded => Bound::Included((t.id, Vec::new())),
        };
        let whi = match hi {
            Bound::Included(k) => Bound::Included((t.id, k.to_vec())),
            Bound::Excluded(k) => Bound::Excluded((t.id, k.to_vec())),
            Bound::Unbounded => Bound::Excluded((t.id + 1, Vec::new())),
        };
        for ((_, pk), w) in self.writes.range((wlo, whi)) {
            match w {
                Some(r) => rows.insert(pk.clone(), r.clone()),
                None => rows.remove(pk),
            };
        }
        Ok(rows.into_iter().collect())
    }

    pub fn scan(&mut self, t: &TableDef) -> Result<Vec<(Vec<u8>, Row)>> {
        self.range(t, Bound::Unbounded, Bound::Unbounded)
    }

    /// Rows whose index columns start with `prefix` (an equality on the
    /// index's leading columns), found through the index.
    pub fn index_lookup(
        &mut self,
        t: &TableDef,
        ix: &IndexDef,
        prefix: &[Value],
    ) -> Result<Vec<(Vec<u8>, Row)>> {
        let key = encode_key(&prefix.iter().collect::<Vec<_>>());
        let full_unique = ix.unique && prefix.len() == ix.columns.len();
        if self.wrote_table(t.id) {
            // The index on disk does not know this transaction's writes.
            let rows = self.scan(t)?;
            return Ok(rows
                .into_iter()
                .filter(|(_, r)| ix.columns.iter().zip(prefix).all(|(&c, v)| &r[c] == v))
                .collect());
        }
        let entries = if full_unique && !prefix.iter().any(|v| v.is_null()) {
            let found = self.snap.get(ix.id, &key)?;
            self.reads
                .entry((ix.id, key.clone()))
                .or_insert((found.as_ref().map(|f| f.0).unwrap_or(0), self.statement));
            found.into_iter().map(|(_, pk)| pk).collect::<Vec<_>>()
        } else {
            self.scans.insert(t.id);
            self.snap
                .prefix(ix.id, &key)?
                .into_iter()
                .map(|(_, _, pk)| pk)
                .collect()
        };
        let mut out = Vec::with_capacity(entries.len());
        for pk in entries {
            if let Some(row) = self.get(t, &pk)? {
                out.push((pk, row));
            }
        }
        Ok(out)
    }

    fn check_writable(&self) -> Result<()> {
        if self.read_only {
            return Err(RelError::ReadOnly("write"));
        }
        Ok(())
    }

    fn check_not_null(t: &TableDef, row: &[Value]) -> Result<()> {
        for (c, v) in t.columns.iter().zip(row) {
            if v.is_null() && !c.nullable {
                return Err(RelError::NotNullViolation {
                    table: t.name.clone(),
                    column: c.name.clone(),
                });
            }
        }
        Ok(())
    }

    /// Another row that holds `row`'s values of the unique index `ix`.
    fn unique_holder(
        &mut self,
        t: &TableDef,
        ix: &IndexDef,
        row: &[Value],
        pk: &[u8],
    ) -> Result<Option<(Vec<u8>, Row)>> {
        let (key, unique) = index_key(ix, row, pk);
        if !unique {
            return Ok(None);
        }
        let vals: Vec<Value> = ix.columns.iter().map(|&c| row[c].clone()).collect();
        if self.wrote_table(t.id) {
            for ((_, other), w) in self
                .writes
                .range((t.id, Vec::new())..(t.id + 1, Vec::new()))
            {
                if let Some(r) = w {
                    if other.as_slice() != pk
                        && ix.columns.iter().zip(&vals).all(|(&c, v)| &r[c] == v)
                    {
                        return Ok(Some((other.clone(), r.clone())));
                    }
                }
            }
        }
        let found = self.snap.get(ix.id, &key)?;
        self.reads
            .entry((ix.id, key))
            .or_insert((found.as_ref().map(|f| f.0).unwrap_or(0), self.statement));
        if let Some((_, holder)) = found {
            if holder != pk {
                // The holder may have changed or gone in this transaction.
                if let Some(r) = self.get(t, &holder)? {
                    if ix.columns.iter().zip(&vals).all(|(&c, v)| &r[c] == v) {
                        return Ok(Some((holder, r)));
                    }
                }
            }
        }
        Ok(None)
    }

    fn check_unique(&mut self, t: &TableDef, row: &[Value], pk: &[u8]) -> Result<()> {
        for ix in t.indexes.iter().filter(|i| i.unique) {
            if self.unique_holder(t, ix, row, pk)?.is_some() {
                let (columns, key) = describe_key(t, &ix.columns, row);
                return Err(RelError::UniqueViolation {
                    constraint: ix.name.clone(),
                    columns,
                    key,
                });
            }
        }
        Ok(())
    }

    fn check_parents(
        &mut self,
        cat: &crate::schema::RelCatalog,
        t: &TableDef,
        row: &[Value],
        old: Option<&Row>,
    ) -> Result<()> {
        for fk in &t.foreign_keys {
            let vals: Vec<Value> = fk.columns.iter().map(|&c| row[c].clone()).collect();
            if vals.iter().any(|v| v.is_null()) {
                continue;
            }
            if let Some(old) = old {
                if fk.columns.iter().zip(&vals).all(|(&c, v)| &old[c] == v) {
                    continue;
                }
            }
            let parent = if fk.parent == t.id {
                Arc::new(t.clone())
            } else {
                cat.table_by_id(fk.parent)
                    .cloned()
                    .ok_or_else(|| RelError::UndefinedTable(format!("#{}", fk.parent)))?
            };
            if !self.parent_exists(&parent, &fk.parent_columns, &vals, row, t)? {
                let (columns, key) = describe_key(t, &fk.columns, row);
                return Err(RelError::ForeignKeyViolation {
                    action: "insert or update",
                    table: t.name.clone(),
                    constraint: fk.name.clone(),
                    detail: format!(
                        "Key ({columns})=({key}) is not present in table \"{}\"",
                        parent.name
                    ),
                });
            }
        }
        Ok(())
    }

    fn parent_exists(
        &mut self,
        parent: &TableDef,
        cols: &[usize],
        vals: &[Value],
        row: &[Value],
        child: &TableDef,
    ) -> Result<bool> {
        // A row may reference itself.
        if parent.id == child.id && cols.iter().zip(vals).all(|(&c, v)| &row[c] == v) {
            return Ok(true);
        }
        if cols == parent.primary_key.as_slice() {
            let key = encode_key(&vals.iter().collect::<Vec<_>>());
            return Ok(self.get(parent, &key)?.is_some());
        }
        let ordered = |ix: &&IndexDef| ix.unique && ix.columns == cols;
        if let Some(ix) = parent.indexes.iter().find(ordered).cloned() {
            return Ok(!self.index_lookup(parent, &ix, vals)?.is_empty());
        }
        let rows = self.scan(parent)?;
        Ok(rows
            .iter()
            .any(|(_, r)| cols.iter().zip(vals).all(|(&c, v)| &r[c] == v)))
    }

    /// Inserts `row`, checking every constraint but CHECK (the SQL layer's).
    pub fn insert(
        &mut self,
        cat: &crate::schema::RelCatalog,
        t: &TableDef,
        row: Row,
        on_conflict: OnConflict,
    ) -> Result<Inserted> {
        self.check_writable()?;
        Self::check_not_null(t, &row)?;
        let pk = pk_key(t, &row);
        if let Some(existing) = self.get(t, &pk)? {
            if on_conflict != OnConflict::Error {
                return Ok(Inserted::Conflict(pk, existing));
            }
            let (columns, key) = describe_key(t, &t.primary_key, &row);
            return Err(RelError::UniqueViolation {
                constraint: t.pk_name.clone(),
                columns,
                key,
            });
        }
        if on_conflict != OnConflict::Error {
            for ix in t.indexes.iter().filter(|i| i.unique) {
                if let Some((hpk, hrow)) = self.unique_holder(t, ix, &row, &pk)? {
                    return Ok(Inserted::Conflict(hpk, hrow));
                }
            }
        }
        self.check_unique(t, &row, &pk)?;
        self.check_parents(cat, t, &row, None)?;
        self.writes.insert((t.id, pk), Some(row));
        Ok(Inserted::Row)
    }

    /// Replaces the row stored under `pk` with `new` (its key may change).
    pub fn update(
        &mut self,
        cat: &crate::schema::RelCatalog,
        t: &TableDef,
        pk: &[u8],
        new: Row,
    ) -> Result<()> {
        self.check_writable()?;
        Self::check_not_null(t, &new)?;
        let old = self
            .get(t, pk)?
            .ok_or_else(|| RelError::Conflict("the row to update is gone".into()))?;
        let new_pk = pk_key(t, &new);
        if new_pk != pk && self.get(t, &new_pk)?.is_some() {
            let (columns, key) = describe_key(t, &t.primary_key, &new);
            return Err(RelError::UniqueViolation {
                constraint: t.pk_name.clone(),
                columns,
                key,
            });
        }
        self.check_unique(t, &new, &new_pk)?;
        self.check_parents(cat, t, &new, Some(&old))?;
        self.check_children(cat, t, &old, Some(&new), 0)?;
        if new_pk != pk {
            self.writes.insert((t.id, pk.to_vec()), None);
        }
        self.writes.insert((t.id, new_pk), Some(new));
        Ok(())
    }

    pub fn delete(
        &mut self,
        cat: &crate::schema::RelCatalog,
        t: &TableDef,
        pk: &[u8],
    ) -> Result<bool> {
        self.delete_at(cat, t, pk, 0)
    }

    fn delete_at(
        &mut self,
        cat: &crate::schema::RelCatalog,
        t: &TableDef,
        pk: &[u8],
        depth: usize,
    ) -> Result<bool> {
        self.check_writable()?;
        let Some(old) = self.get(t, pk)? else {
            return Ok(false);
        };
        self.writes.insert((t.id, pk.to_vec()), None);
        self.check_children(cat, t, &old, None, depth)?;
        Ok(true)
    }

    /// What the rows referencing `old` do when it is deleted or its key
    /// changes: RESTRICT refuses, CASCADE deletes them, SET NULL clears.
    fn check_children(
        &mut self,
        cat: &crate::schema::RelCatalog,
        t: &TableDef,
        old: &Row,
        new: Option<&Row>,
        depth: usize,
    ) -> Result<()> {
        if depth > 64 {
            return Err(RelError::InvalidDefinition(
                "foreign key cascade deeper than 64 levels".into(),
            ));
        }
        for child in cat.children_of(t.id) {
            for fk in child.foreign_keys.iter().filter(|f| f.parent == t.id) {
                let vals: Vec<Value> = fk.parent_columns.iter().map(|&c| old[c].clone()).collect();
                if let Some(new) = new {
                    if fk
                        .parent_columns
                        .iter()
                        .zip(&vals)
                        .all(|(&c, v)| &new[c] == v)
                    {
                        continue;
                    }
                }
                let refs: Vec<(Vec<u8>, Row)> = self
                    .scan(&child)?
                    .into_iter()
                    .filter(|(_, r)| fk.columns.iter().zip(&vals).all(|(&c, v)| &r[c] == v))
                    .collect();
                if refs.is_empty() {
                    continue;
                }
                let action = if new.is_some() {
                    FkAction::Restrict
                } else {
                    fk.on_delete
                };
                match action {
                    FkAction::Restrict => {
                        let (columns, key) = describe_key(t, &fk.parent_columns, old);
                        return Err(RelError::ForeignKeyViolation {
                            action: if new.is_some() { "update" } else { "delete" },
                            table: t.name.clone(),
                            constraint: fk.name.clone(),
                            detail: format!(
                                "Key ({columns})=({key}) is still referenced from table \"{}\"",
                                child.name
                            ),
                        });
                    }
                    FkAction::Cascade => {
                        for (cpk, _) in refs {
                            self.delete_at(cat, &child, &cpk, depth + 1)?;
                        }
                    }
                    FkAction::SetNull => {
                        for (cpk, mut r) in refs {
                            for &c in &fk.columns {
                                r[c] = Value::Null;
                            }
                            Self::check_not_null(&child, &r)?;
                            self.writes.insert((child.id, cpk), Some(r));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    pub fn savepoint(&mut self, name: &str) {
        self.savepoints
            .push((name.to_string(), self.writes.clone()));
    }

    /// Undoes the writes since the savepoint, which stays. What was read
    /// since stays in the read set: the client may have acted on it.
    pub fn rollback_to(&mut self, name: &str) -> Result<()> {
        let at = self
            .savepoints
            .iter()
            .rposition(|(n, _)| n == name)
            .ok_or_else(|| RelError::UndefinedObject(format!("savepoint {name}")))?;
        self.savepoints.truncate(at + 1);
        self.writes = self.savepoints[at].1.clone();
        Ok(())
    }

    pub fn release(&mut self, name: &str) -> Result<()> {
        let at = self
            .savepoints
            .iter()
            .rposition(|(n, _)| n == name)
            .ok_or_else(|| RelError::UndefinedObject(format!("savepoint {name}")))?;
        self.savepoints.truncate(at);
        Ok(())
    }

    /// The entry that commits this transaction, or None when it wrote nothing.
    pub fn into_commit(self) -> Option<TxnCommit> {
        if self.writes.is_empty() {
            return None;
        }
        Some(TxnCommit {
            read_index: self.snap.index,
            schema_version: self.snap.catalog.version,
            reads: self
                .reads
                .into_iter()
                .map(|((s, k), (v, _))| (s, k, v))
                .collect(),
            scans: self.scans.into_iter().collect(),
            writes: self
                .writes
                .into_iter()
                .map(|((t, k), r)| (t, k, r))
                .collect(),
        })
    }
}
