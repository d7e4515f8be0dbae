"""How far a fast mode's numbers are from the exact path's: the fidelity table of README "Fast modes".

The reference model writes a greedy continuation of each prompt; the fast model then reads the same tokens
(teacher forcing, so one early disagreement does not derail the rest) and both distributions are compared at
every step:

- top-1 agreement: the share of steps where both would pick the same token greedily;
- mean KL(reference || fast) in nats: how much probability mass moved, averaged over steps;
- max |delta logprob|: the largest change in the log-probability of the token the reference chose.

    from decodelab.fidelity import measure_fidelity
    exact, fast = decodelab.load(), decodelab.load(quantize="int4")
    print(measure_fidelity(exact, fast, ["The capital of France is"], steps=20))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from decodelab.decoding import prefill

# Varied prompts (English prose, Korean, code, a chat turn) for the bench and the tests.
FIDELITY_PROMPTS = (
    "Once upon a time, in a small village at the edge of a great forest, there lived",
    "대한민국의 수도는 서울이고, 서울에서 가장 유명한 곳은",
    "def fibonacci(n):\n    ",
    "<|im_start|>user\nWhat is the boiling point of water?<|im_end|>\n<|im_start|>assistant\n",
)


@dataclass(frozen=True)
class Fidelity:
    steps: int  # decode steps compared
    top1_agreement: float  # share of steps with the same argmax, in [0, 1]
    mean_kl: float  # mean KL(reference || fast) over steps, nats
    max_logprob_delta: float  # max over steps of |logprob_fast - logprob_reference| of the reference's token

    def __str__(self) -> str:
        return (
            f"{self.steps} steps: top-1 agreement {self.top1_agreement:.1%}, mean KL {self.mean_kl:.2e} nats, "
            f"max |delta logprob| {self.max_logprob_delta:.3f}"
        )


def reference_continuations(lm, prompts: Sequence[str], steps: int) -> list[list[int]]:
    """Each prompt's ids followed by `steps` greedy tokens of `lm` (stop tokens ignored)."""
    runs = []
    for prompt in prompts:
        ids = lm.prompt_ids(prompt)
        result = lm.generate(ids, greedy=True, max_new_tokens=steps, stop_token_ids=(), trace=False)
        runs.append(ids + list(result.token_ids))
    return runs


def step_logprobs(lm, sequence: list[int], steps: int) -> torch.Tensor:
    """(steps, V) log-probabilities of `lm` for the last `steps` tokens of `sequence`, read one step at a time
    through the KV cache, as decoding reads them (so a compiled decode step is what gets measured)."""
    backend = lm.backend
    prompt = torch.tensor([sequence[:-steps]], device=backend.device)
    cache = backend.new_cache(1)
    logits = [prefill(backend, prompt, cache)]  # (1, V)
    for token in sequence[-steps:-1]:
        logits.append(backend.forward(torch.tensor([[token]], device=backend.device), cache)[:, -1])
    return torch.cat(logits).float().log_softmax(dim=-1)  # (steps, V)


class FidelityReference:
    """The exact path's side of the comparison, computed once: each prompt's greedy continuation and the
    reference log-probabilities along it; `compare` measures any number of fast models against it."""

    def __init__(self, reference, prompts: Sequence[str] = FIDELITY_PROMPTS, steps: int = 50):
        self.steps = steps
        self.sequences = reference_continuations(reference, prompts, steps)
        self.logprobs = [step_logprobs(reference, sequence, steps) for sequence in self.sequences]  # (S, V) each

    def compare(self, fast) -> Fidelity:
        agree, kl, delta, count = 0, 0.0, 0.0, 0
        for sequence, exact in zip(self.sequences, self.logprobs):
            approx = step_logprobs(fast, sequence, self.steps)  # (S, V)
            chosen = torch.tensor(sequence[-self.steps :])  # (S,) the reference's greedy tokens
            agree += int((approx.argmax(dim=-1) == exact.argmax(dim=-1)).sum())
            kl += float((exact.exp() * (exact - approx)).nan_to_num().sum())  # 0 * log 0 terms count 0
            moved = (approx.gather(1, chosen[:, None]) - exact.gather(1, chosen[:, None])).abs()
            delta = max(delta, float(moved.max()))
            count += self.steps
        return Fidelity(count, agree / count, kl / count, delta)


def measure_fidelity(reference, fast, prompts: Sequence[str] = FIDELITY_PROMPTS, steps: int = 50) -> Fidelity:
    """Compare `fast` against `reference` (two loaded LMs with one tokenizer) on `steps` steps of each prompt."""
    return FidelityReference(reference, prompts, steps).compare(fast)
