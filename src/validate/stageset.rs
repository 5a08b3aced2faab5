//! The StageSet rule set (api.md §11.2, delivery.md §2.20): one validator for
//! admission and for the reconciler's R5 fallback, first failing rule wins,
//! messages exactly as upstream formats them.
//!
//! Before any rule, every Go-duration field is parsed: upstream decodes the
//! object into `metav1.Duration`s first, so a malformed duration rejects the
//! object before rule WS-01 (as a decode error, HTTP 400 in the admission
//! response).
//!
//! The typed API cannot hold an unknown enum value, so the rules that check
//! enum values (WS-06, 36, 48, 51, 57, 62, 66) can only fire for an object
//! that bypassed the CRD schema and arrives as JSON at the webhook:
//! `decode.rs` then replaces such a value with a valid one, remembers the
//! original by JSON pointer, and the rule reports it at its place in the
//! evaluation order.

use std::collections::{HashMap, HashSet};

use crate::api::{
    Action, ActionScope, CustomHealthCheck, Duration, ErrorBudget, MetricSource, Migration,
    StageSet, StageSetSpec,
};

use super::Invalid;
use super::decode::BadEnums;
use super::gofmt::{parse_float, quote as q};
use super::{cron, selector, semver};

/// The most migrations an inline or sourced ladder may hold.
pub const MAX_MIGRATIONS_PER_LADDER: usize = 200;
/// The most actions one migration direction may hold.
pub const MAX_ACTIONS_PER_MIGRATION: usize = 100;
/// The most retries a migration action may ask for.
pub const MAX_MIGRATION_ACTION_RETRIES: i32 = 10;

type Res = Result<(), Invalid>;

fn rule(msg: String) -> Invalid {
    Invalid::Rule(msg)
}

/// Validates a StageSet with the admission rule set alone (without the
/// not-supported-yet table, see [`super::validate_stageset`]). The error is
/// the user-facing message.
pub fn stageset_rules(ss: &StageSet) -> Result<(), String> {
    check(ss, &BadEnums::new()).map_err(Invalid::message)
}

/// Validates a migration ladder (inline or loaded from an artifact): size,
/// then every migration, then unique names (WS-20 to WS-33).
pub fn validate_ladder(ladder: &[Migration]) -> Result<(), String> {
    validate_ladder_with(ladder, "", &BadEnums::new()).map_err(Invalid::message)
}

/// Validates one migration (WS-21 to WS-32).
pub fn validate_migration(m: &Migration) -> Result<(), String> {
    validate_migration_with(m, "", &BadEnums::new()).map_err(Invalid::message)
}

/// Go's `time.LoadLocation` as a validity check: empty, `UTC` and `Local`
/// always load; anything else must name an IANA zone exactly (case
/// included, as Go reads it from the zoneinfo files).
pub fn load_location(name: &str) -> Result<(), String> {
    if name.is_empty() || name == "UTC" || name == "Local" {
        return Ok(());
    }
    if name.contains("..") || name.starts_with('/') || name.starts_with('\\') {
        return Err("time: invalid location name".to_string());
    }
    match k8s_openapi::jiff::tz::TimeZone::get(name) {
        Ok(tz) if tz.iana_name() == Some(name) => Ok(()),
        _ => Err(format!("unknown time zone {name}")),
    }
}

/// The whole rule set. `bad` holds the enum values decoding replaced.
pub(crate) fn check(ss: &StageSet, bad: &BadEnums) -> Res {
    durations(&ss.spec)?;
    let v = Validator {
        spec: &ss.spec,
        namespace: ss.metadata.namespace.as_deref().unwrap_or(""),
        bad,
    };
    v.stages()?;
    v.on_rollback()?;
    v.migrations()?;
    v.version()?;
    v.decryption()?;
    v.kube_config()?;
    v.error_budgets()?;
    v.promotion()?;
    v.ready_checks()?;
    v.on_timeout()?;
    v.depends_on()?;
    v.windows()
}

// --- Durations (decode) ------------------------------------------------------

fn duration(path: &str, d: &Option<Duration>) -> Res {
    match d {
        Some(d) => d
            .parse()
            .map(|_| ())
            .map_err(|e| Invalid::Decode(format!("{path}: time: {e}"))),
        None => Ok(()),
    }
}

fn action_durations(path: &str, actions: &Option<Vec<Action>>) -> Res {
    for (j, a) in actions.iter().flatten().enumerate() {
        let p = format!("{path}[{j}]");
        duration(&format!("{p}.timeout"), &a.timeout)?;
        if let Some(w) = &a.wait {
            duration(&format!("{p}.wait.duration"), &w.duration)?;
            duration(&format!("{p}.wait.timeout"), &w.timeout)?;
        }
    }
    Ok(())
}

