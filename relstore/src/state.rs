//! The state machine: one redb file that committed entries are applied to.
//!
//! Layout (all in `state.redb`):
//! - `meta`: `applied` / `applied_term` (the last entry applied),
//!   `schema_version`, `next_id` (table, index and sequence ids).
//! - `defs`: `t/<id>` table, `s/<id>` sequence, `v/<schema>.<name>` view,
//!   `c/<database>` database comment, `k/<id>` index or sequence comment;
//!   postcard-encoded.
//! - `data`: `(key space, key) → [version u64 LE][payload]`: rows under their
//!   table's id keyed by primary key, index entries under the index's id
//!   (payload: the row's primary key). The version is the index of the entry
//!   that wrote it, which is what optimistic validation compares.
//! - `table_versions`: the index of the last entry that changed each table,
//!   checked for transactions that scanned it.
//! - `sequences`: the last value handed out.
//! - `system`: key → value entries that other parts of Sluice keep here
//!   (the time-series catalog under `ts/`), opaque to the store.
//!
//! Each entry is applied in a redb write transaction of its own with
//! `Durability::None`; every so often one is committed with `Immediate`, and
//! that entry becomes the point behind which the log may be deleted. After a
//! crash redb is back at that point and the log replays the rest.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableTable, TableDefinition, WriteTransaction};

use crate::command::{Applied, Command, TxnCommit};
use crate::error::{RelError, Result};
use crate::schema::{IndexDef, RelCatalog, SequenceDef, TableDef, ViewDef};
use crate::value::{decode_row, encode_key, encode_row, Row, Value};

pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub(crate) const DEFS: TableDefinition<&str, &[u8]> = TableDefinition::new("defs");
pub(crate) const DATA: TableDefinition<(u64, &[u8]), &[u8]> = TableDefinition::new("data");
pub(crate) const TVER: TableDefinition<u64, u64> = TableDefinition::new("table_versions");
pub(crate) const SEQS: TableDefinition<u64, i64> = TableDefinition::new("sequences");
pub(crate) const SYSTEM: TableDefinition<&str, &[u8]> = TableDefinition::new("system");

/// Ids below this are never handed out (0 means "absent" in read sets).
const FIRST_ID: u64 = 16;
/// A durable checkpoint is taken after this many entries or this long.
const CHECKPOINT_ENTRIES: u64 = 4096;
const CHECKPOINT_EVERY: Duration = Duration::from_secs(2);

pub(crate) fn versioned(version: u64, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + payload.len());
    v.extend_from_slice(&version.to_le_bytes());
    v.extend_from_slice(payload);
    v
}

pub(crate) fn split_versioned(raw: &[u8]) -> Result<(u64, &[u8])> {
    if raw.len() < 8 {
        return Err(RelError::Storage(
            "a stored value is shorter than its version".into(),
        ));
    }
    let (v, rest) = raw.split_at(8);
    let mut b = [0u8; 8];
    b.copy_from_slice(v);
    Ok((u64::from_le_bytes(b), rest))
}

/// Loads every definition into a catalog.
pub(crate) fn load_catalog(
    defs: &impl ReadableTable<&'static str, &'static [u8]>,
    version: u64,
) -> Result<RelCatalog> {
    let mut cat = RelCatalog {
        version,
        ..Default::default()
    };
    for item in defs.iter()? {
        let (k, v) = item?;
        let (key, bytes) = (k.value(), v.value());
        if key.starts_with("t/") {
            let t: TableDef = postcard::from_bytes(bytes)?;
            cat.tables
                .insert((t.schema.clone(), t.name.clone()), Arc::new(t));
        } else if key.starts_with("s/") {
            let s: SequenceDef = postcard::from_bytes(bytes)?;
            cat.sequences
                .insert((s.schema.clone(), s.name.clone()), Arc::new(s));
        } else if key.starts_with("v/") {
            let v: ViewDef = postcard::from_bytes(bytes)?;
            cat.views
                .insert((v.schema.clone(), v.name.clone()), Arc::new(v));
        } else if let Some(id) = key.strip_prefix("k/").and_then(|i| i.parse().ok()) {
            cat.object_comments.insert(id, postcard::from_bytes(bytes)?);
        } else if let Some(db) = key.strip_prefix("c/") {
            cat.database_comments
                .insert(db.to_string(), postcard::from_bytes(bytes)?);
        }
    }
    Ok(cat)
}

