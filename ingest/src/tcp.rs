//! Line protocol over raw TCP (Telegraf's `socket_writer`), served on every
//! shard's core. glommio binds the listener with SO_REUSEPORT, so the kernel
//! spreads connections over the cores; each connection parses on its core and
//! waits for durability before it reads more, which is its backpressure.

use std::net::SocketAddr;
use std::sync::Arc;

use futures::io::AsyncReadExt;
use futures::FutureExt;
use glommio::net::{TcpListener, TcpStream};
use sluice_engine::{CoreContext, CoreFuture, CoreService};

use crate::lp::{self, Precision, WriteOptions};

/// A line longer than this ends the connection: nothing legitimate is that long.
const MAX_LINE: usize = 16 << 20;
const READ_CHUNK: usize = 256 << 10;

#[derive(Debug, Clone)]
pub struct TcpConfig {
    pub addr: SocketAddr,
    pub database: String,
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
                        let ctx = ctx.clone();
                        let cfg = cfg.clone();
                        glommio::spawn_local(async move {
                            let peer = stream.peer_addr().ok();
                            if let Err(e) = serve(stream, &ctx, &cfg).await {
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

async fn serve(mut stream: TcpStream, ctx: &CoreContext, cfg: &TcpConfig) -> Result<(), String> {
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut line_base = 1usize;
    loop {
        let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            if !buf.is_empty() {
                write_lines(ctx, cfg, &buf, line_base).await?;
            }
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        let Some(last_nl) = buf.iter().rposition(|b| *b == b'\n') else {
            if buf.len() > MAX_LINE {
                return Err(format!("line longer than {MAX_LINE} bytes"));
            }
            continue;
        };
        let rest = buf.split_off(last_nl + 1);
        line_base += write_lines(ctx, cfg, &buf, line_base).await?;
        buf = rest;
    }
}

/// Writes complete lines; returns how many physical lines they spanned.
async fn write_lines(
    ctx: &CoreContext,
    cfg: &TcpConfig,
    data: &[u8],
    line_base: usize,
) -> Result<usize, String> {
    let opts = WriteOptions {
        database: cfg.database.clone(),
        precision: Precision::Nanoseconds,
        default_time: lp::now_ns(),
    };
    let engine = &ctx.engine;
    let prepared = lp::prepare(engine.catalog(), engine.shard_count(), data, &opts)
        .map_err(|e| e.to_string())?;
    if let Some(first) = prepared.rejected.first() {
        tracing::warn!(
            rejected = prepared.rejected_total,
            line = first.line + line_base - 1,
            reason = %first.reason,
            "line protocol over TCP: lines rejected"
        );
    }
    engine
        .write(prepared.writes)
        .await
        .map_err(|e| e.to_string())?;
    Ok(data.iter().filter(|b| **b == b'\n').count())
}
