"""probformer.data.task_files: task readers on small hand-written files, labels read from train, one-line
errors that name the file and line, and the most-frequent-tag baseline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from probformer.data.errors import ConlluError, DataError
from probformer.data.task_files import (
    LabelledText,
    LabelSet,
    MostFrequentTagger,
    TaggedSentence,
    TaskFormat,
    most_frequent_tag_baseline,
    read_conll_tags,
    read_conllu_tags,
    read_csv,
    read_jsonl,
    read_label_text,
    read_task_splits,
    read_tsv,
    tag_accuracy,
)

CONLLU = """\
# sent_id = a
# text = I don't know.
1\tI\tI\tPRON\tPRP\t_\t4\tnsubj\t_\t_
2-3\tdon't\t_\t_\t_\t_\t_\t_\t_\t_
2\tdo\tdo\tAUX\tVBP\t_\t4\taux\t_\t_
3\tn't\tnot\tPART\tRB\t_\t4\tadvmod\t_\t_
4\tknow\tknow\tVERB\tVB\t_\t0\troot\t_\t_
5\t.\t.\tPUNCT\t.\t_\t4\tpunct\t_\t_

# sent_id = b
1\tGo\tgo\tVERB\tVB\t_\t0\troot\t_\t_
1.1\twent\tgo\tVERB\tVBD\t_\t_\t_\t0:root\t_
2\thome\thome\tADV\tRB\t_\t1\tadvmod\t_\t_
"""  # no blank line after the last sentence: still read


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def one_line_error(error: type[Exception], match: str, call, *args, **kwargs) -> str:
    """The message of the DataError ``call`` raises: one line that matches ``match``."""
    with pytest.raises(error, match=match) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# -- CoNLL-U ----------------------------------------------------------------------------------------------
def test_conllu_upos_and_xpos_skip_multiword_ranges_and_empty_nodes(tmp_path):
    path = write(tmp_path, "t.conllu", CONLLU)
    upos = read_conllu_tags(path)
    assert [s.words for s in upos] == [["I", "do", "n't", "know", "."], ["Go", "home"]]
    assert [s.tags for s in upos] == [["PRON", "AUX", "PART", "VERB", "PUNCT"], ["VERB", "ADV"]]
    assert upos[0].lines == [3, 5, 6, 7, 8] and upos[1].lines == [11, 13]
    xpos = read_conllu_tags(path, "xpos")
    assert [s.tags for s in xpos] == [["PRP", "VBP", "RB", "VB", "."], ["VB", "RB"]]
    assert TaskFormat("conllu", column="xpos").read(path) == xpos
    assert TaskFormat("conllu").task == "token"


def test_conllu_errors_name_file_and_line(tmp_path):
    bad_columns = write(tmp_path, "cols.conllu", "1\tI\tI\tPRON\tPRP\t_\t0\troot\t_\n")
    message = one_line_error(ConlluError, "expected 10 tab-separated columns, got 9", read_conllu_tags, bad_columns)
    assert message.startswith(f"{bad_columns}:1:")
    order = write(tmp_path, "order.conllu", CONLLU.replace("4\tknow", "7\tknow"))
    assert one_line_error(DataError, "out of order", read_conllu_tags, order).startswith(f"{order}:7:")
    no_xpos = write(tmp_path, "noxpos.conllu", "1\ta\ta\tX\t_\t_\t0\troot\t_\t_\n")
    assert read_conllu_tags(no_xpos)[0].tags == ["X"]
    one_line_error(DataError, r"noxpos.conllu:1: word 'a' has no XPOS", read_conllu_tags, no_xpos, "xpos")
    one_line_error(DataError, "must be one of", read_conllu_tags, no_xpos, "lemma")
    one_line_error(DataError, "not found", read_conllu_tags, tmp_path / "missing.conllu")
    empty = write(tmp_path, "empty.conllu", "# only a comment\n\n")
    one_line_error(DataError, r"empty.conllu: no examples", read_conllu_tags, empty)


def test_invalid_utf8_names_file_and_line(tmp_path):
    conllu = write(tmp_path, "latin1.conllu", CONLLU.encode() + "1\tcaf\xe9\t_\tNOUN\tNN\t_\t0\troot\t_\t_\n"
                   .encode("latin-1"))
    one_line_error(DataError, r"latin1.conllu:14: not UTF-8", read_conllu_tags, conllu)
    tsv = write(tmp_path, "latin1.tsv", b"ok\t1\n" + "caf\xe9\t0\n".encode("latin-1"))
    one_line_error(DataError, r"latin1.tsv:2: not UTF-8", read_tsv, tsv)


# -- token<TAB>tag ------------------------------------------------------------------------------------------
def test_conll_reads_bio_sentences_separated_by_blank_or_tab_only_lines(tmp_path):
    # WNUT-17: some sentences end at a line holding one tab; "#" starts a hashtag token, not a comment
    path = write(tmp_path, "ner.conll", "Empire\tB-location\nState\tI-location\n!\tO\n\t\n#nyc\tO\nBob\tB-person\n\n\n"
                                        "yes\tO\n")
    sentences = read_conll_tags(path)
    assert [s.words for s in sentences] == [["Empire", "State", "!"], ["#nyc", "Bob"], ["yes"]]
    assert [s.tags for s in sentences] == [["B-location", "I-location", "O"], ["O", "B-person"], ["O"]]
    assert sentences[1].lines == [5, 6] and sentences[2].lines == [9]
    assert TaskFormat("conll").read(path) == sentences


def test_conll_whitespace_separator_takes_the_last_column_and_skips_docstart(tmp_path):
    path = write(tmp_path, "c03.txt", "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n")
    (sentence,) = read_conll_tags(path, separator=None)
    assert sentence.words == ["EU", "rejects"] and sentence.tags == ["B-ORG", "O"]
    assert TaskFormat("conll", separator=None).read(path) == [sentence]


def test_conll_errors_name_file_and_line(tmp_path):
    path = write(tmp_path, "bad.conll", "a\tO\nb O\n")
    assert one_line_error(DataError, "expected 'token<sep>tag' separated by a tab", read_conll_tags,
                          path).startswith(f"{path}:2:")
    path = write(tmp_path, "notag.conll", "a\tO\nb\t \n")
    one_line_error(DataError, r"notag.conll:2: empty tag", read_conll_tags, path)
    path = write(tmp_path, "blank.conll", "\n\t\n\n")
    one_line_error(DataError, r"blank.conll: no examples", read_conll_tags, path)


# -- classification files -----------------------------------------------------------------------------------
def test_tsv_by_column_index_and_by_header_name(tmp_path):
    # SST-2 style: text<TAB>label, no header, a space before the tab; a blank line is skipped
    path = write(tmp_path, "sst2.tsv", "a fine film \t1\n\nnot good \t0\n")
    assert read_tsv(path) == [LabelledText("a fine film", "1", 1), LabelledText("not good", "0", 3)]
    glue = write(tmp_path, "glue.tsv", "idx\tsentence\tlabel\n7\tgreat\t1\n8\tbad\t0\n")
    expected = [LabelledText("great", "1", 2), LabelledText("bad", "0", 3)]
    assert read_tsv(glue, "sentence", "label") == expected
    assert read_tsv(glue.with_name("glue.tsv"), 1, 2)[1:] == expected  # header read as an example by index
    assert TaskFormat("tsv", text_field="1", label_field="2").read(glue)[1:] == expected  # digit strings: indices
    assert TaskFormat("tsv").task == "sentence"


def test_csv_with_quotes_and_header(tmp_path):
    path = write(tmp_path, "data.csv", '\ufefftext,label\n"well, it\'s ""fine""",pos\nmeh,neg\n')  # BOM dropped
    assert read_csv(path, "text", "label") == [LabelledText('well, it\'s "fine"', "pos", 2),
                                               LabelledText("meh", "neg", 3)]
    plain = write(tmp_path, "plain.csv", "neg,awful\npos,\"lovely, really\"\n")
    assert TaskFormat("csv", text_field=1, label_field=0).read(plain) == [
        LabelledText("awful", "neg", 1), LabelledText("lovely, really", "pos", 2)]


