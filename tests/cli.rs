//! The command line contract (operations.md §1.2–1.5, docs/decisions.md 11): runs the
//! built binary and calls the library parser directly.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Output};

use stageset_controller::config::{
    self, CertMode, Config, ConfigError, CrdsOutput, InventoryMode, Invocation, SseMode,
};

const BIN: &str = env!("CARGO_BIN_EXE_stageset-controller");
/// Without a cluster to talk to, the controller stops at start-up (exit 1).
const NOT_IMPLEMENTED: &str = "loading the kubeconfig failed";

/// The 44 upstream flags (operations.md §1.4) with their help defaults.
const UPSTREAM_FLAGS: &[(&str, &str)] = &[
    ("health-probe-bind-address", "[default: :8081]"),
    ("leader-elect", "[default: false]"),
    ("watch-namespaces", "[default: \"\"]"),
    ("inventory-shard-cap", "[default: 5000]"),
    ("allowed-action-hosts", "default: none"),
    ("no-cross-namespace-refs", "[default: false]"),
    ("object-level-kms", "[default: false]"),
    ("require-verified-migration-sources", "[default: false]"),
    ("require-pinned-migration-sources", "[default: false]"),
    ("require-image-verification", "[default: false]"),
    ("image-verification-trusted-root", "[default: \"\"]"),
    ("image-verification-insecure-registry", "default: none"),
    ("default-interval", "[default: 10m]"),
    ("max-teardown-wait", "[default: 1h]"),
    ("rollback-store-path", "[default: \"\"]"),
    ("rollback-store-s3-endpoint", "[default: \"\"]"),
    ("rollback-store-s3-bucket", "[default: \"\"]"),
    ("rollback-store-s3-prefix", "[default: \"\"]"),
    ("rollback-store-s3-region", "[default: \"\"]"),
    ("rollback-store-s3-use-ssl", "[default: true]"),
    ("rollback-store-s3-access-key", "[default: \"\"]"),
    ("rollback-store-s3-secret-key", "[default: \"\"]"),
    ("rollback-store-s3-session-token", "[default: \"\"]"),
    ("rollback-store-s3-anonymous", "[default: false]"),
    ("rollback-store-s3-sse", "[default: s3]"),
    ("rollback-store-s3-sse-kms-key", "[default: \"\"]"),
    ("metrics-bind-address", "[default: :8080]"),
    ("tracing-endpoint", "[default: \"\"]"),
    ("tracing-insecure", "[default: false]"),
    ("tracing-sample-ratio", "[default: 1.0]"),
    ("enable-webhook", "[default: true]"),
    ("webhook-cert-mode", "[default: cert-manager]"),
    (
        "webhook-cert-dir",
        "[default: /tmp/k8s-webhook-server/serving-certs]",
    ),
    ("webhook-port", "[default: 9443]"),
    ("webhook-cert-validity", "[default: 8760h]"),
    (
        "webhook-service-name",
        "[default: stageset-controller-webhook]",
    ),
    ("webhook-service-namespace", "[default: \"\"]"),
    ("webhook-validating-config-name", "[default: \"\"]"),
    ("gate-bind-address", "[default: :8082]"),
    ("enable-mcp", "[default: false]"),
    ("mcp-bind-address", "[default: :8084]"),
    ("mcp-allow-mutations", "[default: false]"),
    ("log-level", "[default: info]"),
    ("log-format", "[default: json]"),
];

/// Our additions (docs/decisions.md 3-6, 10 and the controller-runtime logging flags).
const ADDED_FLAGS: &[(&str, &str)] = &[
    ("concurrent", "[default: 4]"),
    ("inventory-mode", "[default: hybrid]"),
    ("runbook-base-url", "[default: \"\"]"),
    ("rollback-store-retention", "[default: 0]"),
    ("events-addr", "[default: \"\"]"),
    ("zap-log-level", "default: unset"),
    ("zap-encoder", "default: unset"),
    ("zap-devel", "[default: false]"),
    ("zap-stacktrace-level", "default: unset, i.e. panic"),
];

/// Flags that work today; every other flag is "not supported yet".
const SUPPORTED: &[&str] = &[
    "leader-elect",
    "require-verified-migration-sources",
    "require-pinned-migration-sources",
    "allowed-action-hosts",
    "concurrent",
    "watch-namespaces",
    "inventory-shard-cap",
    "no-cross-namespace-refs",
    "default-interval",
    "runbook-base-url",
    "allow-loopback-artifacts",
    "inventory-mode",
    "max-teardown-wait",
    "health-probe-bind-address",
    "metrics-bind-address",
    "gate-bind-address",
    "enable-mcp",
    "mcp-bind-address",
    "mcp-allow-mutations",
    "enable-webhook",
    "webhook-port",
    "webhook-cert-dir",
    "webhook-cert-mode",
    "webhook-cert-validity",
    "webhook-service-name",
    "webhook-service-namespace",
    "webhook-validating-config-name",
    "events-addr",
    "tracing-endpoint",
    "tracing-insecure",
    "tracing-sample-ratio",
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
    "log-level",
    "log-format",
    "zap-log-level",
    "zap-encoder",
    "zap-devel",
    "zap-stacktrace-level",
];

fn run(args: &[&str]) -> Output {
    run_env(args, &[])
}

fn run_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    // No cluster: the controller's start-up fails at loading the kubeconfig.
    cmd.args(args)
        .env_remove(config::WATCH_NAMESPACES_ENV)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("KUBECONFIG", "/nonexistent/stageset-test-kubeconfig")
        .env("HOME", "/nonexistent");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run the binary")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// Asserts exit 2 with exactly one stderr line, prefixed and containing every needle.
