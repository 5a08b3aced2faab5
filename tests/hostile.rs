//! Hostile input to every parser of untrusted data (issue 19 item 4): tar.gz
//! artifacts, YAML/JSON manifests, AdmissionReviews, kustomizations, cron
//! schedules and update windows, Go durations, label selectors, semantic
//! versions and migration ladders, kubectl JSONPath, SOPS detection, and the
//! gate's HTTP listener.
//!
//! Each parser gets property tests that must hold for every generated input:
//! no panic, a bounded amount of work (a size limit refuses the input by
//! name; the test checks the error rather than measuring memory), and a
//! clear error, or, for valid input, a faithful round trip.
//!
//! Determinism: every property runs a fixed number of cases from a fixed
//! ChaCha seed ([`SEED`]), without failure-persistence files, so CI sees the
//! same inputs every run. Each property runs on its own thread with a 2 MiB
//! stack (what the controller's worker threads get) and a wall-clock budget:
//! running out of either fails the test instead of hanging CI. Inputs that
//! once broke a parser are kept as plain `#[test]`s (`regression_*`).

mod support;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::{Read, Write};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, RngSeed, TestCaseError, TestRng, TestRunner};
use serde_json::{Value, json};

use stageset_controller::api::{CustomHealthCheck, LabelSelector, UpdateWindow};
use stageset_controller::duration::{DurationError, GoDuration};
use stageset_controller::http::{gate, webhook};
use stageset_controller::reconcile::artifact::{FetchError, Limits, extract};
use stageset_controller::reconcile::build::{BuildError, build};
use stageset_controller::reconcile::decrypt::{self, Keys};
use stageset_controller::reconcile::{version, windows};
use stageset_controller::validate::jsonpath::JsonPath;
use stageset_controller::validate::{cron, selector, semver};

// ---------------------------------------------------------------------------
// The property runner
// ---------------------------------------------------------------------------

/// The seed of every property (32 bytes for ChaCha).
const SEED: [u8; 32] = *b"stageset-controller/hostile/0019";

/// The stack of each property's thread: tokio's and actix's worker default.
const STACK: usize = 2 << 20;

/// Runs `test` on `cases` inputs drawn from the strategy `make` builds, from
/// the fixed seed, on a 2 MiB-stack thread, and fails if the run takes
/// longer than `budget` (a hang or a pathological input is a failure).
/// Failures are shrunk (briefly) and reported with the minimal input.
fn check<S, F>(
    name: &'static str,
    cases: u32,
    budget: Duration,
    make: F,
    test: fn(S::Value) -> Result<(), TestCaseError>,
) where
    S: Strategy,
    S::Value: Debug + 'static,
    F: FnOnce() -> S + Send + 'static,
{
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name(name.to_string())
        .stack_size(STACK)
        .spawn(move || {
            let config = Config {
                cases,
                failure_persistence: None,
                max_shrink_iters: 64,
                max_shrink_time: 5_000,
                rng_algorithm: RngAlgorithm::ChaCha,
                rng_seed: RngSeed::Fixed(19),
                source_file: Some(file!()),
                test_name: Some(name),
                ..Config::default()
            };
            let mut runner =
                TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &SEED));
            let result = runner.run(&make(), test).map_err(|e| {
                let text = e.to_string();
                // Minimal inputs can still be megabytes.
                text.chars().take(4_000).collect::<String>()
            });
            let _ = tx.send(result);
        })
        .expect("spawn the property thread");
    match rx.recv_timeout(budget) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("property {name} failed: {e}"),
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("property {name} exceeded its time budget of {budget:?}")
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("property {name} died"),
    }
}

/// Runs `f` on a 2 MiB-stack thread within `budget` (for the fixed cases).
fn bounded<T: Send + 'static>(
    name: &str,
    budget: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name(name.to_string())
        .stack_size(STACK)
        .spawn(move || {
            let _ = tx.send(f());
        })
        .expect("spawn");
    match rx.recv_timeout(budget) {
        Ok(v) => v,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("{name} exceeded its time budget of {budget:?}")
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{name} panicked"),
    }
}

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// Lossy text of bytes (for building strings out of byte strategies).
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Fragments of YAML syntax, valid and not: indicators, anchors and aliases,
/// tags, merge keys, directives, document markers, odd whitespace and bytes.
fn yaml_fragment() -> impl Strategy<Value = Vec<u8>> {
    let fixed: Vec<&'static [u8]> = vec![
        b"\n",
        b"\n  ",
        b"\n    ",
        b"\t",
        b" ",
        b"- ",
        b": ",
        b"? ",
        b"---\n",
        b"...\n",
        b"[",
        b"]",
        b"{",
        b"}",
        b",",
        b"&a ",
        b"*a",
        b"&b ",
        b"*b",
        b"<<: ",
        b"!!str ",
        b"!!binary ",
        b"!Tag ",
        b"!!map ",
        b"!!seq ",
        b"%YAML 1.1\n",
        b"%TAG ! tag:x:\n",
        b"|\n",
        b">-\n",
        b"'",
        b"\"",
        b"\\",
        b"#",
        b"~",
        b"null",
        b"true",
        b"0x1F",
        b"1e999",
        b".nan",
        b"-.inf",
        b"apiVersion: v1\n",
        b"kind: ConfigMap\n",
        b"kind: List\n",
        b"items:\n",
        b"metadata:\n  name: x\n",
        b"\xef\xbb\xbf",
        b"\xff",
        b"\xc0\x80",
        b"\xed\xa0\x80",
        b"\0",
        b"\r\n",
        b"\xe2\x80\xa8",
    ];
    prop_oneof![
        3 => proptest::sample::select(fixed).prop_map(|b| b.to_vec()),
        1 => "[a-zA-Z0-9_.-]{1,8}".prop_map(String::into_bytes),
    ]
}

fn yaml_soup() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(yaml_fragment(), 0..80).prop_map(|parts| parts.concat())
}

/// Arbitrary JSON values, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

// ---------------------------------------------------------------------------
// Artifacts: tar.gz extraction (src/reconcile/artifact.rs)
// ---------------------------------------------------------------------------

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[derive(Clone, Debug)]
enum EntryKind {
    Regular,
    Directory,
    Symlink(Vec<u8>),
    Hardlink(Vec<u8>),
    Fifo,
}

#[derive(Clone, Debug)]
struct TarEntry {
    name: Vec<u8>,
    kind: EntryKind,
    data: Vec<u8>,
}

/// A GNU header with `name` written verbatim (no validation by the tar crate).
fn raw_header(name: &[u8], kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    let field = &mut h.as_gnu_mut().unwrap().name;
    field[..name.len()].copy_from_slice(name);
    h
}

/// A tar stream of `entries`: names longer than 100 bytes, or holding a NUL,
/// go in a GNU long-name entry; link targets are written verbatim.
fn tar_of(entries: &[TarEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut push = |h: &mut tar::Header, data: &[u8]| {
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    };
    for e in entries {
        let short: &[u8] = if e.name.len() > 100 || e.name.contains(&0) {
            let mut long = e.name.clone();
            long.push(0);
            push(
                &mut raw_header(
                    b"././@LongLink",
                    tar::EntryType::GNULongName,
                    long.len() as u64,
                ),
                &long,
            );
            b"long"
        } else {
            &e.name
        };
        let (kind, data, link): (tar::EntryType, &[u8], Option<&[u8]>) = match &e.kind {
            EntryKind::Regular => (tar::EntryType::Regular, &e.data, None),
            EntryKind::Directory => (tar::EntryType::Directory, b"", None),
            EntryKind::Symlink(t) => (tar::EntryType::Symlink, b"", Some(t)),
            EntryKind::Hardlink(t) => (tar::EntryType::Link, b"", Some(t)),
            EntryKind::Fifo => (tar::EntryType::Fifo, b"", None),
        };
        let mut h = raw_header(short, kind, data.len() as u64);
        if let Some(t) = link {
            let n = t.len().min(100);
            h.as_gnu_mut().unwrap().linkname[..n].copy_from_slice(&t[..n]);
        }
        push(&mut h, data);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// What `extract` must answer for `entries`, from its documented contract:
/// only regular files count; a name that is absolute or has a `..` segment,
/// a NUL or a backslash refuses the artifact; hidden segments and bytes
/// outside `[A-Za-z0-9._/-]` are skipped; names are cleaned; a second entry
/// for a cleaned name is an error.
fn expected_files(entries: &[TarEntry]) -> Result<BTreeMap<String, Vec<u8>>, FetchError> {
    let mut files = BTreeMap::new();
    for e in entries {
        if !matches!(e.kind, EntryKind::Regular) {
            continue;
        }
        let raw = &e.name;
        if raw.is_empty() {
            continue;
        }
        if raw.contains(&0)
            || raw.contains(&b'\\')
            || raw[0] == b'/'
            || raw.split(|&b| b == b'/').any(|s| s == b"..")
        {
            return Err(FetchError::UnsafeEntry { name: text(raw) });
        }
        if !raw
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"._/-".contains(&b))
        {
            continue;
        }
        let segments: Vec<&[u8]> = raw
            .split(|&b| b == b'/')
            .filter(|s| !s.is_empty() && *s != b".")
            .collect();
        if segments.is_empty() || segments.iter().any(|s| s[0] == b'.') {
            continue;
        }
        let name = segments
            .iter()
            .map(|s| text(s))
            .collect::<Vec<_>>()
            .join("/");
        if files.contains_key(&name) {
            return Err(FetchError::DuplicateEntry { name });
        }
        files.insert(name, e.data.clone());
    }
    Ok(files)
}

fn entry_name() -> impl Strategy<Value = Vec<u8>> {
    let segment = prop_oneof![
        4 => "[a-z]{1,3}(\\.yaml)?".prop_map(String::into_bytes),
        1 => Just(b"..".to_vec()),
        1 => Just(b".".to_vec()),
        1 => Just(Vec::new()),
        1 => Just(b".hidden".to_vec()),
        1 => Just(b"with space".to_vec()),
        1 => Just("caf\u{e9}".as_bytes().to_vec()),
        1 => Just(b"a\\b".to_vec()),
        1 => Just(b"n\0ul".to_vec()),
        1 => Just(b"x".repeat(150)),
    ];
    prop_oneof![
        8 => (any::<bool>(), prop::collection::vec(segment, 1..5)).prop_map(|(abs, segs)| {
            let mut name = if abs { b"/".to_vec() } else { Vec::new() };
            name.extend(segs.join(&b'/'));
            name
        }),
        // Deep directories, through a GNU long name.
        1 => (1usize..3000).prop_map(|depth| {
            let mut name = b"d/".repeat(depth);
            name.extend_from_slice(b"deep.yaml");
            name
        }),
    ]
}

fn tar_entry() -> impl Strategy<Value = TarEntry> {
    let target = prop_oneof![
        Just(b"../../etc/passwd".to_vec()),
        Just(b"/etc/shadow".to_vec()),
        Just(b"a.yaml".to_vec()),
    ];
    let kind = prop_oneof![
        6 => Just(EntryKind::Regular),
        1 => Just(EntryKind::Directory),
        1 => target.clone().prop_map(EntryKind::Symlink),
        1 => target.prop_map(EntryKind::Hardlink),
        1 => Just(EntryKind::Fifo),
    ];
    (
        entry_name(),
        kind,
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(name, kind, data)| TarEntry { name, kind, data })
}

/// Names, traversal, links and deep directories: `extract` answers exactly
/// what its contract says, and links never become files.
#[test]
fn artifact_entries_follow_the_contract() {
    check(
        "artifact_entries_follow_the_contract",
        96,
        SECS(40),
        || prop::collection::vec(tar_entry(), 0..8),
        |entries| {
            let got = extract(gzip(&tar_of(&entries)).as_slice(), &Limits::default());
            prop_assert_eq!(got, expected_files(&entries));
            Ok(())
        },
    );
}

/// Random bytes, raw and gzip'ed: never a panic; what comes out, if
/// anything, has only safe names; an error says what is wrong.
#[test]
fn artifact_random_bytes() {
    check(
        "artifact_random_bytes",
        256,
        SECS(30),
        || (any::<bool>(), prop::collection::vec(any::<u8>(), 0..4096)),
        |(wrap, bytes)| {
            let input = if wrap { gzip(&bytes) } else { bytes };
            match extract(input.as_slice(), &Limits::default()) {
                Ok(files) => {
                    for name in files.keys() {
                        prop_assert!(
                            !name.is_empty()
                                && !name.starts_with('/')
                                && name
                                    .split('/')
                                    .all(|s| !s.is_empty() && !s.starts_with('.'))
                                && name
                                    .bytes()
                                    .all(|b| b.is_ascii_alphanumeric() || b"._/-".contains(&b)),
                            "unsafe name kept: {name:?}"
                        );
                    }
                }
                Err(e) => {
                    let msg = e.to_string();
                    prop_assert!(
                        msg.starts_with("corrupt artifact archive:")
                            || msg.starts_with("artifact "),
                        "{msg}"
                    );
                }
            }
            Ok(())
        },
    );
}

/// A valid artifact cut short anywhere fails, or, when only the end-of-archive
/// padding or the gzip trailer was lost, yields exactly the original files:
/// never a silent subset.
#[test]
fn artifact_truncated() {
    check(
        "artifact_truncated",
        128,
        SECS(30),
        || {
            (
                prop::collection::vec(prop::collection::vec(any::<u8>(), 0..3000), 1..5),
                any::<prop::sample::Index>(),
            )
        },
        |(contents, cut)| {
            let entries: Vec<TarEntry> = contents
                .iter()
                .enumerate()
                .map(|(i, data)| TarEntry {
                    name: format!("f{i}.yaml").into_bytes(),
                    kind: EntryKind::Regular,
                    data: data.clone(),
                })
                .collect();
            let full = gzip(&tar_of(&entries));
            let cut = cut.index(full.len());
            match extract(&full[..cut], &Limits::default()) {
                Ok(files) => prop_assert_eq!(
                    Ok(files),
                    expected_files(&entries),
                    "cut at {} of {}",
                    cut,
                    full.len()
                ),
                Err(e) => prop_assert!(
                    matches!(e, FetchError::Archive(_)),
                    "cut at {cut} of {}: {e:?}",
                    full.len()
                ),
            }
            Ok(())
        },
    );
}

/// Reads through to `inner`, counting bytes.
struct Counting<'a> {
    inner: &'a [u8],
    read: std::rc::Rc<std::cell::Cell<usize>>,
}

impl Read for Counting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.set(self.read.get() + n);
        Ok(n)
    }
}

