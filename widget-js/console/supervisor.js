// The operators and what supervisors do: every operator's status, presence and load (kept for
// operators too: the transfer dialog lists them, and the gateway confirms my own status here;
// supervisors are in the list too, marked), the live list of active conversations (`active`:
// who holds each, how long its visitor has waited for an answer, ticking here, when they last
// wrote, the first response time) with take over, reassign and close on each, assigning a
// waiting visitor to an operator, taking a conversation over (it becomes one of my chats, and
// I can write in it), watching any conversation read-only (and stopping), and lifting a ban by
// visitor id.

import {
  $, st, h, toast, ago, chats, errText, isSup, conv, visitorName, upsertMine, shortId, clock, messageText,
  apiFetch, sitePath, outcomeCatalogue, outcomeName
} from './core.js';
import { renderStatus } from './settings.js';
import { select, dismiss } from './conversation.js';
import { askClose } from './actions.js';
import { showAdmin } from './admin.js';

// ------------------------------------------------------------------ operators

export function onOperator(f) {
  st.operators.set(f.id, {
    id: f.id,
    name: typeof f.name === 'string' && f.name ? f.name : f.id,
    status: f.status,
    online: f.online,
    load: f.load,
    supervisor: f.supervisor === true
  });
  if (st.me && f.id === st.me.id) {
    st.status = st.serverStatus = f.status;
    renderStatus();
  }
  renderOperators();
  refillAssignMenus();
  // A load changed: a conversation moved (a transfer between others tells me nothing else).
  refreshActive();
}

export function renderOperators() {
  if (!isSup()) return;
  const ul = $('operators-list');
  ul.replaceChildren();
  for (const o of Array.from(st.operators.values()).sort((a, b) => a.name.localeCompare(b.name))) {
    const status = o.online ? o.status : 'offline';
    const name = o.name + (st.me && o.id === st.me.id ? ' (me)' : '');
    // A supervisor has no routing status: only whether it is here, and what it took over.
    const sub = (o.supervisor ? (o.online ? 'online' : 'offline') : status) + ' · ' + chats(o.load);
    ul.append(
      h('li', { class: 'item', 'data-testid': 'operator-item', 'data-operator': o.id }, [
        h('span', { class: 'dot ' + (o.supervisor ? (o.online ? 'online' : 'offline') : status) }),
        h('div', { class: 'main' }, [
          h('div', { class: 'name' }, [
            name,
            o.supervisor ? h('span', { class: 'pill', 'data-testid': 'operator-supervisor', text: 'supervisor' }) : null
          ]),
          h('div', { class: 'sub', text: sub })
        ])
      ])
    );
  }
}

// ------------------------------------------------------------------ the assign menu

/**
 * A menu of the operators a conversation can be handed to (supervisors left out, and whoever
 * holds it now; offline operators shown but not choosable). Filled at once from what is known
 * and again whenever an `operator` frame comes.
 */
export function assignMenu(c, testid, label) {
  const sel = h('select', {
    class: 'btn small',
    'data-testid': testid,
    'data-assign': c.id,
    'data-holder': (c.operator && c.operator.id) || '',
    'data-label': label,
    'aria-label': label + ': ' + visitorName(c),
    onclick: (e) => e.stopPropagation(),
    onkeydown: (e) => e.stopPropagation()
  });
  fillAssignMenu(sel);
  sel.addEventListener('change', () => {
    const to = sel.value;
    sel.value = '';
    // Picked: the menu lets go of the focus, so the list it is in may be redrawn.
    sel.blur();
    if (to) assign(c.id, to);
  });
  return sel;
}

function fillAssignMenu(sel) {
  const holder = sel.dataset.holder;
  const ops = Array.from(st.operators.values())
    .filter((o) => !o.supervisor && o.id !== holder)
    .sort((a, b) => a.name.localeCompare(b.name));
  sel.replaceChildren(
    h('option', { value: '', text: sel.dataset.label + '…' }),
    ...ops.map((o) => {
      const status = o.online ? o.status : 'offline';
      return h('option', { value: o.id, disabled: !o.online, text: o.name + ' (' + status + ', ' + o.load + ')' });
    })
  );
}

