// Nodes: connection status and resources, maintenance, removal, and adding a node over SSH.

import { api, ApiError, del, get, items, post } from './api.js';
import { $, $$, badge, el, fill, fmtMiB, freeMemoryMiB, progressBar, usageBar } from './dom.js';
import {
  busy, changed, clearError, errorView, every, followTask, isAdmin, showError, showNotice,
} from './ui.js';

const rows = $('#node-rows');
const columns = isAdmin ? 8 : 7;
let nodes = [];
const running = new Map(); // node id -> the maintenance (evacuation) task it runs

function memoryCell(r) {
  if (!r.memory_mib) return '—';
  const free = freeMemoryMiB(r);
  if (free === null) return [fmtMiB(r.memory_mib), el('div', { class: 'muted' }, 'free memory not reported')];
  return [
    usageBar(r.memory_mib - free, r.memory_mib, { label: 'memory in use' }),
    el('small', { class: 'muted' }, `${fmtMiB(free)} free of ${fmtMiB(r.memory_mib)}`),
  ];
}

function statusCell(n) {
  const reason = n.status_reason || '';
  const out = [badge(n.status, { testid: 'node-status' })];
  out[0].title = reason || n.status;
  if (n.status === 'maintenance') {
    out.push(el('div', { class: 'muted node-sub', testid: 'node-status-reason' },
      reason ? `Reason: ${reason}` : 'No new VMs are placed here'));
  } else if (reason) {
    out.push(el('div', { class: 'error-text', testid: 'node-status-reason' }, reason));
  }
  if (n.maintenance && n.status !== 'maintenance') {
    out.push(el('div', null, el('span', { class: 'tag tag-maint' }, 'maintenance')));
  }
  const task = running.get(n.id);
  if (task) {
    out.push(el('div', { class: 'row-task', testid: 'node-task' },
      progressBar(task.progress, { tone: `task-${task.state}`, label: task.name }),
      el('small', null, `${task.name || 'Evacuating'} · ${task.state}`)));
  }
  return out;
}

function connectionCell(n) {
  if (n.kind === 'ssh') {
    const host = n.host && n.host.includes(':') ? `[${n.host}]` : n.host;
    return [
      el('code', null, `${n.username || 'root'}@${host}:${n.port || 22}`),
      n.host_key_fingerprint ? el('div', { class: 'muted node-sub mono', title: 'pinned SSH host key',
        testid: 'node-fingerprint' }, n.host_key_fingerprint) : null,
      n.migration_host && n.migration_host !== n.host
        ? el('div', { class: 'muted node-sub' }, `migration via ${n.migration_host}`) : null,
    ];
  }
  return el('code', null, n.uri || n.host || '—');
}

function actionsCell(n) {
  const inMaintenance = Boolean(n.maintenance);
  return el('td', { class: 'actions' },
    el('button', {
      type: 'button', class: `btn-small${inMaintenance ? '' : ' btn-warn'}`, testid: 'node-maintenance',
      dataset: { maintenance: String(inMaintenance) },
      'aria-pressed': String(inMaintenance),
      disabled: running.has(n.id),
      title: inMaintenance ? 'Let the node take new VMs again'
        : 'Place no new VMs here and migrate its VMs to other nodes',
      onclick: (event) => toggleMaintenance(n, event.currentTarget),
    }, inMaintenance ? 'End maintenance' : 'Maintenance…'),
    el('button', {
      type: 'button', class: 'btn-small btn-danger', testid: 'node-remove',
      disabled: running.has(n.id),
      title: 'Remove the node from the panel (it must have no VMs)',
      onclick: (event) => removeNode(n, event.currentTarget),
    }, 'Remove'));
}

