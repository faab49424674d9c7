//! `/networks`: overlay networks as cluster objects (create, list, inspect,
//! remove), shown in the shape of Docker's `GET /networks`.
//!
//! Each network gets a subnet `10.0.N.0/24` and a VXLAN id `4096 + N`, with
//! the smallest `N ≥ 1` no other network uses (`N = 0` is left for an
//! ingress network, as Docker gives it 10.0.0.0/24 and VXLAN 4096). A user
//! subnet (`--subnet`) is kept as given if it overlaps no other network.
//! Containers are not attached to these networks yet: they are cluster
//! objects that services reference by ID (names are resolved on create).

use super::blobs::resolve;
use super::error::json_body;
use super::nodes::filters;
use super::{ApiError, ApiState};
use crate::writes;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Map, Value};
use shoal_api::{Network, NetworkSpec, Timestamp};
use shoal_store::{Expect, Kind, Object, Tables};
use std::collections::HashMap;
use std::net::Ipv4Addr;

/// The option Docker uses to show an overlay network's VXLAN id.
const VXLAN_OPTION: &str = "com.docker.network.driver.overlay.vxlanid_list";
/// First VXLAN id (Docker's ingress network has it).
const VXLAN_BASE: u32 = 4096;

/// Serializes network creation on this manager, so that two concurrent
/// creates do not pick the same subnet.
static CREATE_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A network in `GET /networks` shape.
pub fn render(n: &Network) -> Value {
    let mut options: Map<String, Value> = n
        .spec
        .options
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    options.insert(VXLAN_OPTION.into(), Value::String(n.vxlan_id.to_string()));
    let ipam_driver = n
        .spec
        .ipam
        .as_ref()
        .and_then(|i| i.get("Driver"))
        .and_then(Value::as_str)
        .filter(|d| !d.is_empty())
        .unwrap_or("default")
        .to_string();
    let ipam_options = n
        .spec
        .ipam
        .as_ref()
        .and_then(|i| i.get("Options"))
        .filter(|o| o.as_object().is_some_and(|m| !m.is_empty()))
        .cloned()
        .unwrap_or(Value::Null);
    let labels = match &n.spec.labels {
        Some(l) if !l.is_empty() => json!(l),
        _ => Value::Null,
    };
    json!({
        "Name": n.spec.name,
        "Id": n.id,
        "Created": n.created_at,
        "Scope": "swarm",
        "Driver": n.spec.driver,
        "EnableIPv6": n.spec.enable_ipv6,
        "IPAM": {
            "Driver": ipam_driver,
            "Options": ipam_options,
            "Config": [{"Subnet": n.subnet, "Gateway": n.gateway}],
        },
        "Internal": n.spec.internal,
        "Attachable": n.spec.attachable,
        "Ingress": n.spec.ingress,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": false,
        "Containers": null,
        "Options": options,
        "Labels": labels,
    })
}

/// An IPv4 CIDR block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cidr {
    base: u32,
    prefix: u8,
}

impl Cidr {
    fn parse(s: &str) -> Option<Cidr> {
        let (ip, len) = s.split_once('/')?;
        let ip: Ipv4Addr = ip.parse().ok()?;
        let prefix: u8 = len.parse().ok()?;
        if prefix > 32 {
            return None;
        }
        let base = u32::from(ip) & Cidr::mask(prefix);
        Some(Cidr { base, prefix })
    }

