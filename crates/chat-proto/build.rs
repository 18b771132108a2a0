//! Generates the Rust types of `proto/chat/v1/chat.proto` without a system
//! `protoc`: `protox` parses the file, `tonic-prost-build` emits the messages
//! and the client, and `tonic-build`'s manual builder emits the server so
//! its Session stream can use [`SessionCodec`](src/codec.rs), which sends
//! pre-encoded frames (History, unary, uses the ordinary prost codec).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    println!("cargo:rerun-if-changed={}", root.display());

    let fds = protox::compile([root.join("chat/v1/chat.proto")], [&root])?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_fds(fds)?;

    let session = tonic_build::manual::Method::builder()
        .name("session")
        .route_name("Session")
        .input_type("crate::v1::ClientFrame")
        .output_type("crate::EncodedFrame")
        .codec_path("crate::codec::SessionCodec")
        .client_streaming()
        .server_streaming()
        .comment("Opens the client's session stream; see `proto/chat/v1/chat.proto`.")
        .build();
    let history = tonic_build::manual::Method::builder()
        .name("history")
        .route_name("History")
        .input_type("crate::v1::HistoryRequest")
        .output_type("crate::v1::HistoryResponse")
        .codec_path("tonic_prost::ProstCodec")
        .comment("Pages a room's stored history; see `proto/chat/v1/chat.proto`.")
        .build();
    let service = tonic_build::manual::Service::builder()
        .name("ChatService")
        .package("chat.v1")
        .comment("The live chat service, server side, sending pre-encoded frames.")
        .method(session)
        .method(history)
        .build();
    tonic_build::manual::Builder::new()
        .build_client(false)
        .build_server(true)
        .compile(&[service]);
    Ok(())
}
