"""Judged comparisons from the studio: build an ``eval`` run config, launch it, show its results.

The form picks contenders (registered causal LMs, and saved prompt-lab templates applied to a
model, so L1 variants take part), the baseline, the prompts (a project's prompts or a file in
the data folders) and the judge (a reward model, or an LM asked pairwise in both orders). A
project's prompts and a template's demonstration pool are exported to files under the runs
folder at launch: runs never open the database. Results come from the run's results.json and
replies.jsonl. Admins only: every function here is called after ``require(..., TRAIN)``.
"""

from __future__ import annotations

import dataclasses
import html
import json
import re
from datetime import datetime
from pathlib import Path

import pandas as pd

from annotations.export import labelled_records
from annotations.store import StoreError
from annotations.templates import load_template, template_names
from rlhf.config import ConfigError, config_yaml
from rlhf.evaluation import EvalRunConfig, contender_label, read_results
from rlhf.paths import private_dir, write_private
from rlhf.registry import DEFAULT_CHAT_MODEL
from studio.config_form import PROJECT_PREFIX, confine_config, form_config, prompts_file
from studio.context import StudioContext
from studio.permissions import data_path
from studio.render import markdown_html, plain_text

KIND = "eval"
TEMPLATE_PREFIX = "template:"
JUDGE_TYPES = {"AI judge, pairwise (both orders)": "pairwise", "Reward model": "reward_model"}


def contender_choices(ctx: StudioContext) -> list[tuple[str, str]]:
    """Registered causal LMs, then saved templates (applied to the template model)."""
    models = [(name, name) for name in ctx.registry.names("causal-lm")]
    templates = [(f"template {t} (prompted)", TEMPLATE_PREFIX + t) for t in template_names(ctx.store)]
    return models + templates


def judge_model_choices(ctx: StudioContext, judge_type: str | None) -> list[str]:
    kind = "reward-model" if JUDGE_TYPES.get(judge_type or "", judge_type) == "reward_model" else "causal-lm"
    return ctx.registry.names(kind)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-") or "x"