/// The key of an index entry for `row`, or None when the index does not
/// cover it. A unique index keyed by its columns alone makes a second row with
/// the same values collide; a NULL in a unique key never collides, so such
/// entries (and every entry of a non-unique index) carry the primary key too.
pub fn index_key(index: &IndexDef, row: &[Value], pk: &[u8]) -> (Vec<u8>, bool) {
    let vals: Vec<&Value> = index.columns.iter().map(|&c| &row[c]).collect();
    let mut key = encode_key(&vals);
    let unique = index.unique && !vals.iter().any(|v| v.is_null());
    if !unique {
        key.extend_from_slice(pk);
    }
    (key, unique)
}

pub fn pk_key(table: &TableDef, row: &[Value]) -> Vec<u8> {
    let vals: Vec<&Value> = table.primary_key.iter().map(|&c| &row[c]).collect();
    encode_key(&vals)
}

pub fn describe_key(table: &TableDef, cols: &[usize], row: &[Value]) -> (String, String) {
    let names: Vec<&str> = cols
        .iter()
        .map(|&c| table.columns[c].name.as_str())
        .collect();
    let vals: Vec<String> = cols
        .iter()
        .map(|&c| match (&row[c], table.columns[c].ty) {
            (Value::Numeric(n), crate::value::SqlType::Numeric(_, s)) => {
                crate::value::format_numeric(*n, s)
            }
            (v, _) => v.to_string(),
        })
        .collect();
    (names.join(", "), vals.join(", "))
}

/// A new index entry: space, key, primary key, whether it is a unique key,
/// and what names it in an error.
type Addition<'a> = (
    u64,
    Vec<u8>,
    Vec<u8>,
    bool,
    &'a IndexDef,
    &'a TableDef,
    &'a Row,
);

pub struct State {
    db: Arc<Database>,
    applied: (u64, u64),
    durable: (u64, u64),
    since_durable: u64,
    last_durable: Instant,
    schema_version: u64,
}

fn meta(txn: &WriteTransaction, key: &str) -> Result<u64> {
    let t = txn.open_table(META)?;
    let v = t.get(key)?.map(|v| v.value()).unwrap_or(0);
    Ok(v)
}

impl State {
    pub fn open(path: &Path) -> Result<State> {
        State::on(Database::create(path)?)
    }

    pub(crate) fn on(db: Database) -> Result<State> {
        let txn = db.begin_write()?;
        {
            txn.open_table(META)?;
            txn.open_table(DEFS)?;
            txn.open_table(DATA)?;
            txn.open_table(TVER)?;
            txn.open_table(SEQS)?;
            txn.open_table(SYSTEM)?;
        }
        let applied = (meta(&txn, "applied")?, meta(&txn, "applied_term")?);
        let schema_version = meta(&txn, "schema_version")?;
        txn.commit()?;
        Ok(State {
            db: Arc::new(db),
            applied,
            durable: applied,
            since_durable: 0,
            last_durable: Instant::now(),
            schema_version,
        })
    }

    pub fn database(&self) -> Arc<Database> {
        self.db.clone()
    }

    /// The (index, term) that is durable in the redb file.
    pub fn durable(&self) -> (u64, u64) {
        self.durable
    }

    pub fn applied(&self) -> (u64, u64) {
        self.applied
    }

    pub fn schema_version(&self) -> u64 {
        self.schema_version
    }

    /// Applies one committed entry. The inner result is the entry's own
    /// answer (a rejection is deterministic and changes nothing but the
    /// applied index); the outer one is a storage failure, after which the
    /// state machine must stop.
    pub fn apply(&mut self, index: u64, term: u64, data: &[u8]) -> Result<Result<Applied>> {
        if index <= self.applied.0 {
            return Ok(Ok(Applied::Done));
        }
        let mut txn = self.db.begin_write()?;
        let durable = self.since_durable + 1 >= CHECKPOINT_ENTRIES
            || self.last_durable.elapsed() >= CHECKPOINT_EVERY;
        txn.set_durability(if durable {
            Durability::Immediate
        } else {
            Durability::None
        })?;
        let answer = if data.is_empty() {
            Ok(Applied::Done)
        } else {
            match postcard::from_bytes::<Command>(data) {
                Ok(cmd) => self.apply_command(&txn, index, cmd)?,
                Err(e) => {
                    tracing::error!(index, error = %e, "relational log entry cannot be decoded; skipped");
                    Err(RelError::Storage(format!(
                        "entry {index} cannot be decoded: {e}"
                    )))
                }
            }
        };
        {
            let mut m = txn.open_table(META)?;
            m.insert("applied", index)?;
            m.insert("applied_term", term)?;
        }
        txn.commit()?;
        self.applied = (index, term);
        self.since_durable += 1;
        if durable {
            self.mark_durable();
        }
        Ok(answer)
    }

