//! The schema authority: databases, tables and their typed columns.
//!
//! Readers (every write request, every query) take a lock-free snapshot via
//! `ArcSwap`; the rare schema change (new database, table or column) takes a
//! mutex, makes the change durable in the [`CatalogStore`] and only then
//! publishes the new snapshot. So a column type is decided once, durably,
//! before any point using it can be acknowledged, and every shard agrees on it.
//! The appliance's store is the relational store; [`LogFile`] is the engine's
//! own, and the file the appliance migrates from.

mod logfile;

pub use logfile::{migrate, LogFile, FILE_NAME as LEGACY_FILE_NAME};

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arc_swap::ArcSwap;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::chunk::DedupPolicy;
use crate::error::{EngineError, Result};

/// Name of the timestamp column every table has.
pub const TIME_COLUMN: &str = "time";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    Float,
    Integer,
    UInteger,
    Boolean,
    String,
}

impl FieldType {
    pub fn data_type(self) -> DataType {
        match self {
            FieldType::Float => DataType::Float64,
            FieldType::Integer => DataType::Int64,
            FieldType::UInteger => DataType::UInt64,
            FieldType::Boolean => DataType::Boolean,
            FieldType::String => DataType::Utf8,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "type", content = "field")]
pub enum ColumnKind {
    Tag,
    Field(FieldType),
}

impl std::fmt::Display for ColumnKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ColumnKind::Tag => f.write_str("a tag"),
            ColumnKind::Field(t) => write!(f, "a {} field", format!("{t:?}").to_lowercase()),
        }
    }
}

/// Arrow type of a tag column.
pub fn tag_data_type() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

/// Arrow type of the time column.
pub fn time_data_type() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

/// Per-table storage settings, set at creation or later (SQL `ALTER TABLE …
/// SET (…)`), recorded in the catalog log like any schema change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableOptions {
    pub dedup: DedupPolicy,
    /// Rows older than this (ns) are dropped, whole partitions at a time.
    /// Absent: the database's retention applies.
    pub retention_ns: Option<i64>,
}

#[derive(Debug)]
pub struct TableSchema {
    pub name: String,
    columns: HashMap<String, ColumnKind>,
    arrow: SchemaRef,
    pub options: TableOptions,
}

impl TableSchema {
    fn new(name: String, columns: HashMap<String, ColumnKind>, options: TableOptions) -> Self {
        let arrow = arrow_schema(&columns);
        TableSchema {
            name,
            columns,
            arrow,
            options,
        }
    }

    pub fn column(&self, name: &str) -> Option<ColumnKind> {
        self.columns.get(name).copied()
    }

    /// Arrow schema: `time`, then tags by name, then fields by name.
    pub fn arrow_schema(&self) -> SchemaRef {
        self.arrow.clone()
    }

    pub fn columns(&self) -> impl Iterator<Item = (&str, ColumnKind)> {
        self.columns.iter().map(|(k, v)| (k.as_str(), *v))
    }
}

/// Columns a table may have, tags and fields together (the time column
/// aside).
pub const MAX_COLUMNS: usize = 1024;

fn arrow_schema(columns: &HashMap<String, ColumnKind>) -> SchemaRef {
    let mut tags: Vec<&String> = Vec::new();
    let mut fields: Vec<(&String, FieldType)> = Vec::new();
    for (name, kind) in columns {
        match kind {
            ColumnKind::Tag => tags.push(name),
            ColumnKind::Field(t) => fields.push((name, *t)),
        }
    }
    tags.sort();
    fields.sort_by(|a, b| a.0.cmp(b.0));
    let mut out = Vec::with_capacity(columns.len() + 1);
    out.push(Field::new(TIME_COLUMN, time_data_type(), false));
    out.extend(
        tags.into_iter()
            .map(|n| Field::new(n.as_str(), tag_data_type(), true)),
    );
    out.extend(
        fields
            .into_iter()
            .map(|(n, t)| Field::new(n.as_str(), t.data_type(), true)),
    );
    Arc::new(Schema::new(out))
}

#[derive(Debug, Default, Clone)]
pub struct DatabaseDef {
    pub tables: BTreeMap<String, Arc<TableSchema>>,
    /// Default retention (ns) of the database's tables; absent: keep forever.
    pub retention_ns: Option<i64>,
}

