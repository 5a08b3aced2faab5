//! RBAC authorization and user impersonation, modelled on the real
//! kube-apiserver.
//!
//! What is reproduced, and where it comes from upstream:
//!
//! * The authorizer chain of a default kube-apiserver for ordinary users: the
//!   `system:masters` superuser short-circuit (allow with an empty reason),
//!   then the RBAC authorizer (`plugin/pkg/auth/authorizer/rbac`,
//!   `pkg/registry/rbac/validation/rule.go`, `pkg/apis/rbac/v1/evaluation_helpers.go`).
//!   ClusterRoleBindings are visited first, then the RoleBindings of the
//!   request namespace; the first matching rule allows. Failures to resolve a
//!   role reference do not deny on their own but end up in the denial reason
//!   (`RBAC: clusterrole.rbac.authorization.k8s.io "x" not found`), exactly as
//!   the real server appends them to the 403 message.
//! * ClusterRole aggregation. Upstream this is a controller that rewrites the
//!   `rules` of every ClusterRole carrying an `aggregationRule`; here the
//!   controller's steady state is computed at evaluation time (selectors in
//!   order, matching roles sorted by name, the role itself skipped, duplicate
//!   rules dropped, the role's own stored rules replaced).
//! * The 403 texts of `responsewriters.Forbidden` / `apierrors.NewForbidden`.
//! * Impersonation: both the legacy `WithImpersonation` filter
//!   ([`impersonate`], what a server with the `ConstrainedImpersonation`
//!   feature gate disabled runs) and the constrained-impersonation filter that
//!   is the default since Kubernetes 1.36 ([`Impersonator`]), which tries the
//!   modes associated-node, arbitrary-node, serviceaccount, user-info and
//!   finally legacy, and reports the first error met.
//! * A faithful subset of the bootstrap ClusterRoles and ClusterRoleBindings
//!   ([`bootstrap_objects`]).
//!
//! Request parsing is the caller's job and must follow the real RequestInfo
//! resolver for the results to match: e.g. a request on a `namespaces` object
//! carries that namespace as its namespace, and `list`/`watch` with a
//! `metadata.name` field selector carry that name.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// The superuser group; members are allowed everything.
pub const SYSTEM_MASTERS: &str = "system:masters";
/// Group of every authenticated user.
pub const ALL_AUTHENTICATED: &str = "system:authenticated";
/// Group of every unauthenticated request.
pub const ALL_UNAUTHENTICATED: &str = "system:unauthenticated";
/// User name of unauthenticated requests.
pub const ANONYMOUS: &str = "system:anonymous";
/// Group every node identity belongs to.
pub const NODES_GROUP: &str = "system:nodes";

const SA_USERNAME_PREFIX: &str = "system:serviceaccount:";
const SA_ALL_GROUP: &str = "system:serviceaccounts";
const SA_GROUP_PREFIX: &str = "system:serviceaccounts:";
const NODE_USERNAME_PREFIX: &str = "system:node:";
const NODE_NAME_EXTRA_KEY: &str = "authentication.kubernetes.io/node-name";
const ASSOCIATED_NODE_KEYS_EXTRA: &str = "authentication.kubernetes.io/associated-node-keys";
const RBAC_GROUP: &str = "rbac.authorization.k8s.io";
const AUTHENTICATION_GROUP: &str = "authentication.k8s.io";
const AUTHORIZATION_GROUP: &str = "authorization.k8s.io";

// ---------------------------------------------------------------------------
// Public data types
// ---------------------------------------------------------------------------

/// The identity of a request, as the authenticator (or the impersonation
/// filter) produced it.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// A user with a name and groups and nothing else.
    pub fn new(name: impl Into<String>, groups: &[&str]) -> Self {
        UserInfo {
            name: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..Default::default()
        }
    }
}

/// Authorization attributes of a request (the fields of the real
/// `authorizer.AttributesRecord` that RBAC and the 403 texts look at).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Attributes {
    pub verb: String,
    pub api_group: String,
    pub api_version: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
    pub namespace: String,
    pub resource_request: bool,
    /// The URL path; what non-resource requests are matched on.
    pub path: String,
}

impl Attributes {
    /// Attributes of a resource request.
    pub fn resource(
        verb: &str,
        api_group: &str,
        api_version: &str,
        resource: &str,
        namespace: &str,
        name: &str,
    ) -> Self {
        Attributes {
            verb: verb.into(),
            api_group: api_group.into(),
            api_version: api_version.into(),
            resource: resource.into(),
            namespace: namespace.into(),
            name: name.into(),
            resource_request: true,
            ..Default::default()
        }
    }

    /// The same attributes with a subresource.
    pub fn with_subresource(mut self, subresource: &str) -> Self {
        self.subresource = subresource.into();
        self
    }

    /// Attributes of a non-resource request (e.g. `GET /apis`).
    pub fn non_resource(verb: &str, path: &str) -> Self {
        Attributes {
            verb: verb.into(),
            path: path.into(),
            resource_request: false,
            ..Default::default()
        }
    }
}

/// Access to the stored RBAC objects (plain JSON, as the server stores them).
pub trait RbacObjects {
    fn roles(&self, namespace: &str) -> Vec<Value>;
    fn role_bindings(&self, namespace: &str) -> Vec<Value>;
    fn cluster_roles(&self) -> Vec<Value>;
    fn cluster_role_bindings(&self) -> Vec<Value>;
}

fn objects_of_kind(objects: &[Value], kind: &str, namespace: Option<&str>) -> Vec<Value> {
    objects
        .iter()
        .filter(|o| o.get("kind").and_then(Value::as_str) == Some(kind))
        .filter(|o| match namespace {
            Some(ns) => str_at(o, &["metadata", "namespace"]) == ns,
            None => true,
        })
        .cloned()
        .collect()
}

/// A flat list of objects of any of the four kinds is a usable store.
impl RbacObjects for Vec<Value> {
    fn roles(&self, namespace: &str) -> Vec<Value> {
        objects_of_kind(self, "Role", Some(namespace))
    }
    fn role_bindings(&self, namespace: &str) -> Vec<Value> {
        objects_of_kind(self, "RoleBinding", Some(namespace))
    }
    fn cluster_roles(&self) -> Vec<Value> {
        objects_of_kind(self, "ClusterRole", None)
    }
    fn cluster_role_bindings(&self) -> Vec<Value> {
        objects_of_kind(self, "ClusterRoleBinding", None)
    }
}

/// Outcome of [`authorize`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// `reason` is the complete message of the real 403 Status, i.e.
    /// [`forbidden_message`] plus `": RBAC: <resolution errors>"` when role
    /// references could not be resolved.
    Deny {
        reason: String,
    },
}

/// What the authorizer chain answered, in the shape a SubjectAccessReview
/// status reports it: `reason` is the authorizer's own reason (empty for a
/// plain denial and for superusers, `RBAC: allowed by ...` when allowed,
/// `RBAC: <errors>` when role references failed to resolve).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evaluation {
    pub allowed: bool,
    pub reason: String,
}

/// `details` of a failure Status.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct StatusDetails {
    pub group: String,
    /// The resource (that is what `apierrors.NewForbidden` puts in `kind`).
    pub kind: String,
    pub name: String,
}

/// An error response of the API server (a `metav1.Status` with
/// `status: Failure`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct StatusError {
    pub code: u16,
    /// `Forbidden`, `BadRequest` or `InternalError`.
    pub reason: &'static str,
    pub message: String,
    /// `Some` for Forbidden (possibly with every field empty, which the real
    /// server serializes as `"details":{}`), `None` for BadRequest.
    pub details: Option<StatusDetails>,
}

impl StatusError {
    /// The `metav1.Status` JSON body, field for field as the real server
    /// writes it.
    pub fn to_status(&self) -> Value {
        let mut status = Map::new();
        status.insert("kind".into(), json!("Status"));
        status.insert("apiVersion".into(), json!("v1"));
        status.insert("metadata".into(), json!({}));
        status.insert("status".into(), json!("Failure"));
        status.insert("message".into(), json!(self.message));
        status.insert("reason".into(), json!(self.reason));
        if let Some(d) = &self.details {
            let mut details = Map::new();
            if !d.name.is_empty() {
                details.insert("name".into(), json!(d.name));
            }
            if !d.group.is_empty() {
                details.insert("group".into(), json!(d.group));
            }
            if !d.kind.is_empty() {
                details.insert("kind".into(), json!(d.kind));
            }
            status.insert("details".into(), Value::Object(details));
        }
        status.insert("code".into(), json!(self.code));
        Value::Object(status)
    }

    fn bad_request(message: String) -> Self {
        StatusError {
            code: 400,
            reason: "BadRequest",
            message,
            details: None,
        }
    }
}

// ---------------------------------------------------------------------------
// Go-compatible formatting helpers
// ---------------------------------------------------------------------------

/// Go's `%q` for a `[]string`.
fn go_quote_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| gofmt::quote(s)).collect();
    format!("[{}]", quoted.join(" "))
}

/// The replacer the real server runs over the "User ... cannot ..." text so
/// that an error never looks like HTML.
fn sanitize(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `utilerrors.NewAggregate(errs).Error()`: duplicates dropped, a single
/// message as is, several in brackets.
fn aggregate_errors(errors: &[String]) -> String {
    let mut seen: Vec<&str> = Vec::new();
    for e in errors {
        if !seen.contains(&e.as_str()) {
            seen.push(e);
        }
    }
    match seen.len() {
        0 => String::new(),
        1 => seen[0].to_string(),
        _ => format!("[{}]", seen.join(", ")),
    }
}

// ---------------------------------------------------------------------------
// JSON access helpers
// ---------------------------------------------------------------------------

fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut cur = v;
    for p in path {
        match cur.get(*p) {
            Some(next) => cur = next,
            None => return "",
        }
    }
    cur.as_str().unwrap_or("")
}

