//! Completion. The text is compiled with a marker name at the cursor (made to parse, see
//! `query::with_cursor`); where the marker lands in the syntax tree says what may be written
//! there, and the checker's facts say which fields the stream at that point has.

use super::workspace::{Analysis, Workspace, name_of};
use crate::EngineCatalog;
use lsp_types::{
    CompletionItem, CompletionItemKind, CompletionParams, CompletionResponse, Documentation, MarkupContent, MarkupKind,
};
use phoenix_dsl::Compilation;
use phoenix_dsl::ast::Item;
use phoenix_dsl::catalog::{Catalog, OptionSpec, OptionType};
use phoenix_dsl::fmt::{field_name, ident};
use phoenix_dsl::query::{self, Slot};
use phoenix_dsl::types::Ty;

const ITEM_KEYWORDS: &[&str] = &["schema", "source", "sink", "flow", "route", "test", "import", "deploy"];
const EXPR_KEYWORDS: &[&str] = &[
    "and",
    "or",
    "not",
    "in",
    "is",
    "null",
    "is not null",
    "between",
    "like",
    "ilike",
    "case",
    "when",
    "then",
    "else",
    "end",
    "true",
    "false",
];

pub fn complete(ws: &Workspace, catalog: &EngineCatalog, p: CompletionParams) -> Option<CompletionResponse> {
    let pos = p.text_document_position;
    let name = name_of(&pos.text_document.uri);
    let doc = ws.docs.get(&name)?;
    let offset = doc.lines.offset(&doc.text, pos.position);
    let items = match query::with_cursor(&doc.text, offset) {
        Some((text, at)) => {
            let a = ws.analyse(&name, &text, catalog);
            match query::slot(&a.compilation, Analysis::ROOT, at) {
                Some(slot) => items(&a.compilation, catalog, slot),
                None => Vec::new(),
            }
        }
        // Nothing parses with the cursor in it: offer what starts an item.
        None => items(&doc.analysis.compilation, catalog, Slot::Item),
    };
    Some(CompletionResponse::Array(items))
}

fn item(label: impl Into<String>, kind: CompletionItemKind, detail: impl Into<String>) -> CompletionItem {
    CompletionItem { label: label.into(), kind: Some(kind), detail: Some(detail.into()), ..Default::default() }
}

fn with_doc(mut i: CompletionItem, doc: String) -> CompletionItem {
    i.documentation = Some(Documentation::MarkupContent(MarkupContent { kind: MarkupKind::Markdown, value: doc }));
    i
}

