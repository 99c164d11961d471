// The console's Admin page and e-mail/password sign-in, against the real gateway's directory and
// sessions API: a supervisor creates a group, an operator with a password and a queue, and sees
// them listed; a bad field shows the server's error beside it; the operator then signs in with
// e-mail and password through the sign-in form and reaches the console, where a wrong password
// is refused with a clear line, and so are too many tries; signing out revokes the session.
import test from 'node:test';
import assert from 'node:assert/strict';
import { skipReason, setup, newPage, openConsole, screenshot, waitUntil, startReceiver } from './harness.mjs';

/** The Admin page's section of `collection`, shown. */
async function section(page, collection) {
  await page.getByTestId('admin-nav-' + collection).click();
  const sec = page.locator(`[data-testid=admin-section][data-collection=${collection}]`);
  await sec.waitFor();
  return sec;
}

/** Fills the fields of `form` (data-testid admin-input-<field>): text, or a boolean for a checkbox. */
async function fill(form, values) {
  for (const [name, v] of Object.entries(values)) {
    const input = form.getByTestId('admin-input-' + name);
    if (typeof v === 'boolean') await input.setChecked(v);
    else if ((await input.evaluate((el) => el.tagName)) === 'SELECT') await input.selectOption(v);
    else await input.fill(v);
  }
}

/** Creates an item through the section's form; resolves when its row is listed. */
async function create(sec, key, values) {
  const form = sec.getByTestId('admin-create-form');
  await fill(form, values);
  await form.getByTestId('admin-create').click();
  const row = sec.locator(`[data-testid=admin-row][data-key="${key}"]`);
  await row.waitFor();
  return row;
}

const cell = (row, field) => row.locator(`[data-testid=admin-cell][data-field="${field}"]`);

