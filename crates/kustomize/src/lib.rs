//! A local-only kustomize build.
//!
//! [`build`] renders the kustomization in a directory the way
//! `kustomize build` (and `kubectl kustomize`) does, for the commonly used
//! fields. What may be read is decided by [`LoadRestrictions`]: kubectl's
//! default (plain files confined to the directory of the kustomization that
//! names them), or Flux's secure build (everything confined to a root
//! directory, through `..` and symlinks alike). There are no remote bases
//! and no plugins, and fields it does not implement are refused by name
//! rather than ignored. [`yaml`] writes the objects out the way `kubectl
//! kustomize` prints them, quoted for YAML 1.1 readers.
//!
//! Everything is read through a [`filesystem::FileSystem`]: the real one
//! ([`filesystem::Disk`], what [`build`] uses) or files held in memory
//! ([`filesystem::Memory`], for a fetched artifact that is never written to
//! disk), with [`build_on`].

mod aliases;
mod fieldspec;
pub mod filesystem;
mod generate;
mod hash;
mod nameref;
mod patch;
mod resource;
mod transform;
pub mod yaml;

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use serde_json::Value;

use filesystem::FileSystem;
use resource::Resource;

pub use aliases::{ALIAS_NODES, check_aliases};

/// How deep kustomizations may include one another (`resources: [base]`
/// whose `base` has its own `resources`, …). The build recurses per level,
/// and a few hundred levels exhaust a 2 MiB thread stack; real trees are a
/// handful of levels deep.
pub const MAX_DEPTH: usize = 64;

/// Why a build failed. Every message names the file it is about, relative
/// to the root.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A kustomization field this engine does not implement.
    #[error("{file}: field \"{field}\" is not supported")]
    Unsupported { file: String, field: String },
    /// A path that resolves outside the root (with
    /// [`LoadRestrictions::None`]) or a plain file outside the directory of
    /// its kustomization (with [`LoadRestrictions::RootOnly`]).
    #[error("{file}: path {path:?} is outside {boundary}")]
    Escape {
        file: String,
        path: String,
        boundary: String,
    },
    /// Remote bases and resources (URLs, git addresses) are never fetched.
    #[error("{file}: remote resource {path:?} is not supported")]
    Remote { file: String, path: String },
    /// Anything else wrong with the input.
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
}

/// What a build may read; kustomize's `--load-restrictor`, with a root
/// directory that messages name paths relative to.
///
/// Plain files are resource files, patch files and generator inputs
/// (`files`, `envs`); kustomization directories are bases (directories in
/// `resources` or `bases`) and `components`. Symbolic links are resolved
/// before any check.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LoadRestrictions {
    /// `kubectl kustomize`'s default (`LoadRestrictionsRootOnly`): a plain
    /// file must be in or below the directory of the kustomization that names
    /// it, while kustomization directories may be anywhere, also outside the
    /// root (`../base`, `../../shared/base`). As in kustomize, a directory
    /// that is, or contains, a kustomization directory it is included from
    /// is refused as a cycle.
    #[default]
    RootOnly,
    /// Flux's secure build (`LoadRestrictionsNone` on a filesystem confined
    /// to the artifact): files and directories anywhere inside the root, and
    /// nothing outside it is ever read. The directory built must be inside
    /// the root too.
    None,
}

/// How [`build_with_options`] builds.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// What the build may read.
    pub restrictions: LoadRestrictions,
    /// Entries appended to the `patches` list of the kustomization being
    /// built (not of its bases), as if they were written at its end: for
    /// instance inline patches, `{"patch": "...", "target": {"kind": "..."}}`.
    pub extra_patches: Vec<Value>,
}

/// Builds the kustomization in `dir` as `kubectl kustomize dir` does
/// ([`LoadRestrictions::RootOnly`]), naming paths in messages relative to
/// `root`. Returns the objects in kustomize's order of accumulation.
pub fn build(root: &Path, dir: &Path) -> Result<Vec<Value>, Error> {
    build_with(root, dir, LoadRestrictions::RootOnly)
}

/// [`build`] with an explicit load restriction.
pub fn build_with(
    root: &Path,
    dir: &Path,
    restrictions: LoadRestrictions,
) -> Result<Vec<Value>, Error> {
    build_with_options(
        root,
        dir,
        &Options {
            restrictions,
            ..Options::default()
        },
    )
}

