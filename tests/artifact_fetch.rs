//! End-to-end artifact fetches (delivery.md §2.2) against the loopback
//! `ArtifactServer` with a real reqwest client.

use std::time::Duration;

use stageset_controller::dev::artifacts::{
    ArtifactServer, gzip_bomb, tar_gz, tar_gz_dir, tar_gz_raw,
};
use stageset_controller::reconcile::artifact::{FetchError, Fetcher, Limits, extract};
use stageset_controller::reconcile::outbound::{
    GuardError, check_url, guard_error_of, guarded_client,
};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

fn small_limits() -> Limits {
    Limits {
        compressed: 64 * KIB,
        inflated: 256 * KIB,
        entry: 16 * KIB,
        extracted: 64 * KIB,
    }
}

async fn server() -> ArtifactServer {
    ArtifactServer::start()
        .await
        .expect("start artifact server")
}

#[tokio::test]
async fn good_artifact_extracts() {
    let srv = server().await;
    let p = srv.publish(
        "/gitrepository/ns/app/latest.tar.gz",
        tar_gz(&[
            ("a.yaml", b"a: 1\n"),
            ("./dir/b.yaml", b"b: 2\n"),
            (".git/config", b"[core]\n"),
            ("dir/.hidden.yaml", b"h: 1\n"),
        ]),
    );
    let art = Fetcher::new(true).fetch(&p.url, &p.digest).await.unwrap();
    assert_eq!(
        art.files.keys().collect::<Vec<_>>(),
        ["a.yaml", "dir/b.yaml"],
        "hidden files skipped, ./ cleaned"
    );
    assert_eq!(art.files["a.yaml"], b"a: 1\n");
    assert_eq!(art.digest, p.digest);
    assert_eq!(art.compressed_size, p.size);
    assert_eq!(srv.hits("/gitrepository/ns/app/latest.tar.gz"), 1);

    // Re-fetching hits the server again (no caching in the fetcher).
    Fetcher::new(true).fetch(&p.url, &p.digest).await.unwrap();
    assert_eq!(srv.hits("gitrepository/ns/app/latest.tar.gz"), 2);
}

#[tokio::test]
async fn chunked_body_and_directory_artifact() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("apps/x")).unwrap();
    std::fs::write(dir.path().join("kustomization.yaml"), "resources: []\n").unwrap();
    std::fs::write(dir.path().join("apps/x/deploy.yaml"), "kind: Deployment\n").unwrap();
    let bytes = tar_gz_dir(dir.path()).unwrap();
    assert_eq!(bytes, tar_gz_dir(dir.path()).unwrap(), "deterministic");

    let srv = server().await;
    let p = srv.publish_chunked("a.tar.gz", bytes);
    let art = Fetcher::new(true).fetch(&p.url, &p.digest).await.unwrap();
    assert_eq!(
        art.files.keys().collect::<Vec<_>>(),
        ["apps/x/deploy.yaml", "kustomization.yaml"]
    );
}

#[tokio::test]
async fn digest_mismatch_is_terminal() {
    let srv = server().await;
    let p = srv.publish("a.tar.gz", tar_gz(&[("a.yaml", b"a: 1\n")]));
    let other = "sha256:".to_string() + &"0".repeat(64);
    let err = Fetcher::new(true).fetch(&p.url, &other).await.unwrap_err();
    match &err {
        FetchError::DigestMismatch { expected, actual } => {
            assert_eq!(expected, &other);
            assert_eq!(actual, &p.digest);
        }
        e => panic!("{e:?}"),
    }
    assert!(err.is_terminal());
    assert!(err.to_string().contains(&p.digest), "{err}");
}

