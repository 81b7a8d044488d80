"""probformer.data.conllu: reading CoNLL-U (syntactic words only; errors that name the problem) and writing
a predicted tree back."""

from __future__ import annotations

from pathlib import Path

import pytest

from probformer.data.conllu import ConlluError, format_conllu, parse_conllu, read_conllu

FIXTURE = Path(__file__).parent / "data" / "tiny.conllu"


def test_conllu_reader_keeps_syntactic_words_only():
    sentences = read_conllu(FIXTURE)
    assert [s.sent_id for s in sentences] == ["s1", "s2", "s3"]
    assert sentences[0].words == ["The", "cat", "sat", "."] and sentences[0].heads == [2, 3, 0, 3]
    assert sentences[1].words == ["I", "do", "n't", "know"] and sentences[1].heads == [4, 4, 4, 0]  # 2-3 skipped
    assert sentences[2].words == ["Go", "home", "!"] and sentences[2].upos == ["VERB", "ADV", "PUNCT"]  # 2.1 skipped
    assert sentences[1].text == "I don't know"


def test_conllu_errors_name_the_problem(tmp_path):
    with pytest.raises(ConlluError, match="not found"):
        read_conllu(tmp_path / "missing.conllu")
    with pytest.raises(ConlluError, match="10 tab-separated columns"):
        parse_conllu("1\tword\t_\n")
    with pytest.raises(ConlluError, match="has head 5"):
        parse_conllu("1\ta\t_\tX\t_\t_\t5\tdep\t_\t_\n")
    with pytest.raises(ConlluError, match="not integers"):
        parse_conllu("1\ta\t_\tX\t_\t_\tx\tdep\t_\t_\n")
    (tmp_path / "empty.conllu").write_text("# nothing\n")
    with pytest.raises(ConlluError, match="no sentences"):
        read_conllu(tmp_path / "empty.conllu")


def test_conllu_round_trip_of_a_predicted_tree():
    text = format_conllu(["a", "b", "c"], [2, 0, 2], [0.5, 1.0, 0.25], ["# text = a b c"])
    (sentence,) = parse_conllu(text)
    assert sentence.words == ["a", "b", "c"] and sentence.heads == [2, 0, 2]
    assert sentence.deprels == ["dep", "root", "dep"]
    assert "HeadProb=0.250" in text
