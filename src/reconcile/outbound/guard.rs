//! The shared guard: which addresses are forbidden, the URL checks, the
//! resolver that pins every dial to a checked address, and the client
//! builder. Artifact fetches and http actions both build on these; see the
//! module docs of [`super`] for how.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

/// Redirect hops followed before giving up.
pub const MAX_REDIRECTS: usize = 10;

/// Why an outbound URL or address was refused. All variants are permanent:
/// retrying the same URL cannot succeed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    /// The URL could not be parsed.
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// Only `http` and `https` are allowed.
    #[error("URL {url:?}: scheme {scheme:?} is not allowed (only http and https)")]
    InvalidScheme { url: String, scheme: String },
    /// The URL has no (or an empty) host.
    #[error("URL {url:?} has no host")]
    MissingHost { url: String },
    /// The host name itself is refused (`localhost`, `*.localhost`).
    #[error("URL {url:?}: host {host:?} is forbidden ({reason})")]
    ForbiddenHost {
        url: String,
        host: String,
        reason: &'static str,
    },
    /// The host is, or resolves to, a forbidden address.
    #[error("host {host:?}: address {addr} is forbidden ({reason})")]
    ForbiddenAddress {
        host: String,
        addr: IpAddr,
        reason: &'static str,
    },
    /// `--allowed-action-hosts` is set and no glob matches the host
    /// (http actions only).
    #[error("host {host:?} is not in --allowed-action-hosts")]
    NotAllowed { host: String },
}

/// Which addresses a guarded client refuses, literal or resolved.
///
/// Always refused: loopback, link-local (incl. 169.254.169.254), multicast,
/// unspecified, and the never-a-server addresses listed at
/// [`is_forbidden_ip`]. The two constructors differ only in the two knobs
/// below; private ranges are allowed by both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddressRules {
    /// Relax 127.0.0.0/8 and ::1 (the hidden `--allow-loopback-artifacts`).
    allow_loopback: bool,
    /// Also refuse the cloud metadata endpoints that are not link-local:
    /// 100.100.100.200 (Alibaba Cloud) and fd00:ec2::254 (AWS IMDS over
    /// IPv6). Both sit in ranges that are otherwise allowed (CGNAT, ULA).
    metadata: bool,
}

impl AddressRules {
    /// Artifact fetches (delivery.md §2.2): the spec's deny-list;
    /// `allow_loopback` is the hidden `--allow-loopback-artifacts` flag
    /// (docs/decisions.md 13).
    pub const fn artifacts(allow_loopback: bool) -> AddressRules {
        AddressRules {
            allow_loopback,
            metadata: false,
        }
    }

    /// Calls to tenant-chosen endpoints (http actions): the spec's
    /// deny-list plus the metadata endpoints above. Nothing relaxes it: the
    /// loopback flag is for artifacts only (docs/decisions.md 16).
    pub const ACTIONS: AddressRules = AddressRules {
        allow_loopback: false,
        metadata: true,
    };

    /// Why `ip` is refused, or `None` when it may be dialled.
    pub fn forbidden_reason(self, ip: IpAddr) -> Option<&'static str> {
        match ip {
            IpAddr::V4(v4) => forbidden_v4(v4, self),
            IpAddr::V6(v6) => forbidden_v6(v6, self),
        }
    }

    /// Whether loopback is relaxed (only ever for artifact fetches).
    pub fn allows_loopback(self) -> bool {
        self.allow_loopback
    }
}

/// Alibaba Cloud's metadata service (inside CGNAT 100.64.0.0/10).
const ALIBABA_METADATA: Ipv4Addr = Ipv4Addr::new(100, 100, 100, 200);
/// AWS's instance metadata service over IPv6 (inside ULA fc00::/7).
const AWS_METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);

/// Whether the controller must not connect to `ip`.
///
/// Forbidden: loopback (127.0.0.0/8, ::1), link-local (169.254.0.0/16 incl.
/// 169.254.169.254, fe80::/10), multicast (224.0.0.0/4, ff00::/8), unspecified
/// (0.0.0.0, ::), and the IPv4-mapped (`::ffff:a.b.c.d`) forms of those.
/// Besides the spec's list, a few addresses that are never a legitimate
/// server are refused as well: the rest of 0.0.0.0/8 ("this network", which
/// Linux routes to the local host), the limited broadcast 255.255.255.255,
/// deprecated IPv4-compatible IPv6 (`::a.b.c.d`) and NAT64 (64:ff9b::/96)
/// addresses embedding a forbidden IPv4 address.
///
/// Private ranges (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7) are
/// allowed. `allow_loopback` relaxes 127.0.0.0/8 and ::1 (also when
/// IPv4-mapped) and nothing else.
///
/// These are the artifact fetcher's rules ([`AddressRules::artifacts`]);
/// http actions use [`AddressRules::ACTIONS`].
pub fn is_forbidden_ip(ip: IpAddr, allow_loopback: bool) -> bool {
    forbidden_reason(ip, allow_loopback).is_some()
}