fn string_list(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .map(|i| i.as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// Policy rules
// ---------------------------------------------------------------------------

/// A `rbac/v1` PolicyRule. Absent and empty lists are the same thing here, as
/// they are for the semantic equality the aggregation controller uses.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
struct PolicyRule {
    verbs: Vec<String>,
    api_groups: Vec<String>,
    resources: Vec<String>,
    resource_names: Vec<String>,
    non_resource_urls: Vec<String>,
}

impl PolicyRule {
    fn from_value(v: &Value) -> Self {
        PolicyRule {
            verbs: string_list(v.get("verbs")),
            api_groups: string_list(v.get("apiGroups")),
            resources: string_list(v.get("resources")),
            resource_names: string_list(v.get("resourceNames")),
            non_resource_urls: string_list(v.get("nonResourceURLs")),
        }
    }

    fn list_of(role: &Value) -> Vec<PolicyRule> {
        role.get("rules")
            .and_then(Value::as_array)
            .map(|rules| rules.iter().map(PolicyRule::from_value).collect())
            .unwrap_or_default()
    }

    /// JSON as the API serializes it (`verbs` always, the rest omitempty).
    fn to_value(&self) -> Value {
        let mut m = Map::new();
        if !self.api_groups.is_empty() {
            m.insert("apiGroups".into(), json!(self.api_groups));
        }
        if !self.non_resource_urls.is_empty() {
            m.insert("nonResourceURLs".into(), json!(self.non_resource_urls));
        }
        if !self.resource_names.is_empty() {
            m.insert("resourceNames".into(), json!(self.resource_names));
        }
        if !self.resources.is_empty() {
            m.insert("resources".into(), json!(self.resources));
        }
        m.insert("verbs".into(), json!(self.verbs));
        Value::Object(m)
    }

    fn verb_matches(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == "*" || v == verb)
    }

    fn api_group_matches(&self, group: &str) -> bool {
        self.api_groups.iter().any(|g| g == "*" || g == group)
    }

    /// `*`, the exact `resource[/subresource]`, or `*/subresource`. There is
    /// no `resource/*` form upstream.
    fn resource_matches(&self, combined: &str, subresource: &str) -> bool {
        self.resources.iter().any(|r| {
            r == "*"
                || r == combined
                || (!subresource.is_empty()
                    && r.len() == subresource.len() + 2
                    && r.starts_with("*/")
                    && r.ends_with(subresource))
        })
    }

    /// A rule without resourceNames matches any (or no) name; a rule with
    /// resourceNames only matches requests naming one of them, so it never
    /// matches create, or list/watch/deletecollection without a name.
    fn resource_name_matches(&self, name: &str) -> bool {
        self.resource_names.is_empty() || self.resource_names.iter().any(|n| n == name)
    }

    fn non_resource_url_matches(&self, path: &str) -> bool {
        self.non_resource_urls.iter().any(|u| {
            u == "*" || u == path || (u.ends_with('*') && path.starts_with(u.trim_end_matches('*')))
        })
    }

    fn allows(&self, attrs: &Attributes) -> bool {
        if attrs.resource_request {
            let combined = if attrs.subresource.is_empty() {
                attrs.resource.clone()
            } else {
                format!("{}/{}", attrs.resource, attrs.subresource)
            };
            self.verb_matches(&attrs.verb)
                && self.api_group_matches(&attrs.api_group)
                && self.resource_matches(&combined, &attrs.subresource)
                && self.resource_name_matches(&attrs.name)
        } else {
            self.verb_matches(&attrs.verb) && self.non_resource_url_matches(&attrs.path)
        }
    }
}

// ---------------------------------------------------------------------------
// ClusterRole aggregation
// ---------------------------------------------------------------------------

struct ClusterRoleEntry {
    name: String,
    labels: BTreeMap<String, String>,
    /// `Some` when the role has an aggregationRule.
    selectors: Option<Vec<Value>>,
    rules: Vec<PolicyRule>,
}

/// `metav1.LabelSelectorAsSelector` followed by `Matches`. `Err` for a
/// selector the real conversion rejects.
fn selector_matches(selector: &Value, labels: &BTreeMap<String, String>) -> Result<bool, ()> {
    let match_labels = string_map(selector.get("matchLabels"));
    let expressions = selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    // An empty selector selects everything.
    let mut matches = true;
    for (k, v) in &match_labels {
        if labels.get(k) != Some(v) {
            matches = false;
        }
    }
    for expr in &expressions {
        let key = str_at(expr, &["key"]);
        let values = string_list(expr.get("values"));
        let present = labels.get(key);
        let ok = match str_at(expr, &["operator"]) {
            "In" => {
                if values.is_empty() {
                    return Err(());
                }
                present.is_some_and(|p| values.contains(p))
            }
            "NotIn" => {
                if values.is_empty() {
                    return Err(());
                }
                present.is_none_or(|p| !values.contains(p))
            }
            "Exists" => {
                if !values.is_empty() {
                    return Err(());
                }
                present.is_some()
            }
            "DoesNotExist" => {
                if !values.is_empty() {
                    return Err(());
                }
                present.is_none()
            }
            _ => return Err(()),
        };
        if !ok {
            matches = false;
        }
    }
    Ok(matches)
}

fn cluster_role_entries(cluster_roles: &[Value]) -> Vec<ClusterRoleEntry> {
    let mut entries: Vec<ClusterRoleEntry> = Vec::new();
    for cr in cluster_roles {
        let name = str_at(cr, &["metadata", "name"]).to_string();
        if entries.iter().any(|e| e.name == name) {
            continue;
        }
        let selectors = match cr.get("aggregationRule") {
            None | Some(Value::Null) => None,
            Some(rule) => Some(
                rule.get("clusterRoleSelectors")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
            ),
        };
        entries.push(ClusterRoleEntry {
            labels: string_map(cr.get("metadata").and_then(|m| m.get("labels"))),
            selectors,
            rules: PolicyRule::list_of(cr),
            name,
        });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    entries
}

/// One pass of the aggregation controller over one role. `None` when a
/// selector is invalid (the controller then leaves the stored rules alone).
fn aggregate_once(
    role: &ClusterRoleEntry,
    selectors: &[Value],
    entries: &[ClusterRoleEntry],
    current: &HashMap<String, Vec<PolicyRule>>,
) -> Option<Vec<PolicyRule>> {
    let mut rules: Vec<PolicyRule> = Vec::new();
    for selector in selectors {
        for other in entries {
            if other.name == role.name {
                continue;
            }
            if !selector_matches(selector, &other.labels).ok()? {
                continue;
            }
            for rule in current.get(&other.name).into_iter().flatten() {
                if !rules.contains(rule) {
                    rules.push(rule.clone());
                }
            }
        }
    }
    Some(rules)
}

/// The rules every ClusterRole has once the aggregation controller has
/// settled.
fn effective_cluster_role_rules(entries: &[ClusterRoleEntry]) -> HashMap<String, Vec<PolicyRule>> {
    let mut current: HashMap<String, Vec<PolicyRule>> = entries
        .iter()
        .map(|e| (e.name.clone(), e.rules.clone()))
        .collect();
    let aggregated: Vec<&ClusterRoleEntry> =
        entries.iter().filter(|e| e.selectors.is_some()).collect();
    for _ in 0..aggregated.len() + 2 {
        let mut changed = false;
        for role in &aggregated {
            let selectors = role.selectors.as_deref().unwrap_or_default();
            let Some(rules) = aggregate_once(role, selectors, entries, &current) else {
                continue;
            };
            if current.get(&role.name) != Some(&rules) {
                current.insert(role.name.clone(), rules);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    current
}

/// For a ClusterRole with an `aggregationRule`, the rules the real cluster
/// role aggregation controller would have written into it (what a GET on the
/// object returns on a real cluster). `None` if there is no such ClusterRole
/// or it is not aggregated.
pub fn aggregated_cluster_role_rules(objects: &dyn RbacObjects, name: &str) -> Option<Vec<Value>> {
    let entries = cluster_role_entries(&objects.cluster_roles());
    let entry = entries.iter().find(|e| e.name == name)?;
    entry.selectors.as_ref()?;
    let effective = effective_cluster_role_rules(&entries);
    Some(
        effective
            .get(name)
            .map(|rules| rules.iter().map(PolicyRule::to_value).collect())
            .unwrap_or_default(),
    )
}

// ---------------------------------------------------------------------------
// Rule resolution (DefaultRuleResolver.VisitRulesFor)
// ---------------------------------------------------------------------------

/// Where a rule came from; only rendered for the "allowed by" reason.
struct RuleSource<'a> {
    binding: &'a Value,
    subject: &'a Value,
    binding_namespace: &'a str,
}

impl RuleSource<'_> {
    fn describe(&self) -> String {
        let role_kind = str_at(self.binding, &["roleRef", "kind"]);
        let role_name = str_at(self.binding, &["roleRef", "name"]);
        let name = str_at(self.binding, &["metadata", "name"]);
        let subject_kind = str_at(self.subject, &["kind"]);
        let subject_name = str_at(self.subject, &["name"]);
        let subject = if subject_kind == "ServiceAccount" {
            let ns = match str_at(self.subject, &["namespace"]) {
                "" => self.binding_namespace,
                ns => ns,
            };
            format!(
                "{subject_kind} {}",
                gofmt::quote(&format!("{subject_name}/{ns}"))
            )
        } else {
            format!("{subject_kind} {}", gofmt::quote(subject_name))
        };
        if self.binding_namespace.is_empty() {
            format!(
                "ClusterRoleBinding {} of {role_kind} {} to {subject}",
                gofmt::quote(name),
                gofmt::quote(role_name)
            )
        } else {
            format!(
                "RoleBinding {} of {role_kind} {} to {subject}",
                gofmt::quote(&format!("{name}/{}", self.binding_namespace)),
                gofmt::quote(role_name)
            )
        }
    }
}

enum Visit<'a> {
    Rule(&'a RuleSource<'a>, &'a PolicyRule),
    Error(String),
}

struct Resolver<'o> {
    objects: &'o dyn RbacObjects,
    /// ClusterRole rules after aggregation; loaded on first use.
    cluster_roles: Option<HashMap<String, Vec<PolicyRule>>>,
}

impl<'o> Resolver<'o> {
    fn new(objects: &'o dyn RbacObjects) -> Self {
        Resolver {
            objects,
            cluster_roles: None,
        }
    }

    fn cluster_role_rules(&mut self, name: &str) -> Option<Vec<PolicyRule>> {
        let objects = self.objects;
        let index = self.cluster_roles.get_or_insert_with(|| {
            effective_cluster_role_rules(&cluster_role_entries(&objects.cluster_roles()))
        });
        index.get(name).cloned()
    }

    /// GetRoleReferenceRules, with the lister error texts.
    fn role_ref_rules(
        &mut self,
        role_ref: &Value,
        namespace: &str,
    ) -> Result<Vec<PolicyRule>, String> {
        let kind = str_at(role_ref, &["kind"]);
        let name = str_at(role_ref, &["name"]);
        match kind {
            "Role" => self
                .objects
                .roles(namespace)
                .iter()
                .find(|r| str_at(r, &["metadata", "name"]) == name)
                .map(PolicyRule::list_of)
                .ok_or_else(|| format!("role.{RBAC_GROUP} {} not found", gofmt::quote(name))),
            "ClusterRole" => self.cluster_role_rules(name).ok_or_else(|| {
                format!("clusterrole.{RBAC_GROUP} {} not found", gofmt::quote(name))
            }),
            _ => Err(format!(
                "unsupported role reference kind: {}",
                gofmt::quote(kind)
            )),
        }
    }

    /// Visits every rule that applies to `user` in `namespace`; stops when
    /// the visitor returns false.
    fn visit_rules_for(
        &mut self,
        user: &UserInfo,
        namespace: &str,
        visitor: &mut dyn FnMut(Visit<'_>) -> bool,
    ) {
        let cluster_bindings = self.objects.cluster_role_bindings();
        for binding in &cluster_bindings {
            if !self.visit_binding(user, binding, "", visitor) {
                return;
            }
        }
        if namespace.is_empty() {
            return;
        }
        let bindings = self.objects.role_bindings(namespace);
        for binding in &bindings {
            if !self.visit_binding(user, binding, namespace, visitor) {
                return;
            }
        }
    }

    fn visit_binding(
        &mut self,
        user: &UserInfo,
        binding: &Value,
        namespace: &str,
        visitor: &mut dyn FnMut(Visit<'_>) -> bool,
    ) -> bool {
        let empty = Vec::new();
        let subjects = binding
            .get("subjects")
            .and_then(Value::as_array)
            .unwrap_or(&empty);
        let Some(subject) = subjects
            .iter()
            .find(|s| subject_applies(user, s, namespace))
        else {
            return true;
        };
        let role_ref = binding.get("roleRef").unwrap_or(&Value::Null);
        match self.role_ref_rules(role_ref, namespace) {
            Err(e) => visitor(Visit::Error(e)),
            Ok(rules) => {
                let source = RuleSource {
                    binding,
                    subject,
                    binding_namespace: namespace,
                };
                rules.iter().all(|rule| visitor(Visit::Rule(&source, rule)))
            }
        }
    }
}

/// appliesToUser: User by name, Group by membership, ServiceAccount by its
/// username; a ServiceAccount subject without a namespace takes the
/// RoleBinding's namespace and never matches in a ClusterRoleBinding.
fn subject_applies(user: &UserInfo, subject: &Value, binding_namespace: &str) -> bool {
    let name = str_at(subject, &["name"]);
    match str_at(subject, &["kind"]) {
        "User" => user.name == name,
        "Group" => user.groups.iter().any(|g| g == name),
        "ServiceAccount" => {
            let ns = match str_at(subject, &["namespace"]) {
                "" => binding_namespace,
                ns => ns,
            };
            !ns.is_empty() && user.name == format!("{SA_USERNAME_PREFIX}{ns}:{name}")
        }
        _ => false,
    }
}

// ---------------------------------------------------------------------------
// Authorization
// ---------------------------------------------------------------------------

/// Runs the authorizer chain (superuser group, then RBAC) and reports the
/// decision with the authorizer's reason, as a SubjectAccessReview would.
pub fn evaluate(objects: &dyn RbacObjects, user: &UserInfo, attrs: &Attributes) -> Evaluation {
    if user.groups.iter().any(|g| g == SYSTEM_MASTERS) {
        return Evaluation {
            allowed: true,
            reason: String::new(),
        };
    }
    let mut allowed_by: Option<String> = None;
    let mut errors: Vec<String> = Vec::new();
    Resolver::new(objects).visit_rules_for(user, &attrs.namespace, &mut |visit| match visit {
        Visit::Rule(source, rule) => {
            if rule.allows(attrs) {
                allowed_by = Some(source.describe());
                false
            } else {
                true
            }
        }
        Visit::Error(e) => {
            errors.push(e);
            true
        }
    });
    match allowed_by {
        Some(source) => Evaluation {
            allowed: true,
            reason: format!("RBAC: allowed by {source}"),
        },
        None if errors.is_empty() => Evaluation {
            allowed: false,
            reason: String::new(),
        },
        None => Evaluation {
            allowed: false,
            reason: format!("RBAC: {}", aggregate_errors(&errors)),
        },
    }
}

/// Authorizes a request. On denial the reason is the full text of the real
/// 403 Status message.
pub fn authorize(objects: &dyn RbacObjects, user: &UserInfo, attrs: &Attributes) -> Decision {
    let evaluation = evaluate(objects, user, attrs);
    if evaluation.allowed {
        Decision::Allow
    } else {
        Decision::Deny {
            reason: forbidden_error(user, attrs, &evaluation.reason).message,
        }
    }
}

/// The "User ... cannot ..." part of a 403 (responsewriters.forbiddenMessage).
fn forbidden_detail(user: &UserInfo, attrs: &Attributes) -> String {
    let user = gofmt::quote(&user.name);
    if !attrs.resource_request {
        return format!(
            "User {user} cannot {} path {}",
            attrs.verb,
            gofmt::quote(&attrs.path)
        );
    }
    let resource = if attrs.subresource.is_empty() {
        attrs.resource.clone()
    } else {
        format!("{}/{}", attrs.resource, attrs.subresource)
    };
    let scope = if attrs.namespace.is_empty() {
        "at the cluster scope".to_string()
    } else {
        format!("in the namespace {}", gofmt::quote(&attrs.namespace))
    };
    format!(
        "User {user} cannot {} resource {} in API group {} {scope}",
        attrs.verb,
        gofmt::quote(&resource),
        gofmt::quote(&attrs.api_group)
    )
}

/// The 403 Status the real server sends when `user` is denied `attrs`;
/// `reason` is the authorizer's reason (appended after a colon when not
/// empty).
pub fn forbidden_error(user: &UserInfo, attrs: &Attributes, reason: &str) -> StatusError {
    let mut err = sanitize(&forbidden_detail(user, attrs));
    if !reason.is_empty() {
        err.push_str(": ");
        err.push_str(reason);
    }
    // apierrors.NewForbidden(GroupResource{group, resource}, name, err)
    let group_resource = if attrs.api_group.is_empty() {
        attrs.resource.clone()
    } else {
        format!("{}.{}", attrs.resource, attrs.api_group)
    };
    let message = if attrs.api_group.is_empty() && attrs.resource.is_empty() {
        format!("forbidden: {err}")
    } else if attrs.name.is_empty() {
        format!("{group_resource} is forbidden: {err}")
    } else {
        format!(
            "{group_resource} {} is forbidden: {err}",
            gofmt::quote(&attrs.name)
        )
    };
    StatusError {
        code: 403,
        reason: "Forbidden",
        message,
        details: Some(StatusDetails {
            group: attrs.api_group.clone(),
            kind: attrs.resource.clone(),
            name: attrs.name.clone(),
        }),
    }
}

/// The 403 message for `user` being denied `attrs` when the authorizer gave
/// no reason (the usual case).
pub fn forbidden_message(user: &UserInfo, attrs: &Attributes) -> String {
    forbidden_error(user, attrs, "").message
}

// ---------------------------------------------------------------------------
// Rules review (SelfSubjectRulesReview)
// ---------------------------------------------------------------------------

fn collect_rules(
    objects: &dyn RbacObjects,
    user: &UserInfo,
    namespace: &str,
) -> (Vec<PolicyRule>, Vec<String>) {
    let mut rules = Vec::new();
    let mut errors = Vec::new();
    Resolver::new(objects).visit_rules_for(user, namespace, &mut |visit| {
        match visit {
            Visit::Rule(_, rule) => rules.push(rule.clone()),
            Visit::Error(e) => errors.push(e),
        }
        true
    });
    (rules, errors)
}

/// The RBAC rules of `user` in `namespace` (cluster-wide bindings plus the
/// namespace's RoleBindings), split the way SelfSubjectRulesReview reports
/// them: `ResourceRule`s and `NonResourceRule`s. A policy rule naming both
/// resources and URLs shows up in both lists. Membership of
/// `system:masters` adds nothing here, as upstream.
pub fn rules_for(
    objects: &dyn RbacObjects,
    user: &UserInfo,
    namespace: &str,
) -> (Vec<Value>, Vec<Value>) {
    let (rules, _) = collect_rules(objects, user, namespace);
    split_rules(&rules)
}

fn split_rules(rules: &[PolicyRule]) -> (Vec<Value>, Vec<Value>) {
    let mut resource_rules = Vec::new();
    let mut non_resource_rules = Vec::new();
    for rule in rules {
        if !rule.resources.is_empty() {
            let mut m = Map::new();
            m.insert("verbs".into(), json!(rule.verbs));
            if !rule.api_groups.is_empty() {
                m.insert("apiGroups".into(), json!(rule.api_groups));
            }
            m.insert("resources".into(), json!(rule.resources));
            if !rule.resource_names.is_empty() {
                m.insert("resourceNames".into(), json!(rule.resource_names));
            }
            resource_rules.push(Value::Object(m));
        }
        if !rule.non_resource_urls.is_empty() {
            non_resource_rules.push(json!({
                "verbs": rule.verbs,
                "nonResourceURLs": rule.non_resource_urls,
            }));
        }
    }
    (resource_rules, non_resource_rules)
}

/// A complete `SubjectRulesReviewStatus` (`resourceRules`,
/// `nonResourceRules`, `incomplete`, and `evaluationError` when role
/// references failed to resolve).
pub fn rules_review_status(objects: &dyn RbacObjects, user: &UserInfo, namespace: &str) -> Value {
    let (rules, errors) = collect_rules(objects, user, namespace);
    let (resource_rules, non_resource_rules) = split_rules(&rules);
    let mut status = json!({
        "resourceRules": resource_rules,
        "nonResourceRules": non_resource_rules,
        "incomplete": false,
    });
    if !errors.is_empty() {
        status["evaluationError"] = json!(aggregate_errors(&errors));
    }
    status
}

// ---------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------

fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label_unbounded)
}

/// A subdomain part: like a label but without the 63-character limit (the
/// upstream regex only bounds the whole name).
fn is_dns1123_label_unbounded(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// serviceaccount.SplitUsername: `system:serviceaccount:<ns>:<name>` with a
/// valid namespace (DNS label) and name (DNS subdomain).
fn split_service_account_username(username: &str) -> Option<(String, String)> {
    let rest = username.strip_prefix(SA_USERNAME_PREFIX)?;
    let mut parts = rest.split(':');
    let (ns, name) = (parts.next()?, parts.next()?);
    if parts.next().is_some() || !is_dns1123_label(ns) || !is_dns1123_subdomain(name) {
        return None;
    }
    Some((ns.to_string(), name.to_string()))
}

/// The node name of a `system:node:<name>` username with a valid name.
fn node_name(username: &str) -> Option<String> {
    let name = username.strip_prefix(NODE_USERNAME_PREFIX)?;
    is_dns1123_subdomain(name).then(|| name.to_string())
}

fn service_account_groups(namespace: &str) -> Vec<String> {
    vec![
        SA_ALL_GROUP.to_string(),
        format!("{SA_GROUP_PREFIX}{namespace}"),
    ]
}

fn ensure_group(groups: &mut Vec<String>, group: &str) {
    if !groups.iter().any(|g| g == group) {
        groups.push(group.to_string());
    }
}

/// The group defaulting every impersonation path ends with.
fn finish_groups(name: &str, groups: &mut Vec<String>) {
    if name == ANONYMOUS {
        ensure_group(groups, ALL_UNAUTHENTICATED);
    } else if !groups.iter().any(|g| g == ALL_UNAUTHENTICATED) {
        ensure_group(groups, ALL_AUTHENTICATED);
    }
}

// ---------------------------------------------------------------------------
// Impersonation
// ---------------------------------------------------------------------------

/// The impersonation headers of a request: `Impersonate-User`,
/// `Impersonate-Uid`, every `Impersonate-Group`, and the
/// `Impersonate-Extra-<key>` headers (key lower-cased and %-decoded by the
/// caller, one entry per value).
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ImpersonationRequest {
    pub user: Option<String>,
    pub uid: Option<String>,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl ImpersonationRequest {
    fn user_name(&self) -> &str {
        self.user.as_deref().unwrap_or("")
    }
    fn uid_value(&self) -> &str {
        self.uid.as_deref().unwrap_or("")
    }
    /// True when no impersonation header is present at all.
    pub fn is_empty(&self) -> bool {
        self.user_name().is_empty()
            && self.uid_value().is_empty()
            && self.groups.is_empty()
            && self.extra.is_empty()
    }
}

fn impersonation_attrs(verb: &str, group: &str, resource: &str, name: &str) -> Attributes {
    Attributes {
        verb: verb.into(),
        api_group: group.into(),
        api_version: "v1".into(),
        resource: resource.into(),
        name: name.into(),
        resource_request: true,
        ..Default::default()
    }
}

fn check(
    objects: &dyn RbacObjects,
    requester: &UserInfo,
    attrs: &Attributes,
) -> Result<(), StatusError> {
    let evaluation = evaluate(objects, requester, attrs);
    if evaluation.allowed {
        Ok(())
    } else {
        Err(forbidden_error(requester, attrs, &evaluation.reason))
    }
}

/// Go's `%v` of one `v1.ObjectReference` (Kind, Namespace, Name, UID,
/// APIVersion, ResourceVersion, FieldPath).
fn object_reference(
    kind: &str,
    namespace: &str,
    name: &str,
    api_version: &str,
    field_path: &str,
) -> String {
    format!("{{{kind} {namespace} {name}  {api_version}  {field_path}}}")
}

/// Impersonation as the legacy `WithImpersonation` filter does it (the
/// filter a kube-apiserver runs when the `ConstrainedImpersonation` feature
/// gate is off; before 1.36 that was the default). Every requested value is
/// authorized with verb `impersonate`: `users` (or `serviceaccounts` in the
/// account's namespace for a service account username) and `groups` in the
/// core group, `userextras/<key>` and `uids` in `authentication.k8s.io`.
///
/// The error is the message of the failure Status: 403 Forbidden for a
/// denied check, 400 BadRequest when groups, extras or a UID are requested
/// without a user ([`impersonate_legacy`] returns the whole Status).
/// Without any impersonation header the requester is returned unchanged.
pub fn impersonate(
    objects: &dyn RbacObjects,
    requester: &UserInfo,
    req: &ImpersonationRequest,
) -> Result<UserInfo, String> {
    impersonate_legacy(objects, requester, req).map_err(|e| e.message)
}

/// [`impersonate`] returning the full error Status.
pub fn impersonate_legacy(
    objects: &dyn RbacObjects,
    requester: &UserInfo,
    req: &ImpersonationRequest,
) -> Result<UserInfo, StatusError> {
    let username = req.user_name();
    let has_user = !username.is_empty();
    let uid = req.uid_value();

    // The requests, in the order the filter builds and checks them.
    let mut checks: Vec<(Attributes, String)> = Vec::new();
    let service_account = if has_user {
        split_service_account_username(username)
    } else {
        None
    };
    if has_user {
        match &service_account {
            Some((ns, name)) => {
                let mut a = impersonation_attrs("impersonate", "", "serviceaccounts", name);
                a.api_version = String::new();
                a.namespace = ns.clone();
                checks.push((a, object_reference("ServiceAccount", ns, name, "", "")));
            }
            None => {
                let mut a = impersonation_attrs("impersonate", "", "users", username);
                a.api_version = String::new();
                checks.push((a, object_reference("User", "", username, "", "")));
            }
        }
    }
    for group in &req.groups {
        let mut a = impersonation_attrs("impersonate", "", "groups", group);
        a.api_version = String::new();
        checks.push((a, object_reference("Group", "", group, "", "")));
    }
    let auth_v1 = format!("{AUTHENTICATION_GROUP}/v1");
    for (key, values) in &req.extra {
        for value in values {
            let a = impersonation_attrs("impersonate", AUTHENTICATION_GROUP, "userextras", value)
                .with_subresource(key);
            checks.push((a, object_reference("UserExtra", "", value, &auth_v1, key)));
        }
    }
    if !uid.is_empty() {
        let a = impersonation_attrs("impersonate", AUTHENTICATION_GROUP, "uids", uid);
        checks.push((a, object_reference("UID", "", uid, &auth_v1, "")));
    }

    if !has_user && (!req.groups.is_empty() || !req.extra.is_empty() || !uid.is_empty()) {
        let refs: Vec<&str> = checks.iter().map(|(_, r)| r.as_str()).collect();
        return Err(StatusError::bad_request(format!(
            "requested [{}] without impersonating a user",
            refs.join(" ")
        )));
    }
    if checks.is_empty() {
        return Ok(requester.clone());
    }
    for (attrs, _) in &checks {
        check(objects, requester, attrs)?;
    }

    let mut groups: Vec<String> = match &service_account {
        Some((ns, _)) if req.groups.is_empty() => service_account_groups(ns),
        _ => Vec::new(),
    };
    groups.extend(req.groups.iter().cloned());
    finish_groups(username, &mut groups);
    Ok(UserInfo {
        name: username.to_string(),
        uid: uid.to_string(),
        groups,
        extra: req
            .extra
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    })
}

/// The user the headers ask for, before any defaulting (user.DefaultInfo
/// built by processImpersonationHeaders).
struct WantedUser {
    name: String,
    uid: String,
    groups: Vec<String>,
    extra: BTreeMap<String, Vec<String>>,
}

impl WantedUser {
    fn only_username_set(&self) -> bool {
        self.uid.is_empty() && self.groups.is_empty() && self.extra.is_empty()
    }

    /// Go's `%#v` of the `*user.DefaultInfo`.
    fn go_syntax(&self) -> String {
        let groups = if self.groups.is_empty() {
            "[]string(nil)".to_string()
        } else {
            let quoted: Vec<String> = self.groups.iter().map(|g| gofmt::quote(g)).collect();
            format!("[]string{{{}}}", quoted.join(", "))
        };
        let extra = if self.extra.is_empty() {
            "map[string][]string(nil)".to_string()
        } else {
            let entries: Vec<String> = self
                .extra
                .iter()
                .map(|(k, vs)| {
                    let quoted: Vec<String> = vs.iter().map(|v| gofmt::quote(v)).collect();
                    format!("{}:[]string{{{}}}", gofmt::quote(k), quoted.join(", "))
                })
                .collect();
            format!("map[string][]string{{{}}}", entries.join(", "))
        };
        format!(
            "&user.DefaultInfo{{Name:{}, UID:{}, Groups:{groups}, Extra:{extra}}}",
            gofmt::quote(&self.name),
            gofmt::quote(&self.uid)
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    AssociatedNode,
    ArbitraryNode,
    ServiceAccount,
    UserInfo,
    Legacy,
}

/// The order the constrained impersonation filter tries the modes in.
const MODES: [Mode; 5] = [
    Mode::AssociatedNode,
    Mode::ArbitraryNode,
    Mode::ServiceAccount,
    Mode::UserInfo,
    Mode::Legacy,
];

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::AssociatedNode => "associated-node",
            Mode::ArbitraryNode => "arbitrary-node",
            Mode::ServiceAccount => "serviceaccount",
            Mode::UserInfo => "user-info",
            Mode::Legacy => "legacy",
        }
    }

    /// Whether a constrained mode applies to this requester and wanted user.
    fn applies(self, wanted: &WantedUser, requester: &UserInfo) -> bool {
        match self {
            Mode::AssociatedNode => {
                wanted.only_username_set()
                    && node_name(&wanted.name).is_some_and(|node| {
                        split_service_account_username(&requester.name).is_some()
                            && requester
                                .extra
                                .get(NODE_NAME_EXTRA_KEY)
                                .is_some_and(|v| v.len() == 1 && v[0] == node)
                    })
            }
            Mode::ArbitraryNode => wanted.only_username_set() && node_name(&wanted.name).is_some(),
            Mode::ServiceAccount => {
                wanted.only_username_set() && split_service_account_username(&wanted.name).is_some()
            }
            Mode::UserInfo => {
                node_name(&wanted.name).is_none()
                    && split_service_account_username(&wanted.name).is_none()
            }
            Mode::Legacy => true,
        }
    }
}

/// One impersonation mode's authorization checks.
struct ModeCheck<'a> {
    objects: &'a dyn RbacObjects,
    requester: &'a UserInfo,
    mode: Mode,
    /// `impersonate:<mode>` or `impersonate` for legacy.
    verb: String,
    constrained: bool,
}

impl ModeCheck<'_> {
    /// Authorizes through the mode's authorizer. The associated-node mode
    /// authorizes `impersonate:associated-node` for every node name (`*`),
    /// and its denials name `*` too.
    fn authorize(&self, attrs: &Attributes) -> Result<(), StatusError> {
        if self.mode == Mode::AssociatedNode && attrs.verb == "impersonate:associated-node" {
            let mut wildcard = attrs.clone();
            wildcard.name = "*".into();
            let mut requester = self.requester.clone();
            requester.extra = BTreeMap::from([(
                ASSOCIATED_NODE_KEYS_EXTRA.to_string(),
                self.requester.extra.keys().cloned().collect(),
            )]);
            return check(self.objects, &requester, &wildcard);
        }
        check(self.objects, self.requester, attrs)
    }

    /// Group used for users and groups: authentication.k8s.io for the
    /// constrained verbs, the core group for legacy `impersonate`.
    fn identity_group(&self) -> &'static str {
        if self.constrained {
            AUTHENTICATION_GROUP
        } else {
            ""
        }
    }

    fn forbidden(&self, attrs: &Attributes, reason: &str) -> StatusError {
        forbidden_error(self.requester, attrs, reason)
    }

    /// impersonationModeState.check: username, UID, groups, extra.
    fn check_identity(&self, wanted: &WantedUser) -> Result<UserInfo, StatusError> {
        let mut groups = wanted.groups.clone();

        let mut user_attrs =
            impersonation_attrs(&self.verb, self.identity_group(), "users", &wanted.name);
        if self.constrained
            && let Some(node) = node_name(&wanted.name)
        {
            user_attrs.resource = "nodes".into();
            user_attrs.name = node;
            if !wanted.groups.is_empty() {
                return Err(self.forbidden(
                    &user_attrs,
                    &format!(
                        "when impersonating a node, cannot impersonate groups {}",
                        go_quote_list(&wanted.groups)
                    ),
                ));
            }
            groups = vec![NODES_GROUP.to_string()];
        }
        if let Some((ns, name)) = split_service_account_username(&wanted.name) {
            user_attrs.resource = "serviceaccounts".into();
            user_attrs.namespace = ns.clone();
            user_attrs.name = name;
            if self.constrained && !wanted.groups.is_empty() {
                return Err(self.forbidden(
                    &user_attrs,
                    &format!(
                        "when impersonating a service account, cannot impersonate groups {}",
                        go_quote_list(&wanted.groups)
                    ),
                ));
            }
            if wanted.groups.is_empty() {
                groups = service_account_groups(&ns);
            }
        }
        self.authorize(&user_attrs)?;

        if !wanted.uid.is_empty() {
            self.authorize(&impersonation_attrs(
                &self.verb,
                AUTHENTICATION_GROUP,
                "uids",
                &wanted.uid,
            ))?;
        }

        self.check_groups(&wanted.groups)?;
        self.check_extra(&wanted.extra)?;

        finish_groups(&wanted.name, &mut groups);
        Ok(UserInfo {
            name: wanted.name.clone(),
            uid: wanted.uid.clone(),
            groups,
            extra: wanted.extra.clone(),
        })
    }

    fn check_groups(&self, groups: &[String]) -> Result<(), StatusError> {
        if groups.is_empty() {
            return Ok(());
        }
        let mut attrs = impersonation_attrs(&self.verb, self.identity_group(), "groups", "");
        if self.constrained {
            if groups.iter().any(String::is_empty) {
                return Err(self.forbidden(
                    &attrs,
                    "impersonating the empty string group is not allowed",
                ));
            }
            if groups.iter().any(|g| g == SYSTEM_MASTERS) {
                attrs.name = SYSTEM_MASTERS.into();
                return Err(self.forbidden(
                    &attrs,
                    "impersonating the system:masters group is not allowed",
                ));
            }
            if groups.len() >= 4 {
                attrs.name = "*".into();
                if self.authorize(&attrs).is_ok() {
                    return Ok(());
                }
            }
        }
        for group in groups {
            attrs.name = group.clone();
            self.authorize(&attrs)?;
        }
        Ok(())
    }

    fn check_extra(&self, extra: &BTreeMap<String, Vec<String>>) -> Result<(), StatusError> {
        if extra.is_empty() {
            return Ok(());
        }
        let mut attrs = impersonation_attrs(&self.verb, AUTHENTICATION_GROUP, "userextras", "");
        if self.constrained {
            if let Err(msg) = validate_extra(extra) {
                return Err(self.forbidden(&attrs, &msg));
            }
            let values: usize = extra.values().map(Vec::len).sum();
            if extra.len() >= 4 || values >= 4 {
                attrs.subresource = "*".into();
                attrs.name = "*".into();
                if self.authorize(&attrs).is_ok() {
                    return Ok(());
                }
            }
        }
        for (key, values) in extra {
            attrs.subresource = key.clone();
            for value in values {
                attrs.name = value.clone();
                self.authorize(&attrs)?;
            }
        }
        Ok(())
    }
}

