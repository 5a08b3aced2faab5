//! Validating admission webhook (api.md §11, operations.md §3.4,
//! delivery.md §2.20).
//!
//! Two webhooks, `admission.k8s.io/v1` AdmissionReview in and out:
//!
//! | Path | Kind | Name |
//! |---|---|---|
//! | [`STAGESET_PATH`] | StageSet | `vstageset.stages.metio.wtf` |
//! | [`IMAGE_POLICY_PATH`] | ImageVerificationPolicy | `vimageverificationpolicy.stages.metio.wtf` |
//!
//! The answers are shaped like controller-runtime's: allowed is
//! `status.code: 200`; a failed rule is `allowed: false` with
//! `status: {code: 403, reason: Forbidden, message: <rule message>}`
//! (`admission.Denied`); an object that does not decode is `allowed: false`
//! with `status: {code: 400, message: …}` (`admission.Errored`). A body that
//! is not an AdmissionReview at all gets HTTP 400 with a plain-text message,
//! any other path HTTP 404.
//!
//! DELETE and CONNECT are always allowed. A StageSet UPDATE is allowed
//! without validation when the new object is being deleted or when its spec
//! is unchanged apart from `spec.suspend` (so metadata edits and
//! suspend/resume never trip over a rule tightened later); an
//! ImageVerificationPolicy UPDATE only when it is being deleted.
//!
//! This module only reads and writes AdmissionReviews; the rules themselves
//! are `crate::validate` (shared with the reconciler's R5 fallback).

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};

use crate::validate::{self, Invalid, gofmt};

use super::State;

/// The largest AdmissionReview body accepted (the API server sends at most 3 MiB objects).
pub const MAX_BODY: usize = 8 * 1024 * 1024;

/// The StageSet webhook's path.
pub const STAGESET_PATH: &str = "/validate-stages-metio-wtf-v1-stageset";
/// The ImageVerificationPolicy webhook's path.
pub const IMAGE_POLICY_PATH: &str = "/validate-stages-metio-wtf-v1-imageverificationpolicy";
/// The StageSet webhook's name in the ValidatingWebhookConfiguration.
pub const STAGESET_WEBHOOK: &str = "vstageset.stages.metio.wtf";
/// The ImageVerificationPolicy webhook's name.
pub const IMAGE_POLICY_WEBHOOK: &str = "vimageverificationpolicy.stages.metio.wtf";

const ADMISSION_API_VERSION: &str = "admission.k8s.io/v1";

/// An HTTP answer to an admission request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Answer {
    fn text(status: u16, message: &str) -> Answer {
        Answer {
            status,
            content_type: "text/plain; charset=utf-8",
            body: format!("{message}\n").into_bytes(),
        }
    }
}

/// The kind a webhook path validates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    StageSet,
    ImagePolicy,
}

impl Target {
    fn kind(self) -> &'static str {
        match self {
            Target::StageSet => "StageSet",
            Target::ImagePolicy => "ImageVerificationPolicy",
        }
    }
}

/// The verdict on one admission request.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Verdict {
    Allowed,
    /// A failed rule: 403 Forbidden.
    Denied(String),
    /// A request or object that cannot be validated: 400.
    Errored(String),
}

/// Handles a request to `path` with `body`.
pub fn handle(path: &str, body: &[u8]) -> Answer {
    let target = match path {
        STAGESET_PATH => Target::StageSet,
        IMAGE_POLICY_PATH => Target::ImagePolicy,
        _ => return Answer::text(404, &format!("no webhook at {path}")),
    };
    // Nothing a client sends may take the listener down; a bug answers 500
    // (and the API server applies the webhook's failurePolicy).
    std::panic::catch_unwind(|| handle_review(target, body)).unwrap_or_else(|_| {
        tracing::error!(logger = "webhook", path = %path, "admission handler panicked");
        Answer::text(500, "internal error")
    })
}

fn handle_review(target: Target, body: &[u8]) -> Answer {
    if body.is_empty() {
        return Answer::text(
            400,
            "the request body is empty; expected an AdmissionReview",
        );
    }
    let review: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return Answer::text(400, &format!("the request body is not JSON: {e}")),
    };
    let api_version = review.get("apiVersion").and_then(Value::as_str);
    let kind = review.get("kind").and_then(Value::as_str);
    if api_version != Some(ADMISSION_API_VERSION) || kind != Some("AdmissionReview") {
        return Answer::text(
            400,
            &format!(
                "expected an {ADMISSION_API_VERSION} AdmissionReview, got apiVersion {} kind {}",
                api_version.map_or_else(|| "(none)".to_string(), gofmt::quote),
                kind.map_or_else(|| "(none)".to_string(), gofmt::quote),
            ),
        );
    }
    let Some(request) = review.get("request").filter(|r| r.is_object()) else {
        return Answer::text(400, "the AdmissionReview has no request");
    };
    let Some(uid) = request
        .get("uid")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
    else {
        return Answer::text(400, "the AdmissionReview request has no uid");
    };
    let verdict = review_request(target, request);
    if let Verdict::Denied(m) | Verdict::Errored(m) = &verdict {
        let field = |name: &str| request.get(name).and_then(Value::as_str).unwrap_or("");
        let (namespace, name, operation) = (field("namespace"), field("name"), field("operation"));
        tracing::info!(
            logger = "webhook",
            kind = target.kind(),
            namespace,
            name,
            operation,
            reason = %m,
            "admission denied"
        );
    }
    let status = match &verdict {
        Verdict::Allowed => json!({"metadata": {}, "code": 200}),
        Verdict::Denied(m) => {
            json!({"metadata": {}, "message": m, "reason": "Forbidden", "code": 403})
        }
        Verdict::Errored(m) => json!({"metadata": {}, "message": m, "code": 400}),
    };
    let response = json!({
        "apiVersion": ADMISSION_API_VERSION,
        "kind": "AdmissionReview",
        "response": {
            "uid": uid,
            "allowed": verdict == Verdict::Allowed,
            "status": status,
        }
    });
    Answer {
        status: 200,
        content_type: "application/json",
        body: serde_json::to_vec(&response).unwrap_or_default(),
    }
}

