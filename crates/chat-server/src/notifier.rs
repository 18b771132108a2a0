//! The periodic server notification to every client of this instance.

use crate::hub::Hub;
use crate::time::now_unix_ms;
use chat_proto::EncodedFrame;
use chat_proto::v1::{Notification, server_frame::Frame};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Sends `text` to every session every `interval` until `shutdown`.
pub async fn run(hub: Arc<Hub>, interval: Duration, text: String, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {
                // Encoded once; every session gets the same bytes.
                let frame = EncodedFrame::from(Frame::Notification(Notification {
                    text: text.clone(),
                    server_time_unix_ms: now_unix_ms(),
                }));
                let sent = hub.broadcast(&frame);
                tracing::debug!(sessions = sent, "notification sent");
            }
        }
    }
}
