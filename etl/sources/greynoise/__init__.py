"""GreyNoise (network, HTTP): the client (`client`) and how it asks (`settings`, `pacing`,
`searches`, `http`, `transport`), its answers read (`answers`), ``/ping`` (`ping`), the frame
steps (`steps`) and the phase a run runs in a thread (`phase`).
"""
