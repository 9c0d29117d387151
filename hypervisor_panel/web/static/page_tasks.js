// Tasks: every long operation with its state, progress and log.

import { FINAL_STATES, items, post } from './api.js';
import { $, badge, el, fill, fmtAgo, fmtDuration, fmtTime, progressBar } from './dom.js';
import { busy, changed, errorView, every, showNotice } from './ui.js';

const rows = $('#task-rows');
const filter = $('#task-filter');
const open = new Set();
let tasks = [];

function duration(t) {
  if (!t.started) return '—';
  const end = t.finished || Date.now() / 1000;
  return fmtDuration(end - t.started);
}

function render() {
  if (!changed('tasks', [tasks, filter.value])) return;
  if (!tasks.length) {
    fill(rows, el('tr', null, el('td', { colspan: 6, class: 'muted', testid: 'no-tasks' }, 'No tasks.')));
    return;
  }
  fill(rows, tasks.map((t) => {
    const details = el('details', { open: open.has(t.id) },
      el('summary', null, t.name || t.kind),
      t.error ? errorView(t.error, { testid: 'task-error' }) : null,
      el('pre', { class: 'log' }, (t.log || []).join('\n') || '(no log lines)'));
    details.addEventListener('toggle', () => {
      if (details.open) open.add(t.id);
      else open.delete(t.id);
    });
    const active = !FINAL_STATES.includes(t.state);
    return el('tr', { testid: 'task-row', dataset: { taskId: t.id, state: t.state } },
      el('td', { title: fmtTime(t.created) }, fmtAgo(t.created)),
      el('td', null, details, el('small', { class: 'muted' }, t.kind)),
      el('td', null, badge(t.state, { task: true, testid: 'task-state' })),
      el('td', { class: 'progress-cell' }, progressBar(t.progress, { tone: `task-${t.state}`, label: t.name }),
        el('small', { class: 'muted' }, `${Math.round(t.progress || 0)}%`)),
      el('td', null, duration(t)),
      el('td', { class: 'actions' }, active ? el('button', {
        type: 'button', class: 'btn-small', testid: 'task-cancel',
        onclick: (event) => cancel(t, event.currentTarget),
      }, 'Cancel') : null));
  }));
}

async function cancel(task, button) {
  const done = await busy(button, () => post(`/tasks/${encodeURIComponent(task.id)}/actions/cancel`, {}),
    `Cancel ${task.name}`);
  if (done) {
    showNotice(`Asked ${task.name} to stop`);
    await load();
  }
}

async function load() {
  const state = filter.value;
  tasks = await items(`/tasks?limit=200${state ? `&state=${encodeURIComponent(state)}` : ''}`);
  render();
}

filter.addEventListener('change', () => load());
every(2000, load, 'Loading tasks');
