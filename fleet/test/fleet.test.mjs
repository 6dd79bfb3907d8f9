// Three instances (A, B, C) sharing a private Redis and one PostgreSQL schema, with the
// clients spread over them: everything a client sees must not depend on which instance
// it is connected to (CONTRACT §3: "every server→user event reaches all of that user's
// sockets, on whatever instance they are").

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before } from 'node:test';

import {
  api,
  chat,
  closeSocket,
  createConversation,
  disconnected,
  emitAck,
  expectOk,
  expectStatus,
  historyAfter,
  login,
  once,
  record,
  register,
  roundTrip,
  rtc,
  rtcRoundTrip,
  sendMessage,
} from './lib/client.mjs';
import { fleetTest, openFleet } from './lib/harness.mjs';
import { chatSockets, metric, waitUntil } from './lib/procs.mjs';

const RING_TIMEOUT_MS = 1500;

let F; // the fleet
let A, B, C; // its instances

before(async () => {
  F = await openFleet({
    env: {
      RING_TIMEOUT_MS: String(RING_TIMEOUT_MS),
      // The gap-free test sends 30 messages per socket at once.
      RATE_LIMIT_MESSAGES_PER_SEC: '500',
      RATE_LIMIT_MESSAGE_BURST: '500',
      RATE_LIMIT_USER_MESSAGES_PER_SEC: '1000',
    },
  });
  ({ A, B, C } = F);
});

after(async () => {
  if (!F) return;
  const unclean = await F.close();
  // SIGTERM is a graceful shutdown: every instance drains and exits 0.
  assert.deepEqual(unclean, [], `instances that did not exit 0 on SIGTERM:\n${await F.logs()}`);
});

const ftest = (name, fn, timeout) => fleetTest(name, () => F, fn, timeout);

/** Awaits `event` (matching `pred`) on every socket; set up before the action. */
function onAll(sockets, event, pred = () => true, ms = 5000) {
  return Promise.all(sockets.map((s) => once(s, event, ms, pred)));
}

/** One round trip on each socket: what was emitted to it before has arrived. */
function barriers(sockets) {
  return Promise.all(sockets.map((s) => (s.nsp === '/webrtc' ? rtcRoundTrip(s) : roundTrip(s))));
}

/** Waits until the instance's `/chat` gauge reads `n`. */
function gaugeIs(instance, n) {
  return waitUntil(`${instance.name} counts ${n} /chat sockets`, async () => (await chatSockets(instance)) === n, 10_000);
}

/** Sweeps (`live_calls` reads) an instance's call sweeper has done so far. */
async function sweeps(instance) {
  const counts = await metric(instance, 'quckchat_store_seconds_count');
  return counts['{op="live_calls"}'] ?? 0;
}

const inConv = (id) => (p) => p && p.conversationId === id;

// ---------------------------------------------------------------------------

