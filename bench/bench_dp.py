"""DP-SGD on the hospitals demo: what it costs per step, and what it does to the model.

Two parts, both on all-MiniLM-L6-v2 + LoRA r=8 (the demo model), batch 32, max_length 32, on
``--device`` (``auto``: CUDA when this machine has it, else the CPU; default ``cpu``):

* ``steps``: cost of a DP-SGD step (Opacus hooks, Poisson sampling, clipping, noise) over a
  non-private step, with 1 and 2 torch threads. Per-step figures come from the difference between
  a ``--steps`` call and a 1-step call, so fixed per-call work (tokenising, Opacus wrapping) drops
  out. On the CPU the primary figure is process CPU time (a shared machine's wall time follows
  other people's load); wall time inside the training loop is reported too. On CUDA process CPU
  time says nothing about the GPU's work, so the primary figure is wall time with
  ``torch.cuda.synchronize()`` before every clock read. Plain and DP calls alternate on the same
  model; figures are medians of the paired ratios. The Opacus wrapping done once per call (per
  round) is reported apart, and so are the devices of the LoRA tensors and how far one DP call
  moved them.
* ``federated``: an in-process federation of the ``hospitals`` scenario (3 sites) doing exactly
  what the real one does each round -- every site starts from the global adapter, trains
  ``--local-steps`` steps, and the global adapter moves by sum(n_i * delta_i) / sum(n_i) -- without
  DP and with DP at each ``--epsilons`` value (delta = 1e-5). Under DP every site budgets
  epsilon for the run, calibrates sigma once for all planned steps (``noise_for_run``), checks
  each round (``check_round``), trains (``train_steps_dp``) and charges
  (``AccountantStore.record``), as a site worker does. Also each site alone (same steps, same
  epsilon and sigma) and the centralised non-private model (all sites' records pooled, as many
  steps as the whole federation). Every model is scored on the scenario's global test set.

Usage:
  python bench/bench_dp.py steps [--threads 1 2] [--steps 10] [--repeats 3]
  python bench/bench_dp.py federated [--rounds 5] [--local-steps 10] [--epsilons 1 3 8]
  python bench/bench_dp.py all
Add ``--device cuda`` (or ``auto``) to run on a GPU, ``--json PATH`` to keep the figures;
``--batch`` and ``--max-grad-norm`` change the federated part only.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import platform
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import torch

from fedseal.client.dp.accountant_store import AccountantStore
from fedseal.client.dp.budget import check_round
from fedseal.client.dp.calibration import calibrate_noise, noise_for_run
from fedseal.client.dp.settings import DpSettings
from fedseal.client.dp.trainer import poisson_sample_rate, train_steps_dp
from fedseal.client.training import TrainSettings, evaluate, train_steps
from fedseal.models.adapter import adapter_to_vector, load_vector_into_adapter
from fedseal.models.base_models import DEFAULT_BASE_MODEL, load_tokenizer
from fedseal.models.data import TextExamples, load_federated_dataset
from fedseal.models.lora import LoraSettings, build_lora_classifier, trainable_parameters
from fedseal.privacy.events import DpEvent

SCENARIO = "hospitals"
NUM_SITES = 3
DELTA = 1e-5
BATCH = 32
MAX_LENGTH = 32
MAX_GRAD_NORM = 1.0
MODEL_SEED = 0


def load_average() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}"


def derive_seed(*parts: object) -> int:
    """`fedseal.client.site_service.derive_seed`, copied: that module pulls in the secure stages
    (and their crypto packages), which a benchmark of DP-SGD does not need."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def resolve_device(setting: str) -> str:
    """`auto`: CUDA when this machine has it, else the CPU."""
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if setting == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device here")
    return setting


def device_name(device: str) -> str:
    if device == "cuda":
        return f"cuda ({torch.cuda.get_device_name()}, CUDA {torch.version.cuda})"
    return "cpu"


def synchronize(device: str) -> None:
    """Wait for queued GPU work, so a clock read after it counts that work."""
    if device == "cuda":
        torch.cuda.synchronize()


