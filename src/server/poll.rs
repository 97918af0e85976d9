//! Long polling in the service: publishing, holding a poll, answering it when a message, the
//! hold deadline or a drain comes, and the periodic sweep that forgets idle topics.
//!
//! Invariants:
//! - A held poll is in its connection's state (`Conversation::Holding`) from the request until
//!   its answer, and in its topic's list until a publish takes the whole list (it is then
//!   *woken*: queued for the flush phase), or until its answer or a hang-up releases it.
//! - A publish queues every poll held on its topic; the flush phase builds and writes their
//!   answers a slice per turn, after the publisher's own answer. An answer is built from the
//!   topic as it is then, so a poll woken by one message and answered after three more carries
//!   all four.
//! - `polls.held` counts the holds alive (woken ones too, until answered), and is what
//!   `--max-held` is checked against.
//! - The topic sweep is always armed, once: `TOPIC_SWEEP_TIMER` in the reactor's one wheel.

use std::fmt::Write;
use std::time::{Duration, Instant};

use log::debug;

use super::service::{Service, COST_VIEW_TOPIC};
use crate::config::{parse_duration, MIN_POLL_TIMEOUT};
use crate::connection::{deadline_after, EndSecond, Stream, Wait};
use crate::http::request::{Body, Request};
use crate::http::response::{self, Cors, Response, Status};
use crate::json;
use crate::pubsub::{Cursor, HoldKey, Message, Read, TopicError, Topics};
use crate::timer::Tick;

mod acks;
mod copies;
mod subscription;
mod subscription_query;
mod websocket;

pub(super) use acks::Acks;
use copies::Appended;
pub(super) use copies::Member;
pub(super) use subscription::{Subscriptions, Wire};

/// How long a publish waits for Redis to acknowledge it before it is answered `503`: longer
/// than the link takes to notice that Redis is gone (docs/scale-out.md).
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// The topic sweep runs this often, an eighth of `--topic-idle-timeout`, but at most once a
/// second: a topic is forgotten at most that long after its idle time is up.
pub(super) fn topic_sweep_period(idle_timeout: Duration) -> Duration {
    (idle_timeout / 8).max(Duration::from_secs(1))
}

/// A poll's query, as given: `?cursor=N&epoch=E&from=oldest&timeout=30s`.
#[derive(Debug, Default, PartialEq, Eq)]
struct PollQuery<'a> {
    cursor: Option<u64>,
    epoch: Option<&'a str>,
    from_oldest: bool,
    timeout: Option<Duration>,
}

impl<'a> PollQuery<'a> {
    /// Parses the query; `Last-Event-ID` stands in for a missing `cursor`. Unknown parameters
    /// are ignored (a cache-buster `&_=123` is common); malformed known ones are refused.
    fn parse(query: &'a str, last_event_id: Option<&str>) -> Result<Self, &'static str> {
        let mut parsed = PollQuery::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "cursor" => parsed.cursor = Some(parse_seq(value).ok_or("bad poll: cursor must be a whole number\n")?),
                "epoch" => parsed.epoch = Some(value),
                "from" if value == "oldest" => parsed.from_oldest = true,
                "from" => return Err("bad poll: from takes only the value oldest\n"),
                "timeout" => {
                    parsed.timeout = Some(parse_timeout(value).ok_or("bad poll: timeout must be like 30s or 500ms\n")?);
                }
                _ => {}
            }
        }
        if parsed.cursor.is_none() {
            if let Some(id) = last_event_id {
                parsed.cursor = Some(parse_seq(id).ok_or("bad poll: Last-Event-ID must be a whole number\n")?);
            }
        }
        Ok(parsed)
    }

    fn start(&self) -> Cursor {
        match (self.cursor, self.from_oldest) {
            (Some(seq), _) => Cursor::After(seq),
            (None, true) => Cursor::Oldest,
            (None, false) => Cursor::Next,
        }
    }
}

