//! The kustomize half of a stage build (delivery.md §2.3 steps 3–6).
//!
//! Used when the build directory (or one of its sub-directories) holds a
//! kustomization, or when the stage has `patches`. Nothing is written to
//! disk: the engine reads the artifact's file map through
//! [`kustomize::filesystem::Memory`], a view that borrows the files, and the
//! few files the steps below add or change live only in that view, so the
//! artifact itself is never modified:
//!
//! * With a kustomization in the build directory, that file is used; stage
//!   patches are appended to its `patches` list in the view only.
//! * Without one, a kustomization is generated the way Flux's generator does:
//!   every `.yaml`/`.yml` file that is a Kubernetes manifest (has `apiVersion`
//!   and `kind`), recursively, and every sub-directory that holds its own
//!   kustomization as one resource (not descended into). `*.json` files
//!   directly in the build directory count as `*.yaml` (step 3). An empty list
//!   gets a placeholder Namespace `_placeholder`, dropped from the output.
//!
//! The build itself is `kustomize::build_on` with `LoadRestrictions::None`
//! (delivery.md §2.3 step 5, as Flux): files may load from anywhere inside the
//! artifact root, never outside it (outside the view there is nothing to
//! load); no remote bases, no plugins. The artifact holds no symbolic links
//! (the extractor keeps regular files only), so there are none to follow.
//!
//! `stageset-controller build` builds a directory that has its own
//! kustomization with [`build_in_place`] instead: in the real directory, with
//! `kubectl kustomize`'s `LoadRestrictions::RootOnly`, on the real filesystem
//! (`kustomize::filesystem::Disk`), and the stage patches passed to the
//! engine (`Options::extra_patches`) rather than written anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use kustomize::filesystem::Memory;
use serde_json::{Value, json};

use super::{BuildError, KUSTOMIZATION_FILES, extension};
use crate::api::Patch;

/// Name of the placeholder object of an empty generated kustomization.
const PLACEHOLDER: &str = "_placeholder";
/// The file holding it (written only when the generated list is empty).
const PLACEHOLDER_FILE: &str = "_placeholder.generated.yaml";

/// Builds `dir` (cleaned, artifact-relative, `""` for the root) with kustomize.
pub(super) fn build(
    files: &BTreeMap<String, Vec<u8>>,
    dir: &str,
    patches: &[Patch],
) -> Result<Vec<Value>, BuildError> {
    let mut view = Memory::borrowed(files).map_err(view_error)?;
    let display_dir = if dir.is_empty() { "." } else { dir };
    let in_dir = |name: &str| {
        if dir.is_empty() {
            name.to_owned()
        } else {
            format!("{dir}/{name}")
        }
    };

    let existing = KUSTOMIZATION_FILES
        .iter()
        .map(|name| in_dir(name))
        .find(|key| files.contains_key(key));
    let kustomization = match existing {
        Some(key) => {
            if !patches.is_empty() {
                let mut doc: Value =
                    parse_yaml(&files[&key]).map_err(|message| BuildError::Yaml {
                        file: key.clone(),
                        message,
                    })?;
                append_patches(&mut doc, patches).map_err(|message| {
                    BuildError::InvalidDocument {
                        file: key.clone(),
                        message,
                    }
                })?;
                view.insert(&key, serde_json::to_vec(&doc).expect("JSON"))
                    .map_err(view_error)?;
            }
            key
        }
        None => {
            let (mut doc, rewrites) = generate(files, dir)?;
            if !patches.is_empty() {
                append_patches(&mut doc, patches).map_err(|message| {
                    BuildError::InvalidDocument {
                        file: format!("{display_dir}/kustomization.yaml (generated)"),
                        message,
                    }
                })?;
            }
            // JSON normalisation (step 3) only when no kustomization exists.
            normalise_json(files, &mut view, dir)?;
            for (rel, text) in rewrites {
                view.insert(&in_dir(&rel), text.into_bytes())
                    .map_err(view_error)?;
            }
            if doc["resources"][0] == PLACEHOLDER_FILE {
                let text =
                    format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {PLACEHOLDER}\n");
                view.insert(&in_dir(PLACEHOLDER_FILE), text.into_bytes())
                    .map_err(view_error)?;
            }
            let key = in_dir("kustomization.yaml");
            view.insert(&key, serde_json::to_vec(&doc).expect("JSON"))
                .map_err(view_error)?;
            key
        }
    };
    tracing::debug!(%kustomization, "kustomize build");

    // Flux's secure build: files load from anywhere inside the artifact root
    // (not only below the kustomization), never from outside it.
    let options = kustomize::Options {
        restrictions: kustomize::LoadRestrictions::None,
        extra_patches: Vec::new(),
    };
    let objects = kustomize::build_on(&view, Path::new("."), Path::new(display_dir), &options)
        .map_err(|e| BuildError::Kustomize {
            path: display_dir.to_owned(),
            message: e.to_string(),
        })?;
    drop(view);
    clean_output(objects)
}

