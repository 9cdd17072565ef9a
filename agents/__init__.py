"""Agents: planners and controllers that act through learned world models."""
