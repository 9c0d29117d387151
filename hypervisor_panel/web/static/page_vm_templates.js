// VM templates: the hardware profiles VMs are created from.

import { del, items, post } from './api.js';
import { $, el, fill, fmtGiB, fmtMiB } from './dom.js';
import { busy, changed, clearError, every, isAdmin, showNotice } from './ui.js';

const rows = $('#template-rows');
const form = $('#create-template');
let templates = [];

function render() {
  if (!changed('templates', templates)) return;
  if (!templates.length) {
    fill(rows, el('tr', null, el('td', { colspan: 7, class: 'muted' }, 'No VM templates yet.')));
    return;
  }
  const sorted = [...templates].sort((a, b) => a.memory_mib - b.memory_mib || a.name.localeCompare(b.name));
  fill(rows, sorted.map((t) => el('tr', { testid: 'template-row', dataset: { name: t.name } },
    el('td', null, el('strong', null, t.name)),
    el('td', { class: 'num' }, fmtMiB(t.memory_mib)),
    el('td', { class: 'num' }, t.vcpus),
    el('td', { class: 'num' }, t.cpu_shares ?? '—'),
    el('td', { class: 'num' }, fmtGiB(t.disk_gib)),
    el('td', null, t.description || ''),
    el('td', { class: 'actions' }, isAdmin ? el('button', {
      type: 'button', class: 'btn-small btn-danger', testid: 'template-delete',
      onclick: (event) => remove(t, event.currentTarget),
    }, 'Delete') : null))));
}

async function remove(template, button) {
  if (!window.confirm(`Delete VM template ${template.name}?`)) return;
  const done = await busy(button, async () => {
    await del(`/vm-templates/${encodeURIComponent(template.id)}`);
    return true;
  }, `Delete template ${template.name}`);
  if (done) {
    showNotice(`VM template ${template.name} deleted`);
    await load();
  }
}

async function load() {
  templates = await items('/vm-templates');
  render();
}

if (form && isAdmin) {
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const f = form.elements;
    const body = {
      name: f.name.value.trim(),
      memory_mib: Number(f.memory_mib.value),
      vcpus: Number(f.vcpus.value),
      disk_gib: Number(f.disk_gib.value),
    };
    if (f.cpu_shares.value !== '') body.cpu_shares = Number(f.cpu_shares.value);
    if (f.description.value.trim()) body.description = f.description.value.trim();
    const created = await busy($('[data-testid="create-template-submit"]', form),
      () => post('/vm-templates', body), `Create template ${body.name}`);
    if (!created) return;
    clearError();
    showNotice(`VM template ${created.name} created`);
    form.reset();
    await load();
  });
}

every(10000, load, 'Loading VM templates');
