// The operator console's daily tools, against the real gateway: sign-in (a bad token is refused,
// a pasted one works), counters, the sound and desktop notification of a new conversation, the
// visitor preview, drafts kept across switching, reloads and another device, transfer to an
// operator (status and load shown) and to a queue, and close with outcome and tags.
import test from 'node:test';
import assert from 'node:assert/strict';
import {
  skipReason, setup, newPage, openConsole, setStatus, openVisitor, visitorWrites, acceptFirstQueued,
  operatorSends, waitUntil, screenshot
} from './harness.mjs';

/**
 * Records what the console asks of the desktop (Notification) and of the speakers (oscillators
 * started), and makes the page believe its window is in the background, as an operator's console
 * often is. Installed before the console's own scripts run.
 */
function recordAlerts() {
  window.__alerts = { notifications: [], beeps: 0 };
  class FakeNotification {
    constructor(title, opts) {
      window.__alerts.notifications.push({ title, body: opts && opts.body });
    }
    close() {}
  }
  FakeNotification.permission = 'granted';
  FakeNotification.requestPermission = () => Promise.resolve('granted');
  window.Notification = FakeNotification;
  const start = OscillatorNode.prototype.start;
  OscillatorNode.prototype.start = function (...a) {
    window.__alerts.beeps++;
    return start.apply(this, a);
  };
  document.hasFocus = () => false;
}

test('console sign-in: a bad token is refused, a pasted good one signs in', { skip: skipReason(), timeout: 120000 }, async (t) => {
  const { gw, browser } = await setup(t);
  const { page, errors } = await newPage(browser);
  await page.goto(`${gw.url}/console`);
  await page.getByTestId('signin').waitFor();
  // E-mail and password come first; the pasted token is the secondary way in.
  await page.getByTestId('token-toggle').click();
  await page.getByTestId('token-input').fill('not.a.token');
  await page.getByTestId('token-submit').click();
  await page.locator('[data-testid=signin-error]', { hasText: /rejected|expired/ }).waitFor();
  assert.equal(await page.getByTestId('token-input').inputValue(), '', 'the refused token is not kept in the field');
  assert.equal(await page.evaluate(() => localStorage.getItem('cgw-console-token')), null, 'nor stored');

  // A visitor's token is not an operator's.
  const visitorToken = await gw.token({ role: 'visitor', sub: 'v_x', name: 'Eve' });
  await page.getByTestId('token-input').fill(visitorToken);
  await page.getByTestId('token-submit').click();
  await page.locator('[data-testid=signin-error]', { hasText: 'not an operator token' }).waitFor();

  const token = await gw.token({ role: 'operator', sub: 'op9', name: 'Nina' });
  await page.getByTestId('token-input').fill(token);
  await page.getByTestId('token-submit').click();
  await page.locator('[data-testid=conn-state][data-state=open]').waitFor();
  await page.locator('[data-testid=me-name]', { hasText: 'Nina' }).waitFor();
  assert.ok(await page.getByTestId('signin').isHidden());
  // Signed in across reloads.
  await page.reload();
  await page.locator('[data-testid=me-name]', { hasText: 'Nina' }).waitFor();
  await page.locator('[data-testid=conn-state][data-state=open]').waitFor();
  // A sign-in link opened in the same tab switches the operator, and does not stay in the
  // address bar (nor in history or screenshots).
  const token2 = await gw.token({ role: 'operator', sub: 'op8', name: 'Hana' });
  await page.goto(`${gw.url}/console#token=${token2}`);
  await page.locator('[data-testid=me-name]', { hasText: 'Hana' }).waitFor();
  await page.locator('[data-testid=conn-state][data-state=open]').waitFor();
  assert.equal(new URL(page.url()).hash, '');
  await page.getByTestId('signout').click();
  await page.getByTestId('signin').waitFor();
  assert.deepEqual(errors, []);
});

