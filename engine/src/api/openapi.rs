//! docs/openapi.yaml against the router: the document's paths and methods are exactly the
//! routes [`super::router`] registers (read from its source, so a route added without its
//! documentation fails here). engine/tests/api.rs checks real answers against its schemas.

use std::collections::BTreeSet;

const DOCUMENT: &str = include_str!("../../../docs/openapi.yaml");
const ROUTER: &str = include_str!("mod.rs");

/// `(METHOD, path)` of every operation in the document.
fn documented() -> BTreeSet<(String, String)> {
    let doc: serde_json::Value = serde_saphyr::from_str(DOCUMENT).expect("docs/openapi.yaml parses");
    let paths = doc["paths"].as_object().expect("paths");
    let mut out = BTreeSet::new();
    for (path, item) in paths {
        for method in item.as_object().expect("path item").keys() {
            if ["get", "put", "post", "delete", "patch", "head"].contains(&method.as_str()) {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

/// `(METHOD, path)` of every `.route("PATH", get(..).put(..))` in `router`.
fn registered() -> BTreeSet<(String, String)> {
    let body = ROUTER.split("pub fn router(").nth(1).expect("router").split("\n}\n").next().expect("body");
    let mut out = BTreeSet::new();
    for call in body.split(".route(\"").skip(1) {
        let (path, rest) = call.split_once('"').expect("path");
        let handlers = rest.split("))\n").next().expect("handlers");
        for method in ["get", "put", "post", "delete", "patch"] {
            // `get(list)` or `.get(list)`, never `event_routes::get`.
            let called = handlers
                .match_indices(&format!("{method}("))
                .any(|(i, _)| i == 0 || matches!(handlers.as_bytes()[i - 1], b' ' | b',' | b'.'));
            if called {
                out.insert((method.to_uppercase(), path.to_string()));
            }
        }
    }
    out
}

#[test]
fn the_document_describes_every_route_and_no_other() {
    let registered = registered();
    assert!(registered.len() >= 10, "the router was read: {registered:?}");
    let documented = documented();
    let missing: Vec<_> = registered.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&registered).collect();
    assert!(missing.is_empty() && extra.is_empty(), "undocumented: {missing:?}; documented, not served: {extra:?}");
}
