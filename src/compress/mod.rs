//! The passes: select weights, run kernels, emit ops, write the package.

pub mod config;
pub mod decompress;
pub mod dense;
pub mod example;
pub mod fit;
pub mod inspect;
pub mod joint;
pub mod materialize;
pub mod multifunction;
pub mod palettize;
pub mod pass;
pub mod prune;
pub mod quantize;
pub mod rewrite;
pub mod roundtrip;
pub mod select;
pub mod skip;
pub mod target;
pub mod weights;
