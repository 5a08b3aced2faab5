//! The validating admission webhook (api.md §11, operations.md §3.4,
//! delivery.md §2.20): the upstream corpus through the validators, then
//! through kube-sim (CRD schema, then our webhook over TLS, as a real API
//! server runs them), what `kubectl` shows, the update-skip rule, and the raw
//! HTTP surface.

#![recursion_limit = "256"]

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use stageset_controller::api::{ImageVerificationPolicy, StageSet};
use stageset_controller::http::webhook;
use stageset_controller::validate;
use support::*;

// --- The corpus ---------------------------------------------------------------

// Invalid corpus files the CRD schema itself rejects (tests/api.rs checks our
// schema against the same list); every other invalid file must be rejected by
// the webhook.
#[path = "support/corpus.rs"]
mod corpus;
use corpus::{NOT_SUPPORTED_YET, SCHEMA_LEVEL_INVALID};

/// What the webhook answers for every other invalid file: the rule its
/// `expect-reject` line names, word for word as a user sees it. A trailing
/// `…` compares a prefix (CEL parser details).
const WEBHOOK_REJECTS: &[(&str, &str)] = &[
    (
        "002-orders-producer-without-apiversion.yaml",
        "stage \"app\" sourceRef: kind \"JsonnetSnippet\" is a producer reference and requires apiVersion (the API group identifies the producer's ExternalArtifact back-pointer)",
    ),
    (
        "003-scope-version-without-version.yaml",
        "stage \"app\" action \"db-upgrade\" sets scope: Version but spec.version is unset; version-scoped actions require a version to key on",
    ),
    (
        "006-dependson-minversion-not-semver.yaml",
        "spec.dependsOn[0] (db): minVersion \"two\" is not a valid semver: Invalid Semantic Version",
    ),
    (
        "007-action-no-verb.yaml",
        "stage \"app\" action \"a\" (pre): exactly one of patch, http, wait, job, delete, apply must be set, found 0",
    ),
    (
        "008-action-two-verbs.yaml",
        "stage \"app\" action \"a\" (pre): exactly one of patch, http, wait, job, delete, apply must be set, found 2",
    ),
    (
        "009-action-four-verbs.yaml",
        "stage \"app\" action \"a\" (pre): exactly one of patch, http, wait, job, delete, apply must be set, found 4",
    ),
    (
        "010-duplicate-stage-names.yaml",
        "stage name \"app\" is not unique; stage names must be unique within the StageSet",
    ),
    (
        "011-onrollback-no-verb.yaml",
        "onRollback action \"bad\": exactly one of patch, http, wait, job, delete, apply must be set, found 0",
    ),
    (
        "012-onrollback-two-verbs.yaml",
        "onRollback action \"bad\": exactly one of patch, http, wait, job, delete, apply must be set, found 2",
    ),
    (
        "013-onrollback-empty-name.yaml",
        "onRollback has an action with an empty name; action names identify the action in events and must be set",
    ),
    (
        "014-onrollback-duplicate-name.yaml",
        "onRollback has duplicate action name \"dup\"; action names must be unique",
    ),
    (
        "015-onfailure-action-no-verb.yaml",
        "stage \"app\" action \"bad\" (onFailure): exactly one of patch, http, wait, job, delete, apply must be set, found 0",
    ),
    (
        "016-action-empty-name.yaml",
        "stage \"app\" has an action with an empty name in pre; action names are the idempotency-ledger key and must be set",
    ),
    (
        "017-action-duplicate-name-same-phase.yaml",
        "stage \"app\" has duplicate action name \"dup\" (pre and pre); action names are the idempotency-ledger key and must be unique across pre, post, and onFailure",
    ),
    (
        "018-action-duplicate-name-across-phases.yaml",
        "stage \"app\" has duplicate action name \"shared\" (pre and post); action names are the idempotency-ledger key and must be unique across pre, post, and onFailure",
    ),
    (
        "019-producer-sourceref-without-apiversion.yaml",
        "stage \"app\" sourceRef: kind \"JsonnetSnippet\" is a producer reference and requires apiVersion (the API group identifies the producer's ExternalArtifact back-pointer)",
    ),
    (
        "026-errorbudget-freeze-not-number.yaml",
        "spec.errorBudget.freezeThreshold \"x\" is not a number",
    ),
    (
        "027-errorbudget-resume-not-number.yaml",
        "spec.errorBudget.resumeThreshold \"y\" is not a number",
    ),
    (
        "028-errorbudget-resume-below-freeze.yaml",
        "spec.errorBudget.resumeThreshold (0.05) must be >= freezeThreshold (0.1)",
    ),
    (
        "034-analysis-check-empty-name.yaml",
        "stage \"staging\" promotion.analysis has a check with an empty name",
    ),
    (
        "035-analysis-duplicate-check.yaml",
        "stage \"staging\" promotion.analysis has duplicate check name \"err\"",
    ),
    (
        "037-analysis-check-no-threshold-bound.yaml",
        "stage \"staging\" promotion.analysis check \"x\" must set at least one of threshold.min or threshold.max",
    ),
    (
        "040-metric-source-neither.yaml",
        "stage \"staging\" promotion.analysis check \"err\" source must set exactly one of prometheus or webhook, found 0",
    ),
    (
        "041-metric-source-both.yaml",
        "stage \"staging\" promotion.analysis check \"err\" source must set exactly one of prometheus or webhook, found 2",
    ),
    (
        "045-fasttrack-without-soak.yaml",
        "stage \"staging\" promotion.fastTrack requires a soak to shorten",
    ),
    (
        "046-fasttrack-bad-source.yaml",
        "stage \"staging\" promotion.fastTrack.source must set exactly one of prometheus or webhook, found 0",
    ),
    (
        "047-fasttrack-max-not-number.yaml",
        "stage \"staging\" promotion.fastTrack.max \"fast\" is not a number",
    ),
    (
        "048-restartgate-check-empty-name.yaml",
        "stage \"staging\" promotion.restartGate has a check with an empty name",
    ),
    (
        "049-restartgate-check-empty-selector.yaml",
        "stage \"staging\" promotion.restartGate check \"api\" selector must match at least one label",
    ),
    (
        "051-restartgate-no-checks.yaml",
        "stage \"staging\" promotion.restartGate must declare at least one check",
    ),
    (
        "054-eventgate-check-empty-name.yaml",
        "stage \"staging\" promotion.eventGate has a check with an empty name",
    ),
    (
        "055-eventgate-check-empty-selector.yaml",
        "stage \"staging\" promotion.eventGate check \"api\" selector must match at least one label",
    ),
    (
        "058-eventgate-no-checks.yaml",
        "stage \"staging\" promotion.eventGate must declare at least one check",
    ),
    (
        "061-per-stage-errorbudget-resume-below-freeze.yaml",
        "stage \"prod\" errorBudget.resumeThreshold (0.05) must be >= freezeThreshold (0.1)",
    ),
    (
        "066-migration-action-no-verb.yaml",
        "migration \"m\" action \"noop\": exactly one verb must be set, found 0",
    ),
    (
        "067-migration-action-two-verbs.yaml",
        "migration \"m\" action \"two\": exactly one verb must be set, found 2",
    ),
    (
        "068-migration-action-empty-name.yaml",
        "migration \"m\" has an action with an empty name; action names are the idempotency-ledger key and must be set",
    ),
    (
        "069-migration-action-duplicate-name.yaml",
        "migration \"m\" has duplicate action name \"dup\"; action names are the idempotency-ledger key and must be unique",
    ),
    (
        "070-migration-duplicate-name.yaml",
        "duplicate migration name \"cleanup\"; names are the idempotency-ledger key and must be unique",
    ),
    (
        "071-migrations-inline-and-source.yaml",
        "spec.migrations and spec.migrationsSourceRef are mutually exclusive",
    ),
    (
        "072-migrations-source-without-version.yaml",
        "migrations require spec.version",
    ),
    (
        "073-migrations-source-cross-namespace.yaml",
        "spec.migrationsSourceRef must reference a source in the StageSet's own namespace; cross-namespace migration sources are not allowed",
    ),
    (
        "074-migrations-inline-without-version.yaml",
        "migrations require spec.version",
    ),
    (
        "075-migration-unknown-anchor.yaml",
        "migration \"m\" anchors to unknown stage or anchor \"nope\"",
    ),
    (
        "076-migration-anchor-collides-with-stage.yaml",
        "stage \"verify\" migrationAnchor \"deploy\" collides with another stage name or migrationAnchor",
    ),
    (
        "077-scope-version-without-spec-version.yaml",
        "stage \"app\" action \"upgrade\" sets scope: Version but spec.version is unset; version-scoped actions require a version to key on",
    ),
    (
        "078-scope-on-onfailure.yaml",
        "stage \"app\" onFailure action \"upgrade\" sets scope; scope is valid only on pre/post actions, and onFailure is ledger-exempt",
    ),
    (
        "079-scope-on-onrollback.yaml",
        "onRollback action \"revert\" sets scope; scope is valid only on a stage's pre/post actions, and onRollback is ledger-exempt",
    ),
    (
        "080-scope-lifetime-on-onfailure.yaml",
        "stage \"app\" onFailure action \"upgrade\" sets scope; scope is valid only on pre/post actions, and onFailure is ledger-exempt",
    ),
    (
        "081-scope-lifetime-on-onrollback.yaml",
        "onRollback action \"revert\" sets scope; scope is valid only on a stage's pre/post actions, and onRollback is ledger-exempt",
    ),
    (
        "083-completion-anchor-without-lifetime.yaml",
        "stage \"app\" action \"upgrade\" (post): completionAnchor is valid only on a scope: Lifetime action",
    ),
    (
        "085-completion-anchor-on-onrollback.yaml",
        "onRollback action \"revert\" sets completionAnchor; it is valid only on a scope: Lifetime pre/post action",
    ),
    (
        "086-scope-on-migration-action.yaml",
        "migration \"m1\" action \"scoped-in-migration\" sets scope; scope is valid only on a stage's pre/post actions — a migration action is already keyed to its version transition by the migration ledger",
    ),
    (
        "087-completion-anchor-on-migration-action.yaml",
        "migration \"m1\" action \"anchored-in-migration\" sets completionAnchor; it is valid only on a scope: Lifetime pre/post action",
    ),
    (
        "088-readychecks-malformed-cel.yaml",
        "stage \"app\" readyChecks.exprs[0] current \"this is not ( valid CEL\": compile CEL: 1:6: Syntax error: …",
    ),
    (
        "089-readychecks-cel-garbage.yaml",
        "stage \"app\" readyChecks.exprs[0] current \"@@\": compile CEL: 1:1: Syntax error: token recognition error at: '@'…",
    ),
    (
        "092-version-no-source.yaml",
        "spec.version must set exactly one of value, fromObject, or fromArtifact, found 0",
    ),
    (
        "093-version-two-sources.yaml",
        "spec.version must set exactly one of value, fromObject, or fromArtifact, found 2",
    ),
    (
        "094-window-recurring-and-absolute.yaml",
        "update window is both recurring (schedule/duration) and absolute (from/to)",
    ),
    (
        "095-window-neither.yaml",
        "update window sets neither a schedule+duration nor from+to",
    ),
    (
        "096-window-bad-cron.yaml",
        "schedule \"not a cron\": expected exactly 5 fields, found 3: [not a cron]",
    ),
    (
        "097-window-bad-timezone.yaml",
        "timeZone \"Mars/Olympus\": unknown time zone Mars/Olympus",
    ),
    (
        "098-window-to-before-from.yaml",
        "absolute update window to must be after from",
    ),
    (
        "099-window-only-from.yaml",
        "absolute update window requires both from and to",
    ),
    (
        "100-window-only-to.yaml",
        "absolute update window requires both from and to",
    ),
    (
        "101-window-schedule-without-duration.yaml",
        "recurring update window requires both schedule and duration",
    ),
    (
        "102-window-duration-without-schedule.yaml",
        "recurring update window requires both schedule and duration",
    ),
    (
        "103-window-zero-duration.yaml",
        "recurring update window duration must be positive",
    ),
    (
        "104-window-negative-duration.yaml",
        "recurring update window duration must be positive",
    ),
    (
        "105-window-duration-not-go-duration.yaml",
        "spec.updateWindows[0].duration: time: unknown unit \" hours\" in duration \"8 hours\"",
    ),
    (
        "106-migration-empty-name.yaml",
        "a migration has an empty name",
    ),
    (
        "107-migration-empty-to.yaml",
        "migration \"a\" has an empty to",
    ),
    (
        "108-migration-to-not-semver.yaml",
        "migration \"a\" has an invalid to \"not-a-version\": Invalid Semantic Version",
    ),
    (
        "109-migration-from-bad-constraint.yaml",
        "migration \"a\" has an invalid from constraint \">>bad\": improper constraint: >>bad",
    ),
    (
        "110-migration-from-bare-version.yaml",
        "migration \"a\" from \"1.0.0\" is a bare version, which matches only that exact version; write \">=1.0.0\" (from this version onward) or \"=1.0.0\" (exactly that version) to make the intent explicit",
    ),
    (
        "111-migration-from-v-prefixed-bare.yaml",
        "migration \"a\" from \"v1.0.0\" is a bare version, which matches only that exact version; write \">=v1.0.0\" (from this version onward) or \"=v1.0.0\" (exactly that version) to make the intent explicit",
    ),
    (
        "112-migration-down-action-no-verb.yaml",
        "migration \"m\" down action \"undo\": exactly one verb must be set, found 0",
    ),
    (
        "113-migration-down-action-scope.yaml",
        "migration \"m\" down action \"undo\" sets scope; scope is valid only on a stage's pre/post actions — a migration action is already keyed to its version transition by the migration ledger",
    ),
    (
        "114-migration-action-retries-over-cap.yaml",
        "migration \"m\" action \"x\" has retries 11; it must be between 0 and 10",
    ),
    (
        "134-ivp-blank-image-glob.yaml",
        "spec.images[0] must not be empty",
    ),
    (
        "135-ivp-no-authorities.yaml",
        "spec.authorities must list at least one keyless authority",
    ),
    (
        "136-ivp-malformed-public-key.yaml",
        "spec.authorities[0].key.publicKey is not PEM-encoded",
    ),
    (
        "137-ivp-require-attestations.yaml",
        "spec.requireAttestations is not enforced in this version; remove it",
    ),
    (
        "138-ivp-keyless-and-key.yaml",
        "spec.authorities[0] sets both keyless and key; set exactly one",
    ),
    (
        "139-ivp-empty-authority.yaml",
        "spec.authorities[0] sets neither keyless nor key; set exactly one",
    ),
    (
        "140-ivp-missing-subject.yaml",
        "spec.authorities[0].keyless must set subject or subjectRegExp",
    ),
    (
        "141-ivp-issuer-and-issuer-regexp.yaml",
        "spec.authorities[0].keyless sets both issuer and issuerRegExp; set exactly one",
    ),
    (
        "142-ivp-invalid-subject-regexp.yaml",
        "spec.authorities[0].keyless.subjectRegExp is not a valid regexp: error parsing regexp: unclosed group: `(`",
    ),
];