test('admin: a supervisor creates a group, an operator with a password and a queue; a bad field shows its error', { skip: skipReason(), timeout: 150000 }, async (t) => {
  const { gw, browser } = await setup(t);
  const sup = await openConsole(browser, gw, { sub: 'boss', name: 'Sofia', role: 'supervisor' });
  const page = sup.page;
  await page.getByTestId('tab-admin').click();
  await page.getByTestId('admin-page').waitFor();
  assert.ok(await page.getByTestId('conv-view').isHidden(), 'the chats are out of the way');

  // A group.
  const groups = await section(page, 'groups');
  const support = await create(groups, 'support', { id: 'support', name: 'Support line' });
  assert.equal(await cell(support, 'name').textContent(), 'Support line');

  // An operator: a bad e-mail address is refused by the server, its message beside the field.
  const operators = await section(page, 'operators');
  const form = operators.getByTestId('admin-create-form');
  await fill(form, { id: 'olga', name: 'Olga', email: 'not-an-address', password: 'correct horse' });
  await form.getByTestId('admin-create').click();
  const emailError = form.locator('[data-testid=field-error][data-field=email]');
  await emailError.filter({ hasText: /\S/ }).waitFor();
  assert.equal(await form.getByTestId('admin-input-email').getAttribute('aria-invalid'), 'true');
  assert.equal(await operators.locator('[data-testid=admin-row][data-key=olga]').count(), 0, 'nothing was created');
  await screenshot(page, 'console-admin-field-error');

  // Put right, it is created: with a password, active.
  await fill(form, { email: 'olga@example.com' });
  await form.getByTestId('admin-create').click();
  const olga = operators.locator('[data-testid=admin-row][data-key=olga]');
  await olga.waitFor();
  assert.equal(await cell(olga, 'email').textContent(), 'olga@example.com');
  assert.equal(await cell(olga, 'has_password').textContent(), 'yes');
  assert.equal(await cell(olga, 'active').textContent(), 'yes');
  assert.equal(await cell(olga, 'role').textContent(), 'operator');
  // The form is empty again for the next one, its error gone.
  assert.equal(await operators.getByTestId('admin-create-form').getByTestId('admin-input-id').inputValue(), '');
  assert.equal(await operators.locator('[data-testid=field-error][data-field=email]').first().textContent(), '');

  // Olga joins the group (memberships are the groups' members), edited in place.
  await section(page, 'groups');
  await support.getByTestId('admin-edit').click();
  const edit = groups.getByTestId('admin-edit-form');
  await fill(edit, { members: 'olga' });
  await edit.getByTestId('admin-save').click();
  await cell(groups.locator('[data-testid=admin-row][data-key=support]'), 'members').filter({ hasText: 'olga' })
    .waitFor();
  // The operators' table, listed again, shows her membership.
  await section(page, 'operators');
  await cell(olga, 'groups').filter({ hasText: 'support' }).waitFor();

  // A queue served by the group, with setting overrides.
  const queues = await section(page, 'queues');
  const billing = await create(queues, 'billing', {
    id: 'billing',
    name: 'Billing',
    operator_groups: 'support',
    settings: '{"routing":"auto","max_chats":3}'
  });
  assert.equal(await cell(billing, 'operator_groups').textContent(), 'support');
  assert.deepEqual(JSON.parse(await cell(billing, 'settings').textContent()), { routing: 'auto', max_chats: 3 });

  // What the page shows is what the server holds.
  const listed = await page.evaluate(async (token) => {
    const get = async (c) =>
      (await (await fetch('/v1/sites/demo/' + c, { headers: { Authorization: 'Bearer ' + token } })).json()).items;
    return { groups: await get('groups'), operators: await get('operators'), queues: await get('queues') };
  }, sup.token);
  assert.deepEqual(listed.groups.map((g) => [g.id, g.members]), [['support', ['olga']]]);
  assert.equal(listed.operators.find((o) => o.id === 'olga').has_password, true);
  assert.equal(listed.operators.find((o) => o.id === 'olga').password, undefined, 'the password is never sent back');
  // (The site's own queue, `general`, is listed beside it.)
  assert.deepEqual(listed.queues.find((q) => q.id === 'billing').operator_groups, ['support']);

  // An id taken already: the conflict is said above the form.
  const again = (await section(page, 'groups')).getByTestId('admin-create-form');
  await fill(again, { id: 'support', name: 'Twice' });
  await again.getByTestId('admin-create').click();
  await again.getByTestId('admin-form-error').filter({ hasText: /409/ }).waitFor();
  // A group a queue still uses is not deleted: the server's reason is said above the table.
  await support.getByTestId('admin-delete').click();
  await page.getByTestId('admin-confirm-ok').click();
  await groups.getByTestId('admin-error').filter({ hasText: 'queues billing' }).waitFor();
  assert.equal(await support.count(), 1, 'still listed');

  // Delete, after the confirmation: an outcome made for it.
  const outcomes = await section(page, 'outcomes');
  const spam = await create(outcomes, 'spam2', { id: 'spam2', name: 'Spam' });
  await spam.getByTestId('admin-delete').click();
  await page.getByTestId('admin-confirm-cancel').click();
  assert.equal(await spam.count(), 1, 'cancelled: still there');
  await spam.getByTestId('admin-delete').click();
  await page.getByTestId('admin-confirm-ok').click();
  await spam.waitFor({ state: 'detached' });
  assert.deepEqual(sup.errors, []);
  await screenshot(page, 'console-admin');
});

