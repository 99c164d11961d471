// The Admin page (supervisors): the site's directory over the HTTP API v1 (`/v1/sites/{site}/
// {collection}`, `docs/api.md`) — queues, groups, operators, tags, outcomes, custom parameters,
// canned responses and bans. One section per collection, picked from the page's own tabs: a
// table of its items (listed again each time the section is shown, so what another supervisor
// or the server changed shows), a form to add one, an edit form in place of an item's row, and
// delete after a confirmation. The API checks everything; its problem details' field errors
// (`errors: [{field, message}]`) are shown beside the fields they name, the rest above the form.
// Lists of ids are comma-separated text; a queue's setting overrides are a JSON object. Every
// value goes into the page as text. English, like the rest of the console. The first section,
// Site, is the site itself (`/v1/sites/{site}`): its name, widget key and allowed origins.

import { $, h, toast, errText, isSup, apiFetch, sitePath } from './core.js';

// ------------------------------------------------------------------ what each collection holds
//
// A field: `name` (its key in the entity; `path` for one inside an object, as a tag's
// `auto.keywords`), `label`, `kind` (text, email, textarea, password, number, list, json, bool,
// select, time), and what may be done with it: `key` (the item's id: given on create, never
// changed), `create: false` / `edit: false` (not in that form: the server sets it or it is
// read-only), `table: false` (never shown: the write-only password), `required` on create,
// `dflt` (the create form's starting value), `hint` (a placeholder), `options` (a select's),
// `nullable` (empty is sent as null), `empty` (what the table shows for none), `editLabel`.
// A collection: `id` (its path), `title`, `one` (an item in words; `a` when it takes "an"),
// `key` (the field that names an item in its path), `fields`.

const field = (name, label, kind = 'text', more = {}) => ({ name, label, kind, path: name.split('.'), ...more });
const ACTIVE = field('active', 'Active', 'bool', { dflt: true });