/// The one webhook-level file upstream answers as undecodable (HTTP 400 in
/// the AdmissionReview) rather than as a failed rule (403).
const DECODE_ERRORS: &[&str] = &["105-window-duration-not-go-duration.yaml"];

/// The corpus examples (`valid/`, `invalid/`), if the reference tree is present.
fn corpus_root(what: &str) -> Option<PathBuf> {
    corpus::reference(what).map(|r| r.join("corpus/examples"))
}

fn corpus(root: &Path, dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join(dir))
        .unwrap_or_else(|e| panic!("the corpus at {}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn load(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

fn expected(name: &str) -> &'static str {
    WEBHOOK_REJECTS
        .iter()
        .find(|(f, _)| *f == name)
        .map(|(_, m)| *m)
        .unwrap_or_else(|| panic!("{name}: no expected webhook message"))
}

fn message_matches(got: &str, want: &str) -> bool {
    match want.strip_suffix('…') {
        Some(prefix) => got.starts_with(prefix),
        None => got == want,
    }
}

/// The validators' verdict on one corpus object (`None` for kinds without
/// a webhook).
fn validate(object: &Value) -> Option<Result<(), String>> {
    match object["kind"].as_str()? {
        "StageSet" => Some(match serde_json::from_value::<StageSet>(object.clone()) {
            Ok(ss) => validate::validate_stageset(&ss),
            Err(e) => Err(format!("does not decode: {e}")),
        }),
        "ImageVerificationPolicy" => Some(
            match serde_json::from_value::<ImageVerificationPolicy>(object.clone()) {
                Ok(p) => validate::validate_image_verification_policy(&p),
                Err(e) => Err(format!("does not decode: {e}")),
            },
        ),
        _ => None,
    }
}

fn webhook_path(kind: &str) -> &'static str {
    match kind {
        "StageSet" => webhook::STAGESET_PATH,
        _ => webhook::IMAGE_POLICY_PATH,
    }
}

