//! HTTP surface benchmark: the stage gate under `wrk` against a cache of
//! 1,000 StageSets, and admission webhook latency under concurrent load.
//!
//! Run: `cargo bench --bench servers` (needs `wrk` on PATH for the gate part:
//! `apt-get install wrk`). Figures go to docs/performance.md.

use std::process::Command;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use std::time::{Duration, Instant};

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube_sim::{KubeSim, Options};
use serde_json::json;
use stageset_controller::config::{Invocation, parse_from_ignoring_unsupported};
use stageset_controller::http::ServerOptions;

const STAGESETS: usize = 1000;
const NS: &str = "bench";

fn stageset(i: usize) -> serde_json::Value {
    json!({
        "apiVersion": "stages.metio.wtf/v1", "kind": "StageSet",
        "metadata": {"name": format!("ss-{i}"), "namespace": NS},
        "spec": {"suspend": true, "stages": [{"name": "app", "sourceRef": {"name": "src"}}]}
    })
}

fn status(i: usize) -> serde_json::Value {
    json!({"status": {"stages": [{"name": "app", "phase": "Ready", "appliedRevision": format!("v{i}@sha1:abc")}]}})
}

fn config(flags: &[&str]) -> stageset_controller::config::Config {
    let mut argv = vec!["stageset-controller", "--log-level=error"];
    argv.extend_from_slice(flags);
    let env = |_: &str| None;
    match parse_from_ignoring_unsupported(argv, &env).expect("flags") {
        Invocation::Run(c) => *c,
        _ => unreachable!(),
    }
}

fn main() {
    rustls::crypto::ring::default_provider()
        .install_default()
        .ok();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sim = KubeSim::start(Options::default()).expect("kube-sim");
    for c in stageset_controller::api::crd::all() {
        sim.load(serde_json::to_value(&c).unwrap()).unwrap();
    }
    sim.load(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}))
        .unwrap();
    for i in 0..STAGESETS {
        sim.load(stageset(i)).unwrap();
    }
    let kube_config = rt.block_on(async {
        let kc = Kubeconfig::from_yaml(&sim.kubeconfig()).unwrap();
        kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .unwrap()
    });
    // Status goes through the status subresource, as the controller writes it.
    rt.block_on(async {
        let client = kube::Client::try_from(kube_config.clone()).unwrap();
        let api: kube::Api<stageset_controller::api::StageSet> = kube::Api::namespaced(client, NS);
        for i in 0..STAGESETS {
            api.patch_status(
                &format!("ss-{i}"),
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(status(i)),
            )
            .await
            .unwrap();
        }
    });
    let certs = kube_sim::tls::generate(&[]).expect("certificates");
    let slot = stageset_controller::tls::CertSlot::new();
    slot.set_pem(certs.cert_pem.as_bytes(), certs.key_pem.as_bytes())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tls.crt"), &certs.cert_pem).unwrap();
    std::fs::write(dir.path().join("tls.key"), &certs.key_pem).unwrap();
    let servers = ServerOptions {
        gate: Some("127.0.0.1:0".into()),
        webhook: Some(stageset_controller::http::WebhookOptions {
            addr: "127.0.0.1:0".into(),
            certs: slot,
        }),
        workers: 2,
        ..Default::default()
    };
    let cert_dir = format!("--webhook-cert-dir={}", dir.path().display());
    let cfg = config(&["--metrics-bind-address=0", &cert_dir]);
    let controller =
        stageset_controller::controller::start_with(&cfg, kube_config, servers).expect("starts");
    let gate = controller.bound().gate.expect("gate bound");
    // Wait until the cache holds every StageSet.
    rt.block_on(async {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        let last = format!("http://{gate}/gate/{NS}/ss-{}/app", STAGESETS - 1);
        while http
            .get(&last)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
            != 200
        {
            assert!(Instant::now() < deadline, "cache never filled");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    println!("stageset-controller HTTP benchmark (loopback, 2 gate workers)");
    println!();
    gate_bench(gate);
    let webhook = controller.bound().webhook.expect("webhook bound");
    rt.block_on(webhook_bench(webhook, &certs.ca_pem));
    drop(controller);
    drop(Arc::new(sim));
}

fn gate_bench(gate: std::net::SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("gate.lua");
    std::fs::write(
        &script,
        format!(
            "request = function()\n  local i = math.random(0, {})\n  return wrk.format(\"GET\", \"/gate/{NS}/ss-\" .. i .. \"/app\")\nend\n",
            STAGESETS - 1
        ),
    )
    .unwrap();
    let out = Command::new("wrk")
        .args(["-t2", "-c64", "-d10s", "--latency", "-s"])
        .arg(&script)
        .arg(format!("http://{gate}"))
        .output();
    match out {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            println!("gate: wrk -t2 -c64 -d10s over {STAGESETS} StageSets (random stage paths)");
            println!("{text}");
        }
        Ok(out) => println!("wrk failed: {}", String::from_utf8_lossy(&out.stderr)),
        Err(e) => println!("gate: skipped, wrk is not installed ({e}); apt-get install wrk"),
    }
}

/// AdmissionReview for a valid StageSet CREATE, as the API server sends it.
fn review(uid: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": format!("00000000-0000-0000-0000-{uid:012}"),
            "kind": {"group": "stages.metio.wtf", "version": "v1", "kind": "StageSet"},
            "resource": {"group": "stages.metio.wtf", "version": "v1", "resource": "stagesets"},
            "name": "web", "namespace": NS, "operation": "CREATE",
            "userInfo": {"username": "bench"},
            "object": {
                "apiVersion": "stages.metio.wtf/v1", "kind": "StageSet",
                "metadata": {"name": "web", "namespace": NS},
                "spec": {
                    "interval": "10m", "timeout": "5m",
                    "stages": [
                        {"name": "platform", "sourceRef": {"kind": "OCIRepository", "name": "platform"}, "path": "./platform"},
                        {"name": "app", "sourceRef": {"kind": "GitRepository", "name": "app"}, "path": "./deploy",
                         "readyChecks": {"exprs": [{"apiVersion": "apps/v1", "kind": "Deployment",
                            "current": "status.conditions.filter(c, c.type == 'Available').all(c, c.status == 'True')"}]}}
                    ]
                }
            },
            "dryRun": false
        }
    }))
    .unwrap()
}

