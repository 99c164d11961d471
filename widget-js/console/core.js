// The console's state and the helpers every screen uses: the one `st` object the screens read
// and change, building elements, toasts, formatting, looking a conversation up wherever it is
// listed, and the store of each conversation's messages. It imports nothing; every other module
// of the console imports it.

export const P = window.ChatGatewayProtocol;
export const $ = (id) => document.getElementById(id);
export const TOKEN_KEY = 'cgw-console-token';
// The session made by signing in with e-mail and password (`{site, id}`), revoked on sign-out.
export const SESSION_KEY = 'cgw-console-session';
export const DRAFTS_KEY = 'cgw-console-drafts';
export const SOUND_KEY = 'cgw-console-sound';

export const st = {
  client: null,
  me: null,
  settings: {},
  // What the status switch shows, and what the gateway last confirmed.
  status: null,
  serverStatus: null,
  queues: new Map(), // queue id -> [Conversation]
  queueCounts: new Map(), // queue id -> how many wait (a listing may show fewer)
  offers: new Map(), // conv id -> {conv, expires_at}
  mine: new Map(), // conv id -> Conversation (assigned to me, or watched)
  watched: new Set(),
  operators: new Map(), // operator id -> {id, name, status, online, load, supervisor}
  active: { list: [], count: 0, error: '' }, // supervisors: the answer to `active`
  msgs: new Map(), // conv id -> Map(key -> entry)
  complete: new Set(), // conv ids whose history is fully loaded
  previous: new Map(), // conv id -> [elements] of the conversation it continues (`previous`)
  typing: new Map(), // conv id -> {preview, timer}
  visitorRead: new Map(), // conv id -> seq the visitor has read
  sentRead: new Map(), // conv id -> seq we reported as read
  unread: new Map(), // conv id -> count
  drafts: loadJSON(DRAFTS_KEY, {}),
  selected: null, // conv id shown in the view
  peek: null, // a queued Conversation shown before accepting
  seenQueued: new Set(),
  accepting: new Set(), // conv ids of my own accept requests in flight (no alert for those)
  primedQueues: new Set() // queues whose first snapshot arrived (later arrivals are news)
};

function loadJSON(key, dflt) {
  try {
    return JSON.parse(localStorage.getItem(key)) || dflt;
  } catch {
    return dflt;
  }
}

export function saveDrafts() {
  try {
    localStorage.setItem(DRAFTS_KEY, JSON.stringify(st.drafts));
  } catch {
    // The storage is full or refused: the drafts still live on the gateway.
  }
}

// ------------------------------------------------------------------ elements and words

/** An element: `attrs` become attributes, `on…` listeners, `text` its text; `kids` are appended. */
export function h(tag, attrs, kids) {
  const el = document.createElement(tag);
  for (const k in attrs || {}) {
    const v = attrs[k];
    if (v == null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'text') el.textContent = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of kids || []) if (c != null) el.append(c);
  return el;
}

export function toast(text) {
  const t = h('div', { class: 'toast', 'data-testid': 'toast', role: 'status', text });
  $('toasts').append(t);
  setTimeout(() => t.remove(), 5000);
}

export const shortId = (id) => String(id || '').slice(-6);
export const visitorName = (c) =>
  (c && c.visitor && c.visitor.name) || 'Visitor ' + shortId(c && c.visitor && c.visitor.id);
export const clock = (ts) => new Date(ts).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
export function ago(ts) {
  const s = Math.max(0, Math.round((Date.now() - ts) / 1000));
  if (s < 60) return s + ' s';
  if (s < 3600) return Math.round(s / 60) + ' min';
  return Math.round(s / 3600) + ' h';
}
export const chats = (n) => n + (n === 1 ? ' chat' : ' chats');
/** The mark of a conversation the visitor left in the widget's offline form (`conv.offline`). */
export const offlineBadge = (c) =>
  c && c.offline === true
    ? h('span', {
        class: 'pill flag',
        'data-testid': 'offline-badge',
        title: 'Left in the offline form',
        text: 'offline message'
      })
    : null;
export const errText = (e) => (e && (e.message || e.code)) || 'failed';

// ------------------------------------------------------------------ the site's catalogues

