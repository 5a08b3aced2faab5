//! The object store: every object version by resourceVersion (a small MVCC, so
//! that lists at a resourceVersion and paginated lists see one snapshot), and the
//! event log that watches replay from.
//!
//! resourceVersions are one global, strictly increasing counter, as with etcd.
//!
//! The event log is kept per resource type, like the API server's watch
//! cache: at least the last `min_events` events of a type, and every event
//! younger than `window` (75 s on a real server); older events go when a
//! new event of the type arrives. A watch from a resourceVersion older than
//! the oldest event kept gets `too old resource version: X (Y)` (410 Gone),
//! and the object history goes with the events, so a list at such a
//! resourceVersion gets 410 too.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::broadcast;

use crate::error::{ApiError, ApiResult};
use crate::registry::StorageKey;

/// A stored object (immutable once stored).
pub type Obj = Arc<Value>;

/// The kind of change a watch event reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One committed change.
#[derive(Debug)]
pub struct Change {
    pub rv: u64,
    pub key: StorageKey,
    pub namespace: String,
    pub name: String,
    pub event: EventType,
    /// The object after the change (for deletions: the last state, with the
    /// deletion's resourceVersion).
    pub object: Obj,
    /// The object before the change.
    pub previous: Option<Obj>,
}

/// Changes after a resourceVersion, a receiver for later ones, and the current
/// resourceVersion.
pub type WatchStart = (Vec<Arc<Change>>, broadcast::Receiver<Arc<Change>>, u64);

/// What a write expects to find.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// The object must not exist.
    Absent,
    /// The object must exist at exactly this resourceVersion.
    Version(u64),
    /// The object must exist (any version).
    Present,
}

#[derive(Debug)]
struct Revision {
    rv: u64,
    object: Option<Obj>,
}

type ObjKey = (String, String);

/// The watch history of one resource type.
#[derive(Debug, Default)]
struct TypeLog {
    events: VecDeque<(Arc<Change>, Instant)>,
    /// The resourceVersion of the newest event dropped (0: none yet).
    dropped_upto: u64,
}

#[derive(Debug)]
struct State {
    rv: u64,
    data: HashMap<StorageKey, BTreeMap<ObjKey, Vec<Revision>>>,
    logs: HashMap<StorageKey, TypeLog>,
    /// Everything up to this resourceVersion was compacted at once
    /// ([`Store::compact`]).
    floor: u64,
    min_events: usize,
    window: Duration,
}

impl State {
    /// The resourceVersion below which a watch of `key` is too old (the
    /// oldest event kept minus one, as the watch cache computes it), if
    /// history was dropped.
    fn watch_threshold(&self, key: &StorageKey) -> Option<u64> {
        let typed = self.logs.get(key).and_then(|l| {
            (l.dropped_upto > 0).then(|| match l.events.front() {
                Some((c, _)) => c.rv - 1,
                None => l.dropped_upto,
            })
        });
        match (typed, self.floor) {
            (Some(t), f) => Some(t.max(f)),
            (None, 0) => None,
            (None, f) => Some(f),
        }
    }

    /// The resourceVersion below which a list of `key` is too old.
    fn list_threshold(&self, key: &StorageKey) -> u64 {
        let typed = self.logs.get(key).map_or(0, |l| l.dropped_upto);
        typed.max(self.floor)
    }

    /// Drops the oldest events of `key` beyond the retention, and the object
    /// history only they needed.
    fn evict(&mut self, key: &StorageKey, now: Instant) {
        let (min, window) = (self.min_events, self.window);
        let Some(log) = self.logs.get_mut(key) else {
            return;
        };
        let mut dropped = Vec::new();
        while log.events.len() > min
            && log
                .events
                .front()
                .is_some_and(|(_, at)| now.duration_since(*at) >= window)
        {
            let (c, _) = log.events.pop_front().expect("non-empty");
            log.dropped_upto = c.rv;
            dropped.push(c);
        }
        if dropped.is_empty() {
            return;
        }
        let Some(objects) = self.data.get_mut(key) else {
            return;
        };
        for c in dropped {
            let k = (c.namespace.clone(), c.name.clone());
            let Some(revs) = objects.get_mut(&k) else {
                continue;
            };
            // Keep the newest revision at or before the dropped event (a
            // deletion's tombstone is not needed) and everything after.
            match revs.iter().position(|r| r.rv == c.rv) {
                Some(i) if revs[i].object.is_none() => {
                    revs.drain(..=i);
                }
                Some(i) => {
                    revs.drain(..i);
                }
                None => {}
            }
            if revs.is_empty() {
                objects.remove(&k);
            }
        }
    }
}