/// [`build`] with explicit [`Options`].
pub fn build_with_options(root: &Path, dir: &Path, options: &Options) -> Result<Vec<Value>, Error> {
    build_on(&filesystem::Disk, root, dir, options)
}

/// [`build_with_options`] on the filesystem `files`: `root` and `dir` are
/// paths in it, relative ones starting at [`FileSystem::current_dir`]. With
/// [`filesystem::Memory`] (whose current directory is its root),
/// `build_on(&files, Path::new("."), Path::new("app"), options)` builds
/// the kustomization in `app/` of the files held in memory.
pub fn build_on(
    files: &dyn FileSystem,
    root: &Path,
    dir: &Path,
    options: &Options,
) -> Result<Vec<Value>, Error> {
    let absolute = |p: &Path| -> Result<PathBuf, Error> {
        if p.is_absolute() {
            return Ok(p.to_path_buf());
        }
        Ok(files
            .current_dir()
            .map_err(|e| Error::Invalid {
                file: p.display().to_string(),
                message: e.to_string(),
            })?
            .join(p))
    };
    let root = files
        .canonicalize(&absolute(root)?)
        .map_err(|e| Error::Invalid {
            file: root.display().to_string(),
            message: format!("cannot open root: {e}"),
        })?;
    let fs = Fs {
        files,
        root: root.clone(),
        restrictions: options.restrictions,
    };
    let dir_abs = absolute(dir)?;
    let shown = dir.display().to_string();
    let dir = match options.restrictions {
        LoadRestrictions::None => fs.confine(&root, &dir_abs, "", &shown)?,
        LoadRestrictions::RootOnly => files.canonicalize(&dir_abs).map_err(|e| Error::Invalid {
            file: shown.clone(),
            message: format!("cannot open the kustomization directory: {e}"),
        })?,
    };
    let mut b = Builder {
        fs,
        stack: Vec::new(),
        extra_patches: options.extra_patches.clone(),
    };
    let mut resources = Vec::new();
    b.accumulate(&dir, &mut resources, false)?;
    let top = b.fs.rel(&dir.join("kustomization.yaml"));
    for r in &mut resources {
        if r.needs_hash {
            let h = hash::hash_suffix(&r.obj);
            let name = format!("{}-{}", r.name(), h);
            r.store_previous_id();
            r.set_name(&name);
        }
    }
    nameref::fix(&mut resources).map_err(|message| Error::Invalid { file: top, message })?;
    Ok(resources.into_iter().map(|r| r.obj).collect())
}

pub(crate) struct Fs<'a> {
    files: &'a dyn FileSystem,
    root: PathBuf,
    restrictions: LoadRestrictions,
}

