"""distill/features.py: the per-family unit sites, attribution of teacher units, top-k selection and overlap.

Every test runs on the tiny checkpoints of the session fixture ``tiny_models`` on a small batch built with
``data_utils.datasets.response_batch`` (random token ids: attribution needs no meaningful text), single-threaded.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from data_utils.datasets import response_batch
from distill.config import InputError
from distill.features import (LAYOUTS, ModelAdapter, attribute_units, response_loglik, select_units,
                              selection_overlap, top_units)
from tools.make_tiny_models import FAMILIES

pytestmark = pytest.mark.usefixtures("in_process")


def load(path: Path, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype).eval()


def small_batch(vocab: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Three right-padded rows of different prompt/response lengths (the last row the longest)."""
    g = torch.Generator().manual_seed(seed)
    lengths = [(5, 4), (3, 6), (7, 5)]
    pairs = [(torch.randint(3, vocab, (p,), generator=g).tolist(), torch.randint(3, vocab, (r,), generator=g).tolist())
             for p, r in lengths]
    return response_batch(pairs, pad_token_id=0)


@pytest.fixture(scope="module")
def teachers(tiny_models: dict[str, dict[str, Path]]) -> dict[str, torch.nn.Module]:
    return {family: load(tiny_models[family]["teacher"]) for family in FAMILIES}


def reader_dim(weight: torch.Tensor, width: int) -> int:
    """The dimension of a projection's weight indexing its *input* units (GPT-2's Conv1D is [in, out], a Linear
    [out, in]); unambiguous on the tiny models, whose widths differ."""
    (dim,) = [d for d, size in enumerate(weight.shape) if size == width]
    return dim


# ------------------------------------------------------------------------------------------------------------ adapter
@pytest.mark.parametrize("family", FAMILIES)
def test_adapter_finds_each_familys_sites(family: str, teachers: dict, tiny_models: dict) -> None:
    model = teachers[family]
    adapter = ModelAdapter(model)
    cfg = model.config
    assert adapter.num_layers == cfg.num_hidden_layers
    assert adapter.hidden_size == cfg.hidden_size
    assert adapter.intermediate_size == getattr(cfg, {"gpt2": "n_inner", "opt": "ffn_dim"}.get(family,
                                                                                             "intermediate_size"))
    batch = small_batch(cfg.vocab_size)
    ids = batch["input_ids"]
    n = adapter.num_layers
    with torch.no_grad():
        reference = model(input_ids=ids, output_hidden_states=True)
        # The hooked MLP input has the intermediate width, and the residual sites are HF's hidden_states, -1 included.
        with adapter.hooked("mlp", range(n)) as mlp, adapter.hooked("hidden", [*range(n), -1]) as hidden:
            model(input_ids=ids)
    for layer in range(n):
        assert mlp[layer].shape == (*ids.shape, adapter.intermediate_size)
        assert torch.equal(hidden[layer], reference.hidden_states[layer])
    assert torch.equal(hidden[n], reference.hidden_states[-1])
    assert adapter.width("hidden", -1) == reference.hidden_states[-1].size(-1)
    # Scaling the MLP input of any block by 0 changes the output; scaling it by 1 does not.
    for layer in range(n):
        for factor, changes in ((0.0, True), (1.0, False)):
            with torch.no_grad(), adapter.hooked("mlp", [layer], lambda i, a: a * factor):
                logits = model(input_ids=ids).logits
            assert (not torch.equal(logits, reference.logits)) == changes, (layer, factor)
    assert adapter.mlp_module(-1) is adapter.mlp_module(n - 1)
    assert set(LAYOUTS) == set(FAMILIES)


@pytest.mark.parametrize("proj_dim", [48, 64])
def test_adapter_opt_final_site_without_final_norm(proj_dim: int) -> None:
    """OPT-350m's layout: no final layer norm (post-norm blocks), and a ``project_out`` where the embedding width
    differs — the final hidden state is project_out's output then, and the last block's output where neither
    exists."""
    from transformers import OPTConfig, OPTForCausalLM

    torch.manual_seed(0)
    cfg = OPTConfig(vocab_size=96, hidden_size=64, word_embed_proj_dim=proj_dim, num_hidden_layers=2,
                    num_attention_heads=2, ffn_dim=128, max_position_embeddings=64, do_layer_norm_before=False,
                    dropout=0.0, attention_dropout=0.0)
    model = OPTForCausalLM(cfg).eval()
    adapter = ModelAdapter(model)
    batch = small_batch(cfg.vocab_size)
    with torch.no_grad():
        reference = model(input_ids=batch["input_ids"], output_hidden_states=True)
        with adapter.hooked("hidden", [0, 1, -1]) as hidden:
            model(input_ids=batch["input_ids"])
    for layer in (0, 1, -1):
        torch.testing.assert_close(hidden[layer % 3], reference.hidden_states[layer], rtol=0, atol=0)
    assert adapter.width("hidden", -1) == proj_dim and adapter.width("hidden", 0) == 64
    scores = attribute_units(model, batch, [-1, 1], method="grad")
    assert scores[-1].shape == (proj_dim,) and scores[1].shape == (64,)


