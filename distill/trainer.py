"""The one training loop, shared by SFT and every distillation method.

Stages of ``Trainer.fit``: resume -> for each optimizer step: fetch the step's micro-batches, count the tokens
each loss term averages over (globally), forward/backward each micro-batch through the DeepSpeed engine, step ->
log -> evaluate -> checkpoint. What a step computes is the ``Objective``'s business (distill/objectives.py).

Checkpoint layout, ``<save>/<step>/``: Hugging Face weights (safetensors) + tokenizer, loadable with
``from_pretrained``; ``ds_state/`` (optimizer, scheduler, engine state; kept for the newest
``--keep-optimizer-states`` checkpoints); ``rng_state_<rank>.pt``; and ``trainer_state.json``, written last, which
marks the checkpoint complete — ``--resume`` only ever picks a complete one.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import pickle
import resource
import shutil
import time
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence

import torch
from torch import nn
from torch.utils.data import Dataset

from data_utils.datasets import IGNORE_INDEX, InstructionDataset, LMCollator, LMDataset, split_by_length
from distill import dist, preflight
from distill.config import (ConfigError, DataConfig, GenerationConfig, InputError, ModelConfig, TrainConfig,
                            to_dict)
from distill.generation import generate_split
from distill.guard import StepGuard, TrainingDiverged, finite, skippable
from distill.inputs import TRAINER_STATE, complete_checkpoints  # noqa: F401  (re-exported)
from distill.logging_utils import RunLogger
from distill.models import TeacherSpec, count_parameters, precision_from_ds_config
from distill.objectives import LM_BATCH, Objective, Outputs, StepContext, WithPretraining, run_model
from distill.summary import RUN_SUMMARY, best_key, is_better, write_summary

STATE_FILE = TRAINER_STATE
DS_TAG = "ds_state"


# ----------------------------------------------------------------------------------------------------------------
# Data order: a pure function of (seed, epoch, rank), so a resumed run replays exactly the batches it would have seen.
# ----------------------------------------------------------------------------------------------------------------
class MicroBatchStream:
    """Endless stream of collated micro-batches for one rank; ``position`` counts micro-batches consumed."""

    def __init__(self, dataset: Dataset, collate: Any, batch_size: int, seed: int, rank: int, world_size: int,
                 position: int = 0, lengths: Optional[Any] = None):
        if len(dataset) == 0:  # type: ignore[arg-type]
            raise ValueError("the training split is empty")
        self.dataset, self.collate, self.batch_size = dataset, collate, batch_size
        self.lengths = lengths  # per-example lengths: group similar lengths into batches (less padding)
        self.seed, self.rank, self.world = seed, rank, world_size
        n = len(dataset)  # type: ignore[arg-type]
        self.per_rank = -(-n // world_size)
        self.batches_per_epoch = -(-self.per_rank // batch_size)
        self.position = position

    def _epoch_order(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 100003 + epoch)
        perm = torch.randperm(len(self.dataset), generator=g).tolist()  # type: ignore[arg-type]
        perm += perm[: self.per_rank * self.world - len(perm)]  # equal shards: every rank steps together
        order = perm[self.rank:: self.world]
        if self.lengths is None:
            return order
        # Length grouping: sort within windows of 64 batches, then shuffle the batches, so each batch holds
        # similar lengths (padding is wasted compute) while the data order stays random at the batch level.
        window = self.batch_size * 64
        grouped: list[int] = []
        for w in range(0, len(order), window):
            grouped += sorted(order[w:w + window], key=lambda i: -int(self.lengths[i]))
        batches = [grouped[b:b + self.batch_size] for b in range(0, len(grouped), self.batch_size)]
        shuffle = torch.randperm(len(batches), generator=g).tolist()
        return [i for b in shuffle for i in batches[b]]

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        epoch, b = divmod(self.position, self.batches_per_epoch)
        order = self._epoch_order(epoch)
        idx = order[b * self.batch_size: (b + 1) * self.batch_size]
        self.position += 1
        return self.collate([self.dataset[i] for i in idx])

    @property
    def epoch(self) -> float:
        return self.position / self.batches_per_epoch

    def examples_consumed(self) -> int:
        """Examples this rank's stream has yielded (an epoch's last batch may be short)."""
        epochs, b = divmod(self.position, self.batches_per_epoch)
        return epochs * self.per_rank + min(b * self.batch_size, self.per_rank)


def lr_lambda(step: int, cfg: TrainConfig, total_iters: int) -> float:
    """Multiplier of the peak learning rate at ``step`` (0-based count of optimizer steps taken)."""
    if cfg.warmup_iters > 0 and step < cfg.warmup_iters:
        return (step + 1) / cfg.warmup_iters
    if cfg.lr_schedule == "constant":
        return 1.0
    span = max(total_iters - cfg.warmup_iters, 1)
    progress = min(max(step - cfg.warmup_iters, 0) / span, 1.0)
    floor = cfg.lr_min / cfg.lr
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: no decay on biases and normalisation weights (1-D tensors)."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # No empty group: DeepSpeed drops those, which would leave the LR scheduler (built on the optimizer first) with
    # one learning rate too many — e.g. LoRA, whose trainable tensors are all 2-D.
    return [g for g in groups if g["params"]]


def load_ds_config(path: Optional[str], train: TrainConfig, device: torch.device) -> dict[str, Any]:
    """The DeepSpeed config the engine gets: ``path`` read and checked (distill/preflight.py; ZeRO-0 without one),
    with the flags' batch size, accumulation and clipping written in. Silent: the warnings about values the flags
    override are distill/entry.py's, said once before the models load (preflight.ds_config_warnings)."""
    cfg = preflight.apply_flags(preflight.read_ds_config(path), train)
    if device.type == "cpu" and cfg.get("fp16", {}).get("enabled"):
        raise ConfigError(f"--deepspeed-config {path}: fp16 needs a GPU; on CPU use a bf16 or fp32 config "
                         f"(configs/deepspeed/ds_config_zero1_bf16.json)")
    return cfg


