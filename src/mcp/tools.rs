//! The tools (delivery.md §7). Tool failures (unknown StageSet, bad input,
//! a refused patch) are MCP error results (`isError: true`), never transport
//! errors.

use std::sync::Arc;

use kube::api::{Api, Patch, PatchParams};
use rmcp::ErrorData;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    InitializeResult, JsonObject, ListToolsResult, PaginatedRequestParams, ServerCapabilities,
    Tool,
};
use rmcp::service::{RequestContext, RoleServer};
use serde_json::{Value, json};

use super::McpContext;
use crate::api::StageSet;
use crate::api::keys::ANNOTATION_REQUESTED_AT;

/// The read tools, always listed (`diff_revisions` only with a store).
const READ_TOOLS: [&str; 3] = ["list_stagesets", "get_stageset", "diff_revisions"];
/// The write tools, listed only with `--mcp-allow-mutations`.
const WRITE_TOOLS: [&str; 3] = ["reconcile_stageset", "suspend_stageset", "resume_stageset"];

/// The MCP server handler: one per session, sharing the context.
#[derive(Clone)]
pub struct Tools {
    ctx: Arc<McpContext>,
    diffs: Arc<tokio::sync::Semaphore>,
}

/// A tool's outcome: a JSON answer or a message for an error result.
type Outcome = Result<Value, String>;

impl Tools {
    pub fn new(ctx: McpContext) -> Tools {
        Tools {
            ctx: Arc::new(ctx),
            diffs: Arc::new(tokio::sync::Semaphore::new(super::diff::MAX_CONCURRENT)),
        }
    }

