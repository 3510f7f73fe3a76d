//! Any bytes as an event payload: the validator says valid exactly when the strict reference
//! (serde_json, one object, no repeated key) does, and neither decode path accepts anything
//! else or panics. Run: `cargo fuzz run decode` (needs cargo-fuzz; see README).
#![no_main]

#[path = "../../engine/tests/support/strict.rs"]
mod strict;

use libfuzzer_sys::fuzz_target;
use phoenix_dsl::types::{Record, RecordField, StreamType, Ty};
use phoenix_engine::exec::ack::Ack;
use phoenix_engine::exec::batch::RawBatchBuilder;
use phoenix_engine::exec::decode::Decoder;
use phoenix_engine::exec::json::{Keys, Shape, check_event};
use std::sync::{Arc, OnceLock};

/// A flat schema (the one-pass decoder) and a nested one (arrow-json after the validator).
fn decoders() -> &'static [Decoder; 2] {
    static D: OnceLock<[Decoder; 2]> = OnceLock::new();
    D.get_or_init(|| {
        let f = |name: &str, ty: Ty, optional: bool| RecordField { name: name.into(), ty, optional };
        let stream = |fields| StreamType {
            record: Arc::new(Record { fields }),
            open: true,
            metadata: Arc::new(Record::default()),
        };
        let flat = stream(vec![f("id", Ty::Int, false), f("s", Ty::String, true), f("x", Ty::Float, true)]);
        let inner = Record { fields: vec![f("a", Ty::String, false)] };
        let nested = stream(vec![
            f("id", Ty::Int, false),
            f("r", Ty::Record(Arc::new(inner)), true),
            f("l", Ty::List(Box::new(Ty::String)), true),
        ]);
        [Decoder::new(&flat, "source flat", &[]), Decoder::new(&nested, "source nested", &[])]
    })
}

fuzz_target!(|data: &[u8]| {
    let valid = check_event(data, &mut Keys::default(), &Shape::default()).is_ok();
    assert_eq!(valid, strict::strict_object(data), "{:?}", String::from_utf8_lossy(data));
    for d in decoders() {
        let mut b = RawBatchBuilder::default();
        b.push(br#"{"id":1}"#);
        b.push(data);
        let (batch, dead) = d.decode(&b.finish(Vec::new(), Ack::none()));
        let rows = batch.map_or(0, |b| b.num_rows());
        assert_eq!(rows + dead.len(), 2);
        assert!(valid || rows == 1, "accepted an invalid payload: {:?}", String::from_utf8_lossy(data));
    }
});
