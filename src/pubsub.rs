//! Topics: a bounded ring of messages per topic, numbered from 1, the long polls held on it, and
//! the two bounds on all topics together: the bytes they retain and how long they stay idle.
//!
//! Invariants:
//! - A topic's `epoch` is made when the topic is created and names that life of it: within it,
//!   sequence numbers start at 1, increase by one per message and never repeat. A topic that is
//!   forgotten and created again gets a new epoch, so an old cursor is reset, never misread.
//! - A ring keeps at most `capacity` messages, the newest, contiguous in seq.
//! - `retained_bytes` is the sum of every ring's `ring_bytes`, which counts each message as
//!   stored (its JSON literal plus `MESSAGE_OVERHEAD_BYTES`). After a publish it is at most
//!   `max_retained_bytes`, unless the message just published alone is larger.
//! - A cursor names the last message a client has seen. `read` never silently skips: messages
//!   that left the ring between the cursor and the oldest retained one (pushed out by newer
//!   ones, or evicted for the byte bound) are counted in `missed`.
//! - `by_size` holds `(ring_bytes, id)` of every non-empty ring and `by_idle` holds
//!   `(last_active, id)` of every *quiet* topic (no held poll, no watcher); each is updated in
//!   the same step as what it indexes, so the largest ring and the longest idle topic are found
//!   in O(log topics), and no publish or sweep scans all topics.
//! - A topic with a held poll or a watcher (an open event stream, a subscription of several
//!   topics) is never forgotten, so the topic id in a live `HoldKey` stays valid (a watcher is
//!   counted on its topic while it lives, also while a publish has taken it off the list); a
//!   forgotten topic's id may be reused. No topic id is `MANY` or `NOWHERE`, the marks of a subscription's key and of
//!   a key on no list.
//! - A topic's held polls are connection keys in a slab; the connection keeps its `HoldKey`, so
//!   a client that hangs up is removed in O(1), and a publish drains the whole list at once.
//!
//! Nothing here touches sockets or connections or reads a clock: the server passes `now` where
//! time matters, asks what to answer and who to wake, and calls `forget_idle` from its sweep.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::Arc;

use slab::Slab;

use crate::config::Config;
use crate::json;
use crate::timer::Tick;

/// At most this many messages go into one answer; the client's next poll continues from there.
pub const MAX_MESSAGES_PER_ANSWER: usize = 100;
/// And at most this much message data (counted escaped, as sent), unless one message alone is
/// larger: an answer sits in its connection's output buffer until a slow reader takes it, so
/// its size must be bounded by more than the message count (100 messages of 64 KiB would be
/// 6.5 MB per connection).
pub const MAX_ANSWER_DATA_BYTES: usize = 64 * 1024;
/// Longest topic name.
pub const MAX_TOPIC_LEN: usize = 64;
/// Bytes one place on a topic's hold list takes: slab stores `enum Entry { Vacant(usize),
/// Occupied(T) }`, which this private mirror reproduces, since slab does not export its type.
pub const HOLD_SLOT_BYTES: usize = {
    #[allow(dead_code)]
    enum SlabEntry {
        Vacant(usize),
        Occupied(usize),
    }
    std::mem::size_of::<SlabEntry>()
};
/// What a retained message costs beyond its two forms: its ring slot (`seq` and the shared
/// pointers) and each shared allocation's two reference counts. Counted in `retained_bytes`, so
/// that a flood of empty messages is bounded too, not only large ones.
pub const MESSAGE_OVERHEAD_BYTES: usize = std::mem::size_of::<Message>() + 4 * std::mem::size_of::<usize>();

/// One published message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub seq: u64,
    /// The data as a JSON string literal, quotes included: escaped once when published and
    /// shared by every answer that carries it, so fifty readers of a 64 KiB message cost fifty
    /// copies, not fifty escapes (and several workers' copies of a topic share it too).
    pub json: Arc<str>,
    /// The data as an event stream's `data:` lines, one per line of the text, each ended by a
    /// newline: cut once when published and shared by every stream, for the same reason.
    pub lines: Arc<str>,
}

