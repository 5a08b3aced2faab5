//! The StageSet cache the HTTP side reads (docs/architecture.md, "Layers"): one
//! kube-runtime reflector store per watch scope, and whether each scope has
//! finished its first list.
//!
//! The Supervisor owns the writers (it drives the watches); the gate, the
//! readiness probe and the controller handle hold clones of this read side.
//! One store per scope (the whole cluster, or each `--watch-namespaces`
//! entry) so that a re-list of one namespace never replaces what another
//! namespace's watch put in the cache.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kube::runtime::reflector::{self, Store, store::Writer};

use crate::api::StageSet;

/// The controller's StageSet cache: the reflector stores of every watch scope.
#[derive(Clone)]
pub struct StageSetCache {
    stores: Vec<Store<StageSet>>,
    synced: Arc<Vec<AtomicBool>>,
}

impl StageSetCache {
    /// A cache of `scopes` stores (at least one), and the writers that fill
    /// them, in scope order.
    pub fn new(scopes: usize) -> (StageSetCache, Vec<Writer<StageSet>>) {
        let (stores, writers): (Vec<_>, Vec<_>) =
            (0..scopes.max(1)).map(|_| reflector::store()).unzip();
        let synced = Arc::new((0..stores.len()).map(|_| AtomicBool::new(false)).collect());
        (StageSetCache { stores, synced }, writers)
    }

    /// Records that watch scope `scope` finished its first list.
    pub fn mark_synced(&self, scope: usize) {
        if let Some(flag) = self.synced.get(scope) {
            flag.store(true, Ordering::SeqCst);
        }
    }

    /// Whether every watch scope finished its first list (`/readyz`).
    pub fn is_synced(&self) -> bool {
        self.synced.iter().all(|f| f.load(Ordering::SeqCst))
    }

    /// Every cached StageSet.
    pub fn state(&self) -> Vec<Arc<StageSet>> {
        self.stores.iter().flat_map(Store::state).collect()
    }

    /// One cached StageSet.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<StageSet>> {
        let key = reflector::ObjectRef::new(name).within(namespace);
        self.stores.iter().find_map(|s| s.get(&key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::watcher;

    fn stageset(namespace: &str, name: &str) -> StageSet {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "stages.metio.wtf/v1",
            "kind": "StageSet",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"stages": [{"name": "s", "sourceRef": {"name": "x"}}]}
        }))
        .unwrap()
    }

    #[test]
    fn synced_only_when_every_scope_listed() {
        let (cache, _writers) = StageSetCache::new(2);
        assert!(!cache.is_synced());
        cache.mark_synced(0);
        assert!(!cache.is_synced());
        cache.mark_synced(1);
        assert!(cache.is_synced());
        // An unknown scope is ignored, not a panic.
        cache.mark_synced(7);
    }

    #[test]
    fn reads_every_scope() {
        let (cache, mut writers) = StageSetCache::new(2);
        writers[0].apply_watcher_event(&watcher::Event::Apply(stageset("a", "one")));
        writers[1].apply_watcher_event(&watcher::Event::Apply(stageset("b", "two")));
        assert_eq!(cache.state().len(), 2);
        assert!(cache.get("a", "one").is_some());
        assert!(cache.get("b", "two").is_some());
        assert!(cache.get("a", "two").is_none());
    }
}
