// The security suite's helpers: start the real `quckchat` binary (optionally under a
// lower open-file limit), talk REST with `fetch`, read the server's memory from /proc and
// its counters from /metrics.
//
// Rule of the suite: never sleep to wait for something; every wait is an awaited event,
// response or condition under a deadline.

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import { access, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

import { io } from 'socket.io-client';

export const SUITE_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const SERVER_BIN = process.env.QUCKCHAT_BIN
  ? path.resolve(process.env.QUCKCHAT_BIN)
  : path.resolve(SUITE_DIR, '..', 'target', 'debug', 'quckchat');
export const PASSWORD = 'correct horse battery';
const VERBOSE = Boolean(process.env.SECURITY_VERBOSE);
const LISTENING = /^quckchat listening on http:\/\/127\.0\.0\.1:(\d+)$/;

/**
 * Starts the server on a free port with a fresh SQLite store. `nofile` runs it under
 * `prlimit --nofile=N:N` (the limit a small container has). Resolves once it listens.
 */
export async function startServer(env = {}, { nofile } = {}) {
  await access(SERVER_BIN, fsConstants.X_OK).catch(() => {
    throw new Error(`no server binary at ${SERVER_BIN}; build it or set QUCKCHAT_BIN`);
  });
  const dataDir = await mkdtemp(path.join(tmpdir(), 'quckchat-security-'));
  const childEnv = { ...process.env };
  delete childEnv.REDIS_URL;
  Object.assign(childEnv, {
    HOST: '127.0.0.1',
    PORT: '0',
    DATABASE_URL: `sqlite://${path.join(dataDir, 'q.db')}`,
    JWT_SECRET: 'security-secret',
    RUST_LOG: 'warn',
    ...env,
  });
  const [cmd, args] = nofile ? ['prlimit', [`--nofile=${nofile}:${nofile}`, SERVER_BIN]] : [SERVER_BIN, []];
  const child = spawn(cmd, args, { cwd: dataDir, env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  const log = [];
  const remember = (line) => {
    log.push(line);
    if (log.length > 2000) log.shift();
    if (VERBOSE) process.stderr.write(`[quckchat] ${line}\n`);
  };
  createInterface({ input: child.stderr }).on('line', remember);
  let exitStatus = null;
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve((exitStatus = { code, signal }))));
  const kill = () => child.kill('SIGKILL');
  process.once('exit', kill);
  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server silent for 20 s:\n${log.join('\n')}`)), 20_000);
    createInterface({ input: child.stdout }).on('line', (line) => {
      remember(line);
      const m = LISTENING.exec(line.trim());
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    exited.then((s) => {
      clearTimeout(timer);
      reject(new Error(`server exited early (${JSON.stringify(s)}):\n${log.join('\n')}`));
    });
  });
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    pid: child.pid,
    log,
    alive: () => exitStatus === null,
    async stop() {
      if (exitStatus === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
        await exited;
        clearTimeout(timer);
      }
      process.removeListener('exit', kill);
      await rm(dataDir, { recursive: true, force: true });
      if (exitStatus.signal && exitStatus.signal !== 'SIGTERM') {
        throw new Error(`server died with ${exitStatus.signal}:\n${log.slice(-40).join('\n')}`);
      }
    },
  };
}

/** The pid of the quckchat process itself (under prlimit it is prlimit's child, exec'd in place). */
export async function memory(pid) {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kib = (name) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  return { rssMiB: kib('VmRSS') / 1024, peakMiB: kib('VmHWM') / 1024 };
}

/** One REST call; resolves to {status, headers, body}. */
export async function api(url, method, pathname, { token, body, headers = {} } = {}) {
  const h = { accept: 'application/json', ...headers };
  if (token) h.authorization = `Bearer ${token}`;
  const init = { method, headers: h, signal: AbortSignal.timeout(60_000) };
  if (body !== undefined) {
    h['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await fetch(url + pathname, init);
  const text = await res.text();
  let parsed = text;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    /* not JSON */
  }
  return { status: res.status, headers: res.headers, body: parsed };
}

/** A fresh username like `p_3f9a2c1d`. */
export const uniqueName = (prefix) => `${prefix}_${randomBytes(4).toString('hex')}`;

/** Registers a user; resolves to the AuthResponse. */
export async function register(url, prefix = 'u') {
  const username = uniqueName(prefix);
  const res = await api(url, 'POST', '/api/v1/auth/register', { body: { username, password: PASSWORD } });
  if (res.status !== 201) throw new Error(`register ${username}: ${res.status} ${JSON.stringify(res.body)}`);
  return res.body;
}

/** The value of a counter or gauge in /metrics (summed over label sets matching `labels`). */
export async function metric(url, name, labels = '') {
  const res = await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(10_000) });
  const text = await res.text();
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const rest = line.slice(name.length);
    if (rest[0] !== ' ' && rest[0] !== '{') continue;
    if (labels && !rest.includes(labels)) continue;
    sum += Number(line.trim().split(/\s+/).at(-1));
  }
  return sum;
}

/** Resolves once `check()` is truthy (polled), or rejects after `ms` with `what`. */
export async function until(what, check, ms = 30_000, every = 50) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await delay(every);
  }
}

/** A socket.io-client 4.x socket on `ns`, connected (or rejected with the refusal). */
export function connect(url, ns, token, opts = {}) {
  const socket = io(`${url}${ns}`, {
    forceNew: true,
    transports: ['websocket'],
    reconnection: false,
    timeout: 20_000,
    auth: { token: `Bearer ${token}` },
    ...opts,
  });
  const ready = new Promise((resolve, reject) => {
    socket.once('connect', () => resolve(socket));
    socket.once('connect_error', (err) => {
      socket.close();
      reject(Object.assign(new Error(err.message), { data: err.data }));
    });
  });
  return { socket, ready };
}

/** Emits with an ack under a timeout. */
export function emitAck(socket, event, payload, ms = 20_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ack for ${event} within ${ms} ms`)), ms);
    socket.emit(event, payload, (ack) => {
      clearTimeout(timer);
      resolve(ack);
    });
  });
}
