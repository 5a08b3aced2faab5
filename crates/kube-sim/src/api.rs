//! The HTTP surface: authentication, impersonation, authorization and the REST
//! verbs, in the shapes real clients expect.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::discovery;
use crate::error::{ApiError, ApiResult};
use crate::rbac::{self, Attributes, Decision, ImpersonationRequest, RbacObjects, UserInfo};
use crate::registry::{ResourceType, StorageKey};
use crate::request::{self, Query, RequestInfo};
use crate::schema::UnknownFieldPolicy;
use crate::selectors::{FieldSelector, LabelSelector, builtin_field_labels};
use crate::sim::{DeleteOptions, Deleted, PatchKind, Sim, WriteCtx, meta_str};
use crate::store::{Change, EventType};
use crate::table;

/// Response bodies: a full buffer, a stream of chunks (watches), or either
/// cut off by an injected connection reset.
pub enum SimBody {
    Full(Option<Bytes>),
    Stream(mpsc::Receiver<Bytes>),
    /// Part of a body whose Content-Length promised more, then an error
    /// (the connection is closed mid-response).
    Truncated(Option<Bytes>),
    /// A stream that fails after this many more chunks.
    StreamAbort(mpsc::Receiver<Bytes>, usize),
}

/// The error a cut-off body ends with.
#[derive(Debug)]
pub struct ConnectionReset;

impl std::fmt::Display for ConnectionReset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection reset (injected fault)")
    }
}

impl std::error::Error for ConnectionReset {}

impl Body for SimBody {
    type Data = Bytes;
    type Error = ConnectionReset;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ConnectionReset>>> {
        match self.get_mut() {
            SimBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            SimBody::Stream(rx) => rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b)))),
            SimBody::Truncated(b) => Poll::Ready(Some(match b.take() {
                Some(b) => Ok(Frame::data(b)),
                None => Err(ConnectionReset),
            })),
            SimBody::StreamAbort(rx, left) => {
                if *left == 0 {
                    return Poll::Ready(Some(Err(ConnectionReset)));
                }
                rx.poll_recv(cx).map(|o| {
                    o.map(|b| {
                        *left -= 1;
                        Ok(Frame::data(b))
                    })
                })
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, SimBody::Full(None))
    }
}

/// Cuts a response off after (about) half its body.
fn truncate(resp: Resp) -> Resp {
    let (mut parts, body) = resp.into_parts();
    let body = match body {
        SimBody::Full(Some(b)) => {
            parts.headers.insert(
                http::header::CONTENT_LENGTH,
                http::HeaderValue::from(b.len() as u64),
            );
            SimBody::Truncated(Some(b.slice(..b.len() / 2)))
        }
        SimBody::Full(None) => SimBody::Truncated(None),
        SimBody::Stream(rx) => SimBody::StreamAbort(rx, 1),
        other => other,
    };
    Response::from_parts(parts, body)
}

type Resp = Response<SimBody>;

fn json_response(status: u16, body: &Value, content_type: &str, warnings: &[String]) -> Resp {
    let bytes = serde_json::to_vec(body).expect("JSON values serialize");
    let mut builder = Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("Content-Type", content_type)
        .header("Cache-Control", "no-cache, private");
    for w in warnings {
        builder = builder.header(
            "Warning",
            format!("299 - {}", serde_json::to_string(w).unwrap_or_default()),
        );
    }
    builder
        .body(SimBody::Full(Some(Bytes::from(bytes))))
        .expect("valid response")
}

fn ok(body: &Value) -> Resp {
    json_response(200, body, "application/json", &[])
}

fn error_response(e: &ApiError) -> Resp {
    json_response(e.code, &e.to_status(), "application/json", &[])
}

/// RBAC objects read straight from the store.
struct StoreRbac<'a>(&'a Sim);

impl StoreRbac<'_> {
    fn list(&self, resource: &str, ns: Option<&str>) -> Vec<Value> {
        self.0
            .store
            .list(
                &StorageKey::new("rbac.authorization.k8s.io", resource),
                ns,
                None,
            )
            .map(|(items, _)| items.iter().map(|o| (**o).clone()).collect())
            .unwrap_or_default()
    }
}

