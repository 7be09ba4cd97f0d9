//! The passes: select weights, run kernels, emit ops, write the package.

pub mod rewrite;
pub mod roundtrip;
