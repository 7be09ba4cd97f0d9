//! `fit`'s measurements: every form of a ladder (a recipe of one or two steps) tried on every
//! weight in memory, through the recipe machinery that writes packages ([`pass::recipe_job`]),
//! so each form's stored bytes and dense values are those a written package would hold. Nothing
//! is written; the choice among the forms is made by the caller.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use rayon::prelude::*;

use crate::compress::dense::Elements;
use crate::compress::materialize::Materializer;
use crate::compress::pass::{self, Opened, PassReport, Step, StepSelection};
use crate::compress::rewrite::{Job, Replacement};
use crate::compress::select::Candidate;
use crate::compress::target::Target;
use crate::compress::weights::{self, Weights};
use crate::error::Result;
use crate::format::package::Package;
use crate::format::spec;
use crate::format::spec::proto::mil_spec::{value, Block};
use crate::format_err;
use crate::kernels::fp16::WeightElement;
use crate::mil::ops::output_name;
use crate::mil::program::Graph;

/// One ladder form: its recipe steps, and whether its op forms exist only since iOS18.
pub struct Form {
    pub steps: Vec<Step>,
    pub ios18_only: bool,
}

/// What one form does to one weight.
#[derive(Clone, Debug)]
pub struct FormResult {
    /// Data bytes of each blob the form writes to the weight file, in the order it writes them.
    pub blob_bytes: Vec<u64>,
    /// Bytes of the values it keeps inline in model.mlmodel (small LUTs, scales).
    pub inline_bytes: u64,
    /// Σ(w − ŵ)² over the weight, in f64, ŵ being the dense value a reader computes.
    pub sse: f64,
    /// Σ_j imp_j Σ_i (w − ŵ)²_{i,j} over input channels j, when the weight has an importance.
    pub weighted_sse: Option<f64>,
}

/// One weight some form selects, and the result of every form on it (Err: why the form does
/// not apply).
#[derive(Clone, Debug)]
pub struct WeightFit {
    pub function: String,
    /// The const op's name (what op_name configs match) and its output variable.
    pub name: String,
    pub output: String,
    pub shape: Vec<usize>,
    pub consumer_types: Vec<String>,
    /// Bytes of the weight file blob it is stored in now.
    pub dense_bytes: u64,
    /// Σw², for SNRs.
    pub signal: f64,
    pub forms: Vec<std::result::Result<FormResult, String>>,
}

/// A blob the input model uses, with who reads it.
#[derive(Clone, Debug)]
pub struct BlobUse {
    pub file_name: String,
    pub offset: u64,
    pub data_bytes: u64,
    /// Indices into [`Evaluation::weights`] of the fitted weights stored in it.
    pub weights: Vec<usize>,
    /// Whether any other op reads it (it is then kept whatever the weights become).
    pub other_readers: bool,
}

/// Everything a fit chooses from.
#[derive(Clone, Debug)]
pub struct Evaluation {
    /// Whether the model's opset has the iOS18 op forms. When it has not, iOS18-only forms are
    /// measured on an iOS18 view of the model (what they would give), never to be written.
    pub ios18: bool,
    pub weights: Vec<WeightFit>,
    /// Every blob the input uses, in the order a pass copies unchanged blobs.
    pub blobs: Vec<BlobUse>,
}

/// A view of `package`'s model as if converted for iOS18 (same weights, opset CoreML8), on which
/// the iOS18-only forms are measured for an older model.
fn ios18_view(input: &Path) -> Result<Package> {
    let mut view = Package::open(input)?;
    view.model.specification_version = view.model.specification_version.max(9);
    for function in spec::program_mut(&mut view.model)?.functions.values_mut() {
        if spec::opset_spec_version(&function.opset).is_some_and(|v| v < 9) {
            function.opset = "CoreML8".into();
        }
    }
    Ok(view)
}

/// The jobs of one form: the consts its steps select, each with the candidate of every step;
/// Err when the form cannot run on this model (an opset check, a chain in the input).
type FormJobs = std::result::Result<HashMap<(String, String), Job<Vec<Option<Candidate>>>>, String>;

fn form_jobs(package: &Package, form: &Form, target: Target) -> Result<FormJobs> {
    let mut reports = vec![PassReport::default(); form.steps.len()];
    let selection: Vec<StepSelection> =
        match pass::select_steps(package, &form.steps, target, &mut reports) {
            Ok(Some(s)) => s,
            Ok(None) => return Ok(Err("the input already holds compressed chains".into())),
            Err(crate::error::Error::Config(e)) => return Ok(Err(e)),
            Err(e) => return Err(e),
        };
    let graphs = pass::graphs(&package.model)?;
    Ok(Ok(pass::recipe_jobs(&graphs, selection)
        .into_iter()
        .map(|j| ((j.function.clone(), j.target.clone()), j))
        .collect()))
}

