"""The token view: text split into records a person can read (id, piece, bytes, span, special)."""

from __future__ import annotations

import codecs
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, overload

from decodelab import views
from decodelab.tokenizer import Tokenizer

if TYPE_CHECKING:
    import pandas


def _hex_bytes(error: UnicodeDecodeError) -> tuple[str, int]:
    """Codec error handler: show each byte that is not a whole UTF-8 character as `<0xEA>`."""
    bad = error.object[error.start : error.end]
    return "".join(f"<0x{byte:02X}>" for byte in bad), error.end


codecs.register_error("decodelab-hex", _hex_bytes)  # type: ignore[arg-type]  # called with decode errors only

# Whitespace as symbols, other control characters (invisible, or a box in most fonts) as their byte value.
_SYMBOLS = {" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"}
_VISIBLE = str.maketrans(
    {code: f"<0x{code:02X}>" for code in [*range(0x20), 0x7F]} | {ord(char): shown for char, shown in _SYMBOLS.items()}
)


def readable_piece(raw: bytes) -> str:
    """Text of a token's bytes; bytes that are only part of a character appear as `<0xEA><0xB0>`, never '�'."""
    return raw.decode("utf-8", errors="decodelab-hex")


def visible(piece: str) -> str:
    """A piece with its whitespace and control characters made visible, for tables: ' the' -> '␣the',
    '\\n' -> '↵', '\\x11' -> '<0x11>'."""
    return piece.translate(_VISIBLE)


@dataclass(frozen=True)
class Token:
    id: int
    piece: str  # readable text of the token (real spaces; partial characters as <0xNN>)
    raw: bytes  # exact bytes the token contributes to the decoded text
    start: int  # [start, end) character span in the tokenized text
    end: int
    special: bool  # a control token such as <|im_end|>

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "piece": self.piece,
            "bytes": self.raw.hex(),
            "start": self.start,
            "end": self.end,
            "special": self.special,
        }


class TokenView(Sequence[Token]):
    """The tokens of one text, in order; `ids` feed the model, `table()` is what `decodelab tokens` prints."""

    def __init__(self, text: str, tokens: list[Token]):
        self.text = text
        self.tokens = tokens

    @overload
    def __getitem__(self, index: int) -> Token: ...
    @overload
    def __getitem__(self, index: slice) -> list[Token]: ...
    def __getitem__(self, index):
        return self.tokens[index]

    def __len__(self) -> int:
        return len(self.tokens)

    def __iter__(self) -> Iterator[Token]:
        return iter(self.tokens)

    def __repr__(self) -> str:
        return f"TokenView({len(self)} tokens: {[token.piece for token in self.tokens][:8]}...)"

    @property
    def ids(self) -> list[int]:
        return [token.id for token in self.tokens]

    @property
    def pieces(self) -> list[str]:
        return [token.piece for token in self.tokens]

    def to_dict(self) -> dict:
        return {"text": self.text, "tokens": [token.to_dict() for token in self.tokens]}

    def table(self) -> str:
        """Aligned `index  id  token` rows; special tokens are marked with `*`."""
        width = max((len(str(token.id)) for token in self.tokens), default=2)
        rows = [f"{'#':>4}  {'id':>{width}}  token"]
        for index, token in enumerate(self.tokens):
            mark = " *" if token.special else ""
            rows.append(f"{index:>4}  {token.id:>{width}}  {visible(token.piece)}{mark}")
        return "\n".join(rows)

    def _repr_html_(self) -> str:
        """Jupyter: one chip per token with its id; special tokens marked."""
        return views.html(self)

    def to_pandas(self) -> pandas.DataFrame:
        """One row per token: id, piece, bytes (hex), start, end, special, and `text`: the characters its span
        covers (a Korean syllable split over several tokens shows on each of them). Needs pandas."""
        return views.frame(self)


def tokenize(tokenizer: Tokenizer, text: str, add_special_tokens: bool = True) -> TokenView:
    """Split `text` into `Token` records with the model's tokenizer."""
    ids, spans = tokenizer.encode_with_offsets(text, add_special_tokens=add_special_tokens)
    tokens = []
    for token_id, (start, end) in zip(ids, spans):
        raw = tokenizer.token_bytes(token_id)
        tokens.append(Token(token_id, readable_piece(raw), raw, start, end, tokenizer.is_special(token_id)))
    return TokenView(text, tokens)


def token_piece(tokenizer: Tokenizer, token_id: int) -> str:
    """The readable piece of one id (e.g. a generated token)."""
    return readable_piece(tokenizer.token_bytes(token_id))
