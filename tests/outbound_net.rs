//! Http actions against real receivers (delivery.md §3.3, operations.md §8.6,
//! docs/decisions.md 16).
//!
//! The client refuses loopback, so a receiver must listen on an address that
//! is not: 192.0.2.10 (TEST-NET-1) on the `lo` of a private network
//! namespace that scripts/test.sh creates (`unshare -n`, `ip addr add
//! 192.0.2.10/32 dev lo`). Outside such a namespace every test returns after
//! one line on stderr, unless STAGESET_REQUIRE_NETNS=1 (the script sets it),
//! which makes that a failure. Nothing here sends to any address but
//! 192.0.2.10 and 127.0.0.1: names resolve through a fixed table, and the
//! only system lookup is of `localhost`.
//!
//! Loopback listeners stand where a refused request would land; they count
//! connections, and "refused" means that count stayed 0.
//!
//! The same namespace hosts what reads metric sources through that guard:
//! error budgets, promotion analysis and the fast track against a real
//! Prometheus and a JSON webhook, and the bundled alerts judged by promtool
//! on series scraped from such a run.

mod support;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use stageset_controller::api::action::HttpMethod;
use stageset_controller::reconcile::outbound::{
    ActionPolicy, GuardError, HostLookup, HttpActionError, HttpActionRequest, LookupFuture,
    MAX_ERROR_BODY, MAX_REDIRECTS, MAX_RESPONSE_BODY, send,
};
use tokio::net::TcpListener;

/// The receiver's address: local only inside the test namespace.
const NETNS_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);

/// Whether this runs inside the test namespace; prints the skip line once.
fn in_netns() -> bool {
    static IN_NETNS: OnceLock<bool> = OnceLock::new();
    *IN_NETNS.get_or_init(|| {
        if std::net::TcpListener::bind((NETNS_ADDR, 0)).is_ok() {
            return true;
        }
        if std::env::var("STAGESET_REQUIRE_NETNS").as_deref() == Ok("1") {
            panic!(
                "STAGESET_REQUIRE_NETNS=1, but {NETNS_ADDR} is not a local address: run this binary the way scripts/test.sh does (unshare -n, ip addr add {NETNS_ADDR}/32 dev lo)"
            );
        }
        // Straight to stderr: the test harness captures `eprintln!`.
        let _ = writeln!(
            io::stderr(),
            "outbound_net: skipped: {NETNS_ADDR} is not a local address (scripts/test.sh runs these tests in a private network namespace)"
        );
        false
    })
}

// --- receivers --------------------------------------------------------------------

/// One request as the receiver saw it.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
}

