//! The verify phase's CEL ready expressions (delivery.md §2.10): polling the
//! applied objects a `readyChecks.exprs[]` check matches until they are
//! current. Compiling and evaluating the expressions is pure and lives in
//! `validate::cel`, shared with admission.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, DynamicObject};
use serde_json::Value;

use crate::kube_client::ClientFactory;
use crate::reconcile::apply::ObjectRef;
use crate::reconcile::error::describe;
use crate::reconcile::verify::Verdict;
use crate::validate::cel::{CompiledCheck, ExprOutcome};

const MAX_POLL: Duration = Duration::from_secs(2);
const FIRST_POLL: Duration = Duration::from_millis(25);
const DELETION_POLL: Duration = Duration::from_secs(5);
use super::verify::HEARTBEAT;

/// Polls the CEL checks against the applied objects they match until every
/// matched object is current, any is failed, or `deadline` passes. Each poll
/// re-reads the objects from the target cluster with `client` (the stage
/// identity); an unreadable object is not ready. At the deadline the wait is
/// *progressing* if the last poll saw an object whose `inProgress` held, else
/// failed. `deleting` is polled every 5 s and aborts the wait when true.
pub async fn wait_exprs<F, Fut>(
    clients: &ClientFactory,
    client: &kube::Client,
    applied: &[ObjectRef],
    checks: &[CompiledCheck],
    deadline: tokio::time::Instant,
    mut deleting: F,
) -> Verdict
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let targets: Vec<(&ObjectRef, Arc<Vec<CompiledCheck>>)> = applied
        .iter()
        .filter_map(|r| {
            let matched: Vec<CompiledCheck> = checks
                .iter()
                .filter(|c| c.matches(&r.api_version, &r.kind))
                .cloned()
                .collect();
            (!matched.is_empty()).then(|| (r, Arc::new(matched)))
        })
        .collect();
    if targets.is_empty() {
        return Verdict::Ready;
    }
    let start = tokio::time::Instant::now();
    let mut delay = FIRST_POLL;
    let mut next_deletion_check = start + DELETION_POLL;
    let mut next_heartbeat = start + HEARTBEAT;
    loop {
        let mut pending: Vec<String> = Vec::new();
        let mut in_flight = false;
        for (r, matched) in &targets {
            let subject = r.subject();
            let obj = match read(clients, client, r).await {
                Ok(Some(obj)) => obj,
                Ok(None) => {
                    pending.push(format!("{subject}: not found"));
                    continue;
                }
                Err(e) => {
                    pending.push(format!("{subject}: {e}"));
                    continue;
                }
            };
            for outcome in evaluate_all(Arc::clone(matched), obj).await {
                match outcome {
                    ExprOutcome::Current => {}
                    ExprOutcome::InFlight(why) => {
                        in_flight = true;
                        pending.push(format!("{subject}: {why}"));
                    }
                    ExprOutcome::NotReady(why) => pending.push(format!("{subject}: {why}")),
                    ExprOutcome::Failed(why) => {
                        return Verdict::Failed(format!("readyCheck failed for {subject}: {why}"));
                    }
                }
            }
        }
        if pending.is_empty() {
            return Verdict::Ready;
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            let msg = format!(
                "timed out after {} waiting for readyChecks: {}",
                crate::duration::GoDuration::from_std(now.saturating_duration_since(start)),
                pending.join("; ")
            );
            return if in_flight {
                Verdict::Progressing(msg)
            } else {
                Verdict::Failed(msg)
            };
        }
        if now >= next_deletion_check {
            if deleting().await {
                return Verdict::Deleted;
            }
            next_deletion_check = now + DELETION_POLL;
        }
        if now >= next_heartbeat {
            tracing::info!(waiting = %pending.join("; "), "still waiting for readyChecks expressions");
            next_heartbeat = now + HEARTBEAT;
        }
        let sleep = delay.min(deadline.saturating_duration_since(now));
        tokio::time::sleep(sleep).await;
        delay = (delay * 2).min(MAX_POLL);
    }
}

/// Evaluates the checks for one object off the async workers (evaluation is
/// CPU-bound, up to the cost limit).
async fn evaluate_all(checks: Arc<Vec<CompiledCheck>>, obj: Value) -> Vec<ExprOutcome> {
    tokio::task::spawn_blocking(move || crate::validate::cel::evaluate_all(&checks, &obj))
        .await
        .unwrap_or_else(|e| vec![ExprOutcome::NotReady(format!("evaluation aborted: {e}"))])
}

