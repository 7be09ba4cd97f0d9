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

/// Reads the field at `*at`, leaving `*at` at its payload: returns its tag (number and wire type)
/// and where the field ends.
fn read_field(bytes: &[u8], at: &mut usize) -> Option<(u64, usize)> {
    let tag = read_varint(bytes, at)?;
    let len = match tag & 7 {
        0 => {
            read_varint(bytes, at)?;
            0
        }
        1 => 8,
        2 => usize::try_from(read_varint(bytes, at)?).ok()?,
        5 => 4,
        _ => return None,
    };
    let end = at.checked_add(len).filter(|&end| end <= bytes.len())?;
    Some((tag, end))
}

/// The field numbers present at the top level of a serialized message.
fn top_level_fields(bytes: &[u8]) -> Option<Vec<u64>> {
    let mut fields = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let (tag, end) = read_field(bytes, &mut at)?;
        at = end;
        fields.push(tag >> 3);
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
    // prost drops fields it does not know; re-encoding to a different length than the input's
    // (both in upb's form, whose map entries always hold key and value) reveals that.
    let understood = encode_model(&model).len();
    let mut canonical = Vec::with_capacity(bytes.len());
    let given = canonicalize(bytes, Msg::Model, &mut canonical).map(|()| canonical.len());
    if given != Some(understood) {
        return Err(unsupported!(
            "{origin}: the model contains protobuf fields this version of coreml-compress does not know \
             ({understood} of {} bytes understood); refusing to rewrite it and lose them",
            given.unwrap_or(bytes.len())
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

/// The specification version that introduced an opset.
pub fn opset_spec_version(opset: &str) -> Option<i32> {
    Some(match opset {
        "CoreML3" => 4,
        "CoreML4" => 5,
        "CoreML5" => 6,
        "CoreML6" => 7,
        "CoreML7" => 8,
        "CoreML8" => 9,
        "CoreML9" => 10,
        _ => return None,
    })
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

/// Serializes a model exactly as coremltools does (`SerializeToString(deterministic=True)` with
/// upb, Python protobuf's engine): fields in number order, and map entries always holding both key
/// and value, sorted by key bytes except that a key sorts *after* the keys it is a prefix of
/// ("pad_type" before "pad"). prost already orders fields by number but writes maps in `String`
/// order and leaves default keys and values out of entries, so its bytes are rewritten.
pub fn encode_model(model: &Model) -> Vec<u8> {
    let bytes = model.encode_to_vec();
    let mut out = Vec::with_capacity(bytes.len());
    match canonicalize(&bytes, Msg::Model, &mut out) {
        Some(()) => out,
        // Unreachable for prost's own output; its bytes are still an equivalent encoding.
        None => bytes,
    }
}

/// The messages on the way from `Model` to a map field, for [`canonicalize`].
#[derive(Clone, Copy)]
enum Msg {
    Model,
    ModelDescription,
    Metadata,
    Program,
    Function,
    Block,
    Operation,
    Argument,
    ArgumentBinding,
    NamedValueType,
    ValueType,
    /// ListType, TupleType and StateType: field 1 is a ValueType.
    ValueTypeWrapper,
    DictionaryType,
    TensorType,
    Value,
    ImmediateValue,
    /// TupleValue and ListValue: field 1 is a repeated Value.
    Values,
    DictionaryValue,
    KeyValuePair,
}

enum Field {
    Message(Msg),
    /// A `map<string, V>`, with `V` a message (`Some`) or a string (`None`).
    Map(Option<Msg>),
    /// Anything without maps inside; copied as is.
    Other,
}

/// The schema of proto/*.proto, restricted to the fields that lead to maps.
fn field(msg: Msg, number: u64) -> Field {
    use Field::{Map, Message as M};
    use Msg::*;
    match (msg, number) {
        (Model, 2) => M(ModelDescription),
        (Model, 502) => M(Program),
        (ModelDescription, 100) => M(Metadata),
        (Metadata, 100) => Map(None),
        (Program, 2) => Map(Some(Function)),
        (Function, 3) => Map(Some(Block)),
        (Operation, 2) => Map(Some(Argument)),
        (Program | Function | Block | TensorType, 4) | (Operation, 5) => Map(Some(Value)),
        (Function | Block, 1) | (Operation, 3) => M(NamedValueType),
        (Block, 3) => M(Operation),
        (Operation, 4) => M(Block),
        (Argument, 1) => M(ArgumentBinding),
        (ArgumentBinding, 2) | (Values, 1) | (KeyValuePair, 1 | 2) => M(Value),
        (NamedValueType | Value, 2) | (ValueTypeWrapper, 1) | (DictionaryType, 1 | 2) => {
            M(ValueType)
        }
        (ValueType, 1) => M(TensorType),
        (ValueType, 2 | 3 | 5) => M(ValueTypeWrapper),
        (ValueType, 4) => M(DictionaryType),
        (Value, 3) => M(ImmediateValue),
        (ImmediateValue, 2 | 3) => M(Values),
        (ImmediateValue, 4) => M(DictionaryValue),
        (DictionaryValue, 1) => M(KeyValuePair),
        _ => Field::Other,
    }
}

fn write_varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn write_len_delimited(tag: u64, payload: &[u8], out: &mut Vec<u8>) {
    write_varint(tag, out);
    write_varint(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

/// upb's deterministic order of map keys: bytewise, but a key after the keys it is a prefix of.
fn upb_key_order(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    let common = a.len().min(b.len());
    a[..common]
        .cmp(&b[..common])
        .then_with(|| b.len().cmp(&a.len()))
}

/// Appends the upb encoding of the serialized message `bytes` of type `msg` to `out`.
fn canonicalize(bytes: &[u8], msg: Msg, out: &mut Vec<u8>) -> Option<()> {
    // The entries (key, tag, encoded entry) of the map field being read.
    let mut entries: Vec<(&[u8], u64, Vec<u8>)> = Vec::new();
    let flush = |entries: &mut Vec<(&[u8], u64, Vec<u8>)>, out: &mut Vec<u8>| {
        entries.sort_by(|a, b| upb_key_order(a.0, b.0));
        for (_, tag, entry) in entries.drain(..) {
            write_len_delimited(tag, &entry, out);
        }
    };
    let mut at = 0;
    while at < bytes.len() {
        let start = at;
        let (tag, end) = read_field(bytes, &mut at)?;
        let payload = &bytes[at..end];
        at = end;
        let kind = if tag & 7 == 2 {
            field(msg, tag >> 3)
        } else {
            Field::Other
        };
        if !matches!(kind, Field::Map(_)) || entries.last().is_some_and(|e| e.1 != tag) {
            flush(&mut entries, out);
        }
        match kind {
            Field::Other => out.extend_from_slice(&bytes[start..end]),
            Field::Message(sub) => {
                let mut canonical = Vec::with_capacity(payload.len());
                canonicalize(payload, sub, &mut canonical)?;
                write_len_delimited(tag, &canonical, out);
            }
            Field::Map(value_msg) => {
                let (key, entry) = map_entry(payload, value_msg)?;
                entries.push((key, tag, entry));
            }
        }
    }
    flush(&mut entries, out);
    Some(())
}

/// The key of a serialized map entry and the entry's upb encoding: key then value, both written
/// even when empty (prost leaves those out).
fn map_entry(bytes: &[u8], value_msg: Option<Msg>) -> Option<(&[u8], Vec<u8>)> {
    let (mut key, mut value): (&[u8], &[u8]) = (&[], &[]);
    let mut at = 0;
    while at < bytes.len() {
        let (tag, end) = read_field(bytes, &mut at)?;
        match tag {
            0x0a => key = &bytes[at..end],
            0x12 => value = &bytes[at..end],
            _ => return None,
        }
        at = end;
    }
    let mut entry = Vec::with_capacity(bytes.len() + 4);
    write_len_delimited(0x0a, key, &mut entry);
    match value_msg {
        Some(msg) => {
            let mut canonical = Vec::with_capacity(value.len());
            canonicalize(value, msg, &mut canonical)?;
            write_len_delimited(0x12, &canonical, &mut entry);
        }
        None => write_len_delimited(0x12, value, &mut entry),
    }
    Some((key, entry))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_hex(hex: &str) -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Written by coremltools 9.0's protobuf (upb, Python protobuf 7.x) with
    /// `SerializeToString(deterministic=True)`: a model with prefix keys (`pad_type`/`pad`, `ct.v`/`ct`,
    /// …) in every map of the schema at several depths, empty keys and values in map entries, and a
    /// FeatureType with both `multiArrayType` (5) and `isOptional` (1000).
    const UPB_MODEL: &[&str] = &[
        "080912360a120a01781a0d2a080a02010310908004c03e01a2061fa2060b0a0463742e761203392e30a206060a026374",
        "1200a206050a00120165b21ff403080112cf030a046d61696e12c6030a160a017812110a0f22060a026969120022050a",
        "016912001207436f72654d4c371a87030a07436f72654d4c3712fb021201791af5020a04636f6e76120d0a0462696173",
        "12050a030a017612110a087061645f7479706512050a030a0176120c0a0370616412050a030a0176120a0a017812050a",
        "030a017612040a0012001a090a017912040a02100122541a430a03616464120b0a02787812050a030a0171120a0a0178",
        "12050a030a017212230a0179121e0a1c121a12110a0f22060a027474120022050a017412002a050a0177104022060a02",
        "7070120022050a017012002a730a0164126e1a6c226a0a680a1d121b12190a170a1522090a026b3212030a017822080a",
        "016b12030a01781247122822260a110a0f22060a027575120022050a0175120012110a0f22060a027777120022050a01",
        "7712001a1b1a190a1712152a130a110a0f22060a02735f120022050a017312002a270a066e616d655f74121d1a1b1219",
        "0a1712151a130a110a0f22060a027a7a120022050a017a12002a2c0a046e616d65122412190a17080222090a02616212",
        "030a013122080a016112030a01321a070a0522030a01631a0a0a06436f72654d4c120022060a026364120022050a0163",
        "1200120c0a026d6112061a040a00120022060a026249120022080a016212030a0162",
    ];

    #[test]
    fn encodes_like_upb() {
        let upb = from_hex(&UPB_MODEL.concat());
        let model = decode_model(&upb, "m").unwrap();
        assert_ne!(
            model.encode_to_vec(),
            upb,
            "prost alone would already match"
        );
        assert_eq!(encode_model(&model), upb);
    }

    #[test]
    fn orders_map_keys_like_upb() {
        // The order upb gave these keys of an Operation's inputs.
        let upb = [
            "Z", "a\0", "aB", "aa", "abc", "abd", "abÿ", "ab", "a", "b", "pac", "pad_type", "padx",
            "pad", "pae", "zzz", "zz", "z", "\x7f", "é", "",
        ];
        let mut keys = upb;
        keys.sort();
        keys.sort_by(|a, b| upb_key_order(a.as_bytes(), b.as_bytes()));
        assert_eq!(keys, upb);

        // The same through encode_model, from a model built here.
        let op = proto::mil_spec::Operation {
            inputs: upb
                .iter()
                .map(|k| (k.to_string(), Default::default()))
                .collect(),
            ..Default::default()
        };
        let block = proto::mil_spec::Block {
            operations: vec![op],
            ..Default::default()
        };
        let function = proto::mil_spec::Function {
            block_specializations: [("CoreML7".to_string(), block)].into(),
            ..Default::default()
        };
        let model = Model {
            r#type: Some(proto::model::Type::MlProgram(proto::mil_spec::Program {
                functions: [("main".to_string(), function)].into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        let bytes = encode_model(&model);
        // Each input is `12 len 0a len key 12 00` (an empty Argument, written out as upb does).
        let mut at = 0;
        let mut seen = Vec::new();
        while let Some(i) = bytes[at..].windows(2).position(|w| w == [0x12, 0x00]) {
            let end = at + i;
            let key_start = bytes[..end].iter().rposition(|&b| b == 0x0a).unwrap() + 2;
            seen.push(
                std::str::from_utf8(&bytes[key_start..end])
                    .unwrap()
                    .to_string(),
            );
            at = end + 2;
        }
        assert_eq!(seen, upb);
        assert_eq!(decode_model(&bytes, "m").unwrap(), model);
    }

    #[test]
    fn rejects_malformed_input_without_panicking() {
        for bytes in [
            &[0xb2, 0x1f, 0x05, 0x12][..],
            &[0xb2, 0x1f, 0x02, 0x12, 0x7f],
            &[0x0f],
        ] {
            assert!(canonicalize(bytes, Msg::Model, &mut Vec::new()).is_none());
        }
    }

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
