//! `/api/v1/sql`: SQL in, a streamed result out.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use serde::Deserialize;
use sluice_query::{Encoder, Format, QueryError};

use super::auth::Peer;
use super::body::read_body;
use super::AppState;
use crate::error::ApiError;

#[derive(Debug, Default, Deserialize)]
struct SqlRequest {
    db: Option<String>,
    sql: Option<String>,
    q: Option<String>,
    format: Option<String>,
}

pub async fn sql(
    State(st): State<Arc<AppState>>,
    Query(p): Query<HashMap<String, String>>,
    peer: Peer,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let caller = st.authorize(peer, &headers, &p).await?;
    let (raw, _held) = read_body(&headers, body, 1 << 20, &st.bodies).await?;
    let req: SqlRequest = if raw.iter().all(|b| b.is_ascii_whitespace()) {
        SqlRequest::default()
    } else {
        serde_json::from_slice(&raw).map_err(|e| {
            ApiError::BadRequest(format!("body must be JSON {{\"db\": …, \"sql\": …}}: {e}"))
        })?
    };
    let db = req.db.or_else(|| p.get("db").cloned());
    let sql = req
        .sql
        .or(req.q)
        .or_else(|| p.get("q").cloned())
        .or_else(|| p.get("sql").cloned())
        .ok_or_else(|| ApiError::BadRequest("no SQL given: send {\"sql\": …} or ?q=".into()))?;
    let format = match req.format.or_else(|| p.get("format").cloned()) {
        Some(f) => Format::parse(&f)?,
        None => headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .and_then(Format::from_accept)
            .unwrap_or(Format::Json),
    };
    let mut stream = st.query.execute(db.as_deref(), caller, &sql).await?;
    let mut enc = Encoder::new(format, stream.schema());
    let mut head = enc.begin()?;
    // Fail with a proper status if the query fails before producing anything.
    match stream.next().await {
        Some(Ok(b)) => head.extend(enc.batch(&b)?),
        Some(Err(e)) => return Err(QueryError::Execution(e).into()),
        None => {
            head.extend(enc.end(None));
            return Ok(respond(format, Body::from(head)));
        }
    }
    let rest = futures::stream::unfold(Some((stream, enc)), |state| async move {
        let (mut stream, mut enc) = state?;
        match stream.next().await {
            Some(Ok(b)) => match enc.batch(&b) {
                Ok(bytes) => Some((Bytes::from(bytes), Some((stream, enc)))),
                Err(e) => Some((Bytes::from(enc.end(Some(&e.to_string()))), None)),
            },
            Some(Err(e)) => {
                tracing::warn!(error = %e, "query failed mid-stream");
                Some((Bytes::from(enc.end(Some(&e.to_string()))), None))
            }
            None => Some((Bytes::from(enc.end(None)), None)),
        }
    });
    let body = futures::stream::once(async move { Bytes::from(head) })
        .chain(rest)
        .map(Ok::<_, std::convert::Infallible>);
    Ok(respond(format, Body::from_stream(body)))
}

fn respond(format: Format, body: Body) -> Response {
    let mut r = Response::new(body);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    r
}
