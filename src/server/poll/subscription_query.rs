//! The query of a poll or stream on several topics, `?topic=A&topic=B&cursor=A:42,B:7`: which
//! topics, where each starts, and the epoch the client knows of each (docs/long-polling.md,
//! "Several topics in one subscription").
//!
//! A cursor string names the last seq seen on each topic, `A:42,B:7`, and an epoch string the
//! epoch of each, `A:3fe2513d193c-1,B:3fe2513d193c-2`; each in any order, naming only polled
//! topics and each at most once. A topic the cursor string leaves out starts where a poll without
//! a cursor does. A topic name never holds `:`, `,` or `%`, and neither does an epoch or a
//! number, so a client that percent-encodes the query (`encodeURIComponent`) and sends `%3A` and
//! `%2C` for the separators is read the same, without decoding anything else.
//!
//! Everything here is a pure function of the query and `Last-Event-ID`: nothing is created or
//! held until the whole query is known to be good.

use std::time::Duration;

use super::{parse_seq, parse_timeout};
use crate::pubsub::{valid_topic_name, Cursor};

/// The most topics one subscription waits on.
pub(in crate::server) const MAX_TOPICS_PER_SUBSCRIPTION: usize = 64;

const BAD_TOPICS: &str = "bad poll: give 1 to 64 topics as topic=NAME\n";
const BAD_NAME: &str = "bad poll: a topic name is 1 to 64 characters of A-Z a-z 0-9 . _ -\n";
const TWICE: &str = "bad poll: a topic is given twice\n";
const BAD_CURSOR: &str = "bad poll: cursor must be like A:42,B:7, naming polled topics once each\n";
const BAD_LAST_EVENT_ID: &str = "bad poll: Last-Event-ID must be like A:42,B:7, naming polled topics once each\n";
const BAD_EPOCH: &str = "bad poll: epoch must be like A:3fe2513d193c-1, naming polled topics once each\n";

/// A poll or stream on several topics, as asked.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct SubscriptionQuery<'a> {
    /// The topics in the order given: the order of the answer's cursor and messages.
    pub(super) topics: Vec<TopicStart<'a>>,
    pub(super) timeout: Option<Duration>,
}

/// One topic of a subscription: its name, where it starts, and the epoch the client knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TopicStart<'a> {
    pub(super) name: &'a str,
    pub(super) start: Cursor,
    pub(super) epoch: Option<&'a str>,
}

impl<'a> SubscriptionQuery<'a> {
    /// Parses the query; `Last-Event-ID` stands in for a missing `cursor` (an `EventSource`
    /// resumes with the last `id:` it saw, which is a cursor string). Unknown parameters are
    /// ignored, as for one topic; anything malformed is refused with a one-line reason.
    pub(super) fn parse(query: &'a str, last_event_id: Option<&'a str>) -> Result<Self, &'static str> {
        let mut names: Vec<&str> = Vec::new();
        let (mut cursor, mut epoch, mut from_oldest, mut timeout) = (None, None, false, None);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "topic" if !valid_topic_name(value) => return Err(BAD_NAME),
                "topic" if names.contains(&value) => return Err(TWICE),
                "topic" if names.len() == MAX_TOPICS_PER_SUBSCRIPTION => return Err(BAD_TOPICS),
                "topic" => names.push(value),
                "cursor" => cursor = Some(value),
                "epoch" => epoch = Some(value),
                "from" if value == "oldest" => from_oldest = true,
                "from" => return Err("bad poll: from takes only the value oldest\n"),
                "timeout" => {
                    timeout = Some(parse_timeout(value).ok_or("bad poll: timeout must be like 30s or 500ms\n")?);
                }
                _ => {}
            }
        }
        if names.is_empty() {
            return Err(BAD_TOPICS);
        }
        let start = if from_oldest { Cursor::Oldest } else { Cursor::Next };
        let mut topics: Vec<TopicStart> = names.iter().map(|&name| TopicStart { name, start, epoch: None }).collect();
        let (cursor, bad_cursor) = match cursor {
            Some(cursor) => (Some(cursor), BAD_CURSOR),
            None => (last_event_id, BAD_LAST_EVENT_ID),
        };
        if let Some(list) = cursor {
            read_entries(list, &mut topics, |topic, value| {
                topic.start = Cursor::After(parse_seq(value)?);
                Some(())
            })
            .ok_or(bad_cursor)?;
        }
        if let Some(list) = epoch {
            read_entries(list, &mut topics, |topic, value| {
                topic.epoch = Some(value);
                (!value.is_empty() && !value.contains([':', '%'])).then_some(())
            })
            .ok_or(BAD_EPOCH)?;
        }
        Ok(SubscriptionQuery { topics, timeout })
    }
}

