//! MQTT over TLS (8883) and over secure WebSocket (8084; the WebSocket
//! handshake itself is the broker's). TLS is ended here, with the same reloadable
//! certificate as HTTP and the PostgreSQL port (`[tls]`, SIGHUP), and each
//! connection is handed on to the broker's loopback listener behind a
//! PROXY protocol header carrying the client's address, so the broker sees
//! the client as it is. rmqtt's own TLS would read its PEM files once and
//! bring a second crypto stack.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use proxy_protocol::version1::ProxyAddresses;
use proxy_protocol::ProxyHeader;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::conn_limits::Limiter;
use crate::tls::Tls;

/// The TLS handshake must be over by then.
const HANDSHAKE: Duration = Duration::from_secs(10);

pub static CONNECTIONS: crate::conn_limits::Connections = crate::conn_limits::Connections::new();

fn header(client: SocketAddr, local: SocketAddr) -> Option<Vec<u8>> {
    let addresses = match (client, local) {
        (SocketAddr::V4(source), SocketAddr::V4(destination)) => ProxyAddresses::Ipv4 {
            source,
            destination,
        },
        (SocketAddr::V6(source), SocketAddr::V6(destination)) => ProxyAddresses::Ipv6 {
            source,
            destination,
        },
        _ => ProxyAddresses::Unknown,
    };
    proxy_protocol::encode(ProxyHeader::Version1 { addresses })
        .ok()
        .map(|b| b.to_vec())
}

pub async fn serve(
    listener: TcpListener,
    tls: Arc<Tls>,
    broker: SocketAddr,
    limiter: Arc<Limiter>,
) {
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accepting an MQTT TLS connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = limiter.take(peer.ip(), "MQTT TLS") else {
            continue;
        };
        let acceptor = tls.acceptor();
        tokio::spawn(async move {
            let _slot = slot;
            let _ = socket.set_nodelay(true);
            let local = socket.local_addr().ok();
            let mut client = match tokio::time::timeout(HANDSHAKE, acceptor.accept(socket)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "MQTT TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "MQTT TLS handshake timed out");
                    return;
                }
            };
            let Some(head) = local.and_then(|l| header(peer, l)) else {
                return;
            };
            let mut upstream = match TcpStream::connect(broker).await {
                Ok(u) => u,
                Err(e) => {
                    tracing::warn!(error = %e, "the MQTT broker's loopback listener is unreachable");
                    return;
                }
            };
            let _ = upstream.set_nodelay(true);
            if upstream.write_all(&head).await.is_err() {
                return;
            }
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        });
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_header_names_the_client() {
        let h = super::header(
            "10.1.2.3:40000".parse().unwrap_or_else(|e| panic!("{e}")),
            "127.0.0.1:8883".parse().unwrap_or_else(|e| panic!("{e}")),
        )
        .unwrap_or_default();
        assert_eq!(
            String::from_utf8_lossy(&h),
            "PROXY TCP4 10.1.2.3 127.0.0.1 40000 8883\r\n"
        );
    }
}
