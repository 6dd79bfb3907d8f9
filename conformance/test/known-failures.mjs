// Protocol cases the server is known to fail, each the reason of a `todo` test: the test
// still runs and prints its failure (`# TODO` in the output) without failing the suite.
// When one starts to pass, remove its entry and the `todo` that uses it.

export const KNOWN = {
  immediateFirstPing:
    'engineioxide 0.17.9 sends the first PING at once after the OPEN packet instead of one ' +
    'pingInterval later: heartbeat_job_v4 (src/socket.rs) calls tokio::time::interval(interval)' +
    '.tick().await, whose first tick completes immediately. Needs a fix in engineioxide.',
  socketIdIsEngineSid:
    'socketioxide 0.18 gives a Socket.IO socket (on every namespace) the Engine.IO session ' +
    'id as its id; protocol v5 makes them differ, so that a socket id, which apps share, ' +
    'never lets anyone else poll or post on the Engine.IO session. QuckChat keeps socket ' +
    'ids to itself (they are internal device ids), so nothing leaks today. Needs socketioxide.',
  v3PollingBinaryAttachments:
    'engineioxide 0.17.9: Socket.IO binary attachments (sent through Permit::emit_many, which ' +
    'always builds Packet::Binary) reach an Engine.IO v3 polling client as `b<base64>` (the v4 ' +
    'form) in a string payload, and as a *text* packet in an XHR2 binary payload, instead of ' +
    '`b4<base64>` / a binary packet. socket.io-client 2.x over polling cannot read them (over ' +
    'WebSocket they are right). Socket::emit_binary does pick Packet::BinaryV3 for v3; the ' +
    'Permit methods do not. Needs a fix in engineioxide.',
};
