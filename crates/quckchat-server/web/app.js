// QuckChat web client: plain JavaScript, no framework, no build step.
//
// It is also a worked example of the wire contract (CONTRACT.md):
//   - REST under /api/v1 with `Authorization: Bearer <accessToken>`; on a 401 the access
//     token is refreshed once with POST /auth/refresh and the request is retried;
//   - Socket.IO namespace /chat for messages, receipts, typing, reactions, presence;
//   - Socket.IO namespace /webrtc for call state and the SDP / ICE relay of a 1:1 call.
// `io` is the global defined by ./socket.io.min.js (socket.io-client 4.8).

const API = '/api/v1';
const REACTIONS = ['👍', '❤️', '😂'];
const TYPING_IDLE_MS = 3000; // stop-typing after this long without a keystroke
const TYPING_SHOW_MS = 6000; // hide someone's typing note if their stop-typing got lost

const $ = (id) => document.getElementById(id);

/** Builds an element: el('li', {class: 'x', dataset: {testid: 'y'}}, child, 'text', …). */
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else if (key in node && key !== 'list') node[key] = value;
    else node.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) node.append(child);
  }
  return node;
}

const fmtTime = (iso) => (iso ? new Date(iso).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }) : '');

// ---------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------

/** {accessToken, refreshToken, user} of the signed-in user, mirrored in sessionStorage. */
let auth = loadAuth();

const users = new Map(); // userId -> User (a small cache for names and presence)
const online = new Set(); // userIds we know to be online
const conversations = new Map(); // conversationId -> Conversation
let currentId = null; // the open conversation
let messages = new Map(); // messageId -> Message, of the open conversation
let lastSeq = 0; // highest seq seen in the open conversation (for catch-up)
let editingId = null; // the message the composer edits, if any
const typingTimers = new Map(); // userId -> timer hiding their typing note
let typingSent = false;
let typingIdleTimer = null;

/** @type {import('socket.io-client').Socket | null} */
let chat = null;
/** @type {import('socket.io-client').Socket | null} */
let rtc = null;

/**
 * The one call this tab takes part in, or null.
 * status: 'outgoing' (we ring someone) | 'incoming' (someone rings us) | 'connecting'
 *         (answered, WebRTC negotiating) | 'active' (media flows) | 'ended'
 */
let call = null;
/** The call that ended last (for the debug hook and the status text). */
let lastEnded = null;

function loadAuth() {
  try {
    return JSON.parse(sessionStorage.getItem('quckchat.auth')) ?? null;
  } catch {
    return null;
  }
}

function saveAuth(value) {
  auth = value;
  if (value) sessionStorage.setItem('quckchat.auth', JSON.stringify(value));
  else sessionStorage.removeItem('quckchat.auth');
}

// A read-only debug hook for tests and the devtools console.
window.quckchat = Object.freeze({
  pc: () => call?.pc ?? null,
  state: () => {
    const c = call ?? lastEnded; // after a call ends, its last state stays visible until the next one
    return { user: auth?.user ?? null, callId: c?.callId ?? null, callStatus: c?.status ?? 'idle' };
  },
});

// ---------------------------------------------------------------------------
// REST
// ---------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) {
    super(body?.message ?? `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

/** `fetch` against /api/v1 with the bearer token; refreshes it once on a 401. */
async function api(method, path, body, { retry = true } = {}) {
  const headers = { accept: 'application/json' };
  if (auth?.accessToken) headers.authorization = `Bearer ${auth.accessToken}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(API + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (res.status === 401 && retry && auth?.refreshToken && !path.startsWith('/auth/')) {
    if (await refreshTokens()) return api(method, path, body, { retry: false });
    signedOut('Your session expired; please log in again.');
  }
  const text = await res.text();
  const data = text ? JSON.parse(text) : null;
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

let refreshing = null;
/** POST /auth/refresh, once at a time; resolves to true when we hold fresh tokens. */
function refreshTokens() {
  refreshing ??= (async () => {
    try {
      const res = await fetch(`${API}/auth/refresh`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ refreshToken: auth?.refreshToken }),
      });
      if (!res.ok) return false;
      const fresh = await res.json();
      saveAuth({ accessToken: fresh.accessToken, refreshToken: fresh.refreshToken, user: fresh.user });
      return true;
    } catch {
      return false;
    } finally {
      refreshing = null;
    }
  })();
  return refreshing;
}

/** Caches a User from any REST answer; its `status` seeds the presence dot. */
function rememberUser(user) {
  users.set(user.id, user);
  if (user.status === 'online') online.add(user.id);
  else if (user.status === 'offline') online.delete(user.id);
}

