// The OS templates page's upload form (admins): the template's metadata first
// (POST /os-templates/uploads), then its file PUT to /os-templates/{id}/content by an
// XMLHttpRequest whose upload events draw the progress (fetch cannot report it), then the
// import task's progress until the template is ready.

import { API, ApiError, FINAL_STATES, csrfToken, del, post } from './api.js';
import { $, el, fill, fmtBytes, progressBar } from './dom.js';
import { busy, clearError, lastLogLine, showError, showNotice } from './ui.js';

const encode = encodeURIComponent;
const form = $('#upload-template');
const box = form ? $('[data-testid="upload-progress"]', form) : null;

/** Storages the file can go to (those present on a node). */
export function fillUploadStorages(storages) {
  if (!form) return;
  const select = form.elements.storage;
  const keep = select.value;
  const usable = storages.filter((s) => Object.keys(s.nodes || {}).length);
  fill(select, usable.map((s) => el('option', { value: s.id }, `${s.name} (${s.backend})`)));
  if (usable.some((s) => s.id === keep)) select.value = keep;
}

/** PUT the file with upload progress; resolves with the import task (202). */
function putFile(templateId, file, onProgress, onStart) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('PUT', `${API}/os-templates/${encode(templateId)}/content`);
    xhr.setRequestHeader('X-CSRF-Token', csrfToken);
    xhr.setRequestHeader('Accept', 'application/json');
    xhr.setRequestHeader('Content-Type', 'application/octet-stream');
    xhr.upload.addEventListener('progress', (event) => {
      onProgress(event.loaded, event.lengthComputable ? event.total : file.size);
    });
    xhr.upload.addEventListener('load', () => onProgress(file.size, file.size));
    xhr.addEventListener('load', () => {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        body = null;
      }
      if (xhr.status >= 200 && xhr.status < 300 && body && body.task) {
        resolve(body.task);
        return;
      }
      const error = (body && body.error) || {};
      reject(new ApiError(xhr.status, error.code || `http_${xhr.status}`,
        error.message || xhr.statusText || 'the upload failed', error.details));
    });
    xhr.addEventListener('error', () => reject(new ApiError(0, 'network_error', 'the upload was interrupted')));
    xhr.addEventListener('abort', () => reject(new ApiError(0, 'aborted', 'the upload was cancelled')));
    if (onStart) onStart(xhr);
    xhr.send(file);
  });
}

/** The import task of the template being uploaded here: its stage, percent and last step. */
export function showImportProgress(templateId, task) {
  if (!box || box.dataset.templateId !== templateId) return;
  box.dataset.stage = task.state === 'succeeded' ? 'ready' : FINAL_STATES.includes(task.state) ? task.state : 'importing';
  $('[data-testid="upload-stage"]', box).textContent = task.state === 'succeeded' ? 'Ready'
    : FINAL_STATES.includes(task.state) ? `Import ${task.state}` : 'Importing';
  const message = lastLogLine(task);
  $('[data-testid="upload-progress-text"]', box).textContent =
    `${Math.round(task.progress || 0)}%${message ? ` · ${message}` : ''}`;
  fill($('[data-testid="upload-bar"]', box), progressBar(task.progress, {
    tone: `task-${task.state}`, label: 'import', testid: 'upload-progress-bar',
  }));
}

function uploadBody(file) {
  const value = (name) => form.elements[name].value.trim();
  const body = {
    name: value('name'), os_family: value('os_family'), format: value('format'),
    storage: value('storage'), compression: value('compression'), arch: value('arch'),
    config: value('config'), size: file.size,
  };
  for (const key of ['os_version', 'default_user', 'description']) if (value(key)) body[key] = value(key);
  if (body.config === 'script') body.script = form.elements.script.value;
  for (const key of ['min_disk_gib', 'min_memory_mib']) if (value(key)) body[key] = Number(value(key));
  const tags = value('tags').split(/[\s,]+/).filter(Boolean);
  if (tags.length) body.tags = [...new Set(tags)];
  return body;
}

