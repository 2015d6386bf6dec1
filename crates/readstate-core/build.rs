//! Compiles the workspace's `proto/readstate/v1/readstate.proto` with protox (no protoc needed) into
//! the tonic server and client code, and writes the encoded descriptor set that
//! server reflection serves.

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../../proto");
    // sqlx::migrate! embeds the migration files; a new one must rebuild the crate.
    println!("cargo:rerun-if-changed=../../migrations");
    let descriptors = protox::compile(["readstate/v1/readstate.proto"], ["../../proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("readstate_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
