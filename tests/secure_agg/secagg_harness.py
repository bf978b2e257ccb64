"""Test support: a whole federation in one process, driving `recipe` stage by stage, and statistics.

Randomness is deterministic (ChaCha20 streams from fixed test seeds), so every test is
reproducible; the only other randomness is SEAL's own, which never changes a decrypted value.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from fedseal.secure_agg import bfv, keys, quantise, recipe
from fedseal.secure_agg import errors as errors_
from fedseal.secure_agg import messages as messages_
from fedseal.secure_agg.params import BfvParams, Mode, ProtocolParams, plan
from fedseal.secure_agg.prg import ChaChaRandom

#: Stages at which a site can drop out of an he+ss round, in protocol order.
DROP_STAGES = ("advertise", "share", "upload", "ack", "release")


def rng(*labels: object) -> ChaChaRandom:
    """A deterministic CSPRNG stream named by `labels`."""
    return ChaChaRandom(hashlib.sha256(repr(labels).encode()).digest())


@dataclass
class RoundOutcome:
    aggregate: recipe.Aggregate
    expected_sums: np.ndarray
    expected_weight: int
    contributors: tuple[str, ...]
    message: messages_.AggregateMessage
    uploads: dict[str, messages_.Signed] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)


class Federation:
    """Sites, their keys, the custodian's federation key and the coordinator's public context."""

    def __init__(
        self,
        n_sites: int,
        mode: Mode,
        *,
        vector_length: int = 3000,
        max_weight: int = 50,
        clip: float = 1.0,
        bfv_params: BfvParams | None = None,
        threshold: int | None = None,
        run_id: str = "run-test",
        sparse_above: int | None = None,
        neighbours: int | None = None,
    ) -> None:
        self.mode = Mode(mode)
        self.run_id = run_id
        self.ids = [f"site-{i:02d}" for i in range(n_sites)]
        self.identities = {
            s: recipe.SiteIdentity(s, keys.generate_identity_key(rng("id", s))) for s in self.ids
        }
        self.directory = {s: keys.public_bytes(i.identity_key) for s, i in self.identities.items()}
        self.sealing = {s: keys.generate_agreement_key(rng("seal", s)) for s in self.ids}
        self.params: ProtocolParams = plan(
            vector_length=vector_length,
            clip=clip,
            max_weight=max_weight,
            n_sites=n_sites,
            mode=self.mode,
            bfv=bfv_params,
            threshold=threshold,
            **({} if sparse_above is None else {"sparse_above": sparse_above}),
            neighbours=neighbours,
        )
        self.ciphers: dict[str, bfv.SiteCipher | None] = dict.fromkeys(self.ids)
        self.context = None
        if self.mode is not Mode.PLAIN:
            custodian = self.identities[self.ids[0]]
            secret = bfv.make_secret_context(self.params.bfv)
            sealed = recipe.custodian_seal_federation_key(
                secret,
                custodian=custodian,
                run_id=run_id,
                recipients={s: keys.public_bytes(self.sealing[s]) for s in self.ids},
                randbytes=rng("ceremony"),
            )
            for s in self.ids:
                self.ciphers[s] = recipe.site_open_federation_key(
                    sealed[s],
                    site_id=s,
                    sealing_key=self.sealing[s],
                    custodian_id=custodian.site_id,
                    directory=self.directory,
                    run_id=run_id,
                    params=self.params.bfv,
                )
            self.context = recipe.aggregator_load_context(
                recipe.custodian_public_context(secret, custodian=custodian, run_id=run_id),
                custodian_id=custodian.site_id,
                directory=self.directory,
                run_id=run_id,
                params=self.params.bfv,
            )

    def info(self, round_no: int, sampled: Iterable[str] | None = None) -> recipe.RoundInfo:
        return recipe.RoundInfo(
            self.run_id, round_no, self.params, tuple(self.ids if sampled is None else sampled)
        )

    def updates(self, round_no: int, seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, int]]:
        gen = np.random.default_rng([seed, round_no])  # test data only, never secret
        length = self.params.vector_length
        updates = {s: gen.normal(0, 0.4, length) for s in self.ids}
        weights = {s: int(gen.integers(1, self.params.max_weight + 1)) for s in self.ids}
        return updates, weights

    def expected(
        self, info: recipe.RoundInfo, contributors, updates, weights
    ) -> tuple[np.ndarray, int]:
        total = np.zeros(self.params.vector_length, dtype=np.int64)
        for s in contributors:
            q = quantise.quantise_weighted(
                updates[s],
                weight=weights[s],
                scale=self.params.scale,
                clip=self.params.clip,
                randbytes=rng("upload", s, info.round_no),
            )
            total += q.values
        return total, sum(weights[s] for s in contributors)

    def run_round(
        self,
        round_no: int,
        *,
        drops: dict[str, set[str]] | None = None,
        tamper: Callable[[str, str, object], object] | None = None,
        decrypt_as: str | None = None,
        unanimous: bool = False,
    ) -> RoundOutcome:
        """One round; `drops[stage]` sites stop responding at that stage.

        `tamper(stage, site, message)` may replace what a site sends at a stage; `unanimous`
        sends each release with its upload (`site_release_unanimous`, every site a member).
        """
        drops = {k: set(v) for k, v in (drops or {}).items()}
        assert set(drops) <= set(DROP_STAGES)
        tamper = tamper or (lambda stage, site, m: m)
        info = self.info(round_no)
        updates, weights = self.updates(round_no)
        gone: set[str] = set()

        def alive(stage: str) -> list[str]:
            gone.update(drops.get(stage, set()))
            return [s for s in self.ids if s not in gone]

        states: dict[str, recipe.SiteRound] = {}
        book = None
        acks = None
        expected_uploaders = None
        if self.mode is Mode.HE_SS:
            adverts = []
            for s in alive("advertise"):
                states[s], msg = recipe.site_advertise(
                    info, self.identities[s], randbytes=rng("round", s, round_no)
                )
                adverts.append(tamper("advertise", s, msg))
            accepted, _ = recipe.collect_adverts(info, adverts, directory=self.directory)
            bundles = {}
            for s in alive("share"):
                if s not in accepted:
                    continue
                bundles[s] = tamper(
                    "share",
                    s,
                    recipe.site_share_keys(
                        states[s],
                        recipe.adverts_for(info, accepted, s),
                        directory=self.directory,
                        randbytes=rng("share", s),
                    ),
                )
            book = recipe.collect_envelopes(
                info, bundles, adverts=accepted, directory=self.directory
            )
            expected_uploaders = book.senders
        total = recipe.UploadSum(
            info, directory=self.directory, context=self.context, expected=expected_uploaders
        )
        uploads = {}
        for s in alive("upload"):
            if expected_uploaders is not None and s not in expected_uploaders:
                continue
            prepared = recipe.site_prepare_upload(
                info,
                self.identities[s],
                updates[s],
                weight=weights[s],
                randbytes=rng("upload", s, round_no),
                cipher=self.ciphers[s],
                secagg=states.get(s),
                envelopes=book.for_recipient(s) if book else (),
                directory=self.directory if book else None,
            )
            uploads[s] = tamper("upload", s, prepared.message)
            with contextlib.suppress(errors_.SecureAggError):
                total.add(uploads[s])
        releases = []
        if self.mode is Mode.HE_SS and unanimous:  # sent beside the uploads
            for s in uploads:
                releases.append(
                    tamper("release", s, recipe.site_release_unanimous(states[s], members=self.ids))
                )
        elif self.mode is Mode.HE_SS:
            survivors = total.contributors
            ack_msgs = [
                tamper("ack", s, recipe.site_consistency(states[s], survivors))
                for s in alive("ack")
                if s in survivors
            ]
            acks, _ = recipe.collect_acks(
                info, ack_msgs, survivors=survivors, directory=self.directory
            )
            relayed_acks = list(acks.values())
            for s in alive("release"):
                if s in acks:
                    releases.append(
                        tamper(
                            "release",
                            s,
                            recipe.site_release_shares(
                                states[s], relayed_acks, directory=self.directory
                            ),
                        )
                    )
        message, rejected = recipe.aggregator_unmask(
            info,
            total,
            book=book,
            acks=acks,
            releases=releases,
            directory=self.directory if book else None,
            unanimous=unanimous,
        )
        reader = decrypt_as or message.contributors[0]
        aggregate = recipe.site_decrypt_aggregate(info, message, cipher=self.ciphers[reader])
        sums, weight = self.expected(info, message.contributors, updates, weights)
        return RoundOutcome(
            aggregate, sums, weight, message.contributors, message, uploads, rejected
        )


BUCKETS = 64


def chi_square_uniform(values: np.ndarray, modulus: int) -> float:
    """Pearson's statistic of `values` (residues mod `modulus`) against the uniform distribution."""
    buckets = (values.astype(object) * BUCKETS // modulus).astype(np.int64)
    counts = np.bincount(buckets, minlength=BUCKETS)
    expected = values.size / BUCKETS
    return float(((counts - expected) ** 2 / expected).sum())


def chi_square_critical(df: int, z: float = 3.09) -> float:
    """Upper 0.999 quantile of chi-square(df), Wilson-Hilferty approximation."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3