/// Like [`is_forbidden_ip`], naming the class of the forbidden address.
pub fn forbidden_reason(ip: IpAddr, allow_loopback: bool) -> Option<&'static str> {
    AddressRules::artifacts(allow_loopback).forbidden_reason(ip)
}

fn forbidden_v4(ip: Ipv4Addr, rules: AddressRules) -> Option<&'static str> {
    let o = ip.octets();
    if ip.is_unspecified() {
        Some("unspecified")
    } else if o[0] == 0 {
        Some("this-network 0.0.0.0/8")
    } else if ip.is_loopback() {
        (!rules.allow_loopback).then_some("loopback")
    } else if rules.metadata && ip == ALIBABA_METADATA {
        Some("cloud metadata endpoint")
    } else if ip == Ipv4Addr::new(169, 254, 169, 254) {
        Some("link-local, cloud metadata endpoint")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if ip.is_broadcast() {
        Some("broadcast")
    } else {
        None
    }
}

fn forbidden_v6(ip: Ipv6Addr, rules: AddressRules) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return forbidden_v4(v4, rules);
    }
    let seg = ip.segments();
    if ip.is_unspecified() {
        Some("unspecified")
    } else if ip.is_loopback() {
        (!rules.allow_loopback).then_some("loopback")
    } else if rules.metadata && ip == AWS_METADATA_V6 {
        Some("cloud metadata endpoint")
    } else if seg[0] & 0xffc0 == 0xfe80 {
        Some("link-local")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if seg[..6] == [0; 6] {
        // ::a.b.c.d (deprecated IPv4-compatible); :: and ::1 handled above.
        Some("IPv4-compatible IPv6")
    } else if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [a, b, c, d] = ip.octets()[12..] else {
            unreachable!()
        };
        forbidden_v4(Ipv4Addr::new(a, b, c, d), rules)
            .map(|_| "NAT64 form of a forbidden IPv4 address")
    } else {
        None
    }
}

/// Whether a host name is `localhost` or a `*.localhost` name (RFC 6761),
/// ignoring case and one trailing dot.
pub fn is_localhost_name(host: &str) -> bool {
    let h = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    h == "localhost" || h.ends_with(".localhost")
}

/// The URL for messages: userinfo (credentials) removed.
pub fn display_url(url: &Url) -> String {
    if url.username().is_empty() && url.password().is_none() {
        return url.to_string();
    }
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.to_string()
}

/// A raw (possibly unparsable) URL string for messages: bounded length.
fn display_raw(url: &str) -> String {
    const MAX: usize = 256;
    if url.len() <= MAX {
        return url.to_string();
    }
    let mut end = MAX;
    while !url.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &url[..end])
}

/// Validates an outbound URL (see the module docs) and returns it parsed.
///
/// Host names other than `localhost` are not resolved here; that happens at
/// dial time in [`GuardedResolver`]. These are the artifact fetcher's rules.
pub fn check_url(url: &str, allow_loopback: bool) -> Result<Url, GuardError> {
    let parsed = parse_url(url)?;
    check_parsed(&parsed, allow_loopback)?;
    Ok(parsed)
}

/// Parses an outbound URL, mapping an empty host to [`GuardError::MissingHost`].
pub fn parse_url(url: &str) -> Result<Url, GuardError> {
    match Url::parse(url) {
        Ok(u) => Ok(u),
        Err(url::ParseError::EmptyHost) => Err(GuardError::MissingHost {
            url: display_raw(url),
        }),
        Err(e) => Err(GuardError::InvalidUrl {
            url: display_raw(url),
            reason: e.to_string(),
        }),
    }
}

/// [`check_url`] on an already parsed URL.
pub fn check_parsed(url: &Url, allow_loopback: bool) -> Result<(), GuardError> {
    let rules = AddressRules::artifacts(allow_loopback);
    let host = check_scheme_and_host(url)?;
    check_localhost_name(url, &host, rules)?;
    check_literal_ip(&host, rules)
}

