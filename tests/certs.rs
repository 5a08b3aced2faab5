//! Webhook certificates (operations.md §5, docs/decisions.md 7): the self-signed
//! material, the caBundle set operation and its write, two self-signed
//! replicas renewing every 10 s behind one ValidatingWebhookConfiguration
//! that kube-sim calls over TLS, and cert-manager mode's file reload.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube_sim::{KubeSim, Options, SimConfig};
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use serde_json::json;
use stageset_controller::actors::cert;
use stageset_controller::api::StageSet;
use stageset_controller::config::{Config, Invocation, parse_from_ignoring_unsupported};
use stageset_controller::controller::ControllerHandle;
use stageset_controller::http::{ServerOptions, WebhookOptions};
use stageset_controller::kube_client;
use stageset_controller::tls::{
    self, CA_COMMON_NAME, CURVE_P256, CertSlot, EKU_SERVER_AUTH, KU_DIGITAL_SIGNATURE,
    KU_KEY_CERT_SIGN, KU_KEY_ENCIPHERMENT, Material,
};

const SERVICE: &str = "stageset-webhook";
const SERVICE_NS: &str = "stageset-system";
const VWC: &str = "stageset-controller-webhook";
const APPS: &str = "apps";

fn host() -> String {
    format!("{SERVICE}.{SERVICE_NS}.svc")
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn material(validity: Duration, now: SystemTime) -> Material {
    tls::generate(&cert::dns_names(SERVICE, SERVICE_NS), validity, now).expect("material")
}

fn der_of(pem: &str) -> Vec<u8> {
    let blocks = tls::certificate_blocks(pem.as_bytes());
    assert_eq!(blocks.len(), 1, "{pem}");
    blocks.into_iter().next().unwrap()
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Whether `leaf` verifies for `name` against the CAs of `bundle`, as a TLS
/// client trusting only the caBundle would check it.
fn trusted(leaf: &[u8], bundle: &[u8], name: &str) -> Result<(), String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(
        tls::certificate_blocks(bundle)
            .into_iter()
            .map(CertificateDer::from),
    );
    if roots.is_empty() {
        return Err("no CA in the bundle".into());
    }
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| e.to_string())?;
    verifier
        .verify_server_cert(
            &CertificateDer::from(leaf.to_vec()),
            &[],
            &ServerName::try_from(name.to_string()).unwrap(),
            &[],
            UnixTime::now(),
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------
// Material
// ---------------------------------------------------------------------------

#[test]
fn self_signed_material_has_the_specified_properties() {
    let now = SystemTime::now();
    let validity = Duration::from_secs(8760 * 3600);
    let m = material(validity, now);

    let ca = tls::parse_certificate(&der_of(&m.ca_pem)).expect("CA parses");
    assert_eq!(ca.subject_cn.as_deref(), Some(CA_COMMON_NAME));
    assert_eq!(ca.issuer_cn.as_deref(), Some(CA_COMMON_NAME));
    assert!(ca.basic_constraints && ca.is_ca);
    assert_eq!(ca.key_usage, Some(KU_KEY_CERT_SIGN | KU_DIGITAL_SIGNATURE));
    assert_eq!(ca.public_key_curve.as_deref(), Some(CURVE_P256));
    assert!(ca.dns_names.is_empty() && ca.ip_addresses.is_empty());

    let leaf = tls::parse_certificate(&der_of(&m.cert_pem)).expect("leaf parses");
    let names = [
        format!("{SERVICE}.{SERVICE_NS}.svc"),
        format!("{SERVICE}.{SERVICE_NS}.svc.cluster.local"),
    ];
    assert_eq!(leaf.dns_names, names);
    assert!(leaf.ip_addresses.is_empty(), "no IP SANs");
    assert_eq!(leaf.other_names, 0);
    assert_eq!(leaf.subject_cn.as_deref(), Some(names[0].as_str()));
    assert_eq!(leaf.issuer_cn.as_deref(), Some(CA_COMMON_NAME));
    assert_eq!(
        leaf.key_usage,
        Some(KU_DIGITAL_SIGNATURE | KU_KEY_ENCIPHERMENT)
    );
    assert_eq!(leaf.ext_key_usage, [EKU_SERVER_AUTH]);
    assert!(!leaf.is_ca);
    assert_eq!(leaf.public_key_curve.as_deref(), Some(CURVE_P256));
    assert!(leaf.authority_key_id.is_some());
    assert_eq!(leaf.authority_key_id, ca.subject_key_id);

    // Validity: NotBefore = now − 1 min, NotAfter = NotBefore + validity, same
    // window for both.
    for c in [&ca, &leaf] {
        assert!((c.not_before - (unix(now) - 60)).abs() <= 1, "{c:?}");
        assert_eq!(c.not_after - c.not_before, validity.as_secs() as i64);
    }
    // Random positive 128-bit serials, distinct.
    for c in [&ca, &leaf] {
        assert!(c.serial.len() <= 17 && c.serial[0] & 0x80 == 0, "{c:?}");
        if c.serial.len() == 17 {
            assert_eq!(c.serial[0], 0);
        }
    }
    assert_ne!(ca.serial, leaf.serial);
    let again = material(validity, now);
    assert_ne!(again.ca_pem, m.ca_pem);
    assert_ne!(
        tls::parse_certificate(&der_of(&again.ca_pem))
            .unwrap()
            .serial,
        ca.serial
    );

    // The key is SEC1 `EC PRIVATE KEY` and matches the certificate.
    let blocks = tls::pem_blocks(m.key_pem.as_bytes());
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0].0, "EC PRIVATE KEY");
    assert!(matches!(
        PrivateKeyDer::from_pem_slice(m.key_pem.as_bytes()),
        Ok(PrivateKeyDer::Sec1(_))
    ));
    stageset_controller::tls::certified_key(m.cert_pem.as_bytes(), m.key_pem.as_bytes())
        .expect("key matches the certificate");

    // The leaf chains to its CA for both names, and only to its CA.
    for name in &names {
        trusted(&der_of(&m.cert_pem), m.ca_pem.as_bytes(), name).expect("trusted");
    }
    assert!(trusted(&der_of(&m.cert_pem), m.ca_pem.as_bytes(), "other.svc").is_err());
    assert!(trusted(&der_of(&m.cert_pem), again.ca_pem.as_bytes(), &names[0]).is_err());
}

