// The processes of a fleet test, all children of the test process: a private Redis,
// QuckChat instances sharing a PostgreSQL schema, a TCP proxy in front of PostgreSQL
// that a test can cut, and nginx with a rendered configuration.
//
// Nothing here sleeps to wait for something: every wait is on a line a process prints,
// a process exit, or a condition polled under a deadline.

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { constants as fsConstants, createWriteStream } from 'node:fs';
import { access, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

/** The `fleet/` folder. */
export const FLEET_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
/** The repository root. */
export const ROOT_DIR = path.resolve(FLEET_DIR, '..');

/** The server binary: `QUCKCHAT_BIN`, or `target/debug/quckchat`. */
export const SERVER_BIN = process.env.QUCKCHAT_BIN
  ? path.resolve(process.env.QUCKCHAT_BIN)
  : path.resolve(ROOT_DIR, 'target', 'debug', 'quckchat');
export const REDIS_BIN = process.env.REDIS_SERVER_BIN || 'redis-server';
export const NGINX_BIN = process.env.NGINX_BIN || '/usr/sbin/nginx';
/** PostgreSQL (trust auth) that the instances use, through `PgProxy` when a test cuts it. */
export const PG_HOST = process.env.FLEET_PG_HOST || '127.0.0.1';
export const PG_PORT = Number(process.env.FLEET_PG_PORT || 5432);
export const PG_DATABASE = process.env.FLEET_PG_DATABASE || 'test';
/** `FLEET_VERBOSE=1`: copy every process's output to the test's stderr as it comes. */
export const VERBOSE = Boolean(process.env.FLEET_VERBOSE);

export const JWT_SECRET = 'fleet-shared-secret';
const STARTUP_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 15_000;
const LISTENING_LINE = /^quckchat listening on http:\/\/127\.0\.0\.1:(\d+)$/;

// ---------------------------------------------------------------------------
// Small tools
// ---------------------------------------------------------------------------

/** A fresh temporary directory for one test file's processes. */
export function makeTmpDir(prefix = 'quckchat-fleet-') {
  return mkdtemp(path.join(tmpdir(), prefix));
}

/** `prefix_<8 hex>`: unique schema names, Redis prefixes, usernames. */
export function uniqueId(prefix) {
  return `${prefix}_${randomBytes(4).toString('hex')}`;
}

/** A TCP port that was free a moment ago (bind port 0, read it, close). */
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

/** Resolves after `ms`. Only for pacing a load or the length of an outage, never to wait for an effect. */
export function pause(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Polls `check` (sync or async) every `every` ms until it returns a truthy value, which
 * is resolved; rejects with `what` and the last error after `ms`.
 */
export async function waitUntil(what, check, ms = 10_000, every = 50) {
  const deadline = Date.now() + ms;
  let lastError;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() >= deadline) {
      throw new Error(`timed out after ${ms} ms waiting until ${what}${lastError ? ` (last error: ${lastError.message})` : ''}`);
    }
    await pause(every);
  }
}

/** Raced against `ms`: rejects with `what` when `promise` takes longer. */
export function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
    }),
  ]);
}

/** The last `n` lines of a text file ('' when it does not exist). */
export async function tailOf(file, n = 80) {
  try {
    const text = await readFile(file, 'utf8');
    return text.split('\n').slice(-n).join('\n');
  } catch {
    return '';
  }
}

// ---------------------------------------------------------------------------
// A child process with its output in a file
// ---------------------------------------------------------------------------

const children = new Set();
process.once('exit', () => {
  for (const child of children) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
});

/**
 * Spawns `bin args` with stdout and stderr appended to `logFile` (and the lines of
 * stdout handed to `onStdoutLine`). Resolves nothing; returns a handle.
 */
