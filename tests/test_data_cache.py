"""The corpus cache under concurrency and damage (data/cache.py, data/prepared.py), and WordPiece
training as a function of the corpus (data/tokenization.py).

The concurrency tests use real processes: two preparations of one new corpus, one of them held open
inside its preparation so that the other surely arrives during it; and a preparation killed with
SIGKILL halfway through writing its files.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import synthetic_documents, write_text_dir

from probformer.data import prepared as prepared_module
from probformer.data.errors import DataError, DataWarning
from probformer.data.prepared import CorpusSpec, entry_name, prepare_corpus
from probformer.data.tokenization import SPECIAL_TOKENS, train_wordpiece

# Prepares argv[1] into the cache argv[2], held at one point (argv[3]): "tokenizer" -> before training
# the tokenizer, until the file argv[4] exists; "write" -> after the token streams are written, for
# argv[4] seconds. Prints "about to prepare" before it starts, "ready ..." when done.
PREPARE = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from probformer.data import prepare_stream
    from probformer.data.prepared import CorpusSpec, prepare_corpus

    source, cache, where, arg = sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4]
    if where == "tokenizer":
        real_train = prepare_stream.train_wordpiece
        def held_train(*args, **kwargs):
            print("training the tokenizer", flush=True)
            while not Path(arg).exists():
                time.sleep(0.05)
            time.sleep(1.0)  # the other process is inside prepare_corpus by now
            return real_train(*args, **kwargs)
        prepare_stream.train_wordpiece = held_train
    elif where == "write":
        real_bytes = prepare_stream.npy_bytes
        def slow_bytes(*args, **kwargs):  # unigram_counts.npy comes right after the three shards
            time.sleep(float(arg))
            return real_bytes(*args, **kwargs)
        prepare_stream.npy_bytes = slow_bytes
    spec = CorpusSpec(source=source, vocab_size=256, valid_fraction=0.1, test_fraction=0.1)
    print("about to prepare", flush=True)
    corpus = prepare_corpus(spec, cache)
    print("ready", corpus.root.name, corpus.tokenizer_sha256, flush=True)
""")


def quiet(*_args, **_kwargs) -> None:
    pass


def _spec(source: Path, **kw) -> CorpusSpec:
    return CorpusSpec(source=str(source), vocab_size=kw.pop("vocab_size", 256), valid_fraction=0.1,
                      test_fraction=0.1, **kw)


def _preparer(source: Path, cache: Path, where: str, arg: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", PREPARE, str(source), str(cache), where, arg],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _read_until(process: subprocess.Popen, start: str, lines: list[str]) -> None:
    """Read ``process``'s output into ``lines`` up to a line starting with ``start``."""
    _wait_for(lambda: lines.append(process.stdout.readline()) or lines[-1].startswith(start) or
              (lines[-1] == "" and pytest.fail(f"the process ended: {process.communicate()}")), repr(start))


def _wait_for(condition, what: str, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def _decoded(corpus, split: str) -> list[str]:
    stream = np.asarray(corpus.streams[split], dtype=np.int64)
    pieces = np.split(stream, np.flatnonzero(stream == 3) + 1)[:-1]  # 3: [SEP]
    return [corpus.tokenizer.decode([int(t) for t in piece[:-1]]) for piece in pieces]


@pytest.mark.slow
def test_two_processes_preparing_one_corpus_build_it_once(tmp_path):
    source = write_text_dir(tmp_path / "src", synthetic_documents(30, 120))
    cache = tmp_path / "cache"
    go = tmp_path / "go"
    first = _preparer(source, cache, "tokenizer", str(go))
    early: tuple[list[str], list[str]] = ([], [])  # what each printed before communicate()
    _read_until(first, "training the tokenizer", early[0])  # it holds the lock, inside its preparation
    second = _preparer(source, cache, "none", "")
    _read_until(second, "about to prepare", early[1])
    go.touch()  # the first one goes on a second after this: the second is in prepare_corpus by then
    outputs = [p.communicate(timeout=300) for p in (first, second)]
    outputs = [("".join(lines) + out, err) for lines, (out, err) in zip(early, outputs, strict=True)]
    assert [p.returncode for p in (first, second)] == [0, 0], outputs
    logs = [out + err for out, err in outputs]
    assert sum("preparing corpus" in log for log in logs) == 1, logs  # the second waited, then reused it
    ready = [next(line for line in out.splitlines() if line.startswith("ready")) for out, _ in outputs]
    assert ready[0] == ready[1]  # the same entry, the same tokenizer
    entry = cache / entry_name(_spec(source))
    assert sorted(p.name for p in cache.iterdir()) == [entry.name]  # no lock file, no temporary directory left
    corpus = prepare_corpus(_spec(source), cache, log=quiet)
    assert corpus.root == entry and " ".join(_decoded(corpus, "train")).startswith("doc")


@pytest.mark.slow
def test_a_preparation_killed_halfway_leaves_no_entry(tmp_path):
    source = write_text_dir(tmp_path / "src", synthetic_documents(30, 120))
    cache = tmp_path / "cache"
    victim = _preparer(source, cache, "write", "60")
    _wait_for(lambda: any(cache.rglob("train-000000.tokens")), "the killed preparation to write its training shard")
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=60)
    entry = cache / entry_name(_spec(source))
    assert not entry.exists()  # its half-written files are in its private temporary directory, not the entry
    logs: list[str] = []
    corpus = prepare_corpus(_spec(source), cache, log=logs.append)
    assert corpus.root == entry and any("preparing corpus" in line for line in logs)
    assert sorted(p.name for p in cache.iterdir()) == [entry.name]  # the killed one's left-overs removed


def test_the_same_corpus_gives_the_same_tokenizer_and_ids(tmp_path):
    # huggingface/tokenizers numbers '##' pieces in hash-map order, random per process and per map:
    # without a fixed order two preparations gave different ids (huggingface/tokenizers#1794).
    source = write_text_dir(tmp_path / "src", synthetic_documents(30, 120))
    first = prepare_corpus(_spec(source), tmp_path / "cache-1", log=quiet)
    second = prepare_corpus(_spec(source), tmp_path / "cache-2", log=quiet)
    assert (first.root / "tokenizer.json").read_bytes() == (second.root / "tokenizer.json").read_bytes()
    names = sorted(p.name for p in first.root.iterdir())
    assert names == sorted(p.name for p in second.root.iterdir())
    for name in names:  # every file: the shards, their offsets, the index, the counts, meta.json
        assert (first.root / name).read_bytes() == (second.root / name).read_bytes(), name
    added = json.loads((first.root / "tokenizer.json").read_text())["added_tokens"]
    assert [t["content"] for t in added] == list(SPECIAL_TOKENS)  # the '##' pieces are plain vocabulary


def test_fixing_the_order_keeps_what_the_trainer_builds_on():
    # The same alphabet and '##' pieces as the trainer left alone, and the same size; which merges it
    # then picks can differ only where pair counts tie, which the unfixed trainer broke at random.
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    texts = synthetic_documents(30, 120)
    plain = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    plain.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True)
    plain.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    plain.train_from_iterator(texts, trainer=trainers.WordPieceTrainer(
        vocab_size=256, special_tokens=list(SPECIAL_TOKENS), show_progress=False))
    ours = train_wordpiece(texts, 256)

    def pieces(tokenizer) -> set[str]:
        return {t for t in tokenizer.get_vocab() if len(t.removeprefix("##")) == 1}

    assert pieces(ours) == pieces(plain) and ours.get_vocab_size() == plain.get_vocab_size()


