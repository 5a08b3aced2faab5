//! A stage's build (delivery.md §2.3 steps 1–8).
//!
//! Plain manifests (no kustomization under the build path, no stage patches)
//! are decoded straight from the artifact's in-memory file map: the
//! `.yaml`/`.yml` manifests under the build path plus the `.json` files
//! directly in it, exactly the set Flux's kustomization generator would list.
//! Everything else goes through kustomize ([`kustomization`]): an existing or
//! generated kustomization, the stage patches layered on top, built by our
//! confined kustomize engine (`crates/kustomize`) in a private temporary copy.
//! Post-build substitution ([`crate::reconcile::substitute`]) runs last
//! ([`render`]).
//!
//! `stageset-controller build DIR` renders through [`render_dir`]: the same
//! steps on a directory of the local filesystem, except that a build
//! directory with its own kustomization is built in place, the way
//! `kubectl kustomize` builds it (bases outside `DIR` allowed, plain files
//! confined to their kustomization's directory).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use crate::api::Patch;
use crate::reconcile::substitute::{self, Vars};

mod kustomization;

/// File names kustomize recognises as a kustomization, in kustomize's order.
const KUSTOMIZATION_FILES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// Server-owned `metadata` fields stripped from every rendered object.
const SERVER_METADATA_FIELDS: [&str; 6] = [
    "creationTimestamp",
    "resourceVersion",
    "uid",
    "managedFields",
    "generation",
    "selfLink",
];

/// Why a stage's manifests could not be built. Every message names the build
/// path or the file concerned, so it can be surfaced as-is in stage status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// `path` (as given in the stage) leaves the artifact root once cleaned.
    #[error("build path {path:?} escapes the artifact root")]
    PathEscapesRoot { path: String },

    /// No directory `path` (cleaned) exists in the artifact.
    #[error("build path {path:?} not found in artifact")]
    PathNotFound { path: String },

    /// `path` (cleaned) names a file of the artifact, not a directory.
    #[error("build path {path:?} is a file in the artifact, not a directory")]
    PathNotADirectory { path: String },

    /// No `.yaml`, `.yml` or `.json` file under the build path (cleaned;
    /// the root is `.`).
    #[error(
        "no manifests found under build path {path:?}: no .yaml, .yml or .json file in it or its sub-directories"
    )]
    NoManifests { path: String },

    /// kustomize refused the build (a bad kustomization, a missing resource, a
    /// patch that does not apply, a reference outside the artifact, an
    /// unsupported field). `path` is the build path or the file concerned.
    #[error("kustomize build of {path} failed: {message}")]
    Kustomize { path: String, message: String },

    /// Post-build substitution failed (a variable not set in strict mode, a
    /// bad expression, an object that no longer parses).
    #[error("post-build substitution failed: {0}")]
    Substitution(String),

    /// A manifest file is not valid YAML (or JSON). `message` carries the
    /// parser's description including line and column when known.
    #[error("failed to parse {file}: {message}")]
    Yaml { file: String, message: String },

    /// A manifest file parsed but holds something that is not a Kubernetes
    /// object (a scalar document, a non-mapping List item, an unsupported
    /// mapping key or value).
    #[error("invalid manifest in {file}: {message}")]
    InvalidDocument { file: String, message: String },

    /// Two rendered objects have the same identity (group, kind, namespace,
    /// name; the version is ignored). Kustomize refuses this too.
    #[error("duplicate object {id}: defined in {first} and again in {second}")]
    DuplicateObject {
        id: String,
        first: String,
        second: String,
    },
}

/// Renders the plain manifests of the build directory `path` of an artifact.
///
/// `files` maps cleaned artifact-relative paths (`/`-separated, no leading
/// `./`) to their contents. `path` is the stage path; `""`, `"."` and `"./"`
/// mean the artifact root.
///
/// Steps, in order:
/// 1. `path` is cleaned like Go's `path.Clean`. A leading `/` means the
///    artifact root (as Flux's secure join does), so `/app` is `app`; a path
///    that climbs above the root (`../x`, `a/../../x`) is refused. The
///    cleaned path must be a directory of the artifact, i.e. some file lives
///    under it (the root always exists).
/// 2. Some file under it, at any depth, must have a `.yaml`, `.yml` or
///    `.json` extension (case-insensitive), else [`BuildError::NoManifests`].
/// 3. A kustomization file (`kustomization.yaml`, `kustomization.yml`,
///    `Kustomization`) in the build directory, or in any of its
///    sub-directories, or stage patches, hand the build to kustomize
///    ([`kustomization`]); the steps below are the plain-manifest path.
/// 4. The files rendered are, in directory-walk order (path components
///    compared byte-wise, like Go's `filepath.Walk`): every `*.yaml` and
///    `*.yml` file at any depth, and every `*.json` file directly in the
///    build directory, which sorts as if renamed to `*.yaml`, unless a
///    same-named `*.yaml` exists next to it (then the JSON file is skipped).
///    JSON files in sub-directories are not rendered. These extensions are
///    matched case-sensitively, as Flux's generator does: `X.YAML` counts for
///    step 2 but is not rendered (a warning is logged).
/// 5. Each file is decoded as a multi-document YAML stream (`.json` files as
///    one JSON value, falling back to YAML). Empty documents are skipped,
///    `<<` merge keys are applied, YAML tags are ignored, and non-string
///    mapping keys (numbers, booleans) become strings. **A document whose top
///    level is a sequence is treated as a list of documents** (each element
///    an object; null elements skipped): Flux's generator would reject it, but
///    rendered JSON output (e.g. JaaS's `rendered.json`) is commonly a bare
///    array, so `[]` renders zero objects. Objects whose kind ends in `List`
///    and that have `items` are flattened, recursively. Objects without a
///    non-empty string `apiVersion`, `kind` or `metadata.name`, and
///    `kustomize.config.k8s.io` `Kustomization` objects, are dropped
///    (logged at debug level only), as Flux does.
/// 6. `status` and the server-owned `metadata` fields `creationTimestamp`,
///    `resourceVersion`, `uid`, `managedFields`, `generation` and `selfLink`
///    are removed from every object.
/// 7. Two objects with the same group, kind, namespace and name fail the
///    build ([`BuildError::DuplicateObject`]), as they would in kustomize.
///
/// The objects are returned in file order, then document order. Rendering
/// zero objects from existing manifest files is not an error.
pub fn build(files: &BTreeMap<String, Vec<u8>>, path: &str) -> Result<Vec<Value>, BuildError> {
    build_with_patches(files, path, &[])
}

