//! The simulated control plane: storage plus the write pipeline every request
//! goes through (defaulting, validation, admission, optimistic concurrency,
//! managedFields), and the controllers a real cluster runs that clients depend
//! on: CRD establishment, namespace lifecycle, garbage collection and finalizers.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult, success_status};
use crate::rbac::{self, UserInfo};
use crate::registry::{Registry, ResourceType, StorageKey, types_from_crd};
use crate::schema::UnknownFieldPolicy;
use crate::store::{Change, EventType, Expect, Obj, Store, WriteError};
use crate::typeinfo::TypeNode;

/// Settings of a running simulator.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// `namespace/name` of a Service → `host:port` that webhook calls to it reach.
    pub service_map: HashMap<String, String>,
    /// Make workloads ready this long after they change (None: never).
    pub auto_ready: Option<Duration>,
    /// How often watches with `allowWatchBookmarks` get a BOOKMARK.
    pub bookmark_interval: Duration,
    /// Watch history per resource type, as the API server's watch cache
    /// keeps it: at least this many of the latest events (100 on a real
    /// server)...
    pub watch_history_min_events: usize,
    /// ...and every event younger than this (75 s on a real server). A
    /// watch or list from an older resourceVersion gets 410 Gone.
    pub watch_history_window: Duration,
    /// Whether CRDs become Established on their own (as on a real server).
    pub auto_establish_crds: bool,
    /// How long every request waits before it is handled, as on an API
    /// server with etcd behind it (zero: none).
    pub latency: Duration,
    /// Faults to inject (none by default); see [`crate::faults`].
    pub faults: crate::faults::FaultConfig,
    /// Requests the request log keeps (the oldest go first).
    pub request_log_capacity: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            service_map: HashMap::new(),
            auto_ready: None,
            bookmark_interval: Duration::from_secs(10),
            watch_history_min_events: 100,
            watch_history_window: Duration::from_secs(75),
            auto_establish_crds: true,
            latency: Duration::ZERO,
            faults: crate::faults::FaultConfig::default(),
            request_log_capacity: 100_000,
        }
    }
}

/// A metadata key the server-side apply path puts on the object it computed
/// (removed before anything else sees it): its managedFields are final, so
/// no `Update` entry is recorded on top of them.
const SSA_COMPUTED_MARK: &str = "__kubeSimServerSideApplied";

/// Who is writing, and how.
#[derive(Clone, Debug)]
pub struct WriteCtx {
    pub user: UserInfo,
    pub dry_run: bool,
    pub field_manager: String,
    pub validation: UnknownFieldPolicy,
    /// `""` for the main resource, `"status"` for the status subresource.
    pub subresource: String,
    /// Whether the write comes from the simulator's own controllers (no admission).
    pub internal: bool,
    /// Warnings for the response (`Warning` headers), shared by clones.
    pub warnings: Warnings,
}

/// Warnings collected while a request is handled (`Warning: 299 - "..."`
/// headers of the response). Clones share one list.
#[derive(Clone, Debug, Default)]
pub struct Warnings(Arc<std::sync::Mutex<Vec<String>>>);

impl Warnings {
    pub fn push(&self, warning: String) {
        let mut w = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if !w.contains(&warning) {
            w.push(warning);
        }
    }

    pub fn extend(&self, warnings: impl IntoIterator<Item = String>) {
        for w in warnings {
            self.push(w);
        }
    }

    /// The warnings so far (the list is emptied).
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Where a decode failure of a built-in kind surfaces, which decides its
/// status: a create or update body (400 `cannot be handled as a`), the
/// result of a JSON or merge patch (422 on field `patch` with the patched
/// JSON), or of a strategic merge patch (422 with the patch map).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DecodeShape {
    Body,
    JsonPatch,
    StrategicPatch,
}

impl WriteCtx {
    /// A write by one of the simulator's own controllers.
    pub fn internal(manager: &str) -> WriteCtx {
        WriteCtx {
            user: UserInfo {
                name: format!("system:{manager}"),
                uid: String::new(),
                groups: vec!["system:masters".into()],
                extra: BTreeMap::new(),
            },
            dry_run: false,
            field_manager: manager.to_string(),
            validation: UnknownFieldPolicy::Ignore,
            subresource: String::new(),
            internal: true,
            warnings: Warnings::default(),
        }
    }

    pub fn status(mut self) -> Self {
        self.subresource = "status".into();
        self
    }
}

/// Options of a delete request.
#[derive(Clone, Debug, Default)]
pub struct DeleteOptions {
    pub propagation: Option<String>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
}

/// The result of a delete.
#[derive(Debug)]
pub enum Deleted {
    /// Removed: the `Status` to answer (200).
    Gone(Value),
    /// Marked for deletion, waiting on finalizers: the object (202).
    Pending(Obj),
}

/// How a PATCH body is interpreted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchKind {
    Json,
    Merge,
    Strategic,
    Apply { force: bool },
}

/// Admission operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
        }
    }
}

const CRD_KEY_GROUP: &str = "apiextensions.k8s.io";
const CRD_CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

/// The simulated control plane.
pub struct Sim {
    pub(crate) store: Store,
    pub(crate) registry: RwLock<Registry>,
    pub(crate) tokens: HashMap<String, UserInfo>,
    pub(crate) config: SimConfig,
    pub(crate) server_address: RwLock<String>,
    pub(crate) runtime: tokio::runtime::Handle,
    pub(crate) impersonator: rbac::Impersonator,
    /// Requests served, per verb (`get`, `list`, `watch`, `create`,
    /// `update`, `patch`, `delete`, …; a non-resource request counts under
    /// its method).
    pub(crate) requests: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
    /// Fault injection, partitions and the request log.
    pub(crate) faults: crate::faults::Faults,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim").finish_non_exhaustive()
    }
}

/// RFC 3339 UTC with seconds, as Kubernetes writes timestamps.
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn new_uid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The random suffix of `generateName` (the apiserver's alphabet, 5 chars).
fn name_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    bytes[..5]
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

pub(crate) fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn meta_mut(obj: &mut Value) -> &mut serde_json::Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    obj["metadata"]
        .as_object_mut()
        .expect("metadata is an object")
}

fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn set_finalizers(obj: &mut Value, list: &[String]) {
    let meta = meta_mut(obj);
    if list.is_empty() {
        meta.remove("finalizers");
    } else {
        meta.insert("finalizers".into(), json!(list));
    }
}

fn is_deleting(obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
}

/// Everything but metadata and status: what a generation bump compares.
fn spec_part(obj: &Value, status_is_separate: bool) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        if status_is_separate {
            m.remove("status");
        }
    }
    v
}

