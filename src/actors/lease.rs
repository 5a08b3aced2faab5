//! Leader election (operations.md §4): the LeaseActor competes for the
//! `coordination.k8s.io/v1` Lease [`LEASE_NAME`] in the controller's namespace
//! and publishes the result through [`Leadership`].
//!
//! The algorithm is client-go's `leaderelection` package with controller-runtime's
//! timings (lease 15 s, renew deadline 10 s, retry 2 s):
//!
//! * Expiry is judged on the candidate's *own* clock: the local time at which it
//!   last saw the Lease record change (`observedTime`), plus the lease duration.
//!   The holder's `renewTime` is never compared with the local clock, so clock
//!   skew between replicas cannot make a live lease look expired.
//! * A candidate acquires when the Lease is absent (create; a concurrent create
//!   fails with 409), has no holder, is expired, or already names it (update with
//!   the `resourceVersion` read, so a concurrent writer makes it fail with 409).
//!   `acquireTime` and `leaseTransitions` are kept on a renewal; taking the lease
//!   over sets `acquireTime` and increments `leaseTransitions`.
//! * The leader renews every retry period. When no renewal succeeded within the
//!   renew deadline (counted from the start of the last successful request, so
//!   it ends before any other replica can consider the lease expired), or another
//!   holder shows up, leadership is lost: the flag is cleared, an ERROR
//!   `leader election lost` is logged and the process exits with code 1 (the pod
//!   restarts and rejoins as a candidate). Tests replace the exit with a callback.
//! * The Lease is never released on shutdown; a successor waits for it to expire.
//!
//! The namespace is [`crate::kube_client::pod_namespace`]: the in-cluster
//! service-account namespace file, else `$POD_NAMESPACE` (our addition, for
//! runs outside a cluster and tests); without either, `--leader-elect` is a
//! start-up error. The holder identity is
//! `<hostname>_<uuid>` with the hostname of [`crate::leader::instance_name`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};

pub use crate::api::keys::LEASE_NAME;
use crate::kube_client::pod_namespace;
use crate::leader::Leadership;
use crate::metrics::Metrics;

/// The election's timings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timings {
    /// How long a lease is valid after its holder last renewed it.
    pub lease_duration: Duration,
    /// How long the leader keeps leading without a successful renewal.
    pub renew_deadline: Duration,
    /// The interval between attempts to acquire or renew.
    pub retry_period: Duration,
}