/// Gzip bombs of every layout (kept, hidden and non-regular entries, many
/// small or few large ones) stop at the inflated-size cap with the cap's
/// error, whatever the compressed size.
#[test]
fn artifact_gzip_bombs_stop_at_the_cap() {
    check(
        "artifact_gzip_bombs_stop_at_the_cap",
        24,
        SECS(40),
        || (16usize..256, 1usize..64, 0u8..3),
        |(cap_kib, per_entry_kib, layout)| {
            let cap = cap_kib * 1024;
            let size = per_entry_kib * 1024;
            let count = (4 * cap).div_ceil(size + 512);
            let mut tar = Vec::new();
            for i in 0..count {
                let (name, kind) = match layout {
                    0 => (format!("f{i}.yaml"), tar::EntryType::Regular),
                    1 => (format!(".hidden/{i}"), tar::EntryType::Regular),
                    _ => (format!("d{i}"), tar::EntryType::Directory),
                };
                let mut h = raw_header(name.as_bytes(), kind, size as u64);
                h.set_cksum();
                tar.extend_from_slice(h.as_bytes());
                tar.resize(tar.len() + size.div_ceil(512) * 512, 0);
            }
            let limits = Limits {
                inflated: cap as u64,
                ..Limits::default()
            };
            let got = extract(gzip(&tar).as_slice(), &limits);
            prop_assert_eq!(got, Err(FetchError::InflatedTooLarge { limit: cap as u64 }));
            Ok(())
        },
    );
}

/// A 1 GiB bomb (1,024 gzip members of one 1 MiB hidden entry each, 1 MiB
/// compressed) under an 8 MiB cap: refused with the cap's error after reading
/// a small part of the compressed stream.
#[test]
fn artifact_gigabyte_bomb_reads_only_up_to_the_cap() {
    bounded("gigabyte bomb", SECS(30), || {
        let mut header = raw_header(b".bomb", tar::EntryType::Regular, 1 << 20);
        header.set_cksum();
        let mut entry = header.as_bytes().to_vec();
        entry.resize(512 + (1 << 20), 0);
        let member = gzip(&entry);
        let bomb = member.repeat(1024);
        let read = std::rc::Rc::new(std::cell::Cell::new(0));
        let limits = Limits {
            inflated: 8 << 20,
            ..Limits::default()
        };
        let got = extract(
            Counting {
                inner: &bomb,
                read: read.clone(),
            },
            &limits,
        );
        assert_eq!(got, Err(FetchError::InflatedTooLarge { limit: 8 << 20 }));
        assert_eq!(
            got.unwrap_err().to_string(),
            "artifact inflates beyond the limit of 8 MiB (gzip bomb?)"
        );
        assert!(
            read.get() < bomb.len() / 10,
            "read {} of {} compressed bytes",
            read.get(),
            bomb.len()
        );
    });
}

/// Declared sizes far beyond the data: refused from the header when they
/// pass the inflated cap (nothing is allocated for them), otherwise corrupt.
#[test]
fn artifact_huge_declared_sizes() {
    check(
        "artifact_huge_declared_sizes",
        128,
        SECS(20),
        || {
            (
                prop_oneof![
                    0u64..4096,
                    4096u64..(1 << 20),
                    (1u64 << 20)..(1 << 40),
                    Just(u64::MAX >> 2)
                ],
                prop::collection::vec(any::<u8>(), 0..600),
                any::<bool>(),
            )
        },
        |(declared, data, hidden)| {
            let limits = Limits {
                compressed: 64 << 20,
                inflated: 1 << 20,
                entry: 256 << 10,
                extracted: 512 << 10,
            };
            let name: &[u8] = if hidden { b".x" } else { b"a.yaml" };
            let mut h = raw_header(name, tar::EntryType::Regular, declared);
            h.set_cksum();
            let mut tar = h.as_bytes().to_vec();
            tar.extend_from_slice(&data);
            let got = extract(gzip(&tar).as_slice(), &limits);
            if 512u64.saturating_add(declared) > limits.inflated {
                prop_assert_eq!(
                    got,
                    Err(FetchError::InflatedTooLarge {
                        limit: limits.inflated
                    })
                );
            } else if !hidden && declared > limits.entry {
                prop_assert_eq!(
                    got,
                    Err(FetchError::EntryTooLarge {
                        name: "a.yaml".into(),
                        limit: limits.entry
                    })
                );
            } else if (data.len() as u64) < declared {
                prop_assert!(matches!(got, Err(FetchError::Archive(_))), "{got:?}");
            } else {
                // All the declared bytes are there (the rest is read as the
                // end of the archive or rejected as a corrupt header).
                prop_assert!(
                    got.is_ok() || matches!(got, Err(FetchError::Archive(_))),
                    "{got:?}"
                );
            }
            Ok(())
        },
    );
}

#[test]
fn artifact_metadata_entries_are_capped() {
    // A 100 KiB GNU long name: refused without being kept.
    let long = TarEntry {
        name: [b"a/".repeat(50_000), b"x.yaml".to_vec()].concat(),
        kind: EntryKind::Regular,
        data: b"x".to_vec(),
    };
    let err = extract(gzip(&tar_of(&[long])).as_slice(), &Limits::default()).unwrap_err();
    assert_eq!(
        err,
        FetchError::Archive("tar metadata entry of 100007 bytes exceeds 65536 bytes".into())
    );
    // A 64 KiB path stays fine.
    let name = [b"a/".repeat(30_000), b"x.yaml".to_vec()].concat();
    let ok = TarEntry {
        name: name.clone(),
        kind: EntryKind::Regular,
        data: b"x".to_vec(),
    };
    let files = extract(gzip(&tar_of(&[ok])).as_slice(), &Limits::default()).unwrap();
    assert_eq!(files.keys().collect::<Vec<_>>(), [&text(&name)]);
}

// ---------------------------------------------------------------------------
// Manifests: YAML/JSON decoding and the build (src/reconcile/build)
// ---------------------------------------------------------------------------

fn one_file(name: &str, bytes: impl Into<Vec<u8>>) -> BTreeMap<String, Vec<u8>> {
    BTreeMap::from([(name.to_string(), bytes.into())])
}

fn configmap_value(name: &str, data: &BTreeMap<String, String>) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data})
}

/// Valid manifests round-trip: ConfigMaps with arbitrary (Unicode, control
/// characters, YAML-looking) keys and values, as a multi-document YAML file
/// with empty documents and comments, and as a JSON file.
#[test]
fn manifests_round_trip() {
    check(
        "manifests_round_trip",
        64,
        SECS(30),
        || {
            (
                prop::collection::vec(
                    (
                        prop::collection::btree_map(
                            "[A-Za-z0-9._-]{1,12}",
                            "\\PC{0,40}|[\\x00-\\x1f]{0,4}|(yes|no|~|0x1F|1e3|-|: |#)",
                            0..5,
                        ),
                        0u8..3,
                    ),
                    0..6,
                ),
                any::<bool>(),
            )
        },
        |(docs, as_json)| {
            let objects: Vec<Value> = docs
                .iter()
                .enumerate()
                .map(|(i, (data, _))| configmap_value(&format!("cm-{i}"), data))
                .collect();
            let files = if as_json {
                one_file("all.json", serde_json::to_vec(&objects).unwrap())
            } else {
                let mut yaml = String::new();
                for ((_, extra), obj) in docs.iter().zip(&objects) {
                    match extra {
                        1 => yaml.push_str("---\n# an empty document\n"),
                        2 => yaml.push_str("---\n"),
                        _ => {}
                    }
                    yaml.push_str("---\n");
                    yaml.push_str(&serde_yaml_ng::to_string(obj).unwrap());
                }
                one_file("all.yaml", yaml)
            };
            prop_assert_eq!(build(&files, ".").map_err(|e| e.to_string()), Ok(objects));
            Ok(())
        },
    );
}

