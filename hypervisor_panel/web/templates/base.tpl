<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="csrf-token" content="{{csrf}}">
<title>{{title}} · Hypervisor panel</title>
<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/static/panel.css?v={{version}}">
<script type="module" src="/static/page_{{page}}.js?v={{version}}"></script>
</head>
<body data-page="{{page}}" data-role="{{user['role']}}">
<header class="topbar">
  <a class="brand" href="/">Hypervisor panel</a>
  <nav class="nav" data-testid="nav">
  % admin_only = ("networks", "ip_pools", "backup_schedules", "backup_targets", "users", "audit")
  % for href, key, label in (("/", "dashboard", "Dashboard"), ("/vms", "vms", "VMs"), ("/storages", "storages", "Storages"), ("/networks", "networks", "Networks"), ("/ip-pools", "ip_pools", "IP pools"), ("/vm-templates", "vm_templates", "VM templates"), ("/os-templates", "os_templates", "OS templates"), ("/recipes", "recipes", "Recipes"), ("/nodes", "nodes", "Nodes"), ("/backups", "backups", "Backups"), ("/backup-schedules", "backup_schedules", "Schedules"), ("/backup-targets", "backup_targets", "Targets"), ("/tasks", "tasks", "Tasks"), ("/users", "users", "Users"), ("/audit", "audit", "Audit log")):
    % if key not in admin_only or user['role'] == 'admin':
    % current = page == key or (page == "vm" and key == "vms")
    <a href="{{href}}" data-testid="nav-{{key}}"{{!' class="active" aria-current="page"' if current else ''}}>{{label}}</a>
    % end
  % end
  </nav>
  <div class="account">
    <span class="user" data-testid="user-name">{{user['name']}}</span>
    <span class="role" data-testid="user-role">{{user['role']}}</span>
    <form method="post" action="/logout" class="logout">
      <input type="hidden" name="csrf_token" value="{{csrf}}">
      <button type="submit" class="btn-quiet" data-testid="logout">Log out</button>
    </form>
  </div>
</header>
<div class="demo-banner" data-testid="demo-banner" role="note" hidden></div>
<main class="content">
  <div class="alert alert-error" id="alert" role="alert" data-testid="alert" hidden>
    <div class="alert-body"></div>
    <button type="button" class="alert-close" aria-label="Dismiss">×</button>
  </div>
  <div class="alert alert-ok" id="notice" role="status" data-testid="notice" hidden></div>
  <div class="task-tray" id="task-tray" data-testid="task-tray" aria-live="polite"></div>
{{!base}}
</main>
<footer class="footer">Hypervisor panel {{version}}</footer>
</body>
</html>
