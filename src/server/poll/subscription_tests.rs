//! Tests of a subscription of several topics without a server: what one answer carries over its
//! topics, its JSON, its holds' bookkeeping, and what it costs per topic.

use super::*;
use crate::pubsub::{TopicLimits, HOLD_SLOT_BYTES, MAX_ANSWER_DATA_BYTES};

const LIMITS: TopicLimits =
    TopicLimits { capacity: 200, max_topics: 100, max_retained_bytes: 1 << 30, idle_timeout: 100 };

/// Topics `A`, `B`, `C` with `a`, `b`, `c` messages of `size` bytes each, the data `A1`, `A2`...
fn topics_with(a: u64, b: u64, c: u64, size: usize) -> Topics {
    let mut topics = Topics::new(LIMITS);
    for (name, count) in [("A", a), ("B", b), ("C", c)] {
        let topic = topics.get_or_create(name, 0).unwrap();
        for seq in 1..=count {
            let mut data = format!("{name}{seq}");
            data.extend(std::iter::repeat_n('.', size.saturating_sub(data.len())));
            topics.publish(topic, &data, 0);
        }
    }
    topics
}

fn watches(cursors: [u64; 3]) -> Vec<Watch> {
    (0..3u32).map(|topic| Watch { hold: HoldKey::unlisted(topic), after: cursors[topic as usize] }).collect()
}

/// `(topic index, seq)` of each message of an answer.
fn carried(news: &News) -> Vec<(usize, u64)> {
    match news {
        News::Messages { messages, .. } => messages.iter().map(|(watch, m)| (*watch, m.seq)).collect(),
        _ => Vec::new(),
    }
}

#[test]
fn one_answer_reads_every_topic_in_order_within_one_room() {
    let seqs = |topic: usize, range: std::ops::RangeInclusive<u64>| range.map(move |seq| (topic, seq));
    struct Case {
        what: &'static str,
        published: [u64; 3],
        size: usize,
        cursors: [u64; 3],
        resets_due: u64,
        carried: Vec<(usize, u64)>,
        status: &'static str,
        cursors_after: [u64; 3],
    }
    let cases = [
        Case {
            what: "nothing new",
            published: [2, 1, 0],
            size: 1,
            cursors: [2, 1, 0],
            resets_due: 0,
            carried: vec![],
            status: "timeout",
            cursors_after: [2, 1, 0],
        },
        Case {
            what: "news on the second topic only",
            published: [2, 3, 0],
            size: 1,
            cursors: [2, 1, 0],
            resets_due: 0,
            carried: seqs(1, 2..=3).collect(),
            status: "ok",
            cursors_after: [2, 3, 0],
        },
        Case {
            what: "topic order, then seq; 100 messages over all topics",
            published: [80, 50, 5],
            size: 1,
            cursors: [0, 0, 0],
            resets_due: 0,
            carried: seqs(0, 1..=80).chain(seqs(1, 1..=20)).collect(),
            status: "ok",
            cursors_after: [80, 20, 0],
        },
        Case {
            what: "64 KiB of data over all topics, past the first message",
            published: [1, 1, 1],
            size: 40_000,
            cursors: [0, 0, 0],
            resets_due: 0,
            carried: vec![(0, 1)],
            status: "ok",
            cursors_after: [1, 0, 0],
        },
        Case {
            what: "a reset due is never hidden among messages: the others wait",
            published: [3, 2, 0],
            size: 1,
            cursors: [0, 0, 0],
            resets_due: 0b10,
            carried: vec![],
            status: "reset",
            cursors_after: [0, 2, 0],
        },
        Case {
            what: "a cursor ahead of the log resets that topic",
            published: [3, 2, 0],
            size: 1,
            cursors: [1, 0, 9],
            resets_due: 0,
            carried: vec![],
            status: "reset",
            cursors_after: [1, 0, 0],
        },
    ];
    for case in cases {
        let topics = topics_with(case.published[0], case.published[1], case.published[2], case.size);
        let mut watches = watches(case.cursors);
        let news = gather(&topics, &mut watches, case.resets_due);
        assert_eq!(carried(&news), case.carried, "{}", case.what);
        let mut body = String::new();
        write_answer(&mut body, &topics, &watches, &news);
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["status"], case.status, "{}: {body}", case.what);
        let after: Vec<u64> = watches.iter().map(|w| w.after).collect();
        assert_eq!(after, case.cursors_after, "{}", case.what);
        let data: usize = json["messages"].as_array().unwrap().iter().map(|m| m["data"].as_str().unwrap().len()).sum();
        assert!(carried(&news).len() <= 1 || data <= MAX_ANSWER_DATA_BYTES, "{}", case.what);
    }
}

