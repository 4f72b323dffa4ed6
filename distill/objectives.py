"""What a training step computes, per method: the engine's interface and the objectives built on it.

A step of the trainer (distill/trainer.py), for each optimizer step:

1. ``prepare(micro_batches, ctx)`` — the objective's no-grad work on the step's micro-batches *before* anything is
   counted: generate with the student or the teacher (``ctx.generate``, eval mode, ZeRO-3 parameters gathered once),
   score, fill or sample a buffer. It returns the micro-batches to train on.
2. ``counts(batch)`` — the units each loss term averages over (response tokens, selected tokens), summed by the
   trainer over all micro-batches and ranks. Counting after preparation keeps the global normalisation exact.
3. One forward per model and micro-batch piece, giving what the objective declared it needs (``student_needs``,
   ``teacher_needs``: logits, hidden states of given layers, the final hidden states with the output-layer weight).
4. ``sums(student, teacher, batch, ctx)`` — per-term *sums* from those outputs; the trainer divides each by its
   global count, so a run's losses and gradients do not depend on how a global batch is split.
5. ``combine(means, ctx)`` — the loss, linear in the means; schedules (kd-ratio, temperature) may read ``ctx``.

An objective may own trainable modules (``modules()``: a projector, a value head), optimised, saved and resumed with
the student, and state (``state_dict``: buffers, thresholds) saved in every checkpoint; ``ctx.rng`` is a seeded
generator whose state the checkpoint keeps too, so sampling inside ``prepare`` resumes exactly.
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn

from data_utils.datasets import IGNORE_INDEX

if TYPE_CHECKING:
    from distill.config import DistillConfig


def response_mask(batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """[B, T] bool: positions whose next token is a response token (the loss positions)."""
    return batch["labels"] != IGNORE_INDEX


def ce_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed token cross-entropy of [B, T, V] logits against pre-shifted [B, T] labels (-100 ignored), float32."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
                           ignore_index=IGNORE_INDEX, reduction="sum")


@dataclass(frozen=True)
class Needs:
    """What an objective reads from one model's forward on a training batch.

    ``hidden_layers``: indices into the model's ``hidden_states`` (0: the embeddings, i: after block i, -1: the
    final one, after the last layer norm). ``last_hidden``: the final hidden states [B, T, H] and the output-layer
    weight [V, H], for a loss that builds logits chunk by chunk; with ``logits=False`` the [B, T, V] logits are
    never made."""
    logits: bool = True
    hidden_layers: tuple[int, ...] = ()
    last_hidden: bool = False
    #: Blocks whose MLP intermediate activation (the input of the down projection; distill/features.py) is read.
    mlp_layers: tuple[int, ...] = ()

    def merged(self, other: Optional["Needs"]) -> "Needs":
        """What both ask for (``other`` None: this)."""
        if other is None:
            return self
        return Needs(logits=self.logits or other.logits,
                     hidden_layers=tuple(dict.fromkeys((*self.hidden_layers, *other.hidden_layers))),
                     last_hidden=self.last_hidden or other.last_hidden,
                     mlp_layers=tuple(dict.fromkeys((*self.mlp_layers, *other.mlp_layers))))


@dataclass
class Outputs:
    """One model's outputs on a batch, as its :class:`Needs` asked: ``logits`` [B, T, V], ``hidden`` {layer: [B, T,
    H]}, ``last_hidden`` [B, T, H] and ``output_weight`` [V, H]."""
    logits: Optional[torch.Tensor] = None
    hidden: dict[int, torch.Tensor] = field(default_factory=dict)
    last_hidden: Optional[torch.Tensor] = None
    output_weight: Optional[torch.Tensor] = None
    mlp: dict[int, torch.Tensor] = field(default_factory=dict)  # {block as asked: [B, T, I]}


def forward_logits(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """[B, T, V] logits of a right-padded training batch.

    No attention mask is passed: with right padding a causal model's real tokens only ever attend to earlier, real
    tokens, and padded positions carry no loss, so the mask changes nothing but would force the slower masked
    attention path (and the default position ids 0..T-1 are already right)."""
    return model(input_ids=batch["input_ids"], use_cache=False).logits


_NO_LOGITS = torch.empty(0, dtype=torch.long)


def run_model(model: nn.Module, batch: Mapping[str, torch.Tensor], needs: Needs) -> Outputs:
    """One forward of ``model`` on a right-padded batch, returning what ``needs`` asks for (see forward_logits on
    why there is no attention mask)."""
    if needs.mlp_layers:  # the MLP activations are read by hooks during the same forward
        from distill.features import ModelAdapter

        with ModelAdapter(_unwrap(model)).hooked("mlp", needs.mlp_layers) as acts:
            out = run_model(model, batch, dataclasses.replace(needs, mlp_layers=()))
        adapter = ModelAdapter(_unwrap(model))
        out.mlp = {layer: acts[adapter.layer_index("mlp", layer)] for layer in needs.mlp_layers}
        return out
    hidden = bool(needs.hidden_layers) or needs.last_hidden
    if not hidden:
        return Outputs(logits=forward_logits(model, batch))
    kw: dict[str, Any] = {"output_hidden_states": True, "use_cache": False}
    if not needs.logits:
        kw["logits_to_keep"] = _NO_LOGITS.to(batch["input_ids"].device)  # the output layer runs on no position
    out = model(input_ids=batch["input_ids"], **kw)
    states = out.hidden_states
    result = Outputs(logits=out.logits if needs.logits else None,
                     hidden={i: states[i] for i in needs.hidden_layers})
    if needs.last_hidden:
        result.last_hidden = states[-1]
        result.output_weight = _unwrap(model).get_output_embeddings().weight
    return result


def _unwrap(model: nn.Module) -> nn.Module:
    """The Hugging Face model inside a DeepSpeed engine and/or the trainer's module container."""
    model = getattr(model, "module", model)
    return getattr(model, "student", model)


