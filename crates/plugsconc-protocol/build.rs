//! Compiles go-plugin's internal services from `proto/pluginpb` with protox (no protoc needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time: a compiled build script may be reused for a checkout at another path.
    let root = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let file = "pluginpb/plugin.proto";
    println!("cargo:rerun-if-changed={}", root.join(file).display());
    let fds = protox::compile([file], [&root])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
