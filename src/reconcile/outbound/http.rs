//! The client of the `http` action verb (delivery.md §3.3, operations.md §8.6).
//!
//! [`send`] makes one call under an [`ActionPolicy`]:
//!
//! 1. The URL: `http`/`https` and a host. With `--allowed-action-hosts` set,
//!    the host name (port ignored, one trailing dot trimmed) must match one
//!    glob with Go `path.Match` semantics, and the `localhost` string check
//!    is skipped; with an empty list every host is allowed except the
//!    `localhost` names. Either way a literal IP is checked against
//!    [`AddressRules::ACTIONS`] (the connector dials literal IPs without
//!    resolving them, so this *is* their dial-time check).
//! 2. The dial: host names go through a [`GuardedResolver`] with
//!    [`AddressRules::ACTIONS`], so loopback, link-local, multicast,
//!    unspecified and the cloud metadata endpoints are refused even for an
//!    allow-listed name, and the connection goes to the checked address.
//! 3. Redirects (301, 302, 303, 307, 308 with a `Location`) are followed by
//!    hand, at most [`MAX_REDIRECTS`], each target checked as in 1 and dialled
//!    as in 2. 301/302/303 turn the request into a GET (HEAD stays HEAD)
//!    without a body, as Go's client does; 307/308 repeat it. A status
//!    listed in `expected_status` is the answer and is not followed.
//! 4. Secret material (any header, since headers come from Secrets; a body
//!    from a Secret; credentials in the URL) never leaves the origin it was
//!    sent to: a redirect to another scheme, host or port is refused. Host
//!    names compare as written (`a.example.com` and its address are
//!    different hosts); the same host on another port is another origin.
//! 5. The whole call, redirects and response body included, is bounded by
//!    [`ACTION_TIMEOUT`]. At most [`MAX_RESPONSE_BODY`] bytes of the body are
//!    read; the rest is not.
//! 6. Success is a status in `expected_status`, or any 2xx when that is
//!    empty. A failure names the method, host and status and quotes at most
//!    [`MAX_ERROR_BODY`] bytes of the body, with any echo of a header value
//!    or a secret body blanked out; header values and the request body
//!    themselves never appear in an error or in `Debug` output.
//!
//! [`HttpActionError::is_retryable`] classifies failures as §3.2 asks: guard
//! refusals and 4xx other than 408/429 are terminal, everything else
//! (5xx, 408, 429, other unexpected statuses, network errors, timeouts) may
//! be retried.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reqwest::Method;
use reqwest::header::{ACCEPT, HeaderMap, HeaderName, HeaderValue, LOCATION};
use tokio::time::Instant;
use url::{Host, Url};

use super::guard::{
    AddressRules, GuardError, GuardedResolver, HostLookup, MAX_REDIRECTS, SystemLookup,
    build_client, check_literal_ip, check_localhost_name, check_scheme_and_host, display_url,
    error_chain, guard_error_of, parse_url,
};
use crate::api::action::HttpMethod;
use crate::config::path_match;

/// The whole call, redirects and the response body included.
pub const ACTION_TIMEOUT: Duration = Duration::from_secs(30);

/// Response body bytes read at most; the rest is left unread.
pub const MAX_RESPONSE_BODY: usize = 64 * 1024;

/// Response body bytes quoted in an error at most.
pub const MAX_ERROR_BODY: usize = 512;

/// Header names an action may not set: the message framing and the
/// connection are the client's business, and `Host` would send the request
/// to a different virtual host than the one the allow-list checked.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

/// Secret values shorter than this are not searched for in response
/// bodies (they would blank out ordinary words).
const MIN_REDACTED: usize = 4;

/// Where http actions may go: the `--allowed-action-hosts` globs, plus the
/// client (dial guard, no redirects of its own, no proxy, 30 s).
///
/// Build it once and clone it: clones share the client and its connection
/// pool. The client is created on first use.
#[derive(Clone)]
pub struct ActionPolicy {
    allowed_hosts: Arc<[String]>,
    lookup: Arc<dyn HostLookup>,
    client: Arc<OnceLock<reqwest::Client>>,
}

impl fmt::Debug for ActionPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActionPolicy")
            .field("allowed_hosts", &self.allowed_hosts)
            .field("lookup", &self.lookup)
            .finish_non_exhaustive()
    }
}

impl ActionPolicy {
    /// The policy of `--allowed-action-hosts` (validated at start-up; a
    /// malformed glob matches nothing), resolving names with the system
    /// resolver.
    pub fn new(allowed_hosts: Vec<String>) -> ActionPolicy {
        ActionPolicy::with_lookup(allowed_hosts, Arc::new(SystemLookup))
    }

