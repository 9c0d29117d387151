// The VM page's Backups section: this VM's backups (type, size, date, target); admins also
// verify and restore them and back the VM up now (target, mode), with the transfer's bytes,
// percent and throughput while it runs.

import { FINAL_STATES, items, post } from './api.js';
import { $, el, fill } from './dom.js';
import { encode, taskList } from './backup_common.js';
import { backupActions } from './backup_restore.js';
import { backupTable } from './backup_table.js';
import { busy, changed, isAdmin, showError, showNotice } from './ui.js';

const card = $('[data-testid="vm-backups-card"]');
const list = $('[data-testid="vm-backups"]', card);
const form = $('#vm-backup');
let vmId = null;
let targets = [];
let backups = [];
const busyIds = new Set();
let afterTask = async () => {};

const activity = taskList($('[data-testid="vm-backup-activity"]', card), {
  onEnd: async (final) => {
    if (final) busyIds.delete(final.subject);
    await Promise.all([loadBackups(true), afterTask(final)]).catch((error) => showError(error, 'Loading backups'));
  },
  describe: (task) => (task.kind === 'backup.restore' && task.result && task.result.vm && task.result.vm !== vmId
    ? el('div', { testid: 'restored-vm' }, 'Restored: ',
      el('a', { href: `/vms/${encode(task.result.vm)}`, testid: 'restored-vm-link' }, 'open the new VM'))
    : null),
});

function follow(task) {
  if (task.subject) busyIds.add(task.subject);
  render(true);
  return activity.follow(task);
}

const actions = isAdmin ? backupActions($('[data-testid="restore-panel"]'), { follow }) : null;

function render(force = false) {
  if (!changed('vm-backups', [backups, [...busyIds]]) && !force) return;
  if (!backups.length) {
    fill(list, el('p', { class: 'muted', testid: 'no-vm-backups' },
      isAdmin ? 'No backups of this VM yet.' : 'No backups of this VM yet; an administrator takes them.'));
    return;
  }
  fill(list, backupTable(backups, { columns: ['target'], actions, busyIds, reload: () => loadBackups(true),
    testid: 'vm-backup-table' }));
}

async function loadBackups(force = false) {
  if (!vmId) return;
  backups = await items(`/backups?vm=${encode(vmId)}`);
  render(force);
}

function fillTargets() {
  if (!form) return;
  const select = form.elements.target;
  const keep = select.value;
  fill(select, targets.length ? targets.map((t) => el('option', { value: t.id }, `${t.name} (${t.backend})`))
    : el('option', { value: '' }, 'no backup target yet'));
  if (targets.some((t) => t.id === keep)) select.value = keep;
  $('[data-testid="vm-backup-submit"]', form).disabled = !targets.length;
  const note = $('[data-testid="vm-backup-note"]', card);
  note.hidden = Boolean(targets.length);
  fill(note, 'Add a backup target first: ', el('a', { href: '/backup-targets' }, 'backup targets'), '.');
}

/** Called with each fresh VM record of the page (every few seconds). */
export async function updateBackups(vm) {
  if (!card || !vm) return;
  await loadBackups();
  // A backup started elsewhere (a schedule, another tab): show its transfer here too.
  const mine = isAdmin ? await items(`/tasks?subject=${encode(vm.id)}&limit=5`) : [];
  for (const task of mine) {
    if (task.kind === 'backup.vm' && !FINAL_STATES.includes(task.state) && !activity.isFollowing(task.id)) {
      follow(task);
    }
  }
}

/** Wire the section; ``after(task)`` runs when a backup task of this section ends. */
export async function setUpBackups(id, after) {
  if (!card) return;
  vmId = id;
  afterTask = after || afterTask;
  $('[data-testid="vm-backups-all"]', card).href = `/backups?vm=${encode(id)}`;
  if (!form) return;
  targets = await items('/backup-targets');
  fillTargets();
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const button = $('[data-testid="vm-backup-submit"]', form);
    const body = { target: form.elements.target.value, mode: form.elements.mode.value };
    const answer = await busy(button, () => post(`/vms/${encode(vmId)}/actions/backup`, body), 'Back up now');
    if (!answer) return;
    showNotice(`Backing up to ${(targets.find((t) => t.id === body.target) || {}).name || body.target}…`);
    follow(answer.task);
  });
}
