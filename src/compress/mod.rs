//! The passes: select weights, run kernels, emit ops, write the package.

pub mod config;
pub mod decompress;
pub mod example;
pub mod materialize;
pub mod rewrite;
pub mod select;
pub mod roundtrip;