    fn mask(prefix: u8) -> u32 {
        if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        }
    }

    fn contains(&self, ip: u32) -> bool {
        ip & Cidr::mask(self.prefix) == self.base
    }

    fn overlaps(&self, other: &Cidr) -> bool {
        self.contains(other.base) || other.contains(self.base)
    }

    fn first_host(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base + 1)
    }

    fn text(self) -> String {
        format!("{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

/// The subnet and gateway a user asked for in `IPAM.Config[0]`, if any.
fn requested_subnet(spec: &NetworkSpec) -> Result<Option<(Cidr, String)>, ApiError> {
    let Some(ipam) = spec.ipam.as_ref().filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let ipam = ipam
        .as_object()
        .ok_or_else(|| ApiError::bad_request("invalid IPAM: expected a JSON object"))?;
    match ipam.get("Driver").and_then(Value::as_str) {
        None | Some("") | Some("default") => {}
        Some(d) => {
            return Err(ApiError::bad_request(format!(
                "IPAM driver {d:?} is not supported: use the default driver"
            )))
        }
    }
    let configs = match ipam.get("Config") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(a)) => a,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid IPAM.Config: expected a list",
            ))
        }
    };
    if configs.len() > 1 {
        return Err(ApiError::bad_request(
            "only one IPAM config (one subnet) is supported per network",
        ));
    }
    let Some(cfg) = configs.first() else {
        return Ok(None);
    };
    let field = |k: &str| -> Result<String, ApiError> {
        match cfg.get(k) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(ApiError::bad_request(format!(
                "invalid IPAM.Config {k}: expected a string"
            ))),
        }
    };
    let subnet = field("Subnet")?;
    let gateway = field("Gateway")?;
    if subnet.is_empty() {
        if !gateway.is_empty() {
            return Err(ApiError::bad_request("a gateway needs a subnet"));
        }
        return Ok(None);
    }
    let cidr = Cidr::parse(&subnet).ok_or_else(|| {
        ApiError::bad_request(format!(
            "invalid subnet {subnet:?}: expected an IPv4 CIDR such as 10.1.0.0/24"
        ))
    })?;
    if !(8..=30).contains(&cidr.prefix) {
        return Err(ApiError::bad_request(format!(
            "invalid subnet {subnet}: the prefix length must be between 8 and 30"
        )));
    }
    let gateway = if gateway.is_empty() {
        cidr.first_host().to_string()
    } else {
        let gw: Ipv4Addr = gateway.parse().map_err(|_| {
            ApiError::bad_request(format!(
                "invalid gateway {gateway:?}: expected an IPv4 address"
            ))
        })?;
        if !cidr.contains(u32::from(gw)) {
            return Err(ApiError::bad_request(format!(
                "gateway {gateway} is not in subnet {subnet}"
            )));
        }
        gw.to_string()
    };
    Ok(Some((cidr, gateway)))
}

/// Picks the subnet, gateway and VXLAN id of a new network.
fn allocate(
    t: &Tables,
    requested: Option<(Cidr, String)>,
) -> Result<(String, String, u32), ApiError> {
    let used: Vec<(Cidr, String)> = t
        .networks
        .iter()
        .filter_map(|n| Cidr::parse(&n.subnet).map(|c| (c, n.spec.name.clone())))
        .collect();
    let vxlans: Vec<u32> = t.networks.iter().map(|n| n.vxlan_id).collect();
    let free_n = |subnet_free: &dyn Fn(u32) -> bool| {
        (1..=255u32).find(|n| !vxlans.contains(&(VXLAN_BASE + n)) && subnet_free(*n))
    };
    match requested {
        Some((cidr, gateway)) => {
            if let Some((_, other)) = used.iter().find(|(c, _)| c.overlaps(&cidr)) {
                return Err(ApiError::bad_request(format!(
                    "invalid pool request: subnet {} overlaps with network {other}",
                    cidr.text()
                )));
            }
            let n = free_n(&|_| true)
                .ok_or_else(|| ApiError::conflict("no free VXLAN id left for a new network"))?;
            Ok((cidr.text(), gateway, VXLAN_BASE + n))
        }
        None => {
            let cidr_of = |n: u32| Cidr {
                base: u32::from(Ipv4Addr::new(10, 0, n as u8, 0)),
                prefix: 24,
            };
            let n = free_n(&|n| {
                let c = cidr_of(n);
                !used.iter().any(|(u, _)| u.overlaps(&c))
            })
            .ok_or_else(|| {
                ApiError::conflict(
                    "could not find an available, non-overlapping IPv4 address pool (10.0.1.0/24 to 10.0.255.0/24 are all in use)",
                )
            })?;
            let c = cidr_of(n);
            Ok((c.text(), c.first_host().to_string(), VXLAN_BASE + n))
        }
    }
}

