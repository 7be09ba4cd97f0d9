//! Manifest.json parsing: any bytes give a manifest or an error, never a panic.
#![no_main]

use coreml_compress::format::manifest::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::parse(data, "fuzz") {
        // What is accepted writes back to something that parses again.
        Manifest::parse(&m.to_bytes(), "fuzz").expect("a written manifest parses");
    }
});
