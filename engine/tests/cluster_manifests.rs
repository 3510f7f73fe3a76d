//! What `phoenix manifests` and the controller generate, without a cluster: the CRD file equals
//! the Rust type's, the objects of the test flows equal their golden files (`BLESS=1` rewrites
//! them), and every generated object passes PyPI `kubernetes-validate --strict` against current
//! Kubernetes schemas (the test API server is 1.20, which lacks `policy/v1` and
//! `autoscaling/v2`).

mod support;

use phoenix_engine::cluster::bundle::{self, FlowFacts, FlowFiles};
use phoenix_engine::cluster::crd::{self, PhoenixFlow};
use phoenix_engine::cluster::objects::{self, Children};
use phoenix_engine::cluster::yaml;
use phoenix_engine::options::Settings;
use phoenix_engine::{EngineCatalog, FsLoader};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace").to_path_buf()
}

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/cluster")
}

/// Compare with a golden file, or rewrite it under `BLESS=1`.
fn golden(path: &Path, actual: &str) {
    if std::env::var_os("BLESS").is_some() {
        std::fs::write(path, actual).expect("write golden file");
        return;
    }
    let expected = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        expected == actual,
        "{} differs from what is generated (run `BLESS=1 cargo test -p phoenix-engine --test cluster_manifests` to accept):\n{}",
        path.display(),
        first_difference(&expected, actual)
    );
}

fn first_difference(expected: &str, actual: &str) -> String {
    let (e, a): (Vec<_>, Vec<_>) = (expected.lines().collect(), actual.lines().collect());
    let i = e.iter().zip(&a).take_while(|(x, y)| x == y).count();
    format!(
        "line {}:\n  expected: {:?}\n  actual:   {:?}",
        i + 1,
        e.get(i).copied().unwrap_or("<end>"),
        a.get(i).copied().unwrap_or("<end>")
    )
}

/// A flow file compiled as `phoenix manifests` does, with the cwd of this test (the crate).
fn flow(path: &Path) -> (phoenix_dsl::Compilation, PhoenixFlow) {
    let catalog = EngineCatalog::new();
    let c = phoenix_dsl::compile(&path.to_string_lossy(), &FsLoader, &catalog);
    assert!(!c.has_errors(), "{}", c.render(false));
    let files = bundle::flow_files(&c, &std::env::current_dir().expect("cwd")).expect("bundle");
    let pf = bundle::phoenix_flow(&c, files, &Settings::default(), None, None).expect("a PhoenixFlow");
    (c, pf)
}

fn expand(c: &phoenix_dsl::Compilation, pf: &PhoenixFlow) -> (FlowFacts, Children) {
    let facts = FlowFacts::of(c.flow.as_ref().expect("a flow"), &EngineCatalog::new());
    let children = objects::children(pf, &facts);
    (facts, children)
}

fn documents(pf: &PhoenixFlow, children: &Children) -> String {
    let mut docs = vec![serde_json::to_value(pf).expect("json")];
    docs.extend(children.to_values());
    yaml::to_yaml_documents(&docs).expect("yaml")
}

#[test]
fn crd_file_is_what_the_type_generates() {
    let path = repo().join("manifests/01-crd.yaml");
    let generated = crd::crd_yaml();
    if std::env::var_os("BLESS").is_some() {
        std::fs::write(&path, &generated).expect("write the CRD");
    }
    let file = std::fs::read_to_string(&path).expect("manifests/01-crd.yaml");
    let parsed = yaml::from_yaml_documents(&file).expect("the CRD file parses");
    assert_eq!(
        parsed,
        vec![serde_json::to_value(crd::crd()).unwrap()],
        "manifests/01-crd.yaml is stale: run `phoenix manifests --crd > manifests/01-crd.yaml`"
    );
    assert!(
        file == generated,
        "manifests/01-crd.yaml is not formatted as generated: run `phoenix manifests --crd > manifests/01-crd.yaml`"
    );
}