/// `(allowed, status.code, status.message)` of `handle` for a CREATE.
fn review(object: &Value) -> (bool, u64, String) {
    let kind = object["kind"].as_str().unwrap();
    let body = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "corpus",
            "kind": {"group": "stages.metio.wtf", "version": "v1", "kind": kind},
            "namespace": object.pointer("/metadata/namespace").cloned().unwrap_or(Value::Null),
            "operation": "CREATE",
            "object": object,
        }
    });
    let answer = webhook::handle(webhook_path(kind), &serde_json::to_vec(&body).unwrap());
    assert_eq!(answer.status, 200);
    let v: Value = serde_json::from_slice(&answer.body).unwrap();
    let r = &v["response"];
    (
        r["allowed"].as_bool().unwrap(),
        r["status"]["code"].as_u64().unwrap(),
        r["status"]["message"].as_str().unwrap_or("").to_string(),
    )
}

/// The message a valid corpus file is refused with because it sets a field
/// this controller does not implement yet, if it does.
fn not_supported_yet(name: &str) -> Option<&'static str> {
    NOT_SUPPORTED_YET
        .iter()
        .find(|(f, _)| *f == name)
        .map(|(_, m)| *m)
}

/// Every valid corpus object passes the validators and the webhook handler,
/// except those that set a field not supported yet, refused with exactly
/// that message; every invalid one the CRD schema does not catch is refused,
/// with the reason its `expect-reject` line gives.
#[test]
fn corpus_through_the_validators() {
    let Some(root) = corpus_root("the upstream corpus through the validators") else {
        return;
    };
    let valid = corpus(&root, "valid");
    assert_eq!(valid.len(), 152);
    let mut checked = 0;
    let mut refused = BTreeSet::new();
    for path in &valid {
        let object = load(path);
        let Some(verdict) = validate(&object) else {
            continue;
        };
        let name = file_name(path);
        let (allowed, code, message) = review(&object);
        match not_supported_yet(&name) {
            None => {
                assert_eq!(verdict, Ok(()), "{name}");
                assert!(allowed && code == 200, "{name}: {code} {message}");
            }
            Some(want) => {
                assert_eq!(verdict, Err(want.to_string()), "{name}");
                assert!(!allowed && code == 403, "{name}: {code} {message}");
                assert_eq!(message, want, "{name}");
                refused.insert(name.clone());
            }
        }
        checked += 1;
    }
    assert_eq!(checked, 149, "144 StageSets and 5 policies");
    let listed: BTreeSet<String> = NOT_SUPPORTED_YET
        .iter()
        .map(|(f, _)| f.to_string())
        .collect();
    assert_eq!(refused, listed, "every listed file is a valid StageSet");

    let invalid = corpus(&root, "invalid");
    assert_eq!(invalid.len(), 142);
    let schema_level: BTreeSet<&str> = SCHEMA_LEVEL_INVALID.iter().copied().collect();
    let mut webhook_level = BTreeSet::new();
    for path in &invalid {
        let name = file_name(path);
        if schema_level.contains(name.as_str()) {
            continue;
        }
        webhook_level.insert(name.clone());
        let object = load(path);
        let want = expected(&name);
        let got = validate(&object)
            .unwrap_or_else(|| panic!("{name}: no webhook for this kind"))
            .expect_err(&name);
        assert!(
            message_matches(&got, want),
            "{name}:\n got: {got}\nwant: {want}"
        );
        let (allowed, code, message) = review(&object);
        assert!(!allowed, "{name}");
        assert_eq!(message, got, "{name}");
        let want_code = if DECODE_ERRORS.contains(&name.as_str()) {
            400
        } else {
            403
        };
        assert_eq!(code, want_code, "{name}");
    }
    let listed: BTreeSet<String> = WEBHOOK_REJECTS.iter().map(|(f, _)| f.to_string()).collect();
    assert_eq!(
        webhook_level, listed,
        "every webhook-level file has a message"
    );
    assert_eq!(webhook_level.len(), 88);
}

