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

/// The fixed re-check interval of terminal-but-healable reasons (1 minute).
pub const PERMANENT_RETRY: Duration = Duration::from_secs(60);

/// Why a pipeline step failed. Each kind has one Ready reason and one retry
/// policy (delivery.md §1.3 as docs/decisions.md 20 settles it: no StageSet is
/// left without a next reconcile).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Forbidden, or a kind the API server does not serve: `RBACDenied`,
    /// re-checked every minute, so an admin's fix (a Role, a CRD) is picked
    /// up without touching the StageSet.
    #[error("{0}")]
    Denied(String),
    /// The spec must change first: `InvalidSpec`, re-checked at the
    /// StageSet's interval.
    #[error("{0}")]
    InvalidSpec(String),
    /// The images cannot be verified: `ImageUnverified`, re-checked at the
    /// StageSet's interval.
    #[error("{0}")]
    Unverified(String),
    /// Retrying the same inputs cannot help (a digest mismatch, an unsafe
    /// archive): `StageFailed`, re-checked at the StageSet's interval.
    #[error("{0}")]
    Terminal(String),
    /// A stage with a pending Lifetime action failed its actions too often
    /// (§3.6.5): `ActionDirty`. Its actions stay halted until a
    /// `requestedAt` token; the StageSet is re-checked at its interval.
    #[error("{0}")]
    Dirty(String),
    /// A migration action failed (`MigrationFailed`): retried with back-off,
    /// counted in `status.migrationFailureCount`.
    #[error("{0}")]
    Migration(String),
    /// Migrations failed too often (`MigrationDirty`): halted until a
    /// `requestedAt` token; re-checked at the StageSet's interval.
    #[error("{0}")]
    MigrationDirty(String),
    /// Anything else: `StageFailed`, retried with exponential back-off.
    #[error("{0}")]
    Transient(String),
}

impl Error {
    /// The Ready reason this failure is reported with.
    pub fn reason(&self) -> StageSetReason {
        match self {
            Error::Denied(_) => StageSetReason::RBACDenied,
            Error::InvalidSpec(_) => StageSetReason::InvalidSpec,
            Error::Unverified(_) => StageSetReason::ImageUnverified,
            Error::Dirty(_) => StageSetReason::ActionDirty,
            Error::Migration(_) => StageSetReason::MigrationFailed,
            Error::MigrationDirty(_) => StageSetReason::MigrationDirty,
            Error::Terminal(_) | Error::Transient(_) => StageSetReason::StageFailed,
        }
    }

    /// When to run again; `interval` is the StageSet's effective interval.
    pub fn requeue(&self, interval: Duration) -> Requeue {
        match self {
            Error::Denied(_) => Requeue::After(PERMANENT_RETRY),
            Error::InvalidSpec(_)
            | Error::Unverified(_)
            | Error::Terminal(_)
            | Error::Dirty(_)
            | Error::MigrationDirty(_) => Requeue::After(super::jitter(interval)),
            Error::Transient(_) | Error::Migration(_) => Requeue::Backoff,
        }
    }

    /// `call` failed with `e`: Forbidden is [`Error::Denied`] with the RBAC
    /// hint, anything else transient.
    pub fn api(call: &str, e: &kube::Error) -> Error {
        match e {
            kube::Error::Api(s) if s.code == 403 => {
                Error::Denied(rbac_denied_message(call, &s.message))
            }
            other => Error::Transient(format!("{call}: {}", describe(other))),
        }
    }
}

impl From<String> for Error {
    /// A plain message is a transient failure.
    fn from(message: String) -> Error {
        Error::Transient(message)
    }
}

/// A stage operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageFailure {
    pub stage: String,
    pub op: StageOp,
    /// The error, already scrubbed of anything a tenant must not see.
    pub error: Error,
}

impl StageFailure {
    pub fn new(stage: &str, op: StageOp, error: impl Into<Error>) -> Self {
        StageFailure {
            stage: stage.to_string(),
            op,
            error: error.into(),
        }
    }

    /// A terminal `StageFailed` (e.g. a digest mismatch: retrying cannot help).
    pub fn terminal(stage: &str, op: StageOp, error: impl Into<String>) -> Self {
        StageFailure::new(stage, op, Error::Terminal(error.into()))
    }

    /// An `RBACDenied` (re-checked every minute).
    pub fn rbac(stage: &str, op: StageOp, error: impl Into<String>) -> Self {
        StageFailure::new(stage, op, Error::Denied(error.into()))
    }

    /// An `InvalidSpec` (the spec must change first).
    pub fn invalid_spec(stage: &str, op: StageOp, error: impl Into<String>) -> Self {
        StageFailure::new(stage, op, Error::InvalidSpec(error.into()))
    }

    /// The Ready reason.
    pub fn reason(&self) -> StageSetReason {
        self.error.reason()
    }

    /// The stage status message: `<op>: <error>`.
    pub fn stage_message(&self) -> String {
        format!("{}: {}", self.op, self.error)
    }

    /// The Ready message: `stage "<s>" <op>: <error>`.
    pub fn ready_message(&self) -> String {
        format!("stage \"{}\" {}: {}", self.stage, self.op, self.error)
    }

    /// When to run again; `interval` is the StageSet's effective interval.
    pub fn requeue(&self, interval: Duration) -> Requeue {
        self.error.requeue(interval)
    }

    /// Whether retrying the same inputs cannot help (no back-off retry).
    pub fn is_terminal(&self) -> bool {
        !matches!(self.error, Error::Transient(_) | Error::Migration(_))
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

/// Whether a failed request is worth repeating at once: the server failed
/// (500, 502, and 429/503/504 once the client's own retries gave up) or the
/// connection broke (reset, cut-off body). Authorization, validation and
/// conflict answers are not.
pub fn is_retryable(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => matches!(s.code, 429 | 500 | 502 | 503 | 504),
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_) => true,
        // A body cut off mid-way decodes as truncated JSON.
        kube::Error::SerdeError(e) => e.is_eof(),
        _ => false,
    }
}

/// Delays between the attempts of [`retrying`]: three more tries within
/// about a second before the pass gives up and is requeued with backoff.
const RETRY_DELAYS: [std::time::Duration; 3] = [
    std::time::Duration::from_millis(50),
    std::time::Duration::from_millis(200),
    std::time::Duration::from_millis(800),
];

/// Runs an idempotent request (a read, a server-side apply, a delete), and
/// repeats it after a short delay while it fails in a way
/// [`is_retryable`] accepts. A transient fault then costs a request, not
/// the whole pass.
pub async fn retrying<T, F, Fut>(mut request: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut delays = RETRY_DELAYS.iter();
    loop {
        match request().await {
            Err(e) if is_retryable(&e) => match delays.next() {
                Some(delay) => {
                    tracing::debug!(error = %describe(&e), retry_in_ms = delay.as_millis() as u64, "request failed; retrying");
                    tokio::time::sleep(*delay).await;
                }
                None => return Err(e),
            },
            other => return other,
        }
    }
}
