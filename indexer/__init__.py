"""relay AppView indexer: Jetstream → validated, audio-checked tracks in DuckDB."""

__version__ = "0.1.0"
