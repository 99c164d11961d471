// The console under the other routing modes: in `offer` mode a conversation is offered to one
// operator with a countdown, a decline passes it to the next one (never back), who accepts, and
// offers shown after a reconnect or a page load end when they lapse; in `auto` mode it lands in
// an operator's list by itself, with a sound and a notice.
import test from 'node:test';
import assert from 'node:assert/strict';
import {
  skipReason,
  setup,
  openConsole,
  setStatus,
  openVisitor,
  visitorWrites,
  operatorSends,
  waitUntil,
  screenshot
} from './harness.mjs';

/** Counts the console's sounds (oscillators started); installed before its scripts run. */
function countBeeps() {
  window.__beeps = 0;
  const start = OscillatorNode.prototype.start;
  OscillatorNode.prototype.start = function (...a) {
    window.__beeps++;
    return start.apply(this, a);
  };
}

test('offer mode: decline passes the offer on, the next operator accepts', { skip: skipReason(), timeout: 120000 }, async (t) => {
  const { gw, browser } = await setup(t, {
    sites: [{ id: 'demo', settings: { routing: 'offer', accept_timeout: '60s' } }]
  });
  const a = await openConsole(browser, gw, { sub: 'op1', name: 'Olga' });
  const b = await openConsole(browser, gw, { sub: 'op2', name: 'Petr' });
  await setStatus(a.page, 'active');
  await setStatus(b.page, 'active');
  const v = await openVisitor(browser, gw);
  await visitorWrites(v, 'Offer me to someone');

  const offered = async () => {
    const n = await Promise.all([a, b].map((op) => op.page.locator('[data-testid=offer-item]').count()));
    return n[0] + n[1] === 1 ? n : null;
  };
  const n = await waitUntil(offered, { message: 'an offer on exactly one console' });
  const [first, second] = n[0] ? [a, b] : [b, a];
  const offer = first.page.getByTestId('offer-item');
  assert.match(await offer.innerText(), /\d+ s left/, 'the offer counts down');
  await first.page.locator('[data-testid=offer-count]', { hasText: /^1$/ }).waitFor();
  await screenshot(first.page, 'console-offer');
  await offer.getByTestId('offer-decline').click();

  await second.page.getByTestId('offer-item').waitFor();
  await first.page.getByTestId('offer-item').waitFor({ state: 'detached' });
  await second.page.getByTestId('offer-item').getByTestId('offer-accept').click();
  await second.page.locator('[data-testid=my-item]').waitFor();
  await second.page.locator('[data-testid=conv-msg][data-role=visitor]', { hasText: 'Offer me' }).waitFor();
  await operatorSends(second, `${second.name} accepted the offer.`);
  await v.page.locator('[data-testid=cw-msg][data-role=operator]', { hasText: 'accepted the offer' }).waitFor();
  assert.equal(
    await first.page.locator('[data-testid=offer-item], [data-testid=my-item]').count(),
    0,
    'never back to the one who declined'
  );
  assert.deepEqual([...a.errors, ...b.errors, ...v.errors], []);
});