def test_adapter_unknown_model_type_names_the_supported(teachers: dict) -> None:
    model = teachers["gpt2"]
    saved = model.config.model_type
    try:
        model.config.model_type = "bloom"
        with pytest.raises(InputError, match=r"'bloom'.*supported: gpt2, llama, opt, qwen2"):
            ModelAdapter(model)
    finally:
        model.config.model_type = saved


def test_adapter_layer_range(teachers: dict) -> None:
    adapter = ModelAdapter(teachers["llama"])  # 4 blocks: hidden 0..4, mlp 0..3
    assert adapter.layer_index("hidden", -1) == 4 and adapter.layer_index("hidden", -5) == 0
    assert adapter.layer_index("mlp", -1) == 3
    with pytest.raises(InputError, match=r"layer 4 out of range for kind='mlp'.*0\.\.3"):
        adapter.layer_index("mlp", 4)
    with pytest.raises(InputError, match="kind='attn'"):
        adapter.layer_index("attn", 0)


# -------------------------------------------------------------------------------------------------------- attribution
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", ["grad", "integrated_grads"])
def test_unit_without_outgoing_weights_scores_zero(family: str, method: str, tiny_models: dict) -> None:
    """A unit whose value cannot reach the loss gets score 0 exactly.

    MLP unit j of block l: zero the down projection's weights reading it (its row of GPT-2's Conv1D, its column of a
    Linear). Residual unit j: only at the final hidden state (after the last norm) is there a set of weights that is
    its whole outgoing path — the output layer's column j. A residual unit of an earlier layer also feeds every later
    norm's mean/variance (LayerNorm) or RMS statistic through the residual stream, so no zeroed weights remove its
    influence; it is not tested that way. (Tied embeddings: zeroing the output column also zeroes that embedding
    dimension, which changes the forward but not the property.)"""
    model = load(tiny_models[family]["teacher"])
    adapter = ModelAdapter(model)
    batch = small_batch(model.config.vocab_size, seed=1)
    block = 1

    def scores() -> tuple[torch.Tensor, torch.Tensor]:
        return (attribute_units(model, batch, [block], kind="mlp", method=method)[block],
                attribute_units(model, batch, [-1], kind="hidden", method=method)[-1])

    before_mlp, before_hidden = scores()
    # The units that mattered most, so the zero below is the construction's doing (a ReLU unit may be 0 anyway).
    unit_mlp, unit_hidden = int(before_mlp.argmax()), int(before_hidden.argmax())
    with torch.no_grad():
        w = adapter.mlp_module(block).weight
        w.index_fill_(reader_dim(w, adapter.intermediate_size), torch.tensor([unit_mlp]), 0.0)
        model.get_output_embeddings().weight[:, unit_hidden] = 0.0
    after_mlp, after_hidden = scores()
    for before, after, unit in ((before_mlp, after_mlp, unit_mlp), (before_hidden, after_hidden, unit_hidden)):
        assert after.dtype == torch.float32
        assert float(before[unit]) > 0.0
        assert float(after[unit]) == 0.0
        assert float(torch.cat([after[:unit], after[unit + 1:]]).min()) >= 0.0
        assert int((after > 0).sum()) > after.numel() // 2, "the other units still reach the loss"


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("kind,layer", [("hidden", 1), ("mlp", 0), ("hidden", -1)])
def test_integrated_gradients_completeness(family: str, kind: str, layer: int, tiny_models: dict) -> None:
    """Σ over units, positions and rows of the signed IG attributions = f(x) − f(baseline), f the response
    log-likelihood and the baseline the layer's activations zeroed on the attributed (response) positions.

    float64, so that the comparison measures the quadrature error alone: at 64 steps it was below 3e-7 of |Δf| on
    each case here (the plain midpoint rule: 2e-2 on GPT-2's residual layer 1, 1e-1 on LLaMA's; distill.features
    ig_nodes), so 1e-5 leaves room for rounding and still fails a lesser quadrature."""
    model = load(tiny_models[family]["teacher"], torch.float64)
    adapter = ModelAdapter(model)
    batch = small_batch(model.config.vocab_size, seed=2)
    scores = attribute_units(model, batch, [layer], kind=kind, method="integrated_grads", ig_steps=64,
                             aggregate="signed")[layer]
    chosen = (batch["labels"] != -100)[..., None]
    with torch.no_grad():
        f_x = response_loglik(model, batch["input_ids"], batch["labels"])
        with adapter.hooked(kind, [layer], lambda i, a: torch.where(chosen, torch.zeros_like(a), a)):
            f_base = response_loglik(model, batch["input_ids"], batch["labels"])
    delta = float(f_x - f_base)
    assert abs(delta) > 1e-2, "a baseline that changes nothing would make the check empty"
    assert abs(float(scores.double().sum()) - delta) <= 1e-5 * abs(delta)