fn parse_seq(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// `timeout=` takes a duration with a unit, or bare seconds (a query string is typed by hand
/// more often than a command line, and nginx reads bare numbers as seconds).
fn parse_timeout(text: &str) -> Option<Duration> {
    match parse_seq(text) {
        Some(secs) => Some(Duration::from_secs(secs)),
        None => parse_duration(text).ok(),
    }
}

impl Service {
    /// `POST /publish/{topic}` on connection `key`: append the message, wake the topic's held
    /// polls, and say so in `self.body`; or, with `--redis`, what to wait for: Redis'
    /// acknowledgment (`acks`).
    pub(super) fn publish(
        &mut self,
        key: usize,
        req: &Request,
        name: &str,
        now: Tick,
    ) -> Result<Option<Wait>, Response<'static>> {
        let bytes: &[u8] = match &req.body {
            Body::Empty => b"",
            Body::Bytes(bytes) => bytes,
            Body::Chunked(bytes) => bytes,
        };
        let text = std::str::from_utf8(bytes)
            .map_err(|_| Response::error(Status::BAD_REQUEST, b"a message must be UTF-8 text\n"))?;
        match self.append_message(key, name, text, true, now).map_err(topic_error)? {
            Appended::Now { seq, woken } => {
                self.body.push_str("{\"topic\":");
                json::push_string(&mut self.body, name);
                let _ = writeln!(self.body, ",\"seq\":{seq},\"woken\":{woken}}}");
                Ok(None)
            }
            Appended::Awaiting(n) => {
                Ok(Some(Wait { hold: HoldKey::ack(n), after: 0, deadline: deadline_after(now, ACK_TIMEOUT) }))
            }
            Appended::Sent => unreachable!("an HTTP publish waits for its outcome"),
        }
    }

    /// `GET /poll/{topic}` on connection `key`: the answer in `self.body` when there is
    /// something to say, else what to wait for (listed on the topic here).
    pub(super) fn poll(
        &mut self,
        key: usize,
        req: &Request,
        name: &str,
        now: Tick,
    ) -> Result<Option<Wait>, Response<'static>> {
        // The query first: a refused poll must not create its topic (and use up --max-topics).
        let query = PollQuery::parse(req.query, req.last_event_id)
            .map_err(|reason| Response::error(Status::BAD_REQUEST, reason.as_bytes()))?;
        let topic = self.topic(name, now).map_err(topic_error)?;
        let foreign_epoch = query.epoch.is_some_and(|epoch| epoch != self.topics.epoch(topic));
        let after = self.topics.resolve(topic, query.start());
        let read = if foreign_epoch {
            Read::Reset { cursor: self.topics.last_seq(topic) }
        } else {
            self.topics.read(topic, after)
        };
        if read != Read::Nothing {
            self.costs.polls.answered += 1;
            poll_body(&mut self.body, &self.topics, topic, &read, after);
            return Ok(None);
        }
        self.check_max_held()?;
        let hold_for = self.hold_time(query.timeout);
        self.costs.polls.held += 1;
        // Watched from here to its answer: once a publish has taken it off the list, it is still
        // to be answered from this topic, which must not be forgotten meanwhile.
        self.topics.watch(topic);
        Ok(Some(Wait { hold: self.topics.hold(topic, key), after, deadline: deadline_after(now, hold_for) }))
    }

    /// How long a poll is held: its `timeout=`, or `--poll-timeout`, clamped between one second
    /// and `--max-poll-timeout`.
    fn hold_time(&self, asked: Option<Duration>) -> Duration {
        asked.unwrap_or(self.config.poll_timeout).clamp(MIN_POLL_TIMEOUT, self.config.max_poll_timeout)
    }

    /// `--max-held` counts held polls, open streams and sockets alike: each pins a connection for
    /// long.
    fn check_max_held(&mut self) -> Result<(), Response<'static>> {
        if self.costs.polls.held + self.costs.streams_open + self.costs.sockets_open < self.max_held as u64 {
            return Ok(());
        }
        Err(self.too_many_held())
    }

    /// The 503 of a poll or stream refused at `--max-held`, counted.
    fn too_many_held(&mut self) -> Response<'static> {
        self.costs.polls.rejected += 1;
        Response::error(Status::SERVICE_UNAVAILABLE, b"too many polls held, retry later\n")
            .with_headers(self.retry_after())
    }

    /// `GET /events/{topic}`: what feeds the stream. It starts where a poll would (`Last-Event-ID`,
    /// the cursor, `from=oldest`, or the next message); a foreign epoch starts it with a
    /// `reset`. Its first events are written by the machine's first feed.
    pub(super) fn open_stream(&mut self, req: &Request, name: &str, now: Tick) -> Result<Stream, Response<'static>> {
        let mut query = PollQuery::parse(req.query, None)
            .map_err(|reason| Response::error(Status::BAD_REQUEST, reason.as_bytes()))?;
        // A browser reconnects a broken stream to the same address, `?cursor=` included, and adds
        // the last id it saw as `Last-Event-ID`: here the header is the newer news and wins.
        if let Some(id) = req.last_event_id {
            let cursor = parse_seq(id).ok_or_else(|| {
                Response::error(Status::BAD_REQUEST, b"bad stream: Last-Event-ID must be a whole number\n")
            })?;
            query.cursor = Some(cursor);
        }
        self.check_max_held()?;
        if name == COST_VIEW_TOPIC {
            self.costs.streams_open += 1;
            return Ok(Stream::cost_view(now)); // the first snapshot at once
        }
        let topic = self.topic(name, now).map_err(topic_error)?;
        let foreign_epoch = query.epoch.is_some_and(|epoch| epoch != self.topics.epoch(topic));
        // A cursor past the log makes the first read a reset, which is what a foreign epoch needs.
        let after = if foreign_epoch { u64::MAX } else { self.topics.resolve(topic, query.start()) };
        self.topics.watch(topic);
        self.costs.streams_open += 1;
        let heartbeat = deadline_after(now, self.config.sse_heartbeat);
        Ok(Stream { wait: Wait { hold: HoldKey::unlisted(topic), after, deadline: heartbeat }, ends: EndSecond::NEVER })
    }

    /// A topic stream's next events after its cursor, in the event-stream format: `missed`
    /// (with the cursor past the loss), then each message with its seq as `id:`; or a `reset`
    /// with the topic's current cursor and epoch. Once it has sent everything, the stream is
    /// listed on its topic again, to be woken by the next publish.
    pub(super) fn stream_events(&mut self, key: usize, topic: u32, wait: &mut Wait, out: &mut Vec<u8>, now: Tick) {
        let after = wait.after;
        // Topic names and epochs need no escaping (`valid_topic_name`, hex digits and `-`).
        let name = self.topics.name(topic);
        match self.topics.read(topic, after) {
            Read::Nothing => wait.hold = self.topics.hold(topic, key),
            Read::Reset { cursor } => {
                let epoch = self.topics.epoch(topic);
                let data = format!("{{\"topic\":\"{name}\",\"cursor\":{cursor},\"epoch\":\"{epoch}\"}}");
                push_event(out, "reset", &cursor.to_string(), &data);
                wait.after = cursor;
                if self.topics.is_retired(topic) {
                    // Its topic began a new life: the stream goes on with the new one.
                    if let Some(fresh) = self.move_off_retired(topic, now) {
                        wait.hold = HoldKey::unlisted(fresh);
                    } else {
                        wait.hold = self.topics.hold(topic, key); // Redis is gone again: wait
                    }
                }
            }
            Read::Messages { messages, missed, cursor } => {
                if missed > 0 {
                    let data = format!("{{\"topic\":\"{name}\",\"missed\":{missed}}}");
                    push_event(out, "missed", &(after + missed).to_string(), &data);
                }
                for message in &messages {
                    out.extend_from_slice(b"id: ");
                    response::push_decimal(out, message.seq);
                    out.push(b'\n');
                    out.extend_from_slice(message.lines.as_bytes());
                    out.push(b'\n');
                }
                wait.after = cursor;
                if cursor == self.topics.last_seq(topic) {
                    // Caught up: listed again now, rather than after one more read that finds
                    // nothing (a fan-out does this once per stream).
                    wait.hold = self.topics.hold(topic, key);
                }
            }
        }
    }

    /// Wakes every poll held on `topic`: handed to the reactor's flush phase, which answers them
    /// a slice per turn, so the publisher's answer and other ready connections do not wait for
    /// the whole fan-out. Returns how many.
    pub(super) fn wake(&mut self, topic: u32, now: Tick) -> usize {
        let queued = self.woken.len();
        self.woken.extend(self.topics.take_held(topic, now));
        let woken = self.woken.len() - queued;
        if woken > 0 {
            self.fanout_started = Some(Instant::now());
            self.costs.polls.last_fanout_woken = woken as u64;
        }
        woken
    }

    /// The answer of a held poll that is due, in `self.body`: what its topic has after the
    /// cursor, or `timeout` when nothing (the hold time passed, or the server drains).
    pub(super) fn held_answer(&mut self, key: usize, topic: u32, wait: &Wait, now: Tick) {
        self.costs.polls.held -= 1;
        self.topics.release(wait.hold, key, now); // a no-op once a publish took it
        let read = self.topics.read(topic, wait.after);
        self.topics.unwatch(topic, now);
        if read == Read::Nothing {
            self.costs.polls.timed_out += 1;
        } else {
            self.costs.polls.answered += 1;
        }
        poll_body(&mut self.body, &self.topics, topic, &read, wait.after);
    }

    /// The topic sweep's timer fired: forget the topics idle for `--topic-idle-timeout`. A sweep
    /// costs O(log topics) per topic forgotten, nothing for the others.
    pub(super) fn sweep_topics(&mut self, now: Tick) {
        let forgotten = self.forget_idle_topics(now);
        if forgotten > 0 {
            debug!("forgot {forgotten} idle topics; {} left", self.topics.count());
        }
    }
}

