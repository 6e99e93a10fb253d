//! File-system helpers every durable file of Sluice needs.

use std::fs::File;
use std::path::Path;

use crate::error::{LogError, Result};

/// Makes the entries of `dir` (files just created in it) survive a power
/// loss; fsync of a file alone does not persist its directory entry.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| LogError::io(dir, e))
}

/// glommio decides whether the disk supports polled I/O from the first DMA
/// file an executor opens, and gets it wrong for an empty file; opening a
/// non-empty one first keeps later O_DIRECT reads working.
pub async fn probe_disk(dir: &Path) -> Result<()> {
    let path = dir.join(".io-probe");
    let ok = std::fs::metadata(&path)
        .map(|m| m.len() >= 4096)
        .unwrap_or(false);
    if !ok {
        std::fs::write(&path, vec![0u8; 4096]).map_err(|e| LogError::io(&path, e))?;
    }
    let f = glommio::io::DmaFile::open(&path)
        .await
        .map_err(|e| LogError::io(&path, e.into()))?;
    f.close().await.map_err(|e| LogError::io(&path, e.into()))
}
