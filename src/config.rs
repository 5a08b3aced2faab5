//! Every controller flag, parsed once with clap and validated into one [`Config`].
//!
//! # Compatibility contract (operations.md §1.2)
//!
//! Upstream parses its flags with Go's `flag` package and the chart and users'
//! tooling depend on its spellings, so the parser accepts exactly that syntax:
//!
//! * `--name=value`, `--name value`, and the single-dash forms `-name=value` /
//!   `-name value` (argv is pre-processed: a single-dash token naming a known long
//!   flag becomes `--name`; `-h` stays the short help flag). As in Go, the token
//!   after a value-taking flag is always its value, even when it starts with `-`.
//! * Boolean flags: bare `--name` means true; `--name=<v>` takes any value Go's
//!   `strconv.ParseBool` accepts (`1 0 t f T F true false TRUE FALSE True False`).
//!   `--name false` is *not* an assignment: the stray `false` is a usage error.
//! * Explicitly empty values (`--gate-bind-address=`) are values.
//! * `--allowed-action-hosts` and `--image-verification-insecure-registry` append
//!   on every occurrence; for every other flag the last occurrence wins.
//! * Durations use Go's `time.ParseDuration` syntax ([`GoDuration`]); integers use
//!   Go's `strconv.ParseInt(s, 0, 64)` syntax ([`parse_go_int`]).
//!
//! # Errors and exit codes
//!
//! [`ConfigError::exit_code`] is 0 for `--help`/`--version` (printed to stdout) and
//! 2 for everything else; [`ConfigError`]'s `Display` is the exact text to print,
//! prefixed `stageset-controller: `. Validation (§1.5 rules 1–9, then our
//! additions) stops at the first failure and reports it as a single line naming the
//! flag and the offending value.
//!
//! # Flags whose feature is not built yet
//!
//! DECISIONS.md 11: a flag whose feature does not exist yet must not be silently
//! ignored. [`NOT_SUPPORTED_YET`] lists them; [`Config::check_supported`] refuses a
//! configuration in which any of them has a non-default *effective* value. When a
//! feature lands, deleting its flag name from that table is the only change needed.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use serde::{Serialize, Serializer};
use tracing::level_filters::LevelFilter;

use crate::duration::GoDuration;
use crate::logging::{self, StacktraceLevel};

/// Program name used as the prefix of every error line.
pub const PROGRAM: &str = "stageset-controller";

/// Environment variable consulted when `--watch-namespaces` is empty after trimming.
pub const WATCH_NAMESPACES_ENV: &str = "STAGESET_WATCH_NAMESPACES";

/// Used for `--max-teardown-wait` when it is given as `0` (operations.md §1.4).
pub const DEFAULT_MAX_TEARDOWN_WAIT: GoDuration = GoDuration::from_secs(3600);

/// Used for `--metrics-bind-address` when it is given as `""` (controller-runtime default).
pub const DEFAULT_METRICS_BIND_ADDRESS: &str = ":8080";

/// Flags whose feature is not implemented yet (DECISIONS.md 11).
///
/// Setting one of these to a value whose *effective* meaning differs from its
/// default makes the binary exit 2 with `--<flag> is not supported yet`. Remove a
/// name from this table when its feature lands; nothing else has to change.
pub const NOT_SUPPORTED_YET: &[&str] = &[
    // Manager and leader election
    // Watch scope
    // Reconciliation
    "allowed-action-hosts",
    "object-level-kms",
    "require-verified-migration-sources",
    "require-pinned-migration-sources",
    "require-image-verification",
    "image-verification-trusted-root",
    "image-verification-insecure-registry",
    // Rollback store
    "rollback-store-path",
    "rollback-store-retention",
    "rollback-store-s3-endpoint",
    "rollback-store-s3-bucket",
    "rollback-store-s3-prefix",
    "rollback-store-s3-region",
    "rollback-store-s3-use-ssl",
    "rollback-store-s3-access-key",
    "rollback-store-s3-secret-key",
    "rollback-store-s3-session-token",
    "rollback-store-s3-anonymous",
    "rollback-store-s3-sse",
    "rollback-store-s3-sse-kms-key",
    // Metrics, events and tracing
    "tracing-endpoint",
    "tracing-insecure",
    "tracing-sample-ratio",
    // Webhook
    // Gate and MCP
    "enable-mcp",
    "mcp-bind-address",
    "mcp-allow-mutations",
];

/// The flag names (without `--`) whose feature is not built yet; see [`NOT_SUPPORTED_YET`].
pub fn not_supported_yet() -> &'static [&'static str] {
    NOT_SUPPORTED_YET
}

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
struct Cli {
    #[command(flatten)]
    flags: Flags,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
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
struct BuildArgs {
    /// The unpacked artifact (the root the stage's path is resolved against).
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// The stage's `path` inside the artifact (default: the stage's, else `./`).
    #[arg(long, value_name = "PATH")]
    path: Option<String>,
    /// A post-build variable, as `postBuild.substitute` would give it
    /// (repeatable; overrides the stage's inline values).
    #[arg(long, value_name = "NAME=VALUE", action = ArgAction::Append)]
    substitute: Vec<String>,
    /// A StageSet manifest to take the stage's path, patches and inline
    /// substitution from (with --stage).
    #[arg(long, value_name = "FILE", requires = "stage")]
    stageset: Option<PathBuf>,
    /// The stage of --stageset to render.
    #[arg(long, value_name = "NAME", requires = "stageset")]
    stage: Option<String>,
}

/// Options of the `build` subcommand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildOptions {
    pub dir: PathBuf,
    pub path: Option<String>,
    /// `(StageSet manifest, stage name)` to render like the controller would.
    pub stage: Option<(PathBuf, String)>,
    /// Inline variables; empty means no substitution at all.
    pub substitute: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Args)]
struct DevArgs {
    /// Address of the embedded API server (port 0 picks a free one).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    listen_sim: std::net::SocketAddr,
    /// Where to write the kubeconfig of the dev cluster (default: a new temporary
    /// directory).
    #[arg(long, value_name = "PATH")]
    kubeconfig: Option<PathBuf>,
}

/// Options of the `dev` subcommand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DevOptions {
    pub listen_sim: std::net::SocketAddr,
    pub kubeconfig: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct CrdsArgs {
    /// Directory to write the CRD files into (created if missing).
    #[arg(
        long,
        value_name = "DIR",
        default_value = "charts/stageset-controller/files/crds"
    )]
    output_dir: PathBuf,
    /// Print every CRD to stdout instead of writing files.
    #[arg(long, conflicts_with = "output_dir")]
    stdout: bool,
}

