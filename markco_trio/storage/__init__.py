"""Storage providers: the shared SQL implementation, its schema and the built-in SQLite store."""
