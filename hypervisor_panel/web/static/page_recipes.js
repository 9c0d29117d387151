// Recipes: the list (tags, parameters, access), one recipe's script (read-only) and
// parameters, editing (the script of an uploaded recipe; any recipe's access), adding and
// deleting; for admins the recipe sources (folders, URLs) and the recipe settings.

import { api, del, get, items, post } from './api.js';
import { $, definitionList, el, fill, fmtAgo, fmtDuration, fmtTime } from './dom.js';
import { renderSchemaForm } from './schema_form.js';
import { busy, changed, clearError, every, followTask, isAdmin, showError, showNotice } from './ui.js';

const encode = encodeURIComponent;
const data = { recipes: [], sources: [], kinds: [], settings: null };
const detail = $('[data-testid="recipe-detail"]');
const editForm = $('[data-testid="recipe-edit-form"]', detail);
const editButton = $('[data-testid="recipe-edit"]', detail);
let shown = null; // the recipe in the detail panel
let sourceOptions = null;

const ACCESS = { all: 'all users', admins: 'admins only', nobody: 'nobody (disabled)' };
const sourceName = (id) => (data.sources.find((s) => s.id === id) || {}).name || id;
const editable = (r) => typeof r.script === 'string'; // admins and the owner see the script

function originText(r) {
  const origin = r.origin || {};
  if (origin.kind !== 'source') return r.owner && isAdmin ? 'uploaded by a user' : 'uploaded';
  return `source ${sourceName(origin.source)}${origin.path ? ` (${origin.path})` : ''}`;
}

function typeText(p) {
  return p.type === 'enum' ? `enum (${(p.choices || []).join(' | ')})` : p.type;
}

function paramSummary(r) {
  if (!r.params || !r.params.length) return el('span', { class: 'muted' }, 'none');
  return el('span', { class: 'param-names' }, r.params.map((p) => el('code', {
    class: 'param-name', title: [typeText(p), p.required ? 'required' : '', p.secret ? 'secret' : '',
      p.description || ''].filter(Boolean).join(' · '),
  }, p.name, p.required ? el('span', { class: 'req' }, '*') : null)));
}

function accessCell(r) {
  return el('td', { testid: 'recipe-access' }, ACCESS[r.access] || r.access,
    r.usable === false && !isAdmin ? el('div', { class: 'muted small' }, 'you cannot run it') : null);
}

// -- the list ---------------------------------------------------------------------------
function renderRecipes() {
  const rows = $('#recipe-rows');
  if (!changed('recipes', [data.recipes, data.sources.map((s) => s.name), shown && shown.id])) return;
  if (!data.recipes.length) {
    fill(rows, el('tr', null, el('td', { colspan: 7, class: 'muted', testid: 'no-recipes' },
      isAdmin ? 'No recipes yet: add one below or a recipe source.' : 'No recipes are available to you yet.')));
    return;
  }
  fill(rows, data.recipes.map((r) => el('tr', {
    testid: 'recipe-row', class: shown && shown.id === r.id ? 'selected' : undefined,
    dataset: { name: r.name, recipeId: r.id },
  },
  el('td', null, el('strong', null, r.name), r.description ? el('div', { class: 'muted' }, r.description) : null),
  el('td', { testid: 'recipe-tags' }, r.tags.map((t) => el('span', { class: 'tag' }, t))),
  el('td', { testid: 'recipe-param-names' }, paramSummary(r)),
  accessCell(r),
  el('td', { class: 'muted', testid: 'recipe-origin' }, originText(r)),
  el('td', { class: 'num', testid: 'recipe-revision' }, String(r.revision)),
  el('td', { class: 'actions' },
    el('button', {
      type: 'button', class: 'btn-small', testid: 'recipe-view',
      onclick: () => openRecipe(r.id),
    }, editable(r) ? 'View / edit' : 'View'),
    editable(r) && (r.origin || {}).kind !== 'source' ? el('button', {
      type: 'button', class: 'btn-small btn-danger', testid: 'recipe-delete',
      onclick: (event) => removeRecipe(r, event.currentTarget),
    }, 'Delete') : null))));
}

