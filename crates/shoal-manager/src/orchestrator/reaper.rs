//! The task reaper: keeps at most the cluster's task history limit of
//! retired tasks per slot (or node, for global services), always keeps each
//! slot's newest task, and deletes the tasks of removed services and
//! scaled-down slots once they have stopped.

use super::slots::{is_live, key_of, set_desired, Key};
use shoal_api::{NodeState, Task, TaskState};
use shoal_store::{Kind, Op, Tables};
use std::collections::BTreeMap;
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
    let mut groups: BTreeMap<(String, Key), Vec<Arc<Task>>> = BTreeMap::new();
    for task in t.tasks.iter() {
        let Some(svc) = t.services.get(&task.service_id) else {
            // The service is gone: stop the task, then forget it.
            if task.desired_state < TaskState::Remove {
                ops.push(set_desired(task, TaskState::Remove, now));
            } else if stopped_or_stranded(t, task) {
                ops.push(delete(task));
            }
            continue;
        };
        if task.desired_state == TaskState::Remove {
            if stopped_or_stranded(t, task) {
                ops.push(delete(task));
            }
            continue;
        }
        groups
            .entry((task.service_id.clone(), key_of(svc.spec.mode.kind(), task)))
            .or_default()
            .push(task.clone());
    }
    for tasks in groups.values_mut() {
        tasks.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        let retired: Vec<&Arc<Task>> = tasks
            .iter()
            .skip(1)
            .filter(|x| !is_live(x) && stopped_or_stranded(t, x))
            .collect();
        for old in retired.into_iter().skip(limit) {
            ops.push(delete(old));
        }
    }
}
