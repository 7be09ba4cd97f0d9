//! model.mlmodel decoding: any bytes give a model or an error, never a panic; an accepted model
//! encodes to bytes that decode and encode to the same bytes (compared as bytes: NaN weights
//! differ from themselves).
#![no_main]

use coreml_compress::format::spec::{decode_model, encode_model};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(model) = decode_model(data, "fuzz") {
        let bytes = encode_model(&model);
        let again = decode_model(&bytes, "fuzz").expect("an encoded model decodes");
        assert_eq!(encode_model(&again), bytes);
    }
});
