// One VM: state, facts, stats, disks, interfaces, snapshots, lifecycle buttons, the last task
// and the serial console.

import { ApiError, FINAL_STATES, get, items, post } from './api.js';
import {
  $, badge, definitionList, el, fill, fmtBytes, fmtDuration, fmtGiB, fmtMiB, fmtTime, progressBar,
} from './dom.js';
import { actionButtons, submitAction } from './vm_actions.js';
import { setUpInterfaces, updateInterfaces } from './vm_interfaces.js';
import { reinstallButton, setUpRecipes, updateRecipes } from './vm_recipes.js';
import { setUpBackups, updateBackups } from './vm_backups.js';
import { setUpSnapshots, updateSnapshots } from './vm_snapshots.js';
import { busy, changed, clearError, errorView, every, followTask, showError, showNotice } from './ui.js';

const root = $('#vm');
const vmId = root.dataset.vmId;
const path = `/vms/${encodeURIComponent(vmId)}`;
const lookups = { templates: [], nodes: [], storages: [] };
let vm = null;
let lastTask = null;
let followed = null; // id of the task this page is following (it holds the action buttons)
let watched = null; // id of the task the Last task panel follows
let gone = false;

const nameOf = (list, id) => (list.find((x) => x.id === id) || {}).name || id || '—';

const STAT_LABELS = {
  cpu_time_ns: ['CPU time', (v) => fmtDuration(v / 1e9)],
  memory_kib: ['Memory (balloon)', (v) => fmtBytes(v * 1024)],
  rss_kib: ['Resident memory', (v) => fmtBytes(v * 1024)],
  vcpus: ['vCPUs online', (v) => String(v)],
};

function renderVM() {
  if (!changed('vm', [vm, lookups.nodes.length, lookups.templates.length, followed])) return;
  document.title = `${vm.name} · Hypervisor panel`;
  $('[data-testid="vm-title"]').textContent = vm.name;
  fill($('[data-testid="vm-state-holder"]'), badge(vm.state, { testid: 'vm-state' }));
  const problem = $('[data-testid="vm-problem"]');
  problem.textContent = vm.problem || '';
  problem.hidden = !vm.problem;
  fill($('[data-testid="vm-actions"]'), actionButtons(vm, {
    disabled: Boolean(followed), onClick: (spec, button) => act(spec, button),
  }), reinstallButton(vm, Boolean(followed)), migrateButton());
  definitionList($('[data-testid="vm-facts"]'), [
    ['State', badge(vm.state)],
    ['Node', nameOf(lookups.nodes, vm.node)],
    ['Template', nameOf(lookups.templates, vm.vm_template)],
    ['vCPUs', String(vm.vcpus)],
    ['Memory', fmtMiB(vm.memory_mib)],
    ['CPU shares', vm.cpu_shares === undefined ? undefined : String(vm.cpu_shares)],
    ['Disk', fmtGiB(vm.disk_gib)],
    ['Storage', nameOf(lookups.storages, vm.storage)],
    ['Addresses', (vm.addresses || []).length
      ? el('span', { testid: 'vm-fact-addresses' }, vm.addresses.join(', ')) : '—'],
    ['Domain type', vm.domain_type || '—'],
    ['Domain name', vm.domain_name],
    ['UUID', el('code', null, vm.uuid || '—')],
    ['Created', fmtTime(vm.created)],
    ['Description', vm.description || '—'],
  ]);
  const stats = vm.stats || {};
  const statsList = $('[data-testid="vm-stats"]');
  const keys = Object.keys(stats);
  if (!keys.length) {
    fill(statsList, el('dt', { class: 'muted wide' },
      vm.state === 'running' ? 'The node reports no statistics for this VM yet.'
        : 'No statistics while the VM is not running.'));
  } else {
    definitionList(statsList, keys.map((key) => {
      const [label, format] = STAT_LABELS[key] || [key, (v) => (typeof v === 'object' ? JSON.stringify(v) : String(v))];
      return [label, format(stats[key])];
    }));
  }
  const disks = vm.disks || [];
  fill($('[data-testid="vm-disks"] tbody'), disks.length ? disks.map((d) => el('tr', { testid: 'disk-row' },
    el('td', null, el('code', null, d.target)),
    el('td', null, d.volume),
    el('td', null, nameOf(lookups.storages, d.storage)),
    el('td', { class: 'num' }, fmtGiB(d.size_gib)),
  )) : el('tr', null, el('td', { colspan: 4, class: 'muted' }, 'No disks.')));
}