const COLLECTIONS = [
  {
    id: 'queues',
    title: 'Queues',
    one: 'queue',
    key: 'id',
    fields: [
      field('id', 'Id', 'text', { key: true, required: true, hint: 'billing' }),
      field('name', 'Name', 'text', { hint: 'Billing' }),
      field('operator_groups', 'Operator groups', 'list', { hint: 'group ids, comma separated' }),
      field('supervisor_groups', 'Supervisor groups', 'list', { hint: 'group ids, comma separated' }),
      field('settings', 'Settings (JSON)', 'json', { hint: '{"routing":"auto","accept_timeout":"20s","max_chats":3}' }),
      field('transcript_emails', 'Transcript e-mails', 'list', { hint: 'addresses, comma separated' })
    ]
  },
  {
    id: 'groups',
    title: 'Groups',
    one: 'group',
    key: 'id',
    fields: [
      field('id', 'Id', 'text', { key: true, required: true, hint: 'support' }),
      field('name', 'Name', 'text', { hint: 'Support' }),
      field('members', 'Members', 'list', { hint: 'operator ids, comma separated' })
    ]
  },
  {
    id: 'operators',
    title: 'Operators',
    one: 'operator',
    a: 'an operator',
    key: 'id',
    fields: [
      field('id', 'Id', 'text', { key: true, required: true, hint: 'olga' }),
      field('name', 'Name', 'text', { hint: 'Olga' }),
      field('email', 'E-mail', 'email', { hint: 'olga@example.com', nullable: true }),
      field('role', 'Role', 'select', { options: ['operator', 'supervisor'], dflt: 'operator' }),
      field('max_chats', 'Max chats', 'number', { hint: "the site's" }),
      // Memberships are set through the groups' members; shown here.
      field('groups', 'Groups', 'list', { create: false, edit: false }),
      field('can_ban', 'May ban', 'bool'),
      field('transcript_copy', 'Transcript copies', 'bool'),
      ACTIVE,
      field('password', 'Password', 'password', {
        table: false,
        editLabel: 'Set password',
        hint: 'at least 8 characters'
      }),
      field('has_password', 'Has password', 'bool', { create: false, edit: false })
    ]
  },
  {
    id: 'tags',
    title: 'Tags',
    one: 'tag',
    key: 'name',
    fields: [
      field('name', 'Name', 'text', { key: true, required: true, hint: 'refund' }),
      field('color', 'Colour', 'text', { hint: '#e8f0fe' }),
      field('text_color', 'Text colour', 'text', { hint: '#1d2430' }),
      ACTIVE,
      field('auto.keywords', 'Auto: keywords', 'list', { hint: 'words, comma separated' }),
      field('auto.queues', 'Auto: queues', 'list', { hint: 'queue ids (none: every queue)' }),
      field('created_at', 'Created', 'time', { create: false, edit: false }),
      field('created_by', 'Created by', 'text', { create: false, edit: false })
    ]
  },
  {
    id: 'outcomes',
    title: 'Outcomes',
    one: 'outcome',
    a: 'an outcome',
    key: 'id',
    fields: [
      field('id', 'Id', 'text', { key: true, required: true, hint: 'solved' }),
      field('name', 'Name', 'text', { hint: 'Solved' }),
      ACTIVE
    ]
  },
  {
    id: 'params',
    title: 'Parameters',
    one: 'parameter',
    key: 'code',
    fields: [
      field('code', 'Code', 'text', { key: true, required: true, hint: 'order_id' }),
      field('label', 'Label', 'text', { hint: 'Order' }),
      field('editable', 'Editable by operators', 'bool'),
      field('show', 'Shown', 'select', { options: ['preview', 'active', 'both', 'none'], dflt: 'both' })
    ]
  },
  {
    id: 'canned',
    title: 'Canned responses',
    one: 'canned response',
    key: 'id',
    fields: [
      field('id', 'Id', 'text', { key: true, hint: 'made up when empty' }),
      field('shortcut', 'Shortcut', 'text', { hint: 'hello' }),
      field('text', 'Text', 'textarea', { hint: 'Hello {{visitor.name}}, I am {{operator.name}}.' }),
      field('queues', 'Queues', 'list', { hint: 'queue ids (none: every queue)' })
    ]
  },
  {
    id: 'bans',
    title: 'Bans',
    one: 'ban',
    key: 'id',
    fields: [
      field('id', 'Id', 'text', { key: true, create: false }),
      field('visitor', 'Visitor', 'text', { nullable: true }),
      field('device', 'Device', 'text', { nullable: true }),
      field('ip', 'IP address', 'text', { nullable: true }),
      field('until', 'Until', 'time', { empty: 'for ever' }),
      field('reason', 'Reason', 'text', { nullable: true }),
      field('by', 'By', 'text', { create: false, edit: false })
    ]
  },
  {
    id: 'webhooks',
    title: 'Webhooks',
    one: 'webhook',
    key: 'id',
    fields: [
      field('id', 'Id', 'text', { key: true, create: false }),
      field('url', 'URL', 'text', { required: true, hint: 'https://crm.example/hooks/chat' }),
      field('events', 'Events', 'list', {
        hint: 'conversation.closed, message.created, … (empty: every event)',
        empty: 'every event'
      }),
      ACTIVE,
      // Set when the gateway turned it off after its calls failed for a day.
      field('disabled_reason', 'Turned off because', 'text', { create: false, edit: false })
    ],
    created: (made) => shownSecret(made),
    acts: [
      { label: 'Deliveries', testid: 'webhook-deliveries', run: (key) => showDeliveries('webhooks', key) },
      { label: 'Send test', testid: 'webhook-test', run: (key) => sendTest(key) }
    ]
  },
  {
    id: 'actions',
    title: 'Actions',
    one: 'action',
    key: 'id',
    fields: [
      field('id', 'Id', 'text', { key: true, create: false }),
      field('name', 'Button', 'text', { required: true, hint: 'Create case' }),
      field('url', 'URL', 'text', { required: true, hint: 'https://crm.example/chat/case' }),
      field('queues', 'Queues', 'list', { hint: 'queue ids (none: every queue)' }),
      ACTIVE
    ],
    created: (made) => shownSecret(made),
    acts: [{ label: 'Runs', testid: 'action-deliveries', run: (key) => showDeliveries('actions', key) }]
  }
];

/** A webhook's or an action's signing secret: it comes with the answer to its creation, once. */
function shownSecret(made) {
  return made && typeof made.secret === 'string'
    ? h('p', { class: 'admin-secret', 'data-testid': 'admin-secret' }, [
      'Signing secret of ' + made.id + ' (shown this once; keep it in the receiver): ',
      h('code', { text: made.secret })
    ])
    : null;
}

// The site itself: one item, read and changed in place (its id and settings stay elsewhere).
const SITE = {
  id: 'site',
  title: 'Site',
  fields: [
    field('name', 'Name', 'text', { required: true }),
    field('widget_key', 'Widget key', 'text', { required: true, hint: 'what the script tag names: data-site' }),
    field('allowed_origins', 'Allowed origins', 'list', { hint: 'https://shop.example, … (empty: any page)' })
  ]
};

