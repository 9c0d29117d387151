% rebase('base.tpl', title=title, user=user, csrf=csrf, page=page)
<div class="page-head">
  <h1>Backup targets</h1>
  <div class="actions">
    <a href="/backups" class="link-button" data-testid="link-backups">Backups</a>
    <a href="/backup-schedules" class="link-button" data-testid="link-schedules">Schedules</a>
  </div>
</div>
% if user['role'] != 'admin':
<p class="warning" data-testid="admin-only">Only an administrator manages backup targets.</p>
% else:
<section class="card">
  <table class="table" data-testid="target-table">
    <thead><tr><th>Name</th><th>Type</th><th>Options</th><th>Check</th><th></th></tr></thead>
    <tbody id="target-rows"><tr><td colspan="5" class="muted">Loading…</td></tr></tbody>
  </table>
</section>
<section class="card">
  <h2>Add a backup target</h2>
  <p class="help intro">The panel checks a target before it keeps it (it connects, logs in and writes a
    test file). Passwords and other secrets are stored on the server only and never shown again.</p>
  <form id="create-target" class="form-grid" data-testid="create-target-form" autocomplete="off">
    <label>Name
      <input name="name" required maxlength="63" data-testid="target-name">
    </label>
    <label>Type
      <select name="backend" required data-testid="target-backend"></select>
    </label>
    <p class="help wide" data-testid="target-backend-description"></p>
    <fieldset class="wide schema-fields" data-testid="target-options">
      <legend>Options</legend>
    </fieldset>
    <label class="wide">Description
      <input name="description" maxlength="500" data-testid="target-description">
    </label>
    <div class="form-actions"><button type="submit" class="btn-primary" data-testid="create-target-submit">Check and add</button></div>
  </form>
</section>
% end
