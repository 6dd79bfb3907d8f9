// npm's real socket.io-client, three generations behind one face, plus what the client
// matrix needs around them: the REST calls of the chat (CONTRACT §2), a TCP gate that can
// keep a client away from the server, and waits on client events under timeouts.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import net from 'node:net';

import ioV2 from 'socket.io-client-v2';
import { io as ioV3 } from 'socket.io-client-v3';
import { io as ioV4 } from 'socket.io-client';

/**
 * The client generations. `connect(url, options)` builds a socket for `url` (with the
 * namespace); `token` goes where that generation can carry it: `auth` for 3.x and 4.x,
 * the query for 2.x (Engine.IO v3, which has no `auth`).
 */
export const CLIENTS = [
  {
    name: 'socket.io-client 4.x',
    key: 'v4',
    engineIo: 4,
    create: (url, { token, ...opts }) => ioV4(url, { forceNew: true, ...opts, ...(token ? { auth: { token: `Bearer ${token}` } } : {}) }),
  },
  {
    name: 'socket.io-client 3.x',
    key: 'v3',
    engineIo: 4,
    create: (url, { token, ...opts }) => ioV3(url, { forceNew: true, ...opts, ...(token ? { auth: { token } } : {}) }),
  },
  {
    name: 'socket.io-client 2.x',
    key: 'v2',
    engineIo: 3,
    create: (url, { token, ...opts }) => ioV2(url, { forceNew: true, ...opts, ...(token ? { query: { token } } : {}) }),
  },
];

export { ioV4 };

const open = new Set();

/** Creates a socket through `client` and remembers it for `closeAllClients`. */
export function createSocket(client, url, options) {
  const socket = client.create(url, options);
  open.add(socket);
  return socket;
}

/** Closes every socket created through `createSocket`. */
export function closeAllClients() {
  for (const socket of open) socket.close();
  open.clear();
}

/**
 * Resolves with the first argument of the next `event` on `emitter` (satisfying `pred`);
 * rejects after `ms`, or at once on one of `failures` (event names) with what they carried.
 * Set it up BEFORE the action that causes the event.
 */
export function nextEvent(emitter, event, { ms = 10_000, pred = () => true, failures = [], label = event } = {}) {
  return new Promise((resolve, reject) => {
    const cleanup = () => {
      clearTimeout(timer);
      emitter.off(event, onEvent);
      for (const f of failures) emitter.off(f, onFailure[f]);
    };
    const onEvent = (payload) => {
      let ok = false;
      try {
        ok = pred(payload);
      } catch {
        ok = false;
      }
      if (!ok) return;
      cleanup();
      resolve(payload);
    };
    const onFailure = {};
    for (const f of failures) {
      onFailure[f] = (err) => {
        cleanup();
        const e = new Error(`${label}: "${f}" instead: ${err && err.message ? err.message : JSON.stringify(err)}`);
        e.data = err;
        reject(e);
      };
      emitter.on(f, onFailure[f]);
    }
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`${label}: timed out after ${ms} ms`));
    }, ms);
    emitter.on(event, onEvent);
  });
}

/** Resolves once `socket` is connected (now or later); rejects on a refusal or after `ms`. */
export function connected(socket, label, ms = 10_000) {
  if (socket.connected) return Promise.resolve(socket);
  return nextEvent(socket, 'connect', { ms, label: `${label} connect`, failures: ['connect_error', 'error'] }).then(() => socket);
}

/** The name of the Engine.IO transport a socket currently uses. */
export function transportOf(socket) {
  return socket.io.engine?.transport?.name;
}

/** Resolves once the socket's Engine.IO connection runs over WebSocket. */
export async function upgraded(socket, label, ms = 10_000) {
  if (transportOf(socket) === 'websocket') return;
  await nextEvent(socket.io.engine, 'upgrade', { ms, label: `${label} upgrade to websocket` });
  assert.equal(transportOf(socket), 'websocket');
}

