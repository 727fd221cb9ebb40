"""Batched, KV-cached text generation with the model's chat template.

    engine = GenerationEngine(model, tokenizer)
    replies = engine.generate(["What is the capital of France?"], SamplingParams(temperature=0))
    for partial in engine.stream([{"role": "user", "content": "Hi"}], SamplingParams()):
        print(partial)

Prompts are a user message (str) or a list of chat messages. Batches are left-padded (so every
row's next token sits at the same position) and sorted by length to waste little compute on
padding; generation stops at the end of the assistant's turn. One engine runs one generation
at a time: on a small machine two concurrent ones only slow each other down.

A model never sees more than its context: a prompt longer than the context minus the reply's
room loses its start (the end, with the question, is kept) and the result says how many tokens
went (``Generation.truncated_tokens``; ``stream`` reports it through ``info``). Batches are
also bounded in tokens (``max_batch_tokens``), so one long prompt is not padded into every row
of its batch.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field

import torch

Message = dict
Prompt = str | Sequence[Message]
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>")


@dataclass
class SamplingParams:
    """How to sample a reply; temperature 0 means greedy decoding."""

    temperature: float = field(default=0.7, metadata={"help": "softmax temperature; 0 = greedy"})
    top_p: float = field(default=0.95, metadata={"help": "nucleus sampling mass (1 = off)"})
    max_new_tokens: int = field(default=256, metadata={"help": "longest reply, in tokens"})
    seed: int | None = field(default=None, metadata={"help": "random seed for repeatable sampling"})
    repetition_penalty: float = field(default=1.0, metadata={"help": ">1 discourages repeats"})

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Generation:
    """One reply and what it cost."""

    text: str
    prompt_tokens: int  # tokens the model saw (after any truncation)
    new_tokens: int
    finished: bool  # True when the model ended its turn, False when max_new_tokens cut it
    truncated_tokens: int = 0  # tokens cut from the prompt's start to fit the model's context


def end_of_turn_ids(tokenizer) -> list[int]:
    """Token ids that end an assistant turn for this tokenizer."""
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    vocab = tokenizer.get_vocab()
    for token in END_OF_TURN_TOKENS:
        if token in vocab:
            ids.add(int(vocab[token]))
    return sorted(ids)


@dataclass
class Rollout:
    """One sampled reply as token ids, for training: what the model saw and what it wrote."""

    prompt_ids: list[int]
    response_ids: list[int]  # up to and including the end-of-turn token when the reply ended
    text: str
    finished: bool
    truncated_tokens: int = 0  # cut from the prompt's start to fit the context


class _StopOnEvent:
    """A stopping criterion that ends generation when the consumer goes away."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


CONTEXT_FIELDS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")


def context_length(model, tokenizer=None) -> int | None:
    """Tokens the model can attend over (prompt + reply), from its config; None when unknown."""
    config = getattr(model, "config", None)
    for name in CONTEXT_FIELDS:
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and 0 < limit < 1_000_000 else None  # tokenizers say 1e30 when unknown


