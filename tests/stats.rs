//! The cost view: `/stats` (JSON) and `/metrics` (Prometheus text). The figures must move as
//! connections open, go idle, and close for each reason, and the bookkeeping must always add up:
//! `totals.accepted == connections.open + sum(totals.closed.*)`.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use common::{assert_accounting, num, Client, Server};
use serde_json::Value;

/// A keep-alive connection that only asks for `/stats`, counting its own requests so that the
/// test knows exactly how many requests the server has seen.
struct Observer {
    client: Client,
    asked: u64,
}

impl Observer {
    fn new(server: &Server) -> Observer {
        Observer { client: server.connect(), asked: 0 }
    }

    fn stats(&mut self) -> Value {
        self.asked += 1;
        let stats = self.client.stats();
        assert_accounting(&stats);
        stats
    }

    /// Polls until `condition` holds (at most 100 polls, 50 ms apart).
    fn wait_for(&mut self, what: &str, condition: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..100 {
            let stats = self.stats();
            if condition(&stats) {
                return stats;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("/stats never showed {what}: {}", self.stats());
    }
}

/// `(open, reading, idle)` from a snapshot.
fn connections(stats: &Value) -> (u64, u64, u64) {
    (num(stats, "connections.open"), num(stats, "connections.reading"), num(stats, "connections.idle"))
}

#[test]
fn stats_reports_every_documented_figure() {
    let server = Server::start(&[]);
    let stats = server.stats();
    let paths = [
        "fds.open",
        "fds.limit",
        "connections.open",
        "connections.reading",
        "connections.idle",
        "connections.held",
        "connections.writing",
        "connections.closing",
        "totals.accepted",
        "totals.requests",
        "totals.reused",
        "totals.rejected",
        "polls.held",
        "polls.answered",
        "polls.timed_out",
        "polls.rejected",
        "topics.count",
        "topics.messages",
        "topics.retained_bytes",
        "topics.max_retained_bytes",
        "topics.evicted",
        "topics.forgotten",
        "timers.armed",
        "memory.rss_bytes",
        "memory.connection_bytes",
        "memory.buffer_bytes",
        "memory.pool_bytes",
        "kernel.tcp_inuse",
        "kernel.tcp_time_wait",
        "kernel.tcp_mem_bytes",
    ];
    for path in paths {
        num(&stats, path); // panics naming the path if it is missing or not a number
    }
    common::closed_total(&stats); // every totals.closed.* bucket, likewise
    assert!(stats["uptime_secs"].as_f64().is_some_and(|t| t >= 0.0), "{stats}");

    // The first connection, asking for /stats, is the only one and is reading.
    assert_eq!(connections(&stats), (1, 1, 0), "{stats}");
    assert_eq!(num(&stats, "totals.accepted"), 1, "{stats}");
    assert_eq!(num(&stats, "totals.requests"), 1, "{stats}");
    assert_eq!(num(&stats, "totals.reused"), 0, "{stats}");
    // Figures read from the kernel are live.
    assert!(num(&stats, "fds.open") > 0 && num(&stats, "fds.open") <= num(&stats, "fds.limit"), "{stats}");
    assert!(num(&stats, "memory.rss_bytes") > 0, "{stats}");
    assert!(num(&stats, "kernel.tcp_inuse") > 0, "our own connection is in use: {stats}");
    assert!(num(&stats, "timers.armed") >= 1, "the reading connection has a head deadline: {stats}");
    assert_accounting(&stats);
}

#[test]
fn connection_figures_follow_the_clients() {
    let server = Server::start(&[]);
    let mut observer = Observer::new(&server);

    let stats = observer.stats();
    assert_eq!(connections(&stats), (1, 1, 0), "only the observer, reading its request: {stats}");

    // A serves two requests and goes idle.
    let mut a = server.connect();
    assert_eq!(a.get("/plaintext").status, 200);
    assert_eq!(a.get("/plaintext").status, 200);
    let stats = observer.stats();
    assert_eq!(connections(&stats), (2, 1, 1), "A is idle: {stats}");
    assert_eq!(num(&stats, "totals.accepted"), 2, "{stats}");
    assert_eq!(num(&stats, "totals.requests"), 2 + observer.asked, "{stats}");
    assert_eq!(
        num(&stats, "totals.reused"),
        1 + (observer.asked - 1),
        "A's second and the observer's later ones: {stats}"
    );

    // B is in the middle of a request head: reading.
    let mut b = server.connect();
    b.send(b"GET /plaintext HTTP/1.1\r\n");
    let stats = observer.wait_for("B open", |s| num(s, "connections.open") == 3);
    assert_eq!(connections(&stats), (3, 2, 1), "the observer and B read, A idles: {stats}");
    assert_eq!(num(&stats, "totals.accepted"), 3, "{stats}");

    // A hangs up.
    drop(a);
    let stats = observer.wait_for("A closed", |s| num(s, "totals.closed.by_client") == 1);
    assert_eq!(connections(&stats), (2, 2, 0), "{stats}");

    // B finishes its request asking to close.
    b.send(b"Host: tether.test\r\nConnection: close\r\n\r\n");
    b.read_response().assert_closes();
    b.expect_eof();
    drop(b);
    let stats = observer.wait_for("B closed", |s| num(s, "totals.closed.by_client") == 2);
    assert_eq!(connections(&stats), (1, 1, 0), "{stats}");
    assert_eq!(num(&stats, "totals.requests"), 3 + observer.asked, "{stats}");

    // C sends a malformed request: answered 400 and closed as an error.
    let mut c = server.connect();
    c.send(b"GET /plaintext HTTP/1.1\r\nHost : tether.test\r\n\r\n");
    c.read_response().assert_error(400);
    c.expect_eof();
    drop(c);
    let stats = observer.wait_for("C closed", |s| num(s, "totals.closed.error") == 1);
    assert_eq!(connections(&stats), (1, 1, 0), "{stats}");
    assert_eq!(num(&stats, "totals.accepted"), 4, "{stats}");
    assert_eq!(num(&stats, "totals.closed.by_client"), 2, "{stats}");
    assert_eq!(num(&stats, "totals.requests"), 4 + observer.asked, "{stats}");
}

#[test]
fn accounting_holds_when_a_close_and_a_stats_request_share_a_turn() {
    // The busy connection sends 5000 requests: more than the default --max-requests.
    let server = Server::start(&["--max-requests", "1000000"]);
    let mut observer = Observer::new(&server);
    let mut busy = server.connect();
    let pipeline = b"GET /plaintext HTTP/1.1\r\nHost: tether.test\r\n\r\n".repeat(1000);
    for round in 0..5 {
        let mut leaving = server.connect();
        assert_eq!(leaving.get("/plaintext").status, 200);
        // Keep the server busy with a long pipeline, and meanwhile hang up one connection and
        // ask for /stats on another: both events then tend to arrive in the same poll batch,
        // so /stats is answered in the same turn as the close. The snapshot must still add up.
        busy.send(&pipeline);
        drop(leaving);
        let stats = observer.stats(); // asserts the accounting
        for _ in 0..1000 {
            assert_eq!(busy.read_response().status, 200);
        }
        assert_eq!(
            num(&stats, "totals.accepted"),
            3 + round,
            "the observer, the busy one and {} leaving: {stats}",
            round + 1
        );
    }
}

/// The leaf paths of a JSON document: `{"a":{"b":1}}` gives `a.b`.
fn leaf_paths(value: &Value, prefix: &str, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                leaf_paths(child, &path, out);
            }
        }
        _ => out.push(prefix.to_string()),
    }
}

