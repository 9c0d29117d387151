% rebase('base.tpl', title=title, user=user, csrf=csrf, page=page)
<h1>Dashboard</h1>
<div class="grid grid-2">
  <section class="card">
    <h2>Virtual machines</h2>
    <div class="counts" data-testid="vm-counts"><p class="muted">Loading…</p></div>
    <p><a href="/vms">Manage VMs →</a></p>
  </section>
  <section class="card">
    <h2>Tasks</h2>
    <div data-testid="recent-tasks"><p class="muted">Loading…</p></div>
    <p><a href="/tasks">All tasks →</a></p>
  </section>
</div>
<section class="card">
  <h2>Nodes</h2>
  <div class="node-cards" data-testid="node-cards"><p class="muted">Loading…</p></div>
</section>