/// One event of our own (not a message): its name, the cursor it leaves the stream at, one line
/// of JSON data.
fn push_event(out: &mut Vec<u8>, event: &str, id: &str, data: &str) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(event.as_bytes());
    out.extend_from_slice(b"\nid: ");
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(data.as_bytes());
    out.extend_from_slice(b"\n\n");
}

/// The JSON of a poll answer: `ok` with messages, `reset`, or (for `Read::Nothing`) `timeout`
/// with the cursor unchanged.
fn poll_body(out: &mut String, topics: &Topics, topic: u32, read: &Read, after: u64) {
    let (status, cursor, missed, messages): (&str, u64, u64, &[Message]) = match read {
        Read::Messages { messages, missed, cursor } => ("ok", *cursor, *missed, messages),
        Read::Reset { cursor } => ("reset", *cursor, 0, &[]),
        Read::Nothing => ("timeout", after, 0, &[]),
    };
    // Nothing is escaped here: a topic name is letters, digits and `._-` (`valid_topic_name`),
    // an epoch hex digits and `-`, and each message's literal was escaped when it was published.
    let (name, epoch) = (topics.name(topic), topics.epoch(topic));
    let _ = write!(out, "{{\"status\":\"{status}\",\"topic\":\"{name}\",\"epoch\":\"{epoch}\",");
    let _ = write!(out, "\"cursor\":{cursor},\"missed\":{missed},\"messages\":[");
    for (i, message) in messages.iter().enumerate() {
        let _ = write!(out, "{}{{\"seq\":{},\"data\":", if i == 0 { "" } else { "," }, message.seq);
        out.push_str(&message.json);
        out.push('}');
    }
    out.push_str("]}\n");
}

