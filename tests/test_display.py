"""Notebook views: HTML that shows the records' content, escapes every text, needs no network; pandas tables."""

import html
import re
import sys

import pytest

import decodelab
from decodelab.compare import Comparison, Outcome, Strategy, compare, comparison_table, parse_strategies
from decodelab.display import SPECIAL_CHIP, STATUS_STYLE, shade
from decodelab.records import Alternative, Result, Step, StopReason

ATTACK = "<script>alert('x')</script>"


def visible_text(markup: str) -> str:
    """What a reader sees: tags (and their attributes) removed, entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", "", markup))


def assert_self_contained(markup: str) -> None:
    assert "<script" not in markup.lower()
    assert not re.search(r"""(src|href)\s*=|@import|url\(""", markup)  # nothing fetched: works offline


def step(index: int, piece: str, prob: float, token_id: int = 100, **extra) -> Step:
    return Step(
        index=index,
        token_id=token_id,
        piece=piece,
        prob=prob,
        raw_prob=prob,
        logprob=-1.0,
        rank=1,
        entropy=1.0,
        **extra,
    )


def test_token_view_chips_with_ids_specials_marked_and_text_escaped(bundled):
    view = bundled.chat_tokens(ATTACK)
    markup = view._repr_html_()
    assert_self_contained(markup)
    assert "&lt;" in markup and "alert" in markup
    assert markup.count(SPECIAL_CHIP) == sum(token.special for token in view) >= 2  # <|im_start|>, <|im_end|>
    for token in view:
        assert f">{token.id}</span>" in markup
    assert "&lt;|im_start|&gt;" in markup
    frame = view.to_pandas()
    assert frame["id"].tolist() == view.ids and frame["special"].sum() == sum(t.special for t in view)
    korean = bundled.tokenize("안녕").to_pandas()
    assert set(korean["text"]) <= {"안", "녕"} and "".join(dict.fromkeys(korean["text"])) == "안녕"


def test_distribution_table_with_bars_and_an_escaped_prompt(bundled):
    dist = bundled.next_token_distribution(ATTACK + " The capital of France is")
    markup = dist._repr_html_()
    assert_self_contained(markup)
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in markup
    top = dist.top(10)
    assert markup.count("<tr>") == 1 + len(top)
    widths = [float(w) for w in re.findall(r"width:([\d.]+)%", markup)]
    assert widths == pytest.approx([100 * c.prob / top[0].prob for c in top], abs=0.06)
    assert f"{top[0].prob:.2%}" in markup
    frame = dist.to_pandas(4)
    assert frame["id"].tolist() == [c.id for c in dist.top(4)]
    assert frame["prob"].tolist() == pytest.approx([c.prob for c in dist.top(4)])


def test_trace_shades_each_token_by_its_probability_with_alternatives_on_hover():
    alternatives = (Alternative(7, "<b>", 0.5), Alternative(8, " cat", 0.25))
    steps = [
        step(0, "<b>", 0.5, raw_top=alternatives),
        step(1, " &", 0.9),  # '서' split over two tokens:
        step(2, "<0xEC>", 0.6, bytes=b"\xec"),
        step(3, "<0x84><0x9C>", 0.5, forced=True, bytes=b"\x84\x9c"),
        step(4, "<|im_end|>", 0.99, token_id=2, is_stop=True, special=True),
    ]
    result = Result("<b> &서", [s.token_id for s in steps], StopReason("stop_token", token_id=2), steps)
    markup = result._repr_html_()
    assert_self_contained(markup)
    spans = re.findall(r'<span style="background:(hsl\([^)]*\))[^"]*" title="([^"]*)">([^<]*)</span>', markup)
    assert [html.unescape(text) for _, _, text in spans] == ["<b>", " &", "서", "⏹<|im_end|>"]
    assert [colour for colour, _, _ in spans] == [shade(0.5), shade(0.9), shade(0.6 * 0.5), shade(0.99)]
    first_title = html.unescape(spans[0][1])
    assert "50.00% after the samplers" in first_title and "model's top: <b> (50.00%) | ␣cat (25.00%)" in first_title
    assert "appended by hand" in html.unescape(spans[2][1])
    assert "stopped by stop token 2" in markup


def test_model_text_that_reads_like_a_byte_shows_as_written():
    """A token whose text is "<0x41>" (six characters a model may well write) is not the byte 0x41: the view
    reads the bytes the Step recorded, never its readable piece."""
    steps = [step(0, "<0x41>", 0.5, bytes=b"<0x41>"), step(1, "<0xEA>", 0.5, bytes=b"\xea")]
    markup = Result("<0x41>", [100, 100], StopReason("max_new_tokens"), steps)._repr_html_()
    texts = re.findall(r'<span style="background:hsl\([^)]*\)[^"]*" title="[^"]*">([^<]*)</span>', markup)
    assert [html.unescape(text) for text in texts] == ["<0x41>", "\ufffd"]  # a lone lead byte cannot be shown


def test_a_real_generation_displays_its_steps(bundled):
    generation = bundled.generation("Once upon a time", greedy=True, max_new_tokens=6)
    assert "not run yet" in generation._repr_html_()
    result = generation.run()[0]
    assert generation._repr_html_() == result._repr_html_()
    assert visible_text(result._repr_html_()).startswith("6 tokens · stopped by max new tokens")
    assert result.text in visible_text(result._repr_html_())
    frame = result.to_pandas()
    assert frame["id"].tolist() == result.token_ids
    assert frame["prob"].tolist() == [s.prob for s in result.steps]
    assert frame["choices"][0] == result.steps[0].choices()


def test_comparison_is_still_a_list_and_displays_escaped_texts(bundled):
    outcomes = compare(bundled, bundled.prompt_ids("Once upon a time"), parse_strategies("greedy"), max_new_tokens=4)
    assert isinstance(outcomes, Comparison) and isinstance(outcomes, list) and len(outcomes) == 1
    assert outcomes.table() == comparison_table(outcomes)
    attack = Outcome(
        Strategy("<i>t</i>", "sample", {}), ATTACK, [1, 2], "max new tokens", -3.0, 4.5, 1.0, 2.0, 1.0, 1.0, 0.0
    )
    both = Comparison([*outcomes, attack])
    markup = both._repr_html_()
    assert_self_contained(markup)
    assert "&lt;script&gt;" in markup and "&lt;i&gt;t&lt;/i&gt;" in markup
    assert outcomes[0].text.strip() in visible_text(markup)
    frame = both.to_pandas()
    assert frame.index.tolist() == ["greedy", "<i>t</i>"]
    assert frame.loc["<i>t</i>", "perplexity"] == 4.5


def test_beam_result_lists_every_node_with_its_fate(bundled):
    beams = bundled.beam_search("The capital of France is", num_beams=2, max_new_tokens=3, num_return_sequences=2)
    markup = beams._repr_html_()
    assert_self_contained(markup)
    assert markup.count("<li>") == len(beams.tree.nodes)
    for status in ("kept", "pruned", "finished"):
        assert markup.count(f'<span style="{STATUS_STYLE[status]};') == sum(
            node.status == status for node in beams.tree.nodes
        )
    assert "★1" in markup and "★2" in markup
    for hypothesis in beams.sequences:
        assert html.escape(hypothesis.text) in markup
    nodes = beams.tree.to_pandas()
    assert nodes.index.tolist() == [node.id for node in beams.tree.nodes]
    assert nodes["status"].tolist() == [node.status for node in beams.tree.nodes]


def test_score_shows_korean_whole_and_the_table_matches(bundled):
    score = bundled.score("부산은 <항구> 도시입니다.", prompt="서울은 한국의 수도이고,")
    markup = score._repr_html_()
    assert_self_contained(markup)
    assert "부산은 &lt;항구&gt; 도시입니다." in re.sub(r"<span[^>]*>|</span>", "", markup)  # no <0xNN> pieces
    frame = score.to_pandas()
    assert frame["logprob"].sum() == pytest.approx(score.total_logprob)
    assert frame["id"].tolist() == [token.id for token in score.tokens]


def test_to_pandas_without_pandas_is_one_clear_error(bundled, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # `import pandas` now raises ImportError
    with pytest.raises(decodelab.DecodelabError, match="pandas is not installed: `pip install pandas`"):
        bundled.tokenize("hi").to_pandas()


def test_a_constrained_trace_marks_where_the_grammar_overruled_the_model(bundled):
    result = bundled.generate("Is the sky blue? Answer:", choice=[" yes", " no"], greedy=True)
    overruled = [step for step in result.steps if step.overruled_by]
    page = result._repr_html_()
    assert overruled and "the constraint forbade it" in page and "top choice was removed" in page
    plain = bundled.generate("Is the sky blue? Answer:", greedy=True, max_new_tokens=3)._repr_html_()
    assert "forbade" not in plain and "top choice was removed" not in plain
