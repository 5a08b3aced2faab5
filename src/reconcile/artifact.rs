//! Artifact download, verification and extraction (delivery.md §2.2).
//!
//! [`Fetcher::fetch`] GETs a Flux source artifact through the outbound guard
//! ([`super::outbound`]), keeps the body in memory (the chunks as they
//! arrive, nothing is written to disk) while hashing it, verifies the SHA-256
//! digest, and only then extracts the tar.gz into an in-memory map
//! `path → content` with [`extract`], releasing each chunk once read.
//!
//! Every size is bounded (see [`Limits`]); nothing is ever allocated in
//! proportion to what the server or the archive *claims*, only to what was
//! checked against a cap.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read};
use std::rc::Rc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use flate2::read::MultiGzDecoder;
use sha2::{Digest, Sha256};

use super::outbound::{self, GuardError};

const MIB: u64 = 1024 * 1024;

/// Size caps (delivery.md §2.2; not user-configurable, [`Fetcher::with_limits`]
/// exists for tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of the HTTP body (the .tar.gz). Default 64 MiB.
    pub compressed: u64,
    /// Bytes coming out of the gzip decoder. Default 512 MiB.
    pub inflated: u64,
    /// Bytes of one tar entry (header size and bytes read). Default 16 MiB.
    pub entry: u64,
    /// Bytes of all kept entries together. Default 64 MiB.
    pub extracted: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            compressed: 64 * MIB,
            inflated: 512 * MIB,
            entry: 16 * MIB,
            extracted: 64 * MIB,
        }
    }
}

/// Largest GNU long-name / PAX extension record accepted. These are read
/// into memory to learn an entry's name, so they get their own small cap.
const MAX_METADATA_ENTRY: u64 = 64 * 1024;

/// `64 MiB`, or `1000 bytes` for limits that are not whole MiB (tests).
struct Size(u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 >= MIB && self.0.is_multiple_of(MIB) {
            write!(f, "{} MiB", self.0 / MIB)
        } else {
            write!(f, "{} bytes", self.0)
        }
    }
}

/// Why a fetch failed. [`FetchError::is_terminal`] tells whether retrying
/// the same URL and digest can ever help.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// The URL, a redirect target or a resolved address was refused.
    #[error(transparent)]
    Guard(#[from] GuardError),
    /// The expected digest is not `sha256:<64 hex>`.
    #[error("invalid artifact digest {digest:?}: {reason}")]
    InvalidDigest { digest: String, reason: String },
    /// The downloaded bytes do not hash to the expected digest.
    #[error("artifact digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: String, actual: String },
    #[error("artifact exceeds the compressed size limit of {}", Size(*limit))]
    CompressedTooLarge { limit: u64 },
    #[error("artifact inflates beyond the limit of {} (gzip bomb?)", Size(*limit))]
    InflatedTooLarge { limit: u64 },
    #[error("artifact entry {name:?} exceeds the per-entry limit of {}", Size(*limit))]
    EntryTooLarge { name: String, limit: u64 },
    #[error("artifact files exceed the total extracted size limit of {}", Size(*limit))]
    ExtractedTooLarge { limit: u64 },
    #[error("artifact contains more than one entry for {name:?}")]
    DuplicateEntry { name: String },
    /// Absolute path, `..` segment, NUL or backslash in an entry name.
    #[error(
        "artifact entry name {name:?} is unsafe (absolute, \"..\" segment, NUL or backslash); artifact refused"
    )]
    UnsafeEntry { name: String },
    /// The server answered something other than 200.
    #[error("GET {url} returned HTTP {status}")]
    Http { status: u16, url: String },
    /// Connecting, sending or receiving failed (incl. timeouts).
    #[error("fetching artifact: {0}")]
    Network(String),
    /// The gzip or tar stream is corrupt.
    #[error("corrupt artifact archive: {0}")]
    Archive(String),
    /// Local I/O failed (the extraction task did not finish).
    #[error("artifact I/O error: {0}")]
    Io(String),
}

