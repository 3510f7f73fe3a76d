//! The `PhoenixFlow` custom resource (`phoenix.dev/v1alpha1`): a flow's files and how to run it.
//!
//! `phoenix submit` and `phoenix manifests` fill the spec from the flow's `deploy` block; from
//! then on the resource is the truth (a `kubectl scale` or an edit wins over the block, which the
//! controller never reads). `manifests/01-crd.yaml` is [`crd_yaml`]'s output, held equal by a test.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const GROUP: &str = "phoenix.dev";
pub const VERSION: &str = "v1alpha1";
pub const API_VERSION: &str = "phoenix.dev/v1alpha1";
pub const KIND: &str = "PhoenixFlow";

/// Defaults, shared by the `deploy` block's documentation and the resource.
pub const DEFAULT_IMAGE: &str = "phoenix:latest";
pub const DEFAULT_CPU: &str = "500m";
pub const DEFAULT_MEMORY: &str = "512Mi";
pub const DEFAULT_PORT: i32 = 9898;
pub const DEFAULT_TARGET_CPU: i32 = 70;

/// A Kubernetes quantity (`500m`, `1.5`, `512Mi`, `2G`, `1e3`), as the API server parses it.
pub const QUANTITY_PATTERN: &str = r"^[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)(([KMGTPE]i)|[numkMGTPE]|([eE][+-]?[0-9]+))?$";

/// A flow running on the cluster.
// The lint reads repeated `printcolumn(type_ = ...)` arguments as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[kube(
    group = "phoenix.dev",
    version = "v1alpha1",
    kind = "PhoenixFlow",
    plural = "phoenixflows",
    singular = "phoenixflow",
    shortname = "pxf",
    category = "phoenix",
    namespaced,
    status = "PhoenixFlowStatus",
    derive = "PartialEq",
    doc = "A Phoenix flow running on the cluster: its .phx files and how to run them.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.replicas", description = "Pods wanted"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas", description = "Pods ready"),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Ready, Progressing or Degraded"
    ),
    printcolumn(
        name = "Hash",
        type_ = "string",
        json_path = ".status.hash",
        description = "Hash of the running flow files",
        priority = "1"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct PhoenixFlowSpec {
    /// The root flow file: a key of `files`.
    pub main: String,
    /// Every file of the flow, the root and its imports, by path relative to the flow's
    /// directory (`commerce.phx`, `common/schemas.phx`).
    pub files: BTreeMap<String, String>,
    /// Pods running the flow (Kafka consumer groups and SQS share the input among them). Unset
    /// with `autoscaling`: the autoscaler sets it, starting from `minReplicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,
    /// Scale with CPU between two bounds (a HorizontalPodAutoscaler on this resource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Autoscaling>,
    /// Container image running `phoenix` (on its `PATH`).
    #[serde(default = "default_image")]
    pub image: String,
    /// CPU and memory of each pod, requested and limited alike.
    #[serde(default)]
    pub resources: Resources,
    /// Port of `/health`, `/ready` and `/metrics` in the pod.
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// A Secret in the flow's namespace holding the flow's `env("NAME")` values, one key per
    /// name. Names read without a default must be present; the rest are optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Autoscaling {
    #[schemars(range(min = 1))]
    pub min_replicas: i32,
    #[schemars(range(min = 1))]
    pub max_replicas: i32,
    /// Target average CPU utilisation, percent of the request.
    #[serde(default = "default_target_cpu")]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu: i32,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    #[serde(default = "default_cpu")]
    #[schemars(regex(pattern = QUANTITY_PATTERN))]
    pub cpu: String,
    #[serde(default = "default_memory")]
    #[schemars(regex(pattern = QUANTITY_PATTERN))]
    pub memory: String,
}

impl Default for Resources {
    fn default() -> Self {
        Resources { cpu: default_cpu(), memory: default_memory() }
    }
}

fn default_image() -> String {
    DEFAULT_IMAGE.into()
}
fn default_cpu() -> String {
    DEFAULT_CPU.into()
}
fn default_memory() -> String {
    DEFAULT_MEMORY.into()
}
fn default_port() -> i32 {
    DEFAULT_PORT
}
fn default_target_cpu() -> i32 {
    DEFAULT_TARGET_CPU
}

/// What the controller last saw and did.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PhoenixFlowStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing` or `Degraded`: the condition that is true, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// `Ready`, `Progressing` and `Degraded`, each with a reason and a message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Hash of the flow files the pods run (also their `phoenix.dev/flow-hash` annotation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// Pods of the flow's Deployment.
    #[serde(default)]
    pub replicas: i32,
    /// Pods ready to work.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Label selector of the pods (read by the scale subresource and autoscalers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
}

/// A status condition, shaped like `metav1.Condition`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// One CamelCase word.
    pub reason: String,
    pub message: String,
    /// RFC 3339.
    pub last_transition_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The CustomResourceDefinition of `PhoenixFlow`.
pub fn crd() -> CustomResourceDefinition {
    PhoenixFlow::crd()
}

/// The CRD as `manifests/01-crd.yaml` holds it.
pub fn crd_yaml() -> String {
    let mut out = String::from("# Generated by `phoenix manifests --crd`; a test holds this file equal to it.\n");
    out.push_str(&super::yaml::to_yaml(&crd()).expect("the CRD serializes"));
    out
}
