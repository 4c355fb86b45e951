"""The services behind the gateway (embedder, searcher, separator): not a public API."""
