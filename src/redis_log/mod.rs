//! The shared topic log (`--redis redis://HOST:PORT[/DB]`): each topic's ring of messages, its
//! seqs and its epoch kept in Redis, so that several tether processes serve the same topics with
//! the same cursors, and a restarted one resumes without a reset (docs/scale-out.md, "Topics in
//! Redis").
//!
//! ```text
//!   reactor ── publish(ticket, topic, data): a channel send ──┐
//!                                                             v
//!   subscription thread ── Subscribed, Notice, Unsubscribed ─> command thread ── Report ─> sink
//!   (SUBSCRIBE {prefix}:news)                                 (EVALSHA pipelines, sync)
//! ```
//!
//! Why threads and not RESP in the reactor's loop: the loop would need a second kind of
//! connection machine beside the HTTP one, reconnect timers and script loading; two threads
//! with the `redis` crate's blocking client keep the reactor's shape, and the crate does the
//! protocol. The cost is one channel hop each way, which pipelining amortises: the command
//! thread sends every publish queued while it waited as one pipeline, and writes the next one
//! before it reads the replies to the last.
//!
//! Invariants:
//! - The reactor never waits on Redis: `publish` is a channel send and `status` reads atomics.
//!   Everything the link has to say reaches the sink from the command thread, one report at a
//!   time, in one order (`link.rs`).
//! - Every publish gets exactly one `Acked` or `Refused`, with its ticket. "Acked" means the
//!   script returned: the message is in Redis, as durable as Redis's own persistence makes it
//!   (`appendonly yes` with `appendfsync always` loses nothing acknowledged). `Refused` means
//!   not stored *or outcome unknown* (the connection failed before the reply): a client that
//!   retries may store a message twice. Delivery is at least once.
//! - After a `Synced`, every append by any process is reported once as `Appended`, in Redis's
//!   order, without a gap within an epoch (`timeline.rs`); a `Lost` is followed, once Redis is
//!   back, by a `Synced` that supersedes everything before it.
//! - Per topic `T`, under the prefix P: `P:{T}:meta` (a hash: `epoch`, `seq`) and `P:{T}:log`
//!   (a stream, entry `SEQ-0`, field `d`, capped near `--topic-capacity`), both expiring
//!   `--topic-idle-timeout` after the last append; every append and every sync's read marks go
//!   to the channel `P:news` (`notice.rs`). A topic whose keys expired starts a new life with a
//!   new epoch, so old cursors are reset, never misread.

mod endpoint;
mod link;
mod notice;
mod store;
mod subscriber;
mod timeline;

pub use endpoint::{Endpoint, UrlError};
pub use notice::valid_prefix;

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo};

use link::{CommandThread, Input};
use notice::KeySpace;
use store::{Layout, Publish};

/// The prefix of every key unless told otherwise.
pub const DEFAULT_PREFIX: &str = "tether";
/// How many bytes of publishes (topic and data) may wait for the link unless told otherwise:
/// a thousand of the largest messages `--max-message-bytes` allows by default.
pub const DEFAULT_MAX_QUEUED_BYTES: usize = 64 * 1024 * 1024;
/// The longest wait between two attempts to reach Redis (the waits start at 100 ms, double,
/// and are jittered: `backoff.rs`).
pub const RECONNECT_CAP: Duration = Duration::from_secs(5);

/// The bounds of every topic's log, the same for every process that shares it.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// `--topic-capacity`: a `Synced` holds at most the newest `capacity` messages of a topic.
    /// Redis keeps them and at most one stream node more (`XADD MAXLEN ~`: docs/scale-out.md
    /// says why).
    pub capacity: usize,
    /// `--topic-idle-timeout`: a topic's keys expire this long after its last append.
    pub idle_timeout: Duration,
    /// The prefix of every key and of the channel; tests use a fresh one each.
    pub prefix: String,
    /// Publishes beyond this many bytes waiting for the link (a Redis that is slow to answer)
    /// are refused at once.
    pub max_queued_bytes: usize,
}

