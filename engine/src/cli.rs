//! The `phoenix` command line.

use crate::{EngineCatalog, FsLoader};
use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use phoenix_dsl::catalog::{Catalog, Role};
use phoenix_dsl::diagnostic::{Code, summary};
use phoenix_dsl::plan::render;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;

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
    /// Format flow files in the canonical layout.
    Fmt {
        flows: Vec<String>,
        /// Do not write; exit 1 if a file is not formatted.
        #[arg(long)]
        check: bool,
    },
    /// List the built-in functions with signatures and examples.
    Functions,
    /// List the connectors with their options.
    Connectors,
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
        Command::Connectors => {
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