/** A User by id, cached; `fresh` re-reads it (presence is only shown to co-members). */
async function getUser(id, { fresh = false } = {}) {
  if (fresh || !users.has(id)) {
    try {
      rememberUser(await api('GET', `/users/${encodeURIComponent(id)}`));
    } catch {
      users.set(id, { id, username: id.slice(0, 8), displayName: 'unknown user' });
    }
  }
  return users.get(id);
}

const nameOf = (id) => users.get(id)?.displayName || users.get(id)?.username || '…';

// ---------------------------------------------------------------------------
// Sign in / out
// ---------------------------------------------------------------------------

async function submitAuth(mode) {
  const form = $('auth-form');
  const data = Object.fromEntries(new FormData(form));
  const body = { username: data.username.trim(), password: data.password };
  if (mode === 'register' && data.displayName.trim()) body.displayName = data.displayName.trim();
  $('auth-error').textContent = '';
  try {
    const res = await api('POST', `/auth/${mode}`, body);
    saveAuth({ accessToken: res.accessToken, refreshToken: res.refreshToken, user: res.user });
    form.reset();
    await signedIn();
  } catch (err) {
    $('auth-error').textContent = err.message;
  }
}

async function logout() {
  try {
    await api('POST', '/auth/logout');
  } catch {
    // the session is gone either way
  }
  signedOut('');
}

function signedOut(reason) {
  if (call) endCallLocally('you signed out');
  chat?.disconnect();
  rtc?.disconnect();
  chat = rtc = null;
  saveAuth(null);
  conversations.clear();
  users.clear();
  online.clear();
  currentId = null;
  $('main-view').hidden = true;
  $('auth-view').hidden = false;
  $('auth-error').textContent = reason;
}

async function signedIn() {
  users.set(auth.user.id, auth.user);
  $('auth-view').hidden = true;
  $('main-view').hidden = false;
  $('me-name').textContent = `${auth.user.displayName || auth.user.username} (@${auth.user.username})`;
  connectSockets();
  await loadConversations();
}

// ---------------------------------------------------------------------------
// Sockets
// ---------------------------------------------------------------------------

/** Opens /chat and /webrtc; the `auth` callback hands the current token on every (re)connect. */
function connectSockets() {
  const options = {
    transports: ['websocket'],
    auth: (cb) => cb({ token: `Bearer ${auth?.accessToken}` }),
  };
  chat = io('/chat', options);
  rtc = io('/webrtc', options);

  for (const socket of [chat, rtc]) {
    // A refused handshake ("unauthorized") is not retried by socket.io: refresh and reconnect.
    socket.on('connect_error', async (err) => {
      if (err.message !== 'unauthorized' || !auth) return;
      if (await refreshTokens()) socket.connect();
      else signedOut('Your session expired; please log in again.');
    });
  }

  let connectedBefore = false;
  chat.on('connect', () => {
    $('connection').textContent = 'online';
    $('connection').classList.add('on');
    if (connectedBefore) catchUp();
    connectedBefore = true;
  });
  chat.on('disconnect', () => {
    $('connection').textContent = 'offline';
    $('connection').classList.remove('on');
  });

  chat.on('message:new', onMessageNew);
  chat.on('message:updated', (m) => m.conversationId === currentId && upsertMessage(m));
  chat.on('message:deleted', ({ messageId, conversationId }) => {
    const m = conversationId === currentId && messages.get(messageId);
    if (m) upsertMessage({ ...m, content: '', deletedAt: new Date().toISOString() });
  });
  chat.on('message:read', onMessageRead);
  chat.on('reaction:added', (r) => onReaction(r, true));
  chat.on('reaction:removed', (r) => onReaction(r, false));
  chat.on('user:typing', ({ userId, conversationId }) => showTyping(userId, conversationId, true));
  chat.on('user:stop-typing', ({ userId, conversationId }) => showTyping(userId, conversationId, false));
  chat.on('user:online', ({ userId }) => setPresence(userId, true));
  chat.on('user:offline', ({ userId }) => setPresence(userId, false));
  chat.on('conversation:new', (c) => addConversation(c));
  chat.on('conversation:updated', (c) => addConversation({ ...conversations.get(c.id), ...c }));

  rtc.on('call:incoming', onCallIncoming);
  rtc.on('call:answered', onCallAnswered);
  rtc.on('call:rejected', ({ callId }) => call?.callId === callId && endCallLocally('rejected'));
  rtc.on('call:ended', ({ callId, reason, endedBy }) => {
    if (call?.callId !== callId) return;
    const who = endedBy && endedBy !== auth.user.id ? ` by ${nameOf(endedBy)}` : '';
    endCallLocally(`${reason ?? 'ended'}${who}`);
  });
  rtc.on('call:participant-joined', ({ callId, userId }) => {
    if (call?.callId === callId && userId !== auth.user.id) setPeerNote(`${nameOf(userId)} joined`);
  });
  rtc.on('call:participant-left', ({ callId, userId }) => {
    if (call?.callId === callId && userId !== auth.user.id) setPeerNote(`${nameOf(userId)} left`);
  });
  rtc.on('call:participant-muted', ({ callId, userId, kind, muted }) => {
    if (call?.callId !== callId || userId === auth.user.id) return;
    call.peerMuted[kind] = muted;
    const notes = Object.entries(call.peerMuted).filter(([, m]) => m).map(([k]) => `${k} muted`);
    setPeerNote(notes.length ? `${nameOf(userId)}: ${notes.join(', ')}` : '');
  });
  rtc.on('offer', onOffer);
  rtc.on('answer', onAnswer);
  rtc.on('ice-candidate', onRemoteCandidate);
}

