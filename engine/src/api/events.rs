//! Event definitions: named, versioned `.phx` schemas kept beside the flows, so a flow can
//! import one by name and a producer can ask whether an event fits it before sending it.
//!
//! In the directory store they live under `DIR/events/`:
//!
//! - `events/NAME.phx` is the current version, the file a flow imports
//!   (`import "events/UserSignup.phx"` from a flow in DIR: imports resolve relative to the
//!   importing file, so no language change was needed);
//! - `events/versions/NAME-vN.phx` is every version, read by id (`NAME-vN`), so an id always
//!   names the same text.
//!
//! A definition's text holds schema declarations (and imports of other definitions) only:
//! importing it adds nothing but types to a flow. It is compiled by the flows' own front end and
//! events are validated by the engine's own decoder ([`Decoder`], which runs
//! [`crate::exec::json::check_event`] and the schema's rules), not by a second implementation.

use crate::EngineCatalog;
use crate::FsLoader;
use crate::api::flows::{ApiDiagnostic, diagnostics};
use crate::exec::ack::Ack;
use crate::exec::batch::RawBatchBuilder;
use crate::exec::decode::Decoder;
use phoenix_dsl::Loader;
use phoenix_dsl::ast::Item;
use phoenix_dsl::plan::graph::NodeKind;
use phoenix_dsl::types::{Record, StreamType};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("`{0}` is not an event name: use 1 to 64 letters, digits and `_`, starting with a letter")]
    BadName(String),
    #[error("event definition store {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// An event name is the name of the schema it defines (and a file name), so an identifier.
pub fn check_event_name(name: &str) -> Result<(), EventError> {
    let ok = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok { Ok(()) } else { Err(EventError::BadName(name.to_string())) }
}

/// One version of a definition, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Definition {
    /// `NAME-vN`: names this version's text for ever (until it is deleted).
    pub id: String,
    pub name: String,
    pub version: u32,
    /// Whether this is the version flows import (the highest one).
    pub current: bool,
}

/// Parse an id into its name and version.
pub fn parse_id(id: &str) -> Option<(&str, u32)> {
    let (name, version) = id.rsplit_once("-v")?;
    let version: u32 = version.parse().ok().filter(|v| *v > 0)?;
    check_event_name(name).ok()?;
    // `NAME-v01` would name the same file as `NAME-v1` once parsed: only the canonical form.
    (format!("{name}-v{version}") == id).then_some((name, version))
}

/// The definitions of a directory store: `DIR/events/`.
#[derive(Debug)]
pub struct EventStore {
    dir: PathBuf,
    /// Creating and deleting versions read-modify-write the directory: one at a time.
    changes: Mutex<()>,
    /// Held shared by a flow PUT from its compile until its text is stored, and exclusively by
    /// a DELETE from its check for importing flows until the file is gone: otherwise a flow
    /// compiled against a definition could be stored just after that definition was deleted.
    pub(super) imports: tokio::sync::RwLock<()>,
}

fn io(path: &Path, source: std::io::Error) -> EventError {
    EventError::Io { path: path.display().to_string(), source }
}

impl EventStore {
    /// `flows` is the flow directory; `events/` is created under it when first written.
    pub fn new(flows: &Path) -> EventStore {
        EventStore { dir: flows.join("events"), changes: Mutex::new(()), imports: tokio::sync::RwLock::new(()) }
    }

    /// The file flows import: `DIR/events/NAME.phx`.
    pub fn current_file(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.phx"))
    }

