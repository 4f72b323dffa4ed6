"""train_distill.py: the KD objective through the shared trainer — learning from the teacher, equivalences with SFT
and across batch splits, tokenizer checks, padded student vocabularies, the optional LM loss."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import REPO_ROOT, read_metrics, tiny_train_args

sys.path.insert(0, str(REPO_ROOT / "tools"))


def kd_args(student: Path, teacher: Path, data: Path, save: Path, *extra: str) -> list[str]:
    return tiny_train_args(student, data, save, "--teacher-model-path", str(teacher), "--batch-size", "8",
                           "--dev-num", "16", "--eval-batch-size", "16", *extra)


def weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return load_file(str(ckpt / "model.safetensors"))


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


@pytest.fixture(scope="module")
def trained_teacher(tiny_models: dict, processed_tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny gpt2 teacher after 40 SFT steps, so its distribution carries something a student can learn."""
    import train_sft
    from tests.conftest import in_process_run

    save = tmp_path_factory.mktemp("teacher") / "run"
    with in_process_run():
        train_sft.main(tiny_train_args(tiny_models["gpt2"]["teacher"], processed_tiny, save, "--total-iters", "40",
                                       "--lr", "2e-3", "--batch-size", "8", "--dev-num", "16",
                                       "--eval-batch-size", "16"))
    return save / "40"


def test_pure_kd_moves_the_student_towards_the_teacher(trained_teacher: Path, tiny_models: dict,
                                                      processed_tiny: Path, tmp_path: Path, in_process) -> None:
    import train_distill
    from data_utils.datasets import InstructionDataset, LMCollator
    from distill.models import load_model, load_tokenizer
    from eval_divergence import divergences

    student = tiny_models["gpt2"]["student"]
    save = tmp_path / "kd"
    train_distill.main(kd_args(student, trained_teacher, processed_tiny, save, "--type", "fkl", "--kd-ratio", "1",
                               "--total-iters", "30", "--lr", "3e-3"))
    tok = load_tokenizer(str(student))
    valid = InstructionDataset(processed_tiny, "valid", num=16)
    collate = LMCollator(tok.pad_token_id, tok.eos_token_id, 128)
    teacher = load_model(str(trained_teacher))
    before = divergences(load_model(str(student)), teacher, valid, collate, ["fkl"], len(tok))["fkl"]
    after = divergences(load_model(str(save / "30")), teacher, valid, collate, ["fkl"], len(tok))["fkl"]
    assert after < 0.7 * before
    logged = read_metrics(save)
    assert {"train/ce", "train/kd", "train/loss"} <= set(logged[0])
    final = [m for m in logged if "valid/kd" in m][-1]
    assert final["valid/kd"] == pytest.approx(after, rel=1e-3)  # the trainer's validation KD is the same quantity


def test_kd_ratio_zero_is_exactly_sft(trained_teacher: Path, tiny_models: dict, processed_tiny: Path,
                                      tmp_path: Path, in_process) -> None:
    import train_distill
    import train_sft

    student = tiny_models["gpt2"]["student"]
    common = ("--total-iters", "4", "--lr", "1e-3", "--seed", "3")
    train_sft.main(tiny_train_args(student, processed_tiny, tmp_path / "sft", "--batch-size", "8", "--dev-num", "16",
                                   "--eval-batch-size", "16", *common))
    train_distill.main(kd_args(student, trained_teacher, processed_tiny, tmp_path / "kd", "--kd-ratio", "0",
                               "--type", "rkl", *common))
    assert max_diff(weights(tmp_path / "sft" / "4"), weights(tmp_path / "kd" / "4")) == 0.0


def test_selective_kd_is_invariant_to_gradient_accumulation(trained_teacher: Path, tiny_models: dict,
                                                            processed_tiny: Path, tmp_path: Path, in_process) -> None:
    """Global normalisation: one micro-batch of 8 or two of 4 give the same step (selected-token counts differ
    between the two halves, so per-micro-batch means would not)."""
    import train_distill

    student = tiny_models["gpt2"]["student"]
    flags = ("--type", "tjsd", "--temperature-kld", "2", "--token-ratio", "0.5", "--total-iters", "3",
             "--lr-schedule", "constant", "--lr", "1e-3")
    train_distill.main(kd_args(student, trained_teacher, processed_tiny, tmp_path / "a", *flags))
    train_distill.main(kd_args(student, trained_teacher, processed_tiny, tmp_path / "b", *flags, "--batch-size", "4",
                               "--gradient-accumulation-steps", "2"))
    assert max_diff(weights(tmp_path / "a" / "3"), weights(tmp_path / "b" / "3")) < 1e-5


