//! The one place where errors of every crate become HTTP responses.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sluice_engine::EngineError;
use sluice_ingest::IngestError;
use sluice_query::QueryError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    #[error("request body larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("unsupported content encoding {0:?}: send identity or gzip")]
    UnsupportedEncoding(String),
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

fn engine_status(e: &EngineError) -> StatusCode {
    match e {
        EngineError::TypeConflict { .. }
        | EngineError::InvalidName(_)
        | EngineError::TooManyColumns { .. } => StatusCode::BAD_REQUEST,
        EngineError::ShardUnavailable(_)
        | EngineError::NotLeader { .. }
        | EngineError::Backpressure { .. } => StatusCode::SERVICE_UNAVAILABLE,
        EngineError::Config(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedEncoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Ingest(IngestError::Engine(e)) => engine_status(e),
            ApiError::Ingest(_) => StatusCode::BAD_REQUEST,
            ApiError::Query(QueryError::UnknownDatabase(_) | QueryError::UnknownTable(_)) => {
                StatusCode::NOT_FOUND
            }
            ApiError::Query(QueryError::Engine(e)) => engine_status(e),
            ApiError::Query(_) => StatusCode::BAD_REQUEST,
            ApiError::Engine(e) => engine_status(e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        let body = serde_json::json!({ "error": self.to_string() });
        let mut resp = (status, axum::Json(body)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}
