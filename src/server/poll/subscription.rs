//! A subscription of several topics: one long poll, event stream or WebSocket that waits on up
//! to 64 topics at once, `GET /poll?topic=A&topic=B`, `GET /events?topic=A&topic=B`, or a
//! socket's `subscribe` messages (docs/long-polling.md, "Several topics in one subscription").
//!
//! A connection's state carries one `Wait`, whose size every connection's slab slot pays for, so
//! a subscription lives here, in the service, and the connection's wait only names it
//! (`HoldKey::many`). For each topic it keeps a `Watch`: its place on the topic's list of holds
//! and its cursor.
//!
//! Invariants:
//! - A subscription belongs to the one connection whose wait names it, from the request that
//!   made it until that wait ends (answered, its client gone, its stream ended); `end` then takes
//!   it off every list and frees it, once.
//! - Each of its topics is watched (`Topics::watch`) while it lives, so no topic id it names is
//!   forgotten or reused under it, also while a publish has taken it off that topic's list.
//! - A watch is listed on its topic only when the topic had nothing after its cursor, and a
//!   publish takes it off. So the subscription waits while every watch is listed, and one taken
//!   off makes it due: a poll is answered, a stream fed. Publishes on two of its topics in one
//!   turn queue its connection twice; the second turn in the flush phase finds nothing due.
//! - One answer, or one batch of a stream or a socket, carries what a poll's answer may
//!   (`AnswerRoom`) over all its topics together, in topic order, then seq.
//! - Only a socket's subscription changes its topics while it lives (`add`, `remove`); a topic
//!   appears in it at most once.

use std::fmt::Write;

use slab::Slab;

use super::subscription_query::{SubscriptionQuery, TopicStart, MAX_TOPICS_PER_SUBSCRIPTION};
use super::{push_event, topic_error};
use crate::connection::{deadline_after, EndSecond, Stream, Wait};
use crate::http::request::Request;
use crate::http::response::{Response, Status};
use crate::pubsub::{AnswerRoom, HoldKey, HoldOn, Message, Read, Topics};
use crate::server::service::Service;
use crate::timer::Tick;
use crate::ws;

/// One topic of a subscription: its place on the topic's list of holds (listed or not), and
/// the last seq the client has seen there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Watch {
    hold: HoldKey,
    after: u64,
}

impl Watch {
    fn topic(&self) -> u32 {
        match self.hold.on() {
            HoldOn::One(topic) => topic,
            HoldOn::Many(_) | HoldOn::Nowhere | HoldOn::Ack(_) => {
                unreachable!("a watch is made by `HoldKey::unlisted` or `Topics::hold`")
            }
        }
    }
}

#[derive(Debug)]
struct Subscription {
    /// The connection whose wait names it.
    holder: usize,
    watches: Box<[Watch]>,
    /// Bit i: the client named another epoch of watch i's topic, so its next read is a `reset`
    /// (its cursor meanwhile is the client's own, which the ids of earlier events repeat).
    resets_due: u64,
}

const _: () = assert!(MAX_TOPICS_PER_SUBSCRIPTION <= u64::BITS as usize, "a bit per topic in `resets_due`");

/// Bytes one slot of the subscriptions' table takes (slab's entry, mirrored: slab does not
/// export its type).
const SLOT_BYTES: usize = {
    #[allow(dead_code)]
    enum SlabEntry {
        Vacant(usize),
        Occupied(Subscription),
    }
    std::mem::size_of::<SlabEntry>()
};

/// Every subscription of several topics alive, numbered by their key in a slab.
#[derive(Debug, Default)]
pub(in crate::server) struct Subscriptions {
    live: Slab<Subscription>,
    /// Watches over all of them, so that `memory_bytes` need not walk them.
    watches: usize,
}

impl Subscriptions {
    /// Starts connection `holder`'s subscription where `start` says: each topic watched from now
    /// on, and listed on each now (a poll) or at its first feed (a stream). Returns its number,
    /// or `None` when numbers run out.
    fn start(&mut self, holder: usize, start: Start, listed: bool, topics: &mut Topics) -> Option<u32> {
        let Start { mut watches, resets_due } = start;
        let n = u32::try_from(self.live.vacant_key()).ok()?;
        for watch in watches.iter_mut() {
            topics.watch(watch.topic());
            if listed {
                watch.hold = topics.hold(watch.topic(), holder);
            }
        }
        self.watches += watches.len();
        self.live.insert(Subscription { holder, watches, resets_due });
        Some(n)
    }

