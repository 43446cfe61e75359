"""The `nico-api` command line: serve, prepare the database, and mint development tokens."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from nico_api import db, fixture
from nico_api.config import Settings
from nico_api.dev_issuer import DevIssuer


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    # Each worker builds its own app from the same environment.
    uvicorn.run(
        "nico_api.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
    )
    return 0


def _db_init(_args: argparse.Namespace, settings: Settings) -> int:
    db.create_schema(db.connect(settings.database_url))
    print(f"database ready: {_safe_url(settings)}")
    return 0


def _db_load(args: argparse.Namespace, settings: Settings) -> int:
    db.connect(settings.database_url)
    summary = fixture.load_file(args.file)
    print(f"loaded {summary} from {args.file}")
    return 0


def _db_seed(_args: argparse.Namespace, settings: Settings) -> int:
    db.create_schema(db.connect(settings.database_url))
    summary = fixture.load(fixture.demo())
    print(f"loaded demo data: {summary}")
    return 0


def _token(args: argparse.Namespace, settings: Settings) -> int:
    print(DevIssuer(settings).issue(args.org, args.role, args.ttl))
    return 0


def _safe_url(settings: Settings) -> str:
    from sqlalchemy.engine import make_url

    return make_url(settings.database_url).render_as_string(hide_password=True)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nico-api", description="A NICo Task API server and its tools."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve the API with uvicorn")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--workers", type=_positive, default=1)
    serve.add_argument("--log-level", default="info")
    serve.set_defaults(run=_serve)

    database = commands.add_parser("db", help="prepare and fill the database")
    db_commands = database.add_subparsers(dest="db_command", required=True)
    db_commands.add_parser("init", help="create the schema").set_defaults(run=_db_init)
    load = db_commands.add_parser("load", help="load providers, sites and tasks from a file")
    load.add_argument("file", type=Path, help="a YAML or JSON fixture file")
    load.set_defaults(run=_db_load)
    seed = db_commands.add_parser("seed", help="load a built-in data set")
    seed.add_argument("--demo", action="store_true", required=True, help="the demo data set")
    seed.set_defaults(run=_db_seed)

    token = commands.add_parser("token", help="print a development token")
    token.add_argument("--org", required=True)
    token.add_argument("--role", action="append", required=True, help="repeat for more roles")
    token.add_argument("--ttl", type=_positive, default=3600, help="lifetime in seconds")
    token.set_defaults(run=_token)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings.from_env()
    try:
        return args.run(args, settings)
    except fixture.FixtureError as exc:
        print(f"error: {exc}", file=sys.stderr)
    except SQLAlchemyError as exc:
        print(f"error: database: {exc.__class__.__name__}: {exc.orig or exc}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
