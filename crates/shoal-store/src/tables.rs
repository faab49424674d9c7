//! In-memory tables of cluster objects, with the indexes the leader's
//! components need ("tasks of service S", "tasks on node N", names), and the
//! deterministic apply of a [`Command`].

use crate::command::{ClusterRecord, Command, CommandResult, Expect, Kind, Object, Op, StoreError};
use serde::{Deserialize, Serialize};
use shoal_api::{Config, Network, Node, Secret, Service, Task, TaskSpec};
use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Arc;

/// Longest ID kept inside the key itself (object IDs are 25 bytes).
const INLINE_ID: usize = 30;

/// An object ID as a table key. IDs up to [`INLINE_ID`] bytes are stored in
/// the key, so a lookup compares bytes held in the B-tree's own nodes rather
/// than following one pointer per comparison (with 100,000s of objects those
/// cache misses were most of the apply's cost). Orders exactly as `str`.
#[derive(Clone)]
enum IdKey {
    Inline { len: u8, bytes: [u8; INLINE_ID] },
    Heap(Box<str>),
}

impl IdKey {
    fn new(id: &str) -> IdKey {
        if id.len() <= INLINE_ID {
            let mut bytes = [0u8; INLINE_ID];
            bytes[..id.len()].copy_from_slice(id.as_bytes());
            IdKey::Inline {
                len: id.len() as u8,
                bytes,
            }
        } else {
            IdKey::Heap(id.into())
        }
    }

    fn as_str(&self) -> &str {
        match self {
            // SAFETY: the bytes were copied whole from a `&str` (`new`), so
            // they are valid UTF-8. Checking them again on every comparison
            // of a lookup would cost more than the inline key saves.
            IdKey::Inline { len, bytes } => unsafe {
                std::str::from_utf8_unchecked(&bytes[..*len as usize])
            },
            IdKey::Heap(s) => s,
        }
    }
}

impl Borrow<str> for IdKey {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for IdKey {
    fn eq(&self, other: &IdKey) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for IdKey {}

impl PartialOrd for IdKey {
    fn partial_cmp(&self, other: &IdKey) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for IdKey {
    fn cmp(&self, other: &IdKey) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl std::fmt::Debug for IdKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_str().fmt(f)
    }
}

/// One table: objects by ID, plus a unique-name index for named kinds.
#[derive(Debug, Clone)]
pub struct Table<T> {
    by_id: BTreeMap<IdKey, Arc<T>>,
    by_name: HashMap<String, String>,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Table {
            by_id: BTreeMap::new(),
            by_name: HashMap::new(),
        }
    }
}

impl<T> Table<T> {
    /// Object by exact ID.
    pub fn get(&self, id: &str) -> Option<&Arc<T>> {
        self.by_id.get(id)
    }

    /// Object by exact unique name.
    pub fn by_name(&self, name: &str) -> Option<&Arc<T>> {
        self.by_name
            .get(name)
            .and_then(|id| self.by_id.get(id.as_str()))
    }

    /// All objects, ordered by ID.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<T>> {
        self.by_id.values()
    }

    /// Objects whose ID starts with `prefix`.
    pub fn with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a Arc<T>> + 'a {
        self.by_id
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(move |(k, _)| k.as_str().starts_with(prefix))
            .map(|(_, v)| v)
    }

    /// Number of objects.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

/// All tables of the cluster state.
#[derive(Debug, Clone, Default)]
pub struct Tables {
    /// Nodes.
    pub nodes: Table<Node>,
    /// Services.
    pub services: Table<Service>,
    /// Tasks.
    pub tasks: Table<Task>,
    /// Networks.
    pub networks: Table<Network>,
    /// Secrets.
    pub secrets: Table<Secret>,
    /// Configs.
    pub configs: Table<Config>,
    /// The cluster object (absent before `init`).
    pub cluster: Option<Arc<ClusterRecord>>,
    tasks_by_service: HashMap<String, BTreeSet<String>>,
    tasks_by_node: HashMap<String, BTreeSet<String>>,
    /// Per service, its current task template, shared by the tasks made
    /// from it (tasks decoded from the log or a snapshot are interned here).
    templates: HashMap<String, Arc<TaskSpec>>,
    recent: HashMap<u64, CommandResult>,
    recent_order: std::collections::VecDeque<u64>,
}

/// How many applied command IDs are remembered for de-duplication.
const RECENT_REQUESTS: usize = 20_000;