#[test]
fn orders_objects_match_their_golden_file() {
    let (c, pf) = flow(&data().join("flows/orders.phx"));
    // The spec: both files, relative to the directory holding them all.
    assert_eq!(pf.spec.main, "flows/orders.phx");
    assert_eq!(pf.spec.files.keys().collect::<Vec<_>>(), ["common/orders.phx", "flows/orders.phx"]);
    assert_eq!(pf.metadata.name.as_deref(), Some("orders"));
    assert_eq!(pf.metadata.namespace.as_deref(), Some("shop"));
    assert_eq!(pf.spec.replicas, Some(3));
    assert_eq!(pf.spec.secret.as_deref(), Some("orders-env"));

    let (facts, children) = expand(&c, &pf);
    assert_eq!(
        facts.env.iter().map(|(k, v)| (k.as_str(), *v)).collect::<Vec<_>>(),
        [("DEAD_LETTERS", true), ("KAFKA_BROKERS", false), ("KAFKA_PASSWORD", true)]
    );
    assert_eq!(facts.drain, Duration::from_secs(45));
    assert!(children.notes.is_empty(), "{:?}", children.notes);
    assert!(children.pdb.is_some(), "3 replicas get a PodDisruptionBudget");
    assert!(children.hpa.is_none());
    let pod = children.deployment.spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.termination_grace_period_seconds, Some(75), "longer than the 45 s drain");
    let args = pod.containers[0].args.as_ref().unwrap();
    assert!(
        args.contains(&"api.address=0.0.0.0:8081".to_string()),
        "a loopback http source listens on all addresses: {args:?}"
    );
    assert!(args.contains(&"/etc/phoenix/flow/flows/orders.phx".to_string()), "{args:?}");
    golden(&data().join("orders.golden.yaml"), &documents(&pf, &children));
}

#[test]
fn autoscaled_objects_match_their_golden_file() {
    let (c, pf) = flow(&data().join("flows/autoscaled.phx"));
    assert_eq!(pf.metadata.name.as_deref(), Some("orders-autoscaled"));
    assert_eq!(pf.metadata.namespace.as_deref(), Some("default"));
    assert_eq!(pf.spec.replicas, None, "the autoscaler owns the count");
    let (_, children) = expand(&c, &pf);
    assert_eq!(children.deployment.spec.replicas, Some(2), "starts at min_replicas");
    let hpa = children.hpa.as_ref().expect("an autoscaler");
    assert_eq!(hpa.spec.scale_target_ref.kind, "PhoenixFlow");
    assert!(children.pdb.is_some());
    golden(&data().join("autoscaled.golden.yaml"), &documents(&pf, &children));
}

#[test]
fn a_spec_compiles_again_from_its_own_files() {
    let catalog = EngineCatalog::new();
    let (_, pf) = flow(&data().join("flows/orders.phx"));
    bundle::check_files(&pf.spec).expect("valid file names");
    let again = bundle::compile_spec(&pf.spec, &catalog);
    assert!(!again.has_errors(), "{}", again.render(false));
    let (_, children) = expand(&again, &pf);
    let (c, _) = flow(&data().join("flows/orders.phx"));
    assert_eq!(children, expand(&c, &pf).1, "the controller generates what `manifests --expand` shows");
}

#[test]
fn bad_specs_are_refused() {
    let (_, pf) = flow(&data().join("flows/orders.phx"));
    for bad in ["/etc/passwd", "../x.phx", "a//b.phx", "./a.phx", ""] {
        let mut spec = pf.spec.clone();
        spec.files.insert(bad.to_string(), String::new());
        assert!(bundle::check_files(&spec).is_err(), "{bad:?}");
    }
    let mut spec = pf.spec.clone();
    spec.main = "missing.phx".into();
    assert!(bundle::check_files(&spec).is_err());
}

#[test]
fn deploy_mistakes_are_explained() {
    let catalog = EngineCatalog::new();
    let cases = [
        ("deploy { min_replicas = 2 }", "go together"),
        ("deploy { min_replicas = 3, max_replicas = 2 }", "min_replicas"),
        ("deploy { cpu = \"lots\" }", "quantity"),
        ("deploy { name = \"Orders\" }", "not a valid name"),
        ("deploy { port = 70000 }", "TCP port"),
        ("deploy { replicas = -1 }", "negative"),
    ];
    for (deploy, want) in cases {
        let text = format!("schema E {{ id: string }}\nsource s = stdin as E\nsink o = stdout\ns | o\n{deploy}\n");
        let loader = phoenix_dsl::MemoryLoader::new([("f.phx".to_string(), text.into_bytes())]);
        let c = phoenix_dsl::compile("f.phx", &loader, &catalog);
        assert!(!c.has_errors(), "{}", c.render(false));
        let files = FlowFiles { main: "f.phx".into(), files: Default::default() };
        let err = bundle::phoenix_flow(&c, files, &Settings::default(), None, None).expect_err(deploy);
        assert!(err.to_string().contains(want), "{deploy}: {err}");
    }
}

