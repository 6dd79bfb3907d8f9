// The client matrix against the REAL server (normal mode, auth on): socket.io-client 4.x,
// 3.x and 2.x (Engine.IO v3, token in the query), each over WebSocket only and, with
// TRANSPORTS=websocket,polling, over polling that then upgrades to WebSocket.
//
// Each case: the client under test (Alice) connects to /chat, sends a message and receives
// one from Bob (a 4.x client). Then the server goes away (SIGTERM) and a new process starts
// on the same port and data dir. Alice's client reconnects on its own, but only after Bob
// sent a message in her absence: she reaches the server through a TCP gate that the test
// keeps shut until then. Back, she catches up with `GET …?afterSeq=` and chats again.

import assert from 'node:assert/strict';
import { after, afterEach, describe, test } from 'node:test';

import { startRealServer } from './process.mjs';
import {
  CLIENTS,
  closeAllClients,
  connected,
  createSocket,
  emitAck,
  messagesAfter,
  nextEvent,
  record,
  register,
  sendMessage,
  singleConversation,
  startGate,
  transportOf,
  upgraded,
} from './clients.mjs';

const T = { timeout: 90_000 };

const MODES = [
  { name: 'websocket only', serverTransports: 'websocket', clientTransports: ['websocket'] },
  { name: 'polling, then upgrade', serverTransports: 'websocket,polling', clientTransports: ['polling', 'websocket'] },
];

/** Reconnection settings: quick retries, so the gate decides when Alice is back. */
const RECONNECT = { reconnection: true, reconnectionDelay: 100, reconnectionDelayMax: 500, randomizationFactor: 0, timeout: 10_000 };

const cleanups = [];
afterEach(async () => {
  closeAllClients();
  while (cleanups.length) await cleanups.pop()();
});
after(() => closeAllClients());

/** Bob: socket.io-client 4.x straight to the server over WebSocket, no reconnection. */
async function bobConnects(url, bob, label) {
  const socket = createSocket(CLIENTS[0], `${url}/chat`, {
    token: bob.accessToken,
    transports: ['websocket'],
    reconnection: false,
  });
  return connected(socket, label);
}

for (const mode of MODES) {
  describe(mode.name, () => {
    for (const client of CLIENTS) {
      test(`${client.name}: connect to /chat, chat both ways, survive a server restart and catch up`, T, async (t) => {
        const server = await startRealServer({ TRANSPORTS: mode.serverTransports });
        cleanups.push(() => server.stop());
        const gate = await startGate(server.port);
        cleanups.push(() => gate.stop());

        const alice = await register(server.url, 'alice');
        const bob = await register(server.url, 'bob');
        const conv = await singleConversation(server.url, alice, bob);
        const label = `alice (${client.name}, ${mode.name})`;

        // 1. Alice connects through the gate with the client under test.
        const aliceSocket = createSocket(client, `${gate.url}/chat`, {
          token: alice.accessToken,
          transports: mode.clientTransports,
          ...RECONNECT,
        });
        await connected(aliceSocket, label);
        if (mode.clientTransports[0] === 'polling') {
          await upgraded(aliceSocket, label);
        }
        assert.equal(transportOf(aliceSocket), 'websocket');
        const aliceNew = record(aliceSocket, 'message:new');

        let bobSocket = await bobConnects(server.url, bob, 'bob');
        let bobNew = record(bobSocket, 'message:new');

        // 2. Both ways, live.
        const m1 = await sendMessage(aliceSocket, conv.id, `hello from ${client.key} é€🚀`);
        assert.equal(m1.seq, 1);
        assert.equal(m1.senderId, alice.user.id);
        assert.equal((await bobNew.waitFor((m) => m.id === m1.id)).content, `hello from ${client.key} é€🚀`);
        const m2 = await sendMessage(bobSocket, conv.id, 'hi alice');
        assert.equal((await aliceNew.waitFor((m) => m.id === m2.id)).seq, 2);

        // 3. The server goes away; Alice's client notices and must not give up.
        gate.shut();
        const aliceDown = nextEvent(aliceSocket, 'disconnect', { ms: 15_000, label: `${label} disconnect` });
        await server.stopProcess();
        const reason = await aliceDown;
        t.diagnostic(`the client saw the server go with reason "${reason}"`);
        assert.notEqual(reason, 'io server disconnect', 'a server-sent DISCONNECT would stop the client reconnecting');
        assert.notEqual(reason, 'io client disconnect');

        // 4. A new process on the same port and data; Bob writes while Alice is away.
        await server.startProcess();
        bobSocket = await bobConnects(server.url, bob, 'bob (after the restart)');
        bobNew = record(bobSocket, 'message:new');
        const m3 = await sendMessage(bobSocket, conv.id, 'sent while you were away');
        assert.equal(m3.seq, 3);

        // 5. Alice may come back: her client reconnects by itself.
        const aliceBack = nextEvent(aliceSocket, 'connect', { ms: 30_000, label: `${label} reconnect` });
        gate.open();
        await aliceBack;
        if (mode.clientTransports[0] === 'polling') {
          await upgraded(aliceSocket, `${label} after reconnecting`);
        }
        assert.equal(transportOf(aliceSocket), 'websocket');

        // 6. She catches up on what she missed.
        const missed = await messagesAfter(server.url, alice, conv.id, 2);
        assert.deepEqual(
          missed.map((m) => [m.seq, m.content]),
          [[3, 'sent while you were away']],
        );
        // A round trip on her socket: anything pushed to her before it has arrived by now.
        const barrier = await emitAck(aliceSocket, 'message:send', { conversationId: conv.id, content: '' });
        assert.equal(barrier.success, false, `an empty message is refused: ${JSON.stringify(barrier)}`);
        assert.ok(!aliceNew.events.some((m) => m.id === m3.id), 'the message sent while she was away was not pushed live');

        // 7. And chats again, both ways, in the conversation's room.
        const m4 = await sendMessage(aliceSocket, conv.id, `back on ${client.key}`);
        assert.equal(m4.seq, 4);
        assert.equal((await bobNew.waitFor((m) => m.id === m4.id)).content, `back on ${client.key}`);
        const m5 = await sendMessage(bobSocket, conv.id, 'welcome back');
        assert.equal((await aliceNew.waitFor((m) => m.id === m5.id)).seq, 5);
      });
    }
  });
}
