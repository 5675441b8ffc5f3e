//! The Rust-side baselines that the C figures are compared with, and the
//! candidate registry designs.
//!
//! One mode per process, like `benches/c/c_bench.c`; each prints one JSON
//! object `{"figure": [samples...], "info": {...}}` that `benches/report.py`
//! folds into median/min/max. `benches/run.sh` runs every mode beside its C
//! counterpart in the same invocation.
//!
//! Usage: baselines MODE [COUNT]
//!   channel_throughput  COUNT boxed no-op closures through a bare channel to one thread
//!   channel_wake        send-to-start latency of a bare channel on an idle thread
//!   serde_floor         serde_json of the library's own k=0 status, alone
//!   plain_burst         the plain HashMap + one lock design: slowest submit and read while COUNT are submitted
//!   plain_writer_hot    the plain design: status read latency while a task reports progress in a tight loop
//!   registry_designs    single-threaded insert stalls of the candidate registry designs, COUNT ids

mod channel;
mod measure;
mod plain;
mod registry_designs;
mod serde_floor;
mod wire;

fn main() {
    // `cargo bench` appends `--bench`; nothing else is expected.
    let args: Vec<String> = std::env::args().skip(1).filter(|arg| arg != "--bench").collect();
    let Some(mode) = args.first() else {
        eprintln!("usage: baselines MODE [COUNT] (see benches/baselines/main.rs)");
        std::process::exit(2);
    };
    let count: usize = args.get(1).map_or(1_000_000, |text| text.parse().expect("COUNT is a number")).max(1);
    let report = match mode.as_str() {
        "channel_throughput" => channel::throughput(count),
        "channel_wake" => channel::wake(),
        "serde_floor" => serde_floor::run(),
        "plain_burst" => plain::burst(count),
        "plain_writer_hot" => plain::writer_hot(),
        "registry_designs" => registry_designs::run(count),
        other => {
            eprintln!("baselines: unknown mode {other}");
            std::process::exit(2);
        }
    };
    println!("{report}");
}