/** The operators changed: every assign menu shows them, except one in use (it would close). */
function refillAssignMenus() {
  for (const sel of document.querySelectorAll('select[data-assign]')) {
    if (document.activeElement !== sel) fillAssignMenu(sel);
  }
}

/** The answer's Conversation has the protocol client follow it: only mine is followed. */
const unfollow = (id) => !st.mine.has(id) && st.client.forget(id);

export function assign(id, operator) {
  st.client.assign(id, operator).then(
    () => {
      unfollow(id);
      toast('Assigned.');
      refreshActive();
    },
    (err) => toast('Could not assign: ' + errText(err))
  );
}

// ------------------------------------------------------------------ take over

/** The supervisor becomes the conversation's operator: it is one of my chats, open to write. */
export function takeover(id) {
  // A double click asks once; my own request brings no "assigned to you" alert.
  if (st.accepting.has(id)) return;
  st.accepting.add(id);
  st.client
    .request({ t: 'takeover', conv: id })
    .then(
      (ok) => {
        const c =
          ok.conv && typeof ok.conv === 'object'
            ? ok.conv
            : Object.assign({}, conv(id), { state: 'active', operator: { id: st.me.id, name: st.me.name } });
        // No longer only watched: it is mine to answer.
        st.watched.delete(id);
        upsertMine(c);
        select(id);
        refreshActive();
      },
      (err) => {
        const why = { conflict: 'it is already yours', capacity: 'you hold as many chats as you may' }[err.code];
        toast('Could not take over: ' + (why || errText(err)));
      }
    )
    .finally(() => st.accepting.delete(id));
}

$('conv-takeover').addEventListener('click', () => st.selected && takeover(st.selected));

// ------------------------------------------------------------------ active conversations

let activeBusy = false;
let activeAgain = false;

/**
 * Asks for the site's active conversations (supervisors). One request at a time: events that
 * come while it is on its way ask for one more after it, however many they are.
 */
export function refreshActive() {
  if (!isSup() || !st.client || !st.client.ready) return;
  if (activeBusy) {
    activeAgain = true;
    return;
  }
  activeBusy = true;
  activeAgain = false;
  st.client
    .request({ t: 'active' })
    .then(
      (ok) => {
        const list = (Array.isArray(ok.conversations) ? ok.conversations : []).filter(
          (c) => c && typeof c.id === 'string' && c.visitor && typeof c.visitor === 'object'
        );
        st.active = { list, count: Math.max(typeof ok.count === 'number' ? ok.count : 0, list.length), error: '' };
        renderActive();
      },
      (err) => {
        if (err.code === 'disconnected') return;
        st.active.error = 'Could not load the active conversations: ' + errText(err);
        renderActive();
      }
    )
    .finally(() => {
      activeBusy = false;
      if (activeAgain) refreshActive();
    });
}

let soonTimer = null;

/** Messages come often: they ask for the list again at most once a second. */
export function refreshActiveSoon() {
  if (!isSup() || soonTimer) return;
  soonTimer = setTimeout(() => {
    soonTimer = null;
    refreshActive();
  }, 1000);
}

/** A duration in words: `45 s`, `2 min 5 s`, `1 h 3 min`. */
function span(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return s + ' s';
  if (s < 3600) return Math.floor(s / 60) + ' min' + (s % 60 ? ' ' + (s % 60) + ' s' : '');
  return Math.floor(s / 3600) + ' h ' + Math.floor((s % 3600) / 60) + ' min';
}

const waitingText = (since) => 'waiting ' + span(Date.now() - since);
const wroteText = (ts) => 'visitor wrote ' + ago(ts) + ' ago';
const isTs = (v) => typeof v === 'number' && v > 0;

