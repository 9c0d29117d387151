% rebase('base.tpl', title=title, user=user, csrf=csrf, page=page)
<div class="page-head">
  <h1>Backup schedules</h1>
  <div class="actions">
    <a href="/backups" class="link-button" data-testid="link-backups">Backups</a>
    <a href="/backup-targets" class="link-button" data-testid="link-targets">Targets</a>
  </div>
</div>
% if user['role'] != 'admin':
<p class="warning" data-testid="admin-only">Only an administrator manages backup schedules.</p>
% else:
<section class="card backup-tasks" data-testid="backup-activity" aria-live="polite" hidden></section>
<section class="card">
  <table class="table" data-testid="schedule-table">
    <thead><tr><th>Name</th><th>When</th><th>What</th><th>Target</th><th>Policy</th><th>Next run</th><th>Last run</th><th></th></tr></thead>
    <tbody id="schedule-rows"><tr><td colspan="8" class="muted">Loading…</td></tr></tbody>
  </table>
</section>
<section class="card" data-testid="schedule-card">
  <div class="card-head">
    <h2 data-testid="schedule-form-title">Add a schedule</h2>
    <button type="button" class="btn-small" data-testid="schedule-cancel" hidden>Cancel editing</button>
  </div>
  <form id="schedule-form" class="form-grid" data-testid="schedule-form" autocomplete="off">
    <label>Name
      <input name="name" required maxlength="63" data-testid="schedule-name">
    </label>
    <label>Target
      <select name="target" required data-testid="schedule-target"></select>
    </label>
    <fieldset class="wide schema-fields" data-testid="schedule-when">
      <legend>When (UTC)</legend>
      <div class="choice-row" role="radiogroup" aria-label="How the schedule fires">
        <label class="check"><input type="radio" name="when" value="cron" checked data-testid="schedule-when-cron"> Cron expression</label>
        <label class="check"><input type="radio" name="when" value="interval" data-testid="schedule-when-interval"> Every N minutes</label>
      </div>
      <label data-when="cron">Cron <small>(minute hour day month weekday, UTC)</small>
        <input name="cron" maxlength="100" spellcheck="false" placeholder="30 2 * * *" value="30 2 * * *" data-testid="schedule-cron">
      </label>
      <label data-when="interval" hidden>Interval <small>(minutes)</small>
        <input name="interval_minutes" type="number" min="1" max="525600" step="1" value="60" data-testid="schedule-interval">
      </label>
    </fieldset>
    <fieldset class="wide schema-fields" data-testid="schedule-what">
      <legend>What</legend>
      <label>VMs
        <select name="vms_mode" data-testid="schedule-vms-mode">
          <option value="all">all VMs</option><option value="list">chosen VMs</option>
          <option value="tags">VMs with a tag</option><option value="nodes">VMs on chosen nodes</option>
          <option value="none">no VMs</option>
        </select>
      </label>
      <div class="choice-list" data-select="list" data-testid="schedule-vm-list" hidden></div>
      <label data-select="tags" hidden>Tags <small>(comma separated)</small>
        <input name="vms_tags" maxlength="1000" spellcheck="false" data-testid="schedule-vm-tags">
      </label>
      <div class="choice-list" data-select="nodes" data-testid="schedule-node-list" hidden></div>
      <label class="check"><input type="checkbox" name="panel" data-testid="schedule-panel"> Also back up the panel</label>
      <label data-panel-only hidden>Panel passphrase <small>(optional, at least 8 characters; encrypts the panel's backups)</small>
        <input name="passphrase" type="password" minlength="8" maxlength="1024" autocomplete="new-password" data-testid="schedule-passphrase">
      </label>
    </fieldset>
    <fieldset class="wide schema-fields" data-testid="schedule-policy">
      <legend>Full and incremental backups, retention</legend>
      <label>Full backup every <small>(incrementals in between; 0: always full)</small>
        <input name="full_every" type="number" min="0" max="1000" step="1" value="6" data-testid="schedule-full-every">
      </label>
% for rule, text in (("keep_last", "Keep last"), ("keep_hourly", "Hourly"), ("keep_daily", "Daily"), ("keep_weekly", "Weekly"), ("keep_monthly", "Monthly"), ("keep_yearly", "Yearly")):
      <label>{{text}} <small>(backups)</small>
        <input name="{{rule}}" type="number" min="0" max="100000" step="1" data-testid="schedule-{{rule}}">
      </label>
% end
      <p class="help wide">Each rule keeps the newest backup of that many periods (like Proxmox's keep-* options);
        a backup kept by any rule stays, with the backups it builds on. No rule keeps everything.</p>
    </fieldset>
    <label>A run missed while the panel was down
      <select name="missed" data-testid="schedule-missed">
        <option value="run_once">runs once at start</option><option value="skip">is skipped</option>
      </select>
    </label>
    <label class="check"><input type="checkbox" name="paused" data-testid="schedule-paused"> Paused</label>
    <label class="wide">Description
      <input name="description" maxlength="500" data-testid="schedule-description">
    </label>
    <div class="form-actions"><button type="submit" class="btn-primary" data-testid="schedule-submit">Add schedule</button></div>
  </form>
</section>
% end
