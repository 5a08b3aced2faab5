//! The rollback store and whole-run rollback (delivery.md §5.6, operations.md
//! §6): the file backend (layout, modes, atomic writes, the read cap,
//! retention), the S3 backend against a real S3-compatible server (PyPI
//! `moto[server]`: server-side encryption per mode, static keys, anonymous
//! access, IRSA through a loopback STS), the start-up checks, and rollbacks
//! end to end on kube-sim.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};
use stageset_controller::actors::rollback_store::StorePlan;
use stageset_controller::actors::rollback_store::aws::{Credentials, StaticKeys};
use stageset_controller::actors::rollback_store::backend::Backend;
use stageset_controller::config::{Secret, SseMode};
use stageset_controller::reconcile::rollback::{SnapshotKey, SnapshotStore};
use support::s3::{Moto, ROLE, Recorder, Sts, TEMP_KEY, TEMP_TOKEN, WEB_TOKEN};
use support::*;

const DEADLINE: Duration = Duration::from_secs(60);

fn key(stage: &str, digest: &str) -> SnapshotKey {
    SnapshotKey {
        namespace: "payments".into(),
        stageset: "app".into(),
        stage: stage.into(),
        digest: digest.into(),
    }
}

fn digest(n: u8) -> String {
    format!("sha256:{}", format!("{n:02x}").repeat(32))
}

// --- the file backend -----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_keep_upstreams_layout_private_and_whole() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let backend = Backend::files(&root).unwrap();
    // The directory is created 0700.
    let mode = std::fs::metadata(&root).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{mode:o}");
    let body =
        Bytes::from_static(br#"[{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"}}]"#);
    backend
        .put(&key("api", &digest(1)), body.clone())
        .await
        .unwrap();
    // One flat file named after the key, 0600, nothing else left behind.
    let names: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let name = format!("payments_app_api_sha256-{}", "01".repeat(32));
    assert_eq!(names, std::slice::from_ref(&name));
    let file = root.join(&name);
    assert_eq!(std::fs::read(&file).unwrap(), body);
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        backend.get(&key("api", &digest(1))).await.unwrap(),
        Some(body)
    );
    assert_eq!(backend.get(&key("api", &digest(2))).await.unwrap(), None);
    // Overwriting replaces the content as a whole.
    backend
        .put(&key("api", &digest(1)), Bytes::from_static(b"[]"))
        .await
        .unwrap();
    assert_eq!(std::fs::read(&file).unwrap(), b"[]");
    // A rendering larger than 64 MiB is refused on read.
    let big = root.join(format!("payments_app_api_sha256-{}", "03".repeat(32)));
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(64 * 1024 * 1024 + 1).unwrap();
    let err = backend.get(&key("api", &digest(3))).await.unwrap_err();
    assert!(err.0.contains("more than the 67108864"), "{err}");
    // A file the Go controller wrote is read as it is.
    std::fs::write(
        root.join(format!("payments_app_web_sha256-{}", "04".repeat(32))),
        b"[{\"kind\":\"Service\"}]",
    )
    .unwrap();
    assert_eq!(
        backend.get(&key("web", &digest(4))).await.unwrap().unwrap(),
        Bytes::from_static(b"[{\"kind\":\"Service\"}]")
    );
}

#[test]
fn retention_keeps_the_newest_and_the_last_good_run() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    actix::System::new().block_on(async move {
        let store = StorePlan::Files {
            root: root.clone(),
            retention: 2,
        }
        .start()
        .unwrap();
        // Five renderings of stage "api", each newer than the last; the
        // first is what status.lastAppliedSnapshot points to.
        for n in 1..=5u8 {
            store
                .put(
                    key("api", &digest(n)),
                    Bytes::from(format!("[{n}]")),
                    vec![digest(1)],
                )
                .await
                .unwrap();
            // File times have a resolution; keep the order unambiguous.
            let path = root.join(format!(
                "payments_app_api_sha256-{}",
                format!("{n:02x}").repeat(32)
            ));
            let when = std::time::SystemTime::UNIX_EPOCH
                + Duration::from_secs(1_700_000_000 + u64::from(n));
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(when)
                .unwrap();
        }
        // Another stage is not touched by stage "api"'s retention.
        store
            .put(key("web", &digest(9)), Bytes::from_static(b"[]"), vec![])
            .await
            .unwrap();
        store
            .put(
                key("api", &digest(6)),
                Bytes::from_static(b"[6]"),
                vec![digest(1)],
            )
            .await
            .unwrap();
        let mut left: Vec<String> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let name = |stage: &str, n: u8| {
            format!(
                "payments_app_{stage}_sha256-{}",
                format!("{n:02x}").repeat(32)
            )
        };
        // The newest two (6 just written, 5), plus 1 (the last good run).
        assert_eq!(
            left,
            [
                name("api", 1),
                name("api", 5),
                name("api", 6),
                name("web", 9)
            ]
        );
        assert_eq!(
            store.get(key("api", &digest(1))).await.unwrap(),
            Some(Bytes::from_static(b"[1]"))
        );
        assert_eq!(store.get(key("api", &digest(2))).await.unwrap(), None);
    });
}

