//! The label sets of the metrics: each an enum, so a value outside its set
//! does not compile, and `/metrics` lists every value (a zero is a
//! sample too, so dashboards need no `absent()`).

/// A closed set of label values.
pub trait Label: Copy + 'static {
    /// Every value, in the order `/metrics` lists them.
    const ALL: &'static [Self];
    /// The value as it appears in the exposition.
    fn as_str(self) -> &'static str;
    /// Its position in [`Label::ALL`].
    fn index(self) -> usize;
}

/// Every value of the label set `L`, as exposed.
pub fn values<L: Label>() -> impl Iterator<Item = &'static str> {
    L::ALL.iter().map(|value| value.as_str())
}

/// Declares a label enum: its variants, each with the text it exposes.
macro_rules! label_set {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl Label for $name {
            const ALL: &'static [Self] = &[$($name::$variant,)+];

            fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            fn index(self) -> usize {
                self as usize
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

label_set! {
    /// Why a session ended: `chat_connections_closed_total{reason}`.
    CloseReason {
        /// The client ended its stream.
        ClientHungUp => "client_hung_up",
        /// The transport failed under the session.
        ConnectionLost => "connection_lost",
        /// Its outbound queue overflowed.
        SlowConsumer => "slow_consumer",
        /// Nothing arrived within the idle timeout.
        IdleTimeout => "idle_timeout",
        /// Its token expired.
        TokenExpired => "token_expired",
        /// It reached `session.max_lifetime`.
        MaxLifetime => "max_lifetime",
        /// It sent something that is not a valid frame.
        ProtocolViolation => "protocol_violation",
        /// The server is draining.
        ServerShuttingDown => "server_shutting_down",
        /// An application or operator ended it through the server API.
        Disconnected => "disconnected",
    }
}

label_set! {
    /// Why a token was refused: `chat_auth_failures_total{reason}`.
    AuthFailure {
        /// No token was sent.
        Missing => "missing",
        /// Not a well-formed token.
        Malformed => "malformed",
        /// Past its `exp`.
        Expired => "expired",
        /// Signed with another algorithm than the configured one.
        Algorithm => "algorithm",
        /// The signature does not verify.
        Signature => "signature",
        /// Another issuer.
        Issuer => "issuer",
        /// Another audience.
        Audience => "audience",
        /// A claim is missing or unusable.
        Claims => "claims",
        /// Its `nbf` is still ahead.
        NotYetValid => "not_yet_valid",
        /// No key to check it with.
        Key => "key",
    }
}

label_set! {
    /// Which limit refused a connection: `chat_connections_refused_total{limit}`.
    ConnectionLimit {
        /// The instance's total.
        Total => "total",
        /// The source address's share.
        Address => "address",
        /// The user's share.
        User => "user",
        /// The instance's rate of new sessions.
        Rate => "rate",
    }
}

label_set! {
    /// What a rate limit refused: `chat_rate_limited_total{action}`.
    RateLimitedAction {
        /// Sending a message.
        Send => "send",
        /// Joining a room.
        Join => "join",
        /// Reading history.
        History => "history",
        /// Saying one is typing.
        Typing => "typing",
        /// Marking a room read.
        Read => "read",
        /// A server API call.
        Api => "api",
    }
}

label_set! {
    /// Why webhook events left the queue undelivered:
    /// `chat_webhook_events_dropped_total{reason}`.
    WebhookDrop {
        /// Older than `webhooks.max_age`.
        Expired => "expired",
        /// Beyond `webhooks.max_pending` (the oldest go).
        Overflowed => "overflowed",
        /// Its message was deleted by retention before it was sent.
        Gone => "gone",
        /// A membership change found the in-memory hand-off to the store
        /// full (or the store down at shutdown).
        Busy => "busy",
        /// The receiver refused it (400, 413, 415 or 422) 3 times when it
        /// was sent alone, while it took other events.
        Rejected => "rejected",
    }
}

label_set! {
    /// A server API call: `chat_api_calls_total{call}`,
    /// `chat_api_errors_total{call}`.
    ApiCall {
        /// Posting a message as a bot or the system.
        Post => "post",
        /// Listing rooms.
        Rooms => "rooms",
        /// Listing a room's members.
        Members => "members",
        /// Reading a room's history.
        History => "history",
        /// Ending a user's sessions.
        Disconnect => "disconnect",
        /// Looking a user up.
        User => "user",
        /// Taking a user out of a room.
        Remove => "remove",
        /// Banning a user from a room.
        Ban => "ban",
        /// Lifting a ban.
        LiftBan => "lift_ban",
        /// Listing a room's bans.
        Bans => "bans",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_follow_all() {
        for (i, value) in CloseReason::ALL.iter().enumerate() {
            assert_eq!(value.index(), i);
        }
        assert_eq!(AuthFailure::ALL.len(), 10);
        assert_eq!(AuthFailure::NotYetValid.as_str(), "not_yet_valid");
        assert_eq!(RateLimitedAction::History.to_string(), "history");
    }
}

label_set! {
    /// What a join asked the store: `chat_join_store_queries_total{query}`
    /// (one statement each; a batched statement counts once).
    JoinQuery {
        /// The joiners' read states and bans, for up to a batch of joins.
        JoinState => "join_state",
        /// A room's latest sequence (a room this instance did not serve).
        LatestSequence => "latest_sequence",
        /// A resuming joiner's backlog.
        Backlog => "backlog",
    }
}
