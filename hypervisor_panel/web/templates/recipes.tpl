% rebase('base.tpl', title=title, user=user, csrf=csrf, page=page)
% admin = user['role'] == 'admin'
<h1>Recipes</h1>
<section class="card" data-testid="recipes-card">
  <p class="help intro">Shell scripts the panel runs as root in a VM installed from an OS template
    (over SSH, once the guest is up), with the parameters their metadata declares. A recipe suits
    an OS template when they share a tag.</p>
  <table class="table" data-testid="recipe-table">
    <thead><tr><th>Name</th><th>Tags</th><th>Parameters</th><th>Access</th><th>Origin</th><th class="num">Revision</th><th></th></tr></thead>
    <tbody id="recipe-rows"><tr><td colspan="7" class="muted">Loading…</td></tr></tbody>
  </table>
</section>
<section class="card recipe-detail" data-testid="recipe-detail" aria-labelledby="recipe-detail-heading" hidden>
  <div class="card-head">
    <h2 id="recipe-detail-heading" data-testid="recipe-detail-title">Recipe</h2>
    <div class="actions">
      <button type="button" class="btn-small" data-testid="recipe-edit" hidden>Edit</button>
      <button type="button" class="alert-close" aria-label="Close" data-testid="recipe-detail-close">×</button>
    </div>
  </div>
  <dl class="facts" data-testid="recipe-facts"></dl>
  <h3>Parameters</h3>
  <table class="table" data-testid="recipe-params">
    <thead><tr><th>Name</th><th>Type</th><th>Default</th><th>Required</th><th>Description</th></tr></thead>
    <tbody></tbody>
  </table>
  <h3>Script</h3>
  <pre class="log script" data-testid="recipe-script"></pre>
  <p class="muted" data-testid="recipe-script-hidden" hidden>Only administrators and the recipe's owner see its script.</p>
  <form class="recipe-edit" data-testid="recipe-edit-form" autocomplete="off" hidden>
    <p class="help" data-testid="recipe-edit-note"></p>
    <label class="block" data-testid="recipe-edit-script-field">Script
      <textarea name="script" rows="18" spellcheck="false" data-testid="recipe-edit-script"></textarea>
    </label>
    <div class="inline-form">
      <label>Access
        <select name="access" data-testid="recipe-edit-access">
          <option value="all">all users</option><option value="admins">admins only</option><option value="nobody">nobody (disabled)</option>
        </select>
      </label>
      <button type="submit" class="btn-primary" data-testid="recipe-edit-save">Save</button>
      <button type="button" data-testid="recipe-edit-cancel">Cancel</button>
    </div>
  </form>
</section>
<section class="card" data-testid="add-recipe-card"{{!'' if admin else ' hidden'}}>
  <h2>Add a recipe</h2>
  <form id="add-recipe" data-testid="add-recipe-form" class="recipe-add" autocomplete="off">
    <p class="help">A shell script with a metadata block (VMmanager's format; <code># param:</code>,
      <code># timeout:</code> and <code># access:</code> lines are the panel's extensions):</p>
    <pre class="sample">#!/bin/sh
# metadata_begin
# recipe: hello
# tags: debian,ubuntu2204
# revision: 1
# description_en: Says hello
# param: GREETING type=string default=hi description="What to say"
# param: DB_PASSWORD type=string required=yes secret=yes
# metadata_end
echo "$GREETING"</pre>
    <label class="block">Script
      <textarea name="script" rows="14" required spellcheck="false" data-testid="add-recipe-script"
        placeholder="#!/bin/sh&#10;# metadata_begin&#10;# recipe: …&#10;# tags: …&#10;# metadata_end"></textarea>
    </label>
    <div class="inline-form">
      <label>…or read it from a file
        <input type="file" accept=".sh,text/x-shellscript,text/plain" data-testid="add-recipe-file">
      </label>
      <label>Access
        <select name="access" data-testid="add-recipe-access">
          <option value="">as the script says (default: all)</option>
          <option value="all">all users</option><option value="admins">admins only</option><option value="nobody">nobody (disabled)</option>
        </select>
      </label>
      <button type="submit" class="btn-primary" data-testid="add-recipe-submit">Add recipe</button>
    </div>
  </form>
</section>
% if admin:
<section class="card" data-testid="recipe-sources-card">
  <h2>Recipe sources</h2>
  <table class="table" data-testid="recipe-source-table">
    <thead><tr><th>Name</th><th>Kind</th><th>Options</th><th class="num">Recipes</th><th>Last read</th><th></th></tr></thead>
    <tbody id="recipe-source-rows"><tr><td colspan="6" class="muted">Loading…</td></tr></tbody>
  </table>
  <h3>Add a source</h3>
  <form id="add-recipe-source" class="form-grid" data-testid="add-recipe-source-form" autocomplete="off">
    <label>Name
      <input name="name" required maxlength="63" data-testid="recipe-source-name" placeholder="library">
    </label>
    <label>Kind
      <select name="source" required data-testid="recipe-source-kind"></select>
    </label>
    <p class="help wide" data-testid="recipe-source-kind-description"></p>
    <fieldset class="wide schema-fields" data-testid="recipe-source-options">
      <legend>Source options</legend>
    </fieldset>
    <label class="wide">Description
      <input name="description" maxlength="500" data-testid="recipe-source-description">
    </label>
    <div class="form-actions"><button type="submit" class="btn-primary" data-testid="add-recipe-source-submit">Add source</button></div>
  </form>
</section>
<section class="card" data-testid="recipe-settings-card">
  <h2>Settings</h2>
  <form id="recipe-settings" class="inline-form" data-testid="recipe-settings-form" autocomplete="off">
    <label class="check"><input type="checkbox" name="users_may_add" data-testid="settings-users-may-add"> Users may add their own recipes</label>
    <label>Default recipe <small>(run on every new VM from a template it suits)</small>
      <select name="default_recipe" data-testid="settings-default-recipe"><option value="">none</option></select>
    </label>
    <button type="submit" data-testid="settings-save">Save settings</button>
  </form>
</section>
% end
