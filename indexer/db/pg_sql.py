"""The PostgreSQL backend's statements: `duckdb_store.py`'s, in PostgreSQL's dialect and placeholders."""

from indexer.db.pg_listen import CHANNEL
from indexer.db.store import NO_AUDIO

# Advisory lock keys (per database): the one indexer that writes batches; one migration at a time.
WRITER_LOCK = 0x72656C6179_01  # "relay" 1
MIGRATION_LOCK = 0x72656C6179_02

VISIBLE = "audio_state = 'verified' AND proof IN ('proven', 'unverified') AND NOT deleted AND NOT hidden"
ACCOUNT_STAMP = "greatest(first_seen_us, coalesce(handle_resolved_us, 0))"

# A session's own staging tables, loaded by COPY before each statement that reads them. Text compares as
# bytes here as in the tables they join (pg_schema.py), or PostgreSQL refuses to pick a collation.
STAGING_TABLES = (
    """CREATE TEMP TABLE IF NOT EXISTS staged (
        did text COLLATE "C", rkey text COLLATE "C", rev text COLLATE "C", cid text, deleted boolean,
        title text, artist text, album text, audio_url text COLLATE "C", file_type text, duration integer,
        created_at text, created_us bigint, event_time_us bigint, first_seen_us bigint, proof text)""",
    """CREATE TEMP TABLE IF NOT EXISTS new_accounts (did text COLLATE "C", since_us bigint)""",
    """CREATE TEMP TABLE IF NOT EXISTS changed (
        did text COLLATE "C", at_us bigint, seq bigint, active boolean, status text, purge_at_us bigint,
        purge_seq bigint)""",
    """CREATE TEMP TABLE IF NOT EXISTS results (
        url text COLLATE "C", state text, reason text, status integer, content_type text, checked_us bigint)""",
    """CREATE TEMP TABLE IF NOT EXISTS asked (did text COLLATE "C")""",
    """CREATE TEMP TABLE IF NOT EXISTS listed (did text COLLATE "C")""",
    """CREATE TEMP TABLE IF NOT EXISTS synced (did text COLLATE "C", rev text COLLATE "C")""",
    """CREATE TEMP TABLE IF NOT EXISTS sync_results (
        did text COLLATE "C", state text, reason text, rev text COLLATE "C", records integer, attempts integer,
        next_us bigint)""",
)

TAKE_STAMP = (
    "UPDATE clock SET stamp = greatest(stamp + 1, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint) "
    "WHERE id = 1 RETURNING stamp"
)
SIGNAL = f"SELECT pg_notify('{CHANNEL}', '')"

INSERT_ACCOUNTS = (
    "INSERT INTO accounts (did, first_seen_us, since_us) SELECT did, %(stamp)s, since_us FROM new_accounts "
    "ON CONFLICT DO NOTHING"
)
INSERT_REJECTION = "INSERT INTO rejections VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
# Monotonic: a reconnect's rewind replays older events but must not move the cursor back.
ADVANCE_CURSOR = (
    "INSERT INTO cursor VALUES (1, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET "
    "time_us = greatest(cursor.time_us, excluded.time_us), source = excluded.source, updated_us = excluded.updated_us"
)
SET_CURSOR = (
    "INSERT INTO cursor VALUES (1, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET "
    "time_us = excluded.time_us, source = excluded.source, updated_us = excluded.updated_us"
)

