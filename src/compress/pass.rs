//! The driver shared by the compression passes: open the package, check what coremltools checks,
//! select candidate consts, run the pass's kernel on each (in parallel), write the package.

use std::path::{Path, PathBuf};

use crate::compress::config::{OpConfig, OptimizationConfig};
use crate::compress::joint;
use crate::compress::materialize::Materializer;
use crate::compress::palettize::{self, LutFunction};
use crate::compress::rewrite::{self, Job, Replacement};
use crate::compress::select::block_sizes;
use crate::compress::select::{candidates, joint_candidates, joint_candidates_in, Candidate, Site};
use crate::compress::skip::{Outcome, Skip};
use crate::compress::target::Target;
use crate::compress::weights::read_weights;
use crate::compress::{prune, quantize};
use crate::error::Result;
use crate::format::package::{Package, PackageWriter, Source};
use crate::format::spec;
use crate::mil::program::Graph;
use crate::{config_err, format_err};
use std::collections::{BTreeMap, HashMap};

use crate::compress::inspect;
use crate::format::spec::proto::mil_spec::{Block, Operation};
use crate::mil::ops::{input_vars, op_name, output_name};
use crate::mil::program::rename_uses;

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

/// What a pass did to one weight.
#[derive(Clone, Debug)]
pub struct WeightStats {
    pub function: String,
    /// The weight's name in the input model.
    pub name: String,
    /// The weight's dense shape.
    pub shape: Vec<usize>,
    /// Bytes the weight stored before and after the step, everything counted (data, masks,
    /// LUTs, scales, offsets) as `inspect` counts `bytes_on_disk`.
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// Signal-to-noise ratio of the compressed weight in dB (infinite when exact).
    pub snr_db: f64,
    /// Whether the step quantized it linearly with scales that vary in blocks along an axis
    /// (neither per tensor nor per output channel): the form the Neural Engine does not run.
    pub per_block: bool,
}

/// What one pass (or recipe step) did: a record per compressed weight, in program order, and
/// every candidate it left alone, with the reason.
#[derive(Clone, Debug, Default)]
pub struct PassReport {
    pub compressed: Vec<WeightStats>,
    pub skipped: Vec<Skip>,
}

/// One step of a recipe: a pass and its config.
#[derive(Clone, Debug)]
pub struct Step {
    pub kind: PassKind,
    pub config: OptimizationConfig,
}

/// The input package, opened and checked as coremltools checks before compressing.
pub(crate) struct Opened {
    pub package: Package,
    pub target: Target,
}

pub(crate) fn open_for(input: &Path, steps: &[Step], joint_compression: bool) -> Result<Opened> {
    let package = Package::open(input)?;
    crate::compress::select::check_chains(&package)?;
    crate::compress::inspect::check_chain_values(&package)?;
    let has_functions = package
        .model
        .description
        .as_ref()
        .is_some_and(|d| !d.functions.is_empty());
    if let Some(step) = steps.first().filter(|_| has_functions) {
        return Err(config_err!(
            "{} is not supported for a multifunction model.",
            step.kind.name()
        ));
    }
    let target = Target {
        spec_version: package.model.specification_version.max(7),
    };
    if joint_compression {
        let functions = spec::program(&package.model)?.functions.iter();
        let old = functions
            .map(|(name, f)| (name, &f.opset))
            .find(|(name, _)| !target.for_function(&package.model, name).ios18());
        if let Some((name, opset)) = old.filter(|_| target.ios18()) {
            return Err(config_err!(
                "Joint compression is only supported since iOS18, and function {name} has opset \
                 {opset}."
            ));
        }
        if old.is_some() {
            return Err(config_err!(
                "Joint compression is only supported since iOS18. Please re-convert your model \
                 with minimum_deployment_target set to at least ct.target.iOS18."
            ));
        }
    }
    for step in steps {
        if let Some(bad) = step.config.all().find(|c| !step.kind.accepts(c)) {
            return Err(config_err!(
                "{} does not accept this config: {bad:?}",
                step.kind.name()
            ));
        }
    }
    Ok(Opened { package, target })
}

