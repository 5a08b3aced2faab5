//! The Supervisor owns the StageSet watch (a kube-runtime reflector whose store
//! the HTTP servers read), starts one supervised [`StageSetActor`] per
//! StageSet, stops it when the StageSet is gone, and routes triggers: creation,
//! spec changes, the annotations that request work, and source changes reported
//! by the SourceWatcher.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use actix::prelude::*;
use futures::StreamExt;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use tokio::sync::Semaphore;

use crate::actors::sources::SourceChanged;
use crate::actors::stageset::{Reconcile, StageSetActor, Stop};
use crate::api::{StageSet, keys};
use crate::reconcile::Env;
use crate::reconcile::source::{DEFAULT_SOURCE_KIND, FLUX_SOURCE_GROUP, is_producer};

/// Annotations whose change requests a reconcile by itself (api.md §9.1).
const TRIGGER_ANNOTATIONS: &[&str] = &[
    keys::ANNOTATION_REQUESTED_AT,
    keys::ANNOTATION_RECONCILE_STAGE,
    keys::ANNOTATION_APPROVED_VERSION,
    keys::ANNOTATION_ROLLBACK_TO,
    keys::ANNOTATION_PROMOTE,
];

/// What the Supervisor remembers of a StageSet to decide whether a watch event
/// asks for work.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    uid: String,
    generation: i64,
    annotations: BTreeMap<String, String>,
    deleting: bool,
}

impl Seen {
    fn of(ss: &StageSet) -> Seen {
        let annotations = ss
            .annotations()
            .iter()
            .filter(|(k, _)| TRIGGER_ANNOTATIONS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Seen {
            uid: ss.uid().unwrap_or_default(),
            generation: ss.meta().generation.unwrap_or(0),
            annotations,
            deleting: ss.meta().deletion_timestamp.is_some(),
        }
    }
}

type WatchItem = Result<watcher::Event<StageSet>, watcher::Error>;

pub struct Supervisor {
    env: Arc<Env>,
    limiter: Arc<Semaphore>,
    namespaces: Vec<String>,
    actors: HashMap<String, (Addr<StageSetActor>, Seen)>,
    store: Store<StageSet>,
    writer: Option<reflector::store::Writer<StageSet>>,
    init_seen: Vec<String>,
}

impl Supervisor {
    /// A supervisor watching `namespaces` (empty: the whole cluster) and running
    /// at most `concurrent` reconciles at once.
    pub fn new(env: Arc<Env>, concurrent: usize, namespaces: Vec<String>) -> Supervisor {
        let (store, writer) = reflector::store();
        Supervisor {
            env,
            limiter: Arc::new(Semaphore::new(concurrent.max(1))),
            namespaces,
            actors: HashMap::new(),
            store,
            writer: Some(writer),
            init_seen: Vec::new(),
        }
    }

    /// The StageSet cache (shared with the HTTP servers).
    pub fn store(&self) -> Store<StageSet> {
        self.store.clone()
    }

    fn key_of(ss: &StageSet) -> String {
        format!("{}/{}", ss.namespace().unwrap_or_default(), ss.name_any())
    }

    fn observe(&mut self, ss: &StageSet) {
        let key = Self::key_of(ss);
        let seen = Seen::of(ss);
        match self.actors.get_mut(&key) {
            Some((addr, previous)) => {
                if previous.uid != seen.uid {
                    // Deleted and re-created under the same name.
                    addr.do_send(Reconcile("recreated"));
                } else if previous.generation != seen.generation {
                    addr.do_send(Reconcile("spec changed"));
                } else if previous.deleting != seen.deleting {
                    addr.do_send(Reconcile("deletion"));
                } else if previous.annotations != seen.annotations {
                    addr.do_send(Reconcile("annotation"));
                }
                *previous = seen;
            }
            None => {
                let env = self.env.clone();
                let limiter = self.limiter.clone();
                let namespace = ss.namespace().unwrap_or_default();
                let name = ss.name_any();
                let addr = actix::Supervisor::start(move |_| {
                    StageSetActor::new(&namespace, &name, env, limiter)
                });
                self.actors.insert(key, (addr, seen));
            }
        }
    }

