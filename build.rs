//! Compiles the Core ML schema in proto/ with a pure-Rust protobuf compiler (no protoc needed),
//! and names the platform-specific code paths (ARCHITECTURE.md, "Platforms").
fn main() {
    platform_cfgs();
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

/// `x86_f16c`: this project's own F16C lanes (x86-64); `linux_syscalls`: madvise hints and other
/// Linux-only calls. The `portable` feature turns both off, so x86-64 Linux runs what other
/// platforms run.
fn platform_cfgs() {
    println!("cargo::rustc-check-cfg=cfg(x86_f16c)");
    println!("cargo::rustc-check-cfg=cfg(linux_syscalls)");
    let portable = std::env::var_os("CARGO_FEATURE_PORTABLE").is_some();
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if !portable && arch == "x86_64" {
        println!("cargo::rustc-cfg=x86_f16c");
    }
    if !portable && os == "linux" {
        println!("cargo::rustc-cfg=linux_syscalls");
    }
}
