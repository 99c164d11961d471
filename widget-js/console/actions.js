// What an operator does to the open conversation besides replying: tags (from the site's
// catalogue when it keeps one), transfer (to an operator, with their status and load, or to a
// queue, with a note), close (with an outcome, from the site's list when it keeps one, and
// tags), and, in the conversation's "More actions" menu away from where Accept was, the site's
// actions ("Create case": the answer comes back as a note) and banning the visitor (for a
// while, with a reason).

import {
  $, st, h, toast, chats, errText, conv, visitorName, upsertMine, tagCatalogue, catalogueTag, tagChip, paintTag,
  outcomeCatalogue
} from './core.js';
import { renderView } from './conversation.js';
import { stopTyping } from './composer.js';
import { renderAll } from './connection.js';
import { refreshActive } from './supervisor.js';

const isConvObject = (ok) => ok.conv && typeof ok.conv === 'object';

// ------------------------------------------------------------------ tags

// A site that keeps a tag catalogue takes only its active tags from staff: the field then
// offers them (a list under it, in their colours, filtered by what is typed; arrows and Enter,
// or a click) and adds nothing else. Without a catalogue any tag may be typed.

const tagInput = $('tag-input');
const tagOptions = $('tag-options');

export function renderTags(c, ro) {
  const box = $('tag-list');
  // Only the tags are redrawn: taking the field out would take its focus, and the next tag
  // typed after Enter would go nowhere.
  for (const el of box.querySelectorAll(':scope > .tag')) el.remove();
  for (const t of c.tags || []) {
    const remove = ro
      ? null
      : h('button', {
          type: 'button',
          'data-testid': 'tag-remove',
          'aria-label': 'Remove tag ' + t,
          text: '×',
          onclick: () => changeTags(c.id, [], [t]).catch(() => {})
        });
    tagInput.before(tagChip(t, { 'data-testid': 'tag' }, [remove]));
  }
  tagInput.hidden = ro;
  const picking = !!tagCatalogue();
  tagInput.placeholder = picking ? '+ pick a tag' : '+ tag';
  if (picking) {
    tagInput.setAttribute('role', 'combobox');
    tagInput.setAttribute('aria-autocomplete', 'list');
    tagInput.setAttribute('aria-controls', 'tag-options');
  } else for (const a of ['role', 'aria-autocomplete', 'aria-controls', 'aria-expanded']) tagInput.removeAttribute(a);
  if (ro || !picking) closeTagOptions();
  else if (!tagOptions.hidden) updateTagOptions();
}

/** The catalogue's tags the open conversation does not have yet, matching what is typed. */
function offeredTags() {
  const c = conv(st.selected) || {};
  const have = new Set((c.tags || []).map((t) => t.toLowerCase()));
  const needle = tagInput.value.trim().toLowerCase();
  return (tagCatalogue() || [])
    .filter((t) => !have.has(t.name.toLowerCase()) && t.name.toLowerCase().includes(needle))
    .sort((a, b) => (a.name.toLowerCase() !== needle) - (b.name.toLowerCase() !== needle));
}

function closeTagOptions() {
  tagOptions.hidden = true;
  tagInput.removeAttribute('aria-activedescendant');
  if (tagInput.getAttribute('role') === 'combobox') tagInput.setAttribute('aria-expanded', 'false');
}

/** Lists the offered tags under the field, the first (or the one still there) highlighted. */
function updateTagOptions() {
  const was = (tagOptions.querySelector('[aria-selected=true]') || {}).dataset;
  const list = offeredTags();
  let pick = Math.max(0, list.findIndex((t) => was && t.name === was.tag));
  tagOptions.replaceChildren(
    ...list.map((t, i) =>
      h(
        'li',
        {
          id: 'tag-option-' + i,
          role: 'option',
          'data-testid': 'tag-option',
          'data-tag': t.name,
          'aria-selected': i === pick ? 'true' : 'false',
          onmousedown: (e) => (e.preventDefault(), addPicked(t.name))
        },
        [paintTag(h('span', { class: 'tag', text: t.name }), t)]
      )
    )
  );
  if (!list.length) {
    const none = 'No other tag of the site matches.';
    tagOptions.append(h('li', { class: 'none', 'data-testid': 'tag-option-none', text: none }));
    pick = -1;
  }
  tagOptions.hidden = false;
  // Under the field, which follows the conversation's tags.
  tagOptions.style.left = tagInput.offsetLeft + 'px';
  tagInput.setAttribute('aria-expanded', 'true');
  if (pick >= 0) tagInput.setAttribute('aria-activedescendant', 'tag-option-' + pick);
  else tagInput.removeAttribute('aria-activedescendant');
}

