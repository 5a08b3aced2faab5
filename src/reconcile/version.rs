//! Version tracking (delivery.md §5.4.1–§5.4.6, R12, R13, R22): the release
//! version a StageSet delivers, resolved once per pass before anything is
//! applied, compared with `status.version`, and recorded there when the pass
//! succeeds.
//!
//! - **Sources**: `value` inline, `fromArtifact` (a file of a stage's pinned
//!   artifact) or `fromObject` (a rendered object of a stage: its
//!   `app.kubernetes.io/version` label or a kubectl JSONPath `fieldPath`;
//!   built with substitution and patches, not decrypted). Parsed leniently
//!   (`v1.2` is 1.2.0) and recorded in its canonical form (`1.2.0`).
//! - **Transitions**: no `status.version` yet is a *baseline* (recorded
//!   without running anything; Version-scoped actions count as done); an
//!   equal version is no transition; a higher one an upgrade; a lower one a
//!   downgrade, refused (`DowngradeNotAllowed`) unless `allowDowngrade`.
//!   The `stages.metio.wtf/rollback-to` annotation replaces the desired
//!   version while it is below the deployed one.
//! - **Approval**: with `approvalMode: Always` every real change waits for
//!   `stages.metio.wtf/approved-version=<desired>` (`AwaitingApproval`);
//!   nothing is applied meanwhile.
//!
//! - **Migrations** (§5.4.3–§5.4.5, inline `spec.migrations` or a ladder
//!   read from an artifact, `spec.migrationsSourceRef`, §5.4.8): an upgrade
//!   selects those with `current < to ≤ desired` whose `from` admits the
//!   deployed version, ascending; a downgrade those with `desired < to ≤
//!   current`, descending, each needing `down`. Each is anchored to a stage
//!   (its `migrationAnchor`, else its name, else the first stage) and run
//!   there before the pre actions (`actions::migrations`).
//!   `requireMigrationCoverage` refuses a major upgrade that selects none;
//!   `OnMigrations` asks for approval when any is pending.

use semver::Version;
use sha2::{Digest, Sha256};

use crate::api::reasons::StageSetReason;
use crate::api::{ApprovalMode, Migration, PendingMigration, StageSet, keys};
use crate::validate::jsonpath::JsonPath;
use crate::validate::semver::{parse_constraints, parse_lenient};

use super::source::ResolvedSource;
use super::stage::{post_build_vars, render_objects};
use super::{Env, Pass};

/// The label `fromObject` reads when it names no `fieldPath`.
pub const VERSION_LABEL: &str = "app.kubernetes.io/version";

/// How the desired version relates to the deployed one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Nothing deployed under versioning yet: record, run nothing.
    Baseline,
    Same,
    Upgrade,
    Downgrade,
}

/// The pass's version plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The desired version, canonical (`1.2.0`).
    pub desired: String,
    /// The deployed version (`status.version`), if any.
    pub current: Option<String>,
    pub transition: Transition,
    /// The migrations this transition runs, in order.
    pub migrations: Vec<Planned>,
}

/// One selected migration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Planned {
    pub migration: Migration,
    /// `<name>@<digest>`: the ledger key.
    pub key: String,
    /// First 12 hex digits of the SHA-256 of the migration's JSON.
    pub digest: String,
    /// The stage it runs before (index into `spec.stages`).
    pub stage: usize,
    /// Run `down` (a downgrade) instead of `actions`.
    pub down: bool,
    /// Where a sourced ladder came from, for events (` from source
    /// revision R (artifact D)`); empty for an inline one.
    pub provenance: String,
}

impl Planned {
    /// The actions this direction runs.
    pub fn actions(&self) -> &[crate::api::Action] {
        if self.down {
            self.migration.down.as_deref().unwrap_or_default()
        } else {
            self.migration.actions.as_deref().unwrap_or_default()
        }
    }

    /// The ledger entry of one of its actions.
    pub fn action_key(&self, action: &str) -> String {
        if self.down {
            format!("{}/down/{action}", self.key)
        } else {
            format!("{}/{action}", self.key)
        }
    }
}

