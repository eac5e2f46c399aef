"""Publishing a track: audio into storage, the record onto the author's PDS, the track into the index.

Order is what keeps a failure from leaving anything half-done. Everything that can be refused is checked
before anything is written: the token, the rate, the file (its real format and length, from its bytes),
the record (against the lexicon). Then the audio is stored, then the record is written; if that write
fails, the object is removed again, unless this request did not create it (it was already there: the
same file published before) or another live track uses it. The index is written last: the record is
already safe on the PDS then, and if the index write fails Jetstream brings the record anyway.

The record key is a TID, minted here or sent by the client (`rkey`), and createdAt is the TID's own time,
so a retry of the same publish builds the very same record. It is written with `swapRecord: null`
(create only): the retry of a write that did land finds an identical record and succeeds without a
second one, and an rkey that names some other record is refused instead of overwriting it.

Objects are content-addressed and shared, so storing, removing and reference checks for one key run
under that key's lock: a failed publish cannot remove an object a concurrent publish just wrote a
record for.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import anyio.to_thread
from lexrpc.base import ValidationError

from appview_api.audio.format import AudioInfo, probe
from appview_api.audio.storage import KEY_RE, AudioStorage, make_key
from appview_api.errors import (
    Forbidden,
    InvalidRequest,
    InvalidSwap,
    RecordExists,
    RequestError,
    StorageError,
    TrackNotFound,
)
from appview_api.publish.pds import Pds, PdsRefusal, Session, StoredRecord, Written
from appview_api.publish.upload import Form
from indexer.atproto import lexicons, tid
from indexer.atproto.datetimes import iso_from_us
from indexer.atproto.nsid import TRACK_COLLECTION
from indexer.atproto.uri import parse_record_uri, record_uri
from indexer.db.rows import AudioResult
from indexer.errors import StoreError
from indexer.ingest.events import Commit
from indexer.ingest.index import Index, local_commit, stored_audio
from indexer.slots import KeyedSlots

log = logging.getLogger(__name__)

RKEY_MAX_AGE_SECONDS = 86400.0  # a client's rkey is for retries, not for backdating a track
RKEY_MAX_AHEAD_SECONDS = 60.0
_UPDATABLE = ("title", "artist", "album")
STORAGE_DOWN = "the audio could not be stored; nothing was written"


def build_record(fields: dict[str, str], info: AudioInfo, audio_url: str, rkey: str) -> dict[str, Any]:
    """The record for a publish, validated against the lexicon; InvalidRequest names the broken rule."""
    record: dict[str, Any] = {"$type": TRACK_COLLECTION}
    for name in ("title", "artist"):
        if name in fields:
            record[name] = fields[name]
    if fields.get("album", "").strip():
        record["album"] = fields["album"]
    record.update(audioUrl=audio_url, fileType=info.file_type, duration=info.duration, createdAt=tid_time(rkey))
    check_record(record)
    return record


def updated_record(current: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    record = dict(current)
    for name in _UPDATABLE:
        if name not in changes:
            continue
        if changes[name] is None or (name == "album" and not changes[name].strip()):
            record.pop(name, None)
        else:
            record[name] = changes[name]
    check_record(record)
    return record


def check_record(record: dict[str, Any]) -> None:
    for name in ("title", "artist"):
        if name in record and not str(record[name]).strip():
            raise InvalidRequest(f"{name} must not be blank")
    try:
        lexicons.validator().validate(TRACK_COLLECTION, "record", record)
    except ValidationError as exc:
        raise InvalidRequest(f"invalid record: {exc}") from None


def tid_time(rkey: str) -> str:
    return iso_from_us(tid.decode_micros(rkey))


def check_client_rkey(rkey: str, now: float | None = None) -> str:
    if not tid.is_tid(rkey):
        raise InvalidRequest(f"rkey {rkey[:50]!r} is not a TID")
    age = (time.time() if now is None else now) - tid.decode_micros(rkey) / 1_000_000
    if age > RKEY_MAX_AGE_SECONDS or age < -RKEY_MAX_AHEAD_SECONDS:
        raise InvalidRequest("rkey must be a TID minted within the last 24 hours")
    return rkey


def parse_track_uri(uri: str) -> tuple[str, str]:
    """(authority, rkey) of a track this service can change: its records are keyed by TIDs."""
    parsed = parse_record_uri(uri)
    if parsed is None or parsed.collection != TRACK_COLLECTION or not tid.is_tid(parsed.rkey):
        raise InvalidRequest(f"{uri[:200]!r} is not the at:// URI of an {TRACK_COLLECTION} record")
    return parsed.authority, parsed.rkey


def stored_key(storage: AudioStorage, audio_url: object) -> str | None:
    """The object key behind an audioUrl, if the URL is exactly where this service serves that key."""
    if not isinstance(audio_url, str):
        return None
    key = audio_url.rsplit("/", 1)[-1]
    return key if KEY_RE.fullmatch(key) and storage.public_url(key) == audio_url else None


class Publisher:
    def __init__(self, storage: AudioStorage, pds: Pds, index: Index) -> None:
        self.storage = storage
        self._pds = pds
        self._index = index
        self._clock = tid.TidClock()
        self._locks: KeyedSlots[str] = KeyedSlots()  # one publish or delete at a time per object

    async def publish(self, session: Session, form: Form, *, rkey: str | None, dry_run: bool) -> dict[str, Any]:
        """`rkey`: the client's, already checked with `check_client_rkey`; None to mint one here."""
        rkey = rkey or self._clock.next()
        info = await anyio.to_thread.run_sync(probe, form.path)
        key = make_key(form.sha256, info.file_type)
        record = build_record(form.fields, info, self.storage.public_url(key), rkey)
        uri = record_uri(session.did, rkey)
        if dry_run:
            return {"uri": uri, "record": record}
        async with self._locks.hold(key):
            try:
                created = await self.storage.put_file(form.path, key, info.content_type)
            except StorageError as exc:
                log.warning("publish storage failed did=%s key=%s reason=%s", session.did, key, exc.reason)
                raise StorageError(STORAGE_DOWN) from None
            try:
                written = await self._create(session, rkey, record)
            except RequestError as exc:
                removed = created and await self._remove_unused(key)
                log.info(
                    "publish failed did=%s rkey=%s error=%s removed=%s", session.did, rkey, type(exc).__name__, removed
                )
                raise
            if written.rev is not None:
                audio = stored_audio(record["audioUrl"], info.content_type)
                await self._ingest(local_commit(session.did, rkey, written.rev, written.cid, record), audio, session)
            await self._index.record_upload(session.did, key, form.size)  # its weight, for the account's quota
        log.info("published uri=%s key=%s size=%d new_object=%s", written.uri, key, form.size, created)
        return {"uri": written.uri, "cid": written.cid, "record": record}

    async def update(self, session: Session, changes: dict[str, Any]) -> dict[str, Any]:
        rkey = self._owned_rkey(session, changes["uri"])
        current = await self._current(session, rkey)
        record = updated_record(current.value, changes)
        if record == current.value:
            return {"uri": changes["uri"], "cid": current.cid, "record": record}
        try:
            written = await self._pds.put_record(session, rkey, record, swap=current.cid)
        except PdsRefusal as exc:
            raise _swap_or_rejected(exc) from None
        if written.rev is not None:
            await self._ingest(local_commit(session.did, rkey, written.rev, written.cid, record), None, session)
        return {"uri": written.uri, "cid": written.cid, "record": record}

    async def delete(self, session: Session, uri: str) -> dict[str, Any]:
        rkey = self._owned_rkey(session, uri)
        current = await self._current(session, rkey)
        try:
            rev = await self._pds.delete_record(session, rkey, swap=current.cid)
        except PdsRefusal as exc:
            raise _swap_or_rejected(exc) from None
        if rev is not None:
            await self._ingest(local_commit(session.did, rkey, rev, None, None), None, session)
        key = stored_key(self.storage, current.value.get("audioUrl"))
        removed = False
        if key is not None:
            async with self._locks.hold(key):
                removed = await self._remove_unused(key, besides=(session.did, rkey))
        log.info("deleted uri=%s key=%s audio_deleted=%s", uri, key, removed)
        return {"uri": uri, "audioDeleted": removed}

    async def _create(self, session: Session, rkey: str, record: dict[str, Any]) -> Written:
        try:
            return await self._pds.put_record(session, rkey, record, swap=None)
        except PdsRefusal as exc:
            if exc.error != "InvalidSwap":
                raise exc.rejected() from None
        # Something is already there: our own earlier attempt (then it is this very record) or not.
        existing = await self._pds.get_record(session, rkey)
        if existing is None or existing.value != record:
            raise RecordExists(f"rkey {rkey} already names a different record")
        return Written(record_uri(session.did, rkey), existing.cid, None)

    def _owned_rkey(self, session: Session, uri: str) -> str:
        did, rkey = parse_track_uri(uri)
        if did != session.did:
            raise Forbidden("only the track's owner may change it")
        return rkey

    async def _current(self, session: Session, rkey: str) -> StoredRecord:
        try:
            current = await self._pds.get_record(session, rkey)
        except PdsRefusal as exc:
            raise exc.rejected() from None
        if current is None:
            raise TrackNotFound(f"no track {rkey} in {session.did}'s repository")
        return current

    async def _ingest(self, commit: Commit, audio: AudioResult | None, session: Session) -> None:
        try:
            await self._index.ingest_local(commit, audio, session.handle)
        except Exception:
            # The record is safe on the PDS; Jetstream will bring it to the index.
            log.exception("local index write failed uri=%s rev=%s", commit.uri, commit.rev)

    async def _remove_unused(self, key: str, besides: tuple[str, str] | None = None) -> bool:
        """Remove the object unless a live track uses it; call with the key's lock held."""
        try:
            if await anyio.to_thread.run_sync(self._index.key_in_use, key, besides):
                return False
            await self.storage.delete(key)
        except StorageError as exc:
            log.warning("audio object left behind key=%s reason=%s", key, exc.reason)
            return False
        except StoreError as exc:
            log.warning("audio object kept, its users unknown key=%s reason=%s", key, exc.reason)
            return False
        return True


def _swap_or_rejected(exc: PdsRefusal) -> RequestError:
    if exc.error == "InvalidSwap":
        return InvalidSwap("the track changed meanwhile: read it again and retry")
    return exc.rejected()
