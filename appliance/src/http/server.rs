//! The HTTP accept loop: connection limits (in all and per client address),
//! a deadline for a request's headers, TLS when configured, and a graceful
//! stop. axum's own `serve` sets no header deadline, so a client that sends
//! its headers a byte at a time would hold a connection for ever.

use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::conn_limits::{Connections, Limiter};

use crate::tls::Tls;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub max_per_client: usize,
    /// From accepting a connection (or the end of the last response) to
    /// the end of the next request's headers, TLS handshake included.
    pub header_timeout: Duration,
}

/// Connections the HTTP server holds and has turned away, for the status.
pub static CONNECTIONS: Connections = Connections::new();

/// Serves `app` on `listener` until `shutdown` resolves, then lets open
/// requests finish (for a few seconds at most).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<Tls>>,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let limiter = Limiter::new(limits.max_connections, limits.max_per_client, &CONNECTIONS);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    loop {
        let (socket, peer): (TcpStream, SocketAddr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors or similar: wait rather than spin.
                    tracing::warn!(error = %e, "accepting an HTTP connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(slot) = limiter.take(peer.ip(), "HTTP") else {
            // Closing at once is the cheapest answer to a flood.
            drop(socket);
            continue;
        };
        let _ = socket.set_nodelay(true);
        let app = app.clone();
        let tls = tls.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let _slot = slot;
            // Handlers read the client's address (to count its failed
            // logins) where axum's own serve would put it.
            let app =
                tower::util::MapRequest::new(app, move |mut req: axum::extract::Request<_>| {
                    req.extensions_mut().insert(ConnectInfo(peer));
                    req
                });
            let service = TowerToHyperService::new(app);
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            match tls {
                Some(tls) => {
                    let handshake =
                        tokio::time::timeout(limits.header_timeout, tls.acceptor().accept(socket));
                    let stream = match handshake.await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    drive(conn.with_upgrades(), &mut stop).await;
                }
                None => {
                    let conn = builder.serve_connection(TokioIo::new(socket), service);
                    drive(conn.with_upgrades(), &mut stop).await;
                }
            }
        });
    }
    let _ = stop_tx.send(true);
    // Every connection holds a slot until it ends.
    limiter.drain(Duration::from_secs(5)).await;
}

async fn drive<C>(conn: C, stop: &mut watch::Receiver<bool>)
where
    C: std::future::Future<Output = hyper::Result<()>> + GracefulConn,
{
    let mut conn = pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::trace!(error = %e, "HTTP connection ended");
            }
            return;
        }
        _ = stop.wait_for(|s| *s) => {}
    }
    conn.as_mut().shutdown();
    let _ = conn.await;
}

/// The one call `drive` needs of a hyper connection.
trait GracefulConn {
    fn shutdown(self: std::pin::Pin<&mut Self>);
}

impl<I, S> GracefulConn for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::ResBody: 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn shutdown(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}