/// Fragments of YAML syntax (anchors, tags, merge keys, directives, invalid
/// UTF-8, NUL, BOMs) in any order: an error names the file; anything built
/// is a complete object.
#[test]
fn manifests_yaml_soup() {
    check(
        "manifests_yaml_soup",
        384,
        SECS(30),
        || (yaml_soup(), any::<bool>()),
        |(bytes, json)| {
            let file = if json { "m.json" } else { "m.yaml" };
            match build(&one_file(file, bytes), ".") {
                Ok(objects) => {
                    for o in objects {
                        for field in ["/apiVersion", "/kind", "/metadata/name"] {
                            prop_assert!(
                                o.pointer(field)
                                    .and_then(Value::as_str)
                                    .is_some_and(|s| !s.is_empty()),
                                "{o}"
                            );
                        }
                    }
                }
                Err(e) => {
                    prop_assert!(
                        matches!(
                            &e,
                            BuildError::Yaml { file: f, .. } | BuildError::InvalidDocument { file: f, .. } if f == file
                        ) || matches!(e, BuildError::DuplicateObject { .. }),
                        "{e:?}"
                    );
                }
            }
            Ok(())
        },
    );
}

/// How many nodes `aliases` expand to (see `alias_bomb`).
#[derive(Clone, Debug)]
enum Bomb {
    /// `a0: &a0 [x, x, …]`, `a1: &a1 [*a0, *a0, …]`, … `width` wide, `depth` deep.
    Laughs { width: usize, depth: u32 },
    /// One anchored list of `anchored` items, aliased `aliases` times.
    Quadratic { anchored: usize, aliases: usize },
    /// Merge keys: each level merges the previous mapping `width` times
    /// under new keys.
    Merges { width: usize, depth: u32 },
}

