//! The http-action policy without a network: every case here is decided
//! before a connection is opened (tests/outbound_net.rs has the ones that
//! need a receiver).

use std::collections::BTreeMap;
use std::io;
use std::net::IpAddr;
use std::sync::Arc;

use reqwest::dns::Resolve;

use super::*;
use crate::reconcile::outbound::guard::{GuardedResolver, LookupFuture};

/// Names resolved from a fixed table; anything else does not exist.
#[derive(Debug, Default)]
struct FixedLookup(BTreeMap<String, Vec<IpAddr>>);

impl FixedLookup {
    fn with(pairs: &[(&str, &[&str])]) -> Arc<FixedLookup> {
        Arc::new(FixedLookup(
            pairs
                .iter()
                .map(|(n, ips)| {
                    (
                        n.to_string(),
                        ips.iter().map(|i| i.parse().unwrap()).collect(),
                    )
                })
                .collect(),
        ))
    }
}

impl HostLookup for FixedLookup {
    fn lookup(&self, host: &str) -> LookupFuture {
        let found = self.0.get(host).cloned();
        Box::pin(async move {
            found.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such host"))
        })
    }
}

fn policy(globs: &[&str]) -> ActionPolicy {
    ActionPolicy::new(globs.iter().map(|g| g.to_string()).collect())
}

fn refused_address(r: Result<Url, GuardError>) -> bool {
    matches!(r, Err(GuardError::ForbiddenAddress { .. }))
}

/// Every literal spelling of a forbidden address, including the inet_aton
/// forms, the IPv4-mapped IPv6 form and the metadata endpoints.
const FORBIDDEN_LITERALS: &[&str] = &[
    "http://127.0.0.1/",
    "http://127.1/",
    "http://0x7f000001/",
    "http://2130706433/",
    "http://0177.0.0.1/",
    "http://017700000001/",
    "http://0x7f.1/",
    "http://127.0.0.1.:8080/",
    "http://[::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:7f00:1]/",
    "http://169.254.169.254/latest/meta-data/",
    "http://0xA9FEA9FE/",
    "http://169.254.1.1/",
    "http://[fe80::1]/",
    "http://[febf::1]/",
    "http://224.0.0.1/",
    "http://[ff02::1]/",
    "http://0.0.0.0/",
    "http://0/",
    "http://[::]/",
    "http://100.100.100.200/",
    "http://0x646464c8/",
    "http://1684301000/",
    "http://[::ffff:100.100.100.200]/",
    "http://[64:ff9b::100.100.100.200]/",
    "http://[fd00:ec2::254]/",
    "https://[fd00:ec2:0:0:0:0:0:254]:443/",
];

#[test]
fn forbidden_literals_are_refused_with_and_without_an_allow_list() {
    let open = policy(&[]);
    let all = policy(&["*"]);
    for url in FORBIDDEN_LITERALS {
        assert!(
            refused_address(open.check_url(url)),
            "{url} (no allow-list)"
        );
        assert!(refused_address(all.check_url(url)), "{url} (allow-list *)");
        // Allow-listing the address itself does not help either.
        let parsed = Url::parse(url).unwrap();
        let name = host_name(&parsed.host().unwrap());
        let exact = policy(&[name.as_str()]);
        assert!(
            refused_address(exact.check_url(url)),
            "{url} (allow-list {name})"
        );
    }
}

#[test]
fn metadata_endpoints_are_refused_at_dial_time_too() {
    let rules = AddressRules::ACTIONS;
    for ip in [
        "100.100.100.200",
        "fd00:ec2::254",
        "::ffff:100.100.100.200",
        "169.254.169.254",
        "127.0.0.1",
        "::1",
        "fe80::1",
        "ff02::1",
        "224.0.0.251",
        "0.0.0.0",
        "::",
    ] {
        let ip: IpAddr = ip.parse().unwrap();
        assert!(rules.forbidden_reason(ip).is_some(), "{ip}");
    }
    assert_eq!(
        rules.forbidden_reason("100.100.100.200".parse().unwrap()),
        Some("cloud metadata endpoint")
    );
    assert!(!rules.allows_loopback());
}