function activeRow(c) {
  const a = c.activity && typeof c.activity === 'object' ? c.activity : {};
  const mine = !!(c.operator && st.me && c.operator.id === st.me.id);
  const who = c.operator ? (mine ? 'me' : c.operator.name || c.operator.id) : 'nobody';
  const waiting = isTs(a.waiting_since)
    ? h('span', {
        class: 'waiting',
        'data-testid': 'active-waiting',
        'data-waiting': a.waiting_since,
        text: waitingText(a.waiting_since)
      })
    : h('span', { 'data-testid': 'active-waiting', text: 'answered' });
  const wrote = isTs(a.visitor_ts)
    ? h('span', { 'data-testid': 'active-visitor-ts', 'data-wrote': a.visitor_ts, text: wroteText(a.visitor_ts) })
    : h('span', { 'data-testid': 'active-visitor-ts', text: 'visitor has not written' });
  const first = h('span', {
    'data-testid': 'active-first-response',
    text: 'first reply ' + (typeof a.first_response_ms === 'number' ? 'in ' + span(a.first_response_ms) : '—')
  });
  const last = c.last_message && typeof c.last_message.text === 'string' ? c.last_message.text : '';
  const presence = c.visitor.online ? 'online' : 'away';
  const acts = [
    mine ? null : actButton('btn primary small', 'active-takeover', 'Take over', () => takeover(c.id)),
    assignMenu(c, 'active-assign', 'Reassign'),
    actButton('btn small danger', 'active-close', 'Close', () => askClose(c.id, c))
  ];
  return h(
    'li',
    {
      class: 'item stack' + (st.selected === c.id ? ' selected' : ''),
      'data-testid': 'active-item',
      'data-conv': c.id,
      'data-operator': (c.operator && c.operator.id) || '',
      tabindex: '0',
      title: 'Open (watch) this conversation',
      onclick: () => openActive(c.id),
      onkeydown: (e) => e.key === 'Enter' && e.target === e.currentTarget && openActive(c.id)
    },
    [
      h('span', { class: 'dot ' + presence, title: 'visitor ' + presence }),
      h('div', { class: 'main' }, [
        h('div', { class: 'name' }, [
          visitorName(c),
          h('span', { class: 'pill', 'data-testid': 'active-operator', text: who })
        ]),
        h('div', { class: 'sub' }, [waiting]),
        h('div', { class: 'sub' }, [wrote]),
        h('div', { class: 'sub' }, [first]),
        last ? h('div', { class: 'sub last', 'data-testid': 'active-last', title: last, text: last }) : null
      ]),
      h('div', { class: 'acts' }, acts)
    ]
  );
}

/** A small button in a list item that does not also open the item. */
const actButton = (cls, testid, text, act) =>
  h('button', {
    class: cls,
    type: 'button',
    'data-testid': testid,
    text,
    onclick: (e) => (e.stopPropagation(), act())
  });

/** An active conversation opened from the list: mine is selected, another one watched. */
function openActive(id) {
  if (st.mine.has(id)) select(id);
  else watch(id);
}

let activeDirty = false;

export function renderActive() {
  if (!isSup()) return;
  const ul = $('active-list');
  // Not redrawn under the supervisor's hand (an open Reassign menu would close): after it.
  if (ul.contains(document.activeElement) && document.activeElement.tagName === 'SELECT') {
    activeDirty = true;
    return;
  }
  activeDirty = false;
  const { list, count, error } = st.active;
  ul.replaceChildren(...list.map(activeRow));
  if (count > list.length) {
    ul.append(h('li', { class: 'empty', 'data-testid': 'active-more', text: '+ ' + (count - list.length) + ' more' }));
  }
  $('active-count').textContent = count;
  $('active-empty').hidden = count > 0 && !error;
  $('active-empty').textContent = error || 'No active conversations.';
}

$('active-list').addEventListener('focusout', () => activeDirty && setTimeout(renderActive));

