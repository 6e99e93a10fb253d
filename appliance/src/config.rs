//! Configuration, layered: built-in defaults < TOML file < `SLUICE_…`
//! environment variables < command-line flags.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

#[derive(Debug, Parser)]
#[command(
    name = "sluice",
    version,
    about = "Sluice: a time-series ingestion appliance (line protocol in, SQL out)",
    after_help = "Every setting can also come from a TOML file (--config) or from the \
environment as SLUICE_<SECTION>__<KEY>, e.g. SLUICE_HTTP__ADDR=0.0.0.0:8086 or \
SLUICE_ENGINE__SHARDS=4. Precedence: defaults < file < environment < flags.

Settings (section.key = default):
  engine.data_dir = \"./sluice-data\"    catalog and shard logs
  engine.shards = 0                    0: one shard per core
  engine.io_memory = 1048576           io_uring buffer bytes per shard (locked memory)
  engine.pin_cores = true              pin each shard to a core
  http.addr = \"127.0.0.1:8086\"         HTTP API
  http.max_body_bytes = 67108864       largest request body, after gzip
  http.max_inflight_body_bytes = 1073741824  all bodies held at once; past it 503
  auth.enabled = false                 users, roles and tokens (CREATE USER, GRANT, /api/v1/tokens)
                                       on every port; the first start makes a superuser
  auth.admin_user = \"admin\"            that superuser; its password is read from
  auth.admin_password_file             this file, or SLUICE_INITIAL_ADMIN_PASSWORD, or made up
                                       and written to <data_dir>/initial-admin-password (0600)
  auth.max_failed_logins = 10          per client address within auth.failed_login_window_secs
                                       (300); past it logins from there get 429 / 28000 until
                                       the window ends, on every port; 0: not counted
  http.auth_token                      a shared secret that may do everything (Token/Bearer/
                                       basic password/p=); also turns authentication on
  http.metrics_public = false          serve /metrics without the token
  http.ui_dir                          serve the console from this folder, not the binary
  http.max_connections = 4096          open HTTP connections at most
  http.max_connections_per_client = 512  per client address
  http.request_header_timeout_secs = 10  headers (and TLS handshake) must arrive by then
  [tls] cert, key, client_ca           PEM files: HTTPS only, TLS only on the PostgreSQL port and MQTT
                                       (pg.allow_plaintext = true also takes plain clients), client
                                       certificates required if client_ca; SIGHUP reloads
  lp_tcp.enabled = true                line protocol over TCP
  lp_tcp.addr = \"127.0.0.1:8094\"
  lp_tcp.database = \"default\"          database for TCP lines
  lp_tcp.allow_unauthenticated = false with http.auth_token set, TCP stays off unless true
  lp_tcp.max_connections = 4096        open connections at most; more are closed at once
  lp_tcp.max_connections_per_client = 512  per client address
  lp_tcp.idle_timeout_secs = 300       a connection silent this long is closed
  pg.enabled = true                    the PostgreSQL wire protocol
  pg.addr = \"127.0.0.1:5432\"
  pg.max_connections = 256             more are refused with SQLSTATE 53300
  pg.max_connections_per_client = 128  per client address
  storage.flush_bytes = 33554432       flush a shard's buffer at this size
  storage.flush_interval_secs = 60     flush rows older than this
  storage.max_buffer_bytes = 268435456 per shard; above it writes get HTTP 503
  storage.partition_hours = 24         time partition of chunk files
  storage.compact_min_chunks = 4       compact a partition at this many chunks
  storage.log_segment_bytes = 67108864 log segment size before rolling
  storage.min_free_bytes = 268435456   below this much free disk, writes get 507
  mqtt.enabled = true                  the built-in MQTT broker
  mqtt.addr = \"127.0.0.1:1883\"
  mqtt.tls_addr = \"127.0.0.1:8883\"   MQTT over TLS, with [tls]; plain MQTT then stays off
                                       unless mqtt.allow_plaintext = true
  mqtt.websocket = true                MQTT over WebSocket on mqtt.ws_addr (127.0.0.1:8083),
                                       and with [tls] over wss on mqtt.wss_addr (127.0.0.1:8084)
  mqtt.max_connections = 100000        MQTT connections at most, every transport
  mqtt.max_connections_per_client = 10000  per client address
  mqtt.max_sessions = 100000           sessions, kept ones of absent clients included
  mqtt.max_subscriptions = 1000        per session
  mqtt.connect_timeout_secs = 10       from opening a socket to CONNECT
  mqtt.users = {}                      username = clear password, without auth.enabled
  [[mqtt.acl]]                         user, action (publish|subscribe|all), topic, permission
  mqtt.acl_no_match = \"allow\"          when no ACL rule matches: allow or deny
  mqtt.ingest_topics = true            line protocol on ingest/<db> goes to <db>
  mqtt.max_payload_bytes = 1048576
  [[mqtt.routes]]                      filter, database, format, table, time, tags
  kafka.brokers                        no [kafka] section: no consumer
  kafka.group_id = \"sluice\"
  kafka.properties = {}                librdkafka settings, passed as they are
                                       (security.protocol = ssl | sasl_ssl | sasl_plaintext,
                                       sasl.mechanisms = PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512,
                                       sasl.username, ssl.ca.location, ssl.certificate.location, …)
  kafka.sasl_password_file             sasl.password read from this file
  [[kafka.routes]]                     topic, database, format, table, time, tags
  log.level = \"info\"                   tracing filter; RUST_LOG overrides
