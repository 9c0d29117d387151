// Form fields rendered from a JSON Schema (a plugin's options_schema), read back as typed values.
//
// Supported: string (text; password when format is "password" or writeOnly), integer and
// number (number inputs with minimum/maximum), boolean (checkbox), enum (select, any JSON
// values), arrays of strings (one per line), objects with properties (a nested fieldset,
// left out when all its fields are empty); anything else is edited as JSON text.
// title/description/default/required/examples and dependentRequired (for defaults) are
// honoured. The server validates the result.

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

/** A placeholder for JSON text: an example built from the schema (its required keys). */
function jsonExample(prop) {
  const sample = (schema, depth = 0) => {
    if (!schema || depth > 3) return null;
    if (Array.isArray(schema.examples) && schema.examples.length) return schema.examples[0];
    if ('default' in schema) return schema.default;
    if (Array.isArray(schema.enum)) return schema.enum[0];
    const type = mainType(schema);
    if (type === 'integer' || type === 'number') return schema.minimum ?? 1;
    if (type === 'boolean') return false;
    if (type === 'string') return '…';
    if (type === 'array') return [sample(schema.items, depth + 1)];
    if (type === 'object' && schema.properties) {
      const keys = schema.required && schema.required.length ? schema.required
        : Object.keys(schema.properties);
      return Object.fromEntries(keys.map((k) => [k, sample(schema.properties[k], depth + 1)]));
    }
    return null;
  };
  const example = sample(prop);
  return example === null || example === undefined ? 'JSON' : `JSON, e.g. ${JSON.stringify(example)}`;
}

function makeControl(key, prop, required, id, testKey = key) {
  const type = mainType(prop);
  const common = { id, name: key, testid: `option-${testKey}`, required: required || undefined };
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
  if (type === 'object' && prop.properties && Object.keys(prop.properties).length) {
    return nestedObject(key, prop, required, id, testKey);
  }
  const area = el('textarea', { ...common, rows: 3, class: 'mono', placeholder: jsonExample(prop) });
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

/** One labelled field (label, control, help) for ``key`` of a schema's properties. */
function makeField(key, prop, { required, htmlRequired, id, testKey }) {
  const control = makeControl(key, prop, htmlRequired, id, testKey);
  const title = prop.title || humanize(key);
  const labelText = el('span', null, title,
    required ? el('span', { class: 'req', title: 'required' }, ' *') : null);
  const help = prop.description ? el('small', { class: 'help', id: `${id}-help` }, prop.description) : null;
  if (help) control.node.setAttribute('aria-describedby', `${id}-help`);
  if (control.group) {
    // A nested object: its own fieldset, titled by the property.
    fill(control.legend, labelText);
    if (help) control.node.insertBefore(help, control.legend.nextSibling);
    return { node: control.node, control };
  }
  const node = control.checkbox
    ? el('div', { class: 'field', testid: `field-${testKey}` },
      el('label', { class: 'check', for: id }, control.node, ' ', labelText), help)
    : el('div', { class: 'field', testid: `field-${testKey}` },
      el('label', { for: id }, labelText), control.node, help);
  return { node, control };
}

/**
 * An object with properties as a nested fieldset. Its fields are marked required in the
 * page only when the object itself is (an optional object may be left out entirely); the
 * object is left out when none of its fields has a value.
 */
function nestedObject(key, prop, required, id, testKey) {
  const inner = new Set(prop.required || []);
  const defaults = prop.default && typeof prop.default === 'object' ? prop.default : {};
  const legend = el('legend');
  const group = el('fieldset', { class: 'schema-fields nested wide', testid: `field-${testKey}` }, legend);
  const fields = [];
  for (const [subKey, subSchema] of Object.entries(prop.properties)) {
    const sub = { ...(subSchema || {}) };
    if (!('default' in sub) && subKey in defaults) sub.default = defaults[subKey];
    const { node, control } = makeField(subKey, sub, {
      required: inner.has(subKey), htmlRequired: required && inner.has(subKey),
      id: `${id}-${subKey}`, testKey: `${testKey}-${subKey}`,
    });
    group.append(node);
    fields.push([subKey, control, sub]);
  }
  return {
    node: group,
    legend,
    group: true,
    read: () => {
      const out = {};
      let given = false;
      for (const [subKey, control, sub] of fields) {
        const value = control.read();
        if (value === undefined) continue;
        out[subKey] = value;
        // A checkbox always has a value: it counts only when changed from its default.
        if (!control.checkbox || value !== (sub.default === true)) given = true;
      }
      return given || required ? out : undefined;
    },
  };
}

/**
 * Render the schema's properties into ``container``; returns ``read()`` which gives the
 * options object (empty optional fields left out) or throws an Error naming the bad field.
 */
export function renderSchemaForm(container, schema, {
  idPrefix = 'opt', emptyText = 'This back end has no options.',
} = {}) {
  const properties = (schema && schema.properties) || {};
  const required = new Set((schema && schema.required) || []);
  const legend = container.querySelector('legend');
  fill(container, legend);
  const fields = [];
  const keys = Object.keys(properties);
  if (!keys.length) {
    container.append(el('p', { class: 'muted', testid: 'no-options' }, emptyText));
  }
  for (const key of keys) {
    const prop = properties[key] || {};
    const isRequired = required.has(key);
    const { node, control } = makeField(key, prop, {
      required: isRequired, htmlRequired: isRequired, id: `${idPrefix}-${key}`, testKey: key,
    });
    container.append(node);
    fields.push([key, control]);
  }
  const dependent = (schema && schema.dependentRequired) || {};
  return {
    read() {
      const out = {};
      for (const [key, control] of fields) {
        const value = control.read();
        if (value !== undefined) out[key] = value;
      }
      // An untouched default needs no fields it depends on: leave it out when they are empty
      // (a value the user typed is kept, and the server says what it misses).
      for (const [key, needs] of Object.entries(dependent)) {
        const prop = properties[key] || {};
        if (key in out && 'default' in prop && JSON.stringify(out[key]) === JSON.stringify(prop.default)
            && (needs || []).some((k) => !(k in out))) delete out[key];
      }
      return out;
    },
  };
}
