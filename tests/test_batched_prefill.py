"""Scored prompts prefilled together: `run_prefills_together` (one padded forward for the first chunks of several
prompts), a generation that scores its prompt from its own prefill (`Generation(prompt_logprobs=)`), and the
server's scheduler batching the prompts of echo requests that arrive together.

The reference is each prompt's own prefill, and `score_ids` (decodelab's scoring, itself checked against a
transformers forward in tests/test_scoring.py). A row's logits in a padded batch differ from its own forward only
by the float32 matmuls' summation order at another batch shape: ~5e-5 measured, 1e-4 allowed (the remote
engines issue's bar)."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest
import torch

from decodelab.engine import Generation
from decodelab.generation_config import GenerationConfig
from decodelab.prompt_logprobs import PromptScorer, prompt_scoring
from decodelab.scoring import score_ids
from decodelab.server.runner import Runner
from decodelab.work import PrefillChunk, run_prefills_together

CLOSE = 1e-4  # logits and logprobs of a row in a padded batch against its own forward
TEXTS = ["The capital of France is", " Note 3: a few words about the sea.", "한국의 수도는 서울입니다. 그리고", "1, 2,"]


def ids_of(bundled, text: str) -> list[int]:
    return bundled.tokenizer.encode(text)


def test_prompts_prefilled_together_equal_their_own_prefills_and_their_caches_continue(bundled):
    backend = bundled.backend
    prompts = [torch.tensor([ids_of(bundled, text)]) for text in TEXTS]  # lengths differ: rows are padded
    alone = [PrefillChunk(backend, ids, backend.new_cache(1), keep_all=True) for ids in prompts]
    for chunk in alone:
        chunk.run()
    together = [PrefillChunk(backend, ids, backend.new_cache(1), keep_all=i != 1) for i, ids in enumerate(prompts)]
    run_prefills_together(together)
    following = torch.tensor([[ids_of(bundled, " and")[0]]])  # (1, 1): one more token through each cache
    for i, (own, batched) in enumerate(zip(alone, together)):
        assert batched.cache.length == own.cache.length == prompts[i].shape[1]
        assert torch.allclose(batched.logits, own.logits, atol=CLOSE, rtol=0)
        if i == 1:
            assert batched.all_logits is None  # not asked for
        else:
            assert batched.all_logits.shape == own.all_logits.shape  # (1, T, V): its own length, no padding
            assert torch.allclose(batched.all_logits, own.all_logits, atol=CLOSE, rtol=0)
        after_own = backend.forward(following, own.cache)[:, -1]  # (1, V)
        after_batched = backend.forward(following, batched.cache)[:, -1]
        assert torch.allclose(after_batched, after_own, atol=CLOSE, rtol=0)


def test_only_first_one_row_chunks_can_be_prefilled_together(bundled):
    backend = bundled.backend
    prompt = torch.tensor([ids_of(bundled, TEXTS[0])])
    started = backend.new_cache(1)
    backend.forward(prompt, started)  # this cache holds a prompt already: a later chunk continues it
    assert not PrefillChunk(backend, prompt, started).starts_alone
    assert not PrefillChunk(backend, prompt.repeat(2, 1), backend.new_cache(2)).starts_alone
    with pytest.raises(ValueError, match="starts_alone"):
        run_prefills_together(
            [PrefillChunk(backend, prompt, backend.new_cache(1)), PrefillChunk(backend, prompt, started)]
        )


@pytest.mark.parametrize("chunk", [None, 4])  # one chunk, or several (the scorer reads each as it comes)
def test_a_generation_scores_its_prompt_from_its_own_prefill(bundled, chunk):
    ids = ids_of(bundled, TEXTS[2])
    generation = Generation(
        bundled, ids, GenerationConfig(temperature=0, max_new_tokens=2), prefill_chunk=chunk, prompt_logprobs=3
    )
    generation.run()
    reference = score_ids(bundled, ids, 1, top_n=3).tokens
    assert [token.id for token in generation.prompt_scores] == ids[1:]
    assert [token.logprob for token in generation.prompt_scores] == pytest.approx(
        [t.logprob for t in reference],
        abs=1e-5 if chunk is None else CLOSE,  # chunks of 4: other matmul shapes
    )
    for scored, expected in zip(generation.prompt_scores, reference):
        assert [alt.id for alt in scored.alternatives] == [alt.id for alt in expected.alternatives]
    plain = Generation(bundled, ids, GenerationConfig(temperature=0, max_new_tokens=2))
    assert plain.run()[0].token_ids == generation.results[0].token_ids  # scoring changes nothing generated
    assert plain.prompt_scores == []


def test_the_scheduler_prefills_scored_prompts_that_wait_together_in_one_forward(bundled):
    """The model thread is held by a call while four scoring tasks arrive, so they start in one tick."""
    prompts = [ids_of(bundled, text) for text in TEXTS]

    async def scenario() -> tuple[list, int, int]:
        runner = Runner(max_batch=8, prefill_chunk=256)
        try:
            gate = threading.Event()
            held = asyncio.ensure_future(runner.call(gate.wait, 120))
            starts = [asyncio.ensure_future(runner.start(prompt_scoring(bundled.decoder, ids, 2))) for ids in prompts]
            await asyncio.sleep(0)  # each start submits its task before it first waits
            gate.set()
            await held
            results = []
            for start in starts:
                stream = await start
                results.append([output async for output in stream][-1])
            return results, runner.stats.batched_prefills, runner.stats.steps
        finally:
            runner.shutdown()

    results, batched, _ = asyncio.run(scenario())
    assert batched == len(prompts)
    for ids, scores in zip(prompts, results):
        expected = score_ids(bundled, ids, 1, top_n=2).tokens
        assert [token.id for token in scores] == ids[1:]
        assert [token.logprob for token in scores] == pytest.approx([t.logprob for t in expected], abs=CLOSE)


def test_a_prompt_scorer_ignores_the_row_past_the_prompt(bundled):
    ids = ids_of(bundled, TEXTS[0])
    scorer = PromptScorer(bundled.tokenizer, ids, 0)
    logits = bundled.backend.forward(torch.tensor([ids]), bundled.backend.new_cache(1))[0]  # (T, V)
    scorer(0, logits)
    assert [token.id for token in scorer.tokens] == ids[1:] and all(t.alternatives == () for t in scorer.tokens)


def test_concurrent_echo_requests_each_get_their_prompts_logprobs(server, bundled):
    """lm-evaluation-harness's loglikelihood requests, eight at once: each answer is its own prompt's scores."""
    texts = [f" Note {n}: a few words about {TEXTS[n % len(TEXTS)]}" for n in range(8)]

    async def send_all() -> list[dict]:
        async with httpx.AsyncClient(base_url=server.url, timeout=300) as client:
            replies = await asyncio.gather(
                *(
                    client.post(
                        "/v1/completions",
                        json={
                            "model": bundled.name,
                            "prompt": text,
                            "echo": True,
                            "max_tokens": 1,
                            "logprobs": 1,
                            "temperature": 0,
                        },
                    )
                    for text in texts
                )
            )
        return [reply.raise_for_status().json() for reply in replies]

    for text, reply in zip(texts, asyncio.run(send_all())):
        ids = ids_of(bundled, text)
        logprobs = reply["choices"][0]["logprobs"]
        assert logprobs["token_logprobs"][0] is None
        expected = [t.logprob for t in score_ids(bundled, ids, 1).tokens]
        assert logprobs["token_logprobs"][1 : len(ids)] == pytest.approx(expected, abs=CLOSE)
        assert reply["choices"][0]["text"].startswith(text)
