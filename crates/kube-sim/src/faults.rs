//! Fault injection and the request log.
//!
//! Faults are decided per request, deterministically: the n-th eligible
//! request (counted from start-up or from the last
//! [`crate::KubeSim::set_faults`]) draws from a generator seeded with
//! `(seed, n)`, so the same seed and the same request sequence give the same
//! faults. A request is eligible when it is an API resource request whose
//! verb is in [`FaultConfig::verbs`] (all verbs when empty), whose resource is
//! in [`FaultConfig::resources`] (all when empty) and neither its
//! authenticated nor its impersonated user is in
//! [`FaultConfig::exempt_users`].
//!
//! A partition ([`crate::KubeSim::start_partition`]) holds every request of
//! a non-exempt user (and every unauthenticated one) until it ends or the
//! client gives up, and holds the events of open watches of such users.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What to inject, and into which requests.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultConfig {
    /// Seed of the fault sequence.
    pub seed: u64,
    /// Fraction of eligible requests answered 429 TooManyRequests with a
    /// `Retry-After` header (as API Priority and Fairness rejects them:
    /// a plain-text body), without being handled.
    pub rate_429: f64,
    /// Fraction answered 500 InternalError, without being handled.
    pub rate_500: f64,
    /// Fraction answered 503 ServiceUnavailable, without being handled.
    pub rate_503: f64,
    /// Fraction handled normally (a write is committed) whose response is
    /// cut off: the headers and part of the body are sent, then the
    /// connection closes (for a watch: after its first event).
    pub rate_reset: f64,
    /// The `Retry-After` seconds of 429 answers.
    pub retry_after_secs: u64,
    /// Fraction of eligible watches that end early: the stream just closes
    /// after 0–3 events, or after [`FaultConfig::watch_end_after`] when no
    /// event came.
    pub watch_end_rate: f64,
    /// How long an early-ending watch with no events stays open.
    pub watch_end_after: Duration,
    /// Fraction of watches that resume from where an early-ended watch
    /// stopped (its last resourceVersion) that are answered with an ERROR
    /// event `410 Gone` (`too old resource version`), as after the history
    /// was compacted while the client reconnected.
    pub watch_resume_gone_rate: f64,
    /// Verbs faults apply to (`get`, `list`, `watch`, `create`, `update`,
    /// `patch`, `delete`, `deletecollection`); empty: every verb.
    pub verbs: Vec<String>,
    /// Resources (plural names, e.g. `pods`) faults apply to; empty: every
    /// resource.
    pub resources: Vec<String>,
    /// Users never faulted (and not held by a partition): matched against
    /// the authenticated user name and the impersonated one.
    pub exempt_users: Vec<String>,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            seed: 0,
            rate_429: 0.0,
            rate_500: 0.0,
            rate_503: 0.0,
            rate_reset: 0.0,
            retry_after_secs: 1,
            watch_end_rate: 0.0,
            watch_end_after: Duration::from_secs(1),
            watch_resume_gone_rate: 0.0,
            verbs: Vec::new(),
            resources: Vec::new(),
            exempt_users: Vec::new(),
        }
    }
}

/// A kind of injected fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    /// 429 with `Retry-After`.
    TooManyRequests,
    /// 500 InternalError.
    InternalError,
    /// 503 ServiceUnavailable.
    ServiceUnavailable,
    /// Response cut off mid-body.
    ConnectionReset,
    /// A watch ended early.
    WatchEnded,
    /// A resumed watch answered 410 Gone.
    WatchGone,
    /// A request held by a partition.
    Partitioned,
}

/// Injected faults of one verb.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    pub too_many_requests: u64,
    pub internal_error: u64,
    pub service_unavailable: u64,
    pub connection_reset: u64,
    pub watch_ended: u64,
    pub watch_gone: u64,
    pub partitioned: u64,
}

impl FaultCounts {
    pub fn total(&self) -> u64 {
        self.too_many_requests
            + self.internal_error
            + self.service_unavailable
            + self.connection_reset
            + self.watch_ended
            + self.watch_gone
            + self.partitioned
    }

