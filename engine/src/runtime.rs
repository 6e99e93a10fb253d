//! Starting, addressing and stopping the shards.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use futures::channel::oneshot;
use glommio::{CpuSet, LocalExecutorBuilder, Placement};

use crate::batch::WriteBatch;
use crate::catalog::{self, Catalog, CatalogStore};
use crate::error::{EngineError, Result};
use crate::jobs::{StorageConfig, TableSnapshot};
use crate::shard::{self, QueryMsg, ShardMsg, ShardParts, ShardStats};
use crate::store::{BrokenChunk, ChunkHandle};

/// glommio refuses to start below this RLIMIT_MEMLOCK.
const MIN_MEMLOCK: u64 = 512 * 1024;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub data_dir: PathBuf,
    pub shards: usize,
    /// Bytes of io_uring-registered memory per shard. Registration needs
    /// locked memory; when the limit is too small glommio falls back to
    /// unregistered buffers, which only costs a little speed.
    pub io_memory: usize,
    pub pin_cores: bool,
    pub storage: StorageConfig,
    /// Where the catalog lives; absent: `catalog.log` in `data_dir`. A
    /// `catalog.log` found beside a store given here is migrated into it.
    pub catalog: Option<Arc<dyn CatalogStore>>,
}

/// What a per-core service (such as the TCP line-protocol listener) gets.
#[derive(Clone)]
pub struct CoreContext {
    pub shard: usize,
    pub engine: EngineHandle,
    shutdown: flume::Receiver<()>,
}

impl CoreContext {
    /// Resolves when the engine is shutting down.
    pub async fn shutdown(&self) {
        let _ = self.shutdown.recv_async().await;
    }
}

pub type CoreFuture = Pin<Box<dyn Future<Output = ()>>>;
/// A service started on every shard's core once that shard is ready.
pub type CoreService = Arc<dyn Fn(CoreContext) -> CoreFuture + Send + Sync>;

struct ShardHandle {
    writes: flume::Sender<ShardMsg>,
    queries: flume::Sender<QueryMsg>,
}

/// A cheap, cloneable way to reach the shards from any thread.
#[derive(Clone)]
pub struct EngineHandle {
    catalog: Arc<Catalog>,
    shards: Arc<[ShardHandle]>,
    data_dir: Arc<std::path::Path>,
}

impl EngineHandle {
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Where shard `id` keeps its log, manifest and chunks.
    pub fn shard_dir(&self, id: usize) -> std::path::PathBuf {
        shard_dir(&self.data_dir, id)
    }

