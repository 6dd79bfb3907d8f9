// Starting and stopping the `quckchat` binary: the conformance profile
// (`quckchat conformance`) and the real server, each on a port chosen here so that a
// restart can come back on the same one.
//
// Rule of the suite: never sleep to wait for something. The one loop below (waiting for
// the port to accept HTTP) retries a request until it succeeds, under a deadline.

import { spawn } from 'node:child_process';
import { constants as fsConstants } from 'node:fs';
import { access, mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

/** The `conformance/` folder. */
export const PACKAGE_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** The server binary: `QUCKCHAT_BIN`, or `../target/debug/quckchat` from `conformance/`. */
export const SERVER_BIN = process.env.QUCKCHAT_BIN
  ? path.resolve(process.env.QUCKCHAT_BIN)
  : path.resolve(PACKAGE_DIR, '..', 'target', 'debug', 'quckchat');

/** CONFORMANCE_VERBOSE=1: the server's log goes to stderr beside the test output. */
export const VERBOSE = Boolean(process.env.CONFORMANCE_VERBOSE);

const STARTUP_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 10_000;

/** A TCP port that was free a moment ago (the OS picks it; we release it at once). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

async function checkBinary() {
  try {
    await access(SERVER_BIN, fsConstants.X_OK);
  } catch {
    throw new Error(
      `quckchat server binary not found or not executable at ${SERVER_BIN}; ` +
        'build it with `cargo build -p quckchat-server --bin quckchat` or set QUCKCHAT_BIN',
    );
  }
}

/**
 * Spawns `quckchat ...args` with `env` on 127.0.0.1:`port` and resolves once it printed
 * its listening line and answers HTTP. Rejects (never skips) when the binary is missing,
 * exits early, or stays silent too long.
 */
export async function spawnServer({ args = [], env = {}, port, cwd, label = 'quckchat' }) {
  await checkBinary();
  const childEnv = { ...process.env };
  delete childEnv.REDIS_URL;
  Object.assign(childEnv, { HOST: '127.0.0.1', PORT: String(port), RUST_LOG: 'warn', ...env });
  const child = spawn(SERVER_BIN, args, { cwd, env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });

  const tail = [];
  const remember = (stream, line) => {
    tail.push(`[${stream}] ${line}`);
    if (tail.length > 60) tail.shift();
    if (VERBOSE) process.stderr.write(`[${label} ${stream}] ${line}\n`);
  };
  child.stderr.setEncoding('utf8');
  createInterface({ input: child.stderr }).on('line', (line) => remember('stderr', line));
  let exitStatus = null;
  const exited = new Promise((resolve) => {
    child.once('exit', (code, signal) => {
      exitStatus = { code, signal };
      resolve(exitStatus);
    });
  });
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);
  const describe = () => (tail.length ? `\n--- last server output ---\n${tail.join('\n')}\n---` : ' (no output)');

  const url = `http://127.0.0.1:${port}`;
  let stopped = false;
  try {
    await new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`${label} did not print its listening line within ${STARTUP_TIMEOUT_MS} ms${describe()}`)),
        STARTUP_TIMEOUT_MS,
      );
      createInterface({ input: child.stdout }).on('line', (raw) => {
        const line = raw.replace(/\r$/, '');
        remember('stdout', line);
        if (/listening on http:\/\//.test(line)) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.once('error', (err) => {
        clearTimeout(timer);
        reject(new Error(`could not spawn ${SERVER_BIN}: ${err.message}`));
      });
      exited.then(({ code, signal }) => {
        clearTimeout(timer);
        reject(new Error(`${label} exited before listening (code ${code}, signal ${signal})${describe()}`));
      });
    });
    await untilAcceptsHttp(url, STARTUP_TIMEOUT_MS);
  } catch (err) {
    if (exitStatus === null) {
      child.kill('SIGKILL');
      await exited;
    }
    process.removeListener('exit', killOnExit);
    throw err;
  }

  return {
    url,
    port,
    exitStatus: () => exitStatus,
    describe,
    /** SIGTERM, then await the exit. Throws when the server had already died on its own. */
    async stop() {
      if (stopped) return;
      stopped = true;
      const diedEarly = exitStatus;
      if (exitStatus === null) {
        child.kill('SIGTERM');
        let timer;
        const timedOut = new Promise((resolve) => {
          timer = setTimeout(() => resolve('timeout'), STOP_TIMEOUT_MS);
        });
        if ((await Promise.race([exited, timedOut])) === 'timeout') {
          process.stderr.write(`warning: ${label} did not exit within ${STOP_TIMEOUT_MS} ms of SIGTERM; killing it\n`);
          child.kill('SIGKILL');
          await exited;
        }
        clearTimeout(timer);
      }
      process.removeListener('exit', killOnExit);
      if (diedEarly) {
        throw new Error(`${label} died during the tests (code ${diedEarly.code}, signal ${diedEarly.signal})${describe()}`);
      }
    },
  };
}

/** Retries `GET url/` until any HTTP answer comes back, under a deadline. */
async function untilAcceptsHttp(url, ms) {
  const deadline = Date.now() + ms;
  let lastError;
  while (Date.now() < deadline) {
    try {
      const res = await fetch(`${url}/`, { signal: AbortSignal.timeout(2000) });
      await res.arrayBuffer();
      return;
    } catch (err) {
      lastError = err;
      await delay(25);
    }
  }
  throw new Error(`${url} does not accept HTTP after ${ms} ms: ${lastError?.message}`);
}

/**
 * `quckchat conformance` on a free port. `env` may set `ALLOW_EIO3`.
 * @returns {Promise<{url: string, wsUrl: string, port: number, stop: () => Promise<void>}>}
 */
export async function startConformance(env = {}) {
  const port = await freePort();
  const label = `quckchat conformance${env.ALLOW_EIO3 ? ` (ALLOW_EIO3=${env.ALLOW_EIO3})` : ''}`;
  const server = await spawnServer({ args: ['conformance'], env, port, label });
  return { ...server, wsUrl: server.url.replace(/^http/, 'ws') };
}

/**
 * The real server (auth on) on a fixed free port with a fresh SQLite data dir. `restart()`
 * stops it (SIGTERM) and starts a new process on the same port, data dir and secret.
 */
export async function startRealServer(env = {}) {
  const port = await freePort();
  const dataDir = await mkdtemp(path.join(tmpdir(), 'quckchat-conformance-'));
  const fullEnv = {
    DATABASE_URL: `sqlite://${path.join(dataDir, 'q.db')}`,
    JWT_SECRET: 'conformance-secret',
    // Many users register from 127.0.0.1; the auth throttle is tested in security/.
    AUTH_RATE_PER_MIN: '0',
    AUTH_USER_RATE_PER_MIN: '0',
    ...env,
  };
  let current = await spawnServer({ env: fullEnv, port, cwd: dataDir, label: 'quckchat' });
  return {
    url: current.url,
    port,
    dataDir,
    /** Stops the process (SIGTERM, awaited); the port and data dir stay. */
    async stopProcess() {
      await current.stop();
    },
    /** Starts a new process on the same port and data dir (after `stopProcess`). */
    async startProcess() {
      current = await spawnServer({ env: fullEnv, port, cwd: dataDir, label: 'quckchat (restarted)' });
    },
    /** Stops the server and removes its data dir. */
    async stop() {
      try {
        await current.stop();
      } finally {
        await rm(dataDir, { recursive: true, force: true });
      }
    },
  };
}