#[test]
fn short_validities_are_not_born_expired() {
    let now = SystemTime::now();
    let m = material(Duration::from_secs(30), now);
    let leaf = tls::parse_certificate(&der_of(&m.cert_pem)).unwrap();
    assert_eq!(leaf.not_after - leaf.not_before, 30);
    assert!(leaf.not_before <= unix(now) && leaf.not_after > unix(now) + 15);
    assert_eq!(
        tls::clock_skew(Duration::from_secs(8760 * 3600)),
        Duration::from_secs(60)
    );
    assert_eq!(
        tls::clock_skew(Duration::from_secs(240)),
        Duration::from_secs(60)
    );
}

#[test]
fn files_are_written_private_key_first() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a/serving-certs");
    let m = material(Duration::from_secs(3600), SystemTime::now());
    tls::write_files(&dir, &m).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode(&dir) & !0o022,
        0o750 & !0o022,
        "cert dir 0750 (minus umask)"
    );
    assert_eq!(mode(&dir.join("tls.key")), 0o600);
    assert_eq!(mode(&dir.join("tls.crt")), 0o600);
    assert_eq!(
        std::fs::read_to_string(dir.join("tls.crt")).unwrap(),
        m.cert_pem
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("tls.key")).unwrap(),
        m.key_pem
    );
    // Rewriting keeps the modes and leaves no temporary files.
    let n = material(Duration::from_secs(3600), SystemTime::now());
    tls::write_files(&dir, &n).unwrap();
    assert_eq!(mode(&dir.join("tls.key")), 0o600);
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
    CertSlot::new()
        .load_dir(&dir)
        .expect("the written pair loads");
}

