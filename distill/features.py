"""Selective feature distillation, teacher side: where a model's units are, how much each matters, which to keep.

Units
-----
Two kinds of unit of a Hugging Face causal LM, each indexed by a layer:

* ``kind="hidden"`` — unit ``j`` of the residual stream ``hidden_states[l]`` as the model returns it with
  ``output_hidden_states=True``: ``l = 0`` the embeddings (the input of block 0), ``l = i`` the output of block ``i``
  (``1 <= i < n``), and ``l = n`` (also written ``-1``) the *final* hidden state, after the last norm (and OPT's
  ``project_out`` where it has one) — what the output layer reads. Layers ``0..n`` or ``-(n+1)..-1``.
* ``kind="mlp"`` — intermediate unit ``j`` of the MLP of block ``l`` (``0..n-1`` or ``-n..-1``): the input of the
  module that projects the MLP back to the residual width, i.e. the real activation the block computes —
  ``act(c_fc(ln_2(x)))`` for GPT-2 (``mlp.c_proj``'s input), ``act(fc1(norm(x)))`` for OPT (``fc2``'s), and
  ``act(gate_proj(norm(x))) * up_proj(norm(x))`` for LLaMA / Qwen2 (``mlp.down_proj``'s).

:class:`ModelAdapter` finds these places from one table, :data:`LAYOUTS`, keyed by ``config.model_type``, and its
:meth:`ModelAdapter.hooked` context reads (and may replace) the activations of any layers during the forwards run
inside it — with their autograd graph, so the same hook serves the student's side of an alignment loss.

Attribution
-----------
:func:`attribute_units` scores every unit of the chosen layers for the teacher's log-likelihood of the response
tokens of a right-padded, pre-shifted batch (``input_ids``, ``labels`` with -100 off the response,
``attention_mask``, as ``data_utils.datasets.LMCollator`` and ``response_batch`` make them):

    f(batch) = sum over rows b and positions t with labels[b, t] != -100 of log p_teacher(labels[b, t] | prefix)

Attributions are per (row b, position t, unit j) and are summed over the *position set* — the positions whose
next token is a response token (``positions="response"``, the default: the loss positions), or every non-pad
position (``positions="all"``: the released code sums its scores over the whole sequence and aligns the features on
all non-pad positions) — and the batch:

* ``grad``: gradient × activation, ``a[b,t,j] · ∂f/∂a[b,t,j]``. With ``aggregate="abs"`` (default) the score is
  ``Σ_{b,t} |a·∂f/∂a|`` — absolute values *before* the sum: the features are aligned position by position, so a
  unit that moves the prediction strongly at many positions matters even where those effects have opposite signs
  and cancel in the sum. ``aggregate="signed"`` gives ``Σ_{b,t} a·∂f/∂a``, the first-order estimate of
  ``f(x) − f(x with unit j zeroed on the position set)``.
* ``integrated_grads``: ``a · ∫_0^1 ∂f/∂a(α·a) dα`` per (b, t, j), the path scaling the layer's activations on
  the position set from a zero baseline (the positions outside the set keep their values), by ``ig_steps``-point
  quadrature (:func:`ig_nodes`: Gauss–Legendre, nodes denser near 0); all steps run as copies of the batch in one
  forward/backward (or ``ig_chunk`` steps at a time). Completeness: the signed attributions summed over units,
  positions and rows equal ``f(x) − f(baseline)`` up to the quadrature error (tests/test_features_attribution.py;
  :func:`ig_nodes` on how many steps a residual layer needs). Aggregated as for ``grad``.
* ``max_activations``: ``max_{b,t} |a[b,t,j]|`` over the position set (no gradient).
* ``random``: a control — seeded uniform scores, a function of ``(seed, layer)`` only.

The teacher's weights never receive a gradient (every backward is ``torch.autograd.grad`` with respect to
activations only) and never change; the model runs in eval mode for the call (its mode is restored after).

Selection
---------
:func:`top_units` keeps the ``k`` best units of a layer — exactly the ``k`` highest scores, ties broken towards the
lower unit index — returned in ascending unit order by default (``order="score"``: best first), so a student unit
``i`` is paired with the ``i``-th kept teacher unit in the teacher's own order and a refresh that swaps one unit
shifts few pairs. ``k`` is the student's width by default (:func:`select_units` with a ``student``).
:func:`selection_overlap` is ``|A ∩ B| / k`` of two selections, for logging how much a refresh changed.

Differences from the released code (Khsaadi/KD-LLMs ``minillm/knowledge_neurons``), each deliberate:

* ``grad`` there differentiates the *sum* of the whole softmax (``grad_outputs=ones`` on all probabilities), which
  is the constant 1, so its scores are rounding noise, and it scores the gradient alone, signed; here it is
  gradient × activation of the response log-likelihood.
* Its MLP units, for ``grad``/``gradX`` and for the features it aligns, are ``c_fc(hidden_states[l-1])``: the
  block's input without the block's layer norm, without the attention sub-layer's contribution and before the
  activation function — not what the block computes, nor on the forward path of the loss; for IG and
  ``max_activations``, the ``c_fc`` output of the real forward (before the activation function). Here they are the
  real input of the down projection, after the activation, everywhere.
* Its ``gradX`` and IG differentiate one token's probability: IG the last response token's (its activations patched
  at that one position), ``gradX`` the probability that the second-to-last position gives to the token *before* the
  one it predicts (``response[:, -2]`` gathered from ``logits[:, -2]``, an off-by-one). Here: the log-likelihood of
  every response token (the quantity KD trains on), attributed at every position of the position set.
* Its IG scales with ``linspace(0, 1, steps)`` (both end points: a biased Riemann sum) and divides by ``steps``
  twice, so its attributions sum to about (f(x) − f(0)) / steps, of one token's probability; here Gauss–Legendre
  nodes (:func:`ig_nodes`), so completeness holds. It ran the steps as a Python loop of batches; here one batch of
  copies.
* Its ``max_activations`` is the *signed* mean over response positions of the batch-summed pre-activation
  ``c_fc`` output (the knowledge-neurons library's is the activation at one position); here ``max |a|`` over the
  position set and the batch, of the real activation.
* Its top-k is in score order; here ascending unit order by default (see Selection).
"""
from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from data_utils.datasets import IGNORE_INDEX
from distill.config import InputError