// --- our own fixtures (tests/fixtures/admission) ----------------------------

/// An admission fixture of ours: a StageSet or ImageVerificationPolicy with
/// its verdict in the header comments. `# expect: M` is a webhook denial
/// (403) with message M, `# expect-decode: M` an object the webhook cannot
/// decode (400), `# expect-schema: S` a refusal by the CRD schema whose
/// message contains S; valid files carry `# admitted: why`.
struct Fixture {
    name: String,
    path: PathBuf,
    object: Value,
    rule: Option<String>,
    verdict: Expect,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Expect {
    Admitted,
    Denied(String),
    Undecodable(String),
    Schema(String),
}

fn fixtures(dir: &str) -> Vec<Fixture> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/admission");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(root.join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let header = |key: &str| {
                text.lines()
                    .take_while(|l| l.starts_with('#'))
                    .find_map(|l| l.strip_prefix(&format!("# {key}: ")))
                    .map(str::to_string)
            };
            let verdict = if let Some(m) = header("expect") {
                Expect::Denied(m)
            } else if let Some(m) = header("expect-decode") {
                Expect::Undecodable(m)
            } else if let Some(m) = header("expect-schema") {
                Expect::Schema(m)
            } else {
                assert!(
                    header("admitted").is_some(),
                    "{}: no verdict",
                    path.display()
                );
                Expect::Admitted
            };
            Fixture {
                name: file_name(&path),
                object: load(&path),
                rule: header("rule"),
                verdict,
                path,
            }
        })
        .collect()
}

/// The rule families our own invalid fixtures must cover, so that admission
/// is tested without the upstream corpus.
const FIXTURE_FAMILIES: &[&str] = &[
    "stages",
    "sourceRef",
    "actions",
    "onRollback",
    "migrations",
    "version",
    "decryption",
    "kubeConfig",
    "errorBudget",
    "promotion.fastTrack",
    "promotion.restartGate",
    "promotion.eventGate",
    "promotion.analysis",
    "readyChecks",
    "dependsOn",
    "updateWindows",
    "durations",
    "not-supported",
    "schema",
    "imagepolicy",
];

/// Our own valid fixtures pass the validators and the webhook handler; the
/// invalid ones are refused with their message, and together they cover
/// every rule family.
#[test]
fn own_fixtures_through_the_validators() {
    let valid = fixtures("valid");
    assert!(valid.len() >= 10);
    for f in &valid {
        assert_eq!(f.verdict, Expect::Admitted, "{}", f.name);
        assert_eq!(validate(&f.object), Some(Ok(())), "{}", f.name);
        let (allowed, code, message) = review(&f.object);
        assert!(allowed && code == 200, "{}: {code} {message}", f.name);
    }
    let mut families = BTreeSet::new();
    for f in fixtures("invalid") {
        families.insert(
            f.rule
                .clone()
                .unwrap_or_else(|| panic!("{}: no rule", f.name)),
        );
        let (want, want_code) = match &f.verdict {
            Expect::Admitted => panic!("{}: an invalid fixture must expect a refusal", f.name),
            // Refused before admission; the API-server test checks these.
            Expect::Schema(_) => continue,
            Expect::Denied(m) => (m, 403),
            Expect::Undecodable(m) => (m, 400),
        };
        let (allowed, code, message) = review(&f.object);
        assert!(!allowed, "{}", f.name);
        assert_eq!(&message, want, "{}", f.name);
        assert_eq!(code, want_code, "{}", f.name);
        if want_code == 403 {
            assert_eq!(validate(&f.object), Some(Err(want.clone())), "{}", f.name);
        }
    }
    let required: BTreeSet<String> = FIXTURE_FAMILIES.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        families, required,
        "rule families covered by tests/fixtures/admission/invalid"
    );
}

