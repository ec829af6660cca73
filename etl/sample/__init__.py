"""The synthetic sample world: MaxMind files, a honeypot database, and the simulators' answers."""

from etl.sample.world import World

__all__ = ["World"]
