"""Scale of `he+ss`: per-site and coordinator cost per round as the federation grows.

Part 1 (``protocol``) runs whole rounds of the protocol layer (`fedseal.secure_agg.recipe`) in one
process for n = 10, 25, 50, 100 sites, with real TenSEAL ciphertexts of the demo adapter's size,
all pairs and, where the planner picks one, the SecAgg+ neighbour graph. Per round it reports
each site's time (median) and bytes sent / received, the coordinator's time and bytes, and the
coordinator's memory (tracemalloc peak and what it keeps, in a second pass over the same
messages so tracing does not distort the timings), each as a ratio to a plaintext FedAvg of the
same updates measured in the same run, and the log-log growth exponent of every metric. The
coordinator's time is given as wall clock and as CPU time of the process (the machine may be
shared: CPU time does not count the time other processes hold the cores).

Part 2 (``processes``) runs `fl-demo` with real SuperLink and SuperNode processes for the given
number of sites in `he+ss` and in `plain`, and reports seconds per round and their ratio.

Part 3 (``coordinator``) runs the upload stage of the running coordinator (`SecureAggregation`
and `fedseal.coordinator.messaging`, real sites' replies through an in-process stand-in grid)
and reports the Python heap it adds over the stage, with replies summed as they arrive and with
every reply pulled at once (what Flower's `Grid.send_and_receive` does).

    python bench/bench_scale.py protocol                    # n = 10 25 50 100
    python bench/bench_scale.py protocol --sites 10 --dense-only
    python bench/bench_scale.py protocol --sites 100 --graph-only  # the n = 100 graph round only
    python bench/bench_scale.py processes --sites 10 --rounds 2 --steps 2
    python bench/bench_scale.py coordinator                 # n = 10 25 50 100

Bytes are the protocol messages' wire bytes (`Signed.to_bytes`, the aggregate, the survivor list),
without Flower's framing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedseal.secure_agg import keys, recipe
from fedseal.secure_agg.bfv import make_secret_context
from fedseal.secure_agg.messages import AggregateMessage, Signed
from fedseal.secure_agg.params import ProtocolParams, plan

#: all-MiniLM-L6-v2 + LoRA r=8 on query/value (6 layers x 2 x 2 x 8 x 384) + the 22-class head
DEMO_ADAPTER_PARAMS = 6 * 2 * 2 * 8 * 384 + 384 * 22 + 22


def _rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@dataclass
class Federation:
    """Sites' keys and ciphers and the coordinator's parameters-only context (made once)."""

    ids: list[str]
    params: ProtocolParams
    identities: dict[str, recipe.SiteIdentity]
    directory: dict[str, bytes]
    ciphers: dict[str, object]
    context: object

    @classmethod
    def make(cls, n: int, length: int, **plan_kwargs) -> Federation:
        ids = [f"site-{i:03d}" for i in range(n)]
        identities = {
            s: recipe.SiteIdentity(s, keys.generate_identity_key(os.urandom)) for s in ids
        }
        directory = {s: keys.public_bytes(i.identity_key) for s, i in identities.items()}
        sealing = {s: keys.generate_agreement_key(os.urandom) for s in ids}
        params = plan(vector_length=length, clip=0.5, max_weight=3000, n_sites=n, **plan_kwargs)
        secret = make_secret_context(params.bfv)
        custodian = identities[ids[0]]
        sealed = recipe.custodian_seal_federation_key(
            secret,
            custodian=custodian,
            run_id="bench",
            recipients={s: keys.public_bytes(sealing[s]) for s in ids},
            randbytes=os.urandom,
        )
        ciphers = {
            s: recipe.site_open_federation_key(
                sealed[s],
                site_id=s,
                sealing_key=sealing[s],
                custodian_id=ids[0],
                directory=directory,
                run_id="bench",
                params=params.bfv,
            )
            for s in ids
        }
        context = recipe.aggregator_load_context(
            recipe.custodian_public_context(secret, custodian=custodian, run_id="bench"),
            custodian_id=ids[0],
            directory=directory,
            run_id="bench",
            params=params.bfv,
        )
        return cls(ids, params, identities, directory, ciphers, context)


@dataclass
class RoundCost:
    site_s: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    site_sent: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    site_received: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    coordinator_s: float = 0.0
    coordinator_cpu_s: float = 0.0
    coordinator_peak_mib: float = 0.0
    coordinator_kept_mib: float = 0.0
    keys_and_shares_mib: float = 0.0
    rss_growth_mib: float = 0.0


def _timed(cost: dict[str, float], site: str, fn: Callable, *args, **kwargs):
    started = time.perf_counter()
    out = fn(*args, **kwargs)
    cost[site] += time.perf_counter() - started
    return out


@contextmanager
def _coordinator_clock(cost: RoundCost) -> Iterator[None]:
    """Add the wall-clock and CPU seconds of the block to the coordinator's."""
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    cost.coordinator_s += time.perf_counter() - wall
    cost.coordinator_cpu_s += time.process_time() - cpu