#[test]
fn private_ranges_stay_allowed() {
    let open = policy(&[]);
    for url in [
        "http://10.0.0.1/",
        "http://172.16.0.1/",
        "http://192.168.1.1/",
        "http://100.64.0.1/",
        "http://100.100.100.199/",
        "http://100.100.100.201/",
        "http://100.127.255.254/",
        "http://[fc00::1]/",
        "http://[fd00::1]/",
        "http://[fd00:ec2::253]/",
        "http://[fd00:ec2::1:254]/",
        "https://hooks.team-a.svc.cluster.local./x",
        "https://example.com/x",
    ] {
        assert!(open.check_url(url).is_ok(), "{url}");
    }
    let rules = AddressRules::ACTIONS;
    for ip in [
        "100.64.0.1",
        "100.100.100.201",
        "fd00::1",
        "fc00::1",
        "10.0.0.1",
    ] {
        assert_eq!(rules.forbidden_reason(ip.parse().unwrap()), None, "{ip}");
    }
}

#[test]
fn localhost_names() {
    let open = policy(&[]);
    for url in [
        "http://localhost/",
        "http://LOCALHOST:8080/",
        "http://localhost./",
        "http://api.localhost/",
    ] {
        assert!(
            matches!(open.check_url(url), Err(GuardError::ForbiddenHost { .. })),
            "{url}"
        );
    }
    // With an allow-list that lists it, the string check is skipped; the
    // resolver refuses what localhost resolves to (next test).
    assert!(
        policy(&["localhost"])
            .check_url("http://localhost/")
            .is_ok()
    );
    assert!(matches!(
        policy(&["*.example.com"]).check_url("http://localhost/"),
        Err(GuardError::NotAllowed { .. })
    ));
}

#[tokio::test]
async fn the_dial_guard_refuses_loopback_for_allow_listed_names() {
    let r = GuardedResolver::system(AddressRules::ACTIONS);
    let err = match r.resolve("localhost".parse().unwrap()).await {
        Ok(_) => panic!("localhost must be refused"),
        Err(e) => e,
    };
    let g = guard_error_of(err.as_ref()).expect("a guard error");
    assert!(matches!(g, GuardError::ForbiddenAddress { .. }), "{g}");

    let lookup = FixedLookup::with(&[
        ("meta.test", &["100.100.100.200"]),
        ("mixed.test", &["10.0.0.7", "127.0.0.1"]),
        ("imds6.test", &["fd00:ec2::254"]),
        ("fine.test", &["10.0.0.7", "fd00::7"]),
    ]);
    let r = GuardedResolver::new(AddressRules::ACTIONS, lookup);
    for name in ["meta.test", "mixed.test", "imds6.test"] {
        let err = match r.resolve(name.parse().unwrap()).await {
            Ok(_) => panic!("{name} must be refused"),
            Err(e) => e,
        };
        assert!(guard_error_of(err.as_ref()).is_some(), "{name}: {err}");
    }
    let addrs: Vec<_> = match r.resolve("fine.test".parse().unwrap()).await {
        Ok(a) => a.collect(),
        Err(e) => panic!("{e}"),
    };
    assert_eq!(addrs.len(), 2);
}

#[test]
fn allow_list_globs() {
    let p = policy(&[
        "*.svc.cluster.local",
        "hook?.example.com",
        "[a-c]x.example.org",
        "[^0-9]y.example.org",
        "\\*.literal.test",
        "192.0.2.*",
    ]);
    for url in [
        "http://hooks.team-a.svc.cluster.local/",
        "http://hooks.team-a.svc.cluster.local./",
        "http://a.svc.cluster.local:8443/x",
        "https://hook1.example.com/",
        "https://HOOK2.Example.COM/",
        "http://bx.example.org/",
        "http://zy.example.org/",
        "http://192.0.2.10:8080/",
    ] {
        assert!(p.check_url(url).is_ok(), "{url}");
    }
    for url in [
        "http://svc.cluster.local/",
        "http://a.svc.cluster.local.evil.example/",
        "https://hook12.example.com/",
        "https://hook.example.com/",
        "http://dx.example.org/",
        "http://5y.example.org/",
        "http://a.literal.test/",
        "http://192.0.3.10/",
        "http://10.0.0.1/",
        "http://[fd00::1]/",
    ] {
        assert!(
            matches!(p.check_url(url), Err(GuardError::NotAllowed { .. })),
            "{url}"
        );
    }
    // `*` stops at nothing in a host name (no `/` in one).
    assert!(policy(&["*.example.com"]).host_allowed("a.b.example.com"));
    assert!(policy(&["*"]).host_allowed("anything.example"));
    // Escaped `*` is a literal star (the url crate refuses it in a URL host,
    // so it can only be tested on the name).
    assert!(p.host_allowed("*.literal.test"));
    // A malformed glob (refused at start-up) matches nothing.
    assert!(!policy(&["[a-"]).host_allowed("a"));
    // Case-sensitive, as Go: URL hosts are lowercased by the parser, so
    // upper-case globs never match.
    assert!(
        policy(&["*.Example.com"])
            .check_url("http://a.Example.com/")
            .is_err()
    );
    // The message names the host without its port.
    let e = p.check_url("http://other.example:8080/").unwrap_err();
    assert_eq!(
        e.to_string(),
        "host \"other.example\" is not in --allowed-action-hosts"
    );
}

