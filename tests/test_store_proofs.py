"""Record proofs and upload sizes through the real write path, on each backend: what `apply_proofs` does to
rows the planner stored pending, what the sweep and the audio recheck ask for, and an account's quota."""

from typing import Any

import pytest

from indexer.atproto.proof import Absent, Proven
from indexer.db.rows import AudioResult, AudioState, ProofJob
from indexer.db.store import Store
from indexer.ingest.proofs import outcomes
from indexer.net.prover import ProofResult
from tests.builders import Applier
from tests.servers.events import commit, now_us, track_record
from tests.stores import Opener, query

DID = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"
RKEY = "3mmoojp7etg2g"
URL = "https://audio.example.r2.dev/a.mp3"
MAX_FUTURE_US = 300_000_000


class Index(Applier):
    def __init__(self, store: Store) -> None:
        super().__init__(store, verify=True)

    def proof(self, rkey: str = RKEY) -> tuple[Any, ...]:
        rows = query(
            self.store,
            "SELECT rev, proof, proof_reason, deleted, title FROM tracks WHERE did = ? AND rkey = ?",
            DID,
            rkey,
        )
        return rows[0]

    def prove(self, *results: ProofResult, misses: dict[ProofJob, int] | None = None) -> list[str]:
        return self.store.apply_proofs(outcomes(list(results), MAX_FUTURE_US, misses or {}))

    def visible(self) -> list[str]:
        with self.store.catalog() as snapshot:
            return [row.rkey for rows in snapshot.tracks(None) for row in rows]


@pytest.fixture
def index(open_backend: Opener) -> Index:
    return Index(open_backend())


def create(rev: str, title: str = "Song", rkey: str = RKEY) -> dict[str, Any]:
    return commit(DID, rkey, rev, "create", track_record(title, "Artist", URL))


def job_of(index: Index, rkey: str = RKEY) -> ProofJob:
    [job] = [j for j in index.store.pending_proofs(now_us()) if j.rkey == rkey]
    return job


def test_a_record_from_the_stream_waits_pending_and_shows_once_proven(index: Index) -> None:
    event = create("3mmoojp7vgo2a")
    index.apply(event)
    index.store.record_audio([AudioResult(URL, AudioState.VERIFIED, "ok", 200, "audio/mpeg")])
    job = job_of(index)
    assert job == ProofJob(DID, RKEY, "3mmoojp7vgo2a", event["commit"]["cid"])
    assert index.visible() == []  # verified audio is not enough
    index.prove(ProofResult(job, Proven(event["commit"]["record"], job.cid or "", job.rev)))
    assert index.proof() == ("3mmoojp7vgo2a", "proven", None, False, "Song")
    assert index.visible() == [RKEY]
    assert index.store.pending_proofs(now_us()) == []


def test_a_differing_record_at_the_events_rev_is_forged_and_the_pds_record_stands_in_its_place(
    index: Index,
) -> None:
    index.apply(create("3mmoojp7vgo2a", "Claimed"))
    index.store.record_audio([AudioResult(URL, AudioState.VERIFIED, "ok", 200, "audio/mpeg")])
    job = job_of(index)
    real = track_record("Real", "Artist", URL)
    assert index.prove(ProofResult(job, Proven(real, "bafyreal", job.rev))) == []  # its audio is known
    assert index.proof() == ("3mmoojp7vgo2a", "proven", None, False, "Real")
    assert index.visible() == [RKEY]
    reason = f"unproven: at rev 3mmoojp7vgo2a the PDS holds record bafyreal, not the event's record {job.cid}"
    assert query(index.store, "SELECT uri, rev, reason FROM rejections") == [
        (f"at://{DID}/app.relay.track/{RKEY}", "3mmoojp7vgo2a", reason)
    ]


