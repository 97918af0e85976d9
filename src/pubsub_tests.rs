//! Tests of the topic store: sequence numbers and cursors, paging, holds, and the two global
//! bounds (retained bytes, idle time), driven by hand-picked ticks instead of a clock.

use super::*;

/// No bound but the ones a test sets.
const UNBOUNDED: TopicLimits =
    TopicLimits { capacity: 1024, max_topics: 100, max_retained_bytes: usize::MAX, idle_timeout: Tick::MAX };

fn topics(capacity: usize, max_topics: usize) -> Topics {
    Topics::new(TopicLimits { capacity, max_topics, ..UNBOUNDED })
}

/// What a message of `len` characters that need no escaping counts against the byte bound.
/// What a message of `len` plain bytes on one line counts: its JSON literal (the quotes) and its
/// `data:` line (`data: `, the newline).
fn stored(len: usize) -> usize {
    (len + 2) + (len + 7) + MESSAGE_OVERHEAD_BYTES
}

fn seqs(read: &Read) -> Vec<u64> {
    match read {
        Read::Messages { messages, .. } => messages.iter().map(|m| m.seq).collect(),
        _ => Vec::new(),
    }
}

/// `(seqs, missed, cursor)` of a read that found messages or losses.
fn found(read: Read) -> (Vec<u64>, u64, u64) {
    match read {
        Read::Messages { messages, missed, cursor } => (messages.iter().map(|m| m.seq).collect(), missed, cursor),
        other => panic!("expected messages, got {other:?}"),
    }
}

impl Topics {
    fn held_on(&self, topic: u32) -> usize {
        self.topics[topic as usize].held.len()
    }

    /// Recomputes every count and index from the rings and holds, and checks that the kept ones
    /// agree (tests only: it is O(topics + messages)).
    fn assert_consistent(&self) {
        let mut by_size = BTreeSet::new();
        let mut by_idle = BTreeSet::new();
        let (mut retained, mut retained_bytes) = (0, 0);
        for (id, t) in &self.topics {
            let id = u32::try_from(id).unwrap();
            let bytes: usize = t.ring.iter().map(Message::stored_bytes).sum();
            assert_eq!(bytes, t.ring_bytes, "topic {}", t.name);
            if bytes > 0 {
                by_size.insert((bytes, id));
            }
            if t.is_quiet() {
                by_idle.insert((t.last_active, id));
            }
            assert_eq!(self.by_name.get(&t.name), Some(&id));
            retained += t.ring.len() as u64;
            retained_bytes += bytes;
        }
        assert_eq!(by_size, self.by_size, "by_size");
        assert_eq!(by_idle, self.by_idle, "by_idle");
        assert_eq!((retained, retained_bytes), (self.retained, self.retained_bytes), "retained");
        assert_eq!(self.by_name.len(), self.topics.len());
    }
}

// ---- one topic's log ----------------------------------------------------------------------

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
    let mut topics = topics(8, 10);
    let t = topics.get_or_create("news", 0).unwrap();
    assert_eq!(topics.read(t, 0), Read::Nothing);
    assert_eq!(topics.publish(t, "a", 0), 1);
    assert_eq!(topics.publish(t, "b", 0), 2);
    assert_eq!(seqs(&topics.read(t, 0)), [1, 2]);
    assert_eq!(seqs(&topics.read(t, 1)), [2]);
    assert_eq!(topics.read(t, 2), Read::Nothing);
    assert_eq!(topics.read(t, 3), Read::Reset { cursor: 2 });
}

