//! `stagesetctl lint-migrations PATH` (delivery.md §6.9): parses and
//! validates a migration ladder offline with the controller's own parser
//! and admission rules, and optionally shows which migrations a version
//! transition fires.

use std::collections::BTreeMap;
use std::path::Path;

use clap::Args;
use semver::Version;

use super::{Failure, Outcome, fail};
use crate::api::Migration;
use crate::reconcile::version::{PlanError, parse_ladder};
use crate::validate::semver::{parse_constraints, parse_lenient};

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  stagesetctl lint-migrations ./migrations\n  stagesetctl lint-migrations ./migrations.yaml --from 1.4.0 --to 2.0.0"
)]
pub struct LintArgs {
    /// A ladder file, or a directory read recursively (YAML and JSON files).
    pub path: std::path::PathBuf,
    /// The current version of a transition to preview (with --to).
    #[arg(long, value_name = "VERSION")]
    pub from: Option<String>,
    /// The desired version of a transition to preview (with --from).
    #[arg(long, value_name = "VERSION")]
    pub to: Option<String>,
}

fn plan_error(e: PlanError) -> String {
    match e {
        PlanError::Refused { message, .. } | PlanError::Waiting { message, .. } => message,
        PlanError::Transient(m) => m,
    }
}

/// The ladder's files: one file keyed by its base name, or a directory's
/// files keyed by their path relative to it.
fn read(path: &Path) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.is_dir() {
        return crate::reconcile::build::read_dir(path);
    }
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    Ok(BTreeMap::from([(name, bytes)]))
}

fn verbs(m: &Migration) -> String {
    m.actions
        .iter()
        .flatten()
        .filter_map(|a| a.verbs().first().copied())
        .collect::<Vec<_>>()
        .join(",")
}

pub fn run(args: &LintArgs) -> Outcome {
    let transition = match (&args.from, &args.to) {
        (None, None) => None,
        (Some(a), Some(b)) => {
            let parse = |v: &str, flag: &str| {
                parse_lenient(v)
                    .ok_or_else(|| fail(format!("--{flag} {v:?} is not a semantic version")))
            };
            Some((parse(a, "from")?, parse(b, "to")?))
        }
        _ => return Err(fail("--from and --to must be given together")),
    };
    let files = read(&args.path).map_err(fail)?;
    let ladder = match parse_ladder(&files, None) {
        Ok(l) => l,
        Err(e) => {
            println!("✗ {}", plan_error(e));
            return Err(Failure::Differences);
        }
    };
    if let Err(e) = crate::validate::validate_ladder(&ladder) {
        println!("✗ {e}");
        return Err(Failure::Differences);
    }
    println!("✓ {} migration(s) valid", ladder.len());
    for m in &ladder {
        let range = match m.from.as_deref().filter(|f| !f.trim().is_empty()) {
            Some(from) => format!("{from} → {}", m.to),
            None => format!("→ {}", m.to),
        };
        println!(
            "{}  {range}  before {}  {}",
            m.name,
            m.stage.as_deref().unwrap_or("(first stage)"),
            verbs(m)
        );
    }
    if let Some((from, to)) = transition {
        println!("transition {from} → {to}:");
        for line in preview(&ladder, &from, &to) {
            println!("  {line}");
        }
    }
    Ok(())
}

/// Per migration (ascending `to`; descending for a downgrade), whether the
/// transition `from → to` fires it, with the same crossing and `from`
/// rules as the controller's plan.
pub fn preview(ladder: &[Migration], from: &Version, to: &Version) -> Vec<String> {
    let down = to.cmp_precedence(from).is_lt();
    let mut items: Vec<(Option<Version>, &Migration)> =
        ladder.iter().map(|m| (parse_lenient(&m.to), m)).collect();
    items.sort_by(|(a, _), (b, _)| match (a, b) {
        (Some(a), Some(b)) => a.cmp_precedence(b),
        _ => std::cmp::Ordering::Equal,
    });
    if down {
        items.reverse();
    }
    let (lo, hi) = if down { (to, from) } else { (from, to) };
    items
        .into_iter()
        .map(|(v, m)| {
            let Some(v) = v else {
                return format!(
                    "{}  excluded to {:?} is not a semantic version",
                    m.name, m.to
                );
            };
            let crossed = lo.cmp_precedence(&v).is_lt() && v.cmp_precedence(hi).is_le();
            if !crossed {
                return format!(
                    "{}  excluded to {} is not in the crossed range ({lo}, {hi}]",
                    m.name, m.to
                );
            }
            if !down && let Some(c) = m.from.as_deref().filter(|f| !f.trim().is_empty()) {
                match parse_constraints(c) {
                    Ok(cs) if !cs.matches(from) => {
                        return format!(
                            "{}  excluded from {c:?} does not match current {from}",
                            m.name
                        );
                    }
                    Err(e) => return format!("{}  excluded from {c:?}: {e}", m.name),
                    Ok(_) => {}
                }
            }
            let v = if down {
                m.down
                    .iter()
                    .flatten()
                    .filter_map(|a| a.verbs().first().copied())
                    .collect::<Vec<_>>()
                    .join(",")
            } else {
                verbs(m)
            };
            format!("{}  FIRES {v}", m.name)
        })
        .collect()
}
