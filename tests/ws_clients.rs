//! tether's WebSocket (docs/transports.md) from clients nobody here wrote: Python's
//! `websockets` and `websocket-client`, and Node's built-in `WebSocket`. (Chromium's is in
//! `tests/browser.rs`; the client of `tests/websocket.rs` is written here, from RFC 6455.)
//!
//! Each test starts its own server, runs one script of `tests/ws_clients/` against it, and
//! asserts on the script's exit status, the lines it printed, and the server's `/stats` after
//! it. Every client plays the same scenario (`tests/ws_clients/scenario.py` describes it):
//! a backlog from a cursor, news published by HTTP and by other sockets in order, an error for
//! a text that is not JSON, pings answered while idle through several heartbeats, and a close
//! with 1000 answered with 1000. So every client must print the same `SCENARIO` lines.
//! `websockets`, which can send anything, also sends a message in fragments, messages at and
//! over `--max-message-bytes`, and a binary message; and opens a socket with a token.
//!
//! What the scripts need, beyond a Rust toolchain: `python3` with the packages `websockets` and
//! `websocket-client`, and `node` with a `WebSocket` (built in from Node 22; on Node 20, from
//! 20.10, behind `--experimental-websocket`, which the test passes when the probe needs it).
//! `bash tests/run` installs the Python packages (pip) and Debian's `nodejs` (apt) when they are
//! missing. A test whose client is missing, or a Node without a `WebSocket` (Debian 12's own
//! `nodejs` is Node 18), FAILS, saying what is missing and how to install it: it never passes
//! silently. A script's every wait is bounded, and the script as a whole is killed after
//! `SCRIPT_TIMEOUT`.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{num, Server};
use serde_json::Value;
use tether::token::{Claims, TokenKey};

/// How long a script may run in all: its waits are 15 s each, and it has a few.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(90);

/// What every client prints after the scenario: exactly what each socket received, per topic.
const SCENARIO: [&str; 6] = [
    "idle for 3.5 s: both sockets answered the pings and stayed open",
    r#"backlog on A: 2:"old 2" 3:"old 3""#,
    r#"live on A: 1:"by HTTP" 2:"by socket B" 3:"by socket A: say \"hi\" \\ ü ☃" 4:"after the heartbeats""#,
    r#"live on B: 1:"by HTTP" 2:"by socket B" 3:"by socket A: say \"hi\" \\ ü ☃" 4:"after the heartbeats""#,
    "not JSON: an error, and the socket stays open",
    "closed with 1000: tether answered 1000",
];

/// The heartbeat of the scenario: three and a half of them pass while the sockets idle.
const HEARTBEAT: &str = "1s";

/// `--jwt-secret` of the test with a token.
const SECRET: &str = "a WebSocket test's secret, of at least thirty-two bytes";

