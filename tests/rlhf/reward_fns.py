"""Reward functions for PPO tests, referenced from configs as ``tests.rlhf.reward_fns:NAME``."""


def likes_e(prompt: str, reply: str) -> float:
    """Favours one token: the more 'e's a reply has, the better."""
    return reply.count("e") / 4.0


def broken(prompt: str, reply: str) -> float:
    raise RuntimeError("this reward function always fails")


# -- rigged rewards for the reward-hacking bench (tests/rlhf/test_reward_hacking.py) ------------------
def pays_for_length(prompt: str, reply: str) -> float:
    """Pays for length alone: a tenth of a point per character."""
    return len(reply) / 10.0


def pays_for_brevity(prompt: str, reply: str) -> float:
    """Pays for brevity alone: the shorter the reply, the better."""
    return -len(reply) / 10.0


def pays_for_keyword(prompt: str, reply: str) -> float:
    """Pays for one word, however it is used: a point per 'at' (the tiny test model's commonest token says it)."""
    return float(reply.lower().count("at"))