impl Message {
    /// Message `seq` of `data`, in both the forms it is sent in.
    pub fn new(seq: u64, data: &str) -> Message {
        let mut json = String::with_capacity(data.len() + 2);
        json::push_string(&mut json, data);
        Message { seq, json: Arc::from(json), lines: Arc::from(data_lines(data)) }
    }

    /// The data's length as sent: escaped, without the quotes.
    pub fn data_bytes(&self) -> usize {
        self.json.len().saturating_sub(2)
    }

    /// What the message counts against `--max-retained-bytes`: both of its forms.
    fn stored_bytes(&self) -> usize {
        self.json.len() + self.lines.len() + MESSAGE_OVERHEAD_BYTES
    }
}

/// The text as `data:` lines of an event stream: a line ends at CR, LF or CRLF (the event-stream
/// grammar), so each line of the text becomes one `data:` field and the browser joins them with
/// `\n` again. An empty text is one empty `data:` line, which still makes an event.
pub fn data_lines(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for line in text.split("\r\n").flat_map(|part| part.split(['\r', '\n'])) {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// What a connection waits on: its slot in one topic's list of holds, a subscription of several
/// topics, whose holds on each topic the service keeps (`HoldKey::many`), or nothing at all
/// (`HoldKey::NOWHERE`: a stream fed by something else than topics). Eight bytes whichever,
/// since every connection's state carries one; `on` says which it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldKey {
    /// The topic, or `MANY`: then `slot` numbers the subscription, or `NOWHERE`.
    topic: u32,
    slot: u32,
}

/// What a `HoldKey` names: a place on one topic's list (listed or not), or subscription number
/// N of several topics, which the service keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldOn {
    One(u32),
    Many(u32),
    Nowhere,
    /// A publish waiting for the backplane to acknowledge it: number N of the service's.
    Ack(u32),
}

/// The topic ids a subscription's key, the key of nowhere and a waiting publish's key carry
/// instead of a topic: no topic ever has them (`create` stops below all three).
const MANY: u32 = u32::MAX;
const NOWHERE: u32 = u32::MAX - 1;
const ACK: u32 = u32::MAX - 2;

impl HoldKey {
    /// On no topic's list, ever: what a stream of the cost view waits on.
    pub const NOWHERE: HoldKey = HoldKey { topic: NOWHERE, slot: u32::MAX };

    /// A place on `topic`'s list that holds nobody: an event stream before it is first listed.
    pub fn unlisted(topic: u32) -> HoldKey {
        HoldKey { topic, slot: u32::MAX }
    }

    /// Subscription number `n` of several topics: the connection waits on all of its holds.
    pub fn many(n: u32) -> HoldKey {
        HoldKey { topic: MANY, slot: n }
    }

    /// Publish number `n` waiting for its acknowledgment (`--redis`).
    pub fn ack(n: u32) -> HoldKey {
        HoldKey { topic: ACK, slot: n }
    }

    pub fn on(self) -> HoldOn {
        match self.topic {
            MANY => HoldOn::Many(self.slot),
            NOWHERE => HoldOn::Nowhere,
            ACK => HoldOn::Ack(self.slot),
            topic => HoldOn::One(topic),
        }
    }
}

#[derive(Debug)]
struct Topic {
    name: Arc<str>,
    /// This life of the topic (see `Topics::new_epoch`).
    epoch: Arc<str>,
    ring: VecDeque<Message>,
    /// What the ring's messages count against `--max-retained-bytes`.
    ring_bytes: usize,
    /// The sequence number of the newest message ever published (0: none yet).
    last_seq: u64,
    /// Connection keys of the polls held on this topic (and of the event streams that have
    /// sent everything so far).
    held: Slab<usize>,
    /// What names this topic by id while it may be off the list: event streams, and
    /// subscriptions of several topics (a publish on another of their topics, or on this one,
    /// takes them off; they are answered or fed from this topic all the same).
    watchers: u32,
    /// When the topic was last published to or its last held poll or watcher left (at first,
    /// when it was created): the start of its idle time.
    last_active: Tick,
    /// Set when the log this topic copies began a new life (`retire`): every read is a `reset`
    /// to this cursor of the new epoch, which a new topic of the same name now serves.
    retired: Option<u64>,
}