fn deleting(object: &Value) -> bool {
    object
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null())
}

/// `spec` without `suspend`, for the update-skip comparison.
fn spec_ignoring_suspend(object: &Value) -> Value {
    let mut spec = object.get("spec").cloned().unwrap_or(Value::Null);
    if let Some(s) = spec.as_object_mut() {
        s.remove("suspend");
    }
    spec
}

fn review_request(target: Target, request: &Value) -> Verdict {
    let operation = request
        .get("operation")
        .and_then(Value::as_str)
        .unwrap_or("");
    match operation {
        "CREATE" | "UPDATE" => {}
        "DELETE" | "CONNECT" => return Verdict::Allowed,
        other => {
            return Verdict::Errored(format!(
                "unsupported admission operation {}",
                gofmt::quote(other)
            ));
        }
    }
    let expected = target.kind();
    let request_kind = request.get("kind").filter(|k| k.is_object());
    let group = request_kind
        .and_then(|k| k.get("group"))
        .and_then(Value::as_str);
    let kind = request_kind
        .and_then(|k| k.get("kind"))
        .and_then(Value::as_str);
    if request_kind.is_some() && (group != Some(crate::api::GROUP) || kind != Some(expected)) {
        let version = request_kind
            .and_then(|k| k.get("version"))
            .and_then(Value::as_str)
            .unwrap_or("");
        return Verdict::Errored(format!(
            "this webhook validates {}/{} {expected} objects, but the request is for {}/{version} {}",
            crate::api::GROUP,
            crate::api::VERSION,
            group.unwrap_or(""),
            kind.unwrap_or("")
        ));
    }
    let Some(object) = request.get("object").filter(|o| o.is_object()) else {
        return Verdict::Errored(format!("the {operation} request carries no object"));
    };
    let object_kind = object.get("kind").and_then(Value::as_str);
    let object_api_version = object.get("apiVersion").and_then(Value::as_str);
    if object_kind.is_some_and(|k| k != expected)
        || object_api_version.is_some_and(|v| v != crate::api::API_VERSION)
    {
        return Verdict::Errored(format!(
            "this webhook validates {} {expected} objects, but the object is {} {}",
            crate::api::API_VERSION,
            object_api_version.unwrap_or(""),
            object_kind.unwrap_or("")
        ));
    }
    if operation == "UPDATE" && deleting(object) {
        return Verdict::Allowed;
    }
    let result = match target {
        Target::StageSet => {
            if operation == "UPDATE"
                && let Some(old) = request.get("oldObject").filter(|o| o.is_object())
                && spec_ignoring_suspend(old) == spec_ignoring_suspend(object)
            {
                return Verdict::Allowed;
            }
            let namespace = request.get("namespace").and_then(Value::as_str);
            validate::stageset_object(object, namespace)
        }
        Target::ImagePolicy => validate::image_policy_object(object),
    };
    match result {
        Ok(()) => Verdict::Allowed,
        Err(Invalid::Rule(m)) => Verdict::Denied(m),
        Err(Invalid::Decode(m)) => Verdict::Errored(m),
    }
}

/// The actix handler of the webhook listener: POST only, metrics for the two
/// known paths.
pub(super) async fn handler(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<State>,
) -> HttpResponse {
    if req.method() != actix_web::http::Method::POST {
        return HttpResponse::MethodNotAllowed()
            .insert_header((header::ALLOW, "POST"))
            .finish();
    }
    let path = req.path().to_string();
    // Only the two webhook paths get series: anyone who can reach the port
    // must not be able to create unbounded label values.
    let known = path == STAGESET_PATH || path == IMAGE_POLICY_PATH;
    if known {
        state.metrics.webhook_in_flight(&path, 1);
    }
    let started = std::time::Instant::now();
    let answer = handle(&path, &body);
    if known {
        state
            .metrics
            .webhook_request(&path, answer.status, started.elapsed().as_secs_f64());
        state.metrics.webhook_in_flight(&path, -1);
    }
    HttpResponse::build(
        actix_web::http::StatusCode::from_u16(answer.status)
            .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR),
    )
    .content_type(answer.content_type)
    .body(answer.body)
}

#[cfg(test)]
mod tests;