/// The content digest of a migration (an edited migration is a new one).
pub fn digest(m: &Migration) -> String {
    let json = serde_json::to_vec(m).unwrap_or_default();
    let hash = Sha256::digest(&json);
    hash.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// `status.pendingMigrations`: the preview of a plan.
pub fn pending(ss: &StageSet, plan: &Plan) -> Vec<PendingMigration> {
    plan.migrations
        .iter()
        .map(|p| PendingMigration {
            name: p.migration.name.clone(),
            to: p.migration.to.clone(),
            from: p.migration.from.clone(),
            stage: Some(ss.spec.stages[p.stage].name.clone()),
            actions: p
                .actions()
                .iter()
                .filter_map(|a| a.verbs().first().map(|v| v.to_string()))
                .collect(),
            digest: Some(p.digest.clone()),
        })
        .collect()
}

/// Why the pass cannot go on with versioning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlanError {
    /// A terminal reason (`InvalidVersion`, `DowngradeNotAllowed`,
    /// `MigrationCoverageMissing`) and its message; re-checked after 1 min.
    Refused {
        reason: StageSetReason,
        message: String,
    },
    /// Fetching an artifact failed: retried with back-off.
    Transient(String),
    /// The migrations source is not there or not ready yet: reported with
    /// its reason, looked at again after the retry interval.
    Waiting {
        reason: StageSetReason,
        message: String,
    },
}

fn invalid(message: impl Into<String>) -> PlanError {
    PlanError::Refused {
        reason: StageSetReason::InvalidVersion,
        message: message.into(),
    }
}

/// R12: resolves the desired version and classifies the transition. None
/// when the StageSet does not track a version.
pub(super) async fn plan(
    pass: &Pass<'_>,
    pinned: &[ResolvedSource],
) -> Option<Result<Plan, PlanError>> {
    let source = pass.ss.spec.version.as_ref()?;
    Some(plan_with(pass, pinned, source).await)
}

async fn plan_with(
    pass: &Pass<'_>,
    pinned: &[ResolvedSource],
    source: &crate::api::VersionSource,
) -> Result<Plan, PlanError> {
    let raw = resolve(pass, pinned, source).await?;
    let (desired, current) = versions(&pass.ss, pass.previous.version.as_deref(), &raw)?;
    let transition = classify(&desired, current.as_ref());
    let mut plan = Plan {
        desired: desired.to_string(),
        current: current.as_ref().map(Version::to_string),
        transition,
        migrations: Vec::new(),
    };
    // A refused downgrade is reported as such before its ladder is read.
    if transition == Transition::Downgrade {
        check(source, &plan, &desired, current.as_ref())?;
    }
    if let Some(current) = &current
        && matches!(transition, Transition::Upgrade | Transition::Downgrade)
    {
        let (ladder, provenance) = match &pass.ss.spec.migrations_source_ref {
            Some(sourced) => load_ladder(pass, sourced).await?,
            None => (
                pass.ss.spec.migrations.clone().unwrap_or_default(),
                String::new(),
            ),
        };
        plan.migrations = select(&pass.ss, &ladder, transition, &desired, current)?;
        for p in &mut plan.migrations {
            p.provenance = provenance.clone();
        }
    }
    check(source, &plan, &desired, current.as_ref())?;
    Ok(plan)
}

/// The desired version (from `raw`, the version as its source spells it,
/// lowered by a `rollback-to` annotation below the deployed version) and the
/// deployed one (`status.version`), both parsed. Shared by a pass and by
/// `stagesetctl`.
pub fn versions(
    ss: &StageSet,
    current: Option<&str>,
    raw: &str,
) -> Result<(Version, Option<Version>), PlanError> {
    let mut desired = parse_lenient(raw).ok_or_else(|| {
        invalid(format!(
            "the desired version {:?} is not a valid semantic version",
            raw.trim()
        ))
    })?;
    let current = match current.filter(|v| !v.is_empty()) {
        None => None,
        Some(v) => Some(parse_lenient(v).ok_or_else(|| {
            invalid(format!(
                "status.version {v:?} is not a valid semantic version"
            ))
        })?),
    };
    // rollback-to: only below what is deployed, so it expires once reached.
    if let Some(current) = &current
        && let Some(target) = ss
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(keys::ANNOTATION_ROLLBACK_TO))
            .and_then(|t| parse_lenient(t))
        && target.cmp_precedence(current).is_lt()
    {
        desired = target;
    }
    Ok((desired, current))
}

