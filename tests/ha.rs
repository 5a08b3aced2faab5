//! Leader election and HA (operations.md §4): two controller processes against
//! one kube-sim elect one leader through the Lease; only the leader
//! reconciles; when it is killed mid-rollout the other takes over once the
//! lease expires and finishes the rollout, while its gate answers throughout.
//! The LeaseActor's loss paths run in-process with short timings. Also the
//! start-up prerequisite diagnostics every replica runs (operations.md §3.3.1).

#![recursion_limit = "256"]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, PostParams};
use kube_sim::{KubeSim, Options};
use serde_json::{Value, json};
use stageset_controller::actors::lease::{LEASE_NAME, LeaderElection, Timings};
use stageset_controller::leader::Leadership;
use support::*;

const NS: &str = "default";
const DEADLINE: Duration = Duration::from_secs(60);

/// One controller replica (the binary as a child process, with leader
/// election and its listeners on free ports) and the JSON lines it logged.
struct Replica {
    pod: String,
    process: support::process::Controller,
}

impl Replica {
    fn spawn(kubeconfig: &std::path::Path, pod: &str) -> Replica {
        Replica::spawn_with(kubeconfig, pod, &[])
    }

    /// A replica with extra flags.
    fn spawn_with(kubeconfig: &std::path::Path, pod: &str, extra: &[String]) -> Replica {
        // Bind addresses must name a port (operations.md §1.5 rule 1): take
        // free ones from the OS; the `listening` line confirms what was bound.
        let mut args = vec![
            "--leader-elect".to_string(),
            format!("--gate-bind-address=127.0.0.1:{}", free_port()),
            format!("--metrics-bind-address=127.0.0.1:{}", free_port()),
            format!("--health-probe-bind-address=127.0.0.1:{}", free_port()),
        ];
        args.extend(extra.iter().cloned());
        Replica {
            pod: pod.to_string(),
            process: support::process::Controller::spawn(kubeconfig, pod, NS, &args),
        }
    }

    fn find(&self, msg: &str) -> Option<Value> {
        self.process.find(msg)
    }

    async fn wait_line(&mut self, msg: &str) -> Value {
        self.process.wait_line(msg, DEADLINE).await
    }

    /// Lines with this message about the StageSet `shop`.
    fn about_shop(&self, msg: &str) -> Vec<Value> {
        self.logs()
            .into_iter()
            .filter(|l| l["msg"] == msg && l["stageset"] == format!("{NS}/shop"))
            .collect()
    }

    fn logs(&self) -> Vec<Value> {
        self.process.logs()
    }

    /// The identity from the "attempting to acquire" line.
    async fn identity(&mut self) -> String {
        let l = self
            .wait_line("attempting to acquire the leader lease")
            .await;
        l["identity"].as_str().unwrap().to_string()
    }

    async fn gate(&mut self) -> SocketAddr {
        let l = self.wait_line("listening").await;
        l["gate"].as_str().unwrap().parse().expect("gate address")
    }

    async fn webhook(&mut self) -> SocketAddr {
        let l = self.wait_line("listening").await;
        l["webhook"]
            .as_str()
            .unwrap()
            .parse()
            .expect("webhook address")
    }

    /// Lines with this message about the StageSet `name`.
    fn about(&self, msg: &str, name: &str) -> usize {
        self.logs()
            .iter()
            .filter(|l| l["msg"] == msg && l["stageset"] == format!("{NS}/{name}"))
            .count()
    }

    /// Whether any line names the StageSet `name`.
    fn mentions(&self, name: &str) -> bool {
        self.logs()
            .iter()
            .any(|l| l["stageset"] == format!("{NS}/{name}"))
    }

    /// Whether `leader_election_master_status` says this replica leads.
    async fn reports_leading(&mut self, http: &reqwest::Client) -> bool {
        let l = self.wait_line("listening").await;
        let addr: SocketAddr = l["metrics"].as_str().unwrap().parse().unwrap();
        let text = http
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.contains(&format!(
            "leader_election_master_status{{name=\"{LEASE_NAME}\"}} 1"
        ))
    }
}