/// What happened to an object in one applied entry.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Created.
    Created(Object),
    /// Updated: (old, new).
    Updated(Object, Object),
    /// Deleted: the last state.
    Deleted(Object),
}

impl Event {
    /// The object's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Event::Created(o) | Event::Updated(_, o) | Event::Deleted(o) => o.kind(),
        }
    }
}

/// A serializable view of every table (the snapshot format); it shares the
/// tables' objects.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct TablesImage {
    nodes: Vec<Arc<Node>>,
    services: Vec<Arc<Service>>,
    tasks: Vec<Arc<Task>>,
    networks: Vec<Arc<Network>>,
    secrets: Vec<Arc<Secret>>,
    configs: Vec<Arc<Config>>,
    cluster: Option<Arc<ClusterRecord>>,
    #[serde(default)]
    recent: Vec<(u64, CommandResult)>,
}

impl Tables {
    /// IDs of the tasks of a service.
    pub fn task_ids_of_service(&self, service_id: &str) -> impl Iterator<Item = &String> {
        self.tasks_by_service.get(service_id).into_iter().flatten()
    }

    /// Tasks of a service.
    pub fn tasks_of_service<'a>(
        &'a self,
        service_id: &str,
    ) -> impl Iterator<Item = &'a Arc<Task>> + 'a {
        self.tasks_by_service
            .get(service_id)
            .into_iter()
            .flatten()
            .filter_map(|id| self.tasks.get(id))
    }

    /// Tasks assigned to a node.
    pub fn tasks_on_node<'a>(&'a self, node_id: &str) -> impl Iterator<Item = &'a Arc<Task>> + 'a {
        self.tasks_by_node
            .get(node_id)
            .into_iter()
            .flatten()
            .filter_map(|id| self.tasks.get(id))
    }

    /// The current object of a kind and ID.
    pub fn get(&self, kind: Kind, id: &str) -> Option<Object> {
        match kind {
            Kind::Node => self.nodes.get(id).cloned().map(Object::Node),
            Kind::Service => self.services.get(id).cloned().map(Object::Service),
            Kind::Task => self.tasks.get(id).cloned().map(Object::Task),
            Kind::Network => self.networks.get(id).cloned().map(Object::Network),
            Kind::Secret => self.secrets.get(id).cloned().map(Object::Secret),
            Kind::Config => self.configs.get(id).cloned().map(Object::Config),
            Kind::Cluster => self
                .cluster
                .as_ref()
                .filter(|c| c.cluster.id == id)
                .cloned()
                .map(Object::Cluster),
        }
    }

    /// The current task template of a service, shared with the tasks made
    /// from it (new tasks should take this `Arc` rather than a copy).
    pub fn task_template(&self, service_id: &str) -> Option<&Arc<TaskSpec>> {
        self.templates.get(service_id)
    }

    fn version_of(&self, kind: Kind, id: &str) -> Option<u64> {
        match kind {
            Kind::Node => self.nodes.get(id).map(|o| o.version.index),
            Kind::Service => self.services.get(id).map(|o| o.version.index),
            Kind::Task => self.tasks.get(id).map(|o| o.version.index),
            Kind::Network => self.networks.get(id).map(|o| o.version.index),
            Kind::Secret => self.secrets.get(id).map(|o| o.version.index),
            Kind::Config => self.configs.get(id).map(|o| o.version.index),
            Kind::Cluster => self
                .cluster
                .as_ref()
                .filter(|c| c.cluster.id == id)
                .map(|c| c.cluster.version.index),
        }
    }

    fn name_owner(&self, kind: Kind, name: &str) -> Option<&String> {
        match kind {
            Kind::Service => self.services.by_name.get(name),
            Kind::Network => self.networks.by_name.get(name),
            Kind::Secret => self.secrets.by_name.get(name),
            Kind::Config => self.configs.by_name.get(name),
            _ => None,
        }
    }

    /// Applies a command at log `index`; returns the results and the events.
    pub fn apply(&mut self, index: u64, cmd: Command) -> (CommandResult, Vec<Event>) {
        if cmd.request != 0 {
            if let Some(r) = self.recent.get(&cmd.request) {
                return (r.clone(), Vec::new());
            }
        }
        let request = cmd.request;
        let (result, events) = self.apply_new(index, cmd);
        if request != 0 {
            self.remember(request, result.clone());
        }
        (result, events)
    }

    fn remember(&mut self, request: u64, result: CommandResult) {
        if self.recent.insert(request, result).is_none() {
            self.recent_order.push_back(request);
        }
        while self.recent_order.len() > RECENT_REQUESTS {
            if let Some(old) = self.recent_order.pop_front() {
                self.recent.remove(&old);
            }
        }
    }

    fn apply_new(&mut self, index: u64, cmd: Command) -> (CommandResult, Vec<Event>) {
        let mut results = Vec::with_capacity(cmd.ops.len());
        let mut events = Vec::with_capacity(cmd.ops.len());
        for op in cmd.ops {
            match self.check(&op) {
                Err(e) if cmd.atomic => {
                    // Undo what this command already did, newest first.
                    for ev in events.drain(..).rev() {
                        self.undo(ev);
                    }
                    let n = results.len() + 1;
                    return (
                        CommandResult {
                            results: vec![Err(e); n],
                        },
                        Vec::new(),
                    );
                }
                Err(e) => results.push(Err(e)),
                Ok(()) => {
                    events.push(self.perform(index, op));
                    results.push(Ok(index));
                }
            }
        }
        (CommandResult { results }, events)
    }

    fn check(&self, op: &Op) -> Result<(), StoreError> {
        match op {
            Op::Put { object, expect } => {
                let kind = object.kind();
                let id = object.id();
                if id.is_empty() {
                    return Err(StoreError::Invalid(format!(
                        "{} without an ID",
                        kind.as_str()
                    )));
                }
                let current = self.version_of(kind, id);
                match (expect, current) {
                    (Expect::Absent, Some(_)) => {
                        return Err(StoreError::Exists(kind, id.to_string()))
                    }
                    (Expect::Version(_) | Expect::Exists, None) => {
                        return Err(StoreError::NotFound(kind, id.to_string()))
                    }
                    (Expect::Version(v), Some(cur)) if *v != cur => {
                        return Err(StoreError::OutOfSequence)
                    }
                    _ => {}
                }
                if kind == Kind::Cluster {
                    if let Some(c) = &self.cluster {
                        if c.cluster.id != id {
                            return Err(StoreError::Invalid(
                                "the cluster object already exists".into(),
                            ));
                        }
                    }
                }
                if let Some(name) = object.unique_name() {
                    if name.is_empty() {
                        return Err(StoreError::Invalid(format!(
                            "{} name must not be empty",
                            kind.as_str()
                        )));
                    }
                    if let Some(owner) = self.name_owner(kind, name) {
                        if owner != id {
                            return Err(StoreError::NameConflict(kind, name.to_string()));
                        }
                    }
                }
                Ok(())
            }
            Op::Delete { kind, id, expect } => match (self.version_of(*kind, id), expect) {
                (None, _) => Err(StoreError::NotFound(*kind, id.clone())),
                (Some(cur), Some(v)) if cur != *v => Err(StoreError::OutOfSequence),
                _ => Ok(()),
            },
        }
    }

    fn perform(&mut self, index: u64, op: Op) -> Event {
        match op {
            Op::Put { mut object, .. } => {
                object.set_version(index);
                if let Object::Task(t) = &mut object {
                    // Before the clone below, so the event shares the stored task.
                    self.intern_spec(t);
                }
                match self.insert(object.clone()) {
                    Some(old) => Event::Updated(old, object),
                    None => Event::Created(object),
                }
            }
            Op::Delete { kind, id, .. } => {
                Event::Deleted(self.remove(kind, &id).expect("checked before perform"))
            }
        }
    }

    fn undo(&mut self, ev: Event) {
        match ev {
            Event::Created(o) => {
                self.remove(o.kind(), o.id());
            }
            Event::Updated(old, _) | Event::Deleted(old) => {
                self.insert(old);
            }
        }
    }

    /// Inserts or replaces an object, maintaining indexes; returns the old one.
    fn insert(&mut self, object: Object) -> Option<Object> {
        match object {
            Object::Node(o) => put(&mut self.nodes, o, node_id, None).map(Object::Node),
            Object::Service(o) => {
                let tpl = match self.templates.get(&o.id) {
                    Some(t) if **t == o.spec.task_template => t.clone(),
                    _ => Arc::new(o.spec.task_template.clone()),
                };
                self.templates.insert(o.id.clone(), tpl);
                put(&mut self.services, o, service_id, Some(service_name)).map(Object::Service)
            }
            Object::Task(mut o) => {
                self.intern_spec(&mut o);
                let old = put(&mut self.tasks, o.clone(), task_id, None);
                if let Some(old) = &old {
                    unindex(&mut self.tasks_by_service, &old.service_id, &old.id);
                    unindex(&mut self.tasks_by_node, &old.node_id, &old.id);
                }
                index_task(&mut self.tasks_by_service, &o.service_id, &o.id);
                index_task(&mut self.tasks_by_node, &o.node_id, &o.id);
                old.map(Object::Task)
            }
            Object::Network(o) => {
                put(&mut self.networks, o, network_id, Some(network_name)).map(Object::Network)
            }
            Object::Secret(o) => {
                put(&mut self.secrets, o, blob_id, Some(blob_name)).map(Object::Secret)
            }
            Object::Config(o) => {
                put(&mut self.configs, o, blob_id, Some(blob_name)).map(Object::Config)
            }
            Object::Cluster(o) => self.cluster.replace(o).map(Object::Cluster),
        }
    }

    /// Makes a task share its spec with its service's template (or with the
    /// version of the task it replaces) when they are equal.
    fn intern_spec(&self, task: &mut Arc<Task>) {
        let shared = self
            .templates
            .get(&task.service_id)
            .into_iter()
            .chain(self.tasks.get(&task.id).map(|old| &old.spec))
            .find(|s| Arc::ptr_eq(s, &task.spec) || **s == task.spec)
            .cloned();
        if let Some(spec) = shared {
            if !Arc::ptr_eq(&spec, &task.spec) {
                Arc::make_mut(task).spec = spec;
            }
        }
    }

    fn remove(&mut self, kind: Kind, id: &str) -> Option<Object> {
        match kind {
            Kind::Node => take(&mut self.nodes, id, None).map(Object::Node),
            Kind::Service => {
                self.templates.remove(id);
                take(&mut self.services, id, Some(service_name)).map(Object::Service)
            }
            Kind::Task => {
                let old = take(&mut self.tasks, id, None)?;
                unindex(&mut self.tasks_by_service, &old.service_id, &old.id);
                unindex(&mut self.tasks_by_node, &old.node_id, &old.id);
                Some(Object::Task(old))
            }
            Kind::Network => take(&mut self.networks, id, Some(network_name)).map(Object::Network),
            Kind::Secret => take(&mut self.secrets, id, Some(blob_name)).map(Object::Secret),
            Kind::Config => take(&mut self.configs, id, Some(blob_name)).map(Object::Config),
            Kind::Cluster => {
                if self.cluster.as_ref().is_some_and(|c| c.cluster.id == id) {
                    self.cluster.take().map(Object::Cluster)
                } else {
                    None
                }
            }
        }
    }

    /// A serializable view of everything (shares the objects).
    pub fn image(&self) -> TablesImage {
        fn all<T>(t: &Table<T>) -> Vec<Arc<T>> {
            t.iter().cloned().collect()
        }
        TablesImage {
            nodes: all(&self.nodes),
            services: all(&self.services),
            tasks: all(&self.tasks),
            networks: all(&self.networks),
            secrets: all(&self.secrets),
            configs: all(&self.configs),
            cluster: self.cluster.clone(),
            recent: self
                .recent_order
                .iter()
                .filter_map(|id| self.recent.get(id).map(|r| (*id, r.clone())))
                .collect(),
        }
    }

    /// Rebuilds tables (and indexes) from an image.
    pub fn from_image(image: TablesImage) -> Tables {
        let mut t = Tables::default();
        let objects = image
            .nodes
            .into_iter()
            .map(Object::Node)
            .chain(image.services.into_iter().map(Object::Service))
            .chain(image.tasks.into_iter().map(Object::Task))
            .chain(image.networks.into_iter().map(Object::Network))
            .chain(image.secrets.into_iter().map(Object::Secret))
            .chain(image.configs.into_iter().map(Object::Config))
            .chain(image.cluster.into_iter().map(Object::Cluster));
        for o in objects {
            t.insert(o);
        }
        for (id, r) in image.recent {
            t.remember(id, r);
        }
        t
    }
}