fn budget_durations(path: &str, eb: &Option<ErrorBudget>) -> Res {
    match eb {
        Some(eb) => duration(&format!("{path}.interval"), &eb.interval),
        None => Ok(()),
    }
}

fn durations(spec: &StageSetSpec) -> Res {
    duration("spec.interval", &spec.interval)?;
    duration("spec.retryInterval", &spec.retry_interval)?;
    duration(
        "spec.driftDetectionInterval",
        &spec.drift_detection_interval,
    )?;
    duration("spec.timeout", &spec.timeout)?;
    for (k, m) in spec.migrations.iter().flatten().enumerate() {
        action_durations(&format!("spec.migrations[{k}].actions"), &m.actions)?;
        action_durations(&format!("spec.migrations[{k}].down"), &m.down)?;
    }
    action_durations("spec.onRollback", &spec.on_rollback)?;
    for (w, win) in spec.update_windows.iter().flatten().enumerate() {
        duration(&format!("spec.updateWindows[{w}].duration"), &win.duration)?;
    }
    budget_durations("spec.errorBudget", &spec.error_budget)?;
    for (i, st) in spec.stages.iter().enumerate() {
        let p = format!("spec.stages[{i}]");
        duration(&format!("{p}.timeout"), &st.timeout)?;
        if let Some(a) = &st.actions {
            action_durations(&format!("{p}.actions.pre"), &a.pre)?;
            action_durations(&format!("{p}.actions.post"), &a.post)?;
            action_durations(&format!("{p}.actions.onFailure"), &a.on_failure)?;
        }
        if let Some(rc) = &st.ready_checks {
            duration(&format!("{p}.readyChecks.timeout"), &rc.timeout)?;
        }
        if let Some(pr) = &st.promotion {
            duration(&format!("{p}.promotion.soak"), &pr.soak)?;
            if let Some(a) = &pr.analysis {
                duration(&format!("{p}.promotion.analysis.interval"), &a.interval)?;
            }
            if let Some(f) = &pr.fast_track {
                duration(&format!("{p}.promotion.fastTrack.after"), &f.after)?;
            }
        }
        budget_durations(&format!("{p}.errorBudget"), &st.error_budget)?;
    }
    Ok(())
}

// --- The rules ---------------------------------------------------------------

struct Validator<'a> {
    spec: &'a StageSetSpec,
    namespace: &'a str,
    bad: &'a BadEnums,
}

fn empty(s: &Option<String>) -> bool {
    s.as_deref().is_none_or(str::is_empty)
}

