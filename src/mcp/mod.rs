//! The MCP server (operations.md §3.6, delivery.md §7): Model Context
//! Protocol tools over the streamable-HTTP transport, opt-in with
//! `--enable-mcp`, on every replica.
//!
//! Identity: the server is unauthenticated and acts as the controller's own
//! ServiceAccount. The read tools answer from the StageSet cache the other
//! listeners read (no API call, never a StageSetActor); `diff_revisions`
//! reads the rollback store; the write tools (only with
//! `--mcp-allow-mutations`, otherwise not even listed) read the live
//! StageSet and send one merge patch with the controller's client. No tool
//! reads a Secret, and the rendered manifests `diff_revisions` shows have
//! every Secret value masked.
//!
//! Not in `http`: the tools need the rollback store and the controller's
//! client, which the HTTP layer may not reach (ARCHITECTURE.md, "Layers").

mod diff;
mod server;
mod tools;

pub use server::{IDLE_SESSION, start};
pub use tools::Tools;

/// What the MCP server needs besides its address.
#[derive(Clone)]
pub struct McpContext {
    /// The StageSet cache (the read tools).
    pub cache: crate::cache::StageSetCache,
    /// The controller's own client (the write tools).
    pub client: kube::Client,
    /// The rollback store, when one is configured (`diff_revisions`).
    pub store: Option<crate::reconcile::rollback::Store>,
    /// Whether the write tools exist.
    pub allow_mutations: bool,
    /// `--runbook-base-url` (trailing `/` trimmed); `None` drops the links.
    pub runbook_base: Option<String>,
    /// `--watch-namespaces` (empty: cluster-wide): a namespace outside it is
    /// an error with a hint rather than an empty answer.
    pub watch_namespaces: Vec<String>,
}
