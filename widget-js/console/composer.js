// The reply box of the open conversation: sending (shown at once as pending, then stored or
// failed), drafts (kept locally at once and on the gateway a second after the last key, so
// another device or a reload finds them), my typing indicator for the visitor, and canned
// responses (`//` in the reply box; `{{visitor.name}}` and `{{operator.name}}` filled in).

import { P, $, st, h, toast, errText, conv, isReadOnly, isSup, entries, addEntry, saveDrafts } from './core.js';
import { renderMessages, renderMine } from './conversation.js';

const DEFAULT_CANNED = [
  { shortcut: 'hi', text: 'Hello {{visitor.name}}, my name is {{operator.name}}. How can I help you?' },
  { shortcut: 'wait', text: 'One moment please, I am checking that for you.' },
  { shortcut: 'bye', text: 'Thank you for contacting us, {{visitor.name}}. Have a nice day!' }
];

const composer = $('composer');
let draftTimer = null;
let serverDraftTimer = null;
let typingTimer = null;
let idleTimer = null;
let typingOn = false;

// ------------------------------------------------------------------ drafts

/**
 * What I last sent as each conversation's draft: the gateway echoes it back to me too. The
 * gateway keeps operators' drafts only: a supervisor's (in a conversation it took over) stay
 * in this browser.
 */
const sentDrafts = {};
function sendDraft(id, text) {
  if (isSup()) return;
  sentDrafts[id] = text;
  st.client.draft(id, text);
}

/** Leaving a conversation (switch, reload): its draft is saved locally and on the server now. */
export function saveComposerDraft() {
  const id = st.selected;
  if (!id || isReadOnly(id)) return;
  stopTyping();
  const text = composer.value;
  const pending = serverDraftTimer != null;
  clearTimeout(serverDraftTimer);
  serverDraftTimer = null;
  if (!pending && (st.drafts[id] || '') === text) return;
  st.drafts[id] = text;
  saveDrafts();
  sendDraft(id, text);
}

export function onDraftEcho(f) {
  // A draft typed on another of my connections. The gateway echoes ours to us too: an echo of
  // what we sent last is not news (and may be older than what the composer holds now).
  if (sentDrafts[f.conv] === f.text) return;
  st.drafts[f.conv] = f.text;
  saveDrafts();
  if (st.selected === f.conv && document.activeElement !== composer) composer.value = f.text;
}

window.addEventListener('beforeunload', saveComposerDraft);

// ------------------------------------------------------------------ typing

composer.addEventListener('input', () => {
  const id = st.selected;
  if (!id || isReadOnly(id)) return;
  st.drafts[id] = composer.value;
  clearTimeout(draftTimer);
  draftTimer = setTimeout(saveDrafts, 300);
  clearTimeout(serverDraftTimer);
  serverDraftTimer = setTimeout(() => {
    serverDraftTimer = null;
    sendDraft(id, st.drafts[id] || '');
  }, 1000);
  updatePicker();
  // Typing indicator for the visitor: at most one "on" per 2 s, "off" after 3 s idle.
  clearTimeout(idleTimer);
  if (!composer.value.trim()) return stopTyping();
  if (!typingTimer) {
    typingOn = st.client.typing(id, true) || typingOn;
    typingTimer = setTimeout(() => (typingTimer = null), 2000);
  }
  idleTimer = setTimeout(stopTyping, 3000);
});

export function stopTyping() {
  clearTimeout(idleTimer);
  if (typingOn && st.selected && st.client) st.client.typing(st.selected, false);
  typingOn = false;
}

// ------------------------------------------------------------------ sending

composer.addEventListener('keydown', (e) => {
  if (!pickerOpen()) {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      sendCurrent();
    }
    return;
  }
  const items = Array.from($('canned-picker').children);
  let i = items.findIndex((li) => li.getAttribute('aria-selected') === 'true');
  if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
    e.preventDefault();
    i = (i + (e.key === 'ArrowDown' ? 1 : -1) + items.length) % items.length;
    items.forEach((li, j) => li.setAttribute('aria-selected', j === i ? 'true' : 'false'));
    items[i].scrollIntoView({ block: 'nearest' });
  } else if (e.key === 'Enter' || e.key === 'Tab') {
    e.preventDefault();
    if (items[i]) insertCanned(items[i]._canned);
  } else if (e.key === 'Escape') {
    e.preventDefault();
    closePicker();
  }
});

$('composer-form').addEventListener('submit', (e) => {
  e.preventDefault();
  sendCurrent();
});