/// §5.4.3–§5.4.5: the migrations a transition crosses, ordered, each
/// anchored to its stage.
pub fn select(
    ss: &StageSet,
    ladder: &[Migration],
    transition: Transition,
    desired: &Version,
    current: &Version,
) -> Result<Vec<Planned>, PlanError> {
    let down = match transition {
        Transition::Upgrade => false,
        Transition::Downgrade => true,
        Transition::Baseline | Transition::Same => return Ok(Vec::new()),
    };
    let mut chosen: Vec<(Version, &Migration)> = Vec::new();
    for m in ladder {
        let to = parse_lenient(&m.to).ok_or_else(|| PlanError::Refused {
            reason: StageSetReason::InvalidSpec,
            message: format!(
                "migration {:?}: to {:?} is not a valid semantic version",
                m.name, m.to
            ),
        })?;
        let crossed = if down {
            desired.cmp_precedence(&to).is_lt() && to.cmp_precedence(current).is_le()
        } else {
            current.cmp_precedence(&to).is_lt() && to.cmp_precedence(desired).is_le()
        };
        if !crossed {
            continue;
        }
        if !down && let Some(from) = m.from.as_deref().filter(|f| !f.trim().is_empty()) {
            let constraints = parse_constraints(from).map_err(|e| PlanError::Refused {
                reason: StageSetReason::InvalidSpec,
                message: format!("migration {:?}: from {from:?}: {e}", m.name),
            })?;
            if !constraints.matches(current) {
                continue;
            }
        }
        chosen.push((to, m));
    }
    // Stable: ties keep ladder order.
    chosen.sort_by(|(a, _), (b, _)| {
        let o = a.cmp_precedence(b);
        if down { o.reverse() } else { o }
    });
    let mut planned = Vec::with_capacity(chosen.len());
    for (_, m) in chosen {
        if down && m.down.as_ref().is_none_or(|d| d.is_empty()) {
            return Err(PlanError::Refused {
                reason: StageSetReason::DowngradeRequiresMigration,
                message: format!(
                    "the downgrade from {current} to {desired} crosses migration {:?} (to {}), which has no down actions",
                    m.name, m.to
                ),
            });
        }
        let stage = anchor(ss, m.stage.as_deref()).ok_or_else(|| PlanError::Refused {
            reason: StageSetReason::MigrationStageNotFound,
            message: format!(
                "migration {:?} runs at stage {:?}, which no stage's migrationAnchor or name matches",
                m.name,
                m.stage.as_deref().unwrap_or_default()
            ),
        })?;
        let digest = digest(m);
        planned.push(Planned {
            key: format!("{}@{digest}", m.name),
            digest,
            migration: m.clone(),
            stage,
            down,
            provenance: String::new(),
        });
    }
    Ok(planned)
}

fn artifact_invalid(message: impl Into<String>) -> PlanError {
    PlanError::Refused {
        reason: StageSetReason::MigrationArtifactInvalid,
        message: message.into(),
    }
}

