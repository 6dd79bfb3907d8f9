// The /chat namespace as npm's socket.io-client 4 sees it (CONTRACT §2, §3).
// One server for the whole file; every test registers its own users.

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, afterEach, before, test } from 'node:test';
import { io } from 'socket.io-client';

import {
  api,
  closeAllSockets,
  closeSocket,
  connect,
  createConversation,
  emitAck,
  expectAckError,
  expectStatus,
  history,
  isTimestamp,
  once,
  record,
  registerUsers,
  roundTrip,
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

/** Connects `user` to /chat with socket.io-client 4. */
function chat(user, label = user.user.username) {
  return connect(io, url, '/chat', user.accessToken, { label });
}

/** alice and bob, a single conversation between them, both connected to /chat. */
async function pair() {
  const [alice, bob] = await registerUsers(url, 'alice', 'bob');
  const conv = await createConversation(url, alice, 'single', [bob.user.id]);
  const [aliceSock, bobSock] = await Promise.all([chat(alice, 'alice'), chat(bob, 'bob')]);
  return { alice, bob, conv, aliceSock, bobSock };
}

const inConv = (conversationId) => (p) => p && p.conversationId === conversationId;

test('1. a missing or garbage token is refused with connect_error "unauthorized"', T, async () => {
  await assert.rejects(connect(io, url, '/chat', null, { label: 'no-token' }), (err) => {
    assert.equal(err.message, 'unauthorized');
    return true;
  });
  await assert.rejects(connect(io, url, '/chat', 'garbage.not-a.jwt', { label: 'garbage-token' }), (err) => {
    assert.equal(err.message, 'unauthorized');
    return true;
  });
  // A well-formed JWT signed with another secret is refused too.
  const forged =
    'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.' +
    Buffer.from(JSON.stringify({ sub: randomUUID(), exp: Math.floor(Date.now() / 1000) + 3600 })).toString('base64url') +
    '.c2lnbmF0dXJlLW1hZGUtd2l0aC1hbm90aGVyLXNlY3JldA';
  await assert.rejects(connect(io, url, '/chat', forged, { label: 'forged-token' }), (err) => {
    assert.equal(err.message, 'unauthorized');
    return true;
  });
});

test('2. message:send is acked with seq 1, 2 and reaches both members, sender included', T, async () => {
  const { alice, bob, conv, aliceSock, bobSock } = await pair();

  const bobNew = record(bobSock, 'message:new');
  const aliceNew = record(aliceSock, 'message:new');

  const ack = await emitAck(aliceSock, 'message:send', { conversationId: conv.id, content: 'hello bob' });
  assert.equal(ack.success, true, `ack: ${JSON.stringify(ack)}`);
  const m1 = ack.message;
  assert.equal(typeof m1.id, 'string');
  assert.equal(m1.conversationId, conv.id);
  assert.equal(m1.senderId, alice.user.id);
  assert.equal(m1.content, 'hello bob');
  assert.equal(m1.seq, 1);
  assert.ok(isTimestamp(m1.createdAt), `createdAt: ${m1.createdAt}`);

  const atBob = await bobNew.waitFor(inConv(conv.id));
  const atAlice = await aliceNew.waitFor(inConv(conv.id));
  for (const got of [atBob, atAlice]) {
    assert.equal(got.id, m1.id);
    assert.equal(got.seq, 1);
    assert.equal(got.content, 'hello bob');
    assert.equal(got.senderId, alice.user.id);
  }

  const m2 = await sendMessage(aliceSock, conv.id, 'second');
  assert.equal(m2.seq, 2);
  const [, bob2] = await bobNew.waitForCount(2, inConv(conv.id));
  assert.equal(bob2.id, m2.id);
  assert.equal(bob2.seq, 2);

  // bob answers; alice sees it with the next seq.
  const reply = await sendMessage(bobSock, conv.id, 'hi alice');
  assert.equal(reply.seq, 3);
  assert.equal(reply.senderId, bob.user.id);
  const [, , alice3] = await aliceNew.waitForCount(3, inConv(conv.id));
  assert.equal(alice3.id, reply.id);
});

test('3. the same clientMessageId returns the first message and stores it once', T, async () => {
  const { alice, conv, aliceSock } = await pair();
  const clientMessageId = randomUUID();

  const first = await sendMessage(aliceSock, conv.id, 'only once', { clientMessageId });
  const again = await sendMessage(aliceSock, conv.id, 'only once', { clientMessageId });
  assert.equal(again.id, first.id);
  assert.equal(again.seq, first.seq);

  // The duplicate consumed no seq.
  const next = await sendMessage(aliceSock, conv.id, 'next one', { clientMessageId: randomUUID() });
  assert.equal(next.seq, first.seq + 1);

  const data = await history(url, alice, conv.id);
  assert.equal(data.filter((m) => m.id === first.id).length, 1, `history: ${JSON.stringify(data)}`);
  assert.equal(data.filter((m) => m.clientMessageId === clientMessageId).length <= 1, true);
  assert.equal(data.length, 2, `history holds the message and the next one: ${JSON.stringify(data)}`);
});

test('4. typing indicators reach the other member, not the typist', T, async () => {
  const { alice, conv, aliceSock, bobSock } = await pair();
  const aliceTyping = record(aliceSock, 'user:typing');

  const typing = once(bobSock, 'user:typing', 5000, inConv(conv.id));
  aliceSock.emit('user:typing', { conversationId: conv.id });
  assert.deepEqual(pick(await typing, 'userId', 'conversationId'), {
    userId: alice.user.id,
    conversationId: conv.id,
  });

  const stopped = once(bobSock, 'user:stop-typing', 5000, inConv(conv.id));
  aliceSock.emit('user:stop-typing', { conversationId: conv.id });
  assert.deepEqual(pick(await stopped, 'userId', 'conversationId'), {
    userId: alice.user.id,
    conversationId: conv.id,
  });

  await roundTrip(aliceSock);
  assert.deepEqual(aliceTyping.events, [], 'the typist does not get her own user:typing');
});

test('5. edit, delete, and editing someone else\'s message is forbidden', T, async () => {
  const { alice, conv, aliceSock, bobSock } = await pair();
  const msg = await sendMessage(aliceSock, conv.id, 'original');
  const bobUpdated = record(bobSock, 'message:updated');
  const aliceUpdated = record(aliceSock, 'message:updated');

  // bob may not edit alice's message, and nobody hears of the attempt.
  const denied = await emitAck(bobSock, 'message:edit', { messageId: msg.id, content: 'bob was here' });
  expectAckError(denied, 'forbidden', 'bob edits alice\'s message');

  const editAck = await emitAck(aliceSock, 'message:edit', { messageId: msg.id, content: 'edited' });
  assert.equal(editAck.success, true, `edit ack: ${JSON.stringify(editAck)}`);
  for (const rec of [bobUpdated, aliceUpdated]) {
    const updated = await rec.waitFor((m) => m.id === msg.id);
    assert.equal(updated.content, 'edited');
    assert.equal(updated.seq, msg.seq);
    assert.ok(isTimestamp(updated.editedAt), `editedAt: ${updated.editedAt}`);
  }
  assert.equal(bobUpdated.matching((m) => m.content === 'bob was here').length, 0);
  assert.equal(bobUpdated.matching((m) => m.id === msg.id).length, 1, 'exactly one update (bob\'s was refused)');

  const bobDeleted = once(bobSock, 'message:deleted', 5000, (p) => p.messageId === msg.id);
  const aliceDeleted = once(aliceSock, 'message:deleted', 5000, (p) => p.messageId === msg.id);
  const delAck = await emitAck(aliceSock, 'message:delete', { messageId: msg.id });
  assert.equal(delAck.success, true, `delete ack: ${JSON.stringify(delAck)}`);
  for (const got of await Promise.all([bobDeleted, aliceDeleted])) {
    assert.deepEqual(pick(got, 'messageId', 'conversationId'), { messageId: msg.id, conversationId: conv.id });
  }

  const data = await history(url, alice, conv.id);
  const stored = data.find((m) => m.id === msg.id);
  assert.ok(stored, `the deleted message stays in the history: ${JSON.stringify(data)}`);
  assert.equal(stored.seq, msg.seq);
  assert.ok(isTimestamp(stored.deletedAt), `deletedAt: ${stored.deletedAt}`);
  assert.equal(stored.content, '');
});

test('6. a read receipt reaches the sender', T, async () => {
  const { bob, conv, aliceSock, bobSock } = await pair();
  const msg = await sendMessage(aliceSock, conv.id, 'did you read this?');

  const receipt = once(aliceSock, 'message:read', 5000, (p) => p.messageId === msg.id);
  const ack = await emitAck(bobSock, 'message:read', { messageId: msg.id, conversationId: conv.id });
  assert.equal(ack.success, true, `read ack: ${JSON.stringify(ack)}`);
  const got = await receipt;
  assert.equal(got.messageId, msg.id);
  assert.equal(got.userId, bob.user.id);
  assert.equal(got.conversationId, conv.id);
  assert.ok(isTimestamp(got.readAt), `readAt: ${got.readAt}`);
});

test('7. reactions are added and removed for everyone', T, async () => {
  const { alice, bob, conv, aliceSock, bobSock } = await pair();
  const msg = await sendMessage(aliceSock, conv.id, 'react to me');
  const emoji = '👍';

  const added = once(aliceSock, 'reaction:added', 5000, (p) => p.messageId === msg.id);
  const addAck = await emitAck(bobSock, 'reaction:add', { messageId: msg.id, emoji });
  assert.equal(addAck.success, true, `reaction:add ack: ${JSON.stringify(addAck)}`);
  assert.deepEqual(pick(await added, 'messageId', 'conversationId', 'emoji', 'userId'), {
    messageId: msg.id,
    conversationId: conv.id,
    emoji,
    userId: bob.user.id,
  });
  let stored = (await history(url, alice, conv.id)).find((m) => m.id === msg.id);
  assert.deepEqual(
    stored.reactions.map((r) => pick(r, 'emoji', 'userId')),
    [{ emoji, userId: bob.user.id }],
  );

  const removed = once(aliceSock, 'reaction:removed', 5000, (p) => p.messageId === msg.id);
  const removeAck = await emitAck(bobSock, 'reaction:remove', { messageId: msg.id, emoji });
  assert.equal(removeAck.success, true, `reaction:remove ack: ${JSON.stringify(removeAck)}`);
  assert.deepEqual(pick(await removed, 'messageId', 'conversationId', 'emoji', 'userId'), {
    messageId: msg.id,
    conversationId: conv.id,
    emoji,
    userId: bob.user.id,
  });
  stored = (await history(url, alice, conv.id)).find((m) => m.id === msg.id);
  assert.deepEqual(stored.reactions, []);
});

test('8. presence: online to co-members on every device, offline only when the last socket goes', T, async () => {
  const [alice, bob, carol] = await registerUsers(url, 'alice', 'bob', 'carol');
  const conv = await createConversation(url, alice, 'single', [bob.user.id]);
  const isBob = (p) => p && p.userId === bob.user.id;

  const alice1 = await chat(alice, 'alice#1');
  const alice2 = await chat(alice, 'alice#2');
  const carolSock = await chat(carol, 'carol');
  const online1 = record(alice1, 'user:online');
  const online2 = record(alice2, 'user:online');
  const carolOnline = record(carolSock, 'user:online');
  const offline1 = record(alice1, 'user:offline');

  const bob1 = await chat(bob, 'bob#1');
  await online1.waitFor(isBob);
  await online2.waitFor(isBob);

  // carol shares no conversation with bob: after a round trip of hers, still nothing.
  await roundTrip(carolSock);
  assert.deepEqual(carolOnline.matching(isBob), [], 'carol must not learn that bob came online');

  // bob's second device, then closing the first: he is still online.
  const bob2 = await chat(bob, 'bob#2');
  closeSocket(bob1);
  // An anchor that goes through the server after that close: bob#2 still talks.
  const aliceNew = once(alice1, 'message:new', 5000, inConv(conv.id));
  await sendMessage(bob2, conv.id, 'still here on my second device');
  await aliceNew;
  await roundTrip(alice1);
  assert.deepEqual(offline1.matching(isBob), [], 'closing one of two sockets must not emit user:offline');

  closeSocket(bob2);
  const gone = await offline1.waitFor(isBob);
  assert.equal(gone.userId, bob.user.id);
  assert.ok(isTimestamp(gone.lastSeen), `lastSeen: ${gone.lastSeen}`);
  await roundTrip(alice1);
  assert.equal(offline1.matching(isBob).length, 1, 'exactly one user:offline');
  assert.equal(online1.matching(isBob).length, 1, 'exactly one user:online (bob#2 was not his first socket)');
});

test('9. members added or removed while connected join or leave the room at once', T, async () => {
  const [alice, bob, carol] = await registerUsers(url, 'alice', 'bob', 'carol');
  const group = await createConversation(url, alice, 'group', [bob.user.id], 'interop group');
  assert.equal(group.type, 'group');
  const [aliceSock, bobSock, carolSock] = await Promise.all([
    chat(alice, 'alice'),
    chat(bob, 'bob'),
    chat(carol, 'carol'),
  ]);
  const carolNew = record(carolSock, 'message:new');

  const announced = once(carolSock, 'conversation:new', 5000, (c) => c && c.id === group.id);
  const added = await api(url, 'POST', `/api/v1/conversations/${group.id}/members`, alice.accessToken, {
    userIds: [carol.user.id],
  });
  const updated = expectStatus(added, [200, 201], 'add carol');
  assert.ok(
    updated.participants.some((p) => p.userId === carol.user.id),
    `carol is a participant: ${JSON.stringify(updated)}`,
  );
  const conv = await announced;
  assert.equal(conv.id, group.id);
  assert.ok(
    Array.isArray(conv.participants) && conv.participants.some((p) => p.userId === carol.user.id),
    `conversation:new carries the Conversation with carol in it: ${JSON.stringify(conv)}`,
  );

  const welcome = await sendMessage(aliceSock, group.id, 'welcome carol');
  const atCarol = await carolNew.waitFor((m) => m.id === welcome.id);
  assert.equal(atCarol.conversationId, group.id);

  const removed = await api(url, 'DELETE', `/api/v1/conversations/${group.id}/members/${carol.user.id}`, alice.accessToken);
  expectStatus(removed, 204, 'remove carol');

  const bobNew = once(bobSock, 'message:new', 5000, inConv(group.id));
  const secret = await sendMessage(aliceSock, group.id, 'carol is gone');
  assert.equal((await bobNew).id, secret.id);
  await roundTrip(carolSock);
  assert.deepEqual(carolNew.matching((m) => m.id === secret.id), [], 'carol no longer gets the group\'s messages');

  const aliceNew = record(aliceSock, 'message:new');
  const denied = await emitAck(carolSock, 'message:send', { conversationId: group.id, content: 'let me back in' });
  expectAckError(denied, 'forbidden', 'carol sends to a group she left');
  await roundTrip(aliceSock);
  assert.deepEqual(aliceNew.matching((m) => m.content === 'let me back in'), []);
});

test('10. a non-member is forbidden and nobody sees anything', T, async () => {
  const { conv, aliceSock, bobSock } = await pair();
  const [carol] = await registerUsers(url, 'carol');
  const carolSock = await chat(carol, 'carol');
  const aliceNew = record(aliceSock, 'message:new');
  const bobNew = record(bobSock, 'message:new');
  const bobTyping = record(bobSock, 'user:typing');

  const denied = await emitAck(carolSock, 'message:send', { conversationId: conv.id, content: 'intruder' });
  expectAckError(denied, 'forbidden', 'carol sends to alice and bob');
  const deniedTyping = await emitAck(carolSock, 'user:typing', { conversationId: conv.id });
  expectAckError(deniedTyping, 'forbidden', 'carol types in alice and bob\'s conversation');

  // Barrier: a real message in the room arrives after anything emitted before it.
  const real = await sendMessage(aliceSock, conv.id, 'just us');
  await bobNew.waitFor((m) => m.id === real.id);
  await aliceNew.waitFor((m) => m.id === real.id);
  assert.deepEqual(bobNew.events.map((m) => m.id), [real.id]);
  assert.deepEqual(aliceNew.events.map((m) => m.id), [real.id]);
  assert.deepEqual(bobTyping.events, []);
  assert.equal(real.seq, 1, 'the refused message consumed no seq');
});

test('11. malformed payloads get invalid_payload and the socket lives on', T, async () => {
  const { alice, conv, aliceSock, bobSock } = await pair();
  const bobNew = record(bobSock, 'message:new');
  const bad = [
    ['a string payload', 'hello'],
    ['a numeric conversationId', { conversationId: 123, content: 'hi' }],
    ['no content', { conversationId: conv.id }],
    ['content of 10,001 characters', { conversationId: conv.id, content: 'x'.repeat(10_001) }],
  ];
  for (const [what, payload] of bad) {
    const ack = await emitAck(aliceSock, 'message:send', payload);
    expectAckError(ack, 'invalid_payload', `message:send with ${what}`);
    assert.equal(aliceSock.connected, true, `still connected after ${what}`);
  }

  const unknown = await emitAck(aliceSock, 'message:send', { conversationId: randomUUID(), content: 'anyone?' });
  expectAckError(unknown, ['not_found', 'forbidden'], 'message:send to an unknown conversation');

  // Without an ack callback a malformed payload is dropped, and nothing breaks.
  aliceSock.emit('message:send', { conversationId: conv.id });
  aliceSock.emit('message:send');

  const ok = await sendMessage(aliceSock, conv.id, 'still works');
  assert.equal(ok.seq, 1, 'no rejected payload consumed a seq');
  const longest = await sendMessage(aliceSock, conv.id, 'y'.repeat(10_000));
  assert.equal(longest.content.length, 10_000, '10,000 characters is allowed');
  assert.equal(longest.seq, 2);

  await bobNew.waitForCount(2, inConv(conv.id));
  assert.deepEqual(bobNew.events.map((m) => m.id), [ok.id, longest.id]);
  assert.equal(aliceSock.connected, true);
  const data = await history(url, alice, conv.id);
  assert.equal(data.length, 2, 'only the valid messages were stored');
});

test('12. after a reconnect, afterSeq returns exactly the missed messages', T, async () => {
  const { bob, conv, aliceSock, bobSock } = await pair();
  const bobNew = record(bobSock, 'message:new');
  const first = await sendMessage(aliceSock, conv.id, 'before the tunnel');
  const seen = await bobNew.waitFor((m) => m.id === first.id);
  const lastSeq = seen.seq;

  const bobGone = once(bobSock, 'disconnect');
  closeSocket(bobSock);
  await bobGone;

  const missed = [];
  for (let i = 1; i <= 3; i++) missed.push(await sendMessage(aliceSock, conv.id, `missed ${i}`));

  const again = await chat(bob, 'bob (reconnected)');
  assert.equal(again.connected, true);
  const data = await history(url, bob, conv.id, `afterSeq=${lastSeq}`);
  assert.deepEqual(
    data.map((m) => [m.id, m.seq, m.content]),
    missed.map((m) => [m.id, m.seq, m.content]),
  );
  assert.deepEqual(
    data.map((m) => m.seq),
    [lastSeq + 1, lastSeq + 2, lastSeq + 3],
  );
});

test('13. logout disconnects the session\'s sockets and revokes its access token', T, async () => {
  const { bob, bobSock } = await pair();
  const kicked = once(bobSock, 'disconnect', 5000);

  const res = await api(url, 'POST', '/api/v1/auth/logout', bob.accessToken);
  expectStatus(res, 204, 'logout');
  await kicked;
  assert.equal(bobSock.connected, false);

  await assert.rejects(connect(io, url, '/chat', bob.accessToken, { label: 'bob after logout' }), (err) => {
    assert.equal(err.message, 'unauthorized');
    return true;
  });
});

test('14. 20 messages sent back-to-back arrive in order with consecutive seq', T, async () => {
  const { conv, aliceSock, bobSock } = await pair();
  const bobNew = record(bobSock, 'message:new');
  const N = 20; // within the default per-socket burst (10/s, bursts to 20)
  const contents = Array.from({ length: N }, (_, i) => `burst ${i}`);

  const acks = contents.map((content) => emitAck(aliceSock, 'message:send', { conversationId: conv.id, content }, 20_000));
  const received = await bobNew.waitForCount(N, inConv(conv.id), 20_000);
  const acked = await Promise.all(acks);

  for (const [i, ack] of acked.entries()) {
    assert.equal(ack.success, true, `ack ${i}: ${JSON.stringify(ack)}`);
  }
  assert.deepEqual(
    received.map((m) => m.content),
    contents,
    'bob receives the messages in the order they were sent',
  );
  const seqs = received.map((m) => m.seq);
  assert.deepEqual(
    seqs,
    Array.from({ length: N }, (_, i) => i + 1),
    'seq counts 1..20 with no gaps',
  );
  assert.deepEqual(
    acked.map((a) => [a.message.id, a.message.seq]),
    received.map((m) => [m.id, m.seq]),
    'each ack names the message bob received in that position',
  );
});

/** The named fields of `obj`, for deepEqual on a payload that may carry extras. */
function pick(obj, ...keys) {
  const out = {};
  for (const k of keys) out[k] = obj?.[k];
  return out;
}
