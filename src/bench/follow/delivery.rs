//! What a follower asks, and what it makes of what it receives: the request of each style (and a
//! socket's subscribe and pongs), a poll's answer, a stream's events and a socket's messages
//! read into deliveries, and the order check.
//!
//! Invariants:
//! - Each follower expects messages 0, 1, 2, ... in order; anything else (a gap, a repeat, a
//!   `reset`, a loss told by `missed`) is counted in `errors.delivery`.
//! - A delivery is timed from its message's scheduled publish to `now`, when the answer or event
//!   carrying it was read.
//! - The cursor moves only to what the server said: a poll answer's `cursor`, an event's `id`, a
//!   socket message's `seq` (or a reset's cursor).

use std::time::Instant;

use serde::Deserialize;

use super::{Follower, Phase, Plan, Role, Style, Watch};
use crate::bench::conn::ConnError;
use crate::bench::engine::Engine;
use crate::bench::frame::{self, Frame, FrameError};
use crate::bench::websocket::{self, Kind};

/// A poll answer.
#[derive(Deserialize)]
pub(super) struct Answer {
    status: String,
    epoch: String,
    cursor: u64,
    missed: u64,
    messages: Vec<Message>,
}

#[derive(Deserialize)]
struct Message {
    seq: u64,
    data: String,
}

/// The data of a stream's `missed` event.
#[derive(Deserialize)]
struct Missed {
    missed: u64,
}

/// A socket's message (docs/transports.md): news of its topic (a message, a loss, a reset), or
/// the refusal of what the client sent. The topic is the follower's one.
#[derive(Deserialize)]
struct News {
    seq: Option<u64>,
    data: Option<String>,
    missed: Option<u64>,
    reset: Option<u64>,
    error: Option<String>,
}

/// The text of message `index`, and back.
pub(super) fn message_data(index: usize) -> String {
    format!("message {index}")
}

fn message_index(data: &str) -> Option<usize> {
    data.strip_prefix("message ")?.parse().ok()
}

impl Watch {
    /// Records each new message of an answer and moves the follower's cursor.
    pub(super) fn take_answer(&mut self, index: usize, answer: &Answer, now: Instant) {
        self.followers[index].epoch = Some(answer.epoch.clone());
        self.out.errors.delivery += answer.missed;
        let cursor = self.followers[index].cursor;
        let mut fresh = 0;
        // Past the cursor: a short poll's answer repeats what it has.
        for message in answer.messages.iter().filter(|m| m.seq > cursor) {
            fresh += 1;
            self.take_message(index, &message.data, now);
        }
        match answer.status.as_str() {
            "reset" => self.out.errors.delivery += 1,
            _ if fresh == 0 => self.out.empty += 1,
            _ => {}
        }
        self.followers[index].cursor = answer.cursor;
    }

    /// Records a stream's event and moves the follower's cursor to its id: a message, a loss
    /// (`missed`, its count), or anything else (a `reset`), a delivery error.
    pub(super) fn take_event(&mut self, index: usize, event: &frame::Event, block: &[u8], now: Instant) {
        let data = event.data(block);
        match event.name.clone().map(|at| &block[at]) {
            None | Some(b"message") => self.take_message(index, std::str::from_utf8(&data).unwrap_or(""), now),
            Some(b"missed") => {
                self.out.errors.delivery += serde_json::from_slice::<Missed>(&data).map_or(1, |m| m.missed)
            }
            Some(_) => self.out.errors.delivery += 1,
        }
        let id = event.id.clone().and_then(|at| std::str::from_utf8(&block[at]).ok()?.parse().ok());
        let follower = &mut self.followers[index];
        follower.cursor = id.unwrap_or(follower.cursor);
    }

    /// Records a socket's message: a message delivered, a loss (`missed`, its count), a `reset`
    /// (a delivery error, the cursor moved to it), or an `{"error"}` (counted as a refusal).
    pub(super) fn take_news(&mut self, index: usize, payload: &[u8], now: Instant) {
        let Ok(news) = serde_json::from_slice::<News>(payload) else {
            self.out.errors.malformed += 1;
            return;
        };
        match news {
            News { seq: Some(seq), data: Some(data), .. } => {
                self.take_message(index, &data, now);
                self.followers[index].cursor = seq;
            }
            News { missed: Some(missed), .. } => self.out.errors.delivery += missed,
            News { reset: Some(cursor), .. } => {
                self.out.errors.delivery += 1;
                self.followers[index].cursor = cursor;
            }
            News { error: Some(error), .. } => {
                log::debug!("follower {index}: the server refused a message: {error}");
                self.out.errors.status += 1;
            }
            News { .. } => self.out.errors.malformed += 1,
        }
    }

    /// The `101` of a follower's upgrade: if its accept proves the key, the socket is open and
    /// subscribes from the follower's cursor; otherwise the connection is of no use.
    pub(super) fn subscribe(&mut self, engine: &mut Engine<Role>, key: usize, index: usize, frame: &Frame) {
        let accept = frame.accept.as_ref().map(|at| engine.bytes(key, at));
        let handshake = self.followers[index].handshake.as_deref();
        if !handshake.zip(accept).is_some_and(|(handshake, accept)| websocket::accepts(handshake, accept)) {
            return self.fail(engine, index, &ConnError::Frame(FrameError::Malformed));
        }
        let follower = &mut self.followers[index];
        follower.phase = Phase::Streaming;
        let subscribe = serde_json::json!({"subscribe": self.plan.topic, "cursor": follower.cursor}).to_string();
        self.send_frame(engine, index, Kind::Text, subscribe.as_bytes());
    }

