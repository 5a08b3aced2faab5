//! The MCP server (operations.md §3.6, delivery.md §7) over real HTTP, spoken
//! as the MCP streamable-HTTP transport defines it (initialize, the
//! initialized notification, tools/list, tools/call on one session), against
//! the controller on kube-sim.

#![recursion_limit = "256"]

mod support;

use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};
use support::*;

const NS: &str = "default";
const DEADLINE: Duration = Duration::from_secs(30);
/// A Secret value the rendered manifests carry; no MCP answer may show it.
const SECRET: &str = "s3cr3t-Value-42";

/// One MCP session over streamable HTTP.
struct Mcp {
    http: reqwest::Client,
    url: String,
    session: Option<String>,
    next_id: u64,
    /// Every response body, to check no Secret value ever left the server.
    seen: Vec<String>,
}

impl Mcp {
    async fn connect(h: &Harness) -> Mcp {
        let addr = h
            .controller
            .as_ref()
            .unwrap()
            .bound()
            .mcp
            .expect("the MCP server is bound");
        let mut mcp = Mcp {
            http: reqwest::Client::new(),
            url: format!("http://{addr}/mcp"),
            session: None,
            next_id: 1,
            seen: Vec::new(),
        };
        let init = mcp
            .request(
                "initialize",
                json!({
                    "protocolVersion": "2025-06-18",
                    "capabilities": {},
                    "clientInfo": {"name": "tests/mcp.rs", "version": "0"},
                }),
            )
            .await;
        assert_eq!(
            init["result"]["serverInfo"]["name"], "stageset-controller",
            "{init}"
        );
        assert!(
            init["result"]["capabilities"]["tools"].is_object(),
            "{init}"
        );
        assert!(mcp.session.is_some(), "the server opens a session");
        let resp = mcp
            .post(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        assert_eq!(resp.status().as_u16(), 202);
        mcp
    }

    async fn post(&self, body: Value) -> reqwest::Response {
        let mut req = self
            .http
            .post(&self.url)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .json(&body);
        if let Some(s) = &self.session {
            req = req
                .header("mcp-session-id", s)
                .header("mcp-protocol-version", "2025-06-18");
        }
        req.send().await.expect("the MCP server answers")
    }

    /// A JSON-RPC request; the answer is JSON or an SSE stream carrying it.
    async fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let resp = self
            .post(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        assert_eq!(resp.status().as_u16(), 200, "{method}");
        if let Some(s) = resp.headers().get("mcp-session-id") {
            self.session = Some(s.to_str().unwrap().to_string());
        }
        let sse = resp
            .headers()
            .get("content-type")
            .is_some_and(|v| v.to_str().unwrap().starts_with("text/event-stream"));
        let mut resp = resp;
        let mut text = String::new();
        let deadline = Instant::now() + DEADLINE;
        loop {
            if !sse {
                text = resp.text().await.unwrap();
                let v: Value = serde_json::from_str(&text).unwrap();
                self.seen.push(text);
                return v;
            }
            // Events are separated by a blank line; the answer is the `data`
            // of the message with our id.
            let answer = text.lines().find_map(|line| {
                let data = line.strip_prefix("data:")?;
                serde_json::from_str::<Value>(data.trim())
                    .ok()
                    .filter(|v| v["id"] == json!(id))
            });
            if let Some(v) = answer {
                // The whole stream, for the Secret check.
                self.seen.push(text);
                return v;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, resp.chunk()).await {
                Ok(Ok(Some(chunk))) => text.push_str(&String::from_utf8_lossy(&chunk)),
                Ok(Ok(None)) => panic!("{method}: the stream ended without an answer: {text}"),
                Ok(Err(e)) => panic!("{method}: {e}"),
                Err(_) => panic!("{method}: no answer within {DEADLINE:?}: {text}"),
            }
        }
    }

    async fn tools(&mut self) -> Vec<String> {
        let v = self.request("tools/list", json!({})).await;
        v["result"]["tools"]
            .as_array()
            .unwrap_or_else(|| panic!("{v}"))
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect()
    }

    /// A tool call: `Ok(structured answer)` or `Err(error text)`.
    async fn call(&mut self, tool: &str, args: Value) -> Result<Value, String> {
        let v = self
            .request("tools/call", json!({"name": tool, "arguments": args}))
            .await;
        let result = &v["result"];
        assert!(
            result.is_object(),
            "{tool}: a tool result, not a transport error: {v}"
        );
        if result["isError"] == json!(true) {
            Err(result["content"][0]["text"]
                .as_str()
                .unwrap_or_default()
                .to_string())
        } else {
            Ok(result["structuredContent"].clone())
        }
    }

    fn assert_no_secret(&self) {
        let b64 = base64::engine::general_purpose::STANDARD.encode(SECRET);
        for body in &self.seen {
            assert!(
                !body.contains(SECRET) && !body.contains(&b64),
                "a Secret value in an MCP answer: {body}"
            );
        }
    }
}

fn secret(value: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(value);
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: creds\n  namespace: {NS}\ndata:\n  password: {b64}\n"
    )
}

