//! Topics: a bounded ring of messages per topic, numbered from 1, and the long polls held on it.
//!
//! Invariants:
//! - Within one `epoch` (one server life) a topic's sequence numbers start at 1, increase by
//!   one per message and never repeat; the ring keeps the newest `capacity` of them.
//! - A cursor names the last message a client has seen. `read` never silently skips: messages
//!   that fell out of the ring between the cursor and the oldest retained one are counted in
//!   `missed`.
//! - A topic's held polls are connection keys in a slab; the connection keeps its `HoldKey`, so
//!   a client that hangs up is removed in O(1), and a publish drains the whole list at once.
//!
//! Nothing here touches sockets or connections: the server asks what to answer and who to wake.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::rc::Rc;

use slab::Slab;

use crate::json;

/// At most this many messages go into one answer; the client's next poll continues from there.
pub const MAX_MESSAGES_PER_ANSWER: usize = 100;
/// And at most this much message data (counted escaped, as sent), unless one message alone is
/// larger: an answer sits in its connection's output buffer until a slow reader takes it, so
/// its size must be bounded by more than the message count (100 messages of 64 KiB would be
/// 6.5 MB per connection).
pub const MAX_ANSWER_DATA_BYTES: usize = 64 * 1024;
/// Longest topic name.
pub const MAX_TOPIC_LEN: usize = 64;

/// One published message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub seq: u64,
    /// The data as a JSON string literal, quotes included: escaped once when published and
    /// shared by every answer that carries it, so fifty readers of a 64 KiB message cost fifty
    /// copies, not fifty escapes. (Server-Sent Events will need the raw text, cut into `data:`
    /// lines: that frame too should be built once at publish and shared beside this one, not
    /// unescaped from it per reader.)
    pub json: Rc<str>,
}

impl Message {
    /// The data's length as sent: escaped, without the quotes.
    pub fn data_bytes(&self) -> usize {
        self.json.len().saturating_sub(2)
    }
}

/// Where a held poll sits: its topic and its slot in that topic's list of holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldKey {
    pub topic: u32,
    slot: u32,
}

#[derive(Debug, Default)]
struct Topic {
    name: Rc<str>,
    ring: VecDeque<Message>,
    /// The sequence number of the newest message ever published (0: none yet).
    last_seq: u64,
    /// Connection keys of the polls held on this topic.
    held: Slab<usize>,
}

/// What a poll's cursor means against a topic's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// Messages newer than the cursor (at most `MAX_MESSAGES_PER_ANSWER` and, past the first,
    /// `MAX_ANSWER_DATA_BYTES` of data), and how many fell out
    /// of the ring before the first of them.
    Messages { messages: Vec<Message>, missed: u64 },
    /// Nothing newer than the cursor: hold the poll.
    Nothing,
    /// The cursor does not belong to this log (another epoch, or ahead of the newest message):
    /// the client starts over from `cursor`.
    Reset { cursor: u64 },
}

/// Where a poll starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor {
    /// After message N (from `?cursor=N` or `Last-Event-ID`).
    After(u64),
    /// The next message published from now on (no cursor given).
    Next,
    /// The oldest message retained (`?from=oldest`).
    Oldest,
}

/// Why a topic could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicError {
    /// Not 1 to 64 characters of `A-Z a-z 0-9 . _ -`.
    BadName,
    /// `--max-topics` topics exist already.
    TooMany,
}

/// All topics of this server life.
#[derive(Debug)]
pub struct Topics {
    epoch: String,
    capacity: usize,
    max_topics: usize,
    by_name: HashMap<Rc<str>, u32>,
    topics: Vec<Topic>,
    /// Messages retained across all rings.
    retained: u64,
}

impl Topics {
    pub fn new(capacity: usize, max_topics: usize) -> Self {
        Topics {
            epoch: new_epoch(),
            capacity: capacity.max(1),
            max_topics,
            by_name: HashMap::new(),
            topics: Vec::new(),
            retained: 0,
        }
    }