#[test]
fn schemes_and_hosts() {
    let p = policy(&[]);
    for url in [
        "ftp://example.com/",
        "file:///etc/passwd",
        "unix:/run/x.sock",
    ] {
        assert!(
            matches!(p.check_url(url), Err(GuardError::InvalidScheme { .. })),
            "{url}"
        );
    }
    assert!(matches!(
        p.check_url("http://"),
        Err(GuardError::MissingHost { .. })
    ));
    assert!(matches!(
        p.check_url("not a url"),
        Err(GuardError::InvalidUrl { .. })
    ));
}

fn status(code: u16) -> HttpActionError {
    HttpActionError::Status {
        method: "POST",
        host: "hooks.example.com".into(),
        status: code,
        expected: "2xx".into(),
        body: String::new(),
    }
}

#[test]
fn classification() {
    for code in [400, 401, 403, 404, 405, 409, 410, 415, 422, 451, 499] {
        assert!(status(code).is_terminal(), "{code}");
    }
    for code in [408, 429, 500, 502, 503, 504, 599, 200, 204, 302, 304, 100] {
        assert!(status(code).is_retryable(), "{code}");
    }
    let guard = HttpActionError::Guard {
        guard: GuardError::NotAllowed { host: "x".into() },
        redirected_from: None,
    };
    assert!(guard.is_terminal());
    assert!(
        HttpActionError::SecretRedirect {
            from: "http://a".into(),
            to: "http://b".into()
        }
        .is_terminal()
    );
    assert!(HttpActionError::InvalidRequest("x".into()).is_terminal());
    assert!(
        HttpActionError::Network {
            method: "GET",
            host: "x".into(),
            message: "connection refused".into(),
            timeout: false
        }
        .is_retryable()
    );
    assert!(HttpActionError::TooManyRedirects { host: "x".into() }.is_retryable());
    assert_eq!(status(503).status(), Some(503));
    assert_eq!(guard.status(), None);
}

fn secret_request() -> HttpActionRequest {
    let mut req = HttpActionRequest::new("https://hooks.example.com/deploy", HttpMethod::Post);
    req.headers
        .insert("Authorization".into(), b"Bearer tok-3f9a8b7c6d5e".to_vec());
    req.headers
        .insert("X-Api-Key".into(), b"k3y-material".to_vec());
    req.body = Some(b"{\"password\":\"hunter22\"}".to_vec());
    req.body_from_secret = true;
    req
}

#[test]
fn error_bodies_are_capped_and_redacted() {
    let req = secret_request();
    let secrets = secret_values(&req);
    let echo = b"denied: Authorization=Bearer tok-3f9a8b7c6d5e; token tok-3f9a8b7c6d5e; key k3y-material; body {\"password\":\"hunter22\"}";
    let text = error_body(echo, &secrets);
    for secret in ["tok-3f9a8b7c6d5e", "k3y-material", "hunter22"] {
        assert!(!text.contains(secret), "{text}");
    }
    assert!(
        text.starts_with("denied: Authorization=<redacted>;"),
        "{text}"
    );

    // 512 bytes at most, never half a UTF-8 sequence.
    let long = "é".repeat(1000);
    let text = error_body(long.as_bytes(), &[]);
    assert!(text.len() <= MAX_ERROR_BODY && text.len() >= MAX_ERROR_BODY - 1);
    assert!(!text.contains('\u{fffd}'), "{text}");
    let text = error_body(&[b'x'; 4096], &[]);
    assert_eq!(text.len(), MAX_ERROR_BODY);

    // A secret straddling the 512-byte mark is blanked out before the cut.
    let mut body = vec![b'.'; MAX_ERROR_BODY - 4];
    body.extend_from_slice(b"k3y-material");
    let text = error_body(&body, &secrets);
    assert!(!text.contains("k3y-"), "{text}");

    // Short values are not searched for (they would blank out words).
    let mut req = HttpActionRequest::new("http://h/", HttpMethod::Get);
    req.headers.insert("X-Flag".into(), b"on".to_vec());
    assert!(secret_values(&req).is_empty());

    // The message: method, host, status, expected, quoted body.
    let e = HttpActionError::Status {
        method: "POST",
        host: "hooks.example.com:8443".into(),
        status: 403,
        expected: expected_text(&[200, 204]),
        body: "no\nway".into(),
    };
    assert_eq!(
        e.to_string(),
        "POST hooks.example.com:8443: status 403, expected one of 200, 204; body: \"no\\nway\""
    );
    assert_eq!(
        status(500).to_string(),
        "POST hooks.example.com: status 500, expected 2xx"
    );
}