    /// Sends a frame on the follower's socket, masked with a key of its own, and counts it.
    pub(super) fn send_frame(&mut self, engine: &mut Engine<Role>, index: usize, kind: Kind, payload: &[u8]) {
        let Some(key) = self.followers[index].key else {
            return;
        };
        let mut frame = Vec::with_capacity(payload.len() + 14);
        websocket::write(&mut frame, kind, payload, websocket::mask_key(&mut self.keys));
        self.out.traffic.requests += 1;
        if let Err(e) = engine.send(key, &frame) {
            self.fail(engine, index, &e);
        }
    }

    /// A new message for the follower: delivered if it is the one expected next, else a delivery
    /// error (a gap or a repeat).
    fn take_message(&mut self, index: usize, data: &str, now: Instant) {
        let (follower, out) = (&mut self.followers[index], &mut self.out);
        match message_index(data) {
            Some(i) if i == follower.next && i < self.schedule.len() => {
                out.latency.record(now.saturating_duration_since(self.schedule[i]));
                out.delivered += 1;
                follower.next += 1;
                if follower.next == self.plan.messages {
                    self.complete += 1;
                }
            }
            Some(i) => {
                out.errors.delivery += 1;
                follower.next = follower.next.max(i + 1);
            }
            None => out.errors.delivery += 1,
        }
    }
}

/// The next request of follower `index`, to its server: a long poll from its cursor, a short
/// poll from one message before it (so that the server always has something and answers at
/// once), a stream, or an upgrade with the key `Watch::ask` drew.
pub(super) fn request(plan: &Plan, index: usize, follower: &Follower) -> String {
    let (target, topic) = (plan.server(index), &plan.topic);
    let base = target.base_path();
    let epoch = follower.epoch.as_ref().map_or(String::new(), |epoch| format!("&epoch={epoch}"));
    match plan.style {
        Style::Long { hold } => {
            let (cursor, hold) = (follower.cursor, hold.as_millis());
            target.get(&format!("{base}/poll/{topic}?cursor={cursor}{epoch}&timeout={hold}ms"), "")
        }
        Style::Short { .. } => {
            target.get(&format!("{base}/poll/{topic}?cursor={}{epoch}", follower.cursor.saturating_sub(1)), "")
        }
        Style::Sse => target.get(&format!("{base}/events/{topic}"), &format!("Last-Event-ID: {}\r\n", follower.cursor)),
        Style::WebSocket => websocket::upgrade(target, follower.handshake.as_deref().unwrap_or_default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::Target;
    use std::time::Duration;

    #[test]
    fn message_texts_round_trip() {
        assert_eq!(message_index(&message_data(17)), Some(17));
        assert_eq!(message_index("warm-up"), None);
        assert_eq!(message_index("message x"), None);
    }

    #[test]
    fn a_poll_answer_parses() {
        let body = br#"{"status":"ok","topic":"t","epoch":"3f9c","cursor":43,"missed":0,
            "messages":[{"seq":42,"data":"message 0"},{"seq":43,"data":"message 1"}]}"#;
        let answer: Answer = serde_json::from_slice(body).unwrap();
        assert_eq!((answer.status.as_str(), answer.cursor, answer.messages.len()), ("ok", 43, 2));
        assert_eq!(message_index(&answer.messages[1].data), Some(1));
    }

    #[test]
    fn each_style_asks_from_the_followers_cursor() {
        let target = Target::parse("http://127.0.0.1:8080/api").unwrap();
        let (topic, slot) = ("t".to_string(), Instant::now());
        let handshake = Some("dGhlIHNhbXBsZSBub25jZQ==".to_string());
        let follower =
            Follower { key: None, phase: Phase::Asking, cursor: 7, epoch: Some("e".into()), next: 0, slot, handshake };
        let cases = [
            (Style::Long { hold: Duration::from_secs(60) }, "GET /api/poll/t?cursor=7&epoch=e&timeout=60000ms", ""),
            (Style::Short { every: Duration::from_secs(1) }, "GET /api/poll/t?cursor=6&epoch=e", ""),
            (Style::Sse, "GET /api/events/t", "Last-Event-ID: 7\r\n"),
            (
                Style::WebSocket,
                "GET /api/ws",
                "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                 Sec-WebSocket-Version: 13\r\n",
            ),
        ];
        for (style, line, header) in cases {
            let plan = Plan {
                servers: vec![target.clone()],
                topic: topic.clone(),
                clients: 1,
                messages: 1,
                interval: Duration::ZERO,
                style,
                after: 0,
            };
            let expected = format!("{line} HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n{header}\r\n");
            assert_eq!(request(&plan, 0, &follower), expected, "{style:?}");
        }
    }

    /// Over several servers, follower i asks server i mod N, with that server's path and `Host`.
    #[test]
    fn followers_ask_their_servers_in_turn() {
        let servers = ["http://127.0.0.1:8080", "http://127.0.0.1:8081/api"].map(|url| Target::parse(url).unwrap());
        let (cursor, slot, style) = (7, Instant::now(), Style::Long { hold: Duration::from_secs(1) });
        let follower =
            Follower { key: None, phase: Phase::Asking, cursor, epoch: None, next: 0, slot, handshake: None };
        let plan = Plan {
            servers: servers.to_vec(),
            topic: "t".into(),
            clients: 3,
            messages: 1,
            interval: Duration::ZERO,
            style,
            after: 0,
        };
        let asked = |index: usize| request(&plan, index, &follower);
        let [first, second] = [
            "/poll/t?cursor=7&timeout=1000ms HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n",
            "/api/poll/t?cursor=7&timeout=1000ms HTTP/1.1\r\nHost: 127.0.0.1:8081\r\n",
        ];
        for (index, expected) in [(0, first), (1, second), (2, first)] {
            assert!(asked(index).starts_with(&format!("GET {expected}")), "{index}: {}", asked(index));
        }
    }
}
