//! Chaos (issue 19): 30 StageSets × 3 stages roll through 5 revisions —
//! objects added, changed, moved between stages and removed — while kube-sim
//! fails a share of the controller's requests (429 with Retry-After, 500,
//! 503, connections reset mid-response) and cuts its watches. Bystanders
//! that look like ours sit beside them. At the end the invariants are
//! checked and printed as figures:
//!
//! - every StageSet Ready at its last revision;
//! - every object of the last revision present with exactly its content;
//! - nothing of an older revision left;
//! - no bystander modified or deleted;
//! - no tenant write made under the controller's own identity (kube-sim's
//!   request log: every write in a tenant namespace is impersonated).
//!
//! The faults are drawn from a fixed seed; the test's own client is exempt.
//! `CHAOS_LOG=<file>` writes the controller's debug log there.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube_sim::{KubeSim, Options, SimConfig, UserSpec};
use serde_json::{Value, json};
use stageset_controller::api::StageSet;
use stageset_controller::dev::artifacts::{ArtifactServer, tar_gz};
use stageset_controller::dev::{flux, publish_external_artifact};
use support::*;

const TENANTS: [&str; 3] = ["tenant-a", "tenant-b", "tenant-c"];
const PER_TENANT: usize = 10;
const STAGES: [&str; 3] = ["db", "app", "edge"];
const REVISIONS: usize = 5;
const CONTROLLER: &str = "stageset-controller";
const LIMIT: Duration = Duration::from_secs(240);

/// What stage `stage` of every StageSet renders at revision `r` (1-based):
/// name → value.
///
/// - `keep-<stage>` in every revision, its value changing each time;
/// - `only-<r>-<stage>`: added at revision r, gone at r+1;
/// - `roamer`: moves to the next stage every revision;
/// - `late-<stage>` appears from revision 3 on;
/// - `early-<stage>` exists up to revision 2.
fn rendered(stage: usize, r: usize) -> BTreeMap<String, String> {
    let s = STAGES[stage];
    let mut out = BTreeMap::new();
    out.insert(format!("keep-{s}"), format!("r{r}"));
    out.insert(format!("only-{r}-{s}"), format!("r{r}"));
    if r % STAGES.len() == stage {
        out.insert("roamer".to_string(), format!("r{r} in {s}"));
    }
    if r >= 3 {
        out.insert(format!("late-{s}"), "late".to_string());
    }
    if r <= 2 {
        out.insert(format!("early-{s}"), "early".to_string());
    }
    out
}

fn name_of(ss: usize) -> String {
    format!("ss-{ss}")
}

/// The artifact of one StageSet at revision `r`: one directory per stage.
fn artifact(namespace: &str, ss: usize, r: usize) -> Vec<u8> {
    let files: Vec<(String, String)> = (0..STAGES.len())
        .map(|stage| {
            let yaml: String = rendered(stage, r)
                .iter()
                .map(|(n, v)| configmap(namespace, &format!("{}-{n}", name_of(ss)), v) + "---\n")
                .collect();
            (format!("{}/cms.yaml", STAGES[stage]), yaml)
        })
        .collect();
    let entries: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, c)| (n.as_str(), c.as_bytes()))
        .collect();
    tar_gz(&entries)
}

fn admin_config_options() -> KubeConfigOptions {
    KubeConfigOptions::default()
}

async fn config_for(sim: &KubeSim, context: Option<&str>) -> kube::Config {
    let kubeconfig = Kubeconfig::from_yaml(&sim.kubeconfig()).expect("kubeconfig");
    let options = match context {
        Some(c) => KubeConfigOptions {
            context: Some(c.to_string()),
            ..KubeConfigOptions::default()
        },
        None => admin_config_options(),
    };
    kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .expect("config")
}

