// Shared by the backup pages and the VM page's Backups section: how a backup and a backup
// task's transfer look (percent, bytes, throughput), and a list of followed backup tasks.

import { FINAL_STATES } from './api.js';
import { badge, el, fill, fmtBytes, fmtDuration, progressBar } from './dom.js';
import { errorView, followTask, lastLogLine } from './ui.js';

export const encode = encodeURIComponent;
const KEEP_FINISHED = 4;
export const nameOf = (list, id) => (list.find((x) => x.id === id) || {}).name || id || '—';

export const TASK_TITLES = {
  'backup.vm': 'Backup', 'backup.panel': 'Panel backup', 'backup.verify': 'Verify',
  'backup.restore': 'Restore', 'backup.restore_panel': 'Panel restore', 'backup.schedule': 'Schedule run',
};

/** "12 MiB/s" (or null when unknown). */
export function fmtRate(bytesPerSecond) {
  if (!(Number(bytesPerSecond) > 0)) return null;
  return `${fmtBytes(bytesPerSecond)}/s`;
}

/**
 * A transfer's throughput: the task's own figure, else bytes done over the time it has run
 * (a verify reports bytes but no rate).
 */
function rateOf(task) {
  const detail = task.detail || {};
  if (detail.rate_bytes_per_s) return detail.rate_bytes_per_s;
  if (!detail.bytes_done || !task.started) return null;
  const end = task.finished || Date.now() / 1000;
  return end > task.started ? detail.bytes_done / (end - task.started) : null;
}

/** "42% · 120 MiB of 1.0 GiB · 35 MiB/s" (the parts the task knows). */
export function transferText(task) {
  const detail = task.detail || {};
  const parts = [`${Math.round(task.progress || 0)}%`];
  if (detail.bytes_total) {
    parts.push(`${fmtBytes(detail.bytes_done || 0)} of ${fmtBytes(detail.bytes_total)}`);
  } else if (detail.bytes_done) {
    parts.push(fmtBytes(detail.bytes_done));
  }
  const rate = fmtRate(rateOf(task));
  if (rate) parts.push(rate);
  if (FINAL_STATES.includes(task.state) && task.started && task.finished) {
    parts.push(`in ${fmtDuration(task.finished - task.started)}`);
  }
  return parts.join(' · ');
}

/** A task's bar and transfer text. */
export function transferView(task, testid = 'backup-progress') {
  return el('div', { class: 'row-task transfer', testid },
    progressBar(task.progress, { tone: `task-${task.state}`, label: task.name, testid: `${testid}-bar` }),
    el('small', { testid: `${testid}-text` }, transferText(task)));
}

/** The full/incremental label of a backup (and "encrypted" for an encrypted panel backup). */
export function typeTags(backup) {
  return el('span', { class: 'tag-list' },
    el('span', { class: `tag tag-${backup.type || 'full'}`, testid: 'backup-type' }, backup.type || 'full'),
    backup.encrypted ? el('span', { class: 'tag', testid: 'backup-encrypted' }, 'encrypted') : null);
}

/** Size stored on the target, and (VM backups) how much disk data it holds. */
export function sizeCell(backup) {
  return el('td', { class: 'num', testid: 'backup-size' }, fmtBytes(backup.size),
    backup.kind === 'vm' && backup.data_bytes !== undefined
      ? el('div', { class: 'muted small' }, `${fmtBytes(backup.data_bytes)} of data`) : null);
}

export function verifiedBadge(backup) {
  return backup.verified
    ? el('span', { class: 'badge badge-ok', testid: 'backup-verified', dataset: { state: 'verified' } }, 'verified')
    : el('span', { class: 'badge badge-off', testid: 'backup-verified', dataset: { state: 'unverified' } }, 'not verified');
}

/**
 * The backup tasks a page follows, each drawn in ``container`` with its transfer; a finished
 * one stays (with its outcome) until the next one of the same subject starts.
 * ``describe(task)`` may add a node to a finished task (a link to a restored VM...).
 */
export function taskList(container, { onEnd, describe } = {}) {
  const shown = new Map(); // task id -> {task, row}
  const following = new Set();

  const draw = (task) => {
    let entry = shown.get(task.id);
    if (!entry) {
      for (const [id, other] of shown) {
        if (other.task.subject && other.task.subject === task.subject
            && FINAL_STATES.includes(other.task.state)) {
          other.row.remove();
          shown.delete(id);
        }
      }
      entry = { task, row: el('div', { class: 'backup-task', testid: 'backup-task', dataset: { taskId: task.id } }) };
      shown.set(task.id, entry);
      container.prepend(entry.row);
      // Keep the newest few finished ones (panel backups have no subject to replace them).
      const finished = [...shown].filter(([, other]) => FINAL_STATES.includes(other.task.state));
      for (const [id, other] of finished.slice(0, Math.max(0, finished.length - KEEP_FINISHED))) {
        other.row.remove();
        shown.delete(id);
      }
    }
    entry.task = task;
    entry.row.dataset.kind = task.kind;
    entry.row.dataset.state = task.state;
    const message = lastLogLine(task);
    fill(entry.row,
      el('div', { class: 'task-head' },
        el('span', { class: 'tag' }, TASK_TITLES[task.kind] || task.kind),
        el('strong', { testid: 'backup-task-name' }, task.name || task.kind),
        badge(task.state, { task: true, testid: 'backup-task-state' })),
      transferView(task),
      message && task.state !== 'succeeded'
        ? el('small', { class: 'muted log-line', testid: 'backup-task-log' }, message) : null,
      task.error ? errorView(task.error, { testid: 'backup-task-error' }) : null,
      task.state === 'succeeded' && describe ? describe(task) : null);
    container.hidden = false;
  };

  /** Follow a task (from a 202 answer, or found running); resolves with the final task. */
  async function follow(task) {
    if (following.has(task.id)) return null;
    following.add(task.id);
    draw(task);
    let final = null;
    try {
      final = await followTask(task, { showInTray: false, onUpdate: draw });
      draw(final);
    } catch {
      final = null;
    } finally {
      following.delete(task.id);
    }
    if (onEnd) await onEnd(final);
    return final;
  }

  return { follow, isFollowing: (id) => following.has(id) };
}
