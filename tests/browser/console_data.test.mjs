// What the console shows from the data the gateway sends with each conversation: the visitor's
// last message in the queue (refreshed as they write), the conversation fetched whole (`get`)
// when a waiting one is looked at (queue listings leave out the visitor's parameters), transfer
// notes in the conversation, read receipts that survive a reload and a transfer, and the site's
// settings applied as soon as a supervisor changes them.
import test from 'node:test';
import assert from 'node:assert/strict';
import {
  skipReason, setup, openConsole, setStatus, openVisitor, visitorWrites, waitUntil, screenshot
} from './harness.mjs';

/** The text of the queue item's last-message line, or null when it has none. */
const queueLast = (op, conv) =>
  op.page.evaluate((id) => {
    const el = document.querySelector(`[data-testid=queue-item][data-conv="${id}"] [data-testid=queue-last]`);
    return el ? { text: el.textContent, elements: el.children.length } : null;
  }, conv);

test('console: queue items show the visitor\'s last message as text, updated as they write', { skip: skipReason(), timeout: 120000 }, async (t) => {
  const { gw, browser } = await setup(t);
  const op = await openConsole(browser, gw);
  const v = await openVisitor(browser, gw);
  await visitorWrites(v, 'Is the <b>blue</b> one in stock?');
  const item = op.page.locator('[data-testid=queue-item]').first();
  await item.waitFor();
  const conv = await item.getAttribute('data-conv');
  await item.getByTestId('queue-last').filter({ hasText: 'Is the <b>blue</b> one in stock?' }).waitFor();
  const first = await queueLast(op, conv);
  assert.deepEqual(first, { text: 'Is the <b>blue</b> one in stock?', elements: 0 }, 'markup is text');

  // The waiting visitor writes again: the listing comes again, with the newer message.
  await v.page.getByTestId('cw-input').fill('Or the red one');
  await v.page.getByTestId('cw-input').press('Enter');
  await item.getByTestId('queue-last').filter({ hasText: /^Or the red one$/ }).waitFor();

  // A long message: the gateway sends at most 200 bytes of it, and that is what shows.
  await v.page.getByTestId('cw-input').fill('ž'.repeat(300));
  await v.page.getByTestId('cw-input').press('Enter');
  const long = await waitUntil(async () => {
    const last = await queueLast(op, conv);
    return last && last.text.startsWith('žž') && last;
  }, { message: 'the long message in the queue item' });
  const bytes = new TextEncoder().encode(long.text).length;
  assert.ok(bytes <= 200 && bytes >= 190, `cut to at most 200 bytes, got ${bytes}`);
  // It stays on one line of the item.
  const box = await item.getByTestId('queue-last').boundingBox();
  assert.ok(box.height < 24, `one line, got ${box.height}px`);
  await screenshot(op.page, 'console-queue-last-message');
  assert.deepEqual([...op.errors, ...v.errors], []);
});

test('console: a waiting conversation is fetched whole when looked at, with the visitor\'s parameters', { skip: skipReason(), timeout: 120000 }, async (t) => {
  const { gw, browser } = await setup(t);
  const op = await openConsole(browser, gw, { testHooks: true });
  const v = await openVisitor(browser, gw);
  await v.page.evaluate(() => {
    window.ChatWidget.identify({ name: 'Gina Params' });
    window.ChatWidget.setParams({ plan: 'gold', cart: '<img src=x onerror="window.__pwned=1">' });
  });
  await visitorWrites(v, 'Which plan am I on?');
  const item = op.page.locator('[data-testid=queue-item]', { hasText: 'Gina Params' });
  await item.waitFor();
  const conv = await item.getAttribute('data-conv');
  const panel = op.page.getByTestId('visitor-panel');
  const param = (name) =>
    panel.locator('dl.kv dt', { hasText: new RegExp(`^${name}$`) }).locator('xpath=following-sibling::dd[1]');

  await item.click();
  await op.page.locator(`[data-testid=conv-view][data-conv="${conv}"]`).waitFor();
  await param('plan').filter({ hasText: /^gold$/ }).waitFor();
  // A hostile value is text, never markup.
  await param('cart').filter({ hasText: '<img src=x onerror="window.__pwned=1">' }).waitFor();
  assert.equal(await panel.locator('img').count(), 0);
  assert.equal(await op.page.evaluate(() => window.__pwned), undefined);
  // Looking is not following: the console's client does not track a conversation it does not hold.
  await waitUntil(
    () =>
      op.page.evaluate((id) => {
        const c = window.__chatGatewayTestHooks.client();
        return c.requests === 0 && !c.following.includes(id);
      }, conv),
    { message: 'the peek settled, not followed' }
  );

  // The visitor's page changes a parameter while they wait: the open view shows the new value.
  await v.page.evaluate(() => window.ChatWidget.setParams({ plan: 'platinum' }));
  await param('plan').filter({ hasText: /^platinum$/ }).waitFor();
  await param('cart').waitFor();

  // Another look, and taking it: the parameters stay.
  await setStatus(op.page, 'active');
  await op.page.getByTestId('conv-accept').click();
  await op.page.locator(`[data-testid=conv-view][data-conv="${conv}"][data-readonly=false]`).waitFor();
  await param('plan').filter({ hasText: /^platinum$/ }).waitFor();
  await screenshot(op.page, 'console-peek-params');
  assert.deepEqual([...op.errors, ...v.errors], []);
});
