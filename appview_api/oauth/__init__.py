"""Signing people in with atproto OAuth, and the DPoP-bound PDS calls made with their sessions."""