    fn version_file(&self, name: &str, version: u32) -> PathBuf {
        self.dir.join("versions").join(format!("{name}-v{version}.phx"))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.changes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every version of every definition (or of `name`), by name then version.
    pub fn list(&self, name: Option<&str>) -> Result<Vec<Definition>, EventError> {
        let dir = self.dir.join("versions");
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&dir, e)),
        };
        let mut found: Vec<(String, u32)> = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io(&dir, e))?;
            let file = entry.file_name();
            let Some((n, v)) = file.to_str().and_then(|f| f.strip_suffix(".phx")).and_then(parse_id) else {
                continue;
            };
            if name.is_none_or(|want| want == n) {
                found.push((n.to_string(), v));
            }
        }
        found.sort();
        let mut out: Vec<Definition> = Vec::with_capacity(found.len());
        for (i, (n, v)) in found.iter().enumerate() {
            let current = found.get(i + 1).is_none_or(|(next, _)| next != n);
            out.push(Definition { id: format!("{n}-v{v}"), name: n.clone(), version: *v, current });
        }
        Ok(out)
    }

    /// The version `id` and its text.
    pub fn get(&self, id: &str) -> Result<Option<(Definition, String)>, EventError> {
        let Some((name, version)) = parse_id(id) else { return Ok(None) };
        let path = self.version_file(name, version);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path, e)),
        };
        let def = self.list(Some(name))?.into_iter().find(|d| d.version == version);
        Ok(def.map(|d| (d, text)))
    }

    /// Store `text` as the next version of `name` and make it current; `false` (and the
    /// existing version) when it is the current text already, so a retried POST adds nothing.
    pub fn create(&self, name: &str, text: &str) -> Result<(Definition, bool), EventError> {
        let _change = self.lock();
        let versions = self.list(Some(name))?;
        if let Some(last) = versions.last()
            && std::fs::read_to_string(self.version_file(name, last.version)).ok().as_deref() == Some(text)
        {
            return Ok((last.clone(), false));
        }
        let version = versions.last().map_or(1, |d| d.version + 1);
        let dir = self.dir.join("versions");
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        write(&self.version_file(name, version), text)?;
        write(&self.current_file(name), text)?;
        Ok((Definition { id: format!("{name}-v{version}"), name: name.to_string(), version, current: true }, true))
    }

    /// Remove the version `id`. When it was the current one, the version before it becomes
    /// current (or, with none left, `events/NAME.phx` goes). `false` if there was no such id.
    pub fn delete(&self, id: &str) -> Result<bool, EventError> {
        let Some((name, version)) = parse_id(id) else { return Ok(false) };
        let _change = self.lock();
        let path = self.version_file(name, version);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io(&path, e)),
        }
        let current = self.current_file(name);
        match self.list(Some(name))?.last() {
            Some(previous) if previous.version < version => {
                let text = std::fs::read_to_string(self.version_file(name, previous.version))
                    .map_err(|e| io(&self.version_file(name, previous.version), e))?;
                write(&current, &text)?;
            }
            Some(_) => {}
            None => match std::fs::remove_file(&current) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&current, e)),
            },
        }
        Ok(true)
    }
}

/// Write beside `path` and rename over it, so a crash leaves the old text or the new.
fn write(path: &Path, text: &str) -> Result<(), EventError> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))
}

/// Why a definition's text was refused.
#[derive(Debug)]
pub enum Refused {
    /// The compiler's diagnostics (the same shape a flow PUT answers with).
    Diagnostics(Vec<ApiDiagnostic>),
    /// It compiles but is not a definition of `name`.
    NotADefinition(String),
}

/// A compiled definition: the record its events must fit.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub record: Arc<Record>,
    pub warnings: Vec<ApiDiagnostic>,
}

/// Compile `text` as the definition of `name`, stored at `file` (its imports, other
/// definitions, are read relative to it). The record comes from the checker itself: a probe
/// flow in memory declares a source of the schema, and the source's stream type is read back.
pub fn compile(catalog: &EngineCatalog, file: &Path, name: &str, text: &str) -> Result<Compiled, Refused> {
    let file = crate::loader::normalize(file);
    let loader = MemoryLoader { file: file.clone(), text };
    let own = phoenix_dsl::compile(&file, &loader, catalog);
    if own.has_errors() {
        return Err(Refused::Diagnostics(diagnostics(&own)));
    }
    let root = own.modules.first();
    let items = root.map(|m| m.items.as_slice()).unwrap_or_default();
    if let Some(other) = items.iter().find(|i| !matches!(i, Item::Schema(_) | Item::Import(_))) {
        let (line, _) = own.sources.line_column(other.span());
        return Err(Refused::NotADefinition(format!(
            "line {line}: an event definition holds `schema` declarations (and imports of other definitions) only"
        )));
    }
    if !items.iter().any(|i| matches!(i, Item::Schema(s) if s.name.name == name)) {
        return Err(Refused::NotADefinition(format!("the text declares no `schema {name} {{ ... }}`")));
    }
    // `probe` cannot clash: a definition declares no sources.
    let probe_file = format!("{file}.probe");
    let probe_text = format!(
        "import \"{}\"\nsource probe = generate {{ count = 1 }} as {name}\n",
        Path::new(&file).file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default()
    );
    let probe_loader = ProbeLoader { probe: (&probe_file, &probe_text), definition: &loader };
    let probe = phoenix_dsl::compile(&probe_file, &probe_loader, catalog);
    let record = probe.flow.as_ref().and_then(|g| {
        g.graph.node_weights().find_map(|n| match &n.kind {
            NodeKind::Source { name, .. } if name == "probe" => Some(n.output.record.clone()),
            _ => None,
        })
    });
    match record {
        Some(record) if !probe.has_errors() => Ok(Compiled { record, warnings: diagnostics(&own) }),
        _ => Err(Refused::Diagnostics(diagnostics(&probe))),
    }
}

