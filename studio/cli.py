"""``rlhf-studio``: the studio's command line.

The model, generation and training commands come from ``rlhf.cli``; this adds the studio's
own: ``serve`` (start the studio) and ``init`` (prepare models and the demo project).
"""

from __future__ import annotations

import argparse

from annotations.store import StoreError
from rlhf.cli import add_commands, run
from studio.app import add_server_arguments, db_path


def cmd_serve(args: argparse.Namespace) -> int:
    from studio.app import serve

    return serve(args)


def cmd_init(args: argparse.Namespace) -> int:
    from annotations.demo import seed_demo
    from annotations.store import Store
    from rlhf.registry import ModelRegistry

    registry = ModelRegistry()
    if not args.skip_models:
        for name in ("smollm2-135m-instruct", "minilm-l6"):
            print(f"model {name}: {registry.resolve(name)}")
    path = db_path(args.db)
    with Store(path) as store:
        created = seed_demo(store) if not args.no_demo else False
        print(
            f"database {path}: schema v{store.schema_version()}, " + ("demo project created" if created else "demo project already there")
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlhf-studio",
        description="RLHF Studio: prompting, instruction tuning and RLHF on your own data and machines.",
        epilog="Run `rlhf-studio COMMAND --help` for a command's options.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("serve", help="start the studio in the browser", description="Start the studio (the single writer of its database).")
    add_server_arguments(p)
    p.set_defaults(handler=cmd_serve)
    p = sub.add_parser(
        "init",
        help="prepare the built-in models and the demo project",
        description="Convert the built-in SmolLM2 once, check MiniLM, create or upgrade the database "
        "and seed the demo project. Safe to run again.",
    )
    p.add_argument("--db", help="DuckDB file (default: $STUDIO_DB or ./studio.duckdb)")
    p.add_argument("--skip-models", action="store_true", help="do not prepare the built-in models")
    p.add_argument("--no-demo", action="store_true", help="do not create the demo project")
    p.set_defaults(handler=cmd_init)
    add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(), argv, user_errors=(StoreError,))


if __name__ == "__main__":
    raise SystemExit(main())
