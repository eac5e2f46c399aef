"""`relay-appview`: the operator's commands, a thin layer over the library.

Library errors become one clean line on stderr and exit status 2; settings come from the environment and
`.env`, and the flags here override them.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import orjson
import uvloop

from indexer import __version__
from indexer.config import Settings
from indexer.db.store import Store
from indexer.errors import RelayError
from indexer.ingest.jetstream import parse_cursor
from indexer.runtime import configure_logging

log = logging.getLogger("relay_appview")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        settings = _settings(args)
        configure_logging(settings.log_level)
        return args.handler(args, settings)
    except RelayError as exc:
        print(f"relay-appview: {exc.reason}", file=sys.stderr)
        return 2
    except duckdb.IOException as exc:
        print(f"relay-appview: cannot open the database: {exc}", file=sys.stderr)
        return 2


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env()
    changes: dict[str, object] = {}
    if getattr(args, "db", None):
        changes["db_path"] = Path(args.db)
    if getattr(args, "jetstream", None):
        changes["jetstream_urls"] = tuple(args.jetstream)
    if getattr(args, "host", None):
        changes["host"] = args.host
    if getattr(args, "port", None):
        changes["port"] = args.port
    return settings.replace(**changes) if changes else settings


def _index(args: argparse.Namespace, settings: Settings) -> int:
    from indexer.ingest.service import Indexer

    cursor = parse_cursor(args.cursor) if getattr(args, "cursor", None) is not None else None
    store = Store(settings.db_path, recheck_seconds=settings.audio_recheck_seconds)
    try:
        if cursor is not None:
            log.info("replaying from cursor=%d (%s)", cursor, _iso(cursor))
        indexer = Indexer(settings, store, replay_from=cursor)
        asyncio.run(_until_signal(indexer.run, indexer.stop))
    finally:
        store.close()
    return 0


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from appview_api.server import serve
    from indexer.ingest.service import Indexer

    store = Store(settings.db_path, recheck_seconds=settings.audio_recheck_seconds)
    try:
        indexer = None if args.no_index else Indexer(settings, store)
        sink = None if indexer is None else indexer.ingest_local
        # uvloop: ~10% more API throughput here (httptools and uvloop are what uvicorn picks when it owns the loop).
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(serve(settings, store, indexer=indexer, publish_sink=sink))
    finally:
        store.close()
    return 0


def _status(args: argparse.Namespace, settings: Settings) -> int:
    store = Store(settings.db_path)
    try:
        report = store_status(store, limit=args.rejections)
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

    report = asyncio.run(migrate_local_to_r2(settings))
    print(
        f"copied {report.copied} ({report.bytes_copied} bytes), already there {report.skipped}, "
        f"not audio {report.ignored}"
    )
    return 0


def store_status(store: Store, limit: int = 10) -> dict[str, object]:
    con = store.reader()
    cursor = store.cursor()
    tracks = dict(
        con.execute(
            "SELECT CASE WHEN deleted THEN 'deleted' WHEN hidden THEN 'hidden' ELSE audio_state END AS state, "
            "count(*) FROM tracks GROUP BY state ORDER BY state"
        ).fetchall()
    )
    rejections = con.execute(
        "SELECT uri, rev, reason, rejected_us FROM rejections ORDER BY rejected_us DESC LIMIT ?", [limit]
    ).fetchall()
    return {
        "version": __version__,
        "cursor": None
        if cursor is None
        else {
            "time_us": cursor.time_us,
            "time": _iso(cursor.time_us),
            "lag_seconds": max(time.time() - cursor.time_us / 1_000_000, 0.0),
            "source": cursor.source,
        },
        "tracks": tracks,
        "accounts": con.execute("SELECT count(*) FROM accounts").fetchone()[0],
        "rejections_total": con.execute("SELECT count(*) FROM rejections").fetchone()[0],
        "recent_rejections": [
            {"uri": uri, "rev": rev, "reason": reason, "at": _iso(at)} for uri, rev, reason, at in rejections
        ],
    }


async def _until_signal(run: Callable[[], object], stop: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    await run()  # type: ignore[misc]


def _iso(time_us: int) -> str:
    return datetime.fromtimestamp(time_us / 1_000_000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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

    index = command("index", _index, "Run the indexer until SIGINT/SIGTERM, then flush and exit.",
                    "relay-appview index --jetstream ws://127.0.0.1:6008/subscribe")
    index.add_argument("--jetstream", action="append", metavar="URL", help="Jetstream URL (repeatable)")

    replay = command("replay", _index, "Rewind the cursor to VALUE and index from there (idempotent).",
                     "relay-appview replay --cursor -2h")
    replay.add_argument("--cursor", required=True,
                        help="unix microseconds, an ISO 8601 time, or relative like -2h, -30m, -90s")
    replay.add_argument("--jetstream", action="append", metavar="URL", help="Jetstream URL (repeatable)")

    status = command("status", _status, "Show the cursor and its lag, tracks by state, recent rejections.",
                     "relay-appview status --json")
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
    return parser


if __name__ == "__main__":
    sys.exit(main())