ftest('chat across instances: message:new (same seq everywhere, sender devices included), typing, receipts, reactions, edit, delete', async () => {
  const alice = await register(A.url, 'alice');
  const bob = await register(B.url, 'bob');
  const carol = await register(C.url, 'carol');
  const bobPhone = await login(C.url, bob); // bob's second device: another login, on C
  const group = await createConversation(A.url, alice, 'group', [bob.user.id, carol.user.id], 'fleet group');

  const aliceS = await chat(A.url, alice, 'alice@A');
  const bobS = await chat(B.url, bob, 'bob@B');
  const carolS = await chat(C.url, carol, 'carol@C');
  const bobPhoneS = await chat(C.url, bobPhone, 'bob-phone@C');
  const all = [aliceS, bobS, carolS, bobPhoneS];

  // alice (A) sends: every socket on every instance gets it, with the ack's seq.
  let got = onAll(all, 'message:new', inConv(group.id));
  const m1 = await sendMessage(aliceS, group.id, 'hello from A');
  assert.equal(m1.seq, 1);
  for (const m of await got) {
    assert.equal(m.id, m1.id);
    assert.equal(m.seq, 1);
    assert.equal(m.content, 'hello from A');
    assert.equal(m.senderId, alice.user.id);
  }

  // bob's phone (C) sends: bob's laptop on B (the sender's other device) gets it too.
  got = onAll(all, 'message:new', inConv(group.id));
  const m2 = await sendMessage(bobPhoneS, group.id, 'hello from C');
  assert.equal(m2.seq, 2);
  for (const m of await got) {
    assert.equal(m.id, m2.id);
    assert.equal(m.seq, 2);
    assert.equal(m.senderId, bob.user.id);
  }

  // typing: the others get it, on every instance; the typer's own socket does not.
  const typingAtCarol = record(carolS, 'user:typing');
  got = onAll([aliceS, bobS, bobPhoneS], 'user:typing', (p) => p.userId === carol.user.id && p.conversationId === group.id);
  expectOk(await emitAck(carolS, 'user:typing', { conversationId: group.id }), 'user:typing');
  await got;
  got = onAll([aliceS, bobS, bobPhoneS], 'user:stop-typing', (p) => p.userId === carol.user.id && p.conversationId === group.id);
  expectOk(await emitAck(carolS, 'user:stop-typing', { conversationId: group.id }), 'user:stop-typing');
  await got;
  await roundTrip(carolS);
  assert.equal(typingAtCarol.events.length, 0, 'the typer got its own user:typing');

  // read receipt by carol on C (her first: her read mark moves) reaches A and B.
  got = onAll(all, 'message:read', (p) => p.messageId === m2.id && p.userId === carol.user.id);
  expectOk(await emitAck(carolS, 'message:read', { messageId: m2.id, conversationId: group.id }), 'message:read');
  for (const r of await got) {
    assert.equal(r.conversationId, group.id);
    assert.ok(typeof r.readAt === 'string');
  }

  // reactions by carol on C.
  got = onAll(all, 'reaction:added', (p) => p.messageId === m1.id);
  expectOk(await emitAck(carolS, 'reaction:add', { messageId: m1.id, emoji: '👍' }), 'reaction:add');
  for (const r of await got) assert.deepEqual([r.emoji, r.userId, r.conversationId], ['👍', carol.user.id, group.id]);
  got = onAll(all, 'reaction:removed', (p) => p.messageId === m1.id);
  expectOk(await emitAck(carolS, 'reaction:remove', { messageId: m1.id, emoji: '👍' }), 'reaction:remove');
  for (const r of await got) assert.deepEqual([r.emoji, r.userId], ['👍', carol.user.id]);

  // edit and delete by alice on A.
  got = onAll(all, 'message:updated', (p) => p.id === m1.id);
  expectOk(await emitAck(aliceS, 'message:edit', { messageId: m1.id, content: 'edited on A' }), 'message:edit');
  for (const m of await got) {
    assert.equal(m.content, 'edited on A');
    assert.equal(m.seq, 1);
  }
  got = onAll(all, 'message:deleted', (p) => p.messageId === m1.id);
  expectOk(await emitAck(aliceS, 'message:delete', { messageId: m1.id }), 'message:delete');
  for (const d of await got) assert.equal(d.conversationId, group.id);

  // The store agrees, whichever instance answers.
  for (const inst of [A, B, C]) {
    const h = await historyAfter(inst.url, carol, group.id, 0);
    assert.deepEqual(h.map((m) => m.seq), [1, 2], `history through ${inst.name}`);
    assert.ok(h[0].deletedAt, `message 1 is deleted (through ${inst.name})`);
  }
});

ftest('presence across instances: one user:online for the first socket anywhere, user:offline only when the last one goes', async () => {
  const alice = await register(A.url, 'alice');
  const bob = await register(B.url, 'bob');
  const dave = await register(B.url, 'dave'); // a co-member on B, for ordered round trips from B
  const group = await createConversation(A.url, alice, 'group', [bob.user.id, dave.user.id], 'presence');

  const aliceS = await chat(A.url, alice, 'alice@A');
  const daveS = await chat(B.url, dave, 'dave@B');
  const online = record(aliceS, 'user:online');
  const offline = record(aliceS, 'user:offline');
  const ofBob = (p) => p.userId === bob.user.id;

  /** Events published by `instance` after this point reach alice after what it published before. */
  const throughInstance = async (sock, user) => {
    const typed = once(aliceS, 'user:typing', 5000, (p) => p.userId === user.user.id);
    expectOk(await emitAck(sock, 'user:typing', { conversationId: group.id }), 'user:typing barrier');
    await typed;
  };

  // Every test starts from instances with no socket (see fleetTest): alice and dave are
  // counted once these read 1.
  await gaugeIs(A, 1);
  await gaugeIs(B, 1);
  const [bBefore, cBefore] = [1, 0];
  // bob's first socket anywhere (B): alice (A) learns he is online.
  const bobS = await chat(B.url, bob, 'bob@B');
  await online.waitFor(ofBob);
  await gaugeIs(B, bBefore + 1);

  // bob's second socket, on C: no second user:online. C counts the socket after it has
  // told presence (and published anything it had to), and C's later publications reach
  // alice after the earlier ones.
  const bobPhone = await login(C.url, bob);
  const bobPhoneS = await chat(C.url, bobPhone, 'bob-phone@C');
  await gaugeIs(C, cBefore + 1);
  await throughInstance(bobPhoneS, bob);
  assert.equal(online.matching(ofBob).length, 1, 'a second device on another instance announced bob online again');

  // bob's socket on B goes: he is still online on C, so no user:offline.
  closeSocket(bobS);
  await gaugeIs(B, bBefore); // only dave left there
  await throughInstance(daveS, dave);
  await throughInstance(bobPhoneS, bob);
  assert.equal(offline.matching(ofBob).length, 0, 'user:offline while bob still had a socket on C');

  // The last one (C) goes: exactly one user:offline, with lastSeen.
  closeSocket(bobPhoneS);
  const off = await offline.waitFor(ofBob);
  assert.ok(typeof off.lastSeen === 'string' && !Number.isNaN(Date.parse(off.lastSeen)), `lastSeen: ${JSON.stringify(off)}`);
  await gaugeIs(C, cBefore);
  await throughInstance(daveS, dave);
  assert.equal(offline.matching(ofBob).length, 1);
  assert.equal(online.matching(ofBob).length, 1);

  // REST on any instance says offline now.
  const u = expectStatus(await api(C.url, 'GET', `/api/v1/users/${bob.user.id}`, alice.accessToken), 200, 'GET user');
  assert.equal(u.status, 'offline');
});

