// npm's socket.io-client 4.x, 3.x and 2.x against `quckchat conformance` (ALLOW_EIO3=true):
// what the raw suites check packet by packet, seen through the real clients, over
// WebSocket and over long-polling alone. Events with several arguments and binary
// (Buffers) come back as `message-back` and as acks; namespaces connect or are refused.

import assert from 'node:assert/strict';
import { after, afterEach, before, describe, test } from 'node:test';

import { startConformance } from './process.mjs';
import { CLIENTS, closeAllClients, connected, createSocket, nextEvent, transportOf } from './clients.mjs';

const T = { timeout: 30_000 };
const TRANSPORTS = [['websocket'], ['polling']];
/** How long an answer may take (locally it takes milliseconds). */
const ANSWER_MS = 5000;

let server;
before(async () => {
  server = await startConformance({ ALLOW_EIO3: 'true' });
});
afterEach(() => closeAllClients());
after(async () => {
  closeAllClients();
  if (server) await server.stop();
});

const connect = (client, ns, transports, token) =>
  createSocket(client, `${server.url}${ns}`, { transports, reconnection: false, timeout: 10_000, token });

/** The client's view of a refused namespace: `connect_error` (3.x, 4.x) or `error` (2.x). */
function refusal(err) {
  const data = err.data ?? err;
  if (typeof data === 'string') return data;
  if (data && typeof data.message === 'string') return data.message;
  return err.message;
}

/** Emits and resolves with all the ack's arguments. */
function emitWithAckArgs(socket, event, ...args) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ack for ${event} within ${ANSWER_MS} ms`)), ANSWER_MS);
    socket.emit(event, ...args, (...ackArgs) => {
      clearTimeout(timer);
      resolve(ackArgs);
    });
  });
}

for (const client of CLIENTS) {
  for (const transports of TRANSPORTS) {
    const where = `${client.name} over ${transports.join('+')}`;
    // 2.x over polling reads binary attachments since vendor/engineioxide frames them for v3.

    describe(where, () => {
      test('connects to / and /custom; `auth` carries the handshake auth (2.x has none: {})', T, async () => {
        const main = connect(client, '/', transports, 'abc');
        const auth = nextEvent(main, 'auth', { label: `${where} auth` });
        await connected(main, where);
        assert.equal(transportOf(main), transports[0]);
        // 2.x cannot send `auth`; the token it puts in the query is not the auth payload.
        assert.deepEqual(await auth, client.engineIo === 3 ? {} : client.key === 'v4' ? { token: 'Bearer abc' } : { token: 'abc' });
        const custom = connect(client, '/custom', transports);
        const customAuth = nextEvent(custom, 'auth', { label: `${where} /custom auth` });
        await connected(custom, `${where} /custom`);
        assert.deepEqual(await customAuth, {});
      });

      test('`message` with several arguments comes back as `message-back`', T, async () => {
        const socket = await connected(connect(client, '/', transports), where);
        const back = new Promise((resolve) => socket.once('message-back', (...args) => resolve(args)));
        socket.emit('message', 1, '2', { 3: [true] }, 'é€🚀', null);
        assert.deepEqual(await back, [1, '2', { 3: [true] }, 'é€🚀', null]);
      });

      test('binary arguments come back as binary', T, async () => {
        const socket = await connected(connect(client, '/', transports), where);
        const back = new Promise((resolve) => socket.once('message-back', (...args) => resolve(args)));
        socket.emit('message', 'file', Buffer.from([1, 2, 3]), { nested: Buffer.from([4, 5]) });
        const [name, data, obj] = await Promise.race([
          back,
          new Promise((_, reject) => setTimeout(() => reject(new Error(`no message-back within ${ANSWER_MS} ms`)), ANSWER_MS)),
        ]);
        assert.equal(name, 'file');
        assert.deepEqual([...Buffer.from(data)], [1, 2, 3]);
        assert.deepEqual([...Buffer.from(obj.nested)], [4, 5]);
      });

      test('`message-with-ack` is acked with its arguments, binary included', T, async () => {
        const socket = await connected(connect(client, '/', transports), where);
        assert.deepEqual(await emitWithAckArgs(socket, 'message-with-ack', 1, '2', { 3: [false] }), [1, '2', { 3: [false] }]);
        const [text, data] = await emitWithAckArgs(socket, 'message-with-ack', 'bin', Buffer.from([7, 8, 9]));
        assert.equal(text, 'bin');
        assert.deepEqual([...Buffer.from(data)], [7, 8, 9]);
      });

      test('an unknown namespace is refused with "Invalid namespace"', T, async () => {
        const socket = connect(client, '/random', transports);
        await assert.rejects(connected(socket, `${where} /random`), (err) => {
          assert.equal(refusal(err), 'Invalid namespace', `the client saw ${JSON.stringify(err.data ?? err.message)}`);
          return true;
        });
      });
    });
  }
}