async function removeRecipe(r, button) {
  if (!window.confirm(`Delete recipe ${r.name}?`)) return;
  const done = await busy(button, async () => {
    await del(`/recipes/${encode(r.id)}`);
    return true;
  }, `Delete recipe ${r.name}`);
  if (!done) return;
  showNotice(`Recipe ${r.name} deleted`);
  if (shown && shown.id === r.id) closeDetail();
  await load();
}

// -- one recipe -------------------------------------------------------------------------
function renderDetail(r) {
  shown = r;
  detail.hidden = false;
  $('[data-testid="recipe-detail-title"]', detail).textContent = `Recipe ${r.name}`;
  detail.dataset.recipeId = r.id;
  definitionList($('[data-testid="recipe-facts"]', detail), [
    ['Internal name', el('code', null, r.name)],
    ['Description', r.description || '—'],
    ['Tags', r.tags.join(', ')],
    ['Revision', el('span', { testid: 'recipe-detail-revision' }, String(r.revision))],
    ['Timeout', fmtDuration(r.timeout)],
    ['Access', el('span', { testid: 'recipe-detail-access' }, ACCESS[r.access] || r.access)],
    ['Origin', originText(r)],
    ['Updated', fmtTime(r.updated || r.created)],
  ]);
  const params = r.params || [];
  fill($('[data-testid="recipe-params"] tbody', detail), params.length ? params.map((p) => el('tr', {
    testid: 'recipe-param', dataset: { name: p.name },
  },
  el('td', null, el('code', null, p.name), p.secret ? el('span', { class: 'tag', testid: 'param-secret' }, 'secret') : null),
  el('td', { testid: 'param-type' }, typeText(p)),
  // A secret's default is never shown (the API masks it anyway).
  el('td', { testid: 'param-default' }, p.default === undefined || p.default === null ? '—'
    : p.secret ? el('span', { class: 'muted' }, 'set (hidden)') : el('code', null, p.default)),
  el('td', { testid: 'param-required' }, p.required ? 'yes' : 'no'),
  el('td', null, p.description || '—'))) : el('tr', null, el('td', { colspan: 5, class: 'muted', testid: 'no-params' },
    'This recipe takes no parameters.')));
  const script = $('[data-testid="recipe-script"]', detail);
  const hiddenNote = $('[data-testid="recipe-script-hidden"]', detail);
  script.hidden = !editable(r);
  hiddenNote.hidden = editable(r);
  script.textContent = editable(r) ? r.script : '';
  editButton.hidden = !editable(r);
  editForm.hidden = true;
  renderRecipes();
}

async function openRecipe(id) {
  clearError();
  try {
    renderDetail(await get(`/recipes/${encode(id)}`));
  } catch (error) {
    showError(error, 'Loading the recipe');
    return;
  }
  detail.scrollIntoView({ block: 'start', behavior: 'smooth' });
}

function closeDetail() {
  shown = null;
  detail.hidden = true;
  editForm.hidden = true;
  renderRecipes();
}

function startEdit() {
  if (!shown) return;
  const fromSource = (shown.origin || {}).kind === 'source';
  editForm.hidden = false;
  $('[data-testid="recipe-edit-script-field"]', editForm).hidden = fromSource;
  editForm.elements.script.value = shown.script || '';
  editForm.elements.script.required = !fromSource;
  editForm.elements.access.value = shown.access;
  $('[data-testid="recipe-edit-note"]', editForm).textContent = fromSource
    ? `This recipe comes from source ${sourceName(shown.origin.source)}: change its script there and refresh the source. Its access can be set here (kept across refreshes).`
    : 'Saving parses the metadata again: the name, tags, revision and parameters follow the script.';
  (fromSource ? editForm.elements.access : editForm.elements.script).focus();
}

async function saveEdit(event) {
  event.preventDefault();
  if (!shown) return;
  const button = $('[data-testid="recipe-edit-save"]', editForm);
  const body = {};
  if ((shown.origin || {}).kind !== 'source' && editForm.elements.script.value !== shown.script) {
    body.script = editForm.elements.script.value;
  }
  if (editForm.elements.access.value !== shown.access) body.access = editForm.elements.access.value;
  if (!Object.keys(body).length) {
    editForm.hidden = true;
    return;
  }
  const saved = await busy(button, () => api('PATCH', `/recipes/${encode(shown.id)}`, body),
    `Save recipe ${shown.name}`);
  if (!saved) return;
  showNotice(`Recipe ${saved.name} saved (revision ${saved.revision})`);
  renderDetail(saved);
  await load();
}

