// The conversation screen: my chats (assigned to me, or watched) in the side list, and the open
// conversation: its header and state, its messages (history loaded by pages, the conversation
// it continues, my sends' states and the visitor's read receipts), the visitor's typing with
// the sneak peek, and reporting what I read. The reply box is composer.js; tags, transfer,
// close and ban are actions.js; the visitor's details are visitor.js.

import {
  $, st, h, toast, clock, visitorName, errText, conv, isReadOnly, upsertMine, entries, addEntry, storedEntry,
  saveDrafts, messageText, offlineBadge, seeRead
} from './core.js';
import { beep, notify } from './settings.js';
import { saveComposerDraft, closePicker, stopTyping } from './composer.js';
import { renderTags, renderActionButtons } from './actions.js';
import { renderVisitor } from './visitor.js';
import { renderAll } from './connection.js';

// A bot (an integration writing through the HTTP API) is shown like the staff, by its name.
const isStaffRole = (role) => role === 'operator' || role === 'supervisor' || role === 'bot';
const staffName = (from) =>
  from.name || (from.role === 'supervisor' ? 'Supervisor' : from.role === 'bot' ? 'Bot' : 'Operator');

// ------------------------------------------------------------------ server events

export function onConvEvent(event, c, reason) {
  const wasMine = st.mine.has(c.id);
  const isMine = upsertMine(c);
  if ((event === 'transferred' || event === 'assigned') && isMine && !wasMine && !st.accepting.has(c.id)) {
    // Handed to me by someone else (transfer, supervisor, auto routing): that is news.
    const note = reason && !/^(transfer|supervisor|reassigned)$/.test(reason) ? ': ' + reason : '.';
    toast('Conversation with ' + visitorName(c) + ' was ' + event + ' to you' + note);
    beep(880);
    notify('Conversation ' + event + ' to you', visitorName(c), c.id);
  } else if (wasMine && !isMine) {
    toast('Conversation with ' + visitorName(c) + ' left your list' + (reason ? ' (' + reason + ')' : '') + '.');
    if (st.selected === c.id) st.selected = null;
  }
  if (event !== 'offered' && st.offers.has(c.id) && c.state !== 'offered') st.offers.delete(c.id);
  if (event === 'closed' && st.selected === c.id) stopTyping();
  renderAll();
}

export function onMsg(m) {
  addEntry(m.conv, storedEntry(m));
  if (m.from.role === 'visitor') {
    const t = st.typing.get(m.conv);
    if (t) {
      clearTimeout(t.timer);
      st.typing.delete(m.conv);
    }
    const viewing = st.selected === m.conv && document.visibilityState === 'visible';
    if (!viewing) {
      st.unread.set(m.conv, (st.unread.get(m.conv) || 0) + 1);
      beep(660);
      notify(visitorName(conv(m.conv)), m.text, m.conv);
    }
  }
  if (st.selected === m.conv) {
    renderMessages();
    renderTyping();
    markRead();
  }
  renderMine();
}

export function onTyping(f) {
  if (f.from.role !== 'visitor') return;
  const old = st.typing.get(f.conv);
  if (old) clearTimeout(old.timer);
  if (f.on) {
    const timer = setTimeout(() => {
      st.typing.delete(f.conv);
      renderTyping();
      renderMine();
    }, 10000);
    st.typing.set(f.conv, { preview: f.preview || '', timer });
  } else st.typing.delete(f.conv);
  renderTyping();
  renderMine();
}

export function onRead(f) {
  if (!f.by || f.by.role !== 'visitor') return;
  if (seeRead(f.conv, { visitor: f.seq }) && st.selected === f.conv) renderMessages();
}

// ------------------------------------------------------------------ my chats

function lastText(id) {
  const m = st.msgs.get(id);
  if (!m || !m.size) return '';
  let last = null;
  for (const e of m.values()) if (!last || (e.seq || 1e15) >= (last.seq || 1e15)) last = e;
  if (!last) return '';
  const mineMsg = st.me && last.from.id === st.me.id && last.from.role !== 'visitor';
  const who = mineMsg ? 'You: ' : isStaffRole(last.from.role) ? staffName(last.from) + ': ' : '';
  return who + messageText(last);
}

