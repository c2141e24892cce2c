//! Weighted canaries: a second version of a route's handler takes a share
//! of its requests, and is rolled back on its own when it fails more often
//! than the stable version.
//!
//! Each request goes to one version: by the hash of the route's sticky
//! header or cookie when the request carries it (the same value picks the
//! same version on every replica), otherwise at random. With a `rollback`
//! policy, outcomes (5xx answers, faults included) are counted per version
//! in a sliding window; when the canary's failure rate exceeds the stable
//! version's by more than `max_error_rate` after `min_requests` canary
//! requests, its weight becomes 0. A rollback, an abort and a promotion
//! belong to the canary's digest: they survive reloads until it changes.
//! Every replica decides alone, from its own traffic.
//!
//! Clients cannot steer the verdict: a failure the client caused (a
//! refused or stalled upload, a timeout while the guest waited for the
//! client to read, a client gone before the body's end) is not counted,
//! and one client address or one sticky value holds at most
//! [`MAX_CLIENT_SHARE`] of a version's outcomes in the window.
//!
//! The manifest syntax is [`crate::config::canary`]'s; the admin's abort
//! and promote are [`crate::control::actions`]'.

use crate::base::digest::Digest;
use crate::config::canary::{CanarySpec, Counts};
use crate::observe::metrics::{CANARY, Metrics, STABLE};
use crate::routing::handler::{Handler, rfc3339};
use http::HeaderMap;
use prometheus_client::metrics::counter::Counter;
use serde::{Serialize, Serializer};
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

/// The response header naming the version that answered, on routes whose
/// canary sets `version_header = true`.
pub const VERSION_HEADER: &str = "x-wasmlet-version";

/// The largest share of one version's counted outcomes in the rollback
/// window that one client (an IPv4 address, or an IPv6 /64) or one sticky
/// value may hold, as a fraction of the larger of the version's count and
/// `min_requests`; past it, its requests are served but not counted
/// (`wasmlet_canary_uncounted_total{reason="share"}`). So one client moves
/// a version's failure rate by at most 5 points (a `max_error_rate` of
/// 0.05 or more cannot be crossed by one client alone), and a window
/// reaches `min_requests` only with outcomes from at least 20 clients.
pub const MAX_CLIENT_SHARE: f64 = 0.05;

/// Clients and sticky values remembered per window slot (20 slots): about
/// 32 KiB each at most. Past it, a new one in that slot is counted without
/// the share check on that key; its other key (address or value) is still
/// checked if remembered.
const MAX_KEYS_PER_SLOT: usize = 1024;

/// Slots of the sliding window: outcomes older than `window` drop out in
/// steps of `window / WINDOW_SLOTS`.
const WINDOW_SLOTS: u32 = 20;

/// The version of a route that serves a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Stable = 0,
    Canary = 1,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Stable => STABLE,
            Version::Canary => CANARY,
        }
    }
}

/// Who sent a request, as the share cap counts it: hashes of its client
/// address (IPv6 by /64) and of its sticky value, when it has them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Client {
    keys: [Option<u64>; 2],
}

impl Client {
    /// The client of a request with `headers` from `peer` on `canary`'s
    /// route.
    pub fn of(canary: &Canary, headers: &HeaderMap, peer: Option<IpAddr>) -> Client {
        let sticky = canary.spec.sticky.as_ref().and_then(|s| s.value(headers));
        Client {
            keys: [
                peer.map(|ip| key(0, &client_prefix(ip))),
                sticky.map(|v| key(1, v)),
            ],
        }
    }
}

/// The part of an address one client is taken to hold: an IPv4 address,
/// an IPv6 /64 (what one subscriber usually gets).
fn client_prefix(ip: IpAddr) -> Vec<u8> {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets()[..8].to_vec(),
    }
}

/// A key's hash, with keys random to this process so that no client can
/// aim its key at another's.
fn key(kind: u8, bytes: &[u8]) -> u64 {
    static KEYS: OnceLock<RandomState> = OnceLock::new();
    KEYS.get_or_init(RandomState::new).hash_one((kind, bytes))
}

