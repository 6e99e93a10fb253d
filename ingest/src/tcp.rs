//! Line protocol over raw TCP (Telegraf's `socket_writer`), served on every
//! shard's core. glommio binds the listener with SO_REUSEPORT, so the kernel
//! spreads connections over the cores; each connection parses on its core and
//! waits for durability before it reads more, which is its backpressure.
//! With a TLS configuration every connection is TLS, ended on the core by
//! rustls (through futures-rustls, which glommio's streams fit).

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use futures::io::{AsyncRead, AsyncReadExt};
use futures::FutureExt;
use glommio::net::{TcpListener, TcpStream};
use glommio::sync::Semaphore;
use sluice_engine::{CoreContext, CoreFuture, CoreService};

use crate::lp::{self, Precision, WriteOptions};
use crate::stats::{Frontend, Tally, STATS};

/// A line longer than this ends the connection: nothing legitimate is that long.
const MAX_LINE: usize = 16 << 20;
const READ_CHUNK: usize = 256 << 10;
/// Writes one connection may have in flight at once.
const MAX_INFLIGHT: u64 = 4;

/// The TLS configuration to use for a new connection (it may be replaced
/// while the server runs, on SIGHUP).
pub type TlsSource = Arc<dyn Fn() -> Arc<futures_rustls::rustls::ServerConfig> + Send + Sync>;

/// A TLS handshake must be over by then.
const HANDSHAKE: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Clone)]
pub struct TcpConfig {
    pub addr: SocketAddr,
    pub database: String,
    /// Present: connections speak TLS only.
    pub tls: Option<TlsSource>,
    /// Asked for every connection (a connection limit).
    pub admission: Option<crate::Admission>,
    /// A connection that sends nothing for this long is closed, so that
    /// idle or stalled clients do not hold their slots for ever.
    pub idle_timeout: std::time::Duration,
}

impl std::fmt::Debug for TcpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpConfig")
            .field("addr", &self.addr)
            .field("database", &self.database)
            .field("tls", &self.tls.is_some())
            .field("idle_timeout", &self.idle_timeout)
            .finish()
    }
}

/// Binds the listener on the calling thread so a port already in use fails
/// at startup, not silently inside a core.
pub fn check_bind(addr: SocketAddr) -> std::io::Result<()> {
    let sock = std::net::TcpListener::bind(addr)?;
    drop(sock);
    Ok(())
}

pub fn service(cfg: TcpConfig) -> CoreService {
    let cfg = Arc::new(cfg);
    Arc::new(move |ctx: CoreContext| -> CoreFuture {
        let cfg = cfg.clone();
        Box::pin(async move {
            let listener = match TcpListener::bind(cfg.addr) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(shard = ctx.shard, addr = %cfg.addr, error = %e, "line protocol TCP listener failed to bind");
                    return;
                }
            };
            tracing::debug!(shard = ctx.shard, addr = %cfg.addr, "line protocol TCP listener up");
            loop {
                let accepted = futures::select! {
                    c = listener.accept().fuse() => c,
                    _ = ctx.shutdown().fuse() => return,
                };
                match accepted {
                    Ok(stream) => {
                        let peer = stream.peer_addr().ok();
                        let slot = match (&cfg.admission, peer) {
                            (Some(admit), Some(p)) => match (admit.0)(p) {
                                Some(slot) => Some(slot),
                                // Dropped: closed at once.
                                None => continue,
                            },
                            _ => None,
                        };
                        let ctx = ctx.clone();
                        let cfg = cfg.clone();
                        glommio::spawn_local(async move {
                            let _slot = slot;
                            if let Err(e) = accept(stream, &ctx, &cfg).await {
                                tracing::warn!(?peer, error = %e, "line protocol TCP connection closed");
                            }
                        })
                        .detach();
                    }
                    Err(e) => tracing::warn!(error = %e, "accepting a TCP connection failed"),
                }
            }
        })
    })
}

async fn accept(stream: TcpStream, ctx: &CoreContext, cfg: &TcpConfig) -> Result<(), String> {
    let Some(tls) = &cfg.tls else {
        return serve(stream, ctx, cfg).await;
    };
    let handshake = futures_rustls::TlsAcceptor::from(tls()).accept(stream);
    let stream = futures::select! {
        s = handshake.fuse() => s.map_err(|e| format!("TLS handshake: {e}"))?,
        () = glommio::timer::sleep(HANDSHAKE).fuse() => return Err("TLS handshake timed out".into()),
    };
    serve(stream, ctx, cfg).await
}