def _size(messages) -> int:
    return sum(len(m.to_bytes()) for m in messages)


def secure_round(fed: Federation, updates: dict[str, np.ndarray], dropped: set[str]) -> RoundCost:
    """One he+ss round; `dropped` sites leave after sharing their keys (the costliest dropout)."""
    info = recipe.RoundInfo("bench", 1, fed.params, tuple(fed.ids))
    cost = RoundCost()
    d = fed.directory
    states, adverts = {}, []
    for s in fed.ids:
        states[s], message = _timed(
            cost.site_s, s, recipe.site_advertise, info, fed.identities[s], randbytes=os.urandom
        )
        cost.site_sent[s] += len(message.to_bytes())
        adverts.append(message)
    bundles = {}
    with _coordinator_clock(cost):
        accepted, _ = recipe.collect_adverts(info, adverts, directory=d)
    for s in fed.ids:
        relayed = recipe.adverts_for(info, accepted, s)
        cost.site_received[s] += _size(relayed)
        bundles[s] = _timed(
            cost.site_s,
            s,
            recipe.site_share_keys,
            states[s],
            relayed,
            directory=d,
            randbytes=os.urandom,
        )
        cost.site_sent[s] += _size(bundles[s])
    with _coordinator_clock(cost):
        book = recipe.collect_envelopes(info, bundles, adverts=accepted, directory=d)
    uploads = []
    for s in fed.ids:
        envelopes = book.for_recipient(s)
        cost.site_received[s] += _size(envelopes)
        prepared = _timed(
            cost.site_s,
            s,
            recipe.site_prepare_upload,
            info,
            fed.identities[s],
            updates[s],
            weight=1000,
            randbytes=os.urandom,
            cipher=fed.ciphers[s],
            secagg=states[s],
            envelopes=envelopes,
            directory=d,
        )
        if s not in dropped:
            wire = prepared.message.to_bytes()
            cost.site_sent[s] += len(wire)
            uploads.append(wire)
    survivors = [s for s in fed.ids if s not in dropped]
    acks = []
    for s in survivors:
        cost.site_received[s] += len(json.dumps(survivors))
        ack = _timed(cost.site_s, s, recipe.site_consistency, states[s], survivors)
        cost.site_sent[s] += len(ack.to_bytes())
        acks.append(ack)
    releases = []
    for s in survivors:
        cost.site_received[s] += _size(acks)
        release = _timed(cost.site_s, s, recipe.site_release_shares, states[s], acks, directory=d)
        cost.site_sent[s] += len(release.to_bytes())
        releases.append(release)

    def coordinator() -> bytes:
        total = recipe.UploadSum(info, directory=d, context=fed.context, expected=book.senders)
        for wire in uploads:
            total.add(Signed.from_bytes(wire))
        confirmed, _ = recipe.collect_acks(info, acks, survivors=survivors, directory=d)
        aggregate, _ = recipe.aggregator_unmask(
            info, total, book=book, acks=confirmed, releases=releases, directory=d
        )
        return aggregate.to_bytes()

    with _coordinator_clock(cost):
        payload = coordinator()
    for s in survivors:
        cost.site_received[s] += len(payload)
        _timed(
            cost.site_s,
            s,
            recipe.site_decrypt_aggregate,
            info,
            AggregateMessage.from_bytes(payload),
            cipher=fed.ciphers[s],
        )
    # memory: the coordinator's stages again over the same messages, traced
    rss_before = _rss_mib()
    tracemalloc.start()
    accepted, _ = recipe.collect_adverts(info, adverts, directory=d)
    book = recipe.collect_envelopes(info, bundles, adverts=accepted, directory=d)
    payload = coordinator()
    kept, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    cost.rss_growth_mib = _rss_mib() - rss_before
    cost.coordinator_peak_mib = peak / 2**20
    cost.coordinator_kept_mib = kept / 2**20
    shares = sum(_size(b) for b in bundles.values()) + _size(releases)
    cost.keys_and_shares_mib = (_size(adverts) + shares + _size(acks)) / 2**20
    return cost