    fn mark_durable(&mut self) {
        self.durable = self.applied;
        self.since_durable = 0;
        self.last_durable = Instant::now();
    }

    /// Makes everything applied durable now (at shutdown, or when the log
    /// should shrink). Returns the durable point.
    pub fn checkpoint(&mut self) -> Result<(u64, u64)> {
        if self.durable != self.applied {
            let mut txn = self.db.begin_write()?;
            txn.set_durability(Durability::Immediate)?;
            txn.commit()?;
            self.mark_durable();
        }
        Ok(self.durable)
    }

    /// Whether a checkpoint is due although no entry arrives.
    pub fn checkpoint_due(&self) -> bool {
        self.durable != self.applied && self.last_durable.elapsed() >= CHECKPOINT_EVERY
    }

    fn apply_command(
        &mut self,
        txn: &WriteTransaction,
        index: u64,
        cmd: Command,
    ) -> Result<Result<Applied>> {
        match cmd {
            Command::Commit(c) => self.apply_commit(txn, index, c),
            Command::Ddl(op) => {
                let cat = self.catalog_in(txn)?;
                // Validated first, so a rejected op changes nothing.
                if let Err(e) = crate::ddl::check(&cat, txn, &op)? {
                    return Ok(Err(e));
                }
                let mut ids = self.next_id(txn)?;
                crate::ddl::apply(txn, index, op, &mut ids)?;
                txn.open_table(META)?.insert("next_id", ids.0)?;
                self.schema_version = index;
                txn.open_table(META)?.insert("schema_version", index)?;
                Ok(Ok(Applied::Done))
            }
            Command::SeqReserve { id, count } => crate::ddl::seq_reserve(txn, id, count),
            Command::SeqSet { id, value } => crate::ddl::seq_set(txn, id, value),
            Command::RowIds { table, count } => {
                let mut seqs = txn.open_table(SEQS)?;
                let last = seqs.get(table)?.map(|v| v.value()).unwrap_or(0);
                let end = last.saturating_add(count.max(1) as i64);
                seqs.insert(table, end)?;
                Ok(Ok(Applied::Values(last + 1, end)))
            }
            Command::PutSystem { entries } => {
                let mut t = txn.open_table(SYSTEM)?;
                for (k, v) in &entries {
                    match v {
                        Some(v) => t.insert(k.as_str(), v.as_slice())?,
                        None => t.remove(k.as_str())?,
                    };
                }
                Ok(Ok(Applied::Done))
            }
        }
    }

    fn next_id(&self, txn: &WriteTransaction) -> Result<crate::ddl::IdAlloc> {
        Ok(crate::ddl::IdAlloc(meta(txn, "next_id")?.max(FIRST_ID)))
    }

    fn catalog_in(&self, txn: &WriteTransaction) -> Result<RelCatalog> {
        let defs = txn.open_table(DEFS)?;
        load_catalog(&defs, self.schema_version)
    }

