<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in · Hypervisor panel</title>
<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/static/panel.css?v={{version}}"></head>
<body class="login">
<form method="post" action="/login" class="card login-card" data-testid="login-form">
  <h1>Hypervisor panel</h1>
  % if error:
  <p class="error" role="alert" data-testid="login-error">{{error}}</p>
  % end
  <input type="hidden" name="csrf_token" value="{{csrf}}" data-testid="login-csrf">
  <label>Username <input name="username" value="{{username}}" autocomplete="username" required autofocus data-testid="login-username"></label>
  <label>Password <input name="password" type="password" autocomplete="current-password" required data-testid="login-password"></label>
  <button type="submit" data-testid="login-submit">Sign in</button>
</form>
</body></html>