/// Step 1 of every URL check: `http`/`https` and a non-empty host, which is
/// returned.
pub fn check_scheme_and_host(url: &Url) -> Result<Host<&str>, GuardError> {
    match url.scheme() {
        "http" | "https" => {}
        other => {
            return Err(GuardError::InvalidScheme {
                url: display_url(url),
                scheme: other.to_string(),
            });
        }
    }
    match url.host() {
        None | Some(Host::Domain("")) => Err(GuardError::MissingHost {
            url: display_url(url),
        }),
        Some(host) => Ok(host),
    }
}

/// The `localhost` string check: refuses `localhost` and `*.localhost`
/// names unless `rules` relax loopback.
pub fn check_localhost_name(
    url: &Url,
    host: &Host<&str>,
    rules: AddressRules,
) -> Result<(), GuardError> {
    match host {
        Host::Domain(d) if !rules.allow_loopback && is_localhost_name(d) => {
            Err(GuardError::ForbiddenHost {
                url: display_url(url),
                host: d.to_string(),
                reason: "localhost",
            })
        }
        _ => Ok(()),
    }
}

/// The address check of a literal-IP host. The connector dials literal IPs
/// without asking the resolver, so this is their dial-time guard as well:
/// every URL a guarded client requests (first or redirected) must pass it.
pub fn check_literal_ip(host: &Host<&str>, rules: AddressRules) -> Result<(), GuardError> {
    let ip = match host {
        Host::Domain(_) => return Ok(()),
        Host::Ipv4(v4) => IpAddr::V4(*v4),
        Host::Ipv6(v6) => IpAddr::V6(*v6),
    };
    match rules.forbidden_reason(ip) {
        Some(reason) => Err(GuardError::ForbiddenAddress {
            host: ip.to_string(),
            addr: ip,
            reason,
        }),
        None => Ok(()),
    }
}

/// The future a [`HostLookup`] returns.
pub type LookupFuture = Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>>;

/// Turns a host name into addresses. [`GuardedResolver`] checks whatever it
/// returns; production uses [`SystemLookup`]. Another source (a fixed table
/// in tests, say) changes which addresses a name has, never which addresses
/// may be dialled.
pub trait HostLookup: fmt::Debug + Send + Sync {
    fn lookup(&self, host: &str) -> LookupFuture;
}

/// The system resolver (`getaddrinfo` via `tokio::net::lookup_host`).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemLookup;

impl HostLookup for SystemLookup {
    fn lookup(&self, host: &str) -> LookupFuture {
        let host = host.to_string();
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .map(|a| a.ip())
                .collect())
        })
    }
}

/// The dial-time guard: resolves a host once (through its [`HostLookup`])
/// and refuses it if any resolved address is forbidden by its
/// [`AddressRules`]. Only the validated addresses are handed to the
/// connector, which dials them without a second lookup.
///
/// Literal-IP hosts never reach a resolver (the connector dials them
/// directly); they are covered by [`check_literal_ip`], which every URL
/// check runs.
#[derive(Clone, Debug)]
pub struct GuardedResolver {
    rules: AddressRules,
    lookup: Arc<dyn HostLookup>,
}

impl GuardedResolver {
    /// A resolver looking names up through `lookup`.
    pub fn new(rules: AddressRules, lookup: Arc<dyn HostLookup>) -> GuardedResolver {
        GuardedResolver { rules, lookup }
    }

