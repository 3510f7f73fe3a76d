//! Flows on Kubernetes: the `PhoenixFlow` custom resource, the objects it becomes, the
//! controller that keeps them so, and the client behind `phoenix submit`, `status`, `list` and
//! `delete`. Nothing else in the engine depends on this module: `phoenix run` in a pod is the
//! same program as anywhere else.
//!
//! - [`crd`] — the resource type and its CustomResourceDefinition.
//! - [`bundle`] — a flow's files into a spec and back, and the [`bundle::FlowFacts`] the
//!   generator reads from the compiled flow.
//! - [`objects`] — the pure generator of the child objects (ConfigMap, Deployment, ...), used
//!   alike by `phoenix manifests --expand` and the controller.
//! - [`controller`] — `phoenix controller`: the reconciler and its status; [`lease`] elects
//!   one leader among its replicas.
//! - [`client`] — connecting, and the commands users run against a cluster.
//! - [`api`] — the control-plane API (`crate::api::router`) over PhoenixFlow resources, served
//!   by the controller.
//! - [`yaml`] — YAML in and out.
pub mod api;
pub mod bundle;
pub mod client;
pub mod controller;
pub mod crd;
pub mod lease;
pub mod objects;
pub mod yaml;