#[test]
fn a_flow_without_a_secret_says_what_it_misses() {
    let text = "schema E { id: string }\nsource s = kafka { brokers = env(\"B\"), topic = \"t\", group = \"g\" } as E\nsink o = stdout\ns | o\n";
    let catalog = EngineCatalog::new();
    let loader = phoenix_dsl::MemoryLoader::new([("f.phx".to_string(), text.as_bytes().to_vec())]);
    let c = phoenix_dsl::compile("f.phx", &loader, &catalog);
    let files = bundle::flow_files(&c, Path::new("/")).unwrap();
    let pf = bundle::phoenix_flow(&c, files, &Settings::default(), None, None).unwrap();
    let (_, children) = expand(&c, &pf);
    assert!(children.notes.iter().any(|n| n.contains("env(\"B\")")), "{:?}", children.notes);
    assert!(children.deployment.spec.template.spec.unwrap().containers[0].env.is_none());
}

/// Run `kubernetes-validate --strict` on a YAML stream; panic with its report unless it passes.
fn validate(what: &str, text: &str) {
    let dir = support::temp(&format!("kubernetes-validate-{what}"));
    let file = dir.join(format!("{what}.yaml"));
    std::fs::write(&file, text).unwrap();
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "--no-warn"])
        .arg(&file)
        .output()
        .expect("kubernetes-validate runs (scripts/test installs it: pip install kubernetes-validate)");
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && !report.contains("ERROR"), "{what} does not validate:\n{report}");
    let kinds = yaml::from_yaml_documents(text).unwrap().iter().filter(|d| d["kind"] != "PhoenixFlow").count();
    assert_eq!(report.matches("passed for resource").count(), kinds, "every object was checked:\n{report}");
}

#[test]
fn every_generated_object_validates_against_current_kubernetes() {
    for f in ["flows/orders.phx", "flows/autoscaled.phx"] {
        let (c, pf) = flow(&data().join(f));
        let (_, children) = expand(&c, &pf);
        validate(&pf.metadata.name.clone().unwrap(), &documents(&pf, &children));
    }
    let (c, pf) = flow(&repo().join("examples/commerce.phx"));
    let (_, children) = expand(&c, &pf);
    validate("commerce", &documents(&pf, &children));
}

#[test]
fn the_manifests_folder_renders_with_kustomize_and_validates() {
    let out = Command::new("kubectl")
        .args(["kustomize"])
        .arg(repo().join("manifests"))
        .output()
        .expect("kubectl runs (scripts/test installs it)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let docs = yaml::from_yaml_documents(&text).unwrap();
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap_or("")).collect();
    for want in ["Namespace", "CustomResourceDefinition", "ServiceAccount", "ClusterRole", "Deployment", "Service"] {
        assert!(kinds.contains(&want), "{want} is missing from {kinds:?}");
    }
    validate("manifests", &text);
}

#[test]
fn manifests_command_prints_the_flow_and_refuses_a_broken_one() {
    let out = support::phoenix()
        .current_dir(repo())
        .args(["manifests", "examples/commerce.phx", "--expand", "--namespace", "team-a"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let docs = yaml::from_yaml_documents(&String::from_utf8(out.stdout).unwrap()).unwrap();
    assert_eq!(docs[0]["kind"], "PhoenixFlow");
    assert!(docs.iter().all(|d| d["metadata"]["namespace"] == "team-a"), "--namespace wins over the deploy block");
    assert!(docs.iter().any(|d| d["kind"] == "Deployment"));

    let dir = support::temp("manifests-broken");
    let broken = dir.join("broken.phx");
    std::fs::write(&broken, "source s = stdin as Missing\n").unwrap();
    let out = support::phoenix().arg("manifests").arg(&broken).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "nothing is printed for a broken flow");
    assert!(String::from_utf8_lossy(&out.stderr).contains("error["), "{}", String::from_utf8_lossy(&out.stderr));
}
