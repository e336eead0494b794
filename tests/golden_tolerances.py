"""Tolerances for golden values whose last bits depend on the CPU's math kernels.

The guidance embedding takes sin/cos of float32 arguments up to 15,000 rad (1000·w·f for w up to
15). One ulp of such an argument is about 1e-3, and torch's vectorised exp and multiply can differ
by an ulp between CPU kernels (the goldens' CPU against an AVX-512 Xeon: up to 9.3e-4 in the
embedding). Bitwise equality holds on the CPU the goldens were made on, not on every CI machine.
"""

# A few ulps of a 15,000-rad float32 argument, as a change in sin or cos.
GUIDANCE_EMBEDDING_ATOL = 3e-3
# One float32 ulp near 1 (c_out = s/√(s² + σ²) rounds either side of 1.0 at t = 159).
ONE_ULP_NEAR_ONE = 1.2e-7
