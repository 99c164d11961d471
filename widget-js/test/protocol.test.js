// Unit tests of protocol.js: golden frames, request correlation, ordering and dedup, cursors,
// reconnect policy and backoff. Run with `node --test widget-js/test/`. No network: the Client
// gets a fake WebSocket and a manual clock.
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const { P, flush, welcome, msg, makeClient, goldenFrames } = require('./fakes.js');

// ------------------------------------------------------------------ golden frames

test('module exposes itself as a global and as a CommonJS export', () => {
  assert.equal(globalThis.ChatGatewayProtocol, P);
  assert.equal(P.SUBPROTOCOL, 'chat.v1.json');
  assert.equal(typeof P.Client, 'function');
});

test('the Client acts on the golden welcome, ping, msg and answer frames', async () => {
  // (The golden client frames are checked by 'the Client builds every golden client frame
  // exactly', the server events by 'server frames are emitted as events by type'.)
  const all = goldenFrames().filter((x) => x.dir === 'server');
  const g = Object.fromEntries(all.map((x) => [x.name, x.json]));
  const here = [
    'welcome',
    'welcome_not_recovered',
    'ping',
    'pong_server',
    'msg',
    'msg_system',
    'ok_sent',
    'ok_history',
    'ok_conv',
    'ok_conv_previous',
    'ok_empty',
    'error'
  ];
  const asEvents = [
    'typing_server',
    'read_server',
    'conv_event',
    'queue',
    'offer',
    'operator',
    'notice',
    'draft_server'
  ];
  assert.deepEqual(
    all.map((x) => x.name).sort(),
    [...here, ...asEvents].sort(),
    'every golden server frame is covered by a test'
  );

  const h = makeClient({ cursors: { c_1: 1 } });
  h.client.connect();
  const s = h.socket();
  s.open();
  s.recv(JSON.stringify(g.welcome, null, 1)); // as another implementation may format it
  assert.equal(h.client.state, 'open');
  assert.deepEqual(h.client.me, g.welcome.me);
  assert.deepEqual(h.client.settings, g.welcome.settings);

  s.recv(g.ping);
  assert.deepEqual(s.last(), { t: 'pong' });
  // The answer to our own ping sends nothing back.
  const before = s.sent.length;
  s.recv(g.pong_server);
  assert.equal(s.sent.length, before);

  // After the cursor (1): seq 4 waits for seq 3; seq 2 goes out at once, without its "t".
  s.recv(g.msg);
  s.recv(g.msg_system);
  const { t: _t, ...system } = g.msg_system;
  assert.deepEqual(h.msgs, [system]);
  assert.equal(h.client.cursor('c_1'), 2);

  // Each answer settles the request whose rid it carries (the golden rid swapped for the one sent).
  const answer = (frame) => s.recv({ ...frame, rid: s.sent[s.sent.length - 1].rid });
  const sent = h.client.send('c_1', 'Hello', { cid: 'm-2' });
  answer(g.ok_sent);
  assert.deepEqual(await sent, { conv: 'c_1', cid: 'm-2', seq: 4, ts: 1700000002000 });
  const hist = h.client.history('c_1', { before: 2 });
  answer(g.ok_history);
  const res = await hist;
  assert.deepEqual(res.messages, g.ok_history.messages);
  assert.equal(res.complete, true);
  const started = h.client.start({});
  answer(g.ok_conv);
  assert.deepEqual((await started).conv, g.ok_conv.conv);
  const restarted = h.client.start({});
  answer(g.ok_conv_previous);
  assert.equal((await restarted).conv.previous, 'c_1');
  // The Conversation in an answer is noted: its last_seq (1) is fetched.
  h.clock.advance(P.DEFAULTS.fillDelayMs);
  assert.ok(s.ofType('history').some((f) => f.conv === 'c_2' && f.before === 2), 'history of c_2 asked for');
  const declined = h.client.decline('c_2');
  answer(g.ok_empty);
  assert.equal((await declined).t, 'ok');
  const accepted = h.client.accept('c_2');
  answer(g.error);
  await assert.rejects(accepted, (e) => e.code === 'taken' && e.message === 'conversation already taken');
  // An answer nobody waits for is an event.
  const stray = [];
  h.client.on('ok', (f) => stray.push(f.rid));
  s.recv(g.ok_empty);
  assert.deepEqual(stray, ['r-9']);
});

