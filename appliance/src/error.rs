//! The one place where errors of every crate become HTTP responses.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sluice_access::AccessError;
use sluice_engine::EngineError;
use sluice_ingest::IngestError;
use sluice_query::QueryError;
use sluice_relstore::RelError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    #[error("request body larger than {limit} bytes")]
    TooLarge { limit: usize },
    /// Out of a shared resource for now; the client should retry.
    #[error("{0}")]
    Busy(String),
    #[error("unsupported content encoding {0:?}: send identity or gzip")]
    UnsupportedEncoding(String),
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error("backup: {0}")]
    Backup(#[from] crate::backup::BackupError),
}

fn access_status(e: &AccessError) -> StatusCode {
    match e {
        AccessError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        AccessError::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
        AccessError::Denied { .. } => StatusCode::FORBIDDEN,
        AccessError::UndefinedRole(_) | AccessError::UndefinedToken(_) => StatusCode::NOT_FOUND,
        AccessError::DuplicateRole(_) => StatusCode::CONFLICT,
        AccessError::Invalid(_) => StatusCode::BAD_REQUEST,
        AccessError::Store(_) | AccessError::Hashing(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn rel_status(e: &RelError) -> StatusCode {
    match e {
        RelError::Conflict(_)
        | RelError::Deadlock
        | RelError::UniqueViolation { .. }
        | RelError::NotNullViolation { .. }
        | RelError::CheckViolation { .. }
        | RelError::ForeignKeyViolation { .. }
        | RelError::DuplicateTable(_) => StatusCode::CONFLICT,
        RelError::UndefinedTable(_)
        | RelError::UndefinedColumn { .. }
        | RelError::UndefinedObject(_) => StatusCode::NOT_FOUND,
        RelError::InvalidDefinition(_)
        | RelError::DependentObjects(_)
        | RelError::ReadOnly(_)
        | RelError::Sequence { .. }
        | RelError::CurrvalUndefined(_)
        | RelError::TooLarge { .. } => StatusCode::BAD_REQUEST,
        RelError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        RelError::DiskFull(_) => StatusCode::INSUFFICIENT_STORAGE,
        RelError::Storage(_) | RelError::Log(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn query_status(e: &QueryError) -> StatusCode {
    match e {
        QueryError::UnknownDatabase(_) | QueryError::UnknownTable(_) => StatusCode::NOT_FOUND,
        QueryError::Engine(e) => engine_status(e),
        QueryError::Rel(e) => rel_status(e),
        QueryError::InStatement { source, .. } => query_status(source),
        QueryError::Access(a) => access_status(a),
        QueryError::Plan(d) | QueryError::Execution(d) => {
            match (
                sluice_query::error::rel_error(d),
                sluice_query::error::access_error(d),
            ) {
                (Some(r), _) => rel_status(r),
                (None, Some(a)) => access_status(a),
                (None, None) => StatusCode::BAD_REQUEST,
            }
        }
        QueryError::Settings(_)
        | QueryError::Syntax(_)
        | QueryError::Format(_)
        | QueryError::Unsupported(_)
        | QueryError::InvalidValue(_)
        | QueryError::TooComplex(_)
        | QueryError::TransactionAborted
        | QueryError::NoTransaction
        | QueryError::DdlInTransaction
        | QueryError::OpenTransaction => StatusCode::BAD_REQUEST,
    }
}

fn engine_status(e: &EngineError) -> StatusCode {
    match e {
        EngineError::TypeConflict { .. }
        | EngineError::InvalidName(_)
        | EngineError::TooManyColumns { .. } => StatusCode::BAD_REQUEST,
        EngineError::ShardUnavailable(_)
        | EngineError::NotLeader { .. }
        | EngineError::Backpressure { .. }
        | EngineError::CatalogStore(_) => StatusCode::SERVICE_UNAVAILABLE,
        EngineError::Config(_) => StatusCode::BAD_REQUEST,
        EngineError::DiskFull(_) => StatusCode::INSUFFICIENT_STORAGE,
        EngineError::Io { .. }
        | EngineError::Runtime(_)
        | EngineError::Raft(_)
        | EngineError::Log(_)
        | EngineError::CatalogCorrupt { .. }
        | EngineError::Encode(_)
        | EngineError::Decode { .. }
        | EngineError::MemLock { .. }
        | EngineError::ChunkCorrupt { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::UnsupportedEncoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Ingest(IngestError::Engine(e)) => engine_status(e),
            ApiError::Ingest(_) => StatusCode::BAD_REQUEST,
            ApiError::Query(q) => query_status(q),
            ApiError::Engine(e) => engine_status(e),
            ApiError::Access(a) => access_status(a),
            ApiError::Backup(b) => {
                use crate::backup::BackupError as B;
                match b {
                    B::Target(_) => StatusCode::BAD_REQUEST,
                    B::Busy => StatusCode::CONFLICT,
                    B::Engine(e) => engine_status(e),
                    B::Rel(e) => rel_status(e),
                    B::Io { .. } | B::Task(_) => StatusCode::INTERNAL_SERVER_ERROR,
                }
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        let body = match &self {
            ApiError::Query(q) => {
                let msg = self.to_string();
                let mut body = serde_json::json!({ "error": msg, "sqlstate": q.sqlstate() });
                if let Some((line, column)) = sql_position(&msg) {
                    body["position"] = serde_json::json!({ "line": line, "column": column });
                }
                body
            }
            _ => serde_json::json!({ "error": self.to_string() }),
        };
        let retry_after = match &self {
            ApiError::Access(AccessError::Throttled { retry_after_secs }) => {
                Some(HeaderValue::from(*retry_after_secs))
            }
            _ if status == StatusCode::SERVICE_UNAVAILABLE => Some(HeaderValue::from_static("1")),
            _ => None,
        };
        let mut resp = (status, axum::Json(body)).into_response();
        if let Some(v) = retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}

/// Where in the statement the SQL parser stopped, as it says in its message
/// ("… at Line: 2, Column: 7"), so that a client can point at it.
fn sql_position(msg: &str) -> Option<(u64, u64)> {
    let at = msg.rfind("Line: ")?;
    let rest = &msg[at + "Line: ".len()..];
    let (line, rest) = rest.split_once(", Column: ")?;
    let column: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((line.trim().parse().ok()?, column.parse().ok()?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_parser_position_is_read_from_its_message() {
        assert_eq!(
            super::sql_position("SQL error: ParserError(\"Expected: end of statement, found: x at Line: 2, Column: 7\")"),
            Some((2, 7))
        );
        assert_eq!(super::sql_position("table not found"), None);
    }
}