ftest('membership across instances: alice adds carol on A; carol on C gets conversation:new and then the group\'s messages', async () => {
  const alice = await register(A.url, 'alice');
  const bob = await register(B.url, 'bob');
  const carol = await register(C.url, 'carol');
  const group = await createConversation(A.url, alice, 'group', [bob.user.id], 'growing');

  const aliceS = await chat(A.url, alice, 'alice@A');
  const bobS = await chat(B.url, bob, 'bob@B');
  const carolS = await chat(C.url, carol, 'carol@C');
  const carolMessages = record(carolS, 'message:new');

  await sendMessage(aliceS, group.id, 'before carol');
  await roundTrip(carolS);

  const added = once(carolS, 'conversation:new', 5000, (c) => c.id === group.id);
  const res = await api(A.url, 'POST', `/api/v1/conversations/${group.id}/members`, alice.accessToken, { userIds: [carol.user.id] });
  expectStatus(res, [200, 201], 'add carol');
  const conv = await added;
  assert.ok(conv.participants.some((p) => p.userId === carol.user.id), 'conversation:new lists carol');

  // Her socket on C joined the room live (no reconnect): messages sent on A and B reach her.
  const fromA = await sendMessage(aliceS, group.id, 'welcome carol');
  const fromB = await sendMessage(bobS, group.id, 'hi carol');
  const seen = await carolMessages.waitForCount(2, inConv(group.id));
  assert.deepEqual(seen.map((m) => m.id), [fromA.id, fromB.id]);
  assert.ok(!carolMessages.events.some((m) => m.content === 'before carol'), 'carol got a message from before she joined');
});

ftest('logout on A disconnects the session\'s sockets on B and C (both namespaces)', async () => {
  const bob = await register(A.url, 'bob');
  const other = await login(A.url, bob); // another session of bob, which must stay
  const chatB = await chat(B.url, bob, 'bob@B');
  const chatC = await chat(C.url, bob, 'bob@C');
  const rtcC = await rtc(C.url, bob, 'bob/rtc@C');
  const otherB = await chat(B.url, other, 'bob-other-session@B');

  const gone = [disconnected(chatB), disconnected(chatC), disconnected(rtcC)];
  expectStatus(await api(A.url, 'POST', '/api/v1/auth/logout', bob.accessToken), 204, 'logout');
  const reasons = await Promise.all(gone);
  for (const r of reasons) assert.equal(r, 'io server disconnect');

  // The other session is untouched, and the ended one cannot reconnect anywhere.
  await roundTrip(otherB);
  assert.ok(otherB.connected);
  await assert.rejects(chat(C.url, bob, 'bob-again@C'), (err) => err.message === 'unauthorized');
});

