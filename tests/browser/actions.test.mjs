// The site's actions in the console, against the real gateway and a receiver of our own on
// loopback: a supervisor makes "Create case" on the Admin page (its secret shown once); the
// operator's open console gets the button in the conversation's "More actions" menu; a click
// POSTs the conversation, signed, to the receiver, whose answer (a note and a link) shows in the
// conversation's notes; the action's runs are listed on the Admin page.
import test from 'node:test';
import assert from 'node:assert/strict';
import {
  skipReason, setup, openConsole, setStatus, openVisitor, visitorWrites, acceptFirstQueued, waitUntil, screenshot,
  startReceiver
} from './harness.mjs';

test('actions: "Create case" from the conversation menu puts the case\'s link in the notes', { skip: skipReason(), timeout: 150000 }, async (t) => {
  const { got, url } = await startReceiver(t, {
    answer: { note: 'Case 7 opened', link: 'https://crm.example/cases/7' },
    path: '/case'
  });

  // The receiver is on this machine: the gateway calls such hosts only when they are listed.
  const { gw, browser } = await setup(t, { env: { GATEWAY_WEBHOOK_HOSTS: '127.0.0.1' } });
  // The operator's console is open before the action exists: the button arrives with the settings.
  const op = await openConsole(browser, gw);
  await setStatus(op.page, 'active');

  const sup = await openConsole(browser, gw, { sub: 'boss', name: 'Sofia', role: 'supervisor' });
  await sup.page.getByTestId('tab-admin').click();
  await sup.page.getByTestId('admin-nav-actions').click();
  const sec = sup.page.locator('[data-testid=admin-section][data-collection=actions]');
  await sec.waitFor();
  const form = sec.getByTestId('admin-create-form');
  // A URL that is not a web address: the server's message beside the field.
  await form.getByTestId('admin-input-name').fill('Create case');
  await form.getByTestId('admin-input-url').fill('javascript:alert(1)');
  await form.getByTestId('admin-create').click();
  await form.locator('[data-testid=field-error][data-field=url]').filter({ hasText: /\S/ }).waitFor();
  await form.getByTestId('admin-input-url').fill(url);
  await form.getByTestId('admin-create').click();
  const secret = sec.getByTestId('admin-secret');
  await secret.waitFor();
  assert.match(await secret.locator('code').textContent(), /^whsec_/);

  // A visitor writes; the operator takes the chat and runs the action from the menu.
  const v = await openVisitor(browser, gw);
  await visitorWrites(v, 'My parcel never came');
  const conv = await acceptFirstQueued(op);
  const page = op.page;
  await page.getByTestId('more-button').click();
  const button = page.getByTestId('action-button').filter({ hasText: 'Create case' });
  await button.click();
  await page.getByTestId('toast').filter({ hasText: 'Create case: sent' }).waitFor();

  // The receiver got the conversation with the visitor's words, signed.
  await waitUntil(() => got.length > 0, { message: 'the call at the receiver' });
  const call = got[0];
  assert.equal(call.body.type, 'action');
  assert.equal(call.body.data.conversation.id, conv);
  assert.ok(call.body.data.messages.some((m) => m.text === 'My parcel never came'), JSON.stringify(call.body));
  assert.match(call.signature, /^v1,/);

  // Its answer shows in the conversation's notes, with the link.
  const note = page.getByTestId('conv-note').filter({ hasText: 'Case 7 opened' });
  await note.waitFor();
  assert.equal(await note.locator('a').getAttribute('href'), 'https://crm.example/cases/7');
  assert.equal(await note.locator('a').getAttribute('rel'), 'noopener noreferrer');
  assert.match(await note.textContent(), /Create case/);
  // The visitor sees nothing of it.
  assert.equal(await v.page.getByText('Case 7 opened').count(), 0);
  await screenshot(page, 'console-action-note');

  // The Admin page lists the run.
  const row = sec.getByTestId('admin-row').first();
  const delivered = sec.locator('[data-testid=webhook-delivery][data-status=delivered]');
  await waitUntil(async () => {
    await row.getByTestId('action-deliveries').click();
    return (await delivered.count()) === 1;
  }, { message: 'the run listed as delivered' });
  assert.equal(await delivered.locator('td').nth(1).textContent(), 'action');
  assert.deepEqual(op.errors, []);
  assert.deepEqual(sup.errors, []);
});
