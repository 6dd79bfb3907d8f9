// Shared helpers for the interop suite: start the real `quckchat` binary, talk to
// its REST API with `fetch`, and drive npm's real socket.io-client (4.x and 2.x).
//
// Rule of the suite: never sleep to wait for something. Every wait is an awaited
// event (or ack) under a timeout; "nothing arrived" is asserted after a barrier, a
// round trip that the server must answer after anything it sent before.

import { spawn } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import { access, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

/** The `interop/` folder. */
export const INTEROP_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** The server binary: `QUCKCHAT_BIN`, or `../target/debug/quckchat` from `interop/`. */
export const SERVER_BIN = process.env.QUCKCHAT_BIN
  ? path.resolve(process.env.QUCKCHAT_BIN)
  : path.resolve(INTEROP_DIR, '..', 'target', 'debug', 'quckchat');

export const PASSWORD = 'correct horse battery';
export const VERBOSE = Boolean(process.env.INTEROP_VERBOSE);

const STARTUP_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 10_000;
const LISTENING_LINE = /^quckchat listening on http:\/\/127\.0\.0\.1:(\d+)$/;

// ---------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------

/**
 * Spawns the server on 127.0.0.1 with a free port and a fresh SQLite database, and
 * resolves once it printed `quckchat listening on http://127.0.0.1:PORT` on stdout.
 * Rejects (never skips) when the binary is missing, exits early, or is silent too long.
 *
 * @param {Record<string, string>} env overrides of the server's environment
 * @returns {Promise<{url: string, port: number, dataDir: string, stop: () => Promise<void>, exitStatus: () => null | {code: number|null, signal: string|null}}>}
 */
export async function startServer(env = {}) {
  try {
    await access(SERVER_BIN, fsConstants.X_OK);
  } catch {
    throw new Error(
      `quckchat server binary not found or not executable at ${SERVER_BIN}; ` +
        'build it with `cargo build -p quckchat-server --bin quckchat` or set QUCKCHAT_BIN',
    );
  }

  const dataDir = await mkdtemp(path.join(tmpdir(), 'quckchat-interop-'));
  const childEnv = { ...process.env };
  // The suite decides the topology: single instance unless a test asks for Redis.
  delete childEnv.REDIS_URL;
  Object.assign(childEnv, {
    HOST: '127.0.0.1',
    PORT: '0',
    DATABASE_URL: `sqlite://${path.join(dataDir, 'quckchat.db')}`,
    JWT_SECRET: 'interop-secret',
    // Many users register from 127.0.0.1; the auth throttle is tested in security/.
    AUTH_RATE_PER_MIN: '0',
    AUTH_USER_RATE_PER_MIN: '0',
    RUST_LOG: 'warn',
    ...env,
  });

  const child = spawn(SERVER_BIN, [], {
    cwd: dataDir,
    env: childEnv,
    stdio: ['ignore', 'pipe', 'pipe'],
  });

  // Keep the tail of the server's output so that a failed start says why.
  const tail = [];
  const remember = (stream, line) => {
    tail.push(`[${stream}] ${line}`);
    if (tail.length > 60) tail.shift();
  };
  child.stderr.setEncoding('utf8');
  createInterface({ input: child.stderr }).on('line', (line) => {
    remember('stderr', line);
    if (VERBOSE) process.stderr.write(`[quckchat] ${line}\n`);
  });

  let exitStatus = null;
  const exited = new Promise((resolve) => {
    child.once('exit', (code, signal) => {
      exitStatus = { code, signal };
      resolve(exitStatus);
    });
  });
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);

  const describe = () =>
    tail.length ? `\n--- last server output ---\n${tail.join('\n')}\n---` : ' (the server printed nothing)';

  let port;
  try {
    port = await new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`server did not print its listening line within ${STARTUP_TIMEOUT_MS} ms${describe()}`)),
        STARTUP_TIMEOUT_MS,
      );
      const lines = createInterface({ input: child.stdout });
      lines.on('line', (raw) => {
        const line = raw.replace(/\r$/, '');
        remember('stdout', line);
        if (VERBOSE) process.stderr.write(`[quckchat stdout] ${line}\n`);
        const m = LISTENING_LINE.exec(line);
        if (m) {
          clearTimeout(timer);
          resolve(Number(m[1]));
        }
      });
      child.once('error', (err) => {
        clearTimeout(timer);
        reject(new Error(`could not spawn ${SERVER_BIN}: ${err.message}`));
      });
      exited.then(({ code, signal }) => {
        clearTimeout(timer);
        reject(new Error(`server exited before listening (code ${code}, signal ${signal})${describe()}`));
      });
    });
  } catch (err) {
    if (exitStatus === null) {
      child.kill('SIGKILL');
      await exited;
    }
    process.removeListener('exit', killOnExit);
    await rm(dataDir, { recursive: true, force: true });
    throw err;
  }

  const url = `http://127.0.0.1:${port}`;
  return {
    url,
    port,
    dataDir,
    exitStatus: () => exitStatus,
    /** SIGTERM, then await the exit. Throws when the server had already died. */
    async stop() {
      const diedEarly = exitStatus;
      if (exitStatus === null) {
        child.kill('SIGTERM');
        let timer;
        const timedOut = new Promise((resolve) => {
          timer = setTimeout(() => resolve('timeout'), STOP_TIMEOUT_MS);
        });
        if ((await Promise.race([exited, timedOut])) === 'timeout') {
          process.stderr.write(`warning: quckchat did not exit within ${STOP_TIMEOUT_MS} ms of SIGTERM; killing it\n`);
          child.kill('SIGKILL');
          await exited;
        }
        clearTimeout(timer);
      }
      process.removeListener('exit', killOnExit);
      await rm(dataDir, { recursive: true, force: true });
      if (diedEarly) {
        throw new Error(
          `the server died during the tests (code ${diedEarly.code}, signal ${diedEarly.signal})${describe()}`,
        );
      }
    },
  };
}

