"""The web app: server-rendered pages over the same read model as the XRPC API, sign-in, and publishing."""
