//! Placing a batch of tasks of one service: filters once, then one tree walk per task.
//!
//! 1. Resolve the group's requirements and run the filters over all nodes once, in node-ID order
//!    (the rank used for tie-breaks); nodes that pass are the batch's candidates.
//! 2. With soft constraints, first place on the candidates that also satisfy them; when none of
//!    those has room left, continue on all candidates.
//! 3. Group the candidates by the placement preferences ([`crate::preference`]) and place task by
//!    task; each placement is recorded in the state at once, so counts, resources and ports seen by
//!    the next task (and the next batch) include it.
//! 4. When a task fits nowhere, the tasks after it cannot fit either (the batch only fills nodes),
//!    so the rest of the batch shares one [`Explanation`], computed by re-running the filters.

use crate::explain::Explanation;
use crate::filter::{NodeAttr, Requirements};
use crate::node::NodeAttrs;
use crate::preference::{Candidate, Preference, Tree};
use crate::state::{Scheduler, Usage};
use crate::strategy::{fraction, NodeLoad, Strategy};
use crate::TaskGroup;

/// The outcome of [`Scheduler::schedule`], borrowing node IDs from the scheduler.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement<'a> {
    /// The ID of the node chosen for each task, in the order of the task IDs given; tasks past its
    /// end were not placed.
    pub nodes: Vec<&'a str>,
    /// Why the tasks past the end of `nodes` were not placed; `None` when all were.
    pub explanation: Option<Explanation>,
}

impl Placement<'_> {
    /// Whether every task of the batch was placed.
    pub fn is_complete(&self) -> bool {
        self.explanation.is_none()
    }

    /// The node of the `index`th task of the batch, if it was placed.
    pub fn node(&self, index: usize) -> Option<&str> {
        self.nodes.get(index).copied()
    }
}

/// One batch: the group, its resolved requirements and the service's index.
struct Batch<'g> {
    group: &'g TaskGroup,
    req: Requirements,
    service: u32,
}

/// What a strategy sees of a node (fullness only matters to, and is only computed for, binpack).
fn load_of(
    strategy: Strategy,
    attrs: &NodeAttrs,
    usage: &Usage,
    service_tasks: u32,
    rank: u32,
) -> NodeLoad {
    let fullness = match strategy {
        Strategy::Binpack => {
            fraction(usage.cpu, attrs.capacity.nano_cpus)
                + fraction(usage.memory, attrs.capacity.memory_bytes)
        }
        Strategy::Spread | Strategy::Random => 0,
    };
    NodeLoad {
        service_tasks,
        tasks: usage.tasks,
        fullness,
        rank,
    }
}

