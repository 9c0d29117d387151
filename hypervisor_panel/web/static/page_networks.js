// Networks (admin): per-node state, and a create form rendered from each mode's options_schema.

import { del, items, post } from './api.js';
import { $, badge, el, fill } from './dom.js';
import { renderSchemaForm } from './schema_form.js';
import { busy, changed, clearError, every, isAdmin, showError, showNotice } from './ui.js';

const rows = $('#network-rows');
const form = $('#create-network');
let nodes = [];
let modes = [];
let networks = [];
let pools = [];
let optionsForm = null;

const nodeName = (id) => (nodes.find((n) => n.id === id) || {}).name || id;
const modeOf = (name) => modes.find((m) => m.name === name);

function optionText(options) {
  const entries = Object.entries(options || {});
  if (!entries.length) return '—';
  return entries.map(([key, value]) => `${key}: ${typeof value === 'string' ? value : JSON.stringify(value)}`).join(', ');
}

/** One line per node: its name, the network's state there and, on error, why. */
function nodeStates(network) {
  const perNode = Object.entries(network.nodes || {});
  const missing = nodes.filter((n) => n.status === 'online' && !(n.id in (network.nodes || {})));
  if (!perNode.length && !missing.length) return el('span', { class: 'muted' }, 'not on any node');
  return [
    perNode.map(([nodeId, info]) => el('div', {
      class: 'node-state', testid: 'network-node', dataset: { node: nodeName(nodeId), state: info.state },
    },
    el('span', { class: 'capacity-node' }, nodeName(nodeId)), ' ',
    badge(info.state, { testid: 'network-node-state' }),
    info.error ? el('div', { class: 'error-text', testid: 'network-node-error' },
      `${nodeName(nodeId)}: ${info.error}`) : null)),
    missing.map((n) => el('div', { class: 'node-state', testid: 'network-node', dataset: { node: n.name, state: 'missing' } },
      el('span', { class: 'capacity-node' }, n.name), ' ',
      el('span', { class: 'muted' }, 'not set up on this node yet'))),
  ];
}

function poolCell(network) {
  const mode = modeOf(network.mode);
  if (mode && !mode.uses_ip_pools) return el('span', { class: 'muted' }, 'not used by this mode');
  const mine = pools.filter((p) => p.network === network.id);
  if (!mine.length) {
    return el('a', { href: '/ip-pools', class: 'muted', testid: 'network-no-pools' }, 'none yet — add one');
  }
  return mine.map((p) => el('div', { testid: 'network-pool' },
    el('a', { href: `/ip-pools#${encodeURIComponent(p.id)}` }, p.name), ' ',
    el('small', { class: 'muted' }, `${p.subnet} · ${p.usage.free} free`)));
}

function render() {
  if (!changed('networks', [networks, pools, nodes, modes.length])) return;
  if (!networks.length) {
    fill(rows, el('tr', null, el('td', { colspan: 6, class: 'muted', testid: 'no-networks' },
      'No networks yet. Create one below; VMs without a network have no interface.')));
    return;
  }
  const sorted = [...networks].sort((a, b) => a.name.localeCompare(b.name));
  fill(rows, sorted.map((n) => el('tr', { testid: 'network-row', dataset: { name: n.name, networkId: n.id } },
    el('td', null, el('strong', null, n.name), n.description ? el('div', { class: 'muted' }, n.description) : null),
    el('td', { testid: 'network-mode' }, n.mode),
    el('td', { class: 'options' }, optionText(n.options)),
    el('td', { class: 'capacity-cell' }, nodeStates(n)),
    el('td', null, poolCell(n)),
    el('td', { class: 'actions' }, el('button', {
      type: 'button', class: 'btn-small btn-danger', testid: 'network-delete',
      onclick: (event) => remove(n, event.currentTarget),
    }, 'Delete')))));
}

async function remove(network, button) {
  if (!window.confirm(`Delete network ${network.name}? It is removed from every node.`)) return;
  // A 409 network_in_use names the VMs and IP pools that still use it (in the alert's list).
  const done = await busy(button, async () => {
    await del(`/networks/${encodeURIComponent(network.id)}`);
    return true;
  }, `Delete network ${network.name}`);
  if (done) {
    showNotice(`Network ${network.name} deleted`);
    await load();
  }
}

async function load() {
  [networks, pools, nodes] = await Promise.all([items('/networks'), items('/ip-pools'), items('/nodes')]);
  render();
}

function selectMode() {
  const mode = modeOf(form.elements.mode.value);
  const sentence = (t) => (t && !/[.!?]$/.test(t) ? `${t}.` : t);
  const text = mode ? [sentence(mode.description || ''),
    mode.uses_ip_pools ? 'VMs get their addresses from the network\'s IP pools.'
      : 'This mode uses no IP pools.',
    mode.hotplug ? '' : 'Interfaces are added or removed only while a VM is stopped.']
    .filter(Boolean).join(' ') : '';
  $('[data-testid="mode-description"]').textContent = text;
  optionsForm = renderSchemaForm($('[data-testid="mode-options"]'), mode ? mode.options_schema : {},
    { idPrefix: 'net-opt', emptyText: 'This mode has no options.' });
}

async function setUpForm() {
  modes = await items('/network-modes');
  fill(form.elements.mode, modes.map((m) => el('option', { value: m.name }, m.name)));
  form.elements.mode.addEventListener('change', selectMode);
  selectMode();
  render();
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const button = $('[data-testid="create-network-submit"]', form);
    const name = form.elements.name.value.trim();
    const created = await busy(button, () => {
      const body = { name, mode: form.elements.mode.value, options: optionsForm.read() };
      const description = form.elements.description.value.trim();
      if (description) body.description = description;
      return post('/networks', body);
    }, `Create network ${name}`);
    if (!created) return;
    clearError();
    const failed = Object.entries(created.nodes || {}).filter(([, info]) => info.state !== 'active');
    showNotice(failed.length ? `Network ${created.name} created; not active on ${failed.map(([id]) => nodeName(id)).join(', ')}`
      : `Network ${created.name} created`);
    const mode = form.elements.mode.value;
    form.reset();
    form.elements.mode.value = mode;
    selectMode();
    await load();
  });
}

if (form && isAdmin) {
  setUpForm().catch((error) => showError(error, 'Loading network modes'));
  every(10000, load, 'Loading networks');
}
