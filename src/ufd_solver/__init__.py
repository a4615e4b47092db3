"""ufd-solver: weighted ultra-fast diffusion of neural-network features.

Finite elements (dolfinx) for ∂_t ρ = −∇·(σ ∇(σ/ρ)) on feature spaces, a
particle trainer for two-layer networks (VarPro and two-timescale), and the
comparison of both (Barboni, Peyré, Vialard, arXiv:2504.18208).
"""

__version__ = "0.1.0"