test('a golden welcome with recovered:false makes the Client resync instead of waiting for a replay', () => {
  const g = goldenFrames().find((x) => x.name === 'welcome_not_recovered').json;
  const h = makeClient({ cursors: { c_1: 1 } });
  const resynced = [];
  h.client.on('resync', (id) => resynced.push(id));
  h.client.connect();
  const s = h.socket();
  s.open();
  s.recv(g);
  assert.deepEqual(resynced, ['c_1']);
  h.clock.advance(P.DEFAULTS.fillDelayMs);
  assert.ok(s.ofType('history').some((f) => f.conv === 'c_1'), 'the missing messages are fetched with history');
});

test('decode rejects what is not a frame', () => {
  for (const bad of ['not json', '[1,2]', '{"x":1}', '{"t":5}', 'null', '"ping"']) {
    assert.throws(() => P.decode(bad), bad);
  }
  assert.throws(() => P.encode({ x: 1 }));
});

/** How the Client builds each golden client frame. */
const BUILDERS = {
  send: (c) => c.send('c_1', 'Hello', { cid: 'm-1' }),
  send_string_rid: (c) => c.send('c_1', 'Привет', { cid: 'm-2' }),
  history: (c) => c.history('c_1', { before: 10, limit: 50 }),
  typing: (c) => c.typing('c_1', true, 'I need hel'),
  read: (c) => c.read('c_1', 3),
  start: (c) =>
    c.start({
      queue: 'general',
      prechat: { name: 'Ann', email: 'ann@example.com', phone: '+420123' },
      params: { plan: 'pro' },
      page: { url: 'https://shop.example/cart', title: 'Cart', referrer: 'https://google.com/' }
    }),
  close: (c) => c.closeConv('c_1', { outcome: 'solved', tags: ['billing'] }),
  status: (c) => c.setStatus('active'),
  accept: (c) => c.accept('c_2'),
  decline: (c) => c.decline('c_2'),
  transfer_operator: (c) => c.transfer('c_1', { operator: 'op_2' }, 'VIP'),
  transfer_queue: (c) => c.transfer('c_1', { queue: 'billing' }),
  tag: (c) => c.tag('c_1', ['vip'], ['billing']),
  draft: (c) => c.draft('c_1', 'Let me check'),
  assign: (c) => c.assign('c_2', 'op_1'),
  watch: (c) => c.watch('c_1', true),
  identify: (c) => c.identify(undefined, { name: 'Ann', email: 'ann@example.com' }, { plan: 'gold' }),
  // Staff-only additions the console sends as plain requests; the JS client never pings (it
  // answers the server's pings), so the golden client ping goes out raw.
  ban: (c) => c.request({ t: 'ban', conv: 'c_1', duration: '24h', reason: 'spam' }),
  unban: (c) => c.request({ t: 'unban', visitor: 'v_1' }),
  ping_client: (c) => c._raw({ t: 'ping' })
};

test('the Client builds every golden client frame exactly', async () => {
  const golden = goldenFrames().filter((g) => g.dir === 'client');
  for (const g of golden) {
    if (g.name.startsWith('hello')) {
      const cursors = g.json.cursors;
      const h = makeClient({ token: g.json.token, cursors });
      h.client.connect();
      h.socket().open();
      assert.deepEqual(h.socket().sent[0], g.json, g.name);
      continue;
    }
    if (g.name === 'pong') {
      const h = makeClient();
      const s = h.connect();
      s.recv({ t: 'ping' });
      assert.deepEqual(s.last(), g.json, g.name);
      continue;
    }
    const build = BUILDERS[g.name];
    assert.ok(build, `no builder for golden client frame ${g.name}`);
    const h = makeClient();
    const s = h.connect();
    const p = build(h.client);
    if (p && p.catch) p.catch(() => {});
    const sent = s.last();
    const expected = { ...g.json };
    if ('rid' in expected) {
      assert.ok(typeof sent.rid === 'number', `${g.name} carries a rid`);
      expected.rid = sent.rid;
    }
    assert.deepEqual(sent, expected, g.name);
  }
});

// ------------------------------------------------------------------ requests

