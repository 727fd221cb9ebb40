"""``rlhf-studio``: the studio's command line.

The model, generation and training commands come from ``rlhf.cli``; this adds the studio's
own: ``serve`` (start the studio), ``init`` (prepare models and the demo project), and the
store commands ``projects``, ``import`` and ``snapshot``.

Commands run under a 077 umask, so the database and its write-ahead log are owner-only. Only
``init`` creates a database; the others refuse a path that does not exist (a typo in ``--db``
would otherwise start an empty database) unless given ``--create``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from annotations.store import StoreError
from rlhf.cli import add_commands, run
from studio.app import add_server_arguments, db_path


def existing_db(arg: str | None, create: bool = False) -> Path:
    """The database path for ``--db`` (or $STUDIO_DB, or the default); refused if it does not exist and ``create`` is off."""
    path = db_path(arg)
    if not create and not path.exists():
        raise StoreError(
            f"the database {path} does not exist. Check the path (--db, or $STUDIO_DB), or pass --create to start a new, "
            f"empty database there, or run `rlhf-studio init --db {path}` to create it with the admin account and the demo project"
        )
    return path


def cmd_serve(args: argparse.Namespace) -> int:
    from studio.app import serve

    existing_db(args.db, args.create)
    return serve(args)


def cmd_init(args: argparse.Namespace) -> int:
    from annotations.demo import seed_demo
    from annotations.store import Store
    from rlhf.registry import ModelRegistry

    registry = ModelRegistry()
    if not args.skip_models:
        for name in ("smollm2-135m-instruct", "minilm-l6"):
            print(f"model {name}: {registry.resolve(name)}")
    from studio.auth import ensure_admin

    path = db_path(args.db)
    with Store(path) as store:
        ensure_admin(store)
        created = seed_demo(store) if not args.no_demo else False
        print(
            f"database {path}: schema v{store.schema_version()}, " + ("demo project created" if created else "demo project already there")
        )
    return 0


def _open_store(args: argparse.Namespace):
    from annotations.store import Store

    return Store(existing_db(args.db, args.create))


def cmd_projects_list(args: argparse.Namespace) -> int:
    with _open_store(args) as store:
        rows = [("NAME", "K", "MIN", "MODE", "PROMPTS")]
        rows += [(p.name, str(p.k), str(p.min_submitted), p.mode, str(store.count_prompts(p.id))) for p in store.projects()]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0


def _read_guidelines(name: str | None) -> str:
    if not name:
        return ""
    try:
        return Path(name).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise StoreError(f"cannot read the guidelines file {name}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise StoreError(f"the guidelines file {name} is not UTF-8 (byte offset {exc.start:,}); save it as UTF-8") from exc


def cmd_projects_create(args: argparse.Namespace) -> int:
    guidelines = _read_guidelines(args.guidelines)
    with _open_store(args) as store:
        store.create_project(args.name, guidelines=guidelines, k=args.k, min_submitted=args.min_submitted)
    print(f"created project {args.name}: k={args.k}, min_submitted={args.min_submitted}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from annotations.importers import ImportFailed, import_file

    with _open_store(args) as store:
        project = store.project(args.project)
        try:
            report = import_file(
                store, project.id, Path(args.file), shape=args.shape, import_as=args.import_as, skip_invalid=args.skip_invalid
            )
        except ImportFailed as exc:
            hint = exc.hint("rerun with --skip-invalid")
            raise StoreError(f"{exc}\n\nNothing was imported." + (f" {hint}" if hint else "")) from exc
    shapes = ", ".join(f"{n} {k}" for k, n in report.shapes.items()) or "nothing new"
    print(f"imported {report.prompts} prompts, {report.replies} replies, {report.rankings} rankings into {project.name} ({shapes})")
    if report.duplicates:
        print(report.duplicates_note())
    for problem in report.left_out:
        print(f"skipped: {problem}")
    return 0


def cmd_snapshot(args: argparse.Namespace) -> int:
    from annotations.snapshot import create_snapshot

    path = existing_db(args.db, args.create)
    out = Path(args.out) if args.out else path.resolve().parent / "snapshots"
    with _open_store(args) as store:
        info = create_snapshot(
            store,
            out,
            project=args.project,
            strategy=args.strategy,
            aggregate_by=args.aggregate,
            include_ties=args.include_ties,
            margin=args.margin,
            since=args.since,
            until=args.until,
            annotators=args.annotator,
            kto=args.kto or bool(args.kto_model or args.kto_surface),
            kto_models=args.kto_model,
            kto_surfaces=args.kto_surface,
        )
    c = info.counts
    state = "unchanged since" if info.reused else "new"
    print(f"{state} snapshot {info.id}: {c['pairs']} pairs from {c['rankings']} rankings", end=" ")
    print(f"of {c['prompts']} prompts by {c['annotators']} annotators")
    if "kto" in info.manifest:
        k = info.manifest["kto"]["counts"]
        print(
            f"KTO data: {k['desirable']} desirable, {k['undesirable']} undesirable replies "
            f"({k['from_thumbs']} from thumbs, {k['from_rankings']} from rankings; the rule is in manifest.json)"
        )
    print(f"folder: {info.folder}")
    return 0


CREATE_HELP = "create the database if it does not exist (otherwise a missing file is an error: `rlhf-studio init` creates one)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlhf-studio",
        description="RLHF Studio: prompting, instruction tuning and RLHF on your own data and machines.",
        epilog="Run `rlhf-studio COMMAND --help` for a command's options.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("serve", help="start the studio in the browser", description="Start the studio (the single writer of its database).")
    add_server_arguments(p)
    p.add_argument("--create", action="store_true", help=CREATE_HELP)
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
    db_help = "DuckDB file (default: $STUDIO_DB or ./studio.duckdb); must exist and not be held by a running studio"
    projects = sub.add_parser("projects", help="list or create annotation projects", description="Annotation projects in the database.")
    psub = projects.add_subparsers(dest="projects_command", required=True, metavar="ACTION")
    p = psub.add_parser("list", help="show the projects", description="Show every project with its settings and prompt count.")
    p.add_argument("--db", help=db_help)
    p.add_argument("--create", action="store_true", help=CREATE_HELP)
    p.set_defaults(handler=cmd_projects_list)
    p = psub.add_parser("create", help="create a project", description="Create an annotation project.")
    p.add_argument("name")
    p.add_argument("--k", type=int, default=2, metavar="N", help="replies per prompt to rank (default: %(default)s; 2 = pairwise)")
    p.add_argument("--min-submitted", type=int, default=1, metavar="N", help="rankings needed per prompt (default: %(default)s)")
    p.add_argument("--guidelines", metavar="FILE", help="a Markdown file with the annotation guidelines")
    p.add_argument("--db", help=db_help)
    p.add_argument("--create", action="store_true", help=CREATE_HELP)
    p.set_defaults(handler=cmd_projects_create)

    p = sub.add_parser(
        "import",
        help="import prompts, replies or preferences from a file",
        description="Import a JSONL, JSON, CSV or parquet file, or a saved datasets folder, into a project, in one "
        "transaction. Shapes: plain prompts, dolly-15k, alpaca, TRL preference (plain or conversational), "
        "HH-RLHF transcripts; detected from the first record unless --shape says. Files must be UTF-8 (a "
        "byte-order mark is fine). Any bad record stops the import with its line and field, and nothing is "
        "written; with --skip-invalid bad records are left out and listed. Exact duplicates (the same prompt "
        "and replies, in the file or already in the project) are skipped and counted.",
    )
    p.add_argument("file", help="the file or datasets folder")
    p.add_argument("--project", required=True, metavar="NAME", help="the project to import into")
    p.add_argument("--shape", default="auto", choices=["auto", "prompt", "dolly", "alpaca", "preference", "hh-rlhf"])
    p.add_argument("--import-as", default="import", metavar="NAME", help="annotator that owns imported preferences (default: %(default)s)")
    p.add_argument("--skip-invalid", action="store_true", help="leave bad records out (each is listed) instead of stopping")
    p.add_argument("--db", help=db_help)
    p.add_argument("--create", action="store_true", help=CREATE_HELP)
    p.set_defaults(handler=cmd_import)

    p = sub.add_parser(
        "snapshot",
        help="freeze submitted rankings into TRL-format parquet",
        description="Freeze submitted rankings into an immutable snapshot folder: preference.parquet "
        "(prompt/chosen/rejected), preference_conversational.parquet and manifest.json. Strategies: "
        "all_pairs (every two replies with different ranks), best_vs_rest (the best against each worse "
        "reply), adjacent (each rank level against the next). With --kto also kto.parquet (prompt/completion/label) for KTO.",
    )
    p.add_argument("--project", metavar="NAME", help="only this project (default: all)")
    p.add_argument("--strategy", default="all_pairs", choices=["all_pairs", "best_vs_rest", "adjacent"])
    p.add_argument(
        "--aggregate", default="majority", choices=["majority", "per_annotator"], help="combine annotators (default: %(default)s)"
    )
    p.add_argument("--include-ties", action="store_true", help="keep ties as margin-0 rows")
    p.add_argument("--margin", action="store_true", help="add a margin column (rank difference)")
    p.add_argument("--since", metavar="ISO-TIME", help="only rankings submitted at or after this time")
    p.add_argument("--until", metavar="ISO-TIME", help="only rankings submitted before this time")
    p.add_argument("--annotator", action="append", metavar="NAME", help="only these annotators (repeatable)")
    p.add_argument(
        "--kto",
        action="store_true",
        help="also write kto.parquet for `train kto`: every thumbs up/down (desirable / undesirable) and the rankings "
        "converted (best rank desirable, worst undesirable, the rule in manifest.json)",
    )
    p.add_argument("--kto-model", action="append", metavar="NAME", help="with --kto: only thumbs on this model's replies (repeatable)")
    p.add_argument(
        "--kto-surface", action="append", choices=["chat", "lab", "arena"], help="with --kto: only thumbs given there (repeatable)"
    )
    p.add_argument("--out", metavar="DIR", help="snapshots folder (default: snapshots/ beside the database)")
    p.add_argument("--db", help=db_help)
    p.add_argument("--create", action="store_true", help=CREATE_HELP)
    p.set_defaults(handler=cmd_snapshot)
    add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # The database and its write-ahead log hold password hashes and unpublished data: owner-only.
    # Restored afterwards for callers that run commands in-process (tests).
    previous = os.umask(0o077)
    try:
        return run(build_parser(), argv, user_errors=(StoreError,))
    finally:
        os.umask(previous)


if __name__ == "__main__":
    raise SystemExit(main())