@contextlib.contextmanager
def weights_only_loads() -> Iterator[None]:
    """DeepSpeed reads its optimizer/engine state with ``torch.load(weights_only=False)``, i.e. unpickles whatever
    the file holds. Within this context it loads with ``weights_only=True`` instead, allowing only the few plain
    DeepSpeed classes its state files hold (found by loading the state of every ZeRO stage, fp32 and bf16)."""
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    allowed = [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]
    unsafe = TorchCheckpointEngine.load

    def load(self: Any, path: str, map_location: Any = None) -> Any:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location=map_location, weights_only=True)

    TorchCheckpointEngine.load = load  # type: ignore[method-assign]
    try:
        yield
    finally:
        TorchCheckpointEngine.load = unsafe  # type: ignore[method-assign]


def to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    """A batch (tensors, and nested batches such as the pretraining one) on ``device``."""
    return {k: to_device(v, device) if isinstance(v, Mapping) else v.to(device) for k, v in batch.items()}


def zero_stage(ds_config: Mapping[str, Any]) -> int:
    return int(ds_config.get("zero_optimization", {}).get("stage", 0))


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # CPU: the process's peak resident set (Linux reports KiB).
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def window_means(sums: Mapping[str, float], counts: Mapping[str, int]) -> dict[str, float]:
    """The logged mean of each number over a log window: its sum over the steps that reported it, divided by their
    count. An objective may report a number on some steps only (a selection's overlap on the steps that re-select);
    dividing by the window's steps would dilute it. Sums without a count (totals such as tokens) are passed as is."""
    return {k: v / counts[k] if k in counts else v for k, v in sums.items()}


def write_best(save_dir: Path, best: Mapping[str, Any]) -> None:
    """``<save>/best.json`` and a relative ``<save>/best`` link to the chosen step's directory, both atomically."""
    tmp = save_dir / "best.json.tmp"
    tmp.write_text(json.dumps(dict(best), indent=2))
    os.replace(tmp, save_dir / "best.json")
    link_tmp = save_dir / "best.tmp"
    link_tmp.unlink(missing_ok=True)
    os.symlink(str(best["step"]), link_tmp)  # relative, so the run directory can move
    os.replace(link_tmp, save_dir / "best")


class StudentWithModules(nn.Module):
    """The student and an objective's trainable modules as one module, so that DeepSpeed optimises, partitions
    (ZeRO-3), all-reduces and checkpoints them together; its forward is the student's."""

    def __init__(self, student: nn.Module, extras: Mapping[str, nn.Module]):
        super().__init__()
        self.student = student
        self.extras = nn.ModuleDict(dict(extras))

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.student(*args, **kwargs)


EXTRAS_FILE = "objective_modules.safetensors"  # an objective's trainable modules, beside the student's weights


