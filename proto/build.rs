//! Generates the tonic/prost code for `slotd.v1` (needs `protoc`; the
//! README's set-up installs Debian's `protobuf-compiler`), plus the file
//! descriptor set that gRPC reflection serves.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    // The status messages double as `slotctl status --json` and travel
    // between agents inside leader calls: give them serde, not a mirror type.
    let serde = "#[derive(serde::Serialize, serde::Deserialize)]";
    tonic_prost_build::configure()
        .type_attribute(".slotd.v1.StatusReply", serde)
        .type_attribute(".slotd.v1.NodeStatus", serde)
        .type_attribute(".slotd.v1.StoreStatus", serde)
        .type_attribute(".slotd.v1.FailoverReply", serde)
        .type_attribute(".slotd.v1.DrainReply", serde)
        .type_attribute(".slotd.v1.RebalanceReply", serde)
        .type_attribute(".slotd.v1.PlannedMove", serde)
        .type_attribute(".slotd.v1.HistoryReply", serde)
        .type_attribute(".slotd.v1.HistoryEntry", serde)
        .type_attribute(".slotd.v1.ConfigReply", serde)
        .type_attribute(".slotd.v1.Setting", serde)
        .file_descriptor_set_path(out.join("slotd_descriptor.bin"))
        .compile_protos(&["proto/slotd/v1/slotd.proto"], &["proto"])?;
    Ok(())
}