#[test]
fn messages_are_stored_as_json_literals_and_as_event_stream_lines() {
    let mut topics = topics(8, 10);
    let t = topics.get_or_create("t", 0).unwrap();
    topics.publish(t, "a \"b\"\n", 0);
    let Read::Messages { messages, .. } = topics.read(t, 0) else { panic!("no messages") };
    assert_eq!(&*messages[0].json, r#""a \"b\"\n""#);
    assert_eq!(&*messages[0].lines, "data: a \"b\"\ndata: \n");
    assert_eq!(messages[0].data_bytes(), 9, "escaped, without the quotes");
    assert_eq!(topics.retained_bytes(), 11 + 19 + MESSAGE_OVERHEAD_BYTES, "counted as stored");
    // docs/long-polling.md quotes this: a ring slot (seq and two fat pointers) and four counts.
    #[cfg(target_pointer_width = "64")]
    assert_eq!(MESSAGE_OVERHEAD_BYTES, 72);
}

#[test]
fn every_line_ending_cuts_a_data_line() {
    for (text, lines) in [
        ("", "data: \n"),
        ("one", "data: one\n"),
        ("a\nb", "data: a\ndata: b\n"),
        ("a\r\nb\rc", "data: a\ndata: b\ndata: c\n"),
        ("end\n", "data: end\ndata: \n"),
    ] {
        assert_eq!(crate::pubsub::data_lines(text), lines, "{text:?}");
    }
}

#[test]
fn overflow_is_reported_as_missed() {
    let mut topics = topics(3, 10);
    let t = topics.get_or_create("t", 0).unwrap();
    for i in 1..=10 {
        topics.publish(t, &i.to_string(), 0);
    }
    assert_eq!(topics.retained(), 3);
    assert_eq!(topics.retained_bytes(), stored(1) + stored(1) + stored(2));
    assert_eq!(found(topics.read(t, 2)), (vec![8, 9, 10], 5, 10), "seqs 3..=7 fell out of the ring");
    assert_eq!(topics.resolve(t, Cursor::Oldest), 7);
    assert_eq!(topics.resolve(t, Cursor::Next), 10);
    assert_eq!(topics.resolve(t, Cursor::After(4)), 4);
    assert_eq!(topics.evicted(), 0, "a full ring is not the byte bound");
    topics.assert_consistent();
}

#[test]
fn answers_are_paged() {
    let mut topics = topics(1000, 10);
    let t = topics.get_or_create("t", 0).unwrap();
    for _ in 0..250 {
        topics.publish(t, "x", 0);
    }
    assert_eq!(seqs(&topics.read(t, 0)), (1..=100).collect::<Vec<_>>());
    assert_eq!(seqs(&topics.read(t, 200)), (201..=250).collect::<Vec<_>>());
}

#[test]
fn answers_are_bounded_in_bytes_but_always_carry_one_message() {
    let mut topics = topics(1000, 10);
    let t = topics.get_or_create("t", 0).unwrap();
    let big = "b".repeat(16 * 1024);
    for _ in 0..10 {
        topics.publish(t, &big, 0);
    }
    topics.publish(t, &"h".repeat(MAX_ANSWER_DATA_BYTES + 1), 0);
    assert_eq!(seqs(&topics.read(t, 0)), [1, 2, 3, 4], "64 KiB of data fit, quotes aside");
    assert_eq!(seqs(&topics.read(t, 9)), [10], "the next one would pass the bound");
    assert_eq!(seqs(&topics.read(t, 10)), [11], "one message over the bound still goes out");
}

/// An answer that reads several topics shares one room among them: 100 messages, and 64 KiB
/// of data past its first message. Once a message is refused the answer is full; a topic read
/// then carries none, but still reports its loss and moves its cursor past it.
#[test]
fn reads_of_one_answer_share_its_room() {
    let mut topics = topics(3, 10);
    let (a, b, c) = (topics.get_or_create("a", 0).unwrap(), topics.get_or_create("b", 0).unwrap(), 2);
    assert_eq!(topics.get_or_create("c", 0), Ok(c));
    for _ in 0..3 {
        topics.publish(a, &"a".repeat(30 * 1024), 0);
    }
    for _ in 0..5 {
        topics.publish(c, "c", 0); // the ring keeps 3 to 5: 1 and 2 are lost
    }
    let mut room = AnswerRoom::default();
    assert_eq!(topics.read_within(b, 0, &mut room), Read::Nothing, "nothing new takes no room");
    assert_eq!(found(topics.read_within(a, 0, &mut room)), (vec![1, 2], 0, 2), "60 KiB fit, 90 do not");
    assert_eq!(found(topics.read_within(c, 0, &mut room)), (vec![], 2, 2), "full: only the loss");
    assert_eq!(found(topics.read_within(c, 0, &mut AnswerRoom::default())), (vec![3, 4, 5], 2, 5));

    let mut many = self::topics(200, 10);
    let (a, b) = (many.get_or_create("a", 0).unwrap(), many.get_or_create("b", 0).unwrap());
    for _ in 0..80 {
        many.publish(a, "x", 0);
        many.publish(b, "y", 0);
    }
    let mut room = AnswerRoom::default();
    assert_eq!(seqs(&many.read_within(a, 0, &mut room)), (1..=80).collect::<Vec<_>>());
    assert_eq!(seqs(&many.read_within(b, 0, &mut room)), (1..=20).collect::<Vec<_>>(), "100 over both");
}

#[test]
fn holds_are_released_in_o1_and_taken_by_a_publish() {
    let mut topics = topics(8, 10);
    let t = topics.get_or_create("t", 0).unwrap();
    let a = topics.hold(t, 10);
    let _b = topics.hold(t, 11);
    topics.release(a, 10, 0);
    assert_eq!(topics.held_on(t), 1);
    let c = topics.hold(t, 12); // reuses a's slot
    assert_eq!(c, a);
    topics.release(a, 10, 0); // a stale release does not remove connection 12's hold
    assert_eq!(topics.held_on(t), 2);
    assert!(topics.hold_list_bytes() >= 2 * 16);
    let mut woken = topics.take_held(t, 0);
    woken.sort();
    assert_eq!(woken, [11, 12]);
    assert_eq!(topics.held_on(t), 0);
    topics.assert_consistent();
}

#[test]
fn topic_limits() {
    let mut topics = topics(8, 2);
    assert_eq!(topics.get_or_create("a/b", 0), Err(TopicError::BadName));
    let a = topics.get_or_create("a", 0).unwrap();
    assert_eq!(topics.get_or_create("a", 0), Ok(a));
    topics.get_or_create("b", 0).unwrap();
    assert_eq!(topics.get_or_create("c", 0), Err(TopicError::TooMany));
    assert_eq!(topics.count(), 2);
    assert_eq!(topics.name(a), "a");
}

// ---- the byte bound -----------------------------------------------------------------------

/// Two rings, then a third topic's publish, then a large one: each step evicts whole messages,
/// oldest first, from whichever ring is largest at that moment, until all fit; the message just
/// published is never the one evicted.
#[test]
fn eviction_takes_the_oldest_messages_of_the_largest_ring_first() {
    let bound = 3 * stored(100) + 2 * stored(10);
    let mut topics = Topics::new(TopicLimits { max_retained_bytes: bound, ..UNBOUNDED });
    let a = topics.get_or_create("a", 0).unwrap();
    let b = topics.get_or_create("b", 0).unwrap();
    let c = topics.get_or_create("c", 0).unwrap();
    for _ in 0..3 {
        topics.publish(a, &"a".repeat(100), 0);
    }
    for _ in 0..2 {
        topics.publish(b, &"b".repeat(10), 0);
    }
    assert_eq!((topics.retained_bytes(), topics.evicted()), (bound, 0), "exactly at the bound: nothing goes");

    topics.publish(c, &"c".repeat(50), 0);
    assert_eq!(topics.evicted(), 1, "one message of the largest ring made room");
    assert_eq!(topics.resolve(a, Cursor::Oldest), 1, "a's oldest went");
    assert_eq!(seqs(&topics.read(b, 0)), [1, 2]);
    assert_eq!(seqs(&topics.read(c, 0)), [1]);
    topics.assert_consistent();

    // b becomes the largest with one big message: its two old ones go first; then, with only the
    // new message left in b, the next largest ring, a, gives up both of its messages.
    topics.publish(b, &"B".repeat(300), 0);
    assert_eq!(topics.evicted(), 5);
    assert_eq!(topics.retained_bytes(), stored(300) + stored(50));
    assert!(topics.retained_bytes() <= bound);
    assert_eq!(found(topics.read(b, 0)), (vec![3], 2, 3), "b kept the new message");
    assert_eq!(found(topics.read(a, 0)), (vec![], 3, 3), "a was emptied");
    assert_eq!(found(topics.read(c, 0)), (vec![1], 0, 1), "c was never the largest");
    topics.assert_consistent();
}

/// A reader whose cursor is behind evicted messages is told how many it missed, and its cursor
/// moves past them even when nothing of the topic is left to send.
#[test]
fn evicted_messages_are_reported_as_missed() {
    let bound = 3 * stored(100) + stored(10);
    let mut topics = Topics::new(TopicLimits { max_retained_bytes: bound, ..UNBOUNDED });
    let quiet = topics.get_or_create("quiet", 0).unwrap();
    let busy = topics.get_or_create("busy", 0).unwrap();
    for _ in 0..3 {
        topics.publish(quiet, &"q".repeat(100), 0);
    }
    for _ in 0..4 {
        topics.publish(busy, &"b".repeat(10), 0);
    }
    // Room for one more small message than there is: quiet, the larger ring, gave up two.
    assert_eq!(topics.evicted(), 2);
    let cases = [
        // (topic, cursor, expected (seqs, missed, cursor))
        (quiet, 0, (vec![3], 2, 3)),
        (quiet, 1, (vec![3], 1, 3)),
        (quiet, 2, (vec![3], 0, 3)),
        (busy, 0, (vec![1, 2, 3, 4], 0, 4)),
    ];
    for (topic, after, expected) in cases {
        assert_eq!(found(topics.read(topic, after)), expected, "topic {topic} after {after}");
    }
    // A third topic's message needs nearly all the room: both other rings are emptied, so their
    // readers get only the count, and a cursor that continues after the lost messages.
    let big = topics.get_or_create("big", 0).unwrap();
    topics.publish(big, &"B".repeat(400), 0);
    assert_eq!(topics.evicted(), 7);
    assert_eq!(found(topics.read(quiet, 0)), (vec![], 3, 3));
    assert_eq!(topics.topics[quiet as usize].ring.capacity(), 0, "an emptied ring gives its slots back");
    assert_eq!(found(topics.read(busy, 2)), (vec![], 2, 4));
    assert_eq!(topics.read(quiet, 3), Read::Nothing, "caught up: the next poll is held");
    assert_eq!(topics.resolve(quiet, Cursor::Oldest), 3);
    assert_eq!(topics.retained_bytes(), stored(400));
    topics.assert_consistent();
}

#[test]
fn the_message_just_published_stays_even_alone_over_the_bound() {
    let mut topics = Topics::new(TopicLimits { max_retained_bytes: stored(10), ..UNBOUNDED });
    let a = topics.get_or_create("a", 0).unwrap();
    let b = topics.get_or_create("b", 0).unwrap();
    topics.publish(a, &"a".repeat(10), 0);
    // Escaping can make a message stored larger than the bound; it is kept, everything else goes.
    topics.publish(b, &"\u{1}".repeat(10), 0);
    assert_eq!(seqs(&topics.read(b, 0)), [1]);
    assert_eq!(found(topics.read(a, 0)), (vec![], 1, 1));
    assert_eq!(topics.retained_bytes(), 62 + (6 + 10 + 1) + MESSAGE_OVERHEAD_BYTES);
    // The next publish on b evicts the big one, its ring being the largest.
    topics.publish(b, "x", 0);
    assert_eq!(found(topics.read(b, 0)), (vec![2], 1, 2));
    assert_eq!(topics.retained_bytes(), stored(1));
    assert_eq!(topics.evicted(), 2);
    topics.assert_consistent();
}

/// Many publishes of varied sizes on varied topics, with forgetting in between: after every step
/// the counts and indexes agree with the rings, and the bound holds.
#[test]
fn byte_accounting_stays_exact_through_evictions_and_forgetting() {
    let bound = 5_000;
    let mut topics = Topics::new(TopicLimits { capacity: 8, max_retained_bytes: bound, idle_timeout: 50, ..UNBOUNDED });
    let mut state: u64 = 0x2545_f491_4f6c_dd1d; // xorshift: the same sequence every run
    let mut next = move |below: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % below
    };
    let mut evicted_seen = false;
    for now in 0..2_000 {
        let name = format!("t{}", next(20));
        let topic = topics.get_or_create(&name, now).unwrap();
        let len = usize::try_from(next(400)).unwrap();
        topics.publish(topic, &"x".repeat(len), now);
        assert!(topics.retained_bytes() <= bound, "step {now}: {} > {bound}", topics.retained_bytes());
        evicted_seen |= topics.evicted() > 0;
        if now % 7 == 0 {
            topics.forget_idle(now, |_| {});
        }
        topics.assert_consistent();
    }
    assert!(evicted_seen && topics.forgotten() > 0, "the test exercised both bounds");
    topics.forget_idle(Tick::MAX, |_| {});
    assert_eq!((topics.count(), topics.retained(), topics.retained_bytes()), (0, 0, 0));
    topics.assert_consistent();
}

