"""worldmodel: learn world models from rollouts and control with them."""
