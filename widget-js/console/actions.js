// What an operator does to the open conversation besides replying: tags, transfer (to an
// operator, with their status and load, or to a queue, with a note), close (with an outcome and
// tags), and ban the visitor (for a while, with a reason), which waits in the conversation's
// "More actions" menu, away from where Accept was.

import { $, st, h, toast, chats, errText, conv, visitorName, upsertMine } from './core.js';
import { renderView } from './conversation.js';
import { stopTyping } from './composer.js';
import { renderAll } from './connection.js';
import { refreshActive } from './supervisor.js';

const isConvObject = (ok) => ok.conv && typeof ok.conv === 'object';

// ------------------------------------------------------------------ tags

export function renderTags(c, ro) {
  const box = $('tag-list');
  const input = $('tag-input');
  // Only the tags are redrawn: taking the field out would take its focus, and the next tag
  // typed after Enter would go nowhere.
  for (const el of box.querySelectorAll('.tag')) el.remove();
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
    input.before(h('span', { class: 'tag', 'data-testid': 'tag' }, [t, remove]));
  }
  input.hidden = ro;
}

$('tag-input').addEventListener('keydown', (e) => {
  if (e.key !== 'Enter') return;
  e.preventDefault();
  const t = e.target.value.trim();
  if (!t || !st.selected) return;
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

/** Asks for the outcome and tags of closing conversation `id` (`c`: it, if known). */
export function askClose(id, c) {
  closing = id;
  const known = conv(id) || c;
  $('close-title').textContent = 'Close conversation' + (id === st.selected ? '' : ' with ' + visitorName(known));
  $('close-tags').value = ((known && known.tags) || []).join(', ');
  openDialog('close-dialog');
}

$('close-button').addEventListener('click', () => st.selected && askClose(st.selected));

$('close-dialog').addEventListener('close', () => {
  const id = closing;
  closing = null;
  if ($('close-dialog').returnValue !== 'ok' || !id) return;
  const tags = $('close-tags')
    .value.split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  st.client.closeConv(id, { outcome: $('close-outcome').value, tags: tags.length ? tags : undefined }).then(
    (ok) => {
      // The conversation as the gateway stored it (its outcome included).
      const c = (isConvObject(ok) && ok.conv) || Object.assign({}, st.mine.get(id), { state: 'closed', tags });
      upsertMine(c);
      // Closed from a supervisor's list: not mine, so not followed (the answer would have it).
      if (!st.mine.has(id)) st.client.forget(id);
      if (id === st.selected) stopTyping();
      renderAll();
      refreshActive();
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