def test_jsonl_with_configurable_fields_and_integer_labels(tmp_path):
    path = write(tmp_path, "data.jsonl", json.dumps({"sentence": "good", "y": 1}) + "\n\n"
                 + json.dumps({"sentence": "bad", "y": "0", "extra": None}) + "\n")
    assert read_jsonl(path, "sentence", "y") == [LabelledText("good", "1", 1), LabelledText("bad", "0", 3)]
    default = write(tmp_path, "default.jsonl", '{"text": "x", "label": "a"}\n')
    assert TaskFormat("jsonl").read(default) == [LabelledText("x", "a", 1)]


def test_label_text_lines(tmp_path):
    path = write(tmp_path, "sst5.txt", "4 a stirring , funny film\n1\tdull\n\n")
    assert read_label_text(path) == [LabelledText("a stirring , funny film", "4", 1), LabelledText("dull", "1", 2)]
    assert TaskFormat("label-text").read(path) == read_label_text(path)


@pytest.mark.parametrize(("name", "text", "reader", "kwargs", "match"), [
    ("short.tsv", "good\t1\nbad\n", read_tsv, {}, r"short.tsv:2: expected at least 2 tab-separated columns, got 1"),
    ("header.tsv", "sentence\tlabel\nx\t1\n", read_tsv, {"text_field": "text", "label_field": "label"},
     r"header.tsv:1: no column 'text' in the header"),
    ("mixed.tsv", "x\t1\n", read_tsv, {"text_field": "text", "label_field": 1}, r"mixed.tsv: give both fields"),
    ("notext.tsv", "x\t1\n \t0\n", read_tsv, {}, r"notext.tsv:2: the text is empty"),
    ("nolabel.tsv", "x\t\n", read_tsv, {}, r"nolabel.tsv:1: the label '' is not"),
    ("short.csv", "a,1\nb\n", read_csv, {}, r"short.csv:2: expected at least 2 comma-separated columns"),
    ("bad.jsonl", '{"text": "x", "label": 1}\n{"text": "y",\n', read_jsonl, {}, r"bad.jsonl:2: not JSON"),
    ("list.jsonl", '["x", 1]\n', read_jsonl, {}, r"list.jsonl:1: expected a JSON object, got list"),
    ("field.jsonl", '{"text": "x", "label": 1}\n{"text": "y"}\n', read_jsonl, {},
     r"field.jsonl:2: no field 'label' \(fields: \['text'\]\)"),
    ("float.jsonl", '{"text": "x", "label": 0.5}\n', read_jsonl, {}, r"float.jsonl:1: the label 0.5 is not"),
    ("nulltext.jsonl", '{"text": null, "label": 1}\n', read_jsonl, {}, r"nulltext.jsonl:1: the text is None"),
    ("one.txt", "1 fine\n3\n", read_label_text, {}, r"one.txt:2: expected 'label text', got '3'"),
    ("empty.tsv", "", read_tsv, {}, r"empty.tsv: no examples"),
    ("empty.csv", "\n\n", read_csv, {}, r"empty.csv: no examples"),
    ("empty.jsonl", "", read_jsonl, {}, r"empty.jsonl: no examples"),
    ("empty.txt", "  \n", read_label_text, {}, r"empty.txt: no examples"),
    ("headeronly.csv", "text,label\n", read_csv, {"text_field": "text", "label_field": "label"},
     r"headeronly.csv: no examples"),
])
def test_classification_errors_are_one_line_with_file_and_line(tmp_path, name, text, reader, kwargs, match):
    one_line_error(DataError, match, reader, write(tmp_path, name, text), **kwargs)


