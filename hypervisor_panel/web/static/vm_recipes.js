// The VM page's guest OS parts: the Recipes section (run a recipe with its parameters
// form; the runs with state, exit code and their logs, live while they run) and the
// Reinstall panel (template, optional recipe, keys and password; confirmed first).
//
// Secrets: the API masks secret parameter values in runs and logs; typed secrets and
// passwords are cleared from the inputs once sent.

import { get, items, post } from './api.js';
import { $, badge, el, fill, fmtDuration, fmtTime } from './dom.js';
import { compatibleRecipes, fillRecipeSelect, renderParams } from './recipe_params.js';
import { busy, clearError, errorView, showError, showNotice } from './ui.js';

const encode = encodeURIComponent;
const card = $('[data-testid="vm-recipes-card"]');
const runForm = $('#run-recipe');
const runNote = $('[data-testid="run-recipe-note"]', card);
const runList = $('[data-testid="recipe-runs"]', card);
const panel = $('[data-testid="reinstall-panel"]');
const reinstallForm = $('#reinstall-form');

let path = '';
let vm = null;
let follow = async () => null; // the page's task follower (its "Last task" panel)
let runParams = { read: () => ({}) };
let reinstallParams = { read: () => ({}) };
let runRecipes = [];
let reinstallRecipes = [];
let osTemplates = [];
const UNLOADED = Symbol('unloaded');
let recipesFor = UNLOADED; // the os_template ('' for none) the run form's recipes were loaded for
let fastPoll = null;
const runNodes = new Map(); // run id -> {node, logCount, ...}

const ACTIVE = ['queued', 'running'];
const TASK_LOG_LINES = 200; // a task keeps its last 200 log lines
const STAMP = /^\d\d:\d\d:\d\d /; // the time stamp of a task log line

// -- the runs ---------------------------------------------------------------------------
function paramList(params) {
  const entries = Object.entries(params || {});
  if (!entries.length) return el('span', { class: 'muted' }, 'no parameters');
  // Secret values arrive masked ("********"): they are shown as the API gives them.
  return el('span', { class: 'param-values', testid: 'run-params' },
    entries.map(([key, value]) => el('code', { dataset: { param: key } }, `${key}=${value}`)));
}

function buildRun(run) {
  const summary = el('summary', { class: 'run-head' });
  const body = el('div', { class: 'run-body' });
  const log = el('pre', { class: 'log', testid: 'run-log' });
  const node = el('details', { class: 'recipe-run', testid: 'recipe-run', dataset: { runId: run.id } },
    summary, body, log);
  return { node, summary, body, log, logCount: 0, lastLine: undefined, key: '' };
}

function updateRun(entry, run) {
  const { node, summary, body, log } = entry;
  node.dataset.state = run.state;
  node.dataset.name = run.name;
  const key = JSON.stringify([run.state, run.exit_code, run.error, run.started, run.finished, run.params]);
  if (key !== entry.key) {
    entry.key = key;
    const duration = run.started ? fmtDuration((run.finished || Date.now() / 1000) - run.started) : '';
    fill(summary,
      el('strong', { testid: 'run-name' }, run.name),
      el('span', { class: 'muted' }, `rev. ${run.revision}`),
      badge(run.state, { task: true, testid: 'run-state' }),
      el('span', { class: 'muted', testid: 'run-exit-code' },
        run.exit_code === null || run.exit_code === undefined ? 'exit code —' : `exit code ${run.exit_code}`),
      el('span', { class: 'muted run-time' }, fmtTime(run.started || run.created),
        duration && !ACTIVE.includes(run.state) ? ` · ${duration}` : ''));
    fill(body,
      el('div', null, paramList(run.params)),
      run.error && run.state !== 'cancelled' ? errorView(run.error, { testid: 'run-error' }) : null,
      ACTIVE.includes(run.state) && run.task ? el('button', {
        type: 'button', class: 'btn-small btn-warn', testid: 'run-cancel',
        onclick: (event) => cancelRun(run, event.currentTarget),
      }, 'Cancel') : null);
  }
  // The log grows while the recipe runs: append only the new lines (the scroll position and
  // any selection stay); a log that changed otherwise (trimmed, or the record replacing the task's) is redrawn.
  const lines = run.log || [];
  const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
  const grown = entry.logCount > 0 && lines.length >= entry.logCount
    && lines[entry.logCount - 1] === entry.lastLine;
  if (!grown) {
    log.textContent = lines.length ? lines.join('\n') : (ACTIVE.includes(run.state) ? 'waiting for output…' : '(no output)');
  } else if (lines.length > entry.logCount) {
    log.append(document.createTextNode(`\n${lines.slice(entry.logCount).join('\n')}`));
  }
  entry.logCount = lines.length;
  entry.lastLine = lines[lines.length - 1];
  if (atBottom) log.scrollTop = log.scrollHeight;
}

