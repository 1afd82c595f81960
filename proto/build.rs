//! Generates Rust code for the protos with protox (pure Rust, no system `protoc`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(["workload.proto", "node.proto"], ["proto"])?;
    // The Workload API's descriptors alone, for gRPC server reflection on the agent socket.
    let workload = protox::compile(["workload.proto"], ["proto"])?;
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("workload_descriptor_set.bin"),
        prost::Message::encode_to_vec(&workload),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