@pytest.mark.parametrize("split", ["train", "valid"])
def test_a_zeroed_stream_is_found_and_rebuilt(tmp_path, split):
    source = write_text_dir(tmp_path / "src", synthetic_documents(12, 60))
    cache = tmp_path / "cache"
    good = prepare_corpus(_spec(source), cache, log=quiet)
    name = f"{split}-000000.tokens"
    root, original = good.root, (good.root / name).read_bytes()
    del good
    (root / name).write_bytes(bytes(len(original)))  # same size, every id 0 ([PAD])
    logs: list[str] = []
    rebuilt = prepare_corpus(_spec(source), cache, log=logs.append)
    assert any(f"damaged ({name} does not match its recorded sha256); rebuilding" in line for line in logs), logs
    assert (rebuilt.root / name).read_bytes() == original  # deterministic: the same ids again


def test_an_entry_of_an_older_format_is_left_alone(tmp_path, monkeypatch):
    # CACHE_FORMAT is part of the key: a format-1 entry (train.bin ...) is another entry, never opened
    # nor changed; the current format is prepared next to it, with the same corpus and ids.
    source = write_text_dir(tmp_path / "src", synthetic_documents(12, 60))
    cache = tmp_path / "cache"
    monkeypatch.setattr(prepared_module, "CACHE_FORMAT", 1)
    old = cache / entry_name(_spec(source))
    old.mkdir(parents=True)
    (old / "meta.json").write_text("{}")
    (old / "train.bin").write_bytes(b"\x05\x00")
    monkeypatch.undo()
    corpus = prepare_corpus(_spec(source), cache, log=quiet)
    assert corpus.root != old and corpus.meta["format"] == prepared_module.CACHE_FORMAT == 2
    assert sorted(p.name for p in old.iterdir()) == ["meta.json", "train.bin"]
    assert (old / "train.bin").read_bytes() == b"\x05\x00"


def test_a_corpus_its_tokenizer_cannot_read_is_named_with_its_unk_share(tmp_path):
    # Thai is written without spaces between words: the BERT pre-tokenizer sees "words" longer than
    # WordPiece's 100 characters, each one [UNK].
    thai = "ภาษาไทยเขียนติดกันโดยไม่มีช่องว่างระหว่างคำ" * 4
    docs = [f"{thai} {thai} {thai} {thai} {thai} word{i}" for i in range(12)]
    source = write_text_dir(tmp_path / "src", docs)
    with pytest.warns(DataWarning, match=r"[5-9]\d\.\d% of the tokens of .* \(training split\) are \[UNK\]"):
        prepare_corpus(_spec(source, vocab_size=128), tmp_path / "cache", log=quiet)


def test_a_cache_dir_that_is_a_file_is_a_clear_error(tmp_path):
    source = write_text_dir(tmp_path / "src", synthetic_documents(12, 60))
    (tmp_path / "cache").write_text("not a directory")
    with pytest.raises(DataError, match="is a file, not a directory"):
        prepare_corpus(_spec(source), tmp_path / "cache", log=quiet)


def test_the_lock_is_exclusive_and_leaves_nothing_behind(tmp_path):
    from probformer.data.cache import LockHeld, locked

    lock = tmp_path / ".x.lock"
    with locked(lock, holder=f"pid {os.getpid()}"):
        holder = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
            from pathlib import Path
            from probformer.data.cache import LockHeld, locked
            try:
                with locked(Path({str(lock)!r}), blocking=False):
                    print("got it")
            except LockHeld as err:
                print("held by", err.holder)
        """)], capture_output=True, text=True, timeout=120)
        assert holder.stdout.strip() == f"held by pid {os.getpid()}", holder.stderr
        with pytest.raises(LockHeld), locked(lock, blocking=False):  # another open file in this process too
            pass
    assert not lock.exists()