def test_a_create_the_pds_never_had_is_forged_and_becomes_a_tombstone_at_the_pds_rev(index: Index) -> None:
    index.apply(create("3mmoojp7vgo2k"))
    job = job_of(index)
    index.prove(ProofResult(job, Absent("3mmoojp7vgo2a")))  # the repository is older than the claim
    assert index.proof() == ("3mmoojp7vgo2a", "proven", None, True, None)
    assert query(index.store, "SELECT reason FROM rejections") == [
        ("unproven: the PDS's repository is at rev 3mmoojp7vgo2a, older than the event's 3mmoojp7vgo2k",)
    ]
    # The author's next real create, at a rev between the two, is not held back by the forged one's.
    index.apply(create("3mmoojp7vgo2c", "Real"))
    assert index.proof()[:2] == ("3mmoojp7vgo2c", "pending")


def test_an_answer_that_proves_nothing_marks_the_row_forged_and_never_shows_it(index: Index) -> None:
    index.apply(create("3mmoojp7vgo2a"))
    index.store.record_audio([AudioResult(URL, AudioState.VERIFIED, "ok", 200, "audio/mpeg")])
    index.prove(ProofResult(job_of(index), refused="the commit's signature does not verify"))
    assert index.proof() == ("3mmoojp7vgo2a", "forged", "the commit's signature does not verify", False, "Song")
    assert index.visible() == []
    assert index.store.status(5)["tracks"] == {"forged": 1}
    assert query(index.store, "SELECT reason FROM rejections") == [
        ("unproven: the commit's signature does not verify",)
    ]


def test_a_record_the_pds_no_longer_holds_is_superseded_by_a_tombstone_at_the_pds_rev(index: Index) -> None:
    index.apply(create("3mmoojp7vgo2a"))
    index.prove(ProofResult(job_of(index), Absent("3mmoojp7vgo2z")))
    assert index.proof() == ("3mmoojp7vgo2z", "proven", None, True, None)
    # The stream's create, replayed, cannot bring it back.
    index.apply(create("3mmoojp7vgo2a"))
    assert index.proof()[3] is True


def test_a_newer_record_at_the_pds_replaces_the_streams_claim_and_asks_for_its_audio(index: Index) -> None:
    index.apply(create("3mmoojp7vgo2a", "Claimed"))
    record = track_record("Real", "Artist", "https://audio.example.r2.dev/real.mp3")
    pending = index.prove(ProofResult(job_of(index), Proven(record, "bafyreal", "3mmoojp7vgo2z")))
    assert pending == ["https://audio.example.r2.dev/real.mp3"]
    assert index.proof() == ("3mmoojp7vgo2z", "proven", None, False, "Real")


def test_an_unreachable_pds_delays_the_proof_with_backoff_and_it_is_asked_again_later(index: Index) -> None:
    index.apply(create("3mmoojp7vgo2a"))
    job = job_of(index)
    before = now_us()
    index.prove(ProofResult(job, unreachable="PDS answered 503"), misses={job: 2})
    assert index.proof()[1:3] == ("pending", "PDS answered 503")
    assert index.store.pending_proofs(now_us()) == []
    [(after_us,)] = query(index.store, "SELECT proof_after_us FROM tracks")
    assert before + 240_000_000 <= after_us <= now_us() + 240_000_000  # 60 s doubled twice
    assert index.store.pending_proofs(after_us) == [job]
    # A PDS that asks for longer than the backoff is given it.
    index.prove(ProofResult(job, unreachable="PDS answered 429", retry_after=1800.0))
    [(after_us,)] = query(index.store, "SELECT proof_after_us FROM tracks")
    assert before + 1_800_000_000 <= after_us <= now_us() + 1_800_000_000


