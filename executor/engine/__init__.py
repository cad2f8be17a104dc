"""The deterministic engine: the one generic workflow and its boundary models.

Only modules of this package, executor.lang, executor.errors and schemas pass through Temporal's
workflow sandbox; nothing here does I/O or reads a clock or the environment.
"""
