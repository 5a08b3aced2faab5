//! Stage promotion (delivery.md §5.5, S21): after a stage is Ready and its
//! post actions ran, whether the next stage may start. Pure: the caller
//! passes the stage's previous status entry, the revision, the promote
//! token and the time.
//!
//! All of `gatePromotion` in the spec's order: `soak` with `fastTrack`,
//! `requireManualPromotion`, `analysis`, the restart and event gates
//! (observed by [`super::podgates`]), and the break-glass
//! `stages.metio.wtf/promote="<stage>@<token>"` annotation. A block whose
//! `onFailure` is `Rollback` says so in [`Gate::rollback`]; reverting the
//! stage and parking the aborted revision is the caller's part
//! (`rollback::revert_stage`, S1 in `stage.rs`).

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::reasons::StageSetReason;
use crate::api::{PromotionPhase, PromotionState, Stage, StageStatus};

/// What the gate decided.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// The next stage may start.
    Promoted,
    /// The loop stops here: the Ready reason and message, and when to look
    /// again.
    Hold {
        reason: StageSetReason,
        message: String,
        requeue: Duration,
    },
}

/// The gate's verdict with the stage's new promotion state and, when a
/// promote token was consumed, the token to record.
#[derive(Clone, Debug, PartialEq)]
pub struct Gate {
    pub decision: Decision,
    pub state: PromotionState,
    pub handled_token: Option<String>,
    /// Blocked, and the failing gate's `onFailure` is `Rollback`: the
    /// message then ends with what was blocked, for the caller to add what
    /// the revert did.
    pub rollback: bool,
}

/// Whether a stage's promotion can roll it back (S1): a non-dry-run
/// analysis, or any restart or event gate or check, with `onFailure:
/// Rollback`.
pub fn can_roll_back(stage: &Stage) -> bool {
    use crate::api::GateFailurePolicy::Rollback;
    let Some(p) = stage.promotion.as_ref() else {
        return false;
    };
    let analysis = p
        .analysis
        .as_ref()
        .is_some_and(|a| a.dry_run != Some(true) && a.on_failure == Some(Rollback));
    let restart = p.restart_gate.as_ref().is_some_and(|g| {
        g.on_failure == Some(Rollback) || g.checks.iter().any(|c| c.on_failure == Some(Rollback))
    });
    let event = p.event_gate.as_ref().is_some_and(|g| {
        g.on_failure == Some(Rollback) || g.checks.iter().any(|c| c.on_failure == Some(Rollback))
    });
    analysis || restart || event
}

/// What a blocked message ends with when the gate does not roll back.
const NOT_ROLLED_BACK: &str = "; not rolled back (onFailure: Hold)";

/// The token of a `promote` annotation for `stage` (`<stage>@<token>`).
pub fn promote_token<'a>(annotation: Option<&'a str>, stage: &str) -> Option<&'a str> {
    let (target, token) = annotation?.split_once('@')?;
    (target == stage && !token.is_empty()).then_some(token)
}

/// The inputs of one decision.
pub struct Inputs<'a> {
    pub stage: &'a Stage,
    /// The StageSet, for the promote command in messages.
    pub namespace: &'a str,
    pub stageset: &'a str,
    /// The stage's entry before this pass.
    pub prior: Option<&'a StageStatus>,
    /// The revision the stage is Ready at now.
    pub revision: &'a str,
    /// The promote annotation's token for this stage, if any.
    pub token: Option<&'a str>,
    pub now: Timestamp,
    /// The StageSet's retry interval (requeue of a manual hold).
    pub retry: Duration,
    /// The restart gate's observation, if the stage has one.
    pub restarts: Option<&'a super::podgates::Restarts>,
    /// The event gate's verdict, if one tripped.
    pub event: Option<&'a super::podgates::Verdict>,
    /// This pass's analysis, if the stage has one.
    pub analysis: Option<&'a Analysis>,
    /// The fast track's metric is within its maximum.
    pub fast_track_ok: bool,
}

/// One evaluation of a stage's analysis checks.
#[derive(Clone, Debug, PartialEq)]
pub struct Analysis {
    pub result: crate::api::AnalysisResult,
    /// A readable value is outside its threshold (or a threshold is
    /// malformed).
    pub breached: bool,
    /// A source could not be read.
    pub source_error: bool,
}