/// The view refused a file: a path that is both a file and a directory of
/// the artifact (`a` and `a/b.yaml`), which no directory tree can hold.
fn view_error(e: kustomize::Error) -> BuildError {
    match e {
        kustomize::Error::Invalid { file, message } => BuildError::Kustomize {
            path: file,
            message,
        },
        other => BuildError::Kustomize {
            path: ".".to_owned(),
            message: other.to_string(),
        },
    }
}

/// Builds `build_dir`, which holds a kustomization, where it is, as
/// `kubectl kustomize build_dir` does (`LoadRestrictions::RootOnly`: bases
/// anywhere, plain files in or below their kustomization's directory), with
/// `patches` appended to that kustomization's `patches`. Paths in messages
/// are relative to `root`; `display_dir` names the build directory.
pub(super) fn build_in_place(
    root: &Path,
    build_dir: &Path,
    display_dir: &str,
    patches: &[Patch],
) -> Result<Vec<Value>, BuildError> {
    let options = kustomize::Options {
        restrictions: kustomize::LoadRestrictions::RootOnly,
        extra_patches: patch_entries(patches),
    };
    let objects = kustomize::build_with_options(root, build_dir, &options).map_err(|e| {
        BuildError::Kustomize {
            path: display_dir.to_owned(),
            message: e.to_string(),
        }
    })?;
    clean_output(objects)
}

/// Drops the placeholder and applies the plain-manifest rules (step 6) to
/// kustomize's output.
fn clean_output(objects: Vec<Value>) -> Result<Vec<Value>, BuildError> {
    let mut out = Vec::with_capacity(objects.len());
    for object in objects {
        let placeholder = object.get("kind").and_then(Value::as_str) == Some("Namespace")
            && object.pointer("/metadata/name").and_then(Value::as_str) == Some(PLACEHOLDER);
        if placeholder {
            continue;
        }
        super::add_document("kustomize output", 1, object, &mut out)?;
    }
    Ok(out)
}

/// The Flux generator's kustomization for a directory without one.
/// Returns the kustomization and the listed files whose content must be
/// replaced in the view: a top-level array of objects (e.g. JaaS `rendered.json`) becomes
/// one YAML document per element, as the plain-manifest path reads it.
fn generate(
    files: &BTreeMap<String, Vec<u8>>,
    dir: &str,
) -> Result<(Value, Vec<(String, String)>), BuildError> {
    let prefix = if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    };
    let rel: Vec<(&str, &str)> = files
        .keys()
        .filter_map(|k| k.strip_prefix(prefix.as_str()).map(|r| (k.as_str(), r)))
        .collect();
    // Sub-directories (at any depth) with their own kustomization: one resource
    // each, the shallowest wins, and nothing below it is listed separately.
    let mut kustomized: BTreeSet<String> = BTreeSet::new();
    for (_, r) in &rel {
        if let Some((parent, name)) = r.rsplit_once('/')
            && KUSTOMIZATION_FILES.contains(&name)
            && !kustomized
                .iter()
                .any(|k| parent == k || parent.starts_with(&format!("{k}/")))
        {
            kustomized.retain(|k| !k.starts_with(&format!("{parent}/")));
            kustomized.insert(parent.to_owned());
        }
    }
    let under_kustomized = |r: &str| kustomized.iter().any(|k| r.starts_with(&format!("{k}/")));
    let names: BTreeSet<&str> = rel.iter().map(|(_, r)| *r).collect();
    let mut resources: Vec<String> = Vec::new();
    let mut rewrites: Vec<(String, String)> = Vec::new();
    for (key, r) in &rel {
        if under_kustomized(r) {
            continue;
        }
        let direct = !r.contains('/');
        let listed = match extension(r) {
            Some("yaml" | "yml") => Some(r.to_string()),
            Some("json") if direct => {
                let renamed = format!("{}.yaml", &r[..r.len() - ".json".len()]);
                (!names.contains(renamed.as_str())).then_some(renamed)
            }
            _ => None,
        };
        let Some(listed) = listed else { continue };
        match classify(key, &files[*key])? {
            Manifest::Objects => resources.push(listed),
            Manifest::Array(items) => {
                let mut text = String::new();
                for item in items {
                    let doc = serde_yaml_ng::to_string(&item).map_err(|e| {
                        BuildError::InvalidDocument {
                            file: (*key).to_owned(),
                            message: e.to_string(),
                        }
                    })?;
                    text.push_str("---\n");
                    text.push_str(&doc);
                }
                rewrites.push((listed.clone(), text));
                resources.push(listed);
            }
            Manifest::Other => {
                tracing::debug!(file = key, "not listed: not a Kubernetes manifest");
            }
        }
    }
    resources.extend(kustomized.iter().cloned());
    resources.sort_by(|a, b| a.split('/').cmp(b.split('/')));
    if resources.is_empty() {
        // kustomize refuses an empty build; Flux lists a placeholder instead.
        resources.push(PLACEHOLDER_FILE.to_owned());
    }
    let doc = json!({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": resources,
    });
    Ok((doc, rewrites))
}

