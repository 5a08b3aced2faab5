//! The Helm chart (charts/stageset-controller) through the real Helm engine:
//! PyPI helm-sdkpy (Helm v4 as a library) driven by tests/helm/driver.py,
//! against kube-sim.
//!
//! - lint with the default values and every documented Helm values file, and
//!   render each into a scratch kube-sim (the API server checks the objects);
//!   the render failures the chart must keep name the offending value;
//! - install the documented variants and read the objects back;
//! - run the controller binary exactly as the rendered Deployment runs it, as
//!   the chart's ServiceAccount with nothing but the chart's RBAC, and deliver
//!   a tenant's StageSet through the chart's webhook.
//!
//! Needs python3 with helm-sdkpy and PyYAML (scripts/test.sh installs them).

#![recursion_limit = "256"]

#[path = "support/corpus.rs"]
mod corpus;
mod support;

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use base64::Engine as _;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::Scope;
use kube_sim::{KubeSim, Options, SimConfig, UserSpec, read_manifests};
use serde_json::{Value, json};
use stageset_controller::api::StageSet;
use stageset_controller::dev::artifacts::{ArtifactServer, tar_gz};
use stageset_controller::dev::{flux, publish_external_artifact};

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/stageset-controller");
const DRIVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/helm/driver.py");
/// Minimal stand-ins for the third-party CRDs the chart can render objects of
/// (Prometheus operator, cert-manager, Cilium, Calico, network-policy-api,
/// Istio, Linkerd).
const TEST_CRDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/helm/crds");
/// The release name of every test but the sharded ones: the name the
/// production guide installs under, so objects get the spec's names
/// (operations.md §2.1).
const RELEASE: &str = "stageset-controller";
const DEADLINE: Duration = Duration::from_secs(120);
/// The identity the chart's ServiceAccount has in the cluster.
const CONTROLLER_USER: &str = "system:serviceaccount:stageset-system:stageset-controller";

// --- Helm -----------------------------------------------------------------------

/// Fails (never skips) when the Helm engine is not installed.
fn require_helm() {
    static CHECK: OnceLock<Result<(), String>> = OnceLock::new();
    let check = CHECK.get_or_init(|| {
        match Command::new("python3")
            .args(["-c", "import helm_sdkpy, yaml"])
            .output()
        {
            Err(e) => Err(format!("python3 cannot be run: {e}")),
            Ok(o) if !o.status.success() => {
                Err(String::from_utf8_lossy(&o.stderr).trim().to_string())
            }
            Ok(_) => Ok(()),
        }
    });
    if let Err(e) = check {
        panic!(
            "the Helm tests need python3 with helm-sdkpy (the Helm engine) and PyYAML; \
             run scripts/test.sh, which installs them.\n{e}"
        );
    }
}

/// Runs tests/helm/driver.py; `Ok` is its JSON output, `Err` its stderr.
fn helm(args: &[String]) -> Result<Value, String> {
    require_helm();
    let out = Command::new("python3")
        .arg(DRIVER)
        .args(args)
        .env_remove("KUBECONFIG")
        .env_remove("HELM_DRIVER")
        .output()
        .expect("python3 runs");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    if !out.status.success() {
        return Err(stderr);
    }
    serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "driver output is not JSON ({e}): {}\n{stderr}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

async fn helm_async(args: Vec<String>) -> Result<Value, String> {
    tokio::task::spawn_blocking(move || helm(&args))
        .await
        .expect("driver thread")
}

fn value_args(files: &[PathBuf], set_json: &[String]) -> Vec<String> {
    let mut args = Vec::new();
    for f in files {
        args.push("-f".to_string());
        args.push(f.display().to_string());
    }
    for s in set_json {
        args.push("--set-json".to_string());
        args.push(s.clone());
    }
    args
}

fn lint(files: &[PathBuf], set_json: &[String]) -> Result<Value, String> {
    let mut args = vec!["lint".to_string(), CHART.to_string()];
    args.extend(value_args(files, set_json));
    helm(&args)
}

/// `helm template` of release `RELEASE` through a scratch API server
/// (helm-sdkpy has no client-only render, see driver.py): every rendered
/// object, hooks included.
async fn template(
    sim: &KubeSim,
    dir: &Path,
    ns: &str,
    files: &[PathBuf],
    set_json: &[String],
) -> Result<Vec<Value>, String> {
    template_as(sim, dir, ns, RELEASE, files, set_json).await
}

/// `template` under another release name.
async fn template_as(
    sim: &KubeSim,
    dir: &Path,
    ns: &str,
    release: &str,
    files: &[PathBuf],
    set_json: &[String],
) -> Result<Vec<Value>, String> {
    let kubeconfig = admin_kubeconfig(sim, dir);
    let mut args = vec![
        "template".to_string(),
        CHART.to_string(),
        "--namespace".into(),
        ns.into(),
        "--kubeconfig".into(),
        kubeconfig.display().to_string(),
        "--release".into(),
        release.into(),
    ];
    args.extend(value_args(files, set_json));
    helm_async(args).await.map(objects)
}

/// `helm install` (no wait) of release `RELEASE` as the admin; the release's
/// objects.
async fn install(
    sim: &KubeSim,
    dir: &Path,
    ns: &str,
    files: &[PathBuf],
    set_json: &[String],
) -> Vec<Value> {
    install_as(sim, dir, ns, RELEASE, files, set_json)
        .await
        .unwrap_or_else(|e| panic!("helm install failed:\n{e}"))
}

/// `install` under another release name; `Err` is Helm's message.
async fn install_as(
    sim: &KubeSim,
    dir: &Path,
    ns: &str,
    release: &str,
    files: &[PathBuf],
    set_json: &[String],
) -> Result<Vec<Value>, String> {
    let kubeconfig = admin_kubeconfig(sim, dir);
    let mut args = vec![
        "install".to_string(),
        CHART.to_string(),
        "--kubeconfig".into(),
        kubeconfig.display().to_string(),
        "--namespace".into(),
        ns.into(),
        "--release".into(),
        release.into(),
    ];
    args.extend(value_args(files, set_json));
    helm_async(args).await.map(objects)
}

/// The base name of a release's objects (DECISIONS 22, Helm's fullname rule):
/// the release name when it contains the chart name, else
/// `<release>-stageset-controller`. Test release names are short enough to
/// need no shortening.
fn base_name(release: &str) -> String {
    let name = if release.contains("stageset-controller") {
        release.to_string()
    } else {
        format!("{release}-stageset-controller")
    };
    assert!(name.len() <= 44, "{name} would be shortened by the chart");
    name
}

/// A fresh kube-sim with the chart installed by real Helm, every rendered
/// object checked as accepted (see `check_rendered`).
async fn fresh_install(
    dir: &Path,
    ns: &str,
    files: &[PathBuf],
    set_json: &[String],
) -> (KubeSim, kube::Client, Vec<Value>) {
    let sim = scratch_sim(Vec::new(), HashMap::new());
    let client = admin(&sim).await;
    let release = install(&sim, dir, ns, files, set_json).await;
    check_rendered(&client, ns, RELEASE, &release)
        .await
        .unwrap();
    (sim, client, release)
}

fn objects(v: Value) -> Vec<Value> {
    match v {
        Value::Array(items) => items,
        other => panic!("the driver printed no array: {other}"),
    }
}

fn admin_kubeconfig(sim: &KubeSim, dir: &Path) -> PathBuf {
    let path = dir.join(format!("admin-{}.kubeconfig", sim.addr().port()));
    sim.write_kubeconfig(&path).expect("kubeconfig written");
    path
}

/// The documented Helm values files: 010-045 `-helm-` files of the upstream
/// corpus (none when the reference tree is not present).
fn corpus_values_files() -> Vec<PathBuf> {
    let Some(reference) = corpus::reference("the documented upstream Helm values files") else {
        return Vec::new();
    };
    let dir = reference.join("corpus/integrations");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            let number = name.get(..3).and_then(|n| n.parse::<u32>().ok());
            name.len() > 3
                && name.as_bytes()[..3].iter().all(u8::is_ascii_digit)
                && number.is_some_and(|n| (10..=45).contains(&n))
                && name[3..].starts_with("-helm-")
                && name.ends_with(".yaml")
        })
        .collect();
    files.sort();
    assert_eq!(files.len(), 36, "documented Helm values files: {files:?}");
    files
}

// --- kube-sim -------------------------------------------------------------------

/// A kube-sim serving the third-party CRDs and the namespaces the documented
/// values name (watchNamespaces team-a, team-b).
fn scratch_sim(users: Vec<UserSpec>, service_map: HashMap<String, String>) -> KubeSim {
    let mut load = read_manifests(Path::new(TEST_CRDS)).expect("test CRDs");
    for ns in ["team-a", "team-b"] {
        load.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
    }
    KubeSim::start(Options {
        users,
        load,
        config: SimConfig {
            service_map,
            ..SimConfig::default()
        },
        ..Options::default()
    })
    .expect("kube-sim starts")
}

async fn admin(sim: &KubeSim) -> kube::Client {
    kube::Client::try_from(support::kube_config(sim).await).unwrap()
}

async fn dynamic(
    client: &kube::Client,
    api_version: &str,
    kind: &str,
    namespace: Option<&str>,
) -> (Api<DynamicObject>, Scope) {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let (ar, caps) = kube::discovery::pinned_kind(client, &gvk)
        .await
        .unwrap_or_else(|e| panic!("{api_version} {kind} is not served: {e}"));
    let api = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    (api, caps.scope)
}

async fn get(
    client: &kube::Client,
    api_version: &str,
    kind: &str,
    namespace: Option<&str>,
    name: &str,
) -> Option<Value> {
    let (api, _) = dynamic(client, api_version, kind, namespace).await;
    api.get_opt(name)
        .await
        .unwrap()
        .map(|o| serde_json::to_value(o).unwrap())
}

async fn must_get(
    client: &kube::Client,
    api_version: &str,
    kind: &str,
    namespace: Option<&str>,
    name: &str,
) -> Value {
    get(client, api_version, kind, namespace, name)
        .await
        .unwrap_or_else(|| panic!("{kind} {namespace:?}/{name} was not installed"))
}

async fn list(
    client: &kube::Client,
    api_version: &str,
    kind: &str,
    namespace: Option<&str>,
) -> Vec<Value> {
    let (api, _) = dynamic(client, api_version, kind, namespace).await;
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|o| serde_json::to_value(o).unwrap())
        .collect()
}

fn is_hook(o: &Value) -> bool {
    o.pointer("/metadata/annotations/helm.sh~1hook").is_some()
}