/// Everything between a fetched artifact and the apply: [`build_with_patches`]
/// then, with a non-empty variable map, strict post-build substitution
/// (delivery.md §2.3 step 7). The controller and `stageset-controller build`
/// both render through this.
pub fn render(
    files: &BTreeMap<String, Vec<u8>>,
    path: &str,
    patches: &[Patch],
    vars: Option<&Vars>,
) -> Result<Vec<Value>, BuildError> {
    let objects = build_with_patches(files, path, patches)?;
    substitute_all(objects, vars)
}

/// [`render`] for `stageset-controller build`: `dir` is an artifact unpacked
/// on the local filesystem. When the build directory (`path` under `dir`,
/// cleaned as in [`build`]) holds its own kustomization, that directory is
/// built in place as `kubectl kustomize` builds it
/// ([`kustomize::LoadRestrictions::RootOnly`]): bases and components may
/// live anywhere, also outside `dir` (`../base`), while resource files,
/// patch files and generator inputs must be in or below the directory of
/// the kustomization naming them. The stage `patches` are added to the end
/// of that kustomization's `patches` (in memory: nothing is written) and
/// the output is cleaned up and substituted as in [`render`].
///
/// Any other build directory (plain manifests, or a generated
/// kustomization, which `kubectl kustomize` cannot build) is read into
/// memory with [`read_dir`] and rendered by [`render`], exactly as the
/// controller renders an artifact. The error is the message to print.
pub fn render_dir(
    dir: &std::path::Path,
    path: &str,
    patches: &[Patch],
    vars: Option<&Vars>,
) -> Result<Vec<Value>, String> {
    let root = dir
        .canonicalize()
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    if !root.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    let rel = clean_build_path(path).map_err(|e| e.to_string())?;
    let build_dir = if rel.is_empty() {
        root.clone()
    } else {
        root.join(&rel)
    };
    let own_kustomization = build_dir.is_dir()
        && KUSTOMIZATION_FILES
            .iter()
            .any(|name| build_dir.join(name).is_file());
    if own_kustomization {
        let display_dir = if rel.is_empty() { "." } else { rel.as_str() };
        let objects = kustomization::build_in_place(&root, &build_dir, display_dir, patches)
            .map_err(|e| e.to_string())?;
        return substitute_all(objects, vars).map_err(|e| e.to_string());
    }
    let files = read_dir(dir)?;
    render(&files, path, patches, vars).map_err(|e| e.to_string())
}

/// Step 8: strict post-build substitution when there are variables.
fn substitute_all(objects: Vec<Value>, vars: Option<&Vars>) -> Result<Vec<Value>, BuildError> {
    match vars.filter(|v| !v.is_empty()) {
        Some(vars) => substitute::substitute_objects(objects, vars, true)
            .map_err(|e| BuildError::Substitution(e.to_string())),
        None => Ok(objects),
    }
}

/// [`build`] with the stage's kustomize `patches` (which always mean a
/// kustomize build, with a generated kustomization when the artifact has none).
pub fn build_with_patches(
    files: &BTreeMap<String, Vec<u8>>,
    path: &str,
    patches: &[Patch],
) -> Result<Vec<Value>, BuildError> {
    let dir = resolve_build_dir(files, path)?;
    let display_dir = if dir.is_empty() { "." } else { dir.as_str() };

    // Files under the build directory, as (artifact path, path relative to the dir).
    let entries: Vec<(&str, &str)> = files
        .keys()
        .filter_map(|key| {
            let rel = if dir.is_empty() {
                Some(key.as_str())
            } else {
                key.strip_prefix(dir.as_str())
                    .and_then(|rest| rest.strip_prefix('/'))
            }?;
            Some((key.as_str(), rel))
        })
        .collect();

    // Step 2: manifest presence.
    let has_manifest = entries.iter().any(|(_, rel)| {
        extension(rel).is_some_and(|ext| {
            ext.eq_ignore_ascii_case("yaml")
                || ext.eq_ignore_ascii_case("yml")
                || ext.eq_ignore_ascii_case("json")
        })
    });
    if !has_manifest {
        return Err(BuildError::NoManifests {
            path: display_dir.to_owned(),
        });
    }

    // Steps 3-6: a kustomization (the build dir's own or a sub-directory's)
    // or stage patches mean a kustomize build.
    if !patches.is_empty() || find_kustomization(&entries).is_some() {
        return kustomization::build(files, &dir, patches);
    }

    // Step 4: the files to render, in walk order of their effective names.
    let rel_names: BTreeSet<&str> = entries.iter().map(|(_, rel)| *rel).collect();
    let mut selected: Vec<Selected<'_>> = Vec::new();
    for &(key, rel) in &entries {
        let is_direct = !rel.contains('/');
        match extension(rel) {
            Some("yaml" | "yml") => selected.push(Selected {
                key,
                sort_name: rel.to_owned(),
                is_json: false,
            }),
            Some("json") if is_direct => {
                let stem = &rel[..rel.len() - ".json".len()];
                let renamed = format!("{stem}.yaml");
                if rel_names.contains(renamed.as_str()) {
                    tracing::debug!(
                        file = key,
                        "skipping JSON manifest: a same-named .yaml file exists"
                    );
                } else {
                    selected.push(Selected {
                        key,
                        sort_name: renamed,
                        is_json: true,
                    });
                }
            }
            Some("json") => {
                tracing::debug!(
                    file = key,
                    "skipping JSON manifest in a sub-directory of the build path"
                );
            }
            Some(ext)
                if ext.eq_ignore_ascii_case("yaml")
                    || ext.eq_ignore_ascii_case("yml")
                    || (is_direct && ext.eq_ignore_ascii_case("json")) =>
            {
                tracing::warn!(
                    file = key,
                    "skipping manifest: only lower-case .yaml, .yml and .json extensions are rendered"
                );
            }
            _ => {}
        }
    }
    selected.sort_by(|a, b| a.sort_name.split('/').cmp(b.sort_name.split('/')));

    // Steps 5 and 6: decode, flatten, filter, strip.
    let mut objects = Vec::new();
    let mut origins: Vec<&str> = Vec::new();
    for sel in &selected {
        let before = objects.len();
        decode_file(sel.key, &files[sel.key], sel.is_json, &mut objects)?;
        origins.extend(std::iter::repeat_n(sel.key, objects.len() - before));
    }

    // Step 7: duplicate identities.
    let mut seen: BTreeMap<String, &str> = BTreeMap::new();
    for (obj, origin) in objects.iter().zip(&origins) {
        let id = object_id(obj);
        if let Some(first) = seen.insert(id.clone(), origin) {
            return Err(BuildError::DuplicateObject {
                id,
                first: first.to_owned(),
                second: (*origin).to_owned(),
            });
        }
    }

    Ok(objects)
}