const DNS1123_SUBDOMAIN_ERROR: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const HTTP_PATH_ERROR: &str =
    "Invalid path (regex used for validation is '[A-Za-z0-9/\\-._~%!$&'()*+,;=:]+')";

/// The field errors of `IsDomainPrefixedPath(field.NewPath("extra", "key"), key)`.
fn domain_prefixed_path_errors(key: &str) -> Vec<String> {
    let invalid = |value: &str, detail: &str| {
        format!(
            "extra.key: Invalid value: {}: {detail}",
            gofmt::quote(value)
        )
    };
    let Some((host, path)) = key
        .split_once('/')
        .filter(|(h, p)| !h.is_empty() && !p.is_empty())
    else {
        return vec![invalid(
            key,
            "must be a domain-prefixed path (such as \"acme.io/foo\")",
        )];
    };
    let mut errors = Vec::new();
    if host.len() > 253 {
        errors.push(invalid(host, "must be no more than 253 characters"));
    }
    if !is_dns1123_subdomain_pattern(host) {
        errors.push(invalid(host, DNS1123_SUBDOMAIN_ERROR));
    }
    let path_ok = path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/-._~%!$&'()*+,;=:".contains(&b));
    if !path_ok {
        errors.push(invalid(path, HTTP_PATH_ERROR));
    }
    errors
}

