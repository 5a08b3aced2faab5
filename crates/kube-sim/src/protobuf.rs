//! Decoding of Kubernetes protobuf request bodies.
//!
//! kubectl's typed clients (`kubectl create namespace|configmap|secret|...`,
//! `kubectl auth can-i`, `kubectl auth whoami`, `kubectl create token`, ...) send
//! their request bodies as `application/vnd.kubernetes.protobuf`. kube-sim
//! stores and answers JSON, so this module turns such a body into the JSON object
//! a JSON client would have sent for the same Go struct.
//!
//! The wire format is the 4-byte magic `k8s\0` followed by a `runtime.Unknown`
//! message whose `raw` field holds the object's own protobuf encoding (its type
//! is named by the envelope's TypeMeta, not by the object).
//!
//! Messages are described by small static tables (field number → JSON name and
//! type), one per upstream generated.proto message. Only the kinds in the
//! `KINDS` table are known; any other kind is a [`DecodeError::UnsupportedKind`],
//! whose message tells the client to send JSON instead.
//!
//! Omission follows Go's `encoding/json` on the generated structs: the Go
//! protobuf marshaller writes every non-pointer field (empty strings, zeros,
//! `false`), so fields that are `omitempty` non-pointers in Go are dropped when
//! zero, while pointer fields and fields without `omitempty` are kept exactly as
//! sent. Nested structs are kept when present (Go prints `"spec": {}`). The
//! deliberate differences from Go's JSON: a zero `metav1.Time` is omitted
//! instead of `null`, an empty slice without `omitempty` (e.g. a ClusterRole's
//! `rules`) is omitted instead of `null`, and a zero `targetPort` is omitted
//! instead of `0`; the API server reads each pair the same way.

use base64::Engine as _;
use serde_json::{Map, Value};

/// The prefix of every Kubernetes protobuf body: `k8s` and a NUL byte.
const MAGIC: [u8; 4] = [0x6b, 0x38, 0x73, 0x00];

/// Why a protobuf body could not be turned into JSON.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The body does not start with the `k8s\0` magic.
    #[error("request body is not a Kubernetes protobuf message (missing the \"k8s\\x00\" prefix)")]
    MissingMagic,
    /// The envelope has no apiVersion or no kind.
    #[error("protobuf envelope does not name the object's apiVersion and kind")]
    MissingTypeMeta,
    /// The envelope says the raw object is compressed or otherwise encoded.
    #[error(
        "protobuf envelope content encoding {0:?} is not supported by kube-sim; send the body unencoded or as JSON"
    )]
    UnsupportedContentEncoding(String),
    /// The envelope says the raw object is not protobuf.
    #[error(
        "protobuf envelope content type {0:?} is not supported by kube-sim; send the body as JSON"
    )]
    UnsupportedContentType(String),
    /// The object's kind has no message table here.
    #[error(
        "{kind} ({api_version}) is not supported as protobuf by kube-sim; send it as JSON (Content-Type: application/json)"
    )]
    UnsupportedKind {
        /// The envelope's apiVersion.
        api_version: String,
        /// The envelope's kind.
        kind: String,
    },
    /// The bytes are not valid protobuf for the message being read.
    #[error("malformed protobuf body at {at}: {reason}")]
    Malformed {
        /// Where the problem was found, e.g. `Service.spec.ports`.
        at: String,
        /// What was wrong.
        reason: String,
    },
}

impl DecodeError {
    /// The HTTP status an API server answers with for this error: 415 when the
    /// body is well-formed but not something kube-sim decodes, 400 otherwise.
    pub fn status_code(&self) -> u16 {
        match self {
            DecodeError::UnsupportedContentEncoding(_)
            | DecodeError::UnsupportedContentType(_)
            | DecodeError::UnsupportedKind { .. } => 415,
            DecodeError::MissingMagic
            | DecodeError::MissingTypeMeta
            | DecodeError::Malformed { .. } => 400,
        }
    }

    fn malformed(reason: impl Into<String>) -> Self {
        DecodeError::Malformed {
            at: String::new(),
            reason: reason.into(),
        }
    }

    /// Prefixes the location of a `Malformed` error with an enclosing field or kind.
    fn within(self, outer: &str) -> Self {
        match self {
            DecodeError::Malformed { at, reason } => {
                let at = if at.is_empty() {
                    outer.to_string()
                } else {
                    format!("{outer}.{at}")
                };
                DecodeError::Malformed { at, reason }
            }
            other => other,
        }
    }

    /// Names the message a `Malformed` error not tied to one field was found in.
    fn in_message(self, message: &str) -> Self {
        match self {
            DecodeError::Malformed { at, reason } if at.is_empty() => DecodeError::Malformed {
                at,
                reason: format!("{reason} (in {message})"),
            },
            other => other,
        }
    }
}

/// Decodes a Kubernetes protobuf request body (the `k8s\0` magic + runtime.Unknown
/// envelope) into the JSON object a JSON client would have sent (camelCase field
/// names, apiVersion/kind from the envelope's TypeMeta, omitting fields that are
/// unset/empty like Go's omitempty JSON would).
pub fn decode(body: &[u8]) -> Result<Value, DecodeError> {
    let rest = body.strip_prefix(&MAGIC).ok_or(DecodeError::MissingMagic)?;
    let envelope = Envelope::parse(rest).map_err(|e| e.within("runtime.Unknown"))?;
    if !envelope.content_encoding.is_empty() {
        return Err(DecodeError::UnsupportedContentEncoding(
            envelope.content_encoding,
        ));
    }
    if !envelope.content_type.is_empty()
        && envelope.content_type != "application/vnd.kubernetes.protobuf"
    {
        return Err(DecodeError::UnsupportedContentType(envelope.content_type));
    }
    if envelope.api_version.is_empty() || envelope.kind.is_empty() {
        return Err(DecodeError::MissingTypeMeta);
    }
    let Some(desc) = message_for(&envelope.api_version, &envelope.kind) else {
        return Err(DecodeError::UnsupportedKind {
            api_version: envelope.api_version,
            kind: envelope.kind,
        });
    };
    let fields = decode_message(desc, envelope.raw).map_err(|e| e.within(&envelope.kind))?;
    let mut object = Map::new();
    object.insert("apiVersion".into(), Value::String(envelope.api_version));
    object.insert("kind".into(), Value::String(envelope.kind));
    object.extend(fields);
    Ok(Value::Object(object))
}

/// The message table for an (apiVersion, kind) pair, if kube-sim decodes it.
fn message_for(api_version: &str, kind: &str) -> Option<&'static Msg> {
    KINDS
        .iter()
        .find(|(v, k, _)| *v == api_version && *k == kind)
        .map(|(_, _, m)| *m)
}

// ---------------------------------------------------------------------------
// Envelope
// ---------------------------------------------------------------------------

/// `runtime.Unknown`: typeMeta=1 {apiVersion=1, kind=2}, raw=2, contentEncoding=3,
/// contentType=4 (k8s.io/apimachinery pkg/runtime/generated.proto, kubernetes/kubernetes
/// staging at commit 203d8ac83844b8ea8ece8ece7630cb22ef8f327d).
struct Envelope<'a> {
    api_version: String,
    kind: String,
    raw: &'a [u8],
    content_encoding: String,
    content_type: String,
}

impl<'a> Envelope<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        let mut envelope = Envelope {
            api_version: String::new(),
            kind: String::new(),
            raw: &[],
            content_encoding: String::new(),
            content_type: String::new(),
        };
        let mut reader = Reader::new(bytes);
        while let Some((number, value)) = reader.next_field()? {
            match number {
                1 => {
                    let mut type_meta =
                        Reader::new(value.bytes().map_err(|e| e.within("typeMeta"))?);
                    while let Some((number, value)) =
                        type_meta.next_field().map_err(|e| e.within("typeMeta"))?
                    {
                        match number {
                            1 => {
                                envelope.api_version = value
                                    .string()
                                    .map_err(|e| e.within("typeMeta.apiVersion"))?
                            }
                            2 => {
                                envelope.kind =
                                    value.string().map_err(|e| e.within("typeMeta.kind"))?
                            }
                            _ => {}
                        }
                    }
                }
                2 => envelope.raw = value.bytes().map_err(|e| e.within("raw"))?,
                3 => {
                    envelope.content_encoding =
                        value.string().map_err(|e| e.within("contentEncoding"))?
                }
                4 => envelope.content_type = value.string().map_err(|e| e.within("contentType"))?,
                _ => {}
            }
        }
        Ok(envelope)
    }
}

// ---------------------------------------------------------------------------
// Wire reader
// ---------------------------------------------------------------------------

/// One field value as it appears on the wire.
#[derive(Clone, Copy)]
enum Wire<'a> {
    Varint(u64),
    /// A 64-bit field (no Kubernetes message used here has one; skipped).
    Fixed64,
    Len(&'a [u8]),
    /// A 32-bit field (likewise skipped).
    Fixed32,
}

impl<'a> Wire<'a> {
    fn bytes(self) -> Result<&'a [u8], DecodeError> {
        match self {
            Wire::Len(b) => Ok(b),
            _ => Err(DecodeError::malformed("expected a length-delimited field")),
        }
    }

    fn string(self) -> Result<String, DecodeError> {
        // Go strings may hold any bytes; encoding/json writes invalid UTF-8 as U+FFFD.
        Ok(String::from_utf8_lossy(self.bytes()?).into_owned())
    }

    fn varint(self) -> Result<u64, DecodeError> {
        match self {
            Wire::Varint(v) => Ok(v),
            _ => Err(DecodeError::malformed("expected a varint field")),
        }
    }
}