impl RbacObjects for StoreRbac<'_> {
    fn roles(&self, namespace: &str) -> Vec<Value> {
        self.list("roles", Some(namespace))
    }
    fn role_bindings(&self, namespace: &str) -> Vec<Value> {
        self.list("rolebindings", Some(namespace))
    }
    fn cluster_roles(&self) -> Vec<Value> {
        self.list("clusterroles", None)
    }
    fn cluster_role_bindings(&self) -> Vec<Value> {
        self.list("clusterrolebindings", None)
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn status_error(e: rbac::StatusError) -> ApiError {
    let status = e.to_status();
    let mut err = ApiError::new(e.code, e.reason, e.message);
    if let Some(d) = status.get("details") {
        err = err.with_details(d.clone());
    }
    err
}

/// The bearer token's user, then impersonation as a 1.37 server does it
/// (constrained impersonation with its legacy fallback).
fn authenticate(sim: &Sim, headers: &HeaderMap, attrs: &Attributes) -> ApiResult<UserInfo> {
    let auth = header(headers, "authorization");
    let token = auth
        .strip_prefix("Bearer ")
        .or_else(|| auth.strip_prefix("bearer "))
        .ok_or_else(ApiError::unauthorized)?;
    let requester = sim
        .authenticate(token.trim())
        .ok_or_else(ApiError::unauthorized)?;
    let user = headers
        .get("impersonate-user")
        .and_then(|v| v.to_str().ok());
    let groups: Vec<String> = headers
        .get_all("impersonate-group")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_string)
        .collect();
    let uid = headers.get("impersonate-uid").and_then(|v| v.to_str().ok());
    let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in headers {
        if let Some(key) = name.as_str().strip_prefix("impersonate-extra-")
            && let Ok(v) = value.to_str()
        {
            let key = form_urlencoded::parse(format!("k={key}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_else(|| key.to_string());
            extra.entry(key).or_default().push(v.to_string());
        }
    }
    if user.is_none() && groups.is_empty() && uid.is_none() && extra.is_empty() {
        return Ok(requester);
    }
    let req = ImpersonationRequest {
        user: user.map(str::to_string),
        uid: uid.map(str::to_string),
        groups,
        extra,
    };
    sim.impersonator
        .impersonate(&StoreRbac(sim), &requester, &req, attrs)
        .map_err(status_error)
}

fn attributes(info: &RequestInfo, query: &Query) -> Attributes {
    // A list or watch pinned to one name by a field selector is authorized for
    // that name, as on a real server.
    let mut name = info.name.clone();
    if name.is_empty()
        && matches!(info.verb.as_str(), "list" | "watch")
        && let Some(fs) = query.get("fieldSelector")
        && let Ok(sel) = FieldSelector::parse(fs, &["metadata.name".to_string()])
        && let Some(pinned) = sel.pinned_name()
    {
        name = pinned.to_string();
    }
    Attributes {
        verb: info.verb.clone(),
        api_group: info.group.clone(),
        api_version: info.version.clone(),
        resource: info.resource.clone(),
        subresource: info.subresource.clone(),
        name,
        namespace: info.namespace.clone(),
        resource_request: info.is_resource,
        path: info.path.clone(),
    }
}

/// What the request log records about a request besides its status.
#[derive(Default)]
struct RequestMeta {
    user: String,
    impersonated_user: Option<String>,
    info: RequestInfo,
    fault: Option<crate::faults::FaultKind>,
    logged: bool,
}

/// How faults apply to one request.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RequestFaults {
    pub plan: crate::faults::Plan,
    /// The user is exempt from faults and partitions.
    pub exempt: bool,
}

/// Handles one request.
pub async fn handle(sim: Arc<Sim>, req: http::Request<Incoming>) -> Result<Resp, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = Query::parse(req.uri().query());
    let headers = req.headers().clone();
    let started = std::time::Instant::now();
    let mut meta = RequestMeta::default();
    let resp = match handle_inner(&sim, req, &query, &mut meta).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    };
    let resp = if meta.fault == Some(crate::faults::FaultKind::ConnectionReset) {
        truncate(resp)
    } else {
        resp
    };
    if meta.logged {
        sim.faults.log(crate::faults::RequestRecord {
            user: meta.user,
            impersonated_user: meta.impersonated_user,
            verb: meta.info.verb,
            group: meta.info.group,
            resource: meta.info.resource,
            subresource: meta.info.subresource,
            namespace: meta.info.namespace,
            name: meta.info.name,
            path: meta.info.path,
            code: resp.status().as_u16(),
            fault: meta.fault,
        });
    }
    tracing::debug!(
        method = %method,
        path = %path,
        status = resp.status().as_u16(),
        user_agent = header(&headers, "user-agent"),
        content_type = header(&headers, "content-type"),
        accept = header(&headers, "accept"),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "request"
    );
    Ok(resp)
}

/// The answer of an injected 429, 500 or 503.
fn fault_response(sim: &Sim, kind: crate::faults::FaultKind) -> Resp {
    use crate::faults::FaultKind;
    match kind {
        FaultKind::TooManyRequests => {
            // API Priority and Fairness rejects with http.Error: plain text.
            Response::builder()
                .status(429)
                .header("Content-Type", "text/plain; charset=utf-8")
                .header("X-Content-Type-Options", "nosniff")
                .header("Retry-After", sim.faults.retry_after_secs().to_string())
                .body(SimBody::Full(Some(Bytes::from_static(
                    b"Too many requests, please try again later.\n",
                ))))
                .expect("valid response")
        }
        FaultKind::ServiceUnavailable => error_response(&ApiError::new(
            503,
            "ServiceUnavailable",
            "the server is currently unable to handle the request (injected fault)",
        )),
        _ => error_response(
            &ApiError::internal("Internal error occurred: injected fault (kube-sim)")
                .with_details(json!({"causes": [{"message": "injected fault (kube-sim)"}]})),
        ),
    }
}

