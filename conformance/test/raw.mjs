// Raw Engine.IO / Socket.IO on the wire: HTTP long-polling with `fetch` (and `node:http`
// where a request must be known to be sent), WebSocket with the `ws` package, and the
// payload encodings of Engine.IO v4 (`\x1e` separator) and v3 (`len:packet`, `b4` base64,
// and the XHR2 binary payload).
//
// Every wait is an awaited event (a frame, a close, a response) under a timeout.

import http from 'node:http';
import WebSocket from 'ws';

/** What the protocol test suites expect of the reference server. */
export const PING_INTERVAL = 300;
export const PING_TIMEOUT = 200;
export const MAX_PAYLOAD = 1_000_000;
export const CONNECT_TIMEOUT = 1000;

/** The Engine.IO v4 record separator between packets of a polling payload. */
export const SEPARATOR = '\x1e';

// ---------------------------------------------------------------------------
// Payload encodings
// ---------------------------------------------------------------------------

/** Engine.IO v4 payload: text packets as they are, binary ones as `b<base64>`, joined by \x1e. */
export function encodeV4(packets) {
  return packets.map((p) => (Buffer.isBuffer(p) ? `b${p.toString('base64')}` : p)).join(SEPARATOR);
}

/** Splits an Engine.IO v4 payload; `b<base64>` packets become Buffers (the message payload). */
export function decodeV4(text) {
  if (text === '') return [];
  return text.split(SEPARATOR).map((p) => (p.startsWith('b') ? Buffer.from(p.slice(1), 'base64') : p));
}

/**
 * Engine.IO v3 string payload: `<length>:<packet>` per packet, the length counted in
 * characters; binary messages as `b4<base64>` (a base64 message packet).
 */
export function encodeV3(packets) {
  return packets
    .map((p) => {
      const packet = Buffer.isBuffer(p) ? `b4${p.toString('base64')}` : p;
      return `${packet.length}:${packet}`;
    })
    .join('');
}

/** Splits an Engine.IO v3 string payload; `b4<base64>` packets become Buffers. */
export function decodeV3(text) {
  const packets = [];
  let i = 0;
  while (i < text.length) {
    const colon = text.indexOf(':', i);
    if (colon < 0) throw new Error(`not a v3 payload (no length at ${i}): ${JSON.stringify(text)}`);
    const length = Number(text.slice(i, colon));
    if (!Number.isInteger(length) || length < 1) {
      throw new Error(`not a v3 payload (bad length ${JSON.stringify(text.slice(i, colon))}): ${JSON.stringify(text)}`);
    }
    const packet = text.slice(colon + 1, colon + 1 + length);
    if (packet.length !== length) throw new Error(`v3 payload shorter than announced: ${JSON.stringify(text)}`);
    packets.push(packet.startsWith('b4') ? Buffer.from(packet.slice(2), 'base64') : packet);
    i = colon + 1 + length;
  }
  return packets;
}

/**
 * Decodes an Engine.IO v3 binary (XHR2) payload: per packet, a 0 (text) or 1 (binary)
 * byte, the length as one byte per decimal digit, 255, then the packet (a binary packet's
 * first byte is its type). Binary message packets become Buffers (without the type byte).
 */
export function decodeV3Binary(buf) {
  const packets = [];
  let i = 0;
  while (i < buf.length) {
    const kind = buf[i++];
    let digits = '';
    while (buf[i] !== 255) {
      if (i >= buf.length) throw new Error('v3 binary payload: no 255 after a length');
      digits += String(buf[i++]);
    }
    i++;
    const length = Number(digits);
    const body = buf.subarray(i, i + length);
    i += length;
    if (kind === 1) {
      if (body[0] !== 4) throw new Error(`v3 binary payload: binary packet of type ${body[0]}`);
      packets.push(Buffer.from(body.subarray(1)));
    } else {
      packets.push(body.toString('utf8'));
    }
  }
  return packets;
}

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

/**
 * One HTTP request with `fetch`. Resolves to `{status, headers, contentType, bytes, text}`;
 * a connection the server cut without an answer resolves to `{status: 0, error}`.
 */