/// The definition's own file from memory (a text not yet stored), its imports from disk.
struct MemoryLoader<'a> {
    file: String,
    text: &'a str,
}

impl Loader for MemoryLoader<'_> {
    fn load(&self, path: &str, from: Option<&str>) -> Result<(String, Vec<u8>), String> {
        if from.is_none() && path == self.file {
            return Ok((self.file.clone(), self.text.as_bytes().to_vec()));
        }
        // The probe imports the definition before it is stored: resolve as FsLoader does, and
        // answer from memory when it is this file.
        let full = match from {
            Some(f) if Path::new(path).is_relative() => Path::new(f).parent().unwrap_or(Path::new("")).join(path),
            _ => PathBuf::from(path),
        };
        if crate::loader::normalize(&full) == self.file {
            return Ok((self.file.clone(), self.text.as_bytes().to_vec()));
        }
        FsLoader.load(path, from)
    }
}

struct ProbeLoader<'a> {
    probe: (&'a str, &'a str),
    definition: &'a MemoryLoader<'a>,
}

impl Loader for ProbeLoader<'_> {
    fn load(&self, path: &str, from: Option<&str>) -> Result<(String, Vec<u8>), String> {
        if from.is_none() && path == self.probe.0 {
            return Ok((self.probe.0.to_string(), self.probe.1.as_bytes().to_vec()));
        }
        self.definition.load(path, from)
    }
}

/// One declared field's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldVerdict {
    pub field: String,
    /// The declared type, `?` when optional (`int`, `string?`, `list<Item>`).
    pub expected: String,
    /// `present` (fits), `absent` (optional, not given or null), `missing` (required, not
    /// given or null) or `wrong_type`.
    pub status: &'static str,
    /// The decoder's reason, for `missing` and `wrong_type`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What the engine's decoder makes of one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Whether a source of this schema would take the event (not make it a dead letter).
    pub valid: bool,
    /// The decoder's reason when it is not valid, exactly as a dead letter would carry it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Every declared field, in declaration order (empty when the payload is no JSON object).
    pub fields: Vec<FieldVerdict>,
    /// Fields of the event the schema does not declare (they pass through to sinks).
    pub undeclared: Vec<String>,
}

/// Decode `payload` as a source of `record` would, then each declared field on its own (the
/// same decoder on a one-field record), so every field gets its verdict and not just the first
/// that fails.
pub fn validate(record: &Arc<Record>, payload: &[u8]) -> Verdict {
    let error = decode_error(record.clone(), payload);
    let mut fields = Vec::new();
    let mut undeclared = Vec::new();
    // The decoder accepted it, or refused it; either way a JSON object can be taken apart.
    if let Ok(serde_json::Value::Object(event)) = serde_json::from_slice::<serde_json::Value>(payload) {
        for f in &record.fields {
            let given = event.get(&f.name).filter(|v| !v.is_null());
            let one = Arc::new(Record { fields: vec![f.clone()] });
            let alone = match given {
                Some(v) => serde_json::json!({ &f.name: v }),
                None => serde_json::json!({}),
            };
            let problem = decode_error(one, alone.to_string().as_bytes());
            let status = match (given, &problem, f.optional) {
                (_, Some(_), _) if given.is_none() => "missing",
                (_, Some(_), _) => "wrong_type",
                (None, None, _) => "absent",
                (Some(_), None, _) => "present",
            };
            let expected = format!("{}{}", f.ty, if f.optional { "?" } else { "" });
            fields.push(FieldVerdict { field: f.name.clone(), expected, status, error: problem });
        }
        undeclared = event.keys().filter(|k| record.field(k).is_none()).cloned().collect();
    }
    Verdict { valid: error.is_none(), error, fields, undeclared }
}