/// The raw flag values, exactly as given (or defaulted). Validation turns them into
/// a [`Config`].
#[derive(Debug, Args)]
struct Flags {
    // -- Manager and leader election -------------------------------------------------
    /// Listener for /healthz and /readyz; "" or "0" disables the probe server.
    #[arg(
        long,
        value_name = "ADDR",
        default_value = ":8081",
        help_heading = "Manager and leader election"
    )]
    health_probe_bind_address: String,

    /// Enable Lease-based leader election. The Lease lives in the pod's namespace (the
    /// service-account namespace file; $POD_NAMESPACE outside a cluster).
    #[arg(long, value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", value_parser = go_bool,
          help_heading = "Manager and leader election")]
    leader_elect: bool,

    /// Number of StageSets reconciled in parallel (at least 1).
    #[arg(long, value_name = "INT", default_value = "4", value_parser = go_int,
          help_heading = "Manager and leader election")]
    concurrent: i64,

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
    watch_namespaces: String,

    // -- Reconciliation --------------------------------------------------------------
    /// Maximum entries per StageInventory shard (at least 1).
    #[arg(long, value_name = "INT", default_value = "5000", value_parser = go_int,
          help_heading = "Reconciliation")]
    inventory_shard_cap: i64,

    /// How applied objects are recorded: entries, hybrid (also ApplySet labels) or
    /// applyset (the ApplySet is the source of truth).
    #[arg(
        long,
        value_name = "MODE",
        default_value = "hybrid",
        help_heading = "Reconciliation"
    )]
    inventory_mode: String,

    /// Host glob that http actions, metric sources and wave gates may reach
    /// (repeatable; default: none).
    #[arg(long, value_name = "GLOB", action = ArgAction::Append, help_heading = "Reconciliation")]
    allowed_action_hosts: Vec<String>,

    /// Refuse sourceRef and dependsOn that point into another namespace.
    #[arg(long, value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", value_parser = go_bool,
          help_heading = "Reconciliation")]
    no_cross_namespace_refs: bool,

    /// SOPS cloud-KMS decryption uses the StageSet's service account instead of the
    /// controller's ambient credentials.
    #[arg(long, value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", value_parser = go_bool,
          help_heading = "Reconciliation")]
    object_level_kms: bool,

    /// A migrations source must report SourceVerified=True before its ladder runs.
    #[arg(long, value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", value_parser = go_bool,
          help_heading = "Reconciliation")]
    require_verified_migration_sources: bool,

    /// A migrations source must be pinned immutably (digest or commit).
    #[arg(long, value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", value_parser = go_bool,
          help_heading = "Reconciliation")]
    require_pinned_migration_sources: bool,

    /// Deny-by-default image gate: an image no ImageVerificationPolicy governs holds its stage.
    #[arg(long, value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", value_parser = go_bool,
          help_heading = "Reconciliation")]
    require_image_verification: bool,

    /// Path to an offline Sigstore trusted-root JSON; empty fetches the public root over TUF.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "",
        help_heading = "Reconciliation"
    )]
    image_verification_trusted_root: String,

    /// host[:port] registry fetched over plain HTTP for verification lookups only
    /// (repeatable; default: none).
    #[arg(long, value_name = "HOST", action = ArgAction::Append, help_heading = "Reconciliation")]
    image_verification_insecure_registry: Vec<String>,

    /// Reconcile cadence for StageSets without spec.interval (must be > 0).
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = go_duration,
          help_heading = "Reconciliation")]
    default_interval: GoDuration,

    /// How long a deleting StageSet waits on failing teardown before force-dropping;
    /// 0 means the default 1h.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = go_duration,
          help_heading = "Reconciliation")]
    max_teardown_wait: GoDuration,

    /// Base URL of the runbooks linked from Ready messages (<base>/<reason>/); empty drops
    /// the links. Must be an absolute http:// or https:// URL.
    #[arg(
        long,
        value_name = "URL",
        default_value = "https://stageset.projects.metio.wtf/runbooks",
        help_heading = "Reconciliation"
    )]
    runbook_base_url: String,

    /// Allow artifact fetches from loopback addresses (tests and the dev command only).
    #[arg(long, hide = true, value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1,
          require_equals = true, default_value = "false", default_missing_value = "true",
          value_parser = go_bool)]
    allow_loopback_artifacts: bool,

    // -- Rollback store --------------------------------------------------------------
    /// Directory of the file rollback store (created 0700); empty disables it.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "",
        help_heading = "Rollback store"
    )]
    rollback_store_path: String,

    /// Keep only the newest N snapshots per StageSet stage; 0 keeps all.
    #[arg(long, value_name = "INT", default_value = "0", value_parser = go_int,
          help_heading = "Rollback store")]
    rollback_store_retention: i64,

    /// host[:port] of an S3-compatible endpoint (no scheme); empty disables S3.
    #[arg(
        long,
        value_name = "HOST",
        default_value = "",
        help_heading = "Rollback store"
    )]
    rollback_store_s3_endpoint: String,

    /// S3 bucket name.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "",
        help_heading = "Rollback store"
    )]
    rollback_store_s3_bucket: String,

    /// S3 object key prefix (trailing / trimmed).
    #[arg(
        long,
        value_name = "PREFIX",
        default_value = "",
        help_heading = "Rollback store"
    )]
    rollback_store_s3_prefix: String,

    /// S3 region; empty discovers it from the bucket location.
    #[arg(
        long,
        value_name = "REGION",
        default_value = "",
        help_heading = "Rollback store"
    )]
    rollback_store_s3_region: String,

    /// Use HTTPS to the S3 endpoint.
    #[arg(long, value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_value = "true", default_missing_value = "true", value_parser = go_bool,
          help_heading = "Rollback store")]
    rollback_store_s3_use_ssl: bool,

    /// Static S3 access key; empty uses the credential discovery chain.
    #[arg(
        long,
        value_name = "KEY",
        default_value = "",
        help_heading = "Rollback store"
    )]
    rollback_store_s3_access_key: String,

    /// Static S3 secret key.
    #[arg(
        long,
        value_name = "KEY",
        default_value = "",
        help_heading = "Rollback store"
    )]
    rollback_store_s3_secret_key: String,

    /// Optional S3 session token (static credentials only).
    #[arg(
        long,
        value_name = "TOKEN",
        default_value = "",
        help_heading = "Rollback store"
    )]
    rollback_store_s3_session_token: String,

    /// Send unsigned S3 requests (takes precedence over static keys).
    #[arg(long, value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", value_parser = go_bool,
          help_heading = "Rollback store")]
    rollback_store_s3_anonymous: bool,

    /// At-rest encryption of snapshots: none, s3 (SSE-S3) or kms (SSE-KMS).
    #[arg(
        long,
        value_name = "MODE",
        default_value = "s3",
        help_heading = "Rollback store"
    )]
    rollback_store_s3_sse: String,

    /// KMS key ARN/ID for --rollback-store-s3-sse=kms; empty uses the bucket's default key.
    #[arg(
        long,
        value_name = "KEY",
        default_value = "",
        help_heading = "Rollback store"
    )]
    rollback_store_s3_sse_kms_key: String,

    // -- Metrics, events and tracing -------------------------------------------------
    /// Prometheus endpoint; "0" disables it, "" means :8080.
    #[arg(
        long,
        value_name = "ADDR",
        default_value = ":8080",
        help_heading = "Metrics, events and tracing"
    )]
    metrics_bind_address: String,

    /// Flux notification-controller event endpoint (http:// or https:// URL); empty
    /// sends Kubernetes Events only.
    #[arg(
        long,
        value_name = "URL",
        default_value = "",
        help_heading = "Metrics, events and tracing"
    )]
    events_addr: String,

    /// OTLP gRPC collector host:port; empty turns tracing off.
    #[arg(
        long,
        value_name = "HOST:PORT",
        default_value = "",
        help_heading = "Metrics, events and tracing"
    )]
    tracing_endpoint: String,

    /// Plaintext gRPC to the tracing collector.
    #[arg(long, value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", value_parser = go_bool,
          help_heading = "Metrics, events and tracing")]
    tracing_insecure: bool,

    /// Trace sampling ratio within [0.0, 1.0].
    #[arg(
        long,
        value_name = "FLOAT",
        default_value = "1.0",
        help_heading = "Metrics, events and tracing"
    )]
    tracing_sample_ratio: f64,

    // -- Webhook ---------------------------------------------------------------------
    /// Serve the validating webhooks.
    #[arg(long, value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_value = "true", default_missing_value = "true", value_parser = go_bool,
          help_heading = "Webhook")]
    enable_webhook: bool,

    /// How the webhook serving certificate is provisioned: cert-manager or self-signed.
    #[arg(
        long,
        value_name = "MODE",
        default_value = "cert-manager",
        help_heading = "Webhook"
    )]
    webhook_cert_mode: String,

    /// Directory holding tls.crt and tls.key.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/tmp/k8s-webhook-server/serving-certs",
        help_heading = "Webhook"
    )]
    webhook_cert_dir: String,

    /// Webhook HTTPS port (1-65535, all interfaces).
    #[arg(long, value_name = "INT", default_value = "9443", value_parser = go_int, help_heading = "Webhook")]
    webhook_port: i64,

    /// Lifetime of the self-signed CA and serving certificate (must be > 0).
    #[arg(long, value_name = "DURATION", default_value = "8760h", value_parser = go_duration,
          help_heading = "Webhook")]
    webhook_cert_validity: GoDuration,

    /// Service name used for the self-signed certificate's SANs.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "stageset-controller-webhook",
        help_heading = "Webhook"
    )]
    webhook_service_name: String,

    /// Service namespace; empty uses the pod's namespace.
    #[arg(
        long,
        value_name = "NAMESPACE",
        default_value = "",
        help_heading = "Webhook"
    )]
    webhook_service_namespace: String,

    /// ValidatingWebhookConfiguration whose caBundle is managed (required when self-signed).
    #[arg(
        long,
        value_name = "NAME",
        default_value = "",
        help_heading = "Webhook"
    )]
    webhook_validating_config_name: String,

    // -- Gate and MCP ----------------------------------------------------------------
    /// Listener of the read-only stage gate; empty disables it.
    #[arg(
        long,
        value_name = "ADDR",
        default_value = ":8082",
        help_heading = "Gate and MCP"
    )]
    gate_bind_address: String,

    /// Serve the Model Context Protocol introspection server.
    #[arg(long, value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", value_parser = go_bool,
          help_heading = "Gate and MCP")]
    enable_mcp: bool,

    /// MCP listener (checked only with --enable-mcp).
    #[arg(
        long,
        value_name = "ADDR",
        default_value = ":8084",
        help_heading = "Gate and MCP"
    )]
    mcp_bind_address: String,

    /// Also expose MCP write tools (reconcile/suspend/resume); requires --enable-mcp.
    #[arg(long, value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", value_parser = go_bool,
          help_heading = "Gate and MCP")]
    mcp_allow_mutations: bool,

    // -- Logging ---------------------------------------------------------------------
    /// Log threshold: debug, info, warn or error.
    #[arg(
        long,
        value_name = "LEVEL",
        default_value = "info",
        help_heading = "Logging"
    )]
    log_level: String,

    /// Log format: json or text.
    #[arg(
        long,
        value_name = "FORMAT",
        default_value = "json",
        help_heading = "Logging"
    )]
    log_format: String,

    /// controller-runtime compatible level: debug, info, error, or an integer > 0
    /// (1 = debug, 2 or more = trace); overrides --log-level [default: unset, i.e. --log-level,
    /// or debug with --zap-devel].
    #[arg(long, value_name = "LEVEL", help_heading = "Logging")]
    zap_log_level: Option<String>,

    /// controller-runtime compatible encoder: json or console (text); overrides --log-format
    /// [default: unset, i.e. --log-format, or console with --zap-devel].
    #[arg(long, value_name = "ENCODER", help_heading = "Logging")]
    zap_encoder: Option<String>,

    /// Development logging: text format and debug level unless set otherwise.
    #[arg(long, value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", value_parser = go_bool,
          help_heading = "Logging")]
    zap_devel: bool,

    /// Events at or above this level carry a stacktrace: info, error or panic
    /// [default: unset, i.e. panic].
    #[arg(long, value_name = "LEVEL", help_heading = "Logging")]
    zap_stacktrace_level: Option<String>,
}