/// A cursor over protobuf bytes.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut value: u64 = 0;
        for i in 0..10 {
            let Some(&byte) = self.buf.get(self.pos) else {
                return Err(DecodeError::malformed("truncated varint"));
            };
            self.pos += 1;
            if i == 9 && byte > 1 {
                return Err(DecodeError::malformed("varint overflows 64 bits"));
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err(DecodeError::malformed("varint longer than 10 bytes"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).filter(|&end| end <= self.buf.len());
        let Some(end) = end else {
            return Err(DecodeError::malformed(
                "field runs past the end of its message",
            ));
        };
        let slice = &self.buf[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    /// The next field number and value, or `None` at the end of the buffer.
    fn next_field(&mut self) -> Result<Option<(u32, Wire<'a>)>, DecodeError> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let number = u32::try_from(key >> 3)
            .map_err(|_| DecodeError::malformed("field number out of range"))?;
        if number == 0 {
            return Err(DecodeError::malformed("field number 0"));
        }
        let value = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Wire::Fixed64
            }
            2 => {
                let len = usize::try_from(self.varint()?)
                    .map_err(|_| DecodeError::malformed("length does not fit in memory"))?;
                Wire::Len(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Wire::Fixed32
            }
            3 | 4 => {
                return Err(DecodeError::malformed(
                    "protobuf groups are not used by Kubernetes",
                ));
            }
            other => return Err(DecodeError::malformed(format!("unknown wire type {other}"))),
        };
        Ok(Some((number, value)))
    }
}

// ---------------------------------------------------------------------------
// Message tables
// ---------------------------------------------------------------------------

/// A protobuf message: its name (for error messages) and its known fields.
struct Msg {
    name: &'static str,
    fields: &'static [F],
}

impl Msg {
    fn field(&self, number: u32) -> Option<&F> {
        self.fields.iter().find(|f| f.number == number)
    }
}

/// The type of a field's values.
#[derive(Clone, Copy)]
enum Ty {
    String,
    Int32,
    Int64,
    Bool,
    Message(&'static Msg),
    /// metav1.Time {seconds=1, nanos=2}: RFC 3339 with second precision in JSON.
    Time,
    /// intstr.IntOrString {type=1, intVal=2, strVal=3}: a JSON number or string.
    IntOrString,
    /// metav1.FieldsV1 {Raw=1}: the raw bytes are JSON.
    FieldsV1,
    /// `map<string, V>`: repeated entry messages {key=1, value=2}.
    Map(MapValue),
}

/// The value type of a map field.
#[derive(Clone, Copy)]
enum MapValue {
    /// `map<string, string>`.
    String,
    /// `map<string, bytes>`: base64 (standard alphabet, padded) in JSON.
    Bytes,
    /// `map<string, resource.Quantity>` {string=1}: JSON strings.
    Quantity,
    /// `map<string, metav1.Time>`.
    Time,
    /// `map<string, SomeMessage>`.
    Message(&'static Msg),
}

/// How a field appears in JSON.
#[derive(Clone, Copy, PartialEq)]
enum Rule {
    /// A Go non-pointer field tagged `omitempty`: dropped when zero.
    OmitZero,
    /// A Go pointer field, or one without `omitempty`: kept whenever sent.
    Keep,
    /// A Go slice: a JSON array, dropped when empty.
    Repeated,
}

/// One field of a message table.
struct F {
    number: u32,
    json: &'static str,
    ty: Ty,
    rule: Rule,
}

impl F {
    const fn new(number: u32, json: &'static str, ty: Ty, rule: Rule) -> F {
        F {
            number,
            json,
            ty,
            rule,
        }
    }
    /// A string, `omitempty` in Go.
    const fn str(number: u32, json: &'static str) -> F {
        F::new(number, json, Ty::String, Rule::OmitZero)
    }
    /// A repeated string.
    const fn strs(number: u32, json: &'static str) -> F {
        F::new(number, json, Ty::String, Rule::Repeated)
    }
    const fn i32(number: u32, json: &'static str) -> F {
        F::new(number, json, Ty::Int32, Rule::OmitZero)
    }
    const fn i64(number: u32, json: &'static str) -> F {
        F::new(number, json, Ty::Int64, Rule::OmitZero)
    }
    const fn bool(number: u32, json: &'static str) -> F {
        F::new(number, json, Ty::Bool, Rule::OmitZero)
    }
    const fn msg(number: u32, json: &'static str, msg: &'static Msg) -> F {
        F::new(number, json, Ty::Message(msg), Rule::Keep)
    }
    const fn msgs(number: u32, json: &'static str, msg: &'static Msg) -> F {
        F::new(number, json, Ty::Message(msg), Rule::Repeated)
    }
    const fn time(number: u32, json: &'static str) -> F {
        F::new(number, json, Ty::Time, Rule::Keep)
    }
    const fn int_or_string(number: u32, json: &'static str) -> F {
        F::new(number, json, Ty::IntOrString, Rule::OmitZero)
    }
    const fn map(number: u32, json: &'static str, value: MapValue) -> F {
        F::new(number, json, Ty::Map(value), Rule::Repeated)
    }
    /// Keeps the field even when zero: for Go pointers and fields without `omitempty`.
    const fn keep(self) -> F {
        F {
            rule: Rule::Keep,
            ..self
        }
    }
}

// --- k8s.io/apimachinery pkg/apis/meta/v1/generated.proto ----------------------
// Field numbers from spotmaxtech/k8s-apimachinery-v0260 (k8s.io/apimachinery
// v0.26.0 mirror) pkg/apis/meta/v1/generated.proto at commit
// 64429bdd60707e12b7891fc754b604f1bc72832b; these messages have not changed since.
// DeleteOptions field 6 (ignoreStoreReadErrorWithClusterBreakingPotential, 1.32+)
// is not in that version and is skipped as an unknown field.

static OBJECT_META: Msg = Msg {
    name: "ObjectMeta",
    fields: &[
        F::str(1, "name"),
        F::str(2, "generateName"),
        F::str(3, "namespace"),
        F::str(4, "selfLink"),
        F::str(5, "uid"),
        F::str(6, "resourceVersion"),
        F::i64(7, "generation"),
        F::time(8, "creationTimestamp"),
        F::time(9, "deletionTimestamp"),
        F::i64(10, "deletionGracePeriodSeconds").keep(),
        F::map(11, "labels", MapValue::String),
        F::map(12, "annotations", MapValue::String),
        F::msgs(13, "ownerReferences", &OWNER_REFERENCE),
        F::strs(14, "finalizers"),
        F::msgs(17, "managedFields", &MANAGED_FIELDS_ENTRY),
    ],
};

static OWNER_REFERENCE: Msg = Msg {
    name: "OwnerReference",
    fields: &[
        F::str(5, "apiVersion").keep(),
        F::str(1, "kind").keep(),
        F::str(3, "name").keep(),
        F::str(4, "uid").keep(),
        F::bool(6, "controller").keep(),
        F::bool(7, "blockOwnerDeletion").keep(),
    ],
};

static MANAGED_FIELDS_ENTRY: Msg = Msg {
    name: "ManagedFieldsEntry",
    fields: &[
        F::str(1, "manager"),
        F::str(2, "operation"),
        F::str(3, "apiVersion"),
        F::time(4, "time"),
        F::str(6, "fieldsType"),
        F::new(7, "fieldsV1", Ty::FieldsV1, Rule::Keep),
        F::str(8, "subresource"),
    ],
};

static LABEL_SELECTOR: Msg = Msg {
    name: "LabelSelector",
    fields: &[
        F::map(1, "matchLabels", MapValue::String),
        F::msgs(2, "matchExpressions", &LABEL_SELECTOR_REQUIREMENT),
    ],
};

static LABEL_SELECTOR_REQUIREMENT: Msg = Msg {
    name: "LabelSelectorRequirement",
    fields: &[
        F::str(1, "key").keep(),
        F::str(2, "operator").keep(),
        F::strs(3, "values"),
    ],
};

static CONDITION: Msg = Msg {
    name: "Condition",
    fields: &[
        F::str(1, "type").keep(),
        F::str(2, "status").keep(),
        F::i64(3, "observedGeneration"),
        F::time(4, "lastTransitionTime"),
        F::str(5, "reason").keep(),
        F::str(6, "message").keep(),
    ],
};

static DELETE_OPTIONS: Msg = Msg {
    name: "DeleteOptions",
    fields: &[
        F::i64(1, "gracePeriodSeconds").keep(),
        F::msg(2, "preconditions", &PRECONDITIONS),
        F::bool(3, "orphanDependents").keep(),
        F::str(4, "propagationPolicy").keep(),
        F::strs(5, "dryRun"),
    ],
};

static PRECONDITIONS: Msg = Msg {
    name: "Preconditions",
    fields: &[F::str(1, "uid").keep(), F::str(2, "resourceVersion").keep()],
};

// --- k8s.io/api core/v1/generated.proto ----------------------------------------
// Field numbers from kubernetes/kubernetes staging/src/k8s.io/api/core/v1/generated.proto
// at commit 0032f46b5dcb893b0684679408a2da9bd26a0859 (a 1.36-era tree).

static NAMESPACE: Msg = Msg {
    name: "Namespace",
    fields: &[
        F::msg(1, "metadata", &OBJECT_META),
        F::msg(2, "spec", &NAMESPACE_SPEC),
        F::msg(3, "status", &NAMESPACE_STATUS),
    ],
};

static NAMESPACE_SPEC: Msg = Msg {
    name: "NamespaceSpec",
    fields: &[F::strs(1, "finalizers")],
};

static NAMESPACE_STATUS: Msg = Msg {
    name: "NamespaceStatus",
    fields: &[
        F::str(1, "phase"),
        F::msgs(2, "conditions", &NAMESPACE_CONDITION),
    ],
};

static NAMESPACE_CONDITION: Msg = Msg {
    name: "NamespaceCondition",
    fields: &[
        F::str(1, "type").keep(),
        F::str(2, "status").keep(),
        F::time(4, "lastTransitionTime"),
        F::str(5, "reason"),
        F::str(6, "message"),
    ],
};

static CONFIG_MAP: Msg = Msg {
    name: "ConfigMap",
    fields: &[
        F::msg(1, "metadata", &OBJECT_META),
        F::bool(4, "immutable").keep(),
        F::map(2, "data", MapValue::String),
        F::map(3, "binaryData", MapValue::Bytes),
    ],
};

static SECRET: Msg = Msg {
    name: "Secret",
    fields: &[
        F::msg(1, "metadata", &OBJECT_META),
        F::bool(5, "immutable").keep(),
        F::map(2, "data", MapValue::Bytes),
        F::map(4, "stringData", MapValue::String),
        F::str(3, "type"),
    ],
};

static SERVICE_ACCOUNT: Msg = Msg {
    name: "ServiceAccount",
    fields: &[
        F::msg(1, "metadata", &OBJECT_META),
        F::msgs(2, "secrets", &OBJECT_REFERENCE),
        F::msgs(3, "imagePullSecrets", &LOCAL_OBJECT_REFERENCE),
        F::bool(4, "automountServiceAccountToken").keep(),
    ],
};

static OBJECT_REFERENCE: Msg = Msg {
    name: "ObjectReference",
    fields: &[
        F::str(1, "kind"),
        F::str(2, "namespace"),
        F::str(3, "name"),
        F::str(4, "uid"),
        F::str(5, "apiVersion"),
        F::str(6, "resourceVersion"),
        F::str(7, "fieldPath"),
    ],
};

static LOCAL_OBJECT_REFERENCE: Msg = Msg {
    name: "LocalObjectReference",
    fields: &[F::str(1, "name")],
};

static SERVICE: Msg = Msg {
    name: "Service",
    fields: &[
        F::msg(1, "metadata", &OBJECT_META),
        F::msg(2, "spec", &SERVICE_SPEC),
        F::msg(3, "status", &SERVICE_STATUS),
    ],
};

static SERVICE_SPEC: Msg = Msg {
    name: "ServiceSpec",
    fields: &[
        F::msgs(1, "ports", &SERVICE_PORT),
        F::map(2, "selector", MapValue::String),
        F::str(3, "clusterIP"),
        F::strs(18, "clusterIPs"),
        F::str(4, "type"),
        F::strs(5, "externalIPs"),
        F::str(7, "sessionAffinity"),
        F::str(8, "loadBalancerIP"),
        F::strs(9, "loadBalancerSourceRanges"),
        F::str(10, "externalName"),
        F::str(11, "externalTrafficPolicy"),
        F::i32(12, "healthCheckNodePort"),
        F::bool(13, "publishNotReadyAddresses"),
        F::msg(14, "sessionAffinityConfig", &SESSION_AFFINITY_CONFIG),
        F::strs(19, "ipFamilies"),
        F::str(17, "ipFamilyPolicy").keep(),
        F::bool(20, "allocateLoadBalancerNodePorts").keep(),
        F::str(21, "loadBalancerClass").keep(),
        F::str(22, "internalTrafficPolicy").keep(),
        F::str(23, "trafficDistribution").keep(),
    ],
};

static SERVICE_PORT: Msg = Msg {
    name: "ServicePort",
    fields: &[
        F::str(1, "name"),
        F::str(2, "protocol"),
        F::str(6, "appProtocol").keep(),
        F::i32(3, "port").keep(),
        F::int_or_string(4, "targetPort"),
        F::i32(5, "nodePort"),
    ],
};

static SESSION_AFFINITY_CONFIG: Msg = Msg {
    name: "SessionAffinityConfig",
    fields: &[F::msg(1, "clientIP", &CLIENT_IP_CONFIG)],
};

static CLIENT_IP_CONFIG: Msg = Msg {
    name: "ClientIPConfig",
    fields: &[F::i32(1, "timeoutSeconds").keep()],
};

static SERVICE_STATUS: Msg = Msg {
    name: "ServiceStatus",
    fields: &[
        F::msg(1, "loadBalancer", &LOAD_BALANCER_STATUS),
        F::msgs(2, "conditions", &CONDITION),
    ],
};

static LOAD_BALANCER_STATUS: Msg = Msg {
    name: "LoadBalancerStatus",
    fields: &[F::msgs(1, "ingress", &LOAD_BALANCER_INGRESS)],
};

static LOAD_BALANCER_INGRESS: Msg = Msg {
    name: "LoadBalancerIngress",
    fields: &[
        F::str(1, "ip"),
        F::str(2, "hostname"),
        F::str(3, "ipMode").keep(),
        F::msgs(4, "ports", &PORT_STATUS),
    ],
};

static PORT_STATUS: Msg = Msg {
    name: "PortStatus",
    fields: &[
        F::i32(1, "port").keep(),
        F::str(2, "protocol").keep(),
        F::str(3, "error").keep(),
    ],
};

static RESOURCE_QUOTA: Msg = Msg {
    name: "ResourceQuota",
    fields: &[
        F::msg(1, "metadata", &OBJECT_META),
        F::msg(2, "spec", &RESOURCE_QUOTA_SPEC),
        F::msg(3, "status", &RESOURCE_QUOTA_STATUS),
    ],
};

static RESOURCE_QUOTA_SPEC: Msg = Msg {
    name: "ResourceQuotaSpec",
    fields: &[
        F::map(1, "hard", MapValue::Quantity),
        F::strs(2, "scopes"),
        F::msg(3, "scopeSelector", &SCOPE_SELECTOR),
    ],
};

static SCOPE_SELECTOR: Msg = Msg {
    name: "ScopeSelector",
    fields: &[F::msgs(
        1,
        "matchExpressions",
        &SCOPED_RESOURCE_SELECTOR_REQUIREMENT,
    )],
};

static SCOPED_RESOURCE_SELECTOR_REQUIREMENT: Msg = Msg {
    name: "ScopedResourceSelectorRequirement",
    fields: &[
        F::str(1, "scopeName").keep(),
        F::str(2, "operator").keep(),
        F::strs(3, "values"),
    ],
};

static RESOURCE_QUOTA_STATUS: Msg = Msg {
    name: "ResourceQuotaStatus",
    fields: &[
        F::map(1, "hard", MapValue::Quantity),
        F::map(2, "used", MapValue::Quantity),
    ],
};

// --- k8s.io/api rbac/v1/generated.proto ------------------------------------------
// Field numbers from kubernetes/kubernetes staging/src/k8s.io/api/rbac/v1/generated.proto
// at commit 081ac6b5a9004b7c6cfe6a8b8f83e60eca58a010.

static ROLE: Msg = Msg {
    name: "Role",
    fields: &[
        F::msg(1, "metadata", &OBJECT_META),
        F::msgs(2, "rules", &POLICY_RULE),
    ],
};

static CLUSTER_ROLE: Msg = Msg {
    name: "ClusterRole",
    fields: &[
        F::msg(1, "metadata", &OBJECT_META),
        F::msgs(2, "rules", &POLICY_RULE),
        F::msg(3, "aggregationRule", &AGGREGATION_RULE),
    ],
};

static AGGREGATION_RULE: Msg = Msg {
    name: "AggregationRule",
    fields: &[F::msgs(1, "clusterRoleSelectors", &LABEL_SELECTOR)],
};

static POLICY_RULE: Msg = Msg {
    name: "PolicyRule",
    fields: &[
        F::strs(1, "verbs"),
        F::strs(2, "apiGroups"),
        F::strs(3, "resources"),
        F::strs(4, "resourceNames"),
        F::strs(5, "nonResourceURLs"),
    ],
};

static ROLE_BINDING: Msg = Msg {
    name: "RoleBinding",
    fields: &[
        F::msg(1, "metadata", &OBJECT_META),
        F::msgs(2, "subjects", &SUBJECT),
        F::msg(3, "roleRef", &ROLE_REF),
    ],
};

static CLUSTER_ROLE_BINDING: Msg = Msg {
    name: "ClusterRoleBinding",
    fields: &[
        F::msg(1, "metadata", &OBJECT_META),
        F::msgs(2, "subjects", &SUBJECT),
        F::msg(3, "roleRef", &ROLE_REF),
    ],
};

static SUBJECT: Msg = Msg {
    name: "Subject",
    fields: &[
        F::str(1, "kind").keep(),
        F::str(2, "apiGroup"),
        F::str(3, "name").keep(),
        F::str(4, "namespace"),
    ],
};

static ROLE_REF: Msg = Msg {
    name: "RoleRef",
    fields: &[
        F::str(1, "apiGroup").keep(),
        F::str(2, "kind").keep(),
        F::str(3, "name").keep(),
    ],
};

// --- k8s.io/api authorization/v1/generated.proto ---------------------------------
// Field numbers from kubernetes/kubernetes staging/src/k8s.io/api/authorization/v1/generated.proto
// at commit 061200305a7b1c9aac1f8a9756879ea11c913b88 (includes the 1.31+ fieldSelector and
// labelSelector attributes).

static SELF_SUBJECT_ACCESS_REVIEW: Msg = Msg {
    name: "SelfSubjectAccessReview",
    fields: &[
        F::msg(1, "metadata", &OBJECT_META),
        F::msg(2, "spec", &SELF_SUBJECT_ACCESS_REVIEW_SPEC),
        F::msg(3, "status", &SUBJECT_ACCESS_REVIEW_STATUS),
    ],
};

static SELF_SUBJECT_ACCESS_REVIEW_SPEC: Msg = Msg {
    name: "SelfSubjectAccessReviewSpec",
    fields: &[
        F::msg(1, "resourceAttributes", &RESOURCE_ATTRIBUTES),
        F::msg(2, "nonResourceAttributes", &NON_RESOURCE_ATTRIBUTES),
    ],
};

/// SubjectAccessReview and LocalSubjectAccessReview share this layout.
static SUBJECT_ACCESS_REVIEW: Msg = Msg {
    name: "SubjectAccessReview",
    fields: &[
        F::msg(1, "metadata", &OBJECT_META),
        F::msg(2, "spec", &SUBJECT_ACCESS_REVIEW_SPEC),
        F::msg(3, "status", &SUBJECT_ACCESS_REVIEW_STATUS),
    ],
};

static SUBJECT_ACCESS_REVIEW_SPEC: Msg = Msg {
    name: "SubjectAccessReviewSpec",
    fields: &[
        F::msg(1, "resourceAttributes", &RESOURCE_ATTRIBUTES),
        F::msg(2, "nonResourceAttributes", &NON_RESOURCE_ATTRIBUTES),
        F::str(3, "user"),
        F::strs(4, "groups"),
        F::map(5, "extra", MapValue::Message(&AUTHZ_EXTRA_VALUE)),
        F::str(6, "uid"),
    ],
};

static AUTHZ_EXTRA_VALUE: Msg = Msg {
    name: "ExtraValue",
    fields: &[F::strs(1, "items")],
};

static RESOURCE_ATTRIBUTES: Msg = Msg {
    name: "ResourceAttributes",
    fields: &[
        F::str(1, "namespace"),
        F::str(2, "verb"),
        F::str(3, "group"),
        F::str(4, "version"),
        F::str(5, "resource"),
        F::str(6, "subresource"),
        F::str(7, "name"),
        F::msg(8, "fieldSelector", &FIELD_SELECTOR_ATTRIBUTES),
        F::msg(9, "labelSelector", &LABEL_SELECTOR_ATTRIBUTES),
    ],
};

static FIELD_SELECTOR_ATTRIBUTES: Msg = Msg {
    name: "FieldSelectorAttributes",
    fields: &[
        F::str(1, "rawSelector"),
        F::msgs(2, "requirements", &FIELD_SELECTOR_REQUIREMENT),
    ],
};

static FIELD_SELECTOR_REQUIREMENT: Msg = Msg {
    name: "FieldSelectorRequirement",
    fields: &[
        F::str(1, "key").keep(),
        F::str(2, "operator").keep(),
        F::strs(3, "values"),
    ],
};

static LABEL_SELECTOR_ATTRIBUTES: Msg = Msg {
    name: "LabelSelectorAttributes",
    fields: &[
        F::str(1, "rawSelector"),
        F::msgs(2, "requirements", &LABEL_SELECTOR_REQUIREMENT),
    ],
};

static NON_RESOURCE_ATTRIBUTES: Msg = Msg {
    name: "NonResourceAttributes",
    fields: &[F::str(1, "path"), F::str(2, "verb")],
};

static SUBJECT_ACCESS_REVIEW_STATUS: Msg = Msg {
    name: "SubjectAccessReviewStatus",
    fields: &[
        F::bool(1, "allowed").keep(),
        F::bool(4, "denied"),
        F::str(2, "reason"),
        F::str(3, "evaluationError"),
    ],
};

static SELF_SUBJECT_RULES_REVIEW: Msg = Msg {
    name: "SelfSubjectRulesReview",
    fields: &[
        F::msg(1, "metadata", &OBJECT_META),
        F::msg(2, "spec", &SELF_SUBJECT_RULES_REVIEW_SPEC),
        F::msg(3, "status", &SUBJECT_RULES_REVIEW_STATUS),
    ],
};

static SELF_SUBJECT_RULES_REVIEW_SPEC: Msg = Msg {
    name: "SelfSubjectRulesReviewSpec",
    fields: &[F::str(1, "namespace")],
};

static SUBJECT_RULES_REVIEW_STATUS: Msg = Msg {
    name: "SubjectRulesReviewStatus",
    fields: &[
        F::msgs(1, "resourceRules", &RESOURCE_RULE),
        F::msgs(2, "nonResourceRules", &NON_RESOURCE_RULE),
        F::bool(3, "incomplete").keep(),
        F::str(4, "evaluationError"),
    ],
};

static RESOURCE_RULE: Msg = Msg {
    name: "ResourceRule",
    fields: &[
        F::strs(1, "verbs"),
        F::strs(2, "apiGroups"),
        F::strs(3, "resources"),
        F::strs(4, "resourceNames"),
    ],
};

static NON_RESOURCE_RULE: Msg = Msg {
    name: "NonResourceRule",
    fields: &[F::strs(1, "verbs"), F::strs(2, "nonResourceURLs")],
};

// --- k8s.io/api authentication/v1/generated.proto --------------------------------
// UserInfo, ExtraValue, TokenReview and TokenRequest from linka-cloud/k8s
// authentication/v1/generated.proto at commit 09507adab1310a43869d4e68e30dad43903bef03
// (a generated copy of k8s.io/api authentication/v1). SelfSubjectReview {metadata=1,
// status=2} and SelfSubjectReviewStatus {userInfo=1} from kubernetes/kubernetes
// staging/src/k8s.io/api/authentication/v1beta1/generated.proto at commit
// 025f2834a128798cef30018a5e6a6ae82b5ad885 (v1 is the unchanged GA copy; no stored v1
// file had it), confirmed against bytes kubectl 1.37 sends for `kubectl auth whoami`.

static SELF_SUBJECT_REVIEW: Msg = Msg {
    name: "SelfSubjectReview",
    fields: &[
        F::msg(1, "metadata", &OBJECT_META),
        F::msg(2, "status", &SELF_SUBJECT_REVIEW_STATUS),
    ],
};

static SELF_SUBJECT_REVIEW_STATUS: Msg = Msg {
    name: "SelfSubjectReviewStatus",
    fields: &[F::msg(1, "userInfo", &USER_INFO)],
};

static USER_INFO: Msg = Msg {
    name: "UserInfo",
    fields: &[
        F::str(1, "username"),
        F::str(2, "uid"),
        F::strs(3, "groups"),
        F::map(4, "extra", MapValue::Message(&AUTHN_EXTRA_VALUE)),
    ],
};

static AUTHN_EXTRA_VALUE: Msg = Msg {
    name: "ExtraValue",
    fields: &[F::strs(1, "items")],
};

static TOKEN_REVIEW: Msg = Msg {
    name: "TokenReview",
    fields: &[
        F::msg(1, "metadata", &OBJECT_META),
        F::msg(2, "spec", &TOKEN_REVIEW_SPEC),
        F::msg(3, "status", &TOKEN_REVIEW_STATUS),
    ],
};

static TOKEN_REVIEW_SPEC: Msg = Msg {
    name: "TokenReviewSpec",
    fields: &[F::str(1, "token"), F::strs(2, "audiences")],
};

static TOKEN_REVIEW_STATUS: Msg = Msg {
    name: "TokenReviewStatus",
    fields: &[
        F::bool(1, "authenticated"),
        F::msg(2, "user", &USER_INFO),
        F::strs(4, "audiences"),
        F::str(3, "error"),
    ],
};

static TOKEN_REQUEST: Msg = Msg {
    name: "TokenRequest",
    fields: &[
        F::msg(1, "metadata", &OBJECT_META),
        F::msg(2, "spec", &TOKEN_REQUEST_SPEC),
        F::msg(3, "status", &TOKEN_REQUEST_STATUS),
    ],
};

static TOKEN_REQUEST_SPEC: Msg = Msg {
    name: "TokenRequestSpec",
    fields: &[
        F::strs(1, "audiences"),
        F::i64(4, "expirationSeconds").keep(),
        F::msg(3, "boundObjectRef", &BOUND_OBJECT_REFERENCE),
    ],
};

static BOUND_OBJECT_REFERENCE: Msg = Msg {
    name: "BoundObjectReference",
    fields: &[
        F::str(1, "kind"),
        F::str(2, "apiVersion"),
        F::str(3, "name"),
        F::str(4, "uid"),
    ],
};

static TOKEN_REQUEST_STATUS: Msg = Msg {
    name: "TokenRequestStatus",
    fields: &[F::str(1, "token").keep(), F::time(2, "expirationTimestamp")],
};

// --- k8s.io/api scheduling/v1/generated.proto ------------------------------------
// Field numbers from kubernetes/kubernetes staging/src/k8s.io/api/scheduling/v1/generated.proto
// at commit 01d0b7277d400d6aa9fc676abb4826700ec869fe (a 1.37-era tree).

static PRIORITY_CLASS: Msg = Msg {
    name: "PriorityClass",
    fields: &[
        F::msg(1, "metadata", &OBJECT_META),
        F::i32(2, "value").keep(),
        F::bool(3, "globalDefault"),
        F::str(4, "description"),
        F::str(5, "preemptionPolicy").keep(),
    ],
};

// --- k8s.io/api policy/v1/generated.proto ----------------------------------------
// Field numbers from spotmaxtech/k8s-api-v0260 (k8s.io/api v0.26.0 mirror)
// policy/v1/generated.proto at commit 30bf50b601aec4337432c2172e768a7ae31c43b8, the
// first stored version with unhealthyPodEvictionPolicy; fields 1-3 and the status
// also match kubernetes/kubernetes staging at 054d429d9f8bc8de4fc82e6cf2281e12a13fe1f2.

static POD_DISRUPTION_BUDGET: Msg = Msg {
    name: "PodDisruptionBudget",
    fields: &[
        F::msg(1, "metadata", &OBJECT_META),
        F::msg(2, "spec", &POD_DISRUPTION_BUDGET_SPEC),
        F::msg(3, "status", &POD_DISRUPTION_BUDGET_STATUS),
    ],
};

static POD_DISRUPTION_BUDGET_SPEC: Msg = Msg {
    name: "PodDisruptionBudgetSpec",
    fields: &[
        F::int_or_string(1, "minAvailable").keep(),
        F::msg(2, "selector", &LABEL_SELECTOR),
        F::int_or_string(3, "maxUnavailable").keep(),
        F::str(4, "unhealthyPodEvictionPolicy").keep(),
    ],
};

static POD_DISRUPTION_BUDGET_STATUS: Msg = Msg {
    name: "PodDisruptionBudgetStatus",
    fields: &[
        F::i64(1, "observedGeneration"),
        F::map(2, "disruptedPods", MapValue::Time),
        F::i32(3, "disruptionsAllowed").keep(),
        F::i32(4, "currentHealthy").keep(),
        F::i32(5, "desiredHealthy").keep(),
        F::i32(6, "expectedPods").keep(),
        F::msgs(7, "conditions", &CONDITION),
    ],
};

static EVICTION: Msg = Msg {
    name: "Eviction",
    fields: &[
        F::msg(1, "metadata", &OBJECT_META),
        F::msg(2, "deleteOptions", &DELETE_OPTIONS),
    ],
};

/// Every (apiVersion, kind) this module decodes, with its message table.
static KINDS: &[(&str, &str, &Msg)] = &[
    ("v1", "Namespace", &NAMESPACE),
    ("v1", "ConfigMap", &CONFIG_MAP),
    ("v1", "Secret", &SECRET),
    ("v1", "ServiceAccount", &SERVICE_ACCOUNT),
    ("v1", "Service", &SERVICE),
    ("v1", "ResourceQuota", &RESOURCE_QUOTA),
    ("rbac.authorization.k8s.io/v1", "Role", &ROLE),
    ("rbac.authorization.k8s.io/v1", "ClusterRole", &CLUSTER_ROLE),
    ("rbac.authorization.k8s.io/v1", "RoleBinding", &ROLE_BINDING),
    (
        "rbac.authorization.k8s.io/v1",
        "ClusterRoleBinding",
        &CLUSTER_ROLE_BINDING,
    ),
    (
        "authorization.k8s.io/v1",
        "SelfSubjectAccessReview",
        &SELF_SUBJECT_ACCESS_REVIEW,
    ),
    (
        "authorization.k8s.io/v1",
        "SubjectAccessReview",
        &SUBJECT_ACCESS_REVIEW,
    ),
    (
        "authorization.k8s.io/v1",
        "LocalSubjectAccessReview",
        &SUBJECT_ACCESS_REVIEW,
    ),
    (
        "authorization.k8s.io/v1",
        "SelfSubjectRulesReview",
        &SELF_SUBJECT_RULES_REVIEW,
    ),
    (
        "authentication.k8s.io/v1",
        "SelfSubjectReview",
        &SELF_SUBJECT_REVIEW,
    ),
    ("authentication.k8s.io/v1", "TokenReview", &TOKEN_REVIEW),
    ("authentication.k8s.io/v1", "TokenRequest", &TOKEN_REQUEST),
    ("scheduling.k8s.io/v1", "PriorityClass", &PRIORITY_CLASS),
    ("policy/v1", "PodDisruptionBudget", &POD_DISRUPTION_BUDGET),
    ("policy/v1", "Eviction", &EVICTION),
];

// ---------------------------------------------------------------------------
// Table-driven decoding
// ---------------------------------------------------------------------------

fn decode_message(desc: &Msg, bytes: &[u8]) -> Result<Map<String, Value>, DecodeError> {
    let mut out = Map::new();
    let mut reader = Reader::new(bytes);
    while let Some((number, value)) = reader.next_field().map_err(|e| e.in_message(desc.name))? {
        // Fields this table does not know (newer API fields) are skipped, as Go does.
        let Some(field) = desc.field(number) else {
            continue;
        };
        decode_field(field, value, &mut out).map_err(|e| e.within(field.json))?;
    }
    Ok(out)
}

fn decode_field(
    field: &F,
    value: Wire<'_>,
    out: &mut Map<String, Value>,
) -> Result<(), DecodeError> {
    if let Ty::Map(value_ty) = field.ty {
        let (key, val) = decode_map_entry(value_ty, value.bytes()?)?;
        match out.get_mut(field.json) {
            Some(Value::Object(map)) => {
                map.insert(key, val);
            }
            _ => {
                out.insert(
                    field.json.to_string(),
                    Value::Object(Map::from_iter([(key, val)])),
                );
            }
        }
        return Ok(());
    }
    if field.rule == Rule::Repeated {
        let mut items = match out.remove(field.json) {
            Some(Value::Array(items)) => items,
            _ => Vec::new(),
        };
        match (field.ty, value) {
            // Packed encoding of a repeated scalar (not written by Kubernetes' gogo
            // marshaller, but valid protobuf).
            (Ty::Int32 | Ty::Int64 | Ty::Bool, Wire::Len(bytes)) => {
                let mut packed = Reader::new(bytes);
                while packed.pos < bytes.len() {
                    let v = Wire::Varint(packed.varint()?);
                    items.push(decode_scalar(field.ty, v)?.unwrap_or(Value::Null));
                }
            }
            _ => items.push(decode_scalar(field.ty, value)?.unwrap_or(Value::Null)),
        }
        if !items.is_empty() {
            out.insert(field.json.to_string(), Value::Array(items));
        }
        return Ok(());
    }
    if let Ty::Message(msg) = field.ty {
        // A message field sent twice is merged, as protobuf specifies.
        let decoded = decode_message(msg, value.bytes()?)?;
        match out.get_mut(field.json) {
            Some(Value::Object(existing)) => existing.extend(decoded),
            _ => {
                out.insert(field.json.to_string(), Value::Object(decoded));
            }
        }
        return Ok(());
    }
    // Singular scalar: the last occurrence wins.
    match decode_scalar(field.ty, value)? {
        Some(v) if field.rule == Rule::Keep || !is_zero(&v) => {
            out.insert(field.json.to_string(), v);
        }
        _ => {
            out.remove(field.json);
        }
    }
    Ok(())
}

/// Whether a JSON value is the zero value Go's `omitempty` drops.
fn is_zero(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_i64() == Some(0) || n.as_u64() == Some(0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

/// Decodes one non-map, non-message value. `None` means "no JSON value" (a zero Time).
fn decode_scalar(ty: Ty, value: Wire<'_>) -> Result<Option<Value>, DecodeError> {
    Ok(Some(match ty {
        Ty::String => Value::String(value.string()?),
        // int32 values are sign-extended to 64 bits on the wire; truncation recovers them.
        Ty::Int32 => Value::from(value.varint()? as i32),
        Ty::Int64 => Value::from(value.varint()? as i64),
        Ty::Bool => Value::Bool(value.varint()? != 0),
        Ty::Message(msg) => Value::Object(decode_message(msg, value.bytes()?)?),
        Ty::Time => return decode_time(value.bytes()?),
        Ty::IntOrString => decode_int_or_string(value.bytes()?)?,
        Ty::FieldsV1 => decode_fields_v1(value.bytes()?)?,
        Ty::Map(_) => unreachable!("maps are decoded entry by entry"),
    }))
}

/// A map entry message {key=1, value=2}.
fn decode_map_entry(value_ty: MapValue, bytes: &[u8]) -> Result<(String, Value), DecodeError> {
    let mut key = String::new();
    let mut val: Option<Wire<'_>> = None;
    let mut reader = Reader::new(bytes);
    while let Some((number, value)) = reader.next_field()? {
        match number {
            1 => key = value.string()?,
            2 => val = Some(value),
            _ => {}
        }
    }
    // An absent value is the type's default (an empty string or message).
    let val = val.unwrap_or(Wire::Len(&[]));
    let json = match value_ty {
        MapValue::String => Value::String(val.string()?),
        MapValue::Bytes => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(val.bytes()?))
        }
        MapValue::Quantity => decode_quantity(val.bytes()?)?,
        MapValue::Time => decode_time(val.bytes()?)?.unwrap_or(Value::Null),
        MapValue::Message(msg) => Value::Object(decode_message(msg, val.bytes()?)?),
    };
    Ok((key, json))
}

/// metav1.Time {seconds=1 int64, nanos=2 int32} → `2006-01-02T15:04:05Z`, as
/// metav1.Time's MarshalJSON writes it (UTC, whole seconds). Go writes a zero time
/// as an empty message, and JSON would say `null`; that is `None` here.
fn decode_time(bytes: &[u8]) -> Result<Option<Value>, DecodeError> {
    /// time.Time{}.Unix(): the zero Go time, 0001-01-01T00:00:00Z.
    const GO_ZERO_TIME_SECONDS: i64 = -62_135_596_800;
    if bytes.is_empty() {
        return Ok(None);
    }
    let mut seconds: i64 = 0;
    let mut nanos: i32 = 0;
    let mut reader = Reader::new(bytes);
    while let Some((number, value)) = reader.next_field()? {
        match number {
            1 => seconds = value.varint()? as i64,
            2 => nanos = value.varint()? as i32,
            _ => {}
        }
    }
    if seconds == GO_ZERO_TIME_SECONDS && nanos == 0 {
        return Ok(None);
    }
    let timestamp = jiff::Timestamp::from_second(seconds)
        .map_err(|e| DecodeError::malformed(format!("timestamp {seconds} is out of range: {e}")))?;
    Ok(Some(Value::String(
        timestamp.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
    )))
}

/// intstr.IntOrString {type=1 (0 int, 1 string), intVal=2, strVal=3}.
fn decode_int_or_string(bytes: &[u8]) -> Result<Value, DecodeError> {
    let mut kind: u64 = 0;
    let mut int_val: i32 = 0;
    let mut str_val = String::new();
    let mut reader = Reader::new(bytes);
    while let Some((number, value)) = reader.next_field()? {
        match number {
            1 => kind = value.varint()?,
            2 => int_val = value.varint()? as i32,
            3 => str_val = value.string()?,
            _ => {}
        }
    }
    match kind {
        0 => Ok(Value::from(int_val)),
        1 => Ok(Value::String(str_val)),
        other => Err(DecodeError::malformed(format!(
            "IntOrString type {other} is neither 0 (int) nor 1 (string)"
        ))),
    }
}

/// resource.Quantity {string=1}.
fn decode_quantity(bytes: &[u8]) -> Result<Value, DecodeError> {
    let mut quantity = String::new();
    let mut reader = Reader::new(bytes);
    while let Some((number, value)) = reader.next_field()? {
        if number == 1 {
            quantity = value.string()?;
        }
    }
    Ok(Value::String(quantity))
}

/// metav1.FieldsV1 {Raw=1}: the raw bytes are the JSON form.
fn decode_fields_v1(bytes: &[u8]) -> Result<Value, DecodeError> {
    let mut raw: &[u8] = &[];
    let mut reader = Reader::new(bytes);
    while let Some((number, value)) = reader.next_field()? {
        if number == 1 {
            raw = value.bytes()?;
        }
    }
    if raw.is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    serde_json::from_slice(raw)
        .map_err(|e| DecodeError::malformed(format!("fieldsV1 is not JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A tiny protobuf encoder, for hand-built test bodies.
    #[derive(Default)]
    struct Enc(Vec<u8>);

    fn e() -> Enc {
        Enc::default()
    }

    impl Enc {
        fn raw_varint(&mut self, mut v: u64) {
            while v >= 0x80 {
                self.0.push((v as u8) | 0x80);
                v >>= 7;
            }
            self.0.push(v as u8);
        }
        fn key(&mut self, field: u32, wire_type: u8) {
            self.raw_varint((u64::from(field) << 3) | u64::from(wire_type));
        }
        fn uint(mut self, field: u32, v: u64) -> Self {
            self.key(field, 0);
            self.raw_varint(v);
            self
        }
        /// int32 and int64 alike: negative values are sign-extended to ten bytes.
        fn int(self, field: u32, v: i64) -> Self {
            self.uint(field, v as u64)
        }
        fn bytes(mut self, field: u32, b: &[u8]) -> Self {
            self.key(field, 2);
            self.raw_varint(b.len() as u64);
            self.0.extend_from_slice(b);
            self
        }
        fn str(self, field: u32, s: &str) -> Self {
            self.bytes(field, s.as_bytes())
        }
        fn msg(self, field: u32, m: Enc) -> Self {
            self.bytes(field, &m.0)
        }
        /// A `map<string, string>` entry.
        fn entry(self, field: u32, k: &str, v: &str) -> Self {
            self.msg(field, e().str(1, k).str(2, v))
        }
        fn fixed64(mut self, field: u32, v: u64) -> Self {
            self.key(field, 1);
            self.0.extend_from_slice(&v.to_le_bytes());
            self
        }
        fn fixed32(mut self, field: u32, v: u32) -> Self {
            self.key(field, 5);
            self.0.extend_from_slice(&v.to_le_bytes());
            self
        }
    }

    /// The `k8s\0` + runtime.Unknown envelope around an object.
    fn envelope(api_version: &str, kind: &str, raw: Enc) -> Vec<u8> {
        let unknown = e()
            .msg(1, e().str(1, api_version).str(2, kind))
            .msg(2, raw)
            .str(3, "")
            .str(4, "");
        [MAGIC.as_slice(), &unknown.0].concat()
    }

    /// ObjectMeta with only a name, written as Go writes it (empty strings and
    /// zeros included, creationTimestamp as an empty message).
    fn meta(name: &str) -> Enc {
        e().str(1, name)
            .str(2, "")
            .str(3, "")
            .str(4, "")
            .str(5, "")
            .str(6, "")
            .uint(7, 0)
            .msg(8, e())
    }

    #[test]
    fn self_subject_access_review() {
        let body = envelope(
            "authorization.k8s.io/v1",
            "SelfSubjectAccessReview",
            e().msg(1, meta(""))
                .msg(
                    2,
                    e().msg(
                        1,
                        e().str(1, "team-a")
                            .str(2, "list")
                            .str(3, "apps")
                            .str(4, "")
                            .str(5, "deployments")
                            .str(6, "")
                            .str(7, "")
                            .msg(
                                8,
                                e().str(1, "").msg(
                                    2,
                                    e().str(1, "spec.nodeName")
                                        .str(2, "In")
                                        .str(3, "node-1")
                                        .str(3, "node-2"),
                                ),
                            )
                            .msg(9, e().str(1, "app=web")),
                    ),
                )
                .msg(3, e().uint(1, 0).str(2, "").str(3, "").uint(4, 0)),
        );
        assert_eq!(
            decode(&body).unwrap(),
            json!({
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SelfSubjectAccessReview",
                "metadata": {},
                "spec": {"resourceAttributes": {
                    "namespace": "team-a",
                    "verb": "list",
                    "group": "apps",
                    "resource": "deployments",
                    "fieldSelector": {"requirements": [
                        {"key": "spec.nodeName", "operator": "In", "values": ["node-1", "node-2"]}
                    ]},
                    "labelSelector": {"rawSelector": "app=web"}
                }},
                "status": {"allowed": false}
            })
        );
    }

    #[test]
    fn namespace_with_labels() {
        let body = envelope(
            "v1",
            "Namespace",
            e().msg(
                1,
                e().str(1, "team-a")
                    .uint(7, 0)
                    .msg(8, e().int(1, 1_700_000_000).int(2, 500))
                    .int(10, 0)
                    .entry(11, "env", "prod")
                    .entry(11, "team", "a")
                    .entry(12, "note", "")
                    .msg(
                        13,
                        e().str(1, "Tenant")
                            .str(3, "acme")
                            .str(4, "1234")
                            .str(5, "example.com/v1")
                            .uint(6, 1)
                            .uint(7, 0),
                    )
                    .str(14, "example.com/cleanup"),
            )
            .msg(2, e().str(1, "kubernetes"))
            .msg(3, e().str(1, "Active")),
        );
        assert_eq!(
            decode(&body).unwrap(),
            json!({
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {
                    "name": "team-a",
                    "creationTimestamp": "2023-11-14T22:13:20Z",
                    "deletionGracePeriodSeconds": 0,
                    "labels": {"env": "prod", "team": "a"},
                    "annotations": {"note": ""},
                    "ownerReferences": [{
                        "apiVersion": "example.com/v1",
                        "kind": "Tenant",
                        "name": "acme",
                        "uid": "1234",
                        "controller": true,
                        "blockOwnerDeletion": false
                    }],
                    "finalizers": ["example.com/cleanup"]
                },
                "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"}
            })
        );
    }

    #[test]
    fn config_map_with_data() {
        let body = envelope(
            "v1",
            "ConfigMap",
            e().msg(1, meta("settings").str(3, "default"))
                .entry(2, "a", "1")
                .entry(2, "b.txt", "line one\nline two\n")
                .msg(3, e().str(1, "blob").bytes(2, &[0x00, 0xff, 0x10]))
                .uint(4, 0),
        );
        assert_eq!(
            decode(&body).unwrap(),
            json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "settings", "namespace": "default"},
                "data": {"a": "1", "b.txt": "line one\nline two\n"},
                "binaryData": {"blob": "AP8Q"},
                "immutable": false
            })
        );
    }

    #[test]
    fn role_binding_with_subjects() {
        let body = envelope(
            "rbac.authorization.k8s.io/v1",
            "RoleBinding",
            e().msg(1, meta("readers").str(3, "team-a"))
                .msg(
                    2,
                    e().str(1, "User")
                        .str(2, "rbac.authorization.k8s.io")
                        .str(3, "alice")
                        .str(4, ""),
                )
                .msg(
                    2,
                    e().str(1, "ServiceAccount")
                        .str(2, "")
                        .str(3, "builder")
                        .str(4, "ci"),
                )
                .msg(
                    3,
                    e().str(1, "rbac.authorization.k8s.io")
                        .str(2, "ClusterRole")
                        .str(3, "view"),
                ),
        );
        assert_eq!(
            decode(&body).unwrap(),
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": "readers", "namespace": "team-a"},
                "subjects": [
                    {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice"},
                    {"kind": "ServiceAccount", "name": "builder", "namespace": "ci"}
                ],
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"}
            })
        );
    }

    #[test]
    fn service_with_named_target_port() {
        let port = |name: &str, port: i64, target: Enc| {
            e().str(1, name)
                .str(2, "TCP")
                .int(3, port)
                .msg(4, target)
                .uint(5, 0)
        };
        let body = envelope(
            "v1",
            "Service",
            e().msg(1, meta("web"))
                .msg(
                    2,
                    e().msg(
                        1,
                        port("http", 80, e().uint(1, 1).uint(2, 0).str(3, "http"))
                            .str(6, "kubernetes.io/h2c"),
                    )
                    // A zero targetPort (Go's IntOrString zero value) means "same as port".
                    .msg(
                        1,
                        port("metrics", 9090, e().uint(1, 0).uint(2, 0).str(3, "")),
                    )
                    .entry(2, "app", "web")
                    .str(3, "10.96.0.10")
                    .str(18, "10.96.0.10")
                    .str(4, "ClusterIP")
                    .str(7, "ClientIP")
                    .str(8, "")
                    .str(10, "")
                    .str(11, "")
                    .int(12, 0)
                    .uint(13, 0)
                    .msg(14, e().msg(1, e().int(1, 10800)))
                    .str(19, "IPv4")
                    .str(17, "SingleStack")
                    .str(22, "Cluster"),
                )
                .msg(3, e().msg(1, e())),
        );
        assert_eq!(
            decode(&body).unwrap(),
            json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "web"},
                "spec": {
                    "ports": [
                        {"name": "http", "protocol": "TCP", "appProtocol": "kubernetes.io/h2c", "port": 80, "targetPort": "http"},
                        {"name": "metrics", "protocol": "TCP", "port": 9090}
                    ],
                    "selector": {"app": "web"},
                    "clusterIP": "10.96.0.10",
                    "clusterIPs": ["10.96.0.10"],
                    "type": "ClusterIP",
                    "sessionAffinity": "ClientIP",
                    "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 10800}},
                    "ipFamilies": ["IPv4"],
                    "ipFamilyPolicy": "SingleStack",
                    "internalTrafficPolicy": "Cluster"
                },
                "status": {"loadBalancer": {}}
            })
        );
    }

    #[test]
    fn subject_access_review_with_extra() {
        let spec = e()
            .msg(2, e().str(1, "/healthz").str(2, "get"))
            .str(3, "alice")
            .str(4, "devs")
            .str(4, "system:authenticated")
            .msg(
                5,
                e().str(1, "scopes")
                    .msg(2, e().str(1, "read").str(1, "write")),
            )
            .str(6, "uid-1");
        for kind in ["SubjectAccessReview", "LocalSubjectAccessReview"] {
            let body = envelope(
                "authorization.k8s.io/v1",
                kind,
                e().msg(1, meta("")).msg(2, spec_clone(&spec)),
            );
            assert_eq!(
                decode(&body).unwrap(),
                json!({
                    "apiVersion": "authorization.k8s.io/v1",
                    "kind": kind,
                    "metadata": {},
                    "spec": {
                        "nonResourceAttributes": {"path": "/healthz", "verb": "get"},
                        "user": "alice",
                        "groups": ["devs", "system:authenticated"],
                        "extra": {"scopes": {"items": ["read", "write"]}},
                        "uid": "uid-1"
                    }
                })
            );
        }
    }

    fn spec_clone(enc: &Enc) -> Enc {
        Enc(enc.0.clone())
    }

    #[test]
    fn pod_disruption_budget_keeps_pointer_zero() {
        let body = envelope(
            "policy/v1",
            "PodDisruptionBudget",
            e().msg(1, meta("pdb"))
                .msg(
                    2,
                    e().msg(2, e().msg(2, e().str(1, "tier").str(2, "In").str(3, "web")))
                        .msg(3, e().uint(1, 0).uint(2, 0).str(3, ""))
                        .str(4, "AlwaysAllow"),
                )
                .msg(3, e().int(1, 0).uint(3, 0).uint(4, 0).uint(5, 0).uint(6, 0)),
        );
        assert_eq!(
            decode(&body).unwrap(),
            json!({
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "metadata": {"name": "pdb"},
                "spec": {
                    "selector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["web"]}]},
                    "maxUnavailable": 0,
                    "unhealthyPodEvictionPolicy": "AlwaysAllow"
                },
                "status": {"disruptionsAllowed": 0, "currentHealthy": 0, "desiredHealthy": 0, "expectedPods": 0}
            })
        );
    }

    #[test]
    fn resource_quota_with_scope_selector() {
        let body = envelope(
            "v1",
            "ResourceQuota",
            e().msg(1, meta("q"))
                .msg(
                    2,
                    e().msg(1, e().str(1, "requests.cpu").msg(2, e().str(1, "500m")))
                        .msg(1, e().str(1, "pods").msg(2, e().str(1, "10")))
                        .msg(
                            3,
                            e().msg(1, e().str(1, "PriorityClass").str(2, "In").str(3, "high")),
                        ),
                )
                .msg(3, e()),
        );
        assert_eq!(
            decode(&body).unwrap(),
            json!({
                "apiVersion": "v1",
                "kind": "ResourceQuota",
                "metadata": {"name": "q"},
                "spec": {
                    "hard": {"requests.cpu": "500m", "pods": "10"},
                    "scopeSelector": {"matchExpressions": [{"scopeName": "PriorityClass", "operator": "In", "values": ["high"]}]}
                },
                "status": {}
            })
        );
    }

    #[test]
    fn service_account_secret_and_managed_fields() {
        let body = envelope(
            "v1",
            "ServiceAccount",
            e().msg(
                1,
                meta("builder").msg(
                    17,
                    e().str(1, "kubectl")
                        .str(2, "Update")
                        .str(3, "v1")
                        .msg(4, e().int(1, 86_400))
                        .str(6, "FieldsV1")
                        .msg(7, e().bytes(1, br#"{"f:automountServiceAccountToken":{}}"#))
                        .str(8, ""),
                ),
            )
            .msg(2, e().str(1, "Secret").str(3, "builder-token"))
            .msg(3, e().str(1, "registry"))
            .uint(4, 0),
        );
        assert_eq!(
            decode(&body).unwrap(),
            json!({
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {
                    "name": "builder",
                    "managedFields": [{
                        "manager": "kubectl",
                        "operation": "Update",
                        "apiVersion": "v1",
                        "time": "1970-01-02T00:00:00Z",
                        "fieldsType": "FieldsV1",
                        "fieldsV1": {"f:automountServiceAccountToken": {}}
                    }]
                },
                "secrets": [{"kind": "Secret", "name": "builder-token"}],
                "imagePullSecrets": [{"name": "registry"}],
                "automountServiceAccountToken": false
            })
        );
    }

    #[test]
    fn secret_data_and_string_data() {
        let body = envelope(
            "v1",
            "Secret",
            e().msg(1, meta("creds"))
                .msg(2, e().str(1, "password").bytes(2, b"hunter2"))
                .entry(4, "user", "admin")
                .str(3, "Opaque")
                .uint(5, 1),
        );
        assert_eq!(
            decode(&body).unwrap(),
            json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "creds"},
                "data": {"password": "aHVudGVyMg=="},
                "stringData": {"user": "admin"},
                "type": "Opaque",
                "immutable": true
            })
        );
    }

    #[test]
    fn eviction_with_delete_options() {
        let body = envelope(
            "policy/v1",
            "Eviction",
            e().msg(1, meta("web-0").str(3, "default")).msg(
                2,
                e().int(1, 0)
                    .msg(2, e().str(1, "pod-uid"))
                    .str(4, "Foreground")
                    .str(5, "All"),
            ),
        );
        assert_eq!(
            decode(&body).unwrap(),
            json!({
                "apiVersion": "policy/v1",
                "kind": "Eviction",
                "metadata": {"name": "web-0", "namespace": "default"},
                "deleteOptions": {
                    "gracePeriodSeconds": 0,
                    "preconditions": {"uid": "pod-uid"},
                    "propagationPolicy": "Foreground",
                    "dryRun": ["All"]
                }
            })
        );
    }

    #[test]
    fn negative_ints_and_unknown_fields() {
        let body = envelope(
            "scheduling.k8s.io/v1",
            "PriorityClass",
            e().msg(1, meta("low").str(99, "from a newer API"))
                .int(2, -5)
                .uint(3, 0)
                .str(4, "")
                .fixed64(40, u64::MAX)
                .fixed32(41, 7)
                .uint(42, 3)
                .str(43, "ignored"),
        );
        assert_eq!(
            decode(&body).unwrap(),
            json!({
                "apiVersion": "scheduling.k8s.io/v1",
                "kind": "PriorityClass",
                "metadata": {"name": "low"},
                "value": -5
            })
        );
    }

    #[test]
    fn token_review_and_whoami_user_info() {
        let body = envelope(
            "authentication.k8s.io/v1",
            "TokenReview",
            e().msg(1, meta(""))
                .msg(2, e().str(1, "abc").str(2, "api"))
                .msg(
                    3,
                    e().uint(1, 1)
                        .msg(
                            2,
                            e().str(1, "alice")
                                .str(2, "u-1")
                                .str(3, "devs")
                                .msg(4, e().str(1, "k").msg(2, e().str(1, "v"))),
                        )
                        .str(3, ""),
                ),
        );
        assert_eq!(
            decode(&body).unwrap(),
            json!({
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenReview",
                "metadata": {},
                "spec": {"token": "abc", "audiences": ["api"]},
                "status": {
                    "authenticated": true,
                    "user": {"username": "alice", "uid": "u-1", "groups": ["devs"], "extra": {"k": {"items": ["v"]}}}
                }
            })
        );
    }

    #[test]
    fn times() {
        let time = |enc: Enc| decode_time(&enc.0).unwrap();
        assert_eq!(time(e()), None);
        assert_eq!(time(e().int(1, -62_135_596_800)), None);
        assert_eq!(
            time(e().int(1, 0).int(2, 0)),
            Some(json!("1970-01-01T00:00:00Z"))
        );
        assert_eq!(
            time(e().int(1, 951_782_400).int(2, 999_999_999)),
            Some(json!("2000-02-29T00:00:00Z"))
        );
        assert_eq!(
            time(e().int(1, -86_400)),
            Some(json!("1969-12-31T00:00:00Z"))
        );
        assert!(decode_time(&e().int(1, i64::MAX).0).is_err());
    }

    #[test]
    fn rejects_a_body_without_the_magic() {
        let err = decode(br#"{"kind":"Namespace"}"#).unwrap_err();
        assert!(matches!(err, DecodeError::MissingMagic));
        assert_eq!(err.status_code(), 400);
        assert!(decode(b"").is_err());
    }

    #[test]
    fn unsupported_kind_names_the_kind_and_suggests_json() {
        let body = envelope("apps/v1", "Deployment", e().msg(1, meta("web")));
        let err = decode(&body).unwrap_err();
        assert_eq!(err.status_code(), 415);
        assert_eq!(
            err.to_string(),
            "Deployment (apps/v1) is not supported as protobuf by kube-sim; send it as JSON (Content-Type: application/json)"
        );
    }

    #[test]
    fn rejects_encoded_or_non_protobuf_payloads() {
        let unknown = |encoding: &str, content_type: &str| {
            let unknown = e()
                .msg(1, e().str(1, "v1").str(2, "Namespace"))
                .msg(2, e().msg(1, meta("n")))
                .str(3, encoding)
                .str(4, content_type);
            [MAGIC.as_slice(), &unknown.0].concat()
        };
        let err = decode(&unknown("gzip", "")).unwrap_err();
        assert!(matches!(err, DecodeError::UnsupportedContentEncoding(ref enc) if enc == "gzip"));
        assert_eq!(err.status_code(), 415);
        let err = decode(&unknown("", "application/json")).unwrap_err();
        assert!(matches!(err, DecodeError::UnsupportedContentType(_)));
        assert!(decode(&unknown("", "application/vnd.kubernetes.protobuf")).is_ok());

        let no_type = [MAGIC.as_slice(), &e().msg(2, e()).0].concat();
        assert!(matches!(
            decode(&no_type).unwrap_err(),
            DecodeError::MissingTypeMeta
        ));
    }

    #[test]
    fn malformed_bodies_say_where() {
        // A ServiceSpec whose port message is cut short.
        let mut spec = e().msg(1, e().str(1, "http").int(3, 80)).0;
        spec.truncate(spec.len() - 1);
        let body = envelope("v1", "Service", e().msg(1, meta("web")).bytes(2, &spec));
        let err = decode(&body).unwrap_err();
        assert_eq!(err.status_code(), 400);
        let DecodeError::Malformed { at, .. } = &err else {
            panic!("unexpected error {err:?}")
        };
        assert_eq!(at, "Service.spec");

        let body = envelope("v1", "ConfigMap", e().msg(2, e().str(1, "k").uint(2, 3)));
        let err = decode(&body).unwrap_err();
        assert_eq!(
            err.to_string(),
            "malformed protobuf body at ConfigMap.data: expected a length-delimited field"
        );

        let body = envelope(
            "v1",
            "Service",
            e().msg(2, e().msg(1, e().msg(4, e().uint(1, 7)))),
        );
        let err = decode(&body).unwrap_err();
        assert!(err.to_string().starts_with(
            "malformed protobuf body at Service.spec.ports.targetPort: IntOrString type 7"
        ));

        let truncated = &envelope("v1", "Namespace", e().msg(1, meta("n")))[..10];
        assert!(matches!(
            decode(truncated).unwrap_err(),
            DecodeError::Malformed { .. }
        ));
    }

    /// Bodies captured from kubectl v1.37.1 (see tests/fixtures/protobuf), decoded
    /// to what the same command sends with `--dry-run=client -o json`.
    fn fixture(bytes: &[u8], expected: Value) {
        assert_eq!(decode(bytes).unwrap(), expected);
    }

    #[test]
    fn kubectl_auth_can_i_get_pods() {
        fixture(
            include_bytes!("../tests/fixtures/protobuf/auth_can_i_get_pods.pb"),
            json!({
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SelfSubjectAccessReview",
                "metadata": {},
                "spec": {"resourceAttributes": {"namespace": "x", "verb": "get", "resource": "pods"}},
                "status": {"allowed": false}
            }),
        );
    }

    #[test]
    fn kubectl_create_namespace() {
        fixture(
            include_bytes!("../tests/fixtures/protobuf/create_namespace.pb"),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"}, "spec": {}, "status": {}}),
        );
    }

    #[test]
    fn kubectl_create_configmap() {
        fixture(
            include_bytes!("../tests/fixtures/protobuf/create_configmap.pb"),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "b"}}),
        );
    }

    #[test]
    fn kubectl_create_rolebinding() {
        fixture(
            include_bytes!("../tests/fixtures/protobuf/create_rolebinding.pb"),
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": "rb"},
                "subjects": [{"kind": "ServiceAccount", "name": "sa", "namespace": "ns"}],
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"}
            }),
        );
    }

    #[test]
    fn kubectl_create_service_clusterip() {
        fixture(
            include_bytes!("../tests/fixtures/protobuf/create_service_clusterip.pb"),
            json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "s", "labels": {"app": "s"}},
                "spec": {
                    "ports": [{"name": "80-8080", "protocol": "TCP", "port": 80, "targetPort": 8080}],
                    "selector": {"app": "s"},
                    "type": "ClusterIP"
                },
                "status": {"loadBalancer": {}}
            }),
        );
    }

    #[test]
    fn kubectl_auth_variants() {
        let ssar = |spec: Value| {
            json!({
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SelfSubjectAccessReview",
                "metadata": {},
                "spec": spec,
                "status": {"allowed": false}
            })
        };
        // `kubectl auth can-i list pods/log --subresource=log -n x`: kubectl reads
        // pods/log as TYPE/NAME.
        fixture(
            include_bytes!("../tests/fixtures/protobuf/auth_can_i_subresource.pb"),
            ssar(json!({"resourceAttributes": {
                "namespace": "x", "verb": "list", "resource": "pods", "subresource": "log", "name": "log"
            }})),
        );
        fixture(
            include_bytes!("../tests/fixtures/protobuf/auth_can_i_non_resource_url.pb"),
            ssar(json!({"nonResourceAttributes": {"path": "/logs", "verb": "get"}})),
        );
        // `kubectl auth can-i create deployments.apps -n x --as=bob` (impersonation
        // travels in headers; with no discovery the resource stays unsplit).
        fixture(
            include_bytes!("../tests/fixtures/protobuf/auth_can_i_impersonated.pb"),
            ssar(
                json!({"resourceAttributes": {"namespace": "x", "verb": "create", "resource": "deployments.apps"}}),
            ),
        );
        fixture(
            include_bytes!("../tests/fixtures/protobuf/auth_can_i_list.pb"),
            json!({
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SelfSubjectRulesReview",
                "metadata": {},
                "spec": {"namespace": "x"},
                "status": {"incomplete": false}
            }),
        );
        fixture(
            include_bytes!("../tests/fixtures/protobuf/auth_whoami.pb"),
            json!({
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "SelfSubjectReview",
                "metadata": {},
                "status": {"userInfo": {}}
            }),
        );
        // `kubectl create token sa --audience=aud1 --duration=10m --bound-object-kind=Secret --bound-object-name=s1`
        fixture(
            include_bytes!("../tests/fixtures/protobuf/create_token.pb"),
            json!({
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "metadata": {},
                "spec": {
                    "audiences": ["aud1"],
                    "expirationSeconds": 600,
                    "boundObjectRef": {"kind": "Secret", "apiVersion": "v1", "name": "s1"}
                },
                "status": {"token": ""}
            }),
        );
    }

    #[test]
    fn kubectl_create_core_kinds() {
        fixture(
            include_bytes!("../tests/fixtures/protobuf/create_configmap_binary.pb"),
            json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "c2"},
                "data": {"x": "y"},
                "binaryData": {"bin": "YQD/AQ=="}
            }),
        );
        fixture(
            include_bytes!("../tests/fixtures/protobuf/create_secret_generic.pb"),
            json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "sec"},
                "data": {"k": "dg=="},
                "type": "Opaque"
            }),
        );
        fixture(
            include_bytes!("../tests/fixtures/protobuf/create_secret_docker_registry.pb"),
            json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "d"},
                "data": {".dockerconfigjson": "eyJhdXRocyI6eyJyLmlvIjp7InVzZXJuYW1lIjoidSIsInBhc3N3b3JkIjoicCIsImF1dGgiOiJkVHB3In19fQ=="},
                "type": "kubernetes.io/dockerconfigjson"
            }),
        );
        fixture(
            include_bytes!("../tests/fixtures/protobuf/create_serviceaccount.pb"),
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "sa"}}),
        );
        fixture(
            include_bytes!("../tests/fixtures/protobuf/create_quota.pb"),
            json!({
                "apiVersion": "v1",
                "kind": "ResourceQuota",
                "metadata": {"name": "q"},
                "spec": {"hard": {"cpu": "1", "memory": "1G", "pods": "2"}, "scopes": ["BestEffort"]},
                "status": {}
            }),
        );
        let service = |name: &str, spec: Value| {
            json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "labels": {"app": name}},
                "spec": spec,
                "status": {"loadBalancer": {}}
            })
        };
        fixture(
            include_bytes!("../tests/fixtures/protobuf/create_service_nodeport.pb"),
            service(
                "np",
                json!({
                    "ports": [{"name": "80-http", "protocol": "TCP", "port": 80, "targetPort": "http", "nodePort": 30080}],
                    "selector": {"app": "np"},
                    "type": "NodePort"
                }),
            ),
        );
        fixture(
            include_bytes!("../tests/fixtures/protobuf/create_service_loadbalancer.pb"),
            service(
                "lb",
                json!({
                    "ports": [{"name": "443-8443", "protocol": "TCP", "port": 443, "targetPort": 8443}],
                    "selector": {"app": "lb"},
                    "type": "LoadBalancer"
                }),
            ),
        );
        fixture(
            include_bytes!("../tests/fixtures/protobuf/create_service_externalname.pb"),
            service(
                "en",
                json!({"selector": {"app": "en"}, "type": "ExternalName", "externalName": "example.com"}),
            ),
        );
        fixture(
            include_bytes!("../tests/fixtures/protobuf/create_service_headless.pb"),
            service(
                "hl",
                json!({"selector": {"app": "hl"}, "clusterIP": "None", "type": "ClusterIP"}),
            ),
        );
    }

    #[test]
    fn kubectl_create_rbac_kinds() {
        fixture(
            include_bytes!("../tests/fixtures/protobuf/create_role.pb"),
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": "r"},
                "rules": [
                    {"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"], "resourceNames": ["foo"]},
                    {"verbs": ["get", "list"], "apiGroups": ["apps"], "resources": ["deployments"], "resourceNames": ["foo"]}
                ]
            }),
        );
        fixture(
            include_bytes!("../tests/fixtures/protobuf/create_clusterrole_rules.pb"),
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": "cr2"},
                "rules": [
                    {"verbs": ["get"], "apiGroups": [""], "resources": ["pods/log"]},
                    {"verbs": ["get"], "nonResourceURLs": ["/healthz"]}
                ]
            }),
        );
        // Go's JSON would add `"rules": null` (a nil slice without omitempty).
        fixture(
            include_bytes!("../tests/fixtures/protobuf/create_clusterrole_aggregation.pb"),
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": "cr"},
                "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"a": "b"}}]}
            }),
        );
        fixture(
            include_bytes!("../tests/fixtures/protobuf/create_clusterrolebinding.pb"),
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": "crb"},
                "subjects": [
                    {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice"},
                    {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "devs"},
                    {"kind": "ServiceAccount", "name": "sa", "namespace": "ns"}
                ],
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cr"}
            }),
        );
    }

    #[test]
    fn kubectl_create_scheduling_and_policy_kinds() {
        fixture(
            include_bytes!("../tests/fixtures/protobuf/create_priorityclass.pb"),
            json!({
                "apiVersion": "scheduling.k8s.io/v1",
                "kind": "PriorityClass",
                "metadata": {"name": "pc"},
                "value": 1000,
                "description": "high",
                "preemptionPolicy": "Never"
            }),
        );
        fixture(
            include_bytes!("../tests/fixtures/protobuf/create_priorityclass_global_default.pb"),
            json!({
                "apiVersion": "scheduling.k8s.io/v1",
                "kind": "PriorityClass",
                "metadata": {"name": "pc2"},
                "value": 5,
                "globalDefault": true,
                "preemptionPolicy": "PreemptLowerPriority"
            }),
        );
        let pdb = |name: &str, spec: Value| {
            json!({
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "metadata": {"name": name},
                "spec": spec,
                "status": {"disruptionsAllowed": 0, "currentHealthy": 0, "desiredHealthy": 0, "expectedPods": 0}
            })
        };
        fixture(
            include_bytes!("../tests/fixtures/protobuf/create_pdb_min_available.pb"),
            pdb(
                "pdb",
                json!({"minAvailable": "50%", "selector": {"matchLabels": {"app": "x"}}}),
            ),
        );
        fixture(
            include_bytes!("../tests/fixtures/protobuf/create_pdb_max_unavailable.pb"),
            pdb(
                "pdb2",
                json!({"maxUnavailable": 1, "selector": {"matchLabels": {"app": "x"}}}),
            ),
        );
    }
}
