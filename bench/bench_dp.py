"""DP-SGD on the hospitals demo: what it costs per step, and what it does to the model.

Two parts, both on all-MiniLM-L6-v2 + LoRA r=8 (the demo model), batch 32, max_length 32:

* ``steps``: cost of a DP-SGD step (Opacus hooks, Poisson sampling, clipping, noise) over a
  non-private step, with 1 and 2 torch threads. The primary figure is process CPU time per step
  (a shared machine's wall time follows other people's load), from the difference between a
  ``--steps`` call and a 1-step call, so fixed per-call work drops out; wall time is reported too.
  Plain and DP calls alternate on the same model; figures are medians of the paired ratios. The
  Opacus wrapping done once per call (per round) is reported apart.
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
Add ``--json PATH`` to keep the figures.
"""

from __future__ import annotations

import argparse
import functools
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
from fedseal.client.dp.events import DpEvent
from fedseal.client.dp.settings import DpSettings
from fedseal.client.dp.trainer import poisson_sample_rate, train_steps_dp
from fedseal.client.site_service import derive_seed
from fedseal.client.training import TrainSettings, evaluate, train_steps
from fedseal.models.adapter import adapter_to_vector, load_vector_into_adapter
from fedseal.models.base_models import DEFAULT_BASE_MODEL, load_tokenizer
from fedseal.models.data import TextExamples, load_federated_dataset
from fedseal.models.lora import LoraSettings, build_lora_classifier

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


# -- part 1: step time ----------------------------------------------------------------------


@dataclass
class StepTiming:
    threads: int
    plain_cpu_s_per_step: float
    dp_cpu_s_per_step: float
    cpu_ratio: float
    cpu_ratios: list[float]
    plain_wall_s_per_step: float
    dp_wall_s_per_step: float
    wall_ratio: float
    dp_wrap_s: float
    load_before: str
    load_after: str


def _cpu_call(fn) -> tuple[float, float, object]:
    """(process CPU seconds, wall seconds, result) of one call."""
    cpu, wall = time.process_time(), time.perf_counter()
    result = fn()
    return time.process_time() - cpu, time.perf_counter() - wall, result


