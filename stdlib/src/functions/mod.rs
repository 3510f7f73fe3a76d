//! Built-in functions, one per file. Each declares its signature (for the checker), its
//! examples (executed by the tests) and its DataFusion implementation (run by the engine).

mod abs;
mod ceil;
mod coalesce;
mod concat;
mod ends_with;
mod floor;
mod format_timestamp;
mod hash;
mod json_get;
mod length;
mod lower;
mod now;
mod payload_size;
mod regexp_match;
mod replace;
mod round;
mod starts_with;
mod substr;
mod to_timestamp;
mod trim;
mod upper;

use phoenix_dsl::catalog::Function;

/// Every built-in function. This list is the registry: there is no other registration.
pub fn all() -> Vec<Box<dyn Function>> {
    vec![
        Box::new(lower::Lower),
        Box::new(upper::Upper),
        Box::new(trim::Trim),
        Box::new(concat::Concat),
        Box::new(substr::Substr),
        Box::new(length::Length),
        Box::new(replace::Replace),
        Box::new(regexp_match::RegexpMatch),
        Box::new(starts_with::StartsWith),
        Box::new(ends_with::EndsWith),
        Box::new(coalesce::Coalesce),
        Box::new(abs::Abs),
        Box::new(round::Round),
        Box::new(floor::Floor),
        Box::new(ceil::Ceil),
        Box::new(hash::Hash),
        Box::new(json_get::JsonGet),
        Box::new(now::Now),
        Box::new(to_timestamp::ToTimestamp),
        Box::new(format_timestamp::FormatTimestamp),
        Box::new(payload_size::PayloadSize),
    ]
}
