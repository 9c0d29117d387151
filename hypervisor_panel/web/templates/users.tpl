% rebase('base.tpl', title=title, user=user, csrf=csrf, page=page)
<h1>Users</h1>
% if user['role'] != 'admin':
<p class="muted" data-testid="users-admin-only">Only admins manage users.</p>
% else:
<section class="card">
  <table class="table" data-testid="user-table">
    <thead><tr><th>Name</th><th>Role</th><th>Used / quota</th><th>Permissions</th><th></th></tr></thead>
    <tbody id="user-rows"><tr><td colspan="5" class="muted">Loading…</td></tr></tbody>
  </table>
</section>
<section class="card">
  <h2 id="user-form-title">Create user</h2>
  <form id="user-form" class="form-grid" data-testid="user-form" autocomplete="off">
    <label>Name
      <input name="name" required maxlength="63" data-testid="user-name-input">
    </label>
    <label>Password <small id="password-hint">(8 characters at least)</small>
      <input name="password" type="password" minlength="8" maxlength="256" autocomplete="new-password" data-testid="user-password">
    </label>
    <label>Role
      <select name="role" data-testid="user-role-input"><option value="user">user</option><option value="admin">admin</option></select>
    </label>
    <fieldset class="wide">
      <legend>Quota <small>(empty: no limit; admins have none)</small></legend>
      <div class="form-grid">
        <label>VMs <input name="q_vms" type="number" min="0" step="1" data-testid="quota-vms"></label>
        <label>vCPUs <input name="q_vcpus" type="number" min="0" step="1" data-testid="quota-vcpus"></label>
        <label>RAM (MiB) <input name="q_memory_mib" type="number" min="0" step="1" data-testid="quota-memory_mib"></label>
        <label>Disk (GiB) <input name="q_disk_gib" type="number" min="0" step="1" data-testid="quota-disk_gib"></label>
        <label>IP addresses <input name="q_ips" type="number" min="0" step="1" data-testid="quota-ips"></label>
        <label>Backups <input name="q_backups" type="number" min="0" step="1" data-testid="quota-backups"></label>
        <label>Snapshots <input name="q_snapshots" type="number" min="0" step="1" data-testid="quota-snapshots"></label>
      </div>
    </fieldset>
    <fieldset class="wide">
      <legend>Permissions</legend>
      <label class="check"><input type="checkbox" name="p_add_recipes" data-testid="perm-add_recipes"> May add recipes</label>
      <label class="check"><input type="checkbox" name="p_upload_isos" data-testid="perm-upload_isos"> May upload installer ISOs</label>
    </fieldset>
    <div class="form-actions">
      <button type="submit" class="btn-primary" data-testid="user-submit">Create user</button>
      <button type="button" class="btn-quiet" id="user-cancel" data-testid="user-cancel" hidden>Cancel</button>
    </div>
  </form>
</section>
% end
