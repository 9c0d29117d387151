// A recipe's parameters form, generated from the params its metadata declares
// (`# param: NAME type=string|int|bool|enum(a|b) default=... required=yes secret=yes`), and
// the recipe choice shared by the create-VM form, the VM page's "Run a recipe" and its
// reinstall panel.
//
// The params become a JSON Schema rendered by schema_form.js (same look and test ids:
// option-NAME / field-NAME). Secret params are password inputs; the API shows their
// defaults masked, so a masked default is never put into an input: left empty, the
// recipe's own default applies.

import { items } from './api.js';
import { el, fill } from './dom.js';
import { renderSchemaForm } from './schema_form.js';

const TRUE = ['yes', 'true', '1', 'on'];

/** The JSON Schema of a recipe's params (as GET /recipes/{id} lists them). */
export function paramsSchema(params) {
  const properties = {};
  const required = [];
  for (const p of params || []) {
    const prop = { title: p.name };
    const hasDefault = p.default !== undefined && p.default !== null;
    if (p.type === 'int') prop.type = 'integer';
    else if (p.type === 'bool') prop.type = 'boolean';
    else if (p.type === 'enum') prop.enum = p.choices || [];
    else prop.type = 'string';
    const notes = [];
    if (p.description) notes.push(p.description);
    if (p.secret) {
      prop.writeOnly = true; // a password input; its value is never shown again
      notes.push(hasDefault ? 'Secret; leave empty to keep the recipe\'s default.' : 'Secret: never shown again.');
    } else if (hasDefault) {
      if (p.type === 'int') {
        const number = Number(p.default);
        if (Number.isFinite(number)) prop.default = number;
      } else if (p.type === 'bool') {
        prop.default = TRUE.includes(String(p.default).toLowerCase());
      } else {
        prop.default = p.default;
      }
    }
    if (notes.length) prop.description = notes.join(' ');
    if (p.required && !hasDefault) required.push(p.name);
    properties[p.name] = prop;
  }
  return { type: 'object', properties, required };
}

/**
 * Render ``recipe``'s params into the fieldset ``container`` (hidden without a recipe).
 * Returns ``{read()}``: the values to send as ``params`` / ``recipe_params`` (empty
 * optional fields left out, so the recipe's defaults apply).
 */
export function renderParams(container, recipe, { idPrefix = 'param' } = {}) {
  if (!recipe) {
    container.hidden = true;
    fill(container, container.querySelector('legend'));
    return { read: () => ({}) };
  }
  container.hidden = false;
  const form = renderSchemaForm(container, paramsSchema(recipe.params), {
    idPrefix, emptyText: 'This recipe takes no parameters.',
  });
  container.dataset.recipe = recipe.name;
  return form;
}

/** A recipe's one-line label for a select: name, revision, and a note when not usable. */
export function recipeLabel(recipe) {
  const note = recipe.usable === false ? ` — ${recipe.access === 'nobody' ? 'disabled' : 'admins only'}` : '';
  const description = recipe.description ? ` — ${recipe.description}` : '';
  return `${recipe.name} (rev. ${recipe.revision})${description}${note}`;
}

/** The recipes that suit an OS template with ``tags`` (one shared tag), usable by this user. */
export async function compatibleRecipes(tags) {
  if (!tags || !tags.length) return [];
  const found = await items(`/recipes?tags=${encodeURIComponent(tags.join(','))}`);
  return found.filter((r) => r.usable !== false);
}

/**
 * Fill ``select`` with ``recipes`` (first option: ``none``); keeps the choice when it is
 * still there. ``emptyText`` labels the only option when there is nothing to choose.
 */
export function fillRecipeSelect(select, recipes, { none = 'No recipe', emptyText } = {}) {
  const keep = select.value;
  const sorted = [...recipes].sort((a, b) => a.name.localeCompare(b.name));
  fill(select, el('option', { value: '' }, sorted.length || !emptyText ? none : emptyText),
    sorted.map((r) => el('option', { value: r.id, dataset: { name: r.name } }, recipeLabel(r))));
  if (sorted.some((r) => r.id === keep)) select.value = keep;
  return sorted;
}
