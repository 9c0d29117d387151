// The VM page's Interfaces section: each NIC's network, MAC and addresses; add and remove
// interfaces (users and admins) and addresses (admins); the guest's network-config.
//
// Rendered apart from the rest of the page (its own change check), so what is typed into
// its inputs survives the page's periodic refresh.

import { del, get, items, post } from './api.js';
import { $, el, fill } from './dom.js';
import { renderSchemaForm } from './schema_form.js';
import { busy, changed, clearError, isAdmin, showNotice } from './ui.js';

const card = $('[data-testid="vm-interfaces-card"]');
const body = $('[data-testid="vm-interfaces"] tbody', card);
const form = $('#add-interface');
const note = $('[data-testid="nic-note"]', card);
const configBox = $('[data-testid="network-config"]', card);
const configText = $('[data-testid="network-config-text"]', card);
const lookups = { networks: [], modes: [], pools: [] };
let vm = null;
let path = '';
let reload = async () => {};
let nicOptions = null;
let deviceNames = {}; // MAC -> the guest's name for it (eth0...), from network-config

const encode = encodeURIComponent;
const nameOf = (list, id) => (list.find((x) => x.id === id) || {}).name || id || '—';
const networkOf = (id) => lookups.networks.find((n) => n.id === id);
const modeOf = (network) => network && lookups.modes.find((m) => m.name === network.mode);

function optionText(options) {
  const entries = Object.entries(options || {});
  if (!entries.length) return '—';
  return entries.map(([key, value]) => `${key}: ${typeof value === 'string' ? value : JSON.stringify(value)}`).join(', ');
}

/** One address: CIDR, gateway and (for admins, who see pools) the pool it came from. */
function addressItem(nic, a) {
  const pool = a.pool ? lookups.pools.find((p) => p.id === a.pool) : null;
  return el('li', { testid: 'nic-address', dataset: { address: a.address } },
    el('code', null, `${a.address}/${a.prefix}`),
    a.gateway ? el('span', { class: 'muted', testid: 'nic-gateway' }, `gateway ${a.gateway}`) : null,
    pool ? el('span', { class: 'muted' }, `pool ${pool.name}`) : null,
    isAdmin ? el('button', {
      type: 'button', class: 'btn-small btn-danger', testid: 'remove-address',
      title: `Take ${a.address} off this interface (it goes back to its pool)`,
      'aria-label': `Remove ${a.address}`,
      onclick: (event) => removeAddress(nic, a, event.currentTarget),
    }, 'Remove') : null);
}

/** Admins: give the interface one more address (a given IP, or the next free of a pool). */
function addAddressForm(nic) {
  const pools = lookups.pools.filter((p) => p.network === nic.network);
  const network = networkOf(nic.network);
  const mode = modeOf(network);
  if (mode && mode.uses_ip_pools === false) return null;
  const ip = el('input', { name: 'ip', maxlength: 45, placeholder: 'next free', testid: 'add-address-ip',
    'aria-label': 'Address to add' });
  const pool = el('select', { name: 'pool', testid: 'add-address-pool', 'aria-label': 'From pool' },
    el('option', { value: '' }, 'any pool'),
    pools.map((p) => el('option', { value: p.id }, `${p.name} (${p.subnet}, ${p.usage.free} free)`)));
  const button = el('button', { type: 'submit', class: 'btn-small', testid: 'add-address-submit' }, 'Add address');
  return el('form', {
    class: 'add-address', testid: 'add-address-form',
    onsubmit: (event) => {
      event.preventDefault();
      const payload = {};
      if (ip.value.trim()) payload.ip = ip.value.trim();
      if (pool.value) payload.pool = pool.value;
      addAddress(nic, payload, button);
    },
  }, ip, pool, button);
}