fn assert_one_line_error(args: &[&str], needles: &[&str]) {
    let out = run(args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert_eq!(
        err.lines().count(),
        1,
        "{args:?}: want one line, got {err:?}"
    );
    assert!(err.starts_with("stageset-controller: "), "{args:?}: {err}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: {err:?} lacks {n:?}");
    }
    assert!(stdout(&out).is_empty(), "{args:?}");
}

/// Asserts a usage error: exit 2, first stderr line prefixed and containing every needle.
fn assert_usage_error(args: &[&str], needles: &[&str]) {
    let out = run(args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert!(err.starts_with("stageset-controller: "), "{args:?}: {err}");
    let first = err.lines().next().unwrap();
    for n in needles {
        assert!(first.contains(n), "{args:?}: {first:?} lacks {n:?}");
    }
}

/// Parses and validates without the not-supported-yet gate.
fn config_env(args: &[&str], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let lookup = move |key: &str| env.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    let argv = std::iter::once("stageset-controller").chain(args.iter().copied());
    match config::parse_from_ignoring_unsupported(argv, &lookup)? {
        Invocation::Run(c) => Ok(*c),
        other => panic!("{args:?}: not a run: {other:?}"),
    }
}

fn config(args: &[&str]) -> Config {
    config_env(args, &[]).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn parse(args: &[&str]) -> Result<Invocation, ConfigError> {
    let argv = std::iter::once("stageset-controller").chain(args.iter().copied());
    config::parse_from(argv, &|_| None)
}

fn json_lines(text: &str) -> Vec<serde_json::Map<String, serde_json::Value>> {
    text.lines()
        .map(|l| match serde_json::from_str(l) {
            Ok(serde_json::Value::Object(m)) => m,
            other => panic!("not a JSON object line: {l:?} ({other:?})"),
        })
        .collect()
}

// --- help -------------------------------------------------------------------------

#[test]
fn help_lists_every_flag_with_its_default() {
    assert_eq!(UPSTREAM_FLAGS.len(), 44);
    for args in [
        &["--help"][..],
        &["-help"],
        &["--help", "--nonsense-after-help"],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        let help = stdout(&out);
        // One block per flag: its header line up to the next header line, whitespace
        // normalised so the check does not depend on the terminal width.
        let mut blocks: Vec<String> = Vec::new();
        for line in help.lines() {
            let trimmed = line.trim_start();
            if line.starts_with(' ') && (trimmed.starts_with("--") || trimmed.starts_with("-h, ")) {
                blocks.push(String::new());
            } else if !line.starts_with(' ') && !line.is_empty() {
                blocks.push(String::new()); // a section heading ends the previous block
                continue;
            }
            if let Some(block) = blocks.last_mut() {
                block.push(' ');
                block.push_str(trimmed);
            }
        }
        let blocks: Vec<String> = blocks
            .iter()
            .map(|b| b.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        for (name, default) in UPSTREAM_FLAGS.iter().chain(ADDED_FLAGS) {
            let flag = format!("--{name}");
            let block = blocks
                .iter()
                .find(|b| b.starts_with(&format!("{flag} ")) || b.starts_with(&format!("{flag}[")))
                .unwrap_or_else(|| panic!("{flag} missing from --help"));
            assert!(
                block.contains(default),
                "{flag}: {default} not in {block:?}"
            );
        }
        assert!(
            !help.contains("allow-loopback-artifacts"),
            "the hidden flag is listed"
        );
        assert!(help.contains("STAGESET_WATCH_NAMESPACES"));
        assert!(help.contains("crds"));
    }
    let short = run(&["-h"]);
    assert_eq!(short.status.code(), Some(0));
    assert!(stdout(&short).contains("--webhook-cert-validity"));
}

#[test]
fn version_exits_zero() {
    let out = run(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn not_supported_table_is_every_flag_but_logging() {
    let expected: BTreeSet<&str> = UPSTREAM_FLAGS
        .iter()
        .chain(ADDED_FLAGS)
        .map(|(n, _)| *n)
        .chain(["allow-loopback-artifacts"])
        .filter(|n| !SUPPORTED.contains(n))
        .collect();
    let table: BTreeSet<&str> = config::not_supported_yet().iter().copied().collect();
    assert_eq!(table, expected);
}

// --- validation (operations.md §1.5 and our additions) ----------------------------

#[test]
fn every_validation_rule_is_one_line_naming_the_flag() {
    let cases: &[(&[&str], &[&str])] = &[
        // 1. bind addresses
        (
            &["--metrics-bind-address=abc"],
            &["--metrics-bind-address", "\"abc\""],
        ),
        (
            &["--metrics-bind-address", ":70000"],
            &["--metrics-bind-address", "\":70000\""],
        ),
        (&["--metrics-bind-address=:0"], &["--metrics-bind-address"]),
        (
            &["--health-probe-bind-address=localhost"],
            &["--health-probe-bind-address", "\"localhost\""],
        ),
        (
            &["--health-probe-bind-address=::1:80"],
            &["--health-probe-bind-address"],
        ),
        (
            &["--gate-bind-address=0"],
            &["--gate-bind-address", "\"0\""],
        ),
        (&["--gate-bind-address=:x"], &["--gate-bind-address"]),
        (
            &["--enable-mcp", "--mcp-bind-address="],
            &["--mcp-bind-address", "\"\""],
        ),
        (
            &["--enable-mcp=true", "--mcp-bind-address=0"],
            &["--mcp-bind-address"],
        ),
        // 2-7. numeric ranges
        (&["--webhook-port=0"], &["--webhook-port", "0"]),
        (&["--webhook-port=65536"], &["--webhook-port", "65536"]),
        (&["--webhook-port=-1"], &["--webhook-port", "-1"]),
        (
            &["--inventory-shard-cap=0"],
            &["--inventory-shard-cap", "0"],
        ),
        (&["--default-interval=0s"], &["--default-interval", "0s"]),
        (
            &["--default-interval", "-1m"],
            &["--default-interval", "-1m0s"],
        ),
        (
            &["--max-teardown-wait=-1s"],
            &["--max-teardown-wait", "-1s"],
        ),
        (
            &["--webhook-cert-validity=0"],
            &["--webhook-cert-validity", "0s"],
        ),
        (
            &["--tracing-sample-ratio=1.5"],
            &["--tracing-sample-ratio", "1.5"],
        ),
        (
            &["--tracing-sample-ratio", "-0.1"],
            &["--tracing-sample-ratio", "-0.1"],
        ),
        (
            &["--tracing-sample-ratio=NaN"],
            &["--tracing-sample-ratio", "NaN"],
        ),
        // 8. enumerations, case-sensitive
        (
            &["--webhook-cert-mode=Self-Signed"],
            &["--webhook-cert-mode", "\"Self-Signed\""],
        ),
        (
            &["--rollback-store-s3-sse="],
            &["--rollback-store-s3-sse", "\"\""],
        ),
        (
            &["--rollback-store-s3-sse=KMS"],
            &["--rollback-store-s3-sse", "\"KMS\""],
        ),
        (&["--log-level=INFO"], &["--log-level", "\"INFO\""]),
        (&["--log-level=verbose"], &["--log-level", "\"verbose\""]),
        (&["--log-format=yaml"], &["--log-format", "\"yaml\""]),
        // 9.
        (
            &["--mcp-allow-mutations"],
            &["--mcp-allow-mutations", "--enable-mcp"],
        ),
        // additions
        (&["--concurrent=0"], &["--concurrent", "0"]),
        (
            &["--inventory-mode=Hybrid"],
            &["--inventory-mode", "\"Hybrid\""],
        ),
        (
            &["--runbook-base-url=ftp://runbooks.example"],
            &["--runbook-base-url", "\"ftp://runbooks.example\""],
        ),
        (&["--runbook-base-url=runbooks"], &["--runbook-base-url"]),
        (&["--runbook-base-url=https://"], &["--runbook-base-url"]),
        (
            &["--rollback-store-retention=-1"],
            &["--rollback-store-retention", "-1"],
        ),
        (
            &["--events-addr=notification-controller:80"],
            &["--events-addr", "\"notification-controller:80\""],
        ),
        (&["--zap-log-level=0"], &["--zap-log-level", "\"0\""]),
        (&["--zap-log-level=warn"], &["--zap-log-level", "\"warn\""]),
        (&["--zap-encoder=text"], &["--zap-encoder", "\"text\""]),
        (
            &["--zap-stacktrace-level=warn"],
            &["--zap-stacktrace-level", "\"warn\""],
        ),
    ];
    for (args, needles) in cases {
        assert_one_line_error(args, needles);
    }
}

#[test]
fn the_first_failing_rule_wins() {
    // Rule 1 (bind address) is checked before rule 2 (port) and rule 8 (enum).
    assert_one_line_error(
        &[
            "--log-level=loud",
            "--webhook-port=0",
            "--gate-bind-address=0",
        ],
        &["--gate-bind-address"],
    );
    assert_one_line_error(
        &["--log-level=loud", "--webhook-port=0"],
        &["--webhook-port"],
    );
    // Validation runs before the not-supported-yet check.
    assert_one_line_error(
        &["--object-level-kms=true", "--concurrent=0"],
        &["--concurrent"],
    );
}

#[test]
fn bind_address_special_values() {
    let c = config(&[
        "--metrics-bind-address=0",
        "--health-probe-bind-address=0",
        "--gate-bind-address=",
    ]);
    assert_eq!(c.metrics_bind_address, None);
    assert_eq!(c.health_probe_bind_address, None);
    assert_eq!(c.gate_bind_address, None);
    let c = config(&[
        "--metrics-bind-address=",
        "--health-probe-bind-address=",
        "--gate-bind-address=[::1]:9",
    ]);
    assert_eq!(c.metrics_bind_address.as_deref(), Some(":8080"));
    assert_eq!(c.health_probe_bind_address, None);
    assert_eq!(c.gate_bind_address.as_deref(), Some("[::1]:9"));
    let c = config(&[
        "--metrics-bind-address=127.0.0.1:9090",
        "--health-probe-bind-address",
        "0.0.0.0:8081",
    ]);
    assert_eq!(c.metrics_bind_address.as_deref(), Some("127.0.0.1:9090"));
    assert_eq!(c.health_probe_bind_address.as_deref(), Some("0.0.0.0:8081"));
    // The MCP address is only checked (and only used) with --enable-mcp.
    assert_eq!(
        config(&["--mcp-bind-address=garbage"]).mcp_bind_address,
        None
    );
    let c = config(&["--enable-mcp", "--mcp-allow-mutations"]);
    assert_eq!(c.mcp_bind_address.as_deref(), Some(":8084"));
    assert!(c.mcp_allow_mutations);
}

#[test]
fn typed_effective_values() {
    let c = config(&[
        "--max-teardown-wait=0",
        "--webhook-cert-mode=self-signed",
        "--rollback-store-s3-sse=kms",
        "--inventory-mode=applyset",
        "--runbook-base-url=https://runbooks.example/base/",
        "--rollback-store-s3-prefix=snapshots//",
        "--rollback-store-s3-secret-key=hunter2",
        "--events-addr=http://notification-controller.flux-system/",
        "--rollback-store-retention=3",
        "--tracing-sample-ratio=0.25",
    ]);
    assert_eq!(c.max_teardown_wait.to_string(), "1h0m0s");
    assert_eq!(c.webhook_cert_mode, CertMode::SelfSigned);
    assert_eq!(c.rollback_store_s3_sse, SseMode::Kms);
    assert_eq!(c.inventory_mode, InventoryMode::ApplySet);
    assert_eq!(
        c.runbook_url("HealthCheckFailed").as_deref(),
        Some("https://runbooks.example/base/healthcheckfailed/")
    );
    assert_eq!(c.rollback_store_s3_prefix, "snapshots");
    assert_eq!(
        c.rollback_store_s3_secret_key.as_ref().map(|s| s.expose()),
        Some("hunter2")
    );
    assert!(!format!("{c:?}").contains("hunter2"));
    assert!(
        !serde_json::Value::Object(c.flag_values())
            .to_string()
            .contains("hunter2")
    );
    assert_eq!(
        c.events_addr.as_deref(),
        Some("http://notification-controller.flux-system/")
    );
    assert_eq!(c.rollback_store_retention, 3);
    assert_eq!(c.tracing_sample_ratio, 0.25);
    let c = config(&["--runbook-base-url="]);
    assert_eq!(c.runbook_base_url, None);
    assert_eq!(c.runbook_url("Stalled"), None);
}

// --- Go flag syntax ---------------------------------------------------------------

#[test]
fn go_boolean_forms() {
    for (arg, want) in [
        ("--leader-elect", true),
        ("--leader-elect=true", true),
        ("--leader-elect=T", true),
        ("--leader-elect=t", true),
        ("--leader-elect=1", true),
        ("--leader-elect=TRUE", true),
        ("--leader-elect=True", true),
        ("--leader-elect=false", false),
        ("--leader-elect=F", false),
        ("--leader-elect=0", false),
        ("--leader-elect=FALSE", false),
        ("--leader-elect=False", false),
        ("-leader-elect", true),
        ("-leader-elect=f", false),
    ] {
        assert_eq!(config(&[arg]).leader_elect, want, "{arg}");
    }
    assert!(!config(&["--enable-webhook=false"]).enable_webhook);
    assert!(!config(&["--rollback-store-s3-use-ssl=0"]).rollback_store_s3_use_ssl);

    // The binary: the default value runs (and fails honestly), a stray value is a usage error.
    assert_eq!(run(&["--leader-elect=false"]).status.code(), Some(1));
    assert_usage_error(
        &["--leader-elect", "false"],
        &["false", "--leader-elect=false"],
    );
    assert_usage_error(&["--leader-elect", "true"], &["--leader-elect=true"]);
    assert_usage_error(&["--leader-elect=yes"], &["yes", "--leader-elect"]);
    assert_usage_error(&["--leader-elect="], &["--leader-elect"]);
}

#[test]
fn single_dash_long_flags() {
    let out = run(&["-log-level=debug"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let lines = json_lines(&stderr(&out));
    assert!(
        lines
            .iter()
            .any(|l| l["level"] == "debug" && l["msg"] == "effective configuration")
    );

    let c = config(&[
        "-log-level",
        "warn",
        "-webhook-port",
        "8443",
        "-gate-bind-address=",
    ]);
    assert_eq!(c.log_level, config::LogLevel::Warn);
    assert_eq!(c.webhook_port, 8443);
    assert_eq!(c.gate_bind_address, None);
    // The token after a value flag is its value, even when it starts with '-' (Go semantics).
    assert_one_line_error(
        &["--max-teardown-wait", "-5m"],
        &["--max-teardown-wait", "-5m0s"],
    );
    assert_usage_error(&["-no-such-flag"], &[]);
}

#[test]
fn last_occurrence_wins_and_lists_append() {
    let c = config(&[
        "--log-level=error",
        "--log-level",
        "debug",
        "--webhook-port=1",
        "-webhook-port=2",
        "--leader-elect",
        "--leader-elect=false",
        "--default-interval=1m",
        "--default-interval=2m",
        "--allowed-action-hosts=*.example.com",
        "--allowed-action-hosts",
        "prometheus.monitoring.svc:9090",
        "-allowed-action-hosts=a,b",
        "--image-verification-insecure-registry=registry.local:5000",
        "--image-verification-insecure-registry",
        "kind-registry:5000",
    ]);
    assert_eq!(c.log_level, config::LogLevel::Debug);
    assert_eq!(c.webhook_port, 2);
    assert!(!c.leader_elect);
    assert_eq!(c.default_interval.to_string(), "2m0s");
    assert_eq!(
        c.allowed_action_hosts,
        ["*.example.com", "prometheus.monitoring.svc:9090", "a,b"]
    );
    assert_eq!(
        c.image_verification_insecure_registry,
        ["registry.local:5000", "kind-registry:5000"]
    );
    assert!(config(&[]).allowed_action_hosts.is_empty());
}

#[test]
fn explicitly_empty_values() {
    let c = config(&[
        "--gate-bind-address=",
        "--webhook-service-namespace=",
        "--tracing-endpoint",
        "",
    ]);
    assert_eq!(c.gate_bind_address, None);
    assert_eq!(c.webhook_service_namespace, None);
    assert_eq!(c.tracing_endpoint, None);
}

#[test]
fn go_durations() {
    let c = config(&[
        "--default-interval=1h30m",
        "--webhook-cert-validity=8760h",
        "--max-teardown-wait=1.5h",
    ]);
    assert_eq!(c.default_interval.to_std().unwrap().as_secs(), 5400);
    assert_eq!(
        c.webhook_cert_validity.to_std().unwrap().as_secs(),
        8760 * 3600
    );
    assert_eq!(c.max_teardown_wait.to_std().unwrap().as_secs(), 5400);
    let c = config(&["--default-interval", "500ms"]);
    assert_eq!(c.default_interval.to_std().unwrap().as_millis(), 500);

    for bad in ["1d", "8 hours", "10", "", "1h-5m"] {
        let arg = format!("--default-interval={bad}");
        assert_usage_error(&[&arg], &["--default-interval", &format!("'{bad}'")]);
    }
    assert_usage_error(
        &["--webhook-cert-validity", "365d"],
        &["--webhook-cert-validity", "'365d'"],
    );
}

#[test]
fn go_integers() {
    assert_eq!(config(&["--webhook-port=0x10"]).webhook_port, 16);
    assert_eq!(
        config(&["--inventory-shard-cap=010"]).inventory_shard_cap,
        8
    );
    assert_eq!(
        config(&["--inventory-shard-cap=1_000"]).inventory_shard_cap,
        1000
    );
    assert_eq!(config(&["--concurrent=0b11"]).concurrent, 3);
    assert_eq!(
        config(&["--rollback-store-retention=0o17"]).rollback_store_retention,
        15
    );
    assert_eq!(config(&["--webhook-port", "+9443"]).webhook_port, 9443);
    for bad in ["08", "1__0", "ten", "1.5", "99999999999999999999"] {
        let arg = format!("--webhook-port={bad}");
        assert_usage_error(&[&arg], &["--webhook-port", &format!("'{bad}'")]);
    }
}

#[test]
fn floats() {
    assert_eq!(
        config(&["--tracing-sample-ratio=0"]).tracing_sample_ratio,
        0.0
    );
    assert_eq!(
        config(&["--tracing-sample-ratio", "1e-1"]).tracing_sample_ratio,
        0.1
    );
    assert_usage_error(
        &["--tracing-sample-ratio=half"],
        &["--tracing-sample-ratio", "'half'"],
    );
}

#[test]
fn unknown_flags_and_arguments_are_usage_errors() {
    assert_usage_error(&["--kubeconfig=/tmp/x"], &["--kubeconfig"]);
    assert_usage_error(&["--zap-time-encoding=iso8601"], &["--zap-time-encoding"]);
    assert_usage_error(&["stray"], &["stray"]);
    assert_usage_error(&["--webhook-port"], &["--webhook-port"]);
}

// --- environment ------------------------------------------------------------------

#[test]
fn watch_namespaces_env_fallback() {
    let env = [(config::WATCH_NAMESPACES_ENV, " team-a, team-b,,team-c, ")];
    let ns = |args: &[&str], env: &[(&str, &str)]| config_env(args, env).unwrap().watch_namespaces;
    assert_eq!(ns(&[], &env), ["team-a", "team-b", "team-c"]);
    assert_eq!(
        ns(&["--watch-namespaces="], &env),
        ["team-a", "team-b", "team-c"]
    );
    assert_eq!(
        ns(&["--watch-namespaces=  "], &env),
        ["team-a", "team-b", "team-c"]
    );
    assert_eq!(ns(&["--watch-namespaces=ops"], &env), ["ops"]);
    assert_eq!(ns(&["--watch-namespaces", " a,,b, "], &[]), ["a", "b"]);
    assert_eq!(ns(&["--watch-namespaces= , ,"], &env), Vec::<String>::new());
    assert!(ns(&[], &[]).is_empty());
    assert!(ns(&[], &[(config::WATCH_NAMESPACES_ENV, "")]).is_empty());

    // The real binary reads the real environment (and, without a cluster, stops
    // at loading the kubeconfig rather than refusing the flag).
    let out = run_env(&[], &[(config::WATCH_NAMESPACES_ENV, "team-a")]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let out = run_env(&[], &[(config::WATCH_NAMESPACES_ENV, " , ")]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}

// --- not supported yet ------------------------------------------------------------

/// A non-default value for every flag whose feature is not built yet.
const NON_DEFAULT: &[(&str, &str)] = &[
    ("object-level-kms", "--object-level-kms=true"),
    ("require-image-verification", "--require-image-verification"),
    (
        "image-verification-trusted-root",
        "--image-verification-trusted-root=/etc/root.json",
    ),
    (
        "image-verification-insecure-registry",
        "--image-verification-insecure-registry=reg:5000",
    ),
];

#[test]
fn every_unsupported_flag_is_refused_at_a_non_default_value() {
    let table: BTreeSet<&str> = config::not_supported_yet().iter().copied().collect();
    let covered: BTreeSet<&str> = NON_DEFAULT.iter().map(|(n, _)| *n).collect();
    assert_eq!(table, covered);
    for (name, arg) in NON_DEFAULT {
        let args = vec![*arg];
        assert_eq!(
            parse(&args),
            Err(ConfigError::NotSupportedYet(name)),
            "{args:?}"
        );
    }
}

#[test]
fn not_supported_yet_in_the_binary() {
    let (name, arg) = NON_DEFAULT[0];
    let out = run(&[arg]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        format!("stageset-controller: --{name} is not supported yet\n")
    );
    assert_one_line_error(
        &["--object-level-kms=true"],
        &["--object-level-kms is not supported yet"],
    );

    // The same flags at values whose effective meaning is the default are fine.
    for args in [
        &["--leader-elect=false"][..],
        &["--leader-elect"],
        &["--webhook-port=9443"],
        &["--webhook-port=0x24E3"],
        &["--default-interval=600s"],
        &["--max-teardown-wait=0"],
        &["--metrics-bind-address="],
        &[
            "--concurrent=4",
            "--inventory-mode=hybrid",
            "--rollback-store-retention=0",
        ],
        &["--mcp-bind-address=:9999"],
        &["--rollback-store-s3-prefix=/"],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(NOT_IMPLEMENTED), "{args:?}");
    }
}

// --- subcommands and running ------------------------------------------------------

#[test]
fn crds_subcommand_writes_five_files() {
    let dir = std::env::temp_dir().join(format!("stageset-cli-crds-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = run(&["crds", "--output-dir", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let printed: Vec<PathBuf> = stdout(&out).lines().map(PathBuf::from).collect();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut sorted = printed.clone();
    sorted.sort();
    assert_eq!(files.len(), 5, "{files:?}");
    assert_eq!(sorted, files);
    for f in &files {
        assert!(f.extension().is_some_and(|e| e == "yaml"), "{f:?}");
        assert!(
            std::fs::read_to_string(f)
                .unwrap()
                .contains("kind: CustomResourceDefinition")
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();

    let out = run(&["crds", "-stdout"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out)
            .matches("kind: CustomResourceDefinition")
            .count(),
        5
    );

    assert_eq!(
        parse(&["crds"]),
        Ok(Invocation::Crds(CrdsOutput::Dir(PathBuf::from(
            "charts/stageset-controller/files/crds"
        ))))
    );
    assert_usage_error(&["crds", "--stdout", "--output-dir=/tmp/x"], &[]);
}

#[test]
fn running_with_defaults_fails_honestly_with_json_logs() {
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).is_empty());
    let text = stderr(&out);
    let lines = json_lines(&text);
    assert_eq!(lines.len(), 2, "{text}");
    for (raw, l) in text.lines().zip(&lines) {
        for key in ["level", "ts", "logger", "msg"] {
            assert!(l.contains_key(key), "{key} missing: {raw}");
        }
        // zap's key order: level, ts, logger, msg, then the fields.
        let at = |k: &str| raw.find(&format!("\"{k}\":")).unwrap();
        assert!(raw.starts_with("{\"level\":"), "{raw}");
        assert!(at("ts") < at("logger") && at("logger") < at("msg"), "{raw}");
    }
    assert_eq!(lines[0]["level"], "info");
    assert_eq!(lines[0]["logger"], "setup");
    assert_eq!(lines[0]["msg"], "starting stageset-controller");
    assert_eq!(lines[0]["version"], env!("CARGO_PKG_VERSION"));
    assert!(lines[0]["commit"].is_string());
    assert_eq!(lines[1]["level"], "error");
    assert_eq!(lines[1]["msg"], NOT_IMPLEMENTED);
}

#[test]
fn text_logs_with_devel_or_console() {
    for args in [
        &["--zap-devel"][..],
        &["--log-format=text"],
        &["--zap-encoder=console"],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let text = stderr(&out);
        assert!(text.contains(NOT_IMPLEMENTED), "{args:?}: {text}");
        assert!(
            text.lines()
                .all(|l| serde_json::from_str::<serde_json::Value>(l).is_err()),
            "{text}"
        );
    }
    // --zap-devel logs at debug unless a level is given; --zap-encoder beats --log-format.
    assert!(stderr(&run(&["--zap-devel"])).contains("effective configuration"));
    assert!(
        !stderr(&run(&["--zap-devel", "--log-level=info"])).contains("effective configuration")
    );
    let out = run(&[
        "--log-format=text",
        "--zap-encoder=json",
        "--zap-log-level=error",
    ]);
    let lines = json_lines(&stderr(&out));
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["level"], "error");
}

/// The README's bullet list between `<!-- {marker}:start -->` and
/// `<!-- {marker}:end -->`, each entry without its backticks.
fn readme_list(marker: &str) -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md exists");
    let start = readme
        .find(&format!("<!-- {marker}:start -->"))
        .expect("start marker");
    let end = readme
        .find(&format!("<!-- {marker}:end -->"))
        .expect("end marker");
    readme[start..end]
        .lines()
        .filter_map(|l| l.strip_prefix("- `"))
        .map(|l| l.trim_end_matches('`').to_string())
        .collect()
}

/// The README lists exactly the flags the binary refuses as not supported yet.
#[test]
fn readme_lists_the_not_supported_flags() {
    let expected: Vec<String> = stageset_controller::config::not_supported_yet()
        .iter()
        .map(|s| format!("--{s}"))
        .collect();
    assert_eq!(
        readme_list("not-supported-yet"),
        expected,
        "update the list in README.md"
    );
}

/// The README lists exactly the spec fields admission refuses as not
/// supported yet.
#[test]
fn readme_lists_the_not_supported_fields() {
    let expected: Vec<String> = stageset_controller::validate::unsupported::NOT_SUPPORTED_YET
        .iter()
        .map(|r| r.field.to_string())
        .collect();
    assert_eq!(
        readme_list("not-supported-fields"),
        expected,
        "update the list in README.md"
    );
}

/// `stageset-controller build DIR --path P --substitute K=V` prints what a stage
/// would apply (kustomize + strict substitution), the same objects `kubectl
/// kustomize` builds before substitution; errors go to stderr with exit 1.
#[test]
fn build_prints_what_a_stage_would_apply() {
    let dir = tempfile::tempdir().unwrap();
    let write = |rel: &str, text: &str| {
        let p = dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    write(
        "base/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  env: ${ENV}\n  literal: $${ENV}\n",
    );
    write("base/kustomization.yaml", "resources: [cm.yaml]\n");
    write(
        "app/kustomization.yaml",
        "namespace: team\nnamePrefix: prod-\nresources: [../base]\n",
    );
    let root = dir.path().to_str().unwrap();
    let out = run(&["build", root, "--path", "app", "--substitute", "ENV=prod"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let docs: Vec<serde_json::Value> = serde_yaml_ng::Deserializer::from_str(&stdout(&out))
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    assert_eq!(docs.len(), 1, "{}", stdout(&out));
    assert_eq!(docs[0]["metadata"]["name"], "prod-settings");
    assert_eq!(docs[0]["metadata"]["namespace"], "team");
    assert_eq!(docs[0]["data"]["env"], "prod");
    assert_eq!(docs[0]["data"]["literal"], "${ENV}");

    // Strict substitution: an unset variable fails with the variable's name.
    let out = run(&["build", root, "--path", "app", "--substitute", "OTHER=x"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("ENV"), "{}", stderr(&out));
    // A path outside the artifact is refused.
    let out = run(&["build", root, "--path", "../x"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("escapes the artifact root"),
        "{}",
        stderr(&out)
    );
    // A malformed --substitute is a usage error.
    let out = run(&["build", root, "--substitute", "novalue"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("NAME=VALUE"), "{}", stderr(&out));
}

/// `build --stageset FILE --stage NAME` takes the stage's path, patches and
/// inline variables from the StageSet, like the controller; `--substitute`
/// overrides inline values.
#[test]
fn build_renders_a_stage_of_a_stageset_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let art = dir.path().join("artifact");
    std::fs::create_dir_all(art.join("deploy")).unwrap();
    std::fs::write(
        art.join("deploy/web.yaml"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: ${NS}\nspec:\n  replicas: 1\n  template:\n    spec:\n      containers:\n      - name: web\n        image: web:${TAG}\n",
    )
    .unwrap();
    let ss = dir.path().join("stageset.yaml");
    std::fs::write(
        &ss,
        "apiVersion: stages.metio.wtf/v1\nkind: StageSet\nmetadata:\n  name: shop\n  namespace: shop\nspec:\n  stages:\n  - name: prod\n    sourceRef: {kind: ExternalArtifact, name: web}\n    path: ./deploy\n    patches:\n    - patch: |\n        - op: replace\n          path: /spec/replicas\n          value: 3\n      target: {kind: Deployment}\n    postBuild:\n      substitute: {NS: shop, TAG: \"1.0\"}\n",
    )
    .unwrap();
    let (a, s) = (art.to_str().unwrap(), ss.to_str().unwrap());
    let out = run(&[
        "build",
        a,
        "--stageset",
        s,
        "--stage",
        "prod",
        "--substitute",
        "TAG=2.0",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value =
        serde_yaml_ng::from_str(stdout(&out).trim_start_matches("---\n")).unwrap();
    assert_eq!(doc["metadata"]["namespace"], "shop");
    assert_eq!(doc["spec"]["replicas"], 3);
    assert_eq!(
        doc["spec"]["template"]["spec"]["containers"][0]["image"],
        "web:2.0"
    );
    // An unknown stage is a usage error naming it.
    let out = run(&["build", a, "--stageset", s, "--stage", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no stage \"nope\""),
        "{}",
        stderr(&out)
    );
}

/// Multi-document YAML as a list of values (empty documents dropped).
fn yaml_docs(text: &str) -> Vec<serde_json::Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &serde_json::Value| !v.is_null())
        .collect()
}

/// `stageset-controller build overlay/` builds an overlay whose base is
/// `../base`, outside the directory given, exactly as `kubectl kustomize
/// overlay/` does (its default LoadRestrictionsRootOnly); a plain file
/// outside the overlay's directory is refused by both.
#[test]
fn build_takes_bases_outside_the_directory_like_kubectl_kustomize() {
    let dir = tempfile::tempdir().unwrap();
    let write = |rel: &str, text: &str| {
        let p = dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    write(
        "base/kustomization.yaml",
        "resources: [deploy.yaml]\nconfigMapGenerator:\n- name: web-config\n  literals: [mode=base]\n",
    );
    write(
        "base/deploy.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - name: web\n        image: web:1\n        envFrom:\n        - configMapRef: {name: web-config}\n",
    );
    write(
        "overlay/kustomization.yaml",
        "namespace: prod\nnamePrefix: prod-\nresources: [../base]\nimages:\n- name: web\n  newTag: \"2\"\n",
    );
    let overlay = dir.path().join("overlay");
    let out = run(&["build", overlay.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let kubectl = Command::new("kubectl")
        .arg("kustomize")
        .arg(&overlay)
        .output()
        .expect("kubectl runs (scripts/test.sh installs it)");
    assert!(kubectl.status.success(), "{}", stderr(&kubectl));
    // The same objects; kubectl prints them in its own kind order.
    let key = |v: &serde_json::Value| v["kind"].as_str().unwrap_or_default().to_owned();
    let mut ours = yaml_docs(&stdout(&out));
    let mut theirs = yaml_docs(&stdout(&kubectl));
    ours.sort_by_key(key);
    theirs.sort_by_key(key);
    assert_eq!(ours, theirs);
    assert_eq!(ours.len(), 2, "{}", stdout(&out));
    assert_eq!(
        ours[1]["spec"]["template"]["spec"]["containers"][0]["image"],
        "web:2"
    );

    // A resource file beside the base, named from the overlay: refused.
    write(
        "base/extra.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra\n",
    );
    write(
        "overlay/kustomization.yaml",
        "resources: [../base, ../base/extra.yaml]\n",
    );
    let out = run(&["build", overlay.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim_end(),
        "stageset-controller: kustomize build of . failed: kustomization.yaml: path \"../base/extra.yaml\" is outside the kustomization directory \".\""
    );
    let kubectl = Command::new("kubectl")
        .arg("kustomize")
        .arg(&overlay)
        .output()
        .expect("kubectl runs");
    assert!(!kubectl.status.success(), "kubectl refuses it too");
}

/// `stageset-controller build DIR | kubectl create -f -` works: strings that
/// a YAML 1.1 reader takes for booleans, numbers, timestamps or null (`yes`,
/// `on`, `0x1F`, `1:20`, `2001-12-14`, `~`, an empty string) are quoted, so
/// kubectl decodes the objects with the same strings. kubectl needs an API
/// server for discovery even with `--dry-run=client`: kube-sim is it.
#[test]
fn build_output_is_read_by_kubectl_as_the_same_strings() {
    let dir = tempfile::tempdir().unwrap();
    let art = dir.path().join("artifact");
    std::fs::create_dir_all(&art).unwrap();
    std::fs::write(
        art.join("kustomization.yaml"),
        "resources: [cm.yaml]\nlabels:\n- pairs: {enabled: \"yes\", power: \"on\"}\n",
    )
    .unwrap();
    std::fs::write(
        art.join("cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: tricky\n  annotations: {since: \"2001-12-14\", empty: \"\"}\ndata:\n  hex: \"0x1F\"\n  sexagesimal: \"1:20\"\n  tilde: \"~\"\n  \"on\": \"off\"\n  version: \"1.26\"\n  text: |\n    yes\n    no\n",
    )
    .unwrap();
    let out = run(&["build", art.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));

    let sim = kube_sim::KubeSim::start(kube_sim::Options::default()).expect("kube-sim starts");
    let kubeconfig = dir.path().join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig).unwrap();
    let mut kubectl = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--cache-dir")
        .arg(dir.path().join("cache"))
        .args(["create", "--dry-run=client", "-o", "json", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl runs (scripts/test.sh installs it)");
    use std::io::Write as _;
    kubectl
        .stdin
        .take()
        .unwrap()
        .write_all(&out.stdout)
        .unwrap();
    let created = kubectl.wait_with_output().unwrap();
    assert!(
        created.status.success(),
        "kubectl refused our output: {}\n{}",
        stderr(&created),
        stdout(&out)
    );
    let cm: serde_json::Value = serde_json::from_slice(&created.stdout).unwrap();
    assert_eq!(cm["kind"], "ConfigMap");
    assert_eq!(
        cm["metadata"]["labels"],
        serde_json::json!({"enabled": "yes", "power": "on"})
    );
    assert_eq!(
        cm["metadata"]["annotations"],
        serde_json::json!({"since": "2001-12-14", "empty": ""})
    );
    assert_eq!(
        cm["data"],
        serde_json::json!({
            "hex": "0x1F",
            "sexagesimal": "1:20",
            "tilde": "~",
            "on": "off",
            "version": "1.26",
            "text": "yes\nno\n",
        })
    );
}

/// The README's first command: `stageset-controller dev` rolls the sample
/// release out on the embedded cluster and prints the listeners it serves.
#[test]
fn dev_rolls_out_the_sample_release() {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(BIN)
        .arg("dev")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("dev starts");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let mut seen = Vec::new();
    let done = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let finished = line.contains("Ready=True Succeeded");
                seen.push(line);
                if finished {
                    break true;
                }
            }
            Err(_) => break false,
        }
    };
    // The dev cluster admits StageSets through the controller's webhook (TLS,
    // self-signed CA published into the webhook configuration): real kubectl
    // gets an invalid one denied.
    let denial = seen
        .iter()
        .find_map(|l| l.strip_prefix("kubeconfig: "))
        .map(|kubeconfig| {
            let dir = tempfile::tempdir().unwrap();
            let manifest = dir.path().join("bad.yaml");
            std::fs::write(
                &manifest,
                "apiVersion: stages.metio.wtf/v1\nkind: StageSet\nmetadata:\n  name: twice\n  namespace: default\nspec:\n  stages:\n  - name: a\n    sourceRef: {name: first}\n  - name: a\n    sourceRef: {name: second}\n",
            )
            .unwrap();
            std::process::Command::new("kubectl")
                .args(["--kubeconfig", kubeconfig, "apply", "-f"])
                .arg(&manifest)
                .output()
                .expect("kubectl runs (scripts/test.sh installs it)")
        });
    let _ = child.kill();
    let _ = child.wait();
    assert!(done, "dev did not finish the rollout:\n{}", seen.join("\n"));
    let denial = denial.expect("dev printed its kubeconfig");
    let stderr_text = String::from_utf8_lossy(&denial.stderr);
    assert!(!denial.status.success(), "an invalid StageSet was admitted");
    assert!(
        stderr_text.contains("denied the request"),
        "not denied by the webhook: {stderr_text}"
    );
    for prefix in [
        "kube-sim: https://",
        "kubeconfig: ",
        "gate: http://",
        "metrics: http://",
        "health: http://",
    ] {
        assert!(
            seen.iter().any(|l| l.starts_with(prefix)),
            "no {prefix:?} line:\n{}",
            seen.join("\n")
        );
    }
}
