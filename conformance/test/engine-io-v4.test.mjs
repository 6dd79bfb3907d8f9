// Engine.IO protocol v4 at `/engine.io/` of `quckchat conformance` (an echo server),
// over raw HTTP long-polling and raw WebSocket. Written from the Engine.IO v4 protocol
// document: handshake, transports and their errors, payload framing, heartbeat, close,
// upgrade, and what a broken client gets.
//
// Each test talks to one server started for this file (ALLOW_EIO3 unset: v3 is refused).

import assert from 'node:assert/strict';
import { after, afterEach, before, describe, test } from 'node:test';

import { startConformance } from './process.mjs';
import {
  MAX_PAYLOAD,
  PING_INTERVAL,
  PING_TIMEOUT,
  Polling,
  RawWs,
  SEPARATOR,
  expectWsRefused,
  expectWsTurnedAway,
  openWs,
  pendingPoll,
  request,
  socketTracker,
} from './raw.mjs';

const T = { timeout: 20_000 };

let server;
let base;
const sockets = socketTracker();

before(async () => {
  server = await startConformance();
  base = server.url;
});
afterEach(() => sockets.closeAll());
after(async () => {
  sockets.closeAll();
  if (server) await server.stop();
});

const eio = (query) => `${base}/engine.io/?${query}`;
const ws = (options) => openWs(base, options).then((s) => (sockets.add(s.ws), s));

/** A polling session whose first PING has been answered (the first comes one pingInterval after the handshake). */
async function quietPolling() {
  const session = await Polling.open(base);
  const first = await session.get();
  assert.equal(first.status, 200);
  if (first.packets.includes('2')) assert.equal((await session.post(['3'])).status, 200);
  return session;
}

function assertHandshake(h, upgrades) {
  assert.deepEqual(Object.keys(h).sort(), ['maxPayload', 'pingInterval', 'pingTimeout', 'sid', 'upgrades']);
  assert.equal(typeof h.sid, 'string');
  assert.ok(h.sid.length > 0, 'sid is not empty');
  assert.deepEqual(h.upgrades, upgrades);
  assert.equal(h.pingInterval, PING_INTERVAL);
  assert.equal(h.pingTimeout, PING_TIMEOUT);
  assert.equal(h.maxPayload, MAX_PAYLOAD);
}

