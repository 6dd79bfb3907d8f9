// Finding 2: logins were not throttled (~48 wrong passwords a second, no lockout). Now
// register, login and refresh are throttled per client address and per username, with
// 429 and Retry-After; X-Forwarded-For counts only from TRUSTED_PROXIES.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { PASSWORD, api, metric, register, startServer, uniqueName } from './lib.mjs';

const login = (url, username, password, headers) =>
  api(url, 'POST', '/api/v1/auth/login', { body: { username, password }, headers });

describe('defaults: per address and per username', () => {
  let server;
  before(async () => {
    server = await startServer({ AUTH_USER_RATE_PER_MIN: '5', AUTH_USER_BURST: '10', AUTH_RATE_PER_MIN: '20', AUTH_BURST: '30' });
  });
  after(() => server?.stop());

  test('wrong passwords for one username: 10 are checked, then 429 with Retry-After, even with the right one', async () => {
    const alice = await register(server.url, 'alice');
    const name = alice.user.username;
    const statuses = [];
    for (let i = 0; i < 12; i++) statuses.push((await login(server.url, name, `wrong password ${i}`)).status);
    assert.deepEqual(statuses.slice(0, 10), Array(10).fill(401), JSON.stringify(statuses));
    assert.ok(statuses.slice(10).every((s) => s === 429), JSON.stringify(statuses));
    const right = await login(server.url, name, PASSWORD);
    assert.equal(right.status, 429, 'the username stays throttled, whatever the password');
    const retry = Number(right.headers.get('retry-after'));
    assert.ok(retry >= 1 && retry <= 60, `Retry-After: ${right.headers.get('retry-after')}`);
    assert.equal(right.body.statusCode, 429);
    assert.ok((await metric(server.url, 'quckchat_http_requests_total', 'status="429"')) >= 3);
  });

  test('one address is throttled across usernames (register and login), and X-Forwarded-For does not escape it', async () => {
    const statuses = [];
    for (let i = 0; i < 40; i++) {
      const res = await login(server.url, uniqueName('nobody'), 'wrong password', { 'x-forwarded-for': `198.51.100.${i}` });
      statuses.push(res.status);
    }
    const refused = statuses.filter((s) => s === 429).length;
    assert.ok(refused >= 5, `the address bucket refused ${refused} of 40: ${JSON.stringify(statuses)}`);
    const reg = await api(server.url, 'POST', '/api/v1/auth/register', { body: { username: uniqueName('late'), password: PASSWORD } });
    assert.equal(reg.status, 429, 'register shares the address bucket');
    const refresh = await api(server.url, 'POST', '/api/v1/auth/refresh', { body: { refreshToken: 'x.y' } });
    assert.equal(refresh.status, 429, 'refresh shares the address bucket');
  });
});

describe('behind a trusted proxy (TRUSTED_PROXIES=127.0.0.1, as deploy/nginx sets it)', () => {
  let server;
  before(async () => {
    server = await startServer({ TRUSTED_PROXIES: '127.0.0.1', AUTH_RATE_PER_MIN: '2', AUTH_BURST: '3', AUTH_USER_RATE_PER_MIN: '0' });
  });
  after(() => server?.stop());

  test('each forwarded client has its own bucket; the right-most untrusted hop is the client', async () => {
    // Client A spoofs a first hop; nginx appended its real address (the last entry).
    const fromA = { 'x-forwarded-for': '203.0.113.1, 192.0.2.10' };
    const fromB = { 'x-forwarded-for': '192.0.2.20' };
    const a = [];
    for (let i = 0; i < 5; i++) a.push((await login(server.url, uniqueName('n'), 'wrong password', fromA)).status);
    assert.deepEqual(a.slice(0, 3), [401, 401, 401], JSON.stringify(a));
    assert.equal(a[4], 429, JSON.stringify(a));
    // Changing the spoofed first hop does not help A…
    const spoof = await login(server.url, uniqueName('n'), 'wrong password', { 'x-forwarded-for': '203.0.113.99, 192.0.2.10' });
    assert.equal(spoof.status, 429);
    // …while B, another client behind the same proxy, is not throttled by A.
    const b = await login(server.url, uniqueName('n'), 'wrong password', fromB);
    assert.equal(b.status, 401);
  });
});
