//! `stagesetctl` (delivery.md §6): the built binary run against kube-sim,
//! each test with its own simulator, artifact server and (where a verb needs
//! it) the controller in-process.

#![recursion_limit = "256"]

mod support;

use std::path::PathBuf;
use std::process::Output;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};
use stageset_controller::api::{StageLedger, StageSet};
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_stagesetctl");

/// The kubeconfig of a harness's simulator, written to a temp file.
struct Cluster {
    _dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

fn cluster(h: &Harness) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, h.sim.kubeconfig()).unwrap();
    Cluster {
        _dir: dir,
        kubeconfig,
    }
}

/// Runs the binary (off the async workers: kube-sim serves on them).
async fn ctl(c: Option<&Cluster>, args: &[&str]) -> Output {
    let mut argv: Vec<String> = Vec::new();
    if let Some(c) = c {
        argv.push(format!("--kubeconfig={}", c.kubeconfig.display()));
    }
    argv.extend(args.iter().map(|s| s.to_string()));
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(BIN)
            .args(&argv)
            .env_remove("KUBECONFIG")
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[track_caller]
fn code(o: &Output, want: i32) {
    assert_eq!(
        o.status.code(),
        Some(want),
        "exit code\nstdout:\n{}\nstderr:\n{}",
        stdout(o),
        stderr(o)
    );
}

fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

fn secret(ns: &str, name: &str, value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {ns}\nstringData:\n  password: {value}\n"
    )
}