def plaintext_round(ids: list[str], updates: dict[str, np.ndarray]) -> RoundCost:
    """FedAvg in the clear: float32 up, float32 mean down, a float64 accumulator."""
    cost = RoundCost()
    wires = {}
    for s in ids:
        wires[s] = _timed(cost.site_s, s, lambda u: u.astype(np.float32).tobytes(), updates[s])
        cost.site_sent[s] = len(wires[s])
    tracemalloc.start()
    with _coordinator_clock(cost):
        acc = np.zeros(len(updates[ids[0]]), dtype=np.float64)
        for s in ids:
            acc += np.frombuffer(wires[s], dtype=np.float32)
        mean = (acc / len(ids)).astype(np.float32).tobytes()
    kept, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    cost.coordinator_peak_mib, cost.coordinator_kept_mib = peak / 2**20, kept / 2**20
    for s in ids:
        cost.site_received[s] = len(mean)
        _timed(cost.site_s, s, lambda b: np.frombuffer(b, dtype=np.float32).copy(), mean)
    return cost


def summarise(cost: RoundCost) -> dict[str, float]:
    sites = list(cost.site_sent)
    return {
        "site_s": statistics.median(cost.site_s[s] for s in sites),
        "site_sent_kb": statistics.median(cost.site_sent[s] for s in sites) / 1e3,
        "site_received_kb": statistics.median(cost.site_received[s] for s in sites) / 1e3,
        "coord_s": cost.coordinator_s,
        "coord_cpu_s": cost.coordinator_cpu_s,
        "coord_received_mb": sum(cost.site_sent.values()) / 1e6,
        "coord_sent_mb": sum(cost.site_received.values()) / 1e6,
        "coord_peak_mib": cost.coordinator_peak_mib,
        "coord_kept_mib": cost.coordinator_kept_mib,
        "keys_shares_mib": cost.keys_and_shares_mib,
        "rss_growth_mib": cost.rss_growth_mib,
    }


METRICS = (
    ("site_s", "site s", "{:.3f}"),
    ("site_sent_kb", "site sent kB", "{:.1f}"),
    ("site_received_kb", "site recv kB", "{:.1f}"),
    ("coord_s", "coord s", "{:.2f}"),
    ("coord_cpu_s", "coord CPU s", "{:.2f}"),
    ("coord_received_mb", "coord recv MB", "{:.2f}"),
    ("coord_sent_mb", "coord sent MB", "{:.2f}"),
    ("coord_peak_mib", "coord peak MiB", "{:.2f}"),
    ("keys_shares_mib", "keys+shares MiB", "{:.2f}"),
)


def slope(ns: list[int], values: list[float]) -> float:
    """Growth exponent: least-squares slope of log(value) against log(n)."""
    if len(ns) < 2 or min(values) <= 0:
        return float("nan")
    return float(np.polyfit(np.log(ns), np.log(values), 1)[0])


