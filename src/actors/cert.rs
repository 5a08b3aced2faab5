//! Webhook serving certificates (operations.md §5, docs/decisions.md 7).
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
//!
//! Certificates are inspected with a small DER reader ([`parse_certificate`])
//! rather than a full X.509 library: only the fields this module and its
//! tests need are read.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use base64::Engine;
use futures::FutureExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use kube::api::{Api, PostParams};

use crate::config::{CertMode, Config};
use crate::metrics::Metrics;
use crate::tls::{CERT_FILE, CertSlot, KEY_FILE, certified_key};

/// Subject CN of every self-signed CA.
pub const CA_COMMON_NAME: &str = "stageset-controller-webhook-ca";
/// How long a replaced serving certificate's CA stays trusted after the swap,
/// for requests still in flight on the old certificate.
pub const GUARD_DELAY: Duration = Duration::from_secs(5);
/// How often `cert-manager` mode looks at the mounted files.
pub const FILE_POLL_INTERVAL: Duration = Duration::from_secs(2);
/// The in-cluster file holding the pod's namespace.
pub const NAMESPACE_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";
/// The environment variable naming the pod's namespace outside a cluster.
pub const NAMESPACE_ENV: &str = "POD_NAMESPACE";
/// `NotBefore = now − CLOCK_SKEW` (clock-skew allowance), see [`clock_skew`].
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);
/// Retry backoff after a failed renewal (docs/decisions.md 7), before scaling.
pub const RETRY_BASE: Duration = Duration::from_secs(5 * 60);
pub const RETRY_CAP: Duration = Duration::from_secs(60 * 60);

/// Key usage bits as [`CertInfo::key_usage`] reports them (RFC 5280 numbering).
pub const KU_DIGITAL_SIGNATURE: u16 = 1 << 0;
pub const KU_KEY_ENCIPHERMENT: u16 = 1 << 2;
pub const KU_KEY_CERT_SIGN: u16 = 1 << 5;
/// `id-kp-serverAuth`.
pub const EKU_SERVER_AUTH: &str = "1.3.6.1.5.5.7.3.1";
/// `prime256v1` (P-256).
pub const CURVE_P256: &str = "1.2.840.10045.3.1.7";

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
            None => pod_namespace()?,
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

/// The pod's namespace: the in-cluster service-account file, else `$POD_NAMESPACE`.
pub fn pod_namespace() -> Result<String, String> {
    namespace_from(
        std::fs::read_to_string(NAMESPACE_FILE).ok(),
        std::env::var(NAMESPACE_ENV).ok(),
    )
}

/// [`pod_namespace`] over the file's content and the variable's value.
pub fn namespace_from(file: Option<String>, env: Option<String>) -> Result<String, String> {
    file.map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| env.map(|s| s.trim().to_string()).filter(|s| !s.is_empty()))
        .ok_or_else(|| {
            format!(
                "cannot determine the webhook service namespace: set --webhook-service-namespace \
                 ({NAMESPACE_FILE} is not readable and ${NAMESPACE_ENV} is not set)"
            )
        })
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
// Self-signed material
// ---------------------------------------------------------------------------

/// A freshly generated CA and serving certificate, PEM encoded.
#[derive(Clone, Debug)]
pub struct Material {
    /// The CA certificate (one `CERTIFICATE` block).
    pub ca_pem: String,
    /// The serving certificate (one `CERTIFICATE` block): `tls.crt`.
    pub cert_pem: String,
    /// The serving key as SEC1 `EC PRIVATE KEY`: `tls.key`.
    pub key_pem: String,
}

/// The clock-skew allowance for a validity: [`CLOCK_SKEW`] (1 min, as
/// operations.md §5.2 says), but at most a quarter of the validity. With
/// the spec's `NotAfter = now − 1 min + validity` a validity of a minute or
/// less would produce certificates that are expired when issued (tests use
/// 30 s); from a 4 min validity on this is exactly the spec.
pub fn clock_skew(validity: Duration) -> Duration {
    CLOCK_SKEW.min(validity / 4)
}