const byId = new Map(COLLECTIONS.map((c) => [c.id, c]));
// What each section shows: its items as last listed, which section is on screen.
const view = { built: false, current: 'site', items: new Map(), seq: new Map() };

// ------------------------------------------------------------------ values in and out

const get = (obj, path) => path.reduce((o, k) => (o && typeof o === 'object' ? o[k] : undefined), obj);
const keyOf = (col, item) => String(item[col.key]);
const pathOf = (col, key) => sitePath('/' + col.id + (key == null ? '' : '/' + encodeURIComponent(key)));

/** Milliseconds as a `datetime-local` value (local time), and back. */
function timeValue(ms) {
  if (typeof ms !== 'number') return '';
  const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60000);
  return d.toISOString().slice(0, 16);
}

/** A value as the table shows it. */
function shown(f, v) {
  if (v == null || v === '') return f.empty || '—';
  switch (f.kind) {
    case 'bool':
      return v ? 'yes' : 'no';
    case 'list':
      return Array.isArray(v) ? v.join(', ') || f.empty || '—' : String(v);
    case 'json':
      return typeof v === 'object' ? JSON.stringify(v) : String(v);
    case 'time':
      return typeof v === 'number' ? new Date(v).toLocaleString([], { dateStyle: 'short', timeStyle: 'short' }) : v;
    default:
      return String(v);
  }
}

/** A value as a form's input holds it. */
function inputValue(f, v) {
  if (v == null) return '';
  switch (f.kind) {
    case 'list':
      return Array.isArray(v) ? v.join(', ') : String(v);
    case 'json':
      return typeof v === 'object' ? JSON.stringify(v) : String(v);
    case 'time':
      return timeValue(v);
    default:
      return String(v);
  }
}

/** Thrown for a value the form cannot send; shown beside its field like the server's errors. */
class FieldError extends Error {
  constructor(field, message) {
    super(message);
    this.field = field;
  }
}

/** What an input holds, as the API takes it; `undefined` for an empty field left out. */
function readInput(f, el) {
  if (f.kind === 'bool') return el.checked;
  const raw = el.value.trim();
  switch (f.kind) {
    case 'list':
      return raw
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean);
    case 'number': {
      if (!raw) return null;
      const n = Number(raw);
      if (!Number.isFinite(n)) throw new FieldError(f.name, 'A number, or empty');
      return n;
    }
    case 'json': {
      if (!raw) return {};
      let v;
      try {
        v = JSON.parse(raw);
      } catch {
        throw new FieldError(f.name, 'Not JSON: write an object like ' + f.hint);
      }
      if (!v || typeof v !== 'object' || Array.isArray(v)) {
        throw new FieldError(f.name, 'A JSON object, like ' + f.hint);
      }
      return v;
    }
    case 'time': {
      if (!raw) return null;
      const ms = new Date(raw).getTime();
      if (!Number.isFinite(ms)) throw new FieldError(f.name, 'A date and time, or empty');
      return ms;
    }
    case 'password':
      return el.value ? el.value : undefined;
    default:
      return raw || (f.nullable ? null : '');
  }
}

/** Sets `v` at `path` in `obj`, making the objects on the way. */
function put(obj, path, v) {
  let o = obj;
  for (const k of path.slice(0, -1)) o = o[k] && typeof o[k] === 'object' ? o[k] : (o[k] = {});
  o[path[path.length - 1]] = v;
}

// ------------------------------------------------------------------ forms

let uid = 0;

