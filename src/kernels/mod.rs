//! Pure numeric kernels over slices: no files, no protobuf, no Python.

pub mod fp16;
pub mod gptq;
pub mod hessian;
pub mod kmeans1d;
pub mod kmeans_vector;
pub mod lut;
pub mod pack;
pub mod prune;
pub mod quantize;
pub mod skm;
pub mod sparsegpt;