async fn handle_inner(
    sim: &Arc<Sim>,
    req: http::Request<Incoming>,
    query: &Query,
    meta: &mut RequestMeta,
) -> ApiResult<Resp> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let headers = req.headers().clone();
    // Health endpoints are public, like a real server's.
    if matches!(path.as_str(), "/healthz" | "/livez" | "/readyz") {
        return Ok(Response::builder()
            .status(200)
            .header("Content-Type", "text/plain; charset=utf-8")
            .body(SimBody::Full(Some(Bytes::from_static(b"ok"))))
            .expect("valid response"));
    }
    let info = request::parse(method.as_str(), &path, query);
    sim.count_request(&info.verb);
    meta.info = info.clone();
    meta.logged = true;
    meta.impersonated_user = headers
        .get("impersonate-user")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let auth = header(&headers, "authorization");
    meta.user = auth
        .strip_prefix("Bearer ")
        .or_else(|| auth.strip_prefix("bearer "))
        .and_then(|t| sim.authenticate(t.trim()))
        .map(|u| u.name)
        .unwrap_or_default();
    let exempt = !meta.user.is_empty()
        && sim
            .faults
            .exempt(&meta.user, meta.impersonated_user.as_deref());
    if !exempt && sim.faults.partitioned() {
        meta.fault = Some(crate::faults::FaultKind::Partitioned);
        sim.faults
            .count(&info.verb, crate::faults::FaultKind::Partitioned);
        sim.faults.wait_partition().await;
    }
    if !sim.config.latency.is_zero() {
        tokio::time::sleep(sim.config.latency).await;
    }
    let requester_attrs = attributes(&info, query);
    let user = authenticate(sim, &headers, &requester_attrs)?;
    let plan = if info.is_resource && !exempt {
        sim.faults.plan(&info.verb, &info.resource)
    } else {
        crate::faults::Plan::None
    };
    match plan {
        crate::faults::Plan::Status(kind) => {
            meta.fault = Some(kind);
            sim.faults.count(&info.verb, kind);
            return Ok(fault_response(sim, kind));
        }
        crate::faults::Plan::Reset => {
            meta.fault = Some(crate::faults::FaultKind::ConnectionReset);
            sim.faults
                .count(&info.verb, crate::faults::FaultKind::ConnectionReset);
        }
        _ => {}
    }
    let attrs = attributes(&info, query);
    if let Decision::Deny { reason } = rbac::authorize(&StoreRbac(sim), &user, &attrs) {
        let _ = reason;
        let eval = rbac::evaluate(&StoreRbac(sim), &user, &attrs);
        return Err(status_error(rbac::forbidden_error(
            &user,
            &attrs,
            &eval.reason,
        )));
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?
        .to_bytes();
    if body.len() > 3 * 1024 * 1024 {
        return Err(ApiError::new(
            413,
            "RequestEntityTooLarge",
            "Request entity too large: limit is 3145728",
        ));
    }
    if !info.is_resource {
        return non_resource(sim, &method, &path, &headers);
    }
    let warnings = crate::sim::Warnings::default();
    let faults = RequestFaults { plan, exempt };
    let mut resp = resource(
        sim, &user, &info, &method, &headers, query, &body, &warnings, faults,
    )
    .await?;
    if let crate::faults::Plan::EndWatch { .. } = plan
        && info.verb == "watch"
    {
        meta.fault = Some(crate::faults::FaultKind::WatchEnded);
    }
    if resp.headers().get("X-Kube-Sim-Watch-Gone").is_some() {
        resp.headers_mut().remove("X-Kube-Sim-Watch-Gone");
        meta.fault = Some(crate::faults::FaultKind::WatchGone);
    }
    for w in warnings.take() {
        if let Ok(v) = http::HeaderValue::from_str(&format!(
            "299 - {}",
            serde_json::to_string(&w).unwrap_or_default()
        )) {
            resp.headers_mut().append("Warning", v);
        }
    }
    Ok(resp)
}

fn non_resource(sim: &Sim, method: &Method, path: &str, headers: &HeaderMap) -> ApiResult<Resp> {
    if method != Method::GET {
        return Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        ));
    }
    let reg = sim.registry();
    let accept = header(headers, "accept");
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let body = match parts.as_slice() {
        ["version"] => discovery::version_info(),
        ["api"] => {
            if discovery::wants_aggregated(accept) {
                return Ok(json_response(
                    200,
                    &discovery::aggregated(&reg, true),
                    discovery::AGGREGATED_V2,
                    &[],
                ));
            }
            let addr = sim
                .server_address
                .read()
                .map(|a| a.clone())
                .unwrap_or_default();
            discovery::core_versions(&addr)
        }
        ["apis"] => {
            if discovery::wants_aggregated(accept) {
                return Ok(json_response(
                    200,
                    &discovery::aggregated(&reg, false),
                    discovery::AGGREGATED_V2,
                    &[],
                ));
            }
            discovery::group_list(&reg)
        }
        ["api", v] => discovery::resource_list(&reg, "", v).ok_or_else(ApiError::path_not_found)?,
        ["apis", g] => {
            if reg.versions_of(g).is_empty() {
                return Err(ApiError::path_not_found());
            }
            discovery::group_doc(&reg, g)
        }
        ["apis", g, v] => {
            discovery::resource_list(&reg, g, v).ok_or_else(ApiError::path_not_found)?
        }
        ["openapi", "v2"] => {
            let doc = crate::openapi_v2::document(&reg);
            if crate::openapi_v2::wants_protobuf(accept) {
                return Ok(Response::builder()
                    .status(200)
                    .header("Content-Type", crate::openapi_v2::PROTOBUF)
                    .header("Cache-Control", "no-cache, private")
                    .body(SimBody::Full(Some(Bytes::from(
                        crate::openapi_v2::to_protobuf(&doc),
                    ))))
                    .expect("valid response"));
            }
            doc
        }
        ["openapi", "v3"] => {
            let hash = format!("{:016X}", sim.store.current_rv());
            discovery::openapi_root(&reg, &hash)
        }
        ["openapi", "v3", rest @ ..] => {
            discovery::openapi_gv(&reg, &rest.join("/")).ok_or_else(ApiError::path_not_found)?
        }
        _ => return Err(ApiError::path_not_found()),
    };
    Ok(ok(&body))
}

