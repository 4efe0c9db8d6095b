"""Core assignment: disjoint shares so colocated and disaggregated runs compare fairly."""

import pytest

from splitserve.cluster.cores import assign_cores
from splitserve.cluster.launcher import ClusterSpec


def test_cores_split_disjoint_and_cover_all() -> None:
    plan = assign_cores(2, [0, 1, 2, 3, 4])
    assert plan == [[0, 1, 2], [3, 4]]
    assert assign_cores(2, [0, 1]) == [[0], [1]]


def test_more_workers_than_cores_share_round_robin() -> None:
    assert assign_cores(3, [0, 1]) == [[0], [1], [0]]


def test_bad_assignments_are_refused() -> None:
    with pytest.raises(ValueError):
        assign_cores(0, [0])
    with pytest.raises(ValueError):
        assign_cores(1, [])


@pytest.mark.parametrize("kwargs", [
    {"num_prefill": 1, "num_decode": 0}, {"num_prefill": 0, "num_decode": 0},
    {"num_prefill": -1}, {"transport": "udp"},
])
def test_cluster_spec_refuses_incomplete_topologies(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        ClusterSpec(model_dir="m", **kwargs)


def test_roles_are_listed_prefill_decode_mixed() -> None:
    spec = ClusterSpec(model_dir="m", num_prefill=2, num_decode=1, num_mixed=1)
    assert spec.roles() == ["prefill", "prefill", "decode", "mixed"]


def test_cluster_never_hands_out_one_port_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    """free_port() may return a port again once released (here: always the router's)."""
    from splitserve.cluster import launcher

    ports = iter([8000, 8000, 9001, 8000, 9002, 9003, 9004])
    monkeypatch.setattr(launcher, "free_port", lambda host="127.0.0.1": next(ports))
    spawned: list[list[str]] = []
    cluster = launcher.Cluster(ClusterSpec(model_dir="m", router_port=8000, cores=(0, 1)))
    monkeypatch.setattr(cluster, "_spawn", lambda name, argv, url, cores, gpu=None:
                        spawned.append(argv))
    monkeypatch.setattr(cluster, "_wait_ready", lambda child, path: None)
    monkeypatch.setattr(cluster, "workers", lambda: [])
    cluster.start()
    used = [int(a[a.index(flag) + 1]) for a in spawned[:2] for flag in ("--port", "--kv-port")]
    assert sorted(used) == [9001, 9002, 9003, 9004]
