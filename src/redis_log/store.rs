//! The command connection: the two scripts, publishes written as pipelines (several in flight),
//! and a sync's reads; plus the pure functions that turn Redis's replies into acks and topic
//! logs.
//!
//! Invariants:
//! - Every call into Redis has a deadline: the connection is made within `CONNECT_TIMEOUT`, and
//!   every read and write of a reply within `REPLY_TIMEOUT`, so a Redis that died without a
//!   word stalls the command thread for at most that long. Any I/O error leaves the
//!   connection unusable (a reply may be half read); the caller drops it.
//! - A pipeline holds one `EVALSHA publish.lua` per topic, with that topic's publishes of the
//!   batch in the order they were made, and a candidate epoch made fresh for that call.
//! - Replies are read in the order the pipelines were written (Redis answers one connection in
//!   order); a sync, which waits for its own replies, is made only with nothing in flight.
//! - A script Redis answers `NOSCRIPT` for (its script cache was flushed) did not run: it is
//!   loaded again and those calls, only those, run once more.
//! - Nothing Redis returns is trusted: a reply that is not what the scripts return refuses that
//!   publish or skips that topic, with a warning; it never panics.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use log::warn;
use redis::{Cmd, ConnectionInfo, Pipeline, RedisResult, Value};

use super::notice::{parse_seq, read_mark, valid_epoch, KeySpace};
use super::TopicLog;
use crate::backoff::XorShift;

/// A TCP connect and the handshake must be done within this.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Each read or write of a command or its reply must be done within this.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(2);
/// Topics read in one pipeline during a sync (each brings up to `capacity` messages).
const READ_BATCH: usize = 64;
/// Keys SCAN is asked to look at per call.
const SCAN_COUNT: usize = 1000;

const PUBLISH_LUA: &str = include_str!("publish.lua");
const READ_LUA: &str = include_str!("read.lua");

/// One queued publish.
#[derive(Debug)]
pub struct Publish {
    pub ticket: u64,
    pub topic: Arc<str>,
    pub data: Arc<str>,
}

/// What happened to one publish of a batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Acked { epoch: Arc<str>, seq: u64 },
    Refused,
}

/// What one sync found.
#[derive(Debug)]
pub struct Snapshot {
    /// The id its read marks carry.
    pub sync: String,
    /// Every topic SCAN found, with its log, or `None` if it was gone when read.
    pub reads: Vec<(Arc<str>, Option<TopicLog>)>,
}

/// What the scripts need besides the data: where, and the two bounds.
#[derive(Debug, Clone)]
pub struct Layout {
    pub keys: KeySpace,
    pub capacity: usize,
    pub idle_ms: u64,
}

/// A connection to Redis with both scripts loaded.
pub struct Store {
    connection: redis::Connection,
    publish_sha: String,
    read_sha: String,
    /// Candidate epochs and sync ids.
    random: XorShift,
    /// Pipelines of publishes written and not answered yet, oldest first: Redis answers them
    /// in that order.
    in_flight: VecDeque<InFlight>,
}

/// One pipeline of publishes written to Redis: a call per topic.
struct InFlight {
    calls: Vec<Vec<Publish>>,
    /// Whether a `SCRIPT LOAD` comes first (and its reply before theirs).
    reloads: bool,
}

impl Store {
    /// Connects, sets the deadlines and loads the scripts.
    pub fn connect(info: &ConnectionInfo, seed: u64) -> RedisResult<Store> {
        let connection = redis::Client::open(info.clone())?.get_connection_with_timeout(CONNECT_TIMEOUT)?;
        connection.set_read_timeout(Some(REPLY_TIMEOUT))?;
        connection.set_write_timeout(Some(REPLY_TIMEOUT))?;
        let mut store = Store {
            connection,
            publish_sha: String::new(),
            read_sha: String::new(),
            random: XorShift::new(seed),
            in_flight: VecDeque::new(),
        };
        store.load_scripts()?;
        Ok(store)
    }