def adapter_devices(model: torch.nn.Module) -> list[str]:
    return sorted({str(p.device) for _, p in trainable_parameters(model)})


# -- part 1: step time ----------------------------------------------------------------------


@dataclass
class StepTiming:
    device: str
    threads: int
    basis: str  # what the primary figures measure: process CPU time, or synchronised wall time
    plain_s_per_step: float
    dp_s_per_step: float
    ratio: float
    ratios: list[float]
    plain_wall_s_per_step: float  # wall time inside the training loop / steps (secondary)
    dp_wall_s_per_step: float
    wall_ratio: float
    dp_wrap_s: float
    adapter_devices: list[str]
    dp_adapter_change: float  # L2 norm of the adapter's move in one 2-step DP call
    load_before: str
    load_after: str


def _timed_call(fn, device: str) -> tuple[float, float, object]:
    """(process CPU seconds, wall seconds, result) of one call; on CUDA the GPU's queue is
    drained before both clock reads, so the wall time includes the GPU work the call queued."""
    synchronize(device)
    cpu, wall = time.process_time(), time.perf_counter()
    result = fn()
    synchronize(device)
    return time.process_time() - cpu, time.perf_counter() - wall, result


def time_steps(threads: int, steps: int, repeats: int, device: str) -> StepTiming:
    """Per-step cost of plain and DP training.

    The primary figure is (cost of a call of `steps` steps - cost of a 1-step call) / (steps - 1),
    which removes the fixed per-call work (tokenising, Opacus wrapping). On the CPU the cost is the
    process's CPU time (on a shared machine wall time follows everyone else's load); on CUDA it is
    wall time with the GPU synchronised before each clock read.
    """
    torch.set_num_threads(threads)
    data = load_federated_dataset(SCENARIO, NUM_SITES, 0)
    examples = data.sites["hospital_a"].train
    tokenizer = load_tokenizer(DEFAULT_BASE_MODEL)
    model = build_lora_classifier(
        DEFAULT_BASE_MODEL, data.num_labels, LoraSettings(), device, MODEL_SEED
    )
    dp = DpSettings(epsilon=100.0, delta=DELTA, noise_multiplier=1.0, max_grad_norm=MAX_GRAD_NORM)
    load_before = load_average()

    def settings(n: int, seed: int) -> TrainSettings:
        return TrainSettings(
            steps=n, batch_size=BATCH, learning_rate=5e-4, max_length=MAX_LENGTH, seed=seed
        )

    def plain(n: int, seed: int):
        return train_steps(model, tokenizer, examples, settings(n, seed), device)

    def private(n: int, seed: int):
        return train_steps_dp(model, tokenizer, examples, settings(n, seed), dp, 1.0, device)

    plain(2, 0)  # warm-up
    before = adapter_to_vector(model)
    private(2, 0)
    change = float(np.linalg.norm(adapter_to_vector(model) - before))
    devices = adapter_devices(model)
    print(
        f"  threads={threads}: LoRA tensors on {', '.join(devices)}; one 2-step DP call moved "
        f"the adapter by {change:.4f} (L2)",
        flush=True,
    )
    on_gpu = device == "cuda"
    basis = "wall time, CUDA-synchronised" if on_gpu else "process CPU time"
    cost = {"plain": [], "dp": []}
    wall = {"plain": [], "dp": []}
    wraps: list[float] = []
    for repeat in range(repeats):
        order = (("plain", plain), ("dp", private))
        for name, call in order if repeat % 2 == 0 else order[::-1]:
            one_cpu, one_wall, _ = _timed_call(functools.partial(call, 1, repeat), device)
            many_cpu, many_wall, result = _timed_call(
                functools.partial(call, steps, repeat), device
            )
            many, one = (many_wall, one_wall) if on_gpu else (many_cpu, one_cpu)
            cost[name].append((many - one) / (steps - 1))
            wall[name].append(result.seconds / steps)
            if name == "dp":
                wraps.append(many_wall - result.seconds)
        print(
            f"  threads={threads} repeat {repeat}: {basis}: plain {cost['plain'][-1]:.4f} s/step, "
            f"DP {cost['dp'][-1]:.4f} s/step, x{cost['dp'][-1] / cost['plain'][-1]:.2f}; "
            f"loop wall x{wall['dp'][-1] / wall['plain'][-1]:.2f} (load {load_average()})",
            flush=True,
        )
    ratios = [d / p for d, p in zip(cost["dp"], cost["plain"], strict=True)]
    wall_ratios = [d / p for d, p in zip(wall["dp"], wall["plain"], strict=True)]
    return StepTiming(
        device=device_name(device),
        threads=threads,
        basis=basis,
        plain_s_per_step=statistics.median(cost["plain"]),
        dp_s_per_step=statistics.median(cost["dp"]),
        ratio=statistics.median(ratios),
        ratios=ratios,
        plain_wall_s_per_step=statistics.median(wall["plain"]),
        dp_wall_s_per_step=statistics.median(wall["dp"]),
        wall_ratio=statistics.median(wall_ratios),
        dp_wrap_s=statistics.median(wraps),
        adapter_devices=devices,
        dp_adapter_change=change,
        load_before=load_before,
        load_after=load_average(),
    )