/// Asks a gate about a stage; any HTTP answer is fine, a connection error is not.
async fn gate(http: &reqwest::Client, addr: SocketAddr, stage: &str) -> (u16, String) {
    let resp = http
        .get(format!("http://{addr}/gate/{NS}/shop/{stage}"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap_or_else(|e| panic!("the gate at {addr} does not answer: {e}"));
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap();
    assert!(matches!(status, 200 | 403), "{status} {body}");
    (status, body)
}

async fn lease(client: &kube::Client) -> Option<Lease> {
    Api::<Lease>::namespaced(client.clone(), NS)
        .get_opt(LEASE_NAME)
        .await
        .unwrap()
}

fn holder(lease: &Option<Lease>) -> Option<String> {
    lease
        .as_ref()?
        .spec
        .as_ref()?
        .holder_identity
        .clone()
        .filter(|h| !h.is_empty())
}

async fn events(client: &kube::Client) -> Vec<Event> {
    Api::<Event>::namespaced(client.clone(), NS)
        .list(
            &kube::api::ListParams::default()
                .fields("involvedObject.kind=StageSet,involvedObject.name=shop"),
        )
        .await
        .unwrap()
        .items
}

fn reporter(e: &Event) -> String {
    e.reporting_instance.clone().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_reconciles_and_a_follower_takes_over_after_the_lease_expires() {
    rustls::crypto::ring::default_provider()
        .install_default()
        .ok();
    let h = Harness::start_with(HarnessOptions {
        start_controller: false,
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    h.sim.write_kubeconfig(&kubeconfig).unwrap();
    let one = h.artifact("one.tar.gz", &[("d.yaml", &deployment(NS, "one"))]);
    let two = h.artifact("two.tar.gz", &[("d.yaml", &deployment(NS, "two"))]);
    h.external_artifact(NS, "one", &one, "v1@sha1:111").await;
    h.external_artifact(NS, "two", &two, "v1@sha1:222").await;

    let mut a = Replica::spawn(&kubeconfig, "replica-a");
    let mut b = Replica::spawn(&kubeconfig, "replica-b");
    let (id_a, id_b) = (a.identity().await, b.identity().await);
    let (gate_a, gate_b) = (a.gate().await, b.gate().await);
    for (id, pod) in [(&id_a, "replica-a"), (&id_b, "replica-b")] {
        let uuid = id
            .strip_prefix(&format!("{pod}_"))
            .unwrap_or_else(|| panic!("{id} is not <hostname>_<uuid>"));
        assert_eq!(uuid.len(), 36, "{id}");
    }
    assert_ne!(id_a[10..], id_b[10..], "distinct uuids");

    // Exactly one holds the Lease, and it says so.
    let deadline = Instant::now() + DEADLINE;
    let first = loop {
        if let Some(holder) = holder(&lease(&h.client).await) {
            break holder;
        }
        assert!(Instant::now() < deadline, "nobody acquired the lease");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (mut leader, mut follower, follower_id, follower_gate) = if first == id_a {
        (a, b, id_b, gate_b)
    } else {
        assert_eq!(first, id_b, "the holder is one of the two replicas");
        (b, a, id_a, gate_a)
    };
    let acquired = leader.wait_line("leader lease acquired").await;
    assert_eq!(acquired["identity"], first.as_str());
    assert_eq!(acquired["lease"], format!("{NS}/{LEASE_NAME}"));
    let spec = lease(&h.client).await.unwrap().spec.unwrap();
    assert_eq!(spec.lease_duration_seconds, Some(15));
    assert_eq!(spec.lease_transitions, Some(0));
    assert!(spec.acquire_time.is_some() && spec.renew_time.is_some());

    // A two-stage rollout; stage "one" waits for its Deployment.
    h.stageset(
        NS,
        "shop",
        json!({"stages": [
            {"name": "one", "sourceRef": {"name": "one"}},
            {"name": "two", "sourceRef": {"name": "two"}}
        ]}),
    )
    .await;
    h.wait_stageset(NS, "shop", "stage one verifying", |ss| {
        stage_phase(ss, "one").as_deref() == Some("Verifying")
    })
    .await;
    h.wait_exists("apps/v1", "Deployment", Some(NS), "one")
        .await;
    assert!(follower.find("leader lease acquired").is_none());
    // Both gates answer from their caches; the follower's cache follows the
    // leader's status writes.
    let http = reqwest::Client::new();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (status, body) = gate(&http, follower_gate, "one").await;
        if status == 403 && body.contains("phase=Verifying") {
            break;
        }
        assert!(Instant::now() < deadline, "follower gate: {status} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let leader_gate = leader.gate().await;
    assert_eq!(gate(&http, leader_gate, "one").await.0, 403);
    assert!(leader.reports_leading(&http).await);
    assert!(!follower.reports_leading(&http).await);
    let before: Vec<Event> = events(&h.client).await;
    // Only the leader reconciles; the follower's StageSet actor defers.
    assert!(!leader.about_shop("reconcile finished").is_empty());
    assert!(follower.about_shop("reconcile queued").is_empty());
    assert!(follower.about_shop("reconcile finished").is_empty());
    assert!(
        !follower
            .about_shop("not the leader; reconcile deferred")
            .is_empty()
    );
    for e in &before {
        assert_eq!(reporter(e), leader.pod, "only the leader reconciles: {e:?}");
    }

    // Kill the leader (SIGKILL: no shutdown, the Lease is left to expire)
    // and let stage one become healthy: nothing may move until the survivor
    // holds the lease.
    leader.process.kill_in_place();
    let killed = Instant::now();
    h.set_ready("apps/v1", "Deployment", NS, "one");
    let deadline = Instant::now() + DEADLINE;
    loop {
        let current = holder(&lease(&h.client).await);
        if current.as_deref() == Some(follower_id.as_str()) {
            break;
        }
        assert_eq!(current.as_deref(), Some(first.as_str()));
        let ss = h.get_stageset(NS, "shop").await;
        assert_eq!(
            stage_phase(&ss, "one").as_deref(),
            Some("Verifying"),
            "no progress without a leader"
        );
        assert!(
            h.get_opt("apps/v1", "Deployment", Some(NS), "two")
                .await
                .is_none(),
            "stage two must not start without a leader"
        );
        let (status, body) = gate(&http, follower_gate, "one").await;
        assert_eq!(status, 403, "{body}");
        assert!(Instant::now() < deadline, "the follower never took over");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let took = killed.elapsed();
    eprintln!("took over {took:?} after the kill");
    // The last renewal happened at most a retry period before the kill and the
    // follower waits a full lease duration after seeing it.
    assert!(
        took >= Duration::from_secs(10),
        "took over after {took:?}, before the lease expired"
    );
    let acquired = follower.wait_line("leader lease acquired").await;
    assert_eq!(acquired["identity"], follower_id.as_str());
    let spec = lease(&h.client).await.unwrap().spec.unwrap();
    assert_eq!(spec.lease_transitions, Some(1));
    assert!(follower.reports_leading(&http).await);
    let woken = follower.about_shop("reconcile queued");
    assert_eq!(woken[0]["trigger"], "leadership acquired", "{woken:?}");

    // The new leader finishes the rollout; its gate kept answering.
    h.wait_exists("apps/v1", "Deployment", Some(NS), "two")
        .await;
    assert_eq!(gate(&http, follower_gate, "two").await.0, 403);
    h.set_ready("apps/v1", "Deployment", NS, "two");
    h.wait_ready_reason(NS, "shop", "Succeeded", "").await;
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (status, body) = gate(&http, follower_gate, "two").await;
        if status == 200 {
            assert!(body.contains("is Ready"), "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "gate: {status} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after: Vec<Event> = events(&h.client).await;
    let new: Vec<&Event> = after
        .iter()
        .filter(|e| !before.iter().any(|b| b.metadata.name == e.metadata.name))
        .collect();
    eprintln!(
        "events: {} before the kill, {} after",
        before.len(),
        new.len()
    );
    assert!(!new.is_empty(), "the new leader records events");
    for e in new {
        assert_eq!(reporter(e), follower.pod, "{e:?}");
    }
    assert!(follower.process.try_wait().is_none(), "still running");
}

/// The binary exits with code 1, at once, when another holder takes the Lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_exits_1_when_the_lease_is_lost() {
    let h = Harness::start_with(HarnessOptions {
        start_controller: false,
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    h.sim.write_kubeconfig(&kubeconfig).unwrap();
    let mut a = Replica::spawn(&kubeconfig, "replica-a");
    a.wait_line("leader lease acquired").await;
    let api = Api::<Lease>::namespaced(h.client.clone(), NS);
    let mut l = api.get(LEASE_NAME).await.unwrap();
    l.spec.as_mut().unwrap().holder_identity = Some("intruder_1".into());
    api.replace(LEASE_NAME, &PostParams::default(), &l)
        .await
        .unwrap();
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = a.process.try_wait() {
            break status;
        }
        assert!(Instant::now() < deadline, "still running");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(1));
    // The reader thread may lag behind the exit.
    let lost = a.wait_line("leader election lost").await;
    assert_eq!(lost["level"], "error");
    assert!(
        lost["error"].as_str().unwrap().contains("intruder_1"),
        "{lost}"
    );
}

// --- the LeaseActor in-process ----------------------------------------------

const FAST: Timings = Timings {
    lease_duration: Duration::from_secs(3),
    renew_deadline: Duration::from_secs(2),
    retry_period: Duration::from_millis(200),
};

struct Candidate {
    leadership: Arc<Leadership>,
    lost: Arc<AtomicBool>,
}

fn candidate(client: kube::Client, identity: &str) -> Candidate {
    let leadership = Leadership::candidate();
    let lost = Arc::new(AtomicBool::new(false));
    let flag = lost.clone();
    LeaderElection {
        namespace: NS.into(),
        name: stageset_controller::api::keys::LEASE_NAME.into(),
        identity: identity.into(),
        timings: FAST,
        on_lost: Arc::new(move || flag.store(true, Ordering::SeqCst)),
    }
    .start(client, leadership.clone(), None);
    Candidate { leadership, lost }
}

async fn until(what: &str, limit: Duration, f: impl Fn() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

async fn sim_client(sim: &KubeSim) -> kube::Client {
    kube::Client::try_from(kube_config(sim).await).unwrap()
}

/// A leader that finds another holder in the Lease stops leading at once.
#[actix_rt::test]
async fn a_leader_seeing_another_holder_gives_up() {
    let sim = KubeSim::start(Options::default()).expect("kube-sim");
    let client = sim_client(&sim).await;
    let a = candidate(client.clone(), "a_1");
    until("a leads", DEADLINE, || a.leadership.is_leader()).await;
    let b = candidate(client.clone(), "b_2");
    // The follower keeps following while the leader renews.
    tokio::time::sleep(FAST.lease_duration * 2).await;
    assert!(a.leadership.is_leader() && !b.leadership.is_leader());
    assert!(!a.lost.load(Ordering::SeqCst));
    let spec = lease(&client).await.unwrap().spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("a_1"));
    assert_eq!(spec.lease_duration_seconds, Some(3));

    // Someone else writes the Lease.
    let api = Api::<Lease>::namespaced(client.clone(), NS);
    let mut l = api.get(LEASE_NAME).await.unwrap();
    l.spec.as_mut().unwrap().holder_identity = Some("intruder_3".into());
    l.spec.as_mut().unwrap().lease_duration_seconds = Some(3600);
    api.replace(LEASE_NAME, &PostParams::default(), &l)
        .await
        .unwrap();
    until("a gives up", Duration::from_secs(5), || {
        a.lost.load(Ordering::SeqCst)
    })
    .await;
    assert!(!a.leadership.is_leader());
    assert!(!b.leadership.is_leader() && !b.lost.load(Ordering::SeqCst));
}

/// Without a successful renewal within the renew deadline the leader gives up,
/// before another replica could consider the lease expired.
#[actix_rt::test]
async fn a_leader_that_cannot_renew_gives_up_at_the_renew_deadline() {
    let sim = KubeSim::start(Options::default()).expect("kube-sim");
    let client = sim_client(&sim).await;
    let a = candidate(client, "a_1");
    until("a leads", DEADLINE, || a.leadership.is_leader()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let dropped = Instant::now();
    drop(sim);
    until("a gives up", Duration::from_secs(10), || {
        a.lost.load(Ordering::SeqCst)
    })
    .await;
    let took = dropped.elapsed();
    assert!(!a.leadership.is_leader());
    let earliest = FAST.renew_deadline - FAST.retry_period - Duration::from_millis(300);
    assert!(
        took >= earliest && took <= FAST.renew_deadline + Duration::from_millis(500),
        "gave up {took:?} after the API went away"
    );
}

/// Sharding (DECISIONS 22): two instances with different
/// `--watch-label-selector`s against one API server each reconcile only
/// their own StageSets and elect a leader on their own Lease; a StageSet
/// matching neither is left alone; the gate and the webhook of both answer
/// for every StageSet; relabelling moves a StageSet to the other shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shards_split_the_stagesets_and_both_answer_for_all() {
    rustls::crypto::ring::default_provider()
        .install_default()
        .ok();
    let h = Harness::start_with(HarnessOptions {
        start_controller: false,
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    h.sim.write_kubeconfig(&kubeconfig).unwrap();
    let certs = kube_sim::tls::generate(&[]).expect("certificates");
    std::fs::write(dir.path().join("tls.crt"), &certs.cert_pem).unwrap();
    std::fs::write(dir.path().join("tls.key"), &certs.key_pem).unwrap();

    const KEY: &str = "sharding.fluxcd.io/key";
    let mut spawned = Vec::new();
    for (pod, shard) in [("shard-a", "shard1"), ("shard-b", "shard2")] {
        spawned.push(Replica::spawn_with(
            &kubeconfig,
            pod,
            &[
                format!("--watch-label-selector={KEY}={shard}"),
                "--enable-webhook".into(),
                format!("--webhook-cert-dir={}", dir.path().display()),
                format!("--webhook-port={}", free_port()),
            ],
        ));
    }
    let mut b = spawned.pop().unwrap();
    let mut a = spawned.pop().unwrap();

    // Each shard competes for its own Lease, named after its selector.
    let lease_of = |shard: &str| {
        let selector =
            stageset_controller::api::selector::LabelFilter::parse(&format!("{KEY}={shard}"))
                .unwrap();
        stageset_controller::api::keys::lease_name(&selector)
    };
    let (lease_a, lease_b) = (lease_of("shard1"), lease_of("shard2"));
    assert_ne!(lease_a, lease_b);
    assert!(lease_a.starts_with(&format!("{LEASE_NAME}-")), "{lease_a}");
    let (id_a, id_b) = (a.identity().await, b.identity().await);
    let leases: Api<Lease> = Api::namespaced(h.client.clone(), NS);
    for (name, id) in [(&lease_a, &id_a), (&lease_b, &id_b)] {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let lease = leases.get_opt(name).await.unwrap();
            if holder(&lease).as_deref() == Some(id.as_str()) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{id} never held {name}: {lease:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(
        leases.get_opt(LEASE_NAME).await.unwrap().is_none(),
        "no shard takes the unsharded Lease"
    );

    // Three StageSets: one per shard and one that matches neither.
    for (name, shard) in [
        ("shop", Some("shard1")),
        ("blog", Some("shard2")),
        ("orphan", None),
    ] {
        let art = h.artifact(
            &format!("{name}.tar.gz"),
            &[("cm.yaml", &configmap(NS, name, "1"))],
        );
        h.external_artifact(NS, name, &art, "v1@sha1:111").await;
        let labels = match shard {
            Some(s) => json!({KEY: s}),
            None => json!({}),
        };
        let ss = json!({
            "apiVersion": "stages.metio.wtf/v1",
            "kind": "StageSet",
            "metadata": {"name": name, "namespace": NS, "labels": labels},
            "spec": {"stages": [{"name": "app", "sourceRef": {"name": name}}]},
        });
        let api: Api<stageset_controller::api::StageSet> = Api::namespaced(h.client.clone(), NS);
        api.create(&PostParams::default(), &serde_json::from_value(ss).unwrap())
            .await
            .unwrap();
    }
    for name in ["shop", "blog"] {
        h.wait_stageset(NS, name, "Ready", |ss| {
            ready(ss).is_some_and(|(s, _, _)| s == "True")
        })
        .await;
    }
    assert!(a.about("reconcile queued", "shop") > 0, "{:#?}", a.logs());
    assert!(b.about("reconcile queued", "blog") > 0, "{:#?}", b.logs());
    assert!(!a.mentions("blog"), "shard1 touched blog: {:#?}", a.logs());
    assert!(!b.mentions("shop"), "shard2 touched shop: {:#?}", b.logs());
    for r in [&a, &b] {
        assert!(!r.mentions("orphan"), "{:#?}", r.logs());
    }
    let orphan = h.get_stageset(NS, "orphan").await;
    assert!(
        orphan.status.is_none(),
        "nobody reconciles the orphan: {:?}",
        orphan.status
    );
    assert!(
        orphan.metadata.finalizers.is_none(),
        "{:?}",
        orphan.metadata
    );

    // Both gates answer for every StageSet, from their caches.
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let (gate_a, gate_b) = (a.gate().await, b.gate().await);
    for name in ["shop", "blog"] {
        for addr in [gate_a, gate_b] {
            let url = format!("http://{addr}/gate/{NS}/{name}/app");
            let r = http.get(&url).send().await.unwrap();
            assert_eq!(
                r.status().as_u16(),
                200,
                "{url}: {}",
                r.text().await.unwrap()
            );
        }
    }

    // Both webhooks validate every StageSet, whatever its shard.
    kube_sim::tls::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    for cert in CertificateDer::pem_slice_iter(certs.ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let https = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .no_proxy()
        .build()
        .unwrap();
    let review = |shard: &str, stages: Value| {
        json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": format!("review-{shard}"),
                "kind": {"group": "stages.metio.wtf", "version": "v1", "kind": "StageSet"},
                "operation": "CREATE",
                "object": {"apiVersion": "stages.metio.wtf/v1", "kind": "StageSet",
                           "metadata": {"name": "x", "namespace": NS, "labels": {KEY: shard}},
                           "spec": {"stages": stages}}
            }
        })
    };
    let good = json!([{"name": "app", "sourceRef": {"name": "app"}}]);
    let bad = json!([{"name": "app", "sourceRef": {"name": "app"}},
                     {"name": "app", "sourceRef": {"name": "app"}}]);
    let (hook_a, hook_b) = (a.webhook().await, b.webhook().await);
    for shard in ["shard1", "shard2", "shard3"] {
        let mut answers = Vec::new();
        for addr in [hook_a, hook_b] {
            for (stages, allowed) in [(&good, true), (&bad, false)] {
                let url = format!(
                    "https://127.0.0.1:{}/validate-stages-metio-wtf-v1-stageset",
                    addr.port()
                );
                let v: Value = https
                    .post(&url)
                    .json(&review(shard, stages.clone()))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                assert_eq!(v["response"]["allowed"], allowed, "{shard} at {addr}: {v}");
                answers.push(v["response"].clone());
            }
        }
        assert_eq!(
            answers[0..2],
            answers[2..4],
            "both shards answer alike for {shard}"
        );
    }

    // Relabelling moves a StageSet: shard2 stops its actor, shard1 starts one.
    let api: Api<stageset_controller::api::StageSet> = Api::namespaced(h.client.clone(), NS);
    api.patch(
        "blog",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(json!({"metadata": {"labels": {KEY: "shard1"}}})),
    )
    .await
    .unwrap();
    a.wait_line("the StageSet's labels now match --watch-label-selector; reconciling it")
        .await;
    b.wait_line(
        "the StageSet's labels no longer match --watch-label-selector; another shard reconciles it now",
    )
    .await;
    let deadline = Instant::now() + DEADLINE;
    while a.about("reconcile queued", "blog") == 0 {
        assert!(
            Instant::now() < deadline,
            "shard1 never reconciled blog: {:#?}",
            a.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// --- start-up prerequisite diagnostics (operations.md §3.3.1) ----------------

const OPERATOR: &str = "system:serviceaccount:ops:stageset-controller";
const NARROW: &str = "system:serviceaccount:ops:namespaced-controller";
const NOT_GRANTED: &str = "— grant list+watch in the operator ClusterRole";

/// A client acting as the kube-sim user `user` (its own context).
async fn user_client(sim: &KubeSim, user: &str) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&sim.kubeconfig()).unwrap();
    let options = kube::config::KubeConfigOptions {
        context: Some(user.to_string()),
        ..Default::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

/// Creates (or replaces) an RBAC object from JSON.
async fn rbac(admin: &kube::Client, obj: Value) {
    let kind = obj["kind"].as_str().unwrap();
    let gvk = kube::api::GroupVersionKind::gvk("rbac.authorization.k8s.io", "v1", kind);
    let resource = kube::api::ApiResource::from_gvk(&gvk);
    let namespace = obj["metadata"]["namespace"].as_str();
    let api: Api<kube::api::DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(admin.clone(), ns, &resource),
        None => Api::all_with(admin.clone(), &resource),
    };
    let name = obj["metadata"]["name"].as_str().unwrap().to_string();
    let params = kube::api::PatchParams::apply("prerequisites-test").force();
    api.patch(&name, &params, &kube::api::Patch::Apply(obj))
        .await
        .unwrap();
}

fn cluster_role(name: &str, rules: Value) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": name}, "rules": rules,
    })
}

fn binding(kind: &str, namespace: Option<&str>, role: &str, user: &str) -> Value {
    let mut metadata = json!({"name": format!("{role}-{}", user.rsplit(':').next().unwrap())});
    if let Some(ns) = namespace {
        metadata["namespace"] = json!(ns);
    }
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": metadata,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    })
}

fn unmet(list: &[stageset_controller::reconcile::prerequisites::Unmet]) -> Vec<(String, String)> {
    list.iter()
        .map(|u| (u.resource.clone(), u.reason.clone()))
        .collect()
}

fn expect(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(r, why)| (format!("{r}.stages.metio.wtf"), why.to_string()))
        .collect()
}

/// Each pass names every watched kind that is not served or that the
/// controller may not list and watch (cluster-wide, or in each watched
/// namespace), with the spec's reasons; the binary logs them at start-up; the
/// loop ends, with its recovery line, once everything holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prerequisites_name_what_is_missing_and_why() {
    use stageset_controller::reconcile::prerequisites::{check, watch_with};
    let user = |name: &str, token: &str| kube_sim::UserSpec {
        name: name.into(),
        token: token.into(),
        groups: vec![],
    };
    let sim = KubeSim::start(Options {
        users: vec![
            user(OPERATOR, "operator-token"),
            user(NARROW, "narrow-token"),
        ],
        ..Options::default()
    })
    .unwrap();
    let admin = sim_client(&sim).await;
    let operator = user_client(&sim, OPERATOR).await;

    // No CRDs at all.
    let all = [
        "stagesets",
        "stageinventories",
        "stageledgers",
        "fleetrollouts",
    ];
    let missing: Vec<(&str, &str)> = all.iter().map(|p| (*p, "CRD is not installed")).collect();
    assert_eq!(unmet(&check(&operator, &[]).await), expect(&missing));

    // Served, but no RBAC: list is the first verb refused.
    for c in stageset_controller::api::crd::all() {
        sim.load(serde_json::to_value(&c).unwrap()).unwrap();
    }
    let refused = format!("operator ServiceAccount may not list it {NOT_GRANTED}");
    let no_rbac: Vec<(&str, &str)> = all.iter().map(|p| (*p, refused.as_str())).collect();
    assert_eq!(unmet(&check(&operator, &[]).await), expect(&no_rbac));

    // Everything but watching FleetRollouts.
    let group = "stages.metio.wtf";
    rbac(
        &admin,
        cluster_role(
            "partial",
            json!([
                {"apiGroups": [group], "resources": ["stagesets", "stageinventories", "stageledgers"], "verbs": ["list", "watch"]},
                {"apiGroups": [group], "resources": ["fleetrollouts"], "verbs": ["list"]},
            ]),
        ),
    )
    .await;
    rbac(
        &admin,
        binding("ClusterRoleBinding", None, "partial", OPERATOR),
    )
    .await;
    let no_watch = format!("operator ServiceAccount may not watch it {NOT_GRANTED}");
    assert_eq!(
        unmet(&check(&operator, &[]).await),
        expect(&[("fleetrollouts", no_watch.as_str())])
    );

    // A namespaced grant: enough for namespace `a`, not for `b` nor for the
    // whole cluster; FleetRollouts are cluster-scoped either way.
    for ns in ["a", "b"] {
        let namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
        Api::<k8s_openapi::api::core::v1::Namespace>::all(admin.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap();
    }
    rbac(
        &admin,
        cluster_role(
            "namespaced-kinds",
            json!([{"apiGroups": [group], "resources": ["stagesets", "stageinventories", "stageledgers"], "verbs": ["list", "watch"]}]),
        ),
    )
    .await;
    rbac(
        &admin,
        cluster_role(
            "fleets",
            json!([{"apiGroups": [group], "resources": ["fleetrollouts"], "verbs": ["list", "watch"]}]),
        ),
    )
    .await;
    rbac(
        &admin,
        binding("RoleBinding", Some("a"), "namespaced-kinds", NARROW),
    )
    .await;
    rbac(
        &admin,
        binding("ClusterRoleBinding", None, "fleets", NARROW),
    )
    .await;
    let narrow = user_client(&sim, NARROW).await;
    let only_a = ["a".to_string()];
    assert_eq!(unmet(&check(&narrow, &only_a).await), vec![]);
    let in_b = format!("operator ServiceAccount may not list it in namespace b {NOT_GRANTED}");
    let namespaced: Vec<(&str, &str)> = all[..3].iter().map(|p| (*p, in_b.as_str())).collect();
    let a_and_b = ["a".to_string(), "b".to_string()];
    assert_eq!(unmet(&check(&narrow, &a_and_b).await), expect(&namespaced));
    let cluster: Vec<(&str, &str)> = all[..3].iter().map(|p| (*p, refused.as_str())).collect();
    assert_eq!(unmet(&check(&narrow, &[]).await), expect(&cluster));

    // The binary says so at start-up, with the resource and the reason.
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let own_context = sim.kubeconfig().replace(
        "current-context: kube-sim",
        &format!(
            "current-context: {}",
            serde_json::to_string(OPERATOR).unwrap()
        ),
    );
    std::fs::write(&kubeconfig, own_context).unwrap();
    let mut binary = support::process::Controller::spawn(&kubeconfig, "prerequisites", NS, &[]);
    let line = binary
        .wait_line(
            "waiting for a watched resource before reconciling",
            DEADLINE,
        )
        .await;
    assert_eq!(line["level"], "warn", "{line}");
    assert_eq!(line["resource"], "fleetrollouts.stages.metio.wtf", "{line}");
    assert_eq!(line["reason"], no_watch.as_str(), "{line}");
    let warnings = binary
        .logs()
        .into_iter()
        .filter(|l| l["msg"] == "waiting for a watched resource before reconciling")
        .count();
    assert_eq!(warnings, 1, "one line per unmet prerequisite");
    binary.kill();

    // The loop repeats until a pass holds, then ends.
    let (passes, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let pending = tokio::spawn(watch_with(
        operator.clone(),
        Vec::new(),
        Duration::from_millis(100),
        move |found| {
            let _ = passes.send(unmet(found));
        },
    ));
    let first = tokio::time::timeout(DEADLINE, seen.recv()).await.unwrap();
    assert_eq!(first, Some(expect(&[("fleetrollouts", no_watch.as_str())])));
    rbac(
        &admin,
        binding("ClusterRoleBinding", None, "fleets", OPERATOR),
    )
    .await;
    let warned = tokio::time::timeout(DEADLINE, pending)
        .await
        .expect("the checker ends once everything holds")
        .unwrap();
    assert!(warned >= 1, "it warned before the grant ({warned} passes)");
    let mut last = None;
    while let Ok(found) = seen.try_recv() {
        last = Some(found);
    }
    assert_eq!(
        last,
        Some(vec![]),
        "the last pass found everything in place"
    );
    assert_eq!(unmet(&check(&operator, &[]).await), vec![]);
}

/// With `KUBECONFIG` unset and no in-cluster ServiceAccount, the binary finds
/// its cluster in `~/.kube/config` (operations.md OPS-09's last resort) and
/// reconciles there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_kubeconfig_or_a_cluster_the_binary_reads_home_kube_config() {
    let h = Harness::start_with(HarnessOptions {
        start_controller: false,
        ..Default::default()
    })
    .await;
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir(home.path().join(".kube")).unwrap();
    h.sim
        .write_kubeconfig(&home.path().join(".kube").join("config"))
        .unwrap();
    let art = h.artifact("home.tar.gz", &[("cm.yaml", &configmap(NS, "home", "x"))]);
    h.external_artifact(NS, "home", &art, "v1").await;
    h.stageset(
        NS,
        "home",
        json!({"stages": [{"name": "app", "sourceRef": {"name": "home"}}]}),
    )
    .await;
    let mut binary = support::process::Controller::spawn_with_env(
        std::path::Path::new(""),
        "home",
        NS,
        &[],
        &[("KUBECONFIG", ""), ("HOME", home.path().to_str().unwrap())],
    );
    binary.wait_line("starting manager", DEADLINE).await;
    h.wait_ready_reason(NS, "home", "Succeeded", "").await;
    binary.kill();
}
