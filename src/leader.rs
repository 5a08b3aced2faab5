//! Leadership as the rest of the controller sees it (operations.md §4): a flag
//! the StageSet actors check before every reconcile and a channel the
//! Supervisor listens on to start every StageSet when leadership is acquired.
//!
//! Without `--leader-elect` the replica leads from the start. With it, the
//! LeaseActor (src/actors/lease.rs) flips the flag; losing the lease ends the
//! process, so no reconcile continues past the renew deadline.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;

/// Whether this replica may reconcile.
pub struct Leadership {
    leader: AtomicBool,
    tx: watch::Sender<bool>,
}

impl Leadership {
    /// No election: this replica always leads.
    pub fn always() -> Arc<Leadership> {
        Leadership::new(true)
    }

    /// An election candidate: follows until the lease is acquired.
    pub fn candidate() -> Arc<Leadership> {
        Leadership::new(false)
    }

    fn new(leader: bool) -> Arc<Leadership> {
        let (tx, _) = watch::channel(leader);
        Arc::new(Leadership {
            leader: AtomicBool::new(leader),
            tx,
        })
    }

    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::SeqCst)
    }

    /// Records a change of leadership and tells the subscribers.
    pub fn set(&self, leader: bool) {
        self.leader.store(leader, Ordering::SeqCst);
        self.tx.send_replace(leader);
    }

    /// Changes of leadership.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.tx.subscribe()
    }
}
