//! Any bytes, valid UTF-8 or not, compile to diagnostics or a flow: never a panic or a hang.
//! Run: `cargo fuzz run check` (needs cargo-fuzz; see README).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let loader = phoenix_dsl::MemoryLoader::new([("fuzz.phx".to_string(), data.to_vec())]);
    let catalog = phoenix_engine::EngineCatalog::new();
    let c = phoenix_dsl::compile("fuzz.phx", &loader, &catalog);
    let _ = c.render(false);
    let _ = c.plan(&catalog);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(formatted) = phoenix_dsl::fmt::format(text) {
            // Formatting is idempotent on anything that parses.
            assert_eq!(phoenix_dsl::fmt::format(&formatted).ok().as_deref(), Some(formatted.as_str()));
        }
    }
});
