//! Copies of a running shard's data at rest, for backups. A chunk file is
//! immutable and live while its manifest names it (invariant 9), so a copy
//! of the manifest and of the chunk files it names is a consistent shard:
//! everything up to its `flushed_index`, opened by a new node with no log
//! as a raft snapshot at that point. Compaction may delete a named chunk
//! while the copy runs; then the newer manifest is copied instead.

use std::path::Path;
use std::time::Duration;

use crate::error::{EngineError, Result};
use crate::store::{chunk_dir, chunk_path, write_manifest, Manifest, MANIFEST, MANIFEST_VERSION};

/// Tries before giving up on a shard whose chunks keep being replaced.
const ATTEMPTS: usize = 50;

/// Copies shard directory `src` into `dst` (created), durably; answers the
/// manifest copied.
pub fn copy_shard(src: &Path, dst: &Path) -> Result<Manifest> {
    let dst_chunks = chunk_dir(dst);
    std::fs::create_dir_all(&dst_chunks).map_err(|e| EngineError::io(&dst_chunks, e))?;
    let path = src.join(MANIFEST);
    for _ in 0..ATTEMPTS {
        let m: Manifest = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| EngineError::ChunkCorrupt {
                path: path.clone(),
                reason: format!("manifest does not parse: {e}"),
            })?,
            // Never flushed: an empty shard.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Manifest {
                version: MANIFEST_VERSION,
                next_id: 1,
                ..Default::default()
            },
            Err(e) => return Err(EngineError::io(&path, e)),
        };
        let mut replaced = false;
        for c in &m.chunks {
            let to = chunk_path(dst, c.id);
            if to.exists() {
                continue;
            }
            match copy_durably(&chunk_path(src, c.id), &to) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    replaced = true;
                    break;
                }
                Err(e) => return Err(EngineError::io(&to, e)),
            }
        }
        if replaced {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        // Chunks copied on an earlier try that this manifest no longer
        // names would be removed at start; remove them now.
        let live: std::collections::HashSet<u64> = m.chunks.iter().map(|c| c.id).collect();
        for ent in std::fs::read_dir(&dst_chunks).map_err(|e| EngineError::io(&dst_chunks, e))? {
            let ent = ent.map_err(|e| EngineError::io(&dst_chunks, e))?;
            let id = ent
                .file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".chk"))
                .and_then(|n| n.parse::<u64>().ok());
            if !id.is_some_and(|id| live.contains(&id)) {
                let p = ent.path();
                std::fs::remove_file(&p).map_err(|e| EngineError::io(&p, e))?;
            }
        }
        write_manifest(dst, &m)?;
        return Ok(m);
    }
    Err(EngineError::Io {
        path: src.to_path_buf(),
        source: std::io::Error::other(
            "its chunks kept being replaced while they were copied; try again",
        ),
    })
}

fn copy_durably(from: &Path, to: &Path) -> std::io::Result<()> {
    let tmp = to.with_extension("chk.tmp");
    std::fs::copy(from, &tmp)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_is_copied_with_the_chunks_its_manifest_names() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(chunk_dir(src.path())).unwrap();
        std::fs::write(chunk_path(src.path(), 3), b"three").unwrap();
        std::fs::write(chunk_path(src.path(), 4), b"garbage, not named").unwrap();
        let m = Manifest {
            version: MANIFEST_VERSION,
            flushed_index: 42,
            flushed_term: 2,
            next_id: 5,
            chunks: vec![crate::store::ManifestChunk {
                id: 3,
                overlaps: false,
            }],
        };
        write_manifest(src.path(), &m).unwrap();
        let to = dst.path().join("shard-0");
        let got = copy_shard(src.path(), &to).unwrap();
        assert_eq!(got.flushed_index, 42);
        assert_eq!(std::fs::read(chunk_path(&to, 3)).unwrap(), b"three");
        assert!(!chunk_path(&to, 4).exists());
        let again: Manifest =
            serde_json::from_slice(&std::fs::read(to.join(MANIFEST)).unwrap()).unwrap();
        assert_eq!((again.flushed_index, again.chunks.len()), (42, 1));
        // A shard never flushed copies as an empty one.
        let empty = tempfile::tempdir().unwrap();
        let got = copy_shard(empty.path(), &dst.path().join("shard-1")).unwrap();
        assert!(got.chunks.is_empty());
    }
}