impl Default for Timings {
    /// controller-runtime's defaults: 15 s, 10 s, 2 s.
    fn default() -> Self {
        Timings {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// What happens when leadership is lost, after the flag is cleared and the
/// loss logged.
pub type OnLost = Arc<dyn Fn() + Send + Sync>;

/// The binary's reaction to a lost lease: exit with code 1 at once, skipping
/// the graceful shutdown, so no reconcile continues.
pub fn exit_on_lost() -> OnLost {
    Arc::new(|| std::process::exit(1))
}

/// A fresh holder identity: `<hostname>_<uuid>`.
pub fn new_identity() -> String {
    format!(
        "{}_{}",
        crate::leader::instance_name(),
        uuid::Uuid::new_v4()
    )
}

/// What a candidate does after reading the Lease.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// No Lease yet: create it with this spec.
    Create(LeaseSpec),
    /// Write this spec (acquire an expired or free lease, or renew ours).
    Update(LeaseSpec),
    /// Another replica holds a lease that has not expired.
    Held { holder: String },
}

/// The decision logic of one candidate, without I/O: which record it last
/// observed and when (on its own clock).
#[derive(Clone, Debug)]
pub struct Election {
    identity: String,
    lease_duration: Duration,
    observed: Option<(LeaseSpec, Instant)>,
}

impl Election {
    pub fn new(identity: impl Into<String>, lease_duration: Duration) -> Election {
        Election {
            identity: identity.into(),
            lease_duration,
            observed: None,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The local time at which the current record was first seen.
    pub fn observed_at(&self) -> Option<Instant> {
        self.observed.as_ref().map(|(_, at)| *at)
    }

    /// Decides what to do given the Lease's current spec (`None`: no Lease),
    /// the local monotonic time `now` and the wall-clock time `wall` to write.
    pub fn next(&mut self, current: Option<&LeaseSpec>, now: Instant, wall: Timestamp) -> Step {
        let Some(current) = current else {
            return Step::Create(self.record(wall, None, 0));
        };
        if self
            .observed
            .as_ref()
            .is_none_or(|(seen, _)| seen != current)
        {
            self.observed = Some((current.clone(), now));
        }
        let observed_at = self.observed_at().unwrap_or(now);
        let holder = current.holder_identity.as_deref().unwrap_or("");
        let ours = holder == self.identity;
        // The holder's advertised duration, as client-go reads it; ours when
        // the record has none.
        let duration = current
            .lease_duration_seconds
            .filter(|s| *s > 0)
            .map(|s| Duration::from_secs(s as u64))
            .unwrap_or(self.lease_duration);
        if !holder.is_empty() && !ours && observed_at + duration > now {
            return Step::Held {
                holder: holder.to_string(),
            };
        }
        let transitions = current.lease_transitions.unwrap_or(0);
        if ours {
            Step::Update(self.record(wall, current.acquire_time.clone(), transitions))
        } else {
            Step::Update(self.record(wall, None, transitions + 1))
        }
    }

    /// Records a successful write: the written record is now the observed one.
    pub fn written(&mut self, spec: LeaseSpec, now: Instant) {
        self.observed = Some((spec, now));
    }

    fn record(&self, wall: Timestamp, acquired: Option<MicroTime>, transitions: i32) -> LeaseSpec {
        // The API stores microseconds.
        let wall = Timestamp::from_microsecond(wall.as_microsecond()).unwrap_or(wall);
        let now = MicroTime(wall);
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.lease_duration.as_secs().max(1) as i32),
            acquire_time: Some(acquired.unwrap_or_else(|| now.clone())),
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }
}

/// The result of one attempt.
#[derive(Debug)]
enum Attempt {
    /// We hold the lease (created, acquired or renewed).
    Holding,
    /// Another replica holds it.
    Held(String),
}

/// client-go's `tryAcquireOrRenew`: read, decide, write with optimistic
/// concurrency.
async fn try_acquire_or_renew(
    api: &Api<Lease>,
    name: &str,
    election: &Mutex<Election>,
) -> Result<Attempt, kube::Error> {
    let current = api.get_opt(name).await?;
    let resource_version = current
        .as_ref()
        .and_then(|l| l.metadata.resource_version.clone());
    let spec = current.map(|l| l.spec.unwrap_or_default());
    let step = election
        .lock()
        .expect("the election lock is never poisoned")
        .next(spec.as_ref(), Instant::now(), Timestamp::now());
    let written = match step {
        Step::Held { holder } => return Ok(Attempt::Held(holder)),
        Step::Create(spec) => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.to_string()),
                    ..ObjectMeta::default()
                },
                spec: Some(spec),
            };
            api.create(&PostParams::default(), &lease).await?
        }
        Step::Update(spec) => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.to_string()),
                    resource_version,
                    ..ObjectMeta::default()
                },
                spec: Some(spec),
            };
            api.replace(name, &PostParams::default(), &lease).await?
        }
    };
    election
        .lock()
        .expect("the election lock is never poisoned")
        .written(written.spec.unwrap_or_default(), Instant::now());
    Ok(Attempt::Holding)
}

/// Everything needed to start the election, resolved before the actors start
/// so a missing namespace is a start-up error.
pub struct LeaderElection {
    pub namespace: String,
    /// The Lease's name ([`crate::api::keys::lease_name`]).
    pub name: String,
    pub identity: String,
    pub timings: Timings,
    pub on_lost: OnLost,
}

