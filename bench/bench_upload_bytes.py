"""Bytes a site uploads per LoRA parameter per round, and crypto times, for every protocol mode.

Every figure is measured in this run, and sizes are given as ratios against the float32 size of the
same update measured here too (4 bytes per parameter). Modes:

* ``plain``: quantised residues in the clear (the signed upload message);
* ``he``: BFV, seeded symmetric ciphertexts (signed upload message);
* ``he+ss``: the ``he`` upload plus everything else a site sends in a round (signed key advert,
  sealed share envelopes for every peer, consistency signature, share release), amortised over the
  parameters;
* ``ckks-nvflare``: TenSEAL CKKS, N=8192, scale 2^40, public-key encryption of the float vector (as
  NVFlare's TenSEAL filters do), with coefficient moduli [60,40,40,60] and [60,40,40].

Also timed: site crypto per 100k parameters (median over sites; quantise + mask + encrypt, and
decrypt + decode), and the coordinator summing N sites x P parameters read one by one from their
wire bytes (signature check, ciphertext checks, load, add; fastest of 3 fresh processes), with its
resident memory after each site to show it does not grow; then the unmasking.

Usage: python bench/bench_upload_bytes.py [--params 1000000] [--sites 10] [--dropped 2]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import tempfile
import time
from collections.abc import Callable

import numpy as np
import tenseal as ts

from fedseal.secure_agg import bfv, keys, recipe
from fedseal.secure_agg.messages import Signed
from fedseal.secure_agg.params import BfvParams, Mode, plan

REPEATS = 3

CONFIGS = {
    "N=4096 q=[54,55] t≈2^30": BfvParams(4096, (54, 55), 1073643521),
    "N=4096 q=[48,55] t≈2^30 (default)": BfvParams(4096, (48, 55), 1073643521),
}


def rss_mib() -> float:
    """Current resident set size (Linux), MiB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def coordinator_sum(info, directory, public, expected, paths) -> tuple[float, list[float]]:
    """Sum uploads read one at a time from files; return seconds and RSS after each upload."""
    context = None if public is None else bfv.load_public_context(public, info.params.bfv)
    rss = [rss_mib()]
    start = time.perf_counter()
    total = recipe.UploadSum(info, directory=directory, context=context, expected=expected)
    for path in paths:
        with open(path, "rb") as f:
            message = Signed.from_bytes(f.read())
        total.add(message)
        del message
        rss.append(rss_mib())
    return time.perf_counter() - start, rss


