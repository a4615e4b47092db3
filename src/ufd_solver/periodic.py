"""Periodic constraints of the flat torus through dolfinx_mpc.

One geometric constraint maps every dof on a "high" face (x_i = +L/2 for
some i) to its image with L subtracted from *each* coordinate that sits on
its high face.  A corner (or edge) dof is therefore slaved once, directly to
the fully wrapped master on the low faces, never through a chain of two
constraints.
"""

from __future__ import annotations

import numpy as np

import dolfinx
import dolfinx_mpc


def periodic_constraint(V: dolfinx.fem.FunctionSpace, length: float, dim: int) -> dolfinx_mpc.MultiPointConstraint:
    """A finalised MultiPointConstraint making V periodic on [−L/2, L/2)^dim."""
    half = 0.5 * length
    tol = 1e-8 * length

    def on_high(x):
        mask = np.zeros(x.shape[1], dtype=bool)
        for i in range(dim):
            mask |= np.isclose(x[i], half, atol=tol)
        return mask

    def relation(x):
        out = x.copy()
        for i in range(dim):
            high = np.isclose(x[i], half, atol=tol)
            out[i] = np.where(high, x[i] - length, x[i])
        return out

    mpc = dolfinx_mpc.MultiPointConstraint(V)
    mpc.create_periodic_constraint_geometrical(V, on_high, relation, [])
    mpc.finalize()
    return mpc
