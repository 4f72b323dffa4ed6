"""MiniLLM's rollout sampler: the student, or the teacher-mixed distribution, sampled token by token with a KV cache
for each model, every row of a left-padded prompt batch in lock-step.

MiniLLM (Gu et al., 2024) samples its policy-gradient rollouts from ``r = (1 - α)·q̃_θ + α·p̃_T`` and weights
each token by ``w = q̃_θ(y) / r(y)``. As in the released code (a fork of ``generate``), each model's next-token logits go
through the sampling transform on their own — temperature, then top-k, then top-p, Hugging Face's warpers in
``generate``'s order — and the two *transformed* distributions are mixed (``q̃``, ``p̃`` below). Tokens the
student's transform filters out are MiniLLM's ``inf_mask``: its PPO loss renormalises the student over the kept
tokens with it, so the log-probs here follow the same convention.

``sample_rollouts`` returns a :class:`Rollouts`; every ``[B, N]`` field is 0 (log-probs) or 1 (weights) where
``mask`` is 0, as MiniLLM's ``get_log_probs`` leaves them. The log-probs of the cached loop equal a full forward on
prompt + generated tokens (:func:`response_logits`, the same attention mask and position ids) to float rounding;
``tests/test_sampling.py`` checks it for GPT-2, OPT, LLaMA and Qwen2.

Where this differs from the released code, and why (its defects):

* The weight's denominator is the distribution the token was actually drawn from. The release computes it from the
  teacher's log-probs renormalised over the *student's* kept tokens (``sampler.py``: ``t_rollout_logprobs`` with the
  student's ``inf_mask``), while it samples the teacher's part under the teacher's own top-k/top-p; the two agree only
  without filtering (its scripts' ``--top-k 0 --top-p 1.0``).
* With filtering and ``α > 0`` the teacher can propose a token the student's transform excludes; the release then
  asserts (``get_log_probs``: the chosen log-prob is -inf) and stops. Here such a token has ``student_logprobs`` -inf
  and ``weights`` exactly 0 — its true importance weight: the student would never sample it.
* The mask is explicit, not ``tokens != pad`` shifted by one (the release's trick is right only when pad = EOS,
  which its tokenizers force; with pad ≠ EOS it would count the first pad after an EOS).
"""
from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import torch
from torch import nn
from transformers.generation.logits_process import (LogitsProcessorList, TemperatureLogitsWarper,
                                                    TopKLogitsWarper, TopPLogitsWarper)

from distill.config import InputError
from distill.generation import max_positions


