// OS templates: the imported ones (everyone sees the ready ones); for admins the
// repositories' catalog with an Import button per entry (the import task's progress: bytes
// and percent), an upload form (metadata first, then the file with upload progress) and
// the repositories (added with a form built from the source kind's options_schema): those
// two live in os_template_upload.js and os_template_repos.js.

import { FINAL_STATES, del, get, items, post } from './api.js';
import { $, badge, el, fill, fmtBytes, progressBar } from './dom.js';
import { fillUploadStorages, setUpUpload, showImportProgress } from './os_template_upload.js';
import { renderRepos, setUpRepos } from './os_template_repos.js';
import {
  busy, changed, clearError, errorView, every, followTask, isAdmin, lastLogLine, showError, showNotice,
} from './ui.js';

const data = { templates: [], catalog: [], storages: [], repos: [] };
const tasks = new Map(); // OS template id -> its import task as last seen
const watching = new Map(); // task id -> the promise of following it to its end
const chosenStorage = new Map(); // catalog entry id -> storage chosen in its row

const encode = encodeURIComponent;
const nameOf = (list, id) => (list.find((x) => x.id === id) || {}).name || id || '—';

function osText(t) {
  return [t.os_family, t.os_version].filter(Boolean).join(' ') || '—';
}

function tagList(tags) {
  if (!tags || !tags.length) return el('span', { class: 'muted' }, '—');
  return el('span', { class: 'tag-list', testid: 'tags' }, tags.map((t) => el('span', { class: 'tag' }, t)));
}

/** Progress of an import task: the bar and "42% · downloaded 3.0 of 12.0 MiB". */
function taskProgress(task, testid) {
  const percent = Math.round(task.progress || 0);
  const message = lastLogLine(task);
  return el('div', { class: 'row-task', testid },
    progressBar(task.progress, { tone: `task-${task.state}`, label: task.name, testid: `${testid}-bar` }),
    el('small', { testid: `${testid}-text` }, `${percent}%${message ? ` · ${message}` : ''}`));
}

// -- the templates -------------------------------------------------------------------------
function stateCell(t) {
  const cell = el('td', { class: 'state-cell' }, badge(t.state, { testid: 'os-template-state' }));
  const task = tasks.get(t.id);
  if (task && !FINAL_STATES.includes(task.state)) {
    cell.append(taskProgress(task, 'os-template-progress'));
  } else if (t.state === 'uploading') {
    cell.append(el('small', { class: 'muted' }, 'waiting for its file'));
  } else if (t.state === 'receiving') {
    cell.append(progressBar(t.progress, { tone: 'task-running', label: 'receiving' }),
      el('small', { class: 'muted' }, `receiving the file: ${Math.round(t.progress || 0)}%`));
  }
  if (t.state === 'failed' && t.error) cell.append(errorView(t.error, { testid: 'os-template-error' }));
  return cell;
}

const CONFIG_TEXT = { 'cloud-init': 'cloud-init', script: 'its own script', none: 'not configured' };

function renderTemplates() {
  const rows = $('#os-template-rows');
  const columns = isAdmin ? 7 : 6;
  if (!data.templates.length) {
    fill(rows, el('tr', null, el('td', { colspan: columns, class: 'muted', testid: 'no-os-templates' },
      isAdmin ? 'No OS templates yet: import one from a repository or upload one below.'
        : 'No OS templates are ready yet; an administrator adds them.')));
    return;
  }
  fill(rows, data.templates.map((t) => el('tr', {
    testid: 'os-template-row', dataset: { name: t.name, templateId: t.id, state: t.state },
  },
  el('td', null, el('strong', null, t.name), t.kind === 'iso' ? el('span', { class: 'tag' }, 'iso') : null,
    t.description ? el('div', { class: 'muted' }, t.description) : null,
    isAdmin && t.origin ? el('div', { class: 'muted small' },
      t.origin === 'repo' ? `from ${nameOf(data.repos, t.repo)}` : 'uploaded') : null),
  el('td', null, osText(t), t.arch ? el('div', { class: 'muted small' }, t.arch) : null,
    t.kind !== 'iso' && t.config ? el('div', { class: 'muted small', testid: 'os-template-config' },
      CONFIG_TEXT[t.config] || t.config) : null),
  el('td', null, tagList(t.tags)),
  el('td', null, nameOf(data.storages, t.storage)),
  stateCell(t),
  el('td', { class: 'num', testid: 'os-template-size' }, fmtBytes(t.size),
    t.virtual_size ? el('div', { class: 'muted small' }, `${fmtBytes(t.virtual_size)} virtual`) : null),
  isAdmin ? el('td', { class: 'actions' }, el('button', {
    type: 'button', class: 'btn-small btn-danger', testid: 'os-template-delete',
    disabled: ['importing', 'receiving'].includes(t.state),
    onclick: (event) => removeTemplate(t, event.currentTarget),
  }, 'Delete')) : null)));
}

async function removeTemplate(t, button) {
  if (!window.confirm(`Delete OS template ${t.name} and its volume?`)) return;
  const done = await busy(button, async () => {
    await del(`/os-templates/${encode(t.id)}`);
    return true;
  }, `Delete OS template ${t.name}`);
  if (done) {
    showNotice(`OS template ${t.name} deleted`);
    await load();
  }
}

