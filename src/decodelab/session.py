"""`Session`: step through a generation by hand — look, step, force a token, fork, undo, redo, save, replay.

Sampled draws are seeded by (session seed, draw number), and the draw number of every step is kept in
the saved trace, so `Session.replay(lm, session.save())` reproduces the same tokens exactly. A session
that only steps makes the same draws as `lm.generate` with the same seed. `how_chosen(i)` says how step i
was made (forced, greedy or sampled, its draw and config); `redoing` makes a saved token again (redo after undo).
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import torch

from decodelab.constraints import check_constraint_allows
from decodelab.decoder import Decoder, HasDecoder, as_decoder
from decodelab.decoding import DecodeState, draw_seed, make_step, select
from decodelab.distribution import Distribution
from decodelab.engine import make_config
from decodelab.errors import BadInput, DecodelabError
from decodelab.generation_config import GenerationConfig
from decodelab.records import Step, StopReason
from decodelab.samplers import History
from decodelab.text_tracking import TextTracker
from decodelab.tokens import readable_piece
from decodelab.work import Work, run_alone


@dataclass(frozen=True)
class HowChosen:
    """How a session's step was made: forced (appended, no draw), or chosen by draw number `draw` under `config`
    (greedy: the argmax; sampled: a draw seeded by `draw_seed(seed, draw)`)."""

    draw: int | None  # None: a forced token
    config: GenerationConfig  # the config in effect for that step
    seed: int  # the session's seed

    @property
    def how(self) -> str:
        """One of "forced", "greedy", "sampled"."""
        if self.draw is None:
            return "forced"
        return "greedy" if self.config.is_greedy else "sampled"

    @property
    def draw_seed(self) -> int | None:
        """The seed of a sampled step's draw (the same seed and draw number give the same token); else None."""
        return draw_seed(self.seed, self.draw) if self.how == "sampled" and self.draw is not None else None

    def settings(self) -> dict[str, Any]:
        """The config values that differ from GenerationConfig's defaults (the session's seed aside)."""
        defaults = _default_config_values()
        return {
            name: value for name, value in self.config.to_dict().items() if name != "seed" and value != defaults[name]
        }

    def to_dict(self) -> dict:
        return {"how": self.how, "draw": self.draw, "seed": self.draw_seed, "settings": self.settings()}


@functools.cache
def _default_config_values() -> dict[str, Any]:
    return GenerationConfig().to_dict()


