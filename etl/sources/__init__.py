"""The enrichment sources, one folder each: MaxMind (offline, `etl.sources.maxmind`), Team
Cymru and GreyNoise (network, `etl.sources.cymru`, `etl.sources.greynoise`). A source's folder
holds its client, its wire parser, its frame steps and its phase; what the network sources
share is here: the interface each implements and the phase it hands the run
(`etl.sources.network`), the events a phase posts (`etl.sources.events`), and the circuit
breaker (`etl.sources.failures`).
"""