/** Emits with an ack and resolves to the ack; rejects when it says `success: false`. */
function emitAck(socket, event, payload) {
  return new Promise((resolve, reject) => {
    socket.timeout(10_000).emit(event, payload, (err, ack) => {
      if (err) reject(new Error(`${event}: no answer from the server`));
      else if (!ack?.success) reject(new Error(ack?.error?.message ?? `${event} failed`));
      else resolve(ack);
    });
  });
}

/** After a reconnect: refresh the list, and fetch what the open conversation missed. */
async function catchUp() {
  await loadConversations();
  if (!currentId) return;
  const { data } = await api('GET', `/messages/conversation/${currentId}?afterSeq=${lastSeq}&limit=100`);
  data.forEach(upsertMessage);
  markRead();
}

// ---------------------------------------------------------------------------
// Conversations
// ---------------------------------------------------------------------------

async function loadConversations() {
  const { data } = await api('GET', '/conversations?limit=100');
  conversations.clear();
  for (const c of data) conversations.set(c.id, c);
  await Promise.all(data.flatMap((c) => c.participants.map((p) => getUser(p.userId))));
  renderConversations();
}

/**
 * Adds or replaces a conversation once the names of its members are known. For a new one,
 * re-read the members: the server shows presence only to those who share a conversation.
 */
async function addConversation(c, { fresh = !conversations.has(c.id) } = {}) {
  await Promise.all(c.participants.map((p) => getUser(p.userId, { fresh: fresh && p.userId !== auth.user.id })));
  conversations.set(c.id, c);
  renderConversations();
}

function otherIds(c) {
  return c.participants.map((p) => p.userId).filter((id) => id !== auth.user.id);
}

function titleOf(c) {
  if (c.type === 'group') return c.name || 'Unnamed group';
  const [other] = otherIds(c);
  return other ? nameOf(other) : 'Just you';
}

function renderConversations() {
  const list = $('conversation-list');
  const sorted = [...conversations.values()].sort((a, b) =>
    (b.lastMessageAt ?? b.createdAt).localeCompare(a.lastMessageAt ?? a.createdAt),
  );
  list.replaceChildren(
    ...sorted.map((c) => {
      const [other] = otherIds(c);
      return el(
        'li',
        {
          class: `conversation${c.id === currentId ? ' active' : ''}`,
          dataset: { testid: 'conversation-item', conversationId: c.id },
          onclick: () => openConversation(c.id),
        },
        c.type === 'single' ? el('span', { class: `dot${online.has(other) ? ' on' : ''}` }) : el('span', { class: 'group-mark' }, '#'),
        el('span', { class: 'name' }, titleOf(c)),
        c.unreadCount > 0 && c.id !== currentId ? el('span', { class: 'badge', dataset: { testid: 'conversation-unread' } }, String(c.unreadCount)) : null,
      );
    }),
  );
  if (currentId && conversations.has(currentId)) renderChatHeader();
}

let searchSeq = 0;
async function searchUsers(q) {
  const mine = ++searchSeq;
  const results = $('user-search-results');
  if (!q.trim()) return results.replaceChildren();
  const { data } = await api('GET', `/users/search?q=${encodeURIComponent(q.trim())}&limit=10`);
  if (mine !== searchSeq) return; // a newer search is on its way
  results.replaceChildren(
    ...data
      .filter((u) => u.id !== auth.user.id)
      .map((u) => {
        rememberUser(u);
        return el(
          'li',
          { dataset: { testid: 'user-search-result', username: u.username }, onclick: () => startSingle(u.id) },
          `${u.displayName} `,
          el('small', {}, `@${u.username}`),
        );
      }),
  );
}