// -- adding -----------------------------------------------------------------------------
function setUpAddForm() {
  const form = $('#add-recipe');
  const file = $('[data-testid="add-recipe-file"]', form);
  file.addEventListener('change', async () => {
    if (!file.files[0]) return;
    form.elements.script.value = await file.files[0].text();
  });
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const button = $('[data-testid="add-recipe-submit"]', form);
    const body = { script: form.elements.script.value };
    if (form.elements.access.value) body.access = form.elements.access.value;
    const made = await busy(button, () => post('/recipes', body), 'Add recipe');
    if (!made) return;
    clearError();
    showNotice(`Recipe ${made.name} added`);
    form.reset();
    await load();
    renderDetail(made);
  });
}

// -- sources (admins) -------------------------------------------------------------------
function optionText(options) {
  const entries = Object.entries(options || {});
  if (!entries.length) return '—';
  return entries.map(([key, value]) => `${key}: ${typeof value === 'string' ? value : JSON.stringify(value)}`).join(', ');
}

function resultText(result) {
  if (!result) return '';
  const count = (key) => (result[key] || []).length;
  return `${count('added')} added, ${count('updated')} updated, ${count('removed')} removed, `
    + `${count('unchanged')} unchanged${count('skipped') ? `, ${count('skipped')} skipped` : ''}`;
}

function renderSources() {
  const rows = $('#recipe-source-rows');
  if (!rows || !changed('recipe-sources', data.sources)) return;
  if (!data.sources.length) {
    fill(rows, el('tr', null, el('td', { colspan: 6, class: 'muted', testid: 'no-recipe-sources' }, 'No recipe sources yet.')));
    return;
  }
  fill(rows, data.sources.map((s) => {
    const skipped = (s.last_result && s.last_result.skipped) || [];
    return el('tr', { testid: 'recipe-source-row', dataset: { name: s.name, sourceId: s.id } },
      el('td', null, el('strong', null, s.name), s.description ? el('div', { class: 'muted' }, s.description) : null),
      el('td', null, s.source),
      el('td', { class: 'options' }, optionText(s.options)),
      el('td', { class: 'num', testid: 'recipe-source-count' }, String(s.recipes)),
      el('td', null, fmtAgo(s.refreshed),
        s.last_result ? el('div', { class: 'muted small', testid: 'recipe-source-result' }, resultText(s.last_result)) : null,
        skipped.length ? el('ul', { class: 'alert-details error-text' }, skipped.map((x) =>
          el('li', null, typeof x === 'string' ? x : JSON.stringify(x)))) : null),
      el('td', { class: 'actions' },
        el('button', {
          type: 'button', class: 'btn-small', testid: 'recipe-source-refresh',
          onclick: (event) => refreshSource(s, event.currentTarget),
        }, 'Refresh'),
        el('button', {
          type: 'button', class: 'btn-small btn-danger', testid: 'recipe-source-remove',
          onclick: (event) => removeSource(s, event.currentTarget),
        }, 'Remove')));
  }));
}

async function runSourceTask(start, button, context) {
  const answer = await busy(button, start, context);
  if (!answer) return null;
  if (button) button.disabled = true;
  let final = null;
  try {
    final = await followTask(answer.task);
  } catch {
    final = null;
  } finally {
    if (button && button.isConnected) button.disabled = false;
  }
  await load().catch((error) => showError(error, 'Loading recipes'));
  return final;
}

async function refreshSource(s, button) {
  const final = await runSourceTask(() => post(`/recipe-sources/${encode(s.id)}/actions/refresh`, {}),
    button, `Refresh recipe source ${s.name}`);
  if (final && final.state === 'succeeded') showNotice(`Recipe source ${s.name} refreshed: ${resultText(final.result)}`);
}

