//! The webhook listener's TLS configuration: rustls with the ring provider,
//! HTTP/1.1, and the certificate taken from a [`CertSlot`] on every
//! handshake, so a renewed certificate is served without a restart.

use std::sync::Arc;

use crate::tls::CertSlot;

/// A rustls server configuration serving whatever the slot holds.
pub fn server_config(slot: Arc<CertSlot>) -> rustls::ServerConfig {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("the ring provider supports the default protocol versions")
    .with_no_client_auth()
    .with_cert_resolver(slot);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}
