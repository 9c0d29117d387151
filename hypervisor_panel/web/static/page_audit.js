// Audit log (admin): every state-changing call, newest first, filtered by the form.

import { get } from './api.js';
import { $, badge, el, fill, fmtAgo, fmtTime } from './dom.js';
import { busy, isAdmin } from './ui.js';

const PAGE_SIZE = 100;
const form = $('#audit-filters');
const rows = $('#audit-rows');
const older = $('#audit-older');
const count = $('[data-testid="audit-count"]');
let shown = [];

/** The form's filters as a query string; datetime-local values become epoch seconds. */
function query(before) {
  const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
  for (const name of ['actor', 'action', 'result']) {
    const value = form.elements[name].value.trim();
    if (value) params.set(name, value);
  }
  for (const name of ['since', 'until']) {
    const value = form.elements[name].value;
    if (value) params.set(name, String(Math.floor(new Date(value).getTime() / 1000)));
  }
  if (before) params.set('before', before);
  return params.toString();
}

function actor(entry) {
  const name = entry.user_name || (entry.summary && entry.summary.username) || '—';
  const token = entry.token_kind ? el('small', { class: 'muted' }, ` via ${entry.token_kind}`) : null;
  return [el('span', { testid: 'audit-actor' }, name), token];
}

function result(entry) {
  const text = String(entry.status);
  return [badge(entry.ok ? 'ok' : 'failed', { testid: 'audit-ok' }), ' ',
    el('code', { testid: 'audit-status' }, text),
    entry.error ? [' ', el('code', { class: 'error-code', testid: 'audit-error' }, entry.error)] : null];
}

function objectOf(entry) {
  const params = Object.entries(entry.params || {}).map(([k, v]) => `${k}=${v}`);
  const summary = Object.entries(entry.summary || {}).map(([k, v]) => `${k}: ${v}`);
  return [el('span', null, params.join(', ') || entry.subject || '—'),
    summary.length ? el('small', { class: 'muted', testid: 'audit-summary' }, ` ${summary.join(', ')}`) : null];
}

function row(entry) {
  return el('tr', { testid: 'audit-row', dataset: { id: entry.id, action: entry.action, status: entry.status } },
    el('td', { title: fmtTime(entry.time) }, fmtAgo(entry.time)),
    el('td', null, actor(entry)),
    el('td', { testid: 'audit-address' }, entry.address || '—'),
    el('td', null, el('code', { testid: 'audit-action' }, entry.action),
      el('div', null, el('small', { class: 'muted' }, entry.path))),
    el('td', null, objectOf(entry)),
    el('td', null, result(entry)),
    el('td', null, `${Math.round(entry.duration_ms)} ms`));
}

function render(total) {
  count.textContent = `${shown.length} of ${total} matching entries`;
  older.hidden = shown.length >= total;
  if (!shown.length) {
    fill(rows, el('tr', null, el('td', { colspan: 7, class: 'muted', testid: 'no-audit' }, 'No entries match.')));
    return;
  }
  fill(rows, shown.map(row));
}

async function load(append = false) {
  const before = append && shown.length ? shown[shown.length - 1].id : null;
  const page = await get(`/audit?${query(before)}`);
  shown = append ? shown.concat(page.items) : page.items;
  render(append ? shown.length + page.total - page.items.length : page.total);
}

if (isAdmin && form) {
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    busy(form.querySelector('button[type="submit"]'), () => load(), 'Loading the audit log');
  });
  form.addEventListener('reset', () => setTimeout(() => busy(null, () => load(), 'Loading the audit log')));
  older.addEventListener('click', () => busy(older, () => load(true), 'Loading older entries'));
  busy(null, () => load(), 'Loading the audit log');
}