describe('handshake', () => {
  test('polling: OPEN packet with sid, upgrades [websocket], pingInterval 300, pingTimeout 200, maxPayload 1e6', T, async () => {
    const session = await Polling.open(base);
    assert.equal(session.handshakeResponse.status, 200);
    assert.match(session.handshakeResponse.contentType, /^text\/plain/);
    assert.ok(session.handshakeResponse.text.startsWith('0{'), session.handshakeResponse.text);
    assertHandshake(session.handshake, ['websocket']);
  });

  test('websocket: OPEN packet as the first frame, no upgrades', T, async () => {
    const { handshake } = await ws();
    assertHandshake(handshake, []);
  });

  test('every handshake opens a new session with its own sid', T, async () => {
    const a = await Polling.open(base);
    const b = await Polling.open(base);
    const { handshake: c } = await ws();
    assert.equal(new Set([a.sid, b.sid, c.sid]).size, 3);
  });

  test('400 for a missing or invalid EIO, and for EIO=3 (ALLOW_EIO3 is off in this profile)', T, async () => {
    for (const query of ['transport=polling', 'EIO=abc&transport=polling', 'EIO=5&transport=polling', 'EIO=3&transport=polling']) {
      const res = await request('GET', eio(query));
      assert.equal(res.status, 400, `GET ?${query}: ${res.text}`);
    }
    for (const query of ['transport=websocket', 'EIO=abc&transport=websocket', 'EIO=3&transport=websocket']) {
      assert.equal(await expectWsRefused(eio(query).replace(/^http/, 'ws')), 400, `WebSocket ?${query}`);
    }
  });

  test('400 for a missing or unknown transport', T, async () => {
    for (const query of ['EIO=4', 'EIO=4&transport=abc', 'EIO=4&transport=flashsocket']) {
      const res = await request('GET', eio(query));
      assert.equal(res.status, 400, `GET ?${query}: ${res.text}`);
    }
    for (const query of ['EIO=4', 'EIO=4&transport=abc']) {
      assert.equal(await expectWsRefused(eio(query).replace(/^http/, 'ws')), 400, `WebSocket ?${query}`);
    }
  });

  test('400 for a handshake with another method than GET', T, async () => {
    for (const method of ['POST', 'PUT', 'DELETE']) {
      const res = await request(method, eio('EIO=4&transport=polling'));
      assert.equal(res.status, 400, `${method}: ${res.text}`);
    }
    const session = await Polling.open(base);
    const put = await request('PUT', session.url, { body: '4x' });
    assert.equal(put.status, 400, `PUT with a sid: ${put.text}`);
  });

  test('400 for an unknown or malformed sid, over polling and websocket', T, async () => {
    for (const sid of ['AAAAAAAAAAAAAAAA', 'test', '']) {
      const get = await request('GET', eio(`EIO=4&transport=polling&sid=${sid}`));
      assert.equal(get.status, 400, `GET sid=${sid}: ${get.text}`);
      const post = await request('POST', eio(`EIO=4&transport=polling&sid=${sid}`), { body: '4hello' });
      assert.equal(post.status, 400, `POST sid=${sid}: ${post.text}`);
    }
    // A WebSocket with an unknown sid is upgraded, then closed at once without a frame.
    const outcome = await expectWsTurnedAway(eio('EIO=4&transport=websocket&sid=AAAAAAAAAAAAAAAA').replace(/^http/, 'ws'));
    assert.ok(outcome === 'HTTP 400' || outcome.startsWith('closed'), outcome);
  });

  test('CORS *: the handshake and a preflight allow any origin', T, async () => {
    const res = await request('GET', eio('EIO=4&transport=polling'), { headers: { origin: 'https://app.example' } });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('access-control-allow-origin'), '*');
    const pre = await request('OPTIONS', eio('EIO=4&transport=polling'), {
      headers: {
        origin: 'https://app.example',
        'access-control-request-method': 'POST',
        'access-control-request-headers': 'content-type',
      },
    });
    assert.ok(pre.status >= 200 && pre.status < 300, `preflight: HTTP ${pre.status}`);
    assert.equal(pre.headers.get('access-control-allow-origin'), '*');
    const methods = pre.headers.get('access-control-allow-methods') ?? '';
    assert.ok(methods === '*' || /POST/i.test(methods), `allow-methods: ${methods}`);
  });
});

