//! The `http` verb (api.md §2.9.3): one call through the outbound guard
//! (`reconcile::outbound`), with headers and body read from Secrets as the
//! action's identity. Secret values travel only in the request: the guard's
//! errors never carry them, and nothing here logs them.

use std::collections::BTreeMap;

use crate::api::{HttpAction, HttpMethod, SecretKeyReference};
use crate::reconcile::outbound::{self, HttpActionError, HttpActionRequest};

use super::{ActionCtx, Attempt, verbs};

async fn secret(
    ctx: &ActionCtx<'_>,
    what: &str,
    r: &SecretKeyReference,
) -> Result<Vec<u8>, Attempt> {
    let key = r
        .key
        .as_deref()
        .filter(|k| !k.is_empty())
        .ok_or_else(|| Attempt::Stop(format!("{what} Secret {} names no key", r.name)))?;
    verbs::secret_value(ctx, &r.name, key).await
}

/// The request an action describes, its Secrets read.
async fn request(ctx: &ActionCtx<'_>, h: &HttpAction) -> Result<HttpActionRequest, Attempt> {
    let mut headers = BTreeMap::new();
    for r in h.headers_from.iter().flatten() {
        let key = r.key.clone().unwrap_or_default();
        let value = secret(ctx, "headersFrom", r).await?;
        headers.insert(key, value);
    }
    let (body, body_from_secret) = match (&h.body_from, &h.body) {
        (Some(r), _) => (Some(secret(ctx, "bodyFrom", r).await?), true),
        (None, Some(b)) => (Some(b.clone().into_bytes()), false),
        (None, None) => (None, false),
    };
    let expected_status = h
        .expected_status
        .iter()
        .flatten()
        .map(|s| {
            u16::try_from(*s)
                .map_err(|_| Attempt::Stop(format!("expectedStatus {s} is not an HTTP status")))
        })
        .collect::<Result<Vec<u16>, Attempt>>()?;
    Ok(HttpActionRequest {
        url: h.url.clone(),
        method: h.method.unwrap_or(HttpMethod::Post),
        headers,
        body,
        body_from_secret,
        expected_status,
        max_body: crate::reconcile::outbound::MAX_RESPONSE_BODY,
        accept: None,
    })
}

/// One attempt of an http action: refusals by the guard and 4xx answers
/// (but 408 and 429) stop the action, the rest may be retried.
pub(super) async fn send(ctx: &ActionCtx<'_>, h: &HttpAction) -> Result<(), Attempt> {
    let req = request(ctx, h).await?;
    match outbound::send(req, &ctx.env.actions).await {
        Ok(_) => Ok(()),
        Err(e) => Err(attempt(e)),
    }
}

fn attempt(e: HttpActionError) -> Attempt {
    let message = e.to_string();
    if e.is_retryable() {
        Attempt::Retry(message)
    } else {
        Attempt::Stop(message)
    }
}
