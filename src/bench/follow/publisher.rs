//! The publisher of `follow`: `POST /publish/T "message i"` for each message of the schedule, on
//! a keep-alive connection of its own, pipelined, never delayed by the server's answers.
//!
//! Invariants:
//! - Message i is written once it is due, whatever became of the earlier ones: `written` of
//!   them are, and the first `answered` were answered 200 (HTTP/1.1 answers pipelined requests
//!   in order).
//! - When an answer ends the connection (`Connection: close`: tether's `--max-requests`, 1,000
//!   by default, ends any run of more messages), the publishes written after it were not read:
//!   they are written again, in order, on a new connection, and keep their scheduled times (the
//!   delay is charged to their latency). Any other end of the connection, and any answer but
//!   200, ends the run (`Watch::fatal`).

use std::time::Instant;

use super::{message_data, Role, Watch};
use crate::bench::engine::Engine;
use crate::bench::frame::Frame;

/// The publisher's connection and how far the schedule got on it.
pub(super) struct Publisher {
    key: usize,
    /// Publishes written so far: the index of the next one in `Watch::schedule`.
    pub(super) written: usize,
    answered: usize,
}

impl Publisher {
    /// Its connection, opened in the engine's next turn.
    pub(super) fn open(engine: &mut Engine<Role>) -> Publisher {
        Publisher { key: engine.open(Role::Publisher, b""), written: 0, answered: 0 }
    }
}

impl Watch {
    /// `POST /publish/T` of message `index`.
    fn publish(&self, index: usize) -> String {
        self.plan.publisher().publish(&self.plan.topic, &message_data(index))
    }

    /// Writes every publish due by `now`.
    ///
    /// # Errors
    ///
    /// When the write fails: without the publisher nothing is measured.
    pub(super) fn publish_due(&mut self, engine: &mut Engine<Role>, now: Instant) -> Result<(), String> {
        while self.schedule.get(self.publisher.written).is_some_and(|&at| at <= now) {
            let request = self.publish(self.publisher.written);
            engine.send(self.publisher.key, request.as_bytes()).map_err(|e| format!("publisher: {e}"))?;
            self.publisher.written += 1;
        }
        Ok(())
    }

    /// A publish was answered on connection `key`: counted, or the end of the run if refused;
    /// when the answer ends the connection, what was written after it goes out on a new one.
    pub(super) fn published(&mut self, engine: &mut Engine<Role>, key: usize, frame: &Frame) {
        if frame.status != 200 {
            let body = String::from_utf8_lossy(engine.bytes(key, &frame.body)).trim().to_string();
            self.fatal.get_or_insert(format!("a publish was answered {}: {body}", frame.status));
            return;
        }
        self.publisher.answered += 1;
        if frame.close {
            engine.close(key);
            let unread: String = (self.publisher.answered..self.publisher.written).map(|i| self.publish(i)).collect();
            self.publisher.key = engine.open(Role::Publisher, unread.as_bytes());
        }
    }
}
