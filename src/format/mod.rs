//! The bytes of a `.mlpackage`: Manifest.json, the Model protobuf and weight.bin. Nothing here
//! knows about compression or Python.

pub mod blob;
pub mod commit;
pub mod dtype;
pub mod manifest;
pub mod package;
pub mod spec;