async fn harness(flags: &[&str]) -> Harness {
    Harness::start_with(HarnessOptions {
        listeners: true,
        flags: flags.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    })
    .await
}

/// A StageSet `shop` with one stage `app` applying a ConfigMap and a
/// Secret, Ready.
async fn deploy(h: &Harness, spec_extra: Value) {
    let art = h.artifact(
        "shop-v1.tar.gz",
        &[
            ("cm.yaml", &configmap(NS, "settings", "one")),
            ("secret.yaml", &secret(SECRET)),
        ],
    );
    h.external_artifact(NS, "shop", &art, "v1").await;
    let mut spec = json!({"stages": [{"name": "app", "sourceRef": {"name": "shop"}}]});
    if let (Some(s), Some(extra)) = (spec.as_object_mut(), spec_extra.as_object()) {
        s.extend(extra.clone());
    }
    h.stageset(NS, "shop", spec).await;
    h.wait_ready_reason(NS, "shop", "Succeeded", "").await;
}

/// Waits until `get_stageset` (which answers from the cache) satisfies `pred`.
async fn wait_get<F: Fn(&Value) -> bool>(mcp: &mut Mcp, what: &str, pred: F) -> Value {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let got = mcp
            .call("get_stageset", json!({"namespace": NS, "name": "shop"}))
            .await;
        if let Ok(v) = &got
            && pred(v)
        {
            return v.clone();
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_by_default() {
    let mut defaults = stageset_controller::config::Config::defaults();
    defaults.enable_webhook = false;
    let servers = stageset_controller::controller::server_options(&defaults).unwrap();
    assert!(
        servers.mcp.is_none(),
        "no MCP listener without --enable-mcp"
    );
    // The binary's listener options follow the flags.
    defaults.enable_mcp = true;
    defaults.mcp_bind_address = Some(":8084".into());
    defaults.mcp_allow_mutations = true;
    let servers = stageset_controller::controller::server_options(&defaults).unwrap();
    let mcp = servers.mcp.expect("the MCP listener with --enable-mcp");
    assert_eq!((mcp.addr.as_str(), mcp.allow_mutations), (":8084", true));
    let h = harness(&[]).await;
    let bound = h.controller.as_ref().unwrap().bound();
    assert!(bound.gate.is_some());
    assert_eq!(bound.mcp, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_tools_answer_from_the_live_stagesets() {
    let h = harness(&[
        "--enable-mcp",
        "--runbook-base-url=https://stageset.projects.metio.wtf/runbooks",
    ])
    .await;
    deploy(&h, json!({})).await;
    let mut mcp = Mcp::connect(&h).await;
    // Read tools only: no mutations without --mcp-allow-mutations, and no
    // diff_revisions without a rollback store.
    assert_eq!(mcp.tools().await, ["list_stagesets", "get_stageset"]);

    let list = mcp.call("list_stagesets", json!({})).await.unwrap();
    let shop = &list["stagesets"][0];
    assert_eq!(list["stagesets"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(shop["namespace"], NS);
    assert_eq!(shop["name"], "shop");
    assert_eq!(shop["ready"], "True");
    assert_eq!(shop["reason"], "Succeeded");
    assert_eq!(shop["suspended"], false);
    assert!(shop["observedGeneration"].as_i64().is_some(), "{shop}");
    let other = mcp
        .call("list_stagesets", json!({"namespace": "elsewhere"}))
        .await
        .unwrap();
    assert_eq!(other, json!({"stagesets": []}));

    let got = wait_get(&mut mcp, "the stage applied", |v| {
        v["stages"][0]["phase"] == "Ready"
    })
    .await;
    assert_eq!(got["name"], "shop");
    assert_eq!(got["ready"], "True");
    assert_eq!(got["stages"][0]["name"], "app");
    assert_eq!(got["stages"][0]["appliedRevision"], "v1");
    assert_eq!(
        got["runbookURL"],
        "https://stageset.projects.metio.wtf/runbooks/succeeded/"
    );
    assert_eq!(got["lastAppliedRevisions"].as_object().unwrap().len(), 1);
    assert_eq!(got["pendingMigrations"], json!([]));

    // Errors are tool errors, not transport errors.
    let missing = mcp
        .call("get_stageset", json!({"namespace": NS, "name": "nope"}))
        .await
        .unwrap_err();
    assert!(missing.contains("not found"), "{missing}");
    let bad = mcp
        .call("get_stageset", json!({"namespace": NS}))
        .await
        .unwrap_err();
    assert!(bad.contains("name is required"), "{bad}");
    let refused = mcp
        .call("suspend_stageset", json!({"namespace": NS, "name": "shop"}))
        .await
        .unwrap_err();
    assert!(refused.contains("--mcp-allow-mutations"), "{refused}");
    let no_store = mcp
        .call(
            "diff_revisions",
            json!({"namespace": NS, "name": "shop", "stage": "app", "from": "sha256:ab"}),
        )
        .await
        .unwrap_err();
    assert!(no_store.contains("rollback store"), "{no_store}");
    assert_eq!(
        h.get_stageset(NS, "shop").await.spec.suspend,
        None,
        "a refused write changed nothing"
    );
    mcp.assert_no_secret();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_tools_only_when_allowed_and_they_act_on_the_cluster() {
    let h = harness(&["--enable-mcp", "--mcp-allow-mutations"]).await;
    deploy(&h, json!({})).await;
    let mut mcp = Mcp::connect(&h).await;
    assert_eq!(
        mcp.tools().await,
        [
            "list_stagesets",
            "get_stageset",
            "reconcile_stageset",
            "suspend_stageset",
            "resume_stageset"
        ]
    );
    let args = json!({"namespace": NS, "name": "shop"});

    let done = mcp.call("suspend_stageset", args.clone()).await.unwrap();
    assert_eq!(
        done,
        json!({"namespace": NS, "name": "shop", "result": "suspended"})
    );
    assert_eq!(h.get_stageset(NS, "shop").await.spec.suspend, Some(true));
    let again = mcp.call("suspend_stageset", args.clone()).await.unwrap();
    assert_eq!(again["result"], "already suspended");
    let refused = mcp
        .call("reconcile_stageset", args.clone())
        .await
        .unwrap_err();
    assert!(refused.contains("suspended"), "{refused}");
    let got = wait_get(&mut mcp, "the cache to see the suspend", |v| {
        v["suspended"] == true
    })
    .await;
    // Without --runbook-base-url there are no runbook links.
    assert_eq!(got["runbookURL"], Value::Null, "{got}");

    let resumed = mcp.call("resume_stageset", args.clone()).await.unwrap();
    assert_eq!(resumed["result"], "resumed");
    assert_eq!(h.get_stageset(NS, "shop").await.spec.suspend, None);
    let again = mcp.call("resume_stageset", args.clone()).await.unwrap();
    assert_eq!(again["result"], "not suspended");

    let requested = mcp.call("reconcile_stageset", args.clone()).await.unwrap();
    assert_eq!(requested["result"], "reconcile requested");
    let ss = h.get_stageset(NS, "shop").await;
    let token = ss
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("reconcile.fluxcd.io/requestedAt"))
        .cloned()
        .expect("the reconcile request is stamped");
    // The controller handles the request.
    h.wait_stageset(NS, "shop", "the reconcile request handled", |ss| {
        ss.status
            .as_ref()
            .and_then(|s| s.last_handled_reconcile_at.as_deref())
            == Some(token.as_str())
    })
    .await;

    let missing = mcp
        .call("suspend_stageset", json!({"namespace": NS, "name": "nope"}))
        .await
        .unwrap_err();
    assert!(missing.contains("not found"), "{missing}");
    mcp.assert_no_secret();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_revisions_reads_the_rollback_store_with_secrets_masked() {
    let store = tempfile::tempdir().unwrap();
    let path = format!("--rollback-store-path={}", store.path().display());
    let h = harness(&["--enable-mcp", &path]).await;
    deploy(&h, json!({"rollbackOnFailure": true})).await;
    let digest = |ss: &stageset_controller::api::StageSet, rev: &str| {
        ss.status.as_ref().and_then(|s| {
            s.last_applied_snapshot
                .iter()
                .find(|a| a.stage == "app" && a.revision.as_deref() == Some(rev))
                .map(|a| a.digest.clone())
        })
    };
    let ss = h
        .wait_stageset(NS, "shop", "the v1 snapshot", |ss| {
            digest(ss, "v1").is_some()
        })
        .await;
    let d1 = digest(&ss, "v1").unwrap();
    let v2 = h.artifact(
        "shop-v2.tar.gz",
        &[
            ("cm.yaml", &configmap(NS, "settings", "two")),
            ("secret.yaml", &secret("an0ther-Secret-7")),
            ("extra.yaml", &configmap(NS, "extra", "new")),
        ],
    );
    h.external_artifact(NS, "shop", &v2, "v2").await;
    let ss = h
        .wait_stageset(NS, "shop", "the v2 snapshot", |ss| {
            digest(ss, "v2").is_some()
        })
        .await;
    let d2 = digest(&ss, "v2").unwrap();

    let mut mcp = Mcp::connect(&h).await;
    assert_eq!(
        mcp.tools().await,
        ["list_stagesets", "get_stageset", "diff_revisions"]
    );
    // The cache follows the status shortly; `to` defaults to the applied digest.
    let deadline = Instant::now() + DEADLINE;
    let out = loop {
        let args = json!({"namespace": NS, "name": "shop", "stage": "app", "from": d1});
        match mcp.call("diff_revisions", args).await {
            Ok(v) if v["to"] == json!(d2) => break v,
            other => assert!(Instant::now() < deadline, "{other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        out["counts"],
        json!({"create": 1, "configure": 2, "delete": 0, "unchanged": 0}),
        "{out}"
    );
    let diff = out["diff"].as_str().unwrap();
    assert!(
        diff.contains("-  value: one") && diff.contains("+  value: two"),
        "{diff}"
    );
    assert!(diff.contains("value not shown"), "{diff}");
    assert!(!diff.contains("an0ther-Secret-7"), "{diff}");
    // Reverse direction, explicit `to`.
    let back = mcp
        .call(
            "diff_revisions",
            json!({"namespace": NS, "name": "shop", "stage": "app", "from": d2, "to": d1}),
        )
        .await
        .unwrap();
    assert_eq!(back["counts"]["delete"], 1, "{back}");

    for (args, want) in [
        (json!({"from": "SHA256:AB"}), "<algo>:<hex>"),
        (json!({"from": "sha256:../x"}), "<algo>:<hex>"),
        (json!({"from": d2.clone()}), "same digest"),
        (json!({"from": "sha256:00"}), "holds no rendering"),
        (json!({"from": d1.clone(), "stage": "nope"}), "not declared"),
    ] {
        let mut a = json!({"namespace": NS, "name": "shop", "stage": "app"});
        a.as_object_mut()
            .unwrap()
            .extend(args.as_object().unwrap().clone());
        let err = mcp.call("diff_revisions", a.clone()).await.unwrap_err();
        assert!(err.contains(want), "{a}: {err}");
    }
    mcp.assert_no_secret();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_outside_the_watch_scope_is_an_error_with_a_hint() {
    let h = harness(&["--enable-mcp", "--watch-namespaces=default"]).await;
    deploy(&h, json!({})).await;
    let mut mcp = Mcp::connect(&h).await;
    let list = mcp
        .call("list_stagesets", json!({"namespace": NS}))
        .await
        .unwrap();
    assert_eq!(list["stagesets"][0]["name"], "shop", "{list}");
    for (tool, args) in [
        ("list_stagesets", json!({"namespace": "other"})),
        (
            "get_stageset",
            json!({"namespace": "other", "name": "shop"}),
        ),
    ] {
        let err = mcp.call(tool, args).await.unwrap_err();
        assert!(err.contains("--watch-namespaces=default"), "{tool}: {err}");
    }
}
