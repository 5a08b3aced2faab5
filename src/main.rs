//! The `stageset-controller` binary: a thin shell over the library.
//!
//! Exit codes (operations.md §1.3): 0 for `--help`/`--version` and successful
//! subcommands, 2 for usage and validation errors, 1 for runtime failures.

use std::io::Write;
use std::process::ExitCode;

use stageset_controller::config::{self, Config, CrdsOutput, Invocation};
use stageset_controller::{api, logging};

fn main() -> ExitCode {
    let env = |key: &str| std::env::var(key).ok();
    match config::parse_from(std::env::args_os(), &env) {
        Ok(Invocation::Run(config)) => run(&config),
        Ok(Invocation::Crds(output)) => crds(&output),
        Err(err) if err.is_display() => {
            println!("{err}");
            ExitCode::from(err.exit_code())
        }
        Err(err) => {
            eprintln!("{err}");
            ExitCode::from(err.exit_code())
        }
    }
}

fn run(config: &Config) -> ExitCode {
    if let Err(err) = logging::init(&config.logging) {
        eprintln!("{}: {err}", config::PROGRAM);
        return ExitCode::from(1);
    }
    logging::log_start();
    if config.allow_loopback_artifacts {
        // DECISIONS.md 13: never set by the chart; tests and the dev command only.
        tracing::warn!(
            logger = "setup",
            "--allow-loopback-artifacts is set: artifacts may be fetched from loopback addresses; never use this in production"
        );
    }
    tracing::debug!(
        logger = "setup",
        config = %serde_json::Value::Object(config.flag_values()),
        "effective configuration"
    );
    // The reconcile machinery is built in later issues; refuse to pretend otherwise.
    tracing::error!(
        logger = "setup",
        "the controller runtime is not implemented yet; this build only validates its flags and generates CRDs"
    );
    ExitCode::from(1)
}

fn crds(output: &CrdsOutput) -> ExitCode {
    let result = match output {
        CrdsOutput::Stdout => {
            let all: String = api::crd::render_all()
                .into_iter()
                .map(|(_, yaml)| yaml)
                .collect();
            std::io::stdout().lock().write_all(all.as_bytes())
        }
        CrdsOutput::Dir(dir) => api::crd::write_all(dir).and_then(|paths| {
            let mut out = std::io::stdout().lock();
            paths
                .iter()
                .try_for_each(|p| writeln!(out, "{}", p.display()))
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let target = match output {
                CrdsOutput::Stdout => "stdout".to_string(),
                CrdsOutput::Dir(dir) => dir.display().to_string(),
            };
            eprintln!("{}: writing CRDs to {target}: {err}", config::PROGRAM);
            ExitCode::from(1)
        }
    }
}
