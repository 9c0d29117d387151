// IP pools (admin): usage of each pool, its allocations and reservations, the create form.

import { del, get, items, post } from './api.js';
import { $, el, fill, fmtAgo, stackedBar } from './dom.js';
import { busy, changed, clearError, every, isAdmin, showError, showNotice } from './ui.js';

const rows = $('#pool-rows');
const form = $('#create-pool');
const detail = $('[data-testid="pool-detail"]');
const reserveForm = $('#reserve-address');
const data = { pools: [], networks: [], modes: [], vms: [], allocations: [] };
let selected = null; // id of the pool whose addresses are shown

const nameOf = (list, id) => (list.find((x) => x.id === id) || {}).name || id || '—';
const encode = encodeURIComponent;

/** Networks whose mode takes addresses from IP pools (others refuse pools with a 422). */
function poolNetworks() {
  return data.networks.filter((n) => {
    const mode = data.modes.find((m) => m.name === n.mode);
    return !mode || mode.uses_ip_pools !== false;
  });
}

/** The usage bar of a pool: in use and reserved of its size, with the numbers as text. */
function usageView(pool) {
  const u = pool.usage || { size: 0, in_use: 0, reserved: 0, free: 0 };
  const full = u.size > 0 && u.free === 0;
  return el('div', { class: 'usage', testid: 'pool-usage', dataset: { size: u.size, inUse: u.in_use, reserved: u.reserved, free: u.free } },
    stackedBar([
      { value: u.in_use, tone: full ? 'part-full' : 'part-used', label: 'in use' },
      { value: u.reserved, tone: 'part-reserved', label: 'reserved' },
    ], u.size, { label: `${pool.name}: ${u.in_use} in use, ${u.reserved} reserved, ${u.free} free of ${u.size}` }),
    el('div', { class: 'usage-legend', testid: 'pool-usage-text' },
      el('span', null, el('span', { class: 'swatch part-used' }), `${u.in_use} in use`),
      el('span', null, el('span', { class: 'swatch part-reserved' }), `${u.reserved} reserved`),
      el('span', null, el('span', { class: 'swatch' }), `${u.free} free`),
      el('span', null, `of ${u.size}`)),
    full ? el('small', { class: 'warning-text', testid: 'pool-full' }, 'No free address: new VMs on this pool fail with pool_exhausted.') : null);
}

function rangeText(pool) {
  if (pool.range && pool.range.start) return `${pool.range.start} – ${pool.range.end}`;
  return 'whole subnet';
}

function renderPools() {
  if (!changed('pools', [data.pools, data.networks, selected])) return;
  if (!data.pools.length) {
    fill(rows, el('tr', null, el('td', { colspan: 7, class: 'muted', testid: 'no-pools' },
      data.networks.length ? 'No IP pools yet. Create one below.'
        : 'No IP pools yet. Create a network first, then a pool on it.')));
    return;
  }
  const sorted = [...data.pools].sort((a, b) =>
    nameOf(data.networks, a.network).localeCompare(nameOf(data.networks, b.network)) || a.name.localeCompare(b.name));
  fill(rows, sorted.map((p) => el('tr', {
    testid: 'pool-row', class: p.id === selected ? 'selected' : undefined, dataset: { name: p.name, poolId: p.id },
  },
  el('td', null, el('strong', null, p.name), p.description ? el('div', { class: 'muted' }, p.description) : null),
  el('td', null, el('a', { href: '/networks' }, nameOf(data.networks, p.network))),
  el('td', null, el('code', { testid: 'pool-subnet' }, p.subnet), el('span', { class: 'tag' }, `IPv${p.version}`)),
  el('td', null, rangeText(p),
    p.exclude && p.exclude.length ? el('div', { class: 'muted' }, `excluding ${p.exclude.join(', ')}`) : null),
  el('td', null, p.gateway ? el('div', null, 'gw ', el('code', null, p.gateway)) : el('div', { class: 'muted' }, 'no gateway'),
    p.dns && p.dns.length ? el('div', { class: 'muted' }, `DNS ${p.dns.join(', ')}`) : null),
  el('td', { class: 'usage-cell' }, usageView(p)),
  el('td', { class: 'actions' },
    el('button', {
      type: 'button', class: 'btn-small', testid: 'pool-addresses', 'aria-expanded': String(p.id === selected),
      onclick: () => select(p.id),
    }, 'Addresses'),
    el('button', {
      type: 'button', class: 'btn-small btn-danger', testid: 'pool-delete',
      onclick: (event) => remove(p, event.currentTarget),
    }, 'Delete')))));
}