// ---------------------------------------------------------------------------
// Go value syntax
// ---------------------------------------------------------------------------

/// Parses a boolean the way Go's `strconv.ParseBool` does.
pub fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

fn go_bool(s: &str) -> Result<bool, String> {
    parse_go_bool(s).ok_or_else(|| {
        format!(
            "invalid boolean {s:?} (use 1, 0, t, f, T, F, true, false, TRUE, FALSE, True or False)"
        )
    })
}

/// Why a string is not a Go integer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntError {
    #[error("invalid integer {0:?}")]
    Syntax(String),
    #[error("integer {0:?} is out of range")]
    Range(String),
}

/// Parses an integer like Go's `strconv.ParseInt(s, 0, 64)`: optional sign, base
/// prefixes `0x`/`0X`, `0o`/`0O`, `0b`/`0B`, a leading `0` for octal, and `_`
/// separators between digits (or between the base prefix and a digit).
pub fn parse_go_int(input: &str) -> Result<i64, IntError> {
    let syntax = || IntError::Syntax(input.to_string());
    let (neg, body) = match input.as_bytes().first() {
        Some(b'-') => (true, &input[1..]),
        Some(b'+') => (false, &input[1..]),
        _ => (false, input),
    };
    if body.is_empty() {
        return Err(syntax());
    }
    let bytes = body.as_bytes();
    let (base, digits) = if bytes[0] == b'0' {
        match bytes.get(1).map(u8::to_ascii_lowercase) {
            Some(b'x') if bytes.len() >= 3 => (16, &body[2..]),
            Some(b'o') if bytes.len() >= 3 => (8, &body[2..]),
            Some(b'b') if bytes.len() >= 3 => (2, &body[2..]),
            _ => (8, &body[1..]),
        }
    } else {
        (10, body)
    };
    let mut magnitude: u64 = 0;
    let mut underscores = false;
    let mut overflow = false;
    for c in digits.bytes() {
        if c == b'_' {
            underscores = true;
            continue;
        }
        let d = match c {
            b'0'..=b'9' => u32::from(c - b'0'),
            b'a'..=b'z' => u32::from(c - b'a') + 10,
            b'A'..=b'Z' => u32::from(c - b'A') + 10,
            _ => return Err(syntax()),
        };
        if d >= base {
            return Err(syntax());
        }
        match magnitude
            .checked_mul(u64::from(base))
            .and_then(|m| m.checked_add(u64::from(d)))
        {
            Some(m) => magnitude = m,
            None => overflow = true,
        }
    }
    if underscores && !go_underscores_ok(input) {
        return Err(syntax());
    }
    let limit = if neg { 1u64 << 63 } else { (1u64 << 63) - 1 };
    if overflow || magnitude > limit {
        return Err(IntError::Range(input.to_string()));
    }
    Ok(if neg {
        0i64.wrapping_sub_unsigned(magnitude)
    } else {
        magnitude as i64
    })
}

/// Go's `underscoreOK`: underscores must separate digits (a base prefix counts as a digit).
fn go_underscores_ok(s: &str) -> bool {
    let mut s = s.as_bytes();
    if let Some(b'-' | b'+') = s.first() {
        s = &s[1..];
    }
    // 'd' = digit or base prefix, '_' = underscore, '!' = anything else, '^' = start.
    let mut saw = b'^';
    let mut i = 0;
    let mut hex = false;
    if s.len() >= 2 && s[0] == b'0' && matches!(s[1].to_ascii_lowercase(), b'b' | b'o' | b'x') {
        i = 2;
        saw = b'd';
        hex = s[1].eq_ignore_ascii_case(&b'x');
    }
    for &c in &s[i..] {
        if c.is_ascii_digit() || (hex && c.is_ascii_hexdigit()) {
            saw = b'd';
        } else if c == b'_' {
            if saw != b'd' {
                return false;
            }
            saw = b'_';
        } else {
            if saw == b'_' {
                return false;
            }
            saw = b'!';
        }
    }
    saw != b'_'
}

fn go_int(s: &str) -> Result<i64, String> {
    parse_go_int(s).map_err(|e| e.to_string())
}