#[test]
fn retry_backoff_and_namespace() {
    let default_period = Duration::from_secs(8760 * 3600) / 3;
    let delays: Vec<u64> = (1..=7)
        .map(|n| cert::retry_delay(default_period, n).as_secs())
        .collect();
    assert_eq!(delays, [300, 600, 1200, 2400, 3600, 3600, 3600]);
    let delays: Vec<u64> = (1..=6)
        .map(|n| cert::retry_delay(Duration::from_secs(10), n).as_secs())
        .collect();
    assert_eq!(delays, [1, 2, 4, 8, 12, 12]);
    assert_eq!(
        cert::retry_delay(Duration::from_secs(10), u32::MAX),
        Duration::from_secs(12)
    );

    assert_eq!(
        kube_client::namespace_from(Some("prod\n".into()), Some("env".into())).unwrap(),
        "prod"
    );
    assert_eq!(
        kube_client::namespace_from(None, Some("env".into())).unwrap(),
        "env"
    );
    let err = kube_client::namespace_from(Some(" ".into()), None).unwrap_err();
    assert!(err.contains("--webhook-service-namespace"), "{err}");
}

// ---------------------------------------------------------------------------
// merge
// ---------------------------------------------------------------------------

/// A PEM block written the way a human might: CRLF, one long base64 line.
fn sloppy(der: &[u8]) -> String {
    use base64::Engine;
    format!(
        "-----BEGIN CERTIFICATE-----\r\n{}\r\n-----END CERTIFICATE-----\r\n",
        base64::engine::general_purpose::STANDARD.encode(der)
    )
}

#[test]
fn merge_is_a_set_operation() {
    let now = SystemTime::now();
    let hour = Duration::from_secs(3600);
    let a = material(hour, now).ca_pem;
    let b = material(hour, now).ca_pem;
    let c = material(hour, now).ca_pem;
    let merge = |cur: &str, add: &str, remove: &str| {
        String::from_utf8(tls::merge(
            cur.as_bytes(),
            add.as_bytes(),
            remove.as_bytes(),
            now,
        ))
        .unwrap()
    };

    // Union, canonical re-encoding, duplicates dropped, order kept.
    let current = format!(
        "{}\nsome text\n{a}{}",
        sloppy(&der_of(&b)),
        sloppy(&der_of(&a))
    );
    assert_eq!(merge(&current, &c, ""), format!("{b}{a}{c}"));
    assert_eq!(merge(&format!("{a}{b}"), &a, ""), format!("{a}{b}"));
    assert_eq!(merge("", &a, ""), a);
    // Removal by certificate, however it was written.
    assert_eq!(
        merge(&format!("{a}{b}"), &c, &sloppy(&der_of(&a))),
        format!("{b}{c}")
    );
    assert_eq!(merge(&format!("{a}{b}"), "", &format!("{a}{b}")), "");
    // Idempotent.
    let once = merge(&format!("{a}{b}"), &c, &a);
    assert_eq!(merge(&once, &c, &a), once);

    // Expired CAs go (NotAfter ≤ now); valid ones stay.
    let expired = material(Duration::from_secs(600), now - Duration::from_secs(3600)).ca_pem;
    assert_eq!(merge(&format!("{expired}{a}"), &b, ""), format!("{a}{b}"));
    let info = tls::parse_certificate(&der_of(&expired)).unwrap();
    let at_expiry = SystemTime::UNIX_EPOCH + Duration::from_secs(info.not_after as u64);
    let before = at_expiry - Duration::from_secs(1);
    assert_eq!(
        tls::merge(expired.as_bytes(), b"", b"", before),
        expired.as_bytes()
    );
    assert!(tls::merge(expired.as_bytes(), b"", b"", at_expiry).is_empty());

    // A CERTIFICATE block that does not parse as a certificate is kept
    // (canonically); other PEM types and broken base64 are dropped.
    let junk = tls::encode_pem("CERTIFICATE", b"not a certificate");
    let key = material(hour, now).key_pem;
    let broken = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
    assert_eq!(
        merge(
            &format!("{junk}{key}{broken}{}", sloppy(b"not a certificate")),
            &a,
            ""
        ),
        format!("{junk}{a}")
    );
    assert!(tls::parse_certificate(b"not a certificate").is_none());
}

// ---------------------------------------------------------------------------
// kube-sim helpers
// ---------------------------------------------------------------------------

fn sim_with(service_map: HashMap<String, String>) -> KubeSim {
    let sim = KubeSim::start(Options {
        config: SimConfig {
            service_map,
            ..SimConfig::default()
        },
        ..Options::default()
    })
    .expect("kube-sim starts");
    for c in stageset_controller::api::crd::all() {
        sim.load(serde_json::to_value(&c).unwrap()).unwrap();
    }
    for c in stageset_controller::dev::flux::source_crds() {
        sim.load(c).unwrap();
    }
    sim
}

