//! `generate`: synthetic events of the source's schema, for demos and benchmarks.

mod run;

pub use run::GenerateSource;
pub(crate) use run::write_record;

use super::{source_metadata, source_options, with};
use phoenix_dsl::catalog::{ConnectorSpec, OptionSpec, OptionType, Role};

pub fn source_spec() -> ConnectorSpec {
    ConnectorSpec {
        name: "generate",
        role: Role::Source,
        summary: "Generates random events that fit the source's schema.",
        options: with(
            vec![
                OptionSpec::new(
                    "count",
                    OptionType::Int,
                    "How many events to generate; without it, generate until stopped.",
                ),
                OptionSpec::new(
                    "rate",
                    OptionType::Int,
                    "Events per second; without it, as fast as the flow takes them.",
                ),
                OptionSpec::new("seed", OptionType::Int, "Random seed, for reproducible data.").default("0"),
            ],
            source_options(),
        ),
        metadata: source_metadata(),
    }
}