/// §5.4.8: the ladder of `spec.migrationsSourceRef`, with its provenance.
/// The source is resolved in the StageSet's own namespace whatever the
/// flags say, must pass the provenance gates, and is fetched pinned like a
/// stage's; its `.yaml`, `.yml` and `.json` files under `path` (sorted) each
/// hold one migration or a list, decoded strictly.
async fn load_ladder(
    pass: &Pass<'_>,
    sourced: &crate::api::MigrationsSource,
) -> Result<(Vec<Migration>, String), PlanError> {
    let env = pass.env;
    let namespace = pass.ss.metadata.namespace.clone().unwrap_or_default();
    let mut reference = sourced.source_ref.clone();
    reference.namespace = Some(namespace.clone());
    if sourced
        .source_ref
        .namespace
        .as_deref()
        .is_some_and(|n| !n.is_empty() && n != namespace)
    {
        return Err(PlanError::Refused {
            reason: StageSetReason::ResolveFailed,
            message: format!(
                "spec.migrationsSourceRef must be in the StageSet's namespace {namespace:?}, not {:?}",
                sourced.source_ref.namespace.as_deref().unwrap_or_default()
            ),
        });
    }
    let source = super::source::resolve(&env.clients, "migrations", &namespace, &reference, true)
        .await
        .map_err(|mut e| {
            if let Some(rest) = e.message.strip_prefix("stage \"migrations\": ") {
                e.message = rest.to_string();
            }
            e
        })
        .map_err(|e| match e.requeue {
            super::source::ResolveRequeue::Permanent => PlanError::Refused {
                reason: e.reason,
                message: format!("spec.migrationsSourceRef: {}", e.message),
            },
            super::source::ResolveRequeue::RetryInterval => PlanError::Waiting {
                reason: e.reason,
                message: format!("spec.migrationsSourceRef: {}", e.message),
            },
            super::source::ResolveRequeue::Backoff => {
                PlanError::Transient(format!("spec.migrationsSourceRef: {}", e.message))
            }
        })?;
    let what = format!("{} {:?}", source.kind, source.name);
    match source.verified {
        Some(false) => {
            return Err(PlanError::Refused {
                reason: StageSetReason::MigrationSourceNotVerified,
                message: format!(
                    "the migrations source {what} failed verification (SourceVerified=False)"
                ),
            });
        }
        None if env.settings.require_verified_migration_sources => {
            return Err(PlanError::Refused {
                reason: StageSetReason::MigrationSourceNotVerified,
                message: format!(
                    "the migrations source {what} reports no SourceVerified condition, and --require-verified-migration-sources is set"
                ),
            });
        }
        _ => {}
    }
    if let Some(why) = &source.mutable_pin {
        if env.settings.require_pinned_migration_sources {
            return Err(PlanError::Refused {
                reason: StageSetReason::MigrationSourceNotPinned,
                message: format!(
                    "the migrations source {what} is not pinned ({why}), and --require-pinned-migration-sources is set"
                ),
            });
        }
        let note = format!(
            "the migrations source {what} is not pinned ({why}): the ladder can change under the same reference"
        );
        pass.event(
            true,
            crate::api::reasons::EventReason::MigrationSourceMutable.as_str(),
            &note,
        )
        .await;
    }
    let artifact = env
        .fetcher
        .fetch(&source.url, &source.digest)
        .await
        .map_err(|e| {
            if e.is_terminal() {
                artifact_invalid(format!("fetching the migrations artifact: {e}"))
            } else {
                PlanError::Transient(format!("fetching the migrations artifact: {e}"))
            }
        })?;
    let ladder = parse_ladder(&artifact.files, sourced.path.as_deref())?;
    crate::validate::validate_ladder(&ladder)
        .map_err(|e| artifact_invalid(format!("the migrations artifact: {e}")))?;
    let http = ladder.iter().any(|m| {
        m.actions
            .iter()
            .chain(m.down.iter())
            .flatten()
            .any(|a| a.http.is_some())
    });
    if http && env.settings.allowed_action_hosts.is_empty() {
        return Err(PlanError::Refused {
            reason: StageSetReason::InvalidSpec,
            message: "the migrations artifact uses http actions, but the controller allows none (--allowed-action-hosts is empty)".to_string(),
        });
    }
    let provenance = format!(
        " from source revision {} (artifact {})",
        source.revision, source.digest
    );
    Ok((ladder, provenance))
}

/// The migrations of an artifact's files under `path` (a file or a
/// directory; the root when empty).
pub fn parse_ladder(
    files: &std::collections::BTreeMap<String, Vec<u8>>,
    path: Option<&str>,
) -> Result<Vec<Migration>, PlanError> {
    let prefix = path
        .unwrap_or_default()
        .trim_start_matches("./")
        .trim_end_matches('/')
        .to_string();
    let under =
        |name: &str| prefix.is_empty() || name == prefix || name.starts_with(&format!("{prefix}/"));
    let mut ladder = Vec::new();
    let mut seen = 0;
    for (name, bytes) in files {
        let lower = name.to_ascii_lowercase();
        if !under(name)
            || !(lower.ends_with(".yaml") || lower.ends_with(".yml") || lower.ends_with(".json"))
        {
            continue;
        }
        seen += 1;
        let text = std::str::from_utf8(bytes)
            .map_err(|_| artifact_invalid(format!("{name}: not UTF-8 text")))?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        kustomize::check_aliases(text.as_bytes())
            .map_err(|e| artifact_invalid(format!("{name}: {e}")))?;
        let doc: serde_json::Value =
            serde_yaml_ng::from_str(text).map_err(|e| artifact_invalid(format!("{name}: {e}")))?;
        let items = match doc {
            serde_json::Value::Array(items) => items,
            serde_json::Value::Null => Vec::new(),
            one => vec![one],
        };
        for (i, item) in items.into_iter().enumerate() {
            ladder.push(
                strict_migration(&item)
                    .map_err(|e| artifact_invalid(format!("{name}: migration {i}: {e}")))?,
            );
        }
    }
    if seen == 0 {
        return Err(artifact_invalid(
            "migrations artifact contains no .yaml, .yml, or .json files",
        ));
    }
    if ladder.is_empty() {
        return Err(artifact_invalid(
            "migrations artifact defined no migrations",
        ));
    }
    Ok(ladder)
}

