"""The application: the `wm` command line, the loops of `wm train` and `wm run`, evaluation,
the learned simulator, run folders and their resume state, and TensorBoard media. It depends on
the modules (worldmodel, envs, agents); none of them imports it."""
