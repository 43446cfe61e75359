"""`nico-api proxy`: serve the validating proxy in front of a NICo server until Ctrl-C or
SIGTERM, then print the summary, write the JUnit file, and exit non-zero with
--fail-on-violation when any exchange broke the contract."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nico_api.config import SPEC_PATH, InvalidInputError

if TYPE_CHECKING:
    from nico_api.config import Settings

DEFAULT_PORT = 8081


def add_command(commands: Any) -> None:
    """The `proxy` subcommand, added to the parser's subcommands."""
    proxy = commands.add_parser(
        "proxy",
        help="check a client's traffic against openapi.yaml on its way to a server",
        description="Forward every request to --target unchanged and its answer back, adding "
        "X-Contract-Violations when the exchange broke openapi.yaml or NICo's rules; each "
        "violation is logged as a JSON line, and a summary per operation printed at exit "
        "(Ctrl-C or SIGTERM). Request bodies are bounded by NICO_MAX_BODY_BYTES.",
    )
    proxy.add_argument(
        "--target", required=True, help="the NICo server's base URL, e.g. https://nico.example"
    )
    proxy.add_argument("--host", default="127.0.0.1", help="address to listen on (%(default)s)")
    proxy.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="port to listen on (%(default)s)"
    )
    proxy.add_argument("--junit", type=Path, help="write a JUnit XML report here at exit")
    proxy.add_argument(
        "--fail-on-violation",
        action="store_true",
        help="exit with status 1 when any exchange broke the contract",
    )
    proxy.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds to wait for the target at each step (%(default)s)",
    )
    proxy.add_argument(
        "--spec", type=Path, default=SPEC_PATH, help="default: the openapi.yaml the server serves"
    )
    proxy.add_argument(
        "--log-level",
        default="info",
        choices=("critical", "error", "warning", "info", "debug"),
        help="how much to log (%(default)s); violations are warnings",
    )
    proxy.set_defaults(run=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    import logging.config
    import signal
    import sys
    from urllib.parse import urlsplit

    import uvicorn

    from nico_api import logs
    from nico_api.proxy.app import ContractProxy
    from nico_api.proxy.contract import Contract
    from nico_api.proxy.tally import Tally
    from nico_api.web import edge

    target = urlsplit(args.target)
    if target.scheme not in ("http", "https") or not target.hostname:
        raise InvalidInputError(f"--target {args.target!r} is not an http(s) URL")
    logging.config.dictConfig(logs.config(args.log_level))
    shown_target = target._replace(netloc=target.netloc.rpartition("@")[2]).geturl()
    tally = Tally(target=shown_target)
    app = ContractProxy(
        args.target,
        Contract.from_path(args.spec),
        tally,
        settings.max_body_bytes,
        args.timeout,
        settings.max_header_bytes,
    )
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        log_config=logs.config(args.log_level),
        access_log=False,
        lifespan="on",
        # The target's Date and Server headers are passed on, not the proxy's own.
        server_header=False,
        date_header=False,
        timeout_keep_alive=settings.keepalive_timeout,
    )
    server = uvicorn.Server(config)
    edge.open_every_file_allowed()
    # uvicorn raises the signal that stopped it again once it has shut down: let that one
    # pass, so that the summary is printed and the exit status chosen here.
    for stopping in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stopping, lambda *_: None)
    server.run()
    if not server.started:
        return 2
    print(tally.summary(), flush=True)
    if args.junit is not None:
        args.junit.write_text(tally.junit(), encoding="utf-8")
        print(f"JUnit report: {args.junit}", file=sys.stderr)
    return 1 if args.fail_on_violation and tally.violations else 0
