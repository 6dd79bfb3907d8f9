// A chat client that behaves like a real one under faults: it keeps what it saw by seq,
// sends every message with a clientMessageId and keeps it until it is acked, and when
// its socket drops it reconnects to another instance, catches up with
// `GET /messages/conversation/{id}?afterSeq=<last seq seen>` and sends the un-acked
// messages again with the same clientMessageId.

import { randomUUID } from 'node:crypto';

import { chat, closeSocket, historyAfter } from './client.mjs';

export class StreamClient {
  /**
   * @param {object} o
   * @param {object} o.user        an AuthResponse (with `.name`)
   * @param {string} o.convId      the conversation it sends to and watches
   * @param {Array<{name: string, url: string}>} o.instances  where it may connect, in order of preference
   * @param {object} o.home        the instance it starts on
   * @param {number} [o.ackTimeoutMs]  an ack not in by then counts as timed out (the message stays un-acked)
   */
  constructor({ user, convId, instances, home, ackTimeoutMs = 5000 }) {
    Object.assign(this, { user, convId, instances, home, ackTimeoutMs });
    this.label = `${user.name}`;
    this.socket = null;
    this.instance = null;
    this.stopped = false;
    /** seq → {id, at (ms), how: 'live'|'catch-up'} */
    this.seen = new Map();
    this.liveReceived = 0;
    this.liveDuplicates = 0;
    this.conflicts = [];
    this.caughtUp = 0;
    /** clientMessageId → {content, sentAt, socket (the one it was last emitted on)} */
    this.unacked = new Map();
    /** clientMessageId → {message, sentAt, ackedAt} */
    this.acked = new Map();
    /** every send, in order: {cmid, sentAt} */
    this.sent = [];
    this.resent = 0;
    this.ackFailures = []; // {cmid, code, at}
    this.ackTimeouts = []; // {cmid, at}
    this.disconnects = 0;
    this.reconnectedAt = null;
    this.caughtUpAt = null;
    this.reconnecting = null;
    this.reconnectError = null;
    this.onLive = null; // optional hook (message, at)
  }

  /** Connects to its home instance. */
  async start() {
    await this.attach(this.home);
  }

  async attach(instance) {
    const socket = await chat(instance.url, this.user, `${this.label}@${instance.name}`);
    this.socket = socket;
    this.instance = instance;
    socket.on('message:new', (m) => this.onMessage(m));
    socket.on('disconnect', (reason) => {
      if (this.socket !== socket || this.stopped) return;
      this.disconnects += 1;
      this.lastDisconnect = { reason, at: Date.now() };
      this.reconnecting = this.reconnect(instance).catch((err) => {
        this.reconnectError = err;
      });
    });
  }

  onMessage(m) {
    if (!m || m.conversationId !== this.convId) return;
    const at = Date.now();
    this.liveReceived += 1;
    const had = this.seen.get(m.seq);
    if (had) {
      if (had.how === 'live') this.liveDuplicates += 1;
      if (had.id !== m.id) this.conflicts.push({ seq: m.seq, had: had.id, got: m.id });
      return;
    }
    this.seen.set(m.seq, { id: m.id, at, how: 'live', senderId: m.senderId, clientMessageId: m.clientMessageId });
    if (this.onLive) this.onLive(m, at);
  }

  /** The last seq up to which it has seen everything (1..n, no hole). */
  contiguous() {
    let n = 0;
    while (this.seen.has(n + 1)) n += 1;
    return n;
  }

  /** Fetches what it missed after `contiguous()` through its current instance. */
  async catchUp() {
    const after = this.contiguous();
    const missed = await historyAfter(this.instance.url, this.user, this.convId, after);
    for (const m of missed) {
      const had = this.seen.get(m.seq);
      if (had) {
        if (had.id !== m.id) this.conflicts.push({ seq: m.seq, had: had.id, got: m.id, how: 'catch-up' });
        continue;
      }
      this.seen.set(m.seq, { id: m.id, at: Date.now(), how: 'catch-up', senderId: m.senderId, clientMessageId: m.clientMessageId });
      this.caughtUp += 1;
    }
    return missed.length;
  }

  /** Sends a new message (now, or after the reconnect when the socket is down). */
  send(content) {
    const cmid = randomUUID();
    const sentAt = Date.now();
    this.sent.push({ cmid, sentAt });
    this.unacked.set(cmid, { content, sentAt, socket: null });
    if (this.socket && this.socket.connected && !this.reconnecting) this.emit(cmid);
    return cmid;
  }

