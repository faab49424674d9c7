//! `/secrets` and `/configs`: named blobs stored in the cluster.
//! A secret's data is never returned; a config's is.

use super::error::{json_body, version_param};
use super::nodes::filters;
use super::{ApiError, ApiState};
use crate::writes;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use shoal_api::{BlobSpec, Secret, Timestamp};
use shoal_store::{Expect, Kind, Object, Table};
use std::collections::HashMap;
use std::sync::Arc;

/// Largest secret or config (as Docker: 500 KiB).
const MAX_DATA: usize = 500 * 1024;

fn table(t: &shoal_store::Tables, kind: Kind) -> &Table<Secret> {
    if kind == Kind::Secret {
        &t.secrets
    } else {
        &t.configs
    }
}

/// Finds by exact ID, exact name, or unique ID prefix.
pub fn resolve<T>(table: &Table<T>, key: &str, what: &str) -> Result<Arc<T>, ApiError> {
    if let Some(o) = table.get(key).or_else(|| table.by_name(key)) {
        return Ok(o.clone());
    }
    let matches: Vec<_> = if key.is_empty() {
        Vec::new()
    } else {
        table.with_prefix(key).take(2).collect()
    };
    match matches.len() {
        1 => Ok(matches[0].clone()),
        0 => Err(ApiError::not_found(format!("{what} {key} not found"))),
        _ => Err(ApiError::bad_request(format!(
            "{what} {key} is ambiguous (2 or more matches found)"
        ))),
    }
}

fn wrap(kind: Kind, o: Secret) -> Object {
    if kind == Kind::Secret {
        Object::Secret(o.into())
    } else {
        Object::Config(o.into())
    }
}

fn shown(kind: Kind, mut o: Secret) -> Secret {
    if kind == Kind::Secret {
        o.spec.data.clear();
    }
    o
}

fn check_spec(kind: Kind, spec: &BlobSpec) -> Result<(), ApiError> {
    let what = kind.as_str();
    if spec.name.is_empty() {
        return Err(ApiError::bad_request(format!(
            "{what} name must not be empty"
        )));
    }
    if spec.name.len() > 64
        || !spec
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(ApiError::bad_request(format!(
            "invalid {what} name {:?}: only [a-zA-Z0-9-_.] are allowed, at most 64 characters",
            spec.name
        )));
    }
    let raw = decode_base64(&spec.data)
        .ok_or_else(|| ApiError::bad_request(format!("{what} data must be base64-encoded")))?;
    if raw.len() > MAX_DATA {
        return Err(ApiError::bad_request(format!(
            "{what} data is too large: {} bytes (max {MAX_DATA})",
            raw.len()
        )));
    }
    Ok(())
}

/// Standard base64 (with padding) decoding.
pub fn decode_base64(s: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let bytes = s.trim_end_matches('=').as_bytes();
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= val(*c)? << (18 - 6 * i);
        }
        let take = chunk.len().saturating_sub(1);
        for i in 0..take {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    Some(out)
}

macro_rules! handlers {
    ($kind:expr, $list:ident, $create:ident, $inspect:ident, $remove:ident, $update:ident) => {
        /// List.
        pub async fn $list(
            State(s): State<ApiState>,
            Query(q): Query<HashMap<String, String>>,
        ) -> Result<axum::response::Response, ApiError> {
            list($kind, s, q).await
        }
        /// Create.
        pub async fn $create(
            State(s): State<ApiState>,
            body: Bytes,
        ) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
            create($kind, s, body).await
        }
        /// Inspect.
        pub async fn $inspect(
            State(s): State<ApiState>,
            Path(id): Path<String>,
        ) -> Result<Json<Secret>, ApiError> {
            inspect($kind, s, id).await
        }
        /// Remove.
        pub async fn $remove(
            State(s): State<ApiState>,
            Path(id): Path<String>,
        ) -> Result<StatusCode, ApiError> {
            remove($kind, s, id).await
        }
        /// Update (labels only).
        pub async fn $update(
            State(s): State<ApiState>,
            Path(id): Path<String>,
            Query(q): Query<HashMap<String, String>>,
            body: Bytes,
        ) -> Result<StatusCode, ApiError> {
            update($kind, s, id, q, body).await
        }
    };
}

handlers!(
    Kind::Secret,
    list_secrets,
    create_secret,
    inspect_secret,
    remove_secret,
    update_secret
);
handlers!(
    Kind::Config,
    list_configs,
    create_config,
    inspect_config,
    remove_config,
    update_config
);

