"""Scale-out: the accelerate config recipes, the launch keys and the command preview, and two-process PPO (gloo on the CPU)
making the same update as one process, through the real ``train`` command and ``accelerate launch``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from rlhf.launch import ACCELERATE_CONFIGS, ACCELERATE_RECIPES, accelerate_command, command_preview, scale_out_problems
from rlhf.ppo import PPORunConfig, RowSeededSampler, share
from rlhf.registry import ModelRegistry

ROOT = Path(__file__).resolve().parents[2]
LIKES_E = [{"type": "function", "function": "tests.rlhf.reward_fns:likes_e"}]
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks what a machine without CUDA refuses")


# -- (a) the recipes load with accelerate's own loader ----------------------------------------------------
@pytest.mark.parametrize(
    ("name", "kind", "zero_stage"),
    [("one-gpu", "NO", None), ("ddp", "MULTI_GPU", None), ("zero2", "DEEPSPEED", 2), ("zero3", "DEEPSPEED", 3), ("fsdp", "FSDP", None)],
)
def test_accelerate_recipe_loads_with_accelerates_loader(name: str, kind: str, zero_stage: int | None) -> None:
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file

    loaded = load_config_from_file(str(ACCELERATE_RECIPES / f"{name}.yaml"))
    assert isinstance(loaded, ClusterConfig)
    assert loaded.distributed_type.value == kind
    assert loaded.mixed_precision == "no"  # the run chooses its precision (bf16 where the GPU has it)
    assert loaded.deepspeed_config.get("zero_stage") == zero_stage
    if kind == "FSDP":
        assert loaded.fsdp_config["fsdp_version"] == 2 and loaded.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"


def test_every_accelerate_recipe_has_a_name() -> None:
    assert {p.stem for p in ACCELERATE_RECIPES.glob("*.yaml")} == set(ACCELERATE_CONFIGS)


# -- (b) the launch keys and the command preview ------------------------------------------------------------
def test_launch_keys_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not one of one-gpu, ddp, zero2, zero3, fsdp"):
        PPORunConfig(prompts="p.jsonl", rewards=LIKES_E, launcher="accelerate", accelerate_config="zero4")
    with pytest.raises(ValueError, match="does not exist"):
        PPORunConfig(prompts="p.jsonl", rewards=LIKES_E, launcher="accelerate", accelerate_config=str(tmp_path / "mine.yaml"))
    with pytest.raises(ValueError, match="needs launcher: accelerate"):
        PPORunConfig(prompts="p.jsonl", rewards=LIKES_E, num_processes=2)
    with pytest.raises(ValueError, match="batch_size .2. must be at least num_processes .4."):
        PPORunConfig(prompts="p.jsonl", rewards=LIKES_E, launcher="accelerate", num_processes=4, batch_size=2, minibatch_size=2)
    own = tmp_path / "mine.yaml"
    own.write_text((ACCELERATE_RECIPES / "ddp.yaml").read_text())
    cfg = PPORunConfig(prompts="p.jsonl", rewards=LIKES_E, launcher="accelerate", num_processes=2, accelerate_config=str(own))
    assert scale_out_problems("ppo", cfg) == [] or torch.cuda.is_available()
    assert PPORunConfig(prompts="p.jsonl", rewards=LIKES_E, launcher="accelerate", num_processes=2).num_processes == 2


@no_cuda
def test_what_this_machine_cannot_launch_is_named(tmp_path: Path) -> None:
    def problems(kind: str = "sft", **launch) -> str:
        cfg = PPORunConfig(prompts="p.jsonl", rewards=LIKES_E, launcher="accelerate", **launch)
        return " ".join(scale_out_problems(kind, cfg))

    assert problems(num_processes=2, accelerate_config="ddp") == ""  # several CPU processes over gloo
    assert problems(accelerate_config="one-gpu") == ""
    assert "needs CUDA GPUs" in problems(accelerate_config="zero2") and "DeepSpeed" in problems(accelerate_config="zero2")
    assert "FSDP, which needs CUDA" in problems(accelerate_config="fsdp")
    assert "PPO averages its gradients" in problems("ppo", accelerate_config="zero3")
    # the trl kinds evaluate and save the merged model on rank 0 alone: sharded weights are refused, zero2 is not
    for name, engine in (("zero3", "DeepSpeed"), ("fsdp", "FSDP")):
        assert f"shards the parameters ({engine})" in problems("grpo", accelerate_config=name), name
    assert "shards the parameters" not in problems("grpo", accelerate_config="zero2")
    assert "runs one process; for num_processes 2 use ddp" in problems(num_processes=2, accelerate_config="one-gpu")
    bad = tmp_path / "bad.yaml"
    bad.write_text("distributed_type: MULTI_GPU\nnum_processes: 2\nnot_an_accelerate_key: 1\n")
    assert "accelerate cannot read" in problems(accelerate_config=str(bad)) and "not_an_accelerate_key" in problems(
        accelerate_config=str(bad)
    )
    assert scale_out_problems("sft", PPORunConfig(prompts="p.jsonl", rewards=LIKES_E, accelerate_config="zero2")) == []  # python launcher


@no_cuda
def test_a_sharded_config_is_refused_before_a_run_folder_exists(tmp_path: Path, studio_home: Path, tiny_lm_dir: Path, capsys) -> None:
    from rlhf.cli import main

    ModelRegistry().add(tiny_lm_dir, name="tiny")
    prompts = _prompts(tmp_path)
    config = _config(tmp_path / "run.yaml", prompts, launcher="accelerate", num_processes=2, accelerate_config="zero2")
    assert main(["train", "ppo", "--config", str(config), "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "zero2 uses DeepSpeed, which needs CUDA GPUs" in err and "PPO averages its gradients" in err
    assert not (tmp_path / "runs").exists()


@no_cuda
def test_command_preview_shows_the_train_command_and_the_accelerate_launch() -> None:
    plain = PPORunConfig(prompts="p.jsonl", rewards=LIKES_E)
    assert command_preview("ppo", plain, Path("runs")) == "rlhf-studio train ppo --config run.yaml --runs-dir runs"
    two = PPORunConfig(prompts="p.jsonl", rewards=LIKES_E, launcher="accelerate", num_processes=2, accelerate_config="ddp")
    first, second = command_preview("ppo", two, Path("my runs")).splitlines()
    assert first == "rlhf-studio train ppo --config run.yaml --runs-dir 'my runs'"
    ddp = ACCELERATE_RECIPES / "ddp.yaml"
    # Without CUDA several processes take accelerate's torchrun path: --cpu would start only one.
    assert (
        second == f"# which runs: accelerate launch --num_processes 2 --config_file {ddp} --multi_gpu -m rlhf train ppo --resume RUN_FOLDER"
    )
    cmd = accelerate_command("ppo", Path("runs/x"), 2, "ddp")
    assert cmd[1:3] == ["-m", "accelerate.commands.launch"] and " ".join(cmd[3:]) in second.replace("RUN_FOLDER", "runs/x")
    one = PPORunConfig(prompts="p.jsonl", rewards=LIKES_E, launcher="accelerate")
    assert (
        command_preview("sft", one, "runs").splitlines()[1]
        == "# which runs: accelerate launch --num_processes 1 --cpu -m rlhf train sft --resume RUN_FOLDER"
    )


# -- (c) two processes, one update ----------------------------------------------------------------------------
def test_batch_shares_cover_the_batch_once() -> None:
    for n, world in ((4, 2), (5, 2), (7, 3), (3, 3)):
        rows = [r for rank in range(world) for r in range(*share(n, rank, world))]
        assert rows == list(range(n))
        assert {share(n, k, world)[1] - share(n, k, world)[0] for k in range(world)} <= {n // world, n // world + 1}


def test_a_reply_sampled_from_its_own_seed_does_not_depend_on_its_batch(tiny_lm, one_thread) -> None:
    from transformers import LogitsProcessorList

    from rlhf.generation import GenerationEngine, SamplingParams

    model, tokenizer = tiny_lm
    engine = GenerationEngine(model, tokenizer)
    prompts = ["question 1 about the sea", "a much longer question 22 about the wide sea and the tide", "hi", "question 3"]
    greedy = SamplingParams(temperature=0.0, top_p=1.0, max_new_tokens=12)

    def sample(rows: list[int], seeds: list[int]) -> list[list[int]]:
        sampler = RowSeededSampler(seeds, 1.0, 0.95, model.device)
        out = engine.rollout([prompts[r] for r in rows], greedy, logits_processor=LogitsProcessorList([sampler]))
        return [r.response_ids for r in out]

    together = sample([0, 1, 2, 3], [10, 11, 12, 13])
    assert sample([0, 1], [10, 11]) + sample([2, 3], [12, 13]) == together
    assert sample([3], [13]) == together[3:]
    assert sample([0, 1, 2, 3], [20, 21, 22, 23]) != together  # other seeds, other replies: it does sample


def _prompts(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(json.dumps({"prompt": f"question {i} about the sea" + " and the tide" * (i % 3)}) for i in range(8)))
    return path


def _config(path: Path, prompts: Path, **launch) -> Path:
    settings = {
        "prompts": str(prompts),
        "policy": "tiny",
        "rewards": LIKES_E,
        "steps": 1,
        "batch_size": 4,
        "minibatch_size": 2,  # two minibatches, two epochs: four optimizer steps, each mixing both processes' rows
        "micro_batch_size": 1,
        "ppo_epochs": 2,
        "max_new_tokens": 8,
        "learning_rate": 3e-3,
        "eval_fraction": 0.25,  # two held-out prompts: rank 0 evaluates while the other waits
        "eval_every": 0,
        "save_every": 1,
        "seed_per_prompt": True,  # one process samples as two do
        "check_prompts": 0,
        "threads": 1,
        **launch,
    }
    path.write_text(yaml.safe_dump(settings))
    return path


def _train(config: Path, runs: Path, home: Path) -> subprocess.CompletedProcess:
    # On the CPU even where a GPU is present: two processes cannot share one GPU, and this is the CI's path (gloo).
    env = {**os.environ, "STUDIO_HOME": str(home), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "rlhf", "train", "ppo", "--config", str(config), "--runs-dir", str(runs)]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)


def test_two_processes_make_the_same_ppo_update_as_one(tmp_path: Path, studio_home: Path, tiny_lm_dir: Path) -> None:
    from safetensors.torch import load_file

    from rlhf.runs import list_runs

    ModelRegistry().add(tiny_lm_dir, name="tiny")
    prompts = _prompts(tmp_path)
    results = {}
    for name, launch in (("one", {}), ("two", {"launcher": "accelerate", "num_processes": 2, "accelerate_config": "ddp"})):
        runs = tmp_path / f"runs-{name}"
        done = _train(_config(tmp_path / f"{name}.yaml", prompts, **launch), runs, studio_home)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        [run] = list_runs(runs)  # exactly one run folder, written once
        assert run.status()["state"] == "finished", run.tail_log()
        steps = [e for e in run.events() if e.get("step") == 1 and not e.get("final")]
        assert len(steps) == 1, run.events()  # rank 1 wrote no event of its own
        assert [e["step"] for e in run.events() if e.get("final")] == [1]
        assert run.metrics()["registered_as"] == run.id and run.metrics()["trainable_params"] > 0
        assert "eval_reward_end" in run.metrics()  # rank 0 evaluated at the start and the end; nobody waited forever
        results[name] = (steps[0], run, done.stdout)
    one, two = results["one"][0], results["two"][0]
    assert "processes" not in one and two["processes"] == 2  # accelerate launch really started two processes
    assert "accelerate.commands.launch --num_processes 2 --config_file" in results["two"][2] and "--multi_gpu" in results["two"][2]
    # The same replies (sampled per prompt) and the whole batch's statistics, gathered or summed across the processes.
    assert two["reply_length"] == one["reply_length"] and two["reward_mean"] == one["reward_mean"] and two["eos_rate"] == one["eos_rate"]
    for key in ("kl", "entropy", "score_mean", "policy_loss", "value_loss", "approx_kl", "clipfrac"):
        assert two[key] == pytest.approx(one[key], rel=1e-4, abs=1e-6), key
    # The same update: the trained LoRA weights and value head after four optimizer steps. LoRA's B and the value head
    # start at zero, so what they hold is the update; float rounding differs (padding, the order of sums), and Adam
    # turns a rounding difference in a near-zero gradient into a visible one, so the bound is a share of the update.
    weights = {}
    for name in ("one", "two"):
        folder = results[name][1].trainer_dir / "checkpoint-1"
        weights[name] = {**load_file(str(folder / "policy.safetensors")), **load_file(str(folder / "value.safetensors"))}
    one_w, two_w = weights["one"], weights["two"]
    assert one_w.keys() == two_w.keys() and any("lora_B" in k for k in one_w) and any(k.startswith("head.") for k in one_w)
    update = [one_w[k].abs() for k in one_w if "lora_B" in k or k.startswith("head.")]
    largest, typical = max(u.max().item() for u in update), torch.cat([u.flatten() for u in update]).mean().item()
    assert largest > 1e-3  # the parameters changed
    diffs = {k: (one_w[k] - two_w[k]).abs() for k in one_w}
    assert max(d.max().item() for d in diffs.values()) < 0.01 * largest, {k: d.max().item() for k, d in diffs.items()}
    assert torch.cat([d.flatten() for d in diffs.values()]).mean().item() < 1e-3 * typical


def test_sft_trains_in_two_processes_and_writes_one_run_folder(tmp_path: Path, studio_home: Path, tiny_lm_dir: Path) -> None:
    """A trl/transformers kind under accelerate with two CPU processes: DDP over gloo, rank 0 alone writes and registers."""
    from rlhf.runs import list_runs

    ModelRegistry().add(tiny_lm_dir, name="tiny")
    data = tmp_path / "dolly.jsonl"
    answers = ["The sea is wide.", "Paris is in France.", "Two and two make four.", "Waves fold into foam."]
    data.write_text("\n".join(json.dumps({"instruction": f"question {i}", "response": answers[i % 4]}) for i in range(24)))
    config = tmp_path / "sft.yaml"
    settings = {"data": str(data), "base_model": "tiny", "batch_size": 4, "epochs": 1.0, "max_length": 48, "learning_rate": 5e-3,
                "eval_fraction": 0.25, "logging_steps": 1, "save_steps": 100, "threads": 1, "launcher": "accelerate",
                "num_processes": 2, "accelerate_config": "ddp", "register_as": "tiny-sft-2p"}  # fmt: skip
    config.write_text(yaml.safe_dump(settings))
    env = {**os.environ, "STUDIO_HOME": str(studio_home), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "rlhf", "train", "sft", "--config", str(config), "--runs-dir", str(tmp_path / "runs")]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "--num_processes 2" in done.stdout and "--multi_gpu" in done.stdout
    [run] = list_runs(tmp_path / "runs")
    assert run.status()["state"] == "finished", run.tail_log()
    events = run.events()
    # 18 training examples, 4 per process per step, two processes: 3 steps (one process would take 5)
    assert [e["step"] for e in events if "loss" in e] == [1, 2, 3]
    # sft's own step-0 event (written before rank 0's guard) once, not once per process
    assert len([e for e in events if e.get("final")]) == 1 and len([e for e in events if "eval_perplexity" in e and e["step"] == 0]) == 1
    metrics = run.metrics()
    assert metrics["eval_loss"] < metrics["eval_loss_before"]  # it learnt the answers
    assert ModelRegistry().get("tiny-sft-2p").kind == "causal-lm"


def test_cancel_finds_the_training_processes_under_either_launcher(tmp_path: Path) -> None:
    """accelerate's single-process launch runs `python -m rlhf`, torchrun's `python -u -m rlhf`: both are found."""
    import subprocess
    import sys
    import time

    from rlhf.launch import training_processes

    script = tmp_path / "rlhf"
    script.mkdir()
    (script / "__main__.py").write_text("import time\ntime.sleep(30)\n")
    parent = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys, time; "
         "a = subprocess.Popen([sys.executable, '-m', 'rlhf']); b = subprocess.Popen([sys.executable, '-u', '-m', 'rlhf']); "
         "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)']); time.sleep(30)"],
        cwd=tmp_path,
    )  # fmt: skip
    try:
        found: list[int] = []
        for _ in range(100):
            found = training_processes(parent.pid)
            if len(found) == 2:
                break
            time.sleep(0.1)
        assert len(found) == 2  # the two `-m rlhf` children, not the plain one
    finally:
        import psutil

        for child in psutil.Process(parent.pid).children(recursive=True):
            child.kill()
        parent.kill()
