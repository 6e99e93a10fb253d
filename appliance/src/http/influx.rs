//! The InfluxDB-compatible surface Telegraf and other agents talk to.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use sluice_ingest::lp::{self, MAX_REPORTED_ERRORS};
use sluice_ingest::stats::{Frontend, Tally, STATS};
use sluice_ingest::{Precision, WriteOptions};

use super::auth::{may_see, require, Peer};
use super::body::read_body;
use super::AppState;
use crate::error::ApiError;
use sluice_access::Privilege;

/// The InfluxDB version clients are told they talk to; 1.8 is what Telegraf's
/// v1 output and most libraries expect of the v1 API.
const INFLUX_COMPAT_VERSION: &str = "1.8.10";

type Params = Query<HashMap<String, String>>;

pub async fn write_v1(
    State(st): State<Arc<AppState>>,
    Query(p): Params,
    peer: Peer,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let caller = st.authorize(peer, &headers, &p).await?;
    let db = p
        .get("db")
        .filter(|d| !d.is_empty())
        .ok_or_else(|| ApiError::BadRequest("database is required: add ?db=<name>".into()))?;
    require(&caller, db, Privilege::Write)?;
    write(&st, db, p.get("precision"), &headers, body).await
}

pub async fn write_v2(
    State(st): State<Arc<AppState>>,
    Query(p): Params,
    peer: Peer,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let caller = st.authorize(peer, &headers, &HashMap::new()).await?;
    let bucket = p
        .get("bucket")
        .filter(|d| !d.is_empty())
        .ok_or_else(|| ApiError::BadRequest("bucket is required: add ?bucket=<name>".into()))?;
    // v1 compatibility buckets are spelled "db/rp"; the database is the bucket.
    let db = bucket.split('/').next().unwrap_or(bucket);
    require(&caller, db, Privilege::Write)?;
    write(&st, db, p.get("precision"), &headers, body).await
}