// ---- forgetting idle topics ---------------------------------------------------------------

#[test]
fn only_topics_idle_without_holds_are_forgotten() {
    const IDLE: Tick = 1_000;
    let mut topics = Topics::new(TopicLimits { idle_timeout: IDLE, ..UNBOUNDED });
    topics.get_or_create("untouched", 0).unwrap();
    let held = topics.get_or_create("held", 0).unwrap();
    let published = topics.get_or_create("published", 0).unwrap();
    let woken = topics.get_or_create("woken", 0).unwrap();
    let hold = topics.hold(held, 7);
    topics.publish(published, "m", 500);
    topics.hold(woken, 8);
    topics.publish(woken, "m", 600);
    assert_eq!(topics.take_held(woken, 600), [8]);
    assert_eq!(topics.retained_bytes(), 2 * stored(1));

    // (now, hold released at that tick first, topics forgotten, topics left)
    let steps: [(Tick, bool, usize, &[&str]); 6] = [
        (IDLE - 1, false, 0, &["untouched", "held", "published", "woken"]),
        (IDLE, false, 1, &["held", "published", "woken"]),
        (1_200, true, 0, &["held", "published", "woken"]), // held's idle time starts now
        (1_500, false, 1, &["held", "woken"]),
        (1_600, false, 1, &["held"]),
        (2_200, false, 1, &[]),
    ];
    for (now, release, expected, left) in steps {
        if release {
            topics.release(hold, 7, now);
        }
        assert_eq!(topics.forget_idle(now, |_| {}), expected, "at {now}");
        let mut names: Vec<&str> = topics.by_name.keys().map(|name| &**name).collect();
        names.sort_by_key(|name| ["untouched", "held", "published", "woken"].iter().position(|n| n == name));
        assert_eq!(names, left, "at {now}");
        topics.assert_consistent();
    }
    assert_eq!(topics.forgotten(), 4);
    assert_eq!((topics.count(), topics.retained(), topics.retained_bytes()), (0, 0, 0));
}