/// An immutable view of the whole catalog.
#[derive(Debug, Default, Clone)]
pub struct CatalogSnapshot {
    pub databases: BTreeMap<String, Arc<DatabaseDef>>,
}

impl CatalogSnapshot {
    pub fn table(&self, db: &str, table: &str) -> Option<&Arc<TableSchema>> {
        self.databases.get(db)?.tables.get(table)
    }

    /// The retention in force for a table: its own, else its database's.
    pub fn retention(&self, db: &str, table: &str) -> Option<i64> {
        let d = self.databases.get(db)?;
        d.tables
            .get(table)
            .and_then(|t| t.options.retention_ns)
            .or(d.retention_ns)
            .filter(|r| *r > 0)
    }

    /// Builds the snapshot that a store's entries describe, in any order.
    pub fn from_entries(entries: &[CatalogEntry]) -> CatalogSnapshot {
        let mut snap = CatalogSnapshot::default();
        for e in entries {
            snap.apply(e);
        }
        snap
    }

    fn apply(&mut self, entry: &CatalogEntry) {
        let db = match entry {
            CatalogEntry::Database { db, .. }
            | CatalogEntry::Table { db, .. }
            | CatalogEntry::Column { db, .. } => db,
        };
        let dbdef = Arc::make_mut(self.databases.entry(db.clone()).or_default());
        let table = |dbdef: &DatabaseDef, t: &str| {
            dbdef
                .tables
                .get(t)
                .map(|t| (t.columns.clone(), t.options))
                .unwrap_or_default()
        };
        match entry {
            CatalogEntry::Database { retention_ns, .. } => dbdef.retention_ns = *retention_ns,
            CatalogEntry::Table {
                table: name,
                options,
                ..
            } => {
                let (cols, _) = table(dbdef, name);
                dbdef.tables.insert(
                    name.clone(),
                    Arc::new(TableSchema::new(name.clone(), cols, *options)),
                );
            }
            CatalogEntry::Column {
                table: name,
                column,
                kind,
                ..
            } => {
                let (mut cols, options) = table(dbdef, name);
                cols.insert(column.clone(), *kind);
                dbdef.tables.insert(
                    name.clone(),
                    Arc::new(TableSchema::new(name.clone(), cols, options)),
                );
            }
        }
    }
}

/// One piece of catalog state, as a store keeps it: writing an entry
/// replaces the previous one with the same key (database; database and
/// table; database, table and column), so entries apply in any order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "entry", rename_all = "snake_case")]
pub enum CatalogEntry {
    Database {
        db: String,
        retention_ns: Option<i64>,
    },
    Table {
        db: String,
        table: String,
        options: TableOptions,
    },
    Column {
        db: String,
        table: String,
        column: String,
        kind: ColumnKind,
    },
}

/// Where the catalog is kept. `store` returns once the entries would
/// survive a crash; it is called under the catalog's mutex, so entries
/// arrive one change at a time.
pub trait CatalogStore: Send + Sync + std::fmt::Debug {
    /// Every entry stored so far.
    fn load(&self) -> Result<Vec<CatalogEntry>>;
    fn store(&self, entries: &[CatalogEntry]) -> Result<()>;
}

/// A change of storage settings; `None` leaves a setting as it is and a
/// retention of 0 removes it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OptionsChange {
    pub dedup: Option<DedupPolicy>,
    pub retention_ns: Option<i64>,
}

/// A column a writer wants to exist with a given kind.
#[derive(Debug, Clone)]
pub struct ColumnRequest<'a> {
    pub name: &'a str,
    pub kind: ColumnKind,
}

pub struct Catalog {
    snapshot: ArcSwap<CatalogSnapshot>,
    /// Held while a change is stored, so changes are decided one at a time
    /// against the snapshot they replace.
    store: Mutex<Arc<dyn CatalogStore>>,
}

/// The database Sluice writes its own tables to (`system.dead_letters`).
/// Users cannot create or write it; it is read through the SQL `system`
/// schema.
pub const SYSTEM_DATABASE: &str = "system";

