"""How a training command runs: plain Python, or under ``accelerate launch`` when the config asks.

Every run config carries ``launcher`` ("python" or "accelerate"), ``num_processes`` and
``accelerate_config``. The ``train`` command re-executes itself under ``accelerate launch`` for the
second kind; the relaunched processes see ``RLHF_LAUNCHED=1`` and train. Only the main process
(rank 0) writes status, events, metrics, the checkpoint and the registry.

``accelerate_config`` picks accelerate's own config file: a name from ``recipes/accelerate``
(``one-gpu``, ``ddp``, ``zero2``, ``zero3``, ``fsdp``) or the path of the user's file (made with
``accelerate config``); empty = accelerate's defaults (its default config file when there is one).
Several processes on a machine without CUDA run through accelerate's torchrun path
(``--multi_gpu``; the processes talk over gloo), since ``--cpu`` with several processes starts
only one unless MPI is installed.

    command = train_command("reward", Path("runs/reward-x"))     # what the studio starts
    text = command_preview("ppo", cfg, Path("runs"))               # what the screens show
    problems = scale_out_problems("ppo", cfg)                      # checked before a run folder exists

The collective helpers (:func:`init_distributed`, :func:`all_sum`, :func:`any_process`,
:func:`gather`, :func:`broadcast`, :func:`broadcast_tensor`) are no-ops in one process, so trainers call them unconditionally.
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LAUNCHED_ENV = "RLHF_LAUNCHED"
ACCELERATE_RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "accelerate"
# name -> what it is, for help texts and messages; the files are recipes/accelerate/<name>.yaml
ACCELERATE_CONFIGS = {
    "one-gpu": "one process on one GPU",
    "ddp": "data parallel, one process per GPU (DDP); also several CPU processes over gloo",
    "zero2": "DeepSpeed ZeRO-2: optimizer states and gradients sharded across GPUs",
    "zero3": "DeepSpeed ZeRO-3: parameters sharded too (largest models)",
    "fsdp": "PyTorch FSDP2: parameters, gradients and optimizer states sharded across GPUs",
}
SHARDED = {"DEEPSPEED": "DeepSpeed", "FSDP": "FSDP"}


@dataclass
class LaunchFields:
    """Mixed into every run config."""

    launcher: str = field(default="python", metadata={"help": "python (one process) or accelerate (accelerate launch of the same command)"})
    num_processes: int = field(
        default=1, metadata={"help": "processes for accelerate launch: one per GPU; on a CPU, several share its cores (gloo)"}
    )
    accelerate_config: str = field(
        default="",
        metadata={
            "help": "with launcher accelerate: accelerate's config file, a name from recipes/accelerate (one-gpu, ddp, zero2, "
            "zero3, fsdp) or the path of your own (accelerate config writes one); empty = accelerate's defaults. "
            "zero2 needs CUDA and the deepspeed package; zero3 and fsdp (sharded weights) are refused until the trainers "
            "save sharded models; PPO takes one-gpu or ddp"
        },
    )
    threads: int = field(
        default=0, metadata={"help": "CPU threads for torch; 0 = the cores that are free when the run starts (logged in its first event)"}
    )

    def check_launch(self) -> None:
        if self.launcher not in ("python", "accelerate"):
            raise ValueError(f"launcher must be 'python' or 'accelerate', got {self.launcher!r}")
        if self.num_processes < 1:
            raise ValueError(f"num_processes must be >= 1, got {self.num_processes}")
        if self.num_processes > 1 and self.launcher != "accelerate":
            raise ValueError(f"num_processes {self.num_processes} needs launcher: accelerate (the python launcher runs one process)")
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0 (0 = automatic), got {self.threads}")
        if self.accelerate_config:
            accelerate_config_file(self.accelerate_config)  # ValueError names the choices


@dataclass
class CheckFields:
    """Mixed into the PPO and DPO configs: the independent check when the run ends (rlhf.evaluation)."""

    check_judge: str = field(
        default="pairwise:smollm2-135m-instruct",
        metadata={
            "help": "independent check when the run ends: the trained model against its start on held-out prompts, judged by "
            "reward_model:NAME, pairwise:NAME (an LM, both orders) or function:module:fn; not the training reward; empty = no check"
        },
    )
    check_prompts: int = field(default=16, metadata={"help": "held-out prompts for the independent check (0 = no check)"})

    def check_end_check(self) -> None:
        if self.check_judge:
            from rlhf.evaluation import parse_judge

            parse_judge(self.check_judge)  # JudgeSpecError (a ValueError) names the format
        if self.check_prompts < 0:
            raise ValueError(f"check_prompts must be >= 0, got {self.check_prompts}")


def accelerate_config_file(value: str) -> Path | None:
    """The file an ``accelerate_config`` value names: a recipe name or a path (ValueError when neither exists)."""
    if not value:
        return None
    if value in ACCELERATE_CONFIGS:
        path = ACCELERATE_RECIPES / f"{value}.yaml"
        if not path.is_file():
            raise ValueError(f"accelerate_config {value!r}: the recipe file {path} is missing from this installation")
        return path
    looks_like_path = "/" in value or os.sep in value or value.endswith((".yaml", ".yml", ".json"))
    if not looks_like_path:
        raise ValueError(
            f"accelerate_config {value!r} is not one of {', '.join(ACCELERATE_CONFIGS)} (recipes/accelerate) "
            "and not a .yaml/.json file path; name one of those or give your own file's path"
        )
    path = Path(value).expanduser()
    if not path.is_file():
        raise ValueError(
            f"accelerate_config: the file {path} does not exist; give an accelerate config file (accelerate config writes one)"
        )
    return path.resolve()


def distributed_type(path: Path) -> str:
    """The ``distributed_type`` of an accelerate config file, read with accelerate's own loader (e.g. 'MULTI_GPU')."""
    from accelerate.commands.config.config_args import load_config_from_file

    loaded = load_config_from_file(str(path))
    kind = loaded.distributed_type
    return str(getattr(kind, "value", kind))


