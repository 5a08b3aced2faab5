//! Delivery benchmark: the real controller binary (a separate process, so its
//! peak RSS can be read) against kube-sim, with artifacts served over HTTP.
//!
//! (a) 500 StageSets × 1 stage × 20 ConfigMaps, creation to all Ready, at
//!     `--concurrent` 1, 4 and 16;
//! (b) one stage of 10,000 objects, as plain manifests and again through a
//!     kustomization (the in-memory kustomize build); besides the
//!     controller's peak RSS, the heap the build itself needs, measured in
//!     this process (extraction and `build::render` of the same artifact,
//!     counted by a global allocator that only counts while armed);
//! (c) one steady-state reconcile of a stage of 10,000 unchanged ConfigMaps:
//!     the API requests per verb and per object (kube-sim's request counter,
//!     minus the bench's own two requests), and its wall time;
//! (d) time from an ExternalArtifact revision change to the stage
//!     re-applied (20 ConfigMaps), p50 and p99;
//! (e) Flux's public benchmark shape: 1,000 StageSets of 4 objects each (a
//!     Deployment scaled to zero, a ServiceAccount, a Service, an Ingress),
//!     creation to all Ready, at `--concurrent` 20.
//!
//! Run: `cargo bench --bench delivery` (add `-- quick` for a smaller run,
//! `-- only=a` … `only=e` for one part, `latency=MS` to make kube-sim hold
//! every request that long, as an API server with etcd behind it does,
//! `limits=default` to keep the controller's client rate limit at its
//! defaults — by default the bench raises it out of the way — and
//! `apply=N` for `--apply-concurrency`). Figures go to docs/performance.md.

use std::alloc::{GlobalAlloc, Layout, System};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube_sim::{KubeSim, Options, SimConfig};
use serde_json::json;
use stageset_controller::api::StageSet;
use stageset_controller::dev::artifacts::{ArtifactServer, tar_gz};
use stageset_controller::dev::{flux, publish_external_artifact};

/// Counts heap bytes allocated minus freed while [`ARMED`], and the peak.
struct Counting;

static ARMED: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

fn count(delta: isize) {
    if ARMED.load(Relaxed) {
        let now = LIVE.fetch_add(delta, Relaxed) + delta;
        PEAK.fetch_max(now, Relaxed);
    }
}

// SAFETY: every call is passed on to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Heap of fetching and building `tar_gz` in this process, as the controller
/// does it (extraction, then `build::render`, then the artifact dropped), in
/// MiB: (peak above the start, the rendered objects alone).
fn build_heap(tar_gz: &[u8]) -> (f64, f64) {
    let mib = |b: isize| b as f64 / (1024.0 * 1024.0);
    LIVE.store(0, Relaxed);
    PEAK.store(0, Relaxed);
    ARMED.store(true, Relaxed);
    let files = stageset_controller::reconcile::artifact::extract(tar_gz, &Default::default())
        .expect("the artifact extracts");
    let objects = stageset_controller::reconcile::build::render(&files, "./", &[], None)
        .expect("the artifact builds");
    drop(files);
    let retained = LIVE.load(Relaxed);
    ARMED.store(false, Relaxed);
    drop(objects);
    (mib(PEAK.load(Relaxed)), mib(retained))
}

/// `latency=MS`: how long kube-sim holds every request.
static LATENCY: OnceLock<Duration> = OnceLock::new();
/// Extra controller flags (`limits=`, `apply=`).
static EXTRA: OnceLock<Vec<String>> = OnceLock::new();

struct Env {
    sim: KubeSim,
    client: kube::Client,
    artifacts: ArtifactServer,
    dir: tempfile::TempDir,
}

async fn env() -> Env {
    env_with(None).await
}

