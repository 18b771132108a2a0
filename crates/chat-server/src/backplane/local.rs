//! The in-process backplane: a single instance, so publishing is delivering
//! to the local sink. Nothing to install, nothing that can fail.

use super::{Backplane, BackplaneError, FrameSink, RoomFrame};
use crate::domain::validate::RoomName;
use futures::future::{BoxFuture, FutureExt, ready};
use std::sync::Arc;

/// Delivers every published frame straight to this instance's rooms.
pub struct LocalBackplane {
    sink: Arc<dyn FrameSink>,
}

impl LocalBackplane {
    /// A backplane that delivers to `sink`.
    pub fn new(sink: Arc<dyn FrameSink>) -> Self {
        LocalBackplane { sink }
    }
}

impl Backplane for LocalBackplane {
    fn name(&self) -> &'static str {
        "local"
    }

    // With one instance, every room is implicitly subscribed: the sink
    // delivers to whichever rooms have local members.
    fn subscribe<'a>(&'a self, _room: &'a RoomName) -> BoxFuture<'a, Result<(), BackplaneError>> {
        ready(Ok(())).boxed()
    }

    fn unsubscribe<'a>(&'a self, _room: &'a RoomName) -> BoxFuture<'a, Result<(), BackplaneError>> {
        ready(Ok(())).boxed()
    }

    fn publish(&self, frame: RoomFrame) -> BoxFuture<'_, Result<(), BackplaneError>> {
        // Delivered when polled, like the other backplanes, so it runs in
        // whatever span the caller gives the publish.
        async move {
            self.sink.deliver(&frame);
            Ok(())
        }
        .boxed()
    }

    // There are no other instances to tell.
    fn publish_control(&self, _control: bytes::Bytes) -> BoxFuture<'_, Result<(), BackplaneError>> {
        ready(Ok(())).boxed()
    }

    fn is_healthy(&self) -> bool {
        true
    }
}
