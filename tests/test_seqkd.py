"""SeqKD: teacher-written training data (tools/generate_data.py) — its content, resume, sharding over ranks, the path
through processing and SFT — and the wiring of the three SeqKD launchers (dry runs with PYTHON=echo)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from data_utils.datasets import InstructionDataset
from distill.config import GenerationConfig
from distill.generation import generate_split
from distill.models import load_model, load_tokenizer
from tests.conftest import REPO_ROOT, process_raw, tiny_train_args
from distill import seqkd as gd

# 20 prompts in parts of 8 (8, 8, 4), batches of 4: part boundaries fall on batch boundaries, so the tool's batches
# are exactly those of one generate_split call over the first 20 examples.
NUM, GEN_FLAGS = 20, ("--max-new-tokens", "8", "--eval-batch-size", "4", "--part-size", "8", "--max-examples", "20")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def run_tool(teacher: Path, data: Path, save: Path, *extra: str) -> dict:
    return gd.main(["--model-path", str(teacher), "--data-dir", str(data), "--save", str(save), *GEN_FLAGS, *extra])


def reference_answers(model, tok, processed: Path) -> list[dict]:
    """What generate_split answers for the first NUM prompts with the tool's decoding flags (one rank)."""
    return generate_split(model, tok, InstructionDataset(processed, "train", num=NUM),
                          GenerationConfig(max_new_tokens=8, eval_batch_size=4), rank=0, world_size=1,
                          device=torch.device("cpu"), max_prompt_length=256)