// Every few seconds, as well as after each event that may have moved a conversation (the
// connection's handlers call refreshActive); the times tick every second in between.
setInterval(refreshActive, 5000);
setInterval(() => {
  for (const el of document.querySelectorAll('[data-waiting]')) el.textContent = waitingText(+el.dataset.waiting);
  for (const el of document.querySelectorAll('[data-wrote]')) el.textContent = wroteText(+el.dataset.wrote);
}, 1000);

// ------------------------------------------------------------------ watching

/** A stand-in for a watched conversation the gateway did not describe. */
const unknownConv = (id) => ({
  id,
  site: st.me.site,
  queue: '',
  state: 'active',
  visitor: { id: '', online: false },
  operator: null,
  last_seq: 0,
  tags: [],
  created_at: Date.now()
});

export function watch(id) {
  st.client.watch(id, true).then(
    (ok) => {
      st.watched.add(id);
      const c = ok.conv && typeof ok.conv === 'object' ? ok.conv : conv(id) || unknownConv(id);
      st.mine.set(id, c);
      select(id);
    },
    (err) => toast('Could not watch: ' + errText(err))
  );
}

$('watch-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const id = $('watch-id').value.trim();
  if (id) watch(id);
  $('watch-id').value = '';
});

$('conv-unwatch').addEventListener('click', () => {
  const id = st.selected;
  st.client.watch(id, false).catch(() => {});
  st.watched.delete(id);
  dismiss(id);
});

$('unban-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const visitor = $('unban-id').value.trim();
  if (!visitor) return;
  st.client.request({ t: 'unban', visitor }).then(
    () => {
      $('unban-id').value = '';
      toast('Visitor ' + visitor + ' may chat again.');
    },
    (err) => toast('Could not unban: ' + errText(err))
  );
});

// ------------------------------------------------------------------ pages: history and Итоги
//
// Two pages beside the chats, read from the HTTP API v1 (same origin, `Bearer` the console's
// staff token): History — the archive's conversations (supervisors: the site's; operators: the
// ones they held, the API decides), searched and filtered, each opened with its details, events,
// whole transcript and (supervisors) the visitor's other conversations; and Итоги, supervisors
// only — the summary by day with a bar chart, by operator and by queue. They live here because
// the gateway serves a fixed list of console files; every value goes into the page as text.

const DAY = 86400000;

/** GET `/v1/sites/{site}` + `path` as the signed-in staff member; a problem+json is thrown. */
const api = (path) => apiFetch('GET', sitePath(path));

const qs = (o) => {
  const u = new URLSearchParams();
  for (const k in o) if (o[k] != null && o[k] !== '') u.set(k, String(o[k]));
  const s = u.toString();
  return s ? '?' + s : '';
};
const when = (ts) => (ts ? new Date(ts).toLocaleString([], { dateStyle: 'short', timeStyle: 'short' }) : '—');
export function dur(ms) {
  if (ms == null) return '—';
  const s = Math.round(ms / 1000);
  if (s < 60) return s + ' s';
  if (s < 3600) return Math.floor(s / 60) + ' min ' + (s % 60) + ' s';
  return Math.floor(s / 3600) + ' h ' + Math.round((s % 3600) / 60) + ' min';
}
/** The browser's UTC offset like `+03:00`. */
export function utcOffset(date = new Date()) {
  const m = -date.getTimezoneOffset();
  const a = Math.abs(m);
  return (m < 0 ? '-' : '+') + String(Math.floor(a / 60)).padStart(2, '0') + ':' + String(a % 60).padStart(2, '0');
}
/** A date input's value (local midnight) in ms; `end` adds a day (the whole day included). */
const dayMs = (v, end) => (v ? new Date(v + 'T00:00:00').getTime() + (end ? DAY : 0) : null);
const dayValue = (ms) => {
  const d = new Date(ms);
  return d.getFullYear() + '-' + String(d.getMonth() + 1).padStart(2, '0') + '-' + String(d.getDate()).padStart(2, '0');
};
function showError(id, e) {
  const el = $(id);
  el.hidden = !e;
  el.textContent = e ? errText(e) : '';
}
const td = (text, attrs) => h('td', Object.assign({ text: text == null ? '' : String(text) }, attrs));