impl FetchError {
    /// Terminal errors are not retried (stage reason `StageFailed`, no
    /// requeue; a new source revision re-triggers the reconcile).
    ///
    /// Terminal per the spec: guard errors (scheme, host, address), invalid
    /// digest, digest mismatch, the compressed / inflated / extracted-total
    /// caps and duplicate entries; plus our own [`FetchError::UnsafeEntry`].
    ///
    /// [`FetchError::Archive`] is terminal too (our decision): the archive
    /// is only extracted after its digest was verified, so the same URL and
    /// digest always yield the same corrupt bytes and a retry cannot
    /// succeed.
    ///
    /// Not terminal: the per-entry cap (the spec keeps it out of the terminal
    /// set), HTTP status errors, network errors and local I/O errors.
    pub fn is_terminal(&self) -> bool {
        match self {
            FetchError::Guard(_)
            | FetchError::InvalidDigest { .. }
            | FetchError::DigestMismatch { .. }
            | FetchError::CompressedTooLarge { .. }
            | FetchError::InflatedTooLarge { .. }
            | FetchError::ExtractedTooLarge { .. }
            | FetchError::DuplicateEntry { .. }
            | FetchError::UnsafeEntry { .. }
            | FetchError::Archive(_) => true,
            FetchError::EntryTooLarge { .. }
            | FetchError::Http { .. }
            | FetchError::Network(_)
            | FetchError::Io(_) => false,
        }
    }
}

impl From<io::Error> for FetchError {
    fn from(e: io::Error) -> Self {
        FetchError::Io(e.to_string())
    }
}

impl From<FetchError> for crate::reconcile::error::Error {
    /// Refused or malformed artifacts are terminal (the same digest fails the
    /// same way); HTTP, network and I/O failures are retried.
    fn from(e: FetchError) -> Self {
        use crate::reconcile::error::Error;
        if e.is_terminal() {
            Error::Terminal(e.to_string())
        } else {
            Error::Transient(e.to_string())
        }
    }
}

/// A verified, extracted artifact.
#[derive(Clone, PartialEq, Eq)]
pub struct Artifact {
    /// Cleaned relative path → content, regular files only.
    pub files: BTreeMap<String, Vec<u8>>,
    /// `sha256:<lowercase hex>`, as verified.
    pub digest: String,
    /// Bytes downloaded.
    pub compressed_size: u64,
}

impl fmt::Debug for Artifact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let files: BTreeMap<&str, usize> = self
            .files
            .iter()
            .map(|(k, v)| (k.as_str(), v.len()))
            .collect();
        f.debug_struct("Artifact")
            .field("files", &files)
            .field("digest", &self.digest)
            .field("compressed_size", &self.compressed_size)
            .finish()
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0xf) as usize] as char);
    }
    s
}

/// `sha256:<lowercase hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

/// Parses an expected digest `"<algo>:<hex>"`: case-insensitive, only
/// `sha256` with exactly 64 hex characters.
pub fn parse_digest(digest: &str) -> Result<[u8; 32], FetchError> {
    let invalid = |reason: &str| FetchError::InvalidDigest {
        digest: digest.chars().take(100).collect(),
        reason: reason.to_string(),
    };
    let Some((algo, hex)) = digest.split_once(':') else {
        return Err(invalid("expected \"sha256:<hex>\""));
    };
    if !algo.eq_ignore_ascii_case("sha256") {
        return Err(invalid("only sha256 is supported"));
    }
    let hex = hex.as_bytes();
    if hex.len() != 64 {
        return Err(invalid("a sha256 digest has exactly 64 hex characters"));
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        let nibble = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        };
        match (nibble(pair[0]), nibble(pair[1])) {
            (Some(h), Some(l)) => out[i] = (h << 4) | l,
            _ => return Err(invalid("not a hex string")),
        }
    }
    Ok(out)
}

/// Downloads and extracts artifacts through the outbound guard.
#[derive(Clone, Debug)]
pub struct Fetcher {
    client: reqwest::Client,
    allow_loopback: bool,
    limits: Limits,
}

