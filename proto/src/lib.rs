//! `slotd-proto`: the `slotd.v1` gRPC services and messages, generated from
//! `proto/slotd/v1/slotd.proto`. No logic lives here.
//!
//! - `Peer`: agent to agent; openraft's RPC types as versioned binary payloads.
//! - `Admin`: operators (`slotctl`); typed throughout.

#![allow(clippy::all, missing_docs)]

pub mod v1 {
    tonic::include_proto!("slotd.v1");
}

/// The encoded `FileDescriptorSet` of `slotd.v1`, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("slotd_descriptor");