__all__ = ["Layout", "LAYOUTS", "KINDS", "METHODS", "POSITIONS", "AGGREGATES", "ModelAdapter", "attribute_units",
           "response_loglik", "ig_nodes", "top_units", "select_units", "selection_overlap"]

KINDS = ("hidden", "mlp")
METHODS = ("grad", "integrated_grads", "max_activations", "random")
POSITIONS = ("response", "all")
AGGREGATES = ("abs", "signed")


@dataclass(frozen=True)
class Layout:
    """Where a module layout keeps its parts (dotted attribute paths) and its sizes (config attribute names).

    ``final``: the modules that may produce the final hidden state, the last to run first; the first one present (not
    None) is hooked, and where none is, the last block's output is the final hidden state.
    ``intermediate_default``: the MLP width as a multiple of the hidden size where the config leaves it None
    (GPT-2's ``n_inner``)."""

    blocks: str
    mlp_input: str
    final: tuple[str, ...]
    hidden_size: str
    intermediate_size: str
    intermediate_default: Optional[int] = None


_LLAMA_LIKE = Layout(blocks="model.layers", mlp_input="mlp.down_proj", final=("model.norm",),
                     hidden_size="hidden_size", intermediate_size="intermediate_size")

LAYOUTS: dict[str, Layout] = {
    "gpt2": Layout(blocks="transformer.h", mlp_input="mlp.c_proj", final=("transformer.ln_f",),
                   hidden_size="n_embd", intermediate_size="n_inner", intermediate_default=4),
    "opt": Layout(blocks="model.decoder.layers", mlp_input="fc2",
                  final=("model.decoder.project_out", "model.decoder.final_layer_norm"),
                  hidden_size="hidden_size", intermediate_size="ffn_dim"),
    "llama": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
}


def _attr(root: Any, path: str) -> Any:
    for name in path.split("."):
        root = getattr(root, name, None)
        if root is None:
            return None
    return root


