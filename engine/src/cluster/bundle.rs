//! Between a flow and a `PhoenixFlow`: the flow's files gathered into a spec (client side),
//! the spec's files compiled again (controller side), and what the generator needs to know of
//! the compiled flow ([`FlowFacts`]).

use super::crd::{Autoscaling, PhoenixFlow, PhoenixFlowSpec, QUANTITY_PATTERN, Resources};
use crate::catalog::deploy_options;
use crate::loader::normalize;
use crate::options::{self, OptionError, Options, Settings};
use phoenix_dsl::ast::Item;
use phoenix_dsl::catalog::{Catalog, ConnectorSpec, OptionType, Role};
use phoenix_dsl::plan::FlowGraph;
use phoenix_dsl::plan::graph::{NodeKind, OptionValue};
use phoenix_dsl::{Compilation, Loader};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// A ConfigMap holds at most 1 MiB; leave room for its metadata.
pub const MAX_FILES_BYTES: usize = 900 * 1024;

/// How long a source drains on shutdown when it does not say (Kafka's and SQS's default).
const DEFAULT_DRAIN: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error(
        "`{0}` is imported by an absolute path, which a cluster cannot resolve; import it relative to the importing file"
    )]
    AbsoluteImport(String),
    #[error("the flow's files add up to {0} bytes; a PhoenixFlow holds at most {MAX_FILES_BYTES}")]
    TooLarge(usize),
    #[error("`{0}` is not a valid file path in a PhoenixFlow (relative, `/`-separated, no `..`)")]
    BadPath(String),
    #[error("`spec.main` names `{0}`, which is not one of `spec.files`")]
    MissingMain(String),
    #[error("the flow has no name: give one with `--name` or `deploy {{ name = \"...\" }}`")]
    NoName,
    #[error(
        "`{0}` is not a valid name: lower-case letters, digits and `-`, starting with a letter, at most 63 characters"
    )]
    BadName(String),
    #[error("deploy: {0}")]
    Deploy(String),
    #[error("deploy: {0}")]
    Option(#[from] OptionError),
}

/// The files of a flow, relative to the directory that holds them all.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowFiles {
    pub main: String,
    pub files: BTreeMap<String, String>,
}

/// Gather a compiled flow's files. `cwd` makes relative names absolute, so imports reaching
/// outside the root's directory (`../common.phx`) keep their relative layout.
pub fn flow_files(c: &Compilation, cwd: &Path) -> Result<FlowFiles, BundleError> {
    for m in &c.modules {
        for item in &m.items {
            if let Item::Import(i) = item
                && Path::new(&i.path).is_absolute()
            {
                return Err(BundleError::AbsoluteImport(i.path.clone()));
            }
        }
    }
    let files: Vec<(PathBuf, &str)> = c
        .sources
        .files()
        .map(|(_, f)| {
            // Standard input has no name of its own.
            let name = if f.name == "-" { "flow.phx" } else { f.name.as_str() };
            (PathBuf::from(normalize(&cwd.join(name))), f.text.as_str())
        })
        .collect();
    let Some((root, _)) = files.first() else {
        return Err(BundleError::MissingMain(String::new()));
    };
    let mut common: PathBuf = root.parent().map(Path::to_path_buf).unwrap_or_default();
    for (p, _) in &files {
        while !p.starts_with(&common) {
            if !common.pop() {
                break;
            }
        }
    }
    let rel = |p: &Path| -> String {
        let r = p.strip_prefix(&common).unwrap_or(p);
        r.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/")
    };
    let out = FlowFiles { main: rel(root), files: files.iter().map(|(p, text)| (rel(p), text.to_string())).collect() };
    let size: usize = out.files.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > MAX_FILES_BYTES {
        return Err(BundleError::TooLarge(size));
    }
    Ok(out)
}