impl Fs<'_> {
    /// `p` (absolute, resolved) relative to the root: `.`, `base/x.yaml`, or
    /// `../shared/base` for a kustomization directory outside it.
    pub(crate) fn rel(&self, p: &Path) -> String {
        let up = self
            .root
            .ancestors()
            .position(|a| p.starts_with(a))
            .unwrap_or(0);
        let below = self.root.ancestors().nth(up).unwrap_or(Path::new("/"));
        let rest = p.strip_prefix(below).unwrap_or(p);
        let mut parts: Vec<String> = vec!["..".to_owned(); up];
        parts.extend(rest.iter().map(|c| c.to_string_lossy().into_owned()));
        if parts.is_empty() {
            ".".into()
        } else {
            parts.join("/")
        }
    }

    /// Resolves a `resources`, `bases` or `components` entry of the
    /// kustomization in `dir` (named `file`) to an existing path. With
    /// [`LoadRestrictions::None`] it must stay inside the root; with
    /// [`LoadRestrictions::RootOnly`] a directory may be anywhere, and a
    /// plain file is checked when it is read ([`Fs::read`]).
    fn resolve_entry(&self, dir: &Path, entry: &str, file: &str) -> Result<PathBuf, Error> {
        let target = dir.join(entry);
        match self.restrictions {
            LoadRestrictions::None => self.confine(&self.root, &target, file, entry),
            LoadRestrictions::RootOnly => {
                self.files
                    .canonicalize(&target)
                    .map_err(|e| Error::Invalid {
                        file: file.to_string(),
                        message: format!("cannot read {entry:?}: {e}"),
                    })
            }
        }
    }

    /// Resolves `target` (already joined) and checks that it stays under
    /// `boundary` (the root, or a kustomization directory for plain files).
    fn confine(
        &self,
        boundary: &Path,
        target: &Path,
        file: &str,
        shown: &str,
    ) -> Result<PathBuf, Error> {
        let file = if file.is_empty() { shown } else { file };
        let resolved = self.files.canonicalize(target).map_err(|e| {
            // A dangling or missing path: report whether it would escape
            // first, so `../../x` is an escape, not a "not found".
            if !lexically_inside(boundary, target) {
                Error::Escape {
                    file: file.to_string(),
                    path: shown.to_string(),
                    boundary: self.boundary_name(boundary),
                }
            } else {
                Error::Invalid {
                    file: file.to_string(),
                    message: format!("cannot read {shown:?}: {e}"),
                }
            }
        })?;
        if !resolved.starts_with(boundary) {
            return Err(Error::Escape {
                file: file.to_string(),
                path: shown.to_string(),
                boundary: self.boundary_name(boundary),
            });
        }
        Ok(resolved)
    }

    /// Only plain files are confined with [`LoadRestrictions::RootOnly`],
    /// to their kustomization's directory; everything is confined to the
    /// root with [`LoadRestrictions::None`].
    fn boundary_name(&self, boundary: &Path) -> String {
        match self.restrictions {
            LoadRestrictions::None => "the root".into(),
            LoadRestrictions::RootOnly => {
                format!("the kustomization directory {:?}", self.rel(boundary))
            }
        }
    }

    /// The bytes of the plain file `rel` named by the kustomization `file`
    /// in `dir`, borrowed when the filesystem holds them in memory.
    pub(crate) fn read(&self, dir: &Path, rel: &str, file: &str) -> Result<Cow<'_, [u8]>, Error> {
        let boundary = match self.restrictions {
            LoadRestrictions::RootOnly => dir,
            LoadRestrictions::None => self.root.as_path(),
        };
        let path = self.confine(boundary, &dir.join(rel), file, rel)?;
        self.files.read(&path).map_err(|e| Error::Invalid {
            file: file.to_string(),
            message: format!("cannot read {rel:?}: {e}"),
        })
    }

    pub(crate) fn read_string(
        &self,
        dir: &Path,
        rel: &str,
        file: &str,
    ) -> Result<Cow<'_, str>, Error> {
        let not_utf8 = || Error::Invalid {
            file: file.to_string(),
            message: format!("{rel:?} is not UTF-8"),
        };
        match self.read(dir, rel, file)? {
            Cow::Borrowed(b) => std::str::from_utf8(b)
                .map(Cow::Borrowed)
                .map_err(|_| not_utf8()),
            Cow::Owned(v) => String::from_utf8(v).map(Cow::Owned).map_err(|_| not_utf8()),
        }
    }

    pub(crate) fn is_dir(&self, path: &Path) -> bool {
        self.files.is_dir(path)
    }

    fn is_file(&self, path: &Path) -> bool {
        self.files.is_file(path)
    }
}

fn lexically_inside(boundary: &Path, target: &Path) -> bool {
    let mut parts: Vec<std::path::Component> = Vec::new();
    for c in target.components() {
        match c {
            std::path::Component::ParentDir => {
                parts.pop();
            }
            std::path::Component::CurDir => {}
            other => parts.push(other),
        }
    }
    parts.iter().collect::<PathBuf>().starts_with(boundary)
}

fn is_remote(s: &str) -> bool {
    s.contains("://")
        || s.starts_with("git@")
        || s.starts_with("github.com/")
        || s.starts_with("gitlab.com/")
        || s.starts_with("bitbucket.org/")
        || s.contains("?ref=")
        || s.contains(".git//")
}