/// An environment whose workloads become ready `auto_ready` after a change.
async fn env_with(auto_ready: Option<Duration>) -> Env {
    let sim = KubeSim::start(Options {
        config: SimConfig {
            latency: LATENCY.get().copied().unwrap_or_default(),
            auto_ready,
            ..SimConfig::default()
        },
        ..Options::default()
    })
    .expect("kube-sim");
    for c in stageset_controller::api::crd::all() {
        sim.load(serde_json::to_value(&c).unwrap()).unwrap();
    }
    for c in flux::source_crds() {
        sim.load(c).unwrap();
    }
    let kubeconfig = Kubeconfig::from_yaml(&sim.kubeconfig()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let artifacts = ArtifactServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    sim.write_kubeconfig(&dir.path().join("kubeconfig"))
        .unwrap();
    Env {
        sim,
        client,
        artifacts,
        dir,
    }
}

fn controller(env: &Env, concurrent: usize) -> Child {
    Command::new(env!("CARGO_BIN_EXE_stageset-controller"))
        .args([
            "--allow-loopback-artifacts",
            "--log-level=error",
            &format!("--concurrent={concurrent}"),
            "--default-interval=1h",
            "--metrics-bind-address=0",
            "--health-probe-bind-address=0",
            "--gate-bind-address=",
            "--enable-webhook=false",
        ])
        .args(EXTRA.get().into_iter().flatten())
        .env("KUBECONFIG", env.dir.path().join("kubeconfig"))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the controller binary starts")
}

/// Peak resident set size of a process, in MiB (Linux `VmHWM`).
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn stop(mut child: Child) -> f64 {
    let rss = peak_rss_mib(child.id());
    let _ = child.kill();
    let _ = child.wait();
    rss
}

fn configmaps(prefix: &str, n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {prefix}-{i}\n  namespace: default\ndata:\n  index: \"{i}\"\n  payload: \"{}\"\n---\n",
                "x".repeat(64)
            )
        })
        .collect()
}

async fn ready_count(client: &kube::Client) -> usize {
    let list = Api::<StageSet>::namespaced(client.clone(), "default")
        .list(&ListParams::default())
        .await
        .unwrap();
    list.items
        .iter()
        .filter(|ss| {
            ss.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.reason == "Succeeded")
            })
        })
        .count()
}

async fn wait_all_ready(client: &kube::Client, n: usize, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if ready_count(client).await >= n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

async fn stageset(client: &kube::Client, name: &str, source: &str) {
    let body = json!({
        "apiVersion": "stages.metio.wtf/v1", "kind": "StageSet",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"stages": [{"name": "app", "sourceRef": {"name": source}}]}
    });
    Api::<StageSet>::namespaced(client.clone(), "default")
        .patch(
            name,
            &PatchParams::apply("bench").force(),
            &Patch::Apply(&body),
        )
        .await
        .unwrap();
}

/// (a): returns (seconds, objects/s, peak RSS MiB).
async fn many_stagesets(count: usize, per_stage: usize, concurrent: usize) -> (f64, f64, f64) {
    let env = env().await;
    for i in 0..count {
        let yaml = configmaps(&format!("ss{i}"), per_stage);
        let published = env.artifacts.publish(
            &format!("ss{i}.tar.gz"),
            tar_gz(&[("cms.yaml", yaml.as_bytes())]),
        );
        publish_external_artifact(
            &env.client,
            "default",
            &format!("src{i}"),
            &published.url,
            &published.digest,
            "r1",
        )
        .await
        .unwrap();
    }
    for i in 0..count {
        stageset(&env.client, &format!("ss{i}"), &format!("src{i}")).await;
    }
    let child = controller(&env, concurrent);
    let start = Instant::now();
    let ok = wait_all_ready(&env.client, count, Duration::from_secs(1800)).await;
    let secs = start.elapsed().as_secs_f64();
    let rss = stop(child);
    assert!(ok, "not all StageSets became Ready");
    (secs, (count * per_stage) as f64 / secs, rss)
}

