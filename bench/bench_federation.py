"""The demo federation end to end, per aggregation mode: round time and where it went.

Runs `fl-demo` (real SuperLink and SuperNode processes) once per mode with the same seed and
settings, then prints a Markdown section: seconds per round as a ratio to `plain` measured in
the same invocation (this machine is noisy; only same-run ratios mean much), whether every
round's global adapter digest is the same in every mode, and the per-stage breakdown each run
recorded (coordinator wait, sites' work, Flower's delivery). The demo scores the global test
set in its closing comparison, which `--no-baseline` leaves out.

The first round of a run also caches each site's frozen-model features (the same work in every
mode), so the table gives the ratio over all rounds and over rounds 2 onwards.

    python bench/bench_federation.py                           # hospitals, plain and he+ss
    python bench/bench_federation.py --modes plain he+ss he+ss@5   # and key batches of 5 rounds
    python bench/bench_federation.py --sites 10 --steps 5 --no-dp --no-baseline
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FL_DEMO = str(Path(sys.executable).with_name("fl-demo"))


def run_mode(spec: str, args: argparse.Namespace, workdir: Path) -> dict:
    """One fl-demo run; `spec` is a mode, or `he+ss@K` for he+ss with key batches of K rounds."""
    mode, _, key_rounds = spec.partition("@")
    command = [FL_DEMO, "--mode", mode, "--scenario", args.scenario, "--seed", str(args.seed)]
    if key_rounds:
        command += ["--key-rounds", key_rounds]
    for flag in ("sites", "rounds", "steps", "clip"):
        if getattr(args, flag) is not None:
            command += [f"--{flag}", str(getattr(args, flag))]
    if args.no_baseline:
        command.append("--no-baseline")
    if args.no_dp:
        command.append("--no-dp")
    command += ["--workdir", str(workdir)]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.monotonic() - started
    print(done.stdout, file=sys.stderr)
    if done.returncode != 0:
        raise SystemExit(f"fl-demo --mode {spec} failed:\n{done.stderr[-2000:]}")
    summary = json.loads((workdir / "summary.json").read_text())
    summary["wall_s"] = wall
    summary["command"] = " ".join(["fl-demo", *command[1:-2]])
    return summary


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _stage_means(summary: dict) -> dict[str, dict[str, float]]:
    """Per stage, the mean over rounds 2.. (or all rounds if there is one) of each figure."""
    rounds = summary.get("stages") or []
    steady = rounds[1:] or rounds
    table: dict[str, dict[str, list[float]]] = {}
    for entry in steady:
        for stage in entry["stages"]:
            row = table.setdefault(stage["stage"], {"wait_s": [], "work_s": [], "flower_s": []})
            for key in row:
                row[key].append(float(stage[key]))
    return {stage: {k: _mean(v) for k, v in row.items()} for stage, row in table.items()}


def _adapter(summary: dict) -> dict[str, np.ndarray]:
    """The run's exported global adapter (PEFT safetensors), tensor by tensor."""
    from safetensors.numpy import load_file

    return load_file(str(Path(summary["export"]) / "adapter_model.safetensors"))


def _adapter_differences(results: dict[str, dict]) -> str:
    """How far each mode's final global adapter is from plain's, against its largest value.

    With `--no-dp` every site trains the same in every mode, so what is left is the fixed-point
    encoding of the encrypted modes (stochastic rounding at the plan's scale, exact sum)."""
    plain = results["plain"]["adapter"]
    lines = ["", "Final global adapter against plain's (largest difference, largest value):"]
    for mode, summary in results.items():
        if mode == "plain" or "adapter" not in summary:
            continue
        other = summary["adapter"]
        diff = max(float(np.max(np.abs(other[k] - plain[k]))) for k in plain)
        peak = max(float(np.max(np.abs(plain[k]))) for k in plain)
        lines.append(f"- {mode}: {diff:.3g} against {peak:.3g} ({diff / peak:.2g} relative)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", nargs="+", default=["plain", "he+ss"])
    parser.add_argument("--scenario", default="hospitals")
    parser.add_argument("--sites", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None, help="default: fl-demo's")
    parser.add_argument("--steps", type=int, default=None, help="default: fl-demo's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clip", type=float, default=None, help="default: fl-demo's")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--no-dp", action="store_true")
    args = parser.parse_args()

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.modes:
            results[mode] = run_mode(
                mode, args, Path(tmp) / mode.replace("+", "-").replace("@", "-k")
            )
            if results[mode].get("export"):  # read before the run's folder goes
                results[mode]["adapter"] = _adapter(results[mode])

    base = results.get("plain")
    first = next(iter(results.values()))
    print(
        f"### Demo federation: {args.scenario}, {len(first['sites'])} sites, "
        f"{len(first['rounds'])} rounds (`{first['command']}`)\n"
    )
    print("| mode | s/round (all) | vs plain | s/round (2..) | vs plain | wall s |")
    print("|---|---|---|---|---|---|")
    for mode, summary in results.items():
        rounds = summary["rounds"]
        every = _mean([r["seconds"] for r in rounds])
        steady = _mean([r["seconds"] for r in rounds[1:]])
        base_every = _mean([r["seconds"] for r in base["rounds"]]) if base else float("nan")
        base_steady = _mean([r["seconds"] for r in base["rounds"][1:]]) if base else float("nan")
        print(
            f"| {mode} | {every:.1f} | "
            f"{every / base_every:.2f}x | {steady:.1f} | {steady / base_steady:.2f}x | "
            f"{summary['wall_s']:.0f} |"
        )
    digests = {mode: [r["global_digest"] for r in s["rounds"]] for mode, s in results.items()}
    same = len({tuple(d) for d in digests.values()}) == 1
    print(
        f"\nGlobal adapter digests per round {'identical in every mode' if same else 'DIFFER'}: "
        + "; ".join(f"{m}: {', '.join(d[:12] for d in ds)}" for m, ds in digests.items())
    )
    if base and "adapter" in base and not same:
        print(_adapter_differences(results))
    print("\nPer stage, mean over rounds 2.. (s): coordinator wait / sites' work / Flower\n")
    print("| mode | " + " | ".join(["stage", "wait", "sites", "Flower"]) + " |")
    print("|---|---|---|---|---|")
    for mode, summary in results.items():
        for stage, row in _stage_means(summary).items():
            print(
                f"| {mode} | {stage} | {row['wait_s']:.2f} | {row['work_s']:.2f} | "
                f"{row['flower_s']:.2f} |"
            )


if __name__ == "__main__":
    main()