fn resolve_type(sim: &Sim, info: &RequestInfo) -> ApiResult<Arc<ResourceType>> {
    let rt = sim
        .registry()
        .lookup(&info.group, &info.version, &info.resource)
        .ok_or_else(ApiError::path_not_found)?;
    if rt.namespaced
        && info.namespace.is_empty()
        && matches!(
            info.verb.as_str(),
            "create" | "update" | "patch" | "delete" | "get"
        )
    {
        return Err(ApiError::path_not_found());
    }
    if !rt.namespaced && !info.namespace.is_empty() && rt.kind != "Namespace" {
        return Err(ApiError::path_not_found());
    }
    Ok(rt)
}

fn parse_body(body: &[u8], content_type: &str) -> ApiResult<Value> {
    if body.is_empty() {
        return Ok(Value::Null);
    }
    if content_type.contains("protobuf") {
        // kubectl's typed clients send protobuf and do not fall back to JSON.
        return crate::protobuf::decode(body).map_err(|e| match e.status_code() {
            415 => ApiError::unsupported_media_type(e.to_string()),
            _ => ApiError::bad_request(e.to_string()),
        });
    }
    if content_type.contains("cbor") {
        return Err(ApiError::unsupported_media_type(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got {content_type})"
        )));
    }
    if content_type.contains("yaml") {
        serde_yaml_ng::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
    } else {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!(
                "the object provided is unrecognized (must be of type JSON): {e}"
            ))
        })
    }
}

fn field_manager(query: &Query, headers: &HeaderMap) -> String {
    if let Some(m) = query.get("fieldManager") {
        return m.to_string();
    }
    // Like the real server: the user agent up to the first "/".
    let ua = header(headers, "user-agent");
    ua.split('/')
        .next()
        .unwrap_or("")
        .chars()
        .take(128)
        .collect()
}

fn validation_policy(query: &Query) -> ApiResult<UnknownFieldPolicy> {
    match query.get("fieldValidation") {
        None | Some("") | Some("Warn") => Ok(UnknownFieldPolicy::Warn),
        Some("Strict") => Ok(UnknownFieldPolicy::Strict),
        Some("Ignore") => Ok(UnknownFieldPolicy::Ignore),
        Some(other) => Err(ApiError::bad_request(format!(
            "fieldValidation must be one of \"Ignore\", \"Warn\", or \"Strict\", got {other:?}"
        ))),
    }
}

fn dry_run(query: &Query) -> ApiResult<bool> {
    match query.all("dryRun") {
        [] => Ok(false),
        values if values.iter().all(|v| v == "All") => Ok(true),
        values => Err(ApiError::bad_request(format!(
            "Invalid value: {values:?}: supported values: \"All\""
        ))),
    }
}

