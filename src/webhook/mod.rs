//! Validating admission webhook (api.md §11, operations.md §3.4).

/// The largest AdmissionReview body accepted (the API server sends at most 3 MiB objects).
pub const MAX_BODY: usize = 8 * 1024 * 1024;

/// An HTTP answer to an admission request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

/// Handles a request to `path` with `body`.
pub fn handle(path: &str, _body: &[u8]) -> Answer {
    Answer {
        status: 404,
        content_type: "text/plain; charset=utf-8",
        body: format!("no webhook at {path}\n").into_bytes(),
    }
}
