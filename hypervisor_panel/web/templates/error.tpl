<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{title}} · Hypervisor panel</title>
<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/static/panel.css?v={{version}}">
</head>
<body class="error-page">
<header class="topbar">
  <a class="brand" href="/">Hypervisor panel</a>
</header>
<main class="content">
  <section class="card error-card" data-testid="error-page" data-status="{{status}}">
    <p class="error-status" data-testid="error-status">{{status}}</p>
    <h1 data-testid="error-title">{{title}}</h1>
    <p data-testid="error-message">{{message}}</p>
    <p><a class="btn-link" href="/" data-testid="error-home">← Back to the dashboard</a></p>
  </section>
</main>
<footer class="footer">Hypervisor panel {{version}}</footer>
</body>
</html>
