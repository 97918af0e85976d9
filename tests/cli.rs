//! `tether publish` and `tether poll` end to end: the real binary on both sides of loopback.
//!
//! Every wait is bounded by `WAIT`; every child process is killed when its guard drops.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use common::{num, Server};
use serde_json::{json, Value};

/// The bound on every wait for a process to print or to exit.
const WAIT: Duration = Duration::from_secs(10);

fn tether() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tether"));
    // The client commands' own stderr lines are what the tests read; no logs in between.
    command.env("RUST_LOG", "off");
    command
}

/// Runs `tether ARGS` to its end with `stdin` as standard input; killed (and the test failed) if
/// it takes longer than `WAIT`.
fn run(args: &[&str], stdin: &[u8]) -> Output {
    run_with_env(args, &[], stdin)
}

/// `run`, with these variables added to the environment.
fn run_with_env(args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Output {
    let mut child = tether()
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start the tether binary");
    let mut input = child.stdin.take().expect("stdin is piped");
    let stdin = stdin.to_vec();
    // Written on a thread so that a child that does not read cannot block the test; dropping
    // `input` at the end is the EOF.
    let writer = thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let collect = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = collect(Box::new(child.stdout.take().expect("stdout is piped")));
    let stderr = collect(Box::new(child.stderr.take().expect("stderr is piped")));
    let Some(status) = wait_exit(&mut child, WAIT) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("tether {args:?} did not finish within {WAIT:?}");
    };
    let _ = writer.join();
    Output { status, stdout: stdout.join().expect("stdout reader"), stderr: stderr.join().expect("stderr reader") }
}

fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// `tether publish http://ADDR/publish/TOPIC DATA`, which must succeed; its JSON reply.
fn publish(addr: impl std::fmt::Display, topic: &str, data: &str) -> Value {
    let output = run(&["publish", &format!("http://{addr}/publish/{topic}"), data], b"");
    assert!(output.status.success(), "publish {data:?} failed: {output:?}");
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("the reply is not JSON ({e}): {output:?}"))
}

/// A running `tether poll`, its output read line by line on threads; killed when dropped.
struct Poller {
    child: Child,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
}

impl Poller {
    fn start(url: &str, options: &[&str]) -> Poller {
        let mut child = tether()
            .args(["poll", url])
            .args(options)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start the tether binary");
        let lines = |pipe: Box<dyn Read + Send>| {
            let (tx, rx) = mpsc::channel();
            thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            rx
        };
        let stdout = lines(Box::new(child.stdout.take().expect("stdout is piped")));
        let stderr = lines(Box::new(child.stderr.take().expect("stderr is piped")));
        Poller { child, stdout, stderr }
    }

    /// The next line of standard output.
    fn line(&self) -> String {
        self.stdout.recv_timeout(WAIT).unwrap_or_else(|e| panic!("no line from tether poll within {WAIT:?}: {e}"))
    }