    /// Like [`ActionPolicy::new`], resolving names through `lookup`. The
    /// addresses it returns pass the same dial guard.
    pub fn with_lookup(allowed_hosts: Vec<String>, lookup: Arc<dyn HostLookup>) -> ActionPolicy {
        ActionPolicy {
            allowed_hosts: allowed_hosts.into(),
            lookup,
            client: Arc::new(OnceLock::new()),
        }
    }

    /// The `--allowed-action-hosts` globs.
    pub fn allowed_hosts(&self) -> &[String] {
        &self.allowed_hosts
    }

    /// Whether `--allowed-action-hosts` is empty (operations.md §8.6 rule 6
    /// refuses sourced migration ladders with http actions then).
    pub fn allow_list_is_empty(&self) -> bool {
        self.allowed_hosts.is_empty()
    }

    /// Whether the host name `host` (no port) matches one allowed glob.
    pub fn host_allowed(&self, host: &str) -> bool {
        let host = host.strip_suffix('.').unwrap_or(host);
        self.allowed_hosts
            .iter()
            .any(|glob| path_match(glob, host).unwrap_or(false))
    }

    /// Step 1 of the module docs on a URL string; returns it parsed.
    pub fn check_url(&self, url: &str) -> Result<Url, GuardError> {
        let parsed = parse_url(url)?;
        self.check_parsed(&parsed)?;
        Ok(parsed)
    }

    /// Step 1 of the module docs on a parsed URL.
    pub fn check_parsed(&self, url: &Url) -> Result<(), GuardError> {
        let rules = AddressRules::ACTIONS;
        let host = check_scheme_and_host(url)?;
        if self.allowed_hosts.is_empty() {
            check_localhost_name(url, &host, rules)?;
        } else {
            let name = host_name(&host);
            if !self.host_allowed(&name) {
                let host = name.strip_suffix('.').unwrap_or(&name).to_string();
                return Err(GuardError::NotAllowed { host });
            }
        }
        check_literal_ip(&host, rules)
    }

    fn client(&self) -> &reqwest::Client {
        self.client.get_or_init(|| {
            build_client(
                GuardedResolver::new(AddressRules::ACTIONS, self.lookup.clone()),
                reqwest::redirect::Policy::none,
                ACTION_TIMEOUT,
            )
        })
    }
}

/// The host as Go's `URL.Hostname()` gives it: no port, no IPv6 brackets.
fn host_name(host: &Host<&str>) -> String {
    match host {
        Host::Domain(d) => d.to_string(),
        Host::Ipv4(v4) => v4.to_string(),
        Host::Ipv6(v6) => v6.to_string(),
    }
}

/// One http action call.
#[derive(Clone)]
pub struct HttpActionRequest {
    pub url: String,
    pub method: HttpMethod,
    /// Header name → value. Secret material: values never appear in errors
    /// or `Debug` output, and a request with headers is never redirected to
    /// another origin.
    pub headers: BTreeMap<String, Vec<u8>>,
    pub body: Option<Vec<u8>>,
    /// The body came from a Secret (`bodyFrom`): secret material like the
    /// headers.
    pub body_from_secret: bool,
    /// Statuses that count as success; empty = any 2xx.
    pub expected_status: Vec<u16>,
    /// Response body bytes read at most ([`MAX_RESPONSE_BODY`] for
    /// actions; metric sources read up to 1 MiB).
    pub max_body: usize,
    /// An `Accept` header that is not secret material (metric sources ask
    /// for `application/json`); unlike `headers`, it does not keep the
    /// request from following a redirect to another origin.
    pub accept: Option<&'static str>,
}

impl HttpActionRequest {
    /// A request without headers, body or expected statuses.
    pub fn new(url: impl Into<String>, method: HttpMethod) -> HttpActionRequest {
        HttpActionRequest {
            url: url.into(),
            method,
            headers: BTreeMap::new(),
            body: None,
            body_from_secret: false,
            expected_status: Vec::new(),
            max_body: MAX_RESPONSE_BODY,
            accept: None,
        }
    }

    /// Whether the request carries secret material of its own (headers, or
    /// a body from a Secret). Credentials in the URL count too; [`send`]
    /// checks those on the parsed URL.
    pub fn carries_secrets(&self) -> bool {
        !self.headers.is_empty() || (self.body_from_secret && self.body.is_some())
    }
}