// --- switching pages

// Each page: its element, whether it is for supervisors only, and what showing it does (the
// first time: load it). The admin page is admin.js's.
const PAGES = {
  chats: null,
  history: { el: 'history-page', show: () => (historyOutcomes(), hist.loaded || searchHistory()) },
  reports: { el: 'reports-page', sup: true, show: () => reportsLoaded || loadReports() },
  admin: { el: 'admin-page', sup: true, show: showAdmin }
};
export function showPage(name) {
  if (!Object.hasOwn(PAGES, name) || (PAGES[name] && PAGES[name].sup && !isSup())) name = 'chats';
  document.querySelector('main.app').hidden = name !== 'chats';
  for (const k in PAGES) if (PAGES[k]) $(PAGES[k].el).hidden = k !== name;
  for (const b of document.querySelectorAll('.tabs .tab')) {
    if (b.dataset.page === name) b.setAttribute('aria-current', 'page');
    else b.removeAttribute('aria-current');
  }
  if (PAGES[name]) PAGES[name].show();
}

for (const b of document.querySelectorAll('.tabs .tab')) b.addEventListener('click', () => showPage(b.dataset.page));

// --- History

const hist = { cursor: null, loaded: false, seq: 0, open: null };

// The console's own outcomes for the filter, for a site without a list of its own.
const consoleOutcomes = Array.from($('h-outcome').options, (o) => o.cloneNode(true));

/** The outcome filter offers the site's outcomes when it keeps a list (the choice is kept). */
function historyOutcomes() {
  const sel = $('h-outcome');
  const was = sel.value;
  const list = outcomeCatalogue();
  const opts = list
    ? [h('option', { value: '', text: 'any' })].concat(
        list.map((o) => h('option', { value: o.id, text: outcomeName(o.id) }))
      )
    : consoleOutcomes.map((o) => o.cloneNode(true));
  sel.replaceChildren(...opts);
  if (Array.from(sel.options).some((o) => o.value === was)) sel.value = was;
}

function historyQuery() {
  const v = (id) => $(id).value.trim();
  return {
    q: v('h-q'),
    state: v('h-state'),
    queue: v('h-queue'),
    operator: v('h-operator'),
    tag: v('h-tag'),
    outcome: v('h-outcome'),
    from: dayMs(v('h-from')),
    to: dayMs(v('h-to'), true)
  };
}

async function searchHistory(more) {
  const seq = ++hist.seq;
  const q = historyQuery();
  if (more) q.cursor = hist.cursor;
  q.limit = 50;
  $('history-more').disabled = true;
  let res;
  try {
    res = await api('/conversations' + qs(q));
  } catch (e) {
    if (seq !== hist.seq) return;
    showError('history-error', e);
    $('history-more').disabled = false;
    return;
  }
  if (seq !== hist.seq) return;
  hist.loaded = true;
  showError('history-error', null);
  const rows = $('history-rows');
  if (!more) rows.replaceChildren();
  for (const c of res.items || []) rows.append(historyRow(c));
  hist.cursor = res.next_cursor || null;
  $('history-more').hidden = !hist.cursor;
  $('history-more').disabled = false;
  $('history-empty').hidden = rows.children.length > 0;
  // What the list shows now: the search it answers, and which (tests wait on these).
  rows.dataset.q = q.q || '';
  rows.dataset.seq = String(seq);
}

