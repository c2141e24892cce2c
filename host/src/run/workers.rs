//! Request workers: one single-threaded tokio runtime per CPU, each on its
//! own thread.
//!
//! The acceptor hands each new connection to the worker with the fewest
//! open connections; from then on the connection, its requests and their
//! guests stay on that thread, with the socket registered in that worker's
//! own reactor. Nothing on the request path crosses threads: no work
//! stealing, no cross-CPU wake-ups, no shared timer wheel. Measured on a
//! 2-core VM this cut the host's CPU per request by about a third against
//! one multi-threaded runtime (bench/README.md).

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;

thread_local! {
    /// The index of the worker this thread is, on worker threads.
    static CURRENT: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The index of the request worker running the caller, if it runs on one.
pub fn current() -> Option<usize> {
    CURRENT.with(Cell::get)
}

/// The request worker threads of one server.
pub struct Workers {
    workers: Vec<Worker>,
}

struct Worker {
    handle: Handle,
    /// Connections this worker is serving (for picking the least busy).
    open: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Workers {
    /// Starts `count` worker threads (at least one).
    pub fn start(count: usize) -> io::Result<Workers> {
        let workers = (0..count.max(1))
            .map(Worker::start)
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Workers { workers })
    }

    /// Runs the future `make` builds on the least busy worker. `make` runs
    /// on that worker, so sockets it registers belong to its reactor.
    pub fn spawn<F, Fut>(&self, make: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let worker = self
            .workers
            .iter()
            .min_by_key(|w| w.open.load(Ordering::Relaxed))
            .expect("at least one worker");
        let open = worker.open.clone();
        open.fetch_add(1, Ordering::Relaxed);
        let guard = OpenGuard(open);
        worker.handle.spawn(async move {
            let _guard = guard;
            make().await;
        });
    }
}

impl Worker {
    fn start(index: usize) -> io::Result<Worker> {
        let runtime = Builder::new_current_thread().enable_all().build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("wasmlet-worker-{index}"))
            .spawn(move || {
                CURRENT.with(|current| current.set(Some(index)));
                runtime.block_on(async {
                    let _ = stopped.await;
                });
                // Dropping the runtime drops every task still on it: the
                // requests left after a drain, and their guests.
                drop(runtime);
            })?;
        Ok(Worker {
            handle,
            open: Arc::new(AtomicUsize::new(0)),
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Workers {
    /// Stops every worker, dropping whatever still runs on it, and waits.
    fn drop(&mut self) {
        for worker in &mut self.workers {
            if let Some(stop) = worker.stop.take() {
                let _ = stop.send(());
            }
        }
        for worker in &mut self.workers {
            if let Some(thread) = worker.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

struct OpenGuard(Arc<AtomicUsize>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn connections_go_to_the_least_busy_worker_and_stay_on_its_thread() {
        let workers = Workers::start(2).unwrap();
        let threads = Arc::new(Mutex::new(Vec::new()));
        let (release, held) = tokio::sync::watch::channel(false);
        for _ in 0..4 {
            let threads = threads.clone();
            let mut held = held.clone();
            workers.spawn(move || async move {
                let name = std::thread::current().name().map(str::to_owned);
                threads.lock().unwrap().push(name.clone());
                let _ = held.wait_for(|released| *released).await;
                // Still on the same thread after waiting.
                assert_eq!(std::thread::current().name().map(str::to_owned), name);
            });
        }
        while threads.lock().unwrap().len() < 4 {
            std::thread::yield_now();
        }
        let mut names = threads.lock().unwrap().clone();
        names.sort();
        let expected = [
            "wasmlet-worker-0",
            "wasmlet-worker-0",
            "wasmlet-worker-1",
            "wasmlet-worker-1",
        ];
        assert_eq!(names, expected.map(|n| Some(n.to_owned())));
        release.send(true).unwrap();
        drop(workers);
    }

    #[test]
    fn dropping_the_workers_drops_unfinished_tasks() {
        struct Flag(Arc<AtomicUsize>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let dropped = Arc::new(AtomicUsize::new(0));
        let workers = Workers::start(1).unwrap();
        let flag = Flag(dropped.clone());
        workers.spawn(move || async move {
            let _flag = flag;
            std::future::pending::<()>().await;
        });
        drop(workers);
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
    }
}