ftest('a call across instances: alice on A rings bob on B and C; C answers; B stops ringing; SDP and ICE relayed A<->C, early ICE included', async () => {
  const alice = await register(A.url, 'alice');
  const bob = await register(B.url, 'bob');
  const aliceR = await rtc(A.url, alice, 'alice/rtc@A');
  const bobB = await rtc(B.url, bob, 'bob/rtc@B');
  const bobC = await rtc(C.url, bob, 'bob/rtc@C');

  const rings = onAll([bobB, bobC], 'call:incoming');
  const ack = expectOk(await emitAck(aliceR, 'call:initiate', { calleeId: bob.user.id, type: 'video' }), 'call:initiate');
  const callId = ack.callId;
  for (const inc of await rings) {
    assert.equal(inc.callId, callId);
    assert.equal(inc.callerId, alice.user.id);
    assert.equal(inc.type, 'video');
  }

  // Early signals, before anyone answered: an offer and a candidate wait for bob's device.
  const atB = { offer: record(bobB, 'offer'), ice: record(bobB, 'ice-candidate') };
  const atC = { offer: record(bobC, 'offer'), ice: record(bobC, 'ice-candidate') };
  const earlyOffer = { type: 'offer', sdp: 'v=0 early-offer' };
  const earlyIce = { candidate: 'candidate:1 1 udp 1 10.0.0.1 5000 typ host', sdpMid: '0', sdpMLineIndex: 0 };
  expectOk(await emitAck(aliceR, 'offer', { callId, sdp: earlyOffer }), 'early offer');
  expectOk(await emitAck(aliceR, 'ice-candidate', { callId, candidate: earlyIce }), 'early ice');
  await barriers([bobB, bobC]);
  assert.equal(atC.ice.events.length + atB.ice.events.length, 0, 'a candidate reached bob before he joined');

  // bob answers on C: alice learns it, B gets answered_elsewhere, C gets the early signals.
  const answered = once(aliceR, 'call:answered', 5000, (p) => p.callId === callId);
  const elsewhere = once(bobB, 'call:ended', 5000, (p) => p.callId === callId);
  expectOk(await emitAck(bobC, 'call:answer', { callId }), 'call:answer');
  assert.equal((await answered).userId, bob.user.id);
  assert.equal((await elsewhere).reason, 'answered_elsewhere');
  const offerAtC = await atC.offer.waitFor((p) => p.callId === callId);
  assert.deepEqual([offerAtC.from, offerAtC.sdp], [alice.user.id, earlyOffer]);
  const iceAtC = await atC.ice.waitFor((p) => p.callId === callId);
  assert.deepEqual([iceAtC.from, iceAtC.candidate], [alice.user.id, earlyIce]);

  // Live relay both ways between A and C.
  const answerSdp = { type: 'answer', sdp: 'v=0 answer-from-C' };
  const gotAnswer = once(aliceR, 'answer', 5000, (p) => p.callId === callId);
  expectOk(await emitAck(bobC, 'answer', { callId, sdp: answerSdp }), 'answer');
  assert.deepEqual([(await gotAnswer).from, (await gotAnswer).sdp], [bob.user.id, answerSdp]);

  const iceFromC = { candidate: 'candidate:2 1 udp 1 10.0.0.2 6000 typ host', sdpMid: '0', sdpMLineIndex: 0 };
  const gotIceAtA = once(aliceR, 'ice-candidate', 5000, (p) => p.callId === callId);
  expectOk(await emitAck(bobC, 'ice-candidate', { callId, candidate: iceFromC }), 'ice from C');
  assert.deepEqual((await gotIceAtA).candidate, iceFromC);

  const iceFromA = { candidate: 'candidate:3 1 udp 1 10.0.0.3 7000 typ host', sdpMid: '0', sdpMLineIndex: 0 };
  const gotIceAtC = atC.ice.waitForCount(2, (p) => p.callId === callId);
  expectOk(await emitAck(aliceR, 'ice-candidate', { callId, candidate: iceFromA }), 'ice from A');
  assert.deepEqual((await gotIceAtC)[1].candidate, iceFromA);

  // bob's device on B, which did not answer, saw none of the signalling.
  await rtcRoundTrip(bobB);
  assert.equal(atB.offer.events.length + atB.ice.events.length, 0, 'the device that did not answer got SDP/ICE');

  // alice hangs up: C learns it.
  const ended = once(bobC, 'call:ended', 5000, (p) => p.callId === callId);
  expectOk(await emitAck(aliceR, 'call:end', { callId }), 'call:end');
  assert.equal((await ended).reason, 'ended');
  const stored = expectStatus(await api(B.url, 'GET', `/api/v1/calls/${callId}`, bob.accessToken), 200, 'GET call');
  assert.equal(stored.status, 'ended');
});