impl Sim {
    pub(crate) fn new(
        config: SimConfig,
        tokens: HashMap<String, UserInfo>,
        runtime: tokio::runtime::Handle,
    ) -> Sim {
        let faults = crate::faults::Faults::new(config.faults.clone(), config.request_log_capacity);
        Sim {
            store: Store::new(config.watch_history_min_events, config.watch_history_window),
            registry: RwLock::new(Registry::builtin()),
            tokens,
            config,
            server_address: RwLock::new(String::new()),
            runtime,
            impersonator: rbac::Impersonator::new(),
            requests: std::sync::Mutex::default(),
            faults,
        }
    }

    /// Counts one request under `verb`.
    pub(crate) fn count_request(&self, verb: &str) {
        let mut counts = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        *counts.entry(verb.to_string()).or_default() += 1;
    }

    pub(crate) fn registry(&self) -> std::sync::RwLockReadGuard<'_, Registry> {
        self.registry.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Seeds what every real cluster has: system namespaces, their default
    /// ServiceAccounts and the bootstrap RBAC policy.
    pub(crate) async fn bootstrap(self: &Arc<Self>) {
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            self.internal_create(obj).await;
        }
        for obj in rbac::bootstrap_objects() {
            self.internal_create(obj).await;
        }
    }

    /// Creates an object as the simulator itself, ignoring "already exists".
    pub(crate) async fn internal_create(self: &Arc<Self>, obj: Value) -> Option<Obj> {
        let api_version = obj
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let kind = obj
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let rt = self.registry().by_kind(&api_version, &kind)?;
        let ns = meta_str(&obj, "namespace").to_string();
        let ctx = WriteCtx::internal("kube-sim");
        let name = meta_str(&obj, "name").to_string();
        match self.create(&ctx, &rt, &ns, obj).await {
            Ok(o) => Some(o),
            Err(e) if e.reason == "AlreadyExists" => None,
            Err(e) => {
                tracing::error!(kind = %kind, name = %name, error = %e, "kube-sim could not create a system object");
                None
            }
        }
    }

    /// The user a bearer token belongs to.
    pub fn authenticate(&self, token: &str) -> Option<UserInfo> {
        self.tokens.get(token).cloned()
    }

    // ------------------------------------------------------------------
    // Reads.
    // ------------------------------------------------------------------

    pub fn get(&self, rt: &ResourceType, ns: &str, name: &str) -> ApiResult<Obj> {
        self.store
            .get(&rt.storage_key(), ns, name)
            .ok_or_else(|| ApiError::not_found(&rt.storage_key(), name))
    }

    /// An object rendered at the version of `rt` (no conversion beyond
    /// `apiVersion`, as with CRD conversion strategy `None`).
    pub fn render(rt: &ResourceType, obj: &Value) -> Value {
        if crate::convert::is_events_v1(&rt.group, &rt.kind) {
            return crate::convert::event_from_core(obj.clone());
        }
        let mut out = obj.clone();
        out["apiVersion"] = json!(rt.api_version());
        out["kind"] = json!(rt.kind);
        out
    }

    // ------------------------------------------------------------------
    // Create.
    // ------------------------------------------------------------------

    pub async fn create(
        self: &Arc<Self>,
        ctx: &WriteCtx,
        rt: &Arc<ResourceType>,
        ns: &str,
        mut obj: Value,
    ) -> ApiResult<Obj> {
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request was not an object",
            ));
        }
        self.check_kind(rt, &obj)?;
        self.decode_builtin(ctx, rt, &mut obj, DecodeShape::Body, None)?;
        if crate::convert::is_events_v1(&rt.group, &rt.kind) {
            obj = crate::convert::event_to_core(obj);
        }
        let key = rt.storage_key();
        // Namespace and name.
        {
            let body_ns = meta_str(&obj, "namespace").to_string();
            if rt.namespaced {
                if !body_ns.is_empty() && !ns.is_empty() && body_ns != ns {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                let effective = if ns.is_empty() {
                    body_ns
                } else {
                    ns.to_string()
                };
                meta_mut(&mut obj).insert("namespace".into(), json!(effective));
            } else {
                meta_mut(&mut obj).remove("namespace");
            }
            if meta_str(&obj, "name").is_empty() {
                let generate = meta_str(&obj, "generateName").to_string();
                if !generate.is_empty() {
                    let name = format!("{generate}{}", name_suffix());
                    meta_mut(&mut obj).insert("name".into(), json!(name));
                }
            }
        }
        let ns = meta_str(&obj, "namespace").to_string();
        let name = meta_str(&obj, "name").to_string();
        if name.is_empty() {
            return Err(self.invalid(
                rt,
                "",
                vec![crate::validation::FieldError::required(
                    "metadata.name",
                    "name or generateName is required",
                )],
            ));
        }
        if rt.namespaced && !ctx.internal {
            self.check_namespace_open(rt, &ns, &name)?;
        }
        // System-managed metadata.
        {
            let meta = meta_mut(&mut obj);
            meta.insert("uid".into(), json!(new_uid()));
            meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
            meta.remove("resourceVersion");
            meta.remove("deletionTimestamp");
            meta.remove("deletionGracePeriodSeconds");
            meta.remove("selfLink");
            if rt.has_generation {
                meta.insert("generation".into(), json!(1));
            } else {
                meta.remove("generation");
            }
        }
        if rt.has_status() {
            match crate::defaults::initial_status(&rt.group, &rt.kind) {
                Some(s) => obj["status"] = s,
                None => {
                    if let Some(m) = obj.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
        }
        crate::defaults::apply(&rt.group, &rt.kind, &mut obj);
        let warnings = self.validate(rt, &mut obj, None, "", ctx.validation)?;
        ctx.warnings.extend(warnings);
        if !ctx.field_manager.is_empty() {
            obj = crate::ssa::record_update_with(
                None,
                &obj,
                &ctx.field_manager,
                None,
                &rt.type_node,
                &now_rfc3339(),
                &ssa_options(rt, ""),
            );
        }
        // Server-side normalisation after the field manager, as PrepareForCreate.
        crate::immutable::prepare_create(&rt.group, &rt.kind, &mut obj);
        if !ctx.internal {
            self.admit(ctx, rt, Operation::Create, &obj, None).await?;
        }
        if ctx.dry_run {
            return Ok(Arc::new(obj));
        }
        match self
            .store
            .write(&key, &ns, &name, Expect::Absent, Some(obj))
        {
            Ok(change) => {
                let out = change.object.clone();
                self.settle(change).await;
                Ok(out)
            }
            Err(WriteError::AlreadyExists) => Err(ApiError::already_exists(&key, &name)),
            Err(e) => Err(ApiError::internal(format!("storage: {e:?}"))),
        }
    }

    fn check_kind(&self, rt: &ResourceType, obj: &Value) -> ApiResult<()> {
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
        let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        if (!kind.is_empty() && kind != rt.kind)
            || (!api_version.is_empty() && api_version != rt.api_version())
        {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({api_version}) does not match the expected API version ({})",
                rt.api_version()
            )));
        }
        Ok(())
    }

    /// Decodes a built-in kind's object as the real server unmarshals it
    /// into the kind's Go struct (`godecode.rs`): a value of the wrong JSON
    /// type fails, unknown fields are dropped and, depending on
    /// `fieldValidation`, refused (Strict) or warned about (Warn). Writes of
    /// the simulator's own controllers and custom resources are left alone.
    pub(crate) fn decode_builtin(
        &self,
        ctx: &WriteCtx,
        rt: &ResourceType,
        obj: &mut Value,
        shape: DecodeShape,
        patch: Option<&Value>,
    ) -> ApiResult<()> {
        if ctx.internal || rt.crd.is_some() || !obj.is_object() {
            return Ok(());
        }
        let Some(def) = crate::godecode::definition(&rt.group, &rt.version, &rt.kind) else {
            return Ok(());
        };
        let before = (shape != DecodeShape::Body).then(|| obj.clone());
        let detail = match crate::godecode::decode(&def, obj) {
            Ok(d) if d.unknown.is_empty() => return Ok(()),
            Ok(d) => match ctx.validation {
                UnknownFieldPolicy::Strict => {
                    let msgs: Vec<String> = d
                        .unknown
                        .iter()
                        .map(|p| format!("unknown field {}", gofmt::quote(p)))
                        .collect();
                    format!("strict decoding error: {}", msgs.join(", "))
                }
                UnknownFieldPolicy::Warn => {
                    ctx.warnings.extend(
                        d.unknown
                            .iter()
                            .map(|p| format!("unknown field {}", gofmt::quote(p))),
                    );
                    return Ok(());
                }
                UnknownFieldPolicy::Ignore => return Ok(()),
            },
            Err(e) => e,
        };
        match shape {
            DecodeShape::Body => Err(ApiError::bad_request(format!(
                "{} in version {} cannot be handled as a {}: {detail}",
                rt.kind,
                gofmt::quote(&rt.version),
                rt.kind
            ))),
            DecodeShape::JsonPatch | DecodeShape::StrategicPatch => {
                // errors.NewInvalid(schema.GroupKind{}, "", field.Invalid("patch", <text>, err)).
                let text = match shape {
                    DecodeShape::JsonPatch => gofmt::marshal(before.as_ref().unwrap_or(obj)),
                    _ => crate::godecode::go_print_v(patch.unwrap_or(&Value::Null)),
                };
                let errors = vec![crate::validation::FieldError::invalid(
                    "patch",
                    Value::String(text),
                    detail,
                )];
                let message = crate::validation::invalid_message("", "", "", &errors);
                Err(ApiError::new(422, "Invalid", message)
                    .with_details(json!({"causes": crate::validation::causes(&errors)})))
            }
        }
    }

    /// Server-side apply of a built-in kind: the applied configuration must
    /// convert to the kind's typed object, or the request fails as on a real
    /// server (an error without a reason, HTTP 500: `failed to create typed
    /// patch object (ns/name; apps/v1, Kind=Deployment): .spec.foo: field not
    /// declared in schema`), whatever `fieldValidation` says.
    fn check_apply_config(
        &self,
        ctx: &WriteCtx,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        config: &Value,
    ) -> ApiResult<()> {
        if ctx.internal || rt.crd.is_some() {
            return Ok(());
        }
        let Some(def) = crate::godecode::definition(&rt.group, &rt.version, &rt.kind) else {
            return Ok(());
        };
        let ty = if ctx.subresource.is_empty() {
            rt.type_node.clone()
        } else {
            Arc::new(TypeNode::Any)
        };
        match crate::godecode::apply_errors(&def, config, &ty) {
            None => Ok(()),
            Some(errs) => Err(ApiError::new(
                500,
                "",
                format!(
                    "failed to create typed patch object ({ns}/{name}; {}/{}, Kind={}): {errs}",
                    rt.group, rt.version, rt.kind
                ),
            )),
        }
    }

    fn check_namespace_open(&self, rt: &ResourceType, ns: &str, name: &str) -> ApiResult<()> {
        let ns_key = StorageKey::new("", "namespaces");
        match self.store.get(&ns_key, "", ns) {
            None => Err(ApiError::not_found(&ns_key, ns)),
            Some(n) if is_deleting(&n) => Err(ApiError::forbidden(format!(
                "{} \"{}\" is forbidden: unable to create new content in namespace {} because it is being terminated",
                rt.storage_key().qualified(),
                name,
                ns
            ))
            .with_details(json!({
                "name": name,
                "kind": rt.plural,
                "causes": [{"reason": "NamespaceTerminating", "message": format!("namespace {ns} is being terminated"), "field": "metadata.namespace"}]
            }))),
            Some(_) => Ok(()),
        }
    }

    fn invalid(
        &self,
        rt: &ResourceType,
        name: &str,
        errors: Vec<crate::validation::FieldError>,
    ) -> ApiError {
        let message = crate::validation::invalid_message(&rt.kind, &rt.group, name, &errors);
        ApiError::invalid(
            &rt.kind,
            &rt.group,
            name,
            message,
            crate::validation::causes(&errors),
        )
    }

    /// Schema and metadata validation; returns warnings. Unknown fields under
    /// `fieldValidation=Strict` are a 400 strict decoding error, everything else
    /// a 422 with field causes. Updates of built-in kinds through the main
    /// resource (not `subresource` status) also get the update rules of their
    /// kind (immutable fields, `immutable.rs`).
    fn validate(
        &self,
        rt: &ResourceType,
        obj: &mut Value,
        old: Option<&Value>,
        subresource: &str,
        policy: UnknownFieldPolicy,
    ) -> ApiResult<Vec<String>> {
        use crate::validation::{ErrorKind, NameRule};
        let name = meta_str(obj, "name").to_string();
        let result = match rt.crd.as_ref().and_then(|c| c.compiled.as_ref()) {
            Some(compiled) => compiled.validate_custom_resource(obj, old, policy, rt.namespaced),
            None => {
                let rule = match (rt.group.as_str(), rt.kind.as_str()) {
                    ("", "Namespace") => NameRule::Dns1123Label,
                    ("", "Service") => NameRule::Dns1035Label,
                    ("rbac.authorization.k8s.io", _) => NameRule::PathSegment,
                    _ => NameRule::Dns1123Subdomain,
                };
                let mut errors = crate::validation::validate_object_meta(
                    obj.get("metadata").unwrap_or(&Value::Null),
                    rt.namespaced,
                    rule,
                );
                if let Some(old) = old
                    && subresource.is_empty()
                {
                    errors.extend(crate::immutable::validate_update(
                        &rt.group, &rt.kind, obj, old,
                    ));
                }
                if errors.is_empty() {
                    Ok(Vec::new())
                } else {
                    Err(errors)
                }
            }
        };
        match result {
            Ok(warnings) => Ok(warnings),
            Err(errors)
                if errors
                    .iter()
                    .all(|e| matches!(e.kind, ErrorKind::UnknownField)) =>
            {
                Err(ApiError::bad_request(
                    crate::validation::strict_decoding_message(&rt.kind, &rt.version, &errors),
                ))
            }
            Err(errors) => Err(self.invalid(rt, &name, errors)),
        }
    }

    // ------------------------------------------------------------------
    // Update and patch.
    // ------------------------------------------------------------------

    /// PUT: replaces the main resource or its status.
    pub async fn replace(
        self: &Arc<Self>,
        ctx: &WriteCtx,
        rt: &Arc<ResourceType>,
        ns: &str,
        name: &str,
        body: Value,
    ) -> ApiResult<Obj> {
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request was not an object",
            ));
        }
        self.check_kind(rt, &body)?;
        let body_name = meta_str(&body, "name");
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let precondition: Option<u64> =
            match meta_str(&body, "resourceVersion") {
                "" => None,
                rv => Some(rv.parse().map_err(|_| {
                    ApiError::bad_request(format!("invalid resourceVersion {rv:?}"))
                })?),
            };
        let mut body = body;
        self.decode_builtin(ctx, rt, &mut body, DecodeShape::Body, None)?;
        let body = if crate::convert::is_events_v1(&rt.group, &rt.kind) {
            crate::convert::event_to_core(body)
        } else {
            body
        };
        let body = Arc::new(body);
        self.update_with(ctx, rt, ns, name, precondition, move |_old| {
            Ok((*body).clone())
        })
        .await
    }

    /// PATCH: json, merge, strategic merge or server-side apply.
    pub async fn patch(
        self: &Arc<Self>,
        ctx: &WriteCtx,
        rt: &Arc<ResourceType>,
        ns: &str,
        name: &str,
        kind: PatchKind,
        body: Value,
    ) -> ApiResult<Obj> {
        let key = rt.storage_key();
        if let PatchKind::Apply { force } = kind {
            if ctx.field_manager.is_empty() {
                return Err(ApiError::bad_request(
                    "PATCH, application/apply-patch+yaml requires fieldManager parameter",
                ));
            }
            if !body.is_object() {
                return Err(ApiError::bad_request(
                    "the body of the request was not an object",
                ));
            }
            self.check_kind(rt, &body)?;
            let body_name = meta_str(&body, "name");
            if body_name != name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({body_name}) does not match the name on the URL ({name})"
                )));
            }
            self.check_apply_config(ctx, rt, ns, name, &body)?;
            if self.store.get(&key, ns, name).is_none() && ctx.subresource.is_empty() {
                // Apply creates the object when it does not exist.
                let config = body.clone();
                let created = crate::ssa::apply_with(
                    None,
                    &config,
                    &ctx.field_manager,
                    None,
                    force,
                    &rt.type_node,
                    &now_rfc3339(),
                    &ssa_options(rt, ""),
                )
                .map_err(|e| self.apply_error(rt, name, e))?;
                let create_ctx = WriteCtx {
                    field_manager: String::new(),
                    ..ctx.clone()
                };
                match self.create(&create_ctx, rt, ns, created).await {
                    Err(e) if e.reason == "AlreadyExists" => {} // raced: apply onto it
                    other => return other,
                }
            }
            let manager = ctx.field_manager.clone();
            let sub = ctx.subresource.clone();
            let ty = rt.type_node.clone();
            let options = ssa_options(rt, &ctx.subresource);
            let this = self.clone();
            let rt2 = rt.clone();
            let name2 = name.to_string();
            return self
                .update_with(ctx, rt, ns, name, None, move |old| {
                    let mut config = body.clone();
                    if !sub.is_empty() {
                        // Only status is applied through the status subresource.
                        let status = config.get("status").cloned();
                        if let Some(m) = config.as_object_mut() {
                            m.retain(|k, _| {
                                matches!(k.as_str(), "apiVersion" | "kind" | "metadata")
                            });
                            if let Some(s) = status {
                                m.insert("status".into(), s);
                            }
                        }
                    }
                    let sub_opt = if sub.is_empty() {
                        None
                    } else {
                        Some(sub.as_str())
                    };
                    // events.k8s.io Events apply in their own shape, stored as core Events.
                    let events = crate::convert::is_events_v1(&rt2.group, &rt2.kind);
                    let live = if events {
                        crate::convert::event_from_core((**old).clone())
                    } else {
                        (**old).clone()
                    };
                    let applied = crate::ssa::apply_with(
                        Some(&live),
                        &config,
                        &manager,
                        sub_opt,
                        force,
                        &ty,
                        &now_rfc3339(),
                        &options,
                    )
                    .map_err(|e| this.apply_error(&rt2, &name2, e))?;
                    let mut applied = if events {
                        crate::convert::event_to_core(applied)
                    } else {
                        applied
                    };
                    if let Some(m) = applied.get_mut("metadata").and_then(Value::as_object_mut) {
                        m.insert(SSA_COMPUTED_MARK.into(), Value::Bool(true));
                    }
                    Ok(applied)
                })
                .await;
        }
        let ty = rt.type_node.clone();
        let is_crd_type = rt.crd.is_some();
        let events = crate::convert::is_events_v1(&rt.group, &rt.kind);
        let body = Arc::new(body);
        let this = self.clone();
        let rt2 = rt.clone();
        let ctx2 = ctx.clone();
        self.update_with(ctx, rt, ns, name, None, move |old| {
            // events.k8s.io Events are patched in their own shape, stored as core Events.
            let view;
            let old_v: &Value = if events {
                view = crate::convert::event_from_core((**old).clone());
                &view
            } else {
                old
            };
            let patched = match kind {
                PatchKind::Merge => {
                    let mut out = old_v.clone();
                    json_patch::merge(&mut out, &body);
                    Ok(out)
                }
                PatchKind::Json => {
                    let ops: json_patch::Patch = serde_json::from_value((*body).clone())
                        .map_err(|e| ApiError::bad_request(format!("the server rejected our request due to an error in our request: {e}")))?;
                    let mut out = old_v.clone();
                    json_patch::patch(&mut out, &ops).map_err(|e| {
                        ApiError::new(422, "Invalid", format!("the server rejected our request due to an error in our request: {e}"))
                    })?;
                    Ok(out)
                }
                PatchKind::Strategic => {
                    if is_crd_type {
                        return Err(ApiError::unsupported_media_type(
                            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
                        ));
                    }
                    crate::smp::strategic_merge_patch(old_v, &body, &ty).map_err(|e| {
                        let code = e.status_code();
                        let reason = match code {
                            400 => "BadRequest",
                            422 => "Invalid",
                            _ => "InternalError",
                        };
                        ApiError::new(code, reason, e.to_string())
                    })
                }
                PatchKind::Apply { .. } => unreachable!("handled above"),
            }?;
            let mut patched = patched;
            let shape = if kind == PatchKind::Strategic {
                DecodeShape::StrategicPatch
            } else {
                DecodeShape::JsonPatch
            };
            this.decode_builtin(&ctx2, &rt2, &mut patched, shape, Some(&body))?;
            Ok(if events {
                crate::convert::event_to_core(patched)
            } else {
                patched
            })
        })
        .await
    }

    fn apply_error(&self, rt: &ResourceType, name: &str, e: crate::ssa::ApplyError) -> ApiError {
        match e {
            crate::ssa::ApplyError::Conflicts(conflicts) => {
                let causes: Vec<Value> = conflicts
                    .iter()
                    .map(|c| {
                        json!({
                            "reason": "FieldManagerConflict",
                            "message": c.cause_message(),
                            "field": c.field,
                        })
                    })
                    .collect();
                let message = crate::ssa::ApplyError::Conflicts(conflicts).to_string();
                let mut d = json!({"name": name, "kind": rt.plural, "causes": causes});
                if !rt.group.is_empty() {
                    d["group"] = json!(rt.group);
                }
                ApiError::new(409, "Conflict", message).with_details(d)
            }
            crate::ssa::ApplyError::Invalid(m) => ApiError::new(422, "Invalid", m),
        }
    }

    /// The shared update loop: read, compute the new object, prepare, validate,
    /// admit, write with optimistic concurrency; retried on a lost race unless the
    /// caller gave a resourceVersion precondition.
    pub async fn update_with<F>(
        self: &Arc<Self>,
        ctx: &WriteCtx,
        rt: &Arc<ResourceType>,
        ns: &str,
        name: &str,
        precondition: Option<u64>,
        compute: F,
    ) -> ApiResult<Obj>
    where
        F: Fn(&Obj) -> ApiResult<Value>,
    {
        let key = rt.storage_key();
        for _ in 0..16 {
            let old = self
                .store
                .get(&key, ns, name)
                .ok_or_else(|| ApiError::not_found(&key, name))?;
            let old_rv: u64 = meta_str(&old, "resourceVersion").parse().unwrap_or(0);
            if let Some(p) = precondition
                && p != old_rv
            {
                return Err(ApiError::conflict(&key, name));
            }
            let computed = compute(&old)?;
            let mut new = self.prepare_update(ctx, rt, &old, computed)?;
            if new == *old.as_ref() && !ctx.dry_run {
                // Nothing changed: no write, no new resourceVersion (as a real server).
                return Ok(old);
            }
            let warnings =
                self.validate(rt, &mut new, Some(&old), &ctx.subresource, ctx.validation)?;
            ctx.warnings.extend(warnings);
            if !ctx.internal {
                self.admit(ctx, rt, Operation::Update, &new, Some(&old))
                    .await?;
            }
            if ctx.dry_run {
                return Ok(Arc::new(new));
            }
            // Finalizers emptied on a deleting object: the update completes the deletion.
            let remove = is_deleting(&new) && finalizers(&new).is_empty() && rt.kind != "Namespace";
            let result = if remove {
                self.store
                    .write(&key, ns, name, Expect::Version(old_rv), None)
            } else {
                self.store
                    .write(&key, ns, name, Expect::Version(old_rv), Some(new))
            };
            match result {
                Ok(change) => {
                    let out = change.object.clone();
                    self.settle(change).await;
                    return Ok(out);
                }
                Err(WriteError::Conflict) if precondition.is_none() => continue,
                Err(WriteError::Conflict) => return Err(ApiError::conflict(&key, name)),
                Err(WriteError::NotFound) => return Err(ApiError::not_found(&key, name)),
                Err(WriteError::AlreadyExists) => {
                    return Err(ApiError::internal("storage: unexpected state"));
                }
            }
        }
        Err(ApiError::conflict(&key, name))
    }

    /// Applies the server-side rules of an update to a computed object.
    fn prepare_update(
        &self,
        ctx: &WriteCtx,
        rt: &ResourceType,
        old: &Value,
        mut new: Value,
    ) -> ApiResult<Value> {
        if !new.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request was not an object",
            ));
        }
        // Set by the server-side apply path: its managedFields are final,
        // even when they equal the old ones (same fields, same second).
        let ssa_computed = new
            .get_mut("metadata")
            .and_then(Value::as_object_mut)
            .and_then(|m| m.remove(SSA_COMPUTED_MARK))
            .is_some();
        new["apiVersion"] = old["apiVersion"].clone();
        new["kind"] = old["kind"].clone();
        let status_separate = rt.has_status();
        match ctx.subresource.as_str() {
            "status" => {
                // Only status (and nothing else) changes through the status subresource.
                let mut merged = old.clone();
                match new.get("status") {
                    Some(s) => merged["status"] = s.clone(),
                    None => {
                        if let Some(m) = merged.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
                if let Some(mf) = new.pointer("/metadata/managedFields").cloned() {
                    meta_mut(&mut merged).insert("managedFields".into(), mf);
                }
                new = merged;
            }
            _ if status_separate => {
                // The main resource ignores status changes.
                match old.get("status") {
                    Some(s) => new["status"] = s.clone(),
                    None => {
                        if let Some(m) = new.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
            _ => {}
        }
        // Immutable and system-managed metadata.
        {
            let old_meta = old.get("metadata").cloned().unwrap_or_else(|| json!({}));
            let meta = meta_mut(&mut new);
            for field in [
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "resourceVersion",
            ] {
                match old_meta.get(field) {
                    Some(v) => {
                        meta.insert(field.into(), v.clone());
                    }
                    None => {
                        meta.remove(field);
                    }
                }
            }
            meta.remove("selfLink");
        }
        crate::defaults::apply(&rt.group, &rt.kind, &mut new);
        if ctx.subresource.is_empty() {
            // What the registry fills in from the stored object (Service cluster IPs).
            crate::immutable::prepare_update(&rt.group, &rt.kind, &mut new, old);
        }
        // A deleting object may only lose finalizers, never gain new ones.
        if is_deleting(old) {
            let old_f = finalizers(old);
            let new_f = finalizers(&new);
            if new_f.iter().any(|f| !old_f.contains(f)) {
                return Err(self.invalid(
                    rt,
                    meta_str(old, "name"),
                    vec![crate::validation::FieldError::forbidden(
                        "metadata.finalizers",
                        "no new finalizers can be added if the object is being deleted",
                    )],
                ));
            }
        }
        if rt.has_generation && spec_part(old, status_separate) != spec_part(&new, status_separate)
        {
            let g = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            meta_mut(&mut new).insert("generation".into(), json!(g + 1));
        }
        // managedFields: apply computed them already; every other write records an Update.
        let applied = ssa_computed
            || (new.pointer("/metadata/managedFields").is_some()
                && new.pointer("/metadata/managedFields")
                    != old.pointer("/metadata/managedFields"));
        if !applied && !ctx.field_manager.is_empty() {
            if let Some(mf) = old.pointer("/metadata/managedFields").cloned() {
                meta_mut(&mut new).insert("managedFields".into(), mf);
            }
            let sub = if ctx.subresource.is_empty() {
                None
            } else {
                Some(ctx.subresource.as_str())
            };
            new = crate::ssa::record_update_with(
                Some(old),
                &new,
                &ctx.field_manager,
                sub,
                &rt.type_node,
                &now_rfc3339(),
                &ssa_options(rt, &ctx.subresource),
            );
        } else if !applied {
            match old.pointer("/metadata/managedFields").cloned() {
                Some(mf) => {
                    meta_mut(&mut new).insert("managedFields".into(), mf);
                }
                None => {
                    meta_mut(&mut new).remove("managedFields");
                }
            }
        }
        Ok(new)
    }

    // ------------------------------------------------------------------
    // Delete.
    // ------------------------------------------------------------------

    pub async fn delete(
        self: &Arc<Self>,
        ctx: &WriteCtx,
        rt: &Arc<ResourceType>,
        ns: &str,
        name: &str,
        opts: &DeleteOptions,
    ) -> ApiResult<Deleted> {
        let key = rt.storage_key();
        for _ in 0..16 {
            let old = self
                .store
                .get(&key, ns, name)
                .ok_or_else(|| ApiError::not_found(&key, name))?;
            if let Some(uid) = &opts.precondition_uid
                && uid != meta_str(&old, "uid")
            {
                return Err(ApiError::conflict_msg(
                    &key,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        meta_str(&old, "uid")
                    ),
                ));
            }
            if let Some(rv) = &opts.precondition_rv
                && rv != meta_str(&old, "resourceVersion")
            {
                return Err(ApiError::conflict_msg(
                    &key,
                    name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                        meta_str(&old, "resourceVersion")
                    ),
                ));
            }
            if !ctx.internal {
                self.admit(ctx, rt, Operation::Delete, &Value::Null, Some(&old))
                    .await?;
            }
            let old_rv: u64 = meta_str(&old, "resourceVersion").parse().unwrap_or(0);
            let mut fins = finalizers(&old);
            match opts.propagation.as_deref() {
                Some("Foreground") if !fins.iter().any(|f| f == "foregroundDeletion") => {
                    fins.push("foregroundDeletion".into())
                }
                Some("Orphan") if !fins.iter().any(|f| f == "orphan") => fins.push("orphan".into()),
                Some("Foreground" | "Orphan" | "Background") | None => {}
                Some(other) => {
                    return Err(ApiError::bad_request(format!(
                        "invalid propagationPolicy {other:?}"
                    )));
                }
            }
            let namespace_kind = rt.group.is_empty() && rt.kind == "Namespace";
            if fins.is_empty() && !namespace_kind {
                if ctx.dry_run {
                    return Ok(Deleted::Gone(success_status(
                        &key,
                        name,
                        meta_str(&old, "uid"),
                    )));
                }
                match self
                    .store
                    .write(&key, ns, name, Expect::Version(old_rv), None)
                {
                    Ok(change) => {
                        let uid = meta_str(&old, "uid").to_string();
                        self.settle(change).await;
                        return Ok(Deleted::Gone(success_status(&key, name, &uid)));
                    }
                    Err(WriteError::Conflict) => continue,
                    Err(_) => return Err(ApiError::not_found(&key, name)),
                }
            }
            if is_deleting(&old) && fins == finalizers(&old) {
                return Ok(Deleted::Pending(old));
            }
            let mut new = (*old).clone();
            set_finalizers(&mut new, &fins);
            if !is_deleting(&old) {
                let meta = meta_mut(&mut new);
                meta.insert("deletionTimestamp".into(), json!(now_rfc3339()));
                meta.insert("deletionGracePeriodSeconds".into(), json!(0));
                if rt.has_generation {
                    let g = meta.get("generation").and_then(Value::as_i64).unwrap_or(0);
                    meta.insert("generation".into(), json!(g + 1));
                }
            }
            if namespace_kind {
                new["status"]["phase"] = json!("Terminating");
            }
            if ctx.dry_run {
                return Ok(Deleted::Pending(Arc::new(new)));
            }
            match self
                .store
                .write(&key, ns, name, Expect::Version(old_rv), Some(new))
            {
                Ok(change) => {
                    let out = change.object.clone();
                    self.settle(change).await;
                    return Ok(Deleted::Pending(out));
                }
                Err(WriteError::Conflict) => continue,
                Err(_) => return Err(ApiError::not_found(&key, name)),
            }
        }
        Err(ApiError::conflict(&key, name))
    }

    // ------------------------------------------------------------------
    // Controllers that run after every commit.
    // ------------------------------------------------------------------

    /// Runs the follow-up work of a committed change (and of the changes that
    /// work commits in turn) until nothing is left to do.
    pub(crate) fn settle(
        self: &Arc<Self>,
        first: Arc<Change>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        // Boxed: the controllers write through the same pipeline, which settles again.
        Box::pin(async move {
            let mut queue: VecDeque<Arc<Change>> = VecDeque::from([first]);
            let mut steps = 0;
            while let Some(change) = queue.pop_front() {
                steps += 1;
                if steps > 100_000 {
                    tracing::error!("settle did not converge");
                    break;
                }
                let follow_ups = self.react(&change).await;
                queue.extend(follow_ups);
            }
        })
    }

    async fn react(self: &Arc<Self>, change: &Arc<Change>) -> Vec<Arc<Change>> {
        let mut out = Vec::new();
        let key = &change.key;
        if key.group == CRD_KEY_GROUP && key.resource == "customresourcedefinitions" {
            out.extend(self.react_crd(change).await);
        }
        if key.group.is_empty() && key.resource == "namespaces" {
            out.extend(self.react_namespace(change).await);
        }
        if change.event == EventType::Deleted {
            out.extend(self.collect_garbage(change).await);
            if !change.namespace.is_empty() {
                out.extend(self.finish_namespace_if_empty(&change.namespace).await);
            }
        } else if is_deleting(&change.object) {
            let fins = finalizers(&change.object);
            if fins.iter().any(|f| f == "orphan") {
                out.extend(self.orphan_dependents(change).await);
            }
            if fins.iter().any(|f| f == "foregroundDeletion") {
                out.extend(self.foreground_delete(change).await);
            }
        }
        // A dependent went away: an owner in foreground deletion may be done.
        if change.event == EventType::Deleted {
            for owner in owner_refs(&change.object) {
                out.extend(
                    self.recheck_foreground_owner(&change.namespace, &owner)
                        .await,
                );
            }
        }
        if change.event != EventType::Deleted && self.config.auto_ready.is_some() {
            crate::workloads::schedule_auto_ready(self, change);
        }
        out
    }

    async fn react_crd(self: &Arc<Self>, change: &Arc<Change>) -> Vec<Arc<Change>> {
        let crd = &change.object;
        let name = change.name.clone();
        let out = Vec::new();
        let rt = self
            .registry()
            .by_kind("apiextensions.k8s.io/v1", "CustomResourceDefinition")
            .expect("CRDs are built in");
        if change.event == EventType::Deleted {
            self.registry
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .set_crd(&name, vec![]);
            return out;
        }
        if is_deleting(crd) {
            // Delete every instance; the finalizer goes once none are left.
            let types = types_from_crd(crd).unwrap_or_default();
            let Some(t) = types.first().cloned() else {
                return out;
            };
            let (items, _) = self
                .store
                .list(&t.storage_key(), None, None)
                .unwrap_or_default();
            let ctx = WriteCtx::internal("customresourcecleanup");
            for item in &items {
                if !is_deleting(item) {
                    let _ = self
                        .delete(
                            &ctx,
                            &t,
                            meta_str(item, "namespace"),
                            meta_str(item, "name"),
                            &DeleteOptions::default(),
                        )
                        .await;
                }
            }
            let (left, _) = self
                .store
                .list(&t.storage_key(), None, None)
                .unwrap_or_default();
            if left.is_empty() {
                // A failure here is retried by the next change of the CRD.
                let _ = self
                    .update_with(&ctx, &rt, "", &name, None, |old| {
                        let mut v = (**old).clone();
                        let f: Vec<String> = finalizers(&v)
                            .into_iter()
                            .filter(|f| f != CRD_CLEANUP_FINALIZER)
                            .collect();
                        set_finalizers(&mut v, &f);
                        Ok(v)
                    })
                    .await;
            }
            return out;
        }
        // Created or changed: serve it, once Established.
        match types_from_crd(crd) {
            Ok(types) => {
                let established = crd
                    .pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c["type"] == "Established" && c["status"] == "True")
                    });
                if established {
                    self.registry
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .set_crd(&name, types);
                } else if self.config.auto_establish_crds {
                    let ctx = WriteCtx::internal("apiextensions-controller");
                    let _ = self
                        .update_with(&ctx, &rt, "", &name, None, |old| {
                            let mut v = (**old).clone();
                            let mut f = finalizers(&v);
                            if !f.iter().any(|x| x == CRD_CLEANUP_FINALIZER) {
                                f.push(CRD_CLEANUP_FINALIZER.into());
                            }
                            set_finalizers(&mut v, &f);
                            Ok(v)
                        })
                        .await;
                    let _ = self.establish_crd(&name).await;
                }
            }
            Err(e) => {
                tracing::warn!(crd = %name, error = %e, "CRD cannot be served");
            }
        }
        out
    }

    /// Marks a CRD NamesAccepted and Established (what the apiextensions
    /// controllers do on a real server); it is served from then on.
    pub async fn establish_crd(self: &Arc<Self>, name: &str) -> ApiResult<Obj> {
        let rt = self
            .registry()
            .by_kind("apiextensions.k8s.io/v1", "CustomResourceDefinition")
            .expect("CRDs are built in");
        let ctx = WriteCtx::internal("apiextensions-controller").status();
        self.update_with(&ctx, &rt, "", name, None, |old| {
            let mut v = (**old).clone();
            let now = now_rfc3339();
            let names = v.pointer("/spec/names").cloned().unwrap_or(json!({}));
            let mut accepted = names.clone();
            if accepted.get("listKind").is_none() {
                let kind = names.get("kind").and_then(Value::as_str).unwrap_or("");
                accepted["listKind"] = json!(format!("{kind}List"));
            }
            if accepted.get("singular").is_none() {
                let kind = names.get("kind").and_then(Value::as_str).unwrap_or("");
                accepted["singular"] = json!(kind.to_ascii_lowercase());
            }
            let stored: Vec<Value> = v
                .pointer("/spec/versions")
                .and_then(Value::as_array)
                .map(|vs| {
                    vs.iter()
                        .filter(|x| x["storage"] == true)
                        .map(|x| x["name"].clone())
                        .collect()
                })
                .unwrap_or_default();
            v["status"] = json!({
                "acceptedNames": accepted,
                "storedVersions": stored,
                "conditions": [
                    {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now},
                    {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now}
                ]
            });
            Ok(v)
        })
        .await
    }

    async fn react_namespace(self: &Arc<Self>, change: &Arc<Change>) -> Vec<Arc<Change>> {
        let ns = change.name.clone();
        if change.event == EventType::Added {
            // The service-account controller gives every namespace a "default" SA.
            let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": ns}});
            self.internal_create(sa).await;
            return vec![];
        }
        if change.event == EventType::Modified && is_deleting(&change.object) {
            // The namespace controller deletes everything inside.
            let contents = self.store.namespaces_in_use(&ns);
            let ctx = WriteCtx::internal("namespace-controller");
            for (key, name) in contents {
                let Some(rt) = self.registry().any_version(&key.group, &key.resource) else {
                    continue;
                };
                if let Some(obj) = self.store.get(&key, &ns, &name)
                    && !is_deleting(&obj)
                {
                    let _ = self
                        .delete(&ctx, &rt, &ns, &name, &DeleteOptions::default())
                        .await;
                }
            }
            return self.finish_namespace_if_empty(&ns).await;
        }
        vec![]
    }

    /// Removes a terminating namespace once nothing is left in it.
    async fn finish_namespace_if_empty(self: &Arc<Self>, ns: &str) -> Vec<Arc<Change>> {
        let ns_key = StorageKey::new("", "namespaces");
        let Some(namespace) = self.store.get(&ns_key, "", ns) else {
            return vec![];
        };
        if !is_deleting(&namespace) || !self.store.namespaces_in_use(ns).is_empty() {
            return vec![];
        }
        // Drop the "kubernetes" spec finalizer; with no metadata finalizers left the
        // namespace is removed.
        let rv: u64 = meta_str(&namespace, "resourceVersion").parse().unwrap_or(0);
        let mut new = (*namespace).clone();
        if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert("finalizers".into(), json!([]));
        }
        let result = if finalizers(&new).is_empty() {
            self.store.write(&ns_key, "", ns, Expect::Version(rv), None)
        } else {
            self.store
                .write(&ns_key, "", ns, Expect::Version(rv), Some(new))
        };
        match result {
            Ok(change) => vec![change],
            Err(_) => vec![],
        }
    }

    /// Objects in `ns` (or cluster-scoped) whose ownerReferences name `uid`.
    fn dependents_of(&self, uid: &str) -> Vec<(Arc<ResourceType>, Obj)> {
        let mut out = Vec::new();
        let types: Vec<Arc<ResourceType>> = {
            let reg = self.registry();
            let mut seen = std::collections::BTreeSet::new();
            reg.all()
                .filter(|t| !t.create_only && seen.insert(t.storage_key()))
                .cloned()
                .collect()
        };
        for t in types {
            let Ok((items, _)) = self.store.list(&t.storage_key(), None, None) else {
                continue;
            };
            for item in items {
                if owner_refs(&item).iter().any(|o| o.uid == uid) {
                    out.push((t.clone(), item));
                }
            }
        }
        out
    }

    fn owner_exists(&self, namespace: &str, owner: &OwnerRef) -> bool {
        let Some(rt) = self.registry().by_kind(&owner.api_version, &owner.kind) else {
            return false;
        };
        let ns = if rt.namespaced { namespace } else { "" };
        self.store
            .get(&rt.storage_key(), ns, &owner.name)
            .is_some_and(|o| meta_str(&o, "uid") == owner.uid)
    }

    /// Background garbage collection after an object is removed.
    async fn collect_garbage(self: &Arc<Self>, change: &Arc<Change>) -> Vec<Arc<Change>> {
        let uid = meta_str(&change.object, "uid").to_string();
        if uid.is_empty() {
            return vec![];
        }
        let ctx = WriteCtx::internal("generic-garbage-collector");
        for (rt, dep) in self.dependents_of(&uid) {
            let ns = meta_str(&dep, "namespace").to_string();
            let alive = owner_refs(&dep)
                .iter()
                .any(|o| o.uid != uid && self.owner_exists(&ns, o));
            if alive || is_deleting(&dep) {
                continue;
            }
            let _ = self
                .delete(
                    &ctx,
                    &rt,
                    &ns,
                    meta_str(&dep, "name"),
                    &DeleteOptions {
                        propagation: Some("Background".into()),
                        ..Default::default()
                    },
                )
                .await;
        }
        vec![]
    }

    /// `orphan`: strip the owner from its dependents, then drop the finalizer.
    async fn orphan_dependents(self: &Arc<Self>, change: &Arc<Change>) -> Vec<Arc<Change>> {
        let uid = meta_str(&change.object, "uid").to_string();
        let ctx = WriteCtx::internal("generic-garbage-collector");
        for (rt, dep) in self.dependents_of(&uid) {
            let uid2 = uid.clone();
            let _ = self
                .update_with(
                    &ctx,
                    &rt,
                    meta_str(&dep, "namespace"),
                    meta_str(&dep, "name"),
                    None,
                    move |old| {
                        let mut v = (**old).clone();
                        if let Some(refs) = v
                            .pointer_mut("/metadata/ownerReferences")
                            .and_then(Value::as_array_mut)
                        {
                            refs.retain(|r| r["uid"] != uid2.as_str());
                        }
                        Ok(v)
                    },
                )
                .await;
        }
        self.remove_finalizer(change, "orphan").await;
        vec![]
    }

    /// `foregroundDeletion`: delete dependents first; the owner goes when none
    /// are left.
    async fn foreground_delete(self: &Arc<Self>, change: &Arc<Change>) -> Vec<Arc<Change>> {
        let uid = meta_str(&change.object, "uid").to_string();
        let ctx = WriteCtx::internal("generic-garbage-collector");
        let deps = self.dependents_of(&uid);
        for (rt, dep) in &deps {
            if !is_deleting(dep) {
                let _ = self
                    .delete(
                        &ctx,
                        rt,
                        meta_str(dep, "namespace"),
                        meta_str(dep, "name"),
                        &DeleteOptions {
                            propagation: Some("Foreground".into()),
                            ..Default::default()
                        },
                    )
                    .await;
            }
        }
        if self.dependents_of(&uid).is_empty() {
            self.remove_finalizer(change, "foregroundDeletion").await;
        }
        vec![]
    }

    async fn recheck_foreground_owner(
        self: &Arc<Self>,
        namespace: &str,
        owner: &OwnerRef,
    ) -> Vec<Arc<Change>> {
        let Some(rt) = self.registry().by_kind(&owner.api_version, &owner.kind) else {
            return vec![];
        };
        let ns = if rt.namespaced { namespace } else { "" };
        let Some(obj) = self.store.get(&rt.storage_key(), ns, &owner.name) else {
            return vec![];
        };
        if meta_str(&obj, "uid") != owner.uid
            || !finalizers(&obj).iter().any(|f| f == "foregroundDeletion")
            || !is_deleting(&obj)
        {
            return vec![];
        }
        if self.dependents_of(&owner.uid).is_empty() {
            let ctx = WriteCtx::internal("generic-garbage-collector");
            let _ = self
                .update_with(&ctx, &rt, ns, &owner.name, None, |old| {
                    let mut v = (**old).clone();
                    let f: Vec<String> = finalizers(&v)
                        .into_iter()
                        .filter(|f| f != "foregroundDeletion")
                        .collect();
                    set_finalizers(&mut v, &f);
                    Ok(v)
                })
                .await;
        }
        vec![]
    }

    async fn remove_finalizer(self: &Arc<Self>, change: &Arc<Change>, finalizer: &str) {
        let Some(rt) = self
            .registry()
            .any_version(&change.key.group, &change.key.resource)
        else {
            return;
        };
        let ctx = WriteCtx::internal("generic-garbage-collector");
        let finalizer = finalizer.to_string();
        let _ = self
            .update_with(
                &ctx,
                &rt,
                &change.namespace,
                &change.name,
                None,
                move |old| {
                    let mut v = (**old).clone();
                    let f: Vec<String> = finalizers(&v)
                        .into_iter()
                        .filter(|f| *f != finalizer)
                        .collect();
                    set_finalizers(&mut v, &f);
                    Ok(v)
                },
            )
            .await;
    }

    /// Type information of a kind, for merges.
    pub fn type_of(&self, api_version: &str, kind: &str) -> Arc<TypeNode> {
        self.registry()
            .by_kind(api_version, kind)
            .map(|t| t.type_node.clone())
            .unwrap_or_default()
    }
}

/// The fields an endpoint resets, which server-side apply neither owns nor
/// reports conflicts on: `status` on the main resource and `spec` on the status
/// subresource of kinds with a status subresource.
fn ssa_options(rt: &ResourceType, subresource: &str) -> crate::ssa::SsaOptions {
    use crate::fieldset::{FieldSet, Path};
    let ignored = match (rt.has_status(), subresource) {
        (true, "") => FieldSet::from_paths([Path::fields(&["status"])]),
        (true, "status") => FieldSet::from_paths([Path::fields(&["spec"])]),
        _ => FieldSet::new(),
    };
    crate::ssa::SsaOptions { ignored }
}

/// One ownerReference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnerRef {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
}

fn owner_refs(obj: &Value) -> Vec<OwnerRef> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .map(|r| OwnerRef {
                    api_version: r["apiVersion"].as_str().unwrap_or("").into(),
                    kind: r["kind"].as_str().unwrap_or("").into(),
                    name: r["name"].as_str().unwrap_or("").into(),
                    uid: r["uid"].as_str().unwrap_or("").into(),
                })
                .collect()
        })
        .unwrap_or_default()
}
