//! What one client may hold: connection caps (per user and in all), the failed-upgrade throttle, the `Origin`
//! check, and the timers of a connection (ping, idle, write deadline). Everything here is decided before the
//! upgrade or by the connection's own tasks; nothing is shared across processes.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, header};

/// Connections one user may hold at once, unless configured otherwise.
pub const DEFAULT_MAX_CONNECTIONS_PER_USER: usize = 8;

/// Sessions one user may hold at once (attached to a connection, or waiting for a resume), unless configured
/// otherwise. Opening one more closes the user's oldest session waiting for a resume.
pub const DEFAULT_MAX_SESSIONS_PER_USER: usize = 16;

/// Connections the gateway holds at once, unless configured otherwise: 10,000 users with one connection each.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// How long a connection may stay silent (no frame at all from the client) before the gateway pings it, and then
/// how long it may stay silent after the ping before it is closed, unless configured otherwise.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a socket stays open while the gateway writes nothing to it (a request that never ends, a kept-alive
/// socket nobody uses), unless configured otherwise. At least twice the idle timeout is used, so that a silent
/// WebSocket connection is pinged first.
pub const DEFAULT_QUIET_TIMEOUT: Duration = Duration::from_secs(60);

/// How long one write to a client may wait for the client to accept it, unless configured otherwise.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Failed upgrade requests one address may make per [`THROTTLE_WINDOW`] before every upgrade request from it is
/// answered `429` until the window ends, unless configured otherwise.
pub const DEFAULT_FAILED_UPGRADES_PER_WINDOW: u32 = 20;

/// The window of the failed-upgrade throttle.
pub const THROTTLE_WINDOW: Duration = Duration::from_secs(60);

/// The most addresses the throttle remembers at once (so its memory stays bounded under a flood of addresses);
/// beyond them, new addresses share one window until older windows end.
const THROTTLE_ADDRESSES: usize = 65_536;

/// The configured limits of one gateway.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub(crate) max_connections_per_user: usize,
    pub(crate) max_sessions_per_user: usize,
    pub(crate) max_connections: usize,
    pub(crate) idle_timeout: Duration,
    pub(crate) quiet_timeout: Duration,
    /// Sockets one IP address may hold at once (`usize::MAX`: no cap of its own, the default, since behind a reverse
    /// proxy every user comes from its address).
    pub(crate) max_sockets_per_address: usize,
    pub(crate) write_timeout: Duration,
    pub(crate) failed_upgrades_per_window: u32,
    /// Origins accepted besides the request's own (`scheme://host[:port]`, compared without case).
    pub(crate) allowed_origins: Vec<String>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections_per_user: DEFAULT_MAX_CONNECTIONS_PER_USER,
            max_sessions_per_user: DEFAULT_MAX_SESSIONS_PER_USER,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            quiet_timeout: DEFAULT_QUIET_TIMEOUT,
            max_sockets_per_address: usize::MAX,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            failed_upgrades_per_window: DEFAULT_FAILED_UPGRADES_PER_WINDOW,
            allowed_origins: Vec::new(),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    /// The user holds `max_connections_per_user` connections already.
    User,
    /// The gateway holds `max_connections` connections already.
    Gateway,
}

/// The connections held now, per user and in all.
#[derive(Debug, Default)]
pub(crate) struct Admission {
    held: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    // Invariant: every entry is above zero, and the entries add up to `total`.
    per_user: HashMap<Box<str>, usize>,
    total: usize,
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
pub(crate) struct Slot {
    admission: Arc<Admission>,
    user: Box<str>,
}

impl Admission {
    /// Takes a place for a connection of `user`, or says which cap is reached.
    pub(crate) fn admit(self: &Arc<Self>, user: &str, limits: &Limits) -> Result<Slot, Full> {
        // Both counts change under one lock, so two upgrades at once cannot both take the last place.
        let mut held = lock(&self.held);
        held.room_for(user, limits)?;
        *held.per_user.entry(user.into()).or_insert(0) += 1;
        held.total += 1;
        Ok(Slot { admission: Arc::clone(self), user: user.into() })
    }
}

impl Admission {
    /// Which cap a connection of `user` would meet now, taking no place.
    pub(crate) fn check(&self, user: &str, limits: &Limits) -> Result<(), Full> {
        lock(&self.held).room_for(user, limits)
    }
}

impl Held {
    fn room_for(&self, user: &str, limits: &Limits) -> Result<(), Full> {
        if self.per_user.get(user).copied().unwrap_or(0) >= limits.max_connections_per_user {
            return Err(Full::User);
        }
        if self.total >= limits.max_connections {
            return Err(Full::Gateway);
        }
        Ok(())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = lock(&self.admission.held);
        held.total -= 1;
        if let Some(count) = held.per_user.get_mut(&self.user) {
            *count -= 1;
            if *count == 0 {
                held.per_user.remove(&self.user);
            }
        }
    }
}

/// Failed upgrade requests per address, in fixed windows of [`THROTTLE_WINDOW`]. An IPv6 address counts for its
/// whole /64 (one host can use any address of it). Windows end in the order they started, so expired ones are
/// dropped from the front of a queue, never by a scan; when [`THROTTLE_ADDRESSES`] windows are live, every further
/// address shares one overflow window (harmless to users: the throttle only ever refuses requests that would fail).
#[derive(Debug, Default)]
pub(crate) struct Throttle {
    windows: Mutex<Windows>,
}

#[derive(Debug, Default)]
struct Windows {
    // Invariant: one entry per key of `by_address`, in the order their windows started.
    started: VecDeque<(Instant, Key)>,
    by_address: HashMap<Key, (Instant, u32)>,
    overflow: Option<(Instant, u32)>,
}

/// What the throttle counts by: an IPv4 address, or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    V4(std::net::Ipv4Addr),
    V6Prefix(u64),
}

