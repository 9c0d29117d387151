// The VM page's Snapshots section: the VM's snapshots (name, description, when, memory,
// state) with Revert and Delete, and a form taking a new one. Every action is a task: it is
// followed in the task tray, and the list (and the page's VM) reloads when it ends.

import { del, items, post } from './api.js';
import { $, badge, el, fill, fmtTime } from './dom.js';
import { busy, changed, followTask, showError, showNotice } from './ui.js';

const encode = encodeURIComponent;
const card = $('[data-testid="vm-snapshots-card"]');
const list = card ? $('[data-testid="vm-snapshots"]', card) : null;
const form = $('#take-snapshot');
let vm = null;
let path = '';
let snapshots = [];
let loaded = false;
const busyNames = new Set(); // snapshots a task of this page works on
let afterTask = async () => {};

async function loadSnapshots(force = false) {
  if (!vm) return;
  snapshots = await items(`${path}/snapshots`);
  loaded = true;
  render(force);
}

/** Follow an action's task in the tray; reload the list (and the VM) when it ends. */
async function follow(task, name, done) {
  if (name) busyNames.add(name);
  render(true);
  let final = null;
  try {
    final = await followTask(task);
  } catch {
    final = null; // followTask showed the error
  } finally {
    if (name) busyNames.delete(name);
  }
  if (final && final.state === 'succeeded' && done) showNotice(done);
  await Promise.all([loadSnapshots(true), afterTask(final)])
    .catch((error) => showError(error, 'Loading snapshots'));
  return final;
}

async function revert(snap, button) {
  if (!window.confirm(`Revert VM ${vm.name} to snapshot ${snap.name}? Changes since then are lost; `
    + 'backups start a new full chain.')) return;
  const answer = await busy(button, () =>
    post(`${path}/snapshots/${encode(snap.name)}/actions/revert`, {}), `Revert ${vm.name} to ${snap.name}`);
  if (answer) await follow(answer.task, snap.name, `${vm.name} is back at snapshot ${snap.name}`);
}

async function remove(snap, button) {
  if (!window.confirm(`Delete snapshot ${snap.name} of VM ${vm.name}?`)) return;
  const answer = await busy(button, () => del(`${path}/snapshots/${encode(snap.name)}`),
    `Delete snapshot ${snap.name}`);
  if (answer) await follow(answer.task, snap.name, `Snapshot ${snap.name} deleted`);
}

function row(snap) {
  const working = busyNames.has(snap.name);
  const ready = snap.state === 'ready';
  const memory = snap.memory === null || snap.memory === undefined ? '—' : snap.memory ? 'yes' : 'no';
  return el('tr', { testid: 'snapshot-row', dataset: { name: snap.name, state: snap.state } },
    el('td', { testid: 'snapshot-name-cell' }, el('strong', null, snap.name)),
    el('td', { testid: 'snapshot-description-cell' }, snap.description || el('span', { class: 'muted' }, '—')),
    el('td', { testid: 'snapshot-created' }, fmtTime(snap.created)),
    el('td', { testid: 'snapshot-memory' }, memory),
    el('td', null, badge(snap.state, { testid: 'snapshot-state' })),
    el('td', { class: 'actions' },
      el('button', {
        type: 'button', class: 'btn-small btn-warn', testid: 'snapshot-revert', disabled: !ready || working,
        title: ready ? `Bring the VM back to ${snap.name}` : 'The snapshot is not ready yet',
        onclick: (event) => revert(snap, event.currentTarget),
      }, 'Revert'),
      el('button', {
        type: 'button', class: 'btn-small btn-danger', testid: 'snapshot-delete', disabled: working,
        onclick: (event) => remove(snap, event.currentTarget),
      }, 'Delete')));
}

function render(force = false) {
  if (!list || !loaded) return;
  if (!changed('vm-snapshots', [snapshots, [...busyNames]]) && !force) return;
  if (!snapshots.length) {
    fill(list, el('p', { class: 'muted', testid: 'no-snapshots' }, 'No snapshots of this VM yet.'));
    return;
  }
  fill(list, el('table', { class: 'table', testid: 'snapshot-table' },
    el('thead', null, el('tr', null,
      el('th', null, 'Name'), el('th', null, 'Description'), el('th', null, 'Taken'),
      el('th', null, 'Memory'), el('th', null, 'State'), el('th', null, ''))),
    el('tbody', null, snapshots.map(row))));
}

/** Called with each fresh VM record of the page (every few seconds). */
export async function updateSnapshots(record) {
  if (!card || !record) return;
  vm = record;
  await loadSnapshots();
}

/** Wire the section; ``after(task)`` runs when a snapshot task of this section ends. */
export function setUpSnapshots(vmPath, after) {
  if (!card) return;
  path = vmPath;
  afterTask = after || afterTask;
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    if (!vm) return;
    const button = $('[data-testid="snapshot-submit"]', form);
    const name = form.elements.name.value.trim();
    const description = form.elements.description.value.trim();
    const body = description ? { name, description } : { name };
    const answer = await busy(button, () => post(`${path}/snapshots`, body), `Snapshot ${vm.name}`);
    if (!answer) return;
    form.reset();
    showNotice(`Taking snapshot ${name} of ${vm.name}…`);
    await loadSnapshots(true).catch((error) => showError(error, 'Loading snapshots'));
    await follow(answer.task, name, `Snapshot ${name} of ${vm.name} taken`);
  });
}
