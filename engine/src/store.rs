//! A shard's chunk files and the manifest that says which of them are live.
//!
//! `shard-N/manifest.json` is replaced atomically (write, fsync, rename,
//! fsync the directory). It names the live chunks and the raft index up to
//! which they hold every applied entry; the log before that index may be
//! deleted. Chunk files not named by the manifest are leftovers of a flush or
//! compaction that did not finish and are removed at startup.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::chunk::{ChunkReader, Footer};
use crate::error::{EngineError, Result};

pub(crate) const MANIFEST: &str = "manifest.json";
pub(crate) const MANIFEST_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestChunk {
    pub id: u64,
    /// Rows of this chunk may share (series, time) with older data of the
    /// same table, so reads must deduplicate until compaction merges them.
    pub overlaps: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub flushed_index: u64,
    pub flushed_term: u64,
    pub next_id: u64,
    pub chunks: Vec<ManifestChunk>,
}

/// A live chunk: its open reader (the file stays readable through it even
/// after compaction unlinks it) and what the shard knows about it.
pub struct ChunkHandle {
    pub id: u64,
    pub shard: usize,
    pub overlaps: bool,
    pub reader: ChunkReader,
}

impl ChunkHandle {
    pub fn footer(&self) -> &Footer {
        self.reader.footer()
    }
}

/// A chunk the manifest names but that cannot be read.
#[derive(Debug, Clone)]
pub struct BrokenChunk {
    pub id: u64,
    pub path: PathBuf,
    pub error: String,
}

pub fn chunk_dir(shard_dir: &Path) -> PathBuf {
    shard_dir.join("chunks")
}

pub fn chunk_path(shard_dir: &Path, id: u64) -> PathBuf {
    chunk_dir(shard_dir).join(format!("{id:010}.chk"))
}

pub struct Store {
    pub dir: PathBuf,
    pub shard: usize,
    pub manifest: Manifest,
    pub chunks: BTreeMap<u64, Arc<ChunkHandle>>,
    pub broken: Vec<BrokenChunk>,
}

impl Store {
    /// Loads the manifest, opens every live chunk and removes leftovers.
    pub fn open(shard: usize, dir: &Path) -> Result<Store> {
        let path = dir.join(MANIFEST);
        let manifest = match std::fs::read(&path) {
            Ok(bytes) => {
                let m: Manifest =
                    serde_json::from_slice(&bytes).map_err(|e| EngineError::ChunkCorrupt {
                        path: path.clone(),
                        reason: format!("manifest does not parse: {e}"),
                    })?;
                if m.version != MANIFEST_VERSION {
                    return Err(EngineError::ChunkCorrupt {
                        path,
                        reason: format!("manifest version {} is not supported", m.version),
                    });
                }
                m
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Manifest {
                version: MANIFEST_VERSION,
                next_id: 1,
                ..Default::default()
            },
            Err(e) => return Err(EngineError::io(&path, e)),
        };
        let cdir = chunk_dir(dir);
        std::fs::create_dir_all(&cdir).map_err(|e| EngineError::io(&cdir, e))?;
        let mut chunks = BTreeMap::new();
        let mut broken = Vec::new();
        for c in &manifest.chunks {
            let p = chunk_path(dir, c.id);
            match ChunkReader::open(&p) {
                Ok(reader) => {
                    chunks.insert(
                        c.id,
                        Arc::new(ChunkHandle {
                            id: c.id,
                            shard,
                            overlaps: c.overlaps,
                            reader,
                        }),
                    );
                }
                Err(e) => {
                    tracing::error!(shard, chunk = %p.display(), error = %e,
                        "chunk unreadable; its rows are left out of queries until it is repaired");
                    broken.push(BrokenChunk {
                        id: c.id,
                        path: p,
                        error: e.to_string(),
                    });
                }
            }
        }
        let live: std::collections::HashSet<u64> = manifest.chunks.iter().map(|c| c.id).collect();
        for ent in std::fs::read_dir(&cdir).map_err(|e| EngineError::io(&cdir, e))? {
            let ent = ent.map_err(|e| EngineError::io(&cdir, e))?;
            let name = ent.file_name();
            let id = name
                .to_str()
                .and_then(|n| n.strip_suffix(".chk"))
                .and_then(|n| n.parse::<u64>().ok());
            match id {
                Some(id) if live.contains(&id) => {}
                _ => {
                    let p = ent.path();
                    tracing::info!(shard, file = %p.display(), "removing leftover chunk file");
                    std::fs::remove_file(&p).map_err(|e| EngineError::io(&p, e))?;
                }
            }
        }
        Ok(Store {
            dir: dir.to_path_buf(),
            shard,
            manifest,
            chunks,
            broken,
        })
    }

    pub fn snapshot_point(&self) -> Option<(u64, u64)> {
        (self.manifest.flushed_index > 0)
            .then_some((self.manifest.flushed_index, self.manifest.flushed_term))
    }

    /// Chunks of one table, oldest first.
    pub fn table_chunks(&self, database: &str, table: &str) -> Vec<Arc<ChunkHandle>> {
        self.chunks
            .values()
            .filter(|c| c.footer().database == database && c.footer().table == table)
            .cloned()
            .collect()
    }
}

/// Writes `bytes` as chunk `id` and makes it durable. Blocking: runs on the
/// shard's blocking thread, never on its reactor.
pub fn write_chunk_file(shard_dir: &Path, id: u64, bytes: &[u8]) -> Result<ChunkReader> {
    use std::io::Write;
    let path = chunk_path(shard_dir, id);
    let mut f = std::fs::File::create(&path).map_err(|e| EngineError::io(&path, e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| EngineError::io(&path, e))?;
    ChunkReader::open(&path)
}

/// Replaces the manifest atomically. Blocking, like `write_chunk_file`.
pub fn write_manifest(shard_dir: &Path, m: &Manifest) -> Result<()> {
    use std::io::Write;
    sluice_raftlog::sync_dir(&chunk_dir(shard_dir))?;
    let tmp = shard_dir.join("manifest.json.tmp");
    let path = shard_dir.join(MANIFEST);
    let bytes = serde_json::to_vec(m).map_err(|e| EngineError::Encode(e.to_string()))?;
    let mut f = std::fs::File::create(&tmp).map_err(|e| EngineError::io(&tmp, e))?;
    f.write_all(&bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| EngineError::io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| EngineError::io(&path, e))?;
    Ok(sluice_raftlog::sync_dir(shard_dir)?)
}
