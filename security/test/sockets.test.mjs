// Finding 6: rate limits were per socket with no cap on sockets per user, so 200 sockets
// gave one user 200 typing events a second. Now MAX_SOCKETS_PER_USER caps the sockets
// (beyond it the handshake is refused) and every rate limit also holds per user across
// all of that user's sockets.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { api, connect, emitAck, register, startServer } from './lib.mjs';

let server;
before(async () => {
  server = await startServer({
    MAX_SOCKETS_PER_USER: '8',
    RATE_LIMIT_TYPING_PER_SEC: '5',
    RATE_LIMIT_USER_TYPING_PER_SEC: '10',
  });
});
after(() => server?.stop());

test('a user gets MAX_SOCKETS_PER_USER sockets, the next is refused, and a freed slot can be reused', { timeout: 60_000 }, async () => {
  const alice = await register(server.url, 'alice');
  const attempts = Array.from({ length: 12 }, () => connect(server.url, '/chat', alice.accessToken));
  const results = await Promise.allSettled(attempts.map((a) => a.ready));
  const ok = results.filter((r) => r.status === 'fulfilled').map((r) => r.value);
  const refused = results.filter((r) => r.status === 'rejected').map((r) => r.reason.message);
  assert.equal(ok.length, 8, `connected: ${ok.length}; refusals: ${JSON.stringify(refused)}`);
  assert.ok(refused.every((m) => m === 'too many connections for this user'), JSON.stringify(refused));
  // Another user is not affected.
  const bob = await register(server.url, 'bob');
  const b = connect(server.url, '/chat', bob.accessToken);
  await b.ready;
  // Closing one of Alice's sockets frees its slot.
  ok.pop().close();
  let again;
  for (let i = 0; i < 50 && !again; i++) {
    // The server frees the slot when it has processed the close; retry until it did.
    again = await connect(server.url, '/chat', alice.accessToken).ready.catch(() => null);
  }
  assert.ok(again, 'a freed slot is reusable');
  for (const s of [...ok, again, b.socket]) s.close();
});

test('typing from 8 sockets of one user reaches the other member at the per-user rate, not 8× it', { timeout: 60_000 }, async () => {
  const alice = await register(server.url, 'alice');
  const bob = await register(server.url, 'bob');
  const conv = await api(server.url, 'POST', '/api/v1/conversations', {
    token: alice.accessToken,
    body: { type: 'single', participants: [bob.user.id] },
  });
  const sockets = await Promise.all(Array.from({ length: 8 }, () => connect(server.url, '/chat', alice.accessToken).ready));
  const b = await connect(server.url, '/chat', bob.accessToken).ready;
  let delivered = 0;
  b.on('user:typing', () => delivered++);
  const started = Date.now();
  // Each socket sends 5 (its own limit allows them all): 40 in all.
  const acks = await Promise.all(
    sockets.flatMap((s) => Array.from({ length: 5 }, () => emitAck(s, 'user:typing', { conversationId: conv.body.id }))),
  );
  const elapsedSec = (Date.now() - started) / 1000;
  const accepted = acks.filter((a) => a.success).length;
  const limited = acks.filter((a) => a.error?.code === 'rate_limited').length;
  assert.equal(accepted + limited, 40, JSON.stringify(acks.filter((a) => !a.success && a.error?.code !== 'rate_limited')));
  // The user's bucket: a burst of 10, then 10 a second.
  assert.ok(accepted <= 10 + Math.ceil(elapsedSec * 10) + 1, `accepted ${accepted} typing events in ${elapsedSec}s`);
  assert.ok(limited >= 20, `refused ${limited}`);
  // Barrier: a round trip after which every accepted typing event has been delivered.
  await emitAck(sockets[0], 'message:send', { conversationId: conv.body.id, content: 'barrier' });
  await new Promise((resolve) => (delivered >= accepted ? resolve() : b.on('user:typing', () => delivered >= accepted && resolve())));
  assert.equal(delivered, accepted, 'bob sees exactly the accepted ones');
  for (const s of [...sockets, b]) s.close();
});