/** One field of a form: its label, input and the line for its error. */
function fieldBox(f, value, editing) {
  const id = 'adm-' + ++uid;
  const errId = id + '-err';
  const common = {
    id,
    name: f.name,
    'data-testid': 'admin-input-' + f.name,
    'aria-describedby': errId,
    placeholder: editing && f.kind === 'password' ? 'empty: keep the password' : f.hint
  };
  let input;
  if (f.kind === 'bool') {
    input = h('input', { ...common, type: 'checkbox', placeholder: null, checked: !!value });
  } else if (f.kind === 'select') {
    input = h(
      'select',
      { ...common, placeholder: null },
      f.options.map((o) => h('option', { value: o, text: o, selected: o === value }))
    );
  } else if (f.kind === 'textarea' || f.kind === 'json') {
    input = h('textarea', { ...common, rows: 2, spellcheck: f.kind === 'textarea' ? null : 'false' });
    input.value = inputValue(f, value);
  } else {
    const type = { email: 'email', password: 'password', number: 'number', time: 'datetime-local' }[f.kind] || 'text';
    input = h('input', {
      ...common,
      type,
      autocomplete: f.kind === 'password' ? 'new-password' : 'off',
      minlength: f.kind === 'password' ? 8 : null,
      required: !editing && f.required
    });
    input.value = inputValue(f, value);
  }
  const label = editing && f.editLabel ? f.editLabel : f.label;
  const err = h('small', { class: 'field-err', id: errId, 'data-testid': 'field-error', 'data-field': f.name });
  return h('div', { class: 'fld' + (f.kind === 'bool' ? ' check' : '') + (f.kind === 'json' ? ' wide' : '') }, [
    f.kind === 'bool' ? h('label', { for: id }, [input, ' ' + label]) : h('label', { for: id, text: label }),
    f.kind === 'bool' ? null : input,
    err
  ]);
}

/** The fields of a create or an edit form. */
const formFields = (col, editing) =>
  col.fields.filter((f) => (editing ? f.edit !== false && !f.key : f.create !== false));

/** A form's inputs by field name. */
const inputs = (form) => new Map(Array.from(form.querySelectorAll('[name]'), (el) => [el.name, el]));

function clearErrors(form) {
  for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
  for (const el of form.querySelectorAll('.field-err')) el.textContent = '';
  const line = form.querySelector('.form-err');
  line.textContent = '';
  line.hidden = true;
}

/** The field of a form that a problem's `field` names (`members[1]`, `/auto/keywords`, `auto`…). */
function fieldFor(col, form, name) {
  const parts = String(name || '')
    .replace(/\[(\d+)\]/g, '.$1')
    .split(/[./]/)
    .filter(Boolean);
  const have = inputs(form);
  for (let n = parts.length; n > 0; n--) {
    const dotted = parts.slice(0, n).join('.');
    if (have.has(dotted)) return have.get(dotted);
    // A whole object named (`auto`): its first field in the form.
    const inside = col.fields.find((f) => f.name.startsWith(dotted + '.') && have.has(f.name));
    if (inside) return have.get(inside.name);
  }
  return null;
}

