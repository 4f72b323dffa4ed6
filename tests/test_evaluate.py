"""evaluate.py: generation, Rouge-L / exact match per set and seed, summary over seeds, sharding over processes.

The model is ``parrot_ckpt`` — the tiny student after learning one fixed answer — so its greedy generations are
words that partly overlap the references (a random tiny model's are byte noise that scores 0 everywhere).
"""
from __future__ import annotations

import json
import string
import subprocess
import sys
from pathlib import Path

import pytest
from rouge_score import rouge_scorer

from distill.evaluation import main as evaluate_main
from tests.conftest import REPO_ROOT, in_process_run

SEEDS = (10, 20)
pytestmark = pytest.mark.usefixtures("in_process")  # see conftest.in_process_run


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def eval_args(model: Path, data_root: Path, save: Path, *extra: str) -> list[str]:
    return ["--model-path", str(model), "--data-root", str(data_root), "--save", str(save), "--max-new-tokens", "16",
            "--eval-batch-size", "8", *extra]


@pytest.fixture(scope="module")
def greedy_eval(parrot_ckpt: Path, parrot_data_root: Path, tmp_path_factory: pytest.TempPathFactory):
    """Greedy evaluation over two seeds on the sets "parrot" (present) and "absent" (not processed)."""
    save = tmp_path_factory.mktemp("greedy_eval") / "eval"
    with in_process_run():
        summary = evaluate_main(eval_args(parrot_ckpt, parrot_data_root, save, "--eval-sets", "parrot", "absent",
                                          "--seeds", *map(str, SEEDS)))
    return save, summary


def test_rouge_l_equals_rouge_score_recomputed(greedy_eval, parrot_data_root: Path) -> None:
    save, summary = greedy_eval
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    processed = read_jsonl(parrot_data_root / "parrot" / "full" / "gpt2" / "valid.jsonl")
    punct = str.maketrans("", "", string.punctuation)
    per_seed = []
    for seed in SEEDS:
        answers = read_jsonl(save / "parrot" / str(seed) / "answers.jsonl")
        assert [a["index"] for a in answers] == list(range(len(processed)))
        rouge, em = [], []
        for a in answers:
            assert a["references"] == processed[a["index"]]["references"]
            assert a["instruction"] == processed[a["index"]]["instruction"]
            rouge.append(max(100 * scorer.score(r, a["response"])["rougeL"].fmeasure for r in a["references"]))
            norm = " ".join(a["response"].lower().translate(punct).split())
            em.append(100.0 * any(norm == " ".join(r.lower().translate(punct).split()) for r in a["references"]))
            assert a["rougeL"] == pytest.approx(rouge[-1], abs=1e-9)
            assert a["exact_match"] == em[-1]
        result = json.loads((save / "parrot" / str(seed) / "results.json").read_text())
        assert result["rougeL"] == pytest.approx(sum(rouge) / len(rouge), abs=1e-9)
        assert result["exact_match"] == pytest.approx(sum(em) / len(em), abs=1e-9)
        assert result["num_examples"] == len(answers) and result["seed"] == seed
        assert 0 < result["mean_gen_tokens"] <= 16
        # The scores are informative: some overlap, not all equal, and a second reference matters somewhere.
        assert max(rouge) > 0 and len(set(rouge)) > 2
        first_only = [100 * scorer.score(a["references"][0], a["response"])["rougeL"].fmeasure for a in answers]
        assert any(r > f for r, f in zip(rouge, first_only))
        per_seed.append(result["rougeL"])
    assert summary["sets"]["parrot"]["rougeL_mean"] == pytest.approx(sum(per_seed) / len(per_seed), abs=1e-9)


