//! Operations endpoints: an explicit flush, Prometheus metrics and the
//! status the console shows.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::IntoResponse;

use super::auth::Peer;
use super::AppState;
use crate::error::ApiError;

/// `POST /api/v1/flush`: every buffer to chunks, then compaction; answers
/// once all of it is durable. For benchmarks, backups and tests.
pub async fn flush(
    State(st): State<Arc<AppState>>,
    Query(p): Query<HashMap<String, String>>,
    peer: Peer,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let caller = st.authorize(peer, &headers, &p).await?;
    super::auth::require_superuser(&caller, "flush")?;
    let started = std::time::Instant::now();
    st.engine.flush().await?;
    Ok(axum::Json(serde_json::json!({
        "flushed": true,
        "seconds": started.elapsed().as_secs_f64(),
    })))
}

/// `POST /api/v1/backup` with `{"path": "/abs/dir"}`: an online backup of
/// this node into a new directory on its own machine (superusers only).
pub async fn backup(
    State(st): State<Arc<AppState>>,
    Query(p): Query<HashMap<String, String>>,
    peer: Peer,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<impl IntoResponse, ApiError> {
    let caller = st.authorize(peer, &headers, &p).await?;
    super::auth::require_superuser(&caller, "take a backup")?;
    let (raw, _held) = super::body::read_body(&headers, body, 64 << 10, &st.bodies).await?;
    let req: serde_json::Value = serde_json::from_slice(&raw)
        .map_err(|e| ApiError::BadRequest(format!("body must be JSON {{\"path\": …}}: {e}")))?;
    let path = req["path"]
        .as_str()
        .ok_or_else(|| ApiError::BadRequest("name the directory: {\"path\": \"/…\"}".into()))?;
    let info = crate::backup::take(
        &st.engine,
        &st.rel,
        &st.data_dir,
        std::path::Path::new(path),
    )
    .await?;
    Ok(axum::Json(info))
}

/// `GET /metrics` in the Prometheus text format. Behind the API's
/// credentials unless `http.metrics_public` opens it to a scraper.
pub async fn metrics(
    State(st): State<Arc<AppState>>,
    Query(p): Query<HashMap<String, String>>,
    peer: Peer,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    if !st.metrics_public {
        st.authorize(peer, &headers, &p).await?;
    }
    let status = crate::status::collect(&st).await?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::status::prometheus(&status),
    ))
}

/// `GET /api/v1/status`: the same state as `/metrics`, as JSON, for the
/// console.
pub async fn status(
    State(st): State<Arc<AppState>>,
    Query(p): Query<HashMap<String, String>>,
    peer: Peer,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    st.authorize(peer, &headers, &p).await?;
    let status = crate::status::collect(&st).await?;
    Ok(([(header::CACHE_CONTROL, "no-store")], axum::Json(status)))
}
