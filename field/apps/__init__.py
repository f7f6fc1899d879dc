"""One folder per app of the corpus: its lock and its driver (how a person uses it)."""
