// Signing in and the connection: the token (from e-mail and password, the sign-in link's
// fragment, the pasted-token form or storage), signing out (revoking a password's session), the
// protocol client and which screen handles each of its events, `welcome` (a fresh snapshot
// after every (re)connect), and `renderAll`, which redraws every screen.

import {
  P, $, st, TOKEN_KEY, SESSION_KEY, toast, errText, isStaff, isSup, upsertMine, apiFetch
} from './core.js';
import { renderStatus, renderSite, onSiteSettings } from './settings.js';
import { onQueue, onOffer, renderOffers, renderQueue } from './queue.js';
import { onConvEvent, onMsg, onTyping, onRead, renderMine, renderView, openConv, select } from './conversation.js';
import { onDraftEcho } from './composer.js';
import { onOperator, renderOperators, renderActive, refreshActive, refreshActiveSoon } from './supervisor.js';

// ------------------------------------------------------------------ sign-in
//
// Two ways in: e-mail and password (`POST /v1/sites/{site}/sessions` gives a staff token, and
// the session is kept to be revoked on sign-out), or a token pasted or brought by a sign-in
// link (`#token=…`), for development and for login systems of the site's own. Either token is
// stored and connects the same way.

/** The token of a sign-in link (`#token=…`), stored and taken out of the address bar. */
export function tokenFromFragment() {
  const m = location.hash.match(/(?:^#|&)token=([^&]+)/);
  if (!m) return null;
  const tok = decodeURIComponent(m[1]);
  localStorage.setItem(TOKEN_KEY, tok);
  // A link's token is no session of ours: there is none to revoke on sign-out.
  localStorage.removeItem(SESSION_KEY);
  // The token must not linger in the address bar, history or screenshots.
  history.replaceState(null, '', location.pathname + location.search);
  return tok;
}

/** The session made by signing in with a password, `{site, id}`, or null. */
function storedSession() {
  try {
    const s = JSON.parse(localStorage.getItem(SESSION_KEY));
    return s && typeof s.site === 'string' && typeof s.id === 'string' ? s : null;
  } catch {
    return null;
  }
}

function forgetSignin() {
  localStorage.removeItem(TOKEN_KEY);
  localStorage.removeItem(SESSION_KEY);
}

/** The site the sign-in form starts with: the page's `?site=`, else `demo`. */
const defaultSite = () => new URLSearchParams(location.search).get('site') || 'demo';

export function showSignin(message) {
  $('signin').hidden = false;
  $('signin-error').textContent = message || '';
  if (!$('signin-site').value) $('signin-site').value = defaultSite();
  // The way in that was being used keeps the focus: the pasted token's, or the password form's.
  if ($('token-details').open) $('token-input').focus();
  else if ($('signin-email').value) $('signin-password').focus();
  else $('signin-email').focus();
}

/** Signed in: the token is stored and the console connects with it. */
function signedIn(tok) {
  localStorage.setItem(TOKEN_KEY, tok);
  $('signin-error').textContent = '';
  $('signin').hidden = true;
  start(tok);
}

/** What a refused sign-in says to the person at the form. */
function signinError(err, site) {
  const p = err.problem || {};
  switch (err.status) {
    case 0:
      return 'The gateway could not be reached. Check the connection and try again.';
    case 401:
      return 'Wrong e-mail or password.';
    case 403:
      return 'This account may not sign in' + (p.detail ? ': ' + p.detail : '.');
    case 404:
      return 'There is no site "' + site + '".';
    case 429:
      return (
        'Too many sign-in attempts. Try again ' + (err.retryAfter ? 'in ' + err.retryAfter + ' s.' : 'in a while.')
      );
  }
  const fields = Array.isArray(p.errors) ? p.errors.filter((x) => x && x.message) : [];
  if (fields.length) return fields.map((x) => (x.field ? x.field + ': ' : '') + x.message).join(' ');
  return 'Could not sign in: ' + errText(err);
}

let signingIn = false;

$('signin-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const site = $('signin-site').value.trim();
  const email = $('signin-email').value.trim();
  const password = $('signin-password').value;
  if (signingIn || !site || !email || !password) return;
  signingIn = true;
  $('signin-submit').disabled = true;
  $('signin-error').textContent = '';
  try {
    const s = await apiFetch('POST', '/v1/sites/' + encodeURIComponent(site) + '/sessions', {
      body: { email, password },
      token: null
    });
    if (!s || typeof s.token !== 'string' || !s.token) throw new Error('the gateway gave no token');
    $('signin-password').value = '';
    localStorage.removeItem(SESSION_KEY);
    if (s.session != null) localStorage.setItem(SESSION_KEY, JSON.stringify({ site, id: String(s.session) }));
    signedIn(s.token);
  } catch (err) {
    $('signin-error').textContent = signinError(err, site);
    $('signin-password').select();
    $('signin-password').focus();
  } finally {
    signingIn = false;
    $('signin-submit').disabled = false;
  }
});

$('token-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const tok = $('token-input').value.trim();
  if (!tok) return;
  $('token-input').value = '';
  localStorage.removeItem(SESSION_KEY);
  signedIn(tok);
});

$('signout').addEventListener('click', async () => {
  $('signout').disabled = true;
  const tok = localStorage.getItem(TOKEN_KEY);
  const session = storedSession();
  forgetSignin();
  if (st.client) st.client.disconnect();
  // A session made with the password is revoked, so its token is no good anywhere any more. Not
  // reached (or already over): signed out here all the same, and the token expires in its time.
  if (session) {
    const path = '/v1/sites/' + encodeURIComponent(session.site) + '/sessions/' + encodeURIComponent(session.id);
    try {
      await apiFetch('DELETE', path, { token: tok, timeout: 5000 });
    } catch (err) {
      if (err.status !== 404 && err.status !== 401) console.warn('The session was not revoked: ' + errText(err));
    }
  }
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
    forgetSignin();
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