/// Reads an unpacked artifact directory into the file map [`build`] takes
/// (for `stageset-controller build`). Symbolic links are followed only when
/// they stay inside `dir`; anything else is refused with the link's path.
pub fn read_dir(dir: &std::path::Path) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let root = dir
        .canonicalize()
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    if !root.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    let mut files = BTreeMap::new();
    let mut pending = vec![root.clone()];
    while let Some(current) = pending.pop() {
        let entries =
            std::fs::read_dir(&current).map_err(|e| format!("{}: {e}", current.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("{}: {e}", current.display()))?;
            let path = entry.path();
            let rel = path
                .strip_prefix(&root)
                .map_err(|_| format!("{} is outside {}", path.display(), root.display()))?;
            let key = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            let target = path.canonicalize().map_err(|e| format!("{key}: {e}"))?;
            if !target.starts_with(&root) {
                return Err(format!("{key} links outside {}", dir.display()));
            }
            if target.is_dir() {
                if entry.file_type().map(|t| t.is_symlink()).unwrap_or(false) {
                    return Err(format!(
                        "{key} is a link to a directory, which artifacts cannot hold"
                    ));
                }
                pending.push(path);
            } else if target.is_file() {
                let bytes = std::fs::read(&target).map_err(|e| format!("{key}: {e}"))?;
                files.insert(key, bytes);
            }
        }
    }
    Ok(files)
}

/// A manifest file chosen for rendering.
struct Selected<'a> {
    /// Path in the artifact (used in messages).
    key: &'a str,
    /// Path relative to the build dir after the JSON rename (walk order).
    sort_name: String,
    is_json: bool,
}

/// Step 1: cleans `path` and checks that it is a directory of the artifact.
/// Returns the cleaned path relative to the root (`""` for the root).
fn resolve_build_dir(files: &BTreeMap<String, Vec<u8>>, path: &str) -> Result<String, BuildError> {
    let rel = clean_build_path(path)?;
    if rel.is_empty() {
        return Ok(rel);
    }
    let rel = rel.as_str();
    let prefix = format!("{rel}/");
    if files.keys().any(|key| key.starts_with(&prefix)) {
        Ok(rel.to_owned())
    } else if files.contains_key(rel) {
        Err(BuildError::PathNotADirectory {
            path: rel.to_owned(),
        })
    } else {
        Err(BuildError::PathNotFound {
            path: rel.to_owned(),
        })
    }
}

/// The first half of step 1: `path` cleaned and relative to the root (`""`
/// for the root), refused when it climbs above the root.
fn clean_build_path(path: &str) -> Result<String, BuildError> {
    let cleaned = clean_path(path);
    let rel = cleaned.trim_start_matches('/');
    if rel == ".." || rel.starts_with("../") {
        return Err(BuildError::PathEscapesRoot {
            path: path.to_owned(),
        });
    }
    if rel.is_empty() || rel == "." {
        return Ok(String::new());
    }
    Ok(rel.to_owned())
}

/// Go's `path.Clean`: the shortest path equivalent to `path` by purely
/// lexical processing (`.` and empty elements removed, `..` resolved against
/// the preceding element; `..` at the start of a rooted path removed).
fn clean_path(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => match parts.last() {
                Some(&last) if last != ".." => {
                    parts.pop();
                }
                _ if rooted => {}
                _ => parts.push(".."),
            },
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}

/// The extension of the last path element (text after its last `.`), like Go's
/// `filepath.Ext` without the dot.
fn extension(rel: &str) -> Option<&str> {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    name.rsplit_once('.').map(|(_, ext)| ext)
}

/// The kustomization file that blocks a plain build, if any: one in the build
/// directory itself (in kustomize's order of names), else the first one in a
/// sub-directory in walk order.
fn find_kustomization<'a>(entries: &[(&'a str, &'a str)]) -> Option<&'a str> {
    for name in KUSTOMIZATION_FILES {
        if let Some((key, _)) = entries.iter().find(|(_, rel)| *rel == name) {
            return Some(key);
        }
    }
    let mut nested: Vec<(&str, &str)> = entries
        .iter()
        .filter(|(_, rel)| {
            rel.rsplit_once('/')
                .is_some_and(|(_, name)| KUSTOMIZATION_FILES.contains(&name))
        })
        .copied()
        .collect();
    nested.sort_by(|a, b| a.1.split('/').cmp(b.1.split('/')));
    nested.first().map(|(key, _)| *key)
}

/// Decodes one manifest file into `out` (step 5 and 6).
fn decode_file(
    file: &str,
    bytes: &[u8],
    is_json: bool,
    out: &mut Vec<Value>,
) -> Result<(), BuildError> {
    if is_json {
        // JSON is YAML, but a real JSON parser handles JSON's number and escape
        // syntax exactly; fall back to YAML for files that are not pure JSON.
        if let Ok(value) = serde_json::from_slice::<Value>(bytes) {
            return add_document(file, 1, value, out);
        }
    }
    use serde::Deserialize as _;
    for (index, document) in serde_yaml_ng::Deserializer::from_slice(bytes).enumerate() {
        let number = index + 1;
        let mut value =
            serde_yaml_ng::Value::deserialize(document).map_err(|err| BuildError::Yaml {
                file: file.to_owned(),
                message: yaml_error_message(&err),
            })?;
        value.apply_merge().map_err(|err| BuildError::Yaml {
            file: file.to_owned(),
            message: format!("document {number}: {}", yaml_error_message(&err)),
        })?;
        let value = yaml_to_json(value).map_err(|reason| BuildError::InvalidDocument {
            file: file.to_owned(),
            message: format!("document {number}: {reason}"),
        })?;
        add_document(file, number, value, out)?;
    }
    Ok(())
}

