// Engine.IO protocol v3 (socket.io-client 2.x) at `/engine.io/` of
// `quckchat conformance` started with ALLOW_EIO3=true. Written from the Engine.IO v3
// protocol document: the `len:packet` string payload (lengths in UTF-16 code units, as
// JavaScript counts them), `b4` base64 binary packets and the XHR2 binary payload, the
// client-driven heartbeat (the client pings, the server answers), close and upgrade.

import assert from 'node:assert/strict';
import { after, afterEach, before, describe, test } from 'node:test';
import { setTimeout as pace } from 'node:timers/promises';

import { startConformance } from './process.mjs';
import {
  MAX_PAYLOAD,
  PING_INTERVAL,
  PING_TIMEOUT,
  Polling,
  RawWs,
  decodeV3Binary,
  expectWsRefused,
  openWs,
  pendingPoll,
  request,
  socketTracker,
} from './raw.mjs';

const T = { timeout: 20_000 };
/** A v3 client pings a little more often than pingInterval, as socket.io-client 2.x does. */
const CLIENT_PING_EVERY = Math.round(PING_INTERVAL * 0.8);

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

const eio = (query) => `${base}/engine.io/?${query}`;
const v3 = (options = {}) => Polling.open(base, { eio: 3, ...options });
const ws = (options = {}) => openWs(base, { eio: 3, ...options }).then((s) => (sockets.add(s.ws), s));

function assertHandshake(h, upgrades) {
  assert.deepEqual(Object.keys(h).sort(), ['maxPayload', 'pingInterval', 'pingTimeout', 'sid', 'upgrades']);
  assert.equal(typeof h.sid, 'string');
  assert.ok(h.sid.length > 0);
  assert.deepEqual(h.upgrades, upgrades);
  assert.equal(h.pingInterval, PING_INTERVAL);
  assert.equal(h.pingTimeout, PING_TIMEOUT);
  assert.equal(h.maxPayload, MAX_PAYLOAD);
}

describe('handshake', () => {
  test('polling: `<length>:0{...}` with the handshake keys and values', T, async () => {
    const session = await v3();
    const text = session.handshakeResponse.text;
    const colon = text.indexOf(':');
    assert.ok(colon > 0, text);
    assert.equal(Number(text.slice(0, colon)), text.length - colon - 1, 'the length prefix counts the packet');
    assert.ok(text.slice(colon + 1).startsWith('0{'), text);
    assertHandshake(session.handshake, ['websocket']);
  });

  test('websocket: the OPEN packet is a plain frame, no length prefix', T, async () => {
    const { handshake } = await ws();
    assertHandshake(handshake, []);
  });

  test('ALLOW_EIO3=true keeps Engine.IO v4 served on the same endpoint', T, async () => {
    const res = await request('GET', eio('EIO=4&transport=polling'));
    assert.equal(res.status, 200);
    assert.ok(res.text.startsWith('0{'), res.text);
  });

  test('400 for a bad transport, a non-GET handshake and an unknown sid', T, async () => {
    assert.equal((await request('GET', eio('EIO=3'))).status, 400);
    assert.equal((await request('GET', eio('EIO=3&transport=abc'))).status, 400);
    assert.equal(await expectWsRefused(eio('EIO=3&transport=abc').replace(/^http/, 'ws')), 400);
    assert.equal((await request('POST', eio('EIO=3&transport=polling'), { body: '1:2' })).status, 400);
    assert.equal((await request('PUT', eio('EIO=3&transport=polling'))).status, 400);
    assert.equal((await request('GET', eio('EIO=3&transport=polling&sid=AAAAAAAAAAAAAAAA'))).status, 400);
    assert.equal((await request('POST', eio('EIO=3&transport=polling&sid=AAAAAAAAAAAAAAAA'), { body: '1:2' })).status, 400);
  });
});

