//! Webhook serving certificates (operations.md §5, docs/decisions.md 7): the
//! actors and the cluster I/O. The certificates themselves (generation, PEM,
//! parsing, the caBundle set operation, the files) are in [`crate::tls`].
//!
//! - `self-signed`: at start [`bootstrap`] generates a CA and a serving
//!   certificate ([`generate`]), writes `tls.key` then `tls.crt` into
//!   `--webhook-cert-dir`, loads them into the server's [`CertSlot`] and adds
//!   the CA to the ValidatingWebhookConfiguration's `caBundle`. The
//!   [`CertRenewalActor`] then renews every validity/3 and retries failed
//!   renewals with a backoff ([`retry_delay`]).
//! - `cert-manager`: the [`CertFileWatcher`] polls the mounted `tls.crt` /
//!   `tls.key` and swaps the slot when they change.
//!
//! The `caBundle` is a **set** of CA certificates, one per replica:
//! [`merge`] implements the set operation and [`update_ca_bundle`] the
//! optimistic-concurrency write, so replicas never remove each other's CA.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use actix::prelude::*;
use futures::FutureExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use kube::api::{Api, PostParams};

use crate::config::{CertMode, Config};
use crate::kube_client::pod_namespace;
use crate::metrics::Metrics;
use crate::tls::{
    CERT_FILE, CertSlot, KEY_FILE, certified_key, ensure_dir, generate, merge, write_files,
};

/// How long a replaced serving certificate's CA stays trusted after the swap,
/// for requests still in flight on the old certificate.
pub const GUARD_DELAY: Duration = Duration::from_secs(5);
/// How often `cert-manager` mode looks at the mounted files.
pub const FILE_POLL_INTERVAL: Duration = Duration::from_secs(2);
/// Retry backoff after a failed renewal (docs/decisions.md 7), before scaling.
pub const RETRY_BASE: Duration = Duration::from_secs(5 * 60);
pub const RETRY_CAP: Duration = Duration::from_secs(60 * 60);

const LOGGER: &str = "setup";

// ---------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------

/// What `self-signed` mode needs, resolved from the flags before the cluster
/// is touched (operations.md §1.6: errors here exit 1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelfSigned {
    pub cert_dir: PathBuf,
    pub validity: Duration,
    pub service: String,
    pub namespace: String,
    /// The ValidatingWebhookConfiguration whose caBundle is managed.
    pub vwc: String,
}

impl SelfSigned {
    pub fn from_config(config: &Config) -> Result<SelfSigned, String> {
        let vwc = config
            .webhook_validating_config_name
            .clone()
            .ok_or_else(|| {
                "--webhook-validating-config-name is required with --webhook-cert-mode=self-signed"
                    .to_string()
            })?;
        let namespace = match &config.webhook_service_namespace {
            Some(ns) => ns.clone(),
            None => pod_namespace().map_err(|e| format!("the webhook service namespace: {e}"))?,
        };
        let validity = config
            .webhook_cert_validity
            .to_std()
            .filter(|d| *d >= Duration::from_secs(1))
            .ok_or_else(|| {
                format!(
                    "invalid --webhook-cert-validity {}: must be at least 1s",
                    config.webhook_cert_validity
                )
            })?;
        Ok(SelfSigned {
            cert_dir: config.webhook_cert_dir.clone(),
            validity,
            service: config.webhook_service_name.clone(),
            namespace,
            vwc,
        })
    }

    /// The serving certificate's DNS SANs (the first is also its CN).
    pub fn dns_names(&self) -> Vec<String> {
        dns_names(&self.service, &self.namespace)
    }

    /// The renewal period: validity/3.
    pub fn period(&self) -> Duration {
        self.validity / 3
    }
}

/// `<service>.<namespace>.svc` and `<service>.<namespace>.svc.cluster.local`.
pub fn dns_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