# -- part 2: federated simulation -----------------------------------------------------------


@dataclass
class SiteRun:
    site: str
    records: int
    sample_rate: float
    noise_multiplier: float | None
    epsilon_spent: float | None
    declined_rounds: int = 0


@dataclass
class Score:
    setting: str  # "no DP" or "eps=1"
    federated: float
    solo: dict[str, float]
    sites: list[SiteRun] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def best_solo(self) -> float:
        return max(self.solo.values())


class Bench:
    """The model, tokenizer and data, loaded once; runs reset the adapter to the seeded start."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.device = args.device
        self.data = load_federated_dataset(SCENARIO, NUM_SITES, 0)
        self.tokenizer = load_tokenizer(DEFAULT_BASE_MODEL)
        self.model = build_lora_classifier(
            DEFAULT_BASE_MODEL, self.data.num_labels, LoraSettings(), self.device, MODEL_SEED
        )
        self.initial = adapter_to_vector(self.model)
        test = self.data.global_test
        limit = args.eval_limit
        self.test = test if limit <= 0 or limit >= len(test) else test.subset(range(limit))

    def score(self, vector: np.ndarray) -> float:
        load_vector_into_adapter(self.model, vector)
        result = evaluate(self.model, self.tokenizer, self.test, self.device, max_length=MAX_LENGTH)
        return float(result.accuracy)

    def settings(self, steps: int, lr: float, *seed: object) -> TrainSettings:
        return TrainSettings(
            steps=steps,
            batch_size=self.args.batch,
            learning_rate=lr,
            max_length=MAX_LENGTH,
            seed=derive_seed("bench-dp", *seed),
        )

    def train(
        self,
        examples: TextExamples,
        settings: TrainSettings,
        dp: DpSettings | None,
        sigma: float | None,
    ) -> DpEvent | None:
        if dp is None or sigma is None:
            train_steps(self.model, self.tokenizer, examples, settings, self.device)
            return None
        result = train_steps_dp(
            self.model, self.tokenizer, examples, settings, dp, sigma, self.device
        )
        return result.event

    def federated(self, epsilon: float | None) -> tuple[float, list[SiteRun]]:
        args = self.args
        lr = args.lr if epsilon is None else args.dp_lr
        vector = self.initial.copy()
        runs: dict[str, SiteRun] = {}
        with tempfile.TemporaryDirectory() as state:
            stores = {name: AccountantStore.open(Path(state) / name) for name in self.data.sites}
            for number in range(1, args.rounds + 1):
                weighted = np.zeros_like(vector)
                total = 0
                for name, split in self.data.sites.items():
                    n = len(split.train)
                    q = poisson_sample_rate(args.batch, n)
                    run = runs.setdefault(name, SiteRun(name, n, q, None, None))
                    dp = sigma = None
                    if epsilon is not None:
                        dp = DpSettings(
                            epsilon=epsilon,
                            delta=DELTA,
                            target_epsilon=epsilon,
                            max_grad_norm=args.max_grad_norm,
                        )
                        sigma = noise_for_run(
                            stores[name],
                            dp,
                            run_id=1,
                            sample_rate=q,
                            steps_per_round=args.local_steps,
                            rounds_remaining=args.rounds,
                        )
                        planned = DpEvent(sigma, q, args.local_steps)
                        decision = check_round(
                            stores[name], planned, dp, run_id=1, round_number=number
                        )
                        if not decision.allowed:
                            run.declined_rounds += 1
                            continue
                    load_vector_into_adapter(self.model, vector)
                    settings = self.settings(args.local_steps, lr, name, number)
                    event = self.train(split.train, settings, dp, sigma)
                    if event is not None:
                        stores[name].record(event, run_id=1, round_number=number)
                        run.noise_multiplier = sigma
                        run.epsilon_spent = stores[name].spent_epsilon(DELTA)
                    weighted += (adapter_to_vector(self.model) - vector) * np.float32(n)
                    total += n
                if total:
                    vector = (vector + weighted / np.float32(total)).astype(np.float32)
                print(f"    round {number} done ({load_average()})", flush=True)
        return self.score(vector), list(runs.values())

    def solo(self, name: str, epsilon: float | None) -> float:
        args = self.args
        examples = self.data.sites[name].train
        steps = args.rounds * args.local_steps
        dp = sigma = None
        if epsilon is not None:
            q = poisson_sample_rate(args.batch, len(examples))
            sigma = calibrate_noise(
                [], target_epsilon=epsilon, delta=DELTA, sample_rate=q, steps=steps
            )
            dp = DpSettings(
                epsilon=epsilon,
                delta=DELTA,
                noise_multiplier=sigma,
                max_grad_norm=args.max_grad_norm,
            )
        lr = args.lr if epsilon is None else args.dp_lr
        load_vector_into_adapter(self.model, self.initial)
        self.train(examples, self.settings(steps, lr, name, "solo"), dp, sigma)
        return self.score(adapter_to_vector(self.model))

    def centralised(self) -> float:
        args = self.args
        pooled = TextExamples.concat([s.train for s in self.data.sites.values()])
        steps = args.rounds * args.local_steps * len(self.data.sites)
        load_vector_into_adapter(self.model, self.initial)
        self.train(pooled, self.settings(steps, args.lr, "centralised"), None, None)
        return self.score(adapter_to_vector(self.model))


def run_federated(args: argparse.Namespace) -> dict[str, object]:
    torch.set_num_threads(args.threads[0])
    bench = Bench(args)
    scores: list[Score] = []
    started_all = time.perf_counter()
    load_before = load_average()
    settings: list[float | None] = [None, *args.epsilons]
    for epsilon in settings:
        label = "no DP" if epsilon is None else f"eps={epsilon:g}"
        print(f"  {label}: federated", flush=True)
        started = time.perf_counter()
        federated, sites = bench.federated(epsilon)
        solo = {}
        for name in bench.data.sites:
            print(f"  {label}: {name} alone", flush=True)
            solo[name] = bench.solo(name, epsilon)
        score = Score(label, federated, solo, sites, time.perf_counter() - started)
        scores.append(score)
        print(
            f"  {label}: federated {federated:.4f}, best solo {score.best_solo:.4f} "
            f"({time.perf_counter() - started:.0f} s)",
            flush=True,
        )
    print("  centralised (no DP)", flush=True)
    centralised = bench.centralised()
    return {
        "device": device_name(args.device),
        "adapter_devices": adapter_devices(bench.model),
        "threads": args.threads[0],
        "batch": args.batch,
        "rounds": args.rounds,
        "local_steps": args.local_steps,
        "lr": args.lr,
        "dp_lr": args.dp_lr,
        "max_grad_norm": args.max_grad_norm,
        "delta": DELTA,
        "test_examples": len(bench.test),
        "test_digest": bench.test.digest(),
        "majority_accuracy": float(
            bench.test.label_counts(bench.data.num_labels).max() / len(bench.test)
        ),
        "scores": [{**asdict(s), "best_solo": s.best_solo} for s in scores],
        "centralised": centralised,
        "seconds": time.perf_counter() - started_all,
        "load_before": load_before,
        "load_after": load_average(),
    }


# -- report ---------------------------------------------------------------------------------


def print_steps(timings: list[StepTiming]) -> None:
    print(
        "\n| device | torch threads | measured | non-private s/step | DP-SGD s/step | "
        "DP / non-private | loop wall s/step, plain / DP | DP / non-private (loop wall) | "
        "Opacus wrap per call |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for t in timings:
        spread = ", ".join(f"{r:.2f}" for r in t.ratios)
        print(
            f"| {t.device} | {t.threads} | {t.basis} | {t.plain_s_per_step:.4f} | "
            f"{t.dp_s_per_step:.4f} | **x{t.ratio:.2f}** ({spread}) | "
            f"{t.plain_wall_s_per_step:.4f} / {t.dp_wall_s_per_step:.4f} | x{t.wall_ratio:.2f} | "
            f"{t.dp_wrap_s:.2f} s |"
        )


def print_federated(result: dict[str, object]) -> None:
    scores = result["scores"]
    assert isinstance(scores, list)
    print(
        f"\n{result['device']}: {result['rounds']} rounds x {result['local_steps']} local steps "
        f"of batch {result['batch']}, "
        f"lr {result['lr']} (DP {result['dp_lr']}, max_grad_norm {result['max_grad_norm']}), "
        f"{result['test_examples']} global test records (digest {result['test_digest'][:12]}, "
        f"majority class {result['majority_accuracy']:.3f}), {result['seconds']:.0f} s"
    )
    print(
        "\n| setting | federated | best single site | each site alone | sigma per site | "
        "epsilon spent per site |"
    )
    print("|---|---|---|---|---|---|")
    for s in scores:
        solo = ", ".join(f"{k[-1]} {v:.3f}" for k, v in s["solo"].items())
        sigma = (
            ", ".join(
                f"{x['site'][-1]} {x['noise_multiplier']:.2f}"
                for x in s["sites"]
                if x["noise_multiplier"] is not None
            )
            or "-"
        )
        spent = (
            ", ".join(
                f"{x['site'][-1]} {x['epsilon_spent']:.3f}"
                for x in s["sites"]
                if x["epsilon_spent"] is not None
            )
            or "-"
        )
        print(
            f"| {s['setting']} | **{s['federated']:.3f}** | {s['best_solo']:.3f} | {solo} | "
            f"{sigma} | {spent} |"
        )
    print(f"| centralised, no DP | {result['centralised']:.3f} | | | | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("part", choices=("steps", "federated", "all"))
    parser.add_argument("--threads", type=int, nargs="+", default=None)
    parser.add_argument("--steps", type=int, default=10, help="steps per timed call (part 1)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--local-steps", type=int, default=10)
    parser.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 3.0, 8.0])
    parser.add_argument("--lr", type=float, default=5e-3, help="non-private learning rate")
    parser.add_argument("--dp-lr", type=float, default=2e-3, help="DP-SGD learning rate")
    parser.add_argument(
        "--batch", type=int, default=BATCH, help="(expected) batch size (federated part)"
    )
    parser.add_argument(
        "--max-grad-norm", type=float, default=MAX_GRAD_NORM, help="DP-SGD clip (federated part)"
    )
    parser.add_argument("--eval-limit", type=int, default=0, help="0: the whole global test set")
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="cpu",
        help="where to train and evaluate; auto: CUDA when available, else the CPU",
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    args.device = resolve_device(args.device)
    print(
        f"{machine()}; device {device_name(args.device)}; load average {load_average()}",
        flush=True,
    )
    out: dict[str, object] = {"machine": machine(), "device": device_name(args.device)}
    timings: list[StepTiming] = []
    if args.part in ("steps", "all"):
        for threads in args.threads or [1, 2]:
            timings.append(time_steps(threads, args.steps, args.repeats, args.device))
        out["steps"] = [asdict(t) for t in timings]
    federated = None
    if args.part in ("federated", "all"):
        args.threads = args.threads or [1]
        federated = run_federated(args)
        out["federated"] = federated
    if timings:
        print_steps(timings)
    if federated is not None:
        print_federated(federated)
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