test('start marks a conversation left in the offline form, and only that one', () => {
  const h = makeClient();
  const s = h.connect();
  h.client.start({ prechat: { name: 'Ann' }, offline: true }).catch(() => {});
  assert.deepEqual(s.last(), { t: 'start', rid: s.last().rid, prechat: { name: 'Ann' }, offline: true });
  // Not asked for, or null: the field is absent, never false or null on the wire.
  h.client.start({ queue: 'general', offline: null }).catch(() => {});
  assert.deepEqual(s.last(), { t: 'start', rid: s.last().rid, queue: 'general' });
  h.client.start().catch(() => {});
  assert.deepEqual(s.last(), { t: 'start', rid: s.last().rid });
  // What the caller passes cannot change the frame's type or correlation.
  h.client.start({ t: 'send', rid: 'x' }).catch(() => {});
  assert.equal(s.last().t, 'start');
  assert.equal(typeof s.last().rid, 'number');
});


test('requests are correlated by rid, answered in any order', async () => {
  const h = makeClient();
  const s = h.connect();
  const a = h.client.accept('c_1');
  const b = h.client.history('c_2');
  const c = h.client.accept('c_3');
  const [fa, fb, fc] = s.sent.slice(-3);
  assert.notEqual(fa.rid, fb.rid);
  assert.notEqual(fb.rid, fc.rid);
  s.recv({ t: 'ok', rid: 99, note: 'unknown rid is ignored' });
  s.recv({ t: 'ok', rid: fb.rid, conv: 'c_2', messages: [], complete: true });
  s.recv({ t: 'error', rid: fc.rid, code: 'taken', message: 'conversation already taken' });
  s.recv({
    t: 'ok',
    rid: fa.rid,
    conv: {
      id: 'c_1',
      site: 'demo',
      queue: 'general',
      state: 'active',
      visitor: { id: 'v', online: true },
      operator: null,
      last_seq: 0,
      tags: [],
      created_at: 1
    }
  });
  assert.equal((await b).conv, 'c_2');
  assert.equal((await a).conv.id, 'c_1');
  await assert.rejects(c, (e) => e.code === 'taken' && e.message === 'conversation already taken');
});

test('requests fail fast when not connected and when the socket drops', async () => {
  const h = makeClient();
  await assert.rejects(h.client.accept('c_1'), (e) => e.code === 'disconnected');
  const s = h.connect();
  const p = h.client.accept('c_1');
  s.serverClose(1006);
  await assert.rejects(p, (e) => e.code === 'disconnected');
});

test('requests time out', async () => {
  const h = makeClient({ requestTimeoutMs: 1000 });
  h.connect();
  const p = h.client.accept('c_1');
  h.clock.advance(1001);
  await assert.rejects(p, (e) => e.code === 'timeout');
});

// ------------------------------------------------------------------ messages

test('duplicate msg frames are dropped by seq', () => {
  const h = makeClient();
  const s = h.connect();
  for (const seq of [1, 2, 2, 3, 1, 3]) s.recv(msg('c_1', seq));
  assert.deepEqual(h.msgs.map((m) => m.seq), [1, 2, 3]);
  assert.equal(h.msgs[0].t, undefined, 'msg events carry the message, not the frame type');
  assert.equal(h.client.cursor('c_1'), 3);
});

test('a gap is filled with history and delivered in order', async () => {
  const h = makeClient();
  const s = h.connect();
  s.recv(msg('c_1', 1));
  s.recv(msg('c_1', 4));
  s.recv(msg('c_1', 5));
  assert.deepEqual(h.msgs.map((m) => m.seq), [1], 'held back until the gap is filled');
  h.clock.advance(1000);
  const req = s.last('history');
  assert.deepEqual({ ...req, rid: 0 }, { t: 'history', rid: 0, conv: 'c_1', before: 4, limit: 2 });
  s.recv({
    t: 'ok',
    rid: req.rid,
    conv: 'c_1',
    messages: [msg('c_1', 2), msg('c_1', 3)].map(({ t, ...m }) => m),
    complete: false
  });
  await flush();
  assert.deepEqual(h.msgs.map((m) => m.seq), [1, 2, 3, 4, 5]);
  s.recv(msg('c_1', 3));
  assert.equal(h.msgs.length, 5);
});

