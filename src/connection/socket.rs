//! A connection after a WebSocket upgrade (RFC 6455), in the machine: frames in, frames out,
//! pings from the one timer. What a message means (subscribe, unsubscribe, publish) is the
//! endpoints' business; the frames, their faults and the closing handshake are the machine's.
//!
//! The frame reader (`ws::frame::read`) keeps no state between calls: the fragments of an
//! unfinished message wait in the input buffer until its last one arrives, like a request
//! waiting for its body. So a socket carries only what the timer and the endpoints need, and
//! the state that carries it is no larger than a held poll's.
//!
//! Invariants:
//! - A socket's subscription (`hold`) is ended exactly once, by whatever ends the socket: a
//!   close frame either way, a fault, a timeout, a drain, a hang-up (`Connection::close`).
//! - Its timer is the earlier of the next ping (or, a ping unanswered, the deadline of its
//!   pong) and the end of its token (`ends`).
//! - No frame is read while `OUTPUT_CAP` bytes wait for the peer: a client that sends without
//!   reading cannot grow our memory.

use super::interface::{deadline_after, Endpoints, Turn};
use super::{CloseReason, EndSecond, OUTPUT_CAP};
use crate::buffer::Buffers;
use crate::pubsub::HoldKey;
use crate::timer::Tick;
use crate::ws::frame::{self, CloseCode, Incoming};

/// An open WebSocket. Packed to 4-byte alignment, like `Wait`, so that the state carrying it
/// stays within a held poll's 28 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C, packed(4))]
pub struct Socket {
    /// The subscription of its topics, which the endpoints keep (`HoldKey::many`).
    pub hold: HoldKey,
    /// When to ping next; or, with `pong_due`, by when the pong must have come.
    pub ping_at: Tick,
    /// When its token expires (`EndSecond::NEVER` without tokens).
    pub ends: EndSecond,
    /// A ping was sent and no pong has come since.
    pub pong_due: bool,
}

impl Socket {
    /// A socket on subscription `hold`, its first ping one heartbeat after `now`.
    pub fn new(hold: HoldKey, now: Tick, heartbeat: std::time::Duration, ends: EndSecond) -> Socket {
        Socket { hold, ping_at: deadline_after(now, heartbeat), ends, pong_due: false }
    }

    /// When its timer fires: the next ping, or the end of its token.
    pub fn deadline(&self) -> Tick {
        self.ping_at.min(self.ends.tick())
    }
}

/// Reads every complete frame of the input and answers it, then sends what the socket's topics
/// have for it, and a ping when one is due. Returns why the socket ends, if it does: its close
/// frame is then in the output.
pub(super) fn converse<E: Endpoints>(
    socket: &mut Socket,
    buffers: &mut Buffers,
    turn: &mut Turn<E>,
) -> Option<CloseReason> {
    if let Some(reason) = read_frames(socket, buffers, turn) {
        return Some(reason);
    }
    let out = buffers.output();
    if socket.ends.tick() <= turn.now {
        frame::write_close(out, CloseCode::PolicyViolation, "the token has expired");
        return Some(CloseReason::TokenExpired);
    }
    feed(socket, out, turn);
    if socket.ping_at <= turn.now {
        if socket.pong_due {
            // The peer did not answer the last ping within a heartbeat: it is gone, or too slow
            // to be kept.
            frame::write_close(out, CloseCode::GoingAway, "no pong");
            return Some(CloseReason::PingTimeout);
        }
        frame::write_ping(out, b"");
        socket.pong_due = true;
        socket.ping_at = deadline_after(turn.now, turn.settings.heartbeat);
    }
    None
}

/// Writes what the socket's topics have for it (batch after batch while the output has room),
/// and lists it on them again once it has sent everything.
fn feed<E: Endpoints>(socket: &Socket, out: &mut Vec<u8>, turn: &mut Turn<E>) {
    while out.len() < OUTPUT_CAP && !turn.endpoints.still_waiting(turn.key, socket.hold) {
        turn.endpoints.socket_news(turn.key, socket, out, turn.now);
    }
}

/// Answers the complete frames of the input, in order, until the output is full. What a
/// message makes due (a subscribe's backlog) is sent before the next message is answered, so
/// that answers come in the order of what they answer.
fn read_frames<E: Endpoints>(socket: &mut Socket, buffers: &mut Buffers, turn: &mut Turn<E>) -> Option<CloseReason> {
    while buffers.pending_output().len() < OUTPUT_CAP {
        let (input, out) = buffers.split_mut();
        let (incoming, consumed) = match frame::read(input, turn.settings.limits.max_body_bytes) {
            Ok(Some(read)) => read,
            Ok(None) => return None,
            Err(fault) => {
                frame::write_close(out, fault.code, fault.reason);
                buffers.discard_input();
                return Some(CloseReason::Error);
            }
        };
        let ends = match incoming {
            Incoming::Text(text) => {
                turn.endpoints.socket_message(turn.key, socket, text, out, turn.now);
                feed(socket, out, turn);
                None
            }
            Incoming::Binary(_) => {
                frame::write_close(out, CloseCode::UnsupportedData, "messages are JSON text");
                Some(CloseReason::Error)
            }
            Incoming::Ping(payload) => {
                frame::write_pong(out, payload);
                None
            }
            Incoming::Pong(_) => {
                socket.pong_due = false;
                None
            }
            Incoming::Close { .. } => {
                // The closing handshake's answer; the TCP connection closes after it.
                frame::write_close(out, CloseCode::Normal, "");
                Some(CloseReason::ByClient)
            }
        };
        buffers.consume(consumed);
        if ends.is_some() {
            buffers.discard_input();
            return ends;
        }
    }
    None
}