def _unwrap(model: nn.Module) -> nn.Module:
    """The Hugging Face model inside a DeepSpeed engine (``.module``) or a PEFT wrapper (``get_base_model``)."""
    model = getattr(model, "module", model)
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


class ModelAdapter:
    """The unit sites of one causal LM (see the module docstring for the layer conventions).

    ``blocks`` (the transformer blocks, in order), ``num_layers`` (n), ``hidden_size``, ``intermediate_size`` (from
    the config), ``mlp_module(l)`` (the module whose input is block l's MLP activation)."""

    def __init__(self, model: nn.Module):
        self.model = _unwrap(model)
        config = getattr(self.model, "config", None)
        self.model_type = str(getattr(config, "model_type", None))
        layout = LAYOUTS.get(self.model_type)
        if layout is None:
            raise InputError(f"feature attribution: model_type {self.model_type!r} has no module layout; supported: "
                             f"{', '.join(sorted(LAYOUTS))} (add one to distill.features.LAYOUTS)")
        self.layout = layout
        blocks = _attr(self.model, layout.blocks)
        if blocks is None or len(blocks) == 0:
            raise InputError(f"feature attribution: a {self.model_type} model without {layout.blocks}; is it a "
                             f"causal LM (AutoModelForCausalLM)?")
        self.blocks: list[nn.Module] = list(blocks)
        self.num_layers = len(self.blocks)
        self.hidden_size = int(getattr(config, layout.hidden_size))
        inner = getattr(config, layout.intermediate_size, None)
        self.intermediate_size = int(inner if inner is not None else layout.intermediate_default * self.hidden_size)
        self._final = next((m for m in (_attr(self.model, p) for p in layout.final) if m is not None), None)

    # ---------------------------------------------------------------------------------------------- indices
    def layer_index(self, kind: str, layer: int) -> int:
        """``layer`` as a non-negative index: 0..n for ``hidden``, 0..n-1 for ``mlp``."""
        _check_choice("kind", kind, KINDS)
        count = self.num_layers + 1 if kind == "hidden" else self.num_layers
        if isinstance(layer, bool) or not isinstance(layer, int) or not -count <= layer < count:
            raise InputError(f"feature attribution: layer {layer!r} out of range for kind={kind!r} of a "
                             f"{self.num_layers}-block {self.model_type} model: 0..{count - 1} (or -{count}..-1)")
        return layer % count

    def mlp_module(self, layer: int) -> nn.Module:
        """The module of block ``layer`` whose input is the MLP intermediate activation."""
        index = self.layer_index("mlp", layer)
        module = _attr(self.blocks[index], self.layout.mlp_input)
        if module is None:
            raise InputError(f"feature attribution: block {index} of the {self.model_type} model has no "
                             f"{self.layout.mlp_input}")
        return module

    def width(self, kind: str, layer: int = -1) -> int:
        """Units of ``kind`` at ``layer``: the MLP width, or the hidden size (OPT's ``project_out`` width for the
        final hidden state where the model has one)."""
        index = self.layer_index(kind, layer)
        if kind == "mlp":
            return self.intermediate_size
        if index == self.num_layers and isinstance(self._final, nn.Linear):
            return int(self._final.out_features)
        return self.hidden_size

    # ---------------------------------------------------------------------------------------------- hooks
    @contextlib.contextmanager
    def hooked(self, kind: str, layers: Sequence[int],
               replace: Optional[Callable[[int, Tensor], Tensor]] = None) -> Iterator[dict[int, Tensor]]:
        """Within the block, each forward of the model records the ``kind`` activations of ``layers`` — ``[B, T, D]``
        tensors of the forward itself, graph included — into the yielded dict, keyed by the non-negative layer
        index; ``replace(index, activation)``, when given, returns the tensor the model continues with instead
        (same shape). The hooks are removed on leaving the block."""
        indices = [self.layer_index(kind, layer) for layer in layers]
        acts: dict[int, Tensor] = {}
        handles = []
        shape: dict[str, tuple[int, int]] = {}

        def swap(index: int, value: Tensor) -> Tensor:
            # OPT runs its MLP on [B*T, D] rows; the activation is handed out as [B, T, D] and put back as it came.
            flat = value.dim() == 2
            act = value.view(*shape["bt"], value.size(-1)) if flat else value
            if replace is not None:
                act = replace(index, act)
            acts[index] = act
            return act.reshape(value.shape) if flat else act

        def note_shape(module: nn.Module, args: tuple, kwargs: dict) -> None:
            ids = kwargs.get("input_ids", args[0] if args else None)
            embeds = kwargs.get("inputs_embeds")
            ref = ids if ids is not None else embeds
            shape["bt"] = (int(ref.shape[0]), int(ref.shape[1]))

        def pre_hook(index: int) -> Callable:
            def hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
                if args:
                    return (swap(index, args[0]),) + tuple(args[1:]), kwargs
                return args, {**kwargs, "hidden_states": swap(index, kwargs["hidden_states"])}
            return hook

        def post_hook(index: int) -> Callable:
            def hook(module: nn.Module, args: tuple, output: Any) -> Any:
                if isinstance(output, tuple):
                    return (swap(index, output[0]),) + output[1:]
                return swap(index, output)
            return hook

        try:
            handles.append(self.model.register_forward_pre_hook(note_shape, with_kwargs=True))
            for index in indices:
                if kind == "mlp":
                    handles.append(self.mlp_module(index).register_forward_pre_hook(
                        pre_hook(index), with_kwargs=True))
                elif index < self.num_layers:  # hidden_states[l] is block l's input
                    handles.append(self.blocks[index].register_forward_pre_hook(pre_hook(index), with_kwargs=True))
                else:  # the final hidden state: the output of the last norm (or of the last block where none is)
                    handles.append((self._final or self.blocks[-1]).register_forward_hook(post_hook(index)))
            yield acts
        finally:
            for handle in handles:
                handle.remove()


