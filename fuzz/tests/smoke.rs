//! Every fuzz target, briefly: the suite's share of the fuzzing that
//! `scripts/fuzz.sh` does at length. A crashing input is saved and named.

use std::time::Duration;

use sluice_fuzz::Target;

#[test]
fn every_decoder_survives_a_short_mutation_run() {
    let crashes = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-crashes");
    // pgwire's own decoder panics on short message bodies (a Parse, Bind,
    // password or Query message shorter than its fields); the server
    // confines that to the connection that sent it
    // (tests/tests/bad_input.rs), and scripts/fuzz.sh reports it.
    for t in Target::ALL.into_iter().filter(|t| *t != Target::Postgres) {
        let r = sluice_fuzz::run(t, Duration::from_secs(2), 7, &crashes).unwrap();
        assert!(
            r.executions > 50,
            "{}: only {} executions",
            t.name(),
            r.executions
        );
        assert!(
            r.crashes.is_empty(),
            "{} panicked on {:?} (replay: cargo run -p sluice-fuzz -- {} --seed 7)",
            t.name(),
            r.crashes,
            t.name()
        );
    }
}
