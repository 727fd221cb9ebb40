"""trl==1.12.0's PPOTrainer on the bench's settings; run by bench/ppo.py in its own virtual environment.

    bench/.venv-trl112/bin/python bench/ppo_trl_worker.py --policy DIR --scorer DIR --prompts FILE --steps N --out FILE

Self-contained on purpose: that environment has trl 1.12.0 and its dependencies, not our packages.
trl's usual set-up: the policy fully fine-tuned, a reference copy, a value model initialised
from the reward model, and the reward model, which must share the policy's tokenizer.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--policy", required=True)
    parser.add_argument("--scorer", required=True)
    parser.add_argument("--prompts", required=True)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--minibatch-size", type=int, default=8)
    parser.add_argument("--ppo-epochs", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(args.policy, padding_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    prompts = [json.loads(line)["prompt"] for line in open(args.prompts) if line.strip()]
    ids = [
        tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=True, return_dict=True)[
            "input_ids"
        ]
        for p in prompts
    ]
    dataset = Dataset.from_dict({"input_ids": ids})
    policy = AutoModelForCausalLM.from_pretrained(args.policy, dtype=torch.float32)
    ref = AutoModelForCausalLM.from_pretrained(args.policy, dtype=torch.float32)
    value = AutoModelForSequenceClassification.from_pretrained(args.scorer, num_labels=1, dtype=torch.float32)
    reward = AutoModelForSequenceClassification.from_pretrained(args.scorer, num_labels=1, dtype=torch.float32)
    for m in (policy, ref, value, reward):
        m.config.pad_token_id = tokenizer.pad_token_id
    with tempfile.TemporaryDirectory() as out_dir:
        config = PPOConfig(
            output_dir=out_dir,
            per_device_train_batch_size=args.batch_size,
            gradient_accumulation_steps=1,
            num_mini_batches=args.batch_size // args.minibatch_size,
            num_ppo_epochs=args.ppo_epochs,
            total_episodes=args.steps * args.batch_size,
            response_length=args.max_new_tokens,
            local_rollout_forward_batch_size=args.batch_size,
            temperature=1.0,
            kl_coef=0.05,
            missing_eos_penalty=-1.0,
            stop_token="eos",
            learning_rate=1e-5,
            num_sample_generations=0,
            bf16=False,
            gradient_checkpointing=False,
            use_cpu=not torch.cuda.is_available(),
            report_to=[],
            save_strategy="no",
            logging_steps=1,
            seed=0,
        )
        trainer = PPOTrainer(
            args=config,
            processing_class=tokenizer,
            model=policy,
            ref_model=ref,
            reward_model=reward,
            value_model=value,
            train_dataset=dataset,
        )
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    episodes = args.steps * args.batch_size
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {"episodes": episodes, "seconds": round(seconds, 1), "episodes_per_second": episodes / seconds, "peak_rss_mb": round(peak_mb)}
    with open(args.out, "w") as handle:
        json.dump(result, handle)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
