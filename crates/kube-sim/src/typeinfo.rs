//! Structural type information used by merges: which lists are atomic, sets or
//! maps keyed by some fields (server-side apply, `x-kubernetes-list-type`), which
//! maps are atomic, and how strategic merge patch treats a list
//! (`patchStrategy`/`patchMergeKey`).
//!
//! Custom resources get theirs from the CRD's openAPIV3Schema; built-in kinds from
//! the table in `builtin_types.rs`. Where nothing is known the node is `Any`, which
//! behaves like structured-merge-diff's "deduced" type: maps merge field by field,
//! lists are atomic.

use std::collections::BTreeMap;

use serde_json::Value;

/// How server-side apply treats a list.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum ListType {
    /// The list is replaced as a whole and owned as a whole.
    #[default]
    Atomic,
    /// A set of scalars; each element is owned separately.
    Set,
    /// A list of objects identified by these key fields; each item is owned
    /// separately and merged field by field.
    Map { keys: Vec<String> },
}

/// How a strategic merge patch treats a list.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum SmpStrategy {
    /// The patch's list replaces the original list.
    #[default]
    Replace,
    /// Lists of objects merge by `key`; lists of scalars merge as a set when
    /// `key` is `None`.
    Merge { key: Option<String> },
}

/// One node of a kind's type tree.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum TypeNode {
    /// Nothing known: maps are granular, lists atomic.
    #[default]
    Any,
    /// A string, number, boolean or int-or-string.
    Scalar,
    /// An object with known fields; `additional` describes the values of a map
    /// (`additionalProperties`) or unknown preserved fields.
    Object {
        fields: BTreeMap<String, TypeNode>,
        additional: Option<Box<TypeNode>>,
        /// `x-kubernetes-map-type: atomic`: replaced and owned as a whole.
        atomic: bool,
        /// Strategic merge `retainKeys` on this object.
        retain_keys: bool,
    },
    /// A list.
    List {
        items: Box<TypeNode>,
        list_type: ListType,
        smp: SmpStrategy,
    },
}

static ANY: TypeNode = TypeNode::Any;

impl TypeNode {
    /// An object node with these fields.
    pub fn object<I, S>(fields: I) -> TypeNode
    where
        I: IntoIterator<Item = (S, TypeNode)>,
        S: Into<String>,
    {
        TypeNode::Object {
            fields: fields.into_iter().map(|(k, v)| (k.into(), v)).collect(),
            additional: Some(Box::new(TypeNode::Any)),
            atomic: false,
            retain_keys: false,
        }
    }

    /// A list of objects keyed by `keys` for apply, merged by `smp_key` for
    /// strategic merge patch.
    pub fn list_map(items: TypeNode, keys: &[&str], smp_key: Option<&str>) -> TypeNode {
        TypeNode::List {
            items: Box::new(items),
            list_type: ListType::Map {
                keys: keys.iter().map(|k| k.to_string()).collect(),
            },
            smp: match smp_key {
                Some(k) => SmpStrategy::Merge {
                    key: Some(k.to_string()),
                },
                None => SmpStrategy::Replace,
            },
        }
    }

    /// A list of scalars that is a set for apply and merges as a set in strategic
    /// merge patch.
    pub fn scalar_set() -> TypeNode {
        TypeNode::List {
            items: Box::new(TypeNode::Scalar),
            list_type: ListType::Set,
            smp: SmpStrategy::Merge { key: None },
        }
    }

    /// An atomic list (replaced as a whole by both apply and strategic merge).
    pub fn atomic_list(items: TypeNode) -> TypeNode {
        TypeNode::List {
            items: Box::new(items),
            list_type: ListType::Atomic,
            smp: SmpStrategy::Replace,
        }
    }

    /// The type of field `name` of this object (`Any` when unknown).
    pub fn field(&self, name: &str) -> &TypeNode {
        match self {
            TypeNode::Object {
                fields, additional, ..
            } => fields.get(name).or(additional.as_deref()).unwrap_or(&ANY),
            _ => &ANY,
        }
    }

    /// The type of the items of this list (`Any` when unknown).
    pub fn items(&self) -> &TypeNode {
        match self {
            TypeNode::List { items, .. } => items,
            _ => &ANY,
        }
    }

