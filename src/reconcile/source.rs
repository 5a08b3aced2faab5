//! Source resolution (delivery.md §2.1): from a stage's `sourceRef` to the pinned
//! artifact (URL, digest, revision) it delivers.
//!
//! ExternalArtifact and the direct Flux kinds (GitRepository, OCIRepository,
//! Bucket) are read by name; any other kind is a producer (e.g. JaaS
//! `JsonnetSnippet`) whose ExternalArtifact is found through its
//! `spec.sourceRef` back-pointer (same API group, kind and name). Reads use the
//! controller's identity, uncached.

use kube::api::{Api, DynamicObject, ListParams};
use serde_json::Value;

use crate::api::reasons::StageSetReason;
use crate::api::{SourceReference, StageSet};
use crate::kube_client::{ClientFactory, DiscoveryError};
use crate::reconcile::error::{
    PERMANENT_RETRY, Requeue, describe, kind_missing_message, rbac_denied_message,
};

pub use crate::api::{
    DEFAULT_SOURCE_API_VERSION, DEFAULT_SOURCE_KIND, DIRECT_KINDS, FLUX_SOURCE_GROUP, group_of,
};

/// A resolved, pinned source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedSource {
    /// `<namespace>/<name>` of the object holding the artifact (the
    /// ExternalArtifact for producers), the key of `lastAttemptedRevisions`.
    pub key: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub url: String,
    pub digest: String,
    pub revision: String,
    /// The holder's `SourceVerified` condition: `Some(true)` verified,
    /// `Some(false)` failed verification, None when it has none.
    pub verified: Option<bool>,
    /// Why the pin can move under the same reference (a Git branch or
    /// tag, an OCI tag or semver range, any Bucket); None when it cannot
    /// (a commit, a digest, an ExternalArtifact, a producer's artifact).
    pub mutable_pin: Option<String>,
}

/// Why a source did not resolve, with its Ready reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolveError {
    pub reason: StageSetReason,
    pub message: String,
    pub requeue: ResolveRequeue,
}

/// How a resolution failure is retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResolveRequeue {
    /// The retry interval (jittered): SourceNotReady, ArtifactNotFound.
    RetryInterval,
    /// The fixed 1-minute re-check.
    Permanent,
    /// Exponential back-off (unexpected API errors).
    Backoff,
}

impl ResolveRequeue {
    pub fn to_requeue(self, retry_interval: std::time::Duration) -> Requeue {
        match self {
            ResolveRequeue::RetryInterval => {
                Requeue::After(crate::reconcile::jitter(retry_interval))
            }
            ResolveRequeue::Permanent => Requeue::After(PERMANENT_RETRY),
            ResolveRequeue::Backoff => Requeue::Backoff,
        }
    }
}

/// A source object whose artifact or readiness changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceId {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// For ExternalArtifacts: `spec.sourceRef` (apiVersion, kind, name) of the
    /// producer that published it.
    pub back_pointer: Option<(String, String, String)>,
}

/// Whether any stage of `ss` reads its artifact from `source` (delivery.md
/// §1.2): directly (same namespace, kind and name; a Flux source kind in the
/// Flux group) or, for a producer reference, through the ExternalArtifact
/// whose back-pointer names the producer (same kind, name and API group).
/// Sources used only by actions or migrations are not considered.
pub fn references(ss: &StageSet, source: &SourceId) -> bool {
    let own = ss.metadata.namespace.as_deref().unwrap_or_default();
    ss.spec.stages.iter().any(|stage| {
        let r = &stage.source_ref;
        let ns = r
            .namespace
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or(own);
        if ns != source.namespace {
            return false;
        }
        let kind = r.kind_or_default();
        if r.is_producer() {
            source.kind == DEFAULT_SOURCE_KIND
                && source
                    .back_pointer
                    .as_ref()
                    .is_some_and(|(api_version, k, n)| {
                        k == kind
                            && n == &r.name
                            && group_of(api_version)
                                == group_of(r.api_version.as_deref().unwrap_or(""))
                    })
        } else {
            let group = r
                .api_version
                .as_deref()
                .map(group_of)
                .unwrap_or(FLUX_SOURCE_GROUP);
            kind == source.kind
                && r.name == source.name
                && (group.is_empty() || group == FLUX_SOURCE_GROUP)
        }
    })
}

fn condition<'a>(obj: &'a Value, ty: &str) -> Option<&'a Value> {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(ty))
}