export function renderMine() {
  const ul = $('my-list');
  ul.replaceChildren();
  const list = Array.from(st.mine.values()).sort(
    (a, b) => (a.state === 'closed') - (b.state === 'closed') || a.created_at - b.created_at
  );
  let open = 0;
  let unreadTotal = 0;
  for (const c of list) {
    if (c.state !== 'closed') open++;
    const n = st.unread.get(c.id) || 0;
    unreadTotal += n;
    const typing = st.typing.get(c.id);
    const closed = c.state === 'closed';
    const item = {
      class: 'item' + (st.selected === c.id ? ' selected' : '') + (closed ? ' closed' : ''),
      'data-testid': 'my-item',
      'data-conv': c.id,
      'data-state': c.state,
      tabindex: '0',
      'aria-current': st.selected === c.id ? 'true' : null,
      onclick: () => select(c.id),
      onkeydown: (e) => e.key === 'Enter' && e.target === e.currentTarget && select(c.id)
    };
    const dismissButton = h('button', {
      class: 'btn small',
      type: 'button',
      'aria-label': 'Dismiss',
      title: 'Dismiss',
      text: '×',
      onclick: (e) => (e.stopPropagation(), dismiss(c.id))
    });
    ul.append(
      h('li', item, [
        h('span', {
          class: 'dot ' + (c.visitor.online ? 'online' : 'away'),
          title: c.visitor.online ? 'visitor online' : 'visitor away'
        }),
        h('div', { class: 'main' }, [
          h('div', { class: 'name' }, [
            visitorName(c),
            st.watched.has(c.id) ? h('span', { class: 'pill', text: 'watching' }) : null,
            closed ? h('span', { class: 'pill', text: 'closed' }) : null,
            offlineBadge(c)
          ]),
          h('div', { class: 'sub', text: typing ? 'typing…' : lastText(c.id) || c.queue })
        ]),
        h('div', { class: 'acts' }, [
          n ? h('span', { class: 'unread', 'data-testid': 'my-unread', text: n }) : null,
          closed ? dismissButton : null
        ])
      ])
    );
  }
  $('my-count').textContent = open;
  $('my-empty').hidden = list.length > 0;
  document.title = (unreadTotal ? '(' + unreadTotal + ') ' : '') + 'Operator console';
}

/** Takes a conversation off my list (a closed one, or one I stop watching), with its draft. */
export function dismiss(id) {
  st.mine.delete(id);
  st.msgs.delete(id);
  st.complete.delete(id);
  st.client.forget(id);
  delete st.drafts[id];
  saveDrafts();
  if (st.selected === id) st.selected = null;
  renderAll();
}

// ------------------------------------------------------------------ opening a conversation

export function select(id, focus) {
  if (st.selected && st.selected !== id) saveComposerDraft();
  st.selected = id;
  st.peek = null;
  openConv(id, focus);
}

/**
 * Shows a queued conversation before it is accepted (read-only). Queue listings leave out the
 * visitor's parameters: the conversation is asked for whole (`get`), and shown from the answer.
 */
export function peek(c) {
  if (st.selected) saveComposerDraft();
  if (!st.peek || st.peek.id !== c.id) st.peek = c;
  st.selected = c.id;
  openConv(c.id, false);
  fetchPeek(c.id);
}

/** Asks for the peeked conversation whole; a newer peek, or accepting it, wins over the answer. */
export function fetchPeek(id) {
  st.client.request({ t: 'get', conv: id }).then(
    (ok) => {
      // The answer's Conversation has the protocol client follow it (and ask its history): only
      // what is mine is followed.
      if (!st.mine.has(id)) st.client.forget(id);
      if (!ok.conv || typeof ok.conv !== 'object' || ok.conv.id !== id) return;
      if (!st.peek || st.peek.id !== id || st.mine.has(id)) return;
      st.peek = ok.conv;
      seeRead(id, ok.conv.read);
      renderView();
    },
    (err) => {
      // Gone meanwhile (taken, closed): the queue's listing says so; the listing still shows.
      if (!/disconnected|forbidden|not_found/.test(err.code)) toast('Details unavailable: ' + errText(err));
    }
  );
}

export function openConv(id, focus) {
  st.unread.delete(id);
  const m = st.msgs.get(id);
  if (!st.complete.has(id) && (!m || m.size < 50)) {
    loadHistory(id).catch((err) => {
      // Peeking into a queued conversation may not be allowed: the preview panel still shows.
      if (!/disconnected|forbidden|not_found/.test(err.code)) toast('History unavailable: ' + errText(err));
    });
  }
  const c = conv(id);
  if (c && c.previous && !st.previous.has(id)) loadPrevious(id, c.previous);
  const draft = st.drafts[id] != null ? st.drafts[id] : (c && c.draft) || '';
  $('composer').value = draft;
  closePicker();
  renderAll();
  markRead();
  if (focus !== false && !isReadOnly(id)) $('composer').focus();
}