fn valid_name(name: &str) -> bool {
    let mut cs = name.chars();
    matches!(cs.next(), Some(c) if c.is_ascii_alphanumeric())
        && cs.all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && name.len() <= 64
}

/// Checks a create request; fills the driver.
fn check(spec: &mut NetworkSpec, body: &Value) -> Result<(), ApiError> {
    if spec.name.is_empty() {
        return Err(ApiError::bad_request("network name must not be empty"));
    }
    if !valid_name(&spec.name) {
        return Err(ApiError::bad_request(format!(
            "invalid network name {:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed, at most 64 characters",
            spec.name
        )));
    }
    match spec.driver.as_str() {
        "" => spec.driver = "overlay".into(),
        "overlay" => {}
        other => {
            return Err(ApiError::bad_request(format!(
                "network driver {other:?} is not supported: shoal manages swarm-scoped overlay networks only (use -d overlay)"
            )))
        }
    }
    match spec.scope.as_str() {
        "" | "swarm" => spec.scope = "swarm".into(),
        other => {
            return Err(ApiError::bad_request(format!(
                "invalid scope {other:?}: overlay networks are swarm-scoped"
            )))
        }
    }
    if body.get("ConfigOnly").and_then(Value::as_bool) == Some(true) {
        return Err(ApiError::bad_request(
            "config-only networks are not supported",
        ));
    }
    if let Some(from) = body.get("ConfigFrom").filter(|v| !v.is_null()) {
        let name = from.get("Network").and_then(Value::as_str).unwrap_or("");
        if !name.is_empty() {
            return Err(ApiError::bad_request(
                "networks created from a config network are not supported",
            ));
        }
    }
    if spec.enable_ipv6 {
        return Err(ApiError::bad_request("IPv6 networks are not supported"));
    }
    Ok(())
}

/// `POST /networks/create` → 201 `{"Id":…,"Warning":""}`.
pub async fn create(
    State(s): State<ApiState>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let m = s.manager()?;
    let raw: Value = json_body(&body)?;
    if !raw.is_object() {
        return Err(ApiError::bad_request(
            "invalid JSON body: expected a JSON object",
        ));
    }
    let mut spec: NetworkSpec = serde_json::from_value(raw.clone())
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
    check(&mut spec, &raw)?;
    let requested = requested_subnet(&spec)?;
    let _guard = CREATE_LOCK.lock().await;
    let net = m.store.view(|t| {
        if t.networks.by_name(&spec.name).is_some() {
            return Err(ApiError::conflict(format!(
                "network with name {} already exists",
                spec.name
            )));
        }
        if spec.ingress && t.networks.iter().any(|n| n.spec.ingress) {
            return Err(ApiError::bad_request(
                "rpc error: code = AlreadyExists desc = ingress network already exists",
            ));
        }
        let (subnet, gateway, vxlan_id) = allocate(t, requested.clone())?;
        let now = Timestamp::now();
        Ok(Network {
            id: shoal_api::new_id(),
            created_at: now,
            updated_at: now,
            spec: spec.clone(),
            subnet,
            gateway,
            vxlan_id,
            ..Default::default()
        })
    })?;
    let id = net.id.clone();
    writes::commit_one(&m.proposer, Object::Network(net.into()), Expect::Absent).await?;
    Ok((StatusCode::CREATED, Json(json!({"Id": id, "Warning": ""}))))
}