impl LogSettings {
    pub fn new(capacity: usize, idle_timeout: Duration) -> LogSettings {
        LogSettings {
            capacity,
            idle_timeout,
            prefix: DEFAULT_PREFIX.to_string(),
            max_queued_bytes: DEFAULT_MAX_QUEUED_BYTES,
        }
    }
}

/// What the link tells the rest of tether, through the sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// Connected (the first time, or again after a `Lost`): every topic Redis keeps under the
    /// prefix, as it is now. Supersedes whatever came before.
    Synced { topics: Vec<TopicLog> },
    /// A connection was lost (or the notices showed a hole); reconnecting. Publishes are
    /// refused until the next `Synced`.
    Lost { reason: String },
    /// A message appended by any process, this one included.
    Appended { topic: Arc<str>, epoch: Arc<str>, seq: u64, data: Arc<str> },
    /// Our publish is in Redis.
    Acked { ticket: u64, epoch: Arc<str>, seq: u64 },
    /// Our publish was not stored, or its fate is unknown; the client may retry.
    Refused { ticket: u64 },
}

/// One topic as a sync found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicLog {
    pub name: Arc<str>,
    pub epoch: Arc<str>,
    /// The newest seq of this life (messages may have been pushed out, never renumbered).
    pub last_seq: u64,
    /// The messages retained, oldest first, contiguous, the last one `last_seq` (or none).
    pub messages: Vec<(u64, Arc<str>)>,
}

/// Where reports go. Called from the command thread only.
pub type Sink = Arc<dyn Fn(Report) + Send + Sync>;

/// Whether publishes can be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Never synced yet.
    Starting,
    /// Synced: publishes are stored, appends reported.
    Up,
    /// Lost `since`; `attempts` to reconnect have failed since.
    Down { since: Instant, attempts: u64 },
}

/// What /stats shows of the link. Each number is exact; together they are not one instant's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkStatus {
    pub state: LinkState,
    /// `publish` calls.
    pub published: u64,
    pub acked: u64,
    pub refused: u64,
    /// `Appended` reports (by every process).
    pub appended: u64,
    /// Times the link came back up after being lost.
    pub reconnects: u64,
}

/// Why `start` refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartError {
    Url(UrlError),
    /// The prefix is not 1 to 64 of `A-Z a-z 0-9 . _ - :` (`valid_prefix`).
    Prefix(String),
    /// The client or a thread could not be set up.
    Client(String),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Url(error) => error.fmt(f),
            StartError::Prefix(prefix) => {
                write!(f, "the Redis key prefix {prefix:?} must be 1 to 64 of A-Z a-z 0-9 . _ - :")
            }
            StartError::Client(reason) => write!(f, "the Redis client cannot start: {reason}"),
        }
    }
}

impl std::error::Error for StartError {}

impl From<UrlError> for StartError {
    fn from(error: UrlError) -> Self {
        StartError::Url(error)
    }
}

/// The link's state and counters, written by the threads, read by `status`.
#[derive(Debug)]
struct Shared {
    origin: Instant,
    /// `STARTING`, `UP` or `DOWN`.
    state: AtomicU8,
    /// When the link went down, in nanoseconds after `origin`.
    down_since: AtomicU64,
    attempts: AtomicU64,
    published: AtomicU64,
    acked: AtomicU64,
    refused: AtomicU64,
    appended: AtomicU64,
    reconnects: AtomicU64,
    /// Whether the link has ever been up (a later `Synced` is a reconnect).
    ever_up: AtomicBool,
    /// Publishes queued for the command thread and not taken yet.
    queue: QueueBound,
}

