// QuckChat's own Engine.IO / Socket.IO engine (crates/quckchat-sio-server, issue 12)
// against npm's real socket.io-client 4.x, over WebSocket: the engine's example server
// (`examples/echo_server.rs`) serves a test namespace; socket.io-client 2.x (Engine.IO v3,
// Socket.IO protocol v4, the token in the query) too, over WebSocket and long-polling.
// and the upgrade from one to the other, binary attachments too.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { after, afterEach, before, test } from 'node:test';
import { io } from 'socket.io-client';
import ioV2 from 'socket.io-client-v2';

import { INTEROP_DIR, closeAllSockets, connectV2 } from './helpers.mjs';

const BIN = process.env.ENGINE_ECHO_BIN
  ? path.resolve(process.env.ENGINE_ECHO_BIN)
  : path.resolve(INTEROP_DIR, '..', 'target', 'debug', 'examples', 'echo_server');
const T = { timeout: 30_000 };
const WAIT_MS = 5_000;

let child;
let url;
const sockets = [];

before(async () => {
  child = spawn(BIN, [], {
    env: { ...process.env, PING_INTERVAL_MS: '200', PING_TIMEOUT_MS: '2000' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no listening line from ${BIN}`)), 20_000);
    child.once('error', reject);
    createInterface({ input: child.stdout }).on('line', (line) => {
      const m = /^engine listening on (http:\/\/\S+)$/.exec(line);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
  });
});

afterEach(() => {
  while (sockets.length) sockets.pop().close();
  closeAllSockets();
});

after(() => child?.kill());

/** Rejects after `ms` unless `promise` settles first. */
function within(promise, what, ms = WAIT_MS) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** A v4 client on /chat (over WebSocket only unless `transports` says); resolves once connected. */
async function connect(auth, transports = ['websocket']) {
  const socket = io(`${url}/chat`, { transports, auth, reconnection: false, forceNew: true });
  sockets.push(socket);
  await within(
    new Promise((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('connect_error', reject);
    }),
    'connect',
  );
  return socket;
}

test('connects, keeps its own Socket.IO id, and gets acks', T, async () => {
  const socket = await connect({ token: 'good', name: 'ann' });
  assert.ok(socket.id);
  assert.notEqual(socket.id, socket.io.engine.id, 'the Socket.IO id is not the Engine.IO sid');
  const answer = await within(socket.timeout(WAIT_MS).emitWithAck('echo', { a: [1, 'é'] }, 2), 'echo ack');
  assert.deepEqual(answer, { a: [1, 'é'] });
});

test('a refused connection shows the reason in connect_error', T, async () => {
  await assert.rejects(connect({ token: 'bad' }), (err) => {
    assert.equal(err.message, 'unauthorized');
    return true;
  });
});

test('a broadcast reaches the room except the sender', T, async () => {
  const ann = await connect({ token: 'good', name: 'ann' });
  const bob = await connect({ token: 'good', name: 'bob' });
  for (const s of [ann, bob]) assert.equal(await s.timeout(WAIT_MS).emitWithAck('join', 'r1'), true);
  const heard = within(new Promise((resolve) => bob.once('heard', resolve)), 'heard');
  let annHeard = false;
  ann.on('heard', () => {
    annHeard = true;
  });
  assert.equal(await ann.timeout(WAIT_MS).emitWithAck('shout', 'r1'), 1);
  assert.equal(await heard, 'ann');
  // A round trip after the broadcast: anything ann was sent would have arrived before it.
  await ann.timeout(WAIT_MS).emitWithAck('echo', 'barrier');
  assert.equal(annHeard, false);
});

test('the server disconnects a socket: the client sees "io server disconnect"', T, async () => {
  const socket = await connect({ token: 'good', name: 'ann' });
  const reason = within(new Promise((resolve) => socket.once('disconnect', resolve)), 'disconnect');
  socket.emit('kick');
  assert.equal(await reason, 'io server disconnect');
});

test('heartbeats: the client answers the pings and stays connected', T, async () => {
  const socket = await connect({ token: 'good', name: 'ann' });
  let pings = 0;
  await within(
    new Promise((resolve) => {
      socket.io.engine.on('ping', () => {
        pings += 1;
        if (pings === 3) resolve();
      });
    }),
    'three pings',
  );
  assert.equal(socket.connected, true);
  assert.deepEqual(await socket.timeout(WAIT_MS).emitWithAck('echo', 'still here'), 'still here');
});

/** A v2 client's emit with an ack, as a promise. */
function emitAckV2(socket, event, ...args) {
  return within(new Promise((resolve) => socket.emit(event, ...args, resolve)), `${event} ack`);
}

test('v2: connects with ?token=, gets acks and broadcasts, and a v4 client hears it', T, async () => {
  const ann = await connectV2(ioV2, url, '/chat', 'good', { label: 'ann (v2)' });
  assert.equal(ann.id, `/chat#${ann.io.engine.id}`);
  assert.deepEqual(await emitAckV2(ann, 'echo', { v: 2 }), { v: 2 });
  const bob = await connect({ token: 'good', name: 'bob' });
  assert.equal(await emitAckV2(ann, 'join', 'r2'), true);
  assert.equal(await bob.timeout(WAIT_MS).emitWithAck('join', 'r2'), true);
  const heard = within(new Promise((resolve) => bob.once('heard', resolve)), 'heard');
  assert.equal(await emitAckV2(ann, 'shout', 'r2'), 1);
  assert.equal(await heard, '?');
});

test('v2: a refused connection reports the reason', T, async () => {
  await assert.rejects(connectV2(ioV2, url, '/chat', 'bad', { label: 'eve (v2)' }), (err) => {
    const data = err.data;
    const message = typeof data === 'string' ? data : (data && data.message) || err.message;
    assert.equal(message, 'unauthorized');
    return true;
  });
});

test('v2: the server disconnects a socket: the client sees "io server disconnect"', T, async () => {
  const socket = await connectV2(ioV2, url, '/chat', 'good', { label: 'ann (v2)' });
  const reason = within(new Promise((resolve) => socket.once('disconnect', resolve)), 'disconnect');
  socket.emit('kick');
  assert.equal(await reason, 'io server disconnect');
});

test('long-polling only: a client connects, gets acks and broadcasts', T, async () => {
  const ann = await connect({ token: 'good', name: 'ann' }, ['polling']);
  assert.equal(ann.io.engine.transport.name, 'polling');
  assert.deepEqual(await ann.timeout(WAIT_MS).emitWithAck('echo', { p: 1 }), { p: 1 });
  const bob = await connect({ token: 'good', name: 'bob' });
  for (const s of [ann, bob]) assert.equal(await s.timeout(WAIT_MS).emitWithAck('join', 'r3'), true);
  const heard = within(new Promise((resolve) => ann.once('heard', resolve)), 'heard over polling');
  assert.equal(await bob.timeout(WAIT_MS).emitWithAck('shout', 'r3'), 1);
  assert.equal(await heard, 'bob');
  const reason = within(new Promise((resolve) => ann.once('disconnect', resolve)), 'disconnect');
  ann.emit('kick');
  assert.equal(await reason, 'io server disconnect');
});

test('long-polling only, v2: a socket.io-client 2.x connects and gets acks', T, async () => {
  const ann = await connectV2(ioV2, url, '/chat', 'good', { label: 'ann (v2, polling)', transports: ['polling'] });
  assert.equal(ann.io.engine.transport.name, 'polling');
  assert.deepEqual(await emitAckV2(ann, 'echo', { v: 2, p: 1 }), { v: 2, p: 1 });
});

/** Resolves once the client's engine has upgraded to WebSocket. */
function upgraded(socket) {
  if (socket.io.engine.transport.name === 'websocket') return Promise.resolve();
  return within(new Promise((resolve) => socket.io.engine.once('upgrade', resolve)), 'the upgrade');
}

test('default transports: starts on polling, upgrades to WebSocket, keeps its socket', T, async () => {
  const ann = await connect({ token: 'good', name: 'ann' }, ['polling', 'websocket']);
  const id = ann.id;
  await upgraded(ann);
  assert.equal(ann.io.engine.transport.name, 'websocket');
  assert.equal(ann.id, id);
  assert.deepEqual(await ann.timeout(WAIT_MS).emitWithAck('echo', 'after the upgrade'), 'after the upgrade');
});

test('default transports, v2: a socket.io-client 2.x upgrades too', T, async () => {
  const ann = await connectV2(ioV2, url, '/chat', 'good', { label: 'ann (v2)', transports: ['polling', 'websocket'] });
  await upgraded(ann);
  assert.equal(ann.io.engine.transport.name, 'websocket');
  assert.deepEqual(await emitAckV2(ann, 'echo', 'v2 after the upgrade'), 'v2 after the upgrade');
});

test('binary attachments both ways (v4 over WebSocket and polling, v2)', T, async () => {
  for (const transports of [['websocket'], ['polling']]) {
    const socket = await connect({ token: 'good', name: 'ann' }, transports);
    const back = within(new Promise((resolve) => socket.once('bin-back', (...args) => resolve(args))), 'bin-back');
    const acked = await socket.timeout(WAIT_MS).emitWithAck('bin', Buffer.from([1, 2, 3]), 'x');
    assert.deepEqual(Buffer.from(acked), Buffer.from([1, 2, 3]), transports.join());
    const [data, text] = await back;
    assert.deepEqual([Buffer.from(data), text], [Buffer.from([1, 2, 3]), 'x'], transports.join());
  }
  const v2 = await connectV2(ioV2, url, '/chat', 'good', { label: 'ann (v2)' });
  const acked = await emitAckV2(v2, 'bin', Buffer.from([9, 8]));
  assert.deepEqual(Buffer.from(acked), Buffer.from([9, 8]));
});

test("the server asks and waits for the client's ack", T, async () => {
  const socket = await connect({ token: 'good', name: 'ann' });
  socket.on('question', (n, callback) => callback(n + 1));
  const answered = within(new Promise((resolve) => socket.once('answered', resolve)), 'answered');
  socket.emit('ask');
  assert.deepEqual(await answered, [42]);
});
