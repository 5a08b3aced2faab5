//! Field errors and `ObjectMeta` validation with the semantics (and the exact
//! texts) of `k8s.io/apimachinery`:
//!
//! * [`FieldError`] mirrors `field.Error` (`pkg/util/validation/field/errors.go`):
//!   its [`Display`](std::fmt::Display) is `Error()`, [`FieldError::body`] is
//!   `ErrorBody()` and [`ErrorKind::reason`] is the `field.ErrorType` string that
//!   ends up as a `StatusCause.reason`.
//! * [`invalid_message`] / [`invalid_status`] mirror `errors.NewInvalid`
//!   (`pkg/api/errors/errors.go`) including the de-duplication of
//!   `ErrorList.ToAggregate` and the bracket rule of `utilerrors.Aggregate`.
//! * [`validate_object_meta`] mirrors `ValidateObjectMetaAccessor`
//!   (`pkg/api/validation/objectmeta.go`).
//! * The name helpers mirror `pkg/api/validate/content` (DNS-1123/1035 names,
//!   label keys and values) and `pkg/api/validation/path`.
//!
//! Values are rendered the way the current `ErrorBody` renders them: strings
//! with Go's `%q`, numbers and booleans with `%v`, everything else as the JSON
//! Go's `encoding/json` would produce (sorted keys, HTML-safe escaping).

use std::fmt;
use std::sync::OnceLock;

use regex::Regex;
use serde_json::{Map, Value};

/// The kind of a field error: the `field.ErrorType`s of apimachinery.
#[derive(Clone, Debug, PartialEq)]
pub enum ErrorKind {
    /// `FieldValueNotFound`, "Not found".
    NotFound,
    /// `FieldValueRequired`, "Required value".
    Required,
    /// `FieldValueDuplicate`, "Duplicate value".
    Duplicate,
    /// `FieldValueInvalid`, "Invalid value".
    Invalid,
    /// `FieldValueNotSupported`, "Unsupported value"; the detail lists the
    /// supported values.
    NotSupported { supported: Vec<String> },
    /// `FieldValueForbidden`, "Forbidden".
    Forbidden,
    /// `FieldValueTooLong`, "Too long".
    TooLong,
    /// `FieldValueTooMany`, "Too many".
    TooMany,
    /// `FieldValueTooFew`, "Too few".
    TooFew,
    /// `FieldValueTooShort`, "Too short".
    TooShort,
    /// `InternalError`, "Internal error".
    Internal,
    /// `FieldValueTypeInvalid`, rendered as "Invalid value" like the real one.
    TypeInvalid,
    /// Not a `field.ErrorType`: a field dropped by pruning that strict field
    /// validation refuses. Rendered as the strict decoding error
    /// `unknown field "spec.foo"`; the API turns these into a 400 BadRequest
    /// (see [`strict_decoding_message`]), never into an Invalid status.
    UnknownField,
}

impl ErrorKind {
    /// The machine readable `field.ErrorType`, used as `StatusCause.reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            ErrorKind::NotFound => "FieldValueNotFound",
            ErrorKind::Required => "FieldValueRequired",
            ErrorKind::Duplicate => "FieldValueDuplicate",
            ErrorKind::Invalid => "FieldValueInvalid",
            ErrorKind::NotSupported { .. } => "FieldValueNotSupported",
            ErrorKind::Forbidden => "FieldValueForbidden",
            ErrorKind::TooLong => "FieldValueTooLong",
            ErrorKind::TooMany => "FieldValueTooMany",
            ErrorKind::TooFew => "FieldValueTooFew",
            ErrorKind::TooShort => "FieldValueTooShort",
            ErrorKind::Internal => "InternalError",
            ErrorKind::TypeInvalid => "FieldValueTypeInvalid",
            ErrorKind::UnknownField => "FieldValueUnknown",
        }
    }

    /// The canonical text of the error type (`ErrorType.String()`).
    pub fn text(&self) -> &'static str {
        match self {
            ErrorKind::NotFound => "Not found",
            ErrorKind::Required => "Required value",
            ErrorKind::Duplicate => "Duplicate value",
            ErrorKind::Invalid | ErrorKind::TypeInvalid => "Invalid value",
            ErrorKind::NotSupported { .. } => "Unsupported value",
            ErrorKind::Forbidden => "Forbidden",
            ErrorKind::TooLong => "Too long",
            ErrorKind::TooMany => "Too many",
            ErrorKind::TooFew => "Too few",
            ErrorKind::TooShort => "Too short",
            ErrorKind::Internal => "Internal error",
            ErrorKind::UnknownField => "Unknown field",
        }
    }

    /// Whether the real `customResourceStrategy` treats an error of this kind
    /// as blocking the evaluation of `x-kubernetes-validations` rules
    /// (`hasBlockingErr` in `pkg/registry/customresource/strategy.go`).
    pub fn blocks_cel(&self) -> bool {
        matches!(
            self,
            ErrorKind::NotSupported { .. }
                | ErrorKind::Required
                | ErrorKind::TooLong
                | ErrorKind::TooMany
                | ErrorKind::TypeInvalid
        )
    }
}