`sluice config` prints the effective settings."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the server: HTTP API, line protocol over TCP, and the shards.
    Serve(ServeArgs),
    /// Print the effective configuration as TOML and exit.
    Config(ServeArgs),
    /// Copy a backup (taken with `POST /api/v1/backup`) into a new data
    /// directory, to start a node from it.
    Restore(RestoreArgs),
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup directory.
    #[arg(long, value_name = "DIR")]
    pub from: PathBuf,
    /// The data directory to create; it must be absent or empty.
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
}

#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory holding the catalog and the shard logs [default: ./sluice-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// HTTP API address: /write, /api/v2/write, /query, /api/v1/sql, /ping, /health
    /// [default: 127.0.0.1:8086].
    #[arg(long, value_name = "ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// Line protocol over TCP address [default: 127.0.0.1:8094].
    #[arg(long, value_name = "ADDR")]
    pub lp_tcp_addr: Option<SocketAddr>,
    /// MQTT broker address [default: 127.0.0.1:1883].
    #[arg(long, value_name = "ADDR")]
    pub mqtt_addr: Option<SocketAddr>,
    /// PostgreSQL wire protocol address [default: 127.0.0.1:5432].
    #[arg(long, value_name = "ADDR")]
    pub pg_addr: Option<SocketAddr>,
    /// Kafka bootstrap servers; starts the Kafka consumer (routes come from
    /// the config file's [[kafka.routes]]).
    #[arg(long, value_name = "HOST:PORT[,…]")]
    pub kafka_brokers: Option<String>,
    /// Number of shards, one per core [default: number of cores].
    #[arg(long, value_name = "N")]
    pub shards: Option<usize>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub engine: EngineSection,
    pub http: HttpSection,
    pub lp_tcp: LpTcpSection,
    pub pg: PgSection,
    pub storage: StorageSection,
    pub mqtt: MqttSection,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka: Option<KafkaSection>,
    /// Present: HTTP and the PostgreSQL port speak only TLS (the latter
    /// also plain with `pg.allow_plaintext`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<crate::tls::TlsSection>,
    pub auth: AuthSection,
    pub log: LogSection,
}

/// Users, roles and tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSection {
    /// Every port and endpoint asks for credentials.
    pub enabled: bool,
    /// The superuser made when none can log in (the first start).
    pub admin_user: String,
    /// A file holding that superuser's first password.
    pub admin_password_file: Option<PathBuf>,
    /// Failed logins from one client address (an IPv6 /64) within
    /// `failed_login_window_secs`; past it the address's logins are refused
    /// until the window ends. 0: not counted.
    pub max_failed_logins: u32,
    pub failed_login_window_secs: u64,
}

impl Default for AuthSection {
    fn default() -> Self {
        AuthSection {
            enabled: false,
            admin_user: "admin".into(),
            admin_password_file: None,
            max_failed_logins: 10,
            failed_login_window_secs: 300,
        }
    }
}

