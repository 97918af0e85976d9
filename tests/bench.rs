//! `tether bench` end to end (docs/lab.md): each scenario runs for about a second
//! against a spawned server, and its JSON is checked for its shape and its invariants:
//! `p50 <= p90 <= p99 <= max`, close opens one connection per request (seen from the server's
//! side too), every follower gets every message in order (by polls, by event streams or by
//! WebSockets, and after a stream is cut, from its `Last-Event-ID`, after a socket is cut, from
//! its cursor), a socket answers the server's pings, short polling sends more requests than long
//! polling, slowloris are answered 408 and closed at the header timeout. Refusals (another host,
//! too many clients) need no server.
//!
//! No test asserts that anything is fast: the machine runs other tests meanwhile.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::polls::wait_until;
use common::redis::RedisServer;
use common::{num, Server};
use serde_json::Value;

/// Far above any run here (the longest is about 3 s), so only a hung generator reaches it.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// Runs `tether bench ARGS` to completion (killed after `RUN_LIMIT`).
fn bench(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tether"))
        .arg("bench")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start the tether binary");
    // Read both pipes on threads, so that a full pipe cannot stall the child.
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let out = thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stdout.read_to_end(&mut text);
        text
    });
    let err = thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stderr.read_to_end(&mut text);
        text
    });
    let deadline = Instant::now() + RUN_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tether bench {args:?} ran longer than {RUN_LIMIT:?}");
        }
        thread::sleep(Duration::from_millis(20));
    };
    Output { status, stdout: out.join().expect("stdout reader"), stderr: err.join().expect("stderr reader") }
}

/// Runs a scenario with `--json` and parses its one document.
fn bench_json(args: &[&str]) -> Value {
    let output = bench(&[args, &["--json"]].concat());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "tether bench {args:?} failed: {stderr}");
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!("not one JSON document ({e}): {}\nstderr: {stderr}", String::from_utf8_lossy(&output.stdout))
    })
}

fn f(value: &Value, pointer: &str) -> f64 {
    value.pointer(pointer).and_then(Value::as_f64).unwrap_or_else(|| panic!("no number at {pointer} in {value}"))
}

fn u(value: &Value, pointer: &str) -> u64 {
    value.pointer(pointer).and_then(Value::as_u64).unwrap_or_else(|| panic!("no count at {pointer} in {value}"))
}

/// `latency_us` has the four percentiles, in order.
fn assert_latency_ordered(latency: &Value) {
    let [p50, p90, p99, max] = ["/p50", "/p90", "/p99", "/max"].map(|p| f(latency, p));
    assert!(0.0 < p50 && p50 <= p90 && p90 <= p99 && p99 <= max, "percentiles out of order: {latency}");
}

#[test]
fn keepalive_reports_every_mode_and_close_opens_a_connection_per_request() {
    let server = Server::start(&["--max-requests", "1000000"]);
    let url = format!("http://{}/plaintext", server.addr);
    let connections = 4;
    let json = bench_json(&["keepalive", "--url", &url, "--duration", "1s", "--connections", "4", "--pipeline", "4"]);
    assert_eq!(json["scenario"], "keepalive");
    let modes = json["modes"].as_array().expect("modes is a list");
    let names: Vec<&str> = modes.iter().map(|m| m["mode"].as_str().unwrap_or("")).collect();
    assert_eq!(names, ["keep-alive", "close", "pipelined"]);
    let mut opened_total = 0;
    for mode in modes {
        let (requests, opened) = (u(mode, "/requests"), u(mode, "/connections_opened"));
        assert!(requests > 0 && f(mode, "/rps") > 0.0, "{mode}");
        assert_eq!(u(mode, "/errors"), 0, "{mode}");
        assert_latency_ordered(&mode["latency_us"]);
        if mode["mode"] == "close" {
            // One per request, plus those still in flight when the time ran out.
            assert!(requests <= opened && opened <= requests + connections, "{mode}");
        } else {
            assert_eq!(opened, connections, "keep-alive connections are opened once: {mode}");
        }
        opened_total += opened;
    }
    // The server saw the same: the preflight's connection, every one the modes opened, and the
    // one that asks for /stats.
    server.wait_for_stats("every connection accepted", |stats| num(stats, "totals.accepted") == opened_total + 2);
}