#[test]
fn a_recreated_topic_has_a_new_epoch_and_starts_at_one() {
    let mut topics = Topics::new(TopicLimits { idle_timeout: 10, ..UNBOUNDED });
    let news = topics.get_or_create("news", 0).unwrap();
    let other = topics.get_or_create("other", 0).unwrap();
    assert_ne!(topics.epoch(news), topics.epoch(other), "each topic has its own epoch");
    let old_epoch = topics.epoch(news).to_string();
    for _ in 0..3 {
        topics.publish(news, "m", 0);
    }
    topics.publish(other, "m", 5);
    assert_eq!(topics.forget_idle(10, |_| {}), 1);

    let again = topics.get_or_create("news", 11).unwrap();
    assert_eq!(again, news, "a forgotten topic's id is reused");
    assert_ne!(topics.epoch(again), old_epoch, "a new life, a new epoch");
    assert_eq!(topics.last_seq(again), 0);
    assert_eq!(topics.read(again, 3), Read::Reset { cursor: 0 }, "an old cursor is not read against the new log");
    assert_eq!(topics.publish(again, "m", 12), 1, "numbering starts over");
    topics.assert_consistent();

    let other_life = Topics::new(UNBOUNDED).new_epoch();
    assert_ne!(&*other_life, old_epoch, "another server life, another epoch");
    assert!(old_epoch.bytes().all(|c| c.is_ascii_hexdigit() || c == b'-'), "{old_epoch} needs no escaping");
}

