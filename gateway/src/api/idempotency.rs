//! `Idempotency-Key`: a write retried with the same key within 24 h answers what the first
//! one answered and does nothing twice.
//!
//! The first request claims the key in the archive (a row inserted once, whoever races for
//! it), does its work, and keeps its answer there; a retry finds the answer and gets it back
//! (`Idempotent-Replayed: true`); a retry while the first is still at work gets 409. A claim
//! whose request failed (any answer but 2xx) is let go, so that the retry runs; a claim its
//! node never settled (it died) is let go after [`ABANDONED_MS`]. The same key with another
//! body is a mistake of the client: 422. Without the header, the work simply runs.

use std::future::Future;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::{json, Problem};
use crate::archive::Remembered;
use crate::clock::now_ms;
use crate::service::{Engine, Gateway};

/// How long an answer is remembered.
pub const REMEMBER_MS: u64 = 24 * 3600 * 1000;

/// A claim older than this whose answer never came is let go.
const ABANDONED_MS: u64 = 60_000;

/// The status of a claimed key whose answer is not there yet.
const PENDING: u16 = 0;

const HEADER: &str = "idempotency-key";

/// Runs `work` once per `Idempotency-Key` of `scope` (the caller and the route).
pub async fn once<E, F, Fut>(
    gw: &Gateway<E>,
    scope: &str,
    headers: &HeaderMap,
    body: &Bytes,
    work: F,
) -> Response
where
    E: Engine,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<(StatusCode, serde_json::Value), Problem>>,
{
    let answer = |r: Result<(StatusCode, serde_json::Value), Problem>| match r {
        Ok((status, v)) => json(status, &v),
        Err(p) => p.into_response(),
    };
    let Some(key) = headers.get(HEADER) else {
        return answer(work().await);
    };
    let key = match key.to_str() {
        Ok(k) if (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()) => {
            k.to_owned()
        }
        _ => {
            return Problem::field("Idempotency-Key", "1 to 255 visible ASCII characters")
                .into_response()
        }
    };
    let Some(store) = gw.archive() else {
        return answer(work().await);
    };
    let fingerprint = hex_digest(body);
    let now = now_ms();
    let since = now.saturating_sub(REMEMBER_MS);
    let pending = Remembered {
        status: PENDING,
        body: format!("{fingerprint}\n{now}"),
    };
    // Claim the key; on a clash, look at what the other request left.
    let mut claimed = false;
    for _ in 0..2 {
        match store.remember(scope, &key, &pending, now).await {
            Ok(true) => {
                claimed = true;
                break;
            }
            Ok(false) => {}
            Err(e) => return Problem::from(e).into_response(),
        }
        let seen = match store.remembered(scope, &key, since).await {
            Ok(s) => s,
            Err(e) => return Problem::from(e).into_response(),
        };
        let Some(seen) = seen else {
            // Older than the window and not swept yet: let it go, claim again.
            if let Err(e) = store.settle_remembered(scope, &key, None).await {
                return Problem::from(e).into_response();
            }
            continue;
        };
        let (their_print, rest) = seen.body.split_once('\n').unwrap_or(("", ""));
        if their_print != fingerprint {
            return Problem::field("Idempotency-Key", "already used with another request body")
                .into_response();
        }
        if seen.status == PENDING {
            let claimed: u64 = rest.parse().unwrap_or(0);
            if now.saturating_sub(claimed) < ABANDONED_MS {
                return Problem::conflict(
                    "a request with this Idempotency-Key is still in progress; retry shortly",
                )
                .into_response();
            }
            if let Err(e) = store.settle_remembered(scope, &key, None).await {
                return Problem::from(e).into_response();
            }
            continue;
        }
        let status = StatusCode::from_u16(seen.status).unwrap_or(StatusCode::OK);
        let value: serde_json::Value = serde_json::from_str(rest).unwrap_or_default();
        let mut res = json(status, &value);
        res.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
        return res;
    }
    if !claimed {
        return Problem::conflict("this Idempotency-Key is contended; retry shortly")
            .into_response();
    }
    let result = work().await;
    let settle = match &result {
        Ok((status, v)) if status.is_success() => Some(Remembered {
            status: status.as_u16(),
            body: format!("{fingerprint}\n{v}"),
        }),
        _ => None,
    };
    if let Err(e) = store.settle_remembered(scope, &key, settle.as_ref()).await {
        // The work is done; a retry may do it again, which the caller is told nothing of.
        tracing::warn!(error = %e, "idempotent answer not kept");
    }
    answer(result)
}

fn hex_digest(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