class GenerationEngine:
    """Generates replies from one loaded causal LM and its tokenizer."""

    def __init__(self, model, tokenizer, batch_size: int = 16, max_batch_tokens: int = 16384) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        # Prompt + reply tokens per batch (rows x width): long prompts go in smaller batches.
        self.max_batch_tokens = max_batch_tokens
        self.context = context_length(model, tokenizer)
        self.stop_ids = end_of_turn_ids(tokenizer)
        self._lock = threading.Lock()
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token; load it with rlhf.loading.load_tokenizer")

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # -- prompt formatting -------------------------------------------------------------------
    def format(self, prompt: Prompt, system: str | None = None) -> str:
        """The text the model sees: the chat template applied, ending where the reply starts."""
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [dict(m) for m in prompt]
        if system and not any(m.get("role") == "system" for m in messages):
            messages.insert(0, {"role": "system", "content": system})
        for m in messages:
            m["content"] = text_content(m.get("content"))
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        # A base model without a template: plain transcript, the reply starts after "Assistant:".
        lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
        return "\n\n".join(lines) + "\n\nAssistant:"

    def _token_ids(self, texts: list[str]) -> list[list[int]]:
        has_template = bool(getattr(self.tokenizer, "chat_template", None))
        return self.tokenizer(texts, add_special_tokens=not has_template)["input_ids"]

    def prompt_room(self, max_new_tokens: int) -> int | None:
        """Most prompt tokens the model is given with ``max_new_tokens`` to write (None: no limit).

        The context minus the reply's room, but never less than half the context: a huge
        ``max_new_tokens`` shortens the reply (:meth:`_new_tokens`), not the question to nothing.
        """
        if self.context is None:
            return None
        return max(self.context - max_new_tokens, self.context // 2, 1)

    def _fit(self, ids: list[int], max_new_tokens: int) -> tuple[list[int], int]:
        """(the ids the model is given, how many were cut from the start)."""
        room = self.prompt_room(max_new_tokens)
        if room is None or len(ids) <= room:
            return list(ids), 0
        bos = self.tokenizer.bos_token_id
        # Without a chat template the tokenizer put a BOS first: keep it, cut after it.
        keep_bos = not getattr(self.tokenizer, "chat_template", None) and bos is not None and ids and ids[0] == bos and room > 1
        kept = [bos, *ids[len(ids) - room + 1 :]] if keep_bos else list(ids[len(ids) - room :])
        return kept, len(ids) - len(kept)

    def _new_tokens(self, width: int, max_new_tokens: int) -> int:
        """The reply's room in a batch whose prompts are ``width`` tokens wide."""
        if self.context is None:
            return max_new_tokens
        return max(1, min(max_new_tokens, self.context - width))

    def _pad(self, rows: list[list[int]]) -> dict:
        """Left-padded input ids and attention mask on the model's device."""
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        ids = [[pad] * (width - len(r)) + list(r) for r in rows]
        mask = [[0] * (width - len(r)) + [1] * len(r) for r in rows]
        return {"input_ids": torch.tensor(ids, device=self.device), "attention_mask": torch.tensor(mask, device=self.device)}

    def _encode(self, texts: list[str]) -> dict:
        """The texts as one left-padded batch, untruncated (for tests and reference decoding)."""
        return self._pad(self._token_ids(texts))

    def prompt_cut(self, prompt: Prompt, params: SamplingParams | None = None, system: str | None = None) -> int:
        """How many tokens of this prompt would be cut from its start to fit the context (0: none)."""
        params = params or SamplingParams()
        [ids] = self._token_ids([self.format(prompt, system)])
        return self._fit(ids, params.max_new_tokens)[1]

    def _batches(self, order: list[int], lengths: list[int], size: int, max_new_tokens: int) -> list[list[int]]:
        """Split the longest-first order into batches of at most ``size`` rows and ``max_batch_tokens`` tokens."""
        batches, start = [], 0
        while start < len(order):
            width = lengths[order[start]]  # the longest row of the batch comes first
            rows = max(1, min(size, self.max_batch_tokens // max(1, width + self._new_tokens(width, max_new_tokens))))
            batches.append(order[start : start + rows])
            start += rows
        return batches

    def _generation_config(self, params: SamplingParams, max_new_tokens: int | None = None):
        cfg = copy.deepcopy(self.model.generation_config)
        cfg.max_new_tokens = max_new_tokens or params.max_new_tokens
        cfg.eos_token_id = self.stop_ids
        cfg.pad_token_id = self.tokenizer.pad_token_id
        cfg.use_cache = True
        cfg.repetition_penalty = params.repetition_penalty
        if params.greedy:
            cfg.do_sample = False
            cfg.temperature, cfg.top_p, cfg.top_k = None, None, None
        else:
            cfg.do_sample = True
            cfg.temperature, cfg.top_p, cfg.top_k = params.temperature, params.top_p, None
        return cfg

    # -- batched generation ------------------------------------------------------------------
    @torch.inference_mode()
    def generate(
        self,
        prompts: Sequence[Prompt],
        params: SamplingParams | None = None,
        batch_size: int | None = None,
        system: str | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[Generation]:
        """One reply per prompt, in the prompts' order; ``progress(done, total)`` after each batch."""
        params = params or SamplingParams()
        size = batch_size or self.batch_size
        texts = [self.format(p, system) for p in prompts]
        fitted = [self._fit(ids, params.max_new_tokens) for ids in self._token_ids(texts)]
        lengths = [len(ids) for ids, _ in fitted]
        order = sorted(range(len(texts)), key=lambda i: -lengths[i])
        results: list[Generation | None] = [None] * len(texts)
        done = 0
        with self._lock:
            if params.seed is not None:
                torch.manual_seed(params.seed)
            for idx in self._batches(order, lengths, size, params.max_new_tokens):
                batch = self._pad([fitted[i][0] for i in idx])
                width = batch["input_ids"].shape[1]
                cfg = self._generation_config(params, self._new_tokens(width, params.max_new_tokens))
                out = self.model.generate(**batch, generation_config=cfg)
                new = out[:, width:].tolist()
                del out, batch
                for row, i in enumerate(idx):
                    results[i] = self._decode(new[row], lengths[i], truncated=fitted[i][1])
                done += len(idx)
                if progress:
                    progress(done, len(order))
        return results  # type: ignore[return-value]

    @torch.inference_mode()
    def rollout(self, prompts: Sequence[Prompt], params: SamplingParams, system: str | None = None, logits_processor=None) -> list[Rollout]:
        """Sample one reply per prompt (one batch) and return the token ids, for PPO.

        ``logits_processor``: a transformers LogitsProcessorList passed to ``generate`` (PPO's per-prompt seeded sampling).
        """
        texts = [self.format(p, system) for p in prompts]
        fitted = [self._fit(ids, params.max_new_tokens) for ids in self._token_ids(texts)]
        batch = self._pad([ids for ids, _ in fitted])
        width = batch["input_ids"].shape[1]
        with self._lock:
            if params.seed is not None:
                torch.manual_seed(params.seed)
            cfg = self._generation_config(params, self._new_tokens(width, params.max_new_tokens))
            out = self.model.generate(**batch, generation_config=cfg, logits_processor=logits_processor)
        mask = batch["attention_mask"].tolist()
        prompt_rows = batch["input_ids"].tolist()
        out_rows = out[:, width:].tolist()
        results = []
        for row, new in enumerate(out_rows):
            prompt_ids = [t for t, m in zip(prompt_rows[row], mask[row], strict=True) if m]
            finished = False
            for pos, tok in enumerate(new):
                if tok in self.stop_ids:
                    new, finished = new[: pos + 1], True
                    break
            text = self.tokenizer.decode(new, skip_special_tokens=True).strip()
            results.append(Rollout(prompt_ids=prompt_ids, response_ids=new, text=text, finished=finished, truncated_tokens=fitted[row][1]))
        return results

    def _decode(self, tokens: list[int], prompt_tokens: int, truncated: int = 0) -> Generation:
        finished = False
        for pos, tok in enumerate(tokens):
            if tok in self.stop_ids:
                tokens, finished = tokens[:pos], True
                break
        text = self.tokenizer.decode(tokens, skip_special_tokens=True).strip()
        return Generation(
            text=text, prompt_tokens=prompt_tokens, new_tokens=len(tokens) + finished, finished=finished, truncated_tokens=truncated
        )

    # -- streaming ---------------------------------------------------------------------------
    def stream(
        self, prompt: Prompt, params: SamplingParams | None = None, system: str | None = None, info: dict | None = None
    ) -> Iterator[str]:
        """Yield the reply so far after each new piece of text; stops early if the caller stops.

        ``info``, when given, gets ``prompt_tokens`` and ``truncated_tokens`` (tokens cut from the
        conversation's start to fit the context) before the first piece is yielded.
        """
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        params = params or SamplingParams()
        [ids] = self._token_ids([self.format(prompt, system)])
        ids, cut = self._fit(ids, params.max_new_tokens)
        if info is not None:
            info.update(prompt_tokens=len(ids), truncated_tokens=cut)
        batch = self._pad([ids])
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
        cancelled = threading.Event()
        failure: list[BaseException] = []

        def work() -> None:
            try:
                with torch.inference_mode():
                    if params.seed is not None:
                        torch.manual_seed(params.seed)
                    self.model.generate(
                        **batch,
                        generation_config=self._generation_config(params, self._new_tokens(len(ids), params.max_new_tokens)),
                        streamer=streamer,
                        stopping_criteria=StoppingCriteriaList([_StopOnEvent(cancelled)]),
                    )
            except BaseException as exc:  # surfaced to the consumer below
                failure.append(exc)
                streamer.end()

        with self._lock:
            thread = threading.Thread(target=work, daemon=True)
            thread.start()
            text = ""
            try:
                for piece in streamer:
                    text += piece
                    yield text.strip()
            finally:
                cancelled.set()
                thread.join()
        if failure:
            raise failure[0]


def text_content(content) -> str:
    """Message content as text: chat UIs may send a list of parts ({"type": "text", ...})."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text", ""))
    if isinstance(content, list | tuple):
        return "".join(text_content(part) for part in content)
    return str(content)
