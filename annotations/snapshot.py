"""Snapshots: freeze submitted rankings into an immutable folder of TRL-format parquet files.

    info = create_snapshot(store, Path("snapshots"), project="demo", strategy="all_pairs")
    ds = load_snapshot(info.folder)                      # datasets.Dataset: prompt/chosen/rejected
    conv = load_snapshot(info.folder, conversational=True)

A snapshot folder holds:

- ``preference.parquet``: TRL's standard preference format, ``prompt`` / ``chosen`` /
  ``rejected`` as text, plus ``margin`` (when asked), ``agreement``, ``n_annotators``,
  ``annotator`` (per-annotator rows) and the store ids;
- ``preference_conversational.parquet``: the same rows in TRL's conversational format
  (``prompt`` a list of messages, ``chosen`` / ``rejected`` one assistant message each);
- ``manifest.json``: id, creation time, content hash, filter, pair strategy, aggregation,
  counts, agreement figures and the SHA-256 of each file;
- with ``kto=True`` also ``kto.parquet``: unpaired verdicts for KTO, ``prompt`` (as in
  preference.parquet) / ``completion`` / ``label`` (True = desirable) / ``source`` ('thumbs' or
  'ranking'), plus ``annotator``, ``model``, ``surface``, ``reply_key``, ``prompt_id``,
  ``reply_id``, ``n_annotators`` and ``agreement``. Rankings convert by the rule for the
  snapshot's aggregation (:data:`annotations.feedback.KTO_RULES`); thumbs are every stored thumb,
  optionally only of some models and surfaces (the ranking filter does not apply to them).
  The manifest's ``kto`` section states the rule, the thumbs selection and the counts. A KTO
  snapshot may hold thumbs only (then the preference files have no rows). Without ``kto`` a
  snapshot is exactly what it was before KTO existed.

The same rankings with the same settings give the same content hash, and the existing
snapshot is returned instead of a copy. Files are made read-only once written.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from annotations.agreement import compute_agreement
from annotations.feedback import KTO_RULES, kto_ranking_rows, kto_thumb_rows, thumb_selection
from annotations.pairs import AGGREGATES, STRATEGIES, aggregate, judgements
from annotations.store import Store, StoreError

PLAIN = "preference.parquet"
CONVERSATIONAL = "preference_conversational.parquet"
MANIFEST = "manifest.json"
KTO = "kto.parquet"
KTO_SCHEMA = pa.schema(
    [
        ("prompt", pa.string()),
        ("completion", pa.string()),
        ("label", pa.bool_()),
        ("source", pa.string()),
        ("annotator", pa.string()),
        ("model", pa.string()),
        ("surface", pa.string()),
        ("reply_key", pa.string()),
        ("prompt_id", pa.int64()),
        ("reply_id", pa.int64()),
        ("n_annotators", pa.int64()),
        ("agreement", pa.float64()),
    ]
)
THUMBS_RULE = (
    "Every stored thumb matching the selection (None = all models / all surfaces), one row per account and reply with its "
    "latest verdict: thumb up -> desirable, thumb down -> undesirable. The ranking filter (project, time, annotators) does "
    "not apply to thumbs."
)
_MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))


@dataclass(frozen=True)
class SnapshotInfo:
    id: str
    folder: Path
    content_hash: str
    counts: dict
    manifest: dict
    reused: bool = False  # True when identical content already had a snapshot


def _when(value: datetime | str | None) -> datetime | None:
    if value is None or value == "":
        return None
    parsed = datetime.fromisoformat(value) if isinstance(value, str) else value
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _freeze(folder: Path) -> None:
    for f in folder.iterdir():
        f.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)


def _remove(folder: Path) -> None:
    if folder.exists():
        folder.chmod(stat.S_IRWXU)
        shutil.rmtree(folder)


def create_snapshot(
    store: Store,
    root: Path,
    project: str | int | None = None,
    strategy: str = "all_pairs",
    aggregate_by: str = "majority",
    include_ties: bool = False,
    margin: bool = False,
    since: datetime | str | None = None,
    until: datetime | str | None = None,
    annotators: list[str] | None = None,
    kto: bool = False,
    kto_models: list[str] | None = None,
    kto_surfaces: list[str] | None = None,
) -> SnapshotInfo:
    """Freeze the submitted rankings that match the filter; StoreError if none match.

    ``kto`` adds ``kto.parquet`` (see the module docstring): the rankings converted, and the
    thumbs of ``kto_models`` and ``kto_surfaces`` (None: all).
    """
    if strategy not in STRATEGIES:
        raise StoreError(f"unknown pair strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if aggregate_by not in AGGREGATES:
        raise StoreError(f"unknown aggregation {aggregate_by!r}; choose one of {', '.join(AGGREGATES)}")
    project_row = store.project(project) if project is not None else None
    start, end = _when(since), _when(until)
    sql = (
        "SELECT r.prompt_id, a.name, r.ranks FROM rankings r JOIN annotators a ON a.id = r.annotator_id "
        "JOIN prompts p ON p.id = r.prompt_id WHERE r.status = 'submitted'"
    )
    params: list = []
    if project_row:
        sql += " AND p.project_id = ?"
        params.append(project_row.id)
    if start:
        sql += " AND r.submitted >= ?"
        params.append(start)
    if end:
        sql += " AND r.submitted < ?"
        params.append(end)
    if annotators:
        sql += f" AND a.name IN ({', '.join('?' for _ in annotators)})"
        params += list(annotators)
    rankings = [
        (pid, who, {int(k): v for k, v in json.loads(ranks).items()}) for pid, who, ranks in store.query(sql + " ORDER BY r.id", params)
    ]
    selection = thumb_selection(kto_models, kto_surfaces) if kto else None
    thumbs = kto_thumb_rows(store, **selection) if selection else []
    if not rankings and not thumbs:
        raise StoreError(
            "no submitted rankings match this filter" + (" and no thumbs match the KTO selection" if kto else "") + "; nothing to snapshot"
        )

    # Ties are always votes (an annotator who tied two replies disagrees with both orders);
    # include_ties only decides whether a tie becomes a margin-0 row.
    rows = aggregate(judgements(rankings, strategy, include_ties=True), aggregate_by, include_ties)
    if not rows and not kto:
        raise StoreError("the matching rankings make no preference pairs (all ties or even splits); nothing to snapshot")
    prompt_ids = sorted({pid for pid, _, _ in rankings})
    prompts = {
        pid: (text, json.loads(msgs) if msgs else None)
        for pid, text, msgs in store.query(
            "SELECT id, text, messages FROM prompts WHERE id IN (SELECT unnest(?::BIGINT[]))",
            [prompt_ids],  # noqa: F541
        )
    }
    reply_rows = store.query("SELECT id, text, model FROM replies WHERE prompt_id IN (SELECT unnest(?::BIGINT[]))", [prompt_ids])
    replies = {rid: text for rid, text, _ in reply_rows}

    filt = {
        "project": project_row.name if project_row else None,
        "since": start.isoformat() if start else None,
        "until": end.isoformat() if end else None,
        "annotators": sorted(annotators) if annotators else None,
    }
    settings = {"pair_strategy": strategy, "aggregate": aggregate_by, "include_ties": include_ties, "margin": margin}
    records = [
        {
            "prompt": prompts[r.prompt_id][0],
            "chosen": replies[r.chosen],
            "rejected": replies[r.rejected],
            "prompt_id": r.prompt_id,
            "chosen_id": r.chosen,
            "rejected_id": r.rejected,
            "margin": r.margin,
            "agreement": r.agreement,
            "n_annotators": r.n_annotators,
            "annotator": r.annotator,
        }
        for r in rows
    ]
    hashed: dict = {"settings": settings, "rows": records}
    kto_records: list[dict] = []
    if selection is not None:
        from_rankings = kto_ranking_rows(
            rankings, aggregate_by, {pid: p[0] for pid, p in prompts.items()}, {rid: (text, model) for rid, text, model in reply_rows}
        )
        kto_records = from_rankings + thumbs
        if not kto_records:
            raise StoreError(
                "nothing converts to KTO data: no thumbs match the selection and no matching ranking has two rank levels; "
                "leave KTO out, or widen the selection"
            )
        # The rule and the selection are part of the content: the same rows under another rule are another snapshot.
        hashed["kto"] = {"rule": KTO_RULES[aggregate_by], "thumbs": selection, "rows": kto_records}
    content_hash = hashlib.sha256(json.dumps(hashed, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    existing = store.query("SELECT id, folder FROM snapshots WHERE content_hash = ?", [content_hash])
    if existing and (Path(existing[0][1]) / MANIFEST).is_file():
        manifest = json.loads((Path(existing[0][1]) / MANIFEST).read_text())
        return SnapshotInfo(existing[0][0], Path(existing[0][1]), content_hash, manifest["counts"], manifest, reused=True)

    created = datetime.now(UTC)
    snap_id = f"snap-{created:%Y%m%d-%H%M%S}-{content_hash[:8]}"
    agreement = compute_agreement(rankings)
    counts = {
        "rankings": len(rankings),
        "prompts": len(prompt_ids),
        "annotators": len({who for _, who, _ in rankings}),
        "pairs": len(records),
        "tie_pairs": sum(1 for r in records if r["margin"] == 0),
    }
    kto_section: dict | None = None
    if selection is not None:
        desirable = sum(1 for r in kto_records if r["label"])
        kto_section = {
            "file": KTO,
            "aggregate": aggregate_by,
            "rule": KTO_RULES[aggregate_by],
            "thumbs": {"selection": selection, "rule": THUMBS_RULE},
            "counts": {
                "rows": len(kto_records),
                "desirable": desirable,
                "undesirable": len(kto_records) - desirable,
                "from_thumbs": len(thumbs),
                "from_rankings": len(kto_records) - len(thumbs),
            },
        }
        counts["kto_desirable"], counts["kto_undesirable"] = desirable, len(kto_records) - desirable
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{snap_id}-{os.getpid()}"
    _remove(tmp)
    tmp.mkdir()
    folder = root / snap_id
    try:
        columns = ["prompt", "chosen", "rejected"] + (["margin"] if margin else [])
        meta = ["prompt_id", "chosen_id", "rejected_id", "agreement", "n_annotators", "annotator"]
        plain = {c: [r[c] for r in records] for c in columns + meta}
        pq.write_table(pa.table(plain) if records else _empty(plain, conversational=False), tmp / PLAIN)
        conv = dict(plain)
        conv["prompt"] = [prompts[r["prompt_id"]][1] or [{"role": "user", "content": r["prompt"]}] for r in records]
        conv["chosen"] = [[{"role": "assistant", "content": r["chosen"]}] for r in records]
        conv["rejected"] = [[{"role": "assistant", "content": r["rejected"]}] for r in records]
        pq.write_table(pa.table(conv) if records else _empty(conv, conversational=True), tmp / CONVERSATIONAL)
        if kto_section is not None:
            pq.write_table(pa.Table.from_pylist(kto_records, schema=KTO_SCHEMA), tmp / KTO)
        manifest = {
            "id": snap_id,
            "created": created.isoformat(timespec="seconds"),
            "content_hash": content_hash,
            "filter": filt,
            **settings,
            "counts": counts,
            "agreement": agreement.as_dict(),
            "files": {PLAIN: _sha256(tmp / PLAIN), CONVERSATIONAL: _sha256(tmp / CONVERSATIONAL)},
            "formats": {PLAIN: "trl standard preference", CONVERSATIONAL: "trl conversational preference"},
        }
        if kto_section is not None:
            manifest["files"][KTO] = _sha256(tmp / KTO)
            manifest["formats"][KTO] = "trl unpaired preference (KTO): prompt / completion / label"
            manifest["kto"] = kto_section
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
        _freeze(tmp)
        tmp.rename(folder)
        with store.transaction() as cur:
            cur.execute(
                "INSERT INTO snapshots (id, created, filter, pair_strategy, content_hash, counts, folder) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [snap_id, created, json.dumps(filt), strategy, content_hash, json.dumps(counts), str(folder.resolve())],
            )
    except BaseException:
        _remove(tmp)
        _remove(folder)
        raise
    return SnapshotInfo(snap_id, folder.resolve(), content_hash, counts, manifest)


def _empty(columns: dict[str, list], conversational: bool) -> pa.Table:
    """A preference file with no rows (a KTO snapshot of thumbs only), its columns typed as usual."""
    types = {"prompt_id": pa.int64(), "chosen_id": pa.int64(), "rejected_id": pa.int64(), "margin": pa.float64()}
    types |= {"agreement": pa.float64(), "n_annotators": pa.int64(), "annotator": pa.string()}
    text = _MESSAGES if conversational else pa.string()
    return pa.schema([(c, types.get(c, text)) for c in columns]).empty_table()


def load_kto(folder: Path):
    """A KTO snapshot's ``kto.parquet`` as a ``datasets.Dataset`` (prompt / completion / label, ...)."""
    from datasets import Dataset

    manifest = verify_snapshot(folder)
    if KTO not in manifest["files"]:
        raise StoreError(f"snapshot {manifest['id']} holds no KTO data; make a snapshot with KTO data included")
    return Dataset(pq.read_table(Path(folder) / KTO))