/// Outcome of a failed precondition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteError {
    AlreadyExists,
    NotFound,
    Conflict,
}

/// The store. Cheap operations under one mutex; watches get changes through a
/// broadcast channel.
#[derive(Debug)]
pub struct Store {
    state: Mutex<State>,
    tx: broadcast::Sender<Arc<Change>>,
}

fn rv_of(obj: &Value) -> u64 {
    obj.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

impl Store {
    /// A store whose watch history keeps, per resource type, at least the
    /// last `min_events` events and every event younger than `window`.
    pub fn new(min_events: usize, window: Duration) -> Store {
        let (tx, _) = broadcast::channel(65_536);
        Store {
            state: Mutex::new(State {
                rv: 1,
                data: HashMap::new(),
                logs: HashMap::new(),
                floor: 0,
                min_events: min_events.max(1),
                window,
            }),
            tx,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent data (every mutation
        // completes before anything can panic), so poisoning is ignored.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The latest resourceVersion.
    pub fn current_rv(&self) -> u64 {
        self.lock().rv
    }

    /// The current version of one object.
    pub fn get(&self, key: &StorageKey, namespace: &str, name: &str) -> Option<Obj> {
        let st = self.lock();
        st.data
            .get(key)
            .and_then(|m| m.get(&(namespace.to_string(), name.to_string())))
            .and_then(|revs| revs.last())
            .and_then(|r| r.object.clone())
    }

    /// Objects of a resource, optionally in one namespace, as of resourceVersion
    /// `at` (the latest when `None`), sorted by namespace and name. Returns the
    /// list's resourceVersion too.
    pub fn list(
        &self,
        key: &StorageKey,
        namespace: Option<&str>,
        at: Option<u64>,
    ) -> ApiResult<(Vec<Obj>, u64)> {
        let st = self.lock();
        let at = match at {
            Some(rv) if rv > st.rv => {
                return Err(ApiError::new(
                    504,
                    "Timeout",
                    format!(
                        "Too large resource version: {rv}, current: {}",
                        st.rv
                    ),
                )
                .with_details(serde_json::json!({
                    "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
                    "retryAfterSeconds": 1
                })));
            }
            Some(rv) if rv < st.list_threshold(key) => {
                // etcd3's `interpretListError` for a compacted revision.
                return Err(ApiError::gone(
                    "The resourceVersion for the provided list is too old.",
                ));
            }
            Some(rv) => rv,
            None => st.rv,
        };
        let mut out = Vec::new();
        if let Some(objects) = st.data.get(key) {
            let range: Box<dyn Iterator<Item = (&ObjKey, &Vec<Revision>)>> = match namespace {
                Some(ns) => Box::new(
                    objects
                        .range((ns.to_string(), String::new())..)
                        .take_while(move |((n, _), _)| n == ns),
                ),
                None => Box::new(objects.iter()),
            };
            for (_, revs) in range {
                if let Some(obj) = revs
                    .iter()
                    .rev()
                    .find(|r| r.rv <= at)
                    .and_then(|r| r.object.clone())
                {
                    out.push(obj);
                }
            }
        }
        Ok((out, at))
    }

    /// Namespaces that hold at least one object of any resource.
    pub fn namespaces_in_use(&self, namespace: &str) -> Vec<(StorageKey, String)> {
        let st = self.lock();
        let mut out = Vec::new();
        for (key, objects) in &st.data {
            for ((ns, name), revs) in objects.range((namespace.to_string(), String::new())..) {
                if ns != namespace {
                    break;
                }
                if revs.last().is_some_and(|r| r.object.is_some()) {
                    out.push((key.clone(), name.clone()));
                }
            }
        }
        out
    }

    /// Writes (or, with `object: None`, removes) one object if `expect` holds.
    /// Sets `metadata.resourceVersion` and records the change.
    pub fn write(
        &self,
        key: &StorageKey,
        namespace: &str,
        name: &str,
        expect: Expect,
        object: Option<Value>,
    ) -> Result<Arc<Change>, WriteError> {
        let mut st = self.lock();
        let current = st
            .data
            .get(key)
            .and_then(|m| m.get(&(namespace.to_string(), name.to_string())))
            .and_then(|revs| revs.last())
            .and_then(|r| r.object.clone());
        match (expect, &current) {
            (Expect::Absent, Some(_)) => return Err(WriteError::AlreadyExists),
            (Expect::Present | Expect::Version(_), None) => return Err(WriteError::NotFound),
            (Expect::Version(v), Some(cur)) if rv_of(cur) != v => return Err(WriteError::Conflict),
            _ => {}
        }
        if object.is_none() && current.is_none() {
            return Err(WriteError::NotFound);
        }
        st.rv += 1;
        let rv = st.rv;
        let (event, stored) = match object {
            Some(mut obj) => {
                if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                    meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
                }
                let ev = if current.is_some() {
                    EventType::Modified
                } else {
                    EventType::Added
                };
                (ev, Some(Arc::new(obj)))
            }
            None => (EventType::Deleted, None),
        };
        let event_object = match &stored {
            Some(o) => o.clone(),
            None => {
                let mut last = current.as_deref().cloned().unwrap_or(Value::Null);
                if let Some(meta) = last.get_mut("metadata").and_then(Value::as_object_mut) {
                    meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
                }
                Arc::new(last)
            }
        };
        let revs = st
            .data
            .entry(key.clone())
            .or_default()
            .entry((namespace.to_string(), name.to_string()))
            .or_default();
        revs.push(Revision { rv, object: stored });
        let change = Arc::new(Change {
            rv,
            key: key.clone(),
            namespace: namespace.to_string(),
            name: name.to_string(),
            event,
            object: event_object,
            previous: current,
        });
        let now = Instant::now();
        st.logs
            .entry(key.clone())
            .or_default()
            .events
            .push_back((change.clone(), now));
        st.evict(key, now);
        // Sending while holding the lock keeps the channel in resourceVersion order.
        let _ = self.tx.send(change.clone());
        Ok(change)
    }

    /// Forgets history up to and including resourceVersion `upto`.
    fn compact_locked(st: &mut State, upto: u64) {
        if upto <= st.floor {
            return;
        }
        for log in st.logs.values_mut() {
            while let Some((c, _)) = log.events.front() {
                if c.rv > upto {
                    break;
                }
                log.dropped_upto = c.rv;
                log.events.pop_front();
            }
        }
        st.floor = upto;
        for objects in st.data.values_mut() {
            objects.retain(|_, revs| {
                // Keep the newest revision at or before `upto` and everything after.
                let keep_from = revs.iter().rposition(|r| r.rv <= upto).unwrap_or(0);
                revs.drain(..keep_from);
                !(revs.len() == 1 && revs[0].object.is_none() && revs[0].rv <= upto)
            });
        }
    }

    /// Compacts everything up to the current resourceVersion (a test helper that
    /// plays etcd compaction).
    pub fn compact(&self) {
        let mut st = self.lock();
        let upto = st.rv;
        Self::compact_locked(&mut st, upto);
    }

    /// Changes of `key` after `rv` (from its log) and a receiver for later
    /// changes, taken atomically. 410 Gone when events after `rv` are no
    /// longer kept.
    pub fn watch_from(&self, key: &StorageKey, rv: u64) -> ApiResult<WatchStart> {
        let st = self.lock();
        if let Some(t) = st.watch_threshold(key)
            && rv < t
        {
            return Err(ApiError::gone(format!(
                "too old resource version: {rv} ({t})"
            )));
        }
        let backlog = st
            .logs
            .get(key)
            .map(|l| {
                l.events
                    .iter()
                    .filter(|(c, _)| c.rv > rv)
                    .map(|(c, _)| c.clone())
                    .collect()
            })
            .unwrap_or_default();
        Ok((backlog, self.tx.subscribe(), st.rv))
    }

    /// A receiver for changes from now on, with the current resourceVersion.
    pub fn subscribe(&self) -> (broadcast::Receiver<Arc<Change>>, u64) {
        let st = self.lock();
        (self.tx.subscribe(), st.rv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key() -> StorageKey {
        StorageKey::new("", "configmaps")
    }

    fn cm(name: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default"}})
    }

    fn store() -> Store {
        Store::new(100, Duration::from_secs(75))
    }

    #[test]
    fn write_get_list_and_snapshots() {
        let s = store();
        let a = s
            .write(&key(), "default", "a", Expect::Absent, Some(cm("a")))
            .unwrap();
        assert_eq!(a.event, EventType::Added);
        assert_eq!(
            s.write(&key(), "default", "a", Expect::Absent, Some(cm("a")))
                .unwrap_err(),
            WriteError::AlreadyExists
        );
        let rv_after_a = s.current_rv();
        s.write(&key(), "default", "b", Expect::Absent, Some(cm("b")))
            .unwrap();
        let (now, _) = s.list(&key(), Some("default"), None).unwrap();
        assert_eq!(now.len(), 2);
        let (then, at) = s.list(&key(), None, Some(rv_after_a)).unwrap();
        assert_eq!(then.len(), 1);
        assert_eq!(at, rv_after_a);
        assert_eq!(
            s.write(&key(), "default", "a", Expect::Version(1), Some(cm("a")))
                .unwrap_err(),
            WriteError::Conflict
        );
        let del = s
            .write(&key(), "default", "a", Expect::Present, None)
            .unwrap();
        assert_eq!(del.event, EventType::Deleted);
        assert!(s.get(&key(), "default", "a").is_none());
    }

    #[test]
    fn watch_from_and_compaction() {
        let s = store();
        let start = s.current_rv();
        for n in ["a", "b", "c"] {
            s.write(&key(), "default", n, Expect::Absent, Some(cm(n)))
                .unwrap();
        }
        let (backlog, _rx, _) = s.watch_from(&key(), start).unwrap();
        assert_eq!(backlog.len(), 3);
        s.compact();
        assert_eq!(s.watch_from(&key(), start).unwrap_err().code, 410);
        assert_eq!(s.list(&key(), None, Some(start)).unwrap_err().code, 410);
        // The current state survives compaction.
        assert_eq!(s.list(&key(), None, None).unwrap().0.len(), 3);
        let (backlog, _rx, _) = s.watch_from(&key(), s.current_rv()).unwrap();
        assert!(backlog.is_empty());
    }

    #[test]
    fn history_ages_per_type() {
        let s = Store::new(3, Duration::ZERO);
        let other = StorageKey::new("", "secrets");
        s.write(&other, "default", "s", Expect::Absent, Some(cm("s")))
            .unwrap();
        let start = s.current_rv();
        for i in 0..6 {
            let n = format!("c{i}");
            s.write(&key(), "default", &n, Expect::Absent, Some(cm(&n)))
                .unwrap();
        }
        // c0..c2 are gone (rv 3..5); c3 (rv 6) is the oldest kept.
        let err = s.watch_from(&key(), start).unwrap_err();
        assert_eq!(err.code, 410);
        assert_eq!(err.reason, "Expired");
        assert_eq!(
            err.message,
            format!("too old resource version: {start} (5)")
        );
        let (backlog, _rx, _) = s.watch_from(&key(), 5).unwrap();
        assert_eq!(backlog.len(), 3);
        assert_eq!(s.list(&key(), None, Some(start)).unwrap_err().code, 410);
        assert_eq!(s.list(&key(), None, Some(5)).unwrap().0.len(), 3);
        // Another type's history is its own.
        assert!(s.watch_from(&other, start - 1).is_ok());
        assert_eq!(s.list(&key(), None, None).unwrap().0.len(), 6);
    }
}
