//! The two rollback-store backends behind object_store, with the Go
//! controller's physical layout (so a store written by either is read by the
//! other, docs/decisions.md 18):
//!
//! - **Files** (`--rollback-store-path`, an RWX PVC): one flat file per key in
//!   the store directory, the key's `/` written as `_`
//!   (`payments_app_api_sha256-…`). Writes go to a temporary file that is
//!   fsynced and renamed over the name, then the directory is fsynced
//!   (object_store's `LocalFileSystem` with fsync), so a crash never leaves a
//!   truncated snapshot. Files are made 0600 and the directory 0700.
//! - **S3** (`--rollback-store-s3-*`): object `<prefix>/<key>`, content type
//!   `application/json`, server-side encryption per `--rollback-store-s3-sse`.
//!
//! Reads are capped at 64 MiB. Nothing is contacted at start-up.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::{
    Attribute, Attributes, ClientOptions, ObjectStore, ObjectStoreExt, PutOptions, PutPayload,
};

use super::aws::Credentials;
use crate::config::SseMode;
use crate::reconcile::rollback::{MAX_SNAPSHOT_BYTES, SnapshotKey, StoreError};

/// S3 settings from the flags.
#[derive(Clone, Debug)]
pub struct S3Settings {
    /// `host[:port]`, no scheme.
    pub endpoint: String,
    pub bucket: String,
    /// Trailing `/` trimmed; empty: keys at the bucket root.
    pub prefix: String,
    /// Empty: derived from an AWS endpoint name, else the bucket's own
    /// region ([`bucket_region`], at start), else `us-east-1`.
    pub region: Option<String>,
    pub use_ssl: bool,
    pub sse: SseMode,
    /// For `kms`: the key; empty uses the bucket's default key.
    pub sse_kms_key: Option<String>,
    pub credentials: Credentials,
    /// Extra trusted roots (PEM) for the endpoint and STS, besides the
    /// platform's. Empty in production; tests use it for their own CA.
    pub extra_roots_pem: Vec<Vec<u8>>,
}

/// A configured backend.
#[derive(Clone, Debug)]
pub enum Backend {
    Files {
        store: Arc<LocalFileSystem>,
        root: PathBuf,
    },
    S3 {
        store: Arc<dyn ObjectStore>,
        prefix: String,
        /// For logs: `s3://<bucket>` at `<endpoint>`.
        display: String,
    },
}

/// What the start-up log says about a backend.
impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backend::Files { root, .. } => write!(f, "filesystem {}", root.display()),
            Backend::S3 { display, .. } => f.write_str(display),
        }
    }
}