/// Every poll answer is `200`, JSON, never cached, and may be read by an allowed origin.
pub(super) fn poll_response(body: &[u8]) -> Response<'_> {
    Response::new(Status::OK, "application/json", body).with_headers(response::NO_STORE).with_cors(Cors::Shared)
}

pub(super) fn topic_error(error: TopicError) -> Response<'static> {
    match error {
        TopicError::BadName => {
            Response::error(Status::BAD_REQUEST, b"a topic name is 1 to 64 characters of A-Z a-z 0-9 . _ -\n")
        }
        TopicError::TooMany => {
            Response::error(Status::SERVICE_UNAVAILABLE, b"too many topics\n").with_headers(&[("Retry-After", "1")])
        }
        TopicError::Unavailable => {
            Response::error(Status::SERVICE_UNAVAILABLE, b"the topic's log in Redis cannot be reached, retry later\n")
                .with_headers(&[("Retry-After", "2")])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_queries() {
        let q = PollQuery::parse("cursor=42&epoch=ab12&timeout=5s&_=99", None).unwrap();
        assert_eq!(
            q,
            PollQuery {
                cursor: Some(42),
                epoch: Some("ab12"),
                from_oldest: false,
                timeout: Some(Duration::from_secs(5))
            }
        );
        assert_eq!(q.start(), Cursor::After(42));
        assert_eq!(PollQuery::parse("", Some("7")).unwrap().start(), Cursor::After(7));
        assert_eq!(PollQuery::parse("cursor=3", Some("7")).unwrap().start(), Cursor::After(3));
        assert_eq!(PollQuery::parse("from=oldest", None).unwrap().start(), Cursor::Oldest);
        assert_eq!(PollQuery::parse("", None).unwrap().start(), Cursor::Next);
        assert_eq!(PollQuery::parse("timeout=10", None).unwrap().timeout, Some(Duration::from_secs(10)));
        assert_eq!(PollQuery::parse("timeout=250ms", None).unwrap().timeout, Some(Duration::from_millis(250)));
        for bad in ["cursor=-1", "cursor=", "cursor=1e3", "cursor=99999999999999999999", "from=newest", "timeout=soon"]
        {
            assert!(PollQuery::parse(bad, None).is_err(), "{bad}");
        }
        assert!(PollQuery::parse("", Some("x")).is_err());
    }

    /// A message is escaped once, when published; answering copies the stored literal, however
    /// many readers there are and however large the message.
    use crate::pubsub::TopicLimits;

    /// A poll is held for its `timeout=`, or `--poll-timeout`, clamped between one second and
    /// `--max-poll-timeout`: the deadline the connection is given says so without a clock.
    #[test]
    fn a_hold_time_is_clamped_between_one_second_and_max_poll_timeout() {
        use crate::backoff::XorShift;
        use crate::config::Config;
        use crate::http::request::{self, Limits};
        let config = Config {
            poll_timeout: Duration::from_secs(1),
            max_poll_timeout: Duration::from_secs(2),
            ..Config::default()
        };
        let mut service = Service::new(config, 10, XorShift::new(1), Instant::now());
        let limits = Limits { max_head_bytes: 8192, max_uri_bytes: 8192, max_body_bytes: 1024 };
        let now = 5_000;
        for (query, held_ms) in
            [("", 1_000), ("&timeout=60s", 2_000), ("&timeout=100ms", 1_000), ("&timeout=1500ms", 1_500)]
        {
            let head = format!("GET /poll/t?cursor=0{query} HTTP/1.1\r\nHost: x\r\n\r\n");
            let req = request::parse(head.as_bytes(), &limits).unwrap().unwrap();
            let wait = service.poll(7, &req, "t", now).unwrap().unwrap();
            let deadline = wait.deadline;
            assert_eq!(deadline, now + held_ms + 1, "{query}");
        }
    }

    /// A poll that a publish woke is answered in a later flush phase, maybe after the topic's
    /// idle time has run out (at a fan-out of thousands, on a loaded machine, with
    /// `--topic-idle-timeout 1s`): the topic must still be there when it is answered. (Before,
    /// the sweep forgot it, and the answer read a removed or reused topic id.)
    #[test]
    fn a_woken_poll_keeps_its_topic_until_it_is_answered() {
        use crate::backoff::XorShift;
        use crate::config::Config;
        use crate::http::request::{self, Limits};
        use crate::pubsub::HoldOn;
        let config = Config { topic_idle_timeout: Duration::from_secs(1), ..Config::default() };
        let mut service = Service::new(config, 10, XorShift::new(1), Instant::now());
        let limits = Limits { max_head_bytes: 8192, max_uri_bytes: 8192, max_body_bytes: 1024 };
        let poll = b"GET /poll/t HTTP/1.1\r\nHost: x\r\n\r\n";
        let req = request::parse(poll, &limits).unwrap().unwrap();
        let wait = service.poll(7, &req, "t", 0).unwrap().unwrap();
        let publish = b"POST /publish/t HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi";
        let req = request::parse(publish, &limits).unwrap().unwrap();
        service.publish(7, &req, "t", 10).unwrap();
        assert_eq!(std::mem::take(&mut service.woken), [7]);
        service.sweep_topics(60_000);
        assert_eq!(service.topics.count(), 1, "forgotten while its woken poll waits for its answer");
        service.body.clear();
        let HoldOn::One(topic) = wait.hold.on() else { panic!("a poll on one topic") };
        service.held_answer(7, topic, &wait, 60_000);
        assert!(service.body.contains("\"data\":\"hi\""), "{}", service.body);
        service.sweep_topics(120_000);
        assert_eq!(service.topics.count(), 0, "answered: its idle time runs again");
    }

    #[test]
    fn answers_copy_messages_escaped_at_publish() {
        let limits = TopicLimits { capacity: 8, max_topics: 10, max_retained_bytes: 1 << 20, idle_timeout: 1000 };
        let mut topics = Topics::new(limits);
        let t = topics.get_or_create("news", 0).unwrap();
        topics.publish(t, "say \"hi\"\n\u{1}", 0);
        topics.publish(t, "ü", 0);
        let read = topics.read(t, 0);
        let escaped_before = json::escaped_on_this_thread();
        let mut bodies = Vec::new();
        for _reader in 0..3 {
            let mut body = String::new();
            poll_body(&mut body, &topics, t, &read, 0);
            bodies.push(body);
        }
        assert_eq!(json::escaped_on_this_thread(), escaped_before, "answering escaped a string");
        let body = &bodies[0];
        assert!(body.contains(r#"[{"seq":1,"data":"say \"hi\"\n\u0001"},{"seq":2,"data":"ü"}]"#), "{body}");
        let parsed: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(parsed["messages"][0]["data"], "say \"hi\"\n\u{1}");
        assert_eq!(parsed["cursor"], 2);
    }
}
