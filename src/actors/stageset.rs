//! One actor per StageSet: the only writer of its status and inventory. It runs
//! at most one reconcile at a time (triggers arriving meanwhile coalesce into
//! one follow-up run), owns its requeue timer, and is restarted by its actix
//! supervisor when a reconcile panics.
//!
//! The reconcile itself runs as a Tokio task on the multi-threaded runtime, so
//! reconciles of different StageSets run in parallel, bounded by `--concurrent`
//! (a semaphore shared by all actors).
//!
//! The actor records the controller-runtime workqueue and reconcile metrics
//! (src/metrics.rs explains the mapping): a run is queued from the trigger (or
//! timer) until it holds a permit, and worked while it holds one.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::cache::StageSetCache;
use crate::leader::Leadership;
use crate::reconcile::error::Requeue;
use crate::reconcile::{Env, Outcome, reconcile};

/// Why a reconcile was asked for (logged).
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct Reconcile(pub &'static str);

/// Stops the actor for good (its StageSet is gone).
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct Stop;

/// The per-item back-off of controller-runtime's default rate limiter: 5 ms
/// doubling up to 1000 s.
pub fn backoff_delay(failures: u32) -> Duration {
    let ms = 5u64.saturating_mul(1u64 << failures.min(30));
    Duration::from_millis(ms).min(Duration::from_secs(1000))
}

/// The overall half of controller-runtime's default rate limiter: a token
/// bucket of 10 per second with a burst of 100 (operations.md OPS-43) that
/// every back-off requeue reserves from, shared by all StageSets. A requeue
/// waits for the longer of its own back-off and its reservation, so a mass
/// failure cannot retry faster than 10 StageSets a second after the burst.
pub struct RetryBucket {
    rate: f64,
    burst: f64,
    /// Tokens left (negative: reserved ahead) and when that was computed.
    state: std::sync::Mutex<(f64, std::time::Instant)>,
}

impl RetryBucket {
    /// controller-runtime's defaults: 10 per second, burst 100.
    pub fn standard() -> Self {
        RetryBucket::new(10.0, 100.0)
    }

    pub fn new(rate: f64, burst: f64) -> Self {
        RetryBucket {
            rate,
            burst,
            state: std::sync::Mutex::new((burst, std::time::Instant::now())),
        }
    }

    /// Takes one token at `now`; how long the caller must wait for it
    /// (golang.org/x/time/rate's Reserve: tokens may be reserved ahead).
    pub fn reserve(&self, now: std::time::Instant) -> Duration {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, last) = *state;
        let elapsed = now.saturating_duration_since(last).as_secs_f64();
        let tokens = (tokens + elapsed * self.rate).min(self.burst) - 1.0;
        *state = (tokens, now.max(last));
        if tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-tokens / self.rate)
        }
    }
}

pub struct StageSetActor {
    namespace: String,
    name: String,
    env: Arc<Env>,
    leadership: Arc<Leadership>,
    limiter: Arc<Semaphore>,
    retries: Arc<RetryBucket>,
    /// The watch cache the reconcile takes its StageSet from.
    cache: StageSetCache,
    running: bool,
    pending: bool,
    failures: u32,
    panics: u32,
    timer: Option<SpawnHandle>,
    stopping: bool,
    /// When the queued run (not yet holding a permit) was asked for.
    queued_at: Option<std::time::Instant>,
}

impl StageSetActor {
    pub fn new(
        namespace: &str,
        name: &str,
        env: Arc<Env>,
        leadership: Arc<Leadership>,
        limiter: Arc<Semaphore>,
        retries: Arc<RetryBucket>,
        cache: StageSetCache,
    ) -> Self {
        StageSetActor {
            namespace: namespace.to_string(),
            name: name.to_string(),
            env,
            cache,
            leadership,
            limiter,
            retries,
            running: false,
            pending: false,
            failures: 0,
            panics: 0,
            timer: None,
            stopping: false,
            queued_at: None,
        }
    }

    fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Queues a run (workqueue add) unless one is queued already.
    fn enqueue(&mut self) {
        if self.queued_at.is_none() {
            self.queued_at = Some(std::time::Instant::now());
            self.env.metrics.workqueue_add();
        }
    }

    /// Gives up a queued run that will not be worked.
    fn dequeue(&mut self) {
        if self.queued_at.take().is_some() {
            self.env.metrics.workqueue_drop();
        }
    }