function render() {
  if (!vm) return;
  if (!changed('vm-interfaces', [vm.interfaces, vm.state, lookups, deviceNames])) return;
  const nics = vm.interfaces || [];
  if (!nics.length) {
    fill(body, el('tr', null, el('td', { colspan: 6, class: 'muted', testid: 'no-interfaces' },
      'No interfaces: this VM has no network.')));
  } else {
    fill(body, nics.map((nic, index) => {
      const network = networkOf(nic.network);
      const addresses = nic.addresses || [];
      return el('tr', { testid: 'nic-row', dataset: { nicId: nic.id, mac: nic.mac, network: network ? network.name : nic.network } },
        el('td', null, el('code', { testid: 'nic-device' }, deviceNames[nic.mac] || `#${index + 1}`)),
        el('td', { testid: 'nic-network-name' }, network ? network.name : nic.network,
          network ? el('span', { class: 'tag' }, network.mode) : null),
        el('td', null, el('code', { testid: 'nic-mac' }, nic.mac)),
        el('td', { class: 'addresses-cell' },
          addresses.length ? el('ul', { class: 'addr-list' }, addresses.map((a) => addressItem(nic, a)))
            : el('span', { class: 'muted', testid: 'nic-no-address' }, 'no address'),
          nic.dns && nic.dns.length ? el('div', { class: 'muted' }, `DNS ${nic.dns.join(', ')}`) : null,
          isAdmin ? addAddressForm(nic) : null),
        el('td', { class: 'options' }, optionText(nic.options)),
        el('td', { class: 'actions' }, el('button', {
          type: 'button', class: 'btn-small btn-danger', testid: 'remove-interface',
          onclick: (event) => removeInterface(nic, event.currentTarget),
        }, 'Remove')));
    }));
  }
  describeChoice();
}

// -- actions ---------------------------------------------------------------------------
async function after(text) {
  clearError();
  showNotice(text);
  await Promise.all([reload(), refreshLookups().catch(() => {})]);
  await loadConfig();
}

async function removeInterface(nic, button) {
  const network = nameOf(lookups.networks, nic.network);
  if (!window.confirm(`Remove the interface ${nic.mac} (${network}) from ${vm.name}? Its addresses go back to their pools.`)) return;
  const done = await busy(button, async () => {
    await del(`${path}/interfaces/${encode(nic.id)}`);
    return true;
  }, `Remove interface ${nic.mac} from ${vm.name}`);
  if (done) await after(`Interface ${nic.mac} removed`);
}

async function addAddress(nic, payload, button) {
  const made = await busy(button, () => post(`${path}/interfaces/${encode(nic.id)}/addresses`, payload),
    `Add an address to ${nic.mac}`);
  if (!made) return;
  const before = new Set((nic.addresses || []).map((a) => a.address));
  const added = (made.addresses || []).map((a) => a.address).filter((a) => !before.has(a));
  await after(added.length ? `${added.join(', ')} added to ${nic.mac}` : `Address added to ${nic.mac}`);
}

async function removeAddress(nic, address, button) {
  const done = await busy(button, async () => {
    await del(`${path}/interfaces/${encode(nic.id)}/addresses/${encode(address.address)}`);
    return true;
  }, `Remove ${address.address} from ${nic.mac}`);
  if (done) await after(`${address.address} removed from ${nic.mac}`);
}

// -- the add-interface form --------------------------------------------------------------
function fillNetworks() {
  const select = form.elements.network;
  const keep = select.value;
  const sorted = [...lookups.networks].sort((a, b) => a.name.localeCompare(b.name));
  fill(select, sorted.length ? sorted.map((n) => el('option', { value: n.id }, `${n.name} (${n.mode})`))
    : el('option', { value: '' }, 'no network yet'));
  if (sorted.some((n) => n.id === keep)) select.value = keep;
  $('[data-testid="add-interface-submit"]', form).disabled = !sorted.length;
  selectNetwork();
}