/// Generates a CA and a serving certificate for `dns_names` (operations.md
/// §5.2): `NotBefore = now − `[`clock_skew`]`, NotAfter = NotBefore + validity`
/// for both.
pub fn generate(
    dns_names: &[String],
    validity: Duration,
    now: SystemTime,
) -> Result<Material, String> {
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
        IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
    };
    let first = dns_names
        .first()
        .ok_or("the serving certificate needs a DNS name")?;
    let now_secs = now
        .duration_since(UNIX_EPOCH)
        .map_err(|_| "the clock is before 1970".to_string())?
        .as_secs();
    let not_before = rcgen::date_time_ymd(1970, 1, 1)
        + Duration::from_secs(now_secs.saturating_sub(clock_skew(validity).as_secs()));
    let not_after = not_before
        .checked_add(
            validity
                .try_into()
                .map_err(|_| "the certificate validity is out of range".to_string())?,
        )
        .ok_or("the certificate validity is out of range")?;
    let err = |what: &'static str| move |e: rcgen::Error| format!("generating the {what}: {e}");
    let p256 = &rcgen::PKCS_ECDSA_P256_SHA256;

    let mut ca = CertificateParams::default();
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name
        .push(DnType::CommonName, CA_COMMON_NAME);
    ca.serial_number = Some(SerialNumber::from_slice(&random_serial()?));
    ca.not_before = not_before;
    ca.not_after = not_after;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate_for(p256).map_err(err("CA key"))?;
    let ca_cert = ca.self_signed(&ca_key).map_err(err("CA certificate"))?;
    let issuer = Issuer::new(ca, ca_key);

    let mut leaf = CertificateParams::default();
    leaf.distinguished_name = DistinguishedName::new();
    leaf.distinguished_name
        .push(DnType::CommonName, first.as_str());
    leaf.subject_alt_names = dns_names
        .iter()
        .map(|n| {
            n.clone()
                .try_into()
                .map(SanType::DnsName)
                .map_err(|e| format!("invalid DNS name {n:?}: {e}"))
        })
        .collect::<Result<_, _>>()?;
    leaf.serial_number = Some(SerialNumber::from_slice(&random_serial()?));
    leaf.not_before = not_before;
    leaf.not_after = not_after;
    leaf.is_ca = IsCa::NoCa;
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    let leaf_key = KeyPair::generate_for(p256).map_err(err("serving key"))?;
    let leaf_cert = leaf
        .signed_by(&leaf_key, &issuer)
        .map_err(err("serving certificate"))?;

    let sec1 = sec1_from_pkcs8_p256(leaf_key.serialized_der(), leaf_key.public_key_raw())?;
    Ok(Material {
        ca_pem: encode_pem("CERTIFICATE", ca_cert.der()),
        cert_pem: encode_pem("CERTIFICATE", leaf_cert.der()),
        key_pem: encode_pem("EC PRIVATE KEY", &sec1),
    })
}

/// A random positive 128-bit serial number.
fn random_serial() -> Result<[u8; 16], String> {
    let mut serial = [0u8; 16];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut serial)
        .map_err(|_| "the system random generator failed".to_string())?;
    Ok(serial)
}

/// Re-encodes ring's PKCS#8 P-256 key as a standalone SEC1 `ECPrivateKey`
/// (RFC 5915, with the curve parameters, as Go's `MarshalECPrivateKey` does).
fn sec1_from_pkcs8_p256(pkcs8: &[u8], public_key: &[u8]) -> Result<Vec<u8>, String> {
    let bad = || "unexpected PKCS#8 key encoding".to_string();
    let mut input = pkcs8;
    let mut info = der::expect(&mut input, der::SEQUENCE).ok_or_else(bad)?;
    der::expect(&mut info, der::INTEGER).ok_or_else(bad)?;
    der::expect(&mut info, der::SEQUENCE).ok_or_else(bad)?;
    let mut wrapped = der::expect(&mut info, der::OCTET_STRING).ok_or_else(bad)?;
    let mut ec = der::expect(&mut wrapped, der::SEQUENCE).ok_or_else(bad)?;
    der::expect(&mut ec, der::INTEGER).ok_or_else(bad)?;
    let private = der::expect(&mut ec, der::OCTET_STRING).ok_or_else(bad)?;
    let mut body = der::tlv(der::INTEGER, &[1]);
    body.extend(der::tlv(der::OCTET_STRING, private));
    body.extend(der::tlv(0xa0, &der::tlv(der::OID, OID_P256)));
    let mut bits = vec![0u8];
    bits.extend_from_slice(public_key);
    body.extend(der::tlv(0xa1, &der::tlv(der::BIT_STRING, &bits)));
    Ok(der::tlv(der::SEQUENCE, &body))
}

