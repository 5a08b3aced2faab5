//! Process faults (issue 19): the controller binary is killed with SIGKILL in
//! the middle of an apply, a prune and a teardown, then started again; with
//! two replicas the leader is killed mid-prune and the follower finishes.
//! After each, the same invariants hold: the StageSet is Ready at its last
//! revision (or gone, after a teardown), every object of that revision is
//! present with exactly its content, nothing of the older revision is left,
//! and bystanders — objects that look like ours — are untouched.
//!
//! kube-sim holds every request 5 ms and the first controller writes one
//! object at a time (`--apply-concurrency=1`), so each phase takes seconds
//! and the kill reliably lands inside it; each test asserts that it did.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;
use stageset_controller::api::StageSet;
use support::process::Controller;
use support::*;

const NS: &str = "default";
const OTHER: &str = "elsewhere";
const LONG: Duration = Duration::from_secs(120);
const SLOW: &[&str] = &["--apply-concurrency=1"];

fn slow() -> Vec<String> {
    SLOW.iter().map(|s| s.to_string()).collect()
}

/// `n` ConfigMaps named `<prefix>-<i>` whose `value` is `value`.
fn config_maps(prefix: &str, n: usize, value: &str) -> String {
    (0..n)
        .map(|i| configmap(NS, &format!("{prefix}-{i}"), value) + "---\n")
        .collect()
}

async fn harness() -> (Harness, tempfile::TempDir, PathBuf) {
    rustls::crypto::ring::default_provider()
        .install_default()
        .ok();
    let h = Harness::start_with(HarnessOptions {
        start_controller: false,
        latency: Duration::from_millis(5),
        ..Default::default()
    })
    .await;
    h.namespace(OTHER).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    h.sim.write_kubeconfig(&kubeconfig).unwrap();
    (h, dir, kubeconfig)
}

/// Objects that look like the StageSet's and must never be touched: the
/// same names in another namespace carrying owner labels of that
/// namespace, an object here labelled for another StageSet, and one with
/// only the stage label. Returns their resourceVersions by key.
async fn bystanders(h: &Harness, prefix: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let make = |ns: &str, name: &str, labels: serde_json::Value| {
        serde_json::from_value::<ConfigMap>(json!({
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "data": {"value": "bystander"}
        }))
        .unwrap()
    };
    let cases = [
        (
            OTHER,
            format!("{prefix}-0"),
            json!({"stages.metio.wtf/name": "shop", "stages.metio.wtf/namespace": OTHER, "stages.metio.wtf/stage": "app"}),
        ),
        (
            OTHER,
            format!("{prefix}-1"),
            json!({"stages.metio.wtf/name": "shop", "stages.metio.wtf/namespace": NS}),
        ),
        (
            NS,
            format!("{prefix}-lookalike"),
            json!({"stages.metio.wtf/name": "shop-2", "stages.metio.wtf/namespace": NS, "stages.metio.wtf/stage": "app"}),
        ),
        (
            NS,
            format!("{prefix}-unlabelled"),
            json!({"stages.metio.wtf/stage": "app"}),
        ),
    ];
    for (ns, name, labels) in cases {
        let api: Api<ConfigMap> = Api::namespaced(h.client.clone(), ns);
        let cm = api
            .create(&PostParams::default(), &make(ns, &name, labels))
            .await
            .unwrap();
        out.insert(
            format!("{ns}/{name}"),
            cm.metadata.resource_version.unwrap(),
        );
    }
    out
}

async fn assert_bystanders_untouched(h: &Harness, before: &BTreeMap<String, String>) {
    for (key, version) in before {
        let (ns, name) = key.split_once('/').unwrap();
        let api: Api<ConfigMap> = Api::namespaced(h.client.clone(), ns);
        let cm = api
            .get_opt(name)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("bystander {key} was deleted"));
        assert_eq!(
            cm.metadata.resource_version.as_deref(),
            Some(version.as_str()),
            "bystander {key} was modified"
        );
    }
}

