//! Rollback-store benchmark: putting and getting one 5 MiB rendering (a
//! stage of 2,000 ConfigMaps, JSON as the pipeline stores it) on the file
//! backend (a local directory, fsync on) and on S3 (a local moto server,
//! SSE-S3, static keys).
//!
//! Run: `cargo bench --bench store` (needs `moto_server` on PATH for the S3
//! part: `python3 -m pip install 'moto[server]==5.2.6'`; without it that part
//! is skipped). Figures go to docs/performance.md.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use stageset_controller::actors::rollback_store::aws::{Credentials, StaticKeys};
use stageset_controller::actors::rollback_store::backend::{Backend, S3Settings};
use stageset_controller::config::{Secret, SseMode};
use stageset_controller::reconcile::rollback::SnapshotKey;

const RUNS: usize = 20;

fn rendering() -> Bytes {
    let objects: Vec<serde_json::Value> = (0..2000)
        .map(|i| {
            serde_json::json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": format!("cm-{i}"), "namespace": "bench",
                             "labels": {"stages.metio.wtf/stage": "app"}},
                "data": {"payload": "x".repeat(2500)}
            })
        })
        .collect();
    Bytes::from(serde_json::to_vec(&objects).unwrap())
}

fn key(n: usize) -> SnapshotKey {
    SnapshotKey {
        namespace: "bench".into(),
        stageset: "app".into(),
        stage: "web".into(),
        digest: format!("sha256:{n:064x}"),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn report(name: &str, mut samples: Vec<Duration>, bytes: usize) {
    samples.sort();
    let median = percentile(&samples, 0.5);
    println!(
        "{name:<12} median {:>7.1} ms  p95 {:>7.1} ms  ({:.0} MiB/s at the median)",
        median.as_secs_f64() * 1000.0,
        percentile(&samples, 0.95).as_secs_f64() * 1000.0,
        bytes as f64 / (1024.0 * 1024.0) / median.as_secs_f64()
    );
}

async fn measure(label: &str, backend: &Backend, body: &Bytes) {
    let mut puts = Vec::new();
    let mut gets = Vec::new();
    for n in 0..RUNS {
        let started = Instant::now();
        backend.put(&key(n), body.clone()).await.expect("put");
        puts.push(started.elapsed());
        let started = Instant::now();
        let got = backend.get(&key(n)).await.expect("get").expect("stored");
        gets.push(started.elapsed());
        assert_eq!(got.len(), body.len());
    }
    report(&format!("{label} put"), puts, body.len());
    report(&format!("{label} get"), gets, body.len());
}

fn main() {
    rustls::crypto::ring::default_provider()
        .install_default()
        .ok();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let body = rendering();
    println!(
        "rendering: {:.1} MiB, {RUNS} runs each",
        body.len() as f64 / (1024.0 * 1024.0)
    );
    let dir = tempfile::tempdir().unwrap();
    let files = Backend::files(dir.path()).unwrap();
    rt.block_on(measure("pvc", &files, &body));

    let Ok(mut child) = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
    else {
        println!("s3: skipped (moto_server is not on PATH)");
        return;
    };
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("moto_server prints its address")
            .unwrap();
        if let Some(rest) = line.split("Running on http://").nth(1) {
            break rest.trim().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    rt.block_on(async {
        reqwest::Client::new()
            .put(format!("http://{addr}/bench"))
            .header("Authorization", "AWS4-HMAC-SHA256 Credential=AKIDBENCH/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00")
            .send()
            .await
            .unwrap();
        let s3 = Backend::s3(&S3Settings {
            endpoint: addr.clone(),
            bucket: "bench".into(),
            prefix: String::new(),
            region: None,
            use_ssl: false,
            sse: SseMode::S3,
            sse_kms_key: None,
            credentials: Credentials::Static {
                keys: StaticKeys {
                    key_id: "AKIDBENCH".into(),
                    secret: Secret::new("bench"),
                    token: None,
                },
                origin: "the bench".into(),
            },
            extra_roots_pem: Vec::new(),
        })
        .unwrap();
        measure("s3 (moto)", &s3, &body).await;
    });
    let _ = child.kill();
    let _ = child.wait();
}