/// Our own fixtures through kube-sim with the CRD schema and the webhook in
/// place, created with the real kubectl as a user would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_fixtures_through_kubectl() {
    let w = Webhooked::start(&["--watch-namespaces=webhook-test-idle"]).await;
    w.register().await;
    w.ensure_namespace("shop").await;
    for f in fixtures("valid") {
        let (ok, out, err) = w.kubectl(&["create", "-f", f.path.to_str().unwrap()]).await;
        assert!(ok, "{}: {err}", f.name);
        assert!(out.contains(" created"), "{}: {out}", f.name);
    }
    for f in fixtures("invalid") {
        let (ok, out, err) = w.kubectl(&["create", "-f", f.path.to_str().unwrap()]).await;
        assert!(!ok, "{}: admitted: {out}", f.name);
        let kind = f.object["kind"].as_str().unwrap();
        match &f.verdict {
            Expect::Denied(m) => {
                assert!(
                    err.contains(&denial(hook_for(kind), m)),
                    "{}: {err}",
                    f.name
                )
            }
            Expect::Undecodable(m) => {
                assert!(err.starts_with("Error from server: "), "{}: {err}", f.name);
                assert!(err.contains(m.as_str()), "{}: {err}", f.name);
            }
            Expect::Schema(m) => {
                assert!(!err.contains("admission webhook"), "{}: {err}", f.name);
                assert!(err.contains(m.as_str()), "{}: {err}", f.name);
            }
            Expect::Admitted => unreachable!(),
        }
    }
}

// --- kube-sim with the webhook registered ---------------------------------

const NS: &str = "shop";

struct Webhooked {
    h: Harness,
    ca_pem: String,
    _certs: tempfile::TempDir,
}

impl Webhooked {
    /// A harness whose controller serves the webhook (cert-manager mode, a
    /// CA and serving certificate for 127.0.0.1 in a temp dir). Nothing is
    /// registered with the API server yet.
    async fn start(flags: &[&str]) -> Webhooked {
        let certs = kube_sim::tls::generate(&[]).expect("certificates");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tls.crt"), &certs.cert_pem).unwrap();
        std::fs::write(dir.path().join("tls.key"), &certs.key_pem).unwrap();
        let h = Harness::start_with(HarnessOptions {
            webhook_cert_dir: Some(dir.path().to_path_buf()),
            flags: flags.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
        .await;
        Webhooked {
            h,
            ca_pem: certs.ca_pem,
            _certs: dir,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.h
            .controller
            .as_ref()
            .unwrap()
            .bound()
            .webhook
            .expect("the webhook listener is bound")
    }

    /// Registers both webhooks as the chart does (failurePolicy Fail,
    /// sideEffects None), pointing at our listener by URL.
    async fn register(&self) {
        let ca = base64::engine::general_purpose::STANDARD.encode(&self.ca_pem);
        let hook = |name: &str, path: &str, resource: &str| {
            json!({
                "name": name,
                "clientConfig": {
                    "url": format!("https://127.0.0.1:{}{path}", self.addr().port()),
                    "caBundle": ca,
                },
                "rules": [{
                    "apiGroups": ["stages.metio.wtf"],
                    "apiVersions": ["v1"],
                    "operations": ["CREATE", "UPDATE"],
                    "resources": [resource],
                    "scope": "*",
                }],
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "failurePolicy": "Fail",
                "timeoutSeconds": 10,
            })
        };
        let vwc: ValidatingWebhookConfiguration = serde_json::from_value(json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": "stageset-controller-webhook"},
            "webhooks": [
                hook(webhook::STAGESET_WEBHOOK, webhook::STAGESET_PATH, "stagesets"),
                hook(
                    webhook::IMAGE_POLICY_WEBHOOK,
                    webhook::IMAGE_POLICY_PATH,
                    "imageverificationpolicies",
                ),
            ],
        }))
        .unwrap();
        Api::<ValidatingWebhookConfiguration>::all(self.h.client.clone())
            .create(&PostParams::default(), &vwc)
            .await
            .expect("the webhook configuration is created");
    }

    async fn ensure_namespace(&self, name: &str) {
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        match Api::<Namespace>::all(self.h.client.clone())
            .create(&PostParams::default(), &ns)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => panic!("namespace {name}: {e}"),
        }
    }

    fn api(&self, object: &Value) -> Api<DynamicObject> {
        let kind = object["kind"].as_str().unwrap();
        let plural = match kind {
            "StageSet" => "stagesets",
            "ImageVerificationPolicy" => "imageverificationpolicies",
            "FleetRollout" => "fleetrollouts",
            "StageInventory" => "stageinventories",
            other => panic!("no resource for {other}"),
        };
        let ar = ApiResource {
            group: "stages.metio.wtf".into(),
            version: "v1".into(),
            api_version: "stages.metio.wtf/v1".into(),
            kind: kind.into(),
            plural: plural.into(),
        };
        match object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
        {
            Some(ns) => Api::namespaced_with(self.h.client.clone(), ns, &ar),
            None => Api::all_with(self.h.client.clone(), &ar),
        }
    }

    async fn create(&self, object: &Value) -> Result<(), Box<kube::core::Status>> {
        let obj: DynamicObject = serde_json::from_value(object.clone()).unwrap();
        match self.api(object).create(&PostParams::default(), &obj).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) => Err(s),
            Err(e) => panic!("create: {e}"),
        }
    }

    /// Runs the real kubectl against kube-sim.
    async fn kubectl(&self, args: &[&str]) -> (bool, String, String) {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        self.h.sim.write_kubeconfig(&kubeconfig).unwrap();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(
                std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into()),
            )
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--cache-dir")
            .arg(dir.path().join("cache"))
            .args(&args)
            .output()
            .expect("kubectl runs")
        })
        .await
        .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

