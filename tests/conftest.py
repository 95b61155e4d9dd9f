"""Theory checks run in float64 (STYLE.md: 'Theory checks run in float64')."""

import jax

jax.config.update("jax_enable_x64", True)