impl fmt::Debug for HttpActionRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = match Url::parse(&self.url) {
            Ok(u) => display_url(&u),
            Err(_) => "<unparsable>".to_string(),
        };
        f.debug_struct("HttpActionRequest")
            .field("url", &url)
            .field("method", &self.method)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field(
                "body",
                &self.body.as_ref().map(|b| format!("<{} bytes>", b.len())),
            )
            .field("body_from_secret", &self.body_from_secret)
            .field("expected_status", &self.expected_status)
            .finish()
    }
}

/// A successful call.
#[derive(Clone, Debug)]
pub struct HttpActionResponse {
    pub status: u16,
    /// At most [`MAX_RESPONSE_BODY`] bytes.
    pub body: Bytes,
    /// The body was longer than [`MAX_RESPONSE_BODY`].
    pub body_truncated: bool,
    /// The URL that answered (after redirects), without credentials.
    pub url: String,
    /// Redirects followed.
    pub redirects: usize,
}

/// Why an http action call failed. The text names hosts, methods and
/// statuses, never a header value or the request body.
#[derive(Debug)]
pub enum HttpActionError {
    /// The request cannot be sent as given (a header name or value that is
    /// not valid HTTP, a reserved header). Terminal.
    InvalidRequest(String),
    /// Refused by the outbound guard: the URL policy, the allow-list, or the
    /// dial-time address check (`redirected_from` names the URL whose
    /// redirect led there). Terminal.
    Guard {
        guard: GuardError,
        redirected_from: Option<String>,
    },
    /// A redirect would carry secret material to another origin. Terminal.
    SecretRedirect { from: String, to: String },
    /// More than [`MAX_REDIRECTS`] redirects. Retryable.
    TooManyRedirects { host: String },
    /// A redirect without a usable `Location`. Retryable.
    InvalidRedirect { host: String, reason: String },
    /// Connecting, sending or reading failed, or the call ran out of time.
    /// Retryable.
    Network {
        method: &'static str,
        host: String,
        message: String,
        timeout: bool,
    },
    /// The final status is not an expected one. Terminal for 4xx other than
    /// 408 and 429, retryable otherwise.
    Status {
        method: &'static str,
        host: String,
        status: u16,
        expected: String,
        /// At most [`MAX_ERROR_BODY`] bytes of the response body, secrets
        /// blanked out.
        body: String,
    },
}

impl HttpActionError {
    /// Whether another attempt may succeed (delivery.md §3.2): no for guard
    /// refusals, unusable requests and 4xx other than 408/429; yes for 5xx,
    /// 408, 429, other unexpected statuses and network errors.
    pub fn is_retryable(&self) -> bool {
        match self {
            HttpActionError::InvalidRequest(_)
            | HttpActionError::Guard { .. }
            | HttpActionError::SecretRedirect { .. } => false,
            HttpActionError::TooManyRedirects { .. }
            | HttpActionError::InvalidRedirect { .. }
            | HttpActionError::Network { .. } => true,
            HttpActionError::Status { status, .. } => {
                !(400..500).contains(status) || *status == 408 || *status == 429
            }
        }
    }

    /// `!is_retryable()`.
    pub fn is_terminal(&self) -> bool {
        !self.is_retryable()
    }

    /// The final status, for [`HttpActionError::Status`].
    pub fn status(&self) -> Option<u16> {
        match self {
            HttpActionError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The guard refusal, if that is what this is.
    pub fn guard_error(&self) -> Option<&GuardError> {
        match self {
            HttpActionError::Guard { guard, .. } => Some(guard),
            _ => None,
        }
    }
}

impl fmt::Display for HttpActionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpActionError::InvalidRequest(why) => write!(f, "invalid request: {why}"),
            HttpActionError::Guard {
                guard,
                redirected_from: None,
            } => write!(f, "refused: {guard}"),
            HttpActionError::Guard {
                guard,
                redirected_from: Some(from),
            } => write!(f, "redirect from {from} refused: {guard}"),
            HttpActionError::SecretRedirect { from, to } => write!(
                f,
                "redirect from {from} to {to} refused: the request carries secret material (headers, a body from a Secret or URL credentials), which is only ever sent to the origin (scheme, host and port) it was addressed to"
            ),
            HttpActionError::TooManyRedirects { host } => {
                write!(f, "{host}: too many redirects (more than {MAX_REDIRECTS})")
            }
            HttpActionError::InvalidRedirect { host, reason } => {
                write!(f, "{host}: invalid redirect: {reason}")
            }
            HttpActionError::Network {
                method,
                host,
                message,
                ..
            } => write!(f, "{method} {host}: {message}"),
            HttpActionError::Status {
                method,
                host,
                status,
                expected,
                body,
            } => {
                write!(f, "{method} {host}: status {status}, expected {expected}")?;
                if body.is_empty() {
                    Ok(())
                } else {
                    write!(f, "; body: {body:?}")
                }
            }
        }
    }
}

