//! The HTTP API: InfluxDB-compatible writes, SQL, health.

mod admin;
mod body;
pub mod console;
mod influx;
pub mod server;
mod sql;

use std::sync::Arc;

use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::Router;
use sluice_engine::EngineHandle;
use sluice_query::QueryEngine;

use crate::error::ApiError;

pub struct AppState {
    pub engine: EngineHandle,
    pub kafka: Option<Arc<sluice_ingest::kafka::KafkaStatus>>,
    pub query: std::sync::Arc<QueryEngine>,
    pub mqtt: Option<sluice_ingest::mqtt::MqttBroker>,
    pub max_body_bytes: usize,
    pub auth_token: Option<String>,
    pub metrics_public: bool,
    pub started: crate::status::Started,
    pub ui: console::Assets,
}

impl AppState {
    /// Accepts the credential forms InfluxDB clients send: `Token`, `Bearer`,
    /// basic auth (password is the token) and the v1 `p` parameter.
    pub fn authorize(
        &self,
        headers: &HeaderMap,
        password_param: Option<&str>,
    ) -> Result<(), ApiError> {
        let Some(expected) = &self.auth_token else {
            return Ok(());
        };
        let mut presented: Option<String> = password_param.map(str::to_string);
        if let Some(v) = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        {
            let v = v.trim();
            if let Some(t) = v
                .strip_prefix("Token ")
                .or_else(|| v.strip_prefix("Bearer "))
            {
                presented = Some(t.trim().to_string());
            } else if let Some(b) = v.strip_prefix("Basic ") {
                presented = basic_password(b.trim());
            }
        }
        match presented {
            Some(p) if constant_time_eq(p.as_bytes(), expected.as_bytes()) => Ok(()),
            Some(_) => Err(ApiError::Unauthorized("invalid token".into())),
            None => Err(ApiError::Unauthorized(
                "send `Authorization: Token <token>`".into(),
            )),
        }
    }
}

fn basic_password(b64: &str) -> Option<String> {
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    let s = String::from_utf8(raw).ok()?;
    s.split_once(':').map(|(_, p)| p.to_string())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/write", post(influx::write_v1))
        .route("/api/v2/write", post(influx::write_v2))
        .route("/query", get(influx::query).post(influx::query))
        .route("/api/v1/sql", get(sql::sql).post(sql::sql))
        .route("/api/v1/flush", post(admin::flush))
        .route("/metrics", get(admin::metrics))
        .route("/api/v1/status", get(admin::status))
        .route("/ping", get(influx::ping).head(influx::ping))
        .route("/health", get(influx::health))
        .route("/api/v1/schema", get(console::schema))
        .route("/", get(console::to_console))
        .route("/ui", get(console::to_console))
        .route("/ui/", get(console::index))
        .route("/ui/{*path}", get(console::asset))
        .with_state(state)
}