def parameters_sharded(path: Path) -> bool:
    """True for an accelerate config that splits the weights themselves across processes (ZeRO-3, FSDP)."""
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(path))
    kind = str(getattr(config.distributed_type, "value", config.distributed_type))
    if kind == "FSDP":
        return True
    return kind == "DEEPSPEED" and int((config.deepspeed_config or {}).get("zero_stage", 0)) == 3


def scale_out_problems(kind: str, cfg: Any) -> list[str]:
    """Why this machine cannot launch the config as asked (empty when it can); for rlhf.preflight.

    A DeepSpeed or FSDP config needs CUDA (and DeepSpeed its package); a one-process config cannot
    start several; more processes than GPUs cannot share them; our PPO does its own data
    parallelism and takes no sharded engine.
    """
    if getattr(cfg, "launcher", "python") != "accelerate":
        return []
    import importlib.util

    import torch

    found: list[str] = []
    try:
        path = accelerate_config_file(getattr(cfg, "accelerate_config", ""))
    except ValueError as exc:
        return [str(exc)]
    n = cfg.num_processes
    cuda = torch.cuda.is_available()
    if cuda and n > torch.cuda.device_count():
        found.append(
            f"num_processes {n} is more than this machine's {torch.cuda.device_count()} GPU(s): one process per GPU "
            "(on several machines, set num_machines in your own accelerate config)"
        )
    if path is None:
        return found
    try:
        dist_type = distributed_type(path)
    except Exception as exc:  # accelerate's loader: unknown keys, bad YAML, a bad distributed_type
        return [*found, f"accelerate_config {cfg.accelerate_config}: accelerate cannot read {path}: {exc}"]
    name = cfg.accelerate_config
    if dist_type in SHARDED:
        engine = SHARDED[dist_type]
        if not cuda:
            found.append(
                f"accelerate_config {name} uses {engine}, which needs CUDA GPUs and this machine has none; "
                "on a CPU use ddp (several processes over gloo) or launcher: python"
            )
        if dist_type == "DEEPSPEED" and importlib.util.find_spec("deepspeed") is None:
            found.append(f"accelerate_config {name} uses DeepSpeed, which is not installed: pip install deepspeed (on a CUDA machine)")
        if kind == "ppo":
            found.append(
                f"accelerate_config {name} shards the model with {engine}; PPO averages its gradients across processes itself "
                "(data parallelism): use ddp, or one-gpu for one process"
            )
        elif parameters_sharded(path):
            # The studio's trainers evaluate, merge the LoRA adapters and save on rank 0 alone, after the other
            # ranks have left: with sharded parameters rank 0 holds a slice of each weight, so that forward pass
            # would wait for ranks that are gone and the merge would save partial tensors.
            found.append(
                f"accelerate_config {name} shards the parameters ({engine}), and the studio's trainers still evaluate and save "
                "the merged model on rank 0 alone, which needs whole weights; use zero2 (optimizer state and gradients "
                "sharded, whole weights on each GPU) or ddp"
            )
    elif dist_type == "NO" and n > 1:
        found.append(f"accelerate_config {name} runs one process; for num_processes {n} use ddp (or a DeepSpeed/FSDP config)")
    return found


def train_command(kind: str, run_folder: Path) -> list[str]:
    """The command that runs the prepared run folder (its config.yaml decides the launcher)."""
    if kind == "eval":
        return [sys.executable, "-m", "rlhf", "eval", "compare", "--resume", str(run_folder)]
    return [sys.executable, "-m", "rlhf", "train", kind, "--resume", str(run_folder)]