describe('messages', () => {
  test('polling: one text packet is echoed; a POST answers "ok"', T, async () => {
    const session = await Polling.open(base);
    const post = await session.post('4hello');
    assert.equal(post.status, 200);
    assert.equal(post.text, 'ok');
    assert.deepEqual(await session.receive(1), ['4hello']);
  });

  test('polling: several packets in one payload, separated by \\x1e, come back in order', T, async () => {
    const session = await Polling.open(base);
    assert.equal((await session.post(`4test1${SEPARATOR}4test2${SEPARATOR}4test3`)).status, 200);
    assert.deepEqual(await session.receive(3), ['4test1', '4test2', '4test3']);
  });

  test('polling: a payload of text and base64 binary ("b" + base64) is echoed as such', T, async () => {
    const session = await quietPolling();
    assert.equal((await session.post(`4hello${SEPARATOR}bAQIDBA==`)).status, 200);
    const res = await session.get();
    assert.equal(res.status, 200);
    assert.equal(res.text, `4hello${SEPARATOR}bAQIDBA==`);
  });

  test('polling: non-ASCII text survives both ways', T, async () => {
    const session = await Polling.open(base);
    assert.equal((await session.post('4héllo wörld € 🚀')).status, 200);
    assert.deepEqual(await session.receive(1), ['4héllo wörld € 🚀']);
  });

  test('websocket: a text packet is echoed', T, async () => {
    const { ws: socket } = await ws({ autoPong: true });
    socket.send('4hello');
    assert.equal(await socket.next(), '4hello');
    socket.send('4héllo € 🚀');
    assert.equal(await socket.next(), '4héllo € 🚀');
  });

  test('websocket: a binary frame is echoed as a binary frame', T, async () => {
    const { ws: socket } = await ws({ autoPong: true });
    socket.send(Buffer.from([1, 2, 3, 4]));
    const frame = await socket.next();
    assert.ok(Buffer.isBuffer(frame), `expected binary, got ${JSON.stringify(frame)}`);
    assert.deepEqual([...frame], [1, 2, 3, 4]);
  });

  test('polling: an invalid packet closes the session (400, then 400 for its sid)', T, async () => {
    const session = await Polling.open(base);
    const post = await session.post('abc');
    assert.ok(post.status === 400 || post.status === 0, `POST abc: HTTP ${post.status}`);
    const get = await session.get();
    assert.equal(get.status, 400);
  });

  test('websocket: an invalid packet closes the connection', T, async () => {
    const { ws: socket } = await ws({ autoPong: true });
    socket.send('abc');
    await socket.expectClose();
  });

  test('polling: a body over maxPayload gets 413 and ends the session', T, async () => {
    const session = await Polling.open(base);
    const post = await session.post(`4${'x'.repeat(MAX_PAYLOAD)}`);
    assert.ok(post.status === 413 || post.status === 0, `POST of ${MAX_PAYLOAD + 1} bytes: HTTP ${post.status}`);
    assert.equal((await session.get()).status, 400);
  });

  test('websocket: a message of maxPayload bytes is echoed; one byte more closes the connection', T, async () => {
    const { ws: socket } = await ws({ autoPong: true });
    const fits = `4${'x'.repeat(MAX_PAYLOAD - 1)}`;
    socket.send(fits);
    assert.equal(await socket.next(5000), fits);
    socket.send(`4${'x'.repeat(MAX_PAYLOAD)}`);
    await socket.expectClose();
  });
});

describe('heartbeat', () => {
  test('websocket: the server pings every pingInterval; answered, the session lives on', T, async () => {
    const { ws: socket } = await ws();
    const at = [];
    for (let i = 0; i < 3; i++) {
      assert.equal(await socket.next(PING_INTERVAL + 2000), '2');
      at.push(Date.now());
      socket.send('3');
    }
    const gap = at[2] - at[1];
    assert.ok(gap >= PING_INTERVAL - 50 && gap < PING_INTERVAL + 1000, `between two pings: ${gap} ms`);
    socket.send('4still-here');
    assert.equal(await socket.next(), '4still-here');
  });

  test('polling: each poll brings a PING, each POSTed PONG is "ok", three times', T, async () => {
    const session = await Polling.open(base);
    for (let i = 0; i < 3; i++) {
      const poll = await session.get();
      assert.equal(poll.status, 200);
      assert.equal(poll.text, '2');
      const pong = await session.post('3');
      assert.equal(pong.status, 200);
      assert.equal(pong.text, 'ok');
    }
    assert.equal((await session.post('4alive')).status, 200);
    assert.deepEqual(await session.receive(1), ['4alive']);
  });

  test('the first PING comes one pingInterval after the handshake', T, async () => {
    const { ws: socket } = await ws();
    const opened = Date.now();
    assert.equal(await socket.next(PING_INTERVAL + 2000), '2');
    const waited = Date.now() - opened;
    assert.ok(waited >= PING_INTERVAL - 50, `first PING after ${waited} ms (pingInterval ${PING_INTERVAL})`);
  });

  test('websocket: an unanswered PING closes the connection after pingTimeout', T, async () => {
    const { ws: socket } = await ws();
    assert.equal(await socket.next(PING_INTERVAL + 2000), '2');
    const pinged = Date.now();
    const { at } = await socket.expectClose(PING_TIMEOUT + 2000);
    assert.ok(at - pinged >= PING_TIMEOUT - 50, `closed ${at - pinged} ms after the PING`);
  });

  test('polling: an unanswered PING ends the session', T, async () => {
    const session = await Polling.open(base);
    const poll = await session.get();
    assert.equal(poll.text, '2');
    const seen = await session.untilGone(PING_INTERVAL + PING_TIMEOUT + 2000);
    for (const body of seen) assert.ok(body === '1' || body === '2', `before the end: ${JSON.stringify(body)}`);
  });
});

