//! Rate limits and connection limits.
//!
//! - [`TokenBucket`]: `rate` tokens a second up to `burst`; a request takes
//!   one or is told how long until one is there. Each connection owns its
//!   buckets (no lock); each user's shared buckets sit behind a mutex of
//!   their own, so connections of different users never contend.
//! - [`Admission`]: counts connections in total, per source address and per
//!   user, and refuses one over a limit; the [`Permit`] it hands out gives
//!   the count back when the connection ends and carries the user's shared
//!   buckets. A user's buckets outlive their last connection until they
//!   would have refilled anyway, so closing and reopening sessions does not
//!   refill them; idle entries are swept at most once a second, so the
//!   state is bounded by the users admitted, or calling History, within
//!   that time (without authentication History callers name themselves,
//!   so that is as many as the calls in that time).
//!
//! Limits are per instance: a user with connections to two instances has
//! two sets of user buckets.

use crate::config::Limits;
use crate::metrics::ConnectionLimit;
use chat_util::lock;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// A token bucket.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    tokens: f64,
    last: Instant,
    rate: f64,
    burst: f64,
}

impl TokenBucket {
    /// A full bucket of `burst` refilled at `rate` a second; `None` when
    /// `rate` is 0 (no limit).
    pub fn new(rate: f64, burst: u32) -> Option<TokenBucket> {
        (rate > 0.0).then(|| TokenBucket {
            tokens: f64::from(burst.max(1)),
            last: Instant::now(),
            rate,
            burst: f64::from(burst.max(1)),
        })
    }

    /// Takes a token, or says how long until one is available.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            // Clamped: a tiny configured rate must not overflow.
            Err(Duration::try_from_secs_f64((1.0 - self.tokens) / self.rate)
                .unwrap_or(MAX_WAIT)
                .min(MAX_WAIT))
        }
    }

    /// How many whole tokens could be taken at `now`, taking none.
    pub fn available(&self, now: Instant) -> usize {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        (self.tokens + elapsed * self.rate).min(self.burst).max(0.0) as usize
    }

    /// Returns a token taken for a request that was then refused elsewhere.
    pub fn give_back(&mut self) {
        self.tokens = (self.tokens + 1.0).min(self.burst);
    }
}

/// The instance's pace of new sessions: a token bucket, and the line of
/// the sessions it refused. Each refusal joins a virtual line that drains
/// at the rate and is told to come back when its place comes up, so a
/// storm's refused sessions return spread over time at about the pace the
/// bucket lets them in, instead of all after the time one token takes.
#[derive(Debug)]
struct Pace {
    bucket: TokenBucket,
    /// Refused sessions still ahead in the line (drains at the rate).
    line: f64,
    /// When `line` was last drained.
    last: Instant,
    /// Sessions a second.
    rate: f64,
}

/// The longest wait a refusal by pace names (the clients' bound too).
const MAX_PACE_WAIT: Duration = Duration::from_secs(60);

impl Pace {
    fn new(rate: f64, burst: u32) -> Option<Pace> {
        Some(Pace {
            bucket: TokenBucket::new(rate, burst)?,
            line: 0.0,
            last: Instant::now(),
            rate,
        })
    }

    /// Admits a session, or says when this one's turn comes.
    fn admit(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.line = (self.line - elapsed * self.rate).max(0.0);
        self.last = now;
        let Err(first) = self.bucket.take(now) else {
            return Ok(());
        };
        let longest = MAX_PACE_WAIT.as_secs_f64() * self.rate;
        self.line = (self.line + 1.0).min(longest);
        let turn = Duration::try_from_secs_f64(self.line / self.rate).unwrap_or(MAX_PACE_WAIT);
        Err(first.max(turn).min(MAX_PACE_WAIT))
    }
}

/// Takes a token from `bucket` if there is a bucket.
fn take(bucket: &mut Option<TokenBucket>, now: Instant) -> Result<(), Duration> {
    bucket.as_mut().map_or(Ok(()), |b| b.take(now))
}

/// What a request is limited as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Sending a message.
    Send,
    /// Joining a room.
    Join,
    /// Saying one is typing (per connection only).
    Typing,
    /// Marking a room read (per connection only).
    Read,
}

