//! kube-sim throughput: server-side apply (create, change, no-op) and watch
//! fan-out, through kube-rs over HTTPS on loopback. This is the ceiling the
//! controller's own benchmarks are measured against.
//!
//! Run: `cargo bench -p kube-sim --bench sim` (figures in docs/performance.md).

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube_sim::{KubeSim, Options};
use serde_json::json;

async fn client(sim: &KubeSim) -> kube::Client {
    let kubeconfig = Kubeconfig::from_yaml(&sim.kubeconfig()).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("config");
    kube::Client::try_from(config).expect("client")
}

fn config_map(i: usize, value: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": format!("cm-{i}"), "labels": {"bench": "true"}},
        "data": {"key": value, "other": "constant"}
    })
}

/// Applies `n` ConfigMaps with `concurrency` requests in flight; returns ops/s.
async fn apply_round(api: &Api<ConfigMap>, n: usize, concurrency: usize, value: &str) -> f64 {
    let start = Instant::now();
    let pp = PatchParams::apply("bench").force();
    futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            let pp = pp.clone();
            let body = config_map(i, value);
            async move {
                api.patch(&format!("cm-{i}"), &pp, &Patch::Apply(body))
                    .await
                    .expect("apply succeeds");
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await;
    n as f64 / start.elapsed().as_secs_f64()
}

/// `watchers` watches receive `events` creations each; returns (seconds until
/// every watcher saw every event, events delivered per second).
async fn fan_out(client: &kube::Client, watchers: usize, events: usize) -> (f64, f64) {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "fanout");
    let start_rv = {
        let list = api.list(&Default::default()).await.expect("list");
        list.metadata.resource_version.unwrap_or_default()
    };
    let mut tasks = Vec::new();
    for _ in 0..watchers {
        let api = api.clone();
        let rv = start_rv.clone();
        tasks.push(tokio::spawn(async move {
            let stream = api
                .watch(&WatchParams::default().timeout(290), &rv)
                .await
                .expect("watch");
            let mut stream = stream.boxed();
            let mut seen = 0;
            while seen < events {
                match stream.try_next().await.expect("watch stream") {
                    Some(kube::core::WatchEvent::Added(_)) => seen += 1,
                    Some(_) => {}
                    None => panic!("watch ended after {seen} events"),
                }
            }
        }));
    }
    let start = Instant::now();
    let pp = PatchParams::apply("bench");
    for i in 0..events {
        api.patch(&format!("f-{i}"), &pp, &Patch::Apply(json!({
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("f-{i}")}, "data": {"i": i.to_string()}
        })))
        .await
        .expect("create");
    }
    for t in tasks {
        t.await.expect("watcher finished");
    }
    let secs = start.elapsed().as_secs_f64();
    (secs, (watchers * events) as f64 / secs)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        println!("kube-sim benchmark (kube-rs over HTTPS on loopback)\n");
        println!("| scenario | objects | concurrency | ops/s |");
        println!("|---|---:|---:|---:|");
        for concurrency in [1usize, 8] {
            let sim = KubeSim::start(Options::default()).expect("sim");
            let client = client(&sim).await;
            let api: Api<ConfigMap> = Api::namespaced(client, "default");
            let n = 1000;
            let create = apply_round(&api, n, concurrency, "v1").await;
            let change = apply_round(&api, n, concurrency, "v2").await;
            let noop = apply_round(&api, n, concurrency, "v2").await;
            println!("| SSA create | {n} | {concurrency} | {create:.0} |");
            println!("| SSA change one field | {n} | {concurrency} | {change:.0} |");
            println!("| SSA no-op re-apply | {n} | {concurrency} | {noop:.0} |");
        }
        println!("\n| watchers | events each | seconds until all delivered | deliveries/s |");
        println!("|---:|---:|---:|---:|");
        for watchers in [1usize, 10, 50] {
            let sim = KubeSim::start(Options::default()).expect("sim");
            let client = client(&sim).await;
            sim.load(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "fanout"}}),
            )
            .expect("namespace");
            let events = 500;
            let (secs, rate) = fan_out(&client, watchers, events).await;
            println!("| {watchers} | {events} | {secs:.2} | {rate:.0} |");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    });
}