impl Topic {
    /// Nobody waits on it: its idle time runs.
    fn is_quiet(&self) -> bool {
        self.held.is_empty() && self.watchers == 0
    }
}

/// What a poll's cursor means against a topic's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// Messages newer than the cursor (what the answer has room for: `AnswerRoom`), how many
    /// left the ring before the first of them, and the cursor past both.
    Messages { messages: Vec<Message>, missed: u64, cursor: u64 },
    /// Nothing newer than the cursor: hold the poll.
    Nothing,
    /// The cursor does not belong to this log (another epoch, or ahead of the newest message):
    /// the client starts over from `cursor`.
    Reset { cursor: u64 },
}

/// What one answer has room for: `MAX_MESSAGES_PER_ANSWER` messages and, past its first,
/// `MAX_ANSWER_DATA_BYTES` of data. Once a message is refused the answer is full, so an answer
/// that reads several topics carries a prefix of them, in order.
#[derive(Debug, Clone, Copy, Default)]
pub struct AnswerRoom {
    messages: usize,
    data_bytes: usize,
    full: bool,
}

impl AnswerRoom {
    /// Takes `message` into the answer if there is room.
    fn admit(&mut self, message: &Message) -> bool {
        self.data_bytes = self.data_bytes.saturating_add(message.data_bytes());
        self.full |=
            self.messages == MAX_MESSAGES_PER_ANSWER || (self.messages > 0 && self.data_bytes > MAX_ANSWER_DATA_BYTES);
        self.messages += usize::from(!self.full);
        !self.full
    }
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
    /// The log lives in Redis, which cannot be asked now (`--redis`: not reached yet, or lost).
    Unavailable,
}

/// The bounds on all topics, from `serve`'s options.
#[derive(Debug, Clone, Copy)]
pub struct TopicLimits {
    /// `--topic-capacity`: messages per ring.
    pub capacity: usize,
    /// `--max-topics`.
    pub max_topics: usize,
    /// `--max-retained-bytes`: what all rings together may count.
    pub max_retained_bytes: usize,
    /// `--topic-idle-timeout`, in ticks.
    pub idle_timeout: Tick,
}

impl From<&Config> for TopicLimits {
    fn from(config: &Config) -> Self {
        TopicLimits {
            capacity: config.topic_capacity,
            max_topics: config.max_topics,
            max_retained_bytes: config.max_retained_bytes,
            idle_timeout: Tick::try_from(config.topic_idle_timeout.as_millis()).unwrap_or(Tick::MAX),
        }
    }
}

/// All topics of this server life.
#[derive(Debug)]
pub struct Topics {
    limits: TopicLimits,
    /// Random per server life: the first half of every epoch.
    life: u64,
    /// Topics created in this server life: the second half of every epoch.
    created: u64,
    by_name: HashMap<Arc<str>, u32>,
    topics: Slab<Topic>,
    /// `(ring_bytes, id)` of every topic with a message: the last entry is the largest ring.
    by_size: BTreeSet<(usize, u32)>,
    /// `(last_active, id)` of every quiet topic: the first is the longest idle.
    by_idle: BTreeSet<(Tick, u32)>,
    /// Messages retained across all rings.
    retained: u64,
    retained_bytes: usize,
    /// Messages evicted for `--max-retained-bytes` (not those pushed out by `--topic-capacity`).
    evicted: u64,
    /// Topics forgotten for `--topic-idle-timeout`.
    forgotten: u64,
    /// The capacity of every hold list together, in slots.
    hold_slots: usize,
}

impl Topics {
    pub fn new(limits: TopicLimits) -> Self {
        Topics {
            limits: TopicLimits { capacity: limits.capacity.max(1), ..limits },
            life: RandomState::new().hash_one(std::process::id()),
            created: 0,
            by_name: HashMap::new(),
            topics: Slab::new(),
            by_size: BTreeSet::new(),
            by_idle: BTreeSet::new(),
            retained: 0,
            retained_bytes: 0,
            evicted: 0,
            forgotten: 0,
            hold_slots: 0,
        }
    }

