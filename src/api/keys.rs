//! Well-known names: labels, annotations, the finalizer, the field manager and the
//! leader-election lease. Spelled exactly as the Go controller spells them, since
//! objects already in clusters carry them.

/// Finalizer the controller adds to every StageSet.
pub const FINALIZER: &str = "stages.metio.wtf/finalizer";
/// Server-side apply field manager of the controller.
pub const FIELD_MANAGER: &str = "stageset-controller";
/// Reporting component of StageSet and StageLedger events.
pub const EVENT_REPORTER: &str = "stageset-controller";
/// Reporting component of FleetRollout events.
pub const FLEET_EVENT_REPORTER: &str = "fleetrollout-controller";
/// Name of the leader-election Lease, in the controller's namespace.
pub const LEASE_NAME: &str = "stageset-controller.stages.metio.wtf";

/// The Lease of an instance watching `selector` (DECISIONS 22): [`LEASE_NAME`]
/// without a selector (drop-in), else [`LEASE_NAME`] and `-` and the first 8
/// hex digits of the SHA-256 of the selector's canonical form, so each shard
/// elects its own leader and two spellings of one selector share a Lease.
pub fn lease_name(selector: &crate::api::selector::LabelFilter) -> String {
    use sha2::Digest;
    if selector.is_empty() {
        return LEASE_NAME.to_string();
    }
    let digest = sha2::Sha256::digest(selector.to_string().as_bytes());
    let hex: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("{LEASE_NAME}-{hex}")
}

/// Label on every applied object: the owning StageSet's name.
pub const LABEL_OWNER_NAME: &str = "stages.metio.wtf/name";
/// Label on every applied object: the owning StageSet's namespace.
pub const LABEL_OWNER_NAMESPACE: &str = "stages.metio.wtf/namespace";
/// Label on every stage-applied object and on StageInventories: the stage name.
pub const LABEL_STAGE: &str = "stages.metio.wtf/stage";
/// Label on StageInventories: the StageSet name.
pub const LABEL_STAGE_SET: &str = "stages.metio.wtf/stage-set";
/// Label on StageInventories: the shard index.
pub const LABEL_SHARD: &str = "stages.metio.wtf/shard";

/// Annotation on an applied object: `disabled` keeps it from being pruned.
pub const ANNOTATION_PRUNE: &str = "stages.metio.wtf/prune";
/// Value of [`ANNOTATION_PRUNE`] that disables pruning.
pub const PRUNE_DISABLED: &str = "disabled";
/// Annotation on a rendered object: any non-empty value opts it into recreation.
pub const ANNOTATION_FORCE: &str = "stages.metio.wtf/force";
/// Annotation stamped for KeepExisting: create-if-absent only.
pub const ANNOTATION_KEEP_EXISTING: &str = "stages.metio.wtf/keep-existing";
/// Label read on rendered objects as the default version for `version.fromObject`.
pub const LABEL_APP_VERSION: &str = "app.kubernetes.io/version";

/// Flux's manual reconcile request token.
pub const ANNOTATION_REQUESTED_AT: &str = "reconcile.fluxcd.io/requestedAt";
/// `<stage>@<token>`: re-run one stage's revision-scoped actions once.
pub const ANNOTATION_RECONCILE_STAGE: &str = "stages.metio.wtf/reconcile-stage";
/// Token: bypass update windows for one pass.
pub const ANNOTATION_UPDATE_NOW: &str = "stages.metio.wtf/update-now";
/// Token: bypass error-budget freezes for one pass.
pub const ANNOTATION_BUDGET_OVERRIDE: &str = "stages.metio.wtf/budget-override";
/// Token: clear every stage's version-scoped ledger once.
pub const ANNOTATION_RESET_SCOPE: &str = "stages.metio.wtf/reset-scope";
/// `<stage>@<token>`: promote a stage past its promotion holds once.
pub const ANNOTATION_PROMOTE: &str = "stages.metio.wtf/promote";
/// Semver: approves the held version transition equal to it.
pub const ANNOTATION_APPROVED_VERSION: &str = "stages.metio.wtf/approved-version";
/// Semver: overrides the desired version when lower than the deployed one.
pub const ANNOTATION_ROLLBACK_TO: &str = "stages.metio.wtf/rollback-to";
/// Free text: skip image verification while present.
pub const ANNOTATION_SKIP_IMAGE_VERIFICATION: &str = "stages.metio.wtf/skip-image-verification";

/// ApplySet (KEP-3659) label marking the StageInventory CRD as a parent type.
pub const APPLYSET_PARENT_TYPE_LABEL: &str = "applyset.kubernetes.io/is-parent-type";
/// ApplySet (KEP-3659) label on the parent carrying the ApplySet id.
pub const APPLYSET_ID_LABEL: &str = "applyset.kubernetes.io/id";
/// ApplySet (KEP-3659) label on every member, naming its ApplySet id.
pub const APPLYSET_PART_OF_LABEL: &str = "applyset.kubernetes.io/part-of";
/// ApplySet (KEP-3659) annotation naming the tool managing the set.
pub const APPLYSET_TOOLING_ANNOTATION: &str = "applyset.kubernetes.io/tooling";
/// ApplySet (KEP-3659) annotation listing the members' group-kinds.
pub const APPLYSET_GROUP_KINDS_ANNOTATION: &str = "applyset.kubernetes.io/contains-group-kinds";
/// ApplySet (KEP-3659) annotation listing member namespaces besides the parent's.
pub const APPLYSET_ADDITIONAL_NAMESPACES_ANNOTATION: &str =
    "applyset.kubernetes.io/additional-namespaces";
/// Our value of [`APPLYSET_TOOLING_ANNOTATION`] (`<tool>/<version>`).
pub const APPLYSET_TOOLING: &str = "stageset-controller/v1";
