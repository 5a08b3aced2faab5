//! Every runbook link the controller and the bundled chart hand out resolves
//! to a page under docs/runbooks/.
//!
//! The docs site serves `docs/runbooks/<slug>.md` at `<base>/<slug>/`, which
//! is the URL shape of both the Ready-message links
//! (`reconcile::status::decorate`) and the PrometheusRule's `runbook_url`
//! annotations.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use regex::Regex;
use stageset_controller::api::reasons::{FleetReason, StageSetReason};

/// Minimum number of lines a page needs to count as written.
const MIN_LINES: usize = 10;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn runbooks_dir() -> PathBuf {
    root().join("docs").join("runbooks")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Slugs linked from StageSet Ready messages.
fn ready_slugs() -> BTreeSet<String> {
    StageSetReason::ALL
        .iter()
        .filter(|r| r.has_runbook())
        .map(|r| r.runbook_slug())
        .collect()
}

/// FleetRollout Ready reasons that are failures (not linked by the
/// controller yet, but documented under `fleet-<reason>`).
fn fleet_slugs() -> BTreeSet<String> {
    FleetReason::ALL
        .iter()
        .filter(|r| !matches!(r, FleetReason::Progressing | FleetReason::Completed))
        .map(|r| format!("fleet-{}", r.as_str().to_ascii_lowercase()))
        .collect()
}

/// Slugs the bundled PrometheusRule links: every literal
/// `printf "%s/<slug>/"`, plus what `{{ $labels.reason | toLower }}` expands
/// to.
fn alert_slugs() -> BTreeSet<String> {
    let path = root().join("charts/stageset-controller/templates/prometheusrule.yaml");
    let template = read(&path);
    let literal = Regex::new(r#"printf\s+"%s/([a-z0-9-]+)/""#).unwrap();
    let mut slugs: BTreeSet<String> = literal
        .captures_iter(&template)
        .map(|c| c[1].to_string())
        .collect();
    assert!(
        slugs.len() >= 5,
        "expected the availability and gate alerts' runbook links in {}, found {slugs:?}",
        path.display()
    );

    let templated =
        Regex::new(r#"printf\s+"%s/\{\{\s*\$labels\.reason\s*\|\s*toLower\s*\}\}/""#).unwrap();
    if templated.is_match(&template) {
        // The alert reads `stageset_reconcile_total{reason}`, whose reason
        // label is a StageSetReason (`Metrics::reconcile_counted`); find the
        // reasons the expression filters out and link every other one.
        let excluded = Regex::new(r#"stageset_reconcile_total\{reason!~\\"([A-Za-z|]+)\\""#)
            .unwrap()
            .captures(&template)
            .map(|c| c[1].split('|').map(str::to_string).collect::<BTreeSet<_>>())
            .unwrap_or_default();
        for reason in StageSetReason::ALL {
            if !excluded.contains(reason.as_str()) {
                slugs.insert(reason.as_str().to_ascii_lowercase());
            }
        }
    }
    slugs
}

fn all_slugs() -> BTreeSet<String> {
    let mut all = ready_slugs();
    all.extend(alert_slugs());
    all.extend(fleet_slugs());
    all
}

#[test]
fn every_linked_runbook_has_a_page() {
    let dir = runbooks_dir();
    let mut problems = Vec::new();
    for slug in all_slugs() {
        let page = dir.join(format!("{slug}.md"));
        if !page.is_file() {
            problems.push(format!("{slug}: {} is missing", page.display()));
            continue;
        }
        let text = read(&page);
        let lines = text.lines().filter(|l| !l.trim().is_empty()).count();
        if !text.lines().any(|l| l.starts_with("# ")) {
            problems.push(format!("{slug}: no `# ` title"));
        }
        if lines < MIN_LINES {
            problems.push(format!(
                "{slug}: only {lines} non-blank lines (want {MIN_LINES})"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "runbooks:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn the_index_links_every_page() {
    let dir = runbooks_dir();
    let index = read(&dir.join("index.md"));
    let link = Regex::new(r"\]\(\.?/?([a-z0-9-]+)(?:\.md|/)\)").unwrap();
    let linked: BTreeSet<String> = link
        .captures_iter(&index)
        .map(|c| c[1].to_string())
        .collect();

    let mut pages = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
            if stem != "index" {
                pages.insert(stem);
            }
        }
    }
    let unlinked: Vec<_> = pages.difference(&linked).collect();
    assert!(
        unlinked.is_empty(),
        "docs/runbooks/index.md does not link {unlinked:?}"
    );
    let dangling: Vec<_> = linked.difference(&pages).collect();
    assert!(
        dangling.is_empty(),
        "docs/runbooks/index.md links missing pages {dangling:?}"
    );
    // Every linked slug is a page, so it is in the index too.
    let missing: Vec<_> = all_slugs()
        .into_iter()
        .filter(|s| !linked.contains(s))
        .collect();
    assert!(missing.is_empty(), "index.md lacks {missing:?}");
}

#[test]
fn the_fleet_slugs_are_the_failure_reasons() {
    let expected: BTreeSet<String> = [
        "Halted",
        "MembersUnassigned",
        "MembersContested",
        "InvalidSelector",
        "GateUnsupported",
        "InvalidSpec",
    ]
    .iter()
    .map(|r| format!("fleet-{}", r.to_ascii_lowercase()))
    .collect();
    assert_eq!(fleet_slugs(), expected);
}

#[test]
fn the_alert_links_are_extracted() {
    // Guards the extraction above: the bundled rule links these pages today,
    // and its templated link covers every Ready reason but the healthy ones.
    let slugs = alert_slugs();
    for slug in [
        "workqueue-saturation",
        "reconcile-latency",
        "controller-pod-down",
        "webhook-cert-renewal",
        "watch-engagement",
        "budgetexhausted",
        "promotionblocked",
        "awaitingpromotion",
        "budgetsourceunavailable",
        "stagefailed",
        "rbacdenied",
    ] {
        assert!(
            slugs.contains(slug),
            "{slug} not found in the PrometheusRule"
        );
    }
    assert!(!slugs.contains("succeeded") && !slugs.contains("suspended"));
}

/// The messages and alerts link `<base>/<slug>/`: the site must publish
/// `docs/runbooks/<slug>.md` at that directory URL, and fail its build on a
/// broken link.
#[test]
fn the_site_publishes_runbooks_at_directory_urls() {
    let config = read(&root().join("mkdocs.yml"));
    let setting = |key: &str| {
        config
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}:")))
            .map(str::trim)
            .unwrap_or_else(|| panic!("mkdocs.yml sets no {key}"))
            .to_string()
    };
    assert_eq!(setting("use_directory_urls"), "true");
    assert_eq!(setting("strict"), "true");
    assert_eq!(setting("docs_dir"), "docs");
}