/// Resolves one stage source. `stage` names the stage in messages;
/// `ss_namespace` is the StageSet's namespace; `no_cross_namespace` is
/// `--no-cross-namespace-refs`.
pub async fn resolve(
    clients: &ClientFactory,
    stage: &str,
    ss_namespace: &str,
    r: &SourceReference,
    no_cross_namespace: bool,
) -> Result<ResolvedSource, ResolveError> {
    resolve_as(
        clients,
        &clients.controller(),
        stage,
        ss_namespace,
        r,
        no_cross_namespace,
    )
    .await
}

/// [`resolve`] reading the source objects as `reader` (actions resolve their
/// sources as the stage's identity, delivery.md §1.4).
pub async fn resolve_as(
    clients: &ClientFactory,
    reader: &kube::Client,
    stage: &str,
    ss_namespace: &str,
    r: &SourceReference,
    no_cross_namespace: bool,
) -> Result<ResolvedSource, ResolveError> {
    let namespace = r
        .namespace
        .as_deref()
        .filter(|n| !n.is_empty())
        .unwrap_or(ss_namespace)
        .to_string();
    let kind = r
        .kind
        .as_deref()
        .filter(|k| !k.is_empty())
        .unwrap_or(DEFAULT_SOURCE_KIND)
        .to_string();
    let cross = namespace != ss_namespace;
    let fail = |reason: StageSetReason, message: String, requeue: ResolveRequeue| {
        // Cross-namespace failures never reveal details of the other namespace.
        let message = if cross {
            format!(
                "cross-namespace {kind} \"{}\" is not reachable; check the source CR's status in \"{namespace}\"",
                r.name
            )
        } else {
            format!("stage \"{stage}\": {message}")
        };
        ResolveError {
            reason,
            message,
            requeue,
        }
    };
    if cross && no_cross_namespace {
        return Err(ResolveError {
            reason: StageSetReason::ResolveFailed,
            message: format!(
                "stage \"{stage}\": cross-namespace sourceRef {namespace}/{} rejected (--no-cross-namespace-refs)",
                r.name
            ),
            requeue: ResolveRequeue::Permanent,
        });
    }
    let producer = r.is_producer();
    if producer && r.api_version.as_deref().is_none_or(str::is_empty) {
        return Err(ResolveError {
            reason: StageSetReason::InvalidSpec,
            message: format!(
                "stage \"{stage}\" sourceRef: kind \"{kind}\" is a producer reference and requires apiVersion"
            ),
            requeue: ResolveRequeue::Permanent,
        });
    }
    let holder_api_version = if producer {
        DEFAULT_SOURCE_API_VERSION.to_string()
    } else {
        r.api_version
            .clone()
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| DEFAULT_SOURCE_API_VERSION.to_string())
    };
    let holder_kind = if producer {
        DEFAULT_SOURCE_KIND.to_string()
    } else {
        kind.clone()
    };
    let resource = match clients.resource(&holder_api_version, &holder_kind).await {
        Ok(res) => res,
        Err(DiscoveryError::NotServed { .. }) => {
            let call = format!(
                "get {holder_kind} ({holder_api_version}) \"{namespace}/{}\"",
                r.name
            );
            return Err(fail(
                StageSetReason::RBACDenied,
                kind_missing_message(&call, ""),
                ResolveRequeue::Permanent,
            ));
        }
        Err(e) => {
            return Err(fail(
                StageSetReason::ResolveFailed,
                e.to_string(),
                ResolveRequeue::Backoff,
            ));
        }
    };
    let api: Api<DynamicObject> = Api::namespaced_with(reader.clone(), &namespace, &resource.api);
    let holder: DynamicObject = if producer {
        let list = api.list(&ListParams::default()).await.map_err(|e| {
            api_failure(
                &fail,
                &format!("list {holder_kind} in namespace \"{namespace}\""),
                &e,
            )
        })?;
        let want_group = group_of(r.api_version.as_deref().unwrap_or(""));
        let mut matches: Vec<DynamicObject> = list
            .items
            .into_iter()
            .filter(|ea| {
                let back = ea.data.pointer("/spec/sourceRef");
                back.is_some_and(|b| {
                    b.get("kind").and_then(Value::as_str) == Some(kind.as_str())
                        && b.get("name").and_then(Value::as_str) == Some(r.name.as_str())
                        && group_of(b.get("apiVersion").and_then(Value::as_str).unwrap_or(""))
                            == want_group
                })
            })
            .collect();
        match matches.len() {
            0 => {
                return Err(fail(
                    StageSetReason::ArtifactNotFound,
                    format!(
                        "no ExternalArtifact in namespace \"{namespace}\" points back to {kind} \"{}\"",
                        r.name
                    ),
                    ResolveRequeue::RetryInterval,
                ));
            }
            1 => matches.remove(0),
            n => {
                return Err(fail(
                    StageSetReason::ResolveFailed,
                    format!(
                        "{n} ExternalArtifacts in namespace \"{namespace}\" point back to {kind} \"{}\"; expected exactly one",
                        r.name
                    ),
                    ResolveRequeue::Permanent,
                ));
            }
        }
    } else {
        match crate::reconcile::error::retrying(|| api.get_opt(&r.name)).await {
            Ok(Some(o)) => o,
            Ok(None) => {
                return Err(fail(
                    StageSetReason::ArtifactNotFound,
                    format!(
                        "{kind} \"{}\" not found in namespace \"{namespace}\"",
                        r.name
                    ),
                    ResolveRequeue::RetryInterval,
                ));
            }
            Err(e) => {
                return Err(api_failure(
                    &fail,
                    &format!("get {kind} \"{namespace}/{}\"", r.name),
                    &e,
                ));
            }
        }
    };
    let holder_name = holder.metadata.name.clone().unwrap_or_default();
    let data = &holder.data;
    match condition(data, "Ready") {
        Some(c) if c.get("status").and_then(Value::as_str) == Some("True") => {}
        other => {
            let detail = match other {
                Some(c) => format!(
                    "Ready={} ({}: {})",
                    c.get("status").and_then(Value::as_str).unwrap_or("Unknown"),
                    c.get("reason").and_then(Value::as_str).unwrap_or(""),
                    c.get("message").and_then(Value::as_str).unwrap_or("")
                ),
                None => "no Ready condition yet".to_string(),
            };
            return Err(fail(
                StageSetReason::SourceNotReady,
                format!("{holder_kind} \"{namespace}/{holder_name}\" is not ready: {detail}"),
                ResolveRequeue::RetryInterval,
            ));
        }
    }
    let artifact = data.pointer("/status/artifact");
    let url = artifact
        .and_then(|a| a.get("url"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let digest = artifact
        .and_then(|a| a.get("digest"))
        .and_then(Value::as_str)
        .unwrap_or("");
    if url.is_empty() || digest.is_empty() {
        return Err(fail(
            StageSetReason::ArtifactNotFound,
            format!(
                "{holder_kind} \"{namespace}/{holder_name}\" has no status.artifact url and digest"
            ),
            ResolveRequeue::RetryInterval,
        ));
    }
    let revision = artifact
        .and_then(|a| a.get("revision"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let verified = condition(data, "SourceVerified")
        .map(|c| c.get("status").and_then(Value::as_str) == Some("True"));
    let mutable_pin = if producer {
        None
    } else {
        mutable_pin(&holder_kind, data)
    };
    Ok(ResolvedSource {
        key: format!("{namespace}/{holder_name}"),
        kind: holder_kind,
        namespace,
        name: holder_name,
        url: url.to_string(),
        digest: digest.to_string(),
        revision,
        verified,
        mutable_pin,
    })
}

/// Why a Flux source's reference can move (see [`ResolvedSource::mutable_pin`]).
fn mutable_pin(kind: &str, data: &Value) -> Option<String> {
    let field = |f: &str| {
        data.pointer(&format!("/spec/ref/{f}"))
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
    };
    match kind {
        "GitRepository" => {
            if field("commit").is_some() {
                return None;
            }
            let what = ["tag", "semver", "name", "branch"]
                .iter()
                .find_map(|f| field(f).map(|v| format!("{f} {v:?}")))
                .unwrap_or_else(|| "the default branch".to_string());
            Some(format!("GitRepository follows {what}, not a commit"))
        }
        "OCIRepository" => {
            if field("digest").is_some() {
                return None;
            }
            let what = ["semver", "tag"]
                .iter()
                .find_map(|f| field(f).map(|v| format!("{f} {v:?}")))
                .unwrap_or_else(|| "tag \"latest\"".to_string());
            Some(format!("OCIRepository follows {what}, not a digest"))
        }
        "Bucket" => Some("a Bucket's contents are never pinned".to_string()),
        _ => None,
    }
}

fn api_failure(
    fail: &dyn Fn(StageSetReason, String, ResolveRequeue) -> ResolveError,
    call: &str,
    e: &kube::Error,
) -> ResolveError {
    match e {
        kube::Error::Api(s) if s.code == 403 => fail(
            StageSetReason::RBACDenied,
            rbac_denied_message(call, &s.message),
            ResolveRequeue::Permanent,
        ),
        kube::Error::Api(s) if s.code == 404 => fail(
            StageSetReason::RBACDenied,
            kind_missing_message(call, &s.message),
            ResolveRequeue::Permanent,
        ),
        other => fail(
            StageSetReason::ResolveFailed,
            format!("{call}: {}", describe(other)),
            ResolveRequeue::Backoff,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sref(api_version: Option<&str>, kind: Option<&str>) -> SourceReference {
        SourceReference {
            api_version: api_version.map(str::to_string),
            kind: kind.map(str::to_string),
            name: "x".into(),
            namespace: None,
        }
    }

    fn stageset(stages: serde_json::Value) -> StageSet {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "stages.metio.wtf/v1",
            "kind": "StageSet",
            "metadata": {"name": "shop", "namespace": "team"},
            "spec": {"stages": stages}
        }))
        .unwrap()
    }

    fn changed(kind: &str, namespace: &str, name: &str) -> SourceId {
        SourceId {
            kind: kind.into(),
            namespace: namespace.into(),
            name: name.into(),
            back_pointer: None,
        }
    }

    #[test]
    fn references_direct_sources_by_namespace_kind_and_name() {
        let ss = stageset(serde_json::json!([
            {"name": "a", "sourceRef": {"name": "app"}},
            {"name": "b", "sourceRef": {"kind": "GitRepository", "name": "repo", "namespace": "shared"}},
            {"name": "c", "sourceRef": {"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "Bucket", "name": "bkt"}},
        ]));
        assert!(references(&ss, &changed("ExternalArtifact", "team", "app")));
        assert!(references(&ss, &changed("GitRepository", "shared", "repo")));
        assert!(references(&ss, &changed("Bucket", "team", "bkt")));
        // wrong namespace, kind or name
        assert!(!references(
            &ss,
            &changed("ExternalArtifact", "other", "app")
        ));
        assert!(!references(&ss, &changed("GitRepository", "team", "repo")));
        assert!(!references(&ss, &changed("OCIRepository", "team", "app")));
        assert!(!references(&ss, &changed("ExternalArtifact", "team", "ap")));
        // a direct kind in a foreign group is a producer, never read directly
        let foreign = stageset(serde_json::json!([
            {"name": "a", "sourceRef": {"apiVersion": "example.com/v1", "kind": "GitRepository", "name": "repo"}}
        ]));
        assert!(!references(
            &foreign,
            &changed("GitRepository", "team", "repo")
        ));
    }

    #[test]
    fn references_producers_through_the_back_pointer() {
        let ss = stageset(serde_json::json!([
            {"name": "a", "sourceRef": {"apiVersion": "jaas.metio.wtf/v1", "kind": "JsonnetSnippet", "name": "orders"}}
        ]));
        let mut ea = changed("ExternalArtifact", "team", "orders-artifact");
        ea.back_pointer = Some((
            "jaas.metio.wtf/v1beta1".into(),
            "JsonnetSnippet".into(),
            "orders".into(),
        ));
        assert!(
            references(&ss, &ea),
            "the version does not matter, the group does"
        );
        let mut other_group = ea.clone();
        other_group.back_pointer = Some((
            "other.io/v1".into(),
            "JsonnetSnippet".into(),
            "orders".into(),
        ));
        assert!(!references(&ss, &other_group));
        let mut other_name = ea.clone();
        other_name.back_pointer = Some((
            "jaas.metio.wtf/v1".into(),
            "JsonnetSnippet".into(),
            "payments".into(),
        ));
        assert!(!references(&ss, &other_name));
        // the producer object itself changing is not the artifact changing
        assert!(!references(
            &ss,
            &changed("JsonnetSnippet", "team", "orders")
        ));
        // without a back-pointer nothing matches
        assert!(!references(
            &ss,
            &changed("ExternalArtifact", "team", "orders")
        ));
    }

    fn is_producer(r: &SourceReference) -> bool {
        r.is_producer()
    }

    #[test]
    fn producer_classification() {
        assert!(!is_producer(&sref(None, None)));
        assert!(!is_producer(&sref(None, Some("ExternalArtifact"))));
        assert!(!is_producer(&sref(None, Some("GitRepository"))));
        assert!(!is_producer(&sref(
            Some("source.toolkit.fluxcd.io/v1beta2"),
            Some("OCIRepository")
        )));
        assert!(is_producer(&sref(
            Some("jaas.metio.wtf/v1"),
            Some("JsonnetSnippet")
        )));
        assert!(is_producer(&sref(
            Some("example.com/v1"),
            Some("GitRepository")
        )));
        assert!(is_producer(&sref(None, Some("JsonnetSnippet"))));
    }
}
