// Users: roles, quotas and permissions (admins only). A changed password ends the
// user's sessions and tokens (the API does that).

import { api, del, items, post } from './api.js';
import { $, el, fill } from './dom.js';
import { busy, changed, clearError, every, isAdmin, showNotice } from './ui.js';

const QUOTAS = [['vms', 'VMs'], ['vcpus', 'vCPUs'], ['memory_mib', 'MiB RAM'],
  ['disk_gib', 'GiB disk'], ['ips', 'IPs'], ['backups', 'backups'], ['snapshots', 'snapshots']];
const PERMISSIONS = [['add_recipes', 'recipes'], ['upload_isos', 'ISOs']];
const rows = $('#user-rows');
const form = $('#user-form');
let users = [];
let editing = null;

// "used/limit label" for each key with a limit (what the user's VMs take now).
const quotaText = (quota, usage) => QUOTAS.filter(([key]) => quota && quota[key] !== undefined)
  .map(([key, label]) => `${usage?.[key] ?? 0}/${quota[key]} ${label}`).join(', ') || 'no limit';
const permText = (perms) => PERMISSIONS.filter(([key]) => perms && perms[key])
  .map(([, label]) => label).join(', ') || '—';

function render() {
  if (!changed('users', users)) return;
  fill(rows, users.map((u) => el('tr', { testid: 'user-row', dataset: { name: u.name } },
    el('td', null, el('strong', null, u.name)),
    el('td', null, u.role),
    el('td', { testid: 'user-quota' }, u.role === 'admin' ? '—' : quotaText(u.quota, u.usage)),
    el('td', { testid: 'user-permissions' }, u.role === 'admin' ? 'all' : permText(u.permissions)),
    el('td', { class: 'actions' },
      el('button', { type: 'button', class: 'btn-small', testid: 'user-edit',
        onclick: () => edit(u) }, 'Edit'),
      el('button', { type: 'button', class: 'btn-small btn-danger', testid: 'user-delete',
        onclick: (event) => remove(u, event.currentTarget) }, 'Delete')))));
}

function edit(user) {
  editing = user;
  const f = form.elements;
  f.name.value = user.name;
  f.name.disabled = true;
  f.password.value = '';
  f.role.value = user.role;
  for (const [key] of QUOTAS) f[`q_${key}`].value = user.quota?.[key] ?? '';
  for (const [key] of PERMISSIONS) f[`p_${key}`].checked = Boolean(user.permissions?.[key]);
  $('#user-form-title').textContent = `Edit user ${user.name}`;
  $('#password-hint').textContent = '(empty: unchanged; a new one ends their sessions)';
  $('[data-testid="user-submit"]', form).textContent = 'Save';
  $('#user-cancel').hidden = false;
}

function reset() {
  editing = null;
  form.reset();
  form.elements.name.disabled = false;
  $('#user-form-title').textContent = 'Create user';
  $('#password-hint').textContent = '(8 characters at least)';
  $('[data-testid="user-submit"]', form).textContent = 'Create user';
  $('#user-cancel').hidden = true;
}

function body() {
  const f = form.elements;
  const quota = {};
  for (const [key] of QUOTAS) {
    if (f[`q_${key}`].value !== '') quota[key] = Number(f[`q_${key}`].value);
  }
  const permissions = {};
  for (const [key] of PERMISSIONS) permissions[key] = f[`p_${key}`].checked;
  const out = { role: f.role.value, quota, permissions };
  if (f.password.value) out.password = f.password.value;
  return out;
}

async function remove(user, button) {
  if (!window.confirm(`Delete user ${user.name}?`)) return;
  const done = await busy(button, async () => {
    await del(`/users/${encodeURIComponent(user.id)}`);
    return true;
  }, `Delete user ${user.name}`);
  if (done) {
    showNotice(`User ${user.name} deleted`);
    await load();
  }
}

async function load() {
  users = await items('/users');
  render();
}

if (form && isAdmin) {
  $('#user-cancel').addEventListener('click', reset);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const data = body();
    const name = editing ? editing.name : form.elements.name.value.trim();
    const saved = await busy($('[data-testid="user-submit"]', form), () => (editing
      ? api('PATCH', `/users/${encodeURIComponent(editing.id)}`, data)
      : post('/users', { name, ...data })), editing ? `Save user ${name}` : `Create user ${name}`);
    if (!saved) return;
    clearError();
    showNotice(editing ? `User ${name} saved` : `User ${name} created`);
    reset();
    await load();
  });
  every(15000, load, 'Loading users');
}
