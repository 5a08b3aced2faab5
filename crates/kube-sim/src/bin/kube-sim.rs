//! `kube-sim`: run the simulator as a process, for scripts and local development.
//!
//! ```text
//! kube-sim --listen 127.0.0.1:0 --kubeconfig /tmp/kubeconfig [--user NAME:TOKEN[:GROUP,...]]...
//!          [--load DIR]... [--service-map NS/NAME=HOST:PORT]... [--auto-ready[=DURATION]]
//!          [--latency MILLIS] [--watch-history-min-events N] [--watch-history-window SECS]
//!          [--fault-seed N] [--fault-rate-429 F] [--fault-rate-500 F] [--fault-rate-503 F]
//!          [--fault-rate-reset F] [--fault-retry-after SECS] [--fault-watch-end-rate F]
//!          [--fault-watch-gone-rate F] [--fault-verbs VERB,...] [--fault-resources RES,...]
//!          [--fault-exempt-user NAME]...
//! ```
//!
//! Prints `kube-sim ready on https://127.0.0.1:<port>` once it accepts requests
//! and shuts down cleanly on SIGTERM or SIGINT.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use kube_sim::{FaultConfig, KubeSim, Options, SimConfig, UserSpec, read_manifests};

#[derive(Parser, Debug)]
#[command(
    name = "kube-sim",
    version,
    about = "A loopback Kubernetes API server for tests and local development"
)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Where to write the admin kubeconfig.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// A bearer-token user, NAME:TOKEN[:GROUP,...] (repeatable).
    #[arg(long = "user", value_name = "NAME:TOKEN[:GROUPS]")]
    users: Vec<UserSpec>,
    /// Preload every manifest under this directory (repeatable).
    #[arg(long = "load", value_name = "DIR")]
    load: Vec<PathBuf>,
    /// Route webhook calls for a Service to an address: NS/NAME=HOST:PORT (repeatable).
    #[arg(long = "service-map", value_name = "NS/NAME=HOST:PORT")]
    service_map: Vec<String>,
    /// Make workloads ready this long after they change (default 500ms when given
    /// without a value).
    #[arg(long, value_name = "MILLIS", num_args = 0..=1, default_missing_value = "500")]
    auto_ready: Option<u64>,
    /// The admin bearer token (random by default).
    #[arg(long)]
    admin_token: Option<String>,
    /// Milliseconds every request waits before it is answered, as on an
    /// API server with etcd behind it (0: none).
    #[arg(long, value_name = "MILLIS", default_value_t = 0)]
    latency: u64,
    /// Watch history per resource type: at least this many latest events...
    #[arg(long, value_name = "N", default_value_t = 100)]
    watch_history_min_events: usize,
    /// ...and every event younger than this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 75)]
    watch_history_window: u64,
    /// Seed of the injected fault sequence.
    #[arg(long, value_name = "N", default_value_t = 0)]
    fault_seed: u64,
    /// Fraction of requests answered 429 with Retry-After.
    #[arg(long, value_name = "F", default_value_t = 0.0)]
    fault_rate_429: f64,
    /// Fraction of requests answered 500.
    #[arg(long, value_name = "F", default_value_t = 0.0)]
    fault_rate_500: f64,
    /// Fraction of requests answered 503.
    #[arg(long, value_name = "F", default_value_t = 0.0)]
    fault_rate_503: f64,
    /// Fraction of requests handled whose response is cut off mid-body.
    #[arg(long, value_name = "F", default_value_t = 0.0)]
    fault_rate_reset: f64,
    /// Retry-After seconds of injected 429s.
    #[arg(long, value_name = "SECS", default_value_t = 1)]
    fault_retry_after: u64,
    /// Fraction of watches that end early.
    #[arg(long, value_name = "F", default_value_t = 0.0)]
    fault_watch_end_rate: f64,
    /// Fraction of watches resumed where an early-ended watch stopped that
    /// get 410 Gone.
    #[arg(long, value_name = "F", default_value_t = 0.0)]
    fault_watch_gone_rate: f64,
    /// Verbs faults apply to, comma-separated (default: all).
    #[arg(long, value_name = "VERB,...", value_delimiter = ',')]
    fault_verbs: Vec<String>,
    /// Resources (plural names) faults apply to, comma-separated (default: all).
    #[arg(long, value_name = "RES,...", value_delimiter = ',')]
    fault_resources: Vec<String>,
    /// A user never faulted (repeatable; the admin is `kube-sim-admin`).
    #[arg(long = "fault-exempt-user", value_name = "NAME")]
    fault_exempt_users: Vec<String>,
    /// Seconds between watch bookmarks.
    #[arg(long, default_value_t = 10)]
    bookmark_interval: u64,
    /// Log requests to stderr (RUST_LOG-style level: error, warn, info, debug).
    #[arg(long, default_value = "warn")]
    log_level: tracing::Level,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(args.log_level)
        .init();
    let mut service_map = HashMap::new();
    for entry in &args.service_map {
        let Some((svc, addr)) = entry.split_once('=') else {
            eprintln!("kube-sim: --service-map {entry:?} must be NS/NAME=HOST:PORT");
            return ExitCode::from(2);
        };
        service_map.insert(svc.to_string(), addr.to_string());
    }
    let mut load = Vec::new();
    for dir in &args.load {
        match read_manifests(dir) {
            Ok(objs) => load.extend(objs),
            Err(e) => {
                eprintln!("kube-sim: --load {}: {e}", dir.display());
                return ExitCode::from(2);
            }
        }
    }
    let options = Options {
        listen: args.listen,
        admin_token: args.admin_token.clone(),
        users: args.users.clone(),
        load,
        config: SimConfig {
            service_map,
            auto_ready: args.auto_ready.map(Duration::from_millis),
            latency: Duration::from_millis(args.latency),
            bookmark_interval: Duration::from_secs(args.bookmark_interval.max(1)),
            watch_history_min_events: args.watch_history_min_events,
            watch_history_window: Duration::from_secs(args.watch_history_window),
            faults: FaultConfig {
                seed: args.fault_seed,
                rate_429: args.fault_rate_429,
                rate_500: args.fault_rate_500,
                rate_503: args.fault_rate_503,
                rate_reset: args.fault_rate_reset,
                retry_after_secs: args.fault_retry_after,
                watch_end_rate: args.fault_watch_end_rate,
                watch_resume_gone_rate: args.fault_watch_gone_rate,
                verbs: args.fault_verbs.clone(),
                resources: args.fault_resources.clone(),
                exempt_users: args.fault_exempt_users.clone(),
                ..FaultConfig::default()
            },
            ..SimConfig::default()
        },
    };
    let sim = match KubeSim::start(options) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kube-sim: {e}");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = sim.write_kubeconfig(&args.kubeconfig) {
        eprintln!("kube-sim: writing {}: {e}", args.kubeconfig.display());
        return ExitCode::from(1);
    }
    println!("kube-sim ready on {}", sim.url());
    let signals = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let Ok(signals) = signals else {
        eprintln!("kube-sim: cannot start the signal handler");
        return ExitCode::from(1);
    };
    signals.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
    });
    sim.shutdown();
    ExitCode::SUCCESS
}