function render() {
  if (!changed('nodes', [nodes, [...running.values()]])) return;
  if (!nodes.length) {
    fill(rows, el('tr', null, el('td', { colspan: columns, class: 'muted' }, 'No nodes.')));
    return;
  }
  fill(rows, nodes.map((n) => {
    const r = n.resources || {};
    return el('tr', { testid: 'node-row', dataset: { name: n.name, nodeId: n.id, status: n.status } },
      el('td', { class: 'name-cell' }, el('strong', null, n.name),
        n.kind === 'demo' ? el('span', { class: 'tag tag-demo', testid: 'node-demo' }, 'demo') : null,
        n.kind === 'local' ? el('span', { class: 'tag' }, 'local') : null,
        n.label ? el('div', { class: 'muted' }, n.label) : null),
      el('td', { class: 'state-cell' }, statusCell(n)),
      el('td', { class: 'connection-cell' }, connectionCell(n)),
      el('td', null, r.cpus ? `${r.cpus} × ${r.cpu_model || 'CPU'}${r.mhz ? ` @ ${r.mhz} MHz` : ''}` : '—',
        r.arch ? el('div', { class: 'muted' }, `${r.arch}; ${(r.domain_types || []).join(', ')}`) : null),
      el('td', { class: 'memory-cell' }, memoryCell(r)),
      el('td', { class: 'nowrap' }, r.domains === undefined ? '—' : [`${r.running} running`,
        el('div', { class: 'muted' }, `${r.domains} defined`)]),
      el('td', { class: 'muted' }, r.libvirt_version ? `libvirt ${r.libvirt_version}` : '—',
        r.hypervisor_version ? el('div', null, `hypervisor ${r.hypervisor_version}`) : null),
      isAdmin ? actionsCell(n) : null);
  }));
}

async function load() {
  nodes = await items('/nodes');
  render();
}

// -- maintenance and removal ---------------------------------------------------------------
async function toggleMaintenance(node, button) {
  const on = !node.maintenance;
  const body = { maintenance: on };
  if (on) {
    const reason = window.prompt(
      `Put node ${node.name} into maintenance?\n\nNo new VMs are placed on it and its VMs are ` +
      'migrated to other nodes.\n\nReason (optional):', '');
    if (reason === null) return;
    if (reason.trim()) body.maintenance_reason = reason.trim().slice(0, 200);
  }
  const answer = await busy(button, () => api('PATCH', `/nodes/${encodeURIComponent(node.id)}`, body),
    on ? `Maintenance for ${node.name}` : `End maintenance of ${node.name}`);
  if (!answer) return;
  const { task, ...updated } = answer;
  nodes = nodes.map((n) => (n.id === node.id ? updated : n));
  render();
  if (!on) {
    showNotice(`Node ${node.name} takes new VMs again`);
    return;
  }
  if (!task) return;
  running.set(node.id, task);
  render();
  let final = null;
  try {
    final = await followTask(task, { onUpdate: (current) => { running.set(node.id, current); render(); } });
  } catch {
    final = null;
  } finally {
    running.delete(node.id);
  }
  if (final && final.state === 'succeeded') {
    const moved = (final.result && final.result.moved) || [];
    showNotice(`Node ${node.name} is in maintenance` +
      (moved.length ? `; moved ${moved.length} VM(s): ${moved.join(', ')}` : '; it had no VMs to move'));
  } else if (final && final.state === 'failed') {
    showError(final.error, `Evacuating ${node.name}`);
  }
  await load().catch((error) => showError(error, 'Loading nodes'));
}

async function removeNode(node, button) {
  if (!window.confirm(`Remove node ${node.name} from the panel?\n\nIts VMs must have been ` +
    'migrated or deleted first. Nothing on the machine itself is deleted.')) return;
  const done = await busy(button, async () => {
    await del(`/nodes/${encodeURIComponent(node.id)}`);
    return true;
  }, `Remove node ${node.name}`);
  if (!done) return;
  showNotice(`Node ${node.name} removed`);
  await load().catch((error) => showError(error, 'Loading nodes'));
}

// -- adding a node: (1) fetch and confirm the host key, (2) log in --------------------------
const form = $('#add-node');