/// Parses a multi-document YAML (or JSON) text into values, dropping empty
/// documents.
pub(crate) fn parse_docs(text: &str, file: &str) -> Result<Vec<Value>, Error> {
    // A leading byte order mark is dropped, as Go's YAML readers drop it
    // (serde_yaml_ng would count it as a column and misread the indentation).
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    check_aliases(text.as_bytes()).map_err(|message| invalid(file, message))?;
    let mut out = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let v: Value = serde::Deserialize::deserialize(doc).map_err(|e| Error::Invalid {
            file: file.to_string(),
            message: format!("invalid YAML: {e}"),
        })?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

pub(crate) fn invalid(file: &str, message: impl Into<String>) -> Error {
    Error::Invalid {
        file: file.to_string(),
        message: message.into(),
    }
}

const KUSTOMIZATION_FILES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// Fields this engine implements; every other known kustomization field
/// fails the build with its name.
const SUPPORTED: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "resources",
    "bases",
    "components",
    "namespace",
    "namePrefix",
    "nameSuffix",
    "commonLabels",
    "labels",
    "commonAnnotations",
    "images",
    "replicas",
    "patches",
    "patchesStrategicMerge",
    "patchesJson6902",
    "configMapGenerator",
    "secretGenerator",
    "generatorOptions",
];

pub(crate) struct Kustomization {
    pub dir: PathBuf,
    pub file: String,
    pub fields: serde_json::Map<String, Value>,
}

impl Kustomization {
    pub fn strings(&self, key: &str) -> Result<Vec<String>, Error> {
        match self.fields.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    _ => Err(invalid(
                        &self.file,
                        format!("{key} entries must be strings"),
                    )),
                })
                .collect(),
            Some(_) => Err(invalid(&self.file, format!("{key} must be a list"))),
        }
    }

    pub fn string(&self, key: &str) -> Result<String, Error> {
        match self.fields.get(key) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(invalid(&self.file, format!("{key} must be a string"))),
        }
    }

    pub fn list(&self, key: &str) -> Result<Vec<Value>, Error> {
        match self.fields.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(a)) => Ok(a.clone()),
            Some(_) => Err(invalid(&self.file, format!("{key} must be a list"))),
        }
    }

    /// A map of strings (labels, annotations), scalars turned into strings.
    pub fn string_map(&self, key: &str) -> Result<serde_json::Map<String, Value>, Error> {
        string_map(self.fields.get(key), &self.file, key)
    }
}

pub(crate) fn string_map(
    v: Option<&Value>,
    file: &str,
    key: &str,
) -> Result<serde_json::Map<String, Value>, Error> {
    match v {
        None | Some(Value::Null) => Ok(Default::default()),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| {
                let s = match v {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    Value::Bool(_) | Value::Number(_) => v.to_string(),
                    _ => return Err(invalid(file, format!("{key}.{k} must be a string"))),
                };
                Ok((k.clone(), Value::String(s)))
            })
            .collect(),
        Some(_) => Err(invalid(file, format!("{key} must be a map"))),
    }
}

pub(crate) struct Builder<'a> {
    pub fs: Fs<'a>,
    stack: Vec<PathBuf>,
    /// [`Options::extra_patches`], for the top-level kustomization.
    extra_patches: Vec<Value>,
}

