//! The server side of Engine.IO (v4 and v3) and Socket.IO (v5 and v4), written for idle
//! memory near zero and fan-out at the syscall floor (issue 12). It knows nothing of chat:
//! QuckChat's gateway sits on top of it as it sits on socketioxide today.
//!
//! Built bottom-up, each layer pure and tested on its own before the next uses it:
//! - [`ws`]: RFC 6455 framing for a server — frames decoded in place from a caller's
//!   buffer (the connection keeps bytes only for a partial message), server frames encoded
//!   once into shared [`bytes::Bytes`];
//! - [`eio`]: Engine.IO packets, WebSocket frames and long-polling payloads of both
//!   protocol versions, and the handshake;
//! - [`sio`]: Socket.IO packets, borrowed from the frame that carried them (the JSON
//!   arguments are handed on as raw text, parsed once by whoever knows their type), with
//!   binary attachments.

pub mod direct;
pub mod eio;
pub mod engine;
pub mod http;
mod polling;
pub mod sio;
pub mod transport;
pub mod upgrade;
pub mod ws;
