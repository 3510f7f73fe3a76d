//! Hover: what the name under the cursor is, in the compiler's and the catalog's words.

use super::diagnostics::Ranges;
use super::workspace::{Analysis, Workspace, name_of, resolve};
use crate::EngineCatalog;
use lsp_types::{Hover, HoverContents, HoverParams, MarkupContent, MarkupKind};
use phoenix_dsl::Compilation;
use phoenix_dsl::catalog::{Catalog, ConnectorSpec, OptionSpec, Role};
use phoenix_dsl::query::{self, StreamDecl, Symbol};
use phoenix_dsl::types::{Record, StreamType};
use std::fmt::Write;

pub fn hover(ws: &Workspace, catalog: &EngineCatalog, p: HoverParams) -> Option<Hover> {
    let pos = p.text_document_position_params;
    let doc = ws.docs.get(&name_of(&pos.text_document.uri))?;
    let offset = doc.lines.offset(&doc.text, pos.position);
    let c = &doc.analysis.compilation;
    let occ = doc.analysis.index.at(Analysis::ROOT, offset)?;
    let text = describe(c, catalog, &occ.symbol, occ.span)?;
    Some(Hover {
        contents: HoverContents::Markup(MarkupContent { kind: MarkupKind::Markdown, value: text }),
        range: Some(Ranges::new(&c.sources).range(occ.span)),
    })
}

fn code(s: &str) -> String {
    format!("```phx\n{s}\n```")
}

/// The markdown shown for `symbol`, written at `span`.
pub fn describe(
    c: &Compilation,
    catalog: &EngineCatalog,
    symbol: &Symbol,
    span: phoenix_dsl::span::Span,
) -> Option<String> {
    let mut s = String::new();
    match symbol {
        Symbol::Field { name, decl } => {
            let info = query::field_info(c, span, *decl)?;
            let ty = format!("{}: {}{}", name, info.ty, if info.optional { "?" } else { "" });
            s.push_str(&code(&ty));
            match decl.and_then(|d| query::field_owner(c, d)) {
                Some(owner) => {
                    let _ = write!(s, "\n\nfield of {owner}");
                }
                None => s.push_str(
                    "\n\nnot declared in a flow file: a field of the `.errors` record, or metadata a `select` copied",
                ),
            }
            if info.optional {
                s.push_str("\n\nOptional: NULL when absent or null.");
            }
        }
        Symbol::Schema(name) => {
            let decl = query::schema_decl(c, name)?;
            s.push_str(&code(&format!("schema {} {}", name, c.sources.snippet(decl.record.span))));
        }
        Symbol::Stream(name) => match query::stream_decl(c, name)? {
            StreamDecl::Source(d) => {
                s.push_str(&code(&format!("source {} = {}", name, d.connector.name)));
                if let Some(out) = query::stream_output(c, name) {
                    s.push_str("\n\nEvents:\n");
                    s.push_str(&stream(&out));
                }
            }
            StreamDecl::Sink(d) => {
                s.push_str(&code(&format!("sink {} = {}", name, d.connector.name)));
                match &d.schema {
                    Some(schema) => {
                        let _ = write!(
                            s,
                            "\n\nContract: only events that have the fields of `{}` may be written here.",
                            c.sources.snippet(schema.span())
                        );
                    }
                    None => s.push_str("\n\nNo contract (`as Schema`): receives events of any shape."),
                }
                let inputs = query::sink_inputs(c, name);
                if inputs.is_empty() {
                    s.push_str("\n\nNothing writes to it yet.");
                }
                for (i, input) in inputs.iter().enumerate() {
                    match inputs.len() {
                        1 => s.push_str("\n\nReceives:\n"),
                        n => _ = write!(s, "\n\nReceives ({} of {n}):\n", i + 1),
                    }
                    s.push_str(&stream(input));
                }
                s.push_str("\n\nIts `.errors` port carries the events it gives up on.");
            }
            StreamDecl::Flow(_) => {
                s.push_str(&code(&format!("flow {name}")));
                match query::stream_output(c, name) {
                    Some(out) => {
                        s.push_str("\n\nEvents:\n");
                        s.push_str(&stream(&out));
                    }
                    None => s.push_str("\n\nEnds in a sink, `drop` or route: produces no events to read."),
                }
            }
        },
        Symbol::Connector { name, role } => {
            let spec = catalog.connector(name, *role)?;
            s.push_str(&connector(spec));
        }
        Symbol::Option { connector: Some((name, role)), name: option } => {
            let spec = catalog.connector(name, *role)?.option(option)?;
            s.push_str(&option_doc(spec, &format!("`{name}` {role}")));
        }
        Symbol::Option { connector: None, name: option } => {
            let spec = catalog.deploy_options().iter().find(|o| o.name == option)?;
            s.push_str(&option_doc(spec, "`deploy`"));
        }
        Symbol::Function(name) => {
            let f = catalog.function(name)?;
            s.push_str(&code(&f.signature().display(name)));
            let _ = write!(s, "\n\n{}", f.summary());
            if !f.examples().is_empty() {
                s.push_str("\n\nExamples:\n");
                for e in f.examples() {
                    let _ = writeln!(s, "- `{}` → `{}`", e.expr, e.result);
                }
            }
        }
        Symbol::Metadata(name) => {
            let m = c.facts.metadata.iter().find(|m| m.span == span)?;
            s.push_str(&code(&format!("@{name}: {}{}", m.ty, if m.optional { "?" } else { "" })));
            let doc = catalog.connectors().into_iter().flat_map(|c| &c.metadata).find(|m| m.name == name);
            if let Some(doc) = doc {
                let _ = write!(s, "\n\n{}", doc.doc);
            }
            s.push_str("\n\nMetadata the source attaches to each event; not one of its fields.");
        }
        Symbol::Import(path) => {
            let name = resolve(path, Some(&c.sources.get(span.file).name));
            s.push_str(&code(&format!("import \"{path}\"")));
            let _ = write!(s, "\n\n`{name}`");
        }
    }
    Some(s)
}