function renderTask(task) {
  const panel = $('[data-testid="last-task"] .task-panel');
  if (!task) return;
  const log = Array.isArray(task.log) ? task.log : [];
  const duration = task.finished && task.started ? fmtDuration(task.finished - task.started) : '';
  fill(panel,
    el('div', { class: 'task-head' },
      el('strong', { testid: 'task-name' }, task.name || task.kind),
      badge(task.state, { task: true, testid: 'task-state' }),
      el('span', { class: 'muted' }, `${Math.round(task.progress || 0)}%`),
      duration ? el('span', { class: 'muted' }, duration) : null,
      el('a', { href: '/tasks', class: 'muted' }, 'all tasks')),
    progressBar(task.progress, { tone: `task-${task.state}`, testid: 'task-progress', label: task.name }),
    task.error ? errorView(task.error, { testid: 'task-error' }) : null,
    el('pre', { class: 'log', testid: 'task-log' }, log.length ? log.join('\n') : '(no log lines)'));
}

async function follow(task) {
  // A recipe runs in the guest (for hours, maybe) and a backup lets the VM start and stop:
  // neither holds the lifecycle buttons.
  const blocking = !['recipe.run', 'backup.vm'].includes(task.kind);
  watched = task.id;
  if (blocking) followed = task.id;
  lastTask = task;
  renderTask(task);
  renderVM();
  let final = null;
  try {
    final = await followTask(task, {
      showInTray: false,
      onUpdate: (current) => {
        if (watched !== task.id) return; // a newer task has the panel
        lastTask = current;
        renderTask(current);
      },
    });
  } catch {
    final = null;
  } finally {
    if (followed === task.id) followed = null;
    if (watched === task.id) watched = null;
  }
  if (final && final.kind === 'vm.migrate' && final.state === 'succeeded') {
    lookups.nodes = await items('/nodes').catch(() => lookups.nodes);
  }
  if (final && final.kind === 'vm.delete' && final.state === 'succeeded') {
    showNotice(`${vm.name} was deleted`);
    window.location.assign('/vms');
    return final;
  }
  await load().catch((error) => showError(error, 'Loading the VM'));
  return final;
}

async function act(spec, button) {
  const task = await busy(button, () => submitAction(vm, spec), `${spec.label} ${vm.name}`);
  if (task) await follow(task);
}

async function loadTasks() {
  const mine = await items(`/tasks?subject=${encodeURIComponent(vmId)}&limit=5`);
  if (!mine.length || watched) return;
  const newest = mine[0];
  if (!FINAL_STATES.includes(newest.state)) {
    follow(newest); // started elsewhere (another tab, the API): follow it here too
  } else if (!lastTask || lastTask.id !== newest.id || lastTask.state !== newest.state) {
    lastTask = newest;
    renderTask(newest);
  }
}

async function load() {
  if (gone) return;
  try {
    vm = await get(path);
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) {
      gone = true;
      $('[data-testid="vm-title"]').textContent = 'VM not found';
      fill($('[data-testid="vm-actions"]'));
    }
    throw error;
  }
  renderVM();
  updateInterfaces(vm);
  await Promise.all([loadTasks(),
    updateRecipes(vm).catch((error) => showError(error, 'Loading recipes')),
    updateSnapshots(vm).catch((error) => showError(error, 'Loading snapshots')),
    updateBackups(vm).catch((error) => showError(error, 'Loading backups'))]);
}

