//! `phoenix lsp`: the language server, over stdio.
//!
//! Everything it knows comes from the `dsl` front end that `phoenix check` runs: each open
//! document is compiled as the root of a flow on every change (full-text sync), imports are read
//! from the open documents first and then the disk, and the answers (diagnostics, hover,
//! completion, navigation, outline, formatting, semantic tokens) are read off the syntax tree, the
//! checker's facts and the flow graph. Requests are answered in order on one thread: a check of a
//! large flow takes milliseconds, so there is nothing to cancel.

mod actions;
pub mod bench;
mod complete;
mod diagnostics;
mod hover;
mod navigate;
pub mod text;
pub mod workspace;

use crate::EngineCatalog;
use lsp_server::{Connection, ErrorCode, Message, Notification, Request, RequestId, Response};
use lsp_types::notification::Notification as _;
use lsp_types::request::Request as _;
use lsp_types::{notification as notif, request as req};
use serde::Serialize;
use serde::de::DeserializeOwned;
use workspace::Workspace;

#[derive(Debug, thiserror::Error)]
pub enum LspError {
    #[error("LSP protocol: {0}")]
    Protocol(#[from] lsp_server::ProtocolError),
    #[error("the client went away: {0}")]
    Send(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("bad initialize parameters: {0}")]
    Params(#[from] serde_json::Error),
}

/// Serve one client on stdin/stdout until it says `exit`.
pub fn serve_stdio() -> Result<(), LspError> {
    let (connection, threads) = Connection::stdio();
    serve(connection)?;
    threads.join()?;
    Ok(())
}

/// Serve one client on `connection` (tests pass an in-memory one).
pub fn serve(connection: Connection) -> Result<(), LspError> {
    let caps = serde_json::to_value(capabilities())?;
    connection.initialize(caps)?;
    let mut server = Server { connection: &connection, ws: Workspace::default(), catalog: EngineCatalog::new() };
    for msg in &connection.receiver {
        match msg {
            Message::Request(r) => {
                if connection.handle_shutdown(&r)? {
                    return Ok(());
                }
                server.request(r)?;
            }
            Message::Notification(n) => {
                let method = n.method.clone();
                // As for requests: a bug while analysing one text must not end the session.
                let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| server.notification(n)));
                match handled {
                    Ok(result) => result?,
                    Err(_) => eprintln!("phoenix lsp: failed handling {method}; the session goes on"),
                }
            }
            Message::Response(_) => {}
        }
    }
    Ok(())
}