    /// Starts socket `holder`'s subscription, of no topic yet.
    fn start_socket(&mut self, holder: usize) -> Option<u32> {
        let n = u32::try_from(self.live.vacant_key()).ok()?;
        self.live.insert(Subscription { holder, watches: Box::default(), resets_due: 0 });
        Some(n)
    }

    /// Adds `watch` to subscription `n` (watched from now on, listed at its first feed), in place
    /// of any watch of the same topic; `reset_due`: its first read is a `reset`. `false` if it
    /// already has `MAX_TOPICS_PER_SUBSCRIPTION` other topics.
    fn add(&mut self, n: u32, key: usize, watch: Watch, reset_due: bool, topics: &mut Topics, now: Tick) -> bool {
        self.remove(n, key, watch.topic(), topics, now);
        let Some(subscription) = self.live.get_mut(n as usize) else {
            return false;
        };
        if subscription.watches.len() == MAX_TOPICS_PER_SUBSCRIPTION {
            return false;
        }
        topics.watch(watch.topic());
        let mut watches = std::mem::take(&mut subscription.watches).into_vec();
        subscription.resets_due |= u64::from(reset_due) << watches.len();
        watches.push(watch);
        subscription.watches = watches.into_boxed_slice();
        self.watches += 1;
        true
    }

    /// Takes `topic` out of subscription `n`: off its list, unwatched. Whether it was in it.
    fn remove(&mut self, n: u32, key: usize, topic: u32, topics: &mut Topics, now: Tick) -> bool {
        let Some(subscription) = self.live.get_mut(n as usize) else {
            return false;
        };
        let Some(i) = subscription.watches.iter().position(|watch| watch.topic() == topic) else {
            return false;
        };
        let mut watches = std::mem::take(&mut subscription.watches).into_vec();
        let watch = watches.remove(i);
        topics.release(watch.hold, key, now);
        topics.unwatch(topic, now);
        // The bits of the watches after it move down with them.
        let below = (1u64 << i) - 1;
        subscription.resets_due = (subscription.resets_due & below) | ((subscription.resets_due >> 1) & !below);
        subscription.watches = watches.into_boxed_slice();
        self.watches -= 1;
        true
    }

    /// Whether subscription `n` of connection `key` still waits: listed on every topic.
    pub(in crate::server) fn waiting(&self, n: u32, key: usize, topics: &Topics) -> bool {
        self.live.get(n as usize).is_some_and(|s| s.watches.iter().all(|watch| topics.holds(watch.hold, key)))
    }

    /// Ends subscription `n` of connection `key`: off every list it is still on, its topics
    /// unwatched (their idle time may start `now`), freed. Returns its watches, with their
    /// cursors. O(topics).
    fn end(&mut self, n: u32, key: usize, topics: &mut Topics, now: Tick) -> Box<[Watch]> {
        let Some(subscription) = self.live.try_remove(n as usize) else {
            debug_assert!(false, "subscription {n} of {key} ended twice");
            return Box::default();
        };
        debug_assert_eq!(subscription.holder, key, "subscription {n} ended by another connection");
        for watch in subscription.watches.iter() {
            topics.release(watch.hold, key, now);
            topics.unwatch(watch.topic(), now);
        }
        self.watches -= subscription.watches.len();
        subscription.watches
    }

    /// Bytes the subscriptions keep: the table's slots and every watch. O(1).
    pub(in crate::server) fn memory_bytes(&self) -> usize {
        self.live.capacity() * SLOT_BYTES + self.watches * std::mem::size_of::<Watch>()
    }

    #[cfg(debug_assertions)]
    pub(in crate::server) fn len(&self) -> usize {
        self.live.len()
    }

    /// The connection subscription `n` belongs to, if it is alive.
    #[cfg(debug_assertions)]
    pub(in crate::server) fn holder(&self, n: u32) -> Option<usize> {
        self.live.get(n as usize).map(|s| s.holder)
    }

    /// Whether `hold` is one of subscription `n`'s places on a topic's list.
    #[cfg(debug_assertions)]
    pub(in crate::server) fn has(&self, n: u32, hold: HoldKey) -> bool {
        self.live.get(n as usize).is_some_and(|s| s.watches.iter().any(|watch| watch.hold == hold))
    }
}