#[test]
fn keepalive_prints_a_table_without_json() {
    let server = Server::start(&[]);
    let url = format!("http://{}/plaintext", server.addr);
    let output =
        bench(&["keepalive", "--url", &url, "--duration", "300ms", "--connections", "2", "--modes", "keep-alive"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).expect("UTF-8");
    let header = text.lines().find(|l| l.starts_with("mode")).unwrap_or_else(|| panic!("no table in {text}"));
    for column in ["requests", "req/s", "p50", "p99", "max", "connections", "errors", "TIME_WAIT"] {
        assert!(header.contains(column), "no {column} column in {header:?}");
    }
    assert!(text.lines().any(|l| l.starts_with("keep-alive ")), "{text}");
    assert!(output.stderr.is_empty(), "no progress bar on a pipe: {}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn longpoll_delivers_every_message_to_every_client_in_order() {
    let server = Server::start(&[]);
    let url = format!("http://{}", server.addr);
    let plot = std::env::temp_dir().join(format!("tether-bench-test-{}.svg", std::process::id()));
    let plot_arg = plot.to_str().expect("a UTF-8 temp dir");
    let pid = server.pid().to_string();
    let args =
        ["longpoll", "--url", &url, "--clients", "5", "--messages", "5", "--interval", "100ms", "--server-pid", &pid];
    let json = bench_json(&[&args[..], &["--plot", plot_arg]].concat());
    assert_eq!(json["scenario"], "longpoll");
    assert_eq!((u(&json, "/clients"), u(&json, "/delivered"), u(&json, "/errors")), (5, 25, 0), "{json}");
    assert_latency_ordered(&json["latency_us"]);
    assert_eq!(u(&json, "/server/fds_held"), 5, "one descriptor per held poll: {json}");
    // The fan-out figures: the first delivery, and the server's time per answer.
    let (min, p50) = (f(&json, "/latency_us/min"), f(&json, "/latency_us/p50"));
    assert!(0.0 < min && min <= p50, "{json}");
    assert_eq!(u(&json, "/server/last_fanout_woken"), 5, "the last publish woke every poll: {json}");
    assert!(f(&json, "/server/fanout_us_per_answer") > 0.0, "{json}");
    let (held, end) = (u(&json, "/server/peak_rss_bytes/held"), u(&json, "/server/peak_rss_bytes/end"));
    assert!(0 < held && held <= end, "the server's peak RSS: {json}");
    for figure in ["user_bytes_per_held_poll", "kernel_bytes_per_connection"] {
        assert!(json["server"][figure].is_number(), "no server.{figure} in {json}");
    }
    let svg = std::fs::read_to_string(&plot).unwrap_or_default();
    let _ = std::fs::remove_file(&plot);
    assert!(svg.starts_with("<svg") && svg.contains("long-poll"), "no plot written");
}

#[test]
fn longpoll_over_event_streams_delivers_every_message_and_counts_what_a_stream_holds() {
    let server = Server::start(&[]);
    let (url, pid) = (format!("http://{}", server.addr), server.pid().to_string());
    let args = ["longpoll", "--url", &url, "--transport", "sse", "--clients", "5", "--messages", "5"];
    let json = bench_json(&[&args[..], &["--interval", "100ms", "--server-pid", &pid]].concat());
    assert_eq!((&json["scenario"], &json["transport"]), (&"longpoll".into(), &"sse".into()), "{json}");
    assert_eq!((u(&json, "/delivered"), u(&json, "/errors"), u(&json, "/reconnects")), (25, 0, 0), "{json}");
    assert_eq!((u(&json, "/requests"), u(&json, "/empty_responses")), (5, 0), "one stream each: {json}");
    assert_latency_ordered(&json["latency_us"]);
    assert_eq!(u(&json, "/server/fds_held"), 5, "one descriptor per stream: {json}");
    assert_eq!(u(&json, "/server/last_fanout_woken"), 5, "the last publish woke every stream: {json}");
    for figure in ["user_bytes_per_open_stream", "cpu_us_per_message", "kernel_bytes_per_connection"] {
        assert!(json["server"][figure].is_number(), "no server.{figure} in {json}");
    }
    let stats = server.stats();
    assert_eq!(num(&stats, "streams.open"), 0, "every stream closed at the end: {stats}");
}

#[test]
fn longpoll_over_websockets_delivers_every_message_and_counts_what_a_socket_holds() {
    let server = Server::start(&[]);
    let url = format!("http://{}", server.addr);
    let args = ["longpoll", "--url", &url, "--transport", "ws", "--clients", "5", "--messages", "5"];
    let json = bench_json(&[&args[..], &["--server-pid", &server.pid().to_string()]].concat());
    assert_eq!((&json["scenario"], &json["transport"]), (&"longpoll".into(), &"ws".into()), "{json}");
    assert_eq!((u(&json, "/delivered"), u(&json, "/errors"), u(&json, "/reconnects")), (25, 0, 0), "{json}");
    // An upgrade and a subscribe each: no ping comes within the default heartbeat of 15 s.
    assert_eq!((u(&json, "/requests"), u(&json, "/empty_responses")), (10, 0), "one socket each: {json}");
    assert_latency_ordered(&json["latency_us"]);
    assert_eq!(u(&json, "/server/fds_held"), 5, "one descriptor per socket: {json}");
    assert_eq!(u(&json, "/server/last_fanout_woken"), 5, "the last publish woke every socket: {json}");
    for figure in ["user_bytes_per_open_socket", "cpu_us_per_message", "other_cpu_percent"] {
        assert!(json["server"][figure].is_number(), "no server.{figure} in {json}");
    }
    let stats = server.stats();
    assert_eq!(num(&stats, "sockets.open"), 0, "every socket closed at the end: {stats}");
}

#[test]
fn a_websocket_answers_every_ping_and_is_never_closed_for_want_of_a_pong() {
    let server = Server::start(&["--sse-heartbeat", "300ms"]);
    let url = format!("http://{}", server.addr);
    let args = ["longpoll", "--url", &url, "--transport", "ws", "--clients", "3", "--messages", "6"];
    let json = bench_json(&[&args[..], &["--interval", "300ms"]].concat());
    assert_eq!((u(&json, "/delivered"), u(&json, "/errors"), u(&json, "/reconnects")), (18, 0, 0), "{json}");
    // Two seconds of pings every 300 ms: pongs beyond the upgrades and subscribes.
    assert!(u(&json, "/requests") > 6 + 3, "pongs are counted as frames sent: {json}");
    let stats = server.stats();
    assert_eq!(num(&stats, "totals.closed.ping_timeout"), 0, "no socket went without its pong: {stats}");
}

/// A publisher the server closes after `--max-requests` (1,000 by default, so any run of more
/// messages) publishes on a new connection, resending what the server did not answer.
#[test]
fn a_publisher_closed_at_max_requests_goes_on_on_a_new_connection() {
    let server = Server::start(&["--max-requests", "4"]);
    let url = format!("http://{}", server.addr);
    let args = ["longpoll", "--url", &url, "--clients", "2", "--messages", "10", "--interval", "20ms"];
    let json = bench_json(&args);
    assert_eq!((u(&json, "/delivered"), u(&json, "/errors")), (20, 0), "{json}");
}

/// `--also-url`: the followers are spread round-robin over two tethers that share their topics
/// in Redis, the publisher writes to the first only, and every follower still gets every
/// message in order; each tether held its half of the polls.
#[test]
fn longpoll_spreads_its_followers_over_every_url_and_publishes_to_the_first() {
    let redis = RedisServer::start();
    let servers = [(); 2].map(|()| Server::start(&["--redis", &redis.url()]));
    for server in &servers {
        wait_until(server, Duration::from_secs(30), "backplane.up == 1", |s| num(s, "backplane.up") == 1);
    }
    let [url, also] = [0, 1].map(|i| format!("http://{}", servers[i].addr));
    let [pid, also_pid] = [0, 1].map(|i| servers[i].pid().to_string());
    let args = ["longpoll", "--url", &url, "--also-url", &also, "--clients", "6", "--messages", "5"];
    let json =
        bench_json(&[&args[..], &["--interval", "100ms", "--server-pid", &pid, "--server-pid", &also_pid]].concat());
    assert_eq!((u(&json, "/delivered"), u(&json, "/errors")), (30, 0), "{json}");
    assert_eq!(u(&json, "/server/fds_held"), 6, "one descriptor per held poll, on both: {json}");
    assert_eq!(u(&json, "/server/last_fanout_woken"), 6, "the last publish woke every poll, on both: {json}");
    assert_eq!(json["server"]["peak_rss_bytes"]["pids"].as_array().map(Vec::len), Some(2), "{json}");
    for (i, server) in json["servers"].as_array().expect("servers").iter().enumerate() {
        assert_eq!((&server["url"], u(server, "/held")), (&[&url, &also][i].as_str().into(), 3), "{json}");
    }
    let published = servers.each_ref().map(|server| num(&server.stats(), "backplane.acked"));
    assert_eq!(published, [6, 0], "the warm-up and the 5 messages, all to --url: {json}");
}

/// An `--also-url` that does not share the publisher's topics (two tethers without `--redis`)
/// never gets the warm-up: the run stops before any follower opens, and says why.
#[test]
fn longpoll_refuses_an_also_url_that_does_not_share_the_topics() {
    let servers = [(); 2].map(|()| Server::start(&[]));
    let [url, also] = [0, 1].map(|i| format!("http://{}", servers[i].addr));
    let output = bench(&["longpoll", "--url", &url, "--also-url", &also, "--clients", "2", "--messages", "1"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("do they share their topics"), "{stderr}");
    assert_eq!(num(&servers[1].stats(), "polls.held"), 0, "no follower opened: {stderr}");
}

#[test]
fn lateness_answers_every_poll_at_its_deadline_and_none_early() {
    let server = Server::start(&[]);
    let url = format!("http://{}", server.addr);
    let json = bench_json(&["lateness", "--url", &url, "--clients", "50", "--spread", "1s"]);
    assert_eq!(json["scenario"], "lateness");
    assert_eq!((u(&json, "/clients"), u(&json, "/answered"), u(&json, "/errors")), (50, 50, 0), "{json}");
    let all = &json["lateness_ms"]["all"];
    assert_eq!((u(all, "/count"), u(all, "/early")), (50, 0), "no hold ends before its deadline: {json}");
    let [min, p50, p90, p99, max] = ["/min", "/p50", "/p90", "/p99", "/max"].map(|p| f(all, p));
    assert!(min <= p50 && p50 <= p90 && p90 <= p99 && p99 <= max, "{json}");
    let groups = ["deadline_while_opening", "deadline_after_opening"].map(|g| u(&json["lateness_ms"][g], "/count"));
    assert_eq!(groups[0] + groups[1], 50, "{json}");
    assert_eq!(u(&json, "/server/polls_timed_out"), 50, "the server timed out each hold: {json}");
}

#[test]
fn realtime_short_polling_sends_more_requests_than_long_polling_and_a_stream_or_socket_one_per_client() {
    let server = Server::start(&[]);
    let (url, pid) = (format!("http://{}", server.addr), server.pid().to_string());
    let args = ["realtime", "--url", &url, "--clients", "3", "--messages", "3", "--interval", "50ms"];
    let json = bench_json(&[&args[..], &["--server-pid", &pid]].concat());
    assert_eq!(json["scenario"], "realtime");
    let modes = json["modes"].as_array().expect("modes is a list");
    let names: Vec<&str> = modes.iter().map(|m| m["mode"].as_str().unwrap_or("")).collect();
    assert_eq!(names, ["short-poll", "long-poll", "sse", "ws"]);
    for mode in modes {
        assert_eq!((u(mode, "/delivered"), u(mode, "/errors"), u(mode, "/reconnects")), (9, 0, 0), "{mode}");
        assert!(f(mode, "/bytes_per_message") > 0.0, "{mode}");
        assert!(f(mode, "/server_cpu_us_per_message") >= 0.0, "{mode}");
        assert_eq!(u(mode, "/connections_opened"), 3, "{mode}");
        assert_latency_ordered(&mode["latency_us"]);
        assert_eq!(f(mode, "/fds_per_connection"), 1.0, "a descriptor per client, in every style: {mode}");
        for figure in ["user_bytes_per_connection", "kernel_bytes_per_connection", "kernel_slab_bytes_per_connection"] {
            assert!(mode[figure].is_number(), "no {figure} in {mode}");
        }
    }
    let (short, long, sse, ws) = (&modes[0], &modes[1], &modes[2], &modes[3]);
    assert!(u(short, "/requests") > u(long, "/requests"), "short {short}, long {long}");
    assert!(u(short, "/empty_responses") > 0, "short polls four times per message: {short}");
    assert_eq!(u(long, "/empty_responses"), 0, "a long poll is answered only with news: {long}");
    assert_eq!((u(sse, "/requests"), u(sse, "/empty_responses")), (3, 0), "one stream per client: {sse}");
    assert_eq!((u(ws, "/requests"), u(ws, "/empty_responses")), (6, 0), "an upgrade and a subscribe each: {ws}");
}

/// A loopback relay in front of `server` that cuts each of the first `cuts` event streams or
/// WebSockets once it has relayed a message on it, as a proxy with an idle timeout would; it
/// keeps the `Last-Event-ID` of every stream request it relays.
fn stream_cutter(server: SocketAddr, cuts: usize) -> (SocketAddr, Arc<Mutex<Vec<u64>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
    let (addr, ids) = (listener.local_addr().expect("its address"), Arc::new(Mutex::new(Vec::new())));
    let (cuts, seen) = (Arc::new(AtomicUsize::new(cuts)), Arc::clone(&ids));
    thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(upstream) = TcpStream::connect(server) else { return };
            let (mut from_client, mut to_server) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
            let seen = Arc::clone(&seen);
            thread::spawn(move || {
                let mut buf = [0u8; 16 * 1024];
                while let Ok(n @ 1..) = from_client.read(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]);
                    if let Some(id) = text.split("Last-Event-ID: ").nth(1).and_then(|rest| rest.split('\r').next()) {
                        seen.lock().unwrap().push(id.parse().unwrap());
                    }
                    if to_server.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
            let (mut from_server, mut to_client, cuts) = (upstream, client, Arc::clone(&cuts));
            thread::spawn(move || {
                let (mut buf, mut stream) = ([0u8; 16 * 1024], false);
                while let Ok(n @ 1..) = from_server.read(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]);
                    stream |= text.contains("text/event-stream") || text.contains(" 101 Switching Protocols");
                    if to_client.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    let cut = || cuts.fetch_update(SeqCst, SeqCst, |left| left.checked_sub(1)).is_ok();
                    let message = text.contains("data: message") || text.contains(r#""data":"message"#);
                    if stream && message && cut() {
                        let _ = to_client.shutdown(Shutdown::Both);
                        let _ = from_server.shutdown(Shutdown::Both);
                        break;
                    }
                }
            });
        }
    });
    (addr, ids)
}

