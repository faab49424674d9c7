//! `/tasks`: list (with Docker's filters, including the private
//! `_up-to-date` one the progress poller uses) and inspect.

use super::blobs::resolve;
use super::nodes::filters;
use super::{ApiError, ApiState};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Json;
use shoal_api::{Task, TaskState};
use std::collections::HashMap;
use std::sync::Arc;

/// `GET /tasks`.
pub async fn list(
    State(s): State<ApiState>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let m = s.manager()?;
    let docker = super::services::is_docker_client(&headers);
    let f = filters(&q)?;
    for k in f.keys() {
        if ![
            "id",
            "name",
            "service",
            "node",
            "desired-state",
            "_up-to-date",
            "label",
            "runtime",
        ]
        .contains(&k.as_str())
        {
            return Err(ApiError::bad_request(format!("invalid filter '{k}'")));
        }
    }
    if let Some(states) = f.get("desired-state") {
        for st in states {
            if !["running", "shutdown", "accepted"].contains(&st.as_str()) {
                return Err(ApiError::bad_request(format!(
                    "invalid filter 'desired-state={st}': use running, shutdown or accepted"
                )));
            }
        }
    }
    let out = m.store.view(|t| {
        let service_ids: Option<Vec<String>> = f.get("service").map(|keys| {
            keys.iter()
                .filter_map(|k| {
                    resolve(&t.services, k, "service")
                        .ok()
                        .map(|s| s.id.clone())
                })
                .collect()
        });
        let node_ids: Option<Vec<String>> = f.get("node").map(|keys| {
            keys.iter()
                .filter_map(|k| {
                    super::nodes::resolve(t, k)
                        .ok()
                        .map(|n| n.id.clone())
                        .or(Some(k.clone()))
                })
                .collect()
        });
        let candidates: Vec<&std::sync::Arc<Task>> = match (&service_ids, &node_ids) {
            (Some(ids), _) => ids.iter().flat_map(|id| t.tasks_of_service(id)).collect(),
            (None, Some(ids)) => ids.iter().flat_map(|id| t.tasks_on_node(id)).collect(),
            _ => t.tasks.iter().collect(),
        };
        candidates
            .into_iter()
            .filter(|x| node_ids.as_ref().is_none_or(|ids| ids.contains(&x.node_id)))
            .filter(|x| {
                f.get("id")
                    .is_none_or(|v| v.iter().any(|i| x.id.starts_with(i.as_str())))
            })
            .filter(|x| {
                f.get("desired-state").is_none_or(|v| {
                    v.iter().any(|st| match st.as_str() {
                        "running" => x.desired_state <= TaskState::Running,
                        "shutdown" => x.desired_state > TaskState::Running,
                        _ => x.desired_state == TaskState::Accepted,
                    })
                })
            })
            .filter(|x| {
                f.get("_up-to-date").is_none_or(|v| {
                    let fresh = t
                        .services
                        .get(&x.service_id)
                        .is_some_and(|s| s.spec.task_template == *x.spec);
                    v.iter().any(|b| (b == "true" || b == "1") == fresh)
                })
            })
            .filter(|x| {
                f.get("label").is_none_or(|ls| {
                    let labels = t
                        .services
                        .get(&x.service_id)
                        .map(|s| s.spec.labels.clone())
                        .unwrap_or_default();
                    ls.iter().all(|l| match l.split_once('=') {
                        Some((k, v)) => labels.get(k).is_some_and(|y| y == v),
                        None => labels.contains_key(l),
                    })
                })
            })
            .filter(|x| {
                f.get("name").is_none_or(|v| {
                    let svc_name = t
                        .services
                        .get(&x.service_id)
                        .map(|s| s.spec.name.clone())
                        .unwrap_or_default();
                    let name = format!(
                        "{svc_name}.{}",
                        if x.slot > 0 {
                            x.slot.to_string()
                        } else {
                            x.node_id.clone()
                        }
                    );
                    v.iter().any(|n| name.starts_with(n.as_str()))
                })
            })
            .cloned()
            .collect::<Vec<Arc<Task>>>()
    });
    // The tasks are shared, not copied; they are serialized as the client reads.
    Ok(super::json_array(out, move |task, buf| {
        if docker {
            serde_json::to_writer(buf, &present((**task).clone(), true))
        } else {
            serde_json::to_writer(buf, &**task)
        }
    }))
}

/// `GET /tasks/{id}`.
pub async fn inspect(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Task>, ApiError> {
    let m = s.manager()?;
    let task = m.store.view(|t| resolve(&t.tasks, &id, "task"))?;
    Ok(Json(present(
        (*task).clone(),
        super::services::is_docker_client(&headers),
    )))
}

/// A task as the API shows it (see [`super::services::docker_view`]).
fn present(mut task: Task, docker: bool) -> Task {
    if docker {
        super::services::docker_view(std::sync::Arc::make_mut(&mut task.spec));
    }
    task
}
