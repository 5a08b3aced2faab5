//! The `stageset-controller` binary: a thin shell over the library.
//!
//! Exit codes (operations.md §1.3): 0 for `--help`/`--version` and successful
//! subcommands, 2 for usage and validation errors, 1 for runtime failures.

use std::io::Write;
use std::process::ExitCode;

use stageset_controller::config::{self, BuildOptions, Config, CrdsOutput, Invocation};
use stageset_controller::{api, controller, logging, telemetry};

fn main() -> ExitCode {
    let env = |key: &str| std::env::var(key).ok();
    match config::parse_from(std::env::args_os(), &env) {
        Ok(Invocation::Run(config)) => run(&config),
        Ok(Invocation::Crds(output)) => crds(&output),
        Ok(Invocation::Dev(options)) => dev(&options),
        Ok(Invocation::Build(options)) => build(&options),
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
    // Tracing (operations.md §7.8): off unless --tracing-endpoint is set; a
    // failing set-up exits 1. The W3C propagator is installed either way.
    telemetry::install_propagator();
    let telemetry = match &config.tracing_endpoint {
        None => None,
        Some(endpoint) => {
            let settings = telemetry::Settings {
                endpoint: endpoint.clone(),
                insecure: config.tracing_insecure,
                sample_ratio: config.tracing_sample_ratio,
            };
            match telemetry::start(&settings, logging::VERSION) {
                Ok(t) => Some(t),
                Err(err) => {
                    eprintln!("{}: {err}", config::PROGRAM);
                    return ExitCode::from(1);
                }
            }
        }
    };
    let layer = telemetry.as_ref().map(|t| t.layer());
    if let Err(err) = logging::init_with(&config.logging, layer) {
        eprintln!("{}: {err}", config::PROGRAM);
        return ExitCode::from(1);
    }
    logging::log_start();
    if let Some(endpoint) = &config.tracing_endpoint {
        tracing::info!(
            logger = "setup",
            endpoint = %endpoint,
            insecure = config.tracing_insecure,
            sample_ratio = config.tracing_sample_ratio,
            "tracing enabled"
        );
    }
    let code = run_controller(config);
    if let Some(telemetry) = telemetry {
        telemetry.shutdown();
    }
    code
}

fn run_controller(config: &Config) -> ExitCode {
    tracing::debug!(
        logger = "setup",
        config = %serde_json::Value::Object(config.flag_values()),
        "effective configuration"
    );
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(logger = "setup", error = %e, "starting the runtime failed");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = controller::preflight(config) {
        tracing::error!(logger = "setup", error = %e, "starting the controller failed");
        return ExitCode::from(1);
    }
    let kube_config = match runtime.block_on(stageset_controller::kube_client::load_config()) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(logger = "setup", error = %e, "loading the kubeconfig failed");
            return ExitCode::from(1);
        }
    };
    let controller = match controller::start(config, kube_config) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(logger = "setup", error = %e, "starting the controller failed");
            return ExitCode::from(1);
        }
    };
    tracing::info!(logger = "setup", "starting manager");
    runtime.block_on(shutdown_signal());
    tracing::info!(logger = "setup", "shutting down");
    controller.stop_gracefully();
    ExitCode::SUCCESS
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}

fn dev(options: &config::DevOptions) -> ExitCode {
    let settings = logging::Settings {
        level: tracing::level_filters::LevelFilter::WARN,
        format: logging::Format::Text,
        ..logging::Settings::default()
    };
    if let Err(err) = logging::init(&settings) {
        eprintln!("{}: {err}", config::PROGRAM);
        return ExitCode::from(1);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{}: starting the runtime: {e}", config::PROGRAM);
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(stageset_controller::dev::run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}: dev: {e}", config::PROGRAM);
            ExitCode::from(1)
        }
    }
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

/// `stageset-controller build DIR [--path P] [--substitute NAME=VALUE]...`:
/// prints what a stage would apply, as multi-document YAML, through the same
/// build and substitution code as the controller; a build directory with its
/// own kustomization is built in place, as `kubectl kustomize` builds it.
fn build(options: &BuildOptions) -> ExitCode {
    use stageset_controller::reconcile::{build, substitute};
    // The stage of a StageSet manifest: its path, patches and inline
    // variables, exactly what the controller would use.
    let stage = match &options.stage {
        None => None,
        Some((file, name)) => match stage_of(file, name) {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("{}: {e}", config::PROGRAM);
                return ExitCode::from(2);
            }
        },
    };
    let post_build = stage.as_ref().and_then(|s| s.post_build.as_ref());
    if let Some(refs) = post_build.and_then(|p| p.substitute_from.as_ref())
        && !refs.is_empty()
    {
        eprintln!(
            "{}: note: postBuild.substituteFrom is read from the cluster and not used here; pass those variables with --substitute",
            config::PROGRAM
        );
    }
    let mut inline = post_build
        .and_then(|p| p.substitute.clone())
        .unwrap_or_default();
    inline.extend(options.substitute.clone());
    let vars = if inline.is_empty() {
        None
    } else {
        match substitute::resolve_vars(&[], Some(&inline)) {
            Ok(v) => Some(v),
            Err(e) => {
                eprintln!("{}: --substitute: {e}", config::PROGRAM);
                return ExitCode::from(2);
            }
        }
    };
    let path = options
        .path
        .clone()
        .or_else(|| stage.as_ref().and_then(|s| s.path.clone()))
        .unwrap_or_else(|| "./".to_string());
    let patches = stage
        .as_ref()
        .and_then(|s| s.patches.clone())
        .unwrap_or_default();
    let objects = match build::render_dir(&options.dir, &path, &patches, vars.as_ref()) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{}: {e}", config::PROGRAM);
            return ExitCode::from(1);
        }
    };
    // Laid out like `kubectl kustomize` output, with every string that a YAML
    // 1.1 reader (`kubectl apply -f -`) would take for something else quoted.
    let text = kustomize::yaml::to_string(&objects);
    if let Err(e) = std::io::stdout().lock().write_all(text.as_bytes()) {
        eprintln!("{}: writing the output: {e}", config::PROGRAM);
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

/// Stage `name` of the StageSet in `file`.
fn stage_of(file: &std::path::Path, name: &str) -> Result<api::Stage, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let ss: api::StageSet = serde_yaml_ng::from_str(&text)
        .map_err(|e| format!("{}: not a StageSet: {e}", file.display()))?;
    ss.spec
        .stages
        .into_iter()
        .find(|s| s.name == name)
        .ok_or_else(|| format!("{}: StageSet has no stage {name:?}", file.display()))
}
