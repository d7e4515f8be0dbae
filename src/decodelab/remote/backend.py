"""A model on another server as a decodelab backend: its logits are what the server's logprobs tell.

    forward(ids (B, T), cache) -> per row, one /v1/completions request (rows in parallel):
        the last position: the prefix as the prompt, max_tokens 1, `logprobs` k -> the next token's top k
        every position (scoring): the same with `echo` -> each prompt token's logprob and top k, then the next

The cache holds each row's ids (the server's prefix cache keeps re-sending them cheap), so decodelab's own loop,
sampler chain, sessions (undo, fork, replay), beam search, compare and scoring run unchanged on a remote model,
one request per token per row ("step-by-step" mode).

What a server tells is partial: the k most likely tokens and their log-probabilities, not the whole vocabulary.
A row of logits therefore holds those k tokens' logprobs exactly (so their probabilities are the model's), and
spreads the rest of the mass, which is not known, evenly over the other tokens: the entropy computed from it is
an upper bound. No draw may pick an unknown token: the chain's first stage (`ReportedTokens`) removes them, and
its StageReport says how much mass that was ("the top 20 hold 93.1%").
"""

from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from decodelab.distribution import reported_mask
from decodelab.errors import BadInput
from decodelab.remote.capabilities import Capabilities
from decodelab.remote.client import RemoteClient, RemoteError
from decodelab.samplers.base import FILTERED, History, Stage
from decodelab.tokenizer import Tokenizer

MAX_PARALLEL_ROWS = 8  # requests one forward sends at once (samples, beams)


@dataclass(frozen=True)
class Position:
    """What a server said about one position: the token there (None when not named), its logprob, and the
    most likely tokens with theirs."""

    token_id: int | None
    logprob: float | None
    top: dict[int, float]


class RemoteCache:
    """Each row's ids so far: the prefix the next request sends."""

    def __init__(self, rows: list[list[int]]):
        self.rows = rows

    @property
    def length(self) -> int:
        return len(self.rows[0]) if self.rows else 0

    def crop(self, length: int) -> None:
        self.rows = [row[:length] for row in self.rows]

    def reorder(self, rows: torch.Tensor) -> None:
        self.rows = [list(self.rows[index]) for index in rows.tolist()]

    def fork(self) -> RemoteCache:
        return RemoteCache([list(row) for row in self.rows])