def contenders_from(
    ctx: StudioContext, picked: list[str], template_model: str | None, pool: str | None, export_to: Path | None
) -> list[dict]:
    """Contender mappings for the picked models and templates.

    A template whose demonstrations come from a pool needs the pool as a file: a project's
    records are written under ``export_to`` (at launch), a file path is used as it is.
    """
    out = []
    for choice in picked or []:
        if not choice.startswith(TEMPLATE_PREFIX):
            out.append({"model": choice})
            continue
        name = choice[len(TEMPLATE_PREFIX) :]
        body = load_template(ctx.store, name)
        model = template_model or DEFAULT_CHAT_MODEL
        spec = {"model": model, "label": f"{model} + template {name}", "template": {**body, "name": name}}
        if body.get("demos", "none") != "none" and int(body.get("k", 0) or 0) > 0:
            if not pool:
                raise ValueError(f"template {name} shows demonstrations: choose a demonstration pool for it")
            if pool.startswith(PROJECT_PREFIX):
                if export_to is None:
                    spec["pool"] = pool  # preview: exported at launch
                else:
                    records = labelled_records(ctx.store, pool[len(PROJECT_PREFIX) :])
                    path = private_dir(export_to) / f"pool-{_safe(pool)}-{datetime.now():%Y%m%d-%H%M%S}.jsonl"
                    write_private(path, "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records))
                    spec["pool"] = str(path)
            else:
                spec["pool"] = pool
        out.append(spec)
    return out


def make_config(
    ctx: StudioContext,
    picked: list[str],
    baseline: str | None,
    prompts: str | None,
    judge_type: str | None,
    judge_model: str | None,
    settings: dict,
    template_model: str | None = None,
    pool: str | None = None,
    export_to: Path | None = None,
) -> EvalRunConfig:
    if not picked or len(picked) < 2:
        raise ValueError("Choose at least two contenders (models or templates).")
    if not prompts:
        raise ValueError("Choose the prompts: a project's prompts, or type the path of a prompts file.")
    if not judge_model:
        raise ValueError("Choose the judge's model: one the contenders were not trained against.")
    contenders = contenders_from(ctx, picked, template_model, pool, export_to)
    labels = [contender_label(c) for c in contenders]
    chosen = baseline if baseline in labels else ""
    if baseline and not chosen:
        raise ValueError(f"The baseline {baseline!r} is not among the contenders.")
    judge = {"type": JUDGE_TYPES.get(judge_type or "", judge_type or "pairwise"), "model": judge_model}
    try:
        return form_config(EvalRunConfig, {"contenders": contenders, "baseline": chosen, "prompts": prompts, "judge": judge, **settings})
    except ConfigError as exc:
        raise ValueError(str(exc)) from exc


def preview(ctx: StudioContext, *args) -> tuple[str, str]:
    try:
        cfg = make_config(ctx, *args)
    except (ValueError, StoreError) as exc:
        return f"# not ready: {exc}\n", ""
    note = ""
    if cfg.prompts.startswith(PROJECT_PREFIX):
        note = f"\n\nAt launch the project's prompts are exported to a JSONL file under `{ctx.launcher.root}`; the config names it."
    command = f"rlhf-studio eval compare --config eval.yaml --runs-dir {ctx.launcher.root}"
    return config_yaml(cfg), f"Save the config as `eval.yaml`; the same comparison from a terminal is:\n\n```\n{command}\n```{note}"


def launch(ctx: StudioContext, *args) -> str:
    """Start an eval run (exports first, then the complete check, then the subprocess); its id."""
    sets = ctx.launcher.root / "prompt-sets"
    cfg = make_config(ctx, *args, export_to=sets)
    cfg = dataclasses.replace(cfg, prompts=prompts_file(ctx.store, ctx.launcher.root, cfg.prompts))
    cfg = confine_config(cfg, ctx.data_roots)
    # Pools named by hand must lie in the data folders too.
    contenders = [{**c, "pool": str(data_path(ctx.data_roots, c["pool"]))} if c.get("pool") else c for c in cfg.contenders]
    cfg = dataclasses.replace(cfg, contenders=contenders)
    return ctx.launcher.start(KIND, cfg, registry=ctx.registry).id


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def results_frame(results: dict | None) -> pd.DataFrame:
    columns = ["contender", "win rate [95% CI]", "length-controlled", "wins / ties / losses", "words (baseline)", "empty", "unfinished"]
    rows = []
    for r in (results or {}).get("contenders", []):
        rows.append(
            [
                r["contender"],
                f"{r['win_rate']:.3f} [{r['win_rate_low']:.3f}, {r['win_rate_high']:.3f}]",
                f"{r['lc_win_rate']:.3f} [{r['lc_win_rate_low']:.3f}, {r['lc_win_rate_high']:.3f}]",
                f"{r['wins']} / {r['ties']} / {r['losses']}",
                f"{r['mean_words']:.0f} ({r['baseline_mean_words']:.0f})",
                _pct(r["empty_share"]),
                _pct(r["unfinished_share"]),
            ]
        )
    return pd.DataFrame(rows, columns=columns)


def results_summary(results: dict | None) -> str:
    """The judge, the baseline and any lineage warnings, as HTML (every name escaped)."""
    if not results:
        return "<p>No results yet: they appear when the run finishes.</p>"
    parts = [
        f"<p>Judge: <b>{plain_text(results['judge'])}</b>. Baseline: <b>{plain_text(results['baseline'])}</b>. "
        "Win rates count ties as half; the length-controlled rate is the judge's preference at equal reply length.</p>"
    ]
    for warning in results.get("warnings", []):
        parts.append(f'<p class="eval-warning">⚠ {plain_text(warning)}</p>')
    if results.get("stopped"):
        parts.append("<p>The run was stopped before every contender was judged.</p>")
    return "".join(parts)


def replies_html(run_path: Path, limit: int = 8) -> str:
    """The first prompts with the baseline's reply and each contender's, and the verdict."""
    path = Path(run_path) / "replies.jsonl"
    if not path.is_file():
        return ""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    by_prompt: dict[int, list[dict]] = {}
    for row in rows:
        by_prompt.setdefault(row["prompt_index"], []).append(row)
    blocks = []
    for index in sorted(by_prompt)[:limit]:
        group = by_prompt[index]
        cells = []
        for row in group:
            verdict = row.get("verdict")
            head = plain_text(row["contender"]) + (f" · <b>{html.escape(verdict)}</b>" if verdict else " · baseline")
            if not row.get("finished", True):
                head += " · cut at the token limit"
            cells.append(f'<div class="eval-reply"><div class="md-role">{head}</div>{markdown_html(row["reply"])}</div>')
        blocks.append(
            f'<div class="eval-prompt"><div class="md-role">Prompt {index + 1}</div>{markdown_html(group[0]["prompt"])}'
            f'<div class="eval-replies">{"".join(cells)}</div></div>'
        )
    return "".join(blocks)


def show_results(ctx: StudioContext, run_id: str | None) -> tuple[str, pd.DataFrame, str]:
    if not run_id:
        return "<p>Choose an eval run.</p>", results_frame(None), ""
    try:
        run = ctx.launcher.get(run_id)
    except ValueError as exc:
        return f"<p>{plain_text(exc)}</p>", results_frame(None), ""
    results = read_results(run.path)
    return results_summary(results), results_frame(results), replies_html(run.path)
