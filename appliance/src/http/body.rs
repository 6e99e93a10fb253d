//! Request bodies: size limit enforced while reading and while inflating,
//! and one budget for the bytes of every body held at once, so that many
//! large requests together cannot exhaust memory: past it, a request waits
//! for room, and after a while is told to retry.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap};
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

/// The budget counts in KiB, so that a u32 of permits spans terabytes.
const UNIT: usize = 1024;

/// How long a request waits for room in the budget before it is refused.
const WAIT: Duration = Duration::from_secs(10);

/// Bytes of request bodies held at once, across all requests.
#[derive(Clone)]
pub struct Budget {
    room: Arc<Semaphore>,
    total: usize,
}

/// A body's share of the budget, given back when dropped (when the request
/// is done with its bytes).
pub struct Held(Option<OwnedSemaphorePermit>);

impl Budget {
    pub fn new(bytes: usize) -> Budget {
        let units = (bytes / UNIT).clamp(1, u32::MAX as usize >> 1);
        Budget {
            room: Arc::new(Semaphore::new(units)),
            total: bytes,
        }
    }

    /// Adds `bytes` to what `held` holds, waiting for room.
    async fn take(&self, held: &mut Held, bytes: usize) -> Result<(), ApiError> {
        let units = u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX);
        if units == 0 {
            return Ok(());
        }
        let permit = tokio::time::timeout(WAIT, self.room.clone().acquire_many_owned(units))
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or(ApiError::Busy(format!(
                "the server holds {} bytes of request bodies, its limit (http.max_inflight_body_bytes); retry shortly",
                self.total
            )))?;
        match &mut held.0 {
            Some(p) => p.merge(permit),
            None => held.0 = Some(permit),
        }
        Ok(())
    }
}

/// Inflated bytes are taken from the budget this many at a time.
const INFLATE_STEP: usize = 256 << 10;

/// How much of a refused body is still read and thrown away before the 413
/// is sent. A client that writes its whole body before it reads the answer
/// (reqwest does; Telegraf's Go client mostly does not) otherwise finds the
/// connection closed under it and reports a broken pipe instead of the
/// limit. Past this much, the connection is simply closed.
const DRAIN_MAX: usize = 16 << 20;

/// Reads the whole body, gunzipping it if the client says so. Anything over
/// `limit` bytes, compressed or inflated, is refused before it is parsed.
/// The bytes count against `budget` until the returned `Held` is dropped.
pub async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    budget: &Budget,
) -> Result<(Vec<u8>, Held), ApiError> {
    let mut held = Held(None);
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
        budget.take(&mut held, data.len()).await?;
        raw.extend_from_slice(&data);
    }
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_ascii_lowercase())
        .unwrap_or_default();
    match encoding.as_str() {
        "" | "identity" => Ok((raw, held)),
        "gzip" | "x-gzip" => {
            let mut out = Vec::new();
            let mut gz = flate2::read::MultiGzDecoder::new(&raw[..]).take(limit as u64 + 1);
            loop {
                budget.take(&mut held, INFLATE_STEP).await?;
                let before = out.len();
                (&mut gz)
                    .take(INFLATE_STEP as u64)
                    .read_to_end(&mut out)
                    .map_err(|e| ApiError::BadRequest(format!("invalid gzip body: {e}")))?;
                if out.len() > limit {
                    return Err(ApiError::TooLarge { limit });
                }
                if out.len() - before < INFLATE_STEP {
                    break;
                }
            }
            // The compressed bytes go now; the budget keeps their share
            // until the request is done, which errs on the safe side.
            drop(raw);
            Ok((out, held))
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
