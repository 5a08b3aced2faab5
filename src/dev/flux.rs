//! Minimal CustomResourceDefinitions for the Flux source kinds the controller
//! reads (docs/decisions.md 14), written by us for kube-sim tests and the `dev`
//! command: they declare what stageset-controller reads (`status.artifact`, the
//! `Ready` condition, the ExternalArtifact `spec.sourceRef` back-pointer) and
//! preserve everything else. Real clusters use Flux's own CRDs.
//!
//! Also: helpers that publish an artifact the way source-controller does.

use serde_json::{Value, json};

/// The source kinds: (kind, plural, singular, short names).
const KINDS: [(&str, &str, &str, &[&str]); 4] = [
    (
        "ExternalArtifact",
        "externalartifacts",
        "externalartifact",
        &[],
    ),
    (
        "GitRepository",
        "gitrepositories",
        "gitrepository",
        &["gitrepo"],
    ),
    (
        "OCIRepository",
        "ocirepositories",
        "ocirepository",
        &["ocirepo"],
    ),
    ("Bucket", "buckets", "bucket", &[]),
];

fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": {
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": true,
                "properties": {
                    "sourceRef": {
                        "type": "object",
                        "required": ["kind", "name"],
                        "properties": {
                            "apiVersion": {"type": "string"},
                            "kind": {"type": "string"},
                            "name": {"type": "string"},
                            "namespace": {"type": "string"}
                        }
                    }
                }
            },
            "status": {
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": true,
                "properties": {
                    "observedGeneration": {"type": "integer", "format": "int64"},
                    "artifact": {
                        "type": "object",
                        "required": ["url", "revision", "digest"],
                        "x-kubernetes-preserve-unknown-fields": true,
                        "properties": {
                            "url": {"type": "string"},
                            "revision": {"type": "string"},
                            "digest": {"type": "string"},
                            "path": {"type": "string"},
                            "size": {"type": "integer", "format": "int64"},
                            "lastUpdateTime": {"type": "string", "format": "date-time"}
                        }
                    },
                    "conditions": {
                        "type": "array",
                        "x-kubernetes-list-type": "map",
                        "x-kubernetes-list-map-keys": ["type"],
                        "items": {
                            "type": "object",
                            "required": ["type", "status", "lastTransitionTime", "reason", "message"],
                            "properties": {
                                "type": {"type": "string"},
                                "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
                                "observedGeneration": {"type": "integer", "format": "int64"},
                                "lastTransitionTime": {"type": "string", "format": "date-time"},
                                "reason": {"type": "string"},
                                "message": {"type": "string"}
                            }
                        }
                    }
                }
            }
        }
    })
}

/// The four CRDs, ready to create.
pub fn source_crds() -> Vec<Value> {
    KINDS
        .iter()
        .map(|(kind, plural, singular, short)| {
            json!({
                "apiVersion": "apiextensions.k8s.io/v1",
                "kind": "CustomResourceDefinition",
                "metadata": {"name": format!("{plural}.source.toolkit.fluxcd.io")},
                "spec": {
                    "group": "source.toolkit.fluxcd.io",
                    "names": {"kind": kind, "listKind": format!("{kind}List"), "plural": plural,
                              "singular": singular, "shortNames": short},
                    "scope": "Namespaced",
                    "versions": [{
                        "name": "v1",
                        "served": true,
                        "storage": true,
                        "subresources": {"status": {}},
                        "additionalPrinterColumns": [
                            {"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"},
                            {"name": "Revision", "type": "string", "jsonPath": ".status.artifact.revision"},
                            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
                        ],
                        "schema": {"openAPIV3Schema": schema()}
                    }]
                }
            })
        })
        .collect()
}

/// The `status` source-controller writes for a published artifact.
pub fn ready_status(url: &str, digest: &str, revision: &str) -> Value {
    let now = k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    json!({
        "artifact": {"url": url, "digest": digest, "revision": revision, "lastUpdateTime": now},
        "conditions": [{
            "type": "Ready", "status": "True", "reason": "Succeeded",
            "message": format!("stored artifact for revision '{revision}'"),
            "lastTransitionTime": now
        }]
    })
}
