//! tether from a real browser: headless Chromium, driven by the Python Playwright scripts in
//! `tests/browser/`, against the real binary. What a page can do is what the browser lets it:
//! event streams and long polls from another origin only with `--allow-origin`
//! (docs/browser.md), a reload that resumes from the cursor the page kept, and the live page
//! (`GET /`) drawing the cost view without a console error, with a server's token too. And
//! what tether must refuse itself, because the browser does not: a WebSocket (Chromium's own)
//! from a page of an origin not allowed.
//!
//! Each test starts its own server (and, for a cross-origin page, the page's own origin), runs
//! one script with their addresses, and asserts on its exit status and what it printed. The
//! scripts need `/usr/bin/chromium` and the Python package `playwright` (`bash tests/run`
//! installs both); without them a test fails, saying what is missing: it never passes silently.
//! A script's every wait is bounded, and the script as a whole is killed after `SCRIPT_TIMEOUT`.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Server, IO_TIMEOUT};
use tether::token::{Claims, TokenKey};

/// How long a script may run in all: its waits are 15 s each, and it has a few.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

const CHROMIUM: &str = "/usr/bin/chromium";

/// The page the cross-origin tests load from their second origin.
const CLIENT_PAGE: &str = include_str!("browser/client.html");

/// A page of the second origin with nothing of its own, into which a script puts its client.
const BLANK_PAGE: &str = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
                          <title>a blank page of another origin</title><link rel=\"icon\" href=\"data:,\">\
                          </head><body></body></html>";

/// `--jwt-secret` of the tests with tokens.
const SECRET: &str = "a browser test's secret, of at least thirty-two bytes";

/// A page of another origin, allowed by `--allow-origin`, receives what is published both by
/// EventSource (`/events/t`) and by long poll (`fetch` of `/poll/t`), and a fetch that needs a
/// preflight (it sends `Last-Event-ID`) is answered too.
#[test]
fn a_cross_origin_page_receives_messages_by_event_source_and_by_fetch() {
    let page = PageOrigin::start();
    let server = Server::start(&["--allow-origin", &page.origin()]);
    let output = run_script("cross_origin.py", &[&url(&server), &page.url(), "receives"]);
    assert_printed(&output, "received by events: 1:m1 2:m2 3:m3");
    assert_printed(&output, "received by polls: 1:m1 2:m2 3:m3");
    assert_printed(&output, "preflighted poll: 2:m2 3:m3");
}

/// With `--jwt-secret`, a page of an allowed origin given a token receives by EventSource (the
/// token in its query) and by fetch (in `Authorization`, so preflighted); without the token, its
/// poll's 401 reaches it, readable, because the refusal carries the CORS headers.
#[test]
fn a_cross_origin_page_with_a_token_receives_and_without_it_reads_the_401() {
    let page = PageOrigin::start();
    let server = Server::start(&["--allow-origin", &page.origin(), "--jwt-secret", SECRET]);
    let topic = vec!["t".to_owned()];
    let token = token(Claims { subscribe: topic.clone(), publish: topic, ..Claims::default() });
    let output = run_script("cross_origin.py", &[&url(&server), &page.url(), "token", &token]);
    assert_printed(&output, "received by events: 1:m1 2:m2 3:m3");
    assert_printed(&output, "received by polls: 1:m1 2:m2 3:m3");
    assert_printed(&output, "preflighted poll: 2:m2 3:m3");
    assert_printed(&output, "without a token: 401");
}

/// The page keeps its cursors in sessionStorage and opens its streams from them: messages
/// published while it reloads, or while it is away, arrive once each, none twice.
#[test]
fn after_a_reload_the_page_resumes_from_last_event_id_with_nothing_lost_or_twice() {
    let page = PageOrigin::start();
    let server = Server::start(&["--allow-origin", &page.origin()]);
    let output = run_script("reload.py", &[&url(&server), &page.url()]);
    assert_printed(&output, "received by events: 1:m1 2:m2 3:m3 4:m4 5:m5 6:m6 7:end");
    assert_printed(&output, "received by polls: 1:m1 2:m2 3:m3 4:m4 5:m5 6:m6 7:end");
}