test('a large gap is fetched page by page', async () => {
  const h = makeClient({ historyPage: 2 });
  const s = h.connect();
  s.recv(msg('c_1', 6));
  h.clock.advance(1000);
  let req = s.last('history');
  assert.equal(req.before, 6);
  assert.equal(req.limit, 2);
  s.recv({ t: 'ok', rid: req.rid, conv: 'c_1', messages: [msg('c_1', 4), msg('c_1', 5)], complete: false });
  await flush();
  req = s.last('history');
  assert.equal(req.before, 4);
  s.recv({ t: 'ok', rid: req.rid, conv: 'c_1', messages: [msg('c_1', 2), msg('c_1', 3)], complete: false });
  await flush();
  req = s.last('history');
  assert.equal(req.before, 2);
  assert.equal(req.limit, 1);
  s.recv({ t: 'ok', rid: req.rid, conv: 'c_1', messages: [msg('c_1', 1)], complete: true });
  await flush();
  assert.deepEqual(h.msgs.map((m) => m.seq), [1, 2, 3, 4, 5, 6]);
});

test('messages the log no longer holds are skipped, not waited for', async () => {
  const h = makeClient();
  const gaps = [];
  h.client.on('gap', (g) => gaps.push(g));
  const s = h.connect();
  s.recv(msg('c_1', 5));
  h.clock.advance(1000);
  const req = s.last('history');
  s.recv({ t: 'ok', rid: req.rid, conv: 'c_1', messages: [msg('c_1', 3), msg('c_1', 4)], complete: true });
  await flush();
  assert.deepEqual(h.msgs.map((m) => m.seq), [3, 4, 5]);
  assert.deepEqual(gaps, [{ conv: 'c_1', from: 1, to: 2 }]);
});

test('a conversation whose last_seq is ahead of the cursor is synced from history', async () => {
  const h = makeClient();
  const s = h.connect({
    conversations: [
      {
        id: 'c_9',
        site: 'demo',
        queue: 'general',
        state: 'active',
        visitor: { id: 'v', online: true },
        operator: null,
        last_seq: 2,
        tags: [],
        created_at: 1
      }
    ]
  });
  h.clock.advance(1000);
  const req = s.last('history');
  assert.equal(req.conv, 'c_9');
  assert.equal(req.before, 3);
  assert.equal(req.limit, 2);
  s.recv({ t: 'ok', rid: req.rid, conv: 'c_9', messages: [msg('c_9', 1), msg('c_9', 2)], complete: true });
  await flush();
  assert.deepEqual(h.msgs.map((m) => m.seq), [1, 2]);
});

// ------------------------------------------------------------------ cursors and resume

test('cursors track the last contiguous seq and are sent in hello on reconnect', async () => {
  const h = makeClient({ cursors: { c_old: 7 } });
  const cursorEvents = [];
  h.client.on('cursor', (conv, seq) => cursorEvents.push([conv, seq]));
  h.client.connect();
  h.socket().open();
  assert.deepEqual(h.socket().sent[0], { t: 'hello', token: 'tok-1', cursors: { c_old: 7 } });
  h.welcome();
  const s = h.socket();
  s.recv(msg('c_1', 1));
  s.recv(msg('c_1', 2));
  s.recv(msg('c_1', 5)); // ahead of a gap: not part of the cursor
  assert.deepEqual(cursorEvents, [['c_1', 1], ['c_1', 2]]);
  s.serverClose(1006);
  h.clock.advance(60000);
  const s2 = h.socket();
  assert.notEqual(s2, s);
  s2.open();
  assert.deepEqual(s2.sent[0], { t: 'hello', token: 'tok-1', cursors: { c_old: 7, c_1: 2 } });
  // The server replays what came after the cursors; the held-back 5 is not delivered twice.
  s2.recv(welcome({ conversations: [] }));
  for (const seq of [3, 4, 5]) s2.recv(msg('c_1', seq));
  assert.deepEqual(h.msgs.map((m) => m.seq), [1, 2, 3, 4, 5]);
  h.client.forget('c_old');
  assert.deepEqual(h.client.cursors(), { c_1: 5 });
});

test('only sane stored cursors go into hello', () => {
  const h = makeClient({
    cursors: { c_1: 3, c_2: '5', c_3: 1e20, c_4: -1, c_5: NaN, c_6: null, ['x'.repeat(200)]: 2 }
  });
  h.client.connect();
  h.socket().open();
  assert.deepEqual(h.socket().sent[0].cursors, { c_1: 3 });
});

