// The visitor's browser goes offline for a few seconds while the operator writes; when it comes
// back the widget resumes from its cursors and shows every message exactly once, in order. A
// message the visitor wrote while offline is delivered once (retried with the same cid). The
// operator's console shows the visitor away during the grace window, then back.
import test from 'node:test';
import assert from 'node:assert/strict';
import {
  skipReason, setup, newPage, openConsole, setStatus, openVisitor, startHostSite, visitorWrites,
  acceptFirstQueued, operatorSends, widgetMessages, consoleMessages, waitUntil, screenshot
} from './harness.mjs';

test('offline visitor gets every message exactly once, in order', { skip: skipReason(), timeout: 120000 }, async (t) => {
  const { gw, browser } = await setup(t);
  const op = await openConsole(browser, gw, { sub: 'op1', name: 'Olga' });
  await setStatus(op.page, 'active');
  const v = await openVisitor(browser, gw, '/', { testHooks: true });
  await visitorWrites(v, 'My parcel is late');
  await acceptFirstQueued(op);
  await operatorSends(op, 'Sorry to hear that, checking now.');
  await v.page.locator('[data-testid=cw-msg][data-role=operator]', { hasText: 'checking now' }).waitFor();
  await op.page.locator('[data-testid=visitor-online][data-online=true]').waitFor();

  // The network goes away: only the browser's own emulation, no hook inside the widget. Its
  // socket is closed (the gateway sees the visitor leave) and new ones cannot be opened.
  await v.context.setOffline(true);
  await v.page.locator('[data-testid=cw-panel]:not([data-conn=open])').waitFor();
  await op.page.locator('[data-testid=visitor-online][data-online=false]').waitFor();
  await op.page.locator(`[data-testid=my-item] .dot.away`).waitFor();

  const meanwhile = ['Update 1: found it', 'Update 2: it is in Prague', 'Update 3: arrives tomorrow'];
  for (const text of meanwhile) await operatorSends(op, text);

  await v.page.getByTestId('cw-input').fill('Are you still there?');
  await v.page.getByTestId('cw-input').press('Enter');
  await v.page
    .locator('[data-testid=cw-msg][data-role=visitor][data-state=sending]', { hasText: 'still there' })
    .waitFor();
  assert.equal(
    (await widgetMessages(v.page)).filter((m) => m.text.startsWith('Update')).length,
    0,
    'nothing arrives while offline'
  );
  assert.notEqual(
    await v.page.locator('[data-testid=cw-panel]').getAttribute('data-conn'),
    'open',
    'still disconnected'
  );
  await screenshot(v.page, 'widget-offline');

  await v.context.setOffline(false);
  await v.page.locator('[data-testid=cw-panel][data-conn=open]').waitFor();
  await v.page.locator('[data-testid=cw-msg][data-role=operator]', { hasText: meanwhile[2] }).waitFor();
  await op.page.locator('[data-testid=conv-msg][data-role=visitor]', { hasText: 'still there' }).waitFor();
  await v.page
    .locator('[data-testid=cw-msg][data-role=visitor]:not([data-state=sending])', { hasText: 'still there' })
    .waitFor();
  await op.page.locator('[data-testid=visitor-online][data-online=true]').waitFor();

  // A second cut that the browser does not announce (a 1006-like drop): backoff and resume.
  await v.page.evaluate(() => window.__chatGatewayTestHooks.drop());
  await operatorSends(op, 'Update 4: courier called');
  await v.page.locator('[data-testid=cw-msg][data-role=operator]', { hasText: 'Update 4' }).waitFor();

  const msgs = await widgetMessages(v.page);
  const updates = msgs.filter((m) => m.text.startsWith('Update')).map((m) => m.text);
  assert.deepEqual(updates, [...meanwhile, 'Update 4: courier called'], 'each update once, in order');
  const seqs = msgs.map((m) => m.seq).filter((s) => s != null);
  assert.equal(seqs.length, msgs.length, 'every message shown is a stored one');
  assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b), 'widget in seq order');
  assert.equal(new Set(seqs).size, seqs.length, 'no seq shown twice');
  const opMsgs = await consoleMessages(op.page);
  assert.equal(
    opMsgs.filter((m) => m.text === 'Are you still there?').length,
    1,
    'the retried message reached the operator once'
  );
  const opSeqs = opMsgs.map((m) => m.seq);
  assert.deepEqual(opSeqs, [...opSeqs].sort((a, b) => a - b), 'console in seq order');
  assert.equal(new Set(opSeqs).size, opSeqs.length, 'console: no seq twice');

  // The same after a page load: the transcript comes back from localStorage and history, once.
  await v.page.reload();
  await v.page.locator('[data-testid=cw-panel][data-conn=open]').waitFor();
  await v.page.locator('[data-testid=cw-msg][data-role=operator]', { hasText: 'Update 4' }).waitFor();
  assert.deepEqual(
    (await widgetMessages(v.page)).map((m) => m.text),
    msgs.map((m) => m.text),
    'the same list after a reload'
  );

  await screenshot(v.page, 'widget-after-reconnect');
  assert.deepEqual(v.errors, []);
  assert.deepEqual(op.errors, []);
});

