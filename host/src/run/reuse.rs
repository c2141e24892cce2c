//! Opt-in instance reuse: a route's instances kept between requests.
//!
//! By default every request gets a fresh instance. A route with
//! `max_instance_reuse = N` (or --max-instance-reuse-count) above 1 keeps an
//! instance that answered cleanly and hands it to a later request of the
//! same route and component version, until it has served N requests or sat
//! idle for `idle_instance_timeout`. Each request still gets its own epoch
//! deadline, timeout, body limits, admission slot and WASI context (and so
//! its own log lines and output budget); what persists is the guest's
//! globals and linear memory (docs/reuse.md).
//!
//! An instance is only kept when its request ended cleanly: a trap, a
//! timeout, a memory limit hit (even one the guest survived), a refused
//! request body, or an HTTP resource of its request left open retires it. Its store, and with it the memory
//! budget's charge, lives as long as the instance, idle or busy; when a
//! charge does not fit the budget, idle instances are dropped, longest idle
//! first, before anything is refused ([`IdleSlots::evict`]). Idle
//! instances hold pool slots and fiber stacks, so the host keeps at most
//! [`MAX_IDLE_INSTANCES`] of them over all routes, and the engine's pool
//! has room for that many beyond --max-in-flight.

use crate::config::limits::RequestLimits;
use crate::observe::metrics::InstanceMetrics;
use crate::wasm::engine::MAX_IDLE_INSTANCES;
use crate::wasm::sandbox::HostState;
use crate::wasm::sandbox::MemoryBudget;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once, Weak};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use wasmtime::Store;
use wasmtime_wasi_http::p2::bindings::Proxy;

/// The shortest interval at which idle instances are looked over, so a
/// tiny `idle_instance_timeout` does not make a busy timer.
const MIN_SWEEP: Duration = Duration::from_millis(10);

/// The host-wide allowance of idle instances, shared by every route, and
/// the way to reach them all when memory runs short.
#[derive(Clone)]
pub struct IdleSlots(Arc<IdleInner>);

struct IdleInner {
    slots: Arc<Semaphore>,
    size: usize,
    /// The 0.2 routes' pools that have kept an instance.
    pools: Mutex<Vec<Weak<dyn Evictable>>>,
    /// Bumped to ask idle 0.3 instances to leave: they belong to their
    /// driver's task, so they go at its next turn, not at once.
    evict_p3: watch::Sender<u64>,
}

/// A pool whose idle instances can be dropped on demand.
trait Evictable: Send + Sync {
    /// When its longest-idle instance was parked.
    fn oldest(&self) -> Option<Instant>;
    /// Drops that instance; false if none was idle.
    fn evict_oldest(&self) -> bool;
}

impl Default for IdleSlots {
    fn default() -> Self {
        IdleSlots::new(MAX_IDLE_INSTANCES as usize)
    }
}

impl IdleSlots {
    pub fn new(slots: usize) -> IdleSlots {
        IdleSlots(Arc::new(IdleInner {
            slots: Arc::new(Semaphore::new(slots)),
            size: slots,
            pools: Mutex::new(Vec::new()),
            evict_p3: watch::Sender::new(0),
        }))
    }

    /// The host's allowance, evicted from when `budget` runs short.
    pub fn for_budget(budget: Option<&MemoryBudget>) -> IdleSlots {
        let slots = IdleSlots::default();
        if let Some(budget) = budget {
            let evicting = slots.clone();
            budget.evict_with(move || evicting.evict());
        }
        slots
    }

    /// One slot, if any is free; held until the permit drops.
    pub fn try_take(&self) -> Option<OwnedSemaphorePermit> {
        self.0.slots.clone().try_acquire_owned().ok()
    }

    /// Instances idle now, over all routes.
    pub fn idle_count(&self) -> usize {
        self.0.size - self.0.slots.available_permits()
    }

    fn register(&self, pool: Weak<dyn Evictable>) {
        let mut pools = self.0.pools.lock().unwrap();
        pools.retain(|p| p.strong_count() > 0);
        pools.push(pool);
    }

