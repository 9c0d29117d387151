% rebase('base.tpl', title=title, user=user, csrf=csrf, page=page)
<h1>Virtual machines</h1>
<section class="card">
  <table class="table" data-testid="vm-table">
    <thead><tr><th>Name</th><th>State</th><th>Node</th><th>Addresses</th><th>Template</th><th class="num">vCPUs</th><th class="num">RAM</th><th class="num">Disk</th><th>Actions</th></tr></thead>
    <tbody id="vm-rows"><tr><td colspan="9" class="muted">Loading…</td></tr></tbody>
  </table>
</section>
<section class="card">
  <h2>Create VM</h2>
  <form id="create-vm" class="form-grid" data-testid="create-vm-form" autocomplete="off">
    <label>Name
      <input name="name" required maxlength="63" data-testid="vm-name" placeholder="web1"
        title="Letters, digits, '.', '_' and '-', starting with a letter or digit">
    </label>
    <label>VM template
      <select name="vm_template" required data-testid="vm-template"></select>
    </label>
    <label>Node
      <select name="node" data-testid="vm-node"><option value="">Automatic placement</option></select>
    </label>
    <label>Storage
      <select name="storage" data-testid="vm-storage"><option value="">Node default</option></select>
    </label>
    <label>OS template <small>(optional: installs the OS)</small>
      <select name="os_template" data-testid="vm-os-template"><option value="">None (no OS installed)</option></select>
    </label>
    <label>Disk from image
      <select name="image" data-testid="vm-image"><option value="">Empty disk</option></select>
    </label>
    <p class="help wide" data-testid="vm-os-template-note" hidden></p>
    <label>Network
      <select name="network" data-testid="vm-network"><option value="">No network</option></select>
    </label>
% if user['role'] == 'admin':
    <label>IP address <small>(optional)</small>
      <input name="ip" maxlength="45" data-testid="vm-ip" placeholder="automatic" disabled>
    </label>
% end
    <fieldset class="wide schema-fields" data-testid="vm-nic-options" hidden>
      <legend>Interface options</legend>
    </fieldset>
    <fieldset class="wide schema-fields os-install" data-testid="vm-install" disabled hidden>
      <legend>Guest OS</legend>
      <label>Hostname <small>(default: the VM's name)</small>
        <input name="hostname" maxlength="63" data-testid="vm-hostname" placeholder="web1"
          pattern="[A-Za-z0-9]([A-Za-z0-9\-]{0,61}[A-Za-z0-9])?" title="Letters, digits and '-' (not first or last)">
      </label>
      <label>Root password <small>(optional; at least 8 characters; only its hash reaches the guest)</small>
        <input name="password" type="password" minlength="8" maxlength="256" autocomplete="new-password" data-testid="vm-password">
      </label>
      <label class="wide">SSH public keys for root <small>(one per line: ssh-ed25519 AAAA… comment)</small>
        <textarea name="ssh_keys" rows="3" spellcheck="false" data-testid="vm-ssh-keys" placeholder="ssh-ed25519 AAAAC3Nza… you@laptop"></textarea>
      </label>
      <label class="wide">Recipe <small>(run once the OS is up; only those suiting the template's tags)</small>
        <select name="recipe" data-testid="vm-recipe"><option value="">No recipe</option></select>
      </label>
      <fieldset class="wide schema-fields nested" data-testid="vm-recipe-params" hidden>
        <legend>Recipe parameters</legend>
      </fieldset>
    </fieldset>
    <label class="check"><input type="checkbox" name="start" data-testid="vm-start-now"> Start after creation</label>
    <div class="form-actions"><button type="submit" class="btn-primary" data-testid="create-vm-submit">Create VM</button></div>
  </form>
</section>