fn record(r: &Record) -> String {
    let mut s = String::new();
    for f in &r.fields {
        let _ = writeln!(s, "  {}: {}{},", f.name, f.ty, if f.optional { "?" } else { "" });
    }
    s
}

fn stream(t: &StreamType) -> String {
    let mut s = format!("```phx\n{{\n{}}}\n```", record(&t.record));
    if t.open {
        s.push_str("\nUndeclared fields pass through.");
    }
    if !t.metadata.fields.is_empty() {
        let names: Vec<String> = t.metadata.fields.iter().map(|m| format!("`@{}`", m.name)).collect();
        let _ = write!(s, "\nMetadata: {}", names.join(", "));
    }
    s
}

fn connector(spec: &ConnectorSpec) -> String {
    let mut s = code(&format!("{} ({})", spec.name, spec.role));
    let _ = write!(s, "\n\n{}\n\n| option | type | default |\n|---|---|---|\n", spec.summary);
    for o in &spec.options {
        let default =
            if o.required { "required".to_string() } else { o.default.map_or("—".into(), |d| format!("`{d}`")) };
        let _ = writeln!(s, "| `{}` | {} | {} |", o.name, o.ty, default);
    }
    if spec.role == Role::Source && !spec.metadata.is_empty() {
        let names: Vec<String> = spec.metadata.iter().map(|m| format!("`@{}`", m.name)).collect();
        let _ = write!(s, "\nMetadata: {}", names.join(", "));
    }
    s
}

fn option_doc(o: &OptionSpec, of: &str) -> String {
    let mut s = code(&format!("{}: {}", o.name, o.ty));
    let _ = write!(s, "\n\nOption of {of}. {}", o.doc);
    if o.required {
        s.push_str("\n\nRequired.");
    } else if let Some(d) = o.default {
        let _ = write!(s, "\n\nDefault: `{d}`.");
    }
    if o.secret {
        s.push_str("\n\nSecret: never printed; read it with `env(\"NAME\")`.");
    }
    s
}
