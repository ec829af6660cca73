"""Simulators of the remote services, answering from the sample world on 127.0.0.1."""