impl Scheduler {
    /// Places one new task of `group` per ID in `task_ids` and records each placement in the state
    /// (as [`Scheduler::add_task`] would). IDs already known are first removed, so rescheduling a
    /// task moves it; IDs should be distinct within a batch.
    pub fn schedule<T: AsRef<str>>(&mut self, group: &TaskGroup, task_ids: &[T]) -> Placement<'_> {
        for id in task_ids {
            self.remove_task(id.as_ref());
        }
        if task_ids.is_empty() {
            return Placement::default();
        }
        self.refresh_order();
        self.reserve_tasks(task_ids.len());
        let req = Requirements::resolve(group, &self.interner);
        let batch = Batch {
            group,
            req,
            service: self.service_for(&group.service_id),
        };
        let (all, soft) = self.candidates(&batch);
        let mut placed = Vec::with_capacity(task_ids.len());
        if !batch.req.has_soft() {
            self.place(&batch, all.into_iter(), task_ids, &mut placed);
        } else {
            self.place(&batch, soft.into_iter(), task_ids, &mut placed);
            if placed.len() < task_ids.len() {
                let refreshed = self.refresh(&batch, all);
                self.place(&batch, refreshed.into_iter(), task_ids, &mut placed);
            }
        }
        let explanation = (placed.len() < task_ids.len()).then(|| self.explain(&batch));
        self.free_service_if_unused(batch.service);
        let nodes = placed
            .into_iter()
            .map(|slot| &*self.slots[slot as usize].id)
            .collect();
        Placement { nodes, explanation }
    }

    /// Nodes passing all filters, with their loads: (all of them, those also satisfying the soft
    /// constraints — empty when there are none).
    fn candidates(&self, batch: &Batch) -> (Vec<Candidate>, Vec<Candidate>) {
        let mut all = Vec::new();
        let mut soft = Vec::new();
        for (rank, &slot) in self.order.iter().enumerate() {
            let node = &self.slots[slot as usize];
            let Some(attrs) = &node.attrs else { continue };
            let svc = self.service_count(batch.service, slot);
            if batch.req.check(attrs, &node.usage, svc).is_err() {
                continue;
            }
            let candidate = (
                slot,
                load_of(batch.group.strategy, attrs, &node.usage, svc, rank as u32),
            );
            if batch.req.has_soft() && batch.req.satisfies_soft(attrs) {
                soft.push(candidate);
            }
            all.push(candidate);
        }
        (all, soft)
    }

    /// The candidates with their loads after the soft pass, without the nodes it filled up.
    fn refresh(&self, batch: &Batch, candidates: Vec<Candidate>) -> Vec<Candidate> {
        let refreshed = candidates.into_iter().filter_map(|(slot, load)| {
            let node = &self.slots[slot as usize];
            let attrs = node.attrs.as_ref()?;
            let svc = self.service_count(batch.service, slot);
            let fits = batch.req.still_fits(attrs, &node.usage, svc);
            fits.then(|| {
                (
                    slot,
                    load_of(batch.group.strategy, attrs, &node.usage, svc, load.rank),
                )
            })
        });
        refreshed.collect()
    }

    /// Places tasks `task_ids[placed.len()..]` on `candidates` until all are placed or none fits;
    /// `placed` receives the chosen node slots.
    fn place<T: AsRef<str>>(
        &mut self,
        batch: &Batch,
        candidates: impl Iterator<Item = Candidate>,
        task_ids: &[T],
        placed: &mut Vec<u32>,
    ) {
        let Batch {
            group,
            req,
            service,
        } = batch;
        let preferences: Vec<NodeAttr> = group
            .preferences
            .iter()
            .map(|Preference::Spread(attribute)| NodeAttr::resolve(attribute, &self.interner))
            .collect();
        let mut tree = Tree::build(
            group.strategy,
            &preferences,
            candidates,
            |slot, attr| {
                self.slots[slot as usize]
                    .attrs
                    .as_ref()
                    .and_then(|a| attr.value(a))
            },
            |sym| self.interner.resolve(sym),
        );
        let mut rng = self.rng;
        for task_id in &task_ids[placed.len()..] {
            let mut commit = |slot: u32, rank: u32| {
                let svc = self.account(slot, *service, group.reservations, req.ports());
                self.record_placed(
                    task_id.as_ref(),
                    slot,
                    *service,
                    group.reservations,
                    &group.host_ports,
                );
                let node = &self.slots[slot as usize];
                let attrs = node.attrs.as_ref()?;
                let fits = req.still_fits(attrs, &node.usage, svc);
                fits.then(|| load_of(group.strategy, attrs, &node.usage, svc, rank))
            };
            let Some(slot) = tree.place(&mut rng, &mut commit) else {
                break;
            };
            placed.push(slot);
        }
        self.rng = rng;
    }

    /// Counts, per filter, the nodes that reject a task of the group now.
    fn explain(&self, batch: &Batch) -> Explanation {
        let mut explanation = Explanation {
            nodes: self.order.len(),
            max_replicas_per_node: batch.group.max_replicas_per_node,
            executor: batch.group.executor.clone(),
            ..Explanation::default()
        };
        for &slot in &self.order {
            let node = &self.slots[slot as usize];
            let Some(attrs) = &node.attrs else { continue };
            let svc = self.service_count(batch.service, slot);
            if let Err(rejection) = batch.req.check(attrs, &node.usage, svc) {
                explanation.record(rejection);
            }
        }
        explanation
    }
}