/// The candidates one step selects in `model`: plain consts (except for joint pruning, which
/// works on constexpr chains only) and, with joint compression, constexpr sites. Weights the
/// config covers but that are not above its weight_threshold go to `skipped`.
fn select(
    model: &spec::Model,
    step: &Step,
    joint_compression: bool,
    skipped: &mut Vec<Skip>,
) -> Result<Vec<Candidate>> {
    let mut selected = if joint_compression && step.kind == PassKind::Prune {
        Vec::new()
    } else {
        candidates(model, &step.config, |c| step.kind.accepts(c), skipped)?
    };
    if joint_compression {
        selected.extend(joint_candidates(
            model,
            &step.config,
            step.kind.name(),
            skipped,
        )?);
    }
    Ok(selected)
}

/// coremltools checks the opset before compressing any weight.
fn check_targets(
    kind: PassKind,
    model: &spec::Model,
    selected: &[Candidate],
    target: Target,
) -> Result<()> {
    for c in selected {
        let target = target.for_function(model, &c.function);
        match (kind, &c.config) {
            (PassKind::LinearQuantize, OpConfig::LinearQuantize(q)) => {
                quantize::check_target(q, target)?
            }
            (PassKind::Palettize, OpConfig::Palettize(p)) => palettize::check_target(p, target)?,
            _ => {}
        }
    }
    Ok(())
}

/// Compresses one candidate into `r`, or says why the pass skips it. Joint sites read their
/// chain through `m`.
fn compress_candidate(
    c: &Candidate,
    package: &Package,
    m: Option<&Materializer<'_>>,
    target: Target,
    custom: Option<&LutFunction<'_>>,
    r: &mut Replacement,
) -> Result<Outcome<()>> {
    if !matches!(c.site, Site::Const) {
        let m = m.ok_or_else(|| format_err!("function {} has no block", c.function))?;
        return joint::emit(c, m, target, custom, r);
    }
    let weights = match read_weights(package, c)? {
        Ok(w) => w,
        Err(reason) => return Ok(Err(reason)),
    };
    match &c.config {
        OpConfig::LinearQuantize(q) => quantize::emit(c, q, &weights, target, r),
        OpConfig::MagnitudePrune(_) | OpConfig::ThresholdPrune(_) => {
            prune::emit(c, &c.config, &weights, target, r)
        }
        OpConfig::Palettize(p) => palettize::emit(c, p, &weights, target, custom, r),
    }
}

/// The report record of weight `name` (of `shape`) compressed into `r`, from `bytes_before` to
/// `bytes_after` stored bytes.
fn weight_stats(
    c: &Candidate,
    name: &str,
    shape: &[usize],
    r: &Replacement,
    (bytes_before, bytes_after): (u64, u64),
) -> WeightStats {
    let (signal, noise) = r.error.unwrap_or((f64::NAN, f64::NAN));
    WeightStats {
        function: c.function.clone(),
        name: name.to_string(),
        shape: shape.to_vec(),
        bytes_before,
        bytes_after,
        snr_db: if noise == 0.0 {
            f64::INFINITY
        } else {
            10.0 * (signal / noise).log10()
        },
        per_block: quantized_per_block(c),
    }
}

/// Whether `c`'s config quantizes it in blocks (see [`WeightStats::per_block`]).
fn quantized_per_block(c: &Candidate) -> bool {
    let OpConfig::LinearQuantize(q) = &c.config else {
        return false;
    };
    match block_sizes(c, q.granularity, 0, None, &q.block_size) {
        Ok(Some(sizes)) => splits_into_blocks(&c.info.shape, &sizes),
        _ => false,
    }
}

/// Whether block sizes (0 = the whole axis) split a tensor of `shape` into blocks: more than
/// one axis with several scales, or one axis with several scales but fewer than its elements.
/// One scale per tensor, or per element of one axis (per channel), is not.
fn splits_into_blocks(shape: &[usize], sizes: &[usize]) -> bool {
    let split: Vec<usize> = shape
        .iter()
        .zip(sizes)
        .filter(|&(&dim, &size)| size > 0 && size < dim)
        .map(|(_, &size)| size)
        .collect();
    match split.as_slice() {
        [] => false,
        [size] => *size > 1,
        _ => true,
    }
}

