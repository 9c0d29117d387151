// The OS templates page's repositories (admins): the list with Refresh, Refresh + update
// and Remove, and the add form whose option fields come from the chosen source's
// options_schema (GET /os-template-sources), so a third-party source gets its form too.

import { del, items, post } from './api.js';
import { $, el, fill, fmtAgo } from './dom.js';
import { renderSchemaForm } from './schema_form.js';
import { busy, clearError, errorView, followTask, showError, showNotice } from './ui.js';

const encode = encodeURIComponent;
const form = $('#add-repo');
let sources = [];
let repoOptions = null;
let reload = async () => {};

function optionText(options) {
  const entries = Object.entries(options || {});
  if (!entries.length) return '—';
  return entries.map(([key, value]) => `${key}: ${typeof value === 'string' ? value : JSON.stringify(value)}`).join(', ');
}

/** What a refresh task's result says: "1 added, 0 changed, 0 removed" (+ re-imports). */
function refreshText(result) {
  const r = result || {};
  const count = (key) => (r[key] || []).length;
  const updated = r.updated ? `, ${r.updated.length} re-imported` : '';
  const kept = (r.kept || []).length ? `; kept: ${r.kept.map((k) => `${k.template} (${k.reason})`).join(', ')}` : '';
  return `${count('added')} added, ${count('changed')} changed, ${count('removed')} removed${updated}${kept}`;
}

export function renderRepos(repos) {
  const rows = $('#repo-rows');
  if (!rows) return;
  if (!repos.length) {
    fill(rows, el('tr', null, el('td', { colspan: 6, class: 'muted', testid: 'no-repos' }, 'No repositories yet.')));
    return;
  }
  fill(rows, repos.map((r) => el('tr', { testid: 'repo-row', dataset: { name: r.name, repoId: r.id } },
    el('td', null, el('strong', null, r.name), r.description ? el('div', { class: 'muted' }, r.description) : null),
    el('td', { testid: 'repo-source' }, r.source),
    el('td', { class: 'options' }, optionText(r.options)),
    el('td', { class: 'num', testid: 'repo-templates' }, String(r.templates)),
    el('td', { testid: 'repo-refreshed' }, fmtAgo(r.refreshed),
      r.error ? errorView(r.error, { testid: 'repo-error' }) : null),
    el('td', { class: 'actions' },
      el('button', {
        type: 'button', class: 'btn-small', testid: 'repo-refresh', title: 'Read the index again',
        onclick: (event) => refreshRepo(r, false, event.currentTarget),
      }, 'Refresh'),
      el('button', {
        type: 'button', class: 'btn-small', testid: 'repo-update',
        title: 'Read the index again and re-import the templates whose file changed (those no VM uses)',
        onclick: (event) => refreshRepo(r, true, event.currentTarget),
      }, 'Refresh + update'),
      el('button', {
        type: 'button', class: 'btn-small btn-danger', testid: 'repo-remove',
        onclick: (event) => removeRepo(r, event.currentTarget),
      }, 'Remove')))));
}

async function refreshRepo(repo, update, button) {
  const answer = await busy(button, () => post(`/os-template-repos/${encode(repo.id)}/actions/refresh`,
    update ? { update: true } : {}), `Refresh repository ${repo.name}`);
  if (!answer) return;
  button.disabled = true;
  let final = null;
  try {
    final = await followTask(answer.task);
  } catch {
    final = null;
  } finally {
    if (button.isConnected) button.disabled = false;
  }
  await reload().catch((error) => showError(error, 'Loading OS templates'));
  if (final && final.state === 'succeeded') {
    showNotice(`Repository ${repo.name} refreshed: ${refreshText(final.result)}`);
  }
}

async function removeRepo(repo, button) {
  if (!window.confirm(`Remove repository ${repo.name}? The templates imported from it stay.`)) return;
  const done = await busy(button, async () => {
    await del(`/os-template-repos/${encode(repo.id)}`);
    return true;
  }, `Remove repository ${repo.name}`);
  if (done) {
    showNotice(`Repository ${repo.name} removed`);
    await reload();
  }
}

function selectSource() {
  const source = sources.find((s) => s.id === form.elements.source.value);
  $('[data-testid="repo-source-description"]').textContent = source ? source.description || '' : '';
  repoOptions = renderSchemaForm($('[data-testid="repo-options"]', form), source ? source.options_schema : {},
    { idPrefix: 'repo-opt', emptyText: 'This source has no options.' });
}

async function addRepo(event) {
  event.preventDefault();
  const button = $('[data-testid="add-repo-submit"]', form);
  const name = form.elements.name.value.trim();
  const made = await busy(button, () => {
    const body = { name, source: form.elements.source.value, options: repoOptions.read() };
    const description = form.elements.description.value.trim();
    if (description) body.description = description;
    return post('/os-template-repos', body);
  }, `Add repository ${name}`);
  if (!made) return;
  clearError();
  showNotice(`Repository ${made.name} added: ${made.templates} template${made.templates === 1 ? '' : 's'}`);
  const source = form.elements.source.value;
  form.reset();
  form.elements.source.value = source;
  selectSource();
  await reload();
}

/** Load the source kinds and wire the add form; ``load()`` reloads the page's data. */
export async function setUpRepos(load) {
  if (!form) return;
  reload = load;
  sources = await items('/os-template-sources');
  fill(form.elements.source, sources.map((s) => el('option', { value: s.id }, s.name)));
  form.elements.source.addEventListener('change', selectSource);
  selectSource();
  form.addEventListener('submit', addRepo);
}
