//! Discovery documents (legacy and aggregated v2) and the OpenAPI v3 documents
//! kubectl reads to learn that the server validates fields itself.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::registry::{Registry, ResourceType};

/// The Kubernetes version the simulator claims to be.
pub fn version_info() -> Value {
    json!({
        "major": "1",
        "minor": "37",
        "emulationMajor": "1",
        "emulationMinor": "37",
        "gitVersion": "v1.37.0-kube-sim",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.25.0",
        "compiler": "gc",
        "platform": "linux/amd64"
    })
}

/// Content type of aggregated discovery responses.
pub const AGGREGATED_V2: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Whether the Accept header asks for aggregated discovery v2.
pub fn wants_aggregated(accept: &str) -> bool {
    accept.split(',').any(|part| {
        let p = part.replace(' ', "");
        p.contains("g=apidiscovery.k8s.io")
            && p.contains("v=v2")
            && !p.contains("v=v2beta1")
            && p.contains("as=APIGroupDiscoveryList")
    })
}

fn subresource_verbs(sub: &str) -> Vec<&'static str> {
    match sub {
        "status" | "scale" => vec!["get", "patch", "update"],
        _ => vec!["get"],
    }
}

/// `/api`: the legacy core versions document.
pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]
    })
}

/// `/apis`: the legacy group list.
pub fn group_list(reg: &Registry) -> Value {
    let groups: Vec<Value> = reg
        .groups()
        .into_iter()
        .map(|g| group_doc(reg, &g))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/<group>`: one group.
pub fn group_doc(reg: &Registry, group: &str) -> Value {
    let versions = reg.versions_of(group);
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": vs,
        "preferredVersion": vs.first().cloned().unwrap_or(Value::Null)
    })
}

/// `/api/v1` or `/apis/<group>/<version>`: the resources of one group/version.
pub fn resource_list(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let types = reg.in_group_version(group, version);
    if types.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    let mut resources = Vec::new();
    for t in &types {
        let mut r = json!({
            "name": t.plural,
            "singularName": t.singular,
            "namespaced": t.namespaced,
            "kind": t.kind,
            "verbs": t.verbs,
        });
        if !t.short_names.is_empty() {
            r["shortNames"] = json!(t.short_names);
        }
        if !t.categories.is_empty() {
            r["categories"] = json!(t.categories);
        }
        resources.push(r);
        for sub in &t.subresources {
            let kind = if *sub == "scale" {
                "Scale"
            } else {
                t.kind.as_str()
            };
            let mut s = json!({
                "name": format!("{}/{}", t.plural, sub),
                "singularName": "",
                "namespaced": t.namespaced,
                "kind": kind,
                "verbs": subresource_verbs(sub),
            });
            if *sub == "scale" {
                s["group"] = json!("autoscaling");
                s["version"] = json!("v1");
            }
            resources.push(s);
        }
    }
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

fn aggregated_resource(t: &Arc<ResourceType>) -> Value {
    let mut r = json!({
        "resource": t.plural,
        "responseKind": {"group": t.group, "version": t.version, "kind": t.kind},
        "scope": if t.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": t.singular,
        "verbs": t.verbs,
    });
    if !t.short_names.is_empty() {
        r["shortNames"] = json!(t.short_names);
    }
    if !t.categories.is_empty() {
        r["categories"] = json!(t.categories);
    }
    let subs: Vec<Value> = t
        .subresources
        .iter()
        .map(|sub| {
            let kind = if *sub == "scale" {
                json!({"group": "autoscaling", "version": "v1", "kind": "Scale"})
            } else {
                json!({"group": t.group, "version": t.version, "kind": t.kind})
            };
            json!({"subresource": sub, "responseKind": kind, "verbs": subresource_verbs(sub)})
        })
        .collect();
    if !subs.is_empty() {
        r["subresources"] = json!(subs);
    }
    r
}

fn aggregated_group(reg: &Registry, group: &str) -> Value {
    let versions: Vec<Value> = reg
        .versions_of(group)
        .iter()
        .map(|v| {
            let resources: Vec<Value> = reg
                .in_group_version(group, v)
                .iter()
                .map(aggregated_resource)
                .collect();
            json!({"version": v, "resources": resources, "freshness": "Current"})
        })
        .collect();
    json!({"metadata": {"name": group, "creationTimestamp": null}, "versions": versions})
}

/// Aggregated discovery for `/api` (core only) or `/apis` (every group).
pub fn aggregated(reg: &Registry, core: bool) -> Value {
    let items: Vec<Value> = if core {
        vec![aggregated_group(reg, "")]
    } else {
        reg.groups()
            .iter()
            .map(|g| aggregated_group(reg, g))
            .collect()
    };
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items
    })
}

/// The path of a group/version in OpenAPI v3 (`api/v1`, `apis/apps/v1`).
fn openapi_gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3`: the index of per-group-version documents.
pub fn openapi_root(reg: &Registry, hash: &str) -> Value {
    let mut paths = serde_json::Map::new();
    let mut gvs: Vec<(String, String)> = reg
        .all()
        .map(|t| (t.group.clone(), t.version.clone()))
        .collect();
    gvs.sort();
    gvs.dedup();
    for (g, v) in gvs {
        let p = openapi_gv_path(&g, &v);
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={hash}")}),
        );
    }
    json!({"paths": paths})
}