async fn serve<S: AsyncRead + Unpin>(
    mut stream: S,
    ctx: &CoreContext,
    cfg: &TcpConfig,
) -> Result<(), String> {
    // Writes of one connection overlap (bounded), so the connection is not
    // limited to one fsync round trip per read.
    let inflight = Rc::new(Semaphore::new(MAX_INFLIGHT));
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut line_base = 1usize;
    loop {
        let n = futures::select! {
            r = stream.read(&mut chunk).fuse() => r.map_err(|e| e.to_string())?,
            () = glommio::timer::sleep(cfg.idle_timeout).fuse() => {
                // What came complete is written; a line cut off by the
                // stall may be missing part of a value, so it is not.
                if buf.is_empty() {
                    tracing::debug!("line protocol TCP connection idle; closing it");
                } else {
                    tracing::warn!(partial_bytes = buf.len(), "line protocol TCP connection stalled inside a line; closing it and dropping that line");
                }
                break;
            }
        };
        if n == 0 {
            if !buf.is_empty() {
                spawn_write(ctx, cfg, &inflight, std::mem::take(&mut buf), line_base).await?;
            }
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        let Some(last_nl) = buf.iter().rposition(|b| *b == b'\n') else {
            if buf.len() > MAX_LINE {
                return Err(format!("line longer than {MAX_LINE} bytes"));
            }
            continue;
        };
        let rest = buf.split_off(last_nl + 1);
        let data = std::mem::replace(&mut buf, rest);
        let lines = memchr::memchr_iter(b'\n', &data).count();
        spawn_write(ctx, cfg, &inflight, data, line_base).await?;
        line_base += lines;
    }
    // Every write of the connection has finished once all permits are back.
    inflight
        .acquire(MAX_INFLIGHT)
        .await
        .map_err(|e| e.to_string())
}

async fn spawn_write(
    ctx: &CoreContext,
    cfg: &TcpConfig,
    inflight: &Rc<Semaphore>,
    data: Vec<u8>,
    line_base: usize,
) -> Result<(), String> {
    let permit = inflight
        .acquire_static_permit(1)
        .await
        .map_err(|e| e.to_string())?;
    let (ctx, cfg) = (ctx.clone(), cfg.clone());
    glommio::spawn_local(async move {
        if let Err(e) = write_lines(&ctx, &cfg, &data, line_base).await {
            tracing::warn!(error = %e, "line protocol over TCP: write failed");
        }
        drop(permit);
    })
    .detach();
    Ok(())
}

/// Writes complete lines, numbering rejections from `line_base`.
async fn write_lines(
    ctx: &CoreContext,
    cfg: &TcpConfig,
    data: &[u8],
    line_base: usize,
) -> Result<(), String> {
    let opts = WriteOptions {
        database: cfg.database.clone(),
        precision: Precision::Nanoseconds,
        default_time: lp::now_ns(),
        extra_tags: Vec::new(),
    };
    let engine = &ctx.engine;
    let prepared = match lp::prepare(engine.catalog(), engine.shard_count(), data, &opts) {
        Ok(p) => p,
        Err(e) => {
            STATS.failed(Frontend::Tcp);
            return Err(e.to_string());
        }
    };
    let tally = Tally::of(&prepared.writes);
    if let Some(first) = prepared.rejected.first() {
        tracing::warn!(
            rejected = prepared.rejected_total,
            line = first.line + line_base - 1,
            reason = %first.reason,
            "line protocol over TCP: lines rejected"
        );
    }
    // Over its memory limit a shard refuses writes; TCP has no status code
    // to say so, so the connection waits (and stops being read, which slows
    // the sender through TCP flow control). A retried write may repeat rows
    // that another shard already took; (series, time) dedup absorbs those.
    let mut wait = std::time::Duration::from_millis(20);
    loop {
        match engine.write(prepared.writes.clone()).await {
            Ok(()) => {
                STATS.stored(Frontend::Tcp, &tally, prepared.rejected_total);
                return Ok(());
            }
            // A full disk is waited out as memory is: the sender is held
            // back by TCP until the shard takes writes again.
            Err(
                sluice_engine::EngineError::Backpressure { .. }
                | sluice_engine::EngineError::DiskFull(_),
            ) => {
                glommio::timer::sleep(wait).await;
                wait = (wait * 2).min(std::time::Duration::from_secs(1));
            }
            Err(e) => {
                STATS.failed(Frontend::Tcp);
                return Err(e.to_string());
            }
        }
    }
}
