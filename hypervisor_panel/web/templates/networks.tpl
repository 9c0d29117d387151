% rebase('base.tpl', title=title, user=user, csrf=csrf, page=page)
<h1>Networks</h1>
% if user['role'] != 'admin':
<section class="card" data-testid="admin-only">
  <p class="muted">Only administrators manage networks. Your VMs' interfaces and addresses are shown on each VM's page.</p>
</section>
% else:
<section class="card">
  <table class="table" data-testid="network-table">
    <thead><tr><th>Name</th><th>Mode</th><th>Options</th><th>State per node</th><th>IP pools</th><th></th></tr></thead>
    <tbody id="network-rows"><tr><td colspan="6" class="muted">Loading…</td></tr></tbody>
  </table>
</section>
<section class="card">
  <h2>Create network</h2>
  <form id="create-network" class="form-grid" data-testid="create-network-form" autocomplete="off">
    <label>Name
      <input name="name" required maxlength="40" data-testid="network-name" placeholder="lan"
        title="Letters, digits, '_' and '-', starting with a letter or digit">
    </label>
    <label>Mode
      <select name="mode" required data-testid="network-mode"></select>
    </label>
    <p class="help wide" data-testid="mode-description"></p>
    <fieldset class="wide schema-fields" data-testid="mode-options">
      <legend>Mode options</legend>
    </fieldset>
    <label class="wide">Description
      <input name="description" maxlength="500" data-testid="network-description">
    </label>
    <div class="form-actions"><button type="submit" class="btn-primary" data-testid="create-network-submit">Create network</button></div>
  </form>
</section>
% end