/** POST /conversations {type: single}: 201 new, or 200 with the pair's existing one. */
async function startSingle(userId) {
  const c = await api('POST', '/conversations', { type: 'single', participants: [userId] });
  await addConversation(c);
  $('user-search-input').value = '';
  $('user-search-results').replaceChildren();
  await openConversation(c.id);
}

async function createGroup(form) {
  const { name, members } = Object.fromEntries(new FormData(form));
  $('group-error').textContent = '';
  try {
    const ids = [];
    for (const username of members.split(',').map((s) => s.trim()).filter(Boolean)) {
      const { data } = await api('GET', `/users/search?q=${encodeURIComponent(username)}&limit=20`);
      const user = data.find((u) => u.username.toLowerCase() === username.toLowerCase());
      if (!user) throw new Error(`no user named ${username}`);
      rememberUser(user);
      ids.push(user.id);
    }
    const c = await api('POST', '/conversations', { type: 'group', name: name.trim(), participants: ids });
    await addConversation(c);
    form.reset();
    await openConversation(c.id);
  } catch (err) {
    $('group-error').textContent = err.message;
  }
}

// ---------------------------------------------------------------------------
// Chat view
// ---------------------------------------------------------------------------

async function openConversation(id) {
  stopTyping();
  currentId = id;
  editingId = null;
  messages = new Map();
  lastSeq = 0;
  const c = conversations.get(id) ?? (await api('GET', `/conversations/${id}`));
  conversations.set(id, c);
  await Promise.all(c.participants.map((p) => getUser(p.userId)));
  $('chat-empty').hidden = true;
  $('chat-pane').hidden = false;
  $('message-list').replaceChildren();
  $('typing-indicator').textContent = '';
  renderComposer();
  renderChatHeader();
  const { data } = await api('GET', `/messages/conversation/${id}?limit=50`);
  if (currentId !== id) return;
  data.reverse().forEach(upsertMessage); // newest first on the wire
  c.unreadCount = 0;
  renderConversations();
  markRead();
  loadCallHistory();
  $('message-input').focus();
}

function renderChatHeader() {
  const c = conversations.get(currentId);
  $('chat-title').textContent = titleOf(c);
  const [other] = otherIds(c);
  const single = c.type === 'single' && other;
  $('presence-dot').hidden = !single;
  $('presence-dot').classList.toggle('on', Boolean(single && online.has(other)));
  $('presence-dot').title = single && online.has(other) ? 'online' : 'offline';
  // Calls are 1:1 here: the buttons exist only in a single conversation.
  $('call-audio-button').hidden = $('call-video-button').hidden = !single;
}

function setPresence(userId, isOnline) {
  if (isOnline) online.add(userId);
  else online.delete(userId);
  renderConversations();
}

function onMessageNew(m) {
  const c = conversations.get(m.conversationId);
  if (!c) {
    loadConversations(); // a conversation we have not seen yet
    return;
  }
  c.lastMessageAt = m.createdAt;
  c.lastSeq = Math.max(c.lastSeq ?? 0, m.seq);
  if (m.conversationId === currentId) {
    upsertMessage(m);
    showTyping(m.senderId, m.conversationId, false);
    markRead();
  } else if (m.senderId !== auth.user.id) {
    c.unreadCount = (c.unreadCount ?? 0) + 1;
  }
  renderConversations();
}

/** A read receipt covers every message up to `messageId`: mark our own ones as read. */
function onMessageRead({ messageId, userId, conversationId, readAt }) {
  if (conversationId !== currentId || userId === auth.user.id) return;
  const upTo = messages.get(messageId)?.seq ?? Infinity;
  for (const m of messages.values()) {
    if (m.senderId === auth.user.id && m.seq <= upTo && !m.readBy.some((r) => r.userId === userId)) {
      upsertMessage({ ...m, readBy: [...m.readBy, { userId, readAt }] });
    }
  }
}

/** Emits `message:read` for the newest message of the open conversation, if it is not ours. */
let lastReadSent = null;
function markRead() {
  if (document.hidden) return;
  const newest = [...messages.values()].sort((a, b) => b.seq - a.seq)[0];
  if (!newest || newest.senderId === auth.user.id || newest.id === lastReadSent) return;
  lastReadSent = newest.id;
  chat.emit('message:read', { messageId: newest.id, conversationId: newest.conversationId });
}