function renderRuns(runs) {
  if (!runs.length) {
    runNodes.clear();
    fill(runList, el('p', { class: 'muted', testid: 'no-runs' }, 'No recipe has run on this VM yet.'));
    return;
  }
  const seen = new Set();
  const nodes = runs.map((run, index) => {
    let entry = runNodes.get(run.id);
    if (!entry) {
      entry = buildRun(run);
      entry.node.open = index === 0 || ACTIVE.includes(run.state); // the newest is open
      runNodes.set(run.id, entry);
    }
    updateRun(entry, run);
    seen.add(run.id);
    return entry.node;
  });
  for (const id of [...runNodes.keys()]) if (!seen.has(id)) runNodes.delete(id);
  fill(runList, nodes);
}

/**
 * An active run's output as its task streams it. The run record keeps its lines (up to
 * 2000) but is saved about once a second, and only when a line comes; the task log has
 * every line at once (the last TASK_LOG_LINES). While the task log still holds the whole
 * output, it is the live one.
 */
async function withLiveLog(run) {
  if (!ACTIVE.includes(run.state) || !run.task) return run;
  let task = null;
  try {
    task = await get(`/tasks/${encode(run.task)}`);
  } catch {
    return run; // not visible to this user: the run record alone
  }
  const lines = (task.log || []).map((line) => String(line).replace(STAMP, ''));
  const saved = run.log || [];
  // The record may not say "running" yet when the task already does.
  const state = run.state === 'queued' && task.state === 'running' ? 'running' : run.state;
  if (lines.length >= TASK_LOG_LINES || lines.length < saved.length) return { ...run, state };
  return { ...run, state, log: lines };
}

async function loadRuns() {
  if (!vm) return;
  const runs = await Promise.all((await items(`${path}/recipe-runs`)).map(withLiveLog));
  renderRuns(runs);
  const active = runs.some((r) => ACTIVE.includes(r.state));
  if (active && !fastPoll) {
    fastPoll = setInterval(() => {
      if (!document.hidden) loadRuns().catch((error) => showError(error, 'Loading recipe runs'));
    }, 1500);
  } else if (!active && fastPoll) {
    clearInterval(fastPoll);
    fastPoll = null;
  }
}

async function cancelRun(run, button) {
  const done = await busy(button, () => post(`/tasks/${encode(run.task)}/actions/cancel`, {}),
    `Cancel recipe ${run.name}`);
  if (done) {
    showNotice(`Cancelling recipe ${run.name}…`);
    await loadRuns();
  }
}

// -- run a recipe -----------------------------------------------------------------------
async function templateTags(templateId) {
  if (!templateId) return null;
  try {
    return (await get(`/os-templates/${encode(templateId)}`)).tags || [];
  } catch {
    return null; // the template is gone (or not ready): no compatibility to check
  }
}

async function recipesForVM() {
  const tags = await templateTags(vm.os_template);
  if (tags === null) return (await items('/recipes')).filter((r) => r.usable !== false);
  return compatibleRecipes(tags);
}