    /// Reads standard error until a line contains `needle`; returns that line.
    fn stderr_until(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        let mut seen = Vec::new();
        while let Ok(line) = self.stderr.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            if line.contains(needle) {
                return line;
            }
            seen.push(line);
        }
        panic!("tether poll never said {needle:?} on stderr within {WAIT:?}; it said {seen:?}");
    }

    fn signal(&self, signal: i32) {
        let pid = i32::try_from(self.child.id()).expect("pid fits in pid_t");
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped yet.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill({pid}, {signal})");
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn poll_prints_what_publish_sends_in_order() {
    let server = Server::start(&[]);
    let poller = Poller::start(&format!("http://{}/poll/news", server.addr), &["--cursor", "0"]);
    let messages = ["first", r#"say "hi" \o/"#, "ünïcödé ✓ 日本語 🚀", "  spaced  ", "-starts with a dash"];
    // One at a time: each answer is its own poll, all on the poller's one connection.
    for (i, message) in messages.iter().enumerate() {
        let reply = publish(server.addr, "news", message);
        assert_eq!(reply["topic"], "news", "{reply}");
        assert_eq!(reply["seq"], i + 1, "{reply}");
        assert_eq!(poller.line(), *message);
    }
    server.wait_for_stats("the poller's next poll held on its reused connection", |stats| {
        num(stats, "polls.held") == 1 && num(stats, "totals.reused") == messages.len() as u64
    });

    // A burst, some from standard input (with `-`, and with no DATA at all).
    let url = format!("http://{}/publish/news", server.addr);
    for i in 0..10 {
        publish(server.addr, "news", &format!("burst {i}"));
    }
    assert!(run(&["publish", &url, "-"], b"from stdin\n").status.success());
    assert!(run(&["publish", &url], b"no dash, no newline").status.success());
    for i in 0..10 {
        assert_eq!(poller.line(), format!("burst {i}"));
    }
    assert_eq!(poller.line(), "from stdin", "one final newline is not part of the message");
    assert_eq!(poller.line(), "no dash, no newline");
}

#[test]
fn poll_json_prints_whole_messages() {
    let server = Server::start(&[]);
    let poller = Poller::start(&format!("http://{}/poll/t", server.addr), &["--json", "--cursor", "0"]);
    publish(server.addr, "t", r#"say "hi""#);
    publish(server.addr, "t", "ü\ttab");
    let first: Value = serde_json::from_str(&poller.line()).expect("one JSON object per line");
    let epoch = first["epoch"].as_str().unwrap_or_else(|| panic!("no epoch in {first}")).to_string();
    assert_eq!(first, json!({"seq": 1, "epoch": epoch, "data": "say \"hi\""}));
    let second: Value = serde_json::from_str(&poller.line()).expect("one JSON object per line");
    assert_eq!(second, json!({"seq": 2, "epoch": epoch, "data": "ü\ttab"}));
}

#[test]
fn poll_json_lines_stay_unique_across_a_server_restart() {
    // After a restart `seq` starts over at 1: only (epoch, seq) tells a new message from a
    // duplicate, so a consumer that drops duplicates must see the epoch on every line.
    let addr = format!("127.0.0.1:{}", free_port());
    let first = Server::start_at(&addr, &[]);
    let poller = Poller::start(&format!("http://{addr}/poll/news"), &["--json", "--cursor", "0"]);
    publish(&addr, "news", "before");
    let before: Value = serde_json::from_str(&poller.line()).expect("one JSON object per line");
    drop(first);
    let _second = Server::start_at(&addr, &[]);
    poller.stderr_until("the server reset the cursor");
    publish(&addr, "news", "after");
    let after: Value = serde_json::from_str(&poller.line()).expect("one JSON object per line");
    assert_eq!((&before["seq"], &after["seq"]), (&json!(1), &json!(1)), "{before} {after}");
    assert!(before["epoch"].is_string() && after["epoch"].is_string(), "{before} {after}");
    assert_ne!(before["epoch"], after["epoch"], "a new server life, a new epoch: {before} {after}");
}

#[test]
fn poll_reports_missed_messages() {
    let server = Server::start(&["--topic-capacity", "2"]);
    for i in 1..=5 {
        publish(server.addr, "t", &i.to_string());
    }
    let poller = Poller::start(&format!("http://{}/poll/t", server.addr), &["--cursor", "0"]);
    assert_eq!(poller.stderr_until("missed"), "tether poll: missed 3 messages");
    assert_eq!(poller.line(), "4");
    assert_eq!(poller.line(), "5");
}

#[test]
fn publish_reports_a_bad_topic() {
    let server = Server::start(&[]);
    let output = run(&["publish", &format!("http://{}/publish/a%20b", server.addr), "x"], b"");
    assert!(!output.status.success(), "{output:?}");
    assert!(output.stdout.is_empty(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.starts_with("tether publish: the server answered 400 Bad Request: a topic name is"), "{stderr}");
}

#[test]
fn publish_reports_a_too_large_message() {
    let server = Server::start(&["--max-message-bytes", "10"]);
    assert_eq!(publish(server.addr, "t", "0123456789")["seq"], 1, "ten bytes fit");
    let output = run(&["publish", &format!("http://{}/publish/t", server.addr), "0123456789a"], b"");
    assert!(!output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.starts_with("tether publish: the server answered 413 "), "{stderr}");
    assert!(stderr.contains("too large"), "{stderr}");
}

#[test]
fn publish_fails_clearly_without_a_server() {
    let output = run(&["publish", "https://127.0.0.1:1/publish/t", "x"], b"");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no TLS"), "{output:?}");

    let port = free_port();
    let output = run(&["publish", &format!("http://127.0.0.1:{port}/publish/t"), "x"], b"");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot connect"), "{output:?}");
}

#[test]
fn poll_exits_0_on_sigint() {
    let server = Server::start(&[]);
    let mut poller = Poller::start(&format!("http://{}/poll/quiet", server.addr), &[]);
    server.wait_for_stats("the poll held", |stats| num(stats, "polls.held") == 1);
    poller.signal(libc::SIGINT);
    let status = wait_exit(&mut poller.child, WAIT).expect("tether poll exits on SIGINT");
    assert!(status.success(), "{status:?}");
    server.wait_for_stats("the hold released", |stats| num(stats, "polls.held") == 0);
}

#[test]
fn poll_survives_a_server_restart() {
    let addr = format!("127.0.0.1:{}", free_port());
    let first = Server::start_at(&addr, &[]);
    let poller = Poller::start(&format!("http://{addr}/poll/news"), &["--cursor", "0"]);
    publish(&addr, "news", "before");
    assert_eq!(poller.line(), "before");

    drop(first);
    let _second = Server::start_at(&addr, &[]);
    // The new server's log has a new epoch; the poller re-syncs to it before it can hold again,
    // and only a message published after that is one it must print.
    let reset = poller.stderr_until("the server reset the cursor");
    assert!(reset.starts_with("tether poll: the server reset the cursor (its epoch is now "), "{reset}");
    publish(&addr, "news", "after");
    assert_eq!(poller.line(), "after");
}

const SECRET: &str = "a command-line secret of thirty-two bytes or more";

/// `tether token` mints under the server's secret (from the environment, kept out of `ps`);
/// `publish` and `poll` send it with `--token` or `TETHER_TOKEN`; without one they fail clearly.
#[test]
fn token_mints_what_serve_takes_and_publish_and_poll_send_it() {
    let server = Server::start(&["--jwt-secret", SECRET]);
    let secret = [("TETHER_JWT_SECRET", SECRET)];
    let minted =
        run_with_env(&["token", "--subscribe", "news", "--publish", "news", "--lifetime", "10m"], &secret, b"");
    assert!(minted.status.success(), "{minted:?}");
    let token = String::from_utf8(minted.stdout).expect("a token is ASCII").trim_end().to_string();
    assert_eq!(token.split('.').count(), 3, "{token}");

    let url = format!("http://{}/publish/news", server.addr);
    let refused = run(&["publish", &url, "no token"], b"");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("the server answered 401 Unauthorized: a token is needed"), "{stderr}");
    assert!(run(&["publish", &url, "with --token", "--token", &token], b"").status.success());
    assert!(run_with_env(&["publish", &url, "with TETHER_TOKEN"], &[("TETHER_TOKEN", &token)], b"").status.success());
    let poller =
        Poller::start(&format!("http://{}/poll/news", server.addr), &["--cursor", "0", "--token", token.as_str()]);
    assert_eq!(poller.line(), "with --token");
    assert_eq!(poller.line(), "with TETHER_TOKEN");

    let elsewhere = run(&["publish", &format!("http://{}/publish/sport", server.addr), "x", "--token", &token], b"");
    let stderr = String::from_utf8_lossy(&elsewhere.stderr);
    assert!(stderr.contains("403 Forbidden"), "a topic the token does not cover: {stderr}");
}

#[test]
fn a_secret_too_short_is_refused_without_being_repeated() {
    let short = "only-twenty-one-bytes";
    for output in [
        run(&["serve", "--listen", "127.0.0.1:0", "--jwt-secret", short], b""),
        run_with_env(&["serve", "--listen", "127.0.0.1:0"], &[("TETHER_JWT_SECRET", short)], b""),
        run_with_env(&["token", "--admin"], &[("TETHER_JWT_SECRET", short)], b""),
    ] {
        assert!(!output.status.success(), "{output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("at least 32 bytes") && !stderr.contains(short), "{stderr}");
    }
    for command in ["serve", "token"] {
        let help = run_with_env(&[command, "--help"], &[("TETHER_JWT_SECRET", SECRET)], b"");
        let help = String::from_utf8_lossy(&help.stdout);
        assert!(help.contains("--jwt-secret") && !help.contains(SECRET), "{help}");
    }
}

#[test]
fn serve_names_the_address_it_cannot_listen_on() {
    let server = Server::start(&[]);
    let addr = server.addr.to_string();
    let output = run(&["serve", "--listen", &addr], b"");
    assert!(!output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.starts_with(&format!("tether: cannot listen on {addr}: ")), "{stderr}");
    assert!(stderr.contains("in use"), "{stderr}");
}

#[test]
fn serve_resolves_a_host_name_to_listen_on() {
    // `localhost` resolves to the IPv4 loopback here (and would be preferred to ::1).
    let server = Server::start_at("localhost:0", &[]);
    assert_eq!(server.addr.ip(), std::net::Ipv4Addr::LOCALHOST, "{}", server.addr);
    let output = run(&["serve", "--listen", "no-such-host.invalid:8080"], b"");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("no-such-host.invalid:8080"), "{stderr}");
}

#[test]
fn serve_help_says_which_defaults_follow_nginx() {
    let output = run(&["serve", "--help"], b"");
    assert!(output.status.success(), "{output:?}");
    let help = String::from_utf8_lossy(&output.stdout);
    for (option, nginx) in [
        ("--idle-timeout", "as nginx's keepalive_timeout"),
        ("--header-timeout", "nginx's client_header_timeout is 60s"),
        ("--write-timeout", "nginx's send_timeout is 60s"),
        ("--max-requests", "as nginx's keepalive_requests"),
    ] {
        // An option's block runs from its name to the next option's.
        let block = help.split("\n      --").find(|b| b.starts_with(&option[2..])).unwrap_or_default();
        assert!(block.contains(nginx), "{option}: {nginx:?} not in {block:?}");
    }
}

#[test]
fn the_readme_says_how_to_install_the_command_before_using_it() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md");
    let first_use = ["$ tether poll", "$ tether publish", "$ tether bench"]
        .iter()
        .filter_map(|command| readme.find(command))
        .min()
        .expect("the README shows the commands");
    let install = readme.find("cargo install --path .").unwrap_or(usize::MAX);
    assert!(install < first_use, "`cargo install --path .` must come before the first `tether` command");
}

/// A loopback port nothing listens on (the kernel's pick, released at once).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}
