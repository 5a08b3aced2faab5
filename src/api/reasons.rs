//! Condition types, condition reasons, event reasons and stage operation names.
//!
//! Every one of these strings is wire-stable: dashboards, alert routing, runbook
//! links and users' scripts match on them, so they are spelled exactly as the Go
//! controller spells them and nowhere else in the code base.

use std::fmt;

/// Condition type carried by StageSets and FleetRollouts.
pub const CONDITION_READY: &str = "Ready";
/// Condition type carried by StageLedgers.
pub const CONDITION_BASELINE_VALID: &str = "BaselineValid";

macro_rules! reason_enum {
    (
        $(#[$meta:meta])*
        $name:ident { $( $(#[$vmeta:meta])* $variant:ident ),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $( $(#[$vmeta])* $variant ),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[ $( $name::$variant ),+ ];

            /// The wire spelling.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => stringify!($variant) ),+
                }
            }

            /// Looks a reason up by its wire spelling.
            pub fn parse(s: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|r| r.as_str() == s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

reason_enum! {
    /// Reasons of a StageSet's `Ready` condition.
    StageSetReason {
        /// All stages applied, verified and promoted, and pruning done; also used
        /// (message prefix `Deployed; `) while a deployed StageSet is held by a window
        /// or an error budget.
        Succeeded,
        /// `spec.suspend` is true.
        Suspended,
        /// The spec breaks a validation rule (the webhook was bypassed), or the spec
        /// refers to something malformed.
        InvalidSpec,
        /// A stage's source exists but is not Ready.
        SourceNotReady,
        /// A stage's source, or its artifact, does not exist.
        ArtifactNotFound,
        /// A source reference could not be resolved (ambiguous, refused, API error).
        ResolveFailed,
        /// A `dependsOn` StageSet is missing, not Ready or below its `minVersion`.
        DependencyNotReady,
        /// `dependsOn` forms a cycle.
        Stalled,
        /// The desired or recorded version cannot be resolved or is not semver.
        InvalidVersion,
        /// The desired version is lower than the deployed one and downgrades are off.
        DowngradeNotAllowed,
        /// A downgrade would cross a migration without `down` actions.
        DowngradeRequiresMigration,
        /// A selected migration anchors to no stage.
        MigrationStageNotFound,
        /// The sourced migration ladder cannot be fetched or parsed.
        MigrationArtifactInvalid,
        /// The sourced migration ladder failed (or lacks) signature verification.
        MigrationSourceNotVerified,
        /// The sourced migration ladder is not pinned immutably.
        MigrationSourceNotPinned,
        /// A version transition waits for the `approved-version` annotation.
        AwaitingApproval,
        /// A major version bump has no migration while coverage is required.
        MigrationCoverageMissing,
        /// A migration action failed; it is retried.
        MigrationFailed,
        /// Migrations failed five times in a row; a manual reconcile is needed.
        MigrationDirty,
        /// Actions of a stage with a pending Lifetime action failed five times.
        ActionDirty,
        /// `rollbackOnFailure` could not restore the previous revision.
        PreviousRevisionUnavailable,
        /// An update window holds delivery and nothing is deployed yet.
        UpdateDeferred,
        /// A stage operation failed.
        StageFailed,
        /// Verification timed out while objects are still progressing.
        StageProgressing,
        /// An image failed verification.
        ImageUnverified,
        /// The tenant identity may not do what the stage needs, or a kind is missing.
        RBACDenied,
        /// A stage is soaking or its analysis is running.
        Soaking,
        /// A stage waits for a manual promotion.
        AwaitingPromotion,
        /// An error budget is exhausted and nothing is deployed yet.
        BudgetExhausted,
        /// An error budget source is unreadable and the policy is to hold.
        BudgetSourceUnavailable,
        /// A promotion gate blocked the stage.
        PromotionBlocked,
    }
}

impl StageSetReason {
    /// Whether Ready messages with this reason get a runbook link: every reason
    /// except `Succeeded` and `Suspended`.
    pub const fn has_runbook(self) -> bool {
        !matches!(self, StageSetReason::Succeeded | StageSetReason::Suspended)
    }

    /// The runbook page name: the lower-cased reason.
    pub fn runbook_slug(self) -> String {
        self.as_str().to_ascii_lowercase()
    }

    /// Whether the reason comes with `Ready=True`.
    pub const fn is_ready(self) -> bool {
        matches!(self, StageSetReason::Succeeded)
    }
}

reason_enum! {
    /// Reasons of a FleetRollout's `Ready` condition.
    FleetReason {
        /// A wave is open.
        Progressing,
        /// Every wave passed.
        Completed,
        /// A wave gate failed or a settled wave regressed.
        Halted,
        /// A selected member matches no wave.
        MembersUnassigned,
        /// A member is also selected by another FleetRollout.
        MembersContested,
        /// A selector does not parse.
        InvalidSelector,
        /// A wave gate names a `secretRef`, which fleet gates do not support.
        GateUnsupported,
        /// A field other than a selector is malformed (a wave's `soak`);
        /// our addition, upstream has no such check.
        InvalidSpec,
    }
}

reason_enum! {
    /// Reasons of a StageLedger's `BaselineValid` condition.
    LedgerReason {
        /// Every baseline entry names a Lifetime action of the StageSet.
        AllResolved,
        /// Some baseline entries name no Lifetime action.
        Unresolved,
    }
}

reason_enum! {
    /// Reasons of Kubernetes Events that are not simply a Ready transition.
    EventReason {
        UpdateDeferred,
        BudgetSourceUnavailable,
        BudgetExhausted,
        PromotionBlocked,
        RolledBack,
        OnFailureAction,
        OnRollbackAction,
        DriftCorrected,
        InventoryReconstructed,
        MigrationStarted,
        MigrationCompleted,
        MigrationFailed,
        MigrationSourceMutable,
        MigrationsBaselined,
        ActionSkipped,
        LedgerAdopted,
        LedgerInvalidated,
        LedgerAnchorUnreadable,
        ImageVerificationSkipped,
        RollbackStoreFailed,
        TeardownForced,
        BaselineInvalid,
        Halted,
        /// Objects annotated `helm.sh/hook` applied as ordinary objects
        /// (`applyHelmHookResources` true, the default; api.md D2).
        HelmHookResource,
    }
}

/// The stage operation named in a `StageFailed` message (`stage "<s>" <op>: <err>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StageOp {
    ConnectTargetCluster,
    ConfigureDecryption,
    PreAction,
    FetchArtifact,
    Decrypt,
    ResolvePostBuildVariables,
    Build,
    ImageVerification,
    ConflictPolicy,
    Apply,
    RecordInventory,
    Verify,
    PostAction,
    InvalidateLifetimeCompletion,
    /// Deleting what left the StageSet (ours: upstream reports prune errors
    /// only in the log).
    Prune,
    /// Running the migrations anchored to the stage.
    Migration,
    /// Migrations halted after too many failures (`MigrationDirty`).
    MigrationHalted,
}

impl StageOp {
    pub const ALL: &'static [StageOp] = &[
        StageOp::ConnectTargetCluster,
        StageOp::ConfigureDecryption,
        StageOp::PreAction,
        StageOp::FetchArtifact,
        StageOp::Decrypt,
        StageOp::ResolvePostBuildVariables,
        StageOp::Build,
        StageOp::ImageVerification,
        StageOp::ConflictPolicy,
        StageOp::Apply,
        StageOp::RecordInventory,
        StageOp::Verify,
        StageOp::PostAction,
        StageOp::InvalidateLifetimeCompletion,
        StageOp::Prune,
        StageOp::Migration,
        StageOp::MigrationHalted,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            StageOp::ConnectTargetCluster => "connect to target cluster",
            StageOp::ConfigureDecryption => "configure decryption",
            StageOp::PreAction => "pre-action",
            StageOp::FetchArtifact => "fetch artifact",
            StageOp::Decrypt => "decrypt",
            StageOp::ResolvePostBuildVariables => "resolve postBuild variables",
            StageOp::Build => "build",
            StageOp::ImageVerification => "image verification",
            StageOp::ConflictPolicy => "conflict policy",
            StageOp::Apply => "apply",
            StageOp::RecordInventory => "record inventory",
            StageOp::Verify => "verify",
            StageOp::PostAction => "post-action",
            StageOp::InvalidateLifetimeCompletion => "invalidate lifetime completion",
            StageOp::Prune => "prune",
            StageOp::Migration => "migration",
            StageOp::MigrationHalted => "migration halted (dirty)",
        }
    }
}

impl fmt::Display for StageOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_match_the_spec() {
        assert_eq!(StageSetReason::ALL.len(), 31);
        assert_eq!(FleetReason::ALL.len(), 8);
        assert_eq!(LedgerReason::ALL.len(), 2);
        // The 13 upstream `StageFailed` ops, our `prune`, and `image
        // verification` (upstream reports it with ImageUnverified).
        assert_eq!(StageOp::ALL.len(), 17);
    }

    #[test]
    fn reasons_round_trip_and_are_unique() {
        let mut seen = std::collections::BTreeSet::new();
        for r in StageSetReason::ALL {
            assert_eq!(StageSetReason::parse(r.as_str()), Some(*r));
            assert!(seen.insert(r.as_str()), "duplicate {r}");
        }
        assert_eq!(StageSetReason::RBACDenied.as_str(), "RBACDenied");
        assert_eq!(StageSetReason::RBACDenied.runbook_slug(), "rbacdenied");
        assert!(!StageSetReason::Succeeded.has_runbook());
        assert!(!StageSetReason::Suspended.has_runbook());
        assert!(StageSetReason::StageFailed.has_runbook());
    }
}
