"""distill/generation.py: cut at EOS, the length limits, n-gram blocking, the repetition penalty, and generate_split's
sharding over ranks and merge order.

The model is a real GPT-2 (``transformers.GPT2LMHeadModel``, through ``model.generate`` with its KV cache) whose weights
are set by hand so that its next-token scores depend only on the last token: after token ``x`` the scores rank
``x + 1, x + 2, ...`` (mod ``V``), with the plain values :func:`score` gives. Greedy decoding from it cycles through the
vocabulary, so n-grams repeat, and every expected answer is computed here by a few lines of plain Python
(:func:`reference_decode`) that know nothing of transformers.
"""
from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Optional

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from data_utils.datasets import PromptCollator
from distill import generation
from distill.config import GenerationConfig, InputError
from distill.generation import generate_batch, generate_split

V = 8  # vocabulary (and width) of the hand-made model; even, so no score is 0 (the penalty's sign switch)


def score(v: int, last: int) -> float:
    """The model's next-token score of ``v`` after ``last``, up to a positive factor (the final LayerNorm's scale)."""
    return (V - 1) / 2 - ((v - last - 1) % V)


def cycle_model(n_positions: int = 64) -> GPT2LMHeadModel:
    """One GPT-2 block whose attention and MLP write nothing, one-hot embeddings, no position embeddings, and an
    output layer whose row ``v`` holds ``score(v, x)`` for every ``x`` (all rows sum alike, so LayerNorm's mean
    shift changes no ranking): the logits after token ``x`` are ``score(., x)`` times one positive constant."""
    cfg = GPT2Config(vocab_size=V, n_positions=n_positions, n_embd=V, n_layer=1, n_head=1, tie_word_embeddings=False,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None, eos_token_id=None)
    model = GPT2LMHeadModel(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.transformer.wte.weight.copy_(torch.eye(V))
        for ln in (model.transformer.ln_f, model.transformer.h[0].ln_1, model.transformer.h[0].ln_2):
            ln.weight.fill_(1.0)
        model.lm_head.weight.copy_(torch.tensor([[score(v, x) for x in range(V)] for v in range(V)]))
    return model.eval()


def tokenizer(pad: int, eos: Optional[int]) -> SimpleNamespace:
    """What the generation helpers read of a tokenizer: pad and EOS ids, and decode (ids as words)."""
    return SimpleNamespace(pad_token_id=pad, eos_token_id=eos,
                           decode=lambda ids, skip_special_tokens=True: " ".join(str(i) for i in ids))


def ngrams(seq: list[int], n: int) -> list[tuple[int, ...]]:
    return [tuple(seq[i:i + n]) for i in range(len(seq) - n + 1)]


def reference_decode(prompt: list[int], steps: int, eos: Optional[int] = None, ngram: int = 0,
                     penalty: float = 1.0) -> list[int]:
    """Greedy decoding of the model above in plain Python: the penalty (CTRL: a positive score of a token already in
    the text divided by it, a negative one multiplied), then the n-gram ban (no token that would complete an n-gram
    the text already holds), then the best score; the answer is cut before the first EOS."""
    seq, out = list(prompt), []
    for _ in range(steps):
        scores = {v: score(v, seq[-1]) for v in range(V)}
        for v in set(seq):
            scores[v] = scores[v] / penalty if scores[v] > 0 else scores[v] * penalty
        if ngram:
            seen = set(ngrams(seq, ngram))
            tail = seq[len(seq) - ngram + 1:] if ngram > 1 else []
            scores = {v: s for v, s in scores.items() if tuple(tail + [v]) not in seen}
        nxt = max(scores, key=scores.__getitem__)
        if nxt == eos:
            break
        seq.append(nxt)
        out.append(nxt)
    return out


def run_batch(model, prompts: list[list[int]], gen: GenerationConfig, pad: int = 0,
              eos: Optional[int] = None) -> list[list[int]]:
    batch = PromptCollator(pad, 100)([{"index": i, "prompt": np.array(p)} for i, p in enumerate(prompts)])
    return generate_batch(model, tokenizer(pad, eos), batch["input_ids"], batch["attention_mask"], gen)


@pytest.fixture(scope="module")
def model() -> GPT2LMHeadModel:
    return cycle_model()


def test_the_hand_made_model_scores_as_described(model) -> None:
    # The premise of every other test: the logits after x rank the tokens as score(., x) does (one positive scale).
    ids = torch.arange(V).view(V, 1)
    with torch.no_grad():
        logits = model(input_ids=ids).logits[:, -1]
    expected = torch.tensor([[score(v, x) for v in range(V)] for x in range(V)])
    scale = logits[0, 0] / expected[0, 0]
    assert scale > 0 and torch.allclose(logits, expected * scale, atol=1e-4)


# ------------------------------------------------------------------------------------------------------------------
# EOS and length limits


def test_answers_stop_at_eos_and_padding_after_it_is_dropped(model) -> None:
    # GPT-2's convention: the pad token is EOS. Rows stop at different steps; HF pads the finished ones.
    eos = 5
    prompts = [[1], [0, 4], [6, 7, 6], [2, 3, 5, 6]]
    out = run_batch(model, prompts, GenerationConfig(max_new_tokens=6), pad=eos, eos=eos)
    assert out == [reference_decode(p, 6, eos=eos) for p in prompts]
    assert out[0] == [2, 3, 4] and out[1] == []  # stopped before EOS; EOS at once gives an empty answer
    assert all(eos not in row for row in out)
    assert len(out[2]) == 6  # no EOS within max_new_tokens: the full length, none cut


def test_max_new_tokens_caps_every_answer(model) -> None:
    prompts = [[0], [3, 1]]
    for n in (1, 4, 11):
        out = run_batch(model, prompts, GenerationConfig(max_new_tokens=n))
        assert [len(r) for r in out] == [n, n]
        assert out == [reference_decode(p, n) for p in prompts]


def test_answers_never_run_past_the_position_table() -> None:
    positions = 12
    small = cycle_model(n_positions=positions)
    prompts = [[0, 1, 2, 3, 4], [6]]  # left-padded to width 5: 7 positions are left
    out = run_batch(small, prompts, GenerationConfig(max_new_tokens=50))
    width = max(len(p) for p in prompts)
    assert [len(r) for r in out] == [positions - width] * 2
    assert out == [reference_decode(p, positions - width) for p in prompts]
    # Below the limit max_new_tokens still decides.
    assert [len(r) for r in run_batch(small, prompts, GenerationConfig(max_new_tokens=3))] == [3, 3]
    # A prompt that fills the table still gets its one token; a longer one is a one-line input error, not an
    # IndexError from inside the model.
    full = [i % V for i in range(positions)]
    assert run_batch(small, [full], GenerationConfig(max_new_tokens=5)) == [reference_decode(full, 1)]
    with pytest.raises(InputError, match=f"^--max-prompt-length: prompts of {positions + 1} tokens do not fit the "
                                         f"model's {positions} positions; pass --max-prompt-length {positions - 1}"):
        run_batch(small, [[1] * (positions + 1)], GenerationConfig(max_new_tokens=5))


# ------------------------------------------------------------------------------------------------------------------
# n-gram blocking and the repetition penalty


@pytest.mark.parametrize("n", [1, 2, 3])
def test_no_repeat_ngram_size_blocks_every_repeat(model, n: int) -> None:
    prompts = [[1, 3], [5, 2]]
    steps = V - 2 if n == 1 else 3 * V  # n = 1 bans every token of the text: V - 2 are left after these prompts
    plain = run_batch(model, prompts, GenerationConfig(max_new_tokens=steps))
    blocked = run_batch(model, prompts, GenerationConfig(max_new_tokens=steps, no_repeat_ngram_size=n))
    for p, a, b in zip(prompts, plain, blocked):
        text, text_blocked = ngrams(p + a, n), ngrams(p + b, n)
        assert len(set(text)) < len(text)  # without blocking the cycle repeats n-grams
        assert len(set(text_blocked)) == len(text_blocked)  # with it, none repeats
        assert b == reference_decode(p, steps, ngram=n) and len(b) == steps


def test_repetition_penalty_changes_only_what_repeats(model) -> None:
    gen = GenerationConfig(max_new_tokens=5, repetition_penalty=2.0)
    # After 2 the model's first choice is 3, already in the prompt: penalised, 4 wins instead.
    revisits, fresh = [3, 2], [0]
    plain = run_batch(model, [revisits, fresh], GenerationConfig(max_new_tokens=5))
    penalised = run_batch(model, [revisits, fresh], gen)
    assert penalised[0] == reference_decode(revisits, 5, penalty=2.0) != plain[0]
    assert plain[0][0] == 3 and penalised[0][0] == 4
    # 0 -> 1 2 3 4 5 never meets a token twice: nothing to penalise, the same answer.
    assert penalised[1] == plain[1] == reference_decode(fresh, 5)
    # A mild penalty does not overturn a clear first choice (score 3.5 / 1.1 still beats 2.5).
    assert run_batch(model, [revisits], GenerationConfig(max_new_tokens=5, repetition_penalty=1.1))[0] == \
           reference_decode(revisits, 5, penalty=1.1) == plain[0]


@pytest.mark.parametrize("options", [{"repetition_penalty": 2.0}, {"no_repeat_ngram_size": 2},
                                     {"repetition_penalty": 1.5, "no_repeat_ngram_size": 3}])
def test_an_answer_does_not_depend_on_the_batch_it_is_in(model, options: dict) -> None:
    # Left padding is not part of a row's text. With pad = EOS (GPT-2) a penalty that counted the padding would
    # penalise EOS in padded rows only: the short prompt [4] stops at once alone, and must in any batch too.
    eos = 5
    prompts = [[4], [0, 1, 2, 3, 6, 7], [3, 2]]
    gen = GenerationConfig(max_new_tokens=10, **options)
    alone = [run_batch(model, [p], gen, pad=eos, eos=eos)[0] for p in prompts]
    assert run_batch(model, prompts, gen, pad=eos, eos=eos) == alone
    assert alone == [reference_decode(p, 10, eos=eos, ngram=options.get("no_repeat_ngram_size", 0),
                                      penalty=options.get("repetition_penalty", 1.0)) for p in prompts]
    assert alone[0] == []


def test_a_checkpoints_generation_config_cannot_switch_the_options_on() -> None:
    own = cycle_model()
    own.generation_config.no_repeat_ngram_size = 2
    own.generation_config.repetition_penalty = 3.0
    prompts = [[3, 2], [0]]
    assert run_batch(own, prompts, GenerationConfig(max_new_tokens=3 * V)) == \
           [reference_decode(p, 3 * V) for p in prompts]


# ------------------------------------------------------------------------------------------------------------------
# generate_split: shards over ranks, one merged answer per example in the caller's order


class PromptList:
    """The part of InstructionDataset generate_split reads: items with index and prompt."""

    def __init__(self, prompts: list[list[int]]):
        self.prompts = prompts

    def __len__(self) -> int:
        return len(self.prompts)

    def __getitem__(self, i: int) -> dict:
        return {"index": i, "prompt": np.array(self.prompts[i]), "response": np.array([], dtype=np.int64)}


class _Gathered(Exception):
    pass


@pytest.mark.parametrize("world_size", [2, 3])
def test_generate_split_shards_over_ranks_and_merges_in_the_callers_order(model, monkeypatch,
                                                                          world_size: int) -> None:
    prompts = [[i % V, (3 * i) % V] for i in range(7)]
    data = PromptList(prompts)
    order = [4, 0, 6, 3, 1, 5, 2]
    gen = GenerationConfig(max_new_tokens=4, eval_batch_size=2)
    tok = tokenizer(pad=0, eos=None)
    kwargs = dict(device=torch.device("cpu"), max_prompt_length=100, indices=order)
    expected = [{"index": i, "response": " ".join(str(t) for t in reference_decode(prompts[i], 4)), "num_tokens": 4}
                for i in order]
    assert generate_split(model, tok, data, gen, rank=0, world_size=1, **kwargs) == expected

    # Each simulated rank generates its strided share of ``order`` (padded to the same count, so ranks stay in step)
    # and hands it to all_gather_objects; the merge then sees every rank's records.
    shares: list[list[dict]] = []
    progress: list[list[tuple[int, int]]] = []

    def keep(records: list[dict]) -> list:
        shares.append(records)
        raise _Gathered

    monkeypatch.setattr(generation, "all_gather_objects", keep)
    for rank in range(world_size):
        calls: list[tuple[int, int]] = []
        with pytest.raises(_Gathered):
            generate_split(model, tok, data, gen, rank=rank, world_size=world_size,
                           progress=lambda done, total: calls.append((done, total)), **kwargs)
        progress.append(calls)
    per_rank = math.ceil(len(order) / world_size)
    for rank, share in enumerate(shares):
        assert len(share) == per_rank
        assert {r["index"] for r in share} == set(order[rank::world_size])  # strided; padding repeats one of them
        assert progress[rank][-1] == (per_rank, per_rank)
        assert [d for d, _ in progress[rank]] == sorted(d for d, _ in progress[rank])

    monkeypatch.setattr(generation, "all_gather_objects", lambda records: shares)
    assert generate_split(model, tok, data, gen, rank=0, world_size=world_size, **kwargs) == expected


def test_generate_split_restores_training_mode(model) -> None:
    model.train()
    try:
        generate_split(model, tokenizer(0, None), PromptList([[1]]), GenerationConfig(max_new_tokens=2), rank=0,
                       world_size=1, device=torch.device("cpu"), max_prompt_length=100)
        assert model.training
    finally:
        model.eval()


def test_keep_eos_keeps_the_stop_token_and_num_beams_reaches_generate(model) -> None:
    eos = 5
    prompts = [[1], [6, 7, 6]]
    batch = PromptCollator(eos, 100)([{"index": i, "prompt": np.array(p)} for i, p in enumerate(prompts)])
    kept = generate_batch(model, tokenizer(eos, eos), batch["input_ids"], batch["attention_mask"],
                          GenerationConfig(max_new_tokens=6), keep_eos=True)
    assert kept[0] == [2, 3, 4, eos]  # the answer that ended keeps its EOS ...
    assert len(kept[1]) == 6 and eos not in kept[1]  # ... the one cut by the limit has none
    from distill.config import DistillConfig
    from distill.generation import generation_kwargs

    assert generation_kwargs(GenerationConfig(num_beams=3), tokenizer(0, 0))["num_beams"] == 3
    step = DistillConfig(teacher_model_path="t", gen_num_beams=2).step_generation(GenerationConfig())
    assert step.num_beams == 2
    # Greedy beam search with one beam is greedy decoding.
    assert run_batch(model, prompts, GenerationConfig(max_new_tokens=4, num_beams=1)) == \
        [reference_decode(p, 4) for p in prompts]
