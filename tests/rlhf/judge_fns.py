"""Judge functions for eval tests, referenced from configs as ``tests.rlhf.judge_fns:NAME``."""


def prefers_first(prompt: str, first: str, second: str) -> float:
    """A judge with nothing but a position bias: whatever is shown first wins."""
    return 5.0


def longer_is_better(prompt: str, reply: str) -> float:
    """A pointwise judge that only counts words."""
    return float(len(reply.split()))


def likes_e(prompt: str, first: str, second: str) -> float:
    """A pairwise judge with a real (if odd) taste: more 'e's is better, in either position."""
    return float(first.count("e") - second.count("e"))