    /// The names of the tools this server offers, in listing order.
    pub fn names(&self) -> Vec<&'static str> {
        READ_TOOLS
            .into_iter()
            .filter(|t| *t != "diff_revisions" || self.ctx.store.is_some())
            .chain(WRITE_TOOLS.into_iter().filter(|_| self.ctx.allow_mutations))
            .collect()
    }

    /// Runs one tool by name.
    pub async fn call(&self, name: &str, args: &JsonObject) -> Outcome {
        if !self.names().contains(&name) {
            return Err(match name {
                "diff_revisions" => {
                    "diff_revisions needs a rollback store, and none is configured (--rollback-store-*)"
                        .to_string()
                }
                n if WRITE_TOOLS.contains(&n) => format!(
                    "{n} is a write tool; the controller runs without --mcp-allow-mutations"
                ),
                n => format!("unknown tool {n:?}"),
            });
        }
        match name {
            "list_stagesets" => self.list(args),
            "get_stageset" => self.get(args),
            "diff_revisions" => super::diff::diff(&self.ctx, &self.diffs, args).await,
            "reconcile_stageset" => self.mutate(args, Mutation::Reconcile).await,
            "suspend_stageset" => self.mutate(args, Mutation::Suspend).await,
            "resume_stageset" => self.mutate(args, Mutation::Resume).await,
            _ => Err(format!("unknown tool {name:?}")),
        }
    }

    /// A namespace the controller does not watch has no StageSets it can
    /// see: say so instead of answering "none".
    fn watched(&self, namespace: &str) -> Result<(), String> {
        let scope = &self.ctx.watch_namespaces;
        if scope.is_empty() || scope.iter().any(|n| n == namespace) {
            return Ok(());
        }
        Err(format!(
            "namespace {namespace:?} is outside this controller's watch scope (--watch-namespaces={}); pass one of those namespaces",
            scope.join(",")
        ))
    }

    fn list(&self, args: &JsonObject) -> Outcome {
        let namespace = optional(args, "namespace")?;
        if let Some(ns) = namespace {
            self.watched(ns)?;
        }
        let mut all: Vec<Arc<StageSet>> = self
            .ctx
            .cache
            .state()
            .into_iter()
            .filter(|ss| namespace.is_none() || ss.metadata.namespace.as_deref() == namespace)
            .collect();
        all.sort_by(|a, b| {
            (&a.metadata.namespace, &a.metadata.name)
                .cmp(&(&b.metadata.namespace, &b.metadata.name))
        });
        let stagesets: Vec<Value> = all.iter().map(|ss| summary(ss)).collect();
        Ok(json!({ "stagesets": stagesets }))
    }

    fn get(&self, args: &JsonObject) -> Outcome {
        let namespace = required(args, "namespace")?;
        let name = required(args, "name")?;
        let ss = self.cached(namespace, name)?;
        let mut out = summary(&ss);
        let status = ss.status.clone().unwrap_or_default();
        let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
        let reason = ready.map(|c| c.reason.clone()).unwrap_or_default();
        out["message"] = json!(ready.map(|c| c.message.clone()).unwrap_or_default());
        out["runbookURL"] = json!(self.runbook_url(&reason));
        out["stages"] = Value::Array(
            status
                .stages
                .iter()
                .map(|s| {
                    json!({
                        "name": s.name,
                        "phase": s.phase.map(|p| serde_json::to_value(p).unwrap_or_default()),
                        "appliedRevision": s.applied_revision,
                        "message": s.message,
                    })
                })
                .collect(),
        );
        out["lastAppliedRevisions"] = json!(status.last_applied_revisions);
        out["pendingMigrations"] = json!(
            status
                .pending_migrations
                .iter()
                .map(|m| m.name.clone())
                .collect::<Vec<_>>()
        );
        Ok(out)
    }

    fn runbook_url(&self, reason: &str) -> Option<String> {
        if reason.is_empty() {
            return None;
        }
        self.ctx
            .runbook_base
            .as_ref()
            .map(|base| format!("{base}/{}/", reason.to_lowercase()))
    }

    fn cached(&self, namespace: &str, name: &str) -> Result<Arc<StageSet>, String> {
        self.watched(namespace)?;
        self.ctx
            .cache
            .get(namespace, name)
            .ok_or_else(|| format!("StageSet {namespace}/{name} not found"))
    }

    async fn mutate(&self, args: &JsonObject, what: Mutation) -> Outcome {
        let namespace = required(args, "namespace")?;
        let name = required(args, "name")?;
        self.watched(namespace)?;
        let api: Api<StageSet> = Api::namespaced(self.ctx.client.clone(), namespace);
        let live = match api.get_opt(name).await {
            Ok(Some(ss)) => ss,
            Ok(None) => return Err(format!("StageSet {namespace}/{name} not found")),
            Err(e) => return Err(format!("reading StageSet {namespace}/{name}: {e}")),
        };
        let suspended = live.spec.suspend == Some(true);
        let (patch, result) = match what {
            Mutation::Reconcile if suspended => {
                return Err(format!(
                    "StageSet {namespace}/{name} is suspended; resume it first"
                ));
            }
            Mutation::Reconcile => {
                let token = jiff::Timestamp::now().to_string();
                (
                    Some(json!({"metadata": {"annotations": {ANNOTATION_REQUESTED_AT: token}}})),
                    "reconcile requested",
                )
            }
            Mutation::Suspend if suspended => (None, "already suspended"),
            Mutation::Suspend => (Some(json!({"spec": {"suspend": true}})), "suspended"),
            Mutation::Resume if !suspended => (None, "not suspended"),
            Mutation::Resume => (Some(json!({"spec": {"suspend": null}})), "resumed"),
        };
        if let Some(patch) = patch {
            api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|e| format!("patching StageSet {namespace}/{name}: {e}"))?;
            tracing::info!(logger = "mcp", namespace, name, result, "MCP write tool");
        }
        Ok(json!({"namespace": namespace, "name": name, "result": result}))
    }
}

#[derive(Clone, Copy)]
enum Mutation {
    Reconcile,
    Suspend,
    Resume,
}