def protocol(args: argparse.Namespace) -> None:
    rows: dict[str, dict[int, dict[str, float]]] = defaultdict(dict)
    degrees: dict[int, tuple[int, int]] = {}
    gen = np.random.default_rng(0)  # benchmark data only, never secret
    for n in args.sites:
        updates = {f"site-{i:03d}": gen.normal(0, 0.05, args.params) for i in range(n)}
        dropped = {f"site-{i:03d}" for i in range(0, n, max(1, round(1 / args.drop)))}
        base = plaintext_round(sorted(updates), updates)
        rows["plaintext FedAvg"][n] = summarise(base)
        variants = [] if args.graph_only else [("he+ss all pairs", {"sparse_above": n})]
        if not args.dense_only:
            variants.append(("he+ss neighbour graph", {"sparse_above": 0}))
        for name, kwargs in variants:
            fed = Federation.make(n, args.params, **kwargs)
            if name.endswith("graph"):
                if not fed.params.neighbours:
                    print(f"n={n}: the planner keeps all pairs", file=sys.stderr)
                    continue
                degrees[n] = (fed.params.neighbours, fed.params.neighbour_threshold)
            started = time.monotonic()
            rows[name][n] = summarise(secure_round(fed, updates, dropped))
            print(f"n={n} {name}: {time.monotonic() - started:.1f} s", file=sys.stderr)
    print(
        f"\nadapter {args.params:,} parameters; {args.drop:.0%} of the sites drop after sharing "
        f"their keys; neighbour graph (degree, threshold) by n: {degrees}\n"
    )
    print("| variant | n | " + " | ".join(label for _, label, _ in METRICS) + " |")
    print("|---|---|" + "---|" * len(METRICS))
    for name, by_n in rows.items():
        for n, row in by_n.items():
            cells = [fmt.format(row[key]) for key, _, fmt in METRICS]
            print(f"| {name} | {n} | " + " | ".join(cells) + " |")
    print("\nRatio to plaintext FedAvg at the same n:\n")
    print("| variant | n | " + " | ".join(label for _, label, _ in METRICS) + " |")
    print("|---|---|" + "---|" * len(METRICS))
    for name, by_n in rows.items():
        if name == "plaintext FedAvg":
            continue
        for n, row in by_n.items():
            base = rows["plaintext FedAvg"][n]
            cells = [
                f"{row[key] / base[key]:.1f}x" if base[key] > 0 else "-" for key, _, _ in METRICS
            ]
            print(f"| {name} | {n} | " + " | ".join(cells) + " |")
    print("\nGrowth exponent (log-log slope over n):\n")
    print("| variant | " + " | ".join(label for _, label, _ in METRICS) + " |")
    print("|---|" + "---|" * len(METRICS))
    for name, by_n in rows.items():
        ns = sorted(by_n)
        cells = [f"{slope(ns, [by_n[n][key] for n in ns]):.2f}" for key, _, _ in METRICS]
        print(f"| {name} ({ns[0]}..{ns[-1]}) | " + " | ".join(cells) + " |")


def processes(args: argparse.Namespace) -> None:
    fl_demo = str(Path(sys.executable).with_name("fl-demo"))
    results = {}
    for mode in args.modes:
        with tempfile.TemporaryDirectory() as tmp:
            command = [
                fl_demo,
                "--mode",
                mode,
                "--sites",
                str(args.sites[0]),
                "--rounds",
                str(args.rounds),
                "--steps",
                str(args.steps),
                "--eval-limit",
                str(args.eval_limit),
                "--no-baseline",
                "--no-dp",
                "--workdir",
                tmp,
            ]
            started = time.monotonic()
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            wall = time.monotonic() - started
            print(done.stdout[-3000:], file=sys.stderr)
            if done.returncode != 0:
                raise SystemExit(f"fl-demo --mode {mode} failed:\n{done.stderr[-3000:]}")
            summary = json.loads((Path(tmp) / "summary.json").read_text())
            results[mode] = (summary, wall, " ".join(["fl-demo", *command[1:-2]]))
    for mode, (summary, wall, command) in results.items():
        print(f"{mode}: `{command}`, whole run {wall:.0f} s")
        print(json.dumps(summary.get("rounds", summary), indent=1)[:3000])


class _UploadStageHeap:
    """The Python heap the coordinator adds over a round's upload stage: traced from just after
    the train messages are queued (the sites have answered by then, untraced) to the next push."""

    def __init__(self) -> None:
        self.start: int | None = None
        self.peak: int | None = None

    def before_push(self, message_type: str) -> None:
        if self.start is not None and self.peak is None:
            self.peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()

    def after_push(self, message_type: str) -> None:
        if message_type == "train":
            tracemalloc.start()
            self.start = tracemalloc.get_traced_memory()[0]


