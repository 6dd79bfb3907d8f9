// Finding 3: no timeout for request headers or an idle connection, no cap on connections.
// 1,100 connections sending one byte a second, under a 1,024 open-file limit, made
// `/api/v1/health` time out and the log repeat `accept error: Too many open files`.
//
// Replayed under `prlimit --nofile=1024`: a connected chat user keeps chatting through
// the attack, the slow connections are cut after HEADER_READ_TIMEOUT_MS, the ones beyond
// the cap are closed at once and counted, and health answers as soon as it is over.

import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, test } from 'node:test';

import { api, connect, emitAck, metric, register, startServer } from './lib.mjs';

const SLOW = 1100;
const HEADER_TIMEOUT_MS = 2000;
const HEAD = 'GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-Slow: ';

let server;
before(async () => {
  server = await startServer({ HEADER_READ_TIMEOUT_MS: String(HEADER_TIMEOUT_MS) }, { nofile: 1024 });
});
after(() => server?.stop());

/** Opens a connection that sends one byte of a request head every 200 ms, forever. */
function slowClient(port) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    let i = 0;
    let timer;
    const state = { socket: s, closedByServer: false, openedAt: Date.now(), closedAt: null, closed: null };
    state.closed = new Promise((done) => {
      s.once('close', () => {
        clearInterval(timer);
        state.closedAt = Date.now();
        done();
      });
    });
    s.once('connect', () => {
      timer = setInterval(() => {
        if (!s.destroyed) s.write(HEAD[i++ % HEAD.length]);
      }, 200);
      resolve(state);
    });
    s.on('end', () => {
      state.closedByServer = true;
    });
    s.on('error', () => {
      state.closedByServer = true;
      resolve(state);
    });
  });
}

test(`${SLOW} slowloris connections under a 1,024 fd limit: chat goes on, the slow ones are cut`, { timeout: 120_000 }, async () => {
  const alice = await register(server.url, 'alice');
  const bob = await register(server.url, 'bob');
  const conv = await api(server.url, 'POST', '/api/v1/conversations', {
    token: alice.accessToken,
    body: { type: 'single', participants: [bob.user.id] },
  });
  const { socket, ready } = connect(server.url, '/chat', alice.accessToken);
  await ready;

  const slow = await Promise.all(Array.from({ length: SLOW }, () => slowClient(server.port)));

  // During the attack, the connected user still gets her messages stored and acked.
  const ack = await emitAck(socket, 'message:send', { conversationId: conv.body.id, content: 'still here' }, 10_000);
  assert.equal(ack.success, true, JSON.stringify(ack));

  // Every slow connection ends: beyond the cap at once, the others after the header timeout.
  await Promise.all(slow.map((s) => Promise.race([s.closed, new Promise((_, rej) => setTimeout(() => rej(new Error('a slow connection was never closed')), 30_000))])));
  const lifetimes = slow.map((s) => s.closedAt - s.openedAt).sort((a, b) => a - b);
  const longest = lifetimes.at(-1);
  assert.ok(longest < HEADER_TIMEOUT_MS + 8000, `the longest slow connection lived ${longest} ms`);

  // Those beyond the cap were refused at once and counted; health answers now.
  const refused = await metric(server.url, 'quckchat_connections_refused_total');
  assert.ok(refused >= 1, `connections refused: ${refused}`);
  const health = await api(server.url, 'GET', '/api/v1/health');
  assert.equal(health.status, 200);
  assert.ok(!server.log.some((l) => /Too many open files/.test(l)), 'the server never ran out of descriptors');
  console.log(
    `MEASURED: slowloris: ${SLOW} slow connections, ${refused} refused at the cap, median lifetime ` +
      `${lifetimes[lifetimes.length >> 1]} ms, longest ${longest} ms (header timeout ${HEADER_TIMEOUT_MS} ms)`,
  );

  // The chat socket is still the same connection.
  const again = await emitAck(socket, 'message:send', { conversationId: conv.body.id, content: 'after' }, 10_000);
  assert.equal(again.success, true);
  socket.close();
});

test('a connection that never sends a byte is closed after the header timeout', { timeout: 30_000 }, async () => {
  const s = net.connect(server.port, '127.0.0.1');
  const opened = Date.now();
  await new Promise((resolve, reject) => {
    s.once('close', resolve);
    s.once('error', resolve);
    setTimeout(() => reject(new Error('an idle connection stayed open')), HEADER_TIMEOUT_MS + 10_000);
  });
  assert.ok(Date.now() - opened >= HEADER_TIMEOUT_MS - 200);
});

test('upgraded WebSockets count against MAX_CONNECTIONS too', { timeout: 60_000 }, async () => {
  const capped = await startServer({ MAX_CONNECTIONS: '10' });
  try {
    const alice = await register(capped.url, 'alice');
    const attempts = Array.from({ length: 14 }, () => connect(capped.url, '/chat', alice.accessToken, { timeout: 10_000 }));
    const results = await Promise.allSettled(attempts.map((a) => a.ready));
    const open = results.filter((r) => r.status === 'fulfilled').map((r) => r.value);
    assert.ok(open.length <= 10, `${open.length} WebSockets open under a cap of 10`);
    assert.ok(open.length >= 8, `only ${open.length} of 10 allowed connected`);
    for (const s of open) s.close();
  } finally {
    await capped.stop();
  }
});