test('admin: an operator made on the Admin page signs in with e-mail and password; a wrong one is refused', { skip: skipReason(), timeout: 150000 }, async (t) => {
  const { gw, browser } = await setup(t);
  const sup = await openConsole(browser, gw, { sub: 'boss', name: 'Sofia', role: 'supervisor' });
  await sup.page.getByTestId('tab-admin').click();
  const operators = await section(sup.page, 'operators');
  const pavel = { id: 'pavel', name: 'Pavel Novak', email: 'pavel@example.com', password: 'open sesame' };
  await create(operators, 'pavel', pavel);

  const { page, errors } = await newPage(browser);
  await page.goto(`${gw.url}/console?site=demo`);
  await page.getByTestId('signin').waitFor();
  assert.equal(await page.getByTestId('signin-site').inputValue(), 'demo', 'the site from ?site=');
  await page.getByTestId('signin-email').fill('pavel@example.com');

  // A wrong password: a clear line, still signed out, the password field ready again.
  await page.getByTestId('signin-password').fill('open sesame?');
  await page.getByTestId('signin-submit').click();
  await page.getByTestId('signin-error').filter({ hasText: 'Wrong e-mail or password' }).waitFor();
  assert.ok(await page.getByTestId('signin').isVisible());
  assert.equal(await page.evaluate(() => localStorage.getItem('cgw-console-token')), null, 'no token kept');
  assert.equal(await page.evaluate(() => document.activeElement.dataset.testid), 'signin-password');

  // Too many tries for one account: the wait the server asks for.
  await page.getByTestId('signin-email').fill('nobody@example.com');
  for (let i = 0; i < 6; i++) {
    await page.getByTestId('signin-password').fill('guess number ' + i);
    await page.getByTestId('signin-submit').click();
    await page.locator('[data-testid=signin-submit]:not([disabled])').waitFor();
  }
  await page.getByTestId('signin-error').filter({ hasText: /Too many sign-in attempts. Try again in \d+ s/ }).waitFor();

  // The right one: the console, connected as Pavel.
  await page.getByTestId('signin-email').fill('pavel@example.com');
  await page.getByTestId('signin-password').fill('open sesame');
  await page.getByTestId('signin-submit').click();
  await page.locator('[data-testid=conn-state][data-state=open]').waitFor();
  await page.locator('[data-testid=me-name]', { hasText: 'Pavel Novak' }).waitFor();
  assert.match(await page.getByTestId('me-role').textContent(), /^operator · demo$/);
  assert.ok(await page.getByTestId('signin').isHidden());
  assert.equal(await page.getByTestId('signin-password').inputValue(), '', 'the password is not kept in the page');
  assert.ok(await page.getByTestId('tab-admin').isHidden(), 'no Admin page for an operator');
  await page.getByTestId('status-select').selectOption('active');
  await page.locator('[data-testid=status-select][data-server=active]').waitFor({ state: 'attached' });
  // Signed in across reloads, as with a pasted token.
  await page.reload();
  await page.locator('[data-testid=me-name]', { hasText: 'Pavel Novak' }).waitFor();
  const token = await page.evaluate(() => localStorage.getItem('cgw-console-token'));
  const authorized = (tok) =>
    page.evaluate(async (tk) => {
      const res = await fetch('/v1/sites/demo/conversations', { headers: { Authorization: 'Bearer ' + tk } });
      return res.status;
    }, tok);
  assert.equal(await authorized(token), 200, 'the session token opens the API');

  // Signing out revokes the session: its token opens nothing any more.
  await page.getByTestId('signout').click();
  await page.getByTestId('signin').waitFor();
  assert.equal(await authorized(token), 401, 'the revoked token is refused');
  assert.deepEqual(errors, []);
});

