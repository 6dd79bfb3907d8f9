// Faults under a steady message stream, each on a fleet of its own: an instance killed
// with SIGKILL, Redis restarted, Redis down for long, PostgreSQL out of reach. Each test
// prints what it measured on lines starting with `MEASURED:`.
//
// The clients do what a real client does (lib/stream.mjs): keep what they saw by seq,
// reconnect to another instance when their socket drops, catch up with `afterSeq`,
// resend un-acked messages with the same clientMessageId. Afterwards every client's view
// must equal the store's history: seqs 1..N with no gap, no duplicate, nothing acked
// missing.

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after } from 'node:test';

import { chat, createConversation, emitAck, historyAfter, record, register } from './lib/client.mjs';
import { fleetTest, measured, openFleet } from './lib/harness.mjs';
import { chatSockets, healthStatus, pause, waitUntil } from './lib/procs.mjs';
import { StreamClient, checkHistory, compareWithHistory } from './lib/stream.mjs';

// Each test opens its own fleet and closes it when it ends (closeAfter).
let F = null;
after(async () => {
  if (F) await F.close().catch(() => {});
});

async function newFleet(opts) {
  F = null;
  F = await openFleet(opts);
  return F;
}

const secs = (ms) => Number((ms / 1000).toFixed(3));

/**
 * Runs `tick(i)` every `everyMs` until `stop()` is true (pacing a load; nothing waits on
 * it for an effect).
 */
async function pace(everyMs, stop, tick) {
  for (let i = 0; !stop(); i++) {
    const next = Date.now() + everyMs;
    tick(i);
    const wait = next - Date.now();
    if (wait > 0) await pause(wait);
  }
}

// ---------------------------------------------------------------------------

fleetTest('a. kill -9 one instance of three during a 20 msg/s stream: its clients move, catch up, resend; every view equals the history', () => F, async () => {
  const f = await newFleet();
  const { A, B, C } = f;
  const instances = [A, B, C];
  // Two users per instance, all in one group.
  const homes = [A, A, B, B, C, C];
  const users = [];
  for (const [i, home] of homes.entries()) users.push(await register(home.url, `u${i}${home.name}`));
  const group = await createConversation(A.url, users[0], 'group', users.slice(1).map((u) => u.user.id), 'kill -9');

  const clients = users.map((u, i) => new StreamClient({ user: u, convId: group.id, instances, home: homes[i] }));
  await Promise.all(clients.map((c) => c.start()));

  const RATE = 20; // messages per second, all senders together
  const DURATION_MS = 4000;
  const KILL_AT_MS = 1500;
  const every = (1000 * clients.length) / RATE;
  const t0 = Date.now();
  let killedAt = null;
  let killed = null;
  // Each client sends on its own beat, staggered. After KILL_AT_MS, C dies right after one
  // of its clients emitted a message (so at least one send is in flight, never acked).
  await Promise.all(
    clients.map(async (c, k) => {
      await pause((every / clients.length) * k);
      await pace(every, () => Date.now() - t0 >= DURATION_MS, (i) => {
        c.send(`${c.label} #${i}`);
        if (killed === null && c.home === C && Date.now() - t0 >= KILL_AT_MS) {
          killedAt = Date.now();
          killed = C.kill();
        }
      });
    }),
  );
  await killed;
  assert.ok(killedAt !== null, 'C was not killed');

  const moved = clients.filter((c) => c.home === C);
  // Everyone on C was dropped and reconnected elsewhere.
  await Promise.all(
    moved.map((c) =>
      waitUntil(
        `${c.label} reconnected`,
        () => {
          if (c.reconnectError) throw c.reconnectError;
          return c.reconnectedAt !== null && !c.reconnecting;
        },
        30_000,
      ),
    ),
  );
  for (const c of moved) assert.notEqual(c.instance.name, 'C', `${c.label} reconnected to the dead instance`);
  const allReconnectedAt = Math.max(...moved.map((c) => c.reconnectedAt));
  const allCaughtUpAt = Math.max(...moved.map((c) => c.caughtUpAt));

  // Every message is acked in the end (the un-acked ones were resent with the same id).
  await Promise.all(clients.map((c) => c.flush(20_000)));
  // A client fills any hole (and its tail) by seq.
  await Promise.all(clients.map((c) => c.catchUp()));

  const history = await historyAfter(A.url, users[0], group.id, 0);
  const sent = clients.reduce((n, c) => n + c.sent.length, 0);
  const acked = clients.reduce((n, c) => n + c.acked.size, 0);
  measured('a. kill -9', {
    instances: 3,
    killed: 'C',
    clients_moved: moved.length,
    rate_msg_per_s: RATE,
    stream_s: DURATION_MS / 1000,
    kill_to_all_reconnected_s: secs(allReconnectedAt - killedAt),
    kill_to_all_caught_up_s: secs(allCaughtUpAt - killedAt),
    sent,
    acked,
    resent_same_id: clients.reduce((n, c) => n + c.resent, 0),
    ack_failures: clients.reduce((n, c) => n + c.ackFailures.length, 0),
    live_received: clients.reduce((n, c) => n + c.liveReceived, 0),
    caught_up: clients.reduce((n, c) => n + c.caughtUp, 0),
    stored: history.length,
  });

  assert.deepEqual(checkHistory(history), []);
  assert.equal(history.length, sent, 'every message sent is stored exactly once');
  assert.equal(acked, sent);
  const byCmid = new Map(history.map((m) => [m.clientMessageId, m]));
  for (const c of clients) {
    for (const [cmid, { message }] of c.acked) {
      const stored = byCmid.get(cmid);
      assert.ok(stored, `${c.label}: acked message ${cmid} is not in the history`);
      assert.equal(stored.id, message.id, `${c.label}: the ack and the store disagree on ${cmid}`);
    }
  }
  const problems = clients.flatMap((c) => compareWithHistory(c, history));
  assert.deepEqual(problems, []);
  // The survivors never died.
  assert.ok(A.alive() && B.alive());
  for (const c of clients) c.close();
}, { closeAfter: true });