    fn load_scripts(&mut self) -> RedisResult<()> {
        self.publish_sha = redis::cmd("SCRIPT").arg("LOAD").arg(PUBLISH_LUA).query(&mut self.connection)?;
        self.read_sha = redis::cmd("SCRIPT").arg("LOAD").arg(READ_LUA).query(&mut self.connection)?;
        Ok(())
    }

    /// How many pipelines of publishes were written and are not answered yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Writes a batch of publishes as one pipeline and returns without waiting: its outcomes
    /// are read by `receive`, pipelines in the order they were written. An `Err` is the
    /// connection's: then the outcome of every publish in flight is unknown (`abandon`).
    pub fn send(&mut self, batch: Vec<Publish>, layout: &Layout) -> RedisResult<()> {
        self.send_pipeline(InFlight { calls: by_topic(batch), reloads: false }, layout)
    }

    /// The pipeline is counted in flight before it is written, so that a failed write leaves
    /// it to `abandon`.
    fn send_pipeline(&mut self, sent: InFlight, layout: &Layout) -> RedisResult<()> {
        let news = layout.keys.news();
        let mut pipeline = Pipeline::with_capacity(sent.calls.len() + 1);
        if sent.reloads {
            pipeline.cmd("SCRIPT").arg("LOAD").arg(PUBLISH_LUA);
        }
        for call in &sent.calls {
            let topic = &call[0].topic;
            let script = pipeline
                .cmd("EVALSHA")
                .arg(self.publish_sha.as_str())
                .arg(2)
                .arg(layout.keys.meta(topic))
                .arg(layout.keys.log(topic))
                .arg(format!("{:016x}", self.random.next_u64()))
                .arg(layout.capacity)
                .arg(layout.idle_ms)
                .arg(&news)
                .arg(&**topic);
            for publish in call {
                script.arg(&*publish.data);
            }
        }
        let packed = pipeline.get_packed_pipeline();
        self.in_flight.push_back(sent);
        self.connection.send_packed_command(&packed)
    }

    /// Reads the replies to the oldest pipeline in flight and puts each publish's outcome in
    /// `settled`, call by call (a topic's publishes in the order they were made). Calls answered `NOSCRIPT` (the script cache was
    /// flushed) did not run: they are written again behind a `SCRIPT LOAD`, and settled when
    /// that pipeline is read (refused if it is `NOSCRIPT` again). An `Err` is the connection's;
    /// what was settled before it stays settled.
    pub fn receive(&mut self, layout: &Layout, settled: &mut Vec<(Publish, Outcome)>) -> RedisResult<()> {
        let Some(oldest) = self.in_flight.front() else { return Ok(()) };
        let mut replies = Vec::with_capacity(oldest.calls.len() + 1);
        for _ in 0..oldest.calls.len() + usize::from(oldest.reloads) {
            replies.push(self.connection.recv_response()?);
        }
        let InFlight { calls, reloads } = self.in_flight.pop_front().expect("looked at above");
        let mut replies = replies.into_iter();
        if reloads {
            if let Some(Value::ServerError(error)) = replies.next() {
                warn!("redis: the publish script cannot be loaded: {error:?}");
            }
        }
        let mut again = Vec::new();
        for (call, reply) in calls.into_iter().zip(replies) {
            if is_noscript(&reply) && !reloads {
                again.push(call);
                continue;
            }
            let outcome = ack(reply, &call[0].topic);
            for (publish, offset) in call.into_iter().zip(0..) {
                let outcome = match &outcome {
                    Outcome::Acked { epoch, seq } => Outcome::Acked { epoch: epoch.clone(), seq: seq + offset },
                    Outcome::Refused => Outcome::Refused,
                };
                settled.push((publish, outcome));
            }
        }
        if again.is_empty() {
            return Ok(());
        }
        warn!("redis: scripts were flushed; loading them again");
        self.send_pipeline(InFlight { calls: again, reloads: true }, layout)
    }

    /// Every publish in flight, whose outcome is unknown now that the connection failed.
    pub fn abandon(&mut self) -> Vec<Publish> {
        self.in_flight.drain(..).flat_map(|sent| sent.calls).flatten().collect()
    }