def test_integrated_gradients_chunks_and_positions(teachers: dict) -> None:
    """The steps in chunks give the one-batch result; the position set changes what is scaled and summed."""
    model, batch = teachers["qwen2"], small_batch(teachers["qwen2"].config.vocab_size, seed=3)
    one = attribute_units(model, batch, [2], kind="mlp", method="integrated_grads", ig_steps=6)[2]
    chunked = attribute_units(model, batch, [2], kind="mlp", method="integrated_grads", ig_steps=6, ig_chunk=4)[2]
    torch.testing.assert_close(chunked, one, rtol=1e-4, atol=1e-7)
    every = attribute_units(model, batch, [2], kind="mlp", method="integrated_grads", ig_steps=6, positions="all")[2]
    assert not torch.allclose(every, one)


@pytest.mark.parametrize("family", ["gpt2", "opt"])
def test_grad_is_gradient_times_activation(family: str, teachers: dict) -> None:
    """Several layers in one call equal the reference: autograd of f through HF's own hidden states."""
    model = teachers[family]
    batch = small_batch(model.config.vocab_size, seed=4)
    layers = [0, 2, -1]
    signed = attribute_units(model, batch, layers, kind="hidden", method="grad", aggregate="signed")
    absolute = attribute_units(model, batch, layers, kind="hidden", method="grad")
    with torch.enable_grad():
        embeds = model.get_input_embeddings()(batch["input_ids"]).detach().requires_grad_(True)
        out = model(inputs_embeds=embeds, output_hidden_states=True)
        states = [out.hidden_states[layer] for layer in layers]
        mask = batch["labels"] != -100
        logp = out.logits.float().log_softmax(-1)[mask].gather(-1, batch["labels"][mask][:, None]).sum()
        grads = torch.autograd.grad(logp, states)
    for layer, state, g in zip(layers, states, grads):
        contrib = (state * g).detach() * mask[..., None]
        torch.testing.assert_close(signed[layer], contrib.sum((0, 1)), rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(absolute[layer], contrib.abs().sum((0, 1)), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("positions", ["response", "all"])
def test_max_activations_and_random(positions: str, teachers: dict) -> None:
    model = teachers["opt"]  # OPT runs its MLP on flattened rows: the [B, T, D] view is checked here too
    adapter = ModelAdapter(model)
    batch = small_batch(model.config.vocab_size, seed=5)
    scores = attribute_units(model, batch, [1, -1], kind="mlp", method="max_activations", positions=positions)
    chosen = batch["labels"] != -100 if positions == "response" else batch["attention_mask"].bool()
    with torch.no_grad(), adapter.hooked("mlp", [1, 3]) as acts:
        model(input_ids=batch["input_ids"])
    for layer, index in ((1, 1), (-1, 3)):
        torch.testing.assert_close(scores[layer], acts[index][chosen].abs().amax(0))
    a = attribute_units(model, batch, [0, 1], kind="hidden", method="random", seed=3)
    b = attribute_units(model, batch, [1], kind="hidden", method="random", seed=3)
    c = attribute_units(model, batch, [1], kind="hidden", method="random", seed=4)
    assert a[1].shape == (adapter.hidden_size,) and torch.equal(a[1], b[1]) and not torch.equal(b[1], c[1])
    assert not torch.equal(a[0], a[1])


def test_teacher_unchanged_and_without_gradients(tiny_models: dict) -> None:
    """Even with weights that require grad (as from_pretrained leaves them), attribution leaves no .grad and no
    change; the model's training mode is restored."""
    model = load(tiny_models["llama"]["teacher"]).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch = small_batch(model.config.vocab_size, seed=6)
    for method in ("grad", "integrated_grads", "max_activations"):
        for kind, layers in (("hidden", [0, -1]), ("mlp", [0, -1])):
            scores = attribute_units(model, batch, layers, kind=kind, method=method, ig_steps=3)
            assert all(bool(torch.isfinite(s).all()) for s in scores.values())
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(m.training for m in model.modules())


def test_attribution_bad_input(teachers: dict) -> None:
    model = teachers["gpt2"]
    batch = small_batch(model.config.vocab_size)
    with pytest.raises(InputError, match="method='gradX'"):
        attribute_units(model, batch, [0], method="gradX")
    with pytest.raises(InputError, match="lacks attention_mask"):
        attribute_units(model, {k: v for k, v in batch.items() if k != "attention_mask"}, [0])
    with pytest.raises(InputError, match="no response token"):
        attribute_units(model, {**batch, "labels": torch.full_like(batch["labels"], -100)}, [0])
    with pytest.raises(InputError, match="same layer twice"):
        attribute_units(model, batch, [4, -1])
    with pytest.raises(InputError, match="'signed' applies"):
        attribute_units(model, batch, [0], method="max_activations", aggregate="signed")
    with torch.inference_mode(), pytest.raises(InputError, match="outside torch.inference_mode"):
        attribute_units(model, batch, [0], method="integrated_grads")
    assert attribute_units(model, batch, [0], method="random")[0].shape == (model.config.n_embd,)


# ---------------------------------------------------------------------------------------------------------- selection
def test_top_units_exact_count_ties_and_order() -> None:
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(50, generator=g)
    scores[[3, 17, 40]] = scores.max() + 1  # a three-way tie at the top
    scores[[8, 9]] = 0.5
    for k in (1, 2, 3, 10, 50):
        kept = top_units(scores, k)
        assert kept.numel() == k and kept.dtype == torch.long and len(set(kept.tolist())) == k
        assert torch.equal(kept, kept.sort().values)
        dropped = torch.ones(50, dtype=torch.bool)
        dropped[kept] = False
        if dropped.any():
            assert float(scores[kept].min()) >= float(scores[dropped].max())
        by_score = top_units(scores, k, order="score")
        assert torch.equal(by_score.sort().values, kept)
        assert bool((scores[by_score][:-1] >= scores[by_score][1:]).all())
    assert top_units(scores, 2).tolist() == [3, 17]  # ties: the lower index first
    assert top_units(scores, 3, order="score").tolist() == [3, 17, 40]
    with pytest.raises(InputError, match="k=51 must be an integer in 1..50"):
        top_units(scores, 51)
    with pytest.raises(InputError, match="NaN"):
        top_units(torch.tensor([1.0, float("nan")]), 1)


def test_select_units_default_k_is_the_students_width(teachers: dict, tiny_models: dict) -> None:
    teacher = teachers["gpt2"]
    student = load(tiny_models["gpt2"]["student"])
    batch = small_batch(teacher.config.vocab_size, seed=7)
    scores = attribute_units(teacher, batch, [-1, -2], kind="mlp", method="grad")
    kept = select_units(scores, student=student, kind="mlp")
    assert {layer: v.numel() for layer, v in kept.items()} == {-1: student.config.n_inner, -2: student.config.n_inner}
    for layer, v in kept.items():
        assert torch.equal(v, top_units(scores[layer], student.config.n_inner))
    hidden = select_units(attribute_units(teacher, batch, [-1], method="grad"), student=student)
    assert hidden[-1].numel() == student.config.n_embd
    paired = select_units(scores, student=student, kind="mlp", student_layers=[-1, 0])
    assert all(v.numel() == student.config.n_inner for v in paired.values())
    with pytest.raises(InputError, match="1 student layers for 2 teacher layers"):
        select_units(scores, student=student, kind="mlp", student_layers=[-1])
    assert select_units(scores, 5)[-1].numel() == 5


def test_selection_overlap() -> None:
    assert selection_overlap(torch.tensor([1, 2, 3, 4]), torch.tensor([4, 3, 2, 1])) == 1.0
    assert selection_overlap(torch.tensor([1, 2, 3, 4]), torch.tensor([1, 2, 8, 9])) == 0.5
    assert selection_overlap(torch.tensor([1, 2]), torch.tensor([3, 4])) == 0.0
    with pytest.raises(InputError, match="same k distinct"):
        selection_overlap(torch.tensor([1, 1]), torch.tensor([1, 2]))
    with pytest.raises(InputError, match="same k distinct"):
        selection_overlap(torch.tensor([1, 2, 3]), torch.tensor([1, 2]))
