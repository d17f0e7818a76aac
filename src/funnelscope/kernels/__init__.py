"""Numba sequence kernels over the arrays of a person-clustered, time-ordered layout.

Every kernel takes CSR offsets (one range of rows per unit) and plain numpy arrays, so the same
code runs in process (over :class:`funnelscope.store.layout.PersonLayout`) and inside Spark's
``mapInArrow`` (over the rows of one partition).
"""
