//! The InventoryWatcher watches the StageInventories the controller owns and
//! wakes the owning StageSet when one is changed or deleted by someone else
//! (api.md §3: changes to owned StageInventories re-queue the owner). The
//! controller's own writes do not wake it: an event whose newest managedFields
//! entry belongs to our field manager is ours. A deleted shard always wakes
//! the owner, which then rewrites it (or reconstructs a lost inventory).

use actix::prelude::*;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};

use std::sync::Arc;

use crate::actors::supervisor::InventoryChanged;
use crate::api::{StageInventory, keys};
use crate::reconcile::inventory::InventoryWrites;

pub struct InventoryWatcher {
    client: kube::Client,
    writes: Arc<InventoryWrites>,
    namespaces: Vec<String>,
    supervisor: Recipient<InventoryChanged>,
}

impl InventoryWatcher {
    pub fn new(
        client: kube::Client,
        writes: Arc<InventoryWrites>,
        namespaces: Vec<String>,
        supervisor: Recipient<InventoryChanged>,
    ) -> Self {
        InventoryWatcher {
            client,
            writes,
            namespaces,
            supervisor,
        }
    }
}

/// The StageSet owning a shard: the controller owner reference, else the label.
fn owner(inv: &StageInventory) -> Option<String> {
    inv.owner_references()
        .iter()
        .find(|o| o.kind == "StageSet" && o.controller == Some(true))
        .map(|o| o.name.clone())
        .or_else(|| inv.labels().get(keys::LABEL_STAGE_SET).cloned())
}

impl Actor for InventoryWatcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let apis: Vec<Api<StageInventory>> = if self.namespaces.is_empty() {
            vec![Api::all(self.client.clone())]
        } else {
            self.namespaces
                .iter()
                .map(|ns| Api::namespaced(self.client.clone(), ns))
                .collect()
        };
        for api in apis {
            let config = watcher::Config::default().labels(keys::LABEL_STAGE_SET);
            ctx.add_stream(watcher(api, config).default_backoff());
        }
    }
}

impl StreamHandler<Result<watcher::Event<StageInventory>, watcher::Error>> for InventoryWatcher {
    fn handle(
        &mut self,
        item: Result<watcher::Event<StageInventory>, watcher::Error>,
        _ctx: &mut Context<Self>,
    ) {
        let (inv, what) = match item {
            Ok(watcher::Event::Apply(inv)) => (inv, "changed"),
            Ok(watcher::Event::Delete(inv)) => (inv, "deleted"),
            Ok(_) => return,
            Err(e) => {
                tracing::debug!(error = %e, "StageInventory watch failed; retrying");
                return;
            }
        };
        let namespace = inv.namespace().unwrap_or_default();
        let name = inv.name_any();
        let ours = if what == "deleted" {
            let ours = self
                .writes
                .is_ours(&namespace, &name, InventoryWrites::DELETED);
            self.writes.forget(&namespace, &name);
            ours
        } else {
            self.writes
                .is_ours(&namespace, &name, &InventoryWrites::fingerprint(&inv))
        };
        if ours {
            return;
        }
        let Some(stageset) = owner(&inv) else {
            return;
        };
        self.supervisor.do_send(InventoryChanged {
            namespace,
            stageset,
            what,
        });
    }

    fn finished(&mut self, _ctx: &mut Context<Self>) {}
}
