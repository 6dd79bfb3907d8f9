// Finding 6 (smaller ones): attachment URLs such as `javascript:alert(1)` were stored and
// sent to every member's client; one user could have two outgoing calls ringing at once.
// Now attachment URLs must be http(s), and a second outgoing call while one rings is a
// `conflict`.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { api, connect, emitAck, register, startServer } from './lib.mjs';

let server;
before(async () => {
  server = await startServer({});
});
after(() => server?.stop());

const single = (owner, other) =>
  api(server.url, 'POST', '/api/v1/conversations', { token: owner.accessToken, body: { type: 'single', participants: [other.user.id] } });

test('attachments with javascript:, data:, file: or relative URLs are refused and nothing is stored', async () => {
  const alice = await register(server.url, 'alice');
  const bob = await register(server.url, 'bob');
  const conv = (await single(alice, bob)).body;
  const socket = await connect(server.url, '/chat', alice.accessToken).ready;
  for (const url of ['javascript:alert(1)', 'JaVaScRiPt:alert(1)', 'data:text/html,<script>alert(1)</script>', 'file:///etc/passwd', '/relative.png', 'https://']) {
    for (const attachment of [{ url }, { url: 'https://cdn.example/a.png', thumbnailUrl: url }]) {
      const ack = await emitAck(socket, 'message:send', { conversationId: conv.id, content: 'look', attachments: [attachment] });
      assert.equal(ack.success, false, `${JSON.stringify(attachment)} was accepted`);
      assert.equal(ack.error.code, 'invalid_payload');
    }
  }
  const ok = await emitAck(socket, 'message:send', { conversationId: conv.id, content: 'look', attachments: [{ url: 'https://cdn.example/a.png', type: 'image' }] });
  assert.equal(ok.success, true, JSON.stringify(ok));
  const history = await api(server.url, 'GET', `/api/v1/messages/conversation/${conv.id}?afterSeq=0`, { token: bob.accessToken });
  assert.deepEqual(history.body.data.map((m) => m.attachments.map((a) => a.url)), [['https://cdn.example/a.png']], 'only the https one is stored');
  socket.close();
});

test('a second outgoing call while the first still rings is refused with conflict', async () => {
  const alice = await register(server.url, 'alice');
  const bob = await register(server.url, 'bob');
  const carol = await register(server.url, 'carol');
  const a = await connect(server.url, '/webrtc', alice.accessToken).ready;
  const first = await emitAck(a, 'call:initiate', { calleeId: bob.user.id, type: 'audio' });
  assert.equal(first.success, true, JSON.stringify(first));
  const second = await emitAck(a, 'call:initiate', { calleeId: carol.user.id, type: 'audio' });
  assert.equal(second.success, false, `a second ringing call was placed: ${JSON.stringify(second)}`);
  assert.equal(second.error.code, 'conflict');
  // Once the first is over, calling Carol works.
  const ended = await emitAck(a, 'call:end', { callId: first.callId });
  assert.equal(ended.success, true, JSON.stringify(ended));
  const third = await emitAck(a, 'call:initiate', { calleeId: carol.user.id, type: 'audio' });
  assert.equal(third.success, true, JSON.stringify(third));
  a.close();
});
