"""distill/sampling.py: MiniLLM's rollout sampler.

* Toy vocabulary (stub models with the Hugging Face forward signature and fixed per-step logits): the first-token
  frequencies follow (1 - α)·q + α·p (chi-square, fixed seed; a test that can tell the mixture from q alone), the
  weights are q / ((1 - α)·q + α·p) exactly, 1 at α = 0; filtering, the vocabulary cut, EOS handling.
* The tiny checkpoints of every family: the cached loop's student and teacher log-probs equal one full forward on
  prompt + generated tokens; with top_k = 1 the loop gives generate's greedy tokens, with early EOS rows too.
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from data_utils.datasets import left_padded
from distill.config import InputError
from distill.sampling import Rollouts, response_logits, sample_rollouts, sampling_transform

V = 5
EOS, PAD = 4, 0


class StubLM(nn.Module):
    """A causal LM with the Hugging Face forward signature whose next-token logits at step s are ``table[:, s]``
    ([B, S, W] or [S, W], the last step repeated after S); its 'cache' counts the positions seen."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = table if table.ndim == 3 else table.unsqueeze(0)
        self.calls = 0
        self.seen_positions: list[torch.Tensor] = []

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None, use_cache=None,
                **kwargs):
        self.calls += 1
        self.seen_positions.append(position_ids)
        step = 0 if past_key_values is None else past_key_values
        b, n = input_ids.shape
        row = self.table[:, min(step, self.table.shape[1] - 1)].expand(b, -1)
        return SimpleNamespace(logits=row.unsqueeze(1).expand(b, n, -1).clone(), past_key_values=step + 1)


def prompts(b: int) -> dict[str, torch.Tensor]:
    return left_padded([[1, 2, 3][: 1 + i % 3] for i in range(b)], pad_token_id=PAD)