impl Builder<'_> {
    fn load_kustomization(&self, dir: &Path) -> Result<Kustomization, Error> {
        let found: Vec<&str> = KUSTOMIZATION_FILES
            .iter()
            .copied()
            .filter(|f| self.fs.is_file(&dir.join(f)))
            .collect();
        let name = match found.as_slice() {
            [one] => *one,
            [] => {
                return Err(invalid(
                    &self.fs.rel(dir),
                    "no kustomization.yaml, kustomization.yml or Kustomization in the directory",
                ));
            }
            _ => {
                return Err(invalid(
                    &self.fs.rel(dir),
                    format!(
                        "found more than one kustomization file: {}",
                        found.join(", ")
                    ),
                ));
            }
        };
        let file = self.fs.rel(&dir.join(name));
        let text = self.fs.read_string(dir, name, &file)?;
        let mut docs = parse_docs(&text, &file)?;
        let fields = match docs.len() {
            0 => Default::default(),
            1 => match docs.pop() {
                Some(Value::Object(m)) => m,
                _ => return Err(invalid(&file, "a kustomization must be a map")),
            },
            _ => return Err(invalid(&file, "a kustomization must be a single document")),
        };
        for key in fields.keys() {
            if !SUPPORTED.contains(&key.as_str()) {
                return Err(Error::Unsupported {
                    file,
                    field: key.clone(),
                });
            }
        }
        Ok(Kustomization {
            dir: dir.to_path_buf(),
            file,
            fields,
        })
    }

    /// kustomize's accumulateTarget: resources, generators, components,
    /// then this kustomization's transformers over everything accumulated.
    fn accumulate(
        &mut self,
        dir: &Path,
        ra: &mut Vec<Resource>,
        is_component: bool,
    ) -> Result<(), Error> {
        if self.stack.iter().any(|d| d == dir) {
            return Err(invalid(
                &self.fs.rel(dir),
                "cycle detected: the kustomization includes itself",
            ));
        }
        // kustomize's loader refuses a directory that contains one it is
        // included from (`resources: [..]`).
        if self.fs.restrictions == LoadRestrictions::RootOnly
            && let Some(visited) = self.stack.iter().find(|d| d.starts_with(dir))
        {
            return Err(invalid(
                &self.fs.rel(dir),
                format!(
                    "cycle detected: the directory contains {:?}, which includes it",
                    self.fs.rel(visited)
                ),
            ));
        }
        if self.stack.len() == MAX_DEPTH {
            return Err(invalid(
                &self.fs.rel(dir),
                format!("kustomizations include one another more than {MAX_DEPTH} levels deep"),
            ));
        }
        let mut k = self.load_kustomization(dir)?;
        if self.stack.is_empty() && !self.extra_patches.is_empty() {
            // A `patches` that is not a list is reported by the transformers.
            let list = k.fields.entry("patches").or_insert(Value::Null);
            if list.is_null() {
                *list = Value::Array(Vec::new());
            }
            if let Value::Array(list) = list {
                list.append(&mut self.extra_patches);
            }
        }
        let kind = k.string("kind")?;
        match (is_component, kind.as_str()) {
            (true, "Component") | (false, "" | "Kustomization") => {}
            (true, _) => {
                return Err(invalid(&k.file, "a component must have kind: Component"));
            }
            (false, "Component") => {
                return Err(invalid(
                    &k.file,
                    "kind Component may only be used in components",
                ));
            }
            (false, other) => return Err(invalid(&k.file, format!("unknown kind {other:?}"))),
        }
        self.stack.push(dir.to_path_buf());
        let result = self.accumulate_inner(&k, ra);
        self.stack.pop();
        result
    }

    fn accumulate_inner(&mut self, k: &Kustomization, ra: &mut Vec<Resource>) -> Result<(), Error> {
        // Only `append` adds to `ra` until the generators run.
        let mut registered = Registered::of(ra);
        let mut entries = k.strings("resources")?;
        entries.extend(k.strings("bases")?);
        for entry in entries {
            if is_remote(&entry) {
                return Err(Error::Remote {
                    file: k.file.clone(),
                    path: entry,
                });
            }
            let path = self.fs.resolve_entry(&k.dir, &entry, &k.file)?;
            if self.fs.is_dir(&path) {
                let mut sub = Vec::new();
                self.accumulate(&path, &mut sub, false)?;
                for r in sub {
                    registered.append(ra, r, &k.file)?;
                }
            } else {
                // Plain files are confined as the restrictions say.
                let text = self.fs.read_string(&k.dir, &entry, &k.file)?;
                let shown = self.fs.rel(&path);
                for r in load_resources(&text, &shown)? {
                    registered.append(ra, r, &k.file)?;
                }
            }
        }
        generate::run(self, k, ra)?;
        for entry in k.strings("components")? {
            if is_remote(&entry) {
                return Err(Error::Remote {
                    file: k.file.clone(),
                    path: entry,
                });
            }
            let path = self.fs.resolve_entry(&k.dir, &entry, &k.file)?;
            if !self.fs.is_dir(&path) {
                return Err(invalid(
                    &k.file,
                    format!("component {entry:?} must be a directory"),
                ));
            }
            self.accumulate(&path, ra, true)?;
        }
        transform::run(self, k, ra)
    }
}

