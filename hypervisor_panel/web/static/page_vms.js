// The VM list: live states, addresses, lifecycle buttons and the create form (with an OS
// template: hostname, root's SSH keys and password, and a recipe with its parameters form).

import { get, items, post } from './api.js';
import { $, badge, el, fill, fmtGiB, fmtMiB, progressBar } from './dom.js';
import { compatibleRecipes, fillRecipeSelect, renderParams } from './recipe_params.js';
import { renderSchemaForm } from './schema_form.js';
import { actionButtons, submitAction } from './vm_actions.js';
import { busy, changed, clearError, every, followTask, showError, showNotice } from './ui.js';

const rows = $('#vm-rows');
const form = $('#create-vm');
const data = {
  vms: [], templates: [], nodes: [], storages: [], networks: [], modes: [], osTemplates: [], recipes: [],
};
let recipeParams = { read: () => ({}) };
let nicOptions = null;
let recipeLookup = 0; // the latest recipe lookup (an older answer is dropped)
let recipesFor = null; // the OS template ('' for none) whose recipes the form lists
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

/**
 * The IP field (admins) applies only to a network whose mode takes addresses from pools;
 * a mode with interface options (a user-mode network's port forwards) gets their form.
 */
function networkChanged() {
  const network = data.networks.find((n) => n.id === form.elements.network.value);
  const mode = network && data.modes.find((m) => m.name === network.mode);
  const schema = mode ? mode.nic_options_schema : null;
  const fieldset = $('[data-testid="vm-nic-options"]', form);
  const hasOptions = Boolean(schema && schema.properties && Object.keys(schema.properties).length);
  nicOptions = hasOptions ? renderSchemaForm(fieldset, schema, { idPrefix: 'vm-nic-opt' }) : null;
  fieldset.hidden = !hasOptions;
  const ip = form.elements.ip;
  if (!ip) return;
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
  const osTemplate = chosenOsTemplate();
  if (osTemplate) select.value = osTemplate.storage; // the template's storage holds the clone
}

// -- the OS install: template, guest settings, recipe --------------------------------------
const chosenOsTemplate = () => data.osTemplates.find((t) => t.id === form.elements.os_template.value);

function fillOsTemplates() {
  const select = form.elements.os_template;
  const keep = select.value;
  const ready = data.osTemplates.filter((t) => t.state === 'ready')
    .sort((a, b) => a.name.localeCompare(b.name));
  data.osTemplates = ready;
  fill(select, option('', ready.length ? 'None (no OS installed)' : 'None (no OS template is ready)'),
    ready.map((t) => el('option', { value: t.id, dataset: { name: t.name } },
      `${t.name} (${[t.os_family, t.os_version].filter(Boolean).join(' ')}${t.kind === 'iso' ? ', installer ISO' : ''})`)));
  if (ready.some((t) => t.id === keep)) select.value = keep;
  osTemplateChanged();
}

/** What an OS template needs of the VM template, or '' when it fits. */
function tooSmall(osTemplate) {
  const template = data.templates.find((t) => t.id === form.elements.vm_template.value);
  if (!template) return '';
  const problems = [];
  if (osTemplate.min_disk_gib && template.disk_gib < osTemplate.min_disk_gib) {
    problems.push(`a disk of at least ${fmtGiB(osTemplate.min_disk_gib)}`);
  }
  if (osTemplate.min_memory_mib && template.memory_mib < osTemplate.min_memory_mib) {
    problems.push(`at least ${fmtMiB(osTemplate.min_memory_mib)} of RAM`);
  }
  return problems.length ? ` It needs ${problems.join(' and ')}: choose a bigger VM template.` : '';
}

function osTemplateChanged() {
  const osTemplate = chosenOsTemplate();
  const install = $('[data-testid="vm-install"]', form);
  const note = $('[data-testid="vm-os-template-note"]', form);
  const storageName = osTemplate ? (data.storages.find((s) => s.id === osTemplate.storage) || {}).name : '';
  form.elements.image.disabled = Boolean(osTemplate);
  form.elements.storage.disabled = Boolean(osTemplate);
  if (osTemplate) {
    form.elements.image.value = '';
    form.elements.storage.value = osTemplate.storage;
  }
  const seeded = Boolean(osTemplate) && osTemplate.kind !== 'iso';
  install.hidden = !seeded;
  install.disabled = !seeded;
  note.hidden = !osTemplate;
  note.textContent = !osTemplate ? '' : (osTemplate.kind === 'iso'
    ? `${osTemplate.name} is an installer ISO: the VM boots it with a VNC display; install the OS from there.`
    : `The disk is a clone of ${osTemplate.name} in storage ${storageName || osTemplate.storage}; cloud-init sets the hostname, root's keys and password.`)
    + (osTemplate ? tooSmall(osTemplate) : '');
  const wanted = seeded ? osTemplate : null;
  if (recipesFor !== (wanted ? wanted.id : '')) loadRecipes(wanted); // typed values stay otherwise
}