test('console: alerts, counters, preview, drafts, transfer and close', { skip: skipReason(), timeout: 180000 }, async (t) => {
  const { gw, browser } = await setup(t);
  const a = await openConsole(browser, gw, { sub: 'op1', name: 'Olga' });
  await a.page.addInitScript(recordAlerts);
  await a.page.reload();
  await a.page.locator('[data-testid=conn-state][data-state=open]').waitFor();
  const b = await openConsole(browser, gw, { sub: 'op2', name: 'Petr' });
  await setStatus(a.page, 'active');
  await setStatus(b.page, 'active');

  // A new conversation: a sound and a desktop notification (the window is in the background).
  const v1 = await openVisitor(browser, gw, '/?from=ad', { locale: 'cs-CZ' });
  await v1.page.evaluate(() => window.ChatWidget.identify({ name: 'Ann', email: 'ann@example.com' }));
  await visitorWrites(v1, 'First visitor here');
  await waitUntil(() => a.page.evaluate(() => window.__alerts.notifications.length > 0 && window.__alerts.beeps > 0), {
    message: 'a notification and a sound'
  });
  const notes = await a.page.evaluate(() => window.__alerts.notifications);
  assert.equal(notes.length, 1, 'one notification per new conversation');
  assert.match(notes[0].title, /visitor/i);
  assert.match(notes[0].body, /Ann/);
  await a.page.locator('[data-testid=queue-count]', { hasText: /^1$/ }).waitFor();

  // The visitor preview before accepting: browser, OS, device, page, language.
  await a.page.locator('[data-testid=queue-item]').first().click();
  const panel = a.page.getByTestId('visitor-panel');
  await panel.locator('dd', { hasText: /Chrom/ }).waitFor();
  await panel.locator('dd', { hasText: /Linux/ }).waitFor();
  await panel.locator('dd', { hasText: '?from=ad' }).waitFor();
  // The language is the one the widget speaks and sends in hello: the page's (en) over the
  // browser's (cs-CZ).
  await panel.locator('dd', { hasText: /^en$/ }).waitFor();
  await panel.locator('dd', { hasText: 'ann@example.com' }).waitFor();
  await a.page.locator('[data-testid=conv-view][data-readonly=true]').waitFor();
  await screenshot(a.page, 'console-preview');

  const c1 = await acceptFirstQueued(a);
  const v2 = await openVisitor(browser, gw);
  await v2.page.evaluate(() => window.ChatWidget.identify({ name: 'Boris' }));
  await visitorWrites(v2, 'Second visitor here');
  const c2 = await acceptFirstQueued(a);
  await a.page.locator('[data-testid=my-count]', { hasText: /^2$/ }).waitFor();
  await a.page.locator('[data-testid=queue-count]', { hasText: /^0$/ }).waitFor();

  // Drafts: kept while switching between conversations…
  const composer = a.page.getByTestId('composer');
  const item = (c) => a.page.locator(`[data-testid=my-item][data-conv="${c}"]`);
  const open = async (c) => {
    await item(c).click();
    await a.page.locator(`[data-testid=conv-view][data-conv="${c}"][data-readonly=false]`).waitFor();
  };
  await composer.fill('Draft for Boris');
  await open(c1);
  assert.equal(await composer.inputValue(), '');
  await composer.fill('Draft for Ann');
  await open(c2);
  assert.equal(await composer.inputValue(), 'Draft for Boris');
  await open(c1);
  assert.equal(await composer.inputValue(), 'Draft for Ann');
  // …across a reload…
  await a.page.reload();
  await a.page.locator('[data-testid=conn-state][data-state=open]').waitFor();
  await open(c1);
  assert.equal(await composer.inputValue(), 'Draft for Ann');
  await open(c2);
  assert.equal(await composer.inputValue(), 'Draft for Boris');
  await open(c1);
  // …and on another device of the same operator (kept by the gateway, sent in welcome).
  const other = await newPage(browser);
  await other.page.goto(`${gw.url}/console#token=${a.token}`);
  await other.page.locator(`[data-testid=my-item][data-conv="${c1}"]`).click();
  await waitUntil(async () => (await other.page.getByTestId('composer').inputValue()) === 'Draft for Ann', {
    message: 'the server-side draft on another device'
  });
  // …and live: what is typed on one device shows on the other (when it is not typing itself).
  await other.page.getByTestId('conv-title').click();
  await open(c1);
  await composer.fill('Draft for Ann, second version');
  await waitUntil(
    async () => (await other.page.getByTestId('composer').inputValue()) === 'Draft for Ann, second version',
    { message: 'the draft echoed to the other device' }
  );
  assert.equal(await composer.inputValue(), 'Draft for Ann, second version', 'the echo does not disturb the typist');
  await other.context.close();

  // Transfer to an operator: the dialog shows each operator's status and load.
  await open(c2);
  await a.page.getByTestId('transfer-button').click();
  const petr = a.page.locator('[data-testid=transfer-operator][data-operator=op2]');
  await petr.waitFor();
  assert.match(await petr.innerText(), /Petr — active, 0 chats/);
  await a.page.locator('[data-testid=transfer-queue][data-queue=general]').waitFor();
  await screenshot(a.page, 'console-transfer');
  await petr.locator('input').check();
  await a.page.getByTestId('transfer-note').fill('Boris needs a refund');
  await a.page.getByTestId('transfer-confirm').click();
  await b.page.locator(`[data-testid=my-item][data-conv="${c2}"]`).waitFor();
  await b.page.locator('[data-testid=toast]', { hasText: 'transferred to you' }).waitFor();
  await item(c2).waitFor({ state: 'detached' });
  await a.page.locator('[data-testid=my-count]', { hasText: /^1$/ }).waitFor();
  // The new operator sees the history and the visitor keeps chatting.
  await b.page.locator(`[data-testid=my-item][data-conv="${c2}"]`).click();
  await b.page.locator('[data-testid=conv-msg][data-role=visitor]', { hasText: 'Second visitor here' }).waitFor();
  await operatorSends(b, 'Petr here, about that refund.');
  await v2.page.locator('[data-testid=cw-msg][data-role=operator]', { hasText: 'Petr here' }).waitFor();
  // Olga's load is now visible to Petr as 1.
  await b.page.getByTestId('transfer-button').click();
  const olga = b.page.locator('[data-testid=transfer-operator][data-operator=op1]');
  assert.match(await olga.innerText(), /Olga — active, 1 chat$/);
  // Transfer to a queue: it waits there for everyone again.
  await b.page.locator('[data-testid=transfer-queue][data-queue=general] input').check();
  await b.page.getByTestId('transfer-confirm').click();
  await a.page.locator(`[data-testid=queue-item][data-conv="${c2}"]`).waitFor();
  await b.page.locator(`[data-testid=queue-item][data-conv="${c2}"]`).waitFor();
  await b.page.locator(`[data-testid=my-item][data-conv="${c2}"]`).waitFor({ state: 'detached' });

  // Close with an outcome and tags.
  await open(c1);
  await a.page.getByTestId('tag-input').fill('vip');
  await a.page.getByTestId('tag-input').press('Enter');
  await a.page.locator('[data-testid=tag]', { hasText: 'vip' }).waitFor();
  await a.page.getByTestId('close-button').click();
  assert.equal(await a.page.getByTestId('close-tags').inputValue(), 'vip');
  await a.page.getByTestId('close-outcome').selectOption('callback');
  await a.page.getByTestId('close-tags').fill('vip, shipping');
  await a.page.getByTestId('close-confirm').click();
  await item(c1).and(a.page.locator('[data-state=closed]')).waitFor();
  await panel.locator('dd', { hasText: 'callback' }).waitFor();
  await a.page.locator('[data-testid=tag]', { hasText: 'shipping' }).waitFor();
  // What the panel shows is what the gateway stored, not what the dialog had selected: the
  // closed conversation as the gateway serves it (its JSON transcript) carries both.
  const res = await fetch(`${gw.url}/v1/conversations/${c1}/transcript?format=json`, {
    headers: { authorization: `Bearer ${a.token}` }
  });
  assert.equal(res.status, 200);
  const stored = (await res.json()).conversation;
  assert.equal(stored.state, 'closed');
  assert.equal(stored.outcome, 'callback');
  assert.deepEqual([...stored.tags].sort(), ['shipping', 'vip']);
  await a.page.locator('[data-testid=conv-view][data-readonly=true]').waitFor();
  await v1.page.getByTestId('cw-ended').waitFor();
  await a.page.locator('[data-testid=my-count]', { hasText: /^0$/ }).waitFor();
  await screenshot(a.page, 'console-closed');

  assert.deepEqual([...a.errors, ...b.errors, ...v1.errors, ...v2.errors], []);
});