impl Bomb {
    fn yaml(&self) -> String {
        let mut y =
            String::from("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bomb\nbomb:\n");
        match *self {
            Bomb::Laughs { width, depth } => {
                y.push_str(&format!("  l0: &l0 [{}]\n", vec!["lol"; width].join(",")));
                for d in 1..depth {
                    y.push_str(&format!(
                        "  l{d}: &l{d} [{}]\n",
                        vec![format!("*l{}", d - 1); width].join(",")
                    ));
                }
            }
            Bomb::Quadratic { anchored, aliases } => {
                y.push_str(&format!("  a: &a [{}]\n", vec!["0"; anchored].join(",")));
                y.push_str(&format!("  b: [{}]\n", vec!["*a"; aliases].join(",")));
            }
            Bomb::Merges { width, depth } => {
                y.push_str(&format!(
                    "  m0: &m0 {{{}}}\n",
                    (0..width)
                        .map(|i| format!("k{i}: v"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                for d in 1..depth {
                    let mut keys: Vec<String> =
                        (0..width).map(|i| format!("k{i}: *m{}", d - 1)).collect();
                    keys.push(format!("<<: *m{}", d - 1));
                    y.push_str(&format!("  m{d}: &m{d} {{{}}}\n", keys.join(", ")));
                }
            }
        }
        y
    }

    /// The nodes the document expands to, every mapping, sequence, key and
    /// scalar counted once per appearance after alias expansion.
    fn nodes(&self) -> f64 {
        // The document's mapping, apiVersion, kind, metadata (name) and the
        // `bomb` key and its mapping.
        let frame = 11.0;
        match *self {
            Bomb::Laughs { width, depth } => {
                let (mut size, mut total) = (1.0 + width as f64, 0.0);
                for _ in 0..depth {
                    total += 1.0 + size;
                    size = 1.0 + width as f64 * size;
                }
                frame + total
            }
            Bomb::Quadratic { anchored, aliases } => {
                let a = 1.0 + anchored as f64;
                frame + 2.0 + a + 1.0 + aliases as f64 * a
            }
            Bomb::Merges { width, depth } => {
                let (mut size, mut total) = (1.0 + 2.0 * width as f64, 0.0);
                for _ in 0..depth {
                    total += 1.0 + size;
                    size = 1.0 + (width as f64 + 1.0) * (1.0 + size);
                }
                frame + total
            }
        }
    }
}

fn alias_bomb() -> impl Strategy<Value = Bomb> {
    prop_oneof![
        (2usize..12, 2u32..12).prop_map(|(width, depth)| Bomb::Laughs { width, depth }),
        (1usize..5000, 1usize..5000)
            .prop_map(|(anchored, aliases)| Bomb::Quadratic { anchored, aliases }),
        (2usize..10, 2u32..10).prop_map(|(width, depth)| Bomb::Merges { width, depth }),
    ]
}

/// The nodes a YAML text may expand to (kustomize::check_aliases).
fn alias_budget(yaml: &str) -> f64 {
    kustomize::ALIAS_NODES as f64 + 2.0 * yaml.len() as f64
}

fn is_alias_refusal(message: &str) -> bool {
    message.contains("alias bomb") || message.contains("repetition limit exceeded")
}

/// Billion laughs, quadratic aliasing and merge-key bombs: refused by name
/// when they expand past the budget, built when small.
#[test]
fn manifests_alias_bombs() {
    check("manifests_alias_bombs", 32, SECS(60), alias_bomb, |bomb| {
        let yaml = bomb.yaml();
        match build(&one_file("bomb.yaml", yaml.clone()), ".") {
            Ok(objects) => {
                prop_assert!(
                    bomb.nodes() <= alias_budget(&yaml),
                    "{} nodes built",
                    bomb.nodes()
                );
                prop_assert_eq!(objects.len(), 1);
            }
            // serde_yaml_ng's own limit on the number of alias expansions.
            Err(BuildError::Yaml { file, message })
                if message.contains("repetition limit exceeded") =>
            {
                prop_assert_eq!(file, "bomb.yaml");
            }
            Err(BuildError::Yaml { file, message }) => {
                prop_assert_eq!(file, "bomb.yaml");
                prop_assert!(message.contains("alias bomb"), "{}", message);
                prop_assert!(
                    bomb.nodes() > alias_budget(&yaml),
                    "{} nodes refused: {}",
                    bomb.nodes(),
                    message
                );
            }
            Err(e) => prop_assert!(false, "{e:?}"),
        }
        Ok(())
    });
}

/// 10,000 levels of flow sequences, flow mappings, compact block sequences
/// and JSON arrays (and anything from 129 levels up): refused by the parser's
/// recursion limit, naming the file; 100 levels still build.
#[test]
fn manifests_deep_nesting() {
    check(
        "manifests_deep_nesting",
        16,
        SECS(60),
        || (prop_oneof![Just(10_000usize), 129usize..10_000], 0u8..4),
        |(depth, shape)| {
            let (file, body) = nested(depth, shape);
            let err = build(&one_file(file, body), ".").unwrap_err();
            match &err {
                BuildError::Yaml { file: f, message } => {
                    prop_assert_eq!(f, file);
                    prop_assert!(message.contains("recursion limit exceeded"), "{}", message);
                }
                other => prop_assert!(false, "{other:?}"),
            }
            Ok(())
        },
    );
    for shape in 0..4 {
        let (file, body) = nested(100, shape);
        assert_eq!(
            build(&one_file(file, body), ".").unwrap().len(),
            1,
            "shape {shape}"
        );
    }
}

/// A ConfigMap whose `data.deep` nests `depth` levels in `shape`.
fn nested(depth: usize, shape: u8) -> (&'static str, String) {
    let head = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: deep\ndata:\n  deep: ";
    match shape {
        0 => (
            "m.yaml",
            format!("{head}{}1{}\n", "[".repeat(depth), "]".repeat(depth)),
        ),
        1 => (
            "m.yaml",
            format!("{head}{}1{}\n", "{a: ".repeat(depth), "}".repeat(depth)),
        ),
        2 => (
            "m.yaml",
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: deep\nlist:\n{}x\n",
                "- ".repeat(depth)
            ),
        ),
        _ => (
            "m.json",
            format!(
                "{{\"apiVersion\": \"v1\", \"kind\": \"ConfigMap\", \"metadata\": {{\"name\": \"deep\"}}, \"deep\": {}1{}}}",
                "[".repeat(depth),
                "]".repeat(depth)
            ),
        ),
    }
}

/// Huge scalars (a 4 MiB value in plain, quoted and literal style, a 1 MiB
/// key) decode intact.
#[test]
fn manifests_huge_scalars() {
    bounded("huge scalars", SECS(40), || {
        let big = "x".repeat(4 << 20);
        for style in ["", "\"", "'"] {
            let yaml = format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: big\ndata:\n  v: {style}{big}{style}\n"
            );
            let objects = build(&one_file("big.yaml", yaml), ".").unwrap();
            assert_eq!(
                objects[0]["data"]["v"].as_str().map(str::len),
                Some(4 << 20),
                "{style:?}"
            );
        }
        let yaml = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: big\ndata:\n  v: |\n    {big}\n"
        );
        let objects = build(&one_file("big.yaml", yaml), ".").unwrap();
        assert_eq!(
            objects[0]["data"]["v"].as_str().map(str::len),
            Some((4 << 20) + 1)
        );
        // A 1 MiB key: YAML limits implicit keys to 1,024 characters, so
        // written plainly it is refused by line and column; as an explicit
        // key (`? `) or in JSON it is kept.
        let key = "k".repeat(1 << 20);
        let head = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: big\ndata:\n";
        match build(&one_file("big.yaml", format!("{head}  {key}: v\n")), ".") {
            Err(BuildError::Yaml { file, message }) => {
                assert_eq!(file, "big.yaml");
                assert!(message.contains("line 6 column"), "{message}");
            }
            other => panic!("{:?}", other.map(|o| o.len())),
        }
        let objects = build(
            &one_file("big.yaml", format!("{head}  ? {key}\n  : v\n")),
            ".",
        )
        .unwrap();
        assert_eq!(objects[0]["data"][&key], "v");
        let json = configmap_value("big", &BTreeMap::from([(key.clone(), "v".to_string())]));
        let objects = build(
            &one_file("big.json", serde_json::to_vec(&json).unwrap()),
            ".",
        )
        .unwrap();
        assert_eq!(objects, [json]);
    });
}

/// Invalid UTF-8 anywhere in a YAML manifest (values, keys, comments):
/// refused naming the file.
#[test]
fn manifests_invalid_utf8() {
    check(
        "manifests_invalid_utf8",
        128,
        SECS(20),
        || {
            (
                proptest::sample::select(vec![
                    &b"\xff"[..],
                    b"\xc0\x80",
                    b"\xed\xa0\x80",
                    b"\xf4\x90\x80\x80",
                    b"\xe2\x82",
                    b"\x80",
                ]),
                any::<prop::sample::Index>(),
            )
        },
        |(bad, at)| {
            let good = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x # comment\ndata:\n  key: value\n";
            let at = at.index(good.len() + 1);
            let bytes = [&good[..at], bad, &good[at..]].concat();
            match build(&one_file("m.yaml", bytes), ".") {
                Err(BuildError::Yaml { file, message }) => {
                    prop_assert_eq!(file, "m.yaml");
                    prop_assert!(!message.is_empty());
                }
                other => prop_assert!(false, "{other:?}"),
            }
            Ok(())
        },
    );
}

/// Multi-document streams: objects, empty and comment-only documents, nulls,
/// scalars, lists and mappings without identity, in any order. Objects come
/// out in order; a scalar document is refused naming its number.
#[test]
fn manifests_multi_document_edge_cases() {
    #[derive(Clone, Copy, Debug)]
    enum Doc {
        Object,
        Empty,
        Comment,
        Null,
        Scalar,
        List,
        EmptyList,
        Anonymous,
        KustomizeConfig,
    }
    check(
        "manifests_multi_document_edge_cases",
        128,
        SECS(20),
        || {
            (
                prop::collection::vec(
                    proptest::sample::select(vec![
                        Doc::Object,
                        Doc::Empty,
                        Doc::Comment,
                        Doc::Null,
                        Doc::Scalar,
                        Doc::List,
                        Doc::EmptyList,
                        Doc::Anonymous,
                        Doc::KustomizeConfig,
                    ]),
                    1..8,
                ),
                any::<bool>(),
                any::<bool>(),
            )
        },
        |(docs, explicit_end, bom)| {
            let mut yaml = String::new();
            if bom {
                yaml.push('\u{feff}');
            }
            let mut expected = Ok(0usize);
            // Every document starts with `---` (so an empty one still counts
            // as a document); `...` may end each one.
            for (i, doc) in docs.iter().enumerate() {
                if i > 0 && explicit_end {
                    yaml.push_str("...\n");
                }
                yaml.push_str("---\n");
                let (text, objects) = match doc {
                    Doc::Object => (format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c{i}\n"), Some(1)),
                    Doc::Empty => (String::new(), Some(0)),
                    Doc::Comment => ("# nothing here\n".to_string(), Some(0)),
                    Doc::Null => ("~\n".to_string(), Some(0)),
                    Doc::Scalar => ("just text\n".to_string(), None),
                    Doc::List => (format!("- apiVersion: v1\n  kind: Secret\n  metadata:\n    name: s{i}\n- null\n"), Some(1)),
                    Doc::EmptyList => ("[]\n".to_string(), Some(0)),
                    Doc::Anonymous => ("kind: ConfigMap\n".to_string(), Some(0)),
                    Doc::KustomizeConfig => (
                        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nmetadata:\n  name: k\n".to_string(),
                        Some(0),
                    ),
                };
                yaml.push_str(&text);
                expected = match (expected, objects) {
                    (Ok(n), Some(k)) => Ok(n + k),
                    (Ok(_), None) => Err(format!(
                        "document {}: expected a Kubernetes object (mapping), found a string",
                        i + 1
                    )),
                    (e, _) => e,
                };
            }
            let got = build(&one_file("multi.yaml", yaml.clone()), ".");
            match expected {
                Ok(n) => prop_assert_eq!(got.map(|o| o.len()), Ok(n), "{}", yaml),
                Err(message) => prop_assert_eq!(
                    got,
                    Err(BuildError::InvalidDocument {
                        file: "multi.yaml".into(),
                        message
                    }),
                    "{}",
                    yaml
                ),
            }
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------
// AdmissionReview decoding (src/http/webhook.rs)
// ---------------------------------------------------------------------------

fn stageset_object() -> Value {
    json!({
        "apiVersion": "stages.metio.wtf/v1",
        "kind": "StageSet",
        "metadata": {"name": "shop", "namespace": "default"},
        "spec": {"stages": [{"name": "app", "sourceRef": {"name": "a"}}]}
    })
}

fn review(request: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})).unwrap()
}

/// The response of a 200 answer, checked to echo `uid`.
fn response_of(answer: &webhook::Answer, uid: &str) -> Value {
    assert_eq!(answer.status, 200, "{}", text(&answer.body));
    let v: Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(v["response"]["uid"], uid);
    v["response"].clone()
}

#[test]
fn webhook_baseline_is_allowed() {
    let answer = webhook::handle(
        webhook::STAGESET_PATH,
        &review(
            json!({"uid": "u1", "operation": "CREATE", "namespace": "default", "object": stageset_object()}),
        ),
    );
    assert_eq!(response_of(&answer, "u1")["allowed"], true);
}

/// Random bytes: a plain-text 400 saying what is wrong, never a 500.
#[test]
fn webhook_random_bytes() {
    check(
        "webhook_random_bytes",
        256,
        SECS(20),
        || prop_oneof![prop::collection::vec(any::<u8>(), 0..2048), yaml_soup()],
        |body| {
            let answer = webhook::handle(webhook::STAGESET_PATH, &body);
            let message = text(&answer.body);
            prop_assert_eq!(answer.status, 400, "{}", message);
            prop_assert_eq!(answer.content_type, "text/plain; charset=utf-8");
            prop_assert!(
                message.starts_with("the request body is not JSON")
                    || message.starts_with("the request body is empty")
                    || message.starts_with("expected an admission.k8s.io/v1 AdmissionReview")
                    || message.starts_with("the AdmissionReview has no request"),
                "{}",
                message
            );
            Ok(())
        },
    );
}

/// Arbitrary JSON, as the whole body and as every field of a real review:
/// a 400 for a body that is no AdmissionReview, else a 200 that echoes the
/// uid and is allowed or refused with a code and a message. Never a 500.
#[test]
fn webhook_arbitrary_json() {
    check(
        "webhook_arbitrary_json",
        192,
        SECS(30),
        || (json_value(), json_value(), json_value(), 0u8..4),
        |(body, object, field, which)| {
            let answer =
                webhook::handle(webhook::STAGESET_PATH, &serde_json::to_vec(&body).unwrap());
            prop_assert_eq!(answer.status, 400, "{}", text(&answer.body));

            let mut request =
                json!({"uid": "u", "operation": "CREATE", "object": stageset_object()});
            match which {
                0 => request["object"] = object,
                1 => request["object"]["spec"] = object,
                2 => request["object"]["spec"]["stages"][0] = object,
                _ => request["kind"] = object,
            }
            request["oldObject"] = field;
            let answer = webhook::handle(webhook::STAGESET_PATH, &review(request));
            prop_assert_eq!(answer.status, 200, "{}", text(&answer.body));
            let response = response_of(&answer, "u");
            let code = response["status"]["code"].as_u64();
            if response["allowed"] == true {
                prop_assert_eq!(code, Some(200));
            } else {
                prop_assert!(matches!(code, Some(400 | 403)), "{response}");
                prop_assert!(
                    response["status"]["message"]
                        .as_str()
                        .is_some_and(|m| !m.is_empty()),
                    "{response}"
                );
            }
            Ok(())
        },
    );
}

/// A request for another kind or group: refused with 400 naming both.
#[test]
fn webhook_kind_mismatch() {
    check(
        "webhook_kind_mismatch",
        128,
        SECS(20),
        || ("[A-Za-z.]{0,20}", "[A-Za-z]{0,20}", any::<bool>()),
        |(group, kind, in_object)| {
            prop_assume!(group != "stages.metio.wtf" || kind != "StageSet");
            let mut request =
                json!({"uid": "u", "operation": "UPDATE", "object": stageset_object()});
            if in_object {
                prop_assume!(kind != "StageSet" && !kind.is_empty());
                request["object"]["kind"] = json!(kind);
            } else {
                request["kind"] = json!({"group": group, "version": "v1", "kind": kind});
            }
            let answer = webhook::handle(webhook::STAGESET_PATH, &review(request));
            let response = response_of(&answer, "u");
            prop_assert_eq!(&response["allowed"], false);
            prop_assert_eq!(&response["status"]["code"], 400);
            let message = response["status"]["message"].as_str().unwrap_or_default();
            prop_assert!(
                message.contains("StageSet") && message.contains(kind.as_str()),
                "{}",
                message
            );
            Ok(())
        },
    );
}

#[test]
fn webhook_empty_and_deep_and_3mib_bodies() {
    bounded("webhook bodies", SECS(40), || {
        let answer = webhook::handle(webhook::STAGESET_PATH, b"");
        assert_eq!(
            (answer.status, text(&answer.body)),
            (
                400,
                "the request body is empty; expected an AdmissionReview\n".into()
            )
        );

        // 10,000 levels: serde_json's recursion limit, as a 400.
        for body in [
            format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)),
            format!("{}1{}", "{\"a\":".repeat(10_000), "}".repeat(10_000)),
        ] {
            let answer = webhook::handle(webhook::STAGESET_PATH, body.as_bytes());
            let message = text(&answer.body);
            assert_eq!(answer.status, 400, "{message}");
            assert!(message.contains("recursion limit exceeded"), "{message}");
        }
        let mut object = stageset_object();
        object["spec"]["extra"] =
            serde_json::from_str(&format!("{}1{}", "[".repeat(120), "]".repeat(120))).unwrap();
        let answer = webhook::handle(
            webhook::STAGESET_PATH,
            &review(json!({"uid": "d", "operation": "CREATE", "object": object})),
        );
        response_of(&answer, "d");

        // 3 MiB: a StageSet with a 3 MiB annotation is judged; 3 MiB of
        // garbage, of one string, or of whitespace is a 400.
        let mut object = stageset_object();
        object["metadata"]["annotations"] = json!({"big": "x".repeat(3 << 20)});
        let body = review(json!({"uid": "big", "operation": "CREATE", "object": object}));
        assert!(body.len() > 3 << 20);
        let started = Instant::now();
        assert_eq!(
            response_of(&webhook::handle(webhook::STAGESET_PATH, &body), "big")["allowed"],
            true
        );
        assert!(started.elapsed() < SECS(10), "{:?}", started.elapsed());
        let padded = [
            vec![b' '; 3 << 20],
            review(json!({"uid": "w", "operation": "CREATE", "object": stageset_object()})),
        ]
        .concat();
        assert_eq!(
            response_of(&webhook::handle(webhook::STAGESET_PATH, &padded), "w")["allowed"],
            true
        );
        for body in [
            vec![b'{'; 3 << 20],
            format!("\"{}\"", "y".repeat(3 << 20)).into_bytes(),
            [vec![b' '; 3 << 20], b"{\"apiVersion\": ".to_vec()].concat(),
        ] {
            let answer = webhook::handle(webhook::STAGESET_PATH, &body);
            assert_eq!(
                answer.status,
                400,
                "{}",
                text(&answer.body).chars().take(300).collect::<String>()
            );
            assert!(answer.body.len() < 1024, "the error does not echo the body");
        }
        // Another path: 404, whatever the body.
        assert_eq!(webhook::handle("/validate-other", &body).status, 404);
    });
}

