//! Opt-in phase timings on stderr: set `COREML_COMPRESS_TRACE=1` to see where a pass spends its
//! time (open, each kernel phase, writing). Off, a span costs one relaxed load.

use std::sync::OnceLock;
use std::time::Instant;

fn enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| {
        std::env::var_os("COREML_COMPRESS_TRACE").is_some_and(|v| !v.is_empty() && v != "0")
    })
}

/// Measures from its creation until it is dropped, then prints `name` and the elapsed time.
pub struct Span {
    name: &'static str,
    start: Option<Instant>,
}

/// Starts a span named `name` (a phase, e.g. `"prune: mask"`).
pub fn span(name: &'static str) -> Span {
    Span {
        name,
        start: enabled().then(Instant::now),
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        if let Some(start) = self.start {
            let ms = start.elapsed().as_secs_f64() * 1e3;
            eprintln!("coreml-compress trace: {:<32} {ms:9.2} ms", self.name);
        }
    }
}
