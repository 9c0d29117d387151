<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in · Hypervisor panel</title>
<link rel="stylesheet" href="/static/panel.css"></head>
<body class="login">
<form method="post" action="/login" class="card login-card">
  <h1>Hypervisor panel</h1>
  % if error:
  <p class="error" role="alert">{{error}}</p>
  % end
  <label>Username <input name="username" value="{{username}}" autocomplete="username" required autofocus></label>
  <label>Password <input name="password" type="password" autocomplete="current-password" required></label>
  <button type="submit">Sign in</button>
</form>
</body></html>