impl Service {
    /// `GET /poll?topic=A&topic=B` on connection `key`: the answer in `self.body` when any of
    /// the topics has something to say, else what to wait for (listed on every topic here).
    pub(in crate::server) fn poll_many(
        &mut self,
        key: usize,
        req: &Request,
        now: Tick,
    ) -> Result<Option<Wait>, Response<'static>> {
        // The query first: a refused poll must not create its topics.
        let query = SubscriptionQuery::parse(req.query, req.last_event_id).map_err(bad_poll)?;
        let mut start = self.start(&query.topics, now)?;
        let news = gather(&self.topics, &mut start.watches, start.resets_due);
        if !matches!(news, News::Nothing) {
            self.costs.polls.answered += 1;
            write_answer(&mut self.body, &self.topics, &start.watches, &news);
            return Ok(None);
        }
        self.check_max_held()?;
        let n = self.subscriptions.start(key, start, true, &mut self.topics).ok_or_else(|| self.too_many_held())?;
        self.costs.polls.held += 1;
        let deadline = deadline_after(now, self.hold_time(query.timeout));
        Ok(Some(Wait { hold: HoldKey::many(n), after: 0, deadline }))
    }

    /// `GET /events?topic=A&topic=B` on connection `key`: what feeds the stream. Each topic
    /// starts where a poll's would; one whose epoch the client has wrong starts with a `reset`.
    /// Its first events are written by the machine's first feed.
    pub(in crate::server) fn open_stream_many(
        &mut self,
        key: usize,
        req: &Request,
        now: Tick,
    ) -> Result<Stream, Response<'static>> {
        let query = SubscriptionQuery::parse(req.query, req.last_event_id).map_err(bad_poll)?;
        if query.topics.iter().any(|topic| matches!(topic.name, "reset" | "missed" | "expired")) {
            // Each message's event is named after its topic: these would pass for our own.
            return Err(bad_poll(
                "bad poll: a stream of several topics cannot carry topics named reset, missed or expired\n",
            ));
        }
        self.check_max_held()?;
        let start = self.start(&query.topics, now)?;
        let n = self.subscriptions.start(key, start, false, &mut self.topics).ok_or_else(|| self.too_many_held())?;
        self.costs.streams_open += 1;
        let heartbeat = deadline_after(now, self.config.sse_heartbeat);
        Ok(Stream { wait: Wait { hold: HoldKey::many(n), after: 0, deadline: heartbeat }, ends: EndSecond::NEVER })
    }

    /// A subscription's start, not listed yet: each topic created if new, each cursor where the
    /// client said, and a reset due on each topic whose epoch the client has wrong.
    fn start(&mut self, topics: &[TopicStart], now: Tick) -> Result<Start, Response<'static>> {
        let mut resets_due = 0;
        let mut watches = Vec::with_capacity(topics.len());
        for (i, start) in topics.iter().enumerate() {
            let topic = self.topic(start.name, now).map_err(topic_error)?;
            if start.epoch.is_some_and(|epoch| epoch != self.topics.epoch(topic)) {
                resets_due |= 1 << i;
            }
            let after = self.topics.resolve(topic, start.start);
            watches.push(Watch { hold: HoldKey::unlisted(topic), after });
        }
        Ok(Start { watches: watches.into_boxed_slice(), resets_due })
    }

    /// A poll on several topics whose client left, or a stream of several that ends: off every
    /// list, and the subscription freed.
    pub(in crate::server) fn end_subscription(&mut self, key: usize, n: u32, now: Tick) {
        self.subscriptions.end(n, key, &mut self.topics, now);
    }

    /// The answer of a held poll on several topics that is due, in `self.body`: what its topics
    /// have after their cursors, or `timeout` when nothing. Ends the subscription.
    pub(in crate::server) fn held_answer_many(&mut self, key: usize, n: u32, now: Tick) {
        self.costs.polls.held -= 1;
        // Held only when its first read found nothing, so no reset is due any more.
        let mut watches = self.subscriptions.end(n, key, &mut self.topics, now);
        let news = gather(&self.topics, &mut watches, 0);
        if matches!(news, News::Nothing) {
            self.costs.polls.timed_out += 1;
        } else {
            self.costs.polls.answered += 1;
        }
        write_answer(&mut self.body, &self.topics, &watches, &news);
    }

    /// A stream or a socket of several topics: what follows its cursors, topic by topic in
    /// order, written for its `wire`: a `reset`, or `missed` and then each message. An event's
    /// `id:` is the cursor string after it, so that `Last-Event-ID` resumes every topic; a
    /// socket's frames name their topic and seq. Once no topic has anything new, the
    /// subscription is listed again where a publish took it off.
    pub(in crate::server) fn feed_subscription(
        &mut self,
        key: usize,
        n: u32,
        wire: Wire,
        out: &mut Vec<u8>,
        now: Tick,
    ) {
        let Some(subscription) = self.subscriptions.live.get_mut(n as usize) else {
            debug_assert!(false, "connection {key} names subscription {n}, which is gone");
            return;
        };
        let (watches, topics) = (&mut subscription.watches[..], &mut self.topics);
        let mut room = AnswerRoom::default();
        let mut news = false;
        let mut retired = Vec::new();
        let mut frame = String::new(); // a socket's frame is built here: its length goes first
        for i in 0..watches.len() {
            let (topic, after) = (watches[i].topic(), watches[i].after);
            let read = read_one(topics, &watches[i], subscription.resets_due & (1 << i) != 0, &mut room);
            subscription.resets_due &= !(1 << i);
            news |= read != Read::Nothing;
            // Topic names and epochs need no escaping (`valid_topic_name`, hex digits and `-`).
            let name = topics.name(topic);
            match read {
                Read::Nothing => {}
                Read::Reset { cursor } => {
                    watches[i].after = cursor;
                    if topics.is_retired(topic) {
                        retired.push(i);
                    }
                    let epoch = topics.epoch(topic);
                    match wire {
                        Wire::EventStream => {
                            let data = format!("{{\"topic\":\"{name}\",\"cursor\":{cursor},\"epoch\":\"{epoch}\"}}");
                            push_event(out, "reset", &cursor_string(topics, watches), &data);
                        }
                        Wire::WebSocket => {
                            frame.clear();
                            let _ = write!(frame, "{{\"topic\":\"{name}\",\"reset\":{cursor},\"epoch\":\"{epoch}\"}}");
                            ws::frame::write_text(out, &frame);
                        }
                    }
                }
                Read::Messages { messages, missed, cursor } => {
                    if missed > 0 {
                        watches[i].after = after + missed;
                        let data = format!("{{\"topic\":\"{name}\",\"missed\":{missed}}}");
                        match wire {
                            Wire::EventStream => push_event(out, "missed", &cursor_string(topics, watches), &data),
                            Wire::WebSocket => ws::frame::write_text(out, &data),
                        }
                    }
                    for message in &messages {
                        watches[i].after = message.seq;
                        match wire {
                            Wire::EventStream => {
                                out.extend_from_slice(b"event: ");
                                out.extend_from_slice(name.as_bytes());
                                out.extend_from_slice(b"\nid: ");
                                out.extend_from_slice(cursor_string(topics, watches).as_bytes());
                                out.push(b'\n');
                                out.extend_from_slice(message.lines.as_bytes());
                                out.push(b'\n');
                            }
                            Wire::WebSocket => {
                                frame.clear();
                                let _ = write!(frame, "{{\"topic\":\"{name}\",\"seq\":{},\"data\":", message.seq);
                                frame.push_str(&message.json);
                                frame.push('}');
                                ws::frame::write_text(out, &frame);
                            }
                        }
                    }
                    watches[i].after = cursor;
                }
            }
        }
        if !news {
            for watch in watches.iter_mut() {
                if !topics.holds(watch.hold, key) {
                    watch.hold = topics.hold(watch.topic(), key);
                }
            }
        }
        // A topic that began a new life: the subscription goes on with the new one.
        for i in retired {
            let old = self.subscriptions.live[n as usize].watches[i].topic();
            if let Some(fresh) = self.move_off_retired(old, now) {
                self.subscriptions.live[n as usize].watches[i].hold = HoldKey::unlisted(fresh);
            }
        }
    }

    /// A socket's subscription, of no topic yet, for connection `key`: `None` when numbers run out.
    pub(super) fn start_socket_subscription(&mut self, key: usize) -> Option<u32> {
        self.subscriptions.start_socket(key)
    }

    /// Socket `key` subscribes subscription `n` to `name` from `start`: created if new, a reset
    /// due if the client's epoch is not the topic's. The first feed reads and lists it.
    pub(super) fn subscribe(&mut self, key: usize, n: u32, start: TopicStart, now: Tick) -> Result<(), &'static str> {
        let topic = self.topic(start.name, now).map_err(|_| "too many topics")?;
        let reset_due = start.epoch.is_some_and(|epoch| epoch != self.topics.epoch(topic));
        let after = self.topics.resolve(topic, start.start);
        let watch = Watch { hold: HoldKey::unlisted(topic), after };
        if !self.subscriptions.add(n, key, watch, reset_due, &mut self.topics, now) {
            return Err("a socket subscribes to at most 64 topics");
        }
        Ok(())
    }

    /// Socket `key` unsubscribes subscription `n` from `name`; whether it was subscribed.
    pub(super) fn unsubscribe(&mut self, key: usize, n: u32, name: &str, now: Tick) -> bool {
        let Some(topic) = self.topics.find(name) else {
            return false;
        };
        self.subscriptions.remove(n, key, topic, &mut self.topics, now)
    }
}