/// One user's buckets, shared by their connections on this instance.
#[derive(Debug)]
pub struct UserBuckets {
    send: Mutex<Option<TokenBucket>>,
    join: Mutex<Option<TokenBucket>>,
    history: Mutex<Option<TokenBucket>>,
    /// New sessions.
    open: Mutex<Option<TokenBucket>>,
}

impl UserBuckets {
    fn new(l: &Limits) -> Arc<UserBuckets> {
        Arc::new(UserBuckets {
            send: Mutex::new(TokenBucket::new(l.user_send_rate, l.user_send_burst)),
            join: Mutex::new(TokenBucket::new(l.user_join_rate, l.user_join_burst)),
            history: Mutex::new(TokenBucket::new(l.user_history_rate, l.user_history_burst)),
            open: Mutex::new(TokenBucket::new(l.user_session_rate, l.user_session_burst)),
        })
    }
}

/// One connection's buckets, and its user's.
#[derive(Debug)]
pub struct RequestLimits {
    send: Option<TokenBucket>,
    join: Option<TokenBucket>,
    typing: Option<TokenBucket>,
    read: Option<TokenBucket>,
    user: Arc<UserBuckets>,
}

impl RequestLimits {
    /// How many joins the connection's and the user's buckets would let
    /// through now, taking nothing (`usize::MAX` with no limit).
    pub fn joins_available(&self) -> usize {
        let now = Instant::now();
        let own = self.join.as_ref().map_or(usize::MAX, |b| b.available(now));
        let user = lock(&self.user.join)
            .as_ref()
            .map_or(usize::MAX, |b| b.available(now));
        own.min(user)
    }

    /// Takes a token for `action` from the connection's bucket and the
    /// user's; `Err(retry_after)` if either is empty (then neither is
    /// charged).
    pub fn check(&mut self, action: Action) -> Result<(), Duration> {
        let now = Instant::now();
        let (own, user) = match action {
            Action::Send => (&mut self.send, &self.user.send),
            Action::Join => (&mut self.join, &self.user.join),
            Action::Typing => return take(&mut self.typing, now),
            Action::Read => return take(&mut self.read, now),
        };
        take(own, now)?;
        let mut user = lock(user);
        take(&mut user, now).inspect_err(|_| {
            if let Some(b) = own.as_mut() {
                b.give_back();
            }
        })
    }
}

/// Why a connection was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The instance holds its most connections.
    #[error("the server is at its connection limit ({0}); try another instance or later")]
    Total(usize),
    /// The source address holds its most connections.
    #[error("too many connections from your address (limit {0})")]
    PerAddress(usize),
    /// The user holds their most connections.
    #[error("too many connections for this user (limit {0})")]
    PerUser(usize),
    /// New sessions come faster than the user's or the instance's pace;
    /// this one's turn comes after this wait.
    #[error("new sessions are admitted at a bounded pace; retry in {} ms", .0.as_millis().max(1))]
    Rate(Duration),
}

impl Refusal {
    /// Which limit it was, as logs and metrics label it.
    pub fn reason(&self) -> ConnectionLimit {
        match self {
            Refusal::Total(_) => ConnectionLimit::Total,
            Refusal::PerAddress(_) => ConnectionLimit::Address,
            Refusal::PerUser(_) => ConnectionLimit::User,
            Refusal::Rate(_) => ConnectionLimit::Rate,
        }
    }

    /// When a retry can succeed, for a refusal by rate (0 for the others:
    /// they last until a connection ends).
    pub fn retry_after_ms(&self) -> u64 {
        match self {
            Refusal::Rate(wait) => wait.as_millis().max(1).min(u128::from(u64::MAX)) as u64,
            _ => 0,
        }
    }
}

struct UserEntry {
    connections: usize,
    buckets: Arc<UserBuckets>,
    /// When the last connection ended (`None` while there are some).
    idle_since: Option<Instant>,
}

struct Counts {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
    per_user: HashMap<Arc<str>, UserEntry>,
    last_sweep: Instant,
    /// New sessions' pace (`limits.session_rate`); `None`: no limit.
    opening: Option<Pace>,
}

/// Connection counting and the limits on it.
pub struct Admission {
    limits: Limits,
    /// How long a user's buckets are kept after their last connection:
    /// the longest time any of them takes to refill.
    hold: Duration,
    counts: Mutex<Counts>,
}

