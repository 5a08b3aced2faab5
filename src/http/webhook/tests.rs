//! The AdmissionReview plumbing: paths, malformed reviews, response shapes,
//! the UPDATE and DELETE shortcuts, and kinds that do not match the path.
//! The rules themselves are tested in `crate::validate`.

use serde_json::{Value, json};

use super::*;

const NS: &str = "team";

fn app() -> Value {
    json!({"name": "app", "sourceRef": {"name": "app"}})
}

fn version() -> Value {
    json!({"value": "1.0.0"})
}

/// Sends a CREATE (or an UPDATE with `old`) through [`handle`]; returns
/// `(allowed, code, message)`.
fn admit_object(path: &str, object: Value, old: Option<Value>) -> (bool, u64, String) {
    let kind = object["kind"].as_str().unwrap_or("StageSet").to_string();
    let review = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "0d0e8f6a-1",
            "kind": {"group": "stages.metio.wtf", "version": "v1", "kind": kind},
            "resource": {"group": "stages.metio.wtf", "version": "v1", "resource": "x"},
            "namespace": NS,
            "name": "shop",
            "operation": if old.is_some() { "UPDATE" } else { "CREATE" },
            "object": object,
            "oldObject": old.unwrap_or(Value::Null),
        }
    });
    let answer = handle(path, &serde_json::to_vec(&review).unwrap());
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.content_type, "application/json");
    let body: Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(body["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(body["kind"], "AdmissionReview");
    assert_eq!(body["response"]["uid"], "0d0e8f6a-1");
    let r = &body["response"];
    (
        r["allowed"].as_bool().unwrap(),
        r["status"]["code"].as_u64().unwrap(),
        r["status"]["message"].as_str().unwrap_or("").to_string(),
    )
}

fn object(spec: Value) -> Value {
    json!({
        "apiVersion": "stages.metio.wtf/v1",
        "kind": "StageSet",
        "metadata": {"name": "shop", "namespace": NS},
        "spec": spec,
    })
}

/// Admission of a raw StageSet spec (enum rules need the raw JSON).
fn admit(spec: Value) -> (bool, u64, String) {
    admit_object(STAGESET_PATH, object(spec), None)
}

fn keyless() -> Value {
    json!({"keyless": {"issuer": "https://token.actions.githubusercontent.com", "subject": "https://github.com/acme/app/.github/workflows/release.yaml@refs/heads/main"}})
}

// --- The AdmissionReview plumbing -------------------------------------------------

fn raw(path: &str, body: &str) -> Answer {
    handle(path, body.as_bytes())
}

#[test]
fn unknown_paths_are_404() {
    for path in [
        "/",
        "/validate-stages-metio-wtf-v1-fleetrollout",
        "/validate-stages-metio-wtf-v1-stageset/extra",
    ] {
        let a = raw(path, "{}");
        assert_eq!(a.status, 404, "{path}");
        assert_eq!(
            String::from_utf8(a.body).unwrap(),
            format!("no webhook at {path}\n")
        );
    }
}

#[test]
fn malformed_reviews_are_400() {
    let cases = [
        ("", "the request body is empty; expected an AdmissionReview"),
        ("{not json", "the request body is not JSON"),
        (
            "[]",
            "expected an admission.k8s.io/v1 AdmissionReview, got apiVersion (none) kind (none)",
        ),
        (
            r#"{"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {"uid": "u"}}"#,
            "expected an admission.k8s.io/v1 AdmissionReview, got apiVersion \"admission.k8s.io/v1beta1\" kind \"AdmissionReview\"",
        ),
        (
            r#"{"apiVersion": "admission.k8s.io/v1", "kind": "ConversionReview", "request": {"uid": "u"}}"#,
            "expected an admission.k8s.io/v1 AdmissionReview, got apiVersion \"admission.k8s.io/v1\" kind \"ConversionReview\"",
        ),
        (
            r#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}"#,
            "the AdmissionReview has no request",
        ),
        (
            r#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": null}"#,
            "the AdmissionReview has no request",
        ),
        (
            r#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"operation": "CREATE"}}"#,
            "the AdmissionReview request has no uid",
        ),
    ];
    for (body, want) in cases {
        let a = raw(STAGESET_PATH, body);
        assert_eq!(a.status, 400, "{body}");
        assert_eq!(a.content_type, "text/plain; charset=utf-8");
        let text = String::from_utf8(a.body).unwrap();
        assert!(text.starts_with(want), "{body}: {text}");
        assert!(text.ends_with('\n'));
    }
}

#[test]
fn allowed_and_denied_responses_are_shaped_like_controller_runtime() {
    let review = |spec: Value| {
        let body = json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {"uid": "u-1", "operation": "CREATE", "object": object(spec)}
        });
        let a = handle(STAGESET_PATH, &serde_json::to_vec(&body).unwrap());
        serde_json::from_slice::<Value>(&a.body).unwrap()
    };
    assert_eq!(
        review(json!({"stages": [app()]})),
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
               "response": {"uid": "u-1", "allowed": true, "status": {"metadata": {}, "code": 200}}})
    );
    assert_eq!(
        review(json!({"stages": [app(), app()]})),
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
               "response": {"uid": "u-1", "allowed": false, "status": {
                   "metadata": {}, "code": 403, "reason": "Forbidden",
                   "message": "stage name \"app\" is not unique; stage names must be unique within the StageSet"}}})
    );
}

fn invalid_object() -> Value {
    object(json!({"stages": [app(), app()], "interval": "5m"}))
}

