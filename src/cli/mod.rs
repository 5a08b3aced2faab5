//! `stagesetctl`, the command line tool (delivery.md §6): the clap
//! definition, the global connection flags, the exit codes and the client.
//! Each verb (or group of verbs) lives in its own file; the binary in
//! `src/bin/stagesetctl.rs` only calls [`main`].
//!
//! Exit codes (§6.1): 0 success; 1 differences found (nothing printed on
//! stderr); 2 usage errors (clap, or a flag combination checked after
//! parsing); 3 runtime errors, printed as `Error: <msg>` on stderr.

pub mod annotate;
pub mod apply;
pub mod build;
pub mod diff;
pub mod fleet;
pub mod get;
pub mod ledger;
pub mod lint;
pub mod plan;
pub mod render;
pub mod tree;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use kube::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::api::StageSet;
use crate::kube_client::ClientFactory;

/// Field manager of every write the CLI makes for itself (annotations,
/// `spec.suspend`, ledgers). Dry-run and real applies of rendered objects
/// use the controller's manager instead, so their ownership matches.
pub const FIELD_MANAGER: &str = "stagesetctl";

/// Why a verb did not succeed.
#[derive(Debug, PartialEq, Eq)]
pub enum Failure {
    /// Exit 1: differences found (diff, lint-migrations); nothing on stderr.
    Differences,
    /// Exit 2: a flag combination clap cannot express.
    Usage(String),
    /// Exit 3: anything that went wrong at run time.
    Runtime(String),
}

impl Failure {
    fn exit_code(&self) -> u8 {
        match self {
            Failure::Differences => 1,
            Failure::Usage(_) => 2,
            Failure::Runtime(_) => 3,
        }
    }
}

impl From<String> for Failure {
    fn from(msg: String) -> Failure {
        Failure::Runtime(msg)
    }
}

/// What a verb returns.
pub type Outcome = Result<(), Failure>;

/// A runtime error.
pub fn fail(msg: impl Into<String>) -> Failure {
    Failure::Runtime(msg.into())
}

#[derive(Parser, Debug)]
#[command(
    name = "stagesetctl",
    about = "Inspect and drive StageSets of stageset-controller",
    disable_help_subcommand = true,
    after_help = "Examples:\n  stagesetctl get -A\n  stagesetctl reconcile web --wait\n  stagesetctl diff web --stage prod"
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    verb: Verb,
}

/// The kubectl-like connection flags (only those the tool really honours;
/// an unknown flag is a usage error).
#[derive(Args, Debug, Clone, Default)]
pub struct Global {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config,
    /// then the in-cluster service account).
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// Namespace (default: the context's namespace, then `default`).
    #[arg(short = 'n', long, global = true, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// User to impersonate.
    #[arg(long = "as", global = true, value_name = "USER")]
    pub as_user: Option<String>,
    /// Group to impersonate (repeatable; needs --as).
    #[arg(long = "as-group", global = true, value_name = "GROUP")]
    pub as_group: Vec<String>,
    /// Timeout of each API request, a Go duration (`30s`, `1m`) or seconds;
    /// 0 means none.
    #[arg(long, global = true, value_name = "DURATION", default_value = "0")]
    pub request_timeout: String,
}

#[derive(Subcommand, Debug)]
enum Verb {
    /// List StageSets, or show one in detail.
    Get(get::GetArgs),
    /// Show each stage and the objects its inventory records.
    Tree(tree::TreeArgs),
    /// Render stages locally as the controller would (caller's credentials).
    Build(build::BuildArgs),
    /// Compare rendered stages with the cluster (server-side dry run).
    Diff(diff::DiffArgs),
    /// Render and apply stages directly, without actions, gates or prune.
    Apply(apply::ApplyArgs),
    /// Preview what the next pass of StageSets would run (read-only).
    Plan(plan::PlanArgs),
    /// Request a reconcile of a StageSet (and optionally its sources).
    Reconcile(annotate::ReconcileArgs),
    /// Promote a stage past its promotion gates once.
    Promote(annotate::PromoteArgs),
    /// Suspend a StageSet (spec.suspend=true).
    Suspend(annotate::SuspendArgs),
    /// Resume a suspended StageSet and request a reconcile.
    Resume(annotate::SuspendArgs),
    /// Parse and validate a migration ladder offline.
    LintMigrations(lint::LintArgs),
    /// Add a Lifetime action to a StageLedger baseline, or export one.
    Baseline(ledger::BaselineArgs),
    /// Forget recorded Lifetime completions in a StageLedger.
    ResetLedger(ledger::ResetArgs),
    /// Show a FleetRollout's waves and where each member stands.
    Fleet(fleet::FleetArgs),
    /// Print a shell completion script.
    Completion(CompletionArgs),
}

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  source <(stagesetctl completion bash)\n  stagesetctl completion zsh > \"${fpath[1]}/_stagesetctl\"\n  stagesetctl completion fish > ~/.config/fish/completions/stagesetctl.fish"
)]
struct CompletionArgs {
    /// The shell.
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(["bash", "zsh", "fish"]))]
    shell: String,
}

