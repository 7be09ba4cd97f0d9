//! PyO3 bindings: convert arguments, release the GIL around engine calls, map errors onto the
//! `coreml_compress.errors` classes. No compression logic lives here.

use std::path::PathBuf;

use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

mod fit;
mod huge_pages;
mod inspect;
mod kernels;
mod multifunction;
mod torch_kernels;

use crate::compress::config::OptimizationConfig;
use crate::compress::palettize::{GroupData, LutFunction};
use crate::compress::{decompress as decompress_pass, example, pass, roundtrip};
use crate::error::Error;
use crate::kernels::fp16::LaneVariant;

#[global_allocator]
static ALLOCATOR: huge_pages::HugePageAlloc = huge_pages::HugePageAlloc;

/// Raises the engine error as the matching class of `coreml_compress.errors`.
fn to_py(err: Error) -> PyErr {
    let class = match &err {
        Error::Io { .. } => "PackageIOError",
        Error::Format(_) => "MalformedPackageError",
        Error::Unsupported(_) => "UnsupportedModelError",
        Error::Config(_) => "CompressionConfigError",
        Error::Output(_) => "OutputPathError",
        // Only a progress report stops the work, and it raises its own exception.
        Error::Interrupted => "CoreMLCompressError",
    };
    raise(class, err.to_string())
}

/// An instance of `coreml_compress.errors.<class>` with `message`.
fn raise(class: &str, message: String) -> PyErr {
    Python::attach(|py| {
        match py
            .import("coreml_compress.errors")
            .and_then(|m| m.getattr(class))
        {
            Ok(cls) => match cls.call1((message,)) {
                Ok(instance) => PyErr::from_value(instance),
                Err(e) => e,
            },
            Err(e) => e,
        }
    })
}

/// Runs an engine call with the GIL released. A panic inside it — on this thread or a worker of
/// the pool, whose panics rayon re-raises here — becomes `coreml_compress.errors.InternalError`
/// (a `CoreMLCompressError`), never pyo3's `PanicException`, which `except Exception` misses.
fn run_engine<R: Send>(
    py: Python<'_>,
    call: impl FnOnce() -> crate::Result<R> + Send,
) -> PyResult<R> {
    caught(py, call)?.map_err(to_py)
}

/// [`run_engine`] for a call that reports progress to an optional Python `callback(done,
/// total)` (see [`Progress`]); an interrupt it noticed is raised as it came.
fn run_with_progress<R: Send>(
    py: Python<'_>,
    callback: Option<Py<PyAny>>,
    call: impl FnOnce(&mut dyn FnMut(usize, usize) -> crate::Result<()>) -> crate::Result<R> + Send,
) -> PyResult<R> {
    let mut progress = Progress::new(callback);
    let result = caught(py, || call(&mut |done, total| progress.report(done, total)))?;
    result.map_err(|e| progress.error(e))
}

/// The call's result, with the GIL released; a panic becomes `InternalError`.
fn caught<R: Send>(
    py: Python<'_>,
    call: impl FnOnce() -> crate::Result<R> + Send,
) -> PyResult<crate::Result<R>> {
    record_panic_locations();
    py.detach(|| std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)))
        .map_err(|payload| internal_error(payload.as_ref()))
}

/// Where the latest panic of the process happened ("file:line:column"), for the report.
static LAST_PANIC_LOCATION: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// Installs, once, a panic hook that remembers each panic's location before the previous hook
/// runs (the payload that reaches `catch_unwind` carries only the message).
fn record_panic_locations() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if let (Some(at), Ok(mut last)) = (info.location(), LAST_PANIC_LOCATION.lock()) {
                *last = Some(at.to_string());
            }
            previous(info);
        }));
    });
}

fn internal_error(payload: &(dyn std::any::Any + Send)) -> PyErr {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    let location = LAST_PANIC_LOCATION
        .lock()
        .ok()
        .and_then(|mut last| last.take())
        .unwrap_or_else(|| "an unknown place".into());
    raise(
        "InternalError",
        format!(
            "internal error in coreml-compress, please report it with the input that caused it: \
             {message} (at {location})"
        ),
    )
}

/// Progress reports to an optional Python `callback(done, total)`; each report is also where a
/// pending signal is noticed, so Ctrl-C stops the work (the engine unwinds, removing its work
/// directory) and is raised as it came.
struct Progress {
    callback: Option<Py<PyAny>>,
    interrupt: Option<PyErr>,
}