describe('payload framing', () => {
  test('one packet `6:4hello` is echoed as `6:4hello`; a POST answers "ok"', T, async () => {
    const session = await v3();
    const post = await session.post('6:4hello');
    assert.equal(post.status, 200);
    assert.equal(post.text, 'ok');
    const poll = await session.get();
    assert.equal(poll.status, 200);
    assert.equal(poll.text, '6:4hello');
  });

  test('several packets in one payload come back in order, in one payload', T, async () => {
    const session = await v3();
    assert.equal((await session.post('6:4test16:4test26:4test3')).status, 200);
    assert.equal((await session.get()).text, '6:4test16:4test26:4test3');
  });

  test('lengths count UTF-16 code units, as JavaScript does (`2:4€`, `3:4🚀`)', T, async () => {
    const session = await v3();
    assert.equal((await session.post('2:4€3:4🚀9:4héllo wö')).status, 200);
    assert.equal((await session.get()).text, '2:4€3:4🚀9:4héllo wö');
  });

  test('b64=1: a base64 binary packet `b4…` is echoed as `b4…` beside text', T, async () => {
    const session = await v3({ query: '&b64=1' });
    assert.equal((await session.post('6:4hello10:b4AQIDBA==')).status, 200);
    assert.equal((await session.get()).text, '6:4hello10:b4AQIDBA==');
  });

  test('without b64, binary comes back as an XHR2 binary payload', T, async () => {
    const session = await v3();
    assert.equal((await session.post('10:b4AQIDBA==')).status, 200);
    const poll = await session.get();
    assert.equal(poll.status, 200);
    assert.equal(poll.contentType, 'application/octet-stream');
    // 1 = binary, the length 5 as one byte per digit, 255, type 4, the data.
    assert.deepEqual([...poll.bytes], [1, 5, 255, 4, 1, 2, 3, 4]);
    assert.deepEqual(decodeV3Binary(poll.bytes).map((b) => [...b]), [[1, 2, 3, 4]]);
  });

  test('an XHR2 binary payload is accepted in a POST', T, async () => {
    const session = await v3({ query: '&b64=1' });
    const body = Buffer.concat([
      Buffer.from([1, 5, 255, 4, 1, 2, 3, 4]),
      Buffer.from([0, 6, 255]),
      Buffer.from('4hello'),
    ]);
    const post = await session.post(body, { 'content-type': 'application/octet-stream' });
    assert.equal(post.status, 200);
    assert.equal((await session.get()).text, '10:b4AQIDBA==6:4hello');
  });

  test('an invalid payload ends the session', T, async () => {
    for (const body of ['abc', '9:4hello', 'x:4hello']) {
      const session = await v3();
      const post = await session.post(body);
      assert.ok(post.status === 400 || post.status === 0, `POST ${JSON.stringify(body)}: HTTP ${post.status}`);
      assert.equal((await session.get()).status, 400, `the session after ${JSON.stringify(body)}`);
    }
  });

  test('websocket: text is echoed; a binary frame carries the message type 4 in its first byte', T, async () => {
    const { ws: socket } = await ws();
    socket.send('4hello €');
    assert.equal(await socket.next(), '4hello €');
    socket.send(Buffer.from([4, 1, 2, 3]));
    const frame = await socket.next();
    assert.ok(Buffer.isBuffer(frame));
    assert.deepEqual([...frame], [4, 1, 2, 3]);
  });

  test('websocket: an invalid packet closes the connection', T, async () => {
    const { ws: socket } = await ws();
    socket.send('abc');
    await socket.expectClose();
  });
});

