"""Score replies with a trained reward model: ``score(prompt, reply) -> float``.

    scorer = RewardScorer.load("runs/reward-.../checkpoint")
    scorer.score("What is 2+2?", "4")            # higher is better
    scorer.score_batch([(prompt, reply), ...])

One prompt format for every reward model, at training and at scoring time (:func:`reward_prompt`):
the conversation as a transcript, ``User: ...`` / ``Assistant: ...`` turns, whether it arrives as
an HH-RLHF transcript, a TRL prompt, a bare question from a prompts file (PPO, the prompt lab,
"try it", ``eval compare``) or a list of chat messages. Texts are encoded by one function
(:func:`encode_pair`): prompt and reply as a pair, truncated from the left so the reply, which is
what is judged, survives. Training writes ``reward_format.json`` (the format and ``max_length``)
into the checkpoint; :meth:`RewardScorer.load` reads it, so every scorer uses the length the
model was trained with.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from rlhf.device import pick_device

FORMAT_FILE = "reward_format.json"
PROMPT_FORMAT = "transcript-v1"
DEFAULT_MAX_LENGTH = 256  # reward models saved before reward_format.json existed were trained at 256
ROLES = {"user": "User", "assistant": "Assistant", "system": "System"}
TRANSCRIPT_START = ("User: ", "System: ")


def reward_prompt(prompt) -> str:
    """The conversation before the reply, as a reward model sees it: ``User: ...`` turns.

    A list of messages becomes one turn per message; text that is already a transcript (as
    pairs files give it) is kept; any other text is the user's one message.
    """
    if isinstance(prompt, list | tuple):
        return "\n\n".join(f"{ROLES.get(str(m.get('role')), str(m.get('role')).capitalize())}: {m.get('content') or ''}" for m in prompt)
    text = "" if prompt is None else str(prompt)
    if not text or text.startswith(TRANSCRIPT_START):
        return text
    return f"User: {text}"


def reward_text(prompt, reply: str) -> str:
    """The one text a decoder reward model reads (encoders read the two parts as a pair)."""
    prompt = reward_prompt(prompt)
    return f"{prompt}\n\nAssistant: {reply}" if prompt else reply


def write_format(folder: Path, max_length: int, **reading) -> None:
    """Record, beside a trained reward model, how it read its texts.

    ``reading`` adds ``prompt_format`` ("transcript" or "chat"), ``max_prompt_tokens``,
    ``max_reply_tokens`` and, for an ensemble, ``heads`` and ``head_offsets`` (each head's
    mean score on its training texts, subtracted so every head is centred on 0).
    """
    import json

    text_format = reading.pop("prompt_format", "transcript")
    payload = {"prompt_format": PROMPT_FORMAT, "text_format": text_format, "max_length": int(max_length), **reading}
    Path(folder, FORMAT_FILE).write_text(json.dumps(payload, indent=2))


def read_format(folder: Path) -> dict:
    import json

    try:
        return json.loads(Path(folder, FORMAT_FILE).read_text())
    except (OSError, ValueError):
        return {"prompt_format": PROMPT_FORMAT, "max_length": DEFAULT_MAX_LENGTH}


def reading_of(fmt: dict) -> dict:
    """The keyword arguments of :func:`encode_pair` that a format file records."""
    return {
        "prompt_format": fmt.get("text_format", "transcript"),
        "max_prompt_tokens": int(fmt.get("max_prompt_tokens", 0) or 0),
        "max_reply_tokens": int(fmt.get("max_reply_tokens", 0) or 0),
    }


PROMPT_FORMATS = ("transcript", "chat")


def _messages(prompt) -> list[dict]:
    from rlhf.preference_data import transcript_messages

    if isinstance(prompt, list | tuple):
        return [{"role": str(m.get("role")), "content": str(m.get("content") or "")} for m in prompt]
    return transcript_messages("" if prompt is None else str(prompt))


def _chat_parts(tokenizer, prompt, reply: str, max_prompt_tokens: int, max_reply_tokens: int) -> tuple[list[int], list[int]]:
    """Chat-template ids of the conversation (with the reply's opening) and of the reply."""
    from rlhf.preference_data import last_turns

    messages = _messages(prompt)
    if max_prompt_tokens:
        messages = last_turns(messages, tokenizer, max_prompt_tokens)
    head = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    head = list(head["input_ids"] if hasattr(head, "keys") else head)
    body = tokenizer(reply, add_special_tokens=False)["input_ids"]
    if max_reply_tokens:
        body = body[:max_reply_tokens]  # a long reply keeps its start
    return head, body


def encode_pair(
    tokenizer,
    prompt,
    reply: str,
    max_length: int,
    prompt_format: str = "transcript",
    max_prompt_tokens: int = 0,
    max_reply_tokens: int = 0,
) -> list[int]:
    """Token ids for (prompt, reply), cut from the left when too long; an end token for decoders.

    ``prompt_format`` "transcript" (every model): ``User: ...`` turns; encoders read prompt and
    reply as a pair. "chat" (decoders with a chat template): the conversation as the base was
    trained to read it, with the prompt's last turns within ``max_prompt_tokens`` (0: all) and
    the reply's first ``max_reply_tokens`` (0: all).
    """
    is_encoder = tokenizer.cls_token is not None and tokenizer.sep_token is not None
    eos = tokenizer.eos_token_id
    if prompt_format == "chat" and not is_encoder and getattr(tokenizer, "chat_template", None):
        head, body = _chat_parts(tokenizer, prompt, reply, max_prompt_tokens, max_reply_tokens)
        ids = head + body + ([eos] if eos is not None else [])
        return ids[-max_length:]
    prompt = reward_prompt(prompt)
    if is_encoder:
        side = tokenizer.truncation_side
        tokenizer.truncation_side = "left"
        try:
            ids = tokenizer(prompt, reply, truncation="longest_first", max_length=max_length)["input_ids"]
        finally:
            tokenizer.truncation_side = side
        return ids
    ids = tokenizer(reward_text(prompt, reply), add_special_tokens=True)["input_ids"]
    if eos is not None and (not ids or ids[-1] != eos):
        ids = ids + [eos]
    return ids[-max_length:]


def reply_start(tokenizer, prompt, reply: str, max_length: int, prompt_format: str = "transcript", **budgets) -> int:
    """Where the reply's tokens begin in :func:`encode_pair`'s ids (decoders)."""
    full = encode_pair(tokenizer, prompt, reply, max_length, prompt_format, **budgets)
    if prompt_format == "chat" and getattr(tokenizer, "chat_template", None):
        head, body = _chat_parts(tokenizer, prompt, reply, budgets.get("max_prompt_tokens", 0), budgets.get("max_reply_tokens", 0))
        return max(1, len(full) - len(body) - 1)
    reply_ids = tokenizer(" " + reply, add_special_tokens=False)["input_ids"]
    return max(1, len(full) - len(reply_ids) - 1)


class RewardScorer:
    """A loaded reward model (sequence classification): one output, or an ensemble of heads.

    An ensemble (``heads`` > 1 in its format file) scores each text with every head in one
    forward pass; the score is their mean and the uncertainty their standard deviation
    (:meth:`score_spread`).
    """

    def __init__(
        self,
        model,
        tokenizer,
        max_length: int = 512,
        device: torch.device | None = None,
        reading: dict | None = None,
        head_offsets: Sequence[float] | None = None,
        pooling: str = "classifier",
    ) -> None:
        self.device = device or pick_device()
        self.pooling = pooling  # "reply_mean": the heads read the mean of the reply's token vectors
        self._extractor = None
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.reading = reading or {}
        self.heads = int(model.config.num_labels)
        offsets = list(head_offsets) if head_offsets is not None else [0.0] * self.heads
        if len(offsets) != self.heads:
            raise ValueError(f"{len(offsets)} head offsets for {self.heads} heads")
        self.offsets = torch.tensor(offsets, dtype=torch.float)

    @classmethod
    def load(cls, folder: str | Path, max_length: int | None = None, device: str | None = None) -> RewardScorer:
        """Load a reward model; ``max_length`` defaults to the one it was trained with."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from rlhf.modelfiles import ModelError

        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise ModelError(f"{folder} is not a reward model checkpoint (no config.json)")
        fmt = read_format(folder)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForSequenceClassification.from_pretrained(folder)
        heads = int(fmt.get("heads", 1))
        if model.config.num_labels != heads:
            raise ModelError(
                f"{folder} has {model.config.num_labels} outputs; a reward model has one"
                + (f" (its {FORMAT_FILE} says {heads} heads)" if heads != 1 else "")
            )
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model.config.pad_token_id = tokenizer.pad_token_id
        from rlhf.pooling import restore

        restore(model)
        return cls(
            model,
            tokenizer,
            max_length or fmt["max_length"],
            pick_device(device),
            reading_of(fmt),
            fmt.get("head_offsets"),
            fmt.get("pooling", "classifier"),
        )

    @torch.inference_mode()
    def score_heads(self, pairs: Sequence[tuple[str, str]], batch_size: int = 32) -> torch.Tensor:
        """Every head's score, centred: a (len(pairs), heads) tensor on the CPU."""
        if self.pooling == "reply_mean":
            return self._reply_mean_heads(pairs)
        rows: list[torch.Tensor] = []
        pad = self.tokenizer.pad_token_id
        for start in range(0, len(pairs), batch_size):
            ids = [self.encode(p, r) for p, r in pairs[start : start + batch_size]]
            width = max(len(x) for x in ids)
            # Right padding: sequence-classification heads find the last real token from the pad id.
            input_ids = torch.tensor([x + [pad] * (width - len(x)) for x in ids], device=self.device)
            mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids], device=self.device)
            rows.append(self.model(input_ids=input_ids, attention_mask=mask).logits.float().cpu() - self.offsets)
        return torch.cat(rows) if rows else torch.zeros(0, self.heads)

    def _reply_mean_heads(self, pairs: Sequence[tuple[str, str]]) -> torch.Tensor:
        from rlhf.features import FrozenFeatures

        if self._extractor is None:
            reading = {"max_length": self.max_length, **self.reading}
            self._extractor = FrozenFeatures.of_classifier(self.model, self.tokenizer, reading, self.device, pooling="reply_mean")
        if not pairs:
            return torch.zeros(0, self.heads)
        head = self.model.score if hasattr(self.model, "score") else self.model.classifier
        features = self._extractor.features(pairs).to(self.device)
        logits = torch.nn.functional.linear(features, head.weight.float(), None if head.bias is None else head.bias.float())
        return logits.cpu() - self.offsets

    def score_batch(self, pairs: Sequence[tuple[str, str]], batch_size: int = 32) -> list[float]:
        """One score per (prompt, reply): the head's, or the mean of an ensemble's heads."""
        return self.score_heads(pairs, batch_size).mean(1).tolist()

    def score_spread(self, pairs: Sequence[tuple[str, str]], batch_size: int = 32) -> tuple[list[float], list[float]]:
        """Scores and their uncertainty: the heads' standard deviation (0 for a single head)."""
        heads = self.score_heads(pairs, batch_size)
        spread = heads.std(1) if self.heads > 1 else torch.zeros(len(heads))
        return heads.mean(1).tolist(), spread.tolist()

    def encode(self, prompt, reply: str) -> list[int]:
        """The token ids this scorer feeds the model (the same function as training)."""
        return encode_pair(self.tokenizer, prompt, reply, self.max_length, **self.reading)

    def score(self, prompt: str, reply: str) -> float:
        return self.score_batch([(prompt, reply)])[0]