const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

// ---------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------

/// Creates the cert dir (mode 0750) if it is absent.
pub fn ensure_dir(dir: &Path) -> Result<(), String> {
    if dir.is_dir() {
        return Ok(());
    }
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)
        .map_err(|e| format!("creating the webhook cert dir {}: {e}", dir.display()))
}

/// Writes `tls.key`, then `tls.crt` (mode 0600), each replaced atomically so
/// a reader never sees half a file, and a watcher woken by the certificate
/// never pairs it with the previous key.
pub fn write_files(dir: &Path, material: &Material) -> Result<(), String> {
    ensure_dir(dir)?;
    write_private(&dir.join(KEY_FILE), material.key_pem.as_bytes())?;
    write_private(&dir.join(CERT_FILE), material.cert_pem.as_bytes())
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("writing {}: {e}", path.display())
    })
}

// ---------------------------------------------------------------------------
// caBundle
// ---------------------------------------------------------------------------

/// The caBundle set operation (operations.md §5.3): the `CERTIFICATE` blocks
/// of `current`, re-encoded canonically, without duplicates, without blocks
/// equal to one in `remove` and without expired ones (`NotAfter ≤ now`; a
/// block whose certificate cannot be parsed is kept), followed by the blocks
/// of `add` not already present. Other PEM blocks and blocks that are not
/// base64 are dropped.
pub fn merge(current: &[u8], add: &[u8], remove: &[u8], now: SystemTime) -> Vec<u8> {
    let now = unix_seconds(now);
    let removed = certificate_blocks(remove);
    let mut kept: Vec<Vec<u8>> = Vec::new();
    for block in certificate_blocks(current) {
        if kept.contains(&block) || removed.contains(&block) {
            continue;
        }
        if parse_certificate(&block).is_some_and(|c| c.not_after <= now) {
            continue;
        }
        kept.push(block);
    }
    for block in certificate_blocks(add) {
        if !kept.contains(&block) {
            kept.push(block);
        }
    }
    kept.iter()
        .map(|b| encode_pem("CERTIFICATE", b))
        .collect::<String>()
        .into_bytes()
}

fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

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

// ---------------------------------------------------------------------------
// PEM and DER
// ---------------------------------------------------------------------------

/// One PEM block: `-----BEGIN <label>-----`, 64-column base64, `-----END <label>-----`.
pub fn encode_pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Every PEM block of `pem` as (label, DER); blocks whose body is not base64
/// are skipped (as Go's `pem.Decode` does), text between blocks is ignored.
pub fn pem_blocks(pem: &[u8]) -> Vec<(String, Vec<u8>)> {
    let text = String::from_utf8_lossy(pem);
    let mut rest: &str = &text;
    let mut out = Vec::new();
    while let Some(start) = rest.find("-----BEGIN ") {
        let after = &rest[start + "-----BEGIN ".len()..];
        let Some(label_end) = after.find("-----") else {
            break;
        };
        let label = &after[..label_end];
        let body = &after[label_end + 5..];
        let end_marker = format!("-----END {label}-----");
        let Some(end) = body.find(&end_marker) else {
            rest = body;
            continue;
        };
        rest = &body[end + end_marker.len()..];
        if label.contains('\n') {
            continue;
        }
        let b64: String = body[..end].chars().filter(|c| !c.is_whitespace()).collect();
        if let Ok(der) = base64::engine::general_purpose::STANDARD.decode(b64.as_bytes())
            && !der.is_empty()
        {
            out.push((label.to_string(), der));
        }
    }
    out
}

