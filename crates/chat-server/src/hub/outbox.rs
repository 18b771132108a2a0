//! The bounded outbound queue of one connection.
//!
//! Every producer (its own session loop, room fan-out, notifications) pushes
//! with `try_send`, never waiting. A full queue means the client does not
//! read fast enough: it is kicked as a slow consumer, its disconnect notice
//! jumps the queue, and the stream ends, so one slow client never holds
//! memory or delays anyone else.

use chat_proto::EncodedFrame;
use chat_proto::v1::{DisconnectNotice, DisconnectReason, server_frame::Frame};
use chat_util::lock;
use futures::Stream;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// What travels through the queue.
#[derive(Debug)]
enum Outgoing {
    /// A frame; more may follow.
    Frame(EncodedFrame),
    /// The last frame; the stream ends after it.
    Last(EncodedFrame),
}

/// The producing end, cheap to clone (one per room the connection is in).
#[derive(Clone, Debug)]
pub struct Outbox {
    tx: mpsc::Sender<Outgoing>,
    kick: Arc<Kick>,
}

#[derive(Debug)]
struct Kick {
    /// Taken by whoever closes the stream first.
    notice: Mutex<Option<oneshot::Sender<EncodedFrame>>>,
    /// Cancelled when the session must end; the session loop selects on it.
    ended: CancellationToken,
}

/// The consuming end: the response stream of the Session RPC.
#[derive(Debug)]
pub struct OutboxStream {
    rx: mpsc::Receiver<Outgoing>,
    notice: Option<oneshot::Receiver<EncodedFrame>>,
    done: bool,
}

/// Creates a connection's queue holding at most `capacity` frames.
pub fn outbox(capacity: usize) -> (Outbox, OutboxStream) {
    let (tx, rx) = mpsc::channel(capacity);
    let (notice_tx, notice_rx) = oneshot::channel();
    let outbox = Outbox {
        tx,
        kick: Arc::new(Kick {
            notice: Mutex::new(Some(notice_tx)),
            ended: CancellationToken::new(),
        }),
    };
    let stream = OutboxStream {
        rx,
        notice: Some(notice_rx),
        done: false,
    };
    (outbox, stream)
}

/// Encodes a disconnect notice.
pub fn disconnect_frame(reason: DisconnectReason, message: &str) -> EncodedFrame {
    EncodedFrame::from(Frame::Disconnect(DisconnectNotice {
        reason: reason as i32,
        message: message.to_string(),
        reconnect_after_ms: 0,
    }))
}

impl Outbox {
    /// Queues `frame` without waiting. On a full queue the connection is
    /// kicked as a slow consumer; returns whether the frame was queued.
    pub fn push(&self, frame: EncodedFrame) -> bool {
        match self.tx.try_send(Outgoing::Frame(frame)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.push_overflowed();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Kicks the connection as a slow consumer: what is queued for it
    /// exceeds its bound.
    pub fn push_overflowed(&self) {
        self.kick(disconnect_frame(
            DisconnectReason::SlowConsumer,
            "the client did not read its stream fast enough; reconnect to catch up",
        ));
    }

    /// Ends the stream now: `notice` is sent before anything still queued,
    /// and the session loop is told to stop.
    pub fn kick(&self, notice: EncodedFrame) {
        let sender = lock(&self.kick.notice).take();
        if let Some(sender) = sender {
            // The stream may be gone already; then nobody needs the notice.
            let _ = sender.send(notice);
        }
        self.kick.ended.cancel();
    }

    /// Ends the stream gracefully: everything queued is sent, then `notice`.
    /// Falls back to [`Outbox::kick`] when the queue is full.
    pub fn finish(&self, notice: EncodedFrame) {
        match self.tx.try_send(Outgoing::Last(notice)) {
            Ok(()) => self.kick.ended.cancel(),
            Err(mpsc::error::TrySendError::Full(Outgoing::Last(notice))) => self.kick(notice),
            Err(_) => self.kick.ended.cancel(),
        }
    }

    /// Cancelled once the connection was kicked or finished.
    pub fn ended(&self) -> &CancellationToken {
        &self.kick.ended
    }

    /// Whether the connection was kicked or finished.
    pub fn is_ended(&self) -> bool {
        self.kick.ended.is_cancelled()
    }
}

impl Stream for OutboxStream {
    type Item = EncodedFrame;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        // A kick's notice goes before whatever is still queued.
        if let Some(notice) = self.notice.as_mut() {
            match Pin::new(notice).poll(cx) {
                Poll::Ready(Ok(frame)) => {
                    self.done = true;
                    return Poll::Ready(Some(frame));
                }
                Poll::Ready(Err(_)) => self.notice = None,
                Poll::Pending => {}
            }
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(Outgoing::Frame(frame))) => Poll::Ready(Some(frame)),
            Poll::Ready(Some(Outgoing::Last(frame))) => {
                self.done = true;
                Poll::Ready(Some(frame))
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use futures::StreamExt;

    fn frame(n: u8) -> EncodedFrame {
        EncodedFrame(Bytes::from(vec![n]))
    }

    #[tokio::test]
    async fn full_queue_kicks_with_notice_first() {
        let (outbox, mut stream) = outbox(2);
        assert!(outbox.push(frame(1)));
        assert!(outbox.push(frame(2)));
        assert!(!outbox.is_ended());
        assert!(!outbox.push(frame(3)), "third frame overflows");
        assert!(outbox.is_ended());
        let first = stream.next().await.unwrap();
        let decoded = <chat_proto::v1::ServerFrame as prost::Message>::decode(first.0).unwrap();
        match decoded.frame {
            Some(Frame::Disconnect(n)) => {
                assert_eq!(n.reason, DisconnectReason::SlowConsumer as i32)
            }
            other => panic!("expected the notice, got {other:?}"),
        }
        assert!(
            stream.next().await.is_none(),
            "stream ends after the notice"
        );
    }

    #[tokio::test]
    async fn finish_drains_then_ends() {
        let (outbox, mut stream) = outbox(4);
        outbox.push(frame(1));
        outbox.push(frame(2));
        outbox.finish(frame(9));
        assert!(outbox.is_ended());
        let got: Vec<_> = (&mut stream).map(|f| f.0[0]).collect().await;
        assert_eq!(got, vec![1, 2, 9]);
        assert!(!outbox.push(frame(3)) || stream.next().await.is_none());
    }
}