function moveTagOption(step) {
  const items = Array.from(tagOptions.querySelectorAll('[role=option]'));
  if (!items.length) return;
  const at = items.findIndex((li) => li.getAttribute('aria-selected') === 'true');
  const next = items[(at + step + items.length) % items.length];
  for (const li of items) li.setAttribute('aria-selected', li === next ? 'true' : 'false');
  tagInput.setAttribute('aria-activedescendant', next.id);
  next.scrollIntoView({ block: 'nearest' });
}

function addPicked(name) {
  if (!st.selected) return;
  tagInput.value = '';
  closeTagOptions();
  changeTags(st.selected, [name], []).catch(() => {});
}

tagInput.addEventListener('focus', () => tagCatalogue() && updateTagOptions());
tagInput.addEventListener('input', () => tagCatalogue() && updateTagOptions());
tagInput.addEventListener('blur', closeTagOptions);

tagInput.addEventListener('keydown', (e) => {
  const picking = !!tagCatalogue();
  if (picking && (e.key === 'ArrowDown' || e.key === 'ArrowUp')) {
    e.preventDefault();
    if (tagOptions.hidden) updateTagOptions();
    else moveTagOption(e.key === 'ArrowDown' ? 1 : -1);
    return;
  }
  if (picking && e.key === 'Escape' && !tagOptions.hidden) {
    e.preventDefault();
    closeTagOptions();
    return;
  }
  if (e.key !== 'Enter') return;
  e.preventDefault();
  const t = e.target.value.trim();
  if (!st.selected) return;
  if (picking) {
    // The highlighted tag of the list, or one typed whole; nothing else is the site's.
    const hit = tagOptions.hidden ? null : tagOptions.querySelector('[role=option][aria-selected=true]');
    const typed = t && catalogueTag(t);
    const name = hit ? hit.dataset.tag : typed && typed.name;
    if (name) addPicked(name);
    else if (t) toast('“' + t + '” is not one of the site\'s tags: pick one from the list.');
    return;
  }
  if (!t) return;
  e.target.value = '';
  changeTags(st.selected, [t], []).catch(() => {
    // Refused (too long, too many): the tag comes back to the field to be corrected.
    if (!e.target.value) e.target.value = t;
  });
});

/** Adds and removes tags; the promise rejects (after a toast) when the gateway refuses. */
function changeTags(id, add, remove) {
  return st.client.tag(id, add, remove).then(
    (ok) => {
      const c = st.mine.get(id);
      if (isConvObject(ok)) upsertMine(ok.conv);
      else if (c) {
        const had = c.tags || [];
        c.tags = had.filter((t) => !remove.includes(t)).concat(add.filter((t) => !had.includes(t)));
      }
      renderView();
    },
    (err) => {
      toast('Could not change tags: ' + errText(err));
      throw err;
    }
  );
}

// ------------------------------------------------------------------ dialogs

// A dialog keeps the returnValue of its last close, and Esc leaves it as it was: cleared
// here, or Esc after one confirmed ban would ban the next visitor too.
function openDialog(id) {
  $(id).returnValue = '';
  $(id).showModal();
}

// ------------------------------------------------------------------ transfer

function transferChoice(attrs, value, kids) {
  return h('label', attrs, [h('input', { type: 'radio', name: 'to', value, required: true }), ...kids]);
}

$('transfer-button').addEventListener('click', () => {
  const id = st.selected;
  if (!id) return;
  const box = $('transfer-choices');
  box.replaceChildren();
  const others = Array.from(st.operators.values()).filter((o) => !st.me || o.id !== st.me.id);
  if (others.length) box.append(h('strong', { text: 'Operators' }));
  for (const o of others) {
    // A supervisor has no routing status, only presence: marked, so nobody takes it for one.
    const status = o.online ? (o.supervisor ? 'online' : o.status) : 'offline';
    const attrs = { 'data-testid': 'transfer-operator', 'data-operator': o.id };
    box.append(
      transferChoice(attrs, 'operator:' + o.id, [
        h('span', { class: 'dot ' + status }),
        o.name + (o.supervisor ? ' (supervisor)' : '') + ' — ' + status + ', ' + chats(o.load)
      ])
    );
  }
  const queues = st.settings.queues && st.settings.queues.length ? st.settings.queues : Array.from(st.queues.keys());
  if (queues.length) box.append(h('strong', { text: 'Queues' }));
  for (const q of queues) {
    box.append(transferChoice({ 'data-testid': 'transfer-queue', 'data-queue': q }, 'queue:' + q, [q]));
  }
  $('transfer-note').value = '';
  openDialog('transfer-dialog');
});

