// Backup schedules (admins): when each runs next, what it backs up where, its policy; edit,
// pause/resume, run now (its run followed below the heading), delete; the form is in
// schedule_form.js.

import { FINAL_STATES, api, del, get, items, post } from './api.js';
import { $, badge, el, fill, fmtAgo, fmtTime } from './dom.js';
import { encode, nameOf, taskList } from './backup_common.js';
import { RULES, edit, isEditing, reset, setUpScheduleForm, updateLookups } from './schedule_form.js';
import { busy, changed, every, isAdmin, showError, showNotice } from './ui.js';

const rows = $('#schedule-rows');
const data = { schedules: [], targets: [], vms: [], nodes: [], tasks: new Map() };
const activity = taskList($('[data-testid="backup-activity"]'), {
  onEnd: () => load().catch((error) => showError(error, 'Loading schedules')),
});

function whenText(s) {
  if (s.cron) return el('span', null, el('code', { testid: 'schedule-cron-text' }, s.cron), ' UTC');
  return `every ${s.interval_minutes} min`;
}

function whatText(s) {
  const vms = s.vms || { mode: 'all' };
  const names = (list, ids) => (ids || []).map((id) => nameOf(list, id)).join(', ') || 'none chosen';
  const part = {
    all: 'all VMs', none: null,
    list: `VMs: ${names(data.vms, vms.ids)}`,
    tags: `VMs tagged ${(vms.tags || []).join(', ') || '—'}`,
    nodes: `VMs on ${names(data.nodes, vms.nodes)}`,
  }[vms.mode];
  const panel = s.panel ? `the panel${s.encrypted ? ' (encrypted)' : ''}` : null;
  return [part, panel].filter(Boolean).join(' + ') || 'nothing';
}

function policyText(s) {
  const kept = RULES.filter((rule) => (s.retention || {})[rule])
    .map((rule) => `${rule.replace('keep_', '')} ${s.retention[rule]}`);
  return el('div', null,
    el('div', null, s.full_every === 0 ? 'always full' : `full every ${s.full_every ?? 6}`),
    el('div', { class: 'muted small', testid: 'schedule-retention' }, kept.length ? `keep ${kept.join(', ')}` : 'keep all'),
    el('div', { class: 'muted small' }, s.missed === 'skip' ? 'missed runs skipped' : 'a missed run runs at start'));
}

function nextRunCell(s) {
  if (s.paused) return el('td', { testid: 'schedule-next-run' }, badge('paused', { testid: 'schedule-state' }));
  return el('td', { testid: 'schedule-next-run', dataset: { at: s.next_run || '' } },
    s.next_run ? fmtTime(s.next_run) : el('span', { class: 'muted' }, 'not planned'));
}

function lastRunCell(s) {
  const task = s.last_task ? data.tasks.get(s.last_task) : null;
  return el('td', { testid: 'schedule-last-run' }, s.last_run ? fmtAgo(s.last_run) : el('span', { class: 'muted' }, 'never'),
    task ? el('div', null, badge(task.state, { task: true, testid: 'schedule-last-state' })) : null);
}

function render(force = false) {
  if (!changed('schedules', [data.schedules, data.targets, data.vms.map((v) => v.name), [...data.tasks]]) && !force) return;
  if (!data.schedules.length) {
    fill(rows, el('tr', null, el('td', { colspan: 8, class: 'muted', testid: 'no-schedules' },
      'No backup schedules yet: add one below.')));
    return;
  }
  fill(rows, data.schedules.map((s) => el('tr', {
    testid: 'schedule-row', dataset: { name: s.name, scheduleId: s.id, paused: String(Boolean(s.paused)) },
  },
  el('td', null, el('strong', null, s.name), s.description ? el('div', { class: 'muted' }, s.description) : null),
  el('td', { testid: 'schedule-when-text' }, whenText(s)),
  el('td', { testid: 'schedule-what-text' }, whatText(s)),
  el('td', { testid: 'schedule-target-name' }, nameOf(data.targets, s.target)),
  el('td', null, policyText(s)),
  nextRunCell(s),
  lastRunCell(s),
  el('td', { class: 'actions' },
    el('button', { type: 'button', class: 'btn-small', testid: 'schedule-edit', onclick: () => edit(s) }, 'Edit'),
    el('button', { type: 'button', class: 'btn-small', testid: s.paused ? 'schedule-resume' : 'schedule-pause',
      onclick: (event) => setPaused(s, !s.paused, event.currentTarget) }, s.paused ? 'Resume' : 'Pause'),
    el('button', { type: 'button', class: 'btn-small', testid: 'schedule-run',
      disabled: activity.isFollowing(s.last_task), onclick: (event) => runNow(s, event.currentTarget) }, 'Run now'),
    el('button', { type: 'button', class: 'btn-small btn-danger', testid: 'schedule-delete',
      onclick: (event) => remove(s, event.currentTarget) }, 'Delete')))));
}

async function setPaused(schedule, paused, button) {
  const stored = await busy(button, () => api('PATCH', `/backup-schedules/${encode(schedule.id)}`, { paused }),
    `${paused ? 'Pause' : 'Resume'} ${schedule.name}`);
  if (!stored) return;
  showNotice(`Schedule ${schedule.name} ${paused ? 'paused' : 'resumed'}`);
  await load();
}

async function runNow(schedule, button) {
  const answer = await busy(button, () => post(`/backup-schedules/${encode(schedule.id)}/actions/run`, {}),
    `Run ${schedule.name}`);
  if (!answer) return;
  showNotice(`Schedule ${schedule.name} runs now…`);
  activity.follow(answer.task);
  await load();
}

async function remove(schedule, button) {
  if (!window.confirm(`Delete schedule ${schedule.name}? The backups it made stay.`)) return;
  const done = await busy(button, async () => {
    await del(`/backup-schedules/${encode(schedule.id)}`);
    return true;
  }, `Delete schedule ${schedule.name}`);
  if (!done) return;
  if (isEditing(schedule.id)) reset();
  showNotice(`Schedule ${schedule.name} deleted`);
  await load();
}

async function load() {
  const [schedules, targets, vms, nodes] = await Promise.all([
    items('/backup-schedules'), items('/backup-targets'), items('/vms'), items('/nodes')]);
  Object.assign(data, { schedules, targets, vms, nodes });
  updateLookups({ targets, vms, nodes });
  // The last run of each schedule: its state, and its progress when it still runs.
  const wanted = schedules.map((s) => s.last_task).filter(Boolean);
  const found = await Promise.all(wanted.map((id) => get(`/tasks/${encode(id)}`).catch(() => null)));
  data.tasks = new Map(found.filter(Boolean).map((t) => [t.id, t]));
  render();
  for (const task of data.tasks.values()) {
    if (!FINAL_STATES.includes(task.state) && !activity.isFollowing(task.id)) activity.follow(task);
  }
}

if (isAdmin && rows) {
  setUpScheduleForm(() => load());
  every(10000, load, 'Loading schedules');
}
