//! Bindings for multifunction packages: list functions, merge, extract.

use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::compress::multifunction::{self as engine, FunctionSource, MergeStats};

fn stats_to_py<'py>(py: Python<'py>, s: &MergeStats) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("path", &s.path)?;
    d.set_item("functions", s.functions)?;
    d.set_item("blob_references", s.blob_references)?;
    d.set_item("blobs_written", s.blobs_written)?;
    d.set_item("weight_file_bytes", s.weight_file_bytes)?;
    d.set_item("separate_bytes", s.separate_bytes)?;
    d.set_item("saved_bytes", s.saved_bytes)?;
    Ok(d)
}

/// The functions of a package, as coremltools lists them (`["main"]` for a single function).
#[pyfunction]
fn function_names(py: Python<'_>, path: PathBuf) -> PyResult<Vec<String>> {
    super::run_engine(py, || engine::function_names(&path))
}

/// Merges `(package, source function, target name)` triples into a multifunction package.
#[pyfunction]
#[pyo3(signature = (functions, default_function, output, progress=None))]
fn merge<'py>(
    py: Python<'py>,
    functions: Vec<(PathBuf, String, String)>,
    default_function: String,
    output: PathBuf,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let functions: Vec<FunctionSource> = functions
        .into_iter()
        .map(|(package, source, target)| FunctionSource {
            package,
            source,
            target,
        })
        .collect();
    let stats = super::run_with_progress(py, progress, |report| {
        engine::merge(&functions, &default_function, &output, report)
    })?;
    stats_to_py(py, &stats)
}

/// Writes one function of a package as a single-function package.
#[pyfunction]
fn extract_function<'py>(
    py: Python<'py>,
    input: PathBuf,
    function: String,
    output: PathBuf,
) -> PyResult<Bound<'py, PyDict>> {
    let stats = super::run_engine(py, || engine::extract(&input, &function, &output))?;
    stats_to_py(py, &stats)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(function_names, m)?)?;
    m.add_function(wrap_pyfunction!(merge, m)?)?;
    m.add_function(wrap_pyfunction!(extract_function, m)?)?;
    Ok(())
}