/// The delay before retry number `failures` (1-based) of a failed renewal:
/// docs/decisions.md 7's 5 min doubling up to 1 h, scaled down for short
/// validities so a retry never waits about as long as a whole period: the
/// base is `min(5 min, period/10)` (at least 100 ms) and the cap
/// `min(1 h, 12 × base)`. With the default 8760h validity this is exactly
/// 5 min … 1 h; with a 30 s validity (period 10 s) it is 1 s … 12 s.
pub fn retry_delay(period: Duration, failures: u32) -> Duration {
    let base = (period / 10).clamp(Duration::from_millis(100), RETRY_BASE);
    let cap = (base * 12).min(RETRY_CAP);
    let factor = 1u32 << failures.saturating_sub(1).min(16);
    base.saturating_mul(factor).min(cap)
}

// ---------------------------------------------------------------------------
// caBundle
// ---------------------------------------------------------------------------

/// client-go's `retry.DefaultBackoff`: 4 attempts, 10 ms, ×5, 10 % jitter.
const UPDATE_ATTEMPTS: u32 = 4;
const UPDATE_BACKOFF: Duration = Duration::from_millis(10);
const UPDATE_FACTOR: u32 = 5;
const UPDATE_JITTER: f64 = 0.1;

enum UpdateError {
    Retry(String),
    Permanent(String),
}

/// Rewrites the caBundle of every webhook of the ValidatingWebhookConfiguration
/// `name` to `mutate(webhooks[0].caBundle)` (operations.md §5.3): a full
/// UPDATE carrying the resourceVersion, skipped when nothing changes, never
/// with an empty bundle; Conflict, ServerTimeout, ServiceUnavailable,
/// TooManyRequests and InternalError are retried (re-reading and re-applying
/// `mutate`) with client-go's default backoff. Returns whether it wrote.
pub async fn update_ca_bundle<F>(
    client: &kube::Client,
    name: &str,
    mutate: F,
) -> Result<bool, String>
where
    F: Fn(&[u8]) -> Vec<u8>,
{
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let mut delay = UPDATE_BACKOFF;
    let mut attempt = 1;
    loop {
        match update_once(&api, name, &mutate).await {
            Ok(wrote) => return Ok(wrote),
            Err(UpdateError::Retry(e)) if attempt < UPDATE_ATTEMPTS => {
                let jittered = delay.mul_f64(1.0 + UPDATE_JITTER * fastrand::f64());
                tracing::debug!(logger = LOGGER, vwc = name, error = %e, "retrying the caBundle update");
                tokio::time::sleep(jittered).await;
                delay *= UPDATE_FACTOR;
                attempt += 1;
            }
            Err(UpdateError::Retry(e) | UpdateError::Permanent(e)) => return Err(e),
        }
    }
}

async fn update_once<F>(
    api: &Api<ValidatingWebhookConfiguration>,
    name: &str,
    mutate: &F,
) -> Result<bool, UpdateError>
where
    F: Fn(&[u8]) -> Vec<u8>,
{
    let mut vwc = match api.get_opt(name).await {
        Ok(Some(v)) => v,
        Ok(None) => {
            return Err(UpdateError::Permanent(format!(
                "ValidatingWebhookConfiguration {name} not found (is the chart deployed?)"
            )));
        }
        Err(e) => return Err(classify(e, "reading", name)),
    };
    let webhooks = vwc.webhooks.get_or_insert_with(Vec::new);
    let Some(first) = webhooks.first() else {
        return Err(UpdateError::Permanent(format!(
            "ValidatingWebhookConfiguration {name} has no webhooks"
        )));
    };
    let current = first
        .client_config
        .ca_bundle
        .as_ref()
        .map(|b| b.0.clone())
        .unwrap_or_default();
    let next = mutate(&current);
    if next.is_empty() {
        return Err(UpdateError::Permanent(format!(
            "refusing to write an empty caBundle to ValidatingWebhookConfiguration {name}"
        )));
    }
    let mut changed = false;
    for hook in webhooks.iter_mut() {
        if hook.client_config.ca_bundle.as_ref().map(|b| &b.0) != Some(&next) {
            hook.client_config.ca_bundle = Some(ByteString(next.clone()));
            changed = true;
        }
    }
    if !changed {
        return Ok(false);
    }
    api.replace(name, &PostParams::default(), &vwc)
        .await
        .map(|_| true)
        .map_err(|e| classify(e, "updating", name))
}

