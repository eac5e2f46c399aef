"""Ingest: Jetstream frames in, planned batches out, written by the one writer."""
