// Supervisors see every queue and every operator (status and load), assign a waiting
// conversation to an operator, and watch conversations read-only and silently, while an
// operator limited to one queue sees only that queue.
import test from 'node:test';
import assert from 'node:assert/strict';
import {
  skipReason, setup, openConsole, setStatus, openVisitor, startHostSite, visitorWrites, operatorSends,
  consoleMessages, screenshot
} from './harness.mjs';

test('supervisor: every queue and operator, assign, watch', { skip: skipReason(), timeout: 150000 }, async (t) => {
  const sites = [{ id: 'demo', queues: ['general', 'billing'] }];
  const { gw, browser } = await setup(t, { sites });
  const host = await startHostSite(t, gw);
  const op = await openConsole(browser, gw, { sub: 'op1', name: 'Olga', queues: ['general'] });
  const sup = await openConsole(browser, gw, { sub: 'boss', name: 'Sofia', role: 'supervisor' });
  await setStatus(op.page, 'active');
  assert.ok(await sup.page.getByTestId('status-select').isHidden(), 'a supervisor has no routing status');

  // Every operator of the site, with status and load.
  const olga = sup.page.locator('[data-testid=operator-item][data-operator=op1]');
  await olga.filter({ hasText: 'active · 0 chats' }).waitFor();

  const billing = await openVisitor(browser, gw, host.url({ queue: 'billing' }));
  await billing.page.evaluate(() => window.ChatWidget.identify({ name: 'Bill Payer' }));
  await visitorWrites(billing, 'My invoice is wrong');
  const general = await openVisitor(browser, gw);
  await general.page.evaluate(() => window.ChatWidget.identify({ name: 'Gena' }));
  await visitorWrites(general, 'Where is my order?');

  // The supervisor sees both queues; the operator only the one they serve.
  const supItem = (name) => sup.page.locator('[data-testid=queue-item]', { hasText: name });
  await supItem('Bill Payer').filter({ hasText: 'billing' }).waitFor();
  await supItem('Gena').filter({ hasText: 'general' }).waitFor();
  await sup.page.locator('[data-testid=queue-count]', { hasText: /^2$/ }).waitFor();
  await op.page.locator('[data-testid=queue-item]', { hasText: 'Gena' }).waitFor();
  assert.equal(
    await op.page.locator('[data-testid=queue-item]', { hasText: 'Bill Payer' }).count(),
    0,
    "billing is not the operator's queue"
  );
  assert.ok(await op.page.getByTestId('operators-list').isHidden(), 'operators do not get the supervisor tools');
  await screenshot(sup.page, 'console-supervisor');

  // Assign: the operator gets the conversation, the supervisor sees their load grow.
  const genaConv = await supItem('Gena').getAttribute('data-conv');
  await supItem('Gena').getByTestId('queue-assign').selectOption('op1');
  await op.page.locator(`[data-testid=my-item][data-conv="${genaConv}"]`).waitFor();
  await olga.filter({ hasText: /active · 1 chat$/ }).waitFor();
  await supItem('Gena').waitFor({ state: 'detached' });

  // Watch a waiting conversation from the queue: read-only, live.
  const billConv = await supItem('Bill Payer').getAttribute('data-conv');
  await supItem('Bill Payer').getByTestId('queue-watch').click();
  await sup.page.locator(`[data-testid=conv-view][data-conv="${billConv}"][data-readonly=true]`).waitFor();
  await sup.page.locator('[data-testid=my-item]', { hasText: 'watching' }).waitFor();
  assert.equal(await sup.page.locator('#my-title').textContent(), 'Watching');
  await sup.page.locator('[data-testid=conv-msg][data-role=visitor]', { hasText: 'invoice is wrong' }).waitFor();
  assert.ok(await sup.page.getByTestId('composer').isHidden(), 'no composer while watching');
  await billing.page.getByTestId('cw-input').fill('It charges me twice');
  await billing.page.getByTestId('cw-input').press('Enter');
  await sup.page.locator('[data-testid=conv-msg][data-role=visitor]', { hasText: 'charges me twice' }).waitFor();

  // Watch an operator's active conversation by its id.
  await sup.page.getByTestId('watch-id').fill(genaConv);
  await sup.page.getByTestId('watch-id').press('Enter');
  await sup.page.locator(`[data-testid=conv-view][data-conv="${genaConv}"][data-readonly=true]`).waitFor();
  await op.page.locator(`[data-testid=my-item][data-conv="${genaConv}"]`).click();
  await operatorSends(op, 'Olga here: it ships today.');
  await sup.page.locator('[data-testid=conv-msg][data-role=operator]', { hasText: 'ships today' }).waitFor();
  await general.page.locator('[data-testid=cw-msg][data-role=operator]', { hasText: 'ships today' }).waitFor();
  // The list tells who wrote last: the operator, not the supervisor.
  await sup.page.locator(`[data-testid=my-item][data-conv="${genaConv}"]`, { hasText: 'Olga: Olga here' }).waitFor();
  const seen = await consoleMessages(sup.page);
  assert.deepEqual(
    seen.map((m) => m.text).filter((x) => /order|ships/.test(x)),
    ['Where is my order?', 'Olga here: it ships today.']
  );
  await screenshot(sup.page, 'console-supervisor-watch');
  // Watching is silent: the visitor's message is not marked read by the supervisor's look.
  assert.equal(await billing.page.locator('[data-testid=cw-msg][data-role=visitor][data-state=read]').count(), 0);

  await sup.page.getByTestId('conv-unwatch').click();
  await sup.page.locator(`[data-testid=my-item][data-conv="${genaConv}"]`).waitFor({ state: 'detached' });
  // A bad id is refused with a message, nothing breaks.
  await sup.page.getByTestId('watch-id').fill('c_does_not_exist');
  await sup.page.getByTestId('watch-id').press('Enter');
  await sup.page.locator('[data-testid=toast]', { hasText: 'Could not watch' }).waitFor();

  assert.deepEqual([...op.errors, ...sup.errors, ...billing.errors, ...general.errors], []);
});