function historyRow(c) {
  const v = c.visitor || {};
  const tr = h('tr', { 'data-testid': 'history-row', 'data-conv': c.id, tabindex: 0 }, [
    td(v.name || 'Visitor ' + shortId(v.id), { title: v.id || '' }),
    td(c.operator ? c.operator.name || c.operator.id : '—'),
    td(when(c.created_at)),
    td(c.state, { 'data-testid': 'history-state-cell' }),
    td(c.outcome ? outcomeName(c.outcome) : '—', {
      'data-testid': 'history-outcome-cell',
      'data-outcome': c.outcome || ''
    }),
    td((c.tags || []).join(', ')),
    td(c.message_count),
    td(dur(c.first_response_ms))
  ]);
  const open = () => openHistory(c.id, tr);
  tr.addEventListener('click', open);
  tr.addEventListener('keydown', (e) => {
    if (e.key === 'Enter') open();
  });
  return tr;
}

async function openHistory(id, tr) {
  hist.open = id;
  for (const r of $('history-rows').children) r.removeAttribute('aria-selected');
  if (tr) tr.setAttribute('aria-selected', 'true');
  const box = $('history-detail');
  box.hidden = false;
  box.dataset.conv = id;
  box.replaceChildren(h('p', { class: 'empty', text: 'Loading…' }));
  const base = '/conversations/' + encodeURIComponent(id);
  try {
    const d = await api(base);
    const msgs = [];
    let cursor = null;
    for (let i = 0; i < 100; i++) {
      const part = await api(base + '/messages' + qs({ limit: 500, cursor }));
      msgs.push(...(part.items || []));
      cursor = part.next_cursor;
      if (!cursor) break;
    }
    if (hist.open !== id) return;
    renderHistoryDetail(d, msgs);
  } catch (e) {
    if (hist.open !== id) return;
    const text = errText(e);
    box.replaceChildren(h('p', { class: 'err', 'data-testid': 'history-detail-error', role: 'alert', text }));
  }
}

function renderHistoryDetail(d, msgs) {
  const box = $('history-detail');
  const v = d.visitor || {};
  const dl = (pairs, testid) =>
    h(
      'dl',
      { 'data-testid': testid },
      pairs.flatMap(([k, val]) => [
        h('dt', { text: k }),
        h('dd', { text: val == null || val === '' ? '—' : String(val) })
      ])
    );
  const obj = (o) => Object.entries(o && typeof o === 'object' ? o : {}).map(([k, val]) => [k, val]);
  const kids = [
    h('h2', { 'data-testid': 'history-detail-title', text: (v.name || 'Visitor ' + shortId(v.id)) + ' · ' + d.state }),
    dl(
      [
        ['Conversation', d.id],
        ['Visitor', v.id],
        ['E-mail', v.email],
        ['Queue', d.queue],
        ['Operator', d.operator ? d.operator.name || d.operator.id : ''],
        ['Created', when(d.created_at)],
        ['Closed', d.closed_at ? when(d.closed_at) : ''],
        ['Outcome', d.outcome ? outcomeName(d.outcome) : ''],
        ['Tags', (d.tags || []).join(', ')],
        ['Messages', d.message_count],
        ['First response', dur(d.first_response_ms)],
        ['Wait', dur(d.wait_ms)],
        ['Duration', dur(d.duration_ms)]
      ],
      'history-facts'
    )
  ];
  const params = obj(d.params);
  if (params.length) kids.push(h('h3', { text: 'Parameters' }), dl(params, 'history-params'));
  const pre = obj(d.prechat);
  if (pre.length) kids.push(h('h3', { text: 'Pre-chat form' }), dl(pre, 'history-prechat'));
  kids.push(
    h('h3', { text: 'Events' }),
    h(
      'ol',
      { 'data-testid': 'history-events' },
      (d.events || []).map((ev) =>
        h('li', {
          'data-testid': 'history-event',
          'data-type': ev.type,
          text:
            clock(ev.ts) +
            ' ' +
            ev.type +
            (ev.by ? ' by ' + ev.by : '') +
            (ev.to ? ' → ' + ev.to : '') +
            (ev.reason ? ' (' + ev.reason + ')' : '')
        })
      )
    ),
    h('h3', { text: 'Transcript' }),
    h(
      'ol',
      { 'data-testid': 'history-transcript' },
      msgs.map((m) => {
        const from = m.from || {};
        const named = from.name || from.id || from.role || '';
        const who = from.role === 'system' ? 'system' : from.role === 'visitor' ? 'Visitor' : named;
        return h('li', { class: 'h-msg', 'data-testid': 'history-msg', 'data-role': from.role || '' }, [
          h('span', { class: 'who', text: clock(m.ts) + ' ' + who }),
          h('span', { class: 'text', text: messageText(m) })
        ]);
      })
    )
  );
  const others = h('div', { 'data-testid': 'history-visitor' });
  if (isSup() && v.id) {
    kids.push(h('h3', { text: "The visitor's conversations" }), others);
    loadVisitor(v.id, d.id, others);
  }
  box.replaceChildren(...kids);
}