function runRecipeChanged() {
  const recipe = runRecipes.find((r) => r.id === runForm.elements.recipe.value) || null;
  runParams = renderParams($('[data-testid="run-recipe-params"]', runForm), recipe, { idPrefix: 'run-param' });
}

async function refreshRunForm() {
  if (recipesFor === (vm.os_template || '')) return;
  recipesFor = vm.os_template || '';
  const submit = $('[data-testid="run-recipe-submit"]', runForm);
  if (!vm.os_template) {
    runRecipes = [];
    fill(runForm.elements.recipe, el('option', { value: '' }, 'no recipe can run here'));
    runForm.elements.recipe.disabled = true;
    submit.disabled = true;
    runNote.textContent = `${vm.name} was not installed from an OS template, so the panel has no key to log in to it and cannot run recipes. Reinstall it from an OS template first.`;
    runNote.hidden = false;
    runRecipeChanged();
    return;
  }
  runNote.hidden = true;
  try {
    runRecipes = await recipesForVM();
  } catch (error) {
    recipesFor = UNLOADED; // try again with the next refresh
    throw error;
  }
  fillRecipeSelect(runForm.elements.recipe, runRecipes, { none: 'Choose a recipe…', emptyText: 'no recipe suits this VM\'s OS' });
  runForm.elements.recipe.disabled = !runRecipes.length;
  submit.disabled = !runRecipes.length;
  runRecipeChanged();
}

async function runRecipe(event) {
  event.preventDefault();
  const recipe = runRecipes.find((r) => r.id === runForm.elements.recipe.value);
  if (!recipe) return;
  const button = $('[data-testid="run-recipe-submit"]', runForm);
  const answer = await busy(button, () => post(`${path}/actions/run-recipe`,
    { recipe: recipe.id, params: runParams.read() }), `Run recipe ${recipe.name} on ${vm.name}`);
  if (!answer) return;
  clearError();
  showNotice(`Recipe ${recipe.name} started on ${vm.name}`);
  runRecipeChanged(); // a fresh parameters form: typed secrets go
  await loadRuns().catch((error) => showError(error, 'Loading recipe runs'));
  await follow(answer.task);
  await loadRuns().catch((error) => showError(error, 'Loading recipe runs'));
}

// -- reinstall ----------------------------------------------------------------------------
/** The Reinstall… button of the page head (disabled while a task runs). */
export function reinstallButton(current, disabled) {
  const busyState = ['creating', 'deleting'].includes(current.state);
  return el('button', {
    type: 'button', testid: 'vm-reinstall', 'aria-expanded': String(!panel.hidden),
    disabled: disabled || busyState,
    title: 'Replace the disk with a fresh clone of an OS template',
    onclick: () => openReinstall(),
  }, 'Reinstall…');
}

function closeReinstall() {
  panel.hidden = true;
  reinstallForm.elements.password.value = '';
  const button = $('[data-testid="vm-reinstall"]');
  if (button) button.setAttribute('aria-expanded', 'false');
}

async function openReinstall() {
  clearError();
  panel.hidden = false;
  const button = $('[data-testid="vm-reinstall"]');
  if (button) button.setAttribute('aria-expanded', 'true');
  try {
    osTemplates = (await items('/os-templates')).filter((t) => t.state === 'ready' && t.kind !== 'iso');
  } catch (error) {
    showError(error, 'Loading OS templates');
    osTemplates = [];
  }
  const select = reinstallForm.elements.os_template;
  const keep = select.value || vm.os_template;
  const sorted = [...osTemplates].sort((a, b) => a.name.localeCompare(b.name));
  fill(select, sorted.length ? sorted.map((t) => el('option', {
    value: t.id, disabled: t.storage !== vm.storage, dataset: { name: t.name },
  }, `${t.name} (${[t.os_family, t.os_version].filter(Boolean).join(' ')})${t.storage !== vm.storage ? ' — in another storage' : ''}`))
    : el('option', { value: '' }, 'no OS template is ready'));
  const usable = sorted.filter((t) => t.storage === vm.storage);
  select.value = usable.some((t) => t.id === keep) ? keep : (usable[0] || {}).id || '';
  $('[data-testid="reinstall-submit"]', reinstallForm).disabled = !usable.length;
  $('[data-testid="reinstall-note"]', reinstallForm).textContent = usable.length ? ''
    : 'No ready OS template lives in this VM\'s storage: import one there first.';
  await reinstallTemplateChanged();
  select.focus();
}

