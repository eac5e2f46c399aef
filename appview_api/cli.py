"""`relay-appview`: the operator's commands, and the composition root that builds the service from them.

Library errors become one clean line on stderr and exit status 2; settings come from the environment and
`.env`, and the flags here override them (each flag stands for its environment variable).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import orjson
import uvloop

from appview_api.admin_client import AdminError, Service, follow
from indexer import __version__
from indexer.atproto.datetimes import iso_from_us
from indexer.config import Settings
from indexer.db.backends import open_store
from indexer.db.store import now_us
from indexer.errors import RelayError
from indexer.ingest.index import Index
from indexer.ingest.jetstream import parse_cursor
from indexer.runtime import configure_logging

log = logging.getLogger("relay_appview")

_VALUE_OPTIONS = frozenset({"--cursor"})
_RELATIVE_STARTS = frozenset(f"-{digit}" for digit in "0123456789")

_FLAG_VARIABLES = {
    "db": "RELAY_DB_PATH",
    "host": "RELAY_HOST",
    "port": "RELAY_PORT",
    "jetstream": "RELAY_JETSTREAM_URLS",
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(_joined_values(sys.argv[1:] if argv is None else list(argv)))
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        settings = _settings(args)
        configure_logging(settings.log_level)
        result: int = args.handler(args, settings)
        return result
    except RelayError as exc:
        print(f"relay-appview: {exc.reason}", file=sys.stderr)
        return 2


def _joined_values(argv: list[str]) -> list[str]:
    """`--cursor -2h` as `--cursor=-2h`: argparse takes a value that starts with '-' for an option."""
    joined: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in _VALUE_OPTIONS and i + 1 < len(argv) and argv[i + 1][:2] in _RELATIVE_STARTS:
            joined.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            joined.append(argv[i])
            i += 1
    return joined


def _settings(args: argparse.Namespace) -> Settings:
    flags: dict[str, str] = {}
    for flag, variable in _FLAG_VARIABLES.items():
        value = getattr(args, flag, None)
        if value:
            flags[variable] = ",".join(value) if isinstance(value, list) else str(value)
    return Settings.from_env({**os.environ, **flags})


@contextmanager
def _opened(settings: Settings) -> Iterator[Index]:
    store = open_store(settings)
    try:
        index = Index(store, max_future_us=settings.ingest.max_future_us, verify=settings.proofs.verify_records)
        try:
            yield index
        finally:
            index.close()
    finally:
        store.close()


def _run_indexer(args: argparse.Namespace, settings: Settings) -> int:
    from indexer.ingest.service import Indexer

    cursor = parse_cursor(args.cursor) if getattr(args, "cursor", None) is not None else None
    if cursor is not None and (service := _running(settings)) is not None:
        try:
            answer = service.call("app.relay.admin.replay", {"cursor": cursor})
        finally:
            service.close()
        print(f"the service at {service.url} replays from cursor {answer['cursor']} ({answer['time']})")
        return 0
    with _opened(settings) as index:
        if cursor is not None:
            log.info("replaying from cursor=%d (%s)", cursor, iso_from_us(cursor))
        indexer = Indexer(settings, index, replay_from=cursor)
        asyncio.run(_until_signal(indexer.run, indexer.stop))
    return 0


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from appview_api.server import serve
    from indexer.ingest.service import Indexer

    with _opened(settings) as index:
        indexer = None if args.no_index else Indexer(settings, index)
        # uvloop: ~10% more API throughput here (httptools and uvloop are what uvicorn picks when it owns the loop).
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(serve(settings, index, indexer=indexer))
    return 0


def _running(settings: Settings) -> Service | None:
    service = Service.find(settings)
    if service is not None:
        log.info("a service answers at %s: asking it (the database stays its own)", service.url)
    return service


def _backfill(args: argparse.Namespace, settings: Settings) -> int:
    dids = args.did or None
    if bool(dids) == bool(args.all):
        raise AdminError("give --did DID (repeatable) or --all")
    service = _running(settings)
    if service is not None:
        try:
            body = {"all": True} if args.all else {"dids": dids}
            asked = service.call("app.relay.admin.backfill", body)
            print(f"the service at {service.url} syncs {asked['requested']} accounts")
            if not args.no_wait:
                since = asked["since"]
                counts = follow(lambda: service.call("app.relay.admin.getStatus", since=since)["progress"])
                _print_progress(counts)
        finally:
            service.close()
        return 0
    from indexer.ingest.backfill import sync_once

    with _opened(settings) as index:

        async def run() -> dict[str, int]:
            done = asyncio.Event()
            since = now_us()
            syncing = asyncio.create_task(sync_once(settings, index.writer, dict(index.planner.known), dids, done))
            try:
                counts = await asyncio.to_thread(follow, lambda: index.sync_progress(since).counts())
            finally:
                done.set()
                await syncing
            return counts

        _print_progress(asyncio.run(run()))
    return 0


def _print_progress(counts: dict[str, int]) -> None:
    print(
        f"synced {counts['synced']} of {counts['total']} accounts ({counts['records']} tracks); "
        f"failed {counts['failed']} (tried again later), inactive {counts['inactive']}"
    )


def _status(args: argparse.Namespace, settings: Settings) -> int:
    service = _running(settings)
    if service is not None:
        try:
            answer = service.call("app.relay.admin.getStatus", rejections=args.rejections)
        finally:
            service.close()
        report = {**answer["status"], "progress": answer["progress"], "indexer": answer.get("indexer")}
    else:
        store = open_store(settings, read_only=True)
        try:
            report = store.status(args.rejections)
            report["progress"] = store.sync_progress().counts()
        finally:
            store.close()
    if args.json:
        print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
        return 0
    cursor = report["cursor"]
    if cursor is None:
        print("cursor:   none (nothing indexed yet)")
    else:
        lag = cursor["lag_seconds"]
        print(f"cursor:   {cursor['time_us']} ({cursor['time']}, lag {lag:.1f}s, from {cursor['source']})")
    print("tracks:   " + (", ".join(f"{k} {v}" for k, v in report["tracks"].items()) or "none"))
    print(f"accounts: {report['accounts']}")
    print(f"rejections: {report['rejections_total']} in all; most recent:")
    for rejection in report["recent_rejections"]:
        print(f"  {rejection['at']}  {rejection['uri']}  {rejection['reason']}")
    progress = report["progress"]
    print(
        f"backfill: {progress['done']} of {progress['total']} accounts done (synced {progress['synced']}, failed "
        f"{progress['failed']}, inactive {progress['inactive']}; pending {progress['pending']}, syncing "
        f"{progress['syncing']}), {progress['records']} tracks"
    )
    for run in report["backfill"]["discovery"]:
        state = f"finished {run['finished']}" if run["finished"] else f"in progress (cursor {run['cursor']})"
        print(f"  relay {run['relay']}: {run['repos']} accounts, started {run['started']}, {state}")
    for failure in report["backfill"]["recent_failures"]:
        print(f"  {failure['state']}  {failure['did']}  {failure['reason']}  next {failure['next']}")
    gap = report.get("window_gap")
    if gap:
        print(
            f"WARNING: the stream began past its window ({gap['missedSeconds']} s of events gone from "
            f"{gap['source']}, seen {gap['detectedAt']}): every account was synced again"
        )
    return 0


def _publish(args: argparse.Namespace, settings: Settings) -> int:
    from appview_api.publish.client import publish_file

    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request is noise on a terminal
    result = asyncio.run(
        publish_file(
            settings, Path(args.file), title=args.title, artist=args.artist, album=args.album, dry_run=args.dry_run
        )
    )
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    return 0


def _storage_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from appview_api.audio.storage import migrate_local_to_r2

    report = asyncio.run(migrate_local_to_r2(settings.storage))
    print(
        f"copied {report.copied} ({report.bytes_copied} bytes), already there {report.skipped}, "
        f"not audio {report.ignored}"
    )
    return 0


def _db_copy(args: argparse.Namespace, settings: Settings) -> int:
    from indexer.config import check_database_url
    from indexer.db.copy import copy_index

    check_database_url(args.to)

    def progress(table: str, done: int, total: int) -> None:
        print(f"{table}: {done:,} of {total:,} rows", file=sys.stderr, flush=True)

    copied = copy_index(settings.db.path, args.to, progress)
    print(f"copied {sum(copied.values()):,} rows in {len(copied)} tables; an indexer on the copy resumes from the "
          "copied cursor")
    return 0


async def _until_signal(run: Callable[[], Awaitable[None]], stop: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    await run()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relay-appview",
        description="relay's AppView: index app.relay.track records from Jetstream and serve them over XRPC.",
    )
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, handler: Callable[..., int], help: str, example: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help, epilog=f"example: {example}")
        sub.set_defaults(handler=handler)
        sub.add_argument("--db", help="DuckDB file (RELAY_DB_PATH, default ./data/relay.duckdb)")
        return sub

    serve = command("serve", _serve, "Run the XRPC API and the indexer in one process.",
                    "relay-appview serve --port 8080")
    serve.add_argument("--no-index", action="store_true", help="serve the API only")
    serve.add_argument("--host", help="listen address (RELAY_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (RELAY_PORT, default 8080)")
    serve.add_argument("--jetstream", action="append", metavar="URL", help="Jetstream URL (repeatable)")

    index = command("index", _run_indexer, "Run the indexer until SIGINT/SIGTERM, then flush and exit.",
                    "relay-appview index --jetstream ws://127.0.0.1:6008/subscribe")
    index.add_argument("--jetstream", action="append", metavar="URL", help="Jetstream URL (repeatable)")

    replay = command("replay", _run_indexer, "Rewind the cursor to VALUE and index from there (idempotent); a "
                     "running service is asked to (admin API), else this process indexes.",
                     "relay-appview replay --cursor -2h")
    replay.add_argument("--cursor", required=True,
                        help="unix microseconds, an ISO 8601 time, or relative like -2h, -30m, -90s")
    replay.add_argument("--jetstream", action="append", metavar="URL", help="Jetstream URL (repeatable)")

    backfill = command("backfill", _backfill, "Sync accounts' repositories from their PDSes now, with progress: "
                       "a running service is asked to (admin API), else this process syncs them.",
                       "relay-appview backfill --did did:plc:abc123 --did did:plc:def456")
    backfill.add_argument("--did", action="append", metavar="DID", help="an account to sync (repeatable)")
    backfill.add_argument("--all", action="store_true", help="every account known, and every relay listed again")
    backfill.add_argument("--no-wait", action="store_true", help="ask the running service and return at once")

    status = command("status", _status, "Show the cursor and its lag, tracks by state, recent rejections, the "
                     "backfill; from the running service when one answers.", "relay-appview status --json")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--rejections", type=int, default=10, metavar="N", help="how many recent rejections")

    publish = commands.add_parser(
        "publish",
        help="Publish an audio file as RELAY_HANDLE (signs in with RELAY_APP_PASSWORD) through this service.",
        description="Sign in at the account's PDS (RELAY_PDS_URL, or the one its DID document names), then "
        "upload FILE to the publish endpoint at RELAY_PUBLIC_URL; prints the written record.",
        epilog='example: relay-appview publish song.mp3 --title "Loopback Blues" --artist "The Fixtures"',
    )
    publish.set_defaults(handler=_publish)
    publish.add_argument("file", metavar="FILE", help="an mp3, wav, ogg or flac file")
    publish.add_argument("--title", required=True)
    publish.add_argument("--artist", required=True)
    publish.add_argument("--album")
    publish.add_argument("--dry-run", action="store_true", help="show the record that would be written; write nothing")

    storage = commands.add_parser(
        "storage",
        help="Manage stored audio.",
        description="Manage stored audio.",
        epilog="example: relay-appview storage migrate --to r2",
    )
    storage_commands = storage.add_subparsers(dest="storage_command", metavar="ACTION", required=True)
    migrate = storage_commands.add_parser(
        "migrate",
        help="Copy every local audio file (RELAY_AUDIO_DIR) to R2; files already there are skipped.",
        description="Copy every local audio file (RELAY_AUDIO_DIR) to R2; files already there are skipped. "
        "Safe to rerun. Local files are kept.",
        epilog="example: relay-appview storage migrate --to r2",
    )
    migrate.set_defaults(handler=_storage_migrate)
    migrate.add_argument("--to", required=True, choices=["r2"], help="the backend to copy to")

    db = commands.add_parser(
        "db",
        help="Manage the index's database.",
        description="Manage the index's database.",
        epilog="example: relay-appview db copy --to postgresql://relay@db.internal:5432/relay",
    )
    db_commands = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    copy = db_commands.add_parser(
        "copy",
        help="Copy the DuckDB index (RELAY_DB_PATH) into an empty PostgreSQL database, with progress.",
        description="Copy the DuckDB index (RELAY_DB_PATH, or --db) into an empty PostgreSQL database: tracks, "
        "tombstones, accounts, the cursor and every other table. Stop the service first (DuckDB lets one process "
        "open the file); then set RELAY_DATABASE_URL to the copy, and indexing goes on from the same cursor.",
        epilog="example: relay-appview db copy --to postgresql://relay@db.internal:5432/relay",
    )
    copy.set_defaults(handler=_db_copy)
    copy.add_argument("--to", required=True, metavar="URL", help="the PostgreSQL database, postgresql://...")
    copy.add_argument("--db", help="DuckDB file (RELAY_DB_PATH, default ./data/relay.duckdb)")
    return parser


if __name__ == "__main__":
    sys.exit(main())
