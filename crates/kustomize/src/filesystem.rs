//! What a build reads: the [`FileSystem`] trait and its two implementations.
//!
//! The engine only ever asks three things of a filesystem: where a path
//! really leads ([`FileSystem::canonicalize`], the step every confinement
//! check is made on), what is there ([`FileSystem::kind`]), and the bytes
//! of a file ([`FileSystem::read`]). It never lists a directory (kustomize
//! reads only paths a kustomization names, plus the three kustomization file
//! names) and never writes.
//!
//! * [`Disk`] is the real filesystem, as `kubectl kustomize` sees it:
//!   symbolic links are followed by `canonicalize`, so the engine's checks
//!   see where a link leads, not where it sits.
//! * [`Memory`] is a map of `/`-separated relative paths to bytes (a fetched
//!   artifact), mounted at the virtual directory [`Memory::ROOT`]. It holds
//!   no symbolic links, so a path leads exactly where its components say;
//!   nothing outside the map exists except the directories above the root.
//!   Contents are borrowed where they can be ([`Memory::borrowed`]), so
//!   building an artifact copies none of its files.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io;
use std::ops::Bound;
use std::path::{Component, Path, PathBuf};

use crate::Error;

/// What is at a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
}

/// A read-only filesystem the engine builds from. Paths handed to it are
/// absolute except for [`FileSystem::current_dir`]'s callers' input.
pub trait FileSystem {
    /// The directory relative paths given to the engine start from: the
    /// process's working directory on disk, the root in memory.
    fn current_dir(&self) -> io::Result<PathBuf>;

    /// `path` (absolute) with `.`, `..` and symbolic links resolved, like
    /// `realpath(3)`: an error when it, or a directory on the way, does not
    /// exist, or when a file is used as a directory.
    fn canonicalize(&self, path: &Path) -> io::Result<PathBuf>;

    /// What `path` leads to, links followed; `None` when nothing is there.
    fn kind(&self, path: &Path) -> Option<Kind>;

    /// The contents of the file at `path`.
    fn read(&self, path: &Path) -> io::Result<Cow<'_, [u8]>>;

    fn is_file(&self, path: &Path) -> bool {
        self.kind(path) == Some(Kind::File)
    }

    fn is_dir(&self, path: &Path) -> bool {
        self.kind(path) == Some(Kind::Dir)
    }
}

/// The real filesystem (`std::fs`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Disk;

impl FileSystem for Disk {
    fn current_dir(&self) -> io::Result<PathBuf> {
        std::env::current_dir()
    }

    fn canonicalize(&self, path: &Path) -> io::Result<PathBuf> {
        path.canonicalize()
    }

    fn kind(&self, path: &Path) -> Option<Kind> {
        let meta = std::fs::metadata(path).ok()?;
        if meta.is_dir() {
            Some(Kind::Dir)
        } else if meta.is_file() {
            Some(Kind::File)
        } else {
            None
        }
    }

    fn read(&self, path: &Path) -> io::Result<Cow<'_, [u8]>> {
        std::fs::read(path).map(Cow::Owned)
    }
}

/// Files held in memory, keyed by clean relative paths (`app/cm.yaml`: no
/// leading `/`, no empty, `.` or `..` segment), seen under [`Memory::ROOT`].
///
/// A directory exists when some file lives below it; the root always exists.
/// A path may not be both a file and a directory (`a` and `a/b.yaml`):
/// [`Memory::insert`] refuses the second, as writing such a tree to disk
/// would fail.
#[derive(Clone, Debug, Default)]
pub struct Memory<'a> {
    files: BTreeMap<String, Cow<'a, [u8]>>,
}

fn not_found() -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, "No such file or directory")
}

fn not_a_directory() -> io::Error {
    io::Error::new(io::ErrorKind::NotADirectory, "Not a directory")
}

impl<'a> Memory<'a> {
    /// The virtual directory the files are seen under. Messages name paths
    /// relative to the build's root, so it shows only in the unusual message
    /// about an absolute path.
    pub const ROOT: &'static str = "/artifact";

