//! A closed-loop load generator that knows nothing about omraft: N workers, each with its own
//! [`Writer`] (its own connection), take unique write numbers from a shared counter and issue
//! writes back to back for a fixed time after a warm-up. Every measured write's latency is kept.
//!
//! Any system can be measured by giving it writers: an omraft node's gRPC API, or an etcd
//! cluster's, as long as one write is `async fn write(&mut self, i: u64) -> Result<(), String>`.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One connection's way to perform write number `i` (unique across the whole run).
pub trait Writer: Send + 'static {
    fn write(&mut self, i: u64) -> impl Future<Output = Result<(), String>> + Send;
}

/// Any `FnMut(u64) -> impl Future<Output = Result<(), String>>` is a writer.
impl<F, Fut> Writer for F
where
    F: FnMut(u64) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    fn write(&mut self, i: u64) -> impl Future<Output = Result<(), String>> + Send {
        self(i)
    }
}

/// How long each level runs.
#[derive(Debug, Clone, Copy)]
pub struct Phases {
    /// Writes issued before this are not counted (but their failures are).
    pub warmup: Duration,
    /// Writes started within this window after the warm-up are measured.
    pub measure: Duration,
    /// A write that takes longer than this counts as failed; it bounds every loop.
    pub timeout: Duration,
}

/// What one level measured.
#[derive(Debug, Clone)]
pub struct Level {
    pub concurrency: usize,
    /// Successful writes started in the measurement window.
    pub writes: u64,
    /// Failed or timed-out writes, warm-up included.
    pub errors: u64,
    /// Every write attempted, warm-up included.
    pub attempts: u64,
    /// From the end of the warm-up to the last measured write's completion.
    pub elapsed: Duration,
    /// Latencies of the measured successful writes, sorted.
    pub latencies: Vec<Duration>,
    /// A few distinct error messages, to report.
    pub error_samples: Vec<String>,
}

impl Level {
    pub fn writes_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.writes as f64 / secs
        } else {
            0.0
        }
    }

    /// Nearest-rank percentile in milliseconds (0 when nothing was measured).
    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        let rank = ((p / 100.0) * self.latencies.len() as f64).ceil() as usize;
        let idx = rank.clamp(1, self.latencies.len()) - 1;
        self.latencies[idx].as_secs_f64() * 1000.0
    }

    pub fn error_ratio(&self) -> f64 {
        if self.attempts == 0 {
            0.0
        } else {
            self.errors as f64 / self.attempts as f64
        }
    }
}

struct WorkerResult {
    latencies: Vec<Duration>,
    last_done: Option<Instant>,
    errors: u64,
    attempts: u64,
    error_samples: Vec<String>,
}

const MAX_SAMPLES: usize = 5;

/// Runs one level: one task per writer, `writers.len()` concurrent writes in flight, write
/// numbers taken from `next`. Panics of a worker are propagated.
pub async fn run_level<W: Writer>(writers: Vec<W>, next: Arc<AtomicU64>, phases: Phases) -> Level {
    let concurrency = writers.len();
    let start = Instant::now();
    let measure_from = start + phases.warmup;
    let stop_at = measure_from + phases.measure;
    let mut tasks = tokio::task::JoinSet::new();
    for mut w in writers {
        let next = next.clone();
        tasks.spawn(async move {
            let mut r = WorkerResult {
                latencies: Vec::new(),
                last_done: None,
                errors: 0,
                attempts: 0,
                error_samples: Vec::new(),
            };
            // Bounded: no write starts after `stop_at` and each one lasts at most `timeout`.
            while Instant::now() < stop_at {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let t0 = Instant::now();
                let outcome = match tokio::time::timeout(phases.timeout, w.write(i)).await {
                    Ok(res) => res,
                    Err(_) => Err(format!("no answer within {:?}", phases.timeout)),
                };
                let done = Instant::now();
                r.attempts += 1;
                match outcome {
                    Ok(()) if t0 >= measure_from => {
                        r.latencies.push(done - t0);
                        r.last_done = Some(done);
                    }
                    Ok(()) => {}
                    Err(e) => {
                        r.errors += 1;
                        if r.error_samples.len() < MAX_SAMPLES && !r.error_samples.contains(&e) {
                            r.error_samples.push(e);
                        }
                    }
                }
            }
            r
        });
    }
    let mut level = Level {
        concurrency,
        writes: 0,
        errors: 0,
        attempts: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
        error_samples: Vec::new(),
    };
    let mut last_done = stop_at;
    while let Some(joined) = tasks.join_next().await {
        let r = match joined {
            Ok(r) => r,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("a load worker was cancelled: {e}"),
        };
        level.writes += r.latencies.len() as u64;
        level.latencies.extend(r.latencies);
        level.errors += r.errors;
        level.attempts += r.attempts;
        if let Some(d) = r.last_done {
            last_done = last_done.max(d);
        }
        for e in r.error_samples {
            if level.error_samples.len() < MAX_SAMPLES && !level.error_samples.contains(&e) {
                level.error_samples.push(e);
            }
        }
    }
    level.elapsed = last_done - measure_from;
    level.latencies.sort_unstable();
    level
}