    /// The name of this life of the topic; a cursor from another epoch is reset.
    pub fn epoch(&self, topic: u32) -> &str {
        &self.topics[topic as usize].epoch
    }

    pub fn count(&self) -> usize {
        self.topics.len()
    }

    pub fn retained(&self) -> u64 {
        self.retained
    }

    /// What all rings count against `--max-retained-bytes`.
    pub fn retained_bytes(&self) -> usize {
        self.retained_bytes
    }

    pub fn max_retained_bytes(&self) -> usize {
        self.limits.max_retained_bytes
    }

    /// Messages evicted for the byte bound since start.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Topics forgotten for being idle since start.
    pub fn forgotten(&self) -> u64 {
        self.forgotten
    }

    /// The id of topic `name`, if it exists.
    pub fn find(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    /// The topic's id, creating the topic on first use (by a publish or a poll alike, so a
    /// poll can wait for the first message of a topic nobody has published to yet).
    pub fn get_or_create(&mut self, name: &str, now: Tick) -> Result<u32, TopicError> {
        if let Some(&id) = self.by_name.get(name) {
            return Ok(id);
        }
        let epoch = self.new_epoch();
        self.create(name, epoch, 0, now)
    }

    /// Creates topic `name` as a copy of a log kept elsewhere (`shared_log`): its epoch, its
    /// newest sequence number and the messages it retains, oldest first and contiguous.
    pub fn insert_copy(
        &mut self,
        name: &str,
        epoch: Arc<str>,
        last_seq: u64,
        messages: Vec<Message>,
        now: Tick,
    ) -> Result<u32, TopicError> {
        debug_assert!(!self.by_name.contains_key(name), "{name} copied twice");
        let before_first = messages.first().map_or(last_seq, |m| m.seq - 1);
        let id = self.create(name, epoch, before_first, now)?;
        for message in messages {
            self.append(id, message, now);
        }
        Ok(id)
    }

    fn create(&mut self, name: &str, epoch: Arc<str>, last_seq: u64, now: Tick) -> Result<u32, TopicError> {
        if !valid_topic_name(name) {
            return Err(TopicError::BadName);
        }
        if self.topics.len() >= self.limits.max_topics {
            return Err(TopicError::TooMany);
        }
        let id = u32::try_from(self.topics.vacant_key()).ok().filter(|&id| id < ACK).ok_or(TopicError::TooMany)?;
        let name: Arc<str> = Arc::from(name);
        self.by_name.insert(name.clone(), id);
        self.topics.insert(Topic {
            name,
            epoch,
            ring: VecDeque::new(),
            ring_bytes: 0,
            last_seq,
            held: Slab::new(),
            watchers: 0,
            last_active: now,
            retired: None,
        });
        self.by_idle.insert((now, id));
        Ok(id)
    }

    /// A name for a new topic's life: this server life's random bits and the topic's creation
    /// number, so it differs from every epoch of this life and, but for a 1 in 2^48 chance, of
    /// every other. Hex digits and `-` only, so it needs no escaping in JSON or a query.
    fn new_epoch(&mut self) -> Arc<str> {
        self.created += 1;
        Arc::from(format!("{:012x}-{:x}", self.life & 0xffff_ffff_ffff, self.created))
    }

    pub fn name(&self, topic: u32) -> &str {
        &self.topics[topic as usize].name
    }

    /// The topic's name and epoch, to be shared with other threads.
    pub fn shared_names(&self, topic: u32) -> (Arc<str>, Arc<str>) {
        let t = &self.topics[topic as usize];
        (t.name.clone(), t.epoch.clone())
    }

    /// The messages a topic retains, oldest first.
    pub fn messages(&self, topic: u32) -> impl Iterator<Item = &Message> + '_ {
        self.topics[topic as usize].ring.iter()
    }

    /// The newest sequence number of a topic (0 before its first message).
    pub fn last_seq(&self, topic: u32) -> u64 {
        self.topics[topic as usize].last_seq
    }