/** Guess the name, format and compression from the file's name. */
function fileChosen() {
  const file = form.elements.file.files[0];
  if (!file) return;
  const lower = file.name.toLowerCase();
  if (!form.elements.name.value) {
    form.elements.name.value = file.name.replace(/\.(qcow2|img|raw|iso)?(\.(gz|xz|zst))?$/i, '')
      .replace(/[^A-Za-z0-9._-]/g, '-').replace(/^[^A-Za-z0-9]+/, '').slice(0, 63);
  }
  if (/\.iso(\.|$)/.test(lower)) form.elements.format.value = 'iso';
  else if (/\.(img|raw)(\.|$)/.test(lower)) form.elements.format.value = 'raw';
  else if (/\.qcow2(\.|$)/.test(lower)) form.elements.format.value = 'qcow2';
  form.elements.compression.value = lower.endsWith('.gz') ? 'gzip' : lower.endsWith('.xz') ? 'xz'
    : lower.endsWith('.zst') ? 'zstd' : 'none';
}

/** Draw "42% · 1.0 MiB of 2.4 MiB sent" and the bar (with the Cancel button). */
function showSent(sent, total, cancel) {
  const percent = total ? (100 * sent) / total : 0;
  box.dataset.stage = 'uploading';
  $('[data-testid="upload-stage"]', box).textContent = 'Uploading';
  $('[data-testid="upload-progress-text"]', box).textContent =
    `${Math.round(percent)}% · ${fmtBytes(sent)} of ${fmtBytes(total)} sent`;
  fill($('[data-testid="upload-bar"]', box), progressBar(percent, {
    tone: 'task-running', label: 'upload', testid: 'upload-progress-bar',
  }), sent < total ? cancel : null);
}

async function submit(event, { load, track }) {
  event.preventDefault();
  const button = $('[data-testid="upload-submit"]', form);
  const file = form.elements.file.files[0];
  if (!file) return;
  const body = uploadBody(file);
  const record = await busy(button, () => post('/os-templates/uploads', body), `Upload ${body.name}`);
  if (!record) return;
  clearError();
  button.disabled = true;
  box.hidden = false;
  box.dataset.templateId = record.id;
  let request = null;
  const cancel = el('button', {
    type: 'button', class: 'btn-small', testid: 'upload-cancel', onclick: () => request && request.abort(),
  }, 'Cancel upload');
  showSent(0, file.size, cancel);
  await load().catch(() => {});
  let task = null;
  try {
    task = await putFile(record.id, file, (sent, total) => showSent(sent, total, cancel), (xhr) => { request = xhr; });
  } catch (error) {
    showError(error, `Upload ${body.name}`);
    // Nothing is kept of a broken upload: the record waiting for its file goes too, so
    // the same form can simply be sent again.
    const dropped = await del(`/os-templates/${encode(record.id)}`).then(() => true, () => false);
    box.dataset.stage = 'failed';
    $('[data-testid="upload-stage"]', box).textContent = 'Upload failed';
    $('[data-testid="upload-progress-text"]', box).textContent = dropped
      ? 'Nothing was kept: send the form again to retry.'
      : `OS template ${body.name} still waits for its file: delete it above to retry.`;
    fill($('[data-testid="upload-bar"]', box));
    button.disabled = false;
    await load().catch(() => {});
    return;
  }
  showImportProgress(record.id, task);
  form.reset();
  button.disabled = false;
  const final = await track(task);
  if (final && final.state === 'succeeded') showNotice(`OS template ${body.name} is ready`);
}

/** Wire the form; ``load()`` reloads the page's data, ``track(task)`` follows an import. */
export function setUpUpload({ load, track }) {
  if (!form) return;
  form.elements.file.addEventListener('change', fileChosen);
  const scriptField = $('[data-testid="upload-script-field"]', form);
  const scriptShown = () => {
    const wanted = form.elements.config.value === 'script';
    scriptField.hidden = !wanted;
    form.elements.script.required = wanted;
  };
  form.elements.config.addEventListener('change', scriptShown);
  form.addEventListener('reset', () => setTimeout(scriptShown));
  form.addEventListener('submit', (event) => submit(event, { load, track }));
}
