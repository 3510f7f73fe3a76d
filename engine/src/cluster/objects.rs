//! The objects a `PhoenixFlow` becomes: a pure function of the resource and its compiled flow's
//! [`FlowFacts`], shared by `phoenix manifests --expand` and the controller, so what a user
//! previews is what the cluster gets.
//!
//! Every object is named after the flow. The pod runs `phoenix run` on the flow files mounted
//! from the ConfigMap (a directory mount, not `subPath`, so edits reach it), under the
//! restricted Pod Security profile; its annotation carries the flow's hash so a changed flow
//! rolls the pods.

use super::bundle::{FlowFacts, flow_hash};
use super::crd::{API_VERSION, KIND, PhoenixFlow};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec, MetricTarget,
    ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, HTTPGetAction, KeyToPath, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements,
    SeccompProfile, SecretKeySelector, SecurityContext, Service, ServiceAccount, ServicePort, ServiceSpec, Volume,
    VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use std::collections::BTreeMap;
use std::time::Duration;

/// Where the flow files are mounted in the pod.
pub const FLOW_DIR: &str = "/etc/phoenix/flow";
/// The pod's working directory, writable (an emptyDir): relative file sink paths land here.
pub const DATA_DIR: &str = "/var/lib/phoenix";
/// Pod annotation with the flow's hash.
pub const HASH_ANNOTATION: &str = "phoenix.dev/flow-hash";
/// The unprivileged user and group of the pod (the image's `nonroot`).
pub const USER_ID: i64 = 65532;
/// How much longer than the longest drain the kubelet waits before killing a stopping pod:
/// sinks flush and retry after the sources have drained.
const GRACE_MARGIN: Duration = Duration::from_secs(30);

/// The labels every object of a flow carries.
pub fn labels(name: &str) -> BTreeMap<String, String> {
    let mut l = selector_labels(name);
    l.insert("app.kubernetes.io/component".into(), "flow".into());
    l.insert("app.kubernetes.io/part-of".into(), "phoenix".into());
    l.insert("app.kubernetes.io/managed-by".into(), "phoenix-controller".into());
    l
}

/// The labels that pick a flow's pods (immutable in a Deployment: never add to them).
pub fn selector_labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "phoenix".to_string()),
        ("app.kubernetes.io/instance".to_string(), name.to_string()),
    ])
}

/// [`selector_labels`] as a label selector string (the scale subresource's `status.selector`).
pub fn selector(name: &str) -> String {
    selector_labels(name).iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// The objects of one flow, in the order they are applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Children {
    pub config_map: ConfigMap,
    pub service_account: ServiceAccount,
    pub service: Service,
    pub deployment: Deployment,
    /// When more than one pod may run.
    pub pdb: Option<PodDisruptionBudget>,
    /// When the flow autoscales.
    pub hpa: Option<HorizontalPodAutoscaler>,
    /// The flow's hash, as annotated on the pods.
    pub hash: String,
    /// What the user should know: `env()` values no Secret supplies, ports that cannot be known.
    pub notes: Vec<String>,
}

impl Children {
    /// Every object as JSON, in apply order.
    pub fn to_values(&self) -> Vec<serde_json::Value> {
        let mut out =
            vec![json(&self.config_map), json(&self.service_account), json(&self.service), json(&self.deployment)];
        out.extend(self.pdb.as_ref().map(json));
        out.extend(self.hpa.as_ref().map(json));
        out
    }
}

fn json<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).expect("Kubernetes objects serialize")
}

/// The pods a flow wants (the autoscaler's lower bound until it has set `replicas`).
pub fn wanted_replicas(flow: &PhoenixFlow) -> i32 {
    flow.spec.replicas.or(flow.spec.autoscaling.as_ref().map(|a| a.min_replicas)).unwrap_or(1)
}

/// ConfigMap keys allow only `[-._a-zA-Z0-9]`; each file gets a key and the mount maps it back
/// to its path.
pub fn config_map_keys<'a>(files: impl IntoIterator<Item = &'a String>) -> Vec<(String, String)> {
    let mut used = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for path in files {
        let base: String = path
            .replace('/', "__")
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || "-._".contains(c) { c } else { '_' })
            .collect();
        let base = if base.chars().all(|c| c == '.') { format!("_{base}") } else { base };
        let mut key = base.clone();
        let mut n = 1;
        while !used.insert(key.clone()) {
            n += 1;
            key = format!("{base}-{n}");
        }
        out.push((key, path.clone()));
    }
    out
}