#[test]
fn a_stream_that_breaks_resumes_from_its_last_event_id_and_counts_a_reconnect() {
    let server = Server::start(&[]);
    let (relay, ids) = stream_cutter(server.addr, 3);
    let (url, pid) = (format!("http://{relay}"), server.pid().to_string());
    let args = ["realtime", "--url", &url, "--modes", "sse", "--clients", "3", "--messages", "3"];
    let json = bench_json(&[&args[..], &["--interval", "50ms", "--server-pid", &pid]].concat());
    let sse = &json["modes"][0];
    assert_eq!((u(sse, "/delivered"), u(sse, "/errors"), u(sse, "/reconnects")), (9, 0, 3), "{sse}");
    assert_eq!((u(sse, "/requests"), u(sse, "/connections_opened")), (6, 6), "{sse}");
    // Three opened after the warm-up message, three resumed after a message of the run.
    let mut ids = ids.lock().unwrap().clone();
    ids.sort_unstable();
    assert_eq!(ids.len(), 6, "{ids:?}");
    assert!(ids[..3].iter().all(|&id| id == ids[0]) && ids[3..].iter().all(|&id| id > ids[0]), "{ids:?}");
}

#[test]
fn a_websocket_that_breaks_resubscribes_from_its_cursor_and_counts_a_reconnect() {
    let server = Server::start(&[]);
    let (relay, _) = stream_cutter(server.addr, 3);
    let (url, pid) = (format!("http://{relay}"), server.pid().to_string());
    let args = ["realtime", "--url", &url, "--modes", "ws", "--clients", "3", "--messages", "3"];
    let json = bench_json(&[&args[..], &["--interval", "50ms", "--server-pid", &pid]].concat());
    let ws = &json["modes"][0];
    assert_eq!((u(ws, "/delivered"), u(ws, "/errors"), u(ws, "/reconnects")), (9, 0, 3), "{ws}");
    // Each socket twice: an upgrade and a subscribe on each.
    assert_eq!((u(ws, "/requests"), u(ws, "/connections_opened")), (12, 6), "{ws}");
}