describe('heartbeat (the client pings)', () => {
  test('websocket: every PING gets a PONG; the server never pings; pings keep the session alive', T, async () => {
    const { ws: socket } = await ws();
    const started = Date.now();
    for (let i = 0; i < 3; i++) {
      socket.send('2');
      assert.equal(await socket.next(), '3', 'the answer to a PING is a PONG (and nothing came before it)');
      await pace(CLIENT_PING_EVERY);
    }
    assert.ok(Date.now() - started > PING_INTERVAL + PING_TIMEOUT, 'the exchange outlived one ping timeout');
    socket.send('4alive');
    assert.equal(await socket.next(), '4alive');
  });

  test('polling: `1:2` is answered with `1:3`, three times, and the session stays', T, async () => {
    const session = await v3();
    const started = Date.now();
    for (let i = 0; i < 3; i++) {
      const post = await session.post('1:2');
      assert.equal(post.status, 200);
      const poll = await session.get();
      assert.equal(poll.status, 200);
      assert.equal(poll.text, '1:3');
      await pace(CLIENT_PING_EVERY);
    }
    assert.ok(Date.now() - started > PING_INTERVAL + PING_TIMEOUT);
    assert.equal((await session.post('7:4alive!')).status, 200);
    assert.equal((await session.get()).text, '7:4alive!');
  });

  test('websocket: without client pings the session ends after pingInterval + pingTimeout', T, async () => {
    const { ws: socket } = await ws();
    const opened = Date.now();
    const { at } = await socket.expectClose(PING_INTERVAL + PING_TIMEOUT + 3000);
    assert.ok(at - opened >= PING_INTERVAL + PING_TIMEOUT - 100, `closed after ${at - opened} ms`);
    assert.ok(!socket.frames.includes('2'), `a v3 server never pings; it sent ${JSON.stringify(socket.frames)}`);
    for (const frame of socket.frames) assert.equal(frame, '1', 'at most a CLOSE packet before the end');
  });

  test('polling: without client pings the session ends after pingInterval + pingTimeout', T, async () => {
    const session = await v3();
    const opened = Date.now();
    const seen = await session.untilGone(PING_INTERVAL + PING_TIMEOUT + 3000);
    assert.ok(Date.now() - opened >= PING_INTERVAL + PING_TIMEOUT - 100, `gone after ${Date.now() - opened} ms`);
    for (const body of seen) assert.ok(body === '1:1' || body === '1:6', `before the end: ${JSON.stringify(body)}`);
  });
});

describe('close, concurrent polls, upgrade', () => {
  test('polling: `1:1` ends the pending poll with `1:6`, then the sid is unknown', T, async (t) => {
    for (let attempt = 1; ; attempt++) {
      const session = await v3();
      const poll = await pendingPoll(session);
      const post = await session.post('1:1');
      assert.equal(post.status, 200, `POST 1:1: ${post.text}`);
      const pending = await poll.response;
      if (pending.status === 400 && attempt < 5) {
        t.diagnostic(`attempt ${attempt}: the poll reached the server after the CLOSE; again`);
        continue;
      }
      assert.equal(pending.status, 200);
      assert.equal(pending.text, '1:6');
      assert.equal((await session.get()).status, 400);
      return;
    }
  });

  test('websocket: a CLOSE packet closes the connection', T, async () => {
    const { ws: socket } = await ws();
    socket.send('1');
    await socket.expectClose();
  });

  test('a second concurrent GET is an error and closes the session', T, async () => {
    const session = await v3();
    const first = await pendingPoll(session);
    const second = await request('GET', `${session.url}&t=burst`);
    const firstRes = await first.response;
    // Whichever reached the server first is the pending poll: it ends with a CLOSE packet.
    const [held, refused] = firstRes.status === 200 ? [firstRes, second] : [second, firstRes];
    assert.equal(held.status, 200, `the held poll: HTTP ${held.status} ${held.text}`);
    assert.equal(held.text, '1:1');
    assert.ok(refused.status === 400 || refused.status === 500, `the concurrent poll: HTTP ${refused.status}`);
    assert.equal((await session.get()).status, 400);
  });

  test('upgrade: `2probe`/`3probe`, `1:6` on the pending poll, `5`, then the websocket carries messages', T, async () => {
    const session = await v3();
    const poll = await pendingPoll(session);
    const socket = sockets.add(new RawWs(session.wsUrl));
    await socket.opened;
    socket.send('2probe');
    assert.equal(await socket.next(), '3probe');
    const pending = await poll.response;
    assert.equal(pending.status, 200);
    assert.equal(pending.text, '1:6');
    socket.send('5');
    socket.send('4hello');
    assert.equal(await socket.next(), '4hello');
    socket.send('2');
    assert.equal(await socket.next(), '3');
    assert.equal((await session.get()).status, 400, 'polling with the upgraded sid');
  });
});