    /// Appends a message and returns its sequence number, then evicts for the byte bound. The
    /// caller then wakes the holds (`take_held`) in the same turn.
    pub fn publish(&mut self, topic: u32, data: &str, now: Tick) -> u64 {
        let seq = self.topics[topic as usize].last_seq + 1;
        self.append(topic, Message::new(seq, data), now);
        seq
    }

    /// Appends message `seq`, which must be the topic's next (a publish here, or one numbered by
    /// a log kept elsewhere), then evicts for the byte bound.
    pub fn append(&mut self, topic: u32, message: Message, now: Tick) {
        let capacity = self.limits.capacity;
        let t = &mut self.topics[topic as usize];
        debug_assert_eq!(message.seq, t.last_seq + 1, "a gap in topic {}", t.name);
        t.last_seq = message.seq;
        if t.ring.len() == capacity {
            self.drop_oldest(topic);
        }
        self.resize_ring(topic, |t| {
            let bytes = message.stored_bytes();
            t.ring.push_back(message);
            t.ring_bytes += bytes;
        });
        self.retained += 1;
        self.mark_active(topic, now);
        self.evict_over_bound(topic);
    }

    /// Takes message `seq` of a log kept elsewhere (the shared log, Redis): one already here is
    /// skipped; one past a gap (messages this copy never received) empties the ring first, so
    /// that it stays contiguous and the gap reads as `missed`. Whether it was appended.
    pub fn receive(&mut self, topic: u32, message: Message, now: Tick) -> bool {
        let last_seq = self.topics[topic as usize].last_seq;
        if message.seq <= last_seq {
            return false;
        }
        if message.seq > last_seq + 1 {
            self.skip_to(topic, message.seq - 1);
        }
        self.append(topic, message, now);
        true
    }

    /// Moves a topic's newest sequence number on to `seq` without the messages between: they
    /// were lost before they reached this copy. Its ring is emptied (it must stay contiguous).
    pub fn skip_to(&mut self, topic: u32, seq: u64) {
        let t = &self.topics[topic as usize];
        if seq <= t.last_seq {
            return;
        }
        let dropped = t.ring.len() as u64;
        self.resize_ring(topic, |t| {
            t.ring.clear();
            t.ring_bytes = 0;
        });
        self.retained -= dropped;
        self.topics[topic as usize].last_seq = seq;
    }

    /// The log this topic copies began a new life, `epoch`, at message `first_seq`: the topic
    /// stops being found by its name (the next `get_or_create` or copy makes a new one), and
    /// every read of it is a `reset` to the cursor before `first_seq` in the new epoch, so that
    /// no waiter reads the new life's messages against a cursor of the old one. It stays while
    /// anybody waits on it. Returns the polls held on it, to be answered.
    pub fn retire(&mut self, topic: u32, epoch: Arc<str>, first_seq: u64, now: Tick) -> Vec<usize> {
        let t = &self.topics[topic as usize];
        if self.by_name.get(&t.name) == Some(&topic) {
            self.by_name.remove(&t.name);
        }
        let dropped = t.ring.len() as u64;
        self.resize_ring(topic, |t| {
            t.ring.clear();
            t.ring_bytes = 0;
        });
        self.retained -= dropped;
        let t = &mut self.topics[topic as usize];
        t.epoch = epoch;
        t.retired = Some(first_seq.saturating_sub(1));
        self.take_held(topic, now)
    }

    /// The log this topic copies began a new life, `epoch`, after `last_seq` (Redis forgot the
    /// topic and a publish made it again): its messages go, nothing else changes. For a log
    /// nobody waits on (the shared log's own topics), or a copy with no message yet, whose
    /// waiters' cursors are all 0, which means the same in every life.
    pub fn restart(&mut self, topic: u32, epoch: Arc<str>, last_seq: u64) {
        let dropped = self.topics[topic as usize].ring.len() as u64;
        self.resize_ring(topic, |t| {
            t.ring.clear();
            t.ring_bytes = 0;
        });
        self.retained -= dropped;
        let t = &mut self.topics[topic as usize];
        t.epoch = epoch;
        t.last_seq = last_seq;
    }

