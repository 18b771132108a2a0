//! An OTLP/gRPC trace collector on a free port, plain or over TLS: what it
//! receives comes out of the channel.

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tokio::sync::mpsc;

struct Collector(mpsc::UnboundedSender<ExportTraceServiceRequest>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let _ = self.0.send(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// Starts one on 127.0.0.1; with `tls` (certificate and key, PEM), over TLS.
pub async fn start(
    tls: Option<(String, String)>,
) -> (
    std::net::SocketAddr,
    mpsc::UnboundedReceiver<ExportTraceServiceRequest>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let mut server = tonic::transport::Server::builder();
    if let Some((cert, key)) = tls {
        let identity = tonic::transport::Identity::from_pem(cert, key);
        server = server
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .unwrap();
    }
    tokio::spawn(
        server
            .add_service(TraceServiceServer::new(Collector(tx)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (addr, rx)
}

/// The names of the exported spans of `trace_id` (hex) received so far,
/// and how many spans were received in all, checking each export's
/// `service.name`.
pub fn span_names(
    exports: &mut mpsc::UnboundedReceiver<ExportTraceServiceRequest>,
    trace_id: &str,
    service: &str,
) -> (Vec<String>, usize) {
    let mut names = Vec::new();
    let mut all = 0;
    while let Ok(export) = exports.try_recv() {
        for resource in export.resource_spans {
            let name = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref())
                .map(|v| format!("{:?}", v.value));
            assert!(
                name.as_deref().is_some_and(|n| n.contains(service)),
                "{name:?}"
            );
            for span in resource.scope_spans.into_iter().flat_map(|s| s.spans) {
                all += 1;
                let hex: String = span.trace_id.iter().map(|b| format!("{b:02x}")).collect();
                if hex == trace_id {
                    names.push(span.name);
                }
            }
        }
    }
    names.sort();
    (names, all)
}