class StepContext:
    """What an objective may use besides its batch: where the run is, a checkpointed RNG, the models.

    ``step``: optimizer steps done before this one; ``total_steps``; ``epoch`` (fractional, of the training data);
    ``stage``: the run's index in a staged plan (``--stage``, 0 otherwise); ``rng``: a torch.Generator seeded per
    rank whose state every checkpoint keeps; ``student``: the model being trained (the engine: forward with
    gradient); ``teacher``: the frozen teacher placed by the trainer, or None; ``training``: False in evaluation;
    ``max_length``: the run's --max-length (prompt + response tokens of a training row); ``shared_rng``: a
    generator seeded alike on every rank and checkpointed, for draws all ranks must agree on (whether a step
    generates: under ZeRO-3 generation gathers parameters collectively)."""

    def __init__(self, *, step: int, total_steps: int, epoch: float, stage: int, rng: torch.Generator,
                 student: nn.Module, teacher: Optional[nn.Module], tokenizer: Any, device: torch.device,
                 training: bool = True, max_length: Optional[int] = None,
                 policy: Optional[Callable[[str], contextlib.AbstractContextManager[nn.Module]]] = None,
                 shared_rng: Optional[torch.Generator] = None,
                 draw: Optional[Callable[[], dict[str, torch.Tensor]]] = None, batch_size: int = 0):
        self.step, self.total_steps, self.epoch, self.stage = step, total_steps, epoch, stage
        self.max_length = max_length
        self.rng, self.student, self.teacher, self.tokenizer, self.device = rng, student, teacher, tokenizer, device
        self.shared_rng = shared_rng if shared_rng is not None else torch.Generator().manual_seed(0)
        self._draw = draw
        self.batch_size = batch_size  # --batch-size: rows per micro-batch
        self.training = training
        self._policy = policy

    def draw_batch(self) -> dict[str, torch.Tensor]:
        """The next micro-batch of the training stream (this rank's share, in the run's resumable data order): for an
        objective that ``draws_own_batches``."""
        if self._draw is None:
            raise RuntimeError("this context has no training stream to draw from")
        return self._draw()

    @property
    def progress(self) -> float:
        """Fraction of the run done before this step, in [0, 1]."""
        return self.step / max(self.total_steps, 1)

    def policy(self, which: str = "student") -> contextlib.AbstractContextManager[nn.Module]:
        """``with ctx.policy() as model:`` the Hugging Face model (``"student"`` or ``"teacher"``) ready to generate:
        eval mode (no dropout), no gradient, and under ZeRO-3 its parameters gathered once for the whole block rather
        than per token; the training mode is restored after."""
        if self._policy is None:
            raise RuntimeError("this context has no models to generate with")
        return self._policy(which)

    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, gen: Any,
                 which: str = "student", keep_eos: bool = False) -> list[list[int]]:
        """New token ids per row of a left-padded prompt batch, cut at the first EOS (kept with ``keep_eos``;
        distill/generation.py), sampled with ``ctx.rng``'s next seed so a resumed run samples the same."""
        from distill.generation import generate_batch

        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=self.rng))
        with self.policy(which) as model, _seeded(seed, input_ids.device):
            return generate_batch(model, self.tokenizer, input_ids, attention_mask, gen, keep_eos=keep_eos)


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Sampling under ``seed`` without disturbing the global RNG streams (dropout, data) of training."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