/// Rejects names that cannot round-trip through SQL identifiers and logs.
pub fn validate_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(EngineError::InvalidName(format!("{what} name is empty")));
    }
    if name.len() > 255 {
        return Err(EngineError::InvalidName(format!(
            "{what} name is longer than 255 bytes"
        )));
    }
    if name.chars().any(|c| c.is_control()) {
        return Err(EngineError::InvalidName(format!(
            "{what} name {name:?} contains a control character"
        )));
    }
    // These name schemas of the SQL catalog that Sluice itself provides.
    if what == "database" && (name == "system" || name == "information_schema") {
        return Err(EngineError::InvalidName(format!(
            "database name {name:?} is reserved"
        )));
    }
    Ok(())
}

impl Catalog {
    /// Loads the catalog from `store`.
    pub fn open(store: Arc<dyn CatalogStore>) -> Result<Self> {
        let snap = CatalogSnapshot::from_entries(&store.load()?);
        Ok(Catalog {
            snapshot: ArcSwap::from_pointee(snap),
            store: Mutex::new(store),
        })
    }

    /// The engine's own catalog: `dir/catalog.log`.
    pub fn open_dir(dir: &std::path::Path) -> Result<Self> {
        Self::open(Arc::new(LogFile::open(dir)?))
    }

    pub fn snapshot(&self) -> Arc<CatalogSnapshot> {
        self.snapshot.load_full()
    }

    pub fn database_exists(&self, db: &str) -> bool {
        self.snapshot.load().databases.contains_key(db)
    }

    pub fn create_database(&self, db: &str) -> Result<()> {
        validate_name("database", db)?;
        if self.database_exists(db) {
            return Ok(());
        }
        let store = self.store.lock();
        if self.database_exists(db) {
            return Ok(());
        }
        self.commit(
            &**store,
            vec![CatalogEntry::Database {
                db: db.to_string(),
                retention_ns: None,
            }],
        )
    }

    /// Changes the settings of `db.table` (creating both if needed), or of the
    /// database alone when `table` is `None` (where only retention applies).
    pub fn set_options(&self, db: &str, table: Option<&str>, change: OptionsChange) -> Result<()> {
        validate_name("database", db)?;
        let store = self.store.lock();
        let snap = self.snapshot.load_full();
        let mut entries = Vec::new();
        let have_db = snap.databases.get(db);
        let db_retention = have_db.and_then(|d| d.retention_ns);
        let merge = |old: Option<i64>, new: Option<i64>| match new {
            Some(r) => (r > 0).then_some(r),
            None => old,
        };
        if have_db.is_none() && table.is_some() {
            entries.push(CatalogEntry::Database {
                db: db.to_string(),
                retention_ns: None,
            });
        }
        match table {
            Some(t) => {
                validate_name("table", t)?;
                let mut options = snap.table(db, t).map(|t| t.options).unwrap_or_default();
                if let Some(d) = change.dedup {
                    options.dedup = d;
                }
                options.retention_ns = merge(options.retention_ns, change.retention_ns);
                entries.push(CatalogEntry::Table {
                    db: db.to_string(),
                    table: t.to_string(),
                    options,
                });
            }
            None => {
                if change.dedup.is_some() {
                    return Err(EngineError::Config(
                        "dedup is a table setting, not a database setting".into(),
                    ));
                }
                entries.push(CatalogEntry::Database {
                    db: db.to_string(),
                    retention_ns: merge(db_retention, change.retention_ns),
                });
            }
        }
        self.commit(&**store, entries)
    }

