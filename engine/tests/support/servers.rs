//! Real servers for tests: filled in with the tansu and moto harness.
