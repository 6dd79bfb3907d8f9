// End to end in a real browser: two users of the web client at /app, each in a browser
// context of its own, register, chat, and hold a WebRTC video call whose signaling goes
// through the server's /webrtc namespace. Media flows browser to browser over loopback.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { after, before, test } from 'node:test';

import { ensureArtifactsDir, launchChromium, newUserPage, pollUntil, startServer } from './lib.mjs';

const PASSWORD = 'correct horse battery';
const T = 15_000; // default wait for a UI change
const MEDIA_T = 30_000; // ICE + DTLS + first RTP

let server;
let browser;
const pages = [];

before(async () => {
  server = await startServer();
  browser = await launchChromium();
});

after(async () => {
  const errors = [];
  await browser?.close().catch((err) => errors.push(err));
  await server?.stop().catch((err) => errors.push(err));
  if (errors.length) throw errors[0];
});

const uniqueName = (prefix) => `${prefix}_${randomBytes(3).toString('hex')}`;

/** Opens /app and registers `username` through the form. */
async function register(page, username, displayName) {
  await page.goto(`${server.url}/app`);
  assert.match(page.url(), /\/app\/$/, '/app redirects to /app/ so that ./app.js resolves');
  await page.getByTestId('login-username').fill(username);
  await page.getByTestId('login-password').fill(PASSWORD);
  await page.getByTestId('login-displayname').fill(displayName);
  await page.getByTestId('register-button').click();
  await page.getByTestId('me-name').filter({ hasText: `@${username}` }).waitFor({ timeout: T });
  // Both namespaces up before anyone calls us.
  await page.getByTestId('connection-status').filter({ hasText: 'online' }).waitFor({ timeout: T });
}

/** Sum of `bytesReceived` over the inbound RTP streams of the page's RTCPeerConnection, by kind. */
function inboundBytes(page) {
  return page.evaluate(async () => {
    const pc = window.quckchat.pc();
    if (!pc) return null;
    const bytes = { audio: 0, video: 0 };
    (await pc.getStats()).forEach((r) => {
      if (r.type === 'inbound-rtp') bytes[r.kind] = (bytes[r.kind] ?? 0) + (r.bytesReceived ?? 0);
    });
    return bytes;
  });
}

/**
 * Samples inbound bytes until a sample is larger than the previous sample, for audio and
 * video both; returns the last sample.
 */
async function assertInboundGrows(page, who) {
  let previous = await pollUntil(`${who}: inbound RTP stats`, () => inboundBytes(page), (b) => b !== null, { timeoutMs: T });
  const { now } = await pollUntil(
    `${who}: inbound audio and video bytes grow`,
    async () => {
      const sample = { previous, now: await inboundBytes(page) };
      previous = sample.now;
      return sample;
    },
    ({ previous: p, now }) => now.video > p.video && now.audio > p.audio,
    { timeoutMs: MEDIA_T, intervalMs: 200 },
  );
  return now;
}

