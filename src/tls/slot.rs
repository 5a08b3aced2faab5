//! The webhook's serving certificate, swappable while the server runs.
//!
//! The certificate actors fill the slot and the webhook listener reads it,
//! so it sits below both (actors never import `http`).
//!
//! [`CertSlot`] is a rustls certificate resolver: every TLS handshake asks it
//! for the current certificate, so replacing the slot's content (renewal,
//! cert-manager rotating the mounted Secret) takes effect for the next
//! connection without a restart and without touching connections already open.

use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The file names in `--webhook-cert-dir` (both modes).
pub const CERT_FILE: &str = "tls.crt";
pub const KEY_FILE: &str = "tls.key";

/// The current serving certificate.
#[derive(Debug, Default)]
pub struct CertSlot {
    current: RwLock<Option<Arc<CertifiedKey>>>,
}

impl CertSlot {
    pub fn new() -> Arc<CertSlot> {
        Arc::new(CertSlot::default())
    }

    /// Replaces the certificate with a PEM chain and key.
    pub fn set_pem(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<(), String> {
        let key = certified_key(cert_pem, key_pem)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(key));
        Ok(())
    }

    /// Replaces the certificate with one already parsed (see [`certified_key`]).
    pub fn set(&self, key: CertifiedKey) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(key));
    }

    /// Loads `tls.crt` and `tls.key` from a directory.
    pub fn load_dir(&self, dir: &Path) -> Result<(), String> {
        let cert = std::fs::read(dir.join(CERT_FILE))
            .map_err(|e| format!("reading {}: {e}", dir.join(CERT_FILE).display()))?;
        let key = std::fs::read(dir.join(KEY_FILE))
            .map_err(|e| format!("reading {}: {e}", dir.join(KEY_FILE).display()))?;
        self.set_pem(&cert, &key)
    }

    /// Whether a certificate is loaded.
    pub fn is_loaded(&self) -> bool {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// The DER of the leaf certificate currently served.
    pub fn leaf_der(&self) -> Option<Vec<u8>> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .and_then(|k| k.cert.first().map(|c| c.as_ref().to_vec()))
    }
}

/// Parses a PEM certificate chain and private key into a rustls key.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("parsing the certificate: {e}"))?;
    if certs.is_empty() {
        return Err("the certificate file holds no CERTIFICATE block".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| format!("parsing the private key: {e}"))?;
    let signer = any_supported_type(&key).map_err(|e| format!("unusable private key: {e}"))?;
    let certified = CertifiedKey::new(certs, signer);
    certified
        .keys_match()
        .map_err(|e| format!("the certificate does not match the key: {e}"))?;
    Ok(certified)
}

impl ResolvesServerCert for CertSlot {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
