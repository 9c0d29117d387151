% rebase('base.tpl', title=title, user=user, csrf=csrf, page=page)
<h1>Nodes</h1>
<section class="card">
  <table class="table" data-testid="node-table">
    <thead><tr><th>Name</th><th>Status</th><th>Connection</th><th>CPU</th><th>Memory</th><th>VMs</th><th>Versions</th></tr></thead>
    <tbody id="node-rows"><tr><td colspan="7" class="muted">Loading…</td></tr></tbody>
  </table>
</section>