function selectNetwork() {
  const mode = modeOf(networkOf(form.elements.network.value));
  const schema = mode ? mode.nic_options_schema : null;
  const fieldset = $('[data-testid="nic-options"]', form);
  const hasOptions = Boolean(schema && schema.properties && Object.keys(schema.properties).length);
  nicOptions = hasOptions ? renderSchemaForm(fieldset, schema, { idPrefix: 'nic-opt' }) : null;
  fieldset.hidden = !hasOptions;
  if (form.elements.ip) {
    const usable = !mode || mode.uses_ip_pools !== false;
    form.elements.ip.disabled = !usable;
    form.elements.ip.placeholder = usable ? 'next free address' : `${mode.name} networks take no address`;
    if (!usable) form.elements.ip.value = '';
  }
  describeChoice();
}

/** Say up front when the chosen network cannot change this VM now (the API says 409). */
function describeChoice() {
  if (!vm) return;
  const network = networkOf(form.elements.network.value);
  const mode = modeOf(network);
  const running = vm.state !== 'stopped';
  note.textContent = network && mode && mode.hotplug === false && running
    ? `${network.name} is a ${mode.name} network: its interfaces cannot be added to or removed from a running VM. Stop ${vm.name} first.`
    : running ? 'The VM is running: the interface is hot-plugged.' : '';
}

async function addInterface(event) {
  event.preventDefault();
  const button = $('[data-testid="add-interface-submit"]', form);
  const network = networkOf(form.elements.network.value);
  if (!network) return;
  const made = await busy(button, () => {
    const payload = { network: network.id };
    const ip = form.elements.ip && !form.elements.ip.disabled ? form.elements.ip.value.trim() : '';
    if (ip) payload.ip = ip;
    const options = nicOptions ? nicOptions.read() : {};
    if (Object.keys(options).length) payload.options = options;
    return post(`${path}/interfaces`, payload);
  }, `Add an interface on ${network.name} to ${vm.name}`);
  if (!made) return;
  if (form.elements.ip) form.elements.ip.value = '';
  selectNetwork();
  const addresses = (made.addresses || []).map((a) => a.address);
  await after(`Interface ${made.mac} added on ${network.name}${addresses.length ? ` (${addresses.join(', ')})` : ''}`);
}

// -- the guest's network-config ----------------------------------------------------------
async function loadConfig() {
  if (!vm) return;
  try {
    const config = await get(`${path}/network-config`);
    const names = {};
    for (const [name, entry] of Object.entries(config.ethernets || {})) {
      const mac = entry && entry.match && entry.match.macaddress;
      if (mac) names[mac] = name;
    }
    deviceNames = names;
    configText.textContent = JSON.stringify(config, null, 2);
  } catch (error) {
    configText.textContent = `Could not read the network configuration: ${error.message}`;
  }
  render();
}

/** Set the section up once; ``reloadVM()`` reloads the VM (which calls updateInterfaces). */
export async function setUpInterfaces(vmPath, reloadVM) {
  path = vmPath;
  reload = reloadVM;
  form.addEventListener('submit', addInterface);
  form.elements.network.addEventListener('change', selectNetwork);
  configBox.addEventListener('toggle', () => { if (configBox.open) loadConfig(); });
  [lookups.networks, lookups.modes, lookups.pools] = await Promise.all([
    items('/networks'), items('/network-modes').catch(() => []),
    isAdmin ? items('/ip-pools').catch(() => []) : []]);
  fillNetworks();
}

/** The VM as the page last loaded it: re-render the section when its interfaces changed. */
export function updateInterfaces(current) {
  const before = vm ? JSON.stringify((vm.interfaces || []).map((n) => n.mac)) : null;
  vm = current;
  if (before !== JSON.stringify((vm.interfaces || []).map((n) => n.mac))) loadConfig();
  render();
}

/** Reload the networks and pools (after an address changed, pools' free counts did too). */
export async function refreshLookups() {
  [lookups.networks, lookups.pools] = await Promise.all([
    items('/networks'), isAdmin ? items('/ip-pools').catch(() => lookups.pools) : []]);
  fillNetworks();
  render();
}