@dataclass
class Rollouts:
    """What :func:`sample_rollouts` sampled for a prompt batch of B rows; N <= max_new_tokens is the number of steps
    run (the loop stops once every row has ended). Log-probs are float32 natural logs.

    * ``tokens`` [B, N] long: the generated ids; ``pad_token_id`` after a row's EOS.
    * ``mask`` [B, N] bool: True on the generated tokens, the EOS included, False after it.
    * ``lengths`` [B] long: ``mask.sum(-1)``, the EOS counted.
    * ``ended`` [B] bool: the row produced an EOS (False: it ran into the length limit).
    * ``student_logprobs`` [B, N]: ``log q̃_θ(y_t)`` under the sampling transform — logits / temperature, the
      student's own top-k/top-p filter (``inf_mask``) set to -inf, log-softmax over the kept tokens — MiniLLM's
      ``logprobs`` (its ``compute_logits_and_log_probs``). -inf only where ``weights`` is 0 (below).
    * ``teacher_logprobs`` [B, N] or None: ``log p_T(y_t)`` of the raw teacher (no temperature, no filter, the whole
      ``vocab_size``), MiniLLM's reward ``t_rewards`` (``reward.py``). None when the teacher did not run.
    * ``teacher_sampling_logprobs`` [B, N] or None: ``log p̃_T(y_t)``, the teacher under the sampling transform with
      its own filter — the teacher's part of the mixture; can be -inf (a token only the student proposed). None
      when α = 0.
    * ``mix_logprobs`` [B, N]: ``log r(y_t)``, the distribution the token was drawn from,
      ``(1 - α)·q̃_θ + α·p̃_T``; equals ``student_logprobs`` when α = 0. Always finite where ``mask`` is True.
    * ``weights`` [B, N]: ``w = q̃_θ(y_t) / r(y_t)``; exactly 1 when α = 0 and where ``mask`` is False; exactly 0
      where the token lies outside the student's filter (only with α > 0 and top-k/top-p on) — callers must keep
      those tokens out of terms in ``student_logprobs`` (the weight already gives them no share).
    * ``inf_mask`` [B, N, V] bool or None: MiniLLM's ``inf_mask`` — True on the tokens the student's top-k/top-p
      excluded at each step (V = ``vocab_size``); False where ``mask`` is False. A PPO loss recomputes
      ``student_logprobs`` as ``log_softmax((logits / T).masked_fill(inf_mask, -inf))``. None when nothing can be
      filtered (``top_k == 0`` and ``top_p == 1``): MiniLLM's would be all False.
    * ``mix_alpha``, ``temperature``: the settings sampled with.
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    lengths: torch.Tensor
    ended: torch.Tensor
    student_logprobs: torch.Tensor
    teacher_logprobs: Optional[torch.Tensor]
    teacher_sampling_logprobs: Optional[torch.Tensor]
    mix_logprobs: torch.Tensor
    weights: torch.Tensor
    inf_mask: Optional[torch.Tensor]
    mix_alpha: float
    temperature: float
    student_seconds: float = 0.0  # time in the student's / the teacher's forwards of the loop
    teacher_seconds: float = 0.0


def _hf_model(model: nn.Module) -> nn.Module:
    """The Hugging Face model inside a DeepSpeed engine (whose own forward hides the signature)."""
    return getattr(model, "module", model)


def _forward_params(model: nn.Module) -> set[str]:
    return set(inspect.signature(_hf_model(model).forward).parameters)


def position_ids_of(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids of a left-padded batch: 0 at each row's first real token (pads get 0, masked anyway) — what
    ``generate`` builds, and what GPT-2's learned positions need (without them a padded row starts late)."""
    pos = attention_mask.long().cumsum(-1) - 1
    return pos.masked_fill(attention_mask == 0, 0)


def _model_inputs(params: set[str], input_ids: torch.Tensor, attention_mask: torch.Tensor,
                  position_ids: torch.Tensor, past: Any, last_only: bool) -> dict[str, Any]:
    kw: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask, "use_cache": True,
                          "past_key_values": past}
    # Passed when the forward takes them, as generate does (OPT and the RoPE models compute a default from the
    # mask / cache length themselves; GPT-2 would start every left-padded row at the padded width).
    if "position_ids" in params:
        kw["position_ids"] = position_ids
    if last_only and "logits_to_keep" in params:
        kw["logits_to_keep"] = 1  # the prefill needs only the last position's [B, V] logits
    return kw


def response_logits(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, tokens: torch.Tensor,
                    vocab_size: int) -> torch.Tensor:
    """One full (uncached) forward of ``model`` on prompt + ``tokens``: the float32 logits [B, N, vocab_size] that
    predict each generated token, with the attention mask and position ids the sampler's loop uses. The log-probs of
    :func:`sample_rollouts` equal log-softmaxes of these (after its transform) to float rounding."""
    full = torch.cat([input_ids, tokens], dim=1)
    mask = torch.cat([attention_mask, torch.ones_like(tokens, dtype=attention_mask.dtype)], dim=1)
    kw: dict[str, Any] = {"input_ids": full, "attention_mask": mask, "use_cache": False}
    if "position_ids" in _forward_params(model):
        kw["position_ids"] = position_ids_of(mask)
    logits = model(**kw).logits
    p, n = input_ids.shape[1], tokens.shape[1]
    return logits[:, p - 1:p + n - 1, :vocab_size].float()


