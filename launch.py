"""Start RLHF Studio: ``python launch.py [--host 127.0.0.1] [--port 7860] [--db studio.duckdb] [--share]``.

This is what ``bash dev.sh start`` runs after ``rlhf-studio init``. It runs under a 077 umask
(the database, its write-ahead log and the run folders are owner-only). Unlike
``rlhf-studio serve``, which refuses a database that does not exist, it creates a missing one,
so that ``bash dev.sh start --db team.duckdb`` works on a fresh machine; it says so first.
"""

import argparse
import os
import sys

from studio.app import add_server_arguments, db_path, serve


def main(argv: list[str] | None = None) -> int:
    os.umask(0o077)
    parser = argparse.ArgumentParser(description="Start RLHF Studio in this process.")
    add_server_arguments(parser)
    args = parser.parse_args(argv)
    path = db_path(args.db)
    if not path.exists():
        print(
            f"No database at {path}: creating a new, empty one (with the admin account). If you meant an existing "
            "database, stop the studio (Ctrl+C) and check --db or $STUDIO_DB.",
            file=sys.stderr,
            flush=True,
        )
    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
