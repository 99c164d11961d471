/*! chat-gateway widget — embed with ONE tag:
 *   <script src="https://<gateway>/widget.js" data-site="<widget key>" async></script>
 * Optional attributes: data-lang (en|ru|cs), data-prechat="true", data-color="#2563eb",
 * data-queue (the site's queue to start conversations in; default: its first).
 * data-poll: seconds between availability checks (default 30).
 * API: ChatWidget.open() close() toggle() identify({name,email,phone}) setParams({k: v})
 * on/off(event, fn) for open, close, status, message, conversation. Calls made before the
 * script loads can wait in window.ChatWidget = {q: [[name, args], …]}. identify and setParams
 * go out with the next conversation's `start`, and to an open one at once (`identify` frame,
 * sent again after a reconnect until the gateway took it).
 *
 * Served as /widget.js right after protocol.js (same script), whose ChatGatewayProtocol.Client
 * does the wire work: ordering, dedup, resume, retries with the same cid. This file is the UI:
 * a Shadow DOM so the host page's CSS and ours cannot touch each other, state in localStorage
 * so the visitor and the conversation survive page loads, and the window.ChatWidget API.
 */
(function () {
  'use strict';
  const W = window;
  const D = document;
  if (W.ChatWidget && W.ChatWidget._loaded) return;
  const P = W.ChatGatewayProtocol;
  if (!P) throw new Error('chat widget: protocol.js must come first (serve /widget.js, not widget.js alone)');
  const script = D.currentScript || D.querySelector('script[data-site][src*="widget"]');
  const ds = (script && script.dataset) || {};
  const SITE = ds.site || 'demo';
  const BASE = script && script.src ? new URL(script.src, location.href).origin : location.origin;
  const KEY = 'cgw:' + SITE;
  const noop = () => {};
  const isObj = (v) => v && typeof v === 'object' && !Array.isArray(v);

  // ------------------------------------------------------------ language

  const I18N = {
    en: {
      title: 'Chat with us', open: 'Open chat', close: 'Close chat', ph: 'Write a message…', send: 'Send',
      msgs: 'Messages', sending: 'Sending…', sent: 'Sent', read: 'Read', failed: 'Not sent. Click to retry.',
      typing: '{n} is typing…', op: 'Operator', you: 'You',
      busy: 'All operators are busy. You are in the queue, we will answer as soon as possible.',
      ended: 'Conversation ended. Write again to start a new one.',
      offT: 'Leave us a message', offI: 'We are not online right now. Leave a message and we will get back to you.',
      name: 'Name', email: 'Email', phone: 'Phone', message: 'Message', submit: 'Send message',
      thanks: 'Thanks, we will get back to you.', again: 'Write another message',
      preI: 'Please introduce yourself before we start.', start: 'Start chat',
      tr: 'Download transcript',
      mt: 'Email me the transcript', mtd: 'We will send it to {e}.', conn: 'Connecting…', unread: '{n} unread',
      hi: 'Hi! How can we help you?',
      na: 'The chat is not available here.', ban: 'You can no longer send messages in this chat.', ns: 'Not sent',
      // System messages by code (the gateway's phrases, gateway/src/i18n.rs).
      j: '{name} joined the conversation', j0: 'An operator joined the conversation',
      tq: 'The conversation was transferred to {queue}', t0: 'The conversation was transferred to another operator',
      ra: 'The operator did not answer in time; the conversation was passed to another operator',
      cl: 'The conversation was closed'
    },
    ru: {
      title: 'Чат с нами', open: 'Открыть чат', close: 'Закрыть чат', ph: 'Напишите сообщение…', send: 'Отправить',
      msgs: 'Сообщения', sending: 'Отправляется…', sent: 'Отправлено', read: 'Прочитано',
      failed: 'Не отправлено. Нажмите, чтобы повторить.',
      typing: '{n} печатает…', op: 'Оператор', you: 'Вы',
      busy: 'Все операторы заняты. Вы в очереди, мы ответим как можно скорее.',
      ended: 'Разговор завершён. Напишите снова, чтобы начать новый.',
      offT: 'Оставьте сообщение', offI: 'Сейчас нас нет в сети. Оставьте сообщение, и мы с вами свяжемся.',
      name: 'Имя', email: 'Эл. почта', phone: 'Телефон', message: 'Сообщение', submit: 'Отправить',
      thanks: 'Спасибо, мы с вами свяжемся.', again: 'Написать ещё',
      preI: 'Представьтесь, пожалуйста, перед началом разговора.', start: 'Начать чат',
      tr: 'Скачать переписку',
      mt: 'Прислать переписку на почту', mtd: 'Отправим на {e}.', conn: 'Подключение…', unread: 'непрочитанных: {n}',
      hi: 'Здравствуйте! Чем можем помочь?',
      na: 'Чат здесь недоступен.', ban: 'Вы больше не можете отправлять сообщения в этом чате.', ns: 'Не отправлено',
      j: 'Оператор {name} присоединился к разговору', j0: 'Оператор присоединился к разговору',
      tq: 'Разговор передан в очередь {queue}', t0: 'Разговор передан другому оператору',
      ra: 'Оператор не ответил вовремя, разговор передан другому оператору', cl: 'Разговор завершён'
    },
    cs: {
      title: 'Napište nám', open: 'Otevřít chat', close: 'Zavřít chat', ph: 'Napište zprávu…', send: 'Odeslat',
      msgs: 'Zprávy', sending: 'Odesílá se…', sent: 'Odesláno', read: 'Přečteno',
      failed: 'Neodesláno. Klikněte pro nový pokus.',
      typing: '{n} píše…', op: 'Operátor', you: 'Vy',
      busy: 'Všichni operátoři jsou zaneprázdnění. Jste ve frontě, odpovíme co nejdříve.',
      ended: 'Konverzace skončila. Napište znovu a začne nová.',
      offT: 'Zanechte nám zprávu', offI: 'Právě nejsme online. Zanechte zprávu a ozveme se vám.',
      name: 'Jméno', email: 'E-mail', phone: 'Telefon', message: 'Zpráva', submit: 'Odeslat zprávu',
      thanks: 'Děkujeme, ozveme se vám.', again: 'Napsat další zprávu',
      preI: 'Před začátkem se prosím představte.', start: 'Zahájit chat',
      tr: 'Stáhnout přepis',
      mt: 'Poslat přepis e-mailem', mtd: 'Pošleme ho na {e}.', conn: 'Připojování…', unread: 'nepřečtené: {n}',
      hi: 'Dobrý den! Jak vám můžeme pomoci?',
      na: 'Chat zde není k dispozici.', ban: 'V tomto chatu už nemůžete posílat zprávy.', ns: 'Neodesláno',
      j: 'Operátor {name} se připojil ke konverzaci', j0: 'Operátor se připojil ke konverzaci',
      tq: 'Konverzace byla předána do fronty {queue}', t0: 'Konverzace byla předána jinému operátorovi',
      ra: 'Operátor neodpověděl včas, konverzace byla předána jinému operátorovi', cl: 'Konverzace byla ukončena'
    }
  };
  const pickLang = (l) => (l || '').slice(0, 2).toLowerCase();
  const LANG = [ds.lang, D.documentElement.lang, navigator.language].map(pickLang).find((l) => I18N[l]) || 'en';
  // `n`: what {n} stands for, or an object of what each {name} stands for.
  const t = (k, n) => (I18N[LANG][k] || I18N.en[k]).replace(/\{(\w+)\}/g, (_, a) => (isObj(n) ? n[a] : n));
  // A system message in the reader's language by its code; its text (the site's language) for
  // a code this version does not know.
  function sysText(e) {
    const a = {};
    for (const p in isObj(e.args) ? e.args : {}) if (typeof e.args[p] === 'string') a[p] = e.args[p];
    const k = {
      operator_joined: a.name && !S.noName ? 'j' : 'j0',
      transferred: a.queue ? 'tq' : 't0',
      reassigned: 'ra',
      closed: 'cl'
    }[e.code];
    return typeof k === 'string' ? t(k, a) : e.text;
  }

  // ------------------------------------------------------------ state (localStorage)

  let LS = null;
  try {
    LS = W.localStorage;
  } catch {
    /* storage blocked: the widget still works for this page view */
  }
  const load = () => {
    try {
      const v = JSON.parse(LS.getItem(KEY));
      return isObj(v) ? v : {};
    } catch {
      return {};
    }
  };
  // token, vid, exp, conv, closed, assigned, convs[], cursors{}, out[], msgs[], prechat, params,
  // unread, open, rd{} (read sent), seen{} (operator read up to), thanks
  const S = load();
  // What another version (or a hand) left in storage must not break the widget: wrong types reset.
  const keep = (k, ok, d) => ok(S[k]) || (S[k] = d);
  ['convs', 'out', 'msgs'].forEach((k) => keep(k, Array.isArray, []));
  ['cursors', 'rd', 'seen'].forEach((k) => keep(k, isObj, {}));
  S.out = S.out.filter((o) => isObj(o) && typeof o.cid === 'string' && typeof o.text === 'string');
  S.msgs = S.msgs.filter((e) => isObj(e) && typeof e.k === 'string' && typeof e.text === 'string');
  ['token', 'conv'].forEach((k) => typeof S[k] === 'string' || delete S[k]);
  function save() {
    if (client) S.cursors = client.cursors();
    S.msgs = sorted().filter((e) => e.role !== 'notice').slice(-100);
    try {
      LS.setItem(KEY, JSON.stringify(S));
    } catch {
      /* quota or blocked */
    }
  }

  const ev = new P.Emitter();
  let client = null;
  let settings = {};
  let endedHere = false; // a conversation ended during this page view: keep showing the chat
  let avail = { status: 'online', widget_when_away: 'busy' };
  let isOpen = false;
  // Why the widget stopped for good ('na': not available here, 'ban': banned).
  let dead = '';
  let asked = 0;

  // ------------------------------------------------------------ DOM

  function h(tag, attrs, kids) {
    const el = D.createElement(tag);
    for (const k in attrs || {}) {
      const v = attrs[k];
      if (v == null || v === false) continue;
      if (k[0] === 'o' && k[1] === 'n') el.addEventListener(k.slice(2), v);
      else if (k === 'text') el.textContent = v;
      else if (k === 'html') el.innerHTML = v; // only our own static SVG
      else el.setAttribute(k, v === true ? '' : v);
    }
    (kids || []).forEach((c) => c && el.appendChild(c));
    return el;
  }
  const svg = (d, s) =>
    '<svg width="' + (s || 20) + '" height="' + (s || 20) + '" viewBox="0 0 24 24" fill="none" stroke="currentColor" ' +
    'stroke-width="2" stroke-linecap="round" stroke-linejoin="round" aria-hidden="true"><path d="' + d + '"/></svg>';
  const I_CHAT = 'M21 12a8 8 0 0 1-11.6 7.1L4 20l1-4.6A8 8 0 1 1 21 12z';
  const I_X = 'M6 6l12 12M18 6L6 18';
  const I_DL = 'M12 4v11m-5-5l5 5 5-5M5 20h14';
  const I_SEND = 'M5 12h13m-6-6l6 6-6 6';
  const I_USER = 'M12 12a4 4 0 1 0 0-8 4 4 0 0 0 0 8zm-7 9a7 7 0 0 1 14 0';

  // An operator's initials in a circle (a person when the site hides operators' names).
  const avatar = (n) =>
    h('span', {
      class: 'av',
      'aria-hidden': 'true',
      text: n ? String(n).trim().split(/\s+/).slice(0, 2).map((w) => Array.from(w)[0]).join('').toUpperCase() : null,
      html: n ? null : svg(I_USER, 16)
    });

  // A message's time (local, 14:05) with its full date in the title; nothing for a bad time.
  function timeEl(ts) {
    const d = new Date(ts);
    const f = (o) => d.toLocaleString(LANG, Object.assign({ hourCycle: 'h23' }, o));
    return ts && !isNaN(d)
      ? h('time', {
        datetime: d.toISOString(),
        title: f({ dateStyle: 'full', timeStyle: 'short' }),
        text: f({ hour: '2-digit', minute: '2-digit' })
      })
      : null;
  }

  // Text with its http(s) and mailto links made clickable. A link is an element made from the
  // parsed URL; everything else, markup and javascript: included, stays a text node.
  function rich(el, text) {
    let i = 0;
    text = String(text);
    text.replace(/\b(?:https?:\/\/|mailto:)[^\s<>"'`]+/gi, (m, at) => {
      let u = m.replace(/[.,;:!?]+$/, '');
      if (u.endsWith(')') && !u.includes('(')) u = u.slice(0, -1);
      let url = null;
      try {
        url = new URL(u);
      } catch {
        /* not a URL: stays text */
      }
      if (url && /^(https?|mailto):$/.test(url.protocol)) {
        el.append(
          text.slice(i, at),
          h('a', { href: url.href, target: '_blank', rel: 'noopener noreferrer nofollow', text: u })
        );
        i = at + u.length;
      }
    });
    el.append(text.slice(i));
    return el;
  }

  const CSS =
    ':host{all:initial}*{box-sizing:border-box}' +
    // .w covers the visual viewport (see place()); only the launcher and the panel take clicks.
    '.w{--c:' + (ds.color || '#2563eb') + ';position:fixed;left:var(--vx,0);top:var(--vy,0);width:var(--vw,100%);' +
    'height:var(--vh,100%);pointer-events:none;z-index:2147483000;' +
    'font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;color:#1f2937;text-align:left}' +
    'button,input,textarea{font:inherit;color:inherit}[hidden]{display:none!important}' +
    ':focus-visible{outline:3px solid #93c5fd;outline-offset:2px}' +
    '.l,.p{position:absolute;right:20px;pointer-events:auto}' +
    '.l{bottom:20px;width:58px;height:58px;border-radius:50%;border:0;background:var(--c);color:#fff;' +
    'box-shadow:0 6px 20px rgba(0,0,0,.25);cursor:pointer;display:grid;place-items:center}' +
    '.bd{position:absolute;top:-3px;right:-3px;min-width:20px;height:20px;padding:0 6px;border-radius:10px;' +
    'background:#dc2626;color:#fff;font-size:12px;font-weight:700;line-height:20px}' +
    '.p{bottom:94px;width:370px;height:560px;max-height:calc(100% - 114px);display:flex;' +
    'flex-direction:column;background:#fff;border-radius:14px;box-shadow:0 12px 40px rgba(0,0,0,.22);overflow:hidden;' +
    'animation:in .15s ease-out}' +
    '@keyframes in{from{opacity:0;transform:translateY(8px)}}' +
    'header{display:flex;align-items:center;gap:4px;padding:12px 10px 12px 16px;background:var(--c);color:#fff}' +
    'h2{flex:1;margin:0;font-size:16px;font-weight:600}.cn{font-size:12px;opacity:.85}' +
    '.hop{display:flex;align-items:center;gap:6px;font-size:13px;max-width:45%;white-space:nowrap;overflow:hidden}' +
    '.av{flex:none;width:28px;height:28px;border-radius:50%;background:var(--c);color:#fff;font-size:11px;' +
    'font-weight:700;display:grid;place-items:center}header .av{background:#fff;color:var(--c)}' +
    '.op{position:relative;padding-left:34px}.op .av{position:absolute;left:0;bottom:18px}' +
    '.b a{color:inherit;text-decoration:underline}' +
    '.ib{background:none;border:0;color:inherit;width:34px;height:34px;border-radius:8px;cursor:pointer;display:grid;' +
    'place-items:center}' +
    '.ib:hover{background:rgba(255,255,255,.18)}' +
    '.v{flex:1;display:flex;flex-direction:column;min-height:0;background:#f8fafc}' +
    '.hint{margin:10px 12px 0;padding:8px 10px;border-radius:8px;background:#fef3c7;color:#92400e;font-size:13px}' +
    'ol{flex:1;overflow-y:auto;margin:0;padding:12px;list-style:none;display:flex;flex-direction:column;gap:6px}' +
    'li{max-width:82%;display:flex;flex-direction:column}' +
    '.b{padding:8px 12px;border-radius:14px;white-space:pre-wrap;overflow-wrap:anywhere}' +
    '.op{align-self:flex-start}.op .b{background:#fff;border:1px solid #e5e7eb;border-bottom-left-radius:4px}' +
    '.me{align-self:flex-end;align-items:flex-end}' +
    '.me .b{background:var(--c);color:#fff;border-bottom-right-radius:4px}' +
    '.who,.st{font-size:11px;color:#6b7280;margin:0 4px 2px}.st{margin:2px 4px 0}' +
    '.failed .b{background:#fee2e2;color:#991b1b;cursor:pointer}' +
    '.sys{align-self:center;max-width:95%;text-align:center;color:#6b7280;font-size:12px}.sys .b{padding:2px 8px}' +
    '.mt{display:flex;gap:4px;margin-top:4px}.mt input{flex:1;min-width:0}' +
    '.nt{align-self:stretch;max-width:none}' +
    '.nt .b{background:#fff7ed;color:#9a3412;border:1px solid #fed7aa;border-radius:8px}' +
    'ol:empty::before{content:attr(data-empty);margin:auto;color:#6b7280;text-align:center}' +
    '.ty{padding:0 16px 6px;font-size:12px;color:#6b7280;font-style:italic}' +
    'form.c{display:flex;gap:8px;padding:10px;border-top:1px solid #e5e7eb;background:#fff;align-items:flex-end}' +
    'textarea,input{border:1px solid #d1d5db;border-radius:10px;padding:8px 10px;background:#fff;width:100%}' +
    '.c textarea{flex:1;resize:none;max-height:120px;min-height:40px}' +
    '.sb{flex:none;width:40px;height:40px;border-radius:10px;border:0;background:var(--c);color:#fff;cursor:pointer;' +
    'display:grid;place-items:center}' +
    '.f{padding:16px;overflow-y:auto;display:flex;flex-direction:column;gap:10px}.f p{margin:0;color:#374151}' +
    '.f label{display:flex;flex-direction:column;gap:4px;font-size:13px;color:#374151}' +
    '.pb{padding:10px 14px;border:0;border-radius:10px;background:var(--c);color:#fff;font-weight:600;cursor:pointer}' +
    '.pb:disabled{opacity:.6;cursor:default}' +
    '.sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}' +
    '.thx{margin:auto;padding:24px;text-align:center;display:flex;flex-direction:column;gap:16px;align-items:center;' +
    'font-size:15px}' +
    // Phones: the open panel fills the screen, and the launcher it would cover steps aside.
    '@media (max-width:480px){.l{right:12px;bottom:12px}.p{inset:0;width:auto;height:auto;' +
    'max-height:none;border-radius:0}.p:not([hidden])+.l{display:none}}' +
    '@media (prefers-reduced-motion:reduce){.p{animation:none}}';

  const host = D.createElement('chat-gateway-widget');
  host.setAttribute('style', 'all:initial!important');
  const root = host.attachShadow({ mode: 'open' });
  root.appendChild(h('style', { text: CSS }));

  const badge = h('span', { class: 'bd', 'data-testid': 'cw-badge', 'aria-hidden': 'true', hidden: true });
  const launcher = h(
    'button',
    {
      class: 'l',
      type: 'button',
      'data-testid': 'cw-launcher',
      'aria-label': t('open'),
      'aria-expanded': 'false',
      'aria-controls': 'cw-panel',
      onclick: () => (isOpen ? close() : open())
    },
    [h('span', { html: svg(I_CHAT, 26) }), badge]
  );
  const titleEl = h('h2', { id: 'cw-title', text: t('title') });
  const connEl = h('span', { class: 'cn', 'data-testid': 'cw-conn', role: 'status' });
  const opEl = h('span', { class: 'hop', 'data-testid': 'cw-operator' });
  const trBtn = h('button', {
    class: 'ib',
    type: 'button',
    'data-testid': 'cw-transcript',
    'aria-label': t('tr'),
    title: t('tr'),
    html: svg(I_DL),
    onclick: transcript,
    hidden: true
  });
  const hint = h('div', { class: 'hint', 'data-testid': 'cw-hint', role: 'status', text: t('busy'), hidden: true });
  const list = h('ol', {
    'data-testid': 'cw-messages',
    'data-empty': t('hi'),
    role: 'log',
    'aria-live': 'polite',
    'aria-label': t('msgs'),
    tabindex: '0'
  });
  const typingEl = h('div', { class: 'ty', 'data-testid': 'cw-typing', 'aria-live': 'polite', hidden: true });
  const input = h('textarea', {
    id: 'cw-input', 'data-testid': 'cw-input', rows: '1', placeholder: t('ph'), maxlength: '4000', oninput: typed,
    onkeydown: (e) => {
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        submit();
      }
    }
  });
  let sendB;
  const chatV = h('div', { class: 'v' }, [
    hint,
    list,
    typingEl,
    h('form', { class: 'c', onsubmit: (e) => (e.preventDefault(), submit()) }, [
      h('label', { class: 'sr', for: 'cw-input', text: t('message') }),
      input,
      (sendB = h('button', {
        class: 'sb',
        type: 'submit',
        'data-testid': 'cw-send',
        'aria-label': t('send'),
        title: t('send'),
        html: svg(I_SEND)
      }))
    ])
  ]);

  function field(id, label, type, req) {
    const tag = type === 'area' ? 'textarea' : 'input';
    return h('label', {}, [
      h('span', { text: label + (req ? ' *' : '') }),
      h(tag, {
        'data-testid': id,
        name: id.split('-').pop(),
        type: tag === 'input' ? type : null,
        rows: tag === 'textarea' ? '4' : null,
        required: req,
        autocomplete: type === 'text' ? 'name' : type === 'area' ? null : type
      })
    ]);
  }
  const values = (form) => {
    const o = {};
    form.querySelectorAll('input,textarea').forEach((i) => i.value.trim() && (o[i.name] = i.value.trim()));
    return o;
  };
  const offForm = h('form', { class: 'f', 'data-testid': 'cw-offline-form', onsubmit: submitOffline }, [
    h('p', { text: t('offI') }),
    field('cw-off-name', t('name'), 'text', true),
    field('cw-off-email', t('email'), 'email', true),
    field('cw-off-phone', t('phone'), 'tel'),
    field('cw-off-message', t('message'), 'area', true),
    h('button', { class: 'pb', type: 'submit', 'data-testid': 'cw-off-submit', text: t('submit') })
  ]);
  const preForm = h('form', { class: 'f', 'data-testid': 'cw-prechat-form', onsubmit: (e) => {
    e.preventDefault();
    S.prechat = values(preForm);
    save();
    render(true);
  } }, [
    h('p', { text: t('preI') }),
    field('cw-pre-name', t('name'), 'text', true),
    field('cw-pre-email', t('email'), 'email'),
    field('cw-pre-phone', t('phone'), 'tel'),
    h('button', { class: 'pb', type: 'submit', 'data-testid': 'cw-pre-submit', text: t('start') })
  ]);
  const thanksV = h('div', { class: 'thx', 'data-testid': 'cw-thanks', role: 'status' }, [
    h('p', { text: t('thanks') }),
    h('button', {
      class: 'pb',
      type: 'button',
      text: t('again'),
      onclick: () => ((S.thanks = 0), save(), render(true))
    })
  ]);
  const views = { chat: chatV, offline: offForm, prechat: preForm, thanks: thanksV };
  const panel = h('section', {
    class: 'p', id: 'cw-panel', role: 'dialog', 'aria-labelledby': 'cw-title', 'data-testid': 'cw-panel', hidden: true,
    onkeydown: (e) => e.key === 'Escape' && close()
  }, [
    h('header', {}, [
      titleEl,
      opEl,
      connEl,
      trBtn,
      h('button', {
        class: 'ib',
        type: 'button',
        'data-testid': 'cw-close',
        'aria-label': t('close'),
        title: t('close'),
        html: svg(I_X),
        onclick: close
      })
    ]),
    chatV,
    offForm,
    preForm,
    thanksV
  ]);
  const wrap = h('div', { class: 'w', lang: LANG }, [panel, launcher]);
  root.appendChild(wrap);
  // A page wider than a phone's screen makes the layout viewport, where position:fixed lives,
  // larger than what the phone shows: the widget follows the visual viewport instead.
  const vv = W.visualViewport;
  const place = () =>
    (wrap.style.cssText =
      '--vx:' + vv.offsetLeft + 'px;--vy:' + vv.offsetTop + 'px;--vw:' + vv.width + 'px;--vh:' + vv.height + 'px');
  if (vv) ['resize', 'scroll'].forEach((e) => vv.addEventListener(e, place)), place();

  // ------------------------------------------------------------ messages

  // Entries keyed by "conv:seq" (stored) or "c:cid" (own, not yet stored): each shown once.
  const entries = new Map();
  const els = new Map();
  const keyOf = (conv, seq) => conv + ':' + seq;
  S.msgs.forEach((e) => entries.set(e.k, e));
  S.out.forEach(
    (o) =>
      entries.has('c:' + o.cid) ||
      entries.set('c:' + o.cid, {
        k: 'c:' + o.cid,
        cid: o.cid,
        conv: o.conv,
        role: 'visitor',
        text: o.text,
        ts: o.ts,
        st: 'sending'
      })
  );

  function sorted() {
    const ci = (c) => {
      const i = S.convs.indexOf(c);
      return i < 0 ? 1e9 : i;
    };
    const sq = (e) => (typeof e.seq === 'number' ? e.seq : 1e14);
    return Array.from(entries.values()).sort((a, b) => ci(a.conv) - ci(b.conv) || sq(a) - sq(b) || a.ts - b.ts);
  }
  function noteConv(id) {
    if (id && S.convs.indexOf(id) < 0) S.convs = S.convs.concat(id).slice(-5);
  }
  const byCid = (cid) => entries.get('c:' + cid) || Array.from(entries.values()).find((e) => e.cid === cid);

  /** A stored message (live or from history); returns true when it is new here. */
  function addMsg(m) {
    noteConv(m.conv);
    const k = keyOf(m.conv, m.seq);
    if (entries.has(k)) return false;
    // A supervisor who took the conversation over writes as staff: shown as the operator is.
    if (m.from.role === 'supervisor') m.from.role = 'operator';
    const role = m.from.role;
    const own = m.cid && role === 'visitor' && byCid(m.cid);
    if (own) {
      own.seq = m.seq;
      own.conv = m.conv;
      if (own.st === 'sending' || own.st === 'failed') own.st = 'sent';
      if (own.k !== k) {
        entries.delete(own.k);
        const el = els.get(own.k);
        els.delete(own.k);
        if (el) els.set(k, el);
        own.k = k;
        entries.set(k, own);
      }
      S.out = S.out.filter((o) => o.cid !== m.cid);
    } else {
      entries.set(k, {
        k,
        conv: m.conv,
        seq: m.seq,
        cid: m.cid,
        role,
        name: m.from.name,
        text: m.text,
        code: m.code,
        args: m.args,
        ts: m.ts,
        st: role === 'visitor' ? 'sent' : ''
      });
    }
    applyRead(m.conv);
    return true;
  }

  function applyRead(conv) {
    const up = S.seen[conv] || 0;
    entries.forEach((e) => {
      if (e.conv === conv && e.role === 'visitor' && e.seq <= up) e.st = 'read';
    });
  }

  function entryEl(e) {
    let el = els.get(e.k);
    // A bot (an integration writing through the HTTP API) speaks like the operator, by name.
    const op = e.role === 'operator' || e.role === 'bot';
    const cls = e.role === 'visitor' ? 'me' : op ? 'op' : e.role === 'notice' ? 'nt' : 'sys';
    if (!el) {
      const me = e.role === 'visitor';
      const who = op && (e.role === 'bot' || !S.noName) && e.name;
      const testid = e.end ? 'cw-ended' : e.role === 'notice' ? 'cw-notice' : 'cw-msg';
      el = h('li', { class: cls, 'data-testid': testid, 'data-role': e.role }, [
        op ? avatar(who) : null,
        who ? h('span', { class: 'who', text: e.name }) : null,
        e.role === 'system'
          ? h('div', { class: 'b', text: e.end ? e.text : sysText(e) })
          : rich(h('div', { class: 'b' }), e.text),
        op || me ? h('span', { class: 'st', 'aria-live': 'off' }, [timeEl(e.ts), me && D.createTextNode('')]) : null,
        e.end && settings.mail_transcripts ? mailForm(e.conv) : null
      ]);
      if (me) el.addEventListener('click', () => e.st === 'failed' && retry(e));
      els.set(e.k, el);
    }
    if (typeof e.seq === 'number' && !e.end) el.setAttribute('data-seq', e.seq);
    if (e.role === 'visitor') {
      el.className = cls + (e.st === 'failed' || e.st === 'ns' ? ' failed' : '');
      el.setAttribute('data-state', e.st);
      el.lastChild.lastChild.data = ' · ' + t(e.st || 'sent');
    }
    return el;
  }

  function renderList() {
    const all = sorted();
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 60;
    all.forEach((e, i) => {
      const el = entryEl(e);
      if (list.children[i] !== el) list.insertBefore(el, list.children[i] || null);
    });
    while (list.children.length > all.length) list.lastChild.remove();
    if (atBottom || isOpen) list.scrollTop = list.scrollHeight;
  }

  // ------------------------------------------------------------ view

  function mode() {
    if (dead) return 'chat';
    if (S.thanks) return 'thanks';
    if (S.out.some((o) => o.off)) return 'offline';
    if ((S.conv && (!S.closed || endedHere)) || S.out.length) return 'chat';
    if (avail.status === 'offline' || (avail.status === 'busy' && avail.widget_when_away === 'offline'))
      return 'offline';
    if (ds.prechat === 'true' && !S.prechat) return 'prechat';
    return 'chat';
  }

  let shown = '';
  function render(focus) {
    const m = mode();
    if (m !== shown) {
      // The offline form gives way to the chat: the message typed there comes along.
      if (shown === 'offline' && !input.value) input.value = offForm.elements.message.value;
      shown = m;
      for (const k in views) views[k].hidden = k !== m;
      panel.setAttribute('data-mode', m);
      titleEl.textContent = t(m === 'offline' ? 'offT' : 'title');
      if (focus !== false && isOpen) focusView();
    }
    hint.hidden = !(m === 'chat' && avail.status === 'busy' && !S.assigned && !(S.conv && S.closed));
    trBtn.hidden = !S.conv;
    // The operator who has the conversation, in the header.
    const on = m === 'chat' && S.assigned && !S.closed;
    const n = S.noName ? '' : S.opn || '';
    const k = on ? n || '-' : '';
    if (opEl.dataset.k !== k) {
      opEl.dataset.k = k;
      opEl.hidden = !on;
      opEl.replaceChildren(avatar(n), h('span', { text: n || t('op') }));
    }
    offForm.querySelector('button').disabled = S.out.some((o) => o.off);
    input.disabled = sendB.disabled = !!dead;
    badge.hidden = !S.unread || isOpen;
    badge.textContent = S.unread;
    launcher.setAttribute('aria-label', t('open') + (S.unread ? ', ' + t('unread', S.unread) : ''));
    renderList();
  }

  function focusView() {
    const v = views[shown];
    const f = v && v.querySelector('textarea,input,button');
    if (f) f.focus();
  }

  // `focus === false`: reopened by itself after a page load, so it must not steal the focus.
  function open(focus) {
    if (isOpen) return;
    isOpen = true;
    S.open = 1;
    S.unread = 0;
    panel.hidden = false;
    launcher.setAttribute('aria-expanded', 'true');
    shown = '';
    render(focus !== false);
    checkAvail();
    connect();
    markRead();
    save();
    ev.emit('open');
  }

  function close() {
    if (!isOpen) return;
    const inside = root.activeElement != null;
    isOpen = false;
    S.open = 0;
    panel.hidden = true;
    launcher.setAttribute('aria-expanded', 'false');
    stopTyping();
    if (inside) launcher.focus();
    save();
    render(false);
    ev.emit('close');
  }

  // ------------------------------------------------------------ gateway

  function checkAvail() {
    return fetch(BASE + '/v1/sites/' + encodeURIComponent(SITE) + '/availability', { cache: 'no-store' })
      .then((r) => (r.ok ? r.json() : null))
      .then((a) => {
        if (!a || !a.status) return;
        const changed = a.status !== avail.status;
        avail = { status: a.status, widget_when_away: a.widget_when_away || 'busy' };
        render(false);
        if (changed) ev.emit('status', a.status);
      }, noop);
  }

  function session(retry) {
    const body = { site: SITE };
    if (S.token && !retry) body.visitor_token = S.token;
    const req = { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) };
    return fetch(BASE + '/v1/visitor/session', req).then((r) => {
      if (!r.ok) {
        // 403 (banned, origin refused), 404 (unknown key): stop as on 4003, no new visitor id.
        if (r.status === 403 || r.status === 404) r.json().then((j) => stop(j && j.error), () => stop());
        // Any other refusal of the old token: start over as a new visitor.
        else if (body.visitor_token && r.status < 500) return session(true);
        throw new Error('visitor session: HTTP ' + r.status);
      }
      return r.json().then((j) => {
        S.token = j.token;
        S.vid = j.visitor_id;
        S.exp = j.expires_at;
        save();
        return j.token;
      });
    });
  }

  function connect() {
    if (client) return client;
    const fresh = S.token && (!S.exp || S.exp > Date.now() + 60000);
    client = new P.Client({
      url: P.wsUrl(BASE),
      token: fresh ? S.token : null,
      getToken: () => session(),
      cursors: S.cursors,
      lang: LANG,
      device: P.deviceId()
    });
    client.on('state', (s) => {
      panel.setAttribute('data-conn', s);
      connEl.textContent = s === 'connecting' || s === 'waiting' ? t('conn') : '';
    });
    // 4003 (forbidden, banned): the client stays closed, and says so.
    client.on('close', (e) => e.action === 'stop' && e.code !== P.CLOSE.NORMAL && stop(e.reason));
    client.on('welcome', onWelcome);
    client.on('msg', onMsg);
    client.on('cursor', () => save());
    client.on('typing', (f) => {
      if (f.from.role === 'visitor' || f.conv !== S.conv) return;
      clearTimeout(typingEl._t);
      typingEl.hidden = !f.on;
      typingEl.textContent = t('typing', (!S.noName && f.from.name) || t('op'));
      if (f.on) typingEl._t = setTimeout(() => (typingEl.hidden = true), 8000);
    });
    client.on('read', (f) => {
      if (f.by.role === 'visitor') return;
      S.seen[f.conv] = Math.max(S.seen[f.conv] || 0, f.seq);
      applyRead(f.conv);
      save();
      render(false);
    });
    client.on('conv', (f) => onConv(f.conv, f.event));
    client.on('notice', (f) => {
      const conv = f.conv || S.conv;
      const k = 'n:' + conv + ':' + f.code;
      entries.delete(k);
      els.delete(k);
      entries.set(k, { k, conv, seq: client.cursor(conv) + 0.5, role: 'notice', text: f.text, ts: Date.now() });
      render(false);
    });
    client.connect();
    return client;
  }

  // `why`: the gateway's word for it: 'banned' (a hello or a session refused), or 'forbidden'
  // (an open connection closed: a ban, or the page's origin no longer allowed; the session,
  // asked once, tells which).
  function stop(why) {
    if (client) client.disconnect();
    if (why === 'forbidden' && !asked++) session().catch(noop);
    dead = why === 'banned' ? 'ban' : 'na';
    // Nothing goes out any more: what waited says "Not sent" instead of "Sending…" for ever, and
    // the "write again" of an ended conversation no longer holds.
    S.out.forEach((o) => {
      const e = byCid(o.cid);
      if (e) e.st = 'ns';
    });
    S.out = [];
    entries.forEach((e, k) => (e.end || k === 'n:stop') && (entries.delete(k), els.delete(k)));
    entries.set('n:stop', { k: 'n:stop', conv: S.conv, seq: 1e15 - 1, role: 'notice', text: t(dead), ts: Date.now() });
    save();
    render(false);
  }

  function onWelcome(f) {
    settings = f.settings || {};
    S.noName = settings.show_operator_name === false;
    const convs = f.conversations || [];
    const mine = convs.find((c) => c.id === S.conv);
    if (mine) onConv(mine);
    else if (S.conv && !S.closed) {
      // Closed while we were away: pick up its last messages, then show it as ended.
      const gone = S.conv;
      client
        .history(gone)
        .then(
          (r) => ((r.messages || []).forEach((m) => addMsg(Object.assign({ conv: gone }, m))), render(false)),
          noop
        );
      onConv({ id: gone, state: 'closed' }, 'closed');
    }
    if ((!S.conv || S.closed) && convs.length) onConv(convs[convs.length - 1]);
    tell(1);
    pump();
    markRead();
    render(false);
  }

  // The end of a conversation: the visitor may have its transcript e-mailed (the site allows it).
  function mailForm(conv) {
    const f = h('form', { class: 'mt', 'data-testid': 'cw-mail-transcript' }, [
      h('input', { type: 'email', required: true, name: 'email', 'aria-label': t('email'), placeholder: t('email') }),
      h('button', { type: 'submit', text: t('mt') })
    ]);
    f.elements.email.value = (S.prechat && S.prechat.email) || '';
    f.onsubmit = (ev) => {
      ev.preventDefault();
      const email = f.elements.email.value.trim();
      client.request({ t: 'mail_transcript', conv, email }).then(
        () => f.replaceWith(h('div', { class: 'b', 'data-testid': 'cw-mailed', text: t('mtd', email) })),
        noop
      );
    };
    return f;
  }

  function onConv(c, event) {
    if (!c || (S.conv && c.id !== S.conv && event)) return;
    noteConv(c.id);
    const was = S.closed;
    S.conv = c.id;
    S.closed = c.state === 'closed';
    S.assigned = c.operator ? 1 : 0;
    S.opn = c.operator && c.operator.name;
    if (S.closed && !was) {
      endedHere = true;
      const k = 'end:' + c.id;
      entries.set(k, { k, conv: c.id, seq: 1e15, role: 'system', end: 1, text: t('ended'), ts: Date.now() });
      typingEl.hidden = true;
      stopTyping();
    }
    save();
    render(false);
    if (event) ev.emit('conversation', { event, conv: c.id, state: c.state });
  }

  function onMsg(m) {
    if (!addMsg(m)) return;
    if (m.from.role === 'operator') {
      typingEl.hidden = true;
      S.assigned = 1;
      S.thanks = 0;
      if (m.from.name) S.opn = m.from.name;
      // Unread: the operator's messages, not system lines.
      if (!isOpen || D.hidden) S.unread = (S.unread || 0) + 1;
    }
    save();
    render(false);
    markRead();
    const text = m.from.role === 'system' ? sysText(m) : m.text;
    ev.emit('message', { conv: m.conv, seq: m.seq, role: m.from.role, name: m.from.name, text, ts: m.ts });
  }

  function markRead() {
    if (!isOpen || D.hidden) return;
    if (S.unread) (S.unread = 0), render(false);
    if (!client || !S.conv) return;
    const seq = client.cursor(S.conv);
    if (seq > (S.rd[S.conv] || 0) && client.read(S.conv, seq)) S.rd[S.conv] = seq;
  }
  D.addEventListener('visibilitychange', markRead);

  // ------------------------------------------------------------ sending

  const params = () => {
    const p = Object.assign({}, S.params);
    return Object.keys(p).length ? p : undefined;
  };

  // Details given while a conversation is open reach it with `identify`. S.idn counts the
  // changes: it is cleared only by an answer (or a start) that carried the latest of them.
  function tell(again) {
    if (!again) S.idn = (S.idn || 0) + 1;
    save();
    const v = S.idn;
    if (v && client && S.conv && !S.closed)
      client.identify(S.conv, pick(S.prechat), S.params).then(() => S.idn === v && ((S.idn = 0), save()), noop);
  }

  let starting = null;
  function startConv(offline) {
    if (starting) return starting;
    const prev = S.conv;
    const told = S.idn;
    const pre = S.prechat && Object.keys(S.prechat).length ? S.prechat : undefined;
    starting = client
      .start({
        queue: ds.queue,
        prechat: pre,
        params: params(),
        // Left in the offline form: the console marks it.
        offline: offline || null,
        page: { url: location.href, title: D.title, referrer: D.referrer }
      })
      .then((ok) => {
        if (prev && prev !== ok.conv.id) client.forget(prev);
        S.closed = false;
        S.assigned = 0;
        onConv(ok.conv);
        // Details given while the start was on its way did not go with it.
        if (S.idn === told) S.idn = 0;
        else tell(1);
        ev.emit('conversation', {
          event: 'started',
          conv: ok.conv.id,
          state: ok.conv.state,
          previous: ok.conv.previous
        });
        return ok.conv.id;
      })
      .finally(() => (starting = null));
    return starting;
  }

  // Messages handed to the client on this page load (it retries them itself across reconnects).
  const handed = {};
  let pumping = false;
  function pump() {
    if (pumping || !client || !client.ready) return;
    const todo = S.out.filter((o) => !handed[o.cid]);
    if (!todo.length) return;
    pumping = true;
    const conv = S.conv && !S.closed ? Promise.resolve(S.conv) : startConv(todo.some((o) => o.off));
    conv
      .then(
        (id) => {
          todo.forEach((o) => {
            handed[o.cid] = 1;
            o.conv = id;
            const e = byCid(o.cid);
            if (e) e.conv = id;
            client.send(id, o.text, { cid: o.cid }).then((ack) => acked(o, ack), (err) => failed(o, err));
          });
          save();
          render(false);
        },
        (err) => {
          if (err.code !== 'disconnected' && err.code !== 'timeout') todo.forEach((o) => failed(o, err));
        }
      )
      .then(() => {
        pumping = false;
        if (client.ready && S.out.some((o) => !handed[o.cid])) pump();
      });
  }

  function queueMsg(text, off) {
    if (dead) return;
    const o = { cid: P.newCid(), text, conv: S.conv && !S.closed ? S.conv : null, ts: Date.now(), off: off ? 1 : 0 };
    S.out.push(o);
    entries.set('c:' + o.cid, {
      k: 'c:' + o.cid,
      cid: o.cid,
      conv: o.conv,
      role: 'visitor',
      text,
      ts: o.ts,
      st: 'sending'
    });
    save();
    render(false);
    connect();
    pump();
    return o;
  }

  function acked(o, ack) {
    S.out = S.out.filter((x) => x.cid !== o.cid);
    const e = byCid(o.cid);
    if (e) addMsg({ conv: ack.conv, seq: ack.seq, cid: o.cid, from: { role: 'visitor' }, text: o.text, ts: ack.ts });
    if (o.off) (S.thanks = 1), offForm.reset();
    save();
    render();
  }

  function failed(o, err) {
    // The conversation closed under us: start a new one and send there, once.
    if (!o.again && /not_found|conflict|forbidden/.test(err.code)) {
      o.again = 1;
      handed[o.cid] = 0;
      S.closed = true;
      return pump();
    }
    S.out = S.out.filter((x) => x.cid !== o.cid);
    const e = byCid(o.cid);
    if (e) e.st = 'failed';
    save();
    render(false);
  }

  function retry(e) {
    entries.delete(e.k);
    els.delete(e.k);
    queueMsg(e.text);
  }

  function submit() {
    const text = input.value.trim();
    if (!text) return;
    input.value = '';
    grow();
    stopTyping();
    queueMsg(text);
  }

  function submitOffline(e) {
    e.preventDefault();
    const v = values(offForm);
    S.prechat = { name: v.name, email: v.email, phone: v.phone };
    queueMsg(v.message, true);
  }

  // Typing: leading + trailing throttle of the preview, "off" after idle or on send.
  let typT = null;
  let idleT = null;
  let dirty = false;
  let typingOn = false;
  function grow() {
    input.style.height = 'auto';
    input.style.height = Math.min(input.scrollHeight + 2, 120) + 'px';
  }
  function typed() {
    grow();
    if (!client || !S.conv || S.closed) return;
    clearTimeout(idleT);
    if (!input.value.trim()) return stopTyping();
    idleT = setTimeout(stopTyping, 4000);
    dirty = true;
    if (!typT) flushTyping();
  }
  function flushTyping() {
    typT = null;
    if (!dirty) return;
    dirty = false;
    typingOn = client.typing(S.conv, true, input.value) || typingOn;
    typT = setTimeout(flushTyping, 1500);
  }
  function stopTyping() {
    clearTimeout(idleT);
    dirty = false;
    if (typingOn && client && S.conv) client.typing(S.conv, false);
    typingOn = false;
  }

  // ------------------------------------------------------------ transcript

  function transcript() {
    const conv = S.conv;
    if (!conv) return;
    connect()
      .whenReady()
      .then(() => client.fullHistory(conv))
      .then((msgs) => {
        const who = (m) =>
          m.from.role === 'visitor' ? t('you') : m.from.role === 'system' ? '*' : m.from.name || t('op');
        const txt = (m) => (m.from.role === 'system' ? sysText(m) : m.text);
        const lines = msgs.map((m) => '[' + new Date(m.ts).toLocaleString(LANG) + '] ' + who(m) + ': ' + txt(m));
        const url = URL.createObjectURL(
          new Blob([t('title') + ' — ' + location.hostname + '\n\n' + lines.join('\n') + '\n'], {
            type: 'text/plain;charset=utf-8'
          })
        );
        const a = h('a', { href: url, download: 'chat-' + conv + '.txt' });
        D.body.appendChild(a);
        a.click();
        a.remove();
        setTimeout(() => URL.revokeObjectURL(url), 30000);
      }, noop);
  }

  // ------------------------------------------------------------ API

  const pick = (o) => {
    const r = {};
    ['name', 'email', 'phone'].forEach((k) => o && o[k] && (r[k] = String(o[k])));
    return r;
  };
  const api = {
    _loaded: true,
    open: () => open(),
    close,
    toggle: () => (isOpen ? close() : open()),
    // Pages repeat what they know on every load: only a change goes to the gateway.
    identify(o) {
      const was = JSON.stringify(S.prechat || {});
      S.prechat = Object.assign({}, S.prechat, pick(o));
      tell(was === JSON.stringify(S.prechat));
      render(false);
    },
    setParams(o) {
      const was = JSON.stringify(S.params || {});
      S.params = S.params || {};
      for (const k in o || {}) S.params[k] = String(o[k]);
      tell(was === JSON.stringify(S.params));
    },
    on(e, f) {
      ev.on(e, f);
      return api;
    },
    off(e, f) {
      ev.off(e, f);
      return api;
    }
  };
  const queued = (W.ChatWidget && W.ChatWidget.q) || [];
  W.ChatWidget = api;

  // Test hooks, never part of the API: only a page that set window.__chatGatewayTestHooks = {}
  // before this script ran (the browser tests do) gets them, in that object. drop() cuts the
  // socket as a network failure would, drop(true) holds it down until resume().
  const hooks = W.__chatGatewayTestHooks;
  if (hooks && typeof hooks === 'object') {
    hooks.drop = (hold) => client && (hold ? client.suspend() : client.drop());
    hooks.resume = () => client && client.resume();
    hooks.state = () => ({
      conn: client ? client.state : 'idle',
      conv: S.conv,
      closed: !!S.closed,
      mode: shown,
      out: S.out.length
    });
  }

  function boot() {
    D.body.appendChild(host);
    render(false);
    checkAvail();
    // Availability, until an operator has the conversation in the open panel.
    setInterval(() => (!isOpen || !S.assigned || S.closed) && checkAvail(), Math.max(+ds.poll || 30, 1) * 1e3);
    if ((S.conv && !S.closed) || S.out.length) connect();
    if (S.open) open(false);
    queued.forEach((c) => api[c[0]] && api[c[0]].apply(api, c[1] || []));
    W.dispatchEvent(new Event('chatwidget:ready'));
  }
  if (D.body) boot();
  else D.addEventListener('DOMContentLoaded', boot);
})();