pub fn capabilities() -> lsp_types::ServerCapabilities {
    use lsp_types::*;
    ServerCapabilities {
        text_document_sync: Some(TextDocumentSyncCapability::Options(TextDocumentSyncOptions {
            open_close: Some(true),
            change: Some(TextDocumentSyncKind::FULL),
            save: None,
            ..Default::default()
        })),
        hover_provider: Some(HoverProviderCapability::Simple(true)),
        completion_provider: Some(CompletionOptions {
            trigger_characters: Some([".", "@", "|", "="].map(String::from).to_vec()),
            ..Default::default()
        }),
        definition_provider: Some(OneOf::Left(true)),
        references_provider: Some(OneOf::Left(true)),
        rename_provider: Some(OneOf::Right(RenameOptions {
            prepare_provider: Some(true),
            work_done_progress_options: Default::default(),
        })),
        document_symbol_provider: Some(OneOf::Left(true)),
        document_formatting_provider: Some(OneOf::Left(true)),
        code_action_provider: Some(CodeActionProviderCapability::Options(CodeActionOptions {
            code_action_kinds: Some(vec![CodeActionKind::QUICKFIX]),
            ..Default::default()
        })),
        semantic_tokens_provider: Some(SemanticTokensServerCapabilities::SemanticTokensOptions(
            SemanticTokensOptions {
                legend: navigate::legend(),
                full: Some(SemanticTokensFullOptions::Bool(true)),
                range: None,
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

struct Server<'a> {
    connection: &'a Connection,
    ws: Workspace,
    catalog: EngineCatalog,
}

/// A request the server could not answer, with the LSP error code to send.
struct Failure(ErrorCode, String);

type Answer = Result<serde_json::Value, Failure>;

fn params<P: DeserializeOwned>(r: Request) -> Result<P, Failure> {
    serde_json::from_value(r.params).map_err(|e| Failure(ErrorCode::InvalidParams, e.to_string()))
}

fn json<T: Serialize>(v: T) -> Answer {
    serde_json::to_value(v).map_err(|e| Failure(ErrorCode::InternalError, e.to_string()))
}

impl Server<'_> {
    fn send(&self, m: Message) -> Result<(), LspError> {
        self.connection.sender.send(m).map_err(|e| LspError::Send(e.to_string()))
    }

    fn request(&mut self, r: Request) -> Result<(), LspError> {
        let id: RequestId = r.id.clone();
        // A bug in one answer must not end the session: the editor would lose every feature.
        let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.answer(r)))
            .unwrap_or_else(|_| Err(Failure(ErrorCode::InternalError, "the server failed on this request".into())));
        let response = match answer {
            Ok(v) => Response::new_ok(id, v),
            Err(Failure(code, message)) => Response::new_err(id, code as i32, message),
        };
        self.send(response.into())
    }

    fn answer(&mut self, r: Request) -> Answer {
        let ws = &self.ws;
        let catalog = &self.catalog;
        match r.method.as_str() {
            req::HoverRequest::METHOD => json(hover::hover(ws, catalog, params(r)?)),
            req::Completion::METHOD => json(complete::complete(ws, catalog, params(r)?)),
            req::GotoDefinition::METHOD => json(navigate::definition(ws, params(r)?)),
            req::References::METHOD => json(navigate::references(ws, params(r)?)),
            req::PrepareRenameRequest::METHOD => json(navigate::prepare_rename(ws, params(r)?)),
            req::Rename::METHOD => json(navigate::rename(ws, params(r)?)?),
            req::DocumentSymbolRequest::METHOD => json(navigate::symbols(ws, params(r)?)),
            req::Formatting::METHOD => json(navigate::format(ws, params(r)?)),
            req::SemanticTokensFullRequest::METHOD => json(navigate::semantic_tokens(ws, params(r)?)),
            req::CodeActionRequest::METHOD => json(actions::code_actions(ws, params(r)?)),
            other => Err(Failure(ErrorCode::MethodNotFound, format!("unsupported request {other}"))),
        }
    }

    fn notification(&mut self, n: Notification) -> Result<(), LspError> {
        let changed = match n.method.as_str() {
            notif::DidOpenTextDocument::METHOD => {
                let Ok(p) = serde_json::from_value::<lsp_types::DidOpenTextDocumentParams>(n.params) else {
                    return Ok(());
                };
                let d = p.text_document;
                self.ws.open(d.uri, d.version, d.text, &self.catalog)
            }
            notif::DidChangeTextDocument::METHOD => {
                let Ok(p) = serde_json::from_value::<lsp_types::DidChangeTextDocumentParams>(n.params) else {
                    return Ok(());
                };
                // Full sync: the last change holds the whole text.
                let Some(change) = p.content_changes.into_iter().last() else { return Ok(()) };
                let d = p.text_document;
                self.ws.open(d.uri, d.version, change.text, &self.catalog)
            }
            notif::DidCloseTextDocument::METHOD => {
                let Ok(p) = serde_json::from_value::<lsp_types::DidCloseTextDocumentParams>(n.params) else {
                    return Ok(());
                };
                let name = workspace::name_of(&p.text_document.uri);
                self.ws.close(&p.text_document.uri);
                // An editor shows a closed file's problems no more.
                self.publish_empty(p.text_document.uri)?;
                name
            }
            _ => return Ok(()),
        };
        if let Some(doc) = self.ws.docs.get(&changed) {
            self.send(diagnostics::publish(doc))?;
        }
        // Flows importing the changed file see its new text.
        for dep in self.ws.dependents(&changed) {
            self.ws.reanalyse(&dep, &self.catalog);
            if let Some(doc) = self.ws.docs.get(&dep) {
                self.send(diagnostics::publish(doc))?;
            }
        }
        Ok(())
    }

    fn publish_empty(&self, uri: lsp_types::Url) -> Result<(), LspError> {
        let p = lsp_types::PublishDiagnosticsParams { uri, diagnostics: Vec::new(), version: None };
        let n = Notification::new(notif::PublishDiagnostics::METHOD.to_string(), p);
        self.send(n.into())
    }
}