/// `<version> (commit <commit>)`; the commit comes from the
/// `STAGESETCTL_COMMIT` environment variable at build time.
pub fn version() -> String {
    format!(
        "{} (commit {})",
        env!("CARGO_PKG_VERSION"),
        option_env!("STAGESETCTL_COMMIT")
            .filter(|c| !c.is_empty())
            .unwrap_or("unknown")
    )
}

fn command(plugin: bool) -> clap::Command {
    // Leaked once per process: clap takes a 'static version string.
    let version: &'static str = Box::leak(version().into_boxed_str());
    let cmd = Cli::command().version(version);
    if plugin {
        cmd.name("kubectl stageset").bin_name("kubectl stageset")
    } else {
        cmd
    }
}

/// The entry point of the `stagesetctl` binary.
pub fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let plugin = argv
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .is_some_and(|n| n.to_string_lossy().starts_with("kubectl-stageset"));
    let matches = match command(plugin).try_get_matches_from(argv) {
        Ok(m) => m,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(2);
        }
    };
    if let Verb::Completion(args) = &cli.verb {
        return completion(&args.shell, plugin);
    }
    crate::reconcile::outbound::guard::install_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("Error: starting the runtime: {e}");
            return ExitCode::from(3);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            match &f {
                Failure::Differences => {}
                Failure::Usage(m) | Failure::Runtime(m) => eprintln!("Error: {m}"),
            }
            ExitCode::from(f.exit_code())
        }
    }
}

fn completion(shell: &str, plugin: bool) -> ExitCode {
    use clap_complete::Shell;
    let shell = match shell {
        "bash" => Shell::Bash,
        "zsh" => Shell::Zsh,
        _ => Shell::Fish,
    };
    let mut cmd = command(plugin);
    let name = cmd.get_name().to_string();
    clap_complete::generate(shell, &mut cmd, name, &mut std::io::stdout());
    ExitCode::SUCCESS
}

async fn run(cli: Cli) -> Outcome {
    let g = &cli.global;
    if !g.as_group.is_empty() && g.as_user.is_none() {
        return Err(Failure::Usage("--as-group requires --as".into()));
    }
    match cli.verb {
        // Offline verbs: no cluster needed.
        Verb::LintMigrations(a) => lint::run(&a),
        Verb::Completion(_) => Ok(()),
        verb => {
            // Flag problems are usage errors even without a reachable cluster.
            match &verb {
                Verb::Build(a) => drop(a.render.source_dirs()?),
                Verb::Diff(a) => drop(a.render.source_dirs()?),
                Verb::Apply(a) => drop(a.render.source_dirs()?),
                Verb::Plan(a) => drop(render::SourceDirs::parse(&a.source_dir)?),
                _ => {}
            }
            let ctx = Ctx::connect(g).await?;
            match verb {
                Verb::Get(a) => get::run(&ctx, &a).await,
                Verb::Tree(a) => tree::run(&ctx, &a).await,
                Verb::Build(a) => build::run(&ctx, &a).await,
                Verb::Diff(a) => diff::run(&ctx, &a).await,
                Verb::Apply(a) => apply::run(&ctx, &a).await,
                Verb::Plan(a) => plan::run(&ctx, &a).await,
                Verb::Reconcile(a) => annotate::reconcile(&ctx, &a).await,
                Verb::Promote(a) => annotate::promote(&ctx, &a).await,
                Verb::Suspend(a) => annotate::suspend(&ctx, &a, true).await,
                Verb::Resume(a) => annotate::suspend(&ctx, &a, false).await,
                Verb::Baseline(a) => ledger::baseline(&ctx, &a).await,
                Verb::ResetLedger(a) => ledger::reset(&ctx, &a).await,
                Verb::Fleet(a) => fleet::run(&ctx, &a).await,
                Verb::LintMigrations(_) | Verb::Completion(_) => Ok(()),
            }
        }
    }
}

/// A connection to the cluster as the caller.
pub struct Ctx {
    /// The caller's client.
    pub client: kube::Client,
    /// The same identity as a factory (discovery cache, library functions).
    pub clients: ClientFactory,
    /// The namespace of the command.
    pub namespace: String,
}

/// `--request-timeout`: a Go duration or a bare number of seconds.
pub fn parse_timeout(text: &str) -> Result<Option<std::time::Duration>, String> {
    let text = text.trim();
    let d = if let Ok(secs) = text.parse::<u64>() {
        std::time::Duration::from_secs(secs)
    } else {
        crate::duration::GoDuration::parse(text)
            .ok()
            .and_then(|d| d.to_std())
            .ok_or_else(|| format!("invalid duration {text:?}"))?
    };
    Ok((!d.is_zero()).then_some(d))
}

