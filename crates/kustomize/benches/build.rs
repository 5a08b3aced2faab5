//! Build time of a 2,000-object kustomization with generators and patches:
//! this crate against the real kustomize (`kubectl kustomize`).
//!
//! `cargo bench -p kustomize --bench build` (set RUNS to change the number of
//! timed runs; the median is reported). Both outputs are compared object by
//! object first, so the figures are for the same result.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

const FILES: usize = 20;
const APPS_PER_FILE: usize = 25; // Deployment + Service + ConfigMap + ServiceAccount each

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// base/: FILES files of APPS_PER_FILE apps (2,000 objects), 50 ConfigMap and 10 Secret
/// generators; overlay/: namespace, prefix, labels, images, replicas, a
/// strategic-merge patch on every Deployment and a JSON6902 patch on every
/// Service.
fn fixture(root: &Path) -> usize {
    let mut resources = Vec::new();
    let mut objects = 0;
    for f in 0..FILES {
        let mut text = String::new();
        for a in 0..APPS_PER_FILE {
            let n = f * APPS_PER_FILE + a;
            let g = n % 50;
            write!(
                text,
                "---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app-{n}\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {{app: app-{n}}}\n  template:\n    metadata:\n      labels: {{app: app-{n}}}\n    spec:\n      serviceAccountName: app-{n}\n      containers:\n      - name: main\n        image: registry.example/app:1.0\n        ports:\n        - containerPort: 8080\n        env:\n        - name: A\n          value: \"1\"\n        envFrom:\n        - configMapRef: {{name: gen-{g}}}\n      volumes:\n      - name: cfg\n        configMap: {{name: app-{n}-static}}\n      - name: creds\n        secret: {{secretName: secret-{s}}}\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: app-{n}\nspec:\n  selector: {{app: app-{n}}}\n  ports:\n  - port: 80\n    targetPort: 8080\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app-{n}-static\ndata:\n  key: value-{n}\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: app-{n}\n",
                s = n % 10
            )
            .unwrap();
            objects += 4;
        }
        let name = format!("apps-{f}.yaml");
        write(root, &format!("base/{name}"), &text);
        resources.push(name);
    }
    let mut k = format!(
        "resources:\n{}",
        resources
            .iter()
            .map(|r| format!("- {r}\n"))
            .collect::<String>()
    );
    k.push_str("configMapGenerator:\n");
    for g in 0..50 {
        write!(
            k,
            "- name: gen-{g}\n  literals: [MODE=prod, SHARD=\"{g}\"]\n"
        )
        .unwrap();
        objects += 1;
    }
    k.push_str("secretGenerator:\n");
    for s in 0..10 {
        write!(k, "- name: secret-{s}\n  literals: [TOKEN=t{s}]\n").unwrap();
        objects += 1;
    }
    write(root, "base/kustomization.yaml", &k);
    write(
        root,
        "overlay/kustomization.yaml",
        "namespace: prod\nnamePrefix: prod-\ncommonLabels:\n  team: shop\nresources: [../base]\nimages:\n- name: registry.example/app\n  newTag: \"1.1\"\nreplicas:\n- name: app-0\n  count: 3\npatches:\n- target: {kind: Deployment}\n  patch: |\n    apiVersion: apps/v1\n    kind: Deployment\n    metadata: {name: any}\n    spec:\n      template:\n        spec:\n          containers:\n          - name: main\n            env:\n            - name: REGION\n              value: eu\n- target: {kind: Service}\n  patch: |\n    - op: add\n      path: /metadata/annotations\n      value: {tier: web}\n",
    );
    objects
}

fn sorted(mut objects: Vec<Value>) -> Vec<Value> {
    let key = |o: &Value| {
        format!(
            "{}/{}/{}/{}",
            o["apiVersion"], o["kind"], o["metadata"]["namespace"], o["metadata"]["name"]
        )
    };
    objects.sort_by_key(key);
    objects
}

fn kubectl(dir: &Path) -> Vec<Value> {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .expect("kubectl runs (run scripts/test.sh to install it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    use serde::Deserialize as _;
    serde_yaml_ng::Deserializer::from_slice(&out.stdout)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort();
    runs[runs.len() / 2]
}

fn main() {
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(7);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let expected = fixture(root);
    let overlay = root.join("overlay");

    let ours = sorted(kustomize::build(root, &overlay).expect("our build"));
    let theirs = sorted(kubectl(&overlay));
    assert_eq!(ours.len(), expected, "object count");
    assert_eq!(
        ours.len(),
        theirs.len(),
        "object count vs kubectl kustomize"
    );
    assert!(ours == theirs, "our output differs from kubectl kustomize");

    let time = |f: &dyn Fn()| -> Duration {
        median(
            (0..runs)
                .map(|_| {
                    let t = Instant::now();
                    f();
                    t.elapsed()
                })
                .collect(),
        )
    };
    let ours_t = time(&|| {
        std::hint::black_box(kustomize::build(root, &overlay).unwrap());
    });
    let theirs_t = time(&|| {
        let status = Command::new("kubectl")
            .arg("kustomize")
            .arg(&overlay)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
    });
    println!("objects: {expected} (identical to kubectl kustomize)");
    println!("ours (in-process, median of {runs}): {ours_t:.2?}");
    println!("kubectl kustomize (process, median of {runs}): {theirs_t:.2?}");
    println!(
        "speed-up: {:.1}x",
        theirs_t.as_secs_f64() / ours_t.as_secs_f64()
    );
}