/// The DER of every `CERTIFICATE` block of `pem`.
pub fn certificate_blocks(pem: &[u8]) -> Vec<Vec<u8>> {
    pem_blocks(pem)
        .into_iter()
        .filter(|(label, _)| label == "CERTIFICATE")
        .map(|(_, der)| der)
        .collect()
}

/// What [`parse_certificate`] reads from an X.509 certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CertInfo {
    pub serial: Vec<u8>,
    pub issuer_cn: Option<String>,
    pub subject_cn: Option<String>,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// The named curve of an EC public key (dotted OID).
    pub public_key_curve: Option<String>,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<Vec<u8>>,
    /// SAN entries other than DNS names and IP addresses.
    pub other_names: usize,
    /// Key usage bits ([`KU_DIGITAL_SIGNATURE`] …), `None` without the extension.
    pub key_usage: Option<u16>,
    /// Extended key usages (dotted OIDs).
    pub ext_key_usage: Vec<String>,
    /// Basic constraints present.
    pub basic_constraints: bool,
    pub is_ca: bool,
    pub subject_key_id: Option<Vec<u8>>,
    pub authority_key_id: Option<Vec<u8>>,
}

/// Reads a DER certificate's serial, names, validity, key curve and the
/// SAN, key usage, extended key usage, basic constraints and key identifier
/// extensions. `None` when it is not a well-formed certificate.
pub fn parse_certificate(cert: &[u8]) -> Option<CertInfo> {
    use der::*;
    let mut input = cert;
    let mut certificate = expect(&mut input, SEQUENCE)?;
    let mut tbs = expect(&mut certificate, SEQUENCE)?;
    let mut info = CertInfo::default();
    if peek(tbs) == Some(0xa0) {
        read(&mut tbs)?;
    }
    info.serial = expect(&mut tbs, INTEGER)?.to_vec();
    expect(&mut tbs, SEQUENCE)?;
    info.issuer_cn = common_name(expect(&mut tbs, SEQUENCE)?);
    let mut validity = expect(&mut tbs, SEQUENCE)?;
    let (tag, nb) = read(&mut validity)?;
    info.not_before = parse_time(tag, nb)?;
    let (tag, na) = read(&mut validity)?;
    info.not_after = parse_time(tag, na)?;
    info.subject_cn = common_name(expect(&mut tbs, SEQUENCE)?);
    let mut spki = expect(&mut tbs, SEQUENCE)?;
    let mut alg = expect(&mut spki, SEQUENCE)?;
    expect(&mut alg, OID)?;
    if peek(alg) == Some(OID) {
        info.public_key_curve = Some(oid_string(expect(&mut alg, OID)?));
    }
    while !tbs.is_empty() {
        let (tag, content) = read(&mut tbs)?;
        if tag != 0xa3 {
            continue;
        }
        let mut content = content;
        let mut extensions = expect(&mut content, SEQUENCE)?;
        while !extensions.is_empty() {
            let mut ext = expect(&mut extensions, SEQUENCE)?;
            let oid = expect(&mut ext, OID)?;
            if peek(ext) == Some(BOOLEAN) {
                read(&mut ext)?;
            }
            let mut value = expect(&mut ext, OCTET_STRING)?;
            match oid {
                [0x55, 0x1d, 0x11] => {
                    let mut names = expect(&mut value, SEQUENCE)?;
                    while !names.is_empty() {
                        match read(&mut names)? {
                            (0x82, n) => info.dns_names.push(String::from_utf8_lossy(n).into()),
                            (0x87, ip) => info.ip_addresses.push(ip.to_vec()),
                            _ => info.other_names += 1,
                        }
                    }
                }
                [0x55, 0x1d, 0x0f] => {
                    let bits = expect(&mut value, BIT_STRING)?;
                    let mut usage = 0u16;
                    for i in 0..16usize {
                        if bits
                            .get(1 + i / 8)
                            .is_some_and(|b| b & (0x80 >> (i % 8)) != 0)
                        {
                            usage |= 1 << i;
                        }
                    }
                    info.key_usage = Some(usage);
                }
                [0x55, 0x1d, 0x25] => {
                    let mut oids = expect(&mut value, SEQUENCE)?;
                    while !oids.is_empty() {
                        info.ext_key_usage.push(oid_string(expect(&mut oids, OID)?));
                    }
                }
                [0x55, 0x1d, 0x13] => {
                    info.basic_constraints = true;
                    let mut bc = expect(&mut value, SEQUENCE)?;
                    if peek(bc) == Some(BOOLEAN) {
                        info.is_ca = expect(&mut bc, BOOLEAN)?.first().is_some_and(|b| *b != 0);
                    }
                }
                [0x55, 0x1d, 0x0e] => {
                    info.subject_key_id = Some(expect(&mut value, OCTET_STRING)?.to_vec());
                }
                [0x55, 0x1d, 0x23] => {
                    let mut aki = expect(&mut value, SEQUENCE)?;
                    if peek(aki) == Some(0x80) {
                        info.authority_key_id = Some(read(&mut aki)?.1.to_vec());
                    }
                }
                _ => {}
            }
        }
    }
    Some(info)
}