    pub fn new() -> Memory<'a> {
        Memory::default()
    }

    /// A view of `files` that borrows their contents.
    pub fn borrowed(files: &'a BTreeMap<String, Vec<u8>>) -> Result<Memory<'a>, Error> {
        let mut fs = Memory::new();
        for (path, bytes) in files {
            fs.insert(path, bytes.as_slice())?;
        }
        Ok(fs)
    }

    /// [`Memory::ROOT`] as a path.
    pub fn root(&self) -> &'static Path {
        Path::new(Memory::ROOT)
    }

    /// Adds or replaces the file `path` (clean, relative).
    pub fn insert(&mut self, path: &str, bytes: impl Into<Cow<'a, [u8]>>) -> Result<(), Error> {
        let invalid = |message: &str| Error::Invalid {
            file: path.to_owned(),
            message: message.to_owned(),
        };
        if path.is_empty()
            || path
                .split('/')
                .any(|s| s.is_empty() || s == "." || s == ".." || s.contains('\0'))
        {
            return Err(invalid("not a clean relative path"));
        }
        if self.has_below(path) {
            return Err(invalid("is both a file and a directory"));
        }
        let mut parent = path;
        while let Some((up, _)) = parent.rsplit_once('/') {
            if self.files.contains_key(up) {
                return Err(Error::Invalid {
                    file: up.to_owned(),
                    message: "is both a file and a directory".to_owned(),
                });
            }
            parent = up;
        }
        self.files.insert(path.to_owned(), bytes.into());
        Ok(())
    }

    /// Removes the file `path`, returning its contents.
    pub fn remove(&mut self, path: &str) -> Option<Cow<'a, [u8]>> {
        self.files.remove(path)
    }

    /// The contents of the file `path` (relative).
    pub fn get(&self, path: &str) -> Option<&[u8]> {
        self.files.get(path).map(|b| b.as_ref())
    }

    /// What the relative path `path` (`""` for the root) is.
    pub fn kind_of(&self, path: &str) -> Option<Kind> {
        if path.is_empty() || self.has_below(path) {
            Some(Kind::Dir)
        } else if self.files.contains_key(path) {
            Some(Kind::File)
        } else {
            None
        }
    }

    /// True when some file lives below the directory `dir` (non-empty).
    fn has_below(&self, dir: &str) -> bool {
        let prefix = format!("{dir}/");
        self.files
            .range::<str, _>((Bound::Included(prefix.as_str()), Bound::Unbounded))
            .next()
            .is_some_and(|(k, _)| k.starts_with(&prefix))
    }

    /// The relative key of `path` when it is [`Memory::ROOT`] or below it;
    /// `None` for anything else (including non-UTF-8 names, which a map of
    /// `String`s cannot hold).
    fn key(&self, path: &Path) -> Option<String> {
        let rest = path.strip_prefix(Memory::ROOT).ok()?;
        let parts: Option<Vec<&str>> = rest
            .components()
            .map(|c| match c {
                Component::Normal(n) => n.to_str(),
                _ => None,
            })
            .collect();
        parts.map(|p| p.join("/"))
    }

    /// What an absolute, resolved path is: the root's ancestors are
    /// directories, nothing else outside the root exists.
    fn kind_at(&self, path: &Path) -> Option<Kind> {
        if self.root().starts_with(path) {
            return Some(Kind::Dir);
        }
        self.kind_of(&self.key(path)?)
    }
}

