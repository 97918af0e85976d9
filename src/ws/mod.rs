//! WebSocket (RFC 6455, version 13) without sockets: `handshake` decides whether a parsed
//! request may become a WebSocket and computes the key that proves the answer, `frame` turns a
//! connection's unread bytes into messages and control frames and writes the server's frames.
//!
//! Like `http`, nothing in here reads or writes a socket, and nothing is kept between calls:
//! the only state of a connection's WebSocket side that lives here is the bytes of its input
//! buffer. The rules, each with its RFC reason, are listed in `docs/http.md` ("WebSocket").

pub mod frame;
pub mod handshake;
