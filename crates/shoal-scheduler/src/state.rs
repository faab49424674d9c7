//! The scheduler's view of the cluster, kept incrementally.
//!
//! Nodes live in slots (a `u32` index, reused after removal) holding interned attributes and usage:
//! reserved resources, task count and used host ports. Per service, a map from node slot to task
//! count answers "tasks of service S on node N" in O(1). Every update touches only the node and
//! service concerned; nothing here ever walks all tasks.
//!
//! A task may reference a node the scheduler does not know (yet): its usage is kept in a slot
//! without attributes, which no task is ever placed on, and which the node adopts when it arrives.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::intern::{FastMap, Interner};
use crate::node::NodeAttrs;
use crate::strategy::SplitMix64;
use crate::{NodeInfo, Protocol, Resources, TaskInfo};

/// A node ID, shared by the maps that index nodes.
pub(crate) type NodeId = Arc<str>;

/// What the tasks on a node use.
#[derive(Default)]
pub(crate) struct Usage {
    /// Sum of the tasks' reservations (wide, so sums and differences are exact).
    pub cpu: i128,
    /// Sum of the tasks' memory reservations.
    pub memory: i128,
    /// Number of tasks.
    pub tasks: u32,
    /// Host ports in use ([`port_key`]) → number of tasks publishing them.
    pub ports: FastMap<u32, u32>,
}

/// One node slot.
pub(crate) struct NodeSlot {
    /// Node ID as given.
    pub id: NodeId,
    /// None while the node is unknown (only its tasks are).
    pub attrs: Option<NodeAttrs>,
    /// Tasks placed on the node.
    pub usage: Usage,
}

/// Tasks of one service.
pub(crate) struct ServiceTasks {
    name: Box<str>,
    /// Number of tasks.
    pub tasks: u32,
    /// Node slot → number of tasks of the service on it.
    pub per_node: FastMap<u32, u32>,
}

struct TaskRecord {
    slot: u32,
    service: u32,
    reservations: Resources,
    ports: Box<[(Protocol, u16)]>,
}

/// The key of a host port in [`Usage::ports`].
pub(crate) fn port_key(protocol: Protocol, port: u16) -> u32 {
    ((protocol as u32) << 16) | u32::from(port)
}

/// A node's usage as seen from outside.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeUsage {
    /// Sum of the reservations of the node's tasks (saturated to `i64`).
    pub reserved: Resources,
    /// Number of tasks on the node.
    pub tasks: usize,
}

/// The placement engine and the cluster state it places against; owned by the manager.
pub struct Scheduler {
    pub(crate) interner: Interner,
    pub(crate) slots: Vec<NodeSlot>,
    free_slots: Vec<u32>,
    by_id: FastMap<NodeId, u32>,
    /// Slots of known nodes by node ID.
    ordered: BTreeMap<NodeId, u32>,
    /// `ordered`'s slots as a vector (node-ID order is the order of tie-breaks); emptied when a
    /// node comes or goes, rebuilt by the next batch.
    pub(crate) order: Vec<u32>,
    services: FastMap<Box<str>, u32>,
    pub(crate) service_tasks: Vec<ServiceTasks>,
    free_services: Vec<u32>,
    tasks: FastMap<Box<str>, TaskRecord>,
    pub(crate) rng: SplitMix64,
}

impl Default for Scheduler {
    fn default() -> Self {
        Scheduler::new()
    }
}

impl Scheduler {
    /// An empty scheduler with a fixed seed for the random strategy.
    pub fn new() -> Self {
        Scheduler::with_seed(0x5EED)
    }

    /// An empty scheduler whose random strategy is seeded with `seed`.
    pub fn with_seed(seed: u64) -> Self {
        Scheduler {
            interner: Interner::default(),
            slots: Vec::new(),
            free_slots: Vec::new(),
            by_id: FastMap::default(),
            ordered: BTreeMap::new(),
            order: Vec::new(),
            services: FastMap::default(),
            service_tasks: Vec::new(),
            free_services: Vec::new(),
            tasks: FastMap::default(),
            rng: SplitMix64(seed),
        }
    }

    /// Adds a node or replaces what is known about it; its tasks stay accounted.
    pub fn upsert_node(&mut self, node: NodeInfo) {
        let slot = self.slot_for(&node.id);
        let attrs = NodeAttrs::intern(&node, &mut self.interner);
        if let Some(old) = self.slots[slot as usize].attrs.replace(attrs) {
            old.release(&mut self.interner);
        }
        let id = self.slots[slot as usize].id.clone();
        if self.ordered.insert(id, slot).is_none() {
            self.order.clear();
        }
    }

    /// Forgets a node (no-op if unknown); its tasks stay accounted until removed.
    pub fn remove_node(&mut self, id: &str) {
        let Some(&slot) = self.by_id.get(id) else {
            return;
        };
        if let Some(old) = self.slots[slot as usize].attrs.take() {
            old.release(&mut self.interner);
            self.ordered.remove(id);
            self.order.clear();
        }
        self.free_slot_if_unused(slot);
    }