impl Ctx {
    /// Loads the kubeconfig (or the in-cluster configuration) with the
    /// global flags applied.
    pub async fn connect(g: &Global) -> Result<Ctx, Failure> {
        let timeout = parse_timeout(&g.request_timeout)
            .map_err(|e| Failure::Usage(format!("--request-timeout: {e}")))?;
        let options = KubeConfigOptions {
            context: g.context.clone(),
            ..KubeConfigOptions::default()
        };
        let mut config = match &g.kubeconfig {
            Some(path) => {
                let kc = Kubeconfig::read_from(path)
                    .map_err(|e| fail(format!("reading {}: {e}", path.display())))?;
                kube::Config::from_custom_kubeconfig(kc, &options)
                    .await
                    .map_err(|e| fail(format!("kubeconfig {}: {e}", path.display())))?
            }
            None => match Kubeconfig::read() {
                Ok(kc) => kube::Config::from_custom_kubeconfig(kc, &options)
                    .await
                    .map_err(|e| fail(format!("kubeconfig: {e}")))?,
                Err(read_err) if g.context.is_none() => kube::Config::incluster().map_err(|_| {
                    fail(format!(
                        "no kubeconfig ({read_err}) and not running in a cluster; pass --kubeconfig"
                    ))
                })?,
                Err(e) => return Err(fail(format!("kubeconfig: {e}"))),
            },
        };
        if let Some(user) = &g.as_user {
            config.auth_info.impersonate = Some(user.clone());
            if !g.as_group.is_empty() {
                config.auth_info.impersonate_groups = Some(g.as_group.clone());
            }
        }
        if let Some(t) = timeout {
            config.connect_timeout = Some(t);
            config.read_timeout = Some(t);
            config.write_timeout = Some(t);
        }
        let namespace = g
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| config.default_namespace.clone());
        let clients = ClientFactory::new(config).map_err(|e| fail(format!("client: {e}")))?;
        Ok(Ctx {
            client: clients.controller(),
            clients,
            namespace,
        })
    }

    /// The StageSets of the namespace.
    pub fn stagesets(&self) -> Api<StageSet> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Reads a StageSet; NotFound is a clear error.
    pub async fn stageset(&self, name: &str) -> Result<StageSet, Failure> {
        match self.stagesets().get_opt(name).await {
            Ok(Some(ss)) => Ok(ss),
            Ok(None) => Err(fail(format!(
                "StageSet {}/{name} not found",
                self.namespace
            ))),
            Err(e) => Err(fail(format!(
                "reading StageSet {}/{name}: {}",
                self.namespace,
                api_error(&e)
            ))),
        }
    }
}

/// A kube error as one line (the API server's message when there is one).
pub fn api_error(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({})", s.message, s.code),
        other => other.to_string(),
    }
}

/// A fresh token: the current UTC time in RFC3339 with nanoseconds, as Go's
/// `time.RFC3339Nano` prints it (trailing zeros of the fraction dropped).
pub fn token() -> String {
    jiff::Timestamp::now().to_string()
}

/// `--stage` values: repeatable and comma-separated; checked against the
/// spec (unknown stage: error). Empty selection: every stage. Returned in
/// spec order.
pub fn select_stages<'a>(
    ss: &'a StageSet,
    wanted: &[String],
) -> Result<Vec<&'a crate::api::Stage>, Failure> {
    let names: Vec<&str> = wanted
        .iter()
        .flat_map(|w| w.split(','))
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .collect();
    for n in &names {
        if !ss.spec.stages.iter().any(|s| s.name == *n) {
            return Err(fail(format!(
                "StageSet {} has no stage {n:?} (stages: {})",
                kube::ResourceExt::name_any(ss),
                ss.spec
                    .stages
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    Ok(ss
        .spec
        .stages
        .iter()
        .filter(|s| names.is_empty() || names.contains(&s.name.as_str()))
        .collect())
}

/// Left-aligned columns separated by three spaces, like kubectl's tables.
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(cell);
                let pad = widths[c] - cell.chars().count() + 3;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts() {
        assert_eq!(parse_timeout("0"), Ok(None));
        assert_eq!(
            parse_timeout("30"),
            Ok(Some(std::time::Duration::from_secs(30)))
        );
        assert_eq!(
            parse_timeout("1m30s"),
            Ok(Some(std::time::Duration::from_secs(90)))
        );
        assert!(parse_timeout("soon").is_err());
    }

    #[test]
    fn tokens_are_rfc3339_utc() {
        let t = token();
        assert!(t.ends_with('Z'), "{t}");
        assert!(t.parse::<jiff::Timestamp>().is_ok());
    }

    #[test]
    fn tables_pad_columns() {
        let rows = vec![
            vec!["NAME".to_string(), "READY".to_string()],
            vec!["a-long-name".to_string(), "True".to_string()],
        ];
        assert_eq!(table(&rows), "NAME          READY\na-long-name   True\n");
    }

    #[test]
    fn the_command_definition_is_consistent() {
        command(false).debug_assert();
    }
}