fn go_duration(s: &str) -> Result<GoDuration, String> {
    GoDuration::parse(s).map_err(|e| format!("{e} (use Go syntax such as 90s, 1h30m, 500ms)"))
}

// ---------------------------------------------------------------------------
// Typed configuration
// ---------------------------------------------------------------------------

macro_rules! flag_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every accepted spelling, in documentation order.
            pub const VALUES: &'static [&'static str] = &[$($text),+];

            /// The flag spelling of this value.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }

            /// Parses the exact (case-sensitive) flag spelling.
            pub fn from_flag(s: &str) -> Option<Self> {
                match s {
                    $($text => Some(Self::$variant),)+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}

flag_enum! {
    /// `--webhook-cert-mode`.
    CertMode {
        /// Certificate files are provisioned externally (cert-manager).
        CertManager = "cert-manager",
        /// In-pod CA with rotation and caBundle management.
        SelfSigned = "self-signed",
    }
}

flag_enum! {
    /// `--rollback-store-s3-sse`.
    SseMode {
        None = "none",
        /// SSE-S3.
        S3 = "s3",
        /// SSE-KMS.
        Kms = "kms",
    }
}

flag_enum! {
    /// `--inventory-mode` (DECISIONS.md 4).
    InventoryMode {
        /// Only StageInventory entries.
        Entries = "entries",
        /// Entries plus ApplySet labels on members and parent.
        Hybrid = "hybrid",
        /// The ApplySet is the source of truth.
        ApplySet = "applyset",
    }
}

flag_enum! {
    /// `--log-level`.
    LogLevel {
        Debug = "debug",
        Info = "info",
        Warn = "warn",
        Error = "error",
    }
}

flag_enum! {
    /// `--log-format`.
    LogFormat {
        Json = "json",
        Text = "text",
    }
}

flag_enum! {
    /// `--zap-encoder`.
    ZapEncoder {
        Json = "json",
        /// Human-readable text.
        Console = "console",
    }
}

impl LogLevel {
    pub fn level_filter(self) -> LevelFilter {
        match self {
            LogLevel::Debug => LevelFilter::DEBUG,
            LogLevel::Info => LevelFilter::INFO,
            LogLevel::Warn => LevelFilter::WARN,
            LogLevel::Error => LevelFilter::ERROR,
        }
    }
}

impl LogFormat {
    pub fn format(self) -> logging::Format {
        match self {
            LogFormat::Json => logging::Format::Json,
            LogFormat::Text => logging::Format::Text,
        }
    }
}

/// `--zap-log-level`: a name or a controller-runtime verbosity (`1` = debug, `>= 2` = trace).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZapLogLevel {
    Debug,
    Info,
    Error,
    Verbosity(u32),
}

impl ZapLogLevel {
    pub fn from_flag(s: &str) -> Option<Self> {
        match s {
            "debug" => Some(Self::Debug),
            "info" => Some(Self::Info),
            "error" => Some(Self::Error),
            _ => match parse_go_int(s) {
                Ok(n) if n > 0 => Some(Self::Verbosity(u32::try_from(n).unwrap_or(u32::MAX))),
                _ => None,
            },
        }
    }

    pub fn level_filter(self) -> LevelFilter {
        match self {
            ZapLogLevel::Debug | ZapLogLevel::Verbosity(1) => LevelFilter::DEBUG,
            ZapLogLevel::Info => LevelFilter::INFO,
            ZapLogLevel::Error => LevelFilter::ERROR,
            ZapLogLevel::Verbosity(_) => LevelFilter::TRACE,
        }
    }
}

impl fmt::Display for ZapLogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ZapLogLevel::Debug => f.write_str("debug"),
            ZapLogLevel::Info => f.write_str("info"),
            ZapLogLevel::Error => f.write_str("error"),
            ZapLogLevel::Verbosity(n) => write!(f, "{n}"),
        }
    }
}

impl Serialize for ZapLogLevel {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A credential from the command line. `Debug` and `Serialize` never reveal it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value; only call this where the credential is actually used.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

fn ser_display<T: fmt::Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// The validated, effective configuration of a controller run.
///
/// Every field is named after its flag (`rollback_store_s3_sse` is
/// `--rollback-store-s3-sse`) and serializes under that flag name, which is what
/// [`Config::check_supported`] and the start-up debug log rely on. Optional features
/// that are off are `None`; string flags whose empty value means "unset" are
/// `Option`s too.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Config {
    /// `/healthz` + `/readyz` listener; `None` = disabled (`""` or `"0"`).
    pub health_probe_bind_address: Option<String>,
    pub leader_elect: bool,
    /// Parallel StageSet reconciles (DECISIONS.md 3), at least 1.
    pub concurrent: usize,
    /// Namespaces to watch; empty = cluster-wide. Includes the env fallback.
    pub watch_namespaces: Vec<String>,
    pub inventory_shard_cap: usize,
    pub inventory_mode: InventoryMode,
    pub allowed_action_hosts: Vec<String>,
    pub no_cross_namespace_refs: bool,
    pub object_level_kms: bool,
    pub require_verified_migration_sources: bool,
    pub require_pinned_migration_sources: bool,
    pub require_image_verification: bool,
    /// `None` = fetch the public Sigstore root over TUF.
    pub image_verification_trusted_root: Option<PathBuf>,
    pub image_verification_insecure_registry: Vec<String>,
    /// Always positive.
    #[serde(serialize_with = "ser_display")]
    pub default_interval: GoDuration,
    /// Effective value: a `0` flag value is stored as 1h. Never negative.
    #[serde(serialize_with = "ser_display")]
    pub max_teardown_wait: GoDuration,
    /// Trailing `/` trimmed; `None` drops runbook links. See [`Config::runbook_url`].
    pub runbook_base_url: Option<String>,
    /// Hidden: allow artifact fetches from loopback (DECISIONS.md 13).
    pub allow_loopback_artifacts: bool,
    /// `None` = file rollback store disabled.
    pub rollback_store_path: Option<PathBuf>,
    /// Newest N snapshots kept per StageSet stage; 0 keeps all.
    pub rollback_store_retention: usize,
    /// `None` = S3 rollback store disabled.
    pub rollback_store_s3_endpoint: Option<String>,
    pub rollback_store_s3_bucket: Option<String>,
    /// Trailing `/` trimmed; may be empty.
    pub rollback_store_s3_prefix: String,
    /// `None` = discover the region from the bucket location.
    pub rollback_store_s3_region: Option<String>,
    pub rollback_store_s3_use_ssl: bool,
    /// `None` = credential discovery chain.
    pub rollback_store_s3_access_key: Option<Secret>,
    pub rollback_store_s3_secret_key: Option<Secret>,
    pub rollback_store_s3_session_token: Option<Secret>,
    pub rollback_store_s3_anonymous: bool,
    pub rollback_store_s3_sse: SseMode,
    /// `None` = the bucket's default KMS key.
    pub rollback_store_s3_sse_kms_key: Option<String>,
    /// Prometheus listener; `None` = disabled (`"0"`); `""` became `:8080`.
    pub metrics_bind_address: Option<String>,
    /// Flux notification-controller endpoint; `None` = Kubernetes Events only.
    pub events_addr: Option<String>,
    /// OTLP gRPC collector; `None` = tracing off.
    pub tracing_endpoint: Option<String>,
    pub tracing_insecure: bool,
    /// Within `[0.0, 1.0]`.
    pub tracing_sample_ratio: f64,
    pub enable_webhook: bool,
    pub webhook_cert_mode: CertMode,
    pub webhook_cert_dir: PathBuf,
    pub webhook_port: u16,
    /// Always positive.
    #[serde(serialize_with = "ser_display")]
    pub webhook_cert_validity: GoDuration,
    pub webhook_service_name: String,
    /// `None` = the pod's namespace.
    pub webhook_service_namespace: Option<String>,
    pub webhook_validating_config_name: Option<String>,
    /// Gate listener; `None` = disabled (`""`).
    pub gate_bind_address: Option<String>,
    pub enable_mcp: bool,
    /// MCP listener; `None` unless `--enable-mcp`.
    pub mcp_bind_address: Option<String>,
    pub mcp_allow_mutations: bool,
    /// The `--log-level` flag as given (see `logging` for the effective level).
    pub log_level: LogLevel,
    /// The `--log-format` flag as given (see `logging` for the effective format).
    pub log_format: LogFormat,
    pub zap_log_level: Option<ZapLogLevel>,
    pub zap_encoder: Option<ZapEncoder>,
    pub zap_devel: bool,
    pub zap_stacktrace_level: Option<StacktraceLevel>,
    /// Effective logging settings after the precedence rules of `--zap-*`,
    /// `--log-*` and `--zap-devel`.
    #[serde(skip)]
    pub logging: logging::Settings,
}

