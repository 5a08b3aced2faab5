//! A stage's build (delivery.md §2.3 steps 1–8).
//!
//! Plain manifests (no kustomization under the build path, no stage patches)
//! are decoded straight from the artifact's in-memory file map: the
//! `.yaml`/`.yml` manifests under the build path plus the `.json` files
//! directly in it, exactly the set Flux's kustomization generator would list.
//! Everything else goes through kustomize ([`kustomization`]): an existing or
//! generated kustomization, the stage patches layered on top, built by our
//! confined kustomize engine (`crates/kustomize`) on an in-memory view of the
//! artifact (nothing is written to disk).
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
    let bytes = strip_bom(bytes);
    if is_json {
        // JSON is YAML, but a real JSON parser handles JSON's number and escape
        // syntax exactly; fall back to YAML for files that are not pure JSON.
        if let Ok(value) = serde_json::from_slice::<Value>(bytes) {
            return add_document(file, 1, value, out);
        }
    }
    use serde::Deserialize as _;
    // serde_yaml_ng bounds the number of alias expansions, not their size.
    kustomize::check_aliases(bytes).map_err(|message| BuildError::Yaml {
        file: file.to_owned(),
        message,
    })?;
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

/// `bytes` without a leading UTF-8 byte order mark. YAML allows one at the
/// start of a stream and Go's YAML readers (kubectl, Flux) drop it, but
/// `serde_yaml_ng` counts it as a column of the first line, so the second
/// line of `<BOM>a: 1\nb: 2` no longer lines up with the first and the file
/// fails to parse ("did not find expected <document start>").
fn strip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes)
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
mod tests;
