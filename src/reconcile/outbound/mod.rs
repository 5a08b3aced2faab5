//! The outbound-request guard (delivery.md §2.2 "URL guard" / "Dial guard",
//! §3.3 "http", §3.7 "SSRF / outbound policy summary"; operations.md §8.6).
//!
//! Every request the controller makes to a tenant-chosen URL goes through a
//! client whose resolver is a [`GuardedResolver`], after the URL passed the
//! checks of [`guard`]:
//!
//! * The URL checks refuse non-HTTP schemes, URLs without a host, `localhost`
//!   names and literal IPs that are loopback, link-local (incl. the cloud
//!   metadata address 169.254.169.254), multicast or unspecified. IPv4
//!   literals in any inet_aton form (`0x7f000001`, `2130706433`, `127.1`,
//!   octal) are normalised by the `url` crate (WHATWG host parser) before the
//!   check, so they cannot slip through as "domain names".
//! * [`GuardedResolver`] resolves a host name once and refuses the whole name
//!   if **any** resolved address is forbidden; the connector then dials only
//!   the validated addresses (no second lookup, so DNS rebinding between
//!   "check" and "dial" is impossible). Literal IPs are never resolved, so
//!   their address check runs on every URL, first or redirected.
//! * Redirects are re-checked hop by hop, at most [`MAX_REDIRECTS`] of them.
//! * Environment proxies (`HTTP_PROXY`, …) are ignored: a proxy would dial on
//!   our behalf and bypass the dial guard.
//!
//! Private ranges (RFC 1918, CGNAT 100.64/10, IPv6 ULA fc00::/7) are
//! **allowed**: source-controller and in-cluster services live there.
//!
//! Two users, two sets of [`AddressRules`]:
//!
//! * **Artifact fetches** ([`check_url`], [`guarded_client`], used by
//!   `reconcile::artifact`): the spec's deny-list. The hidden
//!   `--allow-loopback-artifacts` flag (docs/decisions.md 13) is the
//!   `allow_loopback` argument: it relaxes loopback (127.0.0.0/8, ::1 and the
//!   `localhost` names) and nothing else.
//! * **Http actions** ([`http::send`] with an [`http::ActionPolicy`]): the
//!   same deny-list plus the metadata endpoints 100.100.100.200 and
//!   fd00:ec2::254, the `--allowed-action-hosts` globs, and redirect rules
//!   for requests that carry secrets. Nothing relaxes loopback for them
//!   (docs/decisions.md 16).

pub mod guard;
pub mod http;

pub use guard::{
    AddressRules, GuardError, GuardedResolver, HostLookup, LookupFuture, MAX_REDIRECTS,
    SystemLookup, TooManyRedirects, build_client, check_literal_ip, check_localhost_name,
    check_parsed, check_scheme_and_host, check_url, display_url, error_chain, forbidden_reason,
    guard_error_of, guarded_client, install_crypto_provider, is_forbidden_ip, is_localhost_name,
    parse_url, redirect_policy,
};
pub use http::{
    ACTION_TIMEOUT, ActionPolicy, HttpActionError, HttpActionRequest, HttpActionResponse,
    MAX_ERROR_BODY, MAX_RESPONSE_BODY, send, trace_context,
};
