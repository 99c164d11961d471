// The visitor panel beside the open conversation: who the visitor is and whether they are
// online, what they browse (page, referrer, browser, OS, device, language, country), the
// parameters their page set, and the conversation's own details.

import { $, h } from './core.js';

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
  const params = v.params || {};
  if (Object.keys(params).length) box.append(h('h3', { text: 'Parameters' }), dl(Object.entries(params)));
  box.append(
    h('h3', { text: 'Conversation' }),
    dl([
      ['Id', c.id],
      ['Queue', c.queue],
      ['State', c.state],
      ['Started', c.created_at ? new Date(c.created_at).toLocaleString() : ''],
      ['Previous', c.previous],
      ['Outcome', c.outcome]
    ])
  );
}