test('admin: the Site section renames the site, changes its widget key and where the widget may be embedded', { skip: skipReason(), timeout: 120000 }, async (t) => {
  const { gw, browser } = await setup(t);
  const sup = await openConsole(browser, gw, { sub: 'boss', name: 'Sofia', role: 'supervisor' });
  const page = sup.page;
  await page.getByTestId('tab-admin').click();
  // The site first, as the server has it.
  const sec = page.locator('[data-testid=admin-section][data-collection=site]');
  await sec.waitFor();
  const form = sec.getByTestId('admin-site-form');
  const input = (name) => form.getByTestId('admin-input-' + name);
  await input('widget_key').waitFor();
  assert.equal(await input('name').inputValue(), 'Demo');
  assert.equal(await input('widget_key').inputValue(), 'demo');
  assert.equal(await input('allowed_origins').inputValue(), '');

  // A widget key that is not one: the server's message beside the field, nothing saved.
  await input('widget_key').fill('not a key');
  await form.getByTestId('admin-site-save').click();
  await form.locator('[data-testid=field-error][data-field=widget_key]').filter({ hasText: /\S/ }).waitFor();
  assert.equal(await input('widget_key').getAttribute('aria-invalid'), 'true');

  // Saved: renamed, re-keyed, the widget allowed on this gateway's own pages only.
  await input('name').fill('Demo shop');
  await input('widget_key').fill('demo-shop');
  await input('allowed_origins').fill(gw.url);
  await form.getByTestId('admin-site-save').click();
  await page.getByTestId('toast').filter({ hasText: 'Saved the site.' }).waitFor();
  const res = await fetch(`${gw.url}/v1/sites/demo`, { headers: { Authorization: 'Bearer ' + sup.token } });
  const site = await res.json();
  assert.equal(res.status, 200, JSON.stringify(site));
  assert.equal(site.name, 'Demo shop');
  assert.equal(site.widget_key, 'demo-shop');
  assert.deepEqual(site.allowed_origins, [gw.url]);
  // The old key no longer names the site; the new one does.
  const session = (key) =>
    fetch(`${gw.url}/v1/visitor/session`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Origin: gw.url },
      body: JSON.stringify({ site: key })
    }).then((r) => r.status);
  assert.equal(await session('demo'), 404);
  assert.equal(await session('demo-shop'), 200);
  await screenshot(page, 'console-admin-site');
  assert.deepEqual(sup.errors, []);
});

test('admin: a webhook is made (its secret shown once), sent a test event, and its deliveries listed', { skip: skipReason(), timeout: 120000 }, async (t) => {
  // A receiver of our own on loopback: it answers 204 and keeps what it got.
  const { got, url } = await startReceiver(t);

  // The receiver is on this machine: the gateway calls such hosts only when they are listed.
  const { gw, browser } = await setup(t, { env: { GATEWAY_WEBHOOK_HOSTS: '127.0.0.1' } });
  const sup = await openConsole(browser, gw, { sub: 'boss', name: 'Sofia', role: 'supervisor' });
  const page = sup.page;
  await page.getByTestId('tab-admin').click();
  const hooks = await section(page, 'webhooks');
  const form = hooks.getByTestId('admin-create-form');
  // A bad event type: the server's message beside the field.
  await fill(form, { url, events: 'conversation.exploded' });
  await form.getByTestId('admin-create').click();
  await form.locator('[data-testid=field-error][data-field=events]').filter({ hasText: /\S/ }).waitFor();
  await fill(form, { events: '' });
  await form.getByTestId('admin-create').click();
  const secret = hooks.getByTestId('admin-secret');
  await secret.waitFor();
  const shown = await secret.locator('code').textContent();
  assert.match(shown, /^whsec_/);
  const row = hooks.getByTestId('admin-row').first();
  assert.equal(await cell(row, 'events').textContent(), 'every event');
  assert.ok(!(await row.textContent()).includes(shown), 'the secret is not in the table');

  await row.getByTestId('webhook-test').click();
  await page.getByTestId('toast').filter({ hasText: 'Test event sent' }).waitFor();
  await waitUntil(() => got.some((g) => g.body.type === 'webhook.test'), { message: 'the test event at the receiver' });
  const test = got.find((g) => g.body.type === 'webhook.test');
  assert.match(test.signature, /^v1,/);
  assert.equal(test.id, test.body.id);

  await row.getByTestId('webhook-deliveries').click();
  const delivered = hooks.locator('[data-testid=webhook-delivery][data-status=delivered]');
  await waitUntil(async () => {
    await row.getByTestId('webhook-deliveries').click();
    return (await delivered.count()) === 1;
  }, { message: 'the delivery listed as delivered' });
  assert.equal(await delivered.locator('td').nth(1).textContent(), 'webhook.test');
  await screenshot(page, 'console-admin-webhooks');
  assert.deepEqual(sup.errors, []);
});