# -------------------------------------------------------------------------------------------------- attribution
def _check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise InputError(f"feature attribution: {name}={value!r} is not one of {', '.join(choices)}")


def _takes(model: nn.Module, name: str) -> bool:
    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def response_loglik(model: nn.Module, input_ids: Tensor, labels: Tensor) -> Tensor:
    """f = the sum over rows and response positions (labels != -100) of log p(labels | prefix): a float32 scalar
    (float64 for a float64 model).

    Right-padded rows: no attention mask is needed (a causal model's real tokens only attend to earlier real
    tokens). The output layer runs only from the first response position of the batch on (``logits_to_keep``),
    and log-softmax in float32 only on the response positions, so no float32 [B, T, V] tensor is made."""
    mask = labels != IGNORE_INDEX
    first = int(mask.any(dim=0).nonzero()[0])
    kw: dict[str, Any] = {"use_cache": False}
    keep = input_ids.size(1) - first
    if _takes(model, "logits_to_keep"):
        kw["logits_to_keep"] = keep
    logits = model(input_ids=input_ids, **kw).logits[:, -keep:]
    mask, labels = mask[:, -keep:], labels[:, -keep:]
    picked = logits[mask]
    picked = picked.to(torch.promote_types(picked.dtype, torch.float32))  # float64 stays float64
    return (picked.gather(-1, labels[mask].unsqueeze(-1)).squeeze(-1) - picked.logsumexp(-1)).sum()


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode (no dropout) for the call, the model's own mode restored after."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def _position_set(batch: Mapping[str, Tensor], positions: str) -> Tensor:
    if positions == "response":
        return batch["labels"] != IGNORE_INDEX
    return batch["attention_mask"].bool()


def _check_batch(batch: Mapping[str, Tensor]) -> None:
    missing = [k for k in ("input_ids", "labels", "attention_mask") if k not in batch]
    if missing:
        raise InputError(f"feature attribution: the batch lacks {', '.join(missing)}; pass a training batch "
                         f"(data_utils.datasets.LMCollator or response_batch)")
    shapes = {k: tuple(batch[k].shape) for k in ("input_ids", "labels", "attention_mask")}
    if len(set(shapes.values())) != 1 or len(shapes["input_ids"]) != 2:
        raise InputError(f"feature attribution: input_ids, labels and attention_mask must be [B, T] of one shape, "
                         f"got {shapes}")
    if not bool((batch["labels"] != IGNORE_INDEX).any()):
        raise InputError("feature attribution: the batch has no response token (every label is -100); the "
                         "log-likelihood to attribute is empty")