    /// How server-side apply treats this node when it is a list.
    pub fn list_type(&self) -> ListType {
        match self {
            TypeNode::List { list_type, .. } => list_type.clone(),
            _ => ListType::Atomic,
        }
    }

    /// How strategic merge patch treats this node when it is a list.
    pub fn smp_strategy(&self) -> SmpStrategy {
        match self {
            TypeNode::List { smp, .. } => smp.clone(),
            _ => SmpStrategy::Replace,
        }
    }

    /// Whether this map/object is replaced and owned as a whole.
    pub fn is_atomic_map(&self) -> bool {
        matches!(self, TypeNode::Object { atomic: true, .. })
    }

    /// Whether strategic merge `retainKeys` applies to this object.
    pub fn retains_keys(&self) -> bool {
        matches!(
            self,
            TypeNode::Object {
                retain_keys: true,
                ..
            }
        )
    }

    /// Builds the type tree of a structural openAPIV3Schema (a CRD version's
    /// schema). Strategic merge patch is not supported on custom resources, so the
    /// `smp` strategy of lists is left at `Replace`.
    pub fn from_openapi(schema: &Value) -> TypeNode {
        if schema
            .get("x-kubernetes-int-or-string")
            .and_then(Value::as_bool)
            .unwrap_or(false)
        {
            return TypeNode::Scalar;
        }
        let ty = schema.get("type").and_then(Value::as_str).unwrap_or("");
        match ty {
            "object" => {
                let fields = schema
                    .get("properties")
                    .and_then(Value::as_object)
                    .map(|props| {
                        props
                            .iter()
                            .map(|(k, v)| (k.clone(), TypeNode::from_openapi(v)))
                            .collect()
                    })
                    .unwrap_or_default();
                let preserve = schema
                    .get("x-kubernetes-preserve-unknown-fields")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                let additional = match schema.get("additionalProperties") {
                    Some(v @ Value::Object(_)) => Some(Box::new(TypeNode::from_openapi(v))),
                    Some(Value::Bool(true)) => Some(Box::new(TypeNode::Any)),
                    _ if preserve => Some(Box::new(TypeNode::Any)),
                    _ => None,
                };
                let atomic =
                    schema.get("x-kubernetes-map-type").and_then(Value::as_str) == Some("atomic");
                TypeNode::Object {
                    fields,
                    additional,
                    atomic,
                    retain_keys: false,
                }
            }
            "array" => {
                let items = schema
                    .get("items")
                    .map(TypeNode::from_openapi)
                    .unwrap_or(TypeNode::Any);
                let list_type = match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
                    Some("set") => ListType::Set,
                    Some("map") => ListType::Map {
                        keys: schema
                            .get("x-kubernetes-list-map-keys")
                            .and_then(Value::as_array)
                            .map(|keys| {
                                keys.iter()
                                    .filter_map(Value::as_str)
                                    .map(str::to_string)
                                    .collect()
                            })
                            .unwrap_or_default(),
                    },
                    _ => ListType::Atomic,
                };
                TypeNode::List {
                    items: Box::new(items),
                    list_type,
                    smp: SmpStrategy::Replace,
                }
            }
            "string" | "integer" | "number" | "boolean" => TypeNode::Scalar,
            // Untyped (e.g. x-kubernetes-preserve-unknown-fields without a type).
            _ => TypeNode::Any,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn openapi_list_and_map_types() {
        let schema = json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "properties": {
                        "checks": {
                            "type": "array",
                            "x-kubernetes-list-type": "map",
                            "x-kubernetes-list-map-keys": ["name"],
                            "items": {"type": "object", "properties": {"name": {"type": "string"}}}
                        },
                        "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
                        "plain": {"type": "array", "items": {"type": "string"}},
                        "selector": {"type": "object", "x-kubernetes-map-type": "atomic"},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}}
                    }
                }
            }
        });
        let t = TypeNode::from_openapi(&schema);
        let spec = t.field("spec");
        assert_eq!(
            spec.field("checks").list_type(),
            ListType::Map {
                keys: vec!["name".into()]
            }
        );
        assert_eq!(spec.field("tags").list_type(), ListType::Set);
        assert_eq!(spec.field("plain").list_type(), ListType::Atomic);
        assert!(spec.field("selector").is_atomic_map());
        assert_eq!(spec.field("labels").field("anything"), &TypeNode::Scalar);
        assert_eq!(spec.field("unknown"), &TypeNode::Any);
    }
}
