% rebase('base.tpl', title=title, user=user, csrf=csrf, page=page)
<div class="page-head">
  <h1>Tasks</h1>
  <label class="inline">Show
    <select id="task-filter" data-testid="task-filter">
      <option value="">all</option>
      <option value="running">running</option>
      <option value="queued">queued</option>
      <option value="succeeded">succeeded</option>
      <option value="failed">failed</option>
      <option value="cancelled">cancelled</option>
    </select>
  </label>
</div>
<section class="card">
  <table class="table" data-testid="task-table">
    <thead><tr><th>Started</th><th>Task</th><th>State</th><th>Progress</th><th>Duration</th><th></th></tr></thead>
    <tbody id="task-rows"><tr><td colspan="6" class="muted">Loading…</td></tr></tbody>
  </table>
</section>