def time_steps(threads: int, steps: int, repeats: int) -> StepTiming:
    """Per-step cost of plain and DP training, as CPU time and wall time.

    On a shared machine wall time follows everyone else's load, so the primary figure is the
    process's CPU time per step: (CPU of a call of `steps` steps - CPU of a 1-step call) /
    (steps - 1), which also removes the fixed per-call work (tokenising, Opacus wrapping).
    """
    torch.set_num_threads(threads)
    data = load_federated_dataset(SCENARIO, NUM_SITES, 0)
    examples = data.sites["hospital_a"].train
    tokenizer = load_tokenizer(DEFAULT_BASE_MODEL)
    model = build_lora_classifier(
        DEFAULT_BASE_MODEL, data.num_labels, LoraSettings(), "cpu", MODEL_SEED
    )
    dp = DpSettings(epsilon=100.0, delta=DELTA, noise_multiplier=1.0, max_grad_norm=MAX_GRAD_NORM)
    load_before = load_average()

    def settings(n: int, seed: int) -> TrainSettings:
        return TrainSettings(
            steps=n, batch_size=BATCH, learning_rate=5e-4, max_length=MAX_LENGTH, seed=seed
        )

    def plain(n: int, seed: int):
        return train_steps(model, tokenizer, examples, settings(n, seed), "cpu")

    def private(n: int, seed: int):
        return train_steps_dp(model, tokenizer, examples, settings(n, seed), dp, 1.0, "cpu")

    plain(2, 0)  # warm-up
    private(2, 0)
    cpu = {"plain": [], "dp": []}
    wall = {"plain": [], "dp": []}
    wraps: list[float] = []
    for repeat in range(repeats):
        order = (("plain", plain), ("dp", private))
        for name, call in order if repeat % 2 == 0 else order[::-1]:
            one_cpu, _, _ = _cpu_call(functools.partial(call, 1, repeat))
            many_cpu, many_wall, result = _cpu_call(functools.partial(call, steps, repeat))
            cpu[name].append((many_cpu - one_cpu) / (steps - 1))
            wall[name].append(result.seconds / steps)
            if name == "dp":
                wraps.append(many_wall - result.seconds)
        print(
            f"  threads={threads} repeat {repeat}: CPU plain {cpu['plain'][-1]:.3f} s/step, "
            f"DP {cpu['dp'][-1]:.3f} s/step, x{cpu['dp'][-1] / cpu['plain'][-1]:.2f}; "
            f"wall x{wall['dp'][-1] / wall['plain'][-1]:.2f} (load {load_average()})",
            flush=True,
        )
    ratios = [d / p for d, p in zip(cpu["dp"], cpu["plain"], strict=True)]
    wall_ratios = [d / p for d, p in zip(wall["dp"], wall["plain"], strict=True)]
    return StepTiming(
        threads=threads,
        plain_cpu_s_per_step=statistics.median(cpu["plain"]),
        dp_cpu_s_per_step=statistics.median(cpu["dp"]),
        cpu_ratio=statistics.median(ratios),
        cpu_ratios=ratios,
        plain_wall_s_per_step=statistics.median(wall["plain"]),
        dp_wall_s_per_step=statistics.median(wall["dp"]),
        wall_ratio=statistics.median(wall_ratios),
        dp_wrap_s=statistics.median(wraps),
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
        self.data = load_federated_dataset(SCENARIO, NUM_SITES, 0)
        self.tokenizer = load_tokenizer(DEFAULT_BASE_MODEL)
        self.model = build_lora_classifier(
            DEFAULT_BASE_MODEL, self.data.num_labels, LoraSettings(), "cpu", MODEL_SEED
        )
        self.initial = adapter_to_vector(self.model)
        test = self.data.global_test
        limit = args.eval_limit
        self.test = test if limit <= 0 or limit >= len(test) else test.subset(range(limit))

    def score(self, vector: np.ndarray) -> float:
        load_vector_into_adapter(self.model, vector)
        result = evaluate(self.model, self.tokenizer, self.test, "cpu", max_length=MAX_LENGTH)
        return float(result.accuracy)

    def settings(self, steps: int, lr: float, *seed: object) -> TrainSettings:
        return TrainSettings(
            steps=steps,
            batch_size=BATCH,
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
            train_steps(self.model, self.tokenizer, examples, settings, "cpu")
            return None
        result = train_steps_dp(self.model, self.tokenizer, examples, settings, dp, sigma, "cpu")
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
                    q = poisson_sample_rate(BATCH, n)
                    run = runs.setdefault(name, SiteRun(name, n, q, None, None))
                    dp = sigma = None
                    if epsilon is not None:
                        dp = DpSettings(
                            epsilon=epsilon,
                            delta=DELTA,
                            target_epsilon=epsilon,
                            max_grad_norm=MAX_GRAD_NORM,
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
            q = poisson_sample_rate(BATCH, len(examples))
            sigma = calibrate_noise(
                [], target_epsilon=epsilon, delta=DELTA, sample_rate=q, steps=steps
            )
            dp = DpSettings(
                epsilon=epsilon, delta=DELTA, noise_multiplier=sigma, max_grad_norm=MAX_GRAD_NORM
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
        "rounds": args.rounds,
        "local_steps": args.local_steps,
        "lr": args.lr,
        "dp_lr": args.dp_lr,
        "test_examples": len(bench.test),
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
        "\n| torch threads | non-private CPU s/step | DP-SGD CPU s/step | DP / non-private (CPU) "
        "| wall s/step, plain / DP | DP / non-private (wall) | Opacus wrap per call |"
    )
    print("|---|---|---|---|---|---|---|")
    for t in timings:
        spread = ", ".join(f"{r:.2f}" for r in t.cpu_ratios)
        print(
            f"| {t.threads} | {t.plain_cpu_s_per_step:.3f} | {t.dp_cpu_s_per_step:.3f} | "
            f"**x{t.cpu_ratio:.2f}** ({spread}) | {t.plain_wall_s_per_step:.2f} / "
            f"{t.dp_wall_s_per_step:.2f} | x{t.wall_ratio:.2f} | {t.dp_wrap_s:.2f} s |"
        )


def print_federated(result: dict[str, object]) -> None:
    scores = result["scores"]
    assert isinstance(scores, list)
    print(
        f"\n{result['rounds']} rounds x {result['local_steps']} local steps, lr {result['lr']} "
        f"(DP {result['dp_lr']}), {result['test_examples']} global test records "
        f"(majority class {result['majority_accuracy']:.3f}), {result['seconds']:.0f} s"
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
    parser.add_argument("--eval-limit", type=int, default=0, help="0: the whole global test set")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    print(f"{machine()}; load average {load_average()}", flush=True)
    out: dict[str, object] = {"machine": machine()}
    timings: list[StepTiming] = []
    if args.part in ("steps", "all"):
        for threads in args.threads or [1, 2]:
            timings.append(time_steps(threads, args.steps, args.repeats))
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
