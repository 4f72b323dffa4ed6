"""Validation divergence of a student to a teacher, per divergence kind, on response tokens; and calibration.

How close a student ends to its teacher in the direction a KD kind optimises: e.g. after `--type rkl`, compare the
student's `rkl` here with the SFT student's. Token-weighted mean over the validation split's response positions.

    python tools/eval_divergence.py --student results/kd/best --teacher results/sft-teacher/best \
        --data-dir processed_data/synth/full/gpt2 --kinds fkl rkl jsd tvd

`--calibration` adds how good the soft targets are as targets, for the student and (if given) the teacher: NLL of the
ground-truth tokens, top-1 accuracy, mean top-1 probability, expected calibration error (10 equal-width confidence
bins) and mean entropy. A teacher that is right but over-confident gives soft targets close to one-hot labels, so
KD from it adds little to the ground-truth loss.

    python tools/eval_divergence.py --student results/sft-teacher/best --data-dir ... --kinds --calibration

`--grad-scale` adds, for each kind, how hard it pulls on the student next to the ground-truth loss: the mean over
response positions of the norm of the kind's gradient with respect to the student's logits, divided by the same for
the cross-entropy on the label. At ``--kd-ratio 0.5`` a kind whose ratio is far below 1 leaves the student to the
cross-entropy (Adam rescales the sum, not the mix).

`--own-generations` adds the divergence on-policy methods (GKD, DistiLLM, ImitKD) target: the student answers every
prompt of the split itself (sampled at `--gen-temperature`, default 1, from `--gen-seed`; `--no-gen-do-sample`:
greedy), and on prompt + its own answer the tool takes the exact reverse KL(q_student || p_teacher) over the vocabulary
at each generated position (the EOS position included where the student ended its answer; an answer cut at
`--max-new-tokens` has no EOS position), token-weighted over all answers. Teacher-forced divergences (`--kinds`) score
the student on the reference answers, states it may never reach on its own; this one scores it where it goes.

    python tools/eval_divergence.py --student results/gkd/best --teacher results/sft-teacher/best \
        --data-dir processed_data/synth/full/gpt2 --kinds rkl --own-generations --max-new-tokens 64
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import distill  # noqa: E402,F401  (first: sets the CPU OpenMP wait policy before torch loads)
import torch  # noqa: E402

from data_utils.datasets import InstructionDataset, LMCollator, left_padded, response_batch  # noqa: E402
from distill.config import ConfigError, GenerationConfig, InputError, exit_on_input_error  # noqa: E402
from distill.generation import decoding_settings, generate_batch  # noqa: E402
from distill.losses import KINDS, distillation_loss  # noqa: E402
from distill import preflight  # noqa: E402
from distill.kinds import uses_temperature  # noqa: E402
from distill.models import check_model_dir, check_tokenizers_agree, load_model, load_tokenizer  # noqa: E402
from distill.objectives import forward_logits, response_mask  # noqa: E402


@torch.no_grad()
def divergences(student: torch.nn.Module, teacher: torch.nn.Module, dataset: InstructionDataset, collate: LMCollator,
                kinds: Sequence[str], vocab_size: int, batch_size: int = 32, temperature: float = 1.0,
                skew_alpha: float = 0.1, jsd_beta: float = 0.9) -> dict[str, float]:
    """{kind: mean divergence over all response positions of ``dataset``} (teacher and student in eval mode)."""
    student.eval()
    teacher.eval()
    sums = {k: 0.0 for k in kinds}
    count = 0.0
    for s in range(0, len(dataset), batch_size):
        batch = collate([dataset[i] for i in range(s, min(s + batch_size, len(dataset)))])
        logits = forward_logits(student, batch)[..., :vocab_size]
        teacher_logits = forward_logits(teacher, batch)[..., :vocab_size]
        mask = response_mask(batch)
        count += float(mask.sum())
        for k in kinds:
            sums[k] += float(distillation_loss(k, logits, teacher_logits, mask, temperature=temperature,
                                               skew_alpha=skew_alpha, jsd_beta=jsd_beta, reduction="sum"))
    return {k: v / max(count, 1.0) for k, v in sums.items()}


def gradient_scale(student: torch.nn.Module, teacher: torch.nn.Module, dataset: InstructionDataset,
                   collate: LMCollator, kinds: Sequence[str], vocab_size: int, batch_size: int = 32,
                   temperature: float = 1.0) -> dict[str, float]:
    """{"ce": mean per-position norm of d CE / d logits, kind: the same for the kind, divided by the CE's}.

    The gradient of a sum over positions, taken at the logits, is the per-position gradient at each position, so one
    backward per kind gives every position's norm."""
    student.eval()
    teacher.eval()
    norms = {k: 0.0 for k in ["ce", *kinds]}
    count = 0
    for s in range(0, len(dataset), batch_size):
        batch = collate([dataset[i] for i in range(s, min(s + batch_size, len(dataset)))])
        with torch.no_grad():
            logits = forward_logits(student, batch)[..., :vocab_size].float()
            teacher_logits = forward_logits(teacher, batch)[..., :vocab_size]
        mask = response_mask(batch)
        count += int(mask.sum())
        for k in norms:
            z = logits.detach().requires_grad_(True)
            if k == "ce":
                loss = torch.nn.functional.cross_entropy(z[mask], batch["labels"][mask], reduction="sum")
            else:
                loss = distillation_loss(k, z, teacher_logits, mask, temperature=temperature, reduction="sum")
            (grad,) = torch.autograd.grad(loss, z)
            norms[k] += float(grad[mask].norm(dim=-1).sum())
    ce = norms.pop("ce") / max(count, 1)
    return {"ce": ce, **{k: v / max(count, 1) / ce for k, v in norms.items()}}


@torch.no_grad()
def own_generation_rkl(student: torch.nn.Module, teacher: torch.nn.Module, tokenizer, prompts: Sequence[Sequence[int]],
                       gen: GenerationConfig, vocab_size: int, seed: int = 10,
                       max_prompt_length: int = 256) -> tuple[dict[str, float], list[dict]]:
    """The student's reverse KL to the teacher on its own answers to ``prompts``.

    Per batch of ``gen.eval_batch_size`` prompts (each cut to its last ``max_prompt_length`` tokens, as generation
    in evaluation cuts them): the student answers (generate_batch, from ``seed`` in a forked RNG, so the caller's
    streams are untouched), each answer keeping the EOS it ended with — none where it ran into the length limit —
    and prompt + answer becomes a right-padded training batch (response_batch), whose loss positions are exactly the
    generated ones. Returns the token mean of KL(q_s || p_t) over those positions with
    counts, and per prompt its answer (``ids`` without EOS, ``eos``: whether it ended) and its own KL sum and count."""
    student.eval()
    teacher.eval()
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    total, count, ended = 0.0, 0, 0
    records: list[dict] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for s in range(0, len(prompts), gen.eval_batch_size):
            chunk = [list(p)[-max_prompt_length:] for p in prompts[s:s + gen.eval_batch_size]]
            padded = left_padded(chunk, pad)
            # keep_eos: an answer that ended keeps its EOS (the on-policy objective's layout); one that ran into the
            # length limit (--max-new-tokens, or the position table) has none, so no position predicts an EOS.
            answers = generate_batch(student, tokenizer, padded["input_ids"], padded["attention_mask"], gen,
                                     keep_eos=True)
            done = [eos is not None and len(a) > 0 and a[-1] == eos for a in answers]
            batch = response_batch(list(zip(chunk, answers)), pad)
            answers = [a[:-1] if d else a for a, d in zip(answers, done)]
            logits = forward_logits(student, batch)[..., :vocab_size]
            teacher_logits = forward_logits(teacher, batch)[..., :vocab_size]
            mask = response_mask(batch)
            # Per row, so each answer's own value is kept (a row of all-False mask adds 0).
            for b, (a, d) in enumerate(zip(answers, done)):
                n = int(mask[b].sum())
                kl = float(distillation_loss("rkl", logits[b:b + 1], teacher_logits[b:b + 1], mask[b:b + 1],
                                             reduction="sum")) if n else 0.0
                total += kl
                count += n
                ended += d
                records.append({"ids": a, "eos": d, "rkl_sum": kl, "positions": n})
    n_prompts = max(len(records), 1)
    return ({"rkl": total / max(count, 1), "positions": count, "prompts": len(records),
             "mean_answer_tokens": sum(len(r["ids"]) for r in records) / n_prompts,
             "ended_with_eos": ended / n_prompts}, records)


@torch.no_grad()
def calibration(model: torch.nn.Module, dataset: InstructionDataset, collate: LMCollator, vocab_size: int,
                batch_size: int = 32, bins: int = 10) -> dict[str, float]:
    """Token-level quality of ``model``'s next-token distributions on the response positions of ``dataset``."""
    model.eval()
    nll = correct = conf = ent = 0.0
    bin_conf, bin_acc, bin_n = torch.zeros(bins, dtype=torch.float64), torch.zeros(bins, dtype=torch.float64), \
        torch.zeros(bins, dtype=torch.float64)
    count = 0
    for s in range(0, len(dataset), batch_size):
        batch = collate([dataset[i] for i in range(s, min(s + batch_size, len(dataset)))])
        mask = response_mask(batch)
        logp = torch.log_softmax(forward_logits(model, batch)[..., :vocab_size][mask].float(), -1)
        labels = batch["labels"][mask]
        probs = logp.exp()
        p_max, top = probs.max(-1)
        hit = (top == labels).double()
        nll -= float(logp.gather(-1, labels[:, None]).sum())
        correct += float(hit.sum())
        conf += float(p_max.sum())
        ent += float(torch.special.entr(probs).sum())  # -p log p, 0 where p = 0
        b = (p_max.double() * bins).long().clamp(max=bins - 1)
        bin_n += torch.bincount(b, minlength=bins).double()
        bin_conf += torch.bincount(b, weights=p_max.double(), minlength=bins)
        bin_acc += torch.bincount(b, weights=hit, minlength=bins)
        count += int(mask.sum())
    n = max(count, 1)
    return {"nll": nll / n, "accuracy": correct / n, "confidence": conf / n,
            "ece": float((bin_conf - bin_acc).abs().sum()) / n, "entropy": ent / n, "tokens": count}


@exit_on_input_error
def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", required=True)
    parser.add_argument("--teacher", help="required for --kinds")
    parser.add_argument("--data-dir", required=True, help="processed data directory (its valid split is used)")
    parser.add_argument("--split", default="valid")
    parser.add_argument("--kinds", nargs="*", default=["fkl", "rkl", "jsd", "tvd", "sfkl", "srkl"],
                        help="divergences to the teacher (none: give --kinds alone)")
    parser.add_argument("--calibration", action="store_true", help="add token-level calibration of both models")
    parser.add_argument("--grad-scale", action="store_true",
                        help="add each kind's gradient norm at the logits relative to the cross-entropy's")
    parser.add_argument("--temperature", type=float, default=1.0, help="tau of the t* kinds")
    parser.add_argument("--own-generations", action="store_true",
                        help="add the student's reverse KL to the teacher on its own answers to the split's prompts")
    own = parser.add_argument_group("--own-generations decoding (the in-step --gen-* flags of train_distill.py)")
    own.add_argument("--gen-do-sample", action=argparse.BooleanOptionalAction, default=True,
                     help="sample the student's answers (default); --no-gen-do-sample: greedy")
    own.add_argument("--gen-temperature", type=float, default=1.0)
    own.add_argument("--gen-top-k", type=int, default=0, help="0: off")
    own.add_argument("--gen-top-p", type=float, default=1.0)
    own.add_argument("--gen-seed", type=int, default=10, help="seed of the sampled answers")
    own.add_argument("--max-new-tokens", type=int, default=256, help="most tokens per answer")
    own.add_argument("--max-prompt-length", type=int, default=256, help="prompts are cut to their last N tokens")
    own.add_argument("--gen-batch-size", type=int, default=32, help="prompts per generation batch")
    own.add_argument("--own-answers", help="also write each answer (token ids, EOS, its KL sum and positions) to this "
                                           "JSONL file")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--dev-num", type=int, default=-1)
    parser.add_argument("--out", help="write the result as JSON here")
    args = parser.parse_args(argv)
    bad = [k for k in args.kinds if k not in KINDS]
    if bad:
        raise InputError(f"--kinds: unknown {bad}; valid kinds: {', '.join(KINDS)}")
    if args.grad_scale and not args.kinds:
        raise InputError("--grad-scale needs --kinds (the kinds whose gradients to compare with the cross-entropy)")
    if (args.kinds or args.own_generations) and not args.teacher:
        raise InputError("--teacher is required to measure divergences (or pass --kinds alone with --calibration)")
    if not args.kinds and not args.calibration and not args.own_generations:
        raise InputError("nothing to measure: give --kinds, --calibration or --own-generations")
    # The decoding settings are checked by the config that holds them, before any model loads; its message names
    # the config's flag (--temperature), so it is re-worded with this tool's (--gen-temperature).
    flags = {"max_new_tokens": "--max-new-tokens", "top_k": "--gen-top-k", "top_p": "--gen-top-p",
             "temperature": "--gen-temperature", "eval_batch_size": "--gen-batch-size"}
    try:
        gen = GenerationConfig(max_new_tokens=args.max_new_tokens, do_sample=args.gen_do_sample,
                               top_k=args.gen_top_k, top_p=args.gen_top_p, temperature=args.gen_temperature,
                               eval_batch_size=args.gen_batch_size)
    except ConfigError as e:
        field, _, rest = str(e).partition(":")
        raise InputError(f"{flags.get(field[2:].replace('-', '_'), field)}:{rest}") from None
    if args.max_prompt_length < 1:
        raise InputError(f"--max-prompt-length {args.max_prompt_length}: must be at least 1")
    if args.own_answers and not args.own_generations:
        raise InputError("--own-answers writes the answers of --own-generations; add --own-generations")
    # Everything that needs no model, before they load: the model directories, the data, the --out file's directory.
    check_model_dir(args.student, "--student")
    if args.teacher:
        check_model_dir(args.teacher, "--teacher")
    preflight.check_split(args.data_dir, args.split, num=args.dev_num, records=False)
    for flag, path in (("--out", args.out), ("--own-answers", args.own_answers)):
        if path:
            if Path(path).is_dir():
                raise InputError(f"{flag} {path} is a directory; pass a file name")
            preflight.check_writable_dir(str(Path(path).parent), f"{flag} {path}: its directory", keep=False)
    if args.temperature != 1.0 and args.kinds and not any(uses_temperature(k) for k in args.kinds):
        print(f"warning: --temperature {args.temperature:g} has no effect: none of --kinds {' '.join(args.kinds)} "
              f"has a temperature (the t* kinds do)", file=sys.stderr, flush=True)
    tok = load_tokenizer(args.student)
    if args.teacher:
        check_tokenizers_agree(tok, load_tokenizer(args.teacher), args.student, args.teacher)
    dataset = InstructionDataset(args.data_dir, args.split, num=args.dev_num)
    collate = LMCollator(tok.pad_token_id, tok.eos_token_id, args.max_length)
    student = load_model(args.student, merge_adapter=True)
    teacher = load_model(args.teacher, merge_adapter=True) if args.teacher else None
    result: dict = {}
    if args.kinds:
        result = divergences(student, teacher, dataset, collate, args.kinds, len(tok), temperature=args.temperature)
    if args.grad_scale:
        result["grad_scale"] = gradient_scale(student, teacher, dataset, collate, args.kinds, len(tok),
                                              temperature=args.temperature)
    if args.own_generations:
        prompts = [dataset[i]["prompt"].tolist() for i in range(len(dataset))]
        own, answers = own_generation_rkl(student, teacher, tok, prompts, gen, len(tok), seed=args.gen_seed,
                                          max_prompt_length=args.max_prompt_length)
        result["own_generations"] = {**own, "decoding": decoding_settings(gen), "seed": args.gen_seed}
        if args.own_answers:
            Path(args.own_answers).write_text("".join(json.dumps({"index": i, **a}) + "\n"
                                                      for i, a in enumerate(answers)))
    if args.calibration:
        result["calibration"] = {"student": calibration(student, dataset, collate, len(tok))}
        if teacher is not None:
            result["calibration"]["teacher"] = calibration(teacher, dataset, collate, len(tok))
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
