//! The LedgerWatcher watches StageLedgers and wakes the StageSet of the same
//! namespace and name when a user edits one (delivery.md §1.2: a StageLedger
//! change enqueues that StageSet), so a `spec.baseline` entry added by hand
//! is promoted (and reported in `BaselineValid`) without waiting for the
//! StageSet's interval.
//!
//! Users edit the spec; the controller only ever writes the status (and
//! creates ledgers with an empty spec). So an edit is a new
//! `metadata.generation` of a ledger already seen, or a ledger that appears
//! with baseline entries; status writes (ours) never bump the generation
//! and never wake anyone.

use std::collections::HashMap;

use actix::prelude::*;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};

use crate::actors::supervisor::LedgerChanged;
use crate::api::StageLedger;

pub struct LedgerWatcher {
    client: kube::Client,
    namespaces: Vec<String>,
    supervisor: Recipient<LedgerChanged>,
    /// The generation last seen per ledger (namespace, name).
    seen: HashMap<(String, String), i64>,
}

impl LedgerWatcher {
    pub fn new(
        client: kube::Client,
        namespaces: Vec<String>,
        supervisor: Recipient<LedgerChanged>,
    ) -> Self {
        LedgerWatcher {
            client,
            namespaces,
            supervisor,
            seen: HashMap::new(),
        }
    }
}

/// Whether this state of a ledger is a user's edit worth a reconcile:
/// `previous` is the generation seen before (None: first sight).
fn is_edit(ledger: &StageLedger, previous: Option<i64>) -> bool {
    let generation = ledger.metadata.generation.unwrap_or_default();
    match previous {
        Some(before) => generation != before,
        None => ledger
            .spec
            .baseline
            .as_ref()
            .is_some_and(|entries| !entries.is_empty()),
    }
}

impl Actor for LedgerWatcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let apis: Vec<Api<StageLedger>> = if self.namespaces.is_empty() {
            vec![Api::all(self.client.clone())]
        } else {
            self.namespaces
                .iter()
                .map(|ns| Api::namespaced(self.client.clone(), ns))
                .collect()
        };
        for api in apis {
            ctx.add_stream(watcher(api, watcher::Config::default()).default_backoff());
        }
    }
}

impl StreamHandler<Result<watcher::Event<StageLedger>, watcher::Error>> for LedgerWatcher {
    fn handle(
        &mut self,
        item: Result<watcher::Event<StageLedger>, watcher::Error>,
        _ctx: &mut Context<Self>,
    ) {
        let ledger = match item {
            // The initial list: remember, never wake (the StageSets reconcile
            // at start anyway).
            Ok(watcher::Event::InitApply(ledger)) => {
                let key = (ledger.namespace().unwrap_or_default(), ledger.name_any());
                self.seen
                    .insert(key, ledger.metadata.generation.unwrap_or_default());
                return;
            }
            Ok(watcher::Event::Apply(ledger)) => ledger,
            Ok(watcher::Event::Delete(ledger)) => {
                let key = (ledger.namespace().unwrap_or_default(), ledger.name_any());
                self.seen.remove(&key);
                return;
            }
            Ok(_) => return,
            Err(e) => {
                tracing::debug!(error = %e, "StageLedger watch failed; retrying");
                return;
            }
        };
        let key = (ledger.namespace().unwrap_or_default(), ledger.name_any());
        let previous = self
            .seen
            .insert(key.clone(), ledger.metadata.generation.unwrap_or_default());
        if is_edit(&ledger, previous) {
            self.supervisor.do_send(LedgerChanged {
                namespace: key.0,
                stageset: key.1,
            });
        }
    }

    fn finished(&mut self, _ctx: &mut Context<Self>) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ledger(generation: i64, baseline: serde_json::Value) -> StageLedger {
        serde_json::from_value(json!({
            "apiVersion": "stages.metio.wtf/v1", "kind": "StageLedger",
            "metadata": {"name": "shop", "namespace": "team", "generation": generation},
            "spec": {"baseline": baseline}
        }))
        .unwrap()
    }

    #[test]
    fn only_spec_edits_wake_the_stageset() {
        let entry = json!([{"stage": "app", "action": "seed"}]);
        // Created by the controller (no baseline): not an edit.
        assert!(!is_edit(&ledger(1, json!([])), None));
        // Created by a user with a baseline: an edit.
        assert!(is_edit(&ledger(1, entry.clone()), None));
        // A status write keeps the generation.
        assert!(!is_edit(&ledger(1, entry.clone()), Some(1)));
        // The spec changed.
        assert!(is_edit(&ledger(2, entry), Some(1)));
    }
}
