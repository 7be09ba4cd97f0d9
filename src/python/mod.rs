//! PyO3 bindings: convert arguments, release the GIL around engine calls, map errors onto the
//! `coreml_compress.errors` classes. No compression logic lives here.

use std::path::PathBuf;

use pyo3::prelude::*;

use crate::compress::roundtrip;
use crate::error::Error;

/// Raises the engine error as the matching class of `coreml_compress.errors`.
fn to_py(err: Error) -> PyErr {
    Python::attach(|py| {
        let class = match &err {
            Error::Io { .. } => "PackageIOError",
            Error::Format(_) => "MalformedPackageError",
            Error::Unsupported(_) => "UnsupportedModelError",
            Error::Config(_) => "CompressionConfigError",
        };
        match py
            .import("coreml_compress.errors")
            .and_then(|m| m.getattr(class))
        {
            Ok(cls) => match cls.call1((err.to_string(),)) {
                Ok(instance) => PyErr::from_value(instance),
                Err(e) => e,
            },
            Err(e) => e,
        }
    })
}

#[pyfunction]
fn save_unchanged(py: Python<'_>, input: PathBuf, output: PathBuf) -> PyResult<PathBuf> {
    py.detach(|| roundtrip::save_unchanged(&input, &output))
        .map_err(to_py)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(save_unchanged, m)?)?;
    Ok(())
}
