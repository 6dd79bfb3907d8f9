// Finding 4: when the sole admin of a group left at the same moment as the member who
// would be promoted, 17 of 20 groups ended with no admin (no route can fix it), and 3 of
// the admin's leaves answered 500 although the leave happened. Removal and promotion are
// now one atomic step in every store.
//
// Replayed on SQLite and on PostgreSQL (DATABASE_URL_PG_TEST, as CI sets it): 20 groups
// of four; the admin and the next in line leave at once.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';

import { api, register, startServer } from './lib.mjs';

const GROUPS = Number(process.env.MEMBERSHIP_GROUPS ?? 20);

const STORES = [{ name: 'SQLite', env: {} }];
if (process.env.DATABASE_URL_PG_TEST) {
  const schema = `sec_${randomBytes(4).toString('hex')}`;
  STORES.push({ name: 'PostgreSQL', env: { DATABASE_URL: `${process.env.DATABASE_URL_PG_TEST}?schema=${schema}` } });
} else if (process.env.CI) {
  throw new Error('CI must set DATABASE_URL_PG_TEST: the race is replayed on PostgreSQL too');
}

for (const store of STORES) {
  describe(store.name, () => {
    let server;
    before(async () => {
      server = await startServer(store.env);
    });
    after(() => server?.stop());

    test(`${GROUPS} groups: the admin and the next in line leave at once; every group keeps one admin`, { timeout: 120_000 }, async () => {
      const [a, b, c, d] = await Promise.all(['a', 'b', 'c', 'd'].map((p) => register(server.url, p)));
      const groups = [];
      for (let i = 0; i < GROUPS; i++) {
        const group = await api(server.url, 'POST', '/api/v1/conversations', {
          token: a.accessToken,
          body: { type: 'group', name: `g${i}`, participants: [b.user.id, c.user.id, d.user.id] },
        });
        assert.equal(group.status, 201, JSON.stringify(group.body));
        // The heir: the member listed right after the creator (the order promotion follows).
        const heirId = group.body.participants.find((p) => p.userId !== a.user.id).userId;
        groups.push({ id: group.body.id, heir: [b, c, d].find((u) => u.user.id === heirId) });
      }
      // Every leave of every group at once (the admin and the heir), as a burst of clients would.
      const leave = (id, u) => api(server.url, 'DELETE', `/api/v1/conversations/${id}/members/${u.user.id}`, { token: u.accessToken });
      const statuses = (await Promise.all(groups.flatMap((g) => [leave(g.id, a), leave(g.id, g.heir)]))).map((r) => r.status);
      let adminless = 0;
      for (const [i, g] of groups.entries()) {
        const stayer = [b, c, d].find((u) => u !== g.heir);
        const seen = await api(server.url, 'GET', `/api/v1/conversations/${g.id}`, { token: stayer.accessToken });
        assert.equal(seen.status, 200);
        const ids = seen.body.participants.map((p) => p.userId).sort();
        const left = [b, c, d].filter((u) => u !== g.heir).map((u) => u.user.id).sort();
        assert.deepEqual(ids, left, `group ${i}: both leaves took effect`);
        if (seen.body.participants.filter((p) => p.role === 'admin').length !== 1) adminless++;
      }
      console.log(`MEASURED: concurrent leaves (${store.name}): ${adminless} of ${GROUPS} groups without exactly one admin; statuses ${JSON.stringify(statuses.reduce((m, s) => ({ ...m, [s]: (m[s] ?? 0) + 1 }), {}))}`);
      assert.ok(statuses.every((s) => s === 204), `every leave answers 204: ${JSON.stringify(statuses)}`);
      assert.equal(adminless, 0, `${adminless} groups left without exactly one admin`);
    });
  });
}
