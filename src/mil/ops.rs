//! Operations: reading their parameters (iOS16/17 ops keep them in attributes, iOS18 ops in
//! inputs) and building the `const` and `constexpr_*` ops the passes emit.

use std::collections::BTreeMap;

use crate::format::spec::proto::mil_spec::{argument, Argument, NamedValueType, Operation, Value};
use crate::mil::tensor::{as_string, string_value, TensorInfo};

/// A parameter of an op: an inline value or the name of the variable that feeds it.
#[derive(Clone, Copy, Debug)]
pub enum Param<'a> {
    Value(&'a Value),
    Var(&'a str),
}

/// The value of a `const` op.
pub fn const_value(op: &Operation) -> Option<&Value> {
    (op.r#type == "const")
        .then(|| op.attributes.get("val"))
        .flatten()
}

/// The op's `name` attribute (coremltools' op name, which may differ from its output's name).
pub fn op_name(op: &Operation) -> &str {
    op.attributes
        .get("name")
        .and_then(as_string)
        .unwrap_or_default()
}

/// The name of the op's first output.
pub fn output_name(op: &Operation) -> &str {
    op.outputs
        .first()
        .map(|o| o.name.as_str())
        .unwrap_or_default()
}

/// A parameter by name, from the inputs or (iOS16/17 constexpr ops, `const`) the attributes.
pub fn param<'a>(op: &'a Operation, name: &str) -> Option<Param<'a>> {
    if let Some(arg) = op.inputs.get(name) {
        return match arg.arguments.first()?.binding.as_ref()? {
            argument::binding::Binding::Name(n) => Some(Param::Var(n)),
            argument::binding::Binding::Value(v) => Some(Param::Value(v)),
        };
    }
    if name == "name" {
        return None;
    }
    op.attributes.get(name).map(Param::Value)
}

/// The variables an op reads (inputs bound to a name), parameter by parameter.
pub fn input_vars(op: &Operation) -> impl Iterator<Item = &str> {
    op.inputs
        .values()
        .flat_map(|arg| &arg.arguments)
        .filter_map(|b| match &b.binding {
            Some(argument::binding::Binding::Name(n)) => Some(n.as_str()),
            _ => None,
        })
}

/// Every parameter name of an op (inputs and attributes other than `name`), sorted.
pub fn param_names(op: &Operation) -> Vec<&str> {
    let mut names: Vec<&str> = op
        .inputs
        .keys()
        .chain(op.attributes.keys().filter(|k| *k != "name"))
        .map(String::as_str)
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// A parameter given to [`build_op`].
pub enum NewParam {
    Value(Value),
    Var(String),
}

/// How an op carries its parameters: iOS16/17 constexpr ops in attributes, iOS18 ones in inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamStyle {
    Attributes,
    Inputs,
}

/// Builds an op named `name` with the given parameters and outputs.
pub fn build_op(
    op_type: &str,
    name: &str,
    params: Vec<(&str, NewParam)>,
    outputs: Vec<(String, TensorInfo)>,
    style: ParamStyle,
) -> Operation {
    let mut attributes = BTreeMap::new();
    let mut inputs = BTreeMap::new();
    attributes.insert("name".to_string(), string_value(name));
    for (key, p) in params {
        match (style, p) {
            (ParamStyle::Attributes, NewParam::Value(v)) => {
                attributes.insert(key.to_string(), v);
            }
            (_, p) => {
                let binding = match p {
                    NewParam::Value(v) => argument::binding::Binding::Value(v),
                    NewParam::Var(n) => argument::binding::Binding::Name(n),
                };
                inputs.insert(
                    key.to_string(),
                    Argument {
                        arguments: vec![argument::Binding {
                            binding: Some(binding),
                        }],
                    },
                );
            }
        }
    }
    Operation {
        r#type: op_type.to_string(),
        inputs,
        outputs: outputs
            .into_iter()
            .map(|(n, info)| NamedValueType {
                name: n,
                r#type: Some(info.value_type()),
            })
            .collect(),
        blocks: vec![],
        attributes,
    }
}

/// A `const` op holding `value` under the output name `output`.
pub fn const_op(name: &str, output: &str, value: Value) -> Operation {
    let info_type = value.r#type.clone();
    let mut attributes = BTreeMap::new();
    attributes.insert("name".to_string(), string_value(name));
    attributes.insert("val".to_string(), value);
    Operation {
        r#type: "const".to_string(),
        inputs: BTreeMap::new(),
        outputs: vec![NamedValueType {
            name: output.to_string(),
            r#type: info_type,
        }],
        blocks: vec![],
        attributes,
    }
}