UPSERT_TRACKS = f"""
INSERT INTO tracks (did, rkey, rev, cid, deleted, hidden, title, artist, album, audio_url, file_type, duration,
    created_at, created_us, indexed_us, sort_us, audio_state, event_time_us, changed_us, first_seen_us, proof,
    proof_reason, proof_after_us)
SELECT s.did, s.rkey, s.rev, s.cid, s.deleted,
       coalesce(NOT a.active, false),
       s.title, s.artist, s.album, s.audio_url, s.file_type, s.duration, s.created_at, s.created_us,
       %(now)s, greatest(0, least(coalesce(s.created_us, s.first_seen_us), s.first_seen_us)),
       CASE WHEN s.deleted THEN '{NO_AUDIO}' ELSE coalesce(c.state, 'pending') END,
       s.event_time_us, %(now)s, s.first_seen_us, s.proof, NULL, 0
FROM staged s
LEFT JOIN accounts a ON a.did = s.did
LEFT JOIN audio_checks c ON c.url = s.audio_url AND c.checked_us > %(fresh_after)s
ON CONFLICT (did, rkey) DO UPDATE SET
    rev = excluded.rev, cid = excluded.cid, deleted = excluded.deleted, hidden = excluded.hidden,
    title = excluded.title, artist = excluded.artist, album = excluded.album,
    audio_url = excluded.audio_url, file_type = excluded.file_type, duration = excluded.duration,
    created_at = excluded.created_at, created_us = excluded.created_us,
    sort_us = greatest(0, least(coalesce(excluded.created_us, tracks.first_seen_us), tracks.first_seen_us)),
    audio_state = CASE
        WHEN excluded.audio_url IS NOT DISTINCT FROM tracks.audio_url AND tracks.audio_state <> '{NO_AUDIO}'
        THEN tracks.audio_state ELSE excluded.audio_state END,
    event_time_us = excluded.event_time_us, changed_us = excluded.changed_us,
    proof = excluded.proof, proof_reason = NULL, proof_after_us = 0
WHERE excluded.rev > tracks.rev
"""
NEEDS_CHECK = (
    "SELECT DISTINCT s.audio_url FROM staged s WHERE NOT s.deleted AND NOT EXISTS ("
    " SELECT 1 FROM audio_checks c WHERE c.url = s.audio_url AND c.checked_us > %s)"
)

# A deletion purges the tracks the account has when it happens (tombstones stay, so nothing older comes
# back); one older than what the store holds for the account changes nothing.
PURGE = f"""
UPDATE tracks SET deleted = true, cid = NULL, title = NULL, artist = NULL, album = NULL, audio_url = NULL,
    file_type = NULL, duration = NULL, created_at = NULL, audio_state = '{NO_AUDIO}', changed_us = %(stamp)s
WHERE NOT deleted AND did IN (
    SELECT c.did FROM changed c JOIN accounts a ON a.did = c.did
    WHERE c.purge_at_us IS NOT NULL
      AND (a.status_at_us < c.purge_at_us OR (a.status_at_us = c.purge_at_us AND a.seq < c.purge_seq)))
"""
ACCOUNT_STATES = (
    "UPDATE accounts SET active = c.active, status = c.status, status_at_us = c.at_us, seq = c.seq "
    "FROM changed c WHERE accounts.did = c.did AND (accounts.status_at_us < c.at_us "
    "OR (accounts.status_at_us = c.at_us AND accounts.seq < c.seq))"
)
ACCOUNT_VISIBILITY = (
    "UPDATE tracks SET hidden = NOT a.active, changed_us = %s FROM accounts a "
    "WHERE tracks.did = a.did AND a.did IN (SELECT did FROM changed) AND tracks.hidden = a.active"
)

UPSERT_AUDIO_CHECKS = (
    "INSERT INTO audio_checks SELECT url, state, reason, status, content_type, checked_us FROM results "
    "ON CONFLICT (url) DO UPDATE SET state = excluded.state, reason = excluded.reason, status = excluded.status, "
    "content_type = excluded.content_type, checked_us = excluded.checked_us"
)
CARRY_AUDIO_VERDICTS = (
    "UPDATE tracks SET audio_state = r.state, changed_us = %s FROM results r "
    "WHERE tracks.audio_url = r.url AND NOT tracks.deleted AND tracks.audio_state <> r.state"
)

