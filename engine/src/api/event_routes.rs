//! `/api/v1/events`: event definitions over HTTP (docs/api.md, "Event definitions").

use super::events::{self, Definition, EventError, Refused, check_event_name};
use super::{Api, error, invalid_text, query_pairs};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Json, Response};
use serde_json::json;

/// The definitions, or 501 where none are kept (`phoenix controller`).
fn definitions(api: &Api) -> Result<&std::sync::Arc<events::EventStore>, Response> {
    api.events.as_ref().ok_or_else(|| {
        error(
            StatusCode::NOT_IMPLEMENTED,
            "event definitions are kept by `phoenix serve` (in its flow directory); this server keeps none",
        )
    })
}

fn event_error(e: EventError) -> Response {
    match e {
        EventError::BadName(_) => error(StatusCode::BAD_REQUEST, e.to_string()),
        EventError::Io { .. } => {
            tracing::error!("{e}");
            error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
    }
}

/// Where to validate events against `id`.
fn validate_url(id: &str) -> String {
    format!("/api/v1/events/{id}/validate")
}

fn described(d: &Definition) -> serde_json::Value {
    json!({
        "id": d.id,
        "name": d.name,
        "version": d.version,
        "current": d.current,
        "import": format!("events/{}.phx", d.name),
        "validate": validate_url(&d.id),
    })
}

/// `POST /api/v1/events` with `{"name": "UserSignup", "schema": "schema UserSignup { ... }"}`.
pub(super) async fn create(State(api): State<Api>, body: Result<Bytes, BytesRejection>) -> Response {
    let store = match definitions(&api) {
        Ok(s) => s,
        Err(r) => return r,
    };
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        name: String,
        schema: String,
    }
    let body = match body {
        Ok(b) => b,
        Err(e) => return error(e.status(), e.body_text()),
    };
    let body: Body = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            let answer = json!({"error": format!("malformed JSON: {e}"), "line": e.line(), "column": e.column()});
            return (StatusCode::BAD_REQUEST, Json(answer)).into_response();
        }
    };
    if let Err(e) = check_event_name(&body.name) {
        return event_error(e);
    }
    let file = store.current_file(&body.name);
    let compiled = match events::compile(api.flows.catalog(), &file, &body.name, &body.schema) {
        Ok(c) => c,
        Err(Refused::Diagnostics(d)) => return invalid_text(&format!("the event definition `{}`", body.name), d),
        Err(Refused::NotADefinition(message)) => return error(StatusCode::BAD_REQUEST, message),
    };
    match store.create(&body.name, &body.schema) {
        Ok((def, new)) => {
            let status = if new { StatusCode::CREATED } else { StatusCode::OK };
            let mut answer = described(&def);
            answer["warnings"] = json!(compiled.warnings);
            let mut r = (status, Json(answer)).into_response();
            if let Ok(v) = header::HeaderValue::from_str(&format!("/api/v1/events/{}", def.id)) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
        Err(e) => event_error(e),
    }
}

/// `GET /api/v1/events[?name=NAME]`: every version of every definition (or of `NAME`).
pub(super) async fn list(State(api): State<Api>, uri: Uri) -> Response {
    let store = match definitions(&api) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let mut name = None;
    for (k, v) in query_pairs(uri.query().unwrap_or("")) {
        match k.as_str() {
            "name" => name = Some(v),
            other => return error(StatusCode::BAD_REQUEST, format!("unknown query parameter `{other}`")),
        }
    }
    match store.list(name.as_deref()) {
        Ok(defs) => Json(json!({"events": defs.iter().map(described).collect::<Vec<_>>()})).into_response(),
        Err(e) => event_error(e),
    }
}

/// `GET /api/v1/events/{id}`: the version and its text.
pub(super) async fn get(State(api): State<Api>, Path(id): Path<String>) -> Response {
    let store = match definitions(&api) {
        Ok(s) => s,
        Err(r) => return r,
    };
    match store.get(&id) {
        Ok(Some((def, text))) => {
            let mut answer = described(&def);
            answer["schema"] = json!(text);
            Json(answer).into_response()
        }
        Ok(None) => no_such(&id),
        Err(e) => event_error(e),
    }
}

fn no_such(id: &str) -> Response {
    error(StatusCode::NOT_FOUND, format!("no event definition `{id}` (ids look like `UserSignup-v1`)"))
}

/// `DELETE /api/v1/events/{id}`: 409 when it is the current version and a stored flow imports
/// it (deleting it would change or break that flow), naming the flows.
pub(super) async fn delete(State(api): State<Api>, Path(id): Path<String>) -> Response {
    let store = match definitions(&api) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let def = match store.get(&id) {
        Ok(Some((def, _))) => def,
        Ok(None) => return no_such(&id),
        Err(e) => return event_error(e),
    };
    // No flow PUT is between its compile and its store while the importers are read.
    let _imports = store.imports.write().await;
    if def.current {
        let users = match users(&api, store, &def.name).await {
            Ok(u) => u,
            Err(r) => return r,
        };
        if !users.is_empty() {
            let answer = json!({
                "error": format!("`{id}` is imported by {}: change them first", users.join(", ")),
                "flows": users,
            });
            return (StatusCode::CONFLICT, Json(answer)).into_response();
        }
    }
    match store.delete(&id) {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => no_such(&id),
        Err(e) => event_error(e),
    }
}

/// The stored flows that import the definition `name`, directly or through other files: the
/// files the front end loaded for them, so a commented-out import does not count.
async fn users(api: &Api, store: &events::EventStore, name: &str) -> Result<Vec<String>, Response> {
    let file = crate::loader::normalize(&store.current_file(name));
    let mut users = Vec::new();
    for flow in api.flows.all().await.map_err(super::store_error)? {
        let c = api.flows.front_end_of(&flow);
        if c.sources.files().any(|(_, f)| crate::loader::normalize(std::path::Path::new(&f.name)) == file) {
            users.push(flow.name);
        }
    }
    Ok(users)
}

/// `POST /api/v1/events/{id}/validate`: the event in the body judged by the engine's decoder
/// against this version.
pub(super) async fn validate(
    State(api): State<Api>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let store = match definitions(&api) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let body = match body {
        Ok(b) => b,
        Err(e) => return error(e.status(), e.body_text()),
    };
    let (def, text) = match store.get(&id) {
        Ok(Some(found)) => found,
        Ok(None) => return no_such(&id),
        Err(e) => return event_error(e),
    };
    if body.trim_ascii().is_empty() {
        return error(StatusCode::BAD_REQUEST, "the body must be one JSON event");
    }
    // Compiled where the current version lives, so its imports of other definitions resolve.
    let file = store.current_file(&def.name);
    let compiled = match events::compile(api.flows.catalog(), &file, &def.name, &text) {
        Ok(c) => c,
        // Stored texts compiled when they were posted; one that no longer does lost an import.
        Err(Refused::Diagnostics(d)) => {
            let answer = json!({"error": format!("`{id}` no longer compiles"), "diagnostics": d});
            return (StatusCode::CONFLICT, Json(answer)).into_response();
        }
        Err(Refused::NotADefinition(message)) => return error(StatusCode::CONFLICT, message),
    };
    let verdict = events::validate(&compiled.record, &body);
    let mut answer = json!({"id": def.id});
    if let (Some(out), serde_json::Value::Object(v)) = (answer.as_object_mut(), json!(verdict)) {
        out.extend(v);
    }
    Json(answer).into_response()
}
