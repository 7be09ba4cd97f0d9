//! Use-def over one block of a function and everything nested in it, and the in-place rewrites
//! the passes need (replace ops, rename uses).

use std::collections::{HashMap, HashSet};

use crate::format::spec::proto::mil_spec::{argument::binding::Binding, Block, Operation};

/// Where a variable is used: the consuming op and the parameter it feeds.
#[derive(Clone, Copy, Debug)]
pub struct Use<'a> {
    pub op: &'a Operation,
    pub param: &'a str,
}

/// Producers and consumers of every variable of a block tree (variable names are unique within a
/// function, so nested blocks share one index).
pub struct Graph<'a> {
    pub producers: HashMap<&'a str, &'a Operation>,
    pub consumers: HashMap<&'a str, Vec<Use<'a>>>,
    /// Variables returned by some block (used by something outside the op graph).
    pub block_outputs: HashSet<&'a str>,
    /// Every op, in program order (an op before the ops of its nested blocks).
    pub ops: Vec<&'a Operation>,
}

impl<'a> Graph<'a> {
    pub fn new(block: &'a Block) -> Self {
        let mut g = Graph {
            producers: HashMap::new(),
            consumers: HashMap::new(),
            block_outputs: HashSet::new(),
            ops: Vec::new(),
        };
        g.add_block(block);
        g
    }

    fn add_block(&mut self, block: &'a Block) {
        for op in &block.operations {
            self.ops.push(op);
            for out in &op.outputs {
                self.producers.insert(&out.name, op);
            }
            for (param, arg) in &op.inputs {
                for binding in &arg.arguments {
                    if let Some(Binding::Name(n)) = &binding.binding {
                        self.consumers.entry(n).or_default().push(Use { op, param });
                    }
                }
            }
            for nested in &op.blocks {
                self.add_block(nested);
            }
        }
        self.block_outputs
            .extend(block.outputs.iter().map(String::as_str));
    }

    pub fn consumers_of(&self, var: &str) -> &[Use<'a>] {
        self.consumers
            .get(var)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }
}

/// Replaces, throughout a block tree, each op for which `f` returns new ops by those ops.
pub fn replace_ops(block: &mut Block, f: &mut impl FnMut(&Operation) -> Option<Vec<Operation>>) {
    let old = std::mem::take(&mut block.operations);
    for mut op in old {
        match f(&op) {
            Some(new_ops) => block.operations.extend(new_ops),
            None => {
                for nested in &mut op.blocks {
                    replace_ops(nested, f);
                }
                block.operations.push(op);
            }
        }
    }
}

/// Points every use of a renamed variable (op inputs and block outputs) at its new name.
pub fn rename_uses(block: &mut Block, renames: &HashMap<String, String>) {
    if renames.is_empty() {
        return;
    }
    for out in &mut block.outputs {
        if let Some(new) = renames.get(out) {
            *out = new.clone();
        }
    }
    for op in &mut block.operations {
        for arg in op.inputs.values_mut() {
            for binding in &mut arg.arguments {
                if let Some(Binding::Name(n)) = &mut binding.binding {
                    if let Some(new) = renames.get(n) {
                        *n = new.clone();
                    }
                }
            }
        }
        for nested in &mut op.blocks {
            rename_uses(nested, renames);
        }
    }
}
