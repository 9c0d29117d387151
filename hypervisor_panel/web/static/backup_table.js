// A table of backups (the backups page's groups and the VM page's section): date, type,
// size, target, verified, and for admins verify, restore, download and delete.

import { del } from './api.js';
import { el, fmtTime } from './dom.js';
import { encode, sizeCell, typeTags, verifiedBadge } from './backup_common.js';
import { busy, isAdmin, showNotice } from './ui.js';

/** Ask, then delete a backup; ``done()`` runs after a delete. */
async function remove(backup, button, done) {
  if (!window.confirm(`Delete backup ${backup.name}? Its archive is removed from ${backup.target_name}.`)) return;
  const ok = await busy(button, async () => { await del(`/backups/${encode(backup.id)}`); return true; },
    `Delete backup ${backup.name}`);
  if (ok) {
    showNotice(`Backup ${backup.name} deleted`);
    await done();
  }
}

function actionsCell(backup, { actions, busyIds, reload }) {
  const running = busyIds.has(backup.id);
  return el('td', { class: 'actions' },
    el('button', { type: 'button', class: 'btn-small', testid: 'backup-verify', disabled: running,
      title: 'Re-read the archive (its whole chain) and check every hash',
      onclick: (event) => actions.verify(backup, event.currentTarget) }, 'Verify'),
    el('button', { type: 'button', class: 'btn-small btn-warn', testid: 'backup-restore', disabled: running,
      onclick: () => actions.restore(backup) }, 'Restore…'),
    el('a', { class: 'btn-small link-button', href: `/api/v1/backups/${encode(backup.id)}/content`, download: '',
      testid: 'backup-download', title: 'Download the archive' }, 'Download'),
    el('button', { type: 'button', class: 'btn-small btn-danger', testid: 'backup-delete', disabled: running,
      onclick: (event) => remove(backup, event.currentTarget, reload) }, 'Delete'));
}

function whatCell(backup) {
  if (backup.kind === 'panel') return el('td', null, el('span', { class: 'tag' }, 'panel'));
  return el('td', null, el('a', { href: `/vms/${encode(backup.vm)}`, testid: 'backup-vm' }, backup.vm_name || backup.vm));
}

/**
 * The table. ``columns`` leaves out 'what' (VM / panel) or 'target' when a group already says
 * it; ``actions`` (admins) is ``{verify, restore}``; ``busyIds`` the backups a task works on.
 */
export function backupTable(backups, {
  columns = ['what', 'target'], actions = null, busyIds = new Set(), reload, testid = 'backup-table',
} = {}) {
  const admin = isAdmin && actions;
  const head = [
    el('th', { class: 'col-date' }, 'Date'), columns.includes('what') ? el('th', { class: 'col-what' }, 'Of') : null,
    el('th', { class: 'col-type' }, 'Type'), el('th', { class: 'num col-size' }, 'Size'),
    columns.includes('target') ? el('th', { class: 'col-target' }, 'Target') : null,
    el('th', { class: 'col-verified' }, 'Verified'), admin ? el('th', { class: 'col-actions' }, '') : null];
  const rows = backups.map((b) => el('tr', {
    testid: 'backup-row', dataset: { backupId: b.id, name: b.name, type: b.type, kind: b.kind },
  },
  el('td', null, el('span', { testid: 'backup-date' }, fmtTime(b.created)),
    el('div', { class: 'muted small', testid: 'backup-name' }, b.name),
    b.fallback_reason ? el('div', { class: 'muted small', testid: 'backup-fallback' },
      `full instead of incremental: ${b.fallback_reason}`) : null),
  columns.includes('what') ? whatCell(b) : null,
  el('td', null, typeTags(b)),
  sizeCell(b),
  columns.includes('target') ? el('td', { testid: 'backup-target' }, b.target_name || b.target) : null,
  el('td', null, verifiedBadge(b)),
  admin ? actionsCell(b, { actions, busyIds, reload }) : null));
  return el('table', { class: 'table backup-table', testid }, el('thead', null, el('tr', null, head)), el('tbody', null, rows));
}