/// Check a spec's file names (written by hand, they may be anything).
pub fn check_files(spec: &PhoenixFlowSpec) -> Result<(), BundleError> {
    for name in spec.files.keys() {
        let p = Path::new(name);
        let ok = !name.is_empty()
            && !name.contains('\\')
            && p.components().all(|c| matches!(c, Component::Normal(_)))
            && normalize(p) == *name;
        if !ok {
            return Err(BundleError::BadPath(name.clone()));
        }
    }
    if !spec.files.contains_key(&spec.main) {
        return Err(BundleError::MissingMain(spec.main.clone()));
    }
    let size: usize = spec.files.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > MAX_FILES_BYTES {
        return Err(BundleError::TooLarge(size));
    }
    Ok(())
}

/// Serves a spec's files to the compiler, resolving imports as [`crate::FsLoader`] does.
#[derive(Debug, Clone, Copy)]
pub struct SpecLoader<'a> {
    pub files: &'a BTreeMap<String, String>,
}

impl Loader for SpecLoader<'_> {
    fn load(&self, path: &str, from: Option<&str>) -> Result<(String, Vec<u8>), String> {
        let full = match from {
            Some(f) => Path::new(f).parent().unwrap_or(Path::new("")).join(path),
            None => PathBuf::from(path),
        };
        let name = normalize(&full);
        match self.files.get(&name) {
            Some(text) => Ok((name, text.as_bytes().to_vec())),
            None => Err(format!("`{name}` is not among the PhoenixFlow's files")),
        }
    }
}

/// Compile a spec's files with the same front end as `phoenix check`.
pub fn compile_spec(spec: &PhoenixFlowSpec, catalog: &dyn Catalog) -> Compilation {
    phoenix_dsl::compile(&spec.main, &SpecLoader { files: &spec.files }, catalog)
}