/// A StageSet whose CEL ready expression nests parentheses. The cel crate's
/// recursive-descent parser overflows a 2 MiB stack at about 20 levels in a
/// debug build (a few hundred in release): the process aborts, which
/// `catch_unwind` in the webhook cannot stop, and the reconciler's R5
/// validation would hit it again after every restart. Now refused before
/// the parser runs (at most 32 levels), and what is accepted is compiled on
/// a thread with a large stack (src/validate/cel).
#[test]
fn regression_webhook_deep_cel_expression() {
    let expr = format!("{}true{}", "(".repeat(1000), ")".repeat(1000));
    let mut object = stageset_object();
    object["spec"]["stages"][0]["readyChecks"] =
        json!({"exprs": [{"apiVersion": "v1", "kind": "ConfigMap", "current": expr}]});
    let answer = bounded("deep CEL", SECS(20), move || {
        webhook::handle(
            webhook::STAGESET_PATH,
            &review(json!({"uid": "c", "operation": "CREATE", "object": object})),
        )
    });
    assert_eq!(response_of(&answer, "c")["allowed"], false);
    let check: CustomHealthCheck =
        serde_json::from_value(json!({"apiVersion": "v1", "kind": "X", "current": "(((((((((((((((((((((((((true)))))))))))))))))))))))))"}))
            .unwrap();
    assert!(bounded("CEL compile", SECS(20), move || {
        stageset_controller::validate::cel::compile(&check).is_ok()
    }));
}

// ---------------------------------------------------------------------------
// Kustomizations (crates/kustomize, through the stage build)
// ---------------------------------------------------------------------------

fn kustomize_error(files: &BTreeMap<String, Vec<u8>>) -> String {
    match build(files, ".") {
        Err(e @ BuildError::Kustomize { .. }) => e.to_string(),
        other => panic!("expected a kustomize error, got {other:?}"),
    }
}

const CONFIGMAP: &[u8] = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\n";

fn kustomization_text() -> impl Strategy<Value = Vec<u8>> {
    let path = prop_oneof![
        Just(Value::from("cm.yaml")),
        Just(Value::from("../outside.yaml")),
        Just(Value::from("/etc/passwd")),
        Just(Value::from("sub/../../x")),
        Just(Value::from("https://example.com/x.yaml")),
        Just(Value::from("github.com/org/repo//base?ref=main")),
        Just(Value::from(".")),
        Just(Value::from("sub")),
        Just(Value::from("missing")),
        Just(Value::from("a\0b")),
        Just(Value::from("x".repeat(5000))),
    ];
    let value = prop_oneof![
        3 => prop::collection::vec(path.clone(), 0..4).prop_map(Value::Array),
        1 => path,
        1 => json_value(),
    ];
    let field = proptest::sample::select(vec![
        "resources",
        "bases",
        "components",
        "patches",
        "patchesStrategicMerge",
        "patchesJson6902",
        "configMapGenerator",
        "secretGenerator",
        "generatorOptions",
        "images",
        "replicas",
        "namespace",
        "namePrefix",
        "nameSuffix",
        "commonLabels",
        "labels",
        "commonAnnotations",
        "kind",
        "apiVersion",
        "helmCharts",
        "vars",
        "replacements",
        "crds",
        "openapi",
        "sortOptions",
    ]);
    prop_oneof![
        4 => prop::collection::btree_map(field, value, 0..5)
            .prop_map(|m| serde_yaml_ng::to_string(&m).unwrap().into_bytes()),
        1 => yaml_soup(),
    ]
}

/// Random kustomizations: known and unknown fields with values of every
/// type, hostile paths, YAML soup. A failure is a kustomize error naming a
/// file of the artifact; a success is complete objects.
#[test]
fn kustomize_hostile_kustomizations() {
    check(
        "kustomize_hostile_kustomizations",
        192,
        SECS(40),
        kustomization_text,
        |kustomization| {
            let mut files = one_file("kustomization.yaml", kustomization);
            files.insert("cm.yaml".into(), CONFIGMAP.to_vec());
            files.insert(
                "sub/kustomization.yaml".into(),
                b"resources: [../cm.yaml]\n".to_vec(),
            );
            match build(&files, ".") {
                Ok(objects) => {
                    for o in objects {
                        for field in ["/apiVersion", "/kind", "/metadata/name"] {
                            prop_assert!(
                                o.pointer(field)
                                    .and_then(Value::as_str)
                                    .is_some_and(|s| !s.is_empty()),
                                "{o}"
                            );
                        }
                    }
                }
                Err(BuildError::Kustomize { path, message }) => {
                    prop_assert!(!path.is_empty() && !message.is_empty());
                }
                Err(e @ BuildError::Yaml { .. }) | Err(e @ BuildError::InvalidDocument { .. }) => {
                    prop_assert!(e.to_string().contains("kustomization.yaml"), "{e}");
                }
                Err(e) => prop_assert!(false, "{e:?}"),
            }
            Ok(())
        },
    );
}

/// Paths that leave the artifact, remote bases, cycles: refused by name.
#[test]
fn kustomize_escapes_remotes_and_cycles() {
    for (entry, expected) in [
        ("../outside.yaml", "is outside the root"),
        ("/etc/passwd", "is outside the root"),
        ("sub/../../x.yaml", "is outside the root"),
        ("https://example.com/x.yaml", "remote resource"),
        ("git@github.com:org/repo.git", "remote resource"),
        ("github.com/org/repo//base?ref=main", "remote resource"),
    ] {
        let mut files = one_file("kustomization.yaml", format!("resources: [{entry:?}]\n"));
        files.insert("cm.yaml".into(), CONFIGMAP.to_vec());
        let err = kustomize_error(&files);
        assert!(
            err.contains(expected) && err.contains("kustomization.yaml"),
            "{entry}: {err}"
        );
    }
    let mut files = one_file("kustomization.yaml", "resources: [a]\n");
    files.insert(
        "a/kustomization.yaml".into(),
        b"resources: [../b]\n".to_vec(),
    );
    files.insert(
        "b/kustomization.yaml".into(),
        b"resources: [../a]\n".to_vec(),
    );
    let err = kustomize_error(&files);
    assert!(err.contains("cycle detected"), "{err}");
}

/// A chain of kustomizations `depth` deep: built up to 64 levels, refused
/// beyond (1,000 levels used to overflow the stack).
#[test]
fn kustomize_deep_chains() {
    check(
        "kustomize_deep_chains",
        12,
        SECS(40),
        || {
            prop_oneof![
                1usize..=kustomize::MAX_DEPTH,
                (kustomize::MAX_DEPTH + 1)..2000
            ]
        },
        |depth| {
            let files = chain(depth);
            let got = build(&files, ".");
            if depth <= kustomize::MAX_DEPTH {
                prop_assert_eq!(got.map(|o| o.len()), Ok(1));
            } else {
                let err = got.unwrap_err().to_string();
                prop_assert!(err.contains("more than 64 levels deep"), "{}", err);
            }
            Ok(())
        },
    );
}

/// `depth` kustomizations, each including the next one down, the last a
/// ConfigMap.
fn chain(depth: usize) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut dir = String::new();
    for _ in 1..depth {
        files.insert(
            format!("{dir}kustomization.yaml"),
            b"resources: [k]\n".to_vec(),
        );
        dir.push_str("k/");
    }
    files.insert(
        format!("{dir}kustomization.yaml"),
        b"resources: [cm.yaml]\n".to_vec(),
    );
    files.insert(format!("{dir}cm.yaml"), CONFIGMAP.to_vec());
    files
}

/// Alias bombs in a kustomization, in a resource it names, and in a stage
/// built through a generated kustomization: refused by name.
#[test]
fn kustomize_alias_bombs() {
    bounded("kustomize alias bombs", SECS(40), || {
        let bomb = Bomb::Quadratic {
            anchored: 3000,
            aliases: 3000,
        }
        .yaml();
        let laughs = format!(
            "commonLabels:\n  a: &a [{}]\n  b: [{}]\n",
            vec!["x"; 2000].join(","),
            vec!["*a"; 2000].join(",")
        );
        let mut files = one_file("kustomization.yaml", laughs);
        files.insert("cm.yaml".into(), CONFIGMAP.to_vec());
        let err = kustomize_error(&files);
        assert!(
            err.contains("kustomization.yaml") && err.contains("alias bomb"),
            "{err}"
        );

        let mut files = one_file("kustomization.yaml", "resources: [bomb.yaml]\n");
        files.insert("bomb.yaml".into(), bomb.clone().into_bytes());
        let err = kustomize_error(&files);
        assert!(
            err.contains("bomb.yaml") && err.contains("alias bomb"),
            "{err}"
        );

        // A nested kustomization makes the build generate one for the root.
        let mut files = one_file("bomb.yaml", bomb.into_bytes());
        files.insert(
            "sub/kustomization.yaml".into(),
            b"resources: [cm.yaml]\n".to_vec(),
        );
        files.insert("sub/cm.yaml".into(), CONFIGMAP.to_vec());
        let err = build(&files, ".").unwrap_err().to_string();
        assert!(
            err.contains("bomb.yaml") && err.contains("alias bomb"),
            "{err}"
        );

        // Directly through the engine, on a file tree held in memory.
        let bomb_files = one_file(
            "kustomization.yaml",
            format!(
                "resources: [cm.yaml]\n{}",
                Bomb::Laughs {
                    width: 10,
                    depth: 9
                }
                .yaml()
                .replace(
                    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bomb\nbomb:\n",
                    "commonAnnotations:\n"
                )
            ),
        );
        let fs = kustomize::filesystem::Memory::borrowed(&bomb_files).unwrap();
        let err = kustomize::build_on(
            &fs,
            std::path::Path::new("."),
            std::path::Path::new("."),
            &kustomize::Options {
                restrictions: kustomize::LoadRestrictions::None,
                ..Default::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(is_alias_refusal(&err), "{err}");
    });
}

// ---------------------------------------------------------------------------
// Cron schedules and update windows (src/validate/cron.rs, src/reconcile/windows.rs)
// ---------------------------------------------------------------------------

fn number_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (0u32..70).prop_map(|n| n.to_string()),
        1 => any::<u32>().prop_map(|n| n.to_string()),
        1 => any::<u64>().prop_map(|n| n.to_string()),
        1 => "[0-9]{20,40}",
        1 => "-[0-9]{1,3}",
        1 => Just("+1".to_string()),
        1 => proptest::sample::select(vec!["jan", "DEC", "sun", "Sat", "feb", "x"]).prop_map(String::from),
    ]
}

fn cron_field() -> impl Strategy<Value = String> {
    let range = prop_oneof![
        Just("*".to_string()),
        Just("?".to_string()),
        number_text(),
        (number_text(), number_text()).prop_map(|(a, b)| format!("{a}-{b}")),
        (number_text(), number_text(), number_text()).prop_map(|(a, b, c)| format!("{a}-{b}-{c}")),
    ];
    let item = (range, prop::option::of(number_text()), any::<bool>()).prop_map(
        |(r, step, two)| match step {
            Some(s) if two => format!("{r}/{s}/{s}"),
            Some(s) => format!("{r}/{s}"),
            None => r,
        },
    );
    prop::collection::vec(item, 1..4).prop_map(|items| items.join(","))
}

