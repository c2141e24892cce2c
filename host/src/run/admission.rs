//! Who may run now: admission control, the in-flight slot a request holds,
//! and the CPU share that keeps heavy guests from starving short ones.
//!
//! [`Admission`] caps the requests executing at once (--max-in-flight);
//! an admitted request holds an [`InFlight`] slot until its guest is done,
//! response body included. A guest that has run [`HEAVY_AFTER`] runs on
//! only with a [`CpuShare`] slot: a 0.2 guest through [`epoch_policy`], a
//! 0.3 instance through its [`CpuTurn`].

use crate::wasm::engine::{EPOCH_TICK, GuestRunning, TickerHandle};
use crate::wasm::sandbox::{self, HostState};
use prometheus_client::metrics::gauge::Gauge;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::UpdateDeadline;

/// Caps the requests executing at once; a request that cannot get a slot
/// within the queue timeout is rejected instead of piling up in memory.
#[derive(Debug, Clone)]
pub struct Admission {
    slots: Arc<Semaphore>,
    wait: Duration,
}

impl Admission {
    pub fn new(max_in_flight: u32, wait: Duration) -> Admission {
        Admission {
            slots: Arc::new(Semaphore::new(max_in_flight as usize)),
            wait,
        }
    }

    /// A slot for one request, or `None` if none freed up in time.
    /// A slot if one is free now, without waiting.
    pub fn try_admit(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().try_acquire_owned().ok()
    }

    pub async fn admit(&self) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Some(permit);
        }
        tokio::time::timeout(self.wait, self.slots.clone().acquire_owned())
            .await
            .ok()?
            .ok()
    }
}

/// A guest that has *run* this long is CPU-heavy: from then on it runs
/// only while holding a [`CpuShare`] slot. Counted in the time the guest
/// ran, not since it started: under load a 2.5 ms Python request spends
/// most of its wall-clock time waiting for its turn, and counting that made
/// every such request heavy, so all of them queued for the heavy guests'
/// slots and one of two cores idled (measured: 282 req/s at 64 connections
/// against 360 at 16).
pub const HEAVY_AFTER: Duration = Duration::from_millis(10);

/// Keeps CPU-heavy guests (a loop, a long computation) from starving short
/// requests: at most all but one worker thread run a heavy guest at any
/// moment. A heavy guest takes a slot to run, gives it back and queues
/// again (FIFO) at each epoch tick, and gives it back whenever it waits for
/// I/O. Short requests on a worker that is running a heavy guest still get
/// a turn at every tick, since the guest yields to its worker's other tasks.
#[derive(Debug, Clone)]
pub struct CpuShare {
    slots: Arc<Semaphore>,
}

impl CpuShare {
    /// Shares `workers - 1` threads (at least one) among heavy guests.
    pub fn new(workers: usize) -> CpuShare {
        CpuShare {
            slots: Arc::new(Semaphore::new(workers.saturating_sub(1).max(1))),
        }
    }

    /// Waits for a slot, queueing behind other heavy guests.
    pub async fn take(&self) -> OwnedSemaphorePermit {
        self.slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed")
    }
}

/// One guest's turn under [`CpuShare`]: the epoch ticks it has run, and
/// the slot it holds while it runs heavy. A 0.2 request gets one for its
/// run; a 0.3 instance one for its life, counted afresh each time it goes
/// idle.
#[derive(Clone)]
pub struct CpuTurn {
    share: CpuShare,
    /// [`HEAVY_AFTER`] in epoch ticks.
    heavy_after: u64,
    ticks: Arc<AtomicU64>,
    slot: Arc<Mutex<Option<OwnedSemaphorePermit>>>,
}

impl CpuTurn {
    /// A turn for a guest whose epoch advances every `epoch_tick`.
    pub fn new(share: CpuShare, epoch_tick: Duration) -> CpuTurn {
        let heavy_after = HEAVY_AFTER.as_nanos() / epoch_tick.as_nanos().max(1);
        CpuTurn {
            share,
            heavy_after: u64::try_from(heavy_after).unwrap_or(u64::MAX),
            ticks: Arc::default(),
            slot: Arc::default(),
        }
    }

    /// What the guest does at an epoch tick: yields to its worker's other
    /// tasks, and once it has run [`HEAVY_AFTER`] also gives its slot
    /// back and queues for one (FIFO) before it runs on. It yields first
    /// even then: a free slot is taken without waiting, and a guest that
    /// never waits never lets its worker (or a 0.3 instance's driver,
    /// which enforces its deadlines between polls) run anything else.
    pub fn tick(&self) -> UpdateDeadline {
        if self.ticks.fetch_add(1, Ordering::Relaxed) + 1 < self.heavy_after {
            return UpdateDeadline::Yield(1);
        }
        self.release();
        let turn = self.clone();
        UpdateDeadline::YieldCustom(
            1,
            Box::pin(async move {
                tokio::task::yield_now().await;
                let permit = turn.share.take().await;
                *turn.slot.lock().unwrap() = Some(permit);
            }),
        )
    }

