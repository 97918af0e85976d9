//! `tether publish` and `tether poll`: the client side of long polling, on [`Client`].
//!
//! Invariants:
//! - Standard output carries only what was published (one message per line, or one JSON object
//!   per line with `--json`); everything about the connection goes to standard error.
//! - `poll` never loses a message silently: it follows the server's cursor from one answer to the
//!   next, and reports `missed` and resets on standard error.
//! - `poll` keeps trying through connection errors and 5xx, waiting as `Backoff` says (and at
//!   least `Retry-After` on a 503); a 4xx or an answer it cannot read ends it with an error.
//! - Every wait, a held poll or a backoff, ends within `TICK` of SIGINT or SIGTERM, and `poll`
//!   then exits 0.

use std::fmt::Write as _;
use std::io::{self, ErrorKind, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::flag;

use crate::backoff::Backoff;
use crate::client::{Client, Error, Response, Url};
use crate::json;

/// How often a wait looks at the stop flag.
const TICK: Duration = Duration::from_millis(200);
/// How long one poll may stay unanswered before the connection is given up on: longer than the
/// server's default `--max-poll-timeout` (120 s), so only a silent server trips it.
const POLL_RESPONSE_TIMEOUT: Duration = Duration::from_secs(150);

/// `tether publish URL [DATA | -]`: POSTs one message and prints the server's JSON reply.
///
/// # Errors
///
/// A bad URL, unreadable standard input, no response, or the server's status and error line.
pub fn publish(url: &str, data: Option<&str>, token: Option<String>) -> Result<(), String> {
    let url = Url::parse(url)?;
    let body = match data {
        Some(data) if data != "-" => data.as_bytes().to_vec(),
        _ => read_stdin()?,
    };
    let response = Client::new(&url).token(token).post(&url.target(), &body).map_err(|e| e.to_string())?;
    if !(200..300).contains(&response.status) {
        return Err(status_error(&response));
    }
    let mut text = response.text();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    io::stdout().write_all(text.as_bytes()).map_err(|e| format!("cannot write to standard output: {e}"))
}

/// Standard input, less one final line ending: `echo hello | tether publish URL` publishes
/// `hello`, as `$(...)` would.
fn read_stdin() -> Result<Vec<u8>, String> {
    let mut data = Vec::new();
    io::stdin().read_to_end(&mut data).map_err(|e| format!("cannot read standard input: {e}"))?;
    if data.ends_with(b"\n") {
        data.pop();
        if data.ends_with(b"\r") {
            data.pop();
        }
    }
    Ok(data)
}

/// `413 Content Too Large: payload too large: ...`: the status and the server's error line.
fn status_error(response: &Response) -> String {
    let line = response.text();
    let line = line.trim_end();
    let status = format!("the server answered {} {}", response.status, response.reason);
    if line.is_empty() {
        status
    } else {
        format!("{status}: {line}")
    }
}

/// What `tether poll` was asked for.
#[derive(Debug, Clone)]
pub struct PollOptions {
    /// `http://host:port/poll/{topic}`, optionally with a query (`timeout=`, `cursor=`, `epoch=`).
    pub url: String,
    /// Start after this message; else the URL's `cursor=`, else the next message published.
    pub cursor: Option<u64>,
    /// Print each message as a JSON object rather than its data alone.
    pub json: bool,
    /// A bearer token sent with every poll.
    pub token: Option<String>,
}

/// `tether poll URL`: long-polls until SIGINT or SIGTERM, printing each message as it arrives.
///
/// # Errors
///
/// A bad URL, a 4xx answer, an answer that is not a poll answer, or standard output failing
/// (except a closed pipe, which ends the poll quietly, as `tether poll ... | head` expects).
pub fn poll(options: &PollOptions) -> Result<(), String> {
    let url = Url::parse(&options.url)?;
    let cursor = match (options.cursor, query_param(&url.query, "cursor")) {
        (Some(cursor), _) => Some(cursor),
        (None, Some(text)) => Some(text.parse().map_err(|_| format!("bad cursor={text} in the URL"))?),
        (None, None) => None,
    };
    let mut poller = Poller { cursor, epoch: query_param(&url.query, "epoch").map(str::to_string), json: options.json };
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        // The first signal raises the flag; a second one exits at once, should a wait not end.
        flag::register_conditional_shutdown(signal, 1, Arc::clone(&stop))
            .and_then(|_| flag::register(signal, Arc::clone(&stop)))
            .map_err(|e| format!("cannot handle signals: {e}"))?;
    }
    let mut client = Client::new(&url)
        .token(options.token.clone())
        .read_timeout(TICK)
        .response_timeout(POLL_RESPONSE_TIMEOUT)
        .stop_flag(Arc::clone(&stop));
    let mut backoff = Backoff::new();
    let mut out = io::stdout().lock();
    let mut last_was_reset = false;

    while !stop.load(Ordering::Relaxed) {
        let wait = match client.get(&poller.target(&url)) {
            Ok(response) if response.status == 200 => {
                let answer = Answer::parse(&response.body)?;
                let reset = answer.status == AnswerStatus::Reset;
                match poller.take(answer, &mut out) {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::BrokenPipe => return Ok(()),
                    Err(e) => return Err(format!("cannot write to standard output: {e}")),
                }
                // A server that resets the cursor it has just given would have us spin: a second
                // reset in a row waits like a failure.
                let wait = if reset && last_was_reset { backoff.next_delay() } else { Duration::ZERO };
                if !reset {
                    backoff.reset();
                }
                last_was_reset = reset;
                wait
            }
            Ok(response) if response.status >= 500 => {
                let retry_after = response.header("Retry-After").and_then(|v| v.parse().ok()).map(Duration::from_secs);
                let floor = if response.status == 503 { retry_after.unwrap_or_default() } else { Duration::ZERO };
                let wait = backoff.next_delay().max(floor);
                eprintln!("tether poll: {}; retrying in {} ms", status_error(&response), wait.as_millis());
                wait
            }
            Ok(response) => return Err(status_error(&response)),
            Err(Error::Stopped) => break,
            Err(error) => {
                let wait = backoff.next_delay();
                eprintln!("tether poll: {error}; retrying in {} ms", wait.as_millis());
                wait
            }
        };
        sleep_unless_stopped(wait, &stop);
    }
    Ok(())
}

