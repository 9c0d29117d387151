// Form fields rendered from a JSON Schema (a plugin's options_schema), read back as typed values.
//
// Supported: string (text; password when format is "password" or writeOnly), integer and
// number (number inputs with minimum/maximum), boolean (checkbox), enum (select, any JSON
// values), arrays of strings (one per line); anything else is edited as JSON text.
// title/description/default/required/examples are honoured. The server validates the result.

import { el, fill } from './dom.js';

function mainType(prop) {
  const type = Array.isArray(prop.type) ? prop.type.find((t) => t !== 'null') : prop.type;
  if (Array.isArray(prop.enum)) return 'enum';
  if (type === undefined && 'const' in prop) return 'enum';
  return type || 'json';
}

function humanize(key) {
  const text = key.replace(/[_-]+/g, ' ').trim();
  return text.charAt(0).toUpperCase() + text.slice(1);
}

function makeControl(key, prop, required, id) {
  const type = mainType(prop);
  const common = { id, name: key, testid: `option-${key}`, required: required || undefined };
  const hasDefault = 'default' in prop;
  if (type === 'enum') {
    const values = Array.isArray(prop.enum) ? prop.enum : [prop.const];
    const select = el('select', common);
    if (!required && !hasDefault) select.append(el('option', { value: '' }, '—'));
    values.forEach((value, index) => {
      const label = Array.isArray(prop.enumTitles) ? prop.enumTitles[index] : undefined;
      select.append(el('option', { value: String(index) },
        label ?? (typeof value === 'string' ? value : JSON.stringify(value))));
    });
    if (hasDefault) {
      const index = values.findIndex((v) => JSON.stringify(v) === JSON.stringify(prop.default));
      if (index >= 0) select.value = String(index);
    }
    return { node: select, read: () => (select.value === '' ? undefined : values[Number(select.value)]) };
  }
  if (type === 'boolean') {
    const box = el('input', { ...common, type: 'checkbox', required: undefined });
    box.checked = prop.default === true;
    return { node: box, read: () => box.checked, checkbox: true };
  }
  if (type === 'integer' || type === 'number') {
    const input = el('input', {
      ...common, type: 'number', inputmode: type === 'integer' ? 'numeric' : 'decimal',
      step: type === 'integer' ? (prop.multipleOf || 1) : (prop.multipleOf || 'any'),
      min: prop.minimum,
      max: prop.maximum,
      placeholder: prop.examples ? String(prop.examples[0]) : undefined,
    });
    if (hasDefault) input.value = String(prop.default);
    return {
      node: input,
      read: () => {
        const text = input.value.trim();
        if (text === '') return undefined;
        const value = Number(text);
        if (!Number.isFinite(value) || (type === 'integer' && !Number.isInteger(value))) {
          throw new Error(`${humanize(key)} must be ${type === 'integer' ? 'a whole number' : 'a number'}`);
        }
        return value;
      },
    };
  }
  if (type === 'string') {
    const secret = prop.format === 'password' || prop.writeOnly === true;
    const long = (prop.maxLength || 0) > 1000 || prop.format === 'textarea';
    const attrs = {
      ...common, minlength: prop.minLength, maxlength: prop.maxLength,
      placeholder: prop.examples ? String(prop.examples[0]) : undefined,
      autocomplete: secret ? 'new-password' : 'off',
    };
    const input = long ? el('textarea', { ...attrs, rows: 4 })
      : el('input', { ...attrs, type: secret ? 'password' : 'text' });
    if (hasDefault) input.value = String(prop.default);
    return { node: input, read: () => (input.value === '' ? undefined : input.value) };
  }
  if (type === 'array' && prop.items && mainType(prop.items) === 'string') {
    const area = el('textarea', { ...common, rows: 3, placeholder: 'one value per line' });
    if (Array.isArray(prop.default)) area.value = prop.default.join('\n');
    return {
      node: area,
      read: () => {
        const lines = area.value.split('\n').map((s) => s.trim()).filter(Boolean);
        return lines.length ? lines : undefined;
      },
    };
  }
  const area = el('textarea', { ...common, rows: 3, class: 'mono', placeholder: 'JSON' });
  if (hasDefault) area.value = JSON.stringify(prop.default, null, 2);
  return {
    node: area,
    read: () => {
      if (area.value.trim() === '') return undefined;
      try {
        return JSON.parse(area.value);
      } catch (error) {
        throw new Error(`${humanize(key)} is not valid JSON: ${error.message}`);
      }
    },
  };
}

/**
 * Render the schema's properties into ``container``; returns ``read()`` which gives the
 * options object (empty optional fields left out) or throws an Error naming the bad field.
 */
export function renderSchemaForm(container, schema, { idPrefix = 'opt' } = {}) {
  const properties = (schema && schema.properties) || {};
  const required = new Set((schema && schema.required) || []);
  const legend = container.querySelector('legend');
  fill(container, legend);
  const fields = [];
  const keys = Object.keys(properties);
  if (!keys.length) {
    container.append(el('p', { class: 'muted', testid: 'no-options' }, 'This back end has no options.'));
  }
  for (const key of keys) {
    const prop = properties[key] || {};
    const id = `${idPrefix}-${key}`;
    const isRequired = required.has(key);
    const control = makeControl(key, prop, isRequired, id);
    const title = prop.title || humanize(key);
    const labelText = el('span', null, title,
      isRequired ? el('span', { class: 'req', title: 'required' }, ' *') : null);
    const help = prop.description ? el('small', { class: 'help', id: `${id}-help` }, prop.description) : null;
    if (help) control.node.setAttribute('aria-describedby', `${id}-help`);
    const field = control.checkbox
      ? el('div', { class: 'field', testid: `field-${key}` },
        el('label', { class: 'check', for: id }, control.node, ' ', labelText), help)
      : el('div', { class: 'field', testid: `field-${key}` },
        el('label', { for: id }, labelText), control.node, help);
    container.append(field);
    fields.push([key, control]);
  }
  return {
    read() {
      const out = {};
      for (const [key, control] of fields) {
        const value = control.read();
        if (value !== undefined) out[key] = value;
      }
      return out;
    },
  };
}
