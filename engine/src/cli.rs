//! The `phoenix` command line.

use crate::cluster::bundle::{self, FlowFacts};
use crate::cluster::crd::PhoenixFlow;
use crate::observability::logging::{self, LogFormat};
use crate::observability::metrics::Metrics;
use crate::observability::progress;
use crate::observability::server::{self, Health};
use crate::options::Settings;
use crate::reload::{WATCH_POLL, Watched};
use crate::run::{RunConfig, SINK_QUEUE, default_workers};
use crate::swap;
use crate::taskgraph::{TaskGraph, node_labels};
use crate::testing;
use crate::{EngineCatalog, FsLoader};
use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use phoenix_dsl::catalog::{Catalog, Role};
use phoenix_dsl::diagnostic::{Code, summary};
use phoenix_dsl::plan::{Plan, render};
use phoenix_dsl::span::SourceMap;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    name = "phoenix",
    version,
    about = "Declarative event dataflow: typed routing of Kafka, SQS, HTTP and file events"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// When to colour diagnostics.
    #[arg(long, global = true, value_enum, default_value_t = Color::Auto)]
    color: Color,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Color {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check flow files: syntax, names, types, connector options, routes. Exit 1 on errors.
    Check {
        /// Flow files (`-` reads standard input).
        #[arg(required_unless_present = "explain")]
        flows: Vec<String>,
        /// Treat warnings as errors.
        #[arg(long)]
        deny_warnings: bool,
        /// Explain an error code (`E0020`) and exit.
        #[arg(long, value_name = "CODE")]
        explain: Option<String>,
    },
    /// Draw a flow's DAG.
    Graph {
        flow: String,
        #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
        format: GraphFormat,
    },
    /// The language server for editors (LSP over standard input and output).
    Lsp {
        /// Do not serve: time diagnostics after edits of a generated 2,000-line flow and print
        /// the median and p99 latency. Build with `--release`.
        #[arg(long)]
        bench: bool,
        /// Edits the bench makes.
        #[arg(long, default_value_t = 500, requires = "bench")]
        edits: usize,
    },
    /// Format flow files in the canonical layout.
    Fmt {
        flows: Vec<String>,
        /// Do not write; exit 1 if a file is not formatted.
        #[arg(long)]
        check: bool,
    },
    /// Run a flow until its inputs end or it is stopped (Ctrl-C / SIGTERM: drain, flush, exit 0).
    /// SIGHUP re-reads the flow files: a valid change drains the running flow and starts the new.
    Run {
        flow: String,
        /// Reload when the flow file or a file it imports changes (as on SIGHUP).
        #[arg(long)]
        watch: bool,
        /// `node.option=value` overrides a connector option; `NAME=value` answers `env("NAME")`.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Decode-and-process tasks per source (default: one per core, less one).
        #[arg(long)]
        workers: Option<usize>,
        /// Where to serve /health and /metrics (`off` to disable).
        #[arg(long, default_value = "127.0.0.1:9898", env = "PHOENIX_METRICS_ADDRESS")]
        metrics_address: String,
        /// No live progress display, even on a terminal.
        #[arg(long)]
        no_progress: bool,
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
        /// More logging (-v debug, -vv trace); `RUST_LOG` overrides.
        #[arg(short, long, action = clap::ArgAction::Count)]
        verbose: u8,
    },
    /// Run every flow in a directory and serve the control-plane API (`/api/v1`: flows
    /// created, replaced and deleted at run time) beside /health, /ready and /metrics.
    Serve {
        /// The flows: every `NAME.phx` here runs as the flow NAME; the API stores flows here.
        #[arg(long, default_value = ".", env = "PHOENIX_FLOWS")]
        flows: std::path::PathBuf,
        /// Where to serve the API, /health, /ready and /metrics.
        #[arg(long, default_value = "127.0.0.1:8080", env = "PHOENIX_ADDRESS")]
        address: String,
        /// API keys, one `KEY read|write` a line; re-read when it changes. Without it every
        /// /api/v1 call is refused.
        #[arg(long, value_name = "FILE", env = "PHOENIX_API_KEYS")]
        api_keys: Option<std::path::PathBuf>,
        /// Serve HTTPS with this PEM certificate chain (leaf first); needs --tls-key.
        #[arg(long, value_name = "FILE", env = "PHOENIX_TLS_CERT", requires = "tls_key")]
        tls_cert: Option<std::path::PathBuf>,
        /// The PEM private key of --tls-cert.
        #[arg(long, value_name = "FILE", env = "PHOENIX_TLS_KEY", requires = "tls_cert")]
        tls_key: Option<std::path::PathBuf>,
        /// `NAME=value` answers `env("NAME")` in every flow.
        #[arg(long = "set", value_name = "NAME=VALUE")]
        set: Vec<String>,
        /// Decode-and-process tasks per source of each flow (default: one per core, less one).
        #[arg(long)]
        workers: Option<usize>,
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
        /// More logging (-v debug, -vv trace); `RUST_LOG` overrides.
        #[arg(short, long, action = clap::ArgAction::Count)]
        verbose: u8,
    },
    /// Run the `test` blocks of flow files and report like `cargo test`.
    Test {
        #[arg(required = true)]
        flows: Vec<String>,
        /// Only tests whose name contains this.
        #[arg(long)]
        filter: Option<String>,
    },
    /// Print the task graph a flow compiles to: tasks, fused stages, queues, parallelism.
    Explain {
        flow: String,
        /// Workers per source to show (default: one per core, less one).
        #[arg(long)]
        workers: Option<usize>,
    },
    /// Measure throughput: generated ~150-byte events through file → where → select → route →
    /// 3 files (or, with `--sink elasticsearch`, file → elasticsearch into an in-process `_bulk`
    /// server; with `--sink kafka`, kafka → where → kafka on a broker, beside a plain rdkafka
    /// consume-and-produce loop; with `--source s3`, s3 → where → file on an S3 server, beside a
    /// plain aws-sdk-s3 download of the same objects). Prints events/s, MB/s, CPU seconds and
    /// peak RSS. Build with `--release`.
    Bench {
        /// What the events are written to.
        #[arg(long, value_enum, default_value_t = BenchSink::File)]
        sink: BenchSink,
        /// What the events are read from: `s3` runs s3 → where → file on the S3 server at
        /// `--endpoint`, beside a plain aws-sdk-s3 download of the same objects.
        #[arg(long, value_enum, default_value_t = BenchSource::File)]
        source: BenchSource,
        /// S3 endpoint URL for `--source s3` (a local server, addressed path-style); the bench
        /// creates a bucket of its own there (and leaves it).
        #[arg(long, env = "AWS_ENDPOINT_URL")]
        endpoint: Option<String>,
        /// How many objects `--source s3` spreads the events over.
        #[arg(long, default_value_t = 100)]
        objects: u64,
        /// Kafka bootstrap brokers for `--sink kafka` (`host:port[,host:port]`); the bench
        /// creates topics of its own there (and leaves them).
        #[arg(long, env = "KAFKA_BROKERS")]
        brokers: Option<String>,
        /// How many events to generate.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// Workers per source (default: one per core, less one).
        #[arg(long)]
        workers: Option<usize>,
        /// Where to write input and output files (default: a fresh temporary directory, removed
        /// afterwards).
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
        /// Run the file bench this many times over the same input and print the median too
        /// (shared machines vary from run to run).
        #[arg(long, default_value_t = 1)]
        runs: usize,
        /// The file bench's event schema: `flat` (scalars: the one-pass decoder) or `nested`
        /// (the same plus a record and a list: the validator, then arrow-json).
        #[arg(long, value_enum, default_value_t = crate::bench::Shape::Flat)]
        schema: crate::bench::Shape,
        /// Instead: generate → where → select → file for SECONDS never replaced, then for
        /// SECONDS replaced by a new version of itself every second (make-before-break, as a
        /// PUT or SIGHUP does); prints events/s each way and how long a replacement takes.
        #[arg(long, value_name = "SECONDS", conflicts_with_all = ["sink", "source"])]
        reload: Option<u64>,
    },
    /// Print the PhoenixFlow resource of a flow as YAML (for GitOps or `kubectl apply -f -`);
    /// `--expand` adds the objects the controller makes of it.
    Manifests {
        #[arg(required_unless_present = "crd")]
        flow: Option<String>,
        /// Also print the ConfigMap, ServiceAccount, Service, Deployment, PodDisruptionBudget
        /// and HorizontalPodAutoscaler the controller would create.
        #[arg(long)]
        expand: bool,
        /// Print the PhoenixFlow CustomResourceDefinition instead (`manifests/crd.yaml`).
        #[arg(long, conflicts_with_all = ["flow", "expand"])]
        crd: bool,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Check a flow and apply it to a Kubernetes cluster as a PhoenixFlow (nothing is sent when
    /// it has errors).
    Submit {
        flow: String,
        #[command(flatten)]
        target: TargetArgs,
        /// Kubeconfig context (default: the current one).
        #[arg(long)]
        context: Option<String>,
        /// `client`: print what would be applied; `server`: have the API server validate it
        /// without storing it.
        #[arg(long, value_enum)]
        dry_run: Option<DryRunArg>,
        /// Follow the flow until the controller reports it Ready; exit 1 if it is Degraded.
        #[arg(long)]
        wait: bool,
        /// How long `--wait` waits.
        #[arg(long, default_value = "5m", value_parser = parse_duration)]
        timeout: std::time::Duration,
    },
    /// Show a flow on the cluster: phase, conditions, replicas and pods (every flow's phase
    /// without NAME).
    Status {
        name: Option<String>,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// List the flows on the cluster.
    List {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// Every namespace.
        #[arg(long, short = 'A')]
        all_namespaces: bool,
    },
    /// Delete a flow from the cluster, with everything made of it.
    Delete {
        name: String,
        #[command(flatten)]
        cluster: ClusterArgs,
        /// Return once the flow and its objects are gone.
        #[arg(long)]
        wait: bool,
        #[arg(long, default_value = "2m", value_parser = parse_duration)]
        timeout: std::time::Duration,
    },
    /// Reconcile PhoenixFlow resources into running flows (installed by `kubectl apply -f
    /// manifests/`; runs in the cluster, or anywhere with a kubeconfig).
    Controller {
        /// Only flows in this namespace (default: every namespace).
        #[arg(long)]
        namespace: Option<String>,
        /// Kubeconfig context (default: the current one; in a pod, its service account).
        #[arg(long)]
        context: Option<String>,
        /// Where to serve /health, /ready and /metrics (`off` to disable).
        #[arg(long, default_value = "127.0.0.1:8080", env = "PHOENIX_CONTROLLER_ADDRESS")]
        address: String,
        /// Namespace of the leader-election Lease.
        #[arg(long, env = "POD_NAMESPACE", default_value = "phoenix-system")]
        lease_namespace: String,
        /// This replica's name in the Lease (default: host name and process id).
        #[arg(long, env = "POD_NAME")]
        identity: Option<String>,
        /// Seconds a leader holds the Lease without renewing it.
        #[arg(long, default_value_t = 15)]
        lease_seconds: u64,
        /// Reconcile without leader election (only ever one replica).
        #[arg(long)]
        no_leader_election: bool,
        /// Serve the control-plane API (/api/v1, docs/api.md) over PhoenixFlows here.
        #[arg(long, env = "PHOENIX_API_ADDRESS")]
        api_address: Option<String>,
        /// The API keys file (`KEY read|write` lines; re-read when it changes).
        #[arg(long, env = "PHOENIX_API_KEYS")]
        api_keys: Option<std::path::PathBuf>,
        /// The namespace whose PhoenixFlows the API serves (default: `--namespace`, else
        /// `default`).
        #[arg(long, env = "PHOENIX_API_NAMESPACE")]
        api_namespace: Option<String>,
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
        /// More logging (-v debug, -vv trace); `RUST_LOG` overrides.
        #[arg(short, long, action = clap::ArgAction::Count)]
        verbose: u8,
    },
    /// List the built-in functions with signatures and examples.
    Functions,
    /// List the connectors with their options.
    Connectors {
        /// The reference as Markdown (docs/connectors.md).
        #[arg(long)]
        markdown: bool,
    },
}

/// Where a flow goes on a cluster, over what its `deploy` block says.
#[derive(Debug, Clone, clap::Args)]
struct TargetArgs {
    /// Name of the PhoenixFlow (default: `deploy { name }`, else the file name).
    #[arg(long)]
    name: Option<String>,
    /// Namespace (default: `deploy { namespace }`, else `default`).
    #[arg(long, short = 'n')]
    namespace: Option<String>,
    /// `NAME=value` answers an `env("NAME")` of the `deploy` block.
    #[arg(long = "set", value_name = "NAME=VALUE")]
    set: Vec<String>,
}

#[derive(Debug, Clone, clap::Args)]
struct ClusterArgs {
    /// Namespace (default: the kubeconfig context's).
    #[arg(long, short = 'n')]
    namespace: Option<String>,
    /// Kubeconfig context (default: the current one).
    #[arg(long)]
    context: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DryRunArg {
    Client,
    Server,
}

/// `30s`, `5m`, `1h`, or plain seconds.
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(std::time::Duration::from_secs(secs));
    }
    match crate::options::parse(text, &phoenix_dsl::catalog::OptionType::Duration)? {
        phoenix_dsl::plan::graph::OptionValue::Duration(ns) if ns >= 0 => {
            Ok(std::time::Duration::from_nanos(ns as u64))
        }
        _ => Err(format!("`{text}` is not a duration (`30s`, `5m`)")),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BenchSource {
    /// A generated NDJSON file.
    File,
    /// Objects uploaded to a bucket at `--endpoint`: s3 → where → file.
    S3,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BenchSink {
    /// file → where → select → route → 3 files.
    File,
    /// file → elasticsearch, against the `_bulk` test server on 127.0.0.1.
    Elasticsearch,
    /// kafka → where → kafka on the broker at `--brokers`, beside a plain rdkafka loop.
    Kafka,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum GraphFormat {
    Dot,
    Mermaid,
    /// The planned DAG with its DataFusion expressions.
    Text,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let color = match cli.color {
        Color::Always => true,
        Color::Never => false,
        Color::Auto => std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    };
    match run(cli.command, color) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(command: Command, color: bool) -> anyhow::Result<ExitCode> {
    let catalog = EngineCatalog::new();
    match command {
        Command::Check { explain: Some(code), .. } => {
            let Some(c) = Code::lookup(&code) else {
                anyhow::bail!("unknown error code `{code}`; codes look like E0020 or W0001");
            };
            println!(
                "{} ({}): {}\n\n{}",
                c.as_str(),
                if c.as_str().starts_with('W') { "warning" } else { "error" },
                c.title(),
                c.explanation()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { flows, deny_warnings, .. } => {
            let mut failed = false;
            for flow in &flows {
                let c = phoenix_dsl::compile(flow, &FsLoader, &catalog);
                eprint!("{}", c.render(color));
                let (errors, warnings) = summary(&c.diagnostics);
                if errors > 0 || (deny_warnings && warnings > 0) {
                    failed = true;
                    eprintln!("error: could not check `{flow}`: {}", counts(errors, warnings));
                } else if warnings > 0 {
                    eprintln!("{flow}: ok, {}", counts(0, warnings));
                } else {
                    eprintln!("{flow}: ok");
                }
            }
            Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
        }
        Command::Graph { flow, format } => {
            let c = phoenix_dsl::compile(&flow, &FsLoader, &catalog);
            eprint!("{}", c.render(color));
            let Some(graph) = &c.flow else {
                return Ok(ExitCode::FAILURE);
            };
            let out = match format {
                GraphFormat::Dot => render::dot(graph, &c.sources),
                GraphFormat::Mermaid => render::mermaid(graph, &c.sources),
                GraphFormat::Text => match c.plan(&catalog) {
                    Some(plan) => render::text(&plan),
                    None => return Ok(ExitCode::FAILURE),
                },
            };
            print!("{out}");
            Ok(if c.has_errors() { ExitCode::FAILURE } else { ExitCode::SUCCESS })
        }
        Command::Fmt { flows, check } => fmt(&flows, check, color),
        Command::Lsp { bench: false, .. } => {
            crate::lsp::serve_stdio()?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Lsp { bench: true, edits } => {
            let dir = std::env::temp_dir().join(format!("phoenix-lsp-bench-{}", std::process::id()));
            let report = crate::lsp::bench::run(&dir, edits);
            let _ = std::fs::remove_dir_all(&dir);
            print!("{}", report?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { flow, watch, set, workers, metrics_address, no_progress, log_format, verbose } => {
            logging::init(log_format, verbose);
            let Some((plan, sources)) = compile_for_run(&flow, &catalog, color) else {
                return Ok(ExitCode::FAILURE);
            };
            let settings = Settings::parse(&set).map_err(anyhow::Error::msg)?;
            let run = RunFlow {
                flow,
                watch,
                catalog: Arc::new(catalog),
                settings,
                workers: workers.unwrap_or_else(default_workers),
                progress: !no_progress && std::io::stderr().is_terminal(),
            };
            runtime()?.block_on(run_flow(run, plan, sources, &metrics_address))
        }
        Command::Serve { flows, address, api_keys, tls_cert, tls_key, set, workers, log_format, verbose } => {
            logging::init(log_format, verbose);
            let tls = tls_cert.zip(tls_key);
            runtime()?.block_on(serve(flows, &address, api_keys, tls, &set, workers))
        }
        Command::Test { flows, filter } => {
            let rt = runtime()?;
            let mut failed = false;
            for flow in &flows {
                let Some((plan, sources)) = compile_for_run(flow, &catalog, color) else {
                    failed = true;
                    continue;
                };
                failed |= !rt.block_on(run_tests(flow, &plan, &sources, &catalog, filter.as_deref()));
            }
            Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
        }
        Command::Bench { sink, source, endpoint, objects, brokers, events, workers, dir, runs, schema, reload } => {
            anyhow::ensure!(
                source == BenchSource::File || sink == BenchSink::File,
                "`--source s3` writes to a file: drop `--sink`"
            );
            let (dir, cleanup) = match dir {
                Some(d) => (d, false),
                None => (std::env::temp_dir().join(format!("phoenix-bench-{}", std::process::id())), true),
            };
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            if cfg!(debug_assertions) {
                eprintln!("note: this is a debug build; measure with `cargo run --release -p phoenix-engine -- bench`");
            }
            let workers = workers.unwrap_or_else(default_workers);
            let report = match sink {
                _ if reload.is_some() => runtime()?
                    .block_on(crate::bench::reload::run_bench(&dir, reload.unwrap_or(10), workers))
                    .map(|r| r.to_string()),
                BenchSink::File if source == BenchSource::S3 => {
                    let endpoint = endpoint.context(
                        "`--source s3` needs an S3 server: `--endpoint URL` or `AWS_ENDPOINT_URL` \
                         (a local one: `moto_server -H 127.0.0.1 -p 5000`, see README)",
                    )?;
                    let config = crate::bench::s3::Config { endpoint, events, objects, workers, dir: dir.clone() };
                    runtime()?.block_on(crate::bench::s3::run_bench(&config)).map(|r| r.to_string())
                }
                BenchSink::File => runtime()?
                    .block_on(crate::bench::run_bench(&dir, schema, events, workers, runs))
                    .map(|r| r.to_string()),
                BenchSink::Elasticsearch => runtime()?
                    .block_on(crate::bench::elasticsearch::run_bench(&dir, events, workers))
                    .map(|r| r.to_string()),
                BenchSink::Kafka => {
                    let brokers = brokers.context(
                        "`--sink kafka` needs a broker: `--brokers HOST:PORT` or `KAFKA_BROKERS` \
                         (a local one: `tansu broker --storage-engine memory://tansu/`, see README)",
                    )?;
                    let config = crate::bench::kafka::Config { brokers, events, workers };
                    runtime()?.block_on(crate::bench::kafka::run_bench(&config)).map(|r| r.to_string())
                }
            };
            if cleanup {
                let _ = std::fs::remove_dir_all(&dir);
            }
            print!("{}", report?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Explain { flow, workers } => {
            let Some((plan, sources)) = compile_for_run(&flow, &catalog, color) else {
                return Ok(ExitCode::FAILURE);
            };
            let metrics = Metrics::new(node_labels(&plan, &sources));
            let graph = TaskGraph::build(&plan, &sources, &metrics)?;
            print!("{}", graph.explain(workers.unwrap_or_else(default_workers), SINK_QUEUE));
            Ok(ExitCode::SUCCESS)
        }
        Command::Manifests { crd: true, .. } => {
            print!("{}", crate::cluster::crd::crd_yaml());
            Ok(ExitCode::SUCCESS)
        }
        Command::Manifests { flow, expand, target, .. } => {
            let flow = flow.context("a flow file is needed")?;
            let Some((c, pf)) = phoenix_flow(&flow, &target, &catalog, color)? else {
                return Ok(ExitCode::FAILURE);
            };
            let mut docs = vec![serde_json::to_value(&pf)?];
            if expand {
                let graph = c.flow.as_ref().context("the flow compiled")?;
                let children = crate::cluster::objects::children(&pf, &FlowFacts::of(graph, &catalog));
                for note in &children.notes {
                    eprintln!("note: {note}");
                }
                docs.extend(children.to_values());
            }
            print!("{}", crate::cluster::yaml::to_yaml_documents(&docs)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Submit { flow, target, context, dry_run, wait, timeout } => {
            let Some((c, pf)) = phoenix_flow(&flow, &target, &catalog, color)? else {
                return Ok(ExitCode::FAILURE);
            };
            let graph = c.flow.as_ref().context("the flow compiled")?;
            for note in crate::cluster::objects::children(&pf, &FlowFacts::of(graph, &catalog)).notes {
                eprintln!("note: {note}");
            }
            if dry_run == Some(DryRunArg::Client) {
                print!("{}", crate::cluster::yaml::to_yaml_documents(&[serde_json::to_value(&pf)?])?);
                return Ok(ExitCode::SUCCESS);
            }
            runtime()?.block_on(async {
                use crate::cluster::client;
                let kube = client::connect(context.as_deref()).await?;
                let server_dry = (dry_run == Some(DryRunArg::Server)).then_some(client::DryRun::Server);
                let applied = client::submit(&kube, &pf, server_dry).await?;
                let ns = applied.metadata.namespace.clone().unwrap_or_default();
                let name = applied.metadata.name.clone().unwrap_or_default();
                if server_dry.is_some() {
                    eprintln!("phoenixflow {ns}/{name} validated by the server (dry run, nothing stored)");
                    return Ok(ExitCode::SUCCESS);
                }
                eprintln!("phoenixflow {ns}/{name} applied (generation {})", applied.metadata.generation.unwrap_or(0));
                if !wait {
                    return Ok(ExitCode::SUCCESS);
                }
                let generation = applied.metadata.generation;
                match client::wait_ready(&kube, &ns, &name, generation, timeout, |line| eprintln!("  {line}")).await {
                    Ok(_) => {
                        eprintln!("phoenixflow {ns}/{name} is Ready");
                        Ok(ExitCode::SUCCESS)
                    }
                    Err(e) => {
                        eprintln!("error: {e}");
                        Ok(ExitCode::FAILURE)
                    }
                }
            })
        }
        Command::Status { name, cluster } => runtime()?.block_on(async {
            use crate::cluster::client;
            let kube = client::connect(cluster.context.as_deref()).await?;
            let ns = cluster.namespace.unwrap_or_else(|| kube.default_namespace().to_string());
            match name {
                Some(name) => print!("{}", client::status(&kube, &ns, &name).await?),
                None => print!("{}", client::list(&kube, Some(&ns)).await?),
            }
            Ok(ExitCode::SUCCESS)
        }),
        Command::List { cluster, all_namespaces } => runtime()?.block_on(async {
            use crate::cluster::client;
            let kube = client::connect(cluster.context.as_deref()).await?;
            let ns = cluster.namespace.unwrap_or_else(|| kube.default_namespace().to_string());
            print!("{}", client::list(&kube, (!all_namespaces).then_some(ns.as_str())).await?);
            Ok(ExitCode::SUCCESS)
        }),
        Command::Delete { name, cluster, wait, timeout } => runtime()?.block_on(async {
            use crate::cluster::client;
            let kube = client::connect(cluster.context.as_deref()).await?;
            let ns = cluster.namespace.unwrap_or_else(|| kube.default_namespace().to_string());
            client::delete(&kube, &ns, &name, wait.then_some(timeout)).await?;
            eprintln!("phoenixflow {ns}/{name} deleted{}", if wait { " with everything made of it" } else { "" });
            Ok(ExitCode::SUCCESS)
        }),
        Command::Controller {
            namespace,
            context,
            address,
            lease_namespace,
            identity,
            lease_seconds,
            no_leader_election,
            api_address,
            api_keys,
            api_namespace,
            log_format,
            verbose,
        } => {
            logging::init(log_format, verbose);
            let rt = runtime()?;
            let api = match api_address {
                Some(address) => {
                    let keys = match &api_keys {
                        Some(path) => {
                            // The keys come from a Secret, which may be created after the
                            // controller starts; until then every call is refused.
                            let keys = crate::api::keys::KeyFile::load_when_present(path)?;
                            if !path.exists() {
                                tracing::warn!(path = %path.display(), "no API key file yet: every /api/v1 call is refused until it appears");
                            }
                            // The watch needs the runtime; it lives as long as the process.
                            rt.spawn(keys.clone().watch(crate::api::KEY_POLL));
                            keys
                        }
                        None => {
                            tracing::warn!("no --api-keys: every /api/v1 call will be refused");
                            crate::api::keys::KeyFile::none()
                        }
                    };
                    let namespace =
                        api_namespace.or_else(|| namespace.clone()).unwrap_or_else(|| "default".to_string());
                    Some(crate::cluster::api::ApiOptions { address, namespace, keys })
                }
                None => None,
            };
            let identity = identity.unwrap_or_else(|| {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
                format!("{}-{}", host.trim(), std::process::id())
            });
            let options = crate::cluster::controller::Options {
                namespace,
                context,
                address: (address != "off").then_some(address),
                election: (!no_leader_election).then_some((lease_namespace, identity)),
                lease_duration: std::time::Duration::from_secs(lease_seconds.max(3)),
                api,
            };
            rt.block_on(crate::cluster::controller::serve(options, wait_for_signal()))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Functions => {
            let mut out = std::io::stdout().lock();
            for f in catalog.stdlib().iter() {
                writeln!(out, "{}\n    {}", f.signature().display(f.name()), f.summary())?;
                for ex in f.examples() {
                    writeln!(out, "    {}  =>  {}", ex.expr, ex.result)?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Connectors { markdown: true } => {
            print!("{}", crate::docs::connectors_markdown(&catalog));
            Ok(ExitCode::SUCCESS)
        }
        Command::Connectors { markdown: false } => {
            let mut out = std::io::stdout().lock();
            for c in catalog.connectors() {
                writeln!(out, "{} {} — {}", c.name, c.role, c.summary)?;
                for o in &c.options {
                    let req = if o.required { " (required)" } else { "" };
                    let def = o.default.map(|d| format!(" [default: {d}]")).unwrap_or_default();
                    writeln!(out, "    {} : {}{req}{def}\n        {}", o.name, o.ty, o.doc)?;
                }
                if c.role == Role::Source && !c.metadata.is_empty() {
                    let meta: Vec<String> = c.metadata.iter().map(|m| format!("@{}: {}", m.name, m.ty)).collect();
                    writeln!(out, "    metadata: {}", meta.join(", "))?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Compile and plan a flow, printing diagnostics; `None` if it has errors.
fn compile_for_run(flow: &str, catalog: &EngineCatalog, color: bool) -> Option<(Plan, SourceMap)> {
    let c = phoenix_dsl::compile(flow, &FsLoader, catalog);
    eprint!("{}", c.render(color));
    if c.has_errors() {
        let (errors, warnings) = summary(&c.diagnostics);
        eprintln!("error: could not compile `{flow}`: {}", counts(errors, warnings));
        return None;
    }
    let plan = c.plan(catalog)?;
    Some((plan, c.sources))
}

/// Compile a flow and make its PhoenixFlow, printing diagnostics; `None` if it has errors.
fn phoenix_flow(
    flow: &str,
    target: &TargetArgs,
    catalog: &EngineCatalog,
    color: bool,
) -> anyhow::Result<Option<(phoenix_dsl::Compilation, PhoenixFlow)>> {
    let c = phoenix_dsl::compile(flow, &FsLoader, catalog);
    eprint!("{}", c.render(color));
    if c.has_errors() {
        let (errors, warnings) = summary(&c.diagnostics);
        eprintln!("error: could not compile `{flow}`: {}", counts(errors, warnings));
        return Ok(None);
    }
    let files = bundle::flow_files(&c, &std::env::current_dir()?)?;
    let settings = Settings::parse(&target.set).map_err(anyhow::Error::msg)?;
    let pf = bundle::phoenix_flow(&c, files, &settings, target.name.as_deref(), target.namespace.as_deref())?;
    Ok(Some((c, pf)))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// What `phoenix run` runs, and how.
struct RunFlow {
    flow: String,
    watch: bool,
    catalog: Arc<EngineCatalog>,
    settings: Settings,
    workers: usize,
    progress: bool,
}

/// One version of the flow, running (a reload swaps in the next, [`swap::replace`]), with
/// its live table.
struct Generation {
    version: swap::Generation,
    display: Option<(tokio::task::JoinHandle<()>, CancellationToken)>,
}

impl RunFlow {
    /// Build, open and start `plan` with counters beside `root`'s; it drains when `stopping`
    /// is cancelled, or when it is replaced. Its readiness is not yet under the process's.
    fn start(
        &self,
        plan: &Plan,
        sources: &SourceMap,
        root: &Metrics,
        running: Option<&Metrics>,
        stopping: &CancellationToken,
    ) -> Result<Generation, swap::LaunchError> {
        let mut config = RunConfig::new(self.workers);
        config.settings = self.settings.clone();
        config.shutdown = stopping.child_token();
        // Every version of `phoenix run`'s one flow hands its `http` sockets to the next.
        config.owner = crate::connectors::Owner::version_of("phoenix run");
        let version = swap::launch(plan, sources, &self.catalog, root, running, config)?;
        let display = self.progress.then(|| {
            let stop = CancellationToken::new();
            (progress::spawn(version.metrics.clone(), stop.clone()), stop)
        });
        Ok(Generation { version, display })
    }

    /// The flow compiled again, its diagnostics logged; `None` (the running flow is kept) if
    /// it has errors. The files it was compiled from, for `--watch`, either way.
    fn recompile(&self) -> (Watched, Option<(Plan, SourceMap)>) {
        let c = phoenix_dsl::compile(&self.flow, &FsLoader, &*self.catalog);
        let watched = Watched::of(&c.sources);
        for d in c.diagnostics.iter() {
            let (line, column) = c.sources.line_column(d.span());
            let file = &c.sources.get(d.span().file).name;
            let text = format!("{file}:{line}:{column}: {} {}", d.code.as_str(), d.message);
            if d.is_error() {
                tracing::error!(flow = %self.flow, "{text}");
            } else {
                tracing::warn!(flow = %self.flow, "{text}");
            }
        }
        if c.has_errors() {
            let (errors, warnings) = summary(&c.diagnostics);
            tracing::error!(flow = %self.flow, "reload refused: {}; the running flow is kept", counts(errors, warnings));
            return (watched, None);
        }
        let plan = c.plan(&*self.catalog);
        if plan.is_none() {
            tracing::error!(flow = %self.flow, "reload refused: the flow checked but could not be planned");
        }
        (watched, plan.map(|p| (p, c.sources)))
    }
}

impl Generation {
    /// Its live table stops (the next version's takes over).
    async fn end_display(&mut self) {
        if let Some((display, stop)) = self.display.take() {
            stop.cancel();
            let _ = display.await;
        }
    }
}

/// SIGHUP, or never (where there are no such signals, or it cannot be caught).
async fn hangup(signal: &mut Option<Hangup>) {
    match signal {
        #[cfg(unix)]
        Some(s) => {
            s.recv().await;
        }
        #[cfg(not(unix))]
        Some(()) => std::future::pending().await,
        None => std::future::pending().await,
    }
}

#[cfg(unix)]
type Hangup = tokio::signal::unix::Signal;
#[cfg(not(unix))]
type Hangup = ();

fn hangups() -> Option<Hangup> {
    #[cfg(unix)]
    {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
    }
    #[cfg(not(unix))]
    {
        None
    }
}

async fn run_flow(run: RunFlow, plan: Plan, sources: SourceMap, metrics_address: &str) -> anyhow::Result<ExitCode> {
    // One registry for every version of the flow: a reload swaps the counters in it.
    let root = Arc::new(Metrics::new([]));
    let health = Health::new();
    let ready = health.readiness();
    let stopping = CancellationToken::new();
    // Serve /health, /ready and /metrics until the flow has drained (/ready says "stopping"
    // meanwhile).
    let served = CancellationToken::new();
    if metrics_address != "off" {
        let listener = server::bind(metrics_address).await?;
        tracing::info!(address = %listener.local_addr()?, "serving /health, /ready and /metrics");
        let (m, h, stop) = (root.clone(), health.clone(), served.clone());
        tokio::spawn(async move {
            if let Err(e) = server::serve(listener, m, h, async move { stop.cancelled().await }).await {
                tracing::error!("metrics server: {e}");
            }
        });
    }
    let signals = {
        let (stopping, health) = (stopping.clone(), health.clone());
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("stopping: draining in-flight events (press Ctrl-C again to exit at once)");
            health.set_draining();
            stopping.cancel();
            wait_for_signal().await;
            tracing::warn!("second signal: exiting without draining");
            std::process::exit(130);
        })
    };
    let mut hup = hangups();
    let mut watched = Watched::of(&sources);
    let mut current = match run.start(&plan, &sources, &root, None, &stopping) {
        Ok(g) => g,
        Err(e) => {
            // A connector that cannot start (a port in use, a missing input), as at any start.
            served.cancel();
            signals.abort();
            tracing::error!("{e}");
            eprintln!("error: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    ready.add_child(current.version.readiness.clone());
    ready.started();
    let mut poll = tokio::time::interval(WATCH_POLL);
    // The run's outcome, and the counters of the version that ran last (for the summary).
    let (result, last) = loop {
        let reload = tokio::select! {
            r = current.version.finished() => {
                let metrics = current.version.metrics.clone();
                current.end_display().await;
                current.version.retire(&ready, None);
                break (r, metrics);
            }
            _ = hangup(&mut hup) => true,
            _ = poll.tick(), if run.watch => watched.changed(),
        };
        if !reload || stopping.is_cancelled() {
            continue;
        }
        if run.flow == "-" {
            tracing::warn!("the flow was read from stdin: there is nothing to reload");
            continue;
        }
        tracing::info!(flow = %run.flow, "reloading the flow files");
        let (w, next) = run.recompile();
        watched = w;
        let Some((plan, sources)) = next else { continue };
        // Make before break: the new version is built, opened and started beside the running
        // one, which drains only once the new one is up; one that cannot start keeps it.
        let next = match run.start(&plan, &sources, &root, Some(&current.version.metrics), &stopping) {
            Ok(next) => next,
            Err(e) => {
                tracing::error!(flow = %run.flow, "reload refused: {e}; the running flow is kept");
                continue;
            }
        };
        tracing::info!(flow = %run.flow, "reload: the new flow is started; draining the running one");
        let Generation { version, mut display } = current;
        let Generation { version: next_version, display: mut next_display } = next;
        match swap::replace(version, next_version, &ready).await {
            Ok((version, old)) => {
                if let Some((task, stop)) = display.take() {
                    stop.cancel();
                    let _ = task.await;
                }
                current = Generation { version, display: next_display };
                if let Err(e) = old {
                    tracing::error!(flow = %run.flow, "the replaced version ended with an error: {e}");
                }
                if stopping.is_cancelled() {
                    let metrics = current.version.metrics.clone();
                    let r = current.version.finished().await;
                    current.end_display().await;
                    current.version.retire(&ready, None);
                    break (r, metrics);
                }
                tracing::info!(flow = %run.flow, "reload: the new flow is running");
            }
            Err((version, e)) => {
                if let Some((task, stop)) = next_display.take() {
                    stop.cancel();
                    let _ = task.await;
                }
                tracing::error!(flow = %run.flow, "reload refused: {e}; the running flow is kept");
                current = Generation { version, display };
            }
        }
    };
    served.cancel();
    signals.abort();
    if !run.progress {
        eprint!("{}", progress::summary(&last));
    }
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("error: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn serve(
    flows: std::path::PathBuf,
    address: &str,
    api_keys: Option<std::path::PathBuf>,
    tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
    set: &[String],
    workers: Option<usize>,
) -> anyhow::Result<ExitCode> {
    use crate::api::{self, keys::KeyFile, store::DirStore};
    let store = Arc::new(DirStore::open(&flows)?);
    let keys = match &api_keys {
        Some(path) => {
            let keys = KeyFile::load(path)?;
            tokio::spawn(keys.clone().watch(api::KEY_POLL));
            keys
        }
        None => {
            tracing::warn!("no --api-keys: every /api/v1 call will be refused");
            KeyFile::none()
        }
    };
    let settings = Settings::parse(set).map_err(anyhow::Error::msg)?;
    let events = Arc::new(api::events::EventStore::new(&flows));
    let tls = match &tls {
        Some((cert, key)) => Some(crate::tls::server_config(cert, key)?),
        None => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let config = api::Config { store, keys, events, workers: workers.unwrap_or_else(default_workers), settings, tls };
    let listener = server::bind(address).await?;
    tracing::info!(address = %listener.local_addr()?, flows = %flows.display(), "serving /api/v1, /health, /ready and /metrics over {scheme}");
    let stop = async {
        wait_for_signal().await;
        // A second signal exits at once, as `phoenix run` does.
        tokio::spawn(async {
            wait_for_signal().await;
            tracing::warn!("second signal: exiting without draining");
            std::process::exit(130);
        });
    };
    api::serve(listener, config, stop).await?;
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Run a flow's `test` blocks; prints a `cargo test`-style report; `true` if all passed.
async fn run_tests(
    flow: &str,
    plan: &Plan,
    sources: &SourceMap,
    catalog: &EngineCatalog,
    filter: Option<&str>,
) -> bool {
    let cases: Vec<_> = plan.tests.iter().filter(|t| filter.is_none_or(|f| t.name.contains(f))).collect();
    println!("\nrunning {} test{} from {flow}", cases.len(), if cases.len() == 1 { "" } else { "s" });
    let started = std::time::Instant::now();
    let mut failures = Vec::new();
    for case in &cases {
        let outcome = match testing::run_captured(plan, sources, catalog, &testing::test_inputs(case)).await {
            Ok((captured, _)) => testing::check_expectations(case, &captured),
            Err(e) => Err(format!("the flow failed: {e}")),
        };
        match outcome {
            Ok(()) => println!("test {} ... ok", case.name),
            Err(why) => {
                println!("test {} ... FAILED", case.name);
                failures.push((case.name.clone(), sources.location(case.span), why));
            }
        }
    }
    if !failures.is_empty() {
        println!("\nfailures:\n");
        for (name, at, why) in &failures {
            println!("---- {name} ({at}) ----\n{why}\n");
        }
    }
    let passed = cases.len() - failures.len();
    println!(
        "\ntest result: {}. {passed} passed; {} failed; finished in {:.2}s",
        if failures.is_empty() { "ok" } else { "FAILED" },
        failures.len(),
        started.elapsed().as_secs_f64()
    );
    failures.is_empty()
}

fn counts(errors: usize, warnings: usize) -> String {
    let plural = |n: usize, w: &str| format!("{n} {w}{}", if n == 1 { "" } else { "s" });
    match (errors, warnings) {
        (0, w) => plural(w, "warning"),
        (e, 0) => plural(e, "error"),
        (e, w) => format!("{}; {}", plural(e, "error"), plural(w, "warning")),
    }
}

fn fmt(flows: &[String], check: bool, color: bool) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    for path in flows {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
        match phoenix_dsl::fmt::format(&text) {
            Ok(formatted) if formatted == text => {}
            Ok(_) if check => {
                failed = true;
                eprintln!("{path}: not formatted (run `phoenix fmt {path}`)");
            }
            Ok(formatted) => std::fs::write(path, formatted).with_context(|| format!("writing {path}"))?,
            Err(diags) => {
                failed = true;
                let mut sources = phoenix_dsl::span::SourceMap::new();
                sources.add(path.clone(), text);
                eprint!("{}", phoenix_dsl::diagnostic::render(&sources, &diags, color));
            }
        }
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