function onReaction({ messageId, conversationId, emoji, userId }, added) {
  const m = conversationId === currentId && messages.get(messageId);
  if (!m) return;
  const others = m.reactions.filter((r) => !(r.emoji === emoji && r.userId === userId));
  upsertMessage({ ...m, reactions: added ? [...others, { emoji, userId }] : others });
}

function upsertMessage(m) {
  if (m.conversationId !== currentId) return;
  messages.set(m.id, m);
  lastSeq = Math.max(lastSeq, m.seq);
  const list = $('message-list');
  const node = renderMessage(m);
  const old = list.querySelector(`[data-message-id="${m.id}"]`);
  if (old) return old.replaceWith(node);
  // Keep the list ordered by seq (live events and history may interleave).
  const after = [...list.children].find((li) => Number(li.dataset.seq) > m.seq);
  list.insertBefore(node, after ?? null);
  list.scrollTop = list.scrollHeight;
}

function renderMessage(m) {
  const mine = m.senderId === auth.user.id;
  const deleted = Boolean(m.deletedAt);
  const readByOthers = m.readBy.some((r) => r.userId !== auth.user.id);
  const counts = new Map();
  for (const r of m.reactions) counts.set(r.emoji, (counts.get(r.emoji) ?? 0) + 1);
  return el(
    'li',
    {
      class: `message${mine ? ' mine' : ''}${deleted ? ' deleted' : ''}`,
      dataset: { testid: 'message', messageId: m.id, seq: String(m.seq), mine: String(mine) },
    },
    el('div', { class: 'meta' }, `${mine ? 'You' : nameOf(m.senderId)} · ${fmtTime(m.createdAt)}`, m.editedAt && !deleted ? ' · edited' : ''),
    el('div', { class: 'content', dataset: { testid: 'message-content' } }, deleted ? 'message deleted' : m.content),
    deleted
      ? null
      : el(
          'div',
          { class: 'actions' },
          REACTIONS.map((emoji) => {
            const own = m.reactions.some((r) => r.emoji === emoji && r.userId === auth.user.id);
            return el(
              'button',
              {
                class: `reaction${own ? ' own' : ''}`,
                dataset: { testid: 'reaction-button', emoji },
                title: own ? 'remove reaction' : 'react',
                onclick: () => chat.emit(own ? 'reaction:remove' : 'reaction:add', { messageId: m.id, emoji }),
              },
              emoji,
              counts.get(emoji) ? ` ${counts.get(emoji)}` : '',
            );
          }),
          mine ? el('button', { dataset: { testid: 'edit-button' }, onclick: () => startEdit(m) }, 'Edit') : null,
          mine ? el('button', { dataset: { testid: 'delete-button' }, onclick: () => deleteMessage(m) }, 'Delete') : null,
          mine && readByOthers ? el('span', { class: 'read', dataset: { testid: 'message-read' } }, '✓ read') : null,
        ),
  );
}

async function sendMessage() {
  const input = $('message-input');
  const content = input.value.trim();
  if (!content || !currentId) return;
  stopTyping();
  try {
    if (editingId) {
      await emitAck(chat, 'message:edit', { messageId: editingId, content });
      editingId = null;
      renderComposer();
    } else {
      // clientMessageId makes a retried send idempotent: the server returns the first message.
      const ack = await emitAck(chat, 'message:send', { conversationId: currentId, content, type: 'text', clientMessageId: crypto.randomUUID() });
      upsertMessage(ack.message); // message:new may arrive before or after the ack
    }
    input.value = '';
  } catch (err) {
    alertInChat(err.message);
  }
}

function startEdit(m) {
  editingId = m.id;
  $('message-input').value = m.content;
  renderComposer();
  $('message-input').focus();
}

function renderComposer() {
  $('editing-note').hidden = !editingId;
  $('send-button').textContent = editingId ? 'Save' : 'Send';
}

async function deleteMessage(m) {
  if (!confirm('Delete this message?')) return;
  try {
    await emitAck(chat, 'message:delete', { messageId: m.id });
  } catch (err) {
    alertInChat(err.message);
  }
}

function alertInChat(text) {
  $('typing-indicator').textContent = `⚠ ${text}`;
}

// Typing: one `user:typing` when we start, `user:stop-typing` after a pause or on send.
function onComposerInput() {
  if (!currentId || editingId) return;
  if (!typingSent) {
    chat.emit('user:typing', { conversationId: currentId });
    typingSent = currentId;
  }
  clearTimeout(typingIdleTimer);
  typingIdleTimer = setTimeout(stopTyping, TYPING_IDLE_MS);
}

