//! Generates the Rust types of `proto/chat/v1/chat.proto` without a system
//! `protoc`: `protox` parses the file, `tonic-prost-build` emits the messages
//! and the client, and `tonic-build`'s manual builder emits the server so
//! its Session stream can use [`SessionCodec`](src/codec.rs), which sends
//! pre-encoded frames (the other methods use the ordinary prost codec).
//!
//! The servers' methods are read from the compiled descriptors of
//! `chat.v1.ChatService` and `chat.v1.ChatApi` (name, input and output
//! types, streaming flags), so an RPC added to the `.proto` appears in its
//! server with no change here.
//! Only the deliberate overrides are written out: [`session_override`].

use heck::{ToSnakeCase, ToUpperCamelCase};
use prost_types::{FileDescriptorProto, MethodDescriptorProto, ServiceDescriptorProto};
use std::path::PathBuf;
use tonic_build::manual::{Builder, Method, Service};

/// The proto package the service and its messages live in.
const PACKAGE: &str = "chat.v1";
/// The services manual servers are generated for, each with its doc
/// comment: the live chat service and the server API for applications.
const SERVICES: &[(&str, &str)] = &[
    (
        "ChatService",
        "The live chat service, server side, sending pre-encoded frames.",
    ),
    ("ChatApi", "The server API for applications, server side."),
];
/// Where the generated messages of [`PACKAGE`] are, seen from the crate.
const MESSAGES_MODULE: &str = "crate::v1";
/// The codec of every method without an override.
const DEFAULT_CODEC: &str = "tonic_prost::ProstCodec";
/// Field number of `FileDescriptorProto.service` (descriptor.proto), the
/// first step of a method's path in `SourceCodeInfo`, where its comment is.
const SERVICE_FIELD: i32 = 6;
/// Field number of `ServiceDescriptorProto.method`, the path's third step.
const METHOD_FIELD: i32 = 2;

/// A method's output type and codec when they are not the generated message
/// and the prost codec.
struct Override {
    /// The Rust type the server sends.
    output_type: &'static str,
    /// The codec that writes it.
    codec_path: &'static str,
}

/// The project's one deliberate departure from the descriptor: Session sends
/// [`EncodedFrame`](src/lib.rs)s (a `ServerFrame` encoded once for all its
/// recipients) through [`SessionCodec`](src/codec.rs).
fn session_override(route_name: &str) -> Option<Override> {
    (route_name == "Session").then_some(Override {
        output_type: "crate::EncodedFrame",
        codec_path: "crate::codec::SessionCodec",
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    println!("cargo:rerun-if-changed={}", root.display());

    let fds = protox::compile([root.join("chat/v1/chat.proto")], [&root])?;
    let servers = SERVICES
        .iter()
        .map(|(name, comment)| server_service(&fds.file, name, comment))
        .collect::<Result<Vec<_>, _>>()?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_fds(fds)?;
    Builder::new()
        .build_client(false)
        .build_server(true)
        .compile(&servers);
    Ok(())
}

/// The manual server's description of service `name`, one method per RPC
/// of the descriptor, in the `.proto`'s order.
fn server_service(
    files: &[FileDescriptorProto],
    name: &str,
    comment: &str,
) -> Result<Service, String> {
    let (file, service_index, service) = find_service(files, name)?;
    let mut builder = Service::builder()
        .name(name)
        .package(PACKAGE)
        .comment(comment);
    for (method_index, method) in service.method.iter().enumerate() {
        let comment = method_comment(file, service_index, method_index);
        builder = builder.method(server_method(method, &comment)?);
    }
    Ok(builder.build())
}

/// The file declaring service `name` in [`PACKAGE`], the service's index in
/// it (for its source locations) and the service.
fn find_service<'a>(
    files: &'a [FileDescriptorProto],
    name: &str,
) -> Result<(&'a FileDescriptorProto, usize, &'a ServiceDescriptorProto), String> {
    files
        .iter()
        .filter(|file| file.package() == PACKAGE)
        .find_map(|file| {
            let (index, service) = file
                .service
                .iter()
                .enumerate()
                .find(|(_, service)| service.name() == name)?;
            Some((file, index, service))
        })
        .ok_or_else(|| format!("{PACKAGE}.{name} is not in the compiled descriptor"))
}

/// One RPC as the manual builder wants it: `rpc GetThing` becomes the trait
/// method `get_thing` on route `GetThing`.
fn server_method(method: &MethodDescriptorProto, comment: &str) -> Result<Method, String> {
    let route_name = method.name();
    let input_type = rust_type(method.input_type())?;
    let (output_type, codec_path) = match session_override(route_name) {
        Some(o) => (o.output_type.to_owned(), o.codec_path),
        None => (rust_type(method.output_type())?, DEFAULT_CODEC),
    };
    let mut builder = Method::builder()
        .name(route_name.to_snake_case())
        .route_name(route_name)
        .input_type(input_type)
        .output_type(output_type)
        .codec_path(codec_path)
        .comment(comment);
    if method.client_streaming() {
        builder = builder.client_streaming();
    }
    if method.server_streaming() {
        builder = builder.server_streaming();
    }
    Ok(builder.build())
}

/// The Rust path prost gives a message of [`PACKAGE`]: `.chat.v1.Outer.Inner`
/// is `crate::v1::outer::Inner`. A message from another package has no
/// generated type here, so it stops the build with a message saying so.
fn rust_type(proto_type: &str) -> Result<String, String> {
    let local = proto_type
        .strip_prefix('.')
        .and_then(|t| t.strip_prefix(PACKAGE))
        .and_then(|t| t.strip_prefix('.'))
        .ok_or_else(|| {
            format!("{proto_type} is not a message of {PACKAGE}: give it a Rust type in build.rs")
        })?;
    let mut parts: Vec<&str> = local.split('.').collect();
    let name = parts.pop().unwrap_or_default().to_upper_camel_case();
    let modules = parts
        .iter()
        .map(|outer| format!("::{}", outer.to_snake_case()));
    Ok(format!(
        "{MESSAGES_MODULE}{}::{name}",
        modules.collect::<String>()
    ))
}

/// The doc comment of a server method: the first sentence of the RPC's
/// comment in the `.proto`, pointing there for the rest.
fn method_comment(file: &FileDescriptorProto, service_index: usize, method_index: usize) -> String {
    let path = [
        SERVICE_FIELD,
        service_index as i32,
        METHOD_FIELD,
        method_index as i32,
    ];
    let leading = file
        .source_code_info
        .iter()
        .flat_map(|info| &info.location)
        .find(|location| location.path == path)
        .map(|location| location.leading_comments())
        .unwrap_or_default();
    let text = leading.split_whitespace().collect::<Vec<_>>().join(" ");
    match text
        .split_once(". ")
        .map_or(text.trim_end_matches('.'), |(first, _)| first)
    {
        "" => "See `proto/chat/v1/chat.proto`.".to_owned(),
        first => format!("{first}; see `proto/chat/v1/chat.proto`."),
    }
}
