//! The built-in MQTT broker (rmqtt, embedded): devices publish to Sluice
//! itself. Routed topics are stored before the broker acknowledges them;
//! everything else is plain broker traffic for other subscribers.
//!
//! How a publish becomes rows: rmqtt runs its publish ACL hook for every
//! client PUBLISH before it forwards the message to subscribers and before it
//! sends PUBACK/PUBREC. Sluice's hook matches the topic against the routes,
//! queues the payload on the [`pipeline`], and for QoS 1 and 2 waits until
//! the batch holding it is in the shard logs (fsync). A failed write refuses
//! the publish and closes the connection, so the client retries it; nothing
//! is acknowledged that is not durable. Will messages are stored the same
//! way from the publish hook.

pub mod access;
mod hooks;
mod pipeline;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroU16;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rmqtt::context::ServerContext;
use rmqtt::hook::Type;
use rmqtt::net::Builder;
use rmqtt::server::MqttServer;
use sluice_engine::EngineHandle;

use crate::messages::Committed;
use crate::route::{Format, Route, TopicPattern};

#[derive(Debug, Clone)]
pub struct MqttConfig {
    pub addr: SocketAddr,
    /// Listen on `addr` for plain MQTT.
    pub plain: bool,
    /// Listen on a loopback port for connections handed on, with a PROXY
    /// header, by a TLS terminator (see [`MqttBroker::proxied_addr`]).
    pub proxied: bool,
    /// Listen here for MQTT over WebSocket (browser clients; any path).
    pub ws_addr: Option<SocketAddr>,
    /// A loopback WebSocket listener behind a TLS terminator (wss).
    pub ws_proxied: bool,
    /// Subscriptions one session may hold.
    pub max_subscriptions: usize,
    /// Sessions at most (0: no limit).
    pub max_sessions: usize,
    /// Asked for every connection the broker accepts, with the client's
    /// address (after any PROXY header): a connection limit.
    pub admission: Option<crate::Admission>,
    /// A client must have sent CONNECT this long after its socket opened;
    /// idle half-open sockets are how a flood starves the others.
    pub connect_timeout: Duration,
    /// Username → clear-text password (`mqtt.users`, for a broker without
    /// the access directory).
    pub users: BTreeMap<String, String>,
    /// Set when authentication is on: clients log in as its users (or with
    /// a token as the password), and publish only where they may write.
    pub access: Option<Arc<sluice_access::Access>>,
    /// Failed logins per client address (the access directory's own, so
    /// that every port counts against one limit).
    pub login_throttle: Arc<sluice_access::LoginThrottle>,
    /// Topic ACL rules, in order.
    pub acl: Vec<access::AclRule>,
    /// Whether a publish or subscribe that no rule matches is allowed.
    pub acl_no_match_allows: bool,
    /// Route `ingest/<db>` (line protocol) to database `<db>`.
    pub ingest_topics: bool,
    pub max_payload_bytes: usize,
    pub routes: Vec<Route>,
}

#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("MQTT route {index} ({filter:?}): {reason}")]
    Route {
        index: usize,
        filter: String,
        reason: String,
    },
    #[error("cannot listen for MQTT on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: rmqtt::Error,
    },
    #[error("cannot start the MQTT ingest committer thread: {0}")]
    Committer(std::io::Error),
    #[error("MQTT ACL rule {index} ({topic:?}): {reason}")]
    Acl {
        index: usize,
        topic: String,
        reason: String,
    },
}

/// Counters for `/metrics`.
pub struct MqttMetrics {
    pub messages_stored: AtomicU64,
    pub dead_letters: AtomicU64,
}

pub static METRICS: MqttMetrics = MqttMetrics {
    messages_stored: AtomicU64::new(0),
    dead_letters: AtomicU64::new(0),
};

impl MqttMetrics {
    fn record(&self, c: &Committed) {
        self.messages_stored
            .fetch_add(c.messages as u64, Ordering::Relaxed);
        self.dead_letters
            .fetch_add(c.dead_letters as u64, Ordering::Relaxed);
    }
}

/// Routes compiled for matching, in the order they are tried.
pub(crate) struct RouteTable {
    routes: Vec<(TopicPattern, Route)>,
}