function loadHistory(id, before) {
  return st.client.history(id, { before, limit: 50 }).then((res) => {
    seeRead(id, res.read);
    for (const x of res.messages || []) addEntry(id, storedEntry(x));
    if (res.complete || !(res.messages || []).length) st.complete.add(id);
    if (st.selected === id) {
      renderMessages();
      markRead();
    }
  });
}

/** The visitor wrote again after a close: show what was said in the conversation before. */
function loadPrevious(id, prev) {
  st.previous.set(id, []);
  st.client.history(prev, { limit: 50 }).then(
    (res) => {
      const els = (res.messages || []).map((x) => {
        const el = msgEl(Object.assign(storedEntry(x), { key: 'p' + x.seq }), 0);
        el.dataset.testid = 'conv-prev-msg';
        el.classList.add('prev');
        delete el.dataset.seq;
        return el;
      });
      if (els.length) {
        const text = 'Previous conversation ↑ · new conversation ↓';
        els.push(h('li', { class: 'divider', 'data-testid': 'conv-prev-divider', text }));
      }
      st.previous.set(id, els);
      if (st.selected === id) renderMessages();
    },
    () => {}
  );
}

// ------------------------------------------------------------------ the view

function readonlyNote(id, c, isPeek) {
  if (st.watched.has(id)) return 'Watching (read-only).';
  if (isPeek) return 'Waiting in the queue: accept to reply.';
  return c.state === 'closed' ? 'This conversation is closed.' : 'Read-only.';
}

export function renderView() {
  const id = st.selected;
  const c = id && conv(id);
  const has = !!c;
  $('conv-empty').hidden = has;
  $('conv-head').hidden = !has;
  $('conv-messages').hidden = !has;
  $('conv-typing').hidden = !has;
  $('conv-view').dataset.conv = has ? id : '';
  if (!has) {
    renderNotes(null);
    $('composer-form').hidden = true;
    $('readonly-note').hidden = true;
    $('conv-messages').replaceChildren();
    renderVisitor(null);
    return;
  }
  const ro = isReadOnly(id);
  const isPeek = !st.mine.has(id);
  $('conv-view').dataset.readonly = ro ? 'true' : 'false';
  $('conv-title').textContent = visitorName(c);
  $('conv-presence').className = 'dot ' + (c.visitor.online ? 'online' : 'away');
  $('conv-presence').title = c.visitor.online ? 'visitor online' : 'visitor away';
  const other = c.operator && c.operator.id !== st.me.id ? ' · ' + c.operator.name : '';
  $('conv-state').textContent = c.state + other;
  $('conv-offline').hidden = c.offline !== true;
  const waiting = isPeek && (c.state === 'queued' || c.state === 'offered');
  const sup = st.me.role === 'supervisor';
  $('conv-accept').hidden = !waiting || sup;
  // A supervisor takes over what it looks at or watches (waiting or active), instead of Accept.
  $('conv-takeover').hidden = !sup || c.state === 'closed' || !!(c.operator && c.operator.id === st.me.id);
  $('conv-unwatch').hidden = !st.watched.has(id);
  // While a waiting conversation is looked at, its actions are there but disabled: accepting
  // then moves nothing under the pointer (a second click where Accept was hits no other button).
  for (const b of ['transfer-button', 'close-button']) {
    $(b).hidden = ro && !waiting;
    $(b).disabled = ro;
  }
  $('more-menu').hidden = (ro && !waiting) || c.state === 'closed';
  $('more-menu').querySelector('summary').setAttribute('aria-disabled', ro ? 'true' : 'false');
  if (ro) $('more-menu').open = false;
  $('composer-form').hidden = ro;
  $('readonly-note').hidden = !ro;
  $('readonly-note').textContent = readonlyNote(id, c, isPeek);
  renderTags(c, ro);
  renderActionButtons(c, ro);
  renderNotes(c);
  renderMessages();
  renderTyping();
  renderVisitor(c);
}

/**
 * The notes staff left on the conversation (a transfer's note), oldest first, above its
 * messages: who, when, what, and the link that goes with one (web links only). Visitors never
 * see them.
 */
