"""Audio objects: where published files are stored and how they are served."""