/// A one-stage StageSet `web` in `ns` delivering `files`.
async fn one_stage(h: &Harness, ns: &str, files: &[(&str, &str)], revision: &str) {
    let published = h.artifact(&format!("{ns}-{revision}.tar.gz"), files);
    h.external_artifact(ns, "web", &published, revision).await;
    h.stageset(
        ns,
        "web",
        json!({"stages": [{"name": "config", "sourceRef": {"name": "web"}}]}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_and_offline_errors() {
    // Usage errors: exit 2, from clap or from a flag combination.
    for args in [
        vec!["get", "web", "-A"],
        vec!["get", "-o", "wide"],
        vec!["diff", "web", "--color=sometimes"],
        vec!["reconcile", "web", "--reset-scope", "Revision"],
        vec!["promote", "web"],
        vec!["get", "--server", "https://127.0.0.1:1"],
        vec!["get", "--token", "abc"],
        vec!["baseline", "web", "--export", "--stage", "a"],
        vec![
            "reset-ledger",
            "web",
            "--all",
            "--stage",
            "a",
            "--action",
            "b",
        ],
        // Checked before any cluster is contacted.
        vec!["diff", "web", "--source-dir=a", "--source-dir=b"],
        vec!["apply", "web", "--source-dir=s=a", "--source-dir=s=b"],
        vec!["get", "--as-group", "g"],
    ] {
        let o = ctl(None, &args).await;
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    }
    let o = ctl(None, &["--version"]).await;
    code(&o, 0);
    assert!(
        stdout(&o).starts_with(&format!(
            "stagesetctl {} (commit ",
            env!("CARGO_PKG_VERSION")
        )),
        "{}",
        stdout(&o)
    );
    let o = ctl(None, &["diff", "--help"]).await;
    code(&o, 0);
    assert!(stdout(&o).contains("Examples:"));
    let o = ctl(None, &["completion", "bash"]).await;
    code(&o, 0);
    assert!(stdout(&o).contains("stagesetctl"));
    assert!(stdout(&o).contains("reconcile"));

    // A runtime error: exit 3 and `Error:` on stderr.
    let o = ctl(None, &["--kubeconfig=/nonexistent/kubeconfig", "get"]).await;
    code(&o, 3);
    assert!(stderr(&o).starts_with("Error: "), "{}", stderr(&o));

    // lint-migrations, offline.
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("ladder.yaml");
    std::fs::write(
        &good,
        r#"- name: add-index
  to: 1.5.0
  actions:
  - name: idx
    delete: {target: {apiVersion: v1, kind: ConfigMap, name: old}}
- name: split-table
  from: ">=1.4.0"
  to: 2.0.0
  stage: db
  actions:
  - name: split
    delete: {target: {apiVersion: v1, kind: ConfigMap, name: older}}
"#,
    )
    .unwrap();
    let o = ctl(None, &["lint-migrations", good.to_str().unwrap()]).await;
    code(&o, 0);
    let out = stdout(&o);
    assert!(out.starts_with("✓ 2 migration(s) valid\n"), "{out}");
    assert!(
        out.contains("add-index  → 1.5.0  before (first stage)  delete"),
        "{out}"
    );
    assert!(
        out.contains("split-table  >=1.4.0 → 2.0.0  before db  delete"),
        "{out}"
    );
    let o = ctl(
        None,
        &[
            "lint-migrations",
            good.to_str().unwrap(),
            "--from",
            "1.5.0",
            "--to",
            "2.0.0",
        ],
    )
    .await;
    code(&o, 0);
    let out = stdout(&o);
    assert!(out.contains("transition 1.5.0 → 2.0.0:"), "{out}");
    assert!(
        out.contains("add-index  excluded to 1.5.0 is not in the crossed range (1.5.0, 2.0.0]"),
        "{out}"
    );
    assert!(out.contains("split-table  FIRES delete"), "{out}");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "- name: x\n  to: not-a-version\n").unwrap();
    let o = ctl(None, &["lint-migrations", bad.to_str().unwrap()]).await;
    code(&o, 1);
    assert!(stdout(&o).starts_with("✗ "), "{}", stdout(&o));
    assert!(stderr(&o).is_empty());
    let o = ctl(None, &["lint-migrations", "/nonexistent/ladder"]).await;
    code(&o, 3);
    let o = ctl(
        None,
        &["lint-migrations", good.to_str().unwrap(), "--from", "1.0.0"],
    )
    .await;
    code(&o, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_tree_and_build() {
    let h = Harness::start().await;
    let c = cluster(&h);
    h.namespace("shop").await;
    h.namespace("empty").await;
    one_stage(
        &h,
        "shop",
        &[
            ("cm.yaml", &configmap("shop", "settings", "one")),
            ("secret.yaml", &secret("shop", "db", "hunter2")),
        ],
        "v1",
    )
    .await;
    h.wait_ready_reason("shop", "web", "Succeeded", "").await;

    // The table: exactly the §6.2 columns.
    let o = ctl(Some(&c), &["-n", "shop", "get"]).await;
    code(&o, 0);
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        words(lines[0]),
        ["NAME", "READY", "REASON", "STAGES", "VERSION", "PENDING"]
    );
    assert_eq!(
        words(lines[1]),
        ["web", "True", "Succeeded", "1/1", "-", "-"]
    );
    assert_eq!(lines.len(), 2);
    let o = ctl(Some(&c), &["get", "-A"]).await;
    code(&o, 0);
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        words(lines[0]),
        [
            "NAMESPACE",
            "NAME",
            "READY",
            "REASON",
            "STAGES",
            "VERSION",
            "PENDING"
        ]
    );
    assert_eq!(
        words(lines[1]),
        ["shop", "web", "True", "Succeeded", "1/1", "-", "-"]
    );
    let o = ctl(Some(&c), &["get", "-n", "empty"]).await;
    code(&o, 0);
    assert_eq!(stdout(&o), "No StageSets found.\n");

    // JSON: a List of StageSets, and one StageSet, each with its GVK.
    let o = ctl(Some(&c), &["get", "-n", "shop", "-o", "json"]).await;
    code(&o, 0);
    let list: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(list["kind"], "List");
    assert_eq!(list["items"][0]["kind"], "StageSet");
    assert_eq!(list["items"][0]["apiVersion"], "stages.metio.wtf/v1");
    let items: Vec<StageSet> = serde_json::from_value(list["items"].clone()).unwrap();
    assert_eq!(items.len(), 1);
    let o = ctl(Some(&c), &["get", "web", "-n", "shop", "-o", "json"]).await;
    code(&o, 0);
    let ss: StageSet = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(ss.spec.stages[0].name, "config");
    assert_eq!(
        ss.status.unwrap().stages[0].applied_revision.as_deref(),
        Some("v1")
    );
    let o = ctl(Some(&c), &["get", "web", "-n", "shop", "-o", "yaml"]).await;
    code(&o, 0);
    let ss: StageSet = serde_yaml_ng::from_slice(&o.stdout).unwrap();
    assert_eq!(ss.spec.stages.len(), 1);

    // Detail.
    let o = ctl(Some(&c), &["get", "web", "-n", "shop"]).await;
    code(&o, 0);
    let out = stdout(&o);
    assert!(out.contains("Name:        web\n"), "{out}");
    assert!(out.contains("Ready:       True (Succeeded)\n"), "{out}");
    let stage_line = out
        .lines()
        .find(|l| l.trim_start().starts_with("config"))
        .unwrap();
    assert_eq!(words(stage_line), ["config", "Ready", "v1", "2"]);
    let o = ctl(Some(&c), &["get", "missing", "-n", "shop"]).await;
    code(&o, 3);
    assert_eq!(stderr(&o), "Error: StageSet shop/missing not found\n");

    // tree: the inventory of the stage.
    let o = ctl(Some(&c), &["tree", "web", "-n", "shop"]).await;
    code(&o, 0);
    let out = stdout(&o);
    assert!(
        out.starts_with("StageSet shop/web\n└── stage config  (Ready, revision v1)\n"),
        "{out}"
    );
    // In the inventory's order (by entry id: namespace, name, group, kind).
    assert!(
        out.ends_with("    ├── Secret/shop/db\n    └── ConfigMap/shop/settings\n"),
        "{out}"
    );

    // build: rendered with the caller's credentials, Secrets masked.
    let o = ctl(Some(&c), &["build", "web", "-n", "shop"]).await;
    code(&o, 0);
    let out = stdout(&o);
    assert!(out.contains("name: settings"), "{out}");
    assert!(out.contains("password: <-- value not shown (#1)"), "{out}");
    assert!(!out.contains("hunter2"), "{out}");
    assert!(!out.contains("stages.metio.wtf/stage"), "no labels: {out}");
    let o = ctl(Some(&c), &["build", "web", "-n", "shop", "--show-secrets"]).await;
    code(&o, 0);
    assert!(stdout(&o).contains("hunter2"));
    let o = ctl(Some(&c), &["build", "web", "-n", "shop", "--stage", "nope"]).await;
    code(&o, 3);
    assert!(
        stderr(&o).contains("has no stage \"nope\""),
        "{}",
        stderr(&o)
    );
    // A local directory instead of the artifact.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cm.yaml"), configmap("shop", "local", "x")).unwrap();
    let arg = format!("--source-dir=config={}", dir.path().display());
    let o = ctl(Some(&c), &["build", "web", "-n", "shop", &arg]).await;
    code(&o, 0);
    assert!(stdout(&o).contains("name: local"), "{}", stdout(&o));
    // An encrypted file without decryption configured is refused, never
    // printed as if it were plain text.
    let enc = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: enc\n  namespace: shop\ndata:\n  value: ENC[AES256_GCM,data:abc,iv:def,tag:ghi,type:str]\nsops:\n  mac: ENC[AES256_GCM,data:x,iv:y,tag:z,type:str]\n  version: 3.8.1\n";
    std::fs::write(dir.path().join("cm.yaml"), enc).unwrap();
    let o = ctl(Some(&c), &["build", "web", "-n", "shop", &arg]).await;
    code(&o, 3);
    assert!(stderr(&o).contains("SOPS"), "{}", stderr(&o));
    assert!(stdout(&o).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_reconcile_and_suspend() {
    let h = Harness::start().await;
    let c = cluster(&h);
    h.namespace("diff").await;
    one_stage(
        &h,
        "diff",
        &[
            ("a.yaml", &configmap("diff", "settings", "one")),
            ("b.yaml", &configmap("diff", "extra", "x")),
        ],
        "v1",
    )
    .await;
    h.wait_ready_reason("diff", "web", "Succeeded", "").await;

    // In sync: exit 0.
    let o = ctl(Some(&c), &["diff", "web", "-n", "diff"]).await;
    code(&o, 0);
    assert_eq!(stdout(&o), "Summary: no changes\n");
    let o = ctl(Some(&c), &["diff", "web", "-n", "diff", "--show-unchanged"]).await;
    code(&o, 0);
    assert!(
        stdout(&o).contains("unchanged ConfigMap/settings [diff]  (stage: config)\n"),
        "{}",
        stdout(&o)
    );

    // Suspended, the controller leaves the new revision alone.
    let o = ctl(Some(&c), &["suspend", "web", "-n", "diff"]).await;
    code(&o, 0);
    h.wait_ready_reason("diff", "web", "Suspended", "").await;
    let o = ctl(Some(&c), &["reconcile", "web", "-n", "diff"]).await;
    code(&o, 3);
    assert!(stderr(&o).contains("is suspended"), "{}", stderr(&o));
    let v2 = h.artifact(
        "diff-v2.tar.gz",
        &[
            ("a.yaml", &configmap("diff", "settings", "two")),
            ("c.yaml", &configmap("diff", "added", "new")),
        ],
    );
    h.external_artifact("diff", "web", &v2, "v2").await;

    let o = ctl(Some(&c), &["diff", "web", "-n", "diff"]).await;
    code(&o, 1);
    assert!(stderr(&o).is_empty(), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines.contains(&"create ConfigMap/added [diff]  (stage: config)"),
        "{out}"
    );
    assert!(
        lines.contains(&"configure ConfigMap/settings [diff]  (stage: config)"),
        "{out}"
    );
    assert!(
        lines.contains(&"delete ConfigMap/extra [diff]  (stage: config)"),
        "{out}"
    );
    assert!(lines.contains(&"--- live"), "{out}");
    assert!(lines.contains(&"+++ merged"), "{out}");
    assert!(lines.contains(&"-  value: one"), "{out}");
    assert!(lines.contains(&"+  value: two"), "{out}");
    assert_eq!(
        lines.last(),
        Some(&"Summary: 1 to create, 1 to configure, 1 to delete, 0 unchanged, 0 skipped"),
        "{out}"
    );
    // Nothing was written by the dry run.
    let cm = h
        .get_opt("v1", "ConfigMap", Some("diff"), "settings")
        .await
        .unwrap();
    assert_eq!(cm.data["data"]["value"], "one");
    assert!(
        h.get_opt("v1", "ConfigMap", Some("diff"), "added")
            .await
            .is_none()
    );
    let o = ctl(
        Some(&c),
        &["diff", "web", "-n", "diff", "--exit-code=false"],
    )
    .await;
    code(&o, 0);
    let o = ctl(Some(&c), &["diff", "web", "-n", "diff", "--prune=false"]).await;
    code(&o, 1);
    assert!(
        !stdout(&o).contains("delete ConfigMap/extra"),
        "{}",
        stdout(&o)
    );

    // Resume, then reconcile and wait: Ready at v2, and in sync again.
    let o = ctl(Some(&c), &["resume", "web", "-n", "diff"]).await;
    code(&o, 0);
    assert!(stdout(&o).starts_with("StageSet web resumed (token "));
    let o = ctl(
        Some(&c),
        &[
            "reconcile",
            "web",
            "-n",
            "diff",
            "--wait",
            "--timeout",
            "60s",
        ],
    )
    .await;
    code(&o, 0);
    let out = stdout(&o);
    assert!(
        out.starts_with("Reconcile requested for StageSet web (token "),
        "{out}"
    );
    assert!(out.contains("StageSet web is Ready (Succeeded)"), "{out}");
    let token = out
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("Reconcile requested for StageSet web (token "))
        .and_then(|l| l.strip_suffix(')'))
        .unwrap()
        .to_string();
    let ss = h.get_stageset("diff", "web").await;
    assert_eq!(
        ss.metadata.annotations.as_ref().unwrap()["reconcile.fluxcd.io/requestedAt"],
        token
    );
    assert_eq!(
        ss.status
            .as_ref()
            .unwrap()
            .last_handled_reconcile_at
            .as_deref(),
        Some(token.as_str())
    );
    assert!(token.parse::<jiff::Timestamp>().is_ok() && token.ends_with('Z'));
    h.wait_stageset("diff", "web", "v2 applied", |ss| {
        ss.status.as_ref().is_some_and(|s| {
            s.stages.first().and_then(|x| x.applied_revision.as_deref()) == Some("v2")
        })
    })
    .await;
    let o = ctl(Some(&c), &["diff", "web", "-n", "diff"]).await;
    code(&o, 0);
    assert_eq!(stdout(&o), "Summary: no changes\n");
    let o = ctl(
        Some(&c),
        &["promote", "web", "-n", "diff", "--stage", "config"],
    )
    .await;
    code(&o, 3);
    assert!(
        stderr(&o).contains("has no promotion block"),
        "{}",
        stderr(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_wait_fails_on_a_broken_stage() {
    let h = Harness::start().await;
    let c = cluster(&h);
    h.namespace("broken").await;
    one_stage(&h, "broken", &[("bad.yaml", "kind: [\n")], "v1").await;
    let o = ctl(
        Some(&c),
        &[
            "reconcile",
            "web",
            "-n",
            "broken",
            "--wait",
            "--timeout",
            "60s",
        ],
    )
    .await;
    code(&o, 3);
    let err = stderr(&o);
    assert!(
        err.starts_with("Error: StageSet broken/web is not Ready: StageFailed"),
        "{err}"
    );
    let o = ctl(
        Some(&c),
        &["reconcile", "web", "-n", "broken", "--stage", "nope"],
    )
    .await;
    code(&o, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_and_with_source_without_the_controller() {
    let h = Harness::start_with(HarnessOptions {
        start_controller: false,
        ..HarnessOptions::default()
    })
    .await;
    let c = cluster(&h);
    h.namespace("direct").await;
    one_stage(
        &h,
        "direct",
        &[("a.yaml", &configmap("direct", "settings", "one"))],
        "v1",
    )
    .await;
    let o = ctl(Some(&c), &["diff", "web", "-n", "direct"]).await;
    code(&o, 1);
    assert!(stdout(&o).contains("create ConfigMap/settings [direct]  (stage: config)"));
    let o = ctl(Some(&c), &["apply", "web", "-n", "direct", "--wait"]).await;
    code(&o, 0);
    assert_eq!(
        stdout(&o),
        "stage \"config\":\n  created ConfigMap/direct/settings\n  stage \"config\" is healthy\napplied 1 object(s) across 1 stage(s)\n"
    );
    let cm = h
        .get_opt("v1", "ConfigMap", Some("direct"), "settings")
        .await
        .unwrap();
    assert_eq!(
        cm.metadata.labels.as_ref().unwrap()["stages.metio.wtf/stage"],
        "config"
    );
    assert_eq!(
        cm.metadata.labels.as_ref().unwrap()["stages.metio.wtf/name"],
        "web"
    );
    let o = ctl(Some(&c), &["diff", "web", "-n", "direct"]).await;
    code(&o, 0);

    // suspend / resume write spec.suspend as stagesetctl.
    let o = ctl(Some(&c), &["suspend", "web", "-n", "direct"]).await;
    code(&o, 0);
    let ss = h.get_stageset("direct", "web").await;
    assert_eq!(ss.spec.suspend, Some(true));
    assert!(
        ss.metadata
            .managed_fields
            .iter()
            .flatten()
            .any(|m| m.manager.as_deref() == Some("stagesetctl"))
    );
    let o = ctl(Some(&c), &["resume", "web", "-n", "direct"]).await;
    code(&o, 0);
    let ss = h.get_stageset("direct", "web").await;
    assert_eq!(ss.spec.suspend, Some(false));
    assert!(
        ss.metadata
            .annotations
            .unwrap()
            .contains_key("reconcile.fluxcd.io/requestedAt")
    );

    // Every requested override carries the same token.
    let o = ctl(
        Some(&c),
        &[
            "reconcile",
            "web",
            "-n",
            "direct",
            "--update-now",
            "--budget-override",
            "--reset-scope",
            "Version",
        ],
    )
    .await;
    code(&o, 0);
    let ss = h.get_stageset("direct", "web").await;
    let a = ss.metadata.annotations.unwrap();
    let token = &a["reconcile.fluxcd.io/requestedAt"];
    assert!(
        stdout(&o).contains(&format!("(token {token})")),
        "{}",
        stdout(&o)
    );
    for key in [
        "stages.metio.wtf/update-now",
        "stages.metio.wtf/budget-override",
        "stages.metio.wtf/reset-scope",
    ] {
        assert_eq!(&a[key], token, "{key}");
    }

    // --with-source: the ExternalArtifact has no producer yet.
    let o = ctl(
        Some(&c),
        &[
            "reconcile",
            "web",
            "-n",
            "direct",
            "--with-source",
            "--strict",
        ],
    )
    .await;
    code(&o, 3);
    assert!(stderr(&o).contains("no spec.sourceRef"), "{}", stderr(&o));
    // With a producer, the request lands on it.
    let repo = json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
        "metadata": {"name": "repo", "namespace": "direct"}, "spec": {}});
    h.dynamic(
        "source.toolkit.fluxcd.io/v1",
        "GitRepository",
        Some("direct"),
    )
    .await
    .patch(
        "repo",
        &PatchParams::apply("test").force(),
        &Patch::Apply(&repo),
    )
    .await
    .unwrap();
    let ea: Api<DynamicObject> = h
        .dynamic(
            "source.toolkit.fluxcd.io/v1",
            "ExternalArtifact",
            Some("direct"),
        )
        .await;
    ea.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"sourceRef": {"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository", "name": "repo"}}})),
    )
    .await
    .unwrap();
    let o = ctl(
        Some(&c),
        &[
            "reconcile",
            "web",
            "-n",
            "direct",
            "--with-source",
            "--strict",
        ],
    )
    .await;
    code(&o, 0);
    let out = stdout(&o);
    assert!(
        out.contains("Reconcile requested for GitRepository direct/repo\n"),
        "{out}"
    );
    let token = out
        .lines()
        .find_map(|l| l.strip_prefix("Reconcile requested for StageSet web (token "))
        .and_then(|l| l.strip_suffix(')'))
        .unwrap();
    let repo = h
        .get_opt(
            "source.toolkit.fluxcd.io/v1",
            "GitRepository",
            Some("direct"),
            "repo",
        )
        .await
        .unwrap();
    assert_eq!(
        repo.metadata.annotations.unwrap()["reconcile.fluxcd.io/requestedAt"],
        token
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baseline_and_reset_ledger() {
    let h = Harness::start_with(HarnessOptions {
        start_controller: false,
        ..HarnessOptions::default()
    })
    .await;
    let c = cluster(&h);
    h.namespace("ledger").await;
    let published = h.artifact(
        "ledger.tar.gz",
        &[("cm.yaml", &configmap("ledger", "settings", "one"))],
    );
    h.external_artifact("ledger", "web", &published, "v1").await;
    h.stageset(
        "ledger",
        "web",
        json!({"stages": [{"name": "app", "sourceRef": {"name": "web"},
            "actions": {"pre": [{"name": "seed", "scope": "Lifetime", "delete": {
                "target": {"apiVersion": "v1", "kind": "ConfigMap", "name": "flag"}}}],
                "post": [{"name": "notify", "delete": {
                "target": {"apiVersion": "v1", "kind": "ConfigMap", "name": "other"}}}]}}]}),
    )
    .await;
    // What the next pass would run, as diff lists it.
    let o = ctl(Some(&c), &["diff", "web", "-n", "ledger"]).await;
    code(&o, 1);
    let out = stdout(&o);
    assert!(
        out.contains("Actions to run:\n  app: pre seed delete scope Lifetime, not completed yet\n  app: post notify delete scope Revision, new revision v1\n"),
        "{out}"
    );
    let o = ctl(
        Some(&c),
        &[
            "baseline", "web", "-n", "ledger", "--stage", "app", "--action", "notify",
        ],
    )
    .await;
    code(&o, 3);
    assert!(stderr(&o).contains("scope Lifetime"), "{}", stderr(&o));
    let o = ctl(
        Some(&c),
        &[
            "baseline", "web", "-n", "ledger", "--stage", "app", "--action", "typo",
        ],
    )
    .await;
    code(&o, 3);
    let o = ctl(
        Some(&c),
        &["baseline", "web", "-n", "ledger", "--stage", "app"],
    )
    .await;
    code(&o, 2);
    let o = ctl(
        Some(&c),
        &[
            "baseline", "web", "-n", "ledger", "--stage", "app", "--action", "seed",
        ],
    )
    .await;
    code(&o, 0);
    assert_eq!(
        stdout(&o),
        "Created StageLedger web with baseline app/seed\n"
    );
    let o = ctl(
        Some(&c),
        &[
            "baseline", "web", "-n", "ledger", "--stage", "app", "--action", "seed",
        ],
    )
    .await;
    code(&o, 0);
    assert!(stdout(&o).contains("already has baseline app/seed"));
    let ledgers: Api<StageLedger> = Api::namespaced(h.client.clone(), "ledger");
    let l = ledgers.get("web").await.unwrap();
    assert_eq!(l.spec.baseline.as_ref().unwrap().len(), 1);
    let o = ctl(Some(&c), &["diff", "web", "-n", "ledger"]).await;
    code(&o, 1);
    let out = stdout(&o);
    assert!(!out.contains("pre seed"), "baselined: {out}");
    assert!(out.contains("  app: post notify delete"), "{out}");

    // A completion recorded by the controller, exported and then reset.
    ledgers
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"completedActions": [
                {"stage": "app", "action": "seed", "origin": "Executed", "completedAt": "2026-01-01T00:00:00Z",
                 "anchor": {"apiVersion": "v1", "kind": "ConfigMap", "name": "flag", "uid": "u-1"}}]}})),
        )
        .await
        .unwrap();
    // Its anchor is gone, so the action runs again.
    let o = ctl(Some(&c), &["diff", "web", "-n", "ledger"]).await;
    code(&o, 1);
    assert!(
        stdout(&o).contains("  app: pre seed delete scope Lifetime, re-run: the completion anchor ConfigMap flag is gone or was replaced\n"),
        "{}",
        stdout(&o)
    );
    let o = ctl(Some(&c), &["baseline", "web", "-n", "ledger", "--export"]).await;
    code(&o, 0);
    let exported: StageLedger = serde_yaml_ng::from_slice(&o.stdout).unwrap();
    assert_eq!(exported.spec.baseline.unwrap()[0].action, "seed");
    let o = ctl(
        Some(&c),
        &[
            "reset-ledger",
            "web",
            "-n",
            "ledger",
            "--stage",
            "app",
            "--action",
            "seed",
        ],
    )
    .await;
    code(&o, 0);
    assert_eq!(stdout(&o), "Reset 1 completion(s) in StageLedger web\n");
    let l = ledgers.get("web").await.unwrap();
    assert!(l.spec.baseline.unwrap_or_default().is_empty());
    assert!(l.status.unwrap_or_default().completed_actions.is_empty());
    let o = ctl(Some(&c), &["reset-ledger", "web", "-n", "ledger"]).await;
    code(&o, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_passes_a_manual_gate() {
    let h = Harness::start().await;
    let c = cluster(&h);
    h.namespace("gate").await;
    for (name, rev) in [("canary", "r1"), ("prod", "p1")] {
        let published = h.artifact(
            &format!("gate-{name}.tar.gz"),
            &[(
                "cm.yaml",
                &configmap("gate", &format!("{name}-config"), rev),
            )],
        );
        h.external_artifact("gate", name, &published, rev).await;
    }
    h.stageset(
        "gate",
        "web",
        json!({"stages": [
            {"name": "canary", "sourceRef": {"name": "canary"}, "promotion": {"requireManualPromotion": true}},
            {"name": "prod", "sourceRef": {"name": "prod"}}]}),
    )
    .await;
    h.wait_ready_reason("gate", "web", "AwaitingPromotion", "")
        .await;
    // Waiting for a reconcile ends at the gate: it needs a person.
    let o = ctl(
        Some(&c),
        &[
            "reconcile",
            "web",
            "-n",
            "gate",
            "--wait",
            "--timeout",
            "60s",
        ],
    )
    .await;
    code(&o, 3);
    assert!(
        stderr(&o).starts_with("Error: StageSet gate/web is not Ready: AwaitingPromotion"),
        "{}",
        stderr(&o)
    );
    let o = ctl(
        Some(&c),
        &["promote", "web", "-n", "gate", "--stage", "prod"],
    )
    .await;
    code(&o, 3);
    assert!(
        stderr(&o).contains("has no promotion block"),
        "{}",
        stderr(&o)
    );
    let o = ctl(
        Some(&c),
        &[
            "promote",
            "web",
            "-n",
            "gate",
            "--stage",
            "canary",
            "--wait",
            "--timeout",
            "60s",
        ],
    )
    .await;
    code(&o, 0);
    let out = stdout(&o);
    assert!(
        out.starts_with("Promotion requested for stage \"canary\" of StageSet web (token "),
        "{out}"
    );
    assert!(
        out.contains("Promotion of stage \"canary\" handled\n"),
        "{out}"
    );
    let token = out
        .lines()
        .next()
        .and_then(|l| l.rsplit_once("(token "))
        .and_then(|(_, t)| t.strip_suffix(')'))
        .unwrap()
        .to_string();
    let ss = h.wait_ready_reason("gate", "web", "Succeeded", "").await;
    let canary = ss.status.as_ref().unwrap().stages[0].clone();
    assert_eq!(
        canary.last_handled_promotion.as_deref(),
        Some(token.as_str())
    );
    assert_eq!(
        ss.metadata.annotations.as_ref().unwrap()["stages.metio.wtf/promote"],
        format!("canary@{token}")
    );
    // Re-running one stage's actions: the stage records the token.
    let o = ctl(
        Some(&c),
        &[
            "reconcile",
            "web",
            "-n",
            "gate",
            "--stage",
            "prod",
            "--wait",
            "--timeout",
            "60s",
        ],
    )
    .await;
    code(&o, 0);
    let out = stdout(&o);
    assert!(
        out.starts_with("Reconcile requested for stage \"prod\" of StageSet web (token "),
        "{out}"
    );
    let token = out
        .lines()
        .next()
        .and_then(|l| l.rsplit_once("(token "))
        .and_then(|(_, t)| t.strip_suffix(')'))
        .unwrap()
        .to_string();
    let ss = h.get_stageset("gate", "web").await;
    assert_eq!(
        ss.status.as_ref().unwrap().stages[1]
            .last_handled_reconcile_at
            .as_deref(),
        Some(token.as_str())
    );
    assert_eq!(
        ss.metadata.annotations.as_ref().unwrap()["stages.metio.wtf/reconcile-stage"],
        format!("prod@{token}")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_stay_masked_in_diffs() {
    let h = Harness::start().await;
    let c = cluster(&h);
    h.namespace("sec").await;
    one_stage(
        &h,
        "sec",
        &[("s.yaml", &secret("sec", "db", "hunter2"))],
        "v1",
    )
    .await;
    h.wait_ready_reason("sec", "web", "Succeeded", "").await;
    let o = ctl(Some(&c), &["suspend", "web", "-n", "sec"]).await;
    code(&o, 0);
    h.wait_ready_reason("sec", "web", "Suspended", "").await;
    let v2 = h.artifact(
        "sec-v2.tar.gz",
        &[("s.yaml", &secret("sec", "db", "correct-horse"))],
    );
    h.external_artifact("sec", "web", &v2, "v2").await;
    let o = ctl(Some(&c), &["diff", "web", "-n", "sec"]).await;
    code(&o, 1);
    let out = stdout(&o);
    assert!(
        out.contains("configure Secret/db [sec]  (stage: config)\n"),
        "{out}"
    );
    assert!(
        out.contains("\n-  password: <-- value not shown (#1)\n"),
        "{out}"
    );
    assert!(
        out.contains("\n+  password: <-- value not shown (#2)\n"),
        "{out}"
    );
    assert!(
        !out.contains("hunter2") && !out.contains("correct-horse"),
        "{out}"
    );
    // Base64 of either value must not leak either.
    assert!(
        !out.contains("aHVudGVyMg") && !out.contains("Y29ycmVjdC1ob3Jz"),
        "{out}"
    );
    let o = ctl(Some(&c), &["diff", "web", "-n", "sec", "--show-secrets"]).await;
    code(&o, 1);
    assert!(
        stdout(&o).contains("password: aHVudGVyMg=="),
        "{}",
        stdout(&o)
    );

    // The kubectl plugin name changes how the help reads.
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("kubectl-stageset");
    std::fs::copy(BIN, &plugin).unwrap();
    let o = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&plugin)
            .arg("--help")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    code(&o, 0);
    assert!(
        stdout(&o).contains("Usage: kubectl stageset"),
        "{}",
        stdout(&o)
    );
    // An unknown context is a runtime error.
    let o = ctl(Some(&c), &["--context", "nope", "get"]).await;
    code(&o, 3);
    assert!(stderr(&o).starts_with("Error: "), "{}", stderr(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_stage_shows_in_tree_and_diff() {
    let h = Harness::start().await;
    let c = cluster(&h);
    h.namespace("rm").await;
    for name in ["a", "b"] {
        let published = h.artifact(
            &format!("rm-{name}.tar.gz"),
            &[("cm.yaml", &configmap("rm", &format!("{name}-cm"), name))],
        );
        h.external_artifact("rm", name, &published, "r1").await;
    }
    let spec = |stages: &[&str]| json!({"stages": stages.iter().map(|s| json!({"name": s, "sourceRef": {"name": s}})).collect::<Vec<_>>()});
    h.stageset("rm", "web", spec(&["a", "b"])).await;
    h.wait_ready_reason("rm", "web", "Succeeded", "").await;
    let o = ctl(Some(&c), &["suspend", "web", "-n", "rm"]).await;
    code(&o, 0);
    h.wait_ready_reason("rm", "web", "Suspended", "").await;
    let mut suspended = spec(&["a"]);
    suspended["suspend"] = json!(true);
    h.stageset("rm", "web", suspended).await;

    let o = ctl(Some(&c), &["tree", "web", "-n", "rm"]).await;
    code(&o, 0);
    let out = stdout(&o);
    assert!(
        out.ends_with("└── stage b  (removed from the spec)\n    └── ConfigMap/rm/b-cm\n"),
        "{out}"
    );
    let o = ctl(Some(&c), &["get", "-n", "rm"]).await;
    code(&o, 0);
    assert_eq!(
        words(stdout(&o).lines().nth(1).unwrap()),
        ["web", "False", "Suspended", "1/1", "-", "-"]
    );
    // The removed stage's objects would be deleted, also when only `a` is diffed.
    for args in [
        vec!["diff", "web", "-n", "rm"],
        vec!["diff", "web", "-n", "rm", "--stage", "a"],
    ] {
        let o = ctl(Some(&c), &args).await;
        code(&o, 1);
        let out = stdout(&o);
        assert!(
            out.starts_with("delete ConfigMap/b-cm [rm]  (stage: b)\n--- live\n+++ merged\n"),
            "{out}"
        );
        assert!(out.contains("\n-  value: b\n"), "{out}");
        assert!(
            out.ends_with(
                "Summary: 0 to create, 0 to configure, 1 to delete, 1 unchanged, 0 skipped\n"
            ),
            "{out}"
        );
    }
    // A client-side comparison sees server defaults as changes; no prune preview.
    let o = ctl(
        Some(&c),
        &[
            "diff",
            "web",
            "-n",
            "rm",
            "--server-side=false",
            "--prune=false",
            "--exit-code=false",
        ],
    )
    .await;
    code(&o, 0);
    assert!(!stdout(&o).contains("delete "), "{}", stdout(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_tenant_dry_runs_and_applies_as_the_service_account() {
    let h = Harness::start_with(HarnessOptions {
        start_controller: false,
        ..HarnessOptions::default()
    })
    .await;
    let c = cluster(&h);
    h.namespace("team").await;
    h.sim
        .load(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "deployer", "namespace": "team"}}))
        .unwrap();
    let published = h.artifact(
        "team.tar.gz",
        &[("cm.yaml", &configmap("team", "allowed", "x"))],
    );
    h.external_artifact("team", "web", &published, "r1").await;
    h.stageset(
        "team",
        "web",
        json!({"serviceAccountName": "deployer", "stages": [{"name": "config", "sourceRef": {"name": "web"}}]}),
    )
    .await;
    // As you (the simulator's admin) the dry run works; the deployer may do nothing yet.
    let o = ctl(Some(&c), &["diff", "web", "-n", "team"]).await;
    code(&o, 1);
    let o = ctl(Some(&c), &["diff", "web", "-n", "team", "--as-tenant"]).await;
    code(&o, 3);
    let err = stderr(&o);
    assert!(
        err.starts_with("Error: server-side dry run of ConfigMap/team/allowed"),
        "{err}"
    );
    assert!(err.contains("system:serviceaccount:team:deployer"), "{err}");
    let o = ctl(Some(&c), &["apply", "web", "-n", "team", "--as-tenant"]).await;
    code(&o, 3);
    assert!(
        h.get_opt("v1", "ConfigMap", Some("team"), "allowed")
            .await
            .is_none()
    );
    // Granted ConfigMaps, the deployer can.
    for obj in [
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "deployer", "namespace": "team"},
               "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch", "create", "patch", "update", "delete"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "deployer", "namespace": "team"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "deployer"},
               "subjects": [{"kind": "ServiceAccount", "name": "deployer", "namespace": "team"}]}),
    ] {
        h.sim.load(obj).unwrap();
    }
    let o = ctl(Some(&c), &["diff", "web", "-n", "team", "--as-tenant"]).await;
    code(&o, 1);
    let o = ctl(Some(&c), &["apply", "web", "-n", "team", "--as-tenant"]).await;
    code(&o, 0);
    assert!(
        h.get_opt("v1", "ConfigMap", Some("team"), "allowed")
            .await
            .is_some()
    );
    // A ServiceAccount that does not exist is an error, not a silent fallback.
    h.stageset(
        "team",
        "web",
        json!({"serviceAccountName": "ghost", "stages": [{"name": "config", "sourceRef": {"name": "web"}}]}),
    )
    .await;
    let o = ctl(Some(&c), &["diff", "web", "-n", "team", "--as-tenant"]).await;
    code(&o, 3);
    assert!(
        stderr(&o).starts_with("Error: --as-tenant: "),
        "{}",
        stderr(&o)
    );
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
}

/// SOPS files decrypted with the age key of `spec.decryption`, read as the
/// caller; encrypted with the real `sops` (skipped when it is not installed,
/// unless STAGESET_REQUIRE_TOOLS=1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sops_files_are_decrypted_with_the_stagesets_key() {
    if !(on_path("sops") && on_path("age-keygen")) {
        assert!(
            std::env::var("STAGESET_REQUIRE_TOOLS").as_deref() != Ok("1"),
            "STAGESET_REQUIRE_TOOLS=1, but sops or age-keygen is missing"
        );
        eprintln!("skipped: stagesetctl SOPS test (sops or age-keygen not installed)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.agekey");
    let keygen = std::process::Command::new("age-keygen")
        .arg("-o")
        .arg(&key)
        .output()
        .unwrap();
    assert!(keygen.status.success());
    let recipient = std::process::Command::new("age-keygen")
        .arg("-y")
        .arg(&key)
        .output()
        .unwrap();
    let recipient = String::from_utf8(recipient.stdout)
        .unwrap()
        .trim()
        .to_string();
    std::fs::write(
        dir.path().join("secret.yaml"),
        secret("enc", "db", "s3cr3t-value"),
    )
    .unwrap();
    let encrypted = std::process::Command::new("sops")
        .current_dir(dir.path())
        .env_remove("SOPS_AGE_KEY")
        .env_remove("SOPS_AGE_KEY_FILE")
        .args([
            "--encrypt",
            "--age",
            &recipient,
            "--encrypted-regex",
            "^(data|stringData)$",
            "secret.yaml",
        ])
        .output()
        .unwrap();
    assert!(
        encrypted.status.success(),
        "{}",
        String::from_utf8_lossy(&encrypted.stderr)
    );
    let encrypted = String::from_utf8(encrypted.stdout).unwrap();
    assert!(encrypted.contains("ENC[AES256_GCM,"));

    let h = Harness::start_with(HarnessOptions {
        start_controller: false,
        ..HarnessOptions::default()
    })
    .await;
    let c = cluster(&h);
    h.namespace("enc").await;
    use base64::Engine;
    let key_text = std::fs::read_to_string(&key).unwrap();
    h.sim
        .load(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sops-age", "namespace": "enc"},
            "data": {"identity.agekey": base64::engine::general_purpose::STANDARD.encode(key_text)}}))
        .unwrap();
    let published = h.artifact("enc.tar.gz", &[("secret.yaml", &encrypted)]);
    h.external_artifact("enc", "web", &published, "r1").await;
    let spec = |decryption: Value| json!({"decryption": decryption, "stages": [{"name": "config", "sourceRef": {"name": "web"}}]});
    h.stageset(
        "enc",
        "web",
        spec(json!({"provider": "sops", "secretRef": {"name": "sops-age"}})),
    )
    .await;
    let o = ctl(Some(&c), &["build", "web", "-n", "enc"]).await;
    code(&o, 0);
    let out = stdout(&o);
    assert!(out.contains("password: <-- value not shown (#1)"), "{out}");
    assert!(!out.contains("ENC[") && !out.contains("sops:"), "{out}");
    let o = ctl(Some(&c), &["build", "web", "-n", "enc", "--show-secrets"]).await;
    code(&o, 0);
    assert!(
        stdout(&o).contains("password: s3cr3t-value"),
        "{}",
        stdout(&o)
    );
    // Without decryption configured: an error, never ciphertext as plain text.
    h.stageset("enc", "web", spec(json!(null))).await;
    let o = ctl(Some(&c), &["build", "web", "-n", "enc"]).await;
    code(&o, 3);
    assert!(stderr(&o).contains("SOPS-encrypted"), "{}", stderr(&o));
    assert!(stdout(&o).is_empty());
}