/// GETs the live object, `None` when it does not exist.
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
    match api.get_opt(&r.name).await {
        Ok(o) => Ok(o.map(|o| serde_json::to_value(o).unwrap_or(Value::Null))),
        Err(e) => Err(describe(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::CustomHealthCheck;
    use crate::validate::cel::compile;
    use serde_json::json;

    async fn sim() -> (kube_sim::KubeSim, ClientFactory, kube::Client) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let sim = kube_sim::KubeSim::start(kube_sim::Options::default()).expect("kube-sim starts");
        let kubeconfig =
            kube::config::Kubeconfig::from_yaml(&sim.kubeconfig()).expect("kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .expect("config");
        let clients = ClientFactory::new(config).expect("clients");
        let client = clients.controller();
        (sim, clients, client)
    }

    fn config_map(name: &str, labels: Value) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "default", "labels": labels},
        })
    }

    fn cm_check(current: &str, in_progress: Option<&str>, failed: Option<&str>) -> CompiledCheck {
        compile(&CustomHealthCheck {
            api_version: "v1".to_string(),
            kind: "ConfigMap".to_string(),
            current: Some(current.to_string()),
            in_progress: in_progress.map(str::to_string),
            failed: failed.map(str::to_string),
        })
        .expect("compiles")
    }

    fn cm_ref(name: &str) -> ObjectRef {
        ObjectRef {
            api_version: "v1".to_string(),
            kind: "ConfigMap".to_string(),
            namespace: "default".to_string(),
            name: name.to_string(),
        }
    }

    #[tokio::test]
    async fn wait_exprs_verdicts() {
        let (sim, clients, client) = sim().await;
        sim.load(config_map("ready", json!({"state": "ready"})))
            .unwrap();
        sim.load(config_map("rolling", json!({"state": "rolling"})))
            .unwrap();
        sim.load(config_map("broken", json!({"state": "broken"})))
            .unwrap();
        let never = || async { false };
        let soon = || tokio::time::Instant::now() + Duration::from_millis(200);
        let later = || tokio::time::Instant::now() + Duration::from_secs(60);
        let c = cm_check(
            "metadata.labels.state == 'ready'",
            Some("metadata.labels.state == 'rolling'"),
            Some("metadata.labels.state == 'broken'"),
        );
        let checks = std::slice::from_ref(&c);

        let v = wait_exprs(
            &clients,
            &client,
            &[cm_ref("ready")],
            checks,
            later(),
            never,
        )
        .await;
        assert_eq!(v, Verdict::Ready);

        // fails fast, long before the deadline
        let v = wait_exprs(
            &clients,
            &client,
            &[cm_ref("ready"), cm_ref("broken")],
            checks,
            later(),
            never,
        )
        .await;
        assert!(
            matches!(&v, Verdict::Failed(m) if m.starts_with("readyCheck failed for ConfigMap/default/broken")),
            "{v:?}"
        );

        // timeout while in flight: progressing
        let v = wait_exprs(
            &clients,
            &client,
            &[cm_ref("ready"), cm_ref("rolling")],
            checks,
            soon(),
            never,
        )
        .await;
        assert!(
            matches!(&v, Verdict::Progressing(m) if m.contains("ConfigMap/default/rolling")),
            "{v:?}"
        );

        // timeout with nothing in flight (or unreadable): failed
        let plain = cm_check("metadata.labels.state == 'ready'", None, None);
        let v = wait_exprs(
            &clients,
            &client,
            &[cm_ref("rolling"), cm_ref("gone")],
            std::slice::from_ref(&plain),
            soon(),
            never,
        )
        .await;
        assert!(
            matches!(&v, Verdict::Failed(m) if m.contains("ConfigMap/default/rolling") && m.contains("ConfigMap/default/gone: not found")),
            "{v:?}"
        );

        // checks matching no applied object are no-ops
        let other = compile(&CustomHealthCheck {
            api_version: "apps/v1".to_string(),
            kind: "Deployment".to_string(),
            current: Some("false".to_string()),
            in_progress: None,
            failed: None,
        })
        .unwrap();
        let v = wait_exprs(
            &clients,
            &client,
            &[cm_ref("rolling")],
            &[other],
            soon(),
            never,
        )
        .await;
        assert_eq!(v, Verdict::Ready);
        let v = wait_exprs(&clients, &client, &[], &[plain], soon(), never).await;
        assert_eq!(v, Verdict::Ready);
    }
}
