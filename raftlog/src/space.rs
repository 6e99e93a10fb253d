//! Free space on the disk a log lives on. Writes are refused while the
//! file system holds less than a reserve, so that a log never meets a full
//! disk half-way through an entry (a failed log write stops its group) and
//! chunk flushes, checkpoints and compactions still find room to free the
//! log behind them. Writes resume by themselves once space returns.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How stale a reading may be; a stat is cheap, but not free per write.
const FRESH: Duration = Duration::from_millis(200);

pub struct SpaceGuard {
    dir: PathBuf,
    reserve: u64,
    /// The last reading, and whether writes were refused at it.
    last: Mutex<Option<(Instant, u64, bool)>>,
}

/// The disk is below its reserve.
#[derive(Debug, Clone)]
pub struct NoSpace {
    pub path: PathBuf,
    pub free: u64,
    pub reserve: u64,
}

impl std::fmt::Display for NoSpace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the disk holding {} has {} bytes free, below the {} it keeps in reserve; writes resume when space is freed",
            self.path.display(),
            self.free,
            self.reserve
        )
    }
}

/// Bytes an unprivileged writer may still use on the file system of `dir`.
pub fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    let s = rustix::fs::statvfs(dir)?;
    Ok(s.f_bavail.saturating_mul(s.f_frsize))
}

impl SpaceGuard {
    /// A guard that keeps `reserve` bytes free (0: none).
    pub fn new(dir: &Path, reserve: u64) -> SpaceGuard {
        SpaceGuard {
            dir: dir.to_path_buf(),
            reserve,
            last: Mutex::new(None),
        }
    }

    /// Whether a write may go ahead now.
    pub fn check(&self) -> Result<(), NoSpace> {
        if self.reserve == 0 {
            return Ok(());
        }
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let free = match *last {
            Some((at, free, _)) if at.elapsed() < FRESH => free,
            _ => {
                // A file system that cannot be asked is taken to have room:
                // the write itself will say if it has not.
                let free = free_bytes(&self.dir).unwrap_or(u64::MAX);
                let was_full = last.is_some_and(|l| l.2);
                let full = free < self.reserve;
                if full && !was_full {
                    tracing::error!(dir = %self.dir.display(), free, reserve = self.reserve,
                        "disk nearly full: refusing writes until space is freed");
                } else if !full && was_full {
                    tracing::warn!(dir = %self.dir.display(), free, "disk space is back: taking writes again");
                }
                *last = Some((Instant::now(), free, full));
                free
            }
        };
        if free < self.reserve {
            return Err(NoSpace {
                path: self.dir.clone(),
                free,
                reserve: self.reserve,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_reserve_larger_than_the_disk_refuses_and_none_admits() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        assert!(super::free_bytes(dir.path()).unwrap_or(0) > 0);
        let none = super::SpaceGuard::new(dir.path(), 0);
        assert!(none.check().is_ok());
        let all = super::SpaceGuard::new(dir.path(), u64::MAX);
        let err = all.check().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("bytes free"), "{err}");
    }
}