$('transfer-dialog').addEventListener('close', () => {
  if ($('transfer-dialog').returnValue !== 'ok') return;
  const picked = $('transfer-choices').querySelector('input[name=to]:checked');
  const id = st.selected;
  if (!picked || !id) return;
  const [kind, target] = picked.value.split(/:(.*)/s);
  const to = kind === 'operator' ? { operator: target } : { queue: target };
  st.client.transfer(id, to, $('transfer-note').value.trim() || undefined).then(
    (ok) => {
      toast('Transferred.');
      if (isConvObject(ok)) upsertMine(ok.conv);
      else if (!st.watched.has(id)) st.mine.delete(id);
      // The answer's Conversation has the client follow it again, and following it would ask
      // its history for the messages of the handover, which are no longer ours (forbidden).
      if (!st.mine.has(id)) st.client.forget(id);
      if (!st.mine.has(id) && st.selected === id) st.selected = null;
      renderAll();
    },
    (err) => toast('Could not transfer: ' + errText(err))
  );
});

// ------------------------------------------------------------------ close

// The conversation the close dialog is about: the open one, or one of a supervisor's list.
let closing = null;

// The console's own outcomes, for a site without a list of its own.
const defaultOutcomes = Array.from($('close-outcome').options, (o) => o.cloneNode(true));

/**
 * The close dialog's outcome: the site's list when it keeps one (names shown, ids sent, one
 * must be chosen), else the console's own.
 */
function fillOutcomes() {
  const sel = $('close-outcome');
  const list = outcomeCatalogue();
  const hadSite = sel.dataset.list === 'site';
  sel.required = !!list;
  sel.dataset.list = list ? 'site' : 'console';
  if (list) {
    sel.replaceChildren(
      h('option', { value: '', text: 'Choose an outcome…' }),
      ...list.map((o) => h('option', { value: o.id, text: typeof o.name === 'string' && o.name ? o.name : o.id }))
    );
    // Without a default: closing waits for a choice.
    sel.value = '';
  } else if (hadSite) {
    // The site dropped its list: the console's own again (kept as they were otherwise).
    sel.replaceChildren(...defaultOutcomes.map((o) => o.cloneNode(true)));
  }
}

/**
 * The close dialog's tags. With a catalogue: a box per active tag (in its colours), those the
 * conversation has already checked and fixed (closing adds tags, it removes none), as are its
 * tags the catalogue no longer offers. Without: the comma-separated field.
 */
function fillCloseTags(known) {
  const have = (known && known.tags) || [];
  const list = tagCatalogue();
  const box = $('close-tag-choices');
  $('close-tags-field').hidden = !!list;
  box.hidden = !list;
  $('close-tags').value = list ? '' : have.join(', ');
  if (!list) return box.replaceChildren();
  const on = new Set(have.map((t) => t.toLowerCase()));
  const choice = (name, t) => {
    const fixed = on.has(name.toLowerCase());
    const input = h('input', {
      type: 'checkbox',
      value: name,
      'data-testid': 'close-tag-choice',
      checked: fixed,
      disabled: fixed
    });
    return h('label', { class: 'tag-choice', title: fixed ? 'Already on the conversation' : null }, [
      input,
      paintTag(h('span', { class: 'tag', text: name }), t)
    ]);
  };
  const inactive = have.filter((n) => !catalogueTag(n));
  box.replaceChildren(
    h('legend', { text: 'Tags' }),
    ...list.map((t) => choice(t.name, t)),
    ...inactive.map((n) => choice(n, null))
  );
}

