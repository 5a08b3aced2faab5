//! Prometheus metrics (operations.md §7.1): one registry per controller,
//! recorded by the pipeline. Names, types and label names are the upstream
//! ones, so existing dashboards and alerts keep working. Note the label split
//! upstream uses: `name` on most families, `stageset` on the per-stage gauges
//! and the skipped-entries counter.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

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

/// Why a finalizer was force-dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForceDropReason {
    TimedOut,
    Permanent,
    Unauthorized,
}

impl ForceDropReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ForceDropReason::TimedOut => "timed_out",
            ForceDropReason::Permanent => "permanent",
            ForceDropReason::Unauthorized => "unauthorized",
        }
    }
}

/// The controller's metrics.
pub struct Metrics {
    registry: Registry,
    /// `stageset_teardown_force_drop_total` (kept after deletion).
    pub teardown_force_drop: Family<ReasonLabels, Counter>,
    /// `stageset_drift_corrected_total`.
    pub drift_corrected: Family<StageLabels, Counter>,
    /// `stageset_inventory_skipped_entries_total`.
    pub inventory_skipped: Family<StageSetStageLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let teardown_force_drop = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "stageset_teardown_force_drop",
            "Number of StageSets whose finalizer was force-dropped without a complete teardown",
            teardown_force_drop.clone(),
        );
        let drift_corrected = Family::<StageLabels, Counter>::default();
        registry.register(
            "stageset_drift_corrected",
            "Number of objects whose out-of-band drift was corrected on a same-revision reconcile",
            drift_corrected.clone(),
        );
        let inventory_skipped = Family::<StageSetStageLabels, Counter>::default();
        registry.register(
            "stageset_inventory_skipped_entries",
            "Number of malformed StageInventory entries skipped while reading (they escape pruning)",
            inventory_skipped.clone(),
        );
        Metrics {
            registry,
            teardown_force_drop,
            drift_corrected,
            inventory_skipped,
        }
    }

    /// The registry in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// Drops the series of a stage that left a live StageSet's spec.
    pub fn forget_stage(&self, namespace: &str, name: &str, stage: &str) {
        self.inventory_skipped.remove(&StageSetStageLabels {
            namespace: namespace.into(),
            stageset: name.into(),
            stage: stage.into(),
        });
    }

    /// Drops every series of a deleted StageSet (the force-drop counter stays).
    pub fn forget_stageset(&self, namespace: &str, name: &str, stages: &[String]) {
        for stage in stages {
            self.drift_corrected.remove(&StageLabels {
                namespace: namespace.into(),
                name: name.into(),
                stage: stage.clone(),
            });
            self.forget_stage(namespace, name, stage);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_eviction() {
        let m = Metrics::new();
        m.drift_corrected
            .get_or_create(&StageLabels {
                namespace: "n".into(),
                name: "s".into(),
                stage: "a".into(),
            })
            .inc_by(3);
        m.teardown_force_drop
            .get_or_create(&ReasonLabels {
                namespace: "n".into(),
                name: "s".into(),
                reason: ForceDropReason::TimedOut.as_str().into(),
            })
            .inc();
        let text = m.encode();
        assert!(
            text.contains(r#"stageset_drift_corrected_total{namespace="n",name="s",stage="a"} 3"#),
            "{text}"
        );
        assert!(text.contains("# TYPE stageset_teardown_force_drop counter"));
        m.forget_stageset("n", "s", &["a".to_string()]);
        let text = m.encode();
        assert!(!text.contains(r#"stage="a""#), "{text}");
        assert!(text.contains(r#"reason="timed_out"} 1"#), "kept: {text}");
    }
}