impl std::error::Error for HttpActionError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HttpActionError::Guard { guard, .. } => Some(guard),
            _ => None,
        }
    }
}

/// Adds the W3C `traceparent` of the current span (operations.md §7.8,
/// docs/decisions.md 9) unless the request sets one itself; nothing when no
/// span context is active (tracing off).
pub fn trace_context(headers: &mut HeaderMap) {
    if !headers.contains_key("traceparent") {
        crate::telemetry::inject(headers);
    }
}

/// Makes one http action call under `policy` (see the module docs).
pub async fn send(
    req: HttpActionRequest,
    policy: &ActionPolicy,
) -> Result<HttpActionResponse, HttpActionError> {
    let deadline = Instant::now() + ACTION_TIMEOUT;
    let mut headers = header_map(&req.headers)?;
    if let Some(accept) = req.accept
        && !headers.contains_key(ACCEPT)
    {
        headers.insert(ACCEPT, HeaderValue::from_static(accept));
    }
    trace_context(&mut headers);
    let mut url = policy
        .check_url(&req.url)
        .map_err(|guard| HttpActionError::Guard {
            guard,
            redirected_from: None,
        })?;
    let secret = req.carries_secrets() || !url.username().is_empty() || url.password().is_some();
    let secrets = secret_values(&req);
    let expected = req.expected_status;
    let max_body = req.max_body;
    let mut method = method_of(req.method);
    let mut body = req.body.map(Bytes::from);
    let client = policy.client();
    let mut redirects = 0;
    let mut redirected_from: Option<String> = None;
    loop {
        let host = authority(&url);
        let method_name = method_name(&method);
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(timed_out(method_name, host));
        }
        let mut request = client
            .request(method.clone(), url.clone())
            .headers(headers.clone())
            .timeout(remaining);
        if let Some(b) = &body {
            request = request.body(b.clone());
        }
        let mut resp = request
            .send()
            .await
            .map_err(|e| request_error(e, method_name, &host, &redirected_from))?;
        let status = resp.status().as_u16();

        let location = resp.headers().get(LOCATION).cloned();
        if is_redirect(status)
            && !expected.contains(&status)
            && let Some(location) = location
        {
            if redirects == MAX_REDIRECTS {
                return Err(HttpActionError::TooManyRedirects { host });
            }
            let next = location
                .to_str()
                .map_err(|_| "the Location header is not ASCII".to_string())
                .and_then(|l| url.join(l).map_err(|e| format!("Location: {e}")))
                .map_err(|reason| HttpActionError::InvalidRedirect {
                    host: host.clone(),
                    reason,
                })?;
            let from = display_url(&url);
            policy
                .check_parsed(&next)
                .map_err(|guard| HttpActionError::Guard {
                    guard,
                    redirected_from: Some(from.clone()),
                })?;
            if secret && next.origin() != url.origin() {
                return Err(HttpActionError::SecretRedirect {
                    from: url.origin().ascii_serialization(),
                    to: next.origin().ascii_serialization(),
                });
            }
            if matches!(status, 301..=303) {
                if method != Method::GET && method != Method::HEAD {
                    method = Method::GET;
                }
                body = None;
            }
            drop(resp);
            redirects += 1;
            redirected_from = Some(from);
            url = next;
            continue;
        }

        let (bytes, truncated) = read_capped(&mut resp, max_body)
            .await
            .map_err(|e| request_error(e, method_name, &host, &redirected_from))?;
        let ok = if expected.is_empty() {
            (200..300).contains(&status)
        } else {
            expected.contains(&status)
        };
        if ok {
            return Ok(HttpActionResponse {
                status,
                body: bytes,
                body_truncated: truncated,
                url: display_url(&url),
                redirects,
            });
        }
        return Err(HttpActionError::Status {
            method: method_name,
            host,
            status,
            expected: expected_text(&expected),
            body: error_body(&bytes, &secrets),
        });
    }
}

fn is_redirect(status: u16) -> bool {
    matches!(status, 301 | 302 | 303 | 307 | 308)
}