fn put<T>(
    table: &mut Table<T>,
    obj: Arc<T>,
    id_of: fn(&T) -> &str,
    name_of: Option<fn(&T) -> &str>,
) -> Option<Arc<T>> {
    let held = Arc::clone(&obj);
    let id = id_of(&held);
    let old = match table.by_id.get_mut(id) {
        Some(slot) => Some(std::mem::replace(slot, obj)),
        None => {
            table.by_id.insert(IdKey::new(id), obj);
            None
        }
    };
    if let Some(f) = name_of {
        let new_name = f(&held);
        let indexed = |t: &Table<T>, name: &str| t.by_name.get(name).is_some_and(|v| v == id);
        let unchanged = old.as_ref().is_some_and(|o| f(o) == new_name) && indexed(table, new_name);
        if !unchanged {
            if let Some(old) = &old {
                let old_name = f(old);
                if indexed(table, old_name) {
                    table.by_name.remove(old_name);
                }
            }
            table.by_name.insert(new_name.to_string(), id.to_string());
        }
    }
    old
}

fn take<T>(table: &mut Table<T>, id: &str, name_of: Option<fn(&T) -> &str>) -> Option<Arc<T>> {
    let old = table.by_id.remove(id)?;
    if let Some(f) = name_of {
        let name = f(&old);
        if table.by_name.get(name).is_some_and(|v| v == id) {
            table.by_name.remove(name);
        }
    }
    Some(old)
}

