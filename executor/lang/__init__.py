"""The plan language: expressions, loading plans from files, validation and traversal helpers."""