/// An HTTP server on 192.0.2.10 whose answers the path chooses:
///
/// * `/ok` → 200 `ok`
/// * `/status/<code>` → `<code>` with body `status <code>`
/// * `/redirect/<code>?to=<location>` → `<code>` with that `Location`
/// * `/chain/<n>` → 307 to `/chain/<n-1>` (relative), `/chain/0` → 200
/// * `/big/<code>/<bytes>` → `<code>` with a body of that many bytes
/// * `/echo/<code>` → `<code>` with every request header value in the body
struct Receiver {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = TcpListener::bind((NETNS_ADDR, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let (store, count) = (seen.clone(), connections.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let store = store.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| answer(req, store.clone()));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver {
            addr,
            seen,
            connections,
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

async fn answer(
    req: Request<Incoming>,
    store: Arc<Mutex<Vec<Seen>>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let headers = req
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
        .collect::<Vec<_>>();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    let seen = Seen {
        method,
        path: path.clone(),
        headers,
        body,
    };
    store.lock().unwrap().push(seen.clone());

    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let code = |s: &str| s.parse::<u16>().unwrap();
    let mut resp = Response::builder();
    let body: Vec<u8> = match parts.as_slice() {
        ["ok"] => b"ok".to_vec(),
        ["status", c] => {
            resp = resp.status(code(c));
            format!("status {c}").into_bytes()
        }
        ["redirect", c] => {
            let to = form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| k == "to")
                .map(|(_, v)| v.into_owned())
                .expect("a to= parameter");
            resp = resp.status(code(c)).header("location", to);
            Vec::new()
        }
        ["chain", n] => match code(n) {
            0 => b"done".to_vec(),
            n => {
                resp = resp
                    .status(307)
                    .header("location", format!("/chain/{}", n - 1));
                Vec::new()
            }
        },
        ["big", c, n] => {
            resp = resp.status(code(c));
            vec![b'x'; n.parse::<usize>().unwrap()]
        }
        ["echo", c] => {
            resp = resp.status(code(c));
            let mut out = b"you sent:".to_vec();
            for (name, value) in &seen.headers {
                out.extend_from_slice(format!(" {name}=").as_bytes());
                out.extend_from_slice(value);
            }
            out.extend_from_slice(b" body=");
            out.extend_from_slice(&seen.body);
            out.extend(std::iter::repeat_n(b'.', 2000));
            out
        }
        _ => {
            resp = resp.status(404);
            b"no such route".to_vec()
        }
    };
    Ok(resp.body(Full::new(Bytes::from(body))).unwrap())
}

/// A listener on 127.0.0.1 that only counts connections: where a request
/// the guard must refuse would land.
struct Trap {
    port: u16,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Trap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Trap {
    async fn start() -> Trap {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        });
        Trap {
            port,
            connections,
            task,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

// --- the client's side ---------------------------------------------------------------

/// Test names: `a.test` and `b.test` are the receiver's address,
/// `loop.test` and `localhost` are loopback; nothing else resolves. A
/// trailing dot is ignored, as by the system resolver.
#[derive(Debug)]
struct TestNames(BTreeMap<&'static str, Vec<IpAddr>>);

impl HostLookup for TestNames {
    fn lookup(&self, host: &str) -> LookupFuture {
        let found = self.0.get(host.trim_end_matches('.')).cloned();
        Box::pin(async move {
            found.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "not a test name"))
        })
    }
}

fn policy(globs: &[&str]) -> ActionPolicy {
    let v4 = |ip: Ipv4Addr| vec![IpAddr::V4(ip)];
    let names = TestNames(BTreeMap::from([
        ("a.test", v4(NETNS_ADDR)),
        ("b.test", v4(NETNS_ADDR)),
        ("loop.test", v4(Ipv4Addr::LOCALHOST)),
        (
            "localhost",
            vec![
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ],
        ),
    ]));
    ActionPolicy::with_lookup(
        globs.iter().map(|g| g.to_string()).collect(),
        Arc::new(names),
    )
}

fn request(url: impl Into<String>, method: HttpMethod) -> HttpActionRequest {
    HttpActionRequest::new(url, method)
}

fn with_token(mut req: HttpActionRequest) -> HttpActionRequest {
    req.headers
        .insert("Authorization".into(), TOKEN.as_bytes().to_vec());
    req
}

const TOKEN: &str = "Bearer tok-5e1f2a9c8b7d";

fn redirect(code: u16, to: &str) -> String {
    let to: String = form_urlencoded::byte_serialize(to.as_bytes()).collect();
    format!("/redirect/{code}?to={to}")
}

fn guard_of(err: &HttpActionError) -> &GuardError {
    err.guard_error()
        .unwrap_or_else(|| panic!("expected a guard refusal, got {err}"))
}

// --- tests ---------------------------------------------------------------------------

#[tokio::test]
async fn the_receiver_gets_method_headers_and_body_exactly() {
    if !in_netns() {
        return;
    }
    let rx = Receiver::start().await;
    let p = policy(&[]);
    let body: Vec<u8> = b"{\"deploy\":\"v1.2.3\"}\n\x00\xff binary tail".to_vec();
    let methods = [
        (HttpMethod::Post, "POST", true),
        (HttpMethod::Put, "PUT", true),
        (HttpMethod::Patch, "PATCH", true),
        (HttpMethod::Delete, "DELETE", true),
        (HttpMethod::Get, "GET", false),
        (HttpMethod::Head, "HEAD", false),
    ];
    for (method, name, with_body) in methods {
        let mut req = with_token(request(rx.url(&format!("/ok?m={name}")), method));
        req.headers
            .insert("X-Signature".into(), b"sha256=0f0e, v=1;  x".to_vec());
        req.headers
            .insert("Content-Type".into(), b"application/json".to_vec());
        if with_body {
            req.body = Some(body.clone());
            req.body_from_secret = true;
        }
        let resp = send(req, &p)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(resp.status, 200, "{name}");
        assert_eq!(resp.redirects, 0);
        let want_body: &[u8] = if method == HttpMethod::Head {
            b""
        } else {
            b"ok"
        };
        assert_eq!(resp.body.as_ref(), want_body, "{name}");
        assert!(!resp.body_truncated);

        let seen = rx.seen().pop().unwrap();
        assert_eq!(seen.method, name);
        assert_eq!(seen.path, "/ok");
        assert_eq!(seen.header("authorization"), Some(TOKEN.as_bytes()));
        assert_eq!(
            seen.header("x-signature"),
            Some(&b"sha256=0f0e, v=1;  x"[..])
        );
        assert_eq!(seen.header("content-type"), Some(&b"application/json"[..]));
        assert_eq!(
            seen.header("host"),
            Some(rx.addr.to_string().as_bytes()),
            "{name}"
        );
        let want: &[u8] = if with_body { &body } else { b"" };
        assert_eq!(seen.body, want, "{name}");
    }
    assert_eq!(rx.seen().len(), methods.len());
}

#[tokio::test]
async fn expected_status_is_honoured() {
    if !in_netns() {
        return;
    }
    let rx = Receiver::start().await;
    let p = policy(&[]);
    let call = |path: &str, expected: &[u16]| {
        let mut req = request(rx.url(path), HttpMethod::Post);
        req.expected_status = expected.to_vec();
        send(req, &p)
    };
    assert_eq!(call("/status/202", &[]).await.unwrap().status, 202);
    assert_eq!(call("/status/204", &[]).await.unwrap().status, 204);
    assert_eq!(call("/status/418", &[418]).await.unwrap().status, 418);
    assert_eq!(call("/status/201", &[200, 201]).await.unwrap().status, 201);

    let err = call("/status/200", &[204]).await.unwrap_err();
    assert_eq!(err.status(), Some(200));
    assert!(err.is_retryable(), "an unexpected 2xx may change: {err}");
    assert!(err.to_string().contains("expected one of 204"), "{err}");

    // A listed redirect status is the answer, not followed.
    let before = rx.seen().len();
    let resp = call(&redirect(302, "/ok"), &[302]).await.unwrap();
    assert_eq!((resp.status, resp.redirects), (302, 0));
    assert_eq!(rx.seen().len(), before + 1);
}

#[tokio::test]
async fn client_errors_are_terminal_server_errors_retryable() {
    if !in_netns() {
        return;
    }
    let rx = Receiver::start().await;
    let p = policy(&[]);
    for code in [400, 401, 403, 404, 409, 422] {
        let err = send(
            request(rx.url(&format!("/status/{code}")), HttpMethod::Post),
            &p,
        )
        .await
        .unwrap_err();
        assert!(err.is_terminal(), "{code}: {err}");
        assert_eq!(err.status(), Some(code));
        let msg = err.to_string();
        assert!(
            msg.contains(&rx.addr.to_string())
                && msg.contains(&format!("status {code}"))
                && msg.contains(&format!("body: \"status {code}\"")),
            "{msg}"
        );
    }
    for code in [408, 429, 500, 502, 503, 504] {
        let err = send(
            request(rx.url(&format!("/status/{code}")), HttpMethod::Post),
            &p,
        )
        .await
        .unwrap_err();
        assert!(err.is_retryable(), "{code}: {err}");
    }

    // A receiver that echoes the request: the error quotes at most 512
    // bytes and none of the secrets.
    let mut req = with_token(request(rx.url("/echo/500"), HttpMethod::Post));
    req.headers
        .insert("X-Api-Key".into(), b"k3y-9b8c7d6e".to_vec());
    req.body = Some(b"secret-body-4711".to_vec());
    req.body_from_secret = true;
    let err = send(req, &p).await.unwrap_err();
    let HttpActionError::Status { body, .. } = &err else {
        panic!("{err}")
    };
    assert!(body.len() <= MAX_ERROR_BODY, "{}", body.len());
    assert!(body.starts_with("you sent:"), "{body}");
    let msg = err.to_string();
    for secret in ["tok-5e1f2a9c8b7d", "k3y-9b8c7d6e", "secret-body-4711"] {
        assert!(!msg.contains(secret), "{msg}");
    }
    assert!(msg.contains("<redacted>"), "{msg}");

    // Nothing listens: a network error, retryable.
    let closed = {
        let l = std::net::TcpListener::bind((NETNS_ADDR, 0)).unwrap();
        l.local_addr().unwrap()
    };
    let err = send(request(format!("http://{closed}/"), HttpMethod::Get), &p)
        .await
        .unwrap_err();
    assert!(
        matches!(err, HttpActionError::Network { .. }) && err.is_retryable(),
        "{err}"
    );
}

#[tokio::test]
async fn same_origin_redirect_chains_are_followed() {
    if !in_netns() {
        return;
    }
    let rx = Receiver::start().await;
    let p = policy(&["a.test"]);
    let base = format!("http://a.test:{}", rx.port());

    // Ten redirects (307, relative): followed, the secret header on every hop.
    let mut req = with_token(request(
        format!("{base}/chain/{MAX_REDIRECTS}"),
        HttpMethod::Post,
    ));
    req.body = Some(b"payload".to_vec());
    let resp = send(req, &p).await.unwrap();
    assert_eq!((resp.status, resp.redirects), (200, MAX_REDIRECTS));
    assert_eq!(resp.body.as_ref(), b"done");
    assert_eq!(resp.url, format!("{base}/chain/0"));
    let seen = rx.seen();
    assert_eq!(seen.len(), MAX_REDIRECTS + 1);
    for s in &seen {
        assert_eq!(s.method, "POST", "307 keeps the method");
        assert_eq!(s.body, b"payload", "307 keeps the body");
        assert_eq!(s.header("authorization"), Some(TOKEN.as_bytes()));
    }

    // Eleven: the eleventh redirect is not followed.
    let before = rx.seen().len();
    let err = send(
        request(
            format!("{base}/chain/{}", MAX_REDIRECTS + 1),
            HttpMethod::Get,
        ),
        &p,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, HttpActionError::TooManyRedirects { .. }) && err.is_retryable(),
        "{err}"
    );
    assert_eq!(rx.seen().len(), before + MAX_REDIRECTS + 1);

    // 303 (and 301/302) turn a POST into a GET without a body; absolute
    // same-origin Location.
    for code in [301, 302, 303] {
        let mut req = with_token(request(
            format!("{base}{}", redirect(code, &format!("{base}/ok"))),
            HttpMethod::Put,
        ));
        req.body = Some(b"payload".to_vec());
        let resp = send(req, &p).await.unwrap();
        assert_eq!((resp.status, resp.redirects), (200, 1), "{code}");
        let last = rx.seen().pop().unwrap();
        assert_eq!((last.method.as_str(), last.path.as_str()), ("GET", "/ok"));
        assert!(last.body.is_empty(), "{code}");
        assert_eq!(last.header("authorization"), Some(TOKEN.as_bytes()));
    }
    // 308 repeats the request as it was.
    let mut req = request(format!("{base}{}", redirect(308, "/ok")), HttpMethod::Patch);
    req.body = Some(b"payload".to_vec());
    send(req, &p).await.unwrap();
    let last = rx.seen().pop().unwrap();
    assert_eq!(
        (last.method.as_str(), last.body.as_slice()),
        ("PATCH", &b"payload"[..])
    );

    // Each hop is re-checked: a chain that ends on a host outside the
    // allow-list stops there.
    let err = send(
        request(
            format!("{base}{}", redirect(302, &rx.url("/ok"))),
            HttpMethod::Get,
        ),
        &p,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(guard_of(&err), GuardError::NotAllowed { host } if host == "192.0.2.10"),
        "{err}"
    );
    assert!(err.is_terminal());
    assert!(
        err.to_string().starts_with("redirect from http://a.test:"),
        "{err}"
    );
}

#[tokio::test]
async fn redirects_to_loopback_are_refused_without_a_connection() {
    if !in_netns() {
        return;
    }
    let rx = Receiver::start().await;
    let trap = Trap::start().await;
    let port = trap.port;
    let targets = [
        format!("http://127.0.0.1:{port}/"),
        format!("http://127.1:{port}/"),
        format!("http://2130706433:{port}/"),
        format!("http://0x7f000001:{port}/"),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
        format!("http://localhost:{port}/"),
        format!("http://loop.test:{port}/"),
    ];
    // Without an allow-list, and with one that lets every host through (so
    // only the dial guard is left to refuse).
    for p in [policy(&[]), policy(&["*"])] {
        for to in &targets {
            let err = send(request(rx.url(&redirect(302, to)), HttpMethod::Get), &p)
                .await
                .unwrap_err();
            let g = guard_of(&err);
            assert!(
                matches!(
                    g,
                    GuardError::ForbiddenAddress { .. } | GuardError::ForbiddenHost { .. }
                ),
                "{to}: {err}"
            );
            assert!(err.is_terminal(), "{to}");
        }
    }
    assert_eq!(rx.seen().len(), 2 * targets.len());
    assert_eq!(
        trap.connections(),
        0,
        "nothing reached the loopback listener"
    );
}

#[tokio::test]
async fn secret_material_never_follows_a_redirect_to_another_origin() {
    if !in_netns() {
        return;
    }
    let rx = Receiver::start().await;
    let other = Receiver::start().await;
    let p = policy(&["*.test", "192.0.2.10"]);

    type AddSecret = fn(HttpActionRequest) -> HttpActionRequest;
    let secret_kinds: [(&str, AddSecret); 3] = [
        ("header", with_token),
        ("secret body", |mut r| {
            r.body = Some(b"from-a-secret".to_vec());
            r.body_from_secret = true;
            r
        }),
        ("URL credentials", |mut r| {
            r.url = r.url.replacen("http://", "http://user:pw@", 1);
            r
        }),
    ];
    let cross = [
        // The same address, another port.
        other.url("/ok"),
        // The same address and port under another name.
        format!("http://b.test:{}/ok", rx.port()),
        // Another scheme.
        format!("https://192.0.2.10:{}/ok", rx.port()),
    ];
    for (kind, make) in secret_kinds {
        for to in &cross {
            let req = make(request(rx.url(&redirect(302, to)), HttpMethod::Post));
            let before = rx.seen().len();
            let err = send(req, &p).await.unwrap_err();
            assert!(
                matches!(err, HttpActionError::SecretRedirect { .. }),
                "{kind} -> {to}: {err}"
            );
            assert!(err.is_terminal());
            assert_eq!(rx.seen().len(), before + 1, "{kind} -> {to}");
        }
    }
    assert_eq!(other.connections(), 0);

    // The same origin, written out in full: followed, secret and all.
    let req = with_token(request(
        rx.url(&redirect(307, &rx.url("/ok"))),
        HttpMethod::Post,
    ));
    assert_eq!(send(req, &p).await.unwrap().redirects, 1);

    // Without secret material a redirect may go to another origin (checked
    // like the first URL); an inline body is not secret.
    let mut req = request(rx.url(&redirect(307, &other.url("/ok"))), HttpMethod::Post);
    req.body = Some(b"inline".to_vec());
    let resp = send(req, &p).await.unwrap();
    assert_eq!((resp.status, resp.redirects), (200, 1));
    let seen = other.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body, b"inline");
    assert_eq!(seen[0].header("authorization"), None);
}

#[tokio::test]
async fn an_allow_list_that_does_not_match_refuses_before_connecting() {
    if !in_netns() {
        return;
    }
    let rx = Receiver::start().await;
    let p = policy(&["*.example.internal", "b.test"]);
    for url in [
        rx.url("/ok"),
        format!("http://a.test:{}/ok", rx.port()),
        format!("http://a.test.:{}/ok", rx.port()),
    ] {
        let err = send(request(&url, HttpMethod::Post), &p).await.unwrap_err();
        assert!(
            matches!(guard_of(&err), GuardError::NotAllowed { .. }),
            "{url}: {err}"
        );
        assert!(err.is_terminal());
    }
    assert_eq!(rx.connections(), 0);

    // The port is not part of the match; a trailing dot is trimmed.
    for url in [
        format!("http://b.test:{}/ok", rx.port()),
        format!("http://b.test.:{}/ok", rx.port()),
    ] {
        assert_eq!(
            send(request(&url, HttpMethod::Get), &p)
                .await
                .unwrap()
                .status,
            200
        );
    }
}

#[tokio::test]
async fn allow_listed_names_that_resolve_to_loopback_are_refused_at_dial_time() {
    if !in_netns() {
        return;
    }
    let trap = Trap::start().await;
    let port = trap.port;
    // The test table: loop.test is 127.0.0.1.
    let p = policy(&["loop.test", "127.0.0.1", "localhost", "*"]);
    for url in [
        format!("http://loop.test:{port}/"),
        format!("http://127.0.0.1:{port}/"),
        format!("http://[::1]:{port}/"),
    ] {
        let err = send(with_token(request(&url, HttpMethod::Post)), &p)
            .await
            .unwrap_err();
        assert!(
            matches!(guard_of(&err), GuardError::ForbiddenAddress { .. }),
            "{url}: {err}"
        );
        assert!(err.is_terminal());
    }
    // The system resolver, as in production: `localhost` is allow-listed, and
    // what it resolves to is still refused.
    let system = ActionPolicy::new(vec!["localhost".into()]);
    let err = send(
        request(format!("http://localhost:{port}/"), HttpMethod::Get),
        &system,
    )
    .await
    .unwrap_err();
    assert!(err.is_terminal(), "{err}");
    assert!(
        matches!(guard_of(&err), GuardError::ForbiddenAddress { .. }),
        "{err}"
    );
    assert_eq!(trap.connections(), 0);
}

#[tokio::test]
async fn oversized_response_bodies_are_capped() {
    if !in_netns() {
        return;
    }
    let rx = Receiver::start().await;
    let p = policy(&[]);
    let resp = send(request(rx.url("/big/200/4194304"), HttpMethod::Get), &p)
        .await
        .unwrap();
    assert_eq!(resp.body.len(), MAX_RESPONSE_BODY);
    assert!(resp.body_truncated);

    let resp = send(
        request(
            rx.url(&format!("/big/200/{MAX_RESPONSE_BODY}")),
            HttpMethod::Get,
        ),
        &p,
    )
    .await
    .unwrap();
    assert_eq!(resp.body.len(), MAX_RESPONSE_BODY);
    assert!(!resp.body_truncated);

    let err = send(request(rx.url("/big/503/4194304"), HttpMethod::Get), &p)
        .await
        .unwrap_err();
    let HttpActionError::Status { body, status, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!((*status, body.len()), (503, MAX_ERROR_BODY));
    assert!(err.is_retryable());
}

// --- http actions of a StageSet, end to end ----------------------------------------

const NS: &str = "shop";

/// A controller on kube-sim (both on 127.0.0.1 inside the namespace) whose
/// http actions may reach 192.0.2.* only, one stage artifact, and the
/// Secrets the actions read.
async fn stageset_harness() -> support::Harness {
    let h = support::Harness::start_with(support::HarnessOptions {
        flags: vec!["--allowed-action-hosts=192.0.2.*".into()],
        ..Default::default()
    })
    .await;
    h.namespace(NS).await;
    let art = h.artifact(
        "app.tar.gz",
        &[("cm.yaml", &support::configmap(NS, "app-config", "r1"))],
    );
    h.external_artifact(NS, "app", &art, "r1").await;
    for secret in [
        serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hook-creds", "namespace": NS},
            "stringData": {"Authorization": TOKEN, "X-Team": "payments"}}),
        serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hook-body", "namespace": NS},
            "stringData": {"body": "{\"release\":\"r1\"}"}}),
    ] {
        h.sim.load(secret).unwrap();
    }
    h
}

