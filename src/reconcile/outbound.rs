//! The outbound-request guard (delivery.md §2.2 "URL guard" / "Dial guard",
//! §3.7 "SSRF / outbound policy summary").
//!
//! Every request the controller makes to a tenant-chosen URL (artifact
//! fetches, and later `http` actions and metric sources) goes through a
//! client built by [`guarded_client`] after the URL passed [`check_url`]:
//!
//! * [`check_url`] refuses non-HTTP schemes, URLs without a host, `localhost`
//!   names and literal IPs that are loopback, link-local (incl. the cloud
//!   metadata address 169.254.169.254), multicast or unspecified. IPv4
//!   literals in any inet_aton form (`0x7f000001`, `2130706433`, `127.1`,
//!   octal) are normalised by the `url` crate (WHATWG host parser) before the
//!   check, so they cannot slip through as "domain names".
//! * [`GuardedResolver`] resolves a host name once and refuses the whole name
//!   if **any** resolved address is forbidden; the connector then dials only
//!   the validated addresses (no second lookup, so DNS rebinding between
//!   "check" and "dial" is impossible).
//! * The redirect policy re-runs [`check_url`] on every hop (at most
//!   [`MAX_REDIRECTS`]); hosts reached by a redirect go through the resolver
//!   like the first one.
//! * Environment proxies (`HTTP_PROXY`, …) are ignored: a proxy would dial on
//!   our behalf and bypass the dial guard.
//!
//! Private ranges (RFC 1918, CGNAT 100.64/10, IPv6 ULA fc00::/7) are
//! **allowed**: source-controller lives there.
//!
//! The hidden `--allow-loopback-artifacts` flag (docs/decisions.md 13) is the
//! `allow_loopback` argument: it relaxes loopback (127.0.0.0/8, ::1 and the
//! `localhost` names) and nothing else.

use std::error::Error as StdError;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
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
}

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
pub fn is_forbidden_ip(ip: IpAddr, allow_loopback: bool) -> bool {
    forbidden_reason(ip, allow_loopback).is_some()
}

/// Like [`is_forbidden_ip`], naming the class of the forbidden address.
pub fn forbidden_reason(ip: IpAddr, allow_loopback: bool) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4, allow_loopback),
        IpAddr::V6(v6) => forbidden_v6(v6, allow_loopback),
    }
}

fn forbidden_v4(ip: Ipv4Addr, allow_loopback: bool) -> Option<&'static str> {
    let o = ip.octets();
    if ip.is_unspecified() {
        Some("unspecified")
    } else if o[0] == 0 {
        Some("this-network 0.0.0.0/8")
    } else if ip.is_loopback() {
        (!allow_loopback).then_some("loopback")
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

fn forbidden_v6(ip: Ipv6Addr, allow_loopback: bool) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return forbidden_v4(v4, allow_loopback);
    }
    let seg = ip.segments();
    if ip.is_unspecified() {
        Some("unspecified")
    } else if ip.is_loopback() {
        (!allow_loopback).then_some("loopback")
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
        forbidden_v4(Ipv4Addr::new(a, b, c, d), allow_loopback)
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
/// dial time in [`GuardedResolver`].
pub fn check_url(url: &str, allow_loopback: bool) -> Result<Url, GuardError> {
    let parsed = match Url::parse(url) {
        Ok(u) => u,
        Err(url::ParseError::EmptyHost) => {
            return Err(GuardError::MissingHost {
                url: display_raw(url),
            });
        }
        Err(e) => {
            return Err(GuardError::InvalidUrl {
                url: display_raw(url),
                reason: e.to_string(),
            });
        }
    };
    check_parsed(&parsed, allow_loopback)?;
    Ok(parsed)
}

/// [`check_url`] on an already parsed URL.
pub fn check_parsed(url: &Url, allow_loopback: bool) -> Result<(), GuardError> {
    let shown = || display_url(url);
    match url.scheme() {
        "http" | "https" => {}
        other => {
            return Err(GuardError::InvalidScheme {
                url: shown(),
                scheme: other.to_string(),
            });
        }
    }
    let (host_str, ip) = match url.host() {
        None => return Err(GuardError::MissingHost { url: shown() }),
        Some(Host::Domain("")) => return Err(GuardError::MissingHost { url: shown() }),
        Some(Host::Domain(d)) => {
            if !allow_loopback && is_localhost_name(d) {
                return Err(GuardError::ForbiddenHost {
                    url: shown(),
                    host: d.to_string(),
                    reason: "localhost",
                });
            }
            return Ok(());
        }
        Some(Host::Ipv4(v4)) => (v4.to_string(), IpAddr::V4(v4)),
        Some(Host::Ipv6(v6)) => (v6.to_string(), IpAddr::V6(v6)),
    };
    match forbidden_reason(ip, allow_loopback) {
        Some(reason) => Err(GuardError::ForbiddenAddress {
            host: host_str,
            addr: ip,
            reason,
        }),
        None => Ok(()),
    }
}

/// The dial-time guard: resolves a host once (system resolver via
/// `tokio::net::lookup_host`) and refuses it if any resolved address is
/// forbidden. Only the validated addresses are handed to the connector.
///
/// Literal-IP hosts never reach a resolver (the connector dials them
/// directly); they are covered by [`check_url`] and the redirect policy.
#[derive(Clone, Copy, Debug)]
pub struct GuardedResolver {
    pub allow_loopback: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        let allow_loopback = self.allow_loopback;
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if addrs.is_empty() {
                return Err(format!("host {host:?} resolved to no addresses").into());
            }
            for a in &addrs {
                if let Some(reason) = forbidden_reason(a.ip(), allow_loopback) {
                    return Err(Box::new(GuardError::ForbiddenAddress {
                        host: host.clone(),
                        addr: a.ip(),
                        reason,
                    }) as Box<dyn StdError + Send + Sync>);
                }
            }
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
    install_crypto_provider();
    let builder = || {
        reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver { allow_loopback }))
            .redirect(redirect_policy(allow_loopback))
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
        let r = GuardedResolver {
            allow_loopback: false,
        };
        let err = match r.resolve("localhost".parse().unwrap()).await {
            Ok(_) => panic!("localhost must be refused"),
            Err(e) => e,
        };
        let g = guard_error_of(err.as_ref()).expect("a guard error");
        assert!(matches!(g, GuardError::ForbiddenAddress { .. }), "{g}");

        let r = GuardedResolver {
            allow_loopback: true,
        };
        let addrs: Vec<_> = match r.resolve("localhost".parse().unwrap()).await {
            Ok(a) => a.collect(),
            Err(e) => panic!("{e}"),
        };
        assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
    }
}
