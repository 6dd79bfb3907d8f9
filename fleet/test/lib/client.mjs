// The client side of the fleet tests: REST with `fetch`, npm's socket.io-client 4, and
// waits that are awaited events or acks under a timeout (the interop suite's helpers,
// with the instance's URL passed to every call since a fleet has several).
//
// "Nothing (more) arrived" is asserted after a barrier: a round trip that the server
// answers after anything it sent to that socket before.

import { randomBytes, randomUUID } from 'node:crypto';
import { io } from 'socket.io-client';

export const PASSWORD = 'correct horse battery';

// ---------------------------------------------------------------------------
// REST
// ---------------------------------------------------------------------------

/** A username unique to this run, e.g. `alice_3f9a2c`. */
export function uniqueName(prefix) {
  return `${prefix}_${randomBytes(4).toString('hex')}`;
}

/**
 * `method path` against `base` (an instance's or nginx's URL; `path` starts with
 * `/api/v1/…`) with an optional bearer token and JSON body. Resolves to {status, body}.
 */
export async function api(base, method, pathname, token, body, ms = 10_000) {
  const headers = { accept: 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  const init = { method, headers, signal: AbortSignal.timeout(ms) };
  if (body !== undefined) {
    headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await fetch(base + pathname, init);
  const text = await res.text();
  let parsed = null;
  if (text.length > 0) {
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = text;
    }
  }
  return { status: res.status, body: parsed };
}

/** Asserts the status of an `api` answer with a readable message; returns the body. */
export function expectStatus(res, expected, what) {
  const allowed = Array.isArray(expected) ? expected : [expected];
  if (!allowed.includes(res.status)) {
    throw new Error(`${what}: expected HTTP ${allowed.join(' or ')}, got ${res.status} ${JSON.stringify(res.body)}`);
  }
  return res.body;
}

/** Registers a fresh user named `<prefix>_<hex>` on `base`; resolves to the AuthResponse. */
export async function register(base, prefix) {
  const username = uniqueName(prefix);
  const res = await api(base, 'POST', '/api/v1/auth/register', null, { username, password: PASSWORD, displayName: username });
  const body = expectStatus(res, 201, `register ${username}`);
  if (!body || typeof body.accessToken !== 'string' || !body.user || typeof body.user.id !== 'string') {
    throw new Error(`register ${username}: not an AuthResponse: ${JSON.stringify(body)}`);
  }
  body.name = prefix;
  return body;
}

/** Logs `user` in again on `base` (a second session); resolves to the AuthResponse. */
export async function login(base, user) {
  const res = await api(base, 'POST', '/api/v1/auth/login', null, { username: user.user.username, password: PASSWORD });
  const body = expectStatus(res, 200, `login ${user.user.username}`);
  body.name = user.name;
  return body;
}

/** POST /conversations as `owner`; resolves to the Conversation. */
export async function createConversation(base, owner, type, participantIds, name) {
  const body = { type, participants: participantIds };
  if (name !== undefined) body.name = name;
  const res = await api(base, 'POST', '/api/v1/conversations', owner.accessToken, body);
  const conv = expectStatus(res, type === 'single' ? [200, 201] : 201, `create ${type} conversation`);
  if (!conv || typeof conv.id !== 'string') throw new Error(`not a Conversation: ${JSON.stringify(conv)}`);
  return conv;
}

/**
 * The whole history after `afterSeq` (ascending by seq), page by page (200 a page),
 * through `base`.
 */
export async function historyAfter(base, user, conversationId, afterSeq = 0, ms = 10_000) {
  const out = [];
  let after = afterSeq;
  for (;;) {
    const res = await api(base, 'GET', `/api/v1/messages/conversation/${conversationId}?afterSeq=${after}&limit=200`, user.accessToken, undefined, ms);
    const body = expectStatus(res, 200, `history of ${conversationId} after ${after}`);
    if (!body || !Array.isArray(body.data)) throw new Error(`history: no data array: ${JSON.stringify(body)}`);
    if (body.data.length === 0) return out;
    out.push(...body.data);
    after = body.data[body.data.length - 1].seq;
  }
}

// ---------------------------------------------------------------------------
// Socket.IO
// ---------------------------------------------------------------------------

const openSockets = new Set();

/** Closes every socket opened through `connect` that is still open. */
export function closeAllSockets() {
  for (const socket of openSockets) socket.close();
  openSockets.clear();
}

/** Closes one socket and forgets it. */
export function closeSocket(socket) {
  socket.close();
  openSockets.delete(socket);
}

/**
 * Connects socket.io-client 4 to `base + ns` (WebSocket only, no automatic reconnection)
 * with `auth: {token: 'Bearer ' + token}`. Resolves with the socket on `connect`;
 * rejects on `connect_error` or after `timeout`. `label` names it in messages.
 */
export function connect(base, ns, token, opts = {}) {
  const { label, timeout = 10_000, ...ioOpts } = opts;
  const options = { transports: ['websocket'], forceNew: true, reconnection: false, timeout, ...ioOpts };
  if (token != null && options.auth === undefined) options.auth = { token: `Bearer ${token}` };
  const socket = io(base + ns, options);
  Object.defineProperty(socket, 'label', { value: label ?? ns, configurable: true });
  openSockets.add(socket);
  return new Promise((resolve, reject) => {
    const cleanup = () => {
      clearTimeout(timer);
      socket.off('connect', onConnect);
      socket.off('connect_error', onFailure);
    };
    const onConnect = () => {
      cleanup();
      resolve(socket);
    };
    const onFailure = (err) => {
      cleanup();
      socket.close();
      openSockets.delete(socket);
      reject(err instanceof Error ? err : new Error(String(err?.message ?? err)));
    };
    const timer = setTimeout(() => {
      cleanup();
      socket.close();
      openSockets.delete(socket);
      reject(new Error(`${socket.label}: neither connect nor connect_error within ${timeout} ms (${base}${ns})`));
    }, timeout);
    socket.on('connect', onConnect);
    socket.on('connect_error', onFailure);
  });
}

/** Connects `user` to `/chat` on `base`. */
export function chat(base, user, label = user.name) {
  return connect(base, '/chat', user.accessToken, { label });
}

/** Connects `user` to `/webrtc` on `base`. */
export function rtc(base, user, label = `${user.name}/rtc`) {
  return connect(base, '/webrtc', user.accessToken, { label });
}

/**
 * Awaits the next `event` on `socket` whose payload satisfies `predicate`; resolves with
 * it; rejects after `ms`. Set it up BEFORE the action that causes the event.
 */
export function once(socket, event, ms = 5000, predicate = () => true) {
  return new Promise((resolve, reject) => {
    const onEvent = (payload) => {
      let matches;
      try {
        matches = predicate(payload);
      } catch {
        matches = false;
      }
      if (!matches) return;
      clearTimeout(timer);
      socket.off(event, onEvent);
      resolve(payload);
    };
    const timer = setTimeout(() => {
      socket.off(event, onEvent);
      reject(new Error(`${socket.label}: timed out after ${ms} ms waiting for "${event}"`));
    }, ms);
    socket.on(event, onEvent);
  });
}

/** Emits `event` with an ack callback; resolves with the ack, rejects after `ms`. */
export function emitAck(socket, event, payload, ms = 5000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${socket.label}: no ack for "${event}" within ${ms} ms`)), ms);
    socket.emit(event, payload, (ack) => {
      clearTimeout(timer);
      resolve(ack);
    });
  });
}

/**
 * Records every `event` on `socket` from now on. `waitFor(pred)` / `waitForCount(n, pred)`
 * resolve with matching payloads (already recorded or still to come); `matching(pred)` is
 * what arrived so far.
 */
export function record(socket, event) {
  const events = [];
  const waiters = new Set();
  const listener = (payload) => {
    events.push(payload);
    for (const w of waiters) w();
  };
  socket.on(event, listener);
  const safe = (pred) => (p) => {
    try {
      return Boolean(pred(p));
    } catch {
      return false;
    }
  };
  const waitForCount = (n, pred = () => true, ms = 5000) =>
    new Promise((resolve, reject) => {
      const match = safe(pred);
      let timer;
      const check = () => {
        const found = events.filter(match);
        if (found.length >= n) {
          clearTimeout(timer);
          waiters.delete(check);
          resolve(found.slice(0, n));
        }
      };
      timer = setTimeout(() => {
        waiters.delete(check);
        reject(
          new Error(
            `${socket.label}: timed out after ${ms} ms waiting for ${n} "${event}" (got ${events.filter(match).length} matching of ${events.length})`,
          ),
        );
      }, ms);
      waiters.add(check);
      check();
    });
  return {
    events,
    matching: (pred = () => true) => events.filter(safe(pred)),
    waitFor: (pred = () => true, ms = 5000) => waitForCount(1, pred, ms).then((found) => found[0]),
    waitForCount,
    stop: () => socket.off(event, listener),
  };
}

/**
 * A barrier on a `/chat` socket: a `message:send` to a conversation that does not exist
 * (changes nothing). What the server emitted to this socket before handling it arrives
 * before the ack.
 */
export async function roundTrip(socket, ms = 5000) {
  const ack = await emitAck(socket, 'message:send', { conversationId: randomUUID(), content: 'barrier' }, ms);
  if (!ack || ack.success !== false) {
    throw new Error(`${socket.label}: barrier send to an unknown conversation was accepted: ${JSON.stringify(ack)}`);
  }
  return ack;
}

/** A barrier on a `/webrtc` socket: `call:end` of a call that does not exist. */
export async function rtcRoundTrip(socket, ms = 5000) {
  const ack = await emitAck(socket, 'call:end', { callId: randomUUID() }, ms);
  if (!ack || ack.success !== false) {
    throw new Error(`${socket.label}: barrier call:end of an unknown call was accepted: ${JSON.stringify(ack)}`);
  }
  return ack;
}

/** Sends a message and asserts a successful ack; resolves with the acked Message. */
export async function sendMessage(socket, conversationId, content, extra = {}, ms = 5000) {
  const ack = await emitAck(socket, 'message:send', { conversationId, content, clientMessageId: randomUUID(), ...extra }, ms);
  if (!ack || ack.success !== true || !ack.message || typeof ack.message.id !== 'string') {
    throw new Error(`${socket.label}: message:send was not acked with {success:true, message}: ${JSON.stringify(ack)}`);
  }
  return ack.message;
}

/** Asserts an ack `{success: true}`; returns it. */
export function expectOk(ack, what) {
  if (!ack || ack.success !== true) throw new Error(`${what}: expected {success:true}, got ${JSON.stringify(ack)}`);
  return ack;
}

/** Resolves when `socket` disconnects (with the reason); rejects after `ms`. */
export function disconnected(socket, ms = 5000) {
  if (!socket.connected) return Promise.resolve('already disconnected');
  return once(socket, 'disconnect', ms);
}