async function loadVisitor(id, current, el) {
  try {
    const t = await api('/visitors/' + encodeURIComponent(id));
    const list = (t.conversations || []).filter((c) => c.id !== current);
    el.replaceChildren(
      t.banned ? h('p', { class: 'err', text: 'Banned' }) : '',
      h('div', { class: 'row' }, [
        h('button', {
          class: 'btn small',
          type: 'button',
          'data-testid': 'visitor-export',
          text: 'Export data',
          onclick: () => exportVisitor(id)
        }),
        h('button', {
          class: 'btn small danger',
          type: 'button',
          'data-testid': 'visitor-erase',
          text: 'Erase visitor…',
          onclick: () => askErase(id)
        })
      ]),
      list.length
        ? h(
            'ul',
            {},
            list.map((c) =>
              h('li', {}, [
                h('a', {
                  href: '#',
                  'data-testid': 'history-visitor-conv',
                  text: when(c.created_at) + ' · ' + c.state + (c.outcome ? ' · ' + c.outcome : ''),
                  onclick: (e) => {
                    e.preventDefault();
                    openHistory(c.id, null);
                  }
                })
              ])
            )
          )
        : h('p', { class: 'empty', text: 'No other conversations.' })
    );
  } catch (e) {
    el.replaceChildren(h('p', { class: 'empty', text: e.status === 403 ? 'Not available to you.' : errText(e) }));
  }
}

/** Downloads everything the archive keeps about a visitor, as JSON (the right of access). */
async function exportVisitor(id) {
  try {
    const data = await api('/visitors/' + encodeURIComponent(id) + '/export');
    const blob = new Blob([JSON.stringify(data, null, 2)], { type: 'application/json' });
    const a = h('a', { href: URL.createObjectURL(blob), download: 'visitor-' + id + '.json' });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 60000);
  } catch (e) {
    toast('Could not export: ' + errText(e));
  }
}

let erasing = null; // the visitor id the erase dialog asks about

function askErase(id) {
  erasing = id;
  $('erase-confirm-text').textContent =
    'Their name, contact details, parameters and every message they wrote are removed from the ' +
    'archive for good; counts in reports stay. Visitor ' + id + '.';
  $('erase-confirm').returnValue = '';
  $('erase-confirm').showModal();
}

$('erase-confirm').addEventListener('close', async () => {
  const id = erasing;
  erasing = null;
  if ($('erase-confirm').returnValue !== 'ok' || !id) return;
  try {
    await apiFetch('DELETE', sitePath('/visitors/' + encodeURIComponent(id)));
    toast('Visitor ' + id + ' erased.');
    if (hist.open) openHistory(hist.open, null);
  } catch (e) {
    toast('Could not erase: ' + errText(e));
  }
});

$('history-form').addEventListener('submit', (e) => {
  e.preventDefault();
  hist.cursor = null;
  searchHistory(false);
});
$('history-more').addEventListener('click', () => searchHistory(true));

// --- Итоги (supervisors)

let reportsLoaded = false;
let reportsSeq = 0;

{
  const now = Date.now();
  $('r-to').value = dayValue(now);
  $('r-from').value = dayValue(now - 6 * DAY);
}