def launch_flags(num_processes: int, config_file: Path | None = None) -> list[str]:
    """``accelerate launch`` options for this machine.

    Without CUDA one process gets ``--cpu``; several go through accelerate's torchrun path
    (``--multi_gpu``), where each process joins a gloo group: ``--cpu`` with several processes
    starts one (accelerate needs MPI for more). With a config file on a GPU machine the file
    chooses DDP, DeepSpeed or FSDP, so no mode flag is added (one would override it).
    """
    import torch

    flags = ["--num_processes", str(num_processes)]
    if config_file is not None:
        flags += ["--config_file", str(config_file)]
    if not torch.cuda.is_available():
        flags.append("--cpu" if num_processes == 1 else "--multi_gpu")
    elif num_processes > 1 and config_file is None:
        flags.append("--multi_gpu")
    return flags


def accelerate_command(kind: str, run_folder: Path, num_processes: int, accelerate_config: str = "") -> list[str]:
    """``accelerate launch`` of the same training command (see :func:`launch_flags`)."""
    flags = launch_flags(num_processes, accelerate_config_file(accelerate_config))
    return [sys.executable, "-m", "accelerate.commands.launch", *flags, "-m", "rlhf", "train", kind, "--resume", str(run_folder)]


def command_preview(kind: str, cfg: Any, runs_dir: Path | str) -> str:
    """The terminal command(s) a screen shows for this config: the train command, and with launcher
    accelerate the ``accelerate launch`` it runs (RUN_FOLDER is the folder the first command makes)."""
    runs = shlex.quote(str(runs_dir))
    if kind == "eval":
        lines = [f"rlhf-studio eval compare --config eval.yaml --runs-dir {runs}"]
    else:
        lines = [f"rlhf-studio train {kind} --config run.yaml --runs-dir {runs}"]
    if getattr(cfg, "launcher", "python") == "accelerate" and kind != "eval":
        try:
            config_file = accelerate_config_file(getattr(cfg, "accelerate_config", ""))
        except ValueError:
            config_file = Path(cfg.accelerate_config)  # shown as given; the run is refused with the reason
        flags = " ".join(shlex.quote(f) for f in launch_flags(cfg.num_processes, config_file))
        lines.append(f"# which runs: accelerate launch {flags} -m rlhf train {kind} --resume RUN_FOLDER")
    return "\n".join(lines)


def training_processes(launcher_pid: int) -> list[int]:
    """The ``python -m rlhf ...`` processes started under an ``accelerate launch`` (its descendants)."""
    try:
        import psutil

        found = []
        for proc in psutil.Process(launcher_pid).children(recursive=True):
            try:
                # accelerate's own launch runs `python -m rlhf ...`; torchrun's (several processes) `python -u -m rlhf ...`
                args = proc.cmdline()
                if any(args[i : i + 2] == ["-m", "rlhf"] for i in range(1, len(args) - 1)):
                    found.append(proc.pid)
            except (psutil.NoSuchProcess, psutil.AccessDenied, IndexError):
                continue
        return found
    except Exception:  # no psutil, or the launcher is gone
        return []


def under_launcher() -> bool:
    return os.environ.get(LAUNCHED_ENV) == "1"


def is_main_process() -> bool:
    """Rank 0 (or no distributed launch at all)."""
    return int(os.environ.get("RANK", "0")) == 0


def world_size() -> int:
    """Processes in this launch (1 without one)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


# -- collectives, for trainers that do their own data parallelism (PPO) ------------------------------
def init_distributed():
    """Join the launch's process group through accelerate's state (gloo on a CPU, nccl on CUDA).

    Returns this process's device (``cuda:LOCAL_RANK`` or the CPU); accelerate also makes that GPU
    the current one, so anything placed on "cuda" lands there.
    """
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available()).device


def distributed() -> bool:
    """True inside a process group of more than one process."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _comm_device():
    import torch
    import torch.distributed as dist

    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def all_sum(tensor):
    """``tensor`` summed over every process (a new tensor on its device); itself in one process."""
    if not distributed():
        return tensor
    import torch.distributed as dist

    out = tensor.detach().to(_comm_device(), copy=True)
    dist.all_reduce(out)
    return out.to(tensor.device)


def broadcast_tensor(tensor, src: int = 0):
    """Process ``src``'s ``tensor`` (a new tensor on this one's device); itself in one process."""
    if not distributed():
        return tensor
    import torch.distributed as dist

    out = tensor.detach().to(_comm_device(), copy=True)
    dist.broadcast(out, src=src)
    return out.to(tensor.device)


def any_process(flag: bool) -> bool:
    """Whether ``flag`` is set in any process (e.g. a stop request): every process gets the same answer."""
    if not distributed():
        return bool(flag)
    import torch

    return bool(all_sum(torch.tensor([1.0 if flag else 0.0])).item() > 0)


def gather(obj: Any) -> list:
    """Every process's ``obj`` (picklable), in rank order; ``[obj]`` in one process."""
    if not distributed():
        return [obj]
    import torch.distributed as dist

    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast(obj: Any, src: int = 0) -> Any:
    """Process ``src``'s ``obj`` in every process."""
    if not distributed():
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