/// How a subscription's news goes to its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::server) enum Wire {
    /// Events of a `text/event-stream`.
    EventStream,
    /// Text frames of a WebSocket, one JSON object each.
    WebSocket,
}

/// Where a subscription starts: a watch per topic, and the topics whose reset is due.
#[derive(Debug)]
struct Start {
    watches: Box<[Watch]>,
    resets_due: u64,
}

/// What a subscription's topics have after its cursors.
#[derive(Debug, PartialEq, Eq)]
enum News {
    Nothing,
    /// Some topic's cursor is not of its log (another epoch, or ahead of its newest message).
    /// Those cursors move to where their topics are; the other topics' news waits for the next
    /// answer, so a reset is never hidden among messages, and nothing is lost.
    Reset,
    /// Messages as `(watch, message)`, in topic order then seq, and the loss over all topics.
    Messages {
        messages: Vec<(usize, Message)>,
        missed: u64,
    },
}

/// What one topic has for a watch: a `reset` if one is due (the client's epoch is not the
/// topic's), else what follows its cursor, within `room`.
fn read_one(topics: &Topics, watch: &Watch, reset_due: bool, room: &mut AnswerRoom) -> Read {
    if reset_due {
        return Read::Reset { cursor: topics.last_seq(watch.topic()) };
    }
    topics.read_within(watch.topic(), watch.after, room)
}

