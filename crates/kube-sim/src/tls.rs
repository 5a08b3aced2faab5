//! Certificates for the simulator's HTTPS endpoint, and the admin kubeconfig.

use std::sync::Arc;

use base64::Engine;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

/// A CA and a serving certificate it signed, in PEM.
#[derive(Clone, Debug)]
pub struct ServingCerts {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// Generates a fresh CA and a serving certificate for `127.0.0.1`, `::1` and
/// `localhost` (plus `extra_names`).
pub fn generate(extra_names: &[String]) -> Result<ServingCerts, rcgen::Error> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "kube-sim-ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    names.extend(extra_names.iter().cloned());
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &issuer)?;
    Ok(ServingCerts {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Installs the ring crypto provider as the process default (idempotent).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A rustls server configuration for the serving certificate (HTTP/1.1 only).
pub fn server_config(certs: &ServingCerts) -> Result<Arc<rustls::ServerConfig>, String> {
    install_crypto_provider();
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(certs.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("serving certificate: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(certs.key_pem.as_bytes())
        .map_err(|e| format!("serving key: {e}"))?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("TLS configuration: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A user written into the kubeconfig.
#[derive(Clone, Debug)]
pub struct KubeconfigUser {
    pub name: String,
    pub token: String,
}

/// A kubeconfig with one cluster, the admin user as the current context, and one
/// extra context per additional user (named after the user).
pub fn kubeconfig(
    server: &str,
    ca_pem: &str,
    admin_token: &str,
    users: &[KubeconfigUser],
) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let mut out = String::new();
    out.push_str("apiVersion: v1\nkind: Config\n");
    out.push_str(&format!(
        "clusters:\n- name: kube-sim\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\n"
    ));
    out.push_str("users:\n- name: admin\n  user:\n");
    out.push_str(&format!("    token: {admin_token}\n"));
    for u in users {
        out.push_str(&format!(
            "- name: {}\n  user:\n    token: {}\n",
            yaml_quote(&u.name),
            yaml_quote(&u.token)
        ));
    }
    out.push_str("contexts:\n- name: kube-sim\n  context:\n    cluster: kube-sim\n    user: admin\n    namespace: default\n");
    for u in users {
        let name = yaml_quote(&u.name);
        out.push_str(&format!(
            "- name: {name}\n  context:\n    cluster: kube-sim\n    user: {name}\n    namespace: default\n"
        ));
    }
    out.push_str("current-context: kube-sim\n");
    out
}

fn yaml_quote(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_build_a_server_config() {
        let certs = generate(&[]).unwrap();
        assert!(certs.ca_pem.contains("BEGIN CERTIFICATE"));
        server_config(&certs).unwrap();
        let kc = kubeconfig(
            "https://127.0.0.1:1",
            &certs.ca_pem,
            "t0",
            &[KubeconfigUser {
                name: "alice".into(),
                token: "t1".into(),
            }],
        );
        let parsed: serde_json::Value = serde_yaml_ng::from_str(&kc).unwrap();
        assert_eq!(parsed["users"][1]["name"], "alice");
        assert_eq!(parsed["current-context"], "kube-sim");
    }
}