/// A controller in `entries` inventory mode stamps no ApplySet label; diff
/// and apply stamp what that controller stamps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_follows_the_controllers_inventory_mode() {
    let h = Harness::start_with(HarnessOptions {
        flags: vec!["--inventory-mode=entries".into()],
        ..HarnessOptions::default()
    })
    .await;
    let c = cluster(&h);
    h.namespace("entries").await;
    one_stage(
        &h,
        "entries",
        &[("a.yaml", &configmap("entries", "settings", "one"))],
        "v1",
    )
    .await;
    h.wait_ready_reason("entries", "web", "Succeeded", "").await;
    let cm = h
        .get_opt("v1", "ConfigMap", Some("entries"), "settings")
        .await
        .unwrap();
    assert!(
        !cm.metadata
            .labels
            .as_ref()
            .unwrap()
            .contains_key("applyset.kubernetes.io/part-of")
    );
    let o = ctl(Some(&c), &["diff", "web", "-n", "entries"]).await;
    code(&o, 0);
    assert_eq!(stdout(&o), "Summary: no changes\n");
    let o = ctl(Some(&c), &["apply", "web", "-n", "entries"]).await;
    code(&o, 0);
    assert!(
        stdout(&o).contains("  unchanged ConfigMap/entries/settings\n"),
        "{}",
        stdout(&o)
    );
}

