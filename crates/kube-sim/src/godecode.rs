//! Decoding built-in kinds the way the real server does: a request body is
//! unmarshalled into the kind's Go struct with `sigs.k8s.io/json` (Go's
//! `encoding/json`, case-sensitive, with strict-mode unknown-field
//! reporting). So a value of the wrong JSON type is refused with Go's
//! `UnmarshalTypeError` text (`json: cannot unmarshal number into Go struct
//! field ConfigMap.data of type string`), and fields the struct does not have
//! are reported (`unknown field "spec.foo"`) and dropped.
//!
//! The Go field types come from `go_types.json`, generated from the
//! k8s-openapi sources of the release (see `tools/gen_go_types.py`).
//!
//! Differences from Go's decoder: the JSON body has already been parsed, so
//! errors are found in key order rather than document order, duplicate keys
//! cannot be seen, and a number literal is rendered from its parsed value
//! (`1e3` shows as `1000.0`).

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::{Map, Value};

type Fields = HashMap<String, String>;

fn table() -> &'static HashMap<String, Fields> {
    static TABLE: OnceLock<HashMap<String, Fields>> = OnceLock::new();
    TABLE.get_or_init(|| {
        serde_json::from_str(include_str!("go_types.json")).expect("go_types.json is valid")
    })
}

/// The OpenAPI definition name of a built-in kind
/// (`io.k8s.api.apps.v1.Deployment`), if the table knows it.
pub fn definition(group: &str, version: &str, kind: &str) -> Option<String> {
    let name = match group {
        "" => format!("io.k8s.api.core.{version}.{kind}"),
        "apiextensions.k8s.io" => {
            format!("io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.{version}.{kind}")
        }
        "apiregistration.k8s.io" => {
            format!("io.k8s.kube-aggregator.pkg.apis.apiregistration.{version}.{kind}")
        }
        g => {
            let short = g.split('.').next().unwrap_or(g);
            format!("io.k8s.api.{short}.{version}.{kind}")
        }
    };
    table().contains_key(&name).then_some(name)
}

/// Whether a definition is in the table.
pub fn known(definition: &str) -> bool {
    table().contains_key(definition)
}

/// The outcome of a decode that did not fail.
#[derive(Debug, Default, PartialEq)]
pub struct Decoded {
    /// Unknown fields (`spec.foo`, `spec.containers[0].bar`), dropped from
    /// the object; under `fieldValidation=Strict` the request fails with
    /// them, under `Warn` they become warnings.
    pub unknown: Vec<String>,
}

/// Decodes `obj` as the Go struct of `definition`: returns the first decode
/// error (Go's text, e.g. `json: cannot unmarshal ...`), or the unknown
/// fields, which are removed from `obj`.
pub fn decode(definition: &str, obj: &mut Value) -> Result<Decoded, String> {
    let mut d = Decoder {
        saved: None,
        unknown: Vec::new(),
        field_stack: Vec::new(),
        struct_name: String::new(),
        strict_path: String::new(),
    };
    d.value(obj, definition)?;
    match d.saved {
        Some(e) => Err(e),
        None => Ok(Decoded { unknown: d.unknown }),
    }
}

