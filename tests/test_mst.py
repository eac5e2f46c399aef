"""The MST: proofs of presence and absence, prefix walks, and refusal of every non-canonical shape.

Trees come from `tests.repo_builders.build_mst` (held to the reference PDS's root CIDs in test_proof) or are
written node by node to break one rule at a time.
"""

from __future__ import annotations

import itertools

import libipld
import pytest

from indexer.atproto.cid import cid_str
from indexer.atproto.mst import key_depth, prove, walk
from indexer.atproto.proof_errors import BrokenTree, MalformedBlock, MissingBlock
from tests.repo_builders import block, build_mst, cid_of, node

VALUE = cid_of(b"a record")


def keys_of_depth(depth: int, count: int, prefix: str = "app.relay.track/") -> list[bytes]:
    found = []
    for index in itertools.count():
        key = f"{prefix}k{index:06d}".encode()
        if key_depth(key) == depth:
            found.append(key)
            if len(found) == count:
                return found
    raise AssertionError("unreachable")


D0 = keys_of_depth(0, 4)
D1 = keys_of_depth(1, 2)
D2 = keys_of_depth(2, 1)


@pytest.mark.parametrize(
    ("key", "depth"),
    [(b"2653ae71", 0), (b"blue", 1), (b"app.bsky.feed.post/454397e440ec", 4), (b"app.bsky.feed.post/9adeb165882c", 8)],
)
def test_key_depth_matches_the_spec_examples(key: bytes, depth: int) -> None:
    assert key_depth(key) == depth


def many_items() -> dict[bytes, bytes]:
    items = {}
    for collection in ("app.bsky.feed.like", "app.bsky.feed.post", "app.relay.track", "app.relay.zzz"):
        for index in range(120):
            key = f"{collection}/3k{index:011d}".encode()
            items[key] = cid_of(key)
    return items


ITEMS = many_items()
ROOT, BLOCKS = build_mst(ITEMS)


def test_the_test_tree_has_several_layers_and_empty_intermediate_nodes() -> None:
    assert max(key_depth(key) for key in ITEMS) >= 3
    assert any(data.startswith(b"\xa2ae\x80") for data in BLOCKS.values())  # {"e": [], "l": ...}: no entries


def test_prove_finds_every_key() -> None:
    for key, value in ITEMS.items():
        assert prove(BLOCKS, ROOT, key) == value


@pytest.mark.parametrize(
    "key",
    [b"app.relay.track/3k00000000000x", b"a/a", b"zzz/z", b"app.relay.track/", b"app.relay.track/3k0000000001", b""],
)
def test_prove_shows_absence(key: bytes) -> None:
    assert prove(BLOCKS, ROOT, key) is None


def test_walk_yields_the_prefix_in_key_order() -> None:
    expected = sorted((key, value) for key, value in ITEMS.items() if key.startswith(b"app.relay.track/"))
    assert list(walk(BLOCKS, ROOT, b"app.relay.track/")) == expected
    assert list(walk(BLOCKS, ROOT, b"")) == sorted(ITEMS.items())
    assert list(walk(BLOCKS, ROOT, b"app.relay.nothing/")) == []
    assert list(walk(BLOCKS, ROOT, b"zzz")) == []


class ReadLog(dict[bytes, bytes]):
    """The block source, recording which blocks the walk asked for."""

    def __init__(self, blocks: dict[bytes, bytes]) -> None:
        super().__init__(blocks)
        self.read: list[bytes] = []

    def get(self, cid: bytes, default: bytes | None = None) -> bytes | None:  # type: ignore[override]
        self.read.append(cid)
        return super().get(cid, default)


def test_walk_never_reads_subtrees_outside_the_prefix() -> None:
    blocks = ReadLog(BLOCKS)
    ours = sorted((key, value) for key, value in ITEMS.items() if key.startswith(b"app.relay.track/"))
    assert list(walk(blocks, ROOT, b"app.relay.track/")) == ours
    assert len(blocks.read) < len(BLOCKS) // 2
    # Posts sort between likes and tracks, so no leaf holding likes alone is ever needed.
    likes_only = {cid for cid, data in BLOCKS.items() if _is_leaf_of(data, b"app.bsky.feed.like/")}
    assert likes_only and not likes_only & set(blocks.read)


