//! Readiness verification (delivery.md §2.8): wait until every object of the
//! wait set is kstatus Current, failing fast on Failed, bounded by the stage's
//! timeout ladder; abandon the pass when the StageSet is deleted meanwhile.
//!
//! Polling starts fast and backs off to every 2 s (the upstream cadence), so a
//! quickly-ready stage is noticed in milliseconds without hammering the API
//! server during a long rollout.

use std::time::Duration;

use kube::api::{Api, DynamicObject};
use serde_json::Value;

use crate::kube_client::ClientFactory;
use std::collections::HashMap;

use crate::reconcile::apply::{ObjectRef, bounded};
use crate::reconcile::error::describe;
use crate::reconcile::health::{Health, compute};

/// How verification ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every object is Current.
    Ready,
    /// The timeout passed while objects were still progressing (none Failed).
    Progressing(String),
    /// An object failed (fail-fast), or the timeout passed with a failed object.
    Failed(String),
    /// The StageSet got a deletionTimestamp; the pass is abandoned.
    Deleted,
}

const MAX_POLL: Duration = Duration::from_secs(2);
const DELETION_POLL: Duration = Duration::from_secs(5);
/// How often a long verify wait logs what it still waits for (operations.md
/// §1.10: 1 min).
pub(super) const HEARTBEAT: Duration = Duration::from_secs(60);

/// What the caller already knows: the health of objects it has just read or
/// written (by subject), used for the first round instead of a read, and how
/// many objects to read at once.
#[derive(Debug, Default)]
pub struct Known {
    pub seen: HashMap<String, Health>,
    pub concurrency: usize,
}

/// Waits for the objects to be Current with `client` (the stage identity).
/// `deleting` is polled every 5 s and aborts the wait when it returns true.
pub async fn wait_ready<F, Fut>(
    clients: &ClientFactory,
    client: &kube::Client,
    objects: &[ObjectRef],
    known: Known,
    timeout: Duration,
    mut deleting: F,
) -> Verdict
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    let deadline = start + timeout;
    let mut delay = Duration::from_millis(25);
    let mut next_deletion_check = start + DELETION_POLL;
    let mut next_heartbeat = start + HEARTBEAT;
    let mut seen = known.seen;
    loop {
        let mut pending: Vec<String> = Vec::new();
        let mut failed: Vec<String> = Vec::new();
        let first = std::mem::take(&mut seen);
        let states = bounded(objects, known.concurrency, |r| {
            let known = first.get(&r.subject()).cloned();
            async move {
                let state = match known {
                    Some(h) => Ok(Some(h)),
                    None => read(clients, client, r)
                        .await
                        .map(|o| o.map(|obj| compute(&obj, k8s_openapi::jiff::Timestamp::now()))),
                };
                Ok::<_, std::convert::Infallible>(state)
            }
        })
        .await
        .unwrap_or_else(|never| match never {});
        for (r, state) in objects.iter().zip(states) {
            match state {
                Ok(Some(Health::Current)) => {}
                Ok(Some(Health::Failed(why))) => failed.push(format!("{}: {why}", r.subject())),
                Ok(Some(Health::InProgress(why))) => {
                    pending.push(format!("{}: {why}", r.subject()))
                }
                Ok(Some(Health::Terminating)) => {
                    pending.push(format!("{}: terminating", r.subject()))
                }
                Ok(None) => pending.push(format!("{}: not found", r.subject())),
                Err(e) => pending.push(format!("{}: {e}", r.subject())),
            }
        }
        if !failed.is_empty() {
            return Verdict::Failed(failed.join("; "));
        }
        if pending.is_empty() {
            return Verdict::Ready;
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Verdict::Progressing(format!(
                "timed out after {} waiting for {}",
                crate::duration::GoDuration::from_std(timeout),
                pending.join("; ")
            ));
        }
        if now >= next_deletion_check {
            if deleting().await {
                return Verdict::Deleted;
            }
            next_deletion_check = now + DELETION_POLL;
        }
        if now >= next_heartbeat {
            // A long wait says what it waits for (the reconcile span names
            // the StageSet).
            tracing::info!(
                elapsed = %crate::duration::GoDuration::from_std(now - start),
                timeout = %crate::duration::GoDuration::from_std(timeout),
                pending = pending.len(),
                waiting = %heartbeat_summary(&pending),
                "still waiting for objects to become ready"
            );
            next_heartbeat = now + HEARTBEAT;
        }
        let sleep = delay.min(deadline.saturating_duration_since(now));
        tokio::time::sleep(sleep).await;
        delay = (delay * 2).min(MAX_POLL);
    }
}

/// The first few objects a heartbeat names, and how many more wait.
fn heartbeat_summary(pending: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut text = pending
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if pending.len() > SHOWN {
        text.push_str(&format!("; and {} more", pending.len() - SHOWN));
    }
    text
}

async fn read(
    clients: &ClientFactory,
    client: &kube::Client,
    r: &ObjectRef,
) -> Result<Option<Value>, String> {
    let resource = clients
        .resource(&r.api_version, &r.kind)
        .await
        .map_err(|e| e.to_string())?;
    let api: Api<DynamicObject> = if resource.namespaced {
        Api::namespaced_with(client.clone(), &r.namespace, &resource.api)
    } else {
        Api::all_with(client.clone(), &resource.api)
    };
    match crate::reconcile::error::retrying(|| api.get_opt(&r.name)).await {
        Ok(o) => Ok(o.map(|o| serde_json::to_value(o).unwrap_or(Value::Null))),
        Err(e) => Err(describe(&e)),
    }
}

/// The verify timeout of a stage: `readyChecks.timeout` → `stages[].timeout` →
/// `spec.timeout` → 15m; a missing, unparseable or non-positive value falls
/// through.
pub fn timeout_ladder(
    ready_checks: Option<&crate::api::Duration>,
    stage: Option<&crate::api::Duration>,
    spec: Option<&crate::api::Duration>,
) -> Duration {
    [ready_checks, stage, spec]
        .into_iter()
        .flatten()
        .filter_map(|d| d.parse().ok())
        .find(|d| d.is_positive())
        .and_then(|d| d.to_std())
        .unwrap_or(Duration::from_secs(15 * 60))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Duration as D;

    #[test]
    fn a_heartbeat_names_five_objects_and_counts_the_rest() {
        let pending: Vec<String> = (1..=7)
            .map(|i| format!("ConfigMap/ns/c{i}: not found"))
            .collect();
        assert_eq!(
            heartbeat_summary(&pending[..2]),
            "ConfigMap/ns/c1: not found; ConfigMap/ns/c2: not found"
        );
        let text = heartbeat_summary(&pending);
        assert!(text.starts_with("ConfigMap/ns/c1: not found;"), "{text}");
        assert!(text.contains("c5: not found; and 2 more"), "{text}");
        assert!(!text.contains("c6"), "{text}");
    }

    #[test]
    fn ladder() {
        assert_eq!(timeout_ladder(None, None, None), Duration::from_secs(900));
        assert_eq!(
            timeout_ladder(
                Some(&D::from("0s")),
                Some(&D::from("-1m")),
                Some(&D::from("30s"))
            ),
            Duration::from_secs(30)
        );
        assert_eq!(
            timeout_ladder(Some(&D::from("2m")), Some(&D::from("1m")), None),
            Duration::from_secs(120)
        );
        assert_eq!(
            timeout_ladder(Some(&D::from("nonsense")), Some(&D::from("1m")), None),
            Duration::from_secs(60)
        );
    }
}