#[allow(clippy::too_many_arguments)]
async fn resource(
    sim: &Arc<Sim>,
    user: &UserInfo,
    info: &RequestInfo,
    method: &Method,
    headers: &HeaderMap,
    query: &Query,
    body: &[u8],
    warnings: &crate::sim::Warnings,
    faults: RequestFaults,
) -> ApiResult<Resp> {
    let rt = resolve_type(sim, info)?;
    if rt.create_only {
        if info.verb != "create" {
            return Err(ApiError::method_not_allowed(
                "the server does not allow this method on the requested resource",
            ));
        }
        let body = parse_body(body, header(headers, "content-type"))?;
        return reviews(sim, user, info, &rt, body)
            .map(|v| json_response(201, &v, "application/json", &[]));
    }
    let ns = if rt.namespaced {
        info.namespace.as_str()
    } else {
        ""
    };
    let ctx = WriteCtx {
        user: user.clone(),
        dry_run: dry_run(query)?,
        field_manager: field_manager(query, headers),
        validation: validation_policy(query)?,
        subresource: info.subresource.clone(),
        internal: false,
        warnings: warnings.clone(),
    };
    let accept = header(headers, "accept");
    match info.subresource.as_str() {
        "" | "status" => {}
        "scale" if rt.subresources.contains(&"scale") => {
            return scale(sim, &ctx, &rt, ns, info, method, headers, body).await;
        }
        "finalize" if rt.kind == "Namespace" && method == Method::PUT => {
            let body = parse_body(body, header(headers, "content-type"))?;
            let fins = body
                .pointer("/spec/finalizers")
                .cloned()
                .unwrap_or(json!([]));
            let ctx = WriteCtx {
                subresource: String::new(),
                ..ctx
            };
            let out = sim
                .update_with(&ctx, &rt, "", &info.name, None, move |old| {
                    let mut v = (**old).clone();
                    v["spec"]["finalizers"] = fins.clone();
                    Ok(v)
                })
                .await?;
            return Ok(ok(&Sim::render(&rt, &out)));
        }
        _ => return Err(ApiError::path_not_found()),
    }
    if info.subresource == "status" && !rt.has_status() {
        return Err(ApiError::path_not_found());
    }
    let content_type = header(headers, "content-type");
    match info.verb.as_str() {
        "get" => {
            let obj = sim.get(&rt, ns, &info.name)?;
            let rendered = Sim::render(&rt, &obj);
            if table::wants_table(accept) {
                let meta = json!({"resourceVersion": meta_str(&rendered, "resourceVersion")});
                return Ok(ok(&table::to_table(
                    &rt,
                    &[rendered],
                    meta,
                    query.get("includeObject").unwrap_or("Metadata"),
                )));
            }
            Ok(ok(&rendered))
        }
        "list" => list(sim, &rt, ns, query, accept),
        "watch" => watch(sim, &rt, ns, query, table::wants_table(accept), faults).await,
        "create" => {
            let obj = parse_body(body, content_type)?;
            if !info.subresource.is_empty() {
                return Err(ApiError::method_not_allowed(
                    "create is not allowed on a subresource",
                ));
            }
            let out = sim.create(&ctx, &rt, ns, obj).await?;
            Ok(json_response(
                201,
                &Sim::render(&rt, &out),
                "application/json",
                &[],
            ))
        }
        "update" => {
            let obj = parse_body(body, content_type)?;
            let out = sim.replace(&ctx, &rt, ns, &info.name, obj).await?;
            Ok(ok(&Sim::render(&rt, &out)))
        }
        "patch" => {
            let kind = match content_type.split(';').next().unwrap_or("").trim() {
                "application/json-patch+json" => PatchKind::Json,
                "application/merge-patch+json" => PatchKind::Merge,
                "application/strategic-merge-patch+json" => PatchKind::Strategic,
                "application/apply-patch+yaml" | "application/apply-patch+json" => {
                    PatchKind::Apply {
                        force: query.flag("force"),
                    }
                }
                other => {
                    return Err(ApiError::unsupported_media_type(format!(
                        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml{}",
                        if rt.crd.is_none() { ", application/strategic-merge-patch+json" } else { "" }
                    ))
                    .with_details(json!({"causes": [{"message": other}]})));
                }
            };
            if !matches!(kind, PatchKind::Apply { .. }) && query.get("force").is_some() {
                return Err(ApiError::bad_request(
                    "force is only allowed for apply patches",
                ));
            }
            let patch_body = if matches!(kind, PatchKind::Apply { .. }) {
                parse_body(body, "yaml")?
            } else {
                parse_body(body, "json")?
            };
            let out = sim
                .patch(&ctx, &rt, ns, &info.name, kind, patch_body)
                .await?;
            Ok(ok(&Sim::render(&rt, &out)))
        }
        "delete" => {
            let opts = delete_options(query, body)?;
            match sim.delete(&ctx, &rt, ns, &info.name, &opts).await? {
                Deleted::Gone(status) => Ok(ok(&status)),
                Deleted::Pending(obj) => Ok(json_response(
                    202,
                    &Sim::render(&rt, &obj),
                    "application/json",
                    &[],
                )),
            }
        }
        "deletecollection" => {
            let opts = delete_options(query, body)?;
            let labels = LabelSelector::parse(query.get("labelSelector").unwrap_or(""))?;
            let fields =
                FieldSelector::parse(query.get("fieldSelector").unwrap_or(""), &field_labels(&rt))?;
            let (items, _) = sim.store.list(
                &rt.storage_key(),
                if rt.namespaced { Some(ns) } else { None },
                None,
            )?;
            let mut deleted = Vec::new();
            for item in items
                .iter()
                .filter(|o| labels.matches_object(o) && fields.matches(o))
            {
                match sim
                    .delete(
                        &ctx,
                        &rt,
                        meta_str(item, "namespace"),
                        meta_str(item, "name"),
                        &opts,
                    )
                    .await
                {
                    Ok(_) => deleted.push(Sim::render(&rt, item)),
                    Err(e) if e.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(ok(&json!({
                "kind": rt.list_kind(),
                "apiVersion": rt.api_version(),
                "metadata": {"resourceVersion": sim.store.current_rv().to_string()},
                "items": deleted
            })))
        }
        _ => Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        )),
    }
}

fn delete_options(query: &Query, body: &[u8]) -> ApiResult<DeleteOptions> {
    let mut opts = DeleteOptions {
        propagation: query.get("propagationPolicy").map(str::to_string),
        ..Default::default()
    };
    if let Some(orphan) = query.get("orphanDependents") {
        opts.propagation.get_or_insert_with(|| {
            if orphan == "true" {
                "Orphan".into()
            } else {
                "Background".into()
            }
        });
    }
    if !body.is_empty() {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?;
        if let Some(p) = v.get("propagationPolicy").and_then(Value::as_str) {
            opts.propagation = Some(p.to_string());
        }
        if let Some(o) = v.get("orphanDependents").and_then(Value::as_bool) {
            opts.propagation.get_or_insert_with(|| {
                if o {
                    "Orphan".into()
                } else {
                    "Background".into()
                }
            });
        }
        if let Some(uid) = v.pointer("/preconditions/uid").and_then(Value::as_str) {
            opts.precondition_uid = Some(uid.to_string());
        }
        if let Some(rv) = v
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
        {
            opts.precondition_rv = Some(rv.to_string());
        }
    }
    Ok(opts)
}

fn field_labels(rt: &ResourceType) -> Vec<String> {
    match &rt.crd {
        Some(crd) => crd.selectable_fields.clone(),
        None => builtin_field_labels(&rt.group, &rt.kind),
    }
}

/// Continue tokens: base64 of `{"rv": <list rv>, "start": "<ns>/<name>"}`.
fn encode_continue(rv: u64, ns: &str, name: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .encode(json!({"rv": rv, "start": format!("{ns}\u{0}{name}")}).to_string())
}

fn decode_continue(token: &str) -> ApiResult<(u64, String)> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(token)
        .map_err(|_| ApiError::bad_request("continue key is not valid: illegal base64 data"))?;
    let v: Value = serde_json::from_slice(&bytes)
        .map_err(|_| ApiError::bad_request("continue key is not valid"))?;
    Ok((
        v["rv"]
            .as_u64()
            .ok_or_else(|| ApiError::bad_request("continue key is not valid"))?,
        v["start"].as_str().unwrap_or("").to_string(),
    ))
}

