//! Error budgets (delivery.md §5.2): whether a new revision may go out
//! while a service's SLO error budget is burnt. One evaluation serves the
//! rollout-wide gate (R10, `spec.errorBudget`) and the per-stage one (S3,
//! `stages[].errorBudget`); each keeps its own freeze record, which is the
//! hysteresis state (frozen below `freezeThreshold`, thawed only at or
//! above `resumeThreshold`).

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::reasons::StageSetReason;
use crate::api::{BudgetFreeze, ErrorBudget, SourceErrorPolicy, StageSet};

use super::{Env, metricsource};

/// What an evaluation found.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Deliver; `freeze` is the record to keep (a dry-run freeze, or none).
    Proceed {
        freeze: Option<BudgetFreeze>,
        /// A dry-run freeze started now (for its event).
        dry_run_started: bool,
        /// The source failed and `onSourceError: Allow` lets it through.
        source_error: Option<String>,
    },
    /// Hold: the reason when nothing was ever deployed, what to say, the
    /// freeze record to keep.
    Hold {
        reason: StageSetReason,
        what: String,
        freeze: Option<BudgetFreeze>,
        requeue: Duration,
    },
    /// The thresholds do not parse, or resume is below freeze.
    Invalid(String),
}

fn threshold(text: &str, field: &str) -> Result<f64, String> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| format!("{field} {text:?} is not a decimal number"))
}

/// The freeze and resume thresholds of `budget` (at `path`, for messages).
pub fn thresholds(budget: &ErrorBudget, path: &str) -> Result<(f64, f64), String> {
    let freeze = threshold(&budget.freeze_threshold, &format!("{path}.freezeThreshold"))?;
    let resume = match budget.resume_threshold.as_deref() {
        Some(r) => threshold(r, &format!("{path}.resumeThreshold"))?,
        None => freeze,
    };
    if resume < freeze {
        return Err(format!(
            "{path}.resumeThreshold {resume} is below freezeThreshold {freeze}"
        ));
    }
    Ok((freeze, resume))
}

/// Evaluates `budget` with `prior` as the hysteresis state. `retry` is
/// the requeue when the budget sets none. Counts source errors and sets
/// `stageset_budget_remaining` for the rollout-wide budget (`stage` None).
pub async fn evaluate(
    env: &Env,
    ss: &StageSet,
    budget: &ErrorBudget,
    path: &str,
    prior: Option<&BudgetFreeze>,
    retry: Duration,
    rollout_wide: bool,
) -> Verdict {
    let namespace = kube::ResourceExt::namespace(ss).unwrap_or_default();
    let name = kube::ResourceExt::name_any(ss);
    let (freeze, resume) = match thresholds(budget, path) {
        Ok(t) => t,
        Err(e) => return Verdict::Invalid(e),
    };
    let requeue = super::parse_duration(budget.interval.as_ref()).unwrap_or(retry);
    let value = match metricsource::read(env, ss, &budget.source).await {
        Ok(v) => v,
        Err(e) => {
            env.metrics.metric_source_error(&namespace, &name);
            tracing::warn!(stageset = %format!("{namespace}/{name}"), budget = %path, error = %e, "the error budget source is unavailable");
            if budget.on_source_error == Some(SourceErrorPolicy::Hold) {
                return Verdict::Hold {
                    reason: StageSetReason::BudgetSourceUnavailable,
                    what: format!("the error budget source is unavailable: {e}"),
                    freeze: prior.cloned(),
                    requeue,
                };
            }
            return Verdict::Proceed {
                freeze: prior.cloned(),
                dry_run_started: false,
                source_error: Some(e),
            };
        }
    };
    let was_frozen = prior.is_some();
    let frozen = if was_frozen {
        value < resume
    } else {
        value < freeze
    };
    let dry_run = budget.dry_run == Some(true);
    if rollout_wide {
        env.metrics
            .budget(&namespace, &name, Some(value), frozen && !dry_run);
    }
    if !frozen {
        return Verdict::Proceed {
            freeze: None,
            dry_run_started: false,
            source_error: None,
        };
    }
    let record = BudgetFreeze {
        remaining: Some(value.to_string()),
        freeze_threshold: Some(budget.freeze_threshold.clone()),
        resume_threshold: Some(
            budget
                .resume_threshold
                .clone()
                .unwrap_or_else(|| budget.freeze_threshold.clone()),
        ),
        since: Some(
            prior
                .and_then(|f| f.since.clone())
                .unwrap_or(Time(env.clock.now())),
        ),
        dry_run: dry_run.then_some(true),
    };
    let what = format!(
        "the error budget is exhausted (remaining {value} below {})",
        if was_frozen { resume } else { freeze }
    );
    if dry_run {
        return Verdict::Proceed {
            freeze: Some(record),
            dry_run_started: !was_frozen,
            source_error: None,
        };
    }
    Verdict::Hold {
        reason: StageSetReason::BudgetExhausted,
        what,
        freeze: Some(record),
        requeue,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn thresholds_parse_and_resume_is_not_below_freeze() {
        let b = |v: serde_json::Value| -> ErrorBudget {
            serde_json::from_value(
                json!({"source": {"prometheus": {"address": "http://p", "query": "q"}}})
                    .as_object()
                    .unwrap()
                    .clone()
                    .into_iter()
                    .chain(v.as_object().unwrap().clone())
                    .collect::<serde_json::Map<_, _>>()
                    .into(),
            )
            .unwrap()
        };
        assert_eq!(
            thresholds(&b(json!({"freezeThreshold": "0.1"})), "spec.errorBudget"),
            Ok((0.1, 0.1))
        );
        assert_eq!(
            thresholds(
                &b(json!({"freezeThreshold": "0.1", "resumeThreshold": "0.2"})),
                "spec.errorBudget"
            ),
            Ok((0.1, 0.2))
        );
        assert_eq!(
            thresholds(
                &b(json!({"freezeThreshold": "0.2", "resumeThreshold": "0.1"})),
                "spec.errorBudget"
            ),
            Err("spec.errorBudget.resumeThreshold 0.1 is below freezeThreshold 0.2".into())
        );
        assert!(
            thresholds(&b(json!({"freezeThreshold": "ten"})), "spec.errorBudget")
                .unwrap_err()
                .contains("not a decimal")
        );
    }
}