    /// Called when memory runs short: drops the longest-idle 0.2
    /// instance, over all routes, and returns true; when none is left,
    /// asks the idle 0.3 instances to leave (they go at their driver's
    /// next turn, see [`crate::run::p3`]) and returns false.
    pub fn evict(&self) -> bool {
        let pools: Vec<Arc<dyn Evictable>> = {
            let mut pools = self.0.pools.lock().unwrap();
            pools.retain(|p| p.strong_count() > 0);
            pools.iter().filter_map(Weak::upgrade).collect()
        };
        let oldest = pools
            .iter()
            .filter_map(|pool| Some((pool.oldest()?, pool)))
            .min_by_key(|(since, _)| *since);
        if let Some((_, pool)) = oldest
            && pool.evict_oldest()
        {
            return true;
        }
        if self.idle_count() > 0 {
            self.0.evict_p3.send_modify(|n| *n = n.wrapping_add(1));
        }
        false
    }

    /// Resolves at the next [`IdleSlots::evict`] that finds no 0.2
    /// instance to drop: an idle 0.3 instance waits on it.
    pub fn eviction(&self) -> impl Future<Output = ()> + Send + Sync + 'static {
        let mut asked = self.0.evict_p3.subscribe();
        async move {
            // The sender lives as long as any `IdleSlots`.
            let _ = asked.changed().await;
        }
    }
}

/// An instance with its store, taken out of the pool or just made.
pub struct Warm {
    pub store: Store<HostState>,
    pub proxy: Proxy,
    /// Requests it has served so far.
    pub served: u32,
}

/// What the pool holds: a [`Warm`] instance (something simpler in tests).
pub trait Reusable: Send + 'static {
    /// Requests it has served so far.
    fn served(&self) -> u32;
}

impl Reusable for Warm {
    fn served(&self) -> u32 {
        self.served
    }
}

struct Idle<W> {
    warm: W,
    since: Instant,
    _slot: OwnedSemaphorePermit,
}

/// One route version's instances kept for reuse (none when reuse is off).
pub struct Instances<W: Reusable = Warm> {
    max_reuse: u32,
    idle_timeout: Duration,
    idle: Mutex<Vec<Idle<W>>>,
    slots: IdleSlots,
    metrics: InstanceMetrics,
    /// Whether a sweeper task is watching `idle`.
    sweeping: AtomicBool,
    /// Registers the pool with `slots` for eviction, on first use.
    registered: Once,
}

impl<W: Reusable> Instances<W> {
    pub fn new(limits: &RequestLimits, slots: IdleSlots, metrics: InstanceMetrics) -> Instances<W> {
        Instances {
            max_reuse: limits.max_instance_reuse.max(1),
            idle_timeout: limits.idle_instance_timeout,
            idle: Mutex::new(Vec::new()),
            slots,
            metrics,
            sweeping: AtomicBool::new(false),
            registered: Once::new(),
        }
    }

    /// Whether instances of this route may serve more than one request.
    pub fn reuses(&self) -> bool {
        self.max_reuse > 1
    }

    /// The most recently parked idle instance that has not expired, if any.
    pub fn take(&self) -> Option<W> {
        self.take_at(Instant::now())
    }

    fn take_at(&self, now: Instant) -> Option<W> {
        if !self.reuses() {
            return None;
        }
        let mut idle = self.idle.lock().unwrap();
        let expired = self.split_expired(&mut idle, now);
        let taken = idle.pop();
        drop(idle);
        self.retire_all(expired);
        let taken = taken?;
        self.metrics.idle.dec();
        Some(taken.warm)
    }

    /// Counts a new instance.
    pub fn created(&self) {
        self.metrics.created.inc();
    }

    /// Takes back an instance whose request ended cleanly (its `served`
    /// already counts that request). It is kept if it may serve more and
    /// an idle slot is free; otherwise it is dropped.
    pub fn put(self: &Arc<Self>, warm: W) {
        self.put_at(warm, Instant::now());
    }

    fn put_at(self: &Arc<Self>, warm: W, now: Instant) {
        if warm.served() >= self.max_reuse {
            return self.retire(warm);
        }
        let Some(slot) = self.slots.try_take() else {
            return self.retire(warm);
        };
        self.registered.call_once(|| {
            let me: Weak<dyn Evictable> = Arc::downgrade(self) as Weak<Self>;
            self.slots.register(me);
        });
        self.metrics.idle.inc();
        self.idle.lock().unwrap().push(Idle {
            warm,
            since: now,
            _slot: slot,
        });
        if !self.sweeping.swap(true, Ordering::AcqRel) {
            tokio::spawn(sweep(Arc::downgrade(self), self.sweep_interval()));
        }
    }

