// Backups: every backup (users: their VMs'), filtered by VM, target and kind, grouped by VM
// or by target. Admins verify, restore (in place or as a new VM), download and delete them,
// back up the panel, and see the transfer (bytes, percent, throughput) of running tasks.

import { FINAL_STATES, items, post } from './api.js';
import { $, el, fill } from './dom.js';
import { encode, taskList } from './backup_common.js';
import { backupActions } from './backup_restore.js';
import { backupTable } from './backup_table.js';
import { busy, changed, clearError, every, isAdmin, showError, showNotice } from './ui.js';

const filters = $('[data-testid="backup-filters"]');
const groups = $('#backup-groups');
const data = { backups: [], vms: [], targets: [] };
const busyIds = new Set(); // backups a verify or restore of this page works on

const activity = taskList($('[data-testid="backup-activity"]'), {
  onEnd: async (final) => {
    if (final) busyIds.delete(final.subject);
    await load().catch((error) => showError(error, 'Loading backups'));
  },
  describe: (task) => {
    const result = task.result || {};
    if (task.kind === 'backup.restore' && result.vm) {
      return el('div', { testid: 'restored-vm' }, 'Restored: ',
        el('a', { href: `/vms/${encode(result.vm)}`, testid: 'restored-vm-link' }, 'open the VM'));
    }
    if (task.kind === 'backup.verify') {
      return el('div', { class: 'muted', testid: 'verify-ok' }, `✓ every hash matches (${result.archives || 1} archive(s))`);
    }
    return null;
  },
});

function follow(task) {
  if (task.subject) busyIds.add(task.subject);
  render(true);
  return activity.follow(task);
}

const actions = isAdmin ? backupActions($('[data-testid="restore-panel"]'), { follow }) : null;

// -- the list ----------------------------------------------------------------------------
function groupKey(backup, by) {
  if (by === 'target') return [backup.target, backup.target_name || backup.target];
  if (backup.kind === 'panel') return ['panel', 'The panel'];
  const vm = data.vms.find((v) => v.id === backup.vm);
  return [backup.vm, vm ? vm.name : `${backup.vm_name || backup.vm} (deleted)`];
}

function render(force = false) {
  const by = filters.elements.group.value;
  if (!changed('backups', [data, by, [...busyIds]]) && !force) return;
  if (!data.backups.length) {
    const filtered = filters.elements.vm.value || filters.elements.target.value
      || (filters.elements.kind && filters.elements.kind.value);
    fill(groups, el('p', { class: 'muted', testid: 'no-backups' }, filtered ? 'No backups match these filters.'
      : isAdmin ? 'No backups yet: back up a VM from its page, the panel below, or add a schedule.'
        : 'None of your VMs has a backup yet.'));
    return;
  }
  const grouped = new Map();
  for (const backup of data.backups) {
    const [key, label] = groupKey(backup, by);
    if (!grouped.has(key)) grouped.set(key, { label, backups: [] });
    grouped.get(key).backups.push(backup);
  }
  fill(groups, [...grouped.entries()].map(([key, group]) => el('div', {
    class: 'backup-group', testid: 'backup-group', dataset: { key, name: group.label },
  },
  el('h3', { testid: 'backup-group-title' }, group.label,
    el('small', { class: 'muted' }, ` · ${group.backups.length} backup${group.backups.length === 1 ? '' : 's'}`)),
  backupTable(group.backups, {
    columns: by === 'target' ? ['what'] : ['target'], actions, busyIds, reload: load,
  }))));
}

function fillSelect(select, list) {
  const keep = select.value;
  fill(select, select.options[0], list.map((x) => el('option', { value: x.id }, x.name)));
  select.value = keep;
}

// What the filters offer: the VMs (and deleted VMs that still have backups) and the targets
// the backups seen so far are on (users may not list targets), kept across filtered loads.
const seen = { vms: new Map(), targets: new Map() };

function filterChoices(unfiltered) {
  if (unfiltered) {
    seen.vms.clear();
    seen.targets.clear();
  }
  for (const b of data.backups) {
    if (b.vm && !data.vms.some((v) => v.id === b.vm)) seen.vms.set(b.vm, { id: b.vm, name: `${b.vm_name || b.vm} (deleted)` });
    seen.targets.set(b.target, { id: b.target, name: b.target_name || b.target });
  }
  for (const t of data.targets) seen.targets.set(t.id, t);
  return { vms: [...data.vms, ...seen.vms.values()], targets: [...seen.targets.values()] };
}

async function load() {
  const query = new URLSearchParams();
  for (const key of ['vm', 'target', 'kind']) {
    const field = filters.elements[key];
    if (field && field.value) query.set(key, field.value);
  }
  const text = query.toString();
  const [backups, vms, targets] = await Promise.all([
    items(`/backups${text ? `?${text}` : ''}`), items('/vms'),
    isAdmin ? items('/backup-targets') : []]);
  Object.assign(data, { backups, vms, targets });
  const choices = filterChoices(!text);
  fillSelect(filters.elements.vm, choices.vms);
  fillSelect(filters.elements.target, choices.targets);
  if (isAdmin) fillPanelForm(targets);
  render();
  if (isAdmin) await followRunning();
}

/** Backup tasks started elsewhere (a VM page, a schedule, the API): follow them here too. */
async function followRunning() {
  const running = await items('/tasks?state=running&limit=50');
  for (const task of running) {
    if (task.kind.startsWith('backup.') && !FINAL_STATES.includes(task.state) && !activity.isFollowing(task.id)) {
      follow(task);
    }
  }
}

filters.addEventListener('change', () => {
  clearError();
  load().catch((error) => showError(error, 'Loading backups'));
});
filters.addEventListener('submit', (event) => event.preventDefault());

// -- backing up the panel (admins) -----------------------------------------------------
const panelForm = $('#panel-backup');

function fillPanelForm(targets) {
  if (!panelForm) return;
  const select = panelForm.elements.target;
  const keep = select.value;
  fill(select, targets.length ? targets.map((t) => el('option', { value: t.id }, `${t.name} (${t.backend})`))
    : el('option', { value: '' }, 'no backup target yet'));
  if (targets.some((t) => t.id === keep)) select.value = keep;
  $('[data-testid="panel-backup-submit"]', panelForm).disabled = !targets.length;
  const note = $('[data-testid="panel-backup-note"]');
  note.hidden = Boolean(targets.length);
  fill(note, 'Add a backup target first: ', el('a', { href: '/backup-targets' }, 'backup targets'), '.');
}

if (panelForm) {
  panelForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    const button = $('[data-testid="panel-backup-submit"]', panelForm);
    const body = { target: panelForm.elements.target.value };
    if (panelForm.elements.passphrase.value) body.passphrase = panelForm.elements.passphrase.value;
    const answer = await busy(button, () => post('/backups', body), 'Back up the panel');
    if (!answer) return;
    panelForm.elements.passphrase.value = '';
    showNotice('Backing up the panel…');
    follow(answer.task);
  });
}

// A link from elsewhere may pre-select a VM or a target (/backups?vm=ID).
const wanted = new URLSearchParams(window.location.search);
async function start() {
  for (const key of ['vm', 'target', 'kind']) {
    const value = wanted.get(key);
    const field = filters.elements[key];
    if (value && field) field.append(el('option', { value, selected: true }, value));
  }
  if (wanted.get('group')) filters.elements.group.value = wanted.get('group');
  await every(8000, load, 'Loading backups');
}

start().catch((error) => showError(error, 'Loading backups'));
