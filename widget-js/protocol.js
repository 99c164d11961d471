/*! chat-gateway protocol v1 client (JSON), shared by the widget and the operator console.
 * A plain script: served as /protocol.js and in front of widget.js as /widget.js; defines
 * globalThis.ChatGatewayProtocol (and module.exports under node, for the unit tests).
 * Guarantees: each stored message is emitted once, in seq order per conversation, across
 * reconnects (gaps filled with `history`); sends are retried with the same cid until acked;
 * reconnects follow the close codes of protocol v1 with exponential backoff and jitter.
 */
((root, factory) => {
  'use strict';
  const api = factory(root);
  root.ChatGatewayProtocol = api;
  if (typeof module === 'object' && module && module.exports) module.exports = api;
})(globalThis, (root) => {
  'use strict';

  const SUBPROTOCOL = 'chat.v1.json';

  /** Close codes of protocol v1, plus the one we use for our own drops. */
  const CLOSE = {
    NORMAL: 1000,
    RESTART: 1012,
    PROTOCOL: 4000,
    TOKEN: 4001,
    FORBIDDEN: 4003,
    SLOW: 4008,
    LIMIT: 4029,
    ABNORMAL: 1006,
    CLIENT_DROP: 3000
  };

  const DEFAULTS = {
    pingIntervalMs: 25000, // until welcome.settings.ping_interval_ms says otherwise
    livenessSlackMs: 10000, // "nothing received for ping interval + 10 s" => reconnect
    backoffBaseMs: 500,
    backoffMaxMs: 30000,
    restartJitterMs: 1000, // 1012: reconnect at once, spread over this window
    requestTimeoutMs: 20000,
    fillDelayMs: 150, // lets frames already on the wire arrive before asking history for a gap
    historyPage: 100,
    maxCursors: 100
  };

  const noop = () => {};
  const isFrame = (f) => !!f && typeof f === 'object' && !Array.isArray(f) && typeof f.t === 'string';

  // ---------------------------------------------------------------- encoding

  /** Encodes one frame as a text frame of `chat.v1.json`. */
  function encode(frame) {
    if (!isFrame(frame)) throw new TypeError('a frame is an object with a string "t"');
    return JSON.stringify(frame);
  }

  /** Decodes one text frame; throws unless it is an object with a string "t". */
  function decode(data) {
    if (typeof data !== 'string') throw new TypeError('expected a text frame');
    const f = JSON.parse(data);
    if (!isFrame(f)) throw new TypeError('malformed frame');
    return f;
  }

  /** A frame without its undefined/null fields: optional fields are absent, never null. */
  function compact(o) {
    const out = {};
    for (const k of Object.keys(o)) if (o[k] != null) out[k] = o[k];
    return out;
  }

  /** A client message id (at most 64 characters). */
  function newCid() {
    const c = root.crypto;
    if (c && c.randomUUID) return c.randomUUID();
    return Date.now().toString(36) + '-' + Math.random().toString(36).slice(2) + Math.random().toString(36).slice(2);
  }

  function protoError(code, message, frame) {
    const e = new Error(message || code);
    e.code = code;
    if (frame) e.frame = frame;
    return e;
  }

  // ---------------------------------------------------------------- reconnect policy

  /** Exponential backoff, "equal jitter": a delay from the upper half of a doubling window. */
  function backoffDelay(attempt, rnd, o = DEFAULTS) {
    const base = o.backoffBaseMs || DEFAULTS.backoffBaseMs;
    const max = o.backoffMaxMs || DEFAULTS.backoffMaxMs;
    const cap = Math.min(max, base * 2 ** Math.max(0, Math.min(attempt, 30)));
    const r = typeof rnd === 'number' ? Math.min(Math.max(rnd, 0), 1) : Math.random();
    return Math.floor(cap / 2 + (r * cap) / 2);
  }

  /** After close `code`: {action: stop|reconnect|token, delay}; attempt = retries since welcome. */
  function reconnectPlan(code, attempt = 0, rnd = Math.random(), o = DEFAULTS) {
    const backoff = (n) => backoffDelay(n, rnd, o);
    switch (code) {
      case CLOSE.NORMAL:
      case CLOSE.FORBIDDEN:
        return { action: 'stop', delay: 0 };
      case CLOSE.TOKEN:
        return { action: 'token', delay: attempt ? backoff(attempt) : 0 };
      case CLOSE.RESTART:
        return {
          action: 'reconnect',
          delay: attempt ? backoff(attempt) : Math.floor(rnd * (o.restartJitterMs || DEFAULTS.restartJitterMs))
        };
      case CLOSE.LIMIT:
        return { action: 'reconnect', delay: backoff(attempt + 3) };
      case CLOSE.SLOW:
        return { action: 'reconnect', delay: backoff(attempt + 1) };
      default: // 4000, 1001, 1006, 1011, our own drops…
        return { action: 'reconnect', delay: backoff(attempt) };
    }
  }

  // ---------------------------------------------------------------- events

  class Emitter {
    constructor() {
      this._h = {};
    }

    on(ev, fn) {
      (this._h[ev] || (this._h[ev] = [])).push(fn);
      return this;
    }

    off(ev, fn) {
      if (this._h[ev]) this._h[ev] = this._h[ev].filter((f) => f !== fn);
      return this;
    }

    emit(ev, ...args) {
      const l = (this._h[ev] || []).slice();
      for (const fn of l) {
        try {
          fn.apply(this, args);
        } catch (e) {
          // A broken listener must break neither the connection nor the other listeners.
          if (ev !== 'error' && this._h.error && this._h.error.length) this.emit('error', e);
          else if (root.console) root.console.error(e);
        }
      }
      return l.length > 0;
    }
  }

  // ---------------------------------------------------------------- client

  /**
   * new Client({url, token?, getToken?, cursors?, lang?, WebSocket?, timers?, random?, ...DEFAULTS})
   * `lang`: the reader's language (a BCP 47 tag), sent in hello: the gateway words its notices in it.
   * `device`: the device id sent in hello (`deviceId()`): bans by device hold for it.
   * Events: state, welcome, msg, sent, failed, outbox, cursor, resync, gap, close, token,
   * unauthorized, frame, and typing/read/conv/queue/offer/operator/notice/draft/ok/error.
   * States: idle → connecting → open ⇄ waiting (reconnect timer) → closed.
   */
  class Client extends Emitter {
    constructor(o = {}) {
      super();
      this.opts = {};
      for (const k in DEFAULTS) this.opts[k] = o[k] !== undefined ? o[k] : DEFAULTS[k];
      this.url = o.url;
      this.token = o.token || null;
      this.getToken = o.getToken || null;
      this.lang = typeof o.lang === 'string' && o.lang ? o.lang : null;
      this.device = o.device;
      this.WebSocket = o.WebSocket || root.WebSocket;
      this.timers = o.timers || { setTimeout: (f, ms) => setTimeout(f, ms), clearTimeout: (t) => clearTimeout(t) };
      this.random = o.random || Math.random;
      this.state = 'idle';
      this.ready = false; // welcome received on the current socket
      this.me = null;
      this.settings = null;
      this.attempt = 0;
      this.outbox = []; // sends not acked yet: {conv, cid, text, sock, tries, rid, promise}
      this._rid = 0;
      this._pending = new Map(); // rid -> {resolve, reject, timer} | {item}
      this._convs = new Map(); // conv -> {cursor, known, ahead: Map(seq -> msg), timer, filling}
      this._drafts = new Map();
      this._waiters = [];
      this._sock = 0; // id of the current socket; stale sockets' events are ignored
      this._ws = null;
      this._stopped = true;
      this._hold = false;
      this._needToken = false;
      this._live = null;
      this._retry = null;
      const cur = o.cursors || {};
      // Only sane cursors: a stored value the server cannot parse would fail every hello.
      for (const c in cur) if (Number.isSafeInteger(cur[c]) && cur[c] > 0 && c.length <= 128) this.track(c, cur[c]);
      // `network`: where the browser's online/offline events come from (the window by default).
      const net = o.watchOnline === false ? null : o.network || (root.addEventListener ? root : null);
      if (net) {
        // Offline: the socket may look open for a long time (no FIN reaches us): drop it now and
        // retry by backoff. Back online: skip the rest of the backoff wait.
        net.addEventListener('offline', () => this._ws && this._drop(CLOSE.ABNORMAL, 'offline'));
        net.addEventListener('online', () => this.state === 'waiting' && !this._hold && this._reopen());
      }
    }

    _setTimeout(f, ms) {
      return this.timers.setTimeout(f, ms);
    }

    _clearTimeout(t) {
      if (t != null) this.timers.clearTimeout(t);
    }

    _setState(s) {
      if (this.state === s) return;
      this.state = s;
      this.emit('state', s);
    }

    /** Starts connecting (no-op when already started). */
    connect() {
      if (!this._stopped) return this;
      this._stopped = false;
      this._hold = false;
      this.attempt = 0;
      this._open();
      return this;
    }

    /** Closes for good (1000); unacked sends stay in the outbox for a later connect(). */
    disconnect() {
      this._stopped = true;
      this._clearTimeout(this._retry);
      this._retry = null;
      if (this._ws) this._drop(CLOSE.NORMAL, 'client closed');
      this._setState('closed');
      this._rejectWaiters(protoError('closed', 'client closed'));
    }

    /** Drops the socket as a network failure would; reconnects per policy. */
    drop() {
      if (this._ws) this._drop(CLOSE.ABNORMAL, 'dropped');
    }

    /** Drops the socket and stays down until resume(). */
    suspend() {
      this._hold = true;
      this._clearTimeout(this._retry);
      this._retry = null;
      if (this._ws) this._drop(CLOSE.ABNORMAL, 'suspended');
      else if (!this._stopped) this._setState('waiting');
    }

    resume() {
      if (!this._hold) return;
      this._hold = false;
      if (!this._stopped && !this._ws) this._reopen();
    }

    /** Resolves at the next welcome (at once when connected). */
    whenReady() {
      if (this.ready) return Promise.resolve(this);
      return new Promise((resolve, reject) => this._waiters.push({ resolve, reject }));
    }

    _rejectWaiters(err) {
      const w = this._waiters;
      this._waiters = [];
      w.forEach((x) => x.reject(err));
    }

    _reopen() {
      this._clearTimeout(this._retry);
      this._retry = null;
      if (this._stopped || this._hold) return;
      if (!this._needToken && (this.token || !this.getToken)) return this._open();
      if (!this.getToken) {
        this._stopped = true;
        this._setState('closed');
        this.emit('unauthorized');
        this._rejectWaiters(protoError('unauthorized', 'token rejected'));
        return;
      }
      this._setState('connecting');
      Promise.resolve()
        .then(() => this.getToken())
        .then(
          (tok) => {
            if (!tok) throw protoError('unauthorized', 'no token');
            this.token = tok;
            this._needToken = false;
            this.emit('token', tok);
            this._open();
          },
          (e) => {
            this.emit('error', e);
            this._schedule(backoffDelay(this.attempt++, this.random(), this.opts));
          }
        );
    }

    _open() {
      if (this._stopped || this._hold) return;
      if (this._needToken || (!this.token && this.getToken)) return this._reopen();
      const id = ++this._sock;
      let ws;
      this.ready = false;
      this._setState('connecting');
      try {
        ws = new this.WebSocket(this.url, SUBPROTOCOL);
      } catch (e) {
        this.emit('error', e);
        return this._schedule(backoffDelay(this.attempt++, this.random(), this.opts));
      }
      this._ws = ws;
      this._arm(); // a handshake that hangs counts as silence too
      ws.onopen = () => {
        if (id !== this._sock) return;
        const hello = { t: 'hello', token: this.token };
        if (this.lang) hello.lang = this.lang;
        if (this.device) hello.device = this.device;
        const cur = this.cursors();
        if (Object.keys(cur).length) hello.cursors = cur;
        this._raw(hello);
      };
      ws.onmessage = (ev) => id === this._sock && this._onData(ev.data);
      ws.onclose = (ev) => id === this._sock && this._onClose(ev.code, ev.reason);
      ws.onerror = noop; // a close event follows
    }

    _schedule(delay) {
      this._clearTimeout(this._retry);
      if (this._stopped) return;
      this._setState('waiting');
      if (this._hold) return;
      this._retry = this._setTimeout(() => {
        this._retry = null;
        this._reopen();
      }, delay);
    }

    /** Liveness: silence for ping interval + slack means a dead link. */
    _arm() {
      const ping = (this.settings && this.settings.ping_interval_ms) || this.opts.pingIntervalMs;
      this._clearTimeout(this._live);
      this._live = this._setTimeout(() => {
        this._live = null;
        this.emit('timeout');
        this._drop(CLOSE.ABNORMAL, 'nothing received');
      }, ping + this.opts.livenessSlackMs);
    }

    /** Closes the socket without waiting for its close event; handled as `code`. */
    _drop(code, reason) {
      const ws = this._ws;
      const sock = this._sock++; // events of the old socket are ignored from now on
      if (ws) {
        ws.onopen = ws.onmessage = ws.onclose = noop;
        try {
          ws.close(code === CLOSE.NORMAL ? 1000 : CLOSE.CLIENT_DROP, reason);
        } catch {
          /* already closed */
        }
      }
      this._onClose(code, reason, sock);
    }

    _onClose(code, reason, sock = this._sock) {
      this._ws = null;
      this._clearTimeout(this._live);
      this._live = null;
      this.ready = false;
      // Requests die with their socket; sends live on in the outbox and go again after welcome.
      for (const [rid, p] of this._pending) {
        this._pending.delete(rid);
        if (!p.item) {
          this._clearTimeout(p.timer);
          p.reject(protoError('disconnected', 'connection lost'));
        } else if (code === CLOSE.PROTOCOL && p.item.sock === sock) {
          // 4000: "do not retry the same frames": give up on what was in flight.
          this._fail(p.item, protoError('protocol', 'closed for a protocol violation'));
        }
      }
      this.outbox.forEach((it) => (it.sock = 0));
      if (this._stopped) {
        this._setState('closed');
        this.emit('close', { code, reason, action: 'stop', delay: 0 });
        return;
      }
      const plan = reconnectPlan(code, this.attempt, this.random(), this.opts);
      this.emit('close', { code, reason, action: plan.action, delay: plan.delay });
      if (plan.action === 'stop') {
        this._stopped = true;
        this._setState('closed');
        this._rejectWaiters(protoError(code === CLOSE.FORBIDDEN ? 'forbidden' : 'closed', 'closed by server'));
        return;
      }
      if (plan.action === 'token') this._needToken = true;
      this.attempt++;
      this._schedule(plan.delay);
    }

    _raw(frame) {
      if (!this._ws) return false;
      try {
        this._ws.send(encode(frame));
        return true;
      } catch (e) {
        this.emit('error', e);
        return false;
      }
    }

    _onData(data) {
      let f;
      try {
        f = decode(data);
      } catch (e) {
        this.emit('error', e);
        return;
      }
      this._arm();
      this.emit('frame', f);
      switch (f.t) {
        case 'ping':
          this._raw({ t: 'pong' });
          return;
        case 'pong':
          return;
        case 'welcome':
          return this._onWelcome(f);
        case 'ok':
          return this._onOk(f);
        case 'error':
          return this._onError(f);
        case 'msg':
          this._ingest(f);
          return;
        case 'conv':
          // Only conversations we already follow: a supervisor sees events of many others.
          if (f.conv && this._convs.has(f.conv.id)) this._seeConv(f.conv);
          break;
      }
      this.emit(f.t, f);
    }

    _onWelcome(f) {
      this.ready = true;
      this.attempt = 0;
      this.me = f.me || null;
      this.settings = f.settings || {};
      this._arm();
      (f.conversations || []).forEach((c) => this._seeConv(c, true));
      this._setState('open');
      this.emit('welcome', f);
      const w = this._waiters;
      this._waiters = [];
      w.forEach((x) => x.resolve(this));
      this.outbox.forEach((it) => this._transmit(it));
      this._drafts.forEach((text, conv) => this._raw({ t: 'draft', conv, text }));
      this._drafts.clear();
      this._convs.forEach((st, conv) => this._scheduleFill(conv));
    }

    _onOk(f) {
      if (f.conv && typeof f.conv === 'object') this._seeConv(f.conv);
      const p = this._pending.get(f.rid);
      if (!p) return this.emit('ok', f);
      this._pending.delete(f.rid);
      if (p.item) return this._acked(p.item, f);
      this._clearTimeout(p.timer);
      p.resolve(f);
    }

    _onError(f) {
      const p = f.rid !== undefined ? this._pending.get(f.rid) : null;
      const err = protoError(f.code, f.message, f);
      if (!p) return this.emit('error', err);
      this._pending.delete(f.rid);
      if (!p.item) {
        this._clearTimeout(p.timer);
        return p.reject(err);
      }
      const it = p.item;
      if (f.code !== 'unavailable' && f.code !== 'rate_limited') return this._fail(it, err);
      // Not stored: retry later with the same cid (the server dedups by cid).
      it.sock = 0;
      this._setTimeout(() => this._transmit(it), backoffDelay(it.tries++, this.random(), this.opts));
    }

    // ---------------------------------------------------------------- requests

    /** Sends `frame` with a fresh rid; resolves with the `ok` frame, rejects with the error. */
    request(frame, opts) {
      if (!this.ready) return Promise.reject(protoError('disconnected', 'not connected'));
      const rid = ++this._rid;
      const f = Object.assign({ t: frame.t, rid }, compact(frame), { rid });
      const timeout = (opts && opts.timeout) || this.opts.requestTimeoutMs;
      return new Promise((resolve, reject) => {
        const timer = this._setTimeout(() => {
          if (this._pending.delete(rid)) reject(protoError('timeout', 'no answer'));
        }, timeout);
        this._pending.set(rid, { resolve, reject, timer });
        if (!this._raw(f)) {
          this._pending.delete(rid);
          this._clearTimeout(timer);
          reject(protoError('disconnected', 'not connected'));
        }
      });
    }

    /** Sends a message; resolves with {conv,cid,seq,ts} once stored, resent with the same cid after each welcome. */
    send(conv, text, opts) {
      const cid = (opts && opts.cid) || newCid();
      const known = this.outbox.find((x) => x.cid === cid);
      if (known) return known.promise;
      const it = { conv, cid, text, sock: 0, tries: 0, rid: null };
      it.promise = new Promise((resolve, reject) => Object.assign(it, { resolve, reject }));
      it.promise.catch(noop); // callers may ignore failures; they are also emitted as `failed`
      this.outbox.push(it);
      this.emit('outbox', this.outbox);
      this._transmit(it);
      return it.promise;
    }

    _transmit(it) {
      if (!this.ready || it.sock === this._sock || !this.outbox.includes(it)) return;
      const rid = ++this._rid;
      it.rid = rid;
      it.sock = this._sock;
      this._pending.set(rid, { item: it });
      this._raw({ t: 'send', rid, conv: it.conv, cid: it.cid, text: it.text });
    }

    _unqueue(it) {
      const i = this.outbox.indexOf(it);
      if (i < 0) return false;
      this.outbox.splice(i, 1);
      if (it.rid != null) this._pending.delete(it.rid);
      this.emit('outbox', this.outbox);
      return true;
    }

    _acked(it, f) {
      if (!this._unqueue(it)) return;
      const ack = { conv: f.conv || it.conv, cid: it.cid, seq: f.seq, ts: f.ts };
      it.resolve(ack);
      this.emit('sent', ack);
    }

    _fail(it, error) {
      if (!this._unqueue(it)) return;
      it.reject(error);
      this.emit('failed', { conv: it.conv, cid: it.cid, text: it.text, error });
    }

    // ---------------------------------------------------------------- ordering, dedup, gaps

    _st(conv) {
      let st = this._convs.get(conv);
      if (!st) this._convs.set(conv, (st = { cursor: 0, known: 0, ahead: new Map(), timer: null, filling: false }));
      return st;
    }

    /** Tracks a conversation whose messages up to `seq` are already known. */
    track(conv, seq) {
      const st = this._st(conv);
      st.cursor = Math.max(st.cursor, seq);
      st.known = Math.max(st.known, seq);
      return st.cursor;
    }

    /** Stops tracking a conversation (no longer in hello's cursors). */
    forget(conv) {
      const st = this._convs.get(conv);
      if (st) this._clearTimeout(st.timer);
      this._convs.delete(conv);
    }

    cursor(conv) {
      const st = this._convs.get(conv);
      return st ? st.cursor : 0;
    }

    /** {conv: last contiguous seq seen}, as sent in hello (the newest conversations first). */
    cursors() {
      const out = {};
      const all = Array.from(this._convs).reverse().filter(([, st]) => st.cursor > 0);
      for (const [conv, st] of all.slice(0, this.opts.maxCursors)) out[conv] = st.cursor;
      return out;
    }

    /** Notes the last_seq of a Conversation we are attached to. */
    _seeConv(c, fromWelcome) {
      if (!c || !c.id) return;
      const st = this._st(c.id);
      if (fromWelcome && c.recovered === false) {
        // The log no longer reaches our cursor: load the latest page, tell the UI.
        st.ahead.clear();
        const from = Math.max(st.cursor, (c.last_seq || 0) - this.opts.historyPage);
        if (from > st.cursor) {
          this.emit('gap', { conv: c.id, from: st.cursor + 1, to: from });
          st.cursor = from;
        }
        this.emit('resync', c.id);
      }
      st.known = Math.max(st.known, c.last_seq || 0);
      this._scheduleFill(c.id);
    }

    _ingest(m) {
      if (!m || !m.conv || typeof m.seq !== 'number') return false;
      const st = this._st(m.conv);
      st.known = Math.max(st.known, m.seq);
      if (m.seq <= st.cursor || st.ahead.has(m.seq)) {
        this.emit('duplicate', m);
        return false;
      }
      if (m.seq !== st.cursor + 1) {
        st.ahead.set(m.seq, m);
        this._scheduleFill(m.conv);
        return true;
      }
      this._deliver(st, m);
      for (let n; (n = st.ahead.get(st.cursor + 1)); ) {
        st.ahead.delete(n.seq);
        this._deliver(st, n);
      }
      this.emit('cursor', m.conv, st.cursor);
      return true;
    }

    _deliver(st, m) {
      st.cursor = m.seq;
      // Our own message came back before its ok (lost with a socket).
      const it = m.cid && this.outbox.find((x) => x.cid === m.cid && x.conv === m.conv);
      if (it) this._acked(it, { conv: m.conv, seq: m.seq, ts: m.ts });
      const msg = Object.assign({}, m);
      delete msg.t;
      this.emit('msg', msg);
    }

    _gapEnd(st) {
      return st.ahead.size ? Math.min(...st.ahead.keys()) : st.known + 1;
    }

    _scheduleFill(conv) {
      const st = this._convs.get(conv);
      if (!st || st.timer != null || st.filling || !this.ready) return;
      if (this._gapEnd(st) - st.cursor - 1 <= 0) return;
      st.timer = this._setTimeout(() => {
        st.timer = null;
        this._fill(conv);
      }, this.opts.fillDelayMs);
    }

    /** Fetches missing messages with `history`, page by page downwards. */
    _fill(conv) {
      const st = this._convs.get(conv);
      if (!st || st.filling || !this.ready) return Promise.resolve();
      st.filling = true;
      let rounds = 0;
      const step = () => {
        if (this._convs.get(conv) !== st) return;
        const end = this._gapEnd(st);
        const need = end - st.cursor - 1;
        if (need <= 0 || rounds++ > 50) return;
        const cursorBefore = st.cursor;
        const page = { t: 'history', conv, before: end, limit: Math.min(need, this.opts.historyPage) };
        return this.request(page).then((res) => {
          const msgs = (res.messages || []).slice().sort((a, b) => a.seq - b.seq);
          const low = msgs.length ? msgs[0].seq : end;
          if (res.complete && low > st.cursor + 1) {
            // Nothing older exists any more: do not wait for what is gone.
            this.emit('gap', { conv, from: st.cursor + 1, to: low - 1 });
            st.cursor = low - 1;
          }
          msgs.forEach((m) => this._ingest(m.conv ? m : Object.assign({ conv }, m)));
          if (st.cursor === cursorBefore && this._gapEnd(st) >= end) {
            if (!st.ahead.size && res.complete) st.known = st.cursor;
            return; // no progress: stop, a later event retries
          }
          return step();
        });
      };
      let run;
      try {
        run = Promise.resolve(step()); // the first request goes out synchronously
      } catch (e) {
        run = Promise.reject(e);
      }
      return run
        .catch((e) => e.code !== 'disconnected' && this.emit('error', e))
        .then(() => (st.filling = false));
    }

    // ---------------------------------------------------------------- frames

    /** Fire-and-forget frames return whether they were written. */
    typing(conv, on, preview) {
      const f = { t: 'typing', conv, on: !!on };
      if (on && preview) f.preview = String(preview).slice(0, 200);
      return this.ready && this._raw(f);
    }

    read(conv, seq) {
      return this.ready && this._raw({ t: 'read', conv, seq });
    }

    /** Drafts wait for the connection: the latest per conversation goes after welcome. */
    draft(conv, text) {
      if (this.ready && this._raw({ t: 'draft', conv, text })) return true;
      this._drafts.set(conv, text);
      return false;
    }

    history(conv, o = {}) {
      return this.request({ t: 'history', conv, before: o.before, limit: o.limit });
    }

    /** Every message of a conversation, oldest first (for transcripts). */
    fullHistory(conv) {
      const all = new Map();
      const page = (before, n) =>
        this.history(conv, { before, limit: this.opts.historyPage }).then((res) => {
          const msgs = res.messages || [];
          let low = before || Infinity;
          for (const m of msgs) {
            all.set(m.seq, m);
            low = Math.min(low, m.seq);
          }
          if (!res.complete && msgs.length && low > 1 && n < 100) return page(low, n + 1);
        });
      return page(undefined, 0).then(() => Array.from(all.values()).sort((a, b) => a.seq - b.seq));
    }

    /** `o`: queue, prechat, params, page, and `offline` (left in the offline form). */
    start(o) {
      return this.request(Object.assign({}, o, { t: 'start' }));
    }

    identify(conv, prechat, params) {
      return this.request({ t: 'identify', conv, prechat, params });
    }

    closeConv(conv, o = {}) {
      return this.request({ t: 'close', conv, outcome: o.outcome, tags: o.tags });
    }

    setStatus(status) {
      return this.request({ t: 'status', status });
    }

    accept(conv) {
      return this.request({ t: 'accept', conv });
    }

    decline(conv) {
      return this.request({ t: 'decline', conv });
    }

    /** `to` is {operator: id} or {queue: id}. */
    transfer(conv, to, note) {
      return this.request({ t: 'transfer', conv, to, note: note || undefined });
    }

    tag(conv, add, remove) {
      return this.request({
        t: 'tag',
        conv,
        add: add && add.length ? add : undefined,
        remove: remove && remove.length ? remove : undefined
      });
    }

    assign(conv, operator) {
      return this.request({ t: 'assign', conv, operator });
    }

    watch(conv, on) {
      return this.request({ t: 'watch', conv, on: on !== false });
    }
  }

  /**
   * A device id from what the browser is (agent, languages, screen, time zone),
   * not from anything stored in it: clearing the browser's storage keeps it, so a ban by device
   * holds. Not unique (two identical machines share it), which is why bans also name the
   * visitor id and the address. `n`, `s`, `z`: for the tests; default the browser's.
   */
  const deviceId = (n = navigator, s = screen, z = new Date().getTimezoneOffset()) => {
    // Array#join writes undefined as '' and a list of languages with commas.
    const t = [n.userAgent, n.languages, s.width, s.height, s.colorDepth, z].join('|');
    // FNV-1a, 32 bits, the same on every visit.
    let h = 2166136261;
    for (let i = 0; i < t.length; i++) h = Math.imul(h ^ t.charCodeAt(i), 16777619) >>> 0;
    return 'device-' + h.toString(36);
  };

  /** ws(s)://host/v1/ws for an http(s) base URL. */
  const wsUrl = (base) => String(base).replace(/\/+$/, '').replace(/^http/, 'ws') + '/v1/ws';

  return {
    SUBPROTOCOL, CLOSE, DEFAULTS, encode, decode, newCid, wsUrl, deviceId, backoffDelay, reconnectPlan, Emitter, Client
  };
});