def sampling_transform(temperature: float, top_k: int, top_p: float) -> LogitsProcessorList:
    """Hugging Face's warpers in generate's order (temperature, top-k, top-p), each left out where it does nothing,
    as generate leaves them out."""
    warpers = LogitsProcessorList()
    if temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(float(temperature)))
    if top_k:
        warpers.append(TopKLogitsWarper(int(top_k)))
    if top_p < 1.0:
        warpers.append(TopPLogitsWarper(float(top_p)))
    return warpers


def _check_inputs(student: nn.Module, teacher: Optional[nn.Module], input_ids: torch.Tensor,
                  attention_mask: torch.Tensor, *, max_new_tokens: int, eos_ids: list[int], pad_token_id: int,
                  vocab_size: int, mix_alpha: float, temperature: float, top_k: int, top_p: float,
                  need_teacher: bool, generator: Optional[torch.Generator]) -> None:
    if input_ids.ndim != 2 or input_ids.shape[1] == 0:
        raise InputError(f"input_ids: expected a [batch, prompt_length] batch of prompts, got shape "
                         f"{tuple(input_ids.shape)}")
    if attention_mask.shape != input_ids.shape:
        raise InputError(f"attention_mask: shape {tuple(attention_mask.shape)} differs from input_ids "
                         f"{tuple(input_ids.shape)}; pass the mask of the same left-padded batch")
    m = attention_mask.long()
    if not bool(((m == 0) | (m == 1)).all()):
        raise InputError("attention_mask: values must be 0 or 1")
    if not bool((m[:, 1:] >= m[:, :-1]).all()) or not bool(m[:, -1].all()):
        raise InputError("attention_mask: prompts must be left-padded and non-empty (each row 0...0 1...1 ending in "
                         "1); build the batch with data_utils.datasets.left_padded and drop empty prompts")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise InputError(f"max_new_tokens: must be a positive integer, got {max_new_tokens!r}")
    if not isinstance(vocab_size, int) or vocab_size < 1:
        raise InputError(f"vocab_size: must be a positive integer (the tokenizer's length), got {vocab_size!r}")

    def is_token(i: Any) -> bool:
        return isinstance(i, int) and 0 <= i < vocab_size

    if not all(is_token(i) for i in eos_ids):
        raise InputError(f"eos_token_id: {eos_ids} holds an id that is not a token below vocab_size {vocab_size}")
    if not is_token(pad_token_id):
        raise InputError(f"pad_token_id: {pad_token_id!r} is not a token id below vocab_size {vocab_size}")
    if not 0.0 <= mix_alpha <= 1.0:
        raise InputError(f"mix_alpha: the teacher's share must lie in [0, 1], got {mix_alpha}")
    if not temperature > 0:
        raise InputError(f"temperature: must be > 0, got {temperature} (top_k=1 gives greedy decoding)")
    if not isinstance(top_k, int) or top_k < 0:
        raise InputError(f"top_k: must be an integer >= 0 (0: off), got {top_k!r}")
    if not 0.0 < top_p <= 1.0:
        raise InputError(f"top_p: must lie in (0, 1] (1: off), got {top_p}")
    if need_teacher and teacher is None:
        raise InputError("teacher: mix_alpha > 0 or return_teacher_logprobs needs a teacher model; pass one")
    models = [("student", student)] + ([("teacher", teacher)] if need_teacher else [])
    for name, model in models:
        width = getattr(getattr(_hf_model(model), "config", None), "vocab_size", None)
        if isinstance(width, int) and width < vocab_size:
            raise InputError(f"vocab_size: {vocab_size} exceeds the {name}'s {width} output rows; pass the "
                             f"tokenizer's length (len(tokenizer)) shared by both models")
    if generator is not None and generator.device != input_ids.device:
        raise InputError(f"generator: on {generator.device} but the batch is on {input_ids.device}; pass "
                         f"torch.Generator(device={str(input_ids.device)!r}) seeded from the run's RNG")


