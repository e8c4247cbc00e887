//! Load driver for the daemon (issue 5's targets): decisions over the agent socket, end to end,
//! every one durable in the audit log before its answer.
//!
//! ```sh
//! cargo run --release -p faramesh-daemon --example load                      # everything
//! cargo run --release -p faramesh-daemon --example load -- latency           # one client
//! cargo run --release -p faramesh-daemon --example load -- throughput 16 64  # these counts
//! cargo run --release -p faramesh-daemon --example load -- fsync
//! ```
//!
//! The daemon runs in this process (its own runtime, as `faramesh daemon` runs it) on a
//! temporary stack under `$TMPDIR`; clients are OS threads with blocking Unix sockets, one
//! persistent connection each, one request in flight per connection, as an SDK does.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const POLICY: &str = r#"
runtime {
  durability = "DURABILITY"
}

agent "support-bot" {
  default deny
  rules {
    permit search_docs
    permit stripe/refund if amount < $500 and currency in ["usd", "eur"]
    defer  stripe/refund if amount >= $500
    deny   stripe/payouts
  }
  rate_limit "stripe/refund": 1000000000 per second
  redact stripe/refund args: ["customer.email"]
}
"#;

const REQUEST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"decide","params":{"agent":"support-bot","session":"s-1","tool":"stripe/refund","args":{"amount":80,"currency":"usd","customer":{"email":"ada@example.com","id":"cus_123"},"reason":"duplicate charge"}}}"#;

struct Daemon {
    stack: PathBuf,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
    _tmp: tempfile::TempDir,
}

impl Daemon {
    fn start(durability: &str) -> Daemon {
        let tmp = tempfile::Builder::new()
            .prefix("faramesh-load-")
            .tempdir()
            .unwrap();
        let stack = tmp.path().to_path_buf();
        std::fs::write(
            stack.join("governance.fms"),
            POLICY.replace("DURABILITY", durability),
        )
        .unwrap();
        let opts = daemon::server::Options {
            stack: stack.clone(),
            dev: false,
        };
        let thread = std::thread::spawn(move || daemon::server::run(opts));
        let deadline = Instant::now() + Duration::from_secs(30);
        while daemon::server::RunInfo::read(&stack).is_none() {
            assert!(Instant::now() < deadline, "the daemon did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        Daemon {
            stack,
            thread: Some(thread),
            _tmp: tmp,
        }
    }

    fn socket(&self) -> PathBuf {
        daemon::stack::default_socket(&self.stack)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let admin = daemon::stack::admin_socket(&self.stack);
        if let Ok(mut c) = daemon::client::Client::connect(&admin, Duration::from_secs(10)) {
            let _ = c.call("stop", serde_json::json!({}));
        }
        if let Some(t) = self.thread.take() {
            t.join().unwrap().unwrap();
        }
    }
}

struct Conn {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    line: String,
}

impl Conn {
    fn open(path: &Path) -> Conn {
        let s = UnixStream::connect(path).unwrap();
        Conn {
            writer: s.try_clone().unwrap(),
            reader: BufReader::new(s),
            line: String::new(),
        }
    }

    /// One decision; panics unless it is the expected permit.
    fn decide(&mut self, request: &[u8]) {
        self.writer.write_all(request).unwrap();
        self.line.clear();
        self.reader.read_line(&mut self.line).unwrap();
        assert!(
            self.line.contains("\"effect\":\"permit\""),
            "unexpected answer: {}",
            self.line
        );
    }
}

fn request() -> Vec<u8> {
    let mut r = REQUEST.as_bytes().to_vec();
    r.push(b'\n');
    r
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

/// One client, one request at a time: the round trip an agent sees.
fn latency(durability: &str, n: usize) {
    let d = Daemon::start(durability);
    let mut c = Conn::open(&d.socket());
    let req = request();
    for _ in 0..2_000 {
        c.decide(&req);
    }
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        c.decide(&req);
        times.push(t.elapsed());
    }
    times.sort();
    println!(
        "latency  durability={durability:<8} 1 client  n={n}  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        us(percentile(&times, 0.5)),
        us(percentile(&times, 0.9)),
        us(percentile(&times, 0.99)),
        us(percentile(&times, 0.999)),
        us(*times.last().unwrap()),
    );
}

/// `clients` connections, each looping for `secs`: decisions per second.
fn throughput(durability: &str, clients: usize, secs: f64) {
    let d = Daemon::start(durability);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let counting = Arc::new(AtomicBool::new(false));
    let socket = d.socket();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (stop, done, counting, socket) = (
                Arc::clone(&stop),
                Arc::clone(&done),
                Arc::clone(&counting),
                socket.clone(),
            );
            std::thread::spawn(move || {
                let mut c = Conn::open(&socket);
                let req = request();
                while !stop.load(Ordering::Relaxed) {
                    c.decide(&req);
                    if counting.load(Ordering::Relaxed) {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    counting.store(true, Ordering::Relaxed);
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    let n = done.load(Ordering::Relaxed);
    let took = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    println!(
        "throughput durability={durability:<8} {clients:>3} clients  {:>8.0} decisions/s",
        n as f64 / took.as_secs_f64()
    );
}

/// The disk's fsync latency where the store lives: write 4 KiB, fdatasync, 500 times.
fn fsync() {
    let dir = tempfile::Builder::new()
        .prefix("faramesh-fsync-")
        .tempdir()
        .unwrap();
    let mut f = std::fs::File::create(dir.path().join("f")).unwrap();
    let block = [7u8; 4096];
    let mut times = Vec::new();
    for _ in 0..500 {
        let t = Instant::now();
        f.write_all(&block).unwrap();
        f.sync_data().unwrap();
        times.push(t.elapsed());
    }
    times.sort();
    println!(
        "fsync    4 KiB write + fdatasync  p50 {}  p99 {}",
        us(percentile(&times, 0.5)),
        us(percentile(&times, 0.99))
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let what = args.first().map(String::as_str).unwrap_or("all");
    let counts: Vec<usize> = args.iter().skip(1).filter_map(|a| a.parse().ok()).collect();
    let counts = if counts.is_empty() {
        vec![1, 16, 64]
    } else {
        counts
    };
    let secs = std::env::var("LOAD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    if matches!(what, "all" | "fsync") {
        fsync();
    }
    if matches!(what, "all" | "latency") {
        latency("interval", 50_000);
        latency("sync", 5_000);
    }
    if matches!(what, "all" | "throughput") {
        for durability in ["interval", "sync"] {
            for &c in &counts {
                throughput(durability, c, secs);
            }
        }
    }
}