/// The parser's message, with the location appended when the message does not
/// already carry it.
fn yaml_error_message(err: &serde_yaml_ng::Error) -> String {
    let message = err.to_string();
    match err.location() {
        Some(loc) if !message.contains(" line ") => {
            format!("{message} at line {} column {}", loc.line(), loc.column())
        }
        _ => message,
    }
}

/// Converts a YAML value to JSON the way `sigs.k8s.io/yaml` does: numeric and
/// boolean keys become strings, tags are dropped, non-finite floats and
/// null/compound keys are refused.
pub(crate) fn yaml_to_json(value: serde_yaml_ng::Value) -> Result<Value, String> {
    use serde_yaml_ng::Value as Y;
    Ok(match value {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                Value::Number(
                    serde_json::Number::from_f64(f)
                        .ok_or_else(|| format!("unsupported non-finite number {n}"))?,
                )
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => Value::Array(
            items
                .into_iter()
                .map(yaml_to_json)
                .collect::<Result<_, _>>()?,
        ),
        Y::Mapping(mapping) => {
            let mut map = Map::new();
            for (key, value) in mapping {
                let key = match key {
                    Y::String(s) => s,
                    Y::Number(n) => n.to_string(),
                    Y::Bool(b) => b.to_string(),
                    Y::Tagged(tagged) => match tagged.value {
                        Y::String(s) => s,
                        Y::Number(n) => n.to_string(),
                        Y::Bool(b) => b.to_string(),
                        _ => return Err("unsupported mapping key (not a scalar)".to_owned()),
                    },
                    Y::Null => return Err("unsupported null mapping key".to_owned()),
                    Y::Sequence(_) | Y::Mapping(_) => {
                        return Err("unsupported mapping key (not a scalar)".to_owned());
                    }
                };
                map.insert(key, yaml_to_json(value)?);
            }
            Value::Object(map)
        }
        Y::Tagged(tagged) => yaml_to_json(tagged.value)?,
    })
}

/// Adds the objects of one decoded document (number `number` in `file`).
fn add_document(
    file: &str,
    number: usize,
    value: Value,
    out: &mut Vec<Value>,
) -> Result<(), BuildError> {
    match value {
        Value::Null => Ok(()),
        Value::Object(map) => add_object(file, map, out),
        Value::Array(items) => {
            for (index, item) in items.into_iter().enumerate() {
                match item {
                    Value::Null => {}
                    Value::Object(map) => add_object(file, map, out)?,
                    other => {
                        return Err(BuildError::InvalidDocument {
                            file: file.to_owned(),
                            message: format!(
                                "document {number}, element {}: expected a Kubernetes object (mapping), found {}",
                                index + 1,
                                type_name(&other)
                            ),
                        });
                    }
                }
            }
            Ok(())
        }
        other => Err(BuildError::InvalidDocument {
            file: file.to_owned(),
            message: format!(
                "document {number}: expected a Kubernetes object (mapping), found {}",
                type_name(&other)
            ),
        }),
    }
}

/// Adds one object: flattens Lists, drops incomplete objects and kustomize
/// configuration, strips server-owned fields.
fn add_object(
    file: &str,
    mut map: Map<String, Value>,
    out: &mut Vec<Value>,
) -> Result<(), BuildError> {
    let kind = map.get("kind").and_then(Value::as_str).unwrap_or_default();
    if kind.ends_with("List") && map.contains_key("items") {
        let kind = kind.to_owned();
        return match map.remove("items") {
            Some(Value::Array(items)) => {
                for (index, item) in items.into_iter().enumerate() {
                    match item {
                        Value::Null => {}
                        Value::Object(item) => add_object(file, item, out)?,
                        other => {
                            return Err(BuildError::InvalidDocument {
                                file: file.to_owned(),
                                message: format!(
                                    "item {} of {kind}: expected a Kubernetes object (mapping), found {}",
                                    index + 1,
                                    type_name(&other)
                                ),
                            });
                        }
                    }
                }
                Ok(())
            }
            Some(Value::Null) | None => Ok(()),
            Some(other) => Err(BuildError::InvalidDocument {
                file: file.to_owned(),
                message: format!(
                    "{kind} items: expected a sequence, found {}",
                    type_name(&other)
                ),
            }),
        };
    }

    let non_empty =
        |value: Option<&Value>| value.and_then(Value::as_str).is_some_and(|s| !s.is_empty());
    let api_version = map
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let name = map.get("metadata").and_then(|m| m.get("name"));
    if !non_empty(map.get("apiVersion")) || kind.is_empty() || !non_empty(name) {
        tracing::debug!(
            file,
            api_version,
            kind,
            "dropping document without apiVersion, kind or metadata.name"
        );
        return Ok(());
    }
    if kind == "Kustomization" && group_of(api_version) == "kustomize.config.k8s.io" {
        tracing::debug!(file, "dropping kustomize configuration object");
        return Ok(());
    }

    map.remove("status");
    if let Some(Value::Object(metadata)) = map.get_mut("metadata") {
        for field in SERVER_METADATA_FIELDS {
            metadata.remove(field);
        }
    }
    out.push(Value::Object(map));
    Ok(())
}

/// The API group of an `apiVersion` (`""` for the core group).
fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(group, _)| group)
}

