/*! chat-gateway operator console (served at /console.js, loaded after /protocol.js).
 *
 * One page an operator keeps open all day: sign-in by token, status switch, the queue, offers,
 * my conversations, the conversation view (history, typing with the visitor's sneak peek, read
 * receipts, canned responses, drafts), transfer, close, tags, the visitor's details, and for
 * supervisors every operator with assign and watch. All wire work goes through the shared
 * ChatGatewayProtocol.Client; this file only keeps view state and renders it.
 */
(function () {
  'use strict';
  const P = window.ChatGatewayProtocol;
  const $ = (id) => document.getElementById(id);
  const TOKEN_KEY = 'cgw-console-token';
  const DRAFTS_KEY = 'cgw-console-drafts';
  const SOUND_KEY = 'cgw-console-sound';

  const DEFAULT_CANNED = [
    { shortcut: 'hi', text: 'Hello {{visitor.name}}, my name is {{operator.name}}. How can I help you?' },
    { shortcut: 'wait', text: 'One moment please, I am checking that for you.' },
    { shortcut: 'bye', text: 'Thank you for contacting us, {{visitor.name}}. Have a nice day!' }
  ];

  // ------------------------------------------------------------------ state

  const st = {
    client: null,
    me: null,
    settings: {},
    status: null,
    queues: new Map(), // queue id -> [Conversation]
    queueCounts: new Map(), // queue id -> how many wait (a listing may show fewer)
    offers: new Map(), // conv id -> {conv, expires_at}
    mine: new Map(), // conv id -> Conversation (assigned to me, or watched)
    watched: new Set(),
    operators: new Map(), // operator id -> {id, name, status, online, load}
    msgs: new Map(), // conv id -> Map(key -> entry)
    complete: new Set(), // conv ids whose history is fully loaded
    previous: new Map(), // conv id -> [elements] of the conversation it continues (`previous`)
    typing: new Map(), // conv id -> {preview, timer}
    visitorRead: new Map(), // conv id -> seq the visitor has read
    sentRead: new Map(), // conv id -> seq we reported as read
    unread: new Map(), // conv id -> count
    drafts: loadJSON(DRAFTS_KEY, {}),
    selected: null, // conv id shown in the view
    peek: null, // a queued Conversation shown before accepting
    seenQueued: new Set(),
    accepting: new Set(), // conv ids of my own accept requests in flight (no alert for those)
    primedQueues: new Set() // queues whose first snapshot arrived (later arrivals are news)
  };

  function loadJSON(key, dflt) {
    try {
      return JSON.parse(localStorage.getItem(key)) || dflt;
    } catch (e) {
      return dflt;
    }
  }

  // ------------------------------------------------------------------ small helpers

  function h(tag, attrs, kids) {
    const el = document.createElement(tag);
    for (const k in attrs || {}) {
      const v = attrs[k];
      if (v == null || v === false) continue;
      if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else if (k === 'text') el.textContent = v;
      else el.setAttribute(k, v === true ? '' : v);
    }
    for (const c of kids || []) if (c != null) el.append(c);
    return el;
  }

  function toast(text) {
    const t = h('div', { class: 'toast', 'data-testid': 'toast', role: 'status', text });
    $('toasts').append(t);
    setTimeout(() => t.remove(), 5000);
  }

  const shortId = (id) => String(id || '').slice(-6);
  const visitorName = (c) => (c && c.visitor && c.visitor.name) || 'Visitor ' + shortId(c && c.visitor && c.visitor.id);
  const clock = (ts) => new Date(ts).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  function ago(ts) {
    const s = Math.max(0, Math.round((Date.now() - ts) / 1000));
    if (s < 60) return s + ' s';
    if (s < 3600) return Math.round(s / 60) + ' min';
    return Math.round(s / 3600) + ' h';
  }
  const conv = (id) => st.mine.get(id) || (st.offers.get(id) || {}).conv || (st.peek && st.peek.id === id ? st.peek : null) || queued(id);
  function queued(id) {
    for (const list of st.queues.values()) for (const c of list) if (c.id === id) return c;
    return null;
  }
  const isReadOnly = (id) => st.watched.has(id) || !st.mine.has(id) || (st.mine.get(id) || {}).state === 'closed';
  const chats = (n) => n + (n === 1 ? ' chat' : ' chats');
  const errText = (e) => (e && (e.message || e.code)) || 'failed';

  // ------------------------------------------------------------------ sound and notifications

  let audio = null;
  let soundOn = localStorage.getItem(SOUND_KEY) !== 'off';
  $('sound-toggle').checked = soundOn;
  $('sound-toggle').addEventListener('change', (e) => {
    soundOn = e.target.checked;
    localStorage.setItem(SOUND_KEY, soundOn ? 'on' : 'off');
    unlockAudio();
  });
  function unlockAudio() {
    try {
      audio = audio || new (window.AudioContext || window.webkitAudioContext)();
      if (audio.state === 'suspended') audio.resume();
    } catch (e) {
      audio = null;
    }
  }
  // Browsers allow audio only after a user gesture: unlock on the first one.
  document.addEventListener('pointerdown', unlockAudio, { once: true });
  document.addEventListener('keydown', unlockAudio, { once: true });

  function beep(freq) {
    if (!soundOn) return;
    try {
      unlockAudio();
      if (!audio) return;
      const o = audio.createOscillator();
      const g = audio.createGain();
      const t0 = audio.currentTime;
      o.type = 'sine';
      o.frequency.value = freq || 880;
      g.gain.setValueAtTime(0.0001, t0);
      g.gain.exponentialRampToValueAtTime(0.25, t0 + 0.02);
      g.gain.exponentialRampToValueAtTime(0.0001, t0 + 0.35);
      o.connect(g).connect(audio.destination);
      o.start(t0);
      o.stop(t0 + 0.4);
    } catch (e) {
      /* no audio device */
    }
  }

  function notify(title, body, convId) {
    if (!('Notification' in window) || Notification.permission !== 'granted') return;
    if (document.visibilityState === 'visible' && document.hasFocus()) return;
    try {
      const n = new Notification(title, { body, tag: convId });
      n.onclick = () => {
        window.focus();
        if (st.mine.has(convId)) select(convId);
        n.close();
      };
    } catch (e) {
      /* not allowed in this context */
    }
  }
  function renderNotifyButton() {
    $('notify-btn').hidden = !('Notification' in window) || Notification.permission !== 'default';
  }
  $('notify-btn').addEventListener('click', () => Notification.requestPermission().then(renderNotifyButton));
  renderNotifyButton();

  // ------------------------------------------------------------------ sign-in

  function tokenFromFragment() {
    const m = location.hash.match(/(?:^#|&)token=([^&]+)/);
    if (!m) return null;
    const tok = decodeURIComponent(m[1]);
    localStorage.setItem(TOKEN_KEY, tok);
    // The token must not linger in the address bar, history or screenshots.
    history.replaceState(null, '', location.pathname + location.search);
    return tok;
  }

  function showSignin(message) {
    $('signin').hidden = false;
    $('signin-error').textContent = message || '';
    $('token-input').focus();
  }

  $('signin-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const tok = $('token-input').value.trim();
    if (!tok) return;
    localStorage.setItem(TOKEN_KEY, tok);
    $('token-input').value = '';
    $('signin').hidden = true;
    start(tok);
  });

  $('signout').addEventListener('click', () => {
    localStorage.removeItem(TOKEN_KEY);
    if (st.client) st.client.disconnect();
    location.reload();
  });

  // ------------------------------------------------------------------ connection

  function start(token) {
    if (st.client) st.client.disconnect();
    const c = new P.Client({ url: P.wsUrl(location.origin), token });
    st.client = c;
    c.on('state', renderConn);
    c.on('welcome', onWelcome);
    c.on('msg', onMsg);
    c.on('queue', onQueue);
    c.on('offer', onOffer);
    c.on('operator', onOperator);
    c.on('conv', (f) => onConvEvent(f.event, f.conv, f.reason));
    c.on('typing', onTyping);
    c.on('read', onRead);
    c.on('draft', onDraftEcho);
    c.on('notice', (f) => toast(f.text));
    c.on('unauthorized', () => {
      localStorage.removeItem(TOKEN_KEY);
      showSignin('The token was rejected or has expired. Sign in again.');
    });
    c.on('close', (e) => {
      if (e.code === P.CLOSE.FORBIDDEN) showSignin('Access denied for this token.');
    });
    c.on('error', (e) => {
      // Error frames nobody asked for are shown; anything else is a bug worth a log line.
      if (e && e.code && e.frame) toast(errText(e));
      else console.error(e);
    });
    c.connect();
  }

  function renderConn(s) {
    const el = $('conn-state');
    el.dataset.state = s;
    el.textContent = { open: '● Connected', connecting: 'Connecting…', waiting: 'Reconnecting…', closed: 'Disconnected', idle: '' }[s] || s;
    renderStatus();
  }

  const isStaff = () => st.me && (st.me.role === 'operator' || st.me.role === 'supervisor');
  const isSup = () => st.me && st.me.role === 'supervisor';

  function onWelcome(f) {
    st.me = f.me;
    st.settings = f.settings || {};
    if (!isStaff()) {
      showSignin('This token is not an operator token.');
      st.client.disconnect();
      return;
    }
    document.body.classList.toggle('sup', isSup());
    // Supervisors do not take conversations; what they have open is what they watch.
    $('my-title').textContent = isSup() ? 'Watching' : 'My chats';
    $('me-name').textContent = f.me.name || f.me.id;
    $('me-role').textContent = f.me.role + ' · ' + f.me.site;
    // A fresh snapshot: queues and operators are re-sent right after welcome; what was mine
    // and is no longer listed ended or moved while we were away.
    st.queues.clear();
    st.queueCounts.clear();
    st.primedQueues.clear();
    const listed = new Set((f.conversations || []).map((c) => c.id));
    for (const [id, c] of st.mine) if (!listed.has(id) && !st.watched.has(id) && c.state !== 'closed') st.mine.delete(id);
    for (const id of st.watched) st.client.watch(id, true).catch(() => {});
    // Offers are rebuilt from welcome: one it does not list lapsed or went elsewhere while we
    // were away. Its Conversation carries no expiry: the gateway sends each pending offer's
    // `offer` frame again right after welcome (onOffer), and until then an offer keeps what
    // it had; a gateway that does not resend them leaves the queue's listings to end it.
    const had = st.offers;
    st.offers = new Map();
    for (const c of f.conversations || []) {
      if (c.state === 'offered' && !(c.operator && c.operator.id === st.me.id)) st.offers.set(c.id, { conv: c, expires_at: (had.get(c.id) || {}).expires_at || null });
      else upsertMine(c);
      // A draft saved on the server (another device) when we have none locally.
      if (c.draft && !st.drafts[c.id]) st.drafts[c.id] = c.draft;
    }
    renderStatus();
    renderAll();
    if (st.selected) openConv(st.selected, false);
    else if (!st.selected && st.mine.size) select(Array.from(st.mine.keys())[0], false);
  }

  // ------------------------------------------------------------------ status

  /** `st.status` is what the switch shows; `data-server` what the gateway last confirmed. */
  function renderStatus() {
    const s = st.status || 'inactive';
    $('status-select').value = s;
    $('status-select').dataset.server = st.serverStatus || '';
    $('status-select').disabled = !(st.client && st.client.ready && isStaff());
    $('status-dot').className = 'dot ' + s;
  }

  $('status-select').addEventListener('change', (e) => {
    const want = e.target.value;
    const before = st.status;
    st.status = want;
    renderStatus();
    st.client.setStatus(want).then(
      (ok) => {
        st.status = st.serverStatus = ok.status || want;
        renderStatus();
      },
      (err) => {
        st.status = before;
        renderStatus();
        toast('Could not change status: ' + errText(err));
      }
    );
  });

  // ------------------------------------------------------------------ server events

  function onQueue(f) {
    st.queues.set(f.queue, f.waiting || []);
    st.queueCounts.set(f.queue, typeof f.count === 'number' ? f.count : (f.waiting || []).length);
    // An offer without a known expiry is over once a complete listing of its queue no longer
    // shows it offered (requeued after it lapsed, taken, closed). Offers that have an expiry
    // go by it: a listing may have been made before their `offer` frame.
    const complete = !(f.count > (f.waiting || []).length);
    for (const [id, o] of st.offers) {
      if (!complete || o.expires_at || o.conv.queue !== f.queue) continue;
      const listed = (f.waiting || []).find((c) => c.id === id);
      if (!listed || listed.state !== 'offered') st.offers.delete(id);
    }
    for (const c of f.waiting || []) {
      if (!st.seenQueued.has(c.id)) {
        st.seenQueued.add(c.id);
        // The snapshot right after (re)connecting is not news; what arrives later is.
        if (st.primedQueues.has(f.queue)) {
          beep(880);
          notify('New visitor waiting', visitorName(c) + ' · ' + ((c.visitor.preview && c.visitor.preview.page_url) || f.queue), c.id);
        }
      }
    }
    st.primedQueues.add(f.queue);
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

  function onOffer(f) {
    // An offer welcome already listed comes again with its deadline: no second alert.
    const known = st.offers.has(f.conv.id);
    st.offers.set(f.conv.id, { conv: f.conv, expires_at: f.expires_at });
    if (!known) {
      beep(990);
      notify('Conversation offered to you', visitorName(f.conv), f.conv.id);
    }
    renderOffers();
  }

  function onOperator(f) {
    st.operators.set(f.id, { id: f.id, name: f.name, status: f.status, online: f.online, load: f.load });
    if (st.me && f.id === st.me.id) {
      st.status = st.serverStatus = f.status;
      renderStatus();
    }
    renderOperators();
  }

  function upsertMine(c) {
    const mineNow = (c.operator && st.me && c.operator.id === st.me.id) || st.watched.has(c.id);
    if (mineNow && c.state !== 'queued') {
      const had = st.mine.get(c.id);
      if (had && c.draft === undefined && had.draft) c.draft = had.draft;
      st.mine.set(c.id, c);
      st.offers.delete(c.id);
      return true;
    }
    if (st.mine.has(c.id)) {
      st.mine.delete(c.id);
      st.client.forget(c.id);
    }
    return false;
  }

  function onConvEvent(event, c, reason) {
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

  function onMsg(m) {
    addEntry(m.conv, { key: 's' + m.seq, seq: m.seq, cid: m.cid, from: m.from, text: m.text, ts: m.ts });
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
        const c = conv(m.conv);
        notify(visitorName(c), m.text, m.conv);
      }
    }
    if (st.selected === m.conv) {
      renderMessages();
      renderTyping();
      markRead();
    }
    renderMine();
  }

  function onTyping(f) {
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

  function onRead(f) {
    if (f.by.role !== 'visitor') return;
    st.visitorRead.set(f.conv, Math.max(st.visitorRead.get(f.conv) || 0, f.seq));
    if (st.selected === f.conv) renderMessages();
  }

  function onDraftEcho(f) {
    // A draft typed on another of my connections. The gateway echoes ours to us too: an echo of
    // what we sent last is not news (and may be older than what the composer holds now).
    if (sentDrafts[f.conv] === f.text) return;
    st.drafts[f.conv] = f.text;
    saveDrafts();
    if (st.selected === f.conv && document.activeElement !== $('composer')) $('composer').value = f.text;
  }

  // ------------------------------------------------------------------ messages store

  function entries(id) {
    let m = st.msgs.get(id);
    if (!m) st.msgs.set(id, (m = new Map()));
    return m;
  }

  function addEntry(id, e) {
    const m = entries(id);
    if (e.cid) {
      // Our own pending message: the stored copy replaces it.
      const pending = m.get('c' + e.cid);
      if (pending) {
        m.delete('c' + e.cid);
        if (pending.el) e.el = pending.el;
      }
    }
    if (m.has(e.key)) return false;
    m.set(e.key, e);
    return true;
  }

  function loadHistory(id, before) {
    return st.client.history(id, { before, limit: 50 }).then((res) => {
      for (const x of res.messages || []) addEntry(id, { key: 's' + x.seq, seq: x.seq, cid: x.cid, from: x.from, text: x.text, ts: x.ts });
      if (res.complete || !(res.messages || []).length) st.complete.add(id);
      if (st.selected === id) {
        renderMessages();
        markRead();
      }
    });
  }

  // ------------------------------------------------------------------ rendering: lists

  function renderAll() {
    renderOffers();
    renderQueue();
    renderMine();
    renderOperators();
    renderView();
  }

  function renderOffers() {
    const ul = $('offer-list');
    ul.replaceChildren();
    for (const { conv: c, expires_at } of st.offers.values()) {
      const left = expires_at ? Math.max(0, Math.round((expires_at - Date.now()) / 1000)) : null;
      ul.append(
        h('li', { class: 'item', 'data-testid': 'offer-item', 'data-conv': c.id }, [
          h('div', { class: 'main' }, [
            h('div', { class: 'name', text: visitorName(c) }),
            h('div', { class: 'sub' }, [expires_at ? h('span', { 'data-expires': expires_at, text: left + ' s left · ' }) : null, (c.visitor.preview && c.visitor.preview.page_url) || c.queue])
          ]),
          h('div', { class: 'acts' }, [
            h('button', { class: 'btn primary small', type: 'button', 'data-testid': 'offer-accept', text: 'Accept', onclick: (e) => (e.stopPropagation(), accept(c.id)) }),
            h('button', { class: 'btn small', type: 'button', 'data-testid': 'offer-decline', text: 'Decline', onclick: (e) => (e.stopPropagation(), decline(c.id)) })
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

  function renderQueue() {
    const ul = $('queue-list');
    const list = allQueued();
    const multi = st.queues.size > 1;
    ul.replaceChildren();
    for (const c of list) {
      const pv = c.visitor.preview || {};
      const acts = [h('button', { class: 'btn primary small', type: 'button', 'data-testid': 'queue-accept', text: 'Accept', onclick: (e) => (e.stopPropagation(), accept(c.id)) })];
      if (isSup()) {
        const sel = h('select', { class: 'btn small', 'data-testid': 'queue-assign', 'aria-label': 'Assign to operator', onclick: (e) => e.stopPropagation() }, [h('option', { value: '', text: 'Assign…' })]);
        for (const o of st.operators.values()) sel.append(h('option', { value: o.id, text: o.name + ' (' + o.status + ', ' + o.load + ')' }));
        sel.addEventListener('change', () => sel.value && assign(c.id, sel.value));
        acts.push(sel, h('button', { class: 'btn small', type: 'button', 'data-testid': 'queue-watch', text: 'Watch', onclick: (e) => (e.stopPropagation(), watch(c.id)) }));
      }
      ul.append(
        h('li', { class: 'item' + (st.selected === c.id ? ' selected' : ''), 'data-testid': 'queue-item', 'data-conv': c.id, tabindex: '0', onclick: () => peek(c), onkeydown: (e) => e.key === 'Enter' && e.target === e.currentTarget && peek(c) }, [
          h('span', { class: 'dot ' + (c.visitor.online ? 'online' : 'offline'), title: c.visitor.online ? 'online' : 'away' }),
          h('div', { class: 'main' }, [
            h('div', { class: 'name' }, [visitorName(c), multi ? h('span', { class: 'pill', text: c.queue }) : null, c.previous ? h('span', { class: 'pill', text: 'returning' }) : null]),
            h('div', { class: 'sub' }, [h('span', { 'data-since': c.created_at, text: 'waiting ' + ago(c.created_at) }), pv.page_url ? ' · ' + pv.page_url : null])
          ]),
          h('div', { class: 'acts' }, acts)
        ])
      );
    }
    // A listing carries the longest waiting that fit in one frame; `count` says how many wait.
    let total = 0;
    for (const [q, n] of st.queueCounts) total += n - (st.queues.get(q) || []).filter((c) => st.mine.has(c.id)).length;
    total = Math.max(total, list.length);
    if (total > list.length) ul.append(h('li', { class: 'empty', 'data-testid': 'queue-more', text: '+ ' + (total - list.length) + ' more waiting' }));
    $('queue-count').textContent = total;
    $('queue-empty').hidden = total > 0;
  }

  function lastText(id) {
    const m = st.msgs.get(id);
    if (!m || !m.size) return '';
    let last = null;
    for (const e of m.values()) if (!last || (e.seq || 1e15) >= (last.seq || 1e15)) last = e;
    if (!last) return '';
    const mineMsg = st.me && last.from.id === st.me.id && last.from.role !== 'visitor';
    return (mineMsg ? 'You: ' : last.from.role === 'operator' ? (last.from.name || 'Operator') + ': ' : '') + last.text;
  }

  function renderMine() {
    const ul = $('my-list');
    ul.replaceChildren();
    const list = Array.from(st.mine.values()).sort((a, b) => (a.state === 'closed') - (b.state === 'closed') || a.created_at - b.created_at);
    let open = 0;
    let unreadTotal = 0;
    for (const c of list) {
      if (c.state !== 'closed') open++;
      const n = st.unread.get(c.id) || 0;
      unreadTotal += n;
      const typing = st.typing.get(c.id);
      ul.append(
        h('li', { class: 'item' + (st.selected === c.id ? ' selected' : '') + (c.state === 'closed' ? ' closed' : ''), 'data-testid': 'my-item', 'data-conv': c.id, 'data-state': c.state, tabindex: '0', 'aria-current': st.selected === c.id ? 'true' : null, onclick: () => select(c.id), onkeydown: (e) => e.key === 'Enter' && e.target === e.currentTarget && select(c.id) }, [
          h('span', { class: 'dot ' + (c.visitor.online ? 'online' : 'away'), title: c.visitor.online ? 'visitor online' : 'visitor away' }),
          h('div', { class: 'main' }, [
            h('div', { class: 'name' }, [visitorName(c), st.watched.has(c.id) ? h('span', { class: 'pill', text: 'watching' }) : null, c.state === 'closed' ? h('span', { class: 'pill', text: 'closed' }) : null]),
            h('div', { class: 'sub', text: typing ? 'typing…' : lastText(c.id) || c.queue })
          ]),
          h('div', { class: 'acts' }, [
            n ? h('span', { class: 'unread', 'data-testid': 'my-unread', text: n }) : null,
            c.state === 'closed' ? h('button', { class: 'btn small', type: 'button', 'aria-label': 'Dismiss', title: 'Dismiss', text: '×', onclick: (e) => (e.stopPropagation(), dismiss(c.id)) }) : null
          ])
        ])
      );
    }
    $('my-count').textContent = open;
    $('my-empty').hidden = list.length > 0;
    document.title = (unreadTotal ? '(' + unreadTotal + ') ' : '') + 'Operator console';
  }

  function renderOperators() {
    if (!isSup()) return;
    const ul = $('operators-list');
    ul.replaceChildren();
    for (const o of Array.from(st.operators.values()).sort((a, b) => a.name.localeCompare(b.name))) {
      ul.append(
        h('li', { class: 'item', 'data-testid': 'operator-item', 'data-operator': o.id }, [
          h('span', { class: 'dot ' + (o.online ? o.status : 'offline') }),
          h('div', { class: 'main' }, [h('div', { class: 'name', text: o.name + (st.me && o.id === st.me.id ? ' (me)' : '') }), h('div', { class: 'sub', text: (o.online ? o.status : 'offline') + ' · ' + chats(o.load) })])
        ])
      );
    }
  }

  // ------------------------------------------------------------------ actions

  function accept(id) {
    st.accepting.add(id);
    const done = (ok) => {
      const c = ok.conv && typeof ok.conv === 'object' ? ok.conv : Object.assign({}, conv(id), { state: 'active', operator: { id: st.me.id, name: st.me.name } });
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

  function assign(id, operator) {
    st.client.assign(id, operator).then(
      () => toast('Assigned.'),
      (err) => toast('Could not assign: ' + errText(err))
    );
  }

  function watch(id) {
    st.client.watch(id, true).then(
      (ok) => {
        st.watched.add(id);
        const c = ok.conv && typeof ok.conv === 'object' ? ok.conv : conv(id) || { id, site: st.me.site, queue: '', state: 'active', visitor: { id: '', online: false }, operator: null, last_seq: 0, tags: [], created_at: Date.now() };
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

  function dismiss(id) {
    st.mine.delete(id);
    st.msgs.delete(id);
    st.complete.delete(id);
    st.client.forget(id);
    delete st.drafts[id];
    saveDrafts();
    if (st.selected === id) st.selected = null;
    renderAll();
  }

  $('conv-accept').addEventListener('click', () => st.selected && accept(st.selected));

  // ------------------------------------------------------------------ conversation view

  function select(id, focus) {
    if (st.selected && st.selected !== id) saveComposerDraft();
    st.selected = id;
    st.peek = null;
    openConv(id, focus);
  }

  function peek(c) {
    if (st.selected) saveComposerDraft();
    st.peek = c;
    st.selected = c.id;
    openConv(c.id, false);
  }

  function openConv(id, focus) {
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

  function renderView() {
    const id = st.selected;
    const c = id && conv(id);
    const has = !!c;
    $('conv-empty').hidden = has;
    $('conv-head').hidden = !has;
    $('conv-messages').hidden = !has;
    $('conv-typing').hidden = !has;
    $('conv-view').dataset.conv = has ? id : '';
    if (!has) {
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
    $('conv-state').textContent = c.state + (c.operator && c.operator.id !== st.me.id ? ' · ' + c.operator.name : '');
    $('conv-accept').hidden = !(isPeek && (c.state === 'queued' || c.state === 'offered'));
    $('conv-unwatch').hidden = !st.watched.has(id);
    $('transfer-button').hidden = ro;
    $('close-button').hidden = ro;
    $('ban-button').hidden = ro || c.state === 'closed';
    $('composer-form').hidden = ro;
    $('readonly-note').hidden = !ro;
    $('readonly-note').textContent = st.watched.has(id) ? 'Watching (read-only).' : isPeek ? 'Waiting in the queue: accept to reply.' : c.state === 'closed' ? 'This conversation is closed.' : 'Read-only.';
    renderTags(c, ro);
    renderMessages();
    renderTyping();
    renderVisitor(c);
  }

  function renderTags(c, ro) {
    const box = $('tag-list');
    const input = $('tag-input');
    box.replaceChildren();
    for (const t of c.tags || []) {
      box.append(h('span', { class: 'tag', 'data-testid': 'tag' }, [t, ro ? null : h('button', { type: 'button', 'data-testid': 'tag-remove', 'aria-label': 'Remove tag ' + t, text: '×', onclick: () => changeTags(c.id, [], [t]) })]));
    }
    input.hidden = ro;
    box.append(input);
  }

  $('tag-input').addEventListener('keydown', (e) => {
    if (e.key !== 'Enter') return;
    e.preventDefault();
    const t = e.target.value.trim();
    if (!t || !st.selected) return;
    e.target.value = '';
    changeTags(st.selected, [t], []);
  });

  function changeTags(id, add, remove) {
    st.client.tag(id, add, remove).then(
      (ok) => {
        const c = st.mine.get(id);
        if (ok.conv && typeof ok.conv === 'object') upsertMine(ok.conv);
        else if (c) c.tags = (c.tags || []).filter((t) => !remove.includes(t)).concat(add.filter((t) => !(c.tags || []).includes(t)));
        renderView();
      },
      (err) => toast('Could not change tags: ' + errText(err))
    );
  }

  /** The visitor wrote again after a close: show what was said in the conversation before. */
  function loadPrevious(id, prev) {
    st.previous.set(id, []);
    st.client.history(prev, { limit: 50 }).then(
      (res) => {
        const els = (res.messages || []).map((x) => {
          const el = msgEl({ key: 'p' + x.seq, from: x.from, text: x.text, ts: x.ts }, 0);
          el.dataset.testid = 'conv-prev-msg';
          el.classList.add('prev');
          delete el.dataset.seq;
          return el;
        });
        if (els.length) els.push(h('li', { class: 'divider', 'data-testid': 'conv-prev-divider', text: 'Previous conversation ↑ · new conversation ↓' }));
        st.previous.set(id, els);
        if (st.selected === id) renderMessages();
      },
      () => {}
    );
  }

  function sortedEntries(id) {
    return Array.from(entries(id).values()).sort((a, b) => (a.seq || 1e15) - (b.seq || 1e15) || a.ts - b.ts);
  }

  function renderMessages() {
    const id = st.selected;
    const ol = $('conv-messages');
    if (!id) return;
    const list = sortedEntries(id);
    const atBottom = ol.scrollHeight - ol.scrollTop - ol.clientHeight < 80;
    const seenUpTo = st.visitorRead.get(id) || 0;
    const kids = (st.previous.get(id) || []).slice();
    if (!st.complete.has(id) && list.length) {
      kids.push(h('li', { class: 'more' }, [h('button', { class: 'btn small', type: 'button', text: 'Load earlier messages', onclick: () => loadHistory(id, list[0].seq).catch(() => {}) })]));
    }
    for (const e of list) kids.push(msgEl(e, seenUpTo));
    // Keep existing nodes (screen readers announce only additions).
    kids.forEach((el, i) => {
      if (ol.children[i] !== el) ol.insertBefore(el, ol.children[i] || null);
    });
    while (ol.children.length > kids.length) ol.lastChild.remove();
    if (atBottom) ol.scrollTop = ol.scrollHeight;
  }

  function msgEl(e, seenUpTo) {
    const role = e.from.role;
    const mineMsg = role === 'operator' && st.me && e.from.id === st.me.id;
    let state = '';
    if (mineMsg || e.pending) state = e.failed ? 'failed' : e.pending ? 'sending' : e.seq <= seenUpTo ? 'read' : 'sent';
    if (!e.el) {
      e.el = h('li', { 'data-testid': 'conv-msg', 'data-role': role }, [h('div', { class: 'bubble', text: e.text }), h('div', { class: 'meta' })]);
    }
    e.el.className = 'msg ' + (role === 'supervisor' ? 'operator' : role) + (role === 'operator' && !mineMsg && !e.pending ? ' other' : '') + (e.failed ? ' failed' : '');
    if (e.seq) e.el.dataset.seq = e.seq;
    e.el.dataset.state = state;
    const who = role === 'operator' && !mineMsg ? (e.from.name || 'Operator') + ' · ' : role === 'visitor' ? '' : '';
    const receipt = { sending: ' · sending…', sent: ' · ✓ sent', read: ' · ✓✓ read', failed: ' · not sent' }[state] || '';
    e.el.lastChild.textContent = role === 'system' ? '' : who + clock(e.ts) + receipt;
    return e.el;
  }

  function renderTyping() {
    const el = $('conv-typing');
    const t = st.selected && st.typing.get(st.selected);
    el.textContent = t ? 'Visitor is typing' + (t.preview ? ': “' + t.preview + '”' : '…') : '';
  }

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

  // ------------------------------------------------------------------ visitor panel

  function renderVisitor(c) {
    const box = $('visitor-panel');
    box.replaceChildren();
    if (!c) {
      box.append(h('p', { class: 'empty', style: 'padding:0', text: 'Visitor details appear here.' }));
      return;
    }
    const v = c.visitor || {};
    const pv = v.preview || {};
    const dl = (pairs) => {
      const d = h('dl', { class: 'kv' });
      for (const [k, val, link] of pairs) {
        if (val == null || val === '') continue;
        d.append(h('dt', { text: k }), h('dd', {}, [link ? h('a', { href: val, target: '_blank', rel: 'noopener noreferrer', text: val }) : String(val)]));
      }
      return d;
    };
    box.append(
      h('h3', { text: 'Visitor' }),
      h('div', { class: 'presence', 'data-testid': 'visitor-online', 'data-online': v.online ? 'true' : 'false' }, [h('span', { class: 'dot ' + (v.online ? 'online' : 'away') }), (v.name || 'Anonymous visitor') + ' · ' + (v.online ? 'online' : 'away')]),
      dl([
        ['Email', v.email, v.email ? null : null],
        ['Phone', v.phone],
        ['Visitor id', v.id]
      ]),
      h('h3', { text: 'Browsing' }),
      dl([
        ['Page', pv.page_url, /^https?:/.test(pv.page_url || '')],
        ['Referrer', pv.referrer, /^https?:/.test(pv.referrer || '')],
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

  // ------------------------------------------------------------------ composer, drafts, canned

  const composer = $('composer');
  let draftTimer = null;
  let serverDraftTimer = null;
  let typingTimer = null;
  let idleTimer = null;
  let typingOn = false;

  const sentDrafts = {};
  function sendDraft(id, text) {
    sentDrafts[id] = text;
    st.client.draft(id, text);
  }

  function saveDrafts() {
    try {
      localStorage.setItem(DRAFTS_KEY, JSON.stringify(st.drafts));
    } catch (e) {
      /* quota */
    }
  }

  /** Leaving a conversation (switch, reload): its draft is saved locally and on the server now. */
  function saveComposerDraft() {
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

  function stopTyping() {
    clearTimeout(idleTimer);
    if (typingOn && st.selected && st.client) st.client.typing(st.selected, false);
    typingOn = false;
  }

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
    const pending = { key: 'c' + cid, cid, pending: true, from: { role: 'operator', id: st.me.id, name: st.me.name }, text, ts: Date.now() };
    addEntry(id, pending);
    renderMessages();
    $('conv-messages').scrollTop = $('conv-messages').scrollHeight;
    st.client.send(id, text, { cid }).then(
      (ack) => {
        const m = entries(id);
        if (m.has('c' + cid)) {
          m.delete('c' + cid);
          addEntry(id, { key: 's' + ack.seq, seq: ack.seq, cid, from: pending.from, text, ts: ack.ts, el: pending.el });
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

  function cannedList() {
    const list = Array.isArray(st.settings.canned) && st.settings.canned.length ? st.settings.canned : DEFAULT_CANNED;
    return list.filter((c) => c && c.text);
  }

  function expand(text) {
    const c = conv(st.selected) || {};
    return text.replace(/\{\{\s*visitor\.name\s*\}\}/g, (c.visitor && c.visitor.name) || 'there').replace(/\{\{\s*operator\.name\s*\}\}/g, (st.me && st.me.name) || '');
  }

  /** The `//query` just before the caret, if any. */
  function cannedQuery() {
    const upto = composer.value.slice(0, composer.selectionStart);
    const m = upto.match(/(^|\s)\/\/([^\s/]*)$/);
    return m ? { query: m[2], start: upto.length - m[2].length - 2 } : null;
  }

  const pickerOpen = () => !$('canned-picker').hidden;
  function closePicker() {
    $('canned-picker').hidden = true;
    composer.setAttribute('aria-expanded', 'false');
  }

  function updatePicker() {
    const q = cannedQuery();
    const ul = $('canned-picker');
    if (!q) return closePicker();
    const needle = q.query.toLowerCase();
    const hits = cannedList().filter((c) => !needle || (c.shortcut || '').toLowerCase().includes(needle) || c.text.toLowerCase().includes(needle));
    ul.replaceChildren();
    hits.forEach((c, i) => {
      const li = h('li', { role: 'option', 'data-testid': 'canned-item', 'data-shortcut': c.shortcut || '', 'aria-selected': i === 0 ? 'true' : 'false', onmousedown: (e) => (e.preventDefault(), insertCanned(c)) }, [h('b', { text: '//' + (c.shortcut || '') }), h('span', { text: expand(c.text) })]);
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

  // ------------------------------------------------------------------ transfer and close

  $('transfer-button').addEventListener('click', () => {
    const id = st.selected;
    if (!id) return;
    const box = $('transfer-choices');
    box.replaceChildren();
    const others = Array.from(st.operators.values()).filter((o) => !st.me || o.id !== st.me.id);
    if (others.length) box.append(h('strong', { text: 'Operators' }));
    for (const o of others) {
      box.append(
        h('label', { 'data-testid': 'transfer-operator', 'data-operator': o.id }, [
          h('input', { type: 'radio', name: 'to', value: 'operator:' + o.id, required: true }),
          h('span', { class: 'dot ' + (o.online ? o.status : 'offline') }),
          o.name + ' — ' + (o.online ? o.status : 'offline') + ', ' + chats(o.load)
        ])
      );
    }
    const queues = st.settings.queues && st.settings.queues.length ? st.settings.queues : Array.from(st.queues.keys());
    if (queues.length) box.append(h('strong', { text: 'Queues' }));
    for (const q of queues) {
      box.append(h('label', { 'data-testid': 'transfer-queue', 'data-queue': q }, [h('input', { type: 'radio', name: 'to', value: 'queue:' + q, required: true }), q]));
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
        if (ok.conv && typeof ok.conv === 'object') upsertMine(ok.conv);
        else if (!st.watched.has(id)) {
          st.mine.delete(id);
          st.client.forget(id);
        }
        if (!st.mine.has(id) && st.selected === id) st.selected = null;
        renderAll();
      },
      (err) => toast('Could not transfer: ' + errText(err))
    );
  });

  $('close-button').addEventListener('click', () => {
    if (!st.selected) return;
    const c = conv(st.selected);
    $('close-tags').value = ((c && c.tags) || []).join(', ');
    openDialog('close-dialog');
  });

  $('close-dialog').addEventListener('close', () => {
    if ($('close-dialog').returnValue !== 'ok') return;
    const id = st.selected;
    if (!id) return;
    const tags = $('close-tags').value.split(',').map((s) => s.trim()).filter(Boolean);
    st.client.closeConv(id, { outcome: $('close-outcome').value, tags: tags.length ? tags : undefined }).then(
      (ok) => {
        // The conversation as the gateway stored it (its outcome included).
        const c = (ok.conv && typeof ok.conv === 'object' && ok.conv) || Object.assign({}, st.mine.get(id), { state: 'closed', tags });
        upsertMine(c);
        stopTyping();
        renderAll();
      },
      (err) => toast('Could not close: ' + errText(err))
    );
  });

  // A dialog keeps the returnValue of its last close, and Esc leaves it as it was: cleared
  // here, or Esc after one confirmed ban would ban the next visitor too.
  function openDialog(id) {
    $(id).returnValue = '';
    $(id).showModal();
  }

  $('ban-button').addEventListener('click', () => {
    if (!st.selected) return;
    $('ban-reason').value = '';
    openDialog('ban-dialog');
  });

  $('ban-dialog').addEventListener('close', () => {
    if ($('ban-dialog').returnValue !== 'ok') return;
    const id = st.selected;
    if (!id) return;
    const name = visitorName(conv(id));
    st.client.request({ t: 'ban', conv: id, duration: $('ban-duration').value, reason: $('ban-reason').value.trim() || undefined }).then(
      (ok) => toast(name + ' is banned until ' + new Date(ok.until).toLocaleString() + ' (visitor id ' + ok.visitor + ').'),
      (err) => toast('Could not ban: ' + errText(err))
    );
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

  // ------------------------------------------------------------------ boot

  setInterval(() => {
    // Waiting times and offer countdowns tick in place (no re-render under the pointer).
    for (const el of document.querySelectorAll('[data-since]')) el.textContent = 'waiting ' + ago(+el.dataset.since);
    for (const el of document.querySelectorAll('[data-expires]')) el.textContent = Math.max(0, Math.round((+el.dataset.expires - Date.now()) / 1000)) + ' s left · ';
    let expired = false;
    for (const [id, o] of st.offers) if (o.expires_at && o.expires_at < Date.now() - 1000) expired = st.offers.delete(id);
    if (expired) renderOffers();
  }, 1000);

  window.addEventListener('beforeunload', saveComposerDraft);

  // A sign-in link opened in a tab that already shows the console changes only the fragment:
  // start over with the new token (stored by tokenFromFragment) and none of the old state.
  window.addEventListener('hashchange', () => {
    if (tokenFromFragment()) location.reload();
  });

  const token = tokenFromFragment() || localStorage.getItem(TOKEN_KEY);
  if (token) start(token);
  else showSignin('');
})();