fn denial(hook: &str, message: &str) -> String {
    format!("admission webhook \"{hook}\" denied the request: {message}")
}

fn hook_for(kind: &str) -> &'static str {
    match kind {
        "StageSet" => webhook::STAGESET_WEBHOOK,
        _ => webhook::IMAGE_POLICY_WEBHOOK,
    }
}

/// Every corpus file created through the API server with schema validation
/// and the webhook in place: the valid ones are stored, the invalid ones are
/// refused, the webhook-level ones by our webhook with their reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_through_the_api_server() {
    let Some(root) = corpus_root("the upstream corpus through the API server") else {
        return;
    };
    // The controller watches an unused namespace, so the corpus objects are
    // not reconciled while the test runs; the webhook serves all of them.
    let w = Webhooked::start(&["--watch-namespaces=webhook-test-idle"]).await;
    w.register().await;
    let schema_level: BTreeSet<&str> = SCHEMA_LEVEL_INVALID.iter().copied().collect();
    let mut namespaces = BTreeSet::new();
    for path in corpus(&root, "valid")
        .iter()
        .chain(corpus(&root, "invalid").iter())
    {
        if let Some(ns) = load(path)
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
        {
            namespaces.insert(ns.to_string());
        }
    }
    for ns in &namespaces {
        w.ensure_namespace(ns).await;
    }
    // Names are made unique per file: several files share a name.
    let renamed = |path: &Path| {
        let mut object = load(path);
        let number = &file_name(path)[..3];
        let name = object["metadata"]["name"].as_str().unwrap().to_string();
        object["metadata"]["name"] = json!(format!("{name}-{number}"));
        object
    };
    for path in corpus(&root, "valid") {
        let name = file_name(&path);
        let object = renamed(&path);
        match (w.create(&object).await, not_supported_yet(&name)) {
            (Ok(()), None) => {}
            (Err(s), None) => panic!("{name}: refused: {}", s.message),
            (Ok(()), Some(want)) => {
                panic!("{name}: admitted, but it sets a field not supported yet ({want})")
            }
            (Err(s), Some(want)) => {
                assert_eq!(s.message, denial(webhook::STAGESET_WEBHOOK, want), "{name}");
                assert_eq!(s.code, 403, "{name}");
            }
        }
    }
    let mut schema_refused_by_webhook = Vec::new();
    for path in corpus(&root, "invalid") {
        let name = file_name(&path);
        let object = renamed(&path);
        let status = match w.create(&object).await {
            Ok(()) => panic!("{name}: admitted"),
            Err(s) => s,
        };
        let kind = object["kind"].as_str().unwrap();
        let from_webhook = status.message.contains("admission webhook");
        if schema_level.contains(name.as_str()) {
            if from_webhook {
                schema_refused_by_webhook.push(format!("{name}: {}", status.message));
            }
            continue;
        }
        let want = denial(hook_for(kind), expected(&name));
        assert!(
            message_matches(&status.message, &want),
            "{name}:\n got: {}\nwant: {want}",
            status.message
        );
        let code = if DECODE_ERRORS.contains(&name.as_str()) {
            400
        } else {
            403
        };
        assert_eq!(status.code, code, "{name}");
    }
    // Schema validation runs before admission, as in a real API server.
    assert!(
        schema_refused_by_webhook.is_empty(),
        "schema-level files that reached the webhook:\n{}",
        schema_refused_by_webhook.join("\n")
    );
}

/// docs/decisions.md 15: a StageSet that sets a field whose behaviour is not
/// built yet is refused by the webhook, and kubectl shows which field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_sees_not_supported_fields_denied() {
    let w = Webhooked::start(&["--watch-namespaces=webhook-test-idle"]).await;
    w.register().await;
    w.ensure_namespace(NS).await;
    let dir = tempfile::tempdir().unwrap();
    let examples = support::unsupported::examples("app");
    assert_eq!(
        examples.len(),
        stageset_controller::validate::unsupported::NOT_SUPPORTED_YET.len()
    );
    for (i, (field, spec, message)) in examples.iter().enumerate() {
        let object = json!({
            "apiVersion": "stages.metio.wtf/v1",
            "kind": "StageSet",
            "metadata": {"name": format!("unsupported-{i}"), "namespace": NS},
            "spec": spec,
        });
        let file = manifest(
            dir.path(),
            &format!("{i}.yaml"),
            &serde_yaml_ng::to_string(&object).unwrap(),
        );
        let (ok, out, err) = w.kubectl(&["apply", "-f", &file]).await;
        assert!(!ok, "{field}: admitted: {out}");
        assert!(
            err.contains(&denial(webhook::STAGESET_WEBHOOK, message)),
            "{field}: {err}"
        );
    }
    let (ok, out, err) = w
        .kubectl(&[
            "apply",
            "-f",
            &manifest(
                dir.path(),
                "plain.yaml",
                &format!(
                    "apiVersion: stages.metio.wtf/v1\nkind: StageSet\nmetadata: {{name: plain, namespace: {NS}}}\nspec:\n  stages: [{{name: app, sourceRef: {{name: app}}}}]\n"
                ),
            ),
        ])
        .await;
    assert!(ok, "{err}");
    assert!(
        out.contains("stageset.stages.metio.wtf/plain created"),
        "{out}"
    );
}

fn manifest(dir: &Path, name: &str, yaml: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, yaml).unwrap();
    path.to_string_lossy().into_owned()
}

