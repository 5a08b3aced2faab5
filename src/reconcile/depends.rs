//! R6 — `spec.dependsOn` between StageSets (delivery.md §2 R6, §5.3; api.md
//! §2.3; operations.md §8.3).
//!
//! First a breadth-first walk over the `dependsOn` graph with uncached reads
//! looks for a path back to this StageSet (`Stalled`); then each dependency, in
//! order, must exist, be Ready at its current generation, hold no revision back
//! for an update window and satisfy `minVersion`. The first failing dependency
//! names the `DependencyNotReady` message.
//!
//! Messages never carry API error details: a dependency may live in another
//! namespace, and a Forbidden answer must not tell a tenant anything about it.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use kube::api::Api;
use kube::{Resource, ResourceExt};

use crate::api::reasons::{CONDITION_READY, StageSetReason};
use crate::api::{ConditionStatus, Dependency, StageSet};
use crate::reconcile::error::{PERMANENT_RETRY, Requeue, describe, is_forbidden};
use crate::validate::semver::parse_lenient as parse_version;

/// How many StageSets the cycle walk reads at most.
pub const WALK_LIMIT: usize = 1000;

/// The message of a dependency cycle.
pub const CYCLE_MESSAGE: &str = "spec.dependsOn forms a cycle";

/// Why the StageSet may not proceed past R6.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocked {
    /// `DependencyNotReady` or `Stalled`.
    pub reason: StageSetReason,
    /// The Ready message; for a transient error, a log line (never written to
    /// the status).
    pub message: String,
    /// A `dependsOn` cycle: re-check after the fixed permanent retry interval.
    pub stalled: bool,
    /// Reading a StageSet failed transiently: back off, write no status.
    pub transient: bool,
}

impl Blocked {
    fn not_ready(message: String) -> Blocked {
        Blocked {
            reason: StageSetReason::DependencyNotReady,
            message,
            stalled: false,
            transient: false,
        }
    }

    fn cycle() -> Blocked {
        Blocked {
            reason: StageSetReason::Stalled,
            message: CYCLE_MESSAGE.to_string(),
            stalled: true,
            transient: false,
        }
    }

    fn transient(message: String) -> Blocked {
        Blocked {
            reason: StageSetReason::DependencyNotReady,
            message,
            stalled: false,
            transient: true,
        }
    }

    /// The requeue policy (delivery.md §1.3): a cycle re-checks after 1 min, a
    /// not-ready dependency after the jittered retry interval, a transient read
    /// error backs off.
    pub fn requeue(&self, retry: Duration) -> Requeue {
        if self.transient {
            Requeue::Backoff
        } else if self.stalled {
            Requeue::After(PERMANENT_RETRY)
        } else {
            Requeue::After(super::jitter(retry))
        }
    }
}

/// A StageSet's identity in the dependency graph.
type Node = (String, String);

/// The namespace a dependency points into (defaults to the dependent's).
fn dependency_namespace<'a>(dep: &'a Dependency, own: &'a str) -> &'a str {
    dep.namespace
        .as_deref()
        .filter(|n| !n.is_empty())
        .unwrap_or(own)
}

/// The `dependsOn` edges of a StageSet, namespaces defaulted.
fn edges(ss: &StageSet) -> Vec<Node> {
    let own = ss.namespace().unwrap_or_default();
    ss.spec
        .depends_on
        .iter()
        .flatten()
        .map(|d| (dependency_namespace(d, &own).to_string(), d.name.clone()))
        .collect()
}

/// What a read of one StageSet found.
enum Read {
    Found(Box<StageSet>),
    Missing,
    /// Forbidden: treated as unknown, with no detail shown.
    Denied,
}

async fn read(client: &kube::Client, namespace: &str, name: &str) -> Result<Read, Blocked> {
    let api: Api<StageSet> = Api::namespaced(client.clone(), namespace);
    match api.get_opt(name).await {
        Ok(Some(ss)) => Ok(Read::Found(Box::new(ss))),
        Ok(None) => Ok(Read::Missing),
        Err(e) if is_forbidden(&e) => {
            tracing::debug!(dependency = %format!("{namespace}/{name}"), error = %describe(&e), "reading a dependsOn StageSet was denied");
            Ok(Read::Denied)
        }
        Err(e) => Err(Blocked::transient(format!(
            "reading dependency {namespace}/{name} failed: {}",
            describe(&e)
        ))),
    }
}

