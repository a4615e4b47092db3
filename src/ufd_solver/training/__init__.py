"""The particle trainer: two-layer networks trained by VarPro or two-timescale
gradient descent (MATH.md §2), for comparison with the PDE limit.

Entry point: :func:`ufd_solver.training.runner.train`; see docs/training.md.
"""
