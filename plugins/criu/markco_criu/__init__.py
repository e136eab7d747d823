"""markco-criu: the `Checkpointer` role over CRIU. Not implemented yet (see the README)."""