/// The StageSet's ConfigMaps in NS whose name starts with `<prefix>-` and
/// ends in a number, by name, with their `value`.
async fn ours(h: &Harness, prefix: &str) -> BTreeMap<String, String> {
    let api: Api<ConfigMap> = Api::namespaced(h.client.clone(), NS);
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|cm| {
            let name = cm.metadata.name.clone().unwrap();
            let n = name.strip_prefix(&format!("{prefix}-"))?;
            n.parse::<usize>().ok()?;
            let value = cm.data.as_ref()?.get("value")?.clone();
            Some((name, value))
        })
        .collect()
}

/// Exactly `n` objects `<prefix>-0..n` with `value`, each with the owner
/// labels of the StageSet `shop`.
async fn assert_exactly(h: &Harness, prefix: &str, n: usize, value: &str) {
    let found = ours(h, prefix).await;
    let expected: BTreeMap<String, String> = (0..n)
        .map(|i| (format!("{prefix}-{i}"), value.to_string()))
        .collect();
    assert_eq!(found, expected, "objects {prefix}-*");
    let api: Api<ConfigMap> = Api::namespaced(h.client.clone(), NS);
    for name in expected.keys() {
        let labels = api
            .get(name)
            .await
            .unwrap()
            .metadata
            .labels
            .unwrap_or_default();
        assert_eq!(
            labels.get("stages.metio.wtf/name").map(String::as_str),
            Some("shop"),
            "{name}"
        );
        assert_eq!(
            labels.get("stages.metio.wtf/namespace").map(String::as_str),
            Some(NS),
            "{name}"
        );
    }
}

