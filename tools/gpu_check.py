#!/usr/bin/env python
"""GPU check: tokens/s, peak memory and model FLOPs utilisation (MFU) of the toolkit's real training and generation
code paths, on the tiny models and on randomly initialised GPT-2-shaped models. A manual check, not part of CI.

    bash scripts/gpu_check.sh                                   # CUDA: every case below (docs/gpu_check.md)
    bash scripts/gpu_check.sh --zero 2 --sizes 124M 774M        # a subset
    python tools/gpu_check.py --smoke [--zero 2]                # CPU: tiny models, fp32, 2 steps each, MFU n/a

Cases (per dtype: bf16 where the GPU has it natively, else fp16; ``--dtype`` overrides; fp32 in ``--smoke``):

* ``sft``  SFT of one model through ``train_sft.main`` — tiny student, gpt2-124M, gpt2-774M — per ZeRO stage
  (``configs/deepspeed/ds_config_zero{2,3}_{bf16,fp16,fp32}.json``);
* ``kd``   white-box KD (fkl, kd-ratio 0.5) through ``train_distill.main``: tiny teacher -> tiny student, and
  gpt2-774M -> gpt2-124M (the teacher frozen, in the run's dtype), per ZeRO stage;
* ``gen``  evaluation generation: ``distill.generation.generate_batch`` on one batch of validation prompts, the model
  loaded as ``evaluate.py`` loads it (``load_model(path, dtype).to(device)``), greedy, once per dtype. EOS is
  suppressed (``min_new_tokens``) so every row generates exactly ``--max-new-tokens`` tokens: random weights would
  otherwise stop at arbitrary points.

Each training case is the real Trainer in a fresh process (``python tools/gpu_check.py _worker ...``, which calls the
entry point's ``main(argv)``; ``torch.distributed.run`` with ``--nproc`` > 1), so peak memory is the case's own
(``--smoke`` calls the same worker in this process instead, ``--in-process``: start-up dominates on a CPU). The
numbers are read back from the run's ``metrics.jsonl``: ``train/tokens_per_s`` (per step, ``--log-interval 1``) over
the steps after ``--warmup-steps``, combined as a harmonic mean — exactly total tokens / total time, since every
training example is the same length (below) — and the largest ``train/peak_mem_mb`` (``torch.cuda.
max_memory_allocated``; the process's peak RSS on CPU). The one change to the trainer: its end-of-run checkpoint
is skipped (``Trainer.save`` replaced by a no-op in the worker), since saving is not measured and a 774M ZeRO state is
~12 GB per case; ``--save-checkpoints`` keeps the unmodified trainer.

Models and data (built in ``--work-dir``, a temporary directory unless given):

* the tiny gpt2 teacher/student and their shared byte-level BPE tokenizer, by ``tools/make_tiny_models.py``'s API
  from the built-in synthetic data (or taken from ``--tiny-models`` when it holds ``tiny-gpt2-{teacher,student}``);
* GPT-2-shaped models from a ``GPT2Config`` (GPT-2's own defaults otherwise): 124M = 12 layers, 768 hidden, 12
  heads; 774M = 36 layers, 1280 hidden, 20 heads; 1024 positions; random weights, no network. They keep GPT-2's
  **vocab_size 50257** (so parameter counts and the LM-head cost are GPT-2's: 124,439,808 and 774,030,080
  parameters) but use the tiny tokenizer, whose ids are all below its size (1024-2048): the extra embedding rows are
  never fed but are computed in every LM-head matmul and softmax, as in real GPT-2. KD's divergence covers the
  tokenizer's rows only (``KDObjective`` cuts the logits to the tokenizer's vocabulary);
* the training data: synthetic records (``tools/make_synthetic_data.py``) whose responses are many synthetic answers
  joined, processed by ``tools/process_data_dolly.py`` with ``--max-length --seq-len``, so every response is truncated
  and every example trains exactly ``--seq-len - 1`` tokens (no padding, equal-sized steps).

FLOPs and MFU (the standard estimate of Kaplan et al. / PaLM appendix B, counting matmuls only):

    student training, per trained token:  6 * N_s + 12 * L_s * d_s * T     (forward + backward)
    frozen teacher (KD), per token:       2 * N_t +  4 * L_t * d_t * T     (forward only)
    generation, per row with p prompt and g new tokens:
                                          (p + g) * 2 * N + 4 * L * d * (p * p + g * p + g * (g + 1) / 2)
    MFU = FLOPs per token * tokens/s / (peak FLOP/s of one GPU * number of GPUs)

``N`` counts the parameters that multiply activations: every parameter except the embedding lookup tables (token
and position), plus the LM-head matrix (counted once even when tied to the token embedding) — for GPT-2 shapes, the
parameter count minus the position table. ``L`` is the layer count, ``d`` the hidden size (= heads x head size), and
``T`` the length of the sequence a token is in (the 12·L·H·Q·T attention term: QK^T and AV at 2·d·T FLOPs each per
token and layer forward, x3 with backward; causal masking is not discounted), taken over the training split as the
token-weighted mean ``sum(n^2) / sum(n)`` (= ``--seq-len - 1`` with this data). A generated token attends to the
``p + i`` positions before it (the KV cache); a prompt token is counted like a training token, at ``p``. The loss
(softmax, divergence), norms, activations and the optimizer are not counted. Peak: dense (no sparsity) bf16/fp16
tensor-core FLOP/s from the vendor datasheets, by device name (``PEAK_TFLOPS``), or ``--peak-tflops``; an unknown
device, fp32 or the CPU gives MFU n/a with a note.

Output: ``<out>/gpu_check.json`` (every case, the settings, the device and versions) and ``<out>/gpu_check.md``
(the table to paste into docs/), ``--out`` defaulting to ``results/gpu_check``. A failed case (an out-of-memory, a
crash) is recorded with its log's tail and the others still run; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as `python tools/gpu_check.py`: make the repo's packages importable
    sys.path.insert(0, str(REPO_ROOT))

DS_DIR = REPO_ROOT / "configs" / "deepspeed"
SIZES = ("tiny", "124M", "774M")
KINDS = ("sft", "kd", "gen")
# GPT-2 shapes: (n_layer, n_embd, n_head); vocabulary and positions are GPT-2's.
GPT2_SHAPES = {"124M": (12, 768, 12), "774M": (36, 1280, 20)}
GPT2_VOCAB = 50257
GPT2_POSITIONS = 1024
TINY_POSITIONS = 512  # configs/models/tiny-gpt2-*.json
# Dense (no sparsity) bf16/fp16 tensor-core peak of ONE GPU in TFLOP/s, from the vendor datasheets; first match of
# the regular expression in torch.cuda.get_device_name() wins (so the specific names come first).
PEAK_TFLOPS: tuple[tuple[str, float, str], ...] = (
    (r"H200 NVL", 835.0, "H200 NVL"),
    (r"H200|GH200", 989.0, "H200 / GH200"),
    (r"H100 NVL", 835.0, "H100 NVL"),
    (r"H100 PCIe", 756.0, "H100 PCIe"),
    (r"H100", 989.0, "H100 SXM"),
    (r"A100|A800", 312.0, "A100 / A800"),
    (r"L40S", 362.0, "L40S"),
    (r"L40\b", 181.0, "L40"),
    (r"\bL4\b", 121.0, "L4"),
    (r"\bA10G?\b", 125.0, "A10 / A10G"),
    (r"RTX 4090", 165.0, "RTX 4090 (fp32 accumulate)"),
    (r"RTX 3090", 71.0, "RTX 3090 (fp32 accumulate)"),
    (r"V100.*PCIE", 112.0, "V100 PCIe (fp16 only)"),
    (r"V100", 125.0, "V100 SXM2 (fp16 only)"),
    (r"\bT4\b", 65.0, "T4 (fp16 only)"),
)
DIST_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "GROUP_RANK",
             "ROLE_RANK", "TORCHELASTIC_RUN_ID")
GPU_DEFAULTS = {"steps": 10, "warmup_steps": 3, "batch_size": 16, "seq_len": 512, "gen_batch_size": 32,
                "max_new_tokens": 128}
SMOKE_DEFAULTS = {"steps": 2, "warmup_steps": 1, "batch_size": 4, "seq_len": 128, "gen_batch_size": 4,
                  "max_new_tokens": 8}


# ----------------------------------------------------------------------------------------------------------------
# FLOPs, MFU, peak table
# ----------------------------------------------------------------------------------------------------------------
def train_flops_per_token(n_params: int, n_layer: int, d_model: int, seq_len: float) -> float:
    """Forward + backward FLOPs per trained token: 6·N + 12·L·d·T."""
    return 6.0 * n_params + 12.0 * n_layer * d_model * seq_len


def teacher_flops_per_token(n_params: int, n_layer: int, d_model: int, seq_len: float) -> float:
    """Forward-only FLOPs per token of a frozen teacher: 2·N + 4·L·d·T."""
    return 2.0 * n_params + 4.0 * n_layer * d_model * seq_len


def generation_flops(n_params: int, n_layer: int, d_model: int, prompt_lens: Sequence[int],
                     new_lens: Sequence[int]) -> float:
    """Forward FLOPs of generating ``new_lens[r]`` tokens after a ``prompt_lens[r]``-token prompt, summed over rows:
    (p + g)·2N + 4·L·d·(p·p + g·p + g(g+1)/2) — prompt tokens at T = p, the i-th new token attending p + i keys."""
    total = 0.0
    for p, g in zip(prompt_lens, new_lens):
        keys = p * p + g * p + g * (g + 1) / 2.0  # prompt tokens attend p keys each; new token i, p + i
        total += (p + g) * 2.0 * n_params + 4.0 * n_layer * d_model * keys
    return total


def effective_seq_len(lengths: Sequence[int]) -> float:
    """Token-weighted mean sequence length sum(n^2)/sum(n): the T of the attention term averaged over tokens."""
    total = sum(lengths)
    return sum(n * n for n in lengths) / total if total else 0.0


def mfu(flops_per_s: float, peak_tflops: Optional[float], n_gpus: int = 1) -> Optional[float]:
    """Achieved FLOP/s over the peak of ``n_gpus`` GPUs (None when the peak is unknown)."""
    if not peak_tflops:
        return None
    return flops_per_s / (peak_tflops * 1e12 * n_gpus)


def lookup_peak_tflops(device_name: str) -> tuple[Optional[float], Optional[str]]:
    """(peak TFLOP/s, table entry) for a CUDA device name; (None, None) when it is not in ``PEAK_TFLOPS``."""
    for pattern, tflops, label in PEAK_TFLOPS:
        if re.search(pattern, device_name, flags=re.IGNORECASE):
            return tflops, label
    return None, None


def flop_params(model: Any) -> int:
    """Parameters that multiply activations: all but embedding lookup tables, plus the LM head counted once."""
    from torch import nn

    lookups = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    seen: set[int] = set()
    n = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        if id(p) not in lookups:
            n += p.numel()
    head = model.get_output_embeddings()
    if head is not None and id(head.weight) in lookups:  # tied: the token embedding is also the output matmul
        n += head.weight.numel()
    return n


# ----------------------------------------------------------------------------------------------------------------
# Models and data
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class ModelSpec:
    name: str
    path: str
    params: int
    flop_params: int
    n_layer: int
    d_model: int
    n_head: int
    vocab_size: int


def describe_model(name: str, path: Path) -> ModelSpec:
    """Counts a checkpoint's parameters from its config alone (the model is built on the meta device)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(path, trust_remote_code=False)  # no checkpoint code (distill/models.py)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    return ModelSpec(name, str(path), params, flop_params(model), cfg.num_hidden_layers, cfg.hidden_size,
                     cfg.num_attention_heads, cfg.vocab_size)


