"""softmax_icl: the helper library of *Softmax Regression and In-Context Learning, Executed*.

Every closed form the book derives is implemented once here; the chapters call it and verify it.
"""

__version__ = "0.1.0"