def coordinator(args: argparse.Namespace) -> None:
    """Part 3: the running coordinator's upload stage (`SecureAggregation` through
    `fedseal.coordinator.messaging`), its sites real `SecureSite`s behind the tests' stand-in
    grid (`tests/coordinator/protocol_grid.py`), replies pulled a few at a time and summed as
    they arrive ("streamed"), against all replies pulled at once and held until summed, as
    Flower's `Grid.send_and_receive` returns them ("all at once")."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "coordinator"))
    import dataclasses

    from protocol_grid import protocol_federation

    from fedseal.contract.run_plan import RunPlan
    from fedseal.coordinator import messaging
    from fedseal.coordinator.protocols import RoundRequest

    streamed = messaging.POLLING
    plan_ = RunPlan("minilm-l6", ("x", "y"), 8, 16.0, 0.0, 0, 1, 0.005, 32, 3)
    gen = np.random.default_rng(0)  # benchmark data only, never secret
    rows = []
    for n in args.sites:
        names = [f"site-{i:03d}" for i in range(n)]
        updates = {
            s: (np.clip(gen.normal(0, 0.05, args.params), -0.5, 0.5).astype(np.float32), 100)
            for s in names
        }
        row: dict[str, float] = {"n": n}
        for label, polling in (
            ("streamed", streamed),
            ("all at once", dataclasses.replace(streamed, batch=10**6)),
        ):
            with tempfile.TemporaryDirectory() as tmp:
                grid, protocol_ = protocol_federation(
                    Path(tmp),
                    names,
                    "he+ss",
                    run_id=1,
                    adapter=args.params,
                    update=updates.__getitem__,
                    train_examples=3000,
                    clip=0.5,
                )
                probe = _UploadStageHeap()
                grid.on_push, grid.on_pushed = probe.before_push, probe.after_push
                grid.answer_at_push = {"train"}
                request = RoundRequest(1, 1, names, grid.node_of, plan_, 600.0, "d0")
                messaging.POLLING = polling
                started = time.monotonic()
                try:
                    result = protocol_.aggregate(grid, request, min_contributors=n)
                finally:
                    messaging.POLLING = streamed
                    tracemalloc.stop()
                if result.payload is None or len(result.contributors) != n:
                    raise SystemExit(f"n={n} {label}: the round failed: {result.error}")
                assert probe.start is not None and probe.peak is not None
                row[label] = (probe.peak - probe.start) / 2**20
                row["upload kB"] = max(grid.upload_sizes) / 1000
                row["degree"] = getattr(protocol_.params, "neighbours", 0)
                print(f"n={n} {label}: {time.monotonic() - started:.1f} s", file=sys.stderr)
        rows.append(row)
    print(
        f"\nadapter {args.params:,} parameters; pull batch {streamed.batch}; coordinator heap "
        "added over the upload stage (tracemalloc peak over the stage's start, MiB)\n"
    )
    print("| n | graph degree | upload kB | streamed MiB | all at once MiB | in uploads |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['n']} | {int(row['degree']) or 'all pairs'} | {row['upload kB']:.0f} | "
            f"{row['streamed']:.2f} | {row['all at once']:.2f} | "
            f"{row['all at once'] * 2**20 / (row['upload kB'] * 1000):.1f} |"
        )
    ns = [int(r["n"]) for r in rows]
    print(
        f"\nGrowth exponent over n: streamed {slope(ns, [r['streamed'] for r in rows]):.2f}, "
        f"all at once {slope(ns, [r['all at once'] for r in rows]):.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=("protocol", "processes", "coordinator"))
    parser.add_argument("--sites", type=int, nargs="+", default=[10, 25, 50, 100])
    parser.add_argument("--params", type=int, default=DEMO_ADAPTER_PARAMS)
    parser.add_argument("--drop", type=float, default=0.1, help="fraction dropping after sharing")
    parser.add_argument("--dense-only", action="store_true", help="all pairs only")
    parser.add_argument("--graph-only", action="store_true", help="the neighbour graph only")
    parser.add_argument("--modes", nargs="+", default=["plain", "he+ss"])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--eval-limit", type=int, default=50)
    args = parser.parse_args()
    {"protocol": protocol, "processes": processes, "coordinator": coordinator}[args.part](args)


if __name__ == "__main__":
    main()