#[test]
fn debug_output_hides_secrets() {
    let mut req = secret_request();
    req.url = "https://user:pa55word@hooks.example.com/deploy".into();
    let text = format!("{req:?}");
    for secret in ["tok-3f9a8b7c6d5e", "k3y-material", "hunter22", "pa55word"] {
        assert!(!text.contains(secret), "{text}");
    }
    assert!(
        text.contains("Authorization") && text.contains("X-Api-Key"),
        "{text}"
    );
    assert!(req.carries_secrets());
    let mut plain = HttpActionRequest::new("http://h/", HttpMethod::Post);
    plain.body = Some(b"inline".to_vec());
    assert!(!plain.carries_secrets());
}

#[test]
fn headers_are_validated_without_echoing_values() {
    let cases: &[(&str, &[u8], &str)] = &[
        (
            "X-Token",
            b"s3cret-value\n",
            "not a valid HTTP header value",
        ),
        ("Bad Name", b"s3cret-value", "not a valid HTTP header name"),
        ("Host", b"s3cret-value", "may not set it"),
        ("content-length", b"s3cret-value", "may not set it"),
        ("Transfer-Encoding", b"s3cret-value", "may not set it"),
    ];
    for (name, value, why) in cases {
        let mut headers = BTreeMap::new();
        headers.insert(name.to_string(), value.to_vec());
        let err = header_map(&headers).unwrap_err();
        assert!(err.is_terminal());
        let text = err.to_string();
        assert!(text.contains(why) && text.contains(name), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
    }
    let mut headers = BTreeMap::new();
    headers.insert("X-Token".to_string(), b"a".to_vec());
    headers.insert("x-token".to_string(), b"b".to_vec());
    assert!(
        header_map(&headers)
            .unwrap_err()
            .to_string()
            .contains("twice")
    );

    let mut headers = BTreeMap::new();
    headers.insert("Authorization".to_string(), b"Bearer x".to_vec());
    let map = header_map(&headers).unwrap();
    assert!(map["authorization"].is_sensitive());
}

#[tokio::test]
async fn send_refuses_before_connecting() {
    // Every URL here is refused by the guard, so nothing is dialled.
    let lookup = FixedLookup::with(&[
        ("meta.test", &["169.254.169.254"]),
        ("loop.test", &["127.0.0.1", "::1"]),
    ]);
    let p = ActionPolicy::with_lookup(vec!["*.test".into(), "127.0.0.1".into()], lookup);
    for url in [
        "http://127.0.0.1:1/",
        "http://example.com/",
        "http://meta.test/latest/meta-data/",
        "http://loop.test:8080/",
    ] {
        // A name that resolves is refused by the resolver, before a dial.
        if !url.contains(".test") {
            assert!(p.check_url(url).is_err(), "{url} must not be sent");
        }
        let err = send(HttpActionRequest::new(url, HttpMethod::Get), &p)
            .await
            .unwrap_err();
        assert!(err.guard_error().is_some(), "{url}: {err}");
        assert!(err.is_terminal(), "{url}");
    }
    let open = ActionPolicy::new(Vec::new());
    for url in FORBIDDEN_LITERALS.iter().chain(&["http://localhost:1/"]) {
        // Never send a URL the URL check lets through (no traffic leaves).
        assert!(open.check_url(url).is_err(), "{url} must not be sent");
        let err = send(HttpActionRequest::new(*url, HttpMethod::Post), &open)
            .await
            .unwrap_err();
        assert!(
            err.guard_error().is_some() && err.is_terminal(),
            "{url}: {err}"
        );
    }
    // An unusable header is refused before the URL is even looked at.
    let mut req = HttpActionRequest::new("http://127.0.0.1:1/", HttpMethod::Get);
    req.headers
        .insert("X-Token".into(), b"v\r\nInjected: 1".to_vec());
    let err = send(req, &open).await.unwrap_err();
    assert!(matches!(err, HttpActionError::InvalidRequest(_)), "{err}");
}
