//! The subscription thread: one connection SUBSCRIBEd to the news channel, whose every message
//! it hands to the command thread as it comes, and which it keeps alive.
//!
//! Invariants:
//! - It says `Subscribed` only once Redis has confirmed the SUBSCRIBE, so every notice published
//!   after that instant reaches the command thread, which syncs only then; and it says
//!   `Unsubscribed` when a subscription it announced ends, so the two never disagree on
//!   whether notices are complete.
//! - A dead Redis is noticed within `2 * QUIET`: after `QUIET` without a message it sends PING,
//!   and a PING unanswered for another `QUIET` ends the connection. A silent but live channel
//!   costs one PING per `QUIET`.
//! - It keeps no state of the log and never calls the sink: what a notice means is the command
//!   thread's business (`timeline.rs`). It stops when told to (`stop`, seen within `QUIET`) or
//!   when the command thread is gone (its channel closed).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use log::{debug, warn};
use redis::{ConnectionInfo, RedisResult, Value};

use super::link::Input;
use super::store::CONNECT_TIMEOUT;
use super::RECONNECT_CAP;
use crate::backoff::Backoff;

/// Silence after which the subscription checks that Redis is still there.
pub const QUIET: Duration = Duration::from_secs(1);

/// Why `listen` returned.
enum End {
    /// Told to stop, or nobody listens any more.
    Stopped,
    /// The connection failed; the reason is for the log and for `Lost`.
    Failed(String),
}

/// Runs until `stop` is set or the command thread is gone.
pub fn run(info: ConnectionInfo, channel: String, inputs: Sender<Input>, stop: Arc<AtomicBool>) {
    let mut backoff = Backoff::capped(RECONNECT_CAP);
    while !stop.load(Ordering::Relaxed) {
        let mut announced = false;
        let end = match connect(&info) {
            Ok(mut connection) => listen(&mut connection, &channel, &inputs, &stop, &mut announced),
            Err(error) => End::Failed(error.to_string()),
        };
        match end {
            End::Stopped => return,
            End::Failed(reason) if announced => {
                warn!("redis: subscription lost: {reason}");
                backoff.reset();
                if inputs.send(Input::Unsubscribed { reason }).is_err() {
                    return;
                }
            }
            End::Failed(reason) => debug!("redis: cannot subscribe: {reason}"),
        }
        thread::sleep(backoff.next_delay());
    }
}

fn connect(info: &ConnectionInfo) -> RedisResult<redis::Connection> {
    let connection = redis::Client::open(info.clone())?.get_connection_with_timeout(CONNECT_TIMEOUT)?;
    connection.set_write_timeout(Some(QUIET))?;
    Ok(connection)
}

/// Subscribes, announces it, then forwards every message until the connection fails.
fn listen(
    connection: &mut redis::Connection,
    channel: &str,
    inputs: &Sender<Input>,
    stop: &AtomicBool,
    announced: &mut bool,
) -> End {
    let mut subscription = connection.as_pubsub();
    let failed = |error: redis::RedisError| End::Failed(error.to_string());
    if let Err(error) = subscription.set_read_timeout(Some(QUIET)).and_then(|()| subscription.subscribe(channel)) {
        return failed(error);
    }
    if inputs.send(Input::Subscribed).is_err() {
        return End::Stopped;
    }
    *announced = true;
    loop {
        if stop.load(Ordering::Relaxed) {
            return End::Stopped;
        }
        match subscription.get_message() {
            Ok(message) => {
                if inputs.send(Input::Notice(message.get_payload_bytes().to_vec())).is_err() {
                    return End::Stopped;
                }
            }
            // Quiet for QUIET: the answer to a PING must come within another QUIET (messages
            // that arrive first are kept for `get_message`).
            Err(error) if error.is_timeout() => {
                if let Err(error) = subscription.ping::<Value>() {
                    return failed(error);
                }
            }
            Err(error) => return failed(error),
        }
    }
}