/// Everything a tenant can read about a StageSet: its status and events.
async fn visible(h: &support::Harness, name: &str) -> String {
    let ss = h.get_stageset(NS, name).await;
    let events = h.events(NS, name).await;
    format!(
        "{} {}",
        serde_json::to_string(&ss.status).unwrap(),
        serde_json::to_string(&events).unwrap()
    )
}

/// Pre and post http actions reach the receiver with the method, the
/// headers from a Secret and the body from a Secret, in order, and the
/// stage is Ready after them; no Secret value shows in status or events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stage_http_actions_deliver_method_headers_and_body() {
    if !in_netns() {
        return;
    }
    let rx = Receiver::start().await;
    let h = stageset_harness().await;
    h.stageset(
        NS,
        "hooks",
        serde_json::json!({"interval": "1h", "stages": [{"name": "app", "sourceRef": {"name": "app"}, "actions": {
            "pre": [{"name": "announce", "http": {"url": rx.url("/status/202"), "method": "PUT",
                "headersFrom": [{"name": "hook-creds", "key": "Authorization"}, {"name": "hook-creds", "key": "X-Team"}],
                "bodyFrom": {"name": "hook-body", "key": "body"}, "expectedStatus": [202]}}],
            "post": [{"name": "done", "http": {"url": rx.url("/ok"), "body": "deployed"}}]}}]}),
    )
    .await;
    let ss = h
        .wait_stageset(NS, "hooks", "Ready", |ss| {
            support::ready(ss).is_some_and(|(s, r, _)| s == "True" && r == "Succeeded")
        })
        .await;
    assert_eq!(
        ss.status.unwrap().stages[0].executed_actions,
        ["announce", "done"]
    );
    let seen = rx.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("PUT", "/status/202")
    );
    assert_eq!(seen[0].header("authorization"), Some(TOKEN.as_bytes()));
    assert_eq!(seen[0].header("x-team"), Some(&b"payments"[..]));
    assert_eq!(seen[0].body, br#"{"release":"r1"}"#);
    assert_eq!(
        (seen[1].method.as_str(), seen[1].path.as_str()),
        ("POST", "/ok")
    );
    assert_eq!(seen[1].body, b"deployed");
    assert!(seen[1].header("authorization").is_none());
    let text = visible(&h, "hooks").await;
    assert!(!text.contains("tok-5e1f2a9c8b7d"), "{text}");
}

