"""Search units: the terms of a query, word-prefix postings with their weights, and ranking with a cursor."""

from __future__ import annotations

from array import array

import pytest

from appview_api.errors import InvalidRequest
from appview_api.read.search import MAX_TERMS, MIN_PREFIX, Postings, rank, terms

# doc: (title, artist, album, sort_us, tiebreak)
DOCS = [
    ("Midnight River", "Echo", None, 100, 7),
    ("Blue Midnight", "Paper", "Midnight Tapes", 300, 3),
    ("Summer", "Midnight Club", None, 200, 5),
    ("Ec", "Static", None, 400, 1),
    ("Midnight", "Echo", None, 100, 9),  # ties doc 0 on score and sort_us: the higher tiebreak first
]


@pytest.fixture
def postings() -> Postings:
    postings = Postings()
    for doc, (title, artist, album, *_) in enumerate(DOCS):
        postings.add(doc, title, artist, album)
    return postings


def matched(postings: Postings, *words: str) -> dict[int, int]:
    docs, scores = postings.match(words)
    return dict(zip(docs.to_pylist(), scores.to_pylist(), strict=True))


def ranked(
    postings: Postings, query: tuple[str, ...], live: bytearray, after: tuple[int, int, int] | None = None, limit: int = 10
) -> tuple[list[tuple[int, int]], int]:
    docs, scores = postings.match(query)
    sort, tiebreak = array("q", [d[3] for d in DOCS]), array("q", [d[4] for d in DOCS])
    return rank(docs, scores, live, sort, tiebreak, after, limit)


def key(score: int, doc: int) -> tuple[int, int, int]:
    """A hit's cursor key: (score, sort_us, tiebreak)."""
    return score, DOCS[doc][3], DOCS[doc][4]


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("Midnight River", ("midnight", "river")),
        ("ECHO echo Echo", ("echo",)),
        ("  blue,  paper!! blue ", ("blue", "paper")),
        ("don't", ("don", "t")),
        ("Björk", ("björk",)),
        (" ".join(f"w{n}" for n in range(MAX_TERMS)) + " w0 w1", tuple(f"w{n}" for n in range(MAX_TERMS))),
    ],
)
def test_terms_are_lowercased_deduplicated_words_in_order(q: str, expected: tuple[str, ...]) -> None:
    assert terms(q) == expected


@pytest.mark.parametrize(
    ("q", "message"),
    [
        ("", "q has no search terms"),
        (" ,.;!? ", "q has no search terms"),
        (" ".join(f"w{n}" for n in range(MAX_TERMS + 1)), "q has 9 terms; at most 8 are allowed"),
    ],
)
def test_terms_refuses_no_terms_or_too_many(q: str, message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        terms(q)
    assert caught.value.reason == message


def test_a_term_weighs_by_its_best_place(postings: Postings) -> None:
    # title's first word 5, elsewhere in the title 4, artist 2, album 1; doc 1 has it in title and album
    assert matched(postings, "midnight") == {0: 5, 4: 5, 1: 4, 2: 2}


def test_terms_of_min_prefix_or_more_match_word_starts(postings: Postings) -> None:
    assert MIN_PREFIX == 3
    assert matched(postings, "mid") == matched(postings, "midnight")
    assert matched(postings, "ech") == {0: 2, 4: 2}
    assert matched(postings, "night") == {}  # inside a word is no match


def test_shorter_terms_must_be_whole_words(postings: Postings) -> None:
    assert matched(postings, "ec") == {3: 5}  # not "echo"
    assert matched(postings, "mi") == {}


def test_every_term_must_match_and_scores_add(postings: Postings) -> None:
    assert matched(postings, "midnight", "echo") == {0: 7, 4: 7}
    assert matched(postings, "midnight", "summer") == {2: 7}
    assert matched(postings, "midnight", "nothing") == {}


def test_rank_orders_by_score_then_sort_then_tiebreak(postings: Postings) -> None:
    hits, total = ranked(postings, ("midnight",), bytearray([1] * len(DOCS)))
    assert hits == [(5, 4), (5, 0), (4, 1), (2, 2)]
    assert total == 4


def test_rank_skips_retired_documents(postings: Postings) -> None:
    live = bytearray([1, 0, 1, 1, 0])
    hits, total = ranked(postings, ("midnight",), live)
    assert ([doc for _, doc in hits], total) == ([0, 2], 2)


def test_rank_pages_after_a_hit_through_ties(postings: Postings) -> None:
    live = bytearray([1] * len(DOCS))
    first, total = ranked(postings, ("midnight",), live, limit=1)
    second, _ = ranked(postings, ("midnight",), live, after=key(*first[-1]), limit=2)
    third, again = ranked(postings, ("midnight",), live, after=key(*second[-1]), limit=2)
    assert [[doc for _, doc in page] for page in (first, second, third)] == [[4], [0, 1], [2]]
    assert (total, again) == (4, 4)  # the total counts every live match, not what is left


def test_rank_of_nothing_is_empty(postings: Postings) -> None:
    assert ranked(postings, ("zzz",), bytearray([1] * len(DOCS))) == ([], 0)