/// Reads a list of `topic:value` entries, giving each value to its topic through `set`; `None`
/// if the list is empty, an entry is malformed (`set` says so of its value), or names a topic
/// not polled or one named before.
fn read_entries<'a>(
    list: &'a str,
    topics: &mut [TopicStart<'a>],
    mut set: impl FnMut(&mut TopicStart<'a>, &'a str) -> Option<()>,
) -> Option<()> {
    let mut named = 0u64; // a bit per topic: at most MAX_TOPICS_PER_SUBSCRIPTION of them
    let mut rest = Some(list);
    while let Some(text) = rest {
        let (entry, after) = split_at_separator(text, b',');
        rest = after;
        let (name, value) = split_at_separator(entry, b':');
        let i = topics.iter().position(|topic| topic.name == name)?;
        if named & (1 << i) != 0 {
            return None;
        }
        named |= 1 << i;
        set(&mut topics[i], value?)?;
    }
    Some(())
}

/// Splits `text` at the first `separator` (`:` or `,`), or its percent-encoding in either case
/// (`%3A`, `%2C`): what comes before, and what follows if there was one.
fn split_at_separator(text: &str, separator: u8) -> (&str, Option<&str>) {
    let encoded = if separator == b':' { "%3a" } else { "%2c" };
    let bytes = text.as_bytes();
    for (i, &byte) in bytes.iter().enumerate() {
        if byte == separator {
            return (&text[..i], Some(&text[i + 1..]));
        }
        if byte == b'%' && text.get(i..i + 3).is_some_and(|escape| escape.eq_ignore_ascii_case(encoded)) {
            return (&text[..i], Some(&text[i + 3..]));
        }
    }
    (text, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A topic as a test writes it: `(name, start, epoch)`.
    type Expected = (&'static str, Cursor, Option<&'static str>);

    fn topic(start: &TopicStart<'static>) -> Expected {
        (start.name, start.start, start.epoch)
    }

    #[test]
    fn good_queries() {
        use Cursor::{After, Next, Oldest};
        let cases: [(&str, Option<&str>, Vec<Expected>); 10] = [
            ("topic=A&topic=B", None, vec![("A", Next, None), ("B", Next, None)]),
            ("topic=A&topic=B&cursor=A:42,B:7", None, vec![("A", After(42), None), ("B", After(7), None)]),
            // Entries in any order, parameters in any order; a topic left out starts at the next.
            (
                "cursor=B:7&topic=A&topic=B&topic=c.d_e-f",
                None,
                vec![("A", Next, None), ("B", After(7), None), ("c.d_e-f", Next, None)],
            ),
            ("topic=A&topic=B&from=oldest&cursor=B:0", None, vec![("A", Oldest, None), ("B", After(0), None)]),
            // Percent-encoded separators, as encodeURIComponent sends them.
            ("topic=A&topic=B&cursor=A%3A42%2cB%3a7", None, vec![("A", After(42), None), ("B", After(7), None)]),
            (
                "topic=A&topic=B&epoch=B:3fe-2,A:3fe-1",
                None,
                vec![("A", Next, Some("3fe-1")), ("B", Next, Some("3fe-2"))],
            ),
            ("topic=A&topic=B&epoch=A%3A3fe-1", None, vec![("A", Next, Some("3fe-1")), ("B", Next, None)]),
            // Last-Event-ID stands in for a missing cursor; the query's cursor wins over it.
            ("topic=A&topic=B", Some("A:3,B:4"), vec![("A", After(3), None), ("B", After(4), None)]),
            ("topic=A&topic=B&cursor=A:1", Some("A:3,B:4"), vec![("A", After(1), None), ("B", Next, None)]),
            ("topic=A&_=123&unknown", None, vec![("A", Next, None)]),
        ];
        for (query, last_event_id, expected) in cases {
            let parsed = SubscriptionQuery::parse(query, last_event_id).unwrap_or_else(|e| panic!("{query}: {e}"));
            let topics: Vec<Expected> = parsed.topics.iter().map(topic).collect();
            assert_eq!(topics, expected, "{query} / {last_event_id:?}");
        }
        let timed = SubscriptionQuery::parse("topic=A&timeout=5s", None).unwrap();
        assert_eq!(timed.timeout, Some(Duration::from_secs(5)));
        let sixty_four: String = (0..64).map(|i| format!("topic=t{i}&")).collect();
        assert_eq!(SubscriptionQuery::parse(&sixty_four, None).map(|q| q.topics.len()), Ok(64));
    }

    #[test]
    fn bad_queries_are_refused_with_their_reason() {
        let sixty_five: String = (0..65).map(|i| format!("topic=t{i}&")).collect();
        let cases = [
            ("", None, BAD_TOPICS),
            ("cursor=A:1", None, BAD_TOPICS),
            (sixty_five.as_str(), None, BAD_TOPICS),
            ("topic=", None, BAD_NAME),
            ("topic", None, BAD_NAME),
            ("topic=a/b", None, BAD_NAME),
            ("topic=a%20b", None, BAD_NAME),
            ("topic=A&topic=B&topic=A", None, TWICE),
            ("topic=A&cursor=", None, BAD_CURSOR),
            ("topic=A&cursor=42", None, BAD_CURSOR),
            ("topic=A&cursor=A", None, BAD_CURSOR),
            ("topic=A&cursor=A:", None, BAD_CURSOR),
            ("topic=A&cursor=A:x", None, BAD_CURSOR),
            ("topic=A&cursor=A:-1", None, BAD_CURSOR),
            ("topic=A&cursor=A:1:2", None, BAD_CURSOR),
            ("topic=A&cursor=A:99999999999999999999", None, BAD_CURSOR),
            ("topic=A&cursor=A:1,", None, BAD_CURSOR),
            ("topic=A&cursor=A:1,A:2", None, BAD_CURSOR),
            ("topic=A&cursor=C:1", None, BAD_CURSOR),
            ("topic=A&cursor=A%3", None, BAD_CURSOR),
            ("topic=A&cursor=A%3B1", None, BAD_CURSOR),
            ("topic=A", Some("7"), BAD_LAST_EVENT_ID),
            ("topic=A", Some("A:7,B:1"), BAD_LAST_EVENT_ID),
            ("topic=A&epoch=", None, BAD_EPOCH),
            ("topic=A&epoch=3fe-1", None, BAD_EPOCH),
            ("topic=A&epoch=A:", None, BAD_EPOCH),
            ("topic=A&epoch=A:e:f", None, BAD_EPOCH),
            ("topic=A&epoch=A:e%3Af", None, BAD_EPOCH),
            ("topic=A&epoch=A:e,A:e", None, BAD_EPOCH),
            ("topic=A&epoch=B:e", None, BAD_EPOCH),
            ("topic=A&from=newest", None, "bad poll: from takes only the value oldest\n"),
            ("topic=A&timeout=soon", None, "bad poll: timeout must be like 30s or 500ms\n"),
        ];
        for (query, last_event_id, reason) in cases {
            assert_eq!(SubscriptionQuery::parse(query, last_event_id), Err(reason), "{query} / {last_event_id:?}");
        }
        for reason in [BAD_TOPICS, BAD_NAME, TWICE, BAD_CURSOR, BAD_LAST_EVENT_ID, BAD_EPOCH] {
            assert!(reason.ends_with('\n') && reason.matches('\n').count() == 1, "one line: {reason:?}");
        }
    }

    #[test]
    fn separators_are_found_plain_or_percent_encoded() {
        for (text, separator, expected) in [
            ("A:1", b':', ("A", Some("1"))),
            ("A%3A1", b':', ("A", Some("1"))),
            ("A%3a1", b':', ("A", Some("1"))),
            ("A%2C1", b':', ("A%2C1", None)),
            ("A:1,B:2", b',', ("A:1", Some("B:2"))),
            ("A:1%2CB:2", b',', ("A:1", Some("B:2"))),
            ("A%2", b',', ("A%2", None)),
            ("", b',', ("", None)),
            ("ü%2c", b',', ("ü", Some(""))),
        ] {
            assert_eq!(split_at_separator(text, separator), expected, "{text}");
        }
    }
}