    fn start_run(&mut self, ctx: &mut Context<Self>, why: &str) {
        if let Some(t) = self.timer.take() {
            ctx.cancel_future(t);
        }
        if !self.leadership.is_leader() {
            // Followers only keep caches; the Supervisor wakes every StageSet
            // when this replica acquires the lease.
            self.pending = false;
            self.dequeue();
            tracing::debug!(stageset = %self.key(), trigger = why, "not the leader; reconcile deferred");
            return;
        }
        self.running = true;
        self.pending = false;
        self.enqueue();
        let queued_at = self
            .queued_at
            .take()
            .unwrap_or_else(std::time::Instant::now);
        let env = self.env.clone();
        let limiter = self.limiter.clone();
        let cache = self.cache.clone();
        let (namespace, name) = (self.namespace.clone(), self.name.clone());
        let key = self.key();
        tracing::debug!(stageset = %key, trigger = why, "reconcile queued");
        let task = tokio::spawn(async move {
            let _permit = limiter
                .acquire_owned()
                .await
                .expect("the limiter is never closed");
            let _work = env.metrics.work_started(queued_at);
            let started = std::time::Instant::now();
            // Read once the permit is held: the newest copy the watch has.
            let cached = cache.get(&namespace, &name).map(|ss| (*ss).clone());
            // Every line of the pass carries the object and a pass id
            // (operations.md §7.7), as controller-runtime's reconcile logger.
            let span = tracing::info_span!(
                target: crate::logging::LOG_SPAN_TARGET,
                "reconcile",
                controller = "stageset",
                controllerGroup = crate::api::GROUP,
                controllerKind = "StageSet",
                namespace = %namespace,
                name = %name,
                reconcileID = %uuid::Uuid::new_v4(),
            );
            async move {
                let outcome = reconcile(&env, &namespace, &name, cached).await;
                tracing::debug!(
                    stageset = %format!("{namespace}/{name}"),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    requeue = ?outcome.requeue,
                    reason = outcome.ready.as_ref().map(|r| r.reason.as_str()).unwrap_or(""),
                    "reconcile finished"
                );
                outcome
            }
            .instrument(span)
            .await
        });
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(task)
                .map(|result, act, ctx| act.finished(result, ctx)),
        );
    }

    fn finished(
        &mut self,
        result: Result<Outcome, tokio::task::JoinError>,
        ctx: &mut Context<Self>,
    ) {
        self.running = false;
        if self.stopping {
            match &result {
                Ok(outcome) => self.env.metrics.reconcile_result(outcome.requeue.result()),
                Err(e) if e.is_panic() => self.env.metrics.reconcile_panicked(),
                Err(_) => {}
            }
            self.dequeue();
            ctx.stop();
            return;
        }
        let outcome = match result {
            Ok(o) => o,
            Err(e) => {
                // A panic in this StageSet's work: log it with the key and restart
                // this actor only (its supervisor calls `restarting`).
                let detail = if e.is_panic() {
                    self.env.metrics.reconcile_panicked();
                    self.env.metrics.workqueue_retry();
                    let payload = e.into_panic();
                    payload
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "unknown panic".into())
                } else {
                    e.to_string()
                };
                tracing::error!(stageset = %self.key(), error = %detail, "reconcile panicked; restarting the StageSet actor");
                self.panics += 1;
                ctx.stop();
                return;
            }
        };
        self.env.metrics.reconcile_result(outcome.requeue.result());
        let delay = match outcome.requeue {
            Requeue::Now => Some(Duration::ZERO),
            Requeue::After(d) => {
                self.failures = 0;
                Some(d)
            }
            Requeue::Backoff => {
                let d = backoff_delay(self.failures)
                    .max(self.retries.reserve(std::time::Instant::now()));
                self.failures = self.failures.saturating_add(1);
                Some(d)
            }
            Requeue::Never => {
                self.failures = 0;
                None
            }
        };
        if delay.is_some() {
            self.env.metrics.workqueue_retry();
        }
        if self.pending {
            self.start_run(ctx, "coalesced");
            return;
        }
        if let Some(d) = delay {
            self.timer = Some(ctx.run_later(d, |act, ctx| {
                act.timer = None;
                if !act.running {
                    act.start_run(ctx, "requeue");
                }
            }));
        }
    }
}

impl Actor for StageSetActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.panics > 0 {
            // After a panic, retry with back-off rather than in a tight loop.
            let delay = backoff_delay(self.panics + 6);
            self.timer = Some(ctx.run_later(delay, |act, ctx| {
                act.timer = None;
                act.start_run(ctx, "restart after panic");
            }));
        } else {
            self.start_run(ctx, "started");
        }
    }
}

impl Supervised for StageSetActor {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        self.running = false;
        self.pending = false;
        self.timer = None;
        self.dequeue();
    }
}

impl Handler<Reconcile> for StageSetActor {
    type Result = ();

    fn handle(&mut self, msg: Reconcile, ctx: &mut Context<Self>) {
        if self.running {
            self.pending = true;
            if self.leadership.is_leader() {
                self.enqueue();
            }
        } else {
            self.start_run(ctx, msg.0);
        }
    }
}

impl Handler<Stop> for StageSetActor {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        self.stopping = true;
        if let Some(t) = self.timer.take() {
            ctx.cancel_future(t);
        }
        if !self.running {
            ctx.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_retry_bucket_allows_a_burst_then_ten_a_second() {
        let bucket = RetryBucket::new(10.0, 100.0);
        let start = std::time::Instant::now();
        for i in 0..100 {
            assert_eq!(bucket.reserve(start), Duration::ZERO, "token {i}");
        }
        // Reserved ahead: the 101st waits 100 ms, the 102nd 200 ms.
        let ms = |d: Duration| d.as_millis();
        assert_eq!(ms(bucket.reserve(start)), 100);
        assert_eq!(ms(bucket.reserve(start)), 200);
        // A second later the debt is paid and eight tokens are back.
        let later = start + Duration::from_secs(1);
        for _ in 0..8 {
            assert_eq!(bucket.reserve(later), Duration::ZERO);
        }
        assert_eq!(ms(bucket.reserve(later)), 100);
        // Refills never exceed the burst.
        let idle = later + Duration::from_secs(3600);
        for _ in 0..100 {
            assert_eq!(bucket.reserve(idle), Duration::ZERO);
        }
        assert_eq!(ms(bucket.reserve(idle)), 100);
    }

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff_delay(0), Duration::from_millis(5));
        assert_eq!(backoff_delay(1), Duration::from_millis(10));
        assert_eq!(backoff_delay(10), Duration::from_millis(5120));
        assert_eq!(backoff_delay(40), Duration::from_secs(1000));
    }
}
