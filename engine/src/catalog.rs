//! The engine's [`Catalog`]: the standard library's functions plus the connector list.

use crate::connectors;
use datafusion_expr::ScalarUDF;
use phoenix_dsl::catalog::{Catalog, ConnectorSpec, Function, OptionSpec, OptionType, Role};
use phoenix_stdlib::Stdlib;
use std::sync::Arc;

#[derive(Debug)]
pub struct EngineCatalog {
    stdlib: Stdlib,
    connectors: Vec<ConnectorSpec>,
    deploy: Vec<OptionSpec>,
}

impl Default for EngineCatalog {
    fn default() -> Self {
        EngineCatalog::new()
    }
}

impl EngineCatalog {
    pub fn new() -> EngineCatalog {
        EngineCatalog { stdlib: Stdlib::new(), connectors: connectors::specs(), deploy: deploy_options() }
    }

    pub fn stdlib(&self) -> &Stdlib {
        &self.stdlib
    }
}

impl Catalog for EngineCatalog {
    fn connector(&self, name: &str, role: Role) -> Option<&ConnectorSpec> {
        self.connectors.iter().find(|c| c.name == name && c.role == role)
    }

    fn connectors(&self) -> Vec<&ConnectorSpec> {
        self.connectors.iter().collect()
    }

    fn function(&self, name: &str) -> Option<&dyn Function> {
        self.stdlib.get(name)
    }

    fn function_names(&self) -> Vec<&'static str> {
        self.stdlib.names()
    }

    fn deploy_options(&self) -> &[OptionSpec] {
        &self.deploy
    }

    fn get_field(&self) -> Arc<ScalarUDF> {
        self.stdlib.get_field()
    }
}

/// Options of the `deploy { }` block, read by `phoenix manifests` and `phoenix submit` (which
/// turn them into a `PhoenixFlow`'s spec, see `cluster::bundle`).
pub fn deploy_options() -> Vec<OptionSpec> {
    use crate::cluster::crd::{DEFAULT_CPU, DEFAULT_IMAGE, DEFAULT_MEMORY};
    vec![
        OptionSpec::new(
            "name",
            OptionType::String,
            "Name of the PhoenixFlow and its objects (default: the file name without `.phx`).",
        ),
        OptionSpec::new(
            "replicas",
            OptionType::Int,
            "Pods running the flow; Kafka groups and SQS share the input among them.",
        )
        .default("1"),
        OptionSpec::new("min_replicas", OptionType::Int, "With `max_replicas`: scale with CPU between these bounds."),
        OptionSpec::new("max_replicas", OptionType::Int, "Upper bound for autoscaling."),
        OptionSpec::new("target_cpu", OptionType::Int, "Autoscaling target CPU utilisation, percent.").default("70"),
        OptionSpec::new("cpu", OptionType::String, "CPU request and limit per pod (`500m`).").default(DEFAULT_CPU),
        OptionSpec::new("memory", OptionType::String, "Memory request and limit per pod (`512Mi`).")
            .default(DEFAULT_MEMORY),
        OptionSpec::new("image", OptionType::String, "Container image running `phoenix`.").default(DEFAULT_IMAGE),
        OptionSpec::new("namespace", OptionType::String, "Kubernetes namespace.").default("default"),
        OptionSpec::new("port", OptionType::Int, "Port of /health, /ready and /metrics.").default("9898"),
        OptionSpec::new(
            "secret",
            OptionType::String,
            "Secret holding the flow's `env()` values, one key per name, given to the pods.",
        ),
    ]
}
