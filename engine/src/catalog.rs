//! The schema authority: databases, tables and their typed columns.
//!
//! Readers (every write request, every query) take a lock-free snapshot via
//! `ArcSwap`; the rare schema change (new database, table or column) takes a
//! mutex, appends one record to `catalog.log`, fsyncs it and only then
//! publishes the new snapshot. So a column type is decided once, durably,
//! before any point using it can be acknowledged, and every shard agrees on it.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
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

    fn apply(&mut self, rec: &Record) {
        match rec {
            Record::CreateDatabase { db } => {
                self.databases.entry(db.clone()).or_default();
            }
            Record::AddColumn {
                db,
                table,
                column,
                kind,
            } => {
                let dbdef = Arc::make_mut(self.databases.entry(db.clone()).or_default());
                let (mut cols, options) = dbdef
                    .tables
                    .get(table)
                    .map(|t| (t.columns.clone(), t.options))
                    .unwrap_or_default();
                cols.insert(column.clone(), *kind);
                dbdef.tables.insert(
                    table.clone(),
                    Arc::new(TableSchema::new(table.clone(), cols, options)),
                );
            }
            Record::SetTableOptions {
                db,
                table,
                dedup,
                retention_ns,
            } => {
                let dbdef = Arc::make_mut(self.databases.entry(db.clone()).or_default());
                let (cols, mut options) = dbdef
                    .tables
                    .get(table)
                    .map(|t| (t.columns.clone(), t.options))
                    .unwrap_or_default();
                if let Some(d) = dedup {
                    options.dedup = *d;
                }
                if let Some(r) = retention_ns {
                    options.retention_ns = (*r > 0).then_some(*r);
                }
                dbdef.tables.insert(
                    table.clone(),
                    Arc::new(TableSchema::new(table.clone(), cols, options)),
                );
            }
            Record::SetDatabaseOptions { db, retention_ns } => {
                let dbdef = Arc::make_mut(self.databases.entry(db.clone()).or_default());
                if let Some(r) = retention_ns {
                    dbdef.retention_ns = (*r > 0).then_some(*r);
                }
            }
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Record {
    CreateDatabase {
        db: String,
    },
    AddColumn {
        db: String,
        table: String,
        column: String,
        kind: ColumnKind,
    },
    /// `retention_ns: Some(0)` clears the retention.
    SetTableOptions {
        db: String,
        table: String,
        dedup: Option<DedupPolicy>,
        retention_ns: Option<i64>,
    },
    SetDatabaseOptions {
        db: String,
        retention_ns: Option<i64>,
    },
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
    log: Mutex<File>,
    path: PathBuf,
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
    /// Opens (or creates) the catalog in `dir`, replaying `catalog.log`. A torn
    /// final record (crash mid-append) is cut off with a warning.
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join("catalog.log");
        let mut snap = CatalogSnapshot::default();
        if path.exists() {
            let file = File::open(&path).map_err(|e| EngineError::io(&path, e))?;
            let mut reader = BufReader::new(file);
            let mut good_len: u64 = 0;
            let mut line = Vec::new();
            let mut lineno = 0;
            loop {
                line.clear();
                let n = reader
                    .read_until(b'\n', &mut line)
                    .map_err(|e| EngineError::io(&path, e))?;
                if n == 0 {
                    break;
                }
                lineno += 1;
                let complete = line.last() == Some(&b'\n');
                match serde_json::from_slice::<Record>(&line) {
                    Ok(rec) if complete => {
                        snap.apply(&rec);
                        good_len += n as u64;
                    }
                    res => {
                        // Only the last record may be torn; anything else is corruption.
                        let mut rest = Vec::new();
                        std::io::Read::read_to_end(&mut reader, &mut rest)
                            .map_err(|e| EngineError::io(&path, e))?;
                        if !rest.iter().all(|b| b.is_ascii_whitespace()) {
                            return Err(EngineError::CatalogCorrupt {
                                path,
                                line: lineno,
                                reason: match res {
                                    Err(e) => e.to_string(),
                                    Ok(_) => "record without newline".into(),
                                },
                            });
                        }
                        tracing::warn!(path = %path.display(), line = lineno, "torn catalog record at end of file; cut off");
                        break;
                    }
                }
            }
            let f = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| EngineError::io(&path, e))?;
            f.set_len(good_len).map_err(|e| EngineError::io(&path, e))?;
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| EngineError::io(&path, e))?;
        sluice_raftlog::sync_dir(dir)?;
        Ok(Catalog {
            snapshot: ArcSwap::from_pointee(snap),
            log: Mutex::new(log),
            path,
        })
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
        let log = self.log.lock();
        if self.database_exists(db) {
            return Ok(());
        }
        self.commit(log, vec![Record::CreateDatabase { db: db.to_string() }])
    }

    /// Changes the settings of `db.table` (creating both if needed), or of the
    /// database alone when `table` is `None` (where only retention applies).
    pub fn set_options(&self, db: &str, table: Option<&str>, change: OptionsChange) -> Result<()> {
        validate_name("database", db)?;
        let log = self.log.lock();
        let mut records = Vec::new();
        if !self.database_exists(db) {
            records.push(Record::CreateDatabase { db: db.to_string() });
        }
        match table {
            Some(t) => {
                validate_name("table", t)?;
                records.push(Record::SetTableOptions {
                    db: db.to_string(),
                    table: t.to_string(),
                    dedup: change.dedup,
                    retention_ns: change.retention_ns,
                });
            }
            None => {
                if change.dedup.is_some() {
                    return Err(EngineError::Config(
                        "dedup is a table setting, not a database setting".into(),
                    ));
                }
                records.push(Record::SetDatabaseOptions {
                    db: db.to_string(),
                    retention_ns: change.retention_ns,
                });
            }
        }
        self.commit(log, records)
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
        let log = self.log.lock();
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
        let mut records = Vec::new();
        if !snap.databases.contains_key(db) {
            records.push(Record::CreateDatabase { db: db.to_string() });
        }
        for c in missing {
            validate_name("column", c.name)?;
            if c.name == TIME_COLUMN {
                return Err(EngineError::InvalidName(format!(
                    "`{TIME_COLUMN}` is reserved for the timestamp"
                )));
            }
            records.push(Record::AddColumn {
                db: db.to_string(),
                table: table.to_string(),
                column: c.name.to_string(),
                kind: c.kind,
            });
        }
        self.commit(log, records)
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

    fn commit(
        &self,
        mut log: parking_lot::MutexGuard<'_, File>,
        records: Vec<Record>,
    ) -> Result<()> {
        let mut buf = Vec::new();
        for r in &records {
            serde_json::to_writer(&mut buf, r).map_err(|e| EngineError::Encode(e.to_string()))?;
            buf.push(b'\n');
        }
        log.write_all(&buf)
            .and_then(|_| log.sync_data())
            .map_err(|e| EngineError::io(&self.path, e))?;
        let mut next = (*self.snapshot.load_full()).clone();
        for r in &records {
            next.apply(r);
        }
        self.snapshot.store(Arc::new(next));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicts_are_reported_and_catalog_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let cat = Catalog::open(dir.path()).unwrap();
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
        let cat = Catalog::open(dir.path()).unwrap();
        assert_eq!(
            cat.snapshot().table("db", "cpu").unwrap().column("v"),
            Some(f)
        );
    }

    #[test]
    fn a_table_stops_growing_at_the_column_limit() {
        let dir = tempfile::tempdir().unwrap();
        let cat = Catalog::open(dir.path()).unwrap();
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
