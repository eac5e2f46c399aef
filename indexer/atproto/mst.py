"""The repository's Merkle Search Tree: prove one key, or walk every key under a prefix.

Per the atproto repository spec (v3): a node is `{l, e}`; `l` links the subtree of keys before the node's
first entry; each entry `{p, k, v, t}` holds a key (the first `p` bytes shared with the previous entry's
key, then the suffix `k`), the value CID `v`, and `t`, the subtree of keys between this entry and the next.
A key's depth is the number of leading zero bits of sha256(key), halved (2-bit chunks: fanout 4); a node
at layer L holds keys of depth exactly L, and its subtrees sit at layer L-1.

The tree is deterministic: one set of keys, one tree, one root CID. That is what makes a proof of absence
mean something, and why every node read here is held to the canonical shape, not just to key order (the
reference `verifyRepoCar` accepted non-canonical trees, atproto#5429). A node is refused unless:
- its entries have exactly the fields above, links are dag-cbor CIDs, keys are valid repo paths;
- prefix compression is exact (`p` is the whole shared prefix, 0 on the first entry);
- keys are strictly increasing and lie between the keys that bound the link it was reached by;
- every key has the node's depth, a layer-0 node links to no subtree;
- it is not empty, unless it is the root of an empty tree; a root is never an empty node over a subtree.

Blocks come from a hash-checked CAR (`car.py`), as a mapping of binary CID to bytes. Sans-I/O.
"""

from __future__ import annotations

import bisect
import hashlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from indexer.atproto.cid import DAG_CBOR, cid_str, is_cid
from indexer.atproto.dagcbor import decode_block
from indexer.atproto.proof_errors import BrokenTree, MissingBlock

MAX_KEY_BYTES = 1024
# `<collection>/<record key>`, in the characters the repository and record-key specs allow.
_KEY = re.compile(rb"([A-Za-z0-9._:~-]+)/([A-Za-z0-9._:~-]+)")
_ENTRY_FIELDS = frozenset({"p", "k", "v", "t"})
_NODE_FIELDS = frozenset({"l", "e"})


def key_depth(key: bytes) -> int:
    """Leading zero bits of sha256(key), counted in 2-bit chunks."""
    zeros = 0
    for byte in hashlib.sha256(key).digest():
        if byte:
            zeros += 8 - byte.bit_length()
            break
        zeros += 8
    return zeros // 2


def prove(blocks: Mapping[bytes, bytes], root: bytes, key: bytes) -> bytes | None:
    """The value CID stored under `key` in the tree at `root`, or None when the tree proves it absent.

    Walks only the path to where `key` is or would be: exactly what a getRecord CAR carries. A block missing
    on that path raises MissingBlock (the proof is incomplete, not negative).
    """
    node = _load(blocks, root, None, None, None)
    low: bytes | None = None
    high: bytes | None = None
    while True:
        index = bisect.bisect_left(node.keys, key)
        if index < len(node.keys) and node.keys[index] == key:
            return node.values[index]
        child = node.left if index == 0 else node.rights[index - 1]
        if child is None:
            return None
        low = node.keys[index - 1] if index else low
        high = node.keys[index] if index < len(node.keys) else high
        node = _load(blocks, child, node.layer - 1, low, high)


