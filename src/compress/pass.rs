//! The driver shared by the compression passes: open the package, check what coremltools checks,
//! select candidate consts, run the pass's kernel on each (in parallel), write the package.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use half::f16;
use rayon::prelude::*;

use crate::compress::config::{Granularity, OpConfig, OptimizationConfig};
use crate::compress::joint;
use crate::compress::materialize::Materializer;
use crate::compress::palettize::{self, LutFunction};
use crate::compress::rewrite::{self, Job, Replacement};
use crate::compress::select::{candidates, joint_candidates, Candidate, Site};
use crate::compress::{prune, quantize};
use crate::error::Result;
use crate::format::dtype::DType;
use crate::format::package::{Package, PackageWriter};
use crate::format::spec;
use crate::kernels::fp16::WeightElement;
use crate::mil::program::Graph;
use crate::mil::tensor::read_tensor;
use crate::{config_err, format_err};
use std::collections::BTreeMap;

/// The compression passes, by their coremltools function names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PassKind {
    Palettize,
    LinearQuantize,
    Prune,
}

impl PassKind {
    pub fn from_name(name: &str) -> Result<Self> {
        Ok(match name {
            "palettize_weights" => PassKind::Palettize,
            "linear_quantize_weights" => PassKind::LinearQuantize,
            "prune_weights" => PassKind::Prune,
            _ => return Err(config_err!("unknown compression pass {name:?}")),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            PassKind::Palettize => "palettize_weights",
            PassKind::LinearQuantize => "linear_quantize_weights",
            PassKind::Prune => "prune_weights",
        }
    }

    fn accepts(self, c: &OpConfig) -> bool {
        matches!(
            (self, c),
            (PassKind::Palettize, OpConfig::Palettize(_))
                | (PassKind::LinearQuantize, OpConfig::LinearQuantize(_))
                | (
                    PassKind::Prune,
                    OpConfig::MagnitudePrune(_) | OpConfig::ThresholdPrune(_)
                )
        )
    }
}

/// What a pass needs to know about the model it writes: the specification version after
/// coremltools' upgrade of iOS15 models, and whether iOS18 op forms apply.
#[derive(Clone, Copy, Debug)]
pub struct Target {
    pub spec_version: i32,
}

impl Target {
    pub fn ios18(self) -> bool {
        self.spec_version >= 9
    }
}

/// A weight's values in its own float type, for kernels generic over fp16/fp32: borrowed from
/// the input's memory map where the bytes are aligned for the type (weight.bin data is), so a
/// pass reads each weight without copying it first.
pub enum Weights<'a> {
    F16(Cow<'a, [f16]>),
    F32(Cow<'a, [f32]>),
}

/// Reads a candidate's values; None for integer or bool weights, which these passes skip.
pub fn read_weights<'a>(package: &'a Package, c: &'a Candidate) -> Result<Option<Weights<'a>>> {
    let what = format!("function {}, const {}", c.function, c.name);
    let t = read_tensor(&c.value, package, &what)?;
    Ok(match t.info.dtype {
        DType::F16 => Some(Weights::F16(cast_values(t.bytes))),
        DType::F32 => Some(Weights::F32(cast_values(t.bytes))),
        _ => None,
    })
}

/// Little-endian bytes as values of `T`: borrowed when aligned, copied otherwise.
fn cast_values<T: bytemuck::Pod>(bytes: Cow<'_, [u8]>) -> Cow<'_, [T]> {
    match bytes {
        Cow::Borrowed(b) => match bytemuck::try_cast_slice(b) {
            Ok(values) => Cow::Borrowed(values),
            Err(_) => Cow::Owned(bytemuck::pod_collect_to_vec(b)),
        },
        Cow::Owned(b) => Cow::Owned(bytemuck::pod_collect_to_vec(&b)),
    }
}

/// coremltools' `infer_block_sizes` (reference §1.8): block size per axis, 0 = whole axis.
/// None when the consumers do not agree on the channel axes.
pub fn block_sizes(
    c: &Candidate,
    granularity: Granularity,
    group_size: usize,
    channel_axis: Option<i64>,
    block: &crate::compress::config::BlockSize,
) -> Result<Option<Vec<usize>>> {
    use crate::compress::config::BlockSize;
    let rank = c.info.shape.len();
    if let (Granularity::PerBlock, BlockSize::PerAxis(sizes)) = (granularity, block) {
        if sizes.len() != rank {
            return Err(config_err!(
                "The block_size in config must has one element for each axis. However, for op {}, there are {} \
                 elements in block_size, but there are {rank} axes in the weight.",
                c.name,
                sizes.len()
            ));
        }
        return Ok(Some(sizes.clone()));
    }
    let (Some(mut out_axis), Some(in_axis)) = (c.output_axis, c.input_axis) else {
        return Ok(None);
    };
    if granularity == Granularity::PerGroupedChannel {
        if let Some(axis) = channel_axis {
            let a = if axis < 0 { axis + rank as i64 } else { axis };
            out_axis =
                usize::try_from(a).map_err(|_| config_err!("invalid channel_axis {axis}"))?;
        }
    }
    let (in_size, out_size) = match (granularity, block) {
        (Granularity::PerTensor, _) => (0, 0),
        (Granularity::PerChannel, _) => (0, 1),
        (Granularity::PerGroupedChannel, _) => (0, group_size),
        (Granularity::PerBlock, BlockSize::Uniform(b)) => (*b, 1),
        (Granularity::PerBlock, BlockSize::PerAxis(_)) => unreachable!("handled above"),
    };
    let mut sizes = vec![0; rank];
    if in_axis < rank {
        sizes[in_axis] = in_size;
    }
    if out_axis < rank {
        sizes[out_axis] = out_size;
    }
    Ok(Some(sizes))
}

/// Signal and noise energy of a reconstruction `approx` of `w`: (Σw², Σ(w−ŵ)²) in f64. Summed
/// in parallel over fixed-size pieces, added in order, so the result does not depend on the
/// thread count.
pub fn error_energy<T: WeightElement>(w: &[T], approx: &[T]) -> (f64, f64) {
    const PIECE: usize = 1 << 14;
    let pieces: Vec<(f64, f64)> = w
        .par_chunks(PIECE)
        .zip(approx.par_chunks(PIECE))
        .map(|(w, approx)| {
            // Eight running sums per piece, so the additions do not wait on each other.
            let (mut signal, mut noise) = ([0.0f64; 8], [0.0f64; 8]);
            for (w, approx) in w.chunks(8).zip(approx.chunks(8)) {
                for (lane, (&a, &b)) in w.iter().zip(approx).enumerate() {
                    let (a, b) = (a.to_f64(), b.to_f64());
                    signal[lane] += a * a;
                    noise[lane] += (a - b) * (a - b);
                }
            }
            (signal.iter().sum(), noise.iter().sum())
        })
        .collect();
    pieces
        .into_iter()
        .fold((0.0, 0.0), |(s, n), (ps, pn)| (s + ps, n + pn))
}

/// What a pass did to one weight.
#[derive(Clone, Debug)]
pub struct WeightStats {
    pub function: String,
    pub name: String,
    pub shape: Vec<usize>,
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// Signal-to-noise ratio of the compressed weight in dB (infinite when exact).
    pub snr_db: f64,
}

/// Runs one compression pass from `input` to `output`; returns the written path and one record
/// per compressed weight.
pub fn run(
    kind: PassKind,
    input: &Path,
    output: &Path,
    config: &OptimizationConfig,
    joint_compression: bool,
    custom: Option<&LutFunction<'_>>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(PathBuf, Vec<WeightStats>)> {
    let opened = crate::trace::span("open and select");
    let package = Package::open(input)?;
    let has_functions = package
        .model
        .description
        .as_ref()
        .is_some_and(|d| !d.functions.is_empty());
    if has_functions {
        return Err(config_err!(
            "{} is not supported for a multifunction model.",
            kind.name()
        ));
    }
    let target = Target {
        spec_version: package.model.specification_version.max(7),
    };
    if joint_compression && !target.ios18() {
        return Err(config_err!(
            "Joint compression is only supported since iOS18. Please re-convert your model with \
             minimum_deployment_target set to at least ct.target.iOS18."
        ));
    }
    if let Some(bad) = config.all().find(|c| !kind.accepts(c)) {
        return Err(config_err!(
            "{} does not accept this config: {bad:?}",
            kind.name()
        ));
    }
    // Joint pruning works on constexpr chains only; the other passes also take plain consts.
    let mut selected = if joint_compression && kind == PassKind::Prune {
        Vec::new()
    } else {
        candidates(&package.model, config, |c| kind.accepts(c))?
    };
    if joint_compression {
        selected.extend(joint_candidates(&package.model, config, kind.name())?);
    }
    let graphs: BTreeMap<&str, Graph<'_>> = if joint_compression {
        spec::program(&package.model)?
            .functions
            .iter()
            .filter_map(|(name, f)| {
                f.block_specializations
                    .values()
                    .next()
                    .map(|b| (name.as_str(), Graph::new(b)))
            })
            .collect()
    } else {
        BTreeMap::new()
    };
    let jobs: Vec<Job<Candidate>> = selected
        .into_iter()
        .map(|c| Job {
            function: c.function.clone(),
            target: c.output.clone(),
            input_bytes: c.info.dtype.storage_bytes(c.info.count()).unwrap_or(0),
            task: c,
        })
        .collect();
    // coremltools checks the opset before compressing any weight.
    for job in &jobs {
        match (kind, &job.task.config) {
            (PassKind::LinearQuantize, OpConfig::LinearQuantize(q)) => {
                quantize::check_target(q, target)?
            }
            (PassKind::Palettize, OpConfig::Palettize(p)) => palettize::check_target(p, target)?,
            _ => {}
        }
    }
    drop(opened);
    let mut out = PackageWriter::create(output, Some(&package))?;
    let (mut model, replaced) = rewrite::apply(
        &package,
        &jobs,
        &mut out,
        |job| {
            let c = &job.task;
            if !matches!(c.site, Site::Const) {
                let mut r = Replacement::new(target.spec_version);
                let graph = graphs
                    .get(c.function.as_str())
                    .ok_or_else(|| crate::format_err!("function {} has no block", c.function))?;
                let m = Materializer::new(&package, graph);
                return Ok(joint::emit(c, &m, target, custom, &mut r)?.then_some(r));
            }
            let Some(weights) = read_weights(&package, c)? else {
                return Ok(None);
            };
            let mut r = Replacement::new(target.spec_version);
            let done = match &c.config {
                OpConfig::LinearQuantize(q) => quantize::emit(c, q, &weights, target, &mut r)?,
                OpConfig::MagnitudePrune(_) | OpConfig::ThresholdPrune(_) => {
                    prune::emit(c, &c.config, &weights, target, &mut r)?
                }
                OpConfig::Palettize(p) => palettize::emit(c, p, &weights, target, custom, &mut r)?,
            };
            Ok(done.then_some(r))
        },
        progress,
    )?;
    upgrade_spec(&mut model, target)?;
    let stats = replaced
        .into_iter()
        .map(|r| {
            let c = &jobs[r.job].task;
            let (signal, noise) = r.error.unwrap_or((f64::NAN, f64::NAN));
            WeightStats {
                function: c.function.clone(),
                name: c.name.clone(),
                shape: c.info.shape.clone(),
                bytes_before: jobs[r.job].input_bytes as u64,
                bytes_after: r.bytes,
                snr_db: if noise == 0.0 {
                    f64::INFINITY
                } else {
                    10.0 * (signal / noise).log10()
                },
            }
        })
        .collect();
    Ok((rewrite::finish(&package, model, out)?, stats))
}

/// coremltools writes every compressed model at spec 7 or later: an iOS15 (spec 6, opset
/// CoreML5) program becomes a spec 7 (CoreML6) program.
fn upgrade_spec(model: &mut spec::Model, target: Target) -> Result<()> {
    if model.specification_version >= target.spec_version {
        return Ok(());
    }
    model.specification_version = target.spec_version;
    for function in spec::program_mut(model)?.functions.values_mut() {
        if function.opset == "CoreML5" {
            function.opset = "CoreML6".into();
            let blocks = std::mem::take(&mut function.block_specializations);
            for (key, block) in blocks {
                let key = if key == "CoreML5" {
                    "CoreML6".to_string()
                } else {
                    key
                };
                if function
                    .block_specializations
                    .insert(key.clone(), block)
                    .is_some()
                {
                    return Err(format_err!(
                        "function has two block specializations for {key}"
                    ));
                }
            }
        }
    }
    Ok(())
}