/// The list is taken as shared objects under the tables' lock (a pointer
/// each) and serialized a few at a time as the client reads it: a copy and
/// one body of 400,000 configs kept the leader's runtime thread busy long
/// enough for its followers to call an election.
async fn list(
    kind: Kind,
    s: ApiState,
    q: HashMap<String, String>,
) -> Result<axum::response::Response, ApiError> {
    let m = s.manager()?;
    let f = filters(&q)?;
    for k in f.keys() {
        if !["id", "name", "label", "names"].contains(&k.as_str()) {
            return Err(ApiError::bad_request(format!("invalid filter '{k}'")));
        }
    }
    let wanted = |o: &Secret| {
        f.get("id")
            .is_none_or(|v| v.iter().any(|i| o.id.starts_with(i.as_str())))
            && f.get("name")
                .or(f.get("names"))
                .is_none_or(|v| v.iter().any(|n| o.spec.name.starts_with(n.as_str())))
            && f.get("label").is_none_or(|ls| {
                ls.iter().all(|l| match l.split_once('=') {
                    Some((k, v)) => o.spec.labels.get(k).is_some_and(|x| x == v),
                    None => o.spec.labels.contains_key(l),
                })
            })
    };
    let out: Vec<Arc<Secret>> = m.store.view(|t| {
        table(t, kind)
            .iter()
            .filter(|o| wanted(o))
            .cloned()
            .collect()
    });
    Ok(super::json_array(out, move |o, buf| match kind {
        Kind::Secret => serde_json::to_writer(buf, &shown(kind, (**o).clone())),
        _ => serde_json::to_writer(buf, &**o),
    }))
}

async fn create(
    kind: Kind,
    s: ApiState,
    body: Bytes,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let m = s.manager()?;
    let spec: BlobSpec = json_body(&body)?;
    check_spec(kind, &spec)?;
    let now = Timestamp::now();
    let o = Secret {
        id: shoal_api::new_id(),
        created_at: now,
        updated_at: now,
        spec,
        ..Default::default()
    };
    let id = o.id.clone();
    writes::commit_one(&m.proposer, wrap(kind, o), Expect::Absent).await?;
    Ok((StatusCode::CREATED, Json(serde_json::json!({ "ID": id }))))
}

async fn inspect(kind: Kind, s: ApiState, id: String) -> Result<Json<Secret>, ApiError> {
    let m = s.manager()?;
    let o = m
        .store
        .view(|t| resolve(table(t, kind), &id, kind.as_str()))?;
    Ok(Json(shown(kind, (*o).clone())))
}

async fn remove(kind: Kind, s: ApiState, id: String) -> Result<StatusCode, ApiError> {
    let m = s.manager()?;
    let o = m
        .store
        .view(|t| resolve(table(t, kind), &id, kind.as_str()))?;
    let in_use: Vec<String> = m.store.view(|t| {
        t.services
            .iter()
            .filter(|svc| {
                let refs = svc.spec.task_template.container_spec.as_ref().map(|c| {
                    if kind == Kind::Secret {
                        &c.secrets
                    } else {
                        &c.configs
                    }
                });
                refs.is_some_and(|r| {
                    r.iter().any(|v| {
                        let key = if kind == Kind::Secret {
                            "SecretID"
                        } else {
                            "ConfigID"
                        };
                        v.get(key).and_then(|x| x.as_str()) == Some(o.id.as_str())
                    })
                })
            })
            .map(|svc| svc.spec.name.clone())
            .collect()
    });
    if !in_use.is_empty() {
        return Err(ApiError::bad_request(format!(
            "rpc error: code = InvalidArgument desc = {} '{}' is in use by the following service: {}",
            kind.as_str(),
            o.spec.name,
            in_use.join(", ")
        )));
    }
    writes::delete_one(&m.proposer, kind, &o.id, None).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn update(
    kind: Kind,
    s: ApiState,
    id: String,
    q: HashMap<String, String>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let m = s.manager()?;
    let version = version_param(q.get("version"))?;
    let spec: BlobSpec = json_body(&body)?;
    let cur = m
        .store
        .view(|t| resolve(table(t, kind), &id, kind.as_str()))?;
    let mut o = (*cur).clone();
    if spec.name != o.spec.name || (!spec.data.is_empty() && spec.data != o.spec.data) {
        return Err(ApiError::bad_request(format!(
            "only the labels of a {} can be updated",
            kind.as_str()
        )));
    }
    o.spec.labels = spec.labels;
    o.updated_at = Timestamp::now();
    writes::commit_one(&m.proposer, wrap(kind, o), Expect::Version(version)).await?;
    Ok(StatusCode::OK)
}

#[cfg(test)]
mod tests {
    use super::decode_base64;

    #[test]
    fn base64_decodes_and_rejects_garbage() {
        assert_eq!(decode_base64("aGk=").unwrap(), b"hi");
        assert_eq!(decode_base64("dG9wc2VjcmV0").unwrap(), b"topsecret");
        assert_eq!(decode_base64("").unwrap(), b"");
        assert!(decode_base64("a$b=").is_none());
        assert!(decode_base64("a").is_none());
    }
}
