"""What the session routes answer and how they take a request's config: a session's state, its steps as records
(each saying how it was chosen), its next-token payload for the page.

A step record is `Step.to_dict()` and how the step was made (`Session.how_chosen`):

    "how": "greedy" | "sampled" | "forced"   "draw": its draw number (null: forced)
    "seed": the draw's seed (sampled only)   "settings": the GenerationConfig values that differ from the defaults

so `{"id": step.id, "draw": step.draw, "config": step.settings}` is the entry that redoes it (POST .../redo).
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING

from decodelab.errors import BadInput
from decodelab.generation_config import GenerationConfig
from decodelab.server.explorer_schemas import TOP_FOR_PAGE, AppendRequest, StepRequest, make_generation_config
from decodelab.server.sse import finite

if TYPE_CHECKING:
    from decodelab.records import Step
    from decodelab.server.sessions import LiveSession
    from decodelab.session import Session


def encode_logits(logits) -> str:
    """(V,) tensor -> base64 of little-endian float32 values (what the page decodes into a Float32Array)."""
    return base64.b64encode(logits.detach().float().cpu().numpy().astype("<f4").tobytes()).decode("ascii")


def next_payload(session: Session, top: int = TOP_FOR_PAGE) -> dict | None:
    """The next-token distribution of a session: raw logits for the page, top candidates raw and after."""
    if session.stop_reason is not None and session.stop_reason.kind == "context_full":
        return None
    raw = session.distribution()
    after = session.distribution(after_samplers=True)
    payload = {
        "vocab_size": int(raw.logits.numel()),
        "logits": encode_logits(raw.logits),
        "entropy": raw.entropy,  # on a remote model, its upper bound (see entropy_bounds)
        "top": [candidate.to_dict() for candidate in raw.top(top)],
        "after": [{**c.to_dict(), "raw_prob": raw.prob(c.id)} for c in after.top(top) if c.prob > 0],
    }
    if raw.reported is not None:  # a remote server's top tokens: which they are, and what is not known
        reported_ids = raw.reported.nonzero().flatten().tolist()
        payload |= {
            "reported": len(reported_ids),
            "reported_ids": reported_ids,  # the page's chain keeps these only, as the server's `reported` stage
            "known_mass": raw.known_mass,
            "entropy_bounds": list(raw.entropy_bounds),
        }
    return payload


def step_record(session: Session, step: Step) -> dict:
    """A session's step as the routes send it: the Step's own fields, and how it was chosen."""
    return step.to_dict() | session.how_chosen(step.index).to_dict()


def session_state(live: LiveSession, top: int = TOP_FOR_PAGE) -> dict:
    session = live.session
    reason = session.stop_reason
    return finite(
        {
            "id": live.id,
            "prompt": {"ids": session.prompt_ids, "tokens": live.prompt_tokens},
            "steps": [step_record(session, step) for step in session.steps],
            "text": session.text,
            "full_text": session.full_text,
            "stop_reason": reason.to_dict() | {"text": str(reason)} if reason else None,
            "config": session.config.to_dict(),
            "seed": session.seed,
            "next": next_payload(session, top),
        }
    )


def requested_config(session: Session, body: StepRequest | AppendRequest) -> GenerationConfig:
    """The config a step, an append or a look at the distribution asks for: `body.config` in place of the
    session's own when sent, with `body.greedy`. A constraint it brings must allow what was generated so far."""
    config = session.config
    if body.config is not None:
        config = make_generation_config(body.config, GenerationConfig(seed=session.seed))
    if body.greedy is not None:
        config = config.with_(greedy=body.greedy)
    if config.constraint is not None and config.constraint != session.config.constraint and session.steps:
        check_constraint_fits(session, config)
    return config


def check_constraint_fits(session: Session, config: GenerationConfig) -> None:
    """A constraint taken on mid-session applies to the whole output: the tokens generated so far must be a
    start it allows."""
    try:
        config.chain(session.decoder).complete(session.token_ids)
    except BadInput:
        kind = config.constraint.kind if config.constraint is not None else "new"
        count = len(session.steps)
        raise BadInput(
            f"the text generated so far ({session.text[-40:]!r}, {count} token{'s' if count != 1 else ''}) does not "
            f"match the {kind.replace('_', ' ')} constraint: undo it, or start over, to apply the constraint"
        ) from None


def configure(session: Session, body: StepRequest | AppendRequest) -> None:
    config = requested_config(session, body)
    if config != session.config:  # the same config keeps the chain, and the grammar's matchers, as they are
        session.configure(config)


def check_can_continue(session: Session) -> None:
    reason = session.stop_reason
    if reason is not None and reason.kind == "context_full":
        raise BadInput(f"the context is full ({session.decoder.context_length} tokens): undo some tokens or start over")