async fn kube_config(sim: &KubeSim) -> kube::Config {
    let kubeconfig = Kubeconfig::from_yaml(&sim.kubeconfig()).expect("kubeconfig");
    kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("config")
}

fn vwc_object(port: u16, webhooks: usize) -> ValidatingWebhookConfiguration {
    let hook = |name: &str, resource: &str| {
        json!({
            "name": name,
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": "Fail",
            "timeoutSeconds": 10,
            "clientConfig": {"service": {
                "namespace": SERVICE_NS,
                "name": SERVICE,
                "path": format!("/validate-stages-metio-wtf-v1-{resource}"),
                "port": port
            }},
            "rules": [{
                "apiGroups": ["stages.metio.wtf"],
                "apiVersions": ["v1"],
                "operations": ["CREATE", "UPDATE"],
                "resources": [format!("{resource}s")]
            }]
        })
    };
    let all = [
        hook("vstageset.stages.metio.wtf", "stageset"),
        hook(
            "vimageverificationpolicy.stages.metio.wtf",
            "imageverificationpolicy",
        ),
    ];
    serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": VWC},
        "webhooks": all[..webhooks],
    }))
    .unwrap()
}

fn bundles(vwc: &ValidatingWebhookConfiguration) -> Vec<Vec<u8>> {
    vwc.webhooks
        .iter()
        .flatten()
        .map(|w| {
            w.client_config
                .ca_bundle
                .as_ref()
                .map(|b| b.0.clone())
                .unwrap_or_default()
        })
        .collect()
}

fn flags(extra: &[String]) -> Box<Config> {
    let mut argv: Vec<String> = [
        "stageset-controller",
        "--metrics-bind-address=0",
        "--health-probe-bind-address=0",
        "--gate-bind-address=",
        // The test's StageSets are not reconciled: this is about the webhook.
        "--watch-namespaces=unwatched",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    argv.extend(extra.iter().cloned());
    let Invocation::Run(config) =
        parse_from_ignoring_unsupported(argv, &|_: &str| None).expect("flags parse")
    else {
        panic!("not a controller run");
    };
    config
}

fn self_signed_flags(dir: &Path, validity: &str) -> Vec<String> {
    vec![
        "--webhook-cert-mode=self-signed".into(),
        format!("--webhook-cert-validity={validity}"),
        format!("--webhook-cert-dir={}", dir.display()),
        format!("--webhook-service-name={SERVICE}"),
        format!("--webhook-service-namespace={SERVICE_NS}"),
        format!("--webhook-validating-config-name={VWC}"),
    ]
}

/// Starts a controller with only a webhook listener on `127.0.0.1:port`.
async fn replica(
    sim: &KubeSim,
    config: &Config,
    port: u16,
) -> Result<(ControllerHandle, Arc<CertSlot>), String> {
    let certs = CertSlot::new();
    let servers = ServerOptions {
        workers: 1,
        webhook: Some(WebhookOptions {
            addr: format!("127.0.0.1:{port}"),
            certs: certs.clone(),
        }),
        ..Default::default()
    };
    let kc = kube_config(sim).await;
    let handle = stageset_controller::controller::start_with(config, kc, servers)?;
    Ok((handle, certs))
}

/// Accepts any server certificate; the test checks it separately.
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The leaf certificate a TLS handshake with `127.0.0.1:port` presents.
async fn served_leaf(port: u16) -> Result<Vec<u8>, String> {
    tokio::task::spawn_blocking(move || {
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCert(provider())))
            .with_no_client_auth();
        let mut conn =
            rustls::ClientConnection::new(Arc::new(config), ServerName::try_from(host()).unwrap())
                .map_err(|e| e.to_string())?;
        let mut sock =
            std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        sock.set_read_timeout(Some(Duration::from_secs(5))).ok();
        while conn.is_handshaking() {
            conn.complete_io(&mut sock).map_err(|e| e.to_string())?;
        }
        conn.peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref().to_vec())
            .ok_or_else(|| "no server certificate".to_string())
    })
    .await
    .unwrap()
}