impl RouteTable {
    fn new(cfg: &MqttConfig) -> Result<Self, MqttError> {
        let mut routes = Vec::new();
        for (index, r) in cfg.routes.iter().enumerate() {
            let filter = r.filter.clone().unwrap_or_default();
            let err = |reason: String| MqttError::Route {
                index,
                filter: filter.clone(),
                reason,
            };
            if r.filter.is_none() {
                return Err(err("an MQTT route needs `filter`".into()));
            }
            if r.topic.is_some() {
                return Err(err("`topic` is for Kafka routes; use `filter`".into()));
            }
            r.validate().map_err(err)?;
            let pattern = TopicPattern::parse(&filter).map_err(err)?;
            routes.push((pattern, r.clone()));
        }
        if cfg.ingest_topics {
            let pattern =
                TopicPattern::parse("ingest/{db}").map_err(|reason| MqttError::Route {
                    index: routes.len(),
                    filter: "ingest/{db}".into(),
                    reason,
                })?;
            let route = Route {
                filter: Some("ingest/{db}".into()),
                topic: None,
                database: "{db}".into(),
                format: Format::LineProtocol,
                table: None,
                time: None,
                tags: Vec::new(),
                precision: None,
            };
            routes.push((pattern, route));
        }
        Ok(RouteTable { routes })
    }

    /// The first route whose filter matches `topic`, as an index (see
    /// [`RouteTable::get`]) rather than an `Arc<Route>`, so that a publish
    /// does not touch a reference count shared by every broker thread and
    /// the committer.
    pub(crate) fn find(&self, topic: &str) -> Option<usize> {
        self.routes.iter().position(|(p, _)| p.is_match(topic))
    }

    pub(crate) fn get(&self, index: usize) -> Option<(&TopicPattern, &Route)> {
        self.routes.get(index).map(|(p, r)| (p, r))
    }

    /// A table of `routes` that match every topic, for tests of what comes
    /// after matching.
    #[cfg(test)]
    pub(crate) fn matching_all(routes: Vec<Route>) -> Self {
        let all = TopicPattern::parse("#").expect("`#` is a valid filter");
        RouteTable {
            routes: routes.into_iter().map(|r| (all.clone(), r)).collect(),
        }
    }
}

/// Connections waiting for their CONNECT to be handled, at most.
const PENDING_HANDSHAKES: usize = 10_000;

/// A running broker. It lives as long as the tokio runtime it was started
/// on; rmqtt has no stop of its own.
#[derive(Clone)]
pub struct MqttBroker {
    /// The plain listener, if there is one.
    pub local_addr: Option<SocketAddr>,
    /// The loopback listener a TLS terminator hands connections to.
    pub proxied_addr: Option<SocketAddr>,
    /// The WebSocket listener, if there is one.
    pub ws_addr: Option<SocketAddr>,
    /// The loopback WebSocket listener behind the wss terminator.
    pub ws_proxied_addr: Option<SocketAddr>,
    scx: ServerContext,
}

/// The broker's clients as operators see them.
#[derive(Debug, Clone, Copy)]
pub struct BrokerStatus {
    /// Network connections past the MQTT handshake.
    pub connections: u64,
    /// Sessions, connected or kept for a client that will come back.
    pub sessions: u64,
    pub subscriptions: u64,
}

impl MqttBroker {
    pub async fn status(&self) -> BrokerStatus {
        let shared = self.scx.extends.shared().await;
        BrokerStatus {
            connections: self.scx.connections.count().max(0) as u64,
            sessions: shared.sessions_count() as u64,
            subscriptions: shared.subscriptions_count().await as u64,
        }
    }
}