/// Whether following the edge from a node in `from` to `to` is allowed.
fn edge_allowed(from: &str, to: &str, no_cross_namespace_refs: bool) -> bool {
    !no_cross_namespace_refs || from == to
}

/// Breadth-first walk over `dependsOn` from `ss`: whether a path leads back to
/// it. Missing (or unreadable) StageSets are skipped, every node is read at
/// most once, and the walk stops after [`WALK_LIMIT`] reads. With
/// `--no-cross-namespace-refs` cross-namespace edges are refused anyway, so the
/// walk does not follow them (and never reads another namespace).
async fn find_cycle(
    client: &kube::Client,
    ss: &StageSet,
    no_cross_namespace_refs: bool,
) -> Result<bool, Blocked> {
    let own_ns = ss.namespace().unwrap_or_default();
    let me: Node = (own_ns.clone(), ss.name_any());
    let mut queue: VecDeque<Node> = edges(ss)
        .into_iter()
        .filter(|(ns, _)| edge_allowed(&own_ns, ns, no_cross_namespace_refs))
        .collect();
    let mut visited: HashSet<Node> = HashSet::new();
    while let Some(node) = queue.pop_front() {
        if node == me {
            return Ok(true);
        }
        if !visited.insert(node.clone()) {
            continue;
        }
        if visited.len() > WALK_LIMIT {
            tracing::warn!(stageset = %format!("{}/{}", me.0, me.1), limit = WALK_LIMIT, "the dependsOn graph is too large to walk completely; cycle check stopped");
            return Ok(false);
        }
        let Read::Found(found) = read(client, &node.0, &node.1).await? else {
            continue;
        };
        for next in edges(&found) {
            if edge_allowed(&node.0, &next.0, no_cross_namespace_refs) && !visited.contains(&next) {
                queue.push_back(next);
            }
        }
    }
    Ok(false)
}

/// Checks a dependency's `status.version` against `minVersion`; `Err` carries
/// the not-ready message.
pub fn version_gate(key: &str, deployed: Option<&str>, min_version: &str) -> Result<(), String> {
    let min_version = min_version.trim();
    let Some(min) = parse_version(min_version) else {
        return Err(format!(
            "dependency {key}: minVersion \"{min_version}\" is not a valid semver"
        ));
    };
    let deployed = deployed.map(str::trim).unwrap_or("");
    if deployed.is_empty() {
        return Err(format!(
            "dependency {key} has no version yet, need >= {min_version}"
        ));
    }
    match parse_version(deployed) {
        Some(v) if v.cmp_precedence(&min).is_ge() => Ok(()),
        Some(_) => Err(format!(
            "dependency {key} is at version {deployed}, need >= {min_version}"
        )),
        None => Err(format!(
            "dependency {key} is at version {deployed} (not a valid semver), need >= {min_version}"
        )),
    }
}

/// The readiness gate of one fetched dependency; `Err` carries the message.
pub fn gate(key: &str, dep: &StageSet, min_version: Option<&str>) -> Result<(), String> {
    let status = dep.status.clone().unwrap_or_default();
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == CONDITION_READY)
        .is_some_and(|c| c.status == ConditionStatus::True);
    let generation = dep.meta().generation;
    if !ready || status.observed_generation.is_none() || status.observed_generation != generation {
        return Err(format!("dependency {key} is not ready"));
    }
    if status
        .pending_update
        .as_ref()
        .is_some_and(|p| !p.revisions.is_empty())
    {
        return Err(format!(
            "dependency {key} has a new revision held by an update window"
        ));
    }
    match min_version.filter(|m| !m.trim().is_empty()) {
        Some(min) => version_gate(key, status.version.as_deref(), min),
        None => Ok(()),
    }
}