def test_unknown_type_lists_the_valid_kinds(trained_teacher: Path, tiny_models: dict, processed_tiny: Path,
                                            tmp_path: Path, capsys) -> None:
    import train_distill

    with pytest.raises(SystemExit) as e:
        train_distill.main(kd_args(tiny_models["gpt2"]["student"], trained_teacher, processed_tiny, tmp_path / "x",
                                   "--type", "fkll", "--total-iters", "1"))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--type" in err and "fkll" in err and "tsrkl" in err and "ttvdf" in err


def test_teacher_with_another_tokenizer_is_refused(trained_teacher: Path, tiny_models: dict, processed_tiny: Path,
                                                   tmp_path: Path, capsys, in_process) -> None:
    import train_distill
    from transformers import AutoTokenizer

    other = tmp_path / "other-teacher"
    shutil.copytree(trained_teacher, other)
    tok = AutoTokenizer.from_pretrained(other)
    tok.add_tokens(["<extra_token>"])
    tok.save_pretrained(other)
    with pytest.raises(SystemExit) as e:
        train_distill.main(kd_args(tiny_models["gpt2"]["student"], other, processed_tiny, tmp_path / "x",
                                   "--total-iters", "1"))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error:") and "tokenizers disagree" in err and "vocabularies differ" in err
    assert not (tmp_path / "x").exists()


def test_padded_student_vocabulary_rows_never_enter_the_divergence(trained_teacher: Path, tiny_models: dict,
                                                                   processed_tiny: Path, tmp_path: Path,
                                                                   in_process) -> None:
    import train_distill
    from data_utils.datasets import InstructionDataset, LMCollator
    from distill.config import DistillConfig
    from distill.models import load_model, load_tokenizer
    from distill.objectives import KDObjective, Needs, run_model

    student_dir = tmp_path / "padded-student"
    tok = load_tokenizer(str(tiny_models["gpt2"]["student"]))
    model = load_model(str(tiny_models["gpt2"]["student"]))
    model.resize_token_embeddings(len(tok) + 16, mean_resizing=False)
    model.save_pretrained(student_dir)
    tok.save_pretrained(student_dir)

    teacher = load_model(str(trained_teacher))
    objective = KDObjective(DistillConfig(teacher_model_path=str(trained_teacher), type="rkl"), len(tok))
    batch = LMCollator(tok.pad_token_id, tok.eos_token_id, 128)(
        [InstructionDataset(processed_tiny, "valid")[i] for i in range(4)])

    def kd() -> torch.Tensor:
        return objective.sums(run_model(model, batch, Needs()), run_model(teacher, batch, Needs()), batch, None)["kd"]

    with torch.no_grad():
        before = kd()
        model.get_input_embeddings().weight[len(tok):] = 50.0  # padded rows: huge logits if they were counted
        after = kd()
    assert torch.isfinite(before) and float(before) == pytest.approx(float(after), rel=1e-6)
    train_distill.main(kd_args(student_dir, trained_teacher, processed_tiny, tmp_path / "run", "--total-iters", "2"))
    assert (tmp_path / "run" / "2" / "model.safetensors").exists()


def test_language_modelling_loss_on_a_pretraining_corpus(trained_teacher: Path, tiny_models: dict,
                                                         processed_tiny: Path, tmp_path: Path, in_process) -> None:
    import process_data_pretrain
    import train_distill

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(f"document {i} about rivers<@x(x!>and stones {i * 7}" for i in range(300)) + "\n")
    lm_dir = tmp_path / "lm"
    process_data_pretrain.process(process_data_pretrain.parse_args(
        ["--data-path", str(corpus), "--processed-data-dir", str(lm_dir), "--model-path",
         str(tiny_models["gpt2"]["teacher"]), "--max-length", "32", "--dev-num", "2"]))
    lm_data = next(p.parent for p in lm_dir.rglob("train_0.bin"))
    train_distill.main(kd_args(tiny_models["gpt2"]["student"], trained_teacher, processed_tiny, tmp_path / "run",
                               "--total-iters", "2", "--lm-data-dir", str(lm_data)))
    logged = [m for m in read_metrics(tmp_path / "run") if "train/lm" in m]
    assert logged and all(m["train/lm"] > 0 for m in logged)
    m = logged[-1]
    # --lm-coef left out: weight 1 with a corpus, as in the MiniLLM and DistiLLM code.
    assert m["train/loss"] == pytest.approx(0.5 * m["train/ce"] + 0.5 * m["train/kd"] + 1.0 * m["train/lm"], rel=1e-4)
    # The KD variant (MiniLLM's pretraining term): the same step-1 batch and weights, another "lm" value
    # (its formula against a plain reference: tests/test_objectives.py).
    train_distill.main(kd_args(tiny_models["gpt2"]["student"], trained_teacher, processed_tiny, tmp_path / "kd_lm",
                               "--total-iters", "1", "--lm-data-dir", str(lm_data), "--lm-kd-ratio", "0.5"))
    kd_lm = next(m for m in read_metrics(tmp_path / "kd_lm") if "train/lm" in m)
    assert kd_lm["train/ce"] == pytest.approx(logged[0]["train/ce"], rel=1e-6)
    assert abs(kd_lm["train/lm"] - logged[0]["train/lm"]) > 1e-3


