//! A real HTTP artifact server for the `dev` command and the integration
//! tests, plus helpers that build (well-formed and hostile) tar.gz artifacts.
//!
//! The server listens on `127.0.0.1:<random port>` over plain HTTP, so the
//! fetcher needs `allow_loopback` (the hidden `--allow-loopback-artifacts`
//! flag, docs/decisions.md 13) to reach it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::reconcile::artifact::sha256_digest;

/// What a published path answers.
#[derive(Clone, Debug)]
enum Route {
    Bytes(Bytes),
    Chunked(Bytes),
    Status(u16),
    Redirect(String),
}

#[derive(Default)]
struct State {
    routes: HashMap<String, Route>,
    hits: HashMap<String, u64>,
}

/// A published artifact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    pub url: String,
    /// `sha256:<lowercase hex>`.
    pub digest: String,
    pub size: u64,
}

/// Serves published byte blobs over HTTP until dropped.
pub struct ArtifactServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ArtifactServer {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every
        // connection task (keep-alive connections included).
        self.task.abort();
    }
}

fn normalise(path: &str) -> String {
    if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    }
}

impl ArtifactServer {
    /// Binds 127.0.0.1:0 and serves in a background task of the current
    /// tokio runtime.
    pub async fn start() -> io::Result<ArtifactServer> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State::default()));
        let task = tokio::spawn(serve(listener, state.clone()));
        Ok(ArtifactServer { addr, state, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stores bytes under a path (replacing what was there) and returns
    /// their URL and `sha256:<hex>` digest.
    pub fn publish(&self, path: &str, bytes: Vec<u8>) -> Published {
        let path = normalise(path);
        let published = Published {
            url: self.url_for(&path),
            digest: sha256_digest(&bytes),
            size: bytes.len() as u64,
        };
        self.route(path, Route::Bytes(Bytes::from(bytes)));
        published
    }

    /// Like [`ArtifactServer::publish`], but served with chunked transfer
    /// encoding (no `Content-Length`, 16 KiB chunks), as a server that does
    /// not announce the size would.
    pub fn publish_chunked(&self, path: &str, bytes: Vec<u8>) -> Published {
        let path = normalise(path);
        let published = Published {
            url: self.url_for(&path),
            digest: sha256_digest(&bytes),
            size: bytes.len() as u64,
        };
        self.route(path, Route::Chunked(Bytes::from(bytes)));
        published
    }

    /// Makes a path answer with a bare status code (e.g. 500, 503).
    pub fn respond_status(&self, path: &str, status: u16) -> String {
        let path = normalise(path);
        self.route(path.clone(), Route::Status(status));
        self.url_for(&path)
    }

    /// Makes a path answer `302 Found` with `Location: location`.
    pub fn redirect(&self, path: &str, location: &str) -> String {
        let path = normalise(path);
        self.route(path.clone(), Route::Redirect(location.to_string()));
        self.url_for(&path)
    }

    /// Forgets a path (it answers 404 again).
    pub fn remove(&self, path: &str) {
        self.state.lock().unwrap().routes.remove(&normalise(path));
    }

    fn route(&self, path: String, route: Route) {
        self.state.lock().unwrap().routes.insert(path, route);
    }

    /// `http://127.0.0.1:<port>/<path>`.
    pub fn url_for(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, normalise(path))
    }

    /// Number of GET requests served for a path (whatever they answered).
    pub fn hits(&self, path: &str) -> u64 {
        let state = self.state.lock().unwrap();
        state.hits.get(&normalise(path)).copied().unwrap_or(0)
    }
}

async fn serve(listener: TcpListener, state: Arc<Mutex<State>>) {
    let mut connections = JoinSet::new();
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "artifact server: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        // Reap finished connections so the set does not grow forever.
        while connections.try_join_next().is_some() {}
        let state = state.clone();
        connections.spawn(async move {
            let service = service_fn(move |req| handle(req, state.clone()));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<Mutex<State>>,
) -> Result<Response<BoxBody<Bytes, Infallible>>, Infallible> {
    let path = req.uri().path().to_string();
    let route = {
        let mut state = state.lock().unwrap();
        if req.method() == Method::GET {
            *state.hits.entry(path.clone()).or_default() += 1;
        }
        state.routes.get(&path).cloned()
    };
    let response = |status: StatusCode| Response::builder().status(status);
    let full = |b: Bytes| Full::new(b).boxed();
    let head = req.method() == Method::HEAD;
    let resp = match (req.method(), route) {
        (&Method::GET | &Method::HEAD, None) => response(StatusCode::NOT_FOUND)
            .header("content-type", "text/plain")
            .body(full(Bytes::from_static(b"not found\n"))),
        (&Method::GET | &Method::HEAD, Some(Route::Bytes(b))) => response(StatusCode::OK)
            .header("content-type", "application/gzip")
            .header("content-length", b.len())
            .body(full(if head { Bytes::new() } else { b })),
        (&Method::GET | &Method::HEAD, Some(Route::Chunked(b))) => {
            let chunks: Vec<Result<Frame<Bytes>, Infallible>> = if head {
                Vec::new()
            } else {
                (0..b.len())
                    .step_by(16 * 1024)
                    .map(|i| Ok(Frame::data(b.slice(i..b.len().min(i + 16 * 1024)))))
                    .collect()
            };
            response(StatusCode::OK)
                .header("content-type", "application/gzip")
                .body(StreamBody::new(futures::stream::iter(chunks)).boxed())
        }
        (&Method::GET | &Method::HEAD, Some(Route::Status(s))) => {
            response(StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
                .body(full(Bytes::new()))
        }
        (&Method::GET | &Method::HEAD, Some(Route::Redirect(to))) => response(StatusCode::FOUND)
            .header("location", to)
            .body(full(Bytes::new())),
        _ => response(StatusCode::METHOD_NOT_ALLOWED)
            .header("allow", "GET, HEAD")
            .body(full(Bytes::new())),
    };
    Ok(resp.expect("static response parts are valid"))
}

fn gzip(tar: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(tar).expect("writing to a Vec cannot fail");
    enc.finish().expect("writing to a Vec cannot fail")
}

fn regular_header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

/// A tar.gz of regular files (mode 0644, mtime 0, uid/gid 0), in the given
/// order. Names must be relative without `..` (use [`tar_gz_raw`] for
/// hostile names); long names get a GNU long-name entry.
pub fn tar_gz(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = regular_header(data.len() as u64);
        b.append_data(&mut h, name, *data)
            .unwrap_or_else(|e| panic!("tar_gz: entry {name:?}: {e}"));
    }
    gzip(&b.into_inner().expect("writing to a Vec cannot fail"))
}

/// A tar.gz of every regular file under `dir` (recursively, symlinks not
/// followed), with `/`-separated relative paths, sorted.
pub fn tar_gz_dir(dir: &Path) -> io::Result<Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) -> io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let path = entry.path();
            let ty = entry.file_type()?;
            if ty.is_dir() {
                walk(root, &path, out)?;
            } else if ty.is_file() {
                let rel = path.strip_prefix(root).map_err(io::Error::other)?;
                let parts: Option<Vec<&str>> = rel.iter().map(|p| p.to_str()).collect();
                let name = parts.map(|p| p.join("/")).ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("non-UTF-8 file name {}", rel.display()),
                    )
                })?;
                out.push((name, std::fs::read(&path)?));
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(dir, dir, &mut files)?;
    files.sort();
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    Ok(tar_gz(&refs))
}