/// Whether a kube-sim write reached the webhook over TLS and got an HTTP
/// answer: allowed, denied, or a non-200 answer (the webhook handler may not
/// serve every path). TLS and connection failures are reported as
/// "failed to call webhook" by kube-sim.
fn reached_webhook<T>(result: Result<T, kube::Error>) -> Result<(), String> {
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s))
            if s.message.contains("received invalid webhook response")
                || s.message.contains("denied the request")
                || s.message.contains("expected response.uid") =>
        {
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    }
}

fn stageset(name: &str) -> StageSet {
    serde_json::from_value(json!({
        "apiVersion": "stages.metio.wtf/v1",
        "kind": "StageSet",
        "metadata": {"name": name, "namespace": APPS},
        "spec": {"stages": [{"name": "app", "sourceRef": {"name": "app"}}]}
    }))
    .unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// ---------------------------------------------------------------------------
// caBundle writes against kube-sim
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_bundle_updates_stamp_every_webhook_and_never_write_empty() {
    let sim = sim_with(HashMap::new());
    let client = kube::Client::try_from(kube_config(&sim).await).unwrap();
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let now = SystemTime::now();
    let a = material(Duration::from_secs(3600), now).ca_pem;
    let b = material(Duration::from_secs(3600), now).ca_pem;

    let err = cert::update_ca_bundle(&client, VWC, |c| c.to_vec())
        .await
        .unwrap_err();
    assert!(err.contains("chart deployed"), "{err}");

    api.create(&PostParams::default(), &vwc_object(443, 0))
        .await
        .unwrap();
    let err = cert::update_ca_bundle(&client, VWC, |_| a.clone().into_bytes())
        .await
        .unwrap_err();
    assert!(err.contains("no webhooks"), "{err}");
    api.delete(VWC, &Default::default()).await.unwrap();

    api.create(&PostParams::default(), &vwc_object(443, 2))
        .await
        .unwrap();
    let add = |ca: String| move |cur: &[u8]| tls::merge(cur, ca.as_bytes(), b"", SystemTime::now());
    assert!(
        cert::update_ca_bundle(&client, VWC, add(a.clone()))
            .await
            .unwrap()
    );
    assert!(
        cert::update_ca_bundle(&client, VWC, add(b.clone()))
            .await
            .unwrap()
    );
    let v = api.get(VWC).await.unwrap();
    let rv = v.metadata.resource_version.clone();
    assert_eq!(bundles(&v), vec![format!("{a}{b}").into_bytes(); 2]);

    // Unchanged: no write.
    assert!(
        !cert::update_ca_bundle(&client, VWC, add(b.clone()))
            .await
            .unwrap()
    );
    assert_eq!(api.get(VWC).await.unwrap().metadata.resource_version, rv);

    // Empty: refused, nothing written.
    let remove_all = |cur: &[u8]| tls::merge(cur, b"", cur, SystemTime::now());
    let err = cert::update_ca_bundle(&client, VWC, remove_all)
        .await
        .unwrap_err();
    assert!(err.contains("empty caBundle"), "{err}");
    assert_eq!(api.get(VWC).await.unwrap().metadata.resource_version, rv);

    // Entries that disagree are all stamped with the first one's result.
    let mut v = api.get(VWC).await.unwrap();
    v.webhooks.as_mut().unwrap()[1].client_config.ca_bundle = None;
    api.replace(VWC, &PostParams::default(), &v).await.unwrap();
    assert!(
        cert::update_ca_bundle(&client, VWC, add(b.clone()))
            .await
            .unwrap()
    );
    assert_eq!(
        bundles(&api.get(VWC).await.unwrap()),
        vec![format!("{a}{b}").into_bytes(); 2]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_signed_start_fails_without_its_prerequisites() {
    let sim = sim_with(HashMap::new());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("certs");

    // No ValidatingWebhookConfiguration: the controller does not start.
    let config = flags(&self_signed_flags(&dir, "1h"));
    let err = replica(&sim, &config, 0).await.err().expect("start fails");
    assert!(err.contains("chart deployed"), "{err}");

    // No VWC name: refused before touching the cluster.
    let mut f = self_signed_flags(&dir, "1h");
    f.retain(|s| !s.starts_with("--webhook-validating-config-name"));
    let err = replica(&sim, &flags(&f), 0)
        .await
        .err()
        .expect("start fails");
    assert!(err.contains("--webhook-validating-config-name"), "{err}");
}

// ---------------------------------------------------------------------------
// Two self-signed replicas renewing behind one VWC
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_signed_replicas_renew_without_breaking_the_webhook() {
    // kube-sim's service map is fixed at start: reserve replica A's port.
    let port_a = free_port();
    let sim = sim_with(HashMap::from([(
        format!("{SERVICE_NS}/{SERVICE}"),
        format!("127.0.0.1:{port_a}"),
    )]));
    let client = kube::Client::try_from(kube_config(&sim).await).unwrap();
    for ns in [APPS, SERVICE_NS] {
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap();
    }
    let stagesets: Api<StageSet> = Api::namespaced(client.clone(), APPS);
    // Created before the webhook exists, so updates have something to update
    // whatever the webhook answers to creates.
    stagesets
        .create(&PostParams::default(), &stageset("existing"))
        .await
        .unwrap();
    let vwcs: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    vwcs.create(&PostParams::default(), &vwc_object(port_a, 2))
        .await
        .unwrap();

    let tmp = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (tmp.path().join("a"), tmp.path().join("b"));
    let (a, slot_a) = replica(&sim, &flags(&self_signed_flags(&dir_a, "30s")), port_a)
        .await
        .expect("replica A starts");
    let (b, slot_b) = replica(&sim, &flags(&self_signed_flags(&dir_b, "30s")), 0)
        .await
        .expect("replica B starts");
    let port_b = b.bound().webhook.unwrap().port();
    assert_eq!(a.bound().webhook.unwrap().port(), port_a);

    // Each replica serves what it wrote, and both CAs are trusted.
    for (dir, slot) in [(&dir_a, &slot_a), (&dir_b, &slot_b)] {
        let written = std::fs::read_to_string(dir.join("tls.crt")).unwrap();
        assert_eq!(slot.leaf_der().unwrap(), der_of(&written));
    }
    let first = bundles(&vwcs.get(VWC).await.unwrap());
    assert_eq!(
        tls::certificate_blocks(&first[0]).len(),
        2,
        "one CA per replica"
    );

    let started = Instant::now();
    let mut leaves: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];
    let mut handshakes: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];
    let mut seen_bundles: Vec<Vec<u8>> = Vec::new();
    let mut calls = 0usize;
    let mut round = 0usize;
    loop {
        round += 1;
        // Served certificates first, then the bundle: a CA is removed only
        // 5 s after its certificate stopped being served.
        let slot_leaves = [slot_a.leaf_der().unwrap(), slot_b.leaf_der().unwrap()];
        let shaken = [
            served_leaf(port_a).await.expect("TLS handshake with A"),
            served_leaf(port_b).await.expect("TLS handshake with B"),
        ];
        let vwc = vwcs.get(VWC).await.unwrap();
        let all = bundles(&vwc);
        assert_eq!(all.len(), 2);
        assert_eq!(all[0], all[1], "every webhook carries the same bundle");
        let bundle = all[0].clone();
        assert!(
            !tls::certificate_blocks(&bundle).is_empty(),
            "the caBundle is never empty"
        );
        for (i, leaf) in slot_leaves.iter().chain(shaken.iter()).enumerate() {
            trusted(leaf, &bundle, &host()).unwrap_or_else(|e| {
                panic!(
                    "round {round}: certificate {i} is not trusted by the caBundle: {e}\n{}",
                    String::from_utf8_lossy(&bundle)
                )
            });
        }
        for (r, leaf) in slot_leaves.into_iter().enumerate() {
            if !leaves[r].contains(&leaf) {
                leaves[r].push(leaf);
            }
        }
        for (r, leaf) in shaken.into_iter().enumerate() {
            if !handshakes[r].contains(&leaf) {
                handshakes[r].push(leaf);
            }
        }
        if !seen_bundles.contains(&bundle) {
            seen_bundles.push(bundle);
        }

        // kube-sim calls the webhook (replica A) over TLS for a create and an update.
        let created = stagesets
            .create(&PostParams::default(), &stageset(&format!("new-{round}")))
            .await;
        reached_webhook(created)
            .unwrap_or_else(|e| panic!("round {round}: create did not reach the webhook: {e}"));
        let updated = stagesets
            .patch(
                "existing",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"round": round.to_string()}}})),
            )
            .await;
        reached_webhook(updated)
            .unwrap_or_else(|e| panic!("round {round}: update did not reach the webhook: {e}"));
        calls += 2;

        let renewed_twice = leaves.iter().all(|l| l.len() >= 3) && handshakes[0].len() >= 3;
        let elapsed = started.elapsed();
        if elapsed > Duration::from_secs(25) && renewed_twice && seen_bundles.len() >= 3 {
            break;
        }
        assert!(
            elapsed < Duration::from_secs(90),
            "timed out: leaves seen per replica {:?}, via TLS {:?}, bundles seen {}",
            leaves.iter().map(Vec::len).collect::<Vec<_>>(),
            handshakes.iter().map(Vec::len).collect::<Vec<_>>(),
            seen_bundles.len()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(calls >= 20, "{calls} webhook calls");

    // The files on disk follow the renewals.
    for dir in [&dir_a, &dir_b] {
        let written = std::fs::read_to_string(dir.join("tls.crt")).unwrap();
        let key = std::fs::read_to_string(dir.join("tls.key")).unwrap();
        stageset_controller::tls::certified_key(written.as_bytes(), key.as_bytes())
            .expect("the files on disk are a matching pair");
    }
    a.stop();
    b.stop();
    // With both replicas gone nothing removes their CAs: the bundle keeps the
    // last ones (bounded by expiry), never empty.
    let last = bundles(&vwcs.get(VWC).await.unwrap());
    assert!(!tls::certificate_blocks(&last[0]).is_empty());
}

