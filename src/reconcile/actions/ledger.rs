//! The action ledgers (api.md §2.9.4, §4; delivery.md §3.4–§3.6): which
//! pre/post actions already ran, so a re-run of the same revision (or, for
//! `Lifetime`, ever) skips them.
//!
//! - **Revision** (the default scope): names in the stage's
//!   `status.stages[].executedActions`, valid while the pinned revision equals
//!   `ledgerRevision`. A new revision, or a `reconcile-stage` token for the
//!   stage, starts it empty. Persisted with the pass's status.
//! - **Lifetime**: completions in the `StageLedger` named like the StageSet
//!   (no owner reference, so it survives the StageSet), written right after
//!   each action succeeds. A completion with a `completionAnchor` holds only
//!   while the anchor object exists with the UID recorded at completion.
//! - **Version** needs `spec.version`, which this controller refuses for now.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, PostParams};

use crate::api::reasons::EventReason;
use crate::api::{
    Action, ActionScope, AnchorWitness, Condition, ConditionStatus, LedgerCompletion, LedgerOrigin,
    Stage, StageLedger, StageLedgerSpec, StageLedgerStatus, StageSet, StageStatus, keys,
};
use crate::reconcile::error::{Error, describe};

/// A stage's pre and post actions.
pub fn hook_actions(stage: &Stage) -> impl Iterator<Item = &Action> {
    stage
        .actions
        .iter()
        .flat_map(|a| a.pre.iter().flatten().chain(a.post.iter().flatten()))
}

/// The scope of a pre/post action (`Revision` when unset).
pub fn scope_of(action: &Action) -> ActionScope {
    action.scope.unwrap_or(ActionScope::Revision)
}

/// The `scope` label of `stageset_action_runs_total`.
pub fn scope_label(scope: ActionScope) -> &'static str {
    match scope {
        ActionScope::Revision => "Revision",
        ActionScope::Version => "Version",
        ActionScope::Lifetime => "Lifetime",
    }
}

/// Whether any stage of the StageSet has a Lifetime pre/post action.
pub fn uses_lifetime(ss: &StageSet) -> bool {
    ss.spec
        .stages
        .iter()
        .flat_map(hook_actions)
        .any(|a| scope_of(a) == ActionScope::Lifetime)
}

/// The revision ledger a stage starts a pass with.
pub fn revision_ledger(prior: Option<&StageStatus>, revision: &str, forced: bool) -> Vec<String> {
    match prior {
        Some(p) if !forced && p.ledger_revision.as_deref() == Some(revision) => {
            p.executed_actions.clone()
        }
        _ => Vec::new(),
    }
}

/// The `reconcile-stage` token for `stage`, if the annotation names it
/// (`<stage>@<token>`) and the token is new for the stage.
pub fn force_token(ss: &StageSet, stage: &str, prior: Option<&StageStatus>) -> Option<String> {
    let value = ss.annotations().get(keys::ANNOTATION_RECONCILE_STAGE)?;
    let (name, token) = value.split_once('@')?;
    (name == stage
        && !token.is_empty()
        && prior.and_then(|p| p.last_handled_reconcile_at.as_deref()) != Some(token))
    .then(|| token.to_string())
}

/// The StageLedger of a StageSet, as this pass sees it.
pub struct Lifetime {
    ledger: StageLedger,
}

fn api(client: &kube::Client, namespace: &str) -> Api<StageLedger> {
    Api::namespaced(client.clone(), namespace)
}