@pytest.fixture(scope="module")
def one_thread():
    """The torchrun children run with one thread; so does this process here, so that float reductions (and with them
    every greedy pick) are the same in both."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def seqkd_run(tiny_models, processed_tiny: Path, tmp_path_factory: pytest.TempPathFactory, one_thread) -> tuple:
    save = tmp_path_factory.mktemp("seqkd") / "tiny-gpt2-teacher"
    return save, run_tool(tiny_models["gpt2"]["teacher"], processed_tiny, save)


# ------------------------------------------------------------------------------------------------------------------
# Content


def test_train_holds_the_teachers_greedy_answers(seqkd_run, tiny_models, processed_tiny: Path) -> None:
    save, summary = seqkd_run
    teacher = tiny_models["gpt2"]["teacher"]
    expected = reference_answers(load_model(str(teacher)), load_tokenizer(str(teacher)), processed_tiny)
    train = read_jsonl(save / "train.jsonl")
    assert [r["output"] for r in train] == [e["response"] for e in expected]
    assert any(r["output"] for r in train)  # a random tiny teacher still writes something

    source = read_jsonl(processed_tiny / "train.jsonl")[:NUM]
    for rec, src in zip(train, source):
        assert rec["teacher"] == str(teacher) and "teacher_peft" not in rec
        assert rec["references"] == src["references"]  # the ground truth, not the teacher's answer
        assert "prompt" not in rec
        assert {k: v for k, v in rec.items() if k not in ("output", "teacher")} == \
               {k: v for k, v in src.items() if k not in ("output", "prompt")}
    # valid.jsonl: the original records, so the student is still evaluated against real answers.
    assert read_jsonl(save / "valid.jsonl") == [{k: v for k, v in r.items() if k != "prompt"}
                                                for r in read_jsonl(processed_tiny / "valid.jsonl")]

    empty = sum(1 for e in expected if not e["response"])
    assert (summary["num_examples"], summary["parts"], summary["parts_generated"], summary["parts_reused"]) == \
           (NUM, 3, 3, 0)
    assert summary["empty_responses"] == empty
    assert summary["response_tokens"] == sum(e["num_tokens"] for e in expected)
    assert json.loads((save / "generation.json").read_text()) == summary
    assert sorted(p.name for p in (save / ".parts").iterdir()) == \
           ["part_00000.jsonl", "part_00001.jsonl", "part_00002.jsonl", "settings.json"]


def test_lora_teacher_is_merged_into_its_base(seqkd_run, tiny_models, processed_tiny: Path, tmp_path: Path) -> None:
    from distill.models import apply_lora

    teacher = tiny_models["gpt2"]["teacher"]
    lora = apply_lora(load_model(str(teacher)), r=4, alpha=8, dropout=0.0)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # LoRA's B starts at zero (a no-op adapter); make it change the teacher's answers
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    adapter = tmp_path / "adapter"
    lora.save_pretrained(adapter)

    run_tool(teacher, processed_tiny, tmp_path / "pair", "--peft-path", str(adapter))
    run_tool(adapter, processed_tiny, tmp_path / "adapter_only")  # an adapter directory names its base itself
    merged = load_model(str(teacher), peft_path=str(adapter), merge_adapter=True)
    expected = reference_answers(merged, load_tokenizer(str(teacher)), processed_tiny)
    pair, alone = read_jsonl(tmp_path / "pair" / "train.jsonl"), read_jsonl(tmp_path / "adapter_only" / "train.jsonl")
    assert [r["output"] for r in pair] == [r["output"] for r in alone] == [e["response"] for e in expected]
    base_answers = [r["output"] for r in read_jsonl(seqkd_run[0] / "train.jsonl")]
    assert [r["output"] for r in pair] != base_answers
    assert (pair[0]["teacher"], pair[0]["teacher_peft"]) == (str(teacher), str(adapter))
    assert alone[0]["teacher"] == str(adapter) and "teacher_peft" not in alone[0]


def test_teacher_record_keeps_fields_and_ground_truth() -> None:
    src = {"instruction": "Add.", "input": "1 2", "output": "3", "category": "math", "references": ["3", "three"],
           "difficulty": 2, "prompt": "### Instruction: Add."}
    rec = gd.teacher_record(src, "", "ckpt/t", "ckpt/adapter")
    assert rec == {"instruction": "Add.", "input": "1 2", "output": "", "category": "math",
                   "references": ["3", "three"], "difficulty": 2, "teacher": "ckpt/t", "teacher_peft": "ckpt/adapter"}
    assert list(rec)[:4] == ["instruction", "input", "output", "category"]
    assert gd.teacher_record({**src, "references": None}, "x", "t", None)["references"] == ["3"]
    assert gd.part_ranges(5, 2) == [range(0, 2), range(2, 4), range(4, 5)]


# ------------------------------------------------------------------------------------------------------------------
# Resume


def test_resume_keeps_finished_parts_and_redoes_the_rest(seqkd_run, tiny_models, processed_tiny: Path,
                                                         tmp_path: Path) -> None:
    first, _ = seqkd_run
    save = tmp_path / "run"
    shutil.copytree(first, save)
    parts = save / ".parts"
    # Part 1 gets marker answers: kept on restart, they prove the part was not generated again.
    marked = [{**r, "output": f"MARKER {r['index']}"} for r in read_jsonl(parts / "part_00001.jsonl")]
    (parts / "part_00001.jsonl").write_text("".join(json.dumps(r) + "\n" for r in marked), encoding="utf-8")
    (parts / "part_00000.jsonl").unlink()  # never written
    lines = (parts / "part_00002.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (parts / "part_00002.jsonl").write_text("".join(lines[:2]), encoding="utf-8")  # incomplete: not trusted
    (save / "train.jsonl").unlink()

    summary = run_tool(tiny_models["gpt2"]["teacher"], processed_tiny, save)
    assert (summary["parts_reused"], summary["parts_generated"]) == (1, 2)
    before = [r["output"] for r in read_jsonl(first / "train.jsonl")]
    after = [r["output"] for r in read_jsonl(save / "train.jsonl")]
    assert after[8:16] == [f"MARKER {i}" for i in range(8, 16)]
    assert after[:8] == before[:8] and after[16:] == before[16:]


@pytest.mark.parametrize("flag, value", [("--max-new-tokens", "9"), ("--no-repeat-ngram-size", "3"),
                                         ("--repetition-penalty", "1.2")])
def test_resume_with_other_settings_stops(seqkd_run, tiny_models, processed_tiny: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture, flag: str, value: str) -> None:
    first, _ = seqkd_run
    save = tmp_path / "run"
    shutil.copytree(first, save)
    before = (save / "train.jsonl").read_bytes()
    with pytest.raises(SystemExit) as e:
        run_tool(tiny_models["gpt2"]["teacher"], processed_tiny, save, flag, value)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    name = "generation." + flag[2:].replace("-", "_")
    assert len(err.splitlines()) == 1 and name in err and "delete" in err, err
    assert (save / "train.jsonl").read_bytes() == before


def test_resume_with_another_batch_size_or_progress_interval_reuses_every_part(seqkd_run, tiny_models,
                                                                               processed_tiny: Path,
                                                                               tmp_path: Path) -> None:
    # They split and report the work; the answers stay (the parts are reused, not generated again).
    first, _ = seqkd_run
    save = tmp_path / "run"
    shutil.copytree(first, save)
    (save / "train.jsonl").unlink()
    summary = run_tool(tiny_models["gpt2"]["teacher"], processed_tiny, save, "--eval-batch-size", "3",
                       "--progress-interval", "5")
    assert (summary["parts_reused"], summary["parts_generated"]) == (3, 0)
    assert (save / "train.jsonl").read_bytes() == (first / "train.jsonl").read_bytes()


def test_decoding_options_reach_the_teacher(seqkd_run, tiny_models, processed_tiny: Path, tmp_path: Path) -> None:
    teacher = tiny_models["gpt2"]["teacher"]
    options = {"no_repeat_ngram_size": 2, "repetition_penalty": 1.5}
    summary = run_tool(teacher, processed_tiny, tmp_path / "opts", "--no-repeat-ngram-size", "2",
                       "--repetition-penalty", "1.5")
    expected = generate_split(load_model(str(teacher)), load_tokenizer(str(teacher)),
                              InstructionDataset(processed_tiny, "train", num=NUM),
                              GenerationConfig(max_new_tokens=8, eval_batch_size=4, **options), rank=0, world_size=1,
                              device=torch.device("cpu"), max_prompt_length=256)
    answers = [r["output"] for r in read_jsonl(tmp_path / "opts" / "train.jsonl")]
    assert answers == [e["response"] for e in expected]
    assert answers != [r["output"] for r in read_jsonl(seqkd_run[0] / "train.jsonl")]  # they changed something
    assert {k: summary["generation"][k] for k in options} == options  # and generation.json says so


# ------------------------------------------------------------------------------------------------------------------
# Bad inputs: one line, exit status 2, nothing written


def _copy_processed(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("case", ["no_model", "save_is_data", "no_valid", "not_adapter", "vocab", "part_size"])
def test_bad_input_stops_before_anything_is_written(case: str, tiny_models, processed_tiny: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    teacher, data, save, extra = tiny_models["gpt2"]["teacher"], processed_tiny, tmp_path / "out", []
    if case == "no_model":
        teacher, expect = tmp_path / "missing", "--model-path"
    elif case == "save_is_data":
        data = _copy_processed(processed_tiny, tmp_path / "data")
        save, expect = data, "is --data-dir"
    elif case == "no_valid":
        data = _copy_processed(processed_tiny, tmp_path / "data")
        (data / "valid.jsonl").unlink()
        expect = "valid.jsonl not found"
    elif case == "not_adapter":
        extra, expect = ["--peft-path", str(tiny_models["gpt2"]["student"])], "--peft-path"
    elif case == "vocab":
        data = _copy_processed(processed_tiny, tmp_path / "data")
        meta = json.loads((data / "meta.json").read_text())
        (data / "meta.json").write_text(json.dumps({**meta, "vocab_size": meta["vocab_size"] + 7}))
        expect = "vocabulary"
    else:
        extra, expect = ["--part-size", "0"], "--part-size"
    listing = sorted(p.name for p in data.iterdir())
    with pytest.raises(SystemExit) as e:
        run_tool(teacher, data, save, *extra)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expect in err, err
    if case == "save_is_data":
        assert sorted(p.name for p in data.iterdir()) == listing
    else:
        assert not save.exists()


# ------------------------------------------------------------------------------------------------------------------
# Sharding over ranks


def test_two_ranks_write_the_same_file_as_one(tiny_models, processed_tiny: Path, tmp_path: Path, subprocess_env,
                                              one_thread) -> None:
    # Batches of one: the ranks see other batch compositions than one process would, and padding must not enter the
    # comparison. 11 prompts in parts of 4: the last part (3 prompts) is padded to 2 x 2 across the ranks.
    flags = ["--model-path", str(tiny_models["gpt2"]["teacher"]), "--data-dir", str(processed_tiny),
             "--max-new-tokens", "8", "--eval-batch-size", "1", "--part-size", "4", "--max-examples", "11"]
    gd.main([*flags, "--save", str(tmp_path / "one")])
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(REPO_ROOT / "tools" / "generate_data.py"), *flags, "--save", str(tmp_path / "two")],
                          env=subprocess_env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "two" / "train.jsonl").read_bytes() == (tmp_path / "one" / "train.jsonl").read_bytes()
    assert json.loads((tmp_path / "two" / "generation.json").read_text())["world_size"] == 2
    assert "11 prompts in 3 parts" in proc.stdout


# ------------------------------------------------------------------------------------------------------------------
# Pseudo data -> processing -> SFT


def test_pseudo_data_processes_and_trains(seqkd_run, tiny_models, processed_tiny: Path, tmp_path: Path) -> None:
    import train_sft

    save, _ = seqkd_run
    student = tiny_models["gpt2"]["student"]
    pseudo = process_raw(save, tmp_path / "pseudo", student)
    tok = load_tokenizer(str(student))
    train, original = InstructionDataset(pseudo, "train"), InstructionDataset(processed_tiny, "train", num=NUM)
    answers = [r["output"] for r in read_jsonl(save / "train.jsonl")]
    assert len(train) == NUM
    for i in range(NUM):
        assert train[i]["prompt"].tolist() == original[i]["prompt"].tolist()  # the same prompts ...
        assert tok.decode(train[i]["response"].tolist()) == answers[i]  # ... answered by the teacher
    valid, valid_orig = InstructionDataset(pseudo, "valid"), InstructionDataset(processed_tiny, "valid")
    assert len(valid) == len(valid_orig)
    for i in range(len(valid)):  # ground truth, token for token
        assert valid[i]["response"].tolist() == valid_orig[i]["response"].tolist()
        assert valid.references(i) == valid_orig.references(i)

    run = tmp_path / "run"
    result = train_sft.main(tiny_train_args(student, pseudo, run, "--total-iters", "2", "--batch-size", "4"))
    assert result["steps"] == 2
    assert (run / "2" / "config.json").is_file()


# ------------------------------------------------------------------------------------------------------------------
# Launchers: each stage's default output is the next stage's default input


# family -> (teacher run, tokenizer checkpoint, deepspeed config of the student runs, {seqkd script: student})
LAUNCHERS = {
    "gpt2": ("gpt2-xlarge", "gpt2-base", "ds_config_zero1_bf16",
             {"base": "gpt2-base", "medium": "gpt2-medium", "large": "gpt2-large"}),
    "opt": ("opt-2.7B", "opt-125M", "ds_config_zero1_bf16",
            {"125M": "opt-125M", "350M": "opt-350M", "1.3B": "opt-1.3B"}),
    "llama": ("openllama2-7B", "openllama2-7B", "ds_config_zero2_bf16", {"3B": "openllama2-3B"}),
    "qwen2": ("qwen2-1.5B", "qwen2-0.5B", "ds_config_zero1_bf16", {"0.5B": "qwen2-0.5B"}),
}


def dry_run(script: str, base: Path, env: dict[str, str]) -> tuple[int, dict[str, str], str]:
    """Runs a launcher with PYTHON=echo on a machine whose resolved precision is bf16 (the probe's answer as
    scripts/lib.sh exports it): returns its exit status, the --flags of the command it would run (last value wins, as
    in argparse) and its stderr."""
    hw = {"DISTILL_HW_FOR": "auto", "NUM_GPUS": "0", "PRECISION_RESOLVED": "bf16", "PRECISION_INFO": "test"}
    proc = subprocess.run(["bash", str(REPO_ROOT / "scripts" / script), str(base)], capture_output=True, text=True,
                          env={**env, **hw, "PYTHON": "echo", "GPUS_PER_NODE": "1", "MASTER_PORT": "1"}, timeout=60)
    words, flags = proc.stdout.split(), {}
    for i, w in enumerate(words):
        if w.startswith("--"):
            flags[w] = words[i + 1] if i + 1 < len(words) and not words[i + 1].startswith("--") else ""
    return proc.returncode, flags, proc.stderr


@pytest.mark.parametrize("family", sorted(LAUNCHERS))
def test_launchers_chain_generate_process_train(family: str, tmp_path: Path, subprocess_env) -> None:
    teacher, tokenizer, ds_name, students = LAUNCHERS[family]
    base = tmp_path / "repo"
    for d in ["checkpoints/" + tokenizer, f"results/{family}/train/sft/{teacher}/best",
              *("checkpoints/" + s for s in students.values())]:
        (base / d).mkdir(parents=True, exist_ok=True)
    (base / "configs" / "deepspeed").mkdir(parents=True)
    (base / "configs" / "deepspeed" / f"{ds_name}.json").write_text("{}")

    # Nothing processed yet: each stage stops at once and names the step that makes its input.
    code, _, err = dry_run(f"{family}/seqkd/seqkd_{next(iter(students))}.sh", base, subprocess_env)
    assert code == 1 and "process_pseudo_data_seqkd.sh" in err
    code, _, err = dry_run(f"{family}/tools/process_pseudo_data_seqkd.sh", base, subprocess_env)
    assert code == 1 and "generate_data_seqkd.sh" in err
    code, _, err = dry_run(f"{family}/tools/generate_data_seqkd.sh", base, subprocess_env)
    assert code == 1 and "process_data_dolly.sh" in err

    prompts = base / "processed_data" / "dolly" / "full" / family
    prompts.mkdir(parents=True)
    (prompts / "train_0.bin").touch()
    code, gen, err = dry_run(f"{family}/tools/generate_data_seqkd.sh", base, subprocess_env)
    assert code == 0, err
    assert "tools/generate_data.py" in err and Path(gen["--data-dir"]) == prompts
    model = base / gen["--model-path"]
    if family == "llama":  # base + LoRA adapter, in the resolved precision
        assert model == base / "checkpoints" / teacher and gen["--dtype"] == "bf16"
        assert base / gen["--peft-path"] == base / f"results/llama/train/sft/{teacher}/best"
    else:
        assert model == base / f"results/{family}/train/sft/{teacher}/best" and "--peft-path" not in gen

    raw = Path(gen["--save"])
    assert raw == base / "data" / "dolly_seqkd" / teacher
    raw.mkdir(parents=True)
    (raw / "train.jsonl").touch()
    code, proc, err = dry_run(f"{family}/tools/process_pseudo_data_seqkd.sh", base, subprocess_env)
    assert code == 0, err
    assert Path(proc["--data-dir"]) == raw and Path(proc["--model-path"]) == base / "checkpoints" / tokenizer
    assert ("--chat-template" in proc) == (family == "qwen2")  # as the family's prompts were rendered
    pseudo = Path(proc["--processed-data-dir"]) / proc["--model-type"]
    assert pseudo == base / "processed_data" / "dolly" / "pseudo" / teacher / family

    pseudo.mkdir(parents=True)
    (pseudo / "train_0.bin").touch()
    for size, student in students.items():
        code, train, err = dry_run(f"{family}/seqkd/seqkd_{size}.sh", base, subprocess_env)
        assert code == 0, err
        assert "train_sft.py" in err
        assert Path(train["--data-dir"]) == pseudo and Path(train["--model-path"]) == base / "checkpoints" / student
        assert Path(train["--save"]) == base / "results" / family / "train" / "seqkd" / f"{student}-{teacher}"
        assert Path(train["--deepspeed-config"]).name == f"{ds_name}.json"


# ------------------------------------------------------------------------------------------------------------------
# SeqKD in the step: train_distill.py --seqkd (distill/objectives.py SeqKDObjective)


def test_seqkd_in_the_step_trains_on_the_teachers_answers(tiny_models: dict, processed_tiny: Path, tmp_path: Path,
                                                          in_process) -> None:
    """Step 1's logged CE is the untrained student's token-mean CE on what the teacher answers (greedy) to the
    step-1 batch's prompts — computed here from generate_batch and a plain F.cross_entropy, not the objective."""
    import torch.nn.functional as F

    import train_distill
    from data_utils.datasets import LMCollator, left_padded, prompts_of, response_batch
    from distill.generation import generate_batch
    from distill.trainer import MicroBatchStream
    from tests.conftest import read_metrics

    student, teacher = tiny_models["gpt2"]["student"], tiny_models["gpt2"]["teacher"]
    save = tmp_path / "seqkd"
    argv = tiny_train_args(student, processed_tiny, save, "--teacher-model-path", str(teacher), "--seqkd",
                           "--kd-ratio", "0", "--no-gen-do-sample", "--gen-max-new-tokens", "6", "--total-iters", "2",
                           "--batch-size", "4", "--dev-num", "4", "--eval-batch-size", "4")
    train_distill.main(argv)
    tok = load_tokenizer(str(student))
    train_set = InstructionDataset(processed_tiny, "train")
    items = next(MicroBatchStream(train_set, lambda x: x, 4, seed=10, rank=0, world_size=1))
    batch = LMCollator(tok.pad_token_id, tok.eos_token_id, 128)(items)
    prompts = prompts_of(batch)
    prompt_batch = left_padded(prompts, tok.pad_token_id)
    answers = generate_batch(load_model(str(teacher)).eval(), tok, prompt_batch["input_ids"],
                             prompt_batch["attention_mask"], GenerationConfig(max_new_tokens=6))
    assert any(answers)
    target = response_batch([(p, a + [tok.eos_token_id]) for p, a in zip(prompts, answers)], tok.pad_token_id)
    with torch.no_grad():
        logits = load_model(str(student))(input_ids=target["input_ids"]).logits
    mask = target["labels"] != -100
    want = float(F.cross_entropy(logits[mask].double(), target["labels"][mask]))
    assert int(mask.sum()) == sum(len(a) + 1 for a in answers)  # the answers and their EOS, nothing of the prompt
    step1 = next(m for m in read_metrics(save) if m["step"] == 1 and "train/ce" in m)
    assert step1["train/ce"] == pytest.approx(want, abs=1e-4)
    assert "train/kd" not in step1 and (save / "2" / "model.safetensors").is_file()  # pure SeqKD: CE only


def test_seqkd_with_word_level_kd_has_both_terms(tiny_models: dict, processed_tiny: Path, tmp_path: Path,
                                                in_process) -> None:
    import train_distill
    from tests.conftest import read_metrics

    save = tmp_path / "seqkd_kd"
    train_distill.main(tiny_train_args(tiny_models["gpt2"]["student"], processed_tiny, save, "--teacher-model-path",
                                       str(tiny_models["gpt2"]["teacher"]), "--seqkd", "--kd-ratio", "0.5",
                                       "--gen-max-new-tokens", "4", "--total-iters", "2", "--batch-size", "4",
                                       "--dev-num", "4", "--eval-batch-size", "4"))
    step1 = next(m for m in read_metrics(save) if m["step"] == 1 and "train/ce" in m)
    assert step1["train/loss"] == pytest.approx(0.5 * step1["train/ce"] + 0.5 * step1["train/kd"], rel=1e-5)
    assert step1["train/kd"] > 0