/// R6: whether `ss` may proceed. `Err` says why not.
pub async fn check(
    client: &kube::Client,
    ss: &StageSet,
    no_cross_namespace_refs: bool,
) -> Result<(), Blocked> {
    let deps = ss.spec.depends_on.as_deref().unwrap_or_default();
    if deps.is_empty() {
        return Ok(());
    }
    if find_cycle(client, ss, no_cross_namespace_refs).await? {
        return Err(Blocked::cycle());
    }
    let own = ss.namespace().unwrap_or_default();
    for dep in deps {
        let namespace = dependency_namespace(dep, &own);
        let key = format!("{namespace}/{}", dep.name);
        if namespace != own && no_cross_namespace_refs {
            return Err(Blocked::not_ready(format!(
                "cross-namespace dependsOn {key} rejected"
            )));
        }
        let found = match read(client, namespace, &dep.name).await? {
            Read::Found(found) => found,
            Read::Missing => {
                return Err(Blocked::not_ready(format!("dependency {key} not found")));
            }
            Read::Denied => {
                return Err(Blocked::not_ready(format!("dependency {key} is not ready")));
            }
        };
        gate(&key, &found, dep.min_version.as_deref()).map_err(Blocked::not_ready)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Condition, PendingUpdate, StageSetStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    fn dependency(generation: i64, status: StageSetStatus) -> StageSet {
        let mut ss: StageSet = serde_json::from_value(serde_json::json!({
            "apiVersion": "stages.metio.wtf/v1",
            "kind": "StageSet",
            "metadata": {"name": "a", "namespace": "ns", "generation": generation},
            "spec": {"stages": [{"name": "s", "sourceRef": {"name": "x"}}]}
        }))
        .unwrap();
        ss.status = Some(status);
        ss
    }

    fn ready_status(ready: bool, observed: Option<i64>) -> StageSetStatus {
        StageSetStatus {
            conditions: vec![Condition {
                type_: CONDITION_READY.into(),
                status: if ready {
                    ConditionStatus::True
                } else {
                    ConditionStatus::False
                },
                observed_generation: observed,
                last_transition_time: Time(Timestamp::now()),
                reason: if ready { "Succeeded" } else { "StageFailed" }.into(),
                message: String::new(),
            }],
            observed_generation: observed,
            ..StageSetStatus::default()
        }
    }

    #[test]
    fn lenient_versions() {
        let v = |s: &str| parse_version(s).map(|v| v.to_string());
        assert_eq!(v("1.2.3").as_deref(), Some("1.2.3"));
        assert_eq!(v(" v1.2.3 ").as_deref(), Some("1.2.3"));
        assert_eq!(v("V2.0.0-rc.1").as_deref(), Some("2.0.0-rc.1"));
        assert_eq!(v("1.2").as_deref(), Some("1.2.0"));
        assert_eq!(v("v3").as_deref(), Some("3.0.0"));
        assert_eq!(v("1.2-beta").as_deref(), Some("1.2.0-beta"));
        assert_eq!(v(""), None);
        assert_eq!(v("v"), None);
        assert_eq!(v("latest"), None);
        assert_eq!(v("1..2"), None);
        assert_eq!(v("1.2.3.4"), None);
    }

    #[test]
    fn version_floor() {
        let k = "ns/a";
        assert_eq!(version_gate(k, Some("1.2.3"), "1.2.3"), Ok(()));
        assert_eq!(version_gate(k, Some("v1.10.0"), "1.9"), Ok(()));
        assert_eq!(version_gate(k, Some("2.0.0"), "v1.2.3"), Ok(()));
        // Build metadata does not take part in precedence.
        assert_eq!(version_gate(k, Some("1.2.3+a"), "1.2.3+b"), Ok(()));
        assert_eq!(
            version_gate(k, Some("1.2.3-rc.1"), "1.2.3"),
            Err("dependency ns/a is at version 1.2.3-rc.1, need >= 1.2.3".into())
        );
        assert_eq!(
            version_gate(k, Some("1.2.2"), "1.2.3"),
            Err("dependency ns/a is at version 1.2.2, need >= 1.2.3".into())
        );
        assert_eq!(
            version_gate(k, None, "1.0.0"),
            Err("dependency ns/a has no version yet, need >= 1.0.0".into())
        );
        assert_eq!(
            version_gate(k, Some("  "), "1.0.0"),
            Err("dependency ns/a has no version yet, need >= 1.0.0".into())
        );
        assert_eq!(
            version_gate(k, Some("banana"), "1.0.0"),
            Err("dependency ns/a is at version banana (not a valid semver), need >= 1.0.0".into())
        );
        // An invalid floor is the webhook's job, but must not pass or panic.
        assert_eq!(
            version_gate(k, Some("9.9.9"), "not-a-version"),
            Err("dependency ns/a: minVersion \"not-a-version\" is not a valid semver".into())
        );
    }

    #[test]
    fn readiness_gate_messages() {
        let k = "ns/a";
        assert_eq!(
            gate(k, &dependency(2, ready_status(true, Some(2))), None),
            Ok(())
        );
        let not_ready = Err("dependency ns/a is not ready".to_string());
        assert_eq!(
            gate(k, &dependency(2, ready_status(false, Some(2))), None),
            not_ready
        );
        assert_eq!(
            gate(k, &dependency(3, ready_status(true, Some(2))), None),
            not_ready,
            "stale generation"
        );
        assert_eq!(
            gate(k, &dependency(1, ready_status(true, None)), None),
            not_ready
        );
        assert_eq!(
            gate(k, &dependency(1, StageSetStatus::default()), None),
            not_ready
        );
        let mut held = ready_status(true, Some(1));
        held.pending_update = Some(PendingUpdate {
            revisions: [("ns/src".to_string(), "r2".to_string())].into(),
            ..PendingUpdate::default()
        });
        assert_eq!(
            gate(k, &dependency(1, held.clone()), Some("1.0.0")),
            Err("dependency ns/a has a new revision held by an update window".into())
        );
        held.pending_update = Some(PendingUpdate::default());
        assert_eq!(gate(k, &dependency(1, held.clone()), None), Ok(()));
        assert_eq!(
            gate(k, &dependency(1, held.clone()), Some("1.0.0")),
            Err("dependency ns/a has no version yet, need >= 1.0.0".into())
        );
        held.version = Some("1.4.0".into());
        assert_eq!(gate(k, &dependency(1, held.clone()), Some("1.3")), Ok(()));
        assert_eq!(gate(k, &dependency(1, held.clone()), Some("")), Ok(()));
        assert_eq!(
            gate(k, &dependency(1, held), Some("1.5.0")),
            Err("dependency ns/a is at version 1.4.0, need >= 1.5.0".into())
        );
    }

    #[test]
    fn requeue_policy() {
        let retry = Duration::from_secs(100);
        assert_eq!(
            Blocked::cycle().requeue(retry),
            Requeue::After(PERMANENT_RETRY)
        );
        assert_eq!(
            Blocked::transient("x".into()).requeue(retry),
            Requeue::Backoff
        );
        match Blocked::not_ready("x".into()).requeue(retry) {
            Requeue::After(d) => {
                assert!(d >= Duration::from_secs(95) && d <= Duration::from_secs(105))
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(Blocked::cycle().message, CYCLE_MESSAGE);
        assert_eq!(Blocked::cycle().reason, StageSetReason::Stalled);
    }

    #[test]
    fn edges_default_the_namespace() {
        let ss: StageSet = serde_json::from_value(serde_json::json!({
            "apiVersion": "stages.metio.wtf/v1",
            "kind": "StageSet",
            "metadata": {"name": "b", "namespace": "team"},
            "spec": {
                "dependsOn": [{"name": "a"}, {"name": "c", "namespace": "other"}, {"name": "d", "namespace": ""}],
                "stages": [{"name": "s", "sourceRef": {"name": "x"}}]
            }
        }))
        .unwrap();
        assert_eq!(
            edges(&ss),
            vec![
                ("team".to_string(), "a".to_string()),
                ("other".to_string(), "c".to_string()),
                ("team".to_string(), "d".to_string()),
            ]
        );
        assert!(edge_allowed("team", "other", false));
        assert!(!edge_allowed("team", "other", true));
        assert!(edge_allowed("team", "team", true));
    }
}
