"""The real GPT-2 tokenizer, rebuilt offline from the `gpt2.tiktoken` rank file that openai-whisper ships.

The file lists every token's bytes (base64) with its rank; the rank is the GPT-2 id. A byte-level BPE
needs the vocabulary in GPT-2's printable byte alphabet plus the merge list, and the merge that makes a
token is found by running BPE on its bytes with only lower-ranked merges allowed (as tiktoken does).
"""

from __future__ import annotations

import base64
import importlib.util
from functools import lru_cache
from itertools import pairwise
from pathlib import Path

import transformers
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

END_OF_TEXT = "<|endoftext|>"
END_OF_TEXT_ID = 50256


def rank_file() -> Path:
    """`whisper/assets/gpt2.tiktoken` in the installed openai-whisper package (not imported: its deps are absent)."""
    spec = importlib.util.find_spec("whisper")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / "assets" / "gpt2.tiktoken"
        if path.is_file():
            return path
    raise FileNotFoundError(
        "whisper/assets/gpt2.tiktoken not found: run `make test` (it installs openai-whisper with --no-deps)"
    )


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in for each byte: printable Latin-1 bytes map to themselves, the rest to 256+."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    stand_ins = {byte: chr(byte) for byte in printable}
    for shift, byte in enumerate(byte for byte in range(256) if byte not in printable):
        stand_ins[byte] = chr(256 + shift)
    return stand_ins


def read_ranks(path: Path) -> dict[bytes, int]:
    """`<base64 token bytes> <rank>` lines as {token bytes: rank}."""
    ranks = {}
    for line in path.read_text().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def merge_pair(ranks: dict[bytes, int], token: bytes) -> tuple[bytes, bytes]:
    """The two parts BPE joins last to make `token`, using only merges ranked below the token itself."""
    parts = [bytes([byte]) for byte in token]
    while len(parts) > 2:
        # Join the adjacent pair whose union has the lowest rank, as the encoder would.
        candidates = [(ranks.get(a + b), i) for i, (a, b) in enumerate(pairwise(parts))]
        _, i = min((rank, i) for rank, i in candidates if rank is not None and rank < ranks[token])
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
    return parts[0], parts[1]


@lru_cache(maxsize=1)
def gpt2_tokenizer() -> transformers.PreTrainedTokenizerFast:
    """GPT-2's byte-level BPE tokenizer (ids identical to the Hub's `gpt2`), built in about a second."""
    ranks = read_ranks(rank_file())
    alphabet = bytes_to_unicode()

    def printable(token: bytes) -> str:
        return "".join(alphabet[byte] for byte in token)

    vocab = {printable(token): rank for token, rank in ranks.items()}
    by_rank = sorted((rank, token) for token, rank in ranks.items() if len(token) > 1)
    merges = [tuple(map(printable, merge_pair(ranks, token))) for _, token in by_rank]

    # The same pipeline as GPT-2's tokenizer.json: BPE model, byte-level split/decode, offsets kept untrimmed.
    backend = Tokenizer(models.BPE(vocab, merges))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    backend.add_special_tokens([AddedToken(END_OF_TEXT, special=True, normalized=False)])
    if backend.token_to_id(END_OF_TEXT) != END_OF_TEXT_ID:
        raise RuntimeError(f"{END_OF_TEXT} got id {backend.token_to_id(END_OF_TEXT)}, expected {END_OF_TEXT_ID}")
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token=END_OF_TEXT, bos_token=END_OF_TEXT, unk_token=END_OF_TEXT
    )
