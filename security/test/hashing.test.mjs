// Finding 1 (severe): every login ran argon2id (19 MiB) on tokio's blocking pool with no
// bound, even for users that do not exist. 288 logins, 32 in parallel, took RSS from
// 15 MB to 4.8 GB, and it stayed there. Now hashing has a fixed pool of threads with
// reused memory behind a short queue; beyond it the answer is 503 with Retry-After.
//
// Replayed: 500 logins, 32 at a time, half for a real user with a wrong password and
// half for users that do not exist, with throttling off (this is the hashing bound, not
// the throttle). The peak RSS may grow by the pool's memory, not by the storm.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { api, memory, register, startServer } from './lib.mjs';

const LOGINS = 500;
const PARALLEL = 32;
/** Two hashing threads × 19 MiB, plus the allocator's slack and the server's own growth. */
const PEAK_GROWTH_MIB = 160;
const IDLE_GROWTH_MIB = 100;

let server;
before(async () => {
  server = await startServer({ AUTH_RATE_PER_MIN: '0', AUTH_USER_RATE_PER_MIN: '0', HASH_WORKERS: '2' });
});
after(() => server?.stop());

test(`a storm of ${LOGINS} logins (${PARALLEL} at a time) does not grow memory beyond the hashing pool`, { timeout: 300_000 }, async () => {
  const alice = await register(server.url, 'alice');
  // One real login first, so the pool's memory and the allocator's arenas exist.
  const first = await api(server.url, 'POST', '/api/v1/auth/login', {
    body: { username: alice.user.username, password: 'wrong password!' },
  });
  assert.equal(first.status, 401);
  const before = await memory(server.pid);

  const statuses = new Map();
  let retryAfterMissing = 0;
  let next = 0;
  const worker = async () => {
    while (next < LOGINS) {
      const i = next++;
      const username = i % 2 ? alice.user.username : `nobody_${i}`;
      const res = await api(server.url, 'POST', '/api/v1/auth/login', { body: { username, password: `wrong ${i} password` } });
      statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
      if (res.status === 503 && !res.headers.get('retry-after')) retryAfterMissing++;
    }
  };
  await Promise.all(Array.from({ length: PARALLEL }, worker));
  const during = await memory(server.pid);

  // Every answer is a refusal of the credentials or "busy, retry": never a 500, never a hang.
  const unexpected = [...statuses].filter(([s]) => s !== 401 && s !== 503);
  assert.deepEqual(unexpected, [], `statuses: ${JSON.stringify([...statuses])}`);
  assert.equal(retryAfterMissing, 0, 'every 503 carries Retry-After');
  assert.ok((statuses.get(401) ?? 0) > 0, 'some logins were checked');

  const peakGrowth = during.peakMiB - before.rssMiB;
  console.log(
    `MEASURED: login storm: RSS ${before.rssMiB.toFixed(1)} MiB before, peak ${during.peakMiB.toFixed(1)} MiB, ` +
      `${during.rssMiB.toFixed(1)} MiB after; statuses ${JSON.stringify(Object.fromEntries(statuses))}`,
  );
  assert.ok(peakGrowth < PEAK_GROWTH_MIB, `peak RSS grew by ${peakGrowth.toFixed(1)} MiB (bound ${PEAK_GROWTH_MIB})`);
  const idleGrowth = during.rssMiB - before.rssMiB;
  assert.ok(idleGrowth < IDLE_GROWTH_MIB, `RSS after the storm grew by ${idleGrowth.toFixed(1)} MiB (bound ${IDLE_GROWTH_MIB})`);

  // And the server still logs people in.
  const ok = await api(server.url, 'POST', '/api/v1/auth/login', { body: { username: alice.user.username, password: 'correct horse battery' } });
  assert.equal(ok.status, 200);
});