function stopTyping() {
  clearTimeout(typingIdleTimer);
  if (typingSent && chat) chat.emit('user:stop-typing', { conversationId: typingSent });
  typingSent = false;
}

function showTyping(userId, conversationId, typing) {
  if (userId === auth.user.id) return;
  clearTimeout(typingTimers.get(userId));
  typingTimers.delete(userId);
  if (typing && conversationId === currentId) {
    typingTimers.set(userId, setTimeout(() => showTyping(userId, conversationId, false), TYPING_SHOW_MS));
  }
  const names = [...typingTimers.keys()].map(nameOf);
  $('typing-indicator').textContent = names.length ? `${names.join(', ')} ${names.length > 1 ? 'are' : 'is'} typing…` : '';
}

// ---------------------------------------------------------------------------
// Calls: state on /webrtc, media over an RTCPeerConnection
// ---------------------------------------------------------------------------
//
// Caller                          server                          Callee
//  call:initiate {conversationId} ──▶ ack {callId, iceServers}
//                                     call:incoming ─────────────▶ (banner)
//                                     ◀───────────────────────────  call:answer → ack {iceServers}
//  call:answered {userId} ◀──────                                   new RTCPeerConnection + tracks
//  new RTCPeerConnection + tracks
//  offer {sdp, to: userId} ───────────────────────────────────────▶ setRemote, createAnswer
//  ◀─────────────────────────────────────────── answer {sdp, to: callerId}
//  ice-candidate {candidate, to} ◀──────────────────────────────▶ ice-candidate {candidate, to}
//  call:end ──▶ call:ended {reason, endedBy} to both

async function startCall(type) {
  const c = conversations.get(currentId);
  const [peerId] = otherIds(c);
  if (call || !peerId) return;
  call = newCall({ status: 'outgoing', type, role: 'caller', peerId, conversationId: c.id });
  showCallPanel(`Calling ${nameOf(peerId)}…`);
  try {
    await getLocalMedia();
    const ack = await emitAck(rtc, 'call:initiate', { conversationId: c.id, type });
    call.callId = ack.callId;
    call.iceServers = ack.iceServers ?? [];
    if (call.hangupRequested) hangUp(); // the user hung up before the server answered
  } catch (err) {
    endCallLocally(`failed: ${err.message}`);
  }
}

function newCall(fields) {
  return {
    callId: null,
    pc: null,
    iceServers: [],
    localStream: null,
    pendingCandidates: [], // remote candidates that arrived before the remote description
    pendingOffer: null, // an offer that arrived before our RTCPeerConnection existed
    peerMuted: {},
    muted: { audio: false, video: false },
    ...fields,
  };
}

function onCallIncoming({ callId, callerId, callerName, type, conversationId }) {
  if (call) return; // already busy in this tab; the server decides busy / other devices
  if (callerName) users.set(callerId, { ...users.get(callerId), id: callerId, displayName: callerName });
  call = newCall({ callId, status: 'incoming', type, role: 'callee', peerId: callerId, conversationId });
  $('incoming-text').textContent = `${callerName ?? nameOf(callerId)} is calling (${type})…`;
  $('incoming-call').hidden = false;
}

async function answerCall() {
  if (call?.status !== 'incoming') return;
  $('incoming-call').hidden = true;
  call.status = 'connecting';
  showCallPanel('Connecting…');
  const current = call;
  try {
    await getLocalMedia();
    const ack = await emitAck(rtc, 'call:answer', { callId: current.callId });
    if (call !== current) return;
    call.iceServers = ack.iceServers ?? [];
    createPeerConnection();
    if (call.pendingOffer) onOffer(call.pendingOffer);
  } catch (err) {
    if (call === current) endCallLocally(`failed: ${err.message}`);
  }
}

function rejectCall() {
  if (call?.status !== 'incoming') return;
  const { conversationId } = call;
  emitAck(rtc, 'call:reject', { callId: call.callId })
    .catch((err) => console.warn(err.message))
    .then(() => conversationId === currentId && loadCallHistory());
  endCallLocally('rejected', { quiet: true, history: false });
}

