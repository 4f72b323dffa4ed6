"""tools/eval_divergence.py --own-generations: the student's reverse KL to the teacher on its own answers.

Checked against plain computations that share nothing with the tool's batching: a student equal to its teacher gives
0; on random models, every answer's KL sum equals a float64 loop over its positions on the unpadded sequence; and on
the hand-made cycling GPT-2 of tests/test_generation.py (greedy answers known in plain Python), the counted positions
are exactly the generated ones — each answer token and the EOS where the student ended, no EOS position where it ran
into --max-new-tokens or the position table — and the answers are the student's, not the teacher's.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from distill.config import GenerationConfig
from tests.conftest import REPO_ROOT
from tests.test_generation import V, cycle_model, reference_decode, score

sys.path.insert(0, str(REPO_ROOT / "tools"))

from eval_divergence import main, own_generation_rkl  # noqa: E402

torch.set_num_threads(1)


def tok(eos: int, pad: int = 0) -> SimpleNamespace:
    return SimpleNamespace(pad_token_id=pad, eos_token_id=eos)


def random_gpt2(seed: int, vocab: int = 16) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=vocab, n_positions=64, n_embd=16, n_layer=1, n_head=2, resid_pdrop=0.0,
                     embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():  # a wider logit spread than the default init, so the two models disagree clearly
        model.lm_head.weight.mul_(20.0)
    return model


PROMPTS = [[3, 5, 7], [2], [9, 4, 4, 1, 6], [11, 12], [8, 3, 2, 10], [5]]


def plain_rkl_sum(student, teacher, prompt: list[int], answer: list[int], eos: bool, eos_id: int) -> float:
    """Sum over the positions that predict each answer token (and the EOS, when the answer ended) of
    sum_v q(v) (log q(v) - log p(v)), one unpadded sequence, float64."""
    seq = prompt + answer + ([eos_id] if eos else [])
    ids = torch.tensor([seq[:-1]])
    with torch.no_grad():
        q = torch.log_softmax(student(input_ids=ids).logits[0].double(), -1)
        p = torch.log_softmax(teacher(input_ids=ids).logits[0].double(), -1)
    total = 0.0
    for t in range(len(prompt) - 1, len(seq) - 1):
        total += float((q[t].exp() * (q[t] - p[t])).sum())
    return total


def test_a_student_equal_to_its_teacher_gives_zero() -> None:
    model = random_gpt2(0)
    gen = GenerationConfig(max_new_tokens=10, do_sample=True, eval_batch_size=4)
    summary, answers = own_generation_rkl(model, model, tok(eos=0), PROMPTS, gen, 16, seed=3)
    assert summary["positions"] > len(PROMPTS)  # the premise: the student said something
    assert summary["rkl"] == pytest.approx(0.0, abs=1e-6)
    assert all(a["rkl_sum"] == pytest.approx(0.0, abs=1e-5) for a in answers)


def test_each_answer_matches_a_plain_per_position_computation() -> None:
    student, teacher = random_gpt2(1), random_gpt2(2)
    eos = 0
    # Two prompts per batch: rows of different lengths are padded left for generation and right for scoring.
    gen = GenerationConfig(max_new_tokens=8, do_sample=True, eval_batch_size=2)
    summary, answers = own_generation_rkl(student, teacher, tok(eos), PROMPTS, gen, 16, seed=5)
    # The premise of what the test covers: some answers ended with EOS, some ran into --max-new-tokens.
    assert {a["eos"] for a in answers} == {True, False}
    total = count = 0.0
    for prompt, a in zip(PROMPTS, answers):
        assert eos not in a["ids"] and (len(a["ids"]) == 8) != a["eos"]
        assert a["positions"] == len(a["ids"]) + a["eos"]
        expected = plain_rkl_sum(student, teacher, prompt, a["ids"], a["eos"], eos)
        assert a["rkl_sum"] == pytest.approx(expected, rel=1e-4, abs=1e-5)
        total += expected
        count += a["positions"]
    assert summary["positions"] == count and summary["prompts"] == len(PROMPTS)
    assert summary["rkl"] == pytest.approx(total / count, rel=1e-4)
    assert summary["ended_with_eos"] == pytest.approx(sum(a["eos"] for a in answers) / len(PROMPTS))
    # Seeded: the same seed gives the same answers, another seed others.
    again = own_generation_rkl(student, teacher, tok(eos), PROMPTS, gen, 16, seed=5)[1]
    other = own_generation_rkl(student, teacher, tok(eos), PROMPTS, gen, 16, seed=6)[1]
    assert [a["ids"] for a in again] == [a["ids"] for a in answers]
    assert [a["ids"] for a in other] != [a["ids"] for a in answers]


def test_the_positions_counted_are_the_generated_ones() -> None:
    # The cycling model answers x+1, x+2, ... after a prompt ending in x (greedy). Its "teacher" ranks the other
    # way round (negated output layer): it would answer otherwise, and since every context's logits are the same
    # values permuted, the KL at every position is one constant c, so an answer's KL sum is c times its positions.
    student = cycle_model(n_positions=12)
    teacher = cycle_model(n_positions=12)
    with torch.no_grad():
        teacher.lm_head.weight.neg_()
        q = torch.log_softmax(student(input_ids=torch.tensor([[0]])).logits[0, -1].double(), -1)
        p = torch.log_softmax(teacher(input_ids=torch.tensor([[0]])).logits[0, -1].double(), -1)
    c = float((q.exp() * (q - p)).sum())
    assert c > 0.1 and score(1, 0) == max(score(v, 0) for v in range(V))
    eos = 5
    greedy = dict(do_sample=False, eval_batch_size=8)
    prompts = [[1, 2], [3, 4], [7, 4], [1]]
    summary, answers = own_generation_rkl(student, teacher, tok(eos), prompts, GenerationConfig(max_new_tokens=6,
                                                                                                 **greedy), V)
    assert [a["ids"] for a in answers] == [reference_decode(p, 6, eos=eos) for p in prompts]
    assert [a["ids"] for a in answers] == [[3, 4], [], [], [2, 3, 4]]  # EOS at once: only the EOS position counts
    assert [a["eos"] for a in answers] == [True] * 4
    assert [a["positions"] for a in answers] == [3, 1, 1, 4]
    assert summary["positions"] == 9 and summary["mean_answer_tokens"] == pytest.approx(5 / 4)
    for a in answers:
        assert a["rkl_sum"] == pytest.approx(c * a["positions"], rel=1e-4)
    assert summary["rkl"] == pytest.approx(c, rel=1e-4)
    # Cut by --max-new-tokens: 2 tokens and no EOS, so 2 positions (no position predicts an EOS never generated).
    summary, answers = own_generation_rkl(student, teacher, tok(eos), [[1]], GenerationConfig(max_new_tokens=2,
                                                                                                **greedy), V)
    assert answers[0]["ids"] == [2, 3] and not answers[0]["eos"] and answers[0]["positions"] == 2
    # Cut by the position table (12): a 5-token prompt leaves 7 tokens; EOS 5 is not among 6, 7, 0, 1, 2, 3, 4.
    summary, answers = own_generation_rkl(student, teacher, tok(eos), [[0, 1, 2, 3, 5]],
                                          GenerationConfig(max_new_tokens=50, **greedy), V)
    assert answers[0]["ids"] == [6, 7, 0, 1, 2, 3, 4] and not answers[0]["eos"] and answers[0]["positions"] == 7
    # --max-prompt-length keeps each prompt's last tokens, as generation in evaluation does.
    answers = own_generation_rkl(student, teacher, tok(eos), [[6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 1]],
                                 GenerationConfig(max_new_tokens=6, **greedy), V, max_prompt_length=1)[1]
    assert answers[0]["ids"] == [2, 3, 4] and answers[0]["positions"] == 4


def test_the_command_line_reports_it(tiny_models: dict, processed_tiny: Path, tmp_path: Path) -> None:
    teacher = str(tiny_models["gpt2"]["teacher"])
    out, own = tmp_path / "div.json", tmp_path / "own.jsonl"
    main(["--student", teacher, "--teacher", teacher, "--data-dir", str(processed_tiny), "--kinds", "rkl",
          "--own-generations", "--max-new-tokens", "6", "--dev-num", "5", "--out", str(out), "--own-answers", str(own)])
    result = json.loads(out.read_text())
    assert result["rkl"] == pytest.approx(0.0, abs=1e-6)
    o = result["own_generations"]
    assert o["rkl"] == pytest.approx(0.0, abs=1e-6) and o["prompts"] == 5 and 5 <= o["positions"] <= 30
    assert o["decoding"]["do_sample"] and o["decoding"]["temperature"] == 1.0 and o["decoding"]["max_new_tokens"] == 6
    rows = [json.loads(line) for line in own.read_text().splitlines()]
    assert len(rows) == 5 and sum(r["positions"] for r in rows) == o["positions"]


@pytest.mark.parametrize("extra, words", [(["--gen-temperature", "0"], ["--gen-temperature", "> 0"]),
                                          (["--gen-top-p", "1.5"], ["--gen-top-p"]),
                                          (["--max-new-tokens", "0"], ["--max-new-tokens"]),
                                          (["--own-answers", "x.jsonl"], ["--own-answers", "--own-generations"])])
def test_bad_decoding_flags_stop_in_one_line_before_loading(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                           extra: list[str], words: list[str]) -> None:
    # --own-answers alone: something else is measured (rkl), but the answers it names are never made.
    own = ["--kinds", "rkl"] if "--own-answers" in extra else ["--kinds", "--own-generations"]
    with pytest.raises(SystemExit) as e:
        main(["--student", str(tmp_path / "none"), "--teacher", str(tmp_path / "none"), "--data-dir", str(tmp_path),
              *own, *extra])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and all(w in err for w in words), err