class Objective:
    """Base of every objective; see the module docstring for the step. Subclasses define ``terms``, ``counts``,
    ``sums`` and ``combine``, and where they need more: ``student_needs`` / ``teacher_needs`` (None: the teacher
    does not run), ``modules``, ``prepare``, ``state_dict`` / ``load_state_dict``."""

    terms: tuple[str, ...] = ()
    student_needs: Needs = Needs()
    teacher_needs: Optional[Needs] = None
    #: The teacher's share in the pretraining term when the run has one (--lm-data-dir): see WithPretraining.
    pretraining_kd_ratio: float = 0.0
    #: True: the trainer evaluates (validation loss only) before the first step of a fresh run and hands the
    #: metrics to ``on_evaluate`` (a schedule that compares later evaluations with the initial one).
    evaluate_at_start: bool = False
    #: True: the trainer hands ``prepare`` empty micro-batches (``{}``, plus the pretraining batch when the run has
    #: one) and the objective draws data itself with ``ctx.draw_batch()`` when it needs some (MiniLLM: prompts for a
    #: new rollout store, whose batches it then trains on for several steps).
    draws_own_batches: bool = False
    #: With both --epochs and --total-iters: False, --total-iters wins; True, the run stops at whichever comes first
    #: (MiniLLM: --epochs passes over the prompts, or --total-iters steps).
    stop_at_first_limit: bool = False

    def attach(self, student: nn.Module) -> None:
        """Called by the trainer with the Hugging Face student before ``modules()``: modules sized by the model
        (a projector to the teacher's width) are made here."""

    def steps_per_epoch(self, batches_per_epoch: int, gradient_accumulation_steps: int, batch_size: int) -> int:
        """Optimizer steps per pass over the training data (its micro-batches per rank given)."""
        return max(batches_per_epoch // gradient_accumulation_steps, 1)

    def modules(self) -> dict[str, nn.Module]:
        """Trainable modules of the objective (optimised with the student, saved and restored with it)."""
        return {}

    def prepare(self, micro_batches: list[dict[str, torch.Tensor]], ctx: StepContext) -> list[dict[str, torch.Tensor]]:
        """No-grad work on a step's micro-batches before they are counted; returns the batches to train on."""
        return micro_batches

    def counts(self, batch: Mapping[str, torch.Tensor]) -> dict[str, float]:
        raise NotImplementedError

    def sums(self, student: Outputs, teacher: Optional[Outputs], batch: Mapping[str, torch.Tensor],
             ctx: StepContext) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def combine(self, means: Mapping[str, torch.Tensor], ctx: StepContext) -> torch.Tensor:
        raise NotImplementedError

    def step_metrics(self) -> dict[str, float]:
        """Numbers about the last ``prepare`` to log with the step (averaged over ranks and the log window), e.g.
        generated tokens and seconds; ``gen_tokens`` with ``gen_seconds`` also give the generated tokens/s."""
        return {}

    def on_evaluate(self, metrics: Mapping[str, float], ctx: StepContext) -> None:
        """Called with the metrics of each evaluation during training (validation loss of every term as
        ``valid/<term>``, Rouge-L with --eval-gen); e.g. a threshold that follows the validation loss."""

    def state_dict(self) -> dict[str, Any]:
        """State that must survive a resume (buffers, thresholds): tensors and plain values only (loaded with
        ``weights_only=True``). Saved per rank."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass


class SFTObjective(Objective):
    """Supervised fine-tuning: token cross-entropy on the response."""

    terms = ("ce",)

    def counts(self, batch: Mapping[str, torch.Tensor]) -> dict[str, float]:
        return {"ce": float(response_mask(batch).sum())}

    def sums(self, student: Outputs, teacher: Optional[Outputs], batch: Mapping[str, torch.Tensor],
             ctx: StepContext) -> dict[str, torch.Tensor]:
        return {"ce": ce_sum(student.logits, batch["labels"])}

    def combine(self, means: Mapping[str, torch.Tensor], ctx: StepContext) -> torch.Tensor:
        return means["ce"]


class KDObjective(Objective):
    """White-box distillation: (1 - kd_ratio) * CE + kd_ratio * divergence(student, teacher) on response tokens.

    Both logits are cut to the tokenizer's vocabulary first, so rows a model only pads its embedding with never enter
    the divergence. The teacher (placed by the trainer) runs without gradient. ``kd`` averages over the *selected*
    positions (all response positions unless ``token_ratio < 1``), ``ce`` over all response positions.
    """

    terms = ("ce", "kd")
    teacher_needs = Needs()

    def __init__(self, cfg: "DistillConfig", vocab_size: int):
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.pretraining_kd_ratio = cfg.lm_kd_ratio

    def counts(self, batch: Mapping[str, torch.Tensor]) -> dict[str, float]:
        from distill.losses import count_selected

        mask = response_mask(batch)
        return {"ce": float(mask.sum()), "kd": float(count_selected(mask, self.cfg.token_ratio))}

    def sums(self, student: Outputs, teacher: Optional[Outputs], batch: Mapping[str, torch.Tensor],
             ctx: StepContext) -> dict[str, torch.Tensor]:
        from distill.losses import distillation_loss

        assert teacher is not None and student.logits is not None and teacher.logits is not None
        v = self.vocab_size
        c = self.cfg
        kind, jsd_beta = c.divergence()  # --type without an on-policy prefix; --gkd-beta's kind
        kd = distillation_loss(kind, student.logits[..., :v], teacher.logits[..., :v], response_mask(batch),
                               temperature=c.temperature_kld, skew_alpha=c.skew_alpha, jsd_beta=jsd_beta,
                               token_ratio=c.token_ratio, token_score=c.token_score, labels=batch["labels"],
                               reduction="sum")
        return {"ce": ce_sum(student.logits, batch["labels"]), "kd": kd}

    def combine(self, means: Mapping[str, torch.Tensor], ctx: StepContext) -> torch.Tensor:
        r = self.cfg.kd_ratio
        return (1.0 - r) * means["ce"] + r * means["kd"]


class SeqKDObjective(KDObjective):
    """Sequence-level KD in the step (``--seqkd``): in ``prepare`` the teacher answers each micro-batch's prompts
    (``ctx.generate(which="teacher")``: eval mode, ZeRO-3 gathered, sampled from the checkpointed ``ctx.rng``), and
    the batch becomes prompt + the teacher's answer + EOS, with the loss on the answer. Then the KD objective on that
    text: ``(1 - kd_ratio) * CE + kd_ratio * divergence`` — ``kd_ratio`` 0 is pure SeqKD (Kim & Rush), above it
    SeqKD plus word-level KD. The counts are those of the generated answers (counted after preparation). The
    off-line form — answers generated once, then SFT — is distill/seqkd.py's data generation."""

    def __init__(self, cfg: "DistillConfig", vocab_size: int, tokenizer: Any, gen: Any):
        super().__init__(cfg, vocab_size)
        self.tokenizer, self.gen = tokenizer, gen
        # Without the divergence (pure SeqKD) the teacher only generates: no second forward, no "kd" term.
        self.teacher_needs = Needs() if cfg.kd_ratio > 0 else None
        self.terms = ("ce", "kd") if cfg.kd_ratio > 0 else ("ce",)
        self.generated_tokens = 0  # answer tokens generated so far (logged by the tests; kept on resume)

    def prepare(self, micro_batches: list[dict[str, torch.Tensor]], ctx: StepContext) -> list[dict[str, torch.Tensor]]:
        import dataclasses

        from data_utils.datasets import left_padded, prompts_of, response_batch

        pad, eos = self.tokenizer.pad_token_id, self.tokenizer.eos_token_id
        out = []
        for mb in micro_batches:
            prompts = prompts_of(mb)
            gen = self.gen
            if ctx.max_length is not None:  # the answer must fit in a training row with its prompt and EOS
                room = ctx.max_length - max(len(p) for p in prompts) - 1
                gen = dataclasses.replace(gen, max_new_tokens=max(1, min(gen.max_new_tokens, room)))
            prompt_batch = left_padded(prompts, pad)
            answers = ctx.generate(prompt_batch["input_ids"].to(ctx.device),
                                   prompt_batch["attention_mask"].to(ctx.device), gen, which="teacher")
            self.generated_tokens += sum(len(a) for a in answers)
            out.append(response_batch([(p, a + [eos]) for p, a in zip(prompts, answers)], pad, ctx.max_length))
        return out

    def counts(self, batch: Mapping[str, torch.Tensor]) -> dict[str, float]:
        out = super().counts(batch)
        return {k: out[k] for k in self.terms}

    def sums(self, student: Outputs, teacher: Optional[Outputs], batch: Mapping[str, torch.Tensor],
             ctx: StepContext) -> dict[str, torch.Tensor]:
        if self.teacher_needs is None:
            return {"ce": ce_sum(student.logits, batch["labels"])}
        return super().sums(student, teacher, batch, ctx)

    def combine(self, means: Mapping[str, torch.Tensor], ctx: StepContext) -> torch.Tensor:
        return super().combine(means, ctx) if "kd" in self.terms else means["ce"]

    def state_dict(self) -> dict[str, Any]:
        return {"generated_tokens": self.generated_tokens}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.generated_tokens = int(state.get("generated_tokens", 0))


# ----------------------------------------------------------------------------------------------------------------
# The pretraining language-modelling term: an ordinary loss term over a second data source.
# ----------------------------------------------------------------------------------------------------------------
LM_BATCH = "lm_batch"  # key of a micro-batch's pretraining batch (the trainer attaches it, rows of --lm-data-dir)


def soft_ce_sum(logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Summed teacher soft cross-entropy -sum_v p_T(v) log q(v) over the ``mask`` positions, float32: the forward KL
    (the chunked core, its gradient) plus the teacher's entropy (a constant)."""
    from distill.losses import distillation_loss

    kl = distillation_loss("fkl", logits, teacher_logits, mask, reduction="sum")
    with torch.no_grad():
        logp = torch.log_softmax(teacher_logits[mask.bool()].float(), dim=-1)
        entropy = -(logp.exp() * logp).sum()
    return kl + entropy


class WithPretraining(Objective):
    """``inner`` plus ``coef`` times a language-modelling term on a pretraining batch (``--lm-data-dir``; the
    trainer attaches one to each micro-batch under ``LM_BATCH``). The term is (1 - kd_ratio) * CE + kd_ratio *
    teacher soft cross-entropy, averaged over the pretraining tokens of the whole step; ``kd_ratio`` 0 is plain CE,
    MiniLLM's pretraining term uses 0.5 (``--lm-kd-ratio``). Everything else is the inner objective's."""

    def __init__(self, inner: Objective, coef: float, kd_ratio: float = 0.0, vocab_size: Optional[int] = None):
        self.inner, self.coef, self.kd_ratio, self.vocab_size = inner, coef, kd_ratio, vocab_size
        self.terms = (*inner.terms, "lm")
        self.student_needs = inner.student_needs
        self.teacher_needs = inner.teacher_needs
        self.pretraining_kd_ratio = kd_ratio
        self.evaluate_at_start = inner.evaluate_at_start
        self.draws_own_batches = inner.draws_own_batches
        self.stop_at_first_limit = inner.stop_at_first_limit
        self.steps_per_epoch = inner.steps_per_epoch  # type: ignore[method-assign]

    def modules(self) -> dict[str, nn.Module]:
        return self.inner.modules()

    def attach(self, student: nn.Module) -> None:
        self.inner.attach(student)

    def prepare(self, micro_batches: list[dict[str, torch.Tensor]], ctx: StepContext) -> list[dict[str, torch.Tensor]]:
        # The inner objective sees its own batches only; each pretraining batch goes back to its micro-batch after
        # (an objective that makes new batches, e.g. from generations, would otherwise drop it).
        lm = [mb.get(LM_BATCH) for mb in micro_batches]
        inner = self.inner.prepare([{k: v for k, v in mb.items() if k != LM_BATCH} for mb in micro_batches], ctx)
        return [mb if b is None else {**mb, LM_BATCH: b} for mb, b in zip(inner, lm)]

    def counts(self, batch: Mapping[str, torch.Tensor]) -> dict[str, float]:
        lm = batch.get(LM_BATCH)
        return {**self.inner.counts(batch), "lm": float(response_mask(lm).sum()) if lm is not None else 0.0}

    def sums(self, student: Outputs, teacher: Optional[Outputs], batch: Mapping[str, torch.Tensor],
             ctx: StepContext) -> dict[str, torch.Tensor]:
        out = self.inner.sums(student, teacher, batch, ctx)
        lm = batch.get(LM_BATCH)
        if lm is None:
            out["lm"] = torch.zeros((), device=ctx.device)
            return out
        logits = forward_logits(ctx.student, lm)
        term = ce_sum(logits, lm["labels"])
        if self.kd_ratio > 0:
            if ctx.teacher is None:
                raise RuntimeError("the KD pretraining term needs a teacher")
            v = self.vocab_size or logits.shape[-1]
            with torch.no_grad():
                teacher_logits = forward_logits(ctx.teacher, lm)
            soft = soft_ce_sum(logits[..., :v], teacher_logits[..., :v], response_mask(lm))
            term = (1.0 - self.kd_ratio) * term + self.kd_ratio * soft
        out["lm"] = term
        return out

    def combine(self, means: Mapping[str, torch.Tensor], ctx: StepContext) -> torch.Tensor:
        return self.inner.combine(means, ctx) + self.coef * means["lm"]

    def step_metrics(self) -> dict[str, float]:
        return self.inner.step_metrics()

    def on_evaluate(self, metrics: Mapping[str, float], ctx: StepContext) -> None:
        self.inner.on_evaluate(metrics, ctx)

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.inner.load_state_dict(state)