ftest('an unanswered call ends as missed exactly once per socket, whatever instance rings or sweeps', async () => {
  const alice = await register(A.url, 'alice');
  const bob = await register(B.url, 'bob');
  const aliceR = await rtc(A.url, alice, 'alice/rtc@A');
  const bobB = await rtc(B.url, bob, 'bob/rtc@B');
  const bobC = await rtc(C.url, bob, 'bob/rtc@C');
  const sockets = [aliceR, bobB, bobC];
  const ended = sockets.map((s) => record(s, 'call:ended'));

  const rings = onAll([bobB, bobC], 'call:incoming');
  const started = Date.now();
  const { callId } = expectOk(await emitAck(aliceR, 'call:initiate', { calleeId: bob.user.id, type: 'audio' }), 'call:initiate');
  await rings;

  const ofCall = (p) => p.callId === callId;
  const firsts = await Promise.all(ended.map((r) => r.waitFor(ofCall, RING_TIMEOUT_MS + 10_000)));
  const rangFor = Date.now() - started;
  for (const e of firsts) assert.equal(e.reason, 'missed');
  assert.ok(rangFor >= RING_TIMEOUT_MS - 100, `missed after ${rangFor} ms, before RING_TIMEOUT_MS=${RING_TIMEOUT_MS}`);

  // Every instance's sweeper now runs twice more (so one whole sweep started after the
  // call was missed); whatever they emit for this call has reached the sockets after a
  // barrier on each.
  const base = await Promise.all([A, B, C].map(sweeps));
  await Promise.all(
    [A, B, C].map((inst, i) => waitUntil(`${inst.name} swept twice more`, async () => (await sweeps(inst)) >= base[i] + 2, 15_000, 100)),
  );
  await barriers(sockets);
  ended.forEach((r, i) => {
    const mine = r.matching(ofCall);
    assert.equal(mine.length, 1, `${sockets[i].label} got ${mine.length} call:ended for the call: ${JSON.stringify(mine)}`);
  });
  const stored = expectStatus(await api(C.url, 'GET', `/api/v1/calls/${callId}`, bob.accessToken), 200, 'GET call');
  assert.equal(stored.status, 'missed');
});

ftest('gap-free seq: alice (A), bob (B) and carol (C) each send 30 messages at once into one group', async () => {
  const alice = await register(A.url, 'alice');
  const bob = await register(B.url, 'bob');
  const carol = await register(C.url, 'carol');
  const group = await createConversation(A.url, alice, 'group', [bob.user.id, carol.user.id], 'race');
  const senders = [
    [alice, await chat(A.url, alice, 'alice@A')],
    [bob, await chat(B.url, bob, 'bob@B')],
    [carol, await chat(C.url, carol, 'carol@C')],
  ];
  const recs = senders.map(([, s]) => record(s, 'message:new'));
  const PER = 30;
  const TOTAL = PER * senders.length;

  const acks = await Promise.all(
    senders.flatMap(([u, s]) =>
      Array.from({ length: PER }, (_, i) => sendMessage(s, group.id, `${u.name} #${i}`, { clientMessageId: randomUUID() }, 15_000)),
    ),
  );
  const ackedSeqs = acks.map((m) => m.seq).sort((x, y) => x - y);
  assert.deepEqual(ackedSeqs, Array.from({ length: TOTAL }, (_, i) => i + 1), 'acked seqs are not 1..90');

  const expected = new Map(acks.map((m) => [m.seq, m.id]));
  for (const [i, r] of recs.entries()) {
    await r.waitForCount(TOTAL, inConv(group.id), 15_000);
    await roundTrip(senders[i][1]);
    const mine = r.matching(inConv(group.id));
    assert.equal(mine.length, TOTAL, `${senders[i][1].label} got ${mine.length} message:new, expected ${TOTAL} (duplicates?)`);
    const seqs = mine.map((m) => m.seq);
    assert.equal(new Set(seqs).size, TOTAL, `${senders[i][1].label} got a seq twice`);
    for (const m of mine) assert.equal(m.id, expected.get(m.seq), `${senders[i][1].label}: seq ${m.seq} is another message`);
    // One sender's messages arrive in the order of their seqs (one instance, one lane).
    for (const [u] of senders) {
      const fromU = mine.filter((m) => m.senderId === u.user.id).map((m) => m.seq);
      assert.deepEqual(fromU, [...fromU].sort((x, y) => x - y), `${senders[i][1].label}: ${u.name}'s messages out of seq order`);
    }
  }

  const h = await historyAfter(B.url, bob, group.id, 0);
  assert.deepEqual(h.map((m) => m.seq), Array.from({ length: TOTAL }, (_, i) => i + 1));
  assert.deepEqual(h.map((m) => m.id), h.map((m) => expected.get(m.seq)));
});