impl Validator<'_> {
    fn bad(&self, ptr: &str) -> Option<&str> {
        self.bad.get(ptr).map(String::as_str)
    }

    /// WS-01 to WS-10.
    fn stages(&self) -> Res {
        let mut seen = HashSet::new();
        for st in &self.spec.stages {
            if !seen.insert(st.name.as_str()) {
                return Err(rule(format!(
                    "stage name {} is not unique; stage names must be unique within the StageSet",
                    q(&st.name)
                )));
            }
        }
        for st in &self.spec.stages {
            let r = &st.source_ref;
            if r.is_producer() && empty(&r.api_version) {
                return Err(rule(format!(
                    "stage {} sourceRef: kind {} is a producer reference and requires apiVersion (the API group identifies the producer's ExternalArtifact back-pointer)",
                    q(&st.name),
                    q(r.kind.as_deref().unwrap_or_default())
                )));
            }
        }
        for (i, st) in self.spec.stages.iter().enumerate() {
            let Some(actions) = &st.actions else {
                continue;
            };
            let name = q(&st.name);
            let mut seen: HashMap<&str, &str> = HashMap::new();
            for (phase, list) in [
                ("pre", &actions.pre),
                ("post", &actions.post),
                ("onFailure", &actions.on_failure),
            ] {
                for (j, a) in list.iter().flatten().enumerate() {
                    let n = a.verbs().len();
                    let an = q(&a.name);
                    if n != 1 {
                        return Err(rule(format!(
                            "stage {name} action {an} ({phase}): exactly one of patch, http, wait, job, delete, apply must be set, found {n}"
                        )));
                    }
                    if a.name.is_empty() {
                        return Err(rule(format!(
                            "stage {name} has an action with an empty name in {phase}; action names are the idempotency-ledger key and must be set"
                        )));
                    }
                    if let Some(first) = seen.get(a.name.as_str()) {
                        return Err(rule(format!(
                            "stage {name} has duplicate action name {an} ({first} and {phase}); action names are the idempotency-ledger key and must be unique across pre, post, and onFailure"
                        )));
                    }
                    seen.insert(&a.name, phase);
                    wait_expr(&format!("stage {name} action {an} ({phase})"), a)?;
                    let ptr = format!("/spec/stages/{i}/actions/{phase}/{j}/scope");
                    if let Some(scope) = self.bad(&ptr) {
                        return Err(rule(format!(
                            "stage {name} action {an} ({phase}): unknown scope {}; must be Revision, Version, or Lifetime",
                            q(scope)
                        )));
                    }
                    if phase == "onFailure" && a.scope.is_some() {
                        return Err(rule(format!(
                            "stage {name} onFailure action {an} sets scope; scope is valid only on pre/post actions, and onFailure is ledger-exempt"
                        )));
                    }
                    if a.scope == Some(ActionScope::Version) && self.spec.version.is_none() {
                        return Err(rule(format!(
                            "stage {name} action {an} sets scope: Version but spec.version is unset; version-scoped actions require a version to key on"
                        )));
                    }
                    if let Some(anchor) = &a.completion_anchor {
                        if a.scope != Some(ActionScope::Lifetime) {
                            return Err(rule(format!(
                                "stage {name} action {an} ({phase}): completionAnchor is valid only on a scope: Lifetime action"
                            )));
                        }
                        if anchor.api_version.is_empty()
                            || anchor.kind.is_empty()
                            || anchor.name.is_empty()
                        {
                            return Err(rule(format!(
                                "stage {name} action {an} ({phase}): completionAnchor requires apiVersion, kind, and name"
                            )));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// WS-11 to WS-15.
    fn on_rollback(&self) -> Res {
        let mut seen = HashSet::new();
        for (j, a) in self.spec.on_rollback.iter().flatten().enumerate() {
            let an = q(&a.name);
            let n = a.verbs().len();
            if n != 1 {
                return Err(rule(format!(
                    "onRollback action {an}: exactly one of patch, http, wait, job, delete, apply must be set, found {n}"
                )));
            }
            if a.name.is_empty() {
                return Err(rule(
                    "onRollback has an action with an empty name; action names identify the action in events and must be set".to_string(),
                ));
            }
            if !seen.insert(a.name.as_str()) {
                return Err(rule(format!(
                    "onRollback has duplicate action name {an}; action names must be unique"
                )));
            }
            wait_expr(&format!("onRollback action {an}"), a)?;
            let ptr = format!("/spec/onRollback/{j}/scope");
            if a.scope.is_some() || self.bad(&ptr).is_some() {
                return Err(rule(format!(
                    "onRollback action {an} sets scope; scope is valid only on a stage's pre/post actions, and onRollback is ledger-exempt"
                )));
            }
            if a.completion_anchor.is_some() {
                return Err(rule(format!(
                    "onRollback action {an} sets completionAnchor; it is valid only on a scope: Lifetime pre/post action"
                )));
            }
        }
        Ok(())
    }

    /// WS-16 to WS-34.
    fn migrations(&self) -> Res {
        let inline = self.spec.migrations.as_deref().unwrap_or_default();
        let has_inline = !inline.is_empty();
        let source = self.spec.migrations_source_ref.as_ref();
        if has_inline && source.is_some() {
            return Err(rule(
                "spec.migrations and spec.migrationsSourceRef are mutually exclusive".to_string(),
            ));
        }
        if !has_inline && source.is_none() {
            return Ok(());
        }
        if self.spec.version.is_none() {
            return Err(rule("migrations require spec.version".to_string()));
        }
        if let Some(src) = source
            && let Some(ns) = src.source_ref.namespace.as_deref()
            && !ns.is_empty()
            && ns != self.namespace
        {
            return Err(rule(
                "spec.migrationsSourceRef must reference a source in the StageSet's own namespace; cross-namespace migration sources are not allowed".to_string(),
            ));
        }
        let mut anchors = HashSet::new();
        for st in &self.spec.stages {
            if !anchors.insert(st.name.as_str()) {
                return Err(rule(format!(
                    "stage name {} collides with another stage name or migrationAnchor",
                    q(&st.name)
                )));
            }
            if let Some(anchor) = st.migration_anchor.as_deref().filter(|a| !a.is_empty())
                && !anchors.insert(anchor)
            {
                return Err(rule(format!(
                    "stage {} migrationAnchor {} collides with another stage name or migrationAnchor",
                    q(&st.name),
                    q(anchor)
                )));
            }
        }
        if source.is_some() {
            // A sourced ladder is validated when its artifact is fetched.
            return Ok(());
        }
        validate_ladder_with(inline, "/spec/migrations", self.bad)?;
        for m in inline {
            if let Some(stage) = m.stage.as_deref().filter(|s| !s.is_empty())
                && !anchors.contains(stage)
            {
                return Err(rule(format!(
                    "migration {} anchors to unknown stage or anchor {}",
                    q(&m.name),
                    q(stage)
                )));
            }
        }
        Ok(())
    }

    /// WS-35.
    fn version(&self) -> Res {
        let Some(v) = &self.spec.version else {
            return Ok(());
        };
        let n = usize::from(!empty(&v.value))
            + usize::from(v.from_object.is_some())
            + usize::from(v.from_artifact.is_some());
        if n != 1 {
            return Err(rule(format!(
                "spec.version must set exactly one of value, fromObject, or fromArtifact, found {n}"
            )));
        }
        // Beyond upstream, which finds out when the version is resolved.
        if let Some(path) = v
            .from_object
            .as_ref()
            .and_then(|o| o.field_path.as_deref())
            .filter(|p| !p.trim().is_empty())
            && let Err(e) = super::jsonpath::JsonPath::parse(path)
        {
            return Err(rule(format!(
                "spec.version.fromObject.fieldPath is not a valid JSONPath: {e}"
            )));
        }
        Ok(())
    }

    /// WS-36, WS-37.
    fn decryption(&self) -> Res {
        let Some(d) = &self.spec.decryption else {
            return Ok(());
        };
        if let Some(provider) = self.bad("/spec/decryption/provider") {
            return Err(rule(format!(
                "spec.decryption.provider must be \"sops\", got {}",
                q(provider)
            )));
        }
        if d.secret_ref.as_ref().is_some_and(|r| r.name.is_empty()) {
            return Err(rule(
                "spec.decryption.secretRef.name must be set when secretRef is given".to_string(),
            ));
        }
        Ok(())
    }

    /// WS-38 to WS-41.
    fn kube_config(&self) -> Res {
        let Some(kc) = &self.spec.kube_config else {
            return Ok(());
        };
        let msg = match (&kc.secret_ref, &kc.config_map_ref) {
            (Some(_), Some(_)) => {
                "spec.kubeConfig must set exactly one of secretRef or configMapRef, not both"
            }
            (None, None) => "spec.kubeConfig must set one of secretRef or configMapRef",
            (Some(s), None) if s.name.is_empty() => "spec.kubeConfig.secretRef.name must be set",
            (None, Some(c)) if c.name.is_empty() => "spec.kubeConfig.configMapRef.name must be set",
            _ => return Ok(()),
        };
        Err(rule(msg.to_string()))
    }

    /// WS-42 to WS-48, rollout-wide then per stage.
    fn error_budgets(&self) -> Res {
        if let Some(eb) = &self.spec.error_budget {
            self.budget("spec.errorBudget", eb, "/spec/errorBudget")?;
        }
        for (i, st) in self.spec.stages.iter().enumerate() {
            if let Some(eb) = &st.error_budget {
                self.budget(
                    &format!("stage {} errorBudget", q(&st.name)),
                    eb,
                    &format!("/spec/stages/{i}/errorBudget"),
                )?;
            }
        }
        Ok(())
    }

    fn budget(&self, at: &str, eb: &ErrorBudget, ptr: &str) -> Res {
        metric_source(&format!("{at}.source"), &eb.source)?;
        let freeze = threshold(&format!("{at}.freezeThreshold"), &eb.freeze_threshold)?;
        if let Some(resume_text) = eb.resume_threshold.as_deref().filter(|s| !s.is_empty()) {
            let resume = threshold(&format!("{at}.resumeThreshold"), resume_text)?;
            if resume < freeze {
                return Err(rule(format!(
                    "{at}.resumeThreshold ({resume_text}) must be >= freezeThreshold ({})",
                    eb.freeze_threshold
                )));
            }
        }
        if let Some(v) = self.bad(&format!("{ptr}/onSourceError")) {
            return Err(rule(format!(
                "{at}.onSourceError must be Allow or Hold, got {}",
                q(v)
            )));
        }
        Ok(())
    }

    /// WS-49 to WS-62 (with WS-42 to 45 for their metric sources), per stage:
    /// fastTrack, restartGate, eventGate, analysis.
    fn promotion(&self) -> Res {
        for (i, st) in self.spec.stages.iter().enumerate() {
            let Some(p) = &st.promotion else {
                continue;
            };
            let name = q(&st.name);
            let ptr = format!("/spec/stages/{i}/promotion");
            if let Some(ft) = &p.fast_track {
                let soak_positive = p
                    .soak
                    .as_ref()
                    .and_then(|d| d.parse().ok())
                    .is_some_and(|d| d.is_positive());
                if !soak_positive {
                    return Err(rule(format!(
                        "stage {name} promotion.fastTrack requires a soak to shorten"
                    )));
                }
                metric_source(
                    &format!("stage {name} promotion.fastTrack.source"),
                    &ft.source,
                )?;
                threshold(&format!("stage {name} promotion.fastTrack.max"), &ft.max)?;
            }
            if let Some(g) = &p.restart_gate {
                let checks: Vec<GateCheck<'_>> = g
                    .checks
                    .iter()
                    .map(|c| GateCheck {
                        name: &c.name,
                        selector: &c.selector,
                        reasons: None,
                    })
                    .collect();
                self.gate(&name, "restartGate", &format!("{ptr}/restartGate"), &checks)?;
            }
            if let Some(g) = &p.event_gate {
                let checks: Vec<GateCheck<'_>> = g
                    .checks
                    .iter()
                    .map(|c| GateCheck {
                        name: &c.name,
                        selector: &c.selector,
                        reasons: Some(&c.reasons),
                    })
                    .collect();
                self.gate(&name, "eventGate", &format!("{ptr}/eventGate"), &checks)?;
            }
            let Some(an) = &p.analysis else {
                continue;
            };
            if an.checks.is_empty() {
                return Err(rule(format!(
                    "stage {name} promotion.analysis must declare at least one check"
                )));
            }
            let mut seen = HashSet::new();
            for c in &an.checks {
                let cn = q(&c.name);
                if c.name.is_empty() {
                    return Err(rule(format!(
                        "stage {name} promotion.analysis has a check with an empty name"
                    )));
                }
                if !seen.insert(c.name.as_str()) {
                    return Err(rule(format!(
                        "stage {name} promotion.analysis has duplicate check name {cn}"
                    )));
                }
                metric_source(
                    &format!("stage {name} promotion.analysis check {cn} source"),
                    &c.source,
                )?;
                if c.threshold.min.is_none() && c.threshold.max.is_none() {
                    return Err(rule(format!(
                        "stage {name} promotion.analysis check {cn} must set at least one of threshold.min or threshold.max"
                    )));
                }
                if let Some(min) = &c.threshold.min {
                    threshold(&format!("stage {name} check {cn} threshold.min"), min)?;
                }
                if let Some(max) = &c.threshold.max {
                    threshold(&format!("stage {name} check {cn} threshold.max"), max)?;
                }
            }
            if let Some(v) = self.bad(&format!("{ptr}/analysis/onFailure")) {
                return Err(rule(format!(
                    "stage {name} promotion.analysis.onFailure must be Hold or Rollback, got {}",
                    q(v)
                )));
            }
            if let Some(v) = self.bad(&format!("{ptr}/analysis/onSourceError")) {
                return Err(rule(format!(
                    "stage {name} promotion.analysis.onSourceError must be Hold or Allow, got {}",
                    q(v)
                )));
            }
        }
        Ok(())
    }

    /// WS-51 to WS-57 for one restart or event gate.
    fn gate(&self, stage: &str, gate: &str, ptr: &str, checks: &[GateCheck<'_>]) -> Res {
        if let Some(v) = self.bad(&format!("{ptr}/onFailure")) {
            return Err(rule(format!(
                "stage {stage} promotion.{gate}.onFailure must be Hold or Rollback, got {}",
                q(v)
            )));
        }
        if checks.is_empty() {
            return Err(rule(format!(
                "stage {stage} promotion.{gate} must declare at least one check"
            )));
        }
        let mut seen = HashSet::new();
        for (k, c) in checks.iter().enumerate() {
            let cn = q(c.name);
            if c.name.is_empty() {
                return Err(rule(format!(
                    "stage {stage} promotion.{gate} has a check with an empty name"
                )));
            }
            if !seen.insert(c.name) {
                return Err(rule(format!(
                    "stage {stage} promotion.{gate} has duplicate check name {cn}"
                )));
            }
            match selector::requirements(c.selector) {
                Err(e) => {
                    return Err(rule(format!(
                        "stage {stage} promotion.{gate} check {cn} has an invalid selector: {e}"
                    )));
                }
                Ok(0) => {
                    return Err(rule(format!(
                        "stage {stage} promotion.{gate} check {cn} selector must match at least one label"
                    )));
                }
                Ok(_) => {}
            }
            if c.reasons.is_some_and(<[String]>::is_empty) {
                return Err(rule(format!(
                    "stage {stage} promotion.{gate} check {cn} must name at least one event reason"
                )));
            }
            if let Some(v) = self.bad(&format!("{ptr}/checks/{k}/onFailure")) {
                return Err(rule(format!(
                    "stage {stage} promotion.{gate} check {cn} onFailure must be Hold or Rollback, got {}",
                    q(v)
                )));
            }
        }
        Ok(())
    }

    /// WS-63 to WS-65.
    fn ready_checks(&self) -> Res {
        for st in &self.spec.stages {
            let Some(rc) = &st.ready_checks else {
                continue;
            };
            let name = q(&st.name);
            for (i, c) in rc.checks.iter().flatten().enumerate() {
                if c.kind.is_empty() || c.name.is_empty() {
                    return Err(rule(format!(
                        "stage {name} readyChecks.checks[{i}]: kind and name are required"
                    )));
                }
            }
            for (i, hc) in rc.exprs.iter().flatten().enumerate() {
                ready_expr(&name, i, hc)?;
            }
        }
        Ok(())
    }

    /// WS-66, rollout-wide then per stage.
    fn on_timeout(&self) -> Res {
        if let Some(v) = self.bad("/spec/onTimeout") {
            return Err(rule(format!(
                "spec.onTimeout must be Hold or Rollback, got {}",
                q(v)
            )));
        }
        for (i, st) in self.spec.stages.iter().enumerate() {
            if let Some(v) = self.bad(&format!("/spec/stages/{i}/onTimeout")) {
                return Err(rule(format!(
                    "stage {} onTimeout must be Hold or Rollback, got {}",
                    q(&st.name),
                    q(v)
                )));
            }
        }
        Ok(())
    }

    /// WS-67, WS-68.
    fn depends_on(&self) -> Res {
        for (i, d) in self.spec.depends_on.iter().flatten().enumerate() {
            if d.name.is_empty() {
                return Err(rule(format!("spec.dependsOn[{i}]: name is required")));
            }
            if let Some(min) = d.min_version.as_deref().filter(|m| !m.is_empty())
                && let Err(e) = semver::parse_version(min)
            {
                return Err(rule(format!(
                    "spec.dependsOn[{i}] ({}): minVersion {} is not a valid semver: {e}",
                    d.name,
                    q(min)
                )));
            }
        }
        Ok(())
    }

    /// WS-69 to WS-74, window by window.
    fn windows(&self) -> Res {
        for w in self.spec.update_windows.iter().flatten() {
            let schedule = w.schedule.as_deref().unwrap_or_default();
            let recurring = !schedule.is_empty() || w.duration.is_some();
            let absolute = w.from.is_some() || w.to.is_some();
            let msg = if recurring && absolute {
                "update window is both recurring (schedule/duration) and absolute (from/to)"
                    .to_string()
            } else if !recurring && !absolute {
                "update window sets neither a schedule+duration nor from+to".to_string()
            } else if absolute {
                match (&w.from, &w.to) {
                    (Some(from), Some(to)) if to.0 > from.0 => continue,
                    (Some(_), Some(_)) => {
                        "absolute update window to must be after from".to_string()
                    }
                    _ => "absolute update window requires both from and to".to_string(),
                }
            } else {
                let Some(d) = w.duration.as_ref().filter(|_| !schedule.is_empty()) else {
                    return Err(rule(
                        "recurring update window requires both schedule and duration".to_string(),
                    ));
                };
                let tz = w.time_zone.as_deref().unwrap_or_default();
                if let Err(e) = load_location(tz) {
                    return Err(rule(format!("timeZone {}: {e}", q(tz))));
                }
                if let Err(e) = cron::parse_standard(schedule, load_location) {
                    return Err(rule(format!("schedule {}: {e}", q(schedule))));
                }
                if d.parse().is_ok_and(|d| d.is_positive()) {
                    continue;
                }
                "recurring update window duration must be positive".to_string()
            };
            return Err(rule(msg));
        }
        Ok(())
    }
}

struct GateCheck<'a> {
    name: &'a str,
    selector: &'a crate::api::LabelSelector,
    /// Event gates only.
    reasons: Option<&'a [String]>,
}

/// WS-42 to WS-45 for one metric source.
fn metric_source(at: &str, src: &MetricSource) -> Res {
    let n = usize::from(src.prometheus.is_some()) + usize::from(src.webhook.is_some());
    if n != 1 {
        return Err(rule(format!(
            "{at} must set exactly one of prometheus or webhook, found {n}"
        )));
    }
    if let Some(p) = &src.prometheus {
        if p.address.is_empty() {
            return Err(rule(format!("{at}.prometheus.address must be set")));
        }
        if p.query.is_empty() {
            return Err(rule(format!("{at}.prometheus.query must be set")));
        }
        if p.secret_ref.as_ref().is_some_and(|r| r.name.is_empty()) {
            return Err(rule(format!(
                "{at}.prometheus.secretRef.name must be set when secretRef is given"
            )));
        }
    }
    if let Some(w) = &src.webhook {
        if w.url.is_empty() {
            return Err(rule(format!("{at}.webhook.url must be set")));
        }
        if w.json_path.is_empty() {
            return Err(rule(format!("{at}.webhook.jsonPath must be set")));
        }
        if w.secret_ref.as_ref().is_some_and(|r| r.name.is_empty()) {
            return Err(rule(format!(
                "{at}.webhook.secretRef.name must be set when secretRef is given"
            )));
        }
        // Beyond upstream, which finds out on the first query: a path that
        // cannot be parsed would only ever make the source unavailable.
        if let Err(e) = super::jsonpath::JsonPath::parse(&w.json_path) {
            return Err(rule(format!(
                "{at}.webhook.jsonPath is not a valid JSONPath: {e}"
            )));
        }
    }
    Ok(())
}

/// A decimal threshold (Go's `strconv.ParseFloat`).
fn threshold(at: &str, s: &str) -> Result<f64, Invalid> {
    parse_float(s).ok_or_else(|| rule(format!("{at} {} is not a number", q(s))))
}

/// apimachinery's `schema.ParseGroupVersion`.
fn parse_group_version(gv: &str) -> Result<(), String> {
    if gv.matches('/').count() > 1 {
        return Err(format!("unexpected GroupVersion string: {gv}"));
    }
    Ok(())
}

/// A wait action's `expr` (used when no `duration` is set) needs a target
/// and must compile, with the compiler the action runs it with.
fn wait_expr(at: &str, a: &Action) -> Res {
    let Some(w) = &a.wait else {
        return Ok(());
    };
    let Some(expr) = w.expr.as_deref().filter(|e| !e.trim().is_empty()) else {
        return Ok(());
    };
    if w.duration.is_some() {
        return Ok(());
    }
    let Some(target) = &w.target else {
        return Err(rule(format!(
            "{at}: wait.expr needs wait.target, the object it is evaluated on"
        )));
    };
    let check = CustomHealthCheck {
        api_version: target.api_version.clone().unwrap_or_else(|| "v1".into()),
        kind: target.kind.clone(),
        current: Some(expr.to_string()),
        ..Default::default()
    };
    match super::cel::compile(&check) {
        Ok(_) => Ok(()),
        Err(e) => {
            let detail = e.strip_prefix("current: ").unwrap_or(&e);
            Err(rule(format!(
                "{at}: wait.expr {}: {}",
                q(expr),
                detail.replace("invalid CEL expression: ", "compile CEL: ")
            )))
        }
    }
}

/// WS-64, WS-65 for one `readyChecks.exprs[]` entry, compiled with the
/// reconciler's CEL compiler so admission and verify agree on every
/// expression.
fn ready_expr(stage: &str, i: usize, hc: &CustomHealthCheck) -> Res {
    let at = format!("stage {stage} readyChecks.exprs[{i}]");
    if let Err(e) = parse_group_version(&hc.api_version) {
        return Err(rule(format!("{at} apiVersion {}: {e}", q(&hc.api_version))));
    }
    if hc.api_version.trim().is_empty() {
        return Err(rule(format!(
            "{at} apiVersion {}: apiVersion is required",
            q(&hc.api_version)
        )));
    }
    if hc.kind.trim().is_empty() {
        return Err(rule(format!("{at} kind {}: kind is required", q(&hc.kind))));
    }
    for (which, source) in [
        ("current", &hc.current),
        ("inProgress", &hc.in_progress),
        ("failed", &hc.failed),
    ] {
        let Some(src) = source else {
            continue;
        };
        // One expression at a time, so the message names the one that fails.
        let mut one = CustomHealthCheck {
            api_version: hc.api_version.clone(),
            kind: hc.kind.clone(),
            ..Default::default()
        };
        match which {
            "current" => one.current = Some(src.clone()),
            "inProgress" => one.in_progress = Some(src.clone()),
            _ => one.failed = Some(src.clone()),
        }
        let Err(e) = super::cel::compile(&one) else {
            continue;
        };
        let detail = e
            .strip_prefix(which)
            .and_then(|r| r.strip_prefix(": "))
            .unwrap_or(&e);
        let head = format!("{at} {which} {}", q(src));
        let msg = if let Some(t) =
            detail.strip_prefix("the expression must evaluate to bool, but it evaluates to ")
        {
            format!(
                "{head}: CEL {} must evaluate to bool, but its result type is {t}",
                q(src)
            )
        } else if let Some(d) = detail.strip_prefix("invalid CEL expression: ") {
            format!("{head}: compile CEL: {d}")
        } else {
            format!("{head}: compile CEL: {detail}")
        };
        return Err(rule(msg));
    }
    Ok(())
}

/// Size, each migration, unique names. `ptr` locates the ladder in an
/// admission request (for replaced enum values); empty elsewhere.
fn validate_ladder_with(ladder: &[Migration], ptr: &str, bad: &BadEnums) -> Res {
    if ladder.len() > MAX_MIGRATIONS_PER_LADDER {
        return Err(rule(format!(
            "migration ladder has {} migrations, exceeding the limit of {MAX_MIGRATIONS_PER_LADDER}",
            ladder.len()
        )));
    }
    let mut names = HashSet::new();
    for (k, m) in ladder.iter().enumerate() {
        let mptr = if ptr.is_empty() {
            String::new()
        } else {
            format!("{ptr}/{k}")
        };
        validate_migration_with(m, &mptr, bad)?;
        if !names.insert(m.name.as_str()) {
            return Err(rule(format!(
                "duplicate migration name {}; names are the idempotency-ledger key and must be unique",
                q(&m.name)
            )));
        }
    }
    Ok(())
}

fn validate_migration_with(m: &Migration, ptr: &str, bad: &BadEnums) -> Res {
    if m.name.is_empty() {
        return Err(rule("a migration has an empty name".to_string()));
    }
    let mn = q(&m.name);
    if m.to.is_empty() {
        return Err(rule(format!("migration {mn} has an empty to")));
    }
    if let Err(e) = semver::parse_version(&m.to) {
        return Err(rule(format!(
            "migration {mn} has an invalid to {}: {e}",
            q(&m.to)
        )));
    }
    if let Some(from) = m.from.as_deref().filter(|f| !f.is_empty()) {
        if let Err(e) = semver::parse_constraints(from) {
            return Err(rule(format!(
                "migration {mn} has an invalid from constraint {}: {e}",
                q(from)
            )));
        }
        if semver::is_bare_version(from) {
            let t = from.trim();
            return Err(rule(format!(
                "migration {mn} from {} is a bare version, which matches only that exact version; write {} (from this version onward) or {} (exactly that version) to make the intent explicit",
                q(from),
                q(&format!(">={t}")),
                q(&format!("={t}"))
            )));
        }
    }
    for (down, field, list) in [(false, "actions", &m.actions), (true, "down", &m.down)] {
        let list = list.as_deref().unwrap_or_default();
        // Upward actions read "action", downward ones "down action".
        let dir = if down { "down " } else { "" };
        let article = if down { "a" } else { "an" };
        if list.len() > MAX_ACTIONS_PER_MIGRATION {
            return Err(rule(format!(
                "migration {mn} has {} {dir}actions, exceeding the limit of {MAX_ACTIONS_PER_MIGRATION}",
                list.len()
            )));
        }
        let mut seen = HashSet::new();
        for (j, a) in list.iter().enumerate() {
            let an = q(&a.name);
            let n = a.verbs().len();
            if n != 1 {
                return Err(rule(format!(
                    "migration {mn} {dir}action {an}: exactly one verb must be set, found {n}"
                )));
            }
            if a.name.is_empty() {
                return Err(rule(format!(
                    "migration {mn} has {article} {dir}action with an empty name; action names are the idempotency-ledger key and must be set"
                )));
            }
            if !seen.insert(a.name.as_str()) {
                return Err(rule(format!(
                    "migration {mn} has duplicate {dir}action name {an}; action names are the idempotency-ledger key and must be unique"
                )));
            }
            let scope_ptr = format!("{ptr}/{field}/{j}/scope");
            if a.scope.is_some() || (!ptr.is_empty() && bad.contains_key(&scope_ptr)) {
                return Err(rule(format!(
                    "migration {mn} {dir}action {an} sets scope; scope is valid only on a stage's pre/post actions — a migration action is already keyed to its version transition by the migration ledger"
                )));
            }
            if a.completion_anchor.is_some() {
                return Err(rule(format!(
                    "migration {mn} {dir}action {an} sets completionAnchor; it is valid only on a scope: Lifetime pre/post action"
                )));
            }
            if let Some(r) = a.retries
                && !(0..=MAX_MIGRATION_ACTION_RETRIES).contains(&r)
            {
                return Err(rule(format!(
                    "migration {mn} {dir}action {an} has retries {r}; it must be between 0 and {MAX_MIGRATION_ACTION_RETRIES}"
                )));
            }
            // Beyond upstream (as for stage and onRollback actions): an
            // expression that cannot compile would only fail the migration.
            wait_expr(&format!("migration {mn} {dir}action {an}"), a)?;
        }
    }
    Ok(())
}