/// A tar.gz of regular files whose header name bytes are written verbatim
/// (no validation), so `../x`, `/abs`, `a\b` or NUL bytes are possible.
/// Names longer than 100 bytes get a GNU long-name entry, also verbatim.
pub fn tar_gz_raw(entries: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in entries {
        let short = if name.len() > 100 {
            let mut long = name.to_vec();
            long.push(0);
            let mut lh = tar::Header::new_gnu();
            lh.set_entry_type(tar::EntryType::GNULongName);
            lh.set_size(long.len() as u64);
            lh.set_mode(0o644);
            lh.set_mtime(0);
            set_raw_name(&mut lh, b"././@LongLink");
            lh.set_cksum();
            b.append(&lh, long.as_slice()).expect("Vec write");
            &name[..100]
        } else {
            name
        };
        let mut h = regular_header(data.len() as u64);
        set_raw_name(&mut h, short);
        h.set_cksum();
        b.append(&h, *data).expect("Vec write");
    }
    gzip(&b.into_inner().expect("Vec write"))
}

fn set_raw_name(h: &mut tar::Header, name: &[u8]) {
    let field = &mut h.as_gnu_mut().expect("GNU header").name;
    field.fill(0);
    field[..name.len()].copy_from_slice(name);
}

/// A small gzip stream that inflates to a tar holding one regular entry
/// `bomb.yaml` of `inflated_bytes` zero bytes (then the end-of-archive
/// blocks). Built as a multi-member gzip from one pre-compressed 1 MiB
/// member repeated, so even a multi-GiB bomb is built in milliseconds and
/// is about 1/1000 of its inflated size.
pub fn gzip_bomb(inflated_bytes: u64) -> Vec<u8> {
    const CHUNK: u64 = 1024 * 1024;
    let mut h = regular_header(inflated_bytes);
    set_raw_name(&mut h, b"bomb.yaml");
    h.set_cksum();

    let mut out = gzip(h.as_bytes());
    let zeros = vec![0u8; CHUNK as usize];
    let chunk_member = gzip(&zeros);
    let mut left = inflated_bytes;
    while left >= CHUNK {
        out.extend_from_slice(&chunk_member);
        left -= CHUNK;
    }
    // Remainder, padding to a 512-byte block, and two end-of-archive blocks.
    let pad = (512 - inflated_bytes % 512) % 512;
    out.extend_from_slice(&gzip(&vec![0u8; (left + pad + 1024) as usize]));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::artifact::{Limits, extract};

    #[test]
    fn tar_gz_is_deterministic_and_extracts() {
        let a = tar_gz(&[("a.yaml", b"a: 1\n"), ("dir/b.yaml", b"b: 2\n")]);
        assert_eq!(
            a,
            tar_gz(&[("a.yaml", b"a: 1\n"), ("dir/b.yaml", b"b: 2\n")])
        );
        let files = extract(a.as_slice(), &Limits::default()).unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(files["dir/b.yaml"], b"b: 2\n");
    }

    #[test]
    fn small_bomb_is_a_valid_archive() {
        let bomb = gzip_bomb(3 * 1024 * 1024 + 7);
        let files = extract(bomb.as_slice(), &Limits::default()).unwrap();
        assert_eq!(files["bomb.yaml"].len(), 3 * 1024 * 1024 + 7);
        assert!(files["bomb.yaml"].iter().all(|&b| b == 0));
        assert!(bomb.len() < 16 * 1024, "{}", bomb.len());
    }

    #[test]
    fn raw_long_names() {
        let long = "d/".repeat(60) + "x.yaml";
        let a = tar_gz_raw(&[(long.as_bytes(), b"x")]);
        let files = extract(a.as_slice(), &Limits::default()).unwrap();
        assert_eq!(files[&long], b"x");
    }
}