/// The dead letter's reason when a source of `record` would refuse `payload`.
fn decode_error(record: Arc<Record>, payload: &[u8]) -> Option<String> {
    let stream = StreamType { record, open: true, metadata: Arc::new(Record::default()) };
    let decoder = Decoder::new(&stream, "event", &[]);
    let mut b = RawBatchBuilder::default();
    b.push(payload);
    let (batch, dead) = decoder.decode(&b.finish(Vec::new(), Ack::none()));
    match (batch, dead.into_iter().next()) {
        (_, Some(d)) => Some(d.error),
        (Some(_), None) => None,
        (None, None) => Some("the event was not decoded".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("phoenix-events-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("temp dir");
        d
    }

    #[test]
    fn ids_are_canonical() {
        assert_eq!(parse_id("UserSignup-v2"), Some(("UserSignup", 2)));
        assert_eq!(parse_id("User_Signup2-v10"), Some(("User_Signup2", 10)));
        for bad in ["UserSignup", "UserSignup-v0", "UserSignup-v01", "-v1", "1a-v1", "a-b-v1", "../x-v1"] {
            assert_eq!(parse_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn versions_are_kept_and_the_current_one_is_importable() {
        let d = dir("versions");
        let s = EventStore::new(&d);
        assert_eq!(s.list(None).expect("list"), []);
        let (v1, new) = s.create("E", "schema E { a: int }\n").expect("create");
        assert!(new);
        assert_eq!(v1.id, "E-v1");
        let (again, new) = s.create("E", "schema E { a: int }\n").expect("create");
        assert!(!new, "the same text is the same version");
        assert_eq!(again.id, "E-v1");
        let (v2, _) = s.create("E", "schema E { a: int, b: string? }\n").expect("create");
        assert_eq!(v2.id, "E-v2");
        assert_eq!(std::fs::read_to_string(s.current_file("E")).expect("current"), "schema E { a: int, b: string? }\n");
        let ids: Vec<(String, bool)> = s.list(None).expect("list").into_iter().map(|d| (d.id, d.current)).collect();
        assert_eq!(ids, [("E-v1".to_string(), false), ("E-v2".to_string(), true)]);
        assert_eq!(s.get("E-v1").expect("get").map(|(_, t)| t).as_deref(), Some("schema E { a: int }\n"));
        // Deleting the current version brings the one before back.
        assert!(s.delete("E-v2").expect("delete"));
        assert!(!s.delete("E-v2").expect("delete again"));
        assert_eq!(std::fs::read_to_string(s.current_file("E")).expect("current"), "schema E { a: int }\n");
        assert!(s.delete("E-v1").expect("delete"));
        assert!(!s.current_file("E").exists());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn events_are_judged_field_by_field_by_the_decoder() {
        let d = dir("validate");
        let catalog = EngineCatalog::new();
        let text = "schema Address { city: string }\nschema E { id: int, email: string, note: string?, at: Address }\n";
        let c = compile(&catalog, &d.join("events/E.phx"), "E", text).expect("compiles");
        let ok = validate(&c.record, br#"{"id": 1, "email": "a@b", "at": {"city": "x"}, "extra": true}"#);
        assert!(ok.valid, "{ok:?}");
        assert_eq!(ok.undeclared, ["extra"]);
        let status: Vec<&str> = ok.fields.iter().map(|f| f.status).collect();
        assert_eq!(status, ["present", "present", "absent", "present"]);
        let bad = validate(&c.record, br#"{"id": "one", "at": {"city": 3}}"#);
        assert!(!bad.valid && bad.error.is_some(), "{bad:?}");
        let status: Vec<(&str, &str)> = bad.fields.iter().map(|f| (f.field.as_str(), f.status)).collect();
        assert_eq!(status, [("id", "wrong_type"), ("email", "missing"), ("note", "absent"), ("at", "wrong_type")]);
        assert_eq!(bad.fields[0].expected, "int");
        let broken = validate(&c.record, b"{\"id\": 1,}");
        assert!(!broken.valid && broken.fields.is_empty(), "{broken:?}");
        assert!(broken.error.as_deref().is_some_and(|e| e.starts_with("invalid JSON at byte")), "{broken:?}");

        assert!(matches!(compile(&catalog, &d.join("events/E.phx"), "F", text), Err(Refused::NotADefinition(_))));
        let with_source = format!("{text}source s = generate {{}} as E\n");
        assert!(matches!(
            compile(&catalog, &d.join("events/E.phx"), "E", &with_source),
            Err(Refused::NotADefinition(_))
        ));
        match compile(&catalog, &d.join("events/E.phx"), "E", "schema E { id: innt }\n") {
            Err(Refused::Diagnostics(d)) => assert!(d.iter().any(|d| d.severity == "error" && d.line == 1), "{d:?}"),
            other => panic!("{other:?}"),
        }
        let _ = std::fs::remove_dir_all(&d);
    }
}
