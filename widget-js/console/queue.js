// The queue screen: offers made to me (with their countdown) and every visitor waiting in the
// site's queues (longest waiting first), the alerts of new arrivals, and accepting or declining.
// Supervisors, who cannot accept, get take over, assign and watch on each waiting visitor
// instead (supervisor.js).

import {
  $, st, h, toast, ago, visitorName, errText, isSup, queued, conv, upsertMine, offlineBadge, shownParams
} from './core.js';
import { beep, notify } from './settings.js';
import { select, peek, fetchPeek, renderView } from './conversation.js';
import { assignMenu, takeover, watch } from './supervisor.js';
import { renderAll } from './connection.js';

// ------------------------------------------------------------------ server events

export function onQueue(f) {
  const waiting = f.waiting || [];
  st.queues.set(f.queue, waiting);
  st.queueCounts.set(f.queue, typeof f.count === 'number' ? f.count : waiting.length);
  // An offer without a known expiry is over once a complete listing of its queue no longer
  // shows it offered (requeued after it lapsed, taken, closed). Offers that have an expiry
  // go by it: a listing may have been made before their `offer` frame.
  const complete = !(f.count > waiting.length);
  for (const [id, o] of st.offers) {
    if (!complete || o.expires_at || o.conv.queue !== f.queue) continue;
    const listed = waiting.find((c) => c.id === id);
    if (!listed || listed.state !== 'offered') st.offers.delete(id);
  }
  for (const c of waiting) {
    if (st.seenQueued.has(c.id)) continue;
    st.seenQueued.add(c.id);
    // The snapshot right after (re)connecting is not news; what arrives later is.
    if (st.primedQueues.has(f.queue)) {
      beep(880);
      const where = (c.visitor.preview && c.visitor.preview.page_url) || f.queue;
      notify('New visitor waiting', visitorName(c) + ' · ' + where, c.id);
    }
  }
  st.primedQueues.add(f.queue);
  const listed = st.peek && waiting.find((c) => c.id === st.peek.id);
  if (listed) refreshPeek(listed);
  if (st.peek && !queued(st.peek.id) && !st.mine.has(st.peek.id)) {
    // Someone else took the conversation we were looking at.
    if (st.selected === st.peek.id) {
      toast('This conversation was taken by another operator.');
      st.selected = null;
    }
    st.peek = null;
  }
  renderOffers();
  renderQueue();
  renderView();
}

/**
 * The peeked conversation listed again (the visitor wrote, or their page gave new details): the
 * listing's news at once, with the parameters the whole conversation had until the new answer
 * (a listing cannot say whether they changed).
 */
function refreshPeek(listed) {
  const params = (st.peek.visitor || {}).params;
  st.peek = Object.assign({}, st.peek, listed, { visitor: Object.assign({}, listed.visitor, { params }) });
  fetchPeek(listed.id);
}

export function onOffer(f) {
  // An offer welcome already listed comes again with its deadline: no second alert.
  const known = st.offers.has(f.conv.id);
  st.offers.set(f.conv.id, { conv: f.conv, expires_at: f.expires_at });
  if (!known) {
    beep(990);
    notify('Conversation offered to you', visitorName(f.conv), f.conv.id);
  }
  renderOffers();
}

// ------------------------------------------------------------------ rendering

/** A small button in a list item that does not also select the item. */
const itemButton = (cls, testid, text, act) =>
  h('button', {
    class: cls,
    type: 'button',
    'data-testid': testid,
    text,
    onclick: (e) => (e.stopPropagation(), act())
  });

const secondsLeft = (expiresAt) => Math.max(0, Math.round((expiresAt - Date.now()) / 1000));

export function renderOffers() {
  const ul = $('offer-list');
  ul.replaceChildren();
  for (const { conv: c, expires_at } of st.offers.values()) {
    const left = expires_at ? secondsLeft(expires_at) : null;
    const where = (c.visitor.preview && c.visitor.preview.page_url) || c.queue;
    const countdown = expires_at ? h('span', { 'data-expires': expires_at, text: left + ' s left · ' }) : null;
    ul.append(
      h('li', { class: 'item', 'data-testid': 'offer-item', 'data-conv': c.id }, [
        h('div', { class: 'main' }, [
          h('div', { class: 'name', text: visitorName(c) }),
          h('div', { class: 'sub' }, [countdown, where]),
          lastMessage(c, 'offer-last'),
          previewParams(c, 'offer-params')
        ]),
        h('div', { class: 'acts' }, [
          itemButton('btn primary small', 'offer-accept', 'Accept', () => accept(c.id)),
          itemButton('btn small', 'offer-decline', 'Decline', () => decline(c.id))
        ])
      ])
    );
  }
  $('offers-section').hidden = st.offers.size === 0;
  $('offer-count').textContent = st.offers.size;
}

function allQueued() {
  const out = [];
  for (const list of st.queues.values()) for (const c of list) if (!st.mine.has(c.id)) out.push(c);
  return out.sort((a, b) => a.created_at - b.created_at);
}

/** A supervisor's controls on a waiting visitor: take it over, assign it to an operator, watch. */
function supervisorActs(c) {
  return [
    itemButton('btn primary small', 'queue-takeover', 'Take over', () => takeover(c.id)),
    assignMenu(c, 'queue-assign', 'Assign'),
    itemButton('btn small', 'queue-watch', 'Watch', () => watch(c.id))
  ];
}