/** A refused save: field errors beside their fields (the first one focused), the rest above the form. */
function showErrors(col, form, err) {
  clearErrors(form);
  const list =
    err instanceof FieldError
      ? [{ field: err.field, message: err.message }]
      : ((err.problem && err.problem.errors) || []).filter((x) => x && typeof x === 'object');
  const general = [];
  let first = null;
  for (const x of list) {
    const message = String(x.message || 'invalid');
    // A body the server could not read names the field it misses in the message.
    const missing = x.field === 'body' && message.match(/missing field `([^`]+)`/);
    const el = fieldFor(col, form, missing ? missing[1] : x.field);
    if (!el) {
      general.push((x.field ? x.field + ': ' : '') + message);
      continue;
    }
    el.setAttribute('aria-invalid', 'true');
    const line = $(el.getAttribute('aria-describedby'));
    line.textContent = line.textContent ? line.textContent + ' ' + message : message;
    first = first || el;
  }
  const line = form.querySelector('.form-err');
  const head = err instanceof FieldError ? '' : list.length ? 'Not saved: check the fields marked.' : errText(err);
  line.textContent = [head, ...general].filter(Boolean).join(' ');
  line.hidden = !line.textContent;
  (first || line).focus();
}

// ------------------------------------------------------------------ the page

/** Shows the Admin page's current section (building the page the first time). */
export function showAdmin() {
  if (!isSup()) return;
  if (!view.built) build();
  showSection(view.current);
}

function build() {
  view.built = true;
  $('admin-nav').replaceChildren(
    ...[SITE, ...COLLECTIONS].map((col) =>
      h('button', {
        class: 'tab',
        type: 'button',
        'data-testid': 'admin-nav-' + col.id,
        'data-collection': col.id,
        'aria-controls': 'admin-' + col.id,
        text: col.title,
        onclick: () => showSection(col.id)
      })
    )
  );
  $('admin-body').replaceChildren(siteSection(), ...COLLECTIONS.map(section));
}

// ------------------------------------------------------------------ the site itself

function siteSection() {
  return h(
    'section',
    {
      class: 'admin-section', id: 'admin-site', 'data-testid': 'admin-section', 'data-collection': 'site',
      'aria-labelledby': 'admin-site-title', hidden: true
    },
    [
      h('div', { class: 'admin-head' }, [h('h2', { id: 'admin-site-title', text: 'Site' })]),
      h('p', { class: 'err', 'data-testid': 'admin-error', role: 'alert', hidden: true }),
      h('form', { class: 'admin-form', 'data-testid': 'admin-site-form', novalidate: true, onsubmit: saveSite }, [
        formError(),
        h('div', { class: 'fields' }),
        h('div', { class: 'row' }, [
          h('button', { class: 'btn primary', type: 'submit', 'data-testid': 'admin-site-save', text: 'Save' })
        ])
      ])
    ]
  );
}

/** Reads the site and fills its form. */
async function loadSite() {
  const sec = $('admin-site');
  sectionError(SITE, null);
  try {
    const site = await apiFetch('GET', sitePath(''));
    const fields = sec.querySelector('.fields');
    fields.replaceChildren(...SITE.fields.map((f) => fieldBox(f, get(site, f.path), true)));
    sec.dataset.site = site.id;
  } catch (err) {
    sectionError(SITE, err);
  }
}

async function saveSite(e) {
  e.preventDefault();
  const form = e.currentTarget;
  const button = form.querySelector('[data-testid=admin-site-save]');
  if (button.disabled) return;
  clearErrors(form);
  const have = inputs(form);
  const body = {};
  try {
    for (const f of SITE.fields) {
      const v = readInput(f, have.get(f.name));
      if ((v === undefined || v === '') && f.required) throw new FieldError(f.name, 'Required');
      // No origins listed: any page ("*").
      body[f.name] = f.name === 'allowed_origins' && (!v || !v.length) ? '*' : v;
    }
  } catch (err) {
    if (err instanceof FieldError) return showErrors(SITE, form, err);
    throw err;
  }
  button.disabled = true;
  try {
    await apiFetch('PATCH', sitePath(''), { body });
    toast('Saved the site.');
    await loadSite();
  } catch (err) {
    showErrors(SITE, form, err);
  } finally {
    button.disabled = false;
  }
}

/** A form's line for what is not about one field. */
const formError = () =>
  h('p', { class: 'form-err err', 'data-testid': 'admin-form-error', role: 'alert', tabindex: '-1', hidden: true });

/** The form that adds an item, empty (its defaults filled in). */
function createForm(col) {
  return h(
    'form',
    { class: 'admin-form', 'data-testid': 'admin-create-form', novalidate: true, onsubmit: (e) => create(e, col) },
    [
      h('h3', { text: 'Add ' + (col.a || 'a ' + col.one) }),
      formError(),
      h('div', { class: 'fields' }, formFields(col, false).map((f) => fieldBox(f, f.dflt, false))),
      h('div', { class: 'row' }, [
        h('button', { class: 'btn primary', type: 'submit', 'data-testid': 'admin-create', text: 'Add' })
      ])
    ]
  );
}

function section(col) {
  const cols = col.fields.filter((f) => f.table !== false);
  return h(
    'section',
    {
      class: 'admin-section',
      id: 'admin-' + col.id,
      'data-testid': 'admin-section',
      'data-collection': col.id,
      'aria-labelledby': 'admin-' + col.id + '-title',
      hidden: true
    },
    [
      h('div', { class: 'admin-head' }, [
        h('h2', { id: 'admin-' + col.id + '-title', text: col.title }),
        h('button', {
          class: 'btn small',
          type: 'button',
          'data-testid': 'admin-reload',
          text: 'Reload',
          onclick: () => load(col)
        })
      ]),
      h('p', { class: 'err', 'data-testid': 'admin-error', role: 'alert', hidden: true }),
      h('table', { class: 'grid admin-table', 'data-testid': 'admin-table' }, [
        h('thead', {}, [
          h('tr', {}, [
            ...cols.map((f) => h('th', { scope: 'col', text: f.label })),
            h('th', { scope: 'col' }, [h('span', { class: 'sr', text: 'Actions' })])
          ])
        ]),
        h('tbody', { 'data-testid': 'admin-rows' })
      ]),
      h('p', { class: 'empty', 'data-testid': 'admin-empty', text: 'Loading…' }),
      createForm(col)
    ]
  );
}

const sectionOf = (col) => $('admin-' + col.id);

function showSection(id) {
  const col = id === 'site' ? SITE : byId.get(id) || SITE;
  view.current = col.id;
  for (const c of [SITE, ...COLLECTIONS]) sectionOf(c).hidden = c !== col;
  for (const b of $('admin-nav').children) {
    if (b.dataset.collection === col.id) b.setAttribute('aria-current', 'page');
    else b.removeAttribute('aria-current');
  }
  if (col === SITE) loadSite();
  else load(col);
}

function sectionError(col, e) {
  const el = sectionOf(col).querySelector('[data-testid=admin-error]');
  el.hidden = !e;
  el.textContent = e ? (typeof e === 'string' ? e : errText(e)) : '';
}

/** Lists a collection again, every page of it, and redraws its table. */
async function load(col) {
  const seq = (view.seq.get(col.id) || 0) + 1;
  view.seq.set(col.id, seq);
  const sec = sectionOf(col);
  sec.setAttribute('aria-busy', 'true');
  const items = [];
  try {
    let cursor = null;
    for (let page = 0; page < 20; page++) {
      const q = '?limit=500' + (cursor ? '&cursor=' + encodeURIComponent(cursor) : '');
      const res = await apiFetch('GET', pathOf(col) + q);
      items.push(...((res && res.items) || []).filter((x) => x && typeof x === 'object'));
      cursor = res && res.next_cursor;
      if (!cursor) break;
    }
  } catch (e) {
    if (seq !== view.seq.get(col.id)) return;
    sec.removeAttribute('aria-busy');
    sectionError(col, 'Could not list the ' + col.title.toLowerCase() + ': ' + errText(e));
    sec.querySelector('[data-testid=admin-empty]').textContent = '';
    return;
  }
  if (seq !== view.seq.get(col.id)) return;
  sec.removeAttribute('aria-busy');
  sectionError(col, null);
  view.items.set(col.id, items);
  renderRows(col);
}

function renderRows(col) {
  const sec = sectionOf(col);
  const tbody = sec.querySelector('[data-testid=admin-rows]');
  // A row being edited stays as it is: the supervisor's typing is not thrown away by a reload.
  const editing = new Map(
    Array.from(tbody.querySelectorAll('tr[data-editing]'), (tr) => [tr.dataset.key, tr])
  );
  const items = view.items.get(col.id) || [];
  tbody.replaceChildren(...items.map((item) => editing.get(keyOf(col, item)) || row(col, item)));
  const empty = sec.querySelector('[data-testid=admin-empty]');
  empty.hidden = items.length > 0;
  empty.textContent = 'No ' + col.title.toLowerCase() + ' yet.';
}

function row(col, item) {
  const key = keyOf(col, item);
  const cells = col.fields
    .filter((f) => f.table !== false)
    .map((f) => {
      const v = get(item, f.path);
      const td = h('td', { 'data-testid': 'admin-cell', 'data-field': f.name, text: shown(f, v) });
      // A tag's name is shown in its colours.
      if (col.id === 'tags' && f.name === 'name') {
        const pill = h('span', { class: 'tag', text: shown(f, v) });
        if (typeof item.color === 'string') pill.style.background = item.color;
        if (typeof item.text_color === 'string') pill.style.color = item.text_color;
        td.replaceChildren(pill);
      }
      return td;
    });
  const what = col.one + ' ' + key;
  return h('tr', { 'data-testid': 'admin-row', 'data-key': key }, [
    ...cells,
    h('td', { class: 'acts' }, [
      ...(col.acts || []).map((a) =>
        h('button', {
          class: 'btn small', type: 'button', 'data-testid': a.testid, text: a.label, onclick: () => a.run(key)
        })
      ),
      h('button', {
        class: 'btn small',
        type: 'button',
        'data-testid': 'admin-edit',
        'aria-label': 'Edit ' + what,
        text: 'Edit',
        onclick: () => edit(col, key)
      }),
      h('button', {
        class: 'btn small danger',
        type: 'button',
        'data-testid': 'admin-delete',
        'aria-label': 'Delete ' + what,
        text: 'Delete',
        onclick: () => askDelete(col, key)
      })
    ])
  ]);
}

// ------------------------------------------------------------------ a webhook's log and test

/** Lists what was sent to a webhook or for an action (newest first), under its section's table. */
async function showDeliveries(colId, key) {
  const sec = $('admin-' + colId);
  let box = sec.querySelector('[data-testid=webhook-log]');
  if (!box) {
    box = h('div', { class: 'admin-log', 'data-testid': 'webhook-log' });
    sec.querySelector('[data-testid=admin-table]').after(box);
  }
  box.replaceChildren(h('p', { class: 'empty', text: 'Loading…' }));
  try {
    const page = await apiFetch('GET', sitePath('/' + colId + '/' + encodeURIComponent(key) + '/deliveries'));
    const items = (page && Array.isArray(page.items) ? page.items : []).filter((d) => d && typeof d === 'object');
    const rows = items.map((d) => {
      const tries = Array.isArray(d.attempts) ? d.attempts : [];
      const last = tries[tries.length - 1];
      const attrs = { 'data-testid': 'webhook-delivery', 'data-status': String(d.status) };
      return h('tr', attrs, [
        h('td', { text: d.created_at ? new Date(d.created_at).toLocaleString() : '' }),
        h('td', { text: String(d.type || '') }),
        h('td', { text: String(d.status || '') }),
        h('td', { text: String(tries.length) }),
        h('td', { text: last && last.status ? String(last.status) : (last && last.error) || d.last_error || '' })
      ]);
    });
    box.replaceChildren(
      h('h3', { text: 'Deliveries of ' + key }),
      rows.length
        ? h('table', { class: 'grid' }, [
          h('thead', {}, [
            h('tr', {}, ['Made', 'Event', 'Status', 'Attempts', 'Last answer'].map((t) => h('th', { text: t })))
          ]),
          h('tbody', {}, rows)
        ])
        : h('p', { class: 'empty', text: 'Nothing sent yet.' })
    );
  } catch (err) {
    box.replaceChildren(h('p', { class: 'err', role: 'alert', text: errText(err) }));
  }
}

async function sendTest(key) {
  try {
    await apiFetch('POST', sitePath('/webhooks/' + encodeURIComponent(key) + '/test'));
    toast('Test event sent to ' + key + '.');
  } catch (err) {
    toast('Not sent: ' + errText(err));
  }
}

const rowOf = (col, key) =>
  Array.from(sectionOf(col).querySelectorAll('[data-testid=admin-rows] > tr')).find((tr) => tr.dataset.key === key);

// ------------------------------------------------------------------ create

async function create(e, col) {
  e.preventDefault();
  const form = e.currentTarget;
  const button = form.querySelector('[data-testid=admin-create]');
  if (button.disabled) return;
  clearErrors(form);
  const have = inputs(form);
  const body = {};
  try {
    for (const f of formFields(col, false)) {
      const v = readInput(f, have.get(f.name));
      // Empty text and numbers are left to the server's defaults (a canned id is then made up).
      if (v === undefined || v === '' || (v === null && f.kind !== 'time')) {
        if (f.required) throw new FieldError(f.name, 'Required');
        continue;
      }
      put(body, f.path, v);
    }
  } catch (err) {
    if (err instanceof FieldError) return showErrors(col, form, err);
    throw err;
  }
  button.disabled = true;
  try {
    const made = await apiFetch('POST', pathOf(col), { body });
    const key = made && made[col.key] != null ? String(made[col.key]) : body[col.key] || '';
    const fresh = createForm(col);
    form.replaceWith(fresh);
    const note = col.created && col.created(made);
    if (note) fresh.before(note);
    toast('Added the ' + col.one + (key ? ' ' + key : '') + '.');
    await load(col);
    const again = sectionOf(col).querySelector('[data-testid=admin-create-form] [name]');
    if (again) again.focus();
  } catch (err) {
    showErrors(col, form, err);
  } finally {
    button.disabled = false;
  }
}

// ------------------------------------------------------------------ edit in place

function edit(col, key) {
  const item = (view.items.get(col.id) || []).find((x) => keyOf(col, x) === key);
  const tr = rowOf(col, key);
  if (!item || !tr) return;
  const span = col.fields.filter((f) => f.table !== false).length + 1;
  const form = h(
    'form',
    {
      class: 'admin-form editing',
      'data-testid': 'admin-edit-form',
      novalidate: true,
      'aria-label': 'Edit ' + col.one + ' ' + key,
      onsubmit: (e) => save(e, col, key),
      onkeydown: (e) => e.key === 'Escape' && (e.preventDefault(), closeEdit(col, key))
    },
    [
      h('h3', { text: 'Edit ' + col.one + ' ' + key }),
      h('p', { class: 'form-err err', 'data-testid': 'admin-form-error', role: 'alert', tabindex: '-1', hidden: true }),
      h('div', { class: 'fields' }, formFields(col, true).map((f) => fieldBox(f, get(item, f.path), true))),
      h('div', { class: 'row' }, [
        h('button', {
          class: 'btn',
          type: 'button',
          'data-testid': 'admin-cancel',
          text: 'Cancel',
          onclick: () => closeEdit(col, key)
        }),
        h('button', { class: 'btn primary', type: 'submit', 'data-testid': 'admin-save', text: 'Save' })
      ])
    ]
  );
  const editRow = h('tr', { 'data-testid': 'admin-edit-row', 'data-key': key, 'data-editing': '' }, [
    h('td', { colspan: span }, [form])
  ]);
  tr.replaceWith(editRow);
  const first = form.querySelector('[name]');
  if (first) first.focus();
}

/** Back from the edit form to the item's row, its Edit button focused. */
function closeEdit(col, key) {
  const tr = rowOf(col, key);
  const item = (view.items.get(col.id) || []).find((x) => keyOf(col, x) === key);
  if (!tr) return;
  if (!item) return tr.remove();
  const fresh = row(col, item);
  tr.replaceWith(fresh);
  fresh.querySelector('[data-testid=admin-edit]').focus();
}

async function save(e, col, key) {
  e.preventDefault();
  const form = e.currentTarget;
  const button = form.querySelector('[data-testid=admin-save]');
  if (button.disabled) return;
  const item = (view.items.get(col.id) || []).find((x) => keyOf(col, x) === key) || {};
  clearErrors(form);
  const have = inputs(form);
  // Only what changed goes: PATCH merges the top-level fields it is given, so an object such as a
  // tag's `auto` goes whole, its untouched parts as they were.
  const body = {};
  try {
    for (const f of formFields(col, true)) {
      const v = readInput(f, have.get(f.name));
      if (v === undefined) continue;
      if (JSON.stringify(v) === JSON.stringify(get(item, f.path) ?? (f.kind === 'list' ? [] : null))) continue;
      if (f.kind === 'text' && v === '' && get(item, f.path) == null) continue;
      if (f.path.length > 1 && body[f.path[0]] === undefined) {
        body[f.path[0]] = JSON.parse(JSON.stringify(item[f.path[0]] || {}));
      }
      put(body, f.path, v);
    }
  } catch (err) {
    if (err instanceof FieldError) return showErrors(col, form, err);
    throw err;
  }
  if (!Object.keys(body).length) return closeEdit(col, key);
  button.disabled = true;
  try {
    const saved = await apiFetch('PATCH', pathOf(col, key), { body });
    const items = view.items.get(col.id) || [];
    const at = items.findIndex((x) => keyOf(col, x) === key);
    if (at >= 0) items[at] = saved && typeof saved === 'object' ? saved : { ...item, ...body };
    closeEdit(col, key);
    toast('Saved the ' + col.one + ' ' + key + '.');
  } catch (err) {
    button.disabled = false;
    showErrors(col, form, err);
  }
}

// ------------------------------------------------------------------ delete

let deleting = null; // {col, key} the confirmation dialog asks about

function askDelete(col, key) {
  deleting = { col, key };
  $('admin-confirm-title').textContent = 'Delete the ' + col.one + ' ' + key + '?';
  $('admin-confirm-text').textContent =
    col.id === 'bans' ? 'The ban ends at once.' : 'It is removed from the directory on every node at once.';
  // Esc leaves returnValue as it was: cleared first, as the console's other dialogs do.
  $('admin-confirm').returnValue = '';
  $('admin-confirm').showModal();
}

$('admin-confirm').addEventListener('close', async () => {
  const which = deleting;
  deleting = null;
  if (!which) return;
  const { col, key } = which;
  const focusBack = () => {
    const tr = rowOf(col, key);
    const target = tr ? tr.querySelector('[data-testid=admin-delete]') : sectionOf(col).querySelector('h2');
    if (target) {
      if (target.tagName === 'H2') target.tabIndex = -1;
      target.focus();
    }
  };
  if ($('admin-confirm').returnValue !== 'ok') return focusBack();
  let refused = null;
  try {
    await apiFetch('DELETE', pathOf(col, key));
    toast('Deleted the ' + col.one + ' ' + key + '.');
  } catch (err) {
    refused = err;
  }
  await load(col);
  // Still referenced (409) and the like: said above the table, once it is listed again.
  if (refused) sectionError(col, 'Could not delete the ' + col.one + ' ' + key + ': ' + errText(refused));
  focusBack();
});
