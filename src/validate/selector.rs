//! Label selectors checked as apimachinery's `metav1.LabelSelectorAsSelector`
//! checks them: keys are qualified names, values label values, operators one
//! of `In`, `NotIn`, `Exists`, `DoesNotExist` with the value rules of each.
//! Messages are apimachinery's (`key: Invalid value: "…": …`).

use crate::api::LabelSelector;

use super::gofmt::quote;

const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const DNS1123_SUBDOMAIN_FMT: &str =
    r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";

/// Parses `selector`; `Ok(n)` is its number of requirements (0 means the
/// selector is empty and matches everything).
pub fn requirements(selector: &LabelSelector) -> Result<usize, String> {
    let mut n = 0;
    for (key, value) in selector.match_labels.iter().flatten() {
        requirement(key, Operator::Equals, std::slice::from_ref(value))?;
        n += 1;
    }
    for expr in selector.match_expressions.iter().flatten() {
        let op = match expr.operator.as_str() {
            "In" => Operator::In,
            "NotIn" => Operator::NotIn,
            "Exists" => Operator::Exists,
            "DoesNotExist" => Operator::DoesNotExist,
            other => {
                return Err(format!(
                    "{} is not a valid label selector operator",
                    quote(other)
                ));
            }
        };
        requirement(&expr.key, op, expr.values.as_deref().unwrap_or_default())?;
        n += 1;
    }
    Ok(n)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Operator {
    Equals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// Go's `%#v` of a `[]string`.
fn go_string_slice(values: &[String]) -> String {
    let inner: Vec<String> = values.iter().map(|v| quote(v)).collect();
    format!("[]string{{{}}}", inner.join(", "))
}

/// `labels.NewRequirement`: every problem, aggregated as apimachinery does.
fn requirement(key: &str, op: Operator, values: &[String]) -> Result<(), String> {
    let mut errs = Vec::new();
    let key_errs = qualified_name(key);
    if !key_errs.is_empty() {
        errs.push(format!(
            "key: Invalid value: {}: {}",
            quote(key),
            key_errs.join("; ")
        ));
    }
    match op {
        Operator::In | Operator::NotIn if values.is_empty() => errs.push(format!(
            "values: Invalid value: {}: for 'in', 'notin' operators, values set can't be empty",
            go_string_slice(values)
        )),
        Operator::Equals if values.len() != 1 => errs.push(format!(
            "values: Invalid value: {}: exact-match compatibility requires one single value",
            go_string_slice(values)
        )),
        Operator::Exists | Operator::DoesNotExist if !values.is_empty() => errs.push(format!(
            "values: Invalid value: {}: values set must be empty for exists and does not exist",
            go_string_slice(values)
        )),
        _ => {}
    }
    for (i, v) in values.iter().enumerate() {
        let value_errs = label_value(v);
        if !value_errs.is_empty() {
            errs.push(format!(
                "values[{i}][{key}]: Invalid value: {}: {}",
                quote(v),
                value_errs.join("; ")
            ));
        }
    }
    match errs.len() {
        0 => Ok(()),
        1 => Err(errs.remove(0)),
        _ => Err(format!("[{}]", errs.join(", "))),
    }
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn matches_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && is_alnum(b[0])
        && is_alnum(b[b.len() - 1])
        && b.iter()
            .all(|&c| is_alnum(c) || matches!(c, b'-' | b'_' | b'.'))
}

fn matches_dns1123_subdomain(s: &str) -> bool {
    s.split('.').all(|label| {
        let b = label.as_bytes();
        !b.is_empty()
            && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
            && (b[b.len() - 1].is_ascii_lowercase() || b[b.len() - 1].is_ascii_digit())
            && b.iter()
                .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
    })
}

/// `validation.IsQualifiedName`.
fn qualified_name(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                if prefix.len() > 253 {
                    errs.push("prefix part must be no more than 253 characters".to_string());
                }
                if !matches_dns1123_subdomain(prefix) {
                    errs.push(format!(
                        "prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '{DNS1123_SUBDOMAIN_FMT}')"
                    ));
                }
            }
            *name
        }
        _ => {
            return vec![format!(
                "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '{QUALIFIED_NAME_FMT}') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            )];
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        errs.push("name part must be no more than 63 characters".to_string());
    }
    if !name.is_empty() && !matches_qualified_name_part(name) {
        errs.push(format!(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '{QUALIFIED_NAME_FMT}')"
        ));
    }
    errs
}

/// `validation.IsValidLabelValue`.
fn label_value(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 63 {
        errs.push("must be no more than 63 characters".to_string());
    }
    if !value.is_empty() && !matches_qualified_name_part(value) {
        errs.push(format!(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '{LABEL_VALUE_FMT}')"
        ));
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::LabelSelectorRequirement;

    fn sel(labels: &[(&str, &str)], exprs: &[(&str, &str, &[&str])]) -> LabelSelector {
        LabelSelector {
            match_labels: (!labels.is_empty()).then(|| {
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            }),
            match_expressions: (!exprs.is_empty()).then(|| {
                exprs
                    .iter()
                    .map(|(k, op, vs)| LabelSelectorRequirement {
                        key: k.to_string(),
                        operator: op.to_string(),
                        values: (!vs.is_empty())
                            .then(|| vs.iter().map(|s| s.to_string()).collect()),
                    })
                    .collect()
            }),
        }
    }

    #[test]
    fn valid_selectors_count_requirements() {
        assert_eq!(requirements(&LabelSelector::default()), Ok(0));
        assert_eq!(requirements(&sel(&[("app", "api")], &[])), Ok(1));
        assert_eq!(
            requirements(&sel(
                &[("app.kubernetes.io/name", "api")],
                &[
                    ("tier", "In", &["web", "db"]),
                    ("canary", "DoesNotExist", &[])
                ]
            )),
            Ok(3)
        );
        assert_eq!(requirements(&sel(&[("app", "")], &[])), Ok(1));
    }

    #[test]
    fn invalid_selectors_have_apimachinery_messages() {
        assert_eq!(
            requirements(&sel(&[], &[("app", "Equals", &["x"])])).unwrap_err(),
            "\"Equals\" is not a valid label selector operator"
        );
        assert_eq!(
            requirements(&sel(&[], &[("app", "In", &[])])).unwrap_err(),
            "values: Invalid value: []string{}: for 'in', 'notin' operators, values set can't be empty"
        );
        assert_eq!(
            requirements(&sel(&[], &[("app", "Exists", &["x"])])).unwrap_err(),
            "values: Invalid value: []string{\"x\"}: values set must be empty for exists and does not exist"
        );
        assert!(
            requirements(&sel(&[("bad key!", "x")], &[]))
                .unwrap_err()
                .starts_with("key: Invalid value: \"bad key!\": name part must consist of")
        );
        assert!(
            requirements(&sel(&[("app", "bad value!")], &[]))
                .unwrap_err()
                .starts_with(
                    "values[0][app]: Invalid value: \"bad value!\": a valid label must be"
                )
        );
        assert!(
            requirements(&sel(&[("Example.com/app", "x")], &[]))
                .unwrap_err()
                .starts_with(
                    "key: Invalid value: \"Example.com/app\": prefix part a lowercase RFC 1123"
                )
        );
        let both = requirements(&sel(&[("bad key!", "bad value!")], &[])).unwrap_err();
        assert!(both.starts_with("[key: Invalid value:"), "{both}");
    }
}
