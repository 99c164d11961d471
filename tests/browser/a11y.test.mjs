// Keyboard and screen-reader basics, checked the way assistive technology sees the page (roles
// and accessible names, through Playwright's role queries): the visitor reaches, opens, uses and
// closes the widget with the keyboard alone; the operator takes a conversation from the queue,
// picks a canned response and answers without the mouse.
import test from 'node:test';
import assert from 'node:assert/strict';
import { skipReason, setup, openConsole, setStatus, openVisitor, visitorWrites } from './harness.mjs';

/** Presses Tab until `isTarget()` holds for the focused element (at most `max` times). */
async function tabTo(page, isTarget, what, max = 40) {
  for (let i = 0; i < max; i++) {
    await page.keyboard.press('Tab');
    if (await page.evaluate(isTarget)) return;
  }
  throw new Error(`${what} is not reachable with Tab`);
}

/** The element focused in the page, looking into the widget's shadow root. */
const focusedTestId = () => {
  let el = document.activeElement;
  while (el && el.shadowRoot && el.shadowRoot.activeElement) el = el.shadowRoot.activeElement;
  return el && el.getAttribute('data-testid');
};

test('widget and console work from the keyboard, with sensible roles and names', { skip: skipReason(), timeout: 120000 }, async (t) => {
  const { gw, browser } = await setup(t);
  const op = await openConsole(browser, gw, { sub: 'op1', name: 'Olga' });
  await setStatus(op.page, 'active');
  const v = await openVisitor(browser, gw);
  const { page } = v;

  // The launcher is a real button with a name and a collapsed state.
  const launcher = page.getByRole('button', { name: 'Open chat' });
  assert.equal(await launcher.getAttribute('aria-expanded'), 'false');
  await tabTo(
    page,
    () =>
      document.activeElement.tagName === 'CHAT-GATEWAY-WIDGET' &&
      document.activeElement.shadowRoot.activeElement.dataset.testid === 'cw-launcher',
    'the launcher'
  );
  await page.keyboard.press('Enter');
  const dialog = page.getByRole('dialog', { name: 'Chat with us' });
  await dialog.waitFor();
  assert.equal(await launcher.getAttribute('aria-expanded'), 'true');
  // Focus moves into the chat: typing and Enter send.
  assert.equal(await page.evaluate(focusedTestId), 'cw-input');
  assert.ok(await dialog.getByRole('textbox', { name: 'Message' }).isVisible());
  assert.ok(await dialog.getByRole('log', { name: 'Messages' }).isVisible());
  await page.keyboard.type('Typed with the keyboard only');
  await page.keyboard.press('Enter');
  await page
    .locator('[data-testid=cw-msg][data-role=visitor]:not([data-state=sending])', { hasText: 'keyboard only' })
    .waitFor();
  // Shift+Enter is a new line, not a send.
  await page.keyboard.type('line one');
  await page.keyboard.press('Shift+Enter');
  await page.keyboard.type('line two');
  assert.equal(await page.getByTestId('cw-input').inputValue(), 'line one\nline two');
  await page.getByTestId('cw-input').fill('');
  // Tab reaches the send button, which has a name.
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(focusedTestId), 'cw-send');
  assert.ok(await dialog.getByRole('button', { name: 'Send' }).isVisible());
  // Escape closes, and focus returns to the launcher.
  await page.keyboard.press('Escape');
  await dialog.waitFor({ state: 'hidden' });
  assert.equal(await page.evaluate(focusedTestId), 'cw-launcher');
  assert.equal(await launcher.getAttribute('aria-expanded'), 'false');

  // The console: the queue item is reachable by Tab and opens with Enter.
  const con = op.page;
  await con.locator('[data-testid=queue-item]').first().waitFor();
  await con.locator('body').focus();
  await tabTo(con, () => document.activeElement.dataset.testid === 'queue-item', 'the queue item');
  await con.keyboard.press('Enter');
  await con.locator('[data-testid=conv-view][data-readonly=true]').waitFor();
  await tabTo(
    con,
    () =>
      document.activeElement.dataset.testid === 'queue-accept' ||
      document.activeElement.dataset.testid === 'conv-accept',
    'an Accept button'
  );
  await con.keyboard.press('Enter');
  await con.locator('[data-testid=conv-view][data-readonly=false]').waitFor();
  // Accepting puts the caret in the reply box.
  await con.waitForFunction(() => document.activeElement.dataset.testid === 'composer');
  assert.ok(await con.getByRole('textbox', { name: 'Reply' }).isVisible());
  assert.ok(await con.getByRole('log', { name: 'Messages' }).isVisible());
  assert.ok(await con.getByRole('combobox', { name: 'My status' }).isVisible());

  // Canned responses from the keyboard: // opens a listbox, arrows move, Enter inserts.
  await con.keyboard.type('//');
  const picker = con.getByRole('listbox', { name: 'Canned responses' });
  await picker.waitFor();
  const options = picker.getByRole('option');
  assert.ok((await options.count()) >= 2);
  assert.equal(await options.nth(0).getAttribute('aria-selected'), 'true');
  await con.keyboard.press('ArrowDown');
  assert.equal(await options.nth(1).getAttribute('aria-selected'), 'true');
  const chosen = await options.nth(1).locator('span').innerText();
  await con.keyboard.press('Enter');
  await picker.waitFor({ state: 'hidden' });
  assert.equal(await con.getByTestId('composer').inputValue(), chosen);
  // Escape closes the picker without inserting anything.
  await con.keyboard.type(' //');
  await picker.waitFor();
  await con.keyboard.press('Escape');
  await picker.waitFor({ state: 'hidden' });
  assert.equal(await con.getByTestId('composer').inputValue(), chosen + ' //');
  await con.keyboard.press('Backspace');
  await con.keyboard.press('Backspace');
  await con.keyboard.press('Backspace');
  await con.keyboard.press('Enter');
  await page.getByTestId('cw-launcher').click();
  await page.locator('[data-testid=cw-msg][data-role=operator]', { hasText: chosen }).waitFor();
  assert.deepEqual([...v.errors, ...op.errors], []);
});

test('widget keyboard use survives a reload with the chat open', { skip: skipReason(), timeout: 60000 }, async (t) => {
  // Reopened by itself after a page load, the widget must not steal the page's focus.
  const { gw, browser } = await setup(t);
  const op = await openConsole(browser, gw, { sub: 'op1', name: 'Olga' });
  await setStatus(op.page, 'active');
  const v = await openVisitor(browser, gw);
  await visitorWrites(v, 'Still here after a reload?');
  await v.page.reload();
  await v.page.getByRole('dialog', { name: 'Chat with us' }).waitFor();
  await v.page.locator('[data-testid=cw-msg]', { hasText: 'Still here' }).waitFor();
  assert.equal(
    await v.page.evaluate(() => document.activeElement === document.body),
    true,
    'focus stays with the page'
  );
});
