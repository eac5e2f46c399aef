"""The PostgreSQL schema, as numbered migrations of its own, applied once each under a lock and recorded in
`schema_migrations` (the DuckDB file keeps its own list in `schema.py`).

The tables and columns are DuckDB's, with the same meaning (tests/test_pg_schema.py holds the two to the
same names): a table or column added to one backend is added to the other in a migration of its own.
Keys, revs and handles compare as bytes (`COLLATE "C"`), as DuckDB compares them, whatever the database's
locale: a rev is a TID, and `excluded.rev > tracks.rev` must be its time order.

One table is PostgreSQL's alone: `clock`, the stamp every catalog write takes first (see `pg_store.py`).
"""

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE meta (key text COLLATE "C" PRIMARY KEY, value text NOT NULL);

    CREATE TABLE cursor (
        id integer PRIMARY KEY CHECK (id = 1),
        time_us bigint NOT NULL,
        source text,
        updated_us bigint NOT NULL
    );

    CREATE TABLE accounts (
        did text COLLATE "C" PRIMARY KEY,
        handle text COLLATE "C",
        active boolean NOT NULL DEFAULT true,
        status text,
        seq bigint NOT NULL DEFAULT -1,
        first_seen_us bigint NOT NULL,
        handle_resolved_us bigint,
        status_at_us bigint DEFAULT -1,
        since_us bigint DEFAULT 0
    );

    CREATE TABLE tracks (
        did text COLLATE "C" NOT NULL,
        rkey text COLLATE "C" NOT NULL,
        rev text COLLATE "C" NOT NULL,
        cid text,
        deleted boolean NOT NULL,
        hidden boolean NOT NULL,
        title text,
        artist text,
        album text,
        audio_url text COLLATE "C",
        file_type text,
        duration integer,
        created_at text,
        created_us bigint,
        indexed_us bigint NOT NULL,
        sort_us bigint NOT NULL,
        audio_state text NOT NULL,
        event_time_us bigint NOT NULL,
        changed_us bigint DEFAULT 0,
        first_seen_us bigint,
        PRIMARY KEY (did, rkey)
    );

    CREATE TABLE audio_checks (
        url text COLLATE "C" PRIMARY KEY,
        state text NOT NULL,
        reason text NOT NULL,
        status integer,
        content_type text,
        checked_us bigint NOT NULL
    );

    CREATE TABLE rejections (
        uri text COLLATE "C" NOT NULL,
        rev text COLLATE "C" NOT NULL,
        reason text NOT NULL,
        event_time_us bigint NOT NULL,
        rejected_us bigint NOT NULL,
        PRIMARY KEY (uri, rev)
    );

    CREATE TABLE oauth_sessions (
        id text COLLATE "C" PRIMARY KEY,
        did text NOT NULL,
        sealed bytea NOT NULL,
        created_us bigint NOT NULL,
        updated_us bigint NOT NULL
    );

    CREATE TABLE oauth_requests (
        id text COLLATE "C" PRIMARY KEY,
        sealed bytea NOT NULL,
        expires_us bigint NOT NULL
    );

    -- One row: the last stamp handed out. Every write the catalog must see updates it first, so the row
    -- lock orders those writes and their stamps rise in commit order (pg_store.py says why that matters).
    CREATE TABLE clock (id integer PRIMARY KEY CHECK (id = 1), stamp bigint NOT NULL);
    INSERT INTO clock VALUES (1, 0);

    -- What a replica reads to catch up (rows stamped after the last it saw), what the indexer asks for at
    -- start (pending checks), and what a delete asks (is this audio object still used): each an index
    -- here, where DuckDB scans its columns.
    CREATE INDEX tracks_changed ON tracks (changed_us);
    CREATE INDEX tracks_pending ON tracks (audio_url) WHERE audio_state = 'pending' AND NOT deleted;
    CREATE INDEX tracks_audio_key ON tracks (substring(audio_url from '[^/]*$')) WHERE NOT deleted;
    CREATE INDEX tracks_audio_url ON tracks (audio_url) WHERE NOT deleted;
    CREATE INDEX accounts_changed ON accounts (greatest(first_seen_us, coalesce(handle_resolved_us, 0)));
    CREATE INDEX accounts_unresolved ON accounts (did) WHERE handle_resolved_us IS NULL;
    CREATE INDEX rejections_recent ON rejections (rejected_us);
    """,
    # What each account's published audio weighs (DuckDB's migration 7).
    """
    CREATE TABLE uploads (
        did text COLLATE "C" NOT NULL,
        key text COLLATE "C" NOT NULL,
        size bigint NOT NULL,
        created_us bigint NOT NULL,
        PRIMARY KEY (did, key)
    );
    """,
    # Record proofs (DuckDB's migration 8). The sweep asks for the pending ones whose wait is over, and
    # the recheck for the oldest audio answers: an index each.
    """
    ALTER TABLE tracks ADD COLUMN proof text DEFAULT 'pending';
    ALTER TABLE tracks ADD COLUMN proof_reason text;
    ALTER TABLE tracks ADD COLUMN proof_after_us bigint DEFAULT 0;
    UPDATE tracks SET proof = CASE WHEN deleted THEN 'proven' ELSE 'pending' END;
    CREATE INDEX tracks_unproven ON tracks (proof_after_us) WHERE proof = 'pending';
    CREATE INDEX audio_checks_age ON audio_checks (checked_us) WHERE state IN ('verified', 'unavailable');
    """,
    # Backfill (DuckDB's migration 9). The sync workers ask for the due syncs: an index on them.
    """
    CREATE TABLE account_syncs (
        did text COLLATE "C" PRIMARY KEY,
        state text NOT NULL,
        reason text,
        attempts integer NOT NULL DEFAULT 0,
        next_us bigint NOT NULL DEFAULT 0,
        requested_us bigint NOT NULL,
        rev text COLLATE "C",
        synced_us bigint,
        records integer NOT NULL DEFAULT 0
    );
    CREATE INDEX account_syncs_due ON account_syncs (next_us) WHERE state IN ('pending', 'failed');

    CREATE TABLE discovery (
        relay text COLLATE "C" PRIMARY KEY,
        page_cursor text,
        started_us bigint NOT NULL,
        finished_us bigint,
        repos bigint NOT NULL DEFAULT 0
    );

    INSERT INTO account_syncs (did, state, reason, requested_us)
    SELECT did, 'pending', 'indexed before backfill existed', (extract(epoch FROM now()) * 1000000)::bigint
    FROM accounts;
    """,
)
