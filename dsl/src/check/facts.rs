//! What the checker learns that editors ask about: which declaration each field name in an
//! expression resolved to, and the stream each expression was checked against. Collected while
//! checking, so hover, completion and rename never type anything a second time.

use crate::span::Span;
use crate::types::{Record, StreamType, Ty};
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// Every field name resolved in an expression, and every field declaration (whose `decl` is
    /// its own span): schema and record fields, `select` outputs named with `as`.
    pub fields: Vec<FieldUse>,
    /// Every `@name` resolved in an expression.
    pub metadata: Vec<FieldUse>,
    /// Each expression checked as a whole (a predicate, a select item, a route key or arm, a
    /// per-event option) with the stream it read.
    pub scopes: Vec<ExprScope>,
}

/// A field (or metadata) name in the text and what it is.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldUse {
    pub span: Span,
    pub name: String,
    /// The name of the field where it was declared: a schema's or record's field, or the `as`
    /// of a `select` item. `None` when no text declares it (`.errors` records, metadata).
    pub decl: Option<Span>,
    pub ty: Ty,
    pub optional: bool,
}

#[derive(Debug, Clone)]
pub struct ExprScope {
    pub span: Span,
    pub stream: StreamType,
    /// The stream, as messages name it (`source \`orders\``).
    pub describe: String,
}

impl Facts {
    /// The innermost checked expression containing `offset` of `file`, with its stream.
    pub fn scope_at(&self, file: crate::span::FileId, offset: usize) -> Option<&ExprScope> {
        self.scopes
            .iter()
            .filter(|s| s.span.file == file && (s.span.start as usize) <= offset && offset <= s.span.end as usize)
            .min_by_key(|s| s.span.end - s.span.start)
    }

    /// The field name written at `span`, once resolved.
    pub fn field_at(&self, span: Span) -> Option<&FieldUse> {
        self.fields.iter().find(|f| f.span == span)
    }
}

/// Where the fields of each record type were declared, by the record's address: a record is
/// one `Arc` from its declaration through every stage that passes it on, so its address names
/// it. The map holds each record, so no address is reused while it lives.
#[derive(Debug, Default)]
pub(crate) struct Decls {
    map: HashMap<usize, (Arc<Record>, Vec<Option<Span>>)>,
}

impl Decls {
    pub(crate) fn register(&mut self, record: &Arc<Record>, spans: Vec<Option<Span>>) {
        self.map.insert(Arc::as_ptr(record) as usize, (record.clone(), spans));
    }

    pub(crate) fn get(&self, record: &Arc<Record>, index: usize) -> Option<Span> {
        self.map.get(&(Arc::as_ptr(record) as usize)).and_then(|(_, spans)| spans.get(index).copied().flatten())
    }
}
