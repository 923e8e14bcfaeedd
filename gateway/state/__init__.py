"""The gateway's state directory: SQLite databases created by versioned migrations, and its files."""
