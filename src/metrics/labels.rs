//! The label sets of the metric families, and the small constructors the
//! recording methods use.

use prometheus_client::encoding::EncodeLabelSet;

use super::CONTROLLER;

/// `namespace`, `name`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NameLabels {
    pub namespace: String,
    pub name: String,
}

/// `namespace`, `name`, `stage`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    pub namespace: String,
    pub name: String,
    pub stage: String,
}

/// `namespace`, `stageset`, `stage`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageSetStageLabels {
    pub namespace: String,
    pub stageset: String,
    pub stage: String,
}

/// `namespace`, `name`, `reason`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub namespace: String,
    pub name: String,
    pub reason: String,
}

/// `namespace`, `name`, `scope`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScopeLabels {
    pub namespace: String,
    pub name: String,
    pub scope: String,
}

/// `gvk`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GvkLabels {
    pub gvk: String,
}

/// `reason` (why an event was not forwarded).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    pub reason: String,
}

/// `code`, `method`, `host` (`rest_client_requests_total`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RestClientLabels {
    pub code: String,
    pub method: String,
    pub host: String,
}

/// `controller`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: String,
}

/// `controller`, `result`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub controller: String,
    pub result: String,
}

/// `controller`, `name` (workqueue families).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    pub controller: String,
    pub name: String,
}

/// `name` (the lease name).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LeaseLabels {
    pub name: String,
}

/// `webhook`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    pub webhook: String,
}

/// `webhook`, `code`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookCodeLabels {
    pub webhook: String,
    pub code: String,
}

pub(super) fn name_labels(namespace: &str, name: &str) -> NameLabels {
    NameLabels {
        namespace: namespace.into(),
        name: name.into(),
    }
}

pub(super) fn stage_labels(namespace: &str, name: &str, stage: &str) -> StageLabels {
    StageLabels {
        namespace: namespace.into(),
        name: name.into(),
        stage: stage.into(),
    }
}

pub(super) fn stageset_stage_labels(
    namespace: &str,
    stageset: &str,
    stage: &str,
) -> StageSetStageLabels {
    StageSetStageLabels {
        namespace: namespace.into(),
        stageset: stageset.into(),
        stage: stage.into(),
    }
}

pub(super) fn reason_labels(namespace: &str, name: &str, reason: &str) -> ReasonLabels {
    ReasonLabels {
        namespace: namespace.into(),
        name: name.into(),
        reason: reason.into(),
    }
}

pub(super) fn controller_labels() -> ControllerLabels {
    ControllerLabels {
        controller: CONTROLLER.into(),
    }
}

pub(super) fn queue_labels() -> QueueLabels {
    QueueLabels {
        controller: CONTROLLER.into(),
        name: CONTROLLER.into(),
    }
}