#[test]
fn load_is_refused_for_other_hosts_and_beyond_the_open_file_limit() {
    let output = bench(&["keepalive", "--url", "http://192.0.2.1:8080/plaintext", "--duration", "1s"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("loopback"), "{stderr}");
    let output = bench(&["longpoll", "--url", "http://127.0.0.1:9", "--clients", "100000000", "--messages", "1"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("open-file limit"), "{stderr}");
}

#[test]
fn exhaust_finds_the_connection_limit_and_what_still_works_there() {
    let server = Server::start(&["--max-connections", "40"]);
    let url = format!("http://{}", server.addr);
    let pid = server.pid().to_string();
    let args = ["--max", "100", "--refusals", "20", "--hang", "1s", "--window", "500ms", "--server-pid", &pid];
    let json = bench_json(&[&["exhaust", "--url", &url][..], &args].concat());
    assert_eq!(json["scenario"], "exhaust");
    // 40 connections: the keep-alive one opened before filling, and held polls.
    let held = u(&json, "/first_refusal/held");
    assert!((35..=39).contains(&held), "refused at about 40 connections: {json}");
    assert_eq!(json["first_refusal"]["kind"], "503", "{json}");
    assert!(u(&json, "/refusals/total") >= 20 && u(&json, "/refusals/status_503") > 0, "{json}");
    assert_eq!(u(&json, "/refusals/hang") + u(&json, "/refusals/connect_timeout"), 0, "no newcomer hangs: {json}");
    // What was held before the limit still works there: no held poll lost, every one of them
    // gets the message published at the limit.
    assert_eq!(u(&json, "/held/lost/total"), 0, "{json}");
    let at_publish = u(&json, "/publish/held_at_publish");
    assert!(at_publish + 1 >= held && u(&json, "/publish/delivered") == at_publish, "{json}");
    let keepalive = json["keepalive"]["outcome"].as_str().unwrap_or_default();
    assert!(["answered", "closed_while_idle"].contains(&keepalive), "{json}");
    assert!(json["cpu"]["percent"].is_number(), "the CPU of --server-pid is read: {json}");
    assert_eq!(json["after"]["ok"], true, "a fresh request succeeds once all is closed: {json}");
}

#[test]
fn slowloris_connections_are_answered_408_and_closed_at_the_header_timeout() {
    let server = Server::start(&["--header-timeout", "1s"]);
    let url = format!("http://{}", server.addr);
    let args = ["--connections", "50", "--trickle", "200ms", "--duration", "5s", "--server-pid"];
    let json = bench_json(&[&["slowloris", "--url", &url][..], &args, &[&server.pid().to_string()]].concat());
    assert_eq!(
        (json["scenario"].as_str(), json["ended_by"].as_str()),
        (Some("slowloris"), Some("all_closed")),
        "{json}"
    );
    assert_eq!(u(&json, "/slowloris/answers/408"), 50, "every slowloris answered 408: {json}");
    assert_eq!(u(&json, "/slowloris/ended/answer_then_close"), 50, "and then closed: {json}");
    assert_eq!(u(&json, "/slowloris/ended/still_open"), 0, "{json}");
    // At the 1 s header timeout: never before it, and late only by a loaded machine's margin.
    assert_eq!(u(&json, "/slowloris/close_ms/count"), 50, "{json}");
    let (first, last) = (f(&json, "/slowloris/close_ms/min"), f(&json, "/slowloris/close_ms/max"));
    assert!(900.0 <= first && last <= 2500.0, "closed between {first} and {last} ms: {json}");
    assert!(u(&json, "/fresh/answered") > 0 && u(&json, "/fresh/errors") == 0, "fresh requests still work: {json}");
    assert!(json["cpu"]["percent"].is_number(), "the CPU of --server-pid is read: {json}");
}

#[test]
fn idle_leaves_every_connection_open_and_reports_what_each_costs() {
    let server = Server::start(&[]);
    let url = format!("http://{}/plaintext", server.addr);
    let args = ["idle", "--url", &url, "--connections", "40", "--settle", "200ms", "--server-pid"];
    let json = bench_json(&[&args[..], &[&server.pid().to_string()]].concat());
    assert_eq!(json["scenario"], "idle");
    assert_eq!((u(&json, "/idle"), u(&json, "/still_open"), u(&json, "/errors")), (40, 40, 0), "{json}");
    for figure in ["server_rss", "kernel_slab", "kernel_sunreclaim", "tcp_mem"] {
        let growth = &json["figures"][figure];
        assert!(growth["before"].is_u64() && growth["per_connection"].is_number(), "{figure}: {json}");
    }
    assert!(u(&json, "/tcp_inuse/after") >= 80, "both ends of 40 connections are sockets in use: {json}");
    assert_eq!(json["pids"][0].as_i64(), Some(i64::from(server.pid())), "{json}");
}

#[test]
fn idle_against_a_server_that_closes_after_one_request_fails_and_says_so() {
    let server = Server::start(&["--max-requests", "1"]);
    let url = format!("http://{}/plaintext", server.addr);
    let output = bench(&["idle", "--url", &url, "--connections", "5", "--settle", "100ms"]);
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(!output.status.success(), "nothing stayed idle, so it fails: {stdout}");
    assert!(stderr.contains("no connection") && stdout.contains("0 of 5 idle"), "{stdout}\n{stderr}");
}

/// The `--help` of `tether bench SCENARIO`.
fn help(scenario: &str) -> String {
    let output = bench(&[scenario, "--help"]);
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn longpoll_help_names_the_default_topic_it_uses() {
    let help = help("longpoll");
    assert!(help.contains("bench-longpoll-PID-TIME"), "{help}");
}

#[test]
fn a_plot_that_cannot_be_written_is_refused_before_the_run() {
    let server = Server::start(&[]);
    let url = format!("http://{}/plaintext", server.addr);
    let missing = std::env::temp_dir().join(format!("tether-no-such-dir-{}", std::process::id())).join("x.svg");
    let png = std::env::temp_dir().join(format!("tether-bench-test-{}.png", std::process::id()));
    for (plot, said) in [(missing.to_str().expect("UTF-8"), "cannot write"), (png.to_str().expect("UTF-8"), "SVG")] {
        let args = ["keepalive", "--url", &url, "--duration", "1s", "--connections", "1", "--plot", plot];
        let started = Instant::now();
        let output = bench(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success() && stderr.contains(plot) && stderr.contains(said), "{plot}: {stderr}");
        assert!(output.stdout.is_empty(), "nothing ran, nothing to print: {output:?}");
        assert!(started.elapsed() < RUN_LIMIT && !png.exists(), "no PNG named file is written");
    }
    // Not even the preflight's connection reached the server: the one accepted is this /stats'.
    assert_eq!(num(&server.stats(), "totals.accepted"), 1, "nothing ran");
}

#[test]
fn slowloris_without_a_server_fails_and_says_so() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let output = bench(&["slowloris", "--url", &url, "--connections", "5", "--duration", "1s"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "measured nothing, so it fails: {stderr}");
    assert!(stderr.contains(&format!("cannot connect to 127.0.0.1:{port}")), "{stderr}");
    assert!(!String::from_utf8_lossy(&output.stdout).contains("every slowloris ended"), "{output:?}");
}

#[test]
fn exhaust_without_a_server_says_nothing_listens() {
    let port = free_port();
    let output = bench(&["exhaust", "--url", &format!("http://127.0.0.1:{port}"), "--max", "5"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("cannot connect to 127.0.0.1:{port}")) && stderr.contains("refused"), "{stderr}");
}

#[test]
fn exhaust_below_the_limit_does_not_claim_to_be_at_it() {
    let server = Server::start(&[]);
    let url = format!("http://{}", server.addr);
    let args = ["exhaust", "--url", &url, "--max", "5", "--hang", "1s", "--window", "100ms"];
    let output = bench(&args);
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{stderr}");
    assert!(!stdout.contains("at the limit"), "{stdout}");
    assert!(stdout.contains("no limit reached"), "{stdout}");
    let json = bench_json(&args);
    assert_eq!(json["limit_reached"], false, "{json}");
    assert_eq!(json["first_refusal"], Value::Null, "{json}");
}

/// A loopback port nothing listens on (the kernel's pick, released at once).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}