/// The subcommand `crds`: where to put the generated CRDs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CrdsOutput {
    /// Write one file per CRD into this directory.
    Dir(PathBuf),
    /// Print every CRD to stdout.
    Stdout,
}

/// What the command line asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum Invocation {
    /// Run the controller with this configuration.
    Run(Box<Config>),
    /// `crds`: generate the CustomResourceDefinitions.
    Crds(CrdsOutput),
    /// `dev`: the local demo.
    Dev(DevOptions),
    /// `build`: render a stage locally.
    Build(BuildOptions),
}

/// A command line that does not lead to a controller run.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `--help` or `--version`: print the text to stdout and exit 0.
    #[error("{0}")]
    Display(String),
    /// The command line does not parse (unknown flag, malformed value, stray
    /// argument): clap's message, exit 2.
    #[error("{PROGRAM}: {0}")]
    Usage(String),
    /// A validation rule failed: one line naming the flag and the value, exit 2.
    #[error("{PROGRAM}: {0}")]
    Invalid(String),
    /// A flag whose feature is not built yet has a non-default value, exit 2.
    #[error("{PROGRAM}: --{0} is not supported yet")]
    NotSupportedYet(&'static str),
}

impl ConfigError {
    /// The process exit code for this outcome.
    pub fn exit_code(&self) -> u8 {
        match self {
            ConfigError::Display(_) => 0,
            _ => 2,
        }
    }

    /// True for help/version output, which goes to stdout; everything else goes to stderr.
    pub fn is_display(&self) -> bool {
        matches!(self, ConfigError::Display(_))
    }