// --- the S3 backend against moto -------------------------------------------------------

fn static_keys(id: &str) -> Credentials {
    Credentials::Static {
        keys: StaticKeys {
            key_id: id.into(),
            secret: Secret::new("test-secret"),
            token: None,
        },
        origin: "the test".into(),
    }
}

fn header<'a>(h: &'a reqwest::header::HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).map(|v| v.to_str().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_encrypts_at_rest_per_mode() {
    let moto = Moto::start();
    moto.create_bucket("enc", false).await;
    let object = |n: u8| {
        format!(
            "rollback/payments/app/api/sha256-{}",
            format!("{n:02x}").repeat(32)
        )
    };
    let body = Bytes::from_static(b"[{\"kind\":\"Secret\",\"metadata\":{\"name\":\"s\"}}]");

    // s3 (the default): SSE-S3.
    let s3 = Backend::s3(&moto.settings("enc", SseMode::S3, static_keys("AKIDS3"))).unwrap();
    s3.put(&key("api", &digest(1)), body.clone()).await.unwrap();
    let h = moto.head("enc", &object(1)).await;
    assert_eq!(header(&h, "x-amz-server-side-encryption"), Some("AES256"));
    assert_eq!(header(&h, "content-type"), Some("application/json"));
    assert_eq!(
        s3.get(&key("api", &digest(1))).await.unwrap(),
        Some(body.clone())
    );

    // kms with a key: SSE-KMS naming the key.
    let arn = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    let mut settings = moto.settings("enc", SseMode::Kms, static_keys("AKIDKMS"));
    settings.sse_kms_key = Some(arn.into());
    let kms = Backend::s3(&settings).unwrap();
    kms.put(&key("api", &digest(2)), body.clone())
        .await
        .unwrap();
    let h = moto.head("enc", &object(2)).await;
    assert_eq!(header(&h, "x-amz-server-side-encryption"), Some("aws:kms"));
    assert_eq!(
        header(&h, "x-amz-server-side-encryption-aws-kms-key-id"),
        Some(arn)
    );

    // kms without a key: the bucket's default key, and no key-id header at all.
    let mut settings = moto.settings("enc", SseMode::Kms, static_keys("AKIDKMS"));
    settings.sse_kms_key = Some(String::new());
    let default_key = Backend::s3(&settings).unwrap();
    default_key
        .put(&key("api", &digest(3)), body.clone())
        .await
        .unwrap();
    let h = moto.head("enc", &object(3)).await;
    assert_eq!(header(&h, "x-amz-server-side-encryption"), Some("aws:kms"));
    assert_eq!(
        header(&h, "x-amz-server-side-encryption-aws-kms-key-id"),
        None
    );

    // none: no encryption header.
    let none = Backend::s3(&moto.settings("enc", SseMode::None, static_keys("AKIDNONE"))).unwrap();
    none.put(&key("api", &digest(4)), body.clone())
        .await
        .unwrap();
    let h = moto.head("enc", &object(4)).await;
    assert_eq!(header(&h, "x-amz-server-side-encryption"), None);

    // A missing key is a miss, not an error.
    assert_eq!(none.get(&key("api", &digest(9))).await.unwrap(), None);
}

/// Without `--rollback-store-s3-region` and an endpoint name that carries
/// none, the store asks the endpoint for the bucket's region and signs for
/// it (operations.md OPS-46); a region given, or an unanswered question,
/// asks nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_the_bucket_region_is_discovered_when_none_is_given() {
    let moto = Moto::start();
    moto.create_bucket_in("eu-bucket", "eu-west-1").await;
    let recorder = Recorder::start(moto.addr.clone()).await;
    let plan = |region: Option<&str>, endpoint: String| {
        let mut settings = moto.settings("eu-bucket", SseMode::None, static_keys("AKIDREGION"));
        settings.endpoint = endpoint;
        settings.region = region.map(str::to_string);
        StorePlan::S3 {
            settings: Box::new(settings),
            retention: 3,
        }
    };
    let region_of = |plan: StorePlan| match plan {
        StorePlan::S3 { settings, .. } => *settings,
        StorePlan::Files { .. } => unreachable!("an S3 plan"),
    };
    let discovered = region_of(
        plan(None, recorder.addr.to_string())
            .discover_region()
            .await,
    );
    assert_eq!(discovered.region.as_deref(), Some("eu-west-1"));
    // The store then signs for that region.
    let store = Backend::s3(&discovered).unwrap();
    store
        .put(&key("api", &digest(1)), Bytes::from_static(b"[]"))
        .await
        .unwrap();
    let seen = recorder.seen.lock().unwrap().clone();
    let (head, put) = (&seen[0], seen.last().unwrap());
    assert_eq!(head.0, "HEAD /eu-bucket", "{seen:?}");
    assert_eq!(head.1, None, "the question is not signed");
    assert!(
        put.1
            .as_deref()
            .is_some_and(|a| a.contains("/eu-west-1/s3/aws4_request")),
        "{put:?}"
    );
    // A region given is kept, without a question.
    let before = recorder.seen.lock().unwrap().len();
    let given = region_of(
        plan(Some("ap-south-1"), recorder.addr.to_string())
            .discover_region()
            .await,
    );
    assert_eq!(given.region.as_deref(), Some("ap-south-1"));
    assert_eq!(recorder.seen.lock().unwrap().len(), before);
    // Nothing answers: no region, so the store signs for us-east-1.
    let closed = format!("127.0.0.1:{}", free_port());
    let unanswered = region_of(plan(None, closed).discover_region().await);
    assert_eq!(unanswered.region, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_anonymous_requests_are_unsigned() {
    let moto = Moto::start();
    moto.create_bucket("private", false).await;
    moto.create_bucket("public", true).await;
    let recorder = Recorder::start(moto.addr.clone()).await;
    let anonymous = |bucket: &str| {
        let mut settings = moto.settings(bucket, SseMode::None, Credentials::Anonymous);
        settings.endpoint = recorder.addr.to_string();
        Backend::s3(&settings).unwrap()
    };
    let body = Bytes::from_static(b"[]");
    // A public bucket takes unsigned requests both ways.
    let public = anonymous("public");
    public
        .put(&key("api", &digest(1)), body.clone())
        .await
        .unwrap();
    assert_eq!(
        public.get(&key("api", &digest(1))).await.unwrap(),
        Some(body.clone())
    );
    // A private object is not readable without a signature.
    let signed =
        Backend::s3(&moto.settings("private", SseMode::None, static_keys("AKIDPRIV"))).unwrap();
    signed
        .put(&key("api", &digest(2)), body.clone())
        .await
        .unwrap();
    assert!(
        anonymous("private")
            .get(&key("api", &digest(2)))
            .await
            .is_err()
    );
    // Nothing the anonymous store sent carried credentials.
    let seen = recorder.seen.lock().unwrap().clone();
    assert!(seen.len() >= 3, "{seen:?}");
    for (request, authorization, token) in &seen {
        assert_eq!(authorization, &None, "{request}");
        assert_eq!(token, &None, "{request}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_irsa_exchanges_the_web_identity_token_at_sts() {
    let moto = Moto::start();
    moto.create_bucket("irsa", false).await;
    let recorder = Recorder::start(moto.addr.clone()).await;
    let sts = Sts::start().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, WEB_TOKEN).unwrap();
    // The environment IRSA sets up, as the credential chain reads it.
    let env = |k: &str| match k {
        "AWS_WEB_IDENTITY_TOKEN_FILE" => Some(token_file.to_string_lossy().into_owned()),
        "AWS_ROLE_ARN" => Some(ROLE.to_string()),
        "AWS_ENDPOINT_URL_STS" => Some(sts.url.clone()),
        _ => None,
    };
    let credentials = stageset_controller::actors::rollback_store::aws::choose(
        &Default::default(),
        &env,
        Some(dir.path().to_path_buf()),
    )
    .unwrap();
    assert!(
        matches!(credentials, Credentials::WebIdentity { .. }),
        "{credentials:?}"
    );
    let mut settings = moto.settings("irsa", SseMode::S3, credentials);
    settings.endpoint = recorder.addr.to_string();
    settings.extra_roots_pem = vec![sts.ca_pem.clone().into_bytes()];
    let backend = Backend::s3(&settings).unwrap();
    let body = Bytes::from_static(b"[]");
    backend
        .put(&key("api", &digest(1)), body.clone())
        .await
        .unwrap();
    assert_eq!(
        backend.get(&key("api", &digest(1))).await.unwrap(),
        Some(body)
    );
    // STS saw the token and the role; S3 saw the temporary credentials.
    assert!(!sts.calls.lock().unwrap().is_empty());
    let seen = recorder.seen.lock().unwrap().clone();
    assert!(!seen.is_empty());
    for (request, authorization, token) in &seen {
        let authorization = authorization.as_deref().unwrap_or_default();
        assert!(
            authorization.contains(&format!("Credential={TEMP_KEY}/")),
            "{request}: {authorization}"
        );
        assert_eq!(token.as_deref(), Some(TEMP_TOKEN), "{request}");
    }
}

// --- start-up checks ----------------------------------------------------------------------

fn run_binary(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_stageset-controller"))
        .args(args)
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn two_stores_or_half_an_s3_store_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = format!("--rollback-store-path={}", dir.path().display());
    let (code, stderr) = run_binary(&[
        &path,
        "--rollback-store-s3-endpoint=s3.example.com",
        "--rollback-store-s3-bucket=b",
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("mutually exclusive"), "{stderr}");
    let (code, stderr) = run_binary(&["--rollback-store-s3-endpoint=s3.example.com"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("must both be set"), "{stderr}");
    let (code, stderr) = run_binary(&[
        "--rollback-store-s3-endpoint=https://s3.example.com",
        "--rollback-store-s3-bucket=b",
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("host[:port]"), "{stderr}");
    // A path that cannot be a directory.
    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let (code, stderr) = run_binary(&[&format!("--rollback-store-path={}", file.display())]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("not a directory"), "{stderr}");
}

// --- rollbacks end to end -----------------------------------------------------------------

const NS: &str = "shop";

fn config_map(release: &str, broken: bool) -> String {
    let annotations = if broken {
        "  annotations:\n    release-broken: \"yes\"\n"
    } else {
        ""
    };
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web-config\n  namespace: {NS}\n{annotations}data:\n  release: {release}\n  notes: |\n    ünïcode ✓ and trailing spaces   \n    second line\n"
    )
}

/// A StageSet whose stage fails its ready check when the ConfigMap says the
/// release is broken.
fn spec() -> Value {
    json!({
        "rollbackOnFailure": true,
        "interval": "1h",
        "stages": [{
            "name": "web",
            "sourceRef": {"name": "web"},
            "readyChecks": {"exprs": [{
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "current": "true",
                "failed": "has(metadata.annotations) && 'release-broken' in metadata.annotations"
            }]}
        }]
    })
}

/// Rolls v1 out, removes v1's artifact from the producer, publishes a v2
/// that fails, and returns the harness.
async fn v1_then_failing_v2(flags: Vec<String>) -> Harness {
    let h = Harness::start_with(HarnessOptions {
        flags,
        ..Default::default()
    })
    .await;
    h.namespace(NS).await;
    let v1 = h.artifact("v1.tar.gz", &[("cm.yaml", &config_map("v1", false))]);
    h.external_artifact(NS, "web", &v1, "v1").await;
    h.stageset(NS, "site", spec()).await;
    let ss = h.wait_ready_reason(NS, "site", "Succeeded", "").await;
    let snapshot = &ss.status.as_ref().unwrap().last_applied_snapshot;
    assert_eq!(snapshot.len(), 1);
    assert_eq!(snapshot[0].stage, "web");
    assert_eq!(snapshot[0].digest, v1.digest);
    assert_eq!(snapshot[0].revision.as_deref(), Some("v1"));
    // The producer garbage-collects v1.
    h.artifacts.remove("v1.tar.gz");
    let v2 = h.artifact("v2.tar.gz", &[("cm.yaml", &config_map("v2", true))]);
    h.external_artifact(NS, "web", &v2, "v2").await;
    h
}

/// The ConfigMap's `data` each time it changes, until `done` says enough.
async fn watch_data<F>(h: &Harness, done: F) -> Vec<Value>
where
    F: Fn(&[Value]) -> bool,
{
    let api: Api<ConfigMap> = Api::namespaced(h.client.clone(), NS);
    let mut stream = watcher(
        api,
        watcher::Config::default().fields("metadata.name=web-config"),
    )
    .applied_objects()
    .boxed();
    let mut seen: Vec<Value> = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    while !done(&seen) {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining, stream.next()).await {
            Ok(Some(Ok(cm))) => {
                let data = serde_json::to_value(&cm.data).unwrap();
                if seen.last() != Some(&data) {
                    seen.push(data);
                }
            }
            Ok(Some(Err(e))) => panic!("watch: {e}"),
            Ok(None) | Err(_) => panic!("the ConfigMap never went {seen:?} → done"),
        }
    }
    seen
}

fn release(data: &Value) -> &str {
    data["release"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_rolls_back_from_the_store_after_the_producer_forgot() {
    let store = tempfile::tempdir().unwrap();
    let h = v1_then_failing_v2(vec![format!(
        "--rollback-store-path={}",
        store.path().display()
    )])
    .await;
    // v2 is applied, fails its check, and v1 comes back from the store.
    let seen = watch_data(&h, |seen| {
        seen.iter()
            .position(|d| release(d) == "v2")
            .is_some_and(|i| seen[i..].iter().any(|d| release(d) == "v1"))
    })
    .await;
    let restored = seen.iter().rev().find(|d| release(d) == "v1").unwrap();
    // Byte for byte what v1 applied.
    assert_eq!(restored, &seen[0], "{seen:?}");
    assert_eq!(
        restored["notes"],
        "ünïcode ✓ and trailing spaces   \nsecond line\n"
    );
    // The failure stays the Ready condition; the rollback is an event.
    let ss = h
        .wait_ready_reason(NS, "site", "StageFailed", "readyCheck failed")
        .await;
    assert_eq!(
        ss.status.unwrap().last_applied_snapshot[0]
            .revision
            .as_deref(),
        Some("v1"),
        "the snapshot still points at the last good run"
    );
    let deadline = Instant::now() + DEADLINE;
    loop {
        let events = h.events(NS, "site").await;
        if let Some(e) = events
            .iter()
            .find(|e| e.reason.as_deref() == Some("RolledBack"))
        {
            assert_eq!(e.type_.as_deref(), Some("Warning"));
            assert!(
                e.message.as_deref().unwrap_or("").contains("web@v1"),
                "{:?}",
                e.message
            );
            break;
        }
        assert!(Instant::now() < deadline, "no RolledBack event: {events:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The store holds v1's rendering under upstream's flat name.
    let names: Vec<String> = std::fs::read_dir(store.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().any(|n| n.starts_with("shop_site_web_sha256-")),
        "{names:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_store_a_forgotten_revision_is_unavailable() {
    let h = v1_then_failing_v2(Vec::new()).await;
    let ss = h
        .wait_ready_reason(
            NS,
            "site",
            "PreviousRevisionUnavailable",
            "stage \"web\" revision v1: the artifact is no longer fetchable",
        )
        .await;
    // v2 stays applied: nothing was restored.
    let cm: ConfigMap = Api::namespaced(h.client.clone(), NS)
        .get("web-config")
        .await
        .unwrap();
    assert_eq!(cm.data.unwrap()["release"], "v2");
    assert_eq!(
        ss.status.unwrap().last_applied_snapshot[0]
            .revision
            .as_deref(),
        Some("v1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_rolls_back_from_s3_configured_by_flags() {
    let moto = Moto::start();
    moto.create_bucket("rollback", false).await;
    let h = v1_then_failing_v2(vec![
        format!("--rollback-store-s3-endpoint={}", moto.addr),
        "--rollback-store-s3-bucket=rollback".into(),
        "--rollback-store-s3-prefix=clusters/dev/".into(),
        "--rollback-store-s3-use-ssl=false".into(),
        "--rollback-store-s3-access-key=AKIDFLAGS".into(),
        "--rollback-store-s3-secret-key=flag-secret".into(),
    ])
    .await;
    let seen = watch_data(&h, |seen| {
        seen.iter()
            .position(|d| release(d) == "v2")
            .is_some_and(|i| seen[i..].iter().any(|d| release(d) == "v1"))
    })
    .await;
    assert_eq!(
        seen.iter().rev().find(|d| release(d) == "v1").unwrap(),
        &seen[0]
    );
    // The rendering is in the bucket under the prefix, encrypted (SSE-S3 is
    // the default mode).
    let listing = reqwest::Client::new()
        .get(format!(
            "http://{}/rollback?list-type=2&prefix=clusters/dev/shop/site/web/",
            moto.addr
        ))
        .header("Authorization", Moto::authorization())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let object = listing
        .split("<Key>")
        .nth(1)
        .and_then(|k| k.split("</Key>").next())
        .unwrap_or_else(|| panic!("no stored rendering: {listing}"))
        .to_string();
    assert!(
        object.starts_with("clusters/dev/shop/site/web/sha256-"),
        "{object}"
    );
    let h = moto.head("rollback", &object).await;
    assert_eq!(header(&h, "x-amz-server-side-encryption"), Some("AES256"));
}

/// Without a store, a revision the producer still serves is fetched again
/// and rebuilt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_store_a_still_served_revision_is_fetched_again() {
    let h = Harness::start().await;
    h.namespace(NS).await;
    let v1 = h.artifact("v1.tar.gz", &[("cm.yaml", &config_map("v1", false))]);
    h.external_artifact(NS, "web", &v1, "v1").await;
    h.stageset(NS, "site", spec()).await;
    h.wait_ready_reason(NS, "site", "Succeeded", "").await;
    let before = h.artifacts.hits("v1.tar.gz");
    let v2 = h.artifact("v2.tar.gz", &[("cm.yaml", &config_map("v2", true))]);
    h.external_artifact(NS, "web", &v2, "v2").await;
    let seen = watch_data(&h, |seen| {
        seen.iter()
            .position(|d| release(d) == "v2")
            .is_some_and(|i| seen[i..].iter().any(|d| release(d) == "v1"))
    })
    .await;
    assert_eq!(
        seen.iter().rev().find(|d| release(d) == "v1").unwrap(),
        &seen[0]
    );
    assert!(
        h.artifacts.hits("v1.tar.gz") > before,
        "v1 was fetched again"
    );
}

/// A rebuild with post-build variables that changed since the good run would
/// not be the good run: the rollback refuses it ("fix forward").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_variables_refuse_a_rebuilt_rollback() {
    let h = Harness::start().await;
    h.namespace(NS).await;
    let cm = |release: &str, broken: bool| {
        // `\ndata:` (not `metadata:`): kube-sim refuses unknown fields of
        // built-in kinds, as a real API server does.
        config_map(release, broken).replace("\ndata:\n", "\ndata:\n  color: ${color}\n")
    };
    let with_color = |color: &str| {
        let mut s = spec();
        s["stages"][0]["postBuild"] = json!({"substitute": {"color": color}});
        s
    };
    let v1 = h.artifact("v1.tar.gz", &[("cm.yaml", &cm("v1", false))]);
    h.external_artifact(NS, "web", &v1, "v1").await;
    h.stageset(NS, "site", with_color("blue")).await;
    let ss = h.wait_ready_reason(NS, "site", "Succeeded", "").await;
    let snapshot = &ss.status.as_ref().unwrap().last_applied_snapshot[0];
    assert!(
        snapshot
            .substitution_digest
            .as_deref()
            .is_some_and(|d| d.len() == 64),
        "{snapshot:?}"
    );
    // A new, failing revision and a new variable value arrive together.
    let v2 = h.artifact("v2.tar.gz", &[("cm.yaml", &cm("v2", true))]);
    h.external_artifact(NS, "web", &v2, "v2").await;
    h.stageset(NS, "site", with_color("red")).await;
    h.wait_ready_reason(
        NS,
        "site",
        "PreviousRevisionUnavailable",
        "its postBuild variables changed since it was applied; fix forward instead",
    )
    .await;
    let cm: ConfigMap = Api::namespaced(h.client.clone(), NS)
        .get("web-config")
        .await
        .unwrap();
    let data = cm.data.unwrap();
    assert_eq!(data["release"], "v2");
    assert_eq!(data["color"], "red");
}