#[test]
fn loss_is_counted_over_all_topics() {
    let mut topics = Topics::new(TopicLimits { capacity: 2, ..LIMITS });
    let (a, b) = (topics.get_or_create("A", 0).unwrap(), topics.get_or_create("B", 0).unwrap());
    for _ in 0..5 {
        topics.publish(a, "x", 0);
    }
    for _ in 0..3 {
        topics.publish(b, "y", 0);
    }
    let mut watches =
        vec![Watch { hold: HoldKey::unlisted(a), after: 0 }, Watch { hold: HoldKey::unlisted(b), after: 0 }];
    let news = gather(&topics, &mut watches, 0);
    let News::Messages { missed, .. } = &news else { panic!("{news:?}") };
    assert_eq!((*missed, carried(&news)), (3 + 1, vec![(0, 4), (0, 5), (1, 2), (1, 3)]));
}

#[test]
fn an_answer_names_each_message_s_topic_and_every_epoch_and_cursor_in_topic_order() {
    let topics = topics_with(0, 1, 0, 1);
    let mut watches = watches([0, 0, 0]);
    watches.swap(0, 1); // asked as ?topic=B&topic=A&topic=C
    let news = gather(&topics, &mut watches, 0);
    let mut body = String::new();
    write_answer(&mut body, &topics, &watches, &news);
    let (a, b, c) = (topics.epoch(0), topics.epoch(1), topics.epoch(2));
    let expected = format!(
        "{{\"status\":\"ok\",\"epoch\":\"B:{b},A:{a},C:{c}\",\"cursor\":\"B:1,A:0,C:0\",\"missed\":0,\
         \"messages\":[{{\"topic\":\"B\",\"seq\":1,\"data\":\"B1\"}}]}}\n"
    );
    assert_eq!(body, expected);
}

#[test]
fn a_subscription_waits_while_listed_everywhere_and_ends_once_off_every_list() {
    let mut topics = topics_with(0, 0, 0, 1);
    let mut subscriptions = Subscriptions::default();
    let start = Start { watches: watches([0, 0, 0]).into_boxed_slice(), resets_due: 0 };
    let n = subscriptions.start(7, start, true, &mut topics).unwrap();
    assert!(subscriptions.waiting(n, 7, &topics));
    assert!(!subscriptions.waiting(n, 8, &topics), "another connection's key");
    assert_eq!(topics.forget_idle(1_000, |_| {}), 0, "watched topics are not forgotten");
    let bytes = subscriptions.memory_bytes();
    assert!(bytes >= 3 * std::mem::size_of::<Watch>(), "{bytes}");

    topics.publish(1, "b", 10);
    assert_eq!(topics.take_held(1, 10), [7], "a publish on B takes the subscription's hold");
    assert!(!subscriptions.waiting(n, 7, &topics), "due once one topic took it off its list");
    assert_eq!(topics.forget_idle(1_000, |_| {}), 0, "B is still watched while its answer is due");

    let watches = subscriptions.end(n, 7, &mut topics, 20);
    assert_eq!(watches.len(), 3);
    assert!(topics.held_polls().next().is_none(), "off every list");
    assert_eq!(subscriptions.memory_bytes(), bytes - 3 * std::mem::size_of::<Watch>());
    assert!(!subscriptions.waiting(n, 7, &topics), "gone");
    assert_eq!(topics.forget_idle(120, |_| {}), 3, "each topic's idle time started when it ended");
}

/// docs/long-polling.md quotes these: what a poll on several topics keeps per topic, beside
/// what any held connection keeps.
#[test]
fn a_poll_on_several_topics_costs_32_bytes_per_topic() {
    let per_topic = std::mem::size_of::<Watch>() + HOLD_SLOT_BYTES;
    println!(
        "per topic: a watch {} B + a place on the topic's hold list {} B = {per_topic} B; \
         per subscription: a table slot {SLOT_BYTES} B",
        std::mem::size_of::<Watch>(),
        HOLD_SLOT_BYTES,
    );
    #[cfg(target_pointer_width = "64")]
    assert_eq!((per_topic, SLOT_BYTES), (32, 32));
}
