// The VM list: live states, addresses, lifecycle buttons and the create form.

import { items, post } from './api.js';
import { $, badge, el, fill, fmtGiB, fmtMiB, progressBar } from './dom.js';
import { actionButtons, submitAction } from './vm_actions.js';
import { busy, changed, clearError, every, followTask, showError, showNotice } from './ui.js';

const rows = $('#vm-rows');
const form = $('#create-vm');
const data = { vms: [], templates: [], nodes: [], storages: [], networks: [], modes: [] };
const running = new Map(); // vm id -> task in progress started from this page

const nameOf = (list, id) => (list.find((x) => x.id === id) || {}).name || id || '—';

/** The VM's addresses, one per line (with its network's name when it has several). */
function addressList(vm) {
  const nics = vm.interfaces || [];
  const lines = nics.flatMap((nic) => (nic.addresses || []).map((a) => [a.address, nic.network]));
  if (!lines.length && (vm.addresses || []).length) vm.addresses.forEach((a) => lines.push([a, null]));
  if (!lines.length) {
    return el('span', { class: 'muted' }, nics.length ? 'no address' : '—');
  }
  const networks = new Set(lines.map(([, network]) => network));
  return lines.map(([address, network]) => el('code', { testid: 'vm-address', title: nameOf(data.networks, network) },
    address, networks.size > 1 && network ? el('span', { class: 'muted' }, ` (${nameOf(data.networks, network)})`) : null));
}

function renderRows() {
  if (!changed('vms', [data.vms, [...running], data.nodes.length, data.templates.length,
    data.networks.length])) return;
  if (!data.vms.length) {
    fill(rows, el('tr', null, el('td', { colspan: 9, class: 'muted', testid: 'no-vms' },
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
      el('td', { class: 'addresses-cell', testid: 'vm-addresses' }, addressList(vm)),
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
  fillNetworks();
}

function fillNetworks() {
  const select = form.elements.network;
  const keep = select.value;
  const sorted = [...data.networks].sort((a, b) => a.name.localeCompare(b.name));
  fill(select, option('', 'No network'), sorted.map((n) => option(n.id, `${n.name} (${n.mode})`)));
  if (sorted.some((n) => n.id === keep)) select.value = keep;
  networkChanged();
}

/** The IP field (admins) applies only to a network whose mode takes addresses from pools. */
function networkChanged() {
  const ip = form.elements.ip;
  if (!ip) return;
  const network = data.networks.find((n) => n.id === form.elements.network.value);
  const mode = network && data.modes.find((m) => m.name === network.mode);
  const usable = Boolean(network) && (!mode || mode.uses_ip_pools !== false);
  ip.disabled = !usable;
  ip.placeholder = !network ? 'choose a network first'
    : usable ? 'next free address of its pools' : `${network.mode} networks take no address`;
  if (!usable) ip.value = '';
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
  [data.templates, data.nodes, data.storages, data.networks, data.modes] = await Promise.all([
    items('/vm-templates'), items('/nodes'), items('/storages'), items('/networks'),
    items('/network-modes').catch(() => [])]);
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
form.elements.network.addEventListener('change', networkChanged);

form.addEventListener('submit', async (event) => {
  event.preventDefault();
  const button = $('[data-testid="create-vm-submit"]', form);
  const body = { name: form.elements.name.value.trim(), vm_template: form.elements.vm_template.value };
  if (form.elements.node.value) body.node = form.elements.node.value;
  if (form.elements.storage.value) body.storage = form.elements.storage.value;
  if (form.elements.image.value) body.image = form.elements.image.value;
  if (form.elements.network.value) {
    body.network = form.elements.network.value;
    const ip = form.elements.ip ? form.elements.ip.value.trim() : '';
    if (ip) body.ip = ip;
  }
  if (form.elements.start.checked) body.start = true;
  const answer = await busy(button, () => post('/vms', body), `Create VM ${body.name}`);
  if (!answer) return;
  clearError();
  form.elements.name.value = '';
  if (form.elements.ip) form.elements.ip.value = '';
  const task = answer.task;
  await loadVMs();
  const final = await track(task.subject || task.id, task);
  if (final && final.state === 'succeeded') showNotice(`VM ${body.name} created`);
});

loadChoices().catch((error) => showError(error, 'Loading templates, nodes, storages and networks'));
every(5000, loadVMs, 'Loading VMs');
