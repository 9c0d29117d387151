% rebase('base.tpl', title=title, user=user, csrf=csrf, page=page)
<h1>VM templates</h1>
<section class="card">
  <table class="table" data-testid="template-table">
    <thead><tr><th>Name</th><th class="num">RAM</th><th class="num">vCPUs</th><th class="num">CPU shares</th><th class="num">Disk</th><th>Description</th><th></th></tr></thead>
    <tbody id="template-rows"><tr><td colspan="7" class="muted">Loading…</td></tr></tbody>
  </table>
</section>
% if user['role'] == 'admin':
<section class="card">
  <h2>Create VM template</h2>
  <form id="create-template" class="form-grid" data-testid="create-template-form" autocomplete="off">
    <label>Name
      <input name="name" required maxlength="63" data-testid="template-name">
    </label>
    <label>RAM (MiB)
      <input name="memory_mib" type="number" required min="16" step="1" value="1024" data-testid="template-memory">
    </label>
    <label>vCPUs
      <input name="vcpus" type="number" required min="1" max="255" step="1" value="1" data-testid="template-vcpus">
    </label>
    <label>CPU shares <small>(1024 = normal priority)</small>
      <input name="cpu_shares" type="number" min="2" max="262144" step="1" value="1024" data-testid="template-shares">
    </label>
    <label>Disk (GiB)
      <input name="disk_gib" type="number" required min="1" step="1" value="10" data-testid="template-disk">
    </label>
    <label class="wide">Description
      <input name="description" maxlength="500" data-testid="template-description">
    </label>
    <div class="form-actions"><button type="submit" class="btn-primary" data-testid="create-template-submit">Create template</button></div>
  </form>
</section>
% end
