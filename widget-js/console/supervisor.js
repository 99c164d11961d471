// The operators and what supervisors do: every operator's status, presence and load (kept for
// operators too: the transfer dialog lists them, and the gateway confirms my own status here),
// assigning a waiting visitor to an operator, watching any conversation read-only (and
// stopping), and lifting a ban by visitor id.

import { $, st, h, toast, chats, errText, isSup, conv } from './core.js';
import { renderStatus } from './settings.js';
import { select, dismiss } from './conversation.js';

export function onOperator(f) {
  st.operators.set(f.id, { id: f.id, name: f.name, status: f.status, online: f.online, load: f.load });
  if (st.me && f.id === st.me.id) {
    st.status = st.serverStatus = f.status;
    renderStatus();
  }
  renderOperators();
}

export function renderOperators() {
  if (!isSup()) return;
  const ul = $('operators-list');
  ul.replaceChildren();
  for (const o of Array.from(st.operators.values()).sort((a, b) => a.name.localeCompare(b.name))) {
    const status = o.online ? o.status : 'offline';
    const name = o.name + (st.me && o.id === st.me.id ? ' (me)' : '');
    ul.append(
      h('li', { class: 'item', 'data-testid': 'operator-item', 'data-operator': o.id }, [
        h('span', { class: 'dot ' + status }),
        h('div', { class: 'main' }, [
          h('div', { class: 'name', text: name }),
          h('div', { class: 'sub', text: status + ' · ' + chats(o.load) })
        ])
      ])
    );
  }
}

export function assign(id, operator) {
  st.client.assign(id, operator).then(
    () => toast('Assigned.'),
    (err) => toast('Could not assign: ' + errText(err))
  );
}

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