/// Longest retry time a bucket gives.
const MAX_WAIT: Duration = Duration::from_secs(86_400);

/// Longest a user's idle buckets are kept.
const MAX_HOLD: Duration = Duration::from_secs(3600);

/// An admitted connection; dropping it gives its counts back.
pub struct Permit {
    admission: Arc<Admission>,
    address: Option<IpAddr>,
    user: Arc<str>,
    /// The connection's rate limits.
    pub limits: RequestLimits,
}

impl Permit {
    /// Checks the user's history rate (shared with History calls), for a
    /// history request on the session stream.
    pub fn check_history(&self) -> Result<(), Duration> {
        self.admission.check_history(&self.user)
    }
}

/// 0 means no limit.
fn over(count: usize, limit: usize) -> bool {
    limit > 0 && count >= limit
}

impl Admission {
    /// Counting against `limits`.
    pub fn new(limits: Limits) -> Arc<Admission> {
        let hold = [
            (limits.user_send_rate, limits.user_send_burst),
            (limits.user_join_rate, limits.user_join_burst),
            (limits.user_history_rate, limits.user_history_burst),
            (limits.user_session_rate, limits.user_session_burst),
        ]
        .into_iter()
        .filter(|&(rate, _)| rate > 0.0)
        .map(|(rate, burst)| {
            Duration::try_from_secs_f64(f64::from(burst) / rate).unwrap_or(MAX_HOLD)
        })
        .max()
        .unwrap_or(Duration::ZERO)
        .min(MAX_HOLD);
        let opening = Pace::new(limits.session_rate, limits.session_burst);
        Arc::new(Admission {
            limits,
            hold,
            counts: Mutex::new(Counts {
                total: 0,
                per_address: HashMap::new(),
                per_user: HashMap::new(),
                last_sweep: Instant::now(),
                opening,
            }),
        })
    }

    /// Admits a connection of `user` from `address`, or says which limit
    /// it would exceed (and counts nothing).
    pub fn admit(
        self: &Arc<Self>,
        user: &Arc<str>,
        address: Option<IpAddr>,
    ) -> Result<Permit, Refusal> {
        let l = &self.limits;
        let mut counts = lock(&self.counts);
        if over(counts.total, l.max_connections) {
            return Err(Refusal::Total(l.max_connections));
        }
        if let Some(ip) = address
            && over(
                counts.per_address.get(&ip).copied().unwrap_or(0),
                l.max_connections_per_address,
            )
        {
            return Err(Refusal::PerAddress(l.max_connections_per_address));
        }
        let held = counts.per_user.get(user).map_or(0, |e| e.connections);
        if over(held, l.max_connections_per_user) {
            return Err(Refusal::PerUser(l.max_connections_per_user));
        }
        // Last: a session refused by a count takes no share of the pace.
        // The user's pace first, so that one user cannot take everyone's;
        // its token is given back if the instance's refuses.
        let now = Instant::now();
        let buckets = counts
            .per_user
            .get(user)
            .map_or_else(|| UserBuckets::new(l), |e| e.buckets.clone());
        take(&mut lock(&buckets.open), now).map_err(Refusal::Rate)?;
        if let Some(pace) = &mut counts.opening
            && let Err(wait) = pace.admit(now)
        {
            if let Some(open) = lock(&buckets.open).as_mut() {
                open.give_back();
            }
            return Err(Refusal::Rate(wait));
        }
        counts.total += 1;
        if let Some(ip) = address {
            *counts.per_address.entry(ip).or_default() += 1;
        }
        self.sweep(&mut counts, now);
        let entry = counts
            .per_user
            .entry(user.clone())
            .or_insert_with(|| UserEntry {
                connections: 0,
                buckets,
                idle_since: None,
            });
        entry.connections += 1;
        entry.idle_since = None;
        let limits = RequestLimits {
            send: TokenBucket::new(l.send_rate, l.send_burst),
            join: TokenBucket::new(l.join_rate, l.join_burst),
            typing: TokenBucket::new(l.typing_rate, l.typing_burst),
            read: TokenBucket::new(l.read_rate, l.read_burst),
            user: entry.buckets.clone(),
        };
        Ok(Permit {
            admission: self.clone(),
            address,
            user: user.clone(),
            limits,
        })
    }

