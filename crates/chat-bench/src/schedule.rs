//! The workload's shape, step by step as in the peer's "Workload
//! definition": which room each client is in, which clients send, when
//! message `k` is due, and the message's text and client message id.
//!
//! The send time travels in the client message id
//! (`s<sender>#<seq>@<send ns>`): the server echoes it bit-exactly in every
//! delivery, like load.js's `clientTs`, while the text stays exactly
//! load.js's (`s<sender>#<seq>|` padded with `x` to `--text-bytes`). The
//! nanoseconds also keep the id unique when the same server serves
//! several runs (the server would drop a repeated id as a retry).

/// Room `r`'s name: `room-` and `r` zero-padded to 6 digits.
pub fn room_name(r: u64) -> String {
    format!("room-{r:06}")
}

/// The open-loop plan derived from the parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Plan {
    /// Rooms.
    pub rooms: u64,
    /// Clients per room.
    pub cpr: u64,
    /// Senders per room.
    pub spr: u64,
    /// Messages per second per sender.
    pub rate: f64,
    /// Messages each sender sends: `round(rate × duration)`.
    pub per_sender: u64,
}

impl Plan {
    /// The plan for these parameters.
    pub fn new(rooms: u64, cpr: u64, spr: u64, rate: f64, duration_s: f64) -> Plan {
        Plan {
            rooms,
            cpr,
            spr,
            rate,
            per_sender: (rate * duration_s).round() as u64,
        }
    }

    /// `N`: every client.
    pub fn clients(&self) -> u64 {
        self.rooms * self.cpr
    }

    /// `S`: every sender.
    pub fn senders(&self) -> u64 {
        self.rooms * self.spr
    }

    /// `M`: every message.
    pub fn messages(&self) -> u64 {
        self.senders() * self.per_sender
    }

    /// Client `i`'s room.
    pub fn room_of_client(&self, i: u64) -> u64 {
        i / self.cpr
    }

    /// Sender `s`'s room.
    pub fn room_of_sender(&self, s: u64) -> u64 {
        s / self.spr
    }

    /// Sender `s`'s client index (the room's first `spr` clients send).
    pub fn client_of_sender(&self, s: u64) -> u64 {
        self.room_of_sender(s) * self.cpr + s % self.spr
    }

    /// Nanoseconds between two consecutive messages of the aggregate
    /// stream, `1 / (S × rate)` s; 0 when nothing is sent.
    pub fn interval_ns(&self) -> f64 {
        let s = self.senders() as f64;
        if s > 0.0 && self.rate > 0.0 {
            1e9 / (s * self.rate)
        } else {
            0.0
        }
    }

    /// Message `k`: its sender, its sequence number, and when it is due
    /// (nanoseconds after `t0`).
    pub fn message(&self, k: u64) -> (u64, u64, u64) {
        let s = self.senders().max(1);
        (k % s, k / s, (k as f64 * self.interval_ns()).round() as u64)
    }

    /// The message index of sender `s`'s message `seq`.
    pub fn index(&self, sender: u64, seq: u64) -> u64 {
        seq * self.senders() + sender
    }

    /// How long the sending lasts, `M / (S × rate)` seconds.
    pub fn send_window_s(&self) -> f64 {
        if self.messages() > 0 {
            self.messages() as f64 / (self.senders() as f64 * self.rate)
        } else {
            0.0
        }
    }

    /// Offered deliveries per second: `S × rate × CPR`.
    pub fn offered_deliveries_per_s(&self) -> f64 {
        self.senders() as f64 * self.rate * self.cpr as f64
    }
}

/// The text: exactly `text_bytes` ASCII bytes, `s<sender>#<seq>|` padded
/// with `x` (truncated if longer), as load.js's `makeText`.
pub fn text(sender: u64, seq: u64, text_bytes: usize) -> String {
    let mut t = format!("s{sender}#{seq}|");
    if t.len() < text_bytes {
        t.extend(std::iter::repeat_n('x', text_bytes - t.len()));
    }
    t.truncate(text_bytes);
    t
}

/// The client message id carrying the send time.
pub fn message_id(sender: u64, seq: u64, sent_ns: u64) -> String {
    format!("s{sender}#{seq}@{sent_ns}")
}

/// Parses [`message_id`]: `(sender, seq, sent_ns)`.
pub fn parse_message_id(id: &str) -> Option<(u64, u64, u64)> {
    let rest = id.strip_prefix('s')?;
    let (sender, rest) = rest.split_once('#')?;
    let (seq, ns) = rest.split_once('@')?;
    Some((sender.parse().ok()?, seq.parse().ok()?, ns.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_and_senders_follow_the_definition() {
        // Scenario B: 100 rooms x 10 clients, 2 senders per room, 5/s, 20 s.
        let p = Plan::new(100, 10, 2, 5.0, 20.0);
        assert_eq!(p.clients(), 1000);
        assert_eq!(p.senders(), 200);
        assert_eq!(p.per_sender, 100);
        assert_eq!(p.messages(), 20_000);
        assert_eq!(p.room_of_client(999), 99);
        assert_eq!(p.client_of_sender(0), 0);
        assert_eq!(p.client_of_sender(1), 1);
        assert_eq!(p.client_of_sender(2), 10);
        assert_eq!(p.client_of_sender(199), 991);
        assert_eq!(p.offered_deliveries_per_s(), 10_000.0);
        assert_eq!(p.send_window_s(), 20.0);
        assert_eq!(room_name(7), "room-000007");
    }

    #[test]
    fn open_loop_schedule_is_evenly_spaced() {
        // 4 senders at 10/s: one message every 25 ms, round-robin.
        let p = Plan::new(2, 5, 2, 10.0, 1.0);
        assert_eq!(p.interval_ns(), 25e6);
        assert_eq!(p.message(0), (0, 0, 0));
        assert_eq!(p.message(1), (1, 0, 25_000_000));
        assert_eq!(p.message(5), (1, 1, 125_000_000));
        // each sender is periodic at the rate
        assert_eq!(p.message(6).2 - p.message(2).2, 100_000_000);
        assert_eq!(p.index(1, 1), 5);
        // Scenario A: 1 sender at 50/s: 20 ms apart.
        let a = Plan::new(1, 1000, 1, 50.0, 20.0);
        assert_eq!(a.message(3), (0, 3, 60_000_000));
        assert_eq!(a.messages(), 1000);
        // Scenario D: no senders, no messages, no division by zero.
        let d = Plan::new(500, 10, 0, 0.0, 0.0);
        assert_eq!(d.messages(), 0);
        assert_eq!(d.interval_ns(), 0.0);
        assert_eq!(d.send_window_s(), 0.0);
    }

    #[test]
    fn text_is_exactly_text_bytes() {
        assert_eq!(text(3, 12, 10), "s3#12|xxxx");
        assert_eq!(text(3, 12, 64).len(), 64);
        assert_eq!(text(123, 4567, 4), "s123");
    }

    #[test]
    fn message_id_round_trips() {
        let id = message_id(7, 42, 123_456_789);
        assert_eq!(id, "s7#42@123456789");
        assert_eq!(parse_message_id(&id), Some((7, 42, 123_456_789)));
        assert_eq!(parse_message_id("uuid-like"), None);
        assert_eq!(parse_message_id("s1#2@x"), None);
    }
}
