//! `decompress_weights`: every `constexpr_*` chain becomes a dense `const` that keeps the chain's
//! output variable name, as coremltools' WeightDecompressor does; the consts that only fed the
//! chains are removed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::compress::materialize::Materializer;
use crate::compress::rewrite::{self, Job, Replacement};
use crate::error::Result;
use crate::format::package::{Package, PackageWriter, Source};
use crate::format::spec;
use crate::format_err;
use crate::mil::ops::{const_op, output_name};
use crate::mil::program::Graph;
use crate::mil::tensor::tensor_info;

fn is_constexpr(op_type: &str) -> bool {
    op_type.starts_with("constexpr_")
}

/// Whether a variable is read by something other than a constexpr op.
fn used_outside(graph: &Graph<'_>, var: &str) -> bool {
    graph.block_outputs.contains(var)
        || graph
            .consumers_of(var)
            .iter()
            .any(|u| !is_constexpr(&u.op.r#type))
}

enum Task {
    /// The last op of a chain: replaced by consts holding its dense outputs.
    Materialize,
    /// An op inside a chain (or a const that only fed chains): removed.
    Remove,
}

pub fn decompress(
    input: &Path,
    output: &Path,
    progress: &mut dyn FnMut(usize, usize) -> Result<()>,
) -> Result<PathBuf> {
    let package = Package::open(input)?;
    crate::compress::select::check_chains(&package)?;
    let spec_version = package.model.specification_version;
    let program = spec::program(&package.model)?;
    let mut graphs: BTreeMap<&str, Graph<'_>> = BTreeMap::new();
    let mut jobs = Vec::new();
    for (name, function) in &program.functions {
        if function.block_specializations.len() != 1 {
            return Err(format_err!(
                "function {name} has {} block specializations; exactly one is supported",
                function.block_specializations.len()
            ));
        }
        let graph = Graph::new(
            function
                .block_specializations
                .values()
                .next()
                .expect("one block"),
        );
        let used_outside = |var: &str| used_outside(&graph, var);
        for op in &graph.ops {
            let task = if is_constexpr(&op.r#type) {
                if op.outputs.iter().any(|o| used_outside(&o.name)) {
                    Task::Materialize
                } else {
                    Task::Remove
                }
            } else if op.r#type == "const"
                && !op.outputs.is_empty()
                && op.outputs.iter().all(|o| {
                    !graph.block_outputs.contains(o.name.as_str())
                        && !graph.consumers_of(&o.name).is_empty()
                        && graph
                            .consumers_of(&o.name)
                            .iter()
                            .all(|u| is_constexpr(&u.op.r#type))
                })
            {
                Task::Remove
            } else {
                continue;
            };
            // What a materialized op holds in memory until it is written: its dense outputs.
            let dense_bytes = op
                .outputs
                .iter()
                .filter_map(|o| tensor_info(o.r#type.as_ref()))
                .filter_map(|i| i.dtype.storage_bytes(i.count().ok()?))
                .sum();
            jobs.push(Job {
                function: name.clone(),
                target: output_name(op).to_string(),
                input_bytes: dense_bytes,
                task: (task, *op),
            });
        }
        graphs.insert(name, graph);
    }

    let mut out = PackageWriter::create(output, Source::Package(&package))?;
    let (model, _) = rewrite::apply(
        &package,
        &jobs,
        &mut out,
        |job| {
            let (task, op) = &job.task;
            let mut r = Replacement::new(spec_version);
            if let Task::Materialize = task {
                let graph = &graphs[job.function.as_str()];
                let values = Materializer::new(&package, graph).op(op)?;
                for (out_var, dense) in op.outputs.iter().zip(values) {
                    if !used_outside(graph, &out_var.name) {
                        continue;
                    }
                    let value = r.dense_value(dense)?;
                    r.ops.push(const_op(&out_var.name, &out_var.name, value));
                }
            }
            Ok((Some(r), ()))
        },
        progress,
    )?;
    rewrite::finish(&package, model, out)
}
