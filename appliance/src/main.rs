//! The `sluice` binary: configuration, startup and wiring of the crates.

mod access_store;
mod backup;
mod catalog_store;
mod config;
mod conn_limits;
mod error;
mod http;
mod kafka;
mod mqtt_tls;
mod pg;
mod status;
mod tls;

use std::net::TcpListener;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use sluice_engine::{Engine, EngineConfig};
use sluice_ingest::tcp::{self, TcpConfig};
use sluice_query::QueryEngine;
use tracing_subscriber::EnvFilter;

use config::{Cli, Command, Config};

/// glibc's malloc was about a sixth of the server's CPU under MQTT load
/// (many small allocations freed on other threads than made them, and its
/// arena locks contended between broker and committer threads).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Transparent huge pages made the allocator fault in and zero 2 MiB at a
    // time as the buffers of large batches came and went: about a fifth of
    // the server's CPU with 100-line MQTT messages (412k-451k rows/s without
    // them, 337k-356k with). Off for this process only; failing to turn
    // them off costs speed, not correctness.
    let thp_disabled = nix::sys::prctl::set_thp_disable(true);
    let cli = Cli::parse();
    let (args, print_only) = match &cli.command {
        Command::Serve(a) => (a, false),
        Command::Config(a) => (a, true),
        Command::Restore(r) => return restore(r),
    };
    let cfg = match Config::load(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sluice: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    if print_only {
        match toml::to_string_pretty(&cfg.redacted()) {
            Ok(s) => print!("{s}"),
            Err(e) => eprintln!("sluice: {e}"),
        }
        return ExitCode::SUCCESS;
    }
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cfg.log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = thp_disabled {
        tracing::warn!(error = %e, "transparent huge pages could not be turned off");
    }
    match serve(cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("sluice: {e}");
            ExitCode::FAILURE
        }
    }
}

