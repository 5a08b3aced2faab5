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

/// This replica's identity in events and in its lease identity: the pod name
/// when running in a cluster, else the host name.
pub fn instance_name() -> String {
    std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "stageset-controller".to_string())
}