    /// Accounts for a task placed on a node; a known task ID is replaced, not counted twice. The
    /// node need not be known yet: its usage counts once it arrives.
    pub fn add_task(&mut self, task: TaskInfo) {
        self.remove_task(&task.id);
        let slot = self.slot_for(&task.node_id);
        let service = self.service_for(&task.service_id);
        let ports: Vec<u32> = task
            .host_ports
            .iter()
            .map(|&(p, n)| port_key(p, n))
            .collect();
        self.account(slot, service, task.reservations, &ports);
        let record = TaskRecord {
            slot,
            service,
            reservations: task.reservations,
            ports: task.host_ports.into_boxed_slice(),
        };
        self.tasks.insert(task.id.into_boxed_str(), record);
    }

    /// Stops accounting for a task; unknown IDs are ignored.
    pub fn remove_task(&mut self, task_id: &str) {
        let Some(record) = self.tasks.remove(task_id) else {
            return;
        };
        self.unaccount(record);
    }

    /// Number of known nodes.
    pub fn node_count(&self) -> usize {
        self.ordered.len()
    }

    /// Number of tasks accounted for.
    pub fn task_count(&self) -> usize {
        self.tasks.len()
    }

    /// Whether the node is known.
    pub fn contains_node(&self, id: &str) -> bool {
        self.ordered.contains_key(id)
    }

    /// The node a task is accounted on.
    pub fn task_node(&self, task_id: &str) -> Option<&str> {
        self.tasks
            .get(task_id)
            .map(|r| &*self.slots[r.slot as usize].id)
    }

    /// Reserved resources and task count on a node (also for an unknown node that has tasks).
    pub fn node_usage(&self, node_id: &str) -> Option<NodeUsage> {
        let usage = &self.slots[*self.by_id.get(node_id)? as usize].usage;
        let saturate = |v: i128| v.clamp(i64::MIN.into(), i64::MAX.into()) as i64;
        Some(NodeUsage {
            reserved: Resources::new(saturate(usage.cpu), saturate(usage.memory)),
            tasks: usage.tasks as usize,
        })
    }

    /// Number of tasks of a service on a node.
    pub fn service_tasks_on_node(&self, service_id: &str, node_id: &str) -> usize {
        match (self.services.get(service_id), self.by_id.get(node_id)) {
            (Some(&service), Some(&slot)) => self.service_count(service, slot) as usize,
            _ => 0,
        }
    }

    /// Number of tasks of a service.
    pub fn service_task_count(&self, service_id: &str) -> usize {
        self.services
            .get(service_id)
            .map_or(0, |&s| self.service_tasks[s as usize].tasks as usize)
    }

    /// Brings `order` up to date with the known nodes.
    pub(crate) fn refresh_order(&mut self) {
        if self.order.len() != self.ordered.len() {
            self.order = self.ordered.values().copied().collect();
        }
    }

    /// Makes room for `more` tasks.
    pub(crate) fn reserve_tasks(&mut self, more: usize) {
        self.tasks.reserve(more);
    }

    /// Tasks of `service` on node `slot`.
    pub(crate) fn service_count(&self, service: u32, slot: u32) -> u32 {
        self.service_tasks[service as usize]
            .per_node
            .get(&slot)
            .copied()
            .unwrap_or(0)
    }

    /// The service's index, creating an entry with no tasks if needed.
    pub(crate) fn service_for(&mut self, service_id: &str) -> u32 {
        if let Some(&service) = self.services.get(service_id) {
            return service;
        }
        let entry = ServiceTasks {
            name: service_id.into(),
            tasks: 0,
            per_node: FastMap::default(),
        };
        let service = match self.free_services.pop() {
            Some(service) => {
                self.service_tasks[service as usize] = entry;
                service
            }
            None => {
                self.service_tasks.push(entry);
                u32::try_from(self.service_tasks.len() - 1).expect("fewer than 2^32 services")
            }
        };
        self.services.insert(service_id.into(), service);
        service
    }

    /// Drops the service's entry if it has no tasks left.
    pub(crate) fn free_service_if_unused(&mut self, service: u32) {
        let entry = &mut self.service_tasks[service as usize];
        if entry.tasks == 0 {
            let name = std::mem::take(&mut entry.name);
            entry.per_node = FastMap::default();
            self.services.remove(&name);
            self.free_services.push(service);
        }
    }

    /// Records one task on `slot`; returns the service's new task count on that node.
    pub(crate) fn account(
        &mut self,
        slot: u32,
        service: u32,
        res: Resources,
        ports: &[u32],
    ) -> u32 {
        let usage = &mut self.slots[slot as usize].usage;
        usage.cpu += i128::from(res.nano_cpus);
        usage.memory += i128::from(res.memory_bytes);
        usage.tasks += 1;
        for &port in ports {
            *usage.ports.entry(port).or_insert(0) += 1;
        }
        let entry = &mut self.service_tasks[service as usize];
        entry.tasks += 1;
        let count = entry.per_node.entry(slot).or_insert(0);
        *count += 1;
        *count
    }

