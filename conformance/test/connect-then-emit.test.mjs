// Connect, then emit at once (issue 14): an event a client sends the moment it sees the
// CONNECT reply must find its handler and be acked, every time, on every namespace and
// over both transports.
//
// socketioxide sends CONNECT before it runs the (spawned) connect handler, so a handler
// installed there races the client's first event and an event that finds no handler is
// dropped without a word: the conformance profile lost about one first ack in twenty this
// way. Each round here opens a fresh connection, emits in the `connect` listener (the
// earliest moment a client can) and awaits the ack under a timeout; a lost ack fails the
// round. Rounds run a few at a time so that handshakes overlap as they do in production.
//
// CONNECT_EMIT_ROUNDS (default 200) sets the rounds per case.

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';

import { startConformance, startRealServer } from './process.mjs';
import { CLIENTS, api, register, singleConversation } from './clients.mjs';

const ROUNDS = Number(process.env.CONNECT_EMIT_ROUNDS ?? 200);
/** Rounds in flight at once. */
const PARALLEL = 4;
/** How long one round (connect, emit, ack) may take. Locally it takes milliseconds; the
 * budget is for a loaded 2-core CI box, and a lost ack never arrives however long we wait. */
const ROUND_MS = 15_000;
const T = { timeout: 600_000 };
const TRANSPORTS = [['websocket'], ['polling']];

/**
 * One round: connect with `client` to `url`, emit `event` with `args` inside the
 * `connect` listener, resolve with the ack's arguments. Rejects on a refusal or when the
 * ack does not come within ROUND_MS.
 */
function connectThenEmit(client, url, transports, token, event, args) {
  return new Promise((resolve, reject) => {
    const socket = client.create(url, { transports, reconnection: false, timeout: ROUND_MS, token });
    const done = (fn, value) => {
      clearTimeout(timer);
      socket.close();
      fn(value);
    };
    const timer = setTimeout(
      () => done(reject, new Error(`${event}: no ack within ${ROUND_MS} ms of connecting (connected: ${socket.connected})`)),
      ROUND_MS,
    );
    socket.once('connect', () => {
      socket.emit(event, ...args, (...ack) => done(resolve, ack));
    });
    const refused = (err) => done(reject, new Error(`refused: ${err?.message ?? JSON.stringify(err)}`));
    socket.once('connect_error', refused);
    socket.once('error', refused);
  });
}

/** Runs `round(i)` for i in 0..ROUNDS, PARALLEL at a time; fails with every lost round. */
async function rounds(round) {
  const failures = [];
  let next = 0;
  const worker = async () => {
    while (next < ROUNDS) {
      const i = next++;
      try {
        await round(i);
      } catch (err) {
        failures.push(`round ${i}: ${err.message}`);
      }
    }
  };
  await Promise.all(Array.from({ length: PARALLEL }, worker));
  assert.deepEqual(failures, [], `${failures.length} of ${ROUNDS} rounds failed`);
}

describe('conformance profile: `message-with-ack` emitted on connect is always acked', () => {
  let server;
  before(async () => {
    server = await startConformance({ ALLOW_EIO3: 'true' });
  });
  after(async () => {
    if (server) await server.stop();
  });

  for (const client of CLIENTS) {
    for (const transports of TRANSPORTS) {
      test(`${client.name} over ${transports[0]}: ${ROUNDS} rounds on /`, T, async () => {
        await rounds(async (i) => {
          const ack = await connectThenEmit(client, `${server.url}/`, transports, undefined, 'message-with-ack', [i, 'x']);
          assert.deepEqual(ack, [i, 'x']);
        });
      });
    }
  }
});

describe('real server: the first event on /chat and /webrtc is always answered', () => {
  let server;
  let alice;
  let conversation;
  before(async () => {
    // The message rate limit is raised: these rounds are one user sending fast on purpose.
    server = await startRealServer({
      TRANSPORTS: 'websocket,polling',
      RATE_LIMIT_MESSAGES_PER_SEC: '100000',
      RATE_LIMIT_USER_MESSAGES_PER_SEC: '100000',
      MAX_SOCKETS_PER_USER: '1000',
    });
    alice = await register(server.url, 'alice');
    const bob = await register(server.url, 'bob');
    conversation = await singleConversation(server.url, alice, bob);
  });
  after(async () => {
    if (server) await server.stop();
  });

  const v4 = CLIENTS[0];
  for (const transports of TRANSPORTS) {
    test(`/chat over ${transports[0]}: ${ROUNDS} rounds of message:send on connect, each stored`, T, async () => {
      const sent = [];
      await rounds(async (i) => {
        const clientMessageId = randomUUID();
        const [ack] = await connectThenEmit(v4, `${server.url}/chat`, transports, alice.accessToken, 'message:send', [
          { conversationId: conversation.id, content: `first ${i}`, clientMessageId },
        ]);
        assert.equal(ack?.success, true, JSON.stringify(ack));
        assert.equal(ack.message.clientMessageId, clientMessageId);
        sent.push(ack.message.id);
      });
      // Every acked message is in the history, once.
      const mine = new Set(sent);
      const stored = [];
      let afterSeq = 0;
      for (;;) {
        const page = await api(
          server.url,
          'GET',
          `/api/v1/messages/conversation/${conversation.id}?limit=100&afterSeq=${afterSeq}`,
          alice.accessToken,
        );
        assert.equal(page.status, 200, JSON.stringify(page.body));
        if (!page.body.data.length) break;
        for (const m of page.body.data) if (mine.has(m.id)) stored.push(m.id);
        afterSeq = page.body.data.at(-1).seq;
      }
      assert.equal(stored.length, sent.length, 'every acked message is stored, once');
      assert.equal(new Set(stored).size, sent.length, 'no acked message is stored twice');
    });

    test(`/webrtc over ${transports[0]}: ${ROUNDS} rounds of call:end on connect, each answered not_found`, T, async () => {
      await rounds(async () => {
        const [ack] = await connectThenEmit(v4, `${server.url}/webrtc`, transports, alice.accessToken, 'call:end', [
          { callId: randomUUID() },
        ]);
        assert.equal(ack?.success, false, JSON.stringify(ack));
        assert.equal(ack.error.code, 'not_found', JSON.stringify(ack));
      });
    });
  }
});
