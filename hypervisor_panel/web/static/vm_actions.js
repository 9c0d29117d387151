// VM lifecycle buttons shared by the VM list and the VM page.

import { del, post } from './api.js';
import { el } from './dom.js';

export const ACTIONS = [
  { action: 'start', label: 'Start', allowed: ['stopped', 'crashed', 'paused'] },
  { action: 'stop', label: 'Stop', allowed: ['running', 'paused', 'stopping'],
    title: 'Ask the guest to shut down (ACPI); powered off if it has not stopped after 60 s' },
  { action: 'reboot', label: 'Reboot', allowed: ['running'] },
  { action: 'destroy', label: 'Destroy', allowed: ['running', 'paused', 'stopping', 'crashed'],
    className: 'btn-warn', title: 'Power off at once (like pulling the plug)',
    confirm: (vm) => `Power off ${vm.name} now? The guest gets no chance to shut down.` },
  { action: 'delete', label: 'Delete', className: 'btn-danger',
    allowed: (state) => !['creating', 'deleting'].includes(state),
    title: 'Delete the VM and its disks',
    confirm: (vm) => `Delete ${vm.name} and its disks? This cannot be undone.` },
];

export function allowed(spec, state) {
  return typeof spec.allowed === 'function' ? spec.allowed(state) : spec.allowed.includes(state);
}

/** Submit an action; resolves with the task from the 202 answer, or null when not confirmed. */
export async function submitAction(vm, spec) {
  if (spec.confirm && !window.confirm(spec.confirm(vm))) return null;
  const id = encodeURIComponent(vm.id);
  const answer = spec.action === 'delete'
    ? await del(`/vms/${id}`)
    : await post(`/vms/${id}/actions/${spec.action}`, {});
  return answer.task;
}

/** The buttons for one VM; ``onClick(spec, button)`` runs the action. */
export function actionButtons(vm, { disabled = false, small = false, onClick }) {
  return ACTIONS.map((spec) => el('button', {
    type: 'button',
    class: [small ? 'btn-small' : '', spec.className || ''].join(' ').trim() || undefined,
    testid: `vm-${spec.action}`,
    title: spec.title,
    disabled: disabled || !allowed(spec, vm.state),
    onclick: (event) => onClick(spec, event.currentTarget),
  }, spec.label));
}
