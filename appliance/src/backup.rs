//! Online backup and restore. A backup is a data directory of its own:
//! every shard's manifest and the chunks it names (after a flush, so every
//! point acknowledged before the backup began is in a chunk), then the
//! relational store (catalog, users and tables) as one read transaction sees
//! it, then `backup.json`, written last, which marks the backup complete.
//! The store is copied after the shards so that every column a copied chunk
//! holds is in the copied catalog (a column is durable before any point
//! that uses it, invariant 2). `sluice restore` copies a backup into an
//! empty data directory, which then starts as a node of its own: each shard
//! and the store resume from their snapshot point, with no log.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sluice_engine::EngineHandle;
use sluice_relstore::RelHandle;

pub const MARKER: &str = "backup.json";
const FORMAT: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
pub struct BackupInfo {
    pub format: u32,
    pub sluice_version: String,
    /// RFC 3339, when the backup began.
    pub started: String,
    pub seconds: f64,
    pub shards: Vec<ShardCopy>,
    /// The relational store's last applied log entry in the copy.
    pub relational_index: u64,
    pub bytes: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ShardCopy {
    pub shard: usize,
    /// Every log entry up to this one is in the copied chunks.
    pub flushed_index: u64,
    pub chunks: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0}")]
    Target(String),
    #[error("a backup is already running")]
    Busy,
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Engine(#[from] sluice_engine::EngineError),
    #[error(transparent)]
    Rel(#[from] sluice_relstore::RelError),
    #[error("the copy task failed: {0}")]
    Task(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A directory that is absent or empty, and outside `data_dir`.
fn check_target(dest: &Path, data_dir: &Path) -> Result<(), BackupError> {
    if !dest.is_absolute() {
        return Err(BackupError::Target(format!(
            "{} is not an absolute path",
            dest.display()
        )));
    }
    let data = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let parent = dest.parent().and_then(|p| std::fs::canonicalize(p).ok());
    if parent.is_some_and(|p| p.starts_with(&data)) {
        return Err(BackupError::Target(format!(
            "{} is inside the data directory {}",
            dest.display(),
            data.display()
        )));
    }
    if !absent_or_empty(dest)? {
        return Err(BackupError::Target(format!(
            "{} is not empty",
            dest.display()
        )));
    }
    Ok(())
}

fn absent_or_empty(dir: &Path) -> Result<bool, BackupError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(io(dir)(e)),
    }
}

static RUNNING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Marks a backup as running until dropped.
struct Running;

impl Running {
    fn start() -> Result<Running, BackupError> {
        use std::sync::atomic::Ordering;
        RUNNING
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| Running)
            .map_err(|_| BackupError::Busy)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.store(false, std::sync::atomic::Ordering::Release);
    }
}

/// Takes a backup of the running node into `dest` while writes go on.
pub async fn take(
    engine: &EngineHandle,
    rel: &RelHandle,
    data_dir: &Path,
    dest: &Path,
) -> Result<BackupInfo, BackupError> {
    let _running = Running::start()?;
    check_target(dest, data_dir)?;
    let started = chrono::Utc::now();
    let clock = std::time::Instant::now();
    std::fs::create_dir_all(dest).map_err(io(dest))?;
    // Every point acknowledged before now is in a chunk once this returns.
    engine.flush().await?;
    let mut shards = Vec::new();
    for id in 0..engine.shard_count() {
        let (src, dst) = (engine.shard_dir(id), dest.join(format!("shard-{id}")));
        let m = tokio::task::spawn_blocking(move || sluice_engine::backup::copy_shard(&src, &dst))
            .await
            .map_err(|e| BackupError::Task(e.to_string()))??;
        shards.push(ShardCopy {
            shard: id,
            flushed_index: m.flushed_index,
            chunks: m.chunks.len(),
        });
    }
    let meta = dest.join("meta");
    std::fs::create_dir_all(&meta).map_err(io(&meta))?;
    let (rel, state) = (rel.clone(), meta.join("state.redb"));
    let (relational_index, _) = tokio::task::spawn_blocking(move || rel.backup_to(&state))
        .await
        .map_err(|e| BackupError::Task(e.to_string()))??;
    let info = BackupInfo {
        format: FORMAT,
        sluice_version: env!("CARGO_PKG_VERSION").to_string(),
        started: started.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        seconds: clock.elapsed().as_secs_f64(),
        shards,
        relational_index,
        bytes: tree_bytes(dest),
    };
    write_durably(
        &dest.join(MARKER),
        &serde_json::to_vec_pretty(&info).unwrap_or_default(),
    )?;
    sync_tree_dirs(dest)?;
    tracing::info!(dest = %dest.display(), bytes = info.bytes, seconds = info.seconds, "backup taken");
    Ok(info)
}

fn tree_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => tree_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), BackupError> {
    use std::io::Write;
    let mut f = std::fs::File::create(path).map_err(io(path))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(io(path))
}