/// Measures every form on every weight some form selects in the package at `input`.
/// `importance` maps a const's name to one factor per input channel. Weights are taken one at a
/// time (their forms in parallel), so memory holds a few copies of one weight.
pub fn evaluate(
    input: &Path,
    forms: &[Form],
    importance: &HashMap<String, Vec<f32>>,
    progress: &mut dyn FnMut(usize, usize) -> Result<()>,
) -> Result<Evaluation> {
    let all_steps: Vec<Step> = forms.iter().flat_map(|f| f.steps.clone()).collect();
    let Opened { package, target } = pass::open_for(input, &all_steps, false)?;
    let ios18 = target.ios18();
    let view = if !ios18 && forms.iter().any(|f| f.ios18_only) {
        Some(ios18_view(input)?)
    } else {
        None
    };
    let view_target = Target { spec_version: 9 };
    let mut jobs = Vec::with_capacity(forms.len());
    for form in forms {
        jobs.push(match (&view, form.ios18_only && !ios18) {
            (Some(v), true) => form_jobs(v, form, view_target)?,
            _ if form.steps.len() > 1 && !ios18 => {
                Err("joint compression needs an iOS18 opset".into())
            }
            _ => form_jobs(&package, form, target)?,
        });
    }
    let graphs = pass::graphs(&package.model)?;
    let mut keys: Vec<(String, String)> = Vec::new();
    for (function, graph) in &graphs {
        for op in &graph.ops {
            let key = (function.to_string(), output_name(op).to_string());
            if jobs.iter().flatten().any(|j| j.contains_key(&key)) {
                keys.push(key);
            }
        }
    }
    let mut weights = Vec::with_capacity(keys.len());
    for (done, key) in keys.iter().enumerate() {
        let graph = &graphs[key.0.as_str()];
        let fit = evaluate_weight(
            &package,
            view.as_ref(),
            graph,
            key,
            forms,
            &jobs,
            importance,
        )?;
        weights.push(fit);
        package.release_pages();
        progress(done + 1, keys.len())?;
    }
    let blobs = blob_uses(&package, &keys)?;
    Ok(Evaluation {
        ios18,
        weights,
        blobs,
    })
}

fn evaluate_weight(
    package: &Package,
    view: Option<&Package>,
    graph: &Graph<'_>,
    key: &(String, String),
    forms: &[Form],
    jobs: &[FormJobs],
    importance: &HashMap<String, Vec<f32>>,
) -> Result<WeightFit> {
    let first = jobs
        .iter()
        .flatten()
        .find_map(|j| j.get(key))
        .and_then(|j| j.task.iter().flatten().next())
        .ok_or_else(|| format_err!("internal: a fitted weight without a candidate"))?;
    let dense_bytes = match &first.value.value {
        Some(value::Value::BlobFileValue(b)) => package.blob(b)?.data.len() as u64,
        _ => 0,
    };
    let weights = match weights::read_weights(package, first)? {
        Ok(w) => w,
        Err(reason) => {
            let why = reason.to_string();
            return Ok(weight_fit(
                first,
                dense_bytes,
                0.0,
                vec![Err(why); forms.len()],
            ));
        }
    };
    let signal = match &weights {
        Weights::F16(w) => weights::error_energy(w, w).0,
        Weights::F32(w) => weights::error_energy(w, w).0,
    };
    let channel_weights = importance.get(&first.name).and_then(|imp| {
        let axis = first.input_axis?;
        let stride = first.weight_shape.get(axis + 1..)?.iter().product();
        (first.weight_shape.get(axis) == Some(&imp.len())).then_some(Channels {
            stride,
            importance: imp.as_slice(),
        })
    });
    let results: Vec<std::result::Result<FormResult, String>> = forms
        .par_iter()
        .zip(jobs)
        .map(|(form, jobs)| {
            let job = match jobs {
                Ok(j) => j
                    .get(key)
                    .ok_or_else(|| "the form does not select it".to_string()),
                Err(why) => Err(why.clone()),
            };
            let job = match job {
                Ok(j) => j,
                Err(why) => return Ok(Err(why)),
            };
            let (source, target) = match view {
                Some(v) if form.ios18_only => (v, Target { spec_version: 9 }),
                _ => (
                    package,
                    Target {
                        spec_version: package.model.specification_version.max(7),
                    },
                ),
            };
            measure_form(
                source,
                graph,
                target,
                job,
                &form.steps,
                &weights,
                channel_weights,
            )
        })
        .collect::<Result<_>>()?;
    Ok(weight_fit(first, dense_bytes, signal, results))
}

/// Per-input-channel importance of a weight: channel of element i is (i / stride) % len.
#[derive(Clone, Copy)]
struct Channels<'a> {
    stride: usize,
    importance: &'a [f32],
}