def test_calibration_matches_a_direct_computation(trained_teacher: Path, processed_tiny: Path) -> None:
    """tools/eval_divergence.py --calibration: NLL, accuracy, confidence, ECE and entropy of the next-token
    distributions on response positions, checked position by position."""
    from data_utils.datasets import InstructionDataset, LMCollator
    from distill.models import load_model, load_tokenizer
    from eval_divergence import calibration

    tok = load_tokenizer(str(trained_teacher))
    valid = InstructionDataset(processed_tiny, "valid", num=12)
    collate = LMCollator(tok.pad_token_id, tok.eos_token_id, 128)
    model = load_model(str(trained_teacher)).eval()
    got = calibration(model, valid, collate, len(tok), batch_size=5)  # batches of unequal padding

    probs, labels = [], []
    for i in range(len(valid)):  # one unpadded sequence at a time
        ex = valid[i]
        seq = torch.tensor([*ex["prompt"], *ex["response"], tok.eos_token_id])[None]
        with torch.no_grad():
            p = torch.softmax(model(input_ids=seq).logits[0, :, :len(tok)].double(), -1)
        n = len(ex["prompt"])
        probs.append(p[n - 1:-1])
        labels.append(seq[0, n:])
    p, y = torch.cat(probs), torch.cat(labels)
    conf, top = p.max(-1)
    hit = (top == y).double()
    ece = sum(abs(float(conf[b].sum() - hit[b].sum())) for b in
              [(conf * 10).long().clamp(max=9) == k for k in range(10)]) / len(y)
    assert got["tokens"] == len(y)
    assert got["nll"] == pytest.approx(float(-p[torch.arange(len(y)), y].log().mean()), rel=1e-4)
    assert got["accuracy"] == pytest.approx(float(hit.mean()), abs=1e-9)
    assert got["confidence"] == pytest.approx(float(conf.mean()), rel=1e-4)
    assert got["entropy"] == pytest.approx(float(-(p * p.log()).sum(-1).mean()), rel=1e-4)
    assert got["ece"] == pytest.approx(ece, abs=1e-4)


def test_gradient_scale_matches_per_position_gradients(tiny_models: dict, trained_teacher: Path,
                                                       processed_tiny: Path) -> None:
    """tools/eval_divergence.py --grad-scale: mean per-position gradient norm of each kind at the logits over the
    cross-entropy's, checked against the closed forms (CE: p_s - onehot; fkl: p_s - p_t) one sequence at a time."""
    from data_utils.datasets import InstructionDataset, LMCollator
    from distill.models import load_model, load_tokenizer
    from eval_divergence import gradient_scale

    tok = load_tokenizer(str(trained_teacher))
    valid = InstructionDataset(processed_tiny, "valid", num=9)
    collate = LMCollator(tok.pad_token_id, tok.eos_token_id, 128)
    student, teacher = load_model(str(tiny_models["gpt2"]["student"])).eval(), load_model(str(trained_teacher)).eval()
    got = gradient_scale(student, teacher, valid, collate, ["fkl", "jsd"], len(tok), batch_size=4)

    ce_norms, fkl_norms = [], []
    for i in range(len(valid)):
        ex = valid[i]
        seq = torch.tensor([*ex["prompt"], *ex["response"], tok.eos_token_id])[None]
        n = len(ex["prompt"])
        with torch.no_grad():
            ps = torch.softmax(student(input_ids=seq).logits[0, n - 1:-1, :len(tok)].double(), -1)
            pt = torch.softmax(teacher(input_ids=seq).logits[0, n - 1:-1, :len(tok)].double(), -1)
        onehot = torch.nn.functional.one_hot(seq[0, n:], len(tok)).double()
        ce_norms.append((ps - onehot).norm(dim=-1))
        fkl_norms.append((ps - pt).norm(dim=-1))
    ce = float(torch.cat(ce_norms).mean())
    assert got["ce"] == pytest.approx(ce, rel=1e-4)
    assert got["fkl"] == pytest.approx(float(torch.cat(fkl_norms).mean()) / ce, rel=1e-4)
    assert 0 < got["jsd"] < got["fkl"]  # beta = 0.9: m is close to p_s, so jsd pulls less than fkl


def test_gradient_scale_needs_kinds(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from eval_divergence import main

    with pytest.raises(SystemExit) as e:
        main(["--student", str(tmp_path), "--data-dir", str(tmp_path), "--kinds", "--grad-scale"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--grad-scale needs --kinds" in err