class _Stream:
    """One model advancing with its own KV cache: the prompt once, then one token per step."""

    def __init__(self, name: str, model: nn.Module, vocab_size: int):
        self.name, self.model, self.vocab_size = name, model, vocab_size
        self.params = _forward_params(model)
        self.past: Any = None
        self.seconds = 0.0  # time in this model's forwards (on a GPU, as queued: not synchronised per token)

    def step(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
             prefill: bool) -> torch.Tensor:
        t0 = time.perf_counter()
        out = self.model(**_model_inputs(self.params, input_ids, attention_mask, position_ids, self.past, prefill))
        self.seconds += time.perf_counter() - t0
        self.past = out.past_key_values
        logits = out.logits[:, -1]
        if logits.shape[-1] < self.vocab_size:
            raise InputError(f"vocab_size: {self.vocab_size} exceeds the {self.name}'s {logits.shape[-1]} logits; "
                             f"pass the tokenizer's length (len(tokenizer)) shared by both models")
        # The cut: embedding rows past the tokenizer (padded vocabularies, e.g. Qwen2) never get probability.
        return logits[:, :self.vocab_size].float()


@torch.no_grad()
def sample_rollouts(student: nn.Module, teacher: Optional[nn.Module], input_ids: torch.Tensor,
                    attention_mask: torch.Tensor, *, max_new_tokens: int,
                    eos_token_id: Union[int, Sequence[int], None],
                    pad_token_id: int, vocab_size: int, mix_alpha: float = 0.0, temperature: float = 1.0,
                    top_k: int = 0, top_p: float = 1.0, return_teacher_logprobs: bool = False,
                    generator: Optional[torch.Generator] = None) -> Rollouts:
    """Samples up to ``max_new_tokens`` tokens per row of a left-padded prompt batch ``input_ids`` [B, P] (mask
    ``attention_mask``, as ``data_utils.datasets.left_padded`` makes; every row non-empty) from the student, or with
    ``mix_alpha = α > 0`` from MiniLLM's teacher-mixed ``(1 - α)·q̃_θ + α·p̃_T`` (module docstring; fields in
    :class:`Rollouts`).

    The models run as given — the caller puts them in eval mode (``ctx.policy`` does), or dropout would change the
    distributions sampled —, each with its own KV cache, position ids from the attention mask where the forward
    takes them. The teacher runs only when ``α > 0`` or ``return_teacher_logprobs``
    (MiniLLM's rewards need ``log p_T`` of every sampled token: computed here from the teacher's cached pass instead
    of a second full forward). Both models' logits are cut to ``vocab_size`` (the tokenizer's length). Draws come
    from ``generator`` (on the batch's device; None: the global RNG), so a checkpointed generator resamples the same.
    ``max_new_tokens`` is shortened where prompt + answer would run past a model's position table, as
    ``distill.generation.generate_batch`` does. ``eos_token_id``: one id or several (any of them ends a row); None:
    no row ends before ``max_new_tokens`` (a fixed-length sample, e.g. to measure throughput)."""
    eos_ids = [] if eos_token_id is None else [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    mix_alpha, top_p = float(mix_alpha), float(top_p)
    need_teacher = mix_alpha > 0 or return_teacher_logprobs
    _check_inputs(student, teacher, input_ids, attention_mask, max_new_tokens=max_new_tokens, eos_ids=eos_ids,
                  pad_token_id=pad_token_id, vocab_size=vocab_size, mix_alpha=mix_alpha, temperature=temperature,
                  top_k=top_k, top_p=top_p, need_teacher=need_teacher, generator=generator)
    device = input_ids.device
    b, p = input_ids.shape
    for model in [student] + ([teacher] if need_teacher else []):
        limit = max_positions(_hf_model(model))
        if limit is not None:
            if p >= limit:
                raise InputError(f"input_ids: prompts of {p} tokens leave no room in the model's {limit} positions; "
                                 f"cut them to {limit - 1} tokens or fewer")
            max_new_tokens = min(max_new_tokens, limit - p)

    warp = sampling_transform(temperature, top_k, top_p)
    filtering = bool(top_k) or top_p < 1.0
    streams = [_Stream("student", student, vocab_size)]
    if need_teacher:
        streams.append(_Stream("teacher", teacher, vocab_size))
    eos = torch.tensor(eos_ids, dtype=torch.long, device=device)
    log_keep = torch.log1p(torch.tensor(-mix_alpha, device=device)) if mix_alpha < 1 else None
    log_mix = torch.log(torch.tensor(mix_alpha, device=device)) if mix_alpha > 0 else None

    mask_2d = attention_mask.long()
    position_ids = position_ids_of(mask_2d)
    step_ids = input_ids
    unfinished = torch.ones(b, dtype=torch.bool, device=device)
    cols: dict[str, list[torch.Tensor]] = {k: [] for k in ("tok", "live", "s", "t", "ts", "mix", "w", "inf")}
    for t in range(max_new_tokens):
        logits = [s.step(step_ids, mask_2d, position_ids, prefill=t == 0) for s in streams]
        # generate's warpers ignore input_ids; none is passed so no prompt-dependent processor can slip in.
        s_scores = warp(None, logits[0])
        s_logp = torch.log_softmax(s_scores, dim=-1)
        if mix_alpha > 0:
            t_logp = torch.log_softmax(warp(None, logits[1]), dim=-1)
            # MiniLLM mixes the two *transformed* distributions (its fork of generate: probs of the warped scores).
            probs = (1 - mix_alpha) * s_logp.exp() + mix_alpha * t_logp.exp()
        else:
            probs = s_logp.exp()
        nxt = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        live = unfinished.clone()
        nxt = torch.where(live, nxt, torch.full_like(nxt, pad_token_id))
        idx = nxt.unsqueeze(1)
        s_lp = s_logp.gather(1, idx).squeeze(1)
        if mix_alpha > 0:
            ts_lp = t_logp.gather(1, idx).squeeze(1)
            # log r in log space: a token the student filtered (s_lp = -inf) still gets its finite teacher part.
            mix_lp = ts_lp + log_mix if log_keep is None else torch.logaddexp(s_lp + log_keep, ts_lp + log_mix)
            w = torch.exp(s_lp - mix_lp)
            cols["ts"].append(torch.where(live, ts_lp, 0.0))
        else:
            mix_lp, w = s_lp, torch.ones_like(s_lp)
        if need_teacher:
            cols["t"].append(torch.where(live, torch.log_softmax(logits[1], dim=-1).gather(1, idx).squeeze(1), 0.0))
        cols["tok"].append(nxt)
        cols["live"].append(live)
        cols["s"].append(torch.where(live, s_lp, 0.0))
        cols["mix"].append(torch.where(live, mix_lp, 0.0))
        cols["w"].append(torch.where(live, w, 1.0))
        if filtering:
            cols["inf"].append(torch.isinf(s_scores) & live.unsqueeze(1))
        unfinished = unfinished & ~torch.isin(nxt, eos)
        if not bool(unfinished.any()):
            break
        # The next step feeds only the new token; finished rows feed pad, attended like generate does (nothing
        # counted depends on them).
        step_ids = idx
        mask_2d = torch.cat([mask_2d, mask_2d.new_ones(b, 1)], dim=1)
        position_ids = position_ids[:, -1:] + 1

    def stack(key: str) -> Optional[torch.Tensor]:
        return torch.stack(cols[key], dim=1) if cols[key] else None

    mask = stack("live")
    student_logprobs = stack("s")
    return Rollouts(tokens=stack("tok"), mask=mask, lengths=mask.sum(-1), ended=~unfinished,
                    student_logprobs=student_logprobs, teacher_logprobs=stack("t"),
                    teacher_sampling_logprobs=stack("ts"), mix_logprobs=stack("mix"),
                    weights=torch.ones_like(student_logprobs) if mix_alpha == 0 else stack("w"),
                    inf_mask=stack("inf"), mix_alpha=mix_alpha, temperature=float(temperature),
                    student_seconds=streams[0].seconds,
                    teacher_seconds=streams[1].seconds if len(streams) > 1 else 0.0)