/// Go's `reflect.Type.String()` of a table type.
pub fn go_type_name(t: &str) -> String {
    if let Some(elem) = t.strip_prefix("[]") {
        return format!("[]{}", go_type_name(elem));
    }
    if let Some(elem) = t.strip_prefix("map[]") {
        return format!("map[string]{}", go_type_name(elem));
    }
    match t {
        "string" | "int32" | "int64" | "float64" | "bool" | "uint8" => t.to_string(),
        "bytes" => "[]uint8".into(),
        "quantity" => "resource.Quantity".into(),
        "intorstring" => "intstr.IntOrString".into(),
        "time" => "v1.Time".into(),
        "microtime" => "v1.MicroTime".into(),
        "any" => "interface {}".into(),
        def => {
            let mut parts = def.rsplit('.');
            let name = parts.next().unwrap_or(def);
            let pkg = parts.next().unwrap_or("");
            format!("{pkg}.{name}")
        }
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The literal text of a number, as near to the request's as a parsed
/// value allows.
fn number_literal(n: &serde_json::Number) -> String {
    if n.is_i64() || n.is_u64() {
        n.to_string()
    } else {
        format!("{:?}", n.as_f64().unwrap_or(0.0))
    }
}

struct Decoder {
    /// The first saved (non-fatal) error, as Go's `d.savedError`.
    saved: Option<String>,
    unknown: Vec<String>,
    /// `d.errorContext.FieldStack`: JSON field names from the root, without
    /// indices or map keys.
    field_stack: Vec<String>,
    /// `d.errorContext.Struct`: the innermost struct being decoded.
    struct_name: String,
    /// The strict-mode path (`spec.containers[0]`).
    strict_path: String,
}

impl Decoder {
    fn save(&mut self, e: String) {
        if self.saved.is_none() {
            self.saved = Some(e);
        }
    }

    /// An `UnmarshalTypeError` with the current error context.
    fn type_error(&mut self, value: &str, ty: &str) {
        let ty = go_type_name(ty);
        let e = if self.struct_name.is_empty() && self.field_stack.is_empty() {
            format!("json: cannot unmarshal {value} into Go value of type {ty}")
        } else {
            format!(
                "json: cannot unmarshal {value} into Go struct field {}.{} of type {ty}",
                self.struct_name,
                self.field_stack.join(".")
            )
        };
        self.save(e);
    }

    fn push_path(&mut self, seg: &str, index: bool) -> usize {
        let len = self.strict_path.len();
        if index {
            self.strict_path.push_str(seg);
        } else {
            if !self.strict_path.is_empty() {
                self.strict_path.push('.');
            }
            self.strict_path.push_str(seg);
        }
        len
    }

    /// Decodes one value into type `t`. `Err` is a fatal (returned) error.
    fn value(&mut self, v: &mut Value, t: &str) -> Result<(), String> {
        if v.is_null() || t == "any" {
            // null into anything is a no-op in Go.
            return Ok(());
        }
        if let Some(elem) = t.strip_prefix("[]") {
            return match v {
                Value::Array(items) => {
                    for (i, item) in items.iter_mut().enumerate() {
                        let len = self.push_path(&format!("[{i}]"), true);
                        let r = self.value(item, elem);
                        self.strict_path.truncate(len);
                        r?;
                    }
                    Ok(())
                }
                other => {
                    self.type_error(json_kind(other), t);
                    Ok(())
                }
            };
        }
        if let Some(elem) = t.strip_prefix("map[]") {
            return match v {
                Value::Object(m) => {
                    for (k, item) in m.iter_mut() {
                        let len = self.push_path(k, false);
                        let r = self.value(item, elem);
                        self.strict_path.truncate(len);
                        r?;
                    }
                    Ok(())
                }
                other => {
                    self.type_error(json_kind(other), t);
                    Ok(())
                }
            };
        }
        match t {
            "string" => {
                if !v.is_string() {
                    self.type_error(json_kind(v), t);
                }
                Ok(())
            }
            "bool" => {
                if !v.is_boolean() {
                    self.type_error(json_kind(v), t);
                }
                Ok(())
            }
            "float64" => {
                if !v.is_number() {
                    self.type_error(json_kind(v), t);
                }
                Ok(())
            }
            "int32" | "int64" | "uint8" => {
                match v {
                    Value::Number(n) => {
                        let fits = match (n.as_i64(), t) {
                            (Some(i), "int32") => i32::try_from(i).is_ok(),
                            (Some(i), "uint8") => u8::try_from(i).is_ok(),
                            (Some(_), _) => true,
                            (None, _) => false,
                        };
                        if !fits {
                            self.type_error(&format!("number {}", number_literal(n)), t);
                        }
                    }
                    other => self.type_error(json_kind(other), t),
                }
                Ok(())
            }
            "bytes" => {
                match v {
                    Value::String(s) => {
                        if let Err(at) = go_base64_check(s.as_bytes()) {
                            self.save(format!("illegal base64 data at input byte {at}"));
                        }
                    }
                    Value::Array(items) => {
                        for item in items.iter_mut() {
                            self.value(item, "uint8")?;
                        }
                    }
                    other => self.type_error(json_kind(other), t),
                }
                Ok(())
            }
            // resource.Quantity's UnmarshalJSON: the literal (unquoted if a
            // string) must parse; its error is returned as is.
            "quantity" => {
                let text = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    other => gofmt::marshal(other),
                };
                parse_quantity_error(text.trim()).map_or(Ok(()), Err)
            }
            // intstr.IntOrString's UnmarshalJSON: a string, or
            // `json.Unmarshal` into an int32 (the standard library's error,
            // without struct context).
            "intorstring" => match v {
                Value::String(_) => Ok(()),
                Value::Number(n) if n.as_i64().is_some_and(|i| i32::try_from(i).is_ok()) => Ok(()),
                Value::Number(n) => Err(format!(
                    "json: cannot unmarshal number {} into Go value of type int32",
                    number_literal(n)
                )),
                other => Err(format!(
                    "json: cannot unmarshal {} into Go value of type int32",
                    json_kind(other)
                )),
            },
            // metav1.Time / MicroTime: a string parsed as RFC 3339.
            "time" | "microtime" => match v {
                Value::String(s) => go_parse_rfc3339(s).map_or(Ok(()), Err),
                other => Err(format!(
                    "json: cannot unmarshal {} into Go value of type string",
                    json_kind(other)
                )),
            },
            def => {
                let Some(fields) = table().get(def) else {
                    return Ok(());
                };
                let Value::Object(m) = v else {
                    self.type_error(json_kind(v), def);
                    return Ok(());
                };
                self.object(m, def, fields)
            }
        }
    }

    fn object(
        &mut self,
        m: &mut Map<String, Value>,
        def: &str,
        fields: &Fields,
    ) -> Result<(), String> {
        let struct_name = def.rsplit('.').next().unwrap_or(def).to_string();
        let mut unknown_keys = Vec::new();
        for (k, item) in m.iter_mut() {
            let Some(ft) = fields.get(k) else {
                let len = self.push_path(k, false);
                self.unknown.push(self.strict_path.clone());
                self.strict_path.truncate(len);
                unknown_keys.push(k.clone());
                continue;
            };
            let saved_struct = std::mem::replace(&mut self.struct_name, struct_name.clone());
            self.field_stack.push(k.clone());
            let len = self.push_path(k, false);
            let r = self.value(item, ft);
            // A fatal error keeps the context (Go returns without restoring it).
            r?;
            self.strict_path.truncate(len);
            self.field_stack.pop();
            self.struct_name = saved_struct;
        }
        for k in unknown_keys {
            m.remove(&k);
        }
        Ok(())
    }
}

/// Go's `base64.StdEncoding.Decode` error offset (`CorruptInputError`), or
/// `Ok` when the text decodes.
pub fn go_base64_check(src: &[u8]) -> Result<(), usize> {
    fn val(c: u8) -> bool {
        c.is_ascii_alphanumeric() || c == b'+' || c == b'/'
    }
    let mut si = 0;
    loop {
        // One quantum of up to four characters.
        let mut j = 0;
        while j < 4 {
            if si == src.len() {
                return match j {
                    0 => Ok(()),
                    _ => Err(si - j),
                };
            }
            let c = src[si];
            si += 1;
            if val(c) {
                j += 1;
                continue;
            }
            if c == b'\n' || c == b'\r' {
                continue;
            }
            if c != b'=' {
                return Err(si - 1);
            }
            match j {
                0 | 1 => return Err(si - 1),
                2 => {
                    while si < src.len() && (src[si] == b'\n' || src[si] == b'\r') {
                        si += 1;
                    }
                    if si == src.len() {
                        return Err(src.len());
                    }
                    if src[si] != b'=' {
                        return Err(si - 1);
                    }
                    si += 1;
                }
                _ => {}
            }
            while si < src.len() && (src[si] == b'\n' || src[si] == b'\r') {
                si += 1;
            }
            if si < src.len() {
                return Err(si);
            }
            return Ok(());
        }
    }
}

/// `resource.ParseQuantity`'s error for `s`, if it does not parse.
pub fn parse_quantity_error(s: &str) -> Option<String> {
    const FORMAT: &str = "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";
    static RE: OnceLock<regex::Regex> = OnceLock::new();
    let re = RE.get_or_init(|| {
        regex::Regex::new(r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$").expect("valid regex")
    });
    let Some(c) = re.captures(s) else {
        return Some(FORMAT.into());
    };
    let number = &c[1];
    let suffix = &c[2];
    let digits = number.trim_start_matches(['+', '-']);
    if digits.matches('.').count() > 1 || digits == "." || digits.is_empty() {
        return Some("unable to parse numeric part of quantity".into());
    }
    let ok_suffix = matches!(
        suffix,
        "" | "n"
            | "u"
            | "m"
            | "k"
            | "M"
            | "G"
            | "T"
            | "P"
            | "E"
            | "Ki"
            | "Mi"
            | "Gi"
            | "Ti"
            | "Pi"
            | "Ei"
    ) || ((suffix.starts_with('e') || suffix.starts_with('E'))
        && suffix[1..]
            .trim_start_matches(['+', '-'])
            .chars()
            .all(|c| c.is_ascii_digit())
        && suffix.len() > 1);
    if !ok_suffix {
        return Some("unable to parse quantity's suffix".into());
    }
    None
}

/// Go's `time.Parse(time.RFC3339, s)` error text, or `None` when it parses.
pub fn go_parse_rfc3339(s: &str) -> Option<String> {
    const LAYOUT: &str = "2006-01-02T15:04:05Z07:00";
    let quote = gofmt::quote;
    let bad = |value_elem: &str, layout_elem: &str| {
        Some(format!(
            "parsing time {} as {}: cannot parse {} as {}",
            quote(s),
            quote(LAYOUT),
            quote(value_elem),
            quote(layout_elem)
        ))
    };
    let range = |what: &str| Some(format!("parsing time {}: {what} out of range", quote(s)));
    let b = s.as_bytes();
    let digits = |at: usize, n: usize| -> Option<u32> {
        let part = b.get(at..at + n)?;
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| std::str::from_utf8(part).ok()?.parse().ok())?
    };
    // (layout element, start offset, digits) of the numeric fields, with
    // the literal that precedes each.
    let steps: [(&str, &str, usize); 6] = [
        ("", "2006", 4),
        ("-", "01", 2),
        ("-", "02", 2),
        ("T", "15", 2),
        (":", "04", 2),
        (":", "05", 2),
    ];
    let mut at = 0;
    let mut vals = [0u32; 6];
    for (i, (lit, elem, n)) in steps.iter().enumerate() {
        if !lit.is_empty() {
            if !s[at..].starts_with(lit) {
                return bad(&s[at..], lit);
            }
            at += lit.len();
        }
        match digits(at, *n) {
            Some(v) => vals[i] = v,
            None => return bad(&s[at..], elem),
        }
        at += n;
    }
    // Fractional seconds.
    if b.get(at) == Some(&b'.') || b.get(at) == Some(&b',') {
        let start = at + 1;
        let mut end = start;
        while b.get(end).is_some_and(u8::is_ascii_digit) {
            end += 1;
        }
        if end == start {
            return bad(&s[at..], "Z07:00");
        }
        at = end;
    }
    let rest = &s[at..];
    let zone_len = if rest.starts_with('Z') {
        1
    } else if (rest.starts_with('+') || rest.starts_with('-'))
        && rest.len() >= 6
        && digits(at + 1, 2).is_some()
        && b[at + 3] == b':'
        && digits(at + 4, 2).is_some()
    {
        6
    } else {
        return bad(rest, "Z07:00");
    };
    if rest.len() > zone_len {
        return Some(format!(
            "parsing time {}: extra text: {}",
            quote(s),
            quote(&rest[zone_len..])
        ));
    }
    let [year, month, day, hour, minute, second] = vals;
    if !(1..=12).contains(&month) {
        return range("month");
    }
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if day < 1 || day > days {
        return range("day");
    }
    if hour > 23 {
        return range("hour");
    }
    if minute > 59 {
        return range("minute");
    }
    if second > 59 {
        return range("second");
    }
    None
}

/// The server-side apply view of a decode failure: structured-merge-diff's
/// typed conversion of the applied configuration (`field not declared in
/// schema`, `expected numeric (int or float), got string`, …), with its path
/// (`.spec.template.spec.containers[name="web"].image`).
pub fn apply_errors(
    definition: &str,
    config: &Value,
    ty: &crate::typeinfo::TypeNode,
) -> Option<String> {
    let mut errs = Vec::new();
    smd_walk(config, definition, ty, String::new(), &mut errs);
    match errs.len() {
        0 => None,
        1 => errs.pop(),
        // ValidationErrors.Error() of several errors.
        _ => Some(format!("errors:\n  {}", errs.join("\n  "))),
    }
}

/// Go's `fmt.Sprintf("%+v", v)` of a decoded JSON value
/// (`map[data:map[a:1]]`).
pub fn go_print_v(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => gofmt::format_number(n),
        Value::String(s) => s.clone(),
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(go_print_v).collect();
            format!("[{}]", parts.join(" "))
        }
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .iter()
                .map(|k| format!("{k}:{}", go_print_v(&m[k.as_str()])))
                .collect();
            format!("map[{}]", parts.join(" "))
        }
    }
}

