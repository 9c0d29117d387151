% rebase('base.tpl', title=title, user=user, csrf=csrf, page=page)
% admin = user['role'] == 'admin'
<div class="page-head">
  <h1>Backups</h1>
% if admin:
  <div class="actions">
    <a href="/backup-schedules" class="link-button" data-testid="link-schedules">Schedules</a>
    <a href="/backup-targets" class="link-button" data-testid="link-targets">Targets</a>
  </div>
% end
</div>
% if not admin:
<p class="help" data-testid="backups-read-only">The backups of your VMs. Only an administrator takes, verifies, restores or deletes backups.</p>
% end
<section class="card backup-tasks" data-testid="backup-activity" aria-live="polite" hidden></section>
% if admin:
<section class="card restore-panel" data-testid="restore-panel" hidden></section>
% end
<section class="card">
  <form class="inline-form filters" data-testid="backup-filters" autocomplete="off">
    <label>VM
      <select name="vm" data-testid="backup-filter-vm"><option value="">all</option></select>
    </label>
    <label>Target
      <select name="target" data-testid="backup-filter-target"><option value="">all</option></select>
    </label>
% if admin:
    <label>Kind
      <select name="kind" data-testid="backup-filter-kind">
        <option value="">VMs and the panel</option><option value="vm">VM backups</option><option value="panel">panel backups</option>
      </select>
    </label>
% end
    <label>Group by
      <select name="group" data-testid="backup-group-by">
        <option value="vm">VM</option><option value="target">target</option>
      </select>
    </label>
  </form>
  <div data-testid="backup-groups" id="backup-groups"><p class="muted">Loading…</p></div>
</section>
% if admin:
<section class="card">
  <h2>Back up the panel</h2>
  <p class="help intro">The panel's store, settings, secrets, SSH keys and plugin data, taken while it runs.
    A passphrase encrypts the archive; without it the archive holds the secrets in clear.</p>
  <form id="panel-backup" class="inline-form" data-testid="panel-backup-form" autocomplete="off">
    <label>Target
      <select name="target" required data-testid="panel-backup-target"></select>
    </label>
    <label>Passphrase <small>(optional, at least 8 characters)</small>
      <input name="passphrase" type="password" minlength="8" maxlength="1024" autocomplete="new-password" data-testid="panel-backup-passphrase">
    </label>
    <button type="submit" class="btn-primary" data-testid="panel-backup-submit">Back up the panel</button>
  </form>
  <p class="help" data-testid="panel-backup-note" hidden></p>
</section>
% end