describe('close', () => {
  test('polling: a CLOSE packet ends the pending poll with a NOOP, then the sid is unknown', T, async (t) => {
    for (let attempt = 1; ; attempt++) {
      const session = await quietPolling();
      const poll = await pendingPoll(session);
      const post = await session.post('1');
      assert.equal(post.status, 200);
      const pending = await poll.response;
      if (pending.status === 400 && attempt < 5) {
        t.diagnostic(`attempt ${attempt}: the poll reached the server after the CLOSE; again`);
        continue;
      }
      assert.equal(pending.status, 200);
      assert.equal(pending.text, '6');
      assert.equal((await session.get()).status, 400);
      return;
    }
  });

  test('websocket: a CLOSE packet closes the connection', T, async () => {
    const { ws: socket } = await ws({ autoPong: true });
    socket.send('1');
    await socket.expectClose();
  });
});

describe('concurrent polling', () => {
  test('a second GET while one is pending is an error, and the session is closed', T, async () => {
    const session = await quietPolling();
    const first = await pendingPoll(session);
    const second = await request('GET', `${session.url}&t=burst`);
    const firstRes = await first.response;
    // Whichever reached the server first is the pending poll: it ends with a CLOSE packet;
    // the other is refused.
    const [held, refused] = firstRes.status === 200 ? [firstRes, second] : [second, firstRes];
    assert.equal(held.status, 200, `the held poll: HTTP ${held.status} ${held.text}`);
    assert.equal(held.text, '1', 'the held poll ends with a CLOSE packet');
    assert.ok(refused.status === 400 || refused.status === 500, `the concurrent poll: HTTP ${refused.status} ${refused.text}`);
    assert.equal((await session.get()).status, 400);
  });
});

describe('upgrade', () => {
  test('polling → websocket: 2probe/3probe, NOOP on the pending poll, 5, then messages on the websocket', T, async () => {
    const session = await quietPolling();
    const poll = await pendingPoll(session);
    const socket = sockets.add(new RawWs(session.wsUrl, { autoPong: true }));
    await socket.opened;
    socket.send('2probe');
    assert.equal(await socket.next(), '3probe');
    const pending = await poll.response;
    assert.equal(pending.status, 200);
    assert.equal(pending.text, '6', 'the pending poll ends with a NOOP');
    socket.send('5');
    socket.send('4hello');
    assert.equal(await socket.next(), '4hello');
  });

  test('a poll that arrives during the upgrade gets a NOOP', T, async () => {
    const session = await quietPolling();
    const socket = sockets.add(new RawWs(session.wsUrl, { autoPong: true }));
    await socket.opened;
    socket.send('2probe');
    assert.equal(await socket.next(), '3probe');
    const poll = await session.get();
    assert.equal(poll.status, 200);
    assert.equal(poll.text, '6');
    socket.send('5');
    socket.send('4hello');
    assert.equal(await socket.next(), '4hello');
  });

  test('after the upgrade, polling with the same sid is refused and the websocket carries on', T, async () => {
    const session = await quietPolling();
    const socket = sockets.add(new RawWs(session.wsUrl, { autoPong: true }));
    await socket.opened;
    socket.send('2probe');
    assert.equal(await socket.next(), '3probe');
    socket.send('5');
    socket.send('4ready');
    assert.equal(await socket.next(), '4ready');
    assert.equal((await session.get()).status, 400);
    socket.send('4hello');
    assert.equal(await socket.next(), '4hello');
  });

  test('after the upgrade, a second websocket with the same sid is closed and the first carries on', T, async () => {
    const session = await quietPolling();
    const socket = sockets.add(new RawWs(session.wsUrl, { autoPong: true }));
    await socket.opened;
    socket.send('2probe');
    assert.equal(await socket.next(), '3probe');
    socket.send('5');
    socket.send('4ready');
    assert.equal(await socket.next(), '4ready');
    const second = sockets.add(new RawWs(session.wsUrl, { autoPong: true }));
    await second.expectClose();
    socket.send('4hello');
    assert.equal(await socket.next(), '4hello');
  });
});
