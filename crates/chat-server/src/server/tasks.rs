//! Build step: the background tasks, each in the tracker the drain waits
//! for. Retention, gap repair, the cluster exchange (heartbeats, presence),
//! read receipts, typing events, presence events, the health watch and, when enabled,
//! notifications and the webhook's sender and membership feed.

use super::core::Background;
use crate::config::Config;
use crate::endpoint::health::{self, Readiness};
use crate::hub::{Hub, cluster, members, notifier, receipts, repair, typing};
use crate::store::{self, Retention};
use crate::webhook;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often gRPC health re-runs the readiness checks.
const HEALTH_CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// Spawns every background task into `tasks`; each ends on `shutdown`.
pub(super) fn spawn(
    config: &Config,
    background: Background,
    hub: &Arc<Hub>,
    readiness: &Arc<Readiness>,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) {
    tasks.spawn(store::retain(
        hub.store().clone(),
        Retention::from_config(&config.store),
        config.store.retention_interval,
        shutdown.clone(),
    ));
    tasks.spawn(repair::run(
        background.rooms,
        hub.store().clone(),
        background.repair,
        repair::TAIL_CHECK,
        shutdown.clone(),
    ));
    tasks.spawn(cluster::run(
        hub.clone(),
        background.stats,
        background.control,
        config.presence.heartbeat_interval,
        config.presence.expiry,
        shutdown.clone(),
    ));
    tasks.spawn(receipts::run(
        hub.clone(),
        receipts::INTERVAL,
        shutdown.clone(),
    ));
    tasks.spawn(typing::run(hub.clone(), typing::TICK, shutdown.clone()));
    tasks.spawn(members::run(hub.clone(), members::TICK, shutdown.clone()));
    tasks.spawn(health::watch(
        readiness.clone(),
        HEALTH_CHECK_INTERVAL,
        shutdown.clone(),
    ));
    if let Some(sender) = background.webhook {
        tasks.spawn(webhook::run(sender, hub.clone(), shutdown.clone()));
    }
    if let Some(memberships) = background.memberships {
        tasks.spawn(webhook::feed(hub.clone(), memberships, shutdown.clone()));
    }
    if config.notifications.enabled {
        tasks.spawn(notifier::run(
            hub.clone(),
            config.notifications.interval,
            config.notifications.text.clone(),
            shutdown.clone(),
        ));
    }
}
