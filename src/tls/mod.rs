//! Certificates: the hot-swappable serving-certificate slot the webhook
//! listener reads. No actor or HTTP code here.

mod slot;

pub use slot::{CERT_FILE, CertSlot, KEY_FILE, certified_key};