// -- migration to another node --------------------------------------------------------------
const migratePanel = $('[data-testid="migrate-panel"]');
const migrateTarget = $('[data-testid="migrate-target"]', migratePanel);
const migrateResult = $('[data-testid="migrate-result"]', migratePanel);
const migrateSubmit = $('[data-testid="migrate-submit"]', migratePanel);
const migrateCheckButton = $('[data-testid="migrate-check"]', migratePanel);

function migrateButton() {
  const single = lookups.nodes.length < 2;
  const busyState = ['creating', 'deleting'].includes(vm.state);
  return el('button', {
    type: 'button', testid: 'vm-migrate', 'aria-expanded': String(!migratePanel.hidden),
    disabled: single || busyState || Boolean(followed),
    title: single ? 'The cluster has a single node: add a node to migrate VMs'
      : 'Move the VM to another node',
    onclick: () => openMigrate(),
  }, 'Migrate…');
}

const nodeLabel = (n) => {
  const reason = n.status !== 'online' && n.status_reason ? ` (${n.status_reason})` : '';
  return `${n.name} — ${n.status}${reason}`;
};

function closeMigrate() {
  migratePanel.hidden = true;
  const button = $('[data-testid="vm-migrate"]');
  if (button) button.setAttribute('aria-expanded', 'false');
}

function resetMigrateResult() {
  migrateResult.hidden = true;
  migrateResult.className = 'migrate-result';
  fill(migrateResult);
}

function showProblems(target, problems) {
  migrateResult.className = 'migrate-result migrate-bad';
  fill(migrateResult,
    el('strong', { testid: 'migrate-refused' }, `${vm.name} cannot move to ${target.name}:`),
    el('ul', { class: 'problems' }, problems.map((p) => el('li', { testid: 'migrate-problem' }, p))));
  migrateResult.hidden = false;
}

async function openMigrate() {
  clearError();
  migratePanel.hidden = false;
  const button = $('[data-testid="vm-migrate"]');
  if (button) button.setAttribute('aria-expanded', 'true');
  try {
    lookups.nodes = await items('/nodes');
  } catch (error) {
    showError(error, 'Loading nodes');
  }
  const previous = migrateTarget.value;
  const others = lookups.nodes.filter((n) => n.id !== vm.node);
  const rank = (n) => (n.status === 'online' ? 0 : n.status === 'maintenance' ? 1 : 2);
  others.sort((a, b) => rank(a) - rank(b) || a.name.localeCompare(b.name));
  fill(migrateTarget, others.length ? others.map((n) => el('option', {
    value: n.id, dataset: { status: n.status }, selected: n.id === previous,
  }, nodeLabel(n))) : el('option', { value: '' }, 'no other node'));
  migrateTarget.disabled = !others.length;
  migrateCheckButton.disabled = !others.length;
  migrateSubmit.disabled = !others.length || Boolean(followed);
  resetMigrateResult();
  migrateTarget.focus();
}

const chosenTarget = () => lookups.nodes.find((n) => n.id === migrateTarget.value);

async function checkMigration() {
  const target = chosenTarget();
  if (!target) return;
  const answer = await busy(migrateCheckButton, () =>
    get(`${path}/migration-check?node=${encodeURIComponent(target.id)}`), 'Migration check');
  if (!answer || migrateTarget.value !== target.id) return;
  if (answer.ok) {
    migrateResult.className = 'migrate-result migrate-ok';
    fill(migrateResult, el('strong', { testid: 'migrate-ok' }, `✓ ${target.name} can take ${vm.name}.`),
      ' ', vm.state === 'running' ? 'It moves while it runs (live migration).'
        : 'It is not running: its definition and disks move.');
    migrateResult.hidden = false;
  } else {
    showProblems(target, answer.problems || []);
  }
}

