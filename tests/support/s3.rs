//! Real S3 for the tests: a moto server (PyPI `moto[server]`) on a loopback
//! port of its own, a recording proxy in front of it that shows which
//! credentials requests carried, and a loopback STS over TLS for web-identity
//! (IRSA) exchanges.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use stageset_controller::actors::rollback_store::aws::Credentials;
use stageset_controller::actors::rollback_store::backend::S3Settings;
use stageset_controller::config::SseMode;

/// A moto S3 server on a loopback port of its own, stopped on drop.
pub struct Moto {
    child: Child,
    pub addr: String,
}

impl Moto {
    pub fn start() -> Moto {
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
    pub fn authorization() -> &'static str {
        "AWS4-HMAC-SHA256 Credential=AKIDTEST/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00"
    }

    pub async fn create_bucket(&self, bucket: &str, public: bool) {
        let mut req = reqwest::Client::new()
            .put(format!("http://{}/{bucket}", self.addr))
            .header("Authorization", Moto::authorization());
        if public {
            req = req.header("x-amz-acl", "public-read-write");
        }
        let status = req.send().await.unwrap().status();
        assert!(status.is_success(), "creating bucket {bucket}: {status}");
    }

    /// A bucket in `region` (moto takes the region from the request's
    /// credential scope and checks the location constraint against it).
    pub async fn create_bucket_in(&self, bucket: &str, region: &str) {
        let status = reqwest::Client::new()
            .put(format!("http://{}/{bucket}", self.addr))
            .header(
                "Authorization",
                Moto::authorization().replace("/us-east-1/", &format!("/{region}/")),
            )
            .body(format!(
                "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><LocationConstraint>{region}</LocationConstraint></CreateBucketConfiguration>"
            ))
            .send()
            .await
            .unwrap()
            .status();
        assert!(
            status.is_success(),
            "creating bucket {bucket} in {region}: {status}"
        );
    }

    pub async fn head(&self, bucket: &str, key: &str) -> reqwest::header::HeaderMap {
        let resp = reqwest::Client::new()
            .head(format!("http://{}/{bucket}/{key}", self.addr))
            .header("Authorization", Moto::authorization())
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "HEAD {key}: {}", resp.status());
        resp.headers().clone()
    }

    pub fn settings(&self, bucket: &str, sse: SseMode, credentials: Credentials) -> S3Settings {
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

/// One request the recorder forwarded: method and path, `Authorization`,
/// `x-amz-security-token`.
pub type Seen = (String, Option<String>, Option<String>);

/// Forwards plain HTTP to moto and records each request's credentials.
pub struct Recorder {
    pub addr: std::net::SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Recorder {
    pub async fn start(upstream: String) -> Recorder {
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
pub struct Sts {
    pub url: String,
    pub ca_pem: String,
    pub calls: Arc<Mutex<Vec<String>>>,
}

pub const TEMP_KEY: &str = "ASIATEMPORARYKEY0001";
pub const TEMP_TOKEN: &str = "session-token-from-sts";
pub const WEB_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.projected-service-account-token";
pub const ROLE: &str = "arn:aws:iam::123456789012:role/stageset-controller";

impl Sts {
    pub async fn start() -> Sts {
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
