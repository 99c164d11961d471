// The visitor panel beside the open conversation: who the visitor is and whether they are
// online, what they browse (page, referrer, browser, OS, device, language, country), the
// parameters their page set (under the labels of the site's catalogue, where it says they
// show), and the conversation's own details.

import { $, st, h, shownParams, outcomeName, isSup, upsertMine, toast, errText } from './core.js';

/** A definition list of `[label, value, link]`, leaving out empty values. */
function dl(pairs) {
  const d = h('dl', { class: 'kv' });
  for (const [k, val, link] of pairs) {
    if (val == null || val === '') continue;
    const shown = link ? h('a', { href: val, target: '_blank', rel: 'noopener noreferrer', text: val }) : String(val);
    d.append(h('dt', { text: k }), h('dd', {}, [shown]));
  }
  return d;
}

const isWebUrl = (u) => /^https?:/.test(u || '');

/**
 * The parameter definitions I may change in `c`: an operator those the site marks editable, in
 * a conversation they hold; a supervisor any.
 */
function editableDefs(c) {
  const list = st.settings && Array.isArray(st.settings.params) ? st.settings.params : [];
  const holding = st.mine.has(c.id) && !st.watched.has(c.id);
  const mayEdit = (d) => isSup() || (d.editable && holding);
  return list.filter((d) => d && typeof d.code === 'string' && d.show !== 'none' && mayEdit(d));
}

// The parameter being edited ({conv, code, value}): the panel is drawn again whenever its
// conversation changes (a message, a read receipt), and the edit survives that.
let editing = null;

/** Turns a parameter's value into a field with Save and Cancel; saving changes it for everyone. */
function editParam(c, code, dd, value) {
  editing = { conv: c.id, code, value };
  const input = h('input', { type: 'text', value, maxlength: '500', 'data-testid': 'param-input', 'aria-label': code });
  input.oninput = () => editing && (editing.value = input.value);
  const save = h('button', { type: 'button', class: 'btn small', 'data-testid': 'param-save', text: 'Save' });
  const cancel = h('button', { type: 'button', class: 'btn small', text: 'Cancel' });
  const done = (conv) => {
    editing = null;
    renderVisitor(conv || c);
  };
  save.onclick = () => {
    save.disabled = true;
    st.client.request({ t: 'identify', conv: c.id, params: { [code]: input.value.trim() } }).then(
      (ok) => {
        const conv = ok.conv && typeof ok.conv === 'object' && ok.conv.id === c.id ? ok.conv : null;
        if (conv && st.mine.has(c.id)) upsertMine(conv);
        done(conv);
      },
      (err) => {
        save.disabled = false;
        toast('Not saved: ' + errText(err));
      }
    );
  };
  cancel.onclick = () => done(null);
  input.onkeydown = (e) => {
    if (e.key === 'Enter') save.click();
    if (e.key === 'Escape') cancel.click();
  };
  dd.replaceChildren(input, save, cancel);
  input.focus();
  input.setSelectionRange(input.value.length, input.value.length);
}

export function renderVisitor(c) {
  const box = $('visitor-panel');
  box.replaceChildren();
  if (!c) {
    box.append(h('p', { class: 'empty', style: 'padding:0', text: 'Visitor details appear here.' }));
    return;
  }
  const v = c.visitor || {};
  const pv = v.preview || {};
  const online = v.online ? 'online' : 'away';
  const presence = h('div', { class: 'presence', 'data-testid': 'visitor-online', 'data-online': String(!!v.online) }, [
    h('span', { class: 'dot ' + online }),
    (v.name || 'Anonymous visitor') + ' · ' + online
  ]);
  box.append(
    h('h3', { text: 'Visitor' }),
    presence,
    dl([
      ['Email', v.email],
      ['Phone', v.phone],
      ['Visitor id', v.id]
    ]),
    h('h3', { text: 'Browsing' }),
    dl([
      ['Page', pv.page_url, isWebUrl(pv.page_url)],
      ['Referrer', pv.referrer, isWebUrl(pv.referrer)],
      ['Browser', pv.browser],
      ['OS', pv.os],
      ['Device', pv.device],
      ['Language', pv.language],
      ['Country', pv.country]
    ])
  );
  // A waiting conversation looked at from the queue is its preview; one I hold (or watch, or
  // that closed) is open.
  const waiting = !st.mine.has(c.id) && (c.state === 'queued' || c.state === 'offered');
  const params = shownParams(v.params, waiting ? 'preview' : 'active').filter(([, , val]) => val != null && val !== '');
  // What I may change shows even while it has no value, so that it can be set.
  const editable = new Map(editableDefs(c).map((d) => [d.code, d]));
  for (const [code, d] of editable) {
    if (!params.some(([k]) => k === code)) params.push([code, d.label || code, '']);
  }
  if (params.length) {
    const d = h('dl', { class: 'kv', 'data-testid': 'visitor-params' });
    for (const [code, label, val] of params) {
      const attrs = { 'data-code': code };
      const dd = h('dd', Object.assign({ 'data-testid': 'param-value', text: String(val) }, attrs));
      d.append(h('dt', Object.assign({ 'data-testid': 'param-label', text: label }, attrs)), dd);
      if (editable.has(code)) {
        const pen = h('button', {
          type: 'button', class: 'btn small', 'data-testid': 'param-edit', title: 'Change ' + label, text: '✎'
        });
        pen.onclick = () => editParam(c, code, dd, String(val));
        dd.append(' ', pen);
        if (editing && editing.conv === c.id && editing.code === code) editParam(c, code, dd, editing.value);
      }
    }
    box.append(h('h3', { text: 'Parameters' }), d);
  }
  box.append(
    h('h3', { text: 'Conversation' }),
    dl([
      ['Id', c.id],
      ['Queue', c.queue],
      ['State', c.state],
      ['Started', c.created_at ? new Date(c.created_at).toLocaleString() : ''],
      ['Previous', c.previous],
      ['Outcome', c.outcome ? outcomeName(c.outcome) : '']
    ])
  );
}
