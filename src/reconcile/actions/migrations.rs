//! Migrations (delivery.md §5.4.7, S6): before a stage's pre actions, the
//! migrations of the pass's version plan anchored to that stage run in plan
//! order, as the stage's identity, each action with the verbs and retries
//! of any action.
//!
//! Ledgers (DECISIONS 24): `status.executedMigrationActions` gets
//! `<name>@<digest>/<action>` (`…/down/<action>` for a downgrade) and the
//! status is written right after each action succeeds, so a retry, a
//! restart or a new leader skips what already ran; `status.executedMigrations`
//! gets `<name>@<digest>` once all its actions ran. An edited migration has
//! another digest and is new. Both ledgers are cleared when the pass
//! succeeds (the version is then recorded).
//!
//! A failed action counts in `status.migrationFailureCount`: below
//! [`DIRTY_THRESHOLD`] the stage fails with `MigrationFailed` (back-off); at
//! it, `MigrationDirty`, and no migration runs again until a
//! `reconcile.fluxcd.io/requestedAt` token resets the count.

use crate::api::reasons::{EventReason, StageOp};
use crate::reconcile::Pass;
use crate::reconcile::error::{Error, StageFailure};
use crate::reconcile::version::Planned;

use super::ActionCtx;
use super::hooks::StageHooks;

/// Consecutive failures that halt migrations (`MigrationDirty`).
pub const DIRTY_THRESHOLD: i32 = 5;

/// S6: runs the migrations anchored to the stage at `position`.
pub async fn run_anchored(
    pass: &mut Pass<'_>,
    hooks: &StageHooks<'_>,
    position: usize,
) -> Result<(), StageFailure> {
    let Some(plan) = pass.version.clone() else {
        return Ok(());
    };
    let stage = hooks.stage.name.clone();
    let mine: Vec<&Planned> = plan
        .migrations
        .iter()
        .filter(|p| p.stage == position && !pass.status.executed_migrations.contains(&p.key))
        .collect();
    if mine.is_empty() {
        return Ok(());
    }
    let failures = pass.status.migration_failure_count.unwrap_or(0);
    if failures >= DIRTY_THRESHOLD {
        return Err(StageFailure::new(
            &stage,
            StageOp::MigrationHalted,
            Error::MigrationDirty(format!(
                "migrations failed {failures} times in a row; fix the cause, then request a reconcile (annotate reconcile.fluxcd.io/requestedAt)"
            )),
        ));
    }
    let ss = pass.ss.clone();
    let ctx = ActionCtx {
        env: pass.env,
        clients: hooks.clients.clone(),
        client: hooks.client.clone(),
        namespace: pass.namespace(),
        ss: &ss,
    };
    for planned in mine {
        let m = &planned.migration;
        let what = if planned.down {
            format!(
                "rollback of migration \"{}\" (to {}){}",
                m.name, m.to, planned.provenance
            )
        } else {
            format!(
                "migration \"{}\" (to {}){}",
                m.name, m.to, planned.provenance
            )
        };
        pass.event(
            false,
            EventReason::MigrationStarted.as_str(),
            &format!("{what} started before stage \"{stage}\""),
        )
        .await;
        for action in planned.actions() {
            let key = planned.action_key(&action.name);
            if pass.status.executed_migration_actions.contains(&key) {
                continue;
            }
            if let Err(e) = super::run(&ctx, action).await {
                let count = failures + 1;
                pass.status.migration_failure_count = Some(count);
                // The action's error names the action.
                let message = format!("{what}: {}", e.message);
                tracing::warn!(stageset = %pass.key(), stage = %stage, failures = count, "{message}");
                pass.event(true, EventReason::MigrationFailed.as_str(), &message)
                    .await;
                return Err(if count >= DIRTY_THRESHOLD {
                    StageFailure::new(
                        &stage,
                        StageOp::MigrationHalted,
                        Error::MigrationDirty(format!(
                            "{message} (failure {count} in a row: halted until a reconcile is requested with reconcile.fluxcd.io/requestedAt)"
                        )),
                    )
                } else {
                    StageFailure::new(&stage, StageOp::Migration, Error::Migration(message))
                });
            }
            pass.status.executed_migration_actions.push(key);
            persist(pass, &stage).await?;
        }
        // Done: recorded, and older digests of the same migration dropped.
        let prefix = format!("{}@", m.name);
        let own = format!("{}/", planned.key);
        pass.status
            .executed_migrations
            .retain(|k| !k.starts_with(&prefix) || *k == planned.key);
        pass.status
            .executed_migration_actions
            .retain(|k| !k.starts_with(&prefix) || k.starts_with(&own));
        pass.status.executed_migrations.push(planned.key.clone());
        persist(pass, &stage).await?;
        pass.event(
            false,
            EventReason::MigrationCompleted.as_str(),
            &format!("{what} completed"),
        )
        .await;
    }
    Ok(())
}

/// Writes the migration ledgers now (the rest of the status goes with them).
async fn persist(pass: &Pass<'_>, stage: &str) -> Result<(), StageFailure> {
    let version = crate::reconcile::status::write(
        &pass.env.clients.controller(),
        &pass.ss,
        &pass.status,
    )
    .await
    .map_err(|e| {
        tracing::warn!(stageset = %pass.key(), error = %e, "recording migration progress failed");
        StageFailure::new(
            stage,
            StageOp::Migration,
            Error::Transient(format!("recording migration progress: {e}")),
        )
    })?;
    pass.env.own_writes.record(&pass.key(), version.as_deref());
    Ok(())
}