/** The caller learns that the callee answered: build the connection and send the offer. */
async function onCallAnswered({ callId, userId }) {
  if (call?.callId !== callId || call.role !== 'caller' || userId === auth.user.id || call.pc) return;
  call.peerId = userId;
  call.status = 'connecting';
  setCallStatus('Connecting…');
  try {
    const pc = createPeerConnection();
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    rtc.emit('offer', { callId, sdp: pc.localDescription.toJSON(), to: userId });
  } catch (err) {
    setCallStatus(`Could not start the media session: ${err.message}`);
  }
}

async function onOffer(msg) {
  const { callId, sdp, from } = msg;
  if (call?.callId !== callId) return;
  if (!call.pc) {
    call.pendingOffer = msg; // our answer ack has not come back yet
    return;
  }
  call.pendingOffer = null;
  call.peerId = from ?? call.peerId;
  const pc = call.pc;
  try {
    await pc.setRemoteDescription(toDescription(sdp, 'offer'));
    await flushCandidates();
    const answer = await pc.createAnswer();
    await pc.setLocalDescription(answer);
    rtc.emit('answer', { callId, sdp: pc.localDescription.toJSON(), to: call.peerId });
  } catch (err) {
    setCallStatus(`Could not answer the offer: ${err.message}`);
  }
}

async function onAnswer({ callId, sdp }) {
  if (call?.callId !== callId || !call.pc) return;
  try {
    await call.pc.setRemoteDescription(toDescription(sdp, 'answer'));
    await flushCandidates();
  } catch (err) {
    setCallStatus(`Could not apply the answer: ${err.message}`);
  }
}

async function onRemoteCandidate({ callId, candidate }) {
  if (call?.callId !== callId || !candidate) return;
  if (!call.pc?.remoteDescription) call.pendingCandidates.push(candidate);
  else await call.pc.addIceCandidate(candidate).catch((err) => console.warn('addIceCandidate', err));
}

async function flushCandidates() {
  const queued = call.pendingCandidates.splice(0);
  for (const candidate of queued) {
    await call.pc.addIceCandidate(candidate).catch((err) => console.warn('addIceCandidate', err));
  }
}

/** `sdp` is an RTCSessionDescriptionInit ({type, sdp}); a bare SDP string is accepted too. */
const toDescription = (sdp, type) => (typeof sdp === 'string' ? { type, sdp } : sdp);

function createPeerConnection() {
  const current = call;
  const pc = new RTCPeerConnection({ iceServers: current.iceServers });
  current.pc = pc;
  for (const track of current.localStream?.getTracks() ?? []) pc.addTrack(track, current.localStream);
  pc.onicecandidate = ({ candidate }) => {
    if (candidate && call === current) {
      rtc.emit('ice-candidate', { callId: current.callId, candidate: candidate.toJSON(), to: current.peerId });
    }
  };
  pc.ontrack = ({ streams, track }) => {
    const video = $('remote-video');
    video.srcObject = streams[0] ?? new MediaStream([track]);
  };
  pc.onconnectionstatechange = () => {
    if (call !== current) return;
    if (pc.connectionState === 'connected') {
      current.status = 'active';
      current.connectedAt ??= Date.now();
      setCallStatus(`In call with ${nameOf(current.peerId)}`);
    } else if (pc.connectionState === 'failed') {
      setCallStatus('Connection failed');
    } else if (pc.connectionState === 'disconnected') {
      setCallStatus('Reconnecting…');
    }
  };
  return pc;
}

async function getLocalMedia() {
  const current = call;
  const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: current.type === 'video' });
  if (call !== current) {
    stream.getTracks().forEach((t) => t.stop());
    throw new Error('the call is over');
  }
  current.localStream = stream;
  $('local-video').srcObject = stream;
}

function hangUp() {
  if (!call) return;
  if (!call.callId) {
    call.hangupRequested = true; // call:initiate has not been acknowledged yet
    return;
  }
  const { conversationId } = call;
  // Refresh the history once the server has recorded the end (its ack), not before.
  emitAck(rtc, 'call:end', { callId: call.callId })
    .catch((err) => console.warn(err.message))
    .then(() => conversationId === currentId && loadCallHistory());
  endCallLocally(call.status === 'outgoing' ? 'cancelled' : 'you hung up', { history: false });
}

function toggleMute(kind) {
  if (!call?.localStream) return;
  const muted = !call.muted[kind];
  call.muted[kind] = muted;
  const tracks = kind === 'audio' ? call.localStream.getAudioTracks() : call.localStream.getVideoTracks();
  tracks.forEach((t) => (t.enabled = !muted));
  if (call.callId) rtc.emit(`mute:${kind}`, { callId: call.callId, muted });
  const button = $(`mute-${kind}-button`);
  button.setAttribute('aria-pressed', String(muted));
  button.textContent = kind === 'audio' ? (muted ? 'Unmute mic' : 'Mute mic') : muted ? 'Start camera' : 'Stop camera';
}

