"""One run: the recipe, the members, the trainer and solvers, distributed strategies."""