impl Backend {
    /// The file backend in `root`, created 0700 when missing.
    pub fn files(root: &Path) -> Result<Backend, String> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        if !root.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(root)
                .map_err(|e| {
                    format!(
                        "creating the rollback store directory {}: {e}",
                        root.display()
                    )
                })?;
        }
        let meta = std::fs::metadata(root).map_err(|e| {
            format!(
                "opening the rollback store directory {}: {e}",
                root.display()
            )
        })?;
        if !meta.is_dir() {
            return Err(format!(
                "the rollback store path {} is not a directory",
                root.display()
            ));
        }
        if meta.permissions().mode() & 0o077 != 0
            && let Err(e) = std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))
        {
            // A volume root owned by someone else (fsGroup mounts) cannot be
            // tightened; the files themselves are still 0600.
            tracing::warn!(
                logger = "rollback",
                path = %root.display(),
                error = %e,
                "the rollback store directory is readable by others and cannot be restricted to 0700"
            );
        }
        let root = root.canonicalize().map_err(|e| {
            format!(
                "opening the rollback store directory {}: {e}",
                root.display()
            )
        })?;
        let store = LocalFileSystem::new_with_prefix(&root)
            .map_err(|e| {
                format!(
                    "opening the rollback store directory {}: {e}",
                    root.display()
                )
            })?
            .with_fsync(true);
        Ok(Backend::Files {
            store: Arc::new(store),
            root,
        })
    }

    /// The S3 backend. Builds the client only; nothing is contacted.
    pub fn s3(settings: &S3Settings) -> Result<Backend, String> {
        crate::reconcile::outbound::install_crypto_provider();
        let scheme = if settings.use_ssl { "https" } else { "http" };
        let endpoint = settings.endpoint.trim();
        if endpoint.is_empty() || endpoint.contains("://") || endpoint.contains('/') {
            return Err(format!(
                "--rollback-store-s3-endpoint {endpoint:?} must be host[:port] without a scheme or path"
            ));
        }
        let region = settings
            .region
            .clone()
            .filter(|r| !r.is_empty())
            .or_else(|| region_of(endpoint))
            .unwrap_or_else(|| "us-east-1".to_string());
        let mut options = ClientOptions::new()
            .with_allow_http(!settings.use_ssl)
            .with_connect_timeout(std::time::Duration::from_secs(5))
            .with_timeout(std::time::Duration::from_secs(60));
        for pem in &settings.extra_roots_pem {
            let cert = object_store::Certificate::from_pem(pem)
                .map_err(|e| format!("a trusted root for the S3 rollback store: {e}"))?;
            options = options.with_root_certificate(cert);
        }
        let mut builder = AmazonS3Builder::new()
            .with_endpoint(format!("{scheme}://{endpoint}"))
            .with_bucket_name(&settings.bucket)
            .with_region(&region)
            .with_virtual_hosted_style_request(false)
            .with_client_options(options);
        builder = match settings.sse {
            SseMode::None => builder,
            SseMode::S3 => builder.with_config(config_key("aws_server_side_encryption"), "AES256"),
            SseMode::Kms => {
                let b = builder.with_config(config_key("aws_server_side_encryption"), "aws:kms");
                // No key id header at all for the bucket's default key.
                match settings.sse_kms_key.as_deref().filter(|k| !k.is_empty()) {
                    Some(key) => b.with_config(config_key("aws_sse_kms_key_id"), key),
                    None => b,
                }
            }
        };
        builder = match &settings.credentials {
            Credentials::Anonymous => builder.with_skip_signature(true),
            Credentials::Static { keys, .. } => {
                let b = builder
                    .with_access_key_id(&keys.key_id)
                    .with_secret_access_key(keys.secret.expose());
                match &keys.token {
                    Some(t) => b.with_token(t.expose()),
                    None => b,
                }
            }
            Credentials::WebIdentity {
                token_file,
                role_arn,
                session_name,
                sts_endpoint,
            } => {
                let mut b = builder
                    .with_config(AmazonS3ConfigKey::WebIdentityTokenFile, token_file)
                    .with_config(AmazonS3ConfigKey::RoleArn, role_arn);
                if let Some(name) = session_name {
                    b = b.with_config(AmazonS3ConfigKey::RoleSessionName, name);
                }
                if let Some(sts) = sts_endpoint {
                    b = b.with_config(AmazonS3ConfigKey::StsEndpoint, sts);
                }
                b
            }
            Credentials::Container {
                relative_uri,
                full_uri,
                token_file,
            } => {
                let mut b = builder;
                if let Some(u) = relative_uri {
                    b = b.with_config(AmazonS3ConfigKey::ContainerCredentialsRelativeUri, u);
                }
                if let Some(u) = full_uri {
                    b = b.with_config(AmazonS3ConfigKey::ContainerCredentialsFullUri, u);
                }
                if let Some(f) = token_file {
                    b = b.with_config(AmazonS3ConfigKey::ContainerAuthorizationTokenFile, f);
                }
                b
            }
            Credentials::InstanceMetadata => builder,
        };
        let store = builder
            .build()
            .map_err(|e| format!("building the S3 rollback store client: {e}"))?;
        Ok(Backend::S3 {
            store: Arc::new(store),
            prefix: settings.prefix.trim_end_matches('/').to_string(),
            display: format!("s3://{} at {scheme}://{endpoint}", settings.bucket),
        })
    }

    fn store(&self) -> &dyn ObjectStore {
        match self {
            Backend::Files { store, .. } => store.as_ref(),
            Backend::S3 { store, .. } => store.as_ref(),
        }
    }

    /// The physical name of a key.
    pub fn location(&self, key: &SnapshotKey) -> StorePath {
        match self {
            Backend::Files { .. } => StorePath::from(key.logical().replace('/', "_")),
            Backend::S3 { prefix, .. } if prefix.is_empty() => StorePath::from(key.logical()),
            Backend::S3 { prefix, .. } => StorePath::from(format!("{prefix}/{}", key.logical())),
        }
    }

    /// Writes a rendering atomically.
    pub async fn put(&self, key: &SnapshotKey, body: Bytes) -> Result<(), StoreError> {
        let location = self.location(key);
        let mut attributes = Attributes::new();
        if matches!(self, Backend::S3 { .. }) {
            attributes.insert(Attribute::ContentType, "application/json".into());
        }
        let options = PutOptions {
            attributes,
            ..PutOptions::default()
        };
        self.store()
            .put_opts(&location, PutPayload::from(body), options)
            .await
            .map_err(|e| StoreError(format!("writing {location} to the {self}: {e}")))?;
        if let Backend::Files { root, .. } = self {
            use std::os::unix::fs::PermissionsExt;
            let path = root.join(location.as_ref());
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| StoreError(format!("restricting {}: {e}", path.display())))?;
        }
        Ok(())
    }

    /// Reads a rendering; `None` when it is not there. Larger than
    /// [`MAX_SNAPSHOT_BYTES`] is an error.
    pub async fn get(&self, key: &SnapshotKey) -> Result<Option<Bytes>, StoreError> {
        let location = self.location(key);
        let result = match self.store().get(&location).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => {
                return Err(StoreError(format!(
                    "reading {location} from the {self}: {e}"
                )));
            }
        };
        if result.meta.size > MAX_SNAPSHOT_BYTES {
            return Err(StoreError(format!(
                "{location} in the {self} is {} bytes, more than the {MAX_SNAPSHOT_BYTES} a rendering may have",
                result.meta.size
            )));
        }
        result
            .bytes()
            .await
            .map(Some)
            .map_err(|e| StoreError(format!("reading {location} from the {self}: {e}")))
    }

    /// The stored digests of one stage (the key's digest part, `sha256-…`),
    /// newest first.
    pub async fn list_stage(
        &self,
        key: &SnapshotKey,
    ) -> Result<Vec<(String, StorePath)>, StoreError> {
        let stage_prefix = SnapshotKey {
            digest: String::new(),
            ..key.clone()
        }
        .logical();
        let mut found = Vec::new();
        match self {
            Backend::Files { .. } => {
                let name_prefix = stage_prefix.replace('/', "_");
                let mut listing = self.store().list(None);
                while let Some(meta) = listing
                    .try_next()
                    .await
                    .map_err(|e| StoreError(format!("listing the {self}: {e}")))?
                {
                    if let Some(digest) = meta.location.as_ref().strip_prefix(&name_prefix) {
                        found.push((
                            meta.last_modified,
                            digest.to_string(),
                            meta.location.clone(),
                        ));
                    }
                }
            }
            Backend::S3 { prefix, .. } => {
                let dir = if prefix.is_empty() {
                    stage_prefix.trim_end_matches('/').to_string()
                } else {
                    format!("{prefix}/{}", stage_prefix.trim_end_matches('/'))
                };
                let dir = StorePath::from(dir);
                let mut listing = self.store().list(Some(&dir));
                while let Some(meta) = listing
                    .try_next()
                    .await
                    .map_err(|e| StoreError(format!("listing the {self}: {e}")))?
                {
                    if let Some(digest) = meta.location.filename() {
                        found.push((
                            meta.last_modified,
                            digest.to_string(),
                            meta.location.clone(),
                        ));
                    }
                }
            }
        }
        found.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)));
        Ok(found.into_iter().map(|(_, d, l)| (d, l)).collect())
    }

    /// Deletes one stored rendering.
    pub async fn delete(&self, location: &StorePath) -> Result<(), StoreError> {
        match self.store().delete(location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(StoreError(format!(
                "deleting {location} from the {self}: {e}"
            ))),
        }
    }
}