impl LeaderElection {
    /// The binary's election: the controller namespace, a fresh identity, the
    /// default timings, and exit(1) on loss.
    /// `name` is the Lease's name.
    pub fn from_environment(name: String) -> Result<LeaderElection, String> {
        Ok(LeaderElection {
            namespace: pod_namespace()
                .map_err(|e| format!("leader election needs the controller namespace: {e}"))?,
            name,
            identity: new_identity(),
            timings: Timings::default(),
            on_lost: exit_on_lost(),
        })
    }

    /// Starts the LeaseActor (inside an actix system); `metrics` gets
    /// `leader_election_master_status`.
    pub fn start(
        self,
        client: kube::Client,
        leadership: Arc<Leadership>,
        metrics: Option<Arc<Metrics>>,
    ) -> Addr<LeaseActor> {
        LeaseActor::new(client, self, leadership, metrics).start()
    }
}

/// Competes for the Lease and publishes [`Leadership`].
pub struct LeaseActor {
    api: Api<Lease>,
    namespace: String,
    name: String,
    identity: String,
    timings: Timings,
    election: Arc<Mutex<Election>>,
    leadership: Arc<Leadership>,
    metrics: Option<Arc<Metrics>>,
    on_lost: OnLost,
    leader: bool,
    /// Start of the last successful acquire or renew request.
    renewed_at: Option<Instant>,
    /// The holder last reported, so a change is logged once.
    last_holder: Option<String>,
}

impl LeaseActor {
    pub fn new(
        client: kube::Client,
        election: LeaderElection,
        leadership: Arc<Leadership>,
        metrics: Option<Arc<Metrics>>,
    ) -> LeaseActor {
        LeaseActor {
            api: Api::namespaced(client, &election.namespace),
            election: Arc::new(Mutex::new(Election::new(
                election.identity.clone(),
                election.timings.lease_duration,
            ))),
            namespace: election.namespace,
            name: election.name,
            identity: election.identity,
            timings: election.timings,
            leadership,
            metrics,
            on_lost: election.on_lost,
            leader: false,
            renewed_at: None,
            last_holder: None,
        }
    }

    fn lease(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// When the leader stops leading without a successful renewal.
    fn deadline(&self) -> Option<Instant> {
        self.leader
            .then_some(self.renewed_at)
            .flatten()
            .map(|t| t + self.timings.renew_deadline)
    }

    fn attempt(&mut self, ctx: &mut Context<Self>) {
        let start = Instant::now();
        let limit = match self.deadline() {
            Some(deadline) => deadline.saturating_duration_since(start),
            None => self.timings.renew_deadline,
        };
        let api = self.api.clone();
        let election = self.election.clone();
        let name = self.name.clone();
        let work = async move {
            tokio::time::timeout(limit, try_acquire_or_renew(&api, &name, &election)).await
        };
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(work)
                .map(move |result, act, ctx| act.attempted(result, start, ctx)),
        );
    }

    fn attempted(
        &mut self,
        result: Result<Result<Attempt, kube::Error>, tokio::time::error::Elapsed>,
        start: Instant,
        ctx: &mut Context<Self>,
    ) {
        match result {
            Ok(Ok(Attempt::Holding)) => {
                self.renewed_at = Some(start);
                if !self.leader {
                    self.leader = true;
                    self.last_holder = Some(self.identity.clone());
                    tracing::info!(
                        logger = "leader-election",
                        lease = %self.lease(),
                        identity = %self.identity,
                        "leader lease acquired"
                    );
                    self.announce(true);
                } else {
                    tracing::trace!(logger = "leader-election", lease = %self.lease(), "lease renewed");
                }
                self.schedule(ctx, self.timings.retry_period);
            }
            Ok(Ok(Attempt::Held(holder))) => {
                if self.leader {
                    self.lose(ctx, &format!("the lease is now held by {holder}"));
                    return;
                }
                if self.last_holder.as_deref() != Some(holder.as_str()) {
                    tracing::info!(
                        logger = "leader-election",
                        lease = %self.lease(),
                        holder = %holder,
                        "the lease is held by another replica; waiting for it to expire"
                    );
                    self.last_holder = Some(holder);
                }
                self.schedule(ctx, self.jittered());
            }
            Ok(Err(kube::Error::Api(e))) if e.code == 409 => {
                // Another replica wrote the Lease between our read and write.
                tracing::debug!(
                    logger = "leader-election",
                    lease = %self.lease(),
                    error = %e,
                    "the lease changed concurrently"
                );
                self.retry(ctx);
            }
            Ok(Err(e)) => {
                tracing::warn!(
                    logger = "leader-election",
                    lease = %self.lease(),
                    error = %e,
                    "acquiring or renewing the lease failed"
                );
                self.retry(ctx);
            }
            Err(_) => {
                tracing::warn!(
                    logger = "leader-election",
                    lease = %self.lease(),
                    error = "timed out",
                    "acquiring or renewing the lease failed"
                );
                self.retry(ctx);
            }
        }
    }