/// The bytes of publishes queued for the command thread, and their bound: a Redis that is slow
/// to answer makes publishes wait in the channel, and without a bound a flood would grow it
/// without end. Taken by `RedisLog::publish`, given back when the command thread takes them.
#[derive(Debug)]
struct QueueBound {
    max: usize,
    queued: AtomicUsize,
}

impl QueueBound {
    fn new(max: usize) -> QueueBound {
        QueueBound { max, queued: AtomicUsize::new(0) }
    }

    /// Counts `bytes` in, if they fit.
    fn admit(&self, bytes: usize) -> bool {
        let admitted = self.queued.fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
            queued.checked_add(bytes).filter(|&total| total <= self.max)
        });
        admitted.is_ok()
    }

    fn release(&self, bytes: usize) {
        self.queued.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// What a publish counts for in the queue's bound.
fn queued_size(publish: &Publish) -> usize {
    publish.topic.len() + publish.data.len()
}

const STARTING: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

impl Shared {
    fn new(max_queued_bytes: usize) -> Shared {
        Shared {
            origin: Instant::now(),
            state: AtomicU8::new(STARTING),
            down_since: AtomicU64::new(0),
            attempts: AtomicU64::new(0),
            published: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            appended: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            ever_up: AtomicBool::new(false),
            queue: QueueBound::new(max_queued_bytes),
        }
    }

    fn set_up(&self) {
        if self.ever_up.swap(true, Ordering::Relaxed) {
            self.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        self.attempts.store(0, Ordering::Relaxed);
        self.state.store(UP, Ordering::Release);
    }

    fn set_down(&self) {
        let since = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.down_since.store(since, Ordering::Relaxed);
        self.attempts.store(0, Ordering::Relaxed);
        self.state.store(DOWN, Ordering::Release);
    }

    /// Counts a failed attempt to connect, and returns how many in a row. The first one after
    /// start is also when the link is first known down.
    fn count_failed_attempt(&self) -> u64 {
        if self.state.load(Ordering::Acquire) == STARTING {
            self.set_down();
        }
        self.attempts.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn count_acked(&self) {
        self.acked.fetch_add(1, Ordering::Relaxed);
    }

    fn count_refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    fn count_appended(&self) {
        self.appended.fetch_add(1, Ordering::Relaxed);
    }

    /// The command thread took `batch` off the queue.
    fn taken(&self, batch: &[Publish]) {
        self.queue.release(batch.iter().map(queued_size).sum());
    }
}

/// The link to Redis: two threads, a channel in, the sink out.
pub struct RedisLog {
    inputs: Sender<Input>,
    shared: Arc<Shared>,
    /// Refuses publishes itself if the command thread is gone (it panicked).
    sink: Sink,
    stop: Arc<AtomicBool>,
    command_thread: Option<JoinHandle<()>>,
    endpoint: Endpoint,
}

impl RedisLog {
    /// Parses the URL, starts the threads and returns at once: connecting happens in the
    /// background, retried after 100 ms, doubling to `RECONNECT_CAP`, jittered.
    pub fn start(url: &str, settings: LogSettings, sink: Sink) -> Result<RedisLog, StartError> {
        let endpoint = Endpoint::parse(url)?;
        if !valid_prefix(&settings.prefix) {
            return Err(StartError::Prefix(settings.prefix));
        }
        let info = connection_info(&endpoint).map_err(|error| StartError::Client(error.to_string()))?;
        let keys = KeySpace::new(&settings.prefix);
        let layout = Layout {
            keys: keys.clone(),
            capacity: settings.capacity.max(1),
            // PEXPIRE 0 would delete the keys at once.
            idle_ms: u64::try_from(settings.idle_timeout.as_millis()).unwrap_or(u64::MAX).max(1),
        };
        let shared = Arc::new(Shared::new(settings.max_queued_bytes));
        let stop = Arc::new(AtomicBool::new(false));
        let (inputs, received) = mpsc::channel();
        let seed = RandomState::new().hash_one(std::process::id());

        let command = CommandThread::new(info.clone(), layout, received, sink.clone(), shared.clone(), seed);
        let command_thread = thread::Builder::new()
            .name("redis-commands".into())
            .spawn(move || command.run())
            .map_err(|error| StartError::Client(error.to_string()))?;
        let (notices, stopping, channel) = (inputs.clone(), stop.clone(), keys.news());
        // Not joined: it never calls the sink, and it sees `stop` within `subscriber::QUIET`.
        thread::Builder::new()
            .name("redis-subscription".into())
            .spawn(move || subscriber::run(info, channel, notices, stopping))
            .map_err(|error| StartError::Client(error.to_string()))?;
        Ok(RedisLog { inputs, shared, sink, stop, command_thread: Some(command_thread), endpoint })
    }

    /// Queues a publish; never blocks. Its outcome reaches the sink as `Acked` or `Refused`
    /// with the same ticket: refused at once, from this thread, if the queue is full
    /// (`LogSettings::max_queued_bytes`).
    pub fn publish(&self, ticket: u64, topic: &str, data: Arc<str>) {
        self.shared.published.fetch_add(1, Ordering::Relaxed);
        let publish = Publish { ticket, topic: Arc::from(topic), data };
        let size = queued_size(&publish);
        if self.shared.queue.admit(size) {
            if self.inputs.send(Input::Publish(publish)).is_ok() {
                return;
            }
            self.shared.queue.release(size); // the command thread is gone
        }
        self.shared.count_refused();
        (self.sink)(Report::Refused { ticket });
    }

    /// The link's state and counters, from atomics.
    pub fn status(&self) -> LinkStatus {
        let shared = &self.shared;
        let state = match shared.state.load(Ordering::Acquire) {
            STARTING => LinkState::Starting,
            UP => LinkState::Up,
            _ => LinkState::Down {
                since: shared.origin + Duration::from_nanos(shared.down_since.load(Ordering::Relaxed)),
                attempts: shared.attempts.load(Ordering::Relaxed),
            },
        };
        LinkStatus {
            state,
            published: shared.published.load(Ordering::Relaxed),
            acked: shared.acked.load(Ordering::Relaxed),
            refused: shared.refused.load(Ordering::Relaxed),
            appended: shared.appended.load(Ordering::Relaxed),
            reconnects: shared.reconnects.load(Ordering::Relaxed),
        }
    }

    /// Where Redis is, as parsed (for logs and /stats; it holds no secret).
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }
}

impl Drop for RedisLog {
    /// Every publish queued so far gets its outcome first; the wait is bounded by the command
    /// connection's deadlines (`store::REPLY_TIMEOUT`). The sink is not called after this.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.inputs.send(Input::Stop);
        if let Some(thread) = self.command_thread.take() {
            // The last owner of the log may let go of it inside the sink, on this very thread,
            // which cannot wait for itself (it stops once it reads `Stop`).
            if thread.thread().id() != thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

/// Plain TCP without Nagle's delay (a pipeline is one write; its replies should not wait), the
/// database, and no client name (it would cost a round trip per connect).
fn connection_info(endpoint: &Endpoint) -> redis::RedisResult<ConnectionInfo> {
    let info = ConnectionAddr::Tcp(endpoint.host.clone(), endpoint.port).into_connection_info()?;
    Ok(info
        .set_redis_settings(RedisConnectionInfo::default().set_db(i64::from(endpoint.db)).set_skip_set_lib_name())
        .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_admits_up_to_its_bound_and_again_once_publishes_are_taken() {
        let bound = QueueBound::new(100);
        assert!(bound.admit(60));
        assert!(bound.admit(40));
        assert!(!bound.admit(1), "full");
        bound.release(60);
        assert!(!bound.admit(61));
        assert!(bound.admit(60));
        bound.release(100);
        assert!(!bound.admit(usize::MAX), "an overflow is not room");
        assert!(bound.admit(100));
    }
}