/// The `/metrics` name of a `/stats` figure, by the rule docs/costs.md states: `tether_` and the
/// path with dots as underscores; a counter ends in `_total`, which replaces the `totals.` group;
/// time is in seconds, spelled out; `_count` is left to histograms.
fn metric_name(path: &str, counter: bool) -> String {
    let path = if counter { path.strip_prefix("totals.").unwrap_or(path) } else { path };
    let stem = path.replace('.', "_");
    let stem = match ["_secs", "_us", "_count"].iter().find_map(|unit| Some((stem.strip_suffix(unit)?, unit))) {
        Some((stem, &"_count")) => stem.to_string(),
        Some((stem, _)) => format!("{stem}_seconds"),
        None => stem,
    };
    format!("tether_{stem}{}", if counter { "_total" } else { "" })
}

/// One metric family of the text format: its `# HELP` text, `# TYPE` and sample values.
#[derive(Debug, Default)]
struct Family {
    help: Option<String>,
    kind: Option<String>,
    samples: Vec<f64>,
}

/// Reads a `/metrics` body: every line a `# HELP`, a `# TYPE` or a `name value` sample.
fn families(text: &str) -> BTreeMap<String, Family> {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    for line in text.lines() {
        let malformed = || panic!("malformed line {line:?}");
        if let Some(help) = line.strip_prefix("# HELP ") {
            let (name, help) = help.split_once(' ').unwrap_or_else(malformed);
            families.entry(name.into()).or_default().help = Some(help.into());
        } else if let Some(declaration) = line.strip_prefix("# TYPE ") {
            let (name, kind) = declaration.split_once(' ').unwrap_or_else(malformed);
            families.entry(name.into()).or_default().kind = Some(kind.into());
        } else {
            let (series, value) = line.split_once(' ').unwrap_or_else(malformed);
            // A labelled sample (`name{worker="0"}`) belongs to the family `name`.
            let name = series.split_once('{').map_or(series, |(name, _)| name);
            let value = value.parse().unwrap_or_else(|_| panic!("sample {line:?} is not a number"));
            families.entry(name.into()).or_default().samples.push(value);
        }
    }
    families
}