    fn apply_commit(
        &mut self,
        txn: &WriteTransaction,
        index: u64,
        c: TxnCommit,
    ) -> Result<Result<Applied>> {
        if c.schema_version != self.schema_version {
            return Ok(Err(RelError::Conflict(
                "the schema changed since the transaction began".into(),
            )));
        }
        let cat = self.catalog_in(txn)?;
        let mut data = txn.open_table(DATA)?;
        let mut tver = txn.open_table(TVER)?;
        for (space, key, seen) in &c.reads {
            let now = match data.get((*space, key.as_slice()))? {
                Some(v) => split_versioned(v.value())?.0,
                None => 0,
            };
            if now != *seen {
                return Ok(Err(RelError::Conflict(
                    "a row it read was changed by another transaction".into(),
                )));
            }
        }
        for t in &c.scans {
            let v = tver.get(*t)?.map(|v| v.value()).unwrap_or(0);
            if v > c.read_index {
                let name = cat
                    .table_by_id(*t)
                    .map(|t| t.name.clone())
                    .unwrap_or_default();
                return Ok(Err(RelError::Conflict(format!(
                    "table {name} it read was changed by another transaction"
                ))));
            }
        }
        // Index maintenance: every old entry goes before any new one is
        // checked, so a transaction may swap unique values between rows.
        let mut removals: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut additions: Vec<Addition> = Vec::new();
        let mut last: BTreeMap<(u64, &[u8]), usize> = BTreeMap::new();
        for (i, (t, pk, _)) in c.writes.iter().enumerate() {
            last.insert((*t, pk.as_slice()), i);
        }
        let mut tables = Vec::new();
        let mut olds: Vec<Option<Row>> = Vec::with_capacity(c.writes.len());
        for (t, pk, _) in &c.writes {
            let old = match data.get((*t, pk.as_slice()))? {
                Some(v) => Some(decode_row(split_versioned(v.value())?.1)?),
                None => None,
            };
            olds.push(old);
            tables.push(*t);
        }
        let mut seen: HashSet<(u64, &[u8])> = HashSet::new();
        for (i, (t, pk, new)) in c.writes.iter().enumerate() {
            let Some(def) = cat.table_by_id(*t) else {
                return Ok(Err(RelError::UndefinedTable(format!("#{t}"))));
            };
            // Rows are shaped by the SQL layer from this very definition; a
            // row of another width comes from a bad entry (or bad data) and
            // must be refused before an index looks at its columns.
            for row in [new.as_ref(), olds[i].as_ref()].into_iter().flatten() {
                if row.len() != def.columns.len() {
                    return Ok(Err(RelError::Storage(format!(
                        "a row of {} values for table {} of {} columns",
                        row.len(),
                        def.name,
                        def.columns.len()
                    ))));
                }
            }
            // The stored row's entries go once; an intermediate version of a
            // row written twice never reached the index.
            if seen.insert((*t, pk.as_slice())) {
                if let Some(old) = &olds[i] {
                    for ix in &def.indexes {
                        removals.push((ix.id, index_key(ix, old, pk).0));
                    }
                }
            }
            if last.get(&(*t, pk.as_slice())) == Some(&i) {
                if let Some(row) = new {
                    for ix in &def.indexes {
                        let (k, unique) = index_key(ix, row, pk);
                        additions.push((ix.id, k, pk.clone(), unique, ix, def, row));
                    }
                }
            }
        }
        let removed: HashSet<(u64, &[u8])> =
            removals.iter().map(|(s, k)| (*s, k.as_slice())).collect();
        let mut added: HashSet<(u64, &[u8])> = HashSet::new();
        for (space, key, pk, unique, ix, def, row) in &additions {
            if !*unique {
                continue;
            }
            let taken_before = match data.get((*space, key.as_slice()))? {
                Some(v) => split_versioned(v.value())?.1 != pk.as_slice(),
                None => false,
            } && !removed.contains(&(*space, key.as_slice()));
            if taken_before || !added.insert((*space, key.as_slice())) {
                let (columns, key) = describe_key(def, &ix.columns, row);
                return Ok(Err(RelError::UniqueViolation {
                    constraint: ix.name.clone(),
                    columns,
                    key,
                }));
            }
        }
        for (space, key) in &removals {
            data.remove((*space, key.as_slice()))?;
        }
        for (space, key, pk, ..) in &additions {
            data.insert((*space, key.as_slice()), versioned(index, pk).as_slice())?;
        }
        for (t, pk, new) in &c.writes {
            match new {
                Some(row) => {
                    data.insert(
                        (*t, pk.as_slice()),
                        versioned(index, &encode_row(row)?).as_slice(),
                    )?;
                }
                None => {
                    data.remove((*t, pk.as_slice()))?;
                }
            }
        }
        tables.sort_unstable();
        tables.dedup();
        for t in tables {
            tver.insert(t, index)?;
        }
        Ok(Ok(Applied::Done))
    }
}

/// Copies every table of `db`, as one read transaction sees them, into a
/// new database at `path`; answers the applied (index, term) it holds.
pub(crate) fn copy_to(db: &Database, path: &std::path::Path) -> Result<(u64, u64)> {
    use redb::ReadableDatabase;
    fn copy<K: redb::Key + 'static, V: redb::Value + 'static>(
        r: &redb::ReadTransaction,
        w: &WriteTransaction,
        def: TableDefinition<K, V>,
    ) -> Result<()> {
        let from = match r.open_table(def) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let mut to = w.open_table(def)?;
        for item in from.iter()? {
            let (k, v) = item?;
            to.insert(k.value(), v.value())?;
        }
        Ok(())
    }
    let r = db.begin_read()?;
    let applied = {
        let m = r.open_table(META)?;
        let get = |k: &str| -> Result<u64> { Ok(m.get(k)?.map(|v| v.value()).unwrap_or(0)) };
        (get("applied")?, get("applied_term")?)
    };
    let out = Database::create(path)?;
    let mut w = out.begin_write()?;
    w.set_durability(Durability::Immediate)?;
    copy(&r, &w, META)?;
    copy(&r, &w, DEFS)?;
    copy(&r, &w, DATA)?;
    copy(&r, &w, TVER)?;
    copy(&r, &w, SEQS)?;
    copy(&r, &w, SYSTEM)?;
    w.commit()?;
    Ok(applied)
}