/// A kustomization over `cms.yaml` that touches every object (a label, a
/// name prefix), so the stage goes through the kustomize build.
const KUSTOMIZATION: &str = "resources: [cms.yaml]\nnamePrefix: k-\ncommonLabels:\n  bench: big\n";

/// (b): one stage with `objects` ConfigMaps, through a kustomization when
/// `kustomize`; returns (seconds, objects/s, RSS, build heap peak, objects'
/// heap), the last two from [`build_heap`].
async fn one_big_stage(objects: usize, kustomize: bool) -> (f64, f64, f64, f64, f64) {
    let yaml = configmaps("big", objects);
    let mut files: Vec<(&str, &[u8])> = vec![("cms.yaml", yaml.as_bytes())];
    if kustomize {
        files.push(("kustomization.yaml", KUSTOMIZATION.as_bytes()));
    }
    let artifact = tar_gz(&files);
    // Before kube-sim starts, so nothing else allocates meanwhile.
    let (heap_peak, heap_objects) = build_heap(&artifact);
    let env = env().await;
    let published = env.artifacts.publish("big.tar.gz", artifact);
    publish_external_artifact(
        &env.client,
        "default",
        "big",
        &published.url,
        &published.digest,
        "r1",
    )
    .await
    .unwrap();
    stageset(&env.client, "big", "big").await;
    let child = controller(&env, 4);
    let start = Instant::now();
    let ok = wait_all_ready(&env.client, 1, Duration::from_secs(1800)).await;
    let secs = start.elapsed().as_secs_f64();
    let rss = stop(child);
    assert!(ok, "the big stage did not become Ready");
    (secs, objects as f64 / secs, rss, heap_peak, heap_objects)
}