/// What a user sees: kubectl gets the webhook's reason; an object that a
/// later rule would refuse can still be suspended, annotated and deleted;
/// any other spec change to it is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_sees_denials_and_existing_objects_stay_manageable() {
    let w = Webhooked::start(&[]).await;
    let h = &w.h;
    h.namespace(NS).await;

    // Created while no webhook is registered (as if the rule came later).
    h.stageset(
        NS,
        "legacy",
        json!({"stages": [
            {"name": "app", "sourceRef": {"name": "a"}},
            {"name": "app", "sourceRef": {"name": "b"}}
        ]}),
    )
    .await;
    w.register().await;

    // The controller takes it on (finalizer, status) through the webhook.
    let legacy = h
        .wait_stageset(NS, "legacy", "the controller's finalizer", |ss| {
            ss.metadata
                .finalizers
                .as_ref()
                .is_some_and(|f| f.iter().any(|f| f == "stages.metio.wtf/finalizer"))
        })
        .await;
    assert_eq!(legacy.spec.stages.len(), 2);

    let (ok, _, err) = w
        .kubectl(&[
            "-n",
            NS,
            "patch",
            "stageset",
            "legacy",
            "--type=merge",
            "-p",
            r#"{"spec":{"suspend":true}}"#,
        ])
        .await;
    assert!(ok, "suspending is never blocked: {err}");
    assert_eq!(h.get_stageset(NS, "legacy").await.spec.suspend, Some(true));
    let (ok, _, err) = w
        .kubectl(&[
            "-n",
            NS,
            "annotate",
            "stageset",
            "legacy",
            "reconcile.fluxcd.io/requestedAt=now",
        ])
        .await;
    assert!(ok, "metadata edits are never blocked: {err}");
    let (ok, _, err) = w
        .kubectl(&[
            "-n",
            NS,
            "patch",
            "stageset",
            "legacy",
            "--type=merge",
            "-p",
            r#"{"spec":{"suspend":false}}"#,
        ])
        .await;
    assert!(ok, "resuming is never blocked: {err}");

    // Any other spec change is validated, and kubectl shows why it failed.
    let (ok, _, err) = w
        .kubectl(&[
            "-n",
            NS,
            "patch",
            "stageset",
            "legacy",
            "--type=merge",
            "-p",
            r#"{"spec":{"interval":"5m"}}"#,
        ])
        .await;
    assert!(!ok);
    assert!(
        err.contains(&denial(
            webhook::STAGESET_WEBHOOK,
            "stage name \"app\" is not unique; stage names must be unique within the StageSet"
        )),
        "{err}"
    );
    assert!(err.starts_with("Error from server (Forbidden): "), "{err}");
    assert_eq!(h.get_stageset(NS, "legacy").await.spec.interval, None);

    // kubectl apply of a new invalid object: refused with the rule's message.
    let dir = tempfile::tempdir().unwrap();
    let bad = manifest(
        dir.path(),
        "bad.yaml",
        &format!(
            "apiVersion: stages.metio.wtf/v1
kind: StageSet
metadata:
  name: windows
  namespace: {NS}
spec:
  stages:
    - name: app
      sourceRef: {{name: app}}
  updateWindows:
    - type: Deny
      schedule: \"0 25 * * *\"
      duration: 1h
"
        ),
    );
    let (ok, _, err) = w.kubectl(&["apply", "-f", &bad]).await;
    assert!(!ok);
    assert!(
        err.contains(&denial(
            webhook::STAGESET_WEBHOOK,
            "schedule \"0 25 * * *\": end of range (25) above maximum (23): 25"
        )),
        "{err}"
    );
    // A malformed duration is upstream's 400 (the object does not decode).
    let undecodable = manifest(
        dir.path(),
        "duration.yaml",
        &format!(
            "apiVersion: stages.metio.wtf/v1
kind: StageSet
metadata: {{name: cadence, namespace: {NS}}}
spec:
  interval: 10 minutes
  stages: [{{name: app, sourceRef: {{name: app}}}}]
"
        ),
    );
    let (ok, _, err) = w.kubectl(&["create", "-f", &undecodable]).await;
    assert!(!ok);
    // controller-runtime's Errored(400) carries no reason, so kubectl shows
    // no "(Reason)" either.
    assert!(err.starts_with("Error from server: "), "{err}");
    assert!(
        err.contains("spec.interval: time: unknown unit \" minutes\" in duration \"10 minutes\""),
        "{err}"
    );
    // Upstream corpus files as they are (comments, odd layouts), one per
    // webhook, when the reference tree is present.
    if let Some(root) = corpus_root("kubectl with upstream corpus files") {
        w.ensure_namespace("default").await;
        let (ok, _, err) = w
            .kubectl(&[
                "apply",
                "-f",
                root.join("invalid/097-window-bad-timezone.yaml")
                    .to_str()
                    .unwrap(),
            ])
            .await;
        assert!(!ok);
        assert!(
            err.contains(&denial(
                webhook::STAGESET_WEBHOOK,
                "timeZone \"Mars/Olympus\": unknown time zone Mars/Olympus"
            )),
            "{err}"
        );
        let (ok, _, err) = w
            .kubectl(&[
                "apply",
                "-f",
                root.join("invalid/142-ivp-invalid-subject-regexp.yaml")
                    .to_str()
                    .unwrap(),
            ])
            .await;
        assert!(!ok);
        assert!(
        err.contains(&denial(
            webhook::IMAGE_POLICY_WEBHOOK,
            "spec.authorities[0].keyless.subjectRegExp is not a valid regexp: error parsing regexp: unclosed group: `(`"
        )),
        "{err}"
    );
        let (ok, out, err) = w
            .kubectl(&[
                "apply",
                "-f",
                root.join("valid/111-imageverificationpolicy-smoke-key-authority.yaml")
                    .to_str()
                    .unwrap(),
            ])
            .await;
        assert!(ok, "{err}");
        assert!(
            out.contains("imageverificationpolicy.stages.metio.wtf/iv-smoke created"),
            "{out}"
        );
        let (ok, out, err) = w
            .kubectl(&[
                "apply",
                "-f",
                root.join("valid/003-stageset-my-app-minimal.yaml")
                    .to_str()
                    .unwrap(),
            ])
            .await;
        assert!(ok, "{err}");
        assert!(
            out.contains("stageset.stages.metio.wtf/my-app created"),
            "{out}"
        );
    }
    // One of our own fixtures, then a real change to it.
    let minimal = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/admission/valid/01-minimal.yaml");
    let (ok, out, err) = w.kubectl(&["apply", "-f", minimal.to_str().unwrap()]).await;
    assert!(ok, "{err}");
    assert!(
        out.contains("stageset.stages.metio.wtf/minimal created"),
        "{out}"
    );
    // Re-applying an unchanged valid object and a real change both pass.
    let (ok, _, err) = w.kubectl(&["apply", "-f", minimal.to_str().unwrap()]).await;
    assert!(ok, "{err}");
    let (ok, _, err) = w
        .kubectl(&[
            "-n",
            NS,
            "patch",
            "stageset",
            "minimal",
            "--type=merge",
            "-p",
            r#"{"spec":{"interval":"5m"}}"#,
        ])
        .await;
    assert!(ok, "{err}");

    // Deleting the invalid object: the controller's finalizer removal is an
    // UPDATE of a terminating object, which the webhook never blocks.
    let (ok, _, err) = w
        .kubectl(&["-n", NS, "delete", "stageset", "legacy", "--wait=false"])
        .await;
    assert!(ok, "{err}");
    let api: Api<StageSet> = Api::namespaced(h.client.clone(), NS);
    let deadline = Instant::now() + Duration::from_secs(60);
    while api.get_opt("legacy").await.unwrap().is_some() {
        assert!(
            Instant::now() < deadline,
            "the invalid StageSet was never deleted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The listener itself: not-an-AdmissionReview bodies get 400 and the
/// server keeps answering; unknown paths get 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_listener_over_https() {
    let w = Webhooked::start(&["--watch-namespaces=webhook-test-idle"]).await;
    kube_sim::tls::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    for cert in CertificateDer::pem_slice_iter(w.ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .no_proxy()
        .build()
        .unwrap();
    let url = |path: &str| format!("https://127.0.0.1:{}{path}", w.addr().port());
    let post = |path: &str, body: Vec<u8>| {
        client
            .post(url(path))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
    };
    let text = |r: reqwest::Response| async move {
        let status = r.status().as_u16();
        let ct = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (status, ct, r.text().await.unwrap())
    };

    let good = serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "after-garbage",
            "kind": {"group": "stages.metio.wtf", "version": "v1", "kind": "StageSet"},
            "operation": "CREATE",
            "object": {"apiVersion": "stages.metio.wtf/v1", "kind": "StageSet",
                       "metadata": {"name": "a", "namespace": "x"},
                       "spec": {"stages": [{"name": "app", "sourceRef": {"name": "app"}}]}}
        }
    }))
    .unwrap();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            b"{\"apiVersion\": ".to_vec(),
            "the request body is not JSON",
        ),
        (b"\x00\xff\xfe".to_vec(), "the request body is not JSON"),
        (Vec::new(), "the request body is empty"),
        (
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec(),
            "the AdmissionReview has no request",
        ),
        (
            br#"{"apiVersion":"v1","kind":"Pod","request":{"uid":"u"}}"#.to_vec(),
            "expected an admission.k8s.io/v1 AdmissionReview",
        ),
    ];
    for (body, want) in cases {
        let (status, ct, body) = text(post(webhook::STAGESET_PATH, body).await.unwrap()).await;
        assert_eq!(status, 400, "{body}");
        assert!(ct.starts_with("text/plain"), "{ct}");
        assert!(body.starts_with(want), "{body}");
        // The listener keeps working after each bad request.
        let (status, ct, body) =
            text(post(webhook::STAGESET_PATH, good.clone()).await.unwrap()).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(ct, "application/json");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["response"]["uid"], "after-garbage");
        assert_eq!(v["response"]["allowed"], true);
    }
    // Bodies above the limit are refused before they are read in full.
    let huge = vec![b' '; webhook::MAX_BODY + 1];
    let (status, _, _) = text(post(webhook::STAGESET_PATH, huge).await.unwrap()).await;
    assert_eq!(status, 413);

    for path in [
        "/validate-stages-metio-wtf-v1-fleetrollout",
        "/",
        "/mutate-stages-metio-wtf-v1-stageset",
    ] {
        let (status, _, body) = text(post(path, good.clone()).await.unwrap()).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(body, format!("no webhook at {path}\n"));
    }
    let r = client
        .get(url(webhook::STAGESET_PATH))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);
    let (status, _, body) = text(
        post(webhook::IMAGE_POLICY_PATH, good.clone())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["response"]["allowed"], false,
        "a StageSet sent to the policy webhook"
    );
    assert_eq!(v["response"]["status"]["code"], 400);
}