/// One slot of the window: the tick it holds, its counts by version, and
/// per client key its counted outcomes by version.
#[derive(Debug, Clone, Default)]
struct Slot {
    tick: u64,
    counts: [Counts; 2],
    keys: HashMap<u64, [u32; 2]>,
}

/// Outcomes per version over the last `width * WINDOW_SLOTS`.
#[derive(Debug)]
struct Window {
    started: Instant,
    width: Duration,
    slots: Vec<Slot>,
}

impl Window {
    fn new(window: Duration, now: Instant) -> Window {
        Window {
            started: now,
            width: window / WINDOW_SLOTS,
            slots: vec![Slot::default(); WINDOW_SLOTS as usize],
        }
    }

    fn tick(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.started).as_nanos() / self.width.as_nanos().max(1))
            as u64
    }

    /// Counts one outcome of `client` at `now`, unless one of its keys
    /// already holds its share (see [`MAX_CLIENT_SHARE`]) of `version`'s
    /// outcomes; returns the window's totals, or None when not counted.
    fn record(
        &mut self,
        now: Instant,
        version: Version,
        failed: bool,
        client: Client,
        min_requests: u64,
    ) -> Option<[Counts; 2]> {
        let tick = self.tick(now);
        let mut totals = self.totals(tick);
        let v = version as usize;
        let share = totals[v].total.max(min_requests) as f64 * MAX_CLIENT_SHARE;
        let limit = (share as u64).max(1);
        if client
            .keys
            .iter()
            .flatten()
            .any(|key| self.count_of(tick, *key, version) >= limit)
        {
            return None;
        }
        let slot = &mut self.slots[(tick % u64::from(WINDOW_SLOTS)) as usize];
        if slot.tick != tick {
            slot.tick = tick;
            slot.counts = [Counts::default(); 2];
            slot.keys.clear();
        }
        for key in client.keys.into_iter().flatten() {
            let room = slot.keys.len() < MAX_KEYS_PER_SLOT;
            match slot.keys.get_mut(&key) {
                Some(counts) => counts[v] += 1,
                None if room => {
                    let mut counts = [0; 2];
                    counts[v] = 1;
                    slot.keys.insert(key, counts);
                }
                None => {}
            }
        }
        for counts in [&mut slot.counts[v], &mut totals[v]] {
            counts.total += 1;
            counts.failed += u64::from(failed);
        }
        Some(totals)
    }

    /// `key`'s counted outcomes of `version` in the window.
    fn count_of(&self, tick: u64, key: u64, version: Version) -> u64 {
        self.live(tick)
            .filter_map(|slot| slot.keys.get(&key))
            .map(|counts| u64::from(counts[version as usize]))
            .sum()
    }

    /// The slots still inside the window at `tick`.
    fn live(&self, tick: u64) -> impl Iterator<Item = &Slot> {
        self.slots
            .iter()
            .filter(move |slot| tick.saturating_sub(slot.tick) < u64::from(WINDOW_SLOTS))
    }

    fn totals(&self, tick: u64) -> [Counts; 2] {
        let mut sum = [Counts::default(); 2];
        for slot in self.live(tick) {
            for (sum, c) in sum.iter_mut().zip(&slot.counts) {
                sum.total += c.total;
                sum.failed += c.failed;
            }
        }
        sum
    }
}

/// Where a canary stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Serving its configured weight.
    Active = 0,
    /// Weight 0: it failed more than the rollback policy allows.
    RolledBack = 1,
    /// Weight 0: an operator called `POST /routes/{route}/abort`.
    Aborted = 2,
    /// It became the route's stable version (`POST /routes/{route}/promote`).
    Promoted = 3,
}

impl Phase {
    /// The phase's one spelling: `state` in `/handlers` writes it as is
    /// (`rolled_back`), messages with spaces ([`std::fmt::Display`]).
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Active => "active",
            Phase::RolledBack => "rolled_back",
            Phase::Aborted => "aborted",
            Phase::Promoted => "promoted",
        }
    }
}

impl Serialize for Phase {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, word) in self.as_str().split('_').enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(word)?;
        }
        Ok(())
    }
}

