"""`LM`: one loaded language model — backend, tokenizer and metadata — and its token-level views."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch

# The notebook views (`_repr_html_`, `to_pandas`) of every record an LM hands out are registered on import.
import decodelab.display
import decodelab.tables  # noqa: F401
from decodelab.backends.base import Backend
from decodelab.beam import beam_search
from decodelab.beam_records import BeamResult
from decodelab.chat import Message, build_messages, render_chat
from decodelab.compute_mode import ComputeMode
from decodelab.decoder import Decoder
from decodelab.decoding import prefill
from decodelab.distribution import Distribution
from decodelab.engine import Generation, make_config, stream_text
from decodelab.errors import BadInput
from decodelab.generation_config import GenerationConfig
from decodelab.records import Result
from decodelab.scoring import Score, score_text
from decodelab.session import Session
from decodelab.tokenizer import Tokenizer
from decodelab.tokens import TokenView, tokenize

__all__ = ["LM", "Prompt", "make_config"]

Prompt = str | list[Message] | list[int]


@dataclass
class LM:
    name: str  # what the user asked for, or the bundled model's name
    backend: Backend  # computes logits; see decodelab.backends
    tokenizer: Tokenizer
    eos_ids: tuple[int, ...] = ()  # end-of-sequence ids named by the model and generation configs
    source: str = "hub"  # "bundled" | "gguf" | "directory" | "hub" | "tinygpt"
    path: Path | None = None  # the directory the weights were read from, when local
    compile_seconds: float | None = None  # what compiling the decode step took, when loaded with compile=True

    @property
    def model(self) -> Any:
        """The torch module: decodelab's `NativeLlama`, or the transformers model for other backends."""
        return getattr(self.backend, "model", self.backend)

    @property
    def context_length(self) -> int:
        return self.backend.context_length

    @property
    def dtype(self) -> torch.dtype:
        return self.backend.dtype

    @property
    def mode(self) -> ComputeMode:
        """dtype, weight quantization and compilation: whether this model runs the exact path or a fast mode."""
        return ComputeMode.of(self.backend)

    @property
    def device(self) -> torch.device:
        return self.backend.device

    @property
    def decoder(self) -> Decoder:
        """What decoding reads of this model: backend, tokenizer and eos ids (see `decodelab.decoder`)."""
        return Decoder(self.backend, self.tokenizer, self.eos_ids)

    def stop_ids(self, stop_strings: tuple[str, ...] | list[str] = ()) -> frozenset[int]:
        """Token ids that end generation: eos ids, the template's end-of-turn markers, one-token stop strings."""
        return self.decoder.stop_ids(stop_strings)

    def tokenize(self, text: str, add_special_tokens: bool = True) -> TokenView:
        """The token view of `text` (what the model sees when given it as a plain prompt)."""
        if not text:
            raise BadInput("text is empty: give some text to tokenize")
        return tokenize(self.tokenizer, text, add_special_tokens=add_special_tokens)

    def chat_prompt(
        self, prompt: str | list[Message], system: str | None = None, tools: list[dict] | None = None
    ) -> str:
        """The prompt text rendered through the chat template, ending where the assistant starts to write;
        `tools` (OpenAI's function dicts) reach the template as transformers passes them."""
        return render_chat(self.tokenizer, build_messages(prompt, system), tools=tools)

    def chat_tokens(
        self, prompt: str | list[Message], system: str | None = None, tools: list[dict] | None = None
    ) -> TokenView:
        """The token view of the rendered chat prompt (its special tokens come from the template)."""
        return tokenize(self.tokenizer, self.chat_prompt(prompt, system, tools), add_special_tokens=False)

    def prompt_ids(
        self, prompt: Prompt, chat: bool = False, system: str | None = None, tools: list[dict] | None = None
    ) -> list[int]:
        """Token ids for a prompt (text, chat messages, or ids), checked to be non-empty and fit the context;
        `tools` go to the chat template."""
        ids: list[int]
        if isinstance(prompt, list) and all(isinstance(item, int) for item in prompt) and prompt:
            ids = list(cast(list[int], prompt))
            vocab = self.backend.vocab_size
            if outside := [i for i in ids if not 0 <= i < vocab]:
                raise BadInput(f"token id {outside[0]} is outside the vocabulary [0, {vocab}): give ids the model has")
        elif chat or (isinstance(prompt, list) and prompt):
            ids = self.chat_tokens(cast(str | list[Message], prompt), system, tools).ids
        else:
            if not prompt:
                raise BadInput("prompt is empty: give some text for the model to continue")
            ids = self.tokenizer.encode(cast(str, prompt))
        if not ids:
            raise BadInput("prompt is empty: give some text for the model to continue")
        if len(ids) > self.context_length:
            raise BadInput(
                f"prompt is {len(ids)} tokens but {self.name} reads at most {self.context_length}: shorten it"
            )
        return ids

    def next_token_distribution(self, prompt: Prompt, chat: bool = False, system: str | None = None) -> Distribution:
        """P(next token | prompt) over the whole vocabulary."""
        ids = self.prompt_ids(prompt, chat=chat, system=system)
        input_ids = torch.tensor([ids], device=self.device)  # (1, T)
        logits = prefill(self.backend, input_ids, self.backend.new_cache(1))[0]  # (V,), the prompt fed in chunks
        return Distribution(logits, self.tokenizer, ids, partial=getattr(self.backend, "partial_logits", False))

    def generation(
        self,
        prompt: Prompt,
        *,
        chat: bool = False,
        system: str | None = None,
        n: int = 1,
        config: GenerationConfig | None = None,
        **options: Any,
    ) -> Generation:
        """A traced generation to iterate (Steps as they happen); `.results` holds one Result per row at the end.

        Options are `GenerationConfig` fields: max_new_tokens, greedy, stop, stop_token_ids, max_time, seed,
        samplers, top_n, trace, and every sampler setting (temperature, top_p, dry_multiplier, ...: the README's
        sampler table, or `decodelab.samplers.all_settings()`).
        """
        ids = self.prompt_ids(prompt, chat=chat, system=system)
        return Generation(self.decoder, ids, make_config(config, options), n)

    def generate(
        self,
        prompt: Prompt,
        *,
        chat: bool = False,
        system: str | None = None,
        config: GenerationConfig | None = None,
        **options: Any,
    ) -> Result:
        """Generate to a stop; the Result holds the text, ids, stop reason and every Step."""
        return self.generation(prompt, chat=chat, system=system, config=config, **options).run()[0]

    def sample(
        self,
        prompt: Prompt,
        n: int,
        *,
        chat: bool = False,
        system: str | None = None,
        config: GenerationConfig | None = None,
        **options: Any,
    ) -> list[Result]:
        """`n` samples of one prompt in one batched forward per step; row r uses seed + r."""
        return self.generation(prompt, chat=chat, system=system, n=n, config=config, **options).run()

    def stream(
        self,
        prompt: Prompt,
        *,
        chat: bool = False,
        system: str | None = None,
        config: GenerationConfig | None = None,
        **options: Any,
    ) -> Iterator[str]:
        """Text deltas as they are generated; never splits a UTF-8 character, never shows a stop string."""
        return stream_text(self.generation(prompt, chat=chat, system=system, config=config, **options))

    def session(
        self,
        prompt: Prompt,
        *,
        chat: bool = False,
        system: str | None = None,
        config: GenerationConfig | None = None,
        **options: Any,
    ) -> Session:
        """An interactive session: distribution(), step(), append(token), fork(), undo(), save()."""
        return Session(self.decoder, self.prompt_ids(prompt, chat=chat, system=system), make_config(config, options))

    def beam_search(
        self, prompt: Prompt, *, chat: bool = False, system: str | None = None, num_beams: int = 4, **options: Any
    ) -> BeamResult:
        """Beam search with a traced beam tree; equal to transformers' generate(num_beams=..., do_sample=False).

        Options: max_new_tokens, length_penalty, early_stopping (True | False | "never"), num_return_sequences,
        stop_token_ids, the settings of the stages greedy decoding keeps (repetition_penalty,
        no_repeat_ngram_size, dry_multiplier, logit_bias, ...), and a constraint as for `generate` (json_schema=,
        json_object=True, regex=, choice=, grammar=, or constraint=Constraint(...)). See `decodelab.beam`.
        """
        return beam_search(self.decoder, self.prompt_ids(prompt, chat=chat, system=system), num_beams, **options)

    def score(self, text: str, prompt: str | None = None, **options: Any) -> Score:
        """Per-token logprob, probability, rank and surprisal of `text` (after `prompt`), with the total
        logprob and perplexity; long texts are scored in sliding windows. See `decodelab.scoring`."""
        return score_text(self.decoder, text, prompt, **options)

    def __repr__(self) -> str:
        return f"LM({self.name!r}, source={self.source}, context={self.context_length}, dtype={self.dtype})"