#[test]
fn metrics_name_every_stats_figure_by_the_documented_rule() {
    let server = Server::start(&[]);
    let mut client = server.connect();
    for _ in 0..3 {
        assert_eq!(client.get("/plaintext").status, 200);
    }
    let response = client.get("/metrics");
    assert_eq!(response.status, 200);
    assert!(response.header("Content-Type").is_some_and(|t| t.starts_with("text/plain")), "{response:?}");
    let families = families(response.text());
    let sample = |name: &str| match families.get(name).map(|family| family.samples.as_slice()) {
        Some(&[value]) => value,
        other => panic!("{name}: {other:?}"),
    };
    // The requests so far: three /plaintext and this /metrics.
    assert_eq!(sample("tether_requests_total"), 4.0);
    assert_eq!(sample("tether_reused_total"), 3.0);
    assert_eq!(sample("tether_accepted_total"), 1.0);
    assert_eq!(sample("tether_connections_open"), 1.0);
    assert_eq!(sample("tether_connections_reading"), 1.0);
    assert!(sample("tether_uptime_seconds") >= 0.0);

    // Every figure of /stats is one metric, named by the rule, with a description and a type;
    // and there is no other metric.
    let stats = client.stats();
    let mut paths = Vec::new();
    leaf_paths(&stats, "", &mut paths);
    assert!(paths.len() >= 30, "{paths:?}");
    // The `workers` lines are the labelled series, one sample per worker.
    paths.retain(|path| path != "workers");
    let workers = stats["workers"].as_array().expect("a workers array");
    assert_eq!(workers.len(), 1, "{stats}");
    let mut named = Vec::new();
    for (field, name) in [
        ("connections", "tether_worker_connections_open"),
        ("waiting", "tether_worker_waiting"),
        ("accepted", "tether_worker_accepted_total"),
        ("requests", "tether_worker_requests_total"),
    ] {
        let family = &families[name];
        // `/stats` came after `/metrics`: one request more.
        let sample = workers[0][field].as_f64().expect(field) - f64::from(field == "requests");
        assert_eq!(family.samples, [sample], "{name}: {family:?}");
        let kind = if name.ends_with("_total") { "counter" } else { "gauge" };
        assert_eq!(family.kind.as_deref(), Some(kind), "{name}");
        named.push(name.to_string());
    }
    for path in &paths {
        let counter = path.starts_with("totals.") || families.contains_key(&metric_name(path, true));
        let name = metric_name(path, counter);
        let family = families.get(&name).unwrap_or_else(|| panic!("/metrics lacks {name} (from /stats {path})"));
        assert!(family.help.as_ref().is_some_and(|help| !help.trim().is_empty()), "HELP of {name}: {family:?}");
        assert_eq!(family.samples.len(), 1, "{name}: {family:?}");
        let expected = if counter { "counter" } else { "gauge" };
        assert_eq!(family.kind.as_deref(), Some(expected), "TYPE of {name}");
        if path.starts_with("totals.") || path.starts_with("connections.") {
            assert_eq!(counter, path.starts_with("totals."), "{path} is a {expected}");
        }
        named.push(name);
    }
    named.sort();
    assert_eq!(named, families.keys().cloned().collect::<Vec<_>>(), "metrics without a /stats figure");
}

/// `promtool check metrics` (from Prometheus) on the live `/metrics` body: the text format
/// parses, and the names and help follow Prometheus' conventions (counters end in `_total`,
/// base units spelled out, every metric described).
#[test]
fn metrics_pass_promtool_check() {
    let server = Server::start(&[]);
    let response = server.connect().get("/metrics");
    assert_eq!(response.status, 200, "{response:?}");
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "promtool could not be run ({e}); it checks /metrics against Prometheus' conventions. \
                 Run the tests with `bash tests/run`, which installs it (Debian package prometheus), \
                 or put promtool on PATH"
            )
        });
    // promtool reads to EOF, which dropping stdin gives it, then exits.
    let mut stdin = promtool.stdin.take().expect("stdin is piped");
    stdin.write_all(&response.body).expect("promtool reads its input");
    drop(stdin);
    let output = promtool.wait_with_output().expect("promtool runs to its end");
    assert!(
        output.status.success(),
        "promtool check metrics refused /metrics ({}):\n{}{}\n--- the body:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        response.text()
    );
}

#[test]
fn the_cost_view_is_never_cached() {
    let server = Server::start(&[]);
    let mut client = server.connect();
    for path in ["/stats", "/metrics"] {
        let response = client.get(path);
        assert_eq!(response.status, 200, "{response:?}");
        assert_eq!(response.header("Cache-Control"), Some("no-store"), "{path}: {response:?}");
    }
}

#[test]
fn fds_open_is_counted_without_listing_proc_and_agrees_with_it() {
    // The server counts its descriptors as connections come and go (one `/proc` listing at
    // start); what it reports must be what the kernel lists.
    let server = Server::start(&[]);
    let listed = || std::fs::read_dir(format!("/proc/{}/fd", server.pid())).expect("/proc/PID/fd").count() as u64;
    let mut observer = Observer::new(&server);
    for open in [0usize, 40, 7] {
        let clients: Vec<Client> = (0..open).map(|_| server.connect()).collect();
        let stats = observer
            .client
            .wait_for_stats(&format!("{open} more connections"), |s| num(s, "connections.open") == open as u64 + 1);
        assert_eq!(num(&stats, "fds.open"), listed(), "with {open} clients and the observer: {stats}");
        drop(clients);
        observer.client.wait_for_stats("the clients gone", |s| num(s, "connections.open") == 1);
    }
}