/// Reads every topic after its watch's cursor, within one answer's room, and moves the cursors
/// past what the answer will carry. Bit i of `resets_due`: watch i is reset.
fn gather(topics: &Topics, watches: &mut [Watch], resets_due: u64) -> News {
    let mut room = AnswerRoom::default();
    let reads: Vec<Read> = (watches.iter().enumerate())
        .map(|(i, watch)| read_one(topics, watch, resets_due & (1 << i) != 0, &mut room))
        .collect();
    if reads.iter().any(|read| matches!(read, Read::Reset { .. })) {
        for (watch, read) in watches.iter_mut().zip(&reads) {
            if let Read::Reset { cursor } = read {
                watch.after = *cursor;
            }
        }
        return News::Reset;
    }
    let (mut messages, mut missed, mut news) = (Vec::new(), 0, false);
    for (i, (watch, read)) in watches.iter_mut().zip(reads).enumerate() {
        if let Read::Messages { messages: found, missed: lost, cursor } = read {
            news = true;
            missed += lost;
            watch.after = cursor;
            messages.extend(found.into_iter().map(|message| (i, message)));
        }
    }
    if news {
        News::Messages { messages, missed }
    } else {
        News::Nothing
    }
}

/// The JSON of an answer on several topics: `ok` with messages that each name their topic,
/// `reset`, or (for `News::Nothing`) `timeout`; the epochs and cursors as strings, in topic order.
fn write_answer(out: &mut String, topics: &Topics, watches: &[Watch], news: &News) {
    let (status, missed, messages): (&str, u64, &[(usize, Message)]) = match news {
        News::Messages { messages, missed } => ("ok", *missed, messages),
        News::Reset => ("reset", 0, &[]),
        News::Nothing => ("timeout", 0, &[]),
    };
    // Nothing is escaped here: names, epochs and numbers need none, and each message's literal
    // was escaped when it was published.
    let _ = write!(out, "{{\"status\":\"{status}\",\"epoch\":\"");
    for (i, watch) in watches.iter().enumerate() {
        let topic = watch.topic();
        let _ = write!(out, "{}{}:{}", if i == 0 { "" } else { "," }, topics.name(topic), topics.epoch(topic));
    }
    let _ = write!(out, "\",\"cursor\":\"{}\",\"missed\":{missed},\"messages\":[", cursor_string(topics, watches));
    for (i, (watch, message)) in messages.iter().enumerate() {
        let name = topics.name(watches[*watch].topic());
        let _ =
            write!(out, "{}{{\"topic\":\"{name}\",\"seq\":{},\"data\":", if i == 0 { "" } else { "," }, message.seq);
        out.push_str(&message.json);
        out.push('}');
    }
    out.push_str("]}\n");
}

/// `A:43,B:7`: each topic's cursor, in topic order.
fn cursor_string(topics: &Topics, watches: &[Watch]) -> String {
    let mut out = String::new();
    for (i, watch) in watches.iter().enumerate() {
        let _ = write!(out, "{}{}:{}", if i == 0 { "" } else { "," }, topics.name(watch.topic()), watch.after);
    }
    out
}

fn bad_poll(reason: &'static str) -> Response<'static> {
    Response::error(Status::BAD_REQUEST, reason.as_bytes())
}

#[cfg(test)]
#[path = "subscription_tests.rs"]
mod tests;
