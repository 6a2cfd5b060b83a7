//! Generates the tonic/prost code for `slotd.v1` (needs `protoc`; the
//! README's set-up installs Debian's `protobuf-compiler`), plus the file
//! descriptor set that gRPC reflection serves.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("slotd_descriptor.bin"))
        .compile_protos(&["proto/slotd/v1/slotd.proto"], &["proto"])?;
    Ok(())
}
