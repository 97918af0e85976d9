//! What travels on the news channel, `{prefix}:news`, and the names of a topic's keys.
//!
//! Two kinds of notice, told apart by their first byte (a topic name never starts with `=`):
//!
//! ```text
//!   appended:  TOPIC SP EPOCH SP SEQ LF DATA      written by publish.lua for every append
//!   read mark: "=" SYNC SP TOPIC LF               written by read.lua where a sync read TOPIC
//! ```
//!
//! Invariants:
//! - The header is one line of names and numbers; the data follows its newline byte for byte, so
//!   any text (newlines, spaces, `=`) travels unchanged and no escaping is ever needed.
//! - `decode` accepts only what tether writes: a valid topic name (`pubsub::valid_topic_name`),
//!   an epoch of 1 to 64 hex digits and `-` (`valid_epoch`: the server writes epochs into JSON
//!   and queries unescaped), a seq from 1 without sign or leading zero, and UTF-8 data. Anything
//!   else under the prefix is someone else's and is refused, not guessed at.
//! - A topic's two keys share the hash tag `{TOPIC}`, so a script that names both stays in one
//!   cluster slot.

use std::fmt;

use crate::pubsub::valid_topic_name;

/// Longest epoch accepted from Redis.
pub const MAX_EPOCH_LEN: usize = 64;

/// One decoded notice, borrowing the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice<'a> {
    /// A message was appended (by any process).
    Appended { topic: &'a str, epoch: &'a str, seq: u64, data: &'a str },
    /// Sync `sync` read `topic` here: notices about it before this one are in that read.
    ReadMark { sync: &'a str, topic: &'a str },
}

/// Why a payload is not a notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeError {
    NoHeader,
    BadHeader,
    BadTopic,
    BadEpoch,
    BadSeq,
    DataNotUtf8,
}

impl fmt::Display for NoticeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self {
            NoticeError::NoHeader => "no header line",
            NoticeError::BadHeader => "a header that is not `TOPIC EPOCH SEQ` or `=SYNC TOPIC`",
            NoticeError::BadTopic => "an invalid topic name",
            NoticeError::BadEpoch => "an invalid epoch",
            NoticeError::BadSeq => "an invalid seq",
            NoticeError::DataNotUtf8 => "data that is not UTF-8",
        };
        f.write_str(what)
    }
}

/// Parses one payload from the news channel.
pub fn decode(payload: &[u8]) -> Result<Notice<'_>, NoticeError> {
    let newline = payload.iter().position(|&b| b == b'\n').ok_or(NoticeError::NoHeader)?;
    let header = std::str::from_utf8(&payload[..newline]).map_err(|_| NoticeError::BadHeader)?;
    let body = &payload[newline + 1..];
    if let Some(mark) = header.strip_prefix('=') {
        let (sync, topic) = mark.split_once(' ').ok_or(NoticeError::BadHeader)?;
        if sync.is_empty() || !sync.bytes().all(|c| c.is_ascii_hexdigit()) || !body.is_empty() {
            return Err(NoticeError::BadHeader);
        }
        if !valid_topic_name(topic) {
            return Err(NoticeError::BadTopic);
        }
        return Ok(Notice::ReadMark { sync, topic });
    }
    let mut fields = header.split(' ');
    let (Some(topic), Some(epoch), Some(seq), None) = (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(NoticeError::BadHeader);
    };
    if !valid_topic_name(topic) {
        return Err(NoticeError::BadTopic);
    }
    if !valid_epoch(epoch) {
        return Err(NoticeError::BadEpoch);
    }
    let seq = parse_seq(seq).ok_or(NoticeError::BadSeq)?;
    let data = std::str::from_utf8(body).map_err(|_| NoticeError::DataNotUtf8)?;
    Ok(Notice::Appended { topic, epoch, seq, data })
}

/// The payload read.lua publishes for sync `sync` reading `topic`.
pub fn read_mark(sync: &str, topic: &str) -> String {
    format!("={sync} {topic}\n")
}

/// 1 to 64 hex digits and `-`: what tether makes, and safe to write anywhere unescaped.
pub fn valid_epoch(epoch: &str) -> bool {
    (1..=MAX_EPOCH_LEN).contains(&epoch.len()) && epoch.bytes().all(|c| c.is_ascii_hexdigit() || c == b'-')
}

/// A seq as Redis writes one: decimal, from 1, no sign, no leading zero.
pub fn parse_seq(text: &str) -> Option<u64> {
    if text.starts_with('0') || !text.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The keys and the channel of one prefix.
#[derive(Debug, Clone)]
pub struct KeySpace {
    prefix: String,
}

impl KeySpace {
    pub fn new(prefix: &str) -> KeySpace {
        KeySpace { prefix: prefix.to_string() }
    }

    /// `{prefix}:{TOPIC}:meta`: a hash of `epoch` and `seq`.
    pub fn meta(&self, topic: &str) -> String {
        format!("{}:{{{topic}}}:meta", self.prefix)
    }

    /// `{prefix}:{TOPIC}:log`: a stream whose entry `SEQ-0` holds the message in field `d`.
    pub fn log(&self, topic: &str) -> String {
        format!("{}:{{{topic}}}:log", self.prefix)
    }

    /// `{prefix}:news`: where every append and read mark is published.
    pub fn news(&self) -> String {
        format!("{}:news", self.prefix)
    }

    /// The SCAN pattern that matches every meta key. The prefix may hold no glob character
    /// (`valid_prefix`), so it needs no escaping.
    pub fn meta_pattern(&self) -> String {
        format!("{}:{{*}}:meta", self.prefix)
    }

    /// The topic a meta key belongs to, if it is one of ours with a valid name.
    pub fn topic_of_meta<'k>(&self, key: &'k str) -> Option<&'k str> {
        let topic = key.strip_prefix(self.prefix.as_str())?.strip_prefix(":{")?.strip_suffix("}:meta")?;
        valid_topic_name(topic).then_some(topic)
    }
}

