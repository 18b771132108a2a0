//! The periodic server notification to every client of this instance.

use super::Hub;
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
                // Each instance notifies only its own clients, so every
                // client gets one per interval however many instances run.
                let sent = hub.notify_local(&text);
                tracing::debug!(sessions = sent, "notification sent");
            }
        }
    }
}