// -- the catalog (admins) ---------------------------------------------------------------
function storageSelect(entry) {
  const usable = data.storages.filter((s) => Object.keys(s.nodes || {}).length);
  const select = el('select', {
    class: 'compact', testid: 'catalog-storage', 'aria-label': `Storage for ${entry.name}`,
    onchange: (event) => chosenStorage.set(entry.id, event.currentTarget.value),
  }, usable.map((s) => el('option', { value: s.id }, `${s.name} (${s.backend})`)));
  const keep = chosenStorage.get(entry.id);
  if (keep && usable.some((s) => s.id === keep)) select.value = keep;
  return select;
}

function importCell(entry) {
  const record = entry.imported ? data.templates.find((t) => t.id === entry.imported) : null;
  const task = record ? tasks.get(record.id) : null;
  if (task && !FINAL_STATES.includes(task.state)) return taskProgress(task, 'import-progress');
  if (record && record.state !== 'failed') {
    return el('span', { testid: 'catalog-imported' },
      badge(record.state === 'ready' ? 'imported' : record.state, { testid: 'catalog-state' }),
      entry.update_available ? el('span', { class: 'tag tag-demo', testid: 'update-available',
        title: 'The repository has a newer file: refresh the repository with "update"' }, 'update available') : null);
  }
  const select = storageSelect(entry);
  const button = el('button', {
    type: 'button', class: 'btn-small', testid: 'catalog-import', disabled: !select.options.length,
    onclick: (event) => importEntry(entry, select.value, event.currentTarget),
  }, record ? 'Import again' : 'Import');
  return el('div', { class: 'inline-controls' }, select, button,
    record ? el('small', { class: 'error-text', testid: 'catalog-failed' },
      `last import failed: ${(record.error || {}).message || 'unknown error'}`) : null);
}

function renderCatalog() {
  const rows = $('#catalog-rows');
  if (!rows) return;
  if (!data.catalog.length) {
    fill(rows, el('tr', null, el('td', { colspan: 6, class: 'muted', testid: 'no-catalog' },
      data.repos.length ? 'The repositories list no templates.' : 'Add a repository below to see its templates here.')));
    return;
  }
  fill(rows, data.catalog.map((entry) => el('tr', {
    testid: 'catalog-row', dataset: { name: entry.name, repo: entry.repo_name, entryId: entry.id },
  },
  el('td', null, el('strong', null, entry.name), entry.kind === 'iso' ? el('span', { class: 'tag' }, 'iso') : null,
    entry.description ? el('div', { class: 'muted' }, entry.description) : null),
  el('td', null, entry.repo_name),
  el('td', null, osText(entry), entry.arch ? el('div', { class: 'muted small' }, entry.arch) : null),
  el('td', null, tagList(entry.tags)),
  el('td', { class: 'num' }, fmtBytes(entry.size),
    entry.compression && entry.compression !== 'none' ? el('div', { class: 'muted small' }, entry.compression) : null),
  el('td', { class: 'import-cell' }, importCell(entry)))));
}

/**
 * Follow an import task (its subject is the OS template); the rows show its progress.
 * Every caller following the same task gets the same promise (of the final task).
 */
function track(task) {
  if (!watching.has(task.id)) watching.set(task.id, follow(task));
  return watching.get(task.id);
}

async function follow(task) {
  const subject = task.subject;
  tasks.set(subject, task);
  render(true);
  let final = null;
  try {
    final = await followTask(task, {
      onUpdate: (current) => {
        tasks.set(subject, current);
        render(true);
        showImportProgress(subject, current);
      },
    });
  } catch {
    final = null;
  }
  await load().catch((error) => showError(error, 'Loading OS templates'));
  return final;
}

async function importEntry(entry, storage, button) {
  const answer = await busy(button, () => post('/os-templates', { repo: entry.repo, entry: entry.entry, storage }),
    `Import ${entry.name}`);
  if (!answer) return;
  clearError();
  showNotice(`Importing ${entry.name} from ${entry.repo_name}…`);
  const following = track(answer.task);
  await load().catch((error) => showError(error, 'Loading OS templates'));
  const final = await following;
  if (final && final.state === 'succeeded') showNotice(`OS template ${entry.name} is ready`);
}

// -- loading ----------------------------------------------------------------------------
function render(force = false) {
  const key = [data, [...tasks]];
  if (!changed('os-templates', key) && !force) return;
  renderTemplates();
  if (isAdmin) {
    renderCatalog();
    renderRepos(data.repos);
  }
}

async function load() {
  const [listing, storages, repos] = await Promise.all([
    get('/os-templates'), items('/storages').catch(() => []),
    isAdmin ? items('/os-template-repos') : []]);
  data.templates = listing.items;
  data.catalog = listing.available || [];
  data.storages = storages;
  data.repos = repos;
  if (isAdmin) fillUploadStorages(storages);
  render();
  // Imports started elsewhere (another tab, the API, before a reload): follow them here too.
  for (const t of data.templates) {
    if (t.state === 'importing' && t.task && !watching.has(t.task)) {
      get(`/tasks/${encode(t.task)}`).then((task) => {
        if (!FINAL_STATES.includes(task.state)) track(task);
      }).catch(() => {});
    }
  }
}

if (isAdmin) {
  setUpRepos(load).catch((error) => showError(error, 'Loading OS template sources'));
  setUpUpload({ load, track });
}
every(10000, load, 'Loading OS templates');