/// Whether `value` is within `threshold` (inclusive; unset bounds are
/// open). Err when a bound is not a number.
pub fn within(value: f64, threshold: &crate::api::Threshold) -> Result<bool, String> {
    let bound = |b: &Option<String>| -> Result<Option<f64>, String> {
        b.as_deref()
            .map(|t| {
                t.trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| format!("threshold {t:?} is not a decimal number"))
            })
            .transpose()
    };
    let (min, max) = (bound(&threshold.min)?, bound(&threshold.max)?);
    Ok(min.is_none_or(|m| value >= m) && max.is_none_or(|m| value <= m))
}

fn time(t: Timestamp) -> Time {
    Time(t)
}

/// `gatePromotion` (delivery.md §5.5, "Decision").
pub fn decide(i: &Inputs<'_>) -> Gate {
    let promotion = i.stage.promotion.as_ref();
    let prior_state = i.prior.and_then(|p| p.promotion_state.clone());
    let same_revision = i
        .prior
        .and_then(|p| p.applied_revision.as_deref())
        .is_some_and(|r| r == i.revision);
    let prior_phase = prior_state
        .as_ref()
        .filter(|_| same_revision)
        .and_then(|s| s.phase);
    // The restart baseline spans revisions; it becomes the live totals
    // when the stage promotes.
    let live = i.restarts.map(|r| r.live.clone()).unwrap_or_default();
    let baseline = i.restarts.map(|r| r.baseline.clone()).unwrap_or_default();
    let promoted = |since: Timestamp, handled: Option<String>| Gate {
        decision: Decision::Promoted,
        state: PromotionState {
            phase: Some(PromotionPhase::Promoted),
            since: Some(time(since)),
            restart_baseline: live.clone(),
            ..PromotionState::default()
        },
        handled_token: handled,
        rollback: false,
    };
    // 1. Promoted at this revision: no gating again (drift reconciles).
    if prior_phase == Some(PromotionPhase::Promoted) {
        let since = prior_state.and_then(|s| s.since).map_or(i.now, |t| t.0);
        return promoted(since, None);
    }
    // 2. The break-glass token.
    let handled = i.prior.and_then(|p| p.last_handled_promotion.as_deref());
    if let Some(token) = i.token.filter(|t| Some(*t) != handled) {
        return promoted(i.now, Some(token.to_string()));
    }
    let Some(promotion) = promotion else {
        return promoted(i.now, None);
    };
    // 3, 4. A restart or event check over its allowance blocks.
    let tripped = i
        .restarts
        .and_then(|r| r.verdict.as_ref())
        .map(|v| (v, "restart"))
        .or(i.event.map(|v| (v, "event")));
    if let Some((verdict, kind)) = tripped {
        let since = prior_state
            .as_ref()
            .filter(|_| prior_phase == Some(PromotionPhase::Blocked))
            .and_then(|s| s.since.as_ref())
            .map_or(i.now, |t| t.0);
        let soak_until = prior_state
            .as_ref()
            .filter(|_| same_revision)
            .and_then(|s| s.soak_until.clone());
        let what = if kind == "restart" {
            format!(
                "restart check \"{}\" saw {} restart(s) beyond its baseline (at most {} allowed)",
                verdict.check, verdict.observed, verdict.allowed
            )
        } else {
            format!(
                "event check \"{}\" saw {} matching Warning event(s) (at most {} allowed)",
                verdict.check, verdict.observed, verdict.allowed
            )
        };
        let mut state = PromotionState {
            phase: Some(PromotionPhase::Blocked),
            since: Some(time(since)),
            soak_until,
            restart_baseline: baseline.clone(),
            ..PromotionState::default()
        };
        if kind == "restart" {
            state.restart_check = Some(verdict.check.clone());
            state.observed_restarts = Some(verdict.observed);
        } else {
            state.event_check = Some(verdict.check.clone());
            state.observed_events = Some(verdict.observed);
        }
        return Gate {
            decision: Decision::Hold {
                reason: StageSetReason::PromotionBlocked,
                message: format!(
                    "stage \"{}\" promotion blocked at revision {}: {what}{}",
                    i.stage.name,
                    i.revision,
                    if verdict.rollback {
                        ""
                    } else {
                        NOT_ROLLED_BACK
                    }
                ),
                requeue: i.retry,
            },
            state,
            handled_token: None,
            rollback: verdict.rollback,
        };
    }
    // 5. Analysis: consecutive failures at this revision beyond the limit
    // block (unless it is a dry run).
    let analysis_spec = promotion.analysis.as_ref();
    let analysis_interval =
        super::parse_duration(analysis_spec.and_then(|a| a.interval.as_ref())).unwrap_or(i.retry);
    let mut failures = 0;
    let mut failing_now = false;
    let dry_run = analysis_spec.and_then(|a| a.dry_run) == Some(true);
    let last_analysis = i.analysis.map(|a| a.result.clone());
    if let (Some(spec), Some(a)) = (analysis_spec, i.analysis) {
        let allow_errors = spec.on_source_error == Some(crate::api::SourceErrorPolicy::Allow);
        failing_now = a.breached || (a.source_error && !allow_errors);
        let before = prior_state
            .as_ref()
            .filter(|_| same_revision)
            .and_then(|s| s.analysis_failures)
            .unwrap_or(0);
        failures = if failing_now { before + 1 } else { 0 };
        let limit = spec.failure_limit.unwrap_or(0);
        if failures > limit && !dry_run {
            let rollback = spec.on_failure == Some(crate::api::GateFailurePolicy::Rollback);
            let since = prior_state
                .as_ref()
                .filter(|_| prior_phase == Some(PromotionPhase::Blocked))
                .and_then(|s| s.since.as_ref())
                .map_or(i.now, |t| t.0);
            return Gate {
                decision: Decision::Hold {
                    reason: StageSetReason::PromotionBlocked,
                    message: format!(
                        "stage \"{}\" promotion blocked at revision {}: analysis failed {failures} time(s) in a row (failureLimit {limit}){}{}",
                        i.stage.name,
                        i.revision,
                        describe_checks(&a.result),
                        if rollback { "" } else { NOT_ROLLED_BACK }
                    ),
                    requeue: analysis_interval,
                },
                state: PromotionState {
                    phase: Some(PromotionPhase::Blocked),
                    since: Some(time(since)),
                    soak_until: prior_state
                        .as_ref()
                        .filter(|_| same_revision)
                        .and_then(|s| s.soak_until.clone()),
                    analysis_failures: Some(failures),
                    restart_baseline: baseline.clone(),
                    last_analysis,
                    ..PromotionState::default()
                },
                handled_token: None,
                rollback,
            };
        }
    }
    let analysis_failures = analysis_spec.map(|_| failures);
    // 6. Soak.
    let soak = super::parse_duration(promotion.soak.as_ref());
    if let Some(soak) = soak
        && !matches!(
            prior_phase,
            Some(PromotionPhase::Analyzing | PromotionPhase::AwaitingManual)
        )
    {
        let soak_span = jiff::SignedDuration::try_from(soak).unwrap_or(jiff::SignedDuration::MAX);
        let known_until = prior_state
            .as_ref()
            .filter(|_| same_revision)
            .and_then(|s| s.soak_until.as_ref())
            .map(|t| t.0);
        let soaking_since = prior_state
            .as_ref()
            .filter(|s| same_revision && s.phase == Some(PromotionPhase::Soaking))
            .and_then(|s| s.since.as_ref())
            .map(|t| t.0);
        let start = known_until
            .and_then(|u| u.checked_sub(soak_span).ok())
            .or(soaking_since)
            .unwrap_or(i.now);
        let until = start.checked_add(soak_span).unwrap_or(Timestamp::MAX);
        let fast_tracked = i.fast_track_ok
            && promotion.fast_track.as_ref().is_some_and(|f| {
                let after = super::parse_duration(f.after.as_ref())
                    .and_then(|d| jiff::SignedDuration::try_from(d).ok())
                    .unwrap_or(jiff::SignedDuration::ZERO);
                start.checked_add(after).is_ok_and(|t| i.now >= t)
            });
        if i.now < until && !fast_tracked {
            let wait = Duration::try_from(until.duration_since(i.now)).unwrap_or_default();
            return Gate {
                decision: Decision::Hold {
                    reason: StageSetReason::Soaking,
                    message: format!("stage \"{}\" is soaking until {until}", i.stage.name),
                    requeue: wait.max(Duration::from_secs(1)),
                },
                state: PromotionState {
                    phase: Some(PromotionPhase::Soaking),
                    since: Some(time(soaking_since.unwrap_or(start))),
                    soak_until: Some(time(until)),
                    restart_baseline: baseline.clone(),
                    analysis_failures,
                    last_analysis: last_analysis.clone(),
                    ..PromotionState::default()
                },
                handled_token: None,
                rollback: false,
            };
        }
    }
    // 7. Analysis still failing (within its limit, or a dry run that
    // blocks nothing): keep analyzing.
    if failing_now && !dry_run {
        let since = prior_state
            .as_ref()
            .filter(|_| prior_phase == Some(PromotionPhase::Analyzing))
            .and_then(|s| s.since.as_ref())
            .map_or(i.now, |t| t.0);
        return Gate {
            decision: Decision::Hold {
                reason: StageSetReason::Soaking,
                message: format!(
                    "stage \"{}\" is analyzing at revision {}: {failures} failing evaluation(s){}",
                    i.stage.name,
                    i.revision,
                    last_analysis
                        .as_ref()
                        .map(describe_checks)
                        .unwrap_or_default()
                ),
                requeue: analysis_interval,
            },
            state: PromotionState {
                phase: Some(PromotionPhase::Analyzing),
                since: Some(time(since)),
                analysis_failures,
                restart_baseline: baseline.clone(),
                last_analysis,
                ..PromotionState::default()
            },
            handled_token: None,
            rollback: false,
        };
    }
    // 8. A human decides.
    if promotion.require_manual_promotion == Some(true) {
        let since = prior_state
            .as_ref()
            .filter(|_| prior_phase == Some(PromotionPhase::AwaitingManual))
            .and_then(|s| s.since.as_ref())
            .map_or(i.now, |t| t.0);
        return Gate {
            decision: Decision::Hold {
                reason: StageSetReason::AwaitingPromotion,
                message: format!(
                    "stage \"{stage}\" is Ready at revision {rev} and waits for manual promotion: kubectl -n {ns} annotate stageset/{ss} --overwrite stages.metio.wtf/promote={stage}@<token>",
                    stage = i.stage.name,
                    rev = i.revision,
                    ns = i.namespace,
                    ss = i.stageset,
                ),
                requeue: i.retry,
            },
            state: PromotionState {
                phase: Some(PromotionPhase::AwaitingManual),
                since: Some(time(since)),
                restart_baseline: baseline.clone(),
                analysis_failures,
                last_analysis,
                ..PromotionState::default()
            },
            handled_token: None,
            rollback: false,
        };
    }
    // 9.
    promoted(i.now, None)
}

