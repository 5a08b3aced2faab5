//! Versions that share storage with another representation. `events.k8s.io/v1`
//! Events are stored as core `v1` Events, as on a real server, so that
//! `kubectl get events` and `kubectl describe` see what a controller recorded
//! through the newer API.

use serde_json::{Map, Value};

/// (events.k8s.io/v1 name, core/v1 name) of the fields that differ.
const EVENT_FIELDS: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
    ("reportingController", "reportingComponent"),
];

fn rename(obj: &mut Value, from_to: impl Iterator<Item = (&'static str, &'static str)>) {
    let Some(map) = obj.as_object_mut() else {
        return;
    };
    let mut out = Map::new();
    let pairs: Vec<(&str, &str)> = from_to.collect();
    for (k, v) in std::mem::take(map) {
        let key = pairs
            .iter()
            .find(|(from, _)| *from == k)
            .map(|(_, to)| to.to_string())
            .unwrap_or(k);
        out.insert(key, v);
    }
    *map = out;
}

/// Whether a resource type is the events.k8s.io view of core Events.
pub fn is_events_v1(group: &str, kind: &str) -> bool {
    group == "events.k8s.io" && kind == "Event"
}

/// events.k8s.io/v1 shape → the stored core/v1 shape.
pub fn event_to_core(mut v: Value) -> Value {
    rename(&mut v, EVENT_FIELDS.iter().copied());
    v["apiVersion"] = Value::String("v1".into());
    v
}

/// Stored core/v1 shape → events.k8s.io/v1.
pub fn event_from_core(mut v: Value) -> Value {
    rename(&mut v, EVENT_FIELDS.iter().map(|(a, b)| (*b, *a)));
    v["apiVersion"] = Value::String("events.k8s.io/v1".into());
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trip() {
        let v1 = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"},
            "regarding": {"kind": "StageSet", "name": "s"}, "note": "hello", "reason": "Succeeded",
            "reportingController": "stageset-controller", "action": "Succeeded", "type": "Normal"});
        let core = event_to_core(v1.clone());
        assert_eq!(core["involvedObject"]["name"], "s");
        assert_eq!(core["message"], "hello");
        assert_eq!(core["reportingComponent"], "stageset-controller");
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(event_from_core(core), v1);
    }
}
