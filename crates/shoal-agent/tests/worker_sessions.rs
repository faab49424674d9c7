//! The worker and the dispatcher's sessions: a report sent on a session
//! whose leader died before committing it is sent again on the next one.

mod common;

use common::Harness;
use shoal_agent::docker::EngineSlot;
use shoal_agent::worker::Worker;
use shoal_api::{Task, TaskState};
use shoal_net::rpc::TaskStatusReport;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;

/// The next report, if one comes within `wait`.
async fn next(
    rx: &mut UnboundedReceiver<Vec<TaskStatusReport>>,
    wait: Duration,
) -> Option<TaskStatusReport> {
    let batch = tokio::time::timeout(wait, rx.recv()).await.ok()??;
    assert_eq!(batch.len(), 1, "one report per batch: {batch:?}");
    batch.into_iter().next()
}

#[tokio::test]
async fn a_new_session_sends_again_the_reports_the_store_is_missing() {
    let h = Harness::new();
    let sleep = h.sleep_named("session-resync-sleep");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let worker = Worker::new("node-1", h.another_executor(), EngineSlot::default(), tx);
    let task: Task = serde_json::from_value(serde_json::json!({
        "ID": "task-resync-1",
        "ServiceID": "svc-1",
        "Slot": 1,
        "NodeID": "node-1",
        "Spec": {"Runtime": "process", "ProcessSpec": {"Command": sleep, "Args": ["60"]}},
        "Status": {"State": "assigned"},
        "DesiredState": "running",
    }))
    .unwrap();
    let names = BTreeMap::new();
    worker.assign(vec![task.clone()], &names).await;
    let running = loop {
        let r = next(&mut rx, Duration::from_secs(20))
            .await
            .expect("the task's reports");
        assert!(r.state <= TaskState::Running, "{r:?}");
        if r.state == TaskState::Running {
            break r;
        }
    };
    assert!(running.pid > 0, "{running:?}");

    // The store still says `assigned`: the reports went to a leader that
    // died before committing them. The same assignment set again on the
    // same session sends nothing (the reports may still be on their way).
    worker.assign(vec![task.clone()], &names).await;
    assert_eq!(next(&mut rx, Duration::from_millis(300)).await, None);

    // A new session: the last report goes again, as it was.
    worker.session_opened();
    worker.assign(vec![task.clone()], &names).await;
    let again = next(&mut rx, Duration::from_secs(5)).await;
    assert_eq!(again.as_ref(), Some(&running));

    // Once the store has it, a new session sends nothing.
    let mut stored = task.clone();
    stored.status.state = TaskState::Running;
    worker.session_opened();
    worker.assign(vec![stored], &names).await;
    assert_eq!(next(&mut rx, Duration::from_millis(300)).await, None);

    // No longer assigned: the worker removes it.
    worker.assign(Vec::new(), &names).await;
}
