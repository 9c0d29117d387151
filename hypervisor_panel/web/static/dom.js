// Tiny DOM helpers. API data only ever reaches the page as text nodes or attribute values.

/** el('a', {href, class, testid, onclick}, 'text', childNode, [more]) */
export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'testid') node.dataset.testid = value;
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key.startsWith('on') && typeof value === 'function') {
      node.addEventListener(key.slice(2), value);
    } else if (value === true) node.setAttribute(key, '');
    else node.setAttribute(key, String(value));
  }
  append(node, children);
  return node;
}

export function append(node, children) {
  for (const child of [children].flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function fill(node, ...children) {
  node.replaceChildren();
  return append(node, children);
}

export const $ = (selector, root = document) => root.querySelector(selector);
export const $$ = (selector, root = document) => [...root.querySelectorAll(selector)];

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

export function fmtBytes(bytes) {
  if (bytes === undefined || bytes === null || Number.isNaN(Number(bytes))) return '—';
  let value = Number(bytes);
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  const digits = unit === 0 || value >= 100 || Number.isInteger(value) ? 0 : 1;
  return `${value.toFixed(digits)} ${UNITS[unit]}`;
}

export const fmtMiB = (mib) => (mib === undefined || mib === null ? '—' : fmtBytes(mib * 1024 ** 2));
export const fmtGiB = (gib) => (gib === undefined || gib === null ? '—' : fmtBytes(gib * 1024 ** 3));

export function fmtTime(seconds) {
  if (!seconds) return '—';
  return new Date(seconds * 1000).toLocaleString();
}

export function fmtDuration(seconds) {
  if (seconds === undefined || seconds === null || seconds < 0) return '—';
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

export function fmtAgo(seconds) {
  if (!seconds) return '—';
  const delta = Date.now() / 1000 - seconds;
  if (delta < 5) return 'just now';
  if (delta < 60) return `${Math.round(delta)} s ago`;
  if (delta < 3600) return `${Math.round(delta / 60)} min ago`;
  if (delta < 86400) return `${Math.round(delta / 3600)} h ago`;
  return fmtTime(seconds);
}

const TONES = {
  running: 'ok', online: 'ok', succeeded: 'ok', active: 'ok', ok: 'ok',
  stopped: 'off', shutoff: 'off', cancelled: 'off', missing: 'bad',
  paused: 'warn', stopping: 'warn', suspended: 'warn', pmsuspended: 'warn', connecting: 'warn',
  crashed: 'bad', failed: 'bad', offline: 'bad', error: 'bad', unknown: 'bad',
  creating: 'busy', deleting: 'busy', queued: 'busy',
  ready: 'ok', importing: 'busy', receiving: 'busy', uploading: 'warn',
};

/** A coloured state label; task states 'running' get the busy tone when ``task`` is set. */
export function badge(state, { testid, task = false } = {}) {
  const text = state || 'unknown';
  const tone = task && text === 'running' ? 'busy' : TONES[text] || 'off';
  return el('span', { class: `badge badge-${tone}`, testid, dataset: { state: text } }, text);
}

export function progressBar(percent, { tone = '', testid, label } = {}) {
  const value = Math.max(0, Math.min(100, Math.round(Number(percent) || 0)));
  const bar = el('div', { class: 'progress-bar' });
  bar.style.width = `${value}%`;
  return el('div', {
    class: `progress ${tone}`, role: 'progressbar', 'aria-valuemin': 0, 'aria-valuemax': 100,
    'aria-valuenow': value, 'aria-label': label, testid, title: `${value}%`,
  }, bar);
}

/** A usage bar: used/total with a tone that warns when nearly full. */
export function usageBar(used, total, { testid, label } = {}) {
  const percent = total > 0 ? (100 * used) / total : 0;
  const tone = percent >= 90 ? 'tone-bad' : percent >= 75 ? 'tone-warn' : 'tone-ok';
  return progressBar(percent, { tone, testid, label });
}

export function definitionList(target, pairs) {
  fill(target, pairs.filter(([, value]) => value !== undefined).map(([term, value]) => [
    el('dt', null, term),
    el('dd', null, value === null || value === '' ? '—' : value),
  ]));
}

/**
 * Free memory as a node reports it, or null when unknown. Exactly 0 is treated as unknown:
 * libvirt's test driver reports 0 and no real host runs with no free memory at all.
 */
export function freeMemoryMiB(resources) {
  const free = resources ? resources.free_memory_mib : null;
  return free === undefined || free === null || free === 0 ? null : free;
}

/**
 * A bar of several parts of one total, e.g. an IP pool's addresses in use and reserved:
 * ``parts`` are ``{value, tone, label}``; what they leave of ``total`` shows as empty.
 */
export function stackedBar(parts, total, { testid, label } = {}) {
  const bar = el('div', {
    class: 'progress stacked', role: 'img', 'aria-label': label, testid,
    title: parts.map((p) => `${p.label}: ${p.value}`).join(', '),
  });
  for (const part of parts) {
    if (!(total > 0) || !(part.value > 0)) continue;
    const segment = el('div', { class: `progress-bar ${part.tone || ''}`, dataset: { part: part.label } });
    segment.style.width = `${Math.max(1, (100 * part.value) / total)}%`;
    bar.append(segment);
  }
  return bar;
}