def timed(fn: Callable[[], object]) -> tuple[object, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


class Site:
    def __init__(self, site_id: str) -> None:
        self.me = recipe.SiteIdentity(site_id, keys.generate_identity_key(os.urandom))
        self.sealing = keys.generate_agreement_key(os.urandom)
        self.cipher: bfv.SiteCipher | None = None


def federation(mode: Mode, n_sites: int, n_params: int, bfv_params: BfvParams):
    params = plan(
        vector_length=n_params,
        clip=0.05,
        max_weight=10_000,
        n_sites=n_sites,
        mode=mode,
        bfv=bfv_params,
    )
    sites = {f"site-{i:02d}": Site(f"site-{i:02d}") for i in range(n_sites)}
    directory = {s: keys.public_bytes(site.me.identity_key) for s, site in sites.items()}
    context = None
    if mode is not Mode.PLAIN:
        custodian = sites["site-00"].me
        secret = bfv.make_secret_context(bfv_params)
        sealed = recipe.custodian_seal_federation_key(
            secret,
            custodian=custodian,
            run_id="bench",
            recipients={s: keys.public_bytes(site.sealing) for s, site in sites.items()},
            randbytes=os.urandom,
        )
        for s, site in sites.items():
            site.cipher = recipe.site_open_federation_key(
                sealed[s],
                site_id=s,
                sealing_key=site.sealing,
                custodian_id="site-00",
                directory=directory,
                run_id="bench",
                params=bfv_params,
            )
        context = recipe.aggregator_load_context(
            recipe.custodian_public_context(secret, custodian=custodian, run_id="bench"),
            custodian_id="site-00",
            directory=directory,
            run_id="bench",
            params=bfv_params,
        )
    info = recipe.RoundInfo("bench", 1, params, tuple(sites))
    return params, sites, directory, context, info


def run_round(mode, n_sites, n_params, bfv_params, dropped, updates):
    """One full round; returns per-site upload bytes, overhead bytes, and timings."""
    params, sites, directory, context, info = federation(mode, n_sites, n_params, bfv_params)
    ids = list(sites)
    out: dict[str, float] = {}
    overhead = 0  # bytes site-00 sends besides its upload
    states, book, expected = {}, None, None
    if mode is Mode.HE_SS:
        adverts = []
        for s in ids:
            states[s], message = recipe.site_advertise(info, sites[s].me, randbytes=os.urandom)
            adverts.append(message)
        overhead += len(adverts[0].to_bytes())
        accepted, _ = recipe.collect_adverts(info, adverts, directory=directory)
        bundles, share_times = {}, []
        for s in ids:
            bundles[s], elapsed = timed(
                lambda s=s: recipe.site_share_keys(
                    states[s], list(accepted.values()), directory=directory, randbytes=os.urandom
                )
            )
            share_times.append(elapsed)
        out["share_keys_s"] = float(np.median(share_times))
        overhead += sum(len(m.to_bytes()) for m in bundles["site-00"])
        book = recipe.collect_envelopes(info, bundles, adverts=accepted, directory=directory)
        expected = book.senders
    uploaders = ids[: n_sites - dropped] if mode is Mode.HE_SS else ids
    wires, prep_times = {}, []
    for s in uploaders:
        prepared, elapsed = timed(
            lambda s=s: recipe.site_prepare_upload(
                info,
                sites[s].me,
                updates[s],
                weight=1000,
                randbytes=os.urandom,
                cipher=sites[s].cipher,
                secagg=states.get(s),
                envelopes=book.for_recipient(s) if book else (),
                directory=directory if book else None,
            )
        )
        prep_times.append(elapsed)
        wires[s] = prepared.message.to_bytes()
    out["prepare_s"] = float(np.median(prep_times))
    out["upload_bytes"] = len(wires["site-00"])

    # coordinator, in a fresh process: read each upload as it arrives, verify and add it
    public = None if context is None else bfv.public_context_bytes(context)
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for s in uploaders:
            path = os.path.join(folder, s)
            with open(path, "wb") as f:
                f.write(wires[s])
            paths.append(path)
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(1) as pool:
            out["sum_s"], rss = pool.apply(
                coordinator_sum, (info, directory, public, expected, paths)
            )
    out["rss_mib"] = [r - rss[0] for r in rss[1:]]
    total = recipe.UploadSum(info, directory=directory, context=context, expected=expected)
    for s in uploaders:
        total.add(Signed.from_bytes(wires[s]))
    releases, acks = [], None
    if mode is Mode.HE_SS:
        survivors = total.contributors
        ack_messages = [recipe.site_consistency(states[s], survivors) for s in survivors]
        acks, _ = recipe.collect_acks(info, ack_messages, survivors=survivors, directory=directory)
        releases = [
            recipe.site_release_shares(states[s], list(acks.values()), directory=directory)
            for s in survivors
        ]
        overhead += len(ack_messages[0].to_bytes()) + len(releases[0].to_bytes())
    (message, _), out["unmask_s"] = timed(
        lambda: recipe.aggregator_unmask(
            info,
            total,
            book=book,
            acks=acks,
            releases=releases,
            directory=directory if book else None,
        )
    )
    out["download_bytes"] = len(message.to_bytes())
    aggregate_result, out["decrypt_s"] = timed(
        lambda: recipe.site_decrypt_aggregate(info, message, cipher=sites["site-00"].cipher)
    )
    out["overhead_bytes"] = overhead
    # sanity: the aggregate is the mean of what was uploaded, within quantisation error
    mean = aggregate_result.mean()
    reference = np.mean([np.clip(updates[s], -0.05, 0.05) for s in uploaders], axis=0)
    out["max_abs_error"] = float(np.max(np.abs(mean - reference)))
    out["scale"] = params.scale
    return out


def ckks_bytes(update: np.ndarray, coeff: list[int]) -> tuple[int, float, float]:
    context = ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=coeff, n_threads=1)
    context.global_scale = 2**40
    vector, enc_s = timed(lambda: ts.ckks_vector(context, update.tolist()))
    wire, ser_s = timed(vector.serialize)
    return len(wire), enc_s, ser_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", type=int, default=1_000_000, help="LoRA parameters")
    parser.add_argument("--sites", type=int, default=10)
    parser.add_argument("--dropped", type=int, default=2, help="he+ss sites dropped before upload")
    parser.add_argument("--ckks-params", type=int, default=300_000, help="values for CKKS")
    args = parser.parse_args()
    gen = np.random.default_rng(0)  # benchmark data only
    updates = {
        f"site-{i:02d}": gen.normal(0, 0.01, args.params).astype(np.float32)
        for i in range(args.sites)
    }
    float32_bytes = len(updates["site-00"].tobytes())
    per = float32_bytes / args.params
    print(
        f"# {platform.machine()}, {os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.1f}), "
        f"tenseal {ts.__version__}, {args.params:,} params, {args.sites} sites\n"
    )
    print("| setting | upload B/param | vs float32 | other site bytes/round | download B/param |")
    print("|---|---|---|---|---|")
    print(f"| float32 (baseline, measured) | {per:.3f} | 1.00x | - | - |")
    timings = []
    for label, bfv_params in CONFIGS.items():
        for mode in (Mode.PLAIN, Mode.HE, Mode.HE_SS):
            if mode is Mode.PLAIN and label != next(iter(CONFIGS)):
                continue
            dropped = args.dropped if mode is Mode.HE_SS else 0
            r = run_round(mode, args.sites, args.params, bfv_params, dropped, updates)
            upload = r["upload_bytes"] + r["overhead_bytes"]
            name = "plain" if mode is Mode.PLAIN else f"{mode} {label}"
            print(
                f"| {name} | {upload / args.params:.3f} | {upload / float32_bytes:.2f}x | "
                f"{r['overhead_bytes']:,} | {r['download_bytes'] / args.params:.3f} |"
            )
            timings.append((name, r))
    for coeff in ([60, 40, 40, 60], [60, 40, 40]):
        sample = updates["site-00"][: args.ckks_params]
        size, enc_s, _ = ckks_bytes(sample, coeff)
        print(
            f"| ckks-nvflare N=8192 {coeff} 2^40 | {size / sample.size:.3f} | "
            f"{size / (4 * sample.size):.2f}x | - | - |"
        )
        timings.append((f"ckks {coeff}", {"ckks_encrypt_per_100k_s": enc_s * 1e5 / sample.size}))
    print(
        "\n| setting | site prepare /100k | site decrypt /100k | coordinator sum "
        f"{args.sites}x{args.params:,} | unmask | coordinator RSS growth after each site | "
        "max |mean error| |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, r in timings:
        if "prepare_s" not in r:
            print(f"| {name} | encrypt {r['ckks_encrypt_per_100k_s']:.3f} s | - | - | - | - | - |")
            continue
        scale = 1e5 / args.params
        print(
            f"| {name} | {r['prepare_s'] * scale:.3f} s | {r['decrypt_s'] * scale:.3f} s | "
            f"{r['sum_s']:.2f} s | {r['unmask_s']:.2f} s | "
            f"{' / '.join(f'{m:.0f}' for m in r['rss_mib'])} MiB | {r['max_abs_error']:.2e} |"
        )


if __name__ == "__main__":
    main()
