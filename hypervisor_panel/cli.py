"""Command line: ``python app.py serve|desktop``."""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from .errors import PluginLoadError


def build_panel(args: argparse.Namespace):
    """Create and start a Panel from command-line options (shared by serve and desktop)."""
    from .panel import Panel

    panel = Panel(args.data_dir, local_uri=args.node_uri)
    generated = panel.start()
    if generated:
        print(f"Created user 'admin' with password: {generated}  (shown only once)",
              flush=True)
    return panel


def cmd_serve(args: argparse.Namespace) -> int:
    from .web.app import create_app
    from .web.server import make_server

    panel = build_panel(args)
    server = make_server(create_app(panel), args.host, args.port)

    def stop(signum: int, frame: object) -> None:
        # Leave serve() by an exception: cheroot's stop() called from the thread that runs
        # serve() would wait for serve() to return, forever.
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.prepare()
    host, port = server.bind_addr[:2]
    print(f"Hypervisor panel on http://{host}:{port}/ (data: {panel.data_dir})", flush=True)
    try:
        server.serve()
    except (SystemExit, KeyboardInterrupt):
        pass
    finally:
        server.stop()
        panel.close()
    print("Hypervisor panel stopped", flush=True)
    return 0


def cmd_desktop(args: argparse.Namespace) -> int:
    from .desktop import run_desktop

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
        p.set_defaults(func=func)
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except PluginLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