/// A field-level validation error (`field.Error`).
///
/// `field` is the rendered `field.Path` (`spec.stages[0].name`); a nil path is
/// rendered `<nil>` as Go does. `value` is the bad value; `None` stands for
/// apimachinery's "omit value" marker and is only meaningful for the kinds
/// whose body prints a value.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldError {
    pub field: String,
    pub kind: ErrorKind,
    pub value: Option<Value>,
    pub detail: String,
    /// The bad value already rendered, for values the real server renders
    /// from a typed Go struct (`json.Marshal` keeps struct field order, which
    /// is not the sorted key order [`gofmt::marshal`] uses). Takes precedence over
    /// `value` when set.
    pub rendered: Option<String>,
}

/// The field string apimachinery prints for a nil `*field.Path`.
pub const NIL_PATH: &str = "<nil>";

impl FieldError {
    fn new(
        field: impl Into<String>,
        kind: ErrorKind,
        value: Option<Value>,
        detail: impl Into<String>,
    ) -> Self {
        FieldError {
            field: field.into(),
            kind,
            value,
            detail: detail.into(),
            rendered: None,
        }
    }

    /// `field.Required(path, detail)`.
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(
            field,
            ErrorKind::Required,
            Some(Value::String(String::new())),
            detail,
        )
    }

    /// `field.Invalid(path, value, detail)`.
    pub fn invalid(field: impl Into<String>, value: Value, detail: impl Into<String>) -> Self {
        Self::new(field, ErrorKind::Invalid, Some(value), detail)
    }

    /// `field.Invalid(path, value, detail)` where `value` is already rendered
    /// as `ErrorBody` prints it (see [`FieldError::rendered`]).
    pub fn invalid_rendered(
        field: impl Into<String>,
        rendered: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        let mut e = Self::new(field, ErrorKind::Invalid, None, detail);
        e.rendered = Some(rendered.into());
        e
    }

    /// `field.Invalid(path, field.OmitValueType{}, detail)`: prints no value.
    pub fn invalid_omit_value(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(field, ErrorKind::Invalid, None, detail)
    }

    /// `field.TypeInvalid(path, value, detail)`.
    pub fn type_invalid(field: impl Into<String>, value: Value, detail: impl Into<String>) -> Self {
        Self::new(field, ErrorKind::TypeInvalid, Some(value), detail)
    }

    /// `field.NotSupported(path, value, supported)`.
    pub fn not_supported(field: impl Into<String>, value: Value, supported: &[String]) -> Self {
        let detail = if supported.is_empty() {
            String::new()
        } else {
            let quoted: Vec<String> = supported.iter().map(|s| gofmt::quote(s)).collect();
            format!("supported values: {}", quoted.join(", "))
        };
        Self::new(
            field,
            ErrorKind::NotSupported {
                supported: supported.to_vec(),
            },
            Some(value),
            detail,
        )
    }

    /// `field.Duplicate(path, value)`.
    pub fn duplicate(field: impl Into<String>, value: Option<Value>) -> Self {
        Self::new(field, ErrorKind::Duplicate, value, "")
    }

    /// `field.Forbidden(path, detail)`.
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(
            field,
            ErrorKind::Forbidden,
            Some(Value::String(String::new())),
            detail,
        )
    }

    /// `field.TooLong(path, value, max)`: the value is never printed.
    pub fn too_long(field: impl Into<String>, max_length: i64) -> Self {
        let detail = if max_length >= 0 {
            format!(
                "may not be more than {} {}",
                max_length,
                if max_length == 1 { "byte" } else { "bytes" }
            )
        } else {
            "value is too long".to_string()
        };
        Self::new(
            field,
            ErrorKind::TooLong,
            Some(Value::String("<value omitted>".into())),
            detail,
        )
    }

    /// `field.TooMany(path, actual, max)`; a negative `actual` omits the value.
    pub fn too_many(field: impl Into<String>, actual: i64, max: i64) -> Self {
        let detail = if max >= 0 {
            format!(
                "must have at most {} {}",
                max,
                if max == 1 { "item" } else { "items" }
            )
        } else {
            "has too many items".to_string()
        };
        let value = if actual >= 0 {
            Some(Value::from(actual))
        } else {
            None
        };
        Self::new(field, ErrorKind::TooMany, value, detail)
    }

    /// `field.InternalError(path, err)`.
    pub fn internal(field: impl Into<String>, err: impl Into<String>) -> Self {
        let err = err.into();
        Self::new(
            field,
            ErrorKind::Internal,
            Some(Value::String(err.clone())),
            err,
        )
    }

    /// A field pruned by the structural schema (strict field validation).
    pub fn unknown_field(field: impl Into<String>) -> Self {
        Self::new(field, ErrorKind::UnknownField, None, "")
    }

    /// `ErrorBody()`: the message without the field path.
    pub fn body(&self) -> String {
        let mut s = match &self.kind {
            ErrorKind::UnknownField => {
                return format!("unknown field {}", gofmt::quote(&self.field));
            }
            ErrorKind::Required
            | ErrorKind::Forbidden
            | ErrorKind::TooLong
            | ErrorKind::TooShort
            | ErrorKind::Internal => self.kind.text().to_string(),
            ErrorKind::Invalid
            | ErrorKind::TypeInvalid
            | ErrorKind::NotSupported { .. }
            | ErrorKind::NotFound
            | ErrorKind::Duplicate
            | ErrorKind::TooMany
            | ErrorKind::TooFew => match (&self.rendered, &self.value) {
                (Some(r), _) => format!("{}: {}", self.kind.text(), r),
                (None, None) => self.kind.text().to_string(),
                (None, Some(v)) => format!("{}: {}", self.kind.text(), go_value(v)),
            },
        };
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kind == ErrorKind::UnknownField {
            return f.write_str(&self.body());
        }
        write!(f, "{}: {}", self.field, self.body())
    }
}