// ---------------------------------------------------------------------------
// REST
// ---------------------------------------------------------------------------

/** A username unique to this run, e.g. `alice_3f9a2c`. */
export function uniqueName(prefix) {
  return `${prefix}_${randomBytes(4).toString('hex')}`;
}

/**
 * `method path` against the server (`path` starts with `/api/v1/…`), with an optional
 * bearer token and JSON body. Resolves to `{status, body}`; body is parsed JSON, the
 * raw text when it is not JSON, or null when empty.
 */
export async function api(url, method, pathname, token, body) {
  const headers = { accept: 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  const init = { method, headers, signal: AbortSignal.timeout(10_000) };
  if (body !== undefined) {
    headers['content-type'] = 'application/json';
    init.body = typeof body === 'string' ? body : JSON.stringify(body);
  }
  const res = await fetch(url + pathname, init);
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

/** Asserts the status of an `api` answer with a readable message. */
export function expectStatus(res, expected, what) {
  const allowed = Array.isArray(expected) ? expected : [expected];
  if (!allowed.includes(res.status)) {
    throw new Error(`${what}: expected HTTP ${allowed.join(' or ')}, got ${res.status} ${JSON.stringify(res.body)}`);
  }
  return res.body;
}

/** Registers `username` (password "correct horse battery"); resolves to the AuthResponse. */
export async function register(url, username) {
  const res = await api(url, 'POST', '/api/v1/auth/register', null, {
    username,
    password: PASSWORD,
    displayName: username,
  });
  const body = expectStatus(res, 201, `register ${username}`);
  if (!body || typeof body.accessToken !== 'string' || !body.user || typeof body.user.id !== 'string') {
    throw new Error(`register ${username}: not an AuthResponse: ${JSON.stringify(body)}`);
  }
  return body;
}

/** Registers one fresh user per prefix, e.g. `registerUsers(url, 'alice', 'bob')`. */
export function registerUsers(url, ...prefixes) {
  return Promise.all(prefixes.map((p) => register(url, uniqueName(p))));
}

/** POST /conversations as `owner`; resolves to the Conversation. */
export async function createConversation(url, owner, type, participantIds, name) {
  const body = { type, participants: participantIds };
  if (name !== undefined) body.name = name;
  const res = await api(url, 'POST', '/api/v1/conversations', owner.accessToken, body);
  // 200 is the answer for a single conversation that already existed.
  const conv = expectStatus(res, type === 'single' ? [200, 201] : 201, `create ${type} conversation`);
  if (!conv || typeof conv.id !== 'string') throw new Error(`not a Conversation: ${JSON.stringify(conv)}`);
  return conv;
}

/** GET /messages/conversation/{id}?query as `user`; resolves to the `data` array. */
export async function history(url, user, conversationId, query = '') {
  const qs = query ? `?${query}` : '';
  const res = await api(url, 'GET', `/api/v1/messages/conversation/${conversationId}${qs}`, user.accessToken);
  const body = expectStatus(res, 200, `history of ${conversationId}`);
  if (!body || !Array.isArray(body.data)) throw new Error(`history: no data array: ${JSON.stringify(body)}`);
  return body.data;
}

// ---------------------------------------------------------------------------
// Socket.IO
// ---------------------------------------------------------------------------

const openSockets = new Set();

function track(socket, label) {
  Object.defineProperty(socket, 'label', { value: label ?? socket.nsp, configurable: true });
  openSockets.add(socket);
  return socket;
}

/** Closes every socket opened through `connect`/`connectV2` that is still open. */
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
 * Connects socket.io-client 4 (`io`) to `url + ns` over WebSocket with
 * `auth: {token: 'Bearer ' + token}` (no `auth` when token is null). Resolves with the
 * socket on `connect`; rejects with the client's error on `connect_error`.
 * `opts.label` names the socket in timeout messages; other opts go to `io()`.
 */
export function connect(io, url, ns, token, opts = {}) {
  const { label, timeout = 10_000, ...ioOpts } = opts;
  const options = {
    transports: ['websocket'],
    forceNew: true,
    reconnection: false,
    timeout,
    ...ioOpts,
  };
  if (token !== null && token !== undefined && options.auth === undefined) {
    options.auth = { token: `Bearer ${token}` };
  }
  const socket = track(io(url + ns, options), label);
  return settleConnect(socket, ['connect_error'], timeout);
}

/**
 * Connects socket.io-client 2 (`io`) to `url + ns` over WebSocket with the token in
 * the query (`?token=<jwt>`), since v2 cannot send `auth`. Rejects when the client
 * reports a refusal: socket.io-client 2 emits a namespace's CONNECT_ERROR (packet
 * type 4, which it knows as ERROR) as the socket's `error` event with the packet's
 * data; engine-level failures come as `connect_error`.
 */
export function connectV2(io, url, ns, token, opts = {}) {
  const { label, timeout = 10_000, ...ioOpts } = opts;
  const options = {
    transports: ['websocket'],
    forceNew: true,
    reconnection: false,
    timeout,
    ...ioOpts,
  };
  if (token !== null && token !== undefined && options.query === undefined) {
    options.query = { token };
  }
  const socket = track(io(url + ns, options), label);
  return settleConnect(socket, ['error', 'connect_error', 'connect_timeout'], timeout);
}

function settleConnect(socket, failureEvents, ms) {
  return new Promise((resolve, reject) => {
    const cleanup = () => {
      clearTimeout(timer);
      socket.off('connect', onConnect);
      for (const ev of failureEvents) socket.off(ev, onFailure);
    };
    const onConnect = () => {
      cleanup();
      resolve(socket);
    };
    const onFailure = (err) => {
      cleanup();
      socket.close();
      openSockets.delete(socket);
      reject(toError(err));
    };
    const timer = setTimeout(() => {
      cleanup();
      socket.close();
      openSockets.delete(socket);
      reject(new Error(`${socket.label}: neither connect nor connect_error within ${ms} ms`));
    }, ms);
    socket.on('connect', onConnect);
    for (const ev of failureEvents) socket.on(ev, onFailure);
  });
}

/** Normalises what a client reports as a connect failure into an Error with `.data`. */
function toError(err) {
  if (err instanceof Error) return err;
  const message =
    typeof err === 'string' ? err : err && typeof err.message === 'string' ? err.message : JSON.stringify(err);
  const e = new Error(message);
  e.data = err;
  return e;
}

/**
 * Awaits the next `event` on `socket` (whose payload satisfies `predicate`, if given)
 * and resolves with its first argument; rejects after `ms`. Set it up BEFORE the
 * action that causes the event.
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

/**
 * Emits `event` with `payload` and an ack callback; resolves with the ack's first
 * argument, or rejects when no ack came within `ms`.
 */
export function emitAck(socket, event, payload, ms = 5000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`${socket.label}: no ack for "${event}" within ${ms} ms`)),
      ms,
    );
    socket.emit(event, payload, (ack) => {
      clearTimeout(timer);
      resolve(ack);
    });
  });
}