test('hello carries the reader\'s language when given, on every reconnect; nothing else when not', () => {
  const h = makeClient({ lang: 'cs' });
  h.client.connect();
  h.socket().open();
  assert.deepEqual(h.socket().sent[0], { t: 'hello', token: 'tok-1', lang: 'cs' });
  h.socket().serverClose(1006);
  h.clock.advance(60000);
  h.socket().open();
  assert.equal(h.socket().sent[0].lang, 'cs', 'again after a reconnect');
  // Bad values are left out rather than sent for the server to refuse.
  for (const lang of [undefined, null, '', 42, { en: 1 }]) {
    const b = makeClient({ lang });
    b.client.connect();
    b.socket().open();
    assert.deepEqual(b.socket().sent[0], { t: 'hello', token: 'tok-1' }, `lang ${JSON.stringify(lang)}`);
  }
});

test('the device id comes from what the browser is, stays the same, and rides in hello', () => {
  const nav = { userAgent: 'Mozilla/5.0 X', languages: ['cs', 'en'], platform: 'Linux', hardwareConcurrency: 8 };
  const scr = { width: 1920, height: 1080, colorDepth: 24 };
  const id = P.deviceId(nav, scr, -60);
  assert.match(id, /^device-[0-9a-z]{1,7}$/);
  assert.equal(P.deviceId({ ...nav }, { ...scr }, -60), id, 'the same browser, the same id');
  assert.notEqual(P.deviceId(nav, { ...scr, width: 1280 }, -60), id);
  assert.notEqual(P.deviceId(nav, scr, 540), id);
  const h = makeClient({ device: id });
  h.client.connect();
  h.socket().open();
  assert.deepEqual(h.socket().sent[0], { t: 'hello', token: 'tok-1', device: id });
  const b = makeClient({});
  b.client.connect();
  b.socket().open();
  assert.equal(b.socket().sent[0].device, undefined, 'none when not given');
});

test('recovered:false reloads the latest page and signals a resync', async () => {
  const h = makeClient({ cursors: { c_1: 3 }, historyPage: 50 });
  const resyncs = [];
  h.client.on('resync', (c) => resyncs.push(c));
  h.client.connect();
  const s = h.welcome({
    conversations: [
      {
        id: 'c_1',
        site: 'demo',
        queue: 'general',
        state: 'active',
        visitor: { id: 'v', online: true },
        operator: null,
        last_seq: 500,
        tags: [],
        created_at: 1,
        recovered: false
      }
    ]
  });
  assert.deepEqual(resyncs, ['c_1']);
  h.clock.advance(1000);
  const req = s.last('history');
  assert.equal(req.before, 501);
  assert.equal(req.limit, 50);
});

// ------------------------------------------------------------------ sends

test('an unacked send is retried with the same cid after reconnect and resolves once', async () => {
  const h = makeClient();
  const outboxSizes = [];
  h.client.on('outbox', (o) => outboxSizes.push(o.length));
  const s1 = h.connect();
  const p = h.client.send('c_1', 'hi', { cid: 'cid-1' });
  const first = s1.last('send');
  s1.serverClose(1006); // the ok never came
  h.clock.advance(60000);
  const s2 = h.welcome();
  const again = s2.last('send');
  assert.equal(again.cid, 'cid-1');
  assert.equal(again.text, 'hi');
  assert.notEqual(again.rid, undefined);
  assert.equal(first.cid, again.cid);
  s2.recv({ t: 'ok', rid: again.rid, conv: 'c_1', cid: 'cid-1', seq: 4, ts: 5 });
  assert.deepEqual(await p, { conv: 'c_1', cid: 'cid-1', seq: 4, ts: 5 });
  assert.equal(h.client.outbox.length, 0);
  assert.deepEqual(outboxSizes, [1, 0]);
  // A third connection sends nothing again.
  s2.serverClose(1012);
  h.clock.advance(2000);
  const s3 = h.welcome();
  assert.equal(s3.ofType('send').length, 0);
});