    /// Makes sure `db.table` has every requested column with the requested
    /// kind. Returns the first conflict; adds nothing in that case.
    pub fn ensure_columns(&self, db: &str, table: &str, cols: &[ColumnRequest<'_>]) -> Result<()> {
        if self
            .check(&self.snapshot.load(), db, table, cols)?
            .is_empty()
        {
            return Ok(());
        }
        let store = self.store.lock();
        let snap = self.snapshot.load_full();
        let missing = self.check(&snap, db, table, cols)?;
        if missing.is_empty() {
            return Ok(());
        }
        if db != SYSTEM_DATABASE {
            validate_name("database", db)?;
        }
        validate_name("table", table)?;
        let existing = snap
            .databases
            .get(db)
            .and_then(|d| d.tables.get(table))
            .map_or(0, |t| t.columns.len());
        if existing + missing.len() > MAX_COLUMNS {
            // A runaway JSON payload (every array element a column) must not
            // grow a table's schema, and every batch of it, without limit.
            return Err(EngineError::TooManyColumns {
                database: db.to_string(),
                table: table.to_string(),
                wanted: existing + missing.len(),
                limit: MAX_COLUMNS,
            });
        }
        let mut entries = Vec::new();
        if !snap.databases.contains_key(db) {
            entries.push(CatalogEntry::Database {
                db: db.to_string(),
                retention_ns: None,
            });
        }
        for c in missing {
            validate_name("column", c.name)?;
            if c.name == TIME_COLUMN {
                return Err(EngineError::InvalidName(format!(
                    "`{TIME_COLUMN}` is reserved for the timestamp"
                )));
            }
            entries.push(CatalogEntry::Column {
                db: db.to_string(),
                table: table.to_string(),
                column: c.name.to_string(),
                kind: c.kind,
            });
        }
        self.commit(&**store, entries)
    }

    fn check<'a>(
        &self,
        snap: &CatalogSnapshot,
        db: &str,
        table: &str,
        cols: &'a [ColumnRequest<'a>],
    ) -> Result<Vec<&'a ColumnRequest<'a>>> {
        let Some(schema) = snap.table(db, table) else {
            return Ok(cols.iter().collect());
        };
        let mut missing = Vec::new();
        for c in cols {
            match schema.column(c.name) {
                Some(k) if k == c.kind => {}
                Some(k) => {
                    return Err(EngineError::TypeConflict {
                        database: db.to_string(),
                        table: table.to_string(),
                        column: c.name.to_string(),
                        existing: k.to_string(),
                        wanted: c.kind.to_string(),
                    })
                }
                None => missing.push(c),
            }
        }
        Ok(missing)
    }

    fn commit(&self, store: &dyn CatalogStore, entries: Vec<CatalogEntry>) -> Result<()> {
        store.store(&entries)?;
        let mut next = (*self.snapshot.load_full()).clone();
        for e in &entries {
            next.apply(e);
        }
        self.snapshot.store(Arc::new(next));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;
    use std::io::Write;

    use super::*;

    #[test]
    fn conflicts_are_reported_and_catalog_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let cat = Catalog::open_dir(dir.path()).unwrap();
        let f = ColumnKind::Field(FieldType::Float);
        cat.ensure_columns("db", "cpu", &[ColumnRequest { name: "v", kind: f }])
            .unwrap();
        let err = cat
            .ensure_columns(
                "db",
                "cpu",
                &[ColumnRequest {
                    name: "v",
                    kind: ColumnKind::Field(FieldType::Integer),
                }],
            )
            .unwrap_err();
        assert!(matches!(err, EngineError::TypeConflict { .. }), "{err}");
        drop(cat);
        // A torn trailing record is cut off, the rest survives.
        let mut f2 = OpenOptions::new()
            .append(true)
            .open(dir.path().join("catalog.log"))
            .unwrap();
        f2.write_all(b"{\"op\":\"create_dat").unwrap();
        let cat = Catalog::open_dir(dir.path()).unwrap();
        assert_eq!(
            cat.snapshot().table("db", "cpu").unwrap().column("v"),
            Some(f)
        );
    }

    #[test]
    fn a_table_stops_growing_at_the_column_limit() {
        let dir = tempfile::tempdir().unwrap();
        let cat = Catalog::open_dir(dir.path()).unwrap();
        let f = ColumnKind::Field(FieldType::Float);
        let names: Vec<String> = (0..=MAX_COLUMNS).map(|i| format!("c{i}")).collect();
        let reqs: Vec<ColumnRequest<'_>> = names[..MAX_COLUMNS - 1]
            .iter()
            .map(|n| ColumnRequest { name: n, kind: f })
            .collect();
        cat.ensure_columns("db", "wide", &reqs).unwrap();
        let two: Vec<ColumnRequest<'_>> = names[MAX_COLUMNS - 1..]
            .iter()
            .map(|n| ColumnRequest { name: n, kind: f })
            .collect();
        let err = cat.ensure_columns("db", "wide", &two).unwrap_err();
        assert!(
            matches!(err, EngineError::TooManyColumns { wanted, .. } if wanted == MAX_COLUMNS + 1),
            "{err}"
        );
        cat.ensure_columns("db", "wide", &two[..1]).unwrap();
        assert_eq!(
            cat.snapshot()
                .table("db", "wide")
                .unwrap()
                .columns()
                .count(),
            MAX_COLUMNS
        );
    }
}
