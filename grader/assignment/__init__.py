"""The assignment as data: its spec, the project's folders, the data set."""
