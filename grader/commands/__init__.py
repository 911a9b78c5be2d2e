"""One module per CLI verb, each with a keyword-only `main(*, ...)`; the CLI only parses."""
