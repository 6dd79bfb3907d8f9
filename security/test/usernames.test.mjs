// Finding 6: look-alike usernames registered (`аlice` with a Cyrillic а, full-width
// `ａｌｉｃｅ`). Usernames are now what the QuckChat app accepts, `^[a-zA-Z0-9_]+$`, 3–32
// characters, unique case-insensitively; display names stay Unicode.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { PASSWORD, api, startServer, uniqueName } from './lib.mjs';

let server;
before(async () => {
  server = await startServer({});
});
after(() => server?.stop());

const registerAs = (username, displayName) =>
  api(server.url, 'POST', '/api/v1/auth/register', { body: { username, password: PASSWORD, displayName } });

test('look-alikes and punctuation are refused with 400; case variants with 409; Unicode display names are kept', async () => {
  const base = uniqueName('alice');
  const first = await registerAs(base, 'Алиса ✨');
  assert.equal(first.status, 201, JSON.stringify(first.body));
  assert.equal(first.body.user.displayName, 'Алиса ✨');

  for (const lookalike of [base.replace('a', '\u0430'), [...base].map((c) => (/[a-z]/.test(c) ? String.fromCharCode(c.charCodeAt(0) + 0xfee0) : c)).join(''), `${base}.x`, `${base}-x`, 'ab', 'x'.repeat(33), 'al ice']) {
    const res = await registerAs(lookalike);
    assert.equal(res.status, 400, `${JSON.stringify(lookalike)} answered ${res.status} ${JSON.stringify(res.body)}`);
    assert.equal(res.body.statusCode, 400);
  }
  const upper = await registerAs(base.toUpperCase());
  assert.equal(upper.status, 409, `${base.toUpperCase()} answered ${upper.status}`);

  // Nothing above created an account: searching finds the one user.
  const search = await api(server.url, 'GET', `/api/v1/users/search?q=${encodeURIComponent(base.slice(0, 8))}`, { token: first.body.accessToken });
  assert.equal(search.status, 200);
  assert.deepEqual(search.body.data.map((u) => u.username), [base]);
});
