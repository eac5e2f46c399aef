"""The DuckDB schema, as numbered migrations applied once each, in order, inside a transaction.

Times are integer microseconds since the epoch (UTC): cheap to compare, to page by and to send. Deleted
records stay as tombstone rows (deleted = true, fields cleared) so a replayed older create or update can
never bring them back: every write to `tracks` is conditional on a newer rev.
"""

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);

    CREATE TABLE cursor (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        time_us BIGINT NOT NULL,
        source VARCHAR,
        updated_us BIGINT NOT NULL
    );

    CREATE TABLE accounts (
        did VARCHAR PRIMARY KEY,
        handle VARCHAR,
        active BOOLEAN NOT NULL DEFAULT TRUE,
        status VARCHAR,
        seq BIGINT NOT NULL DEFAULT -1,
        first_seen_us BIGINT NOT NULL,
        handle_resolved_us BIGINT
    );

    CREATE TABLE tracks (
        did VARCHAR NOT NULL,
        rkey VARCHAR NOT NULL,
        rev VARCHAR NOT NULL,
        cid VARCHAR,
        deleted BOOLEAN NOT NULL,
        hidden BOOLEAN NOT NULL,
        title VARCHAR,
        artist VARCHAR,
        album VARCHAR,
        audio_url VARCHAR,
        file_type VARCHAR,
        duration INTEGER,
        created_at VARCHAR,
        created_us BIGINT,
        indexed_us BIGINT NOT NULL,
        sort_us BIGINT NOT NULL,
        audio_state VARCHAR NOT NULL,
        event_time_us BIGINT NOT NULL,
        PRIMARY KEY (did, rkey)
    );

    CREATE TABLE audio_checks (
        url VARCHAR PRIMARY KEY,
        state VARCHAR NOT NULL,
        reason VARCHAR NOT NULL,
        status INTEGER,
        content_type VARCHAR,
        checked_us BIGINT NOT NULL
    );

    CREATE TABLE rejections (
        uri VARCHAR NOT NULL,
        rev VARCHAR NOT NULL,
        reason VARCHAR NOT NULL,
        event_time_us BIGINT NOT NULL,
        rejected_us BIGINT NOT NULL,
        PRIMARY KEY (uri, rev)
    );
    """,
    # API reads: one account's tracks (actor feeds, track lookups), and accounts by handle.
    """
    CREATE INDEX tracks_did ON tracks (did);
    CREATE INDEX accounts_handle ON accounts (handle);
    """,
    # API search: changed_us (set by every upsert) lets the API's in-memory search index catch up on
    # just the rows written since it last looked; rkey (TIDs, nearly unique) is the cheapest way DuckDB
    # has to fetch a handful of known tracks, as it uses single-column indexes only.
    """
    ALTER TABLE tracks ADD COLUMN changed_us BIGINT DEFAULT 0;
    CREATE INDEX tracks_rkey ON tracks (rkey);
    """,
    # The API answers from memory now and reads tracks only by changed_us; these indexes cost every
    # upsert an index update for nothing.
    """
    DROP INDEX tracks_did;
    DROP INDEX tracks_rkey;
    """,
    # The index as a function of the stream: account events ordered by their upstream time then seq
    # (status_at_us, seq); an account followed from its first commit's stream time (since_us); a track
    # sorted by the stream time it first appeared (first_seen_us), not by when this machine saw it.
    """
    ALTER TABLE accounts ADD COLUMN status_at_us BIGINT DEFAULT -1;
    ALTER TABLE accounts ADD COLUMN since_us BIGINT DEFAULT 0;
    ALTER TABLE tracks ADD COLUMN first_seen_us BIGINT;
    UPDATE tracks SET first_seen_us = least(event_time_us, indexed_us), sort_us = greatest(sort_us, 0);
    """,
    # Web sign-in (atproto OAuth): sessions and the sign-ins in flight. Each row is keyed by a hash of the
    # value the browser holds (session cookie, OAuth state), never that value, and its tokens and DPoP key
    # are sealed by the API before they get here: this table never sees them in the clear.
    """
    CREATE TABLE oauth_sessions (
        id VARCHAR PRIMARY KEY,
        did VARCHAR NOT NULL,
        sealed BLOB NOT NULL,
        created_us BIGINT NOT NULL,
        updated_us BIGINT NOT NULL
    );

    CREATE TABLE oauth_requests (
        id VARCHAR PRIMARY KEY,
        sealed BLOB NOT NULL,
        expires_us BIGINT NOT NULL
    );
    """,
    # What each account's published audio weighs: the per-account quota counts the objects its live
    # tracks use (an object two accounts share counts for both).
    """
    CREATE TABLE uploads (
        did VARCHAR NOT NULL,
        key VARCHAR NOT NULL,
        size BIGINT NOT NULL,
        created_us BIGINT NOT NULL,
        PRIMARY KEY (did, key)
    );
    """,
    # Record proofs (indexer/net/prover.py): a track shows only once its PDS proved it. `proof` is pending,
    # proven, forged, or unverified (proofs turned off); a proof that could not be had waits for
    # proof_after_us. Tracks indexed before proofs existed are proven now like any other.
    """
    ALTER TABLE tracks ADD COLUMN proof VARCHAR DEFAULT 'pending';
    ALTER TABLE tracks ADD COLUMN proof_reason VARCHAR;
    ALTER TABLE tracks ADD COLUMN proof_after_us BIGINT DEFAULT 0;
    UPDATE tracks SET proof = CASE WHEN deleted THEN 'proven' ELSE 'pending' END;
    """,
    # Backfill (indexer/ingest/backfill.py): each account's repository sync (pending, syncing, synced, failed
    # with its reason and next try, inactive; the rev synced), and each relay's listing with its page cursor.
    # Every account indexed so far is synced once: its tracks from before the stream showed it.
    """
    CREATE TABLE account_syncs (
        did VARCHAR PRIMARY KEY,
        state VARCHAR NOT NULL,
        reason VARCHAR,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_us BIGINT NOT NULL DEFAULT 0,
        requested_us BIGINT NOT NULL,
        rev VARCHAR,
        synced_us BIGINT,
        records INTEGER NOT NULL DEFAULT 0
    );

    CREATE TABLE discovery (
        relay VARCHAR PRIMARY KEY,
        page_cursor VARCHAR,
        started_us BIGINT NOT NULL,
        finished_us BIGINT,
        repos BIGINT NOT NULL DEFAULT 0
    );

    INSERT INTO account_syncs (did, state, reason, requested_us)
    SELECT did, 'pending', 'indexed before backfill existed', epoch_us(now()) FROM accounts;
    """,
)