fn keywords<'a>(words: &'a [&'a str]) -> impl Iterator<Item = CompletionItem> + 'a {
    words.iter().map(|w| item(*w, CompletionItemKind::KEYWORD, "keyword"))
}

/// Declared names of one kind, with what they are.
fn names(c: &Compilation, want: fn(&Item) -> Option<(&str, String)>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = c
        .modules
        .iter()
        .flat_map(|m| &m.items)
        .filter_map(want)
        .filter(|(n, _)| *n != query::CURSOR)
        .map(|(n, d)| (n.to_string(), d))
        .collect();
    out.sort();
    out.dedup_by(|a, b| a.0 == b.0);
    out
}

fn sources(c: &Compilation) -> Vec<(String, String)> {
    names(c, |i| match i {
        Item::Source(d) => Some((&d.name.name, format!("source = {}", d.connector.name))),
        _ => None,
    })
}

fn sinks(c: &Compilation) -> Vec<(String, String)> {
    names(c, |i| match i {
        Item::Sink(d) => Some((&d.name.name, format!("sink = {}", d.connector.name))),
        _ => None,
    })
}

fn flows(c: &Compilation) -> Vec<(String, String)> {
    names(c, |i| match i {
        Item::Flow(f) => Some((&f.name.name, "flow".to_string())),
        _ => None,
    })
}

fn schemas(c: &Compilation) -> Vec<(String, String)> {
    names(c, |i| match i {
        Item::Schema(s) => Some((&s.name.name, "schema".to_string())),
        _ => None,
    })
}

/// Sources and flows, and the `.errors` ports of sources and sinks.
fn streams(c: &Compilation) -> Vec<CompletionItem> {
    let mut out: Vec<CompletionItem> =
        sources(c).into_iter().chain(flows(c)).map(|(n, d)| item(ident(&n), CompletionItemKind::VARIABLE, d)).collect();
    for (n, _) in sources(c).into_iter().chain(sinks(c)) {
        out.push(item(format!("{}.errors", ident(&n)), CompletionItemKind::VARIABLE, "dead letters"));
    }
    out
}

fn option_item(o: &OptionSpec) -> CompletionItem {
    let default =
        if o.required { "required".to_string() } else { o.default.map_or(String::new(), |d| format!("default {d}")) };
    let detail = if default.is_empty() { o.ty.to_string() } else { format!("{} ({default})", o.ty) };
    let mut i = with_doc(item(field_name(o.name), CompletionItemKind::PROPERTY, detail), o.doc.to_string());
    i.insert_text = Some(format!("{} = ", field_name(o.name)));
    // Required options first.
    i.sort_text = Some(format!("{}{}", u8::from(!o.required), o.name));
    i
}

fn items(c: &Compilation, catalog: &EngineCatalog, slot: Slot) -> Vec<CompletionItem> {
    match slot {
        Slot::Item => keywords(ITEM_KEYWORDS).chain(streams(c)).collect(),
        Slot::Stream => streams(c),
        Slot::Stage => sinks(c)
            .into_iter()
            .map(|(n, d)| item(ident(&n), CompletionItemKind::VARIABLE, d))
            .chain(keywords(&["where", "select", "route", "route all", "drop"]))
            .collect(),
        Slot::Connector(role) => catalog
            .connectors()
            .into_iter()
            .filter(|s| s.role == role)
            .map(|s| with_doc(item(s.name, CompletionItemKind::MODULE, format!("{role} connector")), s.summary.into()))
            .collect(),
        Slot::OptionName { connector, given } => {
            let specs: Vec<OptionSpec> = match connector {
                Some((name, role)) => catalog.connector(&name, role).map(|s| s.options.clone()).unwrap_or_default(),
                None => catalog.deploy_options().to_vec(),
            };
            specs.iter().filter(|o| !given.iter().any(|g| g == o.name)).map(option_item).collect()
        }
        Slot::OptionValue { connector, name } => {
            let spec = match &connector {
                Some((c, role)) => catalog.connector(c, *role).and_then(|s| s.option(&name)).cloned(),
                None => catalog.deploy_options().iter().find(|o| o.name == name).cloned(),
            };
            let mut out = Vec::new();
            let ty = spec.map(|s| s.ty);
            match ty {
                Some(OptionType::Enum(words)) => {
                    out.extend(words.iter().map(|w| item(*w, CompletionItemKind::ENUM_MEMBER, "value")))
                }
                Some(OptionType::Bool) => out.extend(keywords(&["true", "false"])),
                _ => {}
            }
            let mut env = item("env", CompletionItemKind::FUNCTION, "env(\"NAME\", default): read the environment");
            env.insert_text = Some("env(\"".into());
            out.push(env);
            out
        }
        Slot::Field { scope, path } => {
            let mut out: Vec<CompletionItem> = query::fields_at(&scope.stream, &path)
                .into_iter()
                .map(|f| {
                    let ty = format!("{}{}", f.ty, if f.optional { "?" } else { "" });
                    item(field_name(&f.name), CompletionItemKind::FIELD, ty)
                })
                .collect();
            if path.is_empty() {
                for name in catalog.function_names() {
                    if let Some(f) = catalog.function(name) {
                        let mut i = with_doc(
                            item(name, CompletionItemKind::FUNCTION, f.signature().display(name)),
                            f.summary().to_string(),
                        );
                        i.insert_text = Some(format!("{name}("));
                        out.push(i);
                    }
                }
                out.extend(keywords(EXPR_KEYWORDS));
            }
            out
        }
        Slot::Metadata { scope } => scope
            .stream
            .metadata
            .fields
            .iter()
            .map(|m| item(ident(&m.name), CompletionItemKind::CONSTANT, format!("@{}: {}", m.name, m.ty)))
            .collect(),
        Slot::Type => Ty::BUILTIN_NAMES
            .iter()
            .map(|t| item(*t, CompletionItemKind::TYPE_PARAMETER, "type"))
            .chain([item("list", CompletionItemKind::TYPE_PARAMETER, "list<T>")])
            .chain(schemas(c).into_iter().map(|(n, d)| item(ident(&n), CompletionItemKind::STRUCT, d)))
            .collect(),
        Slot::Schema => schemas(c).into_iter().map(|(n, d)| item(ident(&n), CompletionItemKind::STRUCT, d)).collect(),
        Slot::TestTarget { input } => {
            let names = if input { sources(c) } else { sinks(c) };
            names.into_iter().map(|(n, d)| item(ident(&n), CompletionItemKind::VARIABLE, d)).collect()
        }
        Slot::ArmValue { values } => values
            .into_iter()
            .map(|v| item(v, CompletionItemKind::VALUE, "seen with this key elsewhere"))
            .chain([item("else", CompletionItemKind::KEYWORD, "the events no other arm matched")])
            .collect(),
    }
}