/// Decodes one migration, refusing fields it does not have (at any depth).
fn strict_migration(item: &serde_json::Value) -> Result<Migration, String> {
    let m: Migration = serde_json::from_value(item.clone()).map_err(|e| e.to_string())?;
    let back = serde_json::to_value(&m).map_err(|e| e.to_string())?;
    if let Some(field) = unknown_field(item, &back, "") {
        return Err(format!("unknown field {field:?}"));
    }
    Ok(m)
}

/// The first key of `input` (not null) that `known` lacks.
fn unknown_field(input: &serde_json::Value, known: &serde_json::Value, at: &str) -> Option<String> {
    use serde_json::Value;
    match (input, known) {
        (Value::Object(i), Value::Object(k)) => i.iter().find_map(|(key, v)| {
            if v.is_null() {
                return None;
            }
            let path = if at.is_empty() {
                key.clone()
            } else {
                format!("{at}.{key}")
            };
            match k.get(key) {
                None => Some(path),
                Some(kv) => unknown_field(v, kv, &path),
            }
        }),
        (Value::Array(i), Value::Array(k)) => i
            .iter()
            .zip(k)
            .enumerate()
            .find_map(|(n, (iv, kv))| unknown_field(iv, kv, &format!("{at}[{n}]"))),
        _ => None,
    }
}

/// §5.4.4: the stage whose `migrationAnchor` is `name`, else the stage so
/// named; the first stage for none.
fn anchor(ss: &StageSet, name: Option<&str>) -> Option<usize> {
    let stages = &ss.spec.stages;
    match name.filter(|n| !n.is_empty()) {
        None => (!stages.is_empty()).then_some(0),
        Some(n) => stages
            .iter()
            .position(|s| s.migration_anchor.as_deref() == Some(n))
            .or_else(|| stages.iter().position(|s| s.name == n)),
    }
}

/// How `desired` relates to `current` (build metadata is ignored).
pub fn classify(desired: &Version, current: Option<&Version>) -> Transition {
    match current {
        None => Transition::Baseline,
        Some(c) => match desired.cmp_precedence(c) {
            std::cmp::Ordering::Equal => Transition::Same,
            std::cmp::Ordering::Greater => Transition::Upgrade,
            std::cmp::Ordering::Less => Transition::Downgrade,
        },
    }
}

/// The refusals of §5.4.3 and §5.4.5 for an empty migration ladder.
fn check(
    source: &crate::api::VersionSource,
    plan: &Plan,
    desired: &Version,
    current: Option<&Version>,
) -> Result<(), PlanError> {
    let Some(current) = current else {
        return Ok(());
    };
    match plan.transition {
        Transition::Downgrade if source.allow_downgrade != Some(true) => Err(PlanError::Refused {
            reason: StageSetReason::DowngradeNotAllowed,
            message: format!(
                "the desired version {desired} is below the deployed version {current}; set spec.version.allowDowngrade: true to permit a downgrade"
            ),
        }),
        Transition::Upgrade
            if source.require_migration_coverage == Some(true)
                && desired.major > current.major
                && plan.migrations.is_empty() =>
        {
            Err(PlanError::Refused {
                reason: StageSetReason::MigrationCoverageMissing,
                message: format!(
                    "the upgrade from {current} to {desired} crosses a major version and no migration covers it (spec.version.requireMigrationCoverage)"
                ),
            })
        }
        _ => Ok(()),
    }
}

/// R13: whether the plan waits for approval, and the message saying how
/// to give it. `Always` holds every real change; `OnMigrations` holds only
/// when migrations are pending (never, without a ladder); a baseline or no
/// change never waits.
pub fn awaiting_approval(ss: &StageSet, plan: &Plan) -> Option<String> {
    let mode = ss
        .spec
        .version
        .as_ref()
        .and_then(|v| v.approval_mode)
        .unwrap_or(ApprovalMode::Never);
    let changes = matches!(plan.transition, Transition::Upgrade | Transition::Downgrade);
    let needed = match mode {
        ApprovalMode::Never => false,
        ApprovalMode::Always => changes,
        ApprovalMode::OnMigrations => !plan.migrations.is_empty(),
    };
    if !needed {
        return None;
    }
    let approved = ss
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(keys::ANNOTATION_APPROVED_VERSION))
        .map(|v| v.trim());
    if approved.is_some_and(|a| a == plan.desired || a.strip_prefix('v') == Some(&plan.desired)) {
        return None;
    }
    let namespace = ss.metadata.namespace.as_deref().unwrap_or_default();
    let name = ss.metadata.name.as_deref().unwrap_or_default();
    Some(format!(
        "version {} (deployed: {}) waits for approval: kubectl -n {namespace} annotate stageset/{name} --overwrite {}={}",
        plan.desired,
        plan.current.as_deref().unwrap_or("none"),
        keys::ANNOTATION_APPROVED_VERSION,
        plan.desired
    ))
}