/// A webhook that refuses is honoured by the API server for updates too
/// (server-side apply goes through admission like any write).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_is_admitted_like_any_write() {
    let w = Webhooked::start(&["--watch-namespaces=webhook-test-idle"]).await;
    w.register().await;
    w.h.namespace(NS).await;
    let api: Api<StageSet> = Api::namespaced(w.h.client.clone(), NS);
    let ss = |stages: Value| {
        json!({"apiVersion": "stages.metio.wtf/v1", "kind": "StageSet",
               "metadata": {"name": "ssa", "namespace": NS}, "spec": {"stages": stages}})
    };
    let pp = PatchParams::apply("webhook-test").force();
    api.patch(
        "ssa",
        &pp,
        &Patch::Apply(ss(json!([{"name": "app", "sourceRef": {"name": "a"}}]))),
    )
    .await
    .expect("a valid apply is admitted");
    let err = api
        .patch(
            "ssa",
            &pp,
            &Patch::Apply(ss(json!([
                {"name": "app", "sourceRef": {"name": "a"}},
                {"name": "app", "sourceRef": {"name": "b"}}
            ]))),
        )
        .await
        .expect_err("an invalid apply is refused");
    let kube::Error::Api(status) = err else {
        panic!("{err}");
    };
    assert_eq!(status.code, 403);
    assert_eq!(
        status.message,
        denial(
            webhook::STAGESET_WEBHOOK,
            "stage name \"app\" is not unique; stage names must be unique within the StageSet"
        )
    );
    assert_eq!(api.get("ssa").await.unwrap().spec.stages.len(), 1);
}