    /// After a failed attempt: retry, unless the renew deadline has passed.
    fn retry(&mut self, ctx: &mut Context<Self>) {
        match self.deadline() {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    self.lose(ctx, "the lease was not renewed within the renew deadline");
                } else {
                    self.schedule(ctx, self.timings.retry_period.min(left));
                }
            }
            None => self.schedule(ctx, self.jittered()),
        }
    }

    /// client-go's jitter for candidates: retry period × [1, 2.2).
    fn jittered(&self) -> Duration {
        self.timings
            .retry_period
            .mul_f64(1.0 + 1.2 * fastrand::f64())
    }

    fn schedule(&mut self, ctx: &mut Context<Self>, after: Duration) {
        ctx.run_later(after, |act, ctx| act.attempt(ctx));
    }

    /// Publishes a change of leadership.
    fn announce(&self, leader: bool) {
        self.leadership.set(leader);
        if let Some(metrics) = &self.metrics {
            metrics.set_leader(&self.name, leader);
        }
    }

    fn lose(&mut self, ctx: &mut Context<Self>, why: &str) {
        self.leader = false;
        self.announce(false);
        tracing::error!(
            logger = "leader-election",
            lease = %self.lease(),
            identity = %self.identity,
            error = why,
            "leader election lost"
        );
        (self.on_lost)();
        ctx.stop();
    }
}

