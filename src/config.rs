//! The server's limits and timeouts, parsed and validated once at start-up.
//!
//! Invariant: every `Config` the server sees is valid (non-zero timeouts and limits), so the
//! reactor never re-checks them.

use std::net::SocketAddr;
use std::time::Duration;

use crate::http::cors::MAX_LISTED_ORIGINS;
use crate::token::TokenKey;

/// What `tether serve` runs with; `tether serve --help` gives the defaults and which follow nginx,
/// and docs/long-polling.md tables the topic limits.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// Reactors, each on its own thread with its own listener on `listen` (docs/scale-out.md).
    pub workers: usize,
    /// `keepalive_timeout`: close a keep-alive connection idle this long.
    pub idle_timeout: Duration,
    /// `client_header_timeout`: a request (head and body) must arrive whole within this -> 408.
    pub header_timeout: Duration,
    /// `send_timeout`: a peer that accepts no bytes for this long is dropped.
    pub write_timeout: Duration,
    /// `keepalive_requests`: requests served on one connection before `Connection: close`.
    pub max_requests: u32,
    /// Connections open at once; `None` means the open-file limit minus `FD_RESERVE`.
    pub max_connections: Option<usize>,
    /// Long polls held at once; `None` means `max_connections`.
    pub max_held: Option<usize>,
    /// Hold time of a long poll that asks for none.
    pub poll_timeout: Duration,
    /// Upper bound on a client's `timeout=`.
    pub max_poll_timeout: Duration,
    /// Messages retained per topic.
    pub topic_capacity: usize,
    /// Topics that may exist.
    pub max_topics: usize,
    /// Message data kept across all topics, as stored (`pubsub::Topics::retained_bytes`); past
    /// it the oldest messages of the largest rings go first.
    pub max_retained_bytes: usize,
    /// A topic with no held poll and no publish for this long is forgotten, its epoch too.
    pub topic_idle_timeout: Duration,
    pub max_head_bytes: usize,
    pub max_message_bytes: usize,
    /// How long a graceful shutdown waits for in-flight work.
    pub drain_timeout: Duration,
    /// An idle event stream gets a comment this often, so that proxies and browsers see it live.
    pub sse_heartbeat: Duration,
    /// Browser origins (`scheme://host[:port]`, or `*` for any) whose pages may read polls and
    /// event streams across origins (CORS).
    pub allow_origin: Vec<String>,
    /// `--jwt-secret`: when set, publishing, subscribing and the cost view need a token.
    pub tokens: Option<TokenKey>,
    /// `--redis`: the topics' log lives in Redis at this URL, shared by every process that names
    /// it (docs/scale-out.md).
    pub redis: Option<String>,
}

/// `*`, or an origin as a browser sends it: `http://` or `https://`, a host, an optional port,
/// no path, no trailing slash.
fn is_origin_or_any(origin: &str) -> bool {
    if origin == "*" {
        return true;
    }
    let Some(authority) = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://")) else {
        return false;
    };
    !authority.is_empty() && authority.bytes().all(|c| c.is_ascii_alphanumeric() || b".-:[]".contains(&c))
}

/// The shortest hold a client may ask for with `timeout=`.
pub const MIN_POLL_TIMEOUT: Duration = Duration::from_secs(1);

/// The shortest `--topic-idle-timeout`: topics are swept at most once a second, so a shorter
/// one would not be kept anyway.
pub const MIN_TOPIC_IDLE_TIMEOUT: Duration = Duration::from_secs(1);

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;
const GIB: usize = 1024 * MIB;

/// Descriptors kept back from `--max-connections` for the listener, epoll, the signal pipe,
/// stdio, `/proc` reads while answering `/stats`, and the spare used to answer a 503.
pub const FD_RESERVE: usize = 32;
/// More reactors than this would not find cores to run on, and each takes a thread, an epoll
/// instance and its share of the descriptors.
pub const MAX_WORKERS: usize = 64;

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            workers: 1,
            idle_timeout: Duration::from_secs(75),
            header_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            max_requests: 1000,
            max_connections: None,
            max_held: None,
            poll_timeout: Duration::from_secs(30),
            max_poll_timeout: Duration::from_secs(120),
            topic_capacity: 1024,
            max_topics: 100_000,
            max_retained_bytes: 256 * MIB,
            topic_idle_timeout: Duration::from_secs(3600),
            max_head_bytes: 16 * 1024,
            max_message_bytes: 64 * 1024,
            drain_timeout: Duration::from_secs(5),
            sse_heartbeat: Duration::from_secs(15),
            allow_origin: Vec::new(),
            tokens: None,
            redis: None,
        }
    }
}