/// Bytes stored by the ops of `r` and by the const and constexpr ops of `graph` (the input's)
/// they read, as `inspect` counts a weight's bytes on disk.
fn replacement_bytes(r: &Replacement, package: &Package, graph: Option<&Graph<'_>>) -> Result<u64> {
    let block = Block {
        operations: r.ops.clone(),
        ..Default::default()
    };
    let own = Graph::new(&block);
    let ends: Vec<&Operation> = block.operations.iter().collect();
    inspect::stored_bytes(
        &ends,
        &|n| {
            own.producers
                .get(n)
                .copied()
                .or_else(|| graph.and_then(|g| g.producers.get(n).copied()))
        },
        &|b| match r.held_size(b) {
            Some(size) => size,
            None => Ok(package.blob(b)?.data.len() as u64),
        },
    )
}

/// Bytes stored for the weight computed by `ends` in the input's `graph`.
fn input_chain_bytes(ends: &[&Operation], package: &Package, graph: &Graph<'_>) -> Result<u64> {
    inspect::stored_bytes(ends, &|n| graph.producers.get(n).copied(), &|b| {
        Ok(package.blob(b)?.data.len() as u64)
    })
}

/// Stored bytes of candidate `c` before and after its compression into `r`. A joint site's
/// weight is the whole chain: the part `r` replaces changes, the rest stays.
fn bytes_changed(
    c: &Candidate,
    r: &Replacement,
    package: &Package,
    graph: Option<&Graph<'_>>,
) -> Result<(u64, u64)> {
    let after_part = replacement_bytes(r, package, graph)?;
    let site = match &c.site {
        Site::Const => return Ok((input_bytes(c) as u64, after_part)),
        Site::Param { op, .. } | Site::Op { op } => op,
    };
    let graph = graph.ok_or_else(|| format_err!("function {} has no block", c.function))?;
    let end = graph
        .ops
        .iter()
        .copied()
        .find(|o| op_name(o) == c.weight)
        .ok_or_else(|| format_err!("function {}: no op {}", c.function, c.weight))?;
    let before = input_chain_bytes(&[end], package, graph)?;
    let replaced = input_chain_bytes(&[site], package, graph)?;
    Ok((before, (before + after_part).saturating_sub(replaced)))
}

fn input_bytes(c: &Candidate) -> usize {
    c.info
        .count()
        .ok()
        .and_then(|n| c.info.dtype.storage_bytes(n))
        .unwrap_or(0)
}

/// The first block of every function, as a graph.
pub(crate) fn graphs(model: &spec::Model) -> Result<BTreeMap<&str, Graph<'_>>> {
    Ok(spec::program(model)?
        .functions
        .iter()
        .filter_map(|(name, f)| {
            f.block_specializations
                .values()
                .next()
                .map(|b| (name.as_str(), Graph::new(b)))
        })
        .collect())
}

/// Runs one compression pass from `input` to `output`; returns the written path and what the
/// pass did to each candidate weight.
pub fn run(
    kind: PassKind,
    input: &Path,
    output: &Path,
    config: &OptimizationConfig,
    joint_compression: bool,
    custom: Option<&LutFunction<'_>>,
    progress: &mut dyn FnMut(usize, usize) -> Result<()>,
) -> Result<(PathBuf, PassReport)> {
    let step = Step {
        kind,
        config: config.clone(),
    };
    let opened_time = crate::trace::span("open and select");
    let Opened { package, target } =
        open_for(input, std::slice::from_ref(&step), joint_compression)?;
    let mut report = PassReport::default();
    let selected = select(
        &package.model,
        &step,
        joint_compression,
        &mut report.skipped,
    )?;
    let graphs = if joint_compression {
        graphs(&package.model)?
    } else {
        BTreeMap::new()
    };
    check_targets(kind, &package.model, &selected, target)?;
    let jobs: Vec<Job<Candidate>> = selected.into_iter().map(job_of).collect();
    drop(opened_time);
    let (path, outcomes) = write_jobs(
        &package,
        output,
        &jobs,
        target,
        |job| {
            let c = &job.task;
            let graph = graphs.get(c.function.as_str());
            let m = graph.map(|graph| Materializer::new(&package, graph));
            let target = target.for_function(&package.model, &c.function);
            let mut r = Replacement::new(target.spec_version);
            Ok(
                match compress_candidate(c, &package, m.as_ref(), target, custom, &mut r)? {
                    Ok(()) => {
                        let bytes = bytes_changed(c, &r, &package, graph)?;
                        let stats = weight_stats(c, &c.weight, &c.weight_shape, &r, bytes);
                        (Some(r), Ok(stats))
                    }
                    Err(reason) => (None, Err(Skip::of(c, reason))),
                },
            )
        },
        progress,
    )?;
    for outcome in outcomes {
        match outcome {
            Ok(stats) => report.compressed.push(stats),
            Err(skip) => report.skipped.push(skip),
        }
    }
    Ok((path, report))
}