def _is_leaf_of(data: bytes, prefix: bytes) -> bool:
    value = libipld.decode_dag_cbor(data)
    keys, previous = [], b""
    for entry in value["e"]:
        previous = previous[: entry["p"]] + entry["k"]
        keys.append(previous)
    links = [value["l"], *(entry["t"] for entry in value["e"])]
    return bool(keys) and all(key.startswith(prefix) for key in keys) and links == [None] * len(links)


def test_empty_tree() -> None:
    root, data = block({"l": None, "e": []})
    assert prove({root: data}, root, D0[0]) is None
    assert list(walk({root: data}, root, b"")) == []


def test_missing_node_is_an_incomplete_proof() -> None:
    key = next(iter(ITEMS))
    path_blocks = dict(BLOCKS)
    # The root is always read; drop a node under it that the key's path needs.
    for cid in list(path_blocks):
        if cid == ROOT:
            continue
        trimmed = {c: d for c, d in path_blocks.items() if c != cid}
        try:
            prove(trimmed, ROOT, key)
        except MissingBlock as exc:
            assert exc.reason == f"MST node {cid_str(cid)} is missing"
            break
    else:
        raise AssertionError("no node on the path")
    with pytest.raises(MissingBlock) as caught:
        prove({}, ROOT, key)
    assert caught.value.reason == f"MST node {cid_str(ROOT)} is missing"


def tree(root: dict, *children: dict) -> tuple[bytes, dict[bytes, bytes]]:
    blocks = dict(block(child) for child in children)
    cid, data = block(root)
    blocks[cid] = data
    return cid, blocks


def link(value: dict) -> bytes:
    return block(value)[0]


def broken_trees() -> list[tuple[str, bytes, dict[bytes, bytes], bytes, str]]:
    a, b = D0[0], D0[1]
    low_node = node(None, [(D0[0], VALUE, None)])
    empty = {"l": None, "e": []}
    cases = []

    def add(name: str, root: dict, children: list[dict], key: bytes, reason: str) -> None:
        cid, blocks = tree(root, *children)
        cases.append((name, cid, blocks, key, reason.format(root=cid_str(cid), **{f"c{i}": cid_str(link(c)) for i, c in enumerate(children)})))

    add("unsorted", node(None, [(b, VALUE, None), (a, VALUE, None)]), [], a,
        f"MST node {{root}}: key {a.decode()!r} does not sort after {b.decode()!r}")
    add("duplicate", {"l": None, "e": [{"p": 0, "k": a, "v": VALUE, "t": None}, {"p": len(a), "k": b"", "v": VALUE, "t": None}]}, [], a,
        f"MST node {{root}}: key {a.decode()!r} does not sort after {a.decode()!r}")
    first, second = sorted([D1[0], D0[3]])  # the first key's depth sets the root's layer; the second differs
    add("wrong depth", node(None, [(first, VALUE, None), (second, VALUE, None)]), [], first,
        f"MST node {{root}}: key {second.decode()!r} has depth {key_depth(second)}, the node's layer is {key_depth(first)}")
    add("loose prefix", {"l": None, "e": [{"p": 0, "k": a, "v": VALUE, "t": None}, {"p": 0, "k": b, "v": VALUE, "t": None}]}, [], a,
        "MST node {root}: entry 1 is not prefix-compressed exactly")
    add("prefix too long", {"l": None, "e": [{"p": 0, "k": a, "v": VALUE, "t": None}, {"p": 99, "k": b"x", "v": VALUE, "t": None}]}, [], a,
        f"MST node {{root}}: entry 1 shares 99 bytes of a {len(a)}-byte key")
    add("first prefix", {"l": None, "e": [{"p": 3, "k": a, "v": VALUE, "t": None}]}, [], a,
        "MST node {root}: entry 0 shares 3 bytes of a 0-byte key")
    add("untrimmed root", {"l": link(low_node), "e": []}, [low_node], a,
        "MST root {root} is an empty node over a subtree (the top was not trimmed)")
    add("empty subtree", node(None, [(D1[0], VALUE, link(empty))]), [empty], D1[0] + b"~",
        "MST node {c0} is empty")
    add("layer 0 link", node(link(low_node), [(D0[1], VALUE, None)]), [low_node], D0[0],
        "MST node {root} at layer 0 links to a subtree")
    add("out of bounds", node(link(node(None, [(D0[2], VALUE, None)])), [(D1[0], VALUE, None)]), [node(None, [(D0[2], VALUE, None)])],
        b"app.relay.track/", f"MST node {{c0}}: key {D0[2].decode()!r} is not before {D1[0].decode()!r}")
    add("extra field", {"l": None, "e": [], "x": 1}, [], a, "MST node {root} is not a node {{l, e}}")
    add("entries not a list", {"l": None, "e": {}}, [], a, "MST node {root} is not a node {{l, e}}")
    add("entry lacks t", {"l": None, "e": [{"p": 0, "k": a, "v": VALUE}]}, [], a,
        "MST node {root}: entry 0 is not an entry {{p, k, v, t}}")
    add("p is a bool", {"l": None, "e": [{"p": False, "k": a, "v": VALUE, "t": None}]}, [], a,
        "MST node {root}: entry 0 has a malformed key")
    add("k is text", {"l": None, "e": [{"p": 0, "k": a.decode(), "v": VALUE, "t": None}]}, [], a,
        "MST node {root}: entry 0 has a malformed key")
    add("v is not a CID", {"l": None, "e": [{"p": 0, "k": a, "v": 7, "t": None}]}, [], a,
        "MST node {root}: entry 0 value is not a CID")
    add("t is raw", {"l": None, "e": [{"p": 0, "k": D1[0], "v": VALUE, "t": cid_of(b"x", 0x55)}]}, [], a,
        "MST node {root}: entry 0 t is not a dag-cbor CID")
    add("l is raw", {"l": cid_of(b"x", 0x55), "e": [{"p": 0, "k": D1[0], "v": VALUE, "t": None}]}, [], a,
        "MST node {root}: l is not a dag-cbor CID")
    for bad in (b"no-collection", b"app.relay.track/", b"/rkey", b"app.relay.track/a/b", b"app.relay.track/..", b"app.relay.track/sp ace"):
        add(f"key {bad!r}", {"l": None, "e": [{"p": 0, "k": bad, "v": VALUE, "t": None}]}, [], a,
            f"MST node {{root}}: entry 0: key {bad.decode()!r} is not a repo path <collection>/<record key>")
    add("key too long", {"l": None, "e": [{"p": 0, "k": b"a/" + b"b" * 1023, "v": VALUE, "t": None}]}, [], a,
        "MST node {root}: entry 0: key is longer than 1024 bytes")
    return cases