    fn from_clap(err: clap::Error) -> Self {
        let text = err.render().to_string();
        match err.kind() {
            clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                ConfigError::Display(text.trim_end().to_string())
            }
            _ => {
                let text = text.trim_end();
                ConfigError::Usage(text.strip_prefix("error: ").unwrap_or(text).to_string())
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------

/// Parses argv (including the program name) and validates it, then refuses flags
/// whose feature is not built yet ([`NOT_SUPPORTED_YET`]).
///
/// `env` looks up environment variables (only `STAGESET_WATCH_NAMESPACES` is read);
/// pass `&|k| std::env::var(k).ok()` for the real environment.
pub fn parse_from<I, T>(
    args: I,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Invocation, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let invocation = parse_from_ignoring_unsupported(args, env)?;
    if let Invocation::Run(config) = &invocation {
        config.check_supported()?;
    }
    Ok(invocation)
}

/// [`parse_from`] without the not-supported-yet check: everything is parsed and
/// validated, so code (and tests) for features still in [`NOT_SUPPORTED_YET`] can
/// see the configuration they will get.
pub fn parse_from_ignoring_unsupported<I, T>(
    args: I,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Invocation, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let mut cmd = command();
    let argv = go_style_args(&cmd, args.into_iter().map(Into::into).collect())?;
    let matches = cmd
        .try_get_matches_from_mut(argv)
        .map_err(ConfigError::from_clap)?;
    let cli = Cli::from_arg_matches(&matches).map_err(ConfigError::from_clap)?;
    match cli.command {
        Some(Cmd::Crds(args)) => Ok(Invocation::Crds(if args.stdout {
            CrdsOutput::Stdout
        } else {
            CrdsOutput::Dir(args.output_dir)
        })),
        Some(Cmd::Dev(args)) => Ok(Invocation::Dev(DevOptions {
            listen_sim: args.listen_sim,
            kubeconfig: args.kubeconfig,
        })),
        Some(Cmd::Build(args)) => {
            let mut substitute = std::collections::BTreeMap::new();
            for pair in args.substitute {
                let Some((name, value)) = pair.split_once('=') else {
                    return Err(ConfigError::Invalid(format!(
                        "--substitute {pair:?} must be NAME=VALUE"
                    )));
                };
                substitute.insert(name.to_string(), value.to_string());
            }
            Ok(Invocation::Build(BuildOptions {
                dir: args.dir,
                path: args.path,
                stage: args.stageset.zip(args.stage),
                substitute,
            }))
        }
        None => Ok(Invocation::Run(Box::new(Config::from_flags(
            cli.flags, &matches, env,
        )?))),
    }
}

/// The clap command (built), e.g. for rendering help or listing flags.
pub fn command() -> clap::Command {
    let mut cmd = Cli::command();
    cmd.build();
    cmd
}

/// Rewrites Go-style argv into what clap parses unambiguously:
///
/// * `-name[=v]` → `--name[=v]` when `name` is a long flag of the (sub)command
///   being parsed (`-h` and `-V` stay short flags);
/// * `--name v` → `--name=v` for value-taking flags, so the next token is the
///   value whatever it looks like (Go semantics, e.g. `--max-teardown-wait -1s`).
///
/// Rewriting stops at `--`. A positional token naming a subcommand switches to that
/// subcommand's flags. A Go boolean written after a bare boolean flag
/// (`--leader-elect false`) is refused with a message showing the `=` form.
fn go_style_args(cmd: &clap::Command, args: Vec<OsString>) -> Result<Vec<OsString>, ConfigError> {
    let mut out = Vec::with_capacity(args.len());
    let mut iter = args.into_iter();
    if let Some(program) = iter.next() {
        out.push(program);
    }
    let mut current = cmd;
    // The boolean flag of the previous token, when it was given without `=`.
    let mut bare_bool: Option<String> = None;
    while let Some(arg) = iter.next() {
        let Some(text) = arg.to_str() else {
            out.push(arg);
            bare_bool = None;
            continue;
        };
        if let Some(flag) = bare_bool.take()
            && parse_go_bool(text).is_some()
        {
            return Err(ConfigError::Usage(format!(
                "unexpected argument '{text}' after --{flag}: boolean flags take their value after '=' \
                 (--{flag}={text}); this command takes no positional arguments"
            )));
        }
        if text == "--" {
            out.push(arg);
            out.extend(iter);
            break;
        }
        let long = if let Some(rest) = text.strip_prefix("--") {
            Some(rest)
        } else if let Some(rest) = text.strip_prefix('-')
            && rest.len() >= 2
            && !rest.starts_with('-')
        {
            let name = rest.split_once('=').map_or(rest, |(n, _)| n);
            current
                .get_arguments()
                .any(|a| a.get_long() == Some(name))
                .then_some(rest)
        } else {
            None
        };
        let Some(rest) = long else {
            if !text.starts_with('-')
                && let Some(sub) = current.find_subcommand(text)
            {
                current = sub;
            }
            out.push(arg);
            continue;
        };
        let (name, has_value) = match rest.split_once('=') {
            Some((n, _)) => (n, true),
            None => (rest, false),
        };
        let known = current.get_arguments().find(|a| a.get_long() == Some(name));
        let takes_separate_value =
            known.is_some_and(|a| a.get_action().takes_values() && !a.is_require_equals_set());
        if !has_value && known.is_some_and(|a| a.is_require_equals_set()) {
            bare_bool = Some(name.to_string());
        }
        if !has_value
            && takes_separate_value
            && let Some(value) = iter.next()
        {
            let mut joined = OsString::from(format!("--{name}="));
            joined.push(value);
            out.push(joined);
        } else {
            out.push(OsString::from(format!("--{rest}")));
        }
    }
    Ok(out)
}

impl Config {
    /// The configuration of a run without any flags (and an empty environment).
    pub fn defaults() -> Config {
        match parse_from_ignoring_unsupported([PROGRAM], &|_| None) {
            Ok(Invocation::Run(config)) => *config,
            other => panic!("the default configuration must be valid: {other:?}"),
        }
    }

    /// Refuses a configuration in which a flag of [`NOT_SUPPORTED_YET`] has an
    /// effective value different from its default (for list flags: non-empty).
    pub fn check_supported(&self) -> Result<(), ConfigError> {
        let ours = self.flag_values();
        let defaults = Config::defaults().flag_values();
        for &name in NOT_SUPPORTED_YET {
            if ours.get(name) != defaults.get(name) {
                return Err(ConfigError::NotSupportedYet(name));
            }
        }
        Ok(())
    }

    /// The effective value of every flag keyed by flag name, credentials redacted.
    /// Used for the not-supported-yet check and the start-up debug log.
    pub fn flag_values(&self) -> serde_json::Map<String, serde_json::Value> {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(map)) => map,
            other => panic!("Config serializes to an object, got {other:?}"),
        }
    }

    /// The runbook link for a Ready reason: `<base>/<reason-lowercase>/`, or `None`
    /// when `--runbook-base-url` is empty.
    pub fn runbook_url(&self, reason: &str) -> Option<String> {
        self.runbook_base_url
            .as_ref()
            .map(|base| format!("{base}/{}/", reason.to_lowercase()))
    }

    fn from_flags(
        f: Flags,
        matches: &ArgMatches,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let invalid = |msg: String| Err(ConfigError::Invalid(msg));

        // Rule 1: bind addresses.
        let metrics_bind_address = match f.metrics_bind_address.as_str() {
            "0" => None,
            "" => Some(DEFAULT_METRICS_BIND_ADDRESS.to_string()),
            addr => Some(bind_address("metrics-bind-address", addr)?),
        };
        let health_probe_bind_address = match f.health_probe_bind_address.as_str() {
            "" | "0" => None,
            addr => Some(bind_address("health-probe-bind-address", addr)?),
        };
        let gate_bind_address = match f.gate_bind_address.as_str() {
            "" => None,
            addr => Some(bind_address("gate-bind-address", addr)?),
        };
        let mcp_bind_address = if f.enable_mcp {
            Some(bind_address("mcp-bind-address", &f.mcp_bind_address)?)
        } else {
            None
        };

        // Rule 2.
        let Some(webhook_port) = u16::try_from(f.webhook_port).ok().filter(|p| *p >= 1) else {
            return invalid(format!(
                "invalid --webhook-port {}: must be between 1 and 65535",
                f.webhook_port
            ));
        };
        // Rule 3.
        let inventory_shard_cap = at_least_one("inventory-shard-cap", f.inventory_shard_cap)?;
        // Rule 4.
        if !f.default_interval.is_positive() {
            return invalid(format!(
                "invalid --default-interval {}: must be greater than 0",
                f.default_interval
            ));
        }
        // Rule 5.
        if f.max_teardown_wait.is_negative() {
            return invalid(format!(
                "invalid --max-teardown-wait {}: must not be negative (0 means 1h)",
                f.max_teardown_wait
            ));
        }
        let max_teardown_wait = if f.max_teardown_wait == GoDuration::ZERO {
            DEFAULT_MAX_TEARDOWN_WAIT
        } else {
            f.max_teardown_wait
        };
        // Rule 6.
        if !f.webhook_cert_validity.is_positive() {
            return invalid(format!(
                "invalid --webhook-cert-validity {}: must be greater than 0",
                f.webhook_cert_validity
            ));
        }
        // Rule 7 (NaN fails the range check).
        if !(0.0..=1.0).contains(&f.tracing_sample_ratio) {
            return invalid(format!(
                "invalid --tracing-sample-ratio {}: must be within [0.0, 1.0]",
                f.tracing_sample_ratio
            ));
        }
        // Rule 8: enumerations, case-sensitive.
        let webhook_cert_mode = enumeration(
            "webhook-cert-mode",
            &f.webhook_cert_mode,
            CertMode::from_flag,
            CertMode::VALUES,
        )?;
        let rollback_store_s3_sse = enumeration(
            "rollback-store-s3-sse",
            &f.rollback_store_s3_sse,
            SseMode::from_flag,
            SseMode::VALUES,
        )?;
        let log_level = enumeration(
            "log-level",
            &f.log_level,
            LogLevel::from_flag,
            LogLevel::VALUES,
        )?;
        let log_format = enumeration(
            "log-format",
            &f.log_format,
            LogFormat::from_flag,
            LogFormat::VALUES,
        )?;
        // Rule 9.
        if f.mcp_allow_mutations && !f.enable_mcp {
            return invalid("--mcp-allow-mutations requires --enable-mcp".to_string());
        }

        // Additions (DECISIONS.md 3-6, 10, and the controller-runtime logging flags).
        let concurrent = at_least_one("concurrent", f.concurrent)?;
        let inventory_mode = enumeration(
            "inventory-mode",
            &f.inventory_mode,
            InventoryMode::from_flag,
            InventoryMode::VALUES,
        )?;
        let runbook_base_url = if f.runbook_base_url.is_empty() {
            None
        } else if let Err(why) = check_http_url(&f.runbook_base_url) {
            return invalid(format!(
                "invalid --runbook-base-url {:?}: {why} (or empty to drop runbook links)",
                f.runbook_base_url
            ));
        } else {
            Some(f.runbook_base_url.trim_end_matches('/').to_string())
        };
        let Ok(rollback_store_retention) = usize::try_from(f.rollback_store_retention) else {
            return invalid(format!(
                "invalid --rollback-store-retention {}: must not be negative (0 keeps all)",
                f.rollback_store_retention
            ));
        };
        let events_addr = if f.events_addr.is_empty() {
            None
        } else if let Err(why) = check_http_url(&f.events_addr) {
            return invalid(format!("invalid --events-addr {:?}: {why}", f.events_addr));
        } else {
            Some(f.events_addr.clone())
        };
        let zap_log_level = match &f.zap_log_level {
            None => None,
            Some(v) => Some(ZapLogLevel::from_flag(v).ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "invalid --zap-log-level {v:?}: must be debug, info, error or an integer > 0"
                ))
            })?),
        };
        let zap_encoder = match &f.zap_encoder {
            None => None,
            Some(v) => Some(enumeration(
                "zap-encoder",
                v,
                ZapEncoder::from_flag,
                ZapEncoder::VALUES,
            )?),
        };
        let zap_stacktrace_level = match &f.zap_stacktrace_level {
            None => None,
            Some(v) => Some(enumeration(
                "zap-stacktrace-level",
                v,
                StacktraceLevel::from_flag,
                StacktraceLevel::VALUES,
            )?),
        };

        // Logging precedence: --zap-* first, then explicit --log-*, then --zap-devel, then defaults.
        let explicit = |id: &str| matches.value_source(id) == Some(ValueSource::CommandLine);
        let level = match zap_log_level {
            Some(z) => z.level_filter(),
            None if explicit("log_level") => log_level.level_filter(),
            None if f.zap_devel => LevelFilter::DEBUG,
            None => LevelFilter::INFO,
        };
        let format = match zap_encoder {
            Some(ZapEncoder::Json) => logging::Format::Json,
            Some(ZapEncoder::Console) => logging::Format::Text,
            None if explicit("log_format") => log_format.format(),
            None if f.zap_devel => logging::Format::Text,
            None => logging::Format::Json,
        };
        let logging = logging::Settings {
            level,
            format,
            stacktrace_level: zap_stacktrace_level.unwrap_or_default(),
        };

        // --watch-namespaces with its hand-written env fallback.
        let namespaces = if f.watch_namespaces.trim().is_empty() {
            env(WATCH_NAMESPACES_ENV).unwrap_or_default()
        } else {
            f.watch_namespaces
        };
        let watch_namespaces = split_list(&namespaces);

        let non_empty = |s: String| (!s.is_empty()).then_some(s);
        let secret = |s: String| (!s.is_empty()).then(|| Secret::new(s));
        Ok(Config {
            health_probe_bind_address,
            leader_elect: f.leader_elect,
            concurrent,
            watch_namespaces,
            inventory_shard_cap,
            inventory_mode,
            allowed_action_hosts: f.allowed_action_hosts,
            no_cross_namespace_refs: f.no_cross_namespace_refs,
            object_level_kms: f.object_level_kms,
            require_verified_migration_sources: f.require_verified_migration_sources,
            require_pinned_migration_sources: f.require_pinned_migration_sources,
            require_image_verification: f.require_image_verification,
            image_verification_trusted_root: non_empty(f.image_verification_trusted_root)
                .map(PathBuf::from),
            image_verification_insecure_registry: f.image_verification_insecure_registry,
            default_interval: f.default_interval,
            max_teardown_wait,
            runbook_base_url,
            allow_loopback_artifacts: f.allow_loopback_artifacts,
            rollback_store_path: non_empty(f.rollback_store_path).map(PathBuf::from),
            rollback_store_retention,
            rollback_store_s3_endpoint: non_empty(f.rollback_store_s3_endpoint),
            rollback_store_s3_bucket: non_empty(f.rollback_store_s3_bucket),
            rollback_store_s3_prefix: f.rollback_store_s3_prefix.trim_end_matches('/').to_string(),
            rollback_store_s3_region: non_empty(f.rollback_store_s3_region),
            rollback_store_s3_use_ssl: f.rollback_store_s3_use_ssl,
            rollback_store_s3_access_key: secret(f.rollback_store_s3_access_key),
            rollback_store_s3_secret_key: secret(f.rollback_store_s3_secret_key),
            rollback_store_s3_session_token: secret(f.rollback_store_s3_session_token),
            rollback_store_s3_anonymous: f.rollback_store_s3_anonymous,
            rollback_store_s3_sse,
            rollback_store_s3_sse_kms_key: non_empty(f.rollback_store_s3_sse_kms_key),
            metrics_bind_address,
            events_addr,
            tracing_endpoint: non_empty(f.tracing_endpoint),
            tracing_insecure: f.tracing_insecure,
            tracing_sample_ratio: f.tracing_sample_ratio,
            enable_webhook: f.enable_webhook,
            webhook_cert_mode,
            webhook_cert_dir: PathBuf::from(f.webhook_cert_dir),
            webhook_port,
            webhook_cert_validity: f.webhook_cert_validity,
            webhook_service_name: f.webhook_service_name,
            webhook_service_namespace: non_empty(f.webhook_service_namespace),
            webhook_validating_config_name: non_empty(f.webhook_validating_config_name),
            gate_bind_address,
            enable_mcp: f.enable_mcp,
            mcp_bind_address,
            mcp_allow_mutations: f.mcp_allow_mutations,
            log_level,
            log_format,
            zap_log_level,
            zap_encoder,
            zap_devel: f.zap_devel,
            zap_stacktrace_level,
            logging,
        })
    }
}

