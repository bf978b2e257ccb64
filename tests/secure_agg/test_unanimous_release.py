"""Unanimous rounds: where k equals the pinned members, each site releases with its upload.

The attacks come first: a site releases early only where its own manifest leaves no dropout
possible, never a mask-key share, and once per round.
"""

from __future__ import annotations

import numpy as np
import pytest
from secagg_harness import Federation, rng

from fedseal.secure_agg import recipe
from fedseal.secure_agg.errors import ConfigurationError, InvalidMessage
from fedseal.secure_agg.messages import ShareKind, ShareRelease, Stage
from fedseal.secure_agg.params import Mode


def _uploaded(fed: Federation, round_no: int = 1):
    """Every site advertised, shared and uploaded: the site states, the book and the sum."""
    info = fed.info(round_no)
    updates, weights = fed.updates(round_no)
    states, adverts = {}, []
    for s in fed.ids:
        states[s], advert = recipe.site_advertise(
            info, fed.identities[s], randbytes=rng("round", s, round_no)
        )
        adverts.append(advert)
    accepted, _ = recipe.collect_adverts(info, adverts, directory=fed.directory)
    bundles = {
        s: recipe.site_share_keys(
            states[s],
            recipe.adverts_for(info, accepted, s),
            directory=fed.directory,
            randbytes=rng("share", s),
        )
        for s in fed.ids
    }
    book = recipe.collect_envelopes(info, bundles, adverts=accepted, directory=fed.directory)
    total = recipe.UploadSum(
        info, directory=fed.directory, context=fed.context, expected=book.senders
    )
    for s in fed.ids:
        total.add(
            recipe.site_prepare_upload(
                info,
                fed.identities[s],
                updates[s],
                weight=weights[s],
                randbytes=rng("upload", s, round_no),
                cipher=fed.ciphers[s],
                secagg=states[s],
                envelopes=book.for_recipient(s),
                directory=fed.directory,
            ).message
        )
    return info, states, book, total


def test_no_early_release_where_a_site_may_drop_out(federation):
    """Attack: 5 members, k = 4 (one may drop). An early release would let a coordinator
    that claims site-00 dropped collect its mask-key shares from others after its seed shares;
    no site releases before the consistency stage there."""
    fed = federation(5, Mode.HE_SS, threshold=4)
    info, states, _, _ = _uploaded(fed)
    assert not recipe.unanimous(info, fed.ids)
    for site in fed.ids:
        with pytest.raises(InvalidMessage):
            recipe.site_release_unanimous(states[site], members=fed.ids)
    assert not any(states[s].released for s in fed.ids)


def test_a_site_pinned_to_more_members_than_k_does_not_release_early(federation):
    """Attack: the coordinator samples only k of a site's pinned members (k = n of the round);
    the site counts its own members, not the round's."""
    fed = federation(3, Mode.HE_SS, threshold=3)
    info, states, _, _ = _uploaded(fed)
    pinned = [*fed.ids, "site-99"]  # the site's manifest has a fourth member
    assert recipe.unanimous(info, fed.ids) and not recipe.unanimous(info, pinned)
    with pytest.raises(InvalidMessage):
        recipe.site_release_unanimous(states["site-01"], members=pinned)


def test_an_early_release_holds_seed_shares_of_every_member_only(federation):
    fed = federation(3, Mode.HE_SS, threshold=3)
    _, states, _, _ = _uploaded(fed)
    signed = recipe.site_release_unanimous(states["site-01"], members=fed.ids)
    body = signed.verify(fed.directory, run_id=fed.run_id, round_no=1, stage=Stage.RELEASE)
    entries = ShareRelease.from_bytes(body).entries
    assert sorted(owner for owner, _, _ in entries) == fed.ids
    assert {kind for _, kind, _ in entries} == {ShareKind.SELF_SEED}


def test_one_release_per_round_early_or_after_acks(federation):
    """A site releases once per round: not early after an acknowledged release, not twice
    early, and not after signing another survivor set."""
    fed = federation(3, Mode.HE_SS, threshold=3)
    _, states, _, total = _uploaded(fed)
    survivors = total.contributors
    acks = [recipe.site_consistency(states[s], survivors) for s in fed.ids]
    recipe.site_release_shares(states["site-00"], acks, directory=fed.directory)
    with pytest.raises(InvalidMessage):
        recipe.site_release_unanimous(states["site-00"], members=fed.ids)
    recipe.site_release_unanimous(states["site-01"], members=fed.ids)
    with pytest.raises(InvalidMessage):
        recipe.site_release_unanimous(states["site-01"], members=fed.ids)


@pytest.mark.parametrize("n_sites", [3, 5])
def test_a_unanimous_round_is_exact(federation, n_sites):
    fed = federation(n_sites, Mode.HE_SS, threshold=n_sites)
    outcome = fed.run_round(1, unanimous=True)
    np.testing.assert_array_equal(outcome.aggregate.sums, outcome.expected_sums)
    assert outcome.aggregate.total_weight == outcome.expected_weight
    assert outcome.contributors == tuple(fed.ids)


def test_the_coordinator_unmasks_without_acks_only_when_every_sampled_site_uploaded(federation):
    fed = federation(5, Mode.HE_SS, threshold=4)
    info, _, book, total = _uploaded(fed)
    with pytest.raises(ConfigurationError):
        recipe.aggregator_unmask(
            info, total, book=book, releases=[], directory=fed.directory, unanimous=True
        )
