//! The RollbackStoreActor (docs/architecture.md, "What runs"): it owns the
//! one configured rollback-store backend (`backend.rs`: a directory on an RWX
//! PVC, or S3) and serves the pipeline's [`SnapshotStore`] trait through its
//! [`RollbackStoreHandle`], so the pipeline never sees actix or object_store.
//!
//! After each put it applies the retention of `--rollback-store-retention N`
//! (docs/decisions.md 6): the newest N renderings of that stage stay, and so
//! does the one `status.lastAppliedSnapshot` points to, which can be older
//! than the newest (renderings are stored before verify, so the newest may
//! belong to a run that then failed). 0 keeps everything, as upstream.

pub mod aws;
pub mod backend;

use std::path::PathBuf;
use std::sync::Arc;

use actix::prelude::*;
use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;

use crate::config::Config;
use crate::reconcile::rollback::{SnapshotKey, SnapshotStore, StoreError};
use backend::{Backend, S3Settings};

/// The store a configuration asks for, checked before the cluster is
/// touched (operations.md §1.6: these errors exit 1). The backend itself is
/// built on the controller's runtime ([`StorePlan::build`]).
#[derive(Clone, Debug)]
pub enum StorePlan {
    Files {
        root: PathBuf,
        retention: usize,
    },
    S3 {
        settings: Box<S3Settings>,
        retention: usize,
    },
}

impl StorePlan {
    /// The plan for `config`: none without `--rollback-store-path` or
    /// `--rollback-store-s3-endpoint`. `env` and `home` feed the S3
    /// credential chain.
    pub fn from_config(
        config: &Config,
        env: &dyn Fn(&str) -> Option<String>,
        home: Option<PathBuf>,
    ) -> Result<Option<StorePlan>, String> {
        let retention = config.rollback_store_retention;
        match (
            &config.rollback_store_path,
            &config.rollback_store_s3_endpoint,
            &config.rollback_store_s3_bucket,
        ) {
            (Some(_), Some(_), _) => Err(
                "--rollback-store-path and --rollback-store-s3-endpoint are mutually exclusive: configure one rollback store"
                    .into(),
            ),
            (_, Some(_), None) | (_, None, Some(_)) => Err(
                "--rollback-store-s3-endpoint and --rollback-store-s3-bucket must both be set".into(),
            ),
            (Some(path), None, None) => {
                // Created (0700) and opened now, so a bad path is a start-up error.
                Backend::files(path)?;
                Ok(Some(StorePlan::Files {
                    root: path.clone(),
                    retention,
                }))
            }
            (None, Some(endpoint), Some(bucket)) => {
                let credentials = aws::choose(
                    &aws::FlagCredentials {
                        anonymous: config.rollback_store_s3_anonymous,
                        access_key: config.rollback_store_s3_access_key.clone(),
                        secret_key: config.rollback_store_s3_secret_key.clone(),
                        session_token: config.rollback_store_s3_session_token.clone(),
                    },
                    env,
                    home,
                )?;
                let settings = S3Settings {
                    endpoint: endpoint.clone(),
                    bucket: bucket.clone(),
                    prefix: config.rollback_store_s3_prefix.clone(),
                    region: config.rollback_store_s3_region.clone(),
                    use_ssl: config.rollback_store_s3_use_ssl,
                    sse: config.rollback_store_s3_sse,
                    sse_kms_key: config.rollback_store_s3_sse_kms_key.clone(),
                    credentials,
                    extra_roots_pem: Vec::new(),
                };
                // The client must build (endpoint, SSE mode) before start-up goes on.
                Backend::s3(&settings)?;
                Ok(Some(StorePlan::S3 {
                    settings: Box::new(settings),
                    retention,
                }))
            }
            (None, None, None) => Ok(None),
        }
    }

    /// Fills in an S3 store's region when neither `--rollback-store-s3-region`
    /// nor an `s3.<region>.amazonaws.com` endpoint gives one: the bucket's
    /// own region, asked of the endpoint ([`backend::bucket_region`]). When
    /// that fails the store signs for `us-east-1`, with a warning.
    pub async fn discover_region(self) -> StorePlan {
        let StorePlan::S3 {
            mut settings,
            retention,
        } = self
        else {
            return self;
        };
        let given = settings.region.as_deref().is_some_and(|r| !r.is_empty())
            || backend::region_of(&settings.endpoint).is_some();
        if !given {
            match backend::bucket_region(&settings).await {
                Ok(region) => {
                    tracing::info!(logger = "rollback", bucket = %settings.bucket, region = %region, "S3 bucket region discovered");
                    settings.region = Some(region);
                }
                Err(e) => {
                    tracing::warn!(logger = "rollback", bucket = %settings.bucket, error = %e, "the S3 bucket's region could not be discovered; signing for us-east-1 (set --rollback-store-s3-region)");
                }
            }
        }
        StorePlan::S3 {
            settings,
            retention,
        }
    }

