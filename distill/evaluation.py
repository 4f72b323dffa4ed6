"""Generation evaluation of a checkpoint on processed evaluation sets over several seeds.

Writes ``<save>/<set>/<seed>/answers.jsonl`` (one record per example: prompt, response, references, scores) and
``results.json`` (corpus Rouge-L, exact match, the decoding settings), then ``<save>/summary.json`` with mean ± std
over seeds per set and the same settings.
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Sequence


from data_utils.splits import split_prefix
from distill.config import (ConfigError, GenerationConfig, InputError, _check, _given, _opt, _shown, exit_on_input_error,
                            no_effect_warnings, parse_configs)
from data_utils.processing import print_warning
from distill.inputs import check_adapter_dir, check_model_dir, model_type
from distill.progress import Progress, print_stamped

EVAL_SETS = ("dolly", "self_inst", "vicuna", "sinst", "uinst")


@dataclass
class EvalConfig:
    model_path: Optional[str] = _opt(None, "Model directory, or a LoRA adapter directory (its base is loaded).")
    peft_path: Optional[str] = _opt(None, "LoRA adapter to apply on --model-path.")
    model_type: Optional[str] = _opt(None, "Family name in processed-data paths (default: the model's).")
    data_root: str = _opt("processed_data", "Root of processed sets: <data-root>/<set>/full/<model-type>/valid_0.*")
    eval_sets: list[str] = _opt(list(EVAL_SETS), "Evaluation sets to run; absent ones are skipped "
                                                 "(at least one must be present).")
    data_dir: Optional[str] = _opt(None, "Evaluate one processed directory instead of --eval-sets.")
    eval_name: Optional[str] = _opt(None, "Name of --data-dir's set in the results (default: 'valid').")
    split: str = _opt("valid", "Split of each processed directory to evaluate.")
    save: Optional[str] = _opt(None, "Results directory of this model: <save>/<set>/<seed>/.")
    seeds: list[int] = _opt([10], "Seeds; with --do-sample each gives a different sample.")
    dtype: Literal["fp32", "bf16", "fp16"] = _opt("fp32", "Inference precision.")
    max_prompt_length: int = _opt(256, "Prompt tokens kept (from the right).")
    dev_num: int = _opt(-1, "Evaluate at most this many examples per set (-1: all).")
    trust_remote_code: bool = _opt(False, "Allow a checkpoint whose config or tokenizer needs custom code shipped "
                                          "with it (auto_map): that code runs in this process. Off: refused.")

    def __post_init__(self) -> None:
        _check(self.model_path is not None, "model_path", "is required")
        _check(self.save is not None, "save", "is required (the results directory)")
        _check(len(self.seeds) > 0, "seeds", "give at least one seed")


def resolve_sets(cfg: EvalConfig, family: str) -> list[tuple[str, Path]]:
    if cfg.data_dir is not None:
        return [(cfg.eval_name or cfg.split, Path(cfg.data_dir))]
    found = [(name, Path(cfg.data_root) / name / "full" / family) for name in cfg.eval_sets]
    present = [(n, p) for n, p in found if split_prefix(p, cfg.split).with_suffix(".idx").exists()]
    if not present:
        looked = ", ".join(str(split_prefix(p, cfg.split)) + ".idx" for _, p in found)
        raise FileNotFoundError(f"no evaluation set found (looked for {looked}); process one with "
                                f"bash scripts/{family}/tools/process_data_dolly.sh (see README)")
    return present


def eval_warnings(cfg: EvalConfig) -> list[str]:
    """The evaluation flags that do nothing with the others given (one ``warning: ...`` line each)."""
    out = []
    if cfg.data_dir is None and _given(cfg, "eval_name"):
        out.append(f"warning: --eval-name {cfg.eval_name} has no effect: it names --data-dir's set, and none is "
                   f"given")
    if cfg.data_dir is not None:
        out += [f"warning: {_shown(cfg, name)} has no effect: --data-dir {cfg.data_dir} is evaluated instead"
                for name in ("eval_sets", "data_root") if _given(cfg, name)]
    return out


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def evaluate_model(cfg: EvalConfig, gen: GenerationConfig) -> dict[str, Any]:
    # A missing, incomplete or interrupted checkpoint stops here, before anything loads (distill/inputs.py).
    check_model_dir(cfg.model_path, trust_remote_code=cfg.trust_remote_code)
    if cfg.peft_path is not None:
        check_adapter_dir(cfg.peft_path, "--peft-path")
    family = cfg.model_type or model_type(cfg.model_path)  # type: ignore[arg-type]
    sets = resolve_sets(cfg, family)
    # The rest that needs no model, before it loads (distill/preflight.py): each set's files and the references
    # Rouge-L needs, the results directory (rank 0 writes it), and the flags that do nothing here.
    from distill import preflight

    for _, data_dir in sets:
        flag = "--data-dir" if cfg.data_dir is not None else "--eval-sets"
        preflight.check_split(data_dir, cfg.split, flag, num=cfg.dev_num)
        if not (Path(data_dir) / f"{cfg.split}.jsonl").is_file():
            raise InputError(f"{flag}: {Path(data_dir) / (cfg.split + '.jsonl')} not found (the references Rouge-L "
                             f"needs); re-run the processing tool (tools/process_data_dolly.py) into {data_dir}")
    if preflight.is_main_process():
        preflight.check_writable_dir(cfg.save, "--save", keep=False)  # results are written at the end
        for line in eval_warnings(cfg) + no_effect_warnings(gen):
            print(line, file=sys.stderr, flush=True)
    # Heavy imports only now: --help and a bad flag or path answered without them.
    from data_utils.datasets import InstructionDataset
    from data_utils.processing import check_data_tokenizer
    from distill import dist
    from distill.generation import decoding_settings, generate_split
    from distill.metrics import per_example_scores
    from distill.models import DTYPES, load_model, load_tokenizer

    env = dist.init_distributed(use_deepspeed=False)
    if env.device.type == "cpu" and cfg.dtype == "fp16":
        raise ConfigError("--dtype fp16 needs a GPU; use bf16 or fp32 on CPU")
    tokenizer = load_tokenizer(cfg.model_path, cfg.trust_remote_code)  # type: ignore[arg-type]
    # Every set was processed with this model's tokenizer (meta.json's fingerprint), checked before the model loads.
    for _, data_dir in sets:
        check_data_tokenizer(data_dir, tokenizer, cfg.model_path,  # type: ignore[arg-type]
                             warn=print_warning if env.is_main else None)
    model = load_model(cfg.model_path, DTYPES[cfg.dtype], peft_path=cfg.peft_path,  # type: ignore[arg-type]
                       merge_adapter=True, trust_remote_code=cfg.trust_remote_code).to(env.device)
    model.eval()
    save = Path(cfg.save)  # type: ignore[arg-type]
    # How the answers were made (every decoding option, the prompt cut, the precision), with the scores: two results
    # directories that differ in --no-repeat-ngram-size or --repetition-penalty say so.
    settings = {**decoding_settings(gen), "max_prompt_length": cfg.max_prompt_length, "dtype": cfg.dtype}
    summary: dict[str, Any] = {"model_path": cfg.model_path, "generation": settings, "sets": {}}
    for name, data_dir in sets:
        dataset = InstructionDataset(data_dir, cfg.split, num=cfg.dev_num, vocab_size=len(tokenizer))
        per_seed = []
        for seed in cfg.seeds:
            t0 = time.time()
            share = len(dist.shard_indices(len(dataset), env.rank, env.world_size, pad=True))
            label = f"generate {name} seed {seed}: prompts" + (" (rank 0's share)" if env.world_size > 1 else "")
            with Progress(label, share, print_stamped if env.is_main else (lambda line: None),
                          gen.progress_interval) as progress:
                recs = generate_split(model, tokenizer, dataset, gen, rank=env.rank, world_size=env.world_size,
                                      device=env.device, max_prompt_length=cfg.max_prompt_length, seed=seed,
                                      progress=lambda done, total: progress.update(done))
            refs = [dataset.references(r["index"]) for r in recs]
            scores = per_example_scores([r["response"] for r in recs], refs)
            n = max(len(scores), 1)
            result = {"rougeL": sum(s["rougeL"] for s in scores) / n,
                      "exact_match": sum(s["exact_match"] for s in scores) / n,
                      "num_examples": len(scores), "seed": seed, "seconds": time.time() - t0,
                      "mean_gen_tokens": sum(r["num_tokens"] for r in recs) / n, "generation": settings}
            per_seed.append(result)
            if env.is_main:
                out = save / name / str(seed)
                out.mkdir(parents=True, exist_ok=True)
                raw = dataset.raw or [{} for _ in recs]
                tmp = out / "answers.jsonl.tmp"
                with open(tmp, "w", encoding="utf-8") as f:
                    for r, ref, s in zip(recs, refs, scores):
                        src = raw[r["index"]]
                        f.write(json.dumps({"index": r["index"], "instruction": src.get("instruction"),
                                            "input": src.get("input"), "category": src.get("category"),
                                            "response": r["response"], "references": ref, **s},
                                           ensure_ascii=False) + "\n")
                os.replace(tmp, out / "answers.jsonl")
                (out / "results.json").write_text(json.dumps(result, indent=2))
        rl = mean_std([r["rougeL"] for r in per_seed])
        em = mean_std([r["exact_match"] for r in per_seed])
        summary["sets"][name] = {"rougeL_mean": rl[0], "rougeL_std": rl[1], "exact_match_mean": em[0],
                                 "exact_match_std": em[1], "seeds": list(cfg.seeds),
                                 "num_examples": per_seed[0]["num_examples"]}
    if env.is_main:
        save.mkdir(parents=True, exist_ok=True)
        (save / "summary.json").write_text(json.dumps(summary, indent=2))
        print_table(summary)
    dist.finish()
    return summary


def print_table(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Rouge-L / exact match — {summary['model_path']}")
    for col in ("set", "examples", "seeds", "Rouge-L", "exact match"):
        table.add_column(col)
    for name, s in summary["sets"].items():
        table.add_row(name, str(s["num_examples"]), str(len(s["seeds"])),
                      f"{s['rougeL_mean']:.2f} ± {s['rougeL_std']:.2f}",
                      f"{s['exact_match_mean']:.2f} ± {s['exact_match_std']:.2f}")
    Console(width=120).print(table)


@exit_on_input_error
def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    cfg, gen = parse_configs([EvalConfig, GenerationConfig], argv, "Generate and score Rouge-L on evaluation sets.")
    return evaluate_model(cfg, gen)