/// Checks the routes and binds the listener (so a taken port or a bad route
/// fails startup with a clear message), then starts the broker on the
/// current tokio runtime.
pub async fn start(cfg: MqttConfig, engine: EngineHandle) -> Result<MqttBroker, MqttError> {
    let routes = Arc::new(RouteTable::new(&cfg)?);
    for (index, rule) in cfg.acl.iter().enumerate() {
        rule.validate().map_err(|reason| MqttError::Acl {
            index,
            topic: rule.topic.clone(),
            reason,
        })?;
    }
    // Room for the fixed header, topic and properties around the payload.
    let max_packet = cfg
        .max_payload_bytes
        .saturating_add(64 * 1024)
        .min(u32::MAX as usize) as u32;
    let allow_anonymous = cfg.users.is_empty() && cfg.access.is_none();
    let builder = |name: &str, addr: SocketAddr| {
        Builder::new()
            .name(name)
            .laddr(addr)
            .reuseaddr(Some(true))
            // PUBACKs are tiny; Nagle would hold them back.
            .nodelay(true)
            .max_packet_size(max_packet)
            .allow_anonymous(allow_anonymous)
            // Receive Maximum, and so the most QoS 1 publishes of a connection
            // that the (patched) broker checks as one batch: one durable write
            // acknowledges them all.
            .max_inflight(NonZeroU16::new(256).unwrap_or(NonZeroU16::MIN))
            // Messages queued per offline session (mosquitto keeps 1,000).
            .max_mqueue_len(1_000)
            // For MQTT 3.1.1 clients with CleanSession=0, which carry no
            // expiry of their own: their session (subscriptions, queued QoS 1/2
            // messages) outlives a disconnect by this long.
            .session_expiry_interval(Duration::from_secs(2 * 3600))
            .max_session_expiry_interval(Duration::from_secs(7 * 24 * 3600))
            .max_topic_aliases(64)
            // rmqtt's "max_connections" bounds the connections waiting for
            // a handshake worker, not those open.
            .max_connections(PENDING_HANDSHAKES)
            .max_subscriptions(cfg.max_subscriptions)
            .handshake_timeout(cfg.connect_timeout)
    };
    let mut listeners = Vec::new();
    // One listener, plain TCP or WebSocket; `proxied` ones take a PROXY
    // header first.
    let mut listen = |name: &str, at: SocketAddr, proxied: bool, ws: bool| {
        let err = |source| MqttError::Bind { addr: at, source };
        let l = builder(name, at)
            .proxy_protocol(proxied)
            .bind()
            .map_err(err)?;
        let addr = l.local_addr().map_err(err)?;
        let l = if ws { l.ws() } else { l.tcp() }.map_err(err)?;
        listeners.push((l, addr.port()));
        Ok::<_, MqttError>(Some(addr))
    };
    let local_addr = match cfg.plain {
        true => listen("mqtt", cfg.addr, false, false)?,
        false => None,
    };
    let ws_addr = match cfg.ws_addr {
        Some(at) => listen("ws", at, false, true)?,
        None => None,
    };
    // TLS is ended in front of the broker, by terminators that hand each
    // connection on over loopback with a PROXY header naming the client.
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let proxied_addr = match cfg.proxied {
        true => listen("mqtts", loopback, true, false)?,
        false => None,
    };
    let ws_proxied_addr = match cfg.ws_proxied {
        true => listen("wss", loopback, true, true)?,
        false => None,
    };

    let mut scx = ServerContext::new()
        .mqtt_max_sessions(isize::try_from(cfg.max_sessions).unwrap_or(isize::MAX));
    if let Some(a) = cfg.admission.clone() {
        scx = scx.admission(a.0);
    }
    let scx = scx.build().await;
    let retained = hooks::Retained::default();
    scx.extends.set_retain(Box::new(retained.clone()));
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(60));
        loop {
            every.tick().await;
            retained.purge_expired().await;
        }
    });
    *scx.extends.shared_subscription_mut().await = Box::new(hooks::Shared::default());
    let pipeline =
        pipeline::Pipeline::start(engine, routes.clone()).map_err(MqttError::Committer)?;
    let register = scx.extends.hook_mgr().register();
    let gate = if !cfg.users.is_empty() || cfg.access.is_some() {
        let gate = Arc::new(access::Gate::new(
            cfg.access.clone(),
            cfg.login_throttle.clone(),
            cfg.users.clone(),
            cfg.acl.clone(),
            cfg.acl_no_match_allows,
        ));
        let hook = || {
            Box::new(access::Hook {
                gate: gate.clone(),
                routes: routes.clone(),
            })
        };
        register.add(Type::ClientAuthenticate, hook()).await;
        register.add(Type::ClientSubscribeCheckAcl, hook()).await;
        register.add(Type::ClientDisconnected, hook()).await;
        Some(gate)
    } else {
        None
    };
    let ingest = hooks::Ingest {
        gate,
        routes,
        pipeline,
        max_payload: cfg.max_payload_bytes,
    };
    register
        .add(Type::MessagePublishCheckAcl, Box::new(ingest.clone()))
        .await;
    register.add(Type::MessagePublish, Box::new(ingest)).await;
    register.start().await;

    let mut server = MqttServer::new(scx.clone());
    for (l, id) in listeners {
        server = server.listener_by_id(l, id);
    }
    let server = server.build();
    tokio::spawn(async move {
        if let Err(e) = server.run().await {
            tracing::error!(error = %e, "the MQTT broker stopped");
        }
    });
    tracing::info!(addr = ?local_addr, proxied = ?proxied_addr, ws = ?ws_addr,
        ws_proxied = ?ws_proxied_addr, "MQTT broker listening");
    Ok(MqttBroker {
        local_addr,
        proxied_addr,
        ws_addr,
        ws_proxied_addr,
        scx,
    })
}
