//! Turning an HTTP request line into the apiserver's request attributes
//! (group, version, namespace, resource, name, subresource, verb).

use std::collections::BTreeMap;

/// Parsed query parameters (a key may repeat).
#[derive(Clone, Debug, Default)]
pub struct Query(BTreeMap<String, Vec<String>>);

impl Query {
    pub fn parse(raw: Option<&str>) -> Query {
        let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
        if let Some(raw) = raw {
            for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
                map.entry(k.into_owned()).or_default().push(v.into_owned());
            }
        }
        Query(map)
    }

    /// The first value of a parameter.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.first()).map(String::as_str)
    }

    /// Every value of a parameter.
    pub fn all(&self, key: &str) -> &[String] {
        self.0.get(key).map(Vec::as_slice).unwrap_or(&[])
    }

    /// A boolean parameter: `true`/`1` (and present-without-value for `watch`).
    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1" | "True" | "TRUE"))
    }
}

/// What a request is about.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestInfo {
    /// Whether this is a request for an API resource (else a non-resource URL).
    pub is_resource: bool,
    pub path: String,
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection` for resources; the lower-case HTTP method otherwise.
    pub verb: String,
    pub api_prefix: String,
    pub group: String,
    pub version: String,
    pub namespace: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
}

/// Parses a request path like the apiserver's RequestInfoFactory.
pub fn parse(method: &str, path: &str, query: &Query) -> RequestInfo {
    let mut info = RequestInfo {
        path: path.to_string(),
        verb: method.to_ascii_lowercase(),
        ..RequestInfo::default()
    };
    let parts: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|p| !p.is_empty())
        .collect();
    if parts.is_empty() {
        return info;
    }
    let (prefix, rest) = match parts[0] {
        "api" if parts.len() >= 2 => ("api", &parts[1..]),
        "apis" if parts.len() >= 3 => ("apis", &parts[1..]),
        _ => return info,
    };
    info.api_prefix = prefix.to_string();
    let mut rest: &[&str] = rest;
    if prefix == "apis" {
        info.group = rest[0].to_string();
        rest = &rest[1..];
    }
    info.version = rest[0].to_string();
    rest = &rest[1..];
    if rest.is_empty() {
        // /api/v1 or /apis/g/v: discovery, a non-resource request.
        return info;
    }
    info.is_resource = true;
    // Deprecated /watch/ prefix.
    let mut watch_prefix = false;
    if rest[0] == "watch" {
        watch_prefix = true;
        rest = &rest[1..];
    }
    if rest.first() == Some(&"namespaces") && rest.len() >= 3 && prefix_is_namespace_path(rest) {
        info.namespace = rest[1].to_string();
        rest = &rest[2..];
    } else if rest.first() == Some(&"namespaces") {
        // /api/v1/namespaces or /api/v1/namespaces/{name}[/{sub}]
        info.resource = "namespaces".into();
        if let Some(name) = rest.get(1) {
            info.name = name.to_string();
            info.namespace = name.to_string();
        }
        if let Some(sub) = rest.get(2) {
            info.subresource = sub.to_string();
        }
        info.verb = verb_for(
            method,
            !info.name.is_empty(),
            watch_prefix || query.flag("watch"),
        );
        return info;
    }
    if let Some(r) = rest.first() {
        info.resource = r.to_string();
    }
    if let Some(n) = rest.get(1) {
        info.name = n.to_string();
    }
    if let Some(s) = rest.get(2) {
        info.subresource = s.to_string();
    }
    info.verb = verb_for(
        method,
        !info.name.is_empty(),
        watch_prefix || query.flag("watch"),
    );
    info
}

/// `/namespaces/{ns}/{resource}...` (rather than `/namespaces/{name}/{sub}`)
/// when the segment after the namespace name is a resource collection.
fn prefix_is_namespace_path(rest: &[&str]) -> bool {
    // /namespaces/{name}/status and /finalize are subresources of a Namespace.
    !(rest.len() == 3 && matches!(rest[2], "status" | "finalize"))
}

fn verb_for(method: &str, has_name: bool, watch: bool) -> String {
    match method {
        "GET" | "HEAD" => {
            if watch {
                "watch"
            } else if has_name {
                "get"
            } else {
                "list"
            }
        }
        "POST" => "create",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" => {
            if has_name {
                "delete"
            } else {
                "deletecollection"
            }
        }
        _ => "unknown",
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(method: &str, path: &str, query: &str) -> RequestInfo {
        parse(method, path, &Query::parse(Some(query)))
    }

    #[test]
    fn resource_paths() {
        let i = p("GET", "/api/v1/namespaces/default/configmaps/x", "");
        assert!(i.is_resource);
        assert_eq!(
            (
                i.group.as_str(),
                i.version.as_str(),
                i.namespace.as_str(),
                i.resource.as_str(),
                i.name.as_str(),
                i.verb.as_str()
            ),
            ("", "v1", "default", "configmaps", "x", "get")
        );
        let i = p("GET", "/apis/apps/v1/deployments", "watch=true");
        assert_eq!(
            (i.group.as_str(), i.resource.as_str(), i.verb.as_str()),
            ("apps", "deployments", "watch")
        );
        let i = p(
            "PUT",
            "/apis/stages.metio.wtf/v1/namespaces/a/stagesets/b/status",
            "",
        );
        assert_eq!(
            (i.subresource.as_str(), i.verb.as_str()),
            ("status", "update")
        );
        let i = p("DELETE", "/api/v1/namespaces/a/pods", "");
        assert_eq!(i.verb, "deletecollection");
        let i = p("GET", "/api/v1/namespaces/kube-system", "");
        assert_eq!(
            (i.resource.as_str(), i.name.as_str(), i.verb.as_str()),
            ("namespaces", "kube-system", "get")
        );
        let i = p("PUT", "/api/v1/namespaces/x/finalize", "");
        assert_eq!(
            (i.resource.as_str(), i.name.as_str(), i.subresource.as_str()),
            ("namespaces", "x", "finalize")
        );
        let i = p("GET", "/api/v1/namespaces", "");
        assert_eq!(
            (i.resource.as_str(), i.verb.as_str()),
            ("namespaces", "list")
        );
        let i = p(
            "POST",
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            "",
        );
        assert_eq!(
            (i.resource.as_str(), i.verb.as_str()),
            ("selfsubjectaccessreviews", "create")
        );
        let i = p(
            "GET",
            "/apis/rbac.authorization.k8s.io/v1/clusterroles/admin",
            "",
        );
        assert_eq!((i.namespace.as_str(), i.name.as_str()), ("", "admin"));
    }

    #[test]
    fn non_resource_paths() {
        for path in [
            "/version",
            "/api",
            "/apis",
            "/api/v1",
            "/apis/apps/v1",
            "/openapi/v3",
            "/healthz",
        ] {
            let i = p("GET", path, "");
            assert!(!i.is_resource, "{path}");
            assert_eq!(i.verb, "get");
        }
    }

    #[test]
    fn query_parsing() {
        let q = Query::parse(Some("labelSelector=a%3Db%2Cc&watch=1&x=1&x=2"));
        assert_eq!(q.get("labelSelector"), Some("a=b,c"));
        assert!(q.flag("watch"));
        assert_eq!(q.all("x"), ["1", "2"]);
    }
}
