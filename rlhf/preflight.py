"""Check a run config completely before a run folder is made for it.

A config that cannot train should be refused while nothing exists yet, not after a run folder
was made or, worse, after the whole training ran (an invalid ``register_as`` used to fail at
the very end). Both the command line (``rlhf-studio train KIND --config``) and the studio's
launch call :func:`check_run_config`:

- the values themselves (types, unknown keys, ranges) were checked when the config was built;
- the data: the data / prompts file (and a held-out file) exists, can be read, and its first
  records parse in the shape the trainer needs;
- the models: every model the run names is registered (or a complete local folder) and of the
  right kind (no model is loaded or converted here);
- ``register_as``: a name the registry will accept at the end of the run (the same rule).

    cfg = load_run_config("reward", Path("run.yaml"))    # ConfigError for an empty or bad file
    check_run_config("reward", cfg, registry)            # ConfigError listing every problem
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlhf.config import ConfigError, load_config
from rlhf.launch import scale_out_problems
from rlhf.modelfiles import ModelError
from rlhf.registry import ModelRegistry

RUN_KINDS = ("reward", "ppo", "sft", "dpo", "kto", "grpo", "rloo", "eval")
PEEK_RECORDS = 20  # records read from the start of each data file


def config_class(kind: str) -> type:
    """The config dataclass of a run kind."""
    if kind == "reward":
        from rlhf.reward import RewardRunConfig

        return RewardRunConfig
    if kind == "ppo":
        from rlhf.ppo import PPORunConfig

        return PPORunConfig
    if kind == "sft":
        from rlhf.sft import SFTRunConfig

        return SFTRunConfig
    if kind == "dpo":
        from rlhf.dpo import DPORunConfig

        return DPORunConfig
    if kind == "kto":
        from rlhf.kto import KTORunConfig

        return KTORunConfig
    if kind == "grpo":
        from rlhf.online_rl import GRPORunConfig

        return GRPORunConfig
    if kind == "rloo":
        from rlhf.online_rl import RLOORunConfig

        return RLOORunConfig
    if kind == "eval":
        from rlhf.evaluation import EvalRunConfig

        return EvalRunConfig
    raise ConfigError(f"unknown run kind {kind!r}; one of {', '.join(RUN_KINDS)}")


def load_run_config(kind: str, path: Path) -> Any:
    """A run config from its YAML file; ConfigError for a missing, empty or malformed file."""
    return load_config(config_class(kind), Path(path))


# -- the checks -----------------------------------------------------------------------------------
def _pairs(path: str, skip_invalid: bool = False) -> None:
    from rlhf.preference_data import read_pairs

    read_pairs(Path(path), limit=PEEK_RECORDS, skip_invalid=skip_invalid)


def _examples(path: str) -> None:
    from rlhf.instruction_data import read_examples

    read_examples(Path(path), limit=PEEK_RECORDS)


def _kto_examples(path: str) -> None:
    from rlhf.kto_data import read_kto_examples

    read_kto_examples(Path(path), limit=PEEK_RECORDS)


def _prompts(path: str) -> None:
    from rlhf.prompt_files import read_prompt_records

    read_prompt_records(Path(path), limit=PEEK_RECORDS)


# kind -> (required data field, held-out field, reader, what the data is)
DATA = {
    "reward": ("data", "eval_data", _pairs, "a snapshot folder or a preference file"),
    "dpo": ("data", "eval_data", _pairs, "a snapshot folder or a preference file"),
    "sft": ("data", "eval_data", _examples, "an instruction file (dolly, alpaca, conversations or prompt/response)"),
    "kto": ("data", "eval_data", _kto_examples, "a snapshot folder with KTO data or a file of prompt/completion/label records"),
    "ppo": ("prompts", "eval_prompts", _prompts, "a prompts file"),
    "grpo": ("prompts", "eval_prompts", _prompts, "a prompts file"),
    "rloo": ("prompts", "eval_prompts", _prompts, "a prompts file"),
}
# kind -> [(model field, kinds it may be, what it is)]
MODELS = {
    "reward": [("base_model", ("encoder", "causal-lm", "reward-model"), "base model")],
    "sft": [("base_model", ("causal-lm",), "base model")],
    "dpo": [("policy", ("causal-lm",), "policy")],
    "kto": [("policy", ("causal-lm",), "policy")],
    "grpo": [("policy", ("causal-lm",), "policy")],
    "rloo": [("policy", ("causal-lm",), "policy")],
    "ppo": [("policy", ("causal-lm",), "policy"), ("value_model", ("causal-lm", "encoder", "reward-model"), "value model")],
}
REWARD_MODEL_KINDS = {"model": ("reward-model",), "judge": ("causal-lm",), "similarity": ("encoder",)}


def _check_model(registry: ModelRegistry, name: str, kinds: tuple[str, ...], what: str) -> str | None:
    try:
        found = registry.available(name)
    except ModelError as exc:
        return f"{what}: {exc}"
    if found.kind not in kinds:
        return f"{what}: {name} is a {found.kind} model; it must be {' or '.join(kinds)}"
    return None


def problems(kind: str, cfg: Any, registry: ModelRegistry | None = None) -> list[str]:
    """Every reason the config cannot run, as sentences (empty when it can)."""
    registry = registry or ModelRegistry()
    if kind == "eval":
        from rlhf.evaluation import check_eval_config

        return check_eval_config(cfg, registry)
    found: list[str] = []
    field, eval_field, read, what = DATA[kind]
    value = getattr(cfg, field)
    if not value:
        found.append(f"{field}: required; name {what}")
    for name in (field, eval_field):
        path = getattr(cfg, name, None)
        if path:
            try:
                read(path, skip_invalid=True) if read is _pairs and getattr(cfg, "skip_invalid", False) else read(path)
            except (ValueError, OSError) as exc:  # the readers' own errors name the line and field
                found.append(f"{name}: {exc}")
    for name, kinds, label in MODELS[kind]:
        model = getattr(cfg, name, None)
        if model:
            problem = _check_model(registry, model, kinds, f"{name} ({label})")
            if problem:
                found.append(problem)
    if kind in ("ppo", "grpo", "rloo"):
        for key in ("rewards", "heldout_judge"):
            for i, spec in enumerate(getattr(cfg, key, None) or []):
                kinds = REWARD_MODEL_KINDS.get(spec.get("type"))
                if kinds and spec.get("model"):
                    problem = _check_model(registry, spec["model"], kinds, f"{key}[{i}] ({spec['type']})")
                    if problem:
                        found.append(problem)
    if cfg.register_as:  # empty: the run id
        try:
            registry.check_name(cfg.register_as, replace="runs")
        except ModelError as exc:
            found.append(f"register_as: {exc}")
    found += scale_out_problems(kind, cfg)  # DeepSpeed/FSDP without CUDA, more processes than GPUs
    return found


def check_run_config(kind: str, cfg: Any, registry: ModelRegistry | None = None) -> None:
    """Refuse (ConfigError naming every problem) a config that cannot run; nothing is written."""
    found = problems(kind, cfg, registry)
    if found:
        raise ConfigError(f"the {kind} config cannot run: " + "; ".join(found))