fleetTest('b. Redis restarted mid-stream: local delivery goes on, cross-instance delivery resumes, gaps are filled by seq', () => F, async () => {
  const f = await newFleet({ names: ['A', 'B'] });
  const { A, B } = f;
  const instances = [A, B];
  const [a1u, a2u, b1u] = [await register(A.url, 'a1'), await register(A.url, 'a2'), await register(B.url, 'b1')];
  const group = await createConversation(A.url, a1u, 'group', [a2u.user.id, b1u.user.id], 'redis restart');
  const a1 = new StreamClient({ user: a1u, convId: group.id, instances, home: A, ackTimeoutMs: 10_000 });
  const a2 = new StreamClient({ user: a2u, convId: group.id, instances, home: A, ackTimeoutMs: 10_000 });
  const b1 = new StreamClient({ user: b1u, convId: group.id, instances, home: B, ackTimeoutMs: 10_000 });
  const clients = [a1, a2, b1];
  await Promise.all(clients.map((c) => c.start()));

  const OUTAGE_MS = 1500;
  const t0 = Date.now();
  let killedAt = null;
  let restartedAt = null;
  let resumedAt = null; // first message sent on A after the restart that B got live
  let resumedMsg = null;
  const sentAt = new Map(); // cmid → time sent
  b1.onLive = (m, at) => {
    const s = sentAt.get(m.clientMessageId);
    if (restartedAt && resumedAt === null && m.senderId !== b1u.user.id && s !== undefined && s >= restartedAt) {
      resumedAt = at;
      resumedMsg = m;
    }
  };
  // a1 and a2 (both on A) and b1 (B) send every 200 ms each.
  const streaming = Promise.all(
    [a1, a2, b1].map(async (c, k) => {
      await pause(70 * k);
      await pace(
        200,
        () => Date.now() - t0 > 20_000 || (resumedAt !== null && Date.now() - resumedAt > 1000),
        (i) => sentAt.set(c.send(`${c.label} #${i}`), Date.now()),
      );
    }),
  );
  await pause(1000);
  killedAt = Date.now();
  await f.redis.kill();
  await pause(OUTAGE_MS);
  await f.redis.start();
  restartedAt = Date.now();
  await streaming;

  // Local delivery during the outage: messages between a1 and a2 (same instance), sent
  // while Redis was down, that the other one got before Redis was back.
  const localPairs = [
    [a1, a2],
    [a2, a1],
  ];
  let exchangedInOutage = 0;
  let localMaxLatency = 0;
  let sentInOutage = 0;
  for (const [from, to] of localPairs) {
    for (const { cmid, sentAt: s } of from.sent) {
      if (s < killedAt || s >= restartedAt) continue;
      sentInOutage += 1;
      const got = [...to.seen.values()].find((v) => v.clientMessageId === cmid && v.how === 'live');
      if (got) {
        localMaxLatency = Math.max(localMaxLatency, got.at - s);
        if (got.at < restartedAt) exchangedInOutage += 1;
      }
    }
  }

  await Promise.all(clients.map((c) => c.flush(20_000)));
  await Promise.all(clients.map((c) => c.catchUp()));
  const history = await historyAfter(B.url, b1u, group.id, 0);
  measured('b. Redis restart', {
    outage_s: secs(restartedAt - killedAt),
    cross_instance_resumed_after_restart_s: resumedAt === null ? 'never' : secs(resumedAt - restartedAt),
    resumed_with_seq: resumedMsg ? resumedMsg.seq : 'none',
    local_sent_during_outage: sentInOutage,
    local_delivered_during_outage: exchangedInOutage,
    local_max_latency_s: secs(localMaxLatency),
    sent: clients.reduce((n, c) => n + c.sent.length, 0),
    acked: clients.reduce((n, c) => n + c.acked.size, 0),
    ack_failures: clients.reduce((n, c) => n + c.ackFailures.length, 0),
    ack_timeouts: clients.reduce((n, c) => n + c.ackTimeouts.length, 0),
    caught_up_by_b1: b1.caughtUp,
    caught_up_by_a1_a2: a1.caughtUp + a2.caughtUp,
    stored: history.length,
  });

  // Every expectation is checked, and all that fail are reported together.
  const problems = [];
  if (resumedAt === null) problems.push('cross-instance delivery did not resume within 20 s of the restart');
  if (sentInOutage === 0) problems.push('nothing was sent during the outage');
  if (sentInOutage > 0 && exchangedInOutage === 0) {
    problems.push(
      `local delivery stopped during the Redis outage: of ${sentInOutage} messages sent between two sockets on A while Redis was down, ` +
        `none arrived before Redis was back (max latency ${localMaxLatency} ms)`,
    );
  }
  problems.push(...checkHistory(history), ...clients.flatMap((c) => compareWithHistory(c, history)));
  for (const c of clients) c.close();
  assert.deepEqual(problems, []);
}, { closeAfter: true });