test('two users chat, then hold a WebRTC video call through /webrtc', { timeout: 180_000 }, async (t) => {
  const started = Date.now();
  const alice = await newUserPage(browser, 'alice');
  const bob = await newUserPage(browser, 'bob');
  pages.push(alice, bob);
  const aliceName = uniqueName('alice');
  const bobName = uniqueName('bob');

  try {
    // --- register both through the UI --------------------------------------------------
    await register(alice, aliceName, 'Alice');
    await register(bob, bobName, 'Bob');

    // --- alice starts a single conversation by searching bob --------------------------
    await alice.getByTestId('user-search-input').fill(bobName);
    await alice.locator(`[data-testid="user-search-result"][data-username="${bobName}"]`).click({ timeout: T });
    await alice.getByTestId('chat-title').filter({ hasText: 'Bob' }).waitFor({ timeout: T });
    await alice.locator('[data-testid="presence-dot"].on').waitFor({ timeout: T }); // bob is online

    // bob's list learns about it live (conversation:new) and he opens it.
    const bobItem = bob.getByTestId('conversation-item').filter({ hasText: 'Alice' });
    await bobItem.click({ timeout: T });
    await bob.getByTestId('chat-title').filter({ hasText: 'Alice' }).waitFor({ timeout: T });

    // --- a chat message each way, live --------------------------------------------------
    const hello = `hello bob ${randomBytes(2).toString('hex')}`;
    await alice.getByTestId('message-input').fill(hello);
    await alice.getByTestId('send-button').click();
    await bob.getByTestId('message-content').filter({ hasText: hello }).waitFor({ timeout: T });
    // bob is looking at it: his read receipt reaches alice's own message.
    await alice
      .locator('[data-testid="message"][data-mine="true"]', { hasText: hello })
      .getByTestId('message-read')
      .waitFor({ timeout: T });

    const reply = `hi alice ${randomBytes(2).toString('hex')}`;
    await bob.getByTestId('message-input').fill(reply);
    await bob.getByTestId('message-input').press('Enter');
    await alice.getByTestId('message-content').filter({ hasText: reply }).waitFor({ timeout: T });

    // --- alice starts a video call, bob answers ----------------------------------------
    await alice.getByTestId('call-video-button').click();
    await bob.getByTestId('incoming-call').filter({ hasText: 'Alice' }).waitFor({ timeout: T });
    assert.match(await bob.getByTestId('incoming-text').textContent(), /video/);
    await bob.getByTestId('answer-button').click();

    for (const [who, page] of [['alice', alice], ['bob', bob]]) {
      await page.waitForFunction(() => window.quckchat.pc()?.connectionState === 'connected', null, { timeout: MEDIA_T })
        .catch((err) => {
          throw new Error(`${who}'s RTCPeerConnection did not reach "connected": ${err.message}`);
        });
    }
    const [aliceBytes, bobBytes] = [await assertInboundGrows(alice, 'alice'), await assertInboundGrows(bob, 'bob')];
    t.diagnostic(`inbound bytes: alice ${JSON.stringify(aliceBytes)}, bob ${JSON.stringify(bobBytes)}`);

    const aliceState = await alice.evaluate(() => window.quckchat.state());
    const bobState = await bob.evaluate(() => window.quckchat.state());
    assert.equal(aliceState.callStatus, 'active');
    assert.equal(bobState.callStatus, 'active');
    assert.ok(aliceState.callId);
    assert.equal(aliceState.callId, bobState.callId, 'both pages are in the same call');
    assert.equal(aliceState.user.username, aliceName);

    // --- screenshots mid-call: wait until both videos render frames ----------------------
    for (const page of [alice, bob]) {
      await page.waitForFunction(
        () => ['remote-video', 'local-video'].every((id) => {
          const v = document.getElementById(id);
          return v.videoWidth > 0 && v.readyState >= 2 && v.currentTime > 0;
        }),
        null,
        { timeout: T },
      );
    }
    const dir = await ensureArtifactsDir();
    await alice.screenshot({ path: path.join(dir, 'call-alice.png') });
    await bob.screenshot({ path: path.join(dir, 'call-bob.png') });

    // --- mute: bob sees alice's microphone muted, then back on ------------------------------
    await alice.getByTestId('mute-audio-button').click();
    await bob.getByTestId('peer-muted').filter({ hasText: 'audio muted' }).waitFor({ timeout: T });
    assert.equal(await alice.evaluate(() => window.quckchat.pc().getSenders().find((s) => s.track?.kind === 'audio').track.enabled), false);
    await alice.getByTestId('mute-audio-button').click();
    await bob.waitForFunction(() => !document.getElementById('peer-muted').textContent.includes('audio muted'), null, { timeout: T });

    // --- alice hangs up ----------------------------------------------------------------
    await alice.getByTestId('hangup-button').click();
    await alice.getByTestId('call-status').filter({ hasText: /call ended/i }).waitFor({ timeout: T });
    await bob.getByTestId('call-status').filter({ hasText: /call ended \(ended/i }).waitFor({ timeout: T });
    assert.equal((await bob.evaluate(() => window.quckchat.state())).callStatus, 'ended');
    assert.equal(await bob.evaluate(() => window.quckchat.pc()), null);

    // bob's call history shows it, ended, with a duration.
    const entry = bob.locator(`[data-testid="call-history-item"][data-call-id="${bobState.callId}"][data-status="ended"]`);
    await entry.waitFor({ timeout: T });
    const duration = await entry.getAttribute('data-duration-sec');
    assert.match(duration ?? '', /^\d+$/, `durationSec of the ended call (got ${JSON.stringify(duration)})`);
    assert.match(await entry.textContent(), new RegExp(`ended · ${duration}s`));
    await bob.screenshot({ path: path.join(dir, 'after-call-bob.png') });

    for (const [who, page] of [['alice', alice], ['bob', bob]]) {
      assert.deepEqual(page.problems, [], `${who}'s page logged no errors`);
    }
    t.diagnostic(`scenario took ${((Date.now() - started) / 1000).toFixed(1)} s`);
  } catch (err) {
    // Leave evidence of what the pages looked like.
    const dir = await ensureArtifactsDir();
    for (const [who, page] of [['alice', alice], ['bob', bob]]) {
      await page.screenshot({ path: path.join(dir, `failure-${who}.png`) }).catch(() => {});
      if (page.problems.length) t.diagnostic(`${who}'s page: ${page.problems.join(' | ')}`);
    }
    throw err;
  }
});
