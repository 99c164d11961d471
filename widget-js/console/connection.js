// Signing in and the connection: the token (from the sign-in link's fragment, the sign-in form
// or storage), the protocol client and which screen handles each of its events, `welcome` (a
// fresh snapshot after every (re)connect), and `renderAll`, which redraws every screen.

import { P, $, st, TOKEN_KEY, toast, errText, isStaff, isSup, upsertMine } from './core.js';
import { renderStatus, renderSite, onSiteSettings } from './settings.js';
import { onQueue, onOffer, renderOffers, renderQueue } from './queue.js';
import { onConvEvent, onMsg, onTyping, onRead, renderMine, renderView, openConv, select } from './conversation.js';
import { onDraftEcho } from './composer.js';
import { onOperator, renderOperators, renderActive, refreshActive, refreshActiveSoon } from './supervisor.js';

// ------------------------------------------------------------------ sign-in

/** The token of a sign-in link (`#token=…`), stored and taken out of the address bar. */
export function tokenFromFragment() {
  const m = location.hash.match(/(?:^#|&)token=([^&]+)/);
  if (!m) return null;
  const tok = decodeURIComponent(m[1]);
  localStorage.setItem(TOKEN_KEY, tok);
  // The token must not linger in the address bar, history or screenshots.
  history.replaceState(null, '', location.pathname + location.search);
  return tok;
}

export function showSignin(message) {
  $('signin').hidden = false;
  $('signin-error').textContent = message || '';
  $('token-input').focus();
}

$('signin-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const tok = $('token-input').value.trim();
  if (!tok) return;
  localStorage.setItem(TOKEN_KEY, tok);
  $('token-input').value = '';
  $('signin').hidden = true;
  start(tok);
});

$('signout').addEventListener('click', () => {
  localStorage.removeItem(TOKEN_KEY);
  if (st.client) st.client.disconnect();
  location.reload();
});

// ------------------------------------------------------------------ connection

export function start(token) {
  if (st.client) st.client.disconnect();
  const c = new P.Client({ url: P.wsUrl(location.origin), token });
  st.client = c;
  c.on('state', renderConn);
  c.on('welcome', onWelcome);
  c.on('msg', (m) => {
    onMsg(m);
    // A message in a conversation a supervisor follows may end or start a visitor's wait.
    refreshActiveSoon();
  });
  c.on('queue', (f) => {
    onQueue(f);
    refreshActive();
  });
  c.on('offer', onOffer);
  c.on('operator', onOperator);
  c.on('conv', (f) => {
    onConvEvent(f.event, f.conv, f.reason);
    // Supervisors: any conversation event may change the list of active conversations.
    refreshActive();
  });
  c.on('typing', onTyping);
  c.on('read', onRead);
  c.on('draft', onDraftEcho);
  c.on('settings', onSiteSettings);
  c.on('notice', (f) => toast(f.text));
  c.on('unauthorized', () => {
    localStorage.removeItem(TOKEN_KEY);
    showSignin('The token was rejected or has expired. Sign in again.');
  });
  c.on('close', (e) => {
    if (e.code === P.CLOSE.FORBIDDEN) showSignin('Access denied for this token.');
  });
  c.on('error', (e) => {
    // Error frames nobody asked for are shown; anything else is a bug worth a log line.
    if (e && e.code && e.frame) toast(errText(e));
    else console.error(e);
  });
  c.connect();
  // Test hooks, as the widget's: only a page that set window.__chatGatewayTestHooks = {} before
  // loading (the browser tests) gets them. `client()`: which conversations the protocol client
  // follows (and would ask history for), and how many of its requests wait for an answer.
  const hooks = window.__chatGatewayTestHooks;
  if (hooks && typeof hooks === 'object') {
    hooks.client = () => ({ following: Array.from(c._convs.keys()), requests: c._pending.size });
  }
}

const CONN_TEXT = {
  open: '● Connected',
  connecting: 'Connecting…',
  waiting: 'Reconnecting…',
  closed: 'Disconnected',
  idle: ''
};

function renderConn(s) {
  const el = $('conn-state');
  el.dataset.state = s;
  el.textContent = CONN_TEXT[s] || s;
  renderStatus();
}

function onWelcome(f) {
  st.me = f.me;
  st.settings = f.settings || {};
  if (!isStaff()) {
    showSignin('This token is not an operator token.');
    st.client.disconnect();
    return;
  }
  document.body.classList.toggle('sup', isSup());
  // Supervisors' own chats are those they took over, beside those they watch.
  $('my-title').textContent = isSup() ? 'Mine and watched' : 'My chats';
  $('conv-empty').textContent = isSup()
    ? 'Select a conversation, or take one over from the queue or the active conversations.'
    : 'Select a conversation, or accept one from the queue.';
  $('me-name').textContent = f.me.name || f.me.id;
  $('me-role').textContent = f.me.role + ' · ' + f.me.site;
  // A fresh snapshot: queues and operators are re-sent right after welcome; what was mine
  // and is no longer listed ended or moved while we were away.
  st.queues.clear();
  st.queueCounts.clear();
  st.primedQueues.clear();
  const listed = new Set((f.conversations || []).map((c) => c.id));
  for (const [id, c] of st.mine) {
    if (!listed.has(id) && !st.watched.has(id) && c.state !== 'closed') st.mine.delete(id);
  }
  for (const id of st.watched) st.client.watch(id, true).catch(() => {});
  // Offers are rebuilt from welcome: one it does not list lapsed or went elsewhere while we
  // were away. Its Conversation carries no expiry: the gateway sends each pending offer's
  // `offer` frame again right after welcome (onOffer), and until then an offer keeps what
  // it had; a gateway that does not resend them leaves the queue's listings to end it.
  const had = st.offers;
  st.offers = new Map();
  for (const c of f.conversations || []) {
    if (c.state === 'offered' && !(c.operator && c.operator.id === st.me.id)) {
      st.offers.set(c.id, { conv: c, expires_at: (had.get(c.id) || {}).expires_at || null });
    } else upsertMine(c);
    // A draft saved on the server (another device) when we have none locally.
    if (c.draft && !st.drafts[c.id]) st.drafts[c.id] = c.draft;
  }
  renderStatus();
  renderSite();
  renderAll();
  if (st.selected) openConv(st.selected, false);
  else if (st.mine.size) select(Array.from(st.mine.keys())[0], false);
  refreshActive();
}

/** Redraws every screen: the offers, the queue, my chats, the operators, the conversation. */
export function renderAll() {
  renderOffers();
  renderQueue();
  renderMine();
  renderOperators();
  renderActive();
  renderView();
}