/// A short, stable hash of the flow's files: it names what the pods run, and changing it rolls
/// them.
pub fn flow_hash(main: &str, files: &BTreeMap<String, String>) -> String {
    let mut h = Sha256::new();
    // Length-prefixed, so no two different file sets hash alike.
    for part in std::iter::once(main).chain(files.iter().flat_map(|(k, v)| [k.as_str(), v.as_str()])) {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    let digest = h.finalize();
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// What the child objects depend on in the compiled flow.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowFacts {
    /// `env("NAME")` names the sources and sinks read → whether every read has a default.
    pub env: BTreeMap<String, bool>,
    /// Ports of `http` sources.
    pub http: Vec<HttpPort>,
    /// The longest drain of any source on shutdown.
    pub drain: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpPort {
    pub source: String,
    pub port: u16,
    /// The source listens on loopback as written: the pod must override it to be reachable.
    pub loopback: bool,
}

impl FlowFacts {
    pub fn of<E>(flow: &FlowGraph<E>, catalog: &dyn Catalog) -> FlowFacts {
        let mut http = Vec::new();
        let mut drain = DEFAULT_DRAIN;
        for n in flow.graph.node_weights() {
            let NodeKind::Source { name, connector, options } = &n.kind else { continue };
            let written = |opt: &str| options.iter().find(|(o, _)| o == opt).map(|(_, v)| v);
            let spec = catalog.connector(connector, Role::Source);
            let default = |opt: &str| spec.and_then(|s| s.option(opt)).and_then(|o| o.default);
            if let Some(d) = static_text(written("drain_timeout"), default("drain_timeout"))
                .and_then(|t| options::parse(&t, &OptionType::Duration).ok())
                && let OptionValue::Duration(ns) = d
            {
                drain = drain.max(Duration::from_nanos(ns.max(0) as u64));
            }
            if connector == "http"
                && let Some(addr) = static_text(written("address"), default("address"))
                && let Some((host, port)) = addr.rsplit_once(':')
                && let Ok(port) = port.parse::<u16>()
            {
                let host = host.trim_matches(['[', ']']);
                let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
                http.push(HttpPort { source: name.clone(), port, loopback });
            }
        }
        http.sort_by(|a, b| (a.port, &a.source).cmp(&(b.port, &b.source)));
        FlowFacts { env: flow.env_vars(), http, drain }
    }
}

/// An option's text when known before the flow starts: written literally, the default of an
/// `env()` (what the pod will use unless the Secret says otherwise), or the declared default.
fn static_text(written: Option<&OptionValue>, default: Option<&str>) -> Option<String> {
    match written {
        None => default.map(str::to_string),
        Some(OptionValue::String(s)) => Some(s.clone()),
        Some(OptionValue::Duration(ns)) => Some(format!("{ns}ns")),
        Some(OptionValue::Env { default: Some(d), .. }) => static_text(Some(d), None),
        Some(_) => None,
    }
}

/// Where a flow goes: its name and namespace.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    pub name: String,
    pub namespace: String,
}

/// Build the `PhoenixFlow` for a compiled flow from its `deploy` block. `env()` in the block
/// reads `settings` (then the environment) here, on the submitting side. `name` and
/// `namespace` override the block.
pub fn phoenix_flow(
    c: &Compilation,
    files: FlowFiles,
    settings: &Settings,
    name: Option<&str>,
    namespace: Option<&str>,
) -> Result<PhoenixFlow, BundleError> {
    let spec = ConnectorSpec {
        name: "deploy",
        role: Role::Sink,
        summary: "",
        options: deploy_options(),
        metadata: Vec::new(),
    };
    let written = c.flow.as_ref().and_then(|f| f.deploy.clone()).unwrap_or_default();
    let o = Options::resolve("deploy", &spec, &written, settings)?;
    let name = match name.map(str::to_string).or_else(|| o.str("name").map(str::to_string)) {
        Some(n) => n,
        None => default_name(&files.main).ok_or(BundleError::NoName)?,
    };
    check_name(&name)?;
    let namespace =
        namespace.map(str::to_string).or_else(|| o.str("namespace").map(str::to_string)).unwrap_or_default();
    check_name(&namespace)?;
    let int = |opt: &str| -> Result<Option<i32>, BundleError> {
        o.int(opt)
            .map(|v| i32::try_from(v).map_err(|_| BundleError::Deploy(format!("`{opt}` = {v} is out of range"))))
            .transpose()
    };
    let autoscaling = match (int("min_replicas")?, int("max_replicas")?) {
        (None, None) => None,
        (Some(min), Some(max)) if 1 <= min && min <= max => {
            Some(Autoscaling { min_replicas: min, max_replicas: max, target_cpu: int("target_cpu")?.unwrap_or(70) })
        }
        (Some(_), Some(_)) => return Err(BundleError::Deploy("need 1 <= `min_replicas` <= `max_replicas`".into())),
        _ => return Err(BundleError::Deploy("`min_replicas` and `max_replicas` go together".into())),
    };
    if let Some(a) = &autoscaling
        && !(1..=100).contains(&a.target_cpu)
    {
        return Err(BundleError::Deploy(format!("`target_cpu` = {} is not a percentage (1..=100)", a.target_cpu)));
    }
    // With autoscaling the autoscaler owns the count; writing it would undo its work on every submit.
    let replicas = match (&autoscaling, int("replicas")?) {
        (Some(_), _) => None,
        (None, Some(r)) if r >= 0 => Some(r),
        (None, Some(r)) => return Err(BundleError::Deploy(format!("`replicas` = {r} is negative"))),
        (None, None) => Some(1),
    };
    let quantity = |opt: &str| -> Result<String, BundleError> {
        let v = o.str(opt).unwrap_or_default().to_string();
        if is_quantity(&v) {
            Ok(v)
        } else {
            Err(BundleError::Deploy(format!("`{opt}` = {v:?} is not a Kubernetes quantity (`500m`, `2`, `512Mi`)")))
        }
    };
    let port = int("port")?.unwrap_or(super::crd::DEFAULT_PORT);
    if !(1..=65535).contains(&port) {
        return Err(BundleError::Deploy(format!("`port` = {port} is not a TCP port")));
    }
    let secret = o.str("secret").map(str::to_string);
    if let Some(s) = &secret {
        check_name(s)?;
    }
    let spec = PhoenixFlowSpec {
        main: files.main,
        files: files.files,
        replicas,
        autoscaling,
        image: o.str("image").unwrap_or(super::crd::DEFAULT_IMAGE).to_string(),
        resources: Resources { cpu: quantity("cpu")?, memory: quantity("memory")? },
        port,
        secret,
    };
    let mut flow = PhoenixFlow::new(&name, spec);
    flow.metadata.namespace = Some(namespace);
    Ok(flow)
}

/// `orders-v2.phx` → `orders-v2`; `My Flow.phx` → `my-flow`.
pub fn default_name(main: &str) -> Option<String> {
    let stem = Path::new(main).file_stem()?.to_string_lossy().to_lowercase();
    let mut name: String = stem.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    while name.contains("--") {
        name = name.replace("--", "-");
    }
    let name = name.trim_matches('-');
    let name =
        if name.starts_with(|c: char| c.is_ascii_lowercase()) { name.to_string() } else { format!("flow-{name}") };
    let name: String = name.chars().take(63).collect();
    Some(name.trim_end_matches('-').to_string())
}

/// An RFC 1035 label: what a Service name must be, so the stricter rule for all of them.
pub fn check_name(name: &str) -> Result<(), BundleError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok { Ok(()) } else { Err(BundleError::BadName(name.to_string())) }
}

