// The operators and what supervisors do: every operator's status, presence and load (kept for
// operators too: the transfer dialog lists them, and the gateway confirms my own status here;
// supervisors are in the list too, marked), the live list of active conversations (`active`:
// who holds each, how long its visitor has waited for an answer, ticking here, when they last
// wrote, the first response time) with take over, reassign and close on each, assigning a
// waiting visitor to an operator, taking a conversation over (it becomes one of my chats, and
// I can write in it), watching any conversation read-only (and stopping), and lifting a ban by
// visitor id.

import { $, st, h, toast, ago, chats, errText, isSup, conv, visitorName, upsertMine } from './core.js';
import { renderStatus } from './settings.js';
import { select, dismiss } from './conversation.js';
import { askClose } from './actions.js';

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