def attribute_units(model: nn.Module, batch: Mapping[str, Tensor], layers: Sequence[int], *, kind: str = "hidden",
                    method: str = "grad", positions: str = "response", aggregate: str = "abs", ig_steps: int = 8,
                    ig_chunk: Optional[int] = None, seed: int = 0) -> dict[int, Tensor]:
    """Per-unit scores of ``layers`` for the model's response log-likelihood on ``batch`` (module docstring).

    ``batch``: right-padded, pre-shifted ``input_ids`` / ``labels`` / ``attention_mask``, ``[B, T]`` each (moved to
    the model's device). ``layers``: layer indices of ``kind`` (negative ones count from the end). ``ig_steps``:
    quadrature points of ``integrated_grads``; ``ig_chunk``: steps per forward (default: all in one).
    ``aggregate``: ``"abs"`` or ``"signed"`` sums over positions and rows (``grad``, ``integrated_grads``).
    ``seed``: the ``random`` control's.

    Returns ``{layer (as passed): [D] scores}``, D the layer's width, on the model's device, float32 (float64 for
    a float64 model, except ``random``)."""
    adapter = ModelAdapter(model)
    _check_choice("method", method, METHODS)
    _check_choice("positions", positions, POSITIONS)
    _check_choice("aggregate", aggregate, AGGREGATES)
    layers = list(layers)
    if not layers:
        raise InputError("feature attribution: no layers given")
    indices = [adapter.layer_index(kind, layer) for layer in layers]
    if len(set(indices)) != len(indices):
        raise InputError(f"feature attribution: layers {layers} name the same layer twice")
    if aggregate == "signed" and method not in ("grad", "integrated_grads"):
        raise InputError(f"feature attribution: aggregate='signed' applies to grad and integrated_grads, not "
                         f"{method}")
    if method == "integrated_grads" and (ig_steps < 1 or (ig_chunk is not None and ig_chunk < 1)):
        raise InputError(f"feature attribution: ig_steps ({ig_steps}) and ig_chunk ({ig_chunk}) must be >= 1")
    _check_batch(batch)
    if method in ("grad", "integrated_grads") and torch.is_inference_mode_enabled():
        raise InputError(f"feature attribution: {method} needs autograd; call it outside torch.inference_mode()")
    device = next(adapter.model.parameters()).device
    if method == "random":  # a function of (seed, layer) alone, whichever other layers are asked for
        return {layer: torch.rand(adapter.width(kind, index), generator=torch.Generator().manual_seed(
            seed * 1_000_003 + index)).to(device) for layer, index in zip(layers, indices)}
    batch = {k: batch[k].to(device) for k in ("input_ids", "labels", "attention_mask")}
    chosen = _position_set(batch, positions)
    hf = adapter.model
    with _eval_mode(hf), contextlib.ExitStack() as stack:
        if method == "max_activations":
            stack.enter_context(torch.no_grad())
            with adapter.hooked(kind, indices) as acts:
                hf(input_ids=batch["input_ids"], use_cache=False)
            scores = {i: (_wide(acts[i]).abs() * chosen[..., None]).amax(dim=(0, 1)) for i in indices}
        elif method == "grad":
            stack.enter_context(torch.enable_grad())
            scores = _grad_scores(adapter, batch, indices, kind, chosen, aggregate)
        else:
            stack.enter_context(torch.enable_grad())
            scores = {i: _integrated_grads(adapter, batch, i, kind, chosen, aggregate, ig_steps, ig_chunk or ig_steps)
                      for i in indices}
    return {layer: scores[index] for layer, index in zip(layers, indices)}


def _leaf(index: int, act: Tensor) -> Tensor:
    # The first site on the path becomes a leaf that requires grad (the teacher's weights do not); later sites are
    # downstream of it and already carry a graph, so they are kept as they are (detaching them would cut the path
    # from the earlier site to the loss).
    return act if act.requires_grad else act.detach().requires_grad_(True)