// ---------------------------------------------------------------------------
// Validation helpers
// ---------------------------------------------------------------------------

/// Splits a comma list: entries trimmed, empty entries dropped (`a,,b,` → `a`, `b`).
pub fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_string)
        .collect()
}

fn bind_address(flag: &str, addr: &str) -> Result<String, ConfigError> {
    check_host_port(addr)
        .map(|()| addr.to_string())
        .map_err(|why| ConfigError::Invalid(format!("invalid --{flag} {addr:?}: {why}")))
}

fn at_least_one(flag: &str, value: i64) -> Result<usize, ConfigError> {
    usize::try_from(value)
        .ok()
        .filter(|v| *v >= 1)
        .ok_or_else(|| {
            ConfigError::Invalid(format!("invalid --{flag} {value}: must be at least 1"))
        })
}

fn enumeration<T>(
    flag: &str,
    value: &str,
    parse: impl Fn(&str) -> Option<T>,
    values: &[&str],
) -> Result<T, ConfigError> {
    parse(value).ok_or_else(|| {
        ConfigError::Invalid(format!(
            "invalid --{flag} {value:?}: must be one of {}",
            values.join(", ")
        ))
    })
}

/// Checks `host:port` like Go's `net.SplitHostPort` plus a port in 1..65535. The host
/// may be empty; IPv6 hosts must be bracketed (`[::1]:8080`).
pub fn check_host_port(addr: &str) -> Result<(), &'static str> {
    let (host, port) = if let Some(rest) = addr.strip_prefix('[') {
        let end = rest.find(']').ok_or("missing ']' in address")?;
        let after = &rest[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(port) => port,
            None if after.is_empty() => return Err("missing port in address (want host:port)"),
            None => return Err("unexpected text after ']' in address"),
        };
        (&rest[..end], port)
    } else {
        let (host, port) = addr
            .rsplit_once(':')
            .ok_or("missing port in address (want host:port)")?;
        if host.contains(':') {
            return Err("too many colons in address (bracket IPv6 hosts: [::1]:8080)");
        }
        (host, port)
    };
    if host.contains(['[', ']']) || host.chars().any(char::is_whitespace) {
        return Err("invalid host in address");
    }
    match port.parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) && port.bytes().all(|b| b.is_ascii_digit()) => Ok(()),
        _ => Err("port must be an integer between 1 and 65535"),
    }
}