export async function request(method, url, { body, headers = {}, timeout = 10_000 } = {}) {
  let res;
  try {
    res = await fetch(url, { method, body, headers, signal: AbortSignal.timeout(timeout) });
  } catch (err) {
    if (err.name === 'TimeoutError') throw new Error(`${method} ${url}: no answer within ${timeout} ms`);
    return { status: 0, error: err, headers: new Headers(), contentType: null, bytes: Buffer.alloc(0), text: '' };
  }
  const bytes = Buffer.from(await res.arrayBuffer());
  return {
    status: res.status,
    headers: res.headers,
    contentType: res.headers.get('content-type'),
    bytes,
    text: bytes.toString('utf8'),
  };
}

/**
 * A request over its own connection whose sending can be awaited: `sent` resolves once
 * the whole request was handed to the kernel, `response` with `{status, text}`.
 */
export function sendRequest(method, url, body) {
  let onSent;
  const sent = new Promise((resolve) => {
    onSent = resolve;
  });
  const response = new Promise((resolve, reject) => {
    const req = http.request(url, { method, agent: false }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, text: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.on('finish', onSent);
    req.setTimeout(10_000, () => req.destroy(new Error(`${method} ${url}: no answer within 10000 ms`)));
    req.end(body);
  });
  return { sent, response };
}

/**
 * Starts a GET on a polling session that the server will hold (it has nothing to send),
 * and resolves once the request was sent and a round trip on another new connection (a
 * throwaway handshake, accepted after this one) has completed: by then the server has
 * almost always registered the poll. Tests whose case needs it registered check for the
 * other order (the GET then comes back 400) and retry with a new session.
 */
export async function pendingPoll(session) {
  const poll = sendRequest('GET', session.url);
  await poll.sent;
  const handshake = `${session.base}/${session.path}/?EIO=${session.eio}&transport=polling`;
  const barrier = await sendRequest('GET', handshake).response;
  if (barrier.status !== 200) throw new Error(`barrier handshake: HTTP ${barrier.status}`);
  return poll;
}

/** The JSON of an Engine.IO OPEN packet (`0{...}`); throws with the text when it is not one. */
export function parseOpen(packet) {
  if (typeof packet !== 'string' || !packet.startsWith('0')) {
    throw new Error(`expected an OPEN packet, got ${JSON.stringify(packet)}`);
  }
  return JSON.parse(packet.slice(1));
}

/**
 * An Engine.IO session over HTTP long-polling at `base/path/` (`path`: `engine.io` or
 * `socket.io`), protocol `eio` (4 or 3). `query` is appended to every request (`&b64=1`).
 */
export class Polling {
  static async open(base, { path = 'engine.io', eio = 4, query = '' } = {}) {
    const res = await request('GET', `${base}/${path}/?EIO=${eio}&transport=polling${query}`);
    if (res.status !== 200) throw new Error(`polling handshake: HTTP ${res.status} ${res.text}`);
    const packets = eio === 4 ? decodeV4(res.text) : decodeV3(res.text);
    const handshake = parseOpen(packets[0]);
    const session = new Polling(base, path, eio, handshake.sid, query);
    session.handshake = handshake;
    session.handshakeResponse = res;
    return session;
  }

  constructor(base, path, eio, sid, query) {
    Object.assign(this, { base, path, eio, sid, query });
  }

  get url() {
    return `${this.base}/${this.path}/?EIO=${this.eio}&transport=polling&sid=${this.sid}${this.query}`;
  }

  get wsUrl() {
    return `${this.base.replace(/^http/, 'ws')}/${this.path}/?EIO=${this.eio}&transport=websocket&sid=${this.sid}`;
  }

  decode(text) {
    return this.eio === 4 ? decodeV4(text) : decodeV3(text);
  }

  encode(packets) {
    return this.eio === 4 ? encodeV4(packets) : encodeV3(packets);
  }

  /** One GET; `packets` is the decoded payload when the answer is 200. */
  async get(extraQuery = '') {
    const res = await request('GET', this.url + extraQuery);
    if (res.status === 200) {
      res.packets =
        res.contentType === 'application/octet-stream' ? decodeV3Binary(res.bytes) : this.decode(res.text);
    }
    return res;
  }

  /** One POST of `packets` (encoded for the session's protocol) or of a raw string body. */
  post(packetsOrBody, headers) {
    const body = Array.isArray(packetsOrBody) ? this.encode(packetsOrBody) : packetsOrBody;
    return request('POST', this.url, { body, headers });
  }

  /**
   * GETs until `count` packets other than heartbeats arrived and resolves with them.
   * A v4 PING is answered with a PONG; a v3 session is sent a PING first so that it stays
   * alive and its PONG ends the first poll (a v3 server never pings).
   */
  async receive(count, ms = 5000) {
    const deadline = Date.now() + ms;
    const got = [];
    while (got.length < count) {
      if (Date.now() > deadline) throw new Error(`polling: ${got.length} of ${count} packets within ${ms} ms: ${JSON.stringify(got)}`);
      if (this.eio === 3) {
        const ping = await this.post(['2']);
        if (ping.status !== 200) throw new Error(`polling PING: HTTP ${ping.status}`);
      }
      const res = await this.get();
      if (res.status !== 200) throw new Error(`polling GET: HTTP ${res.status} ${res.text} (got so far ${JSON.stringify(got)})`);
      for (const p of res.packets) {
        if (p === '2' && this.eio === 4) {
          const pong = await this.post(['3']);
          if (pong.status !== 200) throw new Error(`polling PONG: HTTP ${pong.status}`);
        } else if (p === '6' || (p === '3' && this.eio === 3)) {
          // noop / pong
        } else {
          got.push(p);
        }
      }
    }
    return got;
  }

  /** GETs until the server answers 400 (the session is gone); returns the bodies seen before. */
  async untilGone(ms = 5000) {
    const deadline = Date.now() + ms;
    const seen = [];
    for (;;) {
      if (Date.now() > deadline) throw new Error(`polling session still alive after ${ms} ms: ${JSON.stringify(seen)}`);
      const res = await this.get();
      if (res.status === 400) return seen;
      if (res.status !== 200) throw new Error(`polling GET: HTTP ${res.status} ${res.text}`);
      seen.push(res.text);
    }
  }
}

// ---------------------------------------------------------------------------
// WebSocket
// ---------------------------------------------------------------------------

/**
 * A raw WebSocket: frames queue up until a test takes them with `next()`. Text frames are
 * strings, binary ones Buffers. With `autoPong`, a v4 PING (`2`) is answered with `3` and
 * kept out of the queue (its arrival time is in `pings`). With `clientPings` (ms), the
 * socket pings like a v3 client and keeps the PONGs (`3`) out of the queue.
 */
export class RawWs {
  constructor(url, { autoPong = false, clientPings = 0 } = {}) {
    this.url = url;
    this.autoPong = autoPong;
    this.clientPings = clientPings;
    this.frames = [];
    this.pings = [];
    this.pongs = [];
    this.waiters = new Set();
    this.closeInfo = null;
    this.startedAt = Date.now();
    this.ws = new WebSocket(url);
    this.ws.binaryType = 'nodebuffer';
    this.opened = new Promise((resolve, reject) => {
      this.ws.once('open', resolve);
      this.ws.once('unexpected-response', (_req, res) => {
        reject(new Error(`WebSocket ${url}: HTTP ${res.statusCode}`));
        res.resume();
      });
      this.ws.once('close', () => reject(new Error(`WebSocket ${url} closed before opening`)));
    });
    this.opened.catch(() => {});
    if (clientPings) {
      this.pinger = setInterval(() => this.send('2'), clientPings);
      this.ws.once('open', () => this.send('2'));
    }
    this.closed = new Promise((resolve) => {
      this.ws.once('close', (code, reason) => {
        clearInterval(this.pinger);
        this.closeInfo = { code, reason: reason.toString(), at: Date.now() };
        this.wake();
        resolve(this.closeInfo);
      });
    });
    this.ws.on('error', () => {});
    this.ws.on('message', (data, isBinary) => {
      const frame = isBinary ? Buffer.from(data) : data.toString('utf8');
      if (this.autoPong && frame === '2') {
        this.pings.push(Date.now());
        this.send('3');
        return;
      }
      if (this.clientPings && frame === '3') {
        this.pongs.push(Date.now());
        return;
      }
      this.frames.push(frame);
      this.wake();
    });
  }

  wake() {
    for (const w of [...this.waiters]) w();
  }

  /** Resolves with the next frame; rejects when none comes within `ms` or the socket closed. */
  next(ms = 3000) {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (this.frames.length) {
          done();
          resolve(this.frames.shift());
        } else if (this.closeInfo) {
          done();
          reject(new Error(`WebSocket closed (code ${this.closeInfo.code}) while waiting for a frame`));
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`no WebSocket frame within ${ms} ms`));
      }, ms);
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      this.waiters.add(check);
      check();
    });
  }

  /** The next `count` frames. */
  async take(count, ms = 3000) {
    const out = [];
    for (let i = 0; i < count; i++) out.push(await this.next(ms));
    return out;
  }

  /** Resolves with the close info once the server closed the socket; rejects after `ms`. */
  expectClose(ms = 3000) {
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`WebSocket still open after ${ms} ms (frames: ${brief(this.frames)})`)),
        ms,
      );
    });
    return Promise.race([this.closed, timeout]).finally(() => clearTimeout(timer));
  }

  send(data) {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(data);
  }

  close() {
    clearInterval(this.pinger);
    if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING) this.ws.terminate();
  }
}