/// Runs `compute` over `jobs` into a new package at `output` (see [`rewrite::apply`]) at the
/// target's specification version; returns its path and the records of the jobs, in job order.
fn write_jobs<T: Sync, R: Send>(
    package: &Package,
    output: &Path,
    jobs: &[Job<T>],
    target: Target,
    compute: impl Fn(&Job<T>) -> Result<(Option<Replacement>, R)> + Sync,
    progress: &mut dyn FnMut(usize, usize) -> Result<()>,
) -> Result<(PathBuf, Vec<R>)> {
    let mut out = PackageWriter::create(output, Source::Package(package))?;
    let (mut model, replaced) = rewrite::apply(package, jobs, &mut out, compute, progress)?;
    upgrade_spec(&mut model, target)?;
    Ok((rewrite::finish(package, model, out)?, replaced))
}

fn job_of(c: Candidate) -> Job<Candidate> {
    Job {
        function: c.function.clone(),
        target: c.output.clone(),
        input_bytes: input_bytes(&c),
        task: c,
    }
}

/// Runs the steps of a recipe (each after the first with joint compression) in one pass over the
/// weights: each weight goes through every step in memory, and only the result is written.
/// Returns the written path and, per step, what it did to each weight.
///
/// An input that already holds constexpr chains a later step would compress is run step by step
/// through temporary packages instead (the steps then see exactly what coremltools would).
pub fn run_recipe(
    input: &Path,
    output: &Path,
    steps: &[Step],
    custom: Option<&LutFunction<'_>>,
    progress: &mut dyn FnMut(usize, usize) -> Result<()>,
) -> Result<(PathBuf, Vec<PassReport>)> {
    let opened_time = crate::trace::span("open and select");
    let Opened { package, target } = open_for(input, steps, steps.len() > 1)?;
    let model = &package.model;
    let mut reports = vec![PassReport::default(); steps.len()];
    let Some(per_step) = select_steps(&package, steps, target, &mut reports)? else {
        drop(package);
        return run_steps_through_packages(input, output, steps, custom, progress);
    };
    let graphs = graphs(model)?;
    let jobs = recipe_jobs(&graphs, per_step);
    drop(opened_time);
    let (path, replaced) = write_jobs(
        &package,
        output,
        &jobs,
        target,
        |job| {
            let graph = graphs
                .get(job.function.as_str())
                .ok_or_else(|| format_err!("function {} has no block", job.function))?;
            recipe_job(job, steps, &package, graph, target, custom)
        },
        progress,
    )?;
    for records in replaced {
        for (k, outcome) in records {
            match outcome {
                Ok(stats) => reports[k].compressed.push(stats),
                Err(skip) => reports[k].skipped.push(skip),
            }
        }
    }
    Ok((path, reports))
}

/// The consts each step of a recipe selects (by function and output), each step's skips in
/// `reports`; None when a step would compress a constexpr chain the input already holds.
pub(crate) fn select_steps(
    package: &Package,
    steps: &[Step],
    target: Target,
    reports: &mut [PassReport],
) -> Result<Option<Vec<StepSelection>>> {
    let mut per_step = Vec::new();
    for (k, step) in steps.iter().enumerate() {
        let selected = select(&package.model, step, k > 0, &mut reports[k].skipped)?;
        if selected.iter().any(|c| !matches!(c.site, Site::Const)) {
            return Ok(None);
        }
        check_targets(step.kind, &package.model, &selected, target)?;
        per_step.push(
            selected
                .into_iter()
                .map(|c| ((c.function.clone(), c.output.clone()), c))
                .collect(),
        );
    }
    Ok(Some(per_step))
}