test('sends made while disconnected go out after welcome, in order', async () => {
  const h = makeClient();
  const p1 = h.client.send('c_1', 'one', { cid: 'a' });
  const p2 = h.client.send('c_1', 'two', { cid: 'b' });
  assert.strictEqual(h.client.send('c_1', 'one', { cid: 'a' }), p1, 'same cid, same promise');
  const s = h.connect();
  assert.deepEqual(s.ofType('send').map((f) => f.cid), ['a', 'b']);
  const [fa, fb] = s.ofType('send');
  s.recv({ t: 'ok', rid: fb.rid, conv: 'c_1', cid: 'b', seq: 2, ts: 2 });
  s.recv({ t: 'ok', rid: fa.rid, conv: 'c_1', cid: 'a', seq: 1, ts: 1 });
  assert.equal((await p1).seq, 1);
  assert.equal((await p2).seq, 2);
});

test('our own msg echo acks a send whose ok was lost', async () => {
  const h = makeClient();
  const s = h.connect();
  const p = h.client.send('c_1', 'x', { cid: 'k' });
  s.recv(msg('c_1', 1, 'x', { from: { role: 'visitor', id: 'v_1' }, cid: 'k' }));
  assert.equal((await p).seq, 1);
  assert.equal(h.client.outbox.length, 0);
});

test('a send refused as unavailable is retried later with the same cid; a bad one fails', async () => {
  const h = makeClient();
  const failed = [];
  h.client.on('failed', (f) => failed.push(f.cid));
  const s = h.connect();
  const p = h.client.send('c_1', 'x', { cid: 'k' });
  const bad = h.client.send('c_1', 'y', { cid: 'z' });
  const [fk, fz] = s.ofType('send');
  s.recv({ t: 'error', rid: fk.rid, code: 'unavailable', message: 'engine down' });
  s.recv({ t: 'error', rid: fz.rid, code: 'too_large', message: 'too long' });
  await assert.rejects(bad, (e) => e.code === 'too_large');
  assert.deepEqual(failed, ['z']);
  h.clock.advance(5000);
  const retry = s.last('send');
  assert.equal(retry.cid, 'k');
  assert.notEqual(retry.rid, fk.rid);
  s.recv({ t: 'ok', rid: retry.rid, conv: 'c_1', cid: 'k', seq: 9, ts: 1 });
  assert.equal((await p).seq, 9);
});

test('close 4000 gives up on the frames in flight instead of repeating them', async () => {
  const h = makeClient();
  const s = h.connect();
  const p = h.client.send('c_1', 'x', { cid: 'k' });
  s.serverClose(4000);
  await assert.rejects(p, (e) => e.code === 'protocol');
  h.clock.advance(60000);
  const s2 = h.welcome();
  assert.equal(s2.ofType('send').length, 0);
});

// ------------------------------------------------------------------ heartbeat

test('ping is answered with pong', () => {
  const h = makeClient();
  const s = h.connect();
  s.recv({ t: 'ping' });
  assert.deepEqual(s.last(), { t: 'pong' });
});

test('silence longer than ping interval + 10 s reconnects', () => {
  const h = makeClient();
  const s = h.connect({ settings: { ...welcome().settings, ping_interval_ms: 5000 } });
  h.clock.advance(14000);
  s.recv({ t: 'ping' }); // any frame re-arms the timer
  h.clock.advance(14000);
  assert.equal(h.sockets().length, 1);
  h.clock.advance(1001);
  assert.equal(s.closedByClient.code, 3000, 'the dead socket is closed by us');
  assert.equal(h.client.state, 'waiting');
  h.clock.advance(1000);
  assert.equal(h.sockets().length, 2);
});

// ------------------------------------------------------------------ close codes

test('reconnectPlan follows the close-code table', () => {
  const plan = (code, attempt = 0, r = 0.5) => P.reconnectPlan(code, attempt, r);
  assert.equal(plan(1000).action, 'stop');
  assert.equal(plan(4003).action, 'stop');
  assert.equal(plan(4001).action, 'token');
  assert.equal(plan(4001).delay, 0, 'first token refresh is immediate');
  assert.ok(plan(4001, 3).delay > 0, 'repeated token failures back off');
  for (const r of [0, 0.3, 0.99]) {
    const p = plan(1012, 0, r);
    assert.equal(p.action, 'reconnect');
    assert.ok(p.delay >= 0 && p.delay <= 1000, '1012: at once, with jitter');
  }
  assert.notEqual(plan(1012, 0, 0.1).delay, plan(1012, 0, 0.9).delay, 'jitter spreads clients');
  for (const code of [4008, 4029, 1006, 1001, 4000]) assert.equal(plan(code).action, 'reconnect', String(code));
  assert.ok(plan(4029, 0, 0).delay >= 2000, 'rate limited: not sooner than a couple of seconds');
  assert.ok(plan(4008, 0, 0).delay >= P.DEFAULTS.backoffBaseMs / 2);
});