async function remove(pool, button) {
  if (!window.confirm(`Delete IP pool ${pool.name} (${pool.subnet})?`)) return;
  const done = await busy(button, async () => {
    await del(`/ip-pools/${encode(pool.id)}`);
    return true;
  }, `Delete IP pool ${pool.name}`);
  if (!done) return;
  showNotice(`IP pool ${pool.name} deleted`);
  if (selected === pool.id) closeDetail();
  await load();
}

// -- one pool's addresses --------------------------------------------------------------
function renderDetail() {
  const pool = data.pools.find((p) => p.id === selected);
  if (!pool) {
    detail.hidden = true;
    return;
  }
  if (!changed('pool-detail', [pool, data.allocations, data.vms.map((v) => [v.id, v.name])])) return;
  $('[data-testid="pool-detail-title"]').textContent = `Addresses of ${pool.name} (${pool.subnet})`;
  fill($('[data-testid="pool-detail-usage"]'), usageView(pool));
  const body = $('#allocation-rows');
  if (!data.allocations.length) {
    fill(body, el('tr', null, el('td', { colspan: 7, class: 'muted', testid: 'no-allocations' },
      'No address of this pool is in use or reserved.')));
  } else {
    fill(body, data.allocations.map((a) => el('tr', {
      testid: 'allocation-row', dataset: { address: a.address, kind: a.kind },
    },
    el('td', null, el('code', null, a.address)),
    el('td', null, el('span', { class: `badge ${a.kind === 'vm' ? 'badge-ok' : 'badge-warn'}`, testid: 'allocation-kind' },
      a.kind === 'vm' ? 'in use' : 'reserved')),
    el('td', null, a.vm ? el('a', { href: `/vms/${encode(a.vm)}`, testid: 'allocation-vm' }, nameOf(data.vms, a.vm)) : '—'),
    el('td', null, a.nic ? el('code', null, a.nic) : '—'),
    el('td', null, a.note || '—'),
    el('td', { class: 'muted' }, fmtAgo(a.created)),
    el('td', { class: 'actions' }, a.kind === 'reserved' ? el('button', {
      type: 'button', class: 'btn-small', testid: 'release-reservation',
      onclick: (event) => release(pool, a, event.currentTarget),
    }, 'Release') : null))));
  }
  detail.hidden = false;
}

async function loadDetail() {
  if (!selected) return;
  data.allocations = await items(`/ip-pools/${encode(selected)}/allocations`);
  renderDetail();
}

async function select(poolId) {
  if (selected === poolId && !detail.hidden) {
    closeDetail();
    return;
  }
  selected = poolId;
  history.replaceState(null, '', `#${encode(poolId)}`);
  data.allocations = [];
  changed.last['pool-detail'] = null;
  renderPools();
  await loadDetail().catch((error) => showError(error, 'Loading the pool\'s addresses'));
  detail.scrollIntoView({ block: 'nearest', behavior: 'smooth' });
  reserveForm.elements.address.focus();
}

function closeDetail() {
  selected = null;
  detail.hidden = true;
  history.replaceState(null, '', window.location.pathname);
  renderPools();
}

async function release(pool, allocation, button) {
  const done = await busy(button, async () => {
    await del(`/ip-pools/${encode(pool.id)}/reservations/${encode(allocation.address)}`);
    return true;
  }, `Release ${allocation.address}`);
  if (!done) return;
  showNotice(`${allocation.address} released`);
  await load();
}