/// Whether `s` is a Kubernetes quantity (the grammar of [`QUANTITY_PATTERN`]).
pub fn is_quantity(s: &str) -> bool {
    debug_assert!(QUANTITY_PATTERN.starts_with('^'));
    let s = s.strip_prefix('+').unwrap_or(s);
    let digits = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (number, suffix) = s.split_at(digits);
    let number_ok = match number.split_once('.') {
        None => !number.is_empty(),
        Some((a, b)) => !(b.contains('.') || a.is_empty() && b.is_empty()),
    };
    let suffix_ok = matches!(
        suffix,
        "" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" | "n" | "u" | "m" | "k" | "M" | "G" | "T" | "P" | "E"
    ) || suffix.strip_prefix(['e', 'E']).is_some_and(|exp| {
        let exp = exp.strip_prefix(['+', '-']).unwrap_or(exp);
        !exp.is_empty() && exp.chars().all(|c| c.is_ascii_digit())
    });
    number_ok && suffix_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        for ok in ["500m", "1", "1.5", ".5", "512Mi", "2G", "1e3", "1E-3", "+2", "0"] {
            assert!(is_quantity(ok), "{ok}");
        }
        for bad in ["", "m", "500 m", "1.2.3", "512MB", "-1", "1e", "abc", "."] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }

    #[test]
    fn names() {
        assert_eq!(default_name("dir/orders-v2.phx").as_deref(), Some("orders-v2"));
        assert_eq!(default_name("My Flow.phx").as_deref(), Some("my-flow"));
        assert_eq!(default_name("2fast.phx").as_deref(), Some("flow-2fast"));
        assert!(check_name("commerce").is_ok());
        for bad in ["", "Commerce", "-a", "a-", "a_b", "1a", &"a".repeat(64)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn spec_loader_resolves_relative_imports() {
        let files: BTreeMap<String, String> =
            [("flows/main.phx", ""), ("common/s.phx", "")].map(|(k, v)| (k.to_string(), v.to_string())).into();
        let l = SpecLoader { files: &files };
        assert_eq!(l.load("../common/s.phx", Some("flows/main.phx")).unwrap().0, "common/s.phx");
        assert!(l.load("other.phx", Some("flows/main.phx")).is_err());
    }

    #[test]
    fn hash_is_stable_and_sensitive() {
        let files: BTreeMap<String, String> = [("a.phx".to_string(), "x".to_string())].into();
        let h = flow_hash("a.phx", &files);
        assert_eq!(h.len(), 16);
        assert_eq!(h, flow_hash("a.phx", &files));
        let other: BTreeMap<String, String> = [("a.phx".to_string(), "y".to_string())].into();
        assert_ne!(h, flow_hash("a.phx", &other));
    }
}