def gpt2_config(size: str, tokenizer: Any) -> Any:
    from transformers import GPT2Config

    n_layer, n_embd, n_head = GPT2_SHAPES[size]
    eos = tokenizer.eos_token_id
    return GPT2Config(vocab_size=GPT2_VOCAB, n_positions=GPT2_POSITIONS, n_embd=n_embd, n_layer=n_layer,
                      n_head=n_head, bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)


def build_gpt2_shaped(size: str, tokenizer: Any, dest: Path, seed: int = 1) -> Path:
    """A randomly initialised GPT-2-shaped checkpoint (bf16 weights on disk) with the given tokenizer; kept if it
    exists (a reused ``--work-dir``)."""
    if (dest / "config.json").is_file():
        return dest
    import torch
    from transformers import GPT2LMHeadModel

    from data_utils.atomic import build_dir

    def fill(tmp: Path) -> None:
        torch.manual_seed(seed)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        with torch.device(device):
            model = GPT2LMHeadModel(gpt2_config(size, tokenizer))
        model.to(torch.bfloat16).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        del model
        if device == "cuda":
            torch.cuda.empty_cache()

    build_dir(dest, fill)
    return dest


def packed_records(pool: Sequence[dict], n: int, min_chars: int, start: int = 0) -> list[dict]:
    """``n`` instruction records, each with one pool record's prompt and a response of pool answers joined until it
    has ``min_chars`` characters (long enough that processing truncates every response to the same length)."""
    out = []
    j = start
    for i in range(n):
        head = pool[(start + i) % len(pool)]
        parts: list[str] = []
        size = 0
        while size < min_chars:
            text = pool[j % len(pool)]["output"]
            parts.append(text)
            size += len(text) + 1
            j += 1
        out.append({"instruction": head["instruction"], "input": head.get("input", ""), "output": " ".join(parts),
                    "category": head.get("category", "packed")})
    return out