fn classify(e: kube::Error, doing: &str, name: &str) -> UpdateError {
    let message = format!("{doing} ValidatingWebhookConfiguration {name}: {e}");
    match &e {
        kube::Error::Api(status)
            if matches!(
                status.reason.as_str(),
                "Conflict"
                    | "ServerTimeout"
                    | "ServiceUnavailable"
                    | "TooManyRequests"
                    | "InternalError"
            ) || matches!(status.code, 409 | 429 | 500 | 503) =>
        {
            UpdateError::Retry(message)
        }
        _ => UpdateError::Permanent(message),
    }
}

// ---------------------------------------------------------------------------
// Bootstrap and renewal (self-signed)
// ---------------------------------------------------------------------------

/// Start-up in `self-signed` mode (operations.md §5.3 "Bootstrap"): fresh
/// material, files, the slot, and the CA merged into the VWC (keeping the
/// peers' CAs). Returns this replica's CA.
pub async fn bootstrap(
    settings: &SelfSigned,
    client: &kube::Client,
    slot: &CertSlot,
) -> Result<String, String> {
    let material = generate(&settings.dns_names(), settings.validity, SystemTime::now())?;
    write_files(&settings.cert_dir, &material)?;
    slot.set_pem(material.cert_pem.as_bytes(), material.key_pem.as_bytes())?;
    update_ca_bundle(client, &settings.vwc, |current| {
        merge(current, material.ca_pem.as_bytes(), &[], SystemTime::now())
    })
    .await
    .map_err(|e| format!("adding the webhook CA to the caBundle: {e}"))?;
    tracing::info!(
        logger = LOGGER,
        certDir = %settings.cert_dir.display(),
        vwc = %settings.vwc,
        "self-signed webhook cert provisioned"
    );
    Ok(material.ca_pem)
}

/// This replica's CAs as the renewer tracks them.
#[derive(Clone, Debug, Default)]
struct RenewState {
    /// The CA of the certificate being served.
    current_ca: String,
    /// This replica's CAs still in the bundle that must go: replaced ones and
    /// ones added by a renewal that failed before serving them.
    stale: Vec<String>,
}

/// What one attempt did.
struct Attempt {
    state: RenewState,
    /// When the served certificate was replaced, if it was.
    rotated_at: Option<Instant>,
    result: Result<(), String>,
}

/// One renewal (operations.md §5.3 "Renewer"), or only its last step when
/// `cleanup_only` (the new certificate is served but removing the previous
/// CA failed).
async fn renew(
    settings: SelfSigned,
    client: kube::Client,
    slot: Arc<CertSlot>,
    mut state: RenewState,
    cleanup_only: bool,
) -> Attempt {
    let mut rotated_at = None;
    let result: Result<(), String> = async {
        if !cleanup_only {
            // 1. A new CA and serving certificate.
            let material = generate(&settings.dns_names(), settings.validity, SystemTime::now())?;
            // 2. Trust old and new.
            update_ca_bundle(&client, &settings.vwc, |current| {
                merge(current, material.ca_pem.as_bytes(), &[], SystemTime::now())
            })
            .await
            .map_err(|e| format!("adding the new CA to the caBundle: {e}"))?;
            // 3. Key, then certificate; the server serves it from the slot.
            if let Err(e) = write_files(&settings.cert_dir, &material).and_then(|()| {
                slot.set_pem(material.cert_pem.as_bytes(), material.key_pem.as_bytes())
            }) {
                state.stale.push(material.ca_pem);
                return Err(e);
            }
            let previous = std::mem::replace(&mut state.current_ca, material.ca_pem);
            state.stale.push(previous);
            rotated_at = Some(Instant::now());
            // 4. In-flight requests on the old certificate finish.
            tokio::time::sleep(GUARD_DELAY).await;
        }
        // 5. Drop this replica's previous CA(s), keeping the current one.
        let remove = state.stale.concat();
        let current_ca = state.current_ca.clone();
        update_ca_bundle(&client, &settings.vwc, |current| {
            merge(
                current,
                current_ca.as_bytes(),
                remove.as_bytes(),
                SystemTime::now(),
            )
        })
        .await
        .map_err(|e| format!("removing the previous CA from the caBundle: {e}"))?;
        // 6. The current CA is this replica's only one.
        state.stale.clear();
        Ok(())
    }
    .await;
    Attempt {
        state,
        rotated_at,
        result,
    }
}