    /// A resolver on the system resolver.
    pub fn system(rules: AddressRules) -> GuardedResolver {
        GuardedResolver::new(rules, Arc::new(SystemLookup))
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        let rules = self.rules;
        let lookup = self.lookup.lookup(&host);
        Box::pin(async move {
            let ips = lookup.await?;
            if ips.is_empty() {
                return Err(format!("host {host:?} resolved to no addresses").into());
            }
            for ip in &ips {
                if let Some(reason) = rules.forbidden_reason(*ip) {
                    return Err(Box::new(GuardError::ForbiddenAddress {
                        host: host.clone(),
                        addr: *ip,
                        reason,
                    }) as Box<dyn StdError + Send + Sync>);
                }
            }
            let addrs: Vec<SocketAddr> = ips.into_iter().map(|ip| SocketAddr::new(ip, 0)).collect();
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// The redirect limit was exceeded (transient from the guard's point of view:
/// it is not a policy violation).
#[derive(Debug, thiserror::Error)]
#[error("too many redirects (more than {MAX_REDIRECTS})")]
pub struct TooManyRedirects;

/// The redirect policy: at most [`MAX_REDIRECTS`] hops, each target passing
/// [`check_url`].
pub fn redirect_policy(allow_loopback: bool) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() > MAX_REDIRECTS {
            return attempt.error(TooManyRedirects);
        }
        match check_parsed(attempt.url(), allow_loopback) {
            Ok(()) => attempt.follow(),
            Err(e) => attempt.error(e),
        }
    })
}

/// Installs the ring rustls provider as the process default (no-op when a
/// provider is already installed).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A reqwest client with the dial guard, the guarded redirect policy, no
/// proxy and the given total request timeout.
///
/// TLS: rustls with the platform verifier (`rustls-platform-verifier`, which
/// reqwest 0.13's `rustls-no-provider` feature always uses; on Linux it
/// loads the system CA bundle via `rustls-native-certs`; reqwest 0.13 has no
/// `webpki-roots` feature any more). If the system has no CA certificates
/// (e.g. a scratch image without `ca-certificates`) a client with an empty
/// trust store is built instead and a warning logged: plain HTTP still
/// works (source-controller serves artifacts over HTTP), HTTPS fails at the
/// handshake with an "unknown issuer" error.
///
/// Callers must still run [`check_url`] on the initial URL: literal-IP hosts
/// are not seen by the resolver.
pub fn guarded_client(allow_loopback: bool, timeout: Duration) -> reqwest::Client {
    build_client(
        GuardedResolver::system(AddressRules::artifacts(allow_loopback)),
        || redirect_policy(allow_loopback),
        timeout,
    )
}

/// The client behind [`guarded_client`] and the http-action client: dial
/// guard `resolver`, the redirect policy `redirect` makes, no proxy,
/// `timeout`, our user agent, and the TLS set-up described at
/// [`guarded_client`].
pub fn build_client(
    resolver: GuardedResolver,
    redirect: impl Fn() -> reqwest::redirect::Policy,
    timeout: Duration,
) -> reqwest::Client {
    install_crypto_provider();
    let resolver = Arc::new(resolver);
    let builder = || {
        reqwest::Client::builder()
            .dns_resolver(resolver.clone())
            .redirect(redirect())
            .no_proxy()
            .timeout(timeout)
            .user_agent(concat!("stageset-controller/", env!("CARGO_PKG_VERSION")))
    };
    match builder().build() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(
                error = %error_chain(&e),
                "no usable system CA certificates; HTTPS outbound requests will fail"
            );
            builder()
                .tls_certs_only(Vec::<reqwest::Certificate>::new())
                .build()
                .expect("building a reqwest client without roots cannot fail")
        }
    }
}

/// The [`GuardError`] that made a request fail (refused by the resolver or
/// the redirect policy), if any.
pub fn guard_error_of(err: &(dyn StdError + 'static)) -> Option<GuardError> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(g) = e.downcast_ref::<GuardError>() {
            return Some(g.clone());
        }
        cur = e.source();
    }
    None
}