    /// Whether the topic was retired (`retire`): its waiters move to the new one of its name.
    pub fn is_retired(&self, topic: u32) -> bool {
        self.topics[topic as usize].retired.is_some()
    }

    /// Evicts whole messages, oldest first from the largest ring, until the rings fit in
    /// `--max-retained-bytes`. The message just published is never evicted by its own publish
    /// (its readers are being woken for it): when it alone is the largest ring, the next
    /// largest goes. O(log topics) per message evicted, and each message is evicted once.
    fn evict_over_bound(&mut self, published: u32) {
        while self.retained_bytes > self.limits.max_retained_bytes {
            let topics = &self.topics;
            let victim = self
                .by_size
                .iter()
                .rev()
                .map(|&(_, id)| id)
                .find(|&id| id != published || topics[id as usize].ring.len() > 1);
            let Some(victim) = victim else {
                break; // the new message alone is over the bound, and is all that is left
            };
            self.drop_oldest(victim);
            self.evicted += 1;
            // A ring emptied by eviction gives its slots back, or an evicted topic would keep
            // the capacity of its fullest moment, uncounted.
            let ring = &mut self.topics[victim as usize].ring;
            if ring.len() < ring.capacity() / 4 {
                ring.shrink_to(ring.len() * 2);
            }
        }
    }

    /// Removes a ring's oldest message.
    fn drop_oldest(&mut self, topic: u32) {
        let mut removed = false;
        self.resize_ring(topic, |t| {
            if let Some(message) = t.ring.pop_front() {
                t.ring_bytes -= message.stored_bytes();
                removed = true;
            }
        });
        if removed {
            self.retained -= 1;
        }
    }

    /// Changes a ring through `change`, keeping `by_size` and `retained_bytes` in step.
    fn resize_ring(&mut self, topic: u32, change: impl FnOnce(&mut Topic)) {
        let t = &mut self.topics[topic as usize];
        let before = t.ring_bytes;
        change(t);
        let after = t.ring_bytes;
        if before != after {
            if before > 0 {
                self.by_size.remove(&(before, topic));
            }
            if after > 0 {
                self.by_size.insert((after, topic));
            }
            self.retained_bytes = self.retained_bytes - before + after;
        }
    }

    /// Restarts a topic's idle time at `now`.
    fn mark_active(&mut self, topic: u32, now: Tick) {
        let t = &mut self.topics[topic as usize];
        if t.is_quiet() {
            self.by_idle.remove(&(t.last_active, topic));
            self.by_idle.insert((now, topic));
        }
        t.last_active = now;
    }

    /// Forgets every topic idle for `--topic-idle-timeout` at `now` (no held poll, no publish):
    /// its messages, its name and its epoch. O(log topics) per topic forgotten, nothing for the
    /// others. Each forgotten name is handed to `forgot`; returns how many there were.
    pub fn forget_idle(&mut self, now: Tick, mut forgot: impl FnMut(&str)) -> usize {
        let mut forgotten = 0;
        while let Some(&(last_active, id)) = self.by_idle.first() {
            if last_active.saturating_add(self.limits.idle_timeout) > now {
                break;
            }
            self.by_idle.pop_first();
            self.resize_ring(id, |t| t.ring_bytes = 0);
            let topic = self.topics.remove(id as usize);
            self.hold_slots -= topic.held.capacity();
            debug_assert!(topic.is_quiet(), "a topic with held polls or watchers was idle");
            self.retained -= topic.ring.len() as u64;
            if topic.retired.is_none() {
                self.by_name.remove(&topic.name);
                forgot(&topic.name);
            }
            forgotten += 1;
        }
        self.forgotten += forgotten as u64;
        forgotten
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
        self.read_within(topic, after, &mut AnswerRoom::default())
    }

    /// `read` for one topic of an answer that may read several: its messages take what `room`
    /// has left, and a topic with news but no room gets none (its losses are still counted, and
    /// its cursor moves past them only).
    pub fn read_within(&self, topic: u32, after: u64, room: &mut AnswerRoom) -> Read {
        let topic = &self.topics[topic as usize];
        if let Some(cursor) = topic.retired {
            return Read::Reset { cursor };
        }
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
        let messages: Vec<Message> =
            topic.ring.iter().skip(skip).take_while(|message| room.admit(message)).cloned().collect();
        let cursor = after + missed + messages.len() as u64;
        Read::Messages { messages, missed, cursor }
    }