/** The tags the close dialog adds: what is typed, or the boxes checked now. */
function closeTagsChosen() {
  if (tagCatalogue()) {
    return Array.from($('close-tag-choices').querySelectorAll('input:checked:not(:disabled)'), (i) => i.value);
  }
  return $('close-tags')
    .value.split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

/** Asks for the outcome and tags of closing conversation `id` (`c`: it, if known). */
export function askClose(id, c) {
  closing = id;
  const known = conv(id) || c;
  $('close-title').textContent = 'Close conversation' + (id === st.selected ? '' : ' with ' + visitorName(known));
  fillOutcomes();
  fillCloseTags(known);
  // The visitor's transcript by e-mail, where the site sends them.
  $('close-mail-field').hidden = !(st.settings && st.settings.mail_transcripts);
  $('close-mail').checked = false;
  $('close-mail-to').value = (known && known.visitor && known.visitor.email) || '';
  openDialog('close-dialog');
}

/** Asks the gateway to e-mail a closed conversation's transcript to its visitor. */
function mailTranscript(id, email) {
  st.client.request({ t: 'mail_transcript', conv: id, email }).then(
    () => toast('The transcript will be e-mailed to ' + email + '.'),
    (err) => toast('Transcript not e-mailed: ' + errText(err))
  );
}

$('close-button').addEventListener('click', () => st.selected && askClose(st.selected));

$('close-dialog').addEventListener('close', () => {
  const id = closing;
  closing = null;
  if ($('close-dialog').returnValue !== 'ok' || !id) return;
  const tags = closeTagsChosen();
  const outcome = $('close-outcome').value;
  const mailTo = !$('close-mail-field').hidden && $('close-mail').checked ? $('close-mail-to').value.trim() : '';
  st.client.closeConv(id, { outcome: outcome || undefined, tags: tags.length ? tags : undefined }).then(
    (ok) => {
      // The conversation as the gateway stored it (its outcome included).
      const had = (conv(id) || {}).tags || [];
      const fallback = { state: 'closed', tags: had.concat(tags.filter((t) => !had.includes(t))) };
      const c = (isConvObject(ok) && ok.conv) || Object.assign({}, st.mine.get(id), fallback);
      upsertMine(c);
      // Closed from a supervisor's list: not mine, so not followed (the answer would have it).
      if (!st.mine.has(id)) st.client.forget(id);
      if (id === st.selected) stopTyping();
      renderAll();
      refreshActive();
      if (mailTo) mailTranscript(id, mailTo);
    },
    (err) => toast('Could not close: ' + errText(err))
  );
});

// ------------------------------------------------------------------ ban

// The "More actions" menu: it opens only where its actions may be used, and closes on a
// choice, on Escape and on a click elsewhere.
const more = $('more-menu');
more.querySelector('summary').addEventListener('click', (e) => {
  if (e.currentTarget.getAttribute('aria-disabled') === 'true') e.preventDefault();
});
more.addEventListener('keydown', (e) => {
  if (e.key !== 'Escape' || !more.open) return;
  more.open = false;
  more.querySelector('summary').focus();
});
document.addEventListener('click', (e) => {
  if (more.open && !more.contains(e.target)) more.open = false;
});

// ------------------------------------------------------------------ the site's actions

// The site's actions that apply to the conversation's line, one button each. A run is sent
// once per click (the button waits for the gateway's answer); the receiver's answer arrives
// later as one of the conversation's notes.
export function renderActionButtons(c, ro) {
  const box = $('action-buttons');
  const all = st.settings && Array.isArray(st.settings.actions) ? st.settings.actions : [];
  const mine = ro ? [] : all.filter((a) => !a.queues || !a.queues.length || a.queues.includes(c.queue));
  const key = c.id + '|' + JSON.stringify(mine);
  box.hidden = !mine.length;
  if (box.dataset.key === key) return;
  box.dataset.key = key;
  box.replaceChildren(
    ...mine.map((a) =>
      h('button', {
        class: 'btn small',
        type: 'button',
        'data-testid': 'action-button',
        text: a.name,
        onclick: (e) => runAction(c.id, a, e.currentTarget)
      })
    )
  );
}

function runAction(id, a, button) {
  more.open = false;
  button.disabled = true;
  st.client.request({ t: 'action', conv: id, action: a.id }).then(
    () => toast(a.name + ': sent. The answer will show in the conversation\'s notes.'),
    (err) => toast(a.name + ' failed: ' + errText(err))
  ).finally(() => {
    button.disabled = false;
  });
}

$('ban-button').addEventListener('click', () => {
  more.open = false;
  if (!st.selected) return;
  $('ban-reason').value = '';
  openDialog('ban-dialog');
});

$('ban-dialog').addEventListener('close', () => {
  if ($('ban-dialog').returnValue !== 'ok') return;
  const id = st.selected;
  if (!id) return;
  const name = visitorName(conv(id));
  const reason = $('ban-reason').value.trim() || undefined;
  st.client.request({ t: 'ban', conv: id, duration: $('ban-duration').value, reason }).then(
    (ok) =>
      toast(name + ' is banned until ' + new Date(ok.until).toLocaleString() + ' (visitor id ' + ok.visitor + ').'),
    (err) => toast('Could not ban: ' + errText(err))
  );
});