fn smd_scalar_error(v: &Value) -> String {
    // `%#v` of a value.valueUnstructured.
    let inner = match v {
        Value::String(s) => gofmt::quote(s),
        Value::Number(n) => number_literal(n).trim_end_matches(".0").to_string(),
        Value::Bool(b) => b.to_string(),
        _ => gofmt::marshal(v),
    };
    format!("&value.valueUnstructured{{Value:{inner}}}")
}

fn smd_walk(
    v: &Value,
    t: &str,
    ty: &crate::typeinfo::TypeNode,
    path: String,
    errs: &mut Vec<String>,
) {
    use crate::typeinfo::{ListType, TypeNode};
    if v.is_null() || t == "any" {
        return;
    }
    if let Some(elem) = t.strip_prefix("[]") {
        let Value::Array(items) = v else {
            errs.push(format!(
                "{path}: expected list, got {}",
                smd_scalar_error(v)
            ));
            return;
        };
        let (item_ty, keys, set) = match ty {
            TypeNode::List {
                items, list_type, ..
            } => (
                items.as_ref().clone(),
                match list_type {
                    ListType::Map { keys } => keys.clone(),
                    _ => Vec::new(),
                },
                matches!(list_type, ListType::Set),
            ),
            _ => (TypeNode::Any, Vec::new(), false),
        };
        for (i, item) in items.iter().enumerate() {
            let seg = if !keys.is_empty() {
                let parts: Vec<String> = keys
                    .iter()
                    .filter_map(|k| item.get(k).map(|kv| format!("{k}={}", gofmt::marshal(kv))))
                    .collect();
                format!("[{}]", parts.join(","))
            } else if set {
                format!("[={}]", gofmt::marshal(item))
            } else {
                format!("[{i}]")
            };
            smd_walk(item, elem, &item_ty, format!("{path}{seg}"), errs);
        }
        return;
    }
    if let Some(elem) = t.strip_prefix("map[]") {
        let Value::Object(m) = v else {
            errs.push(format!("{path}: expected map, got {}", smd_scalar_error(v)));
            return;
        };
        for (k, item) in m {
            let child = ty.field(k).clone();
            smd_walk(item, elem, &child, format!("{path}.{k}"), errs);
        }
        return;
    }
    match t {
        "string" | "bytes" | "time" | "microtime" => {
            if !v.is_string() {
                errs.push(format!(
                    "{path}: expected string, got {}",
                    smd_scalar_error(v)
                ));
            }
        }
        "int32" | "int64" | "float64" | "uint8" => {
            if !v.is_number() {
                errs.push(format!(
                    "{path}: expected numeric (int or float), got {}",
                    match v {
                        Value::String(_) => "string",
                        Value::Bool(_) => "bool",
                        Value::Array(_) => "[]interface {}",
                        _ => "map[string]interface {}",
                    }
                ));
            }
        }
        "bool" => {
            if !v.is_boolean() {
                errs.push(format!(
                    "{path}: expected boolean, got {}",
                    smd_scalar_error(v)
                ));
            }
        }
        "quantity" | "intorstring" => {
            if v.is_object() || v.is_array() {
                errs.push(format!(
                    "{path}: expected scalar, got {}",
                    smd_scalar_error(v)
                ));
            }
        }
        def => {
            let Some(fields) = table().get(def) else {
                return;
            };
            let Value::Object(m) = v else {
                errs.push(format!("{path}: expected map, got {}", smd_scalar_error(v)));
                return;
            };
            for (k, item) in m {
                let child_path = format!("{path}.{k}");
                match fields.get(k) {
                    Some(ft) => smd_walk(item, ft, ty.field(k), child_path, errs),
                    None => errs.push(format!("{child_path}: field not declared in schema")),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn type_errors_have_go_text() {
        let mut cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": 1}});
        assert_eq!(
            decode("io.k8s.api.core.v1.ConfigMap", &mut cm).unwrap_err(),
            "json: cannot unmarshal number into Go struct field ConfigMap.data of type string"
        );
        let mut d = json!({"spec": {"replicas": "2", "template": {"spec": {"containers": [{"name": "a", "env": [{"name": "x", "value": 1}]}]}}}});
        assert_eq!(
            decode("io.k8s.api.apps.v1.Deployment", &mut d).unwrap_err(),
            "json: cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas of type int32"
        );
        let mut d = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "env": [{"name": "x", "value": 1}]}]}}}});
        assert_eq!(
            decode("io.k8s.api.apps.v1.Deployment", &mut d).unwrap_err(),
            "json: cannot unmarshal number into Go struct field EnvVar.spec.template.spec.containers.env.value of type string"
        );
        let mut d = json!({"spec": "x"});
        assert_eq!(
            decode("io.k8s.api.apps.v1.Deployment", &mut d).unwrap_err(),
            "json: cannot unmarshal string into Go struct field Deployment.spec of type v1.DeploymentSpec"
        );
        let mut d = json!({"spec": {"replicas": 1.5}});
        assert_eq!(
            decode("io.k8s.api.apps.v1.Deployment", &mut d).unwrap_err(),
            "json: cannot unmarshal number 1.5 into Go struct field DeploymentSpec.spec.replicas of type int32"
        );
    }

    #[test]
    fn unknown_fields_are_reported_and_dropped() {
        let mut d = json!({"spec": {"foo": 1, "template": {"spec": {"containers": [{"name": "a", "bar": true}]}}}, "extra": {}});
        let out = decode("io.k8s.api.apps.v1.Deployment", &mut d).unwrap();
        assert_eq!(
            out.unknown,
            ["extra", "spec.foo", "spec.template.spec.containers[0].bar"]
        );
        assert_eq!(
            d,
            json!({"spec": {"template": {"spec": {"containers": [{"name": "a"}]}}}})
        );
    }

    #[test]
    fn special_types() {
        let mut p = json!({"spec": {"containers": [{"name": "a", "resources": {"limits": {"cpu": 1, "memory": "1Gi"}}, "ports": [{"containerPort": 80}]}]}});
        assert!(decode("io.k8s.api.core.v1.Pod", &mut p).is_ok());
        let mut p = json!({"spec": {"containers": [{"name": "a", "resources": {"limits": {"cpu": "lots"}}}]}});
        assert!(
            decode("io.k8s.api.core.v1.Pod", &mut p)
                .unwrap_err()
                .starts_with("quantities must match")
        );
        let mut s = json!({"spec": {"ports": [{"port": 80, "targetPort": true}]}});
        assert_eq!(
            decode("io.k8s.api.core.v1.Service", &mut s).unwrap_err(),
            "json: cannot unmarshal bool into Go value of type int32"
        );
        let mut s = json!({"data": {"a": "not base64!"}});
        assert_eq!(
            decode("io.k8s.api.core.v1.Secret", &mut s).unwrap_err(),
            "illegal base64 data at input byte 3"
        );
        let mut m = json!({"metadata": {"creationTimestamp": "yesterday"}});
        assert_eq!(
            decode("io.k8s.api.core.v1.ConfigMap", &mut m).unwrap_err(),
            r#"parsing time "yesterday" as "2006-01-02T15:04:05Z07:00": cannot parse "yesterday" as "2006""#
        );
        assert_eq!(go_parse_rfc3339("2024-01-02T03:04:05Z"), None);
        assert_eq!(go_parse_rfc3339("2024-01-02T03:04:05.123+02:00"), None);
        assert_eq!(go_base64_check(b"YWJj"), Ok(()));
        assert_eq!(go_base64_check(b"YWI="), Ok(()));
        assert_eq!(go_base64_check(b"YWI"), Err(0));
    }

    #[test]
    fn definitions_of_builtin_kinds() {
        assert_eq!(
            definition("apps", "v1", "Deployment").as_deref(),
            Some("io.k8s.api.apps.v1.Deployment")
        );
        assert_eq!(
            definition("rbac.authorization.k8s.io", "v1", "Role").as_deref(),
            Some("io.k8s.api.rbac.v1.Role")
        );
        assert!(definition("apiextensions.k8s.io", "v1", "CustomResourceDefinition").is_some());
        assert!(definition("example.com", "v1", "Widget").is_none());
    }
}