#[test]
fn forgetting_makes_room_under_max_topics() {
    let mut topics = Topics::new(TopicLimits { max_topics: 1, idle_timeout: 10, ..UNBOUNDED });
    topics.get_or_create("a", 0).unwrap();
    assert_eq!(topics.get_or_create("b", 5), Err(TopicError::TooMany));
    assert_eq!(topics.forget_idle(10, |_| {}), 1);
    assert!(topics.get_or_create("b", 10).is_ok());
    assert_eq!(topics.count(), 1);
}

/// An open event stream keeps its topic from being forgotten, listed on it or not (a publish
/// takes it off the list until it has sent what is new); when it closes, the idle time starts.
#[test]
fn a_topic_with_an_open_stream_is_not_forgotten() {
    let mut topics = Topics::new(TopicLimits { idle_timeout: 100, ..UNBOUNDED });
    let t = topics.get_or_create("t", 0).unwrap();
    topics.watch(t);
    let hold = topics.hold(t, 7);
    topics.publish(t, "m", 10);
    assert_eq!(topics.take_held(t, 10), [7]);
    assert_eq!(topics.forget_idle(1_000, |_| {}), 0, "unlisted, but still open");
    topics.assert_consistent();
    topics.release(hold, 7, 1_000);
    topics.unwatch(t, 1_000);
    topics.assert_consistent();
    assert_eq!(topics.forget_idle(1_099, |_| {}), 0);
    assert_eq!(topics.forget_idle(1_100, |_| {}), 1);
}