impl Lifetime {
    /// Loads the StageLedger (controller identity); creates it, empty and
    /// without an owner, when the spec has Lifetime actions and none exists.
    /// `None` when there is no ledger and no need for one.
    pub async fn load(client: &kube::Client, ss: &StageSet) -> Result<Option<Lifetime>, Error> {
        let namespace = ss.namespace().unwrap_or_default();
        let name = ss.name_any();
        let api = api(client, &namespace);
        match api.get_opt(&name).await {
            Ok(Some(ledger)) => Ok(Some(Lifetime { ledger })),
            Ok(None) if uses_lifetime(ss) => {
                let mut ledger = StageLedger::new(&name, StageLedgerSpec::default());
                ledger.metadata.namespace = Some(namespace.clone());
                match api.create(&PostParams::default(), &ledger).await {
                    Ok(created) => Ok(Some(Lifetime { ledger: created })),
                    Err(kube::Error::Api(s)) if s.code == 409 => api
                        .get(&name)
                        .await
                        .map(|ledger| Some(Lifetime { ledger }))
                        .map_err(|e| Error::api(&format!("reading StageLedger {name}"), &e)),
                    Err(e) => Err(Error::api(&format!("creating StageLedger {name}"), &e)),
                }
            }
            Ok(None) => Ok(None),
            Err(e) => Err(Error::api(&format!("reading StageLedger {name}"), &e)),
        }
    }

    fn status(&self) -> &StageLedgerStatus {
        static EMPTY: std::sync::OnceLock<StageLedgerStatus> = std::sync::OnceLock::new();
        self.ledger
            .status
            .as_ref()
            .unwrap_or_else(|| EMPTY.get_or_init(StageLedgerStatus::default))
    }

    /// Whether the ledger had completions before this pass.
    pub fn has_completions(&self) -> bool {
        !self.status().completed_actions.is_empty()
    }

    /// The completions recorded for `stage`.
    pub fn completions(&self, stage: &str) -> Vec<LedgerCompletion> {
        self.status()
            .completed_actions
            .iter()
            .filter(|c| c.stage == stage)
            .cloned()
            .collect()
    }

    /// The action names of `stage` that are done for good.
    pub fn done(&self, stage: &str) -> BTreeSet<String> {
        self.completions(stage)
            .into_iter()
            .map(|c| c.action)
            .collect()
    }

    /// Writes the status (controller identity, status subresource, guarded
    /// by the resourceVersion so concurrent edits are never overwritten).
    async fn write(
        &mut self,
        client: &kube::Client,
        status: StageLedgerStatus,
    ) -> Result<(), Error> {
        let namespace = self.ledger.namespace().unwrap_or_default();
        let name = self.ledger.name_any();
        let mut next = self.ledger.clone();
        next.status = Some(status);
        let written = api(client, &namespace)
            .replace_status(&name, &PostParams::default(), &next)
            .await
            .map_err(|e| Error::api(&format!("writing StageLedger {name}"), &e))?;
        self.ledger = written;
        Ok(())
    }

    /// Records a Lifetime completion right after the action succeeded.
    pub async fn record(
        &mut self,
        client: &kube::Client,
        stage: &str,
        action: &str,
        anchor: Option<AnchorWitness>,
    ) -> Result<(), Error> {
        let mut status = self.status().clone();
        if status
            .completed_actions
            .iter()
            .any(|c| c.stage == stage && c.action == action)
        {
            return Ok(());
        }
        status.completed_actions.push(LedgerCompletion {
            stage: stage.to_string(),
            action: action.to_string(),
            origin: LedgerOrigin::Executed,
            digest: None,
            anchor,
            completed_at: now(),
        });
        self.write(client, status).await
    }

    /// Drops completions whose anchor is gone or replaced (S5).
    pub async fn invalidate(
        &mut self,
        client: &kube::Client,
        stage: &str,
        actions: &[String],
    ) -> Result<(), Error> {
        if actions.is_empty() {
            return Ok(());
        }
        let mut status = self.status().clone();
        status
            .completed_actions
            .retain(|c| !(c.stage == stage && actions.contains(&c.action)));
        self.write(client, status).await
    }