#[tokio::test]
async fn invalid_digests_are_refused_before_fetching() {
    let srv = server().await;
    let p = srv.publish("a.tar.gz", tar_gz(&[("a.yaml", b"a: 1\n")]));
    let hex = p.digest.strip_prefix("sha256:").unwrap();
    for bad in [
        format!("md5:{}", &hex[..32]),
        format!("sha256:{}", &hex[..63]),
        format!("sha256:{hex}0"),
        hex.to_string(),
        String::new(),
        format!("sha512:{hex}"),
    ] {
        let err = Fetcher::new(true).fetch(&p.url, &bad).await.unwrap_err();
        assert!(
            matches!(err, FetchError::InvalidDigest { .. }),
            "{bad}: {err:?}"
        );
        assert!(err.is_terminal());
    }
    assert_eq!(srv.hits("a.tar.gz"), 0);
}

#[tokio::test]
async fn uppercase_digest_is_accepted() {
    let srv = server().await;
    let p = srv.publish("a.tar.gz", tar_gz(&[("a.yaml", b"a: 1\n")]));
    let upper = p.digest.to_uppercase();
    assert!(upper.starts_with("SHA256:"));
    let art = Fetcher::new(true).fetch(&p.url, &upper).await.unwrap();
    assert_eq!(art.digest, p.digest, "reported digest is normalised");
}

#[tokio::test]
async fn http_errors_are_transient() {
    let srv = server().await;
    let digest = "sha256:".to_string() + &"0".repeat(64);
    let err = Fetcher::new(true)
        .fetch(&srv.url_for("missing.tar.gz"), &digest)
        .await
        .unwrap_err();
    assert!(
        matches!(err, FetchError::Http { status: 404, .. }),
        "{err:?}"
    );
    assert!(!err.is_terminal());
    assert!(err.to_string().contains("404"), "{err}");

    let url = srv.respond_status("broken.tar.gz", 503);
    let err = Fetcher::new(true).fetch(&url, &digest).await.unwrap_err();
    assert!(
        matches!(err, FetchError::Http { status: 503, .. }),
        "{err:?}"
    );
    assert!(!err.is_terminal());
}

#[tokio::test]
async fn connection_refused_is_transient() {
    let srv = server().await;
    let url = srv.url_for("a.tar.gz");
    drop(srv);
    // The port is closed now (the listener was dropped with the task).
    tokio::time::sleep(Duration::from_millis(20)).await;
    let digest = "sha256:".to_string() + &"0".repeat(64);
    let err = Fetcher::new(true).fetch(&url, &digest).await.unwrap_err();
    assert!(matches!(err, FetchError::Network(_)), "{err:?}");
    assert!(!err.is_terminal());
}

#[tokio::test]
async fn loopback_is_refused_without_the_flag() {
    let srv = server().await;
    let p = srv.publish("a.tar.gz", tar_gz(&[("a.yaml", b"a: 1\n")]));
    let err = Fetcher::new(false)
        .fetch(&p.url, &p.digest)
        .await
        .unwrap_err();
    assert!(
        matches!(err, FetchError::Guard(GuardError::ForbiddenAddress { .. })),
        "{err:?}"
    );
    assert!(err.is_terminal());
    assert!(err.to_string().contains("127.0.0.1"), "{err}");

    let localhost = p.url.replace("127.0.0.1", "localhost");
    let err = Fetcher::new(false)
        .fetch(&localhost, &p.digest)
        .await
        .unwrap_err();
    assert!(
        matches!(err, FetchError::Guard(GuardError::ForbiddenHost { .. })),
        "{err:?}"
    );
    assert!(err.is_terminal());
    assert_eq!(srv.hits("a.tar.gz"), 0, "nothing reached the server");

    // With the flag, both work (localhost goes through the resolver).
    Fetcher::new(true).fetch(&p.url, &p.digest).await.unwrap();
    Fetcher::new(true)
        .fetch(&localhost, &p.digest)
        .await
        .unwrap();
    assert_eq!(srv.hits("a.tar.gz"), 2);
}