fleetTest('b2. while Redis is down, a message from A to a member on B is acked (stored) and B gets it by catch-up', () => F, async () => {
  const f = await newFleet({ names: ['A', 'B'] });
  const { A, B } = f;
  const alice = await register(A.url, 'alice');
  const bob = await register(B.url, 'bob');
  const conv = await createConversation(A.url, alice, 'single', [bob.user.id]);
  const aliceS = await chat(A.url, alice, 'alice@A');
  const bobS = await chat(B.url, bob, 'bob@B');
  const bobLive = record(bobS, 'message:new');

  await f.redis.kill();
  const downAt = Date.now();
  const cmid = randomUUID();
  let ack;
  let ackError = null;
  try {
    ack = await emitAck(aliceS, 'message:send', { conversationId: conv.id, content: 'sent while Redis is down', clientMessageId: cmid }, 15_000);
  } catch (err) {
    ackError = err;
  }
  const ackMs = Date.now() - downAt;
  const healthWhileDown = await healthStatus(A);
  await f.redis.start();
  const upAt = Date.now();

  // B catches up by seq (it may also have got it live, if Redis was back in time).
  const caught = await historyAfter(B.url, bob, conv.id, 0);
  measured('b2. send while Redis is down', {
    ack_after_s: secs(ackMs),
    ack: ackError ? `none (${ackError.message})` : JSON.stringify(ack),
    redis_down_s: secs(upAt - downAt),
    health_of_A_while_redis_down: healthWhileDown,
    caught_up_by_bob: caught.length,
    bob_got_live: bobLive.events.length,
  });

  assert.equal(ackError, null, 'no ack while Redis was down');
  assert.equal(ack && ack.success, true, `the send was not acked as stored while Redis was down: ${JSON.stringify(ack)}`);
  const mine = caught.find((m) => m.clientMessageId === cmid);
  assert.ok(mine, 'bob did not get the message by catch-up');
  assert.equal(mine.id, ack.message.id);
}, { closeAfter: true });