fn restore(r: &config::RestoreArgs) -> ExitCode {
    match backup::restore(&r.from, &r.data_dir) {
        Ok(info) => {
            println!(
                "restored the backup of {} ({} shards, {} bytes) into {}; start it with:\n  sluice serve --data-dir {} --shards {}",
                info.started,
                info.shards.len(),
                info.bytes,
                r.data_dir.display(),
                r.data_dir.display(),
                info.shards.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sluice: restore: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Stack of the threads that run SQL.
const SQL_THREAD_STACK: usize = 16 << 20;

fn serve(cfg: Config) -> Result<(), String> {
    // Bad certificate files fail startup, before anything else starts.
    let tls = match &cfg.tls {
        Some(t) => Some(tls::Tls::load(t).map_err(|e| e.to_string())?),
        None => None,
    };
    // Bind everything before starting shards, so a taken port fails fast and clearly.
    let http_listener = TcpListener::bind(cfg.http.addr)
        .map_err(|e| format!("cannot listen for HTTP on {}: {e}", cfg.http.addr))?;
    http_listener
        .set_nonblocking(true)
        .map_err(|e| format!("HTTP listener: {e}"))?;
    let mut services = Vec::new();
    // Raw TCP has no place for credentials: with authentication on, it
    // would be a way in without them, so it stays closed unless the
    // operator says the network in front of it is trusted.
    let auth_on = cfg.auth_on();
    // A client certificate that [tls] client_ca signed is a credential the
    // port can check; nothing else is.
    let tcp_certified = tls
        .as_ref()
        .is_some_and(|t| t.requires_client_certificates());
    let tcp_open =
        cfg.lp_tcp.enabled && (!auth_on || cfg.lp_tcp.allow_unauthenticated || tcp_certified);
    if cfg.lp_tcp.enabled && !tcp_open {
        tracing::warn!(
            addr = %cfg.lp_tcp.addr,
            "line protocol over TCP is off: it carries no credentials and authentication is on \
             (give [tls] a client_ca to take clients with certificates, or set \
             lp_tcp.allow_unauthenticated = true on a trusted network)"
        );
    }
    if tcp_open {
        tcp::check_bind(cfg.lp_tcp.addr).map_err(|e| {
            format!(
                "cannot listen for line protocol over TCP on {}: {e}",
                cfg.lp_tcp.addr
            )
        })?;
        services.push(tcp::service(TcpConfig {
            addr: cfg.lp_tcp.addr,
            database: cfg.lp_tcp.database.clone(),
            idle_timeout: std::time::Duration::from_secs(cfg.lp_tcp.idle_timeout_secs.max(1)),
            tls: tls
                .clone()
                .map(|t| Arc::new(move || t.config()) as tcp::TlsSource),
            admission: Some(conn_limits::admission(
                cfg.lp_tcp.max_connections,
                cfg.lp_tcp.max_connections_per_client,
                &conn_limits::LP_TCP,
                "line protocol TCP",
            )),
        }));
    }
    // The relational store holds the catalog, so it starts first and stops
    // last.
    let mut relstore = sluice_relstore::RelStore::start(&sluice_relstore::RelConfig {
        dir: cfg.engine.data_dir.join("meta"),
        io_memory: cfg.engine.io_memory,
        // Below the shards' reserve: with writes of points refused, the
        // catalog, users and grants can still change.
        min_free_bytes: cfg.storage.min_free_bytes / 2,
    })
    .map_err(|e| format!("starting the relational store: {e}"))?;
    let mut engine = Engine::start(
        &EngineConfig {
            data_dir: cfg.engine.data_dir.clone(),
            shards: cfg.engine.shards,
            io_memory: cfg.engine.io_memory,
            pin_cores: cfg.engine.pin_cores,
            storage: cfg.storage.engine_config()?,
            catalog: Some(Arc::new(catalog_store::RelCatalogStore::new(
                relstore.handle(),
            ))),
        },
        services,
    )
    .map_err(|e| format!("starting the engine: {e}"))?;
    // The consumer joins its group before the server says it is ready; a
    // bad route or property fails startup.
    let mut kafka = match &cfg.kafka {
        Some(k) => Some(
            sluice_ingest::kafka::start(kafka_config(k)?, engine.handle())
                .map_err(|e| e.to_string())?,
        ),
        None => None,
    };
    let access = access_store::open(&cfg, relstore.handle())?;
    let mut query = QueryEngine::new(engine.handle())
        .with_relstore(relstore.handle())
        .with_access(access.clone());
    if let Some(k) = &kafka {
        query = query.with_system_table(Arc::new(kafka::PartitionsTable {
            status: k.status.clone(),
        }));
    }
    let query = Arc::new(query);
    // Bound before startup reports ready, so a taken port fails startup.
    let pg_listener = if cfg.pg.enabled {
        let l = std::net::TcpListener::bind(cfg.pg.addr)
            .map_err(|e| format!("cannot listen for PostgreSQL on {}: {e}", cfg.pg.addr))?;
        l.set_nonblocking(true)
            .map_err(|e| format!("PostgreSQL listener: {e}"))?;
        Some(l)
    } else {
        None
    };
    let pg_query = query.clone();
    let rel_handle = relstore.handle();
    let started = status::Started {
        at: std::time::Instant::now(),
        memory_limit_bytes: cfg.storage.max_buffer_bytes as u64,
        tcp_enabled: tcp_open,
    };
    let kafka_status = kafka.as_ref().map(|k| k.status.clone());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sluice-http")
        // SQL from the network is parsed, planned and dropped on these
        // threads, and an expression tree is as deep as the query makes it
        // (`1 + 1 + …`); DataFusion grows its stack where it recurses
        // (`recursive_protection`), the syntax tree's own walks do not.
        .thread_stack_size(SQL_THREAD_STACK)
        .build()
        .map_err(|e| format!("starting the HTTP runtime: {e}"))?;
    let mqtt_engine = engine.handle();
    let result = runtime.block_on(async move {
        access_store::bootstrap(&cfg, &access).await?;
        let listener = tokio::net::TcpListener::from_std(http_listener)
            .map_err(|e| format!("HTTP listener: {e}"))?;
        if let Some(l) = pg_listener {
            let l = tokio::net::TcpListener::from_std(l)
                .map_err(|e| format!("PostgreSQL listener: {e}"))?;
            let gate = Arc::new(pg::auth::Gate::new(
                access.clone(),
                auth_on,
                cfg.http.auth_token.as_deref(),
            ));
            tokio::spawn(pg::serve(
                l,
                pg_query,
                gate,
                tls.clone(),
                cfg.pg.allow_plaintext,
                conn_limits::Limiter::new(
                    cfg.pg.max_connections,
                    cfg.pg.max_connections_per_client,
                    &pg::CONNECTIONS,
                ),
            ));
        }
        let broker = if cfg.mqtt.enabled {
            Some(
                sluice_ingest::mqtt::start(
                    mqtt_config(&cfg, &access, auth_on),
                    mqtt_engine.clone(),
                )
                .await
                .map_err(|e| e.to_string())?,
            )
        } else {
            None
        };
        if let (Some(tls), Some(b)) = (&tls, &broker) {
            // MQTT over TLS and over secure WebSocket share one budget.
            let limiter = Arc::new(conn_limits::Limiter::new(
                cfg.mqtt.max_tls_connections,
                cfg.mqtt.max_tls_connections_per_client,
                &mqtt_tls::CONNECTIONS,
            ));
            for (what, addr, behind) in [
                ("MQTT over TLS", cfg.mqtt.tls_addr, b.proxied_addr),
                ("MQTT over secure WebSocket", cfg.mqtt.wss_addr, b.ws_proxied_addr),
            ] {
                let Some(behind) = behind else { continue };
                let l = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|e| format!("cannot listen for {what} on {addr}: {e}"))?;
                tokio::spawn(mqtt_tls::serve(l, tls.clone(), behind, limiter.clone()));
            }
        }
        let state = Arc::new(http::AppState {
            rel: rel_handle,
            data_dir: cfg.engine.data_dir.clone(),
            engine: mqtt_engine,
            kafka: kafka_status,
            mqtt: broker.clone(),
            query,
            max_body_bytes: cfg.http.max_body_bytes,
            bodies: http::body::Budget::new(cfg.http.max_inflight_body_bytes),
            access: access.clone(),
            auth_on,
            metrics_public: cfg.http.metrics_public,
            started,
            ui: http::console::Assets::new(cfg.http.ui_dir.clone()),
        });
        // Before "ready": a SIGHUP from then on must reload, not terminate.
        if let Some(tls) = &tls {
            tls::reload_on_hangup(tls.clone());
        }
        tracing::info!(
            http = %cfg.http.addr,
            tls = cfg.tls.is_some(),
            mqtt = %broker.as_ref().and_then(|b| b.local_addr).map_or("off".to_string(), |a| a.to_string()),
            mqtt_tls = %if cfg.tls.is_some() && broker.is_some() { cfg.mqtt.tls_addr.to_string() } else { "off".into() },
            mqtt_ws = %broker.as_ref().and_then(|b| b.ws_addr).map_or("off".to_string(), |a| a.to_string()),
            mqtt_wss = %if broker.as_ref().is_some_and(|b| b.ws_proxied_addr.is_some()) { cfg.mqtt.wss_addr.to_string() } else { "off".into() },
            kafka = %cfg.kafka.as_ref().map_or("off".to_string(), |k| k.brokers.clone()),
            lp_tcp = %if tcp_open { cfg.lp_tcp.addr.to_string() } else { "off".into() },
            pg = %if cfg.pg.enabled { cfg.pg.addr.to_string() } else { "off".into() },
            data_dir = %cfg.engine.data_dir.display(),
            shards = cfg.engine.shards,
            "sluice is ready"
        );
        let limits = http::server::Limits {
            max_connections: cfg.http.max_connections.max(1),
            max_per_client: cfg.http.max_connections_per_client.max(1),
            header_timeout: std::time::Duration::from_secs(
                cfg.http.request_header_timeout_secs.max(1),
            ),
        };
        http::server::serve(
            listener,
            http::router(state),
            tls,
            limits,
            shutdown_signal(),
        )
        .await;
        Ok::<(), String>(())
    });
    // The consumer commits what is durable and leaves its group while the
    // shards still take writes.
    if let Some(k) = kafka.as_mut() {
        k.stop();
    }
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    engine.stop();
    relstore.stop();
    tracing::info!("sluice stopped");
    result
}

fn mqtt_config(
    cfg: &Config,
    access: &Arc<sluice_access::Access>,
    auth_on: bool,
) -> sluice_ingest::mqtt::MqttConfig {
    sluice_ingest::mqtt::MqttConfig {
        addr: cfg.mqtt.addr,
        plain: cfg.tls.is_none() || cfg.mqtt.allow_plaintext,
        ws_addr: (cfg.mqtt.websocket && (cfg.tls.is_none() || cfg.mqtt.allow_plaintext))
            .then_some(cfg.mqtt.ws_addr),
        ws_proxied: cfg.mqtt.websocket && cfg.tls.is_some(),
        max_subscriptions: cfg.mqtt.max_subscriptions,
        max_sessions: cfg.mqtt.max_sessions,
        admission: Some(conn_limits::admission(
            cfg.mqtt.max_connections,
            cfg.mqtt.max_connections_per_client,
            &conn_limits::MQTT,
            "MQTT",
        )),
        connect_timeout: std::time::Duration::from_secs(cfg.mqtt.connect_timeout_secs.max(1)),
        proxied: cfg.tls.is_some(),
        users: cfg.mqtt.users.clone(),
        access: auth_on.then(|| access.clone()),
        login_throttle: access.throttle().clone(),
        acl: cfg.mqtt.acl.clone(),
        acl_no_match_allows: cfg.mqtt.acl_no_match == "allow",
        ingest_topics: cfg.mqtt.ingest_topics,
        max_payload_bytes: cfg.mqtt.max_payload_bytes,
        routes: cfg.mqtt.routes.clone(),
    }
}

fn kafka_config(k: &config::KafkaSection) -> Result<sluice_ingest::kafka::KafkaConfig, String> {
    let mut properties = k.properties.clone();
    if let Some(path) = &k.sasl_password_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("kafka.sasl_password_file {}: {e}", path.display()))?;
        let password = text.trim_end_matches(['\r', '\n']);
        if password.is_empty() {
            return Err(format!(
                "kafka.sasl_password_file {} is empty",
                path.display()
            ));
        }
        properties.insert("sasl.password".into(), password.to_string());
    }
    Ok(sluice_ingest::kafka::KafkaConfig {
        brokers: k.brokers.clone(),
        group_id: k.group_id.clone(),
        properties,
        routes: k.routes.clone(),
        max_batch_messages: k.max_batch_messages,
        max_batch_bytes: k.max_batch_bytes,
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM");
                futures::future::pending::<()>().await
            }
        }
    };
    #[cfg(not(unix))]
    let term = futures::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}
