"""Every run kind through ``accelerate launch`` on the GPU this machine has: what "tested on a GPU" means.

    python scripts/gpu_smoke.py [--accelerate-config one-gpu] [--processes 1] [--out gpu_smoke.json]

A tiny random Llama and a tiny encoder (tests/tiny.py) are registered in a scratch studio home; each
kind (reward, sft, dpo, kto, ppo, grpo, rloo) gets a few records of data and a config with
``launcher: accelerate`` and the named ``accelerate_config``, and runs as ``python -m rlhf train
KIND --config`` exactly as the studio starts it. The table says, per kind, the run's state, the
device in its metrics, the GPU memory in use while it ran above what was in use before (nvidia-smi,
the evidence that it trained on the GPU), its seconds and how many run folders it made. Exit status 1 when any
run did not finish. It downloads nothing; on a machine without CUDA it runs on the CPU (then use
``--accelerate-config ""``). Used for the README's "Growing" page.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KINDS = ("reward", "sft", "dpo", "kto", "ppo", "grpo", "rloo")
LIKES_E = [{"type": "function", "function": "tests.rlhf.reward_fns:likes_e"}]
QUESTIONS = [f"Question {i}: say something about the number {i}." for i in range(16)]


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def data_files(folder: Path) -> dict[str, str]:
    pairs = [{"prompt": q, "chosen": f"A good answer about {i}.", "rejected": "no"} for i, q in enumerate(QUESTIONS)]
    kto = [{"prompt": q, "completion": f"A good answer about {i}.", "label": True} for i, q in enumerate(QUESTIONS)]
    kto += [{"prompt": q, "completion": "no", "label": False} for q in QUESTIONS]
    return {
        "pairs": write_jsonl(folder / "pairs.jsonl", pairs),
        "kto": write_jsonl(folder / "kto.jsonl", kto),
        "dolly": write_jsonl(folder / "dolly.jsonl", [{"instruction": q, "response": f"About {i}."} for i, q in enumerate(QUESTIONS)]),
        "prompts": write_jsonl(folder / "prompts.jsonl", [{"prompt": q} for q in QUESTIONS]),
    }


def gpu_memory_mb() -> int | None:
    """Memory in use on GPU 0 by every process (nvidia-smi), or None without one."""
    import shutil

    if not shutil.which("nvidia-smi"):
        return None
    out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"], capture_output=True, text=True)
    return int(out.stdout.split()[0]) if out.returncode == 0 and out.stdout.strip() else None


def run_watched(cmd: list[str], env: dict) -> tuple[subprocess.CompletedProcess, int | None]:
    """Run ``cmd``; the most GPU memory in use while it ran, less what was in use before (MB)."""
    idle = gpu_memory_mb()
    with tempfile.TemporaryFile("w+") as out:
        child = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
        peak = idle
        while child.poll() is None:
            used = gpu_memory_mb()
            peak = max(peak, used) if used is not None and peak is not None else peak
            time.sleep(0.5)
        out.seek(0)
        done = subprocess.CompletedProcess(cmd, child.returncode, out.read(), "")
    return done, (peak - idle) if peak is not None and idle is not None else None


def configs(files: dict[str, str]) -> dict[str, dict]:
    online = {"prompts": files["prompts"], "policy": "tiny", "rewards": LIKES_E, "max_new_tokens": 16, "check_judge": ""}
    return {
        "reward": {"data": files["pairs"], "base_model": "tiny-enc", "method": "full", "epochs": 1, "batch_size": 8, "max_length": 32},
        "sft": {"data": files["dolly"], "base_model": "tiny", "method": "lora", "epochs": 1, "batch_size": 8, "max_length": 64},
        "dpo": {"data": files["pairs"], "policy": "tiny", "epochs": 1, "batch_size": 4, "max_length": 64, "check_judge": ""},
        "kto": {"data": files["kto"], "policy": "tiny", "epochs": 1, "batch_size": 4, "max_length": 64, "check_judge": ""},
        "ppo": {**online, "steps": 2, "batch_size": 4, "minibatch_size": 2, "eval_every": 0},
        "grpo": {**online, "steps": 2, "batch_size": 8, "num_generations": 4, "eval_every": 0},
        "rloo": {**online, "steps": 2, "batch_size": 8, "num_generations": 4, "eval_every": 0},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--accelerate-config", default="one-gpu", help="a name from recipes/accelerate, a file, or '' (default: %(default)s)"
    )
    parser.add_argument("--processes", type=int, default=1, help="num_processes for accelerate launch (default: %(default)s)")
    parser.add_argument("--kinds", nargs="*", default=list(KINDS), choices=KINDS)
    parser.add_argument("--out", default="gpu_smoke.json", help="where the JSON table goes")
    args = parser.parse_args()

    import torch
    import yaml

    from rlhf.registry import ModelRegistry
    from tests.tiny import make_tiny_causal_lm, make_tiny_encoder

    work = Path(tempfile.mkdtemp(prefix="gpu-smoke-"))
    path = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    env = {**os.environ, "STUDIO_HOME": str(work / "home"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": path}
    os.environ["STUDIO_HOME"] = env["STUDIO_HOME"]
    registry = ModelRegistry()
    registry.add(make_tiny_causal_lm(work / "tiny"), name="tiny")
    registry.add(make_tiny_encoder(work / "tiny-enc"), name="tiny-enc")
    files = data_files(work)
    launch = {"launcher": "accelerate", "num_processes": args.processes, "accelerate_config": args.accelerate_config}
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    print(f"torch {torch.__version__}, GPU: {gpu}, accelerate config {args.accelerate_config!r} x {args.processes}", flush=True)
    rows = []
    for kind, settings in configs(files).items():
        if kind not in args.kinds:
            continue
        config = work / f"{kind}.yaml"
        config.write_text(yaml.safe_dump({**settings, **launch}))
        runs = work / "runs"
        start = time.perf_counter()
        done, gpu_mb = run_watched([sys.executable, "-m", "rlhf", "train", kind, "--config", str(config), "--runs-dir", str(runs)], env)
        seconds = time.perf_counter() - start
        folders = sorted(runs.glob(f"{kind}-*"))
        status = json.loads((folders[-1] / "status.json").read_text()) if folders else {}
        metrics = json.loads((folders[-1] / "metrics.json").read_text()) if folders and (folders[-1] / "metrics.json").is_file() else {}
        row = {
            "kind": kind,
            "state": status.get("state", f"no run folder (exit {done.returncode})"),
            "device": metrics.get("device"),
            "gpu_memory_mb": gpu_mb,
            "seconds": round(seconds, 1),
            "run_folders": len(folders),
            "error": status.get("error") or (done.stdout[-1500:] if done.returncode else None),
        }
        rows.append(row)
        print(f"{kind:7} {row['state']:9} device={row['device']} gpu memory +{row['gpu_memory_mb']} MB {row['seconds']} s", flush=True)
        if row["error"]:
            print(f"        {row['error']}", flush=True)
    import platform
    from datetime import UTC, datetime

    when = datetime.now(UTC).isoformat(timespec="seconds")
    machine = {"host": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version()}
    result = {"date": when, "machine": machine, "gpu": gpu, "torch": torch.__version__, **launch, "runs": rows}
    Path(args.out).write_text(json.dumps(result, indent=2))
    return 0 if all(r["state"] == "finished" for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
