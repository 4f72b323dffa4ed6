"""Benchmark the chunked divergences of distill/losses.py against a straightforward implementation.

For every kind it measures, for forward+backward on ``[B, T, V]`` float32 logits with an all-true mask (worst case):

* time: mean of ``--repeats`` runs after one warm-up, for the chunked `distillation_loss` and for a naive reference
  that materialises full ``[B, T, V]`` probability tensors and lets autograd differentiate them;
* peak extra memory: each case runs in a fresh subprocess; after the inputs are allocated (and a tiny warm-up has
  initialised kernels and thread pools) the kernel's peak-RSS mark is reset (``/proc/self/clear_refs``), and the
  extra is VmHWM after forward+backward minus VmRSS before. ``torch.nn.functional.cross_entropy`` on the same logits
  is measured the same way as the yardstick.

Targets: chunked peak extra <= 0.75 x cross-entropy's, chunked time <= 0.5 x naive time.

    python tools/bench_losses.py                      # B=2, T=512, V=32000, all kinds
    python tools/bench_losses.py --kinds fkl jsd --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import distill  # noqa: E402,F401  (first: sets the CPU OpenMP wait policy before torch loads)
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from distill.losses import DIVERGENCES, distillation_loss  # noqa: E402

MEMORY_TARGET = 0.75  # chunked peak extra / cross-entropy peak extra
TIME_TARGET = 0.5  # chunked time / naive time
CANONICAL_KINDS = tuple(dict.fromkeys(spec.name for spec in DIVERGENCES.values()))
SEED = 1234


# ----------------------------------------------------------------------------------------------------------------
# The naive reference: full-size probability tensors, autograd backward.
# ----------------------------------------------------------------------------------------------------------------


def naive_loss(kind: str, logits: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor, tau: float,
               alpha: float, beta: float) -> torch.Tensor:
    """The straightforward implementation: every intermediate is a ``[B, T, V]`` float32 tensor."""
    spec = DIVERGENCES[kind]
    tau = tau if spec.uses_temperature else 1.0
    base = spec.name[1:] if spec.uses_temperature else spec.name
    ls = F.log_softmax(logits.float() / tau, dim=-1)
    lt = F.log_softmax(teacher.float() / tau, dim=-1)
    ps, pt = F.softmax(logits.float() / tau, dim=-1), F.softmax(teacher.float() / tau, dim=-1)
    inf = torch.isinf(logits) | torch.isinf(teacher)
    ls, lt = ls.masked_fill(inf, 0.0), lt.masked_fill(inf, 0.0)
    if base == "fkl":
        term = pt * (lt - ls)
    elif base == "rkl":
        term = ps * (ls - lt)
    elif base == "jsd":
        m = beta * ps + (1 - beta) * pt
        lm = torch.log(m.clamp_min(torch.finfo(torch.float32).tiny))
        term = beta * ps * (ls - lm) + (1 - beta) * pt * (lt - lm)
    elif base == "tvd":
        term = 0.5 * (pt - ps).abs()
    elif base == "sfkl":
        term = pt * (lt - torch.log((alpha * pt + (1 - alpha) * ps).clamp_min(torch.finfo(torch.float32).tiny)))
    elif base == "srkl":
        term = ps * (ls - torch.log(((1 - alpha) * pt + alpha * ps).clamp_min(torch.finfo(torch.float32).tiny)))
    else:
        raise ValueError(f"naive reference has no formula for {kind!r}")
    per_position = term.masked_fill(inf, 0.0).sum(dim=-1)
    m = mask.float()
    return (per_position * m).sum() / m.sum() * (tau * tau)


# ----------------------------------------------------------------------------------------------------------------
# Cases
# ----------------------------------------------------------------------------------------------------------------


def make_inputs(batch: int, seq: int, vocab: int, seed: int = SEED) -> tuple[torch.Tensor, ...]:
    """Student logits (leaf, requires grad), teacher logits, all-true mask and random labels, no temporaries."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, seq, vocab, generator=gen).mul_(2.0).requires_grad_()
    teacher = torch.randn(batch, seq, vocab, generator=gen).mul_(2.0)
    mask = torch.ones(batch, seq, dtype=torch.bool)
    labels = torch.randint(0, vocab, (batch, seq), generator=gen)
    return logits, teacher, mask, labels


