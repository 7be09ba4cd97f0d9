//! model.mlmodel: the Core ML `Model` protobuf, compiled from proto/ by build.rs.
//!
//! Reading refuses, rather than silently drops, anything this schema does not describe: other
//! model types (NeuralNetwork, pipelines, …) and fields unknown to this version.

use prost::Message;

use crate::error::Result;
use crate::{format_err, unsupported};

pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/core_ml.specification.rs"));
    pub mod mil_spec {
        include!(concat!(
            env!("OUT_DIR"),
            "/core_ml.specification.mil_spec.rs"
        ));
    }
}

pub use proto::Model;

const ML_PROGRAM_FIELD: u64 = 502;

/// Core ML's other model types, by their `Model.Type` field number, for error messages.
fn model_type_name(field: u64) -> Option<&'static str> {
    Some(match field {
        200 => "pipelineClassifier",
        201 => "pipelineRegressor",
        202 => "pipeline",
        300 => "glmRegressor",
        301 => "supportVectorRegressor",
        302 => "treeEnsembleRegressor",
        303 => "neuralNetworkRegressor",
        304 => "bayesianProbitRegressor",
        400 => "glmClassifier",
        401 => "supportVectorClassifier",
        402 => "treeEnsembleClassifier",
        403 => "neuralNetworkClassifier",
        404 => "kNearestNeighborsClassifier",
        500 => "neuralNetwork",
        501 => "itemSimilarityRecommender",
        555 => "customModel",
        556 => "linkedModel",
        560 => "classConfidenceThresholding",
        600 => "oneHotEncoder",
        601 => "imputer",
        602 => "featureVectorizer",
        603 => "dictVectorizer",
        604 => "scaler",
        606 => "categoricalMapping",
        607 => "normalizer",
        609 => "arrayFeatureExtractor",
        610 => "nonMaximumSuppression",
        900 => "identity",
        2000..=2006 => "a CoreMLModels model",
        3000 => "serializedModel",
        _ => return None,
    })
}

fn read_varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// The field numbers present at the top level of a serialized message.
fn top_level_fields(bytes: &[u8]) -> Option<Vec<u64>> {
    let mut fields = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let key = read_varint(bytes, &mut at)?;
        let skip = match key & 7 {
            0 => {
                read_varint(bytes, &mut at)?;
                0
            }
            1 => 8,
            2 => usize::try_from(read_varint(bytes, &mut at)?).ok()?,
            5 => 4,
            _ => return None,
        };
        at = at.checked_add(skip).filter(|&end| end <= bytes.len())?;
        fields.push(key >> 3);
    }
    Some(fields)
}

/// Decodes a model file, accepting only ML Programs whose every field this schema knows.
pub fn decode_model(bytes: &[u8], origin: &str) -> Result<Model> {
    let fields = top_level_fields(bytes)
        .ok_or_else(|| format_err!("{origin}: not a valid Core ML model protobuf"))?;
    if let Some(name) = fields.iter().find_map(|&f| model_type_name(f)) {
        return Err(unsupported!(
            "{origin}: this is a {name} model; only ML Program (mlProgram) models are supported"
        ));
    }
    if !fields.contains(&ML_PROGRAM_FIELD) {
        return Err(unsupported!(
            "{origin}: the model is not an ML Program (it has no mlProgram); only ML Programs are supported"
        ));
    }
    let model = Model::decode(bytes)
        .map_err(|e| format_err!("{origin}: not a valid Core ML model protobuf ({e})"))?;
    // prost drops fields it does not know; re-encoding to a different length reveals that.
    if model.encoded_len() != bytes.len() {
        return Err(unsupported!(
            "{origin}: the model contains protobuf fields this version of coreml-compress does not know \
             ({} of {} bytes understood); refusing to rewrite it and lose them",
            model.encoded_len(),
            bytes.len()
        ));
    }
    Ok(model)
}

/// Calls `f` on every `Value` of a program: op attributes and input bindings (nested blocks
/// included), and the attributes of the program, its functions and blocks.
pub fn for_each_value_mut(
    program: &mut proto::mil_spec::Program,
    f: &mut impl FnMut(&mut proto::mil_spec::Value),
) {
    use proto::mil_spec::{argument::binding::Binding, Block};
    fn block(b: &mut Block, f: &mut impl FnMut(&mut proto::mil_spec::Value)) {
        b.attributes.values_mut().for_each(&mut *f);
        for op in &mut b.operations {
            op.attributes.values_mut().for_each(&mut *f);
            for arg in op.inputs.values_mut() {
                for binding in &mut arg.arguments {
                    if let Some(Binding::Value(v)) = &mut binding.binding {
                        f(v);
                    }
                }
            }
            for nested in &mut op.blocks {
                block(nested, f);
            }
        }
    }
    program.attributes.values_mut().for_each(&mut *f);
    for function in program.functions.values_mut() {
        function.attributes.values_mut().for_each(&mut *f);
        for b in function.block_specializations.values_mut() {
            block(b, f);
        }
    }
}

/// The program of an ML Program model.
pub fn program(model: &Model) -> Result<&proto::mil_spec::Program> {
    match &model.r#type {
        Some(proto::model::Type::MlProgram(p)) => Ok(p),
        None => Err(unsupported!("the model is not an ML Program")),
    }
}

pub fn program_mut(model: &mut Model) -> Result<&mut proto::mil_spec::Program> {
    match &mut model.r#type {
        Some(proto::model::Type::MlProgram(p)) => Ok(p),
        None => Err(unsupported!("the model is not an ML Program")),
    }
}

/// Serializes a model deterministically (fields in number order, map entries sorted by key).
pub fn encode_model(model: &Model) -> Vec<u8> {
    model.encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_neural_network_and_garbage() {
        // Field 1 (specificationVersion) = 4, field 500 (neuralNetwork) = empty message.
        let nn = [0x08, 0x04, 0xa2, 0x1f, 0x00];
        let err = decode_model(&nn, "m").unwrap_err().to_string();
        assert!(err.contains("neuralNetwork"), "{err}");
        let err = decode_model(&[0xff, 0xff, 0xff], "m")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a valid"), "{err}");
        let err = decode_model(&[0x08, 0x07], "m").unwrap_err().to_string();
        assert!(err.contains("not an ML Program"), "{err}");
    }

    #[test]
    fn refuses_unknown_fields() {
        let mut model = Model {
            specification_version: 9,
            ..Default::default()
        };
        model.r#type = Some(proto::model::Type::MlProgram(proto::mil_spec::Program {
            version: 1,
            ..Default::default()
        }));
        let mut bytes = encode_model(&model);
        assert!(decode_model(&bytes, "m").is_ok());
        bytes.extend_from_slice(&[0xb8, 0x06, 0x01]); // field 103, varint 1
        let err = decode_model(&bytes, "m").unwrap_err().to_string();
        assert!(err.contains("does not know"), "{err}");
    }
}