impl Actor for LeaseActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        tracing::info!(
            logger = "leader-election",
            lease = %self.lease(),
            identity = %self.identity,
            "attempting to acquire the leader lease"
        );
        self.attempt(ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Duration = Duration::from_secs(15);

    fn wall(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn held_by(holder: &str, renewed: i64, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            acquire_time: Some(MicroTime(wall(0))),
            renew_time: Some(MicroTime(wall(renewed))),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    fn spec(step: Step) -> LeaseSpec {
        match step {
            Step::Create(s) | Step::Update(s) => s,
            Step::Held { holder } => panic!("held by {holder}"),
        }
    }

    #[test]
    fn an_absent_lease_is_created() {
        let mut e = Election::new("a_1", D);
        let s = spec(e.next(None, Instant::now(), wall(5)));
        assert_eq!(s.holder_identity.as_deref(), Some("a_1"));
        assert_eq!(s.lease_duration_seconds, Some(15));
        assert_eq!(s.acquire_time, Some(MicroTime(wall(5))));
        assert_eq!(s.renew_time, Some(MicroTime(wall(5))));
        assert_eq!(s.lease_transitions, Some(0));
        assert!(matches!(
            e.next(None, Instant::now(), wall(5)),
            Step::Create(_)
        ));
    }

    #[test]
    fn a_lease_held_by_another_is_acquired_only_after_it_stays_unchanged_for_its_duration() {
        let t0 = Instant::now();
        let mut e = Election::new("b_2", D);
        let lease = held_by("a_1", 0, 3);
        assert_eq!(
            e.next(Some(&lease), t0, wall(100)),
            Step::Held {
                holder: "a_1".into()
            }
        );
        // The remote renewTime is far in the past on our clock: irrelevant.
        assert!(matches!(
            e.next(Some(&lease), t0 + Duration::from_secs(14), wall(114)),
            Step::Held { .. }
        ));
        // The holder renews: the observation restarts.
        let renewed = held_by("a_1", 14, 3);
        assert!(matches!(
            e.next(Some(&renewed), t0 + Duration::from_secs(16), wall(116)),
            Step::Held { .. }
        ));
        assert!(matches!(
            e.next(Some(&renewed), t0 + Duration::from_secs(30), wall(130)),
            Step::Held { .. }
        ));
        // Unchanged for longer than the lease duration: expired, taken over.
        let s = spec(e.next(Some(&renewed), t0 + Duration::from_secs(32), wall(132)));
        assert_eq!(s.holder_identity.as_deref(), Some("b_2"));
        assert_eq!(s.acquire_time, Some(MicroTime(wall(132))));
        assert_eq!(s.renew_time, Some(MicroTime(wall(132))));
        assert_eq!(s.lease_transitions, Some(4));
    }

    #[test]
    fn the_holders_advertised_duration_is_used() {
        let t0 = Instant::now();
        let mut e = Election::new("b_2", D);
        let mut lease = held_by("a_1", 0, 0);
        lease.lease_duration_seconds = Some(60);
        e.next(Some(&lease), t0, wall(0));
        assert!(matches!(
            e.next(Some(&lease), t0 + Duration::from_secs(59), wall(59)),
            Step::Held { .. }
        ));
        assert!(matches!(
            e.next(Some(&lease), t0 + Duration::from_secs(61), wall(61)),
            Step::Update(_)
        ));
    }

    #[test]
    fn our_own_lease_is_renewed_keeping_acquire_time_and_transitions() {
        let t0 = Instant::now();
        let mut e = Election::new("a_1", D);
        let lease = held_by("a_1", 10, 2);
        let s = spec(e.next(Some(&lease), t0, wall(12)));
        assert_eq!(s.holder_identity.as_deref(), Some("a_1"));
        assert_eq!(s.acquire_time, Some(MicroTime(wall(0))));
        assert_eq!(s.renew_time, Some(MicroTime(wall(12))));
        assert_eq!(s.lease_transitions, Some(2));
        e.written(s.clone(), t0);
        assert_eq!(e.observed_at(), Some(t0));
        // Even long after our last write (e.g. the process was paused).
        assert!(matches!(
            e.next(Some(&s), t0 + Duration::from_secs(100), wall(112)),
            Step::Update(_)
        ));
    }

    #[test]
    fn a_lease_without_holder_is_acquired_at_once() {
        let t0 = Instant::now();
        let mut e = Election::new("b_2", D);
        let mut lease = held_by("", 0, 5);
        lease.holder_identity = None;
        let s = spec(e.next(Some(&lease), t0, wall(1)));
        assert_eq!(s.lease_transitions, Some(6));
        let s = spec(e.next(Some(&LeaseSpec::default()), t0, wall(1)));
        assert_eq!(s.lease_transitions, Some(1));
        assert_eq!(s.holder_identity.as_deref(), Some("b_2"));
    }

    #[test]
    fn written_times_are_microseconds() {
        let mut e = Election::new("a_1", D);
        let t = Timestamp::from_nanosecond(1_700_000_000_123_456_789).unwrap();
        let s = spec(e.next(None, Instant::now(), t));
        assert_eq!(
            s.renew_time.unwrap().0.as_nanosecond(),
            1_700_000_000_123_456_000
        );
    }

    #[test]
    fn identities_are_host_underscore_uuid() {
        let a = new_identity();
        let b = new_identity();
        assert_ne!(a, b);
        let (host, uuid) = a.rsplit_once('_').unwrap();
        assert_eq!(host, crate::leader::instance_name());
        assert_eq!(uuid.len(), 36);
        assert_eq!(&uuid[14..15], "4");
        assert!("89ab".contains(&uuid[19..20]), "{uuid}");
    }
}
