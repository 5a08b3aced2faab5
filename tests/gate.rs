//! The stage gate, health and metrics listeners over real HTTP, as Flagger and
//! Argo Rollouts call the gate (issue 6).

#![recursion_limit = "256"]

mod support;

use serde_json::{Value, json};
use support::*;

const NS: &str = "default";

async fn harness() -> Harness {
    Harness::start_with(HarnessOptions {
        listeners: true,
        ..Default::default()
    })
    .await
}

fn gate_url(h: &Harness, path: &str) -> String {
    let addr = h
        .controller
        .as_ref()
        .unwrap()
        .bound()
        .gate
        .expect("gate bound");
    format!("http://{addr}{path}")
}

async fn text(resp: reqwest::Response) -> (u16, String, String) {
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, ct, resp.text().await.unwrap())
}

/// Flagger's confirm-promotion webhook: a POST with the canary payload, no
/// Accept header; anything above 202 means "not yet".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flagger_and_argo_rollouts_gate_a_stage() {
    let h = harness().await;
    let art = h.artifact(
        "a.tar.gz",
        &[
            ("d.yaml", &deployment(NS, "web")),
            ("c.yaml", &configmap(NS, "c", "x")),
        ],
    );
    h.external_artifact(NS, "a", &art, "v1@sha1:abc").await;
    h.stageset(
        NS,
        "shop",
        json!({"stages": [{"name": "app", "sourceRef": {"name": "a"}}]}),
    )
    .await;
    h.wait_stageset(NS, "shop", "verifying", |s| {
        stage_phase(s, "app").as_deref() == Some("Verifying")
    })
    .await;
    let http = reqwest::Client::new();
    let url = gate_url(&h, "/gate/default/shop/app");
    let flagger = json!({
        "name": "podinfo", "namespace": "test", "phase": "Progressing",
        "checksum": "85d557f47b", "metadata": {"type": "confirm-promotion"}
    });
    // The gate reads the StageSet cache, which follows the status shortly.
    let wait_for = |want: u16| {
        let http = http.clone();
        let url = url.clone();
        let flagger = flagger.clone();
        async move {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            loop {
                let resp = http.post(&url).json(&flagger).send().await.unwrap();
                let got = text(resp).await;
                if got.0 == want {
                    return got;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "gate never answered {want}: {got:?}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    };
    let (_, ct, body) = wait_for(403).await;
    assert_eq!(ct, "text/plain; charset=utf-8");
    assert_eq!(body, "stage \"app\" is not Ready (phase=Verifying)\n");

    // Argo Rollouts web metric: GET, Accept: application/json, always 200.
    let argo = http
        .get(&url)
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap();
    let (status, ct, body) = text(argo).await;
    assert_eq!(
        (status, ct.as_str()),
        (200, "application/json; charset=utf-8")
    );
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ready"], false, "jsonPath {{$.ready}}: {body}");
    assert_eq!(v["phase"], "Verifying");

    h.set_ready("apps/v1", "Deployment", NS, "web");
    h.wait_ready_reason(NS, "shop", "Succeeded", "").await;
    let (_, _, body) = wait_for(200).await;
    assert_eq!(body, "stage \"app\" is Ready at v1@sha1:abc\n");
    let argo = http
        .get(&url)
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap();
    let (status, _, body) = text(argo).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        "{\"ready\":true,\"namespace\":\"default\",\"stageset\":\"shop\",\"stage\":\"app\",\"phase\":\"Ready\",\"revision\":\"v1@sha1:abc\"}\n"
    );
    // HEAD behaves like GET.
    let head = http.head(&url).send().await.unwrap();
    assert_eq!(head.status().as_u16(), 200);
}

/// Errors, methods and paths; nothing about other namespaces or a stage's
/// message leaks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gate_answers_are_exact_and_leak_nothing() {
    let h = Harness::start_with(HarnessOptions {
        listeners: true,
        flags: vec!["--watch-namespaces=default".into()],
        ..Default::default()
    })
    .await;
    h.namespace("private").await;
    let secretive = h.artifact(
        "s.tar.gz",
        &[("cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: no-namespace-given-secret-token-42\ndata: {}\n")],
    );
    h.external_artifact(NS, "s", &secretive, "r1").await;
    h.stageset(
        NS,
        "failing",
        json!({"stages": [{"name": "app", "sourceRef": {"name": "s"}}]}),
    )
    .await;
    h.wait_ready_reason(NS, "failing", "StageFailed", "secret-token-42")
        .await;
    // A StageSet outside the watched namespaces.
    h.stageset(
        "private",
        "hidden",
        json!({"stages": [{"name": "app", "sourceRef": {"name": "s"}}]}),
    )
    .await;
    let http = reqwest::Client::new();
    let get = |path: &str| {
        let http = http.clone();
        let url = gate_url(&h, path);
        async move { text(http.get(url).send().await.unwrap()).await }
    };
    let (status, _, body) = get("/gate/default/failing/app").await;
    assert_eq!(
        (status, body.as_str()),
        (403, "stage \"app\" is not Ready (phase=Failed)\n")
    );
    assert!(!body.contains("secret-token-42"));
    let (status, _, body) = get("/gate/default/failing/nope").await;
    assert_eq!(
        (status, body.as_str()),
        (
            403,
            "stage \"nope\" not found in stageset default/failing\n"
        )
    );
    // Missing and unwatched StageSets look the same.
    let (s1, _, b1) = get("/gate/private/hidden/app").await;
    let (s2, _, b2) = get("/gate/private/missing/app").await;
    assert_eq!(
        (s1, b1.as_str()),
        (403, "stageset private/hidden is not gateable\n")
    );
    assert_eq!((s2, b2.replace("missing", "hidden")), (403, b1.clone()));
    let (status, _, body) = get("/gate/default/failing").await;
    assert_eq!(
        (status, body.as_str()),
        (400, "expected /gate/{namespace}/{stageset}/{stage}\n")
    );
    let (status, _, _) = get("/other").await;
    assert_eq!(status, 404);
    let put = http
        .put(gate_url(&h, "/gate/default/failing/app"))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status().as_u16(), 405);
    assert_eq!(put.headers()["allow"], "GET, HEAD, POST");
    assert_eq!(put.text().await.unwrap(), "method not allowed\n");
    // JSON for a missing StageSet: 200, ready false, nothing else.
    let resp = http
        .get(gate_url(&h, "/gate/private/hidden/app"))
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.text().await.unwrap(),
        "{\"ready\":false,\"namespace\":\"private\",\"stageset\":\"hidden\",\"stage\":\"app\"}\n"
    );
}

/// Liveness, readiness and the metrics exposition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_metrics_listeners() {
    let h = harness().await;
    let bound = h.controller.as_ref().unwrap().bound().clone();
    let http = reqwest::Client::new();
    let health = bound.health.expect("health bound");
    let ok = http
        .get(format!("http://{health}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let r = http
            .get(format!("http://{health}/readyz"))
            .send()
            .await
            .unwrap();
        if r.status().as_u16() == 200 {
            break;
        }
        assert_eq!(r.text().await.unwrap(), "controller caches have not synced");
        assert!(std::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let metrics = bound.metrics.expect("metrics bound");
    let r = http
        .get(format!("http://{metrics}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let body = r.text().await.unwrap();
    assert!(
        body.ends_with("# EOF\n"),
        "an OpenMetrics-style exposition: {body}"
    );
}