fn query_param(name: &str) -> Value {
    json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}})
}

/// `/openapi/v3/<gv path>`: paths for every resource with the parameters the
/// server supports (kubectl looks for `fieldValidation` on PATCH), and the
/// schemas of custom resources.
pub fn openapi_gv(reg: &Registry, gv_path: &str) -> Option<Value> {
    let (group, version) = match gv_path.split('/').collect::<Vec<_>>().as_slice() {
        ["api", v] => (String::new(), v.to_string()),
        ["apis", g, v] => (g.to_string(), v.to_string()),
        _ => return None,
    };
    let types = reg.in_group_version(&group, &version);
    if types.is_empty() {
        return None;
    }
    let mut paths = serde_json::Map::new();
    let mut schemas = serde_json::Map::new();
    let prefix = format!("/{gv_path}");
    for t in &types {
        let gvk = json!({"group": t.group, "version": t.version, "kind": t.kind});
        let schema_name = format!(
            "{}.{}.{}",
            if t.group.is_empty() {
                "io.k8s.api.core"
            } else {
                t.group.as_str()
            },
            t.version,
            t.kind
        );
        let schema_ref = json!({"$ref": format!("#/components/schemas/{schema_name}")});
        let body = json!({"content": {"application/json": {"schema": schema_ref}}});
        let ok = json!({"200": {"description": "OK", "content": {"application/json": {"schema": schema_ref}}}});
        let write_params = vec![
            query_param("dryRun"),
            query_param("fieldManager"),
            query_param("fieldValidation"),
        ];
        let mut patch_params = write_params.clone();
        patch_params.push(query_param("force"));
        let item_ops = json!({
            "get": {"x-kubernetes-action": "get", "x-kubernetes-group-version-kind": gvk, "responses": ok},
            "put": {"x-kubernetes-action": "put", "x-kubernetes-group-version-kind": gvk, "parameters": write_params, "requestBody": body, "responses": ok},
            "patch": {"x-kubernetes-action": "patch", "x-kubernetes-group-version-kind": gvk, "parameters": patch_params,
                "requestBody": {"content": {
                    "application/json-patch+json": {"schema": {"type": "object"}},
                    "application/merge-patch+json": {"schema": {"type": "object"}},
                    "application/strategic-merge-patch+json": {"schema": {"type": "object"}},
                    "application/apply-patch+yaml": {"schema": {"type": "object"}}
                }},
                "responses": ok},
            "delete": {"x-kubernetes-action": "delete", "x-kubernetes-group-version-kind": gvk, "parameters": [query_param("dryRun")], "responses": ok}
        });
        let collection_ops = json!({
            "get": {"x-kubernetes-action": "list", "x-kubernetes-group-version-kind": gvk, "responses": ok},
            "post": {"x-kubernetes-action": "post", "x-kubernetes-group-version-kind": gvk, "parameters": write_params, "requestBody": body, "responses": ok}
        });
        let base = if t.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}", t.plural)
        } else {
            format!("{prefix}/{}", t.plural)
        };
        paths.insert(base.clone(), collection_ops);
        paths.insert(format!("{base}/{{name}}"), item_ops);
        let mut schema = t
            .crd
            .as_ref()
            .and_then(|c| c.schema.clone())
            .unwrap_or_else(
                || json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
            );
        schema["x-kubernetes-group-version-kind"] = json!([gvk]);
        schemas.insert(schema_name, schema);
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.37.0"},
        "paths": paths,
        "components": {"schemas": schemas}
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregated_accept_header() {
        assert!(wants_aggregated(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"
        ));
        assert!(!wants_aggregated("application/json, */*"));
    }

    #[test]
    fn documents_for_builtins() {
        let reg = Registry::builtin();
        let core = resource_list(&reg, "", "v1").unwrap();
        assert!(
            core["resources"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["name"] == "configmaps")
        );
        assert!(
            core["resources"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["name"] == "pods/status")
        );
        let groups = group_list(&reg);
        assert!(
            groups["groups"]
                .as_array()
                .unwrap()
                .iter()
                .any(|g| g["name"] == "apps")
        );
        let agg = aggregated(&reg, false);
        assert!(
            agg["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|g| g["metadata"]["name"] == "apps")
        );
        let root = openapi_root(&reg, "h");
        assert!(root["paths"].get("apis/apps/v1").is_some());
        let doc = openapi_gv(&reg, "api/v1").unwrap();
        let patch = &doc["paths"]["/api/v1/namespaces/{namespace}/configmaps/{name}"]["patch"];
        assert!(
            patch["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "fieldValidation")
        );
    }
}