fn common_name(mut name: &[u8]) -> Option<String> {
    use der::*;
    while !name.is_empty() {
        let mut set = expect(&mut name, SET)?;
        while !set.is_empty() {
            let mut atv = expect(&mut set, SEQUENCE)?;
            let oid = expect(&mut atv, OID)?;
            let (_, value) = read(&mut atv)?;
            if oid == [0x55, 0x04, 0x03] {
                return Some(String::from_utf8_lossy(value).into_owned());
            }
        }
    }
    None
}

/// UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) as Unix seconds.
fn parse_time(tag: u8, value: &[u8]) -> Option<i64> {
    let digits = value.strip_suffix(b"Z")?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let num = |s: &[u8]| -> i64 { s.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')) };
    let (year, rest) = match (tag, digits.len()) {
        (der::UTC_TIME, 12) => {
            let yy = num(&digits[..2]);
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &digits[2..])
        }
        (der::GENERALIZED_TIME, 14) => (num(&digits[..4]), &digits[4..]),
        _ => return None,
    };
    let [month, day, hour, minute, second] = [0, 2, 4, 6, 8].map(|i| num(&rest[i..i + 2]));
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn oid_string(oid: &[u8]) -> String {
    let mut arcs: Vec<u64> = Vec::new();
    let mut value = 0u64;
    for &b in oid {
        value = (value << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (value / 40).min(2);
                arcs.push(first);
                arcs.push(value - first * 40);
            } else {
                arcs.push(value);
            }
            value = 0;
        }
    }
    arcs.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

/// Just enough DER: single-byte tags, definite lengths.
mod der {
    pub const BOOLEAN: u8 = 0x01;
    pub const INTEGER: u8 = 0x02;
    pub const BIT_STRING: u8 = 0x03;
    pub const OCTET_STRING: u8 = 0x04;
    pub const OID: u8 = 0x06;
    pub const UTC_TIME: u8 = 0x17;
    pub const GENERALIZED_TIME: u8 = 0x18;
    pub const SEQUENCE: u8 = 0x30;
    pub const SET: u8 = 0x31;

    /// Reads one element: (tag, content).
    pub fn read<'a>(input: &mut &'a [u8]) -> Option<(u8, &'a [u8])> {
        let (&tag, rest) = input.split_first()?;
        if tag & 0x1f == 0x1f {
            return None;
        }
        let (&first, mut rest) = rest.split_first()?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |l, b| (l << 8) | usize::from(*b));
            rest = &rest[n..];
            len
        };
        if rest.len() < len {
            return None;
        }
        let (content, after) = rest.split_at(len);
        *input = after;
        Some((tag, content))
    }

    /// Reads one element with this tag.
    pub fn expect<'a>(input: &mut &'a [u8], tag: u8) -> Option<&'a [u8]> {
        let (t, content) = read(input)?;
        (t == tag).then_some(content)
    }

    pub fn peek(input: &[u8]) -> Option<u8> {
        input.first().copied()
    }

    /// Encodes one element.
    pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = content.len();
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes: Vec<u8> = len
                .to_be_bytes()
                .into_iter()
                .skip_while(|b| *b == 0)
                .collect();
            out.push(0x80 | bytes.len() as u8);
            out.extend(bytes);
        }
        out.extend_from_slice(content);
        out
    }
}
