"""Outbound network checks: the SSRF guard, audio checks and identity (DID documents, handles)."""