impl std::error::Error for FieldError {}

/// `schema.GroupKind.String()`: `Kind.group`, or `Kind` for the core group.
pub fn qualified_kind(kind: &str, group: &str) -> String {
    if group.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}.{group}")
    }
}

/// The aggregate message of a list of errors, as `ErrorList.ToAggregate()`
/// prints it: duplicates (by message) dropped, a single error bare, several in
/// `[a, b]`. `None` when there are no errors.
pub fn aggregate_message(errors: &[FieldError]) -> Option<String> {
    let mut seen: Vec<String> = Vec::new();
    for e in errors {
        let msg = e.to_string();
        if !seen.contains(&msg) {
            seen.push(msg);
        }
    }
    match seen.len() {
        0 => None,
        1 => Some(seen.remove(0)),
        _ => Some(format!("[{}]", seen.join(", "))),
    }
}

/// The message of `errors.NewInvalid(GroupKind{group, kind}, name, errs)`:
/// `StageSet.stages.metio.wtf "x" is invalid: [err1, err2]`.
pub fn invalid_message(kind: &str, group: &str, name: &str, errors: &[FieldError]) -> String {
    let qk = qualified_kind(kind, group);
    match aggregate_message(errors) {
        None => format!("{} {} is invalid", qk, gofmt::quote(name)),
        Some(agg) => format!("{} {} is invalid: {}", qk, gofmt::quote(name), agg),
    }
}

/// The `details.causes` of an Invalid status: one cause per error (duplicates
/// included, as `NewInvalid` does), each `{"reason", "message", "field"}` with
/// `message` the error body and `field` omitted when empty.
pub fn status_causes(errors: &[FieldError]) -> Vec<Value> {
    errors
        .iter()
        .map(|e| {
            let mut m = Map::new();
            m.insert("reason".into(), Value::String(e.kind.reason().into()));
            m.insert("message".into(), Value::String(e.body()));
            if !e.field.is_empty() {
                m.insert("field".into(), Value::String(e.field.clone()));
            }
            Value::Object(m)
        })
        .collect()
}

/// [`status_causes`] as the JSON array that goes in `details.causes`.
pub fn causes(errors: &[FieldError]) -> Value {
    Value::Array(status_causes(errors))
}

/// The whole `Status` body of `errors.NewInvalid` (HTTP 422).
pub fn invalid_status(kind: &str, group: &str, name: &str, errors: &[FieldError]) -> Value {
    let mut details = Map::new();
    details.insert("name".into(), Value::String(name.into()));
    if !group.is_empty() {
        details.insert("group".into(), Value::String(group.into()));
    }
    details.insert("kind".into(), Value::String(kind.into()));
    details.insert("causes".into(), Value::Array(status_causes(errors)));
    serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": invalid_message(kind, group, name, errors),
        "reason": "Invalid",
        "details": Value::Object(details),
        "code": 422
    })
}