/// `GET /networks?filters=…`.
pub async fn list(
    State(s): State<ApiState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Vec<Value>>, ApiError> {
    let m = s.manager()?;
    let f = filters(&q)?;
    for k in f.keys() {
        if !["id", "name", "label", "driver", "scope", "type"].contains(&k.as_str()) {
            return Err(ApiError::bad_request(format!("invalid filter '{k}'")));
        }
    }
    if let Some(types) = f.get("type") {
        if let Some(bad) = types.iter().find(|t| *t != "custom" && *t != "builtin") {
            return Err(ApiError::bad_request(format!(
                "invalid filter: 'type'='{bad}'"
            )));
        }
    }
    let mut nets: Vec<Network> = m
        .store
        .view(|t| t.networks.iter().map(|n| (**n).clone()).collect());
    nets.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
    let out = nets
        .iter()
        .filter(|n| {
            f.get("id")
                .is_none_or(|v| v.iter().any(|i| n.id.starts_with(i.as_str())))
        })
        .filter(|n| {
            f.get("name")
                .is_none_or(|v| v.iter().any(|x| n.spec.name.contains(x.as_str())))
        })
        .filter(|n| f.get("driver").is_none_or(|v| v.contains(&n.spec.driver)))
        .filter(|_| {
            f.get("scope")
                .is_none_or(|v| v.iter().any(|x| x == "swarm"))
        })
        .filter(|_| {
            f.get("type")
                .is_none_or(|v| v.iter().any(|x| x == "custom"))
        })
        .filter(|n| {
            f.get("label").is_none_or(|ls| {
                let labels = n.spec.labels.clone().unwrap_or_default();
                ls.iter().all(|l| match l.split_once('=') {
                    Some((k, v)) => labels.get(k).is_some_and(|y| y == v),
                    None => labels.contains_key(l),
                })
            })
        })
        .map(render)
        .collect();
    Ok(Json(out))
}

/// `GET /networks/{id}[?scope=swarm]`.
pub async fn inspect(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let m = s.manager()?;
    let scope = q.get("scope").map(String::as_str).unwrap_or("");
    if !["", "swarm", "global", "local"].contains(&scope) {
        return Err(ApiError::bad_request(format!(
            "invalid scope {scope:?}: use swarm, global or local"
        )));
    }
    let not_found = || ApiError::not_found(format!("network {id} not found"));
    if scope == "local" {
        return Err(not_found());
    }
    let n = m
        .store
        .view(|t| resolve(&t.networks, &id, "network"))
        .map_err(|e| {
            if e.status == StatusCode::NOT_FOUND {
                not_found()
            } else {
                e
            }
        })?;
    Ok(Json(render(&n)))
}

/// `DELETE /networks/{id}` → 204; refused while a service uses it.
pub async fn remove(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let m = s.manager()?;
    let (net, users) = m.store.view(|t| {
        let net = resolve(&t.networks, &id, "network")?;
        let users: Vec<String> = t
            .services
            .iter()
            .filter(|svc| {
                svc.spec
                    .task_template
                    .networks
                    .iter()
                    .any(|a| a.target == net.id)
            })
            .map(|svc| svc.spec.name.clone())
            .collect();
        Ok::<_, ApiError>((net, users))
    })?;
    if let Some(svc) = users.first() {
        return Err(ApiError::bad_request(format!(
            "rpc error: code = FailedPrecondition desc = network {} is in use by service {svc}",
            net.spec.name
        )));
    }
    writes::delete_one(&m.proposer, Kind::Network, &net.id, None).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_and_overlap() {
        let a = Cidr::parse("10.0.1.0/24").unwrap();
        let b = Cidr::parse("10.0.0.0/16").unwrap();
        let c = Cidr::parse("10.0.2.7/24").unwrap();
        assert_eq!(c.text(), "10.0.2.0/24");
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c));
        assert_eq!(a.first_host().to_string(), "10.0.1.1");
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert!(Cidr::parse("nope/24").is_none());
    }

    #[test]
    fn render_has_docker_shape() {
        let n = Network {
            id: "abc".into(),
            spec: NetworkSpec {
                name: "ov1".into(),
                driver: "overlay".into(),
                ..Default::default()
            },
            subnet: "10.0.1.0/24".into(),
            gateway: "10.0.1.1".into(),
            vxlan_id: 4097,
            ..Default::default()
        };
        let v = render(&n);
        assert_eq!(v["Id"], "abc");
        assert_eq!(v["Scope"], "swarm");
        assert_eq!(v["IPAM"]["Config"][0]["Subnet"], "10.0.1.0/24");
        assert_eq!(v["Options"][VXLAN_OPTION], "4097");
        assert!(v["Labels"].is_null());
    }
}
