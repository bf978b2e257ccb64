"""`he` and `he+ss` modes: the coordinator relays and sums ciphertexts it cannot decrypt.

Run start (key ceremony): the custodian site — the first enrolled participant by name — makes
the run's BFV key, seals it to every participant and returns a signed parameters-only context; the
coordinator keeps only that context (`is_private()` is False) and relays each sealed key.

One `he+ss` round (Bonawitz et al. 2017, with every message signed and bound to run, round and
stage): advertise → share → train and upload (masked, encrypted) → consistency → release →
unmask. The coordinator ends with `Enc(Σ n_i·Δ_i ‖ Σ n_i)` and never a plaintext. `he` skips the
key stages and masks (the NVFlare-style threat model: any site could decrypt any upload).
A misbehaving site is dropped from the round; fewer than `k` survivors abort it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from typing import Any

from flwr.serverapp import Grid

from fedseal.contract.limits import ReplyLimits, encrypted_upload_bound
from fedseal.contract.manifest import minority
from fedseal.contract.message_fields import field_bytes, field_bytes_list, field_str_list
from fedseal.contract.site_identity import SiteKeyError, SitePublicKeys
from fedseal.contract.wire import Key, MessageType
from fedseal.coordinator.messaging import (
    SiteReply,
    StageResult,
    StageStream,
    send_stage,
    stream_stage,
)
from fedseal.coordinator.protocols.base import (
    AggregationProtocol,
    AggregationResult,
    ContributionStatus,
    RoundRequest,
    RunContext,
    SiteContribution,
    declined_contribution,
    privacy_report,
    received_update_digest,
)
from fedseal.coordinator.protocols.uploads import SumsByStart, UploadOutcome
from fedseal.secure_agg import bfv, recipe
from fedseal.secure_agg.errors import InsufficientSurvivors, InvalidMessage, SecureAggError
from fedseal.secure_agg.graph import round_seed
from fedseal.secure_agg.messages import Signed
from fedseal.secure_agg.params import Mode, ProtocolParams, params_to_json, plan

__all__ = ["HeAggregation", "SecureAggregation"]

log = logging.getLogger("fedseal.coordinator")


class SecureAggregation(AggregationProtocol):
    """`he+ss`: BFV encryption of SecAgg-masked updates with Shamir-shared seeds."""

    mode = "he+ss"

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
        min_sites = 2 if self.mode == "he+ss" else 1
        if len(participants) < min_sites:
            raise RuntimeError(f"{self.mode} needs at least {min_sites} enrolled sites")
        n = len(participants)
        colluding = minority(n) if run.max_colluding < 0 else run.max_colluding
        if colluding >= n or (self.mode == "he+ss" and 2 * colluding >= n):
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
        self.participants = self._ceremony(grid, run, participants)

    def _common(self) -> dict[str, Any]:
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

    def _ceremony(self, grid: Grid, run: RunContext, participants: list[str]) -> list[str]:
        assert self.params is not None
        custodian = participants[0]
        nodes = {s: run.sites[s].node_id for s in participants}
        keygen = send_stage(
            grid,
            MessageType.KEYGEN,
            {custodian: self._common()},
            nodes,
            run.timeout_s,
            self.limits.for_message_type(MessageType.KEYGEN),
        )
        reply = keygen.replies.get(custodian)
        if reply is None:
            reason = keygen.failed.get(custodian, "no reply")
            raise RuntimeError(f"key ceremony: custodian {custodian} failed: {reason}")
        try:
            self.context = recipe.aggregator_load_context(
                Signed.from_bytes(
                    field_bytes(reply.result, Key.PUBLIC_CONTEXT, max_len=self.limits.keygen)
                ),
                custodian_id=custodian,
                directory=self._identity_directory(),
                run_id=str(self.run_id),
                params=self.params.bfv,
            )
            sealed_sites = field_str_list(reply.result, Key.SEALED_SITES)
            sealed_keys = field_bytes_list(
                reply.result, Key.SEALED_KEYS, max_len=bfv.max_context_bytes(self.params.bfv) * 2
            )
            sealed = dict(zip(sealed_sites, sealed_keys, strict=True))
        except (SecureAggError, KeyError, ValueError) as exc:
            raise RuntimeError(
                f"key ceremony: custodian {custodian}'s reply refused: {exc}"
            ) from None
        if self.context.is_private():  # never hold a secret key
            raise RuntimeError("key ceremony: the public context holds a secret key")
        others = {
            site: {**self._common(), Key.CUSTODIAN: custodian, Key.SEALED_KEY: bytes(sealed[site])}
            for site in participants
            if site != custodian and site in sealed
        }
        installed = send_stage(
            grid,
            MessageType.INSTALL,
            others,
            nodes,
            run.timeout_s,
            self.limits.for_message_type(MessageType.INSTALL),
        )
        for site, reason in installed.failed.items():
            log.error("key ceremony: site %s could not install the key: %s", site, reason)
        ready = sorted([custodian, *installed.replies])
        log.info("key ceremony done: custodian %s, %d sites hold the key", custodian, len(ready))
        return ready

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
        tracker = _Tracker(request, self.limits)
        sampled = sorted(s for s in request.sites if s in self.participants)
        for site in sorted(set(request.sites) - set(sampled)):
            tracker.fail(site, "holds no federation key for this run")
        self._sampled = {request.round_number: sampled}
        try:
            info = recipe.RoundInfo(str(self.run_id), request.round_number, self.params, sampled)
            fields = {
                **self._common(),
                Key.ROUND: request.round_number,
                Key.SAMPLED: json.dumps(sampled),
            }
            return self._round(grid, request, info, fields, sampled, tracker, min_contributors)
        except InsufficientSurvivors as exc:
            return tracker.result(None, f"round aborted: {exc}")

    def _round(
        self, grid, request, info, fields, sampled, tracker, min_contributors: int
    ) -> AggregationResult:
        directory = self._identity_directory()
        book = None
        uploaders = sampled
        if info.mode is Mode.HE_SS:
            stage = tracker.stage(grid, MessageType.ADVERTISE, dict.fromkeys(sampled, fields))
            adverts, rejected = recipe.collect_adverts(
                info, tracker.signed(stage, Key.SIGNED), directory=directory
            )
            tracker.reject(rejected)
            if info.graph is not None:
                log.info(
                    "round %d: SecAgg+ neighbour graph, degree %d, seed %s",
                    request.round_number,
                    info.graph.degree,
                    round_seed(info.run_id, info.round_no, info.sampled).hex()[:16],
                )
            relayed = {  # all of U1, or each site's neighbours in a neighbour graph
                s: [m.to_bytes() for m in recipe.adverts_for(info, adverts, s)] for s in adverts
            }
            stage = tracker.stage(
                grid,
                MessageType.SHARE,
                {s: {**fields, Key.RELAYED: relayed[s]} for s in sorted(adverts)},
            )
            bundles = {}
            for site, reply in stage.replies.items():
                try:
                    bundles[site] = [
                        Signed.from_bytes(b)
                        for b in field_bytes_list(
                            reply.result, Key.SIGNED_LIST, max_len=self.limits.control
                        )
                    ]
                except (SecureAggError, ValueError) as exc:
                    tracker.fail(site, f"share stage: {exc}")
            book = recipe.collect_envelopes(info, bundles, adverts=adverts, directory=directory)
            tracker.reject(book.rejected)
            uploaders = list(book.senders)

        configs = {}
        for site in uploaders:
            rounds, payloads = request.catchup.get(site, ([], []))
            configs[site] = {
                **fields,
                **request.plan.to_config(),
                Key.EXPECTED_DIGEST: request.expected_digest or "",
                Key.CATCHUP_ROUNDS: [int(r) for r in rounds],
                Key.CATCHUP_PAYLOADS: list(payloads),
                Key.CATCHUP_FIELDS: request.catchup_fields.get(site, []),
            }
            if book is not None:
                configs[site][Key.RELAYED] = [e.to_bytes() for e in book.for_recipient(site)]
        total, start_digest = self._uploads(grid, info, configs, uploaders, tracker)

        if info.mode is Mode.HE_SS:
            survivors = list(total.contributors)
            stage = tracker.stage(
                grid,
                MessageType.CONSISTENCY,
                {s: {**fields, Key.SURVIVORS: json.dumps(survivors)} for s in survivors},
                after_upload=True,
            )
            acks, rejected = recipe.collect_acks(
                info, tracker.signed(stage, Key.SIGNED), survivors=survivors, directory=directory
            )
            tracker.reject(rejected, after_upload=True)
            relayed = [acks[s].to_bytes() for s in sorted(acks)]
            stage = tracker.stage(
                grid,
                MessageType.RELEASE,
                {s: {**fields, Key.RELAYED: relayed} for s in sorted(acks)},
                after_upload=True,
            )
            aggregate, rejected = recipe.aggregator_unmask(
                info,
                total,
                book=book,
                acks=acks,
                releases=tracker.signed(stage, Key.SIGNED),
                directory=directory,
            )
            tracker.reject(rejected, after_upload=True)
        else:
            aggregate, _ = recipe.aggregator_unmask(info, total)
        if len(aggregate.contributors) < min_contributors:
            return tracker.result(None, f"{len(aggregate.contributors)} contributors, too few")
        return tracker.result(aggregate.to_bytes(), None, start_digest, aggregate.contributors)

    def _uploads(
        self,
        grid: Grid,
        info: recipe.RoundInfo,
        configs: dict[str, dict[str, Any]],
        uploaders: list[str],
        tracker: _Tracker,
    ) -> tuple[recipe.UploadSum, str | None]:
        """Send the train messages and fold each upload into the encrypted sum as it arrives.

        Of an upload the coordinator keeps only its record (digest, signed statement, example
        count) for the later stages and the registry; its ciphertexts go into the running sum
        and are dropped, so memory does not grow with the number of sites. Returns the sum of
        the uploads trained from the round's start adapter (U3 is its contributors) and that
        adapter's digest.
        """
        directory = self._identity_directory()
        sums = SumsByStart(
            tracker.request.expected_digest,
            lambda: recipe.UploadSum(
                info, directory=directory, context=self.context, expected=uploaders
            ),
        )
        outcomes: list[UploadOutcome] = []
        stream = tracker.stream(grid, MessageType.TRAIN, configs)
        for reply in stream:
            sums.vote(str(reply.result.get(Key.START_DIGEST, "")))
            if Key.DECLINED in reply.result:  # its masks are removed like a dropped site's
                tracker.declined(reply.site, reply.result)
                continue
            outcomes.append(self._take_upload(reply, sums))
        tracker.stage_ended(stream)
        start_digest = sums.start_digest()
        for outcome in outcomes:
            tracker.record(outcome.settle(start_digest, "upload refused"))
        return sums.total(), start_digest

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
        record = SiteContribution(
            site,
            ContributionStatus.CONTRIBUTED,
            num_examples=_examples(result.get(Key.NUM_EXAMPLES)),
            train_loss=reply.metrics.get(Key.TRAIN_LOSS),
            train_seconds=reply.metrics.get(Key.TRAIN_SECONDS),
            start_digest=digest,
            privacy=privacy,
            update_digest=update_digest,
        )
        return UploadOutcome(digest, record)


class HeAggregation(SecureAggregation):
    """`he`: BFV encryption without masks (every site holds the key that opens every upload)."""

    mode = "he"


class _Tracker:
    """Who dropped, failed or contributed across a round's stages, for the registry."""

    def __init__(self, request: RoundRequest, limits: ReplyLimits) -> None:
        self.request = request
        self.limits = limits
        self.status: dict[str, SiteContribution] = {}
        self.digest: str | None = request.expected_digest

    def fail(self, site: str, reason: str, *, privacy: Mapping[str, Any] | None = None) -> None:
        """Mark a site failed (keeping what it reported, its privacy spend included)."""
        previous = self.status.get(site)
        if previous is None:
            self.status[site] = SiteContribution(
                site, ContributionStatus.FAILED, error=reason[:500], privacy=privacy
            )
        elif previous.status is ContributionStatus.CONTRIBUTED:
            self.status[site] = dataclasses.replace(
                previous, status=ContributionStatus.FAILED, error=reason[:500]
            )
        log.warning("round %d: site %s: %s", self.request.round_number, site, reason)

    def declined(self, site: str, result: Mapping[str, Any]) -> None:
        self.status[site] = declined_contribution(site, result)
        log.warning(
            "round %d: site %s declined: %s",
            self.request.round_number,
            site,
            self.status[site].error,
        )

    def reject(self, rejected: Mapping[str, str], *, after_upload: bool = False) -> None:
        for site, reason in rejected.items():
            if after_upload:  # its upload is in the sum; record the problem, keep it counted
                log.warning("round %d: site %s: %s", self.request.round_number, site, reason)
            else:
                self.fail(site, reason or "message refused")

    def stream(self, grid: Grid, message_type: str, configs: dict) -> StageStream:
        """Send a stage's messages; its replies arrive as the stream is iterated."""
        return stream_stage(
            grid,
            message_type,
            configs,
            self.request.nodes,
            self.request.timeout_s,
            self.limits.for_message_type(message_type),
        )

    def stage(
        self, grid: Grid, message_type: str, configs: dict, *, after_upload: bool = False
    ) -> StageResult:
        """Send a stage's messages and collect its (small) replies."""
        stream = self.stream(grid, message_type, configs)
        replies = {reply.site: reply for reply in stream}
        self.stage_ended(stream, after_upload=after_upload)
        return StageResult(replies, stream.failed, stream.missing)

    def stage_ended(self, stream: StageStream, *, after_upload: bool = False) -> None:
        """Record the sites that failed a stage or never answered it."""
        name = stream.message_type.split(".")[-1]
        for site, reason in stream.failed.items():
            if after_upload:
                log.warning(
                    "round %d: site %s failed %s: %s", self.request.round_number, site, name, reason
                )
            else:
                self.fail(site, f"{name}: {reason}")
        for site in stream.missing:
            if after_upload:
                log.warning(
                    "round %d: site %s dropped at %s", self.request.round_number, site, name
                )
            elif site not in self.status:
                self.status[site] = SiteContribution(
                    site, ContributionStatus.DROPPED, error=f"no reply at {name}"
                )

    def signed(self, stage: StageResult, key: str) -> list[Signed]:
        messages = []
        for reply in stage.replies.values():
            try:
                raw = field_bytes(reply.result, key, max_len=self.limits.control)
                messages.append(Signed.from_bytes(raw))
            except (SecureAggError, ValueError):
                continue  # missing from the list: the collect step treats it as absent
        return messages

    def record(self, contribution: SiteContribution) -> None:
        """A site's settled part in the upload stage (a refusal is logged)."""
        self.status[contribution.site] = contribution
        if contribution.status is ContributionStatus.FAILED:
            log.warning(
                "round %d: site %s: %s",
                self.request.round_number,
                contribution.site,
                contribution.error,
            )

    def result(
        self,
        payload: bytes | None,
        error: str | None,
        start_digest: str | None = None,
        contributors: tuple[str, ...] = (),
    ) -> AggregationResult:
        for site in self.request.sites:
            if site not in self.status:
                self.status[site] = SiteContribution(
                    site, ContributionStatus.DROPPED, error="left the round before uploading"
                )
        for site, entry in list(self.status.items()):
            if entry.status is not ContributionStatus.CONTRIBUTED:
                continue
            if payload is None:
                self.status[site] = dataclasses.replace(
                    entry, status=ContributionStatus.FAILED, start_digest=None, error=error
                )
            elif site not in contributors:
                self.status[site] = dataclasses.replace(
                    entry, status=ContributionStatus.FAILED, error="upload not in the aggregate"
                )
        # by site: replies arrive in any order, the round's records do not depend on it
        contributions = dict(sorted(self.status.items()))
        return AggregationResult(payload, contributions, start_digest or self.digest, error)


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
        upload=upload, control=run.max_reply_bytes, keygen=n_sites * sealed + run.max_reply_bytes
    )