fn method_of(m: HttpMethod) -> Method {
    match m {
        HttpMethod::Get => Method::GET,
        HttpMethod::Post => Method::POST,
        HttpMethod::Put => Method::PUT,
        HttpMethod::Patch => Method::PATCH,
        HttpMethod::Delete => Method::DELETE,
        HttpMethod::Head => Method::HEAD,
    }
}

fn method_name(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        _ => "request",
    }
}

/// `host[:port]` of a URL (the port only when written), for messages.
fn authority(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

/// The headers as sent: names and values must be valid HTTP, names unique
/// (ignoring case) and not reserved. Values are marked sensitive.
fn header_map(headers: &BTreeMap<String, Vec<u8>>) -> Result<HeaderMap, HttpActionError> {
    let mut map = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let invalid =
            |why: &str| HttpActionError::InvalidRequest(format!("header {name:?}: {why}"));
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| invalid("not a valid HTTP header name"))?;
        if RESERVED_HEADERS.contains(&header.as_str()) {
            return Err(invalid("set by the client, an action may not set it"));
        }
        let mut v = HeaderValue::from_bytes(value).map_err(|_| {
            invalid("the value is not a valid HTTP header value (control characters such as a trailing newline are not allowed)")
        })?;
        v.set_sensitive(true);
        if map.insert(header, v).is_some() {
            return Err(invalid("given twice (header names ignore case)"));
        }
    }
    Ok(map)
}

/// What a response body must not echo into an error: every header value
/// and its space-separated parts (the token of `Bearer <token>`), and a body
/// from a Secret.
fn secret_values(req: &HttpActionRequest) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    for value in req.headers.values() {
        out.push(value.clone());
        out.extend(
            value
                .split(|b| b.is_ascii_whitespace())
                .filter(|part| part.len() >= 8)
                .map(<[u8]>::to_vec),
        );
    }
    if req.body_from_secret {
        out.extend(req.body.clone());
    }
    out.retain(|s| s.len() >= MIN_REDACTED);
    // Longest first, so a value is blanked out before its parts.
    out.sort_by_key(|s| std::cmp::Reverse(s.len()));
    out
}

/// At most [`MAX_ERROR_BODY`] bytes of `body` for an error message, with
/// every occurrence of a secret value replaced by `<redacted>` first.
fn error_body(body: &[u8], secrets: &[Vec<u8>]) -> String {
    let mut text = body.to_vec();
    for secret in secrets {
        text = replace_all(&text, secret, b"<redacted>");
    }
    let mut end = text.len().min(MAX_ERROR_BODY);
    // Do not cut a UTF-8 sequence in two (continuation bytes are 0b10xxxxxx).
    while end < text.len() && end > 0 && text[end] & 0xc0 == 0x80 {
        end -= 1;
    }
    String::from_utf8_lossy(&text[..end]).trim().to_string()
}

fn replace_all(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return haystack.to_vec();
    }
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

fn expected_text(expected: &[u16]) -> String {
    if expected.is_empty() {
        return "2xx".to_string();
    }
    let list: Vec<String> = expected.iter().map(u16::to_string).collect();
    format!("one of {}", list.join(", "))
}

/// Reads at most `cap` bytes of the body; whether there was more.
async fn read_capped(
    resp: &mut reqwest::Response,
    cap: usize,
) -> Result<(Bytes, bool), reqwest::Error> {
    let mut buf = BytesMut::new();
    while let Some(chunk) = resp.chunk().await? {
        let room = cap - buf.len();
        if chunk.len() > room {
            buf.extend_from_slice(&chunk[..room]);
            return Ok((buf.freeze(), true));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok((buf.freeze(), false))
}

fn timed_out(method: &'static str, host: String) -> HttpActionError {
    HttpActionError::Network {
        method,
        host,
        message: format!(
            "timed out after {}s (redirects and the response body included)",
            ACTION_TIMEOUT.as_secs()
        ),
        timeout: true,
    }
}

fn request_error(
    e: reqwest::Error,
    method: &'static str,
    host: &str,
    redirected_from: &Option<String>,
) -> HttpActionError {
    if let Some(guard) = guard_error_of(&e) {
        return HttpActionError::Guard {
            guard,
            redirected_from: redirected_from.clone(),
        };
    }
    if e.is_timeout() {
        return timed_out(method, host.to_string());
    }
    HttpActionError::Network {
        method,
        host: host.to_string(),
        message: error_chain(&e.without_url()),
        timeout: false,
    }
}

#[cfg(test)]
mod tests;
