// Nodes: connection status and resources.

import { items } from './api.js';
import { $, badge, el, fill, fmtMiB, freeMemoryMiB, usageBar } from './dom.js';
import { changed, every } from './ui.js';

const rows = $('#node-rows');

function memoryCell(r) {
  if (!r.memory_mib) return '—';
  const free = freeMemoryMiB(r);
  if (free === null) return [fmtMiB(r.memory_mib), el('div', { class: 'muted' }, 'free memory not reported')];
  return [
    usageBar(r.memory_mib - free, r.memory_mib, { label: 'memory in use' }),
    el('small', { class: 'muted' }, `${fmtMiB(free)} free of ${fmtMiB(r.memory_mib)}`),
  ];
}

async function load() {
  const nodes = await items('/nodes');
  if (!changed('nodes', nodes)) return;
  if (!nodes.length) {
    fill(rows, el('tr', null, el('td', { colspan: 7, class: 'muted' }, 'No nodes.')));
    return;
  }
  fill(rows, nodes.map((n) => {
    const r = n.resources || {};
    return el('tr', { testid: 'node-row', dataset: { name: n.name } },
      el('td', null, el('strong', null, n.name),
        n.kind === 'demo' ? el('span', { class: 'tag tag-demo', testid: 'node-demo' }, 'demo') : null,
        n.label ? el('div', { class: 'muted' }, n.label) : null),
      el('td', null, badge(n.status, { testid: 'node-status' }),
        n.status_reason ? el('div', { class: 'error-text' }, n.status_reason) : null),
      el('td', null, el('code', null, n.uri || n.host || '—')),
      el('td', null, r.cpus ? `${r.cpus} × ${r.cpu_model || 'CPU'}${r.mhz ? ` @ ${r.mhz} MHz` : ''}` : '—',
        r.arch ? el('div', { class: 'muted' }, `${r.arch}; ${(r.domain_types || []).join(', ')}`) : null),
      el('td', { class: 'memory-cell' }, memoryCell(r)),
      el('td', null, r.domains === undefined ? '—' : `${r.running} running / ${r.domains} defined`),
      el('td', { class: 'muted' }, r.libvirt_version ? `libvirt ${r.libvirt_version}` : '—',
        r.hypervisor_version ? el('div', null, `hypervisor ${r.hypervisor_version}`) : null));
  }));
}

every(10000, load, 'Loading nodes');
