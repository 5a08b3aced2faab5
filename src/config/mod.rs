//! Every controller flag, parsed once with clap and validated into one [`Config`].
//!
//! `flags.rs` declares the command line for clap; `goflags.rs` implements the Go
//! syntax of the compatibility contract below (argv pre-processing, boolean,
//! integer and duration values); this module validates what clap parsed into a
//! [`Config`] (or another [`Invocation`]).
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
//! docs/decisions.md 11: a flag whose feature does not exist yet must not be silently
//! ignored. [`NOT_SUPPORTED_YET`] lists them; [`Config::check_supported`] refuses a
//! configuration in which any of them has a non-default *effective* value. When a
//! feature lands, deleting its flag name from that table is the only change needed.

mod flags;
mod goflags;
mod pathmatch;
#[cfg(test)]
mod tests;

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};
use serde::{Serialize, Serializer};
use tracing::level_filters::LevelFilter;

use self::flags::{Cli, Cmd, Flags};
use self::goflags::go_style_args;
pub use self::goflags::{IntError, parse_go_bool, parse_go_int};
pub use self::pathmatch::{BadPattern, check_pattern, path_match};
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

/// Flags whose feature is not implemented yet (docs/decisions.md 11).
///
/// Setting one of these to a value whose *effective* meaning differs from its
/// default makes the binary exit 2 with `--<flag> is not supported yet`. Remove a
/// name from this table when its feature lands; nothing else has to change.
pub const NOT_SUPPORTED_YET: &[&str] = &[
    // Manager and leader election
    // Watch scope
    // Reconciliation
    "object-level-kms",
    "require-image-verification",
    "image-verification-trusted-root",
    "image-verification-insecure-registry",
    // Metrics, events and tracing
    // Webhook
];