async function loadRecipes(osTemplate) {
  recipesFor = osTemplate ? osTemplate.id : '';
  const token = ++recipeLookup;
  const select = form.elements.recipe;
  let found = [];
  if (osTemplate) {
    try {
      found = await compatibleRecipes(osTemplate.tags);
    } catch (error) {
      showError(error, 'Loading recipes');
      recipesFor = null; // look again when the form changes
    }
  }
  if (token !== recipeLookup) return; // the template changed meanwhile
  data.recipes = found;
  fillRecipeSelect(select, found, {
    emptyText: osTemplate ? `No recipe suits ${osTemplate.name} (tags: ${(osTemplate.tags || []).join(', ') || 'none'})` : undefined,
  });
  select.disabled = !found.length;
  await recipeChanged().catch((error) => showError(error, 'Loading the recipe'));
}

async function recipeChanged() {
  const container = $('[data-testid="vm-recipe-params"]', form);
  const listed = data.recipes.find((r) => r.id === form.elements.recipe.value);
  let recipe = listed || null;
  if (listed && !listed.params) recipe = await get(`/recipes/${encodeURIComponent(listed.id)}`);
  recipeParams = renderParams(container, recipe, { idPrefix: 'vm-param' });
}

function sshKeys() {
  return form.elements.ssh_keys.value.split('\n').map((line) => line.trim())
    .filter((line) => line && !line.startsWith('#'));
}

/** The install part of the create request (os_template and what configures the guest). */
function installBody() {
  const osTemplate = chosenOsTemplate();
  if (!osTemplate) return {};
  const body = { os_template: osTemplate.id };
  if (osTemplate.kind === 'iso') return body;
  const hostname = form.elements.hostname.value.trim();
  if (hostname) body.hostname = hostname;
  const keys = sshKeys();
  if (keys.length) body.ssh_keys = keys;
  if (form.elements.password.value) body.password = form.elements.password.value;
  if (form.elements.recipe.value) {
    body.recipe = form.elements.recipe.value;
    const params = recipeParams.read();
    if (Object.keys(params).length) body.recipe_params = params;
  }
  return body;
}

async function loadChoices() {
  [data.templates, data.nodes, data.storages, data.networks, data.modes, data.osTemplates] = await Promise.all([
    items('/vm-templates'), items('/nodes'), items('/storages'), items('/networks'),
    items('/network-modes').catch(() => []), items('/os-templates').catch(() => [])]);
  fillSelects();
  fillOsTemplates();
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
form.elements.os_template.addEventListener('change', osTemplateChanged);
form.elements.vm_template.addEventListener('change', osTemplateChanged);
form.elements.recipe.addEventListener('change', () => {
  recipeChanged().catch((error) => showError(error, 'Loading the recipe'));
});

/** The create request; throws (a bad parameter value) before anything is sent. */
function createBody() {
  const body = { name: form.elements.name.value.trim(), vm_template: form.elements.vm_template.value };
  const install = installBody();
  if (form.elements.node.value) body.node = form.elements.node.value;
  if (!install.os_template) {
    if (form.elements.storage.value) body.storage = form.elements.storage.value;
    if (form.elements.image.value) body.image = form.elements.image.value;
  }
  if (form.elements.network.value) {
    const ip = form.elements.ip && !form.elements.ip.disabled ? form.elements.ip.value.trim() : '';
    const options = nicOptions ? nicOptions.read() : {};
    if (Object.keys(options).length) {
      body.interfaces = [{ network: form.elements.network.value, ...(ip ? { ip } : {}), options }];
    } else {
      body.network = form.elements.network.value;
      if (ip) body.ip = ip;
    }
  }
  if (form.elements.start.checked) body.start = true;
  return { ...body, ...install };
}

form.addEventListener('submit', async (event) => {
  event.preventDefault();
  const button = $('[data-testid="create-vm-submit"]', form);
  const name = form.elements.name.value.trim();
  const answer = await busy(button, () => post('/vms', createBody()), `Create VM ${name}`);
  if (!answer) return;
  clearError();
  const body = { name };
  form.elements.name.value = '';
  form.elements.hostname.value = '';
  form.elements.password.value = ''; // never kept in the page
  recipeChanged().catch(() => {}); // a fresh parameters form: typed secrets go
  if (form.elements.ip) form.elements.ip.value = '';
  const task = answer.task;
  await loadVMs();
  const final = await track(task.subject || task.id, task);
  if (final && final.state === 'succeeded') {
    const recipe = final.result && final.result.recipe_task
      ? '; its recipe runs once the guest answers on SSH (see the VM\'s page for its log)' : '';
    showNotice(`VM ${body.name} created${recipe}`);
  }
});

loadChoices().catch((error) => showError(error, 'Loading templates, nodes, storages and networks'));
every(5000, loadVMs, 'Loading VMs');