class RemoteBackend:
    """The `Backend` contract over HTTP (see the module docstring)."""

    partial_logits: ClassVar[bool] = True  # rows hold the reported tokens only; GenerationConfig adds ReportedTokens
    quantization: ClassVar[str] = "none"
    compiled: ClassVar[bool] = False

    def __init__(
        self,
        client: RemoteClient,
        capabilities: Capabilities,
        tokenizer: Tokenizer,
        vocab_size: int,
        context_length: int,
    ):
        self.client, self.capabilities, self.tokenizer = client, capabilities, tokenizer
        self.vocab_size, self.context_length = vocab_size, context_length
        self.requests = 0  # sent so far (bench/remote.py reads it)
        self._counting = threading.Lock()  # rows send requests from several threads
        self._text_ids: dict[str, int] | None = None

    @property
    def engine(self) -> str:
        return self.capabilities.engine

    @property
    def dtype(self) -> torch.dtype:
        # float64: a row holds ~49,000 equal tiny values (the spread rest), and a float32 softmax over them
        # drifts by ~1e-4 in the reported tokens' logprobs; in float64 they come back as the server sent them
        return torch.float64

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def new_cache(self, batch_size: int) -> RemoteCache:
        return RemoteCache([[] for _ in range(batch_size)])

    def forward(
        self, input_ids: torch.Tensor, cache: RemoteCache | None = None, *, last_only: bool = False
    ) -> torch.Tensor:
        """(B, T) ids continuing `cache` -> (B, T, V) float64 logits, or (B, 1, V) with `last_only` (module
        docstring)."""
        rows = input_ids.tolist()
        prefixes = [(cache.rows[b] if cache is not None else []) + row for b, row in enumerate(rows)]
        positions = 1 if last_only or len(rows[0]) == 1 else len(rows[0])
        if len(prefixes) == 1:
            logits = [self._logits(prefixes[0], positions)]
        else:
            with ThreadPoolExecutor(min(len(prefixes), MAX_PARALLEL_ROWS)) as pool:
                logits = list(pool.map(lambda prefix: self._logits(prefix, positions), prefixes))
        if cache is not None:
            cache.rows = prefixes
        return torch.stack(logits)  # (B, positions, V)

    def _logits(self, prefix: list[int], positions: int) -> torch.Tensor:
        """(positions, V): the distributions after each of the last `positions` ids of `prefix`."""
        if positions == 1:
            (after,) = self.positions(prefix, echo=False)[-1:]
            return self._row(after)[None]
        self.capabilities.require("scoring every position of a text", "echo")
        told = self.positions(prefix, echo=True)  # the prompt's tokens (the first without logprob), then the next
        if len(told) != len(prefix) + 1:
            raise RemoteError(f"{self.engine} echoed {len(told) - 1} positions for a prompt of {len(prefix)} tokens")
        # the distribution after id j is the one the entry of token j + 1 was drawn from (its own logprob known too)
        return torch.stack([self._row(entry) for entry in told[len(prefix) + 1 - positions :]])

    def positions(self, prefix: list[int], echo: bool) -> list[Position]:
        """One completion of one token after `prefix`: what the server says of each position it lists."""
        choice = self.complete(prefix, max_tokens=1, temperature=0, echo=echo)
        logprobs = choice.get("logprobs")
        if logprobs is None:
            raise RemoteError(f"{self.engine} answered logprobs: null (is the model loaded with logits_all?)")
        return self.read_logprobs(logprobs)

    def complete(self, prompt_ids: list[int], **fields: Any) -> dict:
        """One /v1/completions request on `prompt_ids` (sent as ids, or as their text where the server takes no
        ids) with the top-k logprobs named as this server names tokens; `fields` are the request's own
        (max_tokens, temperature, echo, seed ...). Returns its first choice."""
        caps = self.capabilities
        body: dict[str, Any] = {
            "model": caps.model,
            "prompt": prompt_ids if caps.id_prompts else self.tokenizer.decode(prompt_ids),
            "logprobs": caps.top_logprobs,
            **fields,
        }
        if caps.token_naming == "token_id":
            body["return_tokens_as_token_ids"] = True
        if caps.engine == "llama-cpp-python":
            body["repeat_penalty"] = 1.0  # its default 1.1 is a sampler decodelab did not ask for
        self.count_request()
        reply = self.client.post("completions", body)
        try:
            return reply["choices"][0]
        except (KeyError, IndexError, TypeError):
            raise RemoteError(f"{self.engine} answered a completion without choices: {str(reply)[:160]}") from None

    def check_top_logprobs(self) -> None:
        """One request of one token asking for `top_logprobs` alternatives, as every step asks: a server that caps
        them (vLLM's `--max-logprobs`, 20 by default) refuses at load time with one error saying how to ask for
        fewer, not at the first step."""
        asked = self.capabilities.top_logprobs
        try:
            self.positions(self.tokenizer.encode("The")[-1:], echo=False)
        except RemoteError as error:
            if error.status not in (400, 422):
                raise
            restart = " (or restart vLLM with --max-logprobs N)" if self.engine == "vllm" else ""
            raise BadInput(
                f"this {self.engine} server refuses to tell {asked} logprobs per position ({error}): ask for fewer "
                f"with top_logprobs= (--top-logprobs N){restart}"
            ) from None

    def count_request(self) -> None:
        with self._counting:
            self.requests += 1

    def read_logprobs(self, logprobs: dict) -> list[Position]:
        """A completion's `logprobs`, in the legacy shape or llama.cpp's chat shape, as Positions."""
        if "content" in logprobs:  # llama.cpp's /v1/completions answers the chat shape, ids included
            return [
                Position(
                    entry.get("id"),
                    entry.get("logprob"),
                    {t["id"]: t["logprob"] for t in entry.get("top_logprobs") or ()},
                )
                for entry in logprobs["content"]
            ]
        return [
            Position(
                self._id(token), logprob, {i: lp for key, lp in (top or {}).items() if (i := self._id(key)) is not None}
            )
            for token, logprob, top in zip(logprobs["tokens"], logprobs["token_logprobs"], logprobs["top_logprobs"])
        ]

    def _id(self, key: str) -> int | None:
        """A token as the server wrote it -> its id (None when the text names no one token)."""
        if self.capabilities.token_naming == "token_id":
            if not key.startswith("token_id:"):
                raise RemoteError(f"{self.engine} wrote a token as {key!r}, not token_id:N")
            return int(key.removeprefix("token_id:"))
        if self._text_ids is None:
            self._text_ids = text_ids(self.tokenizer, self.vocab_size)
        return self._text_ids.get(key)

    def _row(self, position: Position) -> torch.Tensor:
        """(V,) logits: the known tokens' logprobs; the unknown rest spread evenly over the other tokens."""
        known = dict(position.top)
        if position.token_id is not None and position.logprob is not None:
            known[position.token_id] = position.logprob
        if not known:
            raise RemoteError(f"{self.engine} gave no logprobs for a position")
        mass = sum(math.exp(logprob) for logprob in known.values())
        unknown = self.vocab_size - len(known)
        rest = 1.0 - mass
        spread = math.log(rest / unknown) if unknown > 0 and rest > 1e-9 else float("-inf")
        row = torch.full((self.vocab_size,), spread, dtype=torch.float64)
        ids = torch.tensor(list(known), dtype=torch.long)
        if int(ids.max()) >= self.vocab_size:
            raise BadInput(f"{self.engine} named token {int(ids.max())}, outside the tokenizer's {self.vocab_size}")
        row[ids] = torch.tensor(list(known.values()), dtype=torch.float64)
        return row


def text_ids(tokenizer: Tokenizer, vocab_size: int) -> dict[str, int]:
    """Each token's text -> its id, for servers that name tokens by text only (the first id of a text wins, a
    non-special one before a special one; texts that are part of a character are left out: servers write "")."""
    table: dict[str, int] = {}
    for token_id in sorted(range(vocab_size), key=tokenizer.is_special):
        text = tokenizer.decode([token_id])
        if text and "\ufffd" not in text:
            table.setdefault(text, token_id)
    return table


@dataclass(frozen=True)
class ReportedTokens(Stage):
    """The chain's first stage on a remote model: only the tokens the server reported may be drawn (their
    probabilities are the model's; the rest of the mass is not known, so no token of it can be chosen). A
    row's unknown tokens are those sharing its most common logit, where `RemoteBackend` spread the rest
    (`decodelab.distribution.reported_mask`)."""

    name: ClassVar[str] = "reported"
    warper: ClassVar[bool] = False
    position: ClassVar[int] = -2

    def __call__(self, logits: torch.Tensor, history: History) -> torch.Tensor:
        return logits.masked_fill(~reported_mask(logits), FILTERED)  # (B, V)