/// What is decided about one canary digest on a route; carried from
/// table to table while the digest stays.
#[derive(Debug)]
pub struct CanaryState {
    pub digest: Digest,
    phase: AtomicU8,
    /// Why it left `Active`, and when.
    reason: Mutex<Option<(String, SystemTime)>>,
    window: Mutex<Option<Window>>,
}

impl CanaryState {
    pub fn new(digest: Digest) -> CanaryState {
        CanaryState {
            digest,
            phase: AtomicU8::new(Phase::Active as u8),
            reason: Mutex::new(None),
            window: Mutex::new(None),
        }
    }

    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Active,
            1 => Phase::RolledBack,
            2 => Phase::Aborted,
            _ => Phase::Promoted,
        }
    }

    /// Moves from `Active` (or, for a promotion, from anything but
    /// `Promoted`) to `phase`; false if another decision came first.
    pub fn leave(&self, phase: Phase, reason: String) -> bool {
        let mut held = self.reason.lock().unwrap();
        let current = self.phase();
        let allowed = match phase {
            Phase::Promoted => current != Phase::Promoted,
            _ => current == Phase::Active,
        };
        if allowed {
            *held = Some((reason, SystemTime::now()));
            self.phase.store(phase as u8, Ordering::Release);
        }
        allowed
    }

    fn reason(&self) -> Option<(String, SystemTime)> {
        self.reason.lock().unwrap().clone()
    }
}

/// A route's canary in one routing table.
pub struct Canary {
    /// The canary version: its own component, the route's limits and grants.
    pub handler: Arc<Handler>,
    pub spec: CanarySpec,
    pub state: Arc<CanaryState>,
    /// `wasmlet_canary_requests_total` by version and status class.
    requests: [[Counter; 5]; 2],
    /// `wasmlet_canary_uncounted_total` by version: client, share.
    uncounted: [[Counter; 2]; 2],
    rollbacks: Counter,
}

/// How a request served by one version ended, as the canary counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The status the client got; a fault after the head counts as 500.
    Status(u16),
    /// The client caused the bad end (a refused or stalled upload, a
    /// timeout while the guest waited for it to read, gone before the
    /// body's end): not the version's doing, not counted.
    ClientCaused,
}

impl Canary {
    pub fn new(
        handler: Arc<Handler>,
        spec: CanarySpec,
        state: Arc<CanaryState>,
        metrics: &Metrics,
    ) -> Canary {
        let route = handler.label.to_string();
        let requests =
            [Version::Stable, Version::Canary].map(|v| metrics.canary_requests(&route, v.as_str()));
        let uncounted = [Version::Stable, Version::Canary]
            .map(|v| metrics.canary_uncounted(&route, v.as_str()));
        Canary {
            rollbacks: metrics.canary_rollbacks(&route),
            uncounted,
            handler,
            spec,
            state,
            requests,
        }
    }

    /// The weight in force: the configured one while active, else 0.
    pub fn weight(&self) -> u8 {
        match self.state.phase() {
            Phase::Active => self.spec.weight,
            _ => 0,
        }
    }

    /// Counts one request of `client`; rolls the canary back when the
    /// policy says so.
    pub fn record(&self, version: Version, outcome: Outcome, client: Client) {
        let v = version as usize;
        let status = match outcome {
            Outcome::Status(status) => status,
            Outcome::ClientCaused => {
                self.uncounted[v][0].inc();
                return;
            }
        };
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        let policy = match self.spec.rollback {
            Some(policy) if self.state.phase() == Phase::Active => policy,
            _ => {
                self.requests[v][class].inc();
                return;
            }
        };
        let now = Instant::now();
        let totals = {
            let mut window = self.state.window.lock().unwrap();
            let window = match &mut *window {
                Some(w) if w.width == policy.window / WINDOW_SLOTS => w,
                other => other.insert(Window::new(policy.window, now)),
            };
            window.record(now, version, status >= 500, client, policy.min_requests)
        };
        let Some(totals) = totals else {
            self.uncounted[v][1].inc();
            return;
        };
        self.requests[v][class].inc();
        if version == Version::Canary
            && let Some(reason) = policy.verdict(totals[0], totals[1])
            && self.state.leave(Phase::RolledBack, reason.clone())
        {
            self.rollbacks.inc();
            tracing::warn!(
                route = %self.handler.label,
                canary_digest = %self.state.digest,
                reason = %reason,
                "canary rolled back: its weight is now 0"
            );
        }
    }