fn renewal_failures(handle: &ControllerHandle) -> u64 {
    handle
        .metrics()
        .encode()
        .lines()
        .find(|l| l.starts_with("stageset_webhook_cert_renewal_failures_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// docs/decisions.md 7: a failed renewal is retried with backoff (scaled to 1 s,
/// 2 s, 4 s … for a 10 s period) rather than at the next tick, counted in
/// `stageset_webhook_cert_renewal_failures_total`, and recovers once the
/// cause is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_renewals_are_retried_with_backoff() {
    let sim = sim_with(HashMap::new());
    let client = kube::Client::try_from(kube_config(&sim).await).unwrap();
    let vwcs: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    vwcs.create(&PostParams::default(), &vwc_object(443, 1))
        .await
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let config = flags(&self_signed_flags(&tmp.path().join("certs"), "30s"));
    let (handle, slot) = replica(&sim, &config, 0).await.expect("replica starts");
    let started = Instant::now();
    let bootstrap_leaf = slot.leaf_der().unwrap();
    vwcs.delete(VWC, &Default::default()).await.unwrap();

    // Without retries there would be one failure per 10 s tick.
    loop {
        if renewal_failures(&handle) >= 3 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(25),
            "only {} renewal failures",
            renewal_failures(&handle)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(slot.leaf_der().unwrap(), bootstrap_leaf, "nothing rotated");

    vwcs.create(&PostParams::default(), &vwc_object(443, 1))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let leaf = slot.leaf_der().unwrap();
        let bundle = bundles(&vwcs.get(VWC).await.unwrap()).remove(0);
        if leaf != bootstrap_leaf && trusted(&leaf, &bundle, &host()).is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "the renewer did not recover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    handle.stop();
}

// ---------------------------------------------------------------------------
// cert-manager mode: the mounted files are reloaded
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cert_manager_files_are_reloaded_when_they_change() {
    let sim = sim_with(HashMap::new());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("mounted");
    let hour = Duration::from_secs(3600);
    let first = material(hour, SystemTime::now());
    tls::write_files(&dir, &first).unwrap();

    let config = flags(&[format!("--webhook-cert-dir={}", dir.display())]);
    // The production path: server_options loads the mounted pair.
    let mut servers = stageset_controller::controller::server_options(&config).unwrap();
    servers.metrics = None;
    servers.health = None;
    servers.gate = None;
    servers.workers = 1;
    let webhook = servers.webhook.as_mut().expect("webhook enabled");
    webhook.addr = "127.0.0.1:0".into();
    let slot = webhook.certs.clone();
    let handle =
        stageset_controller::controller::start_with(&config, kube_config(&sim).await, servers)
            .expect("controller starts");
    let port = handle.bound().webhook.unwrap().port();
    assert_eq!(served_leaf(port).await.unwrap(), der_of(&first.cert_pem));

    let wait_served = |want: Vec<u8>| async move {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if served_leaf(port).await.unwrap() == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the new certificate is not served"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };

    // A pair that does not match: the current certificate stays.
    let second = material(hour, SystemTime::now());
    std::fs::write(dir.join("tls.crt"), &second.cert_pem).unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(served_leaf(port).await.unwrap(), der_of(&first.cert_pem));
    assert_eq!(slot.leaf_der().unwrap(), der_of(&first.cert_pem));

    // The matching key arrives: reloaded.
    std::fs::write(dir.join("tls.key"), &second.key_pem).unwrap();
    wait_served(der_of(&second.cert_pem)).await;

    // Replaced again (as cert-manager rotating the Secret would).
    let third = material(hour, SystemTime::now());
    tls::write_files(&dir, &third).unwrap();
    wait_served(der_of(&third.cert_pem)).await;

    // Garbage: kept.
    std::fs::write(dir.join("tls.crt"), "not a certificate").unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(served_leaf(port).await.unwrap(), der_of(&third.cert_pem));
    handle.stop();
}

/// Issue 19: the self-signed certificate directory stops being writable (it
/// is replaced by a file, which even root cannot write into). The webhook
/// keeps serving its current certificate and admitting requests, each failed
/// renewal is logged and counted and retried with backoff, and once the
/// directory is back a retry renews.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_certificate_directory_keeps_the_current_certificate_serving() {
    let port = free_port();
    let sim = sim_with(HashMap::from([(
        format!("{SERVICE_NS}/{SERVICE}"),
        format!("127.0.0.1:{port}"),
    )]));
    let client = kube::Client::try_from(kube_config(&sim).await).unwrap();
    for ns in [APPS, SERVICE_NS] {
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap();
    }
    let vwcs: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    vwcs.create(&PostParams::default(), &vwc_object(port, 1))
        .await
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("certs");
    // Validity 30 s: renewal every 10 s, retries after 1 s, 2 s, 4 s ...
    let (handle, slot) = replica(&sim, &flags(&self_signed_flags(&dir, "30s")), port)
        .await
        .expect("the replica starts");
    let first = served_leaf(port).await.expect("TLS handshake");
    assert_eq!(slot.leaf_der().unwrap(), first);

    // The directory becomes a file: every write into it fails.
    let moved = tmp.path().join("certs.moved");
    std::fs::rename(&dir, &moved).unwrap();
    std::fs::write(&dir, b"not a directory").unwrap();
    let failures = |h: &ControllerHandle| {
        h.metrics()
            .encode()
            .lines()
            .find_map(|l| l.strip_prefix("stageset_webhook_cert_renewal_failures_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let stagesets: Api<StageSet> = Api::namespaced(client.clone(), APPS);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut n = 0;
    while failures(&handle) < 2.0 {
        assert!(Instant::now() < deadline, "no failed renewal retried");
        // Meanwhile the current certificate keeps serving and admitting.
        assert_eq!(served_leaf(port).await.expect("TLS handshake"), first);
        n += 1;
        reached_webhook(
            stagesets
                .create(&PostParams::default(), &stageset(&format!("during-{n}")))
                .await,
        )
        .expect("the webhook answers while renewals fail");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        slot.leaf_der().unwrap(),
        first,
        "the served certificate is kept"
    );
    assert_eq!(served_leaf(port).await.unwrap(), first);

    // The directory is back: a retry renews.
    std::fs::remove_file(&dir).unwrap();
    std::fs::rename(&moved, &dir).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let served = served_leaf(port).await.expect("TLS handshake");
        if served != first {
            let written = std::fs::read_to_string(dir.join("tls.crt")).unwrap();
            assert_eq!(served, der_of(&written), "serves what it wrote");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no renewal after the directory came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    reached_webhook(
        stagesets
            .create(&PostParams::default(), &stageset("after"))
            .await,
    )
    .expect("the webhook answers with the renewed certificate");
}