/** Records the close code of every WebSocket the page opens (installed before the widget runs). */
function recordSocketCloses() {
  window.__closes = [];
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener('close', (e) => window.__closes.push(e.code));
    }
  };
}

test('close code 4001: an expired token gets a new session for the same visitor', { skip: skipReason(), timeout: 120000 }, async (t) => {
  // Visitor tokens live one second (plus the gateway's 5 s of leeway), so one expires mid-chat.
  const { gw, browser } = await setup(t, { env: { GATEWAY_VISITOR_TOKEN_TTL: '1s' } });
  const host = await startHostSite(t, gw);
  const op = await openConsole(browser, gw, { sub: 'op1', name: 'Olga' });
  await setStatus(op.page, 'active');
  const v = await newPage(browser, { testHooks: true });
  await v.page.addInitScript(recordSocketCloses);
  await v.page.goto(host.url({}));
  await visitorWrites(v, 'Before my token expires');
  await acceptFirstQueued(op);
  const stored = () => v.page.evaluate(() => JSON.parse(localStorage.getItem('cgw:demo')));
  const before = await stored();

  // Wait until the gateway can no longer accept the token (a state, read from the token).
  await waitUntil(() => Date.now() / 1000 > before.exp / 1000 + 5 + 1, {
    timeout: 15000,
    message: 'the visitor token to expire'
  });
  await v.page.evaluate(() => window.__chatGatewayTestHooks.drop());
  await operatorSends(op, 'After the token expired');
  await v.page.locator('[data-testid=cw-msg][data-role=operator]', { hasText: 'After the token expired' }).waitFor();
  const after = await stored();
  assert.ok(
    (await v.page.evaluate(() => window.__closes)).includes(4001),
    'the gateway refused the expired token with 4001'
  );
  assert.notEqual(after.token, before.token, 'a new token');
  assert.equal(after.vid, before.vid, 'the same visitor');
  assert.equal(after.conv, before.conv, 'the same conversation');

  assert.deepEqual(v.errors, []);
});

/**
 * A gateway, an active operator, and a visitor on a customer's page (another origin) who has
 * written `text`; the visitor's page records the close codes its sockets get.
 */
async function visitorOnHostSite(t, text) {
  const { gw, browser } = await setup(t);
  const host = await startHostSite(t, gw);
  const op = await openConsole(browser, gw, { sub: 'op1', name: 'Olga' });
  await setStatus(op.page, 'active');
  const v = await newPage(browser, { testHooks: true });
  await v.page.addInitScript(recordSocketCloses);
  await v.page.goto(host.url({}));
  await visitorWrites(v, text);
  return { gw, browser, host, op, v };
}