/// Waits until `count(prefix)` satisfies `pred`, polling the API server.
async fn wait_count(h: &Harness, prefix: &str, what: &str, pred: impl Fn(usize) -> bool) -> usize {
    let deadline = Instant::now() + LONG;
    loop {
        let n = ours(h, prefix).await.len();
        if pred(n) {
            return n;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting until {what} (at {n})"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn publish(h: &Harness, revision: &str, yaml: &str) {
    let art = h.artifact(&format!("{revision}.tar.gz"), &[("cms.yaml", yaml)]);
    h.external_artifact(NS, "src", &art, revision).await;
}

async fn shop(h: &Harness) {
    h.stageset(
        NS,
        "shop",
        json!({"stages": [{"name": "app", "sourceRef": {"name": "src"}}]}),
    )
    .await;
}

/// Ready (Succeeded) with `revision` applied.
async fn wait_applied(h: &Harness, revision: &str) -> StageSet {
    h.wait_stageset_within(NS, "shop", &format!("Ready at {revision}"), LONG, |ss| {
        let applied = ss
            .status
            .as_ref()
            .and_then(|s| s.last_applied_revisions.get(&format!("{NS}/src")))
            .map(String::as_str);
        applied == Some(revision)
            && ready(ss).is_some_and(|(s, r, _)| s == "True" && r == "Succeeded")
    })
    .await
}

const N: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_apply_the_restarted_controller_completes_the_revision() {
    let (h, _dir, kubeconfig) = harness().await;
    let before = bystanders(&h, "app").await;
    publish(&h, "r1", &config_maps("app", N, "r1")).await;
    shop(&h).await;
    let first = Controller::spawn(&kubeconfig, "first", NS, &slow());
    let at = wait_count(&h, "app", "the apply is under way", |n| n >= 30).await;
    first.kill();
    let left = ours(&h, "app").await.len();
    assert!(
        left < N,
        "the kill landed after the apply ({left} of {N}, {at} at the kill)"
    );
    println!("killed during apply with {left} of {N} objects written");

    let _second = Controller::spawn(&kubeconfig, "second", NS, &[]);
    wait_applied(&h, "r1").await;
    assert_exactly(&h, "app", N, "r1").await;
    assert_bystanders_untouched(&h, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_prune_the_restarted_controller_finishes_the_prune() {
    let (h, _dir, kubeconfig) = harness().await;
    let before = bystanders(&h, "old").await;
    publish(&h, "r1", &config_maps("old", N, "r1")).await;
    shop(&h).await;
    let mut first = Controller::spawn(&kubeconfig, "first", NS, &slow());
    wait_applied(&h, "r1").await;
    first.wait_line("reconcile finished", LONG).await;
    // r2 moves every object to new names: the old ones are pruned.
    publish(&h, "r2", &config_maps("new", N, "r2")).await;
    wait_count(&h, "old", "the prune is under way", |n| n <= N - 30).await;
    first.kill();
    let left = ours(&h, "old").await.len();
    assert!(left > 0, "the kill landed after the prune");
    println!("killed during prune with {left} of {N} old objects left");

    let _second = Controller::spawn(&kubeconfig, "second", NS, &[]);
    wait_applied(&h, "r2").await;
    wait_count(&h, "old", "every old object is pruned", |n| n == 0).await;
    assert_exactly(&h, "new", N, "r2").await;
    assert_bystanders_untouched(&h, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_teardown_the_restarted_controller_finishes_it() {
    let (h, _dir, kubeconfig) = harness().await;
    let before = bystanders(&h, "app").await;
    publish(&h, "r1", &config_maps("app", N, "r1")).await;
    shop(&h).await;
    let first = Controller::spawn(&kubeconfig, "first", NS, &slow());
    wait_applied(&h, "r1").await;
    let api: Api<StageSet> = Api::namespaced(h.client.clone(), NS);
    api.delete("shop", &DeleteParams::background())
        .await
        .unwrap();
    wait_count(&h, "app", "the teardown is under way", |n| n <= N - 30).await;
    first.kill();
    let left = ours(&h, "app").await.len();
    assert!(left > 0, "the kill landed after the teardown");
    println!("killed during teardown with {left} of {N} objects left");

    let _second = Controller::spawn(&kubeconfig, "second", NS, &[]);
    let deadline = Instant::now() + LONG;
    while api.get_opt("shop").await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "the StageSet was never released");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        ours(&h, "app").await.len(),
        0,
        "objects left after teardown"
    );
    assert_bystanders_untouched(&h, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_killed_mid_prune_the_follower_finishes_without_double_deletes() {
    let (h, _dir, kubeconfig) = harness().await;
    let before = bystanders(&h, "old").await;
    publish(&h, "r1", &config_maps("old", N, "r1")).await;
    shop(&h).await;
    let mut args = slow();
    args.push("--leader-elect".into());
    let a = Controller::spawn(&kubeconfig, "replica-a", NS, &args);
    let b = Controller::spawn(&kubeconfig, "replica-b", NS, &args);
    wait_applied(&h, "r1").await;
    let leases: Api<Lease> = Api::namespaced(h.client.clone(), NS);
    let holder = leases
        .get(stageset_controller::api::keys::LEASE_NAME)
        .await
        .unwrap()
        .spec
        .and_then(|s| s.holder_identity)
        .expect("a leader holds the lease");
    let (leader, follower) = if holder.starts_with("replica-a_") {
        (a, b)
    } else {
        assert!(holder.starts_with("replica-b_"), "{holder}");
        (b, a)
    };
    h.sim.clear_request_log();
    publish(&h, "r2", &config_maps("new", N, "r2")).await;
    wait_count(&h, "old", "the prune is under way", |n| n <= N - 30).await;
    leader.kill();
    let left = ours(&h, "old").await.len();
    assert!(left > 0, "the kill landed after the prune");
    println!("leader killed during prune with {left} of {N} old objects left");

    // The follower takes the lease once it expires and finishes.
    wait_applied(&h, "r2").await;
    wait_count(&h, "old", "every old object is pruned", |n| n == 0).await;
    assert_exactly(&h, "new", N, "r2").await;
    assert_bystanders_untouched(&h, &before).await;
    // Each old object was deleted exactly once: the follower reads an
    // object before deleting it and skips what is already gone. (A delete
    // the killed leader had in flight may have reached the API server
    // without being carried out; only deletes that succeeded count.)
    let mut deleted: BTreeMap<String, usize> = BTreeMap::new();
    for r in h.sim.request_log() {
        if r.verb == "delete" && r.resource == "configmaps" && (200..300).contains(&r.code) {
            *deleted.entry(r.name.clone()).or_default() += 1;
        }
    }
    let expected: BTreeMap<String, usize> = (0..N).map(|i| (format!("old-{i}"), 1)).collect();
    assert_eq!(deleted, expected, "successful deletes per object");
    drop(follower);
}