impl Progress {
    fn new(callback: Option<Py<PyAny>>) -> Self {
        Progress {
            callback,
            interrupt: None,
        }
    }

    fn report(&mut self, done: usize, total: usize) -> crate::Result<()> {
        Python::attach(|py| {
            let called = match &self.callback {
                Some(cb) => cb.call1(py, (done, total)).map(drop),
                None => Ok(()),
            };
            match called.and_then(|()| py.check_signals()) {
                Ok(()) => Ok(()),
                // A failing progress callback must not abort the work; report it and go on.
                Err(e) if e.is_instance_of::<PyException>(py) => {
                    e.print(py);
                    Ok(())
                }
                // KeyboardInterrupt, SystemExit: stop.
                Err(e) => {
                    self.interrupt = Some(e);
                    Err(Error::Interrupted)
                }
            }
        })
    }

    /// What to raise for an engine error: the interrupt that stopped the work, if any.
    fn error(self, err: Error) -> PyErr {
        self.interrupt.unwrap_or_else(|| to_py(err))
    }
}

#[pyfunction]
fn save_unchanged(py: Python<'_>, input: PathBuf, output: PathBuf) -> PyResult<PathBuf> {
    run_engine(py, || roundtrip::save_unchanged(&input, &output))
}

#[pyfunction]
#[pyo3(signature = (input, output, progress=None))]
fn decompress(
    py: Python<'_>,
    input: PathBuf,
    output: PathBuf,
    progress: Option<Py<PyAny>>,
) -> PyResult<PathBuf> {
    run_with_progress(py, progress, |report| {
        decompress_pass::decompress(&input, &output, report)
    })
}

/// Wraps the user functions of CUSTOM palettization (by id) for the engine.
fn lut_function_caller(lut_functions: Option<Py<PyDict>>) -> Option<Box<LutFunction<'static>>> {
    lut_functions.map(|functions| -> Box<LutFunction<'static>> {
        Box::new(move |id: u64, group: GroupData<'_>, shape: &[usize]| {
            call_lut_function(&functions, id, group, shape)
                .map_err(|e| Error::Config(format!("lut_function failed: {e}")))
        })
    })
}

/// A pass's report as Python lists: one dict per compressed weight, one per skipped weight.
type ReportLists = (Vec<Py<PyAny>>, Vec<Py<PyAny>>);

fn report_lists(py: Python<'_>, report: pass::PassReport) -> PyResult<ReportLists> {
    let skipped = report
        .skipped
        .into_iter()
        .map(|s| {
            let d = PyDict::new(py);
            d.set_item("function", &s.function)?;
            d.set_item("name", &s.name)?;
            d.set_item("shape", &s.shape)?;
            d.set_item("reason", s.reason.kind())?;
            d.set_item("message", s.reason.to_string())?;
            Ok(d.into_any().unbind())
        })
        .collect::<PyResult<_>>()?;
    Ok((stats_records(py, report.compressed)?, skipped))
}

fn stats_records(py: Python<'_>, stats: Vec<pass::WeightStats>) -> PyResult<Vec<Py<PyAny>>> {
    stats
        .into_iter()
        .map(|s| {
            let d = PyDict::new(py);
            d.set_item("function", s.function)?;
            d.set_item("name", s.name)?;
            d.set_item("shape", s.shape)?;
            d.set_item("bytes_before", s.bytes_before)?;
            d.set_item("bytes_after", s.bytes_after)?;
            d.set_item("snr_db", s.snr_db)?;
            d.set_item("per_block", s.per_block)?;
            Ok(d.into_any().unbind())
        })
        .collect()
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
    lut_functions: Option<Py<PyDict>>,
    progress: Option<Py<PyAny>>,
) -> PyResult<(PathBuf, ReportLists)> {
    let kind = pass::PassKind::from_name(kind).map_err(to_py)?;
    let config = OptimizationConfig::from_json(config_json).map_err(to_py)?;
    let custom = lut_function_caller(lut_functions);
    let custom_ref = custom.as_deref();
    let (path, report) = run_with_progress(py, progress, |report| {
        pass::run(
            kind,
            &input,
            &output,
            &config,
            joint_compression,
            custom_ref,
            report,
        )
    })?;
    Ok((path, report_lists(py, report)?))
}