def chi2_pvalue(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """Pearson's chi-square goodness of fit over the tokens with positive expected count."""
    from scipy.stats import chi2

    keep = probs > 0
    assert int(counts[~keep].sum()) == 0, "a token of probability 0 was drawn"
    n = counts.sum().double()
    expected = n * probs[keep].double()
    stat = float(((counts[keep].double() - expected) ** 2 / expected).sum())
    return float(chi2.sf(stat, int(keep.sum()) - 1))


Q_LOGITS = torch.tensor([2.0, 1.0, 0.5, -1.0, 0.0])
P_LOGITS = torch.tensor([-1.0, 0.0, 1.5, 2.0, 0.3])
P_THRESHOLD = 1e-4  # a fit is rejected below this p-value; with the fixed seed each check is deterministic
DRAWS = 40000


@pytest.mark.parametrize("alpha", [0.0, 0.2, 1.0])
def test_first_token_frequencies_and_weights(alpha: float) -> None:
    q, p = Q_LOGITS.softmax(-1), P_LOGITS.softmax(-1)
    mixture = (1 - alpha) * q + alpha * p
    batch = prompts(DRAWS)
    gen = torch.Generator().manual_seed(1234)
    r = sample_rollouts(StubLM(Q_LOGITS[None]), StubLM(P_LOGITS[None]), batch["input_ids"], batch["attention_mask"],
                        max_new_tokens=1, eos_token_id=EOS, pad_token_id=PAD, vocab_size=V, mix_alpha=alpha,
                        return_teacher_logprobs=True, generator=gen)
    first = r.tokens[:, 0]
    counts = torch.bincount(first, minlength=V)
    assert chi2_pvalue(counts, mixture) > P_THRESHOLD, (counts, mixture * DRAWS)
    # The check can fail: the same draws are rejected against the distribution they were not drawn from.
    other = p if alpha == 0 else q
    assert chi2_pvalue(counts, other) < 1e-10

    qy, py = q.double()[first], p.double()[first]
    expected_w = qy / ((1 - alpha) * qy + alpha * py)
    if alpha == 0:
        assert bool((r.weights == 1).all())  # exactly one, not one to float tolerance
    torch.testing.assert_close(r.weights[:, 0].double(), expected_w, rtol=1e-6, atol=0)
    torch.testing.assert_close(r.student_logprobs[:, 0].double(), qy.log(), rtol=0, atol=1e-6)
    torch.testing.assert_close(r.teacher_logprobs[:, 0].double(), py.log(), rtol=0, atol=1e-6)
    torch.testing.assert_close(r.mix_logprobs[:, 0].double(), ((1 - alpha) * qy + alpha * py).log(), rtol=0,
                               atol=1e-6)
    assert r.inf_mask is None


def test_filtered_mixture_uses_each_models_own_filter() -> None:
    """top_k = 2: the student keeps {0, 1}, the teacher {2, 3}; the mixture of the two filtered distributions is
    sampled, and a token only the teacher proposes has weight 0 and student log-prob -inf (MiniLLM would assert)."""
    alpha, temp = 0.3, 0.7
    q = (Q_LOGITS / temp).softmax(-1)
    p = (P_LOGITS / temp).softmax(-1)
    qk, pk = torch.zeros(V), torch.zeros(V)
    qk[:2], pk[2:4] = q[:2] / q[:2].sum(), p[2:4] / p[2:4].sum()
    mixture = (1 - alpha) * qk + alpha * pk
    batch = prompts(DRAWS)
    r = sample_rollouts(StubLM(Q_LOGITS[None]), StubLM(P_LOGITS[None]), batch["input_ids"], batch["attention_mask"],
                        max_new_tokens=1, eos_token_id=EOS, pad_token_id=PAD, vocab_size=V, mix_alpha=alpha,
                        temperature=temp, top_k=2, generator=torch.Generator().manual_seed(7))
    first = r.tokens[:, 0]
    assert chi2_pvalue(torch.bincount(first, minlength=V), mixture) > P_THRESHOLD
    expected_w = qk.double()[first] / mixture.double()[first]
    torch.testing.assert_close(r.weights[:, 0].double(), expected_w, rtol=1e-6, atol=0)
    teacher_only = first >= 2
    assert bool(teacher_only.any()) and bool((r.weights[teacher_only, 0] == 0).all())
    assert bool(torch.isneginf(r.student_logprobs[teacher_only, 0]).all())
    assert bool(torch.isfinite(r.mix_logprobs).all())
    torch.testing.assert_close(r.teacher_sampling_logprobs[~teacher_only, 0], torch.full_like(
        r.teacher_sampling_logprobs[~teacher_only, 0], -math.inf))
    # inf_mask: the student's excluded tokens, the same for every row here.
    assert r.inf_mask.shape == (DRAWS, 1, V) and r.inf_mask.dtype == torch.bool
    assert r.inf_mask[:, 0].eq(torch.tensor([False, False, True, True, True])).all()


def test_vocabulary_cut_and_no_teacher_when_not_needed() -> None:
    """Logit rows past vocab_size (a padded embedding) never get probability; at α = 0 without teacher log-probs
    the teacher is never called, and may be None."""
    wide = torch.cat([Q_LOGITS, torch.tensor([30.0, 30.0])])  # the two padded rows would take all the mass
    batch = prompts(2000)
    teacher = StubLM(P_LOGITS[None])
    r = sample_rollouts(StubLM(wide[None]), teacher, batch["input_ids"], batch["attention_mask"], max_new_tokens=3,
                        eos_token_id=EOS, pad_token_id=PAD, vocab_size=V, generator=torch.Generator().manual_seed(0))
    assert int(r.tokens.max()) < V and teacher.calls == 0
    assert r.teacher_logprobs is None and r.teacher_sampling_logprobs is None
    live = r.mask
    q = Q_LOGITS.softmax(-1)
    torch.testing.assert_close(r.student_logprobs[live], q.log()[r.tokens[live]])
    r2 = sample_rollouts(StubLM(wide[None]), None, batch["input_ids"], batch["attention_mask"], max_new_tokens=3,
                         eos_token_id=EOS, pad_token_id=PAD, vocab_size=V, generator=torch.Generator().manual_seed(0))
    assert torch.equal(r.tokens, r2.tokens)  # the same generator state gives the same rollouts


def test_eos_rows_end_padded_and_masked() -> None:
    """Row 0 emits EOS at step 0, row 1 at step 2, row 2 never (runs to max_new_tokens); rows 3 and 4 end at step 1
    and 3 — the loop stops at max_new_tokens = 5 with one row still running."""
    ends = [0, 2, None, 1, 3]
    steps = 6
    big = 1e4  # one token with all the probability (softmax of the others underflows to exactly 0)
    table = torch.zeros(len(ends), steps, V)
    for i, e in enumerate(ends):
        for s in range(steps):
            table[i, s, EOS if e == s else 1 + (i + s) % 3] = big
    batch = prompts(len(ends))
    student, teacher = StubLM(table), StubLM(table.clone())  # one token each step: the rollout is fixed
    r = sample_rollouts(student, teacher, batch["input_ids"], batch["attention_mask"], max_new_tokens=5,
                        eos_token_id=EOS, pad_token_id=PAD, vocab_size=V, mix_alpha=0.5, top_p=0.9,
                        generator=torch.Generator().manual_seed(3))
    assert r.tokens.shape == (5, 5)
    expected_len = torch.tensor([1, 3, 5, 2, 4])
    assert torch.equal(r.lengths, expected_len)
    assert torch.equal(r.ended, torch.tensor([True, True, False, True, True]))
    for i, n in enumerate(expected_len.tolist()):
        assert bool(r.mask[i, :n].all()) and not bool(r.mask[i, n:].any())
        assert bool((r.tokens[i, n:] == PAD).all())
        if r.ended[i]:
            assert int(r.tokens[i, n - 1]) == EOS and EOS not in r.tokens[i, :n - 1].tolist()
    for field in (r.student_logprobs, r.teacher_sampling_logprobs, r.mix_logprobs):
        assert bool((field[~r.mask] == 0).all())
    assert bool((r.weights[~r.mask] == 1).all()) and not bool(r.inf_mask[~r.mask].any())
    # Every row's positions continue from its own prompt length (left padding), one per step.
    real = batch["attention_mask"].sum(-1)
    for s, pos in enumerate(student.seen_positions[1:]):
        assert torch.equal(pos[:, 0], real + s)
    # The loop stops as soon as every row has ended.
    r3 = sample_rollouts(StubLM(table[[0, 1, 3]]), None, prompts(3)["input_ids"], prompts(3)["attention_mask"],
                         max_new_tokens=5, eos_token_id=[EOS], pad_token_id=PAD, vocab_size=V)
    assert r3.tokens.shape == (3, 3) and bool(r3.ended.all())


def test_bad_input_is_refused() -> None:
    batch = prompts(3)
    s, t = StubLM(Q_LOGITS[None]), StubLM(P_LOGITS[None])
    kw = dict(max_new_tokens=2, eos_token_id=EOS, pad_token_id=PAD, vocab_size=V)
    right = {"input_ids": batch["input_ids"].flip(1), "attention_mask": batch["attention_mask"].flip(1)}
    cases = [
        (dict(input_ids=right["input_ids"], attention_mask=right["attention_mask"]), "left-padded"),
        (dict(mix_alpha=1.5), "mix_alpha"),
        (dict(teacher=None, mix_alpha=0.2), "teacher"),
        (dict(teacher=None, return_teacher_logprobs=True), "teacher"),
        (dict(vocab_size=9), "vocab_size"),
        (dict(temperature=0.0), "temperature"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_k=-1), "top_k"),
        (dict(eos_token_id=V), "eos_token_id"),
        (dict(max_new_tokens=0), "max_new_tokens"),
    ]
    for change, word in cases:
        args = dict(student=s, teacher=t, **batch, **kw)
        args.update(change)
        with pytest.raises(InputError, match=word):
            sample_rollouts(**args)