/// The desired version as written in its source, before parsing.
async fn resolve(
    pass: &Pass<'_>,
    pinned: &[ResolvedSource],
    source: &crate::api::VersionSource,
) -> Result<String, PlanError> {
    let stages = &pass.ss.spec.stages;
    let stage_at = |name: Option<&str>, field: &str| -> Result<usize, PlanError> {
        match name.filter(|n| !n.is_empty()) {
            None if !stages.is_empty() => Ok(0),
            None => Err(invalid("the StageSet has no stages")),
            Some(n) => stages.iter().position(|s| s.name == n).ok_or_else(|| {
                invalid(format!(
                    "spec.version.{field}.stage {n:?} is not a stage of this StageSet"
                ))
            }),
        }
    };
    let fetch = |i: usize| {
        let s = &pinned[i];
        async move {
            pass.env
                .fetcher
                .fetch(&s.url, &s.digest)
                .await
                .map_err(|e| {
                    PlanError::Transient(format!(
                        "fetching the artifact of stage \"{}\" for its version: {e}",
                        stages[i].name
                    ))
                })
        }
    };
    if let Some(v) = source.value.as_ref().filter(|v| !v.is_empty()) {
        return non_empty(v, "spec.version.value");
    }
    if let Some(a) = &source.from_artifact {
        let i = stage_at(Some(&a.stage), "fromArtifact")?;
        let artifact = fetch(i).await?;
        let path = a.path.trim_start_matches("./");
        let bytes = artifact.files.get(path).ok_or_else(|| {
            invalid(format!(
                "the artifact of stage \"{}\" (revision {}) has no file {:?}",
                stages[i].name, pinned[i].revision, a.path
            ))
        })?;
        let text = String::from_utf8_lossy(bytes);
        return non_empty(&text, &format!("file {:?}", a.path));
    }
    if let Some(o) = &source.from_object {
        let i = stage_at(o.stage.as_deref(), "fromObject")?;
        let artifact = fetch(i).await?;
        return from_object(pass.env, &pass.ss, i, artifact.files, o).await;
    }
    Err(invalid(
        "spec.version must set exactly one of value, fromObject, or fromArtifact, found 0",
    ))
}

fn non_empty(text: &str, what: &str) -> Result<String, PlanError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(invalid(format!(
            "{what} is empty; it must hold the version"
        )));
    }
    Ok(t.to_string())
}

/// `fromObject`: renders the stage (post-build variables and patches, no
/// decryption) and reads the first object of that kind and name.
async fn from_object(
    env: &Env,
    ss: &StageSet,
    position: usize,
    files: std::collections::BTreeMap<String, Vec<u8>>,
    o: &crate::api::ObjectVersionRef,
) -> Result<String, PlanError> {
    let stage = &ss.spec.stages[position];
    let namespace = ss.metadata.namespace.clone().unwrap_or_default();
    let vars = post_build_vars(env, ss, &namespace, stage)
        .await
        .map_err(|f| PlanError::Transient(format!("{} {}", f.op, f.error)))?;
    let objects = render_objects(env, ss, stage, &files, vars.as_ref()).map_err(|e| {
        invalid(format!(
            "rendering stage \"{}\" for its version: {e}",
            stage.name
        ))
    })?;
    version_of_object(&objects, &stage.name, o)
}