/// The message of the BadRequest a strict decoding failure becomes
/// (`transformDecodeError` around `runtime.NewStrictDecodingError`):
/// `StageSet in version "v1" cannot be handled as a StageSet: strict decoding error: unknown field "spec.foo"`.
pub fn strict_decoding_message(kind: &str, version: &str, errors: &[FieldError]) -> String {
    let msgs: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    format!(
        "{} in version {} cannot be handled as a {}: strict decoding error: {}",
        kind,
        gofmt::quote(version),
        kind,
        msgs.join(", ")
    )
}

// ---------------------------------------------------------------------------
// Go value rendering
// ---------------------------------------------------------------------------

/// Renders a bad value the way `ErrorBody` does: `%q` for strings, `%v` for
/// numbers and booleans, Go JSON for everything else (`null` included).
pub fn go_value(v: &Value) -> String {
    match v {
        Value::String(s) => gofmt::quote(s),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => gofmt::format_number(n),
        _ => gofmt::marshal(v),
    }
}

// ---------------------------------------------------------------------------
// Name and label helpers (k8s.io/apimachinery/pkg/api/validate/content)
// ---------------------------------------------------------------------------

const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_LABEL_ERR_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character";
/// A DNS-1123 label's maximum length.
pub const DNS1123_LABEL_MAX_LENGTH: usize = 63;
const DNS1123_SUBDOMAIN_ERR_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
/// A DNS-1123 subdomain's maximum length.
pub const DNS1123_SUBDOMAIN_MAX_LENGTH: usize = 253;
const DNS1035_LABEL_FMT: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";
const DNS1035_LABEL_ERR_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character";
const LABEL_KEY_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const LABEL_KEY_ERR_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_KEY_MAX_LENGTH: usize = 63;
const LABEL_VALUE_ERR_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
/// A label value's maximum length.
pub const LABEL_VALUE_MAX_LENGTH: usize = 63;
/// The limit on the summed size of all annotation keys and values.
pub const TOTAL_ANNOTATION_SIZE_LIMIT_B: usize = 256 * 1024;

fn dns1123_subdomain_fmt() -> String {
    format!("{DNS1123_LABEL_FMT}(\\.{DNS1123_LABEL_FMT})*")
}

fn anchored(cell: &'static OnceLock<Regex>, fmt: &str) -> &'static Regex {
    cell.get_or_init(|| Regex::new(&format!("^(?:{fmt})$")).expect("valid built-in regex"))
}

fn dns1123_label_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    anchored(&RE, DNS1123_LABEL_FMT)
}

fn dns1123_subdomain_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(&format!("^(?:{})$", dns1123_subdomain_fmt())).expect("valid built-in regex")
    })
}

fn dns1035_label_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    anchored(&RE, DNS1035_LABEL_FMT)
}

fn label_key_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    anchored(&RE, LABEL_KEY_FMT)
}

fn label_value_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(&format!("^(?:({LABEL_KEY_FMT})?)$")).expect("valid built-in regex")
    })
}

/// `MaxLenError`.
pub fn max_len_error(length: usize) -> String {
    format!("must be no more than {length} characters")
}

/// `EmptyError`.
pub fn empty_error() -> String {
    "must be non-empty".to_string()
}

/// `RegexError`: the message, the examples and the regex used.
pub fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    if examples.is_empty() {
        return format!("{msg} (regex used for validation is '{fmt}')");
    }
    let mut s = format!("{msg} (e.g. ");
    for (i, e) in examples.iter().enumerate() {
        if i > 0 {
            s.push_str(" or ");
        }
        s.push('\'');
        s.push_str(e);
        s.push_str("', ");
    }
    s.push_str("regex used for validation is '");
    s.push_str(fmt);
    s.push_str("')");
    s
}

/// `IsDNS1123Label`.
pub fn is_dns1123_label(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_LABEL_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_LABEL_MAX_LENGTH));
    }
    if !dns1123_label_re().is_match(value) {
        if dns1123_subdomain_re().is_match(value) {
            errs.push("must not contain dots".to_string());
        } else {
            errs.push(regex_error(
                DNS1123_LABEL_ERR_MSG,
                DNS1123_LABEL_FMT,
                &["my-name", "123-abc"],
            ));
        }
    }
    errs
}