async fn webhook_bench(addr: std::net::SocketAddr, ca_pem: &str) {
    const CONCURRENCY: usize = 16;
    const PER_TASK: usize = 500;
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(
            rustls::ClientConfig::builder()
                .with_root_certificates({
                    let mut roots = rustls::RootCertStore::empty();
                    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
                        roots.add(c.unwrap()).unwrap();
                    }
                    roots
                })
                .with_no_client_auth(),
        )
        .build()
        .unwrap();
    let url = format!(
        "https://localhost:{}{}",
        addr.port(),
        stageset_controller::http::webhook::STAGESET_PATH
    );
    // Warm-up (connections, TLS sessions).
    for i in 0..50 {
        let r = client.post(&url).body(review(i)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["response"]["allowed"], true, "{v}");
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..CONCURRENCY {
        let client = client.clone();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(PER_TASK);
            for i in 0..PER_TASK {
                let body = review(t * PER_TASK + i);
                let t0 = Instant::now();
                let r = client.post(&url).body(body).send().await.unwrap();
                let ok = r.status().as_u16() == 200;
                let _ = r.bytes().await.unwrap();
                latencies.push(t0.elapsed());
                assert!(ok);
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let wall = started.elapsed();
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    println!(
        "webhook: {} admissions of a 2-stage StageSet (with a CEL expression), {CONCURRENCY} concurrent HTTPS keep-alive clients",
        all.len()
    );
    println!();
    println!("| p50 (ms) | p99 (ms) | max (ms) | admissions/s |");
    println!("|---:|---:|---:|---:|");
    println!(
        "| {:.2} | {:.2} | {:.2} | {:.0} |",
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        all.last().unwrap().as_secs_f64() * 1e3,
        all.len() as f64 / wall.as_secs_f64()
    );
}