def list_snapshots(store: Store) -> list[dict]:
    rows = store.query("SELECT id, created, filter, pair_strategy, content_hash, counts, folder FROM snapshots ORDER BY created DESC")
    return [
        {"id": i, "created": c, "filter": json.loads(f), "pair_strategy": s, "content_hash": h, "counts": json.loads(n), "folder": d}
        for i, c, f, s, h, n, d in rows
    ]


def verify_snapshot(folder: Path) -> dict:
    """The manifest, after checking every file against its recorded SHA-256."""
    folder = Path(folder)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise StoreError(f"{folder} is not a snapshot folder (no {MANIFEST})")
    manifest = json.loads(manifest_path.read_text())
    for name, digest in manifest["files"].items():
        if not (folder / name).is_file() or _sha256(folder / name) != digest:
            raise StoreError(f"snapshot {manifest['id']}: {name} is missing or was changed after the snapshot was made")
    return manifest


def load_snapshot(folder: Path, conversational: bool = False):
    """The snapshot's pairs as a ``datasets.Dataset`` in TRL's preference format."""
    from datasets import Dataset

    verify_snapshot(folder)
    # In memory: from_parquet would copy the file into the datasets cache on every load.
    return Dataset(pq.read_table(Path(folder) / (CONVERSATIONAL if conversational else PLAIN)))