    /// Records a task placed by [`Scheduler::schedule`], replacing a same-ID task of the batch.
    pub(crate) fn record_placed(
        &mut self,
        task_id: &str,
        slot: u32,
        service: u32,
        res: Resources,
        ports: &[(Protocol, u16)],
    ) {
        let record = TaskRecord {
            slot,
            service,
            reservations: res,
            ports: ports.into(),
        };
        if let Some(old) = self.tasks.insert(task_id.into(), record) {
            self.unaccount(old);
        }
    }

    fn unaccount(&mut self, record: TaskRecord) {
        let TaskRecord {
            slot,
            service,
            reservations,
            ports,
        } = record;
        let usage = &mut self.slots[slot as usize].usage;
        usage.cpu -= i128::from(reservations.nano_cpus);
        usage.memory -= i128::from(reservations.memory_bytes);
        usage.tasks -= 1;
        for &(protocol, port) in ports.iter() {
            let key = port_key(protocol, port);
            if let Some(count) = usage.ports.get_mut(&key) {
                *count -= 1;
                if *count == 0 {
                    usage.ports.remove(&key);
                }
            }
        }
        let entry = &mut self.service_tasks[service as usize];
        entry.tasks -= 1;
        if let Some(count) = entry.per_node.get_mut(&slot) {
            *count -= 1;
            if *count == 0 {
                entry.per_node.remove(&slot);
            }
        }
        self.free_service_if_unused(service);
        self.free_slot_if_unused(slot);
    }

    fn slot_for(&mut self, id: &str) -> u32 {
        if let Some(&slot) = self.by_id.get(id) {
            return slot;
        }
        let id: NodeId = Arc::from(id);
        let node = NodeSlot {
            id: id.clone(),
            attrs: None,
            usage: Usage::default(),
        };
        let slot = match self.free_slots.pop() {
            Some(slot) => {
                self.slots[slot as usize] = node;
                slot
            }
            None => {
                self.slots.push(node);
                u32::try_from(self.slots.len() - 1).expect("fewer than 2^32 nodes")
            }
        };
        self.by_id.insert(id, slot);
        slot
    }

    fn free_slot_if_unused(&mut self, slot: u32) {
        let node = &self.slots[slot as usize];
        if node.attrs.is_none() && node.usage.tasks == 0 {
            self.by_id.remove(&node.id);
            self.free_slots.push(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::ENGINE;

    fn labelled(id: &str, zone: &str) -> NodeInfo {
        let mut node = NodeInfo::new(id);
        node.labels.insert("zone".into(), zone.into());
        node.engine_labels.insert("ssd".into(), "true".into());
        node
    }

    #[test]
    fn labels_past_the_inline_ones_are_found_and_engine_labels_are_kept_apart() {
        let mut s = Scheduler::new();
        let mut node = labelled("n1", "a");
        for i in 0..6 {
            node.labels.insert(format!("k{i}"), format!("V{i}"));
        }
        node.engine_labels
            .insert("zone".into(), "engine-zone".into());
        s.upsert_node(node);
        let attrs = s.slots[0].attrs.as_ref().unwrap();
        let sym = |text: &str| s.interner.get(text).unwrap();
        assert_eq!(attrs.labels.get(sym("k5")), Some(sym("v5")));
        assert_eq!(attrs.labels.get(sym("zone")), Some(sym("a")));
        assert_eq!(
            attrs.labels.get(sym("zone") | ENGINE),
            Some(sym("engine-zone"))
        );
        assert_eq!(attrs.labels.get(sym("ssd")), None);
        assert_eq!(attrs.labels.get(sym("ssd") | ENGINE), Some(sym("true")));
        s.remove_node("n1");
        assert_eq!(s.interner.len(), 0);
    }

    #[test]
    fn removed_nodes_and_tasks_leave_nothing_behind() {
        let mut s = Scheduler::new();
        s.upsert_node(labelled("n1", "a"));
        s.upsert_node(labelled("n2", "b"));
        s.upsert_node(labelled("n1", "c"));
        let task = TaskInfo {
            id: "t1".into(),
            service_id: "web".into(),
            node_id: "n3".into(),
            ..TaskInfo::default()
        };
        s.add_task(task);
        s.remove_node("n1");
        s.remove_node("n2");
        assert_eq!(s.interner.len(), 0, "every interned string was released");
        assert_eq!(
            (s.by_id.len(), s.ordered.len()),
            (1, 0),
            "only the slot holding t1 is left"
        );
        s.remove_task("t1");
        assert!(s.by_id.is_empty() && s.services.is_empty() && s.tasks.is_empty());
        assert_eq!(s.free_slots.len(), s.slots.len());
        assert_eq!(s.free_services.len(), s.service_tasks.len());
    }
}