fn cron_spec() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::collection::vec(cron_field(), 4..7).prop_map(|f| f.join(" ")),
        1 => proptest::sample::select(vec!["@yearly", "@monthly", "@weekly", "@daily", "@hourly", "@every 1h30m", "@every 0s", "@every -5m", "@every 9999999h", "@reboot", "@"]).prop_map(String::from),
        1 => (proptest::sample::select(vec!["TZ=", "CRON_TZ="]), proptest::sample::select(vec!["Europe/Berlin", "UTC", "", "../../etc/localtime", "Nowhere/Land"]), cron_field())
            .prop_map(|(p, z, f)| format!("{p}{z} {f} * * * *")),
        1 => ".{0,40}",
    ]
}

/// robfig's bits for one `start-end/step` item, computed independently.
fn model_bits(start: u64, end: u64, step: u64) -> u64 {
    (start..=end)
        .step_by(step as usize)
        .fold(0, |acc, i| acc | (1 << i))
}

/// Any cron text: no panic; a valid schedule's bits lie within each field's
/// range; an error is robfig's wording. Single `a-b/s` minute fields match
/// an independent computation, for any step up to u32::MAX.
#[test]
fn cron_schedules() {
    check(
        "cron_schedules",
        512,
        SECS(20),
        || (cron_spec(), 0u64..60, 0u64..60, 1u64..=u64::from(u32::MAX)),
        |(spec, a, b, step)| {
            match cron::parse_standard(&spec, |zone| {
                if zone == "Europe/Berlin" {
                    Ok(())
                } else {
                    Err(format!("unknown time zone {zone}"))
                }
            }) {
                Ok(cron::Schedule::Spec(s)) => {
                    for (bits, lo, hi) in [
                        (s.minute, 0, 59),
                        (s.hour, 0, 23),
                        (s.dom, 1, 31),
                        (s.month, 1, 12),
                        (s.dow, 0, 6),
                    ] {
                        let allowed = model_bits(lo, hi, 1);
                        prop_assert_eq!(
                            bits & !allowed,
                            0,
                            "bits outside {}..={} for {:?}",
                            lo,
                            hi,
                            spec
                        );
                    }
                }
                Ok(cron::Schedule::Every(_)) => {}
                Err(e) => prop_assert!(!e.is_empty()),
            }
            let (lo, hi) = (a.min(b), a.max(b));
            let spec = format!("{lo}-{hi}/{step} * * * *");
            match cron::parse_standard(&spec, |_| Ok(())) {
                Ok(cron::Schedule::Spec(s)) => {
                    prop_assert_eq!(s.minute, model_bits(lo, hi, step), "{}", spec)
                }
                other => prop_assert!(false, "{spec}: {other:?}"),
            }
            Ok(())
        },
    );
}

#[test]
fn regression_cron_step_beyond_u32() {
    // Used to overflow `u32` (a panic in debug builds, wrapped-around bits
    // in release).
    for (spec, minute) in [
        ("1/4294967295 * * * *", 1u64 << 1),
        ("5/4294967295 * * * *", 1 << 5),
        ("*/99999999999 * * * *", 1),
    ] {
        match cron::parse_standard(spec, |_| Ok(())) {
            Ok(cron::Schedule::Spec(s)) => assert_eq!(s.minute, minute, "{spec}"),
            other => panic!("{spec}: {other:?}"),
        }
    }
}

fn window_parts() -> impl Strategy<Value = Vec<(String, String, &'static str, bool)>> {
    let duration = prop_oneof![
        Just("1h".to_string()),
        Just("8760h".to_string()),
        Just("2562047h".to_string()),
        Just("0s".to_string()),
        Just("-1h".to_string()),
        Just("1ns".to_string()),
        "[0-9]{1,25}(ns|ms|s|m|h|d)",
    ];
    let zone = proptest::sample::select(vec![
        "",
        "UTC",
        "Local",
        "Europe/Berlin",
        "America/St_Johns",
        "../../../etc/passwd",
        "Etc/GMT+14",
        "NoSuch/Zone",
    ]);
    prop::collection::vec((cron_spec(), duration, zone, any::<bool>()), 1..3)
}