impl Config {
    /// The settings with every secret replaced, for `sluice config`.
    pub fn redacted(&self) -> Config {
        let hidden = || "<redacted>".to_string();
        let mut c = self.clone();
        if c.http.auth_token.is_some() {
            c.http.auth_token = Some(hidden());
        }
        for v in c.mqtt.users.values_mut() {
            *v = hidden();
        }
        if let Some(k) = &mut c.kafka {
            for (key, v) in k.properties.iter_mut() {
                if sluice_ingest::kafka::is_secret(key) {
                    *v = hidden();
                }
            }
        }
        c
    }

    /// Whether callers must prove who they are.
    pub fn auth_on(&self) -> bool {
        self.auth.enabled || self.http.auth_token.is_some()
    }
}

/// The Kafka consumer; absent, Sluice consumes nothing.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSection {
    pub brokers: String,
    pub group_id: String,
    /// librdkafka properties, e.g. `"session.timeout.ms" = "6000"`, or
    /// `"security.protocol" = "sasl_ssl"` with `"sasl.mechanisms"`.
    pub properties: std::collections::BTreeMap<String, String>,
    /// A file holding `sasl.password`, so the password need not sit in the
    /// config file.
    pub sasl_password_file: Option<PathBuf>,
    /// Each with a `topic`.
    pub routes: Vec<sluice_ingest::route::Route>,
    /// Most messages per batch (one shard write, one offset commit).
    pub max_batch_messages: usize,
    /// Most payload bytes per batch.
    pub max_batch_bytes: usize,
}