async fn apply(client: &kube::Client, obj: Value) {
    let api_version = obj["apiVersion"].as_str().unwrap().to_string();
    let kind = obj["kind"].as_str().unwrap().to_string();
    let (group, version) = api_version.split_once('/').unwrap_or(("", &api_version));
    let gvk = kube::core::GroupVersionKind::gvk(group, version, &kind);
    let (ar, caps) = kube::discovery::pinned_kind(client, &gvk).await.unwrap();
    let name = obj["metadata"]["name"].as_str().unwrap().to_string();
    let api: Api<kube::api::DynamicObject> = match obj["metadata"]["namespace"].as_str() {
        Some(ns) if caps.scope == kube::discovery::Scope::Namespaced => {
            Api::namespaced_with(client.clone(), ns, &ar)
        }
        _ => Api::all_with(client.clone(), &ar),
    };
    api.patch(
        &name,
        &kube::api::PatchParams::apply("chaos-test").force(),
        &kube::api::Patch::Apply(&obj),
    )
    .await
    .unwrap_or_else(|e| panic!("applying {kind} {name}: {e}"));
}

/// A tenant: its namespace, a ServiceAccount `deployer` that may manage
/// ConfigMaps there, and nothing else.
async fn tenant(client: &kube::Client, ns: &str) {
    apply(
        client,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
    )
    .await;
    apply(
        client,
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "deployer", "namespace": ns}}),
    )
    .await;
    apply(
        client,
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
               "metadata": {"name": "deployer", "namespace": ns},
               "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["*"]}]}),
    )
    .await;
    apply(
        client,
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "deployer", "namespace": ns},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "deployer"},
               "subjects": [{"kind": "ServiceAccount", "name": "deployer", "namespace": ns}]}),
    )
    .await;
}

/// Bystanders in every tenant namespace and in `bystanders`: our names in
/// another namespace with our owner labels of that namespace, an object
/// labelled for a StageSet that does not exist, one with only a stage label.
async fn bystanders(client: &kube::Client) -> BTreeMap<String, String> {
    apply(
        client,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bystanders"}}),
    )
    .await;
    let mut out = BTreeMap::new();
    let mut make = Vec::new();
    for ns in TENANTS {
        make.push((
            "bystanders".to_string(),
            format!("{ns}-{}-keep-db", name_of(0)),
            json!({"stages.metio.wtf/name": name_of(0), "stages.metio.wtf/namespace": "bystanders", "stages.metio.wtf/stage": "db"}),
        ));
        make.push((
            ns.to_string(),
            format!("{}-keep-ghost", name_of(0)),
            json!({"stages.metio.wtf/name": "ghost", "stages.metio.wtf/namespace": ns, "stages.metio.wtf/stage": "db"}),
        ));
        make.push((
            ns.to_string(),
            "stage-labelled".to_string(),
            json!({"stages.metio.wtf/stage": "app"}),
        ));
    }
    for (ns, name, labels) in make {
        let cm: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "data": {"value": "bystander"}
        }))
        .unwrap();
        let created = Api::<ConfigMap>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &cm)
            .await
            .unwrap();
        out.insert(
            format!("{ns}/{name}"),
            created.metadata.resource_version.unwrap(),
        );
    }
    out
}

/// Every ConfigMap in `ns` owned by StageSet `ss` (its owner labels):
/// name → (stage label, value).
async fn owned(client: &kube::Client, ns: &str, ss: &str) -> BTreeMap<String, (String, String)> {
    let selector = format!("stages.metio.wtf/name={ss},stages.metio.wtf/namespace={ns}");
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&selector))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|cm| {
            let stage = cm
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("stages.metio.wtf/stage"))
                .cloned()
                .unwrap_or_default();
            let value = cm
                .data
                .as_ref()
                .and_then(|d| d.get("value"))
                .cloned()
                .unwrap_or_default();
            (cm.metadata.name.unwrap(), (stage, value))
        })
        .collect()
}

fn expected(ss: usize, r: usize) -> BTreeMap<String, (String, String)> {
    (0..STAGES.len())
        .flat_map(|stage| {
            rendered(stage, r).into_iter().map(move |(n, v)| {
                (
                    format!("{}-{n}", name_of(ss)),
                    (STAGES[stage].to_string(), v),
                )
            })
        })
        .collect()
}