function spawnLogged(name, bin, args, { env, cwd, logFile, onStdoutLine }) {
  const child = spawn(bin, args, { env, cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  const log = createWriteStream(logFile, { flags: 'a' });
  let status = null;
  const exited = new Promise((resolve) => {
    child.once('exit', (code, signal) => {
      status = { code, signal };
      children.delete(child);
      resolve(status);
    });
  });
  const failedToSpawn = new Promise((resolve) => child.once('error', resolve));
  child.stdout.setEncoding('utf8');
  child.stderr.setEncoding('utf8');
  createInterface({ input: child.stdout }).on('line', (line) => {
    log.write(`[stdout] ${line}\n`);
    if (VERBOSE) process.stderr.write(`[${name}] ${line}\n`);
    if (onStdoutLine) onStdoutLine(line.replace(/\r$/, ''));
  });
  createInterface({ input: child.stderr }).on('line', (line) => {
    log.write(`${line}\n`);
    if (VERBOSE) process.stderr.write(`[${name}] ${line}\n`);
  });
  return {
    child,
    pid: child.pid,
    exited,
    failedToSpawn,
    status: () => status,
    alive: () => status === null,
    closeLog: () => new Promise((resolve) => log.end(resolve)),
  };
}

/** SIGTERM (or `signal`), then SIGKILL after `ms`; resolves with the exit status. */
async function terminate(proc, signal = 'SIGTERM', ms = STOP_TIMEOUT_MS) {
  if (!proc.alive()) return proc.status();
  proc.child.kill(signal);
  let timer;
  const late = new Promise((resolve) => {
    timer = setTimeout(() => resolve('late'), ms);
  });
  if ((await Promise.race([proc.exited, late])) === 'late') {
    process.stderr.write(`warning: pid ${proc.pid} did not exit within ${ms} ms of ${signal}; killing it\n`);
    proc.child.kill('SIGKILL');
  }
  clearTimeout(timer);
  return proc.exited;
}

// ---------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------

/**
 * A private redis-server on a free port (no persistence), restartable on the same port.
 * `kill()` is kill -9; `start()` starts it again.
 */
export async function startRedis(dir) {
  const port = await freePort();
  const logFile = path.join(dir, `redis-${port}.log`);
  let proc = null;
  const redis = {
    port,
    url: `redis://127.0.0.1:${port}`,
    logFile,
    alive: () => Boolean(proc && proc.alive()),
    async start() {
      proc = spawnLogged('redis', REDIS_BIN, [
        '--port', String(port),
        '--bind', '127.0.0.1',
        '--save', '',
        '--appendonly', 'no',
        '--dir', dir,
      ], { env: process.env, cwd: dir, logFile });
      const ready = new Promise((resolve) => {
        // redis-server logs to stdout by default.
        proc.child.stdout.on('data', (chunk) => {
          if (String(chunk).includes('Ready to accept connections')) resolve('ready');
        });
      });
      const outcome = await withTimeout(
        Promise.race([ready, proc.exited.then(() => 'exited'), proc.failedToSpawn.then(() => 'spawn')]),
        STARTUP_TIMEOUT_MS,
        `redis-server on port ${port} to be ready`,
      );
      if (outcome !== 'ready') {
        throw new Error(`redis-server on port ${port} did not start (${outcome}):\n${await tailOf(logFile)}`);
      }
    },
    /** kill -9, awaited. */
    async kill() {
      if (proc && proc.alive()) {
        proc.child.kill('SIGKILL');
        await proc.exited;
      }
    },
    async stop() {
      if (proc) {
        await terminate(proc, 'SIGTERM', 5000);
        await proc.closeLog();
      }
    },
  };
  await redis.start();
  return redis;
}

// ---------------------------------------------------------------------------
// QuckChat instances
// ---------------------------------------------------------------------------

/** `postgres://…/test?schema=NAME` on PostgreSQL, or on a proxy's port. */
export function databaseUrl(schema, port = PG_PORT, host = PG_HOST) {
  return `postgres://postgres@${host}:${port}/${PG_DATABASE}?schema=${schema}`;
}

/**
 * Starts one instance on 127.0.0.1 with a free port; resolves once it printed its
 * listening line. Its stdout and stderr go to `<dir>/<name>.log`.
 */
export async function startInstance({ name, dir, env }) {
  try {
    await access(SERVER_BIN, fsConstants.X_OK);
  } catch {
    throw new Error(
      `quckchat server binary not found or not executable at ${SERVER_BIN}; ` +
        'build it with `cargo build -p quckchat-server --bin quckchat` or set QUCKCHAT_BIN',
    );
  }
  const workDir = path.join(dir, name);
  await mkdir(workDir, { recursive: true });
  const logFile = path.join(dir, `${name}.log`);
  const childEnv = { ...process.env };
  for (const k of ['REDIS_URL', 'DATABASE_URL', 'PORT', 'HOST', 'TRANSPORTS']) delete childEnv[k];
  Object.assign(childEnv, {
    HOST: '127.0.0.1',
    PORT: '0',
    JWT_SECRET,
    // Many users register through one nginx; the auth throttle is tested in security/.
    AUTH_RATE_PER_MIN: '0',
    AUTH_USER_RATE_PER_MIN: '0',
    RUST_LOG: process.env.FLEET_RUST_LOG || 'warn',
    ...env,
  });
  let resolvePort;
  const listening = new Promise((resolve) => {
    resolvePort = resolve;
  });
  const proc = spawnLogged(name, SERVER_BIN, [], {
    env: childEnv,
    cwd: workDir,
    logFile,
    onStdoutLine: (line) => {
      const m = LISTENING_LINE.exec(line);
      if (m) resolvePort(Number(m[1]));
    },
  });
  const outcome = await withTimeout(
    Promise.race([
      listening,
      proc.exited.then((s) => ({ exited: s })),
      proc.failedToSpawn.then((e) => ({ spawnError: e })),
    ]),
    STARTUP_TIMEOUT_MS,
    `instance ${name} to print its listening line`,
  ).catch(async (err) => {
    proc.child.kill('SIGKILL');
    throw new Error(`${err.message}\n--- ${name} output ---\n${await tailOf(logFile)}`);
  });
  if (typeof outcome !== 'number') {
    throw new Error(`instance ${name} did not start: ${JSON.stringify(outcome)}\n--- ${name} output ---\n${await tailOf(logFile)}`);
  }
  const url = `http://127.0.0.1:${outcome}`;
  return {
    name,
    port: outcome,
    url,
    logFile,
    pid: proc.pid,
    alive: proc.alive,
    status: proc.status,
    exited: proc.exited,
    /** kill -9, awaited. */
    async kill() {
      if (proc.alive()) {
        proc.child.kill('SIGKILL');
        await proc.exited;
      }
    },
    /** SIGTERM (graceful), awaited; resolves with the exit status. */
    async stop() {
      const s = await terminate(proc);
      await proc.closeLog();
      return s;
    },
  };
}

/**
 * Starts `names.length` instances of one fleet (same schema, Redis, prefix, JWT secret)
 * at once. `env` is added to each instance's environment.
 */
export async function startFleet({ dir, names = ['A', 'B', 'C'], redisUrl, schema, prefix, databasePort, env = {} }) {
  const common = {
    DATABASE_URL: databaseUrl(schema, databasePort),
    REDIS_URL: redisUrl,
    REDIS_PREFIX: prefix,
    ...env,
  };
  const started = await Promise.allSettled(names.map((name) => startInstance({ name, dir, env: common })));
  const failed = started.filter((s) => s.status === 'rejected');
  if (failed.length) {
    await Promise.all(started.filter((s) => s.status === 'fulfilled').map((s) => s.value.kill()));
    throw failed[0].reason;
  }
  const instances = started.map((s) => s.value);
  return {
    instances,
    byName: Object.fromEntries(instances.map((i) => [i.name, i])),
    async stop() {
      await Promise.all(instances.map((i) => i.stop()));
    },
  };
}

/** GET `url` → {status, text}, with a short timeout. */
export async function httpGet(url, ms = 3000) {
  const res = await fetch(url, { signal: AbortSignal.timeout(ms) });
  return { status: res.status, text: await res.text() };
}

/** The instance's health: the HTTP status of /api/v1/health (0 when it does not answer). */
export async function healthStatus(instance, ms = 4000) {
  try {
    return (await httpGet(`${instance.url}/api/v1/health`, ms)).status;
  } catch {
    return 0;
  }
}

/** Values of the metric `name` (e.g. `quckchat_sockets_connected`) by label string. */
export async function metric(instance, name) {
  const { text } = await httpGet(`${instance.url}/metrics`);
  const out = {};
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (m && m[1] === name) out[m[2] ?? ''] = Number(m[3]);
  }
  return out;
}

/** quckchat_sockets_connected{namespace="/chat"} of an instance. */
export async function chatSockets(instance) {
  const values = await metric(instance, 'quckchat_sockets_connected');
  for (const [labels, v] of Object.entries(values)) {
    if (labels.includes('namespace="/chat"')) return v;
  }
  return 0;
}

/** The tail of every instance's log, for a failure message. */
export async function describeLogs(procs) {
  const parts = [];
  for (const p of procs) {
    if (!p) continue;
    const tail = await tailOf(p.logFile, p.tailLines ?? 60);
    const state = p.alive && !p.alive() ? ` (exited: ${JSON.stringify(p.status ? p.status() : null)})` : '';
    parts.push(`--- ${p.name ?? 'process'} ${p.logFile}${state} ---\n${tail || '(empty)'}`);
  }
  return parts.join('\n');
}

// ---------------------------------------------------------------------------
// A cuttable TCP proxy in front of PostgreSQL
// ---------------------------------------------------------------------------

/**
 * Listens on a free port and pipes every connection to `target`. `cut()` destroys every
 * open connection and resets new ones at once (PostgreSQL "gone"); `restore()` lets
 * connections through again.
 */
export async function startPgProxy(targetPort = PG_PORT, targetHost = PG_HOST) {
  const pairs = new Set();
  let down = false;
  let refused = 0;
  const server = net.createServer((client) => {
    if (down) {
      refused += 1;
      client.resetAndDestroy ? client.resetAndDestroy() : client.destroy();
      return;
    }
    const upstream = net.connect(targetPort, targetHost);
    const pair = { client, upstream };
    pairs.add(pair);
    const close = () => {
      client.destroy();
      upstream.destroy();
      pairs.delete(pair);
    };
    client.on('error', close);
    upstream.on('error', close);
    client.on('close', close);
    upstream.on('close', close);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  return {
    port: server.address().port,
    open: () => pairs.size,
    refused: () => refused,
    cut() {
      down = true;
      for (const { client, upstream } of pairs) {
        client.resetAndDestroy ? client.resetAndDestroy() : client.destroy();
        upstream.destroy();
      }
      pairs.clear();
    },
    restore() {
      down = false;
    },
    close() {
      down = true;
      for (const { client, upstream } of pairs) {
        client.destroy();
        upstream.destroy();
      }
      pairs.clear();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

// ---------------------------------------------------------------------------
// nginx
// ---------------------------------------------------------------------------

/**
 * Renders a `deploy/nginx/*.conf` template: every `${NAME}` placeholder is replaced from
 * `values`; a placeholder left without a value is an error (nginx's own `$variables`
 * have no braces in our templates).
 */
export async function renderTemplate(templatePath, values) {
  const text = await readFile(templatePath, 'utf8');
  const rendered = text.replace(/\$\{([A-Z0-9_]+)\}/g, (whole, name) => {
    if (!(name in values)) throw new Error(`${templatePath}: no value for the placeholder ${whole}`);
    return String(values[name]);
  });
  return rendered;
}

/**
 * Runs nginx in the foreground with a main configuration of our own (pid, logs and temp
 * paths inside `dir`, one worker) that includes `siteConf` (the rendered template)
 * in its `http` block. Resolves once `probePath` answers through it.
 */
export async function startNginx({ dir, siteConf, listenPort, probePath = '/api/v1/health' }) {
  const prefix = path.join(dir, `nginx-${listenPort}`);
  await mkdir(path.join(prefix, 'logs'), { recursive: true });
  await mkdir(path.join(prefix, 'temp'), { recursive: true });
  const sitePath = path.join(prefix, 'quckchat.conf');
  await writeFile(sitePath, siteConf);
  const mainPath = path.join(prefix, 'nginx.conf');
  await writeFile(
    mainPath,
    [
      'worker_processes 1;',
      `pid ${path.join(prefix, 'nginx.pid')};`,
      `error_log ${path.join(prefix, 'logs', 'error.log')} warn;`,
      'events { worker_connections 1024; }',
      'http {',
      `  access_log ${path.join(prefix, 'logs', 'access.log')};`,
      `  client_body_temp_path ${path.join(prefix, 'temp', 'body')};`,
      `  proxy_temp_path ${path.join(prefix, 'temp', 'proxy')};`,
      `  fastcgi_temp_path ${path.join(prefix, 'temp', 'fastcgi')};`,
      `  uwsgi_temp_path ${path.join(prefix, 'temp', 'uwsgi')};`,
      `  scgi_temp_path ${path.join(prefix, 'temp', 'scgi')};`,
      `  include ${sitePath};`,
      '}',
      '',
    ].join('\n'),
  );
  const logFile = path.join(prefix, 'logs', 'nginx.out');
  // Check the configuration first, so a broken template fails with nginx's own words.
  const check = spawnLogged('nginx -t', NGINX_BIN, ['-p', prefix, '-c', mainPath, '-t'], { env: process.env, cwd: prefix, logFile });
  const checked = await Promise.race([check.exited, check.failedToSpawn.then((e) => ({ code: -1, error: e.message }))]);
  await check.closeLog();
  if (checked.code !== 0) {
    throw new Error(`nginx -t refused the configuration (${JSON.stringify(checked)}):\n${await tailOf(logFile)}\n--- ${sitePath} ---\n${siteConf}`);
  }
  const proc = spawnLogged('nginx', NGINX_BIN, ['-p', prefix, '-c', mainPath, '-g', 'daemon off;'], {
    env: process.env,
    cwd: prefix,
    logFile,
  });
  const url = `http://127.0.0.1:${listenPort}`;
  try {
    await waitUntil(
      `nginx answers ${probePath} on port ${listenPort}`,
      async () => {
        if (!proc.alive()) throw new Error(`nginx exited: ${JSON.stringify(proc.status())}`);
        return (await httpGet(url + probePath, 2000)).status === 200;
      },
      15_000,
      50,
    );
  } catch (err) {
    proc.child.kill('SIGKILL');
    throw new Error(`${err.message}\n${await tailOf(logFile)}\n${await tailOf(path.join(prefix, 'logs', 'error.log'))}`);
  }
  return {
    name: 'nginx',
    url,
    port: listenPort,
    logFile: path.join(prefix, 'logs', 'error.log'),
    accessLog: path.join(prefix, 'logs', 'access.log'),
    alive: proc.alive,
    status: proc.status,
    async stop() {
      // SIGTERM: fast shutdown (a graceful SIGQUIT would wait for open WebSockets).
      await terminate(proc, 'SIGTERM', 10_000);
      await proc.closeLog();
    },
  };
}

/** Removes a test file's temporary directory (kept when FLEET_KEEP_TMP is set). */
export async function removeTmpDir(dir) {
  if (!dir || process.env.FLEET_KEEP_TMP) return;
  await rm(dir, { recursive: true, force: true });
}

/** Drops a test schema (best effort, through psql when it is there). */
export async function dropSchema(schema) {
  if (!/^[a-z0-9_]+$/.test(schema)) return;
  await new Promise((resolve) => {
    const child = spawn('psql', ['-w', '-q', '-d', `postgres://postgres@${PG_HOST}:${PG_PORT}/${PG_DATABASE}`, '-c', `DROP SCHEMA IF EXISTS ${schema} CASCADE`], {
      stdio: 'ignore',
    });
    child.once('error', () => resolve());
    child.once('exit', () => resolve());
  });
}
