//! The fuzz targets under libFuzzer, which steers its mutations by the
//! code coverage each input reaches. The target comes from
//! `SLUICE_FUZZ_TARGET`; `scripts/fuzz.sh coverage` builds and runs it.

#![no_main]

use std::sync::{Mutex, OnceLock};

use sluice_fuzz::{Harness, Target};

fn harness() -> &'static Mutex<Harness> {
    static HARNESS: OnceLock<Mutex<Harness>> = OnceLock::new();
    HARNESS.get_or_init(|| {
        // libfuzzer-sys aborts on every panic, even one the code under test
        // catches on purpose (the shard log's guard around arrow's IPC
        // decoder). A panic that escapes the target still aborts: the
        // harness checks for it around every input.
        std::panic::set_hook(Box::new(|_| {}));
        let name = std::env::var("SLUICE_FUZZ_TARGET").unwrap_or_default();
        let Some(target) = Target::parse(&name) else {
            eprintln!("sluice-libfuzzer: set SLUICE_FUZZ_TARGET to a target (not {name:?})");
            std::process::exit(2);
        };
        match Harness::new(target) {
            Ok(h) => Mutex::new(h),
            Err(e) => {
                eprintln!("sluice-libfuzzer: {e}");
                std::process::exit(2);
            }
        }
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut h = harness().lock().unwrap_or_else(|e| e.into_inner());
    h.exec(data);
});
