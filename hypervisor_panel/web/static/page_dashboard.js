// Dashboard: nodes, VM counts by state, running and recent tasks.

import { FINAL_STATES, items } from './api.js';
import { $, badge, el, fill, fmtAgo, fmtMiB, freeMemoryMiB, progressBar, usageBar } from './dom.js';
import { changed, errorParts, every } from './ui.js';

const STATE_ORDER = ['running', 'paused', 'stopped', 'creating', 'deleting', 'crashed', 'unknown', 'missing'];

function renderNodes(nodes) {
  const target = $('[data-testid="node-cards"]');
  if (!nodes.length) {
    fill(target, el('p', { class: 'muted' }, 'No nodes.'));
    return;
  }
  fill(target, nodes.map((n) => {
    const r = n.resources || {};
    const free = freeMemoryMiB(r);
    let memory = null;
    if (r.memory_mib && free !== null) {
      memory = [usageBar(r.memory_mib - free, r.memory_mib, { label: 'memory in use' }),
        el('small', { class: 'muted' }, `${fmtMiB(free)} free of ${fmtMiB(r.memory_mib)} RAM`)];
    } else if (r.memory_mib) {
      memory = el('div', { class: 'muted' }, `${fmtMiB(r.memory_mib)} RAM`);
    }
    return el('div', { class: 'node-card', testid: 'node-card', dataset: { name: n.name } },
      el('div', { class: 'node-card-head' },
        el('strong', { testid: 'node-name' }, n.name),
        n.kind === 'demo' ? el('span', { class: 'tag tag-demo' }, 'demo') : null,
        badge(n.status, { testid: 'node-status' })),
      n.status_reason ? el('p', { class: 'error-text' }, n.status_reason) : null,
      el('div', { class: 'muted' }, r.cpus ? `${r.cpus} CPUs · ${r.arch || ''} · libvirt ${r.libvirt_version || '?'}` : n.uri),
      memory,
      el('div', null, r.domains === undefined ? '' : `${r.running} of ${r.domains} VMs running`));
  }));
}

function renderCounts(vms) {
  const counts = {};
  for (const vm of vms) counts[vm.state] = (counts[vm.state] || 0) + 1;
  const states = Object.keys(counts).sort((a, b) => {
    const ia = STATE_ORDER.indexOf(a);
    const ib = STATE_ORDER.indexOf(b);
    return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib);
  });
  fill($('[data-testid="vm-counts"]'),
    el('div', { class: 'count total', testid: 'count-total' },
      el('span', { class: 'count-number' }, vms.length), el('span', null, 'total')),
    states.map((s) => el('a', { class: 'count', href: '/vms', testid: `count-${s}` },
      el('span', { class: 'count-number' }, counts[s]), badge(s))));
}

/** A task's error in one line: its message and code (the Tasks page has the details). */
function errorLine(error) {
  const { message, code } = errorParts(error);
  return el('small', { class: 'error-text', testid: 'dashboard-task-error' }, message,
    code ? [' ', el('code', { class: 'error-code' }, code)] : null);
}

function renderTasks(tasks) {
  const target = $('[data-testid="recent-tasks"]');
  const active = tasks.filter((t) => !FINAL_STATES.includes(t.state));
  const recent = tasks.filter((t) => FINAL_STATES.includes(t.state)).slice(0, Math.max(0, 8 - active.length));
  const shown = [...active, ...recent];
  if (!shown.length) {
    fill(target, el('p', { class: 'muted' }, 'No tasks yet.'));
    return;
  }
  fill(target, el('ul', { class: 'task-list' }, shown.map((t) => el('li', { testid: 'dashboard-task' },
    el('div', { class: 'task-line' },
      el('span', null, t.name || t.kind),
      badge(t.state, { task: true }),
      el('small', { class: 'muted' }, fmtAgo(t.created))),
    FINAL_STATES.includes(t.state) ? null : progressBar(t.progress, { tone: `task-${t.state}`, label: t.name }),
    t.error ? errorLine(t.error) : null))));
}

async function load() {
  const [nodes, vms, tasks] = await Promise.all([items('/nodes'), items('/vms'), items('/tasks?limit=50')]);
  if (changed('dash-nodes', nodes)) renderNodes(nodes);
  if (changed('dash-vms', vms.map((v) => v.state))) renderCounts(vms);
  if (changed('dash-tasks', tasks)) renderTasks(tasks);
}

every(3000, load, 'Loading the dashboard');