fn index_task(index: &mut HashMap<String, BTreeSet<String>>, key: &str, id: &str) {
    if !key.is_empty() {
        index
            .entry(key.to_string())
            .or_default()
            .insert(id.to_string());
    }
}

fn unindex(index: &mut HashMap<String, BTreeSet<String>>, key: &str, id: &str) {
    if let Some(set) = index.get_mut(key) {
        set.remove(id);
        if set.is_empty() {
            index.remove(key);
        }
    }
}

fn node_id(n: &Node) -> &str {
    &n.id
}

fn service_id(s: &Service) -> &str {
    &s.id
}

fn task_id(t: &Task) -> &str {
    &t.id
}

fn network_id(n: &Network) -> &str {
    &n.id
}

fn blob_id(b: &Secret) -> &str {
    &b.id
}

fn service_name(s: &Service) -> &str {
    &s.spec.name
}

fn network_name(n: &Network) -> &str {
    &n.spec.name
}

fn blob_name(b: &Secret) -> &str {
    &b.spec.name
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::{Service, Version};

    fn service(id: &str, name: &str, version: u64) -> Object {
        let mut s = Service {
            id: id.into(),
            version: Version { index: version },
            ..Default::default()
        };
        s.spec.name = name.into();
        Object::from(s)
    }

    fn put(object: Object, expect: Expect) -> Op {
        Op::Put { object, expect }
    }

    #[test]
    fn update_with_stale_version_is_out_of_sequence() {
        let mut t = Tables::default();
        let (r, _) = t.apply(
            5,
            Command {
                ops: vec![put(service("s1", "web", 0), Expect::Absent)],
                atomic: true,
                request: 0,
            },
        );
        assert_eq!(r.results, vec![Ok(5)]);
        let (r, _) = t.apply(
            6,
            Command {
                ops: vec![put(service("s1", "web", 0), Expect::Version(4))],
                atomic: true,
                request: 0,
            },
        );
        assert_eq!(r.results, vec![Err(StoreError::OutOfSequence)]);
        let (r, ev) = t.apply(
            7,
            Command {
                ops: vec![put(service("s1", "web2", 0), Expect::Version(5))],
                atomic: true,
                request: 0,
            },
        );
        assert_eq!(r.results, vec![Ok(7)]);
        assert!(matches!(ev[0], Event::Updated(..)));
        assert!(t.services.by_name("web").is_none());
        assert_eq!(t.services.by_name("web2").unwrap().version.index, 7);
    }

    #[test]
    fn duplicate_name_conflicts() {
        let mut t = Tables::default();
        t.apply(
            1,
            Command {
                ops: vec![put(service("a", "web", 0), Expect::Absent)],
                atomic: true,
                request: 0,
            },
        );
        let (r, ev) = t.apply(
            2,
            Command {
                ops: vec![put(service("b", "web", 0), Expect::Absent)],
                atomic: true,
                request: 0,
            },
        );
        assert_eq!(
            r.results,
            vec![Err(StoreError::NameConflict(Kind::Service, "web".into()))]
        );
        assert!(ev.is_empty());
        assert_eq!(t.services.len(), 1);
    }

    #[test]
    fn failed_atomic_command_changes_nothing() {
        let mut t = Tables::default();
        let cmd = Command {
            ops: vec![
                put(service("a", "one", 0), Expect::Absent),
                put(service("b", "one", 0), Expect::Absent),
            ],
            atomic: true,
            request: 0,
        };
        let (r, ev) = t.apply(1, cmd);
        assert!(r.results.iter().all(|r| r.is_err()));
        assert!(ev.is_empty());
        assert!(t.services.is_empty());
        assert!(t.services.by_name("one").is_none());
    }

    #[test]
    fn non_atomic_command_applies_what_it_can() {
        let mut t = Tables::default();
        let cmd = Command {
            ops: vec![
                put(service("a", "one", 0), Expect::Absent),
                Op::Delete {
                    kind: Kind::Service,
                    id: "zzz".into(),
                    expect: None,
                },
            ],
            atomic: false,
            request: 0,
        };
        let (r, _) = t.apply(3, cmd);
        assert_eq!(r.results[0], Ok(3));
        assert!(r.results[1].is_err());
    }

    #[test]
    fn task_indexes_follow_updates_and_snapshots() {
        let mut t = Tables::default();
        let task = |node: &str| {
            Object::from(Task {
                id: "t1".into(),
                service_id: "s".into(),
                node_id: node.into(),
                ..Default::default()
            })
        };
        t.apply(
            1,
            Command {
                ops: vec![put(task("n1"), Expect::Absent)],
                atomic: true,
                request: 0,
            },
        );
        assert_eq!(t.tasks_on_node("n1").count(), 1);
        t.apply(
            2,
            Command {
                ops: vec![put(task("n2"), Expect::Any)],
                atomic: true,
                request: 0,
            },
        );
        assert_eq!(t.tasks_on_node("n1").count(), 0);
        assert_eq!(t.tasks_on_node("n2").count(), 1);
        let copy = Tables::from_image(
            serde_json::from_slice(&serde_json::to_vec(&t.image()).unwrap()).unwrap(),
        );
        assert_eq!(copy.tasks_of_service("s").count(), 1);
        assert_eq!(copy.tasks_on_node("n2").count(), 1);
    }

    #[test]
    fn id_keys_order_as_strings_inline_or_not() {
        let ids = [
            "",
            "a",
            "ab",
            "ab\u{0}",
            "abc",
            "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzz",
            "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz",
            "0123456789abcdefghijklmnopqrstuvwxyz",
            "0123456789abcdefghijklmnopqrstuvwxy",
            "0123456789abcdefghijklmnopqrst",
            "é",
        ];
        for a in ids {
            assert_eq!(IdKey::new(a).as_str(), a);
            for b in ids {
                assert_eq!(
                    IdKey::new(a).cmp(&IdKey::new(b)),
                    a.cmp(b),
                    "{a:?} vs {b:?}"
                );
            }
        }
        let mut t = Tables::default();
        for id in [
            "abc1",
            "abd2",
            "ab",
            "b",
            "abc0123456789012345678901234567890",
        ] {
            t.apply(
                1,
                Command {
                    ops: vec![put(service(id, id, 0), Expect::Absent)],
                    atomic: true,
                    request: 0,
                },
            );
        }
        let found: Vec<_> = t
            .services
            .with_prefix("abc")
            .map(|s| s.id.clone())
            .collect();
        assert_eq!(found, ["abc0123456789012345678901234567890", "abc1"]);
        let all: Vec<_> = t.services.iter().map(|s| s.id.clone()).collect();
        let mut sorted = all.clone();
        sorted.sort();
        assert_eq!(all, sorted);
        assert_eq!(t.services.by_name("abd2").unwrap().id, "abd2");
    }

    #[test]
    fn a_retried_command_is_applied_once() {
        let mut t = Tables::default();
        let cmd = Command {
            ops: vec![put(service("a", "web", 0), Expect::Absent)],
            atomic: true,
            request: 42,
        };
        let (first, ev) = t.apply(1, cmd.clone());
        assert_eq!(first.results, vec![Ok(1)]);
        assert_eq!(ev.len(), 1);
        let (again, ev) = t.apply(2, cmd);
        assert_eq!(again, first, "the retry gets the first result");
        assert!(ev.is_empty());
        assert_eq!(t.services.get("a").unwrap().version.index, 1);
        let copy = Tables::from_image(
            serde_json::from_slice(&serde_json::to_vec(&t.image()).unwrap()).unwrap(),
        );
        let mut copy = copy;
        let cmd = Command {
            ops: vec![put(service("a", "web", 0), Expect::Absent)],
            atomic: true,
            request: 42,
        };
        assert_eq!(copy.apply(3, cmd).0, first, "remembered across snapshots");
    }
}