fn is_dns1123_subdomain_pattern(s: &str) -> bool {
    !s.is_empty() && s.split('.').all(is_dns1123_label_unbounded)
}

/// The sanity checks constrained impersonation applies to extras.
fn validate_extra(extra: &BTreeMap<String, Vec<String>>) -> Result<(), String> {
    for (key, values) in extra {
        if key.is_empty() {
            return Err("impersonating the empty string key in extra is not allowed".into());
        }
        let errors = domain_prefixed_path_errors(key);
        if !errors.is_empty() {
            return Err(format!(
                "impersonating an invalid key in extra is not allowed: {}",
                aggregate_errors(&errors)
            ));
        }
        if *key != key.to_lowercase() {
            return Err(format!(
                "impersonating a non-lowercase key in extra is not allowed: {}",
                gofmt::quote(key)
            ));
        }
        if values.is_empty() {
            return Err("impersonating empty values in extra is not allowed".into());
        }
        if values.iter().any(String::is_empty) {
            return Err("impersonating the empty string value in extra is not allowed".into());
        }
    }
    Ok(())
}

/// Impersonation as a Kubernetes 1.36+ API server does it by default
/// (feature gate `ConstrainedImpersonation`, beta and on since 1.36).
///
/// The modes are tried in the upstream order associated-node,
/// arbitrary-node, serviceaccount, user-info, legacy; a constrained mode
/// first needs `impersonate-on:<mode>:<verb>` on the request being made and
/// then `impersonate:<mode>` on the identity (`users`, `nodes`,
/// `serviceaccounts`, `groups`, `uids`, `userextras` in
/// `authentication.k8s.io`); legacy needs plain `impersonate` as in
/// [`impersonate`]. A denied request reports the first error met, so a
/// requester with no impersonation rights at all sees e.g.
/// `pods is forbidden: User "bob" cannot impersonate-on:user-info:list
/// resource "pods" in API group "" in the namespace "default"`.
///
/// Like the real filter, the impersonator remembers per requester name which
/// mode last succeeded and tries it first next time, which decides whose
/// error a later denial reports; share one `Impersonator` per server.
#[derive(Debug, Default)]
pub struct Impersonator {
    last_mode: Mutex<HashMap<String, usize>>,
}

impl Impersonator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets which mode each requester last used.
    pub fn reset(&self) {
        self.last_mode
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Resolves the impersonated user for a request described by `attrs`
    /// (the request's own authorization attributes; the user in them is the
    /// requester). Without any impersonation header the requester is
    /// returned unchanged. Errors: 400 when groups, UID or extras come
    /// without a user; 403 when no mode allows the impersonation.
    pub fn impersonate(
        &self,
        objects: &dyn RbacObjects,
        requester: &UserInfo,
        req: &ImpersonationRequest,
        attrs: &Attributes,
    ) -> Result<UserInfo, StatusError> {
        let wanted = WantedUser {
            name: req.user_name().to_string(),
            uid: req.uid_value().to_string(),
            groups: req.groups.clone(),
            extra: req
                .extra
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        if wanted.name.is_empty() {
            if !wanted.uid.is_empty() || !req.groups.is_empty() || !req.extra.is_empty() {
                return Err(StatusError::bad_request(format!(
                    "requested {} without impersonating a user name",
                    wanted.go_syntax()
                )));
            }
            return Ok(requester.clone());
        }

        let cached = self
            .last_mode
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&requester.name)
            .copied();
        let mut first_error: Option<StatusError> = None;
        if let Some(index) = cached {
            match self.try_mode(MODES[index], objects, requester, &wanted, attrs) {
                Ok(Some(user)) => return Ok(user),
                Ok(None) => {}
                Err(e) => first_error = Some(e),
            }
        }
        for (index, mode) in MODES.iter().enumerate() {
            if cached == Some(index) {
                continue;
            }
            match self.try_mode(*mode, objects, requester, &wanted, attrs) {
                Ok(Some(user)) => {
                    self.last_mode
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(requester.name.clone(), index);
                    return Ok(user);
                }
                Ok(None) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error.unwrap_or_else(|| StatusError {
            code: 500,
            reason: "InternalError",
            message: "Internal error occurred: all impersonation modes failed".into(),
            details: None,
        }))
    }

    fn try_mode(
        &self,
        mode: Mode,
        objects: &dyn RbacObjects,
        requester: &UserInfo,
        wanted: &WantedUser,
        attrs: &Attributes,
    ) -> Result<Option<UserInfo>, StatusError> {
        let constrained = mode != Mode::Legacy;
        let checker = ModeCheck {
            objects,
            requester,
            mode,
            verb: if constrained {
                format!("impersonate:{}", mode.name())
            } else {
                "impersonate".into()
            },
            constrained,
        };
        if constrained {
            if !mode.applies(wanted, requester) {
                return Ok(None);
            }
            let mut on = attrs.clone();
            on.verb = format!("impersonate-on:{}:{}", mode.name(), attrs.verb);
            checker.authorize(&on)?;
        }
        checker.check_identity(wanted).map(Some)
    }
}

// ---------------------------------------------------------------------------
// Bootstrap policy
// ---------------------------------------------------------------------------

fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> Value {
    json!({"apiGroups": groups, "resources": resources, "verbs": verbs})
}

fn url_rule(verbs: &[&str], urls: &[&str]) -> Value {
    json!({"nonResourceURLs": urls, "verbs": verbs})
}

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];
const READ_WRITE: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

fn bootstrap_metadata(name: &str, extra_labels: &[(&str, &str)]) -> Value {
    let mut labels = Map::new();
    labels.insert("kubernetes.io/bootstrapping".into(), json!("rbac-defaults"));
    for (k, v) in extra_labels {
        labels.insert((*k).into(), json!(v));
    }
    json!({
        "name": name,
        "labels": labels,
        "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"},
    })
}

fn cluster_role(name: &str, labels: &[(&str, &str)], rules: Vec<Value>) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": bootstrap_metadata(name, labels),
        "rules": rules,
    })
}

fn aggregated_cluster_role(name: &str, labels: &[(&str, &str)], aggregate_label: &str) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": bootstrap_metadata(name, labels),
        "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {aggregate_label: "true"}}]},
        "rules": [],
    })
}

fn cluster_role_binding(name: &str, groups: &[&str]) -> Value {
    let subjects: Vec<Value> = groups
        .iter()
        .map(|g| json!({"apiGroup": RBAC_GROUP, "kind": "Group", "name": g}))
        .collect();
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": bootstrap_metadata(name, &[]),
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": name},
        "subjects": subjects,
    })
}

const TO_ADMIN: &str = "rbac.authorization.k8s.io/aggregate-to-admin";
const TO_EDIT: &str = "rbac.authorization.k8s.io/aggregate-to-edit";
const TO_VIEW: &str = "rbac.authorization.k8s.io/aggregate-to-view";