/// (c): seconds from a revision change to the stage re-applied, over `rounds`.
async fn revision_latency(rounds: usize) -> Vec<f64> {
    let env = env().await;
    let publish = |rev: usize| {
        let yaml = configmaps(&format!("rev{rev}"), 20);
        env.artifacts.publish(
            &format!("rev{rev}.tar.gz"),
            tar_gz(&[("cms.yaml", yaml.as_bytes())]),
        )
    };
    let p = publish(0);
    publish_external_artifact(&env.client, "default", "rev", &p.url, &p.digest, "r0")
        .await
        .unwrap();
    stageset(&env.client, "rev", "rev").await;
    let child = controller(&env, 4);
    assert!(wait_all_ready(&env.client, 1, Duration::from_secs(120)).await);
    let api = Api::<StageSet>::namespaced(env.client.clone(), "default");
    let mut out = Vec::new();
    for round in 1..=rounds {
        let p = publish(round);
        let revision = format!("r{round}");
        let start = Instant::now();
        publish_external_artifact(&env.client, "default", "rev", &p.url, &p.digest, &revision)
            .await
            .unwrap();
        loop {
            let ss = api.get("rev").await.unwrap();
            let applied = ss
                .status
                .as_ref()
                .and_then(|s| s.last_applied_revisions.get("default/rev"))
                .map(String::as_str);
            if applied == Some(revision.as_str()) {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "revision {revision} not applied"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        out.push(start.elapsed().as_secs_f64());
    }
    stop(child);
    out
}

/// (c): the requests (per verb) and seconds of one steady-state reconcile
/// of a stage of `objects` unchanged ConfigMaps, requested with
/// `reconcile.fluxcd.io/requestedAt`.
async fn steady_requests(objects: usize) -> (std::collections::BTreeMap<String, u64>, f64) {
    use futures::{StreamExt, TryStreamExt};
    let env = env().await;
    let p = env.artifacts.publish(
        "steady.tar.gz",
        tar_gz(&[("cms.yaml", configmaps("steady", objects).as_bytes())]),
    );
    publish_external_artifact(&env.client, "default", "steady", &p.url, &p.digest, "r0")
        .await
        .unwrap();
    stageset(&env.client, "steady", "steady").await;
    let child = controller(&env, 4);
    assert!(wait_all_ready(&env.client, 1, Duration::from_secs(1800)).await);
    let api = Api::<StageSet>::namespaced(env.client.clone(), "default");
    // Let the passes that follow the first one settle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let from = api
        .get("steady")
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    env.sim.reset_request_counts();
    let start = Instant::now();
    // The bench's own requests: this patch and the one watch below.
    api.patch(
        "steady",
        &PatchParams::default(),
        &Patch::Merge(
            json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": "steady-1"}}}),
        ),
    )
    .await
    .unwrap();
    let mut events = api
        .watch(&kube::api::WatchParams::default(), &from)
        .await
        .unwrap()
        .boxed();
    while let Some(event) = events.try_next().await.unwrap() {
        if let kube::api::WatchEvent::Modified(ss) = event {
            let status = ss.status.unwrap_or_default();
            let ready = status.conditions.iter().any(|c| {
                c.type_ == "Ready" && c.status == stageset_controller::api::ConditionStatus::True
            });
            if status.last_handled_reconcile_at.as_deref() == Some("steady-1") && ready {
                break;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    drop(events);
    let mut counts = env.sim.request_counts();
    for verb in ["patch", "watch"] {
        if let Some(n) = counts.get_mut(verb) {
            *n -= 1;
        }
    }
    counts.retain(|_, n| *n > 0);
    stop(child);
    (counts, secs)
}

/// The four objects of one application in Flux's benchmark shape.
fn flux_app(i: usize) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app{i}\n  namespace: default\nspec:\n  replicas: 0\n  selector:\n    matchLabels:\n      app: app{i}\n  template:\n    metadata:\n      labels:\n        app: app{i}\n    spec:\n      serviceAccountName: app{i}\n      containers:\n      - name: app\n        image: ghcr.io/stefanprodan/podinfo:6.7.0\n        ports:\n        - containerPort: 9898\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: app{i}\n  namespace: default\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: app{i}\n  namespace: default\nspec:\n  selector:\n    app: app{i}\n  ports:\n  - port: 80\n    targetPort: 9898\n---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: app{i}\n  namespace: default\nspec:\n  rules:\n  - host: app{i}.example.com\n    http:\n      paths:\n      - path: /\n        pathType: Prefix\n        backend:\n          service:\n            name: app{i}\n            port:\n              number: 80\n"
    )
}

/// (e): `count` StageSets of one application each, at `--concurrent`
/// `concurrent`; returns (seconds, peak RSS MiB).
async fn flux_shape(count: usize, concurrent: usize) -> (f64, f64) {
    let env = env_with(Some(Duration::ZERO)).await;
    for i in 0..count {
        let published = env.artifacts.publish(
            &format!("app{i}.tar.gz"),
            tar_gz(&[("app.yaml", flux_app(i).as_bytes())]),
        );
        publish_external_artifact(
            &env.client,
            "default",
            &format!("src{i}"),
            &published.url,
            &published.digest,
            "r1",
        )
        .await
        .unwrap();
    }
    for i in 0..count {
        stageset(&env.client, &format!("app{i}"), &format!("src{i}")).await;
    }
    let child = controller(&env, concurrent);
    let start = Instant::now();
    let ok = wait_all_ready(&env.client, count, Duration::from_secs(1800)).await;
    let secs = start.elapsed().as_secs_f64();
    let rss = stop(child);
    assert!(ok, "not all StageSets became Ready");
    (secs, rss)
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    if let Some(ms) = std::env::args().find_map(|a| a.strip_prefix("latency=").map(str::to_owned)) {
        let ms: u64 = ms.parse().expect("latency=MILLIS");
        LATENCY.set(Duration::from_millis(ms)).unwrap();
    }
    let mut extra = Vec::new();
    if !std::env::args().any(|a| a == "limits=default") {
        extra.push("--kube-api-qps=1000000".to_string());
        extra.push("--kube-api-burst=1000000".to_string());
    }
    if let Some(n) = std::env::args().find_map(|a| a.strip_prefix("apply=").map(str::to_owned)) {
        extra.push(format!("--apply-concurrency={n}"));
    }
    println!(
        "kube-sim latency {:?}; extra controller flags {extra:?}\n",
        LATENCY.get().copied().unwrap_or_default()
    );
    EXTRA.set(extra).unwrap();
    let only = std::env::args().find_map(|a| a.strip_prefix("only=").map(str::to_owned));
    let run = |part: &str| only.as_deref().is_none_or(|o| o == part);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (count, objects) = if quick { (100, 2_000) } else { (500, 10_000) };
        println!("stageset-controller delivery benchmark (controller binary vs kube-sim, loopback)\n");
        if run("a") {
            println!("(a) {count} StageSets x 1 stage x 20 ConfigMaps, creation to all Ready\n");
            println!("| --concurrent | seconds | objects/s | peak RSS (MiB) |");
            println!("|---:|---:|---:|---:|");
            let mut base = None;
            for concurrent in [1usize, 4, 16] {
                let (secs, rate, rss) = many_stagesets(count, 20, concurrent).await;
                base.get_or_insert(secs);
                println!(
                    "| {concurrent} | {secs:.1} | {rate:.0} | {rss:.1} |   speed-up {:.1}x",
                    base.unwrap() / secs
                );
            }
        }
        if run("b") {
            println!("\n(b) one stage of {objects} ConfigMaps\n");
            println!(
                "| objects | build | seconds | objects/s | peak RSS (MiB) | build heap peak (MiB) | objects' heap (MiB) |"
            );
            println!("|---:|---|---:|---:|---:|---:|---:|");
            for (kustomize, build) in [(false, "plain manifests"), (true, "kustomization")] {
                let (secs, rate, rss, peak, held) = one_big_stage(objects, kustomize).await;
                println!(
                    "| {objects} | {build} | {secs:.1} | {rate:.0} | {rss:.1} | {peak:.1} | {held:.1} |"
                );
            }
        }
        if run("c") {
            println!("\n(c) one steady-state reconcile of a stage of {objects} unchanged ConfigMaps\n");
            let (counts, secs) = steady_requests(objects).await;
            let total: u64 = counts.values().sum();
            println!("| objects | requests | per object | by verb | seconds |\n|---:|---:|---:|---|---:|");
            println!(
                "| {objects} | {total} | {:.3} | {counts:?} | {secs:.3} |",
                total as f64 / objects as f64
            );
            let (counts, secs) = steady_requests(20).await;
            let total: u64 = counts.values().sum();
            println!("| 20 | {total} | {:.3} | {counts:?} | {secs:.3} |", total as f64 / 20.0);
        }
        if run("d") {
            let rounds = if quick { 20 } else { 100 };
            println!("\n(d) ExternalArtifact revision change to stage re-applied (20 ConfigMaps)\n");
            let mut lat = revision_latency(rounds).await;
            lat.sort_by(f64::total_cmp);
            let pct = |p: f64| lat[((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1] * 1000.0;
            println!(
                "| rounds | min (ms) | p50 (ms) | p99 (ms) | max (ms) |\n|---:|---:|---:|---:|---:|\n| {} | {:.0} | {:.0} | {:.0} | {:.0} |",
                lat.len(),
                lat[0] * 1000.0,
                pct(0.5),
                pct(0.99),
                lat[lat.len() - 1] * 1000.0
            );
        }
        if run("e") {
            let count = if quick { 200 } else { 1000 };
            println!("\n(e) Flux's benchmark shape: {count} StageSets x (Deployment at 0 replicas, ServiceAccount, Service, Ingress), --concurrent 20\n");
            let (secs, rss) = flux_shape(count, 20).await;
            println!("| StageSets | objects | seconds | peak RSS (MiB) |\n|---:|---:|---:|---:|\n| {count} | {} | {secs:.1} | {rss:.1} |", count * 4);
        }
    });
}