test('offer mode: after a reconnect or a page load the console shows only live offers', { skip: skipReason(), timeout: 120000 }, async (t) => {
  const { gw, browser } = await setup(t, {
    sites: [{ id: 'demo', settings: { routing: 'offer', accept_timeout: '8s' } }]
  });
  const a = await openConsole(browser, gw, { sub: 'op1', name: 'Olga' });
  const b = await openConsole(browser, gw, { sub: 'op2', name: 'Petr' });
  await setStatus(a.page, 'active'); // Petr stays inactive: the offer goes to Olga
  const offerOf = (op, conv) => op.page.locator(`[data-testid=offer-item][data-conv="${conv}"]`);

  // 1. Olga's socket drops and her console reconnects by itself while the offer is pending:
  // welcome lists it again (without an expiry), and it must still end when the offer lapses.
  const v1 = await openVisitor(browser, gw);
  await visitorWrites(v1, 'First: offered to Olga');
  await a.page.getByTestId('offer-item').waitFor();
  const c1 = await a.page.getByTestId('offer-item').getAttribute('data-conv');
  await a.page.evaluate(() => {
    window.__conn = [];
    const el = document.querySelector('[data-testid=conn-state]');
    new MutationObserver(() => window.__conn.push(el.dataset.state)).observe(el, {
      attributes: true,
      attributeFilter: ['data-state']
    });
    // What the browser says when the network goes and comes back: the client drops its socket,
    // then reconnects at once and resumes.
    window.dispatchEvent(new Event('offline'));
    window.dispatchEvent(new Event('online'));
  });
  await waitUntil(() => a.page.evaluate(() => window.__conn.length > 1 && window.__conn.at(-1) === 'open'), {
    message: 'the console reconnected'
  });
  await offerOf(a, c1).waitFor();
  // Petr becomes available: when Olga's offer lapses it passes to him, and Olga's goes away.
  await setStatus(b.page, 'active');
  await offerOf(b, c1).waitFor();
  await offerOf(a, c1).waitFor({ state: 'detached' });

  // 2. A page load while the next offer is pending: the console learns of it only from welcome.
  // Petr leaves (his offer lapses; nobody else may get the first conversation: it waits).
  await setStatus(b.page, 'away');
  await offerOf(b, c1).waitFor({ state: 'detached' });
  const v2 = await openVisitor(browser, gw);
  await visitorWrites(v2, 'Second: offered to Olga too');
  await a.page.locator(`[data-testid=offer-item]:not([data-conv="${c1}"])`).waitFor();
  const c2 = await a.page.locator('[data-testid=offer-item]').getAttribute('data-conv');
  await a.page.reload();
  await a.page.locator('[data-testid=conn-state][data-state=open]').waitFor();
  await offerOf(a, c2).waitFor();
  // The gateway sends the pending offer again after welcome: its countdown is back.
  await offerOf(a, c2).locator('[data-expires]').waitFor();
  // The offer lapses; nobody is left to take it, so it waits in the queue: Olga's console no
  // longer shows it as her offer, only in the queue.
  await offerOf(a, c2).waitFor({ state: 'detached' });
  await a.page.locator(`[data-testid=queue-item][data-conv="${c2}"]`).waitFor();
  assert.equal(await a.page.getByTestId('offer-item').count(), 0);
  assert.deepEqual([...a.errors, ...b.errors, ...v1.errors, ...v2.errors], []);
});

test('auto mode: the conversation lands in the operator\'s list with a sound', { skip: skipReason(), timeout: 120000 }, async (t) => {
  const { gw, browser } = await setup(t, { sites: [{ id: 'demo', settings: { routing: 'auto' } }] });
  const op = await openConsole(browser, gw, { sub: 'op1', name: 'Olga' });
  await op.page.addInitScript(countBeeps);
  await op.page.reload();
  await op.page.locator('[data-testid=conn-state][data-state=open]').waitFor();
  await setStatus(op.page, 'active');
  const v = await openVisitor(browser, gw);
  await v.page.evaluate(() => window.ChatWidget.identify({ name: 'Auto Ann' }));
  await visitorWrites(v, 'Route me automatically');
  await op.page.locator('[data-testid=my-item]', { hasText: 'Auto Ann' }).waitFor();
  await op.page.locator('[data-testid=toast]', { hasText: 'assigned to you' }).waitFor();
  await waitUntil(() => op.page.evaluate(() => window.__beeps > 0), { message: 'a sound' });
  await op.page.locator('[data-testid=my-item]', { hasText: 'Auto Ann' }).click();
  await operatorSends(op, 'Hello Ann, I was assigned to you.');
  await v.page.locator('[data-testid=cw-msg][data-role=operator]', { hasText: 'assigned to you' }).waitFor();
  assert.deepEqual([...op.errors, ...v.errors], []);
});