    /// Forgets, at most once a second, the users idle longer than their
    /// buckets take to refill.
    fn sweep(&self, counts: &mut Counts, now: Instant) {
        if now.saturating_duration_since(counts.last_sweep) >= Duration::from_secs(1) {
            counts.last_sweep = now;
            let hold = self.hold;
            counts.per_user.retain(|_, e| {
                e.idle_since
                    .is_none_or(|t| now.saturating_duration_since(t) < hold)
            });
        }
    }

    /// Takes a token from `user`'s History bucket (shared with their
    /// connections' buckets, and kept as long as those); `Err(retry_after)`
    /// when it is empty.
    pub fn check_history(&self, user: &Arc<str>) -> Result<(), Duration> {
        if self.limits.user_history_rate <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let buckets = {
            let mut counts = lock(&self.counts);
            self.sweep(&mut counts, now);
            let entry = counts
                .per_user
                .entry(user.clone())
                .or_insert_with(|| UserEntry {
                    connections: 0,
                    buckets: UserBuckets::new(&self.limits),
                    idle_since: None,
                });
            if entry.connections == 0 {
                // No connection holds it: kept until it would have refilled.
                entry.idle_since = Some(now);
            }
            entry.buckets.clone()
        };
        let mut history = lock(&buckets.history);
        take(&mut history, now)
    }

    /// Connections held now.
    pub fn connections(&self) -> usize {
        lock(&self.counts).total
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut counts = lock(&self.admission.counts);
        counts.total = counts.total.saturating_sub(1);
        if let Some(ip) = self.address {
            release(&mut counts.per_address, &ip);
        }
        let hold = self.admission.hold;
        if let Some(e) = counts.per_user.get_mut(&self.user) {
            e.connections -= 1;
            if e.connections == 0 {
                if hold.is_zero() {
                    counts.per_user.remove(&self.user);
                } else {
                    // Kept, used up as it is, until it would have refilled.
                    e.idle_since = Some(Instant::now());
                }
            }
        }
    }
}

/// TCP connections, counted before any stream is opened: in total and per
/// source address. A connection over a limit is closed at once.
pub struct TcpAdmission {
    max_total: usize,
    max_per_address: usize,
    counts: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// A counted TCP connection; dropping it (when the connection closes)
/// gives the count back.
pub struct TcpPermit {
    admission: Arc<TcpAdmission>,
    address: IpAddr,
}

impl TcpAdmission {
    /// Counting against `limits.max_connections` and
    /// `limits.max_connections_per_address` (0: no limit).
    pub fn new(limits: &Limits) -> Arc<TcpAdmission> {
        Arc::new(TcpAdmission {
            max_total: limits.max_connections,
            max_per_address: limits.max_connections_per_address,
            counts: Mutex::new((0, HashMap::new())),
        })
    }

    /// Counts a connection from `address`, or `None` over a limit.
    pub fn admit(self: &Arc<Self>, address: IpAddr) -> Option<TcpPermit> {
        let mut counts = lock(&self.counts);
        let (total, per_address) = &mut *counts;
        let held = per_address.get(&address).copied().unwrap_or(0);
        if over(*total, self.max_total) || over(held, self.max_per_address) {
            return None;
        }
        *total += 1;
        *per_address.entry(address).or_default() += 1;
        Some(TcpPermit {
            admission: self.clone(),
            address,
        })
    }

