"""Our graph rewrites on Relax, one module per pass (see the recipe presets in :mod:`edgecompile.recipe`)."""
