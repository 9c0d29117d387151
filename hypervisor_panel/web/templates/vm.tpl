% rebase('base.tpl', title=title, user=user, csrf=csrf, page=page)
<p class="crumbs"><a href="/vms">← Virtual machines</a></p>
<div id="vm" data-vm-id="{{args.get('vm_id', '')}}">
  <div class="page-head">
    <h1 data-testid="vm-title">Virtual machine</h1>
    <span data-testid="vm-state-holder"></span>
    <div class="actions" data-testid="vm-actions"></div>
  </div>
  <p class="warning" data-testid="vm-problem" hidden></p>
  <section class="card migrate-panel" data-testid="migrate-panel" aria-labelledby="migrate-heading" hidden>
    <div class="card-head">
      <h2 id="migrate-heading">Migrate to another node</h2>
      <button type="button" class="alert-close" aria-label="Close" data-testid="migrate-close">×</button>
    </div>
    <p class="help">A running VM moves live (its disks are copied when their storage is not shared);
      a stopped VM moves its definition and disks. The VM keeps its name, addresses and disks.</p>
    <div class="migrate-row">
      <label>Target node
        <select data-testid="migrate-target"></select>
      </label>
      <button type="button" data-testid="migrate-check">Check</button>
      <button type="button" class="btn-primary" data-testid="migrate-submit">Migrate</button>
      <button type="button" data-testid="migrate-cancel">Cancel</button>
    </div>
    <div class="migrate-result" data-testid="migrate-result" aria-live="polite" hidden></div>
  </section>
  <section class="card reinstall-panel" data-testid="reinstall-panel" aria-labelledby="reinstall-heading" hidden>
    <div class="card-head">
      <h2 id="reinstall-heading">Reinstall the OS</h2>
      <button type="button" class="alert-close" aria-label="Close" data-testid="reinstall-close">×</button>
    </div>
    <p class="help">The VM's disk is replaced by a fresh clone of the OS template: <strong>everything
      on it is lost</strong>. Its addresses, MAC addresses and SSH host key stay; the VM is started again.</p>
    <form id="reinstall-form" class="form-grid" data-testid="reinstall-form" autocomplete="off">
      <label>OS template
        <select name="os_template" required data-testid="reinstall-template"></select>
      </label>
      <label>Root password <small>(optional; at least 8 characters)</small>
        <input name="password" type="password" minlength="8" maxlength="256" autocomplete="new-password" data-testid="reinstall-password">
      </label>
      <label class="wide">SSH public keys for root <small>(one per line)</small>
        <textarea name="ssh_keys" rows="2" spellcheck="false" data-testid="reinstall-ssh-keys" placeholder="ssh-ed25519 AAAAC3Nza… you@laptop"></textarea>
      </label>
      <label class="wide">Recipe <small>(optional: run once the new OS is up)</small>
        <select name="recipe" data-testid="reinstall-recipe"><option value="">No recipe</option></select>
      </label>
      <fieldset class="wide schema-fields nested" data-testid="reinstall-recipe-params" hidden>
        <legend>Recipe parameters</legend>
      </fieldset>
      <p class="help wide" data-testid="reinstall-note"></p>
      <div class="form-actions">
        <button type="button" data-testid="reinstall-cancel">Cancel</button>
        <button type="submit" class="btn-warn" data-testid="reinstall-submit">Reinstall</button>
      </div>
    </form>
  </section>
  <div class="grid grid-2">
    <section class="card">
      <h2>Overview</h2>
      <dl class="facts" data-testid="vm-facts"><dt>Loading…</dt><dd></dd></dl>
    </section>
    <section class="card">
      <h2>Live statistics</h2>
      <dl class="facts" data-testid="vm-stats"></dl>
    </section>
  </div>
  <section class="card">
    <h2>Disks</h2>
    <table class="table" data-testid="vm-disks">
      <thead><tr><th>Target</th><th>Volume</th><th>Storage</th><th class="num">Size</th></tr></thead>
      <tbody></tbody>
    </table>
  </section>
  <section class="card" data-testid="vm-interfaces-card" aria-labelledby="interfaces-heading">
    <h2 id="interfaces-heading">Interfaces</h2>
    <table class="table" data-testid="vm-interfaces">
      <thead><tr><th>Device</th><th>Network</th><th>MAC</th><th>Addresses</th><th>Options</th><th></th></tr></thead>
      <tbody><tr><td colspan="6" class="muted">Loading…</td></tr></tbody>
    </table>
    <form id="add-interface" class="inline-form" data-testid="add-interface-form" autocomplete="off">
      <label>Add an interface on
        <select name="network" required data-testid="nic-network"></select>
      </label>