impl Config {
    pub fn validate(&self) -> Result<(), String> {
        let durations = [
            ("--idle-timeout", self.idle_timeout),
            ("--header-timeout", self.header_timeout),
            ("--write-timeout", self.write_timeout),
            ("--sse-heartbeat", self.sse_heartbeat),
        ];
        if let Some((name, _)) = durations.iter().find(|(_, d)| d.is_zero()) {
            return Err(format!("{name} must be greater than zero"));
        }
        if let Some(url) = &self.redis {
            crate::redis_log::Endpoint::parse(url).map_err(|e| format!("--redis: {e}"))?;
        }
        if !(1..=MAX_WORKERS).contains(&self.workers) {
            return Err(format!("--workers must lie between 1 and {MAX_WORKERS}"));
        }
        if self.max_requests == 0 {
            return Err("--max-requests must be at least 1".into());
        }
        if self.max_connections == Some(0) {
            return Err("--max-connections must be at least 1".into());
        }
        if self.max_poll_timeout < MIN_POLL_TIMEOUT {
            return Err("--max-poll-timeout must be at least 1s".into());
        }
        if self.poll_timeout < MIN_POLL_TIMEOUT || self.poll_timeout > self.max_poll_timeout {
            return Err("--poll-timeout must lie between 1s and --max-poll-timeout".into());
        }
        if self.topic_capacity == 0 || self.max_topics == 0 {
            return Err("--topic-capacity and --max-topics must be at least 1".into());
        }
        if self.max_message_bytes > self.max_retained_bytes {
            // Else one message could not be kept even with every other one evicted.
            return Err("--max-message-bytes must not exceed --max-retained-bytes".into());
        }
        if self.topic_idle_timeout < MIN_TOPIC_IDLE_TIMEOUT {
            return Err("--topic-idle-timeout must be at least 1s".into());
        }
        if self.allow_origin.len() > MAX_LISTED_ORIGINS {
            return Err(format!("--allow-origin is given more than {MAX_LISTED_ORIGINS} times"));
        }
        if let Some(bad) = self.allow_origin.iter().find(|origin| !is_origin_or_any(origin)) {
            // A browser sends `Origin` as scheme://host[:port], nothing more; anything else
            // given here would never match, and the mistake would pass silently.
            return Err(format!("--allow-origin {bad:?}: an origin is scheme://host[:port] (no path), or *"));
        }
        if self.max_head_bytes < 64 {
            return Err("--max-head-bytes must be at least 64".into());
        }
        Ok(())
    }
}

/// Parses a duration with a unit: `500ms`, `30s`, `2m`, `1h`. A bare number is refused, because
/// `--idle-timeout 30` is ambiguous to a reader who knows nginx (seconds) and curl (milliseconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number.parse().map_err(|_| format!("'{text}' is not a duration like 500ms, 30s or 2m"))?;
    let millis = match unit {
        "ms" => Some(value),
        "s" => value.checked_mul(1000),
        "m" => value.checked_mul(60_000),
        "h" => value.checked_mul(3_600_000),
        "" => return Err(format!("'{text}' needs a unit: ms, s, m or h")),
        _ => return Err(format!("'{text}' has an unknown unit '{unit}' (use ms, s, m or h)")),
    };
    millis.map(Duration::from_millis).ok_or_else(|| format!("'{text}' is too long"))
}

/// Parses a size: plain bytes (`65536`) or a whole number of binary units (`64KiB`, `256MiB`,
/// `1GiB`). Decimal units (`MB`) are refused rather than guessed at.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: usize = number.parse().map_err(|_| format!("'{text}' is not a size like 65536, 64KiB or 256MiB"))?;
    let scale = match unit {
        "" => 1,
        "KiB" => KIB,
        "MiB" => MIB,
        "GiB" => GIB,
        _ => return Err(format!("'{text}' has an unknown unit '{unit}' (use KiB, MiB, GiB or none for bytes)")),
    };
    value.checked_mul(scale).ok_or_else(|| format!("'{text}' is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_a_known_unit() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in ["", "30", "s", "-1s", "1.5s", "10 s", "3d", "99999999999999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn sizes_are_bytes_or_binary_units() {
        let table = [
            ("65536", Ok(65536)),
            ("0", Ok(0)),
            ("64KiB", Ok(64 * 1024)),
            ("256MiB", Ok(256 * 1024 * 1024)),
            ("1GiB", Ok(1 << 30)),
        ];
        for (text, expected) in table {
            assert_eq!(parse_size(text), expected, "{text}");
        }
        for bad in ["", "KiB", "64kib", "64KB", "64 KiB", "1.5MiB", "-1", "64K", "99999999999999999999GiB"] {
            assert!(parse_size(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(parse_size(&format!("{}GiB", usize::MAX / 1024)).unwrap_err().contains("too large"));
    }

    #[test]
    fn validation_names_the_option() {
        let config = Config { idle_timeout: Duration::ZERO, ..Config::default() };
        assert!(config.validate().unwrap_err().contains("--idle-timeout"));
        let config = Config { max_requests: 0, ..Config::default() };
        assert!(config.validate().unwrap_err().contains("--max-requests"));
        let config = Config { max_message_bytes: 2 * KIB, max_retained_bytes: KIB, ..Config::default() };
        assert!(config.validate().unwrap_err().contains("--max-retained-bytes"));
        let config = Config { max_message_bytes: KIB, max_retained_bytes: KIB, ..Config::default() };
        assert!(config.validate().is_ok(), "one message may fill the whole bound");
        let config = Config { topic_idle_timeout: Duration::from_millis(999), ..Config::default() };
        assert!(config.validate().unwrap_err().contains("--topic-idle-timeout"));
        assert!(Config::default().validate().is_ok());
    }

    #[test]
    fn allowed_origins_are_origins_or_any() {
        let origins =
            |list: &[&str]| Config { allow_origin: list.iter().map(|o| o.to_string()).collect(), ..Config::default() };
        for good in ["*", "http://127.0.0.1:8000", "https://example.com", "http://[::1]:3000"] {
            assert!(origins(&[good]).validate().is_ok(), "{good}");
        }
        for bad in ["example.com", "http://example.com/", "http://a.b/page", "ftp://x", "http://", "null", ""] {
            assert!(origins(&[bad]).validate().unwrap_err().contains("--allow-origin"), "{bad}");
        }
    }
}
