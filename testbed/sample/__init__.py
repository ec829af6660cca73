"""The synthetic sample world: MaxMind files, a honeypot database, and the simulators' answers."""