/// fsyncs every directory of the tree, so the names of what was written
/// are durable too.
fn sync_tree_dirs(dir: &Path) -> Result<(), BackupError> {
    for e in std::fs::read_dir(dir).map_err(io(dir))?.flatten() {
        if e.path().is_dir() {
            sync_tree_dirs(&e.path())?;
        }
    }
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

/// Copies the backup at `from` into `data_dir`, which must be absent or
/// empty; answers what the backup says of itself.
pub fn restore(from: &Path, data_dir: &Path) -> Result<BackupInfo, BackupError> {
    let marker = from.join(MARKER);
    let info: BackupInfo = match std::fs::read(&marker) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| {
            BackupError::Target(format!("{} does not parse: {e}", marker.display()))
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(BackupError::Target(format!(
                "{} has no {MARKER}: it is not a backup, or one that did not finish",
                from.display()
            )))
        }
        Err(e) => return Err(io(&marker)(e)),
    };
    if info.format != FORMAT {
        return Err(BackupError::Target(format!(
            "backup format {} is not one this version reads ({FORMAT})",
            info.format
        )));
    }
    if !absent_or_empty(data_dir)? {
        return Err(BackupError::Target(format!(
            "{} is not empty: restore into a new data directory",
            data_dir.display()
        )));
    }
    copy_tree(from, data_dir, true)?;
    sync_tree_dirs(data_dir)?;
    Ok(info)
}

fn copy_tree(from: &Path, to: &Path, top: bool) -> Result<(), BackupError> {
    std::fs::create_dir_all(to).map_err(io(to))?;
    for e in std::fs::read_dir(from).map_err(io(from))?.flatten() {
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if top && e.file_name() == MARKER {
            continue;
        }
        if src.is_dir() {
            copy_tree(&src, &dst, false)?;
        } else {
            std::fs::copy(&src, &dst).map_err(io(&src))?;
            std::fs::File::open(&dst)
                .and_then(|f| f.sync_all())
                .map_err(io(&dst))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backup_goes_only_where_it_cannot_clobber_anything() {
        let data = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        assert!(check_target(Path::new("relative/dir"), data.path()).is_err());
        assert!(check_target(&data.path().join("inside"), data.path()).is_err());
        assert!(check_target(&elsewhere.path().join("new"), data.path()).is_ok());
        assert!(check_target(elsewhere.path(), data.path()).is_ok(), "empty");
        std::fs::write(elsewhere.path().join("x"), b"x").unwrap();
        assert!(
            check_target(elsewhere.path(), data.path()).is_err(),
            "not empty"
        );
    }

    #[test]
    fn restore_wants_a_finished_backup_and_an_empty_directory() {
        let from = tempfile::tempdir().unwrap();
        let to = tempfile::tempdir().unwrap();
        let err = restore(from.path(), &to.path().join("d")).unwrap_err();
        assert!(err.to_string().contains("backup.json"), "{err}");
        let info = BackupInfo {
            format: FORMAT,
            sluice_version: "test".into(),
            started: "2026-12-04T00:00:00Z".into(),
            seconds: 0.0,
            shards: vec![],
            relational_index: 0,
            bytes: 0,
        };
        std::fs::write(from.path().join(MARKER), serde_json::to_vec(&info).unwrap()).unwrap();
        std::fs::create_dir_all(from.path().join("shard-0/chunks")).unwrap();
        std::fs::write(from.path().join("shard-0/manifest.json"), b"{}").unwrap();
        std::fs::write(to.path().join("taken"), b"x").unwrap();
        assert!(restore(from.path(), to.path()).is_err(), "not empty");
        let fresh = to.path().join("fresh");
        restore(from.path(), &fresh).unwrap();
        assert!(fresh.join("shard-0/manifest.json").exists());
        assert!(!fresh.join(MARKER).exists());
    }
}