/// Client timeout of artifact downloads (whole request incl. body).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5 * 60);

impl Fetcher {
    /// A guarded client with the 5 min timeout and the default [`Limits`].
    /// `allow_loopback` is the hidden `--allow-loopback-artifacts` flag.
    pub fn new(allow_loopback: bool) -> Fetcher {
        Fetcher::with_limits(allow_loopback, Limits::default())
    }

    pub fn with_limits(allow_loopback: bool, limits: Limits) -> Fetcher {
        Fetcher {
            client: outbound::guarded_client(allow_loopback, FETCH_TIMEOUT),
            allow_loopback,
            limits,
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// GETs `url`, verifies it against `digest` and extracts it.
    ///
    /// Order: digest syntax, URL guard, GET (non-200 → [`FetchError::Http`]),
    /// body kept in memory with SHA-256 and the compressed cap, digest
    /// comparison, extraction ([`extract`]) on a blocking thread.
    pub async fn fetch(&self, url: &str, digest: &str) -> Result<Artifact, FetchError> {
        let expected = parse_digest(digest)?;
        let parsed = outbound::check_url(url, self.allow_loopback)?;

        let mut resp = self
            .client
            .get(parsed)
            .send()
            .await
            .map_err(|e| request_error(&e))?;
        let status = resp.status();
        if status != reqwest::StatusCode::OK {
            return Err(FetchError::Http {
                status: status.as_u16(),
                url: outbound::display_url(resp.url()),
            });
        }
        if resp
            .content_length()
            .is_some_and(|n| n > self.limits.compressed)
        {
            return Err(FetchError::CompressedTooLarge {
                limit: self.limits.compressed,
            });
        }

        // The chunks as received: no copy into one buffer, no temporary file
        // (the pod's ephemeral storage is small; production.md).
        let mut body: Vec<Bytes> = Vec::new();
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        while let Some(chunk) = resp.chunk().await.map_err(|e| request_error(&e))? {
            size += chunk.len() as u64;
            if size > self.limits.compressed {
                return Err(FetchError::CompressedTooLarge {
                    limit: self.limits.compressed,
                });
            }
            hasher.update(&chunk);
            body.push(chunk);
        }
        drop(resp);

        let actual: [u8; 32] = hasher.finalize().into();
        if actual != expected {
            return Err(FetchError::DigestMismatch {
                expected: format!("sha256:{}", hex(&expected)),
                actual: format!("sha256:{}", hex(&actual)),
            });
        }

        let limits = self.limits;
        let files = tokio::task::spawn_blocking(move || {
            extract(
                Chunks {
                    rest: body.into_iter(),
                    current: Bytes::new(),
                },
                &limits,
            )
        })
        .await
        .map_err(|e| FetchError::Io(format!("extraction task failed: {e}")))??;

        Ok(Artifact {
            files,
            digest: format!("sha256:{}", hex(&actual)),
            compressed_size: size,
        })
    }
}

fn request_error(e: &reqwest::Error) -> FetchError {
    if let Some(g) = outbound::guard_error_of(e) {
        return FetchError::Guard(g);
    }
    let mut msg = outbound::error_chain(e);
    if e.is_timeout() {
        msg.push_str(&format!(" (timeout {}s)", FETCH_TIMEOUT.as_secs()));
    }
    FetchError::Network(msg)
}

/// Reads a body kept as its chunks, dropping each once it is read.
struct Chunks {
    rest: std::vec::IntoIter<Bytes>,
    current: Bytes,
}

impl Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rest.next() {
                Some(chunk) => self.current = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}

/// Counts bytes read out of the gzip decoder and fails once more than
/// `limit` come out, so a gzip bomb stops at the cap.
struct CappedReader<R> {
    inner: R,
    read: u64,
    limit: u64,
    exceeded: Rc<Cell<bool>>,
}

impl<R: Read> Read for CappedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.exceeded.get() {
            return Err(io::Error::other("inflated size limit exceeded"));
        }
        let remaining = self.limit - self.read;
        if remaining == 0 {
            // At the cap: only end-of-stream is acceptable.
            let mut probe = [0u8; 1];
            if buf.is_empty() || self.inner.read(&mut probe)? == 0 {
                return Ok(0);
            }
            self.exceeded.set(true);
            return Err(io::Error::other("inflated size limit exceeded"));
        }
        let want = buf
            .len()
            .min(usize::try_from(remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.read += n as u64;
        Ok(n)
    }
}

/// What to do with an entry name.
enum Name {
    Keep(String),
    Skip,
}

/// Classifies a raw tar entry name.
///
/// **Deliberate deviation from upstream**: names that are absolute, contain
/// a `..` segment, NUL or `\` are an error ([`FetchError::UnsafeEntry`])
/// that fails the whole artifact closed, where upstream (and delivery.md
/// §2.2) silently skips them. An artifact trying path traversal is hostile
/// or broken; applying the rest of it would hide that.
///
/// Silently skipped (as upstream): empty names, names with a segment
/// starting with `.` (hidden files and directories such as `.git/config`;
/// `.` segments themselves are cleaned away), and names with any byte
/// outside `[A-Za-z0-9._/-]`. Kept names are cleaned like Go `path.Clean`
/// (`//` and `./` collapsed, trailing `/` dropped).
fn classify_name(raw: &[u8]) -> Result<Name, FetchError> {
    if raw.is_empty() {
        return Ok(Name::Skip);
    }
    let unsafe_entry = || FetchError::UnsafeEntry {
        name: String::from_utf8_lossy(raw).into_owned(),
    };
    if raw.contains(&0) || raw.contains(&b'\\') || raw[0] == b'/' {
        return Err(unsafe_entry());
    }
    if raw.split(|&b| b == b'/').any(|seg| seg == b"..") {
        return Err(unsafe_entry());
    }
    if !raw
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b'-'))
    {
        return Ok(Name::Skip);
    }
    let mut segments = Vec::new();
    for seg in raw.split(|&b| b == b'/') {
        match seg {
            b"" | b"." => {}
            s if s[0] == b'.' => return Ok(Name::Skip),
            s => segments.push(std::str::from_utf8(s).expect("ASCII checked above")),
        }
    }
    if segments.is_empty() {
        return Ok(Name::Skip);
    }
    Ok(Name::Keep(segments.join("/")))
}