fn applied_everywhere(ss: &StageSet, revision: &str) -> bool {
    let ready = ready(ss).is_some_and(|(s, r, _)| s == "True" && r == "Succeeded");
    let applied = ss.status.as_ref().is_some_and(|s| {
        s.last_applied_revisions.values().all(|v| v == revision)
            && !s.last_applied_revisions.is_empty()
    });
    ready && applied
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_stagesets_roll_through_five_revisions_under_faults() {
    rustls::crypto::ring::default_provider()
        .install_default()
        .ok();
    if let Ok(path) = std::env::var("CHAOS_LOG") {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        let file = std::fs::File::create(path).unwrap();
        let _ = tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::sync::Mutex::new(file))
                    .with_ansi(false),
            )
            .with(
                tracing_subscriber::filter::Targets::new()
                    .with_target("stageset_controller", tracing::Level::DEBUG),
            )
            .try_init();
    }
    let sim = KubeSim::start(Options {
        users: vec![UserSpec {
            name: CONTROLLER.into(),
            token: "controller-token".into(),
            groups: vec!["system:masters".into()],
        }],
        config: chaos_config(),
        ..Options::default()
    })
    .expect("kube-sim starts");
    for c in stageset_controller::api::crd::all() {
        sim.load(serde_json::to_value(&c).unwrap()).unwrap();
    }
    for c in flux::source_crds() {
        sim.load(c).unwrap();
    }
    let admin = kube::Client::try_from(config_for(&sim, None).await).unwrap();
    let artifacts = ArtifactServer::start().await.expect("artifact server");
    for ns in TENANTS {
        tenant(&admin, ns).await;
    }
    let before = bystanders(&admin).await;

    // Revision 1 and the StageSets, then the controller (as its own user).
    let publish = |r: usize| {
        let artifacts = &artifacts;
        let admin = admin.clone();
        async move {
            for ns in TENANTS {
                for ss in 0..PER_TENANT {
                    let p =
                        artifacts.publish(&format!("{ns}-{ss}-r{r}.tar.gz"), artifact(ns, ss, r));
                    publish_external_artifact(
                        &admin,
                        ns,
                        &name_of(ss),
                        &p.url,
                        &p.digest,
                        &format!("r{r}"),
                    )
                    .await
                    .unwrap();
                }
            }
        }
    };
    publish(1).await;
    for ns in TENANTS {
        for ss in 0..PER_TENANT {
            let stages: Vec<Value> = STAGES
                .iter()
                .map(|s| json!({"name": s, "sourceRef": {"name": name_of(ss)}, "path": format!("./{s}")}))
                .collect();
            apply(
                &admin,
                json!({"apiVersion": "stages.metio.wtf/v1", "kind": "StageSet",
                       "metadata": {"name": name_of(ss), "namespace": ns},
                       "spec": {"serviceAccountName": "deployer", "interval": "1h", "stages": stages}}),
            )
            .await;
        }
    }
    let argv: Vec<String> = [
        "stageset-controller",
        "--allow-loopback-artifacts",
        "--metrics-bind-address=0",
        "--health-probe-bind-address=0",
        "--gate-bind-address=",
        "--enable-webhook=false",
        "--concurrent=8",
        // The client rate limit is not under test here; at its default (50
        // requests per second) it alone would take a minute.
        "--kube-api-qps=2000",
        "--kube-api-burst=2000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let stageset_controller::config::Invocation::Run(config) =
        stageset_controller::config::parse_from_ignoring_unsupported(argv, &|_: &str| None)
            .expect("flags parse")
    else {
        panic!("not a controller run");
    };
    let controller_config = config_for(&sim, Some(CONTROLLER)).await;
    let started = Instant::now();
    let controller = stageset_controller::controller::start_with(
        &config,
        controller_config,
        stageset_controller::http::ServerOptions {
            workers: 1,
            ..Default::default()
        },
    )
    .expect("controller starts");

    // Roll: each revision is published once the previous one is applied
    // somewhere, so revisions overlap across StageSets.
    for r in 2..=REVISIONS {
        wait_some_at(&admin, &format!("r{}", r - 1)).await;
        publish(r).await;
    }
    let last = format!("r{REVISIONS}");
    let deadline = Instant::now() + LIMIT;
    loop {
        // Ready at the last revision, and (a prune may follow the Ready
        // write, e.g. after a rebuilt inventory) exactly its objects.
        let mut pending = Vec::new();
        for ns in TENANTS {
            for ss in 0..PER_TENANT {
                if owned(&admin, ns, &name_of(ss)).await != expected(ss, REVISIONS) {
                    pending.push(format!("{ns}/{}: objects differ", name_of(ss)));
                }
            }
        }
        for ns in TENANTS {
            for ss in Api::<StageSet>::namespaced(admin.clone(), ns)
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
            {
                if !applied_everywhere(&ss, &last) {
                    pending.push(format!(
                        "{ns}/{}: {:?}",
                        ss.metadata.name.clone().unwrap(),
                        ready(&ss)
                    ));
                }
            }
        }
        if pending.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            // Reported below, with the history of each wrong StageSet.
            println!("not settled after {LIMIT:?}: {pending:#?}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let settled = started.elapsed();
    let mut not_ready = Vec::new();
    for ns in TENANTS {
        for ss in Api::<StageSet>::namespaced(admin.clone(), ns)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
        {
            if !applied_everywhere(&ss, &last) {
                not_ready.push(format!(
                    "{ns}/{}: {:?}",
                    ss.metadata.name.clone().unwrap(),
                    ready(&ss)
                ));
            }
        }
    }

    // Invariants.
    let mut objects = 0usize;
    let mut wrong = Vec::new();
    for ns in TENANTS {
        for ss in 0..PER_TENANT {
            let want = expected(ss, REVISIONS);
            let got = owned(&admin, ns, &name_of(ss)).await;
            objects += got.len();
            if got != want {
                let missing: BTreeSet<_> = want.keys().filter(|k| !got.contains_key(*k)).collect();
                let extra: BTreeSet<_> = got.keys().filter(|k| !want.contains_key(*k)).collect();
                let differ: BTreeSet<_> = want
                    .iter()
                    .filter(|(k, v)| got.get(*k).is_some_and(|g| g != *v))
                    .map(|(k, _)| k)
                    .collect();
                wrong.push(format!(
                    "{ns}/{}: missing {missing:?}, left over {extra:?}, different {differ:?}",
                    name_of(ss)
                ));
            }
        }
    }
    let mut touched = Vec::new();
    for (key, version) in &before {
        let (ns, name) = key.split_once('/').unwrap();
        match Api::<ConfigMap>::namespaced(admin.clone(), ns)
            .get_opt(name)
            .await
            .unwrap()
        {
            None => touched.push(format!("{key} deleted")),
            Some(cm) if cm.metadata.resource_version.as_deref() != Some(version) => {
                touched.push(format!("{key} modified"))
            }
            Some(_) => {}
        }
    }
    let own_identity = own_identity_tenant_writes(&sim);
    let faults = injected_faults(&sim);
    println!(
        "chaos figures: {} StageSets x {} stages, {REVISIONS} revisions, settled in {:.1} s; \
         {} StageSets not Ready at the last revision; {objects} objects checked, {} StageSets wrong; {} bystanders, {} touched; \
         {} tenant writes under the controller's identity; faults injected: {faults}",
        TENANTS.len() * PER_TENANT,
        STAGES.len(),
        settled.as_secs_f64(),
        not_ready.len(),
        wrong.len(),
        before.len(),
        touched.len(),
        own_identity.len(),
    );
    if !wrong.is_empty() {
        // The history of what went wrong, from kube-sim's request log.
        let log = sim.request_log();
        for line in &wrong {
            let (key, _) = line.split_once(':').unwrap();
            let (ns, ss) = key.split_once('/').unwrap();
            println!("--- {key}");
            for r in log.iter().filter(|r| {
                r.namespace == ns
                    && (r.name.starts_with(&format!("{ss}-")) || r.name == ss)
                    && (r.is_write() || r.resource == "stageinventories")
            }) {
                println!(
                    "{} {} {}/{} {} -> {} {:?} as {}",
                    r.verb,
                    r.resource,
                    r.namespace,
                    r.name,
                    r.subresource,
                    r.code,
                    r.fault,
                    r.effective_user()
                );
            }
        }
    }
    assert!(not_ready.is_empty(), "not Ready at {last}: {not_ready:#?}");
    assert!(wrong.is_empty(), "{wrong:#?}");
    assert!(touched.is_empty(), "{touched:#?}");
    assert!(own_identity.is_empty(), "{own_identity:#?}");
    drop(controller);
}

/// Waits until at least one StageSet has applied `revision` everywhere.
async fn wait_some_at(admin: &kube::Client, revision: &str) {
    let deadline = Instant::now() + LIMIT;
    loop {
        for ns in TENANTS {
            let list = Api::<StageSet>::namespaced(admin.clone(), ns)
                .list(&ListParams::default())
                .await
                .unwrap();
            if list.items.iter().any(|ss| applied_everywhere(ss, revision)) {
                return;
            }
        }
        assert!(Instant::now() < deadline, "no StageSet reached {revision}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// 5 % of the controller's requests fail — 429 (Retry-After 1 s), 500, 503
/// and responses cut off, a quarter each — half of its watches end early
/// and half of the resumed ones are answered 410 Gone. The test's
/// own client (the admin) is exempt.
fn chaos_config() -> SimConfig {
    SimConfig {
        faults: kube_sim::faults::FaultConfig {
            seed: 19,
            rate_429: 0.0125,
            rate_500: 0.0125,
            rate_503: 0.0125,
            rate_reset: 0.0125,
            retry_after_secs: 1,
            watch_end_rate: 0.5,
            watch_end_after: Duration::from_secs(2),
            watch_resume_gone_rate: 0.5,
            verbs: Vec::new(),
            resources: Vec::new(),
            exempt_users: vec!["kube-sim-admin".into()],
        },
        ..SimConfig::default()
    }
}

/// Writes of tenant objects (ConfigMaps in a tenant namespace) the
/// controller made as itself rather than as the tenant's ServiceAccount.
fn own_identity_tenant_writes(sim: &KubeSim) -> Vec<String> {
    sim.request_log()
        .into_iter()
        .filter(|r| {
            r.is_write()
                && r.user == CONTROLLER
                && r.impersonated_user.is_none()
                && r.resource == "configmaps"
                && TENANTS.contains(&r.namespace.as_str())
        })
        .map(|r| format!("{} {}/{} ({})", r.verb, r.namespace, r.name, r.code))
        .collect()
}

/// The injected faults, summed over verbs, and how many requests the
/// controller made (as itself or impersonating a tenant).
fn injected_faults(sim: &KubeSim) -> String {
    let mut sum = kube_sim::faults::FaultCounts::default();
    for c in sim.fault_counts().values() {
        sum.too_many_requests += c.too_many_requests;
        sum.internal_error += c.internal_error;
        sum.service_unavailable += c.service_unavailable;
        sum.connection_reset += c.connection_reset;
        sum.watch_ended += c.watch_ended;
        sum.watch_gone += c.watch_gone;
    }
    let requests = sim
        .request_log()
        .iter()
        .filter(|r| r.user == CONTROLLER)
        .count();
    format!(
        "{} in {requests} controller requests (429: {}, 500: {}, 503: {}, reset: {}), \
         {} watches ended early, {} resumed watches answered 410",
        sum.too_many_requests + sum.internal_error + sum.service_unavailable + sum.connection_reset,
        sum.too_many_requests,
        sum.internal_error,
        sum.service_unavailable,
        sum.connection_reset,
        sum.watch_ended,
        sum.watch_gone,
    )
}
