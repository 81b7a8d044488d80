"""probformer.models.task_heads and the task models of every family (docs/design.md §9) through the
Hugging Face Auto classes: token and sequence classifiers of PT, BERT and UT.

Round trips (save_pretrained / from_pretrained, id2label), a few AdamW steps that lower the loss, an MLM
model's directory loaded into a task class (encoder weights equal, the new read-out zero-initialised),
parameter roles, muP = SP at the base width, and BERT's heads against Hugging Face's own under SP.
"""

from __future__ import annotations

import math

import pytest
import torch
import transformers
from transformers import (
    AutoConfig,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

from probformer.models import ARCHITECTURES, architecture
from probformer.models.bert.modeling_bert import (
    ProbformerBertForSequenceClassification,
    ProbformerBertForTokenClassification,
    convert_hf_state_dict,
)
from probformer.models.pt.configuration_pt import PTConfig
from probformer.models.pt.modeling_pt import PTForSequenceClassification
from probformer.models.registry import TASKS
from probformer.parametrization import Role, build_optimizer, named_roles

VOCAB, BATCH, SEQ = 40, 4, 7
LABELS = {0: "NOUN", 1: "VERB", 2: "ADJ"}
FIELDS = {
    "pt": dict(vocab_size=VOCAB, hidden_size=16, num_channels=2, rank=4, latent_size=16, num_iterations=2,
               head_dropout=0.0, label_dropout=0.0, use_root=True),
    "bert": dict(vocab_size=VOCAB, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=24,
                 hidden_dropout=0.0, attention_dropout=0.0),
    "ut": dict(vocab_size=VOCAB, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=24,
               hidden_dropout=0.0, attention_dropout=0.0),
}
AUTO = {"token-classification": AutoModelForTokenClassification,
        "text-classification": AutoModelForSequenceClassification}
CASES = [(arch, task) for arch in ARCHITECTURES for task in AUTO]


def config_for(arch: str, **overrides) -> transformers.PretrainedConfig:
    return AutoConfig.for_model(architecture(arch).model_type, **{**FIELDS[arch], "id2label": LABELS, **overrides})


def task_model(arch: str, task: str, seed: int = 0, **overrides) -> transformers.PreTrainedModel:
    torch.manual_seed(seed)
    return AUTO[task].from_config(config_for(arch, **overrides))


def toy_batch(task: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Learnable labels: a token's tag is its id mod 3; a sequence's label is its second token's id mod 3.
    Position 0 plays [CLS]; the last two slots of row 1 are padding (labels -100 there)."""
    ids = torch.randint(5, VOCAB, (BATCH, SEQ), generator=torch.Generator().manual_seed(3))
    ids[:, 0] = 2  # [CLS]
    mask = torch.ones_like(ids)
    mask[1, SEQ - 2:] = 0
    if task == "token-classification":
        labels = (ids % 3).masked_fill(mask == 0, -100)
        labels[:, 0] = -100
    else:
        labels = ids[:, 1] % 3
    return ids, mask, labels


def set_readout(model: transformers.PreTrainedModel) -> None:
    """Move the (zero-initialised) classifier off zero so that outputs depend on it."""
    with torch.no_grad():
        w = model.classifier.weight
        w.copy_(torch.linspace(-0.5, 0.5, w.numel()).view_as(w))
        model.classifier.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))


# -- Auto classes, round trips -------------------------------------------------------------------------
@pytest.mark.parametrize(("arch", "task"), CASES)
def test_auto_classes_build_the_registered_task_models(arch, task):
    model = task_model(arch, task)
    assert type(model) is architecture(arch).task_class(task)
    ids, mask, labels = toy_batch(task)
    out = model(ids, attention_mask=mask, labels=labels)
    shape = (BATCH, SEQ, 3) if task == "token-classification" else (BATCH, 3)
    assert out.logits.shape == shape and torch.isfinite(out.loss)
    assert model.config.parametrization == "mup"  # the default: a zero-initialised read-out, uniform at init
    assert out.logits.abs().max() == 0 and out.loss.item() == pytest.approx(math.log(3))


@pytest.mark.parametrize(("arch", "task"), CASES)
def test_save_and_load_round_trip_keeps_labels_and_outputs(arch, task, tmp_path):
    model = task_model(arch, task).eval()
    set_readout(model)
    model.save_pretrained(tmp_path)
    config = AutoConfig.from_pretrained(tmp_path)
    assert config.id2label == LABELS and config.label2id == {v: k for k, v in LABELS.items()}
    assert config.num_labels == 3 and config.architectures == [type(model).__name__]
    loaded = AUTO[task].from_pretrained(tmp_path).eval()
    assert type(loaded) is type(model) and loaded.config.id2label == LABELS
    ids, mask, _ = toy_batch(task)
    torch.testing.assert_close(loaded(ids, attention_mask=mask).logits, model(ids, attention_mask=mask).logits,
                               rtol=0, atol=0)


@pytest.mark.parametrize(("arch", "task"), CASES)
def test_a_few_adamw_steps_lower_the_loss(arch, task):
    model = task_model(arch, task).train()
    optimizer = build_optimizer(model, lr=1e-2, weight_decay=0.0, betas=(0.9, 0.98), eps=1e-8)
    ids, mask, labels = toy_batch(task)
    losses = []
    for _ in range(8):
        loss = model(ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


# -- an MLM model's directory into a task class --------------------------------------------------------
@pytest.mark.parametrize(("arch", "task"), CASES)
@pytest.mark.parametrize("preset", ["mup", "sp"])
def test_mlm_directory_loads_into_the_task_class(arch, task, preset, tmp_path):
    torch.manual_seed(0)
    mlm = AutoModelForMaskedLM.from_config(AutoConfig.for_model(architecture(arch).model_type,
                                                                **FIELDS[arch], parametrization=preset))
    with torch.no_grad():  # a trained-looking encoder: no tensor at its init value
        for p in mlm.parameters():
            p.add_(0.01 * torch.randn_like(p))
    mlm.save_pretrained(tmp_path)
    torch.manual_seed(1)
    model, info = AUTO[task].from_pretrained(tmp_path, id2label=LABELS, output_loading_info=True)
    assert type(model) is architecture(arch).task_class(task) and model.config.id2label == LABELS
    mlm_state, state = mlm.state_dict(), model.state_dict()
    head = {"classifier.weight", "classifier.bias"} | ({"pooler.weight", "pooler.bias"}
                                                       if arch != "pt" and task == "text-classification" else set())
    assert set(info["missing_keys"]) == head
    encoder = set(state) - head
    assert encoder and encoder < set(mlm_state)
    for name in encoder:
        assert torch.equal(state[name], mlm_state[name]), name
    if arch == "pt" or preset == "mup":  # docs/design.md §9: the new read-out starts at zero
        assert model.classifier.weight.abs().max() == 0
    else:  # BERT / UT under SP: HF's init, as the tied decoder's
        assert 0 < model.classifier.weight.std().item() < 0.05
    assert model.classifier.bias.abs().max() == 0


def test_pt_sequence_model_from_an_mlm_directory_without_root(tmp_path):
    torch.manual_seed(0)
    fields = {**FIELDS["pt"], "use_root": False}
    AutoModelForMaskedLM.from_config(AutoConfig.for_model("probformer-pt", **fields)).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="use_root"):
        AutoModelForSequenceClassification.from_pretrained(tmp_path, id2label=LABELS)
    mean = AutoModelForSequenceClassification.from_pretrained(tmp_path, id2label=LABELS, classifier_pooling="mean")
    assert mean.root is None
    # With use_root=True the encoder loads and ROOT starts fresh, at the init of a row of S and of U, V.
    rooted, info = AutoModelForSequenceClassification.from_pretrained(tmp_path, id2label=LABELS, use_root=True,
                                                                       output_loading_info=True)
    assert set(info["missing_keys"]) == {"root.rho", "root.U", "root.V", "classifier.weight", "classifier.bias"}
    assert rooted.root.U.std().item() == pytest.approx(rooted.config.scales().init_ternary, rel=0.3)


# -- heads: roles, losses, pooling --------------------------------------------------------------------
@pytest.mark.parametrize(("arch", "task"), CASES)
def test_every_head_parameter_has_its_role(arch, task):
    roles = {name: role for name, _, role in named_roles(task_model(arch, task))}
    assert roles["classifier.weight"] == Role.OUTPUT and roles["classifier.bias"] == Role.VECTOR
    if arch != "pt" and task == "text-classification":
        assert roles["pooler.weight"] == Role.HIDDEN and roles["pooler.bias"] == Role.VECTOR
    assert not any(name.startswith(("readout", "decoder", "head.")) for name in roles)


@pytest.mark.parametrize(("arch", "task"), CASES)
def test_mup_equals_sp_at_the_base_width(arch, task):
    sp, mup = (task_model(arch, task, parametrization=p).double().eval() for p in ("sp", "mup"))
    mup.load_state_dict(sp.state_dict())
    set_readout(sp)
    set_readout(mup)
    ids, mask, _ = toy_batch(task)
    torch.testing.assert_close(sp(ids, attention_mask=mask).logits, mup(ids, attention_mask=mask).logits,
                               rtol=1e-12, atol=1e-12)


def test_token_loss_scores_only_labelled_positions():
    model = task_model("bert", "token-classification").eval()
    set_readout(model)
    ids, mask, labels = toy_batch("token-classification")
    out = model(ids, attention_mask=mask, labels=labels)
    scored = labels != -100
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits[scored], labels[scored]))


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_sequence_problem_types(arch):
    ids, mask, _ = toy_batch("text-classification")
    regression = task_model(arch, "text-classification", id2label={0: "score"})
    out = regression(ids, attention_mask=mask, labels=torch.tensor([0.5, -1.0, 2.0, 0.0]))
    assert out.logits.shape == (BATCH, 1)
    torch.testing.assert_close(out.loss, torch.tensor([0.5, -1.0, 2.0, 0.0]).pow(2).mean())  # zero read-out
    multi = task_model(arch, "text-classification", problem_type="multi_label_classification")
    targets = torch.tensor([[1.0, 0.0, 1.0]] * BATCH)
    torch.testing.assert_close(multi(ids, attention_mask=mask, labels=targets).loss, torch.tensor(math.log(2)))


def test_pt_mean_pooling_is_the_mean_of_the_words_scaled_marginals():
    model = task_model("pt", "text-classification", classifier_pooling="mean").double().eval()
    set_readout(model)
    ids, mask, _ = toy_batch("text-classification")
    s = model.mfvi(ids, mask).labels
    q = 16 * torch.softmax(s, dim=-1)
    pooled = torch.stack([q[b, mask[b].bool()].mean(0) for b in range(BATCH)])
    expected = model.classifier(model.config.scales().output * pooled)
    torch.testing.assert_close(model(ids, attention_mask=mask).logits, expected)


def test_pt_root_pooling_reads_roots_final_label_logits():
    model = task_model("pt", "text-classification").double().eval()
    set_readout(model)
    ids, mask, _ = toy_batch("text-classification")
    out = model(ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
    expected = model.classifier(model.config.scales().output * out.root_hidden_states[-1])
    torch.testing.assert_close(out.logits, expected)
    assert out.root_attentions[-1].shape == (BATCH, 2, SEQ)
    with pytest.raises(ValueError, match="use_root=True"):
        PTForSequenceClassification(PTConfig(**{**FIELDS["pt"], "use_root": False}))


def test_classifier_dropout_falls_back_to_hidden_dropout():
    assert task_model("bert", "token-classification", hidden_dropout=0.3).dropout.p == 0.3
    assert task_model("ut", "text-classification", hidden_dropout=0.3, classifier_dropout=0.05).dropout.p == 0.05
    with pytest.raises(ValueError, match="classifier_dropout"):
        config_for("bert", classifier_dropout=1.5)


def test_registry_names_every_task_class():
    for entry in ARCHITECTURES.values():
        classes = [entry.task_class(task) for task in TASKS]
        assert classes[0] is entry.model_class and len(set(classes)) == 3
        assert all(cls.config_class is entry.config_class for cls in classes)
    with pytest.raises(ValueError, match="unknown task"):
        architecture("pt").task_class("summarization")


# -- BERT's heads are Hugging Face's under SP ---------------------------------------------------------
@pytest.mark.parametrize("task", list(AUTO))
def test_sp_bert_heads_match_hugging_face(task):
    hf_cls, ours_cls = ((transformers.BertForTokenClassification, ProbformerBertForTokenClassification)
                        if task == "token-classification"
                        else (transformers.BertForSequenceClassification, ProbformerBertForSequenceClassification))
    hf_config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                        intermediate_size=24, hidden_act="gelu", hidden_dropout_prob=0.0,
                                        attention_probs_dropout_prob=0.0, attn_implementation="eager", num_labels=3)
    torch.manual_seed(0)
    hf = hf_cls(hf_config).eval()
    encoder = {k: v for k, v in hf.state_dict().items() if k.startswith(("bert.embeddings.", "bert.encoder."))}
    state = convert_hf_state_dict(encoder)
    state.update({"classifier.weight": hf.classifier.weight, "classifier.bias": hf.classifier.bias})
    if task == "text-classification":
        state.update({"pooler.weight": hf.bert.pooler.dense.weight, "pooler.bias": hf.bert.pooler.dense.bias})
    ours = ours_cls(config_for("bert", parametrization="sp", intermediate_size=24, num_labels=3,
                               id2label=None)).eval()
    ours.load_state_dict(state, strict=True)
    ids, mask, labels = toy_batch(task)
    ref, got = hf(input_ids=ids, attention_mask=mask, labels=labels), ours(ids, attention_mask=mask, labels=labels)
    valid = mask.bool() if task == "token-classification" else torch.ones(BATCH, dtype=torch.bool)
    torch.testing.assert_close(got.logits[valid], ref.logits[valid], rtol=0, atol=1e-5)
    torch.testing.assert_close(got.loss, ref.loss, rtol=0, atol=1e-5)