/// Σ(w − ŵ)² and, with `channels`, Σ imp_j (w − ŵ)²; in f64, summed in element order.
fn squared_errors<T: WeightElement>(
    w: &[T],
    restored: &[T],
    channels: Option<Channels<'_>>,
) -> (f64, Option<f64>) {
    let sse = weights::error_energy(w, restored).1;
    let weighted = channels.map(|c| {
        w.iter()
            .zip(restored)
            .enumerate()
            .map(|(i, (&a, &b))| {
                let d = a.to_f64() - b.to_f64();
                f64::from(c.importance[(i / c.stride) % c.importance.len()]) * d * d
            })
            .sum()
    });
    (sse, weighted)
}

fn weight_fit(
    c: &Candidate,
    dense_bytes: u64,
    signal: f64,
    forms: Vec<std::result::Result<FormResult, String>>,
) -> WeightFit {
    WeightFit {
        function: c.function.clone(),
        name: c.name.clone(),
        output: c.output.clone(),
        shape: c.weight_shape.clone(),
        consumer_types: c.consumer_types.clone(),
        dense_bytes,
        signal,
        forms,
    }
}

/// Runs one form's steps on one weight in memory and measures what a written package would hold.
fn measure_form(
    package: &Package,
    graph: &Graph<'_>,
    target: Target,
    job: &Job<Vec<Option<Candidate>>>,
    steps: &[Step],
    weights: &Weights<'_>,
    channels: Option<Channels<'_>>,
) -> Result<std::result::Result<FormResult, String>> {
    let (replacement, records) = match pass::recipe_job(job, steps, package, graph, target, None) {
        Ok(x) => x,
        Err(crate::error::Error::Config(e)) => return Ok(Err(e)),
        Err(e) => return Err(e),
    };
    if let Some((_, Err(skip))) = records.iter().find(|(_, r)| r.is_err()) {
        return Ok(Err(skip.reason.to_string()));
    }
    let Some(r) = replacement.filter(|_| records.len() == steps.len()) else {
        return Ok(Err("a step of the form does not select it".into()));
    };
    let (blob_bytes, inline_bytes) = r.stored_sizes()?;
    let restored = restored_value(package, &r, &job.target)?;
    let (sse, weighted_sse) = match (weights, &restored) {
        (Weights::F16(w), Elements::F16(v)) if v.len() == w.len() => squared_errors(w, v, channels),
        (Weights::F32(w), Elements::F32(v)) if v.len() == w.len() => squared_errors(w, v, channels),
        _ => {
            return Err(format_err!(
                "internal: {} restored to another type or size than the weight",
                job.target
            ))
        }
    };
    Ok(Ok(FormResult {
        blob_bytes,
        inline_bytes,
        sse,
        weighted_sse,
    }))
}

/// The dense value a reader computes from `r`'s ops for the const whose output was `output`.
fn restored_value(package: &Package, r: &Replacement, output: &str) -> Result<Elements> {
    let new = r
        .renames
        .iter()
        .find(|(from, _)| from == output)
        .map_or(output, |(_, to)| to.as_str());
    let block = Block {
        operations: r.ops.clone(),
        ..Default::default()
    };
    let graph = Graph::new(&block);
    Ok(Materializer::with_pending(package, &graph, r)
        .var(new)?
        .elements)
}

/// Every blob the model uses, in (file, offset) order as [`crate::compress::rewrite::finish`]
/// copies them, with the fitted weights (`keys`, by function and output) stored in each.
fn blob_uses(package: &Package, keys: &[(String, String)]) -> Result<Vec<BlobUse>> {
    use crate::format::spec::proto::mil_spec::argument::binding::Binding;
    let index: HashMap<&(String, String), usize> =
        keys.iter().enumerate().map(|(i, k)| (k, i)).collect();
    let mut uses: BTreeMap<(String, u64), (Vec<usize>, bool)> = BTreeMap::new();
    for (function, f) in &spec::program(&package.model)?.functions {
        for block in f.block_specializations.values() {
            let graph = Graph::new(block);
            for op in &graph.ops {
                let key = (function.clone(), output_name(op).to_string());
                let fitted = (op.r#type == "const").then(|| index.get(&key)).flatten();
                let bound = op
                    .inputs
                    .values()
                    .flat_map(|a| &a.arguments)
                    .filter_map(|b| match &b.binding {
                        Some(Binding::Value(v)) => Some(v),
                        _ => None,
                    });
                for v in op.attributes.values().chain(bound) {
                    let Some(value::Value::BlobFileValue(b)) = &v.value else {
                        continue;
                    };
                    let entry = uses.entry((b.file_name.clone(), b.offset)).or_default();
                    match fitted {
                        Some(&i) => entry.0.push(i),
                        None => entry.1 = true,
                    }
                }
            }
        }
    }
    uses.into_iter()
        .map(|((file_name, offset), (weights, other_readers))| {
            let b = value::BlobFileValue {
                file_name: file_name.clone(),
                offset,
            };
            Ok(BlobUse {
                data_bytes: package.blob(&b)?.data.len() as u64,
                file_name,
                offset,
                weights,
                other_readers,
            })
        })
        .collect()
}
