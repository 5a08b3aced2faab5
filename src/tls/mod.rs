//! Certificates, with no actor, HTTP or cluster code: the hot-swappable
//! serving-certificate slot the webhook listener reads ([`CertSlot`]), the
//! self-signed material the certificate actor installs ([`generate`]), PEM
//! encoding, reading certificates back ([`parse_certificate`]), the caBundle
//! set operation ([`merge`]) and writing the cert dir ([`write_files`]).
//!
//! Everything here is a plain function of its inputs (the clock is a
//! parameter), so it is tested here; `src/actors/cert.rs` schedules it and
//! talks to the API server.

mod bundle;
mod files;
mod pem;
mod pki;
mod slot;
mod x509;

pub use bundle::merge;
pub use files::{ensure_dir, write_files};
pub use pem::{certificate_blocks, encode_pem, pem_blocks};
pub use pki::{CA_COMMON_NAME, CLOCK_SKEW, Material, clock_skew, generate};
pub use slot::{CERT_FILE, CertSlot, KEY_FILE, certified_key};
pub use x509::{
    CURVE_P256, CertInfo, EKU_SERVER_AUTH, KU_DIGITAL_SIGNATURE, KU_KEY_CERT_SIGN,
    KU_KEY_ENCIPHERMENT, parse_certificate,
};
