"""Judged comparisons: did a trained model get better, by a judge it never trained against?

    rlhf-studio eval compare --model smollm2-135m-instruct --model my-dpo --prompts heldout.jsonl \\
        --judge reward_model:rm-other-half
    rlhf-studio eval compare --config eval.yaml          # the same, from a config (an ``eval`` run)

Each contender (a registered causal LM, optionally with a saved prompt-lab template, so L1
variants take part) answers every prompt with the same sampling settings; the judge compares
each contender's reply with the baseline's on the same prompt. Per contender against the
baseline: win rate with a bootstrap 95% interval (ties count half), the length-controlled win
rate (:mod:`rlhf.win_rates`), mean reply length in words and tokens, the share of empty and of
unfinished replies (cut by ``max_new_tokens``), and every reply with its judgement.

The judge is checked against each contender's lineage: a policy judged by the reward model it
was trained against (or by its own RLAIF judge) gets a warning that the figure measures the
proxy, not quality; so does a judge trained on the same data, and a judge that is a contender.

An eval is a run like any training run (``runs/eval-.../``): config.yaml, events.jsonl with
progress, status.json, run.log, and the results:

    results.json    per contender: win rate and interval, length-controlled rate, lengths, shares
    replies.jsonl   one line per prompt and contender: reply, words, tokens, finished, judgement
    metrics.json    the summary the run table shows
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rlhf.judges import JudgeSpecError, check_judge, describe
from rlhf.launch import LaunchFields
from rlhf.registry import ModelRegistry

DEFAULT_JUDGE = {"type": "pairwise", "model": "smollm2-135m-instruct"}


@dataclass
class EvalRunConfig(LaunchFields):
    contenders: list[dict] = field(
        default_factory=list,
        metadata={
            "help": "models to compare: {model: NAME, label: TEXT, system: TEXT, template: {prompt-lab template}, pool: FILE}; "
            "only model is required"
        },
    )
    baseline: str = field(
        default="", metadata={"help": "label (or model) of the contender the others are compared with (default: the first)"}
    )
    prompts: str = field(
        default="", metadata={"help": "prompts file (.jsonl/.json/.csv/.parquet with prompt, messages or instruction; .txt)"}
    )
    max_prompts: int = field(default=64, metadata={"help": "use the first N prompts (0 = all)"})
    judge: dict = field(
        default_factory=lambda: dict(DEFAULT_JUDGE),
        metadata={
            "help": "{type: reward_model, model: NAME} | {type: pairwise, model: NAME} (an LM asked in both orders) | "
            "{type: function, function: 'module:fn'}"
        },
    )
    temperature: float = field(default=0.7, metadata={"help": "sampling temperature for every contender (0 = greedy)"})
    top_p: float = field(default=0.95, metadata={"help": "nucleus sampling mass"})
    max_new_tokens: int = field(default=192, metadata={"help": "longest reply in tokens; cut replies count as unfinished"})
    seed: int = field(default=0, metadata={"help": "seed for sampling and the bootstrap"})
    batch_size: int = field(default=8, metadata={"help": "prompts per generation batch"})
    bootstrap: int = field(default=2000, metadata={"help": "bootstrap resamples for the intervals"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N"})

    def __post_init__(self) -> None:
        self.check_launch()
        if self.launcher != "python":
            raise ValueError("an eval runs in one process; set launcher: python")
        if self.max_prompts < 0:
            raise ValueError(f"max_prompts must be >= 0, got {self.max_prompts}")
        if self.bootstrap < 100:
            raise ValueError(f"bootstrap must be >= 100 resamples, got {self.bootstrap}")
        try:
            check_judge(self.judge)
        except JudgeSpecError as exc:
            raise ValueError(str(exc)) from exc
        labels = [contender_label(c) for c in self.contenders]
        if len(labels) < 2:
            raise ValueError("contenders: give at least two models (the first is the baseline unless baseline names another)")
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ValueError(f"contenders: two have the label {dupes[0]!r}; give each a distinct label")
        if self.baseline and self.baseline not in labels:
            raise ValueError(f"baseline {self.baseline!r} is not one of the contenders ({', '.join(labels)})")

    @property
    def baseline_label(self) -> str:
        return self.baseline or contender_label(self.contenders[0])


def contender_label(spec: dict) -> str:
    """What a contender is called in results: its label, else the model (+ template name)."""
    if not isinstance(spec, dict) or not isinstance(spec.get("model"), str) or not spec["model"].strip():
        raise ValueError(f"contenders: each needs a model, e.g. {{model: smollm2-135m-instruct}} (got {spec!r})")
    unknown = set(spec) - {"model", "label", "system", "template", "pool"}
    if unknown:
        raise ValueError(f"contenders: unknown key(s) {', '.join(sorted(unknown))}; allowed: model, label, system, template, pool")
    if spec.get("label"):
        return str(spec["label"])
    template = spec.get("template") or {}
    return f"{spec['model']} + template {template.get('name', 'untitled')}" if template else spec["model"]


# -- lineage ---------------------------------------------------------------------------------------
def _ancestry(registry: ModelRegistry, name: str, depth: int = 6) -> list[dict]:
    """The lineage records of ``name`` and of the models it was trained from, nearest first."""
    out, seen = [], set()
    while name and name not in seen and depth > 0:
        seen.add(name)
        try:
            lineage = registry.get(name).lineage
        except Exception:  # a folder path or an unknown name: no recorded history
            break
        if not lineage:
            break
        out.append(lineage)
        name = lineage.get("policy") or lineage.get("base_model") or ""
        depth -= 1
    return out


def _same_source(source: dict, judge: dict, judge_model) -> bool:
    """A training (or checkpoint-picking) reward source that is this judge."""
    trained = source.get("model") or source.get("function")
    same_kind = (source.get("type"), judge.get("type")) in (("model", "reward_model"), ("judge", "pairwise"), ("function", "function"))
    return trained == judge_model and same_kind


def lineage_warnings(contenders: list[dict], judge: dict, registry: ModelRegistry | None = None, known: dict | None = None) -> list[str]:
    """Why this judge may not measure quality for these contenders (empty when it is independent).

    ``known``: lineage records of models not registered yet (a run's own checkpoint), by model.
    """
    registry = registry or ModelRegistry()
    known = known or {}
    judge_model = judge.get("model") or judge.get("function")
    judge_lineage = {}
    if judge.get("model"):
        try:
            judge_lineage = registry.get(judge["model"]).lineage
        except Exception:
            judge_lineage = {}
    warnings = []
    for spec in contenders:
        label = contender_label(spec)
        if spec["model"] == judge_model:
            warnings.append(f"{label} is also the judge: a model tends to prefer its own replies")
        records = [known[spec["model"]], *_ancestry(registry, known[spec["model"]].get("policy", ""))] if spec["model"] in known else []
        for record in records or _ancestry(registry, spec["model"]):
            for source in record.get("rewards") or []:
                if _same_source(source, judge, judge_model):
                    warnings.append(
                        f"{label} was trained against {describe(judge)}: its win rate measures how well it pleases that proxy, "
                        "not quality; judge it with another reward model, an AI judge or the arena"
                    )
            if record.get("checkpoint_chosen_by_judge"):
                for source in record.get("heldout_judge") or []:
                    if _same_source(source, judge, judge_model):
                        warnings.append(
                            f"{label} was saved at the step where {describe(judge)} scored it best (early stopping): "
                            "the same judge now favours it; judge it with another reward model, an AI judge or the arena"
                        )
            data = record.get("data")
            if data and judge_lineage.get("data") == data:
                warnings.append(f"{label} and the judge were trained on the same data ({data}); the judge shares its blind spots")
    return list(dict.fromkeys(warnings))


# -- the comparison --------------------------------------------------------------------------------
def _prompt_text(prompt) -> str:
    """The text a judge reads as the prompt: the message itself, or a transcript of a chat."""
    if isinstance(prompt, str):
        return prompt
    return "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in prompt)


def _user_text(prompt) -> str:
    if isinstance(prompt, str):
        return prompt
    users = [m["content"] for m in prompt if m.get("role") == "user"]
    return str(users[-1]) if users else _prompt_text(prompt)


def conversations(spec: dict, prompts: list, registry: ModelRegistry, device=None) -> list:
    """What the contender's model is given for each prompt: the prompt, or the template's messages."""
    template = spec.get("template")
    if not template:
        return list(prompts)
    from rlhf.prompting import PromptTemplate, pick_demonstrations, render

    t = PromptTemplate.from_dict(template)
    pool: list[dict] = []
    if spec.get("pool"):
        from rlhf.instruction_data import read_records

        pool = [r for _, r in read_records(Path(spec["pool"]))]
    encoder = None
    if t.demos == "nearest":
        from rlhf.embedding import SentenceEncoder

        encoder = SentenceEncoder.load("minilm-l6", registry, device)
    out = []
    for prompt in prompts:
        record = {"input": _user_text(prompt)}
        out.append(render(t, record, pick_demonstrations(t, pool, record, encoder)))
    return out


@dataclass
class Replies:
    label: str
    texts: list[str]
    tokens: list[int]
    finished: list[bool]
    truncated: list[int]


def generate_replies(spec: dict, prompts: list, cfg: EvalRunConfig, registry: ModelRegistry, progress=None) -> Replies:
    """Load the contender's model, answer every prompt in batches, free the model."""
    import gc

    import torch

    from rlhf.generation import GenerationEngine, SamplingParams
    from rlhf.loading import load_causal_lm

    model, tokenizer = load_causal_lm(spec["model"], registry, device=cfg.device)
    try:
        engine = GenerationEngine(model, tokenizer, batch_size=cfg.batch_size)
        params = SamplingParams(cfg.temperature, cfg.top_p, cfg.max_new_tokens, cfg.seed)
        gens = engine.generate(
            conversations(spec, prompts, registry, cfg.device), params, system=spec.get("system") or None, progress=progress
        )
    finally:
        del model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return Replies(
        contender_label(spec),
        [g.text for g in gens],
        [g.new_tokens for g in gens],
        [g.finished for g in gens],
        [g.truncated_tokens for g in gens],
    )


def summarise(model: Replies, base: Replies, judgements: list, rounds: int, seed: int) -> dict:
    """One contender against the baseline: rates with intervals, lengths and shares."""
    from rlhf.win_rates import length_controlled, win_rate, words

    outcomes = [j.outcome for j in judgements]
    mw, bw = [words(t) for t in model.texts], [words(t) for t in base.texts]
    rate = win_rate(outcomes, rounds=rounds, seed=seed)
    lc = length_controlled(outcomes, mw, bw, rounds=max(100, rounds // 10), seed=seed)
    n = len(outcomes)
    return {
        "contender": model.label,
        "baseline": base.label,
        "prompts": n,
        "wins": sum(j.verdict == "a" for j in judgements),
        "ties": sum(j.verdict == "tie" for j in judgements),
        "losses": sum(j.verdict == "b" for j in judgements),
        "win_rate": rate.value,
        "win_rate_low": rate.low,
        "win_rate_high": rate.high,
        "lc_win_rate": lc.value,
        "lc_win_rate_low": lc.low,
        "lc_win_rate_high": lc.high,
        "mean_words": sum(mw) / n,
        "baseline_mean_words": sum(bw) / n,
        "mean_tokens": sum(model.tokens) / n,
        "empty_share": sum(not t.strip() for t in model.texts) / n,
        "unfinished_share": sum(not f for f in model.finished) / n,
        "mean_preference": sum(j.preference for j in judgements) / n,
    }


def compare(
    cfg: EvalRunConfig, registry: ModelRegistry | None = None, progress=None, stop=None, write_replies=None, known: dict | None = None
) -> dict:
    """Generate with every contender, judge each against the baseline; the results as a dict.

    ``progress(phase, done, total)`` reports generation and judging; ``stop`` (truthy) ends the
    work between contenders; ``write_replies(rows)`` receives every reply with its judgement.
    """
    from rlhf.judges import build_judge
    from rlhf.prompt_files import read_prompt_records

    registry = registry or ModelRegistry()
    records = read_prompt_records(Path(cfg.prompts), limit=cfg.max_prompts or None)
    prompts = [p for _, p in records]
    warnings = lineage_warnings(cfg.contenders, cfg.judge, registry, known)
    by_label = {contender_label(c): c for c in cfg.contenders}
    order = [cfg.baseline_label] + [label for label in by_label if label != cfg.baseline_label]
    replies: dict[str, Replies] = {}
    # Progress in prompt units: every contender answers every prompt, then every non-baseline
    # contender's replies are judged against the baseline's.
    units = len(order) * len(prompts) + (len(order) - 1) * len(prompts)
    for i, label in enumerate(order):
        if stop:
            break

        def report(done: int, total: int, i: int = i, label: str = label) -> None:
            if progress:
                progress(f"generating: {label}", i * len(prompts) + done, units)

        replies[label] = generate_replies(by_label[label], prompts, cfg, registry, report)
    results = {
        "judge": describe(cfg.judge),
        "judge_spec": cfg.judge,
        "baseline": cfg.baseline_label,
        "warnings": warnings,
        "contenders": [],
    }
    if stop or len(replies) < 2:
        results["stopped"] = True
        return results
    if progress:
        progress("loading the judge", len(order) * len(prompts), units)
    judge = build_judge(cfg.judge, registry, None if cfg.device == "auto" else cfg.device)
    base = replies[cfg.baseline_label]
    texts = [_prompt_text(p) for p in prompts]
    rows = [
        {
            "prompt_index": k,
            "prompt": texts[k],
            "contender": base.label,
            "reply": base.texts[k],
            "tokens": base.tokens[k],
            "finished": base.finished[k],
        }
        for k in range(len(prompts))
    ]
    for i, label in enumerate(order[1:], 1):
        if stop:
            results["stopped"] = True
            break
        found = judge.judge(texts, replies[label].texts, base.texts)
        summary = summarise(replies[label], base, found, cfg.bootstrap, cfg.seed)
        results["contenders"].append(summary)
        model = replies[label]
        for k, j in enumerate(found):
            rows.append(
                {
                    "prompt_index": k,
                    "prompt": texts[k],
                    "contender": label,
                    "reply": model.texts[k],
                    "tokens": model.tokens[k],
                    "finished": model.finished[k],
                    "verdict": {"a": "win", "b": "loss"}.get(j.verdict, "tie"),
                    "preference": j.preference,
                    **({"orders": list(j.orders)} if j.orders else {}),
                }
            )
        if progress:
            progress(f"judged: {label}", len(order) * len(prompts) + i * len(prompts), units)
    base_words = [len(t.split()) for t in base.texts]
    results["baseline_mean_words"] = sum(base_words) / len(base_words)
    results["baseline_unfinished_share"] = sum(not f for f in base.finished) / len(base.finished)
    if write_replies:
        write_replies(rows)
    return results


def check_eval_config(cfg: EvalRunConfig, registry: ModelRegistry | None = None) -> list[str]:
    """Every reason the eval cannot run (models, prompts, judge), as sentences."""
    from rlhf.modelfiles import ModelError
    from rlhf.prompt_files import read_prompt_records

    registry = registry or ModelRegistry()
    found = []
    if not cfg.prompts:
        found.append("prompts: required; name a prompts file")
    else:
        try:
            read_prompt_records(Path(cfg.prompts), limit=20)
        except (ValueError, OSError) as exc:
            found.append(f"prompts: {exc}")
    for spec in cfg.contenders:
        try:
            entry = registry.available(spec["model"])
            if entry.kind != "causal-lm":
                found.append(f"contender {contender_label(spec)}: {spec['model']} is a {entry.kind} model; it must be a causal-lm")
        except ModelError as exc:
            found.append(f"contender {contender_label(spec)}: {exc}")
        if spec.get("template"):
            from rlhf.prompting import PromptTemplate, TemplateError

            try:
                PromptTemplate.from_dict(spec["template"]).check()
            except (TemplateError, TypeError) as exc:
                found.append(f"contender {contender_label(spec)}: template: {exc}")
        if spec.get("pool") and not Path(spec["pool"]).is_file():
            found.append(f"contender {contender_label(spec)}: pool file {spec['pool']} not found")
    kind = cfg.judge.get("type")
    if kind in ("reward_model", "pairwise"):
        want = "reward-model" if kind == "reward_model" else "causal-lm"
        try:
            entry = registry.available(cfg.judge["model"])
            if entry.kind != want:
                found.append(f"judge: {cfg.judge['model']} is a {entry.kind} model; a {kind} judge must be a {want}")
        except ModelError as exc:
            found.append(f"judge: {exc}")
    else:
        from rlhf.judges import FunctionJudge

        try:
            FunctionJudge(cfg.judge["function"])
        except JudgeSpecError as exc:
            found.append(str(exc))
    return found


def run_eval(cfg: EvalRunConfig, run, stop, registry=None, resume: bool = False) -> dict:
    """The ``eval`` run kind: progress events, replies.jsonl, results.json, metrics.json."""
    from rlhf.paths import write_private

    registry = registry or ModelRegistry()
    last = {"step": 0}

    def progress(phase: str, done: int, total: int) -> None:
        last["step"] = done
        run.append_event({"step": done, "max_steps": total, "phase": phase})
        print(f"{phase}: {done}/{total}", flush=True)

    def write_replies(rows: list[dict]) -> None:
        write_private(run.path / "replies.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))

    for warning in lineage_warnings(cfg.contenders, cfg.judge, registry):
        print(f"warning: {warning}", flush=True)
    results = compare(cfg, registry, progress, stop, write_replies)
    write_private(run.path / "results.json", json.dumps(results, indent=2))
    metrics = {"judge": results["judge"], "baseline": results["baseline"], "warnings": len(results["warnings"])}
    for row in results["contenders"]:
        metrics[f"win_rate[{row['contender']}]"] = row["win_rate"]
    best = max(results["contenders"], key=lambda r: r["win_rate"], default=None)
    if best:
        metrics.update(
            best=best["contender"],
            win_rate=best["win_rate"],
            win_rate_low=best["win_rate_low"],
            win_rate_high=best["win_rate_high"],
            lc_win_rate=best["lc_win_rate"],
            mean_words=best["mean_words"],
            baseline_mean_words=results["baseline_mean_words"],
        )
    run.write_metrics(metrics)
    run.append_event({"step": last["step"], "final": True, **{k: v for k, v in metrics.items() if isinstance(v, int | float)}})
    return metrics


def read_results(run_path: Path) -> dict | None:
    """An eval run's results.json (None while it has none)."""
    try:
        return json.loads((Path(run_path) / "results.json").read_text())
    except (OSError, ValueError):
        return None


def config_dict(cfg: EvalRunConfig) -> dict:
    return asdict(cfg)


# -- the check at the end of a training run ---------------------------------------------------------
def parse_judge(text: str) -> dict:
    """``reward_model:NAME``, ``pairwise:NAME`` or ``function:module:fn`` as a judge mapping."""
    kind, _, target = (text or "").partition(":")
    if kind not in ("reward_model", "pairwise", "function") or not target:
        raise JudgeSpecError(f"judge {text!r}: write reward_model:NAME, pairwise:NAME or function:module.path:fn")
    spec = {"type": kind, ("function" if kind == "function" else "model"): target}
    check_judge(spec)
    return spec


def end_of_run_check(
    run,
    *,
    start: str,
    prompts: list,
    judge: str,
    count: int,
    lineage: dict,
    max_new_tokens: int,
    seed: int,
    registry: ModelRegistry | None = None,
) -> dict:
    """Judge the run's saved checkpoint against its starting model on held-out prompts.

    Written to ``<run>/check/`` (prompts.jsonl, results.json, replies.jsonl); returns the metrics
    the run table shows (``judged_win_rate_vs_start`` with its interval, the length-controlled
    rate, both mean lengths). A failure is returned as ``check_error``: the trained model stays.
    """
    from rlhf.paths import private_dir, write_private

    registry = registry or ModelRegistry()
    folder = private_dir(run.path / "check")
    chosen = [p for p in prompts if p][:count]
    if not chosen:
        return {"check_error": "no held-out prompts to judge on"}
    try:
        spec = parse_judge(judge)
        write_private(
            folder / "prompts.jsonl",
            "".join(json.dumps({"messages": p} if isinstance(p, list) else {"prompt": p}, ensure_ascii=False) + "\n" for p in chosen),
        )
        trained = str(run.checkpoint_dir.resolve())
        cfg = EvalRunConfig(
            contenders=[{"model": start, "label": "start"}, {"model": trained, "label": "trained"}],
            prompts=str(folder / "prompts.jsonl"),
            max_prompts=0,
            judge=spec,
            max_new_tokens=max_new_tokens,
            seed=seed,
            bootstrap=1000,
        )
        print(f"independent check: trained vs start on {len(chosen)} held-out prompts, judged by {describe(spec)}", flush=True)
        results = compare(
            cfg,
            registry,
            write_replies=lambda rows: write_private(
                folder / "replies.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
            ),
            known={trained: lineage},
        )
    except Exception as exc:  # noqa: BLE001 - the check must never cost the user the trained model
        print(f"independent check failed: {type(exc).__name__}: {exc}", flush=True)
        return {"check_error": f"{type(exc).__name__}: {exc}"}
    write_private(folder / "results.json", json.dumps(results, indent=2))
    (row,) = results["contenders"]
    for warning in results["warnings"]:
        print(f"warning: {warning}", flush=True)
    print(
        f"independent check: judged win rate vs start {row['win_rate']:.3f} [{row['win_rate_low']:.3f}, {row['win_rate_high']:.3f}], "
        f"length-controlled {row['lc_win_rate']:.3f}, {row['mean_words']:.0f} words vs {row['baseline_mean_words']:.0f}",
        flush=True,
    )
    return {
        "judged_win_rate_vs_start": row["win_rate"],
        "judged_win_rate_vs_start_low": row["win_rate_low"],
        "judged_win_rate_vs_start_high": row["win_rate_high"],
        "judged_lc_win_rate_vs_start": row["lc_win_rate"],
        "judged_words": row["mean_words"],
        "start_words": row["baseline_mean_words"],
        "check_judge": results["judge"],
        "check_warnings": len(results["warnings"]),
    }
