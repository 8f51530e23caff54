//! Compiles the example contracts with protox and writes their descriptor set for reflection.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time: a compiled build script may be reused for a checkout at another path.
    let root = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        "animalpb/animal.proto",
        "kvpb/kv.proto",
        "counterpb/counter.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }
    let fds = protox::compile(files, [&root])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("contracts.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