    /// Reads every topic under the prefix, each with its read mark (sync id fresh per call).
    /// Nothing may be in flight: the sync reads its replies as they come.
    pub fn sync(&mut self, layout: &Layout) -> RedisResult<Snapshot> {
        debug_assert!(self.in_flight.is_empty(), "a sync behind publishes in flight");
        let sync = format!("{:016x}", self.random.next_u64());
        let mut topics = BTreeSet::new();
        let mut cursor = 0u64;
        loop {
            // SCAN returns every key that exists from the first call to the last, maybe twice
            // (hence the set), and ends when the cursor comes back to 0.
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(layout.keys.meta_pattern())
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .query(&mut self.connection)?;
            let names = keys
                .iter()
                .filter_map(|key| std::str::from_utf8(key).ok())
                .filter_map(|key| layout.keys.topic_of_meta(key));
            topics.extend(names.map(Arc::<str>::from));
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let topics: Vec<Arc<str>> = topics.into_iter().collect();
        let news = layout.keys.news();
        let mut reads = Vec::with_capacity(topics.len());
        for chunk in topics.chunks(READ_BATCH) {
            let replies = self.eval_read(chunk.len(), |i, call| {
                let topic = &chunk[i];
                call.arg(2)
                    .arg(layout.keys.meta(topic))
                    .arg(layout.keys.log(topic))
                    .arg(&news)
                    .arg(read_mark(&sync, topic));
            })?;
            for (topic, reply) in chunk.iter().zip(replies) {
                match topic_log(topic, reply, layout.capacity) {
                    Ok(log) => reads.push((topic.clone(), log)),
                    Err(why) => warn!("redis: topic {topic} skipped: {why}"),
                }
            }
        }
        Ok(Snapshot { sync, reads })
    }

    /// Runs `calls` calls of read.lua in one pipeline and waits for their replies, `args(i,
    /// call)` adding the arguments of call `i` after the sha. Calls answered NOSCRIPT run again
    /// once, after a reload.
    fn eval_read(&mut self, calls: usize, mut args: impl FnMut(usize, &mut Cmd)) -> RedisResult<Vec<Value>> {
        let mut replies = self.eval_some(&(0..calls).collect::<Vec<_>>(), &mut args)?;
        let missing: Vec<usize> = (0..calls).filter(|&i| is_noscript(&replies[i])).collect();
        if !missing.is_empty() {
            warn!("redis: scripts were flushed; loading them again");
            self.load_scripts()?;
            for (i, reply) in missing.iter().zip(self.eval_some(&missing, &mut args)?) {
                replies[*i] = reply;
            }
        }
        Ok(replies)
    }

    /// One pipeline of the calls numbered `which`; one reply per call, errors included.
    fn eval_some(&mut self, which: &[usize], args: &mut impl FnMut(usize, &mut Cmd)) -> RedisResult<Vec<Value>> {
        let sha = &self.read_sha;
        let mut pipeline = Pipeline::with_capacity(which.len());
        pipeline.ignore_errors();
        for &i in which {
            let mut call = redis::cmd("EVALSHA");
            call.arg(sha.as_str());
            args(i, &mut call);
            pipeline.add_command(call);
        }
        let replies: Vec<Value> = pipeline.query(&mut self.connection)?;
        if replies.len() != which.len() {
            return Err(redis::RedisError::from(std::io::Error::other(format!(
                "{} replies to {} calls",
                replies.len(),
                which.len()
            ))));
        }
        Ok(replies)
    }
}

fn is_noscript(reply: &Value) -> bool {
    matches!(reply, Value::ServerError(error) if error.code() == "NOSCRIPT")
}

/// A batch as calls of publish.lua: one per topic, in the order of each topic's first publish,
/// each with that topic's publishes in the order they were made.
fn by_topic(batch: Vec<Publish>) -> Vec<Vec<Publish>> {
    let mut calls: Vec<Vec<Publish>> = Vec::new();
    let mut call_of: HashMap<Arc<str>, usize> = HashMap::new();
    for publish in batch {
        match call_of.get(&publish.topic) {
            Some(&call) => calls[call].push(publish),
            None => {
                call_of.insert(publish.topic.clone(), calls.len());
                calls.push(vec![publish]);
            }
        }
    }
    calls
}

/// publish.lua's `{epoch, seq}` (the seq of the call's first message), or a refusal (an error reply, or anything else).
pub fn ack(reply: Value, topic: &str) -> Outcome {
    if let Value::Array(fields) = &reply {
        if let [Value::BulkString(epoch), Value::Int(seq)] = fields.as_slice() {
            let epoch = std::str::from_utf8(epoch).ok().filter(|epoch| valid_epoch(epoch));
            if let (Some(epoch), Ok(seq @ 1..)) = (epoch, u64::try_from(*seq)) {
                return Outcome::Acked { epoch: Arc::from(epoch), seq };
            }
        }
    }
    warn!("redis: publish to {topic} refused: {reply:?}");
    Outcome::Refused
}

/// read.lua's reply: `Ok(None)` for a topic that is gone, the log (at most the newest
/// `capacity` messages, contiguous, ending at the last seq) otherwise.
pub fn topic_log(topic: &Arc<str>, reply: Value, capacity: usize) -> Result<Option<TopicLog>, String> {
    let fields = match reply {
        Value::Nil => return Ok(None),
        Value::Array(fields) => fields,
        other => return Err(format!("unexpected reply {other:?}")),
    };
    let [Value::BulkString(epoch), Value::BulkString(seq), Value::Array(entries)] = fields.as_slice() else {
        return Err("the reply is not {epoch, seq, entries}".into());
    };
    let epoch = std::str::from_utf8(epoch).ok().filter(|epoch| valid_epoch(epoch)).ok_or("an invalid epoch")?;
    let last_seq = std::str::from_utf8(seq).ok().and_then(parse_seq).ok_or("an invalid seq")?;
    let entries = entries.iter().filter_map(stream_entry).collect();
    Ok(Some(TopicLog {
        name: topic.clone(),
        epoch: Arc::from(epoch),
        last_seq,
        messages: retained(entries, last_seq, capacity),
    }))
}

/// One XRANGE entry `[ "SEQ-0", ["d", DATA] ]` as `(seq, data)`, if it is one of ours.
fn stream_entry(entry: &Value) -> Option<(u64, Arc<str>)> {
    let Value::Array(parts) = entry else { return None };
    let [Value::BulkString(id), Value::Array(fields)] = parts.as_slice() else { return None };
    let seq = std::str::from_utf8(id).ok()?.strip_suffix("-0").and_then(parse_seq)?;
    let [Value::BulkString(name), Value::BulkString(data)] = fields.as_slice() else { return None };
    if name != b"d" {
        return None;
    }
    Some((seq, Arc::from(std::str::from_utf8(data).ok()?)))
}

/// The newest run of `entries` (oldest first) that is contiguous, ends at `last_seq` and holds
/// at most `capacity`. Anything else (a hole, an entry that could not be read, a log behind its
/// seq) leaves older messages out rather than report a hole as contiguous.
pub fn retained(entries: Vec<(u64, Arc<str>)>, last_seq: u64, capacity: usize) -> Vec<(u64, Arc<str>)> {
    let mut expected = last_seq;
    let mut tail: Vec<(u64, Arc<str>)> = Vec::new();
    for (seq, data) in entries.into_iter().rev() {
        if seq > last_seq {
            continue;
        }
        if seq != expected || tail.len() == capacity || expected == 0 {
            break;
        }
        tail.push((seq, data));
        expected -= 1;
    }
    tail.reverse();
    tail
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    fn entry(id: &str, data: &str) -> Value {
        Value::Array(vec![bulk(id), Value::Array(vec![bulk("d"), bulk(data)])])
    }

    fn messages(seqs: &[u64]) -> Vec<(u64, Arc<str>)> {
        seqs.iter().map(|&seq| (seq, Arc::from(format!("m{seq}")))).collect()
    }

    #[test]
    fn a_batch_is_one_call_per_topic_in_publish_order() {
        let publish = |ticket, topic: &str| Publish { ticket, topic: Arc::from(topic), data: Arc::from("x") };
        let batch = vec![publish(1, "a"), publish(2, "b"), publish(3, "a"), publish(4, "c"), publish(5, "b")];
        let calls: Vec<Vec<u64>> =
            by_topic(batch).iter().map(|call| call.iter().map(|publish| publish.ticket).collect()).collect();
        assert_eq!(calls, [vec![1, 3], vec![2, 5], vec![4]]);
    }

    #[test]
    fn acks_are_epoch_and_seq_and_anything_else_is_refused() {
        let acked = |epoch: &str, seq| Outcome::Acked { epoch: Arc::from(epoch), seq };
        let cases = [
            (Value::Array(vec![bulk("00ab-1"), Value::Int(7)]), acked("00ab-1", 7)),
            (Value::Array(vec![bulk("00ab"), Value::Int(0)]), Outcome::Refused),
            (Value::Array(vec![bulk("00ab"), Value::Int(-3)]), Outcome::Refused),
            (Value::Array(vec![bulk("not hex"), Value::Int(1)]), Outcome::Refused),
            (Value::Array(vec![bulk("00ab")]), Outcome::Refused),
            (Value::Nil, Outcome::Refused),
            (Value::Okay, Outcome::Refused),
        ];
        for (reply, expected) in cases {
            assert_eq!(ack(reply.clone(), "t"), expected, "{reply:?}");
        }
    }

    #[test]
    fn a_read_is_a_topic_log_or_gone_or_refused() {
        let topic: Arc<str> = Arc::from("t");
        let reply = Value::Array(vec![bulk("e1"), bulk("3"), Value::Array(vec![entry("2-0", "b"), entry("3-0", "c")])]);
        let log = topic_log(&topic, reply, 10).expect("valid").expect("present");
        assert_eq!((&*log.name, &*log.epoch, log.last_seq), ("t", "e1", 3));
        assert_eq!(log.messages, vec![(2, Arc::from("b")), (3, Arc::from("c"))]);

        assert_eq!(topic_log(&topic, Value::Nil, 10), Ok(None));
        let empty = Value::Array(vec![bulk("e1"), bulk("9"), Value::Array(vec![])]);
        assert_eq!(topic_log(&topic, empty, 10).expect("valid").expect("present").messages, vec![]);
        for bad in [
            Value::Okay,
            Value::Array(vec![bulk("e1")]),
            Value::Array(vec![bulk("E!"), bulk("1"), Value::Array(vec![])]),
            Value::Array(vec![bulk("e1"), bulk("x"), Value::Array(vec![])]),
            Value::Array(vec![bulk("e1"), bulk("1"), bulk("not entries")]),
        ] {
            assert!(topic_log(&topic, bad.clone(), 10).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn entries_not_ours_are_left_out() {
        let cases = [
            (entry("4-0", "x"), Some(4)),
            (entry("4-1", "x"), None),
            (entry("0-0", "x"), None),
            (Value::Array(vec![bulk("4-0"), Value::Array(vec![bulk("e"), bulk("x")])]), None),
            (Value::Array(vec![bulk("4-0"), Value::Array(vec![bulk("d"), Value::BulkString(vec![0xff])])]), None),
            (bulk("4-0"), None),
        ];
        for (value, seq) in cases {
            assert_eq!(stream_entry(&value).map(|(seq, _)| seq), seq, "{value:?}");
        }
    }

    #[test]
    fn the_retained_run_is_the_newest_contiguous_one_within_capacity() {
        let cases: &[(&[u64], u64, usize, &[u64])] = &[
            (&[1, 2, 3], 3, 10, &[1, 2, 3]),
            (&[1, 2, 3, 4, 5], 5, 2, &[4, 5]),
            (&[3, 4, 6, 7], 7, 10, &[6, 7]),
            (&[1, 2, 3], 4, 10, &[]),
            (&[1, 2, 3, 4], 3, 10, &[1, 2, 3]),
            (&[], 5, 10, &[]),
            (&[1], 1, 1, &[1]),
        ];
        for (seqs, last_seq, capacity, expected) in cases {
            let got: Vec<u64> =
                retained(messages(seqs), *last_seq, *capacity).into_iter().map(|(seq, _)| seq).collect();
            assert_eq!(&got, expected, "{seqs:?} last {last_seq} cap {capacity}");
        }
    }
}