// A site may keep catalogues in its directory, which reach staff in the settings (`welcome`,
// and every `settings` frame after an admin's change): its active tags (then staff add only
// these), its active outcomes (then staff close with one of these), and the labels of the
// visitor's parameters with where they show. A site without them works as before: free tags,
// the console's own outcomes, parameters under their codes.

const COLOR = /^#[0-9a-fA-F]{6}$/;
const named = (list, key) => list.filter((x) => x && typeof x[key] === 'string' && x[key]);

/** The site's active tags (`{name, color, text_color}`) when it keeps a catalogue, else null. */
export function tagCatalogue() {
  const t = st.settings && st.settings.tags;
  return Array.isArray(t) && t.length ? named(t, 'name') : null;
}

/** The catalogue's entry of tag `name` (tags are lower-cased, so any case), or null. */
export function catalogueTag(name) {
  const key = String(name).toLowerCase();
  return (tagCatalogue() || []).find((t) => t.name.toLowerCase() === key) || null;
}

/** Gives a tag's element its catalogue colours, when it has some (only `#rrggbb` is used). */
export function paintTag(el, t) {
  if (!t || !COLOR.test(t.color) || !COLOR.test(t.text_color)) return el;
  el.style.background = t.color;
  el.style.color = t.text_color;
  el.classList.add('painted');
  return el;
}

/** A tag's chip, in the catalogue's colours when the tag is in it; `kids` follow its name. */
export function tagChip(name, attrs, kids) {
  const el = h('span', Object.assign({ class: 'tag', 'data-tag': name }, attrs), [name, ...(kids || [])]);
  return paintTag(el, catalogueTag(name));
}

/** The site's active outcomes (`{id, name}`) when it keeps a list, else null. */
export function outcomeCatalogue() {
  const o = st.settings && st.settings.outcomes;
  return Array.isArray(o) && o.length ? named(o, 'id') : null;
}

/** What an outcome is called: its name in the site's list, else its id. */
export function outcomeName(id) {
  const o = (outcomeCatalogue() || []).find((x) => x.id === id);
  return (o && typeof o.name === 'string' && o.name) || id;
}

/**
 * The visitor's parameters to show in `where` (`preview`: a waiting conversation looked at
 * from the queue; `active`: the open conversation), as `[code, label, value]`: a defined
 * parameter under its label where its `show` says (`both`, or that place; never `none`), one
 * without a definition under its code, everywhere.
 */
export function shownParams(params, where) {
  const defs = new Map();
  const list = st.settings && Array.isArray(st.settings.params) ? st.settings.params : [];
  for (const d of named(list, 'code')) defs.set(d.code, d);
  const out = [];
  for (const [code, value] of Object.entries(params || {})) {
    const d = defs.get(code);
    const show = d ? d.show : 'both';
    if (show === 'none' || ((show === 'preview' || show === 'active') && show !== where)) continue;
    out.push([code, (d && typeof d.label === 'string' && d.label) || code, value]);
  }
  return out;
}

// ------------------------------------------------------------------ the HTTP API

/**
 * A call of the HTTP API v1 on this origin (`path` from `/v1/…`), as the signed-in staff
 * member unless `token` says otherwise (null: none). Resolves to the answer's JSON (null when it
 * has none, as a 204). A refused call is thrown as an Error whose message is the problem's title
 * and detail with the status, carrying `status` (0: the gateway gave no answer), `problem` (the
 * RFC 9457 body, `errors` are its field errors) and `retryAfter` (seconds, from a 429).
 * `timeout` (ms) gives up on a gateway that does not answer.
 */
export async function apiFetch(method, path, { body, token = localStorage.getItem(TOKEN_KEY), timeout } = {}) {
  const headers = {};
  if (token) headers.Authorization = 'Bearer ' + token;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: timeout ? AbortSignal.timeout(timeout) : undefined
    });
  } catch (e) {
    const err = new Error('The gateway could not be reached (' + errText(e) + ')');
    err.status = 0;
    throw err;
  }
  let json = null;
  try {
    json = res.status === 204 ? null : await res.json();
  } catch {
    json = null;
  }
  if (!res.ok) {
    const p = json && typeof json === 'object' ? json : {};
    const why = (p.title || 'Request failed') + (p.detail ? ': ' + p.detail : '');
    const err = new Error(why + ' (' + res.status + ')');
    err.status = res.status;
    err.problem = p;
    const retry = Number(res.headers.get('Retry-After'));
    if (retry > 0) err.retryAfter = retry;
    throw err;
  }
  return json;
}