async fn write(
    st: &AppState,
    db: &str,
    precision: Option<&String>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let precision = Precision::parse(precision.map(String::as_str).unwrap_or(""))?;
    let (body, _held) = read_body(headers, body, st.max_body_bytes, &st.bodies).await?;
    let opts = WriteOptions {
        database: db.to_string(),
        precision,
        default_time: lp::now_ns(),
        extra_tags: Vec::new(),
    };
    let engine = st.engine.clone();
    // Parsing a large body is CPU work; keep it off the I/O threads.
    let prepared = tokio::task::spawn_blocking(move || {
        lp::prepare(engine.catalog(), engine.shard_count(), &body, &opts)
    })
    .await
    .map_err(|e| ApiError::BadRequest(format!("parser task failed: {e}")))?
    .inspect_err(|_| STATS.failed(Frontend::Http))?;
    let written = prepared.accepted;
    let rejected = prepared.rejected;
    let rejected_total = prepared.rejected_total;
    let tally = Tally::of(&prepared.writes);
    if let Err(e) = st.engine.write(prepared.writes).await {
        STATS.failed(Frontend::Http);
        return Err(e.into());
    }
    STATS.stored(Frontend::Http, &tally, rejected_total);
    if rejected_total == 0 {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let first = rejected
        .first()
        .map(|r| format!("line {}: {}", r.line, r.reason))
        .unwrap_or_default();
    let body = serde_json::json!({
        "error": format!("partial write: {rejected_total} line(s) rejected, {written} written; first: {first}"),
        "lines_written": written,
        "lines_rejected": rejected_total,
        "rejected": rejected,
        "rejected_truncated": rejected_total > MAX_REPORTED_ERRORS,
    });
    Ok((StatusCode::BAD_REQUEST, Json(body)).into_response())
}

/// Telegraf's v1 output sends `CREATE DATABASE` at start; other InfluxQL is
/// refused with a pointer to SQL.
pub async fn query(
    State(st): State<Arc<AppState>>,
    Query(p): Params,
    peer: Peer,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let caller = st.authorize(peer, &headers, &p).await?;
    let mut q = p.get("q").cloned();
    if q.is_none() {
        let (raw, _held) = read_body(&headers, body, 1 << 20, &st.bodies).await?;
        let form: HashMap<String, String> = serde_urlencoded::from_bytes(&raw)
            .map_err(|e| ApiError::BadRequest(format!("invalid form body: {e}")))?;
        q = form.get("q").cloned();
    }
    let q = q.ok_or_else(|| ApiError::BadRequest("missing parameter q".into()))?;
    let stmt = q.trim().trim_end_matches(';').trim();
    if let Some(name) = parse_create_database(stmt) {
        require(&caller, &name, Privilege::Admin)?;
        st.engine.catalog().create_database(&name)?;
        return Ok(Json(serde_json::json!({"results": [{"statement_id": 0}]})).into_response());
    }
    if stmt.eq_ignore_ascii_case("show databases") {
        let dbs: Vec<[String; 1]> = st
            .engine
            .catalog()
            .snapshot()
            .databases
            .keys()
            .filter(|d| may_see(&caller, d))
            .map(|d| [d.clone()])
            .collect();
        return Ok(Json(
            serde_json::json!({"results": [{"statement_id": 0, "series": [
            {"name": "databases", "columns": ["name"], "values": dbs}]}]}),
        )
        .into_response());
    }
    Err(ApiError::BadRequest(
        "InfluxQL is not supported except CREATE DATABASE and SHOW DATABASES; query with SQL at /api/v1/sql".into(),
    ))
}

/// `CREATE DATABASE name` or `CREATE DATABASE "name"`, ignoring any
/// `WITH …` retention clause.
fn parse_create_database(stmt: &str) -> Option<String> {
    let mut words = stmt.splitn(3, char::is_whitespace);
    let (a, b) = (words.next()?, words.next()?);
    if !a.eq_ignore_ascii_case("create") || !b.eq_ignore_ascii_case("database") {
        return None;
    }
    let rest = words.next()?.trim_start();
    if let Some(quoted) = rest.strip_prefix('"') {
        let mut name = String::new();
        let mut chars = quoted.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => name.push(chars.next()?),
                '"' => return Some(name),
                c => name.push(c),
            }
        }
        None
    } else {
        rest.split_whitespace().next().map(str::to_string)
    }
}

pub async fn ping() -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.headers_mut().insert(
        "X-Influxdb-Version",
        HeaderValue::from_static(INFLUX_COMPAT_VERSION),
    );
    r.headers_mut()
        .insert("X-Influxdb-Build", HeaderValue::from_static("OSS"));
    r.headers_mut().insert(
        header::HeaderName::from_static("x-sluice-version"),
        HeaderValue::from_static(env!("CARGO_PKG_VERSION")),
    );
    r
}

pub async fn health(State(st): State<Arc<AppState>>) -> Response {
    match st.engine.stats().await {
        Ok(shards) if shards.iter().all(|s| s.raft_leader) => Json(serde_json::json!({
            "name": "sluice", "status": "pass", "message": "ready for queries and writes",
            "version": env!("CARGO_PKG_VERSION"), "shards": shards.len(),
        }))
        .into_response(),
        Ok(_) | Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"name": "sluice", "status": "fail", "message": "a shard is not serving"})),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_create_database;

    #[test]
    fn create_database_forms() {
        assert_eq!(
            parse_create_database("CREATE DATABASE \"tele graf\"").as_deref(),
            Some("tele graf")
        );
        assert_eq!(
            parse_create_database("create database x WITH DURATION 1d").as_deref(),
            Some("x")
        );
        assert_eq!(parse_create_database("DROP DATABASE x"), None);
        assert_eq!(
            parse_create_database("CREATE DATABASE \"unterminated"),
            None
        );
    }
}