test('close code 4003 and a refused session: the widget stops and says so', { skip: skipReason(), timeout: 120000 }, async (t) => {
  const { gw, browser, host, v } = await visitorOnHostSite(t, 'Hello before the site changes its mind');

  // The site stops allowing this page's origin: the next hello is refused with 4003, and the
  // widget stays closed and says so instead of retrying.
  const sup = await gw.token({ role: 'supervisor', sub: 'boss', name: 'Sofia' });
  const res = await fetch(`${gw.url}/v1/sites/demo/settings`, {
    method: 'PATCH',
    headers: { authorization: `Bearer ${sup}`, 'content-type': 'application/json' },
    body: JSON.stringify({ allowed_origins: ['https://shop.example'] })
  });
  assert.equal(res.status, 200);
  await v.page.evaluate(() => window.__chatGatewayTestHooks.drop());
  await v.page.locator('[data-testid=cw-panel][data-conn=closed]').waitFor();
  await v.page.getByTestId('cw-notice').filter({ hasText: 'not available' }).waitFor();
  assert.deepEqual((await v.page.evaluate(() => window.__closes)).filter((c) => c >= 4000), [4003]);
  assert.equal(await v.page.getByTestId('cw-conn').innerText(), '', 'not "connecting" forever');

  // A new visitor on that page is refused a session: the widget stops there too.
  const w = await newPage(browser);
  await w.page.addInitScript(recordSocketCloses);
  await w.page.goto(host.url({}));
  await w.page.getByTestId('cw-launcher').click();
  await w.page.getByTestId('cw-notice').filter({ hasText: 'not available' }).waitFor();
  await w.page.locator('[data-testid=cw-panel][data-conn=closed]').waitFor();
  assert.ok(await w.page.getByTestId('cw-input').isDisabled(), 'nothing to type into');
  assert.ok(await v.page.getByTestId('cw-input').isDisabled(), 'nor for the visitor already there');
  assert.deepEqual(await w.page.evaluate(() => window.__closes), [], 'no socket was even tried');
  assert.deepEqual([...v.errors, ...w.errors], []);
});

test('a banned visitor stays stopped: a refused session does not mint a new visitor', { skip: skipReason(), timeout: 120000 }, async (t) => {
  const { gw, browser, op, v } = await visitorOnHostSite(t, 'You will regret this');
  const conv = await acceptFirstQueued(op);
  const stored = () => v.page.evaluate(() => JSON.parse(localStorage.getItem('cgw:demo')));
  const before = await stored();

  // The operator bans the visitor from the console.
  await op.page.locator(`[data-testid=my-item][data-conv="${conv}"]`).click();
  await op.page.getByTestId('more-button').click();
  await op.page.getByTestId('ban-button').click();
  await op.page.getByTestId('ban-duration').selectOption('1h');
  await op.page.getByTestId('ban-reason').fill('abuse');
  await op.page.getByTestId('ban-confirm').click();
  await op.page.locator('[data-testid=toast]', { hasText: `visitor id ${before.vid}` }).waitFor();
  // The widget says so, and takes no more messages.
  const banned = 'You can no longer send messages in this chat.';
  await v.page.getByTestId('cw-notice').filter({ hasText: banned }).waitFor();
  await v.page.locator('[data-testid=cw-panel][data-conn=closed]').waitFor();
  assert.ok(await v.page.getByTestId('cw-input').isDisabled(), 'the input is disabled');
  assert.ok(await v.page.getByTestId('cw-send').isDisabled(), 'so is the send button');
  assert.equal(await v.page.getByTestId('cw-ended').count(), 0, 'no "write again to start a new one"');
  assert.ok((await v.page.evaluate(() => window.__closes)).includes(4003), 'the gateway closed the visitor with 4003');

  // A page load with a token the widget takes as expired: it asks POST /v1/visitor/session with
  // the old token, the gateway answers 403 banned, and the widget must stop there instead of
  // asking again without the token (which would mint a new visitor id and escape the ban).
  await v.page.evaluate(() => {
    const s = JSON.parse(localStorage.getItem('cgw:demo'));
    s.exp = 1;
    localStorage.setItem('cgw:demo', JSON.stringify(s));
  });
  const sessions = [];
  v.page.on(
    'response',
    (r) => r.url().endsWith('/v1/visitor/session') && r.request().method() === 'POST' && sessions.push(r.status())
  );
  await v.page.reload();
  await v.page.getByTestId('cw-launcher').waitFor();
  if (!(await v.page.getByTestId('cw-panel').isVisible())) await v.page.getByTestId('cw-launcher').click();
  await v.page.getByTestId('cw-notice').filter({ hasText: banned }).waitFor();
  await v.page.locator('[data-testid=cw-panel][data-conn=closed]').waitFor();
  assert.ok(await v.page.getByTestId('cw-input').isDisabled(), 'the input is disabled after a page load too');
  await waitUntil(() => sessions.length > 0, { message: 'the session request' });
  assert.deepEqual(sessions, [403], 'one session request, refused; no second one without the token');
  assert.deepEqual(await v.page.evaluate(() => window.__closes), [], 'no socket was opened');
  const after = await stored();
  assert.equal(after.vid, before.vid, 'no new visitor id');
  assert.equal(after.token, before.token, 'no new token');
  assert.equal((await v.page.evaluate(() => window.__chatGatewayTestHooks.state())).conn, 'closed');

  // A supervisor lifts the ban from the console; the same visitor (same id) chats again.
  const sup = await openConsole(browser, gw, { sub: 'sam', name: 'Sam', role: 'supervisor' });
  await sup.page.getByTestId('unban-id').fill(before.vid);
  await sup.page.getByTestId('unban-submit').click();
  await sup.page.locator('[data-testid=toast]', { hasText: 'may chat again' }).waitFor();
  await v.page.reload();
  await visitorWrites(v, 'I am sorry, let me try again');
  await op.page.locator('[data-testid=queue-item]').first().waitFor();
  assert.equal((await stored()).vid, before.vid, 'the same visitor');

  assert.deepEqual([...v.errors, ...op.errors, ...sup.errors], []);
});