    /// This server life's name; a cursor from another epoch is reset.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    pub fn count(&self) -> usize {
        self.topics.len()
    }

    pub fn retained(&self) -> u64 {
        self.retained
    }

    /// The topic's id, creating the topic on first use (by a publish or a poll alike, so a
    /// poll can wait for the first message of a topic nobody has published to yet).
    pub fn get_or_create(&mut self, name: &str) -> Result<u32, TopicError> {
        if !valid_topic_name(name) {
            return Err(TopicError::BadName);
        }
        if let Some(&id) = self.by_name.get(name) {
            return Ok(id);
        }
        if self.topics.len() >= self.max_topics {
            return Err(TopicError::TooMany);
        }
        let id = u32::try_from(self.topics.len()).map_err(|_| TopicError::TooMany)?;
        let name: Rc<str> = Rc::from(name);
        self.by_name.insert(name.clone(), id);
        self.topics.push(Topic { name, ..Topic::default() });
        Ok(id)
    }

    pub fn name(&self, topic: u32) -> &str {
        &self.topics[topic as usize].name
    }

    /// The newest sequence number of a topic (0 before its first message).
    pub fn last_seq(&self, topic: u32) -> u64 {
        self.topics[topic as usize].last_seq
    }

    /// Appends a message and returns its sequence number. The caller then wakes the holds
    /// (`take_held`) in the same turn.
    pub fn publish(&mut self, topic: u32, data: &str) -> u64 {
        let capacity = self.capacity;
        let topic = &mut self.topics[topic as usize];
        topic.last_seq += 1;
        if topic.ring.len() == capacity {
            topic.ring.pop_front();
        } else {
            self.retained += 1;
        }
        let mut json = String::with_capacity(data.len() + 2);
        json::push_string(&mut json, data);
        topic.ring.push_back(Message { seq: topic.last_seq, json: Rc::from(json) });
        topic.last_seq
    }

    /// Resolves a poll's starting point to the sequence number it reads after.
    pub fn resolve(&self, topic: u32, cursor: Cursor) -> u64 {
        let topic = &self.topics[topic as usize];
        match cursor {
            Cursor::After(seq) => seq,
            Cursor::Next => topic.last_seq,
            Cursor::Oldest => topic.ring.front().map_or(topic.last_seq, |m| m.seq - 1),
        }
    }

    /// What a poll whose client has seen everything up to `after` gets now.
    pub fn read(&self, topic: u32, after: u64) -> Read {
        let topic = &self.topics[topic as usize];
        if after > topic.last_seq {
            return Read::Reset { cursor: topic.last_seq };
        }
        if after == topic.last_seq {
            return Read::Nothing;
        }
        let oldest = topic.ring.front().map_or(topic.last_seq + 1, |m| m.seq);
        let missed = oldest.saturating_sub(after + 1);
        // The ring is contiguous in seq, so the first message to send is found by arithmetic.
        let skip = usize::try_from((after + 1).saturating_sub(oldest)).unwrap_or(usize::MAX);
        let mut data_bytes = 0;
        let messages = topic
            .ring
            .iter()
            .skip(skip)
            .take(MAX_MESSAGES_PER_ANSWER)
            .enumerate()
            .take_while(|(i, message)| {
                data_bytes += message.data_bytes();
                *i == 0 || data_bytes <= MAX_ANSWER_DATA_BYTES
            })
            .map(|(_, message)| message.clone())
            .collect();
        Read::Messages { messages, missed }
    }

    /// Records a poll held on `topic` by connection `key`.
    pub fn hold(&mut self, topic: u32, key: usize) -> HoldKey {
        let slot = self.topics[topic as usize].held.insert(key);
        HoldKey { topic, slot: u32::try_from(slot).unwrap_or(u32::MAX) }
    }

    /// Forgets connection `key`'s held poll (timed out, or its client left). O(1). A hold that
    /// a publish already took is gone, and its slot may hold another connection by now, which
    /// is why the key is checked.
    pub fn release(&mut self, hold: HoldKey, key: usize) {
        let held = &mut self.topics[hold.topic as usize].held;
        if held.get(hold.slot as usize) == Some(&key) {
            held.remove(hold.slot as usize);
        }
    }

    /// Takes every poll held on `topic`: a publish answers them all.
    pub fn take_held(&mut self, topic: u32) -> Vec<usize> {
        self.topics[topic as usize].held.drain().collect()
    }

    /// Bytes the hold lists take (slab capacity x slot size): part of what a held poll costs.
    pub fn hold_list_bytes(&self) -> usize {
        #[allow(dead_code)]
        enum SlabEntry {
            Vacant(usize),
            Occupied(usize),
        }
        self.topics.iter().map(|t| t.held.capacity() * std::mem::size_of::<SlabEntry>()).sum()
    }

    pub fn held_on(&self, topic: u32) -> usize {
        self.topics[topic as usize].held.len()
    }
}

