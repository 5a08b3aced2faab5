//! The command line as clap sees it: the flags of a controller run ([`Flags`]) and
//! the subcommands ([`Cmd`]).
//!
//! These are raw values, exactly as given or defaulted; `Config::from_flags` in the
//! parent module validates them into a [`Config`](super::Config). Values in Go
//! syntax use the parsers of [`goflags`](super::goflags): boolean flags are
//! [`GoBool`] fields declared with `go_bool()` (see [`GoBoolArg`]).

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand};

use super::PROGRAM;
use super::goflags::{GoBool, GoBoolArg, go_duration, go_int};
use crate::duration::GoDuration;

// ---------------------------------------------------------------------------
// Command line (clap)
// ---------------------------------------------------------------------------

#[derive(Debug, Parser)]
#[command(
    name = PROGRAM,
    version,
    about = "Ordered, gated, multi-stage delivery of Flux artifacts for Kubernetes.",
    long_about = "Ordered, gated, multi-stage delivery of Flux artifacts for Kubernetes.\n\n\
        Flags follow Go's flag syntax: --name=value, --name value, -name=value; boolean \
        flags are set with a bare --name or --name=true|false (never --name false). \
        Durations use Go syntax (1h30m, 500ms); integers accept 0x/0o/0b prefixes and _ separators.",
    args_override_self = true,
    args_conflicts_with_subcommands = true,
    disable_help_subcommand = true,
    max_term_width = 120
)]
pub(super) struct Cli {
    #[command(flatten)]
    pub(super) flags: Flags,
    #[command(subcommand)]
    pub(super) command: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
pub(super) enum Cmd {
    /// Write the CustomResourceDefinitions as YAML (one file per CRD, or all to stdout).
    Crds(CrdsArgs),
    /// Run a complete local demo: an in-process API server (kube-sim), an artifact
    /// server with a sample three-stage release, and the controller rolling it out.
    Dev(DevArgs),
    /// Print the objects a stage would apply from an unpacked artifact directory,
    /// as multi-document YAML, through the controller's own build code (plain
    /// manifests or kustomize, then post-build substitution).
    Build(BuildArgs),
}

#[derive(Debug, Args)]
pub(super) struct BuildArgs {
    /// The unpacked artifact (the root the stage's path is resolved against).
    #[arg(value_name = "DIR")]
    pub(super) dir: PathBuf,
    /// The stage's `path` inside the artifact (default: the stage's, else `./`).
    #[arg(long, value_name = "PATH")]
    pub(super) path: Option<String>,
    /// A post-build variable, as `postBuild.substitute` would give it
    /// (repeatable; overrides the stage's inline values).
    #[arg(long, value_name = "NAME=VALUE", action = ArgAction::Append)]
    pub(super) substitute: Vec<String>,
    /// A StageSet manifest to take the stage's path, patches and inline
    /// substitution from (with --stage).
    #[arg(long, value_name = "FILE", requires = "stage")]
    pub(super) stageset: Option<PathBuf>,
    /// The stage of --stageset to render.
    #[arg(long, value_name = "NAME", requires = "stageset")]
    pub(super) stage: Option<String>,
}

#[derive(Debug, Args)]
pub(super) struct DevArgs {
    /// Address of the embedded API server (port 0 picks a free one).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub(super) listen_sim: std::net::SocketAddr,
    /// Where to write the kubeconfig of the dev cluster (default: a new temporary
    /// directory).
    #[arg(long, value_name = "PATH")]
    pub(super) kubeconfig: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(super) struct CrdsArgs {
    /// Directory to write the CRD files into (created if missing).
    #[arg(
        long,
        value_name = "DIR",
        default_value = "charts/stageset-controller/files/crds"
    )]
    pub(super) output_dir: PathBuf,
    /// Print every CRD to stdout instead of writing files.
    #[arg(long, conflicts_with = "output_dir")]
    pub(super) stdout: bool,
}

