//! The task reaper: keeps at most the cluster's task history limit of
//! retired tasks per slot (or node, for global services), always keeps each
//! slot's newest task, and deletes the tasks of removed services and
//! scaled-down slots once they have stopped.

use super::slots::{is_live, key_of, set_desired, Key};
use shoal_api::{NodeState, Task, TaskState};
use shoal_store::{Kind, Op, Tables};
use std::sync::Arc;
use std::time::SystemTime;

fn stopped_or_stranded(t: &Tables, task: &Task) -> bool {
    task.status.state.is_terminal()
        || task.node_id.is_empty()
        || t.nodes
            .get(&task.node_id)
            .is_none_or(|n| n.status.state == NodeState::Down)
}

fn delete(task: &Task) -> Op {
    Op::Delete {
        kind: Kind::Task,
        id: task.id.clone(),
        expect: Some(task.version.index),
    }
}

/// Adds the reaper's deletions to `ops`.
pub fn reap(t: &Tables, ops: &mut Vec<Op>) {
    let limit = t
        .cluster
        .as_ref()
        .map(|c| c.cluster.spec.task_history_limit())
        .unwrap_or(5)
        .max(0) as usize;
    let now = SystemTime::now();
    for task in t.tasks.iter() {
        if t.services.get(&task.service_id).is_none() {
            // The service is gone: stop the task, then forget it.
            if task.desired_state < TaskState::Remove {
                ops.push(set_desired(task, TaskState::Remove, now));
            } else if stopped_or_stranded(t, task) {
                ops.push(delete(task));
            }
        } else if task.desired_state == TaskState::Remove && stopped_or_stranded(t, task) {
            ops.push(delete(task));
        }
    }
    // Per service, its tasks sorted by key then newest first: each run of
    // one key is a slot's (or node's) history. One vector per service, not
    // one per slot (100,000 slots are common).
    for svc in t.services.iter() {
        let kind = svc.spec.mode.kind();
        let mut tasks: Vec<(Key, &Arc<Task>)> = t
            .tasks_of_service(&svc.id)
            .filter(|x| x.desired_state != TaskState::Remove)
            .map(|x| (key_of(kind, x), x))
            .collect();
        tasks.sort_by(|(ka, a), (kb, b)| {
            ka.cmp(kb)
                .then(b.created_at.cmp(&a.created_at))
                .then(b.id.cmp(&a.id))
        });
        for run in tasks.chunk_by(|(ka, _), (kb, _)| ka == kb) {
            let retired = run
                .iter()
                .skip(1)
                .map(|(_, x)| *x)
                .filter(|x| !is_live(x) && stopped_or_stranded(t, x));
            for old in retired.skip(limit) {
                ops.push(delete(old));
            }
        }
    }
}