def write_jsonl(path: Path, records: Sequence[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def max_prompt_length(seq_len: int) -> int:
    return max(1, seq_len * 3 // 4)


def prepare(args: argparse.Namespace, work: Path) -> tuple[dict[str, ModelSpec], Path]:
    """Builds (or reuses) every model the selected cases need and the processed data; returns the specs by name and
    the processed data directory."""
    from tools.make_synthetic_data import generate
    from tools.make_tiny_models import checkpoint_dir, make_tiny_models

    pool, _ = generate(600, 16, seed=args.seed)
    corpus = write_jsonl(work / "raw_pool" / "train.jsonl", pool)
    tiny_root = Path(args.tiny_models) if args.tiny_models else None
    if tiny_root is None or not all(checkpoint_dir(tiny_root, "gpt2", r).is_dir() for r in ("teacher", "student")):
        tiny_root = work / "models"
        make_tiny_models([corpus], ["gpt2"], vocab_size=args.vocab_size, out_dir=tiny_root, seed=args.seed)
    paths = {"tiny-student": checkpoint_dir(tiny_root, "gpt2", "student"),
             "tiny-teacher": checkpoint_dir(tiny_root, "gpt2", "teacher")}

    # Data: every response truncated at --seq-len. The pre-tokenizer splits at words, so no token spans more than
    # one word (about 5-6 characters with its space here): 8 characters per token needed is ample.
    n_train = max(64, (args.warmup_steps + args.steps) * args.batch_size * args.nproc)
    n_valid = max(args.gen_batch_size, args.batch_size) * args.nproc
    raw = work / "raw"
    write_jsonl(raw / "train.jsonl", packed_records(pool, n_train, 8 * args.seq_len))
    write_jsonl(raw / "valid.jsonl", packed_records(pool[::-1], n_valid, 8 * args.seq_len))
    from tools import process_data_dolly as pdd

    processed = work / "processed"
    shutil.rmtree(processed, ignore_errors=True)
    summary = pdd.process(pdd.parse_args([
        "--data-dir", str(raw), "--data-name", "gpucheck", "--processed-data-dir", str(processed),
        "--model-path", str(paths["tiny-teacher"]), "--max-length", str(args.seq_len),
        "--max-prompt-length", str(max_prompt_length(args.seq_len))]))
    data_dir = Path(summary["output_dir"])

    gpt2_sizes = [s for s in args.sizes if s in GPT2_SHAPES]
    if gpt2_sizes:
        from distill.models import load_tokenizer

        tok = load_tokenizer(str(paths["tiny-teacher"]))
        for size in gpt2_sizes:
            paths[f"gpt2-{size}"] = build_gpt2_shaped(size, tok, work / "models" / f"gpt2-{size}", args.seed)
    return {name: describe_model(name, p) for name, p in paths.items()}, data_dir


def train_lengths(data_dir: Path) -> list[int]:
    """Tokens each training example contributes (prompt + response, the EOS in the labels only)."""
    from data_utils.datasets import InstructionDataset

    ds = InstructionDataset(data_dir, "train")
    return [int(n) for n in ds.data.sizes[: len(ds)]]


# ----------------------------------------------------------------------------------------------------------------
# Cases
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Case:
    kind: str
    model: str
    dtype: str
    zero: Optional[int] = None
    teacher: Optional[str] = None

    @property
    def name(self) -> str:
        who = f"{self.teacher}->{self.model}" if self.teacher else self.model
        return "/".join([self.kind, who] + ([f"zero{self.zero}"] if self.zero is not None else []) + [self.dtype])

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", self.name.replace("->", "_from_"))


def plan_cases(sizes: Sequence[str], kinds: Sequence[str], zeros: Sequence[int], dtypes: Sequence[str]) -> list[Case]:
    cases: list[Case] = []
    trained = (["tiny-student"] if "tiny" in sizes else []) + [f"gpt2-{s}" for s in GPT2_SHAPES if s in sizes]
    pairs = ([("tiny-teacher", "tiny-student")] if "tiny" in sizes else []) + \
        ([("gpt2-774M", "gpt2-124M")] if "124M" in sizes and "774M" in sizes else [])
    for dtype in dtypes:
        for zero in zeros:
            if "sft" in kinds:
                cases += [Case("sft", m, dtype, zero) for m in trained]
            if "kd" in kinds:
                cases += [Case("kd", s, dtype, zero, teacher=t) for t, s in pairs]
        if "gen" in kinds:
            cases += [Case("gen", m, dtype) for m in trained]
    return cases


def ds_config(zero: int, dtype: str) -> Path:
    return DS_DIR / f"ds_config_zero{zero}_{dtype}.json"


def train_argv(case: Case, specs: dict[str, ModelSpec], data_dir: Path, save: Path,
               args: argparse.Namespace) -> list[str]:
    """The entry point's command line for one training case."""
    assert case.zero is not None
    argv = ["--model-path", specs[case.model].path, "--data-dir", str(data_dir), "--save", str(save),
            "--deepspeed-config", str(ds_config(case.zero, case.dtype)),
            "--total-iters", str(args.warmup_steps + args.steps), "--log-interval", "1",
            "--batch-size", str(args.batch_size), "--gradient-accumulation-steps", "1",
            "--max-length", str(args.seq_len), "--max-prompt-length", str(max_prompt_length(args.seq_len)),
            "--lr", "1e-4", "--lr-schedule", "constant", "--dev-num", str(args.batch_size * args.nproc),
            "--eval-batch-size", str(args.batch_size), "--no-eval-gen", "--report-to", "none",
            "--seed", str(args.seed)]
    if case.kind == "kd":
        assert case.teacher is not None
        argv += ["--teacher-model-path", specs[case.teacher].path, "--type", "fkl", "--kd-ratio", "0.5"]
        argv += {"bf16": ["--teacher-model-bf16"], "fp16": ["--teacher-model-fp16"]}.get(case.dtype, [])
    return argv


def child_env(cpu: bool) -> dict[str, str]:
    """The environment of a training process: no process-group variables of this process (a child must not reuse a
    port), the repo importable; one intra-op thread on CPU (the tiny kernels are too small to split)."""
    env = {k: v for k, v in os.environ.items() if k not in DIST_VARS}
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["TOKENIZERS_PARALLELISM"] = "false"
    env["PYTHONUNBUFFERED"] = "1"  # a crashed or timed-out case's log still ends where it stopped
    if cpu:
        env.setdefault("OMP_NUM_THREADS", "1")
    return env


def read_metrics(run: Path) -> list[dict[str, Any]]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def summarise_train_metrics(lines: Sequence[dict[str, Any]], warmup_steps: int) -> dict[str, Any]:
    """tokens/s over the steps after the warm-up (harmonic mean of the per-step rates = total tokens / total time
    for equal-sized steps) and the largest peak memory logged."""
    steps = [m for m in lines if "train/tokens_per_s" in m]
    measured = [m for m in steps if m["step"] > warmup_steps] or steps[-1:]
    rates = [float(m["train/tokens_per_s"]) for m in measured]
    if not rates or min(rates) <= 0:
        raise RuntimeError(f"no positive train/tokens_per_s in metrics.jsonl ({len(steps)} train lines)")
    return {"tokens_per_s": len(rates) / sum(1.0 / r for r in rates),
            "per_step_tokens_per_s": rates,
            "steps_measured": len(rates),
            "peak_mem_mb": max(float(m.get("train/peak_mem_mb", 0.0)) for m in steps)}


def log_tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-chars:]
    except OSError:
        return ""


def run_train_case(case: Case, specs: dict[str, ModelSpec], data_dir: Path, work: Path,
                   args: argparse.Namespace, cpu: bool) -> dict[str, Any]:
    save = work / "runs" / case.slug
    shutil.rmtree(save, ignore_errors=True)
    save.parent.mkdir(parents=True, exist_ok=True)
    log = work / "runs" / f"{case.slug}.log"
    if args.in_process:
        result = run_in_process(case, train_argv(case, specs, data_dir, save, args), args.save_checkpoints, log)
        result.update(summarise_train_metrics(read_metrics(save), args.warmup_steps))
        if not args.keep_work_dir:
            shutil.rmtree(save, ignore_errors=True)
        return result
    worker = [str(Path(__file__).resolve()), "_worker", case.kind, "save" if args.save_checkpoints else "nosave"]
    if args.nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(args.nproc),
               *worker]
    else:
        cmd = [sys.executable, *worker]
    cmd += ["--", *train_argv(case, specs, data_dir, save, args)]
    t0 = time.time()
    with open(log, "w", encoding="utf-8") as f:
        f.write("+ " + " ".join(cmd) + "\n")
        f.flush()
        # Its own session, so a timeout (or Ctrl-C) also ends torchrun's workers, which would hold the GPU.
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=child_env(cpu), stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)
        rc: Optional[int] = None
        try:
            rc = proc.wait(timeout=args.case_timeout)
        except subprocess.TimeoutExpired:
            pass
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    wall = time.time() - t0
    result: dict[str, Any] = {"wall_s": wall, "log": str(log)}
    if rc != 0:
        why = f"timed out after {args.case_timeout} s" if rc is None else f"exit status {rc}"
        raise CaseError(why, log_tail(log), result)
    result.update(summarise_train_metrics(read_metrics(save), args.warmup_steps))
    if not args.keep_work_dir:
        shutil.rmtree(save, ignore_errors=True)  # checkpoints (with --save-checkpoints) can be large
    return result