/// The raw flag values, exactly as given (or defaulted). Validation turns them into
/// a [`Config`](super::Config).
#[derive(Debug, Args)]
pub(super) struct Flags {
    // -- Manager and leader election -------------------------------------------------
    /// Listener for /healthz and /readyz; "" or "0" disables the probe server.
    #[arg(
        long,
        value_name = "ADDR",
        default_value = ":8081",
        help_heading = "Manager and leader election"
    )]
    pub(super) health_probe_bind_address: String,

    /// Enable Lease-based leader election. The Lease lives in the pod's namespace (the
    /// service-account namespace file; $POD_NAMESPACE outside a cluster).
    #[arg(
        long,
        go_bool(),
        default_value = "false",
        help_heading = "Manager and leader election"
    )]
    pub(super) leader_elect: GoBool,

    /// Number of StageSets reconciled in parallel (at least 1).
    #[arg(long, value_name = "INT", default_value = "4", value_parser = go_int,
          help_heading = "Manager and leader election")]
    pub(super) concurrent: i64,

    /// Client-side limit on requests per second to the Kubernetes API, shared by the
    /// controller's, every tenant's and every remote cluster's client (must be > 0).
    #[arg(
        long,
        value_name = "FLOAT",
        default_value = "50",
        help_heading = "Manager and leader election"
    )]
    pub(super) kube_api_qps: f64,

    /// Requests the client may send at once above --kube-api-qps (at least 1).
    #[arg(long, value_name = "INT", default_value = "300", value_parser = go_int,
          help_heading = "Manager and leader election")]
    pub(super) kube_api_burst: i64,

    // -- Watch scope -----------------------------------------------------------------
    /// Comma-separated namespaces to watch; empty watches the whole cluster. When the
    /// value is empty after trimming, $STAGESET_WATCH_NAMESPACES is used instead (read by
    /// the controller itself: a non-empty flag always wins). Entries are trimmed and empty
    /// entries dropped.
    #[arg(
        long,
        value_name = "NAMESPACES",
        default_value = "",
        help_heading = "Watch scope"
    )]
    pub(super) watch_namespaces: String,

    /// Reconcile only StageSets whose labels match this selector (Flux's sharding flag,
    /// e.g. sharding.fluxcd.io/key=shard1); empty reconciles all. Every StageSet stays
    /// in the cache, so the gate still answers for all. A non-empty selector also gives
    /// the leader-election Lease a suffix derived from it, so each shard elects its own leader.
    #[arg(
        long,
        value_name = "SELECTOR",
        default_value = "",
        help_heading = "Watch scope"
    )]
    pub(super) watch_label_selector: String,

    // -- Reconciliation --------------------------------------------------------------
    /// Maximum entries per StageInventory shard (at least 1).
    #[arg(long, value_name = "INT", default_value = "5000", value_parser = go_int,
          help_heading = "Reconciliation")]
    pub(super) inventory_shard_cap: i64,

    /// Objects of one kind a stage writes, prunes or reads for readiness at once
    /// (at least 1). Kinds keep their apply order; the first failed write stops
    /// new writes of the stage.
    #[arg(long, value_name = "INT", default_value = "16", value_parser = go_int,
          help_heading = "Reconciliation")]
    pub(super) apply_concurrency: i64,

    /// How applied objects are recorded: entries, hybrid (also ApplySet labels) or
    /// applyset (the ApplySet is the source of truth).
    #[arg(
        long,
        value_name = "MODE",
        default_value = "hybrid",
        help_heading = "Reconciliation"
    )]
    pub(super) inventory_mode: String,

    /// Host glob that http actions, metric sources and wave gates may reach
    /// (repeatable; default: none).
    #[arg(long, value_name = "GLOB", action = ArgAction::Append, help_heading = "Reconciliation")]
    pub(super) allowed_action_hosts: Vec<String>,

    /// Refuse sourceRef and dependsOn that point into another namespace.
    #[arg(
        long,
        go_bool(),
        default_value = "false",
        help_heading = "Reconciliation"
    )]
    pub(super) no_cross_namespace_refs: GoBool,

    /// SOPS cloud-KMS decryption uses the StageSet's service account instead of the
    /// controller's ambient credentials.
    #[arg(
        long,
        go_bool(),
        default_value = "false",
        help_heading = "Reconciliation"
    )]
    pub(super) object_level_kms: GoBool,

    /// A migrations source must report SourceVerified=True before its ladder runs.
    #[arg(
        long,
        go_bool(),
        default_value = "false",
        help_heading = "Reconciliation"
    )]
    pub(super) require_verified_migration_sources: GoBool,

    /// A migrations source must be pinned immutably (digest or commit).
    #[arg(
        long,
        go_bool(),
        default_value = "false",
        help_heading = "Reconciliation"
    )]
    pub(super) require_pinned_migration_sources: GoBool,

    /// Deny-by-default image gate: an image no ImageVerificationPolicy governs holds its stage.
    #[arg(
        long,
        go_bool(),
        default_value = "false",
        help_heading = "Reconciliation"
    )]
    pub(super) require_image_verification: GoBool,

    /// Path to an offline Sigstore trusted-root JSON; empty fetches the public root over TUF.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "",
        help_heading = "Reconciliation"
    )]
    pub(super) image_verification_trusted_root: String,

    /// host[:port] registry fetched over plain HTTP for verification lookups only
    /// (repeatable; default: none).
    #[arg(long, value_name = "HOST", action = ArgAction::Append, help_heading = "Reconciliation")]
    pub(super) image_verification_insecure_registry: Vec<String>,

    /// Reconcile cadence for StageSets without spec.interval (must be > 0).
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = go_duration,
          help_heading = "Reconciliation")]
    pub(super) default_interval: GoDuration,

    /// How long a deleting StageSet waits on failing teardown before force-dropping;
    /// 0 means the default 1h.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = go_duration,
          help_heading = "Reconciliation")]
    pub(super) max_teardown_wait: GoDuration,

    /// Base URL of the runbooks linked from Ready messages (<base>/<reason>/); empty (the
    /// default) adds no links. Must be an absolute http:// or https:// URL.
    #[arg(
        long,
        value_name = "URL",
        default_value = "",
        help_heading = "Reconciliation"
    )]
    pub(super) runbook_base_url: String,

    /// Allow artifact fetches from loopback addresses (tests and the dev command only).
    #[arg(long, hide = true, go_bool(), default_value = "false")]
    pub(super) allow_loopback_artifacts: GoBool,

    // -- Rollback store --------------------------------------------------------------
    /// Directory of the file rollback store (created 0700); empty disables it.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "",
        help_heading = "Rollback store"
    )]
    pub(super) rollback_store_path: String,

    /// Keep only the newest N snapshots per StageSet stage; 0 keeps all.
    #[arg(long, value_name = "INT", default_value = "0", value_parser = go_int,
          help_heading = "Rollback store")]
    pub(super) rollback_store_retention: i64,

    /// host[:port] of an S3-compatible endpoint (no scheme); empty disables S3.
    #[arg(
        long,
        value_name = "HOST",
        default_value = "",
        help_heading = "Rollback store"
    )]
    pub(super) rollback_store_s3_endpoint: String,

    /// S3 bucket name.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "",
        help_heading = "Rollback store"
    )]
    pub(super) rollback_store_s3_bucket: String,

    /// S3 object key prefix (trailing / trimmed).
    #[arg(
        long,
        value_name = "PREFIX",
        default_value = "",
        help_heading = "Rollback store"
    )]
    pub(super) rollback_store_s3_prefix: String,

    /// S3 region; empty discovers it from the bucket location.
    #[arg(
        long,
        value_name = "REGION",
        default_value = "",
        help_heading = "Rollback store"
    )]
    pub(super) rollback_store_s3_region: String,

    /// Use HTTPS to the S3 endpoint.
    #[arg(
        long,
        go_bool(),
        default_value = "true",
        help_heading = "Rollback store"
    )]
    pub(super) rollback_store_s3_use_ssl: GoBool,

    /// Static S3 access key; empty uses the credential discovery chain.
    #[arg(
        long,
        value_name = "KEY",
        default_value = "",
        help_heading = "Rollback store"
    )]
    pub(super) rollback_store_s3_access_key: String,

    /// Static S3 secret key.
    #[arg(
        long,
        value_name = "KEY",
        default_value = "",
        help_heading = "Rollback store"
    )]
    pub(super) rollback_store_s3_secret_key: String,

    /// Optional S3 session token (static credentials only).
    #[arg(
        long,
        value_name = "TOKEN",
        default_value = "",
        help_heading = "Rollback store"
    )]
    pub(super) rollback_store_s3_session_token: String,

    /// Send unsigned S3 requests (takes precedence over static keys).
    #[arg(
        long,
        go_bool(),
        default_value = "false",
        help_heading = "Rollback store"
    )]
    pub(super) rollback_store_s3_anonymous: GoBool,

    /// At-rest encryption of snapshots: none, s3 (SSE-S3) or kms (SSE-KMS).
    #[arg(
        long,
        value_name = "MODE",
        default_value = "s3",
        help_heading = "Rollback store"
    )]
    pub(super) rollback_store_s3_sse: String,

    /// KMS key ARN/ID for --rollback-store-s3-sse=kms; empty uses the bucket's default key.
    #[arg(
        long,
        value_name = "KEY",
        default_value = "",
        help_heading = "Rollback store"
    )]
    pub(super) rollback_store_s3_sse_kms_key: String,

    // -- Metrics, events and tracing -------------------------------------------------
    /// Prometheus endpoint; "0" disables it, "" means :8080.
    #[arg(
        long,
        value_name = "ADDR",
        default_value = ":8080",
        help_heading = "Metrics, events and tracing"
    )]
    pub(super) metrics_bind_address: String,

    /// Flux notification-controller event endpoint (http:// or https:// URL); empty
    /// sends Kubernetes Events only.
    #[arg(
        long,
        value_name = "URL",
        default_value = "",
        help_heading = "Metrics, events and tracing"
    )]
    pub(super) events_addr: String,

    /// OTLP gRPC collector host:port; empty turns tracing off.
    #[arg(
        long,
        value_name = "HOST:PORT",
        default_value = "",
        help_heading = "Metrics, events and tracing"
    )]
    pub(super) tracing_endpoint: String,

    /// Plaintext gRPC to the tracing collector.
    #[arg(
        long,
        go_bool(),
        default_value = "false",
        help_heading = "Metrics, events and tracing"
    )]
    pub(super) tracing_insecure: GoBool,

    /// Trace sampling ratio within [0.0, 1.0].
    #[arg(
        long,
        value_name = "FLOAT",
        default_value = "1.0",
        help_heading = "Metrics, events and tracing"
    )]
    pub(super) tracing_sample_ratio: f64,

    // -- Webhook ---------------------------------------------------------------------
    /// Serve the validating webhooks.
    #[arg(long, go_bool(), default_value = "true", help_heading = "Webhook")]
    pub(super) enable_webhook: GoBool,

    /// How the webhook serving certificate is provisioned: cert-manager or self-signed.
    #[arg(
        long,
        value_name = "MODE",
        default_value = "cert-manager",
        help_heading = "Webhook"
    )]
    pub(super) webhook_cert_mode: String,

    /// Directory holding tls.crt and tls.key.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/tmp/k8s-webhook-server/serving-certs",
        help_heading = "Webhook"
    )]
    pub(super) webhook_cert_dir: String,

    /// Webhook HTTPS port (1-65535, all interfaces).
    #[arg(long, value_name = "INT", default_value = "9443", value_parser = go_int, help_heading = "Webhook")]
    pub(super) webhook_port: i64,

    /// Lifetime of the self-signed CA and serving certificate (must be > 0).
    #[arg(long, value_name = "DURATION", default_value = "8760h", value_parser = go_duration,
          help_heading = "Webhook")]
    pub(super) webhook_cert_validity: GoDuration,

    /// Service name used for the self-signed certificate's SANs.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "stageset-controller-webhook",
        help_heading = "Webhook"
    )]
    pub(super) webhook_service_name: String,

    /// Service namespace; empty uses the pod's namespace.
    #[arg(
        long,
        value_name = "NAMESPACE",
        default_value = "",
        help_heading = "Webhook"
    )]
    pub(super) webhook_service_namespace: String,

    /// ValidatingWebhookConfiguration whose caBundle is managed (required when self-signed).
    #[arg(
        long,
        value_name = "NAME",
        default_value = "",
        help_heading = "Webhook"
    )]
    pub(super) webhook_validating_config_name: String,

    // -- Gate and MCP ----------------------------------------------------------------
    /// Listener of the read-only stage gate; empty disables it.
    #[arg(
        long,
        value_name = "ADDR",
        default_value = ":8082",
        help_heading = "Gate and MCP"
    )]
    pub(super) gate_bind_address: String,

    /// Serve the Model Context Protocol introspection server.
    #[arg(
        long,
        go_bool(),
        default_value = "false",
        help_heading = "Gate and MCP"
    )]
    pub(super) enable_mcp: GoBool,

    /// MCP listener (checked only with --enable-mcp).
    #[arg(
        long,
        value_name = "ADDR",
        default_value = ":8084",
        help_heading = "Gate and MCP"
    )]
    pub(super) mcp_bind_address: String,

    /// Also expose MCP write tools (reconcile/suspend/resume); requires --enable-mcp.
    #[arg(
        long,
        go_bool(),
        default_value = "false",
        help_heading = "Gate and MCP"
    )]
    pub(super) mcp_allow_mutations: GoBool,

    // -- Logging ---------------------------------------------------------------------
    /// Log threshold: debug, info, warn or error.
    #[arg(
        long,
        value_name = "LEVEL",
        default_value = "info",
        help_heading = "Logging"
    )]
    pub(super) log_level: String,

    /// Log format: json or text.
    #[arg(
        long,
        value_name = "FORMAT",
        default_value = "json",
        help_heading = "Logging"
    )]
    pub(super) log_format: String,

    /// controller-runtime compatible level: debug, info, error, or an integer > 0
    /// (1 = debug, 2 or more = trace); overrides --log-level [default: unset, i.e. --log-level,
    /// or debug with --zap-devel].
    #[arg(long, value_name = "LEVEL", help_heading = "Logging")]
    pub(super) zap_log_level: Option<String>,

    /// controller-runtime compatible encoder: json or console (text); overrides --log-format
    /// [default: unset, i.e. --log-format, or console with --zap-devel].
    #[arg(long, value_name = "ENCODER", help_heading = "Logging")]
    pub(super) zap_encoder: Option<String>,

    /// Development logging: text format and debug level unless set otherwise.
    #[arg(long, go_bool(), default_value = "false", help_heading = "Logging")]
    pub(super) zap_devel: GoBool,

    /// Events at or above this level carry a stacktrace: info, error or panic
    /// [default: unset, i.e. panic].
    #[arg(long, value_name = "LEVEL", help_heading = "Logging")]
    pub(super) zap_stacktrace_level: Option<String>,
}