#[tokio::test]
async fn dial_guard_refuses_names_resolving_to_loopback() {
    // Bypass check_url: the resolver alone must refuse `localhost`.
    let srv = server().await;
    srv.publish("a.tar.gz", b"x".to_vec());
    let url = srv.url_for("a.tar.gz").replace("127.0.0.1", "localhost");
    let err = guarded_client(false, Duration::from_secs(5))
        .get(&url)
        .send()
        .await
        .unwrap_err();
    let g = guard_error_of(&err).unwrap_or_else(|| panic!("no guard error in {err:?}"));
    assert!(matches!(g, GuardError::ForbiddenAddress { .. }), "{g:?}");
    assert_eq!(srv.hits("a.tar.gz"), 0);
}

#[test]
fn check_url_refuses_hostile_urls() {
    for u in [
        "http://127.1/",
        "http://0x7f000001/",
        "http://2130706433/",
        "http://0177.0.0.1/",
        "http://[::1]/",
        "http://169.254.169.254/",
        "http://[::ffff:169.254.169.254]/",
        "http://0.0.0.0/",
    ] {
        assert!(
            matches!(
                check_url(u, false),
                Err(GuardError::ForbiddenAddress { .. })
            ),
            "{u}"
        );
    }
    assert!(matches!(
        check_url("http://169.254.169.254/", true),
        Err(GuardError::ForbiddenAddress { .. })
    ));
    assert!(matches!(
        check_url("http://localhost/", false),
        Err(GuardError::ForbiddenHost { .. })
    ));
    assert!(matches!(
        check_url("ftp://x/", false),
        Err(GuardError::InvalidScheme { .. })
    ));
    assert!(matches!(
        check_url("http:///", false),
        Err(GuardError::MissingHost { .. }) | Err(GuardError::InvalidUrl { .. })
    ));
    assert!(check_url("http://10.1.2.3/x.tar.gz", false).is_ok());
}

#[tokio::test]
async fn redirects_are_rechecked() {
    let srv = server().await;
    let p = srv.publish("real.tar.gz", tar_gz(&[("a.yaml", b"a: 1\n")]));

    // A redirect to a good target is followed.
    let url = srv.redirect("moved.tar.gz", &p.url);
    let art = Fetcher::new(true).fetch(&url, &p.digest).await.unwrap();
    assert_eq!(art.files.len(), 1);

    // A redirect to the metadata endpoint is refused (the flag does not help).
    let url = srv.redirect("meta.tar.gz", "http://169.254.169.254/latest/meta-data/");
    let err = Fetcher::new(true).fetch(&url, &p.digest).await.unwrap_err();
    assert!(
        matches!(err, FetchError::Guard(GuardError::ForbiddenAddress { .. })),
        "{err:?}"
    );
    assert!(err.is_terminal());

    let url = srv.redirect("ftp.tar.gz", "ftp://example.com/a.tar.gz");
    let err = Fetcher::new(true).fetch(&url, &p.digest).await.unwrap_err();
    assert!(
        matches!(err, FetchError::Guard(GuardError::InvalidScheme { .. })),
        "{err:?}"
    );

    // A redirect loop stops after 10 hops; not a policy violation.
    let url = srv.redirect("loop.tar.gz", &srv.url_for("loop.tar.gz"));
    let err = Fetcher::new(true).fetch(&url, &p.digest).await.unwrap_err();
    assert!(matches!(err, FetchError::Network(_)), "{err:?}");
    assert!(err.to_string().contains("too many redirects"), "{err}");
    assert!(!err.is_terminal());
    assert_eq!(srv.hits("loop.tar.gz"), 11);
}

#[tokio::test]
async fn path_traversal_fails_closed() {
    let srv = server().await;
    for name in [
        &b"../evil.yaml"[..],
        b"/abs.yaml",
        b"a/../../b.yaml",
        b"ok/..\\..\\win.yaml",
    ] {
        let bytes = tar_gz_raw(&[(b"good.yaml", b"g: 1\n"), (name, b"evil: 1\n")]);
        let p = srv.publish("evil.tar.gz", bytes);
        let err = Fetcher::new(true)
            .fetch(&p.url, &p.digest)
            .await
            .unwrap_err();
        match &err {
            FetchError::UnsafeEntry { name: n } => {
                assert_eq!(n.as_bytes(), name);
            }
            e => panic!("{}: {e:?}", String::from_utf8_lossy(name)),
        }
        assert!(err.is_terminal());
    }
}