async function migrate() {
  const target = chosenTarget();
  if (!target) return;
  let task = null;
  migrateSubmit.disabled = true;
  clearError();
  try {
    task = (await post(`${path}/actions/migrate`, { node: target.id })).task;
  } catch (error) {
    if (error instanceof ApiError && error.code === 'migration_refused') {
      showProblems(target, error.details.length ? error.details.map(String) : [error.message]);
    } else {
      showError(error, `Migrate ${vm.name}`);
    }
    return;
  } finally {
    if (!task) migrateSubmit.disabled = false;
  }
  closeMigrate();
  showNotice(`Migrating ${vm.name} to ${target.name}…`);
  const final = await follow(task);
  if (final && final.state === 'succeeded') {
    showNotice(`${vm.name} now runs on ${nameOf(lookups.nodes, vm.node)}`);
  }
}

migrateTarget.addEventListener('change', resetMigrateResult);
migrateCheckButton.addEventListener('click', checkMigration);
migrateSubmit.addEventListener('click', migrate);
$('[data-testid="migrate-cancel"]', migratePanel).addEventListener('click', closeMigrate);
$('[data-testid="migrate-close"]', migratePanel).addEventListener('click', closeMigrate);

// -- serial console ------------------------------------------------------------------------
const consoleBox = $('[data-testid="console"]');
const consoleNote = $('[data-testid="console-note"]');
let consoleAvailable = true;

function note(text) {
  consoleNote.textContent = text;
  consoleNote.hidden = false;
  consoleBox.hidden = true;
}

/**
 * Why this VM can have no serial log, or null when it can: the panel writes serial logs only
 * for VMs on its local node (not on libvirt's test driver) and reads them only there.
 */
async function noConsoleReason() {
  const node = lookups.nodes.find((n) => n.id === vm.node)
    || await get(`/nodes/${encodeURIComponent(vm.node)}`);
  if (node.kind === 'demo' || (node.uri || '').startsWith('test:')) {
    return `its node ${node.name} is a demo node on libvirt's test driver, where no guest really runs`;
  }
  if (node.kind !== 'local') {
    return `the panel keeps serial logs only for VMs on its local node, and ${node.name} is a remote node`;
  }
  return null;
}

async function loadConsole() {
  if (gone || !vm) return;
  const reason = await noConsoleReason();
  if (reason) {
    note(`The serial console is not available for this VM: ${reason}.`);
    return;
  }
  try {
    const { text } = await get(`${path}/console`);
    consoleAvailable = true;
    if (!text) {
      note('The console log is empty: the guest has not written to its serial port yet.');
      return;
    }
    const lines = text.split('\n');
    const atBottom = consoleBox.scrollTop + consoleBox.clientHeight >= consoleBox.scrollHeight - 4;
    consoleBox.textContent = lines.slice(-400).join('\n');
    consoleBox.hidden = false;
    consoleNote.hidden = true;
    if (atBottom) consoleBox.scrollTop = consoleBox.scrollHeight;
  } catch (error) {
    consoleAvailable = false;
    if (error instanceof ApiError && error.status === 422) {
      note(`The serial console is not available for this VM: ${error.message}.`);
    } else {
      note(`Could not read the serial console: ${error.message}` +
        (error instanceof ApiError ? ` (${error.code}).` : '.'));
    }
  }
}

$('[data-testid="console-refresh"]').addEventListener('click', (event) =>
  busy(event.currentTarget, loadConsole, 'Serial console'));

async function start() {
  [lookups.templates, lookups.nodes, lookups.storages] = await Promise.all([
    items('/vm-templates'), items('/nodes'), items('/storages')]);
  await setUpInterfaces(path, load).catch((error) => showError(error, 'Loading networks'));
  setUpRecipes(path, follow);
  setUpSnapshots(path, () => load());
  await setUpBackups(vmId, () => load()).catch((error) => showError(error, 'Loading backup targets'));
  await every(4000, load, 'Loading the VM');
  await loadConsole();
  setInterval(() => {
    if (!document.hidden && consoleAvailable && vm && vm.state === 'running') loadConsole();
  }, 5000);
}

start().catch((error) => showError(error, 'Loading the VM'));