async function removeSource(s, button) {
  if (!window.confirm(`Remove recipe source ${s.name} and its ${s.recipes} recipes?`)) return;
  const done = await busy(button, async () => {
    await del(`/recipe-sources/${encode(s.id)}`);
    return true;
  }, `Remove recipe source ${s.name}`);
  if (!done) return;
  showNotice(`Recipe source ${s.name} removed`);
  if (shown && (shown.origin || {}).source === s.id) closeDetail();
  await load();
}

function selectKind() {
  const form = $('#add-recipe-source');
  const kind = data.kinds.find((k) => k.id === form.elements.source.value);
  $('[data-testid="recipe-source-kind-description"]').textContent = kind ? kind.description || '' : '';
  sourceOptions = renderSchemaForm($('[data-testid="recipe-source-options"]', form), kind ? kind.options_schema : {},
    { idPrefix: 'rsrc-opt', emptyText: 'This kind has no options.' });
}

async function setUpSourceForm() {
  const form = $('#add-recipe-source');
  data.kinds = await items('/recipe-source-kinds');
  fill(form.elements.source, data.kinds.map((k) => el('option', { value: k.id }, k.name)));
  form.elements.source.addEventListener('change', selectKind);
  selectKind();
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const button = $('[data-testid="add-recipe-source-submit"]', form);
    const name = form.elements.name.value.trim();
    const final = await runSourceTask(() => {
      const body = { name, source: form.elements.source.value, options: sourceOptions.read() };
      const description = form.elements.description.value.trim();
      if (description) body.description = description;
      return post('/recipe-sources', body);
    }, button, `Add recipe source ${name}`);
    if (!final || final.state !== 'succeeded') return;
    showNotice(`Recipe source ${name} added: ${resultText(final.result)}`);
    const kind = form.elements.source.value;
    form.reset();
    form.elements.source.value = kind;
    selectKind();
  });
}

// -- settings (admins) ------------------------------------------------------------------
function renderSettings() {
  const form = $('#recipe-settings');
  if (!form || !data.settings || form.contains(document.activeElement)) return;
  if (!changed('recipe-settings', [data.settings, data.recipes.map((r) => r.name)])) return;
  form.elements.users_may_add.checked = data.settings.users_may_add;
  const names = [...new Set(data.recipes.map((r) => r.name))].sort();
  const current = data.settings.default_recipe;
  if (current && !names.includes(current)) names.push(current);
  fill(form.elements.default_recipe, el('option', { value: '' }, 'none'),
    names.map((n) => el('option', { value: n }, n)));
  form.elements.default_recipe.value = current || '';
}

function setUpSettings() {
  const form = $('#recipe-settings');
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const button = $('[data-testid="settings-save"]', form);
    const saved = await busy(button, () => api('PATCH', '/recipe-settings', {
      users_may_add: form.elements.users_may_add.checked,
      default_recipe: form.elements.default_recipe.value || null,
    }), 'Save the recipe settings');
    if (!saved) return;
    data.settings = saved;
    showNotice('Recipe settings saved');
    button.blur();
    renderSettings();
  });
}

// -- loading ----------------------------------------------------------------------------
async function load() {
  const [recipes, settings, sources] = await Promise.all([
    items('/recipes'), get('/recipe-settings'), isAdmin ? items('/recipe-sources') : []]);
  data.recipes = recipes;
  data.settings = settings;
  data.sources = [...sources].sort((a, b) => a.name.localeCompare(b.name));
  $('[data-testid="add-recipe-card"]').hidden = !(isAdmin || settings.users_may_add);
  renderRecipes();
  renderSources();
  renderSettings();
  if (shown && !recipes.some((r) => r.id === shown.id)) closeDetail();
}

editButton.addEventListener('click', startEdit);
editForm.addEventListener('submit', saveEdit);
$('[data-testid="recipe-edit-cancel"]', editForm).addEventListener('click', () => { editForm.hidden = true; });
$('[data-testid="recipe-detail-close"]', detail).addEventListener('click', closeDetail);
setUpAddForm();
if (isAdmin && $('#add-recipe-source')) {
  setUpSourceForm().catch((error) => showError(error, 'Loading recipe source kinds'));
  setUpSettings();
}
every(10000, load, 'Loading recipes');
