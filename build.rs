//! Compiles the Core ML schema in proto/ with a pure-Rust protobuf compiler (no protoc needed).
fn main() {
    let files = [
        "proto/Model.proto",
        "proto/FeatureTypes.proto",
        "proto/MIL.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let descriptors = protox::compile(files, ["proto"]).expect("the schema in proto/ compiles");
    prost_build::Config::new()
        // Sorted maps make the serialized bytes deterministic (protobuf's deterministic mode).
        .btree_map(["."])
        .compile_fds(descriptors)
        .expect("prost code generation succeeds");
}