  emit(cmid) {
    const entry = this.unacked.get(cmid);
    if (!entry) return;
    const socket = this.socket;
    entry.socket = socket;
    entry.emits = (entry.emits ?? 0) + 1;
    entry.emittedAt = Date.now();
    if (entry.emits > 1) this.resent += 1;
    const timer = setTimeout(() => {
      if (this.unacked.has(cmid) && entry.socket === socket) this.ackTimeouts.push({ cmid, at: Date.now() });
    }, this.ackTimeoutMs);
    socket.emit('message:send', { conversationId: this.convId, content: entry.content, clientMessageId: cmid }, (ack) => {
      clearTimeout(timer);
      const at = Date.now();
      if (ack && ack.success === true && ack.message) {
        if (!this.acked.has(cmid)) this.acked.set(cmid, { message: ack.message, sentAt: entry.sentAt, ackedAt: at });
        this.unacked.delete(cmid);
      } else {
        this.ackFailures.push({ cmid, code: ack?.error?.code ?? JSON.stringify(ack), at });
        entry.socket = null; // to be sent again
      }
    });
  }

  /** After a drop: another instance (the next ones in order, never the one that dropped it), catch up, resend. */
  async reconnect(dropped) {
    const start = this.instances.findIndex((i) => i.name === dropped.name);
    const order = [...this.instances.slice(start + 1), ...this.instances.slice(0, start)];
    const deadline = Date.now() + 30_000;
    let lastErr;
    while (!this.stopped && Date.now() < deadline) {
      for (const inst of order) {
        try {
          await this.attach(inst);
          this.reconnectedAt = Date.now();
          await this.catchUp();
          this.caughtUpAt = Date.now();
          // Everything not acked (emitted on the dead socket, or queued meanwhile) goes
          // (again), with the same id.
          for (const cmid of this.unacked.keys()) this.emit(cmid);
          this.reconnecting = null;
          return inst;
        } catch (err) {
          lastErr = err;
        }
      }
    }
    this.reconnecting = null;
    throw new Error(`${this.label}: could not reconnect anywhere within 30 s: ${lastErr?.message}`);
  }

  /** Sends everything still un-acked again (same ids) until all is acked, or rejects after `ms`. */
  async flush(ms = 15_000) {
    const deadline = Date.now() + ms;
    if (this.reconnecting) await this.reconnecting;
    if (this.reconnectError) throw this.reconnectError;
    while (this.unacked.size > 0) {
      if (Date.now() > deadline) {
        throw new Error(`${this.label}: ${this.unacked.size} message(s) never acked: ${[...this.unacked.keys()].join(', ')}`);
      }
      for (const [cmid, entry] of this.unacked) {
        // Not in flight on the current socket (never sent, failed, or sent on a dead one),
        // or in flight for longer than the ack timeout: send again.
        const stale = entry.emittedAt !== undefined && Date.now() - entry.emittedAt > this.ackTimeoutMs;
        if (entry.socket !== this.socket || stale) this.emit(cmid);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** Its view: seq → message id. */
  view() {
    return new Map([...this.seen].map(([seq, v]) => [seq, v.id]));
  }

  close() {
    this.stopped = true;
    if (this.socket) closeSocket(this.socket);
  }
}

/** Checks a client's view against the store's history; returns a list of problems. */
export function compareWithHistory(client, history) {
  const problems = [];
  const view = client.view();
  if (view.size !== history.length) problems.push(`${client.label}: sees ${view.size} messages, history has ${history.length}`);
  for (const m of history) {
    const id = view.get(m.seq);
    if (id === undefined) problems.push(`${client.label}: missing seq ${m.seq}`);
    else if (id !== m.id) problems.push(`${client.label}: seq ${m.seq} is ${id}, history says ${m.id}`);
  }
  for (const seq of view.keys()) {
    if (!history.some((m) => m.seq === seq)) problems.push(`${client.label}: saw seq ${seq}, which is not in the history`);
  }
  if (client.liveDuplicates) problems.push(`${client.label}: ${client.liveDuplicates} message:new delivered twice`);
  if (client.conflicts.length) problems.push(`${client.label}: conflicting messages for one seq: ${JSON.stringify(client.conflicts)}`);
  return problems;
}

/** Checks the history itself: seqs 1..N ascending, every clientMessageId once. */
export function checkHistory(history) {
  const problems = [];
  history.forEach((m, i) => {
    if (m.seq !== i + 1) problems.push(`history position ${i} has seq ${m.seq}`);
  });
  const cmids = history.map((m) => m.clientMessageId).filter(Boolean);
  const dup = cmids.filter((c, i) => cmids.indexOf(c) !== i);
  if (dup.length) problems.push(`clientMessageIds stored twice: ${[...new Set(dup)].join(', ')}`);
  return problems;
}