fn del(name: &str) -> Value {
    json!({"delete": {"target": {"apiVersion": "v1", "kind": "ConfigMap", "name": name}}})
}

fn action(name: &str, scope: Option<&str>, target: &str) -> Value {
    let mut a = del(target);
    a["name"] = json!(name);
    if let Some(s) = scope {
        a["scope"] = json!(s);
    }
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_previews_versions_actions_migrations_and_prunes() {
    let h = Harness::start().await;
    let c = cluster(&h);
    h.namespace("plan").await;
    h.namespace("plan-empty").await;
    let v1 = h.artifact(
        "plan-v1.tar.gz",
        &[
            ("a.yaml", &configmap("plan", "settings", "one")),
            ("b.yaml", &configmap("plan", "extra", "x")),
        ],
    );
    h.external_artifact("plan", "web", &v1, "r1").await;
    let spec = |version: Value, suspend: bool| {
        json!({"suspend": suspend, "version": version,
            "migrations": [{"name": "m-1-0", "to": "1.0.0", "actions": [action("up", None, "m1")], "down": [action("down", None, "m1d")]},
                           {"name": "m-1-1", "to": "1.1.0", "actions": [action("up", None, "m2")], "down": [action("down", None, "m2d")]}],
            "stages": [{"name": "app", "sourceRef": {"name": "web"},
                "actions": {"pre": [action("seed", Some("Lifetime"), "f1"), action("bump", Some("Version"), "f2")],
                            "post": [action("notify", None, "f3")]}}]})
    };
    h.stageset("plan", "web", spec(json!({"value": "1.0.0"}), false))
        .await;
    h.wait_ready_reason("plan", "web", "Succeeded", "").await;

    // In sync: nothing would run.
    let o = ctl(Some(&c), &["plan", "web", "-n", "plan"]).await;
    code(&o, 0);
    assert_eq!(
        stdout(&o),
        "StageSet plan/web  (version 1.0.0 → 1.0.0)\n\
         stage app  (revision r1)\n  \
         pre seed SKIP (scope: Lifetime — completed)\n  \
         pre bump SKIP (scope: Version — already ran for version 1.0.0)\n  \
         post notify SKIP (scope: Revision — already ran at revision r1)\n"
    );

    // Suspended, then a new version and a new revision without `extra`.
    let o = ctl(Some(&c), &["suspend", "web", "-n", "plan"]).await;
    code(&o, 0);
    h.wait_ready_reason("plan", "web", "Suspended", "").await;
    h.stageset("plan", "web", spec(json!({"value": "1.1.0"}), true))
        .await;
    let v2 = h.artifact(
        "plan-v2.tar.gz",
        &[("a.yaml", &configmap("plan", "settings", "two"))],
    );
    h.external_artifact("plan", "web", &v2, "r2").await;
    let o = ctl(Some(&c), &["plan", "web", "-n", "plan"]).await;
    code(&o, 1);
    let out = stdout(&o);
    assert!(
        out.starts_with("StageSet plan/web  (version 1.0.0 → 1.1.0)\nstage app  (revision r2)\n"),
        "{out}"
    );
    assert!(
        out.contains("  pre bump WILL RUN (scope: Version — new version episode 1.0.0 → 1.1.0)\n"),
        "{out}"
    );
    assert!(
        out.contains("  post notify WILL RUN (scope: Revision — new revision)\n"),
        "{out}"
    );
    assert!(
        out.contains("  pre seed SKIP (scope: Lifetime — completed)\n"),
        "{out}"
    );
    assert!(out.contains("prunes:\n  app: ConfigMap/extra\n"), "{out}");

    // A downgrade previews its down steps; JSON carries the same report.
    h.stageset(
        "plan",
        "web",
        spec(json!({"value": "0.9.0", "allowDowngrade": true}), true),
    )
    .await;
    let o = ctl(Some(&c), &["plan", "web", "-n", "plan", "-o", "json"]).await;
    code(&o, 1);
    let reports: Value = serde_json::from_slice(&o.stdout).unwrap();
    let r = &reports[0];
    assert_eq!(r["namespace"], "plan");
    assert_eq!(
        r["version"],
        json!({"current": "1.0.0", "desired": "0.9.0", "downgrade": true})
    );
    assert_eq!(
        r["rollback"],
        json!([{"name": "m-1-0", "to": "1.0.0", "verbs": ["delete"], "irreversible": false}])
    );
    assert_eq!(r["wouldRun"], true);
    assert_eq!(
        r["prunes"][0],
        json!({"stage": "app", "kind": "ConfigMap", "name": "extra", "stateBearing": false})
    );
    // Without allowDowngrade the controller refuses it, and plan says so.
    h.stageset("plan", "web", spec(json!({"value": "0.9.0"}), true))
        .await;
    let o = ctl(Some(&c), &["plan", "web", "-n", "plan"]).await;
    code(&o, 1);
    assert!(
        stdout(&o).contains("note: the downgrade 1.0.0 → 0.9.0 is refused while spec.version.allowDowngrade is not true\n"),
        "{}",
        stdout(&o)
    );

    // Fan-out and usage.
    let o = ctl(Some(&c), &["plan", "-n", "plan-empty"]).await;
    code(&o, 0);
    assert_eq!(stderr(&o), "no StageSets matched\n");
    let o = ctl(Some(&c), &["plan", "-A", "-o", "yaml"]).await;
    code(&o, 1);
    let all: Value = serde_yaml_ng::from_slice(&o.stdout).unwrap();
    assert_eq!(all.as_array().unwrap().len(), 1);
    let o = ctl(Some(&c), &["plan", "web", "-A"]).await;
    code(&o, 2);
    let o = ctl(Some(&c), &["plan", "nope", "-n", "plan"]).await;
    code(&o, 3);
}

/// The desired version read from an artifact file or a rendered object,
/// before anything is deployed (adoption: Version actions are skipped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_resolves_the_version_from_the_render() {
    let h = Harness::start_with(HarnessOptions {
        start_controller: false,
        ..HarnessOptions::default()
    })
    .await;
    let c = cluster(&h);
    h.namespace("ver").await;
    let labelled = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\n  namespace: ver\n  labels:\n    app.kubernetes.io/version: 3.1.0\ndata:\n  k: v\n";
    let published = h.artifact(
        "ver.tar.gz",
        &[("VERSION", "2.0.0\n"), ("cm.yaml", labelled)],
    );
    h.external_artifact("ver", "web", &published, "r1").await;
    let spec = |version: Value| {
        json!({"version": version, "stages": [{"name": "app", "sourceRef": {"name": "web"},
            "actions": {"pre": [action("bump", Some("Version"), "f")]}}]})
    };
    h.stageset(
        "ver",
        "web",
        spec(json!({"fromArtifact": {"stage": "app", "path": "VERSION"}})),
    )
    .await;
    // Nothing would run: only Version actions, skipped on adoption (new
    // objects are diff's business, not plan's).
    let o = ctl(Some(&c), &["plan", "web", "-n", "ver"]).await;
    code(&o, 0);
    let out = stdout(&o);
    assert!(
        out.starts_with("StageSet ver/web  (version none → 2.0.0)\n"),
        "{out}"
    );
    assert!(
        out.contains("  pre bump SKIP (scope: Version — baseline on adoption)\n"),
        "{out}"
    );
    h.stageset(
        "ver",
        "web",
        spec(json!({"fromObject": {"kind": "ConfigMap", "name": "app"}})),
    )
    .await;
    let o = ctl(Some(&c), &["plan", "web", "-n", "ver", "-o", "json"]).await;
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r[0]["version"]["desired"], "3.1.0", "{r}");
    assert_eq!(r[0]["stages"][0]["actions"][0]["state"], "SKIP");
    assert_eq!(r[0]["wouldRun"], false);
    code(&o, 0);
    // A version that cannot be resolved is a note; the action would run.
    h.stageset(
        "ver",
        "web",
        spec(json!({"fromObject": {"kind": "ConfigMap", "name": "missing"}})),
    )
    .await;
    let o = ctl(Some(&c), &["plan", "web", "-n", "ver"]).await;
    code(&o, 1);
    let out = stdout(&o);
    assert!(
        out.contains("  pre bump WILL RUN (scope: Version — the desired version is unknown)\n"),
        "{out}"
    );
    assert!(
        out.contains(
            "note: desired version: stage \"app\" renders no ConfigMap named \"missing\"\n"
        ),
        "{out}"
    );
}
