"""Open a trained run for inspection: ``runs/pt-mlm`` or ``runs/pt-mlm/model`` -> model + tokenizer.

A model directory holds a masked LM or a task model (a token or a sequence classifier, docs/design.md
§9); which one is read from config.json's ``architectures`` (what ``save_pretrained`` records) and the
matching class of the family is built, so a task model keeps its trained read-out and an MLM its
own. A command states the tasks it serves, and a directory of another task is one line saying which
command serves it (a tagger given to fill-mask would otherwise be read as an MLM with a random
read-out). Every PT model has the same encoder, so inspect and parse-eval read task models too.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer
from transformers import PreTrainedModel
from transformers.utils import logging as transformers_logging

from probformer.data.errors import DataError
from probformer.data.shards import special_token_ids
from probformer.inspection.errors import InspectionError
from probformer.models.registry import TASKS, TOKENIZER_FILE, Architecture, architecture_of, find_model_directory

# A model directory may come from anyone: before a model is built from its config.json, sizes beyond
# these are refused (a config naming 10^7 MFVI iterations would make a command run without end). Each
# is far above any model the project trains (the 1B ladder preset: N = 2048, T or L <= 24).
SIZE_LIMITS = {
    "num_iterations": 1_000, "num_layers": 1_000, "num_channels": 4_096, "num_heads": 4_096,
    "hidden_size": 65_536, "rank": 65_536, "latent_size": 262_144, "intermediate_size": 262_144,
    "vocab_size": 16_777_216, "max_position_embeddings": 1_048_576, "max_distance": 1_048_576,
}


@dataclass
class LoadedModel:
    model: PreTrainedModel  # in eval mode (no dropout), on CPU
    tokenizer: Tokenizer
    directory: Path
    architecture: Architecture
    task: str = "fill-mask"  # the model's task: one of models.registry.TASKS (Hugging Face pipeline names)

    def special_ids(self) -> dict[str, int]:
        """Role -> id of ``[PAD]``, ``[UNK]``, ``[CLS]``, ``[SEP]``, ``[MASK]`` in the model's tokenizer (its
        own layout: probformer's 0..4, or a pretrained tokenizer's); a one-line InspectionError when one
        is missing."""
        try:
            return special_token_ids(self.tokenizer, str(self.directory / TOKENIZER_FILE), needed_by="this command")
        except DataError as err:
            raise InspectionError(str(err)) from None


# The command that serves each task, for the error a directory of another task gets.
TASK_COMMANDS = {"fill-mask": "probformer fill-mask", "token-classification": "probformer predict",
                 "text-classification": "probformer predict"}


def model_directory(run: str | Path) -> Path:
    """The saved-model directory of a run directory, or ``run`` itself if it is one."""
    path = Path(run)
    directory = find_model_directory(path)
    if directory is not None:
        return directory
    if not path.exists():
        raise InspectionError(f"{str(path)!r} not found: "
                              "pass a run directory (e.g. runs/pt-mlm) or its model/ directory")
    raise InspectionError(f"{str(path)!r} holds no saved model (no config.json in it or in its model/ subdirectory); "
                          "a run writes model/ when it completes")


def saved_task(arch: Architecture, config: dict) -> str:
    """The task of a saved model: the one whose class config.json's ``architectures`` names;
    ``fill-mask`` when it names none of the family's classes (directories saved without the field)."""
    names = config.get("architectures") or []
    for task in TASKS:
        if arch.task_class(task).__name__ in names:
            return task
    return "fill-mask"


def load_model(run: str | Path, *, require_arch: str | None = None, tasks: Sequence[str] = TASKS) -> LoadedModel:
    """Load a run's final model (the class of its task, :func:`saved_task`) and tokenizer; a model of a
    task not in ``tasks`` is refused in one line naming the command for it. Reads only: nothing is
    written into ``run`` (it may be read-only, or someone else's)."""
    directory = model_directory(run)
    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InspectionError(f"{directory / 'config.json'} is not valid JSON ({err})") from None
    if not isinstance(config, dict):
        raise InspectionError(f"{directory / 'config.json'} must hold a JSON object, got a {type(config).__name__}")
    check_sizes(config, directory / "config.json")
    try:
        arch = architecture_of(config.get("model_type"))
    except ValueError as err:
        raise InspectionError(f"{directory}: {err}") from None
    if require_arch is not None and arch.name != require_arch:
        raise InspectionError(f"{directory} holds a {arch.name!r} model; this command needs {require_arch!r} "
                              "(its head marginals are what is inspected)")
    task = saved_task(arch, config)
    if task not in tasks:
        raise InspectionError(f"{directory}: this is a {task} model; use `{TASK_COMMANDS[task]}` (this command "
                              f"needs a {' or '.join(tasks)} model)")
    if not (directory / TOKENIZER_FILE).is_file():
        raise InspectionError(f"{directory} has no {TOKENIZER_FILE}; the trainer writes it beside the weights")
    transformers_logging.disable_progress_bar()  # transformers 5's per-tensor "Loading weights" bar
    try:
        model = arch.task_class(task).from_pretrained(directory)
    except Exception as err:  # safetensors / transformers raise several types for a damaged file
        raise InspectionError(f"cannot load the model in {directory}: {type(err).__name__}: {err}") from None
    try:
        tokenizer = Tokenizer.from_file(str(directory / TOKENIZER_FILE))
    except Exception as err:
        raise InspectionError(f"cannot read {directory / TOKENIZER_FILE}: {err}") from None
    return LoadedModel(model.eval(), tokenizer, directory, arch, task)


def check_sizes(config: dict, where: Path) -> None:
    """Refuse a config whose sizes are not positive integers within :data:`SIZE_LIMITS`."""
    for key, limit in SIZE_LIMITS.items():
        value = config.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
            raise InspectionError(f"{where}: {key} = {value!r} is not a size this command builds (an integer in "
                                  f"1..{limit:,}); the file is damaged or not a probformer model")