    fn add(&mut self, kind: FaultKind) {
        let c = match kind {
            FaultKind::TooManyRequests => &mut self.too_many_requests,
            FaultKind::InternalError => &mut self.internal_error,
            FaultKind::ServiceUnavailable => &mut self.service_unavailable,
            FaultKind::ConnectionReset => &mut self.connection_reset,
            FaultKind::WatchEnded => &mut self.watch_ended,
            FaultKind::WatchGone => &mut self.watch_gone,
            FaultKind::Partitioned => &mut self.partitioned,
        };
        *c += 1;
    }
}

/// One request as served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    /// The user the bearer token belongs to (empty when unauthenticated).
    pub user: String,
    /// The user of the `Impersonate-User` header, if any.
    pub impersonated_user: Option<String>,
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`; for a non-resource request its lower-case method.
    pub verb: String,
    /// API group (`""` for the core group).
    pub group: String,
    /// Resource (`deployments`), empty for non-resource requests.
    pub resource: String,
    /// Subresource (`status`, `scale`), usually empty.
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    /// The request path.
    pub path: String,
    /// The HTTP status answered (200 for a watch, even one that ends in an
    /// ERROR event).
    pub code: u16,
    /// The fault injected, if any.
    pub fault: Option<FaultKind>,
}

impl RequestRecord {
    /// Whether the request asked for a change (`create`, `update`, `patch`,
    /// `delete`, `deletecollection`).
    pub fn is_write(&self) -> bool {
        matches!(
            self.verb.as_str(),
            "create" | "update" | "patch" | "delete" | "deletecollection"
        )
    }

    /// The user the request acted as: the impersonated user, else the
    /// authenticated one.
    pub fn effective_user(&self) -> &str {
        self.impersonated_user.as_deref().unwrap_or(&self.user)
    }
}

/// What happens to one request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Plan {
    None,
    Status(FaultKind),
    Reset,
    /// A watch that closes after this many events (or the configured time).
    EndWatch {
        after_events: usize,
    },
}

/// The fault state of a simulator.
#[derive(Debug)]
pub struct Faults {
    config: Mutex<FaultConfig>,
    counter: AtomicU64,
    counts: Mutex<BTreeMap<String, FaultCounts>>,
    /// Where early-ended watches stopped: (group, resource, resourceVersion).
    ended_at: Mutex<VecDeque<(String, String, u64)>>,
    partition: tokio::sync::watch::Sender<bool>,
    log: Mutex<VecDeque<RequestRecord>>,
    log_capacity: usize,
}

/// SplitMix64: a small, well-mixed generator, one stream per request.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniform draw in [0, 1).
fn unit(state: &mut u64) -> f64 {
    (splitmix64(state) >> 11) as f64 / (1u64 << 53) as f64
}

impl Faults {
    pub fn new(config: FaultConfig, log_capacity: usize) -> Faults {
        Faults {
            config: Mutex::new(config),
            counter: AtomicU64::new(0),
            counts: Mutex::default(),
            ended_at: Mutex::default(),
            partition: tokio::sync::watch::channel(false).0,
            log: Mutex::default(),
            log_capacity,
        }
    }

    pub fn config(&self) -> FaultConfig {
        self.config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the configuration and restarts the fault sequence.
    pub fn set_config(&self, config: FaultConfig) {
        *self.config.lock().unwrap_or_else(|p| p.into_inner()) = config;
        self.counter.store(0, Ordering::SeqCst);
        self.ended_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Whether the user (or the impersonated one) is exempt.
    pub fn exempt(&self, user: &str, impersonated: Option<&str>) -> bool {
        let c = self.config.lock().unwrap_or_else(|p| p.into_inner());
        c.exempt_users
            .iter()
            .any(|u| u == user || Some(u.as_str()) == impersonated)
    }

    /// Decides the fault of an eligible-by-user request of `verb` on
    /// `resource` (its plural name).
    pub fn plan(&self, verb: &str, resource: &str) -> Plan {
        let c = self.config.lock().unwrap_or_else(|p| p.into_inner());
        if !c.verbs.is_empty() && !c.verbs.iter().any(|v| v == verb) {
            return Plan::None;
        }
        if !c.resources.is_empty() && !c.resources.iter().any(|r| r == resource) {
            return Plan::None;
        }
        let n = self.counter.fetch_add(1, Ordering::SeqCst);
        let mut state = c.seed ^ n.wrapping_mul(0xD1B5_4A32_D192_ED03);
        let r = unit(&mut state);
        let mut edge = c.rate_429;
        if r < edge {
            return Plan::Status(FaultKind::TooManyRequests);
        }
        edge += c.rate_500;
        if r < edge {
            return Plan::Status(FaultKind::InternalError);
        }
        edge += c.rate_503;
        if r < edge {
            return Plan::Status(FaultKind::ServiceUnavailable);
        }
        edge += c.rate_reset;
        if r < edge {
            return Plan::Reset;
        }
        if verb == "watch" && unit(&mut state) < c.watch_end_rate {
            return Plan::EndWatch {
                after_events: (splitmix64(&mut state) % 4) as usize,
            };
        }
        Plan::None
    }

    pub fn retry_after_secs(&self) -> u64 {
        self.config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retry_after_secs
    }

    pub fn watch_end_after(&self) -> Duration {
        self.config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .watch_end_after
    }

    /// Records where an early-ended watch stopped.
    pub fn watch_ended_at(&self, group: &str, resource: &str, rv: u64) {
        let mut e = self.ended_at.lock().unwrap_or_else(|p| p.into_inner());
        e.push_back((group.to_string(), resource.to_string(), rv));
        while e.len() > 1024 {
            e.pop_front();
        }
    }

    /// Whether a watch resuming at `rv` is answered 410 (deterministic:
    /// drawn from the seed and the resourceVersion).
    pub fn resume_gone(&self, group: &str, resource: &str, rv: u64) -> bool {
        let mut e = self.ended_at.lock().unwrap_or_else(|p| p.into_inner());
        let Some(i) = e
            .iter()
            .position(|(g, r, at)| g == group && r == resource && *at == rv)
        else {
            return false;
        };
        e.remove(i);
        let c = self.config.lock().unwrap_or_else(|p| p.into_inner());
        let mut state = c.seed ^ rv.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5bd1_e995;
        unit(&mut state) < c.watch_resume_gone_rate
    }

    pub fn count(&self, verb: &str, kind: FaultKind) {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(verb.to_string())
            .or_default()
            .add(kind);
    }

    pub fn counts(&self) -> BTreeMap<String, FaultCounts> {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn reset_counts(&self) {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    pub fn set_partition(&self, on: bool) {
        self.partition.send_replace(on);
    }

    pub fn partitioned(&self) -> bool {
        *self.partition.borrow()
    }

    /// Waits while a partition lasts.
    pub async fn wait_partition(&self) {
        let mut rx = self.partition.subscribe();
        while *rx.borrow_and_update() {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    pub fn log(&self, record: RequestRecord) {
        let mut l = self.log.lock().unwrap_or_else(|p| p.into_inner());
        l.push_back(record);
        while l.len() > self.log_capacity {
            l.pop_front();
        }
    }

    pub fn records(&self) -> Vec<RequestRecord> {
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    pub fn clear_log(&self) {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sequence(config: &FaultConfig, n: usize) -> Vec<Plan> {
        let f = Faults::new(config.clone(), 10);
        (0..n).map(|_| f.plan("get", "pods")).collect()
    }

    #[test]
    fn same_seed_same_sequence() {
        let c = FaultConfig {
            seed: 7,
            rate_429: 0.2,
            rate_500: 0.2,
            rate_503: 0.1,
            rate_reset: 0.1,
            ..FaultConfig::default()
        };
        let a = sequence(&c, 200);
        assert_eq!(a, sequence(&c, 200));
        let other = sequence(
            &FaultConfig {
                seed: 8,
                ..c.clone()
            },
            200,
        );
        assert_ne!(a, other);
        let faults = a.iter().filter(|p| **p != Plan::None).count();
        assert!((80..160).contains(&faults), "{faults}");
    }

    #[test]
    fn verbs_select() {
        let f = Faults::new(
            FaultConfig {
                rate_500: 1.0,
                verbs: vec!["create".into()],
                ..FaultConfig::default()
            },
            10,
        );
        assert_eq!(f.plan("get", "pods"), Plan::None);
        assert_eq!(
            f.plan("create", "pods"),
            Plan::Status(FaultKind::InternalError)
        );
    }

    #[test]
    fn resources_select() {
        let f = Faults::new(
            FaultConfig {
                rate_500: 1.0,
                resources: vec!["pods".into()],
                ..FaultConfig::default()
            },
            10,
        );
        assert_eq!(f.plan("list", "configmaps"), Plan::None);
        assert_eq!(
            f.plan("list", "pods"),
            Plan::Status(FaultKind::InternalError)
        );
    }
}
