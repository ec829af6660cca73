"""Team Cymru bulk whois (network, TCP 43): the client (`client`), its answers' parser
(`wire`), the frame steps (`steps`) and the phase a run runs in a thread (`phase`).
"""
