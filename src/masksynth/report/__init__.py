"""Human-readable outputs: markdown reports and image grids."""
