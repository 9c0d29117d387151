// Page chrome shared by every page: alerts, the task tray, the demo banner, auto-refresh.

import { get, pollTask } from './api.js';
import { $, badge, el, fill, progressBar } from './dom.js';

export const isAdmin = document.body.dataset.role === 'admin';

const alertBox = $('#alert');
const noticeBox = $('#notice');
let noticeTimer = null;

if (alertBox) {
  $('.alert-close', alertBox).addEventListener('click', () => clearError());
}

/** One entry of an error's ``details`` as text: a string, {field, message}, {vm, error}... */
function detailText(d) {
  if (typeof d === 'string') return d;
  if (d && d.field) return `${d.field}: ${d.message}`;
  if (d && d.message) return d.message;
  if (d && d.vm) return `${d.vm}: ${d.error}`;
  return JSON.stringify(d);
}

/**
 * ``{message, code, details}`` (details as text lines) of an ApiError, an Error, a task's
 * ``{code, message, details}`` error or a string.
 */
export function errorParts(error) {
  if (!error || typeof error !== 'object') {
    return { message: String(error || 'unknown error'), code: null, details: [] };
  }
  const details = error.details === undefined || error.details === null ? []
    : [error.details].flat();
  return {
    message: error.message || error.code || 'unknown error',
    code: error.code || null,
    details: details.map(detailText),
  };
}

/** An error as readable text: its message, its code and a list of its details. */
export function errorView(error, { testid } = {}) {
  const { message, code, details } = errorParts(error);
  return el('div', { class: 'error-text', testid },
    el('strong', { testid: testid && `${testid}-message` }, message),
    code ? [' ', el('code', { class: 'error-code', testid: testid && `${testid}-code` }, code)] : null,
    details.length ? el('ul', { class: 'alert-details', testid: testid && `${testid}-details` },
      details.map((d) => el('li', null, d))) : null);
}

/** Show an error (ApiError, Error, a task's error or text) in the page's alert element. */
export function showError(error, context) {
  if (!alertBox) return;
  const { message, code, details } = errorParts(error);
  const parts = [el('strong', null, context ? `${context}: ` : 'Error: '), message];
  if (code) {
    parts.push(' ', el('code', { class: 'error-code', testid: 'alert-code' }, code));
  }
  if (details.length) {
    parts.push(el('ul', { class: 'alert-details' }, details.map((d) => el('li', null, d))));
  }
  fill($('.alert-body', alertBox), parts);
  alertBox.hidden = false;
  alertBox.scrollIntoView({ block: 'nearest', behavior: 'smooth' });
}

export function clearError() {
  if (alertBox) alertBox.hidden = true;
}

export function showNotice(text) {
  if (!noticeBox) return;
  noticeBox.textContent = text;
  noticeBox.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => { noticeBox.hidden = true; }, 5000);
}

/** Run ``action`` with ``button`` disabled; errors land in the alert. Returns its result. */
export async function busy(button, action, context) {
  if (button) button.disabled = true;
  clearError();
  try {
    return await action();
  } catch (error) {
    showError(error, context);
    return undefined;
  } finally {
    if (button && button.isConnected) button.disabled = false;
  }
}

// -- the task tray: long operations started from this page ---------------------------------
/** A task's last log line without its time stamp ("downloaded 3.0 of 12.0 MiB"). */
export function lastLogLine(task) {
  const log = (task && task.log) || [];
  const line = log.length ? String(log[log.length - 1]) : '';
  return line.replace(/^\d\d:\d\d:\d\d /, '');
}

const tray = $('#task-tray');

/**
 * Follow a task (from a 202 answer) until it ends: a row in the tray shows its progress.
 * Resolves with the final task; a failed task's error is shown in the alert.
 */
export async function followTask(task, { onUpdate, showInTray = true } = {}) {
  let row = null;
  if (tray && showInTray) {
    row = el('div', { class: 'tray-item', testid: 'tray-task', dataset: { taskId: task.id } });
    tray.append(row);
  }
  const draw = (current) => {
    if (!row) return;
    fill(row,
      el('span', { class: 'tray-title' }, current.name || current.kind || 'Task'),
      progressBar(current.progress, { tone: `task-${current.state}`, label: current.name }),
      badge(current.state, { task: true, testid: 'tray-task-state' }));
  };
  draw(task);
  let final;
  try {
    final = await pollTask(task.id, (current) => {
      draw(current);
      if (onUpdate) onUpdate(current);
    });
  } catch (error) {
    showError(error, `Following task ${task.name || task.id}`);
    if (row) row.remove();
    throw error;
  }
  if (final.state === 'failed') {
    showError(final.error || 'the task failed', final.name || 'Task');
  }
  if (row) {
    const delay = final.state === 'succeeded' ? 3000 : 12000;
    setTimeout(() => row.remove(), delay);
  }
  return final;
}

// -- periodic refresh -----------------------------------------------------------------------
/** Call ``load`` now and every ``ms`` while the page is visible; errors go to the alert. */
export function every(ms, load, context = 'Loading') {
  let timer = null;
  let running = false;
  const tick = async () => {
    if (running) return;
    running = true;
    try {
      await load();
    } catch (error) {
      showError(error, context);
    } finally {
      running = false;
    }
  };
  const schedule = () => {
    clearInterval(timer);
    timer = setInterval(() => { if (!document.hidden) tick(); }, ms);
  };
  document.addEventListener('visibilitychange', () => { if (!document.hidden) tick(); });
  schedule();
  return tick();
}

/** Re-render only when the data changed, so rows do not flicker under the pointer. */
export function changed(key, data) {
  const text = JSON.stringify(data);
  if (changed.last[key] === text) return false;
  changed.last[key] = text;
  return true;
}
changed.last = {};

// -- demo node banner -------------------------------------------------------------------
async function demoBanner() {
  const banner = $('[data-testid="demo-banner"]');
  if (!banner) return;
  try {
    const nodes = (await get('/nodes')).items;
    const demo = nodes.filter((n) => n.kind === 'demo');
    if (!demo.length) return;
    fill(banner, el('strong', null, 'Demo mode'), ' — ', demo.map((n) => `node ${n.name}: ${
      n.label || "libvirt's test driver, nothing real runs"}`).join('; '));
    banner.hidden = false;
  } catch {
    // The page itself reports API errors; the banner stays hidden.
  }
}

demoBanner();
