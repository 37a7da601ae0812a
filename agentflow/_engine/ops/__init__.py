"""The ``ctx`` operations, one module per kind; ``RunContext`` is their façade."""