/// Generate the objects of `flow`. Owner references are set when the resource has a uid (it
/// came from the cluster); `phoenix manifests --expand` works without one.
pub fn children(flow: &PhoenixFlow, facts: &FlowFacts) -> Children {
    let name = flow.metadata.name.clone().unwrap_or_default();
    let spec = &flow.spec;
    // Blocking: `phoenix delete --wait` (a foreground deletion) returns only once they are gone.
    let owner: Option<OwnerReference> =
        flow.controller_owner_ref(&()).map(|o| OwnerReference { block_owner_deletion: Some(true), ..o });
    let meta = || ObjectMeta {
        name: Some(name.clone()),
        namespace: flow.metadata.namespace.clone(),
        labels: Some(labels(&name)),
        owner_references: owner.clone().map(|o| vec![o]),
        ..ObjectMeta::default()
    };
    let hash = flow_hash(&spec.main, &spec.files);
    let mut notes = Vec::new();

    let keys = config_map_keys(spec.files.keys());
    let config_map = ConfigMap {
        metadata: meta(),
        data: Some(keys.iter().map(|(k, path)| (k.clone(), spec.files[path].clone())).collect()),
        ..ConfigMap::default()
    };

    let service_account = ServiceAccount {
        metadata: meta(),
        // A flow never talks to the Kubernetes API.
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    };

    let mut ports = vec![ContainerPort {
        name: Some("metrics".into()),
        container_port: spec.port,
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }];
    let mut service_ports = vec![ServicePort {
        name: Some("metrics".into()),
        port: spec.port,
        target_port: Some(IntOrString::String("metrics".into())),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    }];
    let mut args = vec![
        "run".to_string(),
        format!("{FLOW_DIR}/{}", spec.main),
        "--no-progress".into(),
        "--log-format".into(),
        "json".into(),
        "--metrics-address".into(),
        format!("0.0.0.0:{}", spec.port),
    ];
    let mut seen_ports = std::collections::BTreeSet::from([spec.port]);
    for h in &facts.http {
        let port = i32::from(h.port);
        if h.loopback {
            // Written for a laptop: in a pod, listen where the Service can reach it.
            args.push("--set".into());
            args.push(format!("{}.address=0.0.0.0:{}", h.source, h.port));
        }
        if !seen_ports.insert(port) {
            notes.push(format!("http source `{}` uses port {port}, which is already taken", h.source));
            continue;
        }
        let port_name = format!("http-{port}");
        ports.push(ContainerPort {
            name: Some(port_name.clone()),
            container_port: port,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        });
        service_ports.push(ServicePort {
            name: Some(port_name.clone()),
            port,
            target_port: Some(IntOrString::String(port_name)),
            protocol: Some("TCP".into()),
            ..ServicePort::default()
        });
    }

    let mut env = Vec::new();
    for (var, has_default) in &facts.env {
        if !is_env_name(var) {
            notes.push(format!("env(\"{var}\") cannot be a container environment variable; set a valid name"));
            continue;
        }
        match &spec.secret {
            Some(secret) => env.push(EnvVar {
                name: var.clone(),
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: secret.clone(),
                        key: var.clone(),
                        // A name read with a default may be left out of the Secret.
                        optional: Some(*has_default),
                    }),
                    ..EnvVarSource::default()
                }),
                ..EnvVar::default()
            }),
            None if !has_default => notes.push(format!(
                "env(\"{var}\") has no default and no Secret supplies it: name one with `deploy {{ secret = \"...\" }}`"
            )),
            None => {}
        }
    }

    let quantities = BTreeMap::from([
        ("cpu".to_string(), Quantity(spec.resources.cpu.clone())),
        ("memory".to_string(), Quantity(spec.resources.memory.clone())),
    ]);
    let probe = |path: &str, period: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("metrics".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(3),
        ..Probe::default()
    };
    let container = Container {
        name: "phoenix".into(),
        image: Some(spec.image.clone()),
        command: Some(vec!["phoenix".into()]),
        args: Some(args),
        working_dir: Some(DATA_DIR.into()),
        ports: Some(ports),
        env: (!env.is_empty()).then_some(env),
        resources: Some(ResourceRequirements {
            requests: Some(quantities.clone()),
            limits: Some(quantities),
            ..ResourceRequirements::default()
        }),
        liveness_probe: Some(Probe { initial_delay_seconds: Some(5), ..probe("/health", 10) }),
        readiness_probe: Some(probe("/ready", 5)),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(USER_ID),
            run_as_group: Some(USER_ID),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            privileged: Some(false),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Capabilities::default() }),
            seccomp_profile: Some(runtime_default()),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "flow".into(),
                mount_path: FLOW_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount { name: "data".into(), mount_path: DATA_DIR.into(), ..VolumeMount::default() },
            VolumeMount { name: "tmp".into(), mount_path: "/tmp".into(), ..VolumeMount::default() },
        ]),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Container::default()
    };
    let grace = (facts.drain + GRACE_MARGIN).as_secs() as i64;
    let pod_annotations = BTreeMap::from([
        (HASH_ANNOTATION.to_string(), hash.clone()),
        ("prometheus.io/scrape".to_string(), "true".to_string()),
        ("prometheus.io/port".to_string(), spec.port.to_string()),
        ("prometheus.io/path".to_string(), "/metrics".to_string()),
    ]);
    let empty_dir =
        |n: &str| Volume { name: n.into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Volume::default() };
    let pod = PodSpec {
        service_account_name: Some(name.clone()),
        automount_service_account_token: Some(false),
        termination_grace_period_seconds: Some(grace),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(USER_ID),
            run_as_group: Some(USER_ID),
            fs_group: Some(USER_ID),
            seccomp_profile: Some(runtime_default()),
            ..PodSecurityContext::default()
        }),
        containers: vec![container],
        volumes: Some(vec![
            Volume {
                name: "flow".into(),
                config_map: Some(ConfigMapVolumeSource {
                    name: name.clone(),
                    items: Some(
                        keys.iter()
                            .map(|(k, p)| KeyToPath { key: k.clone(), path: p.clone(), ..KeyToPath::default() })
                            .collect(),
                    ),
                    ..ConfigMapVolumeSource::default()
                }),
                ..Volume::default()
            },
            empty_dir("data"),
            empty_dir("tmp"),
        ]),
        ..PodSpec::default()
    };
    let deployment = Deployment {
        metadata: ObjectMeta {
            annotations: Some(BTreeMap::from([(HASH_ANNOTATION.to_string(), hash.clone())])),
            ..meta()
        },
        spec: DeploymentSpec {
            replicas: Some(wanted_replicas(flow)),
            selector: LabelSelector { match_labels: Some(selector_labels(&name)), ..LabelSelector::default() },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                // A new pod is ready before an old one stops: the flow never runs short.
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(0)),
                    max_surge: Some(IntOrString::Int(1)),
                }),
            }),
            revision_history_limit: Some(5),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(&name)),
                    annotations: Some(pod_annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..DeploymentSpec::default()
        },
        ..Deployment::default()
    };

    let service = Service {
        metadata: meta(),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector_labels(&name)),
            ports: Some(service_ports),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };

    let more_than_one = wanted_replicas(flow) > 1 || spec.autoscaling.as_ref().is_some_and(|a| a.max_replicas > 1);
    let pdb = more_than_one.then(|| PodDisruptionBudget {
        metadata: meta(),
        spec: Some(PodDisruptionBudgetSpec {
            // Voluntary evictions one pod at a time: consumer groups rebalance between them.
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector { match_labels: Some(selector_labels(&name)), ..LabelSelector::default() }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    });

    let hpa = spec.autoscaling.as_ref().map(|a| HorizontalPodAutoscaler {
        metadata: meta(),
        spec: HorizontalPodAutoscalerSpec {
            // The flow, through its scale subresource: the controller stays the Deployment's
            // only writer, and `spec.replicas` shows what the autoscaler chose.
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some(API_VERSION.into()),
                kind: KIND.into(),
                name: name.clone(),
            },
            min_replicas: Some(a.min_replicas),
            max_replicas: a.max_replicas,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".into(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".into(),
                    target: MetricTarget {
                        type_: "Utilization".into(),
                        average_utilization: Some(a.target_cpu),
                        ..MetricTarget::default()
                    },
                }),
                ..MetricSpec::default()
            }]),
            ..HorizontalPodAutoscalerSpec::default()
        },
        ..HorizontalPodAutoscaler::default()
    });

    Children { config_map, service_account, service, deployment, pdb, hpa, hash, notes }
}

fn runtime_default() -> SeccompProfile {
    SeccompProfile { type_: "RuntimeDefault".into(), ..SeccompProfile::default() }
}

/// What Kubernetes accepts as an environment variable name (and a Secret as a key).
fn is_env_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
}