def _aggregate(contrib: Tensor, chosen: Tensor, aggregate: str) -> Tensor:
    """[B, T, D] per-position attributions -> [D]: summed over the chosen positions, |.| first for ``abs``."""
    contrib = contrib.abs() if aggregate == "abs" else contrib
    return (contrib * chosen[..., None]).sum(dim=(0, 1))


def _grad_scores(adapter: ModelAdapter, batch: Mapping[str, Tensor], indices: list[int], kind: str, chosen: Tensor,
                 aggregate: str) -> dict[int, Tensor]:
    with adapter.hooked(kind, indices, _leaf) as acts:
        f = response_loglik(adapter.model, batch["input_ids"], batch["labels"])
    # Gradients w.r.t. the activations only: nothing reaches a parameter's .grad.
    grads = torch.autograd.grad(f, [acts[i] for i in indices], allow_unused=True)
    return {i: _aggregate(_wide(acts[i].detach()) * _wide(torch.zeros_like(acts[i]) if g is None else g),
                          chosen, aggregate) for i, g in zip(indices, grads)}


def ig_nodes(steps: int) -> tuple[Tensor, Tensor]:
    """Quadrature nodes α_k and weights w_k (Σ w_k = 1) of the IG path integral ∫_0^1 ∂f/∂a(α·a) dα, float64.

    Gauss–Legendre in u with α = u² (so dα = 2u du): Gauss–Legendre, Captum's default for IG, is exact for smooth
    integrands with few nodes, and the warp puts more of them near α = 0, where a residual-stream path does most of its
    change — the next block's norm is scale-invariant except for its epsilon, so f(α·a) moves mostly at small α.
    Relative completeness error on the tiny models (float64) at 8 / 16 / 64 steps:

    ==========================  ==============================  ===========================  =======================
    site                        these nodes                     midpoint rule                the release's grid
    ==========================  ==============================  ===========================  =======================
    GPT-2 residual layer 1      1.3e-2 / 5.7e-5 / 7e-14         4.6e-1 / 1.8e-1 / 2.2e-2     4.5 / 2.0 / 4.1e-1
    LLaMA residual layer 1      1.2e-2 / 4.3e-4 / 2e-8          4.1e-1 / 3.1e-1 / 9.8e-2     7.9 / 3.7 / 7.6e-1
    MLP units, final hidden     < 3e-7 at 8                     < 2e-4 at 8                  < 3e-3 at 8
    OPT residual layer 2        3.3 / 3.0 / 1.8e-2              12 / 8.1 / 5.4               110 / 61 / 16
    ==========================  ==============================  ===========================  =======================

    (The release's grid: ``linspace(0, 1, steps)``, mean of the gradients.) MLP units and the final hidden state
    are exact to rounding at the default 8 steps; an interior residual layer (the release's ``--hidden`` layers -2
    and -3) is approximate at 8, and one whose path is far from monotone — OPT layer 2's f rises and falls by tens of
    times its net change — needs many more."""
    x, w = np.polynomial.legendre.leggauss(steps)
    u, w = torch.from_numpy((x + 1) / 2), torch.from_numpy(w / 2)
    return u * u, w * 2 * u


def _wide(t: Tensor) -> Tensor:
    return t.to(torch.promote_types(t.dtype, torch.float32))