async function reinstallTemplateChanged() {
  const template = osTemplates.find((t) => t.id === reinstallForm.elements.os_template.value);
  reinstallRecipes = template ? await compatibleRecipes(template.tags).catch(() => []) : [];
  fillRecipeSelect(reinstallForm.elements.recipe, reinstallRecipes);
  reinstallForm.elements.recipe.disabled = !reinstallRecipes.length;
  reinstallRecipeChanged();
}

function reinstallRecipeChanged() {
  const recipe = reinstallRecipes.find((r) => r.id === reinstallForm.elements.recipe.value) || null;
  reinstallParams = renderParams($('[data-testid="reinstall-recipe-params"]', reinstallForm), recipe,
    { idPrefix: 'reinstall-param' });
}

async function reinstall(event) {
  event.preventDefault();
  const template = osTemplates.find((t) => t.id === reinstallForm.elements.os_template.value);
  if (!template) return;
  if (!window.confirm(`Reinstall ${vm.name} from ${template.name}? Its disk is replaced: everything on it is lost.`)) return;
  const button = $('[data-testid="reinstall-submit"]', reinstallForm);
  const answer = await busy(button, () => {
    const body = { os_template: template.id };
    const keys = reinstallForm.elements.ssh_keys.value.split('\n').map((l) => l.trim()).filter(Boolean);
    if (keys.length) body.ssh_keys = keys;
    if (reinstallForm.elements.password.value) body.password = reinstallForm.elements.password.value;
    if (reinstallForm.elements.recipe.value) {
      body.recipe = reinstallForm.elements.recipe.value;
      const params = reinstallParams.read();
      if (Object.keys(params).length) body.recipe_params = params;
    }
    return post(`${path}/actions/reinstall`, body);
  }, `Reinstall ${vm.name}`);
  if (!answer) return;
  closeReinstall();
  reinstallRecipeChanged();
  showNotice(`Reinstalling ${vm.name} from ${template.name}…`);
  const final = await follow(answer.task);
  recipesFor = UNLOADED; // the VM's OS template may have changed
  await loadRuns().catch((error) => showError(error, 'Loading recipe runs'));
  if (final && final.state === 'succeeded') showNotice(`${vm.name} was reinstalled from ${template.name}`);
}

// -- wiring -----------------------------------------------------------------------------
/** Set the sections up once; ``followTask(task)`` follows a task in the page's panel. */
export function setUpRecipes(vmPath, followTask) {
  path = vmPath;
  follow = followTask;
  runForm.addEventListener('submit', runRecipe);
  runForm.elements.recipe.addEventListener('change', runRecipeChanged);
  reinstallForm.addEventListener('submit', reinstall);
  reinstallForm.elements.os_template.addEventListener('change', () => {
    reinstallTemplateChanged().catch((error) => showError(error, 'Loading recipes'));
  });
  reinstallForm.elements.recipe.addEventListener('change', reinstallRecipeChanged);
  $('[data-testid="reinstall-cancel"]', panel).addEventListener('click', closeReinstall);
  $('[data-testid="reinstall-close"]', panel).addEventListener('click', closeReinstall);
}

/** The VM as the page last loaded it: refresh the recipe choice (when its OS changed) and the runs. */
export async function updateRecipes(current) {
  vm = current;
  await Promise.all([refreshRunForm(), loadRuns()]);
}