    fn forget(&mut self, key: &str) {
        if let Some((addr, _)) = self.actors.remove(key) {
            addr.do_send(Stop);
        }
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let client = self.env.clients.controller();
        let writer = self.writer.take().expect("started once");
        let streams: Vec<_> = if self.namespaces.is_empty() {
            vec![watcher(Api::<StageSet>::all(client), watcher::Config::default()).boxed()]
        } else {
            self.namespaces
                .iter()
                .map(|ns| {
                    watcher(
                        Api::<StageSet>::namespaced(client.clone(), ns),
                        watcher::Config::default(),
                    )
                    .boxed()
                })
                .collect()
        };
        let merged = futures::stream::select_all(streams).default_backoff();
        let stream = reflector::reflector(writer, merged);
        ctx.add_stream(stream);
    }
}

impl StreamHandler<WatchItem> for Supervisor {
    fn handle(&mut self, item: WatchItem, _ctx: &mut Context<Self>) {
        match item {
            Ok(watcher::Event::Apply(ss)) => self.observe(&ss),
            Ok(watcher::Event::InitApply(ss)) => {
                self.init_seen.push(Self::key_of(&ss));
                self.observe(&ss);
            }
            Ok(watcher::Event::Delete(ss)) => {
                let key = Self::key_of(&ss);
                self.forget(&key);
            }
            Ok(watcher::Event::Init) => self.init_seen.clear(),
            Ok(watcher::Event::InitDone) => {
                // After a re-list, StageSets not seen any more are gone.
                let seen: std::collections::HashSet<String> = self.init_seen.drain(..).collect();
                let gone: Vec<String> = self
                    .actors
                    .keys()
                    .filter(|k| !seen.contains(*k))
                    .cloned()
                    .collect();
                for key in gone {
                    self.forget(&key);
                }
            }
            Err(e) => tracing::warn!(error = %e, "StageSet watch failed; retrying"),
        }
    }

    fn finished(&mut self, _ctx: &mut Context<Self>) {
        tracing::error!("the StageSet watch ended");
    }
}

fn group_of(api_version: &str) -> &str {
    api_version.split_once('/').map(|(g, _)| g).unwrap_or("")
}

impl Handler<SourceChanged> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: SourceChanged, _ctx: &mut Context<Self>) {
        for ss in self.store.state() {
            let ss_ns = ss.namespace().unwrap_or_default();
            let references = ss.spec.stages.iter().any(|stage| {
                let r = &stage.source_ref;
                let ns = r
                    .namespace
                    .as_deref()
                    .filter(|n| !n.is_empty())
                    .unwrap_or(&ss_ns);
                if ns != msg.namespace {
                    return false;
                }
                let kind = r
                    .kind
                    .as_deref()
                    .filter(|k| !k.is_empty())
                    .unwrap_or(DEFAULT_SOURCE_KIND);
                if is_producer(r) {
                    // Through the ExternalArtifact back-pointer.
                    msg.kind == DEFAULT_SOURCE_KIND
                        && msg
                            .back_pointer
                            .as_ref()
                            .is_some_and(|(api_version, k, n)| {
                                k == kind
                                    && n == &r.name
                                    && group_of(api_version)
                                        == group_of(r.api_version.as_deref().unwrap_or(""))
                            })
                } else {
                    let group = r
                        .api_version
                        .as_deref()
                        .map(group_of)
                        .unwrap_or(FLUX_SOURCE_GROUP);
                    kind == msg.kind
                        && r.name == msg.name
                        && (group.is_empty() || group == FLUX_SOURCE_GROUP)
                }
            });
            if references && let Some((addr, _)) = self.actors.get(&Self::key_of(&ss)) {
                addr.do_send(Reconcile("source changed"));
            }
        }
    }
}

/// Asks for the StageSet cache (used by the controller handle).
#[derive(Message)]
#[rtype(result = "Store<StageSet>")]
pub struct GetStore;

impl Handler<GetStore> for Supervisor {
    type Result = MessageResult<GetStore>;

    fn handle(&mut self, _: GetStore, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.store.clone())
    }
}
