% rebase('base.tpl', title=title, user=user, csrf=csrf, page=page)
% admin = user['role'] == 'admin'
<h1>Nodes</h1>
% if admin:
<section class="card" data-testid="local-libvirt" hidden>
  <p><strong>A libvirtd now answers on this machine</strong>
    (<code data-testid="local-libvirt-uri"></code>) but it is not a node of this panel yet.
    Add it to run real VMs here; the demo node stays until you remove it.</p>
  <button type="button" data-testid="add-local-libvirt">Add the local libvirtd as a node</button>
</section>
% end
<section class="card">
  <table class="table" data-testid="node-table">
    <thead><tr><th>Name</th><th>Status</th><th>Connection</th><th>CPU</th><th>Memory</th><th>VMs</th><th>Versions</th>{{!'<th></th>' if admin else ''}}</tr></thead>
    <tbody id="node-rows"><tr><td colspan="{{8 if admin else 7}}" class="muted">Loading…</td></tr></tbody>
  </table>
</section>
% if admin:
<section class="card add-node" data-testid="add-node">
  <h2>Add node</h2>
  <p class="help intro">The panel logs in to the node over SSH and reaches its libvirt through that
    connection. Nothing is kept unless every check passes.</p>
  <form id="add-node" data-testid="add-node-form" autocomplete="off" novalidate>
    <fieldset class="step" data-testid="add-node-step-key">
      <legend><span class="step-no">1</span> Confirm the host key</legend>
      <div class="step-row">
        <label class="grow"><span>Host <small>(name or address)</small></span>
          <input name="host" required maxlength="253" spellcheck="false" placeholder="node2.example.org" data-testid="node-host">
        </label>
        <label class="port">SSH port
          <input name="port" type="number" min="1" max="65535" step="1" value="22" required data-testid="node-port">
        </label>
        <button type="button" data-testid="fetch-host-key">Fetch host key</button>
      </div>
      <div class="host-key-error" data-testid="host-key-error" role="alert" hidden></div>
      <p class="help" data-testid="host-key-note" hidden></p>
      <div class="host-key" data-testid="host-key" hidden>
        <div class="host-key-head">
          <span class="muted">Host key of <strong data-testid="host-key-host"></strong></span>
          <span class="tag" data-testid="host-key-type"></span>
        </div>
        <code class="fingerprint" data-testid="host-key-fingerprint"></code>
        <p class="help">Compare it with the output of
          <code data-testid="host-key-command">ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub</code>
          run on the node itself (or with your inventory). A different fingerprint means you
          are not talking to the machine you think.</p>
        <label class="check confirm">
          <input type="checkbox" data-testid="host-key-confirm">
          I have checked this fingerprint
        </label>
      </div>
    </fieldset>

    <fieldset class="step" data-testid="add-node-step-login">
      <legend><span class="step-no">2</span> Log in</legend>
      <div class="form-grid">
        <label>Node name
          <input name="name" required maxlength="63" spellcheck="false" placeholder="node2" data-testid="node-name">
        </label>
        <label>SSH user
          <input name="username" required maxlength="32" value="root" spellcheck="false" data-testid="node-username">
        </label>
        <div class="auth-choice wide" role="radiogroup" aria-label="How the panel logs in">
          <label class="check"><input type="radio" name="auth" value="key" checked data-testid="node-auth-key"> Private key</label>
          <label class="check"><input type="radio" name="auth" value="password" data-testid="node-auth-password"> One-time password</label>
        </div>
        <label class="wide" data-testid="node-key-field">Private key <small>(OpenSSH or PEM; kept on the panel in a file only root can read, never shown again)</small>
          <textarea name="ssh_private_key" rows="5" spellcheck="false" placeholder="-----BEGIN OPENSSH PRIVATE KEY-----" data-testid="node-private-key"></textarea>
        </label>
        <label class="wide" data-testid="node-password-field" hidden>Password
          <input name="password" type="password" autocomplete="new-password" data-testid="node-password">
          <small>Used once to install the panel's own SSH key on the node, then forgotten: it is never stored.</small>
        </label>
        <details class="wide advanced" data-testid="node-advanced">
          <summary>Advanced</summary>
          <div class="form-grid">
            <label>libvirt socket <small>(if not the default)</small>
              <input name="libvirt_socket" spellcheck="false" placeholder="/var/run/libvirt/libvirt-sock" data-testid="node-libvirt-socket">
            </label>
            <label>Migration host <small>(address other nodes use; default: the host)</small>
              <input name="migration_host" spellcheck="false" placeholder="10.0.0.12" data-testid="node-migration-host">
            </label>
          </div>
        </details>
      </div>
    </fieldset>
    <div class="submit-row">
      <span class="help" data-testid="add-node-hint">Fetch and confirm the host key first.</span>
      <button type="submit" class="btn-primary" disabled data-testid="add-node-submit">Add node</button>
    </div>
  </form>
  <div class="add-node-task" data-testid="add-node-task" hidden></div>
</section>
% end