impl Default for KafkaSection {
    fn default() -> Self {
        KafkaSection {
            brokers: "127.0.0.1:9092".into(),
            group_id: "sluice".into(),
            properties: Default::default(),
            sasl_password_file: None,
            routes: Vec::new(),
            max_batch_messages: 10_000,
            max_batch_bytes: 16 << 20,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttSection {
    pub enabled: bool,
    pub addr: SocketAddr,
    /// MQTT over TLS, with `[tls]`.
    pub tls_addr: SocketAddr,
    /// With `[tls]`, also serve plain MQTT on `addr`.
    pub allow_plaintext: bool,
    /// MQTT over WebSocket (browser clients) on `ws_addr`, and with
    /// `[tls]` over secure WebSocket on `wss_addr`.
    pub websocket: bool,
    pub ws_addr: SocketAddr,
    pub wss_addr: SocketAddr,
    /// TLS connections (MQTT and secure WebSocket) at most, and per client
    /// address.
    pub max_tls_connections: usize,
    pub max_tls_connections_per_client: usize,
    /// MQTT connections at most (every transport), and per client address.
    pub max_connections: usize,
    pub max_connections_per_client: usize,
    /// Sessions at most, those of clients that are away included; a new
    /// client past it is refused (Server unavailable).
    pub max_sessions: usize,
    /// Subscriptions one session may hold.
    pub max_subscriptions: usize,
    /// Seconds a client has from opening its socket to sending CONNECT.
    pub connect_timeout_secs: u64,
    /// Username → password. Empty: any client may connect.
    pub users: std::collections::BTreeMap<String, String>,
    /// Store line protocol published to `ingest/<db>` in database `<db>`.
    pub ingest_topics: bool,
    /// Largest accepted publish payload, in bytes.
    pub max_payload_bytes: usize,
    /// Each with a `filter` whose `{name}` levels capture tags.
    pub routes: Vec<sluice_ingest::route::Route>,
    /// Topic rules for publish and subscribe, tried in order.
    pub acl: Vec<sluice_ingest::mqtt::access::AclRule>,
    /// `allow` or `deny`: what happens when no rule matches.
    pub acl_no_match: String,
}

impl Default for MqttSection {
    fn default() -> Self {
        MqttSection {
            enabled: true,
            addr: SocketAddr::from(([127, 0, 0, 1], 1883)),
            tls_addr: SocketAddr::from(([127, 0, 0, 1], 8883)),
            allow_plaintext: false,
            websocket: true,
            ws_addr: SocketAddr::from(([127, 0, 0, 1], 8083)),
            wss_addr: SocketAddr::from(([127, 0, 0, 1], 8084)),
            max_tls_connections: 100_000,
            max_tls_connections_per_client: 10_000,
            max_connections: 100_000,
            max_connections_per_client: 10_000,
            max_sessions: 100_000,
            max_subscriptions: 1_000,
            connect_timeout_secs: 10,
            users: Default::default(),
            ingest_topics: true,
            max_payload_bytes: 1 << 20,
            routes: Vec::new(),
            acl: Vec::new(),
            acl_no_match: "allow".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageSection {
    /// Flush a shard's buffer to chunks once it holds this many bytes.
    pub flush_bytes: usize,
    /// Flush rows that have been in memory this many seconds.
    pub flush_interval_secs: u64,
    /// Per shard: writes get backpressure (HTTP 503) above this much buffered data.
    pub max_buffer_bytes: usize,
    /// Time partition of chunks, in hours.
    pub partition_hours: u64,
    /// Compact a table partition once it has this many chunks.
    pub compact_min_chunks: usize,
    /// Start a new log segment past this size.
    pub log_segment_bytes: u64,
    /// Refuse writes (HTTP 507) while the data directory's disk has less
    /// free than this; they resume by themselves. 0: never.
    pub min_free_bytes: u64,
}

impl Default for StorageSection {
    fn default() -> Self {
        let d = sluice_engine::StorageConfig::default();
        StorageSection {
            flush_bytes: d.flush_bytes,
            flush_interval_secs: d.flush_interval.as_secs(),
            max_buffer_bytes: d.max_buffer_bytes,
            partition_hours: (d.partition_len / 3_600_000_000_000) as u64,
            compact_min_chunks: d.compact_min_chunks,
            log_segment_bytes: d.log_segment_bytes,
            min_free_bytes: d.min_free_bytes,
        }
    }
}

impl StorageSection {
    pub fn engine_config(&self) -> Result<sluice_engine::StorageConfig, String> {
        if self.partition_hours == 0 || self.partition_hours > 24 * 366 {
            return Err("storage.partition_hours must be between 1 and 8784".into());
        }
        if self.max_buffer_bytes < self.flush_bytes {
            return Err("storage.max_buffer_bytes must be at least storage.flush_bytes".into());
        }
        Ok(sluice_engine::StorageConfig {
            flush_bytes: self.flush_bytes.max(1),
            flush_interval: std::time::Duration::from_secs(self.flush_interval_secs.max(1)),
            max_buffer_bytes: self.max_buffer_bytes,
            partition_len: self.partition_hours as i64 * 3_600_000_000_000,
            compact_min_chunks: self.compact_min_chunks.max(2),
            log_segment_bytes: self.log_segment_bytes.max(1 << 20),
            min_free_bytes: self.min_free_bytes,
            ..Default::default()
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineSection {
    pub data_dir: PathBuf,
    /// 0 means one per core.
    pub shards: usize,
    /// io_uring buffer memory per shard, in bytes.
    pub io_memory: usize,
    pub pin_cores: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSection {
    pub addr: SocketAddr,
    /// Largest accepted request body, after gzip decompression.
    pub max_body_bytes: usize,
    /// Bytes of request bodies held at once, over all requests; past it a
    /// request waits, then gets 503.
    pub max_inflight_body_bytes: usize,
    /// When set, every API call must present this token
    /// (`Authorization: Token …`, `Bearer …`, basic auth password, or `p=`).
    pub auth_token: Option<String>,
    /// Serve `/metrics` without credentials (for a scraper on a trusted
    /// network); off, it asks for the API token like every other endpoint.
    pub metrics_public: bool,
    /// Serve the console from this folder instead of the copy built into
    /// the binary (for working on `ui/`).
    pub ui_dir: Option<PathBuf>,
    /// Open connections at most; more are closed as they come.
    pub max_connections: usize,
    /// Open connections per client address at most.
    pub max_connections_per_client: usize,
    /// A request's headers (and a TLS handshake) must arrive within this.
    pub request_header_timeout_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LpTcpSection {
    pub enabled: bool,
    pub addr: SocketAddr,
    /// Database that lines received over TCP are written to.
    pub database: String,
    /// Keep the port open while `http.auth_token` is set. TCP line protocol
    /// carries no credentials, so anyone who reaches the port can write.
    pub allow_unauthenticated: bool,
    /// Open connections at most, and per client address.
    pub max_connections: usize,
    pub max_connections_per_client: usize,
    /// A connection silent this long is closed (a partial last line is
    /// dropped with it).
    pub idle_timeout_secs: u64,
}

/// The PostgreSQL wire protocol front end (psql, pgbench, drivers).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PgSection {
    pub enabled: bool,
    pub addr: SocketAddr,
    /// With `[tls]`, also serve clients that do not ask for TLS.
    pub allow_plaintext: bool,
    /// Open connections at most; more are refused with SQLSTATE 53300.
    pub max_connections: usize,
    /// Open connections per client address at most.
    pub max_connections_per_client: usize,
}

impl Default for PgSection {
    fn default() -> Self {
        PgSection {
            enabled: true,
            addr: SocketAddr::from(([127, 0, 0, 1], 5432)),
            allow_plaintext: false,
            max_connections: 256,
            max_connections_per_client: 128,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSection {
    /// A tracing filter, e.g. `info` or `sluice=debug,info`; RUST_LOG overrides it.
    pub level: String,
}

impl Default for EngineSection {
    fn default() -> Self {
        EngineSection {
            data_dir: PathBuf::from("./sluice-data"),
            shards: 0,
            io_memory: 1 << 20,
            pin_cores: true,
        }
    }
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection {
            addr: SocketAddr::from(([127, 0, 0, 1], 8086)),
            max_body_bytes: 64 << 20,
            max_inflight_body_bytes: 1 << 30,
            auth_token: None,
            metrics_public: false,
            ui_dir: None,
            max_connections: 4096,
            max_connections_per_client: 512,
            request_header_timeout_secs: 10,
        }
    }
}

impl Default for LpTcpSection {
    fn default() -> Self {
        LpTcpSection {
            enabled: true,
            addr: SocketAddr::from(([127, 0, 0, 1], 8094)),
            database: "default".into(),
            allow_unauthenticated: false,
            max_connections: 4096,
            max_connections_per_client: 512,
            idle_timeout_secs: 300,
        }
    }
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            level: "info".into(),
        }
    }
}

impl Config {
    pub fn load(args: &ServeArgs) -> Result<Config, String> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = &args.config {
            if !path.exists() {
                return Err(format!("config file {} does not exist", path.display()));
            }
            fig = fig.merge(Toml::file(path));
        }
        // Only variables naming a known section are settings; other SLUICE_*
        // variables in the environment are not ours to reject.
        const SECTIONS: [&str; 10] = [
            "engine", "http", "lp_tcp", "pg", "storage", "mqtt", "kafka", "tls", "auth", "log",
        ];
        fig = fig.merge(Env::prefixed("SLUICE_").split("__").filter(|k| {
            let k = k.as_str().to_ascii_lowercase();
            SECTIONS.iter().any(|s| k.starts_with(&format!("{s}.")))
        }));
        let mut cfg: Config = fig.extract().map_err(|e| e.to_string())?;
        if let Some(d) = &args.data_dir {
            cfg.engine.data_dir = d.clone();
        }
        if let Some(a) = args.http_addr {
            cfg.http.addr = a;
        }
        if let Some(a) = args.lp_tcp_addr {
            cfg.lp_tcp.addr = a;
        }
        if let Some(a) = args.mqtt_addr {
            cfg.mqtt.addr = a;
        }
        if let Some(a) = args.pg_addr {
            cfg.pg.addr = a;
        }
        if let Some(b) = &args.kafka_brokers {
            cfg.kafka.get_or_insert_with(Default::default).brokers = b.clone();
        }
        if let Some(n) = args.shards {
            cfg.engine.shards = n;
        }
        // An empty token would turn authentication on and then accept an
        // empty password.
        if cfg
            .http
            .auth_token
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            return Err(
                "http.auth_token is empty: give it a secret, or leave it out to turn authentication off"
                    .into(),
            );
        }
        if cfg.auth.enabled && !cfg.mqtt.users.is_empty() {
            return Err(
                "mqtt.users holds passwords in clear text and auth.enabled keeps users in the store: \
                 create them with CREATE USER (they log in to the broker with the same password) \
                 and remove mqtt.users"
                    .into(),
            );
        }
        if !matches!(cfg.mqtt.acl_no_match.as_str(), "allow" | "deny") {
            return Err(format!(
                "mqtt.acl_no_match is {:?}: use allow or deny",
                cfg.mqtt.acl_no_match
            ));
        }
        if cfg.engine.shards == 0 {
            cfg.engine.shards = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1);
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::result_large_err)] // figment's own error type
    fn layers_apply_in_order() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "s.toml",
                "[http]\naddr = \"127.0.0.1:9000\"\n[engine]\nshards = 3\nio_memory = 2097152\n",
            )?;
            jail.set_env("SLUICE_ENGINE__SHARDS", "5");
            let args = ServeArgs {
                config: Some("s.toml".into()),
                ..Default::default()
            };
            let cfg = Config::load(&args).map_err(figment::Error::from)?;
            assert_eq!(cfg.http.addr.port(), 9000, "file beats defaults");
            assert_eq!(cfg.engine.shards, 5, "env beats file");
            assert_eq!(cfg.engine.io_memory, 2 << 20);
            let args = ServeArgs {
                config: Some("s.toml".into()),
                shards: Some(7),
                ..Default::default()
            };
            let cfg = Config::load(&args).map_err(figment::Error::from)?;
            assert_eq!(cfg.engine.shards, 7, "flags beat env");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn an_empty_token_is_refused() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("SLUICE_HTTP__AUTH_TOKEN", " ");
            let err = Config::load(&ServeArgs::default()).unwrap_err();
            assert!(err.contains("http.auth_token is empty"), "{err}");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn mqtt_routes_parse_and_typos_are_refused() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "m.toml",
                r#"
[mqtt]
users = { dev = "secret" }
[[mqtt.routes]]
filter = "factory/{site}/{device}/telemetry"
database = "plant"
table = "telemetry"
format = "json"
time = { field = "ts", unit = "ms" }
tags = ["line"]
"#,
            )?;
            let args = ServeArgs {
                config: Some("m.toml".into()),
                ..Default::default()
            };
            let cfg = Config::load(&args).map_err(figment::Error::from)?;
            let r = &cfg.mqtt.routes[0];
            assert_eq!(r.format, sluice_ingest::route::Format::Json);
            assert_eq!(r.tags, ["line"]);
            assert_eq!(
                r.filter.as_deref(),
                Some("factory/{site}/{device}/telemetry")
            );
            assert_eq!(cfg.mqtt.users["dev"], "secret");
            jail.create_file(
                "bad.toml",
                "[[mqtt.routes]]\nfilter = \"a/b\"\ndatabase = \"x\"\ntabel = \"t\"\n",
            )?;
            let args = ServeArgs {
                config: Some("bad.toml".into()),
                ..Default::default()
            };
            let err = Config::load(&args).unwrap_err();
            assert!(err.contains("tabel"), "{err}");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn kafka_section_is_off_unless_configured() {
        figment::Jail::expect_with(|jail| {
            let cfg = Config::load(&ServeArgs::default()).map_err(figment::Error::from)?;
            assert!(cfg.kafka.is_none());
            jail.create_file(
                "k.toml",
                r#"
[kafka]
brokers = "10.0.0.1:9092"
properties = { "session.timeout.ms" = "6000" }
[[kafka.routes]]
topic = "telemetry"
database = "plant"
"#,
            )?;
            jail.set_env("SLUICE_KAFKA__GROUP_ID", "plant-ingest");
            let args = ServeArgs {
                config: Some("k.toml".into()),
                ..Default::default()
            };
            let cfg = Config::load(&args).map_err(figment::Error::from)?;
            let k = cfg.kafka.as_ref().expect("kafka section");
            assert_eq!(k.brokers, "10.0.0.1:9092");
            assert_eq!(k.group_id, "plant-ingest");
            assert_eq!(k.properties["session.timeout.ms"], "6000");
            assert_eq!(k.routes[0].topic.as_deref(), Some("telemetry"));
            let args = ServeArgs {
                kafka_brokers: Some("b:9092".into()),
                ..Default::default()
            };
            let cfg = Config::load(&args).map_err(figment::Error::from)?;
            assert_eq!(cfg.kafka.map(|k| k.brokers).as_deref(), Some("b:9092"));
            Ok(())
        });
    }
}