/// The value of the first `name=` in a query.
fn query_param<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

fn sleep_unless_stopped(wait: Duration, stop: &AtomicBool) {
    let until = Instant::now() + wait;
    while !stop.load(Ordering::Relaxed) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        thread::sleep(left.min(TICK));
    }
}

/// Where the poll stands: the server's cursor and epoch from its last answer.
#[derive(Debug)]
struct Poller {
    cursor: Option<u64>,
    epoch: Option<String>,
    json: bool,
}

impl Poller {
    /// The next poll's target: the URL's query (a `timeout=`, say) with our `cursor` and `epoch`
    /// in place of its own.
    fn target(&self, url: &Url) -> String {
        let ours = |pair: &&str| pair.is_empty() || pair.starts_with("cursor=") || pair.starts_with("epoch=");
        let mut params: Vec<String> = url.query.split('&').filter(|p| !ours(p)).map(str::to_string).collect();
        params.extend(self.cursor.map(|cursor| format!("cursor={cursor}")));
        params.extend(self.epoch.as_ref().map(|epoch| format!("epoch={epoch}")));
        if params.is_empty() {
            url.path.clone()
        } else {
            format!("{}?{}", url.path, params.join("&"))
        }
    }

    /// Prints an answer's messages, says on standard error what was missed or reset, and moves
    /// to the answer's cursor and epoch.
    fn take(&mut self, answer: Answer, out: &mut impl Write) -> io::Result<()> {
        let mut cursor = answer.cursor;
        if answer.status == AnswerStatus::Reset {
            // A new epoch is a new life of the topic (a restarted server, or a topic forgotten
            // and created again) whose log starts at 1: all of it is news to us, so read it from
            // the start rather than from its newest message.
            if self.epoch.as_ref().is_some_and(|epoch| *epoch != answer.epoch) {
                cursor = 0;
            }
            eprintln!(
                "tether poll: the server reset the cursor (its epoch is now {}); continuing after message {cursor}",
                answer.epoch
            );
        }
        if answer.missed > 0 {
            let plural = if answer.missed == 1 { "" } else { "s" };
            eprintln!("tether poll: missed {} message{plural}", answer.missed);
        }
        let mut line = String::new();
        for (seq, data) in &answer.messages {
            line.clear();
            if self.json {
                // The epoch too: after a restart `seq` starts over, and only (epoch, seq) is unique.
                let _ = write!(line, "{{\"seq\":{seq},\"epoch\":");
                json::push_string(&mut line, &answer.epoch);
                line.push_str(",\"data\":");
                json::push_string(&mut line, data);
                line.push('}');
            } else {
                line.push_str(data);
            }
            line.push('\n');
            out.write_all(line.as_bytes())?;
        }
        out.flush()?;
        self.cursor = Some(cursor);
        self.epoch = Some(answer.epoch);
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AnswerStatus {
    Ok,
    Timeout,
    Reset,
}

/// A `/poll` answer (docs/long-polling.md shows one; "What cursors and epochs guarantee" says
/// what its fields promise).
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    status: AnswerStatus,
    epoch: String,
    cursor: u64,
    missed: u64,
    /// `(seq, data)`, in order.
    messages: Vec<(u64, String)>,
}

impl Answer {
    fn parse(body: &[u8]) -> Result<Answer, String> {
        let value: Value = serde_json::from_slice(body).map_err(|e| format!("the poll answer is not JSON: {e}"))?;
        let bad = |field: &str| format!("the poll answer has no valid {field:?}");
        let status = match value.get("status").and_then(Value::as_str) {
            Some("ok") => AnswerStatus::Ok,
            Some("timeout") => AnswerStatus::Timeout,
            Some("reset") => AnswerStatus::Reset,
            _ => return Err(bad("status")),
        };
        // The epoch goes back into the query as is, so it must need no escaping there.
        let epoch = value.get("epoch").and_then(Value::as_str).filter(|e| is_token(e)).ok_or_else(|| bad("epoch"))?;
        let number = |field: &str| value.get(field).and_then(Value::as_u64).ok_or_else(|| bad(field));
        let message = |m: &Value| Some((m.get("seq")?.as_u64()?, m.get("data")?.as_str()?.to_string()));
        let messages = value.get("messages").and_then(Value::as_array).ok_or_else(|| bad("messages"))?;
        Ok(Answer {
            status,
            epoch: epoch.to_string(),
            cursor: number("cursor")?,
            missed: number("missed")?,
            messages: messages.iter().map(message).collect::<Option<_>>().ok_or_else(|| bad("messages"))?,
        })
    }
}

/// 1 to 64 characters that a query carries unescaped.
fn is_token(text: &str) -> bool {
    (1..=64).contains(&text.len())
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(json: &str) -> Answer {
        Answer::parse(json.as_bytes()).unwrap_or_else(|e| panic!("{json}: {e}"))
    }

    #[test]
    fn poll_answers() {
        let ok = answer(
            r#"{"status":"ok","topic":"news","epoch":"3f9c2a","cursor":43,"missed":2,
                "messages":[{"seq":42,"data":"a"},{"seq":43,"data":"say \"hi\" ✓"}]}"#,
        );
        let expected = Answer {
            status: AnswerStatus::Ok,
            epoch: "3f9c2a".into(),
            cursor: 43,
            missed: 2,
            messages: vec![(42, "a".into()), (43, "say \"hi\" ✓".into())],
        };
        assert_eq!(ok, expected);
        let reset = answer(r#"{"status":"reset","topic":"t","epoch":"e","cursor":0,"missed":0,"messages":[]}"#);
        assert_eq!((reset.status, reset.cursor), (AnswerStatus::Reset, 0));
        for bad in [
            "<html>",
            r#"{"status":"maybe","epoch":"e","cursor":0,"missed":0,"messages":[]}"#,
            r#"{"status":"ok","epoch":"a b","cursor":0,"missed":0,"messages":[]}"#,
            r#"{"status":"ok","epoch":"e","cursor":-1,"missed":0,"messages":[]}"#,
            r#"{"status":"ok","epoch":"e","cursor":0,"messages":[]}"#,
            r#"{"status":"ok","epoch":"e","cursor":1,"missed":0,"messages":[{"seq":1}]}"#,
        ] {
            assert!(Answer::parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn polls_follow_the_servers_cursor_and_epoch() {
        let url = Url::parse("http://h:1/poll/news?timeout=5s&cursor=9&epoch=old&_=1").unwrap();
        assert_eq!(query_param(&url.query, "cursor"), Some("9"));
        assert_eq!(query_param(&url.query, "epoch"), Some("old"));
        assert_eq!(query_param(&url.query, "from"), None);
        let mut poller = Poller { cursor: None, epoch: None, json: false };
        assert_eq!(poller.target(&url), "/poll/news?timeout=5s&_=1");
        let mut out = Vec::new();
        let ok = r#"{"status":"ok","epoch":"e1","cursor":2,"missed":0,"messages":[{"seq":1,"data":"a"},{"seq":2,"data":"b"}]}"#;
        poller.take(answer(ok), &mut out).unwrap();
        assert_eq!(poller.target(&url), "/poll/news?timeout=5s&_=1&cursor=2&epoch=e1");
        poller
            .take(answer(r#"{"status":"reset","epoch":"e2","cursor":0,"missed":0,"messages":[]}"#), &mut out)
            .unwrap();
        assert_eq!(poller.target(&Url::parse("http://h:1/poll/news").unwrap()), "/poll/news?cursor=0&epoch=e2");
        assert_eq!(String::from_utf8(out).unwrap(), "a\nb\n");
    }

    #[test]
    fn json_lines_hold_whole_messages() {
        let mut poller = Poller { cursor: None, epoch: None, json: true };
        let mut out = Vec::new();
        let ok = r#"{"status":"ok","epoch":"e","cursor":7,"missed":0,"messages":[{"seq":7,"data":"say \"hi\"\tü"}]}"#;
        poller.take(answer(ok), &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "{\"seq\":7,\"epoch\":\"e\",\"data\":\"say \\\"hi\\\"\\tü\"}\n");
    }

    #[test]
    fn error_lines() {
        let response = Response {
            status: 413,
            reason: "Content Too Large".into(),
            headers: Vec::new(),
            body: b"payload too large\n".to_vec(),
            close: true,
        };
        assert_eq!(status_error(&response), "the server answered 413 Content Too Large: payload too large");
    }
}
