"""Skeleton layouts and the graphs built on them: the one layer both ``data`` and ``models`` import."""
