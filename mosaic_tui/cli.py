"""The ``mosaic-orchestrator`` command.

mosaic-orchestrator               dashboard + engine + API in one process
mosaic-orchestrator --headless    engine + API (service mode)
mosaic-orchestrator attach URL    the dashboard against a remote orchestrator
mosaic-orchestrator web [URL]     the dashboard in a browser (each session an attached dashboard)
mosaic-orchestrator demo          a self-contained offline run with the scripted model
mosaic-orchestrator scan PATH...  the secret scanner
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence

from core.errors import ConfigError, NotReady, OrchestratorError
from core.settings import Settings, load_settings


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


async def _wait_for_stop_signal() -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def run_headless(settings: Settings) -> None:
    from core.api.service import running_service

    async with running_service(settings) as (_engine, runner):
        addresses = ", ".join(f"{a[0]}:{a[1]}" for a in runner.addresses)
        print(f"mosaic-orchestrator: headless, API on {addresses}", flush=True)
        await _wait_for_stop_signal()
        print("mosaic-orchestrator: stopping (killing live agents)", flush=True)


async def run_dashboard(
    settings: Settings, *, desktop_notify: bool = False, shared_loop: bool = False
) -> None:
    try:
        from mosaic_tui.app import run_local_dashboard
    except ImportError:
        print("mosaic-orchestrator: the dashboard is not available; running headless", flush=True)
        await run_headless(settings)
        return
    await run_local_dashboard(settings, desktop_notify=desktop_notify, shared_loop=shared_loop)


def _gc(settings: Settings) -> int:
    from core.gc import collect_garbage
    from core.paths import StatePaths

    report = asyncio.run(
        collect_garbage(
            StatePaths(settings.mosaic_state_dir),
            keep_days=settings.mosaic_keep_days,
            live=None,  # a running engine may own worktrees: its own gc removes orphans
            author=(settings.git_author_name, settings.git_author_email),
        )
    )
    print(report.summary())
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mosaic-orchestrator", description="Supervisor for sandboxed coding agents."
    )
    parser.add_argument("--headless", action="store_true", help="run without the dashboard")
    parser.add_argument("--port", type=int, help="API port (overrides ORCHESTRATOR_PORT)")
    parser.add_argument("--log-level", default=os.environ.get("MOSAIC_LOG_LEVEL", "INFO"))
    parser.add_argument(
        "--desktop-notify",
        action="store_true",
        default=os.environ.get("MOSAIC_DESKTOP_NOTIFY", "").lower() in ("1", "true", "yes"),
        help="alerts also as desktop notifications (OSC 777/9 escapes; MOSAIC_DESKTOP_NOTIFY=1)",
    )
    parser.add_argument(
        "--shared-loop",
        action="store_true",
        help="run the engine on the dashboard's event loop (default: its own loop and thread)",
    )
    sub = parser.add_subparsers(dest="command")
    attach = sub.add_parser("attach", help="dashboard against a remote orchestrator")
    attach.add_argument("url")
    attach.add_argument("--token", default=os.environ.get("ORCHESTRATOR_API_KEY"))
    web = sub.add_parser("web", help="the dashboard in a browser, on loopback by default")
    web.add_argument("url", nargs="?", help="attach to this API (default: run it here too)")
    web.add_argument("--port", dest="web_port", metavar="P", type=int, default=3002, help="3002")
    web.add_argument("--host", dest="web_host", metavar="H", default="127.0.0.1", help="loopback")
    web.add_argument(
        "--token", dest="web_token", metavar="KEY", help="default: ORCHESTRATOR_API_KEY"
    )
    demo = sub.add_parser("demo", help="offline demo with the scripted model")
    demo.add_argument("--headless", action="store_true", help="print the flow instead")
    sub.add_parser("scan", help="scan files, stdin or commits for secrets", add_help=False)
    sub.add_parser(
        "gc", help="expire kept work and remove stale clones (worktrees are the engine's)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["scan"]:
        from core.git.scan_cli import main as scan_main

        return scan_main(args_list[1:])
    args = _parser().parse_args(args_list)
    try:
        overrides = {"orchestrator_port": args.port} if args.port is not None else {}
        if args.command == "attach":
            from mosaic_tui.remote import run_attached

            asyncio.run(
                run_attached(args.url, token=args.token, desktop_notify=args.desktop_notify)
            )
            return 0
        settings = load_settings(**overrides)
        _setup_logging(args.log_level)
        if args.command == "gc":
            return _gc(settings)
        if args.command == "web":
            from mosaic_tui.web import run_web_command

            asyncio.run(
                run_web_command(
                    settings,
                    url=args.url,
                    host=args.web_host,
                    port=args.web_port,
                    token=args.web_token,
                    until=_wait_for_stop_signal,
                )
            )
            return 0
        if args.command == "demo":
            from mosaic_tui.demo import run_demo

            return asyncio.run(run_demo(settings, headless=args.headless))
        asyncio.run(
            run_headless(settings)
            if args.headless
            else run_dashboard(
                settings, desktop_notify=args.desktop_notify, shared_loop=args.shared_loop
            )
        )
    except ConfigError as exc:
        print(f"mosaic-orchestrator: {exc.message}", file=sys.stderr)
        return 2
    except (NotReady, OrchestratorError) as exc:
        print(f"mosaic-orchestrator: cannot start: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