    /// Builds the backend and starts the actor (on the current actix System).
    pub fn start(self) -> Result<RollbackStoreHandle, String> {
        let (backend, retention) = match self {
            StorePlan::Files { root, retention } => (Backend::files(&root)?, retention),
            StorePlan::S3 {
                settings,
                retention,
            } => {
                let credentials = settings.credentials.describe();
                let backend = Backend::s3(&settings)?;
                tracing::info!(logger = "rollback", credentials = %credentials, "S3 rollback store credentials");
                tracing::info!(logger = "rollback", backend = "s3", endpoint = %settings.endpoint, bucket = %settings.bucket, prefix = %settings.prefix, retention, "rollback store enabled");
                (backend, retention)
            }
        };
        match &backend {
            Backend::Files { root, .. } => {
                tracing::info!(logger = "rollback", backend = "filesystem", path = %root.display(), retention, "rollback store enabled");
                tracing::warn!(
                    logger = "rollback",
                    path = %root.display(),
                    "the rollback store keeps rendered objects, Secret data included, in the clear: use an encrypted volume"
                );
            }
            // Logged above, with the endpoint and bucket as fields.
            Backend::S3 { .. } => {}
        }
        let addr = RollbackStoreActor {
            backend: Arc::new(backend),
            retention,
        }
        .start();
        Ok(RollbackStoreHandle { addr })
    }
}

/// Owns the backend; puts and gets run concurrently, each as its own future.
pub struct RollbackStoreActor {
    backend: Arc<Backend>,
    retention: usize,
}

impl Actor for RollbackStoreActor {
    type Context = Context<Self>;
}

/// Store a rendering, then apply retention to its stage.
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct Put {
    pub key: SnapshotKey,
    pub body: Bytes,
    /// Digests retention must keep.
    pub keep: Vec<String>,
}

/// Read a rendering.
#[derive(Message)]
#[rtype(result = "Result<Option<Bytes>, StoreError>")]
pub struct Get(pub SnapshotKey);

impl Handler<Put> for RollbackStoreActor {
    type Result = ResponseFuture<Result<(), StoreError>>;

    fn handle(&mut self, msg: Put, _ctx: &mut Context<Self>) -> Self::Result {
        let backend = self.backend.clone();
        let retention = self.retention;
        Box::pin(async move {
            backend.put(&msg.key, msg.body).await?;
            if retention > 0 {
                prune(&backend, &msg.key, &msg.keep, retention).await;
            }
            Ok(())
        })
    }
}

impl Handler<Get> for RollbackStoreActor {
    type Result = ResponseFuture<Result<Option<Bytes>, StoreError>>;

    fn handle(&mut self, msg: Get, _ctx: &mut Context<Self>) -> Self::Result {
        let backend = self.backend.clone();
        Box::pin(async move { backend.get(&msg.0).await })
    }
}

/// Retention for one stage: keeps the newest `retention` renderings, the one
/// just written and those in `keep`; deletes the rest. Failures are logged
/// (the rendering itself was stored; an old one left behind is harmless).
async fn prune(backend: &Backend, key: &SnapshotKey, keep: &[String], retention: usize) {
    let stored = match backend.list_stage(key).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(logger = "rollback", key = %key.logical(), error = %e, "rollback store retention skipped");
            return;
        }
    };
    let protected: Vec<String> = keep
        .iter()
        .map(|d| d.replace(':', "-"))
        .chain(std::iter::once(key.digest_part()))
        .collect();
    for (digest, location) in stored.into_iter().skip(retention) {
        if protected.contains(&digest) {
            continue;
        }
        match backend.delete(&location).await {
            Ok(()) => {
                tracing::debug!(logger = "rollback", location = %location, "rollback store retention removed an old rendering")
            }
            Err(e) => {
                tracing::warn!(logger = "rollback", location = %location, error = %e, "rollback store retention could not remove an old rendering")
            }
        }
    }
}

/// The pipeline's view of the actor.
#[derive(Clone)]
pub struct RollbackStoreHandle {
    addr: Addr<RollbackStoreActor>,
}

fn mailbox(e: MailboxError) -> StoreError {
    StoreError(format!("the rollback store is not running: {e}"))
}

impl SnapshotStore for RollbackStoreHandle {
    fn put(
        &self,
        key: SnapshotKey,
        body: Bytes,
        keep: Vec<String>,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        let addr = self.addr.clone();
        async move { addr.send(Put { key, body, keep }).await.map_err(mailbox)? }.boxed()
    }

    fn get(&self, key: SnapshotKey) -> BoxFuture<'static, Result<Option<Bytes>, StoreError>> {
        let addr = self.addr.clone();
        async move { addr.send(Get(key)).await.map_err(mailbox)? }.boxed()
    }
}