/// The consts one recipe step selects, by (function, output).
pub(crate) type StepSelection = HashMap<(String, String), Candidate>;

/// One job per const some step selects, in program order; its task is the candidate of each
/// step (None where the step does not select it).
pub(crate) fn recipe_jobs(
    graphs: &BTreeMap<&str, Graph<'_>>,
    mut per_step: Vec<StepSelection>,
) -> Vec<Job<Vec<Option<Candidate>>>> {
    let mut jobs = Vec::new();
    for (function, graph) in graphs {
        for op in &graph.ops {
            let key = (function.to_string(), output_name(op).to_string());
            let chosen: Vec<Option<Candidate>> =
                per_step.iter_mut().map(|m| m.remove(&key)).collect();
            let Some(first) = chosen.iter().flatten().next() else {
                continue;
            };
            jobs.push(Job {
                function: key.0.clone(),
                target: key.1.clone(),
                input_bytes: input_bytes(first),
                task: chosen,
            });
        }
    }
    jobs
}

/// What the steps of a recipe did to one weight: (step index, record or skip) for each step
/// that selected it.
pub(crate) type StepRecords = Vec<(usize, std::result::Result<WeightStats, Skip>)>;

/// Takes one const through every step of a recipe: the first step that selects it compresses
/// it, and each later step compresses the chain that step made (found, as coremltools would find
/// it in the intermediate model, among the chain's ops and the const's consumers). Records and
/// skips name the const and give its shape, whatever the step compressed in its chain.
pub(crate) fn recipe_job(
    job: &Job<Vec<Option<Candidate>>>,
    steps: &[Step],
    package: &Package,
    graph: &Graph<'_>,
    target: Target,
    custom: Option<&LutFunction<'_>>,
) -> Result<(Option<Replacement>, StepRecords)> {
    let weight = job
        .task
        .iter()
        .flatten()
        .next()
        .ok_or_else(|| format_err!("internal: a recipe job without a candidate"))?;
    let (name, shape) = (weight.weight.as_str(), weight.weight_shape.as_slice());
    let target = target.for_function(&package.model, &job.function);
    let mut done: Option<Replacement> = None;
    let mut records = Vec::new();
    for (k, step) in steps.iter().enumerate() {
        match done.as_mut() {
            None => {
                let Some(c) = &job.task[k] else { continue };
                let mut r = Replacement::new(target.spec_version);
                match compress_candidate(c, package, None, target, custom, &mut r)? {
                    Ok(()) => {
                        let bytes = (input_bytes(c) as u64, replacement_bytes(&r, package, None)?);
                        records.push((k, Ok(weight_stats(c, name, shape, &r, bytes))));
                        done = Some(r);
                    }
                    Err(reason) => records.push((k, Err(Skip::of(c, reason)))),
                }
            }
            Some(chain) => {
                let before = replacement_bytes(chain, package, None)?;
                let block = chain_block(chain, graph, &job.target);
                let sub = Graph::new(&block);
                let made: std::collections::HashSet<&str> =
                    chain.ops.iter().map(output_name).collect();
                // Only sites not above the step's threshold go to `below`: run_recipe's
                // selection on the input counted those already (a chain has its const's
                // element count).
                let mut below = Vec::new();
                let sites = joint_candidates_in(
                    &job.function,
                    &block,
                    &step.config,
                    step.kind.name(),
                    &mut below,
                )?;
                let mut next_steps = Vec::new();
                let mut compressed = Vec::new();
                {
                    let m = Materializer::with_pending(package, &sub, chain);
                    let mut previous: &Replacement = chain;
                    for c in sites.iter().filter(|c| made.contains(c.output.as_str())) {
                        let mut r = Replacement::after(previous);
                        match compress_candidate(c, package, Some(&m), target, custom, &mut r)? {
                            Ok(()) => {
                                compressed.push(weight_stats(c, name, shape, &r, (before, 0)));
                                next_steps.push((r, c.output.clone()));
                                previous = &next_steps.last().expect("pushed").0;
                            }
                            Err(reason) => records.push((
                                k,
                                Err(Skip {
                                    function: c.function.clone(),
                                    name: name.to_string(),
                                    shape: shape.to_vec(),
                                    reason,
                                }),
                            )),
                        }
                    }
                }
                for (r, at) in next_steps {
                    chain.absorb(r, &at)?;
                }
                let after = replacement_bytes(chain, package, None)?;
                records.extend(compressed.into_iter().map(|mut stats| {
                    stats.bytes_after = after;
                    (k, Ok(stats))
                }));
            }
        }
    }
    Ok((
        done.map(|mut r| {
            r.retain_used();
            r
        }),
        records,
    ))
}