/// The default ClusterRoles and ClusterRoleBindings of a kube-apiserver that
/// users and clients rely on (a subset of upstream's bootstrap policy; the
/// control-plane component and controller roles are left out), with the
/// rules, labels and annotations upstream gives them. The aggregated roles
/// `admin`, `edit` and `view` carry their aggregationRule and the rules the
/// aggregation controller fills in.
///
/// ClusterRoles: cluster-admin, admin, edit, view, system:aggregate-to-admin,
/// system:aggregate-to-edit, system:aggregate-to-view, system:basic-user,
/// system:discovery, system:public-info-viewer, system:monitoring,
/// system:service-account-issuer-discovery, system:auth-delegator.
///
/// ClusterRoleBindings: cluster-admin (system:masters), system:basic-user and
/// system:discovery (system:authenticated), system:public-info-viewer
/// (system:authenticated, system:unauthenticated), system:monitoring
/// (system:monitoring), system:service-account-issuer-discovery
/// (system:serviceaccounts).
pub fn bootstrap_objects() -> Vec<Value> {
    let mut roles = vec![
        cluster_role(
            "cluster-admin",
            &[],
            vec![rule(&["*"], &["*"], &["*"]), url_rule(&["*"], &["*"])],
        ),
        aggregated_cluster_role("admin", &[], TO_ADMIN),
        aggregated_cluster_role("edit", &[(TO_ADMIN, "true")], TO_EDIT),
        aggregated_cluster_role("view", &[(TO_EDIT, "true")], TO_VIEW),
        cluster_role(
            "system:aggregate-to-admin",
            &[(TO_ADMIN, "true")],
            vec![
                rule(
                    &["create"],
                    &[AUTHORIZATION_GROUP],
                    &["localsubjectaccessreviews"],
                ),
                rule(READ_WRITE, &[RBAC_GROUP], &["rolebindings", "roles"]),
            ],
        ),
        cluster_role(
            "system:aggregate-to-edit",
            &[(TO_EDIT, "true")],
            vec![
                rule(
                    READ,
                    &[""],
                    &[
                        "pods/attach",
                        "pods/exec",
                        "pods/portforward",
                        "pods/proxy",
                        "secrets",
                        "services/proxy",
                    ],
                ),
                rule(&["impersonate"], &[""], &["serviceaccounts"]),
                rule(
                    WRITE,
                    &[""],
                    &[
                        "pods",
                        "pods/attach",
                        "pods/exec",
                        "pods/portforward",
                        "pods/proxy",
                    ],
                ),
                rule(&["create"], &[""], &["pods/eviction"]),
                rule(
                    WRITE,
                    &[""],
                    &[
                        "configmaps",
                        "events",
                        "persistentvolumeclaims",
                        "replicationcontrollers",
                        "replicationcontrollers/scale",
                        "secrets",
                        "serviceaccounts",
                        "services",
                        "services/proxy",
                    ],
                ),
                rule(&["create"], &[""], &["serviceaccounts/token"]),
                rule(
                    WRITE,
                    &["apps"],
                    &[
                        "daemonsets",
                        "deployments",
                        "deployments/rollback",
                        "deployments/scale",
                        "replicasets",
                        "replicasets/scale",
                        "statefulsets",
                        "statefulsets/scale",
                    ],
                ),
                rule(WRITE, &["autoscaling"], &["horizontalpodautoscalers"]),
                rule(WRITE, &["batch"], &["cronjobs", "jobs"]),
                rule(
                    WRITE,
                    &["extensions"],
                    &[
                        "daemonsets",
                        "deployments",
                        "deployments/rollback",
                        "deployments/scale",
                        "ingresses",
                        "networkpolicies",
                        "replicasets",
                        "replicasets/scale",
                        "replicationcontrollers/scale",
                    ],
                ),
                rule(WRITE, &["policy"], &["poddisruptionbudgets"]),
                rule(
                    WRITE,
                    &["networking.k8s.io"],
                    &["ingresses", "networkpolicies"],
                ),
                rule(READ_WRITE, &["coordination.k8s.io"], &["leases"]),
            ],
        ),
        cluster_role(
            "system:aggregate-to-view",
            &[(TO_VIEW, "true")],
            vec![
                rule(
                    READ,
                    &[""],
                    &[
                        "configmaps",
                        "endpoints",
                        "persistentvolumeclaims",
                        "persistentvolumeclaims/status",
                        "pods",
                        "replicationcontrollers",
                        "replicationcontrollers/scale",
                        "serviceaccounts",
                        "services",
                        "services/status",
                    ],
                ),
                rule(
                    READ,
                    &[""],
                    &[
                        "bindings",
                        "events",
                        "limitranges",
                        "namespaces/status",
                        "pods/log",
                        "pods/status",
                        "replicationcontrollers/status",
                        "resourcequotas",
                        "resourcequotas/status",
                    ],
                ),
                rule(READ, &[""], &["namespaces"]),
                rule(READ, &["discovery.k8s.io"], &["endpointslices"]),
                rule(
                    READ,
                    &["apps"],
                    &[
                        "controllerrevisions",
                        "daemonsets",
                        "daemonsets/status",
                        "deployments",
                        "deployments/scale",
                        "deployments/status",
                        "replicasets",
                        "replicasets/scale",
                        "replicasets/status",
                        "statefulsets",
                        "statefulsets/scale",
                        "statefulsets/status",
                    ],
                ),
                rule(
                    READ,
                    &["autoscaling"],
                    &[
                        "horizontalpodautoscalers",
                        "horizontalpodautoscalers/status",
                    ],
                ),
                rule(
                    READ,
                    &["batch"],
                    &["cronjobs", "cronjobs/status", "jobs", "jobs/status"],
                ),
                rule(
                    READ,
                    &["extensions"],
                    &[
                        "daemonsets",
                        "daemonsets/status",
                        "deployments",
                        "deployments/scale",
                        "deployments/status",
                        "ingresses",
                        "ingresses/status",
                        "networkpolicies",
                        "replicasets",
                        "replicasets/scale",
                        "replicasets/status",
                        "replicationcontrollers/scale",
                    ],
                ),
                rule(
                    READ,
                    &["policy"],
                    &["poddisruptionbudgets", "poddisruptionbudgets/status"],
                ),
                rule(
                    READ,
                    &["networking.k8s.io"],
                    &["ingresses", "ingresses/status", "networkpolicies"],
                ),
            ],
        ),
        cluster_role(
            "system:auth-delegator",
            &[],
            vec![
                rule(&["create"], &[AUTHENTICATION_GROUP], &["tokenreviews"]),
                rule(
                    &["create"],
                    &[AUTHORIZATION_GROUP],
                    &["subjectaccessreviews"],
                ),
            ],
        ),
        cluster_role(
            "system:basic-user",
            &[],
            vec![
                rule(
                    &["create"],
                    &[AUTHORIZATION_GROUP],
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                ),
                rule(
                    &["create"],
                    &[AUTHENTICATION_GROUP],
                    &["selfsubjectreviews"],
                ),
            ],
        ),
        cluster_role(
            "system:discovery",
            &[],
            vec![url_rule(
                &["get"],
                &[
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/healthz",
                    "/livez",
                    "/openapi",
                    "/openapi/*",
                    "/readyz",
                    "/version",
                    "/version/",
                ],
            )],
        ),
        cluster_role(
            "system:monitoring",
            &[],
            vec![url_rule(
                &["get"],
                &[
                    "/healthz",
                    "/healthz/*",
                    "/livez",
                    "/livez/*",
                    "/metrics",
                    "/metrics/slis",
                    "/readyz",
                    "/readyz/*",
                ],
            )],
        ),
        cluster_role(
            "system:public-info-viewer",
            &[],
            vec![url_rule(
                &["get"],
                &["/healthz", "/livez", "/readyz", "/version", "/version/"],
            )],
        ),
        cluster_role(
            "system:service-account-issuer-discovery",
            &[],
            vec![url_rule(
                &["get"],
                &[
                    "/.well-known/openid-configuration",
                    "/.well-known/openid-configuration/",
                    "/openid/v1/jwks",
                    "/openid/v1/jwks/",
                ],
            )],
        ),
    ];

    // Fill in what the aggregation controller writes on a real cluster.
    let effective = effective_cluster_role_rules(&cluster_role_entries(&roles));
    for role in &mut roles {
        if role.get("aggregationRule").is_some() {
            let name = str_at(role, &["metadata", "name"]).to_string();
            let rules: Vec<Value> = effective
                .get(&name)
                .map(|r| r.iter().map(PolicyRule::to_value).collect())
                .unwrap_or_default();
            role["rules"] = Value::Array(rules);
        }
    }

    let bindings = vec![
        cluster_role_binding("cluster-admin", &[SYSTEM_MASTERS]),
        cluster_role_binding("system:basic-user", &[ALL_AUTHENTICATED]),
        cluster_role_binding("system:discovery", &[ALL_AUTHENTICATED]),
        cluster_role_binding("system:monitoring", &["system:monitoring"]),
        cluster_role_binding(
            "system:public-info-viewer",
            &[ALL_AUTHENTICATED, ALL_UNAUTHENTICATED],
        ),
        cluster_role_binding("system:service-account-issuer-discovery", &[SA_ALL_GROUP]),
    ];

    roles.into_iter().chain(bindings).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // --- fixtures ---------------------------------------------------------

    fn role(ns: &str, name: &str, rules: Vec<Value>) -> Value {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
               "metadata": {"name": name, "namespace": ns}, "rules": rules})
    }

    fn cluster_role_obj(name: &str, rules: Vec<Value>) -> Value {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
               "metadata": {"name": name}, "rules": rules})
    }

    fn user_subject(name: &str) -> Value {
        json!({"apiGroup": RBAC_GROUP, "kind": "User", "name": name})
    }

    fn group_subject(name: &str) -> Value {
        json!({"apiGroup": RBAC_GROUP, "kind": "Group", "name": name})
    }

    fn sa_subject(ns: &str, name: &str) -> Value {
        if ns.is_empty() {
            json!({"kind": "ServiceAccount", "name": name})
        } else {
            json!({"kind": "ServiceAccount", "name": name, "namespace": ns})
        }
    }

    fn role_binding(
        ns: &str,
        name: &str,
        role_kind: &str,
        role_name: &str,
        subjects: Vec<Value>,
    ) -> Value {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": name, "namespace": ns},
               "roleRef": {"apiGroup": RBAC_GROUP, "kind": role_kind, "name": role_name},
               "subjects": subjects})
    }

    fn crb(name: &str, role_name: &str, subjects: Vec<Value>) -> Value {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": name},
               "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": role_name},
               "subjects": subjects})
    }

    fn res(verb: &str, group: &str, resource: &str, ns: &str, name: &str) -> Attributes {
        Attributes::resource(verb, group, "v1", resource, ns, name)
    }

    fn user(name: &str) -> UserInfo {
        UserInfo::new(name, &[ALL_AUTHENTICATED])
    }

    fn sa_user(ns: &str, name: &str) -> UserInfo {
        UserInfo::new(
            format!("system:serviceaccount:{ns}:{name}"),
            &[
                SA_ALL_GROUP,
                &format!("system:serviceaccounts:{ns}"),
                ALL_AUTHENTICATED,
            ],
        )
    }

    fn allowed(objects: &dyn RbacObjects, u: &UserInfo, a: &Attributes) -> bool {
        authorize(objects, u, a) == Decision::Allow
    }

    fn deny_reason(objects: &dyn RbacObjects, u: &UserInfo, a: &Attributes) -> String {
        match authorize(objects, u, a) {
            Decision::Deny { reason } => reason,
            Decision::Allow => panic!("unexpectedly allowed: {a:?}"),
        }
    }

    fn with_bootstrap(mut extra: Vec<Value>) -> Vec<Value> {
        let mut objects = bootstrap_objects();
        objects.append(&mut extra);
        objects
    }

    // --- subjects ---------------------------------------------------------

    #[test]
    fn user_subject_via_cluster_role_binding() {
        let objects = vec![
            cluster_role_obj("reader", vec![rule(&["get", "list"], &[""], &["pods"])]),
            crb("bob-reads", "reader", vec![user_subject("bob")]),
        ];
        assert!(allowed(
            &objects,
            &user("bob"),
            &res("get", "", "pods", "a", "p")
        ));
        assert!(allowed(
            &objects,
            &user("bob"),
            &res("list", "", "pods", "", "")
        ));
        assert!(!allowed(
            &objects,
            &user("bob"),
            &res("delete", "", "pods", "a", "p")
        ));
        assert!(!allowed(
            &objects,
            &user("alice"),
            &res("get", "", "pods", "a", "p")
        ));
    }

    #[test]
    fn group_subject_via_cluster_role_binding() {
        let objects = vec![
            cluster_role_obj("reader", vec![rule(&["get"], &[""], &["pods"])]),
            crb("devs-read", "reader", vec![group_subject("devs")]),
        ];
        let dev = UserInfo::new("carol", &["devs", ALL_AUTHENTICATED]);
        assert!(allowed(&objects, &dev, &res("get", "", "pods", "x", "p")));
        assert!(!allowed(
            &objects,
            &user("carol"),
            &res("get", "", "pods", "x", "p")
        ));
    }

    #[test]
    fn service_account_subjects() {
        let objects = vec![
            cluster_role_obj("reader", vec![rule(&["get"], &[""], &["configmaps"])]),
            crb("sa-read", "reader", vec![sa_subject("team", "deployer")]),
            // No namespace on a ClusterRoleBinding subject never matches.
            crb("sa-no-ns", "reader", vec![sa_subject("", "other")]),
            // In a RoleBinding the binding's namespace is the default.
            role_binding(
                "team",
                "local",
                "ClusterRole",
                "reader",
                vec![sa_subject("", "builder")],
            ),
        ];
        let cm = |ns: &str| res("get", "", "configmaps", ns, "x");
        assert!(allowed(
            &objects,
            &sa_user("team", "deployer"),
            &cm("anywhere")
        ));
        assert!(!allowed(
            &objects,
            &sa_user("other", "deployer"),
            &cm("team")
        ));
        // The SA username is what matters, not its groups.
        let bare = UserInfo::new("system:serviceaccount:team:deployer", &[]);
        assert!(allowed(&objects, &bare, &cm("x")));
        assert!(!allowed(&objects, &sa_user("team", "other"), &cm("team")));
        assert!(!allowed(
            &objects,
            &sa_user("default", "other"),
            &cm("default")
        ));
        assert!(allowed(&objects, &sa_user("team", "builder"), &cm("team")));
        assert!(!allowed(
            &objects,
            &sa_user("team", "builder"),
            &cm("elsewhere")
        ));
        assert!(!allowed(
            &objects,
            &sa_user("other", "builder"),
            &cm("team")
        ));
        // A user merely named like the SA subject does not match a User check.
        assert!(!allowed(&objects, &user("deployer"), &cm("team")));
    }

    #[test]
    fn unknown_subject_kind_never_matches() {
        let objects = vec![
            cluster_role_obj("all", vec![rule(&["*"], &["*"], &["*"])]),
            crb(
                "weird",
                "all",
                vec![json!({"kind": "Robot", "name": "bob"})],
            ),
        ];
        assert!(!allowed(
            &objects,
            &user("bob"),
            &res("get", "", "pods", "a", "p")
        ));
    }

    // --- role bindings ----------------------------------------------------

    #[test]
    fn role_binding_to_role_grants_only_in_its_namespace() {
        let objects = vec![
            role(
                "team",
                "cm-editor",
                vec![rule(&["create", "get"], &[""], &["configmaps"])],
            ),
            role(
                "other",
                "cm-editor",
                vec![rule(&["delete"], &[""], &["configmaps"])],
            ),
            role_binding(
                "team",
                "bob-cm",
                "Role",
                "cm-editor",
                vec![user_subject("bob")],
            ),
        ];
        let bob = user("bob");
        assert!(allowed(
            &objects,
            &bob,
            &res("create", "", "configmaps", "team", "")
        ));
        assert!(!allowed(
            &objects,
            &bob,
            &res("delete", "", "configmaps", "team", "x")
        ));
        assert!(!allowed(
            &objects,
            &bob,
            &res("create", "", "configmaps", "other", "")
        ));
        assert!(!allowed(
            &objects,
            &bob,
            &res("list", "", "configmaps", "", "")
        ));
    }

    #[test]
    fn role_binding_to_cluster_role_grants_only_in_its_namespace() {
        let objects = with_bootstrap(vec![role_binding(
            "team",
            "bob-edit",
            "ClusterRole",
            "edit",
            vec![user_subject("bob")],
        )]);
        let bob = user("bob");
        assert!(allowed(
            &objects,
            &bob,
            &res("create", "apps", "deployments", "team", "")
        ));
        assert!(!allowed(
            &objects,
            &bob,
            &res("create", "apps", "deployments", "prod", "")
        ));
        // Cluster-wide list is not granted by a namespaced binding.
        assert!(!allowed(
            &objects,
            &bob,
            &res("list", "apps", "deployments", "", "")
        ));
    }

    #[test]
    fn role_binding_does_not_use_a_role_of_another_namespace() {
        let objects = vec![
            role("other", "r", vec![rule(&["get"], &[""], &["pods"])]),
            role_binding("team", "b", "Role", "r", vec![user_subject("bob")]),
        ];
        let reason = deny_reason(&objects, &user("bob"), &res("get", "", "pods", "team", "p"));
        assert_eq!(
            reason,
            r#"pods "p" is forbidden: User "bob" cannot get resource "pods" in API group "" in the namespace "team": RBAC: role.rbac.authorization.k8s.io "r" not found"#
        );
    }

    #[test]
    fn resolution_errors_are_aggregated_into_the_reason() {
        let objects = vec![
            crb("a", "missing", vec![user_subject("bob")]),
            crb("b", "missing", vec![user_subject("bob")]),
            crb("c", "gone", vec![group_subject(ALL_AUTHENTICATED)]),
            json!({"kind": "ClusterRoleBinding", "metadata": {"name": "d"},
                   "roleRef": {"kind": "Thing", "name": "x"}, "subjects": [user_subject("bob")]}),
        ];
        let ev = evaluate(&objects, &user("bob"), &res("get", "", "pods", "", ""));
        assert!(!ev.allowed);
        assert_eq!(
            ev.reason,
            r#"RBAC: [clusterrole.rbac.authorization.k8s.io "missing" not found, clusterrole.rbac.authorization.k8s.io "gone" not found, unsupported role reference kind: "Thing"]"#
        );
        // Errors of bindings that do not apply to the user are not reported.
        let ev = evaluate(
            &objects,
            &UserInfo::new("eve", &[]),
            &res("get", "", "pods", "", ""),
        );
        assert_eq!(ev.reason, "");
    }

    #[test]
    fn resolution_errors_do_not_prevent_an_allow() {
        let objects = vec![
            crb("a", "missing", vec![user_subject("bob")]),
            cluster_role_obj("reader", vec![rule(&["get"], &[""], &["pods"])]),
            crb("b", "reader", vec![user_subject("bob")]),
        ];
        assert!(allowed(
            &objects,
            &user("bob"),
            &res("get", "", "pods", "", "p")
        ));
    }

    #[test]
    fn allowed_reason_names_the_binding() {
        let objects = with_bootstrap(vec![
            cluster_role_obj("reader", vec![rule(&["get"], &[""], &["pods"])]),
            crb("read-all", "reader", vec![user_subject("bob")]),
            role_binding(
                "team",
                "edit-team",
                "ClusterRole",
                "edit",
                vec![sa_subject("", "deployer")],
            ),
        ]);
        let ev = evaluate(&objects, &user("bob"), &res("get", "", "pods", "x", "p"));
        assert_eq!(
            ev,
            Evaluation {
                allowed: true,
                reason: r#"RBAC: allowed by ClusterRoleBinding "read-all" of ClusterRole "reader" to User "bob""#.into()
            }
        );
        let ev = evaluate(
            &objects,
            &sa_user("team", "deployer"),
            &res("create", "", "secrets", "team", ""),
        );
        assert_eq!(
            ev.reason,
            r#"RBAC: allowed by RoleBinding "edit-team/team" of ClusterRole "edit" to ServiceAccount "deployer/team""#
        );
        let ev = evaluate(
            &objects,
            &user("eve"),
            &Attributes::non_resource("get", "/apis"),
        );
        assert_eq!(
            ev.reason,
            r#"RBAC: allowed by ClusterRoleBinding "system:discovery" of ClusterRole "system:discovery" to Group "system:authenticated""#
        );
    }

    // --- rule matching ----------------------------------------------------

    #[test]
    fn resource_names_only_match_named_requests() {
        let objects = vec![
            cluster_role_obj(
                "one-cm",
                vec![
                    json!({"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["app-config"],
                            "verbs": ["get", "update", "list", "watch", "create", "delete", "deletecollection"]}),
                ],
            ),
            crb("b", "one-cm", vec![user_subject("bob")]),
        ];
        let bob = user("bob");
        assert!(allowed(
            &objects,
            &bob,
            &res("get", "", "configmaps", "a", "app-config")
        ));
        assert!(allowed(
            &objects,
            &bob,
            &res("update", "", "configmaps", "a", "app-config")
        ));
        assert!(allowed(
            &objects,
            &bob,
            &res("delete", "", "configmaps", "a", "app-config")
        ));
        assert!(!allowed(
            &objects,
            &bob,
            &res("get", "", "configmaps", "a", "other")
        ));
        // Requests without a name never match a resourceNames rule.
        assert!(!allowed(
            &objects,
            &bob,
            &res("list", "", "configmaps", "a", "")
        ));
        assert!(!allowed(
            &objects,
            &bob,
            &res("watch", "", "configmaps", "a", "")
        ));
        assert!(!allowed(
            &objects,
            &bob,
            &res("create", "", "configmaps", "a", "")
        ));
        assert!(!allowed(
            &objects,
            &bob,
            &res("deletecollection", "", "configmaps", "a", "")
        ));
        // ... unless the request carries the name (a metadata.name field selector).
        assert!(allowed(
            &objects,
            &bob,
            &res("list", "", "configmaps", "a", "app-config")
        ));
    }

    #[test]
    fn subresources_need_their_own_rules() {
        let objects = vec![
            cluster_role_obj(
                "r",
                vec![
                    rule(&["get"], &[""], &["pods"]),
                    rule(&["get"], &[""], &["pods/log"]),
                    rule(&["update"], &["*"], &["*/scale"]),
                    rule(&["patch"], &["apps"], &["deployments/*"]),
                ],
            ),
            crb("b", "r", vec![user_subject("bob")]),
        ];
        let bob = user("bob");
        assert!(allowed(&objects, &bob, &res("get", "", "pods", "a", "p")));
        assert!(allowed(
            &objects,
            &bob,
            &res("get", "", "pods", "a", "p").with_subresource("log")
        ));
        assert!(!allowed(
            &objects,
            &bob,
            &res("get", "", "pods", "a", "p").with_subresource("exec")
        ));
        assert!(allowed(
            &objects,
            &bob,
            &res("update", "apps", "deployments", "a", "d").with_subresource("scale")
        ));
        assert!(allowed(
            &objects,
            &bob,
            &res("update", "", "replicationcontrollers", "a", "r").with_subresource("scale")
        ));
        // `*/scale` does not cover the parent resource.
        assert!(!allowed(
            &objects,
            &bob,
            &res("update", "apps", "deployments", "a", "d")
        ));
        // There is no `resource/*` wildcard.
        assert!(!allowed(
            &objects,
            &bob,
            &res("patch", "apps", "deployments", "a", "d").with_subresource("status")
        ));
        assert!(!allowed(
            &objects,
            &bob,
            &res("patch", "apps", "deployments", "a", "d")
        ));
    }

    #[test]
    fn wildcard_verbs_groups_and_resources() {
        let objects = vec![
            cluster_role_obj(
                "r",
                vec![
                    rule(&["*"], &["apps"], &["deployments"]),
                    rule(&["get"], &["*"], &["widgets"]),
                    rule(&["list"], &["batch"], &["*"]),
                ],
            ),
            crb("b", "r", vec![user_subject("bob")]),
        ];
        let bob = user("bob");
        assert!(allowed(
            &objects,
            &bob,
            &res("deletecollection", "apps", "deployments", "a", "")
        ));
        assert!(allowed(
            &objects,
            &bob,
            &res("escalate", "apps", "deployments", "a", "d")
        ));
        assert!(!allowed(
            &objects,
            &bob,
            &res("get", "", "deployments", "a", "d")
        ));
        assert!(allowed(
            &objects,
            &bob,
            &res("get", "example.com", "widgets", "a", "w")
        ));
        assert!(allowed(
            &objects,
            &bob,
            &res("get", "", "widgets", "a", "w")
        ));
        assert!(allowed(
            &objects,
            &bob,
            &res("list", "batch", "jobs", "a", "")
        ));
        // `*` covers subresources as well.
        assert!(allowed(
            &objects,
            &bob,
            &res("list", "batch", "jobs", "a", "j").with_subresource("status")
        ));
        assert!(!allowed(
            &objects,
            &bob,
            &res("list", "apps", "jobs", "a", "")
        ));
        // Resource rules never match non-resource requests.
        assert!(!allowed(
            &objects,
            &bob,
            &Attributes::non_resource("list", "/apis/batch")
        ));
    }

    #[test]
    fn non_resource_urls() {
        let objects = vec![
            cluster_role_obj(
                "urls",
                vec![
                    url_rule(&["get"], &["/healthz", "/metrics/*", "/logs*"]),
                    url_rule(&["post"], &["*"]),
                ],
            ),
            crb("b", "urls", vec![user_subject("bob")]),
            // Non-resource rules reached through a RoleBinding never apply:
            // non-resource requests have no namespace.
            cluster_role_obj("all-urls", vec![url_rule(&["*"], &["*"])]),
            role_binding(
                "team",
                "rb",
                "ClusterRole",
                "all-urls",
                vec![user_subject("carol")],
            ),
        ];
        let bob = user("bob");
        let get = |p: &str| Attributes::non_resource("get", p);
        assert!(allowed(&objects, &bob, &get("/healthz")));
        assert!(!allowed(&objects, &bob, &get("/healthz/etcd")));
        assert!(allowed(&objects, &bob, &get("/metrics/slis")));
        assert!(!allowed(&objects, &bob, &get("/metrics")));
        assert!(allowed(&objects, &bob, &get("/logs")));
        assert!(allowed(&objects, &bob, &get("/logsfoo/bar")));
        assert!(allowed(
            &objects,
            &bob,
            &Attributes::non_resource("post", "/anything")
        ));
        assert!(!allowed(&objects, &bob, &get("/version")));
        assert!(!allowed(&objects, &user("carol"), &get("/healthz")));
        // URL rules never match resource requests.
        assert!(!allowed(&objects, &bob, &res("post", "", "pods", "a", "")));
    }

    #[test]
    fn system_masters_short_circuits() {
        let nothing: Vec<Value> = Vec::new();
        let admin = UserInfo::new("root", &[SYSTEM_MASTERS, ALL_AUTHENTICATED]);
        assert_eq!(
            evaluate(
                &nothing,
                &admin,
                &res("delete", "apps", "deployments", "x", "y")
            ),
            Evaluation {
                allowed: true,
                reason: String::new()
            }
        );
        assert!(allowed(
            &nothing,
            &admin,
            &Attributes::non_resource("get", "/anything")
        ));
        assert!(!allowed(
            &nothing,
            &user("root"),
            &res("get", "", "pods", "", "")
        ));
    }

    // --- aggregation --------------------------------------------------------

    #[test]
    fn aggregation_collects_labelled_cluster_roles() {
        let objects = vec![
            json!({"kind": "ClusterRole", "metadata": {"name": "monitoring"},
                   "aggregationRule": {"clusterRoleSelectors": [
                       {"matchLabels": {"example.com/aggregate-to-monitoring": "true"}},
                       {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["metrics"]}]}]},
                   // Stored rules of an aggregated role are replaced by the controller.
                   "rules": [rule(&["delete"], &[""], &["nodes"])]}),
            json!({"kind": "ClusterRole", "metadata": {"name": "mon-pods", "labels": {"example.com/aggregate-to-monitoring": "true"}},
                   "rules": [rule(&["get"], &[""], &["pods"])]}),
            json!({"kind": "ClusterRole", "metadata": {"name": "mon-metrics", "labels": {"tier": "metrics"}},
                   "rules": [rule(&["list"], &["metrics.k8s.io"], &["pods"])]}),
            json!({"kind": "ClusterRole", "metadata": {"name": "unrelated", "labels": {"tier": "web"}},
                   "rules": [rule(&["get"], &[""], &["secrets"])]}),
            crb("b", "monitoring", vec![user_subject("bob")]),
        ];
        let bob = user("bob");
        assert!(allowed(&objects, &bob, &res("get", "", "pods", "a", "p")));
        assert!(allowed(
            &objects,
            &bob,
            &res("list", "metrics.k8s.io", "pods", "a", "")
        ));
        assert!(!allowed(
            &objects,
            &bob,
            &res("get", "", "secrets", "a", "s")
        ));
        assert!(!allowed(
            &objects,
            &bob,
            &res("delete", "", "nodes", "", "n")
        ));
        assert_eq!(
            aggregated_cluster_role_rules(&objects, "monitoring").unwrap(),
            vec![
                json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}),
                json!({"apiGroups": ["metrics.k8s.io"], "resources": ["pods"], "verbs": ["list"]}),
            ]
        );
        assert_eq!(aggregated_cluster_role_rules(&objects, "mon-pods"), None);
    }

    #[test]
    fn aggregation_is_transitive_and_deduplicated() {
        // A custom CRD role labelled for `view` shows up in view, edit and admin.
        let objects = with_bootstrap(vec![
            json!({"kind": "ClusterRole",
                   "metadata": {"name": "widgets-view", "labels": {TO_VIEW: "true"}},
                   "rules": [rule(&["get", "list", "watch"], &["example.com"], &["widgets"])]}),
            json!({"kind": "ClusterRole",
                   "metadata": {"name": "widgets-dup", "labels": {TO_VIEW: "true"}},
                   "rules": [rule(&["get", "list", "watch"], &["example.com"], &["widgets"])]}),
            role_binding(
                "team",
                "v",
                "ClusterRole",
                "view",
                vec![user_subject("viewer")],
            ),
            role_binding(
                "team",
                "a",
                "ClusterRole",
                "admin",
                vec![user_subject("owner")],
            ),
        ]);
        let widgets = res("list", "example.com", "widgets", "team", "");
        assert!(allowed(&objects, &user("viewer"), &widgets));
        assert!(allowed(&objects, &user("owner"), &widgets));
        let view = aggregated_cluster_role_rules(&objects, "view").unwrap();
        let widget_rules = view
            .iter()
            .filter(|r| r["apiGroups"] == json!(["example.com"]))
            .count();
        assert_eq!(widget_rules, 1);
    }

    #[test]
    fn aggregation_tolerates_cycles() {
        let objects = vec![
            json!({"kind": "ClusterRole", "metadata": {"name": "a", "labels": {"to-b": "true"}},
                   "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"to-a": "true"}}]}}),
            json!({"kind": "ClusterRole", "metadata": {"name": "b", "labels": {"to-a": "true"}},
                   "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"to-b": "true"}}]}}),
            json!({"kind": "ClusterRole", "metadata": {"name": "c", "labels": {"to-b": "true"}},
                   "rules": [rule(&["get"], &[""], &["pods"])]}),
            crb("x", "a", vec![user_subject("bob")]),
        ];
        assert!(allowed(
            &objects,
            &user("bob"),
            &res("get", "", "pods", "n", "p")
        ));
    }

    #[test]
    fn label_selector_operators() {
        let labels = BTreeMap::from([("a".to_string(), "1".to_string())]);
        let m = |sel: Value| selector_matches(&sel, &labels);
        assert_eq!(m(json!({})), Ok(true));
        assert_eq!(m(json!({"matchLabels": {"a": "1"}})), Ok(true));
        assert_eq!(m(json!({"matchLabels": {"a": "2"}})), Ok(false));
        assert_eq!(
            m(json!({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["2"]}]})),
            Ok(true)
        );
        assert_eq!(
            m(json!({"matchExpressions": [{"key": "b", "operator": "NotIn", "values": ["2"]}]})),
            Ok(true)
        );
        assert_eq!(
            m(json!({"matchExpressions": [{"key": "a", "operator": "Exists"}]})),
            Ok(true)
        );
        assert_eq!(
            m(json!({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]})),
            Ok(false)
        );
        assert_eq!(
            m(json!({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]})),
            Err(())
        );
    }

    // --- bootstrap policy ---------------------------------------------------

    #[test]
    fn bootstrap_edit_view_admin() {
        let objects = with_bootstrap(vec![
            role_binding(
                "team",
                "e",
                "ClusterRole",
                "edit",
                vec![user_subject("editor")],
            ),
            role_binding(
                "team",
                "v",
                "ClusterRole",
                "view",
                vec![user_subject("viewer")],
            ),
            role_binding(
                "team",
                "a",
                "ClusterRole",
                "admin",
                vec![user_subject("owner")],
            ),
        ]);
        let (editor, viewer, owner) = (user("editor"), user("viewer"), user("owner"));
        for (verb, group, resource) in [
            ("create", "apps", "deployments"),
            ("update", "apps", "statefulsets"),
            ("patch", "apps", "daemonsets"),
            ("delete", "batch", "jobs"),
            ("create", "", "configmaps"),
            ("create", "", "secrets"),
            ("get", "", "secrets"),
            ("create", "", "services"),
            ("create", "", "serviceaccounts"),
            ("update", "networking.k8s.io", "ingresses"),
            ("create", "coordination.k8s.io", "leases"),
            ("list", "", "pods"),
        ] {
            let a = res(verb, group, resource, "team", "");
            assert!(allowed(&objects, &editor, &a), "edit {verb} {resource}");
            assert!(allowed(&objects, &owner, &a), "admin {verb} {resource}");
        }
        assert!(allowed(
            &objects,
            &editor,
            &res("create", "", "serviceaccounts", "team", "sa").with_subresource("token")
        ));
        assert!(allowed(
            &objects,
            &editor,
            &res("impersonate", "", "serviceaccounts", "team", "sa")
        ));
        assert!(!allowed(
            &objects,
            &editor,
            &res("create", RBAC_GROUP, "rolebindings", "team", "")
        ));
        assert!(!allowed(
            &objects,
            &editor,
            &res("update", "", "resourcequotas", "team", "q")
        ));
        assert!(!allowed(
            &objects,
            &editor,
            &res("update", "apps", "deployments", "team", "d").with_subresource("status")
        ));
        assert!(allowed(
            &objects,
            &owner,
            &res("create", RBAC_GROUP, "rolebindings", "team", "")
        ));
        assert!(allowed(
            &objects,
            &owner,
            &res(
                "create",
                AUTHORIZATION_GROUP,
                "localsubjectaccessreviews",
                "team",
                ""
            )
        ));

        assert!(allowed(
            &objects,
            &viewer,
            &res("get", "apps", "deployments", "team", "d")
        ));
        assert!(allowed(
            &objects,
            &viewer,
            &res("list", "", "configmaps", "team", "")
        ));
        assert!(allowed(
            &objects,
            &viewer,
            &res("get", "", "pods", "team", "p").with_subresource("log")
        ));
        assert!(allowed(
            &objects,
            &viewer,
            &res("get", "", "namespaces", "team", "team")
        ));
        assert!(!allowed(
            &objects,
            &viewer,
            &res("get", "", "secrets", "team", "s")
        ));
        assert!(!allowed(
            &objects,
            &viewer,
            &res("list", "", "secrets", "team", "")
        ));
        assert!(!allowed(
            &objects,
            &viewer,
            &res("create", "", "configmaps", "team", "")
        ));
        assert!(!allowed(
            &objects,
            &viewer,
            &res("get", "", "pods", "team", "p").with_subresource("exec")
        ));
    }

    #[test]
    fn bootstrap_aggregated_roles_carry_labels_rules_and_aggregation_rules() {
        let objects = bootstrap_objects();
        let find = |name: &str| {
            objects
                .iter()
                .find(|o| o["kind"] == "ClusterRole" && o["metadata"]["name"] == name)
                .unwrap()
                .clone()
        };
        let edit = find("edit");
        assert_eq!(edit["metadata"]["labels"][TO_ADMIN], "true");
        assert_eq!(
            edit["metadata"]["labels"]["kubernetes.io/bootstrapping"],
            "rbac-defaults"
        );
        assert_eq!(
            edit["metadata"]["annotations"]["rbac.authorization.kubernetes.io/autoupdate"],
            "true"
        );
        assert_eq!(
            edit["aggregationRule"]["clusterRoleSelectors"][0]["matchLabels"][TO_EDIT],
            "true"
        );
        assert_eq!(find("view")["metadata"]["labels"][TO_EDIT], "true");
        // admin = edit's rules then system:aggregate-to-admin's, as a real cluster shows.
        let admin_rules = find("admin")["rules"].as_array().unwrap().clone();
        let edit_rules = edit["rules"].as_array().unwrap().clone();
        assert_eq!(&admin_rules[..edit_rules.len()], &edit_rules[..]);
        assert_eq!(admin_rules.len(), edit_rules.len() + 2);
        assert_eq!(
            edit_rules[0],
            json!({"apiGroups": [""], "resources": ["pods/attach", "pods/exec", "pods/portforward", "pods/proxy", "secrets", "services/proxy"], "verbs": ["get", "list", "watch"]})
        );
        // The stored aggregated rules agree with evaluation-time aggregation.
        assert_eq!(
            aggregated_cluster_role_rules(&objects, "admin").unwrap(),
            admin_rules
        );
    }

    #[test]
    fn bootstrap_everyday_permissions() {
        let objects = bootstrap_objects();
        let anyone = user("someone");
        let anonymous = UserInfo::new(ANONYMOUS, &[ALL_UNAUTHENTICATED]);
        let get = |p: &str| Attributes::non_resource("get", p);
        for p in [
            "/api",
            "/api/v1",
            "/apis",
            "/apis/apps/v1",
            "/version",
            "/openapi/v3",
            "/healthz",
            "/readyz",
            "/livez",
        ] {
            assert!(allowed(&objects, &anyone, &get(p)), "{p}");
        }
        for p in ["/version", "/healthz", "/readyz", "/livez"] {
            assert!(allowed(&objects, &anonymous, &get(p)), "{p}");
        }
        assert!(!allowed(&objects, &anonymous, &get("/apis")));
        assert!(!allowed(&objects, &anyone, &get("/metrics")));
        for resource in ["selfsubjectaccessreviews", "selfsubjectrulesreviews"] {
            assert!(allowed(
                &objects,
                &anyone,
                &res("create", AUTHORIZATION_GROUP, resource, "", "")
            ));
            assert!(!allowed(
                &objects,
                &anonymous,
                &res("create", AUTHORIZATION_GROUP, resource, "", "")
            ));
        }
        assert!(allowed(
            &objects,
            &anyone,
            &res("create", AUTHENTICATION_GROUP, "selfsubjectreviews", "", "")
        ));
        assert!(!allowed(
            &objects,
            &anyone,
            &res("list", "", "namespaces", "", "")
        ));
        let sa = sa_user("team", "app");
        assert!(allowed(&objects, &sa, &get("/openid/v1/jwks")));
        let monitor = UserInfo::new("prometheus", &["system:monitoring", ALL_AUTHENTICATED]);
        assert!(allowed(&objects, &monitor, &get("/metrics")));
        assert!(allowed(&objects, &monitor, &get("/readyz/etcd")));
        let masters = UserInfo::new("kubernetes-admin", &[SYSTEM_MASTERS, ALL_AUTHENTICATED]);
        assert_eq!(
            rules_for(&objects, &masters, "default").0[0],
            json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]})
        );
    }

    // --- forbidden messages ---------------------------------------------------

    #[test]
    fn forbidden_messages_match_the_real_server() {
        let deployer = sa_user("team", "deployer");
        let bob = user("bob");
        assert_eq!(
            forbidden_message(&deployer, &res("get", "", "configmaps", "team", "x")),
            r#"configmaps "x" is forbidden: User "system:serviceaccount:team:deployer" cannot get resource "configmaps" in API group "" in the namespace "team""#
        );
        assert_eq!(
            forbidden_message(&bob, &res("list", "apps", "deployments", "", "")),
            r#"deployments.apps is forbidden: User "bob" cannot list resource "deployments" in API group "apps" at the cluster scope"#
        );
        assert_eq!(
            forbidden_message(&bob, &res("list", "apps", "deployments", "prod", "")),
            r#"deployments.apps is forbidden: User "bob" cannot list resource "deployments" in API group "apps" in the namespace "prod""#
        );
        assert_eq!(
            forbidden_message(
                &bob,
                &res("create", "", "serviceaccounts", "team", "deployer").with_subresource("token")
            ),
            r#"serviceaccounts "deployer" is forbidden: User "bob" cannot create resource "serviceaccounts/token" in API group "" in the namespace "team""#
        );
        assert_eq!(
            forbidden_message(
                &bob,
                &res("update", "apps", "deployments", "team", "web").with_subresource("scale")
            ),
            r#"deployments.apps "web" is forbidden: User "bob" cannot update resource "deployments/scale" in API group "apps" in the namespace "team""#
        );
        assert_eq!(
            forbidden_message(&bob, &Attributes::non_resource("get", "/apis")),
            r#"forbidden: User "bob" cannot get path "/apis""#
        );
        assert_eq!(
            forbidden_message(&bob, &res("delete", "", "nodes", "", "n1")),
            r#"nodes "n1" is forbidden: User "bob" cannot delete resource "nodes" in API group "" at the cluster scope"#
        );
        // The "User ... cannot" part is HTML-escaped and quoted like Go's %q.
        let odd = UserInfo::new("a<b>&\"c\"", &[]);
        assert_eq!(
            forbidden_message(&odd, &Attributes::non_resource("get", "/x")),
            r#"forbidden: User "a&lt;b&gt;&amp;\"c\"" cannot get path "/x""#
        );
        // Decision::Deny carries the same text.
        let nothing: Vec<Value> = Vec::new();
        let attrs = res("get", "", "configmaps", "team", "x");
        assert_eq!(
            deny_reason(&nothing, &deployer, &attrs),
            forbidden_message(&deployer, &attrs)
        );
    }

    #[test]
    fn forbidden_status_json() {
        let bob = user("bob");
        let status =
            forbidden_error(&bob, &res("get", "apps", "deployments", "a", "web"), "").to_status();
        assert_eq!(
            status,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "message": "deployments.apps \"web\" is forbidden: User \"bob\" cannot get resource \"deployments\" in API group \"apps\" in the namespace \"a\"",
                   "reason": "Forbidden", "details": {"name": "web", "group": "apps", "kind": "deployments"}, "code": 403})
        );
        let status = forbidden_error(&bob, &Attributes::non_resource("get", "/"), "").to_status();
        assert_eq!(status["details"], json!({}));
        assert_eq!(
            status["message"],
            "forbidden: User \"bob\" cannot get path \"/\""
        );
    }

    #[test]
    fn go_quote_list_is_percent_q_of_a_string_slice() {
        assert_eq!(go_quote_list(&[]), "[]");
        assert_eq!(go_quote_list(&["a\"b".into()]), "[\"a\\\"b\"]");
        assert_eq!(go_quote_list(&["a".into(), "b".into()]), "[\"a\" \"b\"]");
    }

    // --- rules review -----------------------------------------------------------

    #[test]
    fn rules_for_lists_cluster_and_namespace_rules() {
        let objects = vec![
            cluster_role_obj(
                "mixed",
                vec![
                    rule(&["get"], &[""], &["pods"]),
                    url_rule(&["get"], &["/healthz"]),
                    json!({"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["c"], "verbs": ["update"]}),
                ],
            ),
            crb("m", "mixed", vec![user_subject("bob")]),
            role(
                "team",
                "r",
                vec![rule(&["create"], &["apps"], &["deployments"])],
            ),
            role_binding("team", "rb", "Role", "r", vec![user_subject("bob")]),
            role_binding("team", "broken", "Role", "nope", vec![user_subject("bob")]),
        ];
        let bob = user("bob");
        let (resource_rules, non_resource_rules) = rules_for(&objects, &bob, "team");
        assert_eq!(
            resource_rules,
            vec![
                json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}),
                json!({"verbs": ["update"], "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["c"]}),
                json!({"verbs": ["create"], "apiGroups": ["apps"], "resources": ["deployments"]}),
            ]
        );
        assert_eq!(
            non_resource_rules,
            vec![json!({"verbs": ["get"], "nonResourceURLs": ["/healthz"]})]
        );
        let (elsewhere, _) = rules_for(&objects, &bob, "other");
        assert_eq!(elsewhere.len(), 2);
        let status = rules_review_status(&objects, &bob, "team");
        assert_eq!(status["incomplete"], json!(false));
        assert_eq!(
            status["evaluationError"],
            json!("role.rbac.authorization.k8s.io \"nope\" not found")
        );
        assert_eq!(status["resourceRules"].as_array().unwrap().len(), 3);
        let status = rules_review_status(&objects, &user("eve"), "team");
        assert_eq!(
            status,
            json!({"resourceRules": [], "nonResourceRules": [], "incomplete": false})
        );
    }

    // --- legacy impersonation ------------------------------------------------------

    fn impersonator_objects() -> Vec<Value> {
        with_bootstrap(vec![
            cluster_role_obj(
                "impersonate-alice",
                vec![
                    json!({"apiGroups": [""], "resources": ["users"], "resourceNames": ["alice", ANONYMOUS], "verbs": ["impersonate"]}),
                ],
            ),
            cluster_role_obj(
                "impersonate-groups",
                vec![
                    json!({"apiGroups": [""], "resources": ["groups"], "resourceNames": ["devs", ALL_AUTHENTICATED], "verbs": ["impersonate"]}),
                ],
            ),
            cluster_role_obj(
                "impersonate-extras",
                vec![
                    json!({"apiGroups": [AUTHENTICATION_GROUP], "resources": ["userextras/scopes"], "verbs": ["impersonate"]}),
                    json!({"apiGroups": [AUTHENTICATION_GROUP], "resources": ["uids"], "resourceNames": ["u-1"], "verbs": ["impersonate"]}),
                ],
            ),
            crb("bob-alice", "impersonate-alice", vec![user_subject("bob")]),
            crb(
                "bob-groups",
                "impersonate-groups",
                vec![user_subject("bob")],
            ),
            crb(
                "bob-extras",
                "impersonate-extras",
                vec![user_subject("bob")],
            ),
            role(
                "team",
                "impersonate-deployer",
                vec![
                    json!({"apiGroups": [""], "resources": ["serviceaccounts"], "resourceNames": ["deployer"], "verbs": ["impersonate"]}),
                ],
            ),
            role_binding(
                "team",
                "controller-deployer",
                "Role",
                "impersonate-deployer",
                vec![user_subject("controller")],
            ),
        ])
    }

    fn imp(user: &str) -> ImpersonationRequest {
        ImpersonationRequest {
            user: Some(user.into()),
            ..Default::default()
        }
    }

    #[test]
    fn legacy_impersonate_user() {
        let objects = impersonator_objects();
        let got = impersonate(&objects, &user("bob"), &imp("alice")).unwrap();
        assert_eq!(got, UserInfo::new("alice", &[ALL_AUTHENTICATED]));
        assert_eq!(
            impersonate(&objects, &user("bob"), &imp("mallory")).unwrap_err(),
            r#"users "mallory" is forbidden: User "bob" cannot impersonate resource "users" in API group "" at the cluster scope"#
        );
        assert_eq!(
            impersonate(&objects, &user("eve"), &imp("alice")).unwrap_err(),
            r#"users "alice" is forbidden: User "eve" cannot impersonate resource "users" in API group "" at the cluster scope"#
        );
        // No headers: the requester stays who they are.
        assert_eq!(
            impersonate(&objects, &user("eve"), &ImpersonationRequest::default()).unwrap(),
            user("eve")
        );
        // Superusers may impersonate anyone.
        let root = UserInfo::new("root", &[SYSTEM_MASTERS]);
        assert_eq!(
            impersonate(&objects, &root, &imp("zed")).unwrap().name,
            "zed"
        );
    }

    #[test]
    fn legacy_impersonate_service_account() {
        let objects = impersonator_objects();
        let controller = user("controller");
        let got = impersonate(
            &objects,
            &controller,
            &imp("system:serviceaccount:team:deployer"),
        )
        .unwrap();
        assert_eq!(got, sa_user("team", "deployer"));
        assert_eq!(
            impersonate(
                &objects,
                &controller,
                &imp("system:serviceaccount:team:other")
            )
            .unwrap_err(),
            r#"serviceaccounts "other" is forbidden: User "controller" cannot impersonate resource "serviceaccounts" in API group "" in the namespace "team""#
        );
        assert_eq!(
            impersonate(
                &objects,
                &controller,
                &imp("system:serviceaccount:prod:deployer")
            )
            .unwrap_err(),
            r#"serviceaccounts "deployer" is forbidden: User "controller" cannot impersonate resource "serviceaccounts" in API group "" in the namespace "prod""#
        );
        // Not a valid service account username: checked as a plain user.
        assert_eq!(
            impersonate(&objects, &controller, &imp("system:serviceaccount:team")).unwrap_err(),
            r#"users "system:serviceaccount:team" is forbidden: User "controller" cannot impersonate resource "users" in API group "" at the cluster scope"#
        );
        // The bootstrap edit role may impersonate service accounts of its namespace.
        let mut objects = objects;
        objects.push(role_binding(
            "team",
            "e",
            "ClusterRole",
            "edit",
            vec![user_subject("dev")],
        ));
        assert!(
            impersonate(
                &objects,
                &user("dev"),
                &imp("system:serviceaccount:team:anything")
            )
            .is_ok()
        );
    }

    #[test]
    fn legacy_impersonate_groups_extra_and_uid() {
        let objects = impersonator_objects();
        let bob = user("bob");
        let req = ImpersonationRequest {
            user: Some("alice".into()),
            uid: Some("u-1".into()),
            groups: vec!["devs".into()],
            extra: BTreeMap::from([(
                "scopes".to_string(),
                vec!["read".to_string(), "write".to_string()],
            )]),
        };
        let got = impersonate(&objects, &bob, &req).unwrap();
        assert_eq!(
            got,
            UserInfo {
                name: "alice".into(),
                uid: "u-1".into(),
                groups: vec!["devs".into(), ALL_AUTHENTICATED.into()],
                extra: BTreeMap::from([(
                    "scopes".to_string(),
                    vec!["read".to_string(), "write".to_string()]
                )]),
            }
        );
        let mut bad_group = req.clone();
        bad_group.groups.push(SYSTEM_MASTERS.into());
        assert_eq!(
            impersonate(&objects, &bob, &bad_group).unwrap_err(),
            r#"groups "system:masters" is forbidden: User "bob" cannot impersonate resource "groups" in API group "" at the cluster scope"#
        );
        let mut bad_extra = req.clone();
        bad_extra.extra.insert("tenant".into(), vec!["acme".into()]);
        assert_eq!(
            impersonate(&objects, &bob, &bad_extra).unwrap_err(),
            r#"userextras.authentication.k8s.io "acme" is forbidden: User "bob" cannot impersonate resource "userextras/tenant" in API group "authentication.k8s.io" at the cluster scope"#
        );
        let mut bad_uid = req.clone();
        bad_uid.uid = Some("u-2".into());
        assert_eq!(
            impersonate(&objects, &bob, &bad_uid).unwrap_err(),
            r#"uids.authentication.k8s.io "u-2" is forbidden: User "bob" cannot impersonate resource "uids" in API group "authentication.k8s.io" at the cluster scope"#
        );
        // Explicit groups replace the service account's groups.
        let mut objects = objects;
        objects.push(crb(
            "bob-sa",
            "cluster-admin",
            vec![user_subject("root-ish")],
        ));
        let root = UserInfo::new("root-ish", &[]);
        let sa = ImpersonationRequest {
            user: Some("system:serviceaccount:team:deployer".into()),
            groups: vec!["devs".into()],
            ..Default::default()
        };
        assert_eq!(
            impersonate(&objects, &root, &sa).unwrap().groups,
            vec!["devs", ALL_AUTHENTICATED]
        );
    }

    #[test]
    fn legacy_impersonation_group_defaulting() {
        let objects = impersonator_objects();
        let bob = user("bob");
        // Anonymous gets system:unauthenticated, not system:authenticated.
        assert_eq!(
            impersonate(&objects, &bob, &imp(ANONYMOUS)).unwrap().groups,
            vec![ALL_UNAUTHENTICATED]
        );
        // An explicit system:authenticated is not duplicated.
        let req = ImpersonationRequest {
            user: Some("alice".into()),
            groups: vec![ALL_AUTHENTICATED.into()],
            ..Default::default()
        };
        assert_eq!(
            impersonate(&objects, &bob, &req).unwrap().groups,
            vec![ALL_AUTHENTICATED]
        );
        // An explicit system:unauthenticated suppresses system:authenticated.
        let root = UserInfo::new("root", &[SYSTEM_MASTERS]);
        let req = ImpersonationRequest {
            user: Some("alice".into()),
            groups: vec![ALL_UNAUTHENTICATED.into()],
            ..Default::default()
        };
        assert_eq!(
            impersonate(&objects, &root, &req).unwrap().groups,
            vec![ALL_UNAUTHENTICATED]
        );
    }

    #[test]
    fn legacy_groups_without_user_is_a_bad_request() {
        let objects = impersonator_objects();
        let req = ImpersonationRequest {
            groups: vec![SYSTEM_MASTERS.into()],
            uid: Some("u".into()),
            extra: BTreeMap::from([("scopes".to_string(), vec!["x".to_string()])]),
            ..Default::default()
        };
        let err = impersonate_legacy(&objects, &user("bob"), &req).unwrap_err();
        assert_eq!(err.code, 400);
        assert_eq!(err.reason, "BadRequest");
        assert_eq!(
            err.message,
            "requested [{Group  system:masters    } {UserExtra  x  authentication.k8s.io/v1  scopes} {UID  u  authentication.k8s.io/v1  }] without impersonating a user"
        );
        assert_eq!(
            err.to_status(),
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "message": err.message, "reason": "BadRequest", "code": 400})
        );
        assert_eq!(
            impersonate(&objects, &user("bob"), &req).unwrap_err(),
            err.message
        );
    }

    // --- constrained impersonation (1.36+ default) ---------------------------------

    #[test]
    fn constrained_falls_back_to_legacy_permissions() {
        let objects = impersonator_objects();
        let imp_ = Impersonator::new();
        let list_pods = res("list", "", "pods", "default", "");
        let got = imp_
            .impersonate(&objects, &user("bob"), &imp("alice"), &list_pods)
            .unwrap();
        assert_eq!(got, UserInfo::new("alice", &[ALL_AUTHENTICATED]));
        let got = imp_
            .impersonate(
                &objects,
                &user("controller"),
                &imp("system:serviceaccount:team:deployer"),
                &list_pods,
            )
            .unwrap();
        assert_eq!(got, sa_user("team", "deployer"));
        // No headers: unchanged requester.
        assert_eq!(
            imp_.impersonate(
                &objects,
                &user("eve"),
                &ImpersonationRequest::default(),
                &list_pods
            )
            .unwrap(),
            user("eve")
        );
    }

    #[test]
    fn constrained_denial_reports_the_first_mode_error() {
        let objects = impersonator_objects();
        let imp_ = Impersonator::new();
        let list_pods = res("list", "", "pods", "default", "");
        let err = imp_
            .impersonate(&objects, &user("eve"), &imp("alice"), &list_pods)
            .unwrap_err();
        assert_eq!(err.code, 403);
        assert_eq!(
            err.message,
            r#"pods is forbidden: User "eve" cannot impersonate-on:user-info:list resource "pods" in API group "" in the namespace "default""#
        );
        assert_eq!(
            err.details,
            Some(StatusDetails {
                group: String::new(),
                kind: "pods".into(),
                name: String::new()
            })
        );
        let err = imp_
            .impersonate(
                &objects,
                &user("eve"),
                &imp("system:serviceaccount:team:deployer"),
                &res("get", "", "configmaps", "team", "x"),
            )
            .unwrap_err();
        assert_eq!(
            err.message,
            r#"configmaps "x" is forbidden: User "eve" cannot impersonate-on:serviceaccount:get resource "configmaps" in API group "" in the namespace "team""#
        );
        // kubectl auth can-i --as=alice, by a requester without any rights.
        let ssar = res(
            "create",
            AUTHORIZATION_GROUP,
            "selfsubjectaccessreviews",
            "",
            "",
        );
        let err = imp_
            .impersonate(&objects, &user("eve"), &imp("alice"), &ssar)
            .unwrap_err();
        assert_eq!(
            err.message,
            r#"selfsubjectaccessreviews.authorization.k8s.io is forbidden: User "eve" cannot impersonate-on:user-info:create resource "selfsubjectaccessreviews" in API group "authorization.k8s.io" at the cluster scope"#
        );
        // Non-resource requests.
        let err = imp_
            .impersonate(
                &objects,
                &user("eve"),
                &imp("alice"),
                &Attributes::non_resource("get", "/apis"),
            )
            .unwrap_err();
        assert_eq!(
            err.message,
            r#"forbidden: User "eve" cannot impersonate-on:user-info:get path "/apis""#
        );
    }

    #[test]
    fn constrained_modes_allow_with_constrained_rules() {
        let mut objects = impersonator_objects();
        objects.extend([
            cluster_role_obj(
                "deputy",
                vec![
                    rule(&["impersonate-on:user-info:list", "impersonate-on:serviceaccount:get"], &[""], &["pods"]),
                    json!({"apiGroups": [AUTHENTICATION_GROUP], "resources": ["users"], "resourceNames": ["panda"], "verbs": ["impersonate:user-info"]}),
                    json!({"apiGroups": [AUTHENTICATION_GROUP], "resources": ["serviceaccounts"], "verbs": ["impersonate:serviceaccount"]}),
                ],
            ),
            crb("deputy", "deputy", vec![user_subject("deputy")]),
        ]);
        let imp_ = Impersonator::new();
        let deputy = user("deputy");
        let list_pods = res("list", "", "pods", "default", "");
        assert_eq!(
            imp_.impersonate(&objects, &deputy, &imp("panda"), &list_pods)
                .unwrap()
                .name,
            "panda"
        );
        // Another verb: impersonate-on fails, legacy fails; the cached
        // user-info mode's error is reported.
        let err = imp_
            .impersonate(
                &objects,
                &deputy,
                &imp("panda"),
                &res("delete", "", "pods", "default", "p"),
            )
            .unwrap_err();
        assert_eq!(
            err.message,
            r#"pods "p" is forbidden: User "deputy" cannot impersonate-on:user-info:delete resource "pods" in API group "" in the namespace "default""#
        );
        // impersonate-on passes but the identity check fails.
        let err = imp_
            .impersonate(&objects, &deputy, &imp("koala"), &list_pods)
            .unwrap_err();
        assert_eq!(
            err.message,
            r#"users.authentication.k8s.io "koala" is forbidden: User "deputy" cannot impersonate:user-info resource "users" in API group "authentication.k8s.io" at the cluster scope"#
        );
        // Service account mode.
        let got = imp_
            .impersonate(
                &objects,
                &deputy,
                &imp("system:serviceaccount:ns1:app"),
                &res("get", "", "pods", "ns1", "p"),
            )
            .unwrap();
        assert_eq!(got, sa_user("ns1", "app"));
    }

    #[test]
    fn constrained_mode_cache_decides_which_error_is_reported() {
        let objects = impersonator_objects();
        let imp_ = Impersonator::new();
        let bob = user("bob");
        let list_pods = res("list", "", "pods", "default", "");
        // Before bob ever succeeded: the user-info mode's error.
        let err = imp_
            .impersonate(&objects, &bob, &imp("mallory"), &list_pods)
            .unwrap_err();
        assert!(
            err.message.contains("impersonate-on:user-info:list"),
            "{}",
            err.message
        );
        // After a successful legacy impersonation, legacy is tried first and
        // its error is the one reported.
        imp_.impersonate(&objects, &bob, &imp("alice"), &list_pods)
            .unwrap();
        let err = imp_
            .impersonate(&objects, &bob, &imp("mallory"), &list_pods)
            .unwrap_err();
        assert_eq!(
            err.message,
            r#"users "mallory" is forbidden: User "bob" cannot impersonate resource "users" in API group "" at the cluster scope"#
        );
        imp_.reset();
        let err = imp_
            .impersonate(&objects, &bob, &imp("mallory"), &list_pods)
            .unwrap_err();
        assert!(err.message.contains("impersonate-on:user-info:list"));
    }

    #[test]
    fn constrained_rejects_system_masters_but_legacy_may_allow() {
        let objects = impersonator_objects();
        let imp_ = Impersonator::new();
        let root = UserInfo::new("root", &[SYSTEM_MASTERS]);
        let req = ImpersonationRequest {
            user: Some("alice".into()),
            groups: vec![SYSTEM_MASTERS.into()],
            ..Default::default()
        };
        let list_pods = res("list", "", "pods", "default", "");
        let got = imp_.impersonate(&objects, &root, &req, &list_pods).unwrap();
        assert_eq!(got.groups, vec![SYSTEM_MASTERS, ALL_AUTHENTICATED]);
        // Someone with constrained rights for everything but not legacy rights.
        let mut objects = objects;
        objects.extend([
            cluster_role_obj(
                "all-constrained",
                vec![rule(
                    &["impersonate-on:user-info:list", "impersonate:user-info"],
                    &["*"],
                    &["*"],
                )],
            ),
            crb("c", "all-constrained", vec![user_subject("carol")]),
        ]);
        let err = imp_
            .impersonate(&objects, &user("carol"), &req, &list_pods)
            .unwrap_err();
        assert_eq!(
            err.message,
            r#"groups.authentication.k8s.io "system:masters" is forbidden: User "carol" cannot impersonate:user-info resource "groups" in API group "authentication.k8s.io" at the cluster scope: impersonating the system:masters group is not allowed"#
        );
        let ok = ImpersonationRequest {
            groups: vec!["devs".into()],
            ..req
        };
        assert_eq!(
            imp_.impersonate(&objects, &user("carol"), &ok, &list_pods)
                .unwrap()
                .groups,
            vec!["devs", ALL_AUTHENTICATED]
        );
    }

    #[test]
    fn constrained_extra_validation() {
        let mut objects = impersonator_objects();
        objects.extend([
            cluster_role_obj(
                "all-constrained",
                vec![rule(
                    &["impersonate-on:user-info:get", "impersonate:user-info"],
                    &["*"],
                    &["*"],
                )],
            ),
            crb("c", "all-constrained", vec![user_subject("carol")]),
        ]);
        let imp_ = Impersonator::new();
        let get = res("get", "", "pods", "a", "p");
        let req = ImpersonationRequest {
            user: Some("alice".into()),
            extra: BTreeMap::from([("scopes".to_string(), vec!["x".to_string()])]),
            ..Default::default()
        };
        let err = imp_
            .impersonate(&objects, &user("carol"), &req, &get)
            .unwrap_err();
        assert_eq!(
            err.message,
            r#"userextras.authentication.k8s.io is forbidden: User "carol" cannot impersonate:user-info resource "userextras" in API group "authentication.k8s.io" at the cluster scope: impersonating an invalid key in extra is not allowed: extra.key: Invalid value: "scopes": must be a domain-prefixed path (such as "acme.io/foo")"#
        );
        let req = ImpersonationRequest {
            user: Some("alice".into()),
            extra: BTreeMap::from([("example.com/scopes".to_string(), vec!["x".to_string()])]),
            ..Default::default()
        };
        let got = imp_
            .impersonate(&objects, &user("carol"), &req, &get)
            .unwrap();
        assert_eq!(got.extra["example.com/scopes"], vec!["x"]);
    }

    #[test]
    fn constrained_node_impersonation() {
        let mut objects = impersonator_objects();
        objects.extend([
            cluster_role_obj(
                "node-agent",
                vec![
                    rule(&["impersonate-on:associated-node:get", "impersonate-on:arbitrary-node:get"], &[""], &["pods"]),
                    json!({"apiGroups": [AUTHENTICATION_GROUP], "resources": ["nodes"], "resourceNames": ["*"], "verbs": ["impersonate:associated-node"]}),
                ],
            ),
            crb("agent", "node-agent", vec![sa_subject("kube-system", "agent")]),
        ]);
        let imp_ = Impersonator::new();
        let mut agent = sa_user("kube-system", "agent");
        agent
            .extra
            .insert(NODE_NAME_EXTRA_KEY.into(), vec!["node1".into()]);
        let get = res("get", "", "pods", "a", "p");
        let got = imp_
            .impersonate(&objects, &agent, &imp("system:node:node1"), &get)
            .unwrap();
        assert_eq!(
            got,
            UserInfo::new("system:node:node1", &[NODES_GROUP, ALL_AUTHENTICATED])
        );
        // Another node: only arbitrary-node (and legacy) apply.
        let err = imp_
            .impersonate(&objects, &agent, &imp("system:node:node2"), &get)
            .unwrap_err();
        assert_eq!(
            err.message,
            r#"nodes.authentication.k8s.io "node2" is forbidden: User "system:serviceaccount:kube-system:agent" cannot impersonate:arbitrary-node resource "nodes" in API group "authentication.k8s.io" at the cluster scope"#
        );
    }

    #[test]
    fn constrained_groups_without_user_is_a_bad_request() {
        let objects = impersonator_objects();
        let req = ImpersonationRequest {
            groups: vec![SYSTEM_MASTERS.into(), "devs".into()],
            extra: BTreeMap::from([("a/b".to_string(), vec!["x".to_string()])]),
            ..Default::default()
        };
        let err = Impersonator::new()
            .impersonate(
                &objects,
                &user("bob"),
                &req,
                &res("get", "", "pods", "a", "p"),
            )
            .unwrap_err();
        assert_eq!(err.code, 400);
        assert_eq!(
            err.message,
            r#"requested &user.DefaultInfo{Name:"", UID:"", Groups:[]string{"system:masters", "devs"}, Extra:map[string][]string{"a/b":[]string{"x"}}} without impersonating a user name"#
        );
        let req = ImpersonationRequest {
            uid: Some("u".into()),
            ..Default::default()
        };
        let err = Impersonator::new()
            .impersonate(
                &objects,
                &user("bob"),
                &req,
                &res("get", "", "pods", "a", "p"),
            )
            .unwrap_err();
        assert_eq!(
            err.message,
            r#"requested &user.DefaultInfo{Name:"", UID:"u", Groups:[]string(nil), Extra:map[string][]string(nil)} without impersonating a user name"#
        );
    }

    #[test]
    fn names() {
        assert_eq!(
            split_service_account_username("system:serviceaccount:team:deployer"),
            Some(("team".into(), "deployer".into()))
        );
        assert_eq!(
            split_service_account_username("system:serviceaccount:team:a.b"),
            Some(("team".into(), "a.b".into()))
        );
        assert_eq!(
            split_service_account_username("system:serviceaccount:Team:x"),
            None
        );
        assert_eq!(
            split_service_account_username("system:serviceaccount:a:b:c"),
            None
        );
        assert_eq!(
            split_service_account_username("system:serviceaccount::x"),
            None
        );
        assert_eq!(
            node_name("system:node:n1.example"),
            Some("n1.example".into())
        );
        assert_eq!(node_name("system:node:"), None);
        assert_eq!(node_name("system:node:N1"), None);
    }
}
