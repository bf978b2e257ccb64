"""The demo federation end to end, per aggregation mode: score, solo baselines and round time.

Runs `fl-demo` (real SuperLink and SuperNode processes) once per mode with the same seed and
settings, then prints a Markdown section: the federated model's global-test score after each round,
each site's model trained alone for the same number of steps, and seconds per round as a ratio to
`plain` measured in the same invocation (this machine is noisy; only same-run ratios mean much).

    python bench/bench_federation.py                      # hospitals, modes plain and he+ss
    python bench/bench_federation.py --modes he+ss --rounds 3 --steps 30
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FL_DEMO = str(Path(sys.executable).with_name("fl-demo"))


def run_mode(mode: str, args: argparse.Namespace, workdir: Path) -> dict:
    command = [
        FL_DEMO,
        "--mode",
        mode,
        "--scenario",
        args.scenario,
        "--rounds",
        str(args.rounds),
        "--steps",
        str(args.steps),
        "--workdir",
        str(workdir),
    ]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.monotonic() - started
    print(done.stdout, file=sys.stderr)
    if done.returncode != 0:
        raise SystemExit(f"fl-demo --mode {mode} failed:\n{done.stderr[-2000:]}")
    summary = json.loads((workdir / "summary.json").read_text())
    summary["wall_s"] = wall
    summary["command"] = " ".join(["fl-demo", *command[1:-2]])
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", nargs="+", default=["plain", "he+ss"])
    parser.add_argument("--scenario", default="hospitals")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.modes:
            results[mode] = run_mode(mode, args, Path(tmp) / mode.replace("+", "-"))

    base = results.get("plain")
    print(f"### Demo federation: {args.scenario}, {args.rounds} rounds x {args.steps} steps\n")
    print(
        "| mode | global score per round | final | best site alone | s/round | vs plain | wall s |"
    )
    print("|---|---|---|---|---|---|---|")
    for mode, summary in results.items():
        rounds = summary["rounds"]
        metric = summary.get("comparison", {}).get("metric", "accuracy")
        key = "global_auc" if metric == "auc" else "global_accuracy"
        scores = [r[key] for r in rounds if r[key] is not None]
        per_round = sum(r["seconds"] for r in rounds) / len(rounds)
        solo = summary.get("comparison", {}).get("solo", {})
        best_solo = max((s[metric] or 0.0) for s in solo.values()) if solo else float("nan")
        ratio = (
            per_round / (sum(r["seconds"] for r in base["rounds"]) / len(base["rounds"]))
            if base
            else float("nan")
        )
        print(
            f"| {mode} | {', '.join(f'{s:.3f}' for s in scores)} | {scores[-1]:.3f} | "
            f"{best_solo:.3f} | {per_round:.1f} | {ratio:.2f}x | {summary['wall_s']:.0f} |"
        )
    print()
    for summary in results.values():
        solo = summary.get("comparison", {}).get("solo", {})
        metric = summary.get("comparison", {}).get("metric", "accuracy")
        sites = ", ".join(f"{site} {score[metric]:.3f}" for site, score in solo.items())
        print(f"- `{summary['command']}`: sites alone: {sites}")


if __name__ == "__main__":
    main()