    pub fn describe(&self) -> CanaryDoc {
        let reason = self.state.reason();
        // Present from the start on a route with a rollback policy (zero
        // counts before the first outcome), as docs/canary.md shows it.
        let counted = self.state.window.lock().unwrap().as_ref().map(|w| {
            let [stable, canary] = w.totals(w.tick(Instant::now()));
            WindowDoc { stable, canary }
        });
        let window = self.spec.rollback.map(|_| {
            counted.unwrap_or(WindowDoc {
                stable: Counts::default(),
                canary: Counts::default(),
            })
        });
        CanaryDoc {
            component: self.spec.component.display().to_string(),
            digest: self.handler.component.digest,
            resolved_digest: self.handler.resolved,
            weight: self.spec.weight,
            effective_weight: self.weight(),
            state: self.state.phase(),
            reason: reason.as_ref().map(|(r, _)| r.clone()),
            since: reason.map(|(_, at)| rfc3339(at)),
            sticky: self.spec.sticky.as_ref().map(|s| s.to_string()),
            version_header: self.spec.version_header,
            window,
        }
    }
}

/// A canary in `/handlers`.
#[derive(Debug, Serialize)]
pub struct CanaryDoc {
    /// A file's path, or an `oci://` reference as the manifest gives it.
    pub component: String,
    /// sha256 of the component file (for `oci://`, the layer's digest).
    pub digest: Digest,
    /// For `oci://`: the manifest digest the reference resolved to.
    pub resolved_digest: Option<Digest>,
    /// The manifest's weight.
    pub weight: u8,
    /// The weight in force: 0 once rolled back or aborted.
    pub effective_weight: u8,
    pub state: Phase,
    pub reason: Option<String>,
    pub since: Option<String>,
    pub sticky: Option<String>,
    /// Whether answers carry `x-wasmlet-version`.
    pub version_header: bool,
    /// Outcomes in the rollback window, when the route has a policy.
    pub window: Option<WindowDoc>,
}

#[derive(Debug, Serialize)]
pub struct WindowDoc {
    pub stable: Counts,
    pub canary: Counts,
}

impl Canary {
    /// The version that serves a request with `headers`: by its sticky
    /// value when it has one, else at random, in the weight in force.
    pub fn choose(&self, headers: &HeaderMap) -> Version {
        let roll = match self.spec.sticky.as_ref().and_then(|s| s.value(headers)) {
            Some(value) => percentile(value),
            None => random_percentile(),
        };
        if roll < self.weight() {
            Version::Canary
        } else {
            Version::Stable
        }
    }
}

/// 0–99 from a sticky value, the same in every process of this build:
/// SipHash with fixed keys.
fn percentile(value: &[u8]) -> u8 {
    #[allow(deprecated)] // SipHasher's keys are fixed, which is the point here.
    let mut hasher = std::hash::SipHasher::new();
    value.hash(&mut hasher);
    (hasher.finish() % 100) as u8
}