    /// Promotes `spec.baseline` entries that name a current Lifetime pre/post
    /// action and are not recorded yet; keeps `BaselineValid` up to date.
    /// Returns the unresolved entries when they changed into (or within) the
    /// invalid state, for a `BaselineInvalid` event.
    pub async fn promote_baseline(
        &mut self,
        client: &kube::Client,
        ss: &StageSet,
    ) -> Result<Option<Vec<String>>, Error> {
        let baseline = self.ledger.spec.baseline.clone().unwrap_or_default();
        let had_condition = self
            .status()
            .conditions
            .iter()
            .any(|c| c.type_ == "BaselineValid");
        if baseline.is_empty() && !had_condition {
            return Ok(None);
        }
        let lifetime: BTreeSet<(String, String)> = ss
            .spec
            .stages
            .iter()
            .flat_map(|s| {
                hook_actions(s)
                    .filter(|a| scope_of(a) == ActionScope::Lifetime)
                    .map(|a| (s.name.clone(), a.name.clone()))
            })
            .collect();
        let mut status = self.status().clone();
        let mut unresolved = Vec::new();
        for entry in &baseline {
            if !lifetime.contains(&(entry.stage.clone(), entry.action.clone())) {
                unresolved.push(format!("{}/{}", entry.stage, entry.action));
                continue;
            }
            if !status
                .completed_actions
                .iter()
                .any(|c| c.stage == entry.stage && c.action == entry.action)
            {
                status.completed_actions.push(LedgerCompletion {
                    stage: entry.stage.clone(),
                    action: entry.action.clone(),
                    origin: LedgerOrigin::Baselined,
                    digest: None,
                    anchor: None,
                    completed_at: now(),
                });
            }
        }
        let (condition_status, reason, message) = if unresolved.is_empty() {
            (
                ConditionStatus::True,
                "AllResolved",
                "every baseline entry names a Lifetime action".to_string(),
            )
        } else {
            (
                ConditionStatus::False,
                "Unresolved",
                format!(
                    "baseline entries that name no Lifetime pre/post action: {}",
                    unresolved.join(", ")
                ),
            )
        };
        let previous = status
            .conditions
            .iter()
            .find(|c| c.type_ == "BaselineValid")
            .cloned();
        let changed_invalid = condition_status == ConditionStatus::False
            && previous
                .as_ref()
                .is_none_or(|p| p.status != ConditionStatus::False || p.message != message);
        if previous.as_ref().is_none_or(|p| {
            p.status != condition_status || p.reason != reason || p.message != message
        }) {
            status.conditions.retain(|c| c.type_ != "BaselineValid");
            status.conditions.push(Condition {
                type_: "BaselineValid".into(),
                status: condition_status,
                observed_generation: self.ledger.metadata.generation,
                last_transition_time: now(),
                reason: reason.into(),
                message,
            });
        }
        if &status != self.status() {
            self.write(client, status).await?;
        }
        Ok(changed_invalid.then_some(unresolved))
    }

    /// Records a Warning event on the StageLedger itself.
    pub async fn event(
        &self,
        client: &kube::Client,
        instance: &str,
        reason: EventReason,
        note: &str,
    ) {
        let namespace = self.ledger.namespace().unwrap_or_default();
        let now = k8s_openapi::jiff::Timestamp::now();
        let ev = serde_json::json!({
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            // `<name>.<hex>` as for StageSet events: a generateName may not
            // end in the dot (the API server masks a trailing dash only).
            "metadata": {"name": format!("{}.{:016x}", self.ledger.name_any(), (now.as_nanosecond() as u64) ^ fastrand::u64(..)),
                "namespace": namespace},
            "eventTime": now.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
            "reportingController": keys::EVENT_REPORTER,
            "reportingInstance": instance,
            "action": reason.as_str(),
            "reason": reason.as_str(),
            "type": "Warning",
            "note": note,
            "regarding": {
                "apiVersion": crate::api::API_VERSION,
                "kind": "StageLedger",
                "name": self.ledger.name_any(),
                "namespace": namespace,
                "uid": self.ledger.metadata.uid.clone().unwrap_or_default(),
            },
        });
        let api: Api<k8s_openapi::api::events::v1::Event> =
            Api::namespaced(client.clone(), &namespace);
        match serde_json::from_value(ev) {
            Ok(ev) => {
                if let Err(e) = api.create(&PostParams::default(), &ev).await {
                    tracing::warn!(ledger = %self.ledger.name_any(), error = %describe(&e), "StageLedger event not recorded");
                }
            }
            Err(e) => tracing::warn!(error = %e, "StageLedger event not encoded"),
        }
    }
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}