async function reserve(event) {
  event.preventDefault();
  const pool = data.pools.find((p) => p.id === selected);
  if (!pool) return;
  const address = reserveForm.elements.address.value.trim();
  const body = { address };
  const note = reserveForm.elements.note.value.trim();
  if (note) body.note = note;
  const made = await busy($('[data-testid="reserve-submit"]', reserveForm),
    () => post(`/ip-pools/${encode(pool.id)}/reservations`, body), `Reserve ${address} in ${pool.name}`);
  if (!made) return;
  reserveForm.reset();
  showNotice(`${made.address} reserved in ${pool.name}`);
  await load();
}

// -- loading ---------------------------------------------------------------------------
async function load() {
  [data.pools, data.networks, data.vms] = await Promise.all([
    items('/ip-pools'), items('/networks'), items('/vms')]);
  if (selected && !data.pools.some((p) => p.id === selected)) selected = null;
  renderPools();
  fillNetworks();
  await loadDetail();
  if (!selected) detail.hidden = true;
}

// -- create form -----------------------------------------------------------------------
function fillNetworks() {
  const select = form.elements.network;
  const keep = select.value;
  const usable = poolNetworks();
  if (!changed('pool-networks', usable.map((n) => [n.id, n.name, n.mode]))) return;
  fill(select, usable.length ? usable.map((n) => el('option', { value: n.id }, `${n.name} (${n.mode})`))
    : el('option', { value: '' }, 'no network takes IP pools'));
  if (usable.some((n) => n.id === keep)) select.value = keep;
  describeNetwork();
}

/** Under the form: the chosen network's options (where its range is), and what is not listed. */
function describeNetwork() {
  const note = $('[data-testid="pool-network-note"]');
  const network = data.networks.find((n) => n.id === form.elements.network.value);
  const skipped = data.networks.length - poolNetworks().length;
  const parts = [];
  const options = Object.entries((network && network.options) || {})
    .map(([key, value]) => `${key} ${typeof value === 'string' ? value : JSON.stringify(value)}`);
  if (options.length) parts.push(`${network.name} (${network.mode}): ${options.join(', ')}.`);
  if (skipped) {
    parts.push(`${skipped} network${skipped === 1 ? '' : 's'} whose mode uses no IP pools ${
      skipped === 1 ? 'is' : 'are'} not listed.`);
  }
  note.textContent = parts.join(' ');
}

const words = (text) => text.split(/[\s,]+/).map((s) => s.trim()).filter(Boolean);

function poolBody() {
  const f = form.elements;
  const body = { name: f.name.value.trim(), network: f.network.value, subnet: f.subnet.value.trim() };
  const start = f.range_start.value.trim();
  const end = f.range_end.value.trim();
  if (start || end) {
    if (!start || !end) throw new Error('give both the start and the end of the range, or neither');
    body.range = { start, end };
  }
  if (f.gateway.value.trim()) body.gateway = f.gateway.value.trim();
  const dns = words(f.dns.value);
  if (dns.length) body.dns = dns;
  const exclude = f.exclude.value.split('\n').flatMap(words);
  if (exclude.length) body.exclude = exclude;
  if (f.description.value.trim()) body.description = f.description.value.trim();
  return body;
}

async function createPool(event) {
  event.preventDefault();
  const name = form.elements.name.value.trim();
  const created = await busy($('[data-testid="create-pool-submit"]', form),
    () => post('/ip-pools', poolBody()), `Create IP pool ${name}`);
  if (!created) return;
  clearError();
  const network = form.elements.network.value;
  form.reset();
  form.elements.network.value = network;
  showNotice(`IP pool ${created.name} created: ${created.usage.size} addresses`);
  await load();
}

async function start() {
  reserveForm.addEventListener('submit', reserve);
  $('[data-testid="pool-detail-close"]').addEventListener('click', closeDetail);
  form.elements.network.addEventListener('change', describeNetwork);
  form.addEventListener('submit', createPool);
  data.modes = await items('/network-modes');
  const wanted = decodeURIComponent(window.location.hash.slice(1));
  if (wanted) {
    // A link from the networks page (/ip-pools#ID): open that pool's addresses.
    try {
      await get(`/ip-pools/${encode(wanted)}`);
      selected = wanted;
    } catch {
      history.replaceState(null, '', window.location.pathname);
    }
  }
  await every(10000, load, 'Loading IP pools');
}

if (form && isAdmin) start().catch((error) => showError(error, 'Loading IP pools'));
