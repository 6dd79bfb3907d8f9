// One fleet for a test (or a test file): a temporary directory, a private Redis, a fresh
// PostgreSQL schema, optionally a cuttable proxy in front of PostgreSQL, and N instances.
// `fleetTest` wraps a test so that a failure carries the tail of every process's log.

import { test } from 'node:test';

import { closeAllSockets } from './client.mjs';
import {
  describeLogs,
  dropSchema,
  makeTmpDir,
  metric,
  removeTmpDir,
  startFleet,
  startPgProxy,
  startRedis,
  uniqueId,
  waitUntil,
} from './procs.mjs';

/**
 * Starts a fleet. `env` goes to every instance; `pgProxy: true` puts a `PgProxy` between
 * the instances and PostgreSQL. Resolves to a handle whose `close()` stops everything it
 * started (instances with SIGTERM) and reports instances that did not exit cleanly.
 */
export async function openFleet({ names = ['A', 'B', 'C'], env = {}, pgProxy = false } = {}) {
  const dir = await makeTmpDir();
  const schema = uniqueId('fleet');
  const prefix = uniqueId('qcfleet');
  const ctx = { dir, schema, prefix, redis: null, proxy: null, fleet: null, extra: [] };
  try {
    ctx.redis = await startRedis(dir);
    if (pgProxy) ctx.proxy = await startPgProxy();
    ctx.fleet = await startFleet({
      dir,
      names,
      redisUrl: ctx.redis.url,
      schema,
      prefix,
      databasePort: ctx.proxy ? ctx.proxy.port : undefined,
      env,
    });
  } catch (err) {
    await closeFleet(ctx).catch(() => {});
    throw err;
  }
  Object.assign(ctx, ctx.fleet.byName);
  ctx.instances = ctx.fleet.instances;
  /** Every process's log tail (instances, Redis, and whatever was added to `extra`). */
  ctx.logs = () =>
    describeLogs([
      ...ctx.instances,
      { name: 'redis', logFile: ctx.redis.logFile, tailLines: 12 },
      ...ctx.extra,
    ]);
  let closing = null;
  ctx.close = () => (closing ??= closeFleet(ctx));
  return ctx;
}

/**
 * Stops what `openFleet` started. Resolves to the list of instances that were alive but
 * did not exit with code 0 on SIGTERM (a graceful shutdown exits 0).
 */
async function closeFleet(ctx) {
  closeAllSockets();
  const unclean = [];
  if (ctx.fleet) {
    await Promise.all(
      ctx.fleet.instances.map(async (i) => {
        const wasAlive = i.alive();
        const status = await i.stop();
        if (wasAlive && status && status.code !== 0) unclean.push(`${i.name}: ${JSON.stringify(status)}`);
      }),
    );
  }
  for (const extra of ctx.extra) {
    if (extra.stop) await extra.stop().catch(() => {});
  }
  if (ctx.proxy) await ctx.proxy.close();
  if (ctx.redis) await ctx.redis.stop();
  await dropSchema(ctx.schema);
  if (unclean.length === 0) await removeTmpDir(ctx.dir);
  return unclean;
}

/**
 * `test(name, fn)` with a timeout, whose failure message ends with the logs of the fleet
 * that `getFleet()` returns (when there is one). With `closeAfter`, that fleet is closed
 * when the test ends (a test that opens its own fleet), so that no more than one fleet
 * holds PostgreSQL connections at a time.
 */
export function fleetTest(name, getFleet, fn, { timeout = 90_000, closeAfter = false } = {}) {
  return test(name, { timeout }, async (t) => {
    try {
      await fn(t);
    } catch (err) {
      const f = getFleet();
      if (f && f.logs) {
        const logs = await f.logs().catch((e) => `(could not read the logs: ${e.message})`);
        if (err instanceof Error) {
          err.message += `\n${logs}`;
        } else {
          process.stderr.write(`${logs}\n`);
        }
      }
      throw err;
    } finally {
      closeAllSockets();
      // The next test starts from empty instances: the sockets closed here are released
      // (presence, calls) on their instances before it runs.
      const f = getFleet();
      if (f && closeAfter) {
        const unclean = await f.close();
        if (unclean.length) process.stderr.write(`instances that did not exit 0 on SIGTERM: ${unclean.join('; ')}\n`);
      } else if (f && f.instances) {
        await settled(f.instances);
      }
    }
  });
}

/** Waits until every live instance counts no socket in either namespace. */
export async function settled(instances, ms = 10_000) {
  await Promise.all(
    instances
      .filter((i) => i.alive())
      .map((i) =>
        waitUntil(
          `${i.name} has released every socket`,
          async () => {
            const gauges = await metric(i, 'quckchat_sockets_connected');
            return Object.values(gauges).every((v) => v === 0);
          },
          ms,
        ),
      ),
  );
}

/** Prints one measurement line (`MEASURED: ...`), the fault tests' report. */
export function measured(what, values) {
  const parts = Object.entries(values).map(([k, v]) => `${k}=${typeof v === 'number' && !Number.isInteger(v) ? v.toFixed(3) : v}`);
  console.log(`MEASURED: ${what}: ${parts.join(' ')}`);
}