/// What the generator makes of a YAML/JSON file.
enum Manifest {
    /// Documents that are all Kubernetes objects (`apiVersion` and `kind`).
    Objects,
    /// One top-level array whose elements are all Kubernetes objects.
    Array(Vec<Value>),
    /// Anything else (e.g. a Helm values file): skipped, as Flux does.
    Other,
}

/// Invalid YAML fails the build (as on the plain-manifest path) instead of
/// being left out silently.
fn classify(file: &str, bytes: &[u8]) -> Result<Manifest, BuildError> {
    use serde::Deserialize as _;
    let is_object = |v: &Value| {
        let has = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty())
        };
        v.is_object() && has("apiVersion") && has("kind")
    };
    let bytes = super::strip_bom(bytes);
    kustomize::check_aliases(bytes).map_err(|message| BuildError::Yaml {
        file: file.to_owned(),
        message,
    })?;
    let mut docs = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_slice(bytes) {
        let value = serde_yaml_ng::Value::deserialize(document).map_err(|e| BuildError::Yaml {
            file: file.to_owned(),
            message: super::yaml_error_message(&e),
        })?;
        let Ok(value) = super::yaml_to_json(value) else {
            return Ok(Manifest::Other);
        };
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(match docs.as_slice() {
        [Value::Array(items)] if !items.is_empty() => {
            let items: Vec<Value> = items.iter().filter(|v| !v.is_null()).cloned().collect();
            if items.iter().all(is_object) {
                Manifest::Array(items)
            } else {
                Manifest::Other
            }
        }
        [] => Manifest::Other,
        docs if docs.iter().all(is_object) => Manifest::Objects,
        _ => Manifest::Other,
    })
}

/// Renames `*.json` directly in the build directory to `*.yaml` (unless a
/// file or directory of that name exists) in the view.
fn normalise_json(
    files: &BTreeMap<String, Vec<u8>>,
    view: &mut Memory<'_>,
    dir: &str,
) -> Result<(), BuildError> {
    let prefix = if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    };
    for key in files.keys() {
        let Some(r) = key.strip_prefix(prefix.as_str()) else {
            continue;
        };
        if r.contains('/') || extension(r) != Some("json") {
            continue;
        }
        let yaml = format!("{}.yaml", &key[..key.len() - ".json".len()]);
        if view.kind_of(&yaml).is_none()
            && let Some(bytes) = view.remove(key)
        {
            view.insert(&yaml, bytes).map_err(view_error)?;
        }
    }
    Ok(())
}

/// Appends stage patches (Flux `kustomize.Patch`) to a kustomization's `patches`.
fn append_patches(doc: &mut Value, patches: &[Patch]) -> Result<(), String> {
    let Some(map) = doc.as_object_mut() else {
        return Err("the kustomization is not a mapping".to_owned());
    };
    let list = map.entry("patches").or_insert_with(|| json!([]));
    if list.is_null() {
        *list = json!([]);
    }
    let Some(list) = list.as_array_mut() else {
        return Err("`patches` is not a list".to_owned());
    };
    list.extend(patch_entries(patches));
    Ok(())
}

/// Stage patches as kustomization `patches` entries: `patch` and `target`.
fn patch_entries(patches: &[Patch]) -> Vec<Value> {
    patches
        .iter()
        .map(|p| {
            let mut entry = json!({"patch": p.patch});
            if let Some(target) = &p.target {
                entry["target"] = serde_json::to_value(target).expect("selector serializes");
            }
            entry
        })
        .collect()
}

fn parse_yaml(bytes: &[u8]) -> Result<Value, String> {
    let bytes = super::strip_bom(bytes);
    kustomize::check_aliases(bytes)?;
    let value: serde_yaml_ng::Value =
        serde_yaml_ng::from_slice(bytes).map_err(|e| super::yaml_error_message(&e))?;
    super::yaml_to_json(value)
}
