"""OpenAI's response objects for one request: whole, or as stream chunks.

A request has one or more prompts (`Part`s; chat has one), each answered by `n` choices: choice `p * n + j` is
prompt p's j-th (prompt-major, as OpenAI and vLLM order them). With `echo`, a choice's text starts with its
prompt and its `logprobs` lists the prompt's tokens (scored by `decodelab.scoring`) before the new ones.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from decodelab.records import Result, Step, StopReason
from decodelab.server.errors import in_band_error
from decodelab.server.openai_logprobs import TextOffsets, TokenLogprob, chat_logprobs, completion_logprobs
from decodelab.server.sse import event

if TYPE_CHECKING:
    from decodelab.engine import Generation
    from decodelab.model import LM
    from decodelab.server.runner import Ticket
    from decodelab.server.tool_calls import CallParser, ToolPlan


@dataclass
class Part:
    """One prompt of a request: its ids, its generation (None when max_tokens is 0), and what echo shows."""

    ids: list[int]
    generation: Generation | None
    echo_text: str = ""  # the prompt, when echoed: every choice's text starts with it
    echoed: list[TokenLogprob] | None = None  # the prompt's tokens for `logprobs`, when echoed with logprobs


def finish_reason(reason: StopReason, called: bool = False) -> str:
    """OpenAI's word for why a choice ended: "stop" (a stop token or string, or a complete constrained output),
    "tool_calls" when that output is tool calls, "length" when it was cut."""
    if reason.kind not in ("stop_token", "stop_string", "constraint_complete"):
        return "length"
    return "tool_calls" if called else "stop"


def listed(step: Step, chat: bool) -> bool:
    """Whether a step is in `logprobs`: every generated token in legacy completions, a stop token included (as
    vLLM lists it, and lm-eval's loglikelihood reads one entry per generated token); in chat, the text's tokens
    (as OpenAI's chat does). A stop token is never part of the text."""
    return not (chat and step.is_stop)


def system_fingerprint(lm: LM) -> str:
    """'decodelab-0.1.0' on the exact path; a fast mode adds itself: 'decodelab-0.1.0-float32-int8-compiled'."""
    from decodelab import __version__

    mode = lm.mode
    if mode.exact:
        return f"decodelab-{__version__}"
    parts = [f"decodelab-{__version__}", mode.dtype]
    if mode.quantization != "none":
        parts.append(mode.quantization)
    if mode.compiled:
        parts.append("compiled")
    return "-".join(parts)


class Reply:
    """Turns a request's Parts into OpenAI's response objects; `top` is None when no logprobs were asked for."""

    def __init__(
        self,
        lm: LM,
        parts: list[Part],
        n: int,
        kind: str,
        top: int | None,
        tools: ToolPlan | None = None,
        as_ids: bool = False,
    ):
        self.lm, self.parts, self.n, self.kind, self.top = lm, parts, n, kind, top
        self.as_ids = as_ids  # tokens in logprobs written as vLLM's "token_id:123"
        self.chat = kind == "chat.completion"
        # with tools, each chat choice's text is read for calls (decodelab.server.tool_calls)
        self._calls: list[CallParser] | None = [tools.parser() for _ in range(n)] if tools else None
        self.id = ("chatcmpl-" if self.chat else "cmpl-") + secrets.token_urlsafe(18)
        self.created = int(time.time())
        self._offsets = [TextOffsets() for _ in range(len(parts) * n)]  # per choice, for streamed text_offset
        self._generated = 0  # tokens delivered so far, stop tokens included (as usage counts them)

    def _envelope(self, choices: list[dict], chunk: bool = False) -> dict:
        return {
            "id": self.id,
            "object": self.kind + (".chunk" if chunk and self.chat else ""),
            "created": self.created,
            "model": self.lm.name,
            "system_fingerprint": system_fingerprint(self.lm),
            "choices": choices,
        }

    def _results(self) -> list[Result]:
        return [result for part in self.parts if part.generation for result in part.generation.results]

    def usage(self, completion_tokens: int | None = None) -> dict:
        prompt = sum(len(part.ids) for part in self.parts)
        if completion_tokens is None:
            completion_tokens = sum(len(result.token_ids) for result in self._results())
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt + completion_tokens,
        }

    def _logprobs(self, entries: list[TokenLogprob], offsets: TextOffsets) -> dict | None:
        if self.top is None:
            return None
        if self.chat:
            return chat_logprobs(entries, self.as_ids)
        return completion_logprobs(entries, self.top, offsets, self.as_ids)

    def _entries(self, steps: list[Step]) -> list[TokenLogprob]:
        return [TokenLogprob.of_step(step, self.top or 0) for step in steps]

    def complete(self) -> dict:
        choices = []
        for p, part in enumerate(self.parts):
            for row in range(self.n):
                entries, text, finish = list(part.echoed or []), part.echo_text, "length"
                if part.generation is not None:
                    result = part.generation.results[row]
                    entries += self._entries([step for step in result.steps if listed(step, self.chat)])
                    text, finish = text + result.text, finish_reason(result.stop_reason)
                logprobs = self._logprobs(entries, TextOffsets())
                choice: dict[str, Any] = {"index": p * self.n + row, "finish_reason": finish, "logprobs": logprobs}
                if self.chat:
                    choice["message"] = {"role": "assistant", "content": text, "refusal": None}
                    if self._calls is not None and part.generation is not None:
                        calls = self._calls[row]
                        calls.feed(text)
                        calls.finish()
                        choice["message"]["content"] = calls.message_content()
                        if calls.calls:
                            choice["message"]["tool_calls"] = calls.calls
                        choice["finish_reason"] = finish_reason(result.stop_reason, bool(calls.calls))
                else:
                    choice["text"] = text
                choices.append(choice)
        return {**self._envelope(choices), "usage": self.usage()}

    def _chunk(
        self,
        index: int,
        text: str | None,
        entries: list[TokenLogprob],
        finish: str | None = None,
        role: bool = False,
        usage: dict | None = None,
        delta: dict | None = None,
    ) -> str:
        """One chunk; `delta` (chat) overrides the delta `text` and `role` would make (a tool call's)."""
        logprobs = self._logprobs(entries, self._offsets[index]) if entries else None
        choice: dict = {"index": index, "logprobs": logprobs, "finish_reason": finish}
        if self.chat:
            choice["delta"] = (
                delta
                if delta is not None
                else {"role": "assistant", "content": ""}
                if role
                else {}
                if text is None
                else {"content": text}
            )
        else:
            choice["text"] = text or ""
        body = self._envelope([choice], chunk=True)
        if usage is not None:
            body["usage"] = usage
        return event(body)

    def _call_chunks(
        self, index: int, text: str, entries: list[TokenLogprob], usage: dict | None, last: bool = False
    ) -> list[str]:
        """A tool-reading choice's chunks for new text: its content and tool-call deltas (the logprobs ride on
        the first, or on an empty delta when the text is held back); `last` flushes what was held back."""
        calls = self._calls[index]  # type: ignore[index]  # only called with tools
        deltas = calls.feed(text) + (calls.finish() if last else [])
        if not deltas:
            return [self._chunk(index, None, entries, usage=usage, delta={})] if entries else []
        return [
            self._chunk(index, None, entries if at == 0 else [], usage=usage, delta=delta)
            for at, delta in enumerate(deltas)
        ]

    async def stream(
        self, steps: AsyncIterator[tuple[int, Step]], ticket: Ticket, include_usage: bool, continuous_usage: bool
    ) -> AsyncIterator[str]:
        """The chunks of (part, step) pairs as they come; the ticket ends when the generations are over, before
        the last chunks are sent. `continuous_usage` (vLLM's) puts the usage so far in every chunk."""
        n, shown = self.n, [0] * (len(self.parts) * self.n)

        def usage_so_far() -> dict | None:
            return self.usage(self._generated) if continuous_usage else None

        try:
            for p, part in enumerate(self.parts):
                for row in range(n):
                    if self.chat:
                        yield self._chunk(p * n + row, None, [], role=True, usage=usage_so_far())
                    elif part.echo_text:
                        yield self._chunk(p * n + row, part.echo_text, part.echoed or [], usage=usage_so_far())
            async for p, step in steps:
                self._generated += 1
                generation = self.parts[p].generation
                assert generation is not None  # only parts that generate have steps
                index = p * n + step.row
                if step.is_stop:  # not part of the text; listed in legacy logprobs
                    if self.top is not None and listed(step, self.chat):
                        yield self._chunk(index, "", self._entries([step]), usage=usage_so_far())
                    continue
                safe = generation.safe_text(step.row)
                delta, shown[index] = safe[shown[index] :], max(shown[index], len(safe))
                if self._calls is not None:
                    for chunk in self._call_chunks(
                        index, delta, self._entries([step]) if self.top is not None else [], usage_so_far()
                    ):
                        yield chunk
                elif delta or self.top is not None:
                    yield self._chunk(index, delta, self._entries([step]), usage=usage_so_far())
            ticket.end("completed")
            for p, part in enumerate(self.parts):
                for row in range(n):
                    index, rest, finish = p * n + row, "", "length"
                    if part.generation is not None:
                        result = part.generation.results[row]
                        rest, finish = result.text[shown[index] :], finish_reason(result.stop_reason)
                    if self._calls is not None:
                        for chunk in self._call_chunks(index, rest, [], usage_so_far(), last=True):
                            yield chunk
                        calls = bool(self._calls[index].calls)
                        if part.generation is not None:
                            finish = finish_reason(part.generation.results[row].stop_reason, calls)
                        yield self._chunk(index, None, [], finish=finish, usage=usage_so_far())
                        continue
                    text = rest if (rest or not self.chat) else None
                    yield self._chunk(index, text, [], finish=finish, usage=usage_so_far())
            if include_usage:
                yield event({**self._envelope([], chunk=True), "usage": self.usage()})
            yield event("[DONE]")
        except Exception as error:  # headers are sent: report in-band, as OpenAI does
            ticket.end("failed")
            yield event(in_band_error(error))
