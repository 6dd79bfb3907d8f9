// The Node baseline QuckChat is measured against (bench/run, BENCHMARKS.md).
//
// socket.io 4.8 on `ws` (with the native `bufferutil`), websocket only, no polling, no
// compression: the strongest fair setup of the Node stack available from npm here. It
// implements the subset of QuckChat's contract (shared/CONTRACT.md) that the bench
// scenarios use, with the same payload shapes:
//   - handshake: `auth.token` = "Bearer <jwt>" (HS256, `sub` = user, `sid` = session,
//     verified with node:crypto), the session must exist; refused with "unauthorized"
//   - /chat: the socket joins `user:<id>` and `conv:<id>` of each of its conversations;
//     `message:send` -> membership check -> store (next `seq`, idempotent by
//     `clientMessageId`) -> `message:new` to the room (sender included) -> ack
//     `{success, message}`; `user:typing` / `user:stop-typing` to the other members
//   - /webrtc: `call:initiate {calleeId}` -> `call:incoming` to the callee's sockets;
//     `call:answer`; `offer` / `answer` / `ice-candidate` relayed between joined devices
//     as `{callId, sdp|candidate, from}`; `call:end`
//   - REST: `GET /api/v1/messages/conversation/:id?afterSeq=N` (catch-up after a gap)
//   - `GET /gc`: runs the collector (node --expose-gc) and answers process.memoryUsage()
// Like QuckChat, a conversation's messages are stored and broadcast one at a time (a
// promise chain per conversation), so members see them in `seq` order.
//
// Store: STORE=memory (Maps; the socket-layer scenarios) or STORE=pg (PostgreSQL through
// `pg`; the persistence scenario). The users, sessions and conversations come from
// FIXTURE, the JSON file the load generator wrote when it seeded QuckChat.
'use strict';

const http = require('node:http');
const crypto = require('node:crypto');
const fs = require('node:fs');
const { Server } = require('socket.io');

const PORT = Number(process.env.PORT || 0);
const HOST = process.env.HOST || '127.0.0.1';
const SECRET = process.env.JWT_SECRET || 'bench';
const STORE = process.env.STORE || 'memory';
const fixture = JSON.parse(fs.readFileSync(process.env.FIXTURE, 'utf8'));

