"""relay AppView XRPC API: discovery, search, lookup and publish over Starlette."""