test('a banned visitor: a message waiting to go out says "Not sent", never "Sending…" for ever', { skip: skipReason(), timeout: 120000 }, async (t) => {
  const { op, v } = await visitorOnHostSite(t, 'First words');
  const conv = await acceptFirstQueued(op);
  await op.page.locator(`[data-testid=my-item][data-conv="${conv}"]`).click();

  // The visitor's connection is down while they write; meanwhile the operator bans them.
  await v.page.evaluate(() => window.__chatGatewayTestHooks.drop(true));
  await waitUntil(() => v.page.evaluate(() => window.__chatGatewayTestHooks.state().conn !== 'open'), {
    message: 'the widget is offline'
  });
  await v.page.getByTestId('cw-input').fill('Last words');
  await v.page.getByTestId('cw-input').press('Enter');
  await v.page.locator('[data-testid=cw-msg][data-state=sending]', { hasText: 'Last words' }).waitFor();
  await op.page.getByTestId('more-button').click();
  await op.page.getByTestId('ban-button').click();
  await op.page.getByTestId('ban-confirm').click();
  await op.page.locator('[data-testid=toast]', { hasText: 'is banned until' }).waitFor();

  // Back online: the gateway refuses the hello (4003, banned). The message is not sent, and says so.
  await v.page.evaluate(() => window.__chatGatewayTestHooks.resume());
  await v.page.locator('[data-testid=cw-msg][data-state=ns]', { hasText: 'Last words' }).waitFor();
  await v.page.getByTestId('cw-notice').filter({ hasText: 'You can no longer send messages in this chat.' }).waitFor();
  assert.match(await v.page.locator('[data-testid=cw-msg][data-state=ns]').innerText(), /Not sent/);
  assert.equal(await v.page.locator('[data-testid=cw-msg][data-state=sending]').count(), 0);
  assert.equal((await v.page.evaluate(() => window.__chatGatewayTestHooks.state())).out, 0, 'nothing waits to go out');
  assert.ok(await v.page.getByTestId('cw-input').isDisabled());
  assert.deepEqual(await v.page.evaluate(() => window.__closes.filter((c) => c >= 4000)), [4003]);

  // Bad input: a click on the unsent message, or the API, sends nothing.
  await v.page.locator('[data-testid=cw-msg][data-state=ns]').click();
  await v.page.evaluate(() => window.ChatWidget.identify({ name: 'Still banned' }));
  assert.equal(await v.page.locator('[data-testid=cw-msg][data-role=visitor]').count(), 2);
  assert.equal((await v.page.evaluate(() => window.__chatGatewayTestHooks.state())).out, 0);
  assert.equal(await op.page.locator('[data-testid=conv-msg]', { hasText: 'Last words' }).count(), 0);
  assert.deepEqual([...v.errors, ...op.errors], []);
});
