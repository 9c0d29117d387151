// The backup schedule form: create, or edit an existing schedule (PATCH with what it shows).
// When (cron or interval), what (VM selection, the panel), target, full_every, retention,
// the missed-run policy and paused; the panel passphrase is write-only ("set" when it is).

import { api, post } from './api.js';
import { $, $$, el, fill } from './dom.js';
import { encode } from './backup_common.js';
import { busy, clearError, showNotice } from './ui.js';

export const RULES = ['keep_last', 'keep_hourly', 'keep_daily', 'keep_weekly', 'keep_monthly', 'keep_yearly'];

const form = $('#schedule-form');
const title = $('[data-testid="schedule-form-title"]');
const cancel = $('[data-testid="schedule-cancel"]');
const submit = $('[data-testid="schedule-submit"]');
const lookups = { targets: [], vms: [], nodes: [] };
let editing = null; // the schedule being edited, or null for a new one
let onSaved = async () => {};

const field = (name) => form.elements[name];

function toggle() {
  const when = form.elements.when.value;
  for (const node of $$('[data-when]', form)) node.hidden = node.dataset.when !== when;
  const mode = field('vms_mode').value;
  for (const node of $$('[data-select]', form)) node.hidden = node.dataset.select !== mode;
  $('[data-panel-only]', form).hidden = !field('panel').checked;
}

function choices(container, list, name, label, checked) {
  fill(container, list.length ? list.map((x) => el('label', { class: 'check' },
    el('input', { type: 'checkbox', name, value: x.id, checked: checked.has(x.id),
      testid: `${name}-${x.name}`, dataset: { name: x.name } }), label(x)))
    : el('span', { class: 'muted' }, name === 'vm_ids' ? 'No VMs yet.' : 'No nodes.'));
}

function checkedIn(name) {
  return $$(`input[name="${name}"]`, form).filter((box) => box.checked).map((box) => box.value);
}

/** Fill the selects and check lists (keeping what is chosen). */
export function updateLookups({ targets, vms, nodes }) {
  Object.assign(lookups, { targets, vms, nodes });
  const target = field('target');
  const keep = target.value;
  fill(target, targets.length ? targets.map((t) => el('option', { value: t.id }, `${t.name} (${t.backend})`))
    : el('option', { value: '' }, 'no backup target yet: add one first'));
  if (targets.some((t) => t.id === keep)) target.value = keep;
  // What is checked now (or, before the lists exist, what the edited schedule has).
  const chosen = (name, key) => new Set($$(`input[name="${name}"]`, form).length ? checkedIn(name)
    : ((editing && editing.vms) || {})[key] || []);
  const vmIds = chosen('vm_ids', 'ids');
  const nodeIds = chosen('node_ids', 'nodes');
  if (!$$('input[name="vm_ids"]', form).length || changedList('vm_ids', vms)) {
    choices($('[data-testid="schedule-vm-list"]', form), vms, 'vm_ids', (v) => v.name, vmIds);
  }
  if (!$$('input[name="node_ids"]', form).length || changedList('node_ids', nodes)) {
    choices($('[data-testid="schedule-node-list"]', form), nodes, 'node_ids', (n) => n.name, nodeIds);
  }
}

function changedList(name, list) {
  const shown = $$(`input[name="${name}"]`, form).map((box) => box.value).join(',');
  return shown !== list.map((x) => x.id).join(',');
}

function number(name) {
  const text = field(name).value.trim();
  if (text === '') return undefined;
  const value = Number(text);
  if (!Number.isInteger(value)) throw new Error(`${name.replace(/_/g, ' ')} must be a whole number`);
  return value;
}

function selection() {
  const mode = field('vms_mode').value;
  if (mode === 'list') return { mode, ids: checkedIn('vm_ids') };
  if (mode === 'nodes') return { mode, nodes: checkedIn('node_ids') };
  if (mode === 'tags') {
    return { mode, tags: field('vms_tags').value.split(',').map((t) => t.trim()).filter(Boolean) };
  }
  return { mode };
}

