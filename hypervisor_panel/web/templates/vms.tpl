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
    <label>Disk from image
      <select name="image" data-testid="vm-image"><option value="">Empty disk</option></select>
    </label>
    <label>Network
      <select name="network" data-testid="vm-network"><option value="">No network</option></select>
    </label>
% if user['role'] == 'admin':
    <label>IP address <small>(optional)</small>
      <input name="ip" maxlength="45" data-testid="vm-ip" placeholder="automatic" disabled>
    </label>
% end
    <label class="check"><input type="checkbox" name="start" data-testid="vm-start-now"> Start after creation</label>
    <div class="form-actions"><button type="submit" class="btn-primary" data-testid="create-vm-submit">Create VM</button></div>
  </form>
</section>
