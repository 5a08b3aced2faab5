//! Unit tests of validation and the typed configuration; the Go syntax is tested in
//! `goflags.rs`, the whole command line in `tests/cli.rs`.

use super::*;

fn run(args: &[&str]) -> Result<Config, ConfigError> {
    let argv = std::iter::once(PROGRAM).chain(args.iter().copied());
    match parse_from_ignoring_unsupported(argv, &|_| None)? {
        Invocation::Run(c) => Ok(*c),
        other => panic!("not a run: {other:?}"),
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
    // No runbook links unless asked for (the production guide; the chart
    // sets controller.runbookBaseURL).
    assert_eq!(c.runbook_base_url, None);
    assert_eq!(c.runbook_url("RBACDenied"), None);
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
fn boolean_flags_are_go_bools() {
    let cmd = command();
    let mut bools = Vec::new();
    for arg in cmd.get_arguments().filter(|a| a.is_require_equals_set()) {
        let long = arg.get_long().unwrap();
        assert_eq!(arg.to_string(), format!("--{long}[=<BOOL>]"));
        assert_eq!(arg.get_num_args(), Some((0..=1).into()), "{long}");
        let default = arg.get_default_values()[0].to_str().unwrap();
        bools.push((long, default, arg.is_hide_set()));
    }
    let on = ["rollback-store-s3-use-ssl", "enable-webhook"];
    assert_eq!(bools.len(), 14, "{bools:?}");
    for (long, default, hidden) in bools {
        let want = if on.contains(&long) { "true" } else { "false" };
        assert_eq!(default, want, "{long}");
        assert_eq!(hidden, long == "allow-loopback-artifacts", "{long}");
    }
}

#[test]
fn allowed_action_hosts_are_go_globs() {
    let c = run(&[
        "--allowed-action-hosts=*.svc.cluster.local",
        "--allowed-action-hosts=hook?.example.com",
        "--allowed-action-hosts=[a-c].example.com",
        "--allowed-action-hosts=\\*.literal",
    ])
    .unwrap();
    assert_eq!(
        c.allowed_action_hosts,
        [
            "*.svc.cluster.local",
            "hook?.example.com",
            "[a-c].example.com",
            "\\*.literal"
        ]
    );
    // Supported: the parser with the not-supported-yet gate takes it.
    let argv = [PROGRAM, "--allowed-action-hosts=*.svc"];
    assert!(parse_from(argv, &|_| None).is_ok());

    for bad in ["[a-", "*.example.[com", "x\\", "[]", "[^].svc"] {
        let arg = format!("--allowed-action-hosts={bad}");
        let err = run(&["--allowed-action-hosts=*.ok", &arg]).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{bad}");
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!(
                "{PROGRAM}: invalid --allowed-action-hosts {bad:?}: syntax error in pattern"
            )),
            "{msg}"
        );
        assert!(!msg.contains('\n'), "{msg}");
    }
}