    /// Records a poll held on `topic` by connection `key`; the topic is not idle while it is.
    pub fn hold(&mut self, topic: u32, key: usize) -> HoldKey {
        let t = &mut self.topics[topic as usize];
        if t.is_quiet() {
            self.by_idle.remove(&(t.last_active, topic));
        }
        let capacity = t.held.capacity();
        let slot = t.held.insert(key);
        self.hold_slots += t.held.capacity() - capacity;
        HoldKey { topic, slot: u32::try_from(slot).unwrap_or(u32::MAX) }
    }

    /// Forgets connection `key`'s held poll (timed out, or its client left). O(1), plus
    /// O(log topics) when it was the last one and the topic's idle time starts `now`. A hold
    /// that a publish already took is gone, and its slot may hold another connection by now,
    /// which is why the key is checked.
    pub fn release(&mut self, hold: HoldKey, key: usize, now: Tick) {
        let Some(t) = self.topics.get_mut(hold.topic as usize) else {
            return;
        };
        if t.held.get(hold.slot as usize) == Some(&key) {
            t.held.remove(hold.slot as usize);
            if t.is_quiet() {
                t.last_active = now;
                self.by_idle.insert((now, hold.topic));
            }
        }
    }

    /// Takes every poll held on `topic`: a publish answers them all, and the topic's idle time
    /// starts `now`.
    pub fn take_held(&mut self, topic: u32, now: Tick) -> Vec<usize> {
        let t = &mut self.topics[topic as usize];
        if t.held.is_empty() {
            return Vec::new();
        }
        let keys = t.held.drain().collect();
        t.last_active = now;
        if t.is_quiet() {
            self.by_idle.insert((now, topic));
        }
        keys
    }

    /// Counts a watcher of `topic` (an event stream, or a subscription of several topics): the
    /// topic is not idle, and so not forgotten, while it watches.
    pub fn watch(&mut self, topic: u32) {
        let t = &mut self.topics[topic as usize];
        if t.is_quiet() {
            self.by_idle.remove(&(t.last_active, topic));
        }
        t.watchers += 1;
    }

    /// Counts a watcher of `topic` leaving (its hold released first); the topic's idle time
    /// starts `now` if nobody else waits on it.
    pub fn unwatch(&mut self, topic: u32, now: Tick) {
        let t = &mut self.topics[topic as usize];
        t.watchers = t.watchers.saturating_sub(1);
        if t.is_quiet() {
            t.last_active = now;
            self.by_idle.insert((now, topic));
        }
    }

    /// Whether `hold` still names connection `key`'s poll on its topic's list (it is not once
    /// a publish took the list, or the hold was released).
    pub fn holds(&self, hold: HoldKey, key: usize) -> bool {
        self.topics.get(hold.topic as usize).is_some_and(|t| t.held.get(hold.slot as usize) == Some(&key))
    }

    /// Bytes the hold lists take (slab capacity x slot size): part of what a held poll costs.
    /// O(1): kept as lists grow and topics go.
    pub fn hold_list_bytes(&self) -> usize {
        self.hold_slots * HOLD_SLOT_BYTES
    }

    /// Every hold on every topic's list with its connection key, for invariant checks.
    pub fn held_polls(&self) -> impl Iterator<Item = (HoldKey, usize)> + '_ {
        self.topics.iter().flat_map(|(topic, t)| {
            t.held.iter().map(move |(slot, &key)| (HoldKey { topic: topic as u32, slot: slot as u32 }, key))
        })
    }
}

/// A topic name is 1 to 64 characters of `A-Z a-z 0-9 . _ -`.
pub fn valid_topic_name(name: &str) -> bool {
    (1..=MAX_TOPIC_LEN).contains(&name.len())
        && name.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

#[cfg(test)]
#[path = "pubsub_tests.rs"]
mod tests;
