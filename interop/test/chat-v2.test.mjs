// The /chat namespace as npm's socket.io-client 2.x sees it (Engine.IO v3, CONTRACT §3,
// `ALLOW_EIO3` defaults to true). v2 cannot send `auth`: the token goes in the query.
//
// How socket.io-client 2 reports a refused namespace: the server's CONNECT_ERROR is
// packet type 4, which the v2 parser calls ERROR; the v2 Socket emits it as its `error`
// event with the packet's data (socketioxide sends `{"message":"unauthorized"}`; a
// socket.io 2 server sent the bare string). `connect_error` in v2 only reports
// Engine.IO-level failures. Both are handled by `connectV2`, which rejects with an
// Error whose `message` is the refusal's message and whose `data` is the raw payload.

import assert from 'node:assert/strict';
import { after, afterEach, before, test } from 'node:test';
import ioV2 from 'socket.io-client-v2';
import { io as ioV4 } from 'socket.io-client';

import {
  closeAllSockets,
  connect,
  connectV2,
  createConversation,
  emitAck,
  once,
  record,
  registerUsers,
  sendMessage,
  startServer,
} from './helpers.mjs';

const T = { timeout: 60_000 };

let server;
let url;

before(async () => {
  server = await startServer();
  url = server.url;
});

afterEach(() => closeAllSockets());

after(async () => {
  closeAllSockets();
  if (server) await server.stop();
});

const inConv = (conversationId) => (p) => p && p.conversationId === conversationId;

/** The refusal as a v2 client saw it, whether the server sent an object or a string. */
function refusalMessage(err) {
  const data = err.data;
  if (typeof data === 'string') return data;
  if (data && typeof data.message === 'string') return data.message;
  return err.message;
}

test('v2: connects with ?token=, sends with ack, and talks both ways with a v4 client', T, async () => {
  const [alice, bob] = await registerUsers(url, 'alice', 'bob');
  const conv = await createConversation(url, alice, 'single', [bob.user.id]);

  const aliceV2 = await connectV2(ioV2, url, '/chat', alice.accessToken, { label: 'alice (v2)' });
  const bobV4 = await connect(ioV4, url, '/chat', bob.accessToken, { label: 'bob (v4)' });
  assert.equal(aliceV2.connected, true);

  const bobNew = record(bobV4, 'message:new');
  const aliceNew = record(aliceV2, 'message:new');

  // v2 -> v4
  const ack = await emitAck(aliceV2, 'message:send', { conversationId: conv.id, content: 'from v2' });
  assert.equal(ack.success, true, `ack: ${JSON.stringify(ack)}`);
  assert.equal(ack.message.seq, 1);
  assert.equal(ack.message.senderId, alice.user.id);
  const atBob = await bobNew.waitFor((m) => m.id === ack.message.id);
  assert.equal(atBob.content, 'from v2');
  assert.equal(atBob.seq, 1);
  const echo = await aliceNew.waitFor((m) => m.id === ack.message.id);
  assert.equal(echo.content, 'from v2');

  // v4 -> v2
  const reply = await sendMessage(bobV4, conv.id, 'from v4');
  assert.equal(reply.seq, 2);
  const atAlice = await aliceNew.waitFor((m) => m.id === reply.id);
  assert.equal(atAlice.content, 'from v4');
  assert.equal(atAlice.senderId, bob.user.id);
  assert.equal(atAlice.seq, 2);

  // Other events cross too: typing from the v2 client.
  const typing = once(bobV4, 'user:typing', 5000, inConv(conv.id));
  aliceV2.emit('user:typing', { conversationId: conv.id });
  assert.equal((await typing).userId, alice.user.id);
});

test('v2: a bad or missing token is refused with "unauthorized" on the error event', T, async () => {
  await assert.rejects(connectV2(ioV2, url, '/chat', 'garbage.not-a.jwt', { label: 'v2 garbage token' }), (err) => {
    assert.equal(refusalMessage(err), 'unauthorized', `v2 saw: ${JSON.stringify(err.data ?? err.message)}`);
    return true;
  });
  await assert.rejects(connectV2(ioV2, url, '/chat', null, { label: 'v2 no token' }), (err) => {
    assert.equal(refusalMessage(err), 'unauthorized', `v2 saw: ${JSON.stringify(err.data ?? err.message)}`);
    return true;
  });
});

test('v2: after a refusal the same server still accepts a good v2 client', T, async () => {
  const [carol] = await registerUsers(url, 'carol');
  await assert.rejects(connectV2(ioV2, url, '/chat', `${carol.accessToken}x`, { label: 'v2 tampered token' }));
  const ok = await connectV2(ioV2, url, '/chat', carol.accessToken, { label: 'carol (v2)' });
  assert.equal(ok.connected, true);
});