# A claim its PDS proved false: its rev is forgotten, so what the PDS proved applies in its place.
OVERRULE = "UPDATE tracks SET rev = '' WHERE did = %s AND rkey = %s AND rev = %s AND proof = 'pending'"
# Only the row as it was proved: a newer event since then waits for its own proof.
MARK_PROOF = (
    "UPDATE tracks SET proof = %s, proof_reason = %s, changed_us = %s "
    "WHERE did = %s AND rkey = %s AND rev = %s AND proof = 'pending'"
)
DELAY_PROOF = (
    "UPDATE tracks SET proof_reason = %s, proof_after_us = %s "
    "WHERE did = %s AND rkey = %s AND rev = %s AND proof = 'pending'"
)
UNPROVEN = (
    "SELECT t.did, t.rkey, t.rev, t.cid FROM unnest(%s::text[], %s::text[], %s::text[]) AS j(did, rkey, rev) "
    'JOIN tracks t ON t.did = j.did COLLATE "C" AND t.rkey = j.rkey COLLATE "C" AND t.rev = j.rev COLLATE "C" '
    "WHERE t.proof = 'pending'"
)
PENDING_PROOFS = "SELECT did, rkey, rev, cid FROM tracks WHERE proof = 'pending' AND proof_after_us <= %s"
STALE_AUDIO = (
    "SELECT url FROM audio_checks WHERE state IN ('verified', 'unavailable') AND checked_us < %s "
    "ORDER BY checked_us LIMIT %s"
)
STALE_HANDLES = "SELECT did FROM accounts WHERE handle_resolved_us < %s ORDER BY handle_resolved_us LIMIT %s"
ACCOUNT_BYTES = (
    "SELECT coalesce(sum(u.size), 0) FROM uploads u WHERE u.did = %s AND EXISTS ("
    " SELECT 1 FROM tracks t WHERE t.did = u.did AND NOT t.deleted"
    " AND substring(t.audio_url FROM '[^/]*$') = u.key AND right(t.audio_url, length(u.key) + 1) = '/' || u.key)"
)
RECORD_UPLOAD = (
    "INSERT INTO uploads VALUES (%s, %s, %s, %s) ON CONFLICT (did, key) DO UPDATE SET "
    "size = excluded.size, created_us = excluded.created_us"
)

SET_META = "INSERT INTO meta VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = excluded.value"
KEEP_META = (
    "INSERT INTO meta VALUES (%(key)s, %(value)s) ON CONFLICT (key) DO UPDATE SET value = excluded.value "
    "WHERE meta.value = %(replace)s RETURNING value"
)
SAVE_SESSION = (
    "INSERT INTO oauth_sessions VALUES (%s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET "
    "did = excluded.did, sealed = excluded.sealed, updated_us = excluded.updated_us"
)
SAVE_REQUEST = (
    "INSERT INTO oauth_requests VALUES (%s, %s, %s) ON CONFLICT (id) DO UPDATE SET "
    "sealed = excluded.sealed, expires_us = excluded.expires_us"
)
TAKE_REQUEST = "DELETE FROM oauth_requests WHERE id = %s RETURNING sealed, expires_us"

KEY_IN_USE = (
    "SELECT 1 FROM tracks WHERE NOT deleted AND substring(audio_url FROM '[^/]*$') = %s "
    "AND right(audio_url, length(%s)) = %s AND NOT (did = %s AND rkey = %s) LIMIT 1"
)
TRACK_STATES = (
    "SELECT CASE WHEN deleted THEN 'deleted' WHEN hidden THEN 'hidden' WHEN proof = 'forged' THEN 'forged' "
    "WHEN proof = 'pending' THEN 'unproven' ELSE audio_state END AS state, "
    "count(*) FROM tracks GROUP BY state ORDER BY state"
)
RECENT_REJECTIONS = "SELECT uri, rev, reason, rejected_us FROM rejections ORDER BY rejected_us DESC LIMIT %s"

STAMPS = (
    "SELECT (SELECT coalesce(max(changed_us), 0) FROM tracks), "
    f"(SELECT coalesce(max({ACCOUNT_STAMP}), 0) FROM accounts)"
)
CATALOG_ACCOUNTS = f"SELECT did, handle, coalesce(handle_resolved_us, 0), {ACCOUNT_STAMP} FROM accounts"
CATALOG_TRACKS = (
    f"SELECT did, rkey, {VISIBLE}, cid, title, artist, album, audio_url, file_type, duration, created_at, "
    "indexed_us, sort_us, coalesce(changed_us, 0) FROM tracks"
)
