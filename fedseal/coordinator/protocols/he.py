"""`he` mode: the coordinator relays and sums BFV ciphertexts it cannot decrypt, without masks.

Run start: the key ceremony (`ceremony`) leaves the coordinator a parameters-only context.
One round: train and upload (encrypted) → the sum of the uploads, `Enc(Σ n_i·Δ_i ‖ Σ n_i)`, and
never a plaintext. The NVFlare-style threat model: any site could decrypt any upload. `he+ss`
(`he_ss`) adds the masking stages on top of this class. A misbehaving site is dropped from the
round; every stage goes through the round's `StageTracker`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar

from flwr.serverapp import Grid

from fedseal.contract.limits import ReplyLimits, encrypted_upload_bound
from fedseal.contract.manifest import minority
from fedseal.contract.message_fields import field_bytes
from fedseal.contract.site_identity import SiteKeyError, SitePublicKeys
from fedseal.contract.wire import Key, MessageType
from fedseal.coordinator.messaging import SiteReply
from fedseal.coordinator.protocols.base import (
    AggregationProtocol,
    AggregationResult,
    RoundRequest,
    RunContext,
    privacy_report,
    received_update_digest,
)
from fedseal.coordinator.protocols.ceremony import key_ceremony
from fedseal.coordinator.protocols.tracker import StageTracker
from fedseal.coordinator.protocols.uploads import SumsByStart, UploadOutcome
from fedseal.secure_agg import bfv, recipe
from fedseal.secure_agg.errors import InsufficientSurvivors, InvalidMessage, SecureAggError
from fedseal.secure_agg.messages import AggregateMessage, Signed
from fedseal.secure_agg.params import Mode, ProtocolParams, params_to_json, plan

__all__ = ["EncryptedRound", "HeAggregation"]

log = logging.getLogger("fedseal.coordinator")


@dataclass(frozen=True)
class EncryptedRound:
    """One round of an encrypted mode in flight: what each of its stages needs."""

    info: recipe.RoundInfo
    fields: dict[str, Any]
    """What every message of the round carries: run, mode, parameters, directory, round, sampled."""
    sampled: list[str]
    tracker: StageTracker
    """Sends each stage and keeps who dropped, failed or contributed."""
    min_contributors: int
    early_releases: dict[str, Signed] = field(default_factory=dict)
    """he+ss: share releases sent beside the uploads (`Key.SHARE_RELEASE`, a unanimous round)."""

    @property
    def request(self) -> RoundRequest:
        return self.tracker.request

    @property
    def reachable(self) -> list[str]:
        """The sampled sites connected now (a key batch's later round may have lost some)."""
        return [s for s in self.sampled if s in self.request.nodes]


class HeAggregation(AggregationProtocol):
    """`he`: BFV encryption without masks (every site holds the key that opens every upload)."""

    mode = "he"
    min_sites: ClassVar[int] = 1
    """Fewest enrolled participants the mode runs with."""
    honest_majority: ClassVar[bool] = False
    """Whether the colluding sites must be fewer than half the participants (Shamir sharing)."""

    def __init__(self) -> None:
        self.params: ProtocolParams | None = None
        self.context: Any = None
        self.directory: dict[str, SitePublicKeys] = {}
        self.participants: list[str] = []
        self.run_id = 0
        self._sampled: dict[int, list[str]] = {}  # round -> sites the round's RoundInfo names
        self.limits = ReplyLimits()

    # -- run start -------------------------------------------------------------------------

    def prepare_run(self, grid: Grid, run: RunContext) -> None:
        """Check enrolment, size the parameters, and run the key ceremony."""
        self.run_id = run.run_id
        directory: dict[str, SitePublicKeys] = {}
        for site, bundle in run.enrolled_keys.items():
            try:
                directory[site] = SitePublicKeys.from_bundle(site, bundle)
            except SiteKeyError as exc:
                log.error("%s", exc)
        unenrolled = sorted(set(run.sites) - set(directory))
        if unenrolled:
            log.error("sites not enrolled, left out of the run: %s", ", ".join(unenrolled))
        participants = sorted(set(run.sites) & set(directory))
        sizes = {run.sites[s].adapter_size for s in participants}
        if len(sizes) != 1 or None in sizes:
            raise RuntimeError(f"sites disagree on the adapter size: {sorted(map(str, sizes))}")
        if len(participants) < self.min_sites:
            raise RuntimeError(f"{self.mode} needs at least {self.min_sites} enrolled sites")
        n = len(participants)
        colluding = minority(n) if run.max_colluding < 0 else run.max_colluding
        if colluding >= n or (self.honest_majority and 2 * colluding >= n):
            raise RuntimeError(
                f"no threshold withstands {colluding} colluding sites among {n} participants"
            )
        self.params = plan(
            max_colluding=colluding,
            vector_length=int(sizes.pop()),
            clip=run.clip,
            max_weight=max(run.sites[s].train_examples for s in participants),
            n_sites=len(participants),
            mode=Mode(self.mode),
            sparse_above=run.sparse_above,
            neighbours=run.neighbours or None,
        )
        self.directory = {s: directory[s] for s in participants}
        self.limits = _reply_limits(run, self.params, len(participants))
        log.info(
            "run %d: %s with k=%d of %d sites, %s, clip %g, scale %g, BFV N=%d coeff %s t=%d",
            run.run_id,
            self.mode,
            self.params.threshold,
            self.params.n_sites,
            _masking(self.params),
            self.params.clip,
            self.params.scale,
            self.params.bfv.poly_modulus_degree,
            self.params.bfv.coeff_mod_bit_sizes,
            self.params.bfv.plain_modulus,
        )
        key = key_ceremony(
            grid,
            run,
            participants,
            fields=self._common(),
            params=self.params,
            identities=self._identity_directory(),
            limits=self.limits,
        )
        self.context = key.context
        self.participants = key.holders

    def _common(self) -> dict[str, Any]:
        """The fields every message of the run carries."""
        from fedseal.contract.site_identity import encode_directory

        assert self.params is not None
        return {
            Key.RUN_ID: self.run_id,
            Key.MODE: self.mode,
            Key.PROTOCOL_PARAMS: params_to_json(self.params),
            Key.DIRECTORY: encode_directory(self.directory),
        }

    def _identity_directory(self) -> dict[str, bytes]:
        return {s: k.identity for s, k in self.directory.items()}

    # -- one round -------------------------------------------------------------------------

    def apply_fields(self, round_number: int, contributors: list[str], sampled: list[str]) -> dict:
        assert self.params is not None
        return {
            Key.PROTOCOL_PARAMS: params_to_json(self.params),
            Key.SAMPLED: json.dumps(self._sampled.get(round_number, sorted(sampled))),
        }

    def aggregate(
        self, grid: Grid, request: RoundRequest, min_contributors: int
    ) -> AggregationResult:
        assert self.params is not None and self.context is not None
        tracker = StageTracker(grid, request, self.limits)
        sampled = self._round_sites(request)
        for site in sorted(set(request.sites) - set(sampled)):
            tracker.fail(site, "holds no federation key for this run")
        for site in request.sites:
            if site in sampled and site not in request.nodes:
                tracker.drop(site, "not connected")
        self._sampled = {request.round_number: sampled}
        try:
            info = recipe.RoundInfo(
                str(self.run_id), request.round_number, self.params, tuple(sampled)
            )
            fields = {
                **self._common(),
                Key.ROUND: request.round_number,
                Key.SAMPLED: json.dumps(sampled),
            }
            return self._round(EncryptedRound(info, fields, sampled, tracker, min_contributors))
        except InsufficientSurvivors as exc:
            return tracker.result(None, f"round aborted: {exc}")

    def _round_sites(self, request: RoundRequest) -> list[str]:
        """The round's sampled set as its `RoundInfo` names it: the requested participants."""
        return sorted(s for s in request.sites if s in self.participants)

    def _round(self, round_: EncryptedRound) -> AggregationResult:
        """The round's stages: here only the upload, summed as the uploads arrive."""
        configs = self._train_configs(round_, round_.reachable)
        total, start_digest = self._uploads(round_, configs, round_.reachable)
        aggregate, _ = recipe.aggregator_unmask(round_.info, total)
        return self._finish(round_, aggregate, start_digest)

    def _train_configs(
        self, round_: EncryptedRound, uploaders: list[str]
    ) -> dict[str, dict[str, Any]]:
        """The train message of each uploader: the round's fields, the plan, its catch-up."""
        request = round_.request
        configs = {}
        for site in uploaders:
            rounds, payloads = request.catchup.get(site, ([], []))
            configs[site] = {
                **round_.fields,
                **request.plan.to_config(),
                Key.EXPECTED_DIGEST: request.expected_digest or "",
                Key.CATCHUP_ROUNDS: [int(r) for r in rounds],
                Key.CATCHUP_PAYLOADS: list(payloads),
                Key.CATCHUP_FIELDS: request.catchup_fields.get(site, []),
            }
        return configs

    def _finish(
        self, round_: EncryptedRound, aggregate: AggregateMessage, start_digest: str | None
    ) -> AggregationResult:
        """The round's result: the encrypted aggregate, unless too few sites are in it."""
        tracker = round_.tracker
        if len(aggregate.contributors) < round_.min_contributors:
            return tracker.result(None, f"{len(aggregate.contributors)} contributors, too few")
        return tracker.result(aggregate.to_bytes(), None, start_digest, aggregate.contributors)

    def _uploads(
        self, round_: EncryptedRound, configs: dict[str, dict[str, Any]], uploaders: list[str]
    ) -> tuple[recipe.UploadSum, str | None]:
        """Send the train messages and fold each upload into the encrypted sum as it arrives.

        Of an upload the coordinator keeps only its record (digest, signed statement, example
        count) for the later stages and the registry; its ciphertexts go into the running sum
        and are dropped, so memory does not grow with the number of sites. Returns the sum of
        the uploads trained from the round's start adapter (U3 is its contributors) and that
        adapter's digest.
        """
        directory = self._identity_directory()
        tracker = round_.tracker
        sums = SumsByStart(
            tracker.request.expected_digest,
            lambda: recipe.UploadSum(
                round_.info, directory=directory, context=self.context, expected=uploaders
            ),
        )
        outcomes: list[UploadOutcome] = []
        stream = tracker.stream(MessageType.TRAIN, configs)
        for reply in stream:
            sums.vote(str(reply.result.get(Key.START_DIGEST, "")))
            if Key.SHARE_RELEASE in reply.result:
                self._take_early_release(round_, reply)
            if Key.DECLINED in reply.result:  # its masks are removed like a dropped site's
                tracker.declined(reply.site, reply.result)
                continue
            outcomes.append(self._take_upload(reply, sums))
        tracker.stage_ended(stream)
        start_digest = sums.start_digest()
        for outcome in outcomes:
            tracker.record(outcome.settle(start_digest, "upload refused"))
        return sums.total(), start_digest

    def _take_early_release(self, round_: EncryptedRound, reply: SiteReply) -> None:
        """Keep a share release sent with an upload (checked when the round is unmasked)."""
        try:
            raw = field_bytes(reply.result, Key.SHARE_RELEASE, max_len=self.limits.control)
            round_.early_releases[reply.site] = Signed.from_bytes(raw)
        except (SecureAggError, ValueError, TypeError) as exc:
            log.warning(
                "round %d: site %s: share release refused: %s",
                round_.info.round_no,
                reply.site,
                exc,
            )

    def _take_upload(self, reply: SiteReply, sums: SumsByStart[recipe.UploadSum]) -> UploadOutcome:
        """Check one train reply and add its upload to the sum of its start adapter.

        The privacy statement is read first and kept even when the upload is refused (the site
        has spent the budget); the upload must be signed by the site that sent it.
        """
        site, result = reply.site, reply.result
        privacy = digest = None
        try:
            privacy = privacy_report(result)
            digest = str(result.get(Key.START_DIGEST))
            total = sums.sum_for(digest)
            upload = field_bytes(result, Key.UPDATE, max_len=self.limits.upload)
            update_digest = received_update_digest(upload, privacy)
            signed = Signed.from_bytes(upload)
            if signed.sender != site:
                raise InvalidMessage()
            total.add(signed)
        except (SecureAggError, KeyError, TypeError, ValueError, OverflowError) as exc:
            return UploadOutcome.refused(site, digest, f"upload refused: {exc}", privacy)
        return UploadOutcome.contributed(
            reply,
            digest,
            num_examples=_examples(result.get(Key.NUM_EXAMPLES)),
            privacy=privacy,
            update_digest=update_digest,
        )


def _examples(value: Any) -> int | None:
    """The number of examples a site reported, when it is a sensible integer (for the record)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 2**40:
        return None
    return value


def _masking(params: ProtocolParams) -> str:
    """How the run's uploads are masked, for the log."""
    if params.mode is not Mode.HE_SS:
        return "no masks"
    if params.neighbours:
        return f"masks over a neighbour graph of degree {params.neighbours}"
    return "masks between all pairs"


def _reply_limits(run: RunContext, params: ProtocolParams, n_sites: int) -> ReplyLimits:
    """Per-stage reply limits: an upload is at most its ciphertexts, a keygen reply the
    federation key sealed to every site; other replies are keys, signatures and metrics."""
    upload = run.max_upload_bytes or encrypted_upload_bound(
        params.n_ciphertexts, bfv.max_ciphertext_bytes(params.bfv)
    )
    sealed = bfv.max_context_bytes(params.bfv) + 4096
    return ReplyLimits(
        upload=upload,
        control=run.max_reply_bytes,
        keygen=n_sites * sealed + run.max_reply_bytes,
        keys=min(run.max_reply_bytes * max(run.key_rounds, 1), 2**32 - 1),
    )