    /// Drops an instance, recording how many requests it served.
    pub fn retire(&self, warm: W) {
        self.retired(warm.served());
    }

    /// Records an instance dropped elsewhere (after a fault) that served
    /// `served` requests.
    pub fn retired(&self, served: u32) {
        self.metrics.requests.observe(f64::from(served));
    }

    fn sweep_interval(&self) -> Duration {
        (self.idle_timeout / 2).max(MIN_SWEEP)
    }

    /// Removes and returns the entries idle past the timeout (the oldest
    /// are first: entries are pushed in time order).
    fn split_expired(&self, idle: &mut Vec<Idle<W>>, now: Instant) -> Vec<Idle<W>> {
        let fresh_from = idle.partition_point(|entry| now - entry.since >= self.idle_timeout);
        idle.drain(..fresh_from).collect()
    }

    fn retire_all(&self, entries: Vec<Idle<W>>) {
        for entry in entries {
            self.metrics.idle.dec();
            self.retire(entry.warm);
        }
    }

    /// Drops expired idle instances; false once none is left to watch.
    fn sweep_once(&self) -> bool {
        let mut idle = self.idle.lock().unwrap();
        let expired = self.split_expired(&mut idle, Instant::now());
        let watching = !idle.is_empty();
        if !watching {
            // Under the lock, so a `put` either sees the flag cleared and
            // starts a sweeper, or has pushed before this check.
            self.sweeping.store(false, Ordering::Release);
        }
        drop(idle);
        self.retire_all(expired);
        watching
    }

    /// Instances idle now.
    pub fn idle_count(&self) -> usize {
        self.idle.lock().unwrap().len()
    }
}

impl<W: Reusable> Evictable for Instances<W> {
    fn oldest(&self) -> Option<Instant> {
        self.idle.lock().unwrap().first().map(|entry| entry.since)
    }

    fn evict_oldest(&self) -> bool {
        let mut idle = self.idle.lock().unwrap();
        if idle.is_empty() {
            return false;
        }
        let oldest = idle.remove(0);
        drop(idle);
        self.retire_all(vec![oldest]);
        true
    }
}

impl<W: Reusable> Drop for Instances<W> {
    fn drop(&mut self) {
        let idle = std::mem::take(self.idle.get_mut().unwrap());
        self.retire_all(idle);
    }
}