def run_case(case: str, kind: str, logits, teacher, mask, labels, args) -> torch.Tensor:
    """One forward+backward; the gradient lands in ``logits.grad``. Returns the detached loss."""
    logits.grad = None
    if case == "ce":
        loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1))
    elif case == "naive":
        loss = naive_loss(kind, logits, teacher, mask, args.temperature, args.skew_alpha, args.jsd_beta)
    elif case == "chunked":
        loss = distillation_loss(kind, logits, teacher, mask, temperature=args.temperature,
                                 skew_alpha=args.skew_alpha, jsd_beta=args.jsd_beta, chunk_size=args.chunk_size)
    else:
        raise ValueError(f"unknown case {case!r}; use ce, naive or chunked")
    loss.backward()
    return loss.detach()


def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} missing from /proc/self/status")


def measure_memory(case: str, kind: str, args) -> dict:
    """Peak extra RSS (bytes) of one forward+backward, in this (fresh) process."""
    torch.set_num_threads(args.threads)
    tiny = make_inputs(1, 4, 64)
    run_case(case, kind, *tiny, args)  # initialise kernels, thread pools and allocator caches outside the window
    del tiny
    logits, teacher, mask, labels = make_inputs(args.batch, args.seq, args.vocab)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak-RSS mark to the current RSS
        before = _proc_status_kib("VmRSS")
        run_case(case, kind, logits, teacher, mask, labels, args)
        peak = _proc_status_kib("VmHWM")
        method = "VmHWM"
    except OSError:
        # No resettable mark: ru_maxrss growth is a lower bound if the process peaked earlier; inputs are built
        # without temporaries, so RSS is at its peak here.
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        run_case(case, kind, logits, teacher, mask, labels, args)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        method = "ru_maxrss"
    return {"extra_bytes": (peak - before) * 1024, "method": method}