/// Renews the self-signed serving certificate every validity/3; a failed
/// renewal is retried after [`retry_delay`] instead of a whole period
/// (docs/decisions.md 7). Attempts run as spawned futures, so the guard delay
/// never blocks the actor's thread. Stops with the actor system.
pub struct CertRenewalActor {
    settings: SelfSigned,
    client: kube::Client,
    slot: Arc<CertSlot>,
    metrics: Arc<Metrics>,
    state: RenewState,
    /// When the served certificate was installed.
    served_since: Instant,
    /// The last attempt replaced the certificate but could not remove the
    /// previous CA: the next attempt only does that.
    cleanup_pending: bool,
    failures: u32,
    running: bool,
}

impl CertRenewalActor {
    /// `current_ca` is the CA [`bootstrap`] installed.
    pub fn new(
        settings: SelfSigned,
        client: kube::Client,
        slot: Arc<CertSlot>,
        metrics: Arc<Metrics>,
        current_ca: String,
    ) -> Self {
        CertRenewalActor {
            settings,
            client,
            slot,
            metrics,
            state: RenewState {
                current_ca,
                stale: Vec::new(),
            },
            served_since: Instant::now(),
            cleanup_pending: false,
            failures: 0,
            running: false,
        }
    }

    fn schedule(&mut self, delay: Duration, ctx: &mut Context<Self>) {
        ctx.run_later(delay, |act, ctx| act.attempt(ctx));
    }

    fn attempt(&mut self, ctx: &mut Context<Self>) {
        if self.running {
            return;
        }
        self.running = true;
        let cleanup_only =
            self.cleanup_pending && self.served_since.elapsed() < self.settings.period();
        let job = renew(
            self.settings.clone(),
            self.client.clone(),
            self.slot.clone(),
            self.state.clone(),
            cleanup_only,
        );
        let job = std::panic::AssertUnwindSafe(job)
            .catch_unwind()
            .into_actor(self)
            .map(|outcome, act, ctx| {
                act.running = false;
                match outcome {
                    Ok(attempt) => act.finished(attempt, ctx),
                    Err(panic) => {
                        let message = panic
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "unknown panic".into());
                        act.failed(format!("panic: {message}"), ctx);
                    }
                }
            });
        ctx.spawn(job);
    }

    fn finished(&mut self, attempt: Attempt, ctx: &mut Context<Self>) {
        self.state = attempt.state;
        if let Some(at) = attempt.rotated_at {
            self.served_since = at;
        }
        match attempt.result {
            Ok(()) => {
                self.failures = 0;
                self.cleanup_pending = false;
                tracing::info!(
                    logger = LOGGER,
                    certDir = %self.settings.cert_dir.display(),
                    vwc = %self.settings.vwc,
                    "Self-signed webhook cert renewed"
                );
                let next = self
                    .settings
                    .period()
                    .saturating_sub(self.served_since.elapsed());
                self.schedule(next, ctx);
            }
            Err(e) => {
                self.cleanup_pending = !self.state.stale.is_empty()
                    && (attempt.rotated_at.is_some() || self.cleanup_pending);
                self.failed(e, ctx);
            }
        }
    }

    fn failed(&mut self, error: String, ctx: &mut Context<Self>) {
        self.failures = self.failures.saturating_add(1);
        self.metrics.cert_renewal_failed();
        let delay = retry_delay(self.settings.period(), self.failures);
        tracing::warn!(
            logger = LOGGER,
            error = %error,
            retryIn = ?delay,
            "Self-signed webhook cert renewal failed"
        );
        self.schedule(delay, ctx);
    }
}

impl Actor for CertRenewalActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let period = self.settings.period();
        self.schedule(period, ctx);
    }
}

// ---------------------------------------------------------------------------
// cert-manager mode
// ---------------------------------------------------------------------------