/// ` (check a=0.2 not within its threshold, …)` for a message.
fn describe_checks(result: &crate::api::AnalysisResult) -> String {
    let bad: Vec<String> = result
        .checks
        .iter()
        .filter(|c| c.ok != Some(true))
        .map(|c| match (&c.value, &c.error) {
            (_, Some(e)) => format!("check \"{}\" unreadable: {e}", c.name),
            (Some(v), None) => format!("check \"{}\" = {v} outside its threshold", c.name),
            (None, None) => format!("check \"{}\" failed", c.name),
        })
        .collect();
    if bad.is_empty() {
        String::new()
    } else {
        format!(" ({})", bad.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stage(promotion: serde_json::Value) -> Stage {
        serde_json::from_value(
            json!({"name": "canary", "sourceRef": {"name": "app"}, "promotion": promotion}),
        )
        .unwrap()
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn run(stage: &Stage, prior: Option<&StageStatus>, token: Option<&str>, now: &str) -> Gate {
        decide(&Inputs {
            stage,
            namespace: "shop",
            stageset: "web",
            prior,
            revision: "r2",
            token,
            now: ts(now),
            retry: Duration::from_secs(60),
            restarts: None,
            event: None,
            analysis: None,
            fast_track_ok: false,
        })
    }

    fn prior(gate: &Gate, revision: &str, handled: Option<&str>) -> StageStatus {
        StageStatus {
            name: "canary".into(),
            applied_revision: Some(revision.into()),
            promotion_state: Some(gate.state.clone()),
            last_handled_promotion: handled.map(String::from),
            ..StageStatus::default()
        }
    }

    #[test]
    fn soak_holds_until_its_end_and_survives_passes() {
        let s = stage(json!({"soak": "10m"}));
        let g = run(&s, None, None, "2026-12-07T10:00:00Z");
        assert_eq!(g.state.phase, Some(PromotionPhase::Soaking));
        assert_eq!(
            g.state.soak_until.as_ref().unwrap().0,
            ts("2026-12-07T10:10:00Z")
        );
        assert!(
            matches!(&g.decision, Decision::Hold { reason: StageSetReason::Soaking, requeue, .. } if *requeue == Duration::from_secs(600))
        );
        // Five minutes later, same revision: the same end.
        let p = prior(&g, "r2", None);
        let g2 = run(&s, Some(&p), None, "2026-12-07T10:05:00Z");
        assert_eq!(g2.state.soak_until, g.state.soak_until);
        assert_eq!(g2.state.since, g.state.since);
        // At the end: promoted, and stays promoted on later passes.
        let g3 = run(
            &s,
            Some(&prior(&g2, "r2", None)),
            None,
            "2026-12-07T10:10:00Z",
        );
        assert_eq!(g3.decision, Decision::Promoted);
        let g4 = run(
            &s,
            Some(&prior(&g3, "r2", None)),
            None,
            "2026-12-07T11:00:00Z",
        );
        assert_eq!(g4.decision, Decision::Promoted);
        // A new revision soaks again.
        let g5 = run(
            &s,
            Some(&prior(&g3, "r1", None)),
            None,
            "2026-12-07T11:00:00Z",
        );
        assert_eq!(g5.state.phase, Some(PromotionPhase::Soaking));
    }

    #[test]
    fn manual_promotion_waits_for_a_fresh_token() {
        let s = stage(json!({"soak": "5m", "requireManualPromotion": true}));
        let g = run(&s, None, None, "2026-12-07T10:00:00Z");
        assert_eq!(g.state.phase, Some(PromotionPhase::Soaking));
        let g = run(
            &s,
            Some(&prior(&g, "r2", None)),
            None,
            "2026-12-07T10:06:00Z",
        );
        assert_eq!(g.state.phase, Some(PromotionPhase::AwaitingManual));
        let Decision::Hold {
            reason, message, ..
        } = &g.decision
        else {
            panic!("{g:?}")
        };
        assert_eq!(*reason, StageSetReason::AwaitingPromotion);
        assert!(
            message.contains("stages.metio.wtf/promote=canary@<token>"),
            "{message}"
        );
        // A token for another stage, or one already handled, does nothing.
        let p = prior(&g, "r2", Some("t1"));
        assert_eq!(
            run(&s, Some(&p), Some("t1"), "2026-12-07T10:07:00Z")
                .state
                .phase,
            Some(PromotionPhase::AwaitingManual)
        );
        assert_eq!(promote_token(Some("other@t2"), "canary"), None);
        // A fresh token promotes and is recorded.
        let g = run(
            &s,
            Some(&p),
            promote_token(Some("canary@t2"), "canary"),
            "2026-12-07T10:08:00Z",
        );
        assert_eq!(g.decision, Decision::Promoted);
        assert_eq!(g.handled_token.as_deref(), Some("t2"));
    }

    fn analysis(breached: bool) -> Analysis {
        Analysis {
            result: crate::api::AnalysisResult::default(),
            breached,
            source_error: false,
        }
    }

    fn run_analysed(stage: &Stage, prior: Option<&StageStatus>, a: &Analysis) -> Gate {
        decide(&Inputs {
            stage,
            namespace: "shop",
            stageset: "web",
            prior,
            revision: "r2",
            token: None,
            now: ts("2026-12-07T10:00:00Z"),
            retry: Duration::from_secs(60),
            restarts: None,
            event: None,
            analysis: Some(a),
            fast_track_ok: false,
        })
    }

    #[test]
    fn analysis_failures_count_up_to_the_limit_then_block() {
        let s = stage(
            json!({"analysis": {"failureLimit": 1, "interval": "2m", "checks": [
            {"name": "e", "source": {"prometheus": {"address": "http://p", "query": "q"}}, "threshold": {"max": "1"}}]}}),
        );
        let g = run_analysed(&s, None, &analysis(true));
        assert_eq!(g.state.phase, Some(PromotionPhase::Analyzing));
        assert!(
            matches!(&g.decision, Decision::Hold { requeue, .. } if *requeue == Duration::from_secs(120))
        );
        let g = run_analysed(&s, Some(&prior(&g, "r2", None)), &analysis(true));
        assert_eq!(g.state.phase, Some(PromotionPhase::Blocked));
        assert_eq!(g.state.analysis_failures, Some(2));
        // A pass resets the count and promotes.
        let g = run_analysed(&s, Some(&prior(&g, "r2", None)), &analysis(false));
        assert_eq!(g.decision, Decision::Promoted);
        // A dry run never holds.
        let dry = stage(json!({"analysis": {"dryRun": true, "checks": [
            {"name": "e", "source": {"prometheus": {"address": "http://p", "query": "q"}}, "threshold": {"max": "1"}}]}}));
        assert_eq!(
            run_analysed(&dry, None, &analysis(true)).decision,
            Decision::Promoted
        );
        assert_eq!(
            within(
                0.5,
                &crate::api::Threshold {
                    min: Some("0.2".into()),
                    max: None
                }
            ),
            Ok(true)
        );
        assert!(
            within(
                0.5,
                &crate::api::Threshold {
                    min: Some("x".into()),
                    max: None
                }
            )
            .is_err()
        );
    }

    #[test]
    fn a_blocked_analysis_asks_for_a_rollback_only_when_told_to() {
        let check = json!([{"name": "e", "source": {"prometheus": {"address": "http://p", "query": "q"}}, "threshold": {"max": "1"}}]);
        let hold = stage(json!({"analysis": {"checks": check}}));
        let g = run_analysed(&hold, None, &analysis(true));
        assert!(!g.rollback);
        assert!(
            matches!(&g.decision, Decision::Hold { message, .. } if message.ends_with("; not rolled back (onFailure: Hold)"))
        );
        let back = stage(json!({"analysis": {"onFailure": "Rollback", "checks": check}}));
        let g = run_analysed(&back, None, &analysis(true));
        assert_eq!(g.state.phase, Some(PromotionPhase::Blocked));
        assert!(g.rollback);
        assert!(
            matches!(&g.decision, Decision::Hold { message, .. } if message.ends_with("failureLimit 0)"))
        );
        assert!(can_roll_back(&back));
        assert!(!can_roll_back(&hold));
        // A dry run never blocks, so it never rolls back.
        let dry =
            stage(json!({"analysis": {"onFailure": "Rollback", "dryRun": true, "checks": check}}));
        assert!(!can_roll_back(&dry));
        assert!(!run_analysed(&dry, None, &analysis(true)).rollback);
        // A gate or any one check of it.
        let sel = json!({"matchLabels": {"app": "api"}});
        assert!(can_roll_back(&stage(
            json!({"restartGate": {"onFailure": "Rollback", "checks": [{"name": "a", "selector": sel}]}})
        )));
        assert!(can_roll_back(&stage(json!({"eventGate": {"checks": [
            {"name": "a", "selector": sel, "reasons": ["BackOff"], "onFailure": "Rollback"}]}}))));
        assert!(!can_roll_back(&stage(json!({"eventGate": {"checks": [
            {"name": "a", "selector": sel, "reasons": ["BackOff"]}]}}))));
    }

    #[test]
    fn no_promotion_config_promotes() {
        let s: Stage =
            serde_json::from_value(json!({"name": "a", "sourceRef": {"name": "app"}})).unwrap();
        assert_eq!(
            run(&s, None, None, "2026-12-07T10:00:00Z").decision,
            Decision::Promoted
        );
    }
}