/** The request body: everything the form shows (a PATCH leaves out the name). */
function body() {
  const out = { target: field('target').value, vms: selection(), panel: field('panel').checked,
    missed: field('missed').value, paused: field('paused').checked,
    description: field('description').value.trim() };
  if (form.elements.when.value === 'cron') out.cron = field('cron').value.trim();
  else out.interval_minutes = number('interval_minutes');
  const fullEvery = number('full_every');
  if (fullEvery !== undefined) out.full_every = fullEvery;
  out.retention = {};
  for (const rule of RULES) {
    const value = number(rule);
    if (value !== undefined) out.retention[rule] = value;
  }
  if (out.panel && field('passphrase').value) out.passphrase = field('passphrase').value;
  if (!editing) out.name = field('name').value.trim();
  return out;
}

/** Back to an empty "Add a schedule" form. */
export function reset() {
  editing = null;
  form.reset();
  form.dataset.mode = 'create';
  title.textContent = 'Add a schedule';
  submit.textContent = 'Add schedule';
  field('name').disabled = false;
  field('passphrase').placeholder = '';
  cancel.hidden = true;
  updateLookups(lookups);
  toggle();
}

/** Show ``schedule`` in the form for editing. */
export function edit(schedule) {
  reset();
  editing = schedule;
  form.dataset.mode = 'edit';
  form.dataset.scheduleId = schedule.id;
  title.textContent = `Edit schedule ${schedule.name}`;
  submit.textContent = 'Save changes';
  cancel.hidden = false;
  field('name').value = schedule.name;
  field('name').disabled = true; // a schedule keeps its name
  form.elements.when.value = schedule.cron ? 'cron' : 'interval';
  if (schedule.cron) field('cron').value = schedule.cron;
  if (schedule.interval_minutes) field('interval_minutes').value = String(schedule.interval_minutes);
  const vms = schedule.vms || { mode: 'all' };
  field('vms_mode').value = vms.mode;
  field('vms_tags').value = (vms.tags || []).join(', ');
  for (const box of $$('input[name="vm_ids"]', form)) box.checked = (vms.ids || []).includes(box.value);
  for (const box of $$('input[name="node_ids"]', form)) box.checked = (vms.nodes || []).includes(box.value);
  field('panel').checked = Boolean(schedule.panel);
  field('passphrase').placeholder = schedule.encrypted ? 'set (leave empty to keep it)' : '';
  field('target').value = schedule.target;
  field('full_every').value = String(schedule.full_every ?? 6);
  for (const rule of RULES) {
    const value = (schedule.retention || {})[rule];
    field(rule).value = value === undefined ? '' : String(value);
  }
  field('missed').value = schedule.missed || 'run_once';
  field('paused').checked = Boolean(schedule.paused);
  field('description').value = schedule.description || '';
  toggle();
  form.scrollIntoView({ block: 'start' });
  field(schedule.cron ? 'cron' : 'interval_minutes').focus();
}

export function isEditing(id) {
  return Boolean(editing && editing.id === id);
}

/** Wire the form; ``saved(schedule)`` runs after a create or a change. */
export function setUpScheduleForm(saved) {
  onSaved = saved;
  form.addEventListener('change', toggle);
  cancel.addEventListener('click', () => { clearError(); reset(); });
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const wasEditing = editing;
    const label = wasEditing ? `Change schedule ${wasEditing.name}` : `Add schedule ${field('name').value.trim()}`;
    const stored = await busy(submit, () => (wasEditing
      ? api('PATCH', `/backup-schedules/${encode(wasEditing.id)}`, body())
      : post('/backup-schedules', body())), label);
    if (!stored) return;
    clearError();
    showNotice(wasEditing ? `Schedule ${stored.name} changed` : `Schedule ${stored.name} added`);
    reset();
    await onSaved(stored);
  });
  toggle();
}