/**
 * Records every `event` on `socket` from now on. `waitFor(pred)` resolves with the first
 * recorded payload (already seen or still to come) that matches; `waitForCount(n, pred)`
 * with the first n matching ones. `matching(pred)` is what arrived so far.
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
          return true;
        }
        return false;
      };
      if (check()) return;
      timer = setTimeout(() => {
        waiters.delete(check);
        reject(
          new Error(
            `${socket.label}: timed out after ${ms} ms waiting for ${n} "${event}" ` +
              `(got ${events.filter(match).length} matching of ${events.length})`,
          ),
        );
      }, ms);
      waiters.add(check);
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
 * A barrier: one acked round trip on `socket` (a `message:send` to a conversation
 * that does not exist, which changes nothing). Whatever the server had emitted to
 * this socket before it handled the request arrives before the ack, so after this
 * resolves a recorder can assert that something did NOT arrive.
 */
export async function roundTrip(socket, ms = 5000) {
  const ack = await emitAck(socket, 'message:send', { conversationId: randomUUID(), content: 'barrier' }, ms);
  if (!ack || ack.success !== false) {
    throw new Error(`${socket.label}: barrier send to an unknown conversation was accepted: ${JSON.stringify(ack)}`);
  }
  return ack;
}

/** Sends a message and asserts a successful ack; resolves with the acked Message. */
export async function sendMessage(socket, conversationId, content, extra = {}) {
  const ack = await emitAck(socket, 'message:send', { conversationId, content, ...extra });
  if (!ack || ack.success !== true || !ack.message || typeof ack.message.id !== 'string') {
    throw new Error(`${socket.label}: message:send was not acked with {success:true, message}: ${JSON.stringify(ack)}`);
  }
  return ack.message;
}

/** Asserts a failure ack `{success:false, error:{code}}` with one of `codes`. */
export function expectAckError(ack, codes, what) {
  const allowed = Array.isArray(codes) ? codes : [codes];
  const ok =
    ack && ack.success === false && ack.error && typeof ack.error.code === 'string' && allowed.includes(ack.error.code);
  if (!ok) {
    throw new Error(`${what}: expected ack {success:false, error:{code: ${allowed.join('|')}}}, got ${JSON.stringify(ack)}`);
  }
  return ack.error;
}

/** True when `s` is an RFC 3339 timestamp that Date can parse. */
export function isTimestamp(s) {
  return typeof s === 'string' && /^\d{4}-\d{2}-\d{2}T/.test(s) && !Number.isNaN(Date.parse(s));
}