fn archive_error(e: io::Error, exceeded: &Cell<bool>, limits: &Limits) -> FetchError {
    if exceeded.get() {
        FetchError::InflatedTooLarge {
            limit: limits.inflated,
        }
    } else {
        FetchError::Archive(e.to_string())
    }
}

/// Reads a metadata entry (GNU long name, PAX header) under its own cap.
fn read_metadata<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    exceeded: &Cell<bool>,
    limits: &Limits,
) -> Result<Vec<u8>, FetchError> {
    if entry.size() > MAX_METADATA_ENTRY {
        return Err(FetchError::Archive(format!(
            "tar metadata entry of {} bytes exceeds {} bytes",
            entry.size(),
            MAX_METADATA_ENTRY
        )));
    }
    let mut buf = Vec::with_capacity(entry.size() as usize);
    entry
        .read_to_end(&mut buf)
        .map_err(|e| archive_error(e, exceeded, limits))?;
    Ok(buf)
}

/// Extracts a gzip'ed tar (multi-member gzip allowed) into `path → content`
/// under `limits`.
///
/// Entry names: empty → skipped; absolute, containing NUL or `\`, or with
/// a `..` segment → [`FetchError::UnsafeEntry`] for the whole artifact
/// (**deliberate deviation**: delivery.md §2.2 and upstream skip such
/// entries silently; we fail closed because an artifact attempting path
/// traversal is hostile or broken and applying the rest would hide that);
/// any segment starting with `.` (hidden files/dirs, e.g. `.git/config`) or
/// any byte outside `[A-Za-z0-9._/-]` → skipped silently. Kept names are
/// cleaned like Go `path.Clean`; two entries cleaning to the same name →
/// [`FetchError::DuplicateEntry`].
///
/// Only regular-file entries are kept; directories, symlinks, hard links,
/// devices, FIFOs, sparse files and PAX global headers are ignored. The tar
/// stream is walked in raw mode: GNU long names and PAX `path` records are
/// interpreted here, capped at 64 KiB each, because the `tar` crate would
/// otherwise read them into memory whatever their size. A PAX `size` record
/// that disagrees with the header size is refused as corrupt.
///
/// Caps: the inflated stream is counted as it leaves the decoder (and an
/// entry whose header size would take the stream past the cap fails before
/// any of it is inflated); the per-entry cap and the total cap apply to kept
/// entries only (header size first, then bytes actually read). Skipped
/// entries are never buffered; their bytes still count towards the inflated
/// cap.
pub fn extract(
    tar_gz: impl Read,
    limits: &Limits,
) -> Result<BTreeMap<String, Vec<u8>>, FetchError> {
    let exceeded = Rc::new(Cell::new(false));
    let reader = CappedReader {
        inner: MultiGzDecoder::new(tar_gz),
        read: 0,
        limit: limits.inflated,
        exceeded: exceeded.clone(),
    };
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries()
        .map_err(|e| archive_error(e, &exceeded, limits))?
        .raw(true);

    let mut files = BTreeMap::new();
    let mut total: u64 = 0;
    let mut long_name: Option<Vec<u8>> = None;
    let mut pax: Option<Vec<u8>> = None;

    for entry in entries {
        let mut entry = entry.map_err(|e| archive_error(e, &exceeded, limits))?;
        let size = entry.size();
        if entry.raw_file_position().saturating_add(size) > limits.inflated {
            return Err(FetchError::InflatedTooLarge {
                limit: limits.inflated,
            });
        }
        let kind = entry.header().entry_type();

        if kind.is_gnu_longname() {
            if long_name.is_some() {
                return Err(FetchError::Archive(
                    "two GNU long-name entries for one member".into(),
                ));
            }
            let mut name = read_metadata(&mut entry, &exceeded, limits)?;
            while name.last() == Some(&0) {
                name.pop();
            }
            long_name = Some(name);
            continue;
        }
        if kind.is_pax_local_extensions() {
            if pax.is_some() {
                return Err(FetchError::Archive("two PAX headers for one member".into()));
            }
            pax = Some(read_metadata(&mut entry, &exceeded, limits)?);
            continue;
        }
        if kind.is_gnu_longlink() || kind.is_pax_global_extensions() {
            // Link targets are irrelevant (links are ignored); global PAX
            // records carry nothing we use. Their data is skipped unread.
            continue;
        }

        // A real member: it consumes the pending long name / PAX records.
        let long = long_name.take();
        let pax_records = pax.take();
        let mut pax_path: Option<Vec<u8>> = None;
        if let Some(records) = &pax_records {
            for rec in tar::PaxExtensions::new(records) {
                let rec = rec.map_err(|e| FetchError::Archive(format!("bad PAX header: {e}")))?;
                match rec.key_bytes() {
                    b"path" => pax_path = Some(rec.value_bytes().to_vec()),
                    b"size" => {
                        let v = rec.value().ok().and_then(|v| v.parse::<u64>().ok());
                        if v != Some(size) {
                            return Err(FetchError::Archive(
                                "PAX size record disagrees with the header size".into(),
                            ));
                        }
                    }
                    _ => {}
                }
            }
        }

        if kind != tar::EntryType::Regular {
            continue;
        }
        let raw_name: Vec<u8> = match (pax_path, long) {
            (Some(p), _) => p,
            (None, Some(l)) => l,
            (None, None) => entry.path_bytes().into_owned(),
        };
        let name = match classify_name(&raw_name)? {
            Name::Keep(n) => n,
            Name::Skip => continue,
        };
        if files.contains_key(&name) {
            return Err(FetchError::DuplicateEntry { name });
        }
        if size > limits.entry {
            return Err(FetchError::EntryTooLarge {
                name,
                limit: limits.entry,
            });
        }
        if total.saturating_add(size) > limits.extracted {
            return Err(FetchError::ExtractedTooLarge {
                limit: limits.extracted,
            });
        }
        let mut content = Vec::with_capacity(size as usize);
        (&mut entry)
            .take(limits.entry + 1)
            .read_to_end(&mut content)
            .map_err(|e| archive_error(e, &exceeded, limits))?;
        let got = content.len() as u64;
        if got > limits.entry {
            return Err(FetchError::EntryTooLarge {
                name,
                limit: limits.entry,
            });
        }
        if got != size {
            return Err(FetchError::Archive(format!(
                "entry {name:?}: header size {size} but {got} bytes read"
            )));
        }
        total += got;
        if total > limits.extracted {
            return Err(FetchError::ExtractedTooLarge {
                limit: limits.extracted,
            });
        }
        files.insert(name, content);
    }
    if long_name.is_some() || pax.is_some() {
        return Err(FetchError::Archive(
            "archive ends with an extension header and no member".into(),
        ));
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keep(raw: &str) -> Option<String> {
        match classify_name(raw.as_bytes()).unwrap() {
            Name::Keep(n) => Some(n),
            Name::Skip => None,
        }
    }

    #[test]
    fn names_are_cleaned() {
        assert_eq!(keep("a.yaml").as_deref(), Some("a.yaml"));
        assert_eq!(keep("./a.yaml").as_deref(), Some("a.yaml"));
        assert_eq!(keep("dir//sub/./b.yml").as_deref(), Some("dir/sub/b.yml"));
        assert_eq!(keep("dir/").as_deref(), Some("dir"));
        assert_eq!(keep("A_b-C.9/x.json").as_deref(), Some("A_b-C.9/x.json"));
        assert_eq!(keep("a..b/c...yaml").as_deref(), Some("a..b/c...yaml"));
    }

    #[test]
    fn names_skipped() {
        for n in [
            "",
            ".",
            "./",
            ".git/config",
            "a/.hidden.yaml",
            "./.env",
            "with space.yaml",
            "caf\u{e9}.yaml",
            "a:b.yaml",
            "a*.yaml",
        ] {
            assert_eq!(keep(n), None, "{n:?}");
        }
    }

    #[test]
    fn names_unsafe() {
        for n in [
            "../evil.yaml",
            "/abs.yaml",
            "a/../../b.yaml",
            "a/..",
            "..",
            "a\\b.yaml",
            "..\\evil.yaml",
            "a\0b",
            ".git/../../x",
            "//x",
        ] {
            assert!(
                matches!(
                    classify_name(n.as_bytes()),
                    Err(FetchError::UnsafeEntry { .. })
                ),
                "{n:?}"
            );
        }
    }

    #[test]
    fn digests() {
        let good = "sha256:".to_string() + &"ab".repeat(32);
        assert_eq!(parse_digest(&good).unwrap(), [0xab; 32]);
        assert_eq!(
            parse_digest(&good.to_uppercase()).unwrap(),
            [0xab; 32],
            "algorithm and hex are case-insensitive"
        );
        for bad in [
            "",
            "sha256",
            &"ab".repeat(32),
            &("md5:".to_string() + &"ab".repeat(16)),
            &("sha512:".to_string() + &"ab".repeat(64)),
            &("sha256:".to_string() + &"ab".repeat(31)),
            &("sha256:".to_string() + &"ab".repeat(33)),
            &("sha256:".to_string() + &"zz".repeat(32)),
            &(" sha256:".to_string() + &"ab".repeat(32)),
            &("sha256:".to_string() + &"\u{e9}".repeat(32)),
        ] {
            let e = parse_digest(bad).unwrap_err();
            assert!(matches!(e, FetchError::InvalidDigest { .. }), "{bad:?}");
            assert!(e.is_terminal());
        }
    }

    #[test]
    fn size_display() {
        assert_eq!(Size(64 * MIB).to_string(), "64 MiB");
        assert_eq!(Size(1000).to_string(), "1000 bytes");
        assert_eq!(
            FetchError::InflatedTooLarge { limit: 512 * MIB }.to_string(),
            "artifact inflates beyond the limit of 512 MiB (gzip bomb?)"
        );
    }

    #[test]
    fn capped_reader_stops_at_the_limit() {
        let exceeded = Rc::new(Cell::new(false));
        let mut r = CappedReader {
            inner: io::repeat(0),
            read: 0,
            limit: 10,
            exceeded: exceeded.clone(),
        };
        let mut buf = [0u8; 4];
        let mut total = 0;
        let err = loop {
            match r.read(&mut buf) {
                Ok(n) => total += n,
                Err(e) => break e,
            }
        };
        assert_eq!(total, 10);
        assert!(exceeded.get(), "{err}");

        // Exactly `limit` bytes is fine.
        let mut r = CappedReader {
            inner: io::repeat(0).take(10),
            read: 0,
            limit: 10,
            exceeded: Rc::new(Cell::new(false)),
        };
        let mut v = Vec::new();
        assert_eq!(r.read_to_end(&mut v).unwrap(), 10);
    }

    fn gz(tar: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(tar).unwrap();
        e.finish().unwrap()
    }

    fn header(name: &[u8], kind: tar::EntryType, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(0o644);
        let field = &mut h.as_gnu_mut().unwrap().name;
        field[..name.len()].copy_from_slice(name);
        h.set_cksum();
        h
    }

    fn build(entries: &[(tar::Header, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (h, data) in entries {
            b.append(h, *data).unwrap();
        }
        gz(&b.into_inner().unwrap())
    }

    #[test]
    fn only_regular_files_are_kept() {
        use tar::EntryType as T;
        let mut link = header(b"link.yaml", T::Symlink, 0);
        link.set_link_name("../../etc/passwd").unwrap();
        link.set_cksum();
        let bytes = build(&[
            (header(b"dir/", T::Directory, 0), b""),
            (link, b""),
            (header(b"hard.yaml", T::Link, 0), b""),
            (header(b"dev", T::Char, 0), b""),
            (header(b"fifo", T::Fifo, 0), b""),
            (header(b"dir/a.yaml", T::Regular, 2), b"a\n"),
            (header(b"old.yaml", T::new(0), 2), b"o\n"),
        ]);
        let files = extract(bytes.as_slice(), &Limits::default()).unwrap();
        assert_eq!(files.keys().collect::<Vec<_>>(), ["dir/a.yaml", "old.yaml"]);
    }

    #[test]
    fn pax_path_and_long_names_are_checked() {
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([("path", &b"../pax-evil.yaml"[..])])
            .unwrap();
        b.append(
            &header(b"innocent.yaml", tar::EntryType::Regular, 1),
            &b"x"[..],
        )
        .unwrap();
        let bytes = gz(&b.into_inner().unwrap());
        assert_eq!(
            extract(bytes.as_slice(), &Limits::default()).unwrap_err(),
            FetchError::UnsafeEntry {
                name: "../pax-evil.yaml".into()
            }
        );

        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([("path", &b"sub/pax.yaml"[..])])
            .unwrap();
        b.append(&header(b"short", tar::EntryType::Regular, 1), &b"x"[..])
            .unwrap();
        let bytes = gz(&b.into_inner().unwrap());
        let files = extract(bytes.as_slice(), &Limits::default()).unwrap();
        assert_eq!(files.keys().collect::<Vec<_>>(), ["sub/pax.yaml"]);

        let long = "../".repeat(40) + "x.yaml";
        let bytes = crate::dev::artifacts::tar_gz_raw(&[(long.as_bytes(), b"x")]);
        assert!(matches!(
            extract(bytes.as_slice(), &Limits::default()),
            Err(FetchError::UnsafeEntry { .. })
        ));
    }

    #[test]
    fn huge_metadata_entries_are_refused_without_buffering() {
        // A GNU long name claiming 1 GiB: refused from the header alone
        // (the tar crate would read it into memory).
        let bytes = build(&[(
            header(b"././@LongLink", tar::EntryType::GNULongName, 100 * 1024),
            &[b'a'; 100 * 1024][..],
        )]);
        let err = extract(bytes.as_slice(), &Limits::default()).unwrap_err();
        assert!(matches!(err, FetchError::Archive(_)), "{err:?}");

        let mut h = header(b"././@LongLink", tar::EntryType::GNULongName, 0);
        h.set_size(1 << 30);
        h.set_cksum();
        let mut tar = h.as_bytes().to_vec();
        tar.extend_from_slice(&[0u8; 4096]);
        let err = extract(gz(&tar).as_slice(), &Limits::default()).unwrap_err();
        assert_eq!(err, FetchError::InflatedTooLarge { limit: 512 * MIB });
    }

    #[test]
    fn decoder_cap_stops_reading() {
        // One entry whose data ends exactly at the cap: reading the next
        // header block crosses it. Exercises the counting reader rather than
        // the header-size shortcut.
        let data = vec![b'x'; 3 * 512];
        let bytes = build(&[(header(b"a.yaml", tar::EntryType::Regular, 3 * 512), &data)]);
        let limits = Limits {
            inflated: 4 * 512,
            ..Limits::default()
        };
        assert_eq!(
            extract(bytes.as_slice(), &limits).unwrap_err(),
            FetchError::InflatedTooLarge { limit: 4 * 512 }
        );
        // With room for the end-of-archive blocks it extracts.
        let limits = Limits {
            inflated: 6 * 512,
            ..Limits::default()
        };
        assert_eq!(extract(bytes.as_slice(), &limits).unwrap().len(), 1);
    }

    #[test]
    fn header_larger_than_data_is_corrupt() {
        let mut tar = header(b"a.yaml", tar::EntryType::Regular, 4096)
            .as_bytes()
            .to_vec();
        tar.extend_from_slice(&[b'x'; 100]);
        let err = extract(gz(&tar).as_slice(), &Limits::default()).unwrap_err();
        assert!(matches!(err, FetchError::Archive(_)), "{err:?}");
    }

    #[test]
    fn multi_member_gzip() {
        let mut b = tar::Builder::new(Vec::new());
        b.append(&header(b"a.yaml", tar::EntryType::Regular, 2), &b"a\n"[..])
            .unwrap();
        b.append(&header(b"b.yaml", tar::EntryType::Regular, 2), &b"b\n"[..])
            .unwrap();
        let tar = b.into_inner().unwrap();
        let mut bytes = gz(&tar[..700]);
        bytes.extend(gz(&tar[700..]));
        let files = extract(bytes.as_slice(), &Limits::default()).unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(files["b.yaml"], b"b\n");
    }

    #[test]
    fn a_body_kept_as_chunks_reads_as_one() {
        let mut b = tar::Builder::new(Vec::new());
        b.append(&header(b"a.yaml", tar::EntryType::Regular, 2), &b"a\n"[..])
            .unwrap();
        b.append(&header(b"b.yaml", tar::EntryType::Regular, 2), &b"b\n"[..])
            .unwrap();
        let body = gz(&b.into_inner().unwrap());
        // Uneven chunks, an empty one among them, as a server may send.
        let mut chunks = vec![Bytes::new()];
        let mut rest = body.as_slice();
        for size in [1, 7, 0, 300].into_iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (head, tail) = rest.split_at(size.min(rest.len()));
            chunks.push(Bytes::copy_from_slice(head));
            rest = tail;
        }
        let reader = Chunks {
            rest: chunks.into_iter(),
            current: Bytes::new(),
        };
        assert_eq!(
            extract(reader, &Limits::default()).unwrap(),
            extract(body.as_slice(), &Limits::default()).unwrap()
        );
    }

    #[test]
    fn empty_input_is_an_empty_artifact() {
        // Not an error here; the build step reports "no manifests".
        let files = extract(gz(&[0u8; 1024]).as_slice(), &Limits::default()).unwrap();
        assert!(files.is_empty());
    }
}