/// 0–99 at random: each `RandomState` gets fresh keys.
fn random_percentile() -> u8 {
    (std::hash::RandomState::new().hash_one(0u8) % 100) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(total: u64, failed: u64) -> Counts {
        Counts { total, failed }
    }

    #[test]
    fn window_forgets_what_is_older_than_its_length() {
        let start = Instant::now();
        let mut w = Window::new(Duration::from_secs(20), start);
        let mut record = |at: u64, version: Version, failed: bool| {
            let now = start + Duration::from_secs(at);
            w.record(now, version, failed, Client::default(), 1)
                .unwrap()
        };
        record(0, Version::Canary, true);
        let t = record(10, Version::Stable, false);
        assert_eq!(t, [counts(1, 0), counts(1, 1)]);
        // 20 s later the first outcome has dropped out, the second not yet.
        let t = record(21, Version::Stable, false);
        assert_eq!(t, [counts(2, 0), counts(0, 0)]);
        let t = record(100, Version::Canary, false);
        assert_eq!(t, [counts(0, 0), counts(1, 0)]);
    }

    fn client(peer: &str, sticky: Option<&str>) -> Client {
        Client {
            keys: [
                Some(key(0, &client_prefix(peer.parse().unwrap()))),
                sticky.map(|v| key(1, v.as_bytes())),
            ],
        }
    }

    #[test]
    fn one_client_or_sticky_value_holds_at_most_its_share_of_the_window() {
        let now = Instant::now();
        let mut w = Window::new(Duration::from_secs(60), now);
        let record = |w: &mut Window, c: Client| w.record(now, Version::Canary, true, c, 100);
        // min_requests 100: each key may hold 5 until the window passes 100.
        let one = client("10.0.0.1", None);
        let counted = (0..50).filter(|_| record(&mut w, one).is_some()).count();
        assert_eq!(counted, 5);
        // The same sticky value from many addresses: 5 as well.
        let counted = (0..50)
            .filter(|i| record(&mut w, client(&format!("10.1.0.{i}"), Some("alice"))).is_some())
            .count();
        assert_eq!(counted, 5);
        // The other version has its own share.
        assert!(w.record(now, Version::Stable, true, one, 100).is_some());
        // Distinct clients fill the window; past 100 each may hold 5%.
        for i in 0..200 {
            let c = client(&format!("10.2.{}.{}", i / 200, i % 200), None);
            assert!(record(&mut w, c).is_some(), "client {i}");
        }
        let [_, canary] = w.totals(0);
        assert_eq!(canary.total, 210);
        // 5% of 210 is 10: `one` (5 counted) gets 5 more, then no more.
        let counted = (0..50).filter(|_| record(&mut w, one).is_some()).count();
        assert_eq!(counted, 5);
        // No keys (no address known): no cap.
        assert!(record(&mut w, Client::default()).is_some());
        // Forgotten with its slot: a minute later `one` counts again.
        let later = now + Duration::from_secs(61);
        assert!(w.record(later, Version::Canary, true, one, 100).is_some());
    }

    #[test]
    fn an_ipv6_client_is_its_64_and_a_mapped_ipv4_its_address() {
        let key_of = |ip: &str| key(0, &client_prefix(ip.parse().unwrap()));
        assert_eq!(key_of("2001:db8:1:2::1"), key_of("2001:db8:1:2:ffff::9"));
        assert_ne!(key_of("2001:db8:1:2::1"), key_of("2001:db8:1:3::1"));
        assert_eq!(key_of("::ffff:10.0.0.1"), key_of("10.0.0.1"));
        assert_ne!(key_of("10.0.0.1"), key_of("10.0.0.2"));
    }

    #[test]
    fn a_slot_remembers_a_bounded_number_of_keys() {
        let now = Instant::now();
        let mut w = Window::new(Duration::from_secs(60), now);
        for i in 0..MAX_KEYS_PER_SLOT + 500 {
            let c = Client {
                keys: [Some(i as u64), None],
            };
            assert!(w.record(now, Version::Canary, false, c, 1).is_some());
        }
        assert_eq!(w.slots[0].keys.len(), MAX_KEYS_PER_SLOT);
    }

    #[test]
    fn percentiles_are_stable_and_spread() {
        assert_eq!(percentile(b"alice"), percentile(b"alice"));
        let below_10 = (0..10_000)
            .filter(|i| percentile(format!("user-{i}").as_bytes()) < 10)
            .count();
        // Binomial(10 000, 0.1): 99.9% within ±99.
        assert!((901..=1099).contains(&below_10), "{below_10}");
        let random_below_10 = (0..10_000).filter(|_| random_percentile() < 10).count();
        assert!((901..=1099).contains(&random_below_10), "{random_below_10}");
    }

    #[test]
    fn a_phase_has_one_spelling_in_json_and_in_words() {
        let json = serde_json::to_string(&Phase::RolledBack).unwrap();
        assert_eq!(json, "\"rolled_back\"");
        assert_eq!(Phase::RolledBack.to_string(), "rolled back");
        assert_eq!(Phase::Promoted.to_string(), "promoted");
    }
}
