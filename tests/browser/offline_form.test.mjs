// The widget's three modes follow the site's availability and `widget_when_away`:
//  - nobody signed in: the offline form; the message left there reaches the queue, where an
//    operator who signs in later finds it with the visitor's contact details, marked as an
//    offline message (the widget's `start` says `offline: true`) in the queue, the view and
//    their chats;
//  - operators signed in but none active, `widget_when_away: offline`: the offline form too;
//  - the same with `widget_when_away: busy` (the default): the chat with the "busy" notice, and
//    the site's unavailability notice after the first message.
// The open widget keeps following availability (polled every `data-poll` seconds: 1 here), so
// the form gives way to the chat when an operator turns active, and the busy notice goes.
import test from 'node:test';
import assert from 'node:assert/strict';
import {
  skipReason,
  setup,
  openConsole,
  setStatus,
  openVisitor,
  startHostSite,
  visitorWrites,
  waitUntil,
  screenshot
} from './harness.mjs';

async function fillOfflineForm(page, { name, email, phone, message }) {
  await page.getByTestId('cw-off-name').fill(name);
  await page.getByTestId('cw-off-email').fill(email);
  if (phone) await page.getByTestId('cw-off-phone').fill(phone);
  await page.getByTestId('cw-off-message').fill(message);
}

test('nobody online: offline form, and the message reaches the queue', { skip: skipReason(), timeout: 120000 }, async (t) => {
  const { gw, browser } = await setup(t);
  const v = await openVisitor(browser, gw, '/', { testHooks: true });
  await v.page.getByTestId('cw-launcher').click();
  await v.page.locator('[data-testid=cw-panel][data-mode=offline]').waitFor();

  // Bad input: the form's validation stops it. A submit that got through would queue the
  // message at once (the submit handler runs within the click), so the outbox stays empty.
  const nothingQueued = async (what) => {
    const st = await v.page.evaluate(() => window.__chatGatewayTestHooks.state());
    assert.equal(st.out, 0, `${what}: nothing was queued to send`);
    assert.equal(st.conv, undefined, `${what}: no conversation was started`);
    assert.equal(st.mode, 'offline');
  };
  await v.page.getByTestId('cw-off-submit').click();
  await nothingQueued('empty form');
  assert.equal(await v.page.getByTestId('cw-off-name').evaluate((el) => el.validity.valueMissing), true);
  await fillOfflineForm(v.page, { name: 'Ann Offline', email: 'not-an-email', message: 'x' });
  await v.page.getByTestId('cw-off-submit').click();
  await nothingQueued('bad email');
  assert.equal(await v.page.getByTestId('cw-off-email').evaluate((el) => el.validity.typeMismatch), true);

  await fillOfflineForm(v.page, {
    name: 'Ann Offline',
    email: 'ann@example.com',
    phone: '+420 123 456 789',
    message: 'Please call me back about a bulk order.'
  });
  await screenshot(v.page, 'widget-offline-form');
  await v.page.getByTestId('cw-off-submit').click();
  await v.page.getByTestId('cw-thanks').waitFor();
  await screenshot(v.page, 'widget-offline-thanks');

  // An operator signs in afterwards (inactive: status is a separate switch) and finds it.
  const op = await openConsole(browser, gw, { sub: 'op1', name: 'Olga' });
  assert.equal(await op.page.getByTestId('status-select').inputValue(), 'inactive');
  const item = op.page.locator('[data-testid=queue-item]', { hasText: 'Ann Offline' });
  await item.waitFor();
  await op.page.locator('[data-testid=queue-count]', { hasText: /^1$/ }).waitFor();
  await item.getByTestId('offline-badge').filter({ hasText: 'offline message' }).waitFor();
  assert.ok(await op.page.getByTestId('conv-offline').isHidden(), 'no conversation open yet');
  await item.click();
  await op.page.getByTestId('conv-offline').filter({ hasText: 'offline message' }).waitFor();
  const panel = op.page.getByTestId('visitor-panel');
  await panel.locator('dd', { hasText: 'ann@example.com' }).waitFor();
  await panel.locator('dd', { hasText: '+420 123 456 789' }).waitFor();
  await op.page.locator('[data-testid=conv-msg][data-role=visitor]', { hasText: 'bulk order' }).waitFor();
  await screenshot(op.page, 'console-offline-queue');

  // The visitor is answered in the same widget.
  await setStatus(op.page, 'active');
  await op.page.getByTestId('conv-accept').click();
  // Still marked once it is the operator's: in their chats and in the view.
  await op.page.locator('[data-testid=my-item]', { hasText: 'Ann Offline' }).getByTestId('offline-badge').waitFor();
  assert.ok(await op.page.getByTestId('conv-offline').isVisible());
  await op.page.getByTestId('composer').fill('Hello Ann, calling you in 5 minutes.');
  await op.page.getByTestId('composer').press('Enter');
  await v.page.locator('[data-testid=cw-panel][data-mode=chat]').waitFor();
  await v.page.locator('[data-testid=cw-msg][data-role=operator]', { hasText: 'calling you' }).waitFor();
  assert.deepEqual(v.errors, []);
  assert.deepEqual(op.errors, []);
});

