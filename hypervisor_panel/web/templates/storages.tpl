% rebase('base.tpl', title=title, user=user, csrf=csrf, page=page)
<h1>Storages</h1>
<section class="card">
  <table class="table" data-testid="storage-table">
    <thead><tr><th>Name</th><th>Back end</th><th>Options</th><th>Capacity per node</th><th></th></tr></thead>
    <tbody id="storage-rows"><tr><td colspan="5" class="muted">Loading…</td></tr></tbody>
  </table>
</section>
% if user['role'] == 'admin':
<section class="card">
  <h2>Create storage</h2>
  <form id="create-storage" class="form-grid" data-testid="create-storage-form" autocomplete="off">
    <label>Name
      <input name="name" required maxlength="63" data-testid="storage-name">
    </label>
    <label>Back end
      <select name="backend" required data-testid="storage-backend"></select>
    </label>
    <p class="help wide" data-testid="backend-description"></p>
    <fieldset class="wide schema-fields" data-testid="backend-options">
      <legend>Back-end options</legend>
    </fieldset>
    <label class="wide">Description
      <input name="description" maxlength="500" data-testid="storage-description">
    </label>
    <div class="form-actions"><button type="submit" class="btn-primary" data-testid="create-storage-submit">Create storage</button></div>
  </form>
</section>
% end
