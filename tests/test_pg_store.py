"""What sharing one PostgreSQL database takes, beyond the store's meaning (tests/test_store.py holds that on
both backends): the writer lock, stamps that rise in commit order across processes, change signals, and a
database that is not there."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest

from indexer.db.pg_store import PgStore
from indexer.db.rows import AudioResult, AudioState
from indexer.errors import StoreUnavailable
from tests.builders import Applier, wire
from tests.servers.events import commit, now_us, track_record
from tests.servers.postgres import free_port

DID = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"
URL = "https://audio.example.r2.dev/a.mp3"


@pytest.fixture
def stores(pg_url: str) -> Iterator[Callable[[], PgStore]]:
    opened: list[PgStore] = []

    def make() -> PgStore:
        opened.append(PgStore(pg_url))
        return opened[-1]

    yield make
    for store in opened:
        store.close()


def create(rkey: str, rev: str, t: int | None = None) -> dict:
    return commit(DID, rkey, rev, "create", track_record("Song", "Artist", URL), time_us=t or now_us())


def test_one_indexer_writes_batches_and_a_second_waits_for_the_lock(stores: Callable[[], PgStore]) -> None:
    first, second = Applier(stores()), Applier(stores())
    first.apply(create("3mmoojp7etg2g", "3mmoojp7vgo2a"))  # a batch with a cursor takes the free lock
    with pytest.raises(StoreUnavailable) as refused:
        second.apply(create("3mmoojp7etg2h", "3mmoojp7vgo2b"))
    assert refused.value.reason == "another indexer holds the writer lock"
    assert second.store.lead() is False
    local = second.planner.plan(wire(create("3mmoojp7etg2h", "3mmoojp7vgo2b")))
    local.cursor = None  # a replica's publish: not a stream event, so no lock needed
    second.store.apply(local, None)
    first.store.close()  # the server frees the lock as the session ends, a moment later
    assert eventually_true(second.store.lead)
    second.apply(create("3mmoojp7etg2j", "3mmoojp7vgo2c"))
    assert second.store.cursor() is not None


def eventually_true(check: Callable[[], bool], timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_the_lock_goes_with_its_connection(stores: Callable[[], PgStore], pg_url: str) -> None:
    first, second = Applier(stores()), stores()
    first.apply(create("3mmoojp7etg2g", "3mmoojp7vgo2a"))
    with psycopg.connect(pg_url, autocommit=True) as admin:  # a cut connection, as a network cut leaves it
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()"
        )
    assert eventually_true(second.lead)
    with pytest.raises(StoreUnavailable) as lost:
        first.apply(create("3mmoojp7etg2h", "3mmoojp7vgo2b"))  # on the cut connection
    assert lost.value.reason == "the database is unavailable: terminating connection due to administrator command"
    with pytest.raises(StoreUnavailable) as refused:
        first.apply(create("3mmoojp7etg2h", "3mmoojp7vgo2b"))  # connected again, but the lock is taken
    assert refused.value.reason == "another indexer holds the writer lock"


def test_a_stamp_taken_later_commits_later(stores: Callable[[], PgStore], pg_url: str) -> None:
    """A slow writer holds the clock; a second writer's stamp waits for its commit, so a reader that saw the
    second writer's rows can never miss the first's (the reason stamps come from one clock row)."""
    store = stores()
    with psycopg.connect(pg_url) as slow:
        (slow_stamp,) = slow.execute("UPDATE clock SET stamp = stamp + 1 RETURNING stamp").fetchone()
        slow.execute(
            "INSERT INTO tracks (did, rkey, rev, deleted, hidden, indexed_us, sort_us, audio_state, event_time_us, "
            "changed_us) VALUES (%s, 'slow', '3l', false, false, 0, 0, 'verified', 0, %s)",
            (DID, slow_stamp),
        )
        done = threading.Event()
        writer = threading.Thread(
            target=lambda: (store.record_audio([AudioResult(URL, AudioState.VERIFIED, "ok", 200, None)]), done.set())
        )
        writer.start()
        assert not done.wait(0.5)  # waits on the clock
        slow.commit()
        writer.join(5)
    with store.catalog() as snapshot:
        (row,) = [row for rows in snapshot.tracks(since=slow_stamp - 1) for row in rows]
        assert (row.rkey, row.changed_us) == ("slow", slow_stamp)
    with psycopg.connect(pg_url) as con:
        assert con.execute("SELECT checked_us FROM audio_checks").fetchone()[0] > slow_stamp


def test_a_commit_in_one_process_signals_the_others(stores: Callable[[], PgStore]) -> None:
    writer, reader = Applier(stores()), stores()
    with reader.catalog():  # the first catalog read starts listening
        pass
    seen = reader.generation
    writer.apply(create("3mmoojp7etg2g", "3mmoojp7vgo2a"))
    deadline = time.monotonic() + 1.0
    while reader.generation == seen and time.monotonic() < deadline:
        time.sleep(0.01)
    assert reader.generation > seen
    with writer.store.catalog():
        pass
    own = writer.store.generation
    writer.store.record_audio([AudioResult(URL, AudioState.VERIFIED, "ok", 200, None)])
    time.sleep(0.3)
    assert writer.store.generation == own + 1  # its own commit bumps once, and its signal not again


def test_a_listener_cut_off_counts_as_a_signal(stores: Callable[[], PgStore], pg_url: str) -> None:
    reader = stores()
    with reader.catalog():
        pass
    seen = reader.generation
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN%'")
    deadline = time.monotonic() + 3.0
    while reader.generation == seen and time.monotonic() < deadline:
        time.sleep(0.01)
    assert reader.generation > seen  # it may have missed signals while cut off: catch up


def test_an_unreachable_database_is_one_clear_line() -> None:
    url = f"postgresql://relay:s3cret@127.0.0.1:{free_port()}/relay"
    with pytest.raises(StoreUnavailable) as caught:
        PgStore(url)
    reason = caught.value.reason
    assert reason.startswith(f"the database at postgresql://relay:***@127.0.0.1:{url.split(':')[3].split('/')[0]}/relay "
                             "is unreachable: connection failed: ")
    assert "\n" not in reason and "s3cret" not in reason


def test_status_needs_a_migrated_database(postgres: object, pg_url: str) -> None:
    with pytest.raises(StoreUnavailable) as caught:
        PgStore(pg_url, read_only=True)
    assert caught.value.reason == f"{pg_url} is not a relay index"
    PgStore(pg_url).close()
    store = PgStore(pg_url, read_only=True)
    assert store.status(5)["tracks"] == {}
    store.close()