/// The fields `list_stagesets` shows for each StageSet.
fn summary(ss: &StageSet) -> Value {
    let status = ss.status.as_ref();
    let ready = status.and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
    json!({
        "namespace": ss.metadata.namespace.clone().unwrap_or_default(),
        "name": ss.metadata.name.clone().unwrap_or_default(),
        "ready": ready
            .and_then(|c| serde_json::to_value(c.status).ok())
            .unwrap_or_else(|| json!("Unknown")),
        "reason": ready.map(|c| c.reason.clone()).unwrap_or_default(),
        "suspended": ss.spec.suspend == Some(true),
        "version": status.and_then(|s| s.version.clone()),
        "observedGeneration": status.and_then(|s| s.observed_generation),
    })
}

pub(super) fn required<'a>(args: &'a JsonObject, key: &str) -> Result<&'a str, String> {
    match optional(args, key)? {
        Some(v) => Ok(v),
        None => Err(format!("{key} is required")),
    }
}

pub(super) fn optional<'a>(args: &'a JsonObject, key: &str) -> Result<Option<&'a str>, String> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("{key} must be a string")),
    }
}

fn schema(properties: Value, required: &[&str]) -> JsonObject {
    let v = json!({"type": "object", "properties": properties, "required": required});
    match v {
        Value::Object(m) => m,
        _ => JsonObject::new(),
    }
}

fn tool(name: &'static str) -> Tool {
    let ns_name = || {
        schema(
            json!({
                "namespace": {"type": "string", "description": "The StageSet's namespace."},
                "name": {"type": "string", "description": "The StageSet's name."},
            }),
            &["namespace", "name"],
        )
    };
    match name {
        "list_stagesets" => Tool::new(
            name,
            "List StageSets with their Ready status and reason, suspend, version and observed generation (all namespaces when none is given).",
            schema(
                json!({"namespace": {"type": "string", "description": "Only this namespace (empty: all)."}}),
                &[],
            ),
        ),
        "get_stageset" => Tool::new(
            name,
            "One StageSet: the Ready condition and its runbook, suspend, version, per-stage phases and applied revisions, pending migrations.",
            ns_name(),
        ),
        "diff_revisions" => Tool::new(
            name,
            "Per-object unified diff of a stage's rendered manifests between two artifact digests held in the rollback store (Secret values masked). `to` defaults to the stage's currently applied digest.",
            schema(
                json!({
                    "namespace": {"type": "string"},
                    "name": {"type": "string"},
                    "stage": {"type": "string"},
                    "from": {"type": "string", "description": "Artifact digest, <algo>:<hex>."},
                    "to": {"type": "string", "description": "Artifact digest, <algo>:<hex> (default: the applied one)."},
                }),
                &["namespace", "name", "stage", "from"],
            ),
        ),
        "reconcile_stageset" => Tool::new(
            name,
            "Request a reconcile now (stamps reconcile.fluxcd.io/requestedAt); refused for a suspended StageSet.",
            ns_name(),
        ),
        "suspend_stageset" => Tool::new(name, "Suspend a StageSet (spec.suspend=true).", ns_name()),
        _ => Tool::new(
            name,
            "Resume a suspended StageSet (clears spec.suspend).",
            ns_name(),
        ),
    }
}

impl rmcp::ServerHandler for Tools {
    fn get_info(&self) -> InitializeResult {
        InitializeResult::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(
                "stageset-controller",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions(
                "Inspect StageSets (stages.metio.wtf/v1): list_stagesets, get_stageset, and diff_revisions when a rollback store is configured; reconcile/suspend/resume only when the controller allows mutations.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(
            self.names().into_iter().map(tool).collect(),
        ))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.names().into_iter().find(|n| *n == name).map(tool)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let args = request.arguments.unwrap_or_default();
        let result = match self.call(&request.name, &args).await {
            Ok(v) => CallToolResult::structured(v),
            Err(msg) => CallToolResult::error(vec![ContentBlock::text(msg)]),
        };
        Ok(result.into())
    }
}