#[test]
fn hidden_and_odd_names_are_skipped() {
    let bytes = tar_gz_raw(&[
        (b".git/config", b"[core]\n"),
        (b"a/.secret/x.yaml", b"x\n"),
        (b"with space.yaml", b"x\n"),
        (b"", b"x\n"),
        (b"ok.yaml", b"ok\n"),
    ]);
    let files = extract(bytes.as_slice(), &Limits::default()).unwrap();
    assert_eq!(files.keys().collect::<Vec<_>>(), ["ok.yaml"]);
}

#[test]
fn duplicate_after_cleaning_is_terminal() {
    let bytes = tar_gz_raw(&[(b"a.yaml", b"1\n"), (b"./a.yaml", b"2\n")]);
    let err = extract(bytes.as_slice(), &Limits::default()).unwrap_err();
    assert_eq!(
        err,
        FetchError::DuplicateEntry {
            name: "a.yaml".into()
        }
    );
    assert!(err.is_terminal());

    let bytes = tar_gz_raw(&[(b"d/a.yaml", b"1\n"), (b"d//./a.yaml", b"2\n")]);
    assert!(matches!(
        extract(bytes.as_slice(), &Limits::default()),
        Err(FetchError::DuplicateEntry { .. })
    ));
}

#[tokio::test]
async fn gzip_bomb_small_limits() {
    let srv = server().await;
    let bomb = gzip_bomb(16 * MIB);
    assert!((bomb.len() as u64) < small_limits().compressed);
    let p = srv.publish("bomb.tar.gz", bomb);
    let err = Fetcher::with_limits(true, small_limits())
        .fetch(&p.url, &p.digest)
        .await
        .unwrap_err();
    assert_eq!(err, FetchError::InflatedTooLarge { limit: 256 * KIB });
    assert!(err.is_terminal());
}

#[tokio::test]
async fn gzip_bomb_default_limits_stops_at_the_cap() {
    // 4 GiB of zeros in ~4 MiB of gzip; the 512 MiB default cap must stop it
    // without inflating (let alone buffering) it.
    let srv = server().await;
    let bomb = gzip_bomb(4 * 1024 * MIB);
    assert!((bomb.len() as u64) < 64 * MIB, "{}", bomb.len());
    let p = srv.publish("bomb.tar.gz", bomb);
    let started = std::time::Instant::now();
    let err = Fetcher::new(true)
        .fetch(&p.url, &p.digest)
        .await
        .unwrap_err();
    assert_eq!(err, FetchError::InflatedTooLarge { limit: 512 * MIB });
    assert!(err.to_string().contains("512 MiB"), "{err}");
    // Generous bound (debug build, loaded CI); inflating 512 MiB would not fit.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn entry_cap_is_not_terminal() {
    let big = vec![b'x'; 16 * KIB as usize + 1];
    let bytes = tar_gz(&[("ok.yaml", b"ok\n"), ("big.yaml", &big)]);
    let err = extract(bytes.as_slice(), &small_limits()).unwrap_err();
    assert_eq!(
        err,
        FetchError::EntryTooLarge {
            name: "big.yaml".into(),
            limit: 16 * KIB
        }
    );
    assert!(!err.is_terminal());
    assert!(err.to_string().contains("big.yaml"), "{err}");

    // Exactly at the cap is fine.
    let exact = vec![b'x'; 16 * KIB as usize];
    let bytes = tar_gz(&[("exact.yaml", &exact)]);
    assert_eq!(extract(bytes.as_slice(), &small_limits()).unwrap().len(), 1);
}