def test_results_and_summary_per_set_and_seed(greedy_eval) -> None:
    save, summary = greedy_eval
    for seed in SEEDS:
        for name in ("answers.jsonl", "results.json"):
            assert (save / "parrot" / str(seed) / name).is_file()
    assert not (save / "absent").exists()  # a set that is not processed is skipped
    on_disk = json.loads((save / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    assert list(on_disk["sets"]) == ["parrot"]
    s = on_disk["sets"]["parrot"]
    assert s["seeds"] == list(SEEDS) and s["num_examples"] == 24
    assert set(s) >= {"rougeL_mean", "rougeL_std", "exact_match_mean", "exact_match_std"}


def test_greedy_is_deterministic_across_seeds(greedy_eval) -> None:
    save, summary = greedy_eval
    a, b = (read_jsonl(save / "parrot" / str(seed) / "answers.jsonl") for seed in SEEDS)
    assert [r["response"] for r in a] == [r["response"] for r in b]
    assert summary["sets"]["parrot"]["rougeL_std"] == 0.0


def test_sampling_follows_the_seed(parrot_ckpt: Path, parrot_data_root: Path, tmp_path: Path) -> None:
    """With --do-sample each seed is a different sample, and the same seed gives the same sample again."""
    args = eval_args(parrot_ckpt, parrot_data_root, tmp_path / "s", "--eval-sets", "parrot", "--do-sample",
                     "--dev-num", "6", "--seeds", "1", "2")
    evaluate_main(args)
    responses = {seed: [r["response"] for r in read_jsonl(tmp_path / "s" / "parrot" / str(seed) / "answers.jsonl")]
                 for seed in (1, 2)}
    assert responses[1] != responses[2]
    evaluate_main(eval_args(parrot_ckpt, parrot_data_root, tmp_path / "again", "--eval-sets", "parrot",
                            "--do-sample", "--dev-num", "6", "--seeds", "1"))
    again = [r["response"] for r in read_jsonl(tmp_path / "again" / "parrot" / "1" / "answers.jsonl")]
    assert again == responses[1]


def test_decoding_options_reach_the_model_and_are_recorded(greedy_eval, parrot_ckpt: Path, parrot_data_root: Path,
                                                            tmp_path: Path) -> None:
    import torch

    from data_utils.datasets import InstructionDataset
    from distill.config import GenerationConfig
    from distill.generation import generate_split
    from distill.models import load_model, load_tokenizer

    options = {"no_repeat_ngram_size": 2, "repetition_penalty": 1.3}
    save = tmp_path / "opts"
    summary = evaluate_main(eval_args(parrot_ckpt, parrot_data_root, save, "--eval-sets", "parrot", "--dev-num", "8",
                                      "--seeds", "10", "--no-repeat-ngram-size", "2", "--repetition-penalty", "1.3"))
    answers = [r["response"] for r in read_jsonl(save / "parrot" / "10" / "answers.jsonl")]
    expected = generate_split(load_model(str(parrot_ckpt)), load_tokenizer(str(parrot_ckpt)),
                              InstructionDataset(parrot_data_root / "parrot" / "full" / "gpt2", "valid", num=8),
                              GenerationConfig(max_new_tokens=16, **options), rank=0, world_size=1,
                              device=torch.device("cpu"), max_prompt_length=256)
    assert answers == [e["response"] for e in expected]
    plain = [r["response"] for r in read_jsonl(greedy_eval[0] / "parrot" / "10" / "answers.jsonl")[:8]]
    assert answers != plain  # the parrot repeats itself within 16 tokens: the options change its answers
    # The results say how they were made, so the two runs can be told apart.
    for run, want in ((summary, options), (greedy_eval[1], {"no_repeat_ngram_size": 0, "repetition_penalty": 1.0})):
        assert {k: run["generation"][k] for k in want} == want
    result = json.loads((save / "parrot" / "10" / "results.json").read_text())
    assert result["generation"] == json.loads((save / "summary.json").read_text())["generation"]
    assert result["generation"]["max_new_tokens"] == 16 and "eval_batch_size" not in result["generation"]


def test_no_eval_set_present_is_an_error(parrot_ckpt: Path, parrot_data_root: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        evaluate_main(eval_args(parrot_ckpt, parrot_data_root, tmp_path / "out", "--eval-sets", "nothing", "none"))
    assert e.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert str(parrot_data_root / "nothing" / "full" / "gpt2" / "valid_0.idx") in errors[0]
    assert "process_data_dolly.sh" in errors[0]
    assert not (tmp_path / "out").exists()


def test_missing_model_is_an_error(parrot_data_root: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        evaluate_main(eval_args(tmp_path / "nomodel", parrot_data_root, tmp_path / "out", "--eval-sets", "parrot"))
    assert e.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(tmp_path / "nomodel") in errors[0]


def test_two_process_sharding_gives_the_same_answers(greedy_eval, parrot_ckpt: Path, parrot_data_root: Path,
                                                     tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    """23 examples over 2 ranks: uneven shards, so the padding repeat is exercised and must be dropped."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    save = tmp_path / "sharded"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port,
           "evaluate.py", *eval_args(parrot_ckpt, parrot_data_root, save, "--eval-sets", "parrot", "--seeds", "10",
                                     "--dev-num", "23")]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=subprocess_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    sharded = read_jsonl(save / "parrot" / "10" / "answers.jsonl")
    single = read_jsonl(greedy_eval[0] / "parrot" / "10" / "answers.jsonl")[:23]
    assert sharded == single
    assert json.loads((save / "parrot" / "10" / "results.json").read_text())["num_examples"] == 23
