"""Reward functions for PPO tests, referenced from configs as ``tests.rlhf.reward_fns:NAME``."""


def likes_e(prompt: str, reply: str) -> float:
    """Favours one token: the more 'e's a reply has, the better."""
    return reply.count("e") / 4.0


def broken(prompt: str, reply: str) -> float:
    raise RuntimeError("this reward function always fails")
