"""The read model: an in-memory catalog of visible tracks and the XRPC methods that answer from it."""
