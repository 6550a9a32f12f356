"""`none` (method=none): supervised cross-entropy on the labelled batch only, the baseline every table compares to."""
from genexp.methods.base import Method


class Supervised(Method):
    pass
