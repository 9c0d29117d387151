// The VM list: live states, lifecycle buttons and the create form.

import { items, post } from './api.js';
import { $, badge, el, fill, fmtGiB, fmtMiB, progressBar } from './dom.js';
import { actionButtons, submitAction } from './vm_actions.js';
import { busy, changed, clearError, every, followTask, showError, showNotice } from './ui.js';

const rows = $('#vm-rows');
const form = $('#create-vm');
const data = { vms: [], templates: [], nodes: [], storages: [] };
const running = new Map(); // vm id -> task in progress started from this page

const nameOf = (list, id) => (list.find((x) => x.id === id) || {}).name || id || '—';

function renderRows() {
  if (!changed('vms', [data.vms, [...running], data.nodes.length, data.templates.length])) return;
  if (!data.vms.length) {
    fill(rows, el('tr', null, el('td', { colspan: 8, class: 'muted', testid: 'no-vms' },
      'No virtual machines yet. Create one below.')));
    return;
  }
  const sorted = [...data.vms].sort((a, b) => a.name.localeCompare(b.name));
  fill(rows, sorted.map((vm) => {
    const task = running.get(vm.id);
    const stateCell = el('td', { class: 'state-cell' }, badge(vm.state, { testid: 'vm-state' }));
    if (task) {
      stateCell.append(el('div', { class: 'row-task', testid: 'vm-task' },
        progressBar(task.progress, { tone: 'task-running', label: task.name }),
        el('small', null, task.name)));
    }
    if (vm.problem) stateCell.append(el('small', { class: 'warning-text' }, vm.problem));
    return el('tr', { testid: 'vm-row', dataset: { name: vm.name, vmId: vm.id } },
      el('td', null, el('a', { href: `/vms/${encodeURIComponent(vm.id)}`, testid: 'vm-link' }, vm.name)),
      stateCell,
      el('td', null, nameOf(data.nodes, vm.node)),
      el('td', null, nameOf(data.templates, vm.vm_template)),
      el('td', { class: 'num' }, vm.vcpus),
      el('td', { class: 'num' }, fmtMiB(vm.memory_mib)),
      el('td', { class: 'num' }, fmtGiB(vm.disk_gib)),
      el('td', { class: 'actions' }, actionButtons(vm, {
        small: true, disabled: Boolean(task), onClick: (spec, button) => act(vm, spec, button),
      })));
  }));
}

async function loadVMs() {
  data.vms = await items('/vms');
  renderRows();
}

async function track(vmId, task) {
  running.set(vmId, task);
  renderRows();
  try {
    return await followTask(task, { onUpdate: (current) => { running.set(vmId, current); renderRows(); } });
  } finally {
    running.delete(vmId);
    await loadVMs().catch((error) => showError(error, 'Loading VMs'));
  }
}

async function act(vm, spec, button) {
  const task = await busy(button, () => submitAction(vm, spec), `${spec.label} ${vm.name}`);
  if (!task) return;
  const final = await track(vm.id, task);
  if (final && final.state === 'succeeded') showNotice(`${final.name}: done`);
}

// -- create form ---------------------------------------------------------------------------
function option(value, label) {
  return el('option', { value }, label);
}

function fillSelects() {
  const templateSelect = form.elements.vm_template;
  const keepTemplate = templateSelect.value;
  fill(templateSelect, data.templates.map((t) => option(t.id,
    `${t.name} (${t.vcpus} vCPU, ${fmtMiB(t.memory_mib)}, ${fmtGiB(t.disk_gib)})`)));
  if (keepTemplate) templateSelect.value = keepTemplate;
  const nodeSelect = form.elements.node;
  fill(nodeSelect, option('', 'Automatic placement'), data.nodes.map((n) =>
    el('option', { value: n.id, disabled: n.status !== 'online' },
      n.status === 'online' ? n.name : `${n.name} (${n.status})`)));
  fillStorages();
}

function fillStorages() {
  const node = form.elements.node.value;
  const select = form.elements.storage;
  const keep = select.value;
  const usable = data.storages.filter((s) => !node || (s.nodes && node in s.nodes));
  fill(select, option('', 'Node default'), usable.map((s) => option(s.id, `${s.name} (${s.backend})`)));
  if (usable.some((s) => s.id === keep)) select.value = keep;
}

async function loadChoices() {
  [data.templates, data.nodes, data.storages] = await Promise.all([
    items('/vm-templates'), items('/nodes'), items('/storages')]);
  fillSelects();
  renderRows();
}

async function fillImages() {
  const select = form.elements.image;
  const storage = form.elements.storage.value;
  let volumes = [];
  if (storage) {
    try {
      volumes = await items(`/storages/${encodeURIComponent(storage)}/volumes`);
    } catch {
      volumes = []; // only admins list volumes; others get an empty disk
    }
  }
  fill(select, option('', 'Empty disk'), volumes.map((v) => option(v.name, v.name)));
}

form.elements.node.addEventListener('change', () => { fillStorages(); fillImages(); });
form.elements.storage.addEventListener('change', fillImages);

form.addEventListener('submit', async (event) => {
  event.preventDefault();
  const button = $('[data-testid="create-vm-submit"]', form);
  const body = { name: form.elements.name.value.trim(), vm_template: form.elements.vm_template.value };
  if (form.elements.node.value) body.node = form.elements.node.value;
  if (form.elements.storage.value) body.storage = form.elements.storage.value;
  if (form.elements.image.value) body.image = form.elements.image.value;
  if (form.elements.start.checked) body.start = true;
  const answer = await busy(button, () => post('/vms', body), `Create VM ${body.name}`);
  if (!answer) return;
  clearError();
  form.elements.name.value = '';
  const task = answer.task;
  await loadVMs();
  const final = await track(task.subject || task.id, task);
  if (final && final.state === 'succeeded') showNotice(`VM ${body.name} created`);
});

loadChoices().catch((error) => showError(error, 'Loading templates, nodes and storages'));
every(5000, loadVMs, 'Loading VMs');
