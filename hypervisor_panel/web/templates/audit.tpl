% rebase('base.tpl', title=title, user=user, csrf=csrf, page=page)
<div class="page-head">
  <h1>Audit log</h1>
</div>
% if user['role'] != 'admin':
<section class="card" data-testid="admin-only">
  <p class="muted">Only administrators read the audit log.</p>
</section>
% else:
<p class="help">Every state-changing call (create, change, delete, actions, sign-ins), failed ones included: who, from where, what, and the result. Request bodies are never recorded.</p>
<section class="card">
  <form id="audit-filters" class="inline-form filters" data-testid="audit-filters" autocomplete="off">
    <label>Actor
      <input name="actor" maxlength="200" data-testid="audit-filter-actor" placeholder="user name or id">
    </label>
    <label class="grow">Action
      <input name="action" maxlength="200" data-testid="audit-filter-action" placeholder="POST /vms or DELETE" list="audit-actions">
      <datalist id="audit-actions">
        <option value="POST"></option><option value="PUT"></option><option value="PATCH"></option><option value="DELETE"></option>
      </datalist>
    </label>
    <label>Result
      <select name="result" data-testid="audit-filter-result">
        <option value="">any</option>
        <option value="ok">succeeded</option>
        <option value="failed">failed</option>
        <option value="4xx">4xx</option>
        <option value="5xx">5xx</option>
      </select>
    </label>
    <label>Since
      <input name="since" type="datetime-local" data-testid="audit-filter-since">
    </label>
    <label>Until
      <input name="until" type="datetime-local" data-testid="audit-filter-until">
    </label>
    <button type="submit" data-testid="audit-filter-submit">Filter</button>
    <button type="reset" class="btn-quiet" data-testid="audit-filter-reset">Clear</button>
  </form>
</section>
<section class="card">
  <p class="muted" data-testid="audit-count"></p>
  <table class="table" data-testid="audit-table">
    <thead><tr><th>Time</th><th>Actor</th><th>Address</th><th>Action</th><th>Object</th><th>Result</th><th>Duration</th></tr></thead>
    <tbody id="audit-rows"><tr><td colspan="7" class="muted">Loading…</td></tr></tbody>
  </table>
  <button type="button" class="btn-small" id="audit-older" data-testid="audit-older" hidden>Show older</button>
</section>
% end