fleetTest('b3. after a long Redis outage (10 s), cross-instance delivery resumes by itself', () => F, async () => {
  const f = await newFleet({ names: ['A', 'B'] });
  const { A, B } = f;
  const alice = await register(A.url, 'alice');
  const bob = await register(B.url, 'bob');
  const conv = await createConversation(A.url, alice, 'single', [bob.user.id]);
  const aliceS = await chat(A.url, alice, 'alice@A');
  const bobS = await chat(B.url, bob, 'bob@B');
  const bobLive = record(bobS, 'message:new');
  // B is idle from here on: bob's socket is counted (presence told, user:online published).
  await waitUntil('B counts bob\'s socket', async () => (await chatSockets(B)) === 1, 10_000);

  await f.redis.kill();
  const downAt = Date.now();
  await pause(10_000); // the outage: nobody sends
  await f.redis.start();
  const upAt = Date.now();

  // alice (A) sends every 500 ms until bob (B, which only listens) gets one live.
  let attempts = 0;
  let acked = 0;
  const sent = new Set();
  let resumedAt;
  const resumed = bobLive.waitFor((m) => sent.has(m.clientMessageId), 10_500).then(
    () => (resumedAt = Date.now()),
    () => (resumedAt = null),
  );
  await pace(
    500,
    () => resumedAt !== undefined || Date.now() - upAt > 10_000,
    () => {
      const cmid = randomUUID();
      sent.add(cmid);
      attempts += 1;
      emitAck(aliceS, 'message:send', { conversationId: conv.id, content: `after the outage ${attempts}`, clientMessageId: cmid }, 10_000)
        .then((a) => {
          if (a && a.success) acked += 1;
        })
        .catch(() => {});
    },
  );
  await resumed;
  measured('b3. long Redis outage', {
    outage_s: secs(upAt - downAt),
    cross_instance_resumed_after_restart_s: resumedAt === null ? 'never (10 s)' : secs(resumedAt - upAt),
    sends_after_restart: attempts,
    acked,
    bob_got_live: bobLive.events.length,
  });
  assert.ok(resumedAt !== null, `B received nothing from A within 10 s after a 10 s Redis outage (${attempts} messages sent on A, ${acked} acked)`);
}, { closeAfter: true });