/// `IsDNS1123Subdomain`.
pub fn is_dns1123_subdomain(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_SUBDOMAIN_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_SUBDOMAIN_MAX_LENGTH));
    }
    if !dns1123_subdomain_re().is_match(value) {
        errs.push(regex_error(
            DNS1123_SUBDOMAIN_ERR_MSG,
            &dns1123_subdomain_fmt(),
            &["example.com"],
        ));
    }
    errs
}

/// `IsDNS1035Label`.
pub fn is_dns1035_label(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_LABEL_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_LABEL_MAX_LENGTH));
    }
    if !dns1035_label_re().is_match(value) {
        errs.push(regex_error(
            DNS1035_LABEL_ERR_MSG,
            DNS1035_LABEL_FMT,
            &["my-name", "abc-123"],
        ));
    }
    errs
}

/// `IsQualifiedName` (a label key: an optional DNS subdomain prefix and a
/// name part).
pub fn is_qualified_name(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push(format!("prefix part {}", empty_error()));
            } else {
                for msg in is_dns1123_subdomain(prefix) {
                    errs.push(format!("prefix part {msg}"));
                }
            }
            *name
        }
        _ => {
            errs.push(format!(
                "a valid label key {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(LABEL_KEY_ERR_MSG, LABEL_KEY_FMT, &["MyName", "my.name", "123-abc"])
            ));
            return errs;
        }
    };
    if name.is_empty() {
        errs.push(format!("name part {}", empty_error()));
    } else if name.len() > LABEL_KEY_MAX_LENGTH {
        errs.push(format!("name part {}", max_len_error(LABEL_KEY_MAX_LENGTH)));
    }
    if !label_key_re().is_match(name) {
        errs.push(format!(
            "name part {}",
            regex_error(
                LABEL_KEY_ERR_MSG,
                LABEL_KEY_FMT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    errs
}

/// `IsValidLabelValue`.
pub fn is_valid_label_value(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > LABEL_VALUE_MAX_LENGTH {
        errs.push(max_len_error(LABEL_VALUE_MAX_LENGTH));
    }
    if !label_value_re().is_match(value) {
        errs.push(regex_error(
            LABEL_VALUE_ERR_MSG,
            &format!("({LABEL_KEY_FMT})?"),
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

/// `path.IsValidPathSegmentName`: what a name must satisfy to be usable as a
/// URL path segment.
pub fn is_valid_path_segment_name(name: &str) -> Vec<String> {
    for illegal in [".", ".."] {
        if name == illegal {
            return vec![format!("may not be '{illegal}'")];
        }
    }
    is_valid_path_segment_prefix(name)
}

/// `path.IsValidPathSegmentPrefix`.
pub fn is_valid_path_segment_prefix(name: &str) -> Vec<String> {
    ["/", "%"]
        .iter()
        .filter(|c| name.contains(**c))
        .map(|c| format!("may not contain '{c}'"))
        .collect()
}

/// Which rule an object's `metadata.name` must follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameRule {
    /// `NameIsDNSSubdomain`: the default, and custom resources'.
    Dns1123Subdomain,
    /// `NameIsDNSLabel`: namespaces.
    Dns1123Label,
    /// `NameIsDNS1035Label`: services.
    Dns1035Label,
    /// `ValidatePathSegmentName`: e.g. RBAC objects and embedded resources.
    PathSegment,
}

impl NameRule {
    /// The messages for `name` (`prefix` is true for a `generateName`, whose
    /// trailing dash is masked first).
    pub fn check(self, name: &str, prefix: bool) -> Vec<String> {
        let masked;
        let name = if prefix
            && matches!(
                self,
                NameRule::Dns1123Subdomain | NameRule::Dns1123Label | NameRule::Dns1035Label
            ) {
            masked = mask_trailing_dash(name);
            masked.as_str()
        } else {
            name
        };
        match self {
            NameRule::Dns1123Subdomain => is_dns1123_subdomain(name),
            NameRule::Dns1123Label => is_dns1123_label(name),
            NameRule::Dns1035Label => is_dns1035_label(name),
            NameRule::PathSegment => {
                if prefix {
                    is_valid_path_segment_prefix(name)
                } else {
                    is_valid_path_segment_name(name)
                }
            }
        }
    }
}

/// `maskTrailingDash`: a generateName may end in a dash, a suffix follows it.
fn mask_trailing_dash(name: &str) -> String {
    if name.len() > 1 && name.ends_with('-') {
        format!("{}a", &name[..name.len() - 1])
    } else {
        name.to_string()
    }
}

fn str_field<'a>(meta: &'a Value, key: &str) -> &'a str {
    meta.get(key).and_then(Value::as_str).unwrap_or("")
}

/// `ValidateObjectMetaAccessor(meta, namespaced, nameFn, field.NewPath("metadata"))`.
pub fn validate_object_meta(
    meta: &Value,
    namespaced: bool,
    name_validation: NameRule,
) -> Vec<FieldError> {
    validate_object_meta_at(meta, namespaced, name_validation, "metadata")
}

/// [`validate_object_meta`] for metadata found at `path` (embedded objects).
pub fn validate_object_meta_at(
    meta: &Value,
    namespaced: bool,
    name_validation: NameRule,
    path: &str,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let child = |c: &str| format!("{path}.{c}");
    let generate_name = str_field(meta, "generateName");
    if !generate_name.is_empty() {
        for msg in name_validation.check(generate_name, true) {
            errs.push(FieldError::invalid(
                child("generateName"),
                Value::String(generate_name.into()),
                msg,
            ));
        }
    }
    let name = str_field(meta, "name");
    if name.is_empty() {
        errs.push(FieldError::required(
            child("name"),
            "name or generateName is required",
        ));
    } else {
        for msg in name_validation.check(name, false) {
            errs.push(FieldError::invalid(
                child("name"),
                Value::String(name.into()),
                msg,
            ));
        }
    }
    let namespace = str_field(meta, "namespace");
    if namespaced {
        if namespace.is_empty() {
            errs.push(FieldError::required(child("namespace"), ""));
        } else {
            for msg in NameRule::Dns1123Label.check(namespace, false) {
                errs.push(FieldError::invalid(
                    child("namespace"),
                    Value::String(namespace.into()),
                    msg,
                ));
            }
        }
    } else if !namespace.is_empty() {
        errs.push(FieldError::forbidden(
            child("namespace"),
            "not allowed on this type",
        ));
    }
    if let Some(g) = meta.get("generation").and_then(Value::as_i64)
        && g < 0
    {
        errs.push(FieldError::invalid(
            child("generation"),
            Value::from(g),
            "must be greater than or equal to 0",
        ));
    }
    if let Some(labels) = meta.get("labels").and_then(Value::as_object) {
        let mut keys: Vec<&String> = labels.keys().collect();
        keys.sort();
        for k in keys {
            for msg in is_qualified_name(k) {
                errs.push(FieldError::invalid(
                    child("labels"),
                    Value::String(k.clone()),
                    msg,
                ));
            }
            let v = labels[k.as_str()].as_str().unwrap_or("");
            for msg in is_valid_label_value(v) {
                errs.push(FieldError::invalid(
                    child("labels"),
                    Value::String(v.into()),
                    msg,
                ));
            }
        }
    }
    if let Some(annotations) = meta.get("annotations").and_then(Value::as_object) {
        let mut keys: Vec<&String> = annotations.keys().collect();
        keys.sort();
        let mut total = 0usize;
        for k in keys {
            for msg in is_qualified_name(&k.to_lowercase()) {
                errs.push(FieldError::invalid(
                    child("annotations"),
                    Value::String(k.clone()),
                    msg,
                ));
            }
            total += k.len() + annotations[k.as_str()].as_str().map_or(0, str::len);
        }
        if total > TOTAL_ANNOTATION_SIZE_LIMIT_B {
            errs.push(FieldError::too_long(
                child("annotations"),
                TOTAL_ANNOTATION_SIZE_LIMIT_B as i64,
            ));
        }
    }
    if let Some(refs) = meta.get("ownerReferences").and_then(Value::as_array) {
        errs.extend(validate_owner_references(refs, &child("ownerReferences")));
    }
    if let Some(finalizers) = meta.get("finalizers").and_then(Value::as_array) {
        errs.extend(validate_finalizers(finalizers, &child("finalizers")));
    }
    errs
}

/// `ValidateOwnerReferences` (note that the child paths carry no index, as in
/// the real code).
fn validate_owner_references(refs: &[Value], path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut first_controller: Option<String> = None;
    for r in refs {
        let api_version = str_field(r, "apiVersion");
        let kind = str_field(r, "kind");
        let name = str_field(r, "name");
        let uid = str_field(r, "uid");
        let version = api_version.rsplit_once('/').map_or(api_version, |(_, v)| v);
        if version.is_empty() {
            errs.push(FieldError::invalid(
                format!("{path}.apiVersion"),
                Value::String(api_version.into()),
                "version must not be empty",
            ));
        }
        if kind.is_empty() {
            errs.push(FieldError::invalid(
                format!("{path}.kind"),
                Value::String(kind.into()),
                "must not be empty",
            ));
        }
        if name.is_empty() {
            errs.push(FieldError::invalid(
                format!("{path}.name"),
                Value::String(name.into()),
                "must not be empty",
            ));
        }
        if uid.is_empty() {
            errs.push(FieldError::invalid(
                format!("{path}.uid"),
                Value::String(uid.into()),
                "must not be empty",
            ));
        }
        if r.get("controller").and_then(Value::as_bool) == Some(true) {
            let current = format!("{kind}/{name}");
            match &first_controller {
                Some(first) => errs.push(FieldError::invalid(
                    path,
                    Value::Array(refs.to_vec()),
                    format!("Only one reference can have Controller set to true. Found \"true\" in references for {first} and {current}"),
                )),
                None => first_controller = Some(current),
            }
        }
    }
    errs
}

/// `ValidateFinalizers` of apimachinery.
fn validate_finalizers(finalizers: &[Value], path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut orphan = false;
    let mut delete = false;
    for f in finalizers {
        let f = f.as_str().unwrap_or("");
        for msg in is_qualified_name(f) {
            errs.push(FieldError::invalid(path, Value::String(f.into()), msg));
        }
        orphan |= f == "orphan";
        delete |= f == "foregroundDeletion";
    }
    if orphan && delete {
        errs.push(FieldError::invalid(
            path,
            Value::Array(finalizers.to_vec()),
            "finalizer orphan and foregroundDeletion cannot be both set",
        ));
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn error_bodies_match_apimachinery() {
        assert_eq!(
            FieldError::required("spec.stages", "").to_string(),
            "spec.stages: Required value"
        );
        assert_eq!(
            FieldError::not_supported(
                "spec.onTimeout",
                json!("hold"),
                &["Hold".into(), "Rollback".into()]
            )
            .to_string(),
            r#"spec.onTimeout: Unsupported value: "hold": supported values: "Hold", "Rollback""#
        );
        assert_eq!(
            FieldError::invalid(
                "spec.stages",
                json!(0),
                "spec.stages in body should have at least 1 items"
            )
            .to_string(),
            "spec.stages: Invalid value: 0: spec.stages in body should have at least 1 items"
        );
        assert_eq!(
            FieldError::duplicate("spec.checks[1]", Some(json!({"name": "api"}))).to_string(),
            r#"spec.checks[1]: Duplicate value: {"name":"api"}"#
        );
        assert_eq!(
            FieldError::too_long("spec.x", 5).to_string(),
            "spec.x: Too long: may not be more than 5 bytes"
        );
        assert_eq!(
            FieldError::too_many("spec.x", 3, 2).to_string(),
            "spec.x: Too many: 3: must have at most 2 items"
        );
        assert_eq!(
            FieldError::forbidden("metadata.namespace", "not allowed on this type").to_string(),
            "metadata.namespace: Forbidden: not allowed on this type"
        );
        assert_eq!(
            FieldError::invalid(NIL_PATH, Value::Null, "x").to_string(),
            "<nil>: Invalid value: null: x"
        );
        assert_eq!(
            FieldError::invalid_omit_value("spec", "boom").to_string(),
            "spec: Invalid value: boom"
        );
        assert_eq!(
            FieldError::unknown_field("spec.foo").to_string(),
            r#"unknown field "spec.foo""#
        );
    }

    #[test]
    fn bad_values_render_like_error_body() {
        // %q for strings, %v for numbers and booleans, JSON for the rest.
        assert_eq!(go_value(&json!("a\"b\n")), r#""a\"b\n""#);
        assert_eq!(go_value(&json!(2.5)), "2.5");
        assert_eq!(go_value(&json!(1e6)), "1e+06");
        assert_eq!(go_value(&json!(7)), "7");
        assert_eq!(go_value(&json!(true)), "true");
        assert_eq!(go_value(&Value::Null), "null");
        assert_eq!(
            go_value(&json!({"b": 1, "a": "<&>"})),
            r#"{"a":"\u003c\u0026\u003e","b":1}"#
        );
    }

    #[test]
    fn invalid_messages_and_causes() {
        let one = vec![FieldError::required("spec.stages", "")];
        assert_eq!(
            invalid_message("StageSet", "stages.metio.wtf", "x", &one),
            r#"StageSet.stages.metio.wtf "x" is invalid: spec.stages: Required value"#
        );
        let two = vec![
            FieldError::required("spec.stages", ""),
            FieldError::required("spec.stages", ""),
            FieldError::forbidden("metadata.namespace", "not allowed on this type"),
        ];
        assert_eq!(
            invalid_message("StageSet", "stages.metio.wtf", "x", &two),
            r#"StageSet.stages.metio.wtf "x" is invalid: [spec.stages: Required value, metadata.namespace: Forbidden: not allowed on this type]"#
        );
        assert_eq!(
            invalid_message("Pod", "", "p", &[]),
            r#"Pod "p" is invalid"#
        );
        assert_eq!(
            causes(&one),
            json!([{"reason": "FieldValueRequired", "message": "Required value", "field": "spec.stages"}])
        );
        assert_eq!(
            status_causes(&one),
            vec![
                json!({"reason": "FieldValueRequired", "message": "Required value", "field": "spec.stages"})
            ]
        );
        let status = invalid_status("StageSet", "stages.metio.wtf", "x", &one);
        assert_eq!(status["code"], 422);
        assert_eq!(status["details"]["group"], "stages.metio.wtf");
        assert_eq!(
            strict_decoding_message(
                "StageSet",
                "v1",
                &[
                    FieldError::unknown_field("spec.foo"),
                    FieldError::unknown_field("spec.bar")
                ]
            ),
            r#"StageSet in version "v1" cannot be handled as a StageSet: strict decoding error: unknown field "spec.foo", unknown field "spec.bar""#
        );
    }

    #[test]
    fn names() {
        assert!(is_dns1123_subdomain("my.app-1").is_empty());
        assert_eq!(
            is_dns1123_subdomain("Bad_Name"),
            vec!["a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".to_string()]
        );
        assert_eq!(
            is_dns1123_label("a.b"),
            vec!["must not contain dots".to_string()]
        );
        assert_eq!(
            is_dns1123_label(&"a".repeat(64)),
            vec!["must be no more than 63 characters".to_string()]
        );
        assert!(is_qualified_name("app.kubernetes.io/name").is_empty());
        assert_eq!(
            is_qualified_name("-bad"),
            vec!["name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')".to_string()]
        );
        assert_eq!(
            is_qualified_name("/x"),
            vec!["prefix part must be non-empty".to_string()]
        );
        assert!(is_valid_label_value("").is_empty());
        assert_eq!(
            is_valid_label_value(&"a".repeat(64)),
            vec!["must be no more than 63 characters".to_string()]
        );
        assert_eq!(
            is_valid_path_segment_name(".."),
            vec!["may not be '..'".to_string()]
        );
    }

    #[test]
    fn object_meta() {
        let errs = validate_object_meta(
            &json!({"name": "ok", "namespace": "default"}),
            true,
            NameRule::Dns1123Subdomain,
        );
        assert!(errs.is_empty());
        let errs = validate_object_meta(&json!({}), true, NameRule::Dns1123Subdomain);
        let msgs: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            msgs,
            vec![
                "metadata.name: Required value: name or generateName is required",
                "metadata.namespace: Required value"
            ]
        );
        let errs = validate_object_meta(
            &json!({"name": "x", "namespace": "default"}),
            false,
            NameRule::Dns1123Subdomain,
        );
        assert_eq!(
            errs[0].to_string(),
            "metadata.namespace: Forbidden: not allowed on this type"
        );
        let errs = validate_object_meta(
            &json!({"generateName": "abc-", "namespace": "n"}),
            true,
            NameRule::Dns1123Subdomain,
        );
        assert_eq!(
            errs[0].to_string(),
            "metadata.name: Required value: name or generateName is required"
        );
        let errs = validate_object_meta(
            &json!({"name": "Bad", "namespace": "n", "labels": {"a": "-"}}),
            true,
            NameRule::Dns1123Subdomain,
        );
        assert_eq!(errs.len(), 2);
        assert!(
            errs[0].to_string().starts_with(
                "metadata.name: Invalid value: \"Bad\": a lowercase RFC 1123 subdomain"
            )
        );
        assert!(errs[1].to_string().starts_with(
            "metadata.labels: Invalid value: \"-\": a valid label must be an empty string"
        ));
        let big = "v".repeat(TOTAL_ANNOTATION_SIZE_LIMIT_B);
        let errs = validate_object_meta(
            &json!({"name": "x", "namespace": "n", "annotations": {"k": big}}),
            true,
            NameRule::Dns1123Subdomain,
        );
        assert_eq!(
            errs[0].to_string(),
            "metadata.annotations: Too long: may not be more than 262144 bytes"
        );
    }
}