% if user['role'] == 'admin':
      <label>IP address
        <input name="ip" maxlength="45" data-testid="nic-ip" placeholder="next free address">
      </label>
% end
      <button type="submit" data-testid="add-interface-submit">Add interface</button>
      <fieldset class="schema-fields wide" data-testid="nic-options" hidden>
        <legend>Interface options</legend>
      </fieldset>
    </form>
    <p class="help" data-testid="nic-note"></p>
    <details class="advanced" data-testid="network-config">
      <summary>Guest network configuration (cloud-init network-config v2)</summary>
      <pre class="log" data-testid="network-config-text">…</pre>
    </details>
  </section>
  <section class="card" data-testid="vm-recipes-card" aria-labelledby="recipes-heading">
    <h2 id="recipes-heading">Recipes</h2>
    <p class="muted" data-testid="run-recipe-note" hidden></p>
    <form id="run-recipe" class="inline-form" data-testid="run-recipe-form" autocomplete="off">
      <label class="grow">Run a recipe
        <select name="recipe" required data-testid="run-recipe-select"><option value="">Loading…</option></select>
      </label>
      <button type="submit" data-testid="run-recipe-submit">Run recipe</button>
      <fieldset class="schema-fields wide" data-testid="run-recipe-params" hidden>
        <legend>Parameters</legend>
      </fieldset>
    </form>
    <h3>Runs</h3>
    <div class="recipe-runs" data-testid="recipe-runs"><p class="muted">Loading…</p></div>
  </section>
  <section class="card" data-testid="vm-snapshots-card" aria-labelledby="snapshots-heading">
    <h2 id="snapshots-heading">Snapshots</h2>
    <p class="help">A snapshot keeps the VM's disks, and its memory when it runs, inside its qcow2 disks.
      Reverting drops the VM's backup checkpoints: its next backup is a full one.</p>
    <div data-testid="vm-snapshots"><p class="muted">Loading…</p></div>
    <form id="take-snapshot" class="inline-form" data-testid="snapshot-form" autocomplete="off">
      <label>Name
        <input name="name" required maxlength="63" data-testid="snapshot-name"
          pattern="[A-Za-z0-9][A-Za-z0-9._\-]{0,62}" title="Letters, digits, '.', '_' and '-', starting with a letter or digit">
      </label>
      <label class="grow">Description
        <input name="description" maxlength="500" data-testid="snapshot-description" placeholder="optional">
      </label>
      <button type="submit" class="btn-primary" data-testid="snapshot-submit">Take snapshot</button>
    </form>
  </section>
  <section class="card" data-testid="vm-backups-card" aria-labelledby="backups-heading">
    <div class="card-head">
      <h2 id="backups-heading">Backups</h2>
      <a href="/backups" class="small" data-testid="vm-backups-all">all backups</a>
    </div>
    <div class="backup-tasks" data-testid="vm-backup-activity" aria-live="polite" hidden></div>
% if user['role'] == 'admin':
    <section class="restore-panel nested-panel" data-testid="restore-panel" hidden></section>
% end
    <div data-testid="vm-backups"><p class="muted">Loading…</p></div>
% if user['role'] == 'admin':
    <form id="vm-backup" class="inline-form" data-testid="vm-backup-form" autocomplete="off">
      <label>Back up to
        <select name="target" required data-testid="vm-backup-target"></select>
      </label>
      <label>Mode
        <select name="mode" data-testid="vm-backup-mode">
          <option value="auto">auto (incremental when possible)</option>
          <option value="full">full</option>
          <option value="incremental">incremental</option>
        </select>
      </label>
      <button type="submit" class="btn-primary" data-testid="vm-backup-submit">Back up now</button>
    </form>
    <p class="help" data-testid="vm-backup-note" hidden></p>
% end
  </section>
  <section class="card" data-testid="last-task">
    <h2>Last task</h2>
    <div class="task-panel"><p class="muted">No task has run on this VM yet.</p></div>
  </section>
  <section class="card">
    <div class="card-head">
      <h2>Serial console</h2>
      <button type="button" class="btn-small" data-testid="console-refresh">Refresh</button>
    </div>
    <p class="muted" data-testid="console-note" hidden></p>
    <pre class="console" data-testid="console" hidden></pre>
  </section>
</div>