/// What a later recipe step sees of a const compressed by earlier ones: the chain's ops, the
/// const's consumers reading the chain's output, and the consts those consumers also read
/// (their axes and groups decide channel axes).
fn chain_block(chain: &Replacement, graph: &Graph<'_>, output: &str) -> Block {
    let renames: HashMap<String, String> = chain.renames.iter().cloned().collect();
    let mut consumers = Block {
        operations: graph
            .consumers_of(output)
            .iter()
            .map(|u| u.op.clone())
            .collect(),
        ..Default::default()
    };
    rename_uses(&mut consumers, &renames);
    let mut operations = chain.ops.clone();
    let mut seen = std::collections::HashSet::new();
    for n in consumers.operations.iter().flat_map(input_vars) {
        if let Some(p) = graph.producers.get(n) {
            if p.r#type == "const" && seen.insert(n) {
                operations.push((*p).clone());
            }
        }
    }
    operations.extend(consumers.operations);
    Block {
        operations,
        ..Default::default()
    }
}

/// The recipe's steps one after the other, each writing a temporary package next to `output`.
fn run_steps_through_packages(
    input: &Path,
    output: &Path,
    steps: &[Step],
    custom: Option<&LutFunction<'_>>,
    progress: &mut dyn FnMut(usize, usize) -> Result<()>,
) -> Result<(PathBuf, Vec<PassReport>)> {
    let work = crate::format::package::ScratchDir::beside(output, input)?;
    let mut current = input.to_path_buf();
    let mut reports = Vec::new();
    // Reports name weights as the input model does: a later step sees them under the names of
    // the chains an earlier step wrote, and finds the original name through the weight's use.
    let input_names: HashMap<_, _> = inspect::weight_uses(&Package::open(input)?)?
        .into_iter()
        .map(|((function, name), used_by)| ((function, used_by), name))
        .collect();
    for (k, step) in steps.iter().enumerate() {
        let dest = if k + 1 == steps.len() {
            output.to_path_buf()
        } else {
            work.path().join(format!("step{k}.mlpackage"))
        };
        let uses = if k > 0 {
            inspect::weight_uses(&Package::open(&current)?)?
        } else {
            HashMap::new()
        };
        let (written, mut s) = run(
            step.kind,
            &current,
            &dest,
            &step.config,
            k > 0,
            custom,
            progress,
        )?;
        let original = |function: &str, name: &mut String| {
            let used_by = uses.get(&(function.to_string(), name.clone()));
            if let Some(first) =
                used_by.and_then(|u| input_names.get(&(function.to_string(), u.clone())))
            {
                name.clone_from(first);
            }
        };
        for w in &mut s.compressed {
            original(&w.function, &mut w.name);
        }
        for skip in &mut s.skipped {
            original(&skip.function, &mut skip.name);
        }
        reports.push(s);
        current = written;
    }
    Ok((current, reports))
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

#[cfg(test)]
mod tests {
    use super::splits_into_blocks;

    #[test]
    fn blocks_are_neither_per_tensor_nor_per_channel() {
        assert!(!splits_into_blocks(&[64, 32], &[0, 0])); // per tensor
        assert!(!splits_into_blocks(&[64, 32], &[1, 0])); // per output channel
        assert!(!splits_into_blocks(&[64, 32], &[0, 1])); // per channel of the other axis
        assert!(!splits_into_blocks(&[64, 32], &[1, 32])); // a block as long as its axis
        assert!(splits_into_blocks(&[64, 32], &[1, 16])); // per_block: 16 along the input
        assert!(splits_into_blocks(&[64, 32], &[8, 0])); // blocks of 8 along one axis
        assert!(!splits_into_blocks(&[1, 32], &[1, 0])); // a single channel is one scale
    }
}