fn list(
    sim: &Arc<Sim>,
    rt: &Arc<ResourceType>,
    ns: &str,
    query: &Query,
    accept: &str,
) -> ApiResult<Resp> {
    let labels = LabelSelector::parse(query.get("labelSelector").unwrap_or(""))?;
    let fields = FieldSelector::parse(query.get("fieldSelector").unwrap_or(""), &field_labels(rt))?;
    let limit: usize = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let (at, start) = match query.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let (rv, start) = decode_continue(token)?;
            (Some(rv), Some(start))
        }
        None => match (
            query.get("resourceVersion"),
            query.get("resourceVersionMatch"),
        ) {
            (Some(rv), Some("Exact")) => (
                Some(
                    rv.parse()
                        .map_err(|_| ApiError::bad_request("invalid resourceVersion"))?,
                ),
                None,
            ),
            (Some(rv), _) if !rv.is_empty() && rv != "0" => {
                // NotOlderThan: the latest state, which must be at least that new.
                let wanted: u64 = rv
                    .parse()
                    .map_err(|_| ApiError::bad_request("invalid resourceVersion"))?;
                let current = sim.store.current_rv();
                if wanted > current {
                    return Err(ApiError::timeout(format!(
                        "Too large resource version: {wanted}, current: {current}"
                    )));
                }
                (None, None)
            }
            _ => (None, None),
        },
    };
    let namespace = if rt.namespaced && !ns.is_empty() {
        Some(ns)
    } else {
        None
    };
    let (items, list_rv) = sim.store.list(&rt.storage_key(), namespace, at).map_err(|e| {
        if e.code == 410 && start.is_some() {
            ApiError::gone("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.")
        } else {
            e
        }
    })?;
    // Selectors see the object as this version renders it.
    let mut matching: Vec<Value> = items
        .iter()
        .map(|o| Sim::render(rt, o))
        .filter(|o| labels.matches_object(o) && fields.matches(o))
        .collect();
    if let Some(start) = &start {
        matching.retain(|o| {
            format!("{}\u{0}{}", meta_str(o, "namespace"), meta_str(o, "name")) > *start
        });
    }
    let total = matching.len();
    let page: Vec<Value> = matching.into_iter().take(limit).collect();
    let mut meta = json!({"resourceVersion": list_rv.to_string()});
    if total > page.len() {
        let last = page.last().expect("a non-empty page");
        meta["continue"] = json!(encode_continue(
            list_rv,
            meta_str(last, "namespace"),
            meta_str(last, "name")
        ));
        meta["remainingItemCount"] = json!(total - page.len());
    }
    if table::wants_table(accept) {
        return Ok(ok(&table::to_table(
            rt,
            &page,
            meta,
            query.get("includeObject").unwrap_or("Metadata"),
        )));
    }
    Ok(ok(&json!({
        "kind": rt.list_kind(),
        "apiVersion": rt.api_version(),
        "metadata": meta,
        "items": page
    })))
}

fn watch_event(kind: &str, object: &Value) -> Bytes {
    let mut line =
        serde_json::to_vec(&json!({"type": kind, "object": object})).expect("serializes");
    line.push(b'\n');
    Bytes::from(line)
}