test('backoff grows exponentially within bounds', () => {
  let prevCap = 0;
  for (let attempt = 0; attempt < 40; attempt++) {
    const lo = P.backoffDelay(attempt, 0);
    const hi = P.backoffDelay(attempt, 1);
    const cap = Math.min(P.DEFAULTS.backoffMaxMs, P.DEFAULTS.backoffBaseMs * 2 ** attempt);
    assert.equal(hi, cap, `attempt ${attempt} upper bound`);
    assert.equal(lo, Math.floor(cap / 2), `attempt ${attempt} lower bound`);
    assert.ok(cap >= prevCap);
    prevCap = cap;
    for (let i = 0; i < 20; i++) {
      const d = P.backoffDelay(attempt, Math.random());
      assert.ok(d >= lo && d <= hi);
    }
  }
  assert.equal(P.backoffDelay(100, 1), P.DEFAULTS.backoffMaxMs);
  assert.equal(P.backoffDelay(3, 1, { backoffBaseMs: 100, backoffMaxMs: 700 }), 700);
});

test('1000 and 4003 stay closed', () => {
  for (const code of [1000, 4003]) {
    const h = makeClient();
    const s = h.connect();
    s.serverClose(code);
    h.clock.advance(10 * 60000);
    assert.equal(h.sockets().length, 1, String(code));
    assert.equal(h.client.state, 'closed');
  }
});

test('1012 reconnects at once with jitter and resumes', () => {
  const h = makeClient({ random: () => 0.25 });
  const s = h.connect();
  s.recv(msg('c_1', 1));
  s.serverClose(1012);
  assert.deepEqual(h.clock.pending().filter((d) => d <= 1000), [250]);
  h.clock.advance(250);
  assert.equal(h.sockets().length, 2);
  h.socket().open();
  assert.deepEqual(h.socket().sent[0].cursors, { c_1: 1 });
});

test('4001 asks for a new token, then reconnects with it', async () => {
  let calls = 0;
  const tokens = [];
  const h = makeClient({ getToken: async () => 'tok-' + (++calls + 1) });
  h.client.on('token', (t) => tokens.push(t));
  const s = h.connect();
  s.serverClose(4001);
  h.clock.advance(0);
  await flush();
  assert.equal(calls, 1);
  assert.deepEqual(tokens, ['tok-2']);
  h.socket().open();
  assert.equal(h.socket().sent[0].token, 'tok-2');
});

test('4001 without a token source stops and reports unauthorized', () => {
  const h = makeClient();
  let unauthorized = 0;
  h.client.on('unauthorized', () => unauthorized++);
  const s = h.connect();
  s.serverClose(4001);
  h.clock.advance(1000);
  assert.equal(unauthorized, 1);
  assert.equal(h.client.state, 'closed');
  assert.equal(h.sockets().length, 1);
});

test('4008 and 4029 reconnect with growing backoff', () => {
  for (const code of [4008, 4029]) {
    const h = makeClient({ random: () => 1 });
    h.connect();
    const delays = [];
    for (let i = 0; i < 4; i++) {
      h.socket().serverClose(code);
      const d = h.clock.pending()[0];
      delays.push(d);
      h.clock.advance(d);
      h.socket().open(); // opened but closed again before any welcome
    }
    for (let i = 1; i < delays.length; i++) assert.ok(delays[i] > delays[i - 1], `${code}: ${delays}`);
    assert.ok(delays[0] >= 500);
    // A successful welcome resets the backoff.
    h.socket().recv(welcome());
    assert.equal(h.client.attempt, 0);
  }
});

test('connection refused retries with backoff; disconnect() stops for good', () => {
  const h = makeClient({ random: () => 0 });
  h.client.connect();
  const states = [];
  h.client.on('state', (s) => states.push(s));
  h.socket().serverClose(1006);
  h.clock.advance(h.clock.pending()[0]);
  h.socket().serverClose(1006);
  assert.equal(h.sockets().length, 2);
  h.client.disconnect();
  h.clock.advance(10 * 60000);
  assert.equal(h.sockets().length, 2);
  assert.equal(h.client.state, 'closed');
  assert.deepEqual(states, ['waiting', 'connecting', 'waiting', 'closed']);
});

