// Supervisors see every queue and every operator (status and load), assign a waiting
// conversation to an operator, and watch conversations read-only and silently, while an
// operator limited to one queue sees only that queue.
import test from 'node:test';
import assert from 'node:assert/strict';
import {
  skipReason, setup, openConsole, setStatus, openVisitor, startHostSite, visitorWrites, operatorSends,
  acceptFirstQueued, waitUntil, consoleMessages, screenshot
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
  assert.equal(await sup.page.locator('#my-title').textContent(), 'Mine and watched');
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

/** The operators an assign menu offers: [value] of its choosable options, in order. */
const menuChoices = (locator) =>
  locator.evaluate((sel) => Array.from(sel.options).filter((o) => o.value && !o.disabled).map((o) => o.value));

test('supervisor: Take over instead of Accept; the assign menu filled from the start, without supervisors', { skip: skipReason(), timeout: 120000 }, async (t) => {
  const { gw, browser } = await setup(t);
  const olga = await openConsole(browser, gw, { sub: 'op1', name: 'Olga' });
  const petr = await openConsole(browser, gw, { sub: 'op2', name: 'Petr' });
  await setStatus(olga.page, 'active');
  await setStatus(petr.page, 'active');
  // Another supervisor is present: supervisors are in the operator list, never in assign menus.
  const sam = await openConsole(browser, gw, { sub: 'sam', name: 'Sam', role: 'supervisor' });
  const a = await openVisitor(browser, gw);
  await a.page.evaluate(() => window.ChatWidget.identify({ name: 'Alice' }));
  await visitorWrites(a, 'Need help with A');

  // The supervisor signs in while Alice waits: the queue comes before the operators, and the
  // assign menu is filled all the same.
  const sup = await openConsole(browser, gw, { sub: 'boss', name: 'Sofia', role: 'supervisor' });
  const queued = sup.page.locator('[data-testid=queue-item]', { hasText: 'Alice' });
  await queued.waitFor();
  await waitUntil(async () => (await menuChoices(queued.getByTestId('queue-assign'))).join() === 'op1,op2', {
    message: 'the assign menu filled with the operators, no supervisor'
  });
  assert.equal(await queued.getByTestId('queue-accept').count(), 0, 'no Accept for a supervisor');
  assert.ok(await queued.getByTestId('queue-takeover').isVisible());
  await sup.page.locator('[data-testid=operator-item][data-operator=sam]', { hasText: 'supervisor' }).waitFor();
  await queued.locator('.name').click();
  await sup.page.getByTestId('conv-takeover').waitFor();
  assert.ok(await sup.page.getByTestId('conv-accept').isHidden(), 'no Accept in the view either');
  // An operator who goes offline stays in the menu, not choosable.
  await petr.context.close();
  await waitUntil(async () => (await menuChoices(queued.getByTestId('queue-assign'))).join() === 'op1', {
    message: 'the offline operator not choosable'
  });
  // Take over from the view: the waiting conversation becomes the supervisor's, open to write.
  const conv = await queued.getAttribute('data-conv');
  await sup.page.getByTestId('conv-takeover').click();
  await sup.page.locator(`[data-testid=my-item][data-conv="${conv}"]`).waitFor();
  await sup.page.locator(`[data-testid=conv-view][data-conv="${conv}"][data-readonly=false]`).waitFor();
  await sup.page.getByTestId('conv-takeover').waitFor({ state: 'hidden' });
  await queued.waitFor({ state: 'detached' });
  await sup.page.getByTestId('composer').fill('Sofia, supervisor: how can I help?');
  await sup.page.getByTestId('composer').press('Enter');
  await a.page.locator('[data-testid=cw-msg][data-role=operator]', { hasText: 'Sofia, supervisor' }).waitFor();
  await a.page.getByTestId('cw-operator').filter({ hasText: 'Sofia' }).waitFor();
  assert.deepEqual([...olga.errors, ...sam.errors, ...sup.errors, ...a.errors], []);
});

test('supervisor: live active conversations, take over, reassign, close', { skip: skipReason(), timeout: 240000 }, async (t) => {
  const { gw, browser } = await setup(t, { sites: [{ id: 'demo', settings: { max_chats: 2 } }] });
  const olga = await openConsole(browser, gw, { sub: 'op1', name: 'Olga' });
  const petr = await openConsole(browser, gw, { sub: 'op2', name: 'Petr' });
  await setStatus(olga.page, 'active');
  await setStatus(petr.page, 'active');
  const sup = await openConsole(browser, gw, { sub: 'boss', name: 'Sofia', role: 'supervisor', testHooks: true });
  await sup.page.evaluate(() => {
    window.__toasts = [];
    new MutationObserver((list) => {
      for (const m of list) for (const n of m.addedNodes) window.__toasts.push(n.textContent);
    }).observe(document.getElementById('toasts'), { childList: true });
  });
  const a = await openVisitor(browser, gw);
  await a.page.evaluate(() => window.ChatWidget.identify({ name: 'Alice' }));
  await visitorWrites(a, 'Need help with A');
  await sup.page.getByTestId('active-empty').filter({ hasText: 'No active conversations.' }).waitFor();

  // Olga takes Alice: the conversation is listed as active, its visitor waiting for an answer.
  const convA = await acceptFirstQueued(olga);
  const rowA = sup.page.locator(`[data-testid=active-item][data-conv="${convA}"]`);
  await rowA.getByTestId('active-operator').filter({ hasText: /^Olga$/ }).waitFor();
  const waitingA = rowA.getByTestId('active-waiting');
  const firstWait = await waitingA.textContent();
  assert.match(firstWait, /^waiting \d+ s$/);
  await rowA.getByTestId('active-visitor-ts').filter({ hasText: /^visitor wrote \d+ s ago$/ }).waitFor();
  assert.equal(await rowA.getByTestId('active-first-response').textContent(), 'first reply —');
  // The wait ticks on.
  await waitUntil(async () => (await waitingA.textContent()) !== firstWait, { message: 'the waiting time ticking' });
  await sup.page.locator('[data-testid=active-count]', { hasText: /^1$/ }).waitFor();
  await screenshot(sup.page, 'console-supervisor-active');

  // Olga answers: nobody waits any more, and the first response time is known.
  await operatorSends(olga, 'Hello Alice');
  await waitingA.filter({ hasText: /^answered$/ }).waitFor();
  await rowA.getByTestId('active-first-response').filter({ hasText: /^first reply in \d+/ }).waitFor();

  // Bob comes and waits on Petr: he is listed first (waiting), Alice (answered) after.
  const b = await openVisitor(browser, gw);
  await b.page.evaluate(() => window.ChatWidget.identify({ name: 'Bob' }));
  await visitorWrites(b, 'Bob needs help');
  const convB = await acceptFirstQueued(petr);
  const rowB = sup.page.locator(`[data-testid=active-item][data-conv="${convB}"]`);
  await rowB.getByTestId('active-operator').filter({ hasText: /^Petr$/ }).waitFor();
  await rowB.getByTestId('active-last').filter({ hasText: 'Bob needs help' }).waitFor();
  const order = () =>
    sup.page.locator('[data-testid=active-item]').evaluateAll((els) => els.map((e) => e.dataset.conv).join());
  await waitUntil(async () => (await order()) === [convB, convA].join(), { message: 'the waiting visitor first' });

  // Reassign Alice to Petr: the menu offers the operators but the one who holds it.
  assert.deepEqual(await menuChoices(rowA.getByTestId('active-assign')), ['op2']);
  await rowA.getByTestId('active-assign').selectOption('op2');
  await petr.page.locator(`[data-testid=my-item][data-conv="${convA}"]`).waitFor();
  await olga.page.locator(`[data-testid=my-item][data-conv="${convA}"]`).waitFor({ state: 'detached' });
  await rowA.getByTestId('active-operator').filter({ hasText: /^Petr$/ }).waitFor();

  // Take over Bob: one of the supervisor's own chats, with the composer, and Petr loses it.
  await rowB.getByTestId('active-takeover').click();
  const mineB = sup.page.locator(`[data-testid=my-item][data-conv="${convB}"]`);
  await mineB.waitFor();
  await sup.page.locator(`[data-testid=conv-view][data-conv="${convB}"][data-readonly=false]`).waitFor();
  assert.ok(await sup.page.getByTestId('composer').isVisible(), 'the supervisor can write');
  await petr.page.locator(`[data-testid=my-item][data-conv="${convB}"]`).waitFor({ state: 'detached' });
  await sup.page.getByTestId('composer').fill('Sofia here, I will sort it out.');
  await sup.page.getByTestId('composer').press('Enter');
  const sent = '[data-testid=conv-msg][data-role=supervisor]:not([data-state=sending]):not([data-state=failed])';
  await sup.page.locator(sent, { hasText: 'Sofia here' }).waitFor();
  await b.page.locator('[data-testid=cw-msg][data-role=operator]', { hasText: 'Sofia here' }).waitFor();
  // The visitor reads it: the supervisor's message has its receipt.
  await sup.page.locator('[data-testid=conv-msg][data-state=read]', { hasText: 'Sofia here' }).waitFor();
  await rowB.getByTestId('active-operator').filter({ hasText: /^me$/ }).waitFor();
  assert.equal(await rowB.getByTestId('active-takeover').count(), 0, 'nothing to take over from myself');
  // The supervisor answered: Bob no longer waits.
  await rowB.getByTestId('active-waiting').filter({ hasText: /^answered$/ }).waitFor();
  // No complaint on the way (a supervisor's draft, say, is not the gateway's to keep).
  const expected = /^Assigned\.$/;
  assert.deepEqual((await sup.page.evaluate(() => window.__toasts)).filter((x) => !expected.test(x)), []);
  await screenshot(sup.page, 'console-supervisor-takeover');

  // After a reload it is still the supervisor's, open to write.
  await sup.page.reload();
  await sup.page.locator('[data-testid=conn-state][data-state=open]').waitFor();
  await mineB.click();
  await sup.page.locator(`[data-testid=conv-view][data-conv="${convB}"][data-readonly=false]`).waitFor();
  await sup.page.locator('[data-testid=conv-msg]', { hasText: 'Sofia here' }).waitFor();
  assert.ok(await sup.page.getByTestId('composer').isVisible());

  // Bad input: a close asked for and cancelled closes nothing; past max_chats, no take-over.
  await rowA.getByTestId('active-close').click();
  await sup.page.locator('[data-testid=close-dialog][open]').waitFor();
  await sup.page.locator('[data-testid=close-dialog] button[value=cancel]').click();
  await sup.page.locator('[data-testid=close-dialog][open]').waitFor({ state: 'detached' });
  const c = await openVisitor(browser, gw);
  await c.page.evaluate(() => window.ChatWidget.identify({ name: 'Carol' }));
  await visitorWrites(c, 'Carol here');
  await sup.page.locator('[data-testid=queue-item]', { hasText: 'Carol' }).getByTestId('queue-takeover').click();
  await sup.page.locator('[data-testid=my-item]', { hasText: 'Carol' }).waitFor();
  const d = await openVisitor(browser, gw);
  await d.page.evaluate(() => window.ChatWidget.identify({ name: 'Dan' }));
  await visitorWrites(d, 'Dan here');
  await sup.page.locator('[data-testid=queue-item]', { hasText: 'Dan' }).getByTestId('queue-takeover').click();
  await sup.page.getByTestId('toast').filter({ hasText: 'Could not take over' }).waitFor();
  assert.equal(await sup.page.locator('[data-testid=my-item]', { hasText: 'Dan' }).count(), 0);
  const stillOpen = petr.page.locator(`[data-testid=my-item][data-conv="${convA}"][data-state=active]`);
  assert.equal(await stillOpen.count(), 1, 'the cancelled close closed nothing');

  // Close Alice's conversation from the list: it leaves the list, and Petr sees it closed.
  await rowA.getByTestId('active-close').click();
  await sup.page.locator('[data-testid=close-dialog][open]').waitFor();
  await sup.page.getByTestId('close-confirm').click();
  await petr.page.locator(`[data-testid=my-item][data-conv="${convA}"][data-state=closed]`).waitFor();
  await rowA.waitFor({ state: 'detached' });
  // Closing it did not have the supervisor's client follow it.
  await waitUntil(
    () =>
      sup.page.evaluate((id) => {
        const st = window.__chatGatewayTestHooks.client();
        return st.requests === 0 && !st.following.includes(id);
      }, convA),
    { message: 'the supervisor not following the closed conversation' }
  );
  assert.deepEqual([...olga.errors, ...petr.errors, ...sup.errors, ...a.errors, ...b.errors], []);
});