/// An error and all its sources, `": "`-separated, without repeating a
/// source whose text is already contained in the previous one.
pub fn error_chain(err: &(dyn StdError + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forbidden_ips() {
        for s in [
            "127.0.0.1",
            "127.255.255.254",
            "169.254.169.254",
            "169.254.0.1",
            "224.0.0.1",
            "239.255.255.250",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "febf::1",
            "ff02::1",
            "ff0e::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:0.0.0.0",
            "::ffff:224.0.0.1",
            "::127.0.0.1",
            "64:ff9b::169.254.169.254",
        ] {
            assert!(is_forbidden_ip(ip(s), false), "{s} must be forbidden");
        }
    }

    #[test]
    fn allowed_ips() {
        for s in [
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "8.8.8.8",
            "169.253.255.255",
            "169.255.0.1",
            "fd00::1",
            "fc00::1",
            "fec0::1",
            "2001:db8::1",
            "::ffff:10.0.0.1",
            "64:ff9b::8.8.8.8",
        ] {
            assert!(!is_forbidden_ip(ip(s), false), "{s} must be allowed");
            assert!(!is_forbidden_ip(ip(s), true), "{s} must be allowed");
        }
    }

    #[test]
    fn allow_loopback_relaxes_only_loopback() {
        for s in ["127.0.0.1", "127.0.0.53", "::1", "::ffff:127.0.0.1"] {
            assert!(!is_forbidden_ip(ip(s), true), "{s} allowed with flag");
        }
        for s in [
            "169.254.169.254",
            "fe80::1",
            "0.0.0.0",
            "::",
            "224.0.0.1",
            "ff02::1",
            "::ffff:169.254.169.254",
        ] {
            assert!(
                is_forbidden_ip(ip(s), true),
                "{s} still forbidden with flag"
            );
        }
    }

    #[test]
    fn inet_aton_forms_are_normalised_and_refused() {
        for u in [
            "http://127.1/",
            "http://0x7f000001/",
            "http://2130706433/",
            "http://0177.0.0.1/",
            "http://017700000001/",
            "http://0x7f.0.0.1/",
            "http://127.0.0.1./",
            "http://0/",
            "http://0xA9FEA9FE/",
            "http://169.254.43518/",
            "http://[::ffff:7f00:1]/",
        ] {
            match check_url(u, false) {
                Err(GuardError::ForbiddenAddress { .. }) => {}
                other => panic!("{u}: expected ForbiddenAddress, got {other:?}"),
            }
        }
        // The same forms are loopback, hence allowed with the flag.
        for u in ["http://127.1/", "http://0x7f000001/", "http://2130706433/"] {
            assert!(check_url(u, true).is_ok(), "{u}");
        }
    }

    #[test]
    fn check_url_cases() {
        let forbidden_addr = [
            "http://127.0.0.1:9090/a.tar.gz",
            "http://[::1]/",
            "http://169.254.169.254/latest/meta-data/",
            "https://[fe80::1]/",
            "http://224.0.0.1/",
            "http://0.0.0.0/",
            "http://[::]/",
            "http://[::ffff:169.254.169.254]/",
        ];
        for u in forbidden_addr {
            assert!(
                matches!(
                    check_url(u, false),
                    Err(GuardError::ForbiddenAddress { .. })
                ),
                "{u}"
            );
        }
        for u in [
            "http://localhost/",
            "http://LOCALHOST:8080/",
            "http://localhost./",
            "http://foo.localhost/",
            "http://\u{24db}ocalhost/",
        ] {
            assert!(
                matches!(check_url(u, false), Err(GuardError::ForbiddenHost { .. })),
                "{u}"
            );
            assert!(check_url(u, true).is_ok(), "{u} with flag");
        }
        for u in [
            "ftp://x/",
            "file:///etc/passwd",
            "gopher://example.com/",
            "unix:/var/run/x.sock",
        ] {
            assert!(
                matches!(check_url(u, false), Err(GuardError::InvalidScheme { .. })),
                "{u}"
            );
        }
        assert!(matches!(
            check_url("http://", false),
            Err(GuardError::MissingHost { .. })
        ));
        assert!(matches!(
            check_url("not a url", false),
            Err(GuardError::InvalidUrl { .. })
        ));
        for u in [
            "http://source-controller.flux-system.svc.cluster.local./gitrepository/a/b/c.tar.gz",
            "https://example.com/x",
            "http://10.0.0.1/",
            "http://100.64.1.1/",
            "http://192.168.0.10:8080/",
            "http://[fd00::1]/",
        ] {
            assert!(check_url(u, false).is_ok(), "{u}");
        }
    }

    #[test]
    fn messages_name_the_url_and_hide_credentials() {
        let e = check_url("http://user:secret@127.0.0.1/x", false).unwrap_err();
        let m = e.to_string();
        assert!(m.contains("127.0.0.1") && m.contains("loopback"), "{m}");
        let e = check_url("ftp://user:secret@example.com/x", false).unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("ftp://example.com/x") && !m.contains("secret"),
            "{m}"
        );
        let e = check_url("http://localhost/x", false).unwrap_err();
        assert!(e.to_string().contains("\"localhost\""), "{e}");
    }

    #[tokio::test]
    async fn resolver_refuses_loopback_names() {
        let r = GuardedResolver::system(AddressRules::artifacts(false));
        let err = match r.resolve("localhost".parse().unwrap()).await {
            Ok(_) => panic!("localhost must be refused"),
            Err(e) => e,
        };
        let g = guard_error_of(err.as_ref()).expect("a guard error");
        assert!(matches!(g, GuardError::ForbiddenAddress { .. }), "{g}");

        let r = GuardedResolver::system(AddressRules::artifacts(true));
        let addrs: Vec<_> = match r.resolve("localhost".parse().unwrap()).await {
            Ok(a) => a.collect(),
            Err(e) => panic!("{e}"),
        };
        assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
    }
}