    /// Writes to each named shard and resolves once every one of them has the
    /// batch durable in its log and applied to its buffer.
    pub async fn write(&self, batches: Vec<(usize, WriteBatch)>) -> Result<()> {
        let mut waits = Vec::with_capacity(batches.len());
        for (shard, batch) in batches {
            let h = self
                .shards
                .get(shard)
                .ok_or(EngineError::ShardUnavailable(shard))?;
            let (tx, rx) = oneshot::channel();
            h.writes
                .send_async(ShardMsg::Write { batch, reply: tx })
                .await
                .map_err(|_| EngineError::ShardUnavailable(shard))?;
            waits.push((shard, rx));
        }
        let mut first_err = None;
        for (shard, rx) in waits {
            let res = rx
                .await
                .unwrap_or(Err(EngineError::ShardUnavailable(shard)));
            if let Err(e) = res {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// One consistent snapshot of the table per shard, restricted to batches
    /// whose time range meets `[min, max]`.
    pub async fn snapshot(
        &self,
        database: &str,
        table: &str,
        min: i64,
        max: i64,
    ) -> Result<Vec<TableSnapshot>> {
        let mut waits = Vec::with_capacity(self.shards.len());
        for (i, h) in self.shards.iter().enumerate() {
            let (tx, rx) = oneshot::channel();
            h.queries
                .send_async(QueryMsg::Snapshot {
                    database: database.to_string(),
                    table: table.to_string(),
                    min,
                    max,
                    reply: tx,
                })
                .await
                .map_err(|_| EngineError::ShardUnavailable(i))?;
            waits.push((i, rx));
        }
        let mut out = Vec::with_capacity(waits.len());
        for (i, rx) in waits {
            out.push(rx.await.map_err(|_| EngineError::ShardUnavailable(i))?);
        }
        Ok(out)
    }

    /// Every live chunk of every shard, and the chunks that cannot be read.
    pub async fn chunks(&self) -> Result<Vec<(Vec<Arc<ChunkHandle>>, Vec<BrokenChunk>)>> {
        let mut out = Vec::with_capacity(self.shards.len());
        for (i, h) in self.shards.iter().enumerate() {
            let (tx, rx) = oneshot::channel();
            h.queries
                .send_async(QueryMsg::Chunks { reply: tx })
                .await
                .map_err(|_| EngineError::ShardUnavailable(i))?;
            out.push(rx.await.map_err(|_| EngineError::ShardUnavailable(i))?);
        }
        Ok(out)
    }

    /// Flushes every shard's buffer into chunks and compacts; resolves when
    /// all of it is durable.
    pub async fn flush(&self) -> Result<()> {
        let mut waits = Vec::with_capacity(self.shards.len());
        for (i, h) in self.shards.iter().enumerate() {
            let (tx, rx) = oneshot::channel();
            h.writes
                .send_async(ShardMsg::Flush { reply: tx })
                .await
                .map_err(|_| EngineError::ShardUnavailable(i))?;
            waits.push((i, rx));
        }
        for (i, rx) in waits {
            rx.await.map_err(|_| EngineError::ShardUnavailable(i))??;
        }
        Ok(())
    }

    pub async fn stats(&self) -> Result<Vec<ShardStats>> {
        let mut out = Vec::with_capacity(self.shards.len());
        for (i, h) in self.shards.iter().enumerate() {
            let (tx, rx) = oneshot::channel();
            h.queries
                .send_async(QueryMsg::Stats { reply: tx })
                .await
                .map_err(|_| EngineError::ShardUnavailable(i))?;
            out.push(rx.await.map_err(|_| EngineError::ShardUnavailable(i))?);
        }
        Ok(out)
    }
}

pub struct Engine {
    handle: EngineHandle,
    joins: Vec<glommio::ExecutorJoinHandle<()>>,
    shutdown: Option<flume::Sender<()>>,
}

/// RLIMIT_MEMLOCK as the kernel reports it for this process.
fn memlock_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max locked memory"))?;
    let soft = line.split_whitespace().nth(3)?;
    if soft == "unlimited" {
        return Some(u64::MAX);
    }
    soft.parse().ok()
}

fn placements(n: usize, pin: bool) -> Vec<Placement> {
    let cpus: Vec<usize> = if pin {
        CpuSet::online()
            .map(|s| s.into_iter().map(|c| c.cpu).collect())
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    (0..n)
        .map(|i| {
            if cpus.is_empty() {
                Placement::Unbound
            } else {
                Placement::Fixed(cpus[i % cpus.len()])
            }
        })
        .collect()
}

pub fn shard_dir(data_dir: &std::path::Path, id: usize) -> std::path::PathBuf {
    data_dir.join(format!("shard-{id}"))
}

/// A series lives in the shard its hash picks among all shards (invariant
/// 8): started with another count, a node would look for it elsewhere.
fn check_shard_count(data_dir: &std::path::Path, shards: usize) -> Result<()> {
    let mut found = 0;
    for ent in std::fs::read_dir(data_dir).map_err(|e| EngineError::io(data_dir, e))? {
        let ent = ent.map_err(|e| EngineError::io(data_dir, e))?;
        let is_shard = ent
            .file_name()
            .to_str()
            .and_then(|n| n.strip_prefix("shard-"))
            .is_some_and(|n| n.parse::<usize>().is_ok());
        if is_shard && ent.path().is_dir() {
            found += 1;
        }
    }
    if found > 0 && found != shards {
        return Err(EngineError::Config(format!(
            "{} holds {found} shards and this start asks for {shards}: series are placed by the \
             shard count, so start with --shards {found} (engine.shards = {found})",
            data_dir.display()
        )));
    }
    Ok(())
}

impl Engine {
    /// Opens the catalog, starts one executor per shard, replays every shard
    /// log and returns once all shards serve. `services` run on every core.
    pub fn start(cfg: &EngineConfig, services: Vec<CoreService>) -> Result<Engine> {
        if cfg.shards == 0 {
            return Err(EngineError::Config("shards must be at least 1".into()));
        }
        if let Some(have) = memlock_limit() {
            if have < MIN_MEMLOCK {
                return Err(EngineError::MemLock {
                    have,
                    need: MIN_MEMLOCK,
                });
            }
        }
        std::fs::create_dir_all(&cfg.data_dir).map_err(|e| EngineError::io(&cfg.data_dir, e))?;
        check_shard_count(&cfg.data_dir, cfg.shards)?;
        let store: Arc<dyn CatalogStore> = match &cfg.catalog {
            Some(s) => {
                catalog::migrate(&cfg.data_dir, &**s)?;
                s.clone()
            }
            None => Arc::new(catalog::LogFile::open(&cfg.data_dir)?),
        };
        let catalog = Arc::new(Catalog::open(store)?);
        let mut handles = Vec::new();
        let mut parts = Vec::new();
        for id in 0..cfg.shards {
            let (wtx, wrx) = flume::bounded(1024);
            let (qtx, qrx) = flume::unbounded();
            handles.push(ShardHandle {
                writes: wtx,
                queries: qtx,
            });
            parts.push(ShardParts {
                id,
                dir: shard_dir(&cfg.data_dir, id),
                catalog: catalog.clone(),
                writes: wrx,
                queries: qrx,
                storage: cfg.storage.clone(),
            });
        }
        let handle = EngineHandle {
            catalog,
            shards: handles.into(),
            data_dir: cfg.data_dir.clone().into(),
        };
        let (stop_tx, stop_rx) = flume::bounded::<()>(0);
        let mut joins = Vec::new();
        let mut readies = Vec::new();
        for (p, placement) in parts.into_iter().zip(placements(cfg.shards, cfg.pin_cores)) {
            let id = p.id;
            let (rtx, rrx) = std::sync::mpsc::channel();
            let ctx = CoreContext {
                shard: id,
                engine: handle.clone(),
                shutdown: stop_rx.clone(),
            };
            let services = services.clone();
            let join = LocalExecutorBuilder::new(placement)
                .name(&format!("shard-{id}"))
                .io_memory(cfg.io_memory)
                .spawn(move || async move {
                    shard::run(p, rtx, move || {
                        for s in &services {
                            glommio::spawn_local(s(ctx.clone())).detach();
                        }
                    })
                    .await
                })
                .map_err(|e| EngineError::Runtime(format!("starting shard {id}: {e}")))?;
            joins.push(join);
            readies.push((id, rrx));
        }
        let mut engine = Engine {
            handle,
            joins,
            shutdown: Some(stop_tx),
        };
        for (id, rrx) in readies {
            match rrx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    engine.stop();
                    return Err(e);
                }
                Err(_) => {
                    engine.stop();
                    return Err(EngineError::Runtime(format!(
                        "shard {id} died during startup (see the log above)"
                    )));
                }
            }
        }
        Ok(engine)
    }

    pub fn handle(&self) -> EngineHandle {
        self.handle.clone()
    }

    /// Stops services and shards; pending writes are made durable first.
    pub fn stop(&mut self) {
        self.shutdown.take();
        for h in self.handle.shards.iter() {
            let _ = h.writes.send(ShardMsg::Shutdown);
        }
        for j in self.joins.drain(..) {
            if let Err(e) = j.join() {
                tracing::warn!(error = %e, "shard executor ended with an error");
            }
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop();
    }
}
