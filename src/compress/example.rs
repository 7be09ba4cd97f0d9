//! A small ML Program written from scratch (no coremltools needed): a three-layer fp16 MLP in
//! the form coremltools emits for iOS18. The CLI's `demo` compresses it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use half::f16;

use crate::error::Result;
use crate::format::dtype::DType;
use crate::format::package::{PackageWriter, Source, WEIGHT_FILE_NAME};
use crate::format::spec::proto::{
    self, array_feature_type::ArrayDataType, feature_type, mil_spec, ArrayFeatureType,
    FeatureDescription, FeatureType, Metadata, ModelDescription,
};
use crate::format::spec::Model;
use crate::mil::ops::{build_op, const_op, NewParam, ParamStyle};
use crate::mil::tensor::{blob_value, string_value, TensorInfo};

/// Layer widths of the example MLP: input, hidden, hidden, output.
const WIDTHS: [usize; 4] = [512, 1024, 1024, 256];
const BATCH: usize = 1;

/// Deterministic N(0, std²) fp16 values (xorshift64* and Box–Muller), so the demo is repeatable.
fn normal_f16(count: usize, seed: u64, std: f32) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut uniform = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        ((state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..count)
        .flat_map(|_| {
            let (u1, u2) = (uniform(), uniform());
            let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
            f16::from_f32(z as f32 * std).to_le_bytes()
        })
        .collect()
}

fn array_feature(name: &str, shape: &[usize]) -> FeatureDescription {
    FeatureDescription {
        name: name.to_string(),
        short_description: String::new(),
        r#type: Some(FeatureType {
            r#type: Some(feature_type::Type::MultiArrayType(ArrayFeatureType {
                shape: shape.iter().map(|&d| d as i64).collect(),
                data_type: ArrayDataType::Float32 as i32,
                ..Default::default()
            })),
            is_optional: false,
        }),
    }
}

fn var(name: &str) -> NewParam {
    NewParam::Var(name.to_string())
}

/// Writes the example package to `dest`.
pub fn write_example(dest: &Path) -> Result<PathBuf> {
    let mut out = PackageWriter::create(dest, Source::Blobs(&[]))?;
    let mut ops = Vec::new();
    let fp16 = |shape: &[usize]| TensorInfo::new(DType::F16, shape);
    let string_const = |name: &str, s: &str| {
        let mut op = const_op(name, name, string_value(s));
        op.outputs[0].r#type = string_value(s).r#type;
        op
    };

    ops.push(string_const("x_to_fp16_dtype_0", "fp16"));
    ops.push(build_op(
        "cast",
        "x_to_fp16",
        vec![("x", var("x")), ("dtype", var("x_to_fp16_dtype_0"))],
        vec![("x_to_fp16".into(), fp16(&[BATCH, WIDTHS[0]]))],
        ParamStyle::Inputs,
    ));
    let mut h = "x_to_fp16".to_string();
    for layer in 0..3 {
        let (fan_in, fan_out) = (WIDTHS[layer], WIDTHS[layer + 1]);
        let w_name = format!("layer{layer}_weight_to_fp16");
        let b_name = format!("layer{layer}_bias_to_fp16");
        for (name, shape, seed, std) in [
            (&w_name, vec![fan_out, fan_in], 2 * layer as u64 + 1, 0.02),
            (&b_name, vec![fan_out], 2 * layer as u64 + 2, 0.01),
        ] {
            let info = fp16(&shape);
            let count = info.count()?;
            let offset =
                out.weights()
                    .append(DType::F16, count as u64, &normal_f16(count, seed, std))?;
            ops.push(const_op(
                name,
                name,
                blob_value(&info, WEIGHT_FILE_NAME, offset),
            ));
        }
        let lin = format!("layer{layer}_cast_fp16");
        ops.push(build_op(
            "linear",
            &lin,
            vec![
                ("x", var(&h)),
                ("weight", var(&w_name)),
                ("bias", var(&b_name)),
            ],
            vec![(lin.clone(), fp16(&[BATCH, fan_out]))],
            ParamStyle::Inputs,
        ));
        h = lin;
        if layer < 2 {
            let relu = format!("relu{layer}_cast_fp16");
            ops.push(build_op(
                "relu",
                &relu,
                vec![("x", var(&h))],
                vec![(relu.clone(), fp16(&[BATCH, fan_out]))],
                ParamStyle::Inputs,
            ));
            h = relu;
        }
    }
    ops.push(string_const("y_dtype_0", "fp32"));
    ops.push(build_op(
        "cast",
        "cast_0",
        vec![("x", var(&h)), ("dtype", var("y_dtype_0"))],
        vec![("y".into(), TensorInfo::new(DType::F32, &[BATCH, WIDTHS[3]]))],
        ParamStyle::Inputs,
    ));

    let block = mil_spec::Block {
        outputs: vec!["y".into()],
        operations: ops,
        ..Default::default()
    };
    let function = mil_spec::Function {
        inputs: vec![mil_spec::NamedValueType {
            name: "x".into(),
            r#type: Some(TensorInfo::new(DType::F32, &[BATCH, WIDTHS[0]]).value_type()),
        }],
        opset: "CoreML8".into(),
        block_specializations: BTreeMap::from([("CoreML8".to_string(), block)]),
        attributes: BTreeMap::new(),
    };
    let model = Model {
        specification_version: 9,
        description: Some(ModelDescription {
            input: vec![array_feature("x", &[BATCH, WIDTHS[0]])],
            output: vec![array_feature("y", &[BATCH, WIDTHS[3]])],
            metadata: Some(Metadata {
                short_description: "coreml-compress example: a 3-layer fp16 MLP".into(),
                user_defined: BTreeMap::from([(
                    "com.github.apple.coremltools.source".to_string(),
                    "coreml-compress example".to_string(),
                )]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        is_updatable: false,
        r#type: Some(proto::model::Type::MlProgram(mil_spec::Program {
            version: 1,
            functions: BTreeMap::from([("main".to_string(), function)]),
            ..Default::default()
        })),
    };
    out.commit(&model)
}