fleetTest('c. PostgreSQL out of reach for ~3 s: sends fail (not hang forever), no instance crashes, health 503 then 200, sends succeed again by themselves', () => F, async () => {
  const f = await newFleet({ pgProxy: true });
  const { A, B, C } = f;
  const instances = [A, B, C];
  const alice = await register(A.url, 'alice');
  const bob = await register(B.url, 'bob');
  const conv = await createConversation(A.url, alice, 'single', [bob.user.id]);
  const ACK_TIMEOUT = 4000;
  const aliceC = new StreamClient({ user: alice, convId: conv.id, instances, home: A, ackTimeoutMs: ACK_TIMEOUT });
  const bobC = new StreamClient({ user: bob, convId: conv.id, instances, home: B, ackTimeoutMs: ACK_TIMEOUT });
  await Promise.all([aliceC.start(), bobC.start()]);
  for (const i of instances) assert.equal(await healthStatus(i), 200, `${i.name} is not healthy before the cut`);

  const CUT_MS = 3000;
  const t0 = Date.now();
  let cutAt = null;
  let restoredAt = null;
  let firstOkAfterRestore = null;
  const results = []; // {sentAt, ok, code|timeout}
  const sendOne = (c, i) => {
    const cmid = c.send(`${c.label} #${i}`);
    const sentAt = Date.now();
    const entry = { sentAt, who: c.label };
    results.push(entry);
    const check = setInterval(() => {
      if (c.acked.has(cmid)) {
        entry.ok = true;
        entry.at = c.acked.get(cmid).ackedAt;
        if (restoredAt && sentAt >= restoredAt && (firstOkAfterRestore === null || entry.at < firstOkAfterRestore)) firstOkAfterRestore = entry.at;
      } else if (c.ackFailures.some((x) => x.cmid === cmid)) {
        entry.ok = false;
        entry.code = c.ackFailures.find((x) => x.cmid === cmid).code;
      } else if (Date.now() - sentAt > ACK_TIMEOUT) {
        entry.ok = false;
        entry.code = 'timeout';
      } else {
        return;
      }
      clearInterval(check);
    }, 20);
  };
  const done = () => Date.now() - t0 > 30_000 || (firstOkAfterRestore !== null && Date.now() - firstOkAfterRestore > 500);
  const streaming = Promise.all([
    pace(200, done, (i) => sendOne(aliceC, i)),
    (async () => {
      await pause(100);
      await pace(400, done, (i) => sendOne(bobC, i));
    })(),
  ]);

  await pause(1000);
  f.proxy.cut();
  cutAt = Date.now();
  // During the cut every instance answers its health check, with 503; none exits.
  const first503 = await Promise.all(
    instances.map((i) =>
      waitUntil(`${i.name} answers 503 while PostgreSQL is out of reach`, async () => ((await healthStatus(i)) === 503 ? Date.now() : false), 15_000, 100),
    ),
  );
  const left = CUT_MS - (Date.now() - cutAt);
  if (left > 0) await pause(left);
  f.proxy.restore();
  restoredAt = Date.now();
  const back200 = await Promise.all(
    instances.map((i) => waitUntil(`${i.name} answers 200 after PostgreSQL is back`, async () => ((await healthStatus(i)) === 200 ? Date.now() : false), 30_000, 100)),
  );
  await streaming;
  // Let every outstanding ack settle.
  await waitUntil('every send has an outcome', () => results.every((r) => r.ok !== undefined), 10_000);

  const during = results.filter((r) => r.sentAt >= cutAt && r.sentAt < restoredAt);
  const internal = during.filter((r) => r.code === 'internal').length;
  const timeouts = during.filter((r) => r.code === 'timeout').length;
  const otherFail = during.filter((r) => r.ok === false && r.code !== 'internal' && r.code !== 'timeout');
  // Acked while PostgreSQL was still cut would be a lie; acked once it was back (a send
  // that waited for a connection) is fine.
  const okDuring = during.filter((r) => r.ok === true && r.at < restoredAt).length;
  const okLate = during.filter((r) => r.ok === true && r.at >= restoredAt).length;

  // Everything not acked is sent again (same ids) now that PostgreSQL is back.
  await Promise.all([aliceC, bobC].map((c) => c.flush(20_000)));
  await Promise.all([aliceC, bobC].map((c) => c.catchUp()));
  const history = await historyAfter(C.url, bob, conv.id, 0);
  const sentTotal = aliceC.sent.length + bobC.sent.length;
  measured('c. PostgreSQL cut', {
    cut_s: secs(restoredAt - cutAt),
    sent_during_cut: during.length,
    failed_internal: internal,
    timed_out: timeouts,
    failed_other: otherFail.length,
    acked_during_cut: okDuring,
    acked_after_restore: okLate,
    health_503_after_s: secs(Math.max(...first503) - cutAt),
    health_200_after_restore_s: secs(Math.max(...back200) - restoredAt),
    first_successful_send_after_restore_s: firstOkAfterRestore === null ? 'never' : secs(firstOkAfterRestore - restoredAt),
    sent: sentTotal,
    resent_same_id: aliceC.resent + bobC.resent,
    stored: history.length,
  });

  for (const i of instances) assert.ok(i.alive(), `${i.name} died while PostgreSQL was out of reach: ${JSON.stringify(i.status())}`);
  assert.ok(during.length > 0, 'nothing was sent during the cut');
  assert.equal(okDuring, 0, 'a send was acked as stored while PostgreSQL was out of reach');
  assert.deepEqual(otherFail, [], 'a send during the cut failed with another code than internal');
  assert.ok(firstOkAfterRestore !== null, 'no send succeeded after PostgreSQL came back');
  assert.deepEqual(checkHistory(history), []);
  assert.equal(history.length, sentTotal, 'every message (resent with the same id) is stored exactly once');
  assert.deepEqual([aliceC, bobC].flatMap((c) => compareWithHistory(c, history)), []);
  for (const c of [aliceC, bobC]) c.close();
}, { closeAfter: true });