async function loadReports() {
  const seq = ++reportsSeq;
  const range = { from: dayMs($('r-from').value), to: dayMs($('r-to').value, true) };
  const offset = utcOffset(new Date(range.from || Date.now()));
  try {
    const [days, queues, ops] = await Promise.all([
      api('/reports/summary' + qs({ ...range, group_by: 'day', utc_offset: offset })),
      api('/reports/summary' + qs({ ...range, group_by: 'queue', utc_offset: offset })),
      api('/reports/operators' + qs(range))
    ]);
    if (seq !== reportsSeq) return;
    reportsLoaded = true;
    showError('reports-error', null);
    $('reports-body').replaceChildren(
      h('h3', { text: 'By day' }),
      chart(days.rows || []),
      summaryTable(days, 'Day', 'reports-days'),
      h('h3', { text: 'By operator' }),
      operatorsTable(ops.operators || []),
      h('h3', { text: 'By queue' }),
      summaryTable(queues, 'Queue', 'reports-queues')
    );
  } catch (e) {
    if (seq !== reportsSeq) return;
    showError('reports-error', e);
  }
}

function table(testid, head, rows) {
  return h('table', { class: 'grid', 'data-testid': testid }, [
    h('thead', {}, [h('tr', {}, head.map((t) => h('th', { text: t })))]),
    h('tbody', {}, rows)
  ]);
}

const pc = (p) => dur(p && p.p50) + ' / ' + dur(p && p.p90);

function summaryTable(s, what, testid) {
  const row = (r, total) =>
    h('tr', { 'data-testid': total ? 'report-total' : 'report-row', 'data-key': total ? '' : r.key }, [
      td(total ? 'Total' : r.key || '—'),
      td(r.started, { 'data-col': 'started' }),
      td(r.answered, { 'data-col': 'answered' }),
      td(r.missed, { 'data-col': 'missed' }),
      td(r.abandoned, { 'data-col': 'abandoned' }),
      td(pc(r.first_response_ms)),
      td(pc(r.wait_ms))
    ]);
  const rows = (s.rows || []).map((r) => row(r, false));
  if (s.totals) rows.push(row(s.totals, true));
  return table(
    testid,
    [what, 'Started', 'Answered', 'Missed', 'Abandoned', 'First response p50 / p90', 'Wait p50 / p90'],
    rows
  );
}

function operatorsTable(list) {
  return table(
    'reports-operators',
    ['Operator', 'Conversations', 'Answered', 'Online', 'Active', 'First response p50'],
    list.map((o) =>
      h('tr', { 'data-testid': 'report-operator', 'data-operator': o.operator }, [
        td(o.name || o.operator),
        td(o.conversations, { 'data-col': 'conversations' }),
        td(o.answered, { 'data-col': 'answered' }),
        td(dur(o.online_ms)),
        td(dur(o.active_ms)),
        td(dur(o.first_response_ms && o.first_response_ms.p50))
      ])
    )
  );
}

/** Started (blue) and answered (green) per day, as CSS bars. */
function chart(rows) {
  const max = Math.max(1, ...rows.map((r) => r.started || 0));
  const bar = (n, cls) =>
    h('div', {
      class: 'bar ' + cls,
      'data-testid': 'chart-' + cls,
      style: 'height:' + Math.round((100 * (n || 0)) / max) + '%',
      title: cls + ': ' + n
    });
  return h(
    'div',
    { class: 'chart', 'data-testid': 'reports-chart', role: 'img', 'aria-label': 'Started and answered per day' },
    rows.map((r) =>
      h('div', { class: 'day' }, [
        h('div', { class: 'bars' }, [bar(r.started, 'started'), bar(r.answered, 'answered')]),
        h('span', { text: String(r.key).slice(5) })
      ])
    )
  );
}

$('reports-form').addEventListener('submit', (e) => {
  e.preventDefault();
  loadReports();
});