/// `websockets` also sends what the others do not let a script send: a message in fragments,
/// one of exactly `--max-message-bytes` and one a byte over (1009), a binary one (1003).
#[test]
fn pythons_websockets_plays_the_scenario_and_sends_fragments_and_too_much() {
    let server = Server::start(&["--sse-heartbeat", HEARTBEAT, "--max-message-bytes", "1024"]);
    let output = run(python(WEBSOCKETS, "py_websockets.py"), &[&url(&server), "scenario", "1024"]);
    assert_scenario(&output, "websockets: ok");
    assert_printed(&output, r#"a message in 3 fragments: 1:"in three fragments""#);
    assert_printed(&output, "a message of 1024 bytes: published");
    assert_printed(&output, "a message of 1025 bytes: closed 1009");
    assert_printed(&output, "a binary message: closed 1003");
    let stats = assert_all_closed(&server, "the scenario's two sockets and the two closed for their faults");
    assert_eq!(num(&stats, "totals.closed.error"), 2, "the message over the limit and the binary one: {stats}");
}

/// `websocket-client` sends an `Origin` of its own, the server's: tether takes it as a page of
/// its own origin would be.
#[test]
fn pythons_websocket_client_plays_the_scenario() {
    let server = Server::start(&["--sse-heartbeat", HEARTBEAT]);
    let output = run(python(WEBSOCKET_CLIENT, "py_websocket_client.py"), &[&url(&server)]);
    assert_scenario(&output, "websocket-client: ok");
    let stats = assert_all_closed(&server, "the scenario's two sockets");
    assert_eq!(num(&stats, "totals.closed.error"), 0, "{stats}");
}

#[test]
fn nodes_websocket_plays_the_scenario() {
    let server = Server::start(&["--sse-heartbeat", HEARTBEAT]);
    let output = run(node("node_websocket.mjs"), &[&url(&server)]);
    assert_scenario(&output, "node WebSocket: ok");
    let stats = assert_all_closed(&server, "the scenario's two sockets");
    assert_eq!(num(&stats, "totals.closed.error"), 0, "{stats}");
}

/// With `--jwt-secret`: without a token the library sees its handshake fail with 401; with one
/// in `?token=`, the socket works within the token's claims, gets an error for a topic outside
/// them, and is closed with 1008 when the token expires.
#[test]
fn pythons_websockets_with_a_token_in_the_query() {
    let server = Server::start(&["--jwt-secret", SECRET]);
    let topic = vec!["t".to_owned()];
    // Ten seconds: time for a loaded machine to start the script, and not too long to wait.
    let token = mint(10, Claims { subscribe: topic.clone(), publish: topic, ..Claims::default() });
    let output = run(python(WEBSOCKETS, "py_websockets.py"), &[&url(&server), "token", &token]);
    let refused = output.lines().find(|line| line.starts_with("without a token: the handshake failed: "));
    assert!(refused.is_some_and(|line| line.contains("401")), "expected the library to report a 401 in:\n{output}");
    assert_printed(&output, r#"with a token: 1:"with a token""#);
    assert_printed(&output, "outside the token: the token does not let its holder subscribe to elsewhere");
    assert_printed(&output, "outside the token: the token does not let its holder publish to elsewhere");
    assert_printed(&output, "at the token's end: closed 1008");
    assert_printed(&output, "websockets: ok");
    // The cost view needs a token of its own.
    let admin = mint(600, Claims { admin: true, ..Claims::default() });
    let mut client = server.connect();
    let stats = poll_stats("the socket with a token closed", || {
        let request = format!("GET /stats HTTP/1.1\r\nHost: tether.test\r\nAuthorization: Bearer {admin}\r\n\r\n");
        client.send(request.as_bytes());
        let response = client.read_response();
        assert_eq!(response.status, 200, "{response:?}");
        serde_json::from_slice(&response.body).expect("/stats is JSON")
    });
    assert_eq!(num(&stats, "totals.unauthorized"), 1, "the upgrade without a token: {stats}");
    assert_eq!(num(&stats, "totals.closed.token_expired"), 1, "{stats}");
}

/// A token for these claims under `SECRET`, good for `seconds`.
fn mint(seconds: u64, claims: Claims) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs();
    let key = TokenKey::new(SECRET.as_bytes()).expect("a long enough secret");
    key.mint(&Claims { exp: now + seconds, ..claims }).expect("an HMAC key signs")
}

// ---- what the server saw --------------------------------------------------------------------

/// After a script: no socket is left open, none was closed for an unanswered ping. The snapshot.
fn assert_all_closed(server: &Server, sockets: &str) -> Value {
    poll_stats(&format!("{sockets} closed"), || server.stats())
}

/// Takes `/stats` snapshots with `fetch` until no socket is open, for at most 5 s; then checks
/// that none was closed for an unanswered ping.
fn poll_stats(what: &str, mut fetch: impl FnMut() -> Value) -> Value {
    let mut stats = fetch();
    for _ in 0..100 {
        if num(&stats, "sockets.open") == 0 {
            break;
        }
        thread::sleep(Duration::from_millis(50));
        stats = fetch();
    }
    assert_eq!(num(&stats, "sockets.open"), 0, "{what}: {stats}");
    assert_eq!(num(&stats, "totals.closed.ping_timeout"), 0, "a socket missed a ping: {stats}");
    stats
}

fn assert_scenario(output: &str, last: &str) {
    for line in SCENARIO {
        assert_printed(output, line);
    }
    assert_printed(output, last);
}

fn assert_printed(output: &str, line: &str) {
    assert!(output.lines().any(|l| l == line), "expected the line {line:?} in:\n{output}");
}

fn url(server: &Server) -> String {
    format!("http://{}", server.addr)
}

// ---- the clients ----------------------------------------------------------------------------

fn script(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/ws_clients").join(name);
    path.to_string_lossy().into_owned()
}

/// A Python package a script imports: its name for pip, and the module it provides.
struct PythonPackage {
    name: &'static str,
    module: &'static str,
}

const WEBSOCKETS: PythonPackage = PythonPackage { name: "websockets", module: "websockets" };
const WEBSOCKET_CLIENT: PythonPackage = PythonPackage { name: "websocket-client", module: "websocket" };

/// `python3 tests/ws_clients/<name>`, once `package` is there: fails the test otherwise,
/// saying how to install it.
fn python(package: PythonPackage, name: &str) -> Command {
    let found = Command::new("python3")
        .args(["-c", &format!("import {}", package.module)])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    assert!(
        found.is_ok_and(|status| status.success()),
        "this test needs python3 and its package {0} (python3 -m pip install {0}); \
         `bash tests/run` installs what is missing",
        package.name
    );
    let mut command = Command::new("python3");
    command
        .arg(script(name))
        // No __pycache__ beside the scripts: the tests leave the tree as it was.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONIOENCODING", "utf-8");
    command
}

/// `node tests/ws_clients/<name>`, with `--experimental-websocket` if this Node needs it for a
/// `WebSocket` global; fails the test if there is no `node`, or no `WebSocket` in it either way.
fn node(name: &str) -> Command {
    let has_websocket = |flags: &[&str]| {
        let probe = Command::new("node")
            .args(flags)
            .args(["-e", "process.exit(typeof WebSocket === 'function' ? 0 : 3)"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        match probe {
            Ok(status) => status.success(),
            Err(e) => panic!(
                "this test needs node ({e}): as root, apt-get install nodejs, or put a node of version 22 \
                 (or 20.10 and later) on PATH; `bash tests/run` installs Debian's nodejs when node is missing"
            ),
        }
    };
    let flags: &[&str] = if has_websocket(&[]) {
        &[]
    } else if has_websocket(&["--experimental-websocket"]) {
        &["--experimental-websocket"]
    } else {
        let version = Command::new("node").arg("--version").output().map(|out| out.stdout).unwrap_or_default();
        panic!(
            "node {} has no WebSocket, even with --experimental-websocket: this test needs Node 22, or 20.10 \
             and later (Debian 12's nodejs is Node 18)",
            String::from_utf8_lossy(&version).trim()
        );
    };
    let mut command = Command::new("node");
    command.args(flags).arg(script(name));
    command
}

/// Runs a script to its end (or kills it after `SCRIPT_TIMEOUT`) and returns what it printed;
/// fails the test unless it exited 0.
fn run(mut command: Command, args: &[&str]) -> String {
    command.args(args);
    common::run_script_command(command, SCRIPT_TIMEOUT)
}
