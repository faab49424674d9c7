//! Networks, secrets and configs: cluster objects with a name and a spec.

use crate::{Labels, Timestamp, Version};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// A secret (`GET /secrets` shape). `Spec.Data` is never returned by the API.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Secret {
    /// Secret ID.
    #[serde(rename = "ID")]
    pub id: String,
    /// Version of the last change.
    #[serde(rename = "Version", default)]
    pub version: Version,
    /// Creation time.
    #[serde(rename = "CreatedAt", default)]
    pub created_at: Timestamp,
    /// Last change time.
    #[serde(rename = "UpdatedAt", default)]
    pub updated_at: Timestamp,
    /// Name, labels, data.
    #[serde(rename = "Spec", default)]
    pub spec: BlobSpec,
}

/// A config (`GET /configs` shape). `Spec.Data` is returned.
pub type Config = Secret;

/// Spec of a secret or config.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BlobSpec {
    /// Unique name.
    #[serde(rename = "Name", default)]
    pub name: String,
    /// Labels.
    #[serde(rename = "Labels", default)]
    pub labels: Labels,
    /// Base64 data.
    #[serde(rename = "Data", default, skip_serializing_if = "String::is_empty")]
    pub data: String,
    /// Driver (secrets).
    #[serde(rename = "Driver", default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<Value>,
    /// Templating.
    #[serde(
        rename = "Templating",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub templating: Option<Value>,
}

/// A cluster-scoped network (rendered in `GET /networks` shape by the API).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Network {
    /// Network ID.
    #[serde(rename = "ID")]
    pub id: String,
    /// Version of the last change.
    #[serde(rename = "Version", default)]
    pub version: Version,
    /// Creation time.
    #[serde(rename = "CreatedAt", default)]
    pub created_at: Timestamp,
    /// Last change time.
    #[serde(rename = "UpdatedAt", default)]
    pub updated_at: Timestamp,
    /// What the user asked for.
    #[serde(rename = "Spec", default)]
    pub spec: NetworkSpec,
    /// Allocated subnet (e.g. `10.0.1.0/24`).
    #[serde(rename = "Subnet", default)]
    pub subnet: String,
    /// Gateway of the subnet.
    #[serde(rename = "Gateway", default)]
    pub gateway: String,
    /// VXLAN id.
    #[serde(rename = "VxlanID", default)]
    pub vxlan_id: u32,
}

/// Network create request (Docker `POST /networks/create` body).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkSpec {
    /// Unique name.
    #[serde(rename = "Name", default)]
    pub name: String,
    /// Driver (overlay).
    #[serde(rename = "Driver", default)]
    pub driver: String,
    /// Scope.
    #[serde(rename = "Scope", default)]
    pub scope: String,
    /// Internal network.
    #[serde(rename = "Internal", default)]
    pub internal: bool,
    /// Attachable by standalone containers.
    #[serde(rename = "Attachable", default)]
    pub attachable: bool,
    /// Ingress network.
    #[serde(rename = "Ingress", default)]
    pub ingress: bool,
    /// IPv6.
    #[serde(rename = "EnableIPv6", default)]
    pub enable_ipv6: bool,
    /// IPAM settings.
    #[serde(rename = "IPAM", default)]
    pub ipam: Option<Value>,
    /// Driver options.
    #[serde(rename = "Options", default)]
    pub options: Option<BTreeMap<String, String>>,
    /// Labels.
    #[serde(rename = "Labels", default)]
    pub labels: Option<Labels>,
}
