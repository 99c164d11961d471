// Manual ("who first") routing: two consoles accept the same queued conversation at the same
// moment (both really press); exactly one gets it, the other is told it was taken, sees it leave
// its queue and does not list it.
import test from 'node:test';
import assert from 'node:assert/strict';
import {
  skipReason,
  setup,
  openConsole,
  setStatus,
  openVisitor,
  visitorWrites,
  waitUntil,
  screenshot
} from './harness.mjs';

test('two consoles race for one conversation: one wins, the other sees it leave', { skip: skipReason(), timeout: 120000 }, async (t) => {
  const { gw, browser } = await setup(t);
  const a = await openConsole(browser, gw, { sub: 'op1', name: 'Olga' });
  const b = await openConsole(browser, gw, { sub: 'op2', name: 'Petr' });
  await setStatus(a.page, 'active');
  await setStatus(b.page, 'active');

  const v = await openVisitor(browser, gw);
  await visitorWrites(v, 'Who will answer me?');

  const itemA = a.page.locator('[data-testid=queue-item]').first();
  await itemA.waitFor();
  const conv = await itemA.getAttribute('data-conv');
  await b.page.locator(`[data-testid=queue-item][data-conv="${conv}"]`).waitFor();

  // Every toast each console shows from now on (they fade after a few seconds).
  for (const op of [a, b]) {
    await op.page.evaluate(() => {
      window.__toasts = [];
      new MutationObserver((ms) =>
        ms.forEach((m) => m.addedNodes.forEach((n) => window.__toasts.push(n.textContent)))
      ).observe(document.getElementById('toasts'), { childList: true });
    });
  }

  // Both press Accept in the same instant (scripted clicks, dispatched concurrently).
  const press = (page) =>
    page.evaluate((id) => {
      const btn = document.querySelector(`[data-testid=queue-item][data-conv="${id}"] [data-testid=queue-accept]`);
      if (!btn) return false;
      btn.click();
      return true;
    }, conv);
  const pressed = await Promise.all([press(a.page), press(b.page)]);
  assert.deepEqual(pressed, [true, true], 'both consoles pressed Accept on the queued item');

  const owners = async () => {
    const mine = await Promise.all(
      [a, b].map((op) => op.page.locator(`[data-testid=my-item][data-conv="${conv}"]`).count())
    );
    const queued = await Promise.all(
      [a, b].map((op) => op.page.locator(`[data-testid=queue-item][data-conv="${conv}"]`).count())
    );
    return mine[0] + mine[1] === 1 && queued[0] + queued[1] === 0 ? mine : null;
  };
  const mine = await waitUntil(owners, { message: 'exactly one owner and an empty queue on both consoles' });
  const [winner, loser] = mine[0] ? [a, b] : [b, a];

  await winner.page.locator(`[data-testid=conv-view][data-conv="${conv}"][data-readonly=false]`).waitFor();
  await winner.page.locator('[data-testid=conv-msg][data-role=visitor]', { hasText: 'Who will answer me?' }).waitFor();
  assert.equal(await loser.page.locator(`[data-testid=my-item][data-conv="${conv}"]`).count(), 0);
  // The loser's accept was answered `taken`, and the console said so; the winner heard nothing of it.
  const taken = (op) =>
    op.page.evaluate(() => window.__toasts.filter((x) => /the conversation is taken/.test(x)).length);
  await waitUntil(async () => (await taken(loser)) === 1, { message: 'the loser\'s "taken" toast' });
  assert.equal(await taken(winner), 0);
  // The visitor is served by the winner.
  await winner.page.getByTestId('composer').fill(`${winner.name} here, hello!`);
  await winner.page.getByTestId('composer').press('Enter');
  await v.page.locator('[data-testid=cw-msg][data-role=operator]', { hasText: `${winner.name} here` }).waitFor();

  await screenshot(winner.page, 'console-race-winner');
  await screenshot(loser.page, 'console-race-loser');
  assert.deepEqual([...a.errors, ...b.errors], []);
});
