// deploy/nginx/*.conf, rendered for three real instances and run in a real nginx: the
// WebSocket-only configuration spreads clients over the instances without stickiness and
// they chat with each other; the sticky one carries long-polling (then the upgrade to
// WebSocket) to one instance.

import assert from 'node:assert/strict';
import path from 'node:path';
import { after } from 'node:test';

import { api, chat, connect, createConversation, expectStatus, historyAfter, once, record, register, sendMessage } from './lib/client.mjs';
import { fleetTest, openFleet } from './lib/harness.mjs';
import { ROOT_DIR, chatSockets, freePort, httpGet, renderTemplate, startNginx, waitUntil } from './lib/procs.mjs';

const TEMPLATES = path.join(ROOT_DIR, 'deploy', 'nginx');

let F = null;
after(async () => {
  if (F) await F.close();
});

/** Renders `template` for the fleet's three instances and starts nginx on a free port. */
async function nginxFor(fleet, template) {
  const listenPort = await freePort();
  const [i1, i2, i3] = fleet.instances;
  const conf = await renderTemplate(path.join(TEMPLATES, template), {
    QUCKCHAT_LISTEN: `127.0.0.1:${listenPort}`,
    QUCKCHAT_INSTANCE_1: `127.0.0.1:${i1.port}`,
    QUCKCHAT_INSTANCE_2: `127.0.0.1:${i2.port}`,
    QUCKCHAT_INSTANCE_3: `127.0.0.1:${i3.port}`,
  });
  assert.ok(!conf.includes('${'), 'a placeholder was left in the rendered configuration');
  const nginx = await startNginx({ dir: fleet.dir, siteConf: conf, listenPort });
  fleet.extra.push(nginx);
  return nginx;
}

/** How many `/chat` sockets each instance counts, once they add up to `total`. */
async function spread(fleet, total) {
  let counts;
  await waitUntil(
    `the instances count ${total} /chat sockets in all`,
    async () => {
      counts = await Promise.all(fleet.instances.map(chatSockets));
      return counts.reduce((a, b) => a + b, 0) === total;
    },
    10_000,
  );
  return Object.fromEntries(fleet.instances.map((inst, i) => [inst.name, counts[i]]));
}

fleetTest('quckchat.conf (WebSocket only, round robin): clients through nginx land on different instances and chat', () => F, async () => {
  F = null;
  F = await openFleet();
  const nginx = await nginxFor(F, 'quckchat.conf');

  // REST and the rest of the site through nginx.
  expectStatus(await api(nginx.url, 'GET', '/api/v1/health'), 200, 'health through nginx');
  assert.equal((await httpGet(`${nginx.url}/api/openapi.json`)).status, 200);
  assert.equal((await httpGet(`${nginx.url}/app`)).status, 200);
  assert.equal((await httpGet(`${nginx.url}/metrics`)).status, 404, 'metrics are not exposed through nginx');

  const N = 6;
  const users = [];
  for (let i = 0; i < N; i++) users.push(await register(nginx.url, `user${i}`));
  const group = await createConversation(nginx.url, users[0], 'group', users.slice(1).map((u) => u.user.id), 'through nginx');

  const sockets = [];
  for (const u of users) sockets.push(await chat(nginx.url, u, `${u.name}@nginx`));
  const counts = await spread(F, N);
  console.log(`through nginx: /chat sockets per instance ${JSON.stringify(counts)}`);
  for (const [name, n] of Object.entries(counts)) assert.ok(n > 0, `no client landed on ${name}: ${JSON.stringify(counts)}`);

  // Everyone sends one message; everyone gets all of them, seqs 1..N.
  const recs = sockets.map((s) => record(s, 'message:new'));
  await Promise.all(sockets.map((s, i) => sendMessage(s, group.id, `hello from ${users[i].name}`)));
  for (const [i, r] of recs.entries()) {
    const got = await r.waitForCount(N, (m) => m.conversationId === group.id, 10_000);
    assert.deepEqual(
      got.map((m) => m.seq).sort((a, b) => a - b),
      Array.from({ length: N }, (_, k) => k + 1),
      `${sockets[i].label} did not get seqs 1..${N}`,
    );
  }
  const h = await historyAfter(nginx.url, users[3], group.id, 0);
  assert.equal(h.length, N);
}, { closeAfter: true });

fleetTest('quckchat-polling.conf (sticky): a client starting with long-polling through nginx upgrades to WebSocket and chats across instances', () => F, async () => {
  F = null;
  F = await openFleet({ env: { TRANSPORTS: 'websocket,polling' } });
  const nginx = await nginxFor(F, 'quckchat-polling.conf');

  const [alice, bob, carol] = [await register(nginx.url, 'alice'), await register(nginx.url, 'bob'), await register(nginx.url, 'carol')];
  const group = await createConversation(nginx.url, alice, 'group', [bob.user.id, carol.user.id], 'polling');

  // Two clients through nginx, both starting with long-polling: every request of each
  // session must reach the instance that created it (both come from 127.0.0.1, so the
  // hash sends both to the same instance).
  const viaNginx = [];
  for (const u of [alice, bob]) {
    const s = await connect(nginx.url, '/chat', u.accessToken, { transports: ['polling', 'websocket'], label: `${u.name}@nginx(polling)` });
    viaNginx.push(s);
  }
  for (const s of viaNginx) {
    if (s.io.engine.transport.name !== 'websocket') await once(s.io.engine, 'upgrade', 10_000);
    assert.equal(s.io.engine.transport.name, 'websocket', `${s.label} did not upgrade`);
  }
  const counts = await spread(F, 2);
  const home = Object.entries(counts).find(([, n]) => n === 2);
  assert.ok(home, `the sticky upstream split one client address over instances: ${JSON.stringify(counts)}`);

  // carol connects straight to another instance, over WebSocket.
  const elsewhere = F.instances.find((i) => i.name !== home[0]);
  const carolS = await chat(elsewhere.url, carol, `carol@${elsewhere.name}`);

  const all = [...viaNginx, carolS];
  const recs = all.map((s) => record(s, 'message:new'));
  const m1 = await sendMessage(viaNginx[0], group.id, 'from alice via nginx');
  const m2 = await sendMessage(carolS, group.id, `from carol on ${elsewhere.name}`);
  const m3 = await sendMessage(viaNginx[1], group.id, 'from bob via nginx');
  for (const r of recs) {
    const got = await r.waitForCount(3, (m) => m.conversationId === group.id, 10_000);
    assert.deepEqual(
      got.map((m) => m.id).sort(),
      [m1.id, m2.id, m3.id].sort(),
    );
  }
}, { closeAfter: true });
