"""SecAgg+ neighbour graphs: the graph's properties, planning, and exact rounds with dropouts."""

from __future__ import annotations

import json
from collections import deque

import numpy as np
import pytest

from fedseal.secure_agg import recipe
from fedseal.secure_agg.errors import ConfigurationError, InsufficientSurvivors
from fedseal.secure_agg.graph import harary_graph, neighbour_threshold, round_seed, secure_degree
from fedseal.secure_agg.params import (
    SPARSE_ABOVE,
    Mode,
    ProtocolParams,
    params_from_json,
    params_to_json,
    plan,
)

SITES = [f"site-{i:03d}" for i in range(100)]


def _connected(graph) -> bool:
    start = graph.sites[0]
    seen, todo = {start}, deque([start])
    while todo:
        for other in graph.of(todo.popleft()):
            if other not in seen:
                seen.add(other)
                todo.append(other)
    return seen == set(graph.sites)


@pytest.mark.parametrize("n", [10, 31, 60, 100])
@pytest.mark.parametrize("degree", [2, 4, 8, 12])
def test_graph_is_symmetric_connected_and_regular(n, degree):
    sites = SITES[:n]
    graph = harary_graph(sites, degree=degree, seed=round_seed("run", 1, sites))
    assert set(graph.neighbours) == set(sites)
    for site in sites:
        assert site not in graph.of(site)
        assert len(graph.of(site)) == min(degree, n - 1)
        assert all(site in graph.of(other) for other in graph.of(site))
        assert graph.closed(site) == graph.of(site) | {site}
    assert _connected(graph)


def test_every_site_computes_the_same_graph_and_seeds_change_it():
    sites = SITES[:60]
    seed = round_seed("run-a", 3, sites)
    assert seed == round_seed("run-a", 3, list(reversed(sites)))  # order of the sampled list
    shuffled = [sites[(7 * i) % 60] for i in range(60)]
    assert harary_graph(sites, degree=8, seed=seed) == harary_graph(shuffled, degree=8, seed=seed)
    others = {
        round_seed("run-b", 3, sites),
        round_seed("run-a", 4, sites),
        round_seed("run-a", 3, sites[:-1]),
    }
    assert seed not in others and len(others) == 3
    graphs = {
        frozenset(
            (s, frozenset(n)) for s, n in harary_graph(sites, degree=8, seed=o).neighbours.items()
        )
        for o in others | {seed}
    }
    assert len(graphs) == 4


def test_round_info_graph_comes_from_public_round_data():
    params = plan(
        vector_length=10, clip=1.0, max_weight=5, n_sites=60, sparse_above=20, neighbours=8
    )
    a = recipe.RoundInfo("run", 2, params, tuple(reversed(SITES[:60])))
    b = recipe.RoundInfo("run", 2, params, tuple(SITES[:60]))
    assert a.graph is not None and a.graph == b.graph
    assert a.graph.degree == 8 and a.secret_threshold == params.neighbour_threshold == 5
    assert recipe.RoundInfo("run", 3, params, SITES[:60]).graph != a.graph
    # a round sampling too few sites for the degree runs with all pairs
    twelve = plan(
        vector_length=10, clip=1.0, max_weight=5, n_sites=12, sparse_above=10, neighbours=10
    )
    assert twelve.neighbours == 10
    assert recipe.RoundInfo("run", 2, twelve, SITES[:12]).graph is not None
    small = recipe.RoundInfo("run", 2, twelve, SITES[:11])
    assert small.graph is None and small.holders(SITES[0]) == frozenset(SITES[:11])
    assert small.secret_threshold == twelve.threshold


def test_graph_refuses_bad_arguments():
    seed = round_seed("run", 1, SITES[:10])
    with pytest.raises(ConfigurationError):
        harary_graph(SITES[:10], degree=3, seed=seed)
    with pytest.raises(ConfigurationError):
        harary_graph(SITES[:10], degree=4, seed=b"short")
    with pytest.raises(ConfigurationError):
        harary_graph([*SITES[:10], SITES[0]], degree=4, seed=seed)
    complete = harary_graph(SITES[:10], degree=12, seed=seed)
    assert all(len(complete.of(s)) == 9 for s in SITES[:10])


def test_small_federations_keep_all_pairs_and_their_wire_form():
    for n in (3, 10, SPARSE_ABOVE):
        params = plan(vector_length=100, clip=1.0, max_weight=50, n_sites=n)
        assert params.neighbours == 0 and params.neighbour_threshold == 0
        text = params_to_json(params)
        assert "neighbour" not in text
        assert params_from_json(text) == params
        assert recipe.RoundInfo("r", 1, params, SITES[:n]).graph is None


def test_large_federations_plan_a_sparse_graph():
    params = plan(vector_length=100, clip=1.0, max_weight=50, n_sites=100)
    assert 2 <= params.neighbours < 99 and params.neighbours % 2 == 0
    assert (
        params.neighbour_threshold
        == secure_degree(100, corrupt_fraction=0.1, dropout_fraction=0.1)[1]
    )
    assert params_from_json(params_to_json(params)) == params
    assert json.loads(params_to_json(params))["neighbours"] == params.neighbours
    assert (
        plan(vector_length=100, clip=1.0, max_weight=50, n_sites=100, mode=Mode.HE).neighbours == 0
    )
    # explicit degree; one that reaches all pairs plans all pairs
    assert (
        plan(vector_length=10, clip=1.0, max_weight=5, n_sites=100, neighbours=12).neighbours == 12
    )
    assert plan(vector_length=10, clip=1.0, max_weight=5, n_sites=60, neighbours=60).neighbours == 0


