//! A session driven by hand, below the client library.

use super::WAIT;
use chat_client::proto::chat_service_client::ChatServiceClient;
use chat_client::proto::{ClientFrame, ServerFrame, client_frame::Request, server_frame::Frame};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

/// A session driven by hand, below the client library: for clients that
/// misbehave (never read, never hang up) and for frames the library
/// would not send.
pub struct RawSession {
    /// The request stream; dropping it ends the client's half.
    pub tx: mpsc::Sender<ClientFrame>,
    /// The server's frames.
    pub stream: Streaming<ServerFrame>,
}

impl RawSession {
    pub async fn open(url: &str, name: &str) -> Result<RawSession, tonic::Status> {
        RawSession::open_with(url, name, &[]).await
    }

    /// Opens a session whose call carries `metadata` too.
    pub async fn open_with(
        url: &str,
        name: &str,
        metadata: &[(&'static str, &str)],
    ) -> Result<RawSession, tonic::Status> {
        let mut client = ChatServiceClient::connect(url.to_string())
            .await
            .expect("transport connects");
        let (tx, rx) = mpsc::channel(64);
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        request
            .metadata_mut()
            .insert("chat-name", name.parse().expect("ascii name"));
        for (key, value) in metadata {
            request
                .metadata_mut()
                .insert(*key, value.parse().expect("ascii metadata"));
        }
        let stream = client.session(request).await?.into_inner();
        Ok(RawSession { tx, stream })
    }

    pub async fn send(&self, request_id: u64, request: Request) {
        self.send_traced(request_id, "", request).await;
    }

    /// Sends a request carrying `traceparent`.
    pub async fn send_traced(&self, request_id: u64, traceparent: &str, request: Request) {
        self.tx
            .send(ClientFrame {
                request_id,
                traceparent: traceparent.to_string(),
                request: Some(request),
            })
            .await
            .expect("request stream open");
    }

    /// The next frame, bounded.
    pub async fn next(&mut self) -> Option<Frame> {
        tokio::time::timeout(WAIT, self.stream.message())
            .await
            .expect("a frame within the wait")
            .ok()
            .flatten()
            .and_then(|f| f.frame)
    }

    /// Reads until the stream ends; returns every frame.
    pub async fn drain(&mut self) -> Vec<Frame> {
        let mut frames = Vec::new();
        tokio::time::timeout(WAIT, async {
            while let Ok(Some(f)) = self.stream.message().await {
                frames.extend(f.frame);
            }
        })
        .await
        .expect("the stream ends within the wait");
        frames
    }
}