/// `Kind/namespace/name` with the group, e.g. `Deployment.apps/ns/web`.
fn object_id(obj: &Value) -> String {
    let api_version = obj["apiVersion"].as_str().unwrap_or_default();
    let kind = obj["kind"].as_str().unwrap_or_default();
    let namespace = obj["metadata"]["namespace"].as_str().unwrap_or_default();
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let group = group_of(api_version);
    let kind = if group.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}.{group}")
    };
    if namespace.is_empty() {
        format!("{kind}/{name}")
    } else {
        format!("{kind}/{namespace}/{name}")
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a sequence",
        Value::Object(_) => "a mapping",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn artifact(entries: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        entries
            .iter()
            .map(|(path, content)| ((*path).to_owned(), content.as_bytes().to_vec()))
            .collect()
    }

    fn names(objects: &[Value]) -> Vec<String> {
        objects
            .iter()
            .map(|o| {
                format!(
                    "{}/{}",
                    o["kind"].as_str().unwrap(),
                    o["metadata"]["name"].as_str().unwrap()
                )
            })
            .collect()
    }

    fn cm(name: &str) -> String {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n")
    }

    #[test]
    fn clean_path_matches_go() {
        for (input, want) in [
            ("", "."),
            (".", "."),
            ("./", "."),
            ("./app", "app"),
            ("app/", "app"),
            ("app//x/./y/..", "app/x"),
            ("../x", "../x"),
            ("a/../../x", "../x"),
            ("a/..", "."),
            ("/app/", "/app"),
            ("/../x", "/x"),
            ("/", "/"),
            ("..", ".."),
            ("../../a", "../../a"),
        ] {
            assert_eq!(clean_path(input), want, "clean({input:?})");
        }
    }

    #[test]
    fn nested_directories_in_walk_order() {
        let files = artifact(&[
            ("a.yaml", &cm("root-a")),
            ("a/b.yaml", &cm("a-b")),
            ("a/c/d.yml", &cm("a-c-d")),
            ("b.yml", &cm("root-b")),
            ("README.md", "# not a manifest"),
        ]);
        let objects = build(&files, "./").unwrap();
        // Go's filepath.Walk visits directory "a" before the file "a.yaml".
        assert_eq!(
            names(&objects),
            [
                "ConfigMap/a-b",
                "ConfigMap/a-c-d",
                "ConfigMap/root-a",
                "ConfigMap/root-b"
            ]
        );
    }

    #[test]
    fn path_selection() {
        let files = artifact(&[
            ("base.yaml", &cm("base")),
            ("app/app.yaml", &cm("app")),
            ("app/sub/sub.yaml", &cm("sub")),
            ("apple/apple.yaml", &cm("apple")),
        ]);
        for path in ["./app", "app/", "app", "/app", "./app/./", "other/../app"] {
            let objects = build(&files, path).unwrap();
            assert_eq!(
                names(&objects),
                ["ConfigMap/app", "ConfigMap/sub"],
                "path {path:?}"
            );
        }
        for path in ["", ".", "./", "/", "app/.."] {
            assert_eq!(build(&files, path).unwrap().len(), 4, "path {path:?}");
        }
        assert_eq!(names(&build(&files, "app/sub").unwrap()), ["ConfigMap/sub"]);
    }

    #[test]
    fn path_escaping_root_is_refused() {
        let files = artifact(&[("app/app.yaml", &cm("app"))]);
        for path in ["../x", "..", "app/../../x", "./../app"] {
            let err = build(&files, path).unwrap_err();
            assert_eq!(
                err,
                BuildError::PathEscapesRoot {
                    path: path.to_owned()
                }
            );
            assert!(
                err.to_string().contains("escapes the artifact root"),
                "{err}"
            );
        }
    }

    #[test]
    fn missing_path_is_reported() {
        let files = artifact(&[("app/app.yaml", &cm("app")), ("file.yaml", &cm("f"))]);
        let err = build(&files, "./ap").unwrap_err();
        assert_eq!(err, BuildError::PathNotFound { path: "ap".into() });
        assert_eq!(err.to_string(), "build path \"ap\" not found in artifact");
        let err = build(&files, "file.yaml").unwrap_err();
        assert_eq!(
            err,
            BuildError::PathNotADirectory {
                path: "file.yaml".into()
            }
        );
        assert!(err.to_string().contains("not a directory"));
    }

    #[test]
    fn no_manifests() {
        let files = artifact(&[
            ("README.md", "hi"),
            ("app/notes.txt", "x"),
            ("other/x.yaml", ""),
        ]);
        let err = build(&files, "app").unwrap_err();
        assert_eq!(err, BuildError::NoManifests { path: "app".into() });
        assert!(err.to_string().contains("\"app\""), "{err}");

        let err = build(&artifact(&[("README.md", "hi")]), "").unwrap_err();
        assert_eq!(err, BuildError::NoManifests { path: ".".into() });

        // An empty artifact: the root exists but holds nothing.
        let err = build(&BTreeMap::new(), "./").unwrap_err();
        assert_eq!(err, BuildError::NoManifests { path: ".".into() });

        // Upper-case extensions count as manifests but are not rendered (Flux parity).
        let files = artifact(&[("app/DEPLOY.YAML", &cm("upper"))]);
        assert_eq!(build(&files, "app").unwrap(), Vec::<Value>::new());
        // A JSON file in a sub-directory counts for presence only.
        let files = artifact(&[("app/sub/x.json", r#"{"apiVersion":"v1"}"#)]);
        assert_eq!(build(&files, "app").unwrap(), Vec::<Value>::new());
    }

    #[test]
    fn kustomization_in_build_dir_is_built_with_kustomize() {
        for name in ["kustomization.yaml", "kustomization.yml", "Kustomization"] {
            let file = format!("app/{name}");
            let files = artifact(&[
                ("app/deploy.yaml", &cm("x")),
                ("app/ignored.yaml", &cm("not-listed")),
                (&file, "namePrefix: p-\nresources: [deploy.yaml]\n"),
            ]);
            assert_eq!(
                names(&build(&files, "./app").unwrap()),
                ["ConfigMap/p-x"],
                "{name}"
            );
        }
        // A broken kustomization names the build path and kustomize's reason.
        let files = artifact(&[
            ("kustomization.yaml", "resources: [missing.yaml]\n"),
            ("a.yaml", &cm("a")),
        ]);
        let err = build(&files, "").unwrap_err();
        assert!(matches!(err, BuildError::Kustomize { .. }), "{err}");
        assert!(err.to_string().contains("missing.yaml"), "{err}");
    }

    #[test]
    fn sub_directory_kustomizations_are_single_resources_of_a_generated_one() {
        let files = artifact(&[
            ("app/a.yaml", &cm("a")),
            ("app/values.yaml", "replicas: 3\n"),
            (
                "app/overlay/kustomization.yaml",
                "nameSuffix: -o\nresources: [b.yaml]\n",
            ),
            ("app/overlay/b.yaml", &cm("b")),
            ("app/overlay/unlisted.yaml", &cm("unlisted")),
        ]);
        let mut got = names(&build(&files, "app").unwrap());
        got.sort();
        assert_eq!(got, ["ConfigMap/a", "ConfigMap/b-o"]);
        // Outside the build dir it does not matter.
        let files = artifact(&[("app/a.yaml", &cm("a")), ("other/kustomization.yaml", "")]);
        assert_eq!(names(&build(&files, "app").unwrap()), ["ConfigMap/a"]);
        // A file merely named like a kustomization with another suffix is fine.
        let files = artifact(&[("app/kustomization.yaml.bak", ""), ("app/a.yaml", &cm("a"))]);
        assert_eq!(names(&build(&files, "app").unwrap()), ["ConfigMap/a"]);
    }

    #[test]
    fn stage_patches_apply_to_plain_manifests_and_kustomizations() {
        let deploy = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 1\n  template:\n    spec:\n      containers:\n      - name: web\n        image: web:1\n";
        let patches = vec![
            Patch {
                patch: "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 3\n".into(),
                target: None,
            },
            Patch {
                patch: "- op: replace\n  path: /spec/template/spec/containers/0/image\n  value: web:2\n".into(),
                target: Some(crate::api::PatchSelector {
                    kind: Some("Deployment".into()),
                    name: Some("w.*".into()),
                    ..Default::default()
                }),
            },
        ];
        let plain = artifact(&[
            ("app/deploy.yaml", deploy),
            (
                "app/cm.json",
                r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"j"}}"#,
            ),
        ]);
        let with_kustomization = artifact(&[
            ("app/deploy.yaml", deploy),
            ("app/cm.yaml", &cm("j")),
            (
                "app/kustomization.yaml",
                "resources: [deploy.yaml, cm.yaml]\n",
            ),
        ]);
        for files in [plain, with_kustomization] {
            let objects = build_with_patches(&files, "app", &patches).unwrap();
            let mut got = names(&objects);
            got.sort();
            assert_eq!(got, ["ConfigMap/j", "Deployment/web"]);
            let d = objects.iter().find(|o| o["kind"] == "Deployment").unwrap();
            assert_eq!(d["spec"]["replicas"], 3);
            assert_eq!(
                d["spec"]["template"]["spec"]["containers"][0]["image"],
                "web:2"
            );
        }
        // The artifact itself is never modified.
        let files = artifact(&[
            ("app/kustomization.yaml", "resources: [deploy.yaml]\n"),
            ("app/deploy.yaml", deploy),
        ]);
        let before = files.clone();
        build_with_patches(&files, "app", &patches).unwrap();
        assert_eq!(files, before);
    }

    #[test]
    fn a_top_level_json_array_is_kept_when_patches_force_kustomize() {
        // JaaS publishes rendered.json as a bare array; with stage patches the
        // generated kustomization must still list its objects.
        let files = artifact(&[(
            "rendered.json",
            r#"[{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"}},{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"b"}}]"#,
        )]);
        let patches = vec![Patch {
            patch: "- op: add\n  path: /data\n  value: {k: v}\n".into(),
            target: Some(crate::api::PatchSelector {
                name: Some("a".into()),
                ..Default::default()
            }),
        }];
        let objects = build_with_patches(&files, "", &patches).unwrap();
        let mut got = names(&objects);
        got.sort();
        assert_eq!(got, ["ConfigMap/a", "ConfigMap/b"]);
        let a = objects
            .iter()
            .find(|o| o["metadata"]["name"] == "a")
            .unwrap();
        assert_eq!(a["data"]["k"], "v");
    }

    #[test]
    fn kustomize_loads_files_anywhere_inside_the_artifact_only() {
        let files = artifact(&[
            ("shared/cm.yaml", &cm("shared")),
            (
                "apps/web/kustomization.yaml",
                "resources: [../../shared/cm.yaml]\n",
            ),
        ]);
        assert_eq!(
            names(&build(&files, "apps/web").unwrap()),
            ["ConfigMap/shared"]
        );
        let files = artifact(&[(
            "apps/web/kustomization.yaml",
            "resources: [../../../etc/passwd]\n",
        )]);
        let err = build(&files, "apps/web").unwrap_err();
        assert!(err.to_string().contains("outside the root"), "{err}");
    }

    #[test]
    fn render_dir_builds_a_kustomization_in_place_like_kubectl() {
        let tmp = tempfile::tempdir().unwrap();
        let write = |rel: &str, text: &str| {
            let p = tmp.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        write("base/kustomization.yaml", "resources: [cm.yaml]\n");
        write(
            "base/cm.yaml",
            &format!("{}data:\n  env: ${{ENV}}\n", cm("settings")),
        );
        write("base/extra.yaml", &cm("extra"));
        write(
            "app/overlay/kustomization.yaml",
            "namePrefix: prod-\nresources: [../../base]\n",
        );
        // DIR is app/: the base is outside it, as `kubectl kustomize` allows.
        let dir = tmp.path().join("app");
        let patches = vec![Patch {
            patch: "- op: add\n  path: /metadata/annotations\n  value: {stage: patched}\n".into(),
            target: Some(crate::api::PatchSelector {
                name: Some("settings".into()),
                ..Default::default()
            }),
        }];
        let vars =
            substitute::resolve_vars(&[], Some(&[("ENV".to_owned(), "prod".to_owned())].into()))
                .unwrap();
        let objects = render_dir(&dir, "overlay", &patches, Some(&vars)).unwrap();
        assert_eq!(names(&objects), ["ConfigMap/prod-settings"]);
        assert_eq!(objects[0]["metadata"]["annotations"]["stage"], "patched");
        assert_eq!(objects[0]["data"]["env"], "prod");
        // Nothing was written next to the kustomization.
        assert_eq!(
            std::fs::read_to_string(dir.join("overlay/kustomization.yaml")).unwrap(),
            "namePrefix: prod-\nresources: [../../base]\n"
        );
        // The controller's build of the same artifact never leaves it.
        let err = build(&read_dir(&dir).unwrap(), "overlay").unwrap_err();
        assert!(err.to_string().contains("outside the root"), "{err}");

        // A plain file outside the kustomization's directory is refused.
        write(
            "app/overlay/kustomization.yaml",
            "resources: [../../base, ../../base/extra.yaml]\n",
        );
        let err = render_dir(&dir, "overlay", &[], None).unwrap_err();
        assert_eq!(
            err,
            "kustomize build of overlay failed: overlay/kustomization.yaml: path \"../../base/extra.yaml\" is outside the kustomization directory \"overlay\""
        );
        // The build path still may not climb out of DIR.
        let err = render_dir(&dir, "../base", &[], None).unwrap_err();
        assert_eq!(err, "build path \"../base\" escapes the artifact root");
    }

    #[test]
    fn render_dir_without_a_kustomization_renders_like_the_controller() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("app")).unwrap();
        std::fs::write(tmp.path().join("app/a.yaml"), cm("a")).unwrap();
        std::fs::write(tmp.path().join("app/values.yaml"), "replicas: 1\n").unwrap();
        let patches = vec![Patch {
            patch: "- op: add\n  path: /data\n  value: {k: v}\n".into(),
            target: Some(crate::api::PatchSelector {
                kind: Some("ConfigMap".into()),
                ..Default::default()
            }),
        }];
        let objects = render_dir(tmp.path(), "app", &patches, None).unwrap();
        let files = read_dir(tmp.path()).unwrap();
        assert_eq!(objects, render(&files, "app", &patches, None).unwrap());
        assert_eq!(objects[0]["data"]["k"], "v");
        let err = render_dir(tmp.path(), "nope", &[], None).unwrap_err();
        assert_eq!(err, "build path \"nope\" not found in artifact");
    }

    #[test]
    fn an_empty_generated_kustomization_renders_nothing() {
        // Only non-Kubernetes YAML next to patches: the placeholder is dropped.
        let files = artifact(&[("app/values.yaml", "a: 1\n")]);
        let patches = vec![Patch {
            patch: "- op: add\n  path: /metadata/labels\n  value: {}\n".into(),
            target: Some(crate::api::PatchSelector {
                kind: Some("ConfigMap".into()),
                ..Default::default()
            }),
        }];
        assert_eq!(
            build_with_patches(&files, "app", &patches).unwrap(),
            Vec::<Value>::new()
        );
    }

    #[test]
    fn render_substitutes_after_the_build() {
        let files = artifact(&[(
            "a.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ${NAME}\ndata:\n  k: $${NOT}\n",
        )]);
        let vars =
            substitute::resolve_vars(&[], Some(&[("NAME".to_owned(), "x".to_owned())].into()))
                .unwrap();
        let objects = render(&files, "", &[], Some(&vars)).unwrap();
        assert_eq!(names(&objects), ["ConfigMap/x"]);
        assert_eq!(objects[0]["data"]["k"], "${NOT}");
        // Strict: an unset variable fails the render.
        let files = artifact(&[(
            "a.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ${UNSET}\n",
        )]);
        let err = render(&files, "", &[], Some(&vars)).unwrap_err();
        assert!(err.to_string().contains("UNSET"), "{err}");
        // No variables: `${...}` stays as written.
        let objects = render(&files, "", &[], None).unwrap();
        assert_eq!(names(&objects), ["ConfigMap/${UNSET}"]);
    }

    #[test]
    fn json_rename_rule() {
        let files = artifact(&[
            (
                "app/rendered.json",
                r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"from-json"},"data":{"n":"1"}}"#,
            ),
            (
                "app/x.json",
                r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x-json"}}"#,
            ),
            ("app/x.yaml", &cm("x-yaml")),
            (
                "app/sub/nested.json",
                r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"nested-json"}}"#,
            ),
            ("app/sub/nested.yaml", &cm("nested-yaml")),
            (
                "app/y.json",
                r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"y-json"}}"#,
            ),
            ("app/y.yml", &cm("y-yml")),
        ]);
        let objects = build(&files, "app").unwrap();
        assert_eq!(
            names(&objects),
            [
                "ConfigMap/from-json",
                "ConfigMap/nested-yaml",
                "ConfigMap/x-yaml",
                // y.json sorts as y.yaml, before y.yml; only a same-named .yaml suppresses it.
                "ConfigMap/y-json",
                "ConfigMap/y-yml",
            ]
        );
        assert_eq!(objects[0]["data"]["n"], "1");
    }

    #[test]
    fn json_sorts_under_its_renamed_name() {
        // "a.json" < "a.k8s.yaml" byte-wise, but it is rendered as "a.yaml" > "a.k8s.yaml".
        let files = artifact(&[
            (
                "a.json",
                r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"json"}}"#,
            ),
            ("a.k8s.yaml", &cm("k8s")),
        ]);
        assert_eq!(
            names(&build(&files, "").unwrap()),
            ["ConfigMap/k8s", "ConfigMap/json"]
        );
    }

    #[test]
    fn multi_document_yaml_with_comments() {
        let content = "\
# leading comment
---
apiVersion: v1
kind: Namespace
metadata:
  name: team-a # trailing comment
---
# a document holding only a comment
---
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: team-a
spec:
  replicas: 2
...
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: team-a
data:
  80: http
  true: yes
  key: |
    line one
    line two
";
        let objects = build(&artifact(&[("all.yaml", content)]), "").unwrap();
        assert_eq!(
            names(&objects),
            ["Namespace/team-a", "Deployment/web", "ConfigMap/settings"]
        );
        assert_eq!(objects[1]["spec"]["replicas"], 2);
        assert_eq!(
            objects[2]["data"],
            json!({"80": "http", "true": "yes", "key": "line one\nline two\n"})
        );
    }

    #[test]
    fn anchors_and_merge_keys() {
        let content = "\
apiVersion: v1
kind: ConfigMap
metadata:
  name: merged
  labels: &labels
    app: web
  annotations:
    <<: *labels
    extra: x
";
        let objects = build(&artifact(&[("m.yaml", content)]), "").unwrap();
        assert_eq!(objects[0]["metadata"]["labels"], json!({"app": "web"}));
        assert_eq!(
            objects[0]["metadata"]["annotations"],
            json!({"app": "web", "extra": "x"})
        );
    }

    #[test]
    fn lists_are_flattened_recursively() {
        let content = r#"
apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: ConfigMap
    metadata: {name: one}
  - apiVersion: v1
    kind: ConfigMapList
    metadata: {resourceVersion: "7"}
    items:
      - apiVersion: v1
        kind: ConfigMap
        metadata: {name: two, resourceVersion: "5"}
      - apiVersion: v1
        kind: List
        items:
          - apiVersion: v1
            kind: Secret
            metadata: {name: three}
  - null
---
apiVersion: v1
kind: List
items: []
---
apiVersion: v1
kind: ConfigMap
metadata: {name: four}
"#;
        let objects = build(&artifact(&[("list.yaml", content)]), "").unwrap();
        assert_eq!(
            names(&objects),
            [
                "ConfigMap/one",
                "ConfigMap/two",
                "Secret/three",
                "ConfigMap/four"
            ]
        );
        assert!(objects[1]["metadata"].get("resourceVersion").is_none());

        // A kind ending in "List" without items is an ordinary object.
        let content =
            "apiVersion: example.com/v1\nkind: AllowList\nmetadata: {name: a}\nspec: {}\n";
        let objects = build(&artifact(&[("a.yaml", content)]), "").unwrap();
        assert_eq!(names(&objects), ["AllowList/a"]);

        let content = "apiVersion: v1\nkind: List\nitems:\n  - just a string\n";
        let err = build(&artifact(&[("bad-list.yaml", content)]), "").unwrap_err();
        assert!(
            matches!(&err, BuildError::InvalidDocument { file, .. } if file == "bad-list.yaml")
        );
        assert!(err.to_string().contains("item 1 of List"), "{err}");
    }

    #[test]
    fn incomplete_and_kustomize_documents_are_dropped() {
        let content = r#"
kind: ConfigMap
metadata: {name: no-api-version}
---
apiVersion: v1
metadata: {name: no-kind}
---
apiVersion: v1
kind: ConfigMap
metadata: {generateName: no-name-}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: ""}
---
apiVersion: v1
kind: ConfigMap
metadata: no-mapping
---
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
metadata: {name: kustomize-config}
resources: [a.yaml]
---
{}
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: flux-kustomization, namespace: flux-system}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: kept}
"#;
        let objects = build(&artifact(&[("mixed.yaml", content)]), "").unwrap();
        assert_eq!(
            names(&objects),
            ["Kustomization/flux-kustomization", "ConfigMap/kept"]
        );
    }

    #[test]
    fn yaml_error_names_the_file_and_line() {
        let content = format!(
            "{}---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [unclosed\n",
            cm("ok")
        );
        let files = artifact(&[("a.yaml", &cm("a")), ("app/broken.yaml", &content)]);
        let err = build(&files, "").unwrap_err();
        let BuildError::Yaml { file, message } = &err else {
            panic!("unexpected error {err:?}");
        };
        assert_eq!(file, "app/broken.yaml");
        assert!(message.contains("line"), "{message}");
        assert!(
            err.to_string()
                .starts_with("failed to parse app/broken.yaml: "),
            "{err}"
        );
    }

    #[test]
    fn broken_json_reports_the_file() {
        // Truncated output: neither valid JSON nor valid YAML.
        let files = artifact(&[(
            "rendered.json",
            r#"[{"apiVersion": "v1", "kind": "ConfigMap""#,
        )]);
        let err = build(&files, "").unwrap_err();
        assert!(
            matches!(&err, BuildError::Yaml { file, .. } if file == "rendered.json"),
            "{err:?}"
        );
    }

    #[test]
    fn non_mapping_documents_are_refused() {
        let files = artifact(&[("scalar.yaml", &format!("{}---\njust a string\n", cm("a")))]);
        let err = build(&files, "").unwrap_err();
        assert_eq!(
            err,
            BuildError::InvalidDocument {
                file: "scalar.yaml".into(),
                message: "document 2: expected a Kubernetes object (mapping), found a string"
                    .into()
            }
        );
        let files = artifact(&[("seq.yaml", "- 1\n- 2\n")]);
        let err = build(&files, "").unwrap_err();
        assert!(err.to_string().contains("seq.yaml"), "{err}");
        assert!(err.to_string().contains("element 1"), "{err}");
    }

    #[test]
    fn server_fields_are_stripped() {
        let content = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: default
  labels: {app: web}
  annotations: {a: b}
  creationTimestamp: "2024-01-01T00:00:00Z"
  resourceVersion: "1234"
  uid: 0b5e2c1c-9f5a-4a4e-8d0c-000000000000
  generation: 3
  selfLink: /apis/apps/v1/namespaces/default/deployments/web
  managedFields:
    - manager: kubectl
      operation: Apply
spec:
  replicas: 1
  template:
    metadata:
      creationTimestamp: null
status:
  replicas: 1
"#;
        let objects = build(&artifact(&[("d.yaml", content)]), "").unwrap();
        assert_eq!(
            objects[0],
            json!({
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {
                    "name": "web",
                    "namespace": "default",
                    "labels": {"app": "web"},
                    "annotations": {"a": "b"}
                },
                // Only the object's own metadata is touched.
                "spec": {"replicas": 1, "template": {"metadata": {"creationTimestamp": null}}}
            })
        );
    }

    #[test]
    fn empty_array_and_top_level_arrays() {
        let files = artifact(&[("rendered.json", "[]")]);
        assert_eq!(build(&files, "").unwrap(), Vec::<Value>::new());

        let files = artifact(&[(
            "rendered.json",
            r#"[{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"}},
                null,
                {"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"Secret","metadata":{"name":"b"}}]}]"#,
        )]);
        assert_eq!(
            names(&build(&files, "").unwrap()),
            ["ConfigMap/a", "Secret/b"]
        );

        // Empty and comment-only files render nothing without error.
        let files = artifact(&[("empty.yaml", ""), ("comment.yml", "# nothing\n---\n")]);
        assert_eq!(build(&files, "").unwrap(), Vec::<Value>::new());
    }

    #[test]
    fn json_numbers_are_preserved() {
        let files = artifact(&[(
            "r.json",
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"n"},"x":{"big":9007199254740993,"f":1.5,"e":1e3}}"#,
        )]);
        let objects = build(&files, "").unwrap();
        assert_eq!(
            objects[0]["x"],
            json!({"big": 9007199254740993_u64, "f": 1.5, "e": 1000.0})
        );
    }

    #[test]
    fn duplicate_objects_are_refused() {
        let files = artifact(&[("a.yaml", &cm("same")), ("b/c.yaml", &cm("same"))]);
        let err = build(&files, "").unwrap_err();
        assert_eq!(
            err,
            BuildError::DuplicateObject {
                id: "ConfigMap/same".into(),
                first: "a.yaml".into(),
                second: "b/c.yaml".into()
            }
        );
        // Different namespaces or groups are different objects.
        let other_ns = format!("{}  namespace: other\n", cm("same"));
        let other_group = "apiVersion: example.com/v1\nkind: ConfigMap\nmetadata:\n  name: same\n";
        let files = artifact(&[
            ("a.yaml", &cm("same")),
            ("b.yaml", &other_ns),
            ("c.yaml", other_group),
        ]);
        assert_eq!(build(&files, "").unwrap().len(), 3);
    }
}