/// Drops a route's instances once they have been idle too long; ends when
/// none is idle or the route version is gone.
async fn sweep<W: Reusable>(instances: Weak<Instances<W>>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(instances) = instances.upgrade() else {
            return;
        };
        if !instances.sweep_once() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::limits::Limits;

    /// Stands in for an instance: how many requests it served, and a tag
    /// to tell instances apart.
    #[derive(Debug, PartialEq)]
    struct Fake(u32, &'static str);

    impl Reusable for Fake {
        fn served(&self) -> u32 {
            self.0
        }
    }

    fn pool(reuse: u32, idle: Duration, slots: usize) -> Arc<Instances<Fake>> {
        pool_on(reuse, idle, IdleSlots::new(slots))
    }

    /// A route's pool drawing on `slots`, which several routes may share.
    fn pool_on(reuse: u32, idle: Duration, slots: IdleSlots) -> Arc<Instances<Fake>> {
        let host = Limits {
            max_instance_reuse_count: reuse,
            idle_instance_timeout: idle,
            ..Limits::default()
        };
        let limits = RequestLimits::resolve(&host, &Default::default());
        Arc::new(Instances::new(&limits, slots, InstanceMetrics::default()))
    }

    fn served_histogram(instances: &Instances<Fake>) -> (u64, f64) {
        let mut text = String::new();
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("r", "r", instances.metrics.requests.clone());
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let value = |name: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
                .unwrap()
        };
        (value("r_count") as u64, value("r_sum"))
    }

    #[tokio::test]
    async fn without_reuse_nothing_is_kept() {
        let instances = pool(1, Duration::from_secs(1), 4);
        assert!(!instances.reuses());
        instances.put(Fake(1, "a"));
        assert_eq!(instances.take(), None);
        assert_eq!(instances.idle_count(), 0);
        assert_eq!(served_histogram(&instances), (1, 1.0));
    }

    #[tokio::test]
    async fn an_instance_serves_up_to_its_limit_then_is_dropped() {
        let instances = pool(3, Duration::from_secs(60), 4);
        instances.put(Fake(1, "a"));
        assert_eq!(instances.metrics.idle.get(), 1);
        let a = instances.take().unwrap();
        assert_eq!(a, Fake(1, "a"));
        assert_eq!(instances.metrics.idle.get(), 0);
        instances.put(Fake(2, "a"));
        let a = instances.take().unwrap();
        instances.put(Fake(a.0 + 1, "a"));
        assert_eq!(instances.take(), None, "served 3 of 3: dropped");
        assert_eq!(served_histogram(&instances), (1, 3.0));
    }

    #[tokio::test]
    async fn idle_slots_cap_the_instances_kept_over_all_routes() {
        let slots = IdleSlots::new(1);
        let idle = Limits::default().idle_instance_timeout;
        let one = pool_on(10, idle, slots.clone());
        let two = pool_on(10, idle, slots);
        one.put(Fake(1, "a"));
        two.put(Fake(1, "b"));
        assert_eq!(two.idle_count(), 0, "no slot left: dropped");
        assert_eq!(one.take(), Some(Fake(1, "a")));
        two.put(Fake(1, "c"));
        assert_eq!(two.idle_count(), 1, "the slot came back when `a` was taken");
    }

    #[tokio::test]
    async fn idle_instances_expire_and_are_swept() {
        let instances = pool(10, Duration::from_millis(100), 4);
        let start = Instant::now();
        instances.put_at(Fake(1, "old"), start);
        instances.put_at(Fake(1, "new"), start + Duration::from_millis(60));
        // At 110 ms `old` has waited past the timeout, `new` 50 ms.
        let later = start + Duration::from_millis(110);
        assert_eq!(instances.take_at(later), Some(Fake(1, "new")));
        assert_eq!(instances.take_at(later), None, "`old` expired");
        assert_eq!(instances.metrics.idle.get(), 0);
        assert_eq!(served_histogram(&instances), (1, 1.0), "`old` retired");

        let swept = pool(10, Duration::from_millis(20), 4);
        swept.put(Fake(1, "swept"));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while swept.idle_count() > 0 || swept.sweeping.load(Ordering::Acquire) {
            assert!(std::time::Instant::now() < deadline, "never swept");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(swept.metrics.idle.get(), 0);
        swept.put(Fake(1, "again"));
        assert!(
            swept.sweeping.load(Ordering::Acquire),
            "a new sweeper starts"
        );
    }

    #[tokio::test]
    async fn eviction_drops_the_longest_idle_instance_over_all_routes_first() {
        let slots = IdleSlots::new(4);
        let one = pool_on(10, Duration::from_secs(60), slots.clone());
        let two = pool_on(10, Duration::from_secs(60), slots.clone());
        let start = Instant::now();
        one.put_at(Fake(1, "newer"), start + Duration::from_millis(5));
        two.put_at(Fake(1, "older"), start);
        let mut asked = std::pin::pin!(slots.eviction());
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(slots.evict());
        assert_eq!(two.idle_count(), 0, "`older` went first");
        assert_eq!(served_histogram(&two), (1, 1.0), "retired");
        assert!(slots.evict());
        assert_eq!((one.idle_count(), slots.idle_count()), (0, 0));
        assert!(!slots.evict(), "none left");
        assert!(
            asked.as_mut().poll(&mut cx).is_pending(),
            "nothing idle: no 0.3 instance asked to leave"
        );
        let _held = slots.try_take().expect("stands for an idle 0.3 instance");
        assert!(!slots.evict(), "it cannot be dropped from here");
        assert!(asked.as_mut().poll(&mut cx).is_ready(), "it is asked to");
    }

    #[tokio::test]
    async fn dropping_a_route_version_drops_its_idle_instances() {
        let instances = pool(10, Duration::from_secs(60), 4);
        let idle = instances.metrics.idle.clone();
        instances.put(Fake(1, "a"));
        instances.put(Fake(1, "b"));
        assert_eq!(idle.get(), 2);
        drop(instances);
        assert_eq!(idle.get(), 0);
    }
}
