//! Timing helpers and the report shape shared by every mode.

use serde_json::{json, Map, Value};

/// Samples per figure plus free-form diagnostics, printed as one JSON object.
#[derive(Default)]
pub struct Report {
    figures: Map<String, Value>,
    info: Map<String, Value>,
}

impl Report {
    /// Adds the samples of one figure.
    pub fn samples(mut self, name: &str, samples: &[f64]) -> Self {
        self.figures.insert(name.into(), json!(samples));
        self
    }

    /// Adds one diagnostic value (not a figure: shown beside the table, never compared).
    pub fn info(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.info.insert(name.into(), value.into());
        self
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut object = self.figures.clone();
        if !self.info.is_empty() {
            object.insert("info".into(), Value::Object(self.info.clone()));
        }
        write!(f, "{}", Value::Object(object))
    }
}

/// The q-quantile (0..=1) of `values` by nearest rank; sorts them.
pub fn quantile(values: &mut [u64], q: f64) -> u64 {
    values.sort_unstable();
    let rank = ((q * values.len() as f64) as usize).min(values.len() - 1);
    values[rank]
}

/// The slowest calls of a run and where they happened (the registry's size then).
pub struct Slowest {
    kept: Vec<(u64, u64)>,
}

impl Slowest {
    const KEPT: usize = 5;

    pub fn new() -> Self {
        Self { kept: vec![(0, 0); Self::KEPT] }
    }

    /// Keeps `(nanos, at)` if it is among the slowest so far.
    pub fn offer(&mut self, nanos: u64, at: u64) {
        let smallest = (0..Self::KEPT).min_by_key(|&i| self.kept[i].0).expect("KEPT > 0");
        if nanos > self.kept[smallest].0 {
            self.kept[smallest] = (nanos, at);
        }
    }

    pub fn max_us(&self) -> f64 {
        self.kept.iter().map(|&(nanos, _)| nanos).max().unwrap_or(0) as f64 / 1e3
    }

    /// `[[microseconds, at], ...]` for the report's info.
    pub fn to_json(&self) -> Value {
        json!(self.kept.iter().map(|&(nanos, at)| json!([nanos as f64 / 1e3, at])).collect::<Vec<_>>())
    }
}

/// A small xorshift generator: the readers' choice of task must cost next to nothing.
pub struct XorShift(u64);

impl XorShift {
    pub fn new() -> Self {
        Self(0x9E37_79B9_7F4A_7C15)
    }

    pub fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

/// CPU time this process used so far (all threads), in nanoseconds: unlike wall
/// time, other load on the machine barely moves it.
pub fn process_cpu_nanos() -> u64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given; RUSAGE_SELF is always valid.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    (micros(usage.ru_utime) + micros(usage.ru_stime)) * 1000
}

/// Context switches of the calling thread so far, voluntary (it blocked) or
/// not (the scheduler took its core away). A timed window in which this did not
/// change ran on its core throughout, so a slow call inside it was slow by itself.
pub fn thread_switches() -> u64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given; RUSAGE_THREAD is valid on Linux.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr());
        usage.assume_init()
    };
    (usage.ru_nvcsw + usage.ru_nivcsw) as u64
}

/// The slowest calls of windows of 64 calls in which the calling thread never
/// left its core: what the code itself costs at worst, page faults included.
/// On a loaded 2-core machine the slowest call is otherwise often one that
/// waited out a 4 ms scheduler tick, its own or a lock holder's. One getrusage
/// per window keeps this cheap.
pub struct Uninterrupted {
    kept: Slowest,
    switches_at_window_start: u64,
    calls_in_window: usize,
    candidates: Vec<(u64, u64)>,
    over_100us: u64,
}

impl Uninterrupted {
    const WINDOW: usize = 64;

    pub fn new() -> Self {
        Self {
            kept: Slowest::new(),
            switches_at_window_start: thread_switches(),
            calls_in_window: 0,
            candidates: Vec::new(),
            over_100us: 0,
        }
    }

    /// Notes one call of `nanos` at `at`; `last` closes the final, possibly short, window.
    pub fn offer(&mut self, nanos: u64, at: u64, last: bool) {
        if nanos > 20_000 {
            self.candidates.push((nanos, at));
        }
        self.calls_in_window += 1;
        if self.calls_in_window < Self::WINDOW && !last {
            return;
        }
        let now = thread_switches();
        if now == self.switches_at_window_start {
            for &(nanos, at) in &self.candidates {
                self.kept.offer(nanos, at);
                self.over_100us += u64::from(nanos > 100_000);
            }
        }
        self.switches_at_window_start = now;
        self.calls_in_window = 0;
        self.candidates.clear();
    }

    pub fn slowest(&self) -> &Slowest {
        &self.kept
    }

    /// How many calls of uninterrupted windows took over 100 us.
    pub fn over_100us(&self) -> u64 {
        self.over_100us
    }
}
