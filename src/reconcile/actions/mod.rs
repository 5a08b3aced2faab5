//! Stage actions (api.md §2.9, delivery.md §3): the hooks a stage runs
//! before it applies (`pre`), after it is Ready (`post`), when it fails from
//! the apply on (`onFailure`), and the StageSet's `onRollback` after a
//! whole-run rollback.
//!
//! An action runs `retries + 1` attempts with a back-off of
//! `min((attempt + 1) × 500 ms, 5 s)` between them, all within its `timeout`
//! when one is set. An attempt that cannot succeed by being repeated (a
//! refused URL, a 4xx answer, an invalid patch) stops the action at once.
//! Actions of a list run in order and the first failure stops the list.
//!
//! Which actions a list skips, and what is recorded after each success, is
//! the caller's: `ledger.rs` keeps the revision ledger (stage status) and the
//! lifetime ledger (the StageLedger object).

pub(super) mod hooks;
mod http;
pub mod ledger;
pub(super) mod migrations;
pub mod verbs;

use std::time::Duration;

use crate::api::{Action, StageSet};

use super::Env;

/// Where actions run: the identity and namespace their cluster calls use.
pub struct ActionCtx<'a> {
    pub env: &'a Env,
    /// The target cluster's clients (discovery; the cluster `client` talks
    /// to).
    pub clients: crate::kube_client::ClientFactory,
    /// The stage's effective identity (the StageSet-level one for
    /// `onRollback`).
    pub client: kube::Client,
    /// The StageSet's namespace: the default for every target.
    pub namespace: String,
    pub ss: &'a StageSet,
}

/// One attempt's failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// Another attempt may succeed.
    Retry(String),
    /// Repeating cannot help; the action fails now.
    Stop(String),
    /// The identity may not do this (Forbidden): the action fails now and
    /// the stage reports `RBACDenied`.
    Denied(String),
}

impl Attempt {
    pub fn message(self) -> String {
        match self {
            Attempt::Retry(m) | Attempt::Stop(m) | Attempt::Denied(m) => m,
        }
    }
}

/// Why an action failed: `action "<name>": <cause>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionError {
    pub message: String,
    /// The cause was a Forbidden answer.
    pub denied: bool,
}

/// The back-off before attempt `attempt + 1` (attempts counted from 0).
pub fn backoff(attempt: u32) -> Duration {
    (Duration::from_millis(500) * (attempt + 1)).min(Duration::from_secs(5))
}

fn parse(d: Option<&crate::api::Duration>) -> Option<Duration> {
    d.and_then(|d| d.parse().ok())
        .and_then(|d| d.to_std())
        .filter(|d| !d.is_zero())
}

/// One attempt of the action's verb.
async fn attempt(
    ctx: &ActionCtx<'_>,
    action: &Action,
    limit: Option<Duration>,
) -> Result<(), Attempt> {
    match action.verbs().as_slice() {
        ["patch"] => verbs::patch(ctx, action.patch.as_ref().expect("patch")).await,
        ["wait"] => verbs::wait(ctx, action.wait.as_ref().expect("wait")).await,
        ["delete"] => verbs::delete(ctx, action.delete.as_ref().expect("delete")).await,
        ["job"] => verbs::job(ctx, action.job.as_ref().expect("job"), limit).await,
        ["apply"] => verbs::apply_objects(ctx, action.apply.as_ref().expect("apply"), limit).await,
        ["http"] => http::send(ctx, action.http.as_ref().expect("http")).await,
        other => Err(Attempt::Stop(format!(
            "exactly one of patch, http, wait, job, delete, apply must be set, found {}",
            other.len()
        ))),
    }
}

/// Runs one action with its retries and timeout.
pub async fn run(ctx: &ActionCtx<'_>, action: &Action) -> Result<(), ActionError> {
    let limit = parse(action.timeout.as_ref());
    let attempts = u32::try_from(action.retries.unwrap_or(0).max(0)).unwrap_or(0) + 1;
    let all = async {
        let mut last = String::new();
        for n in 0..attempts {
            match attempt(ctx, action, limit).await {
                Ok(()) => return Ok(()),
                Err(final_ @ (Attempt::Stop(_) | Attempt::Denied(_))) => return Err(final_),
                Err(Attempt::Retry(m)) => {
                    last = m;
                    if n + 1 < attempts {
                        tokio::time::sleep(backoff(n)).await;
                    }
                }
            }
        }
        Err(Attempt::Retry(last))
    };
    let result = match limit {
        Some(limit) => tokio::time::timeout(limit, all).await.unwrap_or_else(|_| {
            Err(Attempt::Stop(format!(
                "timed out after {}",
                crate::duration::GoDuration::from_std(limit)
            )))
        }),
        None => all.await,
    };
    result.map_err(|cause| ActionError {
        denied: matches!(cause, Attempt::Denied(_)),
        message: format!("action \"{}\": {}", action.name, cause.message()),
    })
}

/// The first failure of a list: the action and the error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListFailure {
    pub action: String,
    pub message: String,
}

impl From<(&Action, ActionError)> for ListFailure {
    fn from((action, e): (&Action, ActionError)) -> Self {
        ListFailure {
            action: action.name.clone(),
            message: e.message,
        }
    }
}

/// Runs a best-effort list (`onFailure`, `onRollback`): nothing is skipped
/// or recorded, and, as for every list, the first failure ends it; the
/// caller reports it as a Warning event, never as the stage's failure.
pub async fn run_best_effort(ctx: &ActionCtx<'_>, actions: &[Action]) -> Result<(), ListFailure> {
    for action in actions {
        run(ctx, action)
            .await
            .map_err(|e| ListFailure::from((action, e)))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_by_half_seconds_up_to_five() {
        assert_eq!(backoff(0), Duration::from_millis(500));
        assert_eq!(backoff(1), Duration::from_millis(1000));
        assert_eq!(backoff(8), Duration::from_millis(4500));
        assert_eq!(backoff(9), Duration::from_secs(5));
        assert_eq!(backoff(50), Duration::from_secs(5));
    }
}
