//! Request bodies: size limit enforced while reading and while inflating.

use std::io::Read;

use axum::body::Body;
use axum::http::{header, HeaderMap};
use http_body_util::BodyExt;

use crate::error::ApiError;

/// How much of a refused body is still read and thrown away before the 413
/// is sent. A client that writes its whole body before it reads the answer
/// (reqwest does; Telegraf's Go client mostly does not) otherwise finds the
/// connection closed under it and reports a broken pipe instead of the
/// limit. Past this much, the connection is simply closed.
const DRAIN_MAX: usize = 16 << 20;

/// Reads the whole body, gunzipping it if the client says so. Anything over
/// `limit` bytes, compressed or inflated, is refused before it is parsed.
pub async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut body = body;
    if declared.is_some_and(|len| len > limit as u64) {
        drain(&mut body).await;
        return Err(ApiError::TooLarge { limit });
    }
    let mut raw = Vec::with_capacity(declared.map_or(0, |n| n as usize));
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ApiError::BadRequest(format!("reading request body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if raw.len() + data.len() > limit {
            drain(&mut body).await;
            return Err(ApiError::TooLarge { limit });
        }
        raw.extend_from_slice(&data);
    }
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_ascii_lowercase())
        .unwrap_or_default();
    match encoding.as_str() {
        "" | "identity" => Ok(raw),
        "gzip" | "x-gzip" => {
            let mut out = Vec::new();
            flate2::read::MultiGzDecoder::new(&raw[..])
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| ApiError::BadRequest(format!("invalid gzip body: {e}")))?;
            if out.len() > limit {
                return Err(ApiError::TooLarge { limit });
            }
            Ok(out)
        }
        other => Err(ApiError::UnsupportedEncoding(other.to_string())),
    }
}

/// Reads and discards up to [`DRAIN_MAX`] bytes of what is left of `body`.
async fn drain(body: &mut Body) {
    let mut seen = 0usize;
    while seen < DRAIN_MAX {
        match body.frame().await {
            Some(Ok(frame)) => seen += frame.data_ref().map_or(0, |d| d.len()),
            _ => break,
        }
    }
}