/// An object_store S3 option by its configuration name (the encryption
/// keys are not exported as types).
fn config_key(name: &str) -> AmazonS3ConfigKey {
    name.parse()
        .unwrap_or_else(|e| panic!("object_store knows the S3 option {name}: {e}"))
}

/// The region S3 says the bucket lives in: a `HEAD` of the bucket
/// (path-style, unsigned, no redirects followed) answers with an
/// `x-amz-bucket-region` header whatever its status (200, 301 for another
/// region's endpoint, 403 without credentials), the way the AWS SDKs
/// discover it (operations.md OPS-46). Errors name what failed.
pub async fn bucket_region(settings: &S3Settings) -> Result<String, String> {
    crate::reconcile::outbound::install_crypto_provider();
    let scheme = if settings.use_ssl { "https" } else { "http" };
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(10))
        .user_agent(concat!("stageset-controller/", env!("CARGO_PKG_VERSION")));
    for pem in &settings.extra_roots_pem {
        let cert = reqwest::Certificate::from_pem(pem)
            .map_err(|e| format!("a trusted root for the S3 rollback store: {e}"))?;
        builder = builder.add_root_certificate(cert);
    }
    let client = builder
        .build()
        .map_err(|e| format!("building the HTTP client: {e}"))?;
    let url = format!(
        "{scheme}://{}/{}",
        settings.endpoint.trim(),
        settings.bucket
    );
    let answer = client.head(&url).send().await.map_err(|e| {
        format!(
            "HEAD {url}: {}",
            crate::reconcile::outbound::error_chain(&e)
        )
    })?;
    answer
        .headers()
        .get("x-amz-bucket-region")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_string)
        .ok_or_else(|| {
            format!(
                "HEAD {url} answered {} without an x-amz-bucket-region header",
                answer.status()
            )
        })
}