def _integrated_grads(adapter: ModelAdapter, batch: Mapping[str, Tensor], index: int, kind: str, chosen: Tensor,
                      aggregate: str, steps: int, chunk: int) -> Tensor:
    """a · Σ_k w_k ∂f/∂a(α_k·a) per (b, t, j) on the chosen positions (nodes: :func:`ig_nodes`); ``chunk`` steps
    run as copies of the batch in one forward (row r·B + b is step r of row b)."""
    rows = batch["input_ids"].size(0)
    alphas, weights = ig_nodes(steps)
    grad_sum: Optional[Tensor] = None
    x: Optional[Tensor] = None
    for start in range(0, steps, chunk):
        alpha, weight = alphas[start:start + chunk], weights[start:start + chunk]
        copies = alpha.numel()
        sel = chosen.repeat(copies, 1)[..., None]
        row_alpha = alpha.repeat_interleave(rows).to(chosen.device)[:, None, None]
        captured: dict[str, Tensor] = {}

        def scale(i: int, act: Tensor) -> Tensor:
            captured["x"] = act.detach()[:rows]  # every copy computes the same activation below the site
            # Scaled on the chosen positions only; the rest keep their values (the baseline is zero there alone).
            factor = torch.where(sel, row_alpha.to(act.dtype), torch.ones((), dtype=act.dtype, device=act.device))
            return (act.detach() * factor).requires_grad_(True)

        with adapter.hooked(kind, [index], scale) as acts:
            f = response_loglik(adapter.model, batch["input_ids"].repeat(copies, 1), batch["labels"].repeat(copies, 1))
        (g,) = torch.autograd.grad(f, [acts[index]])
        g = _wide(g).view(copies, rows, *g.shape[1:])
        g = (g * weight.to(g)[:, None, None, None]).sum(dim=0)
        grad_sum = g if grad_sum is None else grad_sum + g
        x = _wide(captured["x"]) if x is None else x
    assert grad_sum is not None and x is not None
    return _aggregate(x * grad_sum, chosen, aggregate)


# ---------------------------------------------------------------------------------------------------- selection
def top_units(scores: Tensor, k: int, order: str = "index") -> Tensor:
    """The ``k`` units with the highest scores of a ``[D]`` score vector: a long tensor of ``k`` indices (on the
    scores' device).

    Exactly the top ``k``: every kept score >= every dropped one; among equal scores the lower unit index wins (a
    stable sort). ``order="index"``: ascending unit index (the default, see the module docstring); ``"score"``:
    best first."""
    _check_choice("order", order, ("index", "score"))
    if scores.dim() != 1:
        raise InputError(f"top_units: scores must be one vector [D], got shape {tuple(scores.shape)}")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= scores.numel():
        raise InputError(f"top_units: k={k!r} must be an integer in 1..{scores.numel()} (the layer's width)")
    if bool(torch.isnan(scores).any()):
        raise InputError("top_units: the scores contain NaN (a non-finite teacher forward?); nothing to rank")
    kept = torch.sort(_wide(scores.detach()), descending=True, stable=True).indices[:k]
    return kept.sort().values if order == "index" else kept


def select_units(scores: Mapping[int, Tensor], k: Optional[int] = None, *, student: Optional[nn.Module] = None,
                 kind: str = "hidden", student_layers: Optional[Sequence[int]] = None,
                 order: str = "index") -> dict[int, Tensor]:
    """:func:`top_units` for every layer of ``scores`` (as :func:`attribute_units` returns them).

    ``k``: units kept per layer; by default the ``student``'s width of ``kind`` — its hidden size or MLP width, or,
    with ``student_layers`` (paired with the score layers in order), each paired layer's width."""
    if k is None:
        if student is None:
            raise InputError("select_units: give k (units per layer) or the student whose width it is")
        _check_choice("kind", kind, KINDS)
        adapter = ModelAdapter(student)
        if student_layers is None:
            width = adapter.hidden_size if kind == "hidden" else adapter.intermediate_size
            return {layer: top_units(s, width, order) for layer, s in scores.items()}
        pairs = list(student_layers)
        if len(pairs) != len(scores):
            raise InputError(f"select_units: {len(pairs)} student layers for {len(scores)} teacher layers")
        return {layer: top_units(s, adapter.width(kind, p), order) for (layer, s), p in zip(scores.items(), pairs)}
    return {layer: top_units(s, k, order) for layer, s in scores.items()}


def selection_overlap(a: Tensor, b: Tensor) -> float:
    """|A ∩ B| / k of two selections of k distinct units each (1: the same units, in any order)."""
    a_set, b_set = set(a.tolist()), set(b.tolist())
    if len(a_set) != a.numel() or len(b_set) != b.numel() or a.numel() != b.numel() or not a.numel():
        raise InputError(f"selection_overlap: two selections of the same k distinct units needed, got "
                         f"{a.numel()} and {b.numel()} indices ({len(a_set)} and {len(b_set)} distinct)")
    return len(a_set & b_set) / a.numel()