/// A deliberately simple absolute-URL check: `http://` or `https://` (scheme
/// case-insensitive), a non-empty host, an optional numeric port, no whitespace.
pub fn check_http_url(url: &str) -> Result<(), &'static str> {
    const WANT: &str = "must be an absolute http:// or https:// URL with a host";
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    let rest = if lower.starts_with("https://") {
        &url[8..]
    } else if lower.starts_with("http://") {
        &url[7..]
    } else {
        return Err(WANT);
    };
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain whitespace");
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if let Some(inner) = host_port.strip_prefix('[') {
        let (host, after) = inner.split_once(']').ok_or(WANT)?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':').ok_or(WANT)?)),
        }
    } else {
        match host_port.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        }
    };
    if host.is_empty() {
        return Err(WANT);
    }
    if let Some(port) = port
        && !port.is_empty()
        && !(port.len() <= 5
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u32>().is_ok_and(|p| p <= 65535))
    {
        return Err("has an invalid port");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Config, ConfigError> {
        let argv = std::iter::once(PROGRAM).chain(args.iter().copied());
        match parse_from_ignoring_unsupported(argv, &|_| None)? {
            Invocation::Run(c) => Ok(*c),
            other => panic!("not a run: {other:?}"),
        }
    }

    #[test]
    fn go_ints() {
        for (s, want) in [
            ("0", 0),
            ("7", 7),
            ("-7", -7),
            ("+7", 7),
            ("0x10", 16),
            ("0X1f", 31),
            ("010", 8),
            ("0o17", 15),
            ("0O17", 15),
            ("0b101", 5),
            ("0B1", 1),
            ("1_000", 1000),
            ("0x_ff", 255),
            ("0_7", 7),
            ("-0x8000000000000000", i64::MIN),
            ("9223372036854775807", i64::MAX),
        ] {
            assert_eq!(parse_go_int(s), Ok(want), "{s}");
        }
        for s in [
            "", "-", "+", "abc", "08", "0x", "0b2", "1__0", "_1", "1_", "1.0", " 1", "0x_", "1e3",
            "--1",
        ] {
            assert_eq!(parse_go_int(s), Err(IntError::Syntax(s.to_string())), "{s}");
        }
        for s in [
            "9223372036854775808",
            "-9223372036854775809",
            "0xffffffffffffffffff",
        ] {
            assert_eq!(parse_go_int(s), Err(IntError::Range(s.to_string())), "{s}");
        }
    }

    #[test]
    fn go_bools() {
        for s in ["1", "t", "T", "true", "TRUE", "True"] {
            assert_eq!(parse_go_bool(s), Some(true));
        }
        for s in ["0", "f", "F", "false", "FALSE", "False"] {
            assert_eq!(parse_go_bool(s), Some(false));
        }
        for s in ["", "yes", "tRUE", "2", "on"] {
            assert_eq!(parse_go_bool(s), None);
        }
    }

    #[test]
    fn host_ports() {
        for ok in [
            ":8080",
            "0.0.0.0:1",
            "localhost:65535",
            "[::1]:8080",
            "[::]:9",
        ] {
            assert_eq!(check_host_port(ok), Ok(()), "{ok}");
        }
        for bad in [
            "0",
            "8080",
            ":0",
            ":65536",
            ":",
            "::1:80",
            "[::1]",
            "[::1]x:80",
            "a:b",
            ":+80",
            "[::1:80",
        ] {
            assert!(check_host_port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn http_urls() {
        for ok in [
            "https://stageset.projects.metio.wtf/runbooks",
            "http://notification-controller.flux-system.svc.cluster.local./",
            "HTTP://x",
            "http://[::1]:9090/path",
            "http://user@host:80",
        ] {
            assert_eq!(check_http_url(ok), Ok(()), "{ok}");
        }
        for bad in [
            "ftp://x",
            "https://",
            "https:///x",
            "//x",
            "x",
            "http://a b",
            "http://h:port",
            "http://h:99999",
        ] {
            assert!(check_http_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_are_valid_and_typed() {
        let c = Config::defaults();
        assert_eq!(c.metrics_bind_address.as_deref(), Some(":8080"));
        assert_eq!(c.health_probe_bind_address.as_deref(), Some(":8081"));
        assert_eq!(c.gate_bind_address.as_deref(), Some(":8082"));
        assert_eq!(c.mcp_bind_address, None);
        assert_eq!(c.default_interval.to_string(), "10m0s");
        assert_eq!(c.max_teardown_wait.to_string(), "1h0m0s");
        assert_eq!(c.webhook_cert_validity.to_string(), "8760h0m0s");
        assert_eq!(c.webhook_port, 9443);
        assert_eq!(c.concurrent, 4);
        assert_eq!(c.inventory_shard_cap, 5000);
        assert_eq!(c.inventory_mode, InventoryMode::Hybrid);
        assert_eq!(c.rollback_store_s3_sse, SseMode::S3);
        assert_eq!(c.webhook_cert_mode, CertMode::CertManager);
        assert!(c.rollback_store_s3_use_ssl && c.enable_webhook && !c.leader_elect);
        assert_eq!(c.logging, logging::Settings::default());
        assert_eq!(
            c.runbook_url("RBACDenied").as_deref(),
            Some("https://stageset.projects.metio.wtf/runbooks/rbacdenied/")
        );
        assert_eq!(c.check_supported(), Ok(()));
    }

    #[test]
    fn every_flag_is_a_config_key_and_the_table_names_real_flags() {
        let keys: std::collections::BTreeSet<String> =
            Config::defaults().flag_values().keys().cloned().collect();
        let flags: std::collections::BTreeSet<String> = command()
            .get_arguments()
            .filter_map(|a| a.get_long())
            .filter(|l| !matches!(*l, "help" | "version"))
            .map(str::to_string)
            .collect();
        assert_eq!(keys, flags);
        let supported = [
            "log-level",
            "log-format",
            "zap-log-level",
            "zap-encoder",
            "zap-devel",
            "zap-stacktrace-level",
        ];
        let table: std::collections::BTreeSet<String> =
            NOT_SUPPORTED_YET.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            table.len(),
            NOT_SUPPORTED_YET.len(),
            "duplicates in NOT_SUPPORTED_YET"
        );
        // Every entry is a real flag; the logging flags always work. (tests/cli.rs
        // pins the exact set.)
        for name in &table {
            assert!(flags.contains(name), "{name} is not a flag");
            assert!(!supported.contains(&name.as_str()), "{name} works already");
        }
    }

    #[test]
    fn logging_precedence() {
        let s = run(&[]).unwrap().logging;
        assert_eq!(
            (s.level, s.format),
            (LevelFilter::INFO, logging::Format::Json)
        );
        let s = run(&["--zap-devel"]).unwrap().logging;
        assert_eq!(
            (s.level, s.format),
            (LevelFilter::DEBUG, logging::Format::Text)
        );
        let s = run(&["--zap-devel", "--log-level=error", "--log-format=json"])
            .unwrap()
            .logging;
        assert_eq!(
            (s.level, s.format),
            (LevelFilter::ERROR, logging::Format::Json)
        );
        let s = run(&[
            "--log-level=warn",
            "--zap-log-level=2",
            "--log-format=json",
            "--zap-encoder=console",
        ])
        .unwrap()
        .logging;
        assert_eq!(
            (s.level, s.format),
            (LevelFilter::TRACE, logging::Format::Text)
        );
        assert_eq!(
            run(&["--zap-log-level=1"]).unwrap().logging.level,
            LevelFilter::DEBUG
        );
        assert_eq!(
            run(&["--zap-log-level", "info"]).unwrap().logging.level,
            LevelFilter::INFO
        );
        let s = run(&["--zap-stacktrace-level=error"]).unwrap().logging;
        assert_eq!(s.stacktrace_level, StacktraceLevel::Error);
    }

    #[test]
    fn go_style_rewriting() {
        let cmd = command();
        let rewrite = |args: &[&str]| -> Vec<String> {
            let argv = std::iter::once(PROGRAM)
                .chain(args.iter().copied())
                .map(OsString::from)
                .collect();
            go_style_args(&cmd, argv)
                .unwrap()
                .into_iter()
                .skip(1)
                .map(|s| s.into_string().unwrap())
                .collect()
        };
        assert_eq!(rewrite(&["-log-level=debug"]), ["--log-level=debug"]);
        assert_eq!(rewrite(&["-log-level", "debug"]), ["--log-level=debug"]);
        assert_eq!(
            rewrite(&["--max-teardown-wait", "-1s"]),
            ["--max-teardown-wait=-1s"]
        );
        assert_eq!(rewrite(&["-leader-elect", "x"]), ["--leader-elect", "x"]);
        assert_eq!(
            rewrite(&["-h", "-help", "-nope"]),
            ["-h", "--help", "-nope"]
        );
        assert_eq!(rewrite(&["crds", "-stdout"]), ["crds", "--stdout"]);
        assert_eq!(rewrite(&["--", "-log-level"]), ["--", "-log-level"]);
    }
}
