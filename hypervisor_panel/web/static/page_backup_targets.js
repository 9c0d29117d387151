// Backup targets (admins): the list with each target's options (secrets only as "set"),
// a check button (reachable, writable, free space), delete, and a create form rendered
// from the chosen target plugin's options_schema.

import { del, items, post } from './api.js';
import { $, badge, el, fill, fmtBytes, fmtTime } from './dom.js';
import { encode } from './backup_common.js';
import { renderSchemaForm } from './schema_form.js';
import { busy, changed, clearError, every, isAdmin, showError, showNotice } from './ui.js';

const rows = $('#target-rows');
const form = $('#create-target');
let kinds = [];
let targets = [];
let optionsForm = null;
const checks = new Map(); // target id -> the last check's answer (and when)

const kindOf = (name) => kinds.find((k) => k.name === name);

/** "path: /srv/backups, password: set": values of plain options, only "set" for secrets. */
function optionsCell(target) {
  const schema = (kindOf(target.backend) || {}).options_schema || {};
  const properties = schema.properties || {};
  const secrets = new Set(target.secrets_set || []);
  const shown = [];
  for (const [key, value] of Object.entries(target.options || {})) {
    if ((properties[key] || {}).writeOnly) continue; // never shown, even if an API sent it
    const title = (properties[key] || {}).title || key;
    const text = typeof value === 'string' ? value : JSON.stringify(value);
    shown.push(el('span', { class: 'option', testid: `target-option-${key}` }, `${title}: ${text}`));
  }
  for (const [key, prop] of Object.entries(properties)) {
    if (!prop.writeOnly) continue;
    shown.push(el('span', { class: 'option secret', testid: `target-secret-${key}`, dataset: { set: String(secrets.has(key)) } },
      `${prop.title || key}: `, el('em', null, secrets.has(key) ? 'set' : 'not set')));
  }
  if (!shown.length) return el('td', { class: 'options' }, '—');
  return el('td', { class: 'options' }, shown.map((node, i) => [i ? ', ' : null, node]));
}

function checkCell(target) {
  const check = checks.get(target.id);
  if (!check) return el('td', { testid: 'target-check-result' }, el('span', { class: 'muted' }, 'not checked yet'));
  return el('td', { testid: 'target-check-result', dataset: { ok: String(check.ok) } },
    badge(check.ok ? 'ok' : 'failed', { testid: 'target-check-state' }),
    el('div', { class: check.ok ? 'muted small' : 'error-text small', testid: 'target-check-message' }, check.message),
    check.free_bytes !== null && check.free_bytes !== undefined
      ? el('div', { class: 'muted small', testid: 'target-free' }, `${fmtBytes(check.free_bytes)} free`) : null,
    el('div', { class: 'muted small' }, `checked ${fmtTime(check.at)}`));
}

function render(force = false) {
  if (!changed('targets', [targets, [...checks], kinds.length]) && !force) return;
  if (!targets.length) {
    fill(rows, el('tr', null, el('td', { colspan: 5, class: 'muted', testid: 'no-targets' },
      'No backup targets yet: add one below.')));
    return;
  }
  fill(rows, targets.map((t) => el('tr', { testid: 'target-row', dataset: { name: t.name, targetId: t.id } },
    el('td', null, el('strong', null, t.name), t.description ? el('div', { class: 'muted' }, t.description) : null),
    el('td', null, t.backend),
    optionsCell(t),
    checkCell(t),
    el('td', { class: 'actions' },
      el('button', { type: 'button', class: 'btn-small', testid: 'target-check',
        onclick: (event) => check(t, event.currentTarget) }, 'Check'),
      el('a', { class: 'btn-small link-button', href: `/backups?target=${encode(t.id)}&group=vm`,
        testid: 'target-backups' }, 'Backups'),
      el('button', { type: 'button', class: 'btn-small btn-danger', testid: 'target-delete',
        onclick: (event) => remove(t, event.currentTarget) }, 'Delete')))));
}

async function check(target, button) {
  const answer = await busy(button, () => post(`/backup-targets/${encode(target.id)}/actions/check`, {}),
    `Check ${target.name}`);
  if (!answer) return;
  checks.set(target.id, { ...answer, at: Date.now() / 1000 });
  render(true);
}

async function remove(target, button) {
  if (!window.confirm(`Remove backup target ${target.name}? Its archives stay where they are.`)) return;
  const done = await busy(button, async () => {
    await del(`/backup-targets/${encode(target.id)}`);
    return true;
  }, `Delete backup target ${target.name}`);
  if (done) {
    checks.delete(target.id);
    showNotice(`Backup target ${target.name} removed`);
    await load();
  }
}

async function load() {
  targets = await items('/backup-targets');
  render();
}

function selectKind() {
  const kind = kindOf(form.elements.backend.value);
  $('[data-testid="target-backend-description"]').textContent = kind ? kind.description || '' : '';
  optionsForm = renderSchemaForm($('[data-testid="target-options"]'), kind ? kind.options_schema : {},
    { idPrefix: 'target-opt', emptyText: 'This target type has no options.' });
}

async function setUpForm() {
  kinds = await items('/backup-target-kinds');
  fill(form.elements.backend, kinds.map((k) => el('option', { value: k.name }, k.name)));
  const local = kinds.find((k) => k.name === 'local');
  if (local) form.elements.backend.value = local.name;
  form.elements.backend.addEventListener('change', selectKind);
  selectKind();
  render(true);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const button = $('[data-testid="create-target-submit"]', form);
    const name = form.elements.name.value.trim();
    button.textContent = 'Checking…';
    const made = await busy(button, () => {
      const body = { name, backend: form.elements.backend.value, options: optionsForm.read() };
      const description = form.elements.description.value.trim();
      if (description) body.description = description;
      return post('/backup-targets', body);
    }, `Add backup target ${name}`);
    button.textContent = 'Check and add';
    if (!made) return;
    clearError();
    showNotice(`Backup target ${made.name} added`);
    checks.set(made.id, { ok: true, message: 'checked when added', free_bytes: null, at: Date.now() / 1000 });
    form.reset();
    form.elements.backend.value = made.backend;
    selectKind();
    await load();
  });
}

if (isAdmin && form) {
  setUpForm().catch((error) => showError(error, 'Loading backup target types'));
  every(15000, load, 'Loading backup targets');
}
