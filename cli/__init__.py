"""The `clipdex` command line: parse, call retrieval/ and indexer/, print."""
