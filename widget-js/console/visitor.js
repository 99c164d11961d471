// The visitor panel beside the open conversation: who the visitor is and whether they are
// online, what they browse (page, referrer, browser, OS, device, language, country), the
// parameters their page set (under the labels of the site's catalogue, where it says they
// show), and the conversation's own details.

import { $, st, h, shownParams, outcomeName } from './core.js';

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
  if (params.length) {
    const d = h('dl', { class: 'kv', 'data-testid': 'visitor-params' });
    for (const [code, label, val] of params) {
      const attrs = { 'data-code': code };
      d.append(
        h('dt', Object.assign({ 'data-testid': 'param-label', text: label }, attrs)),
        h('dd', Object.assign({ 'data-testid': 'param-value', text: String(val) }, attrs))
      );
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
