"""SEC-36 on a three-node Redis Cluster: what one worker revokes, another refuses, and one
request's reads stay in one hash slot."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
from redis.crc import key_slot

from keel.auth import SecurityState
from tests.unit.auth._support import Directory, active
from tests.unit.cache._channel import channel_workers, until
from tests.unit.cache._cluster import LocalCluster


@contextlib.asynccontextmanager
async def _workers(
    cluster: LocalCluster, namespace: str, directory: Directory
) -> AsyncIterator[list[SecurityState]]:
    async with channel_workers(
        cluster.url, 2, namespace=namespace, cluster=True, lag_bound=0.5
    ) as workers:
        yield [
            SecurityState(
                w.store, w.channel, load_subject=directory.load, load_session=directory.session
            )
            for w in workers
        ]


@pytest.mark.cluster
async def test_sec_36_a_logout_and_a_demotion_on_one_worker_are_refused_on_the_other(
    redis_cluster: LocalCluster, cluster_namespace: str
) -> None:
    directory = Directory({"ann": active("user", "admin")})
    async with _workers(redis_cluster, cluster_namespace, directory) as (a, b):
        for worker in (a, b):
            record, live = await worker.check("ann", "ann-s")
            assert live
            assert record.state is not None
            assert record.state.scopes == {"user", "admin"}
        heard = b.channel.stamp
        directory.change("ann", active("user"))
        await a.subject_changed("ann")
        directory.ended.add("ann-s")
        await a.sessions_ended("ann", ["ann-s"])
        await until(lambda: b.channel.stamp >= heard + 2)
        record, live = await b.check("ann", "ann-s")
        assert not live
        assert record.state is not None
        assert record.state.scopes == {"user"}


def test_the_keys_one_check_reads_share_a_hash_slot() -> None:
    subject = "5b0e8c8e-2f4e-4c3e-9a57-000000000001"
    keys = [
        "keel:" + SecurityState._subject_key(7, subject),
        "keel:" + SecurityState._session_key(7, subject, "sid-1"),
        "keel:" + SecurityState._session_key(7, subject, "sid-2"),
    ]
    assert len({key_slot(key.encode()) for key in keys}) == 1