def test_secure_degree_grows_logarithmically():
    degrees = {
        n: secure_degree(n, corrupt_fraction=0.05, dropout_fraction=0.05)
        for n in (100, 1000, 10000)
    }
    for n, (degree, t) in degrees.items():
        assert degree % 2 == 0 and degree < n - 1
        assert neighbour_threshold(degree) <= t <= degree + 1
    assert degrees[100][0] < degrees[1000][0] < degrees[10000][0] < 64
    assert secure_degree(30, corrupt_fraction=0.3, dropout_fraction=0.1) is None  # all pairs


@pytest.mark.parametrize(
    ("degree", "threshold", "why"),
    [
        (3, 3, "odd"),
        (8, 4, "not a majority of 9"),
        (8, 10, "more than the holders"),
        (60, 31, "all pairs"),
    ],
)
def test_params_refuse_bad_graphs(degree, threshold, why):
    base = plan(vector_length=10, clip=1.0, max_weight=5, n_sites=60)
    fields = {
        name: getattr(base, name)
        for name in ProtocolParams.__dataclass_fields__
        if name not in ("neighbours", "neighbour_threshold")
    }
    with pytest.raises(ConfigurationError):
        ProtocolParams(**fields, neighbours=degree, neighbour_threshold=threshold)
    with pytest.raises(ConfigurationError):
        ProtocolParams(**{**fields, "mode": Mode.HE}, neighbours=8, neighbour_threshold=5)


# --------------------------------------------------------------------------- rounds

GRAPH_FEDERATIONS = {30: 6, 60: 8}  # sites -> degree (neighbourhood threshold 4 and 5)


def _sparse(federation, n_sites):
    return federation(
        n_sites,
        Mode.HE_SS,
        vector_length=500,
        sparse_above=20,
        neighbours=GRAPH_FEDERATIONS[n_sites],
    )


def _independent(graph, count: int, start: int = 0) -> set[str]:
    """`count` sites no two of which are neighbours (their neighbourhoods keep enough survivors)."""
    chosen: set[str] = set()
    for site in graph.sites[start:] + graph.sites[:start]:
        if len(chosen) == count:
            break
        if not graph.closed(site) & chosen:
            chosen.add(site)
    assert len(chosen) == count
    return chosen


def _check(outcome) -> None:
    np.testing.assert_array_equal(outcome.aggregate.sums, outcome.expected_sums)
    assert outcome.aggregate.total_weight == outcome.expected_weight


@pytest.mark.parametrize("n_sites", sorted(GRAPH_FEDERATIONS))
def test_sparse_round_is_exact_and_shares_only_with_neighbours(federation, n_sites):
    fed = _sparse(federation, n_sites)
    info = fed.info(1)
    assert info.graph is not None and info.graph.degree == GRAPH_FEDERATIONS[n_sites]
    outcome = fed.run_round(1)
    _check(outcome)
    assert outcome.contributors == tuple(fed.ids)


@pytest.mark.parametrize("n_sites", sorted(GRAPH_FEDERATIONS))
@pytest.mark.parametrize("stage", ["advertise", "share", "upload", "ack", "release"])
def test_sparse_round_survives_drops_at_each_stage(federation, n_sites, stage):
    fed = _sparse(federation, n_sites)
    round_no = 10 + ["advertise", "share", "upload", "ack", "release"].index(stage)
    victims = _independent(fed.info(round_no).graph, 3, start=round_no)
    outcome = fed.run_round(round_no, drops={stage: victims})
    _check(outcome)
    if stage in ("advertise", "share", "upload"):
        assert set(outcome.contributors) == set(fed.ids) - victims
    else:  # uploaded before dropping: counted
        assert set(outcome.contributors) == set(fed.ids)


def test_sparse_round_with_drops_spread_over_stages(federation):
    fed = _sparse(federation, 60)
    graph = fed.info(30).graph
    victims = sorted(_independent(graph, 5, start=3))
    stages = ["advertise", "share", "upload", "ack", "release"]
    outcome = fed.run_round(30, drops={s: {v} for s, v in zip(stages, victims, strict=True)})
    _check(outcome)
    assert set(outcome.contributors) == set(fed.ids) - set(victims[:3])


def test_sparse_round_aborts_when_a_dropped_site_keeps_too_few_neighbours(federation):
    fed = _sparse(federation, 30)  # degree 6, threshold 4 of 7 holders
    graph = fed.info(40).graph
    target = graph.sites[5]
    gone = {target, *sorted(graph.of(target))[:3]}  # 3 of its 6 neighbours survive, 4 needed
    with pytest.raises(InsufficientSurvivors, match="mask key of dropped site"):
        fed.run_round(40, drops={"upload": gone})


def test_sparse_round_aborts_when_a_survivor_keeps_too_few_neighbours(federation):
    fed = _sparse(federation, 30)
    graph = fed.info(41).graph
    target = graph.sites[7]
    gone = set(sorted(graph.of(target))[:4])  # its own secrets: 3 holders left of 4 needed
    with pytest.raises(InsufficientSurvivors):
        fed.run_round(41, drops={"share": gone})
