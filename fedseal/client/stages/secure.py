"""The site's side of secure aggregation (`he`, `he+ss`): Flower fields in, signed bytes out.

The mathematics is `fedseal.secure_agg.recipe`; this module keeps what a site must remember
between stages — the federation key of each run and the secrets of the rounds keyed and not yet
released — and turns message fields into recipe calls. An advertise stage may key a batch of
rounds at once (`Key.KEY_ROUNDS`, docs/protocol.md "Key batches"): fresh secrets per round, one
signed advert per round, each bound to its own round. Round secrets live only in this process's
memory and are dropped after the round's release (and those of other runs and of earlier rounds
whenever a later round goes on); the federation key is also kept in the site's state directory
(0600) so a restarted site can still decrypt the run's aggregates.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fedseal.client.site_keys import SiteKeys
from fedseal.client.trust import SiteTrust
from fedseal.contract.limits import MAX_KEY_ROUNDS
from fedseal.contract.message_fields import (
    MessageFieldError,
    field_bytes,
    field_bytes_list,
    field_int,
    field_int_list,
    field_str,
    field_str_list,
    split_by_counts,
)
from fedseal.contract.site_identity import SitePublicKeys, decode_directory, encode_directory
from fedseal.contract.wire import Key
from fedseal.secure_agg import bfv, recipe
from fedseal.secure_agg.messages import AggregateMessage, Signed
from fedseal.secure_agg.params import MAX_SITES, Mode, ProtocolParams, params_from_json

__all__ = ["SecureSite", "round_info_from_fields"]

log = logging.getLogger("fedseal.client")


def _params(fields: Mapping[str, Any]) -> ProtocolParams:
    return params_from_json(field_str(fields, Key.PROTOCOL_PARAMS))


def round_info_from_fields(run_id: int, fields: Mapping[str, Any]) -> recipe.RoundInfo:
    """The round as both sides must see it: run, round number, parameters, sampled sites."""
    params = _params(fields)
    sampled = tuple(field_str_list(fields, Key.SAMPLED, max_items=MAX_SITES))
    return recipe.RoundInfo(str(run_id), _round_no(fields), params, sampled)


def _round_no(fields: Mapping[str, Any]) -> int:
    return field_int(fields, Key.ROUND, low=0, high=2**31)


_SIGNED_MAX = 1 << 20  # one advert, envelope or acknowledgement
_DIRECTORY_MAX = 1 << 24  # every enrolled site's name and two keys (~110 characters a site)
_SEALED_KEY_MAX = 16 << 20  # the sealed federation key (a secret BFV context)
_AGGREGATE_MAX = 1 << 31  # bounded before this by the site's message limit


def _signed_list(fields: Mapping[str, Any], *, rounds: int = 1) -> list[Signed]:
    return [
        Signed.from_bytes(b)
        for b in field_bytes_list(
            fields, Key.RELAYED, max_items=MAX_SITES * rounds, max_len=_SIGNED_MAX
        )
    ]


def _rounds_listed(fields: Mapping[str, Any], key: str = Key.KEY_ROUNDS) -> list[int] | None:
    """A key batch's rounds (or per-round counts), None outside a key batch."""
    if key not in fields:
        return None
    return field_int_list(fields, key, max_items=MAX_KEY_ROUNDS)