// ---------------------------------------------------------------------------------------
// JWT (HS256) with node:crypto
// ---------------------------------------------------------------------------------------
function verifyJwt(raw) {
  if (typeof raw !== 'string') return null;
  let token = raw.trim();
  if (token.slice(0, 7).toLowerCase() === 'bearer ') token = token.slice(7).trim();
  const parts = token.split('.');
  if (parts.length !== 3) return null;
  const expected = crypto.createHmac('sha256', SECRET).update(parts[0] + '.' + parts[1]).digest();
  const given = Buffer.from(parts[2], 'base64url');
  if (given.length !== expected.length || !crypto.timingSafeEqual(given, expected)) return null;
  try {
    const header = JSON.parse(Buffer.from(parts[0], 'base64url').toString('utf8'));
    if (header.alg !== 'HS256') return null;
    const claims = JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8'));
    if (typeof claims.exp === 'number' && claims.exp * 1000 < Date.now()) return null;
    if (typeof claims.sub !== 'string' || typeof claims.sid !== 'string') return null;
    return claims;
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------------------
// Stores
// ---------------------------------------------------------------------------------------
const usersById = new Map(fixture.users.map((u) => [u.id, u]));

function newMessage(conversationId, senderId, seq, p) {
  return {
    id: crypto.randomUUID(),
    conversationId,
    senderId,
    seq,
    type: p.type || 'text',
    content: p.content,
    attachments: [],
    replyTo: null,
    clientMessageId: p.clientMessageId || null,
    reactions: [],
    readBy: [],
    createdAt: new Date().toISOString(),
    editedAt: null,
    deletedAt: null,
  };
}

class MemoryStore {
  constructor() {
    this.sessions = new Map(fixture.users.map((u) => [u.sid, u.id]));
    this.convs = new Map();
    this.convsOfUser = new Map();
    for (const c of fixture.conversations) {
      this.convs.set(c.id, { id: c.id, members: new Set(c.members), lastSeq: 0, recent: [] });
      for (const m of c.members) {
        if (!this.convsOfUser.has(m)) this.convsOfUser.set(m, []);
        this.convsOfUser.get(m).push(c.id);
      }
    }
    this.idem = new Map(); // `${sender}|${clientMessageId}` -> message, bounded
  }
  async init() {}
  async session(sid, userId) {
    return this.sessions.get(sid) === userId;
  }
  async conversationIds(userId) {
    return this.convsOfUser.get(userId) || [];
  }
  async isMember(conversationId, userId) {
    const c = this.convs.get(conversationId);
    return !!c && c.members.has(userId);
  }
  async append(conversationId, senderId, p) {
    const c = this.convs.get(conversationId);
    if (!c || !c.members.has(senderId)) return { error: 'forbidden' };
    const key = p.clientMessageId ? senderId + '|' + p.clientMessageId : null;
    if (key && this.idem.has(key)) return { message: this.idem.get(key), duplicate: true };
    const m = newMessage(conversationId, senderId, ++c.lastSeq, p);
    // The last 10,000 messages per conversation answer `afterSeq` catch-ups.
    c.recent.push(m);
    if (c.recent.length > 10000) c.recent.splice(0, c.recent.length - 10000);
    if (key) {
      this.idem.set(key, m);
      if (this.idem.size > 200000) this.idem.delete(this.idem.keys().next().value);
    }
    return { message: m };
  }
  async after(conversationId, afterSeq, limit) {
    const c = this.convs.get(conversationId);
    if (!c) return [];
    return c.recent.filter((m) => m.seq > afterSeq).slice(0, limit);
  }
}

class PgStore {
  constructor() {
    const { Pool } = require('pg');
    this.schema = process.env.PG_SCHEMA || 'bench_node';
    this.pool = new Pool({
      connectionString: process.env.PG_URL,
      max: Number(process.env.PG_POOL || 10),
      options: `-c search_path=${this.schema}`,
    });
  }
  async init() {
    const admin = new (require('pg').Client)({ connectionString: process.env.PG_URL });
    await admin.connect();
    const s = this.schema;
    await admin.query(`DROP SCHEMA IF EXISTS ${s} CASCADE`);
    await admin.query(`CREATE SCHEMA ${s}`);
    await admin.query(`SET search_path = ${s}`);
    await admin.query(`
      CREATE TABLE users (id uuid PRIMARY KEY, username text NOT NULL);
      CREATE TABLE sessions (id uuid PRIMARY KEY, user_id uuid NOT NULL REFERENCES users(id), revoked_at timestamptz);
      CREATE TABLE conversations (id uuid PRIMARY KEY, last_seq bigint NOT NULL DEFAULT 0, last_message_at timestamptz);
      CREATE TABLE participants (conversation_id uuid NOT NULL REFERENCES conversations(id),
        user_id uuid NOT NULL REFERENCES users(id), PRIMARY KEY (conversation_id, user_id));
      CREATE INDEX participants_user ON participants (user_id);
      CREATE TABLE messages (id uuid PRIMARY KEY, conversation_id uuid NOT NULL REFERENCES conversations(id),
        sender_id uuid NOT NULL REFERENCES users(id), seq bigint NOT NULL, type text NOT NULL, content text NOT NULL,
        client_message_id text, created_at timestamptz NOT NULL,
        UNIQUE (conversation_id, seq), UNIQUE (sender_id, client_message_id));`);
    const u = fixture.users;
    await admin.query('INSERT INTO users SELECT * FROM unnest($1::uuid[], $2::text[])', [u.map((x) => x.id), u.map((x) => x.username || x.id)]);
    await admin.query('INSERT INTO sessions (id, user_id) SELECT * FROM unnest($1::uuid[], $2::uuid[])', [u.map((x) => x.sid), u.map((x) => x.id)]);
    const cs = fixture.conversations;
    await admin.query('INSERT INTO conversations (id) SELECT * FROM unnest($1::uuid[])', [cs.map((c) => c.id)]);
    const pc = [], pu = [];
    for (const c of cs) for (const m of c.members) { pc.push(c.id); pu.push(m); }
    await admin.query('INSERT INTO participants SELECT * FROM unnest($1::uuid[], $2::uuid[])', [pc, pu]);
    await admin.end();
  }
  async session(sid, userId) {
    const r = await this.pool.query('SELECT user_id, revoked_at FROM sessions WHERE id = $1', [sid]);
    return r.rows.length === 1 && r.rows[0].user_id === userId && r.rows[0].revoked_at === null;
  }
  async conversationIds(userId) {
    const r = await this.pool.query('SELECT conversation_id FROM participants WHERE user_id = $1', [userId]);
    return r.rows.map((x) => x.conversation_id);
  }
  async isMember(conversationId, userId) {
    const r = await this.pool.query('SELECT 1 FROM participants WHERE conversation_id = $1 AND user_id = $2', [conversationId, userId]);
    return r.rows.length === 1;
  }
  async append(conversationId, senderId, p) {
    const client = await this.pool.connect();
    try {
      await client.query('BEGIN');
      const member = await client.query('SELECT 1 FROM participants WHERE conversation_id = $1 AND user_id = $2', [conversationId, senderId]);
      if (member.rows.length !== 1) {
        await client.query('ROLLBACK');
        return { error: 'forbidden' };
      }
      if (p.clientMessageId) {
        const old = await client.query('SELECT id, seq, created_at FROM messages WHERE sender_id = $1 AND client_message_id = $2', [senderId, p.clientMessageId]);
        if (old.rows.length === 1) {
          await client.query('ROLLBACK');
          const m = newMessage(conversationId, senderId, Number(old.rows[0].seq), p);
          m.id = old.rows[0].id;
          return { message: m, duplicate: true };
        }
      }
      const seq = await client.query('UPDATE conversations SET last_seq = last_seq + 1, last_message_at = now() WHERE id = $1 RETURNING last_seq', [conversationId]);
      const m = newMessage(conversationId, senderId, Number(seq.rows[0].last_seq), p);
      await client.query(
        'INSERT INTO messages (id, conversation_id, sender_id, seq, type, content, client_message_id, created_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)',
        [m.id, conversationId, senderId, m.seq, m.type, m.content, m.clientMessageId, m.createdAt],
      );
      await client.query('COMMIT');
      return { message: m };
    } catch (e) {
      await client.query('ROLLBACK').catch(() => {});
      throw e;
    } finally {
      client.release();
    }
  }
  async after(conversationId, afterSeq, limit) {
    const r = await this.pool.query(
      'SELECT id, sender_id, seq, type, content, client_message_id, created_at FROM messages WHERE conversation_id = $1 AND seq > $2 ORDER BY seq LIMIT $3',
      [conversationId, afterSeq, limit],
    );
    return r.rows.map((x) => {
      const m = newMessage(conversationId, x.sender_id, Number(x.seq), { type: x.type, content: x.content, clientMessageId: x.client_message_id });
      m.id = x.id;
      m.createdAt = x.created_at.toISOString();
      return m;
    });
  }
}

const store = STORE === 'pg' ? new PgStore() : new MemoryStore();

// One promise chain per conversation: stored and broadcast one at a time, in seq order.
const lanes = new Map();
function inLane(key, fn) {
  const prev = lanes.get(key) || Promise.resolve();
  const next = prev.then(fn, fn);
  const tail = next.catch(() => {});
  lanes.set(key, tail);
  tail.then(() => {
    if (lanes.get(key) === tail) lanes.delete(key);
  });
  return next;
}

// ---------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------
function json(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

const httpServer = http.createServer(async (req, res) => {
  try {
    const url = new URL(req.url, 'http://x');
    if (url.pathname === '/gc') {
      if (global.gc) { global.gc(); global.gc(); }
      return json(res, 200, process.memoryUsage());
    }
    const m = url.pathname.match(/^\/api\/v1\/messages\/conversation\/([0-9a-f-]{36})$/);
    if (m && req.method === 'GET') {
      const claims = verifyJwt(req.headers.authorization || '');
      if (!claims) return json(res, 401, { statusCode: 401, message: 'unauthorized' });
      if (!(await store.isMember(m[1], claims.sub))) return json(res, 404, { statusCode: 404, message: 'not found' });
      const afterSeq = Number(url.searchParams.get('afterSeq') || 0);
      const limit = Math.min(Number(url.searchParams.get('limit') || 50), 100);
      return json(res, 200, { data: await store.after(m[1], afterSeq, limit) });
    }
    if (url.pathname === '/api/v1/health') return json(res, 200, { status: 'ok' });
    json(res, 404, { statusCode: 404, message: 'not found' });
  } catch (e) {
    json(res, 500, { statusCode: 500, message: String(e) });
  }
});

const io = new Server(httpServer, {
  transports: ['websocket'],
  allowUpgrades: false,
  perMessageDeflate: false,
  httpCompression: false,
  serveClient: false,
  pingInterval: Number(process.env.PING_INTERVAL_MS || 10000),
  pingTimeout: Number(process.env.PING_TIMEOUT_MS || 30000),
  maxHttpBufferSize: 1e6,
});

function authMiddleware(socket, next) {
  const claims = verifyJwt(socket.handshake.auth && socket.handshake.auth.token);
  if (!claims) return next(new Error('unauthorized'));
  store.session(claims.sid, claims.sub).then(
    (ok) => {
      if (!ok) return next(new Error('unauthorized'));
      socket.data.userId = claims.sub;
      socket.data.sessionId = claims.sid;
      next();
    },
    () => next(new Error('internal error')),
  );
}

const fail = (code, message) => ({ success: false, error: { code, message } });
const reply = (ack, body) => { if (typeof ack === 'function') ack(body); };

// ---------------------------------------------------------------------------------------
// /chat
// ---------------------------------------------------------------------------------------
const chat = io.of('/chat');
chat.use(authMiddleware);
chat.use((socket, next) => {
  // Join before the CONNECT reply, like QuckChat: a connected socket already gets events.
  store.conversationIds(socket.data.userId).then(
    (ids) => {
      socket.join(['user:' + socket.data.userId, 'session:' + socket.data.sessionId, ...ids.map((id) => 'conv:' + id)]);
      next();
    },
    () => next(new Error('internal error')),
  );
});
chat.on('connection', (socket) => {
  const userId = socket.data.userId;
  socket.on('message:send', (p, ack) => {
    if (!p || typeof p.conversationId !== 'string' || typeof p.content !== 'string' || p.content.length > 10000) {
      return reply(ack, fail('invalid_payload', 'conversationId and content are required'));
    }
    inLane(p.conversationId, async () => {
      const r = await store.append(p.conversationId, userId, p);
      if (r.error) return reply(ack, fail(r.error, 'not a member of this conversation'));
      if (!r.duplicate) chat.to('conv:' + p.conversationId).emit('message:new', r.message);
      reply(ack, { success: true, message: r.message });
    }).catch((e) => reply(ack, fail('internal', String(e))));
  });
  const typing = (event) => (p, ack) => {
    if (!p || typeof p.conversationId !== 'string') return reply(ack, fail('invalid_payload', 'conversationId is required'));
    store.isMember(p.conversationId, userId).then((ok) => {
      if (!ok) return reply(ack, fail('forbidden', 'not a member of this conversation'));
      chat.to('conv:' + p.conversationId).except('user:' + userId).emit(event, { userId, conversationId: p.conversationId });
      reply(ack, { success: true, conversationId: p.conversationId });
    });
  };
  socket.on('user:typing', typing('user:typing'));
  socket.on('user:stop-typing', typing('user:stop-typing'));
});

// ---------------------------------------------------------------------------------------
// /webrtc
// ---------------------------------------------------------------------------------------
const calls = new Map(); // callId -> {id, type, conversationId, participants: Map(userId -> {status, device})}
const webrtc = io.of('/webrtc');
webrtc.use(authMiddleware);
webrtc.on('connection', (socket) => {
  const userId = socket.data.userId;
  socket.join('user:' + userId);
  socket.on('call:initiate', (p, ack) => {
    if (!p || typeof p.calleeId !== 'string' || !usersById.has(p.calleeId)) return reply(ack, fail('invalid_payload', 'calleeId is required'));
    const call = {
      id: crypto.randomUUID(),
      type: p.type === 'video' ? 'video' : 'audio',
      status: 'ringing',
      participants: new Map([
        [userId, { status: 'joined', device: socket.id }],
        [p.calleeId, { status: 'ringing', device: null }],
      ]),
    };
    calls.set(call.id, call);
    const caller = usersById.get(userId);
    webrtc.to('user:' + p.calleeId).emit('call:incoming', { callId: call.id, callerId: userId, callerName: caller ? caller.username : userId, type: call.type, conversationId: null });
    reply(ack, { success: true, callId: call.id, status: call.status, iceServers: [] });
  });
  socket.on('call:answer', (p, ack) => {
    const call = p && calls.get(p.callId);
    const me = call && call.participants.get(userId);
    if (!me) return reply(ack, fail('not_found', 'no such call'));
    me.status = 'joined';
    me.device = socket.id;
    call.status = 'active';
    for (const [uid, part] of call.participants) {
      if (part.status === 'joined' && part.device) webrtc.to(part.device).emit('call:answered', { callId: call.id, userId });
      if (uid === userId) webrtc.to('user:' + userId).except(socket.id).emit('call:ended', { callId: call.id, reason: 'answered_elsewhere' });
    }
    reply(ack, { success: true, callId: call.id, status: call.status, iceServers: [] });
  });
  const relay = (event, field) => (p, ack) => {
    const call = p && calls.get(p.callId);
    const me = call && call.participants.get(userId);
    if (!me) return reply(ack, fail('not_found', 'no such call'));
    if (me.status !== 'joined' || me.device !== socket.id) return reply(ack, fail('forbidden', 'only a joined device may signal'));
    const body = p[field];
    if (body === undefined || (typeof body !== 'string' && typeof body !== 'object')) return reply(ack, fail('invalid_payload', field + ' is required'));
    for (const [uid, part] of call.participants) {
      if (uid === userId || (p.to && p.to !== uid)) continue;
      if (part.status === 'joined' && part.device) webrtc.to(part.device).emit(event, { callId: call.id, from: userId, [field]: body });
    }
    reply(ack, { success: true, callId: call.id });
  };
  socket.on('offer', relay('offer', 'sdp'));
  socket.on('answer', relay('answer', 'sdp'));
  socket.on('ice-candidate', relay('ice-candidate', 'candidate'));
  socket.on('call:end', (p, ack) => {
    const call = p && calls.get(p.callId);
    if (!call || !call.participants.has(userId)) return reply(ack, fail('not_found', 'no such call'));
    call.status = 'ended';
    calls.delete(call.id);
    for (const [uid, part] of call.participants) {
      if (uid !== userId && part.device) webrtc.to(part.device).emit('call:ended', { callId: call.id, endedBy: userId, reason: 'ended' });
    }
    reply(ack, { success: true, callId: call.id, status: 'ended' });
  });
});

store.init().then(() => {
  httpServer.listen(PORT, HOST, () => {
    const { port } = httpServer.address();
    process.stdout.write(`baseline listening on http://${HOST}:${port}\n`);
  });
}, (e) => {
  console.error('store init failed', e);
  process.exit(1);
});

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    io.close();
    process.exit(0);
  });
}