# ------------------------------------------------------------------------------------------------------------------
# The tiny checkpoints of every family.
@pytest.fixture(scope="module")
def family_models(tiny_models):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    models = {f: {role: AutoModelForCausalLM.from_pretrained(path).eval() for role, path in paths.items()}
              for f, paths in tiny_models.items()}
    tok = AutoTokenizer.from_pretrained(tiny_models["gpt2"]["student"])
    return models, tok


def real_prompts(tok, lengths=(7, 3, 11, 5), seed=0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    rows = [(torch.randint(3, len(tok), (n,), generator=g)).tolist() for n in lengths]  # no special tokens
    return left_padded(rows, tok.pad_token_id)


def gathered(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(logits, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


PAIRS = [("gpt2", "gpt2"), ("opt", "opt"), ("llama", "llama"), ("qwen2", "qwen2"), ("gpt2", "llama")]


@pytest.mark.parametrize("student_family,teacher_family", PAIRS)
def test_cached_logprobs_equal_a_full_forward(family_models, student_family, teacher_family) -> None:
    models, tok = family_models
    student, teacher = models[student_family]["student"], models[teacher_family]["teacher"]
    batch = real_prompts(tok)
    vocab = len(tok)
    with torch.no_grad():
        for temp, top_k, top_p, alpha in ((1.0, 0, 1.0, 0.4), (0.8, 40, 0.9, 0.2)):
            r = sample_rollouts(student, teacher, batch["input_ids"], batch["attention_mask"], max_new_tokens=10,
                                eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, vocab_size=vocab,
                                mix_alpha=alpha, temperature=temp, top_k=top_k, top_p=top_p,
                                generator=torch.Generator().manual_seed(5))
            m = r.mask
            s_full = response_logits(student, batch["input_ids"], batch["attention_mask"], r.tokens, vocab)
            t_full = response_logits(teacher, batch["input_ids"], batch["attention_mask"], r.tokens, vocab)
            # The teacher's reward log-probs: the raw teacher.
            torch.testing.assert_close(r.teacher_logprobs[m], gathered(t_full, r.tokens)[m], rtol=0, atol=1e-5)
            warp = sampling_transform(temp, top_k, top_p)
            flat = s_full.reshape(-1, vocab)
            s_scores = warp(None, flat).reshape_as(s_full)
            if r.inf_mask is None:
                assert top_k == 0 and top_p == 1.0
            else:
                # inf_mask is the student's filter that a full forward gives; MiniLLM's loss-side recomputation
                # (logits / T, masked with inf_mask) reproduces the sampled log-probs.
                assert torch.equal(r.inf_mask[m], torch.isinf(s_scores)[m])
                s_scores = (s_full / temp).masked_fill(r.inf_mask, -math.inf)
            s_lp = gathered(s_scores, r.tokens)
            kept = m & (r.weights > 0)
            torch.testing.assert_close(r.student_logprobs[kept], s_lp[kept], rtol=0, atol=1e-5)
            t_lp = gathered(warp(None, t_full.reshape(-1, vocab)).reshape_as(t_full), r.tokens)
            torch.testing.assert_close(r.teacher_sampling_logprobs[m], t_lp[m], rtol=0, atol=1e-5)
            mix = torch.log((1 - alpha) * s_lp.exp() + alpha * t_lp.exp())
            torch.testing.assert_close(r.weights[m], torch.exp(s_lp - mix)[m], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("family", ["gpt2", "opt", "llama", "qwen2"])
def test_top_k_1_is_greedy_generate_with_early_eos(family_models, family) -> None:
    """top_k = 1 reproduces generate(do_sample=False) token for token — with the tokenizer's EOS, and with an EOS
    chosen among the greedy tokens so that rows end early at known steps."""
    models, tok = family_models
    student = models[family]["student"]
    batch = real_prompts(tok, seed=1)
    n = 8

    def greedy(eos: int) -> torch.Tensor:
        out = student.generate(**batch, do_sample=False, max_new_tokens=n, eos_token_id=eos,
                               pad_token_id=tok.pad_token_id, top_k=None, top_p=None, temperature=None)
        return out[:, batch["input_ids"].shape[1]:]

    def loop(eos: int) -> Rollouts:
        return sample_rollouts(student, None, batch["input_ids"], batch["attention_mask"], max_new_tokens=n,
                               eos_token_id=eos, pad_token_id=tok.pad_token_id, vocab_size=len(tok), top_k=1)

    ref = greedy(tok.eos_token_id)
    assert torch.equal(loop(tok.eos_token_id).tokens, ref)
    eos = int(ref[0, 2])  # row 0 ends at its first occurrence of its third greedy token
    ref_eos, r = greedy(eos), loop(eos)
    assert torch.equal(r.tokens, ref_eos)
    for i in range(ref.shape[0]):
        row = ref[i].tolist()
        length = row.index(eos) + 1 if eos in row else n
        assert int(r.lengths[i]) == length and bool(r.ended[i]) == (eos in row)
        assert bool(r.mask[i, :length].all()) and not bool(r.mask[i, length:].any())
        assert bool((r.tokens[i, length:] == tok.pad_token_id).all())
    assert int(r.lengths[0]) <= 3
    # top_k = 1 leaves one token: its log-prob is 0 and inf_mask excludes all others.
    assert bool((r.student_logprobs == 0).all()) and bool((r.inf_mask[r.mask].sum(-1) == len(tok) - 1).all())