/// Parses resource documents, expanding `kind: List`.
pub(crate) fn load_resources(text: &str, file: &str) -> Result<Vec<Resource>, Error> {
    let mut out = Vec::new();
    for doc in parse_docs(text, file)? {
        let kind = doc.get("kind").and_then(Value::as_str).unwrap_or_default();
        if kind == "List" || (kind.ends_with("List") && doc.get("items").is_some()) {
            for item in doc
                .get("items")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
            {
                out.push(check_resource(item, file)?);
            }
        } else {
            out.push(check_resource(doc, file)?);
        }
    }
    Ok(out)
}

fn check_resource(v: Value, file: &str) -> Result<Resource, Error> {
    if !v.is_object() {
        return Err(invalid(file, "a resource must be a map"));
    }
    let r = Resource::new(v);
    if r.kind().is_empty() {
        return Err(invalid(file, "a resource is missing kind"));
    }
    if r.str_at(&["apiVersion"]).is_empty() {
        return Err(invalid(file, "a resource is missing apiVersion"));
    }
    if r.name().is_empty() {
        return Err(invalid(
            file,
            format!("a {} is missing metadata.name", r.kind()),
        ));
    }
    Ok(r)
}

/// The resources of a list by name, so that adding one compares its id with
/// the few resources of the same name only, rather than with every resource
/// (which made a build of n objects quadratic).
struct Registered {
    by_name: std::collections::HashMap<String, Vec<usize>>,
}

impl Registered {
    fn of(ra: &[Resource]) -> Registered {
        let mut by_name: std::collections::HashMap<_, Vec<usize>> = Default::default();
        for (i, r) in ra.iter().enumerate() {
            by_name.entry(r.name().to_owned()).or_default().push(i);
        }
        Registered { by_name }
    }

    /// Adds `r` to `ra` (which must be the list this was made of, changed by
    /// this only), refusing an id that is already there.
    fn append(&mut self, ra: &mut Vec<Resource>, r: Resource, file: &str) -> Result<(), Error> {
        if !self.by_name.contains_key(r.name()) {
            self.by_name.insert(r.name().to_owned(), Vec::new());
        }
        let same = self.by_name.get_mut(r.name()).expect("just inserted");
        if same.iter().any(|&i| ra[i].has_same_id(&r)) {
            return Err(invalid(
                file,
                format!(
                    "may not add resource with an already registered id: {}",
                    r.cur_id()
                ),
            ));
        }
        same.push(ra.len());
        ra.push(r);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use filesystem::Memory;

    fn build_files(files: &[(&str, &str)]) -> Result<Vec<Value>, Error> {
        let mut fs = Memory::new();
        for (path, text) in files {
            fs.insert(path, text.as_bytes().to_vec()).unwrap();
        }
        let options = Options {
            restrictions: LoadRestrictions::None,
            ..Options::default()
        };
        build_on(&fs, Path::new("."), Path::new("."), &options)
    }

    fn cm(name: &str, namespace: Option<&str>) -> String {
        let ns = namespace.map_or(String::new(), |n| format!("\n  namespace: {n}"));
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}{ns}\n---\n")
    }

    #[test]
    fn ids_are_unique_by_group_kind_name_and_effective_namespace() {
        let k = ("kustomization.yaml", "resources: [a.yaml, b.yaml]\n");
        // Another namespace, another kind or another group is another id.
        let b = format!(
            "{}{}apiVersion: apps/v1\nkind: ConfigMap\nmetadata:\n  name: x\n---\n{}",
            cm("x", Some("other")),
            cm("y", None),
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: x\n"
        );
        let objects = build_files(&[k, ("a.yaml", &cm("x", None)), ("b.yaml", &b)]).unwrap();
        assert_eq!(objects.len(), 5);
        // No namespace is `default`, within one file or across files.
        let err = build_files(&[
            k,
            ("a.yaml", &cm("x", Some("default"))),
            ("b.yaml", &cm("x", None)),
        ])
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "kustomization.yaml: may not add resource with an already registered id: v1 ConfigMap x"
        );
        let twice = format!("{}{}", cm("z", None), cm("z", Some("default")));
        let err = build_files(&[k, ("a.yaml", &twice), ("b.yaml", "")]).unwrap_err();
        assert!(
            err.to_string()
                .contains("already registered id: v1 ConfigMap z (namespace default)"),
            "{err}"
        );
    }
}
