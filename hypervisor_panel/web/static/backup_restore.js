// The restore form (into the same VM, or as a new VM on a chosen node and storage) and the
// verify action, shared by the backups page and the VM page (admins only).

import { items, post } from './api.js';
import { $, el, fill } from './dom.js';
import { encode } from './backup_common.js';
import { busy, clearError, showNotice } from './ui.js';

const AUTO = '';

function options(list, { none, selected, label = (x) => x.name } = {}) {
  const out = none ? [el('option', { value: AUTO }, none)] : [];
  for (const item of list) {
    out.push(el('option', { value: item.id, selected: item.id === selected }, label(item)));
  }
  return out;
}

/**
 * A restore panel drawn into ``container`` (a hidden element of the page). ``follow(task)``
 * follows the task a submit starts. Returns ``{restore(backup), verify(backup)}``.
 */
export function backupActions(container, { follow }) {
  const lookups = { vms: [], nodes: [], storages: [], templates: [], networks: [] };
  let current = null;

  const title = el('h2', { id: 'restore-heading', testid: 'restore-title' }, 'Restore');
  const close = () => { container.hidden = true; current = null; };
  const form = el('form', { class: 'form-grid', testid: 'restore-form', autocomplete: 'off' });
  fill(container,
    el('div', { class: 'card-head' }, title,
      el('button', { type: 'button', class: 'alert-close', 'aria-label': 'Close', testid: 'restore-close', onclick: close }, '×')),
    el('p', { class: 'help', testid: 'restore-note' }),
    form);
  container.setAttribute('aria-labelledby', 'restore-heading');

  async function loadLookups() {
    const [vms, nodes, storages, templates, networks] = await Promise.all([
      items('/vms'), items('/nodes'), items('/storages'), items('/vm-templates'),
      items('/networks').catch(() => [])]);
    Object.assign(lookups, { vms, nodes, storages, templates, networks });
  }

  function passphraseField(backup) {
    if (!backup.encrypted) return null;
    return el('label', null, 'Passphrase',
      el('input', { name: 'passphrase', type: 'password', required: true, maxlength: 1024,
        autocomplete: 'current-password', testid: 'restore-passphrase' }));
  }

  function vmFields(backup) {
    const vm = lookups.vms.find((v) => v.id === backup.vm);
    const mode = (value, text, help, disabled) => el('label', { class: 'check' },
      el('input', { type: 'radio', name: 'mode', value, testid: `restore-mode-${value}`, disabled,
        onchange: toggle }), el('span', null, text, el('small', { class: 'muted' }, ` — ${help}`)));
    const newVm = el('div', { class: 'wide form-grid', testid: 'restore-new-fields' },
      el('label', null, 'New VM name',
        el('input', { name: 'name', maxlength: 63, testid: 'restore-name',
          value: `${backup.vm_name || 'vm'}-restored` })),
      el('label', null, 'Node', el('select', { name: 'node', testid: 'restore-node' },
        options(lookups.nodes, { none: 'chosen by the panel', label: (n) => `${n.name} (${n.status})` }))),
      el('label', null, 'Storage', el('select', { name: 'storage', testid: 'restore-storage' },
        options(lookups.storages, { none: 'as in the backup', selected: vm && vm.storage,
          label: (s) => `${s.name} (${s.backend})` }))),
      el('label', null, 'VM template', el('select', { name: 'vm_template', testid: 'restore-template' },
        options(lookups.templates, { none: 'as in the backup', selected: vm && vm.vm_template }))),
      el('label', null, 'Network', el('select', { name: 'network', testid: 'restore-network' },
        options(lookups.networks, { none: 'no interface' }))));
    const replaceHelp = vm ? `${vm.name} is stopped, its disks are replaced once the archive is verified`
      : `${backup.vm_name || 'the VM'} no longer exists`;
    fill(form,
      el('div', { class: 'choice-row', role: 'radiogroup', 'aria-label': 'Where to restore' },
        mode('replace', 'In place', replaceHelp, !vm),
        mode('new', 'As a new VM', 'the backed-up VM is left alone')),
      newVm,
      el('label', { class: 'check wide' }, el('input', { type: 'checkbox', name: 'start', testid: 'restore-start' }),
        'Start the VM after the restore'),
      el('div', { class: 'form-actions wide' },
        el('button', { type: 'button', testid: 'restore-cancel', onclick: close }, 'Cancel'),
        el('button', { type: 'submit', class: 'btn-warn', testid: 'restore-submit' }, 'Restore')));
    form.elements.mode.value = vm ? 'replace' : 'new';
    toggle();
  }

  function toggle() {
    const fields = $('[data-testid="restore-new-fields"]', form);
    if (!fields) return;
    const isNew = form.elements.mode.value === 'new';
    fields.hidden = !isNew;
    form.elements.name.required = isNew;
  }

  function restoreBody(backup) {
    const body = {};
    const value = (name) => (form.elements[name] ? form.elements[name].value.trim() : '');
    if (backup.kind === 'vm') {
      body.mode = form.elements.mode.value;
      body.start = form.elements.start.checked;
      if (body.mode === 'new') {
        body.name = value('name');
        for (const key of ['node', 'storage', 'vm_template', 'network']) {
          if (value(key)) body[key] = value(key);
        }
      }
    }
    if (value('passphrase')) body.passphrase = form.elements.passphrase.value;
    return body;
  }

  function show(backup, kind) {
    current = { backup, kind };
    clearError();
    container.hidden = false;
    container.dataset.backupId = backup.id;
    container.dataset.kind = kind;
    container.scrollIntoView({ block: 'nearest' });
  }

  async function restore(backup) {
    if (backup.kind === 'vm') await loadLookups();
    show(backup, 'restore');
    title.textContent = `Restore ${backup.name}`;
    if (backup.kind === 'vm') {
      $('[data-testid="restore-note"]', container).textContent = 'Every archive of the backup\'s chain '
        + 'is verified before anything is written; a failed restore leaves the disks as they were.';
      vmFields(backup);
    } else {
      $('[data-testid="restore-note"]', container).textContent = 'The panel checks the archive; to load '
        + 'it, download it and run "python app.py restore-panel ARCHIVE" on a stopped panel.';
      fill(form, passphraseField(backup), el('div', { class: 'form-actions wide' },
        el('button', { type: 'button', testid: 'restore-cancel', onclick: close }, 'Cancel'),
        el('button', { type: 'submit', class: 'btn-warn', testid: 'restore-submit' }, 'Check the archive')));
    }
    const first = $('input:not([type=radio]):not([disabled]), select', form);
    if (first) first.focus();
  }

  async function startVerify(backup, button, body = {}) {
    const answer = await busy(button, () => post(`/backups/${encode(backup.id)}/actions/verify`, body),
      `Verify ${backup.name}`);
    if (!answer) return false;
    showNotice(`Verifying ${backup.name}…`);
    follow(answer.task);
    return true;
  }

  /** Verify at once; an encrypted panel backup first asks for its passphrase. */
  async function verify(backup, button) {
    if (!backup.encrypted) {
      await startVerify(backup, button);
      return;
    }
    show(backup, 'verify');
    title.textContent = `Verify ${backup.name}`;
    $('[data-testid="restore-note"]', container).textContent = 'This backup is encrypted: give its passphrase.';
    fill(form, passphraseField(backup), el('div', { class: 'form-actions wide' },
      el('button', { type: 'button', testid: 'restore-cancel', onclick: close }, 'Cancel'),
      el('button', { type: 'submit', class: 'btn-primary', testid: 'restore-submit' }, 'Verify')));
    form.elements.passphrase.focus();
  }

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    if (!current) return;
    const { backup, kind } = current;
    const button = $('[data-testid="restore-submit"]', form);
    if (kind === 'verify') {
      if (await startVerify(backup, button, { passphrase: form.elements.passphrase.value })) close();
      return;
    }
    const body = restoreBody(backup);
    if (body.mode === 'replace' && !window.confirm(
      `Replace the disks of ${backup.vm_name} with this backup? Its current disks are deleted.`)) return;
    const answer = await busy(button, () => post(`/backups/${encode(backup.id)}/actions/restore`, body),
      `Restore ${backup.name}`);
    if (!answer) return;
    close();
    showNotice(body.mode === 'new' ? `Restoring ${backup.name} as VM ${body.name}…` : `Restoring ${backup.name}…`);
    follow(answer.task);
  });

  return { restore, verify, close };
}
