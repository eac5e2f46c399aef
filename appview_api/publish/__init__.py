"""Publishing: uploads in, records onto the author's PDS, the track into the index."""