/** Records every `event` on `socket`; `waitFor(pred)` resolves with a past or future match. */
export function record(socket, event) {
  const events = [];
  const waiters = new Set();
  socket.on(event, (payload) => {
    events.push(payload);
    for (const w of waiters) w();
  });
  const safe = (pred) => (p) => {
    try {
      return Boolean(pred(p));
    } catch {
      return false;
    }
  };
  return {
    events,
    waitFor(pred, ms = 10_000) {
      const match = safe(pred);
      return new Promise((resolve, reject) => {
        const check = () => {
          const found = events.find(match);
          if (found !== undefined) {
            clearTimeout(timer);
            waiters.delete(check);
            resolve(found);
          }
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`timed out after ${ms} ms waiting for a matching "${event}" (got ${events.length})`));
        }, ms);
        waiters.add(check);
        check();
      });
    },
  };
}

/** Emits with an ack under a timeout; resolves with the ack's first argument. */
export function emitAck(socket, event, payload, ms = 10_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ack for "${event}" within ${ms} ms`)), ms);
    socket.emit(event, payload, (ack) => {
      clearTimeout(timer);
      resolve(ack);
    });
  });
}

// ---------------------------------------------------------------------------
// REST (CONTRACT §2)
// ---------------------------------------------------------------------------

export async function api(url, method, pathname, token, body) {
  const headers = { accept: 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  const init = { method, headers, signal: AbortSignal.timeout(10_000) };
  if (body !== undefined) {
    headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await fetch(url + pathname, init);
  const text = await res.text();
  let parsed = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = text;
  }
  return { status: res.status, body: parsed };
}

function expectStatus(res, allowed, what) {
  if (!allowed.includes(res.status)) {
    throw new Error(`${what}: expected HTTP ${allowed.join(' or ')}, got ${res.status} ${JSON.stringify(res.body)}`);
  }
  return res.body;
}

/** Registers a fresh user named `<prefix>_<random>`; resolves to the AuthResponse. */
export async function register(url, prefix) {
  const username = `${prefix}_${randomBytes(4).toString('hex')}`;
  const res = await api(url, 'POST', '/api/v1/auth/register', null, {
    username,
    password: 'correct horse battery',
    displayName: username,
  });
  const body = expectStatus(res, [201], `register ${username}`);
  assert.equal(typeof body.accessToken, 'string');
  return body;
}

/** A single conversation between `owner` and `other`. */
export async function singleConversation(url, owner, other) {
  const res = await api(url, 'POST', '/api/v1/conversations', owner.accessToken, {
    type: 'single',
    participants: [other.user.id],
  });
  return expectStatus(res, [200, 201], 'create a single conversation');
}

/** GET /messages/conversation/{id}?afterSeq=n as `user`: the messages after `n`, ascending. */
export async function messagesAfter(url, user, conversationId, afterSeq) {
  const res = await api(url, 'GET', `/api/v1/messages/conversation/${conversationId}?afterSeq=${afterSeq}`, user.accessToken);
  const body = expectStatus(res, [200], `messages after ${afterSeq}`);
  assert.ok(Array.isArray(body.data), JSON.stringify(body));
  return body.data;
}

/** Sends a chat message and asserts a successful ack; resolves with the Message. */
export async function sendMessage(socket, conversationId, content) {
  const ack = await emitAck(socket, 'message:send', { conversationId, content });
  if (!ack || ack.success !== true || !ack.message) {
    throw new Error(`message:send was not acked with success: ${JSON.stringify(ack)}`);
  }
  return ack.message;
}

// ---------------------------------------------------------------------------
// A TCP gate in front of the server
// ---------------------------------------------------------------------------

/**
 * Listens on a free port and pipes every connection to 127.0.0.1:`targetPort` while open.
 * While shut, new connections are cut at once, so a client's reconnection attempts fail
 * and it keeps trying: the test decides when it may come back.
 */
export async function startGate(targetPort) {
  let isOpen = true;
  const live = new Set();
  const srv = net.createServer((client) => {
    if (!isOpen) {
      client.destroy();
      return;
    }
    const upstream = net.connect(targetPort, '127.0.0.1');
    live.add(client);
    live.add(upstream);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      live.delete(client);
      live.delete(upstream);
    };
    client.on('error', drop);
    upstream.on('error', drop);
    client.on('close', drop);
    upstream.on('close', drop);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', resolve);
  });
  return {
    port: srv.address().port,
    url: `http://127.0.0.1:${srv.address().port}`,
    open() {
      isOpen = true;
    },
    shut() {
      isOpen = false;
    },
    async stop() {
      isOpen = false;
      for (const s of live) s.destroy();
      await new Promise((resolve) => srv.close(resolve));
    },
  };
}
