// Storages: per-node capacity, and a create form rendered from each back end's options_schema.

import { del, items, post } from './api.js';
import { $, el, fill, fmtBytes, usageBar } from './dom.js';
import { renderSchemaForm } from './schema_form.js';
import { busy, changed, clearError, every, isAdmin, showError, showNotice } from './ui.js';

const rows = $('#storage-rows');
const form = $('#create-storage');
let nodes = [];
let backends = [];
let storages = [];
let optionsForm = null;

const nodeName = (id) => (nodes.find((n) => n.id === id) || {}).name || id;

function optionText(options) {
  const entries = Object.entries(options || {});
  if (!entries.length) return '—';
  return entries.map(([key, value]) => `${key}: ${typeof value === 'string' ? value : JSON.stringify(value)}`).join(', ');
}

function capacityCell(storage) {
  const perNode = Object.entries(storage.nodes || {});
  if (!perNode.length) return el('span', { class: 'muted' }, 'not on any online node');
  return perNode.map(([nodeId, info]) => {
    if (info.state !== 'active' || info.capacity === undefined) {
      return el('div', { class: 'capacity', testid: 'capacity' },
        el('span', { class: 'capacity-node' }, nodeName(nodeId)),
        el('span', { class: 'error-text' }, info.error || info.state));
    }
    const used = info.allocation ?? info.capacity - (info.available ?? 0);
    return el('div', { class: 'capacity', testid: 'capacity' },
      el('span', { class: 'capacity-node' }, nodeName(nodeId)),
      usageBar(used, info.capacity, { label: `${storage.name} on ${nodeName(nodeId)}` }),
      el('small', { class: 'muted' },
        `${fmtBytes(used)} used of ${fmtBytes(info.capacity)}, ${fmtBytes(info.available)} free`));
  });
}

function render() {
  if (!changed('storages', [storages, nodes.length])) return;
  if (!storages.length) {
    fill(rows, el('tr', null, el('td', { colspan: 5, class: 'muted' }, 'No storages yet.')));
    return;
  }
  fill(rows, storages.map((s) => el('tr', { testid: 'storage-row', dataset: { name: s.name } },
    el('td', null, el('strong', null, s.name), s.description ? el('div', { class: 'muted' }, s.description) : null),
    el('td', null, s.backend, s.shared ? el('span', { class: 'tag' }, 'shared') : null),
    el('td', { class: 'options' }, optionText(s.options)),
    el('td', { class: 'capacity-cell' }, capacityCell(s)),
    el('td', { class: 'actions' }, isAdmin ? el('button', {
      type: 'button', class: 'btn-small btn-danger', testid: 'storage-delete',
      onclick: (event) => remove(s, event.currentTarget),
    }, 'Delete') : null))));
}

async function remove(storage, button) {
  if (!window.confirm(`Delete storage ${storage.name}? Its pools are removed from every node.`)) return;
  const done = await busy(button, async () => { await del(`/storages/${encodeURIComponent(storage.id)}`); return true; },
    `Delete storage ${storage.name}`);
  if (done) {
    showNotice(`Storage ${storage.name} deleted`);
    await load();
  }
}

async function load() {
  [storages, nodes] = await Promise.all([items('/storages'), items('/nodes')]);
  render();
}

function selectBackend() {
  const backend = backends.find((b) => b.id === form.elements.backend.value);
  $('[data-testid="backend-description"]').textContent = backend ? backend.description || '' : '';
  optionsForm = renderSchemaForm($('[data-testid="backend-options"]'), backend ? backend.options_schema : {});
}

async function setUpForm() {
  backends = await items('/storage-backends');
  fill(form.elements.backend, backends.map((b) => el('option', { value: b.id }, b.name)));
  form.elements.backend.addEventListener('change', selectBackend);
  selectBackend();
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const button = $('[data-testid="create-storage-submit"]', form);
    const name = form.elements.name.value.trim();
    const created = await busy(button, () => {
      const body = { name, backend: form.elements.backend.value, options: optionsForm.read() };
      const description = form.elements.description.value.trim();
      if (description) body.description = description;
      return post('/storages', body);
    }, `Create storage ${name}`);
    if (!created) return;
    clearError();
    showNotice(`Storage ${created.name} created`);
    form.reset();
    selectBackend();
    await load();
  });
}

if (form && isAdmin) setUpForm().catch((error) => showError(error, 'Loading storage back ends'));
every(10000, load, 'Loading storages');