test('console: a visitor who identifies mid-conversation is shown at once, even across a dropped connection', { skip: skipReason(), timeout: 120000 }, async (t) => {
  const { gw, browser } = await setup(t);
  const op = await openConsole(browser, gw, { sub: 'op1', name: 'Olga' });
  await setStatus(op.page, 'active');
  const v = await openVisitor(browser, gw, '/', { testHooks: true });
  await visitorWrites(v, 'Hello, I am anonymous for now');
  const conv = await acceptFirstQueued(op);
  const panel = op.page.getByTestId('visitor-panel');
  await op.page.locator(`[data-testid=my-item][data-conv="${conv}"]`).click();
  await panel.getByTestId('visitor-online').waitFor();

  // The site learns who the visitor is after the chat began.
  await v.page.evaluate(() => window.ChatWidget.identify({ name: 'Ann Later', email: 'ann@example.com' }));
  await v.page.evaluate(() => window.ChatWidget.setParams({ plan: 'gold' }));
  await panel.getByTestId('visitor-online').filter({ hasText: 'Ann Later' }).waitFor();
  await panel.locator('dd', { hasText: 'ann@example.com' }).waitFor();
  await panel.locator('dd', { hasText: 'gold' }).waitFor();
  await op.page.locator(`[data-testid=my-item][data-conv="${conv}"]`, { hasText: 'Ann Later' }).waitFor();

  // Given while the widget's connection is down: sent once it is back.
  await v.page.evaluate(() => window.__chatGatewayTestHooks.drop(true));
  await waitUntil(() => v.page.evaluate(() => window.__chatGatewayTestHooks.state().conn !== 'open'), {
    message: 'the widget is offline'
  });
  await v.page.evaluate(() => window.ChatWidget.identify({ phone: '+420 777 123 456' }));
  await v.page.evaluate(() => window.__chatGatewayTestHooks.resume());
  await panel.locator('dd', { hasText: '+420 777 123 456' }).waitFor();
  assert.deepEqual([...op.errors, ...v.errors], []);
});

