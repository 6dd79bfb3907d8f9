// Helpers of the browser test: start the real `quckchat` binary, launch Debian's
// Chromium through playwright-core, and poll with a deadline.
//
// Rule of the suite: never sleep to wait for something. Every wait is a Playwright wait
// (which polls a condition until its timeout) or `pollUntil` below.

import { spawn } from 'node:child_process';
import { constants as fsConstants } from 'node:fs';
import { access, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

/** The `browser/` folder. */
export const BROWSER_DIR = path.dirname(fileURLToPath(import.meta.url));

/** The repository root. */
export const REPO_ROOT = path.resolve(BROWSER_DIR, '..');

/** Screenshots land here (CI keeps them). */
export const ARTIFACTS_DIR = path.join(REPO_ROOT, 'target', 'browser-artifacts');

/** The server binary: `QUCKCHAT_BIN`, or `../target/debug/quckchat` from `browser/`. */
export const SERVER_BIN = process.env.QUCKCHAT_BIN
  ? path.resolve(process.env.QUCKCHAT_BIN)
  : path.resolve(REPO_ROOT, 'target', 'debug', 'quckchat');

/** Debian's Chromium; playwright-core never downloads a browser. */
export const CHROMIUM = '/usr/bin/chromium';

export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  // A synthetic camera (a moving test pattern) and microphone (a beep), allowed without a prompt.
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  '--disable-quic',
];

export const VERBOSE = Boolean(process.env.BROWSER_VERBOSE);

const STARTUP_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 10_000;
const LISTENING_LINE = /^quckchat listening on http:\/\/127\.0\.0\.1:(\d+)$/;

/** Throws (the test fails, never skips) when `file` is not an executable. */
async function requireExecutable(file, hint) {
  try {
    await access(file, fsConstants.X_OK);
  } catch {
    throw new Error(`${file} is missing or not executable; ${hint}`);
  }
}

/**
 * Spawns the server on 127.0.0.1 with a free port and a fresh SQLite database, and
 * resolves once it printed `quckchat listening on http://127.0.0.1:PORT` on stdout.
 *
 * @returns {Promise<{url: string, stop: () => Promise<void>}>}
 */
export async function startServer() {
  await requireExecutable(
    SERVER_BIN,
    'build it with `cargo build -p quckchat-server --bin quckchat` or set QUCKCHAT_BIN',
  );
  const dataDir = await mkdtemp(path.join(tmpdir(), 'quckchat-browser-'));
  const env = { ...process.env };
  delete env.REDIS_URL; // single instance
  Object.assign(env, {
    HOST: '127.0.0.1',
    PORT: '0',
    DATABASE_URL: `sqlite://${path.join(dataDir, 'q.db')}`,
    JWT_SECRET: 'browser-secret',
    AUTH_RATE_PER_MIN: '0',
    AUTH_USER_RATE_PER_MIN: '0',
    RUST_LOG: 'warn',
  });
  const child = spawn(SERVER_BIN, [], { cwd: dataDir, env, stdio: ['ignore', 'pipe', 'pipe'] });

  const tail = [];
  const remember = (stream, line) => {
    tail.push(`[${stream}] ${line}`);
    if (tail.length > 60) tail.shift();
    if (VERBOSE) process.stderr.write(`[quckchat ${stream}] ${line}\n`);
  };
  createInterface({ input: child.stderr }).on('line', (line) => remember('stderr', line));
  const describe = () => (tail.length ? `\n--- last server output ---\n${tail.join('\n')}\n---` : ' (the server printed nothing)');

  let exitStatus = null;
  const exited = new Promise((resolve) => {
    child.once('exit', (code, signal) => resolve((exitStatus = { code, signal })));
  });
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);

  let port;
  try {
    port = await new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`server did not print its listening line within ${STARTUP_TIMEOUT_MS} ms${describe()}`)),
        STARTUP_TIMEOUT_MS,
      );
      createInterface({ input: child.stdout }).on('line', (raw) => {
        const line = raw.replace(/\r$/, '');
        remember('stdout', line);
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

  return {
    url: `http://127.0.0.1:${port}`,
    describe,
    /** SIGTERM, then await the exit. Throws when the server had died on its own. */
    async stop() {
      const diedEarly = exitStatus;
      if (exitStatus === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
        await exited;
        clearTimeout(timer);
      }
      process.removeListener('exit', killOnExit);
      await rm(dataDir, { recursive: true, force: true });
      if (diedEarly) {
        throw new Error(`the server died during the test (code ${diedEarly.code}, signal ${diedEarly.signal})${describe()}`);
      }
    },
  };
}

/**
 * Launches Debian's Chromium headless. playwright-core gives every launch a fresh
 * temporary user data dir (and removes it on close).
 */
export async function launchChromium() {
  await requireExecutable(CHROMIUM, 'install it with `apt-get install -y chromium`');
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true, timeout: 30_000 });
}

/**
 * A page in a browser context of its own (own cookies and sessionStorage: its own user),
 * with its console errors and uncaught exceptions collected in `page.problems`.
 */
export async function newUserPage(browser, name) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 720 } });
  const page = await context.newPage();
  page.problems = [];
  page.on('pageerror', (err) => page.problems.push(`uncaught: ${err.message}`));
  page.on('console', (msg) => {
    if (VERBOSE) process.stderr.write(`[${name} console.${msg.type()}] ${msg.text()}\n`);
    if (msg.type() === 'error') page.problems.push(`console.error: ${msg.text()}`);
  });
  return page;
}

/**
 * Calls `probe` until `accept(value)` holds, and returns that value; throws with the last
 * value once `timeoutMs` have passed. `intervalMs` is the polling period, not a wait.
 */
export async function pollUntil(what, probe, accept, { timeoutMs = 15_000, intervalMs = 100 } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await probe();
    if (accept(last)) return last;
    if (Date.now() > deadline) {
      throw new Error(`${what}: not true within ${timeoutMs} ms (last value: ${JSON.stringify(last)})`);
    }
    await delay(intervalMs);
  }
}

export async function ensureArtifactsDir() {
  await mkdir(ARTIFACTS_DIR, { recursive: true });
  return ARTIFACTS_DIR;
}