/// The hold lists' bytes are kept as lists grow and topics go, not recounted: they agree with a
/// recount after each step.
#[test]
fn hold_list_bytes_are_kept_without_a_recount() {
    let mut topics = Topics::new(TopicLimits { idle_timeout: 10, ..UNBOUNDED });
    let recount =
        |topics: &Topics| topics.topics.iter().map(|(_, t)| t.held.capacity()).sum::<usize>() * HOLD_SLOT_BYTES;
    let (a, b) = (topics.get_or_create("a", 0).unwrap(), topics.get_or_create("b", 0).unwrap());
    for key in 0..100 {
        topics.hold(if key % 10 == 0 { b } else { a }, key);
        assert_eq!(topics.hold_list_bytes(), recount(&topics));
    }
    let before = topics.hold_list_bytes();
    topics.take_held(b, 0);
    assert_eq!(topics.hold_list_bytes(), before, "a drained list keeps its capacity");
    assert_eq!(topics.forget_idle(100, |_| {}), 1, "b is idle");
    assert_eq!(topics.hold_list_bytes(), recount(&topics));
    assert!(topics.hold_list_bytes() < before);
}

/// A message numbered elsewhere: one already here is skipped, one past a gap empties the ring
/// and the gap reads as missed.
#[test]
fn messages_numbered_elsewhere_are_received_once_and_gaps_are_missed() {
    let mut topics = topics(8, 10);
    let t = topics.get_or_create("t", 0).unwrap();
    assert!(topics.receive(t, Message::new(1, "a"), 0));
    assert!(!topics.receive(t, Message::new(1, "a"), 0), "a duplicate");
    assert!(topics.receive(t, Message::new(5, "e"), 0), "past a gap");
    assert_eq!(found(topics.read(t, 0)), (vec![5], 4, 5));
    assert_eq!(topics.retained(), 1);
}

/// A retired topic answers every read with a reset to the new life's cursor, and its name is
/// free for the new life's topic.
#[test]
fn a_retired_topic_resets_every_reader_and_frees_its_name() {
    let mut topics = topics(8, 10);
    let t = topics.get_or_create("t", 0).unwrap();
    topics.publish(t, "old", 0);
    topics.publish(t, "old", 0);
    topics.hold(t, 7);
    let woken = topics.retire(t, Arc::from("new-life"), 1, 0);
    assert_eq!(woken, [7]);
    assert_eq!(topics.read(t, 2), Read::Reset { cursor: 0 });
    assert_eq!(topics.epoch(t), "new-life");
    let fresh = topics.get_or_create("t", 0).unwrap();
    assert_ne!(fresh, t, "a new topic for the new life");
    assert_eq!(topics.retained(), 0);
}
