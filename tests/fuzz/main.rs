//! Fuzz targets for hostile and oversized input, as proptest properties run with large case
//! counts: the INI parser (`ini`), keyword values, keys and paths (`values`), references
//! (`refs`), the DRBD template renderer and its budget (`template`), tokens (`token`), the
//! decoding and checks behind every gRPC request (`grpc`), and `ClusterState::check`/`apply`
//! over random command sequences (`model`). Generators (`hostile`) mix arbitrary characters
//! (control characters, NUL, line and paragraph separators), the syntax characters of each
//! format, long lines, huge numbers and deep nesting.
//!
//! Each target runs `OMRAFT_FUZZ_CASES` cases, or its own default, chosen so that the whole
//! binary takes a minute or two in a debug build on two cores. A failing case is shrunk and its
//! seed kept in `tests/fuzz/regressions/MODULE.txt` (committed): every later run replays the
//! kept seeds first.

mod grpc;
mod hostile;
mod ini;
mod model;
mod refs;
mod template;
mod token;
mod values;

use proptest::test_runner::{Config, FileFailurePersistence, RngAlgorithm};

/// The configuration of a target whose default is `default_cases` cases.
pub fn config(default_cases: u32) -> Config {
    let cases = match std::env::var("OMRAFT_FUZZ_CASES") {
        Ok(n) => n
            .parse()
            .unwrap_or_else(|_| panic!("OMRAFT_FUZZ_CASES={n:?} is not a number of cases")),
        Err(_) => default_cases,
    };
    Config {
        cases,
        // From `tests/fuzz/MODULE.rs`, seeds go to `tests/fuzz/regressions/MODULE.txt`.
        failure_persistence: Some(Box::new(FileFailurePersistence::SourceParallel("fuzz/regressions"))),
        // Proptest's default, ChaCha, unoptimized in a debug build, took most of the time.
        rng_algorithm: RngAlgorithm::XorShift,
        ..Config::default()
    }
}