fn name_of(o: &Value) -> &str {
    o["metadata"]["name"].as_str().unwrap_or("")
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objects
        .iter()
        .find(|o| o["kind"] == kind && name_of(o) == name)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn instance_of(o: &Value) -> &str {
    o.pointer("/metadata/labels/app.kubernetes.io~1instance")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Every rendered object of `release` is well-formed and labelled with the
/// release, and every non-hook object is what the API server now holds, still
/// labelled with the release (hooks run on delete, so they are not created).
/// Cluster-scoped objects other than the CRDs carry the release's base name and
/// its namespace.
async fn check_rendered(
    client: &kube::Client,
    ns: &str,
    release: &str,
    rendered: &[Value],
) -> Result<(), String> {
    let base = base_name(release);
    let mut seen = BTreeSet::new();
    for o in rendered {
        let (Some(api_version), Some(kind)) = (o["apiVersion"].as_str(), o["kind"].as_str()) else {
            return Err(format!("object without apiVersion/kind: {o}"));
        };
        let name = name_of(o);
        if name.is_empty() {
            return Err(format!("{kind} without a name"));
        }
        if instance_of(o) != release {
            return Err(format!(
                "{kind} {name} is labelled app.kubernetes.io/instance={:?}, not {release}",
                instance_of(o)
            ));
        }
        let object_ns = o["metadata"]["namespace"].as_str();
        if !seen.insert((api_version.to_string(), kind, object_ns, name)) {
            return Err(format!("{kind} {name} rendered twice"));
        }
        if is_hook(o) {
            continue;
        }
        let (_, scope) = dynamic(client, api_version, kind, None).await;
        match scope {
            Scope::Namespaced => {
                let Some(object_ns) = object_ns else {
                    return Err(format!(
                        "namespaced {kind} {name} has no metadata.namespace"
                    ));
                };
                let Some(stored) = get(client, api_version, kind, Some(object_ns), name).await
                else {
                    return Err(format!("{kind} {object_ns}/{name} was not created"));
                };
                if instance_of(&stored) != release {
                    return Err(format!(
                        "{kind} {object_ns}/{name} belongs to {:?}, not {release}",
                        instance_of(&stored)
                    ));
                }
            }
            Scope::Cluster => {
                if object_ns.is_some() {
                    return Err(format!("cluster-scoped {kind} {name} has a namespace"));
                }
                if kind != "CustomResourceDefinition"
                    && !(name.starts_with(&format!("{base}-")) && name.contains(&format!("-{ns}")))
                {
                    return Err(format!(
                        "cluster-scoped {kind} {name} does not carry the base name {base} and the release namespace {ns}"
                    ));
                }
                let Some(stored) = get(client, api_version, kind, None, name).await else {
                    return Err(format!("{kind} {name} was not created"));
                };
                if instance_of(&stored) != release {
                    return Err(format!(
                        "{kind} {name} belongs to {:?}, not {release}",
                        instance_of(&stored)
                    ));
                }
            }
        }
    }
    Ok(())
}

// --- a: lint, template, render failures ------------------------------------------

#[test]
fn the_chart_lints_with_default_values_and_every_documented_values_file() {
    let started = Instant::now();
    let mut sets: Vec<(String, Vec<PathBuf>)> = vec![("default values".into(), Vec::new())];
    for file in corpus_values_files() {
        sets.push((file.display().to_string(), vec![file]));
    }
    let count = sets.len();
    let failures: Vec<String> = std::thread::scope(|scope| {
        let workers: Vec<_> = sets
            .chunks(count.div_ceil(2))
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .filter_map(|(name, layers)| {
                            lint(layers, &[]).err().map(|e| format!("{name}:\n{e}"))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    eprintln!("linted {count} value sets in {:?}", started.elapsed());
    assert!(
        failures.is_empty(),
        "helm lint failed for:\n{}",
        failures.join("\n")
    );
}

/// Documented values files whose render must fail on a real API server, with
/// the reason. Anything listed here is a bug in the documentation, not the chart.
const KNOWN_BAD_DOCS: &[(&str, &str)] = &[
    // The Linkerd AuthorizationPolicy kind is served only as
    // policy.linkerd.io/v1alpha1 (v1beta3 exists for Server and HTTPRoute),
    // so a cluster rejects the document the production guide passes through
    // serviceMesh.linkerd.authorizations.
    (
        "045-helm-servicemesh-linkerd.yaml",
        "no matches for kind \"AuthorizationPolicy\" in version \"policy.linkerd.io/v1beta3\"",
    ),
];

/// Renders one value set into a fresh API server (the chart's CRDs and
/// cluster-scoped objects belong to one release) and checks the objects.
async fn render_and_check(name: &str, layers: &[PathBuf], dir: &Path) -> Result<(), String> {
    let sim = scratch_sim(Vec::new(), HashMap::new());
    let client = admin(&sim).await;
    let rendered = template(&sim, dir, "stageset-system", layers, &[]).await;
    let known_bad = KNOWN_BAD_DOCS.iter().find(|(f, _)| *f == name);
    match (rendered, known_bad) {
        (Ok(objs), None) => {
            if objs.iter().all(|o| o["kind"] != "Deployment") {
                return Err(format!("{name}: no Deployment rendered"));
            }
            check_rendered(&client, "stageset-system", RELEASE, &objs)
                .await
                .map_err(|e| format!("{name}: {e}"))
        }
        (Err(e), None) => Err(format!("{name}: {e}")),
        (Err(e), Some((_, why))) if e.contains(why) => {
            eprintln!("{name}: fails as listed in KNOWN_BAD_DOCS");
            Ok(())
        }
        (Err(e), Some(_)) => Err(format!(
            "{name} failed differently than KNOWN_BAD_DOCS says: {e}"
        )),
        (Ok(_), Some(_)) => Err(format!("{name} renders now: remove it from KNOWN_BAD_DOCS")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_values_file_renders_objects_an_api_server_accepts() {
    use futures::StreamExt as _;
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut sets: Vec<(String, Vec<PathBuf>)> = vec![("default values".into(), Vec::new())];
    for file in corpus_values_files() {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        sets.push((name, vec![file]));
    }
    let count = sets.len();
    let failures: Vec<String> = futures::stream::iter(sets)
        .map(|(name, layers)| {
            let dir = dir.path().to_path_buf();
            async move { render_and_check(&name, &layers, &dir).await }
        })
        .buffer_unordered(2)
        .filter_map(|r| async move { r.err() })
        .collect()
        .await;
    eprintln!("rendered {count} value sets in {:?}", started.elapsed());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_value_combinations_fail_the_render_naming_the_value() {
    let dir = tempfile::tempdir().unwrap();
    let sim = scratch_sim(Vec::new(), HashMap::new());
    // Rendered for real: `helm lint` cannot catch these, Helm's engine only
    // logs a template's `fail` in lint mode (pkg/engine). Only schema
    // violations fail lint. (values, what the message must name)
    let cases: &[(&[&str], &[&str])] = &[
        (
            &[
                r#"rollbackStore.backend="s3""#,
                r#"rollbackStore.s3.bucket="b""#,
            ],
            &["rollbackStore.s3.endpoint"],
        ),
        (&[r#"webhook.certMode="bogus""#], &["certMode"]),
        // The emptyDirs (/tmp 16Mi, the self-signed cert dir 1Mi) must fit in
        // the ephemeral storage limit (operations.md D-07: keep the rule).
        (
            &[r#"resources.ephemeralStorage="17Mi""#],
            &[
                "resources.ephemeralStorage (17Mi)",
                "tmpSizeLimit (16Mi)",
                "1Mi",
            ],
        ),
        (
            &[
                r#"rollbackStore.backend="pvc""#,
                r#"rollbackStore.s3.bucket="b""#,
            ],
            &["rollbackStore.s3", "rollbackStore.backend"],
        ),
    ];
    for (set, named) in cases {
        let set: Vec<String> = set.iter().map(|s| s.to_string()).collect();
        let err = match template(&sim, dir.path(), "stageset-system", &[], &set).await {
            Ok(objs) => panic!("{set:?} rendered {} objects", objs.len()),
            Err(e) => e,
        };
        for n in *named {
            assert!(
                err.contains(n),
                "{set:?}: the error does not name {n}: {err}"
            );
        }
    }
    // Nothing was installed by the failed renders.
    let client = admin(&sim).await;
    assert!(
        list(&client, "apps/v1", "Deployment", Some("stageset-system"))
            .await
            .is_empty()
    );
    // SSE-KMS without a key id is the bucket's default key (operations.md
    // OPS-47): rendered (through the scratch API server), with no key flag.
    let objs = template(
        &sim,
        dir.path(),
        "stageset-system",
        &[],
        &[
            r#"rollbackStore.backend="s3""#.into(),
            r#"rollbackStore.s3.endpoint="s3.eu-west-1.amazonaws.com""#.into(),
            r#"rollbackStore.s3.bucket="b""#.into(),
            r#"rollbackStore.s3.sse="kms""#.into(),
        ],
    )
    .await
    .expect("SSE-KMS with the bucket's default key renders");
    let d = objs
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .expect("a Deployment");
    let args: Vec<&str> = container(d)["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert!(args.contains(&"--rollback-store-s3-sse=kms"), "{args:?}");
    assert!(
        !args
            .iter()
            .any(|a| a.starts_with("--rollback-store-s3-sse-kms-key")),
        "{args:?}"
    );
}

// --- b: install variants -----------------------------------------------------------

fn container(deployment: &Value) -> &Value {
    deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "manager")
        .expect("container manager")
}

fn args(deployment: &Value) -> Vec<String> {
    strings(&container(deployment)["args"])
}

fn assert_args(deployment: &Value, expected: &[String]) {
    let args = args(deployment);
    for e in expected {
        assert!(args.contains(e), "{e} missing from the args {args:#?}");
    }
}

/// Rules of the Roles and ClusterRoles an install created (hooks aside).
fn rules(objects: &[Value]) -> Vec<(String, Value)> {
    objects
        .iter()
        .filter(|o| (o["kind"] == "ClusterRole" || o["kind"] == "Role") && !is_hook(o))
        .flat_map(|o| {
            o["rules"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|r| (format!("{} {}", o["kind"], name_of(o)), r))
        })
        .collect()
}

fn grants(objects: &[Value], group: &str, resource: &str, verb: &str) -> Vec<(String, Value)> {
    rules(objects)
        .into_iter()
        .filter(|(_, r)| {
            strings(&r["apiGroups"])
                .iter()
                .any(|g| g == group || g == "*")
                && strings(&r["resources"])
                    .iter()
                    .any(|x| x == resource || x == "*")
                && strings(&r["verbs"]).iter().any(|v| v == verb || v == "*")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_install() {
    let ns = "stageset-system";
    let cluster = format!("stageset-controller-{ns}");
    let dir = tempfile::tempdir().unwrap();
    let (_sim, client, release) = fresh_install(dir.path(), ns, &[], &[]).await;

    let d = must_get(
        &client,
        "apps/v1",
        "Deployment",
        Some(ns),
        "stageset-controller",
    )
    .await;
    assert_args(
        &d,
        &[
            "--metrics-bind-address=:8080".into(),
            "--health-probe-bind-address=:8081".into(),
            "--leader-elect".into(),
            "--enable-webhook=true".into(),
            "--webhook-cert-mode=self-signed".into(),
            format!("--webhook-validating-config-name={cluster}"),
            // Events reach a default Flux install (docs/decisions.md 17).
            "--events-addr=http://notification-controller.flux-system.svc.cluster.local./".into(),
            // Flux's client rate limits (DECISIONS 23).
            "--kube-api-qps=50".into(),
            "--kube-api-burst=300".into(),
            // Parallel writes within a kind (DECISIONS 21).
            "--apply-concurrency=16".into(),
        ],
    );
    // Not a shard: every StageSet is reconciled and the Lease keeps its name.
    assert!(
        !args(&d)
            .iter()
            .any(|a| a.starts_with("--watch-label-selector")),
        "{:#?}",
        args(&d)
    );
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "stageset-controller");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(pod["terminationGracePeriodSeconds"], 60);
    let c = container(&d);
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["runAsUser"], 65532);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    // The production guide's defaults, requests = limits (docs/decisions.md 17).
    assert_eq!(
        c["resources"]["requests"],
        json!({"cpu": "50m", "memory": "256Mi", "ephemeral-storage": "32Mi"})
    );
    assert_eq!(c["resources"]["requests"], c["resources"]["limits"]);
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    // The emptyDirs fit in the 32Mi ephemeral storage limit with room for logs.
    for (path, volume, size) in [
        ("/tmp", "tmp", "16Mi"),
        ("/etc/webhook/certs", "webhook-certs", "1Mi"),
    ] {
        let mount = c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["mountPath"] == path)
            .unwrap_or_else(|| panic!("nothing mounted at {path}"));
        assert_eq!(mount["name"], volume);
        let v = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == volume)
            .unwrap_or_else(|| panic!("no volume {volume}"));
        assert_eq!(v["emptyDir"]["sizeLimit"], size, "{volume}: {v}");
    }
    assert!(
        list(
            &client,
            "autoscaling/v2",
            "HorizontalPodAutoscaler",
            Some(ns)
        )
        .await
        .is_empty(),
        "no HPA at one replica"
    );
    assert!(
        list(&client, "policy/v1", "PodDisruptionBudget", Some(ns))
            .await
            .is_empty(),
        "no PDB at one replica"
    );

    // RBAC as installed.
    let mut installed = Vec::new();
    for o in release.iter().filter(|o| !is_hook(o)) {
        let kind = o["kind"].as_str().unwrap();
        if kind == "ClusterRole" || kind == "Role" {
            let object_ns = o["metadata"]["namespace"].as_str();
            installed.push(
                must_get(
                    &client,
                    "rbac.authorization.k8s.io/v1",
                    kind,
                    object_ns,
                    name_of(o),
                )
                .await,
            );
        }
    }
    let tenant_role = find(&installed, "ClusterRole", &cluster).expect("tenant ClusterRole");
    let sa_impersonation = grants(
        std::slice::from_ref(tenant_role),
        "",
        "serviceaccounts",
        "impersonate",
    );
    assert!(
        !sa_impersonation.is_empty(),
        "{cluster} does not grant impersonate on serviceaccounts"
    );
    let group_impersonation = grants(&installed, "", "groups", "impersonate");
    assert_eq!(group_impersonation.len(), 1, "{group_impersonation:#?}");
    let names: BTreeSet<String> = strings(&group_impersonation[0].1["resourceNames"])
        .into_iter()
        .collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "system:serviceaccounts".to_string(),
            "system:authenticated".to_string()
        ]),
        "group impersonation must be limited to the tenant groups"
    );
    for (role, rule) in rules(&installed) {
        let groups = strings(&rule["apiGroups"]);
        let resources = strings(&rule["resources"]);
        let verbs = strings(&rule["verbs"]);
        for r in &resources {
            assert!(
                !matches!(r.as_str(), "secrets" | "configmaps" | "*"),
                "{role} grants {verbs:?} on {r}"
            );
        }
        let writes: Vec<&String> = verbs
            .iter()
            .filter(|v| {
                matches!(
                    v.as_str(),
                    "create" | "update" | "patch" | "delete" | "deletecollection" | "*"
                )
            })
            .collect();
        if writes.is_empty() {
            continue;
        }
        let own = groups.iter().all(|g| g == "stages.metio.wtf");
        let events = resources.iter().all(|r| r == "events")
            && groups.iter().all(|g| g.is_empty() || g == "events.k8s.io");
        let leases = resources.iter().all(|r| r == "leases")
            && groups.iter().all(|g| g == "coordination.k8s.io");
        // The self-signed CA publishes itself in its own webhook configuration.
        let own_vwc = resources == ["validatingwebhookconfigurations"]
            && strings(&rule["resourceNames"]) == [cluster.clone()]
            && writes.iter().all(|v| *v == "update");
        assert!(
            own || events || leases || own_vwc,
            "{role} grants {writes:?} on {groups:?}/{resources:?}"
        );
    }

    let vwc = must_get(
        &client,
        "admissionregistration.k8s.io/v1",
        "ValidatingWebhookConfiguration",
        None,
        &cluster,
    )
    .await;
    let webhooks = vwc["webhooks"].as_array().unwrap();
    let mut resources = BTreeSet::new();
    for w in webhooks {
        let svc = &w["clientConfig"]["service"];
        assert_eq!(svc["name"], "stageset-controller-webhook");
        assert_eq!(svc["namespace"], ns);
        assert_eq!(svc["port"], 443);
        for r in w["rules"].as_array().unwrap() {
            resources.extend(strings(&r["resources"]));
        }
    }
    assert_eq!(webhooks.len(), 2, "{vwc}");
    assert_eq!(
        resources,
        BTreeSet::from([
            "stagesets".to_string(),
            "imageverificationpolicies".to_string()
        ])
    );
    let svc = must_get(
        &client,
        "v1",
        "Service",
        Some(ns),
        "stageset-controller-webhook",
    )
    .await;
    let port = &svc["spec"]["ports"][0];
    assert_eq!(port["port"], 443);
    assert_eq!(port["targetPort"], "webhook");
    assert!(
        c["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "webhook" && p["containerPort"] == 9443),
        "the Service's targetPort names the container's webhook port"
    );
}

/// The CA the chart bootstraps in cert-manager mode when no issuer is named
/// (cert-manager's SelfSigned Issuer → CA Certificate → CA Issuer), as
/// installed in `ns`.
async fn assert_chart_ca(client: &kube::Client, ns: &str) {
    let selfsigned = must_get(
        client,
        "cert-manager.io/v1",
        "Issuer",
        Some(ns),
        "stageset-controller-webhook-selfsigned",
    )
    .await;
    assert_eq!(selfsigned["spec"], json!({"selfSigned": {}}));
    let ca = must_get(
        client,
        "cert-manager.io/v1",
        "Certificate",
        Some(ns),
        "stageset-controller-webhook-ca",
    )
    .await;
    assert_eq!(ca["spec"]["isCA"], true);
    assert_eq!(ca["spec"]["secretName"], "stageset-controller-webhook-ca");
    assert_eq!(
        ca["spec"]["issuerRef"],
        json!({"kind": "Issuer", "name": "stageset-controller-webhook-selfsigned", "group": "cert-manager.io"})
    );
    let issuer = must_get(
        client,
        "cert-manager.io/v1",
        "Issuer",
        Some(ns),
        "stageset-controller-webhook-ca",
    )
    .await;
    assert_eq!(
        issuer["spec"],
        json!({"ca": {"secretName": "stageset-controller-webhook-ca"}})
    );
    // cainjector fills the caBundle from the serving certificate's Secret.
    let vwc = must_get(
        client,
        "admissionregistration.k8s.io/v1",
        "ValidatingWebhookConfiguration",
        None,
        &format!("stageset-controller-{ns}"),
    )
    .await;
    assert_eq!(
        vwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        format!("{ns}/stageset-controller-webhook-cert")
    );
}

/// A named issuer is used as it is, and the chart creates no issuer of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cert_manager_mode_with_a_named_issuer_uses_it() {
    let dir = tempfile::tempdir().unwrap();
    let sim = scratch_sim(Vec::new(), HashMap::new());
    let objs = template(
        &sim,
        dir.path(),
        "stageset-system",
        &[],
        &[
            r#"webhook.certMode="cert-manager""#.into(),
            r#"webhook.certManager.issuerRef={"kind":"ClusterIssuer","name":"cluster-ca"}"#.into(),
        ],
    )
    .await
    .unwrap();
    let cert = find(&objs, "Certificate", "stageset-controller-webhook-cert")
        .expect("the serving Certificate");
    assert_eq!(
        cert["spec"]["issuerRef"],
        json!({"kind": "ClusterIssuer", "name": "cluster-ca", "group": "cert-manager.io"})
    );
    let own: Vec<&str> = objs
        .iter()
        .filter(|o| o["kind"] == "Issuer" || o["kind"] == "ClusterIssuer")
        .map(name_of)
        .collect();
    assert!(
        own.is_empty(),
        "issuers rendered next to a named one: {own:?}"
    );
    assert!(find(&objs, "Certificate", "stageset-controller-webhook-ca").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_onprem_install() {
    let ns = "stageset-system";
    let cluster = format!("stageset-controller-{ns}");
    let dir = tempfile::tempdir().unwrap();
    // 027-helm-values-onprem.yaml exactly as the production guide writes it.
    let onprem = guide_values("values-onprem.yaml", "027-helm-values-onprem.yaml");
    let (_sim, client, release) =
        fresh_install(dir.path(), ns, std::slice::from_ref(&onprem), &[]).await;

    let hpa = must_get(
        &client,
        "autoscaling/v2",
        "HorizontalPodAutoscaler",
        Some(ns),
        "stageset-controller",
    )
    .await;
    assert_eq!(hpa["spec"]["minReplicas"], 2);
    assert_eq!(hpa["spec"]["maxReplicas"], 3);
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "stageset-controller");
    let metric = &hpa["spec"]["metrics"][0];
    assert_eq!(metric["resource"]["name"], "cpu");
    assert_eq!(metric["resource"]["target"]["type"], "Utilization");
    assert_eq!(metric["resource"]["target"]["averageUtilization"], 80);
    let pdb = must_get(
        &client,
        "policy/v1",
        "PodDisruptionBudget",
        Some(ns),
        "stageset-controller",
    )
    .await;
    assert!(pdb["spec"]["selector"]["matchLabels"].is_object());

    let pvc = must_get(
        &client,
        "v1",
        "PersistentVolumeClaim",
        Some(ns),
        "stageset-controller-rollback",
    )
    .await;
    assert_eq!(pvc["spec"]["accessModes"], json!(["ReadWriteMany"]));
    assert_eq!(pvc["spec"]["storageClassName"], "nfs-client");
    assert_eq!(pvc["spec"]["resources"]["requests"]["storage"], "10Gi");

    let cert = must_get(
        &client,
        "cert-manager.io/v1",
        "Certificate",
        Some(ns),
        "stageset-controller-webhook-cert",
    )
    .await;
    assert_eq!(
        cert["spec"]["secretName"],
        "stageset-controller-webhook-cert"
    );
    // No issuer named: the chart's own CA signs the serving certificate.
    assert_eq!(
        cert["spec"]["issuerRef"],
        json!({"kind": "Issuer", "name": "stageset-controller-webhook-ca", "group": "cert-manager.io"})
    );
    assert_chart_ca(&client, ns).await;
    assert!(
        strings(&cert["spec"]["dnsNames"])
            .contains(&format!("stageset-controller-webhook.{ns}.svc")),
        "{cert}"
    );
    let vwc = must_get(
        &client,
        "admissionregistration.k8s.io/v1",
        "ValidatingWebhookConfiguration",
        None,
        &cluster,
    )
    .await;
    assert_eq!(
        vwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        format!("{ns}/stageset-controller-webhook-cert")
    );

    let np = must_get(
        &client,
        "networking.k8s.io/v1",
        "NetworkPolicy",
        Some(ns),
        "stageset-controller",
    )
    .await;
    let ports: BTreeSet<i64> = np["spec"]["ingress"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| i["ports"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p["port"].as_i64())
        .collect();
    for p in [9443, 8080, 8082, 8081] {
        assert!(
            ports.contains(&p),
            "NetworkPolicy ingress lacks {p}: {ports:?}"
        );
    }
    must_get(
        &client,
        "monitoring.coreos.com/v1",
        "ServiceMonitor",
        Some(ns),
        "stageset-controller-metrics",
    )
    .await;

    let d = must_get(
        &client,
        "apps/v1",
        "Deployment",
        Some(ns),
        "stageset-controller",
    )
    .await;
    assert_args(
        &d,
        &[
            "--webhook-cert-mode=cert-manager".into(),
            "--rollback-store-path=/var/lib/stageset/rollback".into(),
        ],
    );
    let volumes = d["spec"]["template"]["spec"]["volumes"].as_array().unwrap();
    let certs = volumes
        .iter()
        .find(|v| v["name"] == "webhook-certs")
        .unwrap();
    assert_eq!(
        certs["secret"]["secretName"],
        "stageset-controller-webhook-cert"
    );
    let store = volumes
        .iter()
        .find(|v| v["name"] == "rollback-store")
        .unwrap();
    assert_eq!(
        store["persistentVolumeClaim"]["claimName"],
        "stageset-controller-rollback"
    );
    // cert-manager publishes the CA: the controller gets no VWC access.
    assert!(
        grants(
            &release,
            "admissionregistration.k8s.io",
            "validatingwebhookconfigurations",
            "update"
        )
        .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_eks_install() {
    let ns = "stageset-system";
    let dir = tempfile::tempdir().unwrap();
    // 028-helm-values-eks.yaml exactly as the production guide writes it.
    let eks = guide_values("values-eks.yaml", "028-helm-values-eks.yaml");
    let (_sim, client, _release) =
        fresh_install(dir.path(), ns, std::slice::from_ref(&eks), &[]).await;
    assert_chart_ca(&client, ns).await;

    let sa = must_get(
        &client,
        "v1",
        "ServiceAccount",
        Some(ns),
        "stageset-controller",
    )
    .await;
    assert_eq!(
        sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
        "arn:aws:iam::123456789012:role/stageset-controller"
    );
    let d = must_get(
        &client,
        "apps/v1",
        "Deployment",
        Some(ns),
        "stageset-controller",
    )
    .await;
    assert_args(
        &d,
        &[
            "--rollback-store-s3-bucket=my-org-stageset-rollback".into(),
            "--rollback-store-s3-endpoint=s3.eu-west-1.amazonaws.com".into(),
            "--rollback-store-s3-region=eu-west-1".into(),
            "--rollback-store-s3-sse=s3".into(),
        ],
    );
    assert!(
        container(&d).get("envFrom").is_none(),
        "no existingSecret, so no envFrom (IRSA credentials)"
    );
    assert!(
        list(&client, "v1", "PersistentVolumeClaim", Some(ns))
            .await
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_namespaces_install() {
    let ns = "stageset-system";
    let cluster = format!("stageset-controller-{ns}");
    let dir = tempfile::tempdir().unwrap();
    let (_sim, client, _release) = fresh_install(
        dir.path(),
        ns,
        &[],
        &[r#"controller.watchNamespaces=["team-a","team-b"]"#.into()],
    )
    .await;

    for tenant_ns in ["team-a", "team-b"] {
        let rb = must_get(
            &client,
            "rbac.authorization.k8s.io/v1",
            "RoleBinding",
            Some(tenant_ns),
            "stageset-controller-tenants",
        )
        .await;
        assert_eq!(rb["roleRef"]["kind"], "ClusterRole");
        assert_eq!(rb["roleRef"]["name"], cluster);
        assert_eq!(
            rb["subjects"],
            json!([{"kind": "ServiceAccount", "name": "stageset-controller", "namespace": ns}])
        );
    }
    let bindings = list(
        &client,
        "rbac.authorization.k8s.io/v1",
        "ClusterRoleBinding",
        None,
    )
    .await;
    assert!(
        !bindings.iter().any(|b| b["roleRef"]["name"] == cluster),
        "the tenant ClusterRole must not be bound cluster-wide"
    );
    assert!(
        bindings
            .iter()
            .any(|b| b["roleRef"]["name"] == format!("{cluster}-cluster")),
        "the cluster-scope role stays bound"
    );
    let d = must_get(
        &client,
        "apps/v1",
        "Deployment",
        Some(ns),
        "stageset-controller",
    )
    .await;
    assert_args(&d, &["--watch-namespaces=team-a,team-b".into()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_admin_install() {
    let ns = "stageset-system";
    let dir = tempfile::tempdir().unwrap();
    let (_sim, client, _release) =
        fresh_install(dir.path(), ns, &[], &["rbac.clusterAdmin=true".into()]).await;
    let bindings = list(
        &client,
        "rbac.authorization.k8s.io/v1",
        "ClusterRoleBinding",
        None,
    )
    .await;
    let admin_binding = bindings
        .iter()
        .find(|b| {
            b["roleRef"]["name"] == "cluster-admin"
                && name_of(b).starts_with("stageset-controller-")
        })
        .expect("a ClusterRoleBinding to cluster-admin");
    assert_eq!(admin_binding["roleRef"]["kind"], "ClusterRole");
    assert_eq!(
        admin_binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "stageset-controller", "namespace": ns}])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_policy_install() {
    let ns = "stageset-system";
    let dir = tempfile::tempdir().unwrap();
    let (_sim, client, _release) =
        fresh_install(dir.path(), ns, &[], &["networkPolicy.enabled=true".into()]).await;
    let np = must_get(
        &client,
        "networking.k8s.io/v1",
        "NetworkPolicy",
        Some(ns),
        "stageset-controller",
    )
    .await;
    let d = must_get(
        &client,
        "apps/v1",
        "Deployment",
        Some(ns),
        "stageset-controller",
    )
    .await;
    assert_eq!(
        np["spec"]["podSelector"]["matchLabels"],
        d["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(
        np["spec"]["policyTypes"],
        json!(["Ingress"]),
        "egress stays open by default"
    );
    let ports: BTreeSet<i64> = np["spec"]["ingress"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| i["ports"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p["port"].as_i64())
        .collect();
    // Container ports: what a NetworkPolicy matches (webhook 9443, not 443).
    assert_eq!(ports, BTreeSet::from([8080, 8081, 8082, 9443]));
}

/// With egress restricted, the policy of every engine lets events reach the
/// default `controller.eventsAddr` (Flux's notification-controller pods, on
/// their container port 9090); without an events address it does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restricted_egress_allows_the_event_receiver() {
    let ns = "stageset-system";
    let dir = tempfile::tempdir().unwrap();
    let egress = [
        "networkPolicy.enabled=true".to_string(),
        "networkPolicy.egress.enabled=true".to_string(),
    ];
    let (_sim, client, _release) = fresh_install(dir.path(), ns, &[], &egress).await;
    let np = must_get(
        &client,
        "networking.k8s.io/v1",
        "NetworkPolicy",
        Some(ns),
        "stageset-controller",
    )
    .await;
    assert_eq!(np["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    let rules = np["spec"]["egress"].as_array().unwrap();
    let events = rules
        .iter()
        .find(|r| r["to"][0]["podSelector"].is_object())
        .unwrap_or_else(|| panic!("no egress rule for the event receiver: {rules:#?}"));
    assert_eq!(
        events["to"],
        json!([{
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "flux-system"}},
            "podSelector": {"matchLabels": {"app": "notification-controller"}}
        }])
    );
    assert_eq!(events["ports"], json!([{"protocol": "TCP", "port": 9090}]));

    // Every engine, rendered: the receiver's namespace, pods and port appear
    // in the egress section exactly when an events address is set.
    for engine in ["kubernetes", "cilium", "calico", "clusterNetworkPolicy"] {
        for events_addr in [
            "",
            "http://notification-controller.flux-system.svc.cluster.local./",
        ] {
            // Rendered objects reach the scratch API server: one per render.
            let sim = scratch_sim(Vec::new(), HashMap::new());
            let mut set = egress.to_vec();
            set.push(format!("networkPolicy.engine={}", json!(engine)));
            set.push(format!("controller.eventsAddr={}", json!(events_addr)));
            let objs = template(&sim, dir.path(), ns, &[], &set).await.unwrap();
            let policy = objs
                .iter()
                .find(|o| {
                    o["kind"]
                        .as_str()
                        .is_some_and(|k| k.ends_with("NetworkPolicy"))
                        && !name_of(o).contains("default-deny")
                })
                .unwrap_or_else(|| panic!("{engine}: no policy rendered"));
            let egress_rules = policy["spec"]["egress"].to_string();
            let allowed = egress_rules.contains("notification-controller")
                && egress_rules.contains("flux-system")
                && egress_rules.contains("9090");
            assert_eq!(
                allowed,
                !events_addr.is_empty(),
                "{engine}, eventsAddr {events_addr:?}: {egress_rules}"
            );
        }
    }
}

// --- sharding: rate limits, the shard selector, several releases --------------------

/// Whether the `matchLabels`-style `selector` selects an object labelled
/// `labels` (an empty selector counts as not selecting: the chart never
/// renders one for its own pods).
fn selects(selector: &Value, labels: &Value) -> bool {
    let (Some(selector), Some(labels)) = (selector.as_object(), labels.as_object()) else {
        return false;
    };
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The arguments of the cleanup hook's one container (no watchNamespaces).
fn cleanup_args(objects: &[Value]) -> Vec<String> {
    let job = objects
        .iter()
        .find(|o| o["kind"] == "Job")
        .expect("the cleanup Job");
    let containers = job["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(containers.len(), 1, "{job}");
    strings(&containers[0]["args"])
}

/// The real kubectl ($KUBECTL or on the PATH); `None` skips, unless
/// STAGESET_REQUIRE_TOOLS=1 makes its absence a failure.
fn kubectl() -> Option<PathBuf> {
    let found = std::env::var_os("KUBECTL").map(PathBuf::from).or_else(|| {
        std::env::var_os("PATH").and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("kubectl"))
                .find(|f| f.is_file())
        })
    });
    if found.is_none() {
        if std::env::var("STAGESET_REQUIRE_TOOLS").as_deref() == Ok("1") {
            panic!("STAGESET_REQUIRE_TOOLS=1, but kubectl is not installed");
        }
        eprintln!("skipped: kubectl is not installed");
    }
    found
}

/// `controller.kubeApiQPS`, `controller.kubeApiBurst` and
/// `controller.watchLabelSelector` reach the binary's flags (the rate limits
/// always, the selector only when set). The selector also scopes the cleanup
/// hook: the real kubectl, run with the hook's arguments, deletes the shard's
/// StageSets and leaves the others' alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_and_the_shard_selector_reach_the_flags_and_the_cleanup_hook() {
    let ns = "stageset-system";
    let dir = tempfile::tempdir().unwrap();
    let deployment = |objs: &[Value]| {
        find(objs, "Deployment", "stageset-controller")
            .expect("the Deployment")
            .clone()
    };

    // Defaults: Flux's limits (DECISIONS 23), no selector, and the hook
    // deletes every StageSet.
    let sim = scratch_sim(Vec::new(), HashMap::new());
    let objs = template(&sim, dir.path(), ns, &[], &[]).await.unwrap();
    let d = deployment(&objs);
    assert_args(
        &d,
        &["--kube-api-qps=50".into(), "--kube-api-burst=300".into()],
    );
    assert!(
        !args(&d)
            .iter()
            .any(|a| a.starts_with("--watch-label-selector")),
        "{:#?}",
        args(&d)
    );
    let hook = cleanup_args(&objs);
    assert!(hook.contains(&"--all".to_string()), "{hook:?}");
    assert!(
        !hook.iter().any(|a| a.starts_with("--selector")),
        "{hook:?}"
    );

    // Set: passed on as written, a set-based selector with spaces included,
    // and a burst Helm would print as 1e+06 if it were not rendered as an int.
    let selector = "sharding.fluxcd.io/key in (shard1, shard3)";
    let sim = scratch_sim(Vec::new(), HashMap::new());
    let objs = template(
        &sim,
        dir.path(),
        ns,
        &[],
        &[
            "controller.kubeApiQPS=12.5".into(),
            "controller.kubeApiBurst=1000000".into(),
            format!("controller.watchLabelSelector={}", json!(selector)),
        ],
    )
    .await
    .unwrap();
    let d = deployment(&objs);
    assert_args(
        &d,
        &[
            "--kube-api-qps=12.5".into(),
            "--kube-api-burst=1000000".into(),
            format!("--watch-label-selector={selector}"),
        ],
    );
    // kubectl refuses --all next to a selector.
    let hook = cleanup_args(&objs);
    assert!(hook.contains(&format!("--selector={selector}")), "{hook:?}");
    assert!(!hook.contains(&"--all".to_string()), "{hook:?}");

    // The hook as the kubelet would run it, against StageSets of three shards
    // and an unlabelled one (the render above installed the CRDs).
    let Some(kubectl) = kubectl() else {
        return;
    };
    for (name, shard) in [
        ("one", Some("shard1")),
        ("two", Some("shard2")),
        ("three", Some("shard3")),
        ("none", None),
    ] {
        let mut metadata = json!({"name": name, "namespace": "team-a"});
        if let Some(shard) = shard {
            metadata["labels"] = json!({"sharding.fluxcd.io/key": shard});
        }
        sim.load(json!({
            "apiVersion": "stages.metio.wtf/v1",
            "kind": "StageSet",
            "metadata": metadata,
            "spec": {"stages": [{"name": "app", "sourceRef": {"name": "app"}}]}
        }))
        .unwrap();
    }
    let kubeconfig = admin_kubeconfig(&sim, dir.path());
    let cache = dir.path().join("kube-cache");
    let hook: Vec<String> = hook
        .into_iter()
        .map(|a| {
            if a.starts_with("--cache-dir=") {
                format!("--cache-dir={}", cache.display())
            } else {
                a
            }
        })
        .collect();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(kubectl)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(&hook)
            .output()
            .expect("kubectl runs")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "the cleanup hook's kubectl failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let client = admin(&sim).await;
    let left: BTreeSet<String> = list(&client, "stages.metio.wtf/v1", "StageSet", Some("team-a"))
        .await
        .iter()
        .map(|o| name_of(o).to_string())
        .collect();
    assert_eq!(
        left,
        BTreeSet::from(["two".to_string(), "none".to_string()]),
        "only the shard's StageSets are deleted"
    );
}

/// The sharded install of docs/sharding.md: releases shard1 and shard2 in one
/// namespace of one cluster, each with its own watchLabelSelector, shard2
/// without the CRDs (crds.create=false). Helm refuses to install an object
/// that exists already, so both installing is the first check; then every
/// object is its own release's (names, instance label, as stored), and no
/// selector, binding, webhook or flag of one release points at the other's.
/// Run once per webhook certificate mode, with everything that renders a
/// Service, a budget, a policy, a PVC or monitoring objects turned on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shards_install_side_by_side_in_one_namespace() {
    let ns = "stageset-system";
    let dir = tempfile::tempdir().unwrap();
    for cert_mode in ["self-signed", "cert-manager"] {
        let sim = scratch_sim(Vec::new(), HashMap::new());
        let client = admin(&sim).await;
        let common = [
            format!("webhook.certMode={}", json!(cert_mode)),
            // An HPA and a PodDisruptionBudget.
            r#"replicas={"min":2,"max":3}"#.to_string(),
            "networkPolicy.enabled=true".into(),
            "mcp.enabled=true".into(),
            r#"rollbackStore.backend="pvc""#.into(),
            "metrics.serviceMonitor.enabled=true".into(),
            "metrics.prometheusRule.enabled=true".into(),
            "metrics.grafanaDashboard.enabled=true".into(),
            "rbac.ledgerView=true".into(),
        ];
        let mut releases: Vec<(&str, Vec<Value>)> = Vec::new();
        for (release, crds) in [("shard1", true), ("shard2", false)] {
            let mut set = common.to_vec();
            set.push(format!(
                "controller.watchLabelSelector={}",
                json!(format!("sharding.fluxcd.io/key={release}"))
            ));
            set.push(format!("crds.create={crds}"));
            let objs = install_as(&sim, dir.path(), ns, release, &[], &set)
                .await
                .unwrap_or_else(|e| panic!("{cert_mode}: installing {release} failed:\n{e}"));
            releases.push((release, objs));
        }
        // Both releases' objects, as the API server holds them after both
        // installs: nothing of shard1 was taken over by shard2.
        for (release, objs) in &releases {
            check_rendered(&client, ns, release, objs)
                .await
                .unwrap_or_else(|e| panic!("{cert_mode}: {e}"));
        }
        let keys = |objs: &[Value]| -> BTreeSet<String> {
            objs.iter()
                .map(|o| {
                    format!(
                        "{} {} {}/{}",
                        o["apiVersion"].as_str().unwrap_or(""),
                        o["kind"].as_str().unwrap_or(""),
                        o["metadata"]["namespace"].as_str().unwrap_or(""),
                        name_of(o)
                    )
                })
                .collect()
        };
        let shared: Vec<String> = keys(&releases[0].1)
            .intersection(&keys(&releases[1].1))
            .cloned()
            .collect();
        assert!(
            shared.is_empty(),
            "{cert_mode}: both releases render {shared:#?}"
        );
        // Only shard1 owns the CRDs.
        let crds = |objs: &[Value]| {
            objs.iter()
                .filter(|o| o["kind"] == "CustomResourceDefinition")
                .count()
        };
        assert_eq!(crds(&releases[0].1), 5, "{cert_mode}: shard1 owns the CRDs");
        assert_eq!(crds(&releases[1].1), 0, "{cert_mode}: crds.create=false");

        for (i, (release, objs)) in releases.iter().enumerate() {
            let (other, other_objs) = &releases[1 - i];
            let base = base_name(release);
            let other_base = base_name(other);
            let d = find(objs, "Deployment", &base)
                .unwrap_or_else(|| panic!("{cert_mode}: no Deployment {base}"));
            let other_d = find(other_objs, "Deployment", &other_base).unwrap();
            let pods = &d["spec"]["template"]["metadata"]["labels"];
            let other_pods = &other_d["spec"]["template"]["metadata"]["labels"];
            assert_eq!(pods["app.kubernetes.io/instance"], *release);

            // The flags: its own shard and its own objects, nothing of the other.
            let mut expected = vec![
                format!("--watch-label-selector=sharding.fluxcd.io/key={release}"),
                "--kube-api-qps=50".to_string(),
                "--kube-api-burst=300".to_string(),
                "--rollback-store-path=/var/lib/stageset/rollback".to_string(),
            ];
            if cert_mode == "self-signed" {
                expected.push(format!("--webhook-service-name={base}-webhook"));
                expected.push(format!("--webhook-validating-config-name={base}-{ns}"));
            }
            assert_args(d, &expected);
            let foreign: Vec<String> = args(d).into_iter().filter(|a| a.contains(other)).collect();
            assert!(
                foreign.is_empty(),
                "{cert_mode}: {release} flags name {other}: {foreign:?}"
            );
            let pod = &d["spec"]["template"]["spec"];
            assert_eq!(pod["serviceAccountName"], base);
            let claim = pod["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == "rollback-store")
                .expect("the rollback store volume");
            assert_eq!(
                claim["persistentVolumeClaim"]["claimName"],
                format!("{base}-rollback")
            );

            // Every selector selects its own release's pods, never the other's.
            let mut selecting = BTreeSet::new();
            for o in objs {
                let selector = match o["kind"].as_str().unwrap_or("") {
                    "Service" => &o["spec"]["selector"],
                    "Deployment" | "PodDisruptionBudget" => &o["spec"]["selector"]["matchLabels"],
                    "NetworkPolicy" => &o["spec"]["podSelector"]["matchLabels"],
                    _ => continue,
                };
                let what = format!("{cert_mode}: {} {}", o["kind"], name_of(o));
                assert!(
                    selects(selector, pods),
                    "{what} misses its own pods: {selector}"
                );
                assert!(
                    !selects(selector, other_pods),
                    "{what} selects {other}'s pods: {selector}"
                );
                selecting.insert(format!("{} {}", o["kind"].as_str().unwrap(), name_of(o)));
            }
            assert_eq!(
                selecting,
                BTreeSet::from([
                    format!("Deployment {base}"),
                    format!("PodDisruptionBudget {base}"),
                    format!("NetworkPolicy {base}"),
                    format!("Service {base}-metrics"),
                    format!("Service {base}-gate"),
                    format!("Service {base}-mcp"),
                    format!("Service {base}-webhook"),
                ]),
                "{cert_mode}"
            );
            let hpa = find(objs, "HorizontalPodAutoscaler", &base).expect("the HPA");
            assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], base);
            // The ServiceMonitor scrapes its own metrics Service only.
            let sm =
                find(objs, "ServiceMonitor", &format!("{base}-metrics")).expect("ServiceMonitor");
            let metrics = find(objs, "Service", &format!("{base}-metrics")).unwrap();
            let other_metrics =
                find(other_objs, "Service", &format!("{other_base}-metrics")).unwrap();
            let sm_selector = &sm["spec"]["selector"]["matchLabels"];
            assert!(selects(sm_selector, &metrics["metadata"]["labels"]));
            assert!(!selects(sm_selector, &other_metrics["metadata"]["labels"]));
            // The pod-down alert watches its own release's pods.
            let rule =
                find(objs, "PrometheusRule", &format!("{base}-alerts")).expect("PrometheusRule");
            let rule = rule.to_string();
            assert!(
                rule.contains(&format!(
                    r#"label_app_kubernetes_io_instance=\"{release}\""#
                )),
                "{cert_mode}: {rule}"
            );

            // Bindings grant the release's roles to the release's ServiceAccount.
            for b in objs.iter().filter(|o| {
                o["kind"]
                    .as_str()
                    .is_some_and(|k| k.ends_with("RoleBinding"))
            }) {
                let what = format!("{cert_mode}: {} {}", b["kind"], name_of(b));
                assert_eq!(
                    b["subjects"],
                    json!([{"kind": "ServiceAccount", "name": base, "namespace": ns}]),
                    "{what}"
                );
                let role = b["roleRef"]["name"].as_str().unwrap();
                assert!(role.starts_with(&format!("{base}-")), "{what} binds {role}");
            }

            // The webhook configuration calls the release's own Service.
            let vwc_name = format!("{base}-{ns}");
            let vwc = find(objs, "ValidatingWebhookConfiguration", &vwc_name)
                .unwrap_or_else(|| panic!("{cert_mode}: no VWC {vwc_name}"));
            for w in vwc["webhooks"].as_array().unwrap() {
                assert_eq!(
                    w["clientConfig"]["service"]["name"],
                    format!("{base}-webhook")
                );
                assert_eq!(w["clientConfig"]["service"]["namespace"], ns);
            }
            if cert_mode == "self-signed" {
                // The in-pod CA may update its own configuration only.
                let updates = grants(
                    objs,
                    "admissionregistration.k8s.io",
                    "validatingwebhookconfigurations",
                    "update",
                );
                assert_eq!(updates.len(), 1, "{updates:#?}");
                assert_eq!(strings(&updates[0].1["resourceNames"]), [vwc_name.as_str()]);
            } else {
                assert_eq!(
                    vwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
                    format!("{ns}/{base}-webhook-cert")
                );
                let cert = find(objs, "Certificate", &format!("{base}-webhook-cert"))
                    .expect("Certificate");
                assert!(
                    strings(&cert["spec"]["dnsNames"])
                        .contains(&format!("{base}-webhook.{ns}.svc")),
                    "{cert}"
                );
                assert_eq!(
                    cert["spec"]["issuerRef"]["name"],
                    format!("{base}-webhook-ca")
                );
            }
        }
    }
}

/// Release names up to Helm's limit of 53 characters: the base name is
/// shortened to 44 characters ending in a hash of the release name, so two
/// long names that share a prefix still get different objects, every
/// namespaced name stays a DNS label, and the CA's commonName stays within
/// cert-manager's 64 bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_release_names_get_short_distinct_names() {
    let ns = "stageset-system";
    let dir = tempfile::tempdir().unwrap();
    let mut bases = BTreeSet::new();
    for release in [
        "stageset-controller-production-europe-west1-shard1",
        "stageset-controller-production-europe-west1-shard2",
    ] {
        let sim = scratch_sim(Vec::new(), HashMap::new());
        let objs = template_as(
            &sim,
            dir.path(),
            ns,
            release,
            &[],
            &[
                r#"webhook.certMode="cert-manager""#.into(),
                r#"rollbackStore.backend="pvc""#.into(),
                "networkPolicy.enabled=true".into(),
                "networkPolicy.defaultDeny.enabled=true".into(),
            ],
        )
        .await
        .unwrap_or_else(|e| panic!("{release}: {e}"));
        for o in &objs {
            assert_eq!(instance_of(o), release, "{} {}", o["kind"], name_of(o));
            if o["metadata"]["namespace"].is_string() {
                assert!(
                    name_of(o).len() <= 63,
                    "{} {} is too long",
                    o["kind"],
                    name_of(o)
                );
            }
        }
        let d = objs.iter().find(|o| o["kind"] == "Deployment").unwrap();
        let base = name_of(d).to_string();
        assert_eq!(base.len(), 44, "{base}");
        assert!(
            base.starts_with("stageset-controller-production-euro-"),
            "{base}"
        );
        let ca = find(&objs, "Certificate", &format!("{base}-webhook-ca")).expect("the CA");
        let cn = ca["spec"]["commonName"].as_str().unwrap();
        assert!(cn.len() <= 64 && cn.starts_with(&base), "{cn}");
        bases.insert(base);
    }
    assert_eq!(bases.len(), 2, "{bases:?}");
}

// --- c: the controller as the chart runs it ---------------------------------------

/// A kubeconfig that authenticates with a bearer token (the ServiceAccount's).
fn token_kubeconfig(sim: &KubeSim, user: &str, token: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(sim.ca_pem());
    serde_json::to_string_pretty(&json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kube-sim", "cluster": {"server": sim.url(), "certificate-authority-data": ca}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": user, "context": {"cluster": "kube-sim", "user": user}}],
        "current-context": user
    }))
    .unwrap()
}

/// The controller process; kills it on drop and prints its log if the test
/// failed.
struct Controller {
    child: Child,
    log: PathBuf,
}

impl Controller {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn check_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("the controller exited ({status})");
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- controller log ({}) ---\n{}",
                self.log.display(),
                self.log()
            );
        }
    }
}

/// The command line and environment of the rendered container, as the kubelet
/// would start it.
///
/// Volume mounts are emulated: a pod sees each volume at its mountPath, which
/// the test process cannot create (e.g. /etc/webhook/certs), so every mountPath
/// becomes a directory under `root`, and an argument whose value lies under a
/// mountPath is relocated there. That is the only rewrite.
fn container_invocation(
    deployment: &Value,
    pod_name: &str,
    pod_ns: &str,
    root: &Path,
) -> (Vec<String>, Vec<(String, String)>) {
    let c = container(deployment);
    assert!(
        c.get("command").is_none(),
        "the image's entrypoint runs the args"
    );
    assert!(c.get("envFrom").is_none(), "envFrom is not emulated: {c}");
    let mounts: Vec<String> = c["volumeMounts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap().to_string())
        .collect();
    for m in &mounts {
        std::fs::create_dir_all(root.join(m.trim_start_matches('/'))).unwrap();
    }
    let relocate = |value: &str| -> String {
        for m in &mounts {
            if value == m || value.starts_with(&format!("{m}/")) {
                return root
                    .join(value.trim_start_matches('/'))
                    .display()
                    .to_string();
            }
        }
        value.to_string()
    };
    let args = strings(&c["args"])
        .into_iter()
        .map(|a| match a.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => format!("{flag}={}", relocate(value)),
            _ => relocate(&a),
        })
        .collect();
    let env = c["env"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|e| {
            let name = e["name"].as_str().unwrap().to_string();
            let value = if let Some(v) = e["value"].as_str() {
                v.to_string()
            } else {
                match e
                    .pointer("/valueFrom/fieldRef/fieldPath")
                    .and_then(Value::as_str)
                {
                    Some("metadata.name") => pod_name.to_string(),
                    Some("metadata.namespace") => pod_ns.to_string(),
                    _ => panic!("env {name}: source not emulated: {e}"),
                }
            };
            (name, value)
        })
        .collect();
    (args, env)
}

/// How a run of the rendered Deployment is set up beyond the chart's values.
#[derive(Default)]
struct RunSetup {
    /// Values files, applied in order, and `--set-json` pairs.
    values: Vec<PathBuf>,
    set_json: Vec<String>,
    /// `webhook.certMode: cert-manager`: the test plays cert-manager, writing
    /// the serving certificate into the mounted Secret's directory and
    /// injecting the CA into the webhook configuration.
    cert_manager: bool,
    /// Rewrites of rendered arguments (`--flag=` prefix → new value), for
    /// addresses a pod would reach but this machine must not (an AWS
    /// endpoint becomes the local S3 server).
    rewrite: Vec<(String, String)>,
    /// Environment a real pod would get from its surroundings (IRSA).
    env: Vec<(String, String)>,
    /// The tenant's StageSet asks for rollbacks.
    rollback_on_failure: bool,
}

/// A running controller started exactly as the rendered Deployment starts
/// it, as the chart's ServiceAccount, against a kube-sim the chart was
/// installed into.
struct Run {
    sim: KubeSim,
    client: kube::Client,
    controller: Controller,
    /// The pod's filesystem: each volume mount is a directory under it.
    root: PathBuf,
    _dir: tempfile::TempDir,
}

async fn run_rendered(setup: RunSetup) -> Run {
    rustls::crypto::ring::default_provider()
        .install_default()
        .ok();
    let ns = "stageset-system";
    let cluster = format!("stageset-controller-{ns}");
    let dir = tempfile::tempdir().unwrap();
    let ports = [
        ("metrics", support::free_port()),
        ("health", support::free_port()),
        ("gate", support::free_port()),
        ("mcp", support::free_port()),
        ("webhook", support::free_port()),
    ];
    let port = |name: &str| ports.iter().find(|(n, _)| *n == name).unwrap().1;
    // The ServiceAccount's token identity, as the API server sees a pod of the
    // Deployment; webhook calls to the chart's Service reach the binary.
    let token = "stageset-controller-sa-token";
    let sim = scratch_sim(
        vec![UserSpec {
            name: CONTROLLER_USER.into(),
            token: token.into(),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{ns}"),
                "system:authenticated".into(),
            ],
        }],
        HashMap::from([(
            format!("{ns}/stageset-controller-webhook"),
            format!("127.0.0.1:{}", port("webhook")),
        )]),
    );
    for crd in flux::source_crds() {
        sim.load(crd).unwrap();
    }
    let client = admin(&sim).await;
    let ports_json = json!(
        ports
            .iter()
            .map(|(n, p)| (n.to_string(), json!(p)))
            .collect::<serde_json::Map<_, _>>()
    );
    // The chart's default events address is Flux's notification-controller
    // Service, which does not resolve here; resolving it would send a DNS
    // query off the machine (docs/decisions.md 16). A local port nobody listens
    // on stands in for it: the events are dropped (tests/events.rs) and the
    // delivery below goes on regardless.
    let events_addr = format!("http://127.0.0.1:{}/", support::free_port());
    let mut set_json = vec![
        format!("ports={ports_json}"),
        format!("controller.eventsAddr={}", json!(events_addr)),
    ];
    set_json.extend(setup.set_json.iter().cloned());
    install(&sim, dir.path(), ns, &setup.values, &set_json).await;

    let deployment = must_get(
        &client,
        "apps/v1",
        "Deployment",
        Some(ns),
        "stageset-controller",
    )
    .await;
    let root = dir.path().join("pod");
    let (args, env) =
        container_invocation(&deployment, "stageset-controller-6f7d9c-x2k4p", ns, &root);
    let mut args: Vec<String> = args
        .into_iter()
        .map(|a| {
            match setup
                .rewrite
                .iter()
                .find(|(prefix, _)| a.starts_with(prefix.as_str()))
            {
                Some((prefix, value)) => format!("{prefix}{value}"),
                None => a,
            }
        })
        .collect();
    // The one extra flag: the artifact server below listens on 127.0.0.1 and
    // the controller refuses loopback artifact URLs (src/reconcile/outbound.rs)
    // unless this hidden, test-only flag is given (docs/decisions.md 13); the chart
    // never sets it.
    args.push("--allow-loopback-artifacts".into());
    if setup.cert_manager {
        // cert-manager issues the Certificate into the Secret the pod mounts
        // and its CA injector fills the webhooks' caBundle.
        let flag = args
            .iter()
            .find_map(|a| a.strip_prefix("--webhook-cert-dir="))
            .expect("the rendered args name the cert dir")
            .to_string();
        let certs = kube_sim::tls::generate(&[format!("stageset-controller-webhook.{ns}.svc")])
            .expect("certificates");
        std::fs::write(Path::new(&flag).join("tls.crt"), &certs.cert_pem).unwrap();
        std::fs::write(Path::new(&flag).join("tls.key"), &certs.key_pem).unwrap();
        let vwc = must_get(
            &client,
            "admissionregistration.k8s.io/v1",
            "ValidatingWebhookConfiguration",
            None,
            &cluster,
        )
        .await;
        assert!(
            vwc.pointer("/metadata/annotations/cert-manager.io~1inject-ca-from")
                .is_some(),
            "the chart asks cert-manager to inject the CA: {vwc}"
        );
        let ca = base64::engine::general_purpose::STANDARD.encode(&certs.ca_pem);
        let mut webhooks = vwc["webhooks"].as_array().cloned().unwrap_or_default();
        for w in &mut webhooks {
            w["clientConfig"]["caBundle"] = json!(ca);
        }
        dynamic(
            &client,
            "admissionregistration.k8s.io/v1",
            "ValidatingWebhookConfiguration",
            None,
        )
        .await
        .0
        .patch(
            &cluster,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"webhooks": webhooks})),
        )
        .await
        .expect("the CA is injected");
    }
    let kubeconfig = dir.path().join("sa.kubeconfig");
    std::fs::write(&kubeconfig, token_kubeconfig(&sim, CONTROLLER_USER, token)).unwrap();
    // The identity is not privileged: what the chart does not grant is refused.
    let sa_config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::from_yaml(&std::fs::read_to_string(&kubeconfig).unwrap())
            .unwrap(),
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    let sa_client = kube::Client::try_from(sa_config).unwrap();
    match Api::<k8s_openapi::api::core::v1::Secret>::all(sa_client)
        .list(&ListParams::default())
        .await
    {
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        other => panic!("{CONTROLLER_USER} may list Secrets: {other:?}"),
    }
    let log_path = dir.path().join("controller.log");
    let log = File::create(&log_path).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_stageset-controller"))
        .args(&args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .envs(setup.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("KUBECONFIG", &kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("the controller binary starts");
    let mut controller = Controller {
        child,
        log: log_path,
    };
    eprintln!("controller args: {args:?}\nenv: {env:?}");

    // The webhooks carry a CA: self-signed mode has the binary write its
    // certificate into the cert volume and publish its CA, with the chart's
    // RBAC only; cert-manager mode got it injected above.
    let deadline = Instant::now() + DEADLINE;
    loop {
        controller.check_running();
        let vwc = get(
            &client,
            "admissionregistration.k8s.io/v1",
            "ValidatingWebhookConfiguration",
            None,
            &cluster,
        )
        .await
        .expect("the chart's VWC");
        let webhooks = vwc["webhooks"].as_array().cloned().unwrap_or_default();
        if !webhooks.is_empty()
            && webhooks.iter().all(|w| {
                w["clientConfig"]["caBundle"]
                    .as_str()
                    .is_some_and(|b| !b.is_empty())
            })
        {
            break;
        }
        assert!(Instant::now() < deadline, "caBundle never published: {vwc}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let cert_dir = root.join("etc/webhook/certs");
    assert!(cert_dir.join("tls.crt").exists() && cert_dir.join("tls.key").exists());
    // The rendered probes answer.
    let http = reqwest::Client::new();
    for path in ["/healthz", "/readyz"] {
        let url = format!("http://127.0.0.1:{}{path}", port("health"));
        let deadline = Instant::now() + DEADLINE;
        loop {
            controller.check_running();
            if let Ok(r) = http.get(&url).send().await
                && r.status().is_success()
            {
                break;
            }
            assert!(Instant::now() < deadline, "{url} never answered 200");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let mut run = Run {
        sim,
        client,
        controller,
        root,
        _dir: dir,
    };
    deliver_a_tenant_stageset(&mut run, setup.rollback_on_failure).await;
    run
}

/// A tenant's StageSet, created through the chart's webhook and delivered
/// by the running binary with nothing but the chart's RBAC.
async fn deliver_a_tenant_stageset(run: &mut Run, rollback_on_failure: bool) {
    let (sim, client) = (&run.sim, &run.client);
    // A tenant, as the cluster admin sets one up.
    let tenant = "team";
    let objects = [
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": tenant}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "deployer", "namespace": tenant}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "deployer", "namespace": tenant},
               "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "deployer", "namespace": tenant},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "deployer"},
               "subjects": [{"kind": "ServiceAccount", "name": "deployer", "namespace": tenant}]}),
    ];
    for o in objects {
        sim.load(o).unwrap();
    }
    let artifacts = ArtifactServer::start().await.expect("artifact server");
    let published = artifacts.publish(
        "app.tar.gz",
        tar_gz(&[(
            "cm.yaml",
            support::configmap(tenant, "app-config", "from-helm").as_bytes(),
        )]),
    );
    publish_external_artifact(
        client,
        tenant,
        "app",
        &published.url,
        &published.digest,
        "v1@sha1:1",
    )
    .await
    .expect("ExternalArtifact published");

    // Creating the StageSet goes through the chart's webhook (failurePolicy
    // Fail): kube-sim calls the binary over TLS, verified with the caBundle the
    // webhook configuration carries. Until the webhook answers, creation is
    // refused.
    let stageset: StageSet = serde_json::from_value(json!({
        "apiVersion": "stages.metio.wtf/v1",
        "kind": "StageSet",
        "metadata": {"name": "shop", "namespace": tenant},
        "spec": {"serviceAccountName": "deployer", "rollbackOnFailure": rollback_on_failure,
                 "stages": [{"name": "app", "sourceRef": {"name": "app"}}]}
    }))
    .unwrap();
    let stagesets: Api<StageSet> = Api::namespaced(client.clone(), tenant);
    let deadline = Instant::now() + DEADLINE;
    loop {
        run.controller.check_running();
        match stagesets.create(&PostParams::default(), &stageset).await {
            Ok(_) => break,
            Err(e) => assert!(
                Instant::now() < deadline,
                "the webhook never admitted the StageSet: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The webhook really validates: an invalid StageSet is refused by it.
    let invalid: StageSet = serde_json::from_value(json!({
        "apiVersion": "stages.metio.wtf/v1",
        "kind": "StageSet",
        "metadata": {"name": "dupes", "namespace": tenant},
        "spec": {"stages": [{"name": "x", "sourceRef": {"name": "app"}}, {"name": "x", "sourceRef": {"name": "app"}}]}
    }))
    .unwrap();
    let refused = match stagesets.create(&PostParams::default(), &invalid).await {
        Ok(_) => panic!("a StageSet with duplicate stage names was admitted"),
        Err(e) => e.to_string(),
    };
    assert!(
        refused.contains("admission webhook \"vstageset.stages.metio.wtf\" denied the request")
            && refused.contains("is not unique"),
        "refused by something else than the webhook: {refused}"
    );

    let deadline = Instant::now() + DEADLINE;
    loop {
        run.controller.check_running();
        let ss = stagesets.get("shop").await.unwrap();
        if support::ready(&ss).is_some_and(|(s, _, _)| s == "True") {
            if rollback_on_failure {
                let snapshot = &ss.status.as_ref().unwrap().last_applied_snapshot;
                assert_eq!(snapshot.len(), 1, "{snapshot:?}");
                assert_eq!(snapshot[0].digest, published.digest);
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the StageSet never became Ready: {}",
            serde_json::to_string_pretty(&ss.status).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let cm = must_get(client, "v1", "ConfigMap", Some(tenant), "app-config").await;
    assert_eq!(cm["data"]["value"], "from-helm");

    // Nothing the controller did as itself was refused.
    let log = run.controller.log();
    let forbidden: Vec<&str> = log
        .lines()
        .filter(|l| l.to_ascii_lowercase().contains("forbidden"))
        .collect();
    assert!(
        forbidden.is_empty(),
        "the controller logged Forbidden errors (the chart's RBAC for {CONTROLLER_USER}, \
         or the tenant Role, lacks a grant):\n{}",
        forbidden.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rendered_deployment_runs_the_controller_with_only_the_chart_rbac() {
    let mut run = run_rendered(RunSetup::default()).await;
    run.controller.check_running();
}

/// The production guide's reference setups, as shipped in the chart's
/// `examples/` (and, when the upstream reference tree is present, equal to
/// the guide's own files).
fn guide_values(name: &str, upstream: &str) -> PathBuf {
    let ours = Path::new(CHART).join("examples").join(name);
    if let Some(reference) = corpus::reference("the guide's values files against ours") {
        let load = |p: &Path| -> Value {
            serde_yaml_ng::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
        };
        assert_eq!(
            load(&ours),
            load(&reference.join("corpus/integrations").join(upstream)),
            "{name} differs from the production guide's {upstream}"
        );
    }
    ours
}

/// The on-prem setup exactly as the guide writes it (HA, cert-manager, an RWX
/// volume for the rollback store) runs, and the store on the volume holds the
/// delivered rendering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guides_on_prem_setup_runs_as_written() {
    let values = guide_values("values-onprem.yaml", "027-helm-values-onprem.yaml");
    let mut run = run_rendered(RunSetup {
        values: vec![values],
        cert_manager: true,
        rollback_on_failure: true,
        ..RunSetup::default()
    })
    .await;
    run.controller.check_running();
    let store = run.root.join("var/lib/stageset/rollback");
    let names: Vec<String> = std::fs::read_dir(&store)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().any(|n| n.starts_with("team_shop_app_sha256-")),
        "{names:?}"
    );
    let log = run.controller.log();
    assert!(log.contains("rollback store enabled"), "{log}");
    assert!(log.contains("use an encrypted volume"), "{log}");
}

/// The EKS setup exactly as the guide writes it (S3 with SSE-S3, credentials
/// from IRSA) runs: the store's requests go to a local S3 server instead of
/// AWS, and the pod's web-identity token is exchanged at a local STS, as the
/// EKS pod identity webhook would arrange.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guides_eks_setup_runs_as_written() {
    use support::s3::{Moto, ROLE, Recorder, Sts, TEMP_KEY, WEB_TOKEN};
    let values = guide_values("values-eks.yaml", "028-helm-values-eks.yaml");
    let moto = Moto::start();
    moto.create_bucket("my-org-stageset-rollback", false).await;
    let recorder = Recorder::start(moto.addr.clone()).await;
    let sts = Sts::start().await;
    let scratch = tempfile::tempdir().unwrap();
    let token = scratch.path().join("token");
    std::fs::write(&token, WEB_TOKEN).unwrap();
    let ca = scratch.path().join("ca.pem");
    std::fs::write(&ca, &sts.ca_pem).unwrap();
    let mut run = run_rendered(RunSetup {
        values: vec![values],
        cert_manager: true,
        rollback_on_failure: true,
        rewrite: vec![
            (
                "--rollback-store-s3-endpoint=".into(),
                recorder.addr.to_string(),
            ),
            ("--rollback-store-s3-use-ssl=".into(), "false".into()),
        ],
        env: vec![
            (
                "AWS_WEB_IDENTITY_TOKEN_FILE".into(),
                token.display().to_string(),
            ),
            ("AWS_ROLE_ARN".into(), ROLE.into()),
            ("AWS_ENDPOINT_URL_STS".into(), sts.url.clone()),
            ("SSL_CERT_FILE".into(), ca.display().to_string()),
        ],
        ..RunSetup::default()
    })
    .await;
    run.controller.check_running();
    // The rendering went to the bucket, signed with the role's temporary keys.
    let seen = recorder.seen.lock().unwrap().clone();
    let put = seen
        .iter()
        .find(|(request, _, _)| {
            request.starts_with("PUT /my-org-stageset-rollback/team/shop/app/sha256-")
        })
        .unwrap_or_else(|| panic!("no rendering stored: {seen:?}"));
    assert!(
        put.1
            .as_deref()
            .is_some_and(|a| a.contains(&format!("Credential={TEMP_KEY}/"))),
        "{put:?}"
    );
    let key = put
        .0
        .trim_start_matches("PUT /my-org-stageset-rollback/")
        .to_string();
    let head = moto.head("my-org-stageset-rollback", &key).await;
    assert_eq!(
        head.get("x-amz-server-side-encryption")
            .map(|v| v.to_str().unwrap()),
        Some("AES256")
    );
    assert!(!sts.calls.lock().unwrap().is_empty());
}

// --- the chart README ------------------------------------------------------------

/// The values table of charts/stageset-controller/README.md is generated from
/// values.schema.json, and the schema's keys and defaults must equal
/// values.yaml; `scripts/chart-readme.py` rewrites the table.
#[test]
fn the_chart_readme_values_table_and_schema_match_values_yaml() {
    require_helm();
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/chart-readme.py"
        ))
        .arg("--check")
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "chart README or schema out of date (run `python3 scripts/chart-readme.py`):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// --- the bundled alerts, judged by promtool -----------------------------------

/// `{{ $labels.x }}` and `{{ $labels.x | toLower }}` of an alert annotation,
/// expanded as Prometheus would for an alert with `labels`; panics on a label
/// the alert does not have (an annotation that would render empty).
fn expand(template: &str, labels: &serde_json::Map<String, Value>) -> String {
    let re = regex::Regex::new(r"\{\{ \$labels\.([a-z_]+)( \| toLower)? \}\}").unwrap();
    re.replace_all(template, |c: &regex::Captures| {
        let v = labels
            .get(&c[1])
            .and_then(Value::as_str)
            .unwrap_or_else(|| {
                panic!("{template:?} uses $labels.{}, which the alert lacks", &c[1])
            });
        if c.get(2).is_some() {
            v.to_lowercase()
        } else {
            v.to_string()
        }
    })
    .into_owned()
}

/// Every alert of the chart's PrometheusRule (rendered by Helm with the
/// default thresholds) fires on series that cross its threshold for its
/// `for`, with the labels and expanded annotations it promises, and stays
/// silent on series that do not; `promtool test rules` is the judge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bundled_alert_fires_when_it_should_and_only_then() {
    let promtool = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("promtool"))
            .find(|f| f.is_file())
    });
    let Some(promtool) = promtool else {
        if std::env::var("STAGESET_REQUIRE_TOOLS").as_deref() == Ok("1") {
            panic!("STAGESET_REQUIRE_TOOLS=1, but promtool is not installed");
        }
        eprintln!("skipped: promtool is not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sim = scratch_sim(Vec::new(), HashMap::new());
    let objs = template(
        &sim,
        dir.path(),
        "flux-system",
        &[],
        &["metrics.prometheusRule.enabled=true".to_string()],
    )
    .await
    .unwrap();
    let rule = objs
        .iter()
        .find(|o| o["kind"] == "PrometheusRule")
        .expect("a PrometheusRule");
    let groups = rule["spec"]["groups"].clone();
    std::fs::write(
        dir.path().join("rules.yaml"),
        serde_yaml_ng::to_string(&json!({"groups": groups})).unwrap(),
    )
    .unwrap();
    let rules: HashMap<String, Value> = groups
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().clone())
        .map(|r| (r["alert"].as_str().unwrap().to_string(), r))
        .collect();
    // The release name `helm template` chose, as the PodDown rule uses it.
    let instance = regex::Regex::new(r#"label_app_kubernetes_io_instance="([^"]+)""#)
        .unwrap()
        .captures(rules["StageSetControllerPodDown"]["expr"].as_str().unwrap())
        .expect("the PodDown rule selects the release's pods")[1]
        .to_string();
    let pod_labels = format!(
        "kube_pod_labels{{namespace=\"flux-system\",pod=\"sc-0\",label_app_kubernetes_io_name=\"stageset-controller\",label_app_kubernetes_io_instance=\"{instance}\",label_app_kubernetes_io_component=\"controller\"}}"
    );
    // (alert, firing series, quiet series, minute to evaluate, the alert's labels)
    type Series<'a> = Vec<(String, &'a str)>;
    let cases: Vec<(&str, Series, Series, u32, Value)> = vec![
        ("StageSetReconcileErrorsHigh",
            vec![(r#"stageset_reconcile_total{namespace="shop",name="web",reason="StageFailed"}"#.into(), "0+60x40")],
            vec![(r#"stageset_reconcile_total{namespace="shop",name="web",reason="Succeeded"}"#.into(), "0+60x40")],
            20, json!({"namespace": "shop", "name": "web", "reason": "StageFailed", "severity": "warning"})),
        ("StageSetControllerWorkqueueDepthHigh",
            vec![(r#"workqueue_depth{controller="stageset"}"#.into(), "100x40")],
            vec![(r#"workqueue_depth{controller="stageset"}"#.into(), "3x40")],
            20, json!({"controller": "stageset", "severity": "warning"})),
        ("StageSetReconcileLatencyHigh",
            vec![
                (r#"controller_runtime_reconcile_time_seconds_bucket{controller="stageset",le="10"}"#.into(), "0x40"),
                (r#"controller_runtime_reconcile_time_seconds_bucket{controller="stageset",le="60"}"#.into(), "0+60x40"),
                (r#"controller_runtime_reconcile_time_seconds_bucket{controller="stageset",le="+Inf"}"#.into(), "0+60x40"),
            ],
            vec![
                (r#"controller_runtime_reconcile_time_seconds_bucket{controller="stageset",le="10"}"#.into(), "0+60x40"),
                (r#"controller_runtime_reconcile_time_seconds_bucket{controller="stageset",le="60"}"#.into(), "0+60x40"),
                (r#"controller_runtime_reconcile_time_seconds_bucket{controller="stageset",le="+Inf"}"#.into(), "0+60x40"),
            ],
            30, json!({"controller": "stageset", "severity": "warning"})),
        ("StageSetControllerPodDown",
            vec![
                (r#"kube_pod_status_ready{namespace="flux-system",pod="sc-0",condition="true"}"#.into(), "0x20"),
                (pod_labels.clone(), "1x20"),
            ],
            vec![
                (r#"kube_pod_status_ready{namespace="flux-system",pod="sc-0",condition="true"}"#.into(), "1x20"),
                (pod_labels.clone(), "1x20"),
            ],
            10, json!({"namespace": "flux-system", "pod": "sc-0", "condition": "true", "severity": "critical"})),
        ("StageSetWebhookCertRenewalFailing",
            vec![("stageset_webhook_cert_renewal_failures_total".into(), "0+1x60")],
            vec![("stageset_webhook_cert_renewal_failures_total".into(), "1x60")],
            45, json!({"severity": "critical"})),
        ("StageSetWatchEngagementFailing",
            vec![(r#"stageset_watch_engagement_failures_total{gvk="source.toolkit.fluxcd.io/v1, Kind=Bucket"}"#.into(), "0+1x60")],
            vec![(r#"stageset_watch_engagement_failures_total{gvk="source.toolkit.fluxcd.io/v1, Kind=Bucket"}"#.into(), "2x60")],
            45, json!({"gvk": "source.toolkit.fluxcd.io/v1, Kind=Bucket", "severity": "warning"})),
        ("StageSetBudgetFrozen",
            vec![(r#"stageset_budget_frozen{namespace="shop",name="web"}"#.into(), "1x30")],
            vec![(r#"stageset_budget_frozen{namespace="shop",name="web"}"#.into(), "0x30")],
            20, json!({"namespace": "shop", "name": "web", "severity": "warning"})),
        ("StageSetStageBudgetFrozen",
            vec![(r#"stageset_stage_budget_frozen{namespace="shop",stageset="web",stage="prod"}"#.into(), "1x30")],
            vec![(r#"stageset_stage_budget_frozen{namespace="shop",stageset="web",stage="prod"}"#.into(), "0x30")],
            20, json!({"namespace": "shop", "stageset": "web", "stage": "prod", "severity": "warning"})),
        ("StageSetPromotionBlocked",
            vec![(r#"stageset_stage_promotion_blocked{namespace="shop",stageset="web",stage="canary"}"#.into(), "1x30")],
            vec![(r#"stageset_stage_promotion_blocked{namespace="shop",stageset="web",stage="canary"}"#.into(), "0x30")],
            20, json!({"namespace": "shop", "stageset": "web", "stage": "canary", "severity": "warning"})),
        ("StageSetPromotionStuck",
            vec![(r#"stageset_stage_promotion_pending{namespace="shop",stageset="web",stage="canary"}"#.into(), "1x90")],
            vec![(r#"stageset_stage_promotion_pending{namespace="shop",stageset="web",stage="canary"}"#.into(), "1x30 0x60")],
            75, json!({"namespace": "shop", "stageset": "web", "stage": "canary", "severity": "warning"})),
        ("StageSetMetricSourceUnavailable",
            vec![(r#"stageset_metric_source_errors_total{namespace="shop",name="web"}"#.into(), "0+1x60")],
            vec![(r#"stageset_metric_source_errors_total{namespace="shop",name="web"}"#.into(), "0+1x2 2x58")],
            30, json!({"namespace": "shop", "name": "web", "severity": "warning"})),
    ];
    assert_eq!(
        cases.len(),
        rules.len(),
        "every bundled alert has a case: {:?}",
        rules.keys()
    );
    let mut tests = Vec::new();
    for (alert, firing, quiet, minute, labels) in &cases {
        let rule = rules
            .get(*alert)
            .unwrap_or_else(|| panic!("no alert {alert}"));
        let labels = labels.as_object().unwrap();
        let annotations: serde_json::Map<String, Value> = rule["annotations"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), json!(expand(v.as_str().unwrap(), labels))))
            .collect();
        let series = |s: &Series| -> Vec<Value> {
            s.iter()
                .map(|(n, v)| json!({"series": n, "values": v}))
                .collect()
        };
        tests.push(json!({"interval": "1m", "input_series": series(firing),
            "alert_rule_test": [{"eval_time": format!("{minute}m"), "alertname": alert,
                "exp_alerts": [{"exp_labels": labels, "exp_annotations": annotations}]}]}));
        tests.push(json!({"interval": "1m", "input_series": series(quiet),
            "alert_rule_test": [{"eval_time": format!("{minute}m"), "alertname": alert, "exp_alerts": []}]}));
    }
    let file = dir.path().join("alerts_test.yaml");
    std::fs::write(
        &file,
        serde_yaml_ng::to_string(
            &json!({"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests}),
        )
        .unwrap(),
    )
    .unwrap();
    let out = Command::new(promtool)
        .current_dir(dir.path())
        .args(["test", "rules", "alerts_test.yaml"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool test rules failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `metrics.grafanaDashboard`: a ConfigMap for Grafana's dashboard sidecar
/// carrying exactly the dashboard file, labelled and placed as configured;
/// nothing by default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grafana_dashboard_configmap_carries_the_dashboard_file() {
    require_helm();
    let sim = scratch_sim(Vec::new(), HashMap::new());
    let dir = tempfile::tempdir().unwrap();
    let name = format!("{}-dashboard", base_name(RELEASE));
    let plain = template(&sim, dir.path(), "stageset-system", &[], &[])
        .await
        .unwrap();
    assert!(find(&plain, "ConfigMap", &name).is_none());
    let set = [
        "metrics.grafanaDashboard.enabled=true".to_string(),
        r#"metrics.grafanaDashboard.namespace="monitoring""#.to_string(),
        r#"metrics.grafanaDashboard.annotations={"grafana_folder":"Platform"}"#.to_string(),
    ];
    // A fresh API server: the dry run above holds the release name.
    let sim = scratch_sim(Vec::new(), HashMap::new());
    sim.load(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "monitoring"}}))
        .unwrap();
    let objs = template(&sim, dir.path(), "stageset-system", &[], &set)
        .await
        .unwrap();
    let cm = find(&objs, "ConfigMap", &name).expect("the dashboard ConfigMap");
    assert_eq!(cm["metadata"]["namespace"], "monitoring");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(cm["metadata"]["annotations"]["grafana_folder"], "Platform");
    let carried: Value =
        serde_json::from_str(cm["data"]["stageset-controller.json"].as_str().unwrap()).unwrap();
    let file: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{CHART}/files/dashboards/stageset-controller.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(carried, file);
    assert_eq!(carried["uid"], "stageset-controller");
}
