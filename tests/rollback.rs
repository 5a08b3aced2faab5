//! The rollback store and whole-run rollback (delivery.md §5.6, operations.md
//! §6): the file backend (layout, modes, atomic writes, the read cap,
//! retention), the S3 backend against a real S3-compatible server (PyPI
//! `moto[server]`: server-side encryption per mode, static keys, anonymous
//! access, IRSA through a loopback STS), the start-up checks, and rollbacks
//! end to end on kube-sim.

mod support;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};
use stageset_controller::actors::rollback_store::StorePlan;
use stageset_controller::actors::rollback_store::aws::{Credentials, StaticKeys};
use stageset_controller::actors::rollback_store::backend::{Backend, S3Settings};
use stageset_controller::config::{Secret, SseMode};
use stageset_controller::reconcile::rollback::{SnapshotKey, SnapshotStore};
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

/// A moto S3 server on a loopback port of its own, stopped on drop.
struct Moto {
    child: Child,
    addr: String,
}

impl Moto {
    fn start() -> Moto {
        kube_sim::tls::install_crypto_provider();
        let mut child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("moto_server runs (scripts/test.sh installs PyPI moto[server])");
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("moto_server prints its address")
                .unwrap();
            if let Some(rest) = line.split("Running on http://").nth(1) {
                break rest.trim().to_string();
            }
        };
        // Keep draining its log so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Moto { child, addr }
    }

    /// moto answers anonymous requests to private objects with 403, as S3
    /// does; it does not check signatures, so any signed-looking request works.
    fn authorization() -> &'static str {
        "AWS4-HMAC-SHA256 Credential=AKIDTEST/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00"
    }

    async fn create_bucket(&self, bucket: &str, public: bool) {
        let mut req = reqwest::Client::new()
            .put(format!("http://{}/{bucket}", self.addr))
            .header("Authorization", Moto::authorization());
        if public {
            req = req.header("x-amz-acl", "public-read-write");
        }
        let status = req.send().await.unwrap().status();
        assert!(status.is_success(), "creating bucket {bucket}: {status}");
    }

    async fn head(&self, bucket: &str, key: &str) -> reqwest::header::HeaderMap {
        let resp = reqwest::Client::new()
            .head(format!("http://{}/{bucket}/{key}", self.addr))
            .header("Authorization", Moto::authorization())
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "HEAD {key}: {}", resp.status());
        resp.headers().clone()
    }

    fn settings(&self, bucket: &str, sse: SseMode, credentials: Credentials) -> S3Settings {
        S3Settings {
            endpoint: self.addr.clone(),
            bucket: bucket.into(),
            prefix: "rollback/".into(),
            region: None,
            use_ssl: false,
            sse,
            sse_kms_key: None,
            credentials,
            extra_roots_pem: Vec::new(),
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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

/// One request the recorder forwarded: method and path, `Authorization`,
/// `x-amz-security-token`.
type Seen = (String, Option<String>, Option<String>);

/// Forwards plain HTTP to moto and records each request's credentials.
struct Recorder {
    addr: std::net::SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Recorder {
    async fn start(upstream: String) -> Recorder {
        use http_body_util::{BodyExt, Full};
        use hyper::service::service_fn;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Default::default();
        let log = seen.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (client, log, upstream) = (client.clone(), log.clone(), upstream.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (client, log, upstream) =
                            (client.clone(), log.clone(), upstream.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let h = |n: &str| {
                                parts
                                    .headers
                                    .get(n)
                                    .map(|v| v.to_str().unwrap().to_string())
                            };
                            log.lock().unwrap().push((
                                format!("{} {}", parts.method, parts.uri.path()),
                                h("authorization"),
                                h("x-amz-security-token"),
                            ));
                            let body = body.collect().await.unwrap().to_bytes();
                            let mut out = client.request(
                                parts.method.clone(),
                                format!("http://{upstream}{}", parts.uri),
                            );
                            for (name, value) in parts.headers.iter() {
                                if name != "host" {
                                    out = out.header(name, value);
                                }
                            }
                            let resp = out.body(body).send().await.unwrap();
                            let mut back =
                                hyper::Response::builder().status(resp.status().as_u16());
                            for (name, value) in resp.headers() {
                                back = back.header(name.as_str(), value.as_bytes());
                            }
                            let bytes = resp.bytes().await.unwrap();
                            Ok::<_, std::convert::Infallible>(back.body(Full::new(bytes)).unwrap())
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Recorder { addr, seen }
    }
}

/// A loopback STS over TLS: checks the web-identity token and role it is
/// sent, and answers with temporary credentials.
struct Sts {
    url: String,
    ca_pem: String,
    calls: Arc<Mutex<Vec<String>>>,
}

const TEMP_KEY: &str = "ASIATEMPORARYKEY0001";
const TEMP_TOKEN: &str = "session-token-from-sts";
const WEB_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.projected-service-account-token";
const ROLE: &str = "arn:aws:iam::123456789012:role/stageset-controller";

impl Sts {
    async fn start() -> Sts {
        use http_body_util::Full;
        use hyper::service::service_fn;
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        kube_sim::tls::install_crypto_provider();
        let certs = kube_sim::tls::generate(&[]).unwrap();
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(certs.cert_pem.as_bytes())
                .map(|c| c.unwrap())
                .collect();
        let key = PrivateKeyDer::from_pem_slice(certs.key_pem.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let calls: Arc<Mutex<Vec<String>>> = Default::default();
        let log = calls.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, log) = (acceptor.clone(), log.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let log = log.clone();
                        async move {
                            let query = req.uri().query().unwrap_or("").to_string();
                            let params: std::collections::HashMap<String, String> =
                                form_urlencoded::parse(query.as_bytes())
                                    .into_owned()
                                    .collect();
                            log.lock().unwrap().push(query.clone());
                            let ok = params.get("Action").map(String::as_str)
                                == Some("AssumeRoleWithWebIdentity")
                                && params.get("WebIdentityToken").map(String::as_str)
                                    == Some(WEB_TOKEN)
                                && params.get("RoleArn").map(String::as_str) == Some(ROLE);
                            let (status, body) = if ok {
                                (
                                    200,
                                    format!(
                                        "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><AssumeRoleWithWebIdentityResult><Credentials><AccessKeyId>{TEMP_KEY}</AccessKeyId><SecretAccessKey>temporary-secret</SecretAccessKey><SessionToken>{TEMP_TOKEN}</SessionToken><Expiration>2099-01-01T00:00:00Z</Expiration></Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>"
                                    ),
                                )
                            } else {
                                (403, "<ErrorResponse><Error><Code>AccessDenied</Code></Error></ErrorResponse>".to_string())
                            };
                            Ok::<_, std::convert::Infallible>(
                                hyper::Response::builder()
                                    .status(status)
                                    .header("content-type", "text/xml")
                                    .body(Full::new(Bytes::from(body)))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Sts {
            url: format!("https://127.0.0.1:{port}"),
            ca_pem: certs.ca_pem,
            calls,
        }
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
