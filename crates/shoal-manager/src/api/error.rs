//! API errors: a status code and Docker's `{"message": …}` body.

use crate::proposer::WriteError;
use crate::writes::WriteFailure;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use shoal_store::StoreError;

/// An error answered as `{"message": …}` with a status code.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Message.
    pub message: String,
}

impl ApiError {
    /// A status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    /// 409.
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, message)
    }

    /// 503: what a worker answers to cluster-management calls.
    pub fn not_a_manager() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "This node is not a swarm manager. Worker nodes can't be used to view or modify cluster state. \
             Please run this command on a manager node or promote the current node to a manager.",
        )
    }

    /// 503: what a node that is not in a swarm answers.
    pub fn no_swarm_manager() -> ApiError {
        ApiError::unavailable(
            "This node is not a swarm manager. Use \"docker swarm init\" or \"docker swarm join\" to connect this node to swarm and try again.",
        )
    }

    /// 503: init or join on a node already in a swarm.
    pub fn swarm_exists() -> ApiError {
        ApiError::unavailable(
            "This node is already part of a swarm. Use \"docker swarm leave\" to leave this swarm and join another one.",
        )
    }

    /// 503: leave on a node in no swarm.
    pub fn no_swarm() -> ApiError {
        ApiError::unavailable("This node is not part of a swarm")
    }

    /// 409: unlock on a node that is not locked.
    pub fn not_locked() -> ApiError {
        ApiError::conflict("swarm is not locked")
    }

    /// 503: a manager whose keys are locked.
    pub fn locked() -> ApiError {
        ApiError::unavailable(
            "Swarm is encrypted and needs to be unlocked before it can be used. Please use \"docker swarm unlock\" to unlock it.",
        )
    }

    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, message)
    }

    /// 503 with a message.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }

    /// 500.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(serde_json::json!({ "message": self.message })),
        )
            .into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        let status = match &e {
            StoreError::NotFound(..) => StatusCode::NOT_FOUND,
            StoreError::Exists(..) | StoreError::NameConflict(..) => StatusCode::CONFLICT,
            StoreError::OutOfSequence => StatusCode::CONFLICT,
            StoreError::Invalid(_) => StatusCode::BAD_REQUEST,
        };
        let message = match &e {
            StoreError::NameConflict(..) | StoreError::Exists(..) => {
                format!("rpc error: code = AlreadyExists desc = {e}")
            }
            StoreError::OutOfSequence => {
                "rpc error: code = Unknown desc = update out of sequence".to_string()
            }
            _ => e.to_string(),
        };
        ApiError::new(status, message)
    }
}

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
    }
}

impl From<WriteFailure> for ApiError {
    fn from(e: WriteFailure) -> ApiError {
        match e {
            WriteFailure::Refused(s) => s.into(),
            WriteFailure::Write(w) => w.into(),
        }
    }
}

/// Turns an error answer that is not JSON (axum's own rejections: a bad
/// query string, a body too large, a method not allowed…) into Docker's
/// `{"message": …}` shape.
pub async fn json_errors(resp: axum::response::Response) -> axum::response::Response {
    use axum::http::header::CONTENT_TYPE;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_json = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 64 << 10)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_ascii_lowercase()
    } else {
        text
    };
    let mut out = ApiError::new(status, message).into_response();
    for (k, v) in &parts.headers {
        if k != CONTENT_TYPE && k != axum::http::header::CONTENT_LENGTH {
            out.headers_mut().insert(k, v.clone());
        }
    }
    out
}

/// Parses a JSON body; a malformed one is a 400 with serde's explanation.
pub fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "request body is empty: a JSON object is required",
        ));
    }
    let mut v: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
    drop_nulls(&mut v);
    serde_json::from_value(v).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// Removes `null` members of objects, recursively: as Go's decoder does for
/// Docker, `null` means "the zero value" (e.g. `"Labels": null`).
fn drop_nulls(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(drop_nulls);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

/// Parses a `?version=N` query value.
pub fn version_param(v: Option<&String>) -> Result<u64, ApiError> {
    match v {
        None => Err(ApiError::bad_request(
            "the version query parameter is required",
        )),
        Some(s) => s.parse().map_err(|_| {
            ApiError::bad_request(format!("invalid version {s:?}: expected a number"))
        }),
    }
}

/// Parses a boolean query value as Docker does (1/true/…).
pub fn bool_param(v: Option<&String>) -> bool {
    matches!(
        v.map(|s| s.to_ascii_lowercase()).as_deref(),
        Some("1" | "true" | "yes")
    )
}