#[test]
fn delete_and_connect_are_not_validated() {
    for op in ["DELETE", "CONNECT"] {
        let body = json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u", "operation": op, "oldObject": invalid_object(), "object": null}
        });
        let a = handle(STAGESET_PATH, &serde_json::to_vec(&body).unwrap());
        let v: Value = serde_json::from_slice(&a.body).unwrap();
        assert_eq!(v["response"]["allowed"], true, "{op}");
    }
}

#[test]
fn stageset_update_skips() {
    let old = invalid_object();
    // Only spec.suspend changed: admitted although the spec breaks WS-01.
    let mut new = old.clone();
    new["spec"]["suspend"] = json!(true);
    assert!(admit_object(STAGESET_PATH, new.clone(), Some(old.clone())).0);
    // Metadata only.
    let mut new = old.clone();
    new["metadata"]["annotations"] = json!({"reconcile.fluxcd.io/requestedAt": "now"});
    assert!(admit_object(STAGESET_PATH, new, Some(old.clone())).0);
    // Being deleted.
    let mut new = old.clone();
    new["spec"]["interval"] = json!("1m");
    new["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    assert!(admit_object(STAGESET_PATH, new, Some(old.clone())).0);
    // Any other spec change is validated.
    let mut new = old.clone();
    new["spec"]["interval"] = json!("1m");
    let (allowed, code, message) = admit_object(STAGESET_PATH, new, Some(old.clone()));
    assert!(!allowed);
    assert_eq!(code, 403);
    assert!(message.starts_with("stage name \"app\" is not unique"));
    // CREATE of the same object is validated.
    assert!(!admit_object(STAGESET_PATH, old, None).0);
}

#[test]
fn image_policy_update_skips_only_when_deleting() {
    let bad = json!({"apiVersion": "stages.metio.wtf/v1", "kind": "ImageVerificationPolicy",
                     "metadata": {"name": "p"}, "spec": {"images": ["reg.io/**"]}});
    let (allowed, code, message) = admit_object(IMAGE_POLICY_PATH, bad.clone(), Some(bad.clone()));
    assert!(!allowed);
    assert_eq!(code, 403);
    assert_eq!(
        message,
        "spec.authorities must list at least one keyless authority"
    );
    let mut deleting = bad.clone();
    deleting["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    assert!(admit_object(IMAGE_POLICY_PATH, deleting, Some(bad)).0);
}

#[test]
fn kind_must_match_the_path() {
    let ivp = json!({"apiVersion": "stages.metio.wtf/v1", "kind": "ImageVerificationPolicy",
                     "metadata": {"name": "p"}, "spec": {"images": ["reg.io/**"], "authorities": [keyless()]}});
    let (allowed, code, message) = admit_object(STAGESET_PATH, ivp.clone(), None);
    assert!(!allowed);
    assert_eq!(code, 400);
    assert_eq!(
        message,
        "this webhook validates stages.metio.wtf/v1 StageSet objects, but the request is for stages.metio.wtf/v1 ImageVerificationPolicy"
    );
    assert!(admit_object(IMAGE_POLICY_PATH, ivp, None).0);
    let (allowed, code, message) = admit_object(IMAGE_POLICY_PATH, invalid_object(), None);
    assert!(!allowed);
    assert_eq!(code, 400);
    assert!(
        message.contains(
            "ImageVerificationPolicy objects, but the request is for stages.metio.wtf/v1 StageSet"
        ),
        "{message}"
    );
    // A Deployment sent to the StageSet webhook.
    let body = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "u", "operation": "CREATE",
                    "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
                    "object": {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}}}
    });
    let v: Value =
        serde_json::from_slice(&handle(STAGESET_PATH, &serde_json::to_vec(&body).unwrap()).body)
            .unwrap();
    assert_eq!(v["response"]["allowed"], false);
    assert_eq!(
        v["response"]["status"]["message"],
        "this webhook validates stages.metio.wtf/v1 StageSet objects, but the request is for apps/v1 Deployment"
    );
}

#[test]
fn undecodable_objects_are_400_not_panics() {
    for spec in [
        json!({"stages": "many"}),
        json!({"stages": [{"name": 7, "sourceRef": {"name": "a"}}]}),
        json!({"stages": [app()], "windowScope": "updates"}),
        json!(null),
    ] {
        let (allowed, code, message) = admit(spec.clone());
        assert!(!allowed, "{spec}");
        assert_eq!(code, 400, "{spec}: {message}");
        assert!(message.starts_with("decoding the StageSet: "), "{message}");
    }
    let body = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                      "request": {"uid": "u", "operation": "CREATE"}});
    let v: Value =
        serde_json::from_slice(&handle(STAGESET_PATH, &serde_json::to_vec(&body).unwrap()).body)
            .unwrap();
    assert_eq!(v["response"]["status"]["code"], 400);
    assert_eq!(
        v["response"]["status"]["message"],
        "the CREATE request carries no object"
    );
}

#[test]
fn namespace_comes_from_the_request_when_the_object_has_none() {
    let mut o = object(json!({"stages": [app()], "version": version(),
                              "migrationsSourceRef": {"sourceRef": {"name": "l", "namespace": NS}}}));
    o["metadata"].as_object_mut().unwrap().remove("namespace");
    // WS-18 (same-namespace ladder) passes only with the request's
    // namespace.
    let (allowed, code, message) = admit_object(STAGESET_PATH, o.clone(), None);
    assert!(allowed, "{code} {message}");
    // Another namespace in the reference is refused against it.
    o["spec"]["migrationsSourceRef"]["sourceRef"]["namespace"] = json!("elsewhere");
    let (allowed, code, message) = admit_object(STAGESET_PATH, o, None);
    assert!(!allowed);
    assert_eq!(code, 403);
    assert_eq!(
        message,
        "spec.migrationsSourceRef must reference a source in the StageSet's own namespace; cross-namespace migration sources are not allowed"
    );
}