/// The flag names (without `--`) whose feature is not built yet; see [`NOT_SUPPORTED_YET`].
pub fn not_supported_yet() -> &'static [&'static str] {
    NOT_SUPPORTED_YET
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
    /// `--inventory-mode` (docs/decisions.md 4).
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
    /// Parallel StageSet reconciles (docs/decisions.md 3), at least 1.
    pub concurrent: usize,
    /// `--kube-api-qps`: the shared client-side request rate (DECISIONS 23).
    pub kube_api_qps: f64,
    /// `--kube-api-burst`.
    pub kube_api_burst: u32,
    /// Namespaces to watch; empty = cluster-wide. Includes the env fallback.
    pub watch_namespaces: Vec<String>,
    /// `--watch-label-selector` (empty: every StageSet; DECISIONS 22).
    pub watch_label_selector: crate::api::selector::LabelFilter,
    pub inventory_shard_cap: usize,
    /// `--apply-concurrency` (DECISIONS 21).
    pub apply_concurrency: usize,
    pub inventory_mode: InventoryMode,
    /// Host globs (Go `path.Match`, checked by [`check_pattern`]) that http
    /// actions may reach; empty = any host but loopback and forbidden literals.
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
    /// Hidden: allow artifact fetches from loopback (docs/decisions.md 13).
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

/// Options of the `dev` subcommand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DevOptions {
    pub listen_sim: std::net::SocketAddr,
    pub kubeconfig: Option<PathBuf>,
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
        let mcp_bind_address = if f.enable_mcp.0 {
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
        if f.mcp_allow_mutations.0 && !f.enable_mcp.0 {
            return invalid("--mcp-allow-mutations requires --enable-mcp".to_string());
        }

        // Additions (docs/decisions.md 3-6, 10, and the controller-runtime logging flags).
        let concurrent = at_least_one("concurrent", f.concurrent)?;
        let apply_concurrency = at_least_one("apply-concurrency", f.apply_concurrency)?;
        if !(f.kube_api_qps.is_finite() && f.kube_api_qps > 0.0) {
            return invalid(format!(
                "invalid --kube-api-qps {}: must be a number greater than 0",
                f.kube_api_qps
            ));
        }
        let kube_api_burst = u32::try_from(at_least_one("kube-api-burst", f.kube_api_burst)?)
            .map_err(|_| {
                ConfigError::Invalid(format!(
                    "invalid --kube-api-burst {}: at most {}",
                    f.kube_api_burst,
                    u32::MAX
                ))
            })?;
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
        // --allowed-action-hosts: Go `path.Match` globs. Upstream lets a
        // malformed pattern silently match nothing; we refuse it at start-up.
        for glob in &f.allowed_action_hosts {
            if let Err(why) = check_pattern(glob) {
                return invalid(format!(
                    "invalid --allowed-action-hosts {glob:?}: {why} (Go path.Match syntax: `*`, `?`, `[...]` classes, `\\` escapes)"
                ));
            }
        }
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
            None if f.zap_devel.0 => LevelFilter::DEBUG,
            None => LevelFilter::INFO,
        };
        let format = match zap_encoder {
            Some(ZapEncoder::Json) => logging::Format::Json,
            Some(ZapEncoder::Console) => logging::Format::Text,
            None if explicit("log_format") => log_format.format(),
            None if f.zap_devel.0 => logging::Format::Text,
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
        let watch_label_selector =
            crate::api::selector::LabelFilter::parse(&f.watch_label_selector)
                .map_err(|e| ConfigError::Invalid(format!("invalid --watch-label-selector {e}")))?;

        let non_empty = |s: String| (!s.is_empty()).then_some(s);
        let secret = |s: String| (!s.is_empty()).then(|| Secret::new(s));
        Ok(Config {
            health_probe_bind_address,
            leader_elect: f.leader_elect.0,
            concurrent,
            kube_api_qps: f.kube_api_qps,
            kube_api_burst,
            watch_namespaces,
            watch_label_selector,
            inventory_shard_cap,
            apply_concurrency,
            inventory_mode,
            allowed_action_hosts: f.allowed_action_hosts,
            no_cross_namespace_refs: f.no_cross_namespace_refs.0,
            object_level_kms: f.object_level_kms.0,
            require_verified_migration_sources: f.require_verified_migration_sources.0,
            require_pinned_migration_sources: f.require_pinned_migration_sources.0,
            require_image_verification: f.require_image_verification.0,
            image_verification_trusted_root: non_empty(f.image_verification_trusted_root)
                .map(PathBuf::from),
            image_verification_insecure_registry: f.image_verification_insecure_registry,
            default_interval: f.default_interval,
            max_teardown_wait,
            runbook_base_url,
            allow_loopback_artifacts: f.allow_loopback_artifacts.0,
            rollback_store_path: non_empty(f.rollback_store_path).map(PathBuf::from),
            rollback_store_retention,
            rollback_store_s3_endpoint: non_empty(f.rollback_store_s3_endpoint),
            rollback_store_s3_bucket: non_empty(f.rollback_store_s3_bucket),
            rollback_store_s3_prefix: f.rollback_store_s3_prefix.trim_end_matches('/').to_string(),
            rollback_store_s3_region: non_empty(f.rollback_store_s3_region),
            rollback_store_s3_use_ssl: f.rollback_store_s3_use_ssl.0,
            rollback_store_s3_access_key: secret(f.rollback_store_s3_access_key),
            rollback_store_s3_secret_key: secret(f.rollback_store_s3_secret_key),
            rollback_store_s3_session_token: secret(f.rollback_store_s3_session_token),
            rollback_store_s3_anonymous: f.rollback_store_s3_anonymous.0,
            rollback_store_s3_sse,
            rollback_store_s3_sse_kms_key: non_empty(f.rollback_store_s3_sse_kms_key),
            metrics_bind_address,
            events_addr,
            tracing_endpoint: non_empty(f.tracing_endpoint),
            tracing_insecure: f.tracing_insecure.0,
            tracing_sample_ratio: f.tracing_sample_ratio,
            enable_webhook: f.enable_webhook.0,
            webhook_cert_mode,
            webhook_cert_dir: PathBuf::from(f.webhook_cert_dir),
            webhook_port,
            webhook_cert_validity: f.webhook_cert_validity,
            webhook_service_name: f.webhook_service_name,
            webhook_service_namespace: non_empty(f.webhook_service_namespace),
            webhook_validating_config_name: non_empty(f.webhook_validating_config_name),
            gate_bind_address,
            enable_mcp: f.enable_mcp.0,
            mcp_bind_address,
            mcp_allow_mutations: f.mcp_allow_mutations.0,
            log_level,
            log_format,
            zap_log_level,
            zap_encoder,
            zap_devel: f.zap_devel.0,
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