/// A topic name is 1 to 64 characters of `A-Z a-z 0-9 . _ -`.
pub fn valid_topic_name(name: &str) -> bool {
    (1..=MAX_TOPIC_LEN).contains(&name.len())
        && name.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// A random name for this server life: `RandomState` is seeded from the OS's randomness, so
/// hashing nothing with it yields 64 random-enough bits without another dependency.
fn new_epoch() -> String {
    let bits = RandomState::new().hash_one(std::process::id());
    format!("{:012x}", bits & 0xffff_ffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seqs(read: &Read) -> Vec<u64> {
        match read {
            Read::Messages { messages, .. } => messages.iter().map(|m| m.seq).collect(),
            _ => Vec::new(),
        }
    }

    #[test]
    fn topic_names() {
        for good in ["a", "news", "A-Z_0.9", &"x".repeat(64)] {
            assert!(valid_topic_name(good), "{good}");
        }
        for bad in ["", "a/b", "a b", "ü", "a%20", &"x".repeat(65)] {
            assert!(!valid_topic_name(bad), "{bad}");
        }
    }

    #[test]
    fn sequence_numbers_start_at_one_and_cursors_read_what_is_newer() {
        let mut topics = Topics::new(8, 10);
        let t = topics.get_or_create("news").unwrap();
        assert_eq!(topics.read(t, 0), Read::Nothing);
        assert_eq!(topics.publish(t, "a"), 1);
        assert_eq!(topics.publish(t, "b"), 2);
        assert_eq!(seqs(&topics.read(t, 0)), [1, 2]);
        assert_eq!(seqs(&topics.read(t, 1)), [2]);
        assert_eq!(topics.read(t, 2), Read::Nothing);
        assert_eq!(topics.read(t, 3), Read::Reset { cursor: 2 });
    }

    #[test]
    fn overflow_is_reported_as_missed() {
        let mut topics = Topics::new(3, 10);
        let t = topics.get_or_create("t").unwrap();
        for i in 1..=10 {
            topics.publish(t, &i.to_string());
        }
        assert_eq!(topics.retained(), 3);
        match topics.read(t, 2) {
            Read::Messages { messages, missed } => {
                assert_eq!(missed, 5, "seqs 3..=7 fell out of the ring");
                assert_eq!(messages.iter().map(|m| m.seq).collect::<Vec<_>>(), [8, 9, 10]);
                assert_eq!(&*messages[0].json, "\"8\"");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(topics.resolve(t, Cursor::Oldest), 7);
        assert_eq!(topics.resolve(t, Cursor::Next), 10);
        assert_eq!(topics.resolve(t, Cursor::After(4)), 4);
    }

    #[test]
    fn answers_are_paged() {
        let mut topics = Topics::new(1000, 10);
        let t = topics.get_or_create("t").unwrap();
        for _ in 0..250 {
            topics.publish(t, "x");
        }
        assert_eq!(seqs(&topics.read(t, 0)), (1..=100).collect::<Vec<_>>());
        assert_eq!(seqs(&topics.read(t, 200)), (201..=250).collect::<Vec<_>>());
    }

    #[test]
    fn answers_are_bounded_in_bytes_but_always_carry_one_message() {
        let mut topics = Topics::new(1000, 10);
        let t = topics.get_or_create("t").unwrap();
        let big = "b".repeat(20 * 1024);
        for _ in 0..10 {
            topics.publish(t, &big);
        }
        topics.publish(t, &"h".repeat(MAX_ANSWER_DATA_BYTES + 1));
        assert_eq!(seqs(&topics.read(t, 0)), [1, 2, 3], "60 KiB fit, 80 KiB would not");
        assert_eq!(seqs(&topics.read(t, 9)), [10], "the next one would pass the bound");
        assert_eq!(seqs(&topics.read(t, 10)), [11], "one message over the bound still goes out");
    }

    #[test]
    fn holds_are_released_in_o1_and_taken_by_a_publish() {
        let mut topics = Topics::new(8, 10);
        let t = topics.get_or_create("t").unwrap();
        let a = topics.hold(t, 10);
        let _b = topics.hold(t, 11);
        topics.release(a, 10);
        assert_eq!(topics.held_on(t), 1);
        let c = topics.hold(t, 12); // reuses a's slot
        assert_eq!(c, a);
        topics.release(a, 10); // a stale release does not remove connection 12's hold
        assert_eq!(topics.held_on(t), 2);
        assert!(topics.hold_list_bytes() >= 2 * 16);
        let mut woken = topics.take_held(t);
        woken.sort();
        assert_eq!(woken, [11, 12]);
        assert_eq!(topics.held_on(t), 0);
    }

    #[test]
    fn topic_limits() {
        let mut topics = Topics::new(8, 2);
        assert_eq!(topics.get_or_create("a/b"), Err(TopicError::BadName));
        let a = topics.get_or_create("a").unwrap();
        assert_eq!(topics.get_or_create("a"), Ok(a));
        topics.get_or_create("b").unwrap();
        assert_eq!(topics.get_or_create("c"), Err(TopicError::TooMany));
        assert_eq!(topics.count(), 2);
        assert_eq!(topics.name(a), "a");
        assert_ne!(Topics::new(1, 1).epoch(), topics.epoch());
    }
}