/// The region in an AWS S3 endpoint name (`s3.eu-west-1.amazonaws.com`,
/// `s3-eu-west-1.amazonaws.com`, `s3.dualstack.eu-west-1.amazonaws.com`).
pub fn region_of(endpoint: &str) -> Option<String> {
    let host = endpoint.split(':').next().unwrap_or(endpoint);
    let rest = host.strip_suffix(".amazonaws.com")?;
    let rest = rest
        .strip_prefix("s3.dualstack.")
        .or_else(|| rest.strip_prefix("s3."))
        .or_else(|| rest.strip_prefix("s3-"))?;
    (!rest.is_empty() && !rest.contains('.')).then(|| rest.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_come_from_aws_endpoint_names() {
        assert_eq!(
            region_of("s3.eu-west-1.amazonaws.com").as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(
            region_of("s3-us-west-2.amazonaws.com:443").as_deref(),
            Some("us-west-2")
        );
        assert_eq!(
            region_of("s3.dualstack.ap-south-1.amazonaws.com").as_deref(),
            Some("ap-south-1")
        );
        assert_eq!(region_of("s3.amazonaws.com"), None);
        assert_eq!(region_of("minio.storage:9000"), None);
    }

    fn key() -> SnapshotKey {
        SnapshotKey {
            namespace: "payments".into(),
            stageset: "app".into(),
            stage: "api".into(),
            digest: "sha256:beef".into(),
        }
    }

    #[test]
    fn physical_names_are_upstreams() {
        let dir = tempfile::tempdir().unwrap();
        let files = Backend::files(dir.path()).unwrap();
        assert_eq!(
            files.location(&key()).as_ref(),
            "payments_app_api_sha256-beef"
        );
        let s3 = |prefix: &str| {
            Backend::s3(&S3Settings {
                endpoint: "127.0.0.1:9".into(),
                bucket: "b".into(),
                prefix: prefix.into(),
                region: None,
                use_ssl: false,
                sse: SseMode::None,
                sse_kms_key: None,
                credentials: Credentials::Anonymous,
                extra_roots_pem: Vec::new(),
            })
            .unwrap()
        };
        assert_eq!(
            s3("").location(&key()).as_ref(),
            "payments/app/api/sha256-beef"
        );
        assert_eq!(
            s3("rollback/").location(&key()).as_ref(),
            "rollback/payments/app/api/sha256-beef"
        );
    }

    #[test]
    fn endpoints_are_host_and_port() {
        for bad in ["https://s3.example.com", "s3.example.com/bucket", ""] {
            let err = Backend::s3(&S3Settings {
                endpoint: bad.into(),
                bucket: "b".into(),
                prefix: String::new(),
                region: None,
                use_ssl: true,
                sse: SseMode::S3,
                sse_kms_key: None,
                credentials: Credentials::Anonymous,
                extra_roots_pem: Vec::new(),
            })
            .unwrap_err();
            assert!(err.contains("host[:port]"), "{err}");
        }
    }
}
