//! The machine's limit for handing work to one thread: a bare `std::sync::mpsc`
//! channel of boxed closures, with nothing else (no registry, no status, no ids).

use std::hint::black_box;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::measure::{process_cpu_nanos, quantile, Report};

type Job = Box<dyn FnOnce() + Send>;

/// Same shape as the C side's `wake` mode: 5 chunks of 300 wakes, 1 ms idle before each.
const WAKE_CHUNKS: usize = 5;
const WAKE_PER_CHUNK: usize = 300;

fn spawn_consumer() -> (mpsc::Sender<Job>, thread::JoinHandle<()>) {
    let (sender, receiver) = mpsc::channel::<Job>();
    let consumer = thread::spawn(move || {
        for job in receiver {
            job();
        }
    });
    (sender, consumer)
}

/// `count` closures, each owning its index (so each is a real allocation, like a task), until the last ran.
pub fn throughput(count: usize) -> Report {
    let (sender, consumer) = spawn_consumer();
    let (done_sender, done) = mpsc::channel();
    let warm = done_sender.clone();
    sender.send(Box::new(move || warm.send(()).expect("main waits"))).expect("consumer runs");
    done.recv().expect("warm-up job ran");
    let cpu_before = process_cpu_nanos();
    let start = Instant::now();
    for index in 0..count as u64 - 1 {
        sender
            .send(Box::new(move || {
                black_box(index);
            }))
            .expect("consumer runs");
    }
    sender.send(Box::new(move || done_sender.send(()).expect("main waits"))).expect("consumer runs");
    done.recv().expect("last job ran");
    let seconds = start.elapsed().as_secs_f64();
    let cpu_ns_per_task = (process_cpu_nanos() - cpu_before) as f64 / count as f64;
    drop(sender);
    consumer.join().expect("consumer exits cleanly");
    Report::default()
        .samples("channel_limit_tasks_per_s", &[count as f64 / seconds])
        .info("count", count)
        .info("seconds", seconds)
        .info("cpu_ns_per_task", cpu_ns_per_task.round())
}

/// Send-to-start latency: the consumer is parked in `recv` after 1 ms of idleness.
pub fn wake() -> Report {
    let (sender, consumer) = spawn_consumer();
    let (mut p50, mut send_p50) = (Vec::with_capacity(WAKE_CHUNKS), Vec::with_capacity(WAKE_CHUNKS));
    for _ in 0..WAKE_CHUNKS {
        let (mut latencies, mut send_nanos) = (Vec::with_capacity(WAKE_PER_CHUNK), Vec::with_capacity(WAKE_PER_CHUNK));
        for _ in 0..WAKE_PER_CHUNK {
            let (started_sender, started) = mpsc::channel();
            thread::sleep(Duration::from_millis(1));
            let sent = Instant::now();
            sender.send(Box::new(move || started_sender.send(Instant::now()).expect("main waits"))).expect("consumer runs");
            send_nanos.push(sent.elapsed().as_nanos() as u64);
            let started_at: Instant = started.recv().expect("job ran");
            latencies.push(started_at.duration_since(sent).as_nanos() as u64);
        }
        p50.push(quantile(&mut latencies, 0.5) as f64 / 1e3);
        send_p50.push(quantile(&mut send_nanos, 0.5) as f64 / 1e3);
    }
    drop(sender);
    consumer.join().expect("consumer exits cleanly");
    Report::default().samples("channel_wake_us_p50", &p50).info("send_call_us_p50", send_p50)
}