function sendCurrent() {
  const id = st.selected;
  const text = composer.value.trim();
  if (!id || !text || isReadOnly(id)) return;
  composer.value = '';
  closePicker();
  stopTyping();
  clearTimeout(serverDraftTimer);
  delete st.drafts[id];
  saveDrafts();
  sendDraft(id, '');
  const cid = P.newCid();
  // A supervisor writes in a conversation it took over; its messages come back from that role.
  const from = { role: st.me.role === 'supervisor' ? 'supervisor' : 'operator', id: st.me.id, name: st.me.name };
  const pending = { key: 'c' + cid, cid, pending: true, from, text, ts: Date.now() };
  addEntry(id, pending);
  renderMessages();
  $('conv-messages').scrollTop = $('conv-messages').scrollHeight;
  st.client.send(id, text, { cid }).then(
    (ack) => {
      const m = entries(id);
      if (m.has('c' + cid)) {
        m.delete('c' + cid);
        addEntry(id, { key: 's' + ack.seq, seq: ack.seq, cid, from, text, ts: ack.ts, el: pending.el });
      }
      if (st.selected === id) renderMessages();
      renderMine();
    },
    (err) => {
      pending.failed = true;
      pending.pending = false;
      toast('Message not sent: ' + errText(err));
      if (st.selected === id) renderMessages();
    }
  );
}

// ------------------------------------------------------------------ canned responses

function cannedList() {
  const list = Array.isArray(st.settings.canned) && st.settings.canned.length ? st.settings.canned : DEFAULT_CANNED;
  const queue = (conv(st.selected) || {}).queue;
  // A response made for some lines is offered in those lines' conversations only.
  const inLine = (c) => !Array.isArray(c.queues) || !c.queues.length || c.queues.includes(queue);
  return list.filter((c) => c && c.text && inLine(c));
}

/** Fills in a canned text; a site that hides operators' names gets "Operator" for mine. */
function expand(text) {
  const c = conv(st.selected) || {};
  const me = st.settings.show_operator_name === false ? 'Operator' : (st.me && st.me.name) || '';
  return text
    .replace(/\{\{\s*visitor\.name\s*\}\}/g, (c.visitor && c.visitor.name) || 'there')
    .replace(/\{\{\s*operator\.name\s*\}\}/g, me)
    .replace(/\{\{\s*visitor\.email\s*\}\}/g, (c.visitor && c.visitor.email) || '')
    .replace(/\{\{\s*conversation\.id\s*\}\}/g, c.id || '');
}

/** The `//query` just before the caret, if any. */
function cannedQuery() {
  const upto = composer.value.slice(0, composer.selectionStart);
  const m = upto.match(/(^|\s)\/\/([^\s/]*)$/);
  return m ? { query: m[2], start: upto.length - m[2].length - 2 } : null;
}

const pickerOpen = () => !$('canned-picker').hidden;

/** The canned responses changed (the site's settings): an open list shows the new ones. */
export function refreshPicker() {
  if (pickerOpen()) updatePicker();
}

export function closePicker() {
  $('canned-picker').hidden = true;
  composer.setAttribute('aria-expanded', 'false');
}

function updatePicker() {
  const q = cannedQuery();
  const ul = $('canned-picker');
  if (!q) return closePicker();
  const needle = q.query.toLowerCase();
  const matches = (c) =>
    !needle || (c.shortcut || '').toLowerCase().includes(needle) || c.text.toLowerCase().includes(needle);
  const hits = cannedList().filter(matches);
  ul.replaceChildren();
  hits.forEach((c, i) => {
    const attrs = {
      role: 'option',
      'data-testid': 'canned-item',
      'data-shortcut': c.shortcut || '',
      'aria-selected': i === 0 ? 'true' : 'false',
      onmousedown: (e) => (e.preventDefault(), insertCanned(c))
    };
    const li = h('li', attrs, [h('b', { text: '//' + (c.shortcut || '') }), h('span', { text: expand(c.text) })]);
    li._canned = c;
    ul.append(li);
  });
  ul.hidden = hits.length === 0;
  composer.setAttribute('aria-expanded', hits.length ? 'true' : 'false');
}

function insertCanned(c) {
  const q = cannedQuery();
  const caret = composer.selectionStart;
  const start = q ? q.start : caret;
  const text = expand(c.text);
  composer.value = composer.value.slice(0, start) + text + composer.value.slice(caret);
  const pos = start + text.length;
  composer.setSelectionRange(pos, pos);
  closePicker();
  composer.dispatchEvent(new Event('input'));
  composer.focus();
}