/** The path of `rest` under the signed-in staff member's site: `/v1/sites/{site}` + `rest`. */
export const sitePath = (rest) => '/v1/sites/' + encodeURIComponent((st.me && st.me.site) || '') + rest;

// ------------------------------------------------------------------ who I am, what is where

export const isStaff = () => st.me && (st.me.role === 'operator' || st.me.role === 'supervisor');
export const isSup = () => st.me && st.me.role === 'supervisor';

/** A conversation by id, wherever it is listed: mine, offered, peeked at, queued. */
export function conv(id) {
  return (
    st.mine.get(id) || (st.offers.get(id) || {}).conv || (st.peek && st.peek.id === id ? st.peek : null) || queued(id)
  );
}

export function queued(id) {
  for (const list of st.queues.values()) for (const c of list) if (c.id === id) return c;
  return null;
}

export const isReadOnly = (id) => st.watched.has(id) || !st.mine.has(id) || (st.mine.get(id) || {}).state === 'closed';

/**
 * Notes how far the visitor has read, from a Conversation's (or a history answer's) `read`
 * marks: receipts are right from the start after a reload or a transfer. A mark only rises.
 */
export function seeRead(id, read) {
  const seq = read && typeof read === 'object' ? read.visitor : null;
  if (!id || typeof seq !== 'number' || !(seq > 0)) return false;
  if (seq <= (st.visitorRead.get(id) || 0)) return false;
  st.visitorRead.set(id, seq);
  return true;
}

/** Files a conversation under mine (assigned to me, or watched) or takes it out; true if mine. */
export function upsertMine(c) {
  seeRead(c.id, c.read);
  const mineNow = (c.operator && st.me && c.operator.id === st.me.id) || st.watched.has(c.id);
  if (mineNow && c.state !== 'queued') {
    const had = st.mine.get(c.id);
    if (had && c.draft === undefined && had.draft) c.draft = had.draft;
    st.mine.set(c.id, c);
    st.offers.delete(c.id);
    return true;
  }
  if (st.mine.has(c.id)) {
    st.mine.delete(c.id);
    st.client.forget(c.id);
  }
  return false;
}

// ------------------------------------------------------------------ messages store

/** A conversation's messages by key: `s<seq>` once stored, `c<cid>` while my send is pending. */
export function entries(id) {
  let m = st.msgs.get(id);
  if (!m) st.msgs.set(id, (m = new Map()));
  return m;
}

export function addEntry(id, e) {
  const m = entries(id);
  if (e.cid) {
    // Our own pending message: the stored copy replaces it.
    const pending = m.get('c' + e.cid);
    if (pending) {
      m.delete('c' + e.cid);
      if (pending.el) e.el = pending.el;
    }
  }
  if (m.has(e.key)) return false;
  m.set(e.key, e);
  return true;
}

/** An entry of the store from a `msg` frame or a history item. */
export const storedEntry = (x) => ({
  key: 's' + x.seq,
  seq: x.seq,
  cid: x.cid,
  from: x.from,
  text: x.text,
  code: x.code,
  args: x.args,
  ts: x.ts
});

// System messages by their code, in the console's language (English, the gateway's phrases in
// gateway/src/i18n.rs): their stored text is in the site's language.
const SYSTEM = {
  operator_joined: (a) => (a.name ? a.name + ' joined the conversation' : 'An operator joined the conversation'),
  transferred: (a) =>
    'The conversation was transferred to ' + (a.queue ? a.queue : 'another operator'),
  reassigned: () => 'The operator did not answer in time; the conversation was passed to another operator',
  closed: () => 'The conversation was closed'
};

/** What a system message says: by its code, or its text for a code this console does not know. */
export function systemText(m) {
  const a = {};
  const args = m.args && typeof m.args === 'object' ? m.args : {};
  for (const k of Object.keys(args)) if (typeof args[k] === 'string') a[k] = args[k];
  return Object.hasOwn(SYSTEM, m.code) ? SYSTEM[m.code](a) : m.text;
}

/** What a message says, system messages by their code. */
export const messageText = (m) => (m.from && m.from.role === 'system' ? systemText(m) : m.text);