test('no active operator: widget_when_away decides between the offline form and the busy chat', { skip: skipReason(), timeout: 120000 }, async (t) => {
  const sites = [
    { id: 'demo', settings: { widget_when_away: 'busy', unavailable_text: 'Nobody can answer right now.' } },
    { id: 'away', settings: { widget_when_away: 'offline' } }
  ];
  const { gw, browser } = await setup(t, { sites });
  const host = await startHostSite(t, gw);
  // Both sites have an operator signed in who is not active.
  const opDemo = await openConsole(browser, gw, { sub: 'op1', name: 'Olga', site: 'demo' });
  const opAway = await openConsole(browser, gw, { sub: 'op2', name: 'Petr', site: 'away' });
  await setStatus(opDemo.page, 'away');

  const off = await openVisitor(browser, gw, host.url({ site: 'away' }));
  await off.page.getByTestId('cw-launcher').click();
  await off.page.locator('[data-testid=cw-panel][data-mode=offline]').waitFor();
  await fillOfflineForm(off.page, { name: 'Bob Away', email: 'bob@example.com', message: 'Do you ship to Brno?' });
  await off.page.getByTestId('cw-off-submit').click();
  await off.page.getByTestId('cw-thanks').waitFor();
  await opAway.page.locator('[data-testid=queue-item]', { hasText: 'Bob Away' }).getByTestId('offline-badge').waitFor();
  assert.equal(await opDemo.page.locator('[data-testid=queue-item]').count(), 0, 'sites do not see each other');

  // `poll`: availability every second instead of every 30.
  const busy = await openVisitor(browser, gw, host.url({ site: 'demo', poll: 1 }));
  await busy.page.evaluate(() => {
    window.__status = [];
    window.ChatWidget.on('status', (s) => window.__status.push(s));
  });
  await busy.page.getByTestId('cw-launcher').click();
  await busy.page.locator('[data-testid=cw-panel][data-mode=chat]').waitFor();
  await busy.page.getByTestId('cw-hint').waitFor();
  await visitorWrites(busy, 'Is anyone there?');
  await busy.page.locator('[data-testid=cw-notice]', { hasText: 'Nobody can answer right now.' }).waitFor();
  await opDemo.page.locator('[data-testid=queue-item]').first().waitFor();
  // A chat started in the widget's chat (busy, not the form) is no offline message.
  assert.equal(await opDemo.page.getByTestId('offline-badge').count(), 0, 'a chat is not marked offline');
  await screenshot(busy.page, 'widget-busy');

  // An operator turns active: the notice about being busy goes away, with the panel open and
  // before anyone answers (the conversation is still waiting in the queue).
  await setStatus(opDemo.page, 'active');
  await busy.page.getByTestId('cw-hint').waitFor({ state: 'hidden' });
  await waitUntil(() => busy.page.evaluate(() => window.__status.includes('online')), {
    message: 'the status event "online"'
  });
  assert.equal(await opDemo.page.locator('[data-testid=queue-item]').count(), 1, 'nobody has answered yet');
  assert.equal(await busy.page.locator('[data-testid=cw-msg][data-role=operator]').count(), 0);
  await opDemo.page.getByTestId('queue-accept').click();
  await opDemo.page.getByTestId('composer').fill('Yes, I am here.');
  await opDemo.page.getByTestId('composer').press('Enter');
  await busy.page.locator('[data-testid=cw-msg][data-role=operator]', { hasText: 'I am here' }).waitFor();
  await busy.page.getByTestId('cw-hint').waitFor({ state: 'hidden' });
  assert.ok(await opDemo.page.getByTestId('conv-offline').isHidden(), 'no offline mark in the view');
  assert.equal(await opDemo.page.getByTestId('offline-badge').count(), 0);
  assert.deepEqual([...off.errors, ...busy.errors, ...opDemo.errors, ...opAway.errors], []);
});

test('an open widget follows availability: the offline form gives way to the chat and back', { skip: skipReason(), timeout: 120000 }, async (t) => {
  const { gw, browser } = await setup(t, { sites: [{ id: 'demo', settings: { widget_when_away: 'offline' } }] });
  const host = await startHostSite(t, gw);
  const op = await openConsole(browser, gw, { sub: 'op1', name: 'Olga' });
  const v = await openVisitor(browser, gw, host.url({ poll: 1 }), { testHooks: true });
  await v.page.getByTestId('cw-launcher').click();
  await v.page.locator('[data-testid=cw-panel][data-mode=offline]').waitFor();
  await v.page.getByTestId('cw-off-message').fill('Do you have it in blue?');
  await v.page.evaluate(() => {
    window.__status = [];
    window.ChatWidget.on('status', (s) => window.__status.push(s));
  });

  // The operator turns active while the visitor looks at the form: it becomes the chat, the
  // message typed so far moves along, and the page hears about it. The panel never closed.
  await setStatus(op.page, 'active');
  await v.page.locator('[data-testid=cw-panel][data-mode=chat]').waitFor();
  assert.equal(await v.page.getByTestId('cw-input').inputValue(), 'Do you have it in blue?');
  await waitUntil(() => v.page.evaluate(() => window.__status.includes('online')), {
    message: 'the status event "online"'
  });
  await v.page.getByTestId('cw-hint').waitFor({ state: 'hidden' });

  // Away again (and widget_when_away: offline): back to the form.
  await setStatus(op.page, 'away');
  await v.page.locator('[data-testid=cw-panel][data-mode=offline]').waitFor();
  await waitUntil(() => v.page.evaluate(() => window.__status.join() === 'online,busy'), {
    message: 'the status events "online", then "busy"'
  });
  assert.equal(
    await v.page.evaluate(() => window.__chatGatewayTestHooks.state().out),
    0,
    'nothing was sent on the way'
  );
  assert.ok(await v.page.getByTestId('cw-panel').isVisible());
  assert.deepEqual([...v.errors, ...op.errors], []);
});