test('suspend holds the connection down until resume', () => {
  const h = makeClient();
  const s = h.connect();
  h.client.suspend();
  assert.equal(s.closedByClient.code, 3000);
  h.clock.advance(10 * 60000);
  assert.equal(h.sockets().length, 1);
  h.client.resume();
  assert.equal(h.sockets().length, 2);
});

test('the browser going offline drops the socket; coming back online reconnects at once and resumes', () => {
  const network = new EventTarget();
  const h = makeClient({ watchOnline: true, network });
  const s = h.connect();
  s.recv(msg('c_1', 1));
  network.dispatchEvent(new Event('offline'));
  assert.equal(s.closedByClient.code, 3000, 'the old socket is closed by us');
  assert.equal(h.client.state, 'waiting');
  // Attempts while offline fail and back off; each retry waits longer than the one before.
  h.clock.advance(h.clock.pending()[0]);
  assert.equal(h.sockets().length, 2);
  h.socket().serverClose(1006);
  const wait = h.clock.pending()[0];
  assert.ok(wait >= 500, `backs off (${wait} ms)`);
  network.dispatchEvent(new Event('online'));
  assert.equal(h.sockets().length, 3, 'online reconnects without waiting for the backoff');
  h.socket().open();
  assert.deepEqual(h.socket().sent[0].cursors, { c_1: 1 }, 'and resumes from the cursor');
  // Offline with no socket (already waiting) changes nothing.
  h.socket().serverClose(1006);
  network.dispatchEvent(new Event('offline'));
  assert.equal(h.client.state, 'waiting');
});

test('drafts wait for the connection; typing and read are dropped while offline', () => {
  const h = makeClient();
  assert.equal(h.client.typing('c_1', true, 'x'), false);
  assert.equal(h.client.draft('c_1', 'first'), false);
  h.client.draft('c_1', 'second');
  const s = h.connect();
  assert.deepEqual(s.ofType('draft'), [{ t: 'draft', conv: 'c_1', text: 'second' }]);
  assert.equal(s.ofType('typing').length, 0);
});

test('server frames are emitted as events by type', () => {
  const h = makeClient();
  const seen = [];
  for (const t of ['typing', 'read', 'conv', 'queue', 'offer', 'operator', 'notice', 'draft'])
    h.client.on(t, (f) => seen.push(f.t));
  const s = h.connect();
  for (const g of goldenFrames().filter((g) => g.dir === 'server' && !g.name.startsWith('welcome'))) s.recv(g.json);
  assert.deepEqual(seen, ['typing', 'read', 'conv', 'queue', 'offer', 'operator', 'notice', 'draft']);
});

test('a throwing listener does not break the client', () => {
  const h = makeClient();
  h.client.on('msg', () => {
    throw new Error('listener bug');
  });
  const s = h.connect();
  s.recv(msg('c_1', 1));
  s.recv(msg('c_1', 2));
  assert.deepEqual(h.msgs.map((m) => m.seq), [1, 2]);
});

test('wsUrl maps the gateway origin to its WebSocket endpoint', () => {
  assert.equal(P.wsUrl('http://127.0.0.1:8080'), 'ws://127.0.0.1:8080/v1/ws');
  assert.equal(P.wsUrl('https://chat.example/'), 'wss://chat.example/v1/ws');
});

test('newCid: unique ids of 1 to 64 characters, with or without crypto.randomUUID', () => {
  const check = () => {
    const ids = new Set(Array.from({ length: 1000 }, () => P.newCid()));
    assert.equal(ids.size, 1000, 'no id twice');
    for (const id of ids) assert.ok(typeof id === 'string' && id.length >= 1 && id.length <= 64, id);
  };
  check();
  // Older browsers (and plain http pages) have no crypto.randomUUID: the fallback is used.
  const had = Object.getOwnPropertyDescriptor(globalThis, 'crypto');
  Object.defineProperty(globalThis, 'crypto', { value: undefined, configurable: true, writable: true });
  try {
    assert.equal(globalThis.crypto, undefined);
    check();
  } finally {
    Object.defineProperty(globalThis, 'crypto', had);
  }
});