def test_a_verdict_on_an_older_rev_does_not_touch_the_newer_event(index: Index) -> None:
    index.apply(create("3mmoojp7vgo2a", "First"))
    old = job_of(index)
    index.apply(commit(DID, RKEY, "3mmoojp7vgo2b", "update", track_record("Second", "Artist", URL)))
    index.prove(ProofResult(old, Absent("3mmoojp7vgo2a")))
    index.prove(ProofResult(old, unreachable="timeout"))
    index.prove(ProofResult(old, Proven(track_record("First", "Artist", URL), old.cid or "", old.rev)))
    assert index.proof() == ("3mmoojp7vgo2b", "pending", None, False, "Second")
    assert job_of(index).rev == "3mmoojp7vgo2b"


def test_only_claims_still_waiting_for_their_proof_are_asked_again(index: Index) -> None:
    index.apply(create("3mmoojp7vgo2a"), create("3mmoojp7vgo2a", rkey="3mmoojp7etg2h"))
    first, second = job_of(index), job_of(index, "3mmoojp7etg2h")
    assert sorted(index.store.unproven([first, second]), key=lambda j: j.rkey) == [first, second]
    index.prove(ProofResult(first, Proven(track_record("Song", "Artist", URL), first.cid or "", first.rev)))
    # A replayed event of a proven record, and a claim the store has since replaced, are not asked again.
    stale = ProofJob(DID, "3mmoojp7etg2h", "3mmoojp7vgo29", second.cid)
    assert index.store.unproven([first, second, stale]) == [second]
    assert index.store.unproven([]) == []


def test_stale_audio_lists_the_oldest_answers_first_and_only_final_ones(index: Index) -> None:
    results = [
        AudioResult("https://a.example/1.mp3", AudioState.VERIFIED, "ok", 200, "audio/mpeg"),
        AudioResult("https://a.example/2.mp3", AudioState.UNAVAILABLE, "404 Not Found", 404, None),
        AudioResult("https://a.example/3.mp3", AudioState.REFUSED, "not public", None, None),
    ]
    for result in results:
        index.store.record_audio([result])
    later = now_us() + 1_000_000
    assert index.store.stale_audio(later, 10) == ["https://a.example/1.mp3", "https://a.example/2.mp3"]
    assert index.store.stale_audio(later, 1) == ["https://a.example/1.mp3"]
    assert index.store.stale_audio(0, 10) == []


def test_stale_handles_lists_accounts_by_the_age_of_their_answer(index: Index) -> None:
    other = "did:plc:bbbbbbbbbbbbbbbbbbbbbbbb"
    index.apply(create("3mmoojp7vgo2a"), commit(other, RKEY, "3mmoojp7vgo2a", "create", track_record("B", "B", URL)))
    assert index.store.stale_handles(now_us() + 1_000_000, 10) == []  # never resolved: unresolved_dids has them
    index.store.set_handles({other: "bob.example.com"})
    index.store.set_handles({DID: "handle.invalid"})
    later = now_us() + 1_000_000
    assert index.store.stale_handles(later, 10) == [other, DID]
    assert index.store.stale_handles(later, 1) == [other]
    assert index.store.stale_handles(0, 10) == []


def test_an_accounts_bytes_count_the_objects_its_live_tracks_use(index: Index) -> None:
    store = index.store
    store.record_upload(DID, "k1.mp3", 1_000)
    store.record_upload(DID, "k2.mp3", 500)
    assert store.account_bytes(DID) == 0  # no track uses them yet
    index.apply(commit(DID, RKEY, "3mmoojp7vgo2a", "create", track_record("A", "B", "http://x/audio/k1.mp3")))
    assert store.account_bytes(DID) == 1_000
    # A key that is only the end of another key's name is not the same object.
    store.record_upload(DID, "1.mp3", 7)
    assert store.account_bytes(DID) == 1_000
    store.record_upload(DID, "k1.mp3", 1_200)  # uploaded again: its new size
    assert store.account_bytes(DID) == 1_200
    index.apply(commit(DID, RKEY, "3mmoojp7vgo2b", "delete"))
    assert store.account_bytes(DID) == 0
    assert store.account_bytes("did:plc:bbbbbbbbbbbbbbbbbbbbbbbb") == 0
