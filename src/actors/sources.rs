//! The SourceWatcher watches the Flux source kinds (ExternalArtifact,
//! GitRepository, OCIRepository, Bucket) and tells the Supervisor when a
//! source's artifact or readiness changed, so exactly the StageSets that
//! reference it reconcile. A kind whose CRD is not installed is retried with
//! back-off and picked up once the CRD exists.

use std::collections::HashMap;

use actix::prelude::*;
use futures::StreamExt;
use kube::ResourceExt;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::core::GroupVersionKind;
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::Value;

use crate::actors::supervisor::SourceChanged;
use crate::api::FLUX_SOURCE_GROUP;
use crate::reconcile::source::SourceId;

/// The watched kinds and their plural names (all `source.toolkit.fluxcd.io/v1`).
pub const SOURCE_KINDS: [(&str, &str); 4] = [
    ("ExternalArtifact", "externalartifacts"),
    ("GitRepository", "gitrepositories"),
    ("OCIRepository", "ocirepositories"),
    ("Bucket", "buckets"),
];

type Item = (
    String,
    Result<watcher::Event<DynamicObject>, watcher::Error>,
);

pub struct SourceWatcher {
    client: kube::Client,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    namespaces: Vec<String>,
    supervisor: Recipient<SourceChanged>,
    /// (kind, namespace, name) → what was last seen of its artifact.
    seen: HashMap<(String, String, String), String>,
}

impl SourceWatcher {
    pub fn new(
        client: kube::Client,
        metrics: std::sync::Arc<crate::metrics::Metrics>,
        namespaces: Vec<String>,
        supervisor: Recipient<SourceChanged>,
    ) -> Self {
        SourceWatcher {
            client,
            metrics,
            namespaces,
            supervisor,
            seen: HashMap::new(),
        }
    }
}

/// What about a source makes its StageSets reconcile: the artifact and the
/// Ready condition's status.
fn fingerprint(obj: &DynamicObject) -> String {
    let artifact = obj.data.pointer("/status/artifact");
    let get = |k: &str| {
        artifact
            .and_then(|a| a.get(k))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let ready = obj
        .data
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["status"].as_str())
        .unwrap_or("")
        .to_string();
    format!(
        "{}|{}|{}|{}",
        get("url"),
        get("digest"),
        get("revision"),
        ready
    )
}

/// Whether a watch error means the watch could not be engaged (as opposed
/// to its kind not being served).
fn engagement_failure(e: &watcher::Error) -> bool {
    let code = match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => Some(s.code),
        watcher::Error::WatchError(s) => Some(s.code),
        _ => None,
    };
    // 410 Gone is the ordinary end of a watch; the watcher relists.
    !matches!(code, Some(404 | 410))
}

impl Actor for SourceWatcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        for (kind, plural) in SOURCE_KINDS {
            let gvk = GroupVersionKind::gvk(FLUX_SOURCE_GROUP, "v1", kind);
            let ar = ApiResource::from_gvk_with_plural(&gvk, plural);
            let apis: Vec<Api<DynamicObject>> = if self.namespaces.is_empty() {
                vec![Api::all_with(self.client.clone(), &ar)]
            } else {
                self.namespaces
                    .iter()
                    .map(|ns| Api::namespaced_with(self.client.clone(), ns, &ar))
                    .collect()
            };
            for api in apis {
                let kind = kind.to_string();
                let stream = watcher(api, watcher::Config::default())
                    .default_backoff()
                    .map(move |ev| (kind.clone(), ev));
                ctx.add_stream(stream);
            }
        }
    }
}

impl StreamHandler<Item> for SourceWatcher {
    fn handle(&mut self, (kind, item): Item, _ctx: &mut Context<Self>) {
        let obj = match item {
            Ok(
                watcher::Event::Apply(o) | watcher::Event::InitApply(o) | watcher::Event::Delete(o),
            ) => o,
            Ok(_) => return,
            Err(e) => {
                // Retried with back-off. A kind whose CRD is not installed
                // (404) is not a failure to engage: Flux's optional source
                // kinds come and go. Anything else (a Forbidden list or
                // watch above all) is counted.
                if engagement_failure(&e) {
                    let gvk = format!("{FLUX_SOURCE_GROUP}/v1, Kind={kind}");
                    self.metrics.watch_engagement_failed(&gvk);
                    tracing::warn!(kind = %kind, error = %e, "the source watch cannot be engaged; retrying");
                } else {
                    tracing::debug!(kind = %kind, error = %e, "source watch failed");
                }
                return;
            }
        };
        let key = (
            kind.clone(),
            obj.namespace().unwrap_or_default(),
            obj.name_any(),
        );
        let fp = fingerprint(&obj);
        if self.seen.get(&key) == Some(&fp) {
            return;
        }
        self.seen.insert(key.clone(), fp);
        let back_pointer = obj.data.pointer("/spec/sourceRef").map(|r| {
            let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            (s("apiVersion"), s("kind"), s("name"))
        });
        self.supervisor.do_send(SourceChanged(SourceId {
            kind,
            namespace: key.1,
            name: key.2,
            back_pointer,
        }));
    }

    fn finished(&mut self, _ctx: &mut Context<Self>) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status {
            code,
            message: "m".into(),
            reason: String::new(),
            ..Default::default()
        }))
    }

    #[test]
    fn forbidden_watches_are_engagement_failures_missing_kinds_are_not() {
        assert!(engagement_failure(&watcher::Error::InitialListFailed(api(
            403
        ))));
        assert!(engagement_failure(&watcher::Error::WatchStartFailed(api(
            500
        ))));
        assert!(!engagement_failure(&watcher::Error::InitialListFailed(
            api(404)
        )));
        assert!(!engagement_failure(&watcher::Error::WatchError(Box::new(
            kube::core::Status {
                code: 410,
                ..Default::default()
            }
        ))));
    }
}
