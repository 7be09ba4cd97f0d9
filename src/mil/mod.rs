//! The ML Program graph: typed tensor values, ops and their parameters, and use-def across the
//! blocks of a function. Knows the protobuf structures, not files or compression math.

pub mod ops;
pub mod program;
pub mod tensor;