/** A short rendering of frames for error messages (a 1 MB frame must not flood the log). */
export function brief(value) {
  const text = JSON.stringify(value, (_k, v) => (v && v.type === 'Buffer' ? `<binary ${v.data.length} bytes>` : v));
  return text.length > 300 ? `${text.slice(0, 300)}… (${text.length} chars)` : text;
}

/**
 * Opens a WebSocket that the server must turn away: refused at the HTTP level, or closed
 * before it sent a single frame. Resolves with `"HTTP <status>"` or `"closed <code>"`.
 */
export function expectWsTurnedAway(url, ms = 3000) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    const timer = setTimeout(() => {
      ws.terminate();
      reject(new Error(`WebSocket ${url}: still open after ${ms} ms`));
    }, ms);
    ws.on('error', () => {});
    ws.once('unexpected-response', (_req, res) => {
      clearTimeout(timer);
      res.resume();
      ws.terminate();
      resolve(`HTTP ${res.statusCode}`);
    });
    ws.on('message', (data) => {
      clearTimeout(timer);
      ws.terminate();
      reject(new Error(`WebSocket ${url} was served: ${brief(data.toString())}`));
    });
    ws.once('close', (code) => {
      clearTimeout(timer);
      resolve(`closed ${code}`);
    });
  });
}