def test_missing_file_and_unknown_format(tmp_path):
    for reader in (read_tsv, read_csv, read_jsonl, read_label_text, read_conll_tags):
        one_line_error(DataError, "not found", reader, tmp_path / "nope")
    one_line_error(DataError, "format must be one of", TaskFormat, "xml")
    one_line_error(DataError, "tag column must be one of", TaskFormat, "conllu", column="deprel")


# -- labels ---------------------------------------------------------------------------------------------------
def test_label_set_orders_and_maps():
    examples = [TaggedSentence(["a", "b"], ["O", "B-x"]), TaggedSentence(["c"], ["I-x"])]
    sorted_labels = LabelSet.from_examples(examples)
    assert sorted_labels.labels == ("B-x", "I-x", "O")
    assert sorted_labels.id2label == {0: "B-x", 1: "I-x", 2: "O"} and sorted_labels.label2id["O"] == 2
    assert LabelSet.from_examples(examples, "first-seen").labels == ("O", "B-x", "I-x")
    numbers = [LabelledText("t", label) for label in ("10", "2", "0", "2")]
    assert LabelSet.from_examples(numbers).labels == ("0", "2", "10")  # integers sort as numbers
    assert LabelSet.from_id2label({"1": "pos", "0": "neg"}).labels == ("neg", "pos")
    assert len(sorted_labels) == 3 and "O" in sorted_labels and "B-y" not in sorted_labels
    one_line_error(DataError, "given twice", LabelSet, ("a", "a"))
    one_line_error(DataError, "ids must be 0..1", LabelSet.from_id2label, {0: "a", 2: "b"})
    one_line_error(DataError, "label order must be", LabelSet.from_examples, examples, "random")


