//! The restart and event promotion gates' observations (delivery.md §5.5,
//! "Pre-evaluation"): container restarts and Warning events of the pods a
//! check selects, read on the target cluster as the stage's identity.
//! [`super::promotion::decide`] turns them into a decision.

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams};

use crate::api::{EventGate, GateFailurePolicy, RestartBaseline, RestartGate};

use super::actions::verbs::selector_query;
use super::error::describe;

/// A check that tripped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub check: String,
    /// Restarts beyond the baseline, or matching events.
    pub observed: i32,
    /// The allowance the check has (`maxRestarts` / `maxEvents`).
    pub allowed: i32,
    /// The check (or its gate) asks for a rollback.
    pub rollback: bool,
}

/// Why the pods or events could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadError {
    /// Forbidden: an RBAC hold.
    Denied(String),
    /// Anything else: the gate cannot be evaluated now.
    Transient(String),
}

fn read_error(what: &str, e: &kube::Error) -> ReadError {
    match e {
        kube::Error::Api(s) if s.code == 403 => ReadError::Denied(format!("{what}: {}", s.message)),
        _ => ReadError::Transient(format!("{what}: {}", describe(e))),
    }
}

/// The restart gate: per check, the totals now and the baseline they are
/// measured against.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Restarts {
    /// The live totals per check.
    pub live: Vec<RestartBaseline>,
    /// The baseline used: the recorded one, or the live total for a check
    /// never seen before.
    pub baseline: Vec<RestartBaseline>,
    /// The first check over its allowance.
    pub verdict: Option<Verdict>,
}

async fn live_pods(
    client: &kube::Client,
    namespace: &str,
    selector: &str,
) -> Result<Vec<Pod>, kube::Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let list = pods.list(&ListParams::default().labels(selector)).await?;
    Ok(list
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect())
}

fn restart_total(pod: &Pod) -> i64 {
    let status = pod.status.as_ref();
    let count = |list: Option<&Vec<k8s_openapi::api::core::v1::ContainerStatus>>| -> i64 {
        list.into_iter()
            .flatten()
            .map(|c| i64::from(c.restart_count))
            .sum()
    };
    count(status.and_then(|s| s.init_container_statuses.as_ref()))
        + count(status.and_then(|s| s.container_statuses.as_ref()))
}

fn rollback(check: Option<GateFailurePolicy>, gate: Option<GateFailurePolicy>) -> bool {
    check.or(gate) == Some(GateFailurePolicy::Rollback)
}

/// Observes a restart gate.
pub async fn restarts(
    client: &kube::Client,
    namespace: &str,
    gate: &RestartGate,
    recorded: &[RestartBaseline],
) -> Result<Restarts, ReadError> {
    let mut out = Restarts::default();
    for check in &gate.checks {
        let selector = selector_query(&check.selector);
        let pods = live_pods(client, namespace, &selector).await.map_err(|e| {
            read_error(
                &format!("restart check \"{}\": listing pods", check.name),
                &e,
            )
        })?;
        let total = i32::try_from(pods.iter().map(restart_total).sum::<i64>()).unwrap_or(i32::MAX);
        let base = recorded
            .iter()
            .find(|b| b.name == check.name)
            .and_then(|b| b.restarts)
            .unwrap_or(total);
        out.live.push(RestartBaseline {
            name: check.name.clone(),
            restarts: Some(total),
        });
        out.baseline.push(RestartBaseline {
            name: check.name.clone(),
            restarts: Some(base),
        });
        let excess = (total - base).max(0);
        let allowed = check.max_restarts.unwrap_or(0);
        if out.verdict.is_none() && excess > allowed {
            out.verdict = Some(Verdict {
                check: check.name.clone(),
                observed: excess,
                allowed,
                rollback: rollback(check.on_failure, gate.on_failure),
            });
        }
    }
    Ok(out)
}

/// Observes an event gate: the first check whose selected pods have more
/// matching Warning events than it allows.
pub async fn events(
    client: &kube::Client,
    namespace: &str,
    gate: &EventGate,
) -> Result<Option<Verdict>, ReadError> {
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    // The API server filters by involved kind; type and reason are checked
    // here (an Event's `type` is not a field selector every server serves).
    let listed = events
        .list(&ListParams::default().fields("involvedObject.kind=Pod"))
        .await
        .map_err(|e| read_error("event gate: listing events", &e))?;
    for check in &gate.checks {
        let selector = selector_query(&check.selector);
        let pods = live_pods(client, namespace, &selector).await.map_err(|e| {
            read_error(&format!("event check \"{}\": listing pods", check.name), &e)
        })?;
        let uids: std::collections::BTreeSet<String> =
            pods.iter().filter_map(|p| p.metadata.uid.clone()).collect();
        let total: i64 = listed
            .items
            .iter()
            .filter(|e| e.type_.as_deref() == Some("Warning"))
            .filter(|e| {
                e.involved_object
                    .uid
                    .as_ref()
                    .is_some_and(|u| uids.contains(u))
            })
            .filter(|e| e.reason.as_ref().is_some_and(|r| check.reasons.contains(r)))
            .map(|e| i64::from(e.count.unwrap_or(1).max(1)))
            .sum();
        let observed = i32::try_from(total).unwrap_or(i32::MAX);
        let allowed = check.max_events.unwrap_or(0);
        if observed > allowed {
            return Ok(Some(Verdict {
                check: check.name.clone(),
                observed,
                allowed,
                rollback: rollback(check.on_failure, gate.on_failure),
            }));
        }
    }
    Ok(None)
}