impl FileSystem for Memory<'_> {
    fn current_dir(&self) -> io::Result<PathBuf> {
        Ok(self.root().to_path_buf())
    }

    fn canonicalize(&self, path: &Path) -> io::Result<PathBuf> {
        let path = if path.is_absolute() {
            Cow::Borrowed(path)
        } else {
            Cow::Owned(self.root().join(path))
        };
        // Without links, resolving is walking the components, as realpath
        // does: every step must exist, and only a directory may be entered
        // or left with `..`.
        let mut resolved = PathBuf::from("/");
        let mut at = Kind::Dir;
        for component in path.components() {
            match component {
                Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
                Component::ParentDir => {
                    if at != Kind::Dir {
                        return Err(not_a_directory());
                    }
                    resolved.pop();
                }
                Component::Normal(name) => {
                    if at != Kind::Dir {
                        return Err(not_a_directory());
                    }
                    resolved.push(name);
                    at = self.kind_at(&resolved).ok_or_else(not_found)?;
                }
            }
        }
        // `cm.yaml/` and `cm.yaml/.` name a directory (components() drops
        // the trailing part).
        let text = path.to_string_lossy();
        if at == Kind::File && (text.ends_with('/') || text.ends_with("/.")) {
            return Err(not_a_directory());
        }
        Ok(resolved)
    }

    fn kind(&self, path: &Path) -> Option<Kind> {
        let resolved = self.canonicalize(path).ok()?;
        self.kind_at(&resolved)
    }

    fn read(&self, path: &Path) -> io::Result<Cow<'_, [u8]>> {
        let resolved = self.canonicalize(path)?;
        match self.kind_at(&resolved) {
            Some(Kind::File) => {
                let key = self.key(&resolved).ok_or_else(not_found)?;
                let bytes = self.files.get(&key).ok_or_else(not_found)?;
                Ok(Cow::Borrowed(bytes.as_ref()))
            }
            Some(Kind::Dir) => Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                "Is a directory",
            )),
            None => Err(not_found()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fs() -> Memory<'static> {
        let mut fs = Memory::new();
        fs.insert("kustomization.yaml", &b"resources: [app]\n"[..])
            .unwrap();
        fs.insert("app/cm.yaml", &b"kind: ConfigMap\n"[..]).unwrap();
        fs.insert("app/sub/x.yaml", &b"x"[..]).unwrap();
        fs
    }

    fn at(rel: &str) -> PathBuf {
        Path::new(Memory::ROOT).join(rel)
    }

    #[test]
    fn canonicalize_walks_like_realpath() {
        let fs = fs();
        let root = Path::new(Memory::ROOT);
        assert_eq!(fs.canonicalize(root).unwrap(), root);
        assert_eq!(fs.canonicalize(&at("app/./sub/..")).unwrap(), at("app"));
        assert_eq!(
            fs.canonicalize(&at("app/sub/../../app/cm.yaml")).unwrap(),
            at("app/cm.yaml")
        );
        assert_eq!(fs.canonicalize(Path::new("app")).unwrap(), at("app"));
        // Above the root: its ancestors exist, nothing else does.
        assert_eq!(fs.canonicalize(&at("..")).unwrap(), Path::new("/"));
        assert_eq!(fs.canonicalize(&at("../../..")).unwrap(), Path::new("/"));
        let missing = fs.canonicalize(&at("../etc/passwd")).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
        assert_eq!(missing.to_string(), "No such file or directory");
        // A step through something missing fails even when `..` undoes it.
        assert!(fs.canonicalize(&at("nope/../app")).is_err());
        // A file is not a directory.
        for p in ["app/cm.yaml/..", "app/cm.yaml/x", "app/cm.yaml/"] {
            let e = fs.canonicalize(&at(p)).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::NotADirectory, "{p}");
        }
        // A name that is only a prefix of a directory is not one.
        assert!(fs.canonicalize(&at("ap")).is_err());
    }

    #[test]
    fn kinds_and_reads() {
        let fs = fs();
        assert_eq!(fs.kind(&at("app")), Some(Kind::Dir));
        assert_eq!(fs.kind(&at("app/sub/../cm.yaml")), Some(Kind::File));
        assert_eq!(fs.kind(&at("app/none.yaml")), None);
        assert_eq!(fs.kind(Path::new("/")), Some(Kind::Dir));
        assert_eq!(fs.kind(Path::new("/etc")), None);
        assert_eq!(&*fs.read(&at("app/cm.yaml")).unwrap(), b"kind: ConfigMap\n");
        assert!(matches!(
            fs.read(&at("app/cm.yaml")).unwrap(),
            Cow::Borrowed(_)
        ));
        assert_eq!(
            fs.read(&at("app")).unwrap_err().kind(),
            io::ErrorKind::IsADirectory
        );
        assert_eq!(
            fs.read(&at("x.yaml")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }

    #[test]
    fn paths_are_clean_and_files_are_not_directories() {
        let mut fs = fs();
        for bad in ["", "/a", "a//b", "./a", "a/../b", "a/.", "a\0b"] {
            let e = fs.insert(bad, &b""[..]).unwrap_err();
            assert!(
                e.to_string().contains("not a clean relative path"),
                "{bad:?}: {e}"
            );
        }
        let e = fs.insert("app/cm.yaml/x", &b""[..]).unwrap_err();
        assert_eq!(e.to_string(), "app/cm.yaml: is both a file and a directory");
        let e = fs.insert("app/sub", &b""[..]).unwrap_err();
        assert_eq!(e.to_string(), "app/sub: is both a file and a directory");
        // Replacing and removing files.
        fs.insert("app/cm.yaml", b"new".to_vec()).unwrap();
        assert_eq!(fs.get("app/cm.yaml"), Some(&b"new"[..]));
        assert!(fs.remove("app/cm.yaml").is_some());
        assert_eq!(fs.kind_of("app/cm.yaml"), None);
        assert_eq!(fs.kind_of("app"), Some(Kind::Dir));
        assert_eq!(fs.kind_of(""), Some(Kind::Dir));
    }
}
