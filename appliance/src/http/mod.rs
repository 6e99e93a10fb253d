//! The HTTP API: InfluxDB-compatible writes, SQL, health.

mod admin;
pub mod auth;
pub mod body;
pub mod console;
mod influx;
pub mod server;
mod sql;

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use sluice_engine::EngineHandle;
use sluice_query::QueryEngine;

pub struct AppState {
    pub engine: EngineHandle,
    pub rel: sluice_relstore::RelHandle,
    pub data_dir: std::path::PathBuf,
    pub kafka: Option<Arc<sluice_ingest::kafka::KafkaStatus>>,
    pub query: std::sync::Arc<QueryEngine>,
    pub mqtt: Option<sluice_ingest::mqtt::MqttBroker>,
    pub max_body_bytes: usize,
    /// Bytes of request bodies held at once.
    pub bodies: body::Budget,
    pub access: Arc<sluice_access::Access>,
    /// Every endpoint but the static files and health asks for credentials.
    pub auth_on: bool,
    pub metrics_public: bool,
    pub started: crate::status::Started,
    pub ui: console::Assets,
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/write", post(influx::write_v1))
        .route("/api/v2/write", post(influx::write_v2))
        .route("/query", get(influx::query).post(influx::query))
        .route("/api/v1/sql", get(sql::sql).post(sql::sql))
        .route("/api/v1/flush", post(admin::flush))
        .route("/api/v1/backup", post(admin::backup))
        .route("/metrics", get(admin::metrics))
        .route("/api/v1/status", get(admin::status))
        .route(
            "/api/v1/tokens",
            get(auth::list_tokens).post(auth::create_token),
        )
        .route(
            "/api/v1/tokens/{id}",
            axum::routing::delete(auth::revoke_token),
        )
        .route("/ping", get(influx::ping).head(influx::ping))
        .route("/health", get(influx::health))
        .route("/api/v1/schema", get(console::schema))
        .route("/", get(console::to_console))
        .route("/ui", get(console::to_console))
        .route("/ui/", get(console::index))
        .route("/ui/{*path}", get(console::asset))
        .with_state(state)
}