impl Key {
    fn of(address: IpAddr) -> Key {
        match address {
            IpAddr::V4(v4) => Key::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Key::V4(v4),
                None => Key::V6Prefix((v6.to_bits() >> 64) as u64),
            },
        }
    }
}

fn over(window: Option<(Instant, u32)>, limit: u32, now: Instant) -> Option<Duration> {
    let (started, failures) = window?;
    let ends = started + THROTTLE_WINDOW;
    (failures >= limit && now < ends).then(|| ends - now)
}

fn count(window: &mut (Instant, u32), now: Instant) {
    if now >= window.0 + THROTTLE_WINDOW {
        *window = (now, 0);
    }
    window.1 = window.1.saturating_add(1);
}

impl Windows {
    /// Drops the windows that have ended.
    fn expire(&mut self, now: Instant) {
        while let Some(&(started, key)) = self.started.front() {
            if now < started + THROTTLE_WINDOW {
                break;
            }
            self.started.pop_front();
            self.by_address.remove(&key);
        }
    }
}

impl Throttle {
    /// How long `address` must wait before it may try again, if it used up its failures for this window.
    pub(crate) fn retry_after(&self, address: IpAddr, limit: u32, now: Instant) -> Option<Duration> {
        let windows = lock(&self.windows);
        match windows.by_address.get(&Key::of(address)) {
            Some(window) => over(Some(*window), limit, now),
            None if windows.by_address.len() >= THROTTLE_ADDRESSES => over(windows.overflow, limit, now),
            None => None,
        }
    }

    /// Counts one failed upgrade request from `address`.
    pub(crate) fn failed(&self, address: IpAddr, now: Instant) {
        let mut windows = lock(&self.windows);
        windows.expire(now);
        let key = Key::of(address);
        if let Some(window) = windows.by_address.get_mut(&key) {
            count(window, now);
            return;
        }
        if windows.by_address.len() >= THROTTLE_ADDRESSES {
            tracing::debug!(%address, "failed-upgrade throttle is full; this address shares the overflow window");
            count(windows.overflow.get_or_insert((now, 0)), now);
            return;
        }
        windows.started.push_back((now, key));
        windows.by_address.insert(key, (now, 1));
    }
}