/// Update windows from hostile schedules, durations and zones: compiled or
/// refused naming the window; evaluating a compiled one is quick.
#[test]
fn update_windows() {
    check("update_windows", 96, SECS(40), window_parts, |windows| {
        let spec: Vec<Value> = windows
                .iter()
                .map(|(schedule, duration, zone, allow)| {
                    json!({"type": if *allow { "Allow" } else { "Deny" }, "schedule": schedule, "duration": duration, "timeZone": zone})
                })
                .collect();
        let Ok(spec) = serde_json::from_value::<Vec<UpdateWindow>>(Value::Array(spec)) else {
            return Ok(());
        };
        match windows::compile(&spec) {
            Ok(compiled) => {
                let t: jiff::Timestamp = "2025-03-30T00:59:30Z".parse().unwrap();
                let started = Instant::now();
                let _ = windows::allowed(&compiled, t);
                let _ = windows::next_change(&compiled, t);
                prop_assert!(
                    started.elapsed() < SECS(5),
                    "{:?} for {:?}",
                    started.elapsed(),
                    windows
                );
            }
            Err(e) => prop_assert!(e.starts_with("spec.updateWindows["), "{}", e),
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------
// Go durations (src/duration.rs)
// ---------------------------------------------------------------------------

/// Every i64 of nanoseconds prints as a Go duration that parses back to it.
#[test]
fn durations_round_trip() {
    check(
        "durations_round_trip",
        1024,
        SECS(10),
        || {
            prop_oneof![
                any::<i64>(),
                Just(i64::MIN),
                Just(i64::MAX),
                -10_000i64..10_000
            ]
        },
        |n| {
            let d = GoDuration::from_nanos(n);
            prop_assert_eq!(GoDuration::parse(&d.to_string()), Ok(d));
            Ok(())
        },
    );
}

/// Any text, and long digit runs with every unit: no panic; an error quotes
/// the input; beyond 2^63 ns is an overflow, not a wrap.
#[test]
fn durations_hostile_text() {
    check(
        "durations_hostile_text",
        1024,
        SECS(10),
        || {
            prop_oneof![
                ".{0,30}",
                "[-+]?([0-9]{0,40}(\\.[0-9]{0,40})?(ns|us|\u{b5}s|\u{3bc}s|ms|s|m|h|d|)){1,4}",
            ]
        },
        |input| {
            match GoDuration::parse(&input) {
                Ok(d) => {
                    prop_assert_eq!(GoDuration::parse(&d.to_string()), Ok(d));
                    let digits: String = input.chars().filter(char::is_ascii_digit).collect();
                    prop_assert!(!digits.is_empty(), "{}", input);
                }
                Err(e) => {
                    let quoted = format!("{input:?}");
                    prop_assert!(e.to_string().contains(&quoted), "{} lacks {}", e, quoted);
                }
            }
            Ok(())
        },
    );
    assert_eq!(
        GoDuration::parse("9223372036854775808ns"),
        Err(DurationError::Overflow("9223372036854775808ns".into()))
    );
    assert_eq!(
        GoDuration::parse("-9223372036854775808ns"),
        Ok(GoDuration::from_nanos(i64::MIN))
    );
    assert_eq!(
        GoDuration::parse(&format!("{}h", "9".repeat(10_000))),
        Err(DurationError::Overflow(format!("{}h", "9".repeat(10_000))))
    );
}

// ---------------------------------------------------------------------------
// Label selectors (src/api/selector.rs, src/validate/selector.rs)
// ---------------------------------------------------------------------------

fn selector_text() -> impl Strategy<Value = String> {
    let token = proptest::sample::select(vec![
        "app",
        "tier",
        "example.com/team",
        "a.b-c_d",
        "-bad",
        "x/y/z",
        "",
        " ",
        "!",
        "=",
        "==",
        "!=",
        " in ",
        " notin ",
        "(",
        ")",
        ",",
        ">",
        "<",
        "5",
        "-3",
        "99999999999999999999",
        "é",
        "\0",
        "((",
        "))",
    ]);
    prop_oneof![
        3 => prop::collection::vec(token, 0..16).prop_map(|t| t.concat()),
        1 => ".{0,40}",
    ]
}

/// Any selector text: no panic; a parsed selector prints in a canonical form
/// that parses back to the same selector.
#[test]
fn label_filters() {
    use stageset_controller::api::selector::LabelFilter;
    check("label_filters", 1024, SECS(15), selector_text, |input| {
        if let Ok(filter) = LabelFilter::parse(&input) {
            let printed = filter.to_string();
            prop_assert_eq!(
                LabelFilter::parse(&printed),
                Ok(filter),
                "{:?} printed as {:?}",
                input,
                printed
            );
        }
        Ok(())
    });
    let long = format!("app in ({})", vec!["v"; 100_000].join(","));
    assert!(LabelFilter::parse(&long).is_ok());
    let deep = format!("{}a{}", "(".repeat(10_000), ")".repeat(10_000));
    assert!(LabelFilter::parse(&deep).is_err());
}

/// `matchExpressions` entries: key, operator, values.
type Expressions = Vec<(String, &'static str, Option<Vec<String>>)>;

fn label_selector_parts() -> impl Strategy<Value = (BTreeMap<String, String>, Expressions)> {
    let word = prop_oneof![
        3 => "[a-z0-9./_-]{0,20}",
        1 => ".{0,20}",
        1 => Just("x".repeat(70_000)),
    ];
    let op = proptest::sample::select(vec![
        "In",
        "NotIn",
        "Exists",
        "DoesNotExist",
        "in",
        "Gt",
        "",
    ]);
    (
        prop::collection::btree_map(word.clone(), word.clone(), 0..3),
        prop::collection::vec(
            (
                word.clone(),
                op,
                prop::option::of(prop::collection::vec(word, 0..3)),
            ),
            0..3,
        ),
    )
}

/// Hostile `LabelSelector`s (keys, values and operators of any shape and
/// size): no panic; a refusal names the problem as apimachinery does.
#[test]
fn label_selectors() {
    check(
        "label_selectors",
        256,
        SECS(20),
        label_selector_parts,
        |(labels, exprs)| {
            let sel: LabelSelector = serde_json::from_value(json!({
                "matchLabels": labels,
                "matchExpressions": exprs.iter().map(|(k, o, v)| json!({"key": k, "operator": o, "values": v})).collect::<Vec<_>>(),
            }))
            .unwrap();
            match selector::requirements(&sel) {
                Ok(n) => prop_assert_eq!(n, labels.len() + exprs.len()),
                Err(e) => prop_assert!(!e.is_empty() && e.len() < 1_000_000),
            }
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------
// Semantic versions, constraints and migration ladders
// (src/validate/semver.rs, src/reconcile/version.rs)
// ---------------------------------------------------------------------------

fn version_text() -> impl Strategy<Value = String> {
    prop_oneof![
        (
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            "(-[a-z0-9.]{1,8})?(\\+[a-z0-9.]{1,8})?"
        )
            .prop_map(|(a, b, c, tail)| format!("v{a}.{b}.{c}{tail}")),
        "[0-9]{1,30}(\\.[0-9]{1,30}){0,3}",
        ".{0,20}",
    ]
}

/// Versions: `vX.Y.Z` (any u64 parts) and `X.Y` parse to what they say;
/// anything else is refused or parsed without panic; ordering them never
/// panics and equal versions are no transition.
#[test]
fn semver_versions() {
    check(
        "semver_versions",
        1024,
        SECS(15),
        || {
            (
                any::<u64>(),
                any::<u64>(),
                any::<u64>(),
                version_text(),
                version_text(),
            )
        },
        |(a, b, c, x, y)| {
            prop_assert_eq!(
                semver::parse_lenient(&format!(" v{a}.{b}.{c} ")),
                Some(::semver::Version::new(a, b, c))
            );
            prop_assert_eq!(
                semver::parse_lenient(&format!("{a}.{b}")),
                Some(::semver::Version::new(a, b, 0))
            );
            let (x, y) = (semver::parse_lenient(&x), semver::parse_lenient(&y));
            if let Some(x) = &x {
                prop_assert_eq!(version::classify(x, Some(x)), version::Transition::Same);
                prop_assert_eq!(version::classify(x, None), version::Transition::Baseline);
                if let Some(y) = &y {
                    let (up, down) = (version::classify(x, Some(y)), version::classify(y, Some(x)));
                    prop_assert!(
                        matches!(
                            (up, down),
                            (version::Transition::Upgrade, version::Transition::Downgrade)
                                | (version::Transition::Downgrade, version::Transition::Upgrade)
                                | (version::Transition::Same, version::Transition::Same)
                        ),
                        "{x} vs {y}: {up:?} / {down:?}"
                    );
                }
            }
            Ok(())
        },
    );
}

fn constraint_text() -> impl Strategy<Value = String> {
    let token = proptest::sample::select(vec![
        ">=",
        "<=",
        "=>",
        "=<",
        ">",
        "<",
        "=",
        "!=",
        "~",
        "~>",
        "^",
        "||",
        ",",
        " ",
        " - ",
        "-",
        "x",
        "X",
        "*",
        "v",
        "1",
        "2.3",
        "1.2.3",
        "0.0.0-rc.1",
        "99999999999999999999",
        ".",
        "+build",
        "",
    ]);
    prop_oneof![
        prop::collection::vec(token, 0..12).prop_map(|t| t.concat()),
        ".{0,30}"
    ]
}

/// Constraint text of any shape: no panic; refusals are Masterminds'
/// wording; a parsed constraint can be matched against any version.
#[test]
fn semver_constraints() {
    check(
        "semver_constraints",
        1024,
        SECS(15),
        || (constraint_text(), version_text()),
        |(text, v)| {
            match semver::parse_constraints(&text) {
                Ok(c) => {
                    if let Some(v) = semver::parse_lenient(&v) {
                        let _ = c.matches(&v);
                    }
                    let _ = c.matches(&::semver::Version::new(u64::MAX, u64::MAX, u64::MAX));
                }
                Err(e) => prop_assert!(
                    e.starts_with("improper constraint: ")
                        || e == semver::INVALID_SEMVER
                        || e == "constraint Parser Error",
                    "{:?}: {}",
                    text,
                    e
                ),
            }
            Ok(())
        },
    );
}

/// Migration ladders read from an artifact: YAML soup, invalid UTF-8 and
/// alias bombs are refused naming the file; nothing panics.
#[test]
fn migration_ladders() {
    check(
        "migration_ladders",
        256,
        SECS(20),
        || prop_oneof![yaml_soup(), prop::collection::vec(any::<u8>(), 0..512)],
        |bytes| {
            let files = one_file("ladder/m.yaml", bytes);
            match version::parse_ladder(&files, Some("ladder")) {
                Ok(ladder) => prop_assert!(!ladder.is_empty()),
                Err(version::PlanError::Refused { message, .. }) => {
                    prop_assert!(
                        message.starts_with("ladder/m.yaml: ")
                            || message.starts_with("migrations artifact"),
                        "{}",
                        message
                    );
                }
                Err(e) => prop_assert!(false, "{e:?}"),
            }
            Ok(())
        },
    );
    let bomb = one_file(
        "m.yaml",
        Bomb::Quadratic {
            anchored: 3000,
            aliases: 3000,
        }
        .yaml(),
    );
    let err = bounded("ladder bomb", SECS(20), move || {
        format!("{:?}", version::parse_ladder(&bomb, None).unwrap_err())
    });
    assert!(
        err.contains("m.yaml") && err.contains("alias bomb"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------
// kubectl JSONPath (src/validate/jsonpath.rs)
// ---------------------------------------------------------------------------

fn jsonpath_text() -> impl Strategy<Value = String> {
    let token = proptest::sample::select(vec![
        "$",
        "@",
        ".",
        "..",
        "*",
        "[",
        "]",
        "[*]",
        "['a']",
        "[\"b\"]",
        "['a','b']",
        "[0]",
        "[-1]",
        "[1:]",
        "[::2]",
        "[0:9223372036854775807:9223372036854775807]",
        "[-9223372036854775808]",
        "[?(",
        "@.a",
        "$.b",
        " == ",
        " != ",
        " < ",
        " >= ",
        "'x'",
        "1",
        "true",
        "null",
        ")]",
        "a",
        "b",
        "\\.",
        "{",
        "}",
        " ",
        "range",
        "end",
    ]);
    prop_oneof![
        4 => prop::collection::vec(token, 0..14).prop_map(|t| format!("{{{}}}", t.concat())),
        1 => ".{0,30}",
    ]
}

/// Any template over any document: parsing and evaluating never panic and
/// stay within the evaluation budget.
#[test]
fn jsonpath_templates() {
    check(
        "jsonpath_templates",
        1024,
        SECS(30),
        || (jsonpath_text(), json_value()),
        |(template, doc)| {
            if let Ok(path) = JsonPath::parse(&template) {
                match path.find(&doc) {
                    Ok(found) => prop_assert!(found.len() <= 1_000_000),
                    Err(e) => prop_assert!(!e.is_empty()),
                }
            }
            Ok(())
        },
    );
}

#[test]
fn regression_jsonpath_nesting_and_blowup() {
    bounded("jsonpath regressions", SECS(30), || {
        // 10,000 nested filters used to overflow the stack.
        let deep = format!("{{{}.a{}}}", "[?(@".repeat(10_000), ")]".repeat(10_000));
        let err = JsonPath::parse(&deep).unwrap_err();
        assert!(
            err.contains("filters nest more than 32 deep"),
            "{}",
            &err[err.len().saturating_sub(200)..]
        );
        let ok = format!("{{{}.a{}}}", "[?(@".repeat(32), ")]".repeat(32));
        assert!(JsonPath::parse(&ok).is_ok());

        // A slice step past i64::MAX used to overflow (index out of bounds).
        let doc = json!([0, 1, 2, 3]);
        for (template, found) in [
            ("{[1::9223372036854775807]}", vec![1]),
            ("{[2:3:9223372036854775807]}", vec![2]),
        ] {
            let got = JsonPath::parse(template).unwrap().find(&doc).unwrap();
            assert_eq!(
                got,
                found.iter().map(|i| &doc[*i]).collect::<Vec<_>>(),
                "{template}"
            );
        }

        // Chained recursive descent over a 128-deep document, and filters
        // that start again from the root, multiply: refused by the budget.
        let mut deep_doc = json!(1);
        for _ in 0..127 {
            deep_doc = json!({"a": deep_doc});
        }
        let err = JsonPath::parse("{..a..a..a..a..a..a..a}")
            .unwrap()
            .find(&deep_doc)
            .unwrap_err();
        assert!(err.contains("takes more than 1000000 steps"), "{err}");
        let wide = json!([
            [1, 2, 3, 4, 5, 6, 7, 8],
            [1, 2, 3, 4, 5, 6, 7, 8],
            [1, 2],
            [3],
            [4],
            [5],
            [6],
            [7]
        ]);
        let nested = format!("{{{}[0]{}}}", "[?($".repeat(12), ")]".repeat(12));
        match JsonPath::parse(&nested) {
            Ok(p) => assert!(p.find(&wide).is_err_and(|e| e.contains("takes more than"))),
            Err(e) => panic!("{e}"),
        }
        // An ordinary template is far inside the budget.
        assert_eq!(
            JsonPath::parse("{..a}")
                .unwrap()
                .find(&deep_doc)
                .unwrap()
                .len(),
            127
        );
    });
}

// ---------------------------------------------------------------------------
// SOPS detection and decryption input (src/reconcile/decrypt)
// ---------------------------------------------------------------------------

fn sops_file() -> impl Strategy<Value = (&'static str, Vec<u8>)> {
    let path = proptest::sample::select(vec![
        "s.yaml",
        "s.yml",
        "s.json",
        "s.env",
        "s.ini",
        "s.txt",
        "dir/.yaml",
    ]);
    let content = prop_oneof![
        yaml_soup().prop_map(|mut b| {
            b.extend_from_slice(b"\nsops:\n  mac: ENC[AES256_GCM,data:secret-looking,iv:x,tag:y,type:str]\n  version: 3.9.0\n");
            b
        }),
        yaml_soup().prop_map(|b| [b"{\"sops\": ".to_vec(), b, b"}".to_vec()].concat()),
        yaml_soup().prop_map(|b| [b"sops_mac=".to_vec(), b].concat()),
        yaml_soup().prop_map(|b| [b"[sops]\n".to_vec(), b].concat()),
        prop::collection::vec(any::<u8>(), 0..256),
    ];
    (path, content)
}

/// Any file that looks like SOPS: detection never panics; decrypting without
/// keys either passes it through or fails with a message that names only the
/// file (never its content).
#[test]
fn sops_detection() {
    check(
        "sops_detection",
        384,
        SECS(30),
        sops_file,
        |(path, content)| {
            let encrypted = decrypt::is_encrypted(path, &content);
            if !content.windows(4).any(|w| w == b"sops")
                && !content.windows(15).any(|w| w == b"ENC[AES256_GCM,")
            {
                prop_assert!(!encrypted);
            }
            let mut files = one_file(path, content.clone());
            let keys = Keys::from_secret_data(&BTreeMap::new()).unwrap();
            match decrypt::decrypt_files(&mut files, &keys) {
                Ok(done) => {
                    prop_assert!(done.is_empty());
                    prop_assert_eq!(&files[path], &content);
                }
                Err(e) => {
                    prop_assert_eq!(e.to_string(), format!("decryption failed for {path:?}"));
                    prop_assert!(!e.detail().contains("secret-looking"), "{}", e.detail());
                }
            }
            Ok(())
        },
    );
}

#[test]
fn sops_deep_and_bombs() {
    bounded("sops deep and bombs", SECS(30), || {
        let keys = Keys::from_secret_data(&BTreeMap::new()).unwrap();
        let deep = format!(
            "a: {}1{}\nsops:\n  version: 3.9.0\n",
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        let bomb = format!(
            "{}sops:\n  version: 3.9.0\n",
            Bomb::Quadratic {
                anchored: 3000,
                aliases: 3000
            }
            .yaml()
        );
        // Either refused as a SOPS file that cannot be used, or passed
        // through untouched (the build then refuses the YAML), consistently.
        for content in [deep, bomb] {
            let encrypted = decrypt::is_encrypted("s.yaml", content.as_bytes());
            let mut files = one_file("s.yaml", content.clone());
            match decrypt::decrypt_files(&mut files, &keys) {
                Err(err) => {
                    assert!(encrypted);
                    assert_eq!(err.to_string(), "decryption failed for \"s.yaml\"");
                }
                Ok(done) => {
                    assert!(!encrypted && done.is_empty());
                    assert_eq!(files["s.yaml"], content.as_bytes());
                    assert!(matches!(build(&files, "."), Err(BuildError::Yaml { .. })));
                }
            }
        }
    });
}

// ---------------------------------------------------------------------------
// The gate (src/http/gate.rs)
// ---------------------------------------------------------------------------

const LONG_SEGMENT: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

/// Any method and path tail against a cache without the StageSet: never an
/// answer that a stage is Ready (or even known), and nothing panics.
#[test]
fn gate_paths_never_reach_other_stagesets() {
    check(
        "gate_paths_never_reach_other_stagesets",
        1024,
        SECS(15),
        || {
            (
                proptest::sample::select(vec![
                    "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "", "get",
                ]),
                prop_oneof![
                    prop::collection::vec(
                        proptest::sample::select(vec![
                            "..",
                            ".",
                            "",
                            "%2e%2e",
                            "default",
                            "shop",
                            "app",
                            "metrics",
                            "\0",
                            LONG_SEGMENT
                        ]),
                        0..6
                    )
                    .prop_map(|s| s.join("/")),
                    ".{0,60}",
                ],
                any::<bool>(),
            )
        },
        |(method, tail, json)| {
            let (cache, _writers) = stageset_controller::cache::StageSetCache::new(1);
            let answer = gate::decide(method, &tail, &cache);
            prop_assert!(
                matches!(
                    answer,
                    gate::Answer::MethodNotAllowed
                        | gate::Answer::BadPath
                        | gate::Answer::NotGateable { .. }
                ),
                "{answer:?}"
            );
            let rendered = gate::render(&answer, json);
            if json && matches!(answer, gate::Answer::NotGateable { .. }) {
                let v: Value = serde_json::from_str(&rendered.body).unwrap();
                prop_assert_eq!(&v["ready"], false);
            } else {
                prop_assert!(matches!(rendered.status, 400 | 403 | 405), "{rendered:?}");
            }
            if let Some(req) = gate::parse(&tail) {
                for part in [req.namespace, req.stageset, req.stage] {
                    prop_assert!(!part.is_empty() && !part.contains('/'));
                }
            }
            Ok(())
        },
    );
}

/// Sends `request` as is and returns the status code (None when the server
/// closed the connection without an answer) and the body.
async fn raw_http(addr: std::net::SocketAddr, request: &[u8]) -> (Option<u16>, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before it has read everything.
    let _ = s.write_all(request).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(SECS(15), s.read_to_end(&mut out)).await;
    let answer = text(&out);
    let status = answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok());
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: gate\r\nConnection: close\r\n\r\n").into_bytes()
}

const FLOOD: usize = 10_000;

/// The gate listener of a running controller against hostile clients: path
/// traversal (plain and percent-encoded) never leaves the gate route, 8 KiB
/// and 1 MiB paths are answered or cut off with a 4xx, and 10,000 connections
/// holding partial requests (opened by a child process: this one's file
/// descriptors go to the server) neither stop a normal request from getting
/// its answer nor stay open past the listener's request timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gate_listener_under_hostile_clients() {
    use support::*;
    let h = Harness::start_with(HarnessOptions {
        listeners: true,
        ..Default::default()
    })
    .await;
    let art = h.artifact("a.tar.gz", &[("c.yaml", &configmap("default", "c", "x"))]);
    h.external_artifact("default", "a", &art, "v1@sha1:abc")
        .await;
    h.stageset(
        "default",
        "shop",
        json!({"stages": [{"name": "app", "sourceRef": {"name": "a"}}]}),
    )
    .await;
    h.wait_ready_reason("default", "shop", "Succeeded", "")
        .await;
    let addr = h
        .controller
        .as_ref()
        .unwrap()
        .bound()
        .gate
        .expect("gate bound");
    let ready = move || async move {
        let deadline = Instant::now() + SECS(30);
        loop {
            let got = raw_http(addr, &get("/gate/default/shop/app")).await;
            if got.0 == Some(200) || Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    assert_eq!(
        ready().await,
        (
            Some(200),
            "stage \"app\" is Ready at v1@sha1:abc\n".to_string()
        )
    );

    for path in [
        "/gate/../metrics",
        "/gate/../../metrics",
        "/gate/%2e%2e/metrics",
        "/gate/%2e%2e/%2e%2e/metrics",
        "/gate/%2E%2E%2Fmetrics",
        "/gate/default/shop/../../metrics",
        "/gate/default/shop/app/../../../../metrics",
        "/gate/default/%2e%2e/shop/app",
        "/gate/..%2f..%2fmetrics",
        "/gate/default%2fshop/app",
        "/gate/default/shop/app%00",
        "/gate/default/shop/app%2f..%2f..",
        "//gate/../metrics",
        "/metrics",
        "/gate",
        "/healthz",
    ] {
        let (status, body) = raw_http(addr, &get(path)).await;
        assert!(
            matches!(status, Some(400 | 403 | 404)),
            "{path}: {status:?} {body}"
        );
        assert!(
            !body.contains("# TYPE") && !body.contains("# HELP"),
            "{path}: {body}"
        );
    }

    // 8 KiB names are echoed back in the refusal; a 1 MiB path is refused
    // or cut off, never served.
    let long = "n".repeat(8 << 10);
    let (status, body) = raw_http(addr, &get(&format!("/gate/default/shop/{long}"))).await;
    assert_eq!(status, Some(403));
    assert_eq!(
        body,
        format!("stage \"{long}\" not found in stageset default/shop\n")
    );
    let (status, _) = raw_http(addr, &get(&format!("/gate/{long}/{long}/{long}"))).await;
    assert_eq!(status, Some(403));
    let huge = "m".repeat(1 << 20);
    for path in [
        format!("/gate/default/shop/{huge}"),
        format!("/gate/{huge}"),
    ] {
        let (status, body) = raw_http(addr, &get(&path)).await;
        assert!(
            status.is_none_or(|s| (400..500).contains(&s)),
            "{status:?} {}",
            &body[..body.len().min(200)]
        );
    }
    assert_eq!(ready().await.0, Some(200));

    // 10,000 partial requests, held open by a child process.
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "gate_flood_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("HOSTILE_GATE_ADDR", addr.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("the flood child starts");
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines_rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines_tx.send(line);
        }
    });
    let wait_line = |prefix: &str, within: Duration| -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines_rx.recv_timeout(left) {
                // libtest's "test gate_flood_child ... " may start the line.
                Ok(line) => {
                    if let Some(at) = line.find(prefix) {
                        return line[at..].to_string();
                    }
                }
                Err(e) => panic!("the flood child never said {prefix:?} ({e:?})"),
            }
        }
    };
    let opened = wait_line("FLOOD OPEN ", SECS(60));
    assert_eq!(opened, format!("FLOOD OPEN {FLOOD}"));
    let started = Instant::now();
    let (status, body) = raw_http(addr, &get("/gate/default/shop/app")).await;
    assert_eq!(
        (status, body.as_str()),
        (Some(200), "stage \"app\" is Ready at v1@sha1:abc\n")
    );
    assert!(
        started.elapsed() < SECS(5),
        "answered after {:?}",
        started.elapsed()
    );
    // Tell the child to check that the server let go of every connection.
    drop(child.stdin.take());
    let closed = wait_line("FLOOD CLOSED ", SECS(60));
    assert_eq!(closed, format!("FLOOD CLOSED {FLOOD}"));
    assert!(child.wait().unwrap().success());
    assert_eq!(ready().await.0, Some(200));
}

/// Not a test on its own: the client side of
/// `gate_listener_under_hostile_clients`, run by it in a child process.
/// Opens [`FLOOD`] connections to `HOSTILE_GATE_ADDR`, sends half a request
/// on each, says `FLOOD OPEN n`, waits for its stdin to close, then counts
/// the connections the server has closed (or answered with a timeout) within
/// 30 s and says `FLOOD CLOSED n`.
#[test]
#[ignore = "helper of gate_listener_under_hostile_clients (run in a child process)"]
fn gate_flood_child() {
    let Ok(addr) = std::env::var("HOSTILE_GATE_ADDR") else {
        panic!("run by gate_listener_under_hostile_clients only");
    };
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut streams = Vec::with_capacity(FLOOD);
        for chunk in 0..FLOOD / 500 {
            let opened = futures::future::join_all((0..500).map(|i| async move {
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                // Closing resets instead of leaving 10,000 TIME_WAITs behind.
                socket.set_zero_linger().unwrap();
                let mut s = socket.connect(addr).await.unwrap();
                let partial = format!(
                    "GET /gate/default/shop/app HTTP/1.1\r\nHost: gate\r\nX-Flood: {}\r\n",
                    chunk * 500 + i
                );
                s.write_all(partial.as_bytes()).await.unwrap();
                s
            }))
            .await;
            streams.extend(opened);
        }
        println!("FLOOD OPEN {}", streams.len());
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        let deadline = tokio::time::Instant::now() + SECS(30);
        let closed = futures::future::join_all(streams.into_iter().map(|mut s| async move {
            let mut buf = [0u8; 512];
            loop {
                match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
                    Err(_) => return false,
                    Ok(Ok(0) | Err(_)) => return true,
                    // A 408 Request Timeout before the close.
                    Ok(Ok(_)) => {}
                }
            }
        }))
        .await;
        println!("FLOOD CLOSED {}", closed.iter().filter(|c| **c).count());
    });
}

/// Post-build substitution puts variable values into the YAML text and
/// parses it again with `serde_yaml_ng::from_str`, without the alias bound:
/// one 20 KiB `${bomb}` value of `[&a [0,…], [*a,…]]` (newlines are stripped,
/// flow style needs none) expands to 9 million values; it is refused by
/// `kustomize::check_aliases` before the parse.
#[test]
fn regression_substitution_alias_bomb() {
    use stageset_controller::reconcile::substitute::Vars;
    let bomb = format!(
        "[&a [{}], [{}]]",
        vec!["0"; 3000].join(","),
        vec!["*a"; 3000].join(",")
    );
    let vars = Vars::new(BTreeMap::from([("bomb".to_string(), bomb)]), "test").unwrap();
    let files = one_file(
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n  v: ${bomb}\n",
    );
    let got = bounded("substitution bomb", SECS(20), move || {
        stageset_controller::reconcile::build::render(&files, ".", &[], Some(&vars))
    });
    match got {
        Err(e @ BuildError::Substitution(_)) => assert!(e.to_string().contains("alias"), "{e}"),
        other => panic!("{:?}", other.map(|o| o.len())),
    }
}