def walk(blocks: Mapping[bytes, bytes], root: bytes, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Every (key, value CID) whose key starts with `prefix`, in key order.

    Subtrees whose key range cannot hold the prefix are skipped without being read, so a repository's other
    collections cost nothing beyond the nodes that border ours. Errors surface while iterating: consume the
    whole walk before acting on it.
    """
    yield from _walk(blocks, _load(blocks, root, None, None, None), prefix, None, None)


@dataclass(slots=True)
class _Node:
    cid: bytes
    layer: int
    left: bytes | None
    keys: list[bytes]
    values: list[bytes]
    rights: list[bytes | None]


def _walk(
    blocks: Mapping[bytes, bytes], node: _Node, prefix: bytes, low: bytes | None, high: bytes | None
) -> Iterator[tuple[bytes, bytes]]:
    count = len(node.keys)
    for index in range(count + 1):
        child = node.left if index == 0 else node.rights[index - 1]
        child_low = node.keys[index - 1] if index else low
        child_high = node.keys[index] if index < count else high
        if child is not None and _may_hold(prefix, child_low, child_high):
            subtree = _load(blocks, child, node.layer - 1, child_low, child_high)
            yield from _walk(blocks, subtree, prefix, child_low, child_high)
        if index < count:
            key = node.keys[index]
            if key.startswith(prefix):
                yield key, node.values[index]
            elif key > prefix:
                return  # every later key sorts after the prefix's range too


def _may_hold(prefix: bytes, low: bytes | None, high: bytes | None) -> bool:
    """Can a key strictly between `low` and `high` start with `prefix`?"""
    if high is not None and high <= prefix:
        return False
    return low is None or low < prefix or low.startswith(prefix)


def _load(
    blocks: Mapping[bytes, bytes], cid: bytes, layer: int | None, low: bytes | None, high: bytes | None
) -> _Node:
    """Read and check one node; `layer` is None for the root (its first key's depth decides it)."""
    data = blocks.get(cid)
    name = _Name(cid)
    if data is None:
        raise MissingBlock(f"MST node {name} is missing")
    value = decode_block(cid, data, "MST node")
    if not isinstance(value, dict) or value.keys() != _NODE_FIELDS or not isinstance(value["e"], list):
        raise BrokenTree(f"MST node {name} is not a node {{l, e}}")
    left = value["l"]
    if left is not None and not is_cid(left, DAG_CBOR):
        raise BrokenTree(f"MST node {name}: l is not a dag-cbor CID")
    node = _Node(cid, 0, left, [], [], [])
    _read_entries(node, value["e"], name)
    node.layer = _check_layer(node, layer, name)
    if node.keys and low is not None and node.keys[0] <= low:
        raise BrokenTree(f"MST node {name}: key {_show(node.keys[0])} is not after {_show(low)}")
    if node.keys and high is not None and node.keys[-1] >= high:
        raise BrokenTree(f"MST node {name}: key {_show(node.keys[-1])} is not before {_show(high)}")
    return node


class _Name:
    """A node's CID as text, made only if a message needs it: formatting a CID costs more than checking a node."""

    __slots__ = ("cid",)

    def __init__(self, cid: bytes) -> None:
        self.cid = cid

    def __str__(self) -> str:
        return cid_str(self.cid)


def _read_entries(node: _Node, entries: list[object], name: _Name) -> None:
    previous = b""
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or entry.keys() != _ENTRY_FIELDS:
            raise BrokenTree(f"MST node {name}: entry {index} is not an entry {{p, k, v, t}}")
        shared, suffix, value, right = entry["p"], entry["k"], entry["v"], entry["t"]
        if type(shared) is not int or not isinstance(suffix, bytes):
            raise BrokenTree(f"MST node {name}: entry {index} has a malformed key")
        if not 0 <= shared <= len(previous):
            raise BrokenTree(f"MST node {name}: entry {index} shares {shared} bytes of a {len(previous)}-byte key")
        key = previous[:shared] + suffix
        if _common_prefix(previous, key) != shared:
            raise BrokenTree(f"MST node {name}: entry {index} is not prefix-compressed exactly")
        problem = _key_problem(key)
        if problem:
            raise BrokenTree(f"MST node {name}: entry {index}: {problem}")
        if index and key <= previous:
            raise BrokenTree(f"MST node {name}: key {_show(key)} does not sort after {_show(previous)}")
        if not is_cid(value):
            raise BrokenTree(f"MST node {name}: entry {index} value is not a CID")
        if right is not None and not is_cid(right, DAG_CBOR):
            raise BrokenTree(f"MST node {name}: entry {index} t is not a dag-cbor CID")
        node.keys.append(key)
        node.values.append(value)
        node.rights.append(right)
        previous = key


def _check_layer(node: _Node, layer: int | None, name: _Name) -> int:
    if not node.keys:
        if layer is None and node.left is not None:
            raise BrokenTree(f"MST root {name} is an empty node over a subtree (the top was not trimmed)")
        if layer is not None and node.left is None:
            raise BrokenTree(f"MST node {name} is empty")
        layer = 0 if layer is None else layer  # an empty tree's root, or an empty intermediate node
    for key in node.keys:
        depth = key_depth(key)
        if layer is None:
            layer = depth
        elif depth != layer:
            raise BrokenTree(f"MST node {name}: key {_show(key)} has depth {depth}, the node's layer is {layer}")
    assert layer is not None
    if layer == 0 and (node.left is not None or any(right is not None for right in node.rights)):
        raise BrokenTree(f"MST node {name} at layer 0 links to a subtree")
    return layer


def _key_problem(key: bytes) -> str | None:
    if len(key) > MAX_KEY_BYTES:
        return f"key is longer than {MAX_KEY_BYTES} bytes"
    match = _KEY.fullmatch(key)
    if match is None or b"." in (match[1], match[2]) or b".." in (match[1], match[2]):
        return f"key {_show(key)} is not a repo path <collection>/<record key>"
    return None


def _common_prefix(a: bytes, b: bytes) -> int:
    limit = min(len(a), len(b))
    for index in range(limit):
        if a[index] != b[index]:
            return index
    return limit


def _show(key: bytes) -> str:
    """A key for a message: a stranger's bytes, shown escaped and cut short."""
    return repr(key[:120].decode("ascii", "backslashreplace"))