/// `fromObject` on a stage's rendered objects: the first object of that
/// kind and name (and apiVersion, when given), its `fieldPath` or else its
/// `app.kubernetes.io/version` label. Shared by a pass and by `stagesetctl`.
pub fn version_of_object(
    objects: &[serde_json::Value],
    stage: &str,
    o: &crate::api::ObjectVersionRef,
) -> Result<String, PlanError> {
    let api_version = o.api_version.as_deref().filter(|a| !a.is_empty());
    let object = objects
        .iter()
        .find(|obj| {
            obj["kind"] == o.kind.as_str()
                && obj["metadata"]["name"] == o.name.as_str()
                && api_version.is_none_or(|a| obj["apiVersion"] == a)
        })
        .ok_or_else(|| {
            invalid(format!(
                "stage \"{stage}\" renders no {}{} named {:?}",
                o.kind,
                api_version.map(|a| format!(" ({a})")).unwrap_or_default(),
                o.name
            ))
        })?;
    let what = format!("{} {:?} of stage \"{stage}\"", o.kind, o.name);
    match o.field_path.as_deref().filter(|p| !p.trim().is_empty()) {
        None => {
            let label = object["metadata"]["labels"][VERSION_LABEL]
                .as_str()
                .ok_or_else(|| invalid(format!("{what} has no label {VERSION_LABEL}")))?;
            non_empty(label, &format!("the label {VERSION_LABEL} of {what}"))
        }
        Some(path) => {
            let parsed = JsonPath::parse(path)
                .map_err(|e| invalid(format!("spec.version.fromObject.fieldPath: {e}")))?;
            let found = parsed
                .find(object)
                .map_err(|e| invalid(format!("fieldPath {path} of {what}: {e}")))?;
            let value = match found.as_slice() {
                [one] => *one,
                [] => {
                    return Err(invalid(format!(
                        "fieldPath {path} matches nothing in {what}"
                    )));
                }
                many => {
                    return Err(invalid(format!(
                        "fieldPath {path} matches {} values in {what}, not exactly one",
                        many.len()
                    )));
                }
            };
            let text = match value {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                other => {
                    return Err(invalid(format!(
                        "fieldPath {path} of {what} selects {other}, not a version string"
                    )));
                }
            };
            non_empty(&text, &format!("fieldPath {path} of {what}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn v(s: &str) -> Version {
        parse_lenient(s).unwrap()
    }

    fn stageset(version: serde_json::Value, annotations: serde_json::Value) -> StageSet {
        serde_json::from_value(json!({
            "apiVersion": "stages.metio.wtf/v1", "kind": "StageSet",
            "metadata": {"name": "shop", "namespace": "team", "annotations": annotations},
            "spec": {"version": version, "stages": [{"name": "app", "sourceRef": {"name": "app"}}]},
        }))
        .unwrap()
    }

    #[test]
    fn ladders_from_artifact_files() {
        let files: std::collections::BTreeMap<String, Vec<u8>> = [
            (
                "db/a.yaml",
                "- name: one\n  to: \"1.1.0\"\n- name: two\n  to: \"1.2.0\"\n",
            ),
            (
                "db/b.json",
                r#"{"name": "three", "to": "1.3.0", "from": ">=1.0.0"}"#,
            ),
            ("db/notes.txt", "ignored"),
            ("other/c.yaml", "- name: elsewhere\n  to: \"9.0.0\"\n"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect();
        let names = |path: Option<&str>| -> Vec<String> {
            parse_ladder(&files, path)
                .unwrap()
                .into_iter()
                .map(|m| m.name)
                .collect()
        };
        assert_eq!(names(Some("./db/")), ["one", "two", "three"]);
        assert_eq!(names(Some("db/b.json")), ["three"]);
        assert_eq!(names(None), ["one", "two", "three", "elsewhere"]);
        assert!(matches!(
            parse_ladder(&files, Some("nowhere")),
            Err(PlanError::Refused { reason: StageSetReason::MigrationArtifactInvalid, message })
                if message == "migrations artifact contains no .yaml, .yml, or .json files"
        ));
        let empty: std::collections::BTreeMap<String, Vec<u8>> =
            [("m.yaml".to_string(), b"[]".to_vec())]
                .into_iter()
                .collect();
        assert!(matches!(
            parse_ladder(&empty, None),
            Err(PlanError::Refused { message, .. }) if message == "migrations artifact defined no migrations"
        ));
        let nested: std::collections::BTreeMap<String, Vec<u8>> = [(
            "m.yaml".to_string(),
            b"- name: a\n  to: \"1.0.0\"\n  actions:\n  - name: x\n    wait: {duration: 1s, forever: true}\n".to_vec(),
        )]
        .into_iter()
        .collect();
        assert!(matches!(
            parse_ladder(&nested, None),
            Err(PlanError::Refused { message, .. }) if message.contains("unknown field \"actions[0].wait.forever\"")
        ));
    }

    #[test]
    fn transitions() {
        assert_eq!(classify(&v("1.0.0"), None), Transition::Baseline);
        assert_eq!(classify(&v("v1.0"), Some(&v("1.0.0"))), Transition::Same);
        assert_eq!(
            classify(&v("1.0.0+build.7"), Some(&v("1.0.0"))),
            Transition::Same
        );
        assert_eq!(
            classify(&v("1.1.0"), Some(&v("1.0.0"))),
            Transition::Upgrade
        );
        assert_eq!(
            classify(&v("1.0.0-rc.1"), Some(&v("1.0.0"))),
            Transition::Downgrade
        );
    }

    #[test]
    fn downgrades_and_major_upgrades_are_refused_as_configured() {
        let plan = |desired: &str, current: &str| Plan {
            desired: v(desired).to_string(),
            current: Some(current.into()),
            transition: classify(&v(desired), Some(&v(current))),
            migrations: Vec::new(),
        };
        let source = |extra: serde_json::Value| -> crate::api::VersionSource {
            let mut s = json!({"value": "x"});
            for (k, val) in extra.as_object().unwrap() {
                s[k] = val.clone();
            }
            serde_json::from_value(s).unwrap()
        };
        let down = plan("1.0.0", "1.2.0");
        let err = check(&source(json!({})), &down, &v("1.0.0"), Some(&v("1.2.0"))).unwrap_err();
        assert_eq!(
            err,
            PlanError::Refused {
                reason: StageSetReason::DowngradeNotAllowed,
                message: "the desired version 1.0.0 is below the deployed version 1.2.0; set spec.version.allowDowngrade: true to permit a downgrade".into()
            }
        );
        assert_eq!(
            check(
                &source(json!({"allowDowngrade": true})),
                &down,
                &v("1.0.0"),
                Some(&v("1.2.0"))
            ),
            Ok(())
        );
        let major = plan("2.0.0", "1.2.0");
        let covered = source(json!({"requireMigrationCoverage": true}));
        assert!(matches!(
            check(&covered, &major, &v("2.0.0"), Some(&v("1.2.0"))),
            Err(PlanError::Refused {
                reason: StageSetReason::MigrationCoverageMissing,
                ..
            })
        ));
        let minor = plan("1.3.0", "1.2.0");
        assert_eq!(
            check(&covered, &minor, &v("1.3.0"), Some(&v("1.2.0"))),
            Ok(())
        );
        assert_eq!(
            check(&source(json!({})), &major, &v("2.0.0"), Some(&v("1.2.0"))),
            Ok(())
        );
    }

    #[test]
    fn approval_holds_real_changes_until_the_exact_version_is_approved() {
        let up = Plan {
            desired: "1.3.0".into(),
            current: Some("1.2.0".into()),
            transition: Transition::Upgrade,
            migrations: Vec::new(),
        };
        let always = json!({"value": "1.3.0", "approvalMode": "Always"});
        let held = awaiting_approval(&stageset(always.clone(), json!({})), &up).unwrap();
        assert_eq!(
            held,
            "version 1.3.0 (deployed: 1.2.0) waits for approval: kubectl -n team annotate stageset/shop --overwrite stages.metio.wtf/approved-version=1.3.0"
        );
        let approved = json!({"stages.metio.wtf/approved-version": "1.3.0"});
        assert_eq!(
            awaiting_approval(&stageset(always.clone(), approved), &up),
            None
        );
        let v_prefixed = json!({"stages.metio.wtf/approved-version": "v1.3.0"});
        assert_eq!(
            awaiting_approval(&stageset(always.clone(), v_prefixed), &up),
            None
        );
        let stale = json!({"stages.metio.wtf/approved-version": "1.2.0"});
        assert!(awaiting_approval(&stageset(always.clone(), stale), &up).is_some());
        let baseline = Plan {
            current: None,
            transition: Transition::Baseline,
            ..up.clone()
        };
        assert_eq!(
            awaiting_approval(&stageset(always, json!({})), &baseline),
            None
        );
        let on_migrations = json!({"value": "1.3.0", "approvalMode": "OnMigrations"});
        assert_eq!(
            awaiting_approval(&stageset(on_migrations, json!({})), &up),
            None
        );
        assert_eq!(
            awaiting_approval(&stageset(json!({"value": "1.3.0"}), json!({})), &up),
            None
        );
    }
}