/**
 * Opens a WebSocket that the server must refuse at the HTTP level; resolves with the
 * refusal's HTTP status.
 */
export function expectWsRefused(url, ms = 3000) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    const timer = setTimeout(() => {
      ws.terminate();
      reject(new Error(`WebSocket ${url}: neither refused nor opened within ${ms} ms`));
    }, ms);
    ws.on('error', () => {});
    ws.once('unexpected-response', (_req, res) => {
      clearTimeout(timer);
      res.resume();
      ws.terminate();
      resolve(res.statusCode);
    });
    ws.once('open', () => {
      clearTimeout(timer);
      ws.terminate();
      reject(new Error(`WebSocket ${url} was accepted`));
    });
  });
}

/** Opens a WebSocket Engine.IO session and resolves with `{ws, handshake}` after the OPEN packet. */
export async function openWs(base, { path = 'engine.io', eio = 4, autoPong = false, clientPings = 0, sid } = {}) {
  const wsBase = base.replace(/^http/, 'ws');
  const url = `${wsBase}/${path}/?EIO=${eio}&transport=websocket${sid ? `&sid=${sid}` : ''}`;
  const ws = new RawWs(url, { autoPong, clientPings });
  const handshake = parseOpen(await ws.next());
  return { ws, handshake };
}

/** Tracks raw sockets so that `afterEach` can close whatever a test left open. */
export function socketTracker() {
  const open = new Set();
  return {
    add(ws) {
      open.add(ws);
      return ws;
    },
    closeAll() {
      for (const ws of open) ws.close();
      open.clear();
    },
  };
}