def test_unseen_dev_and_test_labels_name_file_and_line(tmp_path):
    train = write(tmp_path, "train.conll", "a\tO\nb\tB-x\n\nc\tI-x\n")
    dev = write(tmp_path, "dev.conll", "a\tO\n\nb\tB-y\n")
    message = one_line_error(DataError, r"dev.conll:3: label 'B-y' does not occur in the training file",
                             read_task_splits, TaskFormat("conll"), train, dev)
    assert str(train) in message and "'B-x', 'I-x', 'O'" in message
    splits = read_task_splits(TaskFormat("conll"), train, train, train)
    assert splits.labels.labels == ("B-x", "I-x", "O") and len(splits.train) == len(splits.test) == 2
    test = write(tmp_path, "test.tsv", "x\t1\ny\t2\n")
    one_line_error(DataError, r"test.tsv:2: label '2'", read_task_splits, TaskFormat("tsv"),
                   write(tmp_path, "train.tsv", "x\t0\ny\t1\n"), None, test)


# -- the most-frequent-tag baseline --------------------------------------------------------------------------
def test_most_frequent_tag_baseline_by_hand():
    train = [TaggedSentence(["the", "run", "run", "."], ["DET", "NOUN", "VERB", "PUNCT"]),
             TaggedSentence(["run", "the", "dog"], ["VERB", "DET", "NOUN"]),
             TaggedSentence(["a", "dog", "barks"], ["DET", "NOUN", "VERB"])]
    # counts: DET 3, NOUN 3, VERB 3, PUNCT 1; "run": VERB 2 / NOUN 1; overall tie DET/NOUN/VERB -> "DET" by name
    tagger = MostFrequentTagger.fit(train)
    assert tagger.by_word["run"] == "VERB" and tagger.default == "DET"
    dev = [TaggedSentence(["the", "run", "cat"], ["DET", "NOUN", "NOUN"]), TaggedSentence(["dog", "."], ["NOUN", "X"])]
    assert tagger.tag(["the", "run", "cat"]) == ["DET", "VERB", "DET"]
    assert most_frequent_tag_baseline(train, dev) == pytest.approx(2 / 5)  # the, dog right
    assert tag_accuracy(dev, [s.tags for s in dev]) == 1.0
    tied = MostFrequentTagger.fit([TaggedSentence(["x", "y", "y", "x"], ["A", "B", "B", "B"]),
                                   TaggedSentence(["x"], ["B"])])
    assert tied.by_word["x"] == "B"  # x: A 1 / B 2
    assert MostFrequentTagger.fit([TaggedSentence(["x", "x"], ["B", "A"])]).by_word["x"] == "A"  # tie: name
