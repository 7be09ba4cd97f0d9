//! PyO3 bindings: convert arguments, release the GIL around engine calls, map errors onto the
//! `coreml_compress.errors` classes. No compression logic lives here.

use std::path::PathBuf;

use pyo3::prelude::*;

mod inspect;

use crate::compress::config::OptimizationConfig;
use crate::compress::{decompress as decompress_pass, example, pass, roundtrip};
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

/// A progress reporter that calls an optional Python `callback(done, total)`.
fn progress_fn(callback: Option<Py<PyAny>>) -> impl FnMut(usize, usize) {
    move |done, total| {
        if let Some(cb) = &callback {
            Python::attach(|py| {
                // A failing progress callback must not abort the work; report it and go on.
                if let Err(e) = cb.call1(py, (done, total)) {
                    e.print(py);
                }
            });
        }
    }
}

#[pyfunction]
fn save_unchanged(py: Python<'_>, input: PathBuf, output: PathBuf) -> PyResult<PathBuf> {
    py.detach(|| roundtrip::save_unchanged(&input, &output))
        .map_err(to_py)
}

#[pyfunction]
#[pyo3(signature = (input, output, progress=None))]
fn decompress(
    py: Python<'_>,
    input: PathBuf,
    output: PathBuf,
    progress: Option<Py<PyAny>>,
) -> PyResult<PathBuf> {
    let mut report = progress_fn(progress);
    py.detach(|| decompress_pass::decompress(&input, &output, &mut report))
        .map_err(to_py)
}

#[pyfunction]
#[pyo3(signature = (kind, input, output, config_json, joint_compression, lut_functions, progress=None))]
#[allow(clippy::too_many_arguments)]
fn compress(
    py: Python<'_>,
    kind: &str,
    input: PathBuf,
    output: PathBuf,
    config_json: &str,
    joint_compression: bool,
    lut_functions: Option<Py<PyAny>>,
    progress: Option<Py<PyAny>>,
) -> PyResult<PathBuf> {
    // CUSTOM palettization functions are not callable from the engine yet; `pass::run` refuses
    // palettization with a clear error, so they are not needed.
    let _ = lut_functions;
    let kind = pass::PassKind::from_name(kind).map_err(to_py)?;
    let config = OptimizationConfig::from_json(config_json).map_err(to_py)?;
    let mut report = progress_fn(progress);
    py.detach(|| {
        pass::run(
            kind,
            &input,
            &output,
            &config,
            joint_compression,
            &mut report,
        )
    })
    .map_err(to_py)
}

#[pyfunction]
fn write_example(py: Python<'_>, output: PathBuf) -> PyResult<PathBuf> {
    py.detach(|| example::write_example(&output)).map_err(to_py)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(save_unchanged, m)?)?;
    m.add_function(wrap_pyfunction!(decompress, m)?)?;
    m.add_function(wrap_pyfunction!(write_example, m)?)?;
    m.add_function(wrap_pyfunction!(inspect::inspect, m)?)?;
    m.add_function(wrap_pyfunction!(compress, m)?)?;
    Ok(())
}
