//! `catalog.log`: the catalog's original home, an append-only file of JSON
//! records, one per line. The appliance keeps the catalog in the relational
//! store and reads this file only to migrate it; the engine on its own (in
//! tests and tools) still writes here.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::{CatalogEntry, CatalogSnapshot, CatalogStore, ColumnKind};
use crate::chunk::DedupPolicy;
use crate::error::{EngineError, Result};

pub const FILE_NAME: &str = "catalog.log";

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

impl Record {
    /// The whole-state entries that replace what this record changes.
    fn into_entries(self, snap: &CatalogSnapshot, out: &mut Vec<CatalogEntry>) {
        match self {
            Record::CreateDatabase { db } => out.push(CatalogEntry::Database {
                retention_ns: snap.databases.get(&db).and_then(|d| d.retention_ns),
                db,
            }),
            Record::SetDatabaseOptions { db, retention_ns } => {
                let mut have = snap.databases.get(&db).and_then(|d| d.retention_ns);
                if let Some(r) = retention_ns {
                    have = (r > 0).then_some(r);
                }
                out.push(CatalogEntry::Database {
                    db,
                    retention_ns: have,
                })
            }
            Record::AddColumn {
                db,
                table,
                column,
                kind,
            } => out.push(CatalogEntry::Column {
                db,
                table,
                column,
                kind,
            }),
            Record::SetTableOptions {
                db,
                table,
                dedup,
                retention_ns,
            } => {
                let mut options = snap
                    .table(&db, &table)
                    .map(|t| t.options)
                    .unwrap_or_default();
                if let Some(d) = dedup {
                    options.dedup = d;
                }
                if let Some(r) = retention_ns {
                    options.retention_ns = (r > 0).then_some(r);
                }
                out.push(CatalogEntry::Table { db, table, options })
            }
        }
    }

    fn from_entry(e: &CatalogEntry) -> Record {
        match e {
            CatalogEntry::Database { db, retention_ns } => Record::SetDatabaseOptions {
                db: db.clone(),
                retention_ns: Some(retention_ns.unwrap_or(0)),
            },
            CatalogEntry::Table { db, table, options } => Record::SetTableOptions {
                db: db.clone(),
                table: table.clone(),
                dedup: Some(options.dedup),
                retention_ns: Some(options.retention_ns.unwrap_or(0)),
            },
            CatalogEntry::Column {
                db,
                table,
                column,
                kind,
            } => Record::AddColumn {
                db: db.clone(),
                table: table.clone(),
                column: column.clone(),
                kind: *kind,
            },
        }
    }
}

/// Reads the records of `path`, cutting off a torn final record (a crash
/// mid-append) with a warning; anything else unreadable is corruption.
/// Returns the state as entries and the length of the good prefix.
fn replay(path: &Path) -> Result<(Vec<CatalogEntry>, u64)> {
    let mut entries = Vec::new();
    let mut snap = CatalogSnapshot::default();
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((entries, 0)),
        Err(e) => return Err(EngineError::io(path, e)),
    };
    let mut reader = BufReader::new(file);
    let mut good_len: u64 = 0;
    let mut line = Vec::new();
    let mut lineno = 0;
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| EngineError::io(path, e))?;
        if n == 0 {
            break;
        }
        lineno += 1;
        let complete = line.last() == Some(&b'\n');
        match serde_json::from_slice::<Record>(&line) {
            Ok(rec) if complete => {
                let start = entries.len();
                rec.into_entries(&snap, &mut entries);
                for e in &entries[start..] {
                    snap.apply(e);
                }
                good_len += n as u64;
            }
            res => {
                let mut rest = Vec::new();
                std::io::Read::read_to_end(&mut reader, &mut rest)
                    .map_err(|e| EngineError::io(path, e))?;
                if !rest.iter().all(|b| b.is_ascii_whitespace()) {
                    return Err(EngineError::CatalogCorrupt {
                        path: path.to_path_buf(),
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
    Ok((entries, good_len))
}

/// Moves the catalog of `dir/catalog.log`, if there is one, into `store`,
/// then renames the file to `catalog.log.migrated` (kept, not deleted, for an
/// operator who wants to go back). Entries replace what they name, so a crash
/// between storing and renaming stores the same state again at the next start.
/// Returns how many entries moved.
pub fn migrate(dir: &Path, store: &dyn CatalogStore) -> Result<Option<usize>> {
    let path = dir.join(FILE_NAME);
    if !path.exists() {
        return Ok(None);
    }
    let (entries, _) = replay(&path)?;
    store.store(&entries)?;
    let done = dir.join(format!("{FILE_NAME}.migrated"));
    std::fs::rename(&path, &done).map_err(|e| EngineError::io(&path, e))?;
    sluice_raftlog::sync_dir(dir)?;
    tracing::info!(from = %path.display(), entries = entries.len(), "catalog moved into its store");
    Ok(Some(entries.len()))
}

#[derive(Debug)]
pub struct LogFile {
    file: Mutex<File>,
    path: PathBuf,
    loaded: Mutex<Option<Vec<CatalogEntry>>>,
}

impl LogFile {
    /// Opens (or creates) `dir/catalog.log`, cutting off a torn tail.
    pub fn open(dir: &Path) -> Result<LogFile> {
        let path = dir.join(FILE_NAME);
        let (entries, good_len) = replay(&path)?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| EngineError::io(&path, e))?;
        file.set_len(good_len)
            .map_err(|e| EngineError::io(&path, e))?;
        sluice_raftlog::sync_dir(dir)?;
        Ok(LogFile {
            file: Mutex::new(file),
            path,
            loaded: Mutex::new(Some(entries)),
        })
    }
}

impl CatalogStore for LogFile {
    fn load(&self) -> Result<Vec<CatalogEntry>> {
        match self.loaded.lock().take() {
            Some(e) => Ok(e),
            None => Ok(replay(&self.path)?.0),
        }
    }

    fn store(&self, entries: &[CatalogEntry]) -> Result<()> {
        let mut buf = Vec::new();
        for e in entries {
            serde_json::to_writer(&mut buf, &Record::from_entry(e))
                .map_err(|e| EngineError::Encode(e.to_string()))?;
            buf.push(b'\n');
        }
        let mut f = self.file.lock();
        f.write_all(&buf)
            .and_then(|_| f.sync_data())
            .map_err(|e| EngineError::io(&self.path, e))
    }
}