function setupAddNode() {
  const field = (name) => form.elements.namedItem(name);
  const testid = (id) => $(`[data-testid="${id}"]`, form.parentElement);
  const fetchButton = testid('fetch-host-key');
  const keyBox = testid('host-key');
  const keyError = testid('host-key-error');
  const keyNote = testid('host-key-note');
  const confirmBox = testid('host-key-confirm');
  const submit = testid('add-node-submit');
  const hint = testid('add-node-hint');
  const taskBox = testid('add-node-task');
  let hostKey = null; // the answer of /nodes/host-key for the current host and port
  let fetchSeq = 0;
  let submitting = false;

  const target = () => ({ host: field('host').value.trim(), port: Number(field('port').value) || 22 });
  const confirmed = () => Boolean(hostKey && confirmBox.checked);

  function update() {
    const ready = confirmed();
    submit.disabled = !ready || submitting;
    if (submitting) hint.textContent = 'Adding the node…';
    else if (!hostKey) hint.textContent = 'Fetch and confirm the host key first.';
    else if (!ready) hint.textContent = 'Tick “I have checked this fingerprint” to continue.';
    else hint.textContent = `The panel will only accept ${hostKey.fingerprint} for ${hostKey.host}:${hostKey.port}.`;
    hint.classList.toggle('ready', ready && !submitting);
  }

  function forgetKey(note) {
    fetchSeq += 1; // an answer still on its way is for the old host: ignore it
    const had = Boolean(hostKey);
    hostKey = null;
    confirmBox.checked = false;
    keyBox.hidden = true;
    keyError.hidden = true;
    keyNote.hidden = !(had && note);
    if (had && note) keyNote.textContent = note;
    update();
  }

  function showKeyError(error) {
    const parts = [el('strong', null, 'Could not read the host key: '), error.message];
    if (error instanceof ApiError && error.code) {
      parts.push(' ', el('code', { class: 'error-code', testid: 'host-key-error-code' }, error.code));
    }
    fill(keyError, parts);
    keyError.hidden = false;
  }

  async function fetchKey() {
    const wanted = target();
    forgetKey();
    keyNote.hidden = true;
    if (!wanted.host) {
      showKeyError(new Error('enter the host first'));
      field('host').focus();
      return;
    }
    const seq = fetchSeq;
    fetchButton.textContent = 'Fetching…';
    const answer = await busy(fetchButton, async () => {
      try {
        return await post('/nodes/host-key', wanted);
      } catch (error) {
        if (seq === fetchSeq) showKeyError(error);
        throw error;
      }
    }, `Host key of ${wanted.host}:${wanted.port}`);
    fetchButton.textContent = 'Fetch host key';
    if (!answer || seq !== fetchSeq) return;
    hostKey = answer;
    keyError.hidden = true;
    testid('host-key-host').textContent = `${answer.host}:${answer.port}`;
    testid('host-key-type').textContent = answer.key_type;
    testid('host-key-fingerprint').textContent = answer.fingerprint;
    const kind = { 'ssh-ed25519': 'ed25519', 'ssh-rsa': 'rsa', 'ssh-dss': 'dsa' }[answer.key_type]
      || (String(answer.key_type).startsWith('ecdsa') ? 'ecdsa' : '*');
    testid('host-key-command').textContent = `ssh-keygen -lf /etc/ssh/ssh_host_${kind}_key.pub`;
    keyBox.hidden = false;
    update();
  }

  function authChanged() {
    const usePassword = field('auth').value === 'password';
    testid('node-key-field').hidden = usePassword;
    testid('node-password-field').hidden = !usePassword;
  }

  function renderTask(task) {
    const log = Array.isArray(task.log) ? task.log : [];
    fill(taskBox,
      el('div', { class: 'task-head' },
        el('strong', { testid: 'add-node-task-name' }, task.name || 'Add node'),
        badge(task.state, { task: true, testid: 'add-node-task-state' }),
        el('span', { class: 'muted' }, `${Math.round(task.progress || 0)}%`),
        el('a', { href: '/tasks', class: 'muted' }, 'all tasks')),
      progressBar(task.progress, { tone: `task-${task.state}`, testid: 'add-node-task-progress', label: task.name }),
      task.error ? errorView(task.error, { testid: 'add-node-task-error' }) : null,
      el('pre', { class: 'log', testid: 'add-node-task-log' }, log.length ? log.join('\n') : '(no log lines yet)'));
    taskBox.hidden = false;
  }

  async function addNode(event) {
    event.preventDefault();
    if (!confirmed() || submitting) return; // no node without a confirmed host key
    clearError();
    const auth = field('auth').value;
    const body = {
      name: field('name').value.trim(),
      host: hostKey.host,
      port: hostKey.port,
      username: field('username').value.trim() || 'root',
      host_key_fingerprint: hostKey.fingerprint,
    };
    if (auth === 'password') body.password = field('password').value;
    else body.ssh_private_key = field('ssh_private_key').value.trim() ? `${field('ssh_private_key').value.trim()}\n` : '';
    for (const name of ['libvirt_socket', 'migration_host']) {
      const value = field(name).value.trim();
      if (value) body[name] = value;
    }
    if (!body.name) {
      showError('give the node a name', 'Add node');
      field('name').focus();
      return;
    }
    if (auth === 'password' ? !body.password : !body.ssh_private_key) {
      showError(auth === 'password' ? 'enter the password' : 'paste the private key', 'Add node');
      field(auth === 'password' ? 'password' : 'ssh_private_key').focus();
      return;
    }
    submitting = true;
    update();
    field('password').value = ''; // used once, by this request only
    let final = null;
    try {
      const answer = await busy(null, () => post('/nodes', body), `Add node ${body.name}`);
      if (!answer) return;
      renderTask(answer.task);
      final = await followTask(answer.task, { onUpdate: renderTask }).catch(() => null);
    } finally {
      submitting = false;
      update();
    }
    if (!final) return;
    if (final.state === 'succeeded') {
      showNotice(`Node ${body.name} added`);
      form.reset();
      forgetKey();
      authChanged();
    } else if (final.state === 'failed') {
      showError(final.error, `Add node ${body.name}`);
      if (final.error && final.error.code === 'host_key_mismatch') {
        forgetKey('The host key changed since you confirmed it: fetch and check it again.');
      }
    }
    await load().catch((error) => showError(error, 'Loading nodes'));
  }

  for (const name of ['host', 'port']) {
    field(name).addEventListener('input', () =>
      forgetKey('Host or port changed: fetch and confirm the host key again.'));
    field(name).addEventListener('keydown', (event) => {
      if (event.key === 'Enter') {
        event.preventDefault();
        fetchKey();
      }
    });
  }
  fetchButton.addEventListener('click', fetchKey);
  confirmBox.addEventListener('change', update);
  $$('input[name="auth"]', form).forEach((radio) => radio.addEventListener('change', authChanged));
  form.addEventListener('submit', addNode);
  authChanged();
  update();
}

/** Offer the local libvirtd as a node once it answers (a data dir made on the demo node). */
async function offerLocal() {
  const card = $('[data-testid="local-libvirt"]');
  if (!card) return;
  const state = await get('/nodes/local-libvirt');
  card.hidden = !state.offer;
  $('[data-testid="local-libvirt-uri"]', card).textContent = state.uri;
}

function setupLocalOffer() {
  const button = $('[data-testid="add-local-libvirt"]');
  if (!button) return;
  button.addEventListener('click', async () => {
    const node = await busy(button, () => post('/nodes/local-libvirt'), 'Add the local libvirtd');
    if (!node) return;
    showNotice(`Node ${node.name} added (${node.uri})`);
    await Promise.all([offerLocal(), load()]).catch((error) => showError(error, 'Loading nodes'));
  });
}

if (form) setupAddNode();
setupLocalOffer();
every(10000, async () => { await Promise.all([load(), offerLocal()]); }, 'Loading nodes');