#[test]
fn extracted_total_cap_is_terminal() {
    let chunk = vec![b'x'; 15 * KIB as usize];
    let names: Vec<String> = (0..5).map(|i| format!("f{i}.yaml")).collect();
    let files: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &chunk[..])).collect();
    let bytes = tar_gz(&files);
    let err = extract(bytes.as_slice(), &small_limits()).unwrap_err();
    assert_eq!(err, FetchError::ExtractedTooLarge { limit: 64 * KIB });
    assert!(err.is_terminal());

    // Hidden (skipped) entries do not count towards the total.
    let hidden: Vec<String> = (0..5).map(|i| format!(".h/f{i}.yaml")).collect();
    let mut files: Vec<(&str, &[u8])> = hidden.iter().map(|n| (n.as_str(), &chunk[..])).collect();
    files.push(("a.yaml", b"a\n"));
    let bytes = tar_gz(&files);
    assert_eq!(extract(bytes.as_slice(), &small_limits()).unwrap().len(), 1);
}

#[tokio::test]
async fn compressed_cap_is_terminal() {
    // Incompressible content so the .tar.gz is larger than 64 KiB.
    let mut noise = Vec::with_capacity(100 * KIB as usize);
    let mut x: u32 = 0x1234_5678;
    for _ in 0..100 * KIB {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        noise.push(x as u8);
    }
    let bytes = tar_gz(&[("noise.yaml", &noise)]);
    assert!(bytes.len() as u64 > 64 * KIB);
    let srv = server().await;

    // Announced by Content-Length.
    let p = srv.publish("big.tar.gz", bytes.clone());
    let err = Fetcher::with_limits(true, small_limits())
        .fetch(&p.url, &p.digest)
        .await
        .unwrap_err();
    assert_eq!(err, FetchError::CompressedTooLarge { limit: 64 * KIB });
    assert!(err.is_terminal());

    // Chunked: counted while streaming.
    let p = srv.publish_chunked("big-chunked.tar.gz", bytes);
    let err = Fetcher::with_limits(true, small_limits())
        .fetch(&p.url, &p.digest)
        .await
        .unwrap_err();
    assert_eq!(err, FetchError::CompressedTooLarge { limit: 64 * KIB });
}

#[tokio::test]
async fn corrupt_archive_with_valid_digest_is_terminal() {
    let srv = server().await;
    let p = srv.publish("notgz.tar.gz", b"this is not gzip".to_vec());
    let err = Fetcher::new(true)
        .fetch(&p.url, &p.digest)
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::Archive(_)), "{err:?}");
    assert!(err.is_terminal());

    // Truncated gzip.
    let mut bytes = tar_gz(&[("a.yaml", &[b'a'; 4096][..])]);
    bytes.truncate(bytes.len() / 2);
    let p = srv.publish("trunc.tar.gz", bytes);
    let err = Fetcher::new(true)
        .fetch(&p.url, &p.digest)
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::Archive(_)), "{err:?}");
}

#[test]
fn terminal_classification() {
    let guard = GuardError::MissingHost {
        url: "http://".into(),
    };
    let cases: Vec<(FetchError, bool)> = vec![
        (FetchError::Guard(guard), true),
        (
            FetchError::InvalidDigest {
                digest: "md5:x".into(),
                reason: "r".into(),
            },
            true,
        ),
        (
            FetchError::DigestMismatch {
                expected: "a".into(),
                actual: "b".into(),
            },
            true,
        ),
        (FetchError::CompressedTooLarge { limit: 1 }, true),
        (FetchError::InflatedTooLarge { limit: 1 }, true),
        (FetchError::ExtractedTooLarge { limit: 1 }, true),
        (FetchError::DuplicateEntry { name: "a".into() }, true),
        (
            FetchError::UnsafeEntry {
                name: "../a".into(),
            },
            true,
        ),
        (FetchError::Archive("corrupt".into()), true),
        (
            FetchError::EntryTooLarge {
                name: "a".into(),
                limit: 1,
            },
            false,
        ),
        (
            FetchError::Http {
                status: 500,
                url: "u".into(),
            },
            false,
        ),
        (FetchError::Network("reset".into()), false),
        (FetchError::Io("disk full".into()), false),
    ];
    for (e, terminal) in cases {
        assert_eq!(e.is_terminal(), terminal, "{e:?}");
    }
}