    /// Gives the slot back: the guest waits (for I/O, a timer) or is done.
    pub fn release(&self) {
        let permit = self.slot.lock().unwrap().take();
        drop(permit);
    }

    /// Counts the guest's running time from zero again.
    pub fn reset(&self) {
        self.ticks.store(0, Ordering::Relaxed);
    }

    /// Whether the guest holds a slot now.
    pub fn holds_slot(&self) -> bool {
        self.slot.lock().unwrap().is_some()
    }
}

/// One request slot from admission control; counted in the in-flight gauge
/// and keeping the epoch ticker going while held. It moves into the guest
/// task, so a request streaming its response body still holds its slot.
pub struct InFlight {
    _permit: OwnedSemaphorePermit,
    _ticking: GuestRunning,
    gauge: Gauge,
}

impl InFlight {
    pub fn new(permit: OwnedSemaphorePermit, gauge: &Gauge, ticker: &TickerHandle) -> InFlight {
        gauge.inc();
        InFlight {
            _permit: permit,
            _ticking: ticker.guest_running(),
            gauge: gauge.clone(),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// The CPU slot a heavy guest holds while it runs (see [`CpuShare`]).
#[derive(Clone, Default)]
pub struct HeavySlot(Arc<Mutex<Option<OwnedSemaphorePermit>>>);

impl HeavySlot {
    pub fn release(&self) {
        self.0.lock().unwrap().take();
    }
}

/// What the guest does at each epoch tick: past its deadline it is
/// interrupted (a CPU loop never reaches an await); before that it yields to
/// other tasks, and once it counts as heavy it also queues for a CPU slot.
///
/// This runs only while the guest runs, at the first tick boundary after
/// it was (re)scheduled, so the number of calls is the guest's running
/// time in ticks, give or take one per turn; waiting for its turn behind
/// other guests does not count towards [`HEAVY_AFTER`].
pub fn epoch_policy(
    deadline: std::time::Instant,
    cpu_share: CpuShare,
    slot: HeavySlot,
) -> impl FnMut(wasmtime::StoreContextMut<'_, HostState>) -> wasmtime::Result<UpdateDeadline>
+ Send
+ Sync
+ 'static {
    let heavy_after_ticks = HEAVY_AFTER.as_nanos() / EPOCH_TICK.as_nanos().max(1);
    let mut ticks_run: u128 = 0;
    move |store| {
        sandbox::charge_host_memory(store)?;
        if std::time::Instant::now() >= deadline {
            return Ok(UpdateDeadline::Interrupt);
        }
        ticks_run += 1;
        if ticks_run < heavy_after_ticks {
            return Ok(UpdateDeadline::Yield(1));
        }
        slot.release();
        let (share, slot) = (cpu_share.clone(), slot.clone());
        Ok(UpdateDeadline::YieldCustom(
            1,
            Box::pin(async move {
                let permit = share.take().await;
                *slot.0.lock().unwrap() = Some(permit);
            }),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cpu_share_leaves_one_worker_free() {
        let share = CpuShare::new(4);
        let held = [share.take().await, share.take().await, share.take().await];
        let fourth = tokio::time::timeout(Duration::from_millis(20), share.take()).await;
        assert!(fourth.is_err(), "three of four workers at most");
        drop(held);
        assert_eq!(CpuShare::new(1).slots.available_permits(), 1);
    }

    #[tokio::test]
    async fn a_heavy_turn_queues_for_a_slot_and_gives_it_back() {
        let share = CpuShare::new(2);
        let tick = Duration::from_millis(1);
        let (one, two) = (CpuTurn::new(share.clone(), tick), CpuTurn::new(share, tick));
        let heavy_after = HEAVY_AFTER.as_millis();
        for _ in 1..heavy_after {
            assert!(matches!(one.tick(), UpdateDeadline::Yield(1)), "light yet");
        }
        let UpdateDeadline::YieldCustom(1, wait) = one.tick() else {
            panic!("heavy now: it queues for a slot");
        };
        wait.await;
        assert!(one.holds_slot());
        for _ in 0..heavy_after {
            two.tick();
        }
        let UpdateDeadline::YieldCustom(1, wait) = two.tick() else {
            panic!("heavy");
        };
        let mut wait = std::pin::pin!(wait);
        assert!(
            tokio::time::timeout(Duration::from_millis(20), wait.as_mut())
                .await
                .is_err(),
            "one slot for two workers: the second waits"
        );
        one.release();
        wait.await;
        assert!(two.holds_slot() && !one.holds_slot());
        two.release();
        two.reset();
        assert!(
            matches!(two.tick(), UpdateDeadline::Yield(1)),
            "light again"
        );
    }

    #[tokio::test]
    async fn admission_rejects_past_the_cap_after_the_wait() {
        let admission = Admission::new(1, Duration::from_millis(20));
        let first = admission.admit().await;
        assert!(first.is_some());
        assert!(admission.admit().await.is_none());
        drop(first);
        assert!(admission.admit().await.is_some());
    }
}