/// A key prefix: 1 to 64 of `A-Z a-z 0-9 . _ - :`, so that it is neither a glob pattern in a
/// SCAN nor a hash tag.
pub fn valid_prefix(prefix: &str) -> bool {
    (1..=64).contains(&prefix.len())
        && prefix.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-' | b':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_decode_to_notices_or_are_refused() {
        let appended = |topic, epoch, seq, data| Ok(Notice::Appended { topic, epoch, seq, data });
        let cases: &[(&[u8], Result<Notice<'_>, NoticeError>)] = &[
            (b"news 9f3a-1 1\nhello", appended("news", "9f3a-1", 1, "hello")),
            (b"a.b_c-d 0123abcdef 42\n", appended("a.b_c-d", "0123abcdef", 42, "")),
            (b"t e 7\nline one\nline two\n", appended("t", "e", 7, "line one\nline two\n")),
            (b"t e 7\n=x y\n", appended("t", "e", 7, "=x y\n")),
            (b"t e 18446744073709551615\n \xc3\xa9 ", appended("t", "e", u64::MAX, " \u{e9} ")),
            (b"=00ff news\n", Ok(Notice::ReadMark { sync: "00ff", topic: "news" })),
            (b"t e 1", Err(NoticeError::NoHeader)),
            (b"", Err(NoticeError::NoHeader)),
            (b"t e\n", Err(NoticeError::BadHeader)),
            (b"t e 1 x\n", Err(NoticeError::BadHeader)),
            (b"t  e 1\n", Err(NoticeError::BadHeader)),
            (b"t/x e 1\n", Err(NoticeError::BadTopic)),
            (b" e 1\n", Err(NoticeError::BadTopic)),
            (b"t E-g 1\n", Err(NoticeError::BadEpoch)),
            (b"t e 0\n", Err(NoticeError::BadSeq)),
            (b"t e 01\n", Err(NoticeError::BadSeq)),
            (b"t e +1\n", Err(NoticeError::BadSeq)),
            (b"t e 18446744073709551616\n", Err(NoticeError::BadSeq)),
            (b"t e 1\n\xff", Err(NoticeError::DataNotUtf8)),
            (b"t \xff 1\n", Err(NoticeError::BadHeader)),
            (b"=00ff\n", Err(NoticeError::BadHeader)),
            (b"= news\n", Err(NoticeError::BadHeader)),
            (b"=xyz news\n", Err(NoticeError::BadHeader)),
            (b"=00ff news\nextra", Err(NoticeError::BadHeader)),
            (b"=00ff bad/name\n", Err(NoticeError::BadTopic)),
        ];
        for (payload, expected) in cases {
            assert_eq!(&decode(payload), expected, "{:?}", String::from_utf8_lossy(payload));
        }
        let long_epoch = format!("t {} 1\n", "a".repeat(MAX_EPOCH_LEN + 1));
        assert_eq!(decode(long_epoch.as_bytes()), Err(NoticeError::BadEpoch));
    }

    #[test]
    fn a_read_mark_decodes_to_what_was_encoded() {
        let mark = read_mark("0a1b", "topic.1");
        assert_eq!(decode(mark.as_bytes()), Ok(Notice::ReadMark { sync: "0a1b", topic: "topic.1" }));
    }

    #[test]
    fn keys_share_the_topic_hash_tag_and_name_their_topic_back() {
        let keys = KeySpace::new("tether:test");
        assert_eq!(keys.meta("news"), "tether:test:{news}:meta");
        assert_eq!(keys.log("news"), "tether:test:{news}:log");
        assert_eq!(keys.news(), "tether:test:news");
        assert_eq!(keys.meta_pattern(), "tether:test:{*}:meta");
        let cases = [
            ("tether:test:{news}:meta", Some("news")),
            ("tether:test:{a.b-c_d}:meta", Some("a.b-c_d")),
            ("tether:test:{news}:log", None),
            ("tether:other:{news}:meta", None),
            ("tether:test:{}:meta", None),
            ("tether:test:{x:y}:meta", None),
            ("tether:test:news", None),
        ];
        for (key, topic) in cases {
            assert_eq!(keys.topic_of_meta(key), topic, "{key}");
        }
    }

    #[test]
    fn prefixes_are_plain_names() {
        for (prefix, valid) in [
            ("tether", true),
            ("app:tether-2.x_y", true),
            ("", false),
            ("a*", false),
            ("a{b}", false),
            ("a b", false),
            ("a?", false),
            ("a[b]", false),
        ] {
            assert_eq!(valid_prefix(prefix), valid, "{prefix:?}");
        }
        assert!(!valid_prefix(&"p".repeat(65)));
    }
}