/** Tears the call down on this side (idempotent) and shows why it ended. */
function endCallLocally(reason, { quiet = false, history = true } = {}) {
  if (!call) return;
  const ended = call;
  call = null;
  ended.status = 'ended';
  ended.pc?.close();
  ended.localStream?.getTracks().forEach((t) => t.stop());
  $('incoming-call').hidden = true;
  $('local-video').srcObject = null;
  $('remote-video').srcObject = null;
  lastEnded = ended;
  if (quiet) {
    $('call-panel').hidden = true;
  } else {
    showCallPanel(`Call ended (${reason})`, { ended: true });
  }
  if (history && ended.conversationId === currentId) loadCallHistory();
}

function showCallPanel(status, { ended = false } = {}) {
  $('call-panel').hidden = false;
  $('call-panel').classList.toggle('ended', ended);
  $('call-panel').classList.toggle('audio-only', !ended && call?.type === 'audio');
  $('hangup-button').hidden = ended;
  $('mute-audio-button').hidden = ended;
  $('mute-video-button').hidden = ended || call?.type !== 'video';
  $('call-close-button').hidden = !ended;
  for (const kind of ['audio', 'video']) {
    $(`mute-${kind}-button`).setAttribute('aria-pressed', 'false');
  }
  $('mute-audio-button').textContent = 'Mute mic';
  $('mute-video-button').textContent = 'Stop camera';
  setPeerNote('');
  setCallStatus(status);
}

function setCallStatus(text) {
  $('call-status').textContent = text;
  $('call-status').dataset.callStatus = call?.status ?? lastEnded?.status ?? 'idle';
}

function setPeerNote(text) {
  $('peer-muted').textContent = text;
}

async function loadCallHistory() {
  const id = currentId;
  if (!id) return;
  let data = [];
  try {
    ({ data } = await api('GET', `/calls/history/${id}?limit=20`));
  } catch (err) {
    if (err.status !== 404) throw err; // no call API on this server: leave the list empty
  }
  if (id !== currentId) return;
  $('call-history').replaceChildren(
    ...data.map((c) =>
      el(
        'li',
        { dataset: { testid: 'call-history-item', callId: c.id, status: c.status, durationSec: c.durationSec ?? '' } },
        `${c.initiatorId === auth.user.id ? 'Outgoing' : 'Incoming'} ${c.type} call · `,
        el('span', { dataset: { testid: 'call-history-status' } }, c.status),
        c.durationSec !== undefined && c.durationSec !== null ? el('span', { dataset: { testid: 'call-history-duration' } }, ` · ${c.durationSec}s`) : '',
        ` · ${new Date(c.createdAt).toLocaleString()}`,
      ),
    ),
  );
}

// ---------------------------------------------------------------------------
// Wiring
// ---------------------------------------------------------------------------

$('auth-form').addEventListener('submit', (e) => {
  e.preventDefault();
  submitAuth('login');
});
$('register-button').addEventListener('click', () => {
  if ($('auth-form').reportValidity()) submitAuth('register');
});
$('logout-button').addEventListener('click', logout);
$('search-form').addEventListener('submit', (e) => e.preventDefault());
$('user-search-input').addEventListener('input', (e) => searchUsers(e.target.value).catch(console.error));
$('group-form').addEventListener('submit', (e) => {
  e.preventDefault();
  createGroup(e.target);
});
$('composer').addEventListener('submit', (e) => {
  e.preventDefault();
  sendMessage();
});
$('message-input').addEventListener('input', onComposerInput);
$('edit-cancel').addEventListener('click', () => {
  editingId = null;
  $('message-input').value = '';
  renderComposer();
});
$('call-audio-button').addEventListener('click', () => startCall('audio'));
$('call-video-button').addEventListener('click', () => startCall('video'));
$('answer-button').addEventListener('click', answerCall);
$('reject-button').addEventListener('click', rejectCall);
$('hangup-button').addEventListener('click', hangUp);
$('mute-audio-button').addEventListener('click', () => toggleMute('audio'));
$('mute-video-button').addEventListener('click', () => toggleMute('video'));
$('call-close-button').addEventListener('click', () => ($('call-panel').hidden = true));
document.addEventListener('visibilitychange', () => currentId && markRead());

if (auth?.accessToken) {
  signedIn().catch(() => signedOut(''));
} else {
  $('auth-view').hidden = false;
}