async fn watch(
    sim: &Arc<Sim>,
    rt: &Arc<ResourceType>,
    ns: &str,
    query: &Query,
    as_table: bool,
    faults: RequestFaults,
) -> ApiResult<Resp> {
    // `kubectl get --watch` asks for Tables: every event object is a one-row Table.
    let include = query.get("includeObject").unwrap_or("Metadata").to_string();
    let render = {
        let rt = rt.clone();
        move |obj: &Value| -> Value {
            let rendered = Sim::render(&rt, obj);
            if as_table {
                let meta = json!({"resourceVersion": meta_str(&rendered, "resourceVersion")});
                table::to_table(&rt, &[rendered], meta, &include)
            } else {
                rendered
            }
        }
    };
    let labels = LabelSelector::parse(query.get("labelSelector").unwrap_or(""))?;
    let fields = FieldSelector::parse(query.get("fieldSelector").unwrap_or(""), &field_labels(rt))?;
    let bookmarks = query.flag("allowWatchBookmarks");
    let send_initial = query.flag("sendInitialEvents");
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let rv_param = query.get("resourceVersion").unwrap_or("");
    let key = rt.storage_key();
    let namespace = (rt.namespaced && !ns.is_empty()).then(|| ns.to_string());
    let (tx, rx) = mpsc::channel::<Bytes>(1024);
    let matches = {
        let labels = labels.clone();
        let fields = fields.clone();
        let key = key.clone();
        let namespace = namespace.clone();
        let rt = rt.clone();
        move |c: &Change, obj: &Value| -> bool {
            if c.key != key || namespace.as_deref().is_some_and(|n| n != c.namespace) {
                return false;
            }
            let rendered = Sim::render(&rt, obj);
            labels.matches_object(&rendered) && fields.matches(&rendered)
        }
    };
    // Initial state (synthetic ADDED events) for "most recent" and "any" starts.
    let mut initial: Vec<Bytes> = Vec::new();
    let (backlog, mut receiver, start_rv) = if rv_param.is_empty()
        || rv_param == "0"
        || send_initial
    {
        let (receiver, current) = sim.store.subscribe();
        let (items, _) = sim.store.list(&key, namespace.as_deref(), Some(current))?;
        for item in items.iter() {
            let rendered = Sim::render(rt, item);
            if labels.matches_object(&rendered) && fields.matches(&rendered) {
                initial.push(watch_event("ADDED", &render(item)));
            }
        }
        if send_initial {
            let mut marker = json!({"kind": rt.kind, "apiVersion": rt.api_version(),
                "metadata": {"resourceVersion": current.to_string(), "annotations": {"k8s.io/initial-events-end": "true"}}});
            if !bookmarks {
                marker = Value::Null;
            }
            if !marker.is_null() {
                initial.push(watch_event("BOOKMARK", &marker));
            }
        }
        (Vec::new(), receiver, current)
    } else {
        let rv: u64 = rv_param
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid resource version {rv_param:?}")))?;
        if !faults.exempt && sim.faults.resume_gone(&rt.group, &rt.plural, rv) {
            // Injected: the history was compacted while the client reconnected.
            sim.faults
                .count("watch", crate::faults::FaultKind::WatchGone);
            let e = ApiError::gone(format!(
                "too old resource version: {rv} ({})",
                sim.store.current_rv()
            ));
            return Ok(Response::builder()
                .status(200)
                .header("Content-Type", "application/json")
                .header("X-Kube-Sim-Watch-Gone", "1")
                .body(SimBody::Full(Some(watch_event("ERROR", &e.to_status()))))
                .expect("valid response"));
        }
        match sim.store.watch_from(&key, rv) {
            Ok((backlog, receiver, _)) => (backlog, receiver, rv),
            Err(e) if e.code == 410 => {
                // As a real server: a 200 response carrying one ERROR event.
                let ev = watch_event("ERROR", &e.to_status());
                return Ok(Response::builder()
                    .status(200)
                    .header("Content-Type", "application/json")
                    .body(SimBody::Full(Some(ev)))
                    .expect("valid response"));
            }
            Err(e) => return Err(e),
        }
    };
    let rt2 = rt.clone();
    let interval = sim.config.bookmark_interval;
    let sim2 = sim.clone();
    let end_after = match faults.plan {
        crate::faults::Plan::EndWatch { after_events } => {
            sim.faults
                .count("watch", crate::faults::FaultKind::WatchEnded);
            Some((after_events, sim.faults.watch_end_after()))
        }
        _ => None,
    };
    let exempt = faults.exempt;
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + timeout;
        let end_deadline = end_after.map(|(_, d)| tokio::time::Instant::now() + d);
        let mut last_rv = start_rv;
        let emit = |c: &Change, last_rv: &mut u64| -> Option<Bytes> {
            *last_rv = (*last_rv).max(c.rv);
            let now_matches = c.event != EventType::Deleted && matches(c, &c.object);
            let was_matching = c.previous.as_ref().is_some_and(|p| matches(c, p));
            let obj = render(&c.object);
            match c.event {
                EventType::Added if now_matches => Some(watch_event("ADDED", &obj)),
                EventType::Modified if now_matches && was_matching => {
                    Some(watch_event("MODIFIED", &obj))
                }
                EventType::Modified if now_matches => Some(watch_event("ADDED", &obj)),
                EventType::Modified if was_matching => Some(watch_event("DELETED", &obj)),
                EventType::Deleted if was_matching || matches(c, &c.object) => {
                    Some(watch_event("DELETED", &obj))
                }
                _ => None,
            }
        };
        let mut out = WatchSender {
            tx: tx.clone(),
            sim: sim2.clone(),
            exempt,
            end_after: end_after.map(|(n, _)| n),
            sent: 0,
            resume_rv: start_rv,
        };
        let ended = |rv: u64| {
            sim2.faults.watch_ended_at(&rt2.group, &rt2.plural, rv);
        };
        for chunk in initial {
            if !out.send(chunk, start_rv).await {
                if end_after.is_some() {
                    ended(out.resume_rv);
                }
                return;
            }
        }
        for c in &backlog {
            if let Some(chunk) = emit(c, &mut last_rv)
                && !out.send(chunk, c.rv).await
            {
                if end_after.is_some() {
                    ended(out.resume_rv);
                }
                return;
            }
        }
        let mut ticker = tokio::time::interval(interval);
        ticker.tick().await;
        let far = deadline + Duration::from_secs(3600);
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return,
                _ = tokio::time::sleep_until(end_deadline.unwrap_or(far)) => {
                    ended(out.resume_rv);
                    return;
                }
                _ = tx.closed() => return,
                _ = ticker.tick(), if bookmarks => {
                    let bm = json!({"kind": rt2.kind, "apiVersion": rt2.api_version(), "metadata": {"resourceVersion": last_rv.to_string()}});
                    if !out.send(watch_event("BOOKMARK", &bm), last_rv).await {
                        if end_after.is_some() {
                            ended(out.resume_rv);
                        }
                        return;
                    }
                }
                received = receiver.recv() => match received {
                    Ok(c) => {
                        if c.rv <= last_rv {
                            continue;
                        }
                        if let Some(chunk) = emit(&c, &mut last_rv)
                            && !out.send(chunk, c.rv).await
                        {
                            if end_after.is_some() {
                                ended(out.resume_rv);
                            }
                            return;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        let e = ApiError::gone(format!("too old resource version: {last_rv}"));
                        let _ = tx.send(watch_event("ERROR", &e.to_status())).await;
                        return;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    });
    Ok(Response::builder()
        .status(200)
        .header("Content-Type", "application/json")
        .header("Transfer-Encoding", "chunked")
        .body(SimBody::Stream(rx))
        .expect("valid response"))
}

/// Sends the chunks of one watch: held while a partition lasts (for a user
/// not exempt), and ended early by an injected fault.
struct WatchSender {
    tx: mpsc::Sender<Bytes>,
    sim: Arc<Sim>,
    exempt: bool,
    /// End after this many chunks (0: only by time).
    end_after: Option<usize>,
    sent: usize,
    /// The resourceVersion a client would resume from.
    resume_rv: u64,
}

impl WatchSender {
    /// Sends a chunk; false when the watch is over (the client went away,
    /// or an injected early end).
    async fn send(&mut self, chunk: Bytes, rv: u64) -> bool {
        if !self.exempt && self.sim.faults.partitioned() {
            self.sim.faults.wait_partition().await;
        }
        if self.tx.send(chunk).await.is_err() {
            return false;
        }
        self.sent += 1;
        self.resume_rv = rv;
        !matches!(self.end_after, Some(n) if n > 0 && self.sent >= n)
    }
}

/// The review kinds: access reviews and self-subject reviews.
fn reviews(
    sim: &Sim,
    user: &UserInfo,
    info: &RequestInfo,
    rt: &ResourceType,
    body: Value,
) -> ApiResult<Value> {
    let rbac_objects = StoreRbac(sim);
    let mut out = body.clone();
    out["apiVersion"] = json!(rt.api_version());
    out["kind"] = json!(rt.kind);
    if out.get("metadata").is_none() {
        out["metadata"] = json!({});
    }
    let attrs_from = |spec: &Value| -> Attributes {
        if let Some(ra) = spec.get("resourceAttributes") {
            let s = |k: &str| ra.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            Attributes {
                verb: s("verb"),
                api_group: s("group"),
                api_version: s("version"),
                resource: s("resource"),
                subresource: s("subresource"),
                name: s("name"),
                namespace: s("namespace"),
                resource_request: true,
                path: String::new(),
            }
        } else {
            let nra = spec
                .get("nonResourceAttributes")
                .cloned()
                .unwrap_or(json!({}));
            Attributes {
                verb: nra["verb"].as_str().unwrap_or("").to_string(),
                path: nra["path"].as_str().unwrap_or("").to_string(),
                resource_request: false,
                ..Attributes::default()
            }
        }
    };
    let spec = body.get("spec").cloned().unwrap_or(json!({}));
    let decide = |who: &UserInfo, attrs: &Attributes| -> Value {
        let eval = rbac::evaluate(&rbac_objects, who, attrs);
        let mut status = json!({"allowed": eval.allowed});
        if !eval.reason.is_empty() {
            status["reason"] = json!(eval.reason);
        }
        status
    };
    match rt.kind.as_str() {
        "SelfSubjectAccessReview" => {
            out["status"] = decide(user, &attrs_from(&spec));
        }
        "SubjectAccessReview" | "LocalSubjectAccessReview" => {
            let mut attrs = attrs_from(&spec);
            if rt.kind == "LocalSubjectAccessReview" {
                if !attrs.namespace.is_empty() && attrs.namespace != info.namespace {
                    return Err(ApiError::bad_request(
                        "spec.resourceAttributes.namespace must match metadata.namespace",
                    ));
                }
                attrs.namespace = info.namespace.clone();
            }
            let subject = UserInfo {
                name: spec["user"].as_str().unwrap_or("").to_string(),
                uid: spec["uid"].as_str().unwrap_or("").to_string(),
                groups: spec["groups"]
                    .as_array()
                    .map(|g| {
                        g.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
                extra: serde_json::from_value(spec["extra"].clone()).unwrap_or_default(),
            };
            out["status"] = decide(&subject, &attrs);
        }
        "SelfSubjectRulesReview" => {
            let ns = spec["namespace"].as_str().unwrap_or("");
            out["status"] = rbac::rules_review_status(&rbac_objects, user, ns);
        }
        "SelfSubjectReview" => {
            out["status"] = json!({"userInfo": {"username": user.name, "uid": user.uid, "groups": user.groups, "extra": user.extra}});
        }
        _ => return Err(ApiError::path_not_found()),
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
async fn scale(
    sim: &Arc<Sim>,
    ctx: &WriteCtx,
    rt: &Arc<ResourceType>,
    ns: &str,
    info: &RequestInfo,
    method: &Method,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<Resp> {
    let to_scale = |obj: &Value| -> Value {
        json!({
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                "name": meta_str(obj, "name"),
                "namespace": meta_str(obj, "namespace"),
                "uid": meta_str(obj, "uid"),
                "resourceVersion": meta_str(obj, "resourceVersion"),
                "creationTimestamp": meta_str(obj, "creationTimestamp"),
            },
            "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(1))},
            "status": {"replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0))}
        })
    };
    if *method == Method::GET {
        return Ok(ok(&to_scale(sim.get(rt, ns, &info.name)?.as_ref())));
    }
    let parsed = parse_body(body, header(headers, "content-type"))?;
    let is_patch = *method == Method::PATCH;
    let ctx = WriteCtx {
        subresource: String::new(),
        ..ctx.clone()
    };
    let out = sim
        .update_with(&ctx, rt, ns, &info.name, None, move |old| {
            let replicas = if is_patch {
                let mut s = to_scale(old);
                json_patch::merge(&mut s, &parsed);
                s.pointer("/spec/replicas").cloned()
            } else {
                parsed.pointer("/spec/replicas").cloned()
            };
            let mut v = (**old).clone();
            v["spec"]["replicas"] = replicas.unwrap_or(json!(0));
            Ok(v)
        })
        .await?;
    Ok(ok(&to_scale(&out)))
}
