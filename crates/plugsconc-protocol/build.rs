//! Compiles go-plugin's internal services (`proto/pluginpb`) and plugsconc's host services
//! (`proto/hostpb`) with protox (no protoc needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time: a compiled build script may be reused for a checkout at another path.
    let root = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = ["pluginpb/plugin.proto", "hostpb/host.proto"];
    for file in files {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }
    let fds = protox::compile(files, [&root])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