/// Polls `tls.crt` / `tls.key` in the cert dir every [`FILE_POLL_INTERVAL`]
/// and loads them into the slot when either changes; a pair that does not
/// parse or match is logged (WARN) and the current certificate kept.
pub struct CertFileWatcher {
    dir: PathBuf,
    slot: Arc<CertSlot>,
    /// The file contents last looked at.
    seen: Option<(Vec<u8>, Vec<u8>)>,
    /// The files were unreadable at the last poll (logged once).
    unreadable: bool,
}

impl CertFileWatcher {
    pub fn new(dir: PathBuf, slot: Arc<CertSlot>) -> Self {
        CertFileWatcher {
            dir,
            slot,
            seen: None,
            unreadable: false,
        }
    }

    /// One look at the files.
    pub fn poll(&mut self) {
        let read = std::fs::read(self.dir.join(CERT_FILE))
            .and_then(|c| std::fs::read(self.dir.join(KEY_FILE)).map(|k| (c, k)));
        let files = match read {
            Ok(files) => files,
            Err(e) => {
                if !self.unreadable {
                    self.unreadable = true;
                    tracing::warn!(
                        logger = "webhook",
                        certDir = %self.dir.display(),
                        error = %e,
                        "webhook certificate files are unreadable; keeping the current certificate"
                    );
                }
                return;
            }
        };
        self.unreadable = false;
        if self.seen.as_ref() == Some(&files) {
            return;
        }
        let (cert, key) = &files;
        match certified_key(cert, key) {
            Ok(loaded) => {
                let same = self
                    .slot
                    .leaf_der()
                    .is_some_and(|d| loaded.cert.first().is_some_and(|c| c.as_ref() == d));
                if !same {
                    self.slot.set(loaded);
                    tracing::info!(
                        logger = "webhook",
                        certDir = %self.dir.display(),
                        "webhook certificate reloaded"
                    );
                }
            }
            Err(e) => tracing::warn!(
                logger = "webhook",
                certDir = %self.dir.display(),
                error = %e,
                "webhook certificate files changed but cannot be used; keeping the current certificate"
            ),
        }
        self.seen = Some(files);
    }
}

impl Actor for CertFileWatcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(FILE_POLL_INTERVAL, |act, _| act.poll());
    }
}

// ---------------------------------------------------------------------------
// Wiring
// ---------------------------------------------------------------------------

/// The certificate work a configuration asks for: the file watcher in
/// `cert-manager` mode; bootstrap plus the renewer in `self-signed` mode.
#[derive(Clone, Debug)]
pub enum CertPlan {
    /// `cert-manager`: follow the mounted files in this directory.
    Files(PathBuf),
    /// `self-signed`: provision and renew.
    SelfSigned(SelfSigned),
}

impl CertPlan {
    /// The plan for a configuration: none without a webhook listener. The
    /// `self-signed` settings are checked and the cert dir created here,
    /// before the cluster is touched.
    pub fn from_config(config: &Config) -> Result<Option<CertPlan>, String> {
        if !config.enable_webhook {
            return Ok(None);
        }
        match config.webhook_cert_mode {
            CertMode::CertManager => Ok(Some(CertPlan::Files(config.webhook_cert_dir.clone()))),
            CertMode::SelfSigned => {
                let settings = SelfSigned::from_config(config)?;
                ensure_dir(&settings.cert_dir)?;
                Ok(Some(CertPlan::SelfSigned(settings)))
            }
        }
    }

    /// Starts the plan on the current actix System. In `self-signed` mode the
    /// first certificate is provisioned (files, slot, caBundle) before this
    /// returns, so the webhook listener never answers without one.
    pub async fn start(
        self,
        client: kube::Client,
        metrics: Arc<Metrics>,
        slot: Arc<CertSlot>,
    ) -> Result<(), String> {
        match self {
            CertPlan::Files(dir) => {
                CertFileWatcher::new(dir, slot).start();
            }
            CertPlan::SelfSigned(settings) => {
                let ca = bootstrap(&settings, &client, &slot).await.map_err(|e| {
                    format!("provisioning the self-signed webhook certificate: {e}")
                })?;
                CertRenewalActor::new(settings, client, slot, metrics, ca).start();
            }
        }
        Ok(())
    }
}