/// Set `TETHER_SCREENSHOT=1` to have this test write docs/img/live.png (off by default, so
/// that running the tests leaves the tree as it was).
#[test]
fn the_live_page_loads_without_console_errors_and_its_figures_move() {
    let server = Server::start(&[]);
    let mut args = vec![url(&server)];
    if std::env::var_os("TETHER_SCREENSHOT").is_some_and(|v| v == "1") {
        let png = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/img/live.png");
        args.extend(["--screenshot".to_owned(), png.to_string_lossy().into_owned()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = run_script("live_page.py", &args);
    assert_printed(&output, "live page: ok");
}

/// With `--jwt-secret`, the live page opened as `/#token=TOKEN` keeps the token for its tab
/// (a reload still works), takes it out of the address bar, and sends it with every request it
/// makes, all of them to tether: in the query of its streams, in `Authorization` when it
/// publishes; never in an address of another origin, nor in a `Referer`.
#[test]
fn the_live_page_works_with_a_token_in_its_fragment_and_sends_it_only_to_tether() {
    let server = Server::start(&["--jwt-secret", SECRET]);
    let topic = vec!["live-page".to_owned()];
    let token = token(Claims { admin: true, subscribe: topic.clone(), publish: topic, ..Claims::default() });
    let output = run_script("live_page.py", &[&url(&server), "--token", &token]);
    let went = "events/$stats?token=, events/live-page?token=, publish/live-page with Authorization";
    assert_printed(&output, &format!("the token went to tether only: {went}"));
    assert_printed(&output, "live page: ok");
}

/// With `--jwt-secret`, the live page opened without a token says it needs one, and how to give
/// it; with a token that is not an admin's, that the token does not let it read the cost view
/// (a 403, not a 401); and when its token expires, that it expired, without reconnecting.
#[test]
fn the_live_page_says_it_needs_a_token() {
    let server = Server::start(&["--jwt-secret", SECRET]);
    let output = run_script("needs_token.py", &[&url(&server), env!("CARGO_BIN_EXE_tether"), SECRET]);
    let needs =
        "this server needs a token: open /#token=TOKEN (an admin token for the cost view; `tether token --admin`)";
    assert_printed(&output, &format!("without a token: {needs}"));
    let not_admin = "the cost view needs a token with \"admin\": true (`tether token --admin`)";
    assert_printed(&output, &format!("not an admin's token: this token is not enough: {not_admin}"));
    let not_publisher = "403 Forbidden: the token does not let its holder publish to this topic";
    assert_printed(&output, &format!("with a subscriber's token: not allowed; tailing news; publish: {not_publisher}"));
    assert_printed(&output, "at the token's expiry: the token expired; news: the token expired; no reconnection");
    assert_printed(&output, &format!("after a reload: {needs}; tether says: the token has expired"));
}

/// The browser, not tether, keeps a page from reading answers meant for other origins: tether
/// answers, without `Access-Control-Allow-Origin`, and the page gets errors and no message.
#[test]
fn a_page_from_an_origin_not_allowed_receives_nothing() {
    let page = PageOrigin::start();
    // Another origin is allowed, so CORS is on; the page's own is not among them.
    let server = Server::start(&["--allow-origin", "http://allowed.test"]);
    let output = run_script("cross_origin.py", &[&url(&server), &page.url(), "blocked"]);
    assert_printed(&output, "cross-site publish: refused, nothing stored");
    assert_printed(&output, "cross-origin page: blocked");
}

/// `--allow-origin '*'` lets any origin's page read the streams and polls.
#[test]
fn with_allow_origin_star_a_page_from_any_origin_receives_messages() {
    let page = PageOrigin::start();
    let server = Server::start(&["--allow-origin", "*"]);
    let output = run_script("cross_origin.py", &[&url(&server), &page.url(), "receives"]);
    assert_printed(&output, "received by events: 1:m1 2:m2 3:m3");
    assert_printed(&output, "received by polls: 1:m1 2:m2 3:m3");
}

/// A page of an allowed origin opens a WebSocket to tether with Chromium's own `WebSocket`,
/// subscribes, publishes over it and receives what is published by HTTP, in order; a poll reads
/// the same messages; the page's close with 1000 is answered with 1000.
#[test]
fn a_page_of_an_allowed_origin_follows_a_topic_by_websocket() {
    let page = PageOrigin::start();
    let server = Server::start(&["--allow-origin", &page.origin()]);
    let output = run_script("websocket_page.py", &[&url(&server), "allowed", &page.blank_url()]);
    assert_printed(&output, "by WebSocket: 1:from the page 2:m2 3:m3");
    assert_printed(&output, "by poll: 1:from the page 2:m2 3:m3");
    assert_printed(&output, "closed: 1000, clean");
    assert_printed(&output, "websocket page: ok");
}

/// The live page's origin is tether's own: a WebSocket from it needs no `--allow-origin`, and
/// the live page counts it.
#[test]
fn the_live_pages_own_origin_opens_a_websocket() {
    let server = Server::start(&[]);
    let output = run_script("websocket_page.py", &[&url(&server), "own"]);
    assert_printed(&output, "by WebSocket: 1:from the page 2:m2 3:m3");
    assert_printed(&output, "the live page counts its WebSocket");
    assert_printed(&output, "closed: 1000, clean");
    assert_printed(&output, "websocket page: ok");
}

/// A browser applies no CORS to a WebSocket: it opens one to any address, from any page. So
/// tether refuses the handshake of a page of an origin it does not allow (403), and the page
/// sees an error and a close with 1006, receives nothing and publishes nothing.
#[test]
fn a_page_of_an_origin_not_allowed_cannot_open_a_websocket() {
    let page = PageOrigin::start();
    // Another origin is allowed, so CORS is on; the page's own is not among them.
    let server = Server::start(&["--allow-origin", "http://allowed.test"]);
    let output = run_script("websocket_page.py", &[&url(&server), "blocked", &page.blank_url()]);
    assert_printed(&output, "refused: an error, close 1006, nothing received");
    assert_printed(&output, "tether answered 403; nothing stored");
}

// ---- running a script ---------------------------------------------------------------------

/// A token for these claims under `SECRET`, good for ten minutes.
fn token(claims: Claims) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs();
    let key = TokenKey::new(SECRET.as_bytes()).expect("a long enough secret");
    key.mint(&Claims { exp: now + 600, ..claims }).expect("an HMAC key signs")
}

fn url(server: &Server) -> String {
    format!("http://{}", server.addr)
}

fn assert_printed(output: &str, line: &str) {
    assert!(output.lines().any(|l| l == line), "expected the line {line:?} in:\n{output}");
}

/// Fails the test, naming what is missing and how to install it, unless Chromium and
/// Playwright are both there.
fn require_browser() {
    let mut missing = Vec::new();
    if !Path::new(CHROMIUM).exists() {
        missing.push(format!("Chromium at {CHROMIUM} (as root: apt-get install --no-install-recommends chromium)"));
    }
    let playwright =
        Command::new("python3").args(["-c", "import playwright"]).stdout(Stdio::null()).stderr(Stdio::null()).status();
    if !playwright.is_ok_and(|status| status.success()) {
        missing.push("the Python package playwright (python3 -m pip install playwright)".to_owned());
    }
    assert!(
        missing.is_empty(),
        "the browser tests need {}; `bash tests/run` installs what is missing",
        missing.join(" and ")
    );
}

/// Runs `tests/browser/<script>` to its end (or kills it after `SCRIPT_TIMEOUT`) and returns
/// what it printed, stdout then stderr; fails the test unless it exited 0.
fn run_script(script: &str, args: &[&str]) -> String {
    require_browser();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let mut command = Command::new("python3");
    // No __pycache__ beside the scripts: the tests leave the tree as it was.
    command.arg(dir.join(script)).args(args).env("PYTHONDONTWRITEBYTECODE", "1");
    common::run_script_command(command, SCRIPT_TIMEOUT)
}

// ---- a second origin ----------------------------------------------------------------------

/// `http://127.0.0.1:PORT`, another origin than tether's: it answers `/blank.html` with
/// `BLANK_PAGE` and every other request with `tests/browser/client.html`. Its listener is bound before tether starts, so its origin can
/// be given to `--allow-origin`; it stops when dropped.
struct PageOrigin {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl PageOrigin {
    fn start() -> PageOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the page's origin");
        let addr = listener.local_addr().expect("the page's address");
        // Not blocking, so that the loop sees `stop` between connections.
        listener.set_nonblocking(true).expect("a non-blocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    // A thread each: Chromium may open a connection and send nothing on it
                    // (a preconnect), which must not hold up the next one.
                    Ok((stream, _)) => drop(thread::spawn(move || serve_page(stream))),
                    // WouldBlock: nobody yet; anything else (a connection reset before it was
                    // accepted): the next one.
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        PageOrigin { addr, stop, thread: Some(thread) }
    }

    fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn url(&self) -> String {
        format!("{}/client.html", self.origin())
    }

    fn blank_url(&self) -> String {
        format!("{}/blank.html", self.origin())
    }
}

impl Drop for PageOrigin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads one request head and answers with the page it asks for, then closes.
fn serve_page(mut stream: TcpStream) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
    }
    let page = if head.starts_with(b"GET /blank.html ") { BLANK_PAGE } else { CLIENT_PAGE };
    let answer = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n{page}",
        page.len()
    );
    let _ = stream.write_all(answer.as_bytes());
}