class SecureSite:
    """One site's keys, federation keys by run, and the round secrets in progress.

    Every member key, custodian, mode, sampled set and threshold in a message is checked
    against `trust` (the site's pinned manifest and policy) before anything is computed; keys
    used to verify or seal come from the manifest only.
    """

    def __init__(self, keys: SiteKeys | None, state_dir: Path, trust: SiteTrust) -> None:
        self._keys = keys
        self._state_dir = Path(state_dir)
        self.trust = trust
        self._ciphers: dict[int, bfv.SiteCipher] = {}
        self._rounds: dict[tuple[int, int], recipe.SiteRound] = {}  # keyed, not yet released
        self._uploaded: set[tuple[int, int]] = set()
        self._used: dict[int, int] = {}  # run -> latest round uploaded, acknowledged or released

    # -- identity -------------------------------------------------------------------------

    @property
    def keys(self) -> SiteKeys:
        if self._keys is None:
            raise PermissionError(
                "this site has no keys; run `fl-client --site=NAME enroll` and have the "
                "operator enrol it"
            )
        return self._keys

    def identity(self) -> recipe.SiteIdentity:
        return recipe.SiteIdentity(self.keys.site, self.keys.identity)

    def identity_directory(self) -> dict[str, bytes]:
        """Every pinned member's identity key: what signatures are verified against."""
        return {name: m.identity for name, m in self.trust.manifest.members.items()}

    def _checked_directory(self, fields: Mapping[str, Any]) -> dict[str, SitePublicKeys]:
        """The message's directory, each entry equal to the pinned manifest's."""
        decoded = decode_directory(field_str(fields, Key.DIRECTORY, max_len=_DIRECTORY_MAX))
        pinned = self.trust.directory(fields, decoded)
        return {name: SitePublicKeys(name, m.identity, m.sealing) for name, m in pinned.items()}

    def _checked_params(self, fields: Mapping[str, Any]) -> ProtocolParams:
        """The run's parameters, in a mode this site and its manifest accept."""
        mode = self.trust.mode(fields)
        if mode is Mode.PLAIN:
            raise self.trust.refuse("a key ceremony or key stage in mode plain")
        return _params(fields)

    def _checked_round(
        self, run_id: int, fields: Mapping[str, Any], *, taking_part: bool = True
    ) -> recipe.RoundInfo:
        """The round, checked: mode, members, n, k; `taking_part=False` for an aggregate of a
        round this site missed (it need not be in that round's sampled set)."""
        self._checked_params(fields)
        info = round_info_from_fields(run_id, fields)
        if taking_part:
            self.trust.check_round(info)
        else:
            for name in info.sampled:
                self.trust.member(name, "sampled site")
        bound = self.bound_mode(run_id)
        if bound is not None and bound is not info.mode:
            raise self.trust.refuse(f"run {run_id} is bound to mode {bound}, message {info.mode}")
        return info

    def bound_mode(self, run_id: int) -> Mode | None:
        """The mode of the run's federation key, once this site holds one."""
        path = self._key_file(run_id)
        if not path.is_file():
            return None
        return params_from_json(json.loads(path.read_text("utf-8"))["params"]).mode

    # -- federation key ceremony -----------------------------------------------------------

    def _key_file(self, run_id: int) -> Path:
        return self._state_dir / "runs" / str(run_id) / "federation-key.json"

    def keygen(self, run_id: int, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Custodian: make the run's BFV key, seal it to every site, sign the public part.

        Sealed only to pinned members, with their pinned keys; refused if the run has a key."""
        params = self._checked_params(fields)
        directory = self._checked_directory(fields)
        self._refuse_second_key(run_id)
        me = self.identity()
        if me.site_id not in directory:
            raise PermissionError(f"site {me.site_id} is not in the enrolled directory")
        context = bfv.make_secret_context(params.bfv)
        sealed = recipe.custodian_seal_federation_key(
            context,
            custodian=me,
            run_id=str(run_id),
            recipients={s: k.sealing for s, k in directory.items()},
            randbytes=os.urandom,
        )
        public = recipe.custodian_public_context(context, custodian=me, run_id=str(run_id))
        own = sealed.pop(me.site_id)
        self._open_and_store(run_id, own.to_bytes(), me.site_id, fields)
        return {
            Key.SEALED_SITES: json.dumps(sorted(sealed)),
            Key.SEALED_KEYS: [sealed[s].to_bytes() for s in sorted(sealed)],
            Key.PUBLIC_CONTEXT: public.to_bytes(),
        }

    def install(self, run_id: int, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Other sites: open the sealed federation key after checking the custodian's signature
        against its pinned identity key; a second key for the same run is refused."""
        self._checked_params(fields)
        self._checked_directory(fields)
        custodian = field_str(fields, Key.CUSTODIAN, max_len=256)
        self.trust.member(custodian, "custodian")
        sealed = field_bytes(fields, Key.SEALED_KEY, max_len=_SEALED_KEY_MAX)
        if self._key_file(run_id).is_file():
            record = json.loads(self._key_file(run_id).read_text("utf-8"))
            if record["sealed"] == base64.b64encode(sealed).decode() and (
                record["custodian"] == custodian
            ):
                return {}  # the same key delivered again: nothing changes
        self._refuse_second_key(run_id)
        self._open_and_store(run_id, sealed, custodian, fields)
        return {}

    def _refuse_second_key(self, run_id: int) -> None:
        if self._key_file(run_id).is_file():
            raise self.trust.refuse(f"run {run_id} already has a federation key on this site")

    def _open_and_store(
        self, run_id: int, sealed: bytes, custodian: str, fields: Mapping[str, Any]
    ) -> None:
        """Open the key (proving it works), then keep it on disk still sealed to this site."""
        record = {
            "sealed": base64.b64encode(sealed).decode(),
            "custodian": custodian,
            "directory": encode_directory(self._checked_directory(fields)),
            "params": field_str(fields, Key.PROTOCOL_PARAMS),
        }
        self._ciphers[run_id] = self._open(run_id, record)
        path = self._key_file(run_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(record))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)

    def _open(self, run_id: int, record: Mapping[str, str]) -> bfv.SiteCipher:
        params = params_from_json(record["params"])
        return recipe.site_open_federation_key(
            Signed.from_bytes(base64.b64decode(record["sealed"])),
            site_id=self.keys.site,
            sealing_key=self.keys.sealing,
            custodian_id=record["custodian"],
            directory=self.trust.identities([record["custodian"]]),
            run_id=str(run_id),
            params=params.bfv,
        )

    def cipher(self, run_id: int) -> bfv.SiteCipher:
        if run_id not in self._ciphers:
            path = self._key_file(run_id)
            if not path.is_file():
                raise PermissionError(f"this site holds no federation key for run {run_id}")
            self._ciphers[run_id] = self._open(run_id, json.loads(path.read_text("utf-8")))
        return self._ciphers[run_id]

    # -- he+ss key stages ------------------------------------------------------------------

    def advertise(self, run_id: int, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Fresh round secrets for the message's round, or for each round of a key batch
        (`Key.KEY_ROUNDS`: consecutive rounds from the message's round, at most
        `MAX_KEY_ROUNDS`), one signed advert per round. A round keyed before and not used yet
        (no upload, survivor set or release of this site in it) is keyed again with fresh
        secrets, which replace the unused ones and the peers' shares held with them: a
        restarted site lost its secrets of a key batch, so the batch's remaining rounds are
        keyed anew (docs/protocol.md, "Key batches"). A round this site used, or one before it,
        is never keyed again: its secrets served that round."""
        info = self._checked_round(run_id, fields)
        listed = _rounds_listed(fields)
        first = info.round_no
        numbers = [first] if listed is None else listed
        if numbers != list(range(first, first + len(numbers))):
            raise self.trust.refuse(
                f"a key batch must list consecutive rounds from round {first}, at most "
                f"{MAX_KEY_ROUNDS}; the message lists {numbers[:8]}"
            )
        for number in numbers:
            held = self._rounds.get((run_id, number))
            if (run_id, number) in self._uploaded or (
                held is not None and (held.survivors is not None or held.released)
            ):
                raise self.trust.refuse(f"round {number} of run {run_id} was used before")
        used = self._used.get(run_id)
        if used is not None and first <= used:
            raise self.trust.refuse(
                f"round {first} of run {run_id} is not after round {used}, which this site "
                "uploaded in or released"
            )
        again = [n for n in numbers if (run_id, n) in self._rounds]
        if again:
            log.info(
                "run %d: rounds %s keyed again: their unused secrets are replaced", run_id, again
            )
        self._forget(run_id, first, other_runs=True)
        me = self.identity()
        messages = []
        for number in numbers:
            state, message = recipe.site_advertise(
                recipe.RoundInfo(info.run_id, number, info.params, info.sampled),
                me,
                randbytes=os.urandom,
            )
            self._rounds[(run_id, number)] = state
            messages.append(message.to_bytes())
        if listed is None:
            return {Key.SIGNED: messages[0]}
        return {Key.SIGNED_LIST: messages}

    def share(self, run_id: int, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Shamir-share the secrets of the message's round, or of each round a key batch lists
        (`Key.KEY_ROUNDS`, each advertised here and not shared yet, with its own relayed
        adverts: `Key.RELAYED_COUNTS` of `Key.RELAYED` each, in order)."""
        info = self._checked_round(run_id, fields)
        listed = _rounds_listed(fields)
        if listed is None:
            state = self._unshared(run_id, info, info.round_no)
            envelopes = recipe.site_share_keys(
                state,
                _signed_list(fields),
                directory=self.identity_directory(),
                randbytes=os.urandom,
            )
            return {Key.SIGNED_LIST: [e.to_bytes() for e in envelopes]}
        if listed != sorted(set(listed)) or listed[0] < info.round_no:
            raise self.trust.refuse(
                f"a key batch's share stage must list increasing rounds from round "
                f"{info.round_no}; the message lists {listed[:8]}"
            )
        counts = _rounds_listed(fields, Key.RELAYED_COUNTS)
        if counts is None or len(counts) != len(listed):
            raise MessageFieldError("a key batch's share stage needs one relayed count per round")
        states = [self._unshared(run_id, info, number) for number in listed]
        relayed = split_by_counts(_signed_list(fields, rounds=len(listed)), counts)
        out: list[bytes] = []
        sent: list[int] = []
        for state, adverts in zip(states, relayed, strict=True):
            envelopes = recipe.site_share_keys(
                state, adverts, directory=self.identity_directory(), randbytes=os.urandom
            )
            out.extend(e.to_bytes() for e in envelopes)
            sent.append(len(envelopes))
        return {Key.SIGNED_LIST: out, Key.SIGNED_COUNTS: sent}

    def _unshared(self, run_id: int, info: recipe.RoundInfo, number: int) -> recipe.SiteRound:
        """The secrets of round `number`, advertised for the message's sampled set and not
        shared yet (a second sharing of the same secrets is refused)."""
        state = self._rounds.get((run_id, number))
        if state is None:
            raise PermissionError(f"no key advertisement of this site for round {number}")
        if state.info.sampled != info.sampled:
            raise self.trust.refuse(f"round {number} was advertised for another sampled set")
        if state.peers:
            raise self.trust.refuse(f"round {number} of run {run_id} was shared before")
        return state

    def consistency(self, run_id: int, fields: Mapping[str, Any]) -> dict[str, Any]:
        self._checked_round(run_id, fields)
        state = self._round(run_id, fields)
        survivors = field_str_list(fields, Key.SURVIVORS, max_items=MAX_SITES)
        signed = recipe.site_consistency(state, survivors)
        self._note_used(run_id, state.info.round_no)
        return {Key.SIGNED: signed.to_bytes()}

    def release(self, run_id: int, fields: Mapping[str, Any]) -> dict[str, Any]:
        self._checked_round(run_id, fields)
        state = self._round(run_id, fields)
        acks = _signed_list(fields)
        message = recipe.site_release_shares(state, acks, directory=self.identity_directory())
        self._rounds.pop((run_id, state.info.round_no), None)  # nothing more to do with it
        self._note_used(run_id, state.info.round_no)
        return {Key.SIGNED: message.to_bytes()}

    def release_with_upload(self, run_id: int, fields: Mapping[str, Any]) -> bytes | None:
        """The round's signed share release, sent beside the upload, when the round is
        unanimous by this site's own manifest (its `k`, fixed at the advertisement, equals
        the pinned members); None otherwise, and the round goes on to consistency and
        release stages (docs/protocol.md, "Unanimous rounds")."""
        number = _round_no(fields)
        state = self._rounds.get((run_id, number))
        members = list(self.trust.manifest.members)
        if state is None or not recipe.unanimous(state.info, members):
            return None
        message = recipe.site_release_unanimous(state, members=members)
        self._rounds.pop((run_id, number), None)
        self._note_used(run_id, number)
        return message.to_bytes()

    def _round(self, run_id: int, fields: Mapping[str, Any]) -> recipe.SiteRound:
        """The secrets of the message's round; those of earlier rounds of the run are
        forgotten (the run has moved on: they can serve no upload or release any more)."""
        number = _round_no(fields)
        self._forget(run_id, number)
        state = self._rounds.get((run_id, number))
        if state is None:
            raise PermissionError(f"no key advertisement of this site for round {number}")
        return state

    def _note_used(self, run_id: int, number: int) -> None:
        """Round `number` served an upload, a survivor set or a release: never keyed again."""
        self._used[run_id] = max(self._used.get(run_id, 0), number)

    def _forget(self, run_id: int, number: int, *, other_runs: bool = False) -> None:
        """Drop the secrets of the run's rounds before `number` (and of every other run)."""
        for key in list(self._rounds):
            if (key[0] == run_id and key[1] < number) or (other_runs and key[0] != run_id):
                del self._rounds[key]

    def held_rounds(self, run_id: int) -> list[int]:
        """The rounds of `run_id` whose secrets this site holds now (for tests and logs)."""
        return sorted(number for run, number in self._rounds if run == run_id)

    # -- upload and apply ------------------------------------------------------------------

    def prepare_upload(
        self, run_id: int, fields: Mapping[str, Any], delta: np.ndarray, weight: int
    ) -> tuple[bytes, int]:
        """Quantise, (mask,) encrypt and sign the update; returns (upload, clipped count).

        Round secrets serve one upload only."""
        info = self._checked_round(run_id, fields)
        if (run_id, info.round_no) in self._uploaded:
            raise self.trust.refuse(f"round {info.round_no} of run {run_id} was uploaded before")
        cipher = self.cipher(run_id)
        secagg = None
        envelopes: list[Signed] = []
        directory = self.identity_directory()
        if info.mode is Mode.HE_SS:
            secagg = self._round(run_id, fields)
            envelopes = _signed_list(fields)
        prepared = recipe.site_prepare_upload(
            info,
            self.identity(),
            delta.astype(np.float64),
            weight=weight,
            randbytes=os.urandom,
            cipher=cipher,
            secagg=secagg,
            envelopes=envelopes,
            directory=directory,
        )
        self._uploaded.add((run_id, info.round_no))
        self._note_used(run_id, info.round_no)
        if prepared.n_clipped:  # the aggregate holds these at the bound, not as trained
            log.warning(
                "round %d: %d of %d adapter coordinates moved by more than the run's update "
                "clip %g and were clipped to it: the run's --clip is too tight for its training",
                info.round_no,
                prepared.n_clipped,
                delta.size,
                info.params.clip,
            )
        return prepared.message.to_bytes(), int(prepared.n_clipped)

    def decrypt_mean(self, run_id: int, fields: Mapping[str, Any], payload: bytes) -> np.ndarray:
        """The round's weighted mean update from its encrypted aggregate."""
        if not isinstance(payload, bytes) or len(payload) > _AGGREGATE_MAX:
            raise MessageFieldError("the aggregate must be bytes")
        info = self._checked_round(run_id, fields, taking_part=False)
        aggregate = recipe.site_decrypt_aggregate(
            info, AggregateMessage.from_bytes(payload), cipher=self.cipher(run_id)
        )
        return aggregate.mean().astype(np.float32)