def memory_in_subprocess(case: str, kind: str, args) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--measure", case, kind,
           "--batch", str(args.batch), "--seq", str(args.seq), "--vocab", str(args.vocab),
           "--threads", str(args.threads), "--temperature", str(args.temperature),
           "--skew-alpha", str(args.skew_alpha), "--jsd-beta", str(args.jsd_beta)]
    if args.chunk_size:
        cmd += ["--chunk-size", str(args.chunk_size)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def time_case(case: str, kind: str, inputs, args) -> tuple[float, float, torch.Tensor, torch.Tensor]:
    """Mean wall and mean process-CPU seconds of forward+backward after one warm-up; the last loss and gradient.

    CPU time (all threads) is printed next to wall time because it is far less sensitive to other load on the host.
    """
    loss = run_case(case, kind, *inputs, args)
    wall, cpu = [], []
    for _ in range(args.repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        loss = run_case(case, kind, *inputs, args)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return sum(wall) / len(wall), sum(cpu) / len(cpu), loss, inputs[0].grad.clone()


def wait_policy() -> str:
    """The OpenMP wait policy this process runs under (importing distill sets PASSIVE on CPU when none is chosen)."""
    return os.environ.get("OMP_WAIT_POLICY", "unset (libgomp default: spins a while)").upper()


def times_under_policy(policy: str, args) -> dict[str, float]:
    """chunked/naive time per kind, measured in a fresh process under ``OMP_WAIT_POLICY=policy`` (it must be set
    before the OpenMP runtime loads, hence the subprocess)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--time-only", "--kinds", *args.kinds,
           "--batch", str(args.batch), "--seq", str(args.seq), "--vocab", str(args.vocab),
           "--threads", str(args.threads), "--repeats", str(args.repeats), "--temperature", str(args.temperature),
           "--skew-alpha", str(args.skew_alpha), "--jsd-beta", str(args.jsd_beta)]
    if args.chunk_size:
        cmd += ["--chunk-size", str(args.chunk_size)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, "OMP_WAIT_POLICY": policy})
    return json.loads(out.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--kinds", nargs="+", default=list(CANONICAL_KINDS), help="kinds to benchmark (default: all)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per case after one warm-up")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads, the same for every case (default 1: on a shared host, OpenMP barriers of "
                        "multi-threaded ops turn other load into noise; see docs/losses.md)")
    p.add_argument("--temperature", type=float, default=2.0, help="tau for the t* kinds")
    p.add_argument("--skew-alpha", type=float, default=0.1)
    p.add_argument("--jsd-beta", type=float, default=0.9)
    p.add_argument("--chunk-size", type=int, default=None, help="positions per chunk (default: library default)")
    p.add_argument("--strict", action="store_true", help="exit with status 1 if a target is missed")
    p.add_argument("--compare-wait-policy", action=argparse.BooleanOptionalAction, default=True,
                   help="also time every kind in a subprocess under the other OMP_WAIT_POLICY (PASSIVE vs ACTIVE) "
                        "and print both ratios: spinning OpenMP threads slow multi-threaded runs on a busy host")
    p.add_argument("--measure", nargs=2, metavar=("CASE", "KIND"), help=argparse.SUPPRESS)
    p.add_argument("--time-only", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    unknown = [k for k in args.kinds if k not in DIVERGENCES]
    if unknown:
        p.error(f"unknown kinds {unknown}; valid: {', '.join(DIVERGENCES)}")
    for name in ("batch", "seq", "vocab", "repeats", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.measure:
        print(json.dumps(measure_memory(*args.measure, args)))
        return 0
    torch.set_num_threads(args.threads)
    if args.time_only:  # a child of --compare-wait-policy: chunked/naive time per kind, nothing else
        inputs = make_inputs(args.batch, args.seq, args.vocab)
        print(json.dumps({k: time_case("chunked", k, inputs, args)[0] / time_case("naive", k, inputs, args)[0]
                          for k in args.kinds}))
        return 0
    policy = wait_policy()
    mib = 1024 * 1024
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"B={args.batch} T={args.seq} V={args.vocab} float32, mask all true, threads={args.threads}, "
          f"tau={args.temperature} (t* kinds), repeats={args.repeats} after 1 warm-up, torch {torch.__version__}, "
          f"host load average {load} on {os.cpu_count()} CPUs, OMP_WAIT_POLICY={policy}")
    ce_mem = memory_in_subprocess("ce", "fkl", args)
    print(f"cross_entropy fwd+bwd peak extra: {ce_mem['extra_bytes'] / mib:.1f} MiB (method: {ce_mem['method']})",
          flush=True)
    inputs = make_inputs(args.batch, args.seq, args.vocab)
    header = (f"{'kind':<6} {'naive ms':>9} {'chunk ms':>9} {'time x':>7} {'cpu x':>6} {'naive MiB':>10} "
              f"{'chunk MiB':>10} {'mem/CE':>7} {'|dloss|':>9} {'|dgrad|':>9}  targets")
    print(header)
    print("-" * len(header))
    all_met = True
    ratios: dict[str, float] = {}
    for kind in args.kinds:
        naive_s, naive_cpu, naive_l, naive_g = time_case("naive", kind, inputs, args)
        chunk_s, chunk_cpu, chunk_l, chunk_g = time_case("chunked", kind, inputs, args)
        naive_mem = memory_in_subprocess("naive", kind, args)["extra_bytes"]
        chunk_mem = memory_in_subprocess("chunked", kind, args)["extra_bytes"]
        time_ratio = ratios[kind] = chunk_s / naive_s
        mem_ratio = chunk_mem / ce_mem["extra_bytes"]
        met = time_ratio <= TIME_TARGET and mem_ratio <= MEMORY_TARGET
        all_met &= met
        print(f"{kind:<6} {naive_s * 1e3:9.1f} {chunk_s * 1e3:9.1f} {time_ratio:7.2f} {chunk_cpu / naive_cpu:6.2f} "
              f"{naive_mem / mib:10.1f} {chunk_mem / mib:10.1f} {mem_ratio:7.2f} {abs(float(naive_l - chunk_l)):9.2e} "
              f"{float((naive_g - chunk_g).abs().max()):9.2e}  {'met' if met else 'MISSED'}", flush=True)
        del naive_g, chunk_g
    if args.compare_wait_policy:
        other = "ACTIVE" if policy == "PASSIVE" else "PASSIVE"
        others = times_under_policy(other, args)
        print(f"time x under OMP_WAIT_POLICY={policy} (above) and {other} (a subprocess, same inputs):")
        for kind in args.kinds:
            print(f"  {kind:<6} {policy}: {ratios[kind]:5.2f}   {other}: {others[kind]:5.2f}")
    print("time x = chunked/naive mean wall time, cpu x = the same for process CPU time; mem/CE = chunked peak extra /"
          " cross_entropy peak extra; |dloss|, |dgrad| = max abs difference chunked vs naive")
    print(f"targets (time x <= {TIME_TARGET}, mem/CE <= {MEMORY_TARGET}): {'all met' if all_met else 'NOT all met'}")
    return 1 if (args.strict and not all_met) else 0


if __name__ == "__main__":
    sys.exit(main())
