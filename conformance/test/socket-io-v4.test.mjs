// Socket.IO protocol v4 over Engine.IO v3 (what socket.io-client 2.x speaks) at
// `/socket.io/` of `quckchat conformance` with ALLOW_EIO3=true, raw. Written from the
// Socket.IO protocol document's "difference between v5 and v4": the main namespace is
// joined implicitly, a CONNECT reply carries no payload, a refusal (ERROR) carries a plain
// string; over Engine.IO v3 a binary WebSocket frame starts with the message type (4).

import assert from 'node:assert/strict';
import { after, afterEach, before, describe, test } from 'node:test';

import { startConformance } from './process.mjs';
import { PING_INTERVAL, Polling, openWs, socketTracker } from './raw.mjs';

const T = { timeout: 20_000 };
/** How often these sockets ping, as a socket.io-client 2.x would (the server never does). */
const CLIENT_PING_EVERY = Math.round(PING_INTERVAL * 0.6);

let server;
let base;
const sockets = socketTracker();

before(async () => {
  server = await startConformance({ ALLOW_EIO3: 'true' });
  base = server.url;
});
afterEach(() => sockets.closeAll());
after(async () => {
  sockets.closeAll();
  if (server) await server.stop();
});

/** An Engine.IO v3 WebSocket at /socket.io/ that pings; resolves after the implicit `/` join. */
async function joined() {
  const { ws, handshake } = await openWs(base, { path: 'socket.io', eio: 3, clientPings: CLIENT_PING_EVERY });
  sockets.add(ws);
  const connect = await ws.next();
  const auth = await ws.next();
  return { ws, handshake, connect, auth };
}

describe('connect', () => {
  test('the main namespace is joined without a CONNECT from the client: `40`, then `auth` {}', T, async () => {
    const { connect, auth, handshake } = await joined();
    assert.equal(connect, '40', 'a v4 CONNECT reply has no payload');
    assert.equal(auth, '42["auth",{}]');
    assert.deepEqual(handshake.upgrades, []);
  });

  test('over polling (b64): OPEN, then `40` and `auth` in `len:packet` framing', T, async () => {
    const session = await Polling.open(base, { path: 'socket.io', eio: 3, query: '&b64=1' });
    assert.match(session.handshakeResponse.text, /^\d+:0\{/);
    assert.deepEqual(await session.receive(2), ['40', '42["auth",{}]']);
  });

  test('/custom: `40/custom,` is answered with `40/custom,`, then `auth`', T, async () => {
    const { ws } = await joined();
    ws.send('40/custom,');
    assert.equal(await ws.next(), '40/custom,');
    assert.equal(await ws.next(), '42/custom,["auth",{}]');
  });

  // Protocol v4 (socket.io 2.x) sent the message as a bare string (`44/random,"…"`);
  // socketioxide sends the v5 object (`{"message":"…"}`), which the socket.io-protocol
  // repository's own v4 suite also expects. socket.io-client 2.x hands either to its
  // `error` event, so both are accepted.
  test('an unknown namespace gets an ERROR packet "Invalid namespace"; the connection stays', T, async () => {
    const { ws } = await joined();
    ws.send('40/random,');
    const frame = await ws.next();
    assert.ok(frame.startsWith('44/random,'), `expected an ERROR packet for /random, got ${JSON.stringify(frame)}`);
    const data = JSON.parse(frame.slice('44/random,'.length));
    assert.equal(typeof data === 'string' ? data : data.message, 'Invalid namespace');
    ws.send('42["message","still here"]');
    assert.equal(await ws.next(), '42["message-back","still here"]');
  });

  test('DISCONNECT from /custom leaves the main namespace connected', T, async () => {
    const { ws } = await joined();
    ws.send('40/custom,');
    assert.equal(await ws.next(), '40/custom,');
    assert.equal(await ws.next(), '42/custom,["auth",{}]');
    ws.send('41/custom,');
    ws.send('42["message","main"]');
    assert.equal(await ws.next(), '42["message-back","main"]');
  });
});

describe('events and acks', () => {
  test('`message` → `message-back` with the same arguments', T, async () => {
    const { ws } = await joined();
    ws.send('42["message",1,"2",{"3":[true]},"é€🚀"]');
    assert.equal(await ws.next(), '42["message-back",1,"2",{"3":[true]},"é€🚀"]');
  });

  test('binary: the attachment frames start with the message type 4, both ways', T, async () => {
    const { ws } = await joined();
    ws.send('452-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]');
    ws.send(Buffer.from([4, 1, 2, 3]));
    ws.send(Buffer.from([4, 4, 5, 6]));
    const [header, first, second] = await ws.take(3);
    assert.equal(header, '452-["message-back",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]');
    assert.deepEqual([...first], [4, 1, 2, 3]);
    assert.deepEqual([...second], [4, 4, 5, 6]);
  });

  test('acks, plain and with binary (BINARY_ACK)', T, async () => {
    const { ws } = await joined();
    ws.send('4233["message-with-ack",1,"2"]');
    assert.equal(await ws.next(), '4333[1,"2"]');
    ws.send('451-7["message-with-ack",{"_placeholder":true,"num":0}]');
    ws.send(Buffer.from([4, 1, 2, 3]));
    const [header, data] = await ws.take(2);
    assert.equal(header, '461-7[{"_placeholder":true,"num":0}]');
    assert.deepEqual([...data], [4, 1, 2, 3]);
  });

  test('over polling (b64): a binary event with a `b4` attachment comes back as `b4`', T, async () => {
    const session = await Polling.open(base, { path: 'socket.io', eio: 3, query: '&b64=1' });
    await session.receive(2);
    const header = '451-["message",{"_placeholder":true,"num":0}]';
    const post = await session.post([header, Buffer.from([1, 2, 3])]);
    assert.equal(post.status, 200);
    const [back, data] = await session.receive(2);
    assert.equal(back, '451-["message-back",{"_placeholder":true,"num":0}]');
    assert.deepEqual([...data], [1, 2, 3]);
  });

  test('over polling (XHR2): a binary attachment comes back as a binary packet', T, async () => {
    const session = await Polling.open(base, { path: 'socket.io', eio: 3 });
    await session.receive(2);
    const post = await session.post(['451-["message",{"_placeholder":true,"num":0}]', Buffer.from([1, 2, 3])]);
    assert.equal(post.status, 200);
    const [back, data] = await session.receive(2);
    assert.equal(back, '451-["message-back",{"_placeholder":true,"num":0}]');
    assert.ok(Buffer.isBuffer(data), `the attachment came as ${JSON.stringify(data)}`);
    assert.deepEqual([...data], [1, 2, 3]);
  });

  test('an invalid packet closes the connection', T, async () => {
    const { ws } = await joined();
    ws.send('42{}');
    await ws.expectClose();
  });
});