function renderNotes(c) {
  const ul = $('conv-notes');
  const notes = (c && Array.isArray(c.notes) ? c.notes : []).filter((n) => n && typeof n.text === 'string');
  const key = JSON.stringify(notes);
  ul.hidden = !notes.length;
  // Drawn again only when they changed (a screen reader would announce them again).
  if (ul.dataset.key === key) return;
  ul.dataset.key = key;
  ul.replaceChildren(
    ...notes.map((n) => {
      const when = n.ts ? h('time', { title: new Date(n.ts).toLocaleString(), text: clock(n.ts) }) : null;
      const link = typeof n.link === 'string' && /^https?:\/\//i.test(n.link)
        ? h('a', { href: n.link, target: '_blank', rel: 'noopener noreferrer', text: n.link })
        : null;
      return h('li', { class: 'note', 'data-testid': 'conv-note' }, [
        h('div', { class: 'note-meta' }, [
          'Note from ',
          h('b', { text: n.by || n.by_id || 'staff' }),
          when ? ' · ' : null,
          when
        ]),
        h('div', { class: 'note-text', text: n.text }),
        link
      ]);
    })
  );
}

function sortedEntries(id) {
  return Array.from(entries(id).values()).sort((a, b) => (a.seq || 1e15) - (b.seq || 1e15) || a.ts - b.ts);
}

export function renderMessages() {
  const id = st.selected;
  const ol = $('conv-messages');
  if (!id) return;
  const list = sortedEntries(id);
  const atBottom = ol.scrollHeight - ol.scrollTop - ol.clientHeight < 80;
  const seenUpTo = st.visitorRead.get(id) || 0;
  // In a conversation I hold, every staff message has its receipt (those of the operator who
  // had it before a transfer too); watching, only my own would.
  const held = st.mine.has(id) && !st.watched.has(id);
  const kids = (st.previous.get(id) || []).slice();
  if (!st.complete.has(id) && list.length) {
    const earlier = () => loadHistory(id, list[0].seq).catch(() => {});
    const button = h('button', { class: 'btn small', type: 'button', text: 'Load earlier messages', onclick: earlier });
    kids.push(h('li', { class: 'more' }, [button]));
  }
  for (const e of list) kids.push(msgEl(e, seenUpTo, held));
  // Keep existing nodes (screen readers announce only additions).
  kids.forEach((el, i) => {
    if (ol.children[i] !== el) ol.insertBefore(el, ol.children[i] || null);
  });
  while (ol.children.length > kids.length) ol.lastChild.remove();
  if (atBottom) ol.scrollTop = ol.scrollHeight;
}

const RECEIPTS = { sending: ' · sending…', sent: ' · ✓ sent', read: ' · ✓✓ read', failed: ' · not sent' };

/**
 * A message's element, made once per entry and updated in place (its state, its receipt):
 * receipts on my messages, and with `allStaff` on every staff message.
 */
function msgEl(e, seenUpTo, allStaff) {
  const role = e.from.role;
  const mineMsg = isStaffRole(role) && st.me && e.from.id === st.me.id;
  let state = '';
  if (mineMsg || e.pending || (allStaff && isStaffRole(role))) {
    state = e.failed ? 'failed' : e.pending ? 'sending' : e.seq <= seenUpTo ? 'read' : 'sent';
  }
  if (!e.el) {
    e.el = h('li', { 'data-testid': 'conv-msg', 'data-role': role }, [
      h('div', { class: 'bubble', text: messageText(e) }),
      h('div', { class: 'meta' })
    ]);
  }
  const other = isStaffRole(role) && !mineMsg && !e.pending ? ' other' : '';
  const look = role === 'supervisor' || role === 'bot' ? 'operator' : role;
  e.el.className = 'msg ' + look + other + (e.failed ? ' failed' : '');
  if (e.seq) e.el.dataset.seq = e.seq;
  e.el.dataset.state = state;
  const who = isStaffRole(role) && !mineMsg ? staffName(e.from) + ' · ' : '';
  const receipt = RECEIPTS[state] || '';
  e.el.lastChild.textContent = role === 'system' ? '' : who + clock(e.ts) + receipt;
  return e.el;
}

export function renderTyping() {
  const el = $('conv-typing');
  const t = st.selected && st.typing.get(st.selected);
  el.textContent = t ? 'Visitor is typing' + (t.preview ? ': “' + t.preview + '”' : '…') : '';
}

// ------------------------------------------------------------------ read receipts

function markRead() {
  const id = st.selected;
  // Watching is silent: a supervisor's look is not the visitor's "read".
  if (!id || !st.mine.has(id) || st.watched.has(id) || document.visibilityState !== 'visible' || !st.client) return;
  const seq = st.client.cursor(id);
  if (seq > (st.sentRead.get(id) || 0) && st.client.read(id, seq)) st.sentRead.set(id, seq);
}

document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'visible' && st.selected) {
    st.unread.delete(st.selected);
    markRead();
    renderMine();
  }
});
window.addEventListener('focus', markRead);
