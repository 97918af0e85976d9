//! What the shared topic log costs, against a real redis-server it starts itself (the one of
//! tests/common/redis.rs: loopback, `appendonly yes`, `appendfsync always`):
//!
//! - throughput: `PUBLISHES` publishes queued as fast as `publish` takes them (64-byte messages,
//!   over `TOPICS` topics) through one `RedisLog`; publishes/s until the last is acked, and
//!   until the last is reported `Appended`; and the CPU time each publish cost Redis (from its
//!   `INFO cpu`) and this process (`getrusage`), which vary less than a rate on a shared machine;
//! - latency, unloaded: `SAMPLES` publishes one at a time, each timed from `publish` to its
//!   `Appended` report (the channel hop, the script, the fsync, the notice, the channel hop
//!   back); p50, p99 and the maximum.
//!
//! `cargo bench --bench redis_log`. Needs redis-server on PATH (tests/run installs it). With
//! `APPENDFSYNC=everysec` (or `no`) in the environment, Redis fsyncs that way instead. The
//! figures in docs/scale-out.md come from this program.

#[allow(dead_code)]
#[path = "../tests/common/redis.rs"]
mod redis_server;

use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tether::redis_log::{LogSettings, RedisLog, Report};

const PUBLISHES: u64 = 200_000;
const TOPICS: u64 = 10;
const SAMPLES: u64 = 2_000;
/// No report should take this long; the bench stops rather than hang.
const WAIT: Duration = Duration::from_secs(60);

fn main() {
    let fsync = std::env::var("APPENDFSYNC").unwrap_or_else(|_| "always".into());
    let redis = redis_server::RedisServer::start_with(&["--appendfsync", &fsync]);
    println!("redis-server --appendfsync {fsync}");
    let (sender, reports) = mpsc::channel();
    let sink = Arc::new(move |report| {
        let _ = sender.send(report);
    });
    let settings = LogSettings { prefix: "bench".into(), ..LogSettings::new(1024, Duration::from_secs(600)) };
    let log = RedisLog::start(&redis.url(), settings, sink).expect("a valid URL");
    match next(&reports) {
        Report::Synced { .. } => {}
        other => panic!("expected Synced, got {other:?}"),
    }
    let data: Arc<str> = Arc::from("x".repeat(64));

    let mut inspector = redis.connection();
    let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query(&mut inspector).expect("CONFIG RESETSTAT");
    let (redis_cpu, own_cpu) = (redis_cpu_time(&mut inspector), own_cpu_time());
    let start = Instant::now();
    for ticket in 0..PUBLISHES {
        log.publish(ticket, &format!("topic{}", ticket % TOPICS), data.clone());
    }
    let queued = start.elapsed();
    let (mut acked, mut appended) = (0, 0);
    let (mut all_acked, mut all_appended) = (None, None);
    while all_acked.is_none() || all_appended.is_none() {
        match next(&reports) {
            Report::Acked { .. } => acked += 1,
            Report::Appended { .. } => appended += 1,
            other => panic!("unexpected {other:?}"),
        }
        if acked == PUBLISHES && all_acked.is_none() {
            all_acked = Some(start.elapsed());
        }
        if appended == PUBLISHES && all_appended.is_none() {
            all_appended = Some(start.elapsed());
        }
    }
    let redis_cpu = redis_cpu_time(&mut inspector).saturating_sub(redis_cpu);
    let own_cpu = own_cpu_time().saturating_sub(own_cpu);
    let rate = |elapsed: Option<Duration>| PUBLISHES as f64 / elapsed.map_or(f64::NAN, |e| e.as_secs_f64());
    println!("throughput: {PUBLISHES} publishes of 64 bytes over {TOPICS} topics, queued in {queued:.2?}");
    println!("  all acked    after {:.2?}: {:.0} publishes/s", all_acked.unwrap_or_default(), rate(all_acked));
    println!("  all appended after {:.2?}: {:.0} publishes/s", all_appended.unwrap_or_default(), rate(all_appended));
    let per_publish = |cpu: Duration| cpu.as_secs_f64() * 1e6 / PUBLISHES as f64;
    println!(
        "  CPU per publish: redis-server {:.1} µs, this process {:.1} µs",
        per_publish(redis_cpu),
        per_publish(own_cpu)
    );
    println!("  in the script, as Redis counts it: {}", script_time(&mut inspector, PUBLISHES));

    let mut latency = Histogram::<u64>::new(3).expect("a histogram");
    for ticket in PUBLISHES..PUBLISHES + SAMPLES {
        let sent = Instant::now();
        log.publish(ticket, "latency", data.clone());
        loop {
            match next(&reports) {
                Report::Appended { topic, .. } if &*topic == "latency" => break,
                Report::Acked { .. } | Report::Appended { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        latency.saturating_record(u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX));
    }
    println!("latency, publish() to Appended, one at a time ({SAMPLES} samples):");
    println!(
        "  p50 {} µs, p99 {} µs, max {} µs",
        latency.value_at_quantile(0.5),
        latency.value_at_quantile(0.99),
        latency.max()
    );
}

fn next(reports: &Receiver<Report>) -> Report {
    reports.recv_timeout(WAIT).unwrap_or_else(|_| panic!("no report within {WAIT:?}"))
}

/// redis-server's CPU time so far (user + system), from `INFO cpu`.
fn redis_cpu_time(connection: &mut redis::Connection) -> Duration {
    let info: String = redis::cmd("INFO").arg("cpu").query(connection).expect("INFO cpu");
    let seconds: f64 = info
        .lines()
        .filter_map(|line| line.strip_prefix("used_cpu_user:").or_else(|| line.strip_prefix("used_cpu_sys:")))
        .filter_map(|value| value.trim().parse::<f64>().ok())
        .sum();
    Duration::from_secs_f64(seconds)
}

/// The time the script itself takes per message, without the protocol, the append-only file
/// or the scheduler, from `INFO commandstats`: EVALSHA's `usec` over the `messages` appended so
/// far (one call carries a topic's messages of a pipeline), and XADD's `usec_per_call`.
fn script_time(connection: &mut redis::Connection, messages: u64) -> String {
    let info: String = redis::cmd("INFO").arg("commandstats").query(connection).expect("INFO commandstats");
    let stat = |command: &str, name: &str| -> Option<f64> {
        info.lines()
            .find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:")))
            .and_then(|stats| stats.split(',').find_map(|field| field.strip_prefix(&format!("{name}="))))
            .and_then(|value| value.parse().ok())
    };
    let (Some(usec), Some(calls), Some(xadd)) =
        (stat("evalsha", "usec"), stat("evalsha", "calls"), stat("xadd", "usec_per_call"))
    else {
        return "not in INFO commandstats".to_string();
    };
    format!(
        "EVALSHA {:.2} µs per message ({:.0} messages per call), of which XADD {xadd:.2} µs",
        usec / messages as f64,
        messages as f64 / calls
    )
}

/// This process's CPU time so far (user + system), every thread.
fn own_cpu_time() -> Duration {
    // SAFETY: getrusage(2) fills the struct it is given; an all-zero rusage is a valid value.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let micros = |time: libc::timeval| {
        Duration::from_secs(time.tv_sec.unsigned_abs()) + Duration::from_micros(time.tv_usec.unsigned_abs())
    };
    micros(usage.ru_utime) + micros(usage.ru_stime)
}