    /// TCP connections held now.
    pub fn connections(&self) -> usize {
        lock(&self.counts).0
    }
}

impl Drop for TcpPermit {
    fn drop(&mut self) {
        let mut counts = lock(&self.admission.counts);
        let (total, per_address) = &mut *counts;
        *total = total.saturating_sub(1);
        release(per_address, &self.address);
    }
}

/// Gives back one count of `address`, forgetting it at zero.
fn release(per_address: &mut HashMap<IpAddr, usize>, address: &IpAddr) {
    if let Some(n) = per_address.get_mut(address) {
        *n -= 1;
        if *n == 0 {
            per_address.remove(address);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_bucket_allows_its_burst_then_its_rate() {
        let mut b = TokenBucket::new(2.0, 3).unwrap();
        let now = Instant::now();
        for _ in 0..3 {
            b.take(now).unwrap();
        }
        let wait = b.take(now).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert!(b.take(now + Duration::from_millis(499)).is_err());
        b.take(now + Duration::from_millis(500)).unwrap();
        // Idle time refills no further than the burst.
        let later = now + Duration::from_secs(60);
        for _ in 0..3 {
            b.take(later).unwrap();
        }
        assert!(b.take(later).is_err());
        assert!(TokenBucket::new(0.0, 10).is_none(), "rate 0: no limit");
    }

    fn limits() -> Limits {
        Limits {
            max_connections: 3,
            max_connections_per_address: 2,
            max_connections_per_user: 1,
            ..Limits::default()
        }
    }

    #[test]
    fn connections_are_counted_and_given_back() {
        let admission = Admission::new(limits());
        let ip = |n: u8| Some(IpAddr::from([127, 0, 0, n]));
        let (a, b, c, d): (Arc<str>, Arc<str>, Arc<str>, Arc<str>) =
            ("a".into(), "b".into(), "c".into(), "d".into());
        let pa = admission.admit(&a, ip(1)).unwrap();
        assert_eq!(admission.admit(&a, ip(2)).err(), Some(Refusal::PerUser(1)));
        let pb = admission.admit(&b, ip(1)).unwrap();
        assert_eq!(
            admission.admit(&c, ip(1)).err(),
            Some(Refusal::PerAddress(2))
        );
        let _pc = admission.admit(&c, ip(2)).unwrap();
        assert_eq!(admission.admit(&d, ip(3)).err(), Some(Refusal::Total(3)));
        assert_eq!(admission.connections(), 3, "refusals count nothing");
        drop(pa);
        drop(pb);
        let _pa = admission.admit(&a, ip(1)).unwrap();
        let _pd = admission.admit(&d, ip(1)).unwrap();
        let counts = admission.counts.lock().unwrap();
        assert_eq!(counts.total, 3);
        assert_eq!(
            counts.per_user.len(),
            4,
            "b's buckets are kept until they would have refilled"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn new_sessions_are_admitted_at_their_pace_and_refused_with_the_wait() {
        let admission = Admission::new(Limits {
            session_rate: 10.0,
            session_burst: 3,
            max_connections_per_user: 1,
            ..Limits::default()
        });
        let user = |n: u32| -> Arc<str> { format!("u{n}").into() };
        let held: Vec<Permit> = (0..3)
            .map(|n| admission.admit(&user(n), None).unwrap())
            .collect();
        let refusal = admission.admit(&user(3), None).err().unwrap();
        assert_eq!(refusal, Refusal::Rate(Duration::from_millis(100)));
        assert_eq!(refusal.retry_after_ms(), 100);
        assert_eq!(refusal.reason(), ConnectionLimit::Rate);
        // A refusal by count takes no share of the pace.
        assert_eq!(
            admission.admit(&user(0), None).err(),
            Some(Refusal::PerUser(1))
        );
        tokio::time::advance(Duration::from_millis(100)).await;
        let _fourth = admission.admit(&user(3), None).unwrap();
        assert!(matches!(
            admission.admit(&user(4), None),
            Err(Refusal::Rate(_))
        ));
        assert_eq!(admission.connections(), 4);
        // A storm: each refused session is told a later turn, a tenth of
        // a second (the rate) apart, so they do not all return at once.
        let waits: Vec<Duration> = (10..15)
            .map(|n| match admission.admit(&user(n), None) {
                Err(Refusal::Rate(wait)) => wait,
                Err(other) => panic!("{other:?}"),
                Ok(_) => panic!("admitted over the pace"),
            })
            .collect();
        for pair in waits.windows(2) {
            assert!(pair[1] >= pair[0] + Duration::from_millis(99), "{waits:?}");
        }
        drop(held);
        assert!(
            TokenBucket::new(0.0, 1).is_none() && Refusal::Total(1).retry_after_ms() == 0,
            "rate 0: no pace; a count's refusal names no wait"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn one_user_cannot_take_the_instances_pace() {
        let admission = Admission::new(Limits {
            session_rate: 100.0,
            session_burst: 100,
            user_session_rate: 1.0,
            user_session_burst: 2,
            max_connections_per_user: 0,
            ..Limits::default()
        });
        let greedy: Arc<str> = "greedy".into();
        let mut held = vec![
            admission.admit(&greedy, None).unwrap(),
            admission.admit(&greedy, None).unwrap(),
        ];
        for _ in 0..50 {
            assert!(matches!(
                admission.admit(&greedy, None),
                Err(Refusal::Rate(_))
            ));
        }
        // The instance's pace is untouched by the greedy user's refusals.
        for n in 0..98 {
            let other: Arc<str> = format!("other-{n}").into();
            held.push(admission.admit(&other, None).unwrap());
        }
        // Closing and reopening does not refill the user's bucket.
        held.truncate(0);
        assert!(matches!(
            admission.admit(&greedy, None),
            Err(Refusal::Rate(_))
        ));
        tokio::time::advance(Duration::from_secs(1)).await;
        let _again = admission.admit(&greedy, None).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn user_buckets_are_shared_and_a_refusal_charges_nothing() {
        let admission = Admission::new(Limits {
            send_rate: 10.0,
            send_burst: 2,
            user_send_rate: 10.0,
            user_send_burst: 3,
            max_connections_per_user: 0,
            ..Limits::default()
        });
        let user: Arc<str> = "u".into();
        let mut one = admission.admit(&user, None).unwrap();
        let mut two = admission.admit(&user, None).unwrap();
        one.limits.check(Action::Send).unwrap();
        one.limits.check(Action::Send).unwrap();
        assert!(one.limits.check(Action::Send).is_err(), "connection burst");
        two.limits.check(Action::Send).unwrap();
        assert!(
            two.limits.check(Action::Send).is_err(),
            "the user's burst is shared"
        );
        // `two`'s own bucket was given its token back: after the user's
        // bucket refills by one, `two` can send once more.
        tokio::time::advance(Duration::from_millis(100)).await;
        two.limits.check(Action::Send).unwrap();
        assert!(
            two.limits.check(Action::Join).is_ok(),
            "joins are counted apart"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn reconnecting_does_not_refill_the_users_buckets() {
        let admission = Admission::new(Limits {
            send_rate: 0.0,
            user_send_rate: 1.0,
            user_send_burst: 2,
            ..Limits::default()
        });
        let user: Arc<str> = "u".into();
        let mut one = admission.admit(&user, None).unwrap();
        one.limits.check(Action::Send).unwrap();
        one.limits.check(Action::Send).unwrap();
        drop(one);
        let mut again = admission.admit(&user, None).unwrap();
        assert!(again.limits.check(Action::Send).is_err(), "still used up");
        drop(again);
        // Once the buckets would have refilled, the entry goes at a sweep.
        tokio::time::advance(Duration::from_secs(61)).await;
        let other: Arc<str> = "v".into();
        let _v = admission.admit(&other, None).unwrap();
        assert!(
            !admission
                .counts
                .lock()
                .unwrap()
                .per_user
                .contains_key(&user)
        );
        let mut later = admission.admit(&user, None).unwrap();
        later.limits.check(Action::Send).unwrap();
    }

    #[test]
    fn a_tiny_rate_gives_a_bounded_wait_not_a_panic() {
        let mut b = TokenBucket::new(1e-20, 1).unwrap();
        let now = Instant::now();
        b.take(now).unwrap();
        assert_eq!(b.take(now).unwrap_err(), MAX_WAIT);
    }

    #[tokio::test(start_paused = true)]
    async fn history_buckets_are_per_user_shared_with_sessions_and_swept() {
        let admission = Admission::new(Limits {
            user_history_rate: 1.0,
            user_history_burst: 2,
            ..Limits::default()
        });
        let user: Arc<str> = "u".into();
        admission.check_history(&user).unwrap();
        // A session of the same user does not refill it.
        let session = admission.admit(&user, None).unwrap();
        admission.check_history(&user).unwrap();
        let wait = admission.check_history(&user).unwrap_err();
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        admission.check_history(&"v".into()).unwrap();
        drop(session);
        // Users who only call History are forgotten once refilled.
        tokio::time::advance(Duration::from_secs(3600)).await;
        admission.check_history(&"w".into()).unwrap();
        let counts = admission.counts.lock().unwrap();
        assert_eq!(
            counts.per_user.keys().map(|k| &**k).collect::<Vec<_>>(),
            ["w"]
        );
    }
}
