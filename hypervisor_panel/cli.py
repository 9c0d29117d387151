"""Command line: ``python app.py serve|desktop|backup-panel|restore-panel``."""

from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import signal
import ssl
import sys
import threading
import time

from .errors import PluginLoadError

log = logging.getLogger(__name__)

#: Seconds a stop (start-up included) may take before the watchdog ends the process.
STOP_GRACE = 4.0
#: The panel's process creates every file and folder private (0600/0700): its data
#: directory holds password hashes, keys and secrets.
PRIVATE_UMASK = 0o077


def build_panel(args: argparse.Namespace):
    """Create and start a Panel from command-line options (shared by serve and desktop)."""
    from .panel import Panel

    panel = Panel(args.data_dir, local_uri=args.node_uri)
    generated = panel.start()
    if generated:
        print(f"Created user 'admin' with password: {generated}  (shown only once)",
              flush=True)
    from .nodes import DEMO_NOTICE

    local = panel.nodes.local_candidate()
    if local["offer"]:
        print(f"A libvirtd answers at {local['uri']} but is not a node of this panel yet: "
              "add it on the Nodes page (or POST /api/v1/nodes/local-libvirt).", flush=True)
    elif panel.nodes.demo_only():
        print(DEMO_NOTICE, flush=True)
    return panel


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM, then stop the server and close the panel (exit code 0)."""
    from .web.app import create_app
    from .web.server import make_server, serve_until

    tls = tls_context(args)  # a bad certificate fails before anything starts
    if tls is not None:
        enable_tls(make_server(None, args.host, args.port), tls)  # supported? (binds nothing)
    os.umask(PRIVATE_UMASK)
    stop = stop_on_signals()
    log.info("Starting the panel (pid %d)", os.getpid())
    panel = None
    try:
        panel = build_panel(args)
        if not stop.is_set():  # a signal during start-up: do not even open the port
            server = make_server(create_app(panel), args.host, args.port)
            if tls is not None:
                enable_tls(server, tls)
            server.prepare()
            host, port = server.bind_addr[:2]
            scheme = "https" if tls is not None else "http"
            print(f"Hypervisor panel on {scheme}://{host}:{port}/ (data: {panel.data_dir})",
                  flush=True)
            serve_until(server, stop)
    finally:
        stop.set()  # however we got here, the watchdog now bounds what is left
        if panel is not None:
            panel.close()
        print("Hypervisor panel stopped", flush=True)
        # The repeated signal (make forwards SIGTERM) may come this late, once Python is
        # restoring the default handlers on its way out, which would kill the process.
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)
    return 0


class TLSError(RuntimeError):
    """The TLS options cannot be used (bad files, or a server without TLS support)."""


def tls_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The server-side TLS context of ``--tls-cert``/``--tls-key`` (both or neither), or
    None; the files are loaded here, so a bad certificate or key stops the start at once."""
    cert, key = getattr(args, "tls_cert", None), getattr(args, "tls_key", None)
    if not cert and not key:
        return None
    if not (cert and key):
        raise TLSError("give both --tls-cert and --tls-key")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise TLSError(f"cannot use the TLS certificate {cert} and key {key}: {exc}") from exc
    return context


def enable_tls(server, context: ssl.SSLContext) -> None:
    """Make ``server`` (from ``web.server.make_server``) serve HTTPS with ``context``.

    The contract with web/server.py: a server that can serve TLS has ``use_tls(context)``,
    called before ``prepare()``; over HTTPS (``wsgi.url_scheme == "https"``) the glue sends
    ``Strict-Transport-Security`` and the session cookie is Secure.
    """
    use_tls = getattr(server, "use_tls", None)
    if use_tls is None:
        raise TLSError(f"the HTTP server in use ({type(server).__name__}) cannot serve TLS "
                       "itself yet: run the panel behind a TLS proxy (which should send "
                       "Strict-Transport-Security) and without --tls-cert/--tls-key")
    use_tls(context)


def stop_on_signals(grace: float = STOP_GRACE) -> threading.Event:
    """An event set by the first SIGINT or SIGTERM; ``grace`` s later a watchdog ends the process.

    The Python-level handlers do nothing: CPython's C handler writes the signal number to a
    wakeup pipe, read by a daemon thread. No exception is ever raised into what the main thread
    is doing (start-up, cheroot's serve() or stop(), a lock), and a repeated signal is harmless
    (``make run`` forwards the group's SIGTERM to the panel, which so gets it twice).
    """
    stop = threading.Event()
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)

    def watch() -> None:
        while True:
            for signum in os.read(read_fd, 64):
                if signum not in (signal.SIGINT, signal.SIGTERM):
                    continue
                name = signal.Signals(signum).name
                if stop.is_set():
                    log.info("%s received: already stopping", name)
                else:
                    log.info("%s received: stopping", name)
                    stop.set()

    threading.Thread(target=watch, name="hvp-signals", daemon=True).start()
    threading.Thread(target=_watchdog, args=(stop, grace), name="hvp-watchdog",
                     daemon=True).start()
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)  # before the handlers: no gap
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: None)
    return stop


def _watchdog(stop: threading.Event, grace: float) -> None:
    """Last resort: end the process if it still runs ``grace`` s after the stop request."""
    stop.wait()
    faulthandler.dump_traceback_later(grace + 2, exit=True)  # even if no thread gets the GIL
    time.sleep(grace)
    log.error("Still running %.0f s after the stop request: forcing exit (stacks follow)", grace)
    faulthandler.dump_traceback(all_threads=True)
    print("Hypervisor panel stopped (forced)", flush=True)
    os._exit(1)


def cmd_desktop(args: argparse.Namespace) -> int:
    from .desktop import run_desktop

    os.umask(PRIVATE_UMASK)
    return run_desktop(build_panel(args), args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hypervisor-panel", description=__doc__)
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, func, helptext in (("serve", cmd_serve, "run the web server"),
                                 ("desktop", cmd_desktop, "open the panel in a window")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, default=8080 if name == "serve" else 0)
        p.add_argument("--data-dir", default=None,
                       help="where the panel keeps its data (env HVP_DATA_DIR)")
        p.add_argument("--node-uri", default=None,
                       help="libvirt URI of the first node (default: qemu:///system, "
                            "else the embedded demo node)")
        if name == "serve":
            p.add_argument("--tls-cert", default=None, metavar="PATH",
                           help="serve HTTPS with this PEM certificate (chain)")
            p.add_argument("--tls-key", default=None, metavar="PATH",
                           help="the PEM private key of --tls-cert")
        p.set_defaults(func=func)
    from .backups.panel_cli import add_commands
    from .panel import default_data_dir

    add_commands(sub, default_data_dir)
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (PluginLoadError, TLSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
