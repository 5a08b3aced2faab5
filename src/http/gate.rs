//! The stage gate (operations.md §3.5, docs/decisions.md 2): `/gate/{ns}/{stageset}/{stage}`
//! answers whether a stage is Ready, from the StageSet cache only.
//!
//! GET, HEAD and POST are treated alike (Flagger POSTs a JSON payload, Argo
//! Rollouts GETs); any body is ignored. The answer never carries a stage's
//! free-form message or an error: a StageSet that is missing, outside the
//! watched namespaces or unreadable looks the same to the caller.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;

use crate::api::StagePhase;
use crate::cache::StageSetCache;

use super::State;

/// What the caller asked for, after method and path checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GateRequest<'a> {
    pub namespace: &'a str,
    pub stageset: &'a str,
    pub stage: &'a str,
}

/// The outcome of a gate request, before rendering.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// A method other than GET, HEAD or POST.
    MethodNotAllowed,
    /// The path is not `/gate/{ns}/{stageset}/{stage}`.
    BadPath,
    /// The StageSet cannot be gated (not found, not watched).
    NotGateable { verdict: Verdict },
    /// The stage is Ready.
    Ready(Verdict),
    /// The stage exists but is not Ready.
    NotReady(Verdict),
    /// The StageSet has no such stage in its status.
    StageNotFound { verdict: Verdict },
}

/// The identifying fields of an answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub ready: bool,
    pub namespace: String,
    pub stageset: String,
    pub stage: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub phase: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub revision: String,
}

/// Splits the part of the path after `/gate/` into exactly three non-empty
/// segments.
pub fn parse(tail: &str) -> Option<GateRequest<'_>> {
    let parts: Vec<&str> = tail.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        [ns, ss, stage] if !ns.is_empty() && !ss.is_empty() && !stage.is_empty() => {
            Some(GateRequest {
                namespace: ns,
                stageset: ss,
                stage,
            })
        }
        _ => None,
    }
}