/// Recipe steps from `(pass name, config JSON)` pairs.
fn parse_steps(steps: &[(String, String)]) -> PyResult<Vec<pass::Step>> {
    steps
        .iter()
        .map(|(kind, config)| {
            Ok(pass::Step {
                kind: pass::PassKind::from_name(kind)?,
                config: OptimizationConfig::from_json(config)?,
            })
        })
        .collect::<crate::Result<Vec<_>>>()
        .map_err(to_py)
}

/// A recipe: `steps` are `(pass name, config JSON)`; every step after the first is joint.
#[pyfunction]
#[pyo3(signature = (input, output, steps, lut_functions, progress=None))]
fn compress_recipe(
    py: Python<'_>,
    input: PathBuf,
    output: PathBuf,
    steps: Vec<(String, String)>,
    lut_functions: Option<Py<PyDict>>,
    progress: Option<Py<PyAny>>,
) -> PyResult<(PathBuf, Vec<ReportLists>)> {
    let steps = parse_steps(&steps)?;
    let custom = lut_function_caller(lut_functions);
    let custom_ref = custom.as_deref();
    let (path, reports) = run_with_progress(py, progress, |report| {
        pass::run_recipe(&input, &output, &steps, custom_ref, report)
    })?;
    let lists = reports
        .into_iter()
        .map(|r| report_lists(py, r))
        .collect::<PyResult<_>>()?;
    Ok((path, lists))
}

/// Calls the Python wrapper `functions[id](raw_bytes, dtype, shape) -> (lut_f64_bytes, index_bytes)`
/// that `coreml_compress.optimize` builds around a user's `lut_function`.
fn call_lut_function(
    functions: &Py<PyDict>,
    id: u64,
    group: GroupData<'_>,
    shape: &[usize],
) -> PyResult<(Vec<f64>, Vec<u8>)> {
    Python::attach(|py| {
        let f = functions.bind(py).get_item(id)?.ok_or_else(|| {
            pyo3::exceptions::PyKeyError::new_err(format!("no lut_function {id}"))
        })?;
        let (raw, dtype): (Vec<u8>, &str) = match group {
            GroupData::F16(v) => (v.iter().flat_map(|x| x.to_le_bytes()).collect(), "<f2"),
            GroupData::F32(v) => (v.iter().flat_map(|x| x.to_le_bytes()).collect(), "<f4"),
        };
        let result = f.call1((PyBytes::new(py, &raw), dtype, shape.to_vec()))?;
        let (lut, indices): (Vec<u8>, Vec<u8>) = result.extract()?;
        let lut = lut
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        Ok((lut, indices))
    })
}

#[pyfunction]
fn write_example(py: Python<'_>, output: PathBuf) -> PyResult<PathBuf> {
    run_engine(py, || example::write_example(&output))
}

/// How this extension was built, and the fp16 lane conversions it runs on this CPU.
#[pyfunction]
fn build_info(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let info = PyDict::new(py);
    info.set_item("version", env!("CARGO_PKG_VERSION"))?;
    info.set_item("portable", cfg!(feature = "portable"))?;
    info.set_item(
        "target",
        format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS),
    )?;
    info.set_item("half_lanes", LaneVariant::current().name())?;
    Ok(info)
}

/// Panics inside an engine call, on the calling thread or on a worker of the pool: how the
/// tests check that a panic reaches Python as `InternalError` (no input is known to panic).
#[pyfunction]
fn _panic_for_test(py: Python<'_>, on_pool: bool) -> PyResult<()> {
    run_engine(py, || {
        let fail = |at: &str| -> crate::Result<()> { panic!("panic requested by a test ({at})") };
        if on_pool {
            rayon::join(|| fail("pool"), || ()).0
        } else {
            fail("caller")
        }
    })
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(build_info, m)?)?;
    m.add_function(wrap_pyfunction!(_panic_for_test, m)?)?;
    m.add_function(wrap_pyfunction!(save_unchanged, m)?)?;
    m.add_function(wrap_pyfunction!(decompress, m)?)?;
    m.add_function(wrap_pyfunction!(write_example, m)?)?;
    m.add_function(wrap_pyfunction!(inspect::inspect, m)?)?;
    m.add_function(wrap_pyfunction!(inspect::model_versions, m)?)?;
    m.add_function(wrap_pyfunction!(compress, m)?)?;
    m.add_function(wrap_pyfunction!(compress_recipe, m)?)?;
    torch_kernels::register(m)?;
    kernels::register(m)?;
    multifunction::register(m)?;
    fit::register(m)?;
    Ok(())
}