class Session:
    def __init__(self, model: Decoder | HasDecoder, prompt_ids: list[int], config: GenerationConfig | None = None):
        self.decoder = as_decoder(model)
        self.config = config or GenerationConfig()
        self.seed = self.config.seed if self.config.seed is not None else secrets.randbits(62)
        self.stop_ids = self.decoder.stop_ids(self.config.stop, self.config.stop_token_ids)
        self._chain = self.config.chain(self.decoder)
        self._state = DecodeState(self.decoder.backend, prompt_ids, vocabulary=self.decoder.tokenizer.texts)
        self.steps: list[Step] = []
        self._draws: list[int | None] = []  # per step: the draw number used, None for forced tokens
        self._configs: list[GenerationConfig] = []  # per step: the config it was chosen under
        self._next_draw = 0

    @property
    def prompt_ids(self) -> list[int]:
        return self._state.ids[0, : self._state.prompt_length].tolist()

    @property
    def token_ids(self) -> list[int]:
        """Ids added after the prompt."""
        return self._state.ids[0, self._state.prompt_length :].tolist()

    @property
    def text(self) -> str:
        """Text added after the prompt (partial characters at the end shown as <0xNN>)."""
        return readable_piece(b"".join(step.bytes for step in self.steps))

    @property
    def full_text(self) -> str:
        return self.decoder.tokenizer.decode(self._state.ids[0].tolist())

    @property
    def stop_reason(self) -> StopReason | None:
        """Why a generation would stop here, if it would: the last token is a stop token, or the text holds a
        stop string (found as the generation loop finds it, across token boundaries), or the context is full."""
        if self.steps and self.steps[-1].is_stop:
            return StopReason("stop_token", token_id=self.steps[-1].token_id)
        tracker = TextTracker(self.config.stop)
        for step in self.steps:
            if (fired := tracker.add(step.bytes)) is not None:
                return StopReason("stop_string", string=fired)
        if self._chain.ends_outputs and self._chain.complete(self.token_ids):
            return StopReason("constraint_complete")
        if self._state.room == 0:
            return StopReason("context_full")
        return None

    def configure(self, config: GenerationConfig | None = None, **options: Any) -> None:
        """Choose the next tokens under another config (e.g. the web page's sliders). Earlier steps keep
        theirs, and `save()` records each step's config, so a replay still reproduces every token. The stop
        ids follow the new config (its stop_token_ids, or the model's plus its one-token stop strings)."""
        self.config = make_config(config or self.config, options)
        self._chain = self.config.chain(self.decoder)
        self.stop_ids = self.decoder.stop_ids(self.config.stop, self.config.stop_token_ids)

    def distribution(self, after_samplers: bool = False, config: GenerationConfig | None = None) -> Distribution:
        """The next-token distribution: the model's own, or after the sampler chain (as the next `step()` will
        draw from it: with that draw's seed and the stages' memory). `config` looks under another config's
        chain without taking it on (the page's sliders before a step)."""
        logits = self._state.logits
        if after_samplers:
            chain = self._chain if config is None else config.chain(self.decoder)
            logits = chain(logits, self._history(self._next_draw))
        partial = getattr(self.decoder.backend, "partial_logits", False) and not after_samplers
        return Distribution(logits[0], self.decoder.tokenizer, self._state.ids[0].tolist(), partial=partial)

    def step(self) -> Step:
        """Choose one token with the configured strategy and append it."""
        return run_alone(self.stepping())

    def stepping(self) -> Generator[Work, None, Step]:
        """`step()` as a loop that yields the model work it needs (see `decodelab.work`) and returns the Step:
        the server runs that work batched with other requests'. Run it to the end: the token is appended first."""
        draw = self._next_draw
        self._next_draw += 1
        return (yield from self._advancing(None, draw))

    def append(self, token: int | str) -> Step:
        """Force a token (by id, or a text that is exactly one token): branch where the model would not go."""
        return run_alone(self.appending(token))

    def appending(self, token: int | str) -> Generator[Work, None, Step]:
        """`append(token)` as a loop of model work, as `stepping` is."""
        if isinstance(token, str):
            ids = self.decoder.tokenizer.encode(token, add_special_tokens=False)
            if len(ids) != 1:
                raise BadInput(f"{token!r} is {len(ids)} tokens, not one: append an id or a single-token text")
            token = ids[0]
        if not isinstance(token, int) or not 0 <= token < self.decoder.vocab_size:
            raise BadInput(f"token must be an id in [0, {self.decoder.vocab_size}), got {token!r}")
        return (yield from self._advancing(token, None))

    def undo(self, count: int = 1) -> list[Step]:
        """Take back the last `count` tokens; returns their steps."""
        if not self.steps:
            raise BadInput("there is nothing to undo: no token has been chosen or appended yet")
        if not isinstance(count, int) or not 1 <= count <= len(self.steps):
            raise BadInput(f"can undo 1..{len(self.steps)} tokens, got {count!r}")
        self._state.truncate(self._state.ids.shape[1] - count)
        removed = self.steps[-count:]
        del self.steps[-count:], self._draws[-count:], self._configs[-count:]
        return removed

    def how_chosen(self, index: int) -> HowChosen:
        """How step `index` was made: forced, greedy or sampled, by which draw, under which config."""
        return HowChosen(self._draws[index], self._configs[index], self.seed)

    def fork(self) -> Session:
        """An independent copy to explore another branch from here."""
        twin = object.__new__(Session)
        twin.__dict__.update(self.__dict__)
        twin._state = self._state.fork()
        twin.steps, twin._draws, twin._configs = list(self.steps), list(self._draws), list(self._configs)
        return twin

    def save(self) -> dict:
        """A JSON-ready trace: prompt, config, seed and, per token, its id and how it was chosen."""
        base = self._configs[0] if self._configs else self.config
        tokens = []
        for step, draw, config in zip(self.steps, self._draws, self._configs):
            token: dict[str, object] = {"id": step.token_id, "draw": draw}
            if config != base:
                token["config"] = config.to_dict()
            tokens.append(token)
        return {"prompt_ids": self.prompt_ids, "config": base.to_dict(), "seed": self.seed, "tokens": tokens}

    @classmethod
    def replay(cls, model: Decoder | HasDecoder, saved: dict) -> Session:
        """Rebuild a saved session by redoing its draws with its seed; fails loudly if anything diverges."""
        return run_alone(cls.replaying(model, saved))

    @classmethod
    def replaying(cls, model: Decoder | HasDecoder, saved: dict) -> Generator[Work, None, Session]:
        """`replay` as a loop of model work (see `stepping`): the server replays a trace batched with others."""
        config = GenerationConfig.from_dict({**saved["config"], "seed": saved["seed"]})
        session = cls(model, saved["prompt_ids"], config)
        for index, token in enumerate(saved["tokens"]):
            try:
                yield from session.redoing(token, config)
            except DecodelabError as error:
                raise type(error)(
                    f"replay diverged at token {index}: {error} (a different model or decodelab version?)"
                ) from None
        return session

    def redo(self, token: dict, config: GenerationConfig | None = None) -> Step:
        """Make a saved token again (see `redoing`): after `undo`, `redo` of the removed tokens' `save()` entries
        brings back the very same tokens."""
        return run_alone(self.redoing(token, config))

    def redoing(self, token: dict, config: GenerationConfig | None = None) -> Generator[Work, None, Step]:
        """Make a saved token again: `token` is an entry of `save()`'s tokens, {id, draw, config?}, made under its
        own config or else `config` (default: the session's). A forced one (draw None) is appended; a drawn one
        is chosen by its draw number, so the same token comes back. One that does not is taken back and raises."""
        if "config" in token:
            config = GenerationConfig.from_dict({**token["config"], "seed": self.seed})
        if config is not None and config != self.config:
            self.configure(config)
        if token["draw"] is None:
            return (yield from self.appending(token["id"]))
        self._next_draw = max(self._next_draw, token["draw"] + 1)
        step = yield from self._advancing(None, token["draw"])
        if step.token_id != token["id"]:
            self.undo(1)
            raise DecodelabError(f"draw {token['draw']} chose token {step.token_id}, not the saved {token['id']}")
        return step

    def _advancing(self, forced: int | None, draw: int | None) -> Generator[Work, None, Step]:
        if self._state.room == 0:
            raise BadInput(f"the context is full ({self.decoder.context_length} tokens): undo or start over")
        raw = self._state.logits  # (1, V)
        history = self._history(draw)
        final, reports = self._chain.traced(raw, history)
        memory = None  # a forced token leaves the stateful stages' memory as it was: they did not choose it
        if forced is not None:
            check_constraint_allows(self._chain, history, forced, self.decoder.tokenizer)
            token = forced
        else:
            assert draw is not None  # a chosen token has its draw number
            chosen = select(final, self.config.is_greedy, [self.seed], draw)  # (1,)
            token = int(chosen[0])
            memory = self._chain.remember(history, final, chosen) if self._chain.stateful else None
        step = make_step(
            self.decoder.tokenizer,
            raw[0],
            final[0],
            token,
            len(self.steps),
            self.config.top_n,
            True,
            reports[0],
            forced=forced is not None,
            stop_ids=self.stop_ids,
        )
        self.steps.append(step)
        self._draws.append(draw)
        self._configs.append(self.config)
        yield self._state.push(self._state.ids.new_tensor([token]), memory)
        return step

    def _history(self, draw: int | None) -> History:
        """What the stages read for draw number `draw` (None: a forced token, no draw)."""
        return self._state.seeded_history([None if draw is None else draw_seed(self.seed, draw)])

    @property
    def memory(self) -> dict[str, torch.Tensor]:
        """The stateful stages' memory now (e.g. mirostat's mu), per stage name: (1, ...) tensors."""
        return dict(self._state.memory)
