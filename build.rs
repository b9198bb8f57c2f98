//! Compiles `proto/` with tonic-prost-build and emits a descriptor set for server reflection.
//! protoc comes from `$PROTOC` when set, otherwise from the vendored binary, so a fresh machine
//! needs no system protobuf package.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let protoc = match env::var_os("PROTOC") {
        Some(p) => PathBuf::from(p),
        None => protoc_bin_vendored::protoc_bin_path()?,
    };
    println!("cargo:rerun-if-env-changed=PROTOC");
    println!("cargo:rerun-if-changed=proto");
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    // Its Debug is written by hand (src/server/admin/access.rs): never the password.
    config.skip_debug(["ocloudview.atp.v1.SetUserPasswordRequest"]);
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .file_descriptor_set_path(out.join("atp_descriptor.bin"))
        .compile_with_config(
            config,
            &["proto/ocloudview/atp/v1/guest_agent.proto"],
            &["proto"],
        )?;
    Ok(())
}
