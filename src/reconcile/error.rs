//! How a reconcile stops short of success: every failure maps to exactly one
//! Ready reason, a message, and a requeue policy (delivery.md §1.3, §2.13).

use std::time::Duration;

use crate::api::reasons::{StageOp, StageSetReason};

/// When to run the StageSet again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requeue {
    /// Right away (e.g. after adding the finalizer).
    Now,
    /// After this long.
    After(Duration),
    /// Exponential back-off (transient errors).
    Backoff,
    /// Only when something changes (a watch event).
    Never,
}

impl Requeue {
    /// How controller-runtime's metrics count a pass that ends this way.
    pub fn result(self) -> crate::metrics::ReconcileResult {
        use crate::metrics::ReconcileResult;
        match self {
            Requeue::Now => ReconcileResult::Requeue,
            Requeue::After(_) => ReconcileResult::RequeueAfter,
            Requeue::Backoff => ReconcileResult::Error,
            Requeue::Never => ReconcileResult::Success,
        }
    }
}

/// The fixed re-check interval of terminal-but-healable reasons.
pub const PERMANENT_RETRY: Duration = Duration::from_secs(60);

/// A stage operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageFailure {
    pub stage: String,
    pub op: StageOp,
    /// The error, already scrubbed of anything a tenant must not see.
    pub error: String,
    pub reason: StageSetReason,
    /// Terminal failures are not retried until something changes.
    pub terminal: bool,
}

impl StageFailure {
    /// A retryable `StageFailed`.
    pub fn new(stage: &str, op: StageOp, error: impl Into<String>) -> Self {
        StageFailure {
            stage: stage.to_string(),
            op,
            error: error.into(),
            reason: StageSetReason::StageFailed,
            terminal: false,
        }
    }

    /// A terminal `StageFailed` (e.g. a digest mismatch: retrying cannot help).
    pub fn terminal(stage: &str, op: StageOp, error: impl Into<String>) -> Self {
        StageFailure {
            terminal: true,
            ..StageFailure::new(stage, op, error)
        }
    }

    /// A terminal `RBACDenied`.
    pub fn rbac(stage: &str, op: StageOp, error: impl Into<String>) -> Self {
        StageFailure {
            reason: StageSetReason::RBACDenied,
            terminal: true,
            ..StageFailure::new(stage, op, error)
        }
    }

    /// A terminal `InvalidSpec` (the spec must change first).
    pub fn invalid_spec(stage: &str, op: StageOp, error: impl Into<String>) -> Self {
        StageFailure {
            reason: StageSetReason::InvalidSpec,
            terminal: true,
            ..StageFailure::new(stage, op, error)
        }
    }

    /// The stage status message: `<op>: <error>`.
    pub fn stage_message(&self) -> String {
        format!("{}: {}", self.op, self.error)
    }

    /// The Ready message: `stage "<s>" <op>: <error>`.
    pub fn ready_message(&self) -> String {
        format!("stage \"{}\" {}: {}", self.stage, self.op, self.error)
    }

    pub fn requeue(&self) -> Requeue {
        if self.terminal {
            Requeue::Never
        } else {
            Requeue::Backoff
        }
    }
}

/// Text for a Forbidden answer: which call, and what to do about it.
pub fn rbac_denied_message(call: &str, detail: &str) -> String {
    format!(
        "RBAC denied {call} — grant the missing verb to the tenant ServiceAccount (see the Tenancy and RBAC guide). {detail}"
    )
}

/// Text for a kind the API server does not serve.
pub fn kind_missing_message(call: &str, detail: &str) -> String {
    format!(
        "{call} refers to a kind not registered with the apiserver — install the corresponding CRD. {detail}"
    )
}

/// Whether a kube error is a permanent authorization failure.
pub fn is_forbidden(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 403)
}

/// A compact rendering of a kube error for messages.
pub fn describe(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => {
            let mut s = other.to_string();
            let mut cur = std::error::Error::source(other);
            while let Some(inner) = cur {
                s.push_str(": ");
                s.push_str(&inner.to_string());
                cur = inner.source();
            }
            s
        }
    }
}