/// A 4xx answer fails the action at once (no retries), a 5xx is retried
/// `retries` times; the failure runs onFailure (an http call too) and never
/// shows the Secret values the request carried, even when the receiver
/// echoes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_http_actions_retry_only_what_may_heal() {
    if !in_netns() {
        return;
    }
    let rx = Receiver::start().await;
    let h = stageset_harness().await;
    h.stageset(
        NS,
        "calls",
        serde_json::json!({"interval": "1h", "stages": [{"name": "app", "sourceRef": {"name": "app"}, "actions": {
            "post": [
                {"name": "flaky", "retries": 2, "http": {"url": rx.url("/status/503"), "method": "GET"}},
            ],
            "onFailure": [{"name": "page", "http": {"url": rx.url("/ok"), "method": "POST"}}]}}]}),
    )
    .await;
    let ss = h
        .wait_ready_reason(
            NS,
            "calls",
            "StageFailed",
            "stage \"app\" post-action: action \"flaky\": ",
        )
        .await;
    let message = support::ready(&ss).unwrap().2;
    assert!(message.contains("503"), "{message}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let seen = rx.seen();
        let flaky = seen.iter().filter(|s| s.path == "/status/503").count();
        let paged = seen.iter().filter(|s| s.path == "/ok").count();
        if flaky >= 3 && paged >= 1 {
            // Three attempts before the first onFailure call.
            let first_page = seen.iter().position(|s| s.path == "/ok").unwrap();
            assert_eq!(seen[..first_page].len(), 3, "{seen:?}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{seen:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // A 4xx with a Secret header echoed back (its own receiver): one
    // attempt per pass, each followed by the onFailure call however many
    // retries are allowed; the value is redacted.
    let rx = Receiver::start().await;
    h.stageset(
        NS,
        "echo",
        serde_json::json!({"interval": "1h", "stages": [{"name": "app", "sourceRef": {"name": "app"}, "actions": {
            "post": [{"name": "echo", "retries": 5, "http": {"url": rx.url("/echo/403"),
                "headersFrom": [{"name": "hook-creds", "key": "Authorization"}]}}],
            "onFailure": [{"name": "page", "http": {"url": rx.url("/ok")}}]}}]}),
    )
    .await;
    let ss = h
        .wait_ready_reason(NS, "echo", "StageFailed", "action \"echo\": ")
        .await;
    let message = support::ready(&ss).unwrap().2;
    assert!(message.contains("403"), "{message}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let calls: Vec<String> = loop {
        let calls: Vec<String> = rx.seen().iter().map(|s| s.path.clone()).collect();
        if calls.len() >= 4 {
            break calls;
        }
        assert!(std::time::Instant::now() < deadline, "{calls:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    for pair in calls.chunks(2).filter(|c| c.len() == 2) {
        assert_eq!(pair, ["/echo/403", "/ok"], "{calls:?}");
    }
    // Without a method, POST.
    let page = rx.seen().into_iter().find(|s| s.path == "/ok").unwrap();
    assert_eq!(page.method, "POST");
    let text = visible(&h, "echo").await;
    assert!(!text.contains("tok-5e1f2a9c8b7d"), "{text}");
}

/// The http shapes users write (corpus files 016, 017, 019, 139, 149):
/// every method, expected statuses, headers, a body from a Secret, a
/// run-once call; each reaches the receiver exactly once, as written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_http_shape_users_write_is_delivered() {
    if !in_netns() {
        return;
    }
    let rx = Receiver::start().await;
    let h = stageset_harness().await;
    h.stageset(
        NS,
        "shapes",
        serde_json::json!({"interval": "1h", "stages": [{"name": "app", "sourceRef": {"name": "app"}, "actions": {
            "pre": [
                {"name": "announce", "http": {"url": rx.url("/ok"), "bodyFrom": {"name": "hook-body", "key": "body"}}},
                {"name": "register", "scope": "Lifetime", "http": {"url": rx.url("/status/200")}}],
            "post": [
                {"name": "smoke", "http": {"url": rx.url("/status/200"), "method": "GET", "expectedStatus": [200],
                    "headersFrom": [{"name": "hook-creds", "key": "X-Team"}]}},
                {"name": "put", "http": {"url": rx.url("/status/201"), "method": "PUT", "expectedStatus": [201]}},
                {"name": "delete", "retries": 0, "http": {"url": rx.url("/status/204"), "method": "DELETE",
                    "expectedStatus": [201, 204]}},
                {"name": "ping", "retries": 2, "http": {"url": rx.url("/status/202"), "expectedStatus": [202]}},
                {"name": "head", "http": {"url": rx.url("/ok"), "method": "HEAD"}},
                {"name": "patch", "http": {"url": rx.url("/status/299"), "method": "PATCH", "expectedStatus": [299]}},
                {"name": "notify", "http": {"url": rx.url("/status/202"), "expectedStatus": [202]}}],
            "onFailure": [{"name": "page", "http": {"url": rx.url("/status/500")}}]}}]}),
    )
    .await;
    let ss = h
        .wait_stageset(NS, "shapes", "Ready", |ss| {
            support::ready(ss).is_some_and(|(s, r, _)| s == "True" && r == "Succeeded")
        })
        .await;
    assert_eq!(
        ss.status.unwrap().stages[0].executed_actions,
        [
            "announce", "smoke", "put", "delete", "ping", "head", "patch", "notify"
        ]
    );
    let seen: Vec<(String, String)> = rx.seen().into_iter().map(|s| (s.method, s.path)).collect();
    let want = [
        ("POST", "/ok"),
        ("POST", "/status/200"),
        ("GET", "/status/200"),
        ("PUT", "/status/201"),
        ("DELETE", "/status/204"),
        ("POST", "/status/202"),
        ("HEAD", "/ok"),
        ("PATCH", "/status/299"),
        ("POST", "/status/202"),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(seen, want, "onFailure never ran");
    let all = rx.seen();
    assert_eq!(all[0].body, br#"{"release":"r1"}"#);
    assert_eq!(all[2].header("x-team"), Some(&b"payments"[..]));
    let done = h
        .get_opt("stages.metio.wtf/v1", "StageLedger", Some(NS), "shapes")
        .await
        .expect("the StageLedger exists");
    let text = serde_json::to_string(&done).unwrap();
    assert!(text.contains("\"register\""), "{text}");
}

/// The guard cannot be talked past from a StageSet: loopback in any
/// spelling and hosts outside `--allowed-action-hosts` fail the stage
/// before any connection, without retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stage_http_actions_to_forbidden_hosts_never_connect() {
    if !in_netns() {
        return;
    }
    let trap = Trap::start().await;
    let h = stageset_harness().await;
    for (n, url) in [
        format!("http://127.0.0.1:{}/", trap.port),
        format!("http://0x7f000001:{}/", trap.port),
        format!("http://[::ffff:127.0.0.1]:{}/", trap.port),
        format!("http://localhost:{}/", trap.port),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://hooks.example.com/".to_string(),
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("refused-{n}");
        h.stageset(
            NS,
            &name,
            serde_json::json!({"interval": "1h", "stages": [{"name": "app", "sourceRef": {"name": "app"}, "actions": {
                "pre": [{"name": "call", "retries": 3, "http": {"url": url}}]}}]}),
        )
        .await;
        let ss = h
            .wait_ready_reason(
                NS,
                &name,
                "StageFailed",
                "stage \"app\" pre-action: action \"call\": ",
            )
            .await;
        let message = support::ready(&ss).unwrap().2;
        assert!(
            message.contains("refused")
                || message.contains("not allowed")
                || message.contains("not in"),
            "{url}: {message}"
        );
    }
    assert_eq!(trap.connections(), 0);
    assert!(
        h.get_opt("v1", "ConfigMap", Some(NS), "app-config")
            .await
            .is_none(),
        "nothing was applied"
    );
}

// --- error budgets on a real Prometheus --------------------------------------------

/// Serves `slo_budget_remaining <value>` in the Prometheus text format.
/// `(path, Authorization, Accept)` of one request to the exporter.
type ExporterRequest = (String, Option<String>, Option<String>);

struct Exporter {
    addr: SocketAddr,
    value: Arc<Mutex<f64>>,
    seen: Arc<Mutex<Vec<ExporterRequest>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the exporter answers: the gauge in Prometheus' text format on any
/// path, or, on `/budget.json`, an SLO service's JSON with two objectives
/// (`latency` always 0.9, `availability` the value, as a string).
fn exporter_body(path: &str, v: f64) -> (&'static str, String) {
    if path == "/budget.json" {
        let doc = serde_json::json!({"service": "checkout", "objectives": [
            {"name": "latency", "errorBudgetRemaining": 0.9},
            {"name": "availability", "errorBudgetRemaining": v.to_string()}]});
        ("application/json", doc.to_string())
    } else {
        (
            "text/plain; version=0.0.4",
            format!("# TYPE slo_budget_remaining gauge\nslo_budget_remaining {v}\n"),
        )
    }
}

impl Exporter {
    async fn start(value: f64) -> Exporter {
        let listener = TcpListener::bind((NETNS_ADDR, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let value = Arc::new(Mutex::new(value));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (shared, log) = (value.clone(), seen.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (shared, log) = (shared.clone(), log.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let v = *shared.lock().unwrap();
                        let header = |name: &str| {
                            req.headers()
                                .get(name)
                                .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
                        };
                        let path = req.uri().path().to_string();
                        log.lock().unwrap().push((
                            path.clone(),
                            header("authorization"),
                            header("accept"),
                        ));
                        let (content_type, body) = exporter_body(&path, v);
                        async move {
                            Ok::<_, Infallible>(
                                Response::builder()
                                    .header("content-type", content_type)
                                    .body(Full::new(Bytes::from(body)))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Exporter {
            addr,
            value,
            seen,
            task,
        }
    }

    fn set(&self, v: f64) {
        *self.value.lock().unwrap() = v;
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn seen(&self, path: &str) -> Vec<(Option<String>, Option<String>)> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _, _)| p == path)
            .map(|(_, auth, accept)| (auth.clone(), accept.clone()))
            .collect()
    }
}

/// A real Prometheus (Debian's `prometheus`, tests/support/prometheus.rs)
/// scraping `target` every second, listening on the namespace's address;
/// None (the test skips) when it is not installed.
fn start_prometheus(target: SocketAddr) -> Option<support::prometheus::Prometheus> {
    support::prometheus::available("outbound_net")
        .then(|| support::prometheus::Prometheus::start(NETNS_ADDR.into(), target, "slo"))
}

/// Waits until Prometheus answers `want` for the exporter's gauge (it has
/// scraped the new value).
async fn wait_for(prometheus: &support::prometheus::Prometheus, want: f64) {
    prometheus
        .wait_for_data(&format!("slo_budget_remaining == {want}"))
        .await;
}

async fn publish_app(h: &support::Harness, revision: &str) {
    let art = h.artifact(
        &format!("app-{revision}.tar.gz"),
        &[("cm.yaml", &support::configmap(NS, "app-config", revision))],
    );
    h.external_artifact(NS, "app", &art, revision).await;
}

async fn app_value(h: &support::Harness) -> Option<String> {
    let cms: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(h.client.clone(), NS);
    cms.get_opt("app-config")
        .await
        .unwrap()?
        .data?
        .get("value")
        .cloned()
}

async fn request_pass(h: &support::Harness, name: &str, annotations: serde_json::Value) {
    kube::Api::<stageset_controller::api::StageSet>::namespaced(h.client.clone(), NS)
        .patch(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"metadata": {"annotations": annotations}})),
        )
        .await
        .unwrap();
}

/// The rollout-wide error budget against a real Prometheus: a new revision
/// is held below the freeze threshold, stays held between the freeze and
/// resume thresholds (hysteresis), goes out above resume; with the source
/// down and `onSourceError: Hold` it is held again until a budget-override
/// token lets one pass through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_budgets_freeze_and_resume_on_real_prometheus_data() {
    if !in_netns() {
        return;
    }
    let exporter = Exporter::start(0.5).await;
    let Some(prometheus) = start_prometheus(exporter.addr) else {
        return;
    };
    wait_for(&prometheus, 0.5).await;
    let h = stageset_harness().await;
    h.stageset(
        NS,
        "budgeted",
        serde_json::json!({"interval": "1h", "errorBudget": {
                "source": {"prometheus": {"address": prometheus.url, "query": "slo_budget_remaining"}},
                "freezeThreshold": "0.1", "resumeThreshold": "0.2", "onSourceError": "Hold"},
            "stages": [{"name": "app", "sourceRef": {"name": "app"}}]}),
    )
    .await;
    let ok = |ss: &stageset_controller::api::StageSet| {
        support::ready(ss)
            .is_some_and(|(s, r, m)| s == "True" && r == "Succeeded" && !m.starts_with("Deployed;"))
    };
    h.wait_stageset(NS, "budgeted", "Ready", ok).await;
    assert_eq!(app_value(&h).await.as_deref(), Some("r1"));
    // The budget burns: r2 is held.
    exporter.set(0.05);
    wait_for(&prometheus, 0.05).await;
    publish_app(&h, "r2").await;
    let ss = h
        .wait_ready_reason(
            NS,
            "budgeted",
            "Succeeded",
            // "below 0.1" on the pass that freezes, "below 0.2" (resume) on any
            // pass after it: either may be the one the test sees.
            "Deployed; delivery held: the error budget is exhausted (remaining 0.05 below 0.",
        )
        .await;
    let freeze = ss
        .status
        .unwrap()
        .budget_freeze
        .expect("budgetFreeze is recorded");
    assert_eq!(freeze.remaining.as_deref(), Some("0.05"));
    assert_eq!(app_value(&h).await.as_deref(), Some("r1"));
    // Between the thresholds: still frozen.
    exporter.set(0.15);
    wait_for(&prometheus, 0.15).await;
    request_pass(
        &h,
        "budgeted",
        serde_json::json!({"reconcile.fluxcd.io/requestedAt": "t1"}),
    )
    .await;
    h.wait_ready_reason(
        NS,
        "budgeted",
        "Succeeded",
        "Deployed; delivery held: the error budget is exhausted (remaining 0.15 below 0.2)",
    )
    .await;
    assert_eq!(app_value(&h).await.as_deref(), Some("r1"));
    // Above resume: r2 goes out, the freeze is cleared.
    exporter.set(0.25);
    wait_for(&prometheus, 0.25).await;
    request_pass(
        &h,
        "budgeted",
        serde_json::json!({"reconcile.fluxcd.io/requestedAt": "t2"}),
    )
    .await;
    let ss = h
        .wait_stageset(NS, "budgeted", "r2 delivered", |ss| {
            ok(ss)
                && ss
                    .status
                    .as_ref()
                    .is_some_and(|s| s.last_applied_revisions.values().any(|r| r == "r2"))
        })
        .await;
    assert!(ss.status.unwrap().budget_freeze.is_none());
    assert_eq!(app_value(&h).await.as_deref(), Some("r2"));
    // The source goes away: r3 is held (onSourceError: Hold).
    drop(prometheus);
    publish_app(&h, "r3").await;
    h.wait_ready_reason(
        NS,
        "budgeted",
        "Succeeded",
        "Deployed; delivery held: the error budget source is unavailable: prometheus http://192.0.2.10",
    )
    .await;
    assert_eq!(app_value(&h).await.as_deref(), Some("r2"));
    // A budget-override token lets one pass through.
    request_pass(
        &h,
        "budgeted",
        serde_json::json!({"stages.metio.wtf/budget-override": "incident-7", "reconcile.fluxcd.io/requestedAt": "t3"}),
    )
    .await;
    h.wait_stageset(NS, "budgeted", "r3 delivered", |ss| {
        ss.status
            .as_ref()
            .is_some_and(|s| s.last_applied_revisions.values().any(|r| r == "r3"))
    })
    .await;
    assert_eq!(app_value(&h).await.as_deref(), Some("r3"));
}

/// A stage's own error budget holds that stage (earlier stages go out,
/// later ones wait) until the budget recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_budget_holds_the_rollout_at_that_stage() {
    if !in_netns() {
        return;
    }
    let exporter = Exporter::start(0.05).await;
    let Some(prometheus) = start_prometheus(exporter.addr) else {
        return;
    };
    wait_for(&prometheus, 0.05).await;
    let h = stageset_harness().await;
    let art = h.artifact(
        "prod.tar.gz",
        &[("cm.yaml", &support::configmap(NS, "prod-config", "p1"))],
    );
    h.external_artifact(NS, "prod", &art, "p1").await;
    h.stageset(
        NS,
        "staged",
        serde_json::json!({"interval": "1h", "stages": [
            {"name": "canary", "sourceRef": {"name": "app"}},
            {"name": "prod", "sourceRef": {"name": "prod"}, "errorBudget": {
                "source": {"prometheus": {"address": prometheus.url, "query": "slo_budget_remaining"}},
                "freezeThreshold": "0.1"}}]}),
    )
    .await;
    h.wait_ready_reason(
        NS,
        "staged",
        "BudgetExhausted",
        // (below the freeze threshold, or the resume one on a later pass)
        "stage \"prod\" held at revision none: the error budget is exhausted (remaining 0.05 below 0.",
    )
    .await;
    assert_eq!(
        app_value(&h).await.as_deref(),
        Some("r1"),
        "canary went out"
    );
    let cms: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(h.client.clone(), NS);
    assert!(cms.get_opt("prod-config").await.unwrap().is_none());
    exporter.set(0.5);
    wait_for(&prometheus, 0.5).await;
    request_pass(
        &h,
        "staged",
        serde_json::json!({"reconcile.fluxcd.io/requestedAt": "t1"}),
    )
    .await;
    h.wait_stageset(NS, "staged", "Ready", |ss| {
        support::ready(ss).is_some_and(|(s, r, _)| s == "True" && r == "Succeeded")
    })
    .await;
    assert!(cms.get_opt("prod-config").await.unwrap().is_some());
}

/// A JSON webhook metric source (an SLO service's API, read through a
/// kubectl JSONPath filter) as a stage's error budget: the stage is held
/// below the freeze threshold and between the thresholds, goes out above
/// resume; the token from the Secret is sent as a bearer token with
/// `Accept: application/json` and never shows in status or events; a path
/// that selects two values makes the source unavailable, which holds the
/// next revision (`onSourceError: Hold`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_webhook_budget_freezes_and_resumes_a_stage() {
    if !in_netns() {
        return;
    }
    let exporter = Exporter::start(0.05).await;
    let h = stageset_harness().await;
    h.sim
        .load(serde_json::json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "slo-token", "namespace": NS},
            "stringData": {"token": "slo-api-token-123"}}))
        .unwrap();
    let prod = |revision: &str| {
        h.artifact(
            &format!("prod-{revision}.tar.gz"),
            &[("cm.yaml", &support::configmap(NS, "prod-config", revision))],
        )
    };
    h.external_artifact(NS, "prod", &prod("p1"), "p1").await;
    let spec = |json_path: &str| {
        serde_json::json!({"interval": "1h", "stages": [
            {"name": "canary", "sourceRef": {"name": "app"}},
            {"name": "prod", "sourceRef": {"name": "prod"}, "errorBudget": {
                "source": {"webhook": {"url": exporter.url("/budget.json"), "jsonPath": json_path,
                    "secretRef": {"name": "slo-token"}}},
                "freezeThreshold": "0.1", "resumeThreshold": "0.2", "onSourceError": "Hold"}}]})
    };
    let availability = "{.objectives[?(@.name=='availability')].errorBudgetRemaining}";
    h.stageset(NS, "slo", spec(availability)).await;
    h.wait_ready_reason(
        NS,
        "slo",
        "BudgetExhausted",
        // (below the freeze threshold, or the resume one on a later pass)
        "stage \"prod\" held at revision none: the error budget is exhausted (remaining 0.05 below 0.",
    )
    .await;
    let cms: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(h.client.clone(), NS);
    assert!(cms.get_opt("prod-config").await.unwrap().is_none());
    let seen = exporter.seen("/budget.json");
    assert!(!seen.is_empty());
    for (auth, accept) in &seen {
        assert_eq!(auth.as_deref(), Some("Bearer slo-api-token-123"));
        assert_eq!(accept.as_deref(), Some("application/json"));
    }
    // Between the thresholds: still held (hysteresis).
    exporter.set(0.15);
    request_pass(
        &h,
        "slo",
        serde_json::json!({"reconcile.fluxcd.io/requestedAt": "t1"}),
    )
    .await;
    h.wait_ready_reason(
        NS,
        "slo",
        "BudgetExhausted",
        "stage \"prod\" held at revision none: the error budget is exhausted (remaining 0.15 below 0.2)",
    )
    .await;
    assert!(cms.get_opt("prod-config").await.unwrap().is_none());
    // Above resume: prod goes out.
    exporter.set(0.5);
    request_pass(
        &h,
        "slo",
        serde_json::json!({"reconcile.fluxcd.io/requestedAt": "t2"}),
    )
    .await;
    h.wait_stageset(NS, "slo", "Ready", |ss| {
        support::ready(ss).is_some_and(|(s, r, _)| s == "True" && r == "Succeeded")
    })
    .await;
    assert!(cms.get_opt("prod-config").await.unwrap().is_some());
    // A path that selects both objectives: the source is unavailable and
    // the next prod revision is held.
    h.stageset(NS, "slo", spec("{.objectives[*].errorBudgetRemaining}"))
        .await;
    h.external_artifact(NS, "prod", &prod("p2"), "p2").await;
    let want = format!(
        "the error budget source is unavailable: webhook {}: jsonPath {{.objectives[*].errorBudgetRemaining}} matches 2 values, not exactly one",
        exporter.url("/budget.json")
    );
    h.wait_stageset(NS, "slo", "the source error", |ss| {
        support::ready(ss).is_some_and(|(_, _, m)| m.contains(&want))
    })
    .await;
    let value = cms.get("prod-config").await.unwrap().data.unwrap()["value"].clone();
    assert_eq!(value, "p1");
    assert!(!visible(&h, "slo").await.contains("slo-api-token-123"));
}