BROKEN = broken_trees()


@pytest.mark.parametrize(("name", "root", "blocks", "key", "reason"), BROKEN, ids=[case[0] for case in BROKEN])
def test_non_canonical_trees_are_refused(name: str, root: bytes, blocks: dict[bytes, bytes], key: bytes, reason: str) -> None:
    with pytest.raises(BrokenTree) as caught:
        prove(blocks, root, key)
    assert caught.value.reason == reason
    with pytest.raises(BrokenTree) as caught:
        list(walk(blocks, root, b""))
    assert caught.value.reason == reason


def test_a_node_that_is_not_canonical_cbor_is_refused() -> None:
    data = b"\xa2\x61e\x80\x61l\xf6"  # {"e": [], "l": null}: canonical
    assert prove({cid_of(data): data}, cid_of(data), D0[0]) is None
    loose = b"\xa2\x61e\x98\x00\x61l\xf6"  # the same with a one-byte array length
    with pytest.raises(MalformedBlock) as caught:
        prove({cid_of(loose): loose}, cid_of(loose), D0[0])
    assert caught.value.reason == f"MST node {cid_str(cid_of(loose))} is not canonical DAG-CBOR"


def test_a_deeper_key_hidden_below_a_shallower_one_is_refused() -> None:
    # What the reference verifier let through (atproto#5429): every key reachable and in order, but a depth-2
    # key sits in a layer-1 node. That is not the tree its keys determine, and its absence proofs could lie.
    deep, top = keys_of_depth(2, 2)
    hidden = sorted([deep, D1[0]])
    assert hidden[-1] < top
    child = node(None, [(key, VALUE, None) for key in hidden])
    root, blocks = tree(node(link(child), [(top, VALUE, None)]), child)
    with pytest.raises(BrokenTree) as caught:
        prove(blocks, root, deep)
    assert caught.value.reason == f"MST node {cid_str(link(child))}: key {deep.decode()!r} has depth 2, the node's layer is 1"
