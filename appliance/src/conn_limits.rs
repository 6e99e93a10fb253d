//! Connection limits, in all and per client address, shared by the front
//! ends that accept TCP connections themselves (HTTP, PostgreSQL): one
//! flooding address cannot take every connection, and no front end can run
//! the process out of file descriptors.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Connections a front end holds and has turned away, for the status.
pub struct Connections {
    pub open: AtomicU64,
    pub refused: AtomicU64,
}

impl Connections {
    pub const fn new() -> Connections {
        Connections {
            open: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }
}

pub struct Limiter {
    all: Arc<Semaphore>,
    max: usize,
    per_client: usize,
    clients: Arc<Mutex<HashMap<IpAddr, usize>>>,
    counts: &'static Connections,
    refused_logged: Mutex<Option<Instant>>,
}

/// Raw TCP line protocol's connections (its accept loop is glommio's).
pub static LP_TCP: Connections = Connections::new();

/// Every connection the MQTT broker lets in (TCP, WebSocket, and those
/// handed on by the TLS terminators).
pub static MQTT: Connections = Connections::new();

/// The admission (see [`sluice_ingest::Admission`]) of a front end that
/// accepts connections itself: a [`Limiter`] of `max` in all and
/// `per_client` per address, whose slot is held while the connection lasts.
pub fn admission(
    max: usize,
    per_client: usize,
    counts: &'static Connections,
    what: &'static str,
) -> sluice_ingest::Admission {
    let limiter = Limiter::new(max, per_client, counts);
    sluice_ingest::Admission(Arc::new(move |peer: std::net::SocketAddr| {
        limiter
            .take(peer.ip(), what)
            .map(|slot| Box::new(slot) as Box<dyn std::any::Any + Send>)
    }))
}

/// One open connection's share of the limits, given back on drop.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    clients: Arc<Mutex<HashMap<IpAddr, usize>>>,
    counts: &'static Connections,
    ip: IpAddr,
}

impl Limiter {
    pub fn new(max: usize, per_client: usize, counts: &'static Connections) -> Limiter {
        let max = max.max(1);
        Limiter {
            all: Arc::new(Semaphore::new(max)),
            max,
            per_client: per_client.max(1),
            clients: Default::default(),
            counts,
            refused_logged: Mutex::new(None),
        }
    }

    /// A slot for a connection from `ip`, or None (counted, and logged at
    /// most every ten seconds under `what`) when a limit is reached.
    pub fn take(&self, ip: IpAddr, what: &str) -> Option<Slot> {
        let slot = self
            .all
            .clone()
            .try_acquire_owned()
            .ok()
            .and_then(|permit| {
                let mut m = self
                    .clients
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let n = m.entry(ip).or_insert(0);
                if *n >= self.per_client {
                    return None;
                }
                *n += 1;
                self.counts.open.fetch_add(1, Ordering::Relaxed);
                Some(Slot {
                    _permit: permit,
                    clients: self.clients.clone(),
                    counts: self.counts,
                    ip,
                })
            });
        if slot.is_none() {
            self.counts.refused.fetch_add(1, Ordering::Relaxed);
            let mut last = self
                .refused_logged
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                tracing::warn!(peer = %ip, "{what} connection refused: connection limit reached");
                *last = Some(Instant::now());
            }
        }
        slot
    }

    /// Waits (up to `timeout`) until every slot is given back.
    pub async fn drain(&self, timeout: Duration) {
        let _ = tokio::time::timeout(
            timeout,
            self.all
                .acquire_many(u32::try_from(self.max).unwrap_or(u32::MAX)),
        )
        .await;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.counts.open.fetch_sub(1, Ordering::Relaxed);
        let mut m = self
            .clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}
