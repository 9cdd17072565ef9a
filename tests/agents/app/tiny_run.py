"""Shared by the tests of `wm run` (importable: pytest puts this folder on sys.path)."""

TINY_LOOP = [
    *("--loop.first_train_steps", "20", "--loop.train_steps", "10", "--loop.eval_episodes", "1"),
    *("--train.eval_every", "10", "--train.batch_size", "32", "--model.hidden", "32"),
    *("--planner.horizon", "5", "--planner.iterations", "2"),
    *("--policy.updates", "3", "--policy.batch_size", "16", "--policy.horizon", "5"),
    *("--no-video", "--no-progress"),
]
"""Options of a `wm run` small enough for a unit test (add --env, --steps, --loop.seed_steps)."""