/// Whether the request's `Origin` (if any) may open a WebSocket: the request's own origin (the scheme `http` or
/// `https` with the `Host` header), or one of `allowed`. A request without `Origin` (not from a browser) passes.
pub(crate) fn origin_allowed<'a>(headers: &'a HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let origin = origin.trim();
    if allowed.iter().any(|allowed| allowed.trim_end_matches('/').eq_ignore_ascii_case(origin)) {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|host| host.to_str().ok());
    let Some(host) = host.map(str::trim).filter(|host| !host.is_empty()) else {
        return false;
    };
    let Some((scheme, origin_host)) = origin.split_once("://") else {
        return false;
    };
    let default_port = if scheme.eq_ignore_ascii_case("http") {
        ":80"
    } else if scheme.eq_ignore_ascii_case("https") {
        ":443"
    } else {
        return false;
    };
    // `https://chat.example` and `Host: chat.example:443` are the same origin (a proxy may add the port).
    let without_default = |authority: &'a str| authority.strip_suffix(default_port).unwrap_or(authority);
    without_default(origin_host).eq_ignore_ascii_case(without_default(host))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn caps_per_user_and_in_all() {
        let admission = Arc::new(Admission::default());
        let limits = Limits { max_connections_per_user: 2, max_connections: 3, ..Limits::default() };
        let a1 = admission.admit("alice", &limits).unwrap();
        let a2 = admission.admit("alice", &limits).unwrap();
        assert_eq!(admission.admit("alice", &limits).unwrap_err(), Full::User);
        let b1 = admission.admit("bob", &limits).unwrap();
        assert_eq!(admission.admit("carol", &limits).unwrap_err(), Full::Gateway);
        assert_eq!(admission.check("carol", &limits), Err(Full::Gateway), "check says the same, taking nothing");
        drop(a1);
        let c1 = admission.admit("carol", &limits).unwrap();
        drop((a2, b1, c1));
        let held = lock(&admission.held);
        assert_eq!((held.total, held.per_user.len()), (0, 0), "every place is freed, no entry left behind");
    }

    #[test]
    fn throttles_an_address_for_the_rest_of_its_window() {
        let throttle = Throttle::default();
        let (one, two): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(throttle.retry_after(one, 3, start), None);
            throttle.failed(one, start);
        }
        let later = start + Duration::from_secs(15);
        assert_eq!(throttle.retry_after(one, 3, later), Some(Duration::from_secs(45)));
        assert_eq!(throttle.retry_after(two, 3, later), None, "other addresses are not affected");
        let next_window = start + THROTTLE_WINDOW;
        assert_eq!(throttle.retry_after(one, 3, next_window), None);
        throttle.failed(one, next_window);
        assert_eq!(throttle.retry_after(one, 3, next_window), None, "a new window starts from zero");
        let windows = lock(&throttle.windows);
        assert_eq!((windows.started.len(), windows.by_address.len()), (1, 1), "the ended window was dropped");
    }

    #[test]
    fn an_ipv6_host_counts_for_its_whole_slash_64() {
        let throttle = Throttle::default();
        let now = Instant::now();
        for last in 1..=3u16 {
            throttle.failed(IpAddr::from([0x2001, 0xdb8, 0, 1, 0, 0, 0, last]), now);
        }
        assert!(throttle.retry_after(IpAddr::from([0x2001, 0xdb8, 0, 1, 9, 9, 9, 9]), 3, now).is_some());
        assert_eq!(throttle.retry_after(IpAddr::from([0x2001, 0xdb8, 0, 2, 0, 0, 0, 1]), 3, now), None);
        // An IPv4 client seen through an IPv6 socket is its IPv4 address.
        let mapped: IpAddr = "::ffff:10.0.0.7".parse().unwrap();
        throttle.failed(mapped, now);
        assert_eq!(Key::of(mapped), Key::of("10.0.0.7".parse().unwrap()));
    }

    #[test]
    fn a_full_table_puts_new_addresses_in_one_overflow_window() {
        let throttle = Throttle::default();
        let now = Instant::now();
        for n in 0..THROTTLE_ADDRESSES as u32 {
            throttle.failed(IpAddr::from(n.to_be_bytes()), now);
        }
        let (late, later): (IpAddr, IpAddr) = ("203.0.113.1".parse().unwrap(), "203.0.113.2".parse().unwrap());
        for _ in 0..3 {
            throttle.failed(late, now);
        }
        // Untracked addresses are throttled together instead of not at all; tracked ones keep their own window.
        assert!(throttle.retry_after(later, 3, now).is_some());
        assert_eq!(throttle.retry_after(IpAddr::from(7u32.to_be_bytes()), 3, now), None);
        // Once the windows end, the table empties from the front and new addresses get their own again.
        let next = now + THROTTLE_WINDOW;
        throttle.failed(later, next);
        assert_eq!(throttle.retry_after(later, 3, next), None);
        assert_eq!(lock(&throttle.windows).by_address.len(), 1);
    }

    #[test]
    fn origin_is_the_requests_own_or_allowed() {
        let headers = |origin: Option<&'static str>, host: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::HOST, HeaderValue::from_static(host));
            if let Some(origin) = origin {
                headers.insert(header::ORIGIN, HeaderValue::from_static(origin));
            }
            headers
        };
        let allowed = vec!["https://chat.example.com/".to_owned()];
        assert!(origin_allowed(&headers(None, "127.0.0.1:8080"), &[]));
        assert!(origin_allowed(&headers(Some("http://127.0.0.1:8080"), "127.0.0.1:8080"), &[]));
        assert!(origin_allowed(&headers(Some("HTTPS://Gateway.Example:443"), "gateway.example:443"), &[]));
        assert!(!origin_allowed(&headers(Some("http://evil.example"), "127.0.0.1:8080"), &[]));
        assert!(!origin_allowed(&headers(Some("http://127.0.0.1:9999"), "127.0.0.1:8080"), &[]));
        assert!(!origin_allowed(&headers(Some("null"), "127.0.0.1:8080"), &[]));
        assert!(!origin_allowed(&headers(Some("ftp://127.0.0.1:8080"), "127.0.0.1:8080"), &[]));
        // The scheme's default port may be written on one side only.
        assert!(origin_allowed(&headers(Some("https://chat.example"), "chat.example:443"), &[]));
        assert!(origin_allowed(&headers(Some("http://chat.example:80"), "chat.example"), &[]));
        assert!(!origin_allowed(&headers(Some("http://chat.example"), "chat.example:443"), &[]));
        assert!(origin_allowed(&headers(Some("https://chat.example.com"), "127.0.0.1:8080"), &allowed));
        assert!(!origin_allowed(&headers(Some("https://chat.example.com.evil"), "127.0.0.1:8080"), &allowed));
    }
}