fn phase_name(p: StagePhase) -> String {
    serde_json::to_value(p)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Decides the answer from the cache.
pub fn decide(method: &str, tail: &str, cache: &StageSetCache) -> Answer {
    if !matches!(method, "GET" | "HEAD" | "POST") {
        return Answer::MethodNotAllowed;
    }
    let Some(req) = parse(tail) else {
        return Answer::BadPath;
    };
    let mut verdict = Verdict {
        ready: false,
        namespace: req.namespace.to_string(),
        stageset: req.stageset.to_string(),
        stage: req.stage.to_string(),
        phase: String::new(),
        revision: String::new(),
    };
    let Some(ss) = cache.get(req.namespace, req.stageset) else {
        tracing::warn!(
            logger = "gate",
            namespace = req.namespace,
            stageset = req.stageset,
            error = "not found in the cache",
            "gate stageset lookup failed"
        );
        return Answer::NotGateable { verdict };
    };
    let Some(entry) = ss
        .status
        .as_ref()
        .and_then(|s| s.stages.iter().find(|s| s.name == req.stage))
    else {
        return Answer::StageNotFound { verdict };
    };
    verdict.phase = entry.phase.map(phase_name).unwrap_or_default();
    verdict.revision = entry.applied_revision.clone().unwrap_or_default();
    if entry.phase == Some(StagePhase::Ready) {
        verdict.ready = true;
        Answer::Ready(verdict)
    } else {
        Answer::NotReady(verdict)
    }
}

/// A rendered response: status, content type, body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json; charset=utf-8";

/// Renders an answer in the text or JSON dialect.
pub fn render(answer: &Answer, json: bool) -> Rendered {
    let text = |status: u16, body: String| Rendered {
        status,
        content_type: TEXT,
        body: format!("{body}\n"),
    };
    let as_json = |v: &Verdict| Rendered {
        status: 200,
        content_type: JSON,
        body: format!(
            "{}\n",
            serde_json::to_string(v).expect("a verdict always serializes")
        ),
    };
    match answer {
        Answer::MethodNotAllowed => text(405, "method not allowed".into()),
        Answer::BadPath => text(400, "expected /gate/{namespace}/{stageset}/{stage}".into()),
        Answer::NotGateable { verdict } if json => as_json(verdict),
        Answer::NotGateable { verdict } => text(
            403,
            format!(
                "stageset {}/{} is not gateable",
                verdict.namespace, verdict.stageset
            ),
        ),
        Answer::Ready(v) if json => as_json(v),
        Answer::Ready(v) => text(
            200,
            format!("stage \"{}\" is Ready at {}", v.stage, v.revision),
        ),
        Answer::NotReady(v) if json => as_json(v),
        Answer::NotReady(v) => text(
            403,
            format!("stage \"{}\" is not Ready (phase={})", v.stage, v.phase),
        ),
        Answer::StageNotFound { verdict } if json => as_json(verdict),
        Answer::StageNotFound { verdict } => text(
            403,
            format!(
                "stage \"{}\" not found in stageset {}/{}",
                verdict.stage, verdict.namespace, verdict.stageset
            ),
        ),
    }
}

/// The actix handler of `/gate/...`.
pub(super) async fn handler(req: HttpRequest, state: web::Data<State>) -> HttpResponse {
    let tail = req.match_info().query("tail").to_string();
    let method = req.method().as_str().to_string();
    let json = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    let cache = state.cache.clone();
    let decided = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        render(&decide(&method, &tail, &cache), json)
    }));
    match decided {
        Ok(r) => {
            let mut resp = HttpResponse::build(
                actix_web::http::StatusCode::from_u16(r.status)
                    .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR),
            );
            resp.insert_header((header::CONTENT_TYPE, r.content_type));
            if r.status == 405 {
                resp.insert_header((header::ALLOW, "GET, HEAD, POST"));
            }
            resp.body(r.body)
        }
        Err(_) => {
            tracing::error!(logger = "gate", path = %tail, "gate handler panicked");
            HttpResponse::InternalServerError()
                .content_type("text/plain; charset=utf-8")
                .body("internal error\n")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(
            parse("ns/ss/stage"),
            Some(GateRequest {
                namespace: "ns",
                stageset: "ss",
                stage: "stage"
            })
        );
        assert!(parse("/ns/ss/stage/").is_some());
        assert!(parse("ns/ss").is_none());
        assert!(parse("ns//stage").is_none());
        assert!(parse("a/b/c/d").is_none());
        assert!(parse("").is_none());
    }

    #[test]
    fn renderings() {
        let v = Verdict {
            ready: true,
            namespace: "n".into(),
            stageset: "s".into(),
            stage: "app".into(),
            phase: "Ready".into(),
            revision: "v1@sha1:abc".into(),
        };
        let r = render(&Answer::Ready(v.clone()), false);
        assert_eq!(
            (r.status, r.body.as_str()),
            (200, "stage \"app\" is Ready at v1@sha1:abc\n")
        );
        let r = render(&Answer::Ready(v.clone()), true);
        assert_eq!(
            r.body,
            "{\"ready\":true,\"namespace\":\"n\",\"stageset\":\"s\",\"stage\":\"app\",\"phase\":\"Ready\",\"revision\":\"v1@sha1:abc\"}\n"
        );
        let not = Verdict {
            ready: false,
            phase: "Verifying".into(),
            revision: String::new(),
            ..v.clone()
        };
        let r = render(&Answer::NotReady(not.clone()), false);
        assert_eq!(
            (r.status, r.body.as_str()),
            (403, "stage \"app\" is not Ready (phase=Verifying)\n")
        );
        let r = render(&Answer::NotReady(not), true);
        assert_eq!(r.status, 200);
        assert!(!r.body.contains("revision"), "empty fields omitted");
        let r = render(
            &Answer::NotGateable {
                verdict: Verdict {
                    ready: false,
                    phase: String::new(),
                    revision: String::new(),
                    ..v.clone()
                },
            },
            false,
        );
        assert_eq!(
            (r.status, r.body.as_str()),
            (403, "stageset n/s is not gateable\n")
        );
        assert_eq!(render(&Answer::MethodNotAllowed, true).status, 405);
        assert_eq!(render(&Answer::BadPath, true).status, 400);
    }
}
