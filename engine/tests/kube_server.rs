//! The Kubernetes test server (`scripts/kube`, `support::kube`) does what the controller's tests
//! need: CRDs with status and scale subresources applied server-side, `kubectl scale` on a custom
//! resource, Deployments whose pods are marked ready, garbage collection of owned objects, and
//! ServiceAccount tokens held to their RBAC. Everything runs on 127.0.0.1.

mod support;

use serde_json::Value;
use std::time::Duration;
use support::kube::{KubeServer, kubectl_with};

const LIMIT: Duration = Duration::from_secs(60);

const CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.test.phoenix.dev
spec:
  group: test.phoenix.dev
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
  versions:
  - name: v1alpha1
    served: true
    storage: true
    subresources:
      status: {}
      scale:
        specReplicasPath: .spec.replicas
        statusReplicasPath: .status.replicas
    additionalPrinterColumns:
    - {name: Replicas, type: integer, jsonPath: .spec.replicas}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [text]
            properties:
              text: {type: string}
              replicas: {type: integer, minimum: 0}
          status:
            type: object
            properties:
              replicas: {type: integer}
"#;

fn deployment(owner_uid: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: w1
  namespace: smoke
  ownerReferences:
  - {{apiVersion: test.phoenix.dev/v1alpha1, kind: Widget, name: w1, uid: "{owner_uid}", controller: true, blockOwnerDeletion: true}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: w1}}}}
  template:
    metadata: {{labels: {{app: w1}}}}
    spec:
      containers:
      - {{name: main, image: "phoenix.invalid/phoenix:test"}}
"#
    )
}

fn configmap(owner_uid: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: ConfigMap
metadata:
  name: w1
  namespace: smoke
  ownerReferences:
  - {{apiVersion: test.phoenix.dev/v1alpha1, kind: Widget, name: w1, uid: "{owner_uid}", controller: true, blockOwnerDeletion: true}}
data: {{flow.phx: "x"}}
"#
    )
}

const ROBOT: &str = r#"
apiVersion: v1
kind: ServiceAccount
metadata: {name: robot, namespace: smoke}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: robot, namespace: smoke}
rules:
- {apiGroups: [""], resources: [configmaps], verbs: [get, list]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: robot, namespace: smoke}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: robot}
subjects:
- {kind: ServiceAccount, name: robot, namespace: smoke}
"#;

fn int(v: &Value, pointer: &str) -> i64 {
    v.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

#[test]
fn the_test_server_serves_what_the_controller_needs() {
    let k = KubeServer::start();
    let version = k.kubectl(&["version", "-o", "json"]);
    assert!(version.contains("\"gitVersion\": \"v1.20.2\""), "server version: {version}");
    k.kubectl(&["create", "namespace", "smoke"]);

    // A CRD with status and scale subresources, applied server-side.
    k.apply(CRD);
    k.kubectl(&["wait", "--for=condition=Established", "--timeout=60s", "crd/widgets.test.phoenix.dev"]);

    // A custom resource, scaled through its scale subresource.
    k.apply("apiVersion: test.phoenix.dev/v1alpha1\nkind: Widget\nmetadata: {name: w1, namespace: smoke}\nspec: {text: hello, replicas: 1}\n");
    k.kubectl(&["scale", "-n", "smoke", "widget/w1", "--replicas=3"]);
    let w1 = k.get_json(&["-n", "smoke", "widget", "w1"]);
    assert_eq!(int(&w1, "/spec/replicas"), 3, "{w1}");
    let table = k.kubectl(&["get", "-n", "smoke", "widgets"]);
    assert!(table.contains("REPLICAS") && table.contains('3'), "printer columns: {table}");
    let uid = w1["metadata"]["uid"].as_str().expect("a uid").to_string();

    // A Deployment owned by the custom resource: its pod, marked ready, makes it 1/1 ready.
    k.apply(&deployment(&uid));
    k.apply(&configmap(&uid));
    k.wait_for("the Deployment's pod to be created and marked ready", LIMIT, || {
        !k.mark_pods_ready("smoke", "app=w1").is_empty()
    });
    k.wait_for("the Deployment to report 1 ready replica", LIMIT, || {
        let d = k.get_json(&["-n", "smoke", "deployment", "w1"]);
        int(&d, "/status/readyReplicas") == 1 && int(&d, "/status/availableReplicas") == 1
    });
    let pod = k.get_json(&["-n", "smoke", "pods", "-l", "app=w1"]);
    assert_eq!(pod["items"][0]["status"]["phase"], "Running", "{pod}");
    assert!(k.mark_pods_ready("smoke", "app=w1").is_empty(), "a ready pod is not marked again");

    // A ServiceAccount's token is held to its RBAC: configmaps yes, secrets no (403).
    k.apply(ROBOT);
    let robot = k.service_account_kubeconfig("smoke", "robot");
    let allowed = kubectl_with(&robot, k.dir(), &["get", "-n", "smoke", "configmap", "w1", "-o", "name"], None);
    assert!(allowed.status.success(), "robot reads configmaps: {}", String::from_utf8_lossy(&allowed.stderr));
    let refused = kubectl_with(&robot, k.dir(), &["get", "-n", "smoke", "secrets"], None);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && err.contains("(Forbidden)"), "robot may not list secrets: {err}");
    assert!(err.contains("system:serviceaccount:smoke:robot"), "{err}");

    // Deleting the custom resource collects what it owns: the Deployment, its ReplicaSet and
    // pod, and the ConfigMap.
    k.kubectl(&["delete", "-n", "smoke", "widget", "w1", "--wait=false"]);
    k.wait_for("the garbage collector to delete the owned objects", LIMIT, || {
        !k.exists(&["-n", "smoke", "configmap", "w1"])
            && !k.exists(&["-n", "smoke", "deployment", "w1"])
            && k.get_json(&["-n", "smoke", "replicasets,pods"])["items"].as_array().is_some_and(Vec::is_empty)
    });
}

/// Servers started at the same time are independent (own ports, own etcd).
#[test]
fn servers_run_side_by_side() {
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(KubeServer::start);
        let b = s.spawn(KubeServer::start);
        (a.join().expect("server a"), b.join().expect("server b"))
    });
    assert_ne!(a.server(), b.server());
    a.kubectl(&["create", "namespace", "only-in-a"]);
    assert!(a.exists(&["namespace", "only-in-a"]));
    assert!(!b.exists(&["namespace", "only-in-a"]));
    let dir = b.dir().to_path_buf();
    drop(b);
    assert!(!dir.exists(), "a stopped server's files are removed");
    assert!(a.exists(&["namespace", "only-in-a"]), "stopping one server leaves the other running");
}