/** The visitor's last message (at most 200 bytes, from the gateway), as text, on one line. */
function lastMessage(c, testid) {
  const m = c.last_message;
  if (!m || typeof m.text !== 'string' || !m.text) return null;
  return h('div', { class: 'sub last', 'data-testid': testid, title: m.text, text: m.text });
}

/**
 * The visitor's parameters that show in the preview of a waiting conversation, on one line,
 * under the catalogue's labels. An offer carries them; a queue listing leaves them out (the
 * conversation looked at from the queue shows them, fetched whole, in the visitor panel).
 */
function previewParams(c, testid) {
  const shown = shownParams(c.visitor && c.visitor.params, 'preview').filter(([, , v]) => v != null && v !== '');
  if (!shown.length) return null;
  const text = shown.map(([, label, v]) => label + ': ' + v).join(' · ');
  return h('div', { class: 'sub last', 'data-testid': testid, title: text, text });
}

export function renderQueue() {
  const ul = $('queue-list');
  const list = allQueued();
  const multi = st.queues.size > 1;
  ul.replaceChildren();
  for (const c of list) {
    const pv = c.visitor.preview || {};
    // Supervisors do not accept (the gateway would refuse): they take over or assign.
    const acts = isSup()
      ? supervisorActs(c)
      : [itemButton('btn primary small', 'queue-accept', 'Accept', () => accept(c.id))];
    const item = {
      // A supervisor's three controls go in a row under the details.
      class: 'item' + (isSup() ? ' stack' : '') + (st.selected === c.id ? ' selected' : ''),
      'data-testid': 'queue-item',
      'data-conv': c.id,
      tabindex: '0',
      onclick: () => peek(c),
      onkeydown: (e) => e.key === 'Enter' && e.target === e.currentTarget && peek(c)
    };
    ul.append(
      h('li', item, [
        h('span', {
          class: 'dot ' + (c.visitor.online ? 'online' : 'offline'),
          title: c.visitor.online ? 'online' : 'away'
        }),
        h('div', { class: 'main' }, [
          h('div', { class: 'name' }, [
            visitorName(c),
            multi ? h('span', { class: 'pill', text: c.queue }) : null,
            c.previous ? h('span', { class: 'pill', text: 'returning' }) : null,
            offlineBadge(c)
          ]),
          h('div', { class: 'sub' }, [
            h('span', { 'data-since': c.created_at, text: 'waiting ' + ago(c.created_at) }),
            pv.page_url ? ' · ' + pv.page_url : null
          ]),
          lastMessage(c, 'queue-last'),
          previewParams(c, 'queue-params')
        ]),
        h('div', { class: 'acts' }, acts)
      ])
    );
  }
  // A listing carries the longest waiting that fit in one frame; `count` says how many wait.
  let total = 0;
  for (const [q, n] of st.queueCounts) total += n - (st.queues.get(q) || []).filter((c) => st.mine.has(c.id)).length;
  total = Math.max(total, list.length);
  if (total > list.length) {
    ul.append(
      h('li', { class: 'empty', 'data-testid': 'queue-more', text: '+ ' + (total - list.length) + ' more waiting' })
    );
  }
  $('queue-count').textContent = total;
  $('queue-empty').hidden = total > 0;
}

// ------------------------------------------------------------------ actions

export function accept(id) {
  // A double click asks once.
  if (st.accepting.has(id)) return;
  st.accepting.add(id);
  const done = (ok) => {
    const c =
      ok.conv && typeof ok.conv === 'object'
        ? ok.conv
        : Object.assign({}, conv(id), { state: 'active', operator: { id: st.me.id, name: st.me.name } });
    upsertMine(c);
    st.offers.delete(id);
    select(c.id);
  };
  const failed = (err) => {
    st.offers.delete(id);
    if (err.code === 'taken') {
      toast('Another operator was faster: the conversation is taken.');
      for (const [q, list] of st.queues) {
        if (list.some((c) => c.id === id)) st.queueCounts.set(q, Math.max(0, (st.queueCounts.get(q) || 1) - 1));
        st.queues.set(q, list.filter((c) => c.id !== id));
      }
    } else if (err.code === 'capacity') toast('You are at your maximum number of chats.');
    else toast('Could not accept: ' + errText(err));
    renderAll();
  };
  st.client
    .accept(id)
    .then(done, failed)
    .finally(() => st.accepting.delete(id));
}

function decline(id) {
  st.offers.delete(id);
  renderOffers();
  st.client.decline(id).catch((err) => toast('Could not decline: ' + errText(err)));
}

// A queued conversation peeked at in the conversation view has its own Accept.
$('conv-accept').addEventListener('click', () => st.selected && accept(st.selected));

// Waiting times and offer countdowns tick in place (no re-render under the pointer).
setInterval(() => {
  for (const el of document.querySelectorAll('[data-since]')) el.textContent = 'waiting ' + ago(+el.dataset.since);
  for (const el of document.querySelectorAll('[data-expires]')) {
    el.textContent = secondsLeft(+el.dataset.expires) + ' s left · ';
  }
  let expired = false;
  for (const [id, o] of st.offers) if (o.expires_at && o.expires_at < Date.now() - 1000) expired = st.offers.delete(id);
  if (expired) renderOffers();
}, 1000);
