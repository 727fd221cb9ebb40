"""How a training command runs: plain Python, or under ``accelerate launch`` when the config asks.

Every run config carries ``launcher`` ("python" or "accelerate") and ``num_processes``. The
``train`` command re-executes itself under ``accelerate launch`` for the second kind (multi-GPU,
multi-node and DeepSpeed set-ups come from accelerate's own config file, see
``accelerate config``); the relaunched process sees ``RLHF_LAUNCHED=1`` and trains. Only the
main process (rank 0) writes status, events and metrics.

    command = train_command("reward", Path("runs/reward-x"))     # what the studio starts
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

LAUNCHED_ENV = "RLHF_LAUNCHED"


@dataclass
class LaunchFields:
    """Mixed into every run config."""

    launcher: str = field(default="python", metadata={"help": "python (one process) or accelerate (accelerate launch of the same command)"})
    num_processes: int = field(default=1, metadata={"help": "processes for accelerate launch (one per GPU; 1 on CPU)"})
    threads: int = field(
        default=0, metadata={"help": "CPU threads for torch; 0 = the cores that are free when the run starts (logged in its first event)"}
    )

    def check_launch(self) -> None:
        if self.launcher not in ("python", "accelerate"):
            raise ValueError(f"launcher must be 'python' or 'accelerate', got {self.launcher!r}")
        if self.num_processes < 1:
            raise ValueError(f"num_processes must be >= 1, got {self.num_processes}")
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0 (0 = automatic), got {self.threads}")


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


def train_command(kind: str, run_folder: Path) -> list[str]:
    """The command that runs the prepared run folder (its config.yaml decides the launcher)."""
    if kind == "eval":
        return [sys.executable, "-m", "rlhf", "eval", "compare", "--resume", str(run_folder)]
    return [sys.executable, "-m", "rlhf", "train", kind, "--resume", str(run_folder)]


def accelerate_command(kind: str, run_folder: Path, num_processes: int) -> list[str]:
    """``accelerate launch`` of the same training command, forced onto the CPU when there is no GPU."""
    import torch

    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(num_processes)]
    if not torch.cuda.is_available():
        cmd.append("--cpu")
    elif num_processes > 1:
        cmd.append("--multi_gpu")
    return [*cmd, "-m", "rlhf", "train", kind, "--resume", str(run_folder)]


def under_launcher() -> bool:
    return os.environ.get(LAUNCHED_ENV) == "1"


def is_main_process() -> bool:
    """Rank 0 (or no distributed launch at all)."""
    return int(os.environ.get("RANK", "0")) == 0