class Trainer:
    def __init__(self, *, model: nn.Module, tokenizer: Any, objective: Objective, train: TrainConfig,
                 data: DataConfig, gen: GenerationConfig, model_cfg: ModelConfig, env: dist.DistEnv,
                 extra_config: Optional[Mapping[str, Any]] = None, first_line: Optional[str] = None,
                 warnings: Sequence[str] = (), teacher: Optional[TeacherSpec] = None):
        import deepspeed

        self.train_cfg, self.data_cfg, self.gen_cfg, self.model_cfg = train, data, gen, model_cfg
        self.objective, self.tokenizer, self.env = objective, tokenizer, env
        self.save_dir = Path(train.save)  # type: ignore[arg-type]
        self.ds_config = load_ds_config(train.deepspeed_config, train, env.device)
        self.logger = RunLogger(self.save_dir, train, env.is_main,
                                config={**to_dict(model_cfg, data, train, gen), **(extra_config or {})},
                                progress_interval=gen.progress_interval)
        if first_line is None:  # a caller other than distill/entry.py: say the student's precision at least
            from distill import hardware

            first_line = hardware.run_line({"student": hardware.ds_config_precision(self.ds_config)},
                                           hardware.probe())
        self.logger.info(first_line)
        for line in warnings:  # the checks' warnings (distill/entry.py), on stderr already: into log.txt too
            self.logger.log_only(line)

        # Data first: a missing split fails before the model is put on devices.
        self.train_set = InstructionDataset(data.data_dir, "train")  # type: ignore[arg-type]
        self.valid_set = InstructionDataset(data.data_dir, "valid", num=data.dev_num)  # type: ignore[arg-type]
        collate = LMCollator(tokenizer.pad_token_id, tokenizer.eos_token_id, data.max_length)
        self.stream = MicroBatchStream(self.train_set, collate, train.batch_size, train.seed, env.rank,
                                       env.world_size,
                                       lengths=self.train_set.data.sizes if train.group_by_length else None)
        self.lm_stream: Optional[MicroBatchStream] = None
        if data.lm_data_dir is not None and data.lm_coef > 0:
            lm_collate = LMCollator(tokenizer.pad_token_id, None, data.max_length, append_eos=False)
            self.lm_stream = MicroBatchStream(LMDataset(data.lm_data_dir), lm_collate, train.batch_size,
                                              data.seed_lm if data.seed_lm is not None else train.seed + 1,
                                              env.rank, env.world_size)
        self.collate = collate
        if self.lm_stream is not None and not isinstance(objective, WithPretraining):
            objective = self.objective = WithPretraining(objective, float(data.lm_coef),
                                                         objective.pretraining_kd_ratio, len(tokenizer))
        steps_per_epoch = objective.steps_per_epoch(self.stream.batches_per_epoch, train.gradient_accumulation_steps,
                                                    train.batch_size)
        if train.total_iters and train.epochs and objective.stop_at_first_limit:
            self.total_iters = min(train.total_iters, steps_per_epoch * int(train.epochs))
        else:
            self.total_iters = train.total_iters or steps_per_epoch * int(train.epochs)  # type: ignore[arg-type]
        # -1: once per epoch (as the published recipes evaluate), 0: only at the end.
        self.eval_every = steps_per_epoch if train.eval_interval == -1 else train.eval_interval
        self.save_every = steps_per_epoch if train.save_interval == -1 else train.save_interval

        dtype = precision_from_ds_config(self.ds_config)
        self.student = model  # the Hugging Face model: saved, evaluated, generated with
        objective.attach(model)  # modules sized by the student are made now, before they are counted below
        extras = objective.modules()
        if extras:  # trained, partitioned and checkpointed with the student by the same engine
            model = StudentWithModules(model, extras)
        model = model.to(device=env.device, dtype=dtype) if dtype != torch.float32 else model.to(env.device)
        self.num_params = count_parameters(model)
        self.num_trainable = count_parameters(model, trainable_only=True)
        groups = param_groups(model, train.weight_decay)
        if self.ds_config.get("zero_optimization", {}).get("offload_optimizer"):
            from deepspeed.ops.adam import DeepSpeedCPUAdam

            optimizer_cls: type = DeepSpeedCPUAdam
        else:
            optimizer_cls = torch.optim.AdamW
        # The client optimizer can skip its update (distill/guard.py): every DeepSpeed wrapper calls it for the
        # actual step, so a skipped step leaves weights and Adam state untouched in every ZeRO stage and precision.
        optimizer = skippable(optimizer_cls)(groups, lr=train.lr, betas=(train.adam_beta1, train.adam_beta2))
        self.client_optimizer = optimizer
        # ZeRO-0 in fp32 gives DeepSpeed nothing that checks the gradient norm before the update (its ZeRO, bf16 and
        # fp16 optimizers skip a non-finite norm themselves), so the trainer computes the norm, decides and clips.
        self.own_clip = zero_stage(self.ds_config) == 0 and dtype == torch.float32
        if self.own_clip:
            self.ds_config["gradient_clipping"] = 0.0
        self.fp16 = dtype == torch.float16
        self.guard = StepGuard(train.max_bad_steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_lambda(s, train, self.total_iters))
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=self.ds_config)
        self.zero3 = zero_stage(self.ds_config) == 3
        # The teacher, loaded and placed here (distill/models.py load_teacher): under ZeRO-3 partitioned like the
        # student, so a large teacher fits beside it.
        self.teacher: Optional[nn.Module] = None
        self.teacher_model: Optional[nn.Module] = None  # the Hugging Face module inside (for generation)
        if objective.teacher_needs is not None or teacher is not None:
            if teacher is None:
                raise ValueError(f"{type(objective).__name__} needs a teacher; pass teacher=TeacherSpec(...)")
            from distill.models import load_teacher

            self.teacher, self.teacher_model = load_teacher(teacher, tokenizer, env.device, self.ds_config)
            n_teacher = sum(int(getattr(p, "ds_numel", p.numel())) for p in self.teacher_model.parameters())
            self.logger.info(f"teacher {teacher.path}" + (f" + {teacher.peft_path}" if teacher.peft_path else "")
                             + f": {n_teacher:,} parameters, {teacher.dtype}, "
                             + (f"partitioned over {env.world_size} ranks (ZeRO-3)" if self.zero3
                                else f"whole on {env.device}"))
        # The objective's own generator (sampling in prepare): seeded per rank, its state in every checkpoint.
        self.objective_rng = torch.Generator().manual_seed(train.seed * 1_000_003 + env.rank)
        # ...and one seeded alike on every rank, for the draws the ranks must agree on (whether a step generates).
        self.shared_rng = torch.Generator().manual_seed(train.seed * 1_000_003 + 999_983)
        self.prepare_seconds = 0.0  # the last step's time in the objective's prepare (generation)
        self.step = 0
        self.best: dict[str, Any] = {}
        # What the run did, over all its launches (kept in the checkpoint): the run summary's counters.
        self.totals: dict[str, float] = {"train_seconds": 0.0, "tokens": 0.0, "launches": 0.0}
        self._t_start, self._wall_base = time.time(), 0.0  # this launch's start, earlier launches' wall seconds
        self.steps_per_epoch = steps_per_epoch
        self.logger.info(f"parameters: {self.num_params:,} ({self.num_trainable:,} trainable); "
                         f"train examples: {len(self.train_set)}, valid: {len(self.valid_set)}; "
                         f"steps: {self.total_iters} ({steps_per_epoch} per epoch); world size {env.world_size}; "
                         f"ZeRO stage {zero_stage(self.ds_config)}, dtype {dtype}")

    # ------------------------------------------------------------------------------------------------ one step ---
    def context(self, training: bool = True) -> StepContext:
        """What the objective sees of the run at the current step (distill/objectives.py StepContext)."""
        return StepContext(step=self.step, total_steps=self.total_iters, epoch=self.stream.epoch,
                           stage=self.train_cfg.stage, rng=self.objective_rng,
                           student=self.engine if training else self.student, teacher=self.teacher,
                           tokenizer=self.tokenizer, device=self.env.device, training=training,
                           max_length=self.data_cfg.max_length, policy=self._policy, shared_rng=self.shared_rng,
                           draw=lambda: next(self.stream), batch_size=self.train_cfg.batch_size)

    @contextlib.contextmanager
    def _policy(self, which: str) -> Iterator[nn.Module]:
        """A model to generate with: eval mode, no gradient, and under ZeRO-3 every parameter gathered once for the
        block (not fetched per layer per token); training mode restored after."""
        model = self.student if which == "student" else self.teacher_model
        if model is None:
            raise ValueError(f"no {which} model to generate with")
        was_training = model.training
        model.eval()
        if self.zero3:
            import deepspeed

            gathered: contextlib.AbstractContextManager[Any] = deepspeed.zero.GatheredParameters(
                list(model.parameters()))
        else:
            gathered = contextlib.nullcontext()
        try:
            with torch.no_grad(), gathered:
                yield model
        finally:
            model.train(was_training)

    def term_sums(self, model: nn.Module, batch: Mapping[str, torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor]:
        """One forward per model on ``batch`` (what the objective declared it needs), then its per-term sums."""
        obj = self.objective
        student = run_model(model, batch, obj.student_needs)
        teacher: Optional[Outputs] = None
        if obj.teacher_needs is not None and self.teacher is not None:
            with torch.no_grad():
                teacher = run_model(self.teacher, batch, obj.teacher_needs)
        return obj.sums(student, teacher, batch, ctx)

    def _global_counts(self, micro_batches: list[dict[str, torch.Tensor]]) -> dict[str, float]:
        """Units each loss term averages over in this optimizer step, summed over micro-batches and ranks."""
        names = list(self.objective.terms)
        local = [0.0] * len(names)
        for mb in micro_batches:
            for k, v in self.objective.counts(mb).items():
                local[names.index(k)] += v
        total = dist.all_reduce_sum(local, self.env.device).tolist()
        return dict(zip(names, total))

    def train_step(self) -> dict[str, float]:
        gas, pieces = self.train_cfg.gradient_accumulation_steps, self.train_cfg.length_pieces
        # An objective that draws its own data (ctx.draw_batch) gets empty micro-batches to fill.
        micro = [{} if self.objective.draws_own_batches else next(self.stream) for _ in range(gas)]
        if self.lm_stream is not None:  # each micro-batch's pretraining batch, for the "lm" term
            for mb in micro:
                mb[LM_BATCH] = next(self.lm_stream)  # type: ignore[assignment]
        ctx = self.context()
        # The objective's no-grad work (generation, scoring, buffers) comes before counting, so the global
        # normalisation below covers the batches actually trained on.
        t0 = time.time()
        micro = self.objective.prepare(micro, ctx)
        self.prepare_seconds = time.time() - t0
        if len(micro) != gas:  # DeepSpeed's accumulation boundary counts on exactly gas micro-batches
            raise RuntimeError(f"{type(self.objective).__name__}.prepare returned {len(micro)} micro-batches for "
                               f"{gas}; it must return one per micro-batch it was given")
        counts = self._global_counts(micro)
        # DeepSpeed divides by its accumulation steps (micro-batches x pieces) and averages over ranks; undo both,
        # since every term is already normalised by its global count.
        scale = gas * pieces * self.env.world_size
        logged = {k: 0.0 for k in counts}
        logged["loss"] = 0.0
        tokens = sum(int(mb["attention_mask"].sum()) + (int(mb[LM_BATCH]["attention_mask"].sum())  # type: ignore
                                                        if LM_BATCH in mb else 0) for mb in micro)
        # Every piece is one backward, and DeepSpeed's accumulation boundary must fall on the step's last one: a
        # micro-batch with fewer rows than pieces (an epoch's last) is topped up with label-free copies of a row,
        # which count nothing and add nothing to any loss term. The pretraining batch goes with the first piece.
        work = []
        for mb in micro:
            mb = dict(mb)
            lm = mb.pop(LM_BATCH, None)
            parts = split_by_length(mb, pieces)
            while len(parts) < pieces:
                filler = {k: v[:1].clone() for k, v in parts[-1].items()}
                filler["labels"].fill_(IGNORE_INDEX)
                filler["attention_mask"].zero_()
                filler["attention_mask"][:, 0] = 1  # a one-token row: no loss position, no counted token
                parts.append(filler)
            if lm is not None:
                parts[0] = {**parts[0], LM_BATCH: lm}
            work += parts
        bad_losses = 0
        grad_norm: Optional[float] = None
        for n, mb in enumerate(work):
            mb = to_device(mb, self.env.device)
            sums = self.term_sums(self.engine, mb, ctx)
            means = {k: sums[k] / max(counts[k], 1.0) for k in self.objective.terms}
            loss = self.objective.combine(means, ctx)
            self.engine.backward(loss * scale)
            values = {**{k: float(v.detach()) for k, v in means.items()}, "loss": float(loss.detach())}
            for k, v in values.items():
                logged[k] += v
            bad_losses += not all(math.isfinite(v) for v in values.values())
            if n == len(work) - 1:  # the accumulation boundary: decide before DeepSpeed updates
                grad_norm, skip = self._check_update(bad_losses)
                self.client_optimizer.skip_update = skip
                skipped_before = self.engine.skipped_steps
            self.engine.step()
        self.client_optimizer.skip_update = False
        skipped_by_ds = self.engine.skipped_steps > skipped_before
        if skipped_by_ds and self.scheduler is not None:
            self.scheduler.step()  # DeepSpeed holds the schedule on a skipped step; it follows the step count here
        if not self.own_clip:
            grad_norm = self._ds_grad_norm()
        # The per-rank pieces add up to the global means; the objective's own numbers are averaged over ranks.
        keys = list(logged)
        own = self.objective.step_metrics()
        own_keys = list(own)
        reduced = dist.all_reduce_sum([logged[k] for k in keys] + [own[k] for k in own_keys] + [tokens],
                                      self.env.device).tolist()
        out = dict(zip(keys, reduced[:len(keys)]))
        out.update({k: v / self.env.world_size for k, v in zip(own_keys, reduced[len(keys):-1])})
        out["tokens"] = reduced[-1]
        # fp16's loss scaler skips overflowing steps by design (and lowers the scale): not a bad step by itself.
        out["bad"] = float(skip or (skipped_by_ds and not self.fp16))
        if grad_norm is not None:
            out["grad_norm"] = grad_norm
        return out

    def _check_update(self, bad_losses: int) -> tuple[Optional[float], bool]:
        """(gradient norm where the trainer owns it, whether to skip the update), the same on every rank."""
        grad_norm = None
        if self.own_clip:
            # ZeRO-0: DeepSpeed all-reduced the gradients in the boundary backward, so every rank sees the same ones.
            # DeepSpeed's own clipping function (what it would have run here): the same numbers as without the
            # guard. Clipping with a non-finite norm spoils the gradients, but then the update is skipped anyway.
            params = [p for p in self.engine.module.parameters() if p.grad is not None]  # with objective modules
            if self.train_cfg.clip_grad > 0:
                from deepspeed.runtime.utils import clip_grad_norm_

                grad_norm = float(clip_grad_norm_(params, max_norm=self.train_cfg.clip_grad))
            else:
                grad_norm = float(torch.nn.utils.get_total_norm([p.grad for p in params]))
        local_bad = [float(bad_losses), float(not finite(grad_norm))]
        any_bad = dist.all_reduce_sum(local_bad, self.env.device).tolist()
        return grad_norm, any(v > 0 for v in any_bad)

    def _ds_grad_norm(self) -> Optional[float]:
        norm = self.engine.get_global_grad_norm()
        if norm is None:
            return None
        return float(norm.item() if isinstance(norm, torch.Tensor) else norm)

    # ------------------------------------------------------------------------------------------------ evaluate ---
    @torch.no_grad()
    def evaluate(self, step: int, initial: bool = False) -> dict[str, float]:
        """Validation loss of every objective term and, with --eval-gen, Rouge-L of generations decoded with the run's
        GenerationConfig (greedy unless --do-sample). ``initial``: the evaluation before training that an objective
        asked for (``evaluate_at_start``): the loss only, logged at step 0, never a best checkpoint."""
        model = self.student
        module = self.engine.module  # the student, with the objective's modules when it has some
        was_training = module.training
        module.eval()
        ctx = self.context(training=False)
        self.logger.note("evaluating: validation loss")
        n = len(self.valid_set)
        mine = dist.shard_indices(n, self.env.rank, self.env.world_size, pad=True)
        real = [True] * len(list(range(self.env.rank, n, self.env.world_size)))
        real += [False] * (len(mine) - len(real))
        names = list(self.objective.terms)
        sums = [0.0] * len(names)
        counts = [0.0] * len(names)
        bs = self.gen_cfg.eval_batch_size
        for s in range(0, len(mine), bs):
            items = [self.valid_set[i] for i in mine[s:s + bs]]
            keep = real[s:s + bs]
            batch = {k: v.to(self.env.device) for k, v in self.collate(items).items()}
            # Padding rows (repeats that keep ranks in step) get no label, so they add nothing.
            for b, k in enumerate(keep):
                if not k:
                    batch["labels"][b] = -100
            term_sums = self.term_sums(model, batch, ctx)
            term_counts = self.objective.counts(batch)
            for j, k in enumerate(names):
                sums[j] += float(term_sums[k])
                counts[j] += term_counts[k]
        red = dist.all_reduce_sum(sums + counts, self.env.device).tolist()
        means = {k: red[j] / max(red[len(names) + j], 1.0) for j, k in enumerate(names)}
        # A term with nothing to average over in validation (the pretraining term) is not reported; it adds 0.
        metrics = {f"valid/{k}": v for j, (k, v) in enumerate(means.items()) if red[len(names) + j] > 0}
        metrics["valid/loss"] = float(self.objective.combine({k: torch.tensor(v) for k, v in means.items()}, ctx))
        if self.train_cfg.eval_gen and not initial:
            # Sampled validation (--do-sample) draws from its own seed (--seed and the step), inside a forked RNG:
            # its draws neither depend on nor change the training streams (dropout), so evaluating more or less
            # often leaves training as it was, and a step's scores do not depend on what ran before.
            devices = [self.env.device] if self.env.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                recs = generate_split(model, self.tokenizer, self.valid_set, self.gen_cfg, rank=self.env.rank,
                                      world_size=self.env.world_size, device=self.env.device,
                                      max_prompt_length=self.data_cfg.max_prompt_length,
                                      synced_gpus=zero_stage(self.ds_config) == 3 and self.env.world_size > 1,
                                      seed=self.train_cfg.seed * 1_000_003 + step,
                                      progress=lambda done, total: self.logger.note(
                                          f"evaluating: generated {done}/{total} prompts"))
            from distill.metrics import compute_metrics  # here: rouge-score pulls in nltk and scipy (~2 s)

            scores = compute_metrics([r["response"] for r in recs],
                                     [self.valid_set.references(r["index"]) for r in recs])
            metrics["valid/rougeL"] = scores["rougeL"]
            metrics["valid/exact_match"] = scores["exact_match"]
            metrics["valid/gen_tokens"] = sum(r["num_tokens"] for r in recs) / max(len(recs), 1)
        if was_training:
            module.train()
        if initial:
            self.logger.log_metrics(step, metrics)
            return metrics
        self._update_best(step, metrics)
        self.logger.log_metrics(step, metrics)
        return metrics

    def _update_best(self, step: int, metrics: Mapping[str, float]) -> None:
        # One rule for every run and the SRD plan over stages (distill/summary.py): Rouge-L when generation is
        # scored, else validation loss; ties keep the earlier checkpoint; a non-finite value never wins.
        key, _ = best_key(metrics)
        candidate = {"step": step, "metric": key, "value": metrics[key], "path": str(self.save_dir / str(step))}
        if not math.isfinite(metrics[key]):
            self.logger.info(f"step {step}: {key} is {metrics[key]}; this checkpoint cannot become the best")
        elif is_better(candidate, self.best):
            self.best = candidate

    # ------------------------------------------------------------------------------------------------ save/load ---
    def save(self, step: int) -> None:
        self.logger.note(f"saving checkpoint {step}")
        ckpt = self.save_dir / str(step)
        stage3 = zero_stage(self.ds_config) == 3
        state_dict = self.engine._zero3_consolidated_16bit_state_dict() if stage3 else None
        if self.env.is_main:
            ckpt.mkdir(parents=True, exist_ok=True)
            (ckpt / STATE_FILE).unlink(missing_ok=True)  # incomplete until rewritten below
            student_sd, extras_sd = self._split_state(state_dict)
            self.student.save_pretrained(ckpt, safe_serialization=True,
                                         **({"state_dict": student_sd} if stage3 else {}))
            if extras_sd is not None:  # the objective's modules: beside the weights (the optimizer state has them too)
                from safetensors.torch import save_file

                save_file({k: v.detach().contiguous().cpu() for k, v in extras_sd.items()}, str(ckpt / EXTRAS_FILE))
            self.tokenizer.save_pretrained(ckpt)
        dist.barrier()
        client = {"step": step, "position": self.stream.position,
                  "lm_position": self.lm_stream.position if self.lm_stream else 0, "best": self.best,
                  "bad_steps": self.guard.state(), "totals": self._totals()}
        self.engine.save_checkpoint(str(ckpt), tag=DS_TAG, client_state=client, save_latest=False)
        torch.save({**dist.rng_state(), "objective_rng": self.objective_rng.get_state(),
                    "shared_rng": self.shared_rng.get_state(),
                    "objective": self.objective.state_dict()}, ckpt / f"rng_state_{self.env.rank}.pt")
        dist.barrier()
        if self.env.is_main:
            tmp = ckpt / (STATE_FILE + ".tmp")
            tmp.write_text(json.dumps({**client, "complete": True}, indent=2))
            os.replace(tmp, ckpt / STATE_FILE)
            self._write_best()
            for old in complete_checkpoints(self.save_dir)[: -self.train_cfg.keep_optimizer_states]:
                shutil.rmtree(self.save_dir / str(old) / DS_TAG, ignore_errors=True)
        dist.barrier()
        self.logger.info(f"saved checkpoint {ckpt}")

    def _split_state(self, full: Optional[Mapping[str, torch.Tensor]]) -> tuple[Optional[dict[str, torch.Tensor]],
                                                                               Optional[dict[str, torch.Tensor]]]:
        """(the student's state dict, the objective modules' state dict or None) from the engine module's
        consolidated ZeRO-3 ``full`` state, or from the live modules when ``full`` is None."""
        if not isinstance(self.engine.module, StudentWithModules):
            return (dict(full) if full is not None else None), None
        if full is None:
            return None, self.engine.module.extras.state_dict()
        student = {k[len("student."):]: v for k, v in full.items() if k.startswith("student.")}
        extras = {k[len("extras."):]: v for k, v in full.items() if k.startswith("extras.")}
        return student, extras

    def _write_best(self) -> None:
        if self.best and self.env.is_main and (self.save_dir / str(self.best["step"])).is_dir():
            write_best(self.save_dir, self.best)

    def resume(self) -> int:
        """Loads the newest complete checkpoint that still has optimizer state; returns its step (0: none)."""
        candidates = [s for s in complete_checkpoints(self.save_dir) if (self.save_dir / str(s) / DS_TAG).is_dir()]
        step = candidates[-1] if candidates else 0
        # The steps after it are lost work, redone now: their rows leave the metrics log, and saves a kill cut short
        # go, so the directory holds each step once.
        self.logger.rewind(step)
        if self.env.is_main:
            for p in self.save_dir.iterdir():
                if (p.name.isdigit() and int(p.name) > step and p.is_dir() and not p.is_symlink()
                        and not (p / STATE_FILE).is_file()):
                    shutil.rmtree(p)
                    self.logger.info(f"--resume: removed {p}, an incomplete checkpoint")
        if not candidates:
            self.logger.info(f"--resume: no complete checkpoint in {self.save_dir}; starting from scratch")
            return 0
        ckpt = self.save_dir / str(step)
        try:
            with weights_only_loads():
                _, client = self.engine.load_checkpoint(str(ckpt), tag=DS_TAG)
            rng = torch.load(ckpt / f"rng_state_{self.env.rank}.pt", weights_only=True)
        except pickle.UnpicklingError as e:
            raise InputError(f"{ckpt}: a state file holds more than tensors and plain values and is not loaded "
                             f"({str(e).splitlines()[0]}); if the run directory is yours, delete {ckpt} to resume "
                             f"from the checkpoint before it") from None
        if client is None:
            raise RuntimeError(f"{ckpt / DS_TAG}: could not load the DeepSpeed state; delete {ckpt} and resume again")
        self.stream.position = int(client["position"])
        if self.lm_stream is not None:
            self.lm_stream.position = int(client["lm_position"])
        self.best = client.get("best") or {}
        self.guard.load(client.get("bad_steps"))
        self.totals.update(client.get("totals") or {})
        if "objective_rng" in rng:
            self.objective_rng.set_state(rng.pop("objective_rng"))
        self.objective.load_state_dict(rng.pop("objective", {}))
        dist.set_rng_state(rng)
        if "shared_rng" in rng:
            self.shared_rng.set_state(rng.pop("shared_rng"))
        self.logger.info(f"resumed from {ckpt} (step {step})")
        return step

    # ------------------------------------------------------------------------------------------------ the loop ---
    def fit(self) -> dict[str, Any]:
        try:
            return self._fit()
        finally:
            self.logger.stop_progress()  # after an error too (e.g. TrainingDiverged): no heartbeat outlives the run

    def _fit(self) -> dict[str, Any]:
        cfg = self.train_cfg
        if self.env.is_main:  # present only once the run has finished (a resumed run writes it anew)
            (self.save_dir / RUN_SUMMARY).unlink(missing_ok=True)
        self.step = self.resume() if cfg.resume else 0
        self.engine.train()
        self.logger.start(self.total_iters, self.step)
        t_start = self._t_start = time.time()
        self._wall_base = self.totals.get("wall_seconds", 0.0)  # earlier launches of a resumed run
        self.totals["launches"] = self.totals.get("launches", 0.0) + 1
        final_eval: dict[str, float] = {}
        if self.objective.evaluate_at_start and self.step == 0:  # the reference of a schedule (DistiLLM's)
            self.objective.on_evaluate(self.evaluate(0, initial=True), self.context(training=False))
        # Logged train metrics are means over the steps since the last log line (one step's batch is noisy,
        # length-grouped batches especially); tokens/s covers training time only, not evaluation or saving.
        window: dict[str, float] = {}
        counts: dict[str, int] = {}  # steps that reported each number in this window
        window_time = 0.0
        while self.step < self.total_iters:
            t0 = time.time()
            out = self.train_step()
            self.step += 1
            dt = time.time() - t0
            window_time += dt
            window["prepare_seconds"] = window.get("prepare_seconds", 0.0) + self.prepare_seconds
            self.totals["prepare_seconds"] = self.totals.get("prepare_seconds", 0.0) + self.prepare_seconds
            bad = bool(out.pop("bad"))
            # A skipped step's numbers are not finite: it is counted, logged in its own line, and kept out of the means.
            try:
                steps = complete_checkpoints(self.save_dir) if bad else []
                note = self.guard.record(self.step, bad, out["loss"], out.get("grad_norm"),
                                         str(self.save_dir / str(steps[-1])) if steps else None)
            except TrainingDiverged as e:
                self.logger.info(f"error: {e}")
                raise
            if note is not None:
                self.logger.info(note)
            tokens = out.pop("tokens")
            self.totals["tokens"] += tokens
            self.totals["train_seconds"] += dt
            window["tokens"] = window.get("tokens", 0.0) + tokens
            if not bad:
                for k, v in out.items():
                    window[k] = window.get(k, 0.0) + v
                    counts[k] = counts.get(k, 0) + 1
            lr = self.scheduler.get_last_lr()[0] if self.scheduler is not None else cfg.lr
            self.logger.advance(self.step, out["loss"], lr, tokens / max(dt, 1e-9))
            last_step = self.step == self.total_iters
            last_eval = {}
            if self.step % cfg.log_interval == 0 or last_step:
                metrics = {f"train/{k}": v for k, v in window_means(window, counts).items()
                           if k not in ("tokens", "prepare_seconds")}
                if window.get("gen_seconds"):  # an objective that generates: its speed, per rank
                    metrics["train/gen_tokens_per_s"] = window["gen_tokens"] / window["gen_seconds"]
                metrics.update({"train/lr": lr, "train/tokens_per_s": window["tokens"] / max(window_time, 1e-9),
                                "train/prepare_share": window["prepare_seconds"] / max(window_time, 1e-9),
                                "train/skipped_steps": self.guard.total,
                                "train/epoch": self.stream.epoch,
                                "train/peak_mem_mb": peak_memory_mb(self.env.device)})
                self.logger.log_metrics(self.step, metrics)
                window, counts, window_time = {}, {}, 0.0
            if (self.eval_every and self.step % self.eval_every == 0) or last_step:
                last_eval = final_eval = self.evaluate(self.step)
                self.objective.on_evaluate(last_eval, self.context(training=False))
            # A new best is always saved, so `best` points at weights that exist.
            new_best = bool(last_eval) and self.best.get("step") == self.step
            if (self.save_every and self.step % self.save_every == 0) or last_step or new_best:
                self.save(self.step)
        self._write_best()
        summary = {"steps": self.step, "train_seconds": time.time() - t_start, "best": self.best, **final_eval}
        self.logger.finish(summary)
        if self.env.is_main:
            write_summary(self.save_dir, self.run_summary(final_eval))
        return summary

    def _totals(self) -> dict[str, float]:
        """The run's counters so far, over all launches (saved with each checkpoint)."""
        return {**self.totals, "wall_seconds": self._wall_base + time.time() - self._t_start}

    def run_summary(self, final_eval: Mapping[str, float]) -> dict[str, Any]:
        """``<save>/run_summary.json`` (distill/summary.py): what the run did, for whoever reads it next.
        ``train_seconds``: time in optimizer steps; ``wall_seconds``: the whole loop with evaluation and saving;
        ``tokens``: non-padding tokens through the student (instruction data and any LM corpus), all ranks."""
        t = self._totals()
        return {"steps": self.step, "total_iters": self.total_iters, "steps_per_epoch": self.steps_per_epoch,
                "epochs": self.stream.epoch,
                "world_size": self.env.world_size, "train_examples": len(self.train_set),
                "examples_seen": self.stream.examples_consumed() * self.env.world_size,
                "train_seconds": t["train_seconds"], "wall_seconds": t["wall_seconds"],
                "prepare_seconds": t.get("prepare_seconds", 0.0), "tokens": int(t["tokens"]),
                "launches": int(t["launches"]), "skipped_steps": self.guard.total, "best": self.best,
                "final": dict(final_eval)}