/// A stage budget in dry run never holds: the stage goes out, and the
/// freeze it would have made is recorded on the stage's status with a
/// Normal `BudgetExhausted` event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_stage_budget_records_the_freeze_and_delivers() {
    if !in_netns() {
        return;
    }
    let exporter = Exporter::start(0.05).await;
    let h = stageset_harness().await;
    h.stageset(
        NS,
        "dry",
        serde_json::json!({"interval": "1h", "stages": [{"name": "app", "sourceRef": {"name": "app"},
            "errorBudget": {"dryRun": true, "freezeThreshold": "0.1", "source": {"webhook": {
                "url": exporter.url("/budget.json"),
                "jsonPath": "{.objectives[?(@.name=='availability')].errorBudgetRemaining}"}}}}]}),
    )
    .await;
    let ss = h
        .wait_stageset(NS, "dry", "Ready", |ss| {
            support::ready(ss).is_some_and(|(s, r, _)| s == "True" && r == "Succeeded")
        })
        .await;
    assert_eq!(app_value(&h).await.as_deref(), Some("r1"));
    let freeze = ss.status.unwrap().stages[0]
        .budget_freeze
        .clone()
        .expect("the dry run's freeze is recorded on the stage");
    assert_eq!(freeze.dry_run, Some(true));
    assert_eq!(freeze.remaining.as_deref(), Some("0.05"));
    assert_eq!(freeze.freeze_threshold.as_deref(), Some("0.1"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let events = h.events(NS, "dry").await;
        if events.iter().any(|e| {
            e.type_.as_deref() == Some("Normal")
                && e.reason.as_deref() == Some("BudgetExhausted")
                && e.message
                    .as_deref()
                    .is_some_and(|m| m.contains("stage \"app\": dry run"))
        }) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{events:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A Version-scoped http post action is sent once per version (not for
/// the baseline), a Lifetime one with a completion anchor once ever; a new
/// revision sends neither again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_and_lifetime_scoped_http_actions_run_once() {
    if !in_netns() {
        return;
    }
    let receiver = Receiver::start().await;
    let h = stageset_harness().await;
    h.sim
        .load(serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "db", "namespace": NS}, "data": {}}))
        .unwrap();
    let spec = |version: &str| {
        serde_json::json!({"interval": "1h", "version": {"value": version},
            "stages": [{"name": "app", "sourceRef": {"name": "app"}, "actions": {"post": [
                {"name": "announce", "scope": "Version", "http": {"url": receiver.url("/ok?announce")}},
                {"name": "provision", "scope": "Lifetime", "http": {"url": receiver.url("/ok?provision")},
                    "completionAnchor": {"apiVersion": "v1", "kind": "ConfigMap", "name": "db"}}]}}]})
    };
    let at = |version: &'static str, revision: &'static str| {
        move |ss: &stageset_controller::api::StageSet| {
            let status = ss.status.as_ref();
            support::ready(ss).is_some_and(|(s, r, _)| s == "True" && r == "Succeeded")
                && status.and_then(|s| s.version.as_deref()) == Some(version)
                && status.and_then(|s| s.last_applied_revisions.get("shop/app").map(String::as_str))
                    == Some(revision)
        }
    };
    let sent = |receiver: &Receiver| receiver.seen().len();
    h.stageset(NS, "scoped", spec("1.0.0")).await;
    h.wait_stageset(NS, "scoped", "the baseline", at("1.0.0", "r1"))
        .await;
    assert_eq!(
        sent(&receiver),
        1,
        "only the Lifetime action on the baseline"
    );
    h.stageset(NS, "scoped", spec("1.1.0")).await;
    h.wait_stageset(NS, "scoped", "the upgrade", at("1.1.0", "r1"))
        .await;
    assert_eq!(sent(&receiver), 2, "the Version-scoped action for 1.1.0");
    publish_app(&h, "r2").await;
    h.wait_stageset(NS, "scoped", "r2", at("1.1.0", "r2")).await;
    assert_eq!(sent(&receiver), 2, "nothing again for a new revision");
}