test('console: a queue longer than one listing shows every waiting visitor in its counter', { skip: skipReason(), timeout: 120000 }, async (t) => {
  // 105 anonymous visitors from this one address: past the default sessions per address.
  const { gw, browser } = await setup(t, { env: { GATEWAY_SESSIONS_PER_IP: '1000' } });
  const op = await openConsole(browser, gw, { sub: 'op1', name: 'Olga' });
  // 105 visitors start conversations from sockets of their own (a listing carries 100).
  const page = await newPage(browser);
  await page.page.goto(gw.url + '/console');
  const started = await page.page.evaluate(async (url) => {
    const one = (i) =>
      fetch('/v1/visitor/session', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ site: 'demo', name: 'Visitor ' + i })
      })
        .then((r) => r.json())
        .then(
          (s) =>
            new Promise((resolve, reject) => {
              const ws = new WebSocket(url.replace('http', 'ws') + '/v1/ws', 'chat.v1.json');
              ws.onopen = () => ws.send(JSON.stringify({ t: 'hello', token: s.token }));
              ws.onmessage = (e) => {
                const f = JSON.parse(e.data);
                if (f.t === 'welcome') ws.send(JSON.stringify({ t: 'start', rid: 1 }));
                if (f.t === 'ok' && f.rid === 1) resolve(f.conv.id);
                if (f.t === 'error') reject(new Error(f.message));
              };
              window.__socks = (window.__socks || []).concat(ws);
            })
        );
    const ids = [];
    for (let i = 0; i < 105; i += 15)
      ids.push(...(await Promise.all(Array.from({ length: Math.min(15, 105 - i) }, (_, k) => one(i + k)))));
    return ids.length;
  }, gw.url);
  assert.equal(started, 105);
  await op.page.locator('[data-testid=queue-count]', { hasText: /^105$/ }).waitFor();
  await op.page.locator('[data-testid=queue-more]', { hasText: '+ 5 more waiting' }).waitFor();
  assert.equal(await op.page.getByTestId('queue-item').count(), 100);
  // Taking one: the counter follows.
  await op.page.getByTestId('queue-accept').first().click();
  await op.page.locator('[data-testid=queue-count]', { hasText: /^104$/ }).waitFor();
  assert.deepEqual([...op.errors, ...page.errors], []);
});
