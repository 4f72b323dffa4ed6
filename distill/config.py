"""Typed run configuration.

Every option of the entry points is a field of one of the dataclasses below: its name, type, default and help text
live in one place, the command line is generated from them (``model_path`` -> ``--model-path``), and each class
checks its values in ``__post_init__`` so a bad value stops the run in one line before any model is loaded.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Sequence, TypeVar

from distill.guard import TrainingDiverged  # torch-free: the decorator below turns it into exit status 3


class InputError(ValueError):
    """Bad user input (a flag, a path, a file's contents); the message names it and the fix."""


class ConfigError(InputError):
    """A bad option value; the message names the flag and what would fix it."""


def exit_on_input_error(fn: typing.Callable[..., Any]) -> typing.Callable[..., Any]:
    """Entry-point decorator: a bad input ends the run with one line on stderr and exit status 2, a diverged run
    (distill/guard.py) with one line and exit status 3; no traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (InputError, FileNotFoundError, TrainingDiverged) as e:
            # One write: the ranks of a launch share the terminal, and print()'s separate newline lets their lines
            # interleave.
            sys.stderr.write(f"error: {e}\n")
            sys.stderr.flush()
            raise SystemExit(3 if isinstance(e, TrainingDiverged) else 2) from None

    return wrapper


def _opt(default: Any, help: str, *, aliases: Sequence[str] = (), **extra: Any) -> Any:
    meta = {"help": help, "aliases": tuple(aliases), **extra}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _check(cond: bool, name: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{_flag(name)}: {msg}")


@dataclass
class ModelConfig:
    model_path: Optional[str] = _opt(None, "Hugging Face model directory (config + weights + tokenizer) to train.")
    model_type: Optional[str] = _opt(None, "Family name used in processed-data paths; default: the config's model_type.")
    gradient_checkpointing: bool = _opt(False, "Recompute activations in backward to save memory.")
    peft: Optional[Literal["lora"]] = _opt(None, "Parameter-efficient fine-tuning method (only 'lora').")
    peft_lora_r: int = _opt(8, "LoRA rank.")
    peft_lora_alpha: int = _opt(32, "LoRA alpha (scaling = alpha / r).")
    peft_lora_dropout: float = _opt(0.1, "LoRA dropout.")
    peft_path: Optional[str] = _opt(None, "Existing LoRA adapter to start from (with --peft lora).")
    trust_remote_code: bool = _opt(False, "Allow a checkpoint whose config or tokenizer needs custom code shipped "
                                          "with it (auto_map): that code runs in this process. Off: such a "
                                          "checkpoint is refused in one line.")

    def __post_init__(self) -> None:
        _check(self.peft_lora_r > 0, "peft_lora_r", f"must be positive, got {self.peft_lora_r}")
        _check(0.0 <= self.peft_lora_dropout < 1.0, "peft_lora_dropout", "must be in [0, 1)")
        _check(self.peft_path is None or self.peft == "lora", "peft_path", "needs --peft lora")


@dataclass
class DataConfig:
    data_dir: Optional[str] = _opt(None, "Processed data directory holding train_0.bin/.idx and valid_0.bin/.idx "
                                         "(tools/process_data_dolly.py makes it).", aliases=["--prompt-data-dir"])
    max_length: int = _opt(512, "Maximum tokens of prompt + response (+ EOS) in training.")
    max_prompt_length: int = _opt(256, "Maximum prompt tokens at generation time.")
    num_workers: int = _opt(0, "DataLoader worker processes.")
    dev_num: int = _opt(-1, "Use at most this many validation examples in evaluation (-1: all).")
    lm_data_dir: Optional[str] = _opt(None, "Packed pretraining corpus (tools/process_data_pretrain.py) for an extra "
                                            "language-modelling loss.")
    lm_coef: Optional[float] = _opt(None, "Weight of the language-modelling loss on --lm-data-dir; default 1 with "
                                          "--lm-data-dir (as in the MiniLLM and DistiLLM code), else 0.")
    seed_lm: Optional[int] = _opt(None, "Seed of the pretraining corpus's order (default: --seed + 1; MiniLLM's "
                                        "launchers use 7).")

    def __post_init__(self) -> None:
        _check(self.max_length > 1, "max_length", f"must be > 1, got {self.max_length}")
        _check(self.max_prompt_length > 0, "max_prompt_length", "must be positive")
        if self.lm_coef is None:  # given a corpus, train on it: --lm-data-dir alone used to do nothing
            self.lm_coef = 1.0 if self.lm_data_dir is not None else 0.0
        _check(self.lm_coef >= 0, "lm_coef", "must be >= 0")
        _check(self.lm_coef == 0 or self.lm_data_dir is not None, "lm_coef", "needs --lm-data-dir")


@dataclass
class GenerationConfig:
    max_new_tokens: int = _opt(256, "Maximum generated tokens per response.")
    do_sample: bool = _opt(False, "Sample instead of greedy decoding.")
    top_k: int = _opt(0, "Top-k sampling (0: off).")
    top_p: float = _opt(1.0, "Nucleus sampling threshold.")
    temperature: float = _opt(1.0, "Sampling temperature.")
    num_beams: int = _opt(1, "Beam search width (1: none; with --do-sample, beam sampling).")
    no_repeat_ngram_size: int = _opt(0, "Never generate an n-gram of this size twice in one response (0: off; the "
                                        "SRD release reflects with 6).")
    repetition_penalty: float = _opt(1.0, "Divide the logits of tokens already in the sequence (prompt included) by "
                                          "this when positive, multiply when negative (1: off; CTRL's penalty, as "
                                          "transformers implements it).")
    eval_batch_size: int = _opt(32, "Prompts per generation batch (per rank).")
    progress_interval: float = _opt(30.0, "Seconds between progress lines of long work — training (step/total, loss, "
                                          "tokens/s, ETA; in log.txt, and on stdout when it is not a terminal), "
                                          "generation in evaluation, SeqKD and SRD reflection; time-based, so a slow "
                                          "step or a long evaluation still shows signs of life.")

    def __post_init__(self) -> None:
        _check(self.max_new_tokens > 0, "max_new_tokens", "must be positive")
        _check(self.top_k >= 0, "top_k", "must be >= 0")
        _check(0.0 < self.top_p <= 1.0, "top_p", "must be in (0, 1]")
        _check(self.temperature > 0, "temperature", "must be > 0")
        _check(self.num_beams >= 1, "num_beams", "must be >= 1 (1: no beam search)")
        _check(self.no_repeat_ngram_size >= 0, "no_repeat_ngram_size", "must be >= 0 (0: off)")
        _check(self.repetition_penalty > 0, "repetition_penalty", "must be > 0 (1: off)")
        _check(self.eval_batch_size > 0, "eval_batch_size", "must be positive")
        _check(self.progress_interval > 0, "progress_interval", "must be > 0 seconds")


@dataclass
class TrainConfig:
    save: Optional[str] = _opt(None, "Output directory: checkpoints <save>/<step>/, logs, best.json.")
    deepspeed_config: Optional[str] = _opt(None, "DeepSpeed JSON (configs/deepspeed/); its precision and ZeRO stage "
                                                 "are used; batch size, accumulation and clipping come from flags.",
                                           aliases=["--deepspeed_config"])
    seed: int = _opt(10, "Random seed (model init of new heads, data order, dropout).")
    lr: float = _opt(5e-4, "Peak learning rate.")
    weight_decay: float = _opt(1e-2, "AdamW weight decay (not applied to biases and norms).")
    adam_beta1: float = _opt(0.9, "AdamW beta1.")
    adam_beta2: float = _opt(0.999, "AdamW beta2.")
    clip_grad: float = _opt(1.0, "Gradient-norm clipping (0: off).")
    max_bad_steps: int = _opt(3, "A step whose loss or gradient norm is not finite skips its update (counted and "
                                 "logged); after this many in a row the run stops with exit status 3, its newest "
                                 "checkpoint the last good one.")
    lr_schedule: Literal["constant", "cosine"] = _opt("cosine", "Learning-rate schedule after warm-up.")
    warmup_iters: int = _opt(0, "Linear warm-up steps.")
    lr_min: float = _opt(0.0, "Final learning rate of the cosine schedule.")
    batch_size: int = _opt(8, "Micro-batch size per process.")
    gradient_accumulation_steps: int = _opt(1, "Micro-batches per optimizer step.")
    length_pieces: int = _opt(1, "Split each micro-batch into this many pieces of rows of similar length, each "
                                 "padded only to its own longest row: the same examples, loss and gradient per step "
                                 "(up to float rounding), less compute on padding (on the built-in data 4 pieces "
                                 "pad 14%% of the positions instead of 45%%; steps ~1.4x faster on CPU). Pieces are "
                                 "smaller matrix products, so on a GPU keep them large. 1: off.")
    group_by_length: bool = _opt(False, "Batch examples of similar length together (shuffled at the batch level): "
                                        "less padding, faster steps — but where length goes with the task, batches "
                                        "become single-task and learning suffers (measured on the built-in data: "
                                        "student Rouge-L 12 vs 24), so it is off by default.")
    epochs: Optional[int] = _opt(None, "Training epochs (one of --epochs / --total-iters).")
    total_iters: Optional[int] = _opt(None, "Optimizer steps; overrides --epochs.")
    log_interval: int = _opt(10, "Steps between log lines of the mean train metrics.")
    eval_interval: int = _opt(0, "Steps between evaluations (0: only at the end; -1: once per epoch, as the "
                                 "published recipes do).")
    save_interval: int = _opt(0, "Steps between checkpoints (0: only at the end; -1: once per epoch).")
    eval_gen: bool = _opt(False, "At each evaluation also generate on the validation set and score Rouge-L.")
    keep_optimizer_states: int = _opt(1, "Keep optimizer/scheduler/RNG state for this many latest checkpoints "
                                         "(weights are always kept).")
    resume: bool = _opt(False, "Continue the run in --save from its latest complete checkpoint; its stored settings "
                               "(args.json) must match, except how long it trains and how often it logs, evaluates "
                               "and saves (distill/rundir.py).")
    overwrite: bool = _opt(False, "Start over in a --save that holds a run: its checkpoints, logs and metrics are "
                                  "deleted first (nothing else: a directory holding other files is refused).")
    report_to: Literal["tensorboard", "wandb", "none"] = _opt("tensorboard", "Where metrics go besides the log file.")
    wandb_project: str = _opt("distill", "Weights & Biases project (with --report-to wandb).")
    run_name: Optional[str] = _opt(None, "Name of this run in logs (default: the --save directory's name).")
    stage: int = _opt(0, "Index of this run in a staged plan (the SRD runner sets it); an objective's schedules "
                         "may read it.")

    def __post_init__(self) -> None:
        _check(self.save is not None, "save", "is required (the output directory)")
        _check(self.lr > 0, "lr", "must be > 0")
        _check(self.batch_size > 0, "batch_size", "must be positive")
        _check(self.gradient_accumulation_steps > 0, "gradient_accumulation_steps", "must be positive")
        _check(self.length_pieces >= 1, "length_pieces", "must be >= 1")
        _check(self.epochs is not None or self.total_iters is not None, "epochs", "give --epochs or --total-iters")
        _check(self.epochs is None or self.epochs > 0, "epochs", "must be positive")
        _check(self.total_iters is None or self.total_iters > 0, "total_iters", "must be positive")
        _check(self.warmup_iters >= 0, "warmup_iters", "must be >= 0")
        _check(self.keep_optimizer_states >= 1, "keep_optimizer_states", "must be >= 1")
        _check(not (self.resume and self.overwrite), "overwrite",
               "choose one: --resume continues the run in --save, --overwrite starts it over")
        _check(self.max_bad_steps >= 1, "max_bad_steps", "must be >= 1")
        _check(self.eval_interval >= -1, "eval_interval", "must be >= 0 steps, or -1 (once per epoch)")
        _check(self.save_interval >= -1, "save_interval", "must be >= 0 steps, or -1 (once per epoch)")
        if self.deepspeed_config is not None:
            _check(os.path.isfile(self.deepspeed_config), "deepspeed_config",
                   f"{self.deepspeed_config} does not exist (see configs/deepspeed/)")


C = TypeVar("C")


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Adds one flag per field of ``cls`` to ``parser`` (defaults and help from the field)."""
    group = parser.add_argument_group(cls.__name__)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp, optional = _unwrap_optional(hints[f.name])
        names = [_flag(f.name), *f.metadata.get("aliases", ())]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        kw: dict[str, Any] = {"dest": f.name, "default": default, "help": f.metadata.get("help", "")}
        if tp is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(tp) is Literal:
            choices = typing.get_args(tp)
            kw.update(type=type(choices[0]), choices=choices)
        elif typing.get_origin(tp) in (list, tuple):
            (elem,) = typing.get_args(tp)[:1]
            kw.update(type=elem, nargs="+")
        else:
            kw["type"] = tp
        if optional and tp is not bool:
            kw["help"] += " (default: none)" if default is None else ""
        group.add_argument(*names, **kw)


def from_namespace(cls: type[C], ns: argparse.Namespace) -> C:
    return cls(**{f.name: getattr(ns, f.name) for f in dataclasses.fields(cls)})  # type: ignore[arg-type]


def parse_configs(classes: Sequence[type], argv: Optional[Sequence[str]] = None, description: str = "",
                  extra: Optional[typing.Callable[[argparse.ArgumentParser], None]] = None,
                  defaults: Optional[typing.Mapping[str, Any]] = None) -> list[Any]:
    """Parses ``argv`` into one instance of each class; a bad value exits with status 2 and a one-line message.
    ``defaults``: an entry point's own defaults for some fields (MiniLLM's optimiser), shown in its ``--help``."""
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter, allow_abbrev=False)
    for cls in classes:
        add_dataclass_arguments(parser, cls)
    if defaults:
        parser.set_defaults(**defaults)
    if extra is not None:
        extra(parser)
    # DeepSpeed's launcher (`deepspeed`, unless given --no_local_rank) passes --local_rank=N to every rank. The rank is
    # in the environment too (LOCAL_RANK, where distill/dist.py reads it), so the flag is accepted, hidden and unused.
    parser.add_argument("--local_rank", "--local-rank", type=int, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    ns = parser.parse_args(argv)
    try:
        return [from_namespace(cls, ns) for cls in classes]
    except ConfigError as e:
        parser.exit(2, f"error: {e}\n")


def to_dict(*configs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for c in configs:
        out.update(dataclasses.asdict(c))
    return out


@dataclass
class TeacherConfig:
    """The frozen teacher's flags, shared by the distillation configs (DistillConfig, MiniLLMConfig)."""

    teacher_model_path: Optional[str] = _opt(None, "Teacher model directory (or a LoRA adapter directory on a base).")
    teacher_peft_path: Optional[str] = _opt(None, "LoRA adapter applied to the teacher (merged for inference).")
    teacher_model_fp16: bool = _opt(False, "Run the frozen teacher in float16 (GPU).")
    teacher_model_bf16: bool = _opt(False, "Run the frozen teacher in bfloat16.")

    def _check_teacher(self, why: str = "") -> None:
        _check(self.teacher_model_path is not None, "teacher_model_path", "is required" + why)
        _check(not (self.teacher_model_fp16 and self.teacher_model_bf16), "teacher_model_fp16",
               "choose one of --teacher-model-fp16 / --teacher-model-bf16")

    def teacher_spec(self) -> Any:
        """The teacher the trainer loads and places (distill/models.py TeacherSpec)."""
        from distill.models import TeacherSpec

        dtype = "fp16" if self.teacher_model_fp16 else "bf16" if self.teacher_model_bf16 else "fp32"
        return TeacherSpec(self.teacher_model_path, self.teacher_peft_path, dtype)  # type: ignore[arg-type]


@dataclass
class DistillConfig(TeacherConfig):
    type: str = _opt("fkl", "Divergence: fkl (kd), rkl, jsd, tvd, sfkl, srkl, or a temperature kind tfkl, trkl, "
                            "tjsd, ttvd (ttvdf), tsfkl, tsrkl.")
    kd_ratio: float = _opt(0.5, "Loss = (1 - kd_ratio) * CE + kd_ratio * KD.")
    temperature_kld: float = _opt(1.0, "Temperature of the temperature kinds (divergence scaled by tau^2).")
    skew_alpha: float = _opt(0.1, "Skew alpha of sfkl/srkl.")
    jsd_beta: float = _opt(0.9, "Mixture weight beta of jsd.")
    token_ratio: float = _opt(1.0, "Selective-token KD: fraction of response tokens per sequence that count (1: all).")
    token_score: str = _opt("student_entropy", "Token score for --token-ratio < 1: student_entropy, teacher_entropy, "
                                               "kl, ce_teacher.")
    seqkd: bool = _opt(False, "Sequence-level KD in the step: the teacher answers each batch's prompts (decoded "
                              "with the --gen-* settings, afresh every epoch) and the student trains on those "
                              "answers: CE, plus --kd-ratio times the divergence on the same text. The off-line "
                              "form (answers generated once) is scripts/<family>/tools/generate_data_seqkd.sh.")
    gen_do_sample: bool = _opt(True, "Decoding inside training steps (--seqkd's teacher answers): sample, or greedy "
                                     "with --no-gen-do-sample.")
    gen_temperature: float = _opt(1.0, "Sampling temperature inside training steps.")
    gen_top_k: int = _opt(0, "Top-k inside training steps (0: off).")
    gen_top_p: float = _opt(1.0, "Nucleus threshold inside training steps.")
    gen_max_new_tokens: Optional[int] = _opt(None, "Most new tokens per answer inside training steps (default: "
                                                   "--max-new-tokens); never past --max-length with the prompt.")
    gen_no_repeat_ngram_size: int = _opt(0, "N-gram blocking inside training steps (0: off).")
    gen_repetition_penalty: float = _opt(1.0, "Repetition penalty inside training steps (1: off).")
    gen_num_beams: int = _opt(1, "Beams of the decoding inside training steps (1: none; with sampling, beam "
                                 "sampling).")
    student_gen: bool = _opt(False, "On-policy distillation: with --type mixed-<kind> (GKD, ImitKD) or "
                                    "adaptive-<kind> (DistiLLM) steps also train on the student's own answers to "
                                    "the batch's prompts, sampled with the --gen-* settings, with the teacher's "
                                    "distributions on them as targets (docs/onpolicy.md).")
    mixed_alpha: float = _opt(0.5, "--type mixed-<kind>: probability that a micro-batch trains on student outputs "
                                   "(TRL's lambda); the fresh outputs go into the replay buffer and the batch is "
                                   "drawn from it, as the DistiLLM repository's GKD. 1: every step (ImitKD).")
    capacity: int = _opt(1000, "Replay buffer of student outputs (prompt, answer pairs) per process; the oldest "
                               "go first. At least the batch size; --capacity <batch size> trains on fresh "
                               "outputs only (TRL's GKD).")
    init_threshold: float = _opt(0.0, "--type adaptive-<kind>: the starting probability of student-generated "
                                      "outputs (DistiLLM's adaptive threshold); it rises by 0.1 (to at most 1) at "
                                      "an evaluation whose validation CE is --loss-eps or more above the last "
                                      "reference.")
    loss_eps: float = _opt(0.1, "--type adaptive-<kind>: rise of the validation CE that raises the threshold.")
    replay_ratio: Literal["constant", "increasing", "decreasing"] = _opt(
        "decreasing", "--type adaptive-<kind>: the share of fresh generation within the threshold over the run: "
                      "thr*(1 - step/total) (decreasing: replay grows, as released), thr*step/total, or thr/2.")
    gkd_beta: Optional[float] = _opt(None, "The generalised JSD in TRL's convention (GKDConfig.beta): 0 forward "
                                           "KL, 1 reverse KL, between: --type jsd with --jsd-beta 1 - beta. Goes "
                                           "with --type jsd or mixed-jsd.")
    lm_kd_ratio: float = _opt(0.0, "The pretraining term on --lm-data-dir as (1 - r) * CE + r * the teacher's soft "
                                   "cross-entropy (the KD variant; MiniLLM's pretraining term is r = 0.5); 0: "
                                   "plain CE.")

    def __post_init__(self) -> None:
        from distill.kinds import KINDS, SCHEDULES, TOKEN_SCORES, base_kind, split_type, uses_temperature

        _check(not (self.student_gen and self.teacher_model_path is None), "student_gen",
               "needs a teacher to score the student's outputs: give --teacher-model-path")
        self._check_teacher()
        _check(split_type(self.type)[1] in KINDS, "type",
               f"unknown kind {self.type!r}; valid kinds: {', '.join(KINDS)}, each also as "
               + " or ".join(f"{s}-<kind>" for s in SCHEDULES) + " (on-policy, with --student-gen)")
        _check(self.token_score in TOKEN_SCORES, "token_score",
               f"unknown score {self.token_score!r}; valid: {', '.join(TOKEN_SCORES)}")
        _check(0.0 <= self.kd_ratio <= 1.0, "kd_ratio", f"must be in [0, 1], got {self.kd_ratio}")
        _check(self.temperature_kld > 0, "temperature_kld", "must be > 0")
        _check(0.0 <= self.skew_alpha <= 1.0, "skew_alpha", "must be in [0, 1]")
        _check(0.0 < self.jsd_beta < 1.0, "jsd_beta", "must be in (0, 1)")
        _check(0.0 < self.token_ratio <= 1.0, "token_ratio", "must be in (0, 1]")
        _check(0.0 <= self.lm_kd_ratio <= 1.0, "lm_kd_ratio", "must be in [0, 1]")
        _check(self.gen_temperature > 0, "gen_temperature", "must be > 0")
        _check(self.gen_top_k >= 0, "gen_top_k", "must be >= 0")
        _check(0.0 < self.gen_top_p <= 1.0, "gen_top_p", "must be in (0, 1]")
        _check(self.gen_max_new_tokens is None or self.gen_max_new_tokens > 0, "gen_max_new_tokens",
               "must be positive")
        _check(self.gen_no_repeat_ngram_size >= 0, "gen_no_repeat_ngram_size", "must be >= 0")
        _check(self.gen_repetition_penalty > 0, "gen_repetition_penalty", "must be > 0")
        _check(self.gen_num_beams >= 1, "gen_num_beams", "must be >= 1 (1: no beam search)")
        _check(0.0 <= self.mixed_alpha <= 1.0, "mixed_alpha", f"must be in [0, 1], got {self.mixed_alpha}")
        _check(self.capacity >= 1, "capacity", f"must be >= 1, got {self.capacity}")
        _check(0.0 <= self.init_threshold <= 1.0, "init_threshold", "must be in [0, 1]")
        _check(self.loss_eps >= 0, "loss_eps", "must be >= 0")
        if self.gkd_beta is not None:
            _check(0.0 <= self.gkd_beta <= 1.0, "gkd_beta", f"must be in [0, 1], got {self.gkd_beta}")
            _check(base_kind(split_type(self.type)[1]) == "jsd" and not uses_temperature(split_type(self.type)[1]),
                   "gkd_beta", f"sets the generalised JSD, so it goes with --type jsd or mixed-jsd, not "
                               f"--type {self.type}")
        _check(not (self.student_gen and self.seqkd), "student_gen",
               "choose one: --seqkd trains on the teacher's answers, --student-gen on the student's")

    def step_generation(self, base: "GenerationConfig") -> "GenerationConfig":
        """The decoding settings inside training steps: the --gen-* flags on top of ``base`` (the run's
        GenerationConfig, for what they do not set)."""
        return dataclasses.replace(base, do_sample=self.gen_do_sample, temperature=self.gen_temperature,
                                   top_k=self.gen_top_k, top_p=self.gen_top_p, num_beams=self.gen_num_beams,
                                   max_new_tokens=self.gen_max_new_tokens or base.max_new_tokens,
                                   no_repeat_ngram_size=self.gen_no_repeat_ngram_size,
                                   repetition_penalty=self.gen_repetition_penalty)

    @property
    def schedule(self) -> str:
        """The on-policy schedule of ``--type`` ("mixed", "adaptive"), or "" for a plain divergence."""
        from distill.kinds import split_type

        return split_type(self.type)[0]

    @property
    def on_policy(self) -> bool:
        """True when steps may train on the student's own outputs: --student-gen with a mixed-/adaptive- type."""
        return self.student_gen and self.schedule != ""

    def divergence(self) -> tuple[str, float]:
        """(kind, jsd_beta) of the divergence term: --type without its schedule prefix, or with --gkd-beta the
        generalised JSD in TRL's convention (beta 0: forward KL, 1: reverse KL, else jsd with --jsd-beta 1 - beta)."""
        from distill.kinds import split_type, trl_generalized_jsd

        kind = split_type(self.type)[1]
        if self.gkd_beta is not None:
            return trl_generalized_jsd(self.gkd_beta)
        return kind, self.jsd_beta


# ----------------------------------------------------------------------------------------------------------------
# Flags that do nothing in the chosen configuration: one warning line each, so a setting is never ignored silently.
# ----------------------------------------------------------------------------------------------------------------
def _field_default(cfg: Any, name: str) -> Any:
    f = next(f for f in dataclasses.fields(cfg) if f.name == name)
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]


def _given(cfg: Any, name: str) -> bool:
    """True when ``name`` differs from its field default. The generated flags start at the defaults, so this is
    "the user set it" (setting a flag to its default is indistinguishable from leaving it out, and harmless)."""
    return getattr(cfg, name) != _field_default(cfg, name)


def _shown(cfg: Any, name: str) -> str:
    value = getattr(cfg, name)
    if isinstance(value, bool):
        return _flag(name) if value else "--no-" + _flag(name)[2:]
    if isinstance(value, (list, tuple)):
        return f"{_flag(name)} {' '.join(map(str, value))}"
    return f"{_flag(name)} {value:g}" if isinstance(value, float) else f"{_flag(name)} {value}"


def no_effect_warnings(*configs: Any) -> list[str]:
    """``warning: ...`` lines for the flags of ``configs`` (any of the run's config objects) that were set to a
    non-default value and do nothing with the others chosen."""
    out: list[str] = []

    def warn(cfg: Any, name: str, why: str) -> None:
        if _given(cfg, name):
            out.append(f"warning: {_shown(cfg, name)} has no effect: {why}")

    for cfg in configs:
        if isinstance(cfg, ModelConfig):
            for name in ("peft_lora_r", "peft_lora_alpha", "peft_lora_dropout"):
                if cfg.peft != "lora":
                    warn(cfg, name, "no LoRA adapter is trained without --peft lora")
                elif cfg.peft_path is not None:
                    warn(cfg, name, f"--peft-path {cfg.peft_path} continues an adapter, which keeps its own rank, "
                                    f"alpha and dropout")
        elif isinstance(cfg, DataConfig):
            warn(cfg, "num_workers", "batches are read from memory-mapped files in the training process itself")
            if cfg.lm_coef == 0:
                warn(cfg, "lm_data_dir", "its language-modelling loss has weight --lm-coef 0; set --lm-coef > 0 "
                                         "to train on it")
        elif isinstance(cfg, TrainConfig):
            if cfg.lr_schedule == "constant":
                warn(cfg, "lr_min", "--lr-schedule constant keeps --lr; --lr-min is the end of the cosine schedule")
            if cfg.report_to != "wandb":
                warn(cfg, "wandb_project", f"metrics go to {cfg.report_to}, not wandb (--report-to wandb)")
        elif isinstance(cfg, GenerationConfig):
            if not cfg.do_sample:
                for name in ("top_k", "top_p", "temperature"):
                    warn(cfg, name, "decoding is greedy without --do-sample")
        elif isinstance(cfg, DistillConfig):
            from distill.kinds import base_kind, split_type, uses_temperature

            schedule = cfg.schedule
            if schedule and not cfg.student_gen:
                out.append(f"warning: --type {cfg.type} without --student-gen trains on the data only (as --type "
                           f"{split_type(cfg.type)[1]}); add --student-gen for on-policy steps")
            if cfg.student_gen and not schedule:
                warn(cfg, "student_gen", f"--type {cfg.type} has no on-policy schedule; use --type mixed-{cfg.type} "
                                         f"(GKD) or adaptive-{cfg.type} (DistiLLM)")
            if not cfg.on_policy:
                for name in ("mixed_alpha", "capacity", "init_threshold", "loss_eps", "replay_ratio"):
                    warn(cfg, name, "there are no on-policy steps without --student-gen and a mixed-/adaptive- "
                                    "--type")
            elif schedule == "mixed":
                for name in ("init_threshold", "loss_eps", "replay_ratio"):
                    warn(cfg, name, f"only --type adaptive-<kind> uses it, not --type {cfg.type}")
            else:
                warn(cfg, "mixed_alpha", f"only --type mixed-<kind> uses it, not --type {cfg.type}")
            if not (cfg.seqkd or cfg.on_policy):
                for name in ("gen_do_sample", "gen_temperature", "gen_top_k", "gen_top_p", "gen_max_new_tokens",
                             "gen_no_repeat_ngram_size", "gen_repetition_penalty", "gen_num_beams"):
                    warn(cfg, name, "nothing is generated inside training steps without --seqkd or --student-gen")
            elif not cfg.gen_do_sample:
                for name in ("gen_temperature", "gen_top_k", "gen_top_p"):
                    warn(cfg, name, "decoding inside training steps is greedy with --no-gen-do-sample")
            if cfg.kd_ratio == 0 and cfg.seqkd:
                continue  # pure SeqKD: CE on the teacher's answers; the divergence settings are moot, by choice
            if cfg.kd_ratio == 0:
                # Every KD setting is moot then; one line says so.
                out.append(f"warning: --kd-ratio 0 gives the KD term weight 0: the teacher runs for nothing and "
                           f"--type {cfg.type} has no effect; train with train_sft.py, or raise --kd-ratio")
                continue
            kind = split_type(cfg.type)[1]
            base = base_kind(kind)
            if not uses_temperature(kind):
                warn(cfg, "temperature_kld", f"--type {cfg.type} has no temperature; its temperature twin is "
                                             f"--type t{base}")
            if base not in ("sfkl", "srkl"):
                warn(cfg, "skew_alpha", f"only the skew kinds (sfkl, srkl, tsfkl, tsrkl) use it, not --type "
                                        f"{cfg.type}")
            if base != "jsd":
                warn(cfg, "jsd_beta", f"only jsd and tjsd use it, not --type {cfg.type}")
            elif cfg.gkd_beta is not None:
                warn(cfg, "jsd_beta", f"--gkd-beta {cfg.gkd_beta:g} sets the generalised JSD's weight")
            if cfg.token_ratio == 1:
                warn(cfg, "token_score", "--token-ratio 1 keeps every response token; the score ranks tokens only "
                                         "for --token-ratio < 1")
            data = next((c for c in configs if isinstance(c, DataConfig)), None)
            if data is not None and data.lm_coef == 0:
                warn(cfg, "lm_kd_ratio", "there is no pretraining term without --lm-data-dir (and --lm-coef > 0)")
    return out


@dataclass
class MiniLLMConfig(TeacherConfig):
    """MiniLLM (train_minillm.py): the LMOps minillm flags, with train_base_xl.sh's values as defaults."""

    type: Literal["minillm"] = _opt("minillm", "The method (accepted for the LMOps launch lines; only minillm).")
    ppo_epochs: int = _opt(4, "Passes of PPO steps over each rollout store before it is refilled.")
    num_rollouts: int = _opt(256, "Rollouts per store, over all processes (each holds num_rollouts / world size).")
    chunk_size: Optional[int] = _opt(None, "Prompts per generation call while filling the store (default: "
                                           "--batch-size; the LMOps scripts use 16).")
    cliprange: float = _opt(0.2, "PPO clip range of the ratio rho * w.")
    gamma: float = _opt(0.95, "Discount of the rewards-to-go (the reward of the token itself included).")
    reward_scaling: Optional[float] = _opt(0.5, "Rewards (log p_T - log q_old per token) are divided by this.")
    cliprange_reward: float = _opt(100.0, "Rewards are clipped to +- this after scaling (0: no clipping).")
    length_norm: bool = _opt(True, "Divide each token's reward-to-go by the number of response tokens left "
                                   "(MiniLLM's length normalisation).")
    single_step_reg: bool = _opt(True, "Add the exact per-position reverse KL to the teacher on the rollout "
                                       "positions (MiniLLM's single-step regularisation).")
    teacher_mixed_alpha: Optional[float] = _opt(0.2, "Sample rollouts from (1 - a) q + a p_T, the tokens weighted "
                                                     "by q / ((1 - a) q + a p_T); 0: from the student alone.")
    kd_ratio: float = _opt(0.5, "The pretraining term on --lm-data-dir as (1 - r) CE + r teacher soft "
                                "cross-entropy (MiniLLM's --kd-ratio).")
    seed_ppo: int = _opt(42, "Seed of the rollout store's shuffles (plus the rank).")

    def __post_init__(self) -> None:
        self._check_teacher(" (MiniLLM's rewards are the teacher's log-probabilities)")
        _check(self.ppo_epochs >= 1, "ppo_epochs", "must be >= 1")
        _check(self.num_rollouts >= 1, "num_rollouts", "must be >= 1")
        _check(self.chunk_size is None or self.chunk_size >= 1, "chunk_size", "must be >= 1")
        _check(self.cliprange > 0, "cliprange", "must be > 0")
        _check(0.0 <= self.gamma <= 1.0, "gamma", "must be in [0, 1]")
        _check(self.reward_scaling is None or self.reward_scaling > 0, "reward_scaling", "must be > 0")
        _check(self.cliprange_reward >= 0, "cliprange_reward", "must be >= 0 (0: no clipping)")
        _check(self.teacher_mixed_alpha is None or 0.0 <= self.teacher_mixed_alpha < 1.0, "teacher_mixed_alpha",
               "must be in [0, 1) (1 would sample the teacher alone, and the weights would not be defined)")
        _check(0.0 <= self.kd_ratio <= 1.0, "kd_ratio", "must be in [0, 1]")


#: train_minillm.py's defaults for the shared training flags: the LMOps MiniLLM optimiser and train_base_xl.sh.
MINILLM_TRAIN_DEFAULTS: dict[str, Any] = {
    "lr": 5e-6, "adam_beta1": 0.9, "adam_beta2": 0.95, "weight_decay": 1e-6, "lr_schedule": "constant",
    "warmup_iters": 100, "batch_size": 16, "total_iters": 5000, "epochs": 10, "eval_interval": 100,
    "save_interval": 500, "seed": 10, "seed_lm": 7, "max_length": 512, "max_prompt_length": 256,
    "do_sample": True, "top_k": 0, "top_p": 1.0, "temperature": 1.0, "eval_gen": True, "log_interval": 16,
}


def _layer_list(text: str, flag: str) -> tuple[int, ...]:
    """``[-1,-2,-3]`` (the KD-LLMs launch lines' form) or ``-1,-2,-3`` -> (-1, -2, -3)."""
    body = text.strip().strip("[]").replace(" ", "")
    try:
        out = tuple(int(x) for x in body.split(",") if x)
    except ValueError:
        raise ConfigError(f"{flag} {text!r}: give layer indices as [-1,-2,-3]") from None
    _check(bool(out), flag.lstrip("-").replace("-", "_"), f"{text!r} names no layer; give e.g. [-1,-2,-3]")
    return out


@dataclass
class FeatureConfig:
    """Selective feature distillation (distill/feature_kd.py; docs/feature_kd.md): the KD-LLMs flags. The teacher's
    units are scored by an attribution method, the top ones kept, and chosen student layers aligned with them — one
    more loss term on KD (train_distill.py) or MiniLLM (train_minillm.py)."""

    method: Optional[Literal["grad", "integrated_grads", "max_activations", "random"]] = _opt(
        None, "Attribution of the teacher's units: gradient x activation, integrated gradients, max |activation|, "
              "or random (the control); none: no feature term.")
    hidden: bool = _opt(False, "Align residual-stream units (hidden_states of the layers below).")
    mlp: bool = _opt(False, "Align MLP intermediate units (the input of each block's down projection).")
    student_layer_indices: str = _opt("[-1,-2,-3]", "Student layers, paired in order with --teacher-layer-indices.")
    teacher_layer_indices: str = _opt("[-1,-2,-3]", "Teacher layers whose units are scored and selected.")
    student_hidd_size: Optional[int] = _opt(None, "Residual units kept per teacher layer (default: the student's "
                                                  "hidden size); a student width other than this gets a projector.")
    student_mlp_size: Optional[int] = _opt(None, "MLP units kept per teacher block (default: the student's MLP "
                                                 "width).")
    alpha_corr: float = _opt(0.0, "Weight of the cross-correlation loss of standardised features.")
    alpha_cos: float = _opt(0.0, "Weight of 1 - cosine per position.")
    alpha_mse: float = _opt(0.0, "Weight of the KD-LLMs code's 'mse': in fact the relative L1 mean |s-t|/(|s|+|t|).")
    alpha_mse_std: float = _opt(0.0, "Weight of a true mean squared error on standardised features.")
    corr_weighting: Literal["barlow", "original"] = _opt(
        "barlow", "Cross-correlation weights: diagonal 1 / off-diagonal 0.005 (redundancy reduction), or the KD-LLMs "
                  "code's 0.005 / 1.")
    feature_positions: Literal["response", "nonpad"] = _opt(
        "response", "Positions compared: the response (default) or every non-pad position, prompt included (the "
                    "original).")
    attribution_on: Literal["sample", "data"] = _opt(
        "sample", "Score units on the teacher's own sampled answer to the batch's prompts (the original, each "
                  "refresh) or on the batch's response.")
    selection_refresh: int = _opt(1, "Re-select every N steps (1: every step, as the original; 0: once, kept with "
                                     "the run and reused on resume).")
    ig_steps: int = _opt(8, "Quadrature points of integrated gradients (run as one batch).")

    def __post_init__(self) -> None:
        self.student_layers = _layer_list(self.student_layer_indices, "--student-layer-indices")
        self.teacher_layers = _layer_list(self.teacher_layer_indices, "--teacher-layer-indices")
        if self.method is None:
            return
        _check(self.hidden or self.mlp, "method", "aligns nothing without --hidden and/or --mlp")
        _check(len(self.student_layers) == len(self.teacher_layers), "student_layer_indices",
               f"{len(self.student_layers)} layers for {len(self.teacher_layers)} teacher layers; pair them one to one")
        _check(self.selection_refresh >= 0, "selection_refresh", "must be >= 0 (0: select once)")
        _check(self.ig_steps >= 1, "ig_steps", "must be >= 1")
        for name in ("alpha_corr", "alpha_cos", "alpha_mse", "alpha_mse_std"):
            _check(getattr(self, name) >= 0, name, "must be >= 0")
        _check(any(getattr(self, n) > 0 for n in ("alpha_corr", "alpha_cos", "alpha_mse", "alpha_mse_std")),
               "method", "gives a feature term of weight 0: set --alpha-corr, --alpha-cos, --alpha-mse or "
                         "--alpha-mse-std")
        for name in ("student_hidd_size", "student_mlp_size"):
            _check(getattr(self, name) is None or getattr(self, name) >= 1, name, "must be >= 1")

    @property
    def enabled(self) -> bool:
        return self.method is not None
