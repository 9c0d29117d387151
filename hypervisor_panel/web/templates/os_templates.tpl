% rebase('base.tpl', title=title, user=user, csrf=csrf, page=page)
% admin = user['role'] == 'admin'
<h1>OS templates</h1>
<section class="card" data-testid="os-templates-card">
  <h2>Templates</h2>
  <p class="help intro">Disk images (or installer ISOs) a VM is installed from: choose one in the
    create-VM form; cloud-init then sets the hostname, root's SSH keys and password.</p>
  <table class="table" data-testid="os-template-table">
    <thead><tr><th>Name</th><th>OS</th><th>Tags</th><th>Storage</th><th>State</th><th class="num">Size</th>{{!'<th></th>' if admin else ''}}</tr></thead>
    <tbody id="os-template-rows"><tr><td colspan="{{7 if admin else 6}}" class="muted">Loading…</td></tr></tbody>
  </table>
</section>
% if admin:
<section class="card" data-testid="catalog-card">
  <h2>Available from the repositories</h2>
  <table class="table" data-testid="catalog-table">
    <thead><tr><th>Template</th><th>Repository</th><th>OS</th><th>Tags</th><th class="num">Download</th><th>Import into</th></tr></thead>
    <tbody id="catalog-rows"><tr><td colspan="6" class="muted">Loading…</td></tr></tbody>
  </table>
</section>
<section class="card" data-testid="repos-card">
  <h2>Repositories</h2>
  <table class="table" data-testid="repo-table">
    <thead><tr><th>Name</th><th>Source</th><th>Options</th><th class="num">Templates</th><th>Refreshed</th><th></th></tr></thead>
    <tbody id="repo-rows"><tr><td colspan="6" class="muted">Loading…</td></tr></tbody>
  </table>
  <h3>Add a repository</h3>
  <form id="add-repo" class="form-grid" data-testid="add-repo-form" autocomplete="off">
    <label>Name
      <input name="name" required maxlength="63" data-testid="repo-name" placeholder="mirror"
        pattern="[A-Za-z0-9][A-Za-z0-9._\-]{0,62}" title="Letters, digits, '.', '_' and '-'">
    </label>
    <label>Source
      <select name="source" required data-testid="repo-source"></select>
    </label>
    <p class="help wide" data-testid="repo-source-description"></p>
    <fieldset class="wide schema-fields" data-testid="repo-options">
      <legend>Source options</legend>
    </fieldset>
    <label class="wide">Description
      <input name="description" maxlength="500" data-testid="repo-description">
    </label>
    <div class="form-actions"><button type="submit" class="btn-primary" data-testid="add-repo-submit">Add repository</button></div>
  </form>
  <p class="help">The index is read at once: a repository that cannot be reached or whose index is broken is refused.</p>
</section>
<section class="card" data-testid="upload-card">
  <h2>Upload a template</h2>
  <form id="upload-template" class="form-grid" data-testid="upload-form" autocomplete="off">
    <label class="wide">File <small>(qcow2 or raw disk image, or an ISO; optionally gzip, xz or zstd compressed)</small>
      <input name="file" type="file" required data-testid="upload-file">
    </label>
    <label>Name
      <input name="name" required maxlength="63" data-testid="upload-name" placeholder="debian-12"
        pattern="[A-Za-z0-9][A-Za-z0-9._\-]{0,62}" title="Letters, digits, '.', '_' and '-'">
    </label>
    <label>Storage
      <select name="storage" required data-testid="upload-storage"></select>
    </label>
    <label>OS family
      <input name="os_family" required maxlength="64" data-testid="upload-os-family" placeholder="debian"
        pattern="[a-z0-9][a-z0-9._\-]*" title="Lower-case letters, digits, '.', '_' and '-'">
    </label>
    <label>OS version <small>(optional)</small>
      <input name="os_version" maxlength="64" data-testid="upload-os-version" placeholder="12">
    </label>
    <label>Format
      <select name="format" required data-testid="upload-format">
        <option value="qcow2">qcow2</option><option value="raw">raw</option><option value="iso">iso (installer)</option>
      </select>
    </label>
    <label>Compression
      <select name="compression" data-testid="upload-compression">
        <option value="none">none</option><option value="gzip">gzip</option><option value="xz">xz</option><option value="zstd">zstd</option>
      </select>
    </label>
    <label>Architecture
      <select name="arch" data-testid="upload-arch">
        <option>x86_64</option><option>aarch64</option><option>i686</option><option>ppc64le</option><option>s390x</option>
      </select>
    </label>
    <label>Guest configuration
      <select name="config" data-testid="upload-config">
        <option value="cloud-init">cloud-init (NoCloud seed)</option><option value="script">the template's own script</option><option value="none">none</option>
      </select>
    </label>
    <label class="wide" data-testid="upload-script-field" hidden>Configuration script
      <small>(run by the image at first boot with <code>HVP_SEED</code> naming the seed's files: hvp-hostname, hvp-authorized-keys, hvp-password-hash, hvp-host-key, hvp-network)</small>
      <textarea name="script" rows="10" spellcheck="false" maxlength="65536" data-testid="upload-script" placeholder="#!/bin/sh"></textarea>
    </label>
    <label>Tags <small>(separated by spaces or commas; recipes sharing one suit it)</small>
      <input name="tags" maxlength="1000" data-testid="upload-tags" placeholder="debian debian12">
    </label>
    <label>Default user <small>(optional)</small>
      <input name="default_user" maxlength="32" data-testid="upload-default-user" placeholder="debian">
    </label>
    <label>Minimum disk (GiB)
      <input name="min_disk_gib" type="number" min="1" max="65536" step="1" value="1" data-testid="upload-min-disk">
    </label>
    <label>Minimum RAM (MiB)
      <input name="min_memory_mib" type="number" min="16" max="4194304" step="1" value="256" data-testid="upload-min-memory">
    </label>
    <label class="wide">Description
      <input name="description" maxlength="500" data-testid="upload-description">
    </label>
    <div class="upload-progress wide" data-testid="upload-progress" hidden>
      <div class="task-head"><strong data-testid="upload-stage">Uploading</strong>
        <span class="muted" data-testid="upload-progress-text"></span></div>
      <div data-testid="upload-bar"></div>
    </div>
    <div class="form-actions"><button type="submit" class="btn-primary" data-testid="upload-submit">Upload</button></div>
  </form>
</section>
% end