/// Promotion analysis and the fast track on a real Prometheus: failing
/// evaluations within the failure limit keep analyzing, beyond it block;
/// a passing evaluation promotes; a metric under the fast track's maximum
/// skips the rest of a soak.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analysis_and_fast_track_on_real_prometheus_data() {
    if !in_netns() {
        return;
    }
    let exporter = Exporter::start(0.05).await;
    let Some(prometheus) = start_prometheus(exporter.addr) else {
        return;
    };
    wait_for(&prometheus, 0.05).await;
    let h = stageset_harness().await;
    let art = h.artifact(
        "prod.tar.gz",
        &[("cm.yaml", &support::configmap(NS, "prod-config", "p1"))],
    );
    h.external_artifact(NS, "prod", &art, "p1").await;
    let source = serde_json::json!({"prometheus": {"address": prometheus.url, "query": "slo_budget_remaining"}});
    h.stageset(
        NS,
        "analysed",
        serde_json::json!({"interval": "1h", "stages": [
            {"name": "canary", "sourceRef": {"name": "app"}, "promotion": {"analysis": {
                "failureLimit": 1, "checks": [{"name": "budget", "source": source, "threshold": {"min": "0.2"}}]}}},
            {"name": "prod", "sourceRef": {"name": "prod"}}]}),
    )
    .await;
    // The first failing evaluation keeps analyzing; any later pass (a
    // requeue may come before the test looks) blocks.
    let analyzing = "stage \"canary\" is analyzing at revision r1: 1 failing evaluation(s) (check \"budget\" = 0.05 outside its threshold)";
    let ss = h
        .wait_stageset(NS, "analysed", "the first failing evaluation", |ss| {
            support::ready(ss).is_some_and(|(_, r, m)| {
                (r == "Soaking" && m.contains(analyzing)) || r == "PromotionBlocked"
            })
        })
        .await;
    if support::ready(&ss).is_some_and(|(_, r, _)| r == "Soaking") {
        request_pass(
            &h,
            "analysed",
            serde_json::json!({"reconcile.fluxcd.io/requestedAt": "t1"}),
        )
        .await;
    }
    let ss = h
        .wait_ready_reason(
            NS,
            "analysed",
            "PromotionBlocked",
            "time(s) in a row (failureLimit 1) (check \"budget\" = 0.05 outside its threshold); not rolled back (onFailure: Hold)",
        )
        .await;
    let state = ss.status.unwrap().stages[0]
        .promotion_state
        .clone()
        .unwrap();
    assert!(state.analysis_failures.is_some_and(|n| n >= 2), "{state:?}");
    assert_eq!(state.last_analysis.unwrap().passed, Some(false));
    let cms: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(h.client.clone(), NS);
    assert!(cms.get_opt("prod-config").await.unwrap().is_none());
    // The metric recovers: the next evaluation passes and promotes.
    exporter.set(0.5);
    wait_for(&prometheus, 0.5).await;
    request_pass(
        &h,
        "analysed",
        serde_json::json!({"reconcile.fluxcd.io/requestedAt": "t2"}),
    )
    .await;
    h.wait_stageset(NS, "analysed", "Ready", |ss| {
        support::ready(ss).is_some_and(|(s, r, _)| s == "True" && r == "Succeeded")
    })
    .await;
    assert!(cms.get_opt("prod-config").await.unwrap().is_some());
    // A 30-minute soak, fast-tracked at once because the metric (0.5) is
    // under the maximum (objects of their own).
    for (name, object) in [("canary2", "canary2-config"), ("prod2", "prod2-config")] {
        let art = h.artifact(
            &format!("{name}.tar.gz"),
            &[("cm.yaml", &support::configmap(NS, object, "v1"))],
        );
        h.external_artifact(NS, name, &art, "v1").await;
    }
    h.stageset(
        NS,
        "tracked",
        serde_json::json!({"interval": "1h", "stages": [
            {"name": "canary", "sourceRef": {"name": "canary2"}, "promotion": {"soak": "30m",
                "fastTrack": {"max": "1", "source": source}}},
            {"name": "prod", "sourceRef": {"name": "prod2"}}]}),
    )
    .await;
    h.wait_stageset(NS, "tracked", "Ready", |ss| {
        support::ready(ss).is_some_and(|(s, r, _)| s == "True" && r == "Succeeded")
    })
    .await;
    assert!(cms.get_opt("prod2-config").await.unwrap().is_some());
}

// --- the bundled alerts on series scraped from a run ----------------------------

/// One sample of a Prometheus text exposition: metric name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// The samples of a text exposition (comments skipped).
fn exposition(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample line");
        let value: f64 = value.parse().unwrap_or(f64::NAN);
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("labels end with }");
                let mut labels = BTreeMap::new();
                let mut chars = body.chars().peekable();
                loop {
                    let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
                    if key.is_empty() {
                        break;
                    }
                    assert_eq!(chars.next(), Some('"'), "{line}");
                    let mut value = String::new();
                    while let Some(c) = chars.next() {
                        match c {
                            '\\' => match chars.next() {
                                Some('n') => value.push('\n'),
                                Some(other) => value.push(other),
                                None => break,
                            },
                            '"' => break,
                            c => value.push(c),
                        }
                    }
                    labels.insert(key.trim_start_matches(',').to_string(), value);
                    if chars.peek() == Some(&',') {
                        chars.next();
                    }
                }
                (name.to_string(), labels)
            }
        };
        out.push((name, labels, value));
    }
    out
}

/// A series as promtool's `input_series` writes it.
fn series_name(name: &str, labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return name.to_string();
    }
    let inner: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("{name}{{{}}}", inner.join(","))
}

/// The bundled PrometheusRule's groups, rendered by the real Helm engine
/// (tests/helm/driver.py, through a scratch kube-sim as tests/helm.rs does).
fn bundled_rule_groups(dir: &std::path::Path) -> Option<serde_json::Value> {
    if std::process::Command::new("python3")
        .args(["-c", "import helm_sdkpy"])
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        assert!(
            std::env::var("STAGESET_REQUIRE_TOOLS").as_deref() != Ok("1"),
            "STAGESET_REQUIRE_TOOLS=1, but helm-sdkpy is not installed"
        );
        eprintln!("skipped: helm-sdkpy is not installed");
        return None;
    }
    let crds = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/helm/crds");
    let sim = kube_sim::KubeSim::start(kube_sim::Options {
        load: kube_sim::read_manifests(std::path::Path::new(crds)).expect("test CRDs"),
        ..kube_sim::Options::default()
    })
    .expect("kube-sim starts");
    let kubeconfig = dir.join("scratch.kubeconfig");
    sim.write_kubeconfig(&kubeconfig).unwrap();
    let out = std::process::Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/helm/driver.py"))
        .args([
            "template",
            concat!(env!("CARGO_MANIFEST_DIR"), "/charts/stageset-controller"),
        ])
        .args(["--namespace", "flux-system", "--kubeconfig"])
        .arg(&kubeconfig)
        .args(["--set-json", "metrics.prometheusRule.enabled=true"])
        .env_remove("KUBECONFIG")
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let objects: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let rule = objects
        .into_iter()
        .find(|o| o["kind"] == "PrometheusRule")
        .expect("a PrometheusRule");
    Some(rule["spec"]["groups"].clone())
}