def run_in_process(case: Case, argv: list[str], save_checkpoints: bool, log: Path) -> dict[str, Any]:
    """One training case in this process (``--in-process``): the worker's call, with the process-group variables
    that ``distill.dist.init_distributed`` sets for its world of one removed again afterwards."""
    import contextlib
    import io

    import torch

    saved_env = {k: os.environ.get(k) for k in DIST_VARS}
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            worker([case.kind, "save" if save_checkpoints else "nosave", "--", *argv])
    except (Exception, SystemExit) as e:  # SystemExit: the entry point's one-line input errors
        log.write_text(buf.getvalue(), encoding="utf-8")
        raise CaseError(f"{type(e).__name__}: {e}", buf.getvalue()[-3000:], {"log": str(log)}) from e
    finally:
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    log.write_text(buf.getvalue(), encoding="utf-8")
    return {"wall_s": time.time() - t0, "log": str(log)}


class CaseError(RuntimeError):
    def __init__(self, message: str, tail: str = "", partial: Optional[dict[str, Any]] = None):
        super().__init__(message)
        self.tail = tail
        self.partial = partial or {}


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_gen_case(case: Case, spec: ModelSpec, data_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Times one greedy ``generate_batch`` on ``--gen-batch-size`` validation prompts (after a short warm-up)."""
    import torch

    from data_utils.datasets import InstructionDataset, PromptCollator
    from distill.config import GenerationConfig
    from distill.generation import generate_batch
    from distill.models import DTYPES, load_model, load_tokenizer

    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    t_start = time.time()
    tok = load_tokenizer(spec.path)
    model = load_model(spec.path, DTYPES[case.dtype]).to(device).eval()
    ds = InstructionDataset(data_dir, "valid")
    batch = PromptCollator(tok.pad_token_id, max_prompt_length(args.seq_len))(
        [ds[i % len(ds)] for i in range(args.gen_batch_size)])
    ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
    gen = GenerationConfig(max_new_tokens=args.max_new_tokens, eval_batch_size=args.gen_batch_size)
    warm = GenerationConfig(max_new_tokens=min(4, args.max_new_tokens), eval_batch_size=args.gen_batch_size)
    # Every row generates exactly max_new_tokens tokens: EOS is masked until then (generate() reads the model's
    # generation_config for what generate_batch does not pass).
    model.generation_config.min_new_tokens = warm.max_new_tokens
    generate_batch(model, tok, ids, mask, warm)
    model.generation_config.min_new_tokens = gen.max_new_tokens
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    new = generate_batch(model, tok, ids, mask, gen)
    _sync(device)
    dt = time.perf_counter() - t0
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    new_lens = [len(r) for r in new]
    prompt_lens = [int(x) for x in mask.sum(dim=1).tolist()]
    flops = generation_flops(spec.flop_params, spec.n_layer, spec.d_model, prompt_lens, new_lens)
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    tokens = sum(new_lens)
    return {"tokens_per_s": tokens / max(dt, 1e-9), "peak_mem_mb": peak, "generated_tokens": tokens,
            "prompt_tokens": sum(prompt_lens), "batch_size": len(new), "gen_seconds": dt,
            "flops_total": flops, "flops_per_s": flops / max(dt, 1e-9), "wall_s": time.time() - t_start}


# ----------------------------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------------------------
def device_info(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"cuda": torch.cuda.is_available()}
    if info["cuda"]:
        name = torch.cuda.get_device_name(0)
        try:
            bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # an older torch without the argument
            bf16 = torch.cuda.is_bf16_supported()
        peak, entry = lookup_peak_tflops(name)
        info.update(name=name, count=torch.cuda.device_count(), capability=".".join(map(str, torch.cuda.
                    get_device_capability(0))), bf16_native=bool(bf16), memory_gb=round(
                    torch.cuda.get_device_properties(0).total_memory / 2**30, 1), table_entry=entry)
    else:
        info.update(name=f"CPU ({torch.backends.cpu.get_cpu_capability()}, {os.cpu_count()} cores)", count=0,
                    bf16_native=False, table_entry=None)
        peak = None
    if args.peak_tflops is not None:
        info.update(peak_tflops=args.peak_tflops, peak_source="--peak-tflops")
    elif peak is not None:
        info.update(peak_tflops=peak, peak_source=f"table: {info['table_entry']}")
    else:
        info.update(peak_tflops=None, peak_source=None)
    return info


def mfu_note(dtype: str, info: dict[str, Any]) -> Optional[str]:
    if info["peak_source"] == "--peak-tflops":
        return None
    if not info["cuda"]:
        return "CPU: no peak table (give --peak-tflops)"
    if dtype == "fp32":
        return "fp32: the peak table holds bf16/fp16 tensor-core peaks only (give --peak-tflops)"
    if info["peak_tflops"] is None:
        return f"unknown device {info['name']!r}: not in the peak table (give --peak-tflops)"
    return None


def versions() -> dict[str, Optional[str]]:
    import torch

    out: dict[str, Optional[str]] = {"python": sys.version.split()[0], "torch": torch.__version__,
                                     "cuda": torch.version.cuda}
    for mod in ("transformers", "deepspeed"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - reported, not needed
            out[mod] = None
    try:
        out["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                                           text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        out["git_commit"] = None
    return out


def finish_case(case: Case, raw: dict[str, Any], specs: dict[str, ModelSpec], seq_len_eff: float,
                info: dict[str, Any], nproc: int) -> dict[str, Any]:
    """Adds FLOPs per token, achieved TFLOP/s and MFU to a measured case."""
    rec = {"name": case.name, "kind": case.kind, "model": case.model, "teacher": case.teacher, "zero": case.zero,
           "dtype": case.dtype, "status": "ok", **raw}
    if case.kind == "gen":
        flops_per_s = raw["flops_per_s"]
        rec["flops_per_token"] = raw["flops_total"] / max(raw["generated_tokens"], 1)
        gpus = 1
    else:
        s = specs[case.model]
        fpt = train_flops_per_token(s.flop_params, s.n_layer, s.d_model, seq_len_eff)
        if case.teacher:
            t = specs[case.teacher]
            fpt += teacher_flops_per_token(t.flop_params, t.n_layer, t.d_model, seq_len_eff)
        rec["flops_per_token"] = fpt
        rec["seq_len_eff"] = seq_len_eff
        flops_per_s = fpt * raw["tokens_per_s"]
        gpus = max(nproc, 1)
    rec["achieved_tflops"] = flops_per_s / 1e12
    rec["mfu"] = mfu(flops_per_s, info["peak_tflops"], gpus) if case.dtype != "fp32" or \
        info["peak_source"] == "--peak-tflops" else None
    rec["mfu_note"] = mfu_note(case.dtype, info) if rec["mfu"] is None else None
    return rec


def fmt_case(rec: dict[str, Any]) -> str:
    if rec["status"] != "ok":
        return f"{rec['name']}: FAILED ({rec.get('error')})"
    mfu_s = f"{100 * rec['mfu']:.1f}%" if rec["mfu"] is not None else "n/a"
    return (f"{rec['name']}: {rec['tokens_per_s']:,.0f} tokens/s, peak {rec['peak_mem_mb']:,.0f} MiB, "
            f"{rec['achieved_tflops']:.3g} TFLOP/s, MFU {mfu_s}")


def markdown(report: dict[str, Any]) -> str:
    d, s = report["device"], report["settings"]
    peak = f"{d['peak_tflops']:g} TFLOP/s ({d['peak_source']})" if d["peak_tflops"] else "unknown"
    where = f"{d['name']} x{s['nproc']}" if d["cuda"] else d["name"]
    lines = [
        f"GPU check ({'smoke, CPU' if s['smoke'] else 'CUDA'}), {report['created']}, commit "
        f"{(report['versions'].get('git_commit') or '?')[:10]}: {where}; peak {peak}; "
        f"torch {report['versions']['torch']}, deepspeed {report['versions']['deepspeed']}, "
        f"transformers {report['versions']['transformers']}.",
        "",
        f"Training: {s['warmup_steps']} warm-up + {s['steps']} measured steps, batch {s['batch_size']} x "
        f"{s['seq_len'] - 1} tokens per process; generation: {s['gen_batch_size']} prompts x "
        f"{s['max_new_tokens']} new tokens, greedy. Models: "
        + ", ".join(f"{m['name']} {m['params'] / 1e6:.1f}M" for m in report["models"].values()) + ".",
        "",
        "| case | tokens/s | peak mem (MiB) | FLOPs/token | TFLOP/s | MFU | note |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    mem = "torch.cuda.max_memory_allocated" if d["cuda"] else "the process's peak RSS"
    if s["in_process"]:
        mem += (" (reset before each case, but what earlier cases left allocated counts: --in-process)" if d["cuda"]
                else ", cumulative over the cases run before in the same process (--in-process)")
    footer = ["", f"tokens/s: trained tokens (sft, kd) or generated tokens (gen) per second; peak mem: {mem}; "
                  "FLOPs/token: 6N + 12LdT for the student (+ 2N + 4LdT for a KD teacher), for gen the batch's "
                  "prefill + decode FLOPs per generated token; MFU: FLOPs/token x tokens/s over the peak "
                  "(docs/gpu_check.md)."]
    for r in report["cases"]:
        if r["status"] != "ok":
            lines.append(f"| {r['name']} | failed | | | | | {r.get('error', '')} |")
            continue
        mfu_s = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        lines.append(f"| {r['name']} | {r['tokens_per_s']:,.0f} | {r['peak_mem_mb']:,.0f} | "
                     f"{r['flops_per_token']:.3g} | {r['achieved_tflops']:.3g} | {mfu_s} | {r.get('mfu_note') or ''} |")
    return "\n".join(lines + footer) + "\n"


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--smoke", action="store_true", help="CPU-safe: tiny models only, fp32, a few steps, MFU n/a")
    p.add_argument("--sizes", nargs="+", choices=SIZES, default=None, help="model sizes (default: all; --smoke: tiny)")
    p.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    p.add_argument("--zero", nargs="+", type=int, choices=(2, 3), default=[2, 3], help="ZeRO stages")
    p.add_argument("--dtype", nargs="+", choices=("auto", "bf16", "fp16", "fp32"), default=None,
                   help="default auto: bf16 where native, else fp16; --smoke: fp32")
    p.add_argument("--steps", type=int, help=f"measured steps (default {GPU_DEFAULTS['steps']}; "
                                             f"--smoke {SMOKE_DEFAULTS['steps']})")
    p.add_argument("--warmup-steps", type=int, help="steps before the measured ones (default 3; --smoke 1)")
    p.add_argument("--batch-size", type=int, help="micro-batch per process (default 16; --smoke 4)")
    p.add_argument("--seq-len", type=int, help="tokens per training example + 1 (default 512; --smoke 128)")
    p.add_argument("--gen-batch-size", type=int, help="prompts in the generation batch (default 32; --smoke 4)")
    p.add_argument("--max-new-tokens", type=int, help="tokens generated per prompt (default 128; --smoke 8)")
    p.add_argument("--peak-tflops", type=float, help="peak TFLOP/s of one GPU for MFU (default: from the table)")
    p.add_argument("--nproc", type=int, default=1, help="training processes (GPUs) per case; >1 runs torchrun")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "results" / "gpu_check",
                   help="output directory for gpu_check.json and gpu_check.md")
    p.add_argument("--work-dir", type=Path, help="models, data, run logs (default: a temporary directory)")
    p.add_argument("--keep-work-dir", action="store_true", help="keep --work-dir and every run directory")
    p.add_argument("--tiny-models", default=str(REPO_ROOT / "checkpoints"),
                   help="directory with tiny-gpt2-{teacher,student} to use; built in --work-dir when absent")
    p.add_argument("--vocab-size", type=int, default=None, help="tokenizer size when the tiny models are built "
                                                                "(default 2048; --smoke 1024)")
    p.add_argument("--save-checkpoints", action="store_true",
                   help="let the trainer write its end-of-run checkpoint (skipped by default; not measured)")
    p.add_argument("--case-timeout", type=int, default=1800, help="seconds one training case may take")
    p.add_argument("--in-process", action=argparse.BooleanOptionalAction, default=None,
                   help="run the training cases in this process instead of a fresh process each (default: only "
                        "with --smoke, where process start-up dominates; peak memory then includes earlier cases)")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    defaults = SMOKE_DEFAULTS if args.smoke else GPU_DEFAULTS
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.in_process is None:
        args.in_process = args.smoke
    if args.vocab_size is None:
        args.vocab_size = 1024 if args.smoke else 2048
    if args.smoke:
        if args.sizes not in (None, ["tiny"]):
            p.error("--smoke runs the tiny models only (drop --sizes)")
        if args.dtype not in (None, ["fp32"]):
            p.error("--smoke runs fp32 only (drop --dtype)")
        args.sizes, args.dtype = ["tiny"], ["fp32"]
    args.sizes = args.sizes or list(SIZES)
    args.dtype = args.dtype or ["auto"]
    for k in ("steps", "batch_size", "gen_batch_size", "max_new_tokens", "nproc"):
        if getattr(args, k) < 1:
            p.error(f"--{k.replace('_', '-')} must be >= 1")
    if args.in_process and args.nproc > 1:
        p.error("--in-process runs one process; drop --nproc or --in-process")
    if args.warmup_steps < 0:
        p.error("--warmup-steps must be >= 0")
    limit = TINY_POSITIONS if "tiny" in args.sizes else GPT2_POSITIONS
    if not 64 <= args.seq_len <= limit:
        p.error(f"--seq-len must be in [64, {limit}] (room for the prompts; the models' position table)")
    return args


def resolve_dtypes(requested: Sequence[str], info: dict[str, Any]) -> list[str]:
    out = []
    for d in requested:
        d = ("bf16" if info["bf16_native"] else "fp16") if d == "auto" else d
        if d not in out:
            out.append(d)
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.smoke:
        raise SystemExit("error: no CUDA device; on a CPU run the smoke mode: python tools/gpu_check.py --smoke")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a bar per loaded checkpoint would bury the results
    info = device_info(args)
    dtypes = resolve_dtypes(args.dtype, info)
    if not cuda and any(d != "fp32" for d in dtypes):
        raise SystemExit("error: bf16/fp16 cases need a GPU here (this CPU would run bf16 emulated); use --smoke")
    cases = plan_cases(args.sizes, args.kinds, args.zero, dtypes)
    if not cases:
        raise SystemExit("error: --sizes/--kinds select no case (kd needs tiny, or both 124M and 774M)")
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="gpu_check_"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"gpu_check: {len(cases)} cases on {info['name']}; work dir {work}", flush=True)
    t_start = time.time()
    report: dict[str, Any] = {}
    try:
        specs, data_dir = prepare(args, work)
        lengths = train_lengths(data_dir)
        seq_len_eff = effective_seq_len(lengths)
        print(f"gpu_check: models and data ready in {time.time() - t_start:.0f} s ({len(lengths)} training "
              f"examples, T = {seq_len_eff:.1f})", flush=True)
        records = []
        for case in cases:
            try:
                if case.kind == "gen":
                    raw = run_gen_case(case, specs[case.model], data_dir, args)
                else:
                    raw = run_train_case(case, specs, data_dir, work, args, cpu=not cuda)
                rec = finish_case(case, raw, specs, seq_len_eff, info, args.nproc)
            except Exception as e:  # noqa: BLE001 - one failed case is recorded; the others still run
                rec = {"name": case.name, "kind": case.kind, "model": case.model, "teacher": case.teacher,
                       "zero": case.zero, "dtype": case.dtype, "status": "failed",
                       "error": f"{type(e).__name__}: {e}".splitlines()[0][:300]}
                if isinstance(e, CaseError):
                    rec.update(e.partial)
                    rec["log_tail"] = e.tail
                    print(e.tail, file=sys.stderr, flush=True)
            records.append(rec)
            print("gpu_check: " + fmt_case(rec), flush=True)
        report = {
            "tool": "tools/gpu_check.py",
            "created": datetime.datetime.now().isoformat(timespec="seconds"),
            "wall_s": time.time() - t_start,
            "device": info,
            "versions": versions(),
            "settings": {"smoke": args.smoke, "sizes": args.sizes, "kinds": args.kinds, "zero": args.zero,
                         "dtypes": dtypes, "steps": args.steps, "warmup_steps": args.warmup_steps,
                         "batch_size": args.batch_size, "seq_len": args.seq_len, "seq_len_eff": seq_len_eff,
                         "max_prompt_length": max_prompt_length(args.seq_len), "gen_batch_size": args.gen_batch_size,
                         "max_new_tokens": args.max_new_tokens, "nproc": args.nproc,
                         "save_checkpoints": args.save_checkpoints, "in_process": args.in_process,
                         "train_examples": len(lengths)},
            "formula": {"train_per_token": "6*N_s + 12*L_s*d_s*T", "teacher_per_token": "2*N_t + 4*L_t*d_t*T",
                        "generation_per_row": "(p+g)*2*N + 4*L*d*(p*p + g*p + g*(g+1)/2)",
                        "mfu": "flops_per_token * tokens_per_s / (peak_tflops * 1e12 * n_gpus)",
                        "N": "parameters minus embedding lookup tables, plus the LM head once"},
            "models": {name: asdict(s) for name, s in specs.items()},
            "cases": records,
        }
        report["settings"]["work_dir"] = str(work) if args.keep_work_dir or args.work_dir else None
        if report["settings"]["work_dir"] is None:
            _drop_temp_paths(report)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        (out / "gpu_check.md").write_text(markdown(report), encoding="utf-8")
        print("\n" + markdown(report), flush=True)
        print(f"gpu_check: wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'} "
              f"({time.time() - t_start:.0f} s)", flush=True)
    finally:
        if not args.keep_work_dir and not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    return report


def _drop_temp_paths(report: dict[str, Any]) -> None:
    """Paths into a work directory that is about to be deleted would only mislead."""
    for case in report.get("cases", []):
        case.pop("log", None)
    for model in report.get("models", {}).values():
        model["path"] = Path(model["path"]).name


# ----------------------------------------------------------------------------------------------------------------
# Worker: one training case in its own process
# ----------------------------------------------------------------------------------------------------------------
def _skip_save(self: Any, step: int) -> None:
    self.logger.info(f"gpu_check: checkpoint at step {step} skipped (not measured; --save-checkpoints keeps it)")


def worker(argv: Sequence[str]) -> Any:
    """``_worker {sft,kd} {save,nosave} -- ENTRY_ARGS...``: runs the entry point's ``main`` in this process."""
    kind, save, sep, *rest = argv
    if sep != "--" or kind not in ("sft", "kd") or save not in ("save", "nosave"):
        raise SystemExit("usage: gpu_check.py _worker {sft,kd} {save,nosave} -- ARGS...")
    import importlib

    entry = importlib.import_module("train_sft" if kind == "sft" else "train_distill")
    if save == "save":
        return entry.main(list(rest))
    from distill import trainer

    original = trainer.Trainer.save
    trainer.Trainer.save = _skip_save  # type: ignore[method-assign]
    try:
        return entry.main(list(rest))
    finally:  # restored, for --in-process
        trainer.Trainer.save = original  # type: ignore[method-assign]


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_worker"]:
        worker(argv[1:])
        return 0
    report = run(parse_args(argv))
    return 0 if all(c["status"] == "ok" for c in report.get("cases", [])) else 1


if __name__ == "__main__":
    sys.exit(main())
