//! coreml-compress: weight compression for Core ML ML Program packages.
//!
//! Layers, each depending only on those listed before it:
//! - [`kernels`]: pure numeric functions over slices (k-means, quantization, pruning, packing);
//! - [`format`]: the bytes of a `.mlpackage` (Manifest.json, the Model protobuf, weight.bin);
//! - [`mil`]: the ML Program graph (values, ops, use-def, constexpr op construction);
//! - [`compress`]: the passes (select weights, run kernels, emit ops, write the package);
//! - `python` (feature `python`): PyO3 bindings that only convert;
//! - [`trace`]: opt-in phase timings (`COREML_COMPRESS_TRACE=1`).

// Tensors are stored little-endian and handled as native slices (`bytemuck` casts).
#[cfg(target_endian = "big")]
compile_error!("coreml-compress supports little-endian hosts only");

pub mod compress;
pub mod error;
pub mod format;
pub mod kernels;
pub mod mil;
#[cfg(feature = "python")]
mod python;
pub mod trace;

pub use error::{Error, Result};
