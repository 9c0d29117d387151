% rebase('base.tpl', title=title, user=user, csrf=csrf, page=page)
<h1>IP pools</h1>
% if user['role'] != 'admin':
<section class="card" data-testid="admin-only">
  <p class="muted">Only administrators manage IP pools. Your VMs' addresses are shown on each VM's page.</p>
</section>
% else:
<section class="card">
  <table class="table" data-testid="pool-table">
    <thead><tr><th>Name</th><th>Network</th><th>Subnet</th><th>Range</th><th>Gateway / DNS</th><th>Usage</th><th></th></tr></thead>
    <tbody id="pool-rows"><tr><td colspan="7" class="muted">Loading…</td></tr></tbody>
  </table>
</section>
<section class="card pool-detail" data-testid="pool-detail" aria-labelledby="pool-detail-heading" hidden>
  <div class="card-head">
    <h2 id="pool-detail-heading" data-testid="pool-detail-title">Addresses</h2>
    <button type="button" class="alert-close" aria-label="Close" data-testid="pool-detail-close">×</button>
  </div>
  <div data-testid="pool-detail-usage"></div>
  <table class="table" data-testid="allocation-table">
    <thead><tr><th>Address</th><th>Kind</th><th>VM</th><th>Interface</th><th>Note</th><th>Since</th><th></th></tr></thead>
    <tbody id="allocation-rows"></tbody>
  </table>
  <form id="reserve-address" class="inline-form" data-testid="reserve-form" autocomplete="off">
    <label>Reserve an address
      <input name="address" required maxlength="45" data-testid="reserve-address" placeholder="10.88.0.50">
    </label>
    <label class="grow">Note
      <input name="note" maxlength="200" data-testid="reserve-note" placeholder="router, printer…">
    </label>
    <button type="submit" data-testid="reserve-submit">Reserve</button>
  </form>
  <p class="help">A reserved address is never handed to a VM; release it to give it back to the pool.</p>
</section>
<section class="card">
  <h2>Create IP pool</h2>
  <form id="create-pool" class="form-grid" data-testid="create-pool-form" autocomplete="off">
    <label>Name
      <input name="name" required maxlength="63" data-testid="pool-name" placeholder="lan-v4">
    </label>
    <label>Network
      <select name="network" required data-testid="pool-network"></select>
    </label>
    <label>Subnet <small>(CIDR)</small>
      <input name="subnet" required maxlength="49" data-testid="pool-subnet" placeholder="10.88.0.0/24">
    </label>
    <label>Gateway <small>(optional)</small>
      <input name="gateway" maxlength="45" data-testid="pool-gateway" placeholder="10.88.0.1">
    </label>
    <label>Range start <small>(optional: the whole subnet)</small>
      <input name="range_start" maxlength="45" data-testid="pool-range-start" placeholder="10.88.0.10">
    </label>
    <label>Range end
      <input name="range_end" maxlength="45" data-testid="pool-range-end" placeholder="10.88.0.200">
    </label>
    <label>DNS servers <small>(up to 4, separated by spaces or commas)</small>
      <input name="dns" maxlength="200" data-testid="pool-dns" placeholder="10.88.0.1 9.9.9.9">
    </label>
    <label>Excluded addresses <small>(one address or FIRST-LAST range per line)</small>
      <textarea name="exclude" rows="2" data-testid="pool-exclude" placeholder="10.88.0.100-10.88.0.110"></textarea>
    </label>
    <p class="help wide" data-testid="pool-network-note"></p>
    <label class="wide">Description
      <input name="description" maxlength="500" data-testid="pool-description">
    </label>
    <div class="form-actions"><button type="submit" class="btn-primary" data-testid="create-pool-submit">Create IP pool</button></div>
  </form>
</section>
% end
