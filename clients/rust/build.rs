//! Compiles `proto/readstate/v1/readstate.proto` (the repository's, two levels up)
//! with protox — no `protoc` needed — into the tonic client (no server code).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../../proto");
    let fds = protox::compile(["readstate/v1/readstate.proto"], ["../../proto"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