/// `{{ $labels.x }}` (and `| toLower`) of an annotation expanded for an
/// alert with `labels`; a label the alert lacks is a failure.
fn expand_annotation(template: &str, labels: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find("}}").expect("}}") + start;
        let expr = rest[start + 2..end].trim();
        let (label, lower) = match expr.split_once('|') {
            Some((l, f)) => (l.trim(), f.trim() == "toLower"),
            None => (expr, false),
        };
        let key = label
            .strip_prefix("$labels.")
            .unwrap_or_else(|| panic!("{template:?}: unexpected {{{{ {expr} }}}}"));
        let v = labels
            .get(key)
            .unwrap_or_else(|| panic!("{template:?} uses $labels.{key}, which the alert lacks"));
        out.push_str(&if lower { v.to_lowercase() } else { v.clone() });
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    out
}

/// A stage source of its own for each StageSet (`<name>-config`).
async fn own_source(h: &support::Harness, name: &str) {
    let art = h.artifact(
        &format!("{name}.tar.gz"),
        &[(
            "cm.yaml",
            &support::configmap(NS, &format!("{name}-config"), "r1"),
        )],
    );
    h.external_artifact(NS, name, &art, "r1").await;
}

/// Every bundled alert on this controller's own metrics fires, and stays
/// silent, on series whose names and labels come from a real scrape of a
/// run that produced each of them: a failing StageSet, budgets frozen
/// rollout-wide and for a stage (a JSON webhook source), an unreadable
/// source, a blocked and a pending promotion, the work queue and reconcile
/// histogram, the certificate-renewal counter. The values over time are
/// written around the scraped ones (one scrape is one instant), and the
/// expected alert labels and annotations follow from the scraped labels, so
/// an annotation naming a label the metric does not carry fails. Two
/// identities are not from the run: the kube-state-metrics series of
/// StageSetControllerPodDown, and the `gvk` of
/// `stageset_watch_engagement_failures_total`, which only a watch the API
/// server refuses produces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundled_alerts_fire_on_series_scraped_from_a_run() {
    if !in_netns() {
        return;
    }
    let promtool = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("promtool"))
            .find(|f| f.is_file())
    });
    let Some(promtool) = promtool else {
        assert!(
            std::env::var("STAGESET_REQUIRE_TOOLS").as_deref() != Ok("1"),
            "STAGESET_REQUIRE_TOOLS=1, but promtool is not installed"
        );
        eprintln!("skipped: promtool is not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let Some(groups) = bundled_rule_groups(dir.path()) else {
        return;
    };

    // The run.
    let exporter = Exporter::start(0.05).await;
    let h = support::Harness::start_with(support::HarnessOptions {
        flags: vec!["--allowed-action-hosts=192.0.2.*".into()],
        listeners: true,
        ..Default::default()
    })
    .await;
    h.namespace(NS).await;
    for name in [
        "web",
        "broken",
        "frozen",
        "staged",
        "unreadable",
        "blocked",
        "manual",
    ] {
        own_source(&h, name).await;
    }
    let webhook = |json_path: &str| serde_json::json!({"webhook": {"url": exporter.url("/budget.json"), "jsonPath": json_path}});
    let availability = "{.objectives[?(@.name=='availability')].errorBudgetRemaining}";
    let stage = |name: &str| serde_json::json!({"name": "app", "sourceRef": {"name": name}});
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(h.client.clone(), NS);
    h.sim
        .load(serde_json::json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "api-1", "namespace": NS, "labels": {"app": "api"}},
            "spec": {"containers": [{"name": "api", "image": "api:1"}]}}))
        .unwrap();
    let uid = pods.get("api-1").await.unwrap().metadata.uid.unwrap();
    h.sim
        .load(serde_json::json!({"apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "oom-1", "namespace": NS},
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": "api-1", "namespace": NS, "uid": uid},
            "reason": "OOMKilling", "message": "m", "type": "Warning", "count": 1,
            "source": {"component": "kubelet"}}))
        .unwrap();
    let specs = [
        ("web", serde_json::json!({"stages": [stage("web")]})),
        (
            "broken",
            serde_json::json!({"serviceAccountName": "ghost", "stages": [stage("broken")]}),
        ),
        (
            "frozen",
            serde_json::json!({"errorBudget": {"source": webhook(availability), "freezeThreshold": "0.1"},
                "stages": [stage("frozen")]}),
        ),
        (
            "staged",
            serde_json::json!({"stages": [{"name": "prod", "sourceRef": {"name": "staged"},
                "errorBudget": {"source": webhook(availability), "freezeThreshold": "0.1"}}]}),
        ),
        (
            "unreadable",
            serde_json::json!({"errorBudget": {"source": webhook("{.nope}"), "freezeThreshold": "0.1"},
                "stages": [stage("unreadable")]}),
        ),
        (
            "blocked",
            serde_json::json!({"stages": [{"name": "canary", "sourceRef": {"name": "blocked"},
                "promotion": {"eventGate": {"checks": [{"name": "api",
                    "selector": {"matchLabels": {"app": "api"}}, "reasons": ["OOMKilling"]}]}}}]}),
        ),
        (
            "manual",
            serde_json::json!({"stages": [{"name": "canary", "sourceRef": {"name": "manual"},
                "promotion": {"requireManualPromotion": true}}]}),
        ),
    ];
    for (name, spec) in specs {
        let mut spec = spec;
        spec["interval"] = serde_json::json!("1h");
        h.stageset(NS, name, spec).await;
    }
    let addr = h
        .controller
        .as_ref()
        .unwrap()
        .bound()
        .metrics
        .expect("the metrics listener");
    let find = |samples: &[Sample], name: &str, with: &[(&str, &str)]| -> Option<Sample> {
        samples
            .iter()
            .find(|(n, l, _)| {
                n == name
                    && with
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .cloned()
    };
    // (family, labels to match, the value the run must reach)
    type Wanted<'a> = (&'a str, Vec<(&'a str, &'a str)>, f64);
    let wanted: Vec<Wanted> = vec![
        (
            "stageset_reconcile_total",
            vec![("name", "broken"), ("reason", "StageFailed")],
            1.0,
        ),
        (
            "stageset_reconcile_total",
            vec![("name", "web"), ("reason", "Succeeded")],
            1.0,
        ),
        ("stageset_budget_frozen", vec![("name", "frozen")], 1.0),
        (
            "stageset_stage_budget_frozen",
            vec![("stageset", "staged"), ("stage", "prod")],
            1.0,
        ),
        (
            "stageset_metric_source_errors_total",
            vec![("name", "unreadable")],
            1.0,
        ),
        (
            "stageset_stage_promotion_blocked",
            vec![("stageset", "blocked"), ("stage", "canary")],
            1.0,
        ),
        (
            "stageset_stage_promotion_pending",
            vec![("stageset", "manual"), ("stage", "canary")],
            1.0,
        ),
        // Blocked is still "applied, not promoted" (operations.md §7.1 #11).
        (
            "stageset_stage_promotion_pending",
            vec![("stageset", "blocked"), ("stage", "canary")],
            1.0,
        ),
        ("workqueue_depth", vec![("controller", "stageset")], 0.0),
        ("stageset_webhook_cert_renewal_failures_total", vec![], 0.0),
        (
            "controller_runtime_reconcile_time_seconds_bucket",
            vec![("controller", "stageset"), ("le", "+Inf")],
            1.0,
        ),
    ];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    let samples = loop {
        let text = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let samples = exposition(&text);
        let missing: Vec<String> = wanted
            .iter()
            .filter(|(n, with, at_least)| {
                find(&samples, n, with).is_none_or(|(_, _, v)| v < *at_least)
            })
            .map(|(n, with, _)| format!("{n}{with:?}"))
            .collect();
        if missing.is_empty() {
            break samples;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the run never produced {missing:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let real = |name: &str, with: &[(&str, &str)]| find(&samples, name, with).unwrap().1;

    // The alerts, their firing and quiet series.
    let rules: BTreeMap<String, serde_json::Value> = groups
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().clone())
        .map(|r| (r["alert"].as_str().unwrap().to_string(), r))
        .collect();
    let keep = |labels: &BTreeMap<String, String>, keys: &[&str]| -> BTreeMap<String, String> {
        labels
            .iter()
            .filter(|(k, _)| keys.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    // (alert, firing series, quiet series, minute to evaluate, the alert's labels)
    type In = Vec<(String, String)>;
    type Case<'a> = (&'a str, In, In, u32, BTreeMap<String, String>);
    let mut cases: Vec<Case> = Vec::new();
    let failing = real(
        "stageset_reconcile_total",
        &[("name", "broken"), ("reason", "StageFailed")],
    );
    let succeeding = real(
        "stageset_reconcile_total",
        &[("name", "web"), ("reason", "Succeeded")],
    );
    cases.push((
        "StageSetReconcileErrorsHigh",
        vec![(
            series_name("stageset_reconcile_total", &failing),
            "0+60x40".into(),
        )],
        vec![(
            series_name("stageset_reconcile_total", &succeeding),
            "0+60x40".into(),
        )],
        20,
        keep(&failing, &["namespace", "name", "reason"]),
    ));
    let depth = real("workqueue_depth", &[("controller", "stageset")]);
    cases.push((
        "StageSetControllerWorkqueueDepthHigh",
        vec![(series_name("workqueue_depth", &depth), "100x40".into())],
        vec![(series_name("workqueue_depth", &depth), "3x40".into())],
        20,
        depth.clone(),
    ));
    // Every scraped bucket: slow reconciles (50 to 60 s each) fire,
    // fast ones (everything in the first bucket) do not.
    let buckets: Vec<BTreeMap<String, String>> = samples
        .iter()
        .filter(|(n, l, _)| {
            n == "controller_runtime_reconcile_time_seconds_bucket"
                && l.get("controller").map(String::as_str) == Some("stageset")
        })
        .map(|(_, l, _)| l.clone())
        .collect();
    assert!(buckets.len() > 10, "{buckets:?}");
    let slow = buckets
        .iter()
        .map(|l| {
            let le = l["le"].parse::<f64>().unwrap_or(f64::INFINITY);
            let v = if le < 60.0 { "0x40" } else { "0+60x40" };
            (
                series_name("controller_runtime_reconcile_time_seconds_bucket", l),
                v.to_string(),
            )
        })
        .collect();
    let fast = buckets
        .iter()
        .map(|l| {
            (
                series_name("controller_runtime_reconcile_time_seconds_bucket", l),
                "0+60x40".to_string(),
            )
        })
        .collect();
    cases.push((
        "StageSetReconcileLatencyHigh",
        slow,
        fast,
        30,
        keep(&buckets[0], &["controller"]),
    ));
    let renewals = real("stageset_webhook_cert_renewal_failures_total", &[]);
    let renewal_series = series_name("stageset_webhook_cert_renewal_failures_total", &renewals);
    cases.push((
        "StageSetWebhookCertRenewalFailing",
        vec![(renewal_series.clone(), "0+1x60".into())],
        vec![(renewal_series, "1x60".into())],
        45,
        renewals,
    ));
    let gvk: BTreeMap<String, String> = [(
        "gvk".to_string(),
        "source.toolkit.fluxcd.io/v1, Kind=Bucket".to_string(),
    )]
    .into();
    let engagement = series_name("stageset_watch_engagement_failures_total", &gvk);
    cases.push((
        "StageSetWatchEngagementFailing",
        vec![(engagement.clone(), "0+1x60".into())],
        vec![(engagement, "2x60".into())],
        45,
        gvk,
    ));
    for (alert, family, with) in [
        (
            "StageSetBudgetFrozen",
            "stageset_budget_frozen",
            vec![("name", "frozen")],
        ),
        (
            "StageSetStageBudgetFrozen",
            "stageset_stage_budget_frozen",
            vec![("stageset", "staged"), ("stage", "prod")],
        ),
        (
            "StageSetPromotionBlocked",
            "stageset_stage_promotion_blocked",
            vec![("stageset", "blocked"), ("stage", "canary")],
        ),
    ] {
        let labels = real(family, &with);
        let s = series_name(family, &labels);
        cases.push((
            alert,
            vec![(s.clone(), "1x30".into())],
            vec![(s, "0x30".into())],
            20,
            labels,
        ));
    }
    let pending = real(
        "stageset_stage_promotion_pending",
        &[("stageset", "manual")],
    );
    let s = series_name("stageset_stage_promotion_pending", &pending);
    cases.push((
        "StageSetPromotionStuck",
        vec![(s.clone(), "1x90".into())],
        vec![(s, "1x30 0x60".into())],
        75,
        pending,
    ));
    let errors = real(
        "stageset_metric_source_errors_total",
        &[("name", "unreadable")],
    );
    let s = series_name("stageset_metric_source_errors_total", &errors);
    cases.push((
        "StageSetMetricSourceUnavailable",
        vec![(s.clone(), "0+1x60".into())],
        vec![(s, "0+1x2 2x58".into())],
        30,
        errors,
    ));
    // kube-state-metrics' series, for the one alert that is not on ours.
    let instance = rules["StageSetControllerPodDown"]["expr"]
        .as_str()
        .unwrap()
        .split("label_app_kubernetes_io_instance=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("the PodDown rule names the release")
        .to_string();
    let pod_labels = format!(
        "kube_pod_labels{{namespace=\"flux-system\",pod=\"sc-0\",label_app_kubernetes_io_name=\"stageset-controller\",label_app_kubernetes_io_instance=\"{instance}\",label_app_kubernetes_io_component=\"controller\"}}"
    );
    let ready = r#"kube_pod_status_ready{namespace="flux-system",pod="sc-0",condition="true"}"#;
    cases.push((
        "StageSetControllerPodDown",
        vec![
            (ready.into(), "0x20".into()),
            (pod_labels.clone(), "1x20".into()),
        ],
        vec![(ready.into(), "1x20".into()), (pod_labels, "1x20".into())],
        10,
        [
            ("namespace", "flux-system"),
            ("pod", "sc-0"),
            ("condition", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
    ));
    let covered: std::collections::BTreeSet<&str> = cases.iter().map(|c| c.0).collect();
    assert_eq!(
        covered,
        rules.keys().map(String::as_str).collect(),
        "every bundled alert has a case"
    );

    let mut tests = Vec::new();
    for (alert, firing, quiet, minute, labels) in &cases {
        let rule = &rules[*alert];
        let mut labels = labels.clone();
        for (k, v) in rule["labels"].as_object().into_iter().flatten() {
            labels.insert(k.clone(), v.as_str().unwrap().to_string());
        }
        let annotations: BTreeMap<String, String> = rule["annotations"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), expand_annotation(v.as_str().unwrap(), &labels)))
            .collect();
        let input = |s: &In| -> Vec<serde_json::Value> {
            s.iter()
                .map(|(n, v)| serde_json::json!({"series": n, "values": v}))
                .collect()
        };
        tests.push(
            serde_json::json!({"interval": "1m", "input_series": input(firing),
            "alert_rule_test": [{"eval_time": format!("{minute}m"), "alertname": alert,
                "exp_alerts": [{"exp_labels": labels, "exp_annotations": annotations}]}]}),
        );
        tests.push(serde_json::json!({"interval": "1m", "input_series": input(quiet),
            "alert_rule_test": [{"eval_time": format!("{minute}m"), "alertname": alert, "exp_alerts": []}]}));
    }
    std::fs::write(
        dir.path().join("rules.yaml"),
        serde_json::to_string(&serde_json::json!({"groups": groups})).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("alerts_test.yaml"),
        serde_json::to_string(&serde_json::json!({"rule_files": ["rules.yaml"],
            "evaluation_interval": "1m", "tests": tests}))
        .unwrap(),
    )
    .unwrap();
    let out = std::process::Command::new(promtool)
        .current_dir(dir.path())
        .args(["test", "rules", "alerts_test.yaml"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool test rules failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// FleetRollout wave gates (delivery.md §5.7 step 5) read a real Prometheus
/// through the outbound guard with the controller's identity: a settled
/// canary wave whose gate value is outside the threshold halts the rollout
/// (health Failing, the next wave not approved); once the value recovers the
/// gate passes and the next wave opens; with Prometheus gone the gate is
/// Unknown and the wave holds without halting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_wave_gates_read_a_real_prometheus() {
    use stageset_controller::api::{FleetPhase, WaveHealth};
    use support::fleet::*;
    if !in_netns() {
        return;
    }
    let exporter = Exporter::start(0.05).await;
    let Some(prometheus) = start_prometheus(exporter.addr) else {
        return;
    };
    wait_for(&prometheus, 0.05).await;
    let h = support::Harness::start_with(support::HarnessOptions {
        flags: vec!["--allowed-action-hosts=192.0.2.*".into()],
        ..Default::default()
    })
    .await;
    for ns in ["team-a", "team-b"] {
        team(&h, ns, serde_json::json!({})).await;
    }
    member(&h, "team-a", "web", "canary", "1.1.0").await;
    member(&h, "team-b", "web", "early", "1.0.0").await;
    for ns in ["team-a", "team-b"] {
        h.wait_stageset(ns, "web", "baseline", |ss| {
            support::ready(ss).is_some_and(|(s, _, _)| s == "True")
        })
        .await;
    }
    fleet(
        &h,
        "gated",
        serde_json::json!({"targetVersion": "1.1.0", "selector": {"matchLabels": {"app": "shop"}},
            "waves": [
                {"name": "canary", "selector": {"matchLabels": {"wave": "canary"}},
                 "gate": {"source": {"prometheus": {"address": prometheus.url, "query": "slo_budget_remaining"}},
                          "threshold": {"min": "0.2"}}},
                {"name": "early", "selector": {"matchLabels": {"wave": "early"}}}]}),
    )
    .await;
    let f = wait_fleet_reason(
        &h,
        "gated",
        "Halted",
        "wave \"canary\" gate failed: value 0.05 is outside the threshold (min 0.2)",
    )
    .await;
    let st = f.status.unwrap();
    assert_eq!(st.phase, Some(FleetPhase::Halted));
    assert_eq!(st.waves[0].health, Some(WaveHealth::Failing));
    assert_eq!(annotation(&h, "team-b", "web", APPROVED).await, None);
    wait_fleet_events(&h, "gated", |events| {
        events
            .iter()
            .any(|(t, r, m)| t == "Warning" && r == "Halted" && m.contains("gate failed"))
    })
    .await;
    // Recovered: the gate passes and the early wave is approved.
    exporter.set(0.5);
    wait_for(&prometheus, 0.5).await;
    poke(&h, "gated", "recovered").await;
    let f = wait_fleet_reason(&h, "gated", "Progressing", "wave \"early\"").await;
    assert_eq!(f.status.unwrap().waves[0].health, Some(WaveHealth::Passing));
    assert_eq!(
        annotation(&h, "team-b", "web", APPROVED).await.as_deref(),
        Some("1.1.0")
    );
    // The source goes away: the canary's gate is Unknown, the rollout holds
    // at the canary without halting.
    drop(prometheus);
    poke(&h, "gated", "source-gone").await;
    let f = wait_fleet_reason(
        &h,
        "gated",
        "Progressing",
        "wave \"canary\" gate cannot be read: prometheus http://192.0.2.10",
    )
    .await;
    let st = f.status.unwrap();
    assert_eq!(st.waves[0].health, Some(WaveHealth::Unknown));
    assert_eq!(st.current_wave.as_deref(), Some("canary"));
}
